//! The role probe: is the running hub the HA active node or a standby?
//! The last matching line decides, read from the hub's output since its
//! current start (`log`), from a file the hub writes such as its JSON-lines
//! event log since the current start (`file`), or from the stdout of a
//! configured command (`command`). `inspect` also keeps the last lines that
//! matched and did not, for `hubshift-agent probe`.

use crate::config::{ProbeKind, RoleProbeSection, Vars, fill, fill_argv};
use regex::Regex;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// What the probe found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Role {
    /// Not known (yet).
    #[default]
    Unknown,
    /// HA active.
    Active,
    /// HA standby.
    Standby,
}

/// How many matched and unmatched lines a report keeps.
pub const REPORT_LINES: usize = 5;

/// The hub's own output since its current start, as its driver keeps it.
#[derive(Debug, Clone)]
pub enum HubOutput {
    /// A file the hub appends to, read from `offset` on.
    File {
        /// e.g. `<state>/hub.log`.
        path: PathBuf,
        /// Where the current start's output begins.
        offset: u64,
    },
    /// Output already fetched (a container's log since its start).
    Bytes(Vec<u8>),
}

/// Everything a probe may read, supplied by the hub driver.
#[derive(Debug, Clone)]
pub struct ProbeInput {
    /// The hub's output (kind `log`).
    pub output: HubOutput,
    /// Length of the followed file (kind `file`) when the hub started; 0
    /// when unknown. A file now shorter than that was rotated: read whole.
    pub file_offset: u64,
    /// Value of `{runtime}` (may be empty).
    pub runtime: String,
    /// Value of `{appdata}` on this host.
    pub appdata: String,
}

/// What a probe sees now, for an operator tuning the patterns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The role it reports.
    pub role: Role,
    /// What was read, in words (file and offset, command).
    pub source: String,
    /// Last lines that matched a pattern, oldest first, with their role.
    pub matched: Vec<(Role, String)>,
    /// Last lines that matched neither, oldest first.
    pub unmatched: Vec<String>,
    /// Why nothing could be read, if so.
    pub problem: Option<String>,
}

