//! hubsim runtime archives, shaped like the vendor's release:
//! `hubsim-runtime-<V>.tar.gz` holds one folder
//! `HighByte-Intelligence-Hub-<V>/` with `runtime/` (`VERSION` and
//! `bin/hubsim`, a launcher that runs the real hubsim binary as version V
//! from that runtime directory), `configuration/` and a template `appData/`
//! (default settings, an empty project). Installing such a runtime really
//! changes what runs, and a hub not pointed at the configured appData runs
//! on that empty project.

use hubshift_common::digest::HashingWriter;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Fixed mtime of archive entries, so the same inputs give the same bytes.
const ENTRY_MTIME: u64 = 1_700_000_000;

/// Why no archive was written.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// The version is not a safe single path component.
    #[error(transparent)]
    Version(#[from] hubshift_common::names::NameError),
    /// The hubsim binary is not there.
    #[error("hubsim binary {0} not found; build it with `cargo build -p hubshift-sim`")]
    MissingBinary(PathBuf),
    /// Writing failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The archive.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
}

/// Conventional archive file name for a version.
pub fn archive_name(version: &str) -> String {
    format!("hubsim-runtime-{version}.tar.gz")
}

/// Quotes `s` for a POSIX shell: single quotes, `'` as `'\''`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The launcher script: runs the real hubsim binary as `version`, from the
/// runtime directory it lives in (`<runtime>/bin/hubsim`). Called by its
/// absolute path (as agents do), it finds that directory without starting
/// another process: a fleet's hundreds of hub starts each save a fork and
/// an exec.
pub fn launcher_script(version: &str, hubsim_binary: &Path) -> String {
    format!(
        "#!/bin/sh\n# hubsim runtime {version}: runs hubsim as this version\ncase $0 in\n  /*/bin/*) here=${{0%/bin/*}} ;;\n  *) here=$(cd \"$(dirname \"$0\")/..\" && pwd) || exit 1 ;;\nesac\nexec {} --version {} --runtime-dir \"$here\" \"$@\"\n",
        shell_quote(&hubsim_binary.to_string_lossy()),
        shell_quote(version)
    )
}

/// The release's top-level folder for `version`.
pub fn release_folder(version: &str) -> String {
    format!("HighByte-Intelligence-Hub-{version}")
}

/// The template settings a release ships in its `appData/`: the keys
/// unset, so a hub left to them uses the bundled appData.
pub const TEMPLATE_SETTINGS: &str = "{\n  \"directories\": {\n    \"appData\": \"\",\n    \"storeForwardData\": \"\"\n  },\n  \"web\": {\"httpPort\": 45245}\n}\n";

/// The template project a release ships: nothing configured.
pub fn template_project(version: &str) -> String {
    format!(
        "{{\"version\": \"{version}\", \"createdBy\": \"release template\", \"project\": {{}}}}\n"
    )
}

