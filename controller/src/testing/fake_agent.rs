//! An in-process fake of the hub agent, for unit tests of the steps'
//! decisions (takeover, fallback, hand-back: never two actives).
//!
//! Every node of a [`FakeGroup`] is a real tonic server of the `HubAgent`
//! service over an in-memory `tokio::io::duplex` transport, and the
//! controller's own [`Agent`] client talks to it: timeouts, retries and
//! error mapping are the production ones. The transport is in memory rather
//! than loopback TCP so that tokio's paused clock only jumps forward when
//! every task waits on a timer, never while bytes are in flight; a test
//! waiting out a 120 s takeover then runs in milliseconds.
//!
//! The hubs behind the agents are scripted, after the HA behaviour of the
//! real hub (and `hubsim`): when no node is active, a running standby takes
//! over after the group's takeover time (or never, as scripted); a start
//! takes a start delay, after which the node that ran HA `create` is active
//! (the preferred primary) and any other becomes active only when nobody
//! else is; old-version nodes shut themselves down when HA `create` makes
//! the new schema (or, as scripted, keep running). A frozen hub keeps what
//! it reports but does nothing: it never takes over and serves no data.
//! Roles move lazily, whenever a call looks, at the paused clock's time.

use crate::agents::Agent;
use hubshift_common::pb::hub_agent_server::{HubAgent, HubAgentServer};
use hubshift_common::pb::{self, HubRole, HubState, StartMode};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tonic::transport::{Endpoint, Server, Uri};
use tonic::{Code, Request, Response, Status, Streaming};

/// One scripted hub.
#[derive(Debug, Clone)]
pub struct Hub {
    /// Process state.
    pub state: HubState,
    /// What its role probe reports.
    pub role: HubRole,
    /// Stopped by a signal: reports as before, does nothing.
    pub frozen: bool,
    /// The runtime `current` points at.
    pub active_runtime: String,
    /// Runtimes unpacked on the host.
    pub staged: Vec<String>,
    /// Exit code of an ended hub.
    pub exit_code: Option<i32>,
    /// When a start in progress is done.
    ready_at: Option<Instant>,
    /// The running process ran HA `create` (it is the preferred primary).
    created: bool,
}

impl Hub {
    fn new(state: HubState, role: HubRole, runtime: &str) -> Self {
        Hub {
            state,
            role,
            frozen: false,
            active_runtime: runtime.to_string(),
            staged: vec![runtime.to_string()],
            exit_code: None,
            ready_at: None,
            created: false,
        }
    }

    /// A running, active hub on `runtime`.
    pub fn active(runtime: &str) -> Self {
        Hub::new(HubState::Running, HubRole::Active, runtime)
    }

    /// A running standby on `runtime`.
    pub fn standby(runtime: &str) -> Self {
        Hub::new(HubState::Running, HubRole::Standby, runtime)
    }

    /// A stopped hub on `runtime`.
    pub fn stopped(runtime: &str) -> Self {
        Hub::new(HubState::Stopped, HubRole::Unknown, runtime)
    }

    /// The same hub, frozen.
    pub fn frozen(mut self) -> Self {
        self.frozen = true;
        self
    }

    /// The same hub with its role probe saying `role`.
    pub fn role(mut self, role: HubRole) -> Self {
        self.role = role;
        self
    }

    /// The same hub with `version` unpacked beside its runtime.
    pub fn staged(mut self, version: &str) -> Self {
        self.staged.push(version.to_string());
        self
    }

    /// Whether its process runs (or is starting).
    pub fn is_running(&self) -> bool {
        matches!(self.state, HubState::Running | HubState::Starting)
    }

    /// Whether it serves as the active node.
    pub fn is_serving(&self) -> bool {
        self.state == HubState::Running && self.role == HubRole::Active && !self.frozen
    }

    fn stop(&mut self) {
        self.state = HubState::Stopped;
        self.role = HubRole::Unknown;
        self.frozen = false;
        self.ready_at = None;
        self.created = false;
    }
}

