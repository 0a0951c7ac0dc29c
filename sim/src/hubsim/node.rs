//! `hubsim start`: the HA node.
//!
//! Start-up refuses (exit 1) when the database is unreachable, the schema
//! missing, its version differs from this runtime's, or the certificate
//! store does not match the recorded fingerprint. Then every heartbeat
//! interval the node runs one step of the protocol:
//!
//! - **standby**: read cluster + leader; shut down (exit 0) on a version
//!   mismatch; copy the project into appdata; if this node is the preferred
//!   primary and another node is active, ask it to hand over; then, unless
//!   another node leads with a fresh heartbeat, try the atomic claim (leader
//!   is me, nobody, or its heartbeat is older than the takeover timeout).
//!   On success data starts one tick interval + one
//!   heartbeat interval later, and `HA role: active` is logged with the
//!   first tick: active means serving data.
//! - **active**: heartbeat in one UPDATE that succeeds only while nothing
//!   changed (this node leads, the schema's version is its own, nobody asked
//!   for leadership). Otherwise read cluster + leader; shut down on a
//!   version mismatch; if
//!   the preferred primary asked for leadership, stop producing data (wait
//!   until no tick is in flight), then pass leadership to it in one UPDATE
//!   and become standby; otherwise heartbeat (an UPDATE that only succeeds
//!   while this node is still leader). A heartbeat that updates nothing
//!   means another node took over: stop data, become standby. A database
//!   error (schema dropped, database away) keeps the node active and
//!   producing data, logging the error.
//!
//! Why ticks of two nodes never interleave: a handover stops the old node's
//! data before the leader row changes, and the new node waits a tick plus a
//! heartbeat interval after it sees itself leader. A takeover needs the old
//! heartbeat to be older than the takeover timeout, while the old node stops
//! its data when its lease (last heartbeat sent + takeover timeout − one
//! tick interval) runs out, unless the database itself is unreachable.

use super::appdata::AppData;
use super::cli::NodeArgs;
use super::db::{CONNECT_TIMEOUT, Db, STARTUP_CONNECT_TIMEOUT};
use super::jdbc::JdbcTarget;
use super::log::{self, Latch};
use super::schema::{self, HaState};
use super::settings::Places;
use super::store_forward::StoreForward;
use super::ticks::Ticker;
use super::{EXIT_REFUSED, EXIT_USAGE};
use crate::timing::SimTiming;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::signal::unix::{SignalKind, signal};

