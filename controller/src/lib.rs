//! The hubshift controller as a library: the `hubshift` binary is a thin
//! shell around [`commands::dispatch`].
//!
//! Modules depend one way, from the top down:
//! `commands` → `fleet` → `launch` → `executor` → `steps` → `run_context`
//! → `agents` / `journal_link` / `journal` / `observe` → `plan` / `db` /
//! `facts` → `inventory` → `exit` / `output` / `clock`; `report` (pure)
//! draws what `journal` and `timeline` kept.

pub mod agents;
pub mod audit;
pub mod backup_check;
pub mod backup_copy;
pub mod checks;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod connection_room;
pub mod db;
pub mod exit;
pub mod facts;
pub mod fleet;
pub mod hub;
pub mod inventory;
pub mod journal;
pub mod journal_link;
pub mod notify;
pub mod observe;
pub mod output;
pub mod plan;
pub mod readiness;
pub mod refusals;
pub mod report;
pub mod run;
pub mod steps;
pub mod system_roots;
#[cfg(test)]
mod testing;
pub mod timeline;
pub mod trust;
pub mod version;
pub mod watch;
pub mod window;
