//! `hubshift certs init`: a private CA, one server certificate per agent and
//! a client certificate for the controller — what mTLS between them needs.

use crate::exit::UsageError;
use crate::output::Output;
use anyhow::{Context, Result};
use hubshift_common::pki::{self, Authority, Usage};
use serde_json::json;
use std::path::Path;

/// One `--agent NAME[=SAN,...]` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSpec {
    /// File name and certificate common name.
    pub name: String,
    /// DNS names / IP addresses the controller dials.
    pub sans: Vec<String>,
}

/// Parses `NAME` or `NAME=SAN[,SAN...]`.
pub fn parse_agent(arg: &str) -> Result<AgentSpec, UsageError> {
    let (name, sans) = match arg.split_once('=') {
        Some((n, s)) => (
            n,
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        ),
        None => (arg, Vec::new()),
    };
    if hubshift_common::names::validate_name("agent name", name).is_err() || !pki::valid_san(name) {
        return Err(UsageError(format!(
            "--agent {arg:?}: {name:?} is not a valid agent name (a host-name-like label: letters, digits, '-', '.')"
        )));
    }
    for s in &sans {
        if !pki::valid_san(s) {
            return Err(UsageError(format!(
                "--agent {arg:?}: {s:?} is neither a DNS name nor an IP address"
            )));
        }
    }
    Ok(AgentSpec {
        name: name.to_string(),
        sans,
    })
}

/// Writes ca.crt/ca.key, `<agent>.crt/.key` per agent, `<controller>.crt/.key`.
pub fn init(
    out: Output,
    dir: &Path,
    agents: &[String],
    controller: &str,
    force: bool,
) -> Result<()> {
    let specs: Vec<AgentSpec> = agents
        .iter()
        .map(|a| parse_agent(a))
        .collect::<Result<_, _>>()?;
    if hubshift_common::names::validate_name("controller name", controller).is_err()
        || !pki::valid_san(controller)
    {
        return Err(UsageError(format!("--controller {controller:?} is not a valid name")).into());
    }
    let mut names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    names.push(controller);
    names.push("ca");
    let mut seen = std::collections::HashSet::new();
    for n in &names {
        if !seen.insert(*n) {
            return Err(UsageError(format!(
                "name {n:?} is used twice (agents, controller and `ca` must differ)"
            ))
            .into());
        }
    }
    // Refuse before writing anything: all or nothing.
    if !force {
        let existing: Vec<String> = names
            .iter()
            .flat_map(|n| {
                let p = pki::pair_paths(dir, n);
                [p.cert, p.key]
            })
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            return Err(UsageError(format!(
                "refusing to overwrite existing files (use --force): {}",
                existing.join(", ")
            ))
            .into());
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca = Authority::new("hubshift CA")?;
    let ca_paths = pki::write_pair(dir, "ca", ca.ca(), force)?;
    let mut written = vec![json!({ "name": "ca", "cert": ca_paths.cert, "key": ca_paths.key })];
    for spec in &specs {
        let minted = ca.issue(&spec.name, &spec.sans, Usage::Server)?;
        let p = pki::write_pair(dir, &spec.name, &minted, force)?;
        written.push(json!({ "name": spec.name, "role": "agent", "sans": spec.sans, "cert": p.cert, "key": p.key }));
    }
    let minted = ca.issue(controller, &[], Usage::Client)?;
    let p = pki::write_pair(dir, controller, &minted, force)?;
    written.push(json!({ "name": controller, "role": "controller", "cert": p.cert, "key": p.key }));
    out.event("certs_written", json!({ "dir": dir, "files": written }), || {
        let d = dir.display();
        let mut s = format!("Wrote a CA and {} agent certificate(s) to {d}.\n\nCopy to each agent host:\n", specs.len());
        for spec in &specs {
            s.push_str(&format!(
                "  {0}: {d}/ca.crt, {d}/{0}.crt, {d}/{0}.key  -> agent config [tls] client_ca, cert, key\n",
                spec.name
            ));
        }
        s.push_str(&format!(
            "Keep on the controller: {d}/ca.crt, {d}/{controller}.crt, {d}/{controller}.key -> inventory [tls] ca, cert, key\n\
             Allow the controller on each agent: allowed_clients = [\"{controller}\"]\n\
             Keep {d}/ca.key offline: it can mint new identities. Keys are written with mode 0600."
        ));
        s
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_specs() {
        assert_eq!(
            parse_agent("hub-a=hub-a.plant.example,10.0.0.5").unwrap(),
            AgentSpec {
                name: "hub-a".into(),
                sans: vec!["hub-a.plant.example".into(), "10.0.0.5".into()]
            }
        );
        assert!(parse_agent("hub a").is_err());
        assert!(parse_agent("../x").is_err());
        assert!(parse_agent("hub-a=bad name").is_err());
    }
}
