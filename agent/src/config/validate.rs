//! The checks a loaded configuration passes before the agent uses it;
//! every error names the key and the file.

use super::error::ConfigError;
use super::schema::*;
use super::template::{Vars, check_template, fill, uses};
use regex::Regex;
use std::net::SocketAddr;
use std::path::Path;

impl Config {
    /// Every check of the file, in the order the keys appear in it.
    pub(super) fn validate(&self, file: &Path, need_tls: bool) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: String| ConfigError::Key {
            file: file.to_path_buf(),
            key: key.to_string(),
            reason,
        };
        self.listen.parse::<SocketAddr>().map_err(|e| {
            bad(
                "listen",
                format!("{:?} is not an address:port ({e})", self.listen),
            )
        })?;

        if let Some(m) = &self.metrics {
            let metrics = m.listen.parse::<SocketAddr>().map_err(|e| {
                bad(
                    "metrics.listen",
                    format!("{:?} is not an address:port ({e})", m.listen),
                )
            })?;
            let grpc = self.listen.parse::<SocketAddr>().ok();
            if metrics.port() != 0 && grpc.is_some_and(|g| g.port() == metrics.port()) {
                return Err(bad(
                    "metrics.listen",
                    format!(
                        "{:?} is the gRPC port (`listen`): give the metrics a port of their own",
                        m.listen
                    ),
                ));
            }
            if m.max_connections == 0 || m.max_connections > 1024 {
                return Err(bad(
                    "metrics.max_connections",
                    format!("{} is outside 1..=1024", m.max_connections),
                ));
            }
        }

        match &self.tls {
            None if need_tls => {
                return Err(bad(
                    "tls",
                    "missing: mTLS is required (use --insecure-listen only for local development)"
                        .into(),
                ));
            }
            None => {}
            Some(tls) => {
                for (key, path) in [
                    ("tls.cert", &tls.cert),
                    ("tls.key", &tls.key),
                    ("tls.client_ca", &tls.client_ca),
                ] {
                    let meta = std::fs::metadata(path)
                        .map_err(|e| bad(key, format!("{}: {e}", path.display())))?;
                    if !meta.is_file() {
                        return Err(bad(key, format!("{} is not a file", path.display())));
                    }
                    let text = std::fs::read(path)
                        .map_err(|e| bad(key, format!("{}: {e}", path.display())))?;
                    if !String::from_utf8_lossy(&text).contains("-----BEGIN ") {
                        return Err(bad(key, format!("{} holds no PEM block", path.display())));
                    }
                }
                if tls.allowed_clients.is_empty() {
                    return Err(bad(
                        "tls.allowed_clients",
                        "empty: no controller could call this agent".into(),
                    ));
                }
                if let Some(c) = tls.allowed_clients.iter().find(|c| c.trim().is_empty()) {
                    return Err(bad("tls.allowed_clients", format!("blank entry {c:?}")));
                }
            }
        }

        let p = &self.paths;
        for (key, path) in [
            ("paths.state_dir", &p.state_dir),
            ("paths.install_root", &p.install_root),
            ("paths.appdata", &p.appdata),
        ] {
            check_dir_path(path).map_err(|r| bad(key, r))?;
        }
        for (i, path) in p.extra_backup_dirs.iter().enumerate() {
            let key = format!("paths.extra_backup_dirs[{i}]");
            if !path.is_absolute() {
                return Err(bad(
                    &key,
                    format!("{} is not an absolute path", path.display()),
                ));
            }
            if !path.is_dir() {
                return Err(bad(&key, format!("{} is not a directory", path.display())));
            }
        }
        hubshift_common::names::validate_name("file name", &p.certificate_store)
            .map_err(|e| bad("paths.certificate_store", e.to_string()))?;

