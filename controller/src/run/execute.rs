//! Runs a journaled plan: each step is marked running before and done or
//! failed after it runs, the facts a resume needs are written as they become
//! known, and the run ends with a summary of the outage windows it caused.

use crate::journal::{self, RunState, StepState};
use crate::output::{Output, secs};
use crate::plan::{self, Step};
use crate::run::context::Run;
use crate::timeline::Kind;
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

/// What the executor runs next.
#[derive(Debug, PartialEq, Eq)]
pub enum Work {
    /// Every step is done.
    Finished,
    /// Staging steps not yet done, run together (no outage yet, and uploads
    /// are the slow part); then go on from `then`.
    Stage {
        /// Their positions.
        batch: Vec<usize>,
        /// The position after the run of staging steps.
        then: usize,
    },
    /// One step.
    One(usize),
}

/// The next work from position `from` of a journaled plan: the first step
/// not done, with the consecutive staging steps around it batched.
pub fn next_work(steps: &[(Step, StepState)], from: usize) -> Work {
    let Some(i) = (from..steps.len()).find(|&i| steps[i].1 != StepState::Done) else {
        return Work::Finished;
    };
    if !matches!(steps[i].0, Step::StageRuntime { .. }) {
        return Work::One(i);
    }
    let end = (i..steps.len())
        .find(|&j| !matches!(steps[j].0, Step::StageRuntime { .. }))
        .unwrap_or(steps.len());
    Work::Stage {
        batch: (i..end)
            .filter(|&j| steps[j].1 != StepState::Done)
            .collect(),
        then: end,
    }
}

/// Whether a `--pause-before` asks to park before step `idx` and the run
/// has not paused there yet (a resume goes on past it).
pub fn pause_due(
    steps: &[Step],
    idx: usize,
    pause_before: &[String],
    pauses_done: &[usize],
) -> bool {
    let name = steps[idx].name();
    pause_before.iter().any(|p| p == name) && !pauses_done.contains(&idx)
}

/// Whether a stop may park the run before step `idx`: never inside a
/// hand-over, where the group may have no active node or two.
pub fn safe_boundary(steps: &[Step], idx: usize) -> bool {
    idx == 0 || plan::safe_to_park_after(&steps[idx - 1])
}