/// Runs `start`; returns the exit code.
pub async fn run(args: NodeArgs, version: String, places: Places) -> i32 {
    let target = match JdbcTarget::resolve_for_logging(&args.jdbc) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let timing = SimTiming::from(args.timing);
    if let Err(e) = timing.validate() {
        log::error(&e);
        return EXIT_USAGE;
    }
    if let Err(e) = install_signal_handlers(timing.stop_delay) {
        log::error(&format!("cannot install signal handlers: {e}"));
        return EXIT_REFUSED;
    }
    log::info(&format!(
        "hubsim {version} start: node {} appdata {} database {} (heartbeat {:?}, takeover {:?}, tick {:?})",
        args.node,
        places.app_data.display(),
        target.display(),
        timing.heartbeat_interval,
        timing.takeover_timeout,
        timing.tick_interval
    ));
    tokio::time::sleep(timing.start_delay).await;

    let appdata = match AppData::open(&places.app_data) {
        Ok(a) => a,
        Err(e) => {
            log::error(&format!(
                "cannot open appdata {}: {e}",
                places.app_data.display()
            ));
            return EXIT_REFUSED;
        }
    };
    // The first connection waits as long as the JDBC driver would; once
    // running, a lost database is noticed within the short timeout.
    let mut db = Db::with_connect_timeout(&target, STARTUP_CONNECT_TIMEOUT);
    let cluster = match db
        .run(|c| async move { schema::read_cluster(&c).await })
        .await
    {
        Ok(Some(c)) => c,
        Ok(None) => {
            log::error(&format!(
                "HA schema \"{}\" in database {} holds no cluster: run `hubsim create` first",
                schema::SCHEMA,
                target.dbname
            ));
            return EXIT_REFUSED;
        }
        Err(e) if e.is_missing_schema() => {
            log::error(&format!(
                "HA schema \"{}\" not found in database {}: run `hubsim create` first",
                schema::SCHEMA,
                target.dbname
            ));
            return EXIT_REFUSED;
        }
        Err(e) if e.code.is_none() => {
            log::error(&format!("cannot reach database {}: {e}", target.display()));
            return EXIT_REFUSED;
        }
        Err(e) => {
            log::error(&format!(
                "cannot read HA schema \"{}\": {e}",
                schema::SCHEMA
            ));
            return EXIT_REFUSED;
        }
    };
    if cluster.version != version {
        log::error(&format!(
            "version mismatch: HA schema \"{}\" has version {}, this runtime is {version}; refusing to start",
            schema::SCHEMA,
            cluster.version
        ));
        return EXIT_REFUSED;
    }
    let store = appdata.certificate_store_path();
    match appdata.certificate_fingerprint() {
        Ok(f) if f == cluster.cert_fingerprint => {}
        Ok(f) => {
            log::error(&format!(
                "certificate store {} (sha256 {f}) does not match the one recorded in the HA schema (sha256 {}): copy {} from the primary",
                store.display(),
                cluster.cert_fingerprint,
                super::appdata::CERTIFICATE_STORE_FILE
            ));
            return EXIT_REFUSED;
        }
        Err(e) => {
            log::error(&format!(
                "certificate store {} cannot be read ({e}); it must match the one recorded in the HA schema: copy {} from the primary",
                store.display(),
                super::appdata::CERTIFICATE_STORE_FILE
            ));
            return EXIT_REFUSED;
        }
    }
    if let Err(e) = db
        .run(|c| async move { schema::ensure_hubdata(&c).await })
        .await
    {
        log::warn(&format!("cannot create data table hubdata.ticks yet: {e}"));
    }
    db.set_connect_timeout(CONNECT_TIMEOUT);
    let ticker = Ticker::spawn(
        db.share(CONNECT_TIMEOUT),
        args.node.clone(),
        version.clone(),
        timing.tick_interval,
        StoreForward::new(&places.store_forward),
    );
    let project = std::fs::read_to_string(appdata.configuration_path()).unwrap_or_default();
    let mut node = Node {
        me: args.node,
        version,
        timing,
        db,
        ticker,
        appdata,
        role: Role::Unknown,
        started_at: SystemTime::now(),
        project,
        latch: Latch::default(),
    };
    node.copy_project(&cluster.project);
    node.run().await
}

/// A real hub takes seconds to stop: on SIGTERM its data and heartbeat end
/// at once, the process `stop_delay` later.
fn install_signal_handlers(stop_delay: std::time::Duration) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        super::set_stopping();
        log::info(&format!(
            "received {name}: data and heartbeat stopped, shutting down in {stop_delay:?}"
        ));
        log::flush();
        tokio::time::sleep(stop_delay).await;
        log::info("shut down");
        log::flush();
        std::process::exit(0);
    });
    Ok(())
}

/// How stale `orchestration.nodes.last_seen` may get while nothing changes.
const NODE_ROW_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Unknown,
    Standby,
    Active,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Unknown => "starting",
            Role::Standby => "standby",
            Role::Active => "active",
        }
    }
}

enum Next {
    Continue,
    Exit(i32),
}

struct Node {
    me: String,
    version: String,
    timing: SimTiming,
    db: Db,
    ticker: Arc<Ticker>,
    appdata: AppData,
    role: Role,
    started_at: SystemTime,
    project: String,
    latch: Latch,
}

