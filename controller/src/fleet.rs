//! Fleets: many HA groups upgraded by one command, each in its own
//! database's journal and under its own lock. Every group is preflighted
//! before any changes; a canary goes first and alone and must stay healthy
//! for the soak; then groups run `parallel` at a time until they are done or
//! the failure budget is spent. A group whose lock another controller holds
//! is reported as taken and left to it — that is how several controllers
//! share a fleet.

use crate::db::Database;
use crate::exit::{Parked, Refused, Taken, UsageError};
use crate::facts::{RunFacts, Window};
use crate::inventory::{Group, Inventory};
use crate::journal::{self, RunRecord, RunState};
use crate::launch::{
    ArchiveInfo, UpgradeRequest, confirm, distinct_databases, finish, open_run, prepare_resume,
    prepare_upgrade, print_findings, read_archive, record_upgrade,
};
use crate::output::{Output, secs};
use crate::plan::{self, Target};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How a fleet goes about its groups.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetPolicy {
    /// Groups upgraded at once.
    pub parallel: u16,
    /// Upgraded first and alone, then watched for `soak_ms`.
    pub canary: Option<String>,
    /// How long the canary must stay healthy.
    pub soak_ms: u64,
    /// Failed groups tolerated before no new group starts.
    pub max_failed: u32,
    /// Groups that fail preflight are skipped instead of refusing the fleet.
    pub skip_unready: bool,
}

/// What a fleet was asked to do, as every member's journal records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetSpec {
    /// Member groups, in the order they are taken.
    pub groups: Vec<String>,
    /// Target version.
    pub version: String,
    /// Runtime archive digest.
    pub runtime_sha256: String,
    /// Its size.
    pub runtime_bytes: u64,
    /// Where it was read from.
    pub runtime_file: String,
    /// `--pause-before` steps for every group.
    pub pause_before: Vec<String>,
    /// `--allow-downgrade` for every group.
    #[serde(default)]
    pub allow_downgrade: bool,
    /// The policy.
    pub policy: FleetPolicy,
}

/// How a group ended in this fleet run.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Done,
    Failed(String),
    Skipped(String),
    Taken(String),
    NotStarted(String),
    Paused,
    Stopped,
}

impl Outcome {
    fn name(&self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Failed(_) => "failed",
            Outcome::Skipped(_) => "skipped",
            Outcome::Taken(_) => "taken",
            Outcome::NotStarted(_) => "not_started",
            Outcome::Paused => "paused",
            Outcome::Stopped => "stopped",
        }
    }

    fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Failed(r)
            | Outcome::Skipped(r)
            | Outcome::Taken(r)
            | Outcome::NotStarted(r) => Some(r),
            _ => None,
        }
    }
}

/// One line of the closing table.
#[derive(Debug, Clone)]
struct Row {
    group: String,
    outcome: Outcome,
    run: Option<String>,
    duration_ms: u64,
    facts: Option<RunFacts>,
}

impl Row {
    fn new(group: &str, outcome: Outcome) -> Self {
        Self {
            group: group.to_string(),
            outcome,
            run: None,
            duration_ms: 0,
            facts: None,
        }
    }

    fn windows(&self) -> Vec<Window> {
        self.facts.as_ref().map(|f| f.windows()).unwrap_or_default()
    }
}

/// What a group task is to do.
#[derive(Debug, Clone)]
enum Work {
    Start(Group),
    Resume(Group, String),
}

impl Work {
    fn group(&self) -> &Group {
        match self {
            Work::Start(g) | Work::Resume(g, _) => g,
        }
    }
}

/// Everything the group tasks share.
#[derive(Clone)]
struct Ctx {
    out: Output,
    inventory: Inventory,
    fleet: String,
    req: UpgradeRequest,
    /// An archive the resumed runs may stage from.
    runtime: Option<std::path::PathBuf>,
}

/// Whether a group can be upgraded now, as preflight sees it.
enum Readiness {
    Ready,
    Unready(String),
    Taken(String),
}

