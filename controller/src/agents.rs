//! Clients for the agents of a group: mTLS connection, per-call timeouts,
//! and retries for the codes that can succeed on retry.

use crate::inventory::{Inventory, Node};
use crate::readiness::NodeFacts;
use hubshift_common::pb::hub_agent_client::HubAgentClient;
use hubshift_common::pb::{self, HubRole, HubState};
use hubshift_common::redact::redact;
use hubshift_common::tls::TlsFiles;
use std::future::Future;
use std::time::Duration;
use thiserror::Error;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// An agent call that failed, with the node named.
#[derive(Debug, Error)]
pub enum AgentError {
    /// TLS files or the address are unusable.
    #[error("agent of {node}: {message}")]
    Setup {
        /// Node.
        node: String,
        /// What is wrong.
        message: String,
    },
    /// The agent could not be reached.
    #[error("agent of {node} at {addr} is unreachable: {message}")]
    Unreachable {
        /// Node.
        node: String,
        /// Address.
        addr: String,
        /// Transport error.
        message: String,
    },
    /// The agent answered with an error.
    #[error("agent of {node}: {call} failed ({code:?}): {message}")]
    Call {
        /// Node.
        node: String,
        /// RPC name.
        call: &'static str,
        /// gRPC code.
        code: Code,
        /// The agent's message, redacted.
        message: String,
    },
}

/// A connected agent.
#[derive(Clone)]
pub struct Agent {
    /// HA node name.
    pub node: String,
    client: HubAgentClient<Channel>,
    rpc_timeout: Duration,
}

/// Connects to a node's agent over mTLS.
pub async fn connect(inv: &Inventory, node: &Node) -> Result<Agent, AgentError> {
    let files = TlsFiles {
        cert: inv.tls.cert.clone(),
        key: inv.tls.key.clone(),
        ca: inv.tls.ca.clone(),
    };
    let setup = |message: String| AgentError::Setup {
        node: node.name.clone(),
        message,
    };
    let tls = files
        .client_config(&node.server_name())
        .map_err(|e| setup(e.to_string()))?;
    let endpoint = Endpoint::from_shared(format!("https://{}", node.agent))
        .map_err(|e| setup(format!("bad agent address {:?}: {e}", node.agent)))?
        .tls_config(tls)
        .map_err(|e| setup(format!("TLS configuration: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        // Backups stream back in 512 KiB chunks: a window of a few chunks
        // keeps the connection busy without buffering much.
        .initial_stream_window_size(4 * 1024 * 1024)
        .initial_connection_window_size(8 * 1024 * 1024);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| AgentError::Unreachable {
            node: node.name.clone(),
            addr: node.agent.clone(),
            message: error_chain(&e),
        })?;
    Ok(Agent::from_channel(&node.name, channel, inv.rpc_timeout()))
}

/// Full error chain of a transport error (the TLS reason sits deep inside).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        src = cause.source();
    }
    redact(&s)
}

fn retryable(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::DeadlineExceeded)
}

impl Agent {
    /// An agent over a channel that is already set up. [`connect`] makes
    /// the mTLS channel of production; tests hand in a channel to an
    /// in-process fake agent, so that the steps' waits and fallbacks run
    /// against scripted hubs without certificates or sockets.
    pub fn from_channel(node: &str, channel: Channel, rpc_timeout: Duration) -> Self {
        Agent {
            node: node.to_string(),
            client: HubAgentClient::new(channel)
                .max_decoding_message_size(8 * 1024 * 1024)
                .max_encoding_message_size(8 * 1024 * 1024),
            rpc_timeout,
        }
    }

    fn call_err(&self, call: &'static str, status: &Status) -> AgentError {
        AgentError::Call {
            node: self.node.clone(),
            call,
            code: status.code(),
            message: redact(status.message()),
        }
    }

