//! `hubshift`, the controller CLI. Thin: set-up, dispatch, exit code.

use clap::Parser;
use hubshift::cli::Cli;
use hubshift::exit::{self, Exit};
use hubshift::output::Output;

fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() {
                Exit::Usage as u8
            } else {
                0
            });
        }
    };
    let out = Output::new(cli.json);
    if let Err(e) = hubshift::window::check_clock() {
        eprintln!("error: {e}");
        return std::process::ExitCode::from(Exit::Usage as u8);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(Exit::Failed as u8);
        }
    };
    let result = runtime.block_on(async {
        let result = hubshift::commands::dispatch(out.clone(), cli.command).await;
        hubshift::notify::drain().await;
        result
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            let code = exit::classify(&err);
            let message = hubshift_common::redact::redact(&hubshift_common::error_text::one_line(
                err.as_ref(),
            ));
            out.event(
                "error",
                serde_json::json!({ "exit_code": code as u8, "error": message }),
                String::new,
            );
            eprintln!("error: {message}");
            std::process::ExitCode::from(code as u8)
        }
    }
}
