//! Who acted on a run: the journal keeps the user, the host and, when the
//! environment names one, the CI job behind every start and resume, so a
//! fleet worked on by several pipelines can be traced afterwards.

use serde_json::{Value, json};

/// Environment variables that name a CI job, in the order they are tried:
/// GitHub Actions, GitLab, Jenkins, Azure Pipelines, CircleCI, Buildkite.
const CI_JOB_VARS: [&str; 6] = [
    "GITHUB_RUN_ID",
    "CI_JOB_ID",
    "BUILD_TAG",
    "BUILD_BUILDID",
    "CIRCLE_BUILD_NUM",
    "BUILDKITE_JOB_ID",
];

/// One audit entry for `action` (upgrade, rollback, resume, stop, abandon).
pub fn entry(action: &str) -> Value {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        // SAFETY: getuid cannot fail and touches no memory.
        .unwrap_or_else(|_| format!("uid {}", unsafe { libc::getuid() }));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let ci_job = CI_JOB_VARS.iter().find_map(|name| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .map(|v| format!("{name}={v}"))
    });
    json!({
        "action": action,
        "user": user,
        "host": host,
        "ci_job": ci_job,
        "at_ms": crate::clock::now_ms(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_the_action_user_and_host() {
        let e = super::entry("resume");
        assert_eq!(e["action"], "resume");
        assert!(!e["user"].as_str().unwrap_or("").is_empty());
        assert!(e["at_ms"].as_u64().unwrap_or(0) > 0);
    }
}
