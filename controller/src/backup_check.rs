//! Before a rollback changes anything, its backup is read back where it
//! lies — on the primary's host, and the controller's copy when
//! `backups.copy_to` made one — so that a damaged backup refuses the
//! rollback while the group still serves, naming the backup, its file and
//! the copy that can replace it.

use crate::agents::{Agent, AgentError};
use crate::facts::RunFacts;
use crate::hub::BackupRead;
use crate::readiness::Finding;
use std::path::PathBuf;
use std::time::Duration;

/// What reading the backup back found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupHealth {
    /// The host's file: `Ok` when its digest matches the journal's.
    pub host: Result<(), String>,
    /// The controller-side copy, when one was recorded: `Ok` when intact.
    pub copy: Option<(PathBuf, Result<(), String>)>,
}

/// Reads the run's backup on `primary` and its copy, if any.
pub async fn check(primary: &Agent, facts: &RunFacts, timeout: Duration) -> BackupHealth {
    let (Some(id), Some(sha)) = (facts.backup_id.as_deref(), facts.backup_sha256.as_deref()) else {
        return BackupHealth {
            host: Err("the run recorded no backup".into()),
            copy: None,
        };
    };
    let host = match read_back(primary, id, sha, timeout).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(why)) => Err(why),
        Err(e) => Err(e.to_string()),
    };
    // A delta's copy restores nothing without its base's: both are checked.
    let base_copy = facts
        .pre_copy
        .as_ref()
        .filter(|p| p.delta)
        .and_then(|p| Some((p.base_copy.clone()?, p.base_sha256.clone())));
    let copy = match facts.backup_copy.as_deref() {
        Some(path) => {
            let path = PathBuf::from(path);
            let mut wanted = vec![(path.clone(), sha.to_string())];
            wanted.extend(base_copy.map(|(p, s)| (PathBuf::from(p), s)));
            let state = tokio::task::spawn_blocking(move || {
                for (file, sha) in wanted {
                    match hubshift_common::digest::sha256_file(&file) {
                        Ok((have, _)) if have == sha => {}
                        Ok((have, _)) => {
                            return Err(format!(
                                "{}: its SHA-256 is {have}, not {sha}",
                                file.display()
                            ));
                        }
                        Err(e) => return Err(format!("{} cannot be read: {e}", file.display())),
                    }
                }
                Ok(())
            })
            .await
            .unwrap_or_else(|e| Err(format!("checking it ended abnormally: {e}")));
            Some((path, state))
        }
        None => None,
    };
    BackupHealth { host, copy }
}

/// Reads backup `id` back on `agent`'s host: `Ok(Ok(_))` when it is
/// intact, `Ok(Err(why))` when the backup itself is wanting (another
/// digest, no entries, or the agent found it missing, changed or
/// unreadable), `Err` when the agent could not be asked.
pub async fn read_back(
    agent: &Agent,
    id: &str,
    sha: &str,
    timeout: Duration,
) -> Result<Result<BackupRead, String>, AgentError> {
    match agent.verify_backup(id, sha, timeout).await {
        Ok(v) if v.sha256 != sha => Ok(Err(format!("its SHA-256 is {}, not {sha}", v.sha256))),
        Ok(v) if v.entries == 0 => Ok(Err("it lists no entries".into())),
        Ok(v) => Ok(Ok(v)),
        Err(
            e @ AgentError::Call {
                code:
                    tonic::Code::NotFound | tonic::Code::FailedPrecondition | tonic::Code::DataLoss,
                ..
            },
        ) => Ok(Err(e.to_string())),
        Err(e) => Err(e),
    }
}

