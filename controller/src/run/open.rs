//! Finding a group's journal and taking its lock: the first things every
//! run does, before it looks at anything else.

use crate::db::Database;
use crate::exit::{Refused, Taken, UsageError};
use crate::inventory::{Group, Inventory};
use crate::journal::{self, RunRecord};
use anyhow::Result;
use std::collections::HashMap;
use std::path::Path;

/// The inventory with each group's database resolved once (its URL read
/// from its environment variable or file, parsed): every command and the
/// fleet ask here instead of reading the URL again.
#[derive(Clone)]
pub struct Site {
    /// The inventory.
    pub inventory: Inventory,
    /// Each group's database, or why it cannot be used (a usage error
    /// naming the inventory key), by group name.
    databases: HashMap<String, Result<Database, String>>,
}

impl Site {
    /// Loads the inventory at `path` (a usage error when it is bad).
    pub fn load(path: &Path) -> Result<Site> {
        let inventory = Inventory::load(path).map_err(UsageError::from)?;
        Ok(Site::new(inventory))
    }

    /// Starts announcing runs and fleets to the inventory's `[notify]`
    /// webhook (commands that change groups call it; a header's variable
    /// that is not set is a usage error naming it).
    pub fn notify(&self) -> Result<()> {
        crate::notify::install(self.inventory.notify.as_ref()).map_err(UsageError)?;
        Ok(())
    }

    /// Resolves every group's database of `inventory`.
    pub fn new(inventory: Inventory) -> Site {
        let databases = inventory
            .groups
            .iter()
            .map(|g| {
                let db = Database::for_group(&inventory, g).map_err(|e| e.0);
                (g.name.clone(), db)
            })
            .collect();
        Site {
            inventory,
            databases,
        }
    }

    /// The group named `name` (a usage error naming the inventory when it
    /// has none).
    pub fn group(&self, name: &str) -> Result<&Group> {
        Ok(self.inventory.group(name).map_err(UsageError::from)?)
    }

    /// `group`'s database (a usage error when its URL cannot be had).
    pub fn database(&self, group: &Group) -> Result<Database> {
        match self.databases.get(&group.name) {
            Some(Ok(db)) => Ok(db.clone()),
            Some(Err(e)) => Err(UsageError(e.clone()).into()),
            None => Err(UsageError(format!("no group {} in the inventory", group.name)).into()),
        }
    }

    /// One group per distinct database, with it (each group's journal
    /// lives in its own database; several groups may share one).
    pub fn distinct_databases(&self) -> Vec<(&Group, Result<Database>)> {
        self.distinct_databases_among(&self.inventory.groups)
    }

    /// [`Site::distinct_databases`] of `groups` only (a fleet's members).
    pub fn distinct_databases_among<'a>(
        &self,
        groups: &'a [Group],
    ) -> Vec<(&'a Group, Result<Database>)> {
        let mut seen: Vec<&crate::inventory::DatabaseSection> = Vec::new();
        let mut out = Vec::new();
        for g in groups {
            if !seen.contains(&&g.database) {
                seen.push(&g.database);
                out.push((g, self.database(g)));
            }
        }
        out
    }
}

/// A group whose journal is open and whose lock this controller holds:
/// what every run has before it looks at anything else.
pub struct Locked {
    /// The inventory.
    pub inventory: Inventory,
    /// The group.
    pub group: Group,
    /// Its database.
    pub db: Database,
    /// The journal connection; it holds the group's lock.
    pub client: tokio_postgres::Client,
}

/// Opens `group`'s journal (brought up to this version's columns), takes
/// the group lock, and reads the database server's clock, which every time
/// the run journals is taken from. Refused (exit 3) when the database
/// cannot be reached or another controller holds the lock.
pub async fn lock(site: &Site, group: &Group) -> Result<Locked> {
    let db = site.database(group)?;
    let client = db.connect().await.map_err(|e| Refused(e.to_string()))?;
    lock_on(site.inventory.clone(), group.clone(), db, client).await
}

/// [`lock`] on a connection that is already open.
pub async fn lock_on(
    inventory: Inventory,
    group: Group,
    db: Database,
    client: tokio_postgres::Client,
) -> Result<Locked> {
    journal::ensure_schema(&client).await?;
    lock_group(&client, &group.name).await?;
    crate::clock::sync(&client).await?;
    Ok(Locked {
        inventory,
        group,
        db,
        client,
    })
}

/// How long a held group lock is tried again before it counts as taken: a
/// controller that has just exited may hold it until the server notices.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

