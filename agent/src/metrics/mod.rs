//! The agent's Prometheus face (`[metrics]`): what it counts while it
//! works, and the hub as the drivers see it at each scrape.

pub mod counters;
pub mod scrape;

pub use counters::{Counters, OpenConnection};
pub use scrape::{AgentExposition, find_last_backup};
