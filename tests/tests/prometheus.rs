//! A real Prometheus server (the Debian package's binary, on a loopback port
//! with a throwaway data directory) scrapes a sandbox group's agents and a
//! `hubshift watch` over it, with the project's own alert rules, through
//! the scrape configuration the sandbox writes. Through PromQL it must see
//! the group healthy; lose its active node when the active hub stops and
//! get one back when the standby takes over; a rogue second active (hub-b
//! on its own database role, blind to a new schema); and, with both hubs
//! stopped, the no-active-node alert firing.

mod support;

use hubshift_common::pb;
use hubshift_sim::exporters::{WatchProcess, scrape_config};
use hubshift_sim::sandbox::{Sandbox, SandboxOptions};
use hubshift_sim::timing::SimTiming;
use pb::HubRole;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{GROUP, http};

/// A Prometheus server of the test's own.
struct Prometheus {
    child: Child,
    addr: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts `prometheus` with `config` and waits until it is ready.
    fn start(config: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config).unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr = format!("127.0.0.1:{port}");
        let log = dir.path().join("prometheus.log");
        let out = std::fs::File::create(&log).unwrap();
        let bin = which("prometheus")
            .expect("the prometheus server binary (apt-get install prometheus) is not installed");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("prometheus starts");
        let mut p = Prometheus {
            child,
            addr,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = http::get(&p.addr, "/-/ready") {
                return p;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", p.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 60 s:\n{}",
                p.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The samples of an instant PromQL query: (labels, value).
    fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        let (code, body) = http::get(
            &self.addr,
            &format!("/api/v1/query?query={}", http::encode(promql)),
        )
        .unwrap_or_else(|e| panic!("querying prometheus: {e}"));
        assert_eq!(code, 200, "{promql}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(v["status"], "success", "{promql}: {body}");
        v["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{promql}: no result list: {body}"))
            .iter()
            .map(|s| {
                let value = s["value"][1]
                    .as_str()
                    .and_then(|t| t.parse::<f64>().ok())
                    .unwrap_or_else(|| panic!("{promql}: no value in {s}"));
                (s["metric"].clone(), value)
            })
            .collect()
    }

    /// Waits until `promql` has exactly one sample and `ok` holds for its
    /// value; panics naming `what`, the last answer and the targets.
    fn wait_for(&self, what: &str, promql: &str, ok: impl Fn(f64) -> bool, within: Duration) {
        let deadline = Instant::now() + within;
        let mut last = Vec::new();
        while Instant::now() < deadline {
            last = self.query(promql);
            if last.len() == 1 && ok(last[0].1) {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let targets = http::get(&self.addr, "/api/v1/targets")
            .map(|r| r.1)
            .unwrap_or_default();
        panic!(
            "Prometheus never showed {what} within {within:?}: `{promql}` last gave {last:?}\ntargets: {targets}"
        );
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn rules_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/prometheus/hubshift.rules.yml")
}

/// The watcher's events so far.
fn watch_events(watch: &WatchProcess) -> Vec<Value> {
    std::fs::read_to_string(&watch.log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn saw_event(watch: &WatchProcess, name: &str) -> bool {
    watch_events(watch).iter().any(|e| e["event"] == name)
}

async fn stop_hub(sandbox: &Sandbox, i: usize) {
    let mut c = sandbox.client(i).await.unwrap();
    c.stop(pb::StopRequest {
        timeout_seconds: 10,
    })
    .await
    .unwrap_or_else(|e| panic!("stopping node {i}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_the_active_node_lost_and_regained_a_rogue_second_active_and_fires_the_alert()
 {
    // A takeover of 4 s: long enough that scrapes every second see the
    // group without an active node.
    let sandbox = Sandbox::start(SandboxOptions {
        timing: SimTiming {
            takeover_timeout: Duration::from_secs(4),
            ..SimTiming::fast()
        },
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("sandbox: {e}"));
    let inventory = sandbox.root.join("inventory.toml");
    sandbox.write_inventory(&inventory, GROUP).unwrap();
    let watch = WatchProcess::start(
        &inventory,
        Duration::from_millis(500),
        &sandbox.root.join("watch.log"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n{}",
        rules_file().display(),
        scrape_config(
            &[(GROUP, &sandbox.nodes)],
            &watch.addr,
            Duration::from_secs(1)
        )
    );
    let prom = Prometheus::start(&config);
    let group = format!("group=\"{GROUP}\"");
    let minute = Duration::from_secs(60);

    // Healthy: one active node, seen by the watcher and by the agents.
    prom.wait_for(
        "both agents scraped",
        "count(up{job=\"hubshift-agent\"} == 1)",
        |v| v == 2.0,
        minute,
    );
    prom.wait_for(
        "the watcher scraped",
        "up{job=\"hubshift-watch\"}",
        |v| v == 1.0,
        minute,
    );
    prom.wait_for(
        "one active node",
        &format!("hubshift_group_active_nodes{{{group}}}"),
        |v| v == 1.0,
        minute,
    );
    prom.wait_for(
        "one agent reporting an active hub",
        &format!("sum(hubshift_agent_hub_active{{{group}}})"),
        |v| v == 1.0,
        minute,
    );
    prom.wait_for(
        "the group ready to upgrade",
        &format!("hubshift_group_ready_to_upgrade{{{group}}}"),
        |v| v == 1.0,
        minute,
    );

    // hub-b on its own database role, with rights on today's schemas only.
    let db = sandbox.db.connect().await.unwrap();
    db.batch_execute(support::HUB_B_OWN_ROLE).await.unwrap();
    let jdbc_b = format!(
        "jdbc:postgresql://{}:{}/{}?user=hub_b&password=hub-b-secret",
        sandbox.db.host(),
        sandbox.db.port(),
        sandbox.db.dbname()
    );
    stop_hub(&sandbox, 1).await;
    let mut b = sandbox.client(1).await.unwrap();
    b.start(pb::StartRequest {
        mode: pb::StartMode::Start as i32,
        node: "hub-b".into(),
        jdbc_uri: jdbc_b,
    })
    .await
    .unwrap();
    sandbox
        .wait_role(1, HubRole::Standby, minute)
        .await
        .unwrap();

    // The active hub stops: no active node until hub-b takes over.
    stop_hub(&sandbox, 0).await;
    prom.wait_for(
        "the group without an active node",
        &format!("min_over_time(hubshift_group_active_nodes{{{group}}}[5m])"),
        |v| v == 0.0,
        minute,
    );
    prom.wait_for(
        "hub-b active after its takeover",
        &format!("hubshift_node_active{{{group},node=\"hub-b\"}}"),
        |v| v == 1.0,
        minute,
    );
    prom.wait_for(
        "one active node again",
        &format!("hubshift_group_active_nodes{{{group}}}"),
        |v| v == 1.0,
        minute,
    );
    prom.wait_for(
        "hub-b's agent reporting it active",
        &format!("hubshift_agent_hub_role{{{group},node=\"hub-b\",role=\"active\"}}"),
        |v| v == 1.0,
        minute,
    );
    assert!(
        saw_event(&watch, "group_lost_active"),
        "{:#?}",
        watch_events(&watch)
    );
    assert!(
        saw_event(&watch, "group_active_again"),
        "{:#?}",
        watch_events(&watch)
    );

    // A new orchestration schema hub-b's role cannot read: hub-a is created
    // and starts on it, hub-b runs on, blind to it — two actives.
    db.batch_execute("DROP SCHEMA orchestration CASCADE")
        .await
        .unwrap();
    let mut a = sandbox.client(0).await.unwrap();
    a.start(pb::StartRequest {
        mode: pb::StartMode::CreateAndStart as i32,
        node: "hub-a".into(),
        jdbc_uri: sandbox.hub_jdbc_uri(),
    })
    .await
    .unwrap();
    prom.wait_for(
        "a rogue second active node",
        &format!("max_over_time(hubshift_group_active_nodes{{{group}}}[5m])"),
        |v| v >= 2.0,
        minute,
    );
    assert!(
        saw_event(&watch, "group_two_actives"),
        "{:#?}",
        watch_events(&watch)
    );

    // Both hubs stopped: the no-active-node alert fires (after its 30 s).
    stop_hub(&sandbox, 0).await;
    stop_hub(&sandbox, 1).await;
    prom.wait_for(
        "the no-active-node alert firing",
        &format!("ALERTS{{alertname=\"HubshiftNoActiveNode\",alertstate=\"firing\",{group}}}"),
        |v| v == 1.0,
        Duration::from_secs(120),
    );
}
