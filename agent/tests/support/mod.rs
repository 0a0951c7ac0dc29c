//! Test harness: a private PKI, a real `hubshift-agent` process with its own
//! directories, mTLS clients, a shell-script hub runtime, and polling.
#![allow(dead_code)]

use flate2::Compression;
use flate2::write::GzEncoder;
use hubshift_common::pb::hub_agent_client::HubAgentClient;
use hubshift_common::pb::{
    ArchiveFormat, InstallRuntimeRequest, RuntimeHeader, install_runtime_request::Item,
};
use hubshift_common::pki::{Authority, Usage, write_pair};
use hubshift_common::tls::TlsFiles;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

pub type Client = HubAgentClient<Channel>;

/// CA, agent server cert, controller and intruder client certs, and a
/// client cert from a foreign CA.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("hubshift test CA").unwrap();
        std::fs::write(dir.path().join("ca.crt"), &ca.ca().cert_pem).unwrap();
        let agent = ca
            .issue(
                "agent-a",
                &["localhost".into(), "127.0.0.1".into()],
                Usage::Server,
            )
            .unwrap();
        write_pair(dir.path(), "agent", &agent, false).unwrap();
        let ctl = ca.issue("hubshift-controller", &[], Usage::Client).unwrap();
        write_pair(dir.path(), "controller", &ctl, false).unwrap();
        let intruder = ca.issue("intruder", &[], Usage::Client).unwrap();
        write_pair(dir.path(), "intruder", &intruder, false).unwrap();
        let foreign_ca = Authority::new("someone else's CA").unwrap();
        let foreign = foreign_ca
            .issue("hubshift-controller", &[], Usage::Client)
            .unwrap();
        write_pair(dir.path(), "foreign", &foreign, false).unwrap();
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Client files for identity `who` (controller, intruder, foreign).
    pub fn client_files(&self, who: &str) -> TlsFiles {
        TlsFiles {
            cert: self.path(&format!("{who}.crt")),
            key: self.path(&format!("{who}.key")),
            ca: self.path("ca.crt"),
        }
    }
}

/// One agent with its own directories; killed (with its hub) on drop.
pub struct Agent {
    pub root: tempfile::TempDir,
    pub pki: Pki,
    pub child: Option<Child>,
    pub addr: String,
    pub runs: u32,
    /// Lines appended to the `[limits]` section of the config.
    pub extra_limits: String,
    /// RLIMIT_NOFILE (soft and hard) of the agent process.
    pub nofile: Option<u64>,
}

pub const EXTRA_CONFIG_DEFAULT: &str = "";

impl Agent {
    pub fn state(&self) -> PathBuf {
        self.root.path().join("state")
    }
    pub fn install_root(&self) -> PathBuf {
        self.root.path().join("opt")
    }
    pub fn appdata(&self) -> PathBuf {
        self.root.path().join("opt/appData")
    }
    pub fn snf(&self) -> PathBuf {
        self.root.path().join("snf")
    }
    pub fn config_path(&self) -> PathBuf {
        self.root.path().join("agent.toml")
    }
    pub fn stderr_path(&self, run: u32) -> PathBuf {
        self.root.path().join(format!("agent-{run}.stderr"))
    }

    /// Creates the directories and the config, then starts the agent.
    pub fn start() -> Agent {
        Agent::start_with("", None)
    }

    /// `start` with extra `[limits]` lines and an open-files limit.
    pub fn start_with(extra_limits: &str, nofile: Option<u64>) -> Agent {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let root = tempfile::Builder::new()
            .prefix("hubshift-agent-test-")
            .tempdir()
            .unwrap();
        let mut agent = Agent {
            root,
            pki: Pki::new(),
            child: None,
            addr: String::new(),
            runs: 0,
            extra_limits: extra_limits.to_string(),
            nofile,
        };
        std::fs::create_dir_all(agent.appdata()).unwrap();
        std::fs::create_dir_all(agent.snf()).unwrap();
        agent.write_settings(&format!(
            r#"{{"directories": {{"appData": "{}"}}}}"#,
            agent.appdata().display()
        ));
        std::fs::write(agent.config_path(), agent.config_text()).unwrap();
        agent.spawn();
        agent
    }

    /// Writes the hub's settings file in appdata.
    pub fn write_settings(&self, json: &str) {
        std::fs::write(self.appdata().join("intelligencehub-settings.json"), json).unwrap();
    }

    pub fn config_text(&self) -> String {
        let r = self.root.path().display();
        let p = |n: &str| self.pki.path(n).display().to_string();
        format!(
            r#"listen = "127.0.0.1:0"

[tls]
cert = "{cert}"
key = "{key}"
client_ca = "{ca}"
allowed_clients = ["hubshift-controller"]

[paths]
state_dir = "{r}/state"
install_root = "{r}/opt"
appdata = "{r}/opt/appData"
extra_backup_dirs = ["{r}/snf"]

[hub]
create_command = ["{{runtime}}/bin/create", "-n", "{{node}}", "--appdata", "{{appdata}}"]
start_command = ["{{runtime}}/bin/hub", "start", "-n", "{{node}}"]
working_dir = "{{runtime}}"
stop_timeout_secs = 10
create_timeout_secs = 20
env = {{ HUB_EXTRA = "from-config" }}

[role_probe]
kind = "log"
active_pattern = "HA role: active"
standby_pattern = "HA role: standby"

[limits]
max_archive_bytes = 33554432
max_archive_entries = 1000
{extra}"#,
            cert = p("agent.crt"),
            key = p("agent.key"),
            ca = p("ca.crt"),
            extra = self.extra_limits,
        )
    }

