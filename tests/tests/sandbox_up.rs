//! `hubshift-sandbox up` leaves a working HA group with a ready inventory:
//! the printed `hubshift status` command works against it, the printed
//! Prometheus endpoints (every agent's and a `hubshift watch`) answer with
//! the group's health, its scrape configuration passes `promtool check
//! config`, and Ctrl-C tears everything down (exit 0, no agent, hub or
//! watcher left running).

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Sends SIGINT to a pid when dropped (a no-op once it has ended).
struct Interrupt(i32);

impl Drop for Interrupt {
    fn drop(&mut self) {
        // SAFETY: a signal to the `up` process this test started.
        unsafe {
            libc::kill(self.0, libc::SIGINT);
        }
    }
}

#[test]
fn up_serves_a_group_until_ctrl_c_then_tears_it_down() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sb");
    let bin = hubshift_sim::bins::binary("hubshift-sandbox").unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(bin)
        .args([
            "up",
            "--takeover-timeout",
            "1500ms",
            "--start-delay",
            "700ms",
            "--dir",
        ])
        .arg(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Should an assertion fail, `up` is still torn down (Ctrl-C).
    let _teardown = Interrupt(child.id() as i32);
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut printed = Vec::new();
    while !printed
        .iter()
        .any(|l: &String| l.contains("Running until Ctrl-C"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => printed.push(line),
            Err(_) => panic!("`up` did not get ready: {printed:#?}"),
        }
    }
    let status_cmd = printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("hubshift status -i "))
        .unwrap_or_else(|| panic!("no status command printed: {printed:#?}"))
        .to_string();
    let out = Command::new(hubshift_sim::bins::binary("hubshift").unwrap())
        .args(["--json", "status", "-i", &status_cmd])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let roles: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "node_status")
        .map(|e| {
            format!(
                "{}={}",
                e["node"].as_str().unwrap(),
                e["role"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(roles, ["hub-a=active", "hub-b=standby"]);
    let hub_pids: Vec<i32> = ["hub-a", "hub-b"]
        .iter()
        .map(|n| {
            let text =
                std::fs::read_to_string(root.join("nodes").join(n).join("state/hub.json")).unwrap();
            serde_json::from_str::<serde_json::Value>(&text).unwrap()["pid"]
                .as_i64()
                .unwrap() as i32
        })
        .collect();
    assert!(hub_pids.iter().all(|p| alive(*p)));

    // The Prometheus endpoints it printed.
    let agent_urls: Vec<String> = printed
        .iter()
        .filter(|l| l.trim().starts_with("agent of hub-"))
        .filter_map(|l| l.split("http://").nth(1))
        .filter_map(|u| u.strip_suffix("/metrics"))
        .map(str::to_string)
        .collect();
    assert_eq!(agent_urls.len(), 2, "{printed:#?}");
    for addr in &agent_urls {
        let (code, body) = support::http::get(addr, "/metrics").unwrap();
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("hubshift_agent_hub_up 1"), "{body}");
        let (code, body) = support::http::get(addr, "/healthz").unwrap();
        assert_eq!(code, 200, "{body}");
    }
    let watch_addr = printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("hubshift watch: http://"))
        .and_then(|u| u.split("/metrics").next())
        .unwrap_or_else(|| panic!("no watch endpoint printed: {printed:#?}"))
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = support::http::get(&watch_addr, "/metrics").unwrap();
        assert_eq!(code, 200, "{body}");
        if body.contains("hubshift_group_active_nodes{group=\"sandbox\"} 1.0")
            && body.contains("hubshift_group_standby_nodes{group=\"sandbox\"} 1.0")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "watch never reported the group healthy:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The watcher of this sandbox: `hubshift watch -i <root>/inventory.toml`.
    let inventory = root.join("inventory.toml").display().to_string();
    let watch_pid: i32 = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<String> = c
                    .split(|b| *b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                args.iter().any(|a| a == "watch") && args.contains(&inventory)
            })
        })
        .unwrap_or_else(|| panic!("no watch process of this sandbox"));
    let scrape = std::fs::read_to_string(root.join("prometheus-scrape.yml")).unwrap();
    for addr in agent_urls.iter().chain([&watch_addr]) {
        assert!(
            scrape.contains(addr.as_str()),
            "{addr} not scraped:\n{scrape}"
        );
    }
    let config = root.join("prometheus.yml");
    std::fs::write(&config, format!("global:\n  scrape_interval: 1s\n{scrape}")).unwrap();
    let check = Command::new("promtool")
        .args(["check", "config"])
        .arg(&config)
        .output()
        .expect("promtool (apt-get install prometheus) must be installed");
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // SAFETY: sending SIGINT to the child we started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "`up` did not stop after Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "Ctrl-C is the normal end of `up`: {status}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while hub_pids.iter().chain([&watch_pid]).any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "hubs or the watcher still running after teardown"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
