//! The canary's soak: the group watched healthy on the new version for a
//! while before any other group starts.

use super::members::Ctx;
use crate::inventory::Group;
use crate::output::secs;
use serde_json::json;
use std::time::{Duration, Instant};

/// Watches the canary for `soak_ms`: one active, the others standby, all on
/// the new version, the active node never changing, and the check (if any)
/// passing each time it runs.
pub(super) async fn soak(
    ctx: &Ctx,
    group: &Group,
    soak_ms: u64,
) -> std::result::Result<(), String> {
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
pub(super) async fn healthy(ctx: &Ctx, group: &Group) -> std::result::Result<String, String> {
    let (_agents, observed) = crate::observe::observe(&ctx.site.inventory, group, None).await;
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
