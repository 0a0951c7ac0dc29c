//! One node of a sandbox group: its agent process, its hub, and where
//! their files lie.

use super::error::SandboxError;
use super::error::io;
use crate::configs::InventoryTls;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The files of the sandbox's PKI.
#[derive(Debug, Clone)]
pub struct CertPaths {
    /// CA certificate.
    pub ca: PathBuf,
    /// Controller certificate.
    pub controller_cert: PathBuf,
    /// Controller key.
    pub controller_key: PathBuf,
}

impl CertPaths {
    /// The inventory's `[tls]`: the controller's certificate and the CA.
    pub fn inventory_tls(&self) -> InventoryTls {
        InventoryTls {
            ca: self.ca.clone(),
            cert: self.controller_cert.clone(),
            key: self.controller_key.clone(),
        }
    }
}

/// One node: its agent and its directories.
pub struct SandboxNode {
    /// HA node name.
    pub name: String,
    /// Agent configuration file.
    pub config: PathBuf,
    /// Agent state dir (backups, hub.log, hub.json).
    pub state_dir: PathBuf,
    /// Hub install root (runtimes/, current).
    pub install_root: PathBuf,
    /// Hub appdata.
    pub appdata: PathBuf,
    /// Agent's own log.
    pub agent_log: PathBuf,
    /// Address the agent listens on.
    pub addr: String,
    /// Address of the agent's `/metrics` and `/healthz`; empty when off.
    pub metrics_addr: String,
    /// The hub's container (driver docker), else empty.
    pub container: String,
    pub(super) agent: Option<Child>,
}

impl SandboxNode {
    /// The hub's output as the agent (or the engine) keeps it, for
    /// messages: what could not be read is said in its place.
    pub fn hub_log(&self) -> String {
        self.read_hub_log()
            .unwrap_or_else(|e| format!("(the hub log cannot be read: {e})"))
    }

    /// The hub's output as the agent (or the engine) keeps it; an error
    /// when it cannot be read, so that a check that something is absent
    /// from it cannot pass on a failed read.
    pub fn read_hub_log(&self) -> Result<String, SandboxError> {
        if !self.container.is_empty() {
            let o = Command::new("docker")
                .args(["logs", &self.container])
                .output()
                .map_err(io("running docker logs"))?;
            if !o.status.success() {
                return Err(SandboxError::Agent(format!(
                    "docker logs {}: {}",
                    self.container,
                    String::from_utf8_lossy(&o.stderr).trim()
                )));
            }
            return Ok(String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr));
        }
        let path = self.state_dir.join("hub.log");
        std::fs::read_to_string(&path).map_err(io(format!("reading {}", path.display())))
    }

    /// The agent's own log, for messages (see [`SandboxNode::read_agent_log`]).
    pub fn agent_log_text(&self) -> String {
        self.read_agent_log()
            .unwrap_or_else(|e| format!("(the agent log cannot be read: {e})"))
    }

    /// The agent's own log; an error when it cannot be read.
    pub fn read_agent_log(&self) -> Result<String, SandboxError> {
        std::fs::read_to_string(&self.agent_log)
            .map_err(io(format!("reading {}", self.agent_log.display())))
    }

    /// pid of the hub the agent supervises, from its state file (or the
    /// engine: the container's main process, while it runs).
    pub fn hub_pid(&self) -> Option<i32> {
        if !self.container.is_empty() {
            let out = Command::new("docker")
                .args(["inspect", "--format", "{{.State.Pid}}", &self.container])
                .output()
                .ok()?;
            let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
            return (pid > 0).then_some(pid);
        }
        let text = std::fs::read_to_string(self.state_dir.join("hub.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v.get("pid")?.as_i64().map(|p| p as i32)
    }

    /// pid of the node's agent, while the sandbox runs it.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// SIGKILLs the agent and reaps it.
    pub(super) fn kill_agent(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(super) fn kill_hub(&self) {
        if !self.container.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "--force", &self.container])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            return;
        }
        if let Some(pid) = self.hub_pid().filter(|p| *p > 1) {
            // SAFETY: signalling a process group we started; no memory involved.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for SandboxNode {
    /// Also covers a sandbox dropped half-built (a signal during start).
    fn drop(&mut self) {
        self.kill_agent();
        self.kill_hub();
    }
}

/// Last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub(super) async fn spawn_agent(bin: &Path, node: &mut SandboxNode) -> Result<(), SandboxError> {
    let addr_file = node.state_dir.join("agent.addr");
    let _ = std::fs::remove_file(&addr_file);
    // Written before agent.addr when `[metrics]` is on.
    let metrics_file = node.state_dir.join("metrics.addr");
    let _ = std::fs::remove_file(&metrics_file);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.agent_log)
        .map_err(io("opening agent log"))?;
    let err_log = log.try_clone().map_err(io("opening agent log"))?;
    let mut command = Command::new(bin);
    // A sandbox killed outright takes its agents with it.
    crate::lifetime::set_die_with_parent(&mut command, libc::SIGKILL);
    let child = command
        .arg("run")
        .arg("--config")
        .arg(&node.config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log)
        .spawn()
        .map_err(io(format!("starting {}", bin.display())))?;
    // Owned by the node at once: should this future be dropped while it
    // waits (a signal), the node's drop still stops the agent.
    let child = node.agent.insert(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&addr_file)
            && !text.trim().is_empty()
        {
            node.addr = text.trim().to_string();
            node.metrics_addr = std::fs::read_to_string(&metrics_file)
                .map(|t| t.trim().to_string())
                .unwrap_or_default();
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(SandboxError::Agent(format!(
                "agent of {} exited ({status}) before listening:\n{}",
                node.name,
                tail(&node.agent_log_text(), 20)
            )));
        }
        if Instant::now() >= deadline {
            node.kill_agent();
            return Err(SandboxError::Agent(format!(
                "agent of {} did not start listening within 30s",
                node.name
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
