//! `hubshift-sandbox`: watch a complete upgrade on this machine (`demo`), or
//! get a running HA group to try `hubshift` against (`up`).

fn main() -> std::process::ExitCode {
    hubshift_sim::demo::main()
}