/// What the standbys do when no node is active.
#[derive(Debug, Clone, Copy)]
pub enum Takeover {
    /// The first running, unfrozen standby becomes active this long after
    /// the group lost its active node.
    After(Duration),
    /// Nobody takes over (the standbys do not see the heartbeat vanish).
    Never,
}

/// What a running old-version node does when HA `create` makes a schema of
/// another version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnNewSchema {
    /// It shuts itself down, as the real hub does when the schema's name,
    /// place and credentials are the same.
    ShutDown,
    /// It goes on (another schema name, place or credentials).
    KeepRunning,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Fail(Code),
    Hang,
}

struct Injected {
    node: String,
    rpc: &'static str,
    fault: Fault,
    /// How many more calls it hits; `None`: every call.
    left: Option<u32>,
}

struct World {
    hubs: BTreeMap<String, Hub>,
    certificates: BTreeMap<String, Vec<u8>>,
    takeover: Takeover,
    on_new_schema: OnNewSchema,
    start_delay: Duration,
    leaderless_since: Option<Instant>,
    split_since: Option<Instant>,
    split_total: Duration,
    faults: Vec<Injected>,
    calls: Vec<(String, &'static str)>,
}

impl World {
    /// Moves every hub on to where the script has it at `now`.
    fn settle(&mut self, now: Instant) {
        let starting: Vec<String> = self
            .hubs
            .iter()
            .filter(|(_, h)| h.state == HubState::Starting && h.ready_at.is_some_and(|t| t <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for node in starting {
            let other_serves = self.hubs.iter().any(|(n, h)| *n != node && h.is_serving());
            if let Some(h) = self.hubs.get_mut(&node) {
                h.state = HubState::Running;
                h.ready_at = None;
                h.role = if h.created || !other_serves {
                    HubRole::Active
                } else {
                    HubRole::Standby
                };
            }
        }
        if self.hubs.values().any(Hub::is_serving) {
            self.leaderless_since = None;
        } else {
            let since = *self.leaderless_since.get_or_insert(now);
            if let Takeover::After(after) = self.takeover
                && now >= since + after
                && let Some(h) = self.hubs.values_mut().find(|h| {
                    h.state == HubState::Running && h.role == HubRole::Standby && !h.frozen
                })
            {
                h.role = HubRole::Active;
                self.leaderless_since = None;
            }
        }
        let serving = self.hubs.values().filter(|h| h.is_serving()).count();
        match (serving > 1, self.split_since) {
            (true, None) => self.split_since = Some(now),
            (false, Some(since)) => {
                self.split_total += now - since;
                self.split_since = None;
            }
            _ => {}
        }
    }

    fn hub(&mut self, node: &str) -> Result<&mut Hub, Status> {
        self.hubs
            .get_mut(node)
            .ok_or_else(|| Status::not_found(format!("no scripted hub {node}")))
    }
}

/// A group of scripted hubs, each behind its own fake agent.
#[derive(Clone)]
pub struct FakeGroup {
    world: Arc<Mutex<World>>,
}

impl Default for FakeGroup {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeGroup {
    /// An empty group: standbys take over after 10 s, starts take 2 s, old
    /// secondaries shut themselves down on a new schema.
    pub fn new() -> Self {
        FakeGroup {
            world: Arc::new(Mutex::new(World {
                hubs: BTreeMap::new(),
                certificates: BTreeMap::new(),
                takeover: Takeover::After(Duration::from_secs(10)),
                on_new_schema: OnNewSchema::ShutDown,
                start_delay: Duration::from_secs(2),
                leaderless_since: None,
                split_since: None,
                split_total: Duration::ZERO,
                faults: Vec::new(),
                calls: Vec::new(),
            })),
        }
    }

    fn world(&self) -> MutexGuard<'_, World> {
        // A test that panicked while holding the lock has failed already.
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds (or replaces) a node.
    pub fn with(self, node: &str, hub: Hub) -> Self {
        self.world().hubs.insert(node.to_string(), hub);
        self
    }

    /// Sets how the standbys take over.
    pub fn takeover(self, t: Takeover) -> Self {
        self.world().takeover = t;
        self
    }

    /// Sets what old secondaries do on a new schema.
    pub fn on_new_schema(self, o: OnNewSchema) -> Self {
        self.world().on_new_schema = o;
        self
    }

    /// Sets how long a start takes.
    pub fn start_delay(self, d: Duration) -> Self {
        self.world().start_delay = d;
        self
    }

    /// Makes the next `times` calls of `rpc` to `node` (every call when
    /// `None`) answer with `code`.
    pub fn fail(&self, node: &str, rpc: &'static str, code: Code, times: Option<u32>) {
        self.inject(node, rpc, Fault::Fail(code), times);
    }

    /// Makes the next `times` calls of `rpc` to `node` (every call when
    /// `None`) never answer.
    pub fn hang(&self, node: &str, rpc: &'static str, times: Option<u32>) {
        self.inject(node, rpc, Fault::Hang, times);
    }

    fn inject(&self, node: &str, rpc: &'static str, fault: Fault, left: Option<u32>) {
        self.world().faults.push(Injected {
            node: node.to_string(),
            rpc,
            fault,
            left,
        });
    }

    /// Changes a hub as a test's script says (a freeze, a crash, a role).
    pub fn set(&self, node: &str, f: impl FnOnce(&mut Hub)) {
        let mut w = self.world();
        if let Some(h) = w.hubs.get_mut(node) {
            f(h);
        }
        w.settle(Instant::now());
    }

    /// A node's hub as it stands now.
    pub fn hub(&self, node: &str) -> Option<Hub> {
        let mut w = self.world();
        w.settle(Instant::now());
        w.hubs.get(node).cloned()
    }

    /// How often `rpc` was called on `node` (faulted calls included).
    pub fn calls(&self, node: &str, rpc: &str) -> usize {
        self.world()
            .calls
            .iter()
            .filter(|(n, r)| n == node && *r == rpc)
            .count()
    }

    /// How long two or more nodes were seen serving at once, as far as
    /// the calls looked.
    pub fn split_brain(&self) -> Duration {
        let mut w = self.world();
        w.settle(Instant::now());
        w.split_total + w.split_since.map_or(Duration::ZERO, |s| Instant::now() - s)
    }

    /// A client of `node`'s fake agent, with the production client's
    /// timeouts and retries. The connection is made on first use.
    pub fn agent(&self, node: &str, rpc_timeout: Duration) -> Agent {
        let (tx, rx) =
            tokio::sync::mpsc::unbounded_channel::<std::io::Result<tokio::io::DuplexStream>>();
        let service = FakeAgent {
            node: node.to_string(),
            world: self.world.clone(),
        };
        tokio::spawn(
            Server::builder()
                .add_service(HubAgentServer::new(service))
                .serve_with_incoming(UnboundedReceiverStream::new(rx)),
        );
        let channel = Endpoint::from_static("http://fake-agent.invalid")
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let tx = tx.clone();
                async move {
                    let (client, server) = tokio::io::duplex(1 << 20);
                    tx.send(Ok(server))
                        .map_err(|_| std::io::Error::other("the fake agent has ended"))?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(client))
                }
            }));
        Agent::from_channel(node, channel, rpc_timeout)
    }
}

