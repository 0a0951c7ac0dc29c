//! hubsim images for the docker driver, built without any registry: a root
//! filesystem holding the hubsim binary and the shared libraries `ldd`
//! lists is imported (`docker import`) as an image whose entrypoint behaves
//! like the vendor image's (`start`; `START_MODE=HA_INIT` → create then
//! start; appData at `/usr/local/highbyte/appData`; an older image's start
//! command is `/opt/hubsim/bin/hubsim container start --mode HA_INIT|HA`),
//! one image per version,
//! and saved as a `docker save` archive for InstallRuntime. Uses the
//! `docker` command line, which talks to the same engine as the agent.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use thiserror::Error;

/// appData inside the image, as in the vendor image.
pub const APPDATA: &str = "/usr/local/highbyte/appData";

/// The runtime directory inside the image, as in the vendor image: the
/// entrypoint runs there, and store-and-forward files go there when the
/// settings leave `directories.storeForwardData` unset.
pub const RUNTIME: &str = "/usr/local/highbyte/runtime";

/// hubsim inside the image; its version is `/opt/hubsim/VERSION`, as in a
/// hubsim runtime directory.
pub const HUBSIM: &str = "/opt/hubsim/bin/hubsim";

/// Why an image could not be made.
#[derive(Debug, Error)]
pub enum ImageError {
    /// The version is not a safe single path component.
    #[error(transparent)]
    Version(#[from] hubshift_common::names::NameError),
    /// A command failed.
    #[error("{what}: {detail}")]
    Command {
        /// What was run.
        what: String,
        /// Its stderr or the I/O error.
        detail: String,
    },
    /// Reading the binary or a library failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

fn run(cmd: &mut Command, what: &str) -> Result<String, ImageError> {
    let out = cmd.output().map_err(|e| ImageError::Command {
        what: what.into(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(ImageError::Command {
            what: what.into(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Whether a Docker Engine answers the `docker` command line.
pub fn engine_available() -> Result<(), String> {
    run(
        Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]),
        "docker version",
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

/// The shared libraries (and the loader) `binary` needs, as `ldd` lists them.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let out = run(Command::new("ldd").arg(binary), "ldd")?;
    let mut libs = Vec::new();
    for line in out.lines() {
        // `libc.so.6 => /lib/…/libc.so.6 (0x…)` or `/lib64/ld-linux-x86-64.so.2 (0x…)`
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// The root filesystem as a tar: hubsim with its VERSION, the libraries at
/// their paths, an empty appData and `/tmp`.
fn rootfs(hubsim: &Path, version: &str) -> Result<Vec<u8>, ImageError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImageError::Io { path, source }
    };
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(true);
    // The engine refuses GNU sparse entries (type S), which a large binary
    // with holes would otherwise get.
    builder.sparse(false);
    let mut dir = |name: &str, mode: u32| -> Result<(), ImageError> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        h.set_mtime(1_700_000_000);
        builder
            .append_data(&mut h, name, std::io::empty())
            .map_err(io(Path::new(name)))
    };
    dir("tmp/", 0o1777)?;
    dir("usr/local/highbyte/appData/", 0o755)?;
    dir("usr/local/highbyte/runtime/", 0o755)?;
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(version.len() as u64 + 1);
    h.set_mtime(1_700_000_000);
    builder
        .append_data(
            &mut h,
            "opt/hubsim/VERSION",
            format!("{version}\n").as_bytes(),
        )
        .map_err(io(Path::new("VERSION")))?;
    let mut add = |from: &Path, to: &str| -> Result<(), ImageError> {
        builder.append_path_with_name(from, to).map_err(io(from))
    };
    add(hubsim, HUBSIM.trim_start_matches('/'))?;
    for lib in shared_libraries(hubsim)? {
        let to = lib.to_string_lossy().trim_start_matches('/').to_string();
        add(&lib, &to)?;
    }
    builder.into_inner().map_err(io(hubsim))
}

/// Builds the hubsim image for `version` (untagged: an image the engine
/// knows only by id, so that loading its archive later adds no tag of its
/// own) and returns its id.
pub fn build(version: &str, hubsim: &Path) -> Result<String, ImageError> {
    hubshift_common::names::validate_name("runtime version", version)?;
    let tar = rootfs(hubsim, version)?;
    let entrypoint = format!(r#"ENTRYPOINT ["{HUBSIM}", "container"]"#);
    let mut child = Command::new("docker")
        .args([
            "import",
            "--change",
            &entrypoint,
            "--change",
            r#"CMD ["start"]"#,
        ])
        .args(["--change", &format!("LABEL hubsim.version={version}")])
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ImageError::Command {
            what: "docker import".into(),
            detail: e.to_string(),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&tar).map_err(|e| ImageError::Command {
            what: "docker import".into(),
            detail: e.to_string(),
        })?;
    }
    let out = child.wait_with_output().map_err(|e| ImageError::Command {
        what: "docker import".into(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(ImageError::Command {
            what: "docker import".into(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Writes `docker save` of image `id` to `out`.
pub fn save(id: &str, out: &Path) -> Result<(), ImageError> {
    run(
        Command::new("docker").args(["save", "-o"]).arg(out).arg(id),
        "docker save",
    )
    .map(|_| ())
}

/// Builds the image for `version`, saves it to `out` and removes it from
/// the engine (the agent loads it from the archive). Returns the image id.
pub fn write_image_archive(version: &str, hubsim: &Path, out: &Path) -> Result<String, ImageError> {
    let id = build(version, hubsim)?;
    let saved = save(&id, out);
    remove(&id);
    saved.map(|_| id)
}

/// Removes an image (by id or reference) with every tag it has; quiet
/// when it is gone already.
pub fn remove(image: &str) {
    let _ = Command::new("docker")
        .args(["image", "rm", "--force", image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A private bridge network: (gateway address, subnet).
pub fn create_network(name: &str) -> Result<(String, String), ImageError> {
    run(
        Command::new("docker").args([
            "network",
            "create",
            "--label",
            "hubshift.sandbox=true",
            name,
        ]),
        "docker network create",
    )?;
    let inspect = run(
        Command::new("docker").args([
            "network",
            "inspect",
            "--format",
            "{{(index .IPAM.Config 0).Gateway}} {{(index .IPAM.Config 0).Subnet}}",
            name,
        ]),
        "docker network inspect",
    );
    let found = inspect.and_then(|text| {
        let mut parts = text.split_whitespace();
        match (parts.next(), parts.next()) {
            (Some(g), Some(s)) => Ok((g.to_string(), s.to_string())),
            _ => Err(ImageError::Command {
                what: "docker network inspect".into(),
                detail: format!("no gateway and subnet in {text:?}"),
            }),
        }
    });
    if found.is_err() {
        remove_network(name);
    }
    found
}

/// Removes a network; quiet when it is gone already.
pub fn remove_network(name: &str) {
    let _ = Command::new("docker")
        .args(["network", "rm", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Removes a volume; quiet when it is gone already.
pub fn remove_volume(name: &str) {
    let _ = Command::new("docker")
        .args(["volume", "rm", "--force", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
