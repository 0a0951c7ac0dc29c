//! hubshift-agent: runs on each Intelligence Hub host and exposes stop,
//! start, backup, runtime install and certificate store copy over mTLS gRPC.
//! One file per idea; `service/` maps each gRPC method onto them and is
//! the only place that converts wire messages.

pub mod appdata;
pub mod auth;
pub mod certificate;
pub mod cli;
pub mod clock;
pub mod config;
pub mod declared;
pub mod disk;
pub mod driver;
pub mod error;
pub mod fsutil;
pub mod hubfiles;
pub mod listener;
pub mod metrics;
pub mod places;
pub mod precopy;
pub mod role;
pub mod scratch;
pub mod service;