/// Where a resume starts again after a fallback undid the hand-over that
/// step `idx` was part of: at the primary's stop before it.
pub fn redo_from(steps: &[Step], idx: usize) -> usize {
    steps[..idx]
        .iter()
        .rposition(|s| matches!(s, Step::StopPrimary { .. }))
        .unwrap_or(idx)
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
        let states: Vec<(Step, StepState)> =
            steps.iter().map(|s| (s.step.clone(), s.state)).collect();
        let mut from = 0;
        loop {
            match next_work(&states, from) {
                Work::Finished => break,
                Work::Stage { batch, then } => {
                    self.park_if_asked(steps, batch[0]).await?;
                    self.run_stage_batch(steps, &batch, total).await?;
                    from = then;
                }
                Work::One(i) => {
                    self.park_if_asked(steps, i).await?;
                    self.run_one(steps, i, total).await?;
                    from = i + 1;
                }
            }
        }
        crate::steps::verify_group(self).await?;
        self.flush_timeline().await;
        self.journal.finish_run(&self.id, RunState::Done).await?;
        self.summary(started.elapsed().as_millis() as u64);
        Ok(())
    }

    /// Parks the run before step `idx` when a pause was asked for there, or
    /// a stop was asked for and the boundary is safe.
    async fn park_if_asked(&mut self, steps: &[journal::StepRecord], idx: usize) -> Result<()> {
        let plan: Vec<Step> = steps.iter().map(|s| s.step.clone()).collect();
        let name = steps[idx].step.name();
        let mut window = false;
        let (state, why) = if pause_due(
            &plan,
            idx,
            &self.facts.pause_before,
            &self.facts.pauses_done,
        ) {
            self.facts.pauses_done.push(idx);
            (
                RunState::Paused,
                format!("paused before step {} ({name}) as asked", idx + 1),
            )
        } else if safe_boundary(&plan, idx) && (stop_asked() || self.stop_requested(idx).await?) {
            (
                RunState::Stopped,
                format!("stopped before step {} ({name}) as asked", idx + 1),
            )
        } else if let Some(why) = super::window_gate::closed(self, &steps[idx].step).await {
            window = true;
            (RunState::Paused, why)
        } else {
            return Ok(());
        };
        self.note(
            "",
            Kind::Parked,
            json!({ "state": state, "before_step": idx + 1, "name": name }),
        );
        self.flush_timeline().await;
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
        Err(crate::exit::Parked {
            kind: if window {
                crate::exit::ParkKind::Window
            } else if state == RunState::Paused {
                crate::exit::ParkKind::Paused
            } else {
                crate::exit::ParkKind::Stopped
            },
            message: format!("run {id} {why}"),
        }
        .into())
    }

    /// Whether `hubshift stop` asked this run to stop before step `idx`,
    /// taking the request. The end of the step before usually read it
    /// already (one round trip less per step on a loaded server); only a
    /// request seen there is taken here.
    async fn stop_requested(&mut self, idx: usize) -> Result<bool> {
        match self.stop_seen.take() {
            Some((next, false)) if next == idx => Ok(false),
            _ => Ok(self.journal.take_stop_request(&self.id).await?),
        }
    }

    fn announce(&self, idx: usize, total: usize, step: &Step) {
        self.note(
            &step.node(),
            Kind::StepStarted,
            json!({ "idx": idx, "name": step.name() }),
        );
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

    /// Journals a step's end — the facts, the step done, its end in the
    /// timeline, in one statement — then says so: what a person or pipeline
    /// saw end is in the journal even if the controller dies right after.
    async fn finished(
        &mut self,
        idx: usize,
        total: usize,
        step: &Step,
        ms: u64,
        detail: &Value,
    ) -> Result<()> {
        self.note(
            &step.node(),
            Kind::StepDone,
            json!({ "idx": idx, "name": step.name() }),
        );
        self.journal_step_end(idx, detail).await?;
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
        Ok(())
    }

    async fn failed(
        &mut self,
        idx: usize,
        total: usize,
        step: &Step,
        err: &anyhow::Error,
    ) -> Result<()> {
        let text = redact(&hubshift_common::error_text::one_line(err.as_ref()));
        self.note(
            &step.node(),
            Kind::StepFailed,
            json!({ "idx": idx, "name": step.name(), "error": text }),
        );
        self.flush_timeline().await;
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
        self.journal_step_start(idx).await?;
        let t = Instant::now();
        match crate::steps::run_step(self, &step).await {
            Ok(detail) => {
                self.finished(idx, total, &step, t.elapsed().as_millis() as u64, &detail)
                    .await
            }
            Err(err) => {
                let _ = self.save_facts().await;
                if err.downcast_ref::<crate::steps::FellBack>().is_some() {
                    // The fallback undid the hand-over: a resume starts again
                    // at the primary's stop, with fresh checks.
                    let plan: Vec<Step> = steps.iter().map(|s| s.step.clone()).collect();
                    let redo = redo_from(&plan, idx);
                    let _ = self.journal.reset_steps(&self.id, redo).await;
                    self.out.event(
                        "run_fell_back",
                        json!({ "run": self.id, "group": self.group.name, "step": step.name(),
                                "next": format!("hubshift resume --run {}", self.id) }),
                        String::new,
                    );
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
            self.journal_step_start(idx).await?;
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
                    if detail["declared_version"] == "" {
                        self.apply(crate::facts::StepOutcome::Warned(format!(
                            "runtime {} staged on {} declares no version of its own (no VERSION file, release folder, runtime jar manifest or image label): nothing checked that it is {}",
                            self.facts.version,
                            step.node(),
                            self.facts.version
                        )));
                    }
                    self.finished(idx, total, step, ms, &detail).await?;
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
        self.flush_timeline().await;
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
                "pre_copy": self.facts.pre_copy.as_ref().map(|p| json!({
                    "base_id": p.base_id, "base_sha256": p.base_sha256, "base_bytes": p.base_bytes,
                    "delta": p.delta, "delta_bytes": p.delta_bytes, "delta_ms": p.delta_ms,
                    "full_because": p.full_because,
                })),
                "warnings": self.facts.warnings,
                "impossible_spans": self.facts.impossible_spans(),
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
                    let what = match w.window {
                        1 => "stop of the primary requested -> secondary seen active",
                        2 => "HA create done on the primary -> primary seen active",
                        _ => "fallback: serving node last seen -> old primary seen active again",
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
                if let Some(line) = pre_copy_line(self.facts.pre_copy.as_ref()) {
                    s.push_str(&line);
                }
                for w in &self.facts.warnings {
                    s.push_str(&format!("  warning: {w}\n"));
                }
                for w in self.facts.impossible_spans() {
                    s.push_str(&format!("  impossible span: {w}\n"));
                }
                s
            },
        );
    }
}

/// The summary's line on the pre-copy: base and delta sizes and the
/// delta's time, or why the backup was a full one.
fn pre_copy_line(p: Option<&crate::facts::PreCopy>) -> Option<String> {
    let p = p?;
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0));
    Some(
        match (p.delta, p.delta_bytes, p.delta_ms, &p.full_because) {
            (true, Some(bytes), ms, _) => format!(
                "  pre-copy: base {} {} before the stop, delta {} written in {} after it\n",
                p.base_id,
                mib(p.base_bytes),
                mib(bytes),
                ms.map(secs).unwrap_or_else(|| "?".into())
            ),
            (_, _, _, Some(why)) => format!(
                "  pre-copy: base {} {} not used, full backup instead: {why}\n",
                p.base_id,
                mib(p.base_bytes)
            ),
            _ => format!(
                "  pre-copy: base {} {} taken before the stop\n",
                p.base_id,
                mib(p.base_bytes)
            ),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::build_plan;
    use crate::testing::sample_group;

    fn journaled(done: &[usize]) -> Vec<(Step, StepState)> {
        build_plan(&sample_group(2))
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let st = if done.contains(&i) {
                    StepState::Done
                } else {
                    StepState::Pending
                };
                (s, st)
            })
            .collect()
    }

    #[test]
    fn the_summary_reports_base_and_delta_or_why_a_full_backup() {
        use crate::facts::PreCopy;
        assert_eq!(pre_copy_line(None), None);
        let mut p = PreCopy {
            base_id: "r-hub-a-base".into(),
            base_bytes: 512 * 1024 * 1024,
            delta: true,
            delta_bytes: Some(3 * 1024 * 1024),
            delta_ms: Some(420),
            ..PreCopy::default()
        };
        let line = pre_copy_line(Some(&p)).unwrap();
        assert!(
            line.contains("r-hub-a-base 512.0 MiB") && line.contains("delta 3.0 MiB"),
            "{line}"
        );
        assert!(line.contains(&secs(420)), "{line}");
        p.delta = false;
        p.delta_bytes = None;
        p.full_because = Some("base r-hub-a-base does not exist".into());
        let line = pre_copy_line(Some(&p)).unwrap();
        assert!(
            line.contains("full backup instead: base r-hub-a-base does not exist"),
            "{line}"
        );
    }

    #[test]
    fn staging_steps_run_together_and_done_ones_are_skipped() {
        let steps = journaled(&[]);
        let stages = steps
            .iter()
            .take_while(|(s, _)| matches!(s, Step::StageRuntime { .. }))
            .count();
        assert_eq!(stages, 3, "one per node");
        assert_eq!(
            next_work(&steps, 0),
            Work::Stage {
                batch: vec![0, 1, 2],
                then: 3
            }
        );
        let steps = journaled(&[0, 2]);
        assert_eq!(
            next_work(&steps, 0),
            Work::Stage {
                batch: vec![1],
                then: 3
            }
        );
        assert_eq!(next_work(&steps, 3), Work::One(3));
    }

    #[test]
    fn a_resume_starts_at_the_first_step_not_done_and_ends_when_all_are() {
        let all: Vec<usize> = (0..journaled(&[]).len()).collect();
        let steps = journaled(&all[..5]);
        assert_eq!(next_work(&steps, 0), Work::One(5));
        assert_eq!(next_work(&journaled(&all), 0), Work::Finished);
    }

    #[test]
    fn a_pause_parks_once_and_a_stop_only_outside_a_hand_over() {
        let plan = build_plan(&sample_group(2));
        let drop = plan
            .iter()
            .position(|s| matches!(s, Step::DropSchema))
            .unwrap();
        let asked = vec!["drop_schema".to_string()];
        assert!(pause_due(&plan, drop, &asked, &[]));
        assert!(!pause_due(&plan, drop, &asked, &[drop]), "paused once");
        assert!(!pause_due(&plan, drop - 1, &asked, &[]));
        let stop = plan
            .iter()
            .position(|s| matches!(s, Step::StopPrimary { .. }))
            .unwrap();
        let create = plan
            .iter()
            .position(|s| matches!(s, Step::CreateAndStart { .. }))
            .unwrap();
        assert!(safe_boundary(&plan, 0));
        assert!(
            safe_boundary(&plan, stop),
            "before the stop: the primary serves"
        );
        assert!(
            !safe_boundary(&plan, stop + 1),
            "no active node until the takeover"
        );
        assert!(
            !safe_boundary(&plan, create + 1),
            "maybe two actives until the old secondaries are down"
        );
        assert!(safe_boundary(&plan, drop));
    }

    #[test]
    fn a_fallback_sends_a_resume_back_to_the_primarys_stop() {
        let plan = build_plan(&sample_group(2));
        let stop = plan
            .iter()
            .position(|s| matches!(s, Step::StopPrimary { .. }))
            .unwrap();
        let verify = plan
            .iter()
            .position(|s| matches!(s, Step::VerifyBackup { .. }))
            .unwrap();
        assert_eq!(redo_from(&plan, stop + 1), stop);
        assert_eq!(redo_from(&plan, verify), stop);
        assert_eq!(redo_from(&plan, 1), 1, "no stop before: the step itself");
    }
}
