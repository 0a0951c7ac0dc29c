//! One member group in a fleet: its preflight, its run (started or
//! resumed), and how its end counts for the fleet.

use super::scheduler::Outcome;
use super::table::Row;
use crate::exit::{ParkKind, Parked, Refused, Taken};
use crate::inventory::Group;
use crate::journal::{self};
use crate::output::{Output, secs};
use crate::run::{self, Prepared, Site, UpgradeRequest, print_findings};
use anyhow::Result;
use serde_json::json;
use std::time::Instant;

/// What a group task is to do.
pub(super) enum Work {
    /// Upgrade it: lock it and run its preflight first.
    Start(Group),
    /// Upgrade it on the lock, connections and agents of the fleet's own
    /// preflight, which it passed just now: no second look.
    Ready(Box<Prepared>),
    /// Resume its run.
    Resume(Group, String),
}

impl Work {
    pub(super) fn group(&self) -> &Group {
        match self {
            Work::Start(g) | Work::Resume(g, _) => g,
            Work::Ready(p) => &p.locked.group,
        }
    }

    /// The same work without what the preflight held: its lock and
    /// connections are let go, and the group is looked at again when it
    /// starts (it may wait for others, a canary or its window).
    pub(super) fn released(self) -> Work {
        match self {
            Work::Ready(p) => Work::Start(p.locked.group),
            w => w,
        }
    }
}

/// Everything the group tasks share.
#[derive(Clone)]
pub(super) struct Ctx {
    pub(super) out: Output,
    pub(super) site: Site,
    pub(super) fleet: String,
    pub(super) req: UpgradeRequest,
    /// An archive the resumed runs may stage from.
    pub(super) runtime: Option<std::path::PathBuf>,
}

/// Whether a group can be upgraded now, as preflight sees it.
pub(super) enum Readiness {
    /// Ready, still locked by this controller.
    Ready(Box<Prepared>),
    Unready(String),
    Taken(String),
}

/// Looks at one group as its upgrade does — the lock, an unfinished run,
/// agents and the preflight checks — without changing it. A ready group
/// stays locked, its agents connected.
pub(super) async fn preflight_group(
    out: &Output,
    site: &Site,
    group: &Group,
    req: &UpgradeRequest,
) -> Readiness {
    let looked = match run::look_upgrade(site, group, req).await {
        Ok(l) => l,
        Err(e) => {
            return match e.downcast_ref::<Taken>() {
                Some(t) => Readiness::Taken(format!("locked by {}", t.holder)),
                None => Readiness::Unready(hubshift_common::error_text::one_line(e.as_ref())),
            };
        }
    };
    if looked.observed.all_run(&req.version) {
        return Readiness::Taken(format!("already runs {}", req.version));
    }
    let shown: Vec<_> = looked
        .findings
        .iter()
        .filter(|f| f.blocking || f.warning || out.is_json())
        .cloned()
        .collect();
    print_findings(out, &shown);
    let problems: Vec<String> = looked
        .findings
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
        Readiness::Ready(Box::new(looked.prepared))
    } else {
        Readiness::Unready(problems.join("; "))
    }
}

/// Whether someone asked the fleet to stop: Ctrl-C here, or `hubshift stop
/// --fleet` from anywhere (read from the first member database that answers).
pub(super) async fn stop_asked(ctx: &Ctx, members: &[Group]) -> bool {
    if run::stop_asked() {
        return true;
    }
    for g in members {
        let Ok(db) = ctx.site.database(g) else {
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

/// Upgrades (or resumes) one group to its end; never fails the task.
pub(super) async fn run_group(ctx: Ctx, work: Work) -> Row {
    let group = work.group().clone();
    let out = ctx.out.for_group(&group.name);
    let t = Instant::now();
    let mut row = Row::new(&group.name, Outcome::Done);
    let result = match work {
        Work::Start(g) => match run::prepare_upgrade(&out, &ctx.site, &g, &ctx.req).await {
            Ok(prepared) => start_group(&ctx, &out, prepared, &mut row).await,
            Err(e) => Err(e),
        },
        Work::Ready(prepared) => start_group(&ctx, &out, *prepared, &mut row).await,
        Work::Resume(_, run_id) => resume_group(&ctx, &out, &run_id, &mut row).await,
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

/// Records and runs the upgrade of a group that passed its preflight.
async fn start_group(ctx: &Ctx, out: &Output, prepared: Prepared, row: &mut Row) -> Result<()> {
    let (mut run, records) = run::record_upgrade(out, prepared, &ctx.req, "upgrade").await?;
    row.run = Some(run.id().to_string());
    let result = run::finish(&mut run, &records).await;
    row.facts = Some(run.facts().clone());
    result?;
    crate::checks::after_upgrade(&mut run).await
}

async fn resume_group(ctx: &Ctx, out: &Output, run_id: &str, row: &mut Row) -> Result<()> {
    row.run = Some(run_id.to_string());
    let (mut run, records) =
        run::prepare_resume(out, &ctx.site, run_id, ctx.runtime.as_deref(), "resume").await?;
    let result = run::finish(&mut run, &records).await;
    row.facts = Some(run.facts().clone());
    result?;
    crate::checks::after_upgrade(&mut run).await
}

/// A group's error as the fleet counts it.
async fn classify(ctx: &Ctx, group: &Group, e: &anyhow::Error) -> Outcome {
    let text = hubshift_common::redact::redact(&hubshift_common::error_text::one_line(e.as_ref()));
    if let Some(t) = e.downcast_ref::<Taken>() {
        return Outcome::Taken(format!("locked by {}", t.holder));
    }
    if let Some(p) = e.downcast_ref::<Parked>() {
        return match p.kind {
            ParkKind::Paused => Outcome::Paused,
            ParkKind::Stopped => Outcome::Stopped,
            ParkKind::Window => Outcome::Parked(p.message.clone()),
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
    let (_agents, observed) = crate::observe::observe(&ctx.site.inventory, group, None).await;
    observed.all_run(&ctx.req.version)
}
