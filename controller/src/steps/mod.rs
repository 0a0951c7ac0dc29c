//! What each plan step does. Every step is idempotent (it first looks at
//! what is already true) and checks its outcome by observation — agent
//! Status and the database — rather than trusting an RPC's return alone.

mod backup;
mod fallback;
mod handback;
mod secondary;
mod stage;
mod takeover;
mod verify;
mod wait;

pub use fallback::{FellBack, await_active_again, start_unless_running};
pub use handback::{HandBack, hand_back};
pub use stage::{archive_format, stage_runtime};
pub use takeover::{
    PrimaryStopped, TAKEOVER_MARGIN, TakeoverWait, stop_primary_if_safe, wait_for_takeover,
};
pub use verify::verify_group;

use crate::plan::Step;
use crate::run::context::Run;
use anyhow::Result;
use backup::{backup, base_backup, drop_schema, restore_backup, verify_backup};
use handback::{activate, await_handback, create_and_start};
use secondary::{await_standby, copy_certificate, start_secondary};
use serde_json::Value;
use takeover::{await_takeover, stop_primary};

/// Runs one (non-staging) step; returns what it observed, for the journal.
pub async fn run_step(run: &mut Run, step: &Step) -> Result<Value> {
    match step {
        Step::StageRuntime { node } => {
            let agent = run.agent(node)?.clone();
            let bar = run
                .out()
                .bytes_bar(run.facts().runtime_bytes, &format!("upload to {node}"));
            stage_runtime(&agent, run.runtime_file(), run.facts(), bar).await
        }
        Step::BaseBackup { node } => base_backup(run, node).await,
        Step::StopPrimary { node } => stop_primary(run, node).await,
        Step::AwaitTakeover { candidates } => await_takeover(run, candidates).await,
        Step::Backup { node } => backup(run, node).await,
        Step::VerifyBackup { node } => verify_backup(run, node).await,
        Step::DropSchema => drop_schema(run).await,
        Step::RestoreBackup { node } => restore_backup(run, node).await,
        Step::ActivateRuntime { node } | Step::ActivateSecondaryRuntime { node } => {
            activate(run, node).await
        }
        Step::CreateAndStart { node } => create_and_start(run, node).await,
        Step::AwaitHandback {
            primary,
            secondaries,
        } => await_handback(run, primary, secondaries).await,
        Step::CopyCertificate { from, to } => copy_certificate(run, from, to).await,
        Step::StartSecondary { node } => start_secondary(run, node).await,
        Step::AwaitStandby { node } => await_standby(run, node).await,
    }
}

#[cfg(test)]
mod tests {
    use super::fallback::*;
    use super::handback::*;
    use super::stage::*;
    use super::takeover::*;
    use super::wait::*;
    use crate::agents::Agent;
    use crate::hub::{RuntimeFormat, StartMode};
    use crate::inventory::TimeoutsSection;
    use crate::output::Output;
    use std::time::Duration;
    use tokio::time::Instant;

    #[test]
    fn archive_format_follows_the_file_name() {
        let f = |n: &str| archive_format(std::path::Path::new(n));
        assert_eq!(f("intelligencehub-4.2.0.zip"), RuntimeFormat::Zip);
        assert_eq!(
            f("HighByte-Intelligence-Hub-4.5.0_Docker_Build-1.TAR"),
            RuntimeFormat::DockerImage
        );
        assert_eq!(f("hubsim-runtime-4.2.0.tar.gz"), RuntimeFormat::TarGz);
        assert_eq!(f("runtime"), RuntimeFormat::TarGz);
    }

    /// The never-two-actives logic against fake agents, under tokio's
    /// paused clock: the takeover, fallback and shutdown timeouts (minutes
    /// of virtual time) pass in milliseconds.
    mod never_two_actives {
        use super::*;
        use crate::testing::fake_agent::{FakeGroup, Hub, OnNewSchema, Takeover};
        use hubshift_common::pb::{HubRole, HubState};
        use tonic::Code;

        const RPC: Duration = Duration::from_secs(30);

        fn timeouts() -> TimeoutsSection {
            TimeoutsSection::default()
        }

        fn quiet() -> Output {
            Output::with_bars(true, false)
        }

        async fn refused(g: &FakeGroup, secondaries: &[&str]) -> String {
            let p = g.agent("p", RPC);
            let others: Vec<Agent> = secondaries.iter().map(|n| g.agent(n, RPC)).collect();
            let e = stop_primary_if_safe(&p, &others, Duration::from_secs(60))
                .await
                .expect_err("the stop must be refused");
            assert_eq!(g.calls("p", "Stop"), 0, "the primary was asked to stop");
            assert!(
                g.hub("p").expect("p").is_serving(),
                "the primary no longer serves"
            );
            e.to_string()
        }

