//! The packaging files are valid: the `cargo deb` metadata names files that
//! exist, the systemd unit carries the hardening and write paths the agent
//! needs, and the example configurations pass `hubshift-agent check-config`
//! as far as files on this machine allow.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn cargo_deb_metadata_is_complete_and_points_at_real_files() {
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(root().join("agent/Cargo.toml")).unwrap()).unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    for key in [
        "maintainer",
        "extended-description",
        "depends",
        "assets",
        "conf-files",
    ] {
        assert!(deb.get(key).is_some(), "[package.metadata.deb] lacks {key}");
    }
    let assets = deb["assets"].as_array().unwrap();
    let mut targets = Vec::new();
    for asset in assets {
        let a = asset.as_array().unwrap();
        assert_eq!(a.len(), 3, "asset [source, target, mode]: {asset}");
        let (src, dst, mode) = (
            a[0].as_str().unwrap(),
            a[1].as_str().unwrap(),
            a[2].as_str().unwrap(),
        );
        assert!(u32::from_str_radix(mode, 8).is_ok(), "mode {mode}");
        if !src.starts_with("target/") {
            assert!(
                root().join("agent").join(src).is_file(),
                "asset source {src} missing"
            );
        }
        targets.push(dst.to_string());
    }
    assert!(targets.iter().any(|t| t == "usr/bin/"), "binary installed");
    assert!(
        targets.iter().any(|t| t.starts_with("lib/systemd/system/")),
        "unit installed"
    );
    for conf in deb["conf-files"].as_array().unwrap() {
        let conf = conf.as_str().unwrap().trim_start_matches('/');
        assert!(
            targets.iter().any(|t| t == conf),
            "conffile {conf} is installed by an asset"
        );
    }
    let scripts = deb["maintainer-scripts"].as_str().unwrap();
    assert!(
        root()
            .join("agent")
            .join(scripts)
            .join("postinst")
            .is_file()
    );
}

#[test]
fn systemd_unit_is_hardened_and_can_write_where_the_agent_must() {
    let unit = std::fs::read_to_string(root().join("packaging/hubshift-agent.service")).unwrap();
    for line in [
        "NoNewPrivileges=true",
        "ProtectSystem=strict",
        "PrivateTmp=true",
        "KillMode=process",
        "ProtectProc=invisible",
        "CapabilityBoundingSet=",
        "LimitNOFILE=65536",
        "ExecStart=/usr/bin/hubshift-agent run --config /etc/hubshift/agent.toml",
    ] {
        assert!(unit.lines().any(|l| l.trim() == line), "unit lacks {line}");
    }
    let rw = unit
        .lines()
        .find_map(|l| l.strip_prefix("ReadWritePaths="))
        .expect("ReadWritePaths");
    let example: toml::Value = toml::from_str(
        &std::fs::read_to_string(root().join("packaging/agent.example.toml")).unwrap(),
    )
    .unwrap();
    let paths = &example["paths"];
    for key in ["state_dir", "install_root", "appdata"] {
        let p = paths[key].as_str().unwrap();
        assert!(
            rw.split_whitespace().any(|allowed| p.starts_with(allowed)),
            "paths.{key} = {p} is not writable under ReadWritePaths={rw}"
        );
    }
}

/// `systemd-analyze security` rates the unit at 4.0 or lower (it was 6.5).
#[test]
fn systemd_unit_exposure_is_at_most_4() {
    exposure_at_most("packaging/hubshift-agent.service", 4.0);
}

/// The Docker host's unit runs no hub itself: it is held tighter (2.5; the process unit: 4.0).
#[test]
fn docker_systemd_unit_exposure_is_at_most_2_5_and_it_can_write_where_the_agent_must() {
    exposure_at_most("packaging/hubshift-agent-docker.service", 2.5);
    let unit =
        std::fs::read_to_string(root().join("packaging/hubshift-agent-docker.service")).unwrap();
    let rw = unit
        .lines()
        .find_map(|l| l.strip_prefix("ReadWritePaths="))
        .expect("ReadWritePaths");
    let example: toml::Value = toml::from_str(
        &std::fs::read_to_string(root().join("packaging/agent.docker.example.toml")).unwrap(),
    )
    .unwrap();
    for key in ["state_dir", "appdata"] {
        let p = example["paths"][key].as_str().unwrap();
        assert!(
            rw.split_whitespace().any(|allowed| p.starts_with(allowed)),
            "paths.{key} = {p} is not writable under ReadWritePaths={rw}"
        );
    }
    assert!(unit.contains("After=network-online.target docker.service"));
}

