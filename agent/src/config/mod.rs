//! The agent's TOML configuration (see docs/agent-config.md): the schema
//! (`schema.rs`), the values of keys left out (`defaults.rs`), the command
//! templates (`template.rs`) and the checks a file passes before use
//! (`validate.rs`).

mod defaults;
mod error;
mod schema;
mod template;
mod validate;

pub use error::ConfigError;
pub use schema::*;
pub use template::{PLACEHOLDERS, Vars, check_template, fill, fill_argv, uses};
pub use validate::parse_port;

use std::path::Path;

impl Config {
    /// Reads and validates `file`. `need_tls`: refuse a missing `[tls]`.
    pub fn load(file: &Path, need_tls: bool) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            file: file.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.validate(file, need_tls)?;
        Ok(config)
    }

    /// Usable but unwise settings, each naming its key.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (key, argv) in [
            ("hub.create_command", &self.hub.create_command),
            ("hub.start_command", &self.hub.start_command),
        ] {
            if uses(argv, "jdbc") {
                out.push(format!(
                    "key `{key}`: {{jdbc}} puts the JDBC URI and its password on the hub's command line, \
                     readable in /proc by every local user (unless ProtectProc= or hidepid hides it); \
                     pass `-j env:HUBSHIFT_JDBC_URI` instead, the agent sets that variable"
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;
    use std::path::PathBuf;

    fn vars() -> Vars<'static> {
        Vars {
            runtime: "/r",
            node: "n1",
            jdbc: "jdbc:x",
            appdata: "/a",
        }
    }

    #[test]
    fn templates_fill_and_refuse_unknown_placeholders() {
        assert_eq!(fill("{runtime}/lib/*:{{x}}", vars()), "/r/lib/*:{x}");
        assert_eq!(fill("-n{node}-j{jdbc}{appdata}", vars()), "-nn1-jjdbc:x/a");
        assert!(check_template("{runtme}").unwrap_err().contains("{runtme}"));
        assert!(check_template("{runtime").is_err());
        assert!(check_template("x}").is_err());
    }

    fn write(dir: &Path, body: &str) -> PathBuf {
        let f = dir.join("agent.toml");
        std::fs::write(&f, body).unwrap();
        f
    }

    fn minimal(dir: &Path) -> String {
        format!(
            "listen = \"127.0.0.1:0\"\n[paths]\nstate_dir = \"{0}/state\"\ninstall_root = \"{0}/opt\"\nappdata = \"{0}/opt/appData\"\n[hub]\ncreate_command = [\"{{runtime}}/bin/hub\", \"create\"]\nstart_command = [\"{{runtime}}/bin/hub\", \"start\", \"-n\", \"{{node}}\"]\n",
            dir.display()
        )
    }

    #[test]
    fn minimal_config_loads_without_tls_only_when_allowed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("opt")).unwrap();
        let f = write(dir.path(), &minimal(dir.path()));
        let c = Config::load(&f, false).unwrap();
        assert_eq!(c.hub.stop_timeout_secs, 60);
        assert_eq!(c.role_probe.kind, ProbeKind::Log);
        let long = write(
            dir.path(),
            &minimal(dir.path()).replace("[hub]\n", "[hub]\nstop_timeout_secs = 3601\n"),
        );
        let err = Config::load(&long, false).unwrap_err().to_string();
        assert!(
            err.contains("hub.stop_timeout_secs") && err.contains("3600"),
            "{err}"
        );
        let err = Config::load(&f, true).unwrap_err().to_string();
        assert!(err.contains("`tls`") && err.contains("agent.toml"), "{err}");
    }

    #[test]
    fn metrics_need_an_address_and_a_port_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("opt")).unwrap();
        let with = |metrics: &str| {
            write(
                dir.path(),
                &minimal(dir.path()).replace(
                    "listen = \"127.0.0.1:0\"\n",
                    &format!("listen = \"127.0.0.1:7443\"\n{metrics}"),
                ),
            )
        };
        let c = Config::load(&with(""), false).unwrap();
        assert!(c.metrics.is_none(), "metrics are off unless configured");
        let f = with("[metrics]\nlisten = \"127.0.0.1:9464\"\n");
        let c = Config::load(&f, false).unwrap();
        assert_eq!(c.metrics.map(|m| m.max_connections), Some(8));
        for (metrics, says) in [
            ("[metrics]\nlisten = \"127.0.0.1:7443\"\n", "gRPC port"),
            ("[metrics]\nlisten = \"localhost\"\n", "not an address:port"),
            (
                "[metrics]\nlisten = \"127.0.0.1:9464\"\nmax_connections = 0\n",
                "1..=1024",
            ),
        ] {
            let err = Config::load(&with(metrics), false).unwrap_err().to_string();
            assert!(err.contains("metrics.") && err.contains(says), "{err}");
        }
    }

    #[test]
    fn packaged_examples_parse_and_their_templates_and_patterns_are_valid() {
        for text in [
            include_str!("../../../packaging/agent.example.toml"),
            include_str!("../../../packaging/agent.sim.example.toml"),
            include_str!("../../../packaging/agent.docker.example.toml"),
        ] {
            let c: Config = toml::from_str(text).unwrap();
            let h = &c.hub;
            for t in h
                .create_command
                .iter()
                .chain(&h.start_command)
                .chain([&h.working_dir])
            {
                check_template(t).unwrap();
            }
            Regex::new(&c.role_probe.active_pattern).unwrap();
            Regex::new(&c.role_probe.standby_pattern).unwrap();
            assert!(c.tls.is_some());
            assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        }
    }

    #[test]
    fn jdbc_on_a_command_line_is_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("opt")).unwrap();
        let base = minimal(dir.path());
        let f = write(dir.path(), &base);
        assert!(Config::load(&f, false).unwrap().warnings().is_empty());
        let f = write(
            dir.path(),
            &base.replace("\"{node}\"]", "\"{node}\", \"-j\", \"{jdbc}\"]"),
        );
        let w = Config::load(&f, false).unwrap().warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("hub.start_command") && w[0].contains("env:HUBSHIFT_JDBC_URI"));
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("opt")).unwrap();
        let base = minimal(dir.path());
        let cases = [
            (base.replace("\"start\"", "\"{nod}\""), "hub.start_command"),
            (
                format!("{base}[role_probe]\nactive_pattern = \"(\"\n"),
                "role_probe.active_pattern",
            ),
            (format!("{base}bogus = 1\n"), "bogus"),
            (base.replace("opt/appData", "nope/appData"), "paths.appdata"),
            (
                format!(
                    "{base}[tls]\ncert = \"/nonexistent.crt\"\nkey = \"/k\"\nclient_ca = \"/c\"\nallowed_clients = [\"x\"]\n"
                ),
                "tls.cert",
            ),
            (
                base.replace("start_command", "strat_command"),
                "strat_command",
            ),
            (
                format!("{base}[limits]\nmax_concurrent_uploads = 0\n"),
                "limits.max_concurrent_uploads",
            ),
            (
                format!("{base}[limits]\nmax_connections = 1\n"),
                "limits.max_connections",
            ),
            (
                format!("{base}[limits]\ntls_handshake_timeout_secs = 0\n"),
                "limits.tls_handshake_timeout_secs",
            ),
            (
                format!("{base}[limits]\nmax_conections = 9\n"),
                "max_conections",
            ),
        ];
        for (body, key) in cases {
            let f = write(dir.path(), &body);
            let err = Config::load(&f, false).unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
            assert!(err.contains("agent.toml"), "{err}");
        }
    }

    fn docker_base(dir: &Path) -> String {
        format!(
            "listen = \"127.0.0.1:0\"\n[paths]\nstate_dir = \"{0}/state\"\ninstall_root = \"{0}/opt\"\nappdata = \"{0}/opt/appData\"\n[hub]\ndriver = \"docker\"\n[docker]\ncontainer = \"hub\"\nimage_repository = \"highbyte\"\n",
            dir.display()
        )
    }

    #[test]
    fn docker_driver_keys_are_checked_and_errors_name_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("opt")).unwrap();
        let base = docker_base(dir.path());
        let f = write(dir.path(), &base);
        let c = Config::load(&f, false).unwrap();
        assert_eq!(c.hub.driver, DriverKind::Docker);
        let d = c.docker.unwrap();
        assert_eq!(d.appdata_target, "/usr/local/highbyte/appData");
        assert_eq!(d.runtime_target, "/usr/local/highbyte/runtime");
        assert_eq!(d.args, ["start"]);
        assert_eq!(d.start_mode, DockerStartMode::Env);

        let process = minimal(dir.path());
        let cases = [
            (base.replace("driver = \"docker\"\n", ""), "docker"),
            (base.replace("[docker]", "[dockr]"), "dockr"),
            (
                format!("{process}[docker]\ncontainer = \"x\"\nimage_repository = \"y\"\n"),
                "`docker`",
            ),
            (
                base.replace(
                    "[docker]\ncontainer = \"hub\"\nimage_repository = \"highbyte\"\n",
                    "",
                ),
                "`docker`",
            ),
            (base.replace("\"hub\"", "\"../hub\""), "docker.container"),
            (
                base.replace("\"highbyte\"", "\"HighByte:4.5\""),
                "docker.image_repository",
            ),
            (
                format!("{base}runtime_target = \"runtime\"\n"),
                "docker.runtime_target",
            ),
            (format!("{base}ports = [\"99999:1\"]\n"), "docker.ports"),
            (format!("{base}ports = [\"1:2/sctp\"]\n"), "docker.ports"),
            (
                format!("{base}env = {{ START_MODE = \"x\" }}\n"),
                "docker.env",
            ),
            (
                format!("{base}env = {{ A = \"{{appdata}}\" }}\n"),
                "docker.env",
            ),
            (
                format!("{base}args = [\"start\", \"{{jdbc}}\"]\n"),
                "docker.args",
            ),
            (
                format!("{base}start_mode = \"command\"\n"),
                "docker.create_and_start_command",
            ),
            (
                format!("{base}created_pattern = \"(\"\n"),
                "docker.created_pattern",
            ),
            (
                format!("{base}socket = \"tcp://1.2.3.4:2375\"\n"),
                "docker.socket",
            ),
            (
                base.replace("[hub]\n", "[hub]\nstart_command = [\"x\"]\n"),
                "hub.start_command",
            ),
            (
                base.replace("[hub]\n", "[hub]\nenv = { A = \"b\" }\n"),
                "hub.env",
            ),
        ];
        for (body, key) in cases {
            let f = write(dir.path(), &body);
            let err = Config::load(&f, false).unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn ports_parse_like_docker_run_p() {
        assert_eq!(
            parse_port("8885").unwrap(),
            (String::new(), String::new(), "8885/tcp".into())
        );
        assert_eq!(
            parse_port("127.0.0.1:18885:8885/udp").unwrap(),
            ("127.0.0.1".into(), "18885".into(), "8885/udp".into())
        );
        assert!(parse_port("a:b").is_err());
        assert!(parse_port("1:2:3:4").is_err());
        assert!(parse_port("nothere:1:2").is_err());
    }
}
