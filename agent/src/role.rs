//! The role probe: is the running hub the HA active node or a standby?
//! Either the last matching line of hub.log since the current start, or the
//! stdout of a configured command.

use crate::config::{ProbeKind, RoleProbeSection, Vars, fill_argv};
use regex::Regex;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// What the probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not known (yet).
    Unknown,
    /// HA active.
    Active,
    /// HA standby.
    Standby,
}

/// A compiled probe.
#[derive(Debug, Clone)]
pub struct Probe {
    kind: ProbeKind,
    active: Regex,
    standby: Regex,
    command: Vec<String>,
    timeout: Duration,
}

impl Probe {
    /// Compiles the configured patterns (validated at load time).
    pub fn new(cfg: &RoleProbeSection) -> Result<Probe, regex::Error> {
        Ok(Probe {
            kind: cfg.kind,
            active: Regex::new(&cfg.active_pattern)?,
            standby: Regex::new(&cfg.standby_pattern)?,
            command: cfg.command.clone(),
            timeout: Duration::from_secs(cfg.timeout_secs),
        })
    }

    /// Role of the hub whose output starts at `offset` in `log`.
    /// `runtime`/`appdata` fill the command template.
    pub async fn probe(&self, log: &Path, offset: u64, runtime: &str, appdata: &str) -> Role {
        match self.kind {
            ProbeKind::Log => {
                let this = self.clone();
                let log: PathBuf = log.to_path_buf();
                tokio::task::spawn_blocking(move || this.scan_log(&log, offset))
                    .await
                    .unwrap_or(Role::Unknown)
            }
            ProbeKind::Command => self.run_command(runtime, appdata).await,
        }
    }

    /// Last line (from `offset` on) that matches either pattern decides.
    fn scan_log(&self, log: &Path, offset: u64) -> Role {
        let Ok(mut file) = std::fs::File::open(log) else {
            return Role::Unknown;
        };
        if file.seek(SeekFrom::Start(offset)).is_err() {
            return Role::Unknown;
        }
        self.last_match(BufReader::new(file))
    }

    fn last_match<R: BufRead>(&self, mut reader: R) -> Role {
        let mut role = Role::Unknown;
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line);
            if self.active.is_match(&text) {
                role = Role::Active;
            } else if self.standby.is_match(&text) {
                role = Role::Standby;
            }
        }
        role
    }

    async fn run_command(&self, runtime: &str, appdata: &str) -> Role {
        let vars = Vars {
            runtime,
            node: "",
            jdbc: "",
            appdata,
        };
        let argv = fill_argv(&self.command, vars);
        let Some((program, args)) = argv.split_first() else {
            return Role::Unknown;
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let output = match tokio::time::timeout(self.timeout, cmd.output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, program = %program, "role probe command failed to run");
                return Role::Unknown;
            }
            Err(_) => {
                tracing::warn!(program = %program, "role probe command timed out");
                return Role::Unknown;
            }
        };
        if !output.status.success() {
            return Role::Unknown;
        }
        self.last_match(&output.stdout[..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(kind: ProbeKind, command: Vec<String>) -> Probe {
        Probe::new(&RoleProbeSection {
            kind,
            command,
            ..RoleProbeSection::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn log_probe_takes_the_last_match_after_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("hub.log");
        let head = "old run\nHA role: active\n";
        std::fs::write(&log, format!("{head}--- start\nbooting\n")).unwrap();
        let p = probe(ProbeKind::Log, vec![]);
        let off = head.len() as u64;
        assert_eq!(p.probe(&log, off, "", "").await, Role::Unknown);
        assert_eq!(p.probe(&log, 0, "", "").await, Role::Active);
        let mut text = std::fs::read_to_string(&log).unwrap();
        text.push_str("HA role: active\nx\nHA role: standby\n");
        std::fs::write(&log, text).unwrap();
        assert_eq!(p.probe(&log, off, "", "").await, Role::Standby);
    }

    #[tokio::test]
    async fn command_probe_matches_stdout_and_needs_exit_zero() {
        let sh = |s: &str| vec!["/bin/sh".to_string(), "-c".to_string(), s.to_string()];
        let p = probe(ProbeKind::Command, sh("echo 'HA role: standby'"));
        assert_eq!(p.probe(Path::new("/none"), 0, "", "").await, Role::Standby);
        let p = probe(ProbeKind::Command, sh("echo 'HA role: active'; exit 3"));
        assert_eq!(p.probe(Path::new("/none"), 0, "", "").await, Role::Unknown);
    }
}
