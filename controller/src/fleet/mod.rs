//! Fleets: many HA groups upgraded by one command, each in its own
//! database's journal and under its own lock. Every group is preflighted
//! before any changes; a canary goes first and alone and must stay healthy
//! for the soak; then groups run `parallel` at a time until they are done or
//! the failure budget is spent. A group whose lock another controller holds
//! is reported as taken and left to it — that is how several controllers
//! share a fleet.

mod databases;
mod members;
mod scheduler;
mod soak;
mod spec;
mod table;
mod windows;

pub use spec::{FleetPolicy, FleetSpec};
pub use windows::{await_window, need as handover_need};

use crate::exit::{ParkKind, Parked, Refused, UsageError};
use crate::inventory::Group;
use crate::journal::{self, RunState};
use crate::output::Output;
use crate::run::{self, ArchiveInfo, Prepared, Site, UpgradeRequest, read_archive};
use anyhow::{Context, Result};
use members::{Ctx, Readiness, Work, preflight_group, run_group, stop_asked};
use scheduler::{Action, Event, Outcome, Scheduler};
use serde_json::json;
use soak::soak;
use spec::{find_fleet, member_runs, read_spec, record_fleet};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;
use table::{Row, closing_table};
use tokio::task::JoinSet;

/// Groups preflighted at once. A hundred at once, each with its logins,
/// agent handshakes and (the first time) its journal's tables, contend for
/// the database server and the machine; a bounded number at a time gets
/// through them sooner.
const PREFLIGHTS_AT_ONCE: usize = 16;

