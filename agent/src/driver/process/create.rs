//! HA `create` for CREATE_AND_START, run to completion before the hub starts.

use super::hub::Hub;
use super::hub_log::{copy_masked, log_tail};
use super::procfs::signal_group;
use crate::clock;
use crate::config::Vars;
use crate::error::{AgentError, Result};
use crate::fsutil;
use hubshift_common::redact::Secret;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

impl Hub {
    /// HA `create`, run to completion on this host. Unlike the hub, create
    /// ends before the agent does, so its output passes through the agent
    /// and is masked (the JDBC URI) on its way into hub.log.
    pub(super) async fn run_create(
        &self,
        vars: Vars<'_>,
        workdir: &Path,
        node: &str,
        jdbc: &Secret,
    ) -> Result<()> {
        let log_path = self.log_path();
        let log = fsutil::open_append(&log_path)?;
        let mut marker = &log;
        writeln!(
            marker,
            "--- hubshift-agent: create node {node} at {} ---",
            clock::now_unix_ms()
        )
        .map_err(AgentError::io("cannot write", &log_path))?;
        let offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let mut cmd = self.command(
            &self.cfg.hub.create_command,
            vars,
            workdir,
            node,
            jdbc,
            &log,
        )?;
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            AgentError::FailedPrecondition(format!(
                "cannot run create ({}): {e}",
                self.cfg.hub.create_command[0]
            ))
        })?;
        let log = Arc::new(log);
        let copiers = [
            child
                .stdout
                .take()
                .map(|o| copy_masked(o, log.clone(), jdbc.clone())),
            child
                .stderr
                .take()
                .map(|o| copy_masked(o, log.clone(), jdbc.clone())),
        ];
        tracing::info!(node = %node, "running HA create");
        let limit = Duration::from_secs(self.cfg.hub.create_timeout_secs);
        let waited = tokio::time::timeout(limit, child.wait()).await;
        if waited.is_err() {
            if let Some(pid) = child.id() {
                signal_group(pid as i32, libc::SIGKILL);
            }
            let _ = child.wait().await;
        }
        for copier in copiers.into_iter().flatten() {
            // Output of grandchildren that outlive create must not hold us up.
            let _ = tokio::time::timeout(Duration::from_secs(5), copier).await;
        }
        let status = match waited {
            Ok(status) => status.map_err(AgentError::io("cannot wait for create in", workdir))?,
            Err(_) => {
                let tail = log_tail(&log_path, offset, jdbc);
                return Err(AgentError::FailedPrecondition(format!(
                    "create did not finish within {}s; output: {tail}",
                    limit.as_secs()
                )));
            }
        };
        if !status.success() {
            let tail = log_tail(&log_path, offset, jdbc);
            return Err(AgentError::FailedPrecondition(format!(
                "create failed ({status}); output: {tail}"
            )));
        }
        tracing::info!(node = %node, "HA create finished");
        Ok(())
    }
}