impl BackupHealth {
    /// The preflight finding of a rollback of `run` (whose facts are
    /// `facts`): blocking when the host's backup is damaged, with the way
    /// that works named.
    pub fn finding(&self, primary: &str, run: &str, facts: &RunFacts) -> Finding {
        let id = facts.backup_id.as_deref().unwrap_or("?");
        let file = facts.backup_path.as_deref().unwrap_or("?");
        let mut finding = Finding {
            blocking: false,
            warning: false,
            check: "backup",
            node: primary.to_string(),
            message: format!("backup {id} at {file} is intact"),
        };
        if let Some((path, Err(why))) = &self.copy {
            finding.warning = true;
            finding
                .message
                .push_str(&format!("; its copy {} is not ({why})", path.display()));
        }
        let Err(why) = &self.host else {
            return finding;
        };
        finding.blocking = true;
        finding.warning = false;
        let base = facts.pre_copy.as_ref().filter(|p| p.delta);
        let way = match (&self.copy, base) {
            (Some((path, Ok(()))), Some(b)) => format!(
                "its copy {} is intact (same SHA-256), and so is its base's {}: put them back as {file} and {} on {primary}, then run `hubshift rollback --run {run}` again",
                path.display(),
                b.base_copy.as_deref().unwrap_or("?"),
                std::path::Path::new(file)
                    .with_file_name(format!("{}.tar.gz", b.base_id))
                    .display()
            ),
            (Some((path, Ok(()))), None) => format!(
                "its copy {} is intact (same SHA-256): put it back as {file} on {primary}, then run `hubshift rollback --run {run}` again",
                path.display()
            ),
            (Some((path, Err(copy_why))), _) => format!(
                "its copy {} is damaged too ({copy_why}): this backup cannot be restored; the group keeps running {} and serves",
                path.display(),
                facts.version
            ),
            (None, _) => format!(
                "no copy was made (inventory `backups.copy_to`): this backup cannot be restored; the group keeps running {} and serves",
                facts.version
            ),
        };
        finding.message = format!("backup {id} of run {run} at {file} is damaged ({why}); {way}");
        finding
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(copy: bool) -> RunFacts {
        RunFacts {
            version: "4.2.0".into(),
            backup_id: Some("R1-hub-a".into()),
            backup_sha256: Some("ab".repeat(32)),
            backup_path: Some("/var/lib/hubshift/backups/R1-hub-a.tar.gz".into()),
            backup_copy: copy.then(|| "/srv/copies/g/R1-hub-a.tar.gz".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_damaged_backup_names_its_file_and_the_intact_copy() {
        let h = BackupHealth {
            host: Err("checksum mismatch".into()),
            copy: Some(("/srv/copies/g/R1-hub-a.tar.gz".into(), Ok(()))),
        };
        let f = h.finding("hub-a", "R1", &facts(true));
        assert!(f.blocking);
        for part in [
            "backup R1-hub-a",
            "/var/lib/hubshift/backups/R1-hub-a.tar.gz",
            "checksum mismatch",
            "/srv/copies/g/R1-hub-a.tar.gz is intact",
            "`hubshift rollback --run R1`",
        ] {
            assert!(f.message.contains(part), "{part:?} in {}", f.message);
        }
    }

    #[test]
    fn a_damaged_pair_names_both_files_and_both_copies() {
        let mut f = facts(true);
        f.pre_copy = Some(crate::facts::PreCopy {
            base_id: "R1-hub-a-base".into(),
            base_copy: Some("/srv/copies/g/R1-hub-a-base.tar.gz".into()),
            delta: true,
            ..Default::default()
        });
        let h = BackupHealth {
            host: Err(
                "the base R1-hub-a-base of backup R1-hub-a is not the one it was taken against"
                    .into(),
            ),
            copy: Some(("/srv/copies/g/R1-hub-a.tar.gz".into(), Ok(()))),
        };
        let finding = h.finding("hub-a", "R1", &f);
        assert!(finding.blocking);
        for part in [
            "/srv/copies/g/R1-hub-a.tar.gz is intact",
            "its base's /srv/copies/g/R1-hub-a-base.tar.gz",
            "put them back as /var/lib/hubshift/backups/R1-hub-a.tar.gz and /var/lib/hubshift/backups/R1-hub-a-base.tar.gz on hub-a",
        ] {
            assert!(
                finding.message.contains(part),
                "{part:?} in {}",
                finding.message
            );
        }
    }

    #[test]
    fn without_an_intact_copy_the_group_is_said_to_keep_its_version() {
        let h = BackupHealth {
            host: Err("not found".into()),
            copy: None,
        };
        let f = h.finding("hub-a", "R1", &facts(false));
        assert!(f.blocking);
        assert!(f.message.contains("backups.copy_to"), "{}", f.message);
        assert!(f.message.contains("keeps running 4.2.0"), "{}", f.message);
        let h = BackupHealth {
            host: Err("not found".into()),
            copy: Some(("/c".into(), Err("cannot be read".into()))),
        };
        assert!(
            h.finding("hub-a", "R1", &facts(true))
                .message
                .contains("damaged too")
        );
    }

    #[test]
    fn an_intact_backup_passes_and_a_bad_copy_is_a_warning() {
        let h = BackupHealth {
            host: Ok(()),
            copy: Some(("/c".into(), Err("cannot be read".into()))),
        };
        let f = h.finding("hub-a", "R1", &facts(true));
        assert!(!f.blocking && f.warning, "{f:?}");
    }
}
