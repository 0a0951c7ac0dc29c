//! hubshift-agent: runs on each Intelligence Hub host and exposes stop,
//! start, backup, runtime install and certificate store copy over mTLS gRPC.
//! One file per idea; `service.rs` maps each gRPC method onto them.

pub mod appdata;
pub mod auth;
pub mod carry;
pub mod certificate;
pub mod cli;
pub mod config;
pub mod declared;
pub mod disk;
pub mod driver;
pub mod error;
pub mod fsutil;
pub mod hub;
pub mod layout;
pub mod listener;
pub mod role;
pub mod runtime;
pub mod scratch;
pub mod service;
pub mod settings;