/// Takes the group lock on `client`; a [`Taken`] (exit 3) naming the holder.
pub async fn lock_group(client: &tokio_postgres::Client, group: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    loop {
        if crate::db::try_lock_group(client, group).await? {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let holder = journal::unfinished_run(client, group).await?.map_or_else(
        || "another hubshift controller".to_string(),
        |r| {
            format!(
                "run {} (started {}, last change {})",
                r.id, r.created_at, r.updated_at
            )
        },
    );
    Err(Taken {
        group: group.to_string(),
        holder,
    }
    .into())
}

/// A run found in the journal of one of the inventory's databases.
pub struct OpenRun {
    /// The inventory.
    pub inventory: Inventory,
    /// The run's group.
    pub group: Group,
    /// The group's database.
    pub db: Database,
    /// A journal connection to it.
    pub client: tokio_postgres::Client,
    /// The run.
    pub record: RunRecord,
}

/// Finds run `run_id` in the journals of the inventory's databases (the
/// journal brought up to this version's columns). Usage error when no
/// reachable journal has it; refused when it is not found and some
/// database could not be reached.
pub async fn open_run(site: &Site, run_id: &str) -> Result<OpenRun> {
    let inventory = site.inventory.clone();
    let mut unreachable = Vec::new();
    for (g, db) in site.distinct_databases() {
        let db = db?;
        let client = match db.connect().await {
            Ok(c) => c,
            Err(e) => {
                unreachable.push(format!("group {}: {e}", g.name));
                continue;
            }
        };
        if !journal::exists(&client).await? {
            continue;
        }
        // Journals written by an older hubshift get this version's columns.
        journal::ensure_schema(&client).await?;
        let Some(record) = journal::load_run(&client, run_id).await? else {
            continue;
        };
        let group = inventory
            .group(&record.group)
            .map_err(UsageError::from)?
            .clone();
        let (db, client) = if group.database == g.database {
            (db, client)
        } else {
            let db = site.database(&group)?;
            let client = db.connect().await.map_err(|e| Refused(e.to_string()))?;
            (db, client)
        };
        return Ok(OpenRun {
            inventory,
            group,
            db,
            client,
            record,
        });
    }
    if !unreachable.is_empty() {
        return Err(Refused(format!(
            "run {run_id} is in no reachable journal, and some databases could not be reached: {}",
            unreachable.join("; ")
        ))
        .into());
    }
    Err(UsageError(format!(
        "no run {run_id} in the journal (see `hubshift runs`)"
    ))
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLEET: &str = r#"
[tls]
ca = "ca.crt"
cert = "c.crt"
key = "c.key"

[[groups]]
name = "plant-1"
nodes = [
  { name = "a", agent = "10.1.0.1:7443", role = "primary" },
  { name = "b", agent = "10.1.0.2:7443", role = "secondary" },
]
[groups.database]
url_file = "p1.url"

[[groups]]
name = "plant-2"
nodes = [
  { name = "a", agent = "10.2.0.1:7443", role = "primary" },
  { name = "b", agent = "10.2.0.2:7443", role = "secondary" },
]
[groups.database]
url_file = "missing.url"

[[groups]]
name = "plant-3"
nodes = [
  { name = "a", agent = "10.3.0.1:7443", role = "primary" },
  { name = "b", agent = "10.3.0.2:7443", role = "secondary" },
]
[groups.database]
url_file = "p1.url"
"#;

    #[test]
    fn each_groups_database_is_resolved_once_and_a_bad_one_only_fails_its_group() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = dir.path().join("p1.url");
        std::fs::write(&url, "postgres://hub:secret@db.plant-1:5433/hubs\n").expect("url");
        let inventory = dir.path().join("inventory.toml");
        std::fs::write(&inventory, FLEET).expect("inventory");
        let site = Site::load(&inventory).expect("site");
        // Read once: the file may go away after loading.
        std::fs::remove_file(&url).expect("remove url");
        let p1 = site.group("plant-1").expect("plant-1").clone();
        assert_eq!(
            site.database(&p1).expect("plant-1 db").target(),
            "db.plant-1:5433/hubs"
        );
        let p2 = site.group("plant-2").expect("plant-2").clone();
        let err = match site.database(&p2) {
            Ok(_) => panic!("plant-2's url file is missing, yet it has a database"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("groups[1].database"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        // plant-3 shares plant-1's database: one journal to read for both.
        let distinct: Vec<&str> = site
            .distinct_databases()
            .iter()
            .map(|(g, _)| g.name.as_str())
            .collect();
        assert_eq!(distinct, vec!["plant-1", "plant-2"]);
        assert!(site.group("nope").is_err());
    }
}
