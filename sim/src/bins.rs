//! Finds the workspace's binaries (hubsim, hubshift-agent, hubshift) for the
//! sandbox, the demo and the tests.

use std::path::{Path, PathBuf};
use thiserror::Error;

/// Environment variable naming the directory of the binaries.
pub const BIN_DIR_ENV: &str = "HUBSHIFT_BIN_DIR";

/// A binary that is not where it should be.
#[derive(Debug, Error)]
#[error(
    "binary `{name}` not found in {searched}; build it with `cargo build -p {package}` (or set {BIN_DIR_ENV})"
)]
pub struct BinError {
    /// The binary.
    pub name: String,
    /// The package that builds it.
    pub package: String,
    /// Directories looked in.
    pub searched: String,
}

/// The package that builds `name`.
pub fn package_of(name: &str) -> &str {
    match name {
        "hubsim" | "hubshift-sandbox" => "hubshift-sim",
        "hubshift-agent" => "hubshift-agent",
        "hubshift" => "hubshift",
        other => other,
    }
}

/// Looks for `name` in `$HUBSHIFT_BIN_DIR`, else next to the current
/// executable, else in its parent directory (test executables live in
/// `target/<profile>/deps`).
pub fn binary(name: &str) -> Result<PathBuf, BinError> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os(BIN_DIR_ENV) {
        dirs.push(PathBuf::from(d));
    } else if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        dirs.push(dir.to_path_buf());
        if let Some(parent) = dir.parent() {
            dirs.push(parent.to_path_buf());
        }
    }
    find_in(name, &dirs)
}

/// Looks for `name` in `dirs`, in order.
pub fn find_in(name: &str, dirs: &[PathBuf]) -> Result<PathBuf, BinError> {
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
        .ok_or_else(|| BinError {
            name: name.into(),
            package: package_of(name).into(),
            searched: dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_names_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let e = find_in("hubshift-agent", &[dir.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("cargo build -p hubshift-agent"), "{e}");
        assert!(!e.contains('\n'));
    }
}