/// A compiled probe.
#[derive(Debug, Clone)]
pub struct Probe {
    kind: ProbeKind,
    active: Regex,
    standby: Regex,
    command: Vec<String>,
    path: String,
    json_field: Option<String>,
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
            path: cfg.path.clone(),
            json_field: cfg.json_field.clone(),
            timeout: Duration::from_secs(cfg.timeout_secs),
        })
    }

    /// Whether the probe reads `{runtime}` (kinds `file` and `command`):
    /// finding the active runtime's folder costs a few file-system calls,
    /// and a status poll of a `log` probe need not pay them.
    pub fn uses_runtime(&self) -> bool {
        self.kind != ProbeKind::Log
    }

    /// The followed file (kind `file`) for this appdata, else None.
    pub fn followed_file(&self, runtime: &str, appdata: &str) -> Option<PathBuf> {
        (self.kind == ProbeKind::File).then(|| {
            PathBuf::from(fill(
                &self.path,
                Vars {
                    runtime,
                    node: "",
                    jdbc: "",
                    appdata,
                },
            ))
        })
    }

    /// What the driver records at a start: the followed file's length now
    /// (0 when absent or for other kinds), so only later lines count.
    pub fn mark(&self, runtime: &str, appdata: &str) -> u64 {
        self.followed_file(runtime, appdata)
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len())
    }

    /// Role of the hub now.
    pub async fn probe(&self, input: &ProbeInput) -> Role {
        self.inspect(input).await.role
    }

    /// Role, the lines that decided it and those that did not.
    pub async fn inspect(&self, input: &ProbeInput) -> Report {
        match self.kind {
            ProbeKind::Log => match &input.output {
                HubOutput::File { path, offset } => {
                    self.scan_file_blocking(path.clone(), *offset, "hub output")
                        .await
                }
                HubOutput::Bytes(bytes) => {
                    let mut report = self.scan(&bytes[..]);
                    report.source = format!("hub output since its start ({} bytes)", bytes.len());
                    report
                }
            },
            ProbeKind::File => {
                let Some(path) = self.followed_file(&input.runtime, &input.appdata) else {
                    return self.failed(String::new(), "no file configured".into());
                };
                let len = std::fs::metadata(&path).map_or(0, |m| m.len());
                let offset = if len < input.file_offset {
                    0
                } else {
                    input.file_offset
                };
                self.scan_file_blocking(path, offset, "followed file").await
            }
            ProbeKind::Command => self.run_command(&input.runtime, &input.appdata).await,
        }
    }

    fn failed(&self, source: String, problem: String) -> Report {
        Report {
            role: Role::Unknown,
            source,
            matched: Vec::new(),
            unmatched: Vec::new(),
            problem: Some(problem),
        }
    }

    async fn scan_file_blocking(&self, path: PathBuf, offset: u64, what: &str) -> Report {
        let this = self.clone();
        let source = format!("{what} {} from byte {offset}", path.display());
        let fallback = source.clone();
        tokio::task::spawn_blocking(move || {
            let mut report = match this.scan_file(&path, offset) {
                Ok(r) => r,
                Err(e) => this.failed(String::new(), e),
            };
            report.source = source;
            report
        })
        .await
        .unwrap_or_else(|e| self.failed(fallback, format!("probe task failed: {e}")))
    }

    /// Scans `path` from `offset` on.
    fn scan_file(&self, path: &Path, offset: u64) -> Result<Report, String> {
        let mut file = std::fs::File::open(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| format!("cannot seek {}: {e}", path.display()))?;
        Ok(self.scan(BufReader::new(file)))
    }

    /// The text a line is matched on: the line, or its JSON field.
    fn subject(&self, line: &str) -> Option<String> {
        let Some(field) = &self.json_field else {
            return Some(line.to_string());
        };
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        match value.get(field)? {
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    /// Last line that matches either pattern decides.
    fn scan<R: BufRead>(&self, mut reader: R) -> Report {
        let mut report = Report {
            role: Role::Unknown,
            source: String::new(),
            matched: Vec::new(),
            unmatched: Vec::new(),
            problem: None,
        };
        let mut matched = VecDeque::with_capacity(REPORT_LINES + 1);
        let mut unmatched = VecDeque::with_capacity(REPORT_LINES + 1);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\n', '\r']);
            if text.is_empty() {
                continue;
            }
            let role = match self.subject(text) {
                Some(s) if self.active.is_match(&s) => Role::Active,
                Some(s) if self.standby.is_match(&s) => Role::Standby,
                _ => Role::Unknown,
            };
            if role == Role::Unknown {
                keep_last(&mut unmatched, text.to_string());
            } else {
                report.role = role;
                keep_last(&mut matched, (role, text.to_string()));
            }
        }
        report.matched = matched.into();
        report.unmatched = unmatched.into();
        report
    }

    async fn run_command(&self, runtime: &str, appdata: &str) -> Report {
        let vars = Vars {
            runtime,
            node: "",
            jdbc: "",
            appdata,
        };
        let argv = fill_argv(&self.command, vars);
        let source = format!("command {argv:?}");
        let Some((program, args)) = argv.split_first() else {
            return self.failed(source, "no command configured".into());
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
                return self.failed(source, format!("cannot run {program}: {e}"));
            }
            Err(_) => {
                tracing::warn!(program = %program, "role probe command timed out");
                return self.failed(source, format!("{program} timed out"));
            }
        };
        let mut report = self.scan(&output.stdout[..]);
        report.source = source;
        if !output.status.success() {
            report.role = Role::Unknown;
            report.problem = Some(format!("{program} exited with {}", output.status));
        }
        report
    }
}

