//! What the hub's container is made from at a start (the `[docker]`
//! template filled for this version, mode and node) and the labels by
//! which the agent knows it again.

use super::DockerHub;
use super::LABEL_MANAGED;
use crate::clock;
use crate::config::{DockerStartMode, Vars, fill, fill_argv, parse_port};
use crate::driver::StartMode;
use crate::error::{AgentError, Result};
use bollard::models::{ContainerCreateBody, ContainerInspectResponse, HostConfig, PortBinding};
use hubshift_common::redact::Secret;
use std::collections::HashMap;

pub(super) const LABEL_MODE: &str = "hubshift.mode";
pub(super) const LABEL_NODE: &str = "hubshift.node";
pub(super) const LABEL_VERSION: &str = "hubshift.version";
pub(super) const LABEL_STARTED_AT: &str = "hubshift.started_at_unix_ms";
pub(super) const LABEL_PROBE_OFFSET: &str = "hubshift.probe_offset";

/// What one start puts into the container.
pub(super) struct Launch<'a> {
    pub(super) image: &'a str,
    pub(super) version: &'a str,
    pub(super) mode: StartMode,
    pub(super) node: &'a str,
    pub(super) jdbc: &'a Secret,
    pub(super) probe_offset: u64,
}

impl DockerHub {
    /// The container's create request for this start.
    pub(super) fn body(&self, launch: Launch<'_>) -> Result<ContainerCreateBody> {
        let Launch {
            image,
            version,
            mode,
            node,
            jdbc,
            probe_offset,
        } = launch;
        let d = &self.d;
        let vars = Vars {
            runtime: "",
            node,
            jdbc: jdbc.expose(),
            appdata: "",
        };
        let mut env = vec![
            format!("HUBSHIFT_NODE={node}"),
            format!("HUBSHIFT_JDBC_URI={}", jdbc.expose()),
        ];
        env.extend(d.env.iter().map(|(k, v)| format!("{k}={}", fill(v, vars))));
        // An override replaces the image's entrypoint and its arguments, as
        // `docker run --entrypoint` does: the image's own start script is
        // what an older image lacks.
        let (entrypoint, cmd) = match (d.start_mode, mode) {
            (DockerStartMode::Env, _) => {
                let value = if mode == StartMode::CreateAndStart {
                    "HA_INIT"
                } else {
                    d.start_mode_start.as_str()
                };
                env.push(format!("START_MODE={value}"));
                (None, fill_argv(&d.args, vars))
            }
            (DockerStartMode::Command, StartMode::CreateAndStart) => (
                Some(fill_argv(&d.create_and_start_command, vars)),
                Vec::new(),
            ),
            (DockerStartMode::Command, _) => (Some(fill_argv(&d.start_command, vars)), Vec::new()),
        };
        let mut exposed = Vec::new();
        let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for spec in &d.ports {
            let (ip, host, port) = parse_port(spec).map_err(AgentError::Internal)?;
            exposed.push(port.clone());
            if !host.is_empty() {
                bindings
                    .entry(port)
                    .or_insert_with(|| Some(Vec::new()))
                    .get_or_insert_with(Vec::new)
                    .push(PortBinding {
                        host_ip: (!ip.is_empty()).then_some(ip),
                        host_port: Some(host),
                    });
            }
        }
        let source = if d.appdata_volume.is_empty() {
            self.cfg.paths.appdata.display().to_string()
        } else {
            d.appdata_volume.clone()
        };
        let labels = HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_MODE.to_string(), mode.name().to_string()),
            (LABEL_NODE.to_string(), node.to_string()),
            (LABEL_VERSION.to_string(), version.to_string()),
            (
                LABEL_STARTED_AT.to_string(),
                clock::now_unix_ms().to_string(),
            ),
            (LABEL_PROBE_OFFSET.to_string(), probe_offset.to_string()),
        ]);
        Ok(ContainerCreateBody {
            image: Some(image.to_string()),
            entrypoint,
            cmd: (!cmd.is_empty()).then_some(cmd),
            env: Some(env),
            labels: Some(labels),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            host_config: Some(HostConfig {
                binds: Some(vec![format!("{source}:{}", d.appdata_target)]),
                port_bindings: (!bindings.is_empty()).then_some(bindings),
                network_mode: (!d.network.is_empty()).then(|| d.network.clone()),
                ..Default::default()
            }),
            ..Default::default()
        })
    }
}

pub(super) fn label<'a>(c: &'a ContainerInspectResponse, key: &str) -> Option<&'a str> {
    c.config
        .as_ref()?
        .labels
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

pub(super) fn managed(c: &ContainerInspectResponse) -> bool {
    label(c, LABEL_MANAGED) == Some("true")
}

pub(super) fn pid(c: &ContainerInspectResponse) -> u32 {
    c.state
        .as_ref()
        .and_then(|s| s.pid)
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or(0)
}