        #[tokio::test(start_paused = true)]
        async fn the_primary_is_not_stopped_without_a_live_standby() {
            let cases: [(&str, Hub, &str); 4] = [
                ("stopped", Hub::stopped("1.0"), "its hub is stopped"),
                (
                    "frozen",
                    Hub::standby("1.0").frozen(),
                    "its hub process is frozen",
                ),
                (
                    "unknown role",
                    Hub::standby("1.0").role(HubRole::Unknown),
                    "its role is unknown, not standby",
                ),
                (
                    "active too",
                    Hub::active("1.0"),
                    "its role is active, not standby",
                ),
            ];
            for (case, secondary, reason) in cases {
                let g = FakeGroup::new()
                    .with("p", Hub::active("1.0"))
                    .with("s", secondary);
                let e = refused(&g, &["s"]).await;
                assert!(
                    e.contains("refusing to stop the active primary p"),
                    "{case}: {e}"
                );
                assert!(e.contains(&format!("s: {reason}")), "{case}: {e}");
                assert!(e.contains("nothing was changed"), "{case}: {e}");
            }
        }

        #[tokio::test(start_paused = true)]
        async fn a_secondary_whose_agent_fails_does_not_count_as_ready() {
            let g = FakeGroup::new()
                .with("p", Hub::active("1.0"))
                .with("s", Hub::standby("1.0"));
            g.fail("s", "Status", Code::PermissionDenied, None);
            let e = refused(&g, &["s"]).await;
            assert!(
                e.contains("s: agent of s: Status failed (PermissionDenied)"),
                "{e}"
            );
            // A hanging agent is given up on after its retries: no answer
            // is no standby either.
            let g = FakeGroup::new()
                .with("p", Hub::active("1.0"))
                .with("s", Hub::standby("1.0"));
            g.hang("s", "Status", None);
            let e = refused(&g, &["s"]).await;
            assert!(e.contains("DeadlineExceeded"), "{e}");
        }

        #[tokio::test(start_paused = true)]
        async fn one_live_standby_among_several_is_enough() {
            let g = FakeGroup::new()
                .with("p", Hub::active("1.0"))
                .with("s1", Hub::standby("1.0").frozen())
                .with("s2", Hub::standby("1.0"));
            let others = [g.agent("s1", RPC), g.agent("s2", RPC)];
            let r = stop_primary_if_safe(&g.agent("p", RPC), &others, Duration::from_secs(60))
                .await
                .expect("stop");
            assert!(r.was_running && !r.killed);
            assert_eq!(g.hub("p").expect("p").state, HubState::Stopped);
        }

        #[tokio::test(start_paused = true)]
        async fn a_primary_that_is_no_longer_active_is_stopped_without_asking() {
            // A repeat after a crash: the primary is down already and the
            // secondary took over; asking for a standby would refuse.
            let g = FakeGroup::new()
                .with("p", Hub::stopped("1.0"))
                .with("s", Hub::active("1.0"));
            let r = stop_primary_if_safe(
                &g.agent("p", RPC),
                &[g.agent("s", RPC)],
                Duration::from_secs(60),
            )
            .await
            .expect("stop");
            assert!(!r.was_running);
            assert_eq!(g.calls("s", "Status"), 0);
        }

        async fn stop_p(g: &FakeGroup) {
            stop_primary_if_safe(
                &g.agent("p", RPC),
                &[g.agent("s", RPC)],
                Duration::from_secs(60),
            )
            .await
            .expect("stop");
        }

        #[tokio::test(start_paused = true)]
        async fn the_takeover_wait_ends_when_the_standby_is_active() {
            let g = FakeGroup::new()
                .with("p", Hub::active("1.0"))
                .with("s", Hub::standby("1.0"))
                .takeover(Takeover::After(Duration::from_secs(10)));
            stop_p(&g).await;
            let began = Instant::now();
            let r = wait_for_takeover(&[g.agent("s", RPC)], Duration::from_secs(120), HUB_T).await;
            assert!(
                matches!(&r, TakeoverWait::Active { node, .. } if node == "s"),
                "{r:?}"
            );
            let waited = began.elapsed();
            assert!(
                waited >= Duration::from_secs(10) && waited <= Duration::from_secs(10) + POLL,
                "waited {waited:?}"
            );
        }

