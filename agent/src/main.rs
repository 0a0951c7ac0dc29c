//! `hubshift-agent`: see `cli.rs` for the commands.

fn main() -> std::process::ExitCode {
    // Before anything touches TLS: one explicit crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    hubshift_agent::cli::main()
}
