//! `hubsim`, the stand-in Intelligence Hub runtime. Its command line mirrors
//! the real HA entry point (`create|start -n NODE -j JDBC_URI`); its HA
//! behaviour (one active node elected through a heartbeat row in schema
//! `orchestration`, takeover, handover to the preferred primary, version
//! checks, store and forward) runs against real PostgreSQL. With
//! `HUBSIM_EXIT_WITH_PID` set it exits when that process ends ([`owner`]).

pub mod appdata;
pub mod cli;
pub mod create;
pub mod db;
pub mod jdbc;
pub mod log;
pub mod node;
pub mod owner;
pub mod schema;
pub mod settings;
pub mod store_forward;
pub mod ticks;

use clap::Parser;
use std::path::{Path, PathBuf};

/// Exit code of a refused `create` or `start` (unreachable database, missing
/// schema, version or certificate mismatch) and of other runtime errors.
pub const EXIT_REFUSED: i32 = 1;
/// Exit code of a command-line error.
pub const EXIT_USAGE: i32 = 2;

/// Set once SIGTERM or SIGINT arrived: the node produces no more data and
/// sends no more heartbeats while it takes its stop delay to exit.
static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the node is shutting down.
pub fn stopping() -> bool {
    STOPPING.load(std::sync::atomic::Ordering::SeqCst)
}

fn set_stopping() {
    STOPPING.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Entry point of the `hubsim` binary; returns the process exit code.
pub fn main() -> i32 {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    // One thread: a node is a heartbeat loop and a ticker, both waiting on
    // timers and the database; a fleet runs hundreds of them on one host.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error(&format!("cannot start the async runtime: {e}"));
            return EXIT_REFUSED;
        }
    };
    let code = runtime.block_on(run(cli));
    log::flush();
    // Tasks still blocked on the database must not delay the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    code
}

async fn run(cli: cli::Cli) -> i32 {
    if let Err(e) = owner::watch_from_env() {
        log::error(&e);
        return EXIT_USAGE;
    }
    match cli.command {
        cli::Command::Runtime(args) => runtime_command(cli.version, args),
        cli::Command::Create(args) => {
            let Some(version) = resolve_version(cli.version) else {
                return EXIT_USAGE;
            };
            let Some(places) = places(cli.runtime_dir) else {
                return EXIT_REFUSED;
            };
            create::run(args, version, places).await
        }
        cli::Command::Start(args) => {
            let Some(version) = resolve_version(cli.version) else {
                return EXIT_USAGE;
            };
            let Some(places) = places(cli.runtime_dir) else {
                return EXIT_REFUSED;
            };
            node::run(args, version, places).await
        }
        cli::Command::Container(args) => {
            let Some(version) = resolve_version(cli.version) else {
                return EXIT_USAGE;
            };
            container(args, version, cli.runtime_dir).await
        }
    }
}

/// The image's entrypoint: `START_MODE=HA_INIT` → create, then start;
/// `START_MODE` set otherwise → start.
async fn container(
    args: cli::ContainerArgs,
    version: String,
    cli_runtime_dir: Option<PathBuf>,
) -> i32 {
    if args.action != "start" {
        log::error(&format!(
            "unknown action {:?}: the image only knows `start`",
            args.action
        ));
        return EXIT_USAGE;
    }
    let Ok(node) = std::env::var("HUBSHIFT_NODE") else {
        log::error("HUBSHIFT_NODE is not set");
        return EXIT_USAGE;
    };
    let mode = args
        .mode
        .clone()
        .unwrap_or_else(|| std::env::var("START_MODE").unwrap_or_default());
    if mode.is_empty() {
        log::error("START_MODE is not set: hubsim only runs in HA mode");
        return EXIT_USAGE;
    }
    let node_args = || cli::NodeArgs {
        node: node.clone(),
        jdbc: "env:HUBSHIFT_JDBC_URI".into(),
        timing: args.timing,
    };
    // As the hub in the vendor's image: its runtime directory in the image
    // (the container's writable layer), appData the mount beside it; the
    // settings file there decides, and with `directories.storeForwardData`
    // unset store-and-forward files go to the runtime directory.
    let runtime_dir = cli_runtime_dir.unwrap_or_else(|| PathBuf::from(crate::image::RUNTIME));
    let env = std::env::var(settings::SETTINGS_ENV).ok();
    let located = settings::locate(&runtime_dir, env.as_deref()).map(|mut p| {
        if p.settings_file.is_none() {
            p.app_data = args.appdata.clone();
        }
        p
    });
    let places = match located {
        Ok(p) => p,
        Err(e) => {
            log::error(&e);
            return EXIT_REFUSED;
        }
    };
    log::info(&format!(
        "container: runtime {}, appData {}, store-and-forward {}",
        runtime_dir.display(),
        places.app_data.display(),
        places.store_forward.display()
    ));
    let places = || places.clone();
    if mode == "HA_INIT" {
        let code = create::run(node_args(), version.clone(), places()).await;
        if code != 0 {
            return code;
        }
    }
    node::run(node_args(), version, places()).await
}

