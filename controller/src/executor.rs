//! Runs a journaled plan: each step is marked running before and done or
//! failed after it runs, the facts a resume needs are written as they become
//! known, and the run ends with a summary of the outage windows it caused.

use crate::journal::{self, RunState, StepState};
use crate::output::{Output, secs};
use crate::plan::{self, Step};
use crate::run_context::Run;
use anyhow::{Result, bail};
use hubshift_common::redact::redact;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Set by the first Ctrl-C: stop at the next safe point.
static STOP_ASKED: AtomicBool = AtomicBool::new(false);

/// Whether Ctrl-C asked this process to stop at the next safe point.
pub fn stop_asked() -> bool {
    STOP_ASKED.load(Ordering::SeqCst)
}

/// The first Ctrl-C asks the run to stop at its next safe point (between
/// steps, with an active node and nothing half done); a second one exits at
/// once, as an interrupt always did.
pub fn watch_ctrl_c(out: Output) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        STOP_ASKED.store(true, Ordering::SeqCst);
        out.human("\nStopping at the next safe point (Ctrl-C again to exit at once) ...");
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
}

impl Run {
    /// Executes `steps` from the first one not done. Returns an error when a
    /// step fails (the journal then says which and why).
    pub async fn execute(&mut self, steps: &[journal::StepRecord]) -> Result<()> {
        let plan: Vec<Step> = steps.iter().map(|s| s.step.clone()).collect();
        if !plan::gates_hold(&plan) {
            bail!("refusing to run a plan whose destructive steps come before the verified backup");
        }
        let started = Instant::now();
        let total = steps.len();
        let mut i = 0;
        while i < total {
            if steps[i].state == StepState::Done {
                i += 1;
                continue;
            }
            self.park_if_asked(steps, i).await?;
            // Consecutive staging steps run in parallel: no outage yet, and
            // uploads are the slow part.
            if matches!(steps[i].step, Step::StageRuntime { .. }) {
                let mut j = i;
                let mut batch = Vec::new();
                while j < total && matches!(steps[j].step, Step::StageRuntime { .. }) {
                    if steps[j].state != StepState::Done {
                        batch.push(j);
                    }
                    j += 1;
                }
                self.run_stage_batch(steps, &batch, total).await?;
                i = j;
                continue;
            }
            self.run_one(steps, i, total).await?;
            i += 1;
        }
        crate::steps::verify_group(self).await?;
        self.journal.finish_run(&self.id, RunState::Done).await?;
        self.summary(started.elapsed().as_millis() as u64);
        Ok(())
    }

    /// Parks the run before step `idx` when a pause was asked for there, or
    /// a stop was asked for and the boundary is safe.
    async fn park_if_asked(&mut self, steps: &[journal::StepRecord], idx: usize) -> Result<()> {
        let safe = idx == 0 || plan::safe_to_park_after(&steps[idx - 1].step);
        let name = steps[idx].step.name();
        let (state, why) = if self.facts.pause_before.iter().any(|p| p == name)
            && !self.facts.pauses_done.contains(&idx)
        {
            self.facts.pauses_done.push(idx);
            (
                RunState::Paused,
                format!("paused before step {} ({name}) as asked", idx + 1),
            )
        } else if safe && (stop_asked() || self.journal.take_stop_request(&self.id).await?) {
            (
                RunState::Stopped,
                format!("stopped before step {} ({name}) as asked", idx + 1),
            )
        } else {
            return Ok(());
        };
        self.save_facts().await?;
        self.journal.finish_run(&self.id, state).await?;
        let id = self.id.clone();
        self.out.event(
            if state == RunState::Paused {
                "run_paused"
            } else {
                "run_stopped"
            },
            json!({ "run": id, "group": self.group.name, "before_step": idx + 1, "name": name,
                    "next": format!("hubshift resume --run {id}") }),
            || {
                format!(
                    "\nRun {id} {why}; the group serves. Continue with: hubshift resume --run {id}"
                )
            },
        );
        Err(crate::exit::Parked(format!("run {id} {why}")).into())
    }

    fn announce(&self, idx: usize, total: usize, step: &Step) {
        let desc = step.describe(&self.facts.schema, &self.facts.version);
        self.out.event(
            "step_started",
            json!({
                "run": self.id, "index": idx + 1, "total": total, "name": step.name(),
                "node": step.node(), "procedure_step": step.procedure(), "description": desc,
            }),
            || format!("[{:>2}/{total}] {desc} ...", idx + 1),
        );
    }

    fn finished(&self, idx: usize, total: usize, step: &Step, ms: u64, detail: &Value) {
        self.out.event(
            "step_finished",
            json!({
                "run": self.id, "index": idx + 1, "total": total, "name": step.name(),
                "node": step.node(), "duration_ms": ms, "detail": detail,
            }),
            || {
                format!(
                    "[{:>2}/{total}] {} on {}: done in {}",
                    idx + 1,
                    step.name(),
                    step.node(),
                    secs(ms)
                )
            },
        );
    }

    async fn failed(
        &mut self,
        idx: usize,
        total: usize,
        step: &Step,
        err: &anyhow::Error,
    ) -> Result<()> {
        let text = redact(&format!("{err:#}"));
        let _ = self.journal.step_failed(&self.id, idx, &text).await;
        self.out.event(
            "step_failed",
            json!({
                "run": self.id, "index": idx + 1, "total": total, "name": step.name(),
                "node": step.node(), "error": text,
            }),
            || {
                format!(
                    "[{:>2}/{total}] {} on {}: FAILED: {text}",
                    idx + 1,
                    step.name(),
                    step.node()
                )
            },
        );
        Ok(())
    }

