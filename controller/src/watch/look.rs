//! One look at a group: every agent's Status (without measuring appdata)
//! and the group's database — the orchestration schema, the hubs'
//! heartbeat age when the inventory says how to read it, the group lock
//! and the newest run. Read-only: the watcher's database sessions are set
//! read-only, and it never takes a group's lock.

use super::health::{DatabaseLook, GroupLook, LastRun, NodeLook, NodeSeen};
use crate::agents::{self, Agent};
use crate::db::{self, Database};
use crate::facts::RunFacts;
use crate::hub;
use crate::inventory::{Group, Inventory};
use crate::journal;
use crate::readiness::{self, Observed, ObservedNode};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio_postgres::Client;

/// Connections kept from one look to the next (an agent's channel, a
/// database session), dropped when they fail and made again at the next.
#[derive(Default)]
pub struct Connections {
    agents: Mutex<HashMap<(String, String), Agent>>,
    databases: Mutex<HashMap<String, Arc<Client>>>,
}

/// Looks at `group`, each part within `patience`.
pub async fn look(
    inv: &Inventory,
    group: &Group,
    database: Result<Database, String>,
    conns: &Connections,
    patience: Duration,
) -> GroupLook {
    let nodes_fut = look_at_agents(inv, group, conns, patience);
    let db_fut = async {
        match database {
            Ok(db) => {
                match tokio::time::timeout(patience, look_at_database(&db, group, conns)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!(
                        "{} did not answer within {} s",
                        db.target(),
                        patience.as_secs()
                    )),
                }
            }
            Err(e) => Err(e),
        }
    };
    let ((nodes, facts), database) = tokio::join!(nodes_fut, db_fut);
    // The preflight checks that need no target, as `status` runs them.
    let observed = Observed {
        nodes: group
            .nodes
            .iter()
            .zip(facts)
            .map(|(n, status)| ObservedNode {
                name: n.name.clone(),
                role: n.role,
                status,
            })
            .collect(),
        database: match &database {
            Ok(d) => Ok(d.schema_present),
            Err(e) => Err(e.clone()),
        },
    };
    let blocking = readiness::preflight(
        &observed,
        &readiness::Target {
            version: String::new(),
            archive_bytes: 0,
            allow_downgrade: false,
            declared: None,
        },
    )
    .into_iter()
    .filter(|f| f.blocking)
    .map(|f| (f.check, f.message))
    .collect();
    GroupLook {
        group: group.name.clone(),
        nodes,
        database,
        blocking,
    }
}

type NodeFactsResult = Result<readiness::NodeFacts, String>;

async fn look_at_agents(
    inv: &Inventory,
    group: &Group,
    conns: &Connections,
    patience: Duration,
) -> (Vec<NodeLook>, Vec<NodeFactsResult>) {
    let asks = group.nodes.iter().map(|node| async move {
        let key = (group.name.clone(), node.name.clone());
        let cached = conns.agents.lock().await.get(&key).cloned();
        let answer = tokio::time::timeout(patience, async {
            let agent = match cached {
                Some(a) => a,
                None => agents::connect(inv, node)
                    .await
                    .map_err(|e| e.to_string())?,
            };
            let status = agent.status().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((agent, status))
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", patience.as_secs())));
        match answer {
            Ok((agent, status)) => {
                conns.agents.lock().await.insert(key, agent);
                let seen = NodeSeen {
                    running: hub::is_running(&status),
                    role: agents::role_name(&status).to_string(),
                    frozen: status.frozen,
                    version: status.active_runtime.clone(),
                    certificate_sha256: status.certificate_sha256.clone(),
                };
                let facts = agents::facts_from(&status);
                (
                    NodeLook {
                        name: node.name.clone(),
                        seen: Ok(seen),
                    },
                    Ok(facts),
                )
            }
            Err(e) => {
                conns.agents.lock().await.remove(&key);
                (
                    NodeLook {
                        name: node.name.clone(),
                        seen: Err(e.clone()),
                    },
                    Err(e),
                )
            }
        }
    });
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .unzip()
}

async fn look_at_database(
    db: &Database,
    group: &Group,
    conns: &Connections,
) -> Result<DatabaseLook, String> {
    let key = db.target();
    let client = session(db, conns).await?;
    let result = database_answers(&client, group).await;
    if result.is_err() && client.is_closed() {
        conns.databases.lock().await.remove(&key);
    }
    result.map_err(|e| format!("{key}: {e}"))
}

/// The watcher's session to `db`: made once, read-only, shared by the
/// groups on that database.
async fn session(db: &Database, conns: &Connections) -> Result<Arc<Client>, String> {
    let key = db.target();
    let mut map = conns.databases.lock().await;
    if let Some(c) = map.get(&key)
        && !c.is_closed()
    {
        return Ok(c.clone());
    }
    let client = db.connect().await.map_err(|e| e.to_string())?;
    client
        .batch_execute("SET default_transaction_read_only = on")
        .await
        .map_err(|e| format!("{key}: cannot make the session read-only: {e}"))?;
    let client = Arc::new(client);
    map.insert(key, client.clone());
    Ok(client)
}

async fn database_answers(client: &Client, group: &Group) -> Result<DatabaseLook, db::DbError> {
    let schema_present = db::schema_exists(client, &group.database.schema).await?;
    let heartbeat_age_secs = match (&group.database.heartbeat_query, schema_present) {
        (Some(q), true) => db::heartbeat_age(client, q).await?,
        _ => None,
    };
    let lock_held = db::group_lock_held(client, &group.name).await?;
    let mut last_run = None;
    if journal::exists(client).await? {
        if let Some(run) = journal::list_runs(client, Some(&group.name), 1)
            .await?
            .pop()
        {
            let facts: RunFacts = serde_json::from_value(run.facts.clone()).unwrap_or_default();
            last_run = Some(LastRun {
                updated_unix: journal::run_updated_unix(client, &run.id).await?,
                id: run.id,
                kind: run.kind,
                state: run.state.as_str().to_string(),
                windows: facts
                    .windows()
                    .iter()
                    .map(|w| (w.window, w.duration_ms as f64 / 1000.0))
                    .collect(),
                unfinished: !run.state.is_finished(),
            });
        }
    }
    Ok(DatabaseLook {
        schema_present,
        heartbeat_age_secs,
        lock_held,
        last_run,
    })
}
