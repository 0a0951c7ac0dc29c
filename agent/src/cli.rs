//! Command line: `check-config`, `probe` and `run`, and the server start-up.

use crate::auth::Authorizer;
use crate::config::Config;
use crate::fsutil;
use crate::listener;
use crate::service::AgentService;
use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use hubshift_common::pb::hub_agent_server::HubAgentServer;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Server;
use tracing_subscriber::EnvFilter;

/// Exit code of a bad configuration.
pub const EXIT_BAD_CONFIG: u8 = 2;

/// The hubshift agent: runs on an Intelligence Hub host and serves the
/// controller over mTLS gRPC.
#[derive(Debug, Parser)]
#[command(name = "hubshift-agent", version = hubshift_common::VERSION)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validates a configuration file; exits 2 and names the key when it is bad.
    CheckConfig {
        /// The agent's TOML configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Prints what the role probe sees now: the role it would report, the
    /// last lines that matched and the last that did not. Exit 0 when the
    /// role is known, 1 when not, 2 for a bad configuration.
    Probe {
        /// The agent's TOML configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Serves the gRPC API.
    Run {
        /// The agent's TOML configuration.
        #[arg(long)]
        config: PathBuf,
        /// Serve plain TCP without TLS or client authentication (local development only).
        #[arg(long)]
        insecure_listen: bool,
        /// Log line format on stderr.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // journald and log files get plain text; colours only on a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// What `check-config` shows about the installation as the agent sees it
/// now: the layout, what `{runtime}` resolves to, and whether the hub's
/// settings bind it to the configured appdata (Start refuses otherwise).
fn resolved_paths(cfg: &Config) -> Vec<String> {
    let p = &cfg.paths;
    let mut out = vec![format!("layout: {}", cfg.hub.layout.name())];
    match crate::places::active_version(&p.install_root) {
        None => out.push(format!(
            "runtime: no active runtime ({}/current is not a link into runtimes/)",
            p.install_root.display()
        )),
        Some(v) => match crate::hubfiles::layout::version_runtime_dir(cfg, &v) {
            Ok(dir) => out.push(format!("runtime: {v} -> {{runtime}} = {}", dir.display())),
            Err(e) => out.push(format!("runtime: {v}: {e}")),
        },
    }
    out.push(format!("appdata: {}", p.appdata.display()));
    out.push(format!(
        "settings: {} (the hub gets it as {})",
        crate::hubfiles::settings::settings_file(cfg).display(),
        crate::hubfiles::settings::SETTINGS_ENV
    ));
    match crate::hubfiles::settings::check_active(cfg) {
        Ok(b) if b.store_forward_in_runtime => out.push(format!(
            "store-and-forward: {} (directories.storeForwardData is unset: kept in the runtime directory, \
             backed up and carried across runtime switches; set it inside appdata to keep them there)",
            b.store_forward_dir.display()
        )),
        Ok(b) => out.push(format!(
            "store-and-forward: {}",
            b.store_forward_dir.display()
        )),
        Err(e) => out.push(format!("settings problem (Start refuses): {e}")),
    }
    out
}

/// Entry point after the crypto provider is installed.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => {
            init_tracing(LogFormat::Text);
            match Config::load(&config, false) {
                Ok(cfg) => {
                    for w in cfg.warnings() {
                        eprintln!("hubshift-agent: {}: warning: {w}", config.display());
                    }
                    if cfg.tls.is_none() {
                        println!(
                            "{}: OK, but without [tls]: `run` needs --insecure-listen",
                            config.display()
                        );
                    } else {
                        println!("{}: OK", config.display());
                    }
                    for line in resolved_paths(&cfg) {
                        println!("  {line}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hubshift-agent: {e}");
                    ExitCode::from(EXIT_BAD_CONFIG)
                }
            }
        }
        Command::Probe { config } => {
            init_tracing(LogFormat::Text);
            let cfg = match Config::load(&config, false) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("hubshift-agent: {e}");
                    return ExitCode::from(EXIT_BAD_CONFIG);
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("hubshift-agent: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(probe_now(Arc::new(cfg))) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!(
                        "hubshift-agent: {}",
                        hubshift_common::error_text::one_line(e.as_ref())
                    );
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run {
            config,
            insecure_listen,
            log_format,
        } => {
            init_tracing(log_format);
            let cfg = match Config::load(&config, !insecure_listen) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("hubshift-agent: {e}");
                    return ExitCode::from(EXIT_BAD_CONFIG);
                }
            };
            for w in cfg.warnings() {
                tracing::warn!("{}: {w}", config.display());
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("hubshift-agent: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(Arc::new(cfg), insecure_listen)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{}", hubshift_common::error_text::one_line(e.as_ref()));
                    eprintln!(
                        "hubshift-agent: {}",
                        hubshift_common::error_text::one_line(e.as_ref())
                    );
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `probe`: prints the report of the configured role probe on the hub as
/// it runs now. Returns whether the role is known.
async fn probe_now(cfg: Arc<Config>) -> anyhow::Result<bool> {
    use crate::role::{Probe, Role};
    let probe = Probe::new(&cfg.role_probe).context("role probe patterns")?;
    let drivers = crate::driver::registry::open(cfg.clone())
        .await
        .context("while opening the hub driver")?;
    let cfg = drivers.cfg.clone();
    let view = drivers
        .hub
        .view()
        .await
        .context("while reading the hub's state")?;
    let input = drivers.hub.probe_input().await;
    let report = probe.inspect(&input).await;
    let r = &cfg.role_probe;
    let role = |role: Role| match role {
        Role::Active => "ACTIVE",
        Role::Standby => "STANDBY",
        Role::Unknown => "UNKNOWN",
    };
    println!("probe:    kind = {:?}, reads {}", r.kind, report.source);
    if let Some(field) = &r.json_field {
        println!("          matches the JSON field {field:?} of each line");
    }
    println!(
        "patterns: active = {:?}, standby = {:?}",
        r.active_pattern, r.standby_pattern
    );
    println!(
        "hub:      {:?} (node {:?}, mode {:?})",
        view.state, view.node, view.mode
    );
    println!("role:     {}", role(report.role));
    if let Some(problem) = &report.problem {
        println!("problem:  {problem}");
    }
    println!("last lines that matched (oldest first):");
    if report.matched.is_empty() {
        println!("  (none)");
    }
    for (r, line) in &report.matched {
        println!("  {:<7}  {line}", role(*r));
    }
    println!("last lines that did not match (oldest first):");
    if report.unmatched.is_empty() {
        println!("  (none)");
    }
    for line in &report.unmatched {
        println!("  {line}");
    }
    Ok(report.role != Role::Unknown)
}

async fn shutdown_signal(tx: tokio::sync::watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down (the hub keeps running)"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down (the hub keeps running)"),
    }
    let _ = tx.send(true);
}

async fn serve(cfg: Arc<Config>, insecure: bool) -> anyhow::Result<()> {
    let state = &cfg.paths.state_dir;
    fsutil::ensure_dir(state, 0o700).context("while preparing the state directory")?;
    fsutil::ensure_dir(&state.join("staging"), 0o700).context("while preparing staging")?;
    let drivers = crate::driver::registry::open(cfg.clone())
        .await
        .context("while opening the hub driver")?;
    let cfg = drivers.cfg.clone();
    // After the driver resolved appdata (a named volume's mount point).
    crate::scratch::clean(&cfg);

    let addr: std::net::SocketAddr = cfg.listen.parse().context("listen address")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("while binding {addr}"))?;
    let bound = listener.local_addr()?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(shutdown_signal(tx));
    let counters = crate::metrics::Counters::default();
    // Before agent.addr: whoever waits for it finds metrics.addr too.
    serve_metrics(&cfg, &drivers, &counters, rx.clone()).await?;
    write_addr(state, bound)?;

    // HTTP/2 windows well above h2's 64 KiB default: with 256 KiB chunks the
    // default window costs several round trips per chunk and caps uploads.
    // The windows bound what one connection may buffer in the agent.
    // HTTP/2 pings find a controller that vanished without closing (its
    // streams then fail and their staging is removed).
    let limits = cfg.limits;
    let mut builder = Server::builder()
        .initial_stream_window_size(4 * 1024 * 1024)
        .initial_connection_window_size(8 * 1024 * 1024)
        .max_frame_size(1024 * 1024)
        .http2_keepalive_interval(Some(Duration::from_secs(limits.keepalive_interval_secs)))
        .http2_keepalive_timeout(Some(Duration::from_secs(limits.keepalive_timeout_secs)));
    // TLS is done by the listener (handshake timeout, connection cap), not by tonic.
    let tls = match (&cfg.tls, insecure) {
        (Some(tls), false) => Some((
            listener::tls_config(tls).context("while loading the TLS files")?,
            Authorizer::new(tls.allowed_clients.clone()),
        )),
        _ => {
            tracing::warn!(
                "!!! --insecure-listen: serving plain TCP WITHOUT TLS OR CLIENT AUTHENTICATION on {bound}; \
                 anyone who can reach this port can stop the hub and replace its runtime. \
                 Use only for local development. !!!"
            );
            None
        }
    };
    listener::raise_nofile_limit(limits.max_connections);

    drivers.hub.spawn_housekeeping(rx.clone());
    let service = AgentService::new(cfg.clone(), drivers, counters.clone());
    tracing::info!(
        address = %bound,
        version = hubshift_common::VERSION,
        tls = !insecure,
        max_connections = limits.max_connections,
        max_concurrent_uploads = limits.max_concurrent_uploads,
        "hubshift-agent serving"
    );
    let mut rx2 = rx;
    let stop = async move {
        let _ = rx2.changed().await;
    };
    let served = match tls {
        Some((tls_cfg, authorizer)) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls_cfg);
            let incoming =
                listener::incoming(listener, limits, counters, move |tcp| acceptor.accept(tcp));
            let server =
                HubAgentServer::with_interceptor(service, move |req| authorizer.check(req));
            builder
                .add_service(server)
                .serve_with_incoming_shutdown(incoming, stop)
                .await
        }
        None => {
            let authorizer = Authorizer::insecure();
            let incoming =
                listener::incoming(listener, limits, counters, |tcp| async move { Ok(tcp) });
            let server =
                HubAgentServer::with_interceptor(service, move |req| authorizer.check(req));
            builder
                .add_service(server)
                .serve_with_incoming_shutdown(incoming, stop)
                .await
        }
    };
    served.context("while serving")?;
    // Nothing else to join: the hub is deliberately left running and is
    // re-adopted at the next start.
    tracing::info!("stopped");
    Ok(())
}