/// `hubshift upgrade` of several groups: preflight all, then the fleet.
pub async fn start(
    out: Output,
    site: Site,
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
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(PREFLIGHTS_AT_ONCE));
    for (i, g) in groups.iter().enumerate() {
        let (out, site, g, req) = (out.for_group(&g.name), site.clone(), g.clone(), req.clone());
        let gate = gate.clone();
        set.spawn(async move {
            let _turn = gate.acquire_owned().await;
            (i, preflight_group(&out, &site, &g, &req).await)
        });
    }
    let mut readiness: Vec<Option<Readiness>> = groups.iter().map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        let (i, r) = joined.context("a preflight task ended abnormally")?;
        readiness[i] = Some(r);
    }
    let mut ready = Vec::new();
    let mut rows = Vec::new();
    let mut unready = Vec::new();
    // Each ready group's lock, journal connection and agents, kept for its
    // run: the groups the fleet starts at once are not looked at twice.
    let mut held: HashMap<String, Box<Prepared>> = HashMap::new();
    for (g, r) in groups.iter().zip(readiness) {
        let gout = out.for_group(&g.name);
        match r {
            Some(Readiness::Ready(prepared)) => {
                gout.event("group_ready", json!({}), || "ready".into());
                ready.push(g.clone());
                held.insert(g.name.clone(), prepared);
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
        crate::commands::confirm::confirm(&format!(
            "Upgrade {} group(s) to {} ({})? This stops hubs and drops each group's orchestration schema.",
            ready.len(),
            req.version,
            names.join(", ")
        ))?;
    }
    let members: Vec<Group> = groups.clone();
    let fleet = match held.values().next() {
        Some(p) => journal::new_fleet_id(&p.locked.client).await?,
        None => {
            let first = members
                .first()
                .context("a fleet needs at least one group")?;
            let db = site.database(first)?;
            let client = db.connect().await.map_err(|e| Refused(e.to_string()))?;
            journal::ensure_schema(&client).await?;
            journal::new_fleet_id(&client).await?
        }
    };
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
    let open: HashMap<String, &tokio_postgres::Client> = held
        .iter()
        .map(|(g, p)| (g.clone(), &p.locked.client))
        .collect();
    record_fleet(&site, &members, &open, &fleet, &spec, "upgrade").await?;
    drop(open);
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
    let queue: Vec<Work> = ready
        .into_iter()
        .map(|g| match held.remove(&g.name) {
            Some(prepared) => Work::Ready(prepared),
            None => Work::Start(g),
        })
        .collect();
    let ctx = Ctx {
        out: fout,
        site,
        fleet,
        req,
        runtime: None,
    };
    run::watch_ctrl_c(ctx.out.clone());
    let order: Vec<String> = spec.groups.clone();
    run_fleet(ctx, queue, rows, &policy, &order).await
}

/// `hubshift resume --fleet ID`: resumes the fleet's unfinished groups and
/// starts the ones it had not begun, with its policy.
pub async fn resume(
    out: Output,
    inventory: &Path,
    fleet: &str,
    runtime: Option<&Path>,
    wait_for_window: bool,
) -> Result<()> {
    let site = Site::load(inventory)?;
    site.notify()?;
    let record = find_fleet(&site, fleet).await?;
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
    for (g, run) in member_runs(&site, &spec, fleet).await? {
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
            declared: None,
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
        .filter_map(|n| site.inventory.group(n).ok().cloned())
        .collect();
    // A stop request was for the run that ended; resuming clears it.
    let audit = crate::audit::entry("resume");
    let audit = &audit;
    databases::each(
        site.distinct_databases_among(&members),
        |(_, db)| async move {
            if let Ok(db) = db
                && let Ok(client) = db.connect().await
            {
                let _ = journal::set_fleet_stop(&client, fleet, false, audit).await;
            }
        },
    )
    .await;
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
    policy.wait_for_window |= wait_for_window;
    // A canary that is already done has soaked.
    if rows
        .iter()
        .any(|r| Some(&r.group) == policy.canary.as_ref() && r.outcome == Outcome::Done)
    {
        policy.canary = None;
    }
    let ctx = Ctx {
        out: fout,
        site,
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
    run::watch_ctrl_c(ctx.out.clone());
    run_fleet(ctx, queue, rows, &policy, &spec.groups).await
}

/// `hubshift stop --fleet ID`: no new group starts, and every running run
/// of the fleet parks at its next safe point.
pub async fn stop(out: Output, inventory: &Path, fleet: &str) -> Result<()> {
    let site = Site::load(inventory)?;
    let record = find_fleet(&site, fleet).await?;
    let spec = read_spec(&record)?;
    let mut asked = Vec::new();
    let mut recorded = 0;
    let members = member_runs(&site, &spec, fleet).await?;
    let groups: Vec<Group> = members.iter().map(|(g, _)| g.clone()).collect();
    // Stamped on the database server's clock, as the runs stamp theirs, so
    // the stop never reads as later than the parks it causes.
    for (_, db) in site.distinct_databases_among(&groups) {
        if let Ok(db) = db
            && let Ok(client) = db.connect().await
        {
            crate::clock::sync(&client).await?;
            break;
        }
    }
    let audit = crate::audit::entry("stop");
    let audit_ref = &audit;
    let marked = databases::each(
        site.distinct_databases_among(&groups),
        |(_, db)| async move {
            if let Ok(client) = db?.connect().await {
                journal::set_fleet_stop(&client, fleet, true, audit_ref).await?;
                return Ok::<_, anyhow::Error>(true);
            }
            Ok(false)
        },
    )
    .await;
    for m in marked {
        if m? {
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
            let db = site.database(g)?;
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

/// Canary, soak, then the others `parallel` at a time within the failure
/// budget; prints the closing table; the exit code says how it went.
/// Runs the fleet's groups as the scheduler decides — the canary first and
/// alone, then its soak, then the others `parallel` at a time within the
/// failure budget — and prints the closing table; the exit code says how
/// it went.
async fn run_fleet(
    ctx: Ctx,
    queue: Vec<Work>,
    mut rows: Vec<Row>,
    policy: &FleetPolicy,
    order: &[String],
) -> Result<()> {
    let started = Instant::now();
    let members: Vec<Group> = queue.iter().map(|w| w.group().clone()).collect();
    // Only groups not yet begun wait for windows: a begun run goes on.
    let fresh: Vec<Group> = queue
        .iter()
        .filter_map(|w| match w {
            Work::Start(_) | Work::Ready(_) => Some(w.group().clone()),
            Work::Resume(..) => None,
        })
        .collect();
    let gates = windows::group_windows(&ctx.site, &fresh).await;
    // A group with windows may have been parked by an earlier process.
    let mut parked_once: std::collections::HashSet<String> = gates.keys().cloned().collect();
    let mut sched = Scheduler::new(
        queue.iter().map(|w| w.group().name.clone()).collect(),
        policy,
    )
    .with_windows(gates);
    let mut work: std::collections::HashMap<String, Work> = queue
        .into_iter()
        .map(|w| (w.group().name.clone(), w))
        .collect();
    let mut soaking: Option<Row> = None;
    let mut running = JoinSet::new();
    let mut first_round = true;
    loop {
        if sched.would_start() && stop_asked(&ctx, &members).await {
            sched.on(Event::StopAsked);
        }
        let (mut wait, mut progressed) = (false, false);
        for action in sched.next(crate::window::now()) {
            progressed |= matches!(
                action,
                Action::Start(_) | Action::Soak(_) | Action::SleepUntil(_)
            );
            match action {
                Action::Start(g) => {
                    let w = work.remove(&g).context("a group was started twice")?;
                    if parked_once.remove(&g) {
                        windows::journal_park(&ctx.site, &members, &ctx.fleet, &g, None).await;
                    }
                    running.spawn(run_group(ctx.clone(), w));
                }
                Action::Park(p) => {
                    windows::journal_park(&ctx.site, &members, &ctx.fleet, &p.group, Some(&p))
                        .await;
                    let when = windows::show(&ctx.site, &p);
                    ctx.out.for_group(&p.group).event(
                        "group_parked",
                        json!({ "opens": p.opens.to_string(), "window": p.window,
                                "waiting": policy.wait_for_window }),
                        || format!("parked: {when}"),
                    );
                    parked_once.insert(p.group);
                }
                Action::SleepUntil(t) => {
                    ctx.out
                        .human(&format!("Waiting for a maintenance window (until {t}) …"));
                    tokio::select! {
                        _ = windows::sleep_until(t) => {}
                        _ = wait_for_stop(&ctx, &members) => sched.on(Event::StopAsked),
                    }
                }
                Action::Soak(g) => {
                    let mut row = soaking.take().context("no run to soak")?;
                    let group = members
                        .iter()
                        .find(|m| m.name == g)
                        .context("the canary vanished")?;
                    if let Err(why) = soak(&ctx, group, policy.soak_ms).await {
                        row.outcome = Outcome::Failed(format!(
                            "{why}; roll it back with: hubshift rollback --run {}",
                            row.run.as_deref().unwrap_or("?")
                        ));
                    }
                    sched.on(Event::Soaked {
                        group: g,
                        outcome: row.outcome.clone(),
                    });
                    rows.push(row);
                }
                Action::Wait => wait = true,
                Action::Finish => {}
            }
        }
        if std::mem::take(&mut first_round) {
            // Groups that did not start at once (behind a canary, the
            // parallel limit or their window) let their preflight's lock
            // and connections go, and are looked at again when they start.
            work = work.into_iter().map(|(g, w)| (g, w.released())).collect();
        }
        if progressed {
            continue;
        }
        if !wait {
            break;
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let row = joined.context("a group task ended abnormally")?;
        let canary = policy.canary.as_deref() == Some(row.group.as_str());
        sched.on(Event::Ended {
            group: row.group.clone(),
            outcome: row.outcome.clone(),
        });
        if canary && row.outcome == Outcome::Done {
            soaking = Some(row);
        } else {
            rows.push(row);
        }
    }
    let halt = sched.halted().map(str::to_string);
    let why = halt.clone().unwrap_or_default();
    let parked_groups = sched.parked().to_vec();
    for (g, outcome) in sched.not_started(|p| windows::show(&ctx.site, p)) {
        rows.push(Row::new(&g, outcome));
    }
    rows.sort_by_key(|r| {
        order
            .iter()
            .position(|g| g == &r.group)
            .unwrap_or(usize::MAX)
    });
    closing_table(
        &ctx.out,
        &ctx.fleet,
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
    if let Some(first) = parked_groups.iter().min_by_key(|p| p.opens) {
        let when = windows::show(&ctx.site, first);
        ctx.out.event(
            "fleet_parked",
            json!({ "groups": parked_groups.iter().map(|p| json!({ "group": p.group,
                        "opens": p.opens.to_string(), "window": p.window })).collect::<Vec<_>>(),
                    "next_window": first.opens.to_string(),
                    "next": format!("hubshift resume --fleet {}", ctx.fleet) }),
            String::new,
        );
        return Err(Parked {
            kind: ParkKind::Window,
            message: format!(
                "fleet {}: {} group(s) wait for their maintenance window; the first, {}, {when}; continue then with: hubshift resume --fleet {}",
                ctx.fleet,
                parked_groups.len(),
                first.group,
                ctx.fleet
            ),
        }
        .into());
    }
    let parked = rows.iter().any(|r| {
        matches!(
            r.outcome,
            Outcome::Paused | Outcome::Stopped | Outcome::NotStarted(_) | Outcome::Parked(_)
        )
    });
    if parked {
        return Err(Parked {
            kind: ParkKind::Stopped,
            message: format!(
                "fleet {} parked ({why}); continue with: hubshift resume --fleet {}",
                ctx.fleet, ctx.fleet
            ),
        }
        .into());
    }
    Ok(())
}

/// Returns once a stop of the fleet is asked (polled while the fleet
/// sleeps for a window).
async fn wait_for_stop(ctx: &Ctx, members: &[Group]) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        if stop_asked(ctx, members).await {
            return;
        }
    }
}