fn keep_last<T>(lines: &mut VecDeque<T>, line: T) {
    if lines.len() == REPORT_LINES {
        lines.pop_front();
    }
    lines.push_back(line);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_with(cfg: RoleProbeSection) -> Probe {
        Probe::new(&cfg).unwrap()
    }

    fn probe(kind: ProbeKind, command: Vec<String>) -> Probe {
        probe_with(RoleProbeSection {
            kind,
            command,
            ..RoleProbeSection::default()
        })
    }

    #[test]
    fn only_file_and_command_probes_read_the_runtime_folder() {
        assert!(!probe(ProbeKind::Log, Vec::new()).uses_runtime());
        assert!(probe(ProbeKind::File, Vec::new()).uses_runtime());
        assert!(probe(ProbeKind::Command, vec!["/bin/true".into()]).uses_runtime());
    }

    fn input(output: HubOutput, file_offset: u64, appdata: &Path) -> ProbeInput {
        ProbeInput {
            output,
            file_offset,
            runtime: String::new(),
            appdata: appdata.display().to_string(),
        }
    }

    fn log_at(path: &Path, offset: u64) -> ProbeInput {
        input(
            HubOutput::File {
                path: path.to_path_buf(),
                offset,
            },
            0,
            Path::new("/none"),
        )
    }

    #[tokio::test]
    async fn log_probe_takes_the_last_match_after_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("hub.log");
        let head = "old run\nHA role: active\n";
        std::fs::write(&log, format!("{head}--- start\nbooting\n")).unwrap();
        let p = probe(ProbeKind::Log, vec![]);
        let off = head.len() as u64;
        assert_eq!(p.probe(&log_at(&log, off)).await, Role::Unknown);
        assert_eq!(p.probe(&log_at(&log, 0)).await, Role::Active);
        let mut text = std::fs::read_to_string(&log).unwrap();
        text.push_str("HA role: active\nx\nHA role: standby\n");
        std::fs::write(&log, text).unwrap();
        assert_eq!(p.probe(&log_at(&log, off)).await, Role::Standby);
        let bytes = input(
            HubOutput::Bytes(b"HA role: standby\nHA role: active\n".to_vec()),
            0,
            Path::new("/none"),
        );
        assert_eq!(p.probe(&bytes).await, Role::Active);
    }

    #[tokio::test]
    async fn command_probe_matches_stdout_and_needs_exit_zero() {
        let sh = |s: &str| vec!["/bin/sh".to_string(), "-c".to_string(), s.to_string()];
        let none = log_at(Path::new("/none"), 0);
        let p = probe(ProbeKind::Command, sh("echo 'HA role: standby'"));
        assert_eq!(p.probe(&none).await, Role::Standby);
        let p = probe(ProbeKind::Command, sh("echo 'HA role: active'; exit 3"));
        let report = p.inspect(&none).await;
        assert_eq!(report.role, Role::Unknown);
        assert!(report.problem.unwrap().contains("exit"));
    }

    /// The real hub's event log: JSON lines in appData, written across
    /// restarts; only lines since the current start and only the message
    /// field count.
    #[tokio::test]
    async fn file_probe_follows_json_lines_since_the_start_and_matches_one_field() {
        let appdata = tempfile::tempdir().unwrap();
        let events = appdata.path().join("intelligencehub-events.log");
        let line = |level: &str, source: &str, message: &str| {
            format!(
                "{}\n",
                serde_json::json!({"time": "2026-01-01T00:00:00Z", "level": level, "source": source, "message": message})
            )
        };
        std::fs::write(&events, line("INFO", "HA", "Node is active")).unwrap();
        let p = probe_with(RoleProbeSection {
            kind: ProbeKind::File,
            active_pattern: "^Node is active$".into(),
            standby_pattern: "^Node is standby$".into(),
            json_field: Some("message".into()),
            ..RoleProbeSection::default()
        });
        // The previous run said active; a new start marks the end of it.
        let mark = p.mark("", &appdata.path().display().to_string());
        assert_eq!(mark, std::fs::metadata(&events).unwrap().len());
        let since_start = input(HubOutput::Bytes(Vec::new()), mark, appdata.path());
        assert_eq!(p.probe(&since_start).await, Role::Unknown);
        let whole = input(HubOutput::Bytes(Vec::new()), 0, appdata.path());
        assert_eq!(p.probe(&whole).await, Role::Active);

        // The pattern is matched on the field only: "source": "Node is standby"
        // and a line that is not JSON do not count.
        let mut text = std::fs::read_to_string(&events).unwrap();
        text.push_str(&line("INFO", "Node is standby", "starting"));
        text.push_str("Node is standby\n");
        text.push_str(&line("INFO", "HA", "Node is standby"));
        text.push_str(&line("WARN", "HA", "db slow"));
        std::fs::write(&events, &text).unwrap();
        let report = p.inspect(&since_start).await;
        assert_eq!(report.role, Role::Standby, "{report:?}");
        assert_eq!(report.matched.len(), 1);
        assert!(report.matched[0].1.contains("\"HA\""));
        assert_eq!(report.unmatched.len(), 3, "{report:?}");
        assert!(report.source.contains("intelligencehub-events.log"));

        // Rotated (shorter than at the start): read from its beginning.
        std::fs::write(&events, line("I", "HA", "Node is active")).unwrap();
        assert!(std::fs::metadata(&events).unwrap().len() < mark);
        assert_eq!(p.probe(&since_start).await, Role::Active);
        // Gone: unknown, and the report says why.
        std::fs::remove_file(&events).unwrap();
        let report = p.inspect(&since_start).await;
        assert_eq!(report.role, Role::Unknown);
        assert!(report.problem.unwrap().contains("cannot open"));
    }

    #[tokio::test]
    async fn reports_keep_only_the_last_lines() {
        let p = probe(ProbeKind::Log, vec![]);
        let mut text = String::new();
        for i in 0..20 {
            text.push_str(&format!("noise {i}\nHA role: active {i}\n"));
        }
        let report = p
            .inspect(&input(
                HubOutput::Bytes(text.into_bytes()),
                0,
                Path::new("/"),
            ))
            .await;
        assert_eq!(report.matched.len(), REPORT_LINES);
        assert_eq!(report.unmatched.len(), REPORT_LINES);
        assert_eq!(report.matched[REPORT_LINES - 1].1, "HA role: active 19");
        assert_eq!(report.unmatched[0], "noise 15");
    }
}