/// Looks at one group without changing anything: database, lock, an
/// unfinished run, agents and the preflight checks.
async fn preflight_group(
    out: &Output,
    inventory: &Inventory,
    group: &Group,
    req: &UpgradeRequest,
) -> Readiness {
    let db = match Database::for_group(inventory, group) {
        Ok(db) => db,
        Err(e) => return Readiness::Unready(e.to_string()),
    };
    let client = match db.connect().await {
        Ok(c) => c,
        Err(e) => return Readiness::Unready(e.to_string()),
    };
    match journal::exists(&client).await {
        Ok(true) => {
            match crate::db::try_lock_group(&client, &group.name).await {
                Ok(true) => {}
                Ok(false) => {
                    let holder = match journal::unfinished_run(&client, &group.name).await {
                        Ok(Some(r)) => format!("run {} (started {})", r.id, r.created_at),
                        _ => "another hubshift controller".into(),
                    };
                    return Readiness::Taken(format!("locked by {holder}"));
                }
                Err(e) => return Readiness::Unready(e.to_string()),
            }
            match journal::unfinished_run(&client, &group.name).await {
                Ok(Some(r)) => {
                    return Readiness::Unready(format!(
                        "run {} did not finish ({}): `hubshift resume --run {}` or `hubshift abandon --run {}`",
                        r.id, r.state, r.id, r.id
                    ));
                }
                Ok(None) => {}
                Err(e) => return Readiness::Unready(e.to_string()),
            }
        }
        Ok(false) => {}
        Err(e) => return Readiness::Unready(e.to_string()),
    }
    // The lock (if taken above) goes with this connection.
    drop(client);
    let (_agents, observed) = crate::observe::observe(inventory, group, Some(&db)).await;
    let at_target = observed.nodes.iter().all(|n| {
        n.status
            .as_ref()
            .is_ok_and(|f| f.active_runtime == req.version)
    });
    if at_target {
        return Readiness::Taken(format!("already runs {}", req.version));
    }
    let findings = plan::preflight(
        &observed,
        &Target {
            version: req.version.clone(),
            archive_bytes: req.archive.bytes,
            allow_downgrade: req.allow_downgrade,
        },
    );
    let shown: Vec<_> = findings
        .iter()
        .filter(|f| f.blocking || f.warning || out.is_json())
        .cloned()
        .collect();
    print_findings(out, &shown);
    let problems: Vec<String> = findings
        .iter()
        .filter(|f| f.blocking)
        .map(|f| {
            if f.node.is_empty() {
                format!("{}: {}", f.check, f.message)
            } else {
                format!("{} {}: {}", f.node, f.check, f.message)
            }
        })
        .collect();
    if problems.is_empty() {
        Readiness::Ready
    } else {
        Readiness::Unready(problems.join("; "))
    }
}

