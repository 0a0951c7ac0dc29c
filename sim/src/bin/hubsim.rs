//! `hubsim`: a stand-in Intelligence Hub runtime (see `hubshift_sim::hubsim`).

fn main() {
    std::process::exit(hubshift_sim::hubsim::main());
}
