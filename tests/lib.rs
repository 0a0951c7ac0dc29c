//! End-to-end tests of hubshift live in `tests/*.rs` beside this file: they
//! run the real `hubshift`, `hubshift-agent` and `hubsim` binaries against a
//! real PostgreSQL (see `hubshift_sim::sandbox`).

/// The variable that skips the Docker end-to-end tests, set to `1`.
pub const SKIP_DOCKER: &str = "HUBSHIFT_SKIP_DOCKER";

/// Whether a Docker end-to-end test runs, given whether an engine answered
/// and the value of [`SKIP_DOCKER`]: with an engine, always; without one
/// it fails, so that a test that could not run never counts as passed,
/// unless the person opted out with `HUBSHIFT_SKIP_DOCKER=1` — then it is
/// skipped with one line on stderr.
pub fn docker_decision(test: &str, engine: Result<(), String>, skip: Option<&str>) -> bool {
    match (engine, skip) {
        (Ok(()), _) => true,
        (Err(e), Some("1")) => {
            eprintln!("skipping {test}: no Docker Engine answers ({e}) and {SKIP_DOCKER}=1");
            false
        }
        (Err(e), _) => panic!(
            "{test}: no Docker Engine answers ({e}); the Docker end-to-end tests need one. \
             To skip them explicitly, set {SKIP_DOCKER}=1"
        ),
    }
}

/// A file of a process's `/proc/PID` directory; `None` when the process is
/// gone (the file vanished, or reading it found no process). Any other
/// error panics: a check that nothing is left must not pass on a read that
/// failed.
pub fn read_proc_file(path: &std::path::Path) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(3) => None,
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

/// A process's environment (`/proc/PID/environ`), as [`read_proc_file`];
/// empty when the kernel does not show it to this process (it shows the
/// environment only to the process's owner or a tracer — always to the
/// test that started it), so such a process is judged by its command line.
pub fn read_proc_environ(pid: i32) -> Option<Vec<u8>> {
    let path = std::path::PathBuf::from(format!("/proc/{pid}/environ"));
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Some(Vec::new()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(3) => None,
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

/// The numeric entries of `/proc`: every process's pid. Panics when
/// `/proc` cannot be read.
pub fn proc_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap_or_else(|e| panic!("/proc: {e}"))
        .map(|e| e.unwrap_or_else(|e| panic!("/proc: {e}")))
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_tests_fail_without_an_engine_unless_skipped() {
        assert!(docker_decision("t", Ok(()), None));
        assert!(docker_decision("t", Ok(()), Some("1")));
        assert!(!docker_decision("t", Err("gone".into()), Some("1")));
        for skip in [None, Some("0"), Some("")] {
            let failed =
                std::panic::catch_unwind(|| docker_decision("t", Err("gone".into()), skip));
            let message = failed.expect_err("no engine must fail");
            let message = message
                .downcast_ref::<String>()
                .expect("a formatted panic message");
            assert!(message.contains("HUBSHIFT_SKIP_DOCKER=1"), "{message}");
        }
    }
}