/// `hubshift upgrade` of several groups: preflight all, then the fleet.
pub async fn start(
    out: Output,
    inventory: Inventory,
    groups: Vec<Group>,
    mut req: UpgradeRequest,
    policy: FleetPolicy,
    yes: bool,
) -> Result<()> {
    out.event(
        "fleet_preflight",
        json!({ "groups": groups.iter().map(|g| g.name.clone()).collect::<Vec<_>>(),
                "version": req.version }),
        || {
            format!(
                "Fleet preflight: {} groups -> {}",
                groups.len(),
                req.version
            )
        },
    );
    let mut set = JoinSet::new();
    for (i, g) in groups.iter().enumerate() {
        let (out, inventory, g, req) = (
            out.for_group(&g.name),
            inventory.clone(),
            g.clone(),
            req.clone(),
        );
        set.spawn(async move { (i, preflight_group(&out, &inventory, &g, &req).await) });
    }
    let mut readiness: Vec<Option<Readiness>> = groups.iter().map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        let (i, r) = joined.context("a preflight task ended abnormally")?;
        readiness[i] = Some(r);
    }
    let mut ready = Vec::new();
    let mut rows = Vec::new();
    let mut unready = Vec::new();
    for (g, r) in groups.iter().zip(readiness) {
        let gout = out.for_group(&g.name);
        match r {
            Some(Readiness::Ready) => {
                gout.event("group_ready", json!({}), || "ready".into());
                ready.push(g.clone());
            }
            Some(Readiness::Unready(why)) => {
                gout.event("group_not_ready", json!({ "reason": why }), || {
                    format!("NOT READY: {why}")
                });
                unready.push((g.name.clone(), why));
            }
            Some(Readiness::Taken(why)) => {
                gout.event("group_taken", json!({ "reason": why }), || {
                    format!("taken: {why}; left to that controller")
                });
                rows.push(Row::new(&g.name, Outcome::Taken(why)));
            }
            None => unready.push((g.name.clone(), "preflight did not finish".into())),
        }
    }
    if let Some(c) = &policy.canary
        && unready.iter().any(|(g, _)| g == c)
    {
        return Err(Refused(format!("the canary {c} is not ready; nothing was changed")).into());
    }
    if !unready.is_empty() {
        if !policy.skip_unready {
            let names: Vec<&str> = unready.iter().map(|(g, _)| g.as_str()).collect();
            return Err(Refused(format!(
                "{} group(s) not ready: {}; nothing was changed (--skip-unready upgrades the others and reports these as skipped)",
                unready.len(),
                names.join(", ")
            ))
            .into());
        }
        for (g, why) in &unready {
            rows.push(Row::new(g, Outcome::Skipped(why.clone())));
        }
    }
    if !yes {
        let names: Vec<&str> = ready.iter().map(|g| g.name.as_str()).collect();
        confirm(&format!(
            "Upgrade {} group(s) to {} ({})? This stops hubs and drops each group's orchestration schema.",
            ready.len(),
            req.version,
            names.join(", ")
        ))?;
    }
    let members: Vec<Group> = groups.clone();
    let first = members
        .first()
        .context("a fleet needs at least one group")?;
    let db = Database::for_group(&inventory, first)?;
    let client = db.connect().await.map_err(|e| Refused(e.to_string()))?;
    journal::ensure_schema(&client).await?;
    let fleet = journal::new_fleet_id(&client).await?;
    drop(client);
    let spec = FleetSpec {
        groups: members.iter().map(|g| g.name.clone()).collect(),
        version: req.version.clone(),
        runtime_sha256: req.archive.sha256.clone(),
        runtime_bytes: req.archive.bytes,
        runtime_file: req.archive.path.display().to_string(),
        pause_before: req.pause_before.clone(),
        allow_downgrade: req.allow_downgrade,
        policy: policy.clone(),
    };
    record_fleet(&inventory, &members, &fleet, &spec, "upgrade").await?;
    req.fleet = Some(fleet.clone());
    let fout = out.in_fleet(&fleet);
    fout.event(
        "fleet_started",
        json!({ "groups": spec.groups, "version": spec.version, "policy": policy }),
        || {
            format!(
                "\nFleet {fleet}: {} group(s) -> {} (parallel {}, canary {}, max failed {})",
                ready.len(),
                spec.version,
                policy.parallel,
                policy.canary.as_deref().unwrap_or("none"),
                policy.max_failed
            )
        },
    );
    let queue: Vec<Work> = ready.into_iter().map(Work::Start).collect();
    let ctx = Ctx {
        out: fout,
        inventory,
        fleet,
        req,
        runtime: None,
    };
    crate::executor::watch_ctrl_c(ctx.out.clone());
    let order: Vec<String> = spec.groups.clone();
    run_fleet(ctx, queue, rows, &policy, &order).await
}

/// Writes the fleet record into every member's database.
async fn record_fleet(
    inventory: &Inventory,
    members: &[Group],
    fleet: &str,
    spec: &FleetSpec,
    action: &str,
) -> Result<()> {
    let spec_json = serde_json::to_value(spec)?;
    let audit = crate::audit::entry(action);
    let mut done: Vec<&crate::inventory::DatabaseSection> = Vec::new();
    for g in members {
        if done.contains(&&g.database) {
            continue;
        }
        done.push(&g.database);
        let db = Database::for_group(inventory, g)?;
        match db.connect().await {
            Ok(client) => {
                journal::ensure_schema(&client).await?;
                journal::create_fleet(&client, fleet, &spec_json, &audit).await?;
            }
            // Preflight reached it; a member skipped as unready may not be.
            Err(e) => {
                tracing::warn!(group = %g.name, error = %e, "fleet not recorded in this group's database")
            }
        }
    }
    Ok(())
}

/// Whether someone asked the fleet to stop: Ctrl-C here, or `hubshift stop
/// --fleet` from anywhere (read from the first member database that answers).
async fn stop_asked(ctx: &Ctx, members: &[Group]) -> bool {
    if crate::executor::stop_asked() {
        return true;
    }
    for g in members {
        let Ok(db) = Database::for_group(&ctx.inventory, g) else {
            continue;
        };
        if let Ok(client) = db.connect().await
            && let Ok(asked) = journal::fleet_stop_requested(&client, &ctx.fleet).await
        {
            return asked;
        }
    }
    false
}