        #[tokio::test(start_paused = true)]
        async fn when_nobody_takes_over_the_old_primary_serves_again() {
            let g = FakeGroup::new()
                .with("p", Hub::active("1.0"))
                .with("s", Hub::standby("1.0"))
                .takeover(Takeover::Never);
            stop_p(&g).await;
            let began = Instant::now();
            let r = wait_for_takeover(&[g.agent("s", RPC)], Duration::from_secs(120), HUB_T).await;
            let TakeoverWait::TimedOut(why) = r else {
                panic!("expected a timeout, got {r:?}");
            };
            assert!(
                why.contains("no secondary became active within 120s (s standby)"),
                "{why}"
            );
            assert!(began.elapsed() >= Duration::from_secs(120));
            // The fallback: the untouched old primary is started again and
            // is active; the standby stays standby.
            let p = g.agent("p", RPC);
            start_unless_running(&p, "jdbc", &timeouts())
                .await
                .expect("start");
            await_active_again(&p, &timeouts()).await.expect("active");
            assert!(g.hub("p").expect("p").is_serving());
            assert_eq!(g.hub("s").expect("s").role, HubRole::Standby);
            assert_eq!(g.calls("p", "Start"), 1);
            assert_eq!(g.split_brain(), Duration::ZERO);
        }

        #[tokio::test(start_paused = true)]
        async fn the_fallback_does_not_start_a_primary_that_runs() {
            let g = FakeGroup::new().with("p", Hub::active("1.0"));
            let p = g.agent("p", RPC);
            start_unless_running(&p, "jdbc", &timeouts())
                .await
                .expect("start");
            await_active_again(&p, &timeouts()).await.expect("active");
            assert_eq!(g.calls("p", "Start"), 0);
        }

        #[tokio::test(start_paused = true)]
        async fn the_fallback_fails_when_the_old_primary_ends_while_starting() {
            let g = FakeGroup::new().with("p", Hub::stopped("1.0"));
            let p = g.agent("p", RPC);
            start_unless_running(&p, "jdbc", &timeouts())
                .await
                .expect("start");
            g.set("p", |h| {
                h.state = HubState::Exited;
                h.exit_code = Some(1);
            });
            let e = await_active_again(&p, &timeouts())
                .await
                .expect_err("ended");
            assert!(
                e.to_string()
                    .contains("p ended while starting (exited (code 1))"),
                "{e}"
            );
        }

        #[tokio::test(start_paused = true)]
        async fn a_wait_with_no_secondary_running_ends_early() {
            let g = FakeGroup::new()
                .with("p", Hub::active("1.0"))
                .with("s", Hub::standby("1.0"))
                .takeover(Takeover::Never);
            stop_p(&g).await;
            // The secondary crashes right after the primary stopped.
            g.set("s", |h| h.state = HubState::Exited);
            let began = Instant::now();
            let r = wait_for_takeover(&[g.agent("s", RPC)], Duration::from_secs(120), HUB_T).await;
            assert!(
                matches!(&r, TakeoverWait::NoneRunning(why) if why.contains("no secondary is running")),
                "{r:?}"
            );
            assert!(
                began.elapsed() < Duration::from_secs(1),
                "{:?}",
                began.elapsed()
            );
        }

        /// The hubs' own takeover time in these tests.
        const HUB_T: Duration = Duration::from_secs(10);

        #[tokio::test(start_paused = true)]
        async fn a_secondary_frozen_after_the_stop_costs_the_hubs_takeover_time_not_the_timeout() {
            let g = FakeGroup::new()
                .with("p", Hub::active("1.0"))
                .with("s", Hub::standby("1.0"))
                .takeover(Takeover::After(Duration::from_secs(10)));
            stop_p(&g).await;
            // Frozen right after the stop's readiness check.
            g.set("s", |h| h.frozen = true);
            let began = Instant::now();
            let r = wait_for_takeover(&[g.agent("s", RPC)], Duration::from_secs(120), HUB_T).await;
            let TakeoverWait::NoneRunning(why) = &r else {
                panic!("expected a fallback before the timeout, got {r:?}");
            };
            assert!(why.contains("s standby, frozen"), "{why}");
            assert!(why.contains("timeouts.hub_takeover"), "{why}");
            let waited = began.elapsed();
            assert!(
                waited >= HUB_T + TAKEOVER_MARGIN && waited <= HUB_T + TAKEOVER_MARGIN + 2 * POLL,
                "waited {waited:?}"
            );
        }