/// One node's fake agent.
struct FakeAgent {
    node: String,
    world: Arc<Mutex<World>>,
}

type Reply<T> = Result<Response<T>, Status>;

impl FakeAgent {
    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the call and applies an injected fault, if one is due.
    async fn enter(&self, rpc: &'static str) -> Result<(), Status> {
        let fault = {
            let mut w = self.world();
            w.calls.push((self.node.clone(), rpc));
            let node = self.node.clone();
            let hit = w
                .faults
                .iter_mut()
                .find(|f| f.node == node && f.rpc == rpc && f.left != Some(0));
            hit.map(|f| {
                if let Some(n) = f.left.as_mut() {
                    *n -= 1;
                }
                f.fault
            })
        };
        match fault {
            None => Ok(()),
            Some(Fault::Fail(code)) => Err(Status::new(code, format!("injected {rpc} failure"))),
            Some(Fault::Hang) => std::future::pending().await,
        }
    }

    /// Runs `f` on this node's hub after settling the world.
    fn with_hub<T>(&self, f: impl FnOnce(&mut World, &str) -> Result<T, Status>) -> Reply<T> {
        let mut w = self.world();
        w.settle(Instant::now());
        let r = f(&mut w, &self.node)?;
        w.settle(Instant::now());
        Ok(Response::new(r))
    }
}