/// Canary, soak, then the others `parallel` at a time within the failure
/// budget; prints the closing table; the exit code says how it went.
async fn run_fleet(
    ctx: Ctx,
    queue: Vec<Work>,
    mut rows: Vec<Row>,
    policy: &FleetPolicy,
    order: &[String],
) -> Result<()> {
    let started = Instant::now();
    let members: Vec<Group> = queue.iter().map(|w| w.group().clone()).collect();
    let mut queue: VecDeque<Work> = queue.into();
    let mut halt: Option<String> = None;
    let mut failed = 0u32;
    if let Some(c) = &policy.canary
        && let Some(pos) = queue.iter().position(|w| &w.group().name == c)
    {
        let work = queue
            .remove(pos)
            .context("canary vanished from the queue")?;
        let group = work.group().clone();
        let mut row = run_group(ctx.clone(), work).await;
        if row.outcome == Outcome::Done {
            if let Err(why) = soak(&ctx, &group, policy.soak_ms).await {
                row.outcome = Outcome::Failed(format!(
                    "{why}; roll it back with: hubshift rollback --run {}",
                    row.run.as_deref().unwrap_or("?")
                ));
            }
        }
        match &row.outcome {
            Outcome::Done => {}
            Outcome::Paused | Outcome::Stopped => {
                halt = Some(format!("the canary {c} was parked"));
            }
            Outcome::Taken(_) => {
                halt = Some(format!(
                    "the canary {c} is being upgraded by another controller: this one cannot watch it soak"
                ));
            }
            _ => {
                failed += 1;
                halt = Some(format!("the canary {c} failed"));
            }
        }
        rows.push(row);
    }
    let mut running = JoinSet::new();
    loop {
        while halt.is_none() && running.len() < usize::from(policy.parallel.max(1)) {
            let Some(work) = queue.pop_front() else {
                break;
            };
            if stop_asked(&ctx, &members).await {
                halt = Some("the fleet was asked to stop".into());
                queue.push_front(work);
                break;
            }
            running.spawn(run_group(ctx.clone(), work));
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let row = joined.context("a group task ended abnormally")?;
        match &row.outcome {
            Outcome::Failed(_) => {
                failed += 1;
                if failed > policy.max_failed && halt.is_none() {
                    halt = Some(format!(
                        "{failed} group(s) failed, more than --max-failed {}",
                        policy.max_failed
                    ));
                }
            }
            Outcome::Paused | Outcome::Stopped if halt.is_none() => {
                halt = Some(format!("group {} was parked", row.group));
            }
            _ => {}
        }
        rows.push(row);
    }
    let why = halt.clone().unwrap_or_default();
    for w in queue {
        rows.push(Row::new(&w.group().name, Outcome::NotStarted(why.clone())));
    }
    rows.sort_by_key(|r| {
        order
            .iter()
            .position(|g| g == &r.group)
            .unwrap_or(usize::MAX)
    });
    closing_table(
        &ctx,
        &rows,
        started.elapsed().as_millis() as u64,
        halt.as_deref(),
    );
    let failed_names: Vec<&str> = rows
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
        .map(|r| r.group.as_str())
        .collect();
    if !failed_names.is_empty() {
        anyhow::bail!(
            "fleet {}: {} group(s) failed ({}); see the table above for each group's next step",
            ctx.fleet,
            failed_names.len(),
            failed_names.join(", ")
        );
    }
    let parked = rows.iter().any(|r| {
        matches!(
            r.outcome,
            Outcome::Paused | Outcome::Stopped | Outcome::NotStarted(_)
        )
    });
    if parked {
        return Err(Parked(format!(
            "fleet {} parked ({why}); continue with: hubshift resume --fleet {}",
            ctx.fleet, ctx.fleet
        ))
        .into());
    }
    Ok(())
}

/// Upgrades (or resumes) one group to its end; never fails the task.
async fn run_group(ctx: Ctx, work: Work) -> Row {
    let group = work.group().clone();
    let out = ctx.out.for_group(&group.name);
    let t = Instant::now();
    let mut row = Row::new(&group.name, Outcome::Done);
    let result = match &work {
        Work::Start(g) => start_group(&ctx, &out, g, &mut row).await,
        Work::Resume(_, run_id) => resume_group(&ctx, &out, run_id, &mut row).await,
    };
    row.duration_ms = t.elapsed().as_millis() as u64;
    row.outcome = match result {
        Ok(()) => Outcome::Done,
        Err(e) => classify(&ctx, &group, &e).await,
    };
    out.event(
        "group_finished",
        json!({ "result": row.outcome.name(), "run": row.run, "reason": row.outcome.reason(),
                "duration_ms": row.duration_ms }),
        || match row.outcome.reason() {
            Some(r) => format!("{}: {r}", row.outcome.name()),
            None => format!("{} in {}", row.outcome.name(), secs(row.duration_ms)),
        },
    );
    row
}

async fn start_group(ctx: &Ctx, out: &Output, group: &Group, row: &mut Row) -> Result<()> {
    let prepared = prepare_upgrade(out, &ctx.inventory, group, &ctx.req).await?;
    let (mut run, records) = record_upgrade(out, prepared, &ctx.req, "upgrade").await?;
    row.run = Some(run.id.clone());
    let result = finish(&mut run, &records).await;
    row.facts = Some(run.facts.clone());
    result?;
    crate::checks::after_upgrade(&run).await
}

async fn resume_group(ctx: &Ctx, out: &Output, run_id: &str, row: &mut Row) -> Result<()> {
    row.run = Some(run_id.to_string());
    let open = open_run(&ctx.inventory.path, run_id).await?;
    let (mut run, records) = prepare_resume(out, open, ctx.runtime.as_deref(), "resume").await?;
    let result = finish(&mut run, &records).await;
    row.facts = Some(run.facts.clone());
    result?;
    crate::checks::after_upgrade(&run).await
}

/// A group's error as the fleet counts it.
async fn classify(ctx: &Ctx, group: &Group, e: &anyhow::Error) -> Outcome {
    let text = hubshift_common::redact::redact(&format!("{e:#}"));
    if let Some(t) = e.downcast_ref::<Taken>() {
        return Outcome::Taken(format!("locked by {}", t.holder));
    }
    if let Some(p) = e.downcast_ref::<Parked>() {
        return if p.0.contains("paused") {
            Outcome::Paused
        } else {
            Outcome::Stopped
        };
    }
    if e.downcast_ref::<Refused>().is_some() && already_at(ctx, group).await {
        return Outcome::Taken(format!(
            "already at {}: another controller upgraded it",
            ctx.req.version
        ));
    }
    Outcome::Failed(text)
}

/// Every node of `group` runs the fleet's version already.
async fn already_at(ctx: &Ctx, group: &Group) -> bool {
    let (_agents, observed) = crate::observe::observe(&ctx.inventory, group, None).await;
    observed.nodes.iter().all(|n| {
        n.status
            .as_ref()
            .is_ok_and(|f| f.active_runtime == ctx.req.version)
    })
}

/// Watches the canary for `soak_ms`: one active, the others standby, all on
/// the new version, the active node never changing, and the check (if any)
/// passing each time it runs.
async fn soak(ctx: &Ctx, group: &Group, soak_ms: u64) -> std::result::Result<(), String> {
    let out = ctx.out.for_group(&group.name);
    out.event("soak_started", json!({ "soak_ms": soak_ms }), || {
        format!("soaking the canary for {} ...", secs(soak_ms))
    });
    let deadline = Instant::now() + Duration::from_millis(soak_ms);
    let check_every = group
        .checks
        .as_ref()
        .map(|c| Duration::from_secs(c.interval_secs));
    let mut next_check = Instant::now();
    let mut first_active: Option<String> = None;
    loop {
        let active = healthy(ctx, group).await?;
        match &first_active {
            None => first_active = Some(active.clone()),
            Some(a) if *a != active => {
                return Err(format!(
                    "the canary's active node changed from {a} to {active} while it soaked (role flapping)"
                ));
            }
            Some(_) => {}
        }
        if let (Some(every), Some(checks)) = (check_every, &group.checks)
            && Instant::now() >= next_check
        {
            let r = crate::checks::run_check(
                checks,
                group,
                &ctx.req.version,
                &active,
                Some(&ctx.fleet),
            )
            .await;
            out.event(
                if r.passed {
                    "check_passed"
                } else {
                    "check_failed"
                },
                json!({ "detail": r.detail, "during": "soak" }),
                || {
                    format!(
                        "soak check: {} ({})",
                        if r.passed { "passed" } else { "FAILED" },
                        r.detail
                    )
                },
            );
            if !r.passed {
                return Err(format!(
                    "the check failed while the canary soaked ({})",
                    r.detail
                ));
            }
            next_check = Instant::now() + every;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500).min(deadline - Instant::now())).await;
    }
    out.event("soak_finished", json!({ "soak_ms": soak_ms }), || {
        format!("the canary stayed healthy for {}", secs(soak_ms))
    });
    Ok(())
}

