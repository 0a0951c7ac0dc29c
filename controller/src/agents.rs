//! Clients for the agents of a group: mTLS connection, per-call timeouts,
//! and retries for the codes that can succeed on retry.

use crate::hub::{
    Activated, BackupMade, BackupRead, BaseRef, CertificateStore, DirSpace, HubProcess,
    HubRole as DomainRole, HubSettings, HubStatus, Installed, RuntimeFormat, RuntimeUpload,
    StagedRuntime, StartMode, Started, Stopped,
};
pub use crate::hub::{is_running, role_name, state_name};
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
    /// Where a run records what this agent's Status answers showed.
    timeline: Option<std::sync::Arc<crate::timeline::Timeline>>,
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
            timeline: None,
        }
    }

    /// This agent, with every Status answer (or its absence) recorded in
    /// `timeline` when it shows a change.
    pub fn watched(mut self, timeline: std::sync::Arc<crate::timeline::Timeline>) -> Self {
        self.timeline = Some(timeline);
        self
    }

    /// Records a Status answer in the run's timeline.
    fn seen(&self, r: Result<HubStatus, AgentError>) -> Result<HubStatus, AgentError> {
        if let Some(t) = &self.timeline {
            match &r {
                Ok(s) => t.saw(&self.node, s),
                Err(_) => t.unreachable(&self.node),
            }
        }
        r
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

    /// Status, in full: the hub and the host's files (staged runtimes,
    /// certificate store, free space, settings).
    pub async fn status(&self) -> Result<HubStatus, AgentError> {
        self.ask_status(pb::StatusRequest {
            measure_appdata: false,
            brief: false,
        })
        .await
    }

    /// Status with the size of appdata, for preflight.
    pub async fn status_measured(&self) -> Result<HubStatus, AgentError> {
        self.ask_status(pb::StatusRequest {
            measure_appdata: true,
            brief: false,
        })
        .await
    }

    /// The hub's state, role and active runtime only — what the steps check
    /// before and after they act, and what the waits poll ten times a
    /// second: the fields of the host's files are left empty (an agent
    /// older than the field answers in full).
    pub async fn status_brief(&self) -> Result<HubStatus, AgentError> {
        self.ask_status(pb::StatusRequest {
            measure_appdata: false,
            brief: true,
        })
        .await
    }

    async fn ask_status(&self, req: pb::StatusRequest) -> Result<HubStatus, AgentError> {
        let r = self
            .unary("Status", self.rpc_timeout, |mut c| async move {
                c.status(req).await
            })
            .await;
        self.seen(r.map(HubStatus::from))
    }

    /// Graceful stop (idempotent).
    pub async fn stop(&self, timeout: Duration) -> Result<Stopped, AgentError> {
        let secs = timeout.as_secs().max(1) as u32;
        let r = self
            .unary(
                "Stop",
                timeout + self.rpc_timeout,
                move |mut c| async move {
                    c.stop(pb::StopRequest {
                        timeout_seconds: secs,
                    })
                    .await
                },
            )
            .await?;
        Ok(Stopped {
            was_running: r.was_running,
            killed: r.killed,
        })
    }

    /// Start (idempotent: a running hub is left alone).
    pub async fn start(
        &self,
        mode: StartMode,
        node: &str,
        jdbc_uri: &str,
        timeout: Duration,
    ) -> Result<Started, AgentError> {
        let mode = match mode {
            StartMode::Start => pb::StartMode::Start,
            StartMode::CreateAndStart => pb::StartMode::CreateAndStart,
        };
        let req = pb::StartRequest {
            mode: mode as i32,
            node: node.to_string(),
            jdbc_uri: jdbc_uri.to_string(),
        };
        let r = self
            .unary("Start", timeout, move |mut c| {
                let req = req.clone();
                async move { c.start(req).await }
            })
            .await?;
        Ok(Started {
            pid: r.pid,
            already_running: r.already_running,
            carried_store_forward: r.carried_store_forward,
        })
    }

    /// Backup with a caller-chosen id (idempotent); with `base_id`, only
    /// what changed since that base (or a full one, saying why).
    pub async fn backup(
        &self,
        id: &str,
        base_id: &str,
        timeout: Duration,
    ) -> Result<BackupMade, AgentError> {
        let req = pb::BackupRequest {
            id: id.to_string(),
            base_id: base_id.to_string(),
        };
        let r = self
            .unary("Backup", timeout, move |mut c| {
                let req = req.clone();
                async move { c.backup(req).await }
            })
            .await?;
        Ok(backup_made(r))
    }

    /// Pre-copy: a base backup of the running hub's appdata (idempotent).
    pub async fn backup_base(&self, id: &str, timeout: Duration) -> Result<BackupMade, AgentError> {
        let req = pb::BackupRequest {
            id: id.to_string(),
            base_id: String::new(),
        };
        let r = self
            .unary("BackupBase", timeout, move |mut c| {
                let req = req.clone();
                async move { c.backup_base(req).await }
            })
            .await?;
        Ok(backup_made(r))
    }

    /// Re-reads a backup on the host and checks its digest.
    pub async fn verify_backup(
        &self,
        id: &str,
        sha256: &str,
        timeout: Duration,
    ) -> Result<BackupRead, AgentError> {
        let req = pb::VerifyBackupRequest {
            id: id.to_string(),
            sha256: sha256.to_string(),
        };
        let r = self
            .unary("VerifyBackup", timeout, move |mut c| {
                let req = req.clone();
                async move { c.verify_backup(req).await }
            })
            .await?;
        Ok(BackupRead {
            sha256: r.sha256,
            size_bytes: r.size_bytes,
            entries: r.entries,
            base: base_ref(r.base_id, r.base_sha256, r.base_size_bytes),
        })
    }

    /// Replaces appdata from a backup (the agent keeps the old tree aside);
    /// returns where the replaced tree was set aside.
    pub async fn restore(
        &self,
        id: &str,
        sha256: &str,
        timeout: Duration,
    ) -> Result<String, AgentError> {
        let req = pb::RestoreRequest {
            id: id.to_string(),
            sha256: sha256.to_string(),
        };
        let r = self
            .unary("Restore", timeout, move |mut c| {
                let req = req.clone();
                async move { c.restore(req).await }
            })
            .await?;
        Ok(r.set_aside_path)
    }

    /// Switches `current`.
    pub async fn activate(&self, version: &str) -> Result<Activated, AgentError> {
        let version = version.to_string();
        let r = self
            .unary("ActivateRuntime", self.rpc_timeout, move |mut c| {
                let version = version.clone();
                async move {
                    c.activate_runtime(pb::ActivateRuntimeRequest { version })
                        .await
                }
            })
            .await?;
        Ok(Activated {
            previous: r.previous,
            active: r.active,
            carried_store_forward: r.carried_store_forward,
        })
    }

    /// The certificate store.
    pub async fn get_certificate(&self) -> Result<CertificateStore, AgentError> {
        let r = self
            .unary("GetCertificate", self.rpc_timeout, |mut c| async move {
                c.get_certificate(pb::GetCertificateRequest {}).await
            })
            .await?;
        Ok(CertificateStore {
            content: r.content,
            sha256: r.sha256,
        })
    }

    /// Writes the certificate store; returns the SHA-256 the agent wrote.
    pub async fn put_certificate(&self, cert: CertificateStore) -> Result<String, AgentError> {
        let cert = pb::Certificate {
            content: cert.content,
            sha256: cert.sha256,
        };
        let r = self
            .unary("PutCertificate", self.rpc_timeout, move |mut c| {
                let cert = cert.clone();
                async move { c.put_certificate(cert).await }
            })
            .await?;
        Ok(r.sha256)
    }

    /// Streams a runtime archive from `reader` to the agent, calling
    /// `progress` with each chunk's size. Returns the agent's answer, and
    /// how far the archive was read: to its end, or cut off when the stream
    /// ended on the agent's side (its answer says why).
    pub async fn install_runtime<R>(
        &self,
        upload: RuntimeUpload,
        mut reader: R,
        progress: impl Fn(u64) + Send + 'static,
    ) -> (Result<Installed, AgentError>, std::io::Result<Sent>)
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
    {
        use tokio::io::AsyncReadExt;
        let format = match upload.format {
            RuntimeFormat::TarGz => pb::ArchiveFormat::TarGz,
            RuntimeFormat::Zip => pb::ArchiveFormat::Zip,
            RuntimeFormat::DockerImage => pb::ArchiveFormat::DockerImage,
        };
        let header = pb::InstallRuntimeRequest {
            item: Some(pb::install_runtime_request::Item::Header(
                pb::RuntimeHeader {
                    version: upload.version.clone(),
                    sha256: upload.sha256.clone(),
                    size_bytes: upload.size_bytes,
                    format: format as i32,
                    activate: false,
                },
            )),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let producer = tokio::spawn(async move {
            if tx.send(header).await.is_err() {
                return Ok(Sent::CutOff(0));
            }
            let mut sent = 0u64;
            loop {
                let mut buf = vec![0u8; hubshift_common::CHUNK_SIZE];
                let n = reader.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                sent += n as u64;
                progress(n as u64);
                let msg = pb::InstallRuntimeRequest {
                    item: Some(pb::install_runtime_request::Item::Chunk(buf)),
                };
                if tx.send(msg).await.is_err() {
                    return Ok(Sent::CutOff(sent));
                }
            }
            Ok::<Sent, std::io::Error>(Sent::All(sent))
        });
        let response = self
            .client
            .clone()
            .install_runtime(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        let sent = match producer.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(format!(
                "the upload task ended abnormally: {e}"
            ))),
        };
        let response = response
            .map(|r| {
                let r = r.into_inner();
                Installed {
                    version: r.version,
                    sha256: r.sha256,
                    already_installed: r.already_installed,
                }
            })
            .map_err(|s| self.call_err("InstallRuntime", &s));
        (response, sent)
    }

    /// Streams backup `id` back, chunk by chunk.
    pub async fn fetch_backup(&self, id: &str) -> Result<BackupChunks, AgentError> {
        let stream = self
            .client
            .clone()
            .fetch_backup(pb::FetchBackupRequest { id: id.to_string() })
            .await
            .map_err(|s| self.call_err("FetchBackup", &s))?
            .into_inner();
        Ok(BackupChunks {
            agent: self.clone(),
            stream,
        })
    }
}