    /// Runs an idempotent unary call with a timeout, retrying transient failures.
    async fn unary<T, F, Fut>(
        &self,
        call: &'static str,
        timeout: Duration,
        f: F,
    ) -> Result<T, AgentError>
    where
        F: Fn(HubAgentClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match tokio::time::timeout(timeout, f(self.client.clone())).await {
                Ok(r) => r,
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "no answer within {}s",
                    timeout.as_secs()
                ))),
            };
            match result {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(status) if retryable(status.code()) && attempt < 4 => {
                    tracing::warn!(node = %self.node, call, code = ?status.code(), attempt, "retrying agent call");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(status) => return Err(self.call_err(call, &status)),
            }
        }
    }

    /// Status, raw (cheap: for polling).
    pub async fn status(&self) -> Result<pb::StatusResponse, AgentError> {
        self.unary("Status", self.rpc_timeout, |mut c| async move {
            c.status(pb::StatusRequest {
                measure_appdata: false,
            })
            .await
        })
        .await
    }

    /// Status with the size of appdata, for preflight.
    pub async fn status_measured(&self) -> Result<pb::StatusResponse, AgentError> {
        self.unary("Status", self.rpc_timeout, |mut c| async move {
            c.status(pb::StatusRequest {
                measure_appdata: true,
            })
            .await
        })
        .await
    }

    /// Graceful stop (idempotent).
    pub async fn stop(&self, timeout: Duration) -> Result<pb::StopResponse, AgentError> {
        let secs = timeout.as_secs().max(1) as u32;
        self.unary(
            "Stop",
            timeout + self.rpc_timeout,
            move |mut c| async move {
                c.stop(pb::StopRequest {
                    timeout_seconds: secs,
                })
                .await
            },
        )
        .await
    }

    /// Start (idempotent: a running hub is left alone).
    pub async fn start(
        &self,
        mode: pb::StartMode,
        node: &str,
        jdbc_uri: &str,
        timeout: Duration,
    ) -> Result<pb::StartResponse, AgentError> {
        let req = pb::StartRequest {
            mode: mode as i32,
            node: node.to_string(),
            jdbc_uri: jdbc_uri.to_string(),
        };
        self.unary("Start", timeout, move |mut c| {
            let req = req.clone();
            async move { c.start(req).await }
        })
        .await
    }

    /// Backup with a caller-chosen id (idempotent).
    pub async fn backup(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<pb::BackupResponse, AgentError> {
        let id = id.to_string();
        self.unary("Backup", timeout, move |mut c| {
            let id = id.clone();
            async move { c.backup(pb::BackupRequest { id }).await }
        })
        .await
    }

    /// Re-reads a backup on the host and checks its digest.
    pub async fn verify_backup(
        &self,
        id: &str,
        sha256: &str,
        timeout: Duration,
    ) -> Result<pb::VerifyBackupResponse, AgentError> {
        let req = pb::VerifyBackupRequest {
            id: id.to_string(),
            sha256: sha256.to_string(),
        };
        self.unary("VerifyBackup", timeout, move |mut c| {
            let req = req.clone();
            async move { c.verify_backup(req).await }
        })
        .await
    }

    /// Replaces appdata from a backup (the agent keeps the old tree aside).
    pub async fn restore(
        &self,
        id: &str,
        sha256: &str,
        timeout: Duration,
    ) -> Result<pb::RestoreResponse, AgentError> {
        let req = pb::RestoreRequest {
            id: id.to_string(),
            sha256: sha256.to_string(),
        };
        self.unary("Restore", timeout, move |mut c| {
            let req = req.clone();
            async move { c.restore(req).await }
        })
        .await
    }

    /// Switches `current`.
    pub async fn activate(&self, version: &str) -> Result<pb::ActivateRuntimeResponse, AgentError> {
        let version = version.to_string();
        self.unary("ActivateRuntime", self.rpc_timeout, move |mut c| {
            let version = version.clone();
            async move {
                c.activate_runtime(pb::ActivateRuntimeRequest { version })
                    .await
            }
        })
        .await
    }

    /// The certificate store.
    pub async fn get_certificate(&self) -> Result<pb::Certificate, AgentError> {
        self.unary("GetCertificate", self.rpc_timeout, |mut c| async move {
            c.get_certificate(pb::GetCertificateRequest {}).await
        })
        .await
    }

    /// Writes the certificate store.
    pub async fn put_certificate(
        &self,
        cert: pb::Certificate,
    ) -> Result<pb::PutCertificateResponse, AgentError> {
        self.unary("PutCertificate", self.rpc_timeout, move |mut c| {
            let cert = cert.clone();
            async move { c.put_certificate(cert).await }
        })
        .await
    }

    /// The raw client, for streaming calls.
    pub fn client(&self) -> HubAgentClient<Channel> {
        self.client.clone()
    }

    /// Wraps a streaming call's failure.
    pub fn stream_err(&self, call: &'static str, status: &Status) -> AgentError {
        self.call_err(call, status)
    }
}

/// Planning facts from a Status answer.
pub fn facts_from(s: &pb::StatusResponse) -> NodeFacts {
    let settings = s.settings.clone().unwrap_or_default();
    let free = |name: &str| {
        s.free_space
            .iter()
            .find(|d| d.name == name)
            .map_or(0, |d| d.free_bytes)
    };
    NodeFacts {
        running: is_running(s),
        role: role_name(s).to_string(),
        active_runtime: s.active_runtime.clone(),
        staged: s.staged_runtimes.clone(),
        certificate_sha256: s.certificate_sha256.clone(),
        free_state: free("state"),
        free_install: free("install_root"),
        install_path: s
            .free_space
            .iter()
            .find(|d| d.name == "install_root")
            .map(|d| d.path.clone())
            .unwrap_or_default(),
        appdata_bytes: s.appdata_bytes,
        node: s.node.clone(),
        frozen: s.frozen,
        layout: s.layout.clone(),
        runtime_dir: s.runtime_dir.clone(),
        settings_file: settings.file.clone(),
        settings_problem: settings.problem.clone(),
        app_data: settings.app_data.clone(),
        store_forward_dir: settings.store_forward_dir.clone(),
        store_forward_in_runtime: settings.store_forward_in_runtime,
    }
}

/// Whether a hub process runs.
pub fn is_running(s: &pb::StatusResponse) -> bool {
    matches!(s.state(), HubState::Running | HubState::Starting)
}

/// "active", "standby" or "unknown" (also for a hub that does not run).
pub fn role_name(s: &pb::StatusResponse) -> &'static str {
    if !is_running(s) {
        return "stopped";
    }
    match s.role() {
        HubRole::Active => "active",
        HubRole::Standby => "standby",
        HubRole::Unknown => "unknown",
    }
}

/// "running", "starting", "stopped" or "exited (code N)".
pub fn state_name(s: &pb::StatusResponse) -> String {
    match s.state() {
        HubState::Running => "running".into(),
        HubState::Starting => "starting".into(),
        HubState::Stopped | HubState::Unspecified => "stopped".into(),
        HubState::Exited => match s.exit_code {
            Some(c) => format!("exited (code {c})"),
            None => "exited".into(),
        },
    }
}
