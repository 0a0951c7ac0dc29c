//! End-to-end tests of hubshift live in `tests/*.rs` beside this file: they
//! run the real `hubshift`, `hubshift-agent` and `hubsim` binaries against a
//! real PostgreSQL (see `hubshift_sim::sandbox`).
