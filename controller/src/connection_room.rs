//! Whether a PostgreSQL server admits the connections an upgrade needs:
//! every hub holds connections while it runs, and a server at its
//! `max_connections` refuses the controller ("too many clients") in the
//! middle of a hand-over. `plan` and `status` warn before that happens.

use crate::db::{Database, DbError};

/// Connections an upgrade adds per group while it runs: the controller's
/// journal link (it holds the lock, and the steps' own database work uses
/// it), the hub's `create` on the new primary, and a hub connecting again
/// while its old connection is not yet gone.
pub const PER_GROUP: u32 = 3;

/// What a server admits and holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// `max_connections`.
    pub max: u32,
    /// `superuser_reserved_connections` (ordinary roles cannot use them).
    pub reserved: u32,
    /// Client connections open now (the hubs', the controller's, others).
    pub in_use: u32,
}

/// Reads the server's limit and current use through `db`.
pub async fn read(db: &Database) -> Result<Room, DbError> {
    let client = db.connect().await?;
    let row = client
        .query_one(
            "SELECT current_setting('max_connections')::int,
                    current_setting('superuser_reserved_connections')::int,
                    (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int",
            &[],
        )
        .await
        .map_err(|e| DbError::Query {
            doing: "reading max_connections",
            reason: hubshift_common::redact::redact(&e.to_string()),
        })?;
    let get = |i: usize| u32::try_from(row.get::<_, i32>(i)).unwrap_or(0);
    Ok(Room {
        max: get(0),
        reserved: get(1),
        in_use: get(2),
    })
}

/// A warning when the server cannot hold what runs on it now (its hubs
/// among them) plus the controller's connections for `groups` groups.
pub fn check(room: &Room, groups: usize, server: &str) -> Option<String> {
    let usable = room.max.saturating_sub(room.reserved);
    let need = u32::try_from(groups)
        .unwrap_or(u32::MAX)
        .saturating_mul(PER_GROUP);
    if room.in_use.saturating_add(need) <= usable {
        return None;
    }
    Some(format!(
        "database server {server}: max_connections = {} ({} reserved for superusers) cannot hold the {} connections open now (its hubs among them) plus about {need} for upgrading its {groups} group(s); raise max_connections (or upgrade fewer groups at once)",
        room.max, room.reserved, room.in_use
    ))
}

/// Warns (`database_room`) about each server of `dbs` (with the number of
/// groups on it) that cannot hold what they need; unreadable ones are
/// skipped (preflight reports an unreachable database).
pub async fn warn(out: &crate::output::Output, dbs: &[(Database, usize)]) {
    let mut servers: Vec<(String, &Database, usize)> = Vec::new();
    for (db, n) in dbs {
        let s = server_of(db);
        match servers.iter_mut().find(|(k, _, _)| *k == s) {
            Some(e) => e.2 += n,
            None => servers.push((s, db, *n)),
        }
    }
    for (server, db, groups) in servers {
        let Ok(room) = read(db).await else { continue };
        if let Some(w) = check(&room, groups, &server) {
            out.event(
                "database_room",
                serde_json::json!({ "server": server, "max_connections": room.max,
                    "reserved": room.reserved, "in_use": room.in_use, "groups": groups,
                    "warning": w }),
                || format!("WARNING: {w}"),
            );
        }
    }
}

/// `host:port` of a database, the server several groups' databases share.
pub fn server_of(db: &Database) -> String {
    let t = db.target();
    t.rsplit_once('/').map_or(t.clone(), |(s, _)| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_near_its_limit_is_warned_about_naming_it() {
        let room = Room {
            max: 100,
            reserved: 3,
            in_use: 80,
        };
        assert_eq!(check(&room, 5, "db:5432"), None);
        let w = check(&room, 6, "db:5432").unwrap();
        assert!(
            w.contains("db:5432") && w.contains("max_connections = 100"),
            "{w}"
        );
        // A fleet of fifty groups on the default limit.
        let room = Room {
            max: 100,
            reserved: 3,
            in_use: 100,
        };
        assert!(check(&room, 50, "db:5432").is_some());
    }
}
