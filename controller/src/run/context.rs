//! A run in progress: what every step of it may use — the group, its
//! agents and database, the journal that also holds the group's lock, the
//! facts so far, the output.

use super::open::Locked;
use crate::agents::Agent;
use crate::db::Database;
use crate::facts::{RunFacts, StepOutcome, fold};
use crate::inventory::{Group, Inventory};
use crate::journal_link::JournalLink;
use crate::output::Output;
use crate::timeline::{Kind, Timeline};
use anyhow::{Context, Result};
use hubshift_common::redact::Secret;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything a running plan needs. Steps read it through the accessors
/// and change it only through [`Run::apply`] (what they found, folded into
/// the facts); the journal and the facts' writing belong to `run/`.
pub struct Run {
    /// Journal id.
    pub(super) id: String,
    /// Inventory.
    pub(super) inv: Inventory,
    /// The group being upgraded.
    pub(super) group: Group,
    /// Output sink.
    pub(super) out: Output,
    /// Database settings.
    pub(super) db: Database,
    /// Journal connection; it also holds the group's advisory lock.
    pub(super) journal: JournalLink,
    /// Connected agents by node name.
    pub(super) agents: HashMap<String, Agent>,
    /// Facts so far.
    pub(super) facts: RunFacts,
    /// Runtime archive on this machine, when staging is still to do.
    pub(super) runtime_file: Option<PathBuf>,
    /// JDBC URI handed to the hubs.
    pub(super) jdbc: Secret,
    /// What the run observes, waiting to be journaled.
    pub(super) timeline: Arc<Timeline>,
    /// The step a just-journaled step end was followed by, and whether a
    /// stop was asked for then: the check before that step, already made.
    pub(super) stop_seen: Option<(usize, bool)>,
}

impl Run {
    /// A journaled run `id` of `at`, ready to execute; the JDBC URI is
    /// derived here and the lock-holding connection becomes the journal link.
    pub fn new(
        id: String,
        at: Locked,
        out: Output,
        agents: HashMap<String, Agent>,
        facts: RunFacts,
        runtime_file: Option<PathBuf>,
    ) -> Self {
        let Locked {
            inventory,
            group,
            db,
            client,
        } = at;
        let jdbc = db.jdbc_uri();
        let patience = std::time::Duration::from_secs(inventory.timeouts.database);
        let journal = JournalLink::new(db.clone(), &group.name, client, patience);
        let timeline = Timeline::new();
        let agents = agents
            .into_iter()
            .map(|(node, a)| (node, a.watched(timeline.clone())))
            .collect();
        Run {
            timeline,
            id,
            inv: inventory,
            group,
            out,
            db,
            journal,
            agents,
            facts,
            runtime_file,
            jdbc,
            stop_seen: None,
        }
    }

    /// The run's journal id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The inventory (timeouts, backups, TLS).
    pub fn inv(&self) -> &Inventory {
        &self.inv
    }

    /// The group the run acts on.
    pub fn group(&self) -> &Group {
        &self.group
    }

    /// Where the run reports.
    pub fn out(&self) -> &Output {
        &self.out
    }

    /// The group's database.
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// What the run knows so far.
    pub fn facts(&self) -> &RunFacts {
        &self.facts
    }

    /// The runtime archive on this machine, when staging is still to do.
    pub fn runtime_file(&self) -> Option<&std::path::Path> {
        self.runtime_file.as_deref()
    }

    /// The JDBC URI the hubs get (a secret).
    pub fn jdbc(&self) -> &Secret {
        &self.jdbc
    }

    /// Every agent of the group.
    pub fn agent_list(&self) -> Vec<Agent> {
        self.agents.values().cloned().collect()
    }

    /// The agent of a node.
    pub fn agent(&self, node: &str) -> Result<&Agent> {
        self.agents
            .get(node)
            .with_context(|| format!("node {node} is not in group {}", self.group.name))
    }

    /// Takes in what a step found, the moment it is true: facts that became
    /// true before a later failure of the same step are journaled too (the
    /// executor saves the facts after a failure as after a success).
    pub fn apply(&mut self, outcome: StepOutcome) {
        if let StepOutcome::FellBack { lost_ms, active_ms } = &outcome {
            let primary = self.group.primary().name.clone();
            self.note(
                &primary,
                Kind::Fallback,
                serde_json::json!({ "lost_ms": lost_ms, "active_ms": active_ms }),
            );
        }
        self.facts = fold(std::mem::take(&mut self.facts), &outcome);
    }

    /// Records an observation in the run's timeline (journaled with the
    /// next [`Run::flush_timeline`]).
    pub fn note(&self, node: &str, kind: Kind, details: Value) {
        self.timeline.note(node, kind, details);
    }

    /// Journals what the run observed since the last flush. A failure is
    /// only logged (the observations are kept for the next flush): the
    /// timeline never fails a run, the journal writes around it do.
    pub async fn flush_timeline(&mut self) {
        let pending = self.timeline.take();
        if pending.is_empty() {
            return;
        }
        if let Err(e) = self.journal.add_observations(&self.id, &pending).await {
            tracing::warn!(error = %e, "the run's timeline could not be journaled now; kept for later");
            self.timeline.put_back(pending);
        }
    }

    /// Whether the group's orchestration schema exists (asked on the
    /// journal's connection: no login per step, and a database restart is
    /// waited for as the journal waits).
    pub async fn schema_exists(&mut self) -> Result<bool> {
        let schema = self.facts.schema.clone();
        Ok(self.journal.schema_exists(&schema).await?)
    }

    /// How often the journal's connection was lost and made again: a step
    /// that sees it grow knows the database went away while it ran.
    pub fn journal_reconnects(&self) -> u64 {
        self.journal.reconnects()
    }

    /// Drops the group's orchestration schema (see
    /// [`crate::db::drop_schema`]), on the journal's connection.
    pub async fn drop_schema(&mut self) -> Result<()> {
        let schema = self.facts.schema.clone();
        Ok(self.journal.drop_schema(&schema).await?)
    }

    /// Journals step `idx`'s start with what the run observed so far, in
    /// one statement (the observations are kept for the next write when it
    /// fails).
    pub(super) async fn journal_step_start(&mut self, idx: usize) -> Result<()> {
        let pending = self.timeline.take();
        if let Err(e) = self.journal.step_begun(&self.id, idx, &pending).await {
            self.timeline.put_back(pending);
            return Err(e.into());
        }
        Ok(())
    }

    /// Journals step `idx`'s end in one statement, all or nothing: the
    /// facts, the step done with `detail`, what the run observed; notes
    /// whether a stop was asked for by then (see [`Run::stop_seen`]).
    pub(super) async fn journal_step_end(&mut self, idx: usize, detail: &Value) -> Result<()> {
        let facts = serde_json::to_value(&self.facts).context("serialising run facts")?;
        let pending = self.timeline.take();
        match self
            .journal
            .step_ended(&self.id, idx, detail, &facts, &pending)
            .await
        {
            Ok(stop) => {
                self.stop_seen = Some((idx + 1, stop));
                Ok(())
            }
            Err(e) => {
                self.timeline.put_back(pending);
                Err(e.into())
            }
        }
    }

    /// Writes the current facts to the journal.
    pub async fn save_facts(&mut self) -> Result<()> {
        let value = serde_json::to_value(&self.facts).context("serialising run facts")?;
        self.journal.add_facts(&self.id, &value).await?;
        Ok(())
    }
}