fn exposure_at_most(unit: &str, limit: f64) {
    let unit = root().join(unit);
    let out = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze must be installed to check the unit");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let figure: f64 = text
        .lines()
        .find_map(|l| {
            let rest = l.split("Overall exposure level for ").nth(1)?;
            let value = rest.split(": ").nth(1)?;
            value.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no exposure figure in: {text}"));
    assert!(figure <= limit, "exposure {figure} > {limit}:\n{text}");
}

/// Each `Documentation=file:` of the unit is a file the package installs.
#[test]
fn systemd_unit_documentation_is_installed_by_the_package() {
    let unit = std::fs::read_to_string(root().join("packaging/hubshift-agent.service")).unwrap();
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(root().join("agent/Cargo.toml")).unwrap()).unwrap();
    let installed: Vec<String> = manifest["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("/{}", a[1].as_str().unwrap()))
        .collect();
    let docs: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("Documentation="))
        .flat_map(str::split_whitespace)
        .collect();
    assert!(!docs.is_empty(), "the unit names its documentation");
    for doc in docs {
        let path = doc
            .strip_prefix("file:")
            .unwrap_or_else(|| panic!("{doc}: only files the package installs are sure to exist"));
        assert!(
            installed.iter().any(|i| i == path),
            "{path} is not installed by the package"
        );
    }
}

/// The CI example passes inputs and secrets to its scripts through `env:`
/// (never `${{ … }}` inside `run:`, the script-injection pattern), fetches
/// the runtime over HTTPS only and checks its pinned SHA-256 and its
/// signature.
#[test]
fn ci_example_keeps_inputs_out_of_scripts_and_pins_the_runtime() {
    let text = std::fs::read_to_string(root().join("packaging/ci/upgrade-hubs.yml")).unwrap();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut in_run: Option<usize> = None;
    let mut scripts = String::new();
    for line in text.lines() {
        if let Some(at) = in_run {
            if line.trim().is_empty() || indent(line) > at {
                scripts.push_str(line);
                scripts.push('\n');
                continue;
            }
            in_run = None;
        }
        let trimmed = line.trim_start().trim_start_matches("- ");
        if let Some(rest) = trimmed.strip_prefix("run:") {
            scripts.push_str(rest);
            scripts.push('\n');
            in_run = Some(indent(line));
        }
    }
    assert!(scripts.contains("hubshift --json upgrade"), "{scripts}");
    assert!(
        !scripts.contains("${{"),
        "an expression inside run:\n{scripts}"
    );
    assert!(scripts.contains("--proto '=https'"), "{scripts}");
    assert!(scripts.contains("sha256sum --check"), "{scripts}");
    for command in ["hubshift --json plan", "hubshift --json upgrade"] {
        let line = scripts
            .lines()
            .find(|l| l.contains(command))
            .unwrap_or_else(|| panic!("no {command}:\n{scripts}"));
        assert!(
            line.contains("--signature runtime.tar.gz.minisig"),
            "{command} does not verify the signature: {line}"
        );
    }
    assert!(text.contains("RUNTIME_SHA256: ${{ inputs.runtime_sha256 }}"));
}

/// The alert rules load in Prometheus' own checker, and each alert fires
/// on the series it is about, after its `for`, by `promtool test rules`.
#[test]
fn prometheus_alert_rules_pass_promtool() {
    let dir = root().join("packaging/prometheus");
    for args in [
        &["check", "rules", "hubshift.rules.yml"][..],
        &["test", "rules", "hubshift.rules.test.yml"][..],
    ] {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool (apt-get install prometheus) must be installed to check the rules");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The watcher only reads and talks to the network: its unit is locked down
/// further than the agent's.
#[test]
fn watch_systemd_unit_exposure_is_at_most_2() {
    exposure_at_most("packaging/hubshift-watch.service", 2.0);
    let unit = std::fs::read_to_string(root().join("packaging/hubshift-watch.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/hubshift watch -i "),
        "{unit}"
    );
}