#[tonic::async_trait]
impl HubAgent for FakeAgent {
    type FetchBackupStream = ReceiverStream<Result<pb::Chunk, Status>>;

    async fn status(&self, _req: Request<pb::StatusRequest>) -> Reply<pb::StatusResponse> {
        self.enter("Status").await?;
        let certificate = hubshift_common::digest::sha256_hex(
            self.world()
                .certificates
                .get(&self.node)
                .map_or(&[][..], Vec::as_slice),
        );
        self.with_hub(|w, node| {
            let h = w.hub(node)?;
            Ok(pb::StatusResponse {
                state: h.state as i32,
                exit_code: h.exit_code,
                pid: if h.is_running() { 4242 } else { 0 },
                role: h.role as i32,
                active_runtime: h.active_runtime.clone(),
                staged_runtimes: h.staged.clone(),
                certificate_sha256: certificate,
                node: node.to_string(),
                frozen: h.frozen,
                ..Default::default()
            })
        })
    }

    async fn stop(&self, _req: Request<pb::StopRequest>) -> Reply<pb::StopResponse> {
        self.enter("Stop").await?;
        self.with_hub(|w, node| {
            let h = w.hub(node)?;
            let r = pb::StopResponse {
                was_running: h.is_running(),
                killed: h.frozen,
            };
            h.stop();
            Ok(r)
        })
    }

    async fn start(&self, req: Request<pb::StartRequest>) -> Reply<pb::StartResponse> {
        self.enter("Start").await?;
        let mode = req.get_ref().mode();
        self.with_hub(|w, node| {
            let delay = w.start_delay;
            let on_new_schema = w.on_new_schema;
            let h = w.hub(node)?;
            if h.is_running() {
                return Ok(pb::StartResponse {
                    pid: 4242,
                    already_running: true,
                    carried_store_forward: Vec::new(),
                });
            }
            h.state = HubState::Starting;
            h.role = HubRole::Unknown;
            h.exit_code = None;
            h.ready_at = Some(Instant::now() + delay);
            h.created = mode == StartMode::CreateAndStart;
            let (created, version) = (h.created, h.active_runtime.clone());
            if created && on_new_schema == OnNewSchema::ShutDown {
                for (n, other) in w.hubs.iter_mut() {
                    if n != node && other.is_running() && other.active_runtime != version {
                        other.stop();
                        other.state = HubState::Exited;
                        other.exit_code = Some(2);
                    }
                }
            }
            Ok(pb::StartResponse {
                pid: 4242,
                already_running: false,
                carried_store_forward: Vec::new(),
            })
        })
    }

    async fn backup(&self, req: Request<pb::BackupRequest>) -> Reply<pb::BackupResponse> {
        self.enter("Backup").await?;
        let req = req.into_inner();
        let id = req.id;
        // No trees to compare: asked for a delta, it writes a full backup.
        let full_because = if req.base_id.is_empty() {
            String::new()
        } else {
            "the fake agent keeps no trees".into()
        };
        Ok(Response::new(pb::BackupResponse {
            sha256: hubshift_common::digest::sha256_hex(id.as_bytes()),
            size_bytes: 1024,
            path: format!("/var/lib/hubshift/backups/{id}.tar.gz"),
            existed: false,
            id,
            full_because,
            ..Default::default()
        }))
    }

    async fn backup_base(&self, req: Request<pb::BackupRequest>) -> Reply<pb::BackupResponse> {
        self.enter("BackupBase").await?;
        let id = req.into_inner().id;
        Ok(Response::new(pb::BackupResponse {
            sha256: hubshift_common::digest::sha256_hex(id.as_bytes()),
            size_bytes: 4096,
            path: format!("/var/lib/hubshift/backups/{id}.tar.gz"),
            id,
            ..Default::default()
        }))
    }