        #[tokio::test(start_paused = true)]
        async fn a_secondary_that_thaws_within_the_hubs_takeover_time_takes_over() {
            let g = FakeGroup::new()
                .with("p", Hub::active("1.0"))
                .with("s", Hub::standby("1.0"))
                .takeover(Takeover::After(Duration::from_secs(4)));
            stop_p(&g).await;
            g.set("s", |h| h.frozen = true);
            let thaw = {
                let g = g.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    g.set("s", |h| h.frozen = false);
                })
            };
            let r = wait_for_takeover(&[g.agent("s", RPC)], Duration::from_secs(120), HUB_T).await;
            thaw.await.expect("thaw");
            assert!(
                matches!(&r, TakeoverWait::Active { node, .. } if node == "s"),
                "{r:?}"
            );
        }

        #[tokio::test(start_paused = true)]
        async fn an_unanswering_secondary_gets_the_whole_timeout() {
            let g = FakeGroup::new()
                .with("p", Hub::active("1.0"))
                .with("s", Hub::standby("1.0"));
            stop_p(&g).await;
            g.hang("s", "Status", None);
            let r = wait_for_takeover(&[g.agent("s", RPC)], Duration::from_secs(120), HUB_T).await;
            assert!(matches!(r, TakeoverWait::TimedOut(_)), "{r:?}");
        }

        /// The group after HA `create` on the upgraded primary `p`, with
        /// the old secondary `s` active since it took over.
        async fn created(on_new_schema: OnNewSchema, start_delay: Duration) -> FakeGroup {
            let g = FakeGroup::new()
                .with("p", Hub::stopped("2.0"))
                .with("s", Hub::active("1.0"))
                .on_new_schema(on_new_schema)
                .start_delay(start_delay);
            g.agent("p", RPC)
                .start(
                    StartMode::CreateAndStart,
                    "p",
                    "jdbc",
                    Duration::from_secs(300),
                )
                .await
                .expect("create and start");
            g
        }

        #[tokio::test(start_paused = true)]
        async fn an_old_secondary_that_shuts_itself_down_is_left_alone() {
            let g = created(OnNewSchema::ShutDown, Duration::from_secs(2)).await;
            let back = hand_back(
                &g.agent("p", RPC),
                &[g.agent("s", RPC)],
                "jdbc",
                &timeouts(),
                None,
                &quiet(),
            )
            .await
            .expect("hand back");
            assert!(back.stopped_by_us.is_empty());
            assert_eq!(back.down.len(), 1);
            assert_eq!(g.calls("s", "Stop"), 0);
            assert!(g.hub("p").expect("p").is_serving());
            assert_eq!(g.split_brain(), Duration::ZERO);
        }

        #[tokio::test(start_paused = true)]
        async fn an_old_secondary_still_active_with_the_upgraded_primary_is_stopped_within_a_poll()
        {
            let g = created(OnNewSchema::KeepRunning, Duration::from_secs(2)).await;
            let back = hand_back(
                &g.agent("p", RPC),
                &[g.agent("s", RPC)],
                "jdbc",
                &timeouts(),
                None,
                &quiet(),
            )
            .await
            .expect("hand back");
            assert_eq!(back.stopped_by_us, ["s"]);
            assert!(!g.hub("s").expect("s").is_running());
            assert!(g.hub("p").expect("p").is_serving());
            let split = g.split_brain();
            assert!(split <= POLL, "two actives for {split:?}");
        }

        #[tokio::test(start_paused = true)]
        async fn an_old_secondary_is_stopped_after_the_shutdown_timeout_before_the_primary_is_active()
         {
            // The upgraded primary takes longer to start than the old
            // secondary is given to shut itself down.
            let g = created(OnNewSchema::KeepRunning, Duration::from_secs(90)).await;
            let began = Instant::now();
            let back = hand_back(
                &g.agent("p", RPC),
                &[g.agent("s", RPC)],
                "jdbc",
                &timeouts(),
                None,
                &quiet(),
            )
            .await
            .expect("hand back");
            assert_eq!(back.stopped_by_us, ["s"]);
            assert!(began.elapsed() >= Duration::from_secs(90));
            assert_eq!(g.split_brain(), Duration::ZERO);
        }

        #[tokio::test(start_paused = true)]
        async fn a_primary_that_cannot_be_started_again_fails_the_hand_back() {
            let g = created(OnNewSchema::ShutDown, Duration::from_secs(2)).await;
            g.fail("p", "Start", Code::FailedPrecondition, None);
            g.set("p", |h| h.state = HubState::Exited);
            let e = hand_back(
                &g.agent("p", RPC),
                &[g.agent("s", RPC)],
                "jdbc",
                &timeouts(),
                None,
                &quiet(),
            )
            .await
            .expect_err("no primary");
            assert!(
                e.to_string().contains("Start failed (FailedPrecondition)"),
                "{e}"
            );
            assert_eq!(g.calls("p", "Start"), 2, "the create, then one start again");
        }
    }
}