/// Writes the runtime archive for `version` to `out_path` (through a temp
/// file renamed into place); the launcher runs `hubsim_binary` (made
/// absolute). Returns the archive's hex SHA-256 and size.
pub fn write_runtime_archive(
    version: &str,
    out_path: &Path,
    hubsim_binary: &Path,
) -> Result<(String, u64), RuntimeError> {
    hubshift_common::names::validate_name("runtime version", version)?;
    let binary = std::path::absolute(hubsim_binary).unwrap_or_else(|_| hubsim_binary.to_path_buf());
    if !binary.is_file() {
        return Err(RuntimeError::MissingBinary(binary));
    }
    let io_err = |source| RuntimeError::Io {
        path: out_path.to_path_buf(),
        source,
    };
    let dir = out_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err)?;
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err)?;
    let writer = HashingWriter::new(io::BufWriter::new(tmp));
    let encoder = flate2::write::GzEncoder::new(writer, flate2::Compression::default());
    let mut builder = tar::Builder::new(encoder);
    let mut add = |path: &str, mode: u32, kind: tar::EntryType, data: &[u8]| -> io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_mtime(ENTRY_MTIME);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append_data(&mut header, path, data)
    };
    let top = release_folder(version);
    let rt = format!("{top}/runtime");
    let files: [(String, u32, tar::EntryType, Vec<u8>); 10] = [
        (
            format!("{top}/"),
            0o755,
            tar::EntryType::Directory,
            Vec::new(),
        ),
        (
            format!("{rt}/"),
            0o755,
            tar::EntryType::Directory,
            Vec::new(),
        ),
        (
            format!("{rt}/VERSION"),
            0o644,
            tar::EntryType::Regular,
            format!("{version}\n").into_bytes(),
        ),
        (
            format!("{rt}/bin/"),
            0o755,
            tar::EntryType::Directory,
            Vec::new(),
        ),
        (
            format!("{rt}/bin/hubsim"),
            0o755,
            tar::EntryType::Regular,
            launcher_script(version, &binary).into_bytes(),
        ),
        (
            format!("{top}/configuration/"),
            0o755,
            tar::EntryType::Directory,
            Vec::new(),
        ),
        (
            format!("{top}/configuration/index.html"),
            0o644,
            tar::EntryType::Regular,
            b"<html><body>hubsim</body></html>\n".to_vec(),
        ),
        (
            format!("{top}/appData/"),
            0o755,
            tar::EntryType::Directory,
            Vec::new(),
        ),
        (
            format!("{top}/appData/intelligencehub-settings.json"),
            0o644,
            tar::EntryType::Regular,
            TEMPLATE_SETTINGS.as_bytes().to_vec(),
        ),
        (
            format!("{top}/appData/intelligencehub-configuration.json"),
            0o644,
            tar::EntryType::Regular,
            template_project(version).into_bytes(),
        ),
    ];
    for (path, mode, kind, data) in &files {
        add(path, *mode, *kind, data).map_err(io_err)?;
    }
    let encoder = builder.into_inner().map_err(io_err)?;
    let writer = encoder.finish().map_err(io_err)?;
    let (mut buf, sha256, size) = writer.finish();
    buf.flush().map_err(io_err)?;
    let tmp = buf.into_inner().map_err(|e| io_err(e.into_error()))?;
    tmp.as_file().sync_all().map_err(io_err)?;
    tmp.persist(out_path).map_err(|e| io_err(e.error))?;
    Ok((sha256, size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubshift_common::archive::{UnpackLimits, unpack_tar_gz};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_launcher_finds_its_runtime_called_by_path_or_from_within() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = dir.path().join("rel bin/runtime");
        std::fs::create_dir_all(runtime.join("bin")).unwrap();
        let launcher = runtime.join("bin/hubsim");
        // `echo` in hubsim's place shows what hubsim would be given.
        std::fs::write(&launcher, launcher_script("1.2.3", Path::new("/bin/echo"))).unwrap();
        std::fs::set_permissions(&launcher, std::fs::Permissions::from_mode(0o755)).unwrap();
        let run = |program: &Path, cwd: &Path| {
            let out = std::process::Command::new(program)
                .arg("start")
                .current_dir(cwd)
                .output()
                .unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap()
        };
        let expected = format!(
            "--version 1.2.3 --runtime-dir {} start\n",
            runtime.display()
        );
        assert_eq!(run(&launcher, dir.path()), expected, "called by its path");
        let relative = run(Path::new("./bin/hubsim"), &runtime);
        assert_eq!(relative, expected, "called from within its runtime");
    }

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(shell_quote("/a b/c"), "'/a b/c'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn archive_unpacks_to_a_runnable_launcher() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("we'ird dir").join("hubsim");
        fs::create_dir_all(fake.parent().unwrap()).unwrap();
        fs::write(&fake, "#!/bin/sh\necho \"$@\"\n").unwrap();
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
        let out = dir.path().join(archive_name("4.2.0"));
        let (sha, size) = write_runtime_archive("4.2.0", &out, &fake).unwrap();
        let (sha2, size2) = hubshift_common::digest::sha256_file(&out).unwrap();
        assert_eq!((sha.clone(), size), (sha2, size2));
        let again = dir.path().join("again.tar.gz");
        assert_eq!(
            write_runtime_archive("4.2.0", &again, &fake).unwrap().0,
            sha,
            "deterministic"
        );
        let dest = dir.path().join("rt");
        fs::create_dir(&dest).unwrap();
        unpack_tar_gz(
            fs::File::open(&out).unwrap(),
            &dest,
            UnpackLimits::default(),
        )
        .unwrap();
        let release = dest.join(release_folder("4.2.0"));
        let runtime = release.join("runtime");
        assert_eq!(
            fs::read_to_string(runtime.join("VERSION")).unwrap(),
            "4.2.0\n"
        );
        assert!(release.join("configuration").is_dir());
        assert!(
            fs::read_to_string(release.join("appData/intelligencehub-configuration.json"))
                .unwrap()
                .contains("\"project\": {}"),
            "the template project is empty"
        );
        // unpack does not keep modes; the agent sets them. Run through sh.
        let out = std::process::Command::new("sh")
            .arg(runtime.join("bin/hubsim"))
            .args(["start", "x"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!(
                "--version 4.2.0 --runtime-dir {} start x\n",
                fs::canonicalize(&runtime).unwrap().display()
            )
        );
        assert!(write_runtime_archive("../x", &dir.path().join("bad.tar.gz"), &fake).is_err());
    }
}
