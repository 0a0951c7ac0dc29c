//! One group's run, from open to finish — the one place its life is
//! written, so that `upgrade`, `resume`, `rollback`, `abandon` and the
//! fleet differ only in what they ask for:
//!
//! 1. **open** (`open.rs`): the group's database, its URL resolved once
//!    for the inventory (`Site`), and the group lock taken before anything
//!    else is looked at (`lock`);
//! 2. **preflight** for the run's kind (`preflight.rs`, over the pure
//!    checks of `crate::readiness`);
//! 3. **record** the run in the group's journal (`lifecycle.rs`);
//! 4. **execute** the journaled plan (`execute.rs`, each step in
//!    `crate::steps`), parking at safe points when asked;
//! 5. **finish**: the group verified, the run journaled done or failed,
//!    the summary and the next command (`lifecycle.rs`, `execute.rs`).
//!
//! `context.rs` is the run in progress every step receives.

pub mod context;
pub mod execute;
pub mod lifecycle;
pub mod open;
pub mod preflight;
pub mod request;
pub mod window_gate;

pub use context::Run;
pub use execute::{stop_asked, watch_ctrl_c};
pub use lifecycle::{
    Looked, Prepared, PreparedRollback, abandon_refusal, finish, lock_run, look_upgrade,
    prepare_resume, prepare_rollback, prepare_upgrade, record_rollback, record_upgrade,
};
pub use open::{Locked, OpenRun, Site, lock, lock_group, open_run};
pub use preflight::print_findings;
pub use request::{
    ArchiveInfo, UpgradeRequest, check_pause_before, check_version, checked_archive, read_archive,
};
