//! The sandbox's Prometheus side: a `hubshift watch` process over the
//! sandbox's inventory, and the scrape configuration that reads it and
//! every agent's `[metrics]` endpoint — the same a site writes for its own
//! hosts (docs/monitoring.md).

use crate::sandbox::{SandboxError, SandboxNode};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `hubshift watch`; stopped when dropped.
pub struct WatchProcess {
    child: Child,
    /// Where its `/metrics` answers.
    pub addr: String,
    /// Its output: one JSON event per line.
    pub log: PathBuf,
}

impl WatchProcess {
    /// Starts `hubshift --json watch` on `inventory`, on any free port,
    /// writing its events to `log`; returns once it serves.
    pub fn start(inventory: &Path, interval: Duration, log: &Path) -> Result<Self, SandboxError> {
        let bin =
            crate::bins::binary("hubshift").map_err(|e| SandboxError::Agent(e.to_string()))?;
        let out = std::fs::File::create(log)
            .map_err(|e| SandboxError::Agent(format!("creating {}: {e}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(|e| SandboxError::Agent(format!("opening {}: {e}", log.display())))?;
        let mut command = Command::new(&bin);
        crate::lifetime::set_die_with_parent(&mut command, libc::SIGTERM);
        let child = command
            .args(["--json", "watch", "-i"])
            .arg(inventory)
            .args(["--listen", "127.0.0.1:0", "--interval"])
            .arg(format!("{}ms", interval.as_millis()))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| SandboxError::Agent(format!("starting {}: {e}", bin.display())))?;
        let mut watch = WatchProcess {
            child,
            addr: String::new(),
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let listen = text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["event"] == "watch_started")
                .and_then(|v| v["listen"].as_str().map(str::to_string));
            if let Some(addr) = listen {
                watch.addr = addr;
                return Ok(watch);
            }
            if let Ok(Some(status)) = watch.child.try_wait() {
                return Err(SandboxError::Agent(format!(
                    "hubshift watch exited ({status}):\n{text}"
                )));
            }
            if Instant::now() >= deadline {
                return Err(SandboxError::Agent(format!(
                    "hubshift watch did not start serving within 30 s:\n{text}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for WatchProcess {
    fn drop(&mut self) {
        // SIGTERM: the watcher's orderly stop.
        // SAFETY: a signal to our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Prometheus `scrape_configs` list: every agent (labelled with its
/// group and node) and the watcher, scraped every `interval`.
pub fn scrape_config(
    groups: &[(&str, &[SandboxNode])],
    watch_addr: &str,
    interval: Duration,
) -> String {
    let every = format!("{}ms", interval.as_millis());
    let mut y = String::from("scrape_configs:\n");
    y += &format!(
        "  - job_name: hubshift-agent\n    scrape_interval: {every}\n    static_configs:\n"
    );
    for (group, nodes) in groups {
        for n in nodes.iter().filter(|n| !n.metrics_addr.is_empty()) {
            y += &format!(
                "      - targets: [\"{}\"]\n        labels: {{group: \"{group}\", node: \"{}\"}}\n",
                n.metrics_addr, n.name
            );
        }
    }
    y += &format!(
        "  - job_name: hubshift-watch\n    scrape_interval: {every}\n    honor_labels: true\n    static_configs:\n      - targets: [\"{watch_addr}\"]\n"
    );
    y
}