        let h = &self.hub;
        match (h.driver, &self.docker) {
            (DriverKind::Process, Some(_)) => {
                return Err(bad(
                    "docker",
                    "only used with [hub] driver = \"docker\"".into(),
                ));
            }
            (DriverKind::Process, None) => {
                for (key, argv) in [
                    ("hub.create_command", &h.create_command),
                    ("hub.start_command", &h.start_command),
                ] {
                    if argv.is_empty() || argv[0].trim().is_empty() {
                        return Err(bad(key, "must name a program".into()));
                    }
                }
            }
            (DriverKind::Docker, None) => {
                return Err(bad(
                    "docker",
                    "missing: [hub] driver = \"docker\" needs the container template".into(),
                ));
            }
            (DriverKind::Docker, Some(d)) => {
                for (key, argv) in [
                    ("hub.create_command", &h.create_command),
                    ("hub.start_command", &h.start_command),
                    ("hub.stop_command", &h.stop_command),
                ] {
                    if !argv.is_empty() {
                        return Err(bad(
                            key,
                            "not used with driver \"docker\" (see [docker])".into(),
                        ));
                    }
                }
                if !h.env.is_empty() {
                    return Err(bad(
                        "hub.env",
                        "not used with driver \"docker\" (use docker.env)".into(),
                    ));
                }
                d.validate(&bad)?;
            }
        }
        for (key, argv) in [
            ("hub.create_command", &h.create_command),
            ("hub.start_command", &h.start_command),
            ("hub.stop_command", &h.stop_command),
            ("role_probe.command", &self.role_probe.command),
        ] {
            for a in argv.iter() {
                check_template(a).map_err(|r| bad(key, r))?;
            }
        }
        check_template(&h.working_dir).map_err(|r| bad("hub.working_dir", r))?;
        let probe_path = std::slice::from_ref(&self.role_probe.path);
        check_template(&self.role_probe.path).map_err(|r| bad("role_probe.path", r))?;
        if uses(probe_path, "jdbc") || uses(probe_path, "node") {
            return Err(bad(
                "role_probe.path",
                "may only use {runtime} and {appdata}".into(),
            ));
        }
        let filled = fill(
            &self.role_probe.path,
            Vars {
                runtime: "/r",
                node: "",
                jdbc: "",
                appdata: "/a",
            },
        );
        if !Path::new(&filled).is_absolute() {
            return Err(bad(
                "role_probe.path",
                "must be absolute or start with {appdata} or {runtime}".into(),
            ));
        }
        if self.role_probe.json_field.as_deref() == Some("") {
            return Err(bad(
                "role_probe.json_field",
                "empty: leave it out to match whole lines".into(),
            ));
        }
        for (key, argv) in [
            ("hub.stop_command", &h.stop_command),
            ("role_probe.command", &self.role_probe.command),
        ] {
            if uses(argv, "jdbc") || uses(argv, "node") {
                return Err(bad(
                    key,
                    "may only use {runtime} and {appdata} (node and JDBC URI are not kept)".into(),
                ));
            }
        }
        if uses(std::slice::from_ref(&h.working_dir), "jdbc") {
            return Err(bad("hub.working_dir", "must not use {jdbc}".into()));
        }
        for k in h.env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(bad("hub.env", format!("invalid variable name {k:?}")));
            }
            if k == "HUBSHIFT_JDBC_URI"
                || k == "HUBSHIFT_NODE"
                || k == crate::hubfiles::names::SETTINGS_ENV
            {
                return Err(bad("hub.env", format!("{k} is set by the agent")));
            }
        }
        if h.log_max_bytes < 4096 {
            return Err(bad("hub.log_max_bytes", "must be at least 4096".into()));
        }
        if h.stop_timeout_secs == 0 {
            return Err(bad("hub.stop_timeout_secs", "must be at least 1".into()));
        }
        // The same bound as a Stop request's own timeout.
        let max_stop = u64::from(super::schema::MAX_STOP_TIMEOUT_SECS);
        if h.stop_timeout_secs > max_stop {
            return Err(bad(
                "hub.stop_timeout_secs",
                format!("must be at most {max_stop}"),
            ));
        }
        if h.create_timeout_secs == 0 {
            return Err(bad("hub.create_timeout_secs", "must be at least 1".into()));
        }

        let r = &self.role_probe;
        Regex::new(&r.active_pattern).map_err(|e| {
            bad(
                "role_probe.active_pattern",
                format!("does not compile: {e}"),
            )
        })?;
        Regex::new(&r.standby_pattern).map_err(|e| {
            bad(
                "role_probe.standby_pattern",
                format!("does not compile: {e}"),
            )
        })?;
        if r.kind == ProbeKind::Command && r.command.is_empty() {
            return Err(bad(
                "role_probe.command",
                "must name a program when kind = \"command\"".into(),
            ));
        }
        if r.timeout_secs == 0 {
            return Err(bad("role_probe.timeout_secs", "must be at least 1".into()));
        }
        if self.limits.max_archive_bytes == 0 {
            return Err(bad("limits.max_archive_bytes", "must be positive".into()));
        }
        let l = &self.limits;
        for (key, value) in [
            ("limits.max_archive_entries", l.max_archive_entries),
            (
                "limits.max_concurrent_uploads",
                l.max_concurrent_uploads.into(),
            ),
            (
                "limits.upload_idle_timeout_secs",
                l.upload_idle_timeout_secs,
            ),
            ("limits.max_connections", l.max_connections.into()),
            (
                "limits.tls_handshake_timeout_secs",
                l.tls_handshake_timeout_secs,
            ),
            ("limits.keepalive_interval_secs", l.keepalive_interval_secs),
            ("limits.keepalive_timeout_secs", l.keepalive_timeout_secs),
        ] {
            if value == 0 {
                return Err(bad(key, "must be positive".into()));
            }
        }
        if l.max_connections < 2 {
            return Err(bad(
                "limits.max_connections",
                "must be at least 2 (one controller and room for a newcomer)".into(),
            ));
        }
        Ok(())
    }
}