    /// Starts (or restarts) the agent process and waits for agent.addr.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none());
        let addr_file = self.state().join("agent.addr");
        let _ = std::fs::remove_file(&addr_file);
        self.runs += 1;
        let stderr = std::fs::File::create(self.stderr_path(self.runs)).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hubshift-agent"));
        if let Some(n) = self.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: only setrlimit between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .args(["run", "--config"])
            .arg(self.config_path())
            .env(
                "RUST_LOG",
                "debug,h2=info,hyper=info,tower=info,rustls=info",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let addr = wait_for("agent.addr", || {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "agent exited early ({status}): {}",
                    std::fs::read_to_string(self.stderr_path(self.runs)).unwrap_or_default()
                );
            }
            std::fs::read_to_string(&addr_file)
                .ok()
                .map(|s| s.trim().to_string())
        });
        self.addr = addr;
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "agent did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub async fn client(&self, who: &str) -> Result<Client, tonic::transport::Error> {
        connect(&self.addr, &self.pki.client_files(who)).await
    }

    pub async fn controller(&self) -> Client {
        self.client("controller").await.unwrap()
    }

    /// Everything the agent wrote to stderr in all its runs.
    pub fn stderr_all(&self) -> String {
        (1..=self.runs)
            .map(|r| {
                let p = self.stderr_path(r);
                std::fs::read_to_string(&p)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
            })
            .collect()
    }

    /// Pids of hub script processes of this agent (found via /proc).
    pub fn hub_pids(&self) -> Vec<u32> {
        let needle = format!("{}/opt/runtimes/", self.root.path().display());
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let zombie = stat
                .rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'));
            if cmd.contains(&needle) && cmd.contains("bin/hub") && !zombie {
                out.push(pid);
            }
        }
        out
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        for pid in self.hub_pids() {
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }
}

pub async fn connect(addr: &str, files: &TlsFiles) -> Result<Client, tonic::transport::Error> {
    let tls = files.client_config("localhost").unwrap();
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(HubAgentClient::new(channel))
}

/// Polls `f` every 50 ms for up to 20 s.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Async variant of `wait_for`.
pub async fn wait_async<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The hub: prints its role, then idles until SIGTERM. Node "exit-7" exits
/// with 7 at once; node "stubborn" ignores SIGTERM.
pub const HUB_SCRIPT: &str = r#"#!/bin/sh
echo "hub $VERSION starting node=$HUBSHIFT_NODE extra=$HUB_EXTRA settings=$HIGHBYTE_SETTINGS_FILE args=$*"
if [ "$HUBSHIFT_NODE" = "exit-7" ]; then echo "bye"; exit 7; fi
if [ "$HUBSHIFT_NODE" = "stubborn" ]; then trap '' TERM; else trap 'echo "hub: TERM"; exit 0' TERM; fi
sleep 0.3
echo "HA role: active"
while true; do sleep 0.1; done
"#;

/// HA create: writes a marker into appdata; fails (printing the URI it got
/// from the environment, which the agent must mask) for node "bad-node";
/// takes two seconds for node "slow-create", fifteen for "very-slow-create".
pub const CREATE_SCRIPT: &str = r#"#!/bin/sh
if [ "$HUBSHIFT_NODE" = "bad-node" ]; then echo "cannot connect to $HUBSHIFT_JDBC_URI" >&2; exit 3; fi
if [ "$HUBSHIFT_NODE" = "slow-create" ]; then sleep 2; fi
if [ "$HUBSHIFT_NODE" = "very-slow-create" ]; then sleep 15; fi
echo "created by $HUBSHIFT_NODE" > "$4/created-marker"
echo "create done"
"#;

/// A tar.gz runtime: bin/hub, bin/create, VERSION.
pub fn runtime_archive(version: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    let mut add = |path: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    add("VERSION", version.as_bytes(), 0o644);
    add(
        "bin/hub",
        HUB_SCRIPT.replace("$VERSION", version).as_bytes(),
        0o755,
    );
    add("bin/create", CREATE_SCRIPT.as_bytes(), 0o755);
    b.into_inner().unwrap().finish().unwrap()
}

/// Uploads `bytes` as a runtime through InstallRuntime.
pub async fn install(
    client: &mut Client,
    version: &str,
    bytes: Vec<u8>,
    sha256: &str,
    format: ArchiveFormat,
    activate: bool,
) -> Result<hubshift_common::pb::InstallRuntimeResponse, tonic::Status> {
    let header = RuntimeHeader {
        version: version.into(),
        sha256: sha256.into(),
        size_bytes: bytes.len() as u64,
        format: format as i32,
        activate,
    };
    let mut msgs = vec![InstallRuntimeRequest {
        item: Some(Item::Header(header)),
    }];
    for c in bytes.chunks(hubshift_common::CHUNK_SIZE) {
        msgs.push(InstallRuntimeRequest {
            item: Some(Item::Chunk(c.to_vec())),
        });
    }
    client
        .install_runtime(tokio_stream::iter(msgs))
        .await
        .map(|r| r.into_inner())
}

/// Every file under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                let bytes = std::fs::read(e.path())
                    .unwrap_or_else(|err| panic!("cannot read {}: {err}", e.path().display()));
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    out.push(e.path());
                }
            }
        }
    }
    out
}

/// A tree as (relative path, kind, bytes or link target), sorted.
pub fn snapshot_tree(dir: &Path) -> Vec<(String, String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            let t = e.file_type().unwrap();
            if t.is_symlink() {
                let l = std::fs::read_link(e.path()).unwrap();
                out.push((rel, "link".into(), l.display().to_string().into_bytes()));
            } else if t.is_dir() {
                out.push((rel, "dir".into(), vec![]));
                stack.push(e.path());
            } else {
                out.push((rel, "file".into(), std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Bytes that do not compress (xorshift).
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}
