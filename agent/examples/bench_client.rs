//! Drives a real `hubshift-agent` for bench/agent-bench.sh: mints a PKI,
//! starts the agent (mTLS on loopback) with appdata = the given tree, then
//! times Backup and an InstallRuntime upload, and reads the agent's peak RSS
//! (VmHWM). Prints `key=value` lines.
//!
//! Usage: bench_client AGENT_BIN APPDATA_DIR RUNTIME_ARCHIVE WORK_DIR

use hubshift_common::pb::hub_agent_client::HubAgentClient;
use hubshift_common::pb::{
    ArchiveFormat, BackupRequest, InstallRuntimeRequest, RuntimeHeader,
    install_runtime_request::Item,
};
use hubshift_common::pki::{Authority, Usage, write_pair};
use hubshift_common::tls::TlsFiles;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 5,
        "usage: bench_client AGENT_BIN APPDATA_DIR RUNTIME_ARCHIVE WORK_DIR"
    );
    let (agent_bin, appdata, archive, work) = (
        PathBuf::from(&args[1]),
        PathBuf::from(&args[2]),
        PathBuf::from(&args[3]),
        PathBuf::from(&args[4]),
    );
    let certs = work.join("certs");
    std::fs::create_dir_all(&certs)?;
    let ca = Authority::new("bench CA")?;
    std::fs::write(certs.join("ca.crt"), &ca.ca().cert_pem)?;
    let server = ca.issue("agent", &["localhost".into()], Usage::Server)?;
    write_pair(&certs, "agent", &server, true)?;
    let client = ca.issue("hubshift-controller", &[], Usage::Client)?;
    write_pair(&certs, "controller", &client, true)?;
    let state = work.join("state");
    let opt = work.join("opt");
    std::fs::create_dir_all(&opt)?;
    let config = work.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:0"
[tls]
cert = "{c}/agent.crt"
key = "{c}/agent.key"
client_ca = "{c}/ca.crt"
allowed_clients = ["hubshift-controller"]
[paths]
state_dir = "{state}"
install_root = "{opt}"
appdata = "{appdata}"
[hub]
create_command = ["/bin/true"]
start_command = ["/bin/true"]
[limits]
max_archive_bytes = 8589934592
"#,
            c = certs.display(),
            state = state.display(),
            opt = opt.display(),
            appdata = appdata.display(),
        ),
    )?;
    let mut child = Command::new(&agent_bin)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(work.join("agent.stderr"))?)
        .spawn()?;
    let pid = child.id();
    let addr_file = state.join("agent.addr");
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = loop {
        if let Ok(a) = std::fs::read_to_string(&addr_file) {
            break a.trim().to_string();
        }
        anyhow::ensure!(Instant::now() < deadline, "agent did not start");
        if let Some(s) = child.try_wait()? {
            anyhow::bail!("agent exited: {s}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let result = run(&addr, &certs, &archive, pid).await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

async fn run(addr: &str, certs: &Path, archive: &Path, pid: u32) -> anyhow::Result<()> {
    let files = TlsFiles {
        cert: certs.join("controller.crt"),
        key: certs.join("controller.key"),
        ca: certs.join("ca.crt"),
    };
    let channel = Channel::from_shared(format!("https://{addr}"))?
        .tls_config(files.client_config("localhost")?)?
        .connect()
        .await?;
    let mut c = HubAgentClient::new(channel);
    println!("rss_idle_kib={}", vm_hwm_kib(pid));

    let t = Instant::now();
    let b = c
        .backup(BackupRequest {
            id: "bench".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let secs = t.elapsed().as_secs_f64();
    println!("backup_secs={secs:.3}");
    println!("backup_bytes={}", b.size_bytes);
    println!("backup_path={}", b.path);
    println!("rss_after_backup_kib={}", vm_hwm_kib(pid));

    // Upload: hash first (client side, not timed), then stream.
    let mut f = std::fs::File::open(archive)?;
    let size = f.metadata()?.len();
    let sha = hubshift_common::digest::sha256_file(archive)?.0;
    let (tx, rx) = tokio::sync::mpsc::channel::<InstallRuntimeRequest>(8);
    let header = RuntimeHeader {
        version: "bench-1".into(),
        sha256: sha,
        size_bytes: size,
        format: ArchiveFormat::TarGz as i32,
        activate: false,
    };
    let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let _ = tx.blocking_send(InstallRuntimeRequest {
            item: Some(Item::Header(header)),
        });
        let mut buf = vec![0u8; hubshift_common::CHUNK_SIZE];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            if tx
                .blocking_send(InstallRuntimeRequest {
                    item: Some(Item::Chunk(buf[..n].to_vec())),
                })
                .is_err()
            {
                return Ok(());
            }
        }
    });
    let t = Instant::now();
    c.install_runtime(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?;
    let secs = t.elapsed().as_secs_f64();
    reader.await??;
    println!("upload_bytes={size}");
    println!("upload_secs={secs:.3}");
    println!("rss_peak_kib={}", vm_hwm_kib(pid));
    Ok(())
}
