//! `hubshift status`: what every node looks like right now.

use crate::agents::{self, role_name, state_name};
use crate::exit::UsageError;
use crate::inventory::Inventory;
use crate::output::Output;
use crate::plan::human_bytes;
use anyhow::Result;
use serde_json::json;
use tokio::task::JoinSet;

/// Prints one line (or JSON object) per node of each selected group.
pub async fn status(out: Output, inventory: &Inventory, group: Option<&str>) -> Result<()> {
    let groups = match group {
        Some(g) => vec![inventory.group(g).map_err(UsageError::from)?.clone()],
        None => inventory.groups.clone(),
    };
    let mut unreachable = 0;
    for g in groups {
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
                            "group": g.name, "node": node.name, "agent": node.agent,
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
                        json!({ "group": g.name, "node": node.name, "agent": node.agent,
                                "reachable": false, "error": e }),
                        || format!("  {:<12} UNREACHABLE: {e}", node.name),
                    );
                }
            }
        }
    }
    if unreachable > 0 {
        anyhow::bail!("{unreachable} agent(s) unreachable");
    }
    Ok(())
}