impl DockerSection {
    fn validate(&self, bad: &dyn Fn(&str, String) -> ConfigError) -> Result<(), ConfigError> {
        if !self.socket.starts_with('/') && !self.socket.starts_with("unix:///") {
            return Err(bad(
                "docker.socket",
                format!("{:?} is not a unix socket path", self.socket),
            ));
        }
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 128
                && n.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        };
        if !name_ok(&self.container) {
            return Err(bad(
                "docker.container",
                format!(
                    "{:?} is not a container name ([A-Za-z0-9][A-Za-z0-9_.-]*)",
                    self.container
                ),
            ));
        }
        if !self.appdata_volume.is_empty() && !name_ok(&self.appdata_volume) {
            return Err(bad(
                "docker.appdata_volume",
                format!("{:?} is not a volume name", self.appdata_volume),
            ));
        }
        let repo_ok = !self.image_repository.is_empty()
            && self.image_repository.len() <= 200
            && self
                .image_repository
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-/".contains(&b))
            && !self.image_repository.starts_with(['.', '-', '/', '_']);
        if !repo_ok {
            return Err(bad(
                "docker.image_repository",
                format!(
                    "{:?} is not an image repository (lowercase letters, digits, '._-/'; no tag)",
                    self.image_repository
                ),
            ));
        }
        if !self.appdata_target.starts_with('/') {
            return Err(bad(
                "docker.appdata_target",
                format!("{:?} is not an absolute path", self.appdata_target),
            ));
        }
        if !self.runtime_target.starts_with('/') || self.runtime_target.contains('\0') {
            return Err(bad(
                "docker.runtime_target",
                format!("{:?} is not an absolute path", self.runtime_target),
            ));
        }
        for p in &self.ports {
            parse_port(p).map_err(|r| bad("docker.ports", r))?;
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(bad("docker.env", format!("invalid variable name {k:?}")));
            }
            if ["HUBSHIFT_JDBC_URI", "HUBSHIFT_NODE", "START_MODE"].contains(&k.as_str()) {
                return Err(bad("docker.env", format!("{k} is set by the agent")));
            }
            check_template(v).map_err(|r| bad("docker.env", r))?;
            let one = std::slice::from_ref(v);
            if uses(one, "runtime") || uses(one, "appdata") {
                return Err(bad(
                    "docker.env",
                    format!("{k}: only {{node}} and {{jdbc}} are known in a container"),
                ));
            }
        }
        for (key, argv) in [
            (
                "docker.create_and_start_command",
                &self.create_and_start_command,
            ),
            ("docker.start_command", &self.start_command),
            ("docker.args", &self.args),
        ] {
            for a in argv {
                check_template(a).map_err(|r| bad(key, r))?;
            }
            if uses(argv, "jdbc") || uses(argv, "runtime") || uses(argv, "appdata") {
                return Err(bad(
                    key,
                    "may only use {node} (the JDBC URI is in the environment variable HUBSHIFT_JDBC_URI)"
                        .into(),
                ));
            }
        }
        if self.start_mode == DockerStartMode::Command {
            for (key, argv) in [
                (
                    "docker.create_and_start_command",
                    &self.create_and_start_command,
                ),
                ("docker.start_command", &self.start_command),
            ] {
                if argv.is_empty() {
                    return Err(bad(
                        key,
                        "must name a program when start_mode = \"command\"".into(),
                    ));
                }
            }
        }
        if self.start_mode_start.is_empty() || self.start_mode_start.contains('\0') {
            return Err(bad("docker.start_mode_start", "must not be empty".into()));
        }
        if !self.created_pattern.is_empty() {
            Regex::new(&self.created_pattern)
                .map_err(|e| bad("docker.created_pattern", format!("does not compile: {e}")))?;
        }
        if self.log_tail_lines == 0 {
            return Err(bad("docker.log_tail_lines", "must be positive".into()));
        }
        Ok(())
    }
}