    async fn run_one(
        &mut self,
        steps: &[journal::StepRecord],
        idx: usize,
        total: usize,
    ) -> Result<()> {
        let step = steps[idx].step.clone();
        self.announce(idx, total, &step);
        self.journal.step_started(&self.id, idx).await?;
        let t = Instant::now();
        match crate::steps::run_step(self, &step).await {
            Ok(detail) => {
                self.save_facts().await?;
                self.journal.step_done(&self.id, idx, &detail).await?;
                self.finished(idx, total, &step, t.elapsed().as_millis() as u64, &detail);
                Ok(())
            }
            Err(err) => {
                let _ = self.save_facts().await;
                if err.downcast_ref::<crate::steps::FellBack>().is_some() {
                    // The fallback undid the hand-over: a resume starts again
                    // at the primary's stop, with fresh checks.
                    let redo = steps[..idx]
                        .iter()
                        .rposition(|s| matches!(s.step, Step::StopPrimary { .. }))
                        .unwrap_or(idx);
                    let _ = self.journal.reset_steps(&self.id, redo).await;
                }
                self.failed(idx, total, &step, &err).await?;
                Err(err.context(format!(
                    "step {} ({}) on {} failed",
                    idx + 1,
                    step.name(),
                    step.node()
                )))
            }
        }
    }

    async fn run_stage_batch(
        &mut self,
        steps: &[journal::StepRecord],
        batch: &[usize],
        total: usize,
    ) -> Result<()> {
        for &idx in batch {
            self.announce(idx, total, &steps[idx].step);
            self.journal.step_started(&self.id, idx).await?;
        }
        let mut tasks = Vec::new();
        for &idx in batch {
            let Step::StageRuntime { node } = &steps[idx].step else {
                continue;
            };
            let agent = self.agent(node)?.clone();
            let file = self.runtime_file.clone();
            let facts = self.facts.clone();
            let bar = self
                .out
                .bytes_bar(facts.runtime_bytes, &format!("upload to {node}"));
            tasks.push((
                idx,
                tokio::spawn(async move {
                    let t = Instant::now();
                    let r = crate::steps::stage_runtime(&agent, file.as_deref(), &facts, bar).await;
                    (r, t.elapsed().as_millis() as u64)
                }),
            ));
        }
        let mut first_err = None;
        for (idx, task) in tasks {
            let step = &steps[idx].step;
            let (result, ms) = match task.await {
                Ok(r) => r,
                Err(e) => (
                    Err(anyhow::anyhow!("staging task ended abnormally: {e}")),
                    0,
                ),
            };
            match result {
                Ok(detail) => {
                    self.journal.step_done(&self.id, idx, &detail).await?;
                    self.finished(idx, total, step, ms, &detail);
                }
                Err(err) => {
                    self.failed(idx, total, step, &err).await?;
                    if first_err.is_none() {
                        first_err = Some(err.context(format!(
                            "step {} ({}) on {} failed",
                            idx + 1,
                            step.name(),
                            step.node()
                        )));
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn summary(&self, total_ms: u64) {
        let windows = self.facts.windows();
        for w in &windows {
            self.out.event(
                "outage_window",
                json!({ "run": self.id, "window": w.window, "start_ms": w.start_ms,
                        "end_ms": w.end_ms, "duration_ms": w.duration_ms }),
                String::new,
            );
        }
        self.out.event(
            "run_finished",
            json!({
                "run": self.id, "group": self.group.name, "state": RunState::Done,
                "from_version": self.facts.from_version, "to_version": self.facts.version,
                "total_ms": total_ms, "windows": windows,
                "single_node_ms": self.facts.single_node_ms(),
                "backup_id": self.facts.backup_id, "backup_sha256": self.facts.backup_sha256,
                "backup_path": self.facts.backup_path, "backup_copy": self.facts.backup_copy,
                "warnings": self.facts.warnings,
            }),
            || {
                let mut s = format!(
                    "\nRun {} done: group {} {} {} -> {} in {}.\n",
                    self.id,
                    self.group.name,
                    if self.facts.rollback_of.is_some() {
                        "rolled back"
                    } else {
                        "upgraded"
                    },
                    self.facts.from_version,
                    self.facts.version,
                    secs(total_ms)
                );
                for w in &windows {
                    let what = if w.window == 1 {
                        "stop of the primary requested -> secondary seen active"
                    } else {
                        "HA create done on the primary -> primary seen active"
                    };
                    s.push_str(&format!(
                        "  outage window {}: {} ({what})\n",
                        w.window,
                        secs(w.duration_ms)
                    ));
                }
                if !windows.is_empty() {
                    s.push_str(
                        "  (windows are conservative: from the moment a node may stop serving until a node was seen active;\n   the data gap lies inside them, give or take one 100 ms poll)\n",
                    );
                }
                if let Some(ms) = self.facts.single_node_ms() {
                    s.push_str(&format!(
                        "  single-node time: {} (primary stopped -> every secondary standby again; no redundancy meanwhile)\n",
                        secs(ms)
                    ));
                }
                if let (Some(id), Some(sha)) = (&self.facts.backup_id, &self.facts.backup_sha256) {
                    s.push_str(&format!(
                        "  backup: {id} sha256 {sha} at {}\n",
                        self.facts.backup_path.as_deref().unwrap_or("?")
                    ));
                }
                if let Some(copy) = &self.facts.backup_copy {
                    s.push_str(&format!("  backup copy: {copy}\n"));
                }
                for w in &self.facts.warnings {
                    s.push_str(&format!("  warning: {w}\n"));
                }
                s
            },
        );
    }
}