/// Starts `/metrics` and `/healthz` when `[metrics]` is configured; its
/// address is written to `metrics.addr` in the state directory.
async fn serve_metrics(
    cfg: &Arc<Config>,
    drivers: &crate::driver::Drivers,
    counters: &crate::metrics::Counters,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let Some(m) = &cfg.metrics else {
        return Ok(());
    };
    let addr: std::net::SocketAddr = m.listen.parse().context("metrics.listen")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("while binding metrics.listen {addr}"))?;
    let bound = listener.local_addr()?;
    fsutil::write_atomic(
        &cfg.paths.state_dir.join("metrics.addr"),
        format!("{bound}\n").as_bytes(),
        0o644,
    )
    .context("while writing metrics.addr")?;
    crate::metrics::find_last_backup(cfg, counters);
    let exposed = crate::metrics::AgentExposition::new(
        cfg.clone(),
        drivers.hub.clone(),
        drivers.runtimes.clone(),
        counters.clone(),
    );
    let bounds = hubshift_common::exposition::Bounds {
        max_connections: m.max_connections as usize,
        ..Default::default()
    };
    tokio::spawn(hubshift_common::exposition::serve(
        listener,
        bounds,
        Arc::new(exposed),
        stop,
    ));
    tracing::info!(address = %bound, "metrics served at /metrics and /healthz");
    Ok(())
}

fn write_addr(state: &Path, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    fsutil::write_atomic(
        &state.join("agent.addr"),
        format!("{addr}\n").as_bytes(),
        0o644,
    )
    .context("while writing agent.addr")?;
    Ok(())
}