/// A published port: (host ip, host port, container port with protocol).
/// `8885`, `8885/udp`, `18885:8885`, `127.0.0.1:18885:8885/tcp`.
pub fn parse_port(spec: &str) -> Result<(String, String, String), String> {
    let (addr, proto) = match spec.rsplit_once('/') {
        Some((a, p)) if p == "tcp" || p == "udp" => (a, p),
        Some(_) => return Err(format!("{spec:?}: protocol must be tcp or udp")),
        None => (spec, "tcp"),
    };
    let parts: Vec<&str> = addr.split(':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [c] => ("", "", *c),
        [h, c] => ("", *h, *c),
        [ip, h, c] => (*ip, *h, *c),
        _ => return Err(format!("{spec:?} is not [ip:]host:container[/proto]")),
    };
    let port_ok = |p: &str| p.parse::<u16>().is_ok_and(|n| n > 0);
    if !port_ok(container) || (!host.is_empty() && !port_ok(host)) {
        return Err(format!("{spec:?}: ports are numbers from 1 to 65535"));
    }
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(format!("{spec:?}: {ip:?} is not an IP address"));
    }
    Ok((
        ip.to_string(),
        host.to_string(),
        format!("{container}/{proto}"),
    ))
}

/// A managed directory: absolute; it exists as a directory, or its parent
/// does (the agent creates it).
fn check_dir_path(path: &Path) -> Result<(), String> {
    if !path.is_absolute() {
        return Err(format!("{} is not an absolute path", path.display()));
    }
    if path.exists() {
        if !path.is_dir() {
            return Err(format!("{} is not a directory", path.display()));
        }
        return Ok(());
    }
    match path.parent() {
        Some(parent) if parent.is_dir() => Ok(()),
        _ => Err(format!(
            "{} does not exist and neither does its parent directory",
            path.display()
        )),
    }
}