/// How far an upload read its archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// To its end: this many bytes.
    All(u64),
    /// The agent's side of the stream went away after this many bytes.
    CutOff(u64),
}

/// A backup streamed back from its host.
pub struct BackupChunks {
    agent: Agent,
    stream: tonic::Streaming<pb::Chunk>,
}

impl BackupChunks {
    /// The next chunk, or None at the end.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, AgentError> {
        self.stream
            .message()
            .await
            .map(|c| c.map(|c| c.data))
            .map_err(|s| self.agent.call_err("FetchBackup", &s))
    }
}

impl AgentError {
    /// The connection, not the agent, ended the call: the agent process
    /// died, the host went away, the network broke.
    pub fn connection_lost(&self) -> bool {
        match self {
            AgentError::Unreachable { .. } => true,
            AgentError::Call { code, .. } => {
                matches!(code, Code::Unavailable | Code::Unknown | Code::Cancelled)
            }
            AgentError::Setup { .. } => false,
        }
    }
}

/// Planning facts from a Status answer.
pub fn facts_from(s: &HubStatus) -> NodeFacts {
    let settings = s.settings.clone();
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

/// The wire's Status answer in the controller's terms.
impl From<pb::StatusResponse> for HubStatus {
    fn from(s: pb::StatusResponse) -> Self {
        let process = match s.state() {
            HubState::Running => HubProcess::Running,
            HubState::Starting => HubProcess::Starting,
            HubState::Exited => HubProcess::Exited,
            HubState::Stopped | HubState::Unspecified => HubProcess::Stopped,
        };
        let role = match s.role() {
            HubRole::Active => DomainRole::Active,
            HubRole::Standby => DomainRole::Standby,
            HubRole::Unknown => DomainRole::Unknown,
        };
        let settings = s.settings.unwrap_or_default();
        HubStatus {
            node: s.node,
            process,
            exit_code: s.exit_code,
            pid: s.pid,
            role,
            frozen: s.frozen,
            active_runtime: s.active_runtime,
            staged_runtimes: s.staged_runtimes,
            staged: s
                .staged
                .into_iter()
                .map(|r| StagedRuntime {
                    version: r.version,
                    declared_version: r.declared_version,
                    declared_by: r.declared_by,
                })
                .collect(),
            certificate_sha256: s.certificate_sha256,
            free_space: s
                .free_space
                .into_iter()
                .map(|d| DirSpace {
                    name: d.name,
                    path: d.path,
                    free_bytes: d.free_bytes,
                })
                .collect(),
            agent_version: s.agent_version,
            start_mode: s.start_mode,
            appdata_bytes: s.appdata_bytes,
            runtime_dir: s.runtime_dir,
            layout: s.layout,
            settings: HubSettings {
                file: settings.file,
                problem: settings.problem,
                app_data: settings.app_data,
                store_forward_dir: settings.store_forward_dir,
                store_forward_in_runtime: settings.store_forward_in_runtime,
            },
        }
    }
}

/// A delta's base, when the agent named one.
fn base_ref(id: String, sha256: String, size_bytes: u64) -> Option<BaseRef> {
    (!id.is_empty()).then_some(BaseRef {
        id,
        sha256,
        size_bytes,
    })
}

fn backup_made(r: pb::BackupResponse) -> BackupMade {
    BackupMade {
        base: base_ref(r.base_id, r.base_sha256, r.base_size_bytes),
        id: r.id,
        size_bytes: r.size_bytes,
        sha256: r.sha256,
        path: r.path,
        existed: r.existed,
        full_because: r.full_because,
        write_ms: r.write_ms,
    }
}