/// The active node when `group` is healthy on the fleet's version.
async fn healthy(ctx: &Ctx, group: &Group) -> std::result::Result<String, String> {
    let (_agents, observed) = crate::observe::observe(&ctx.inventory, group, None).await;
    let mut active = Vec::new();
    for n in &observed.nodes {
        let f = n
            .status
            .as_ref()
            .map_err(|e| format!("{} is unreachable: {e}", n.name))?;
        if !f.running || f.frozen {
            return Err(format!(
                "{} is not serving ({})",
                n.name,
                if f.frozen { "frozen" } else { "not running" }
            ));
        }
        if f.active_runtime != ctx.req.version {
            return Err(format!(
                "{} runs {}, not {}",
                n.name, f.active_runtime, ctx.req.version
            ));
        }
        match f.role.as_str() {
            "active" => active.push(n.name.clone()),
            "standby" => {}
            other => return Err(format!("{} is {other}, neither active nor standby", n.name)),
        }
    }
    match active.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err("no node is active".into()),
        many => Err(format!(
            "{} nodes are active at once: {}",
            many.len(),
            many.join(", ")
        )),
    }
}

fn closing_table(ctx: &Ctx, rows: &[Row], wall_ms: u64, halt: Option<&str>) {
    let count = |name: &str| rows.iter().filter(|r| r.outcome.name() == name).count();
    let json_rows: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "group": r.group, "result": r.outcome.name(), "reason": r.outcome.reason(),
                "run": r.run, "duration_ms": r.duration_ms, "windows": r.windows(),
                "single_node_ms": r.facts.as_ref().and_then(|f| f.single_node_ms()),
                "backup_id": r.facts.as_ref().and_then(|f| f.backup_id.clone()),
                "backup_sha256": r.facts.as_ref().and_then(|f| f.backup_sha256.clone()),
            })
        })
        .collect();
    let base = ctx.out.clone();
    base.event(
        "fleet_finished",
        json!({ "wall_ms": wall_ms, "groups": json_rows, "halted": halt,
                "done": count("done"), "failed": count("failed") }),
        || {
            let mut s = format!(
                "\nFleet {}: {} done, {} failed, {} skipped, {} taken, {} not started, {} parked, in {}",
                ctx.fleet,
                count("done"),
                count("failed"),
                count("skipped"),
                count("taken"),
                count("not_started"),
                count("paused") + count("stopped"),
                secs(wall_ms)
            );
            if let Some(h) = halt {
                s.push_str(&format!("\n  no new group was started: {h}"));
            }
            s.push_str(&format!(
                "\n  {:<16} {:<11} {:<24} {:>10} {:>10} {:>10}  {}",
                "group", "result", "run", "window 1", "window 2", "duration", "backup"
            ));
            for r in rows {
                let w = r.windows();
                let win = |n: u8| {
                    w.iter()
                        .find(|x| x.window == n)
                        .map_or("-".to_string(), |x| secs(x.duration_ms))
                };
                s.push_str(&format!(
                    "\n  {:<16} {:<11} {:<24} {:>10} {:>10} {:>10}  {}",
                    r.group,
                    r.outcome.name(),
                    r.run.as_deref().unwrap_or("-"),
                    win(1),
                    win(2),
                    if r.duration_ms > 0 { secs(r.duration_ms) } else { "-".into() },
                    r.facts.as_ref().and_then(|f| f.backup_id.clone()).unwrap_or_else(|| "-".into())
                ));
                if let Some(reason) = r.outcome.reason() {
                    s.push_str(&format!("\n  {:<16} {reason}", ""));
                }
            }
            s
        },
    );
}

