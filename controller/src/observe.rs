//! Looking at a group before acting: connect to every agent at once and ask
//! the database whether the orchestration schema is there.

use crate::agents::{self, Agent};
use crate::db::{self, Database};
use crate::inventory::{Group, Inventory};
use crate::readiness::{Observed, ObservedNode};
use std::collections::HashMap;
use tokio::task::JoinSet;

/// Connects to all agents of `group` concurrently; unreachable ones are
/// reported in `Observed` rather than failing the whole look.
pub async fn observe(
    inv: &Inventory,
    group: &Group,
    database: Option<&Database>,
) -> (HashMap<String, Agent>, Observed) {
    let (connected, nodes) = agents_of(inv, group).await;
    let database = match database {
        None => Err("no database settings".into()),
        Some(d) => match d.connect().await {
            Ok(client) => schema_on(&client, group).await,
            Err(e) => Err(e.to_string()),
        },
    };
    (connected, Observed { nodes, database })
}

/// [`observe`] with the schema looked for on a connection the caller
/// already holds (a locked run's journal connection): no login of its own.
pub async fn observe_on(
    inv: &Inventory,
    group: &Group,
    client: &tokio_postgres::Client,
) -> (HashMap<String, Agent>, Observed) {
    let ((connected, nodes), database) =
        tokio::join!(agents_of(inv, group), schema_on(client, group));
    (connected, Observed { nodes, database })
}

async fn schema_on(client: &tokio_postgres::Client, group: &Group) -> Result<bool, String> {
    db::schema_exists(client, &group.database.schema)
        .await
        .map_err(|e| e.to_string())
}

/// Every agent of `group`, connected and asked for its status at once.
async fn agents_of(inv: &Inventory, group: &Group) -> (HashMap<String, Agent>, Vec<ObservedNode>) {
    let mut set = JoinSet::new();
    for (i, node) in group.nodes.iter().enumerate() {
        let inv = inv.clone();
        let node = node.clone();
        set.spawn(async move {
            let result = match agents::connect(&inv, &node).await {
                Ok(agent) => match agent.status_measured().await {
                    Ok(status) => Ok((agent, status)),
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(e.to_string()),
            };
            (i, node, result)
        });
    }
    let mut slots: Vec<Option<ObservedNode>> = vec![None; group.nodes.len()];
    let mut connected = HashMap::new();
    while let Some(joined) = set.join_next().await {
        let Ok((i, node, result)) = joined else {
            continue;
        };
        let status = match result {
            Ok((agent, status)) => {
                connected.insert(node.name.clone(), agent);
                Ok(agents::facts_from(&status))
            }
            Err(e) => Err(e),
        };
        slots[i] = Some(ObservedNode {
            name: node.name.clone(),
            role: node.role,
            status,
        });
    }
    let nodes = slots
        .into_iter()
        .zip(&group.nodes)
        .map(|(slot, node)| {
            slot.unwrap_or_else(|| ObservedNode {
                name: node.name.clone(),
                role: node.role,
                status: Err("status task failed".into()),
            })
        })
        .collect();
    (connected, nodes)
}
