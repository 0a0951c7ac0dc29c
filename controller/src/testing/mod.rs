//! Test doubles for the controller's unit tests.

pub mod fake_agent;

use crate::inventory::{DatabaseSection, Group, Node, Role};

/// A group of primary `a` and secondaries `s0`, `s1`, … with a default
/// database, for plan and executor tests.
pub fn sample_group(secondaries: usize) -> Group {
    let mut nodes = vec![Node {
        name: "a".into(),
        agent: "a:1".into(),
        role: Role::Primary,
        tls_name: None,
    }];
    for i in 0..secondaries {
        nodes.push(Node {
            name: format!("s{i}"),
            agent: format!("s{i}:1"),
            role: Role::Secondary,
            tls_name: None,
        });
    }
    Group {
        name: "g".into(),
        nodes,
        database: DatabaseSection {
            url_env: Some("DB".into()),
            url_file: None,
            schema: "orchestration".into(),
            hub_host: None,
            hub_port: None,
            ca_file: None,
            heartbeat_query: None,
        },
        database_key: "database".into(),
        checks: None,
        windows: Vec::new(),
    }
}