/// Finds a fleet's record in the inventory's databases.
async fn find_fleet(inventory: &Inventory, fleet: &str) -> Result<journal::FleetRecord> {
    let mut unreachable = Vec::new();
    for g in distinct_databases(inventory) {
        let db = Database::for_group(inventory, g)?;
        match db.connect().await {
            Ok(client) => {
                if !journal::exists(&client).await? {
                    continue;
                }
                journal::ensure_schema(&client).await?;
                if let Some(f) = journal::load_fleet(&client, fleet).await? {
                    return Ok(f);
                }
            }
            Err(e) => unreachable.push(format!("group {}: {e}", g.name)),
        }
    }
    if !unreachable.is_empty() {
        return Err(Refused(format!(
            "fleet {fleet} is in no reachable journal, and some databases could not be reached: {}",
            unreachable.join("; ")
        ))
        .into());
    }
    Err(UsageError(format!(
        "no fleet {fleet} in the journals (see `hubshift runs`)"
    ))
    .into())
}

/// The member groups of a fleet and each one's newest run in it.
async fn member_runs(
    inventory: &Inventory,
    spec: &FleetSpec,
    fleet: &str,
) -> Result<Vec<(Group, std::result::Result<Option<RunRecord>, String>)>> {
    let mut out = Vec::new();
    for name in &spec.groups {
        let g = inventory
            .group(name)
            .map_err(|e| UsageError(format!("fleet {fleet} has group {name}, but: {e}")))?
            .clone();
        let db = Database::for_group(inventory, &g)?;
        let run = match db.connect().await {
            Ok(client) => match journal::exists(&client).await {
                Ok(true) => journal::fleet_run(&client, fleet, name)
                    .await
                    .map_err(|e| e.to_string()),
                Ok(false) => Ok(None),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        out.push((g, run));
    }
    Ok(out)
}

fn read_spec(record: &journal::FleetRecord) -> Result<FleetSpec> {
    serde_json::from_value(record.spec.clone())
        .context("the journal's fleet record cannot be read by this version")
}

/// `hubshift resume --fleet ID`: resumes the fleet's unfinished groups and
/// starts the ones it had not begun, with its policy.
pub async fn resume(
    out: Output,
    inventory: &Path,
    fleet: &str,
    runtime: Option<&Path>,
) -> Result<()> {
    let inventory = Inventory::load(inventory).map_err(UsageError::from)?;
    let record = find_fleet(&inventory, fleet).await?;
    let spec = read_spec(&record)?;
    let archive_path = runtime.map_or_else(
        || std::path::PathBuf::from(&spec.runtime_file),
        Path::to_path_buf,
    );
    let archive: Option<ArchiveInfo> = match read_archive(&archive_path).await {
        Ok(a) if a.sha256 == spec.runtime_sha256 => Some(a),
        Ok(a) if runtime.is_some() => {
            return Err(UsageError(format!(
                "{} has SHA-256 {}, but fleet {fleet} rolls out {}",
                a.path.display(),
                a.sha256,
                spec.runtime_sha256
            ))
            .into());
        }
        Err(e) if runtime.is_some() => return Err(e),
        _ => None,
    };
    let fout = out.in_fleet(fleet);
    let mut queue = Vec::new();
    let mut rows = Vec::new();
    for (g, run) in member_runs(&inventory, &spec, fleet).await? {
        match run {
            Err(e) => rows.push(Row::new(
                &g.name,
                Outcome::Failed(format!("its database: {e}")),
            )),
            Ok(None) => queue.push(Work::Start(g)),
            Ok(Some(r)) => match r.state {
                s if s.is_finished() => {
                    let mut row = Row::new(
                        &g.name,
                        if r.state == RunState::Done {
                            Outcome::Done
                        } else {
                            Outcome::Skipped(format!("its run {} was {}", r.id, r.state))
                        },
                    );
                    row.facts = serde_json::from_value(r.facts.clone()).ok();
                    row.run = Some(r.id.clone());
                    rows.push(row);
                }
                // Journaled running: a live controller still holds the
                // lock (the resume then reports the group as taken), or one
                // was just killed and the server has yet to notice.
                _ => queue.push(Work::Resume(g, r.id.clone())),
            },
        }
    }
    let starts = queue.iter().any(|w| matches!(w, Work::Start(_)));
    let archive = match (archive, starts) {
        (Some(a), _) => a,
        (None, false) => ArchiveInfo {
            path: archive_path.clone(),
            sha256: spec.runtime_sha256.clone(),
            bytes: spec.runtime_bytes,
        },
        (None, true) => {
            return Err(UsageError(format!(
                "fleet {fleet} has groups to begin, and the runtime archive is not at {} (or differs): pass --runtime ARCHIVE",
                archive_path.display()
            ))
            .into());
        }
    };
    let members: Vec<Group> = spec
        .groups
        .iter()
        .filter_map(|n| inventory.group(n).ok().cloned())
        .collect();
    // A stop request was for the run that ended; resuming clears it.
    for g in distinct_databases(&inventory) {
        if !members.iter().any(|m| m.database == g.database) {
            continue;
        }
        if let Ok(db) = Database::for_group(&inventory, g)
            && let Ok(client) = db.connect().await
        {
            let _ = journal::set_fleet_stop(&client, fleet, false, &crate::audit::entry("resume"))
                .await;
        }
    }
    fout.event(
        "fleet_resumed",
        json!({ "to_resume": queue.iter().filter(|w| matches!(w, Work::Resume(..))).count(),
                "to_start": queue.iter().filter(|w| matches!(w, Work::Start(_))).count(),
                "version": spec.version }),
        || {
            format!(
                "Resuming fleet {fleet} -> {}: {} group(s) to continue, {} to begin",
                spec.version,
                queue
                    .iter()
                    .filter(|w| matches!(w, Work::Resume(..)))
                    .count(),
                queue.iter().filter(|w| matches!(w, Work::Start(_))).count()
            )
        },
    );
    let mut policy = spec.policy.clone();
    // A canary that is already done has soaked.
    if rows
        .iter()
        .any(|r| Some(&r.group) == policy.canary.as_ref() && r.outcome == Outcome::Done)
    {
        policy.canary = None;
    }
    let ctx = Ctx {
        out: fout,
        inventory,
        fleet: fleet.to_string(),
        req: UpgradeRequest {
            version: spec.version.clone(),
            archive: archive.clone(),
            pause_before: spec.pause_before.clone(),
            fleet: Some(fleet.to_string()),
            allow_downgrade: spec.allow_downgrade,
        },
        runtime: Some(archive.path.clone()),
    };
    crate::executor::watch_ctrl_c(ctx.out.clone());
    run_fleet(ctx, queue, rows, &policy, &spec.groups).await
}

/// `hubshift stop --fleet ID`: no new group starts, and every running run
/// of the fleet parks at its next safe point.
pub async fn stop(out: Output, inventory: &Path, fleet: &str) -> Result<()> {
    let inventory = Inventory::load(inventory).map_err(UsageError::from)?;
    let record = find_fleet(&inventory, fleet).await?;
    let spec = read_spec(&record)?;
    let audit = crate::audit::entry("stop");
    let mut asked = Vec::new();
    let mut recorded = 0;
    let members = member_runs(&inventory, &spec, fleet).await?;
    for g in distinct_databases(&inventory) {
        if !members.iter().any(|(m, _)| m.database == g.database) {
            continue;
        }
        let db = Database::for_group(&inventory, g)?;
        if let Ok(client) = db.connect().await {
            journal::set_fleet_stop(&client, fleet, true, &audit).await?;
            recorded += 1;
        }
    }
    if recorded == 0 {
        return Err(Refused(format!(
            "no database of fleet {fleet} could be reached: nothing was asked"
        ))
        .into());
    }
    for (g, run) in &members {
        if let Ok(Some(r)) = run
            && r.state == RunState::Running
        {
            let db = Database::for_group(&inventory, g)?;
            let client = db.connect().await.map_err(|e| Refused(e.to_string()))?;
            if journal::request_stop(&client, &r.id).await? {
                journal::add_audit(&client, &r.id, &audit).await?;
                asked.push(r.id.clone());
            }
        }
    }
    out.in_fleet(fleet).event(
        "stop_requested",
        json!({ "runs": asked }),
        || {
            format!(
                "Asked fleet {fleet} to start no new group, and its {} running run(s) to stop at their next safe point; it exits 4, and `hubshift resume --fleet {fleet}` continues it.",
                asked.len()
            )
        },
    );
    Ok(())
}