fn runtime_command(version: Option<String>, args: cli::RuntimeArgs) -> i32 {
    let Some(version) = version else {
        log::error("hubsim runtime needs --version V");
        return EXIT_USAGE;
    };
    let binary = match args.hubsim {
        Some(p) => p,
        None => match std::env::current_exe() {
            Ok(p) => p,
            Err(e) => {
                log::error(&format!(
                    "cannot find hubsim's own path: {e}; pass --hubsim PATH"
                ));
                return EXIT_REFUSED;
            }
        },
    };
    match crate::runtime::write_runtime_archive(&version, &args.out, &binary) {
        Ok((sha256, size)) => {
            log::info(&format!(
                "wrote runtime archive {} (version {version}, {size} bytes, sha256 {sha256})",
                args.out.display()
            ));
            0
        }
        Err(e) => {
            log::error(&format!("cannot write runtime archive: {e}"));
            EXIT_REFUSED
        }
    }
}

/// appData and store-and-forward places from the settings, as the hub
/// finds them (logged, so a test or an operator sees where it runs).
fn places(runtime_dir: Option<PathBuf>) -> Option<settings::Places> {
    let runtime_dir = match runtime_dir.map(std::path::absolute).transpose() {
        Ok(Some(d)) => d,
        Ok(None) => match std::env::current_dir() {
            Ok(d) => d,
            Err(e) => {
                log::error(&format!("cannot find the runtime directory: {e}"));
                return None;
            }
        },
        Err(e) => {
            log::error(&format!("cannot resolve --runtime-dir: {e}"));
            return None;
        }
    };
    match settings::locate_from_env(&runtime_dir) {
        Ok(p) => {
            log::info(&format!(
                "settings {}: appData {}, store-and-forward {}{}",
                p.settings_file.as_ref().map_or_else(
                    || "(none, defaults)".to_string(),
                    |f| f.display().to_string()
                ),
                p.app_data.display(),
                p.store_forward.display(),
                if p.store_forward_in_runtime {
                    " (directories.storeForwardData unset: the runtime directory)"
                } else {
                    ""
                }
            ));
            Some(p)
        }
        Err(e) => {
            log::error(&e);
            None
        }
    }
}

/// The version this hubsim runs as: `--version`, else the `VERSION` file of
/// the runtime directory it was launched from (`<runtime>/bin/hubsim` or
/// `<runtime>/hubsim`).
fn resolve_version(flag: Option<String>) -> Option<String> {
    if let Some(v) = flag {
        return Some(v);
    }
    let exe = std::env::current_exe().ok();
    let found = exe
        .as_deref()
        .and_then(Path::parent)
        .and_then(version_file_near);
    if found.is_none() {
        log::error(
            "hubsim does not know its version: pass --version V or run it from a runtime directory holding a VERSION file",
        );
    }
    found
}

fn version_file_near(bin_dir: &Path) -> Option<String> {
    let candidates: Vec<PathBuf> = [bin_dir.parent(), Some(bin_dir)]
        .into_iter()
        .flatten()
        .map(|d| d.join("VERSION"))
        .collect();
    candidates.iter().find_map(|p| {
        let text = std::fs::read_to_string(p).ok()?;
        let v = text.trim();
        (!v.is_empty()).then(|| v.to_string())
    })
}
