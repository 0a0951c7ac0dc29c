//! A fleet of three groups on one PostgreSQL server: each group runs
//! active/standby on a database of its own (its data ticks there and only
//! there), one inventory names every group with its own database, and
//! dropping the fleet leaves no process and no directory behind.

use hubshift_common::pb::{HubRole, HubState};
use hubshift_sim::fleet::{Fleet, FleetOptions};
use hubshift_sim::measure;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Live (not zombie) processes whose command line or environment mentions
/// `marker`.
fn processes_mentioning(marker: &Path) -> Vec<String> {
    let marker = marker.to_string_lossy().into_owned();
    hubshift_tests::proc_pids()
        .into_iter()
        .filter(|pid| alive(*pid))
        .filter_map(|pid| {
            let dir = PathBuf::from(format!("/proc/{pid}"));
            // A process that ended meanwhile is no longer there to count.
            let cmdline = hubshift_tests::read_proc_file(&dir.join("cmdline"))?;
            let environ = hubshift_tests::read_proc_environ(pid)?;
            let hit = [cmdline.as_slice(), environ.as_slice()]
                .iter()
                .any(|b| b.windows(marker.len()).any(|w| w == marker.as_bytes()));
            hit.then(|| {
                format!(
                    "{pid} {}",
                    String::from_utf8_lossy(&cmdline).replace('\0', " ")
                )
            })
        })
        .collect()
}

/// Whether `pid` runs (a zombie has ended).
fn alive(pid: i32) -> bool {
    let Some(stat) = hubshift_tests::read_proc_file(Path::new(&format!("/proc/{pid}/stat"))) else {
        return false;
    };
    let stat = String::from_utf8_lossy(&stat);
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_runs_each_group_on_its_own_database_and_leaves_nothing_behind() {
    let fleet = Fleet::start(FleetOptions {
        groups: 3,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("fleet: {e}"));
    let names: Vec<&str> = fleet.groups().iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["plant-1", "plant-2", "plant-3"]);

    // One server, a database per group; each group active/standby.
    let mut dbnames = BTreeSet::new();
    for g in fleet.groups() {
        assert!(g.db.same_server(fleet.server()), "{} elsewhere", g.name);
        assert!(g.db.dbname().starts_with(&g.name.replace('-', "_")));
        dbnames.insert(g.db.dbname().to_string());
        let nodes: Vec<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(nodes, [format!("{}-a", g.name), format!("{}-b", g.name)]);
        for (i, role) in [(0, HubRole::Active), (1, HubRole::Standby)] {
            let s = g.status(i).await.unwrap();
            assert_eq!(
                (s.state(), s.role()),
                (HubState::Running, role),
                "{}",
                g.nodes[i].name
            );
        }
    }
    assert_eq!(dbnames.len(), 3);
    assert!(!dbnames.contains(fleet.server().dbname()));

    // Every group's data goes to its own database, from its own active node.
    let clients = {
        let mut v = Vec::new();
        for g in fleet.groups() {
            v.push(g.db.connect().await.unwrap());
        }
        v
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    for (g, db) in fleet.groups().iter().zip(&clients) {
        let ticks = loop {
            let ticks = measure::fetch_ticks(db, SystemTime::UNIX_EPOCH)
                .await
                .unwrap();
            if ticks.len() >= 10 {
                break ticks;
            }
            assert!(Instant::now() < deadline, "no ticks in {}", g.db.dbname());
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let producers: BTreeSet<&str> = ticks.iter().map(|t| t.node.as_str()).collect();
        assert_eq!(
            producers,
            BTreeSet::from([g.nodes[0].name.as_str()]),
            "ticks in {} come from its active node only",
            g.db.dbname()
        );
        assert!(ticks.iter().all(|t| t.version == fleet.version));
        assert_eq!(
            measure::split_brain(&ticks, fleet.timing.tick_interval),
            None
        );
    }
    drop(clients);

    // One inventory: no default database, each group its own url_file.
    let inventory = fleet.root.join("inventory").join("fleet.toml");
    fleet.write_inventory(&inventory).unwrap();
    let text = std::fs::read_to_string(&inventory).unwrap();
    let inv: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(!inv.contains_key("database"), "a default database:\n{text}");
    let tls = inv["tls"].as_table().unwrap();
    for key in ["ca", "cert", "key"] {
        assert!(Path::new(tls[key].as_str().unwrap()).is_file(), "tls.{key}");
    }
    let groups = inv["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 3, "{text}");
    let mut url_files = BTreeSet::new();
    for (entry, g) in groups.iter().zip(fleet.groups()) {
        assert_eq!(entry["name"].as_str(), Some(g.name.as_str()));
        let nodes = entry["nodes"].as_array().unwrap();
        let listed: Vec<(&str, &str, &str)> = nodes
            .iter()
            .map(|n| {
                (
                    n["name"].as_str().unwrap(),
                    n["agent"].as_str().unwrap(),
                    n["role"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            listed,
            [
                (
                    g.nodes[0].name.as_str(),
                    g.nodes[0].addr.as_str(),
                    "primary"
                ),
                (
                    g.nodes[1].name.as_str(),
                    g.nodes[1].addr.as_str(),
                    "secondary"
                ),
            ]
        );
        let database = entry["database"].as_table().unwrap();
        let mut keys: Vec<&String> = database.keys().collect();
        keys.sort();
        // The URL from a file, and how `hubshift watch` reads hubsim's heartbeat.
        assert_eq!(keys, ["heartbeat_query", "url_file"], "{text}");
        let url_file = PathBuf::from(database["url_file"].as_str().unwrap());
        assert_eq!(
            std::fs::read_to_string(&url_file).unwrap().trim(),
            g.db.url(),
            "{}",
            url_file.display()
        );
        assert!(g.db.url().ends_with(&format!("/{}", g.db.dbname())));
        let mode = std::fs::metadata(&url_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", url_file.display());
        url_files.insert(url_file);
    }
    assert_eq!(url_files.len(), 3);

    // Its files in memory when the machine has room there, as the server's.
    let in_memory = hubshift_sim::memory_dir::memory_dir(hubshift_sim::fleet::FLEET_ROOT_ROOM);
    assert_eq!(
        in_memory.is_some_and(|m| fleet.root.starts_with(m)),
        in_memory.is_some(),
        "fleet root {}",
        fleet.root.display()
    );

    // Teardown: agents, hubs, the server and every directory go.
    let root = fleet.root.clone();
    let server_dir = fleet.server().server_dir();
    let mut pids = Vec::new();
    for g in fleet.groups() {
        for n in &g.nodes {
            pids.push(n.agent_pid().expect("agent runs") as i32);
            pids.push(n.hub_pid().expect("hub runs"));
        }
    }
    assert!(pids.iter().all(|p| alive(*p)));
    drop(fleet);
    assert!(!root.exists(), "{} left behind", root.display());
    if let Some(dir) = &server_dir {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    wait_until(
        "every agent and hub has ended",
        Duration::from_secs(10),
        || pids.iter().all(|p| !alive(*p)),
    );
    let mut markers = vec![root];
    markers.extend(server_dir);
    for marker in &markers {
        let left = processes_mentioning(marker);
        assert!(left.is_empty(), "still running: {left:#?}");
    }
}