    async fn verify_backup(
        &self,
        req: Request<pb::VerifyBackupRequest>,
    ) -> Reply<pb::VerifyBackupResponse> {
        self.enter("VerifyBackup").await?;
        let req = req.into_inner();
        Ok(Response::new(pb::VerifyBackupResponse {
            sha256: hubshift_common::digest::sha256_hex(req.id.as_bytes()),
            size_bytes: 1024,
            entries: 3,
            ..Default::default()
        }))
    }

    async fn fetch_backup(
        &self,
        _req: Request<pb::FetchBackupRequest>,
    ) -> Reply<Self::FetchBackupStream> {
        self.enter("FetchBackup").await?;
        Err(Status::unimplemented(
            "the fake agent keeps no backup bytes",
        ))
    }

    async fn restore(&self, req: Request<pb::RestoreRequest>) -> Reply<pb::RestoreResponse> {
        self.enter("Restore").await?;
        let id = req.into_inner().id;
        Ok(Response::new(pb::RestoreResponse {
            set_aside_path: format!("/var/lib/hub/appData.before-{id}"),
        }))
    }

    async fn install_runtime(
        &self,
        req: Request<Streaming<pb::InstallRuntimeRequest>>,
    ) -> Reply<pb::InstallRuntimeResponse> {
        self.enter("InstallRuntime").await?;
        let mut stream = req.into_inner();
        let mut header = None;
        while let Some(msg) = stream.message().await? {
            if let Some(pb::install_runtime_request::Item::Header(h)) = msg.item {
                header = Some(h);
            }
        }
        let header = header.ok_or_else(|| Status::invalid_argument("no header"))?;
        self.with_hub(|w, node| {
            let h = w.hub(node)?;
            let already = h.staged.contains(&header.version);
            if !already {
                h.staged.push(header.version.clone());
            }
            Ok(pb::InstallRuntimeResponse {
                version: header.version.clone(),
                sha256: header.sha256.clone(),
                activated: false,
                already_installed: already,
            })
        })
    }

    async fn activate_runtime(
        &self,
        req: Request<pb::ActivateRuntimeRequest>,
    ) -> Reply<pb::ActivateRuntimeResponse> {
        self.enter("ActivateRuntime").await?;
        let version = req.into_inner().version;
        self.with_hub(|w, node| {
            let h = w.hub(node)?;
            if h.is_running() {
                return Err(Status::failed_precondition("hub is running"));
            }
            if !h.staged.contains(&version) {
                return Err(Status::not_found(format!(
                    "runtime {version} is not staged"
                )));
            }
            let previous = std::mem::replace(&mut h.active_runtime, version.clone());
            Ok(pb::ActivateRuntimeResponse {
                previous,
                active: version.clone(),
                carried_store_forward: Vec::new(),
            })
        })
    }

    async fn get_certificate(
        &self,
        _req: Request<pb::GetCertificateRequest>,
    ) -> Reply<pb::Certificate> {
        self.enter("GetCertificate").await?;
        let content = self
            .world()
            .certificates
            .get(&self.node)
            .cloned()
            .unwrap_or_else(|| format!("certificate store of {}", self.node).into_bytes());
        Ok(Response::new(pb::Certificate {
            sha256: hubshift_common::digest::sha256_hex(&content),
            content,
        }))
    }