impl Node {
    async fn run(&mut self) -> i32 {
        let mut timer = tokio::time::interval(self.timing.heartbeat_interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The node row is written when the role changes and otherwise every
        // NODE_ROW_EVERY: a heartbeat's worth of writes less per beat.
        let mut recorded: Option<(Role, Instant)> = None;
        loop {
            timer.tick().await;
            if super::stopping() {
                continue;
            }
            let next = if self.role == Role::Active {
                self.active_step().await
            } else {
                self.standby_step().await
            };
            if let Next::Exit(code) = next {
                return code;
            }
            if recorded.is_some_and(|(r, at)| r == self.role && at.elapsed() < NODE_ROW_EVERY) {
                continue;
            }
            let (me, version, role, started) = (
                self.me.clone(),
                self.version.clone(),
                self.role.name(),
                self.started_at,
            );
            if self
                .db
                .run(|c| async move { schema::upsert_node(&c, &me, &version, role, started).await })
                .await
                .is_ok()
            {
                recorded = Some((self.role, Instant::now()));
            }
        }
    }

    fn set_role(&mut self, role: Role) {
        if self.role != role {
            self.role = role;
            // "active" is announced by the ticker with the first tick: a hub
            // is active when it serves data, which hubsim starts a tick and a
            // heartbeat after it claimed leadership.
            if role != Role::Active {
                log::role(false);
            }
        }
    }

    fn lease_from(&self, sent: Instant) -> Instant {
        sent + self.timing.takeover_timeout - self.timing.tick_interval
    }

    async fn read_state(&mut self) -> Result<Option<HaState>, super::db::DbFailure> {
        let takeover = self.timing.takeover_timeout;
        self.db
            .run(|c| async move { schema::read_state(&c, takeover).await })
            .await
    }

    async fn version_mismatch(&mut self, theirs: &str) -> Next {
        self.ticker.stop().await;
        log::info(&format!(
            "version mismatch: HA schema \"{}\" now has version {theirs}, this node runs {}; shutting down",
            schema::SCHEMA,
            self.version
        ));
        Next::Exit(0)
    }

    fn copy_project(&mut self, project: &str) {
        if self.project == project {
            return;
        }
        match self.appdata.write_project(project) {
            Ok(()) => {
                self.project = project.to_string();
                log::info(&format!(
                    "copied the project from the HA schema into {}",
                    self.appdata.configuration_path().display()
                ));
            }
            Err(e) => log::warn(&format!("cannot write the project into appdata: {e}")),
        }
    }

    async fn active_step(&mut self) -> Next {
        let sent = Instant::now();
        let (me, version) = (self.me.clone(), self.version.clone());
        match self
            .db
            .run(|c| async move { schema::steady_heartbeat(&c, &me, &version).await })
            .await
        {
            Ok(true) => {
                self.beat_landed(sent);
                return Next::Continue;
            }
            // Something changed: the state says what.
            Ok(false) => {}
            Err(e) => {
                self.database_failed_while_active(&e.to_string());
                return Next::Continue;
            }
        }
        let state = match self.read_state().await {
            Ok(Some(s)) => s,
            Ok(None) => {
                self.ticker.set_degraded();
                self.latch.fail(
                    "HA schema holds no cluster row; staying active and producing data".into(),
                );
                return Next::Continue;
            }
            Err(e) => {
                self.database_failed_while_active(&e.to_string());
                return Next::Continue;
            }
        };
        if state.version != self.version {
            return self.version_mismatch(&state.version).await;
        }
        if let Some(to) = state.handover_to.clone().filter(|to| *to != self.me)
            && state.leader.as_deref() == Some(self.me.as_str())
        {
            log::info(&format!(
                "node {to} (preferred primary) asks for leadership: stopping data, then handing over"
            ));
            self.ticker.stop().await;
            let (me, to2) = (self.me.clone(), to.clone());
            match self
                .db
                .run(|c| async move { schema::hand_over(&c, &me, &to2).await })
                .await
            {
                Ok(true) => {
                    log::info(&format!("handed leadership over to {to}"));
                    self.set_role(Role::Standby);
                    return Next::Continue;
                }
                Ok(false) => log::warn(&format!(
                    "handover to {to} did not happen: the leader row changed"
                )),
                Err(e) => log::warn(&format!("handover to {to} failed: {e}")),
            }
            // Still leader: become standby and let the claim decide, which
            // restarts data only after the usual wait.
            self.set_role(Role::Standby);
            return Next::Continue;
        }
        let sent = Instant::now();
        let (me, version) = (self.me.clone(), self.version.clone());
        match self
            .db
            .run(|c| async move { schema::heartbeat(&c, &me, &version).await })
            .await
        {
            Ok(true) => self.beat_landed(sent),
            Ok(false) => {
                self.ticker.stop().await;
                log::warn(&format!(
                    "lost leadership to {}: data stopped",
                    state.leader.as_deref().unwrap_or("another node")
                ));
                self.set_role(Role::Standby);
            }
            Err(e) => self.database_failed_while_active(&e.to_string()),
        }
        Next::Continue
    }

    /// A heartbeat landed: the lease runs from when it was sent.
    fn beat_landed(&mut self, sent: Instant) {
        self.latch
            .ok("HA database answers again; heartbeat resumed");
        self.ticker.renew(self.lease_from(sent));
    }

    /// The database failed an active node: it stays active, producing data
    /// into store and forward.
    fn database_failed_while_active(&mut self, e: &str) {
        self.ticker.set_degraded();
        self.latch.fail(format!(
            "HA database error ({e}); staying active and producing data"
        ));
    }

    async fn standby_step(&mut self) -> Next {
        let state = match self.read_state().await {
            Ok(Some(s)) => s,
            Ok(None) => {
                self.latch
                    .fail("HA schema holds no cluster row; standing by".into());
                return Next::Continue;
            }
            Err(e) => {
                self.latch
                    .fail(format!("HA database error ({e}); standing by"));
                return Next::Continue;
            }
        };
        self.latch.ok("HA database answers again");
        if state.version != self.version {
            return self.version_mismatch(&state.version).await;
        }
        self.copy_project(&state.project);
        if state.preferred_primary == self.me
            && let Some(other) = state.leader.clone().filter(|l| *l != self.me)
            && !state.stale
            && state.handover_to.as_deref() != Some(self.me.as_str())
        {
            let (me, other2) = (self.me.clone(), other.clone());
            match self
                .db
                .run(|c| async move { schema::request_handover(&c, &me, &other2).await })
                .await
            {
                Ok(true) => log::info(&format!(
                    "this node is the preferred primary: asked active node {other} to hand over"
                )),
                Ok(false) => {}
                Err(e) => log::warn(&format!("handover request failed: {e}")),
            }
        }
        // A live leader that is another node cannot be claimed from: the
        // claim would change nothing, so it is not sent.
        if state.leader.as_deref().is_some_and(|l| l != self.me) && !state.stale {
            if self.role == Role::Unknown {
                log::info(&format!(
                    "standing by: active node is {}",
                    state.leader.as_deref().unwrap_or("none")
                ));
                self.set_role(Role::Standby);
            }
            return Next::Continue;
        }
        let sent = Instant::now();
        let (me, version, takeover) = (
            self.me.clone(),
            self.version.clone(),
            self.timing.takeover_timeout,
        );
        match self
            .db
            .run(|c| async move { schema::claim(&c, &me, &version, takeover).await })
            .await
        {
            Ok(Some(term)) => {
                let wait = self.timing.tick_interval + self.timing.heartbeat_interval;
                let why = match state.leader.as_deref() {
                    None => "no active node".to_string(),
                    Some(l) if l == self.me => "leadership handed to this node".to_string(),
                    Some(l) => format!(
                        "heartbeat of {l} older than {:?}",
                        self.timing.takeover_timeout
                    ),
                };
                log::info(&format!(
                    "acquired leadership (term {term}, {why}); data starts in {wait:?}"
                ));
                self.ticker
                    .start(Instant::now() + wait, self.lease_from(sent));
                self.set_role(Role::Active);
            }
            Ok(None) => {
                if self.role == Role::Unknown {
                    log::info(&format!(
                        "standing by: active node is {}",
                        state.leader.as_deref().unwrap_or("none")
                    ));
                    self.set_role(Role::Standby);
                }
            }
            Err(e) => self
                .latch
                .fail(format!("HA database error ({e}); standing by")),
        }
        Next::Continue
    }
}
