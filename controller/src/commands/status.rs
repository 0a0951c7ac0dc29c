//! `hubshift status`: what every node looks like right now, and whether
//! each group is ready to upgrade.

use crate::agents::{self, role_name, state_name};
use crate::inventory::Group;
use crate::journal;
use crate::output::Output;
use crate::readiness::{self, human_bytes};
use crate::run::Site;
use anyhow::Result;
use serde_json::json;
use std::path::Path;
use tokio::task::JoinSet;

/// Prints one line (or JSON object) per node of each selected group, then
/// one line per group saying whether it is ready to upgrade.
pub async fn status(out: Output, inventory: &Path, names: &[String]) -> Result<()> {
    let site = Site::load(inventory)?;
    let inventory = &site.inventory;
    let groups = if names.is_empty() {
        inventory.groups.clone()
    } else {
        let mut v = Vec::new();
        for n in names {
            v.push(site.group(n)?.clone());
        }
        v
    };
    let mut unreachable = 0;
    let mut readiness = Vec::new();
    for g in &groups {
        let out = out.for_group(&g.name);
        readiness.push(ready_line(&site, g).await);
        out.human(&format!("group {}", g.name));
        let mut set = JoinSet::new();
        for (i, node) in g.nodes.iter().enumerate() {
            let inv = inventory.clone();
            let node = node.clone();
            set.spawn(async move {
                let r = match agents::connect(&inv, &node).await {
                    Ok(a) => a.status().await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                (i, node, r)
            });
        }
        let mut rows = Vec::new();
        while let Some(Ok(row)) = set.join_next().await {
            rows.push(row);
        }
        rows.sort_by_key(|r| r.0);
        for (_, node, result) in rows {
            match result {
                Ok(s) => {
                    let free: Vec<String> = s
                        .free_space
                        .iter()
                        .map(|d| format!("{} {}", d.name, human_bytes(d.free_bytes)))
                        .collect();
                    out.event(
                        "node_status",
                        json!({
                            "node": node.name, "agent": node.agent,
                            "inventory_role": node.role, "reachable": true,
                            "state": state_name(&s), "role": role_name(&s), "pid": s.pid,
                            "active_runtime": s.active_runtime, "staged_runtimes": s.staged_runtimes,
                            "certificate_sha256": s.certificate_sha256,
                            "free_space": s.free_space.iter().map(|d| json!({"name": d.name, "path": d.path, "free_bytes": d.free_bytes})).collect::<Vec<_>>(),
                            "agent_version": s.agent_version,
                        }),
                        || {
                            format!(
                                "  {:<12} {:<9} {:<14} {:<8} runtime {:<10} staged [{}] cert {} free: {}",
                                node.name,
                                format!("{:?}", node.role).to_lowercase(),
                                state_name(&s),
                                role_name(&s),
                                if s.active_runtime.is_empty() { "-" } else { &s.active_runtime },
                                s.staged_runtimes.join(","),
                                if s.certificate_sha256.is_empty() { "-".to_string() } else { s.certificate_sha256[..12.min(s.certificate_sha256.len())].to_string() },
                                free.join(", ")
                            )
                        },
                    );
                }
                Err(e) => {
                    unreachable += 1;
                    out.event(
                        "node_status",
                        json!({ "node": node.name, "agent": node.agent,
                                "reachable": false, "error": e }),
                        || format!("  {:<12} UNREACHABLE: {e}", node.name),
                    );
                }
            }
        }
    }
    out.human("");
    let mut not_ready = 0;
    for (g, problems) in groups.iter().zip(&readiness) {
        let ready = problems.is_empty();
        if !ready {
            not_ready += 1;
        }
        out.for_group(&g.name).event(
            "group_readiness",
            json!({ "ready": ready, "problems": problems }),
            || {
                if ready {
                    format!("{:<16} ready to upgrade", g.name)
                } else {
                    format!("{:<16} NOT READY: {}", g.name, problems.join("; "))
                }
            },
        );
    }
    let dbs: Vec<_> = groups
        .iter()
        .filter_map(|g| site.database(g).ok().map(|db| (db, 1)))
        .collect();
    crate::connection_room::warn(&out, &dbs).await;
    for g in &groups {
        if let Some((fields, line)) = window_line(&site, g).await {
            out.for_group(&g.name)
                .event("group_window", fields, || format!("{:<16} {line}", g.name));
        }
    }
    if unreachable > 0 {
        anyhow::bail!("{unreachable} agent(s) unreachable");
    }
    if not_ready > 0 {
        anyhow::bail!("{not_ready} group(s) not ready to upgrade");
    }
    Ok(())
}

/// What stands in the way of upgrading `group` now (empty: ready): its
/// database and schema, a held lock or unfinished run, and the preflight
/// checks that do not depend on the target.
async fn ready_line(site: &Site, group: &Group) -> Vec<String> {
    let mut problems = Vec::new();
    let db = match site.database(group) {
        Ok(db) => db,
        Err(e) => return vec![e.to_string()],
    };
    match db.connect().await {
        Ok(client) => {
            if let Ok(true) = journal::exists(&client).await {
                match crate::db::try_lock_group(&client, &group.name).await {
                    Ok(false) => problems.push("an upgrade holds its lock".to_string()),
                    Err(e) => problems.push(e.to_string()),
                    Ok(true) => {}
                }
                if let Ok(Some(r)) = journal::unfinished_run(&client, &group.name).await {
                    problems.push(format!(
                        "run {} is {} (resume or abandon it)",
                        r.id, r.state
                    ));
                }
            }
        }
        Err(e) => return vec![e.to_string()],
    }
    let (_agents, observed) = crate::observe::observe(&site.inventory, group, Some(&db)).await;
    // No target: the checks that need one (version, disk room) pass.
    let findings = readiness::preflight(
        &observed,
        &readiness::Target {
            version: String::new(),
            archive_bytes: 0,
            allow_downgrade: false,
            declared: None,
        },
    );
    for f in findings.iter().filter(|f| f.blocking) {
        let p = if f.node.is_empty() {
            format!("{}: {}", f.check, f.message)
        } else {
            format!("{} {}: {}", f.node, f.check, f.message)
        };
        if !problems.contains(&p) {
            problems.push(p);
        }
    }
    problems
}

/// The group's maintenance window now, and a fleet's park of it (newest
/// fleets of its database): not a readiness problem, but worth seeing.
async fn window_line(site: &Site, group: &Group) -> Option<(serde_json::Value, String)> {
    let mut parked = None;
    if let Ok(db) = site.database(group)
        && let Ok(client) = db.connect().await
        && let Ok(true) = journal::exists(&client).await
        && let Ok(fleets) = journal::list_fleets(&client, 20).await
    {
        parked = fleets.into_iter().find_map(|f| {
            let p = f.parked.get(&group.name)?;
            Some((
                f.id.clone(),
                p["opens"].as_str().unwrap_or("?").to_string(),
                p["window"].as_str().unwrap_or("?").to_string(),
            ))
        });
    }
    if group.windows.is_empty() && parked.is_none() {
        return None;
    }
    let need = crate::fleet::handover_need(site, group).await;
    let (open, next, line) = match crate::window::decide(&group.windows, crate::window::now(), need)
    {
        crate::window::Gate::Open => (true, None, "maintenance window: open now".to_string()),
        crate::window::Gate::Wait { opens, window } => (
            false,
            Some(opens.to_string()),
            format!(
                "maintenance window: closed; the next ({window}) opens {}",
                crate::window::show(opens, &group.windows)
            ),
        ),
        crate::window::Gate::Never => (
            false,
            None,
            format!(
                "maintenance window: none long enough for a hand-over (about {} s)",
                need.as_secs()
            ),
        ),
    };
    let mut fields = json!({ "window_open": open, "next_window": next });
    let mut line = line;
    if let Some((fleet, opens, window)) = parked {
        line.push_str(&format!(
            "; parked in fleet {fleet} for its window {window} (opens {opens}): hubshift resume --fleet {fleet}"
        ));
        fields["parked"] = json!({ "fleet": fleet, "opens": opens, "window": window });
    }
    Some((fields, line))
}
