//! The agents' configurations and the hubs' files the sandbox writes:
//! command templates for hubsim, settings bound to appdata, runtimes
//! installed before the first start.

use super::certs::CONTROLLER_NAME;
use super::error::SandboxError;
use super::error::io;
use super::node::SandboxNode;
use crate::configs::{
    self, AgentConfig, AgentDocker, AgentHub, AgentMetrics, AgentPaths, AgentTls, DockerStartMode,
    DriverKind, Layout, RoleProbe,
};
use crate::hubsim::owner::EXIT_WITH_PID_ENV;
use crate::timing::SimTiming;
use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::Path;

pub(super) fn sim_command(verb: &str, timing: &SimTiming) -> Vec<String> {
    let mut v: Vec<String> = [
        "{runtime}/bin/hubsim",
        verb,
        "-n",
        "{node}",
        "-j",
        "env:HUBSHIFT_JDBC_URI",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(timing.hubsim_args());
    v
}

/// The agent configuration the sandbox writes for a node whose hub is a
/// container of image repository `repository`.
pub fn docker_agent_config(
    node: &SandboxNode,
    tls: (&Path, &Path, &Path),
    timing: &SimTiming,
    repository: &str,
    network: &str,
    volume: &str,
    command_override: bool,
) -> AgentConfig {
    let mut args = vec!["start".to_string()];
    args.extend(timing.hubsim_args());
    let command = |mode: &str| {
        let mut argv: Vec<String> = [crate::image::HUBSIM, "container", "start", "--mode", mode]
            .iter()
            .map(|s| s.to_string())
            .collect();
        argv.extend(timing.hubsim_args());
        argv
    };
    let (start_mode, create_and_start_command, start_command) = if command_override {
        (DockerStartMode::Command, command("HA_INIT"), command("HA"))
    } else {
        (DockerStartMode::Env, Vec::new(), Vec::new())
    };
    let hub = AgentHub {
        layout: None,
        driver: Some(DriverKind::Docker),
        create_command: Vec::new(),
        start_command: Vec::new(),
        working_dir: None,
        stop_timeout_secs: 10,
        create_timeout_secs: 60,
        env: BTreeMap::new(),
    };
    let docker = AgentDocker {
        container: node.container.clone(),
        image_repository: repository.into(),
        network: network.into(),
        appdata_volume: volume.into(),
        args,
        start_mode,
        create_and_start_command,
        start_command,
        created_pattern: "created HA schema".into(),
    };
    agent_config_around(node, tls, hub, Some(docker))
}

/// The agent configuration the sandbox writes for a node. Its hubs are told
/// to exit with this process, which they outlive otherwise (see
/// [`crate::lifetime`]).
pub fn agent_config(
    node: &SandboxNode,
    tls: (&Path, &Path, &Path),
    timing: &SimTiming,
) -> AgentConfig {
    let hub = AgentHub {
        layout: Some(Layout::Vendor),
        driver: None,
        create_command: sim_command("create", timing),
        start_command: sim_command("start", timing),
        working_dir: Some("{runtime}".into()),
        stop_timeout_secs: 10,
        create_timeout_secs: 60,
        // hubsim ends when the sandbox (this process) does, however it ends.
        env: BTreeMap::from([(
            EXIT_WITH_PID_ENV.to_string(),
            std::process::id().to_string(),
        )]),
    };
    agent_config_around(node, tls, hub, None)
}

/// An agent configuration for `node`: listen address, TLS, paths, the
/// given `[hub]` (and `[docker]`), and the log role probe hubsim's output
/// calls for.
pub fn agent_config_around(
    node: &SandboxNode,
    tls: (&Path, &Path, &Path),
    hub: AgentHub,
    docker: Option<AgentDocker>,
) -> AgentConfig {
    AgentConfig {
        listen: "127.0.0.1:0".into(),
        tls: AgentTls {
            cert: tls.0.to_path_buf(),
            key: tls.1.to_path_buf(),
            client_ca: tls.2.to_path_buf(),
            allowed_clients: vec![CONTROLLER_NAME.into()],
        },
        paths: AgentPaths {
            state_dir: node.state_dir.clone(),
            install_root: node.install_root.clone(),
            appdata: node.appdata.clone(),
        },
        hub,
        docker,
        role_probe: RoleProbe::hubsim_log(),
        metrics: Some(AgentMetrics {
            listen: "127.0.0.1:0".into(),
        }),
    }
}

/// Writes `value` as TOML to `path`, after a comment line.
pub fn write_toml<T: serde::Serialize>(
    path: &Path,
    comment: &str,
    value: &T,
) -> Result<(), SandboxError> {
    let text = configs::to_toml(comment, value).map_err(|e| SandboxError::Toml {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    std::fs::write(path, text).map_err(io(format!("writing {}", path.display())))
}

/// The hub settings the sandbox gives each node: appData bound to the
/// agent's configured appdata, `directories.storeForwardData` unset (so
/// store-and-forward files live in the runtime directory, the case a
/// runtime switch must carry).
pub fn hub_settings(appdata: &Path) -> String {
    serde_json::json!({ "directories": { "appData": appdata } }).to_string() + "\n"
}

/// Writes `<appdata>/intelligencehub-settings.json`, where the agent points
/// the hub (HIGHBYTE_SETTINGS_FILE).
pub fn write_settings(appdata: &Path, json: &str) -> Result<(), SandboxError> {
    let file = appdata.join("intelligencehub-settings.json");
    std::fs::write(&file, json).map_err(io(format!("writing {}", file.display())))
}

/// Unpacks a runtime archive as an operator's existing installation:
/// `runtimes/<version>/` and `current` pointing at it.
pub fn preinstall_runtime(
    install_root: &Path,
    archive: &Path,
    version: &str,
) -> Result<(), SandboxError> {
    let dest = install_root.join("runtimes").join(version);
    std::fs::create_dir_all(&dest).map_err(io(format!("creating {}", dest.display())))?;
    let file =
        std::fs::File::open(archive).map_err(io(format!("opening {}", archive.display())))?;
    hubshift_common::archive::unpack_tar_gz(file, &dest, Default::default())
        .map_err(|e| SandboxError::Agent(format!("unpacking {}: {e}", archive.display())))?;
    let link = install_root.join("current");
    let _ = std::fs::remove_file(&link);
    symlink(Path::new("runtimes").join(version), &link).map_err(io("linking current"))?;
    Ok(())
}