    async fn put_certificate(
        &self,
        req: Request<pb::Certificate>,
    ) -> Reply<pb::PutCertificateResponse> {
        self.enter("PutCertificate").await?;
        let cert = req.into_inner();
        let sha256 = hubshift_common::digest::sha256_hex(&cert.content);
        self.world()
            .certificates
            .insert(self.node.clone(), cert.content);
        Ok(Response::new(pb::PutCertificateResponse { sha256 }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RPC: Duration = Duration::from_secs(30);

    #[tokio::test(start_paused = true)]
    async fn a_standby_takes_over_after_the_takeover_time() {
        let g = FakeGroup::new()
            .with("p", Hub::active("1.0"))
            .with("s", Hub::standby("1.0"))
            .takeover(Takeover::After(Duration::from_secs(10)));
        let (p, s) = (g.agent("p", RPC), g.agent("s", RPC));
        let stopped = p.stop(Duration::from_secs(5)).await.expect("stop");
        assert!(stopped.was_running && !stopped.killed);
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert_eq!(
            s.status().await.expect("status").role,
            crate::hub::HubRole::Standby
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            s.status().await.expect("status").role,
            crate::hub::HubRole::Active
        );
    }

    #[tokio::test(start_paused = true)]
    async fn injected_errors_and_hangs_reach_the_client() {
        let g = FakeGroup::new().with("p", Hub::active("1.0"));
        let p = g.agent("p", RPC);
        g.fail("p", "Stop", Code::FailedPrecondition, Some(1));
        let e = p.stop(Duration::from_secs(5)).await.expect_err("injected");
        assert!(e.to_string().contains("FailedPrecondition"), "{e}");
        assert!(
            g.hub("p").is_some_and(|h| h.is_serving()),
            "a failed stop changes nothing"
        );
        // A hang is retried like a deadline, then given up after 4 tries.
        g.hang("p", "Status", None);
        let began = Instant::now();
        let e = p.status().await.expect_err("hangs");
        assert!(e.to_string().contains("DeadlineExceeded"), "{e}");
        assert_eq!(g.calls("p", "Status"), 4);
        assert!(began.elapsed() >= RPC * 4);
    }

    #[tokio::test(start_paused = true)]
    async fn create_shuts_old_nodes_down_and_makes_the_creator_active() {
        let g = FakeGroup::new()
            .with("p", Hub::stopped("2.0"))
            .with("s", Hub::active("1.0"));
        let p = g.agent("p", RPC);
        p.start(
            crate::hub::StartMode::CreateAndStart,
            "p",
            "jdbc",
            Duration::from_secs(60),
        )
        .await
        .expect("start");
        let s = g.hub("s").expect("s");
        assert_eq!((s.state, s.exit_code), (HubState::Exited, Some(2)));
        assert_eq!(
            p.status().await.expect("status").process,
            crate::hub::HubProcess::Starting
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            p.status().await.expect("status").role,
            crate::hub::HubRole::Active
        );
        assert_eq!(g.split_brain(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn frozen_standbys_and_a_never_takeover_leave_the_group_without_an_active_node() {
        let g = FakeGroup::new()
            .with("p", Hub::active("1.0"))
            .with("s1", Hub::standby("1.0").frozen())
            .with("s2", Hub::standby("1.0"))
            .takeover(Takeover::Never);
        g.agent("p", RPC)
            .stop(Duration::from_secs(5))
            .await
            .expect("stop");
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!g.hub("s2").expect("s2").is_serving());
        // Once the standbys see the heartbeat vanish, the frozen one is
        // passed over.
        g.world().takeover = Takeover::After(Duration::ZERO);
        assert!(!g.hub("s1").expect("s1").is_serving());
        assert!(g.hub("s2").expect("s2").is_serving());
        // A frozen active node serves nothing, and nobody is left to take over.
        g.set("s2", |h| h.frozen = true);
        assert!(!g.hub("s2").expect("s2").is_serving());
        assert!(!g.hub("s1").expect("s1").is_serving());
    }

    #[tokio::test(start_paused = true)]
    async fn an_old_node_that_keeps_running_is_a_split_brain_until_stopped() {
        let g = FakeGroup::new()
            .with("p", Hub::stopped("1.0").staged("2.0"))
            .with("s", Hub::active("1.0"))
            .on_new_schema(OnNewSchema::KeepRunning)
            .start_delay(Duration::from_secs(1));
        let p = g.agent("p", RPC);
        p.activate("2.0").await.expect("activate");
        p.start(
            crate::hub::StartMode::CreateAndStart,
            "p",
            "jdbc",
            Duration::from_secs(60),
        )
        .await
        .expect("start");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(g.hub("p").expect("p").is_serving());
        tokio::time::sleep(Duration::from_secs(4)).await;
        g.agent("s", RPC)
            .stop(Duration::from_secs(5))
            .await
            .expect("stop");
        assert_eq!(g.split_brain(), Duration::from_secs(4));
    }
}
