//! End to end, in a real terminal: `hubshift upgrade` without `--json` runs
//! in a tmux pane (a pseudo-terminal, so its progress bars are drawn), and
//! what a person would see is read back from tmux: the step lines whole and
//! each on its own line, a bar drawn while the runtime uploads, and no bar
//! left on screen once the run is over.
//!
//! Needs `tmux` (`apt-get install tmux`; `.ci/run` installs it).

mod support;

use hubshift_sim::runtime::{archive_name, shell_quote};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::*;

const FROM: &str = "4.1.0";
const TO: &str = "4.2.0";
/// Random (incompressible) bytes added to the runtime archive, so that its
/// upload lasts long enough for the bars to be drawn many times (indicatif
/// draws at most 20 times a second).
const BALLAST_MIB: usize = 64;
/// The pane: wide enough that no step line wraps (longer lines, such as
/// preflight warnings, wrap and are joined back when read).
const COLUMNS: u32 = 200;
const ROWS: u32 = 60;

/// A private tmux server (its socket in a temp dir of its own), killed when
/// dropped, also when the test panics.
struct Tmux {
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmux {
    /// Starts a server whose one session `hubshift` runs `script` in a
    /// COLUMNS x ROWS pane.
    fn start(script: &Path) -> Tmux {
        let dir = tempfile::tempdir().expect("temp dir");
        let tmux = Tmux {
            socket: dir.path().join("tmux.sock"),
            _dir: dir,
        };
        let out = tmux
            .cmd()
            .args(["new-session", "-d", "-s", "hubshift", "-x"])
            .arg(COLUMNS.to_string())
            .arg("-y")
            .arg(ROWS.to_string())
            .arg(format!("sh {}", shell_quote(&script.to_string_lossy())))
            .output()
            .unwrap_or_else(|e| panic!("tmux is needed for this test (apt-get install tmux): {e}"));
        assert!(out.status.success(), "tmux new-session: {}", stderr(&out));
        tmux
    }

    /// `tmux -S SOCKET -f /dev/null` (no user configuration).
    fn cmd(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.arg("-S").arg(&self.socket).args(["-f", "/dev/null"]);
        cmd
    }

    /// The pane as plain text: the visible screen, or with `history`
    /// everything that scrolled off it too. Rows are as the terminal shows
    /// them; `join` joins rows the terminal wrapped (a long line, or a bar
    /// padded to the full width) into one line.
    fn capture(&self, history: bool, join: bool) -> String {
        let mut cmd = self.cmd();
        cmd.args(["capture-pane", "-p", "-t", "hubshift"]);
        if join {
            cmd.arg("-J");
        }
        if history {
            cmd.args(["-S", "-", "-E", "-"]);
        }
        let out = cmd.output().expect("tmux capture-pane runs");
        assert!(out.status.success(), "tmux capture-pane: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Whether `line` is (part of) a byte progress bar.
fn is_bar(line: &str) -> bool {
    (line.contains("upload to") || line.contains("fetch backup from"))
        && line.contains("B/")
        && line.contains('[')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_in_a_terminal_draws_bars_then_clears_them_and_keeps_every_step_line_whole() {
    let (sandbox, inventory) = group_at(FROM).await;
    let big = sandbox.root.join("big").join(archive_name(TO));
    std::fs::create_dir_all(big.parent().unwrap()).unwrap();
    archives::ballasted_archive(&sandbox, TO, BALLAST_MIB, &big);
    let big_text = big.display().to_string();

    // The run, interactive (no --json), in the pane; its exit code lands in
    // a file (written whole, then renamed), and the pane stays open after it
    // so that its last screen can be read.
    let exit_file: PathBuf = sandbox.root.join("terminal-exit-code");
    let script = sandbox.root.join("terminal-run.sh");
    let mut line = vec![shell_quote(&bin("hubshift").to_string_lossy())];
    line.extend(upgrade_args(&big_text, TO).iter().map(|a| shell_quote(a)));
    line.push("-i".into());
    line.push(shell_quote(&inventory.to_string_lossy()));
    let exit_q = shell_quote(&exit_file.to_string_lossy());
    std::fs::write(
        &script,
        format!(
            "{}\necho $? > {exit_q}.tmp && mv {exit_q}.tmp {exit_q}\nexec sleep 600\n",
            line.join(" ")
        ),
    )
    .unwrap();
    let tmux = Tmux::start(&script);

    // Watch the screen while it runs.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut bar_seen: Option<String> = None;
    let mut captures = 0;
    let code = loop {
        if let Ok(code) = std::fs::read_to_string(&exit_file) {
            break code.trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "hubshift upgrade did not finish within 240 s; screen:\n{}",
            tmux.capture(true, true)
        );
        let screen = tmux.capture(false, false);
        captures += 1;
        if bar_seen.is_none()
            && let Some(l) = screen
                .lines()
                .find(|l| l.contains("upload to") && l.contains("B/"))
        {
            bar_seen = Some(l.to_string());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let all = tmux.capture(true, true);
    let rows = tmux.capture(true, false);
    let last_screen = tmux.capture(false, false);
    let shown = format!("whole pane:\n{all}\n(screen captured {captures} times while it ran)");

    // (a) The upgrade succeeded.
    assert_eq!(code, "0", "hubshift upgrade failed; {shown}");
    assert_eq!(
        sandbox.status(0).await.unwrap().active_runtime,
        TO,
        "primary upgraded"
    );

    // (d) While the runtime uploaded, a bar was really drawn.
    let bar = bar_seen.unwrap_or_else(|| {
        panic!("no progress bar ('upload to ... B/...') was ever on screen; {shown}")
    });
    assert!(
        bar.starts_with("  upload to hub-") && bar.contains("MiB"),
        "a byte bar: {bar:?}"
    );
    eprintln!("{shown}\nbar seen while uploading: {bar}");

    // (b) Every step's two lines are there, whole, each on a line of its own.
    let lines: Vec<&str> = all.lines().map(str::trim_end).collect();
    let total = 15;
    for n in 1..=total {
        let tag = format!("[{n:>2}/{total}] ");
        let at = |pred: &dyn Fn(&str) -> bool| -> Vec<usize> {
            (0..lines.len())
                .filter(|&i| lines[i].contains(&tag) && pred(lines[i]))
                .collect()
        };
        let started = at(&|l| l.ends_with(" ..."));
        let done = at(&|l| l.contains(": done in "));
        assert_eq!(started.len(), 1, "step {n} announced once; {shown}");
        assert_eq!(done.len(), 1, "step {n} done once; {shown}");
        assert!(
            started[0] < done[0],
            "step {n} announced, then done; {shown}"
        );
        let (started, done) = ([lines[started[0]]], [lines[done[0]]]);
        for l in started.iter().chain(&done) {
            assert!(
                l.starts_with(&tag),
                "step {n}: line starts with {tag:?}: {l:?}; {shown}"
            );
        }
        let finish = done[0].strip_prefix(&tag).unwrap();
        let (what, took) = finish.split_once(": done in ").unwrap();
        assert!(
            what.contains(" on ") && !what.contains('[') && !what.contains("B/"),
            "step {n}: '<step> on <node>', nothing else: {:?}; {shown}",
            done[0]
        );
        assert!(
            took.strip_suffix(" s")
                .is_some_and(|s| s.parse::<f64>().is_ok()),
            "step {n}: ends with its duration: {:?}; {shown}",
            done[0]
        );
    }
    // No line carries two step lines or a step line and a bar.
    for l in &lines {
        let tags = l.matches(&format!("/{total}] ")).count();
        assert!(tags <= 1, "two step lines on one line: {l:?}; {shown}");
        assert!(
            tags == 0 || !is_bar(l),
            "a step line and a bar on one line: {l:?}; {shown}"
        );
    }

    // The summary reports the pre-copy: base and delta sizes, the delta's time.
    assert!(
        lines.iter().any(|l| l.contains("pre-copy: base ")
            && l.contains(" MiB before the stop, delta ")
            && l.contains(" written in ")),
        "no pre-copy line in the summary; {shown}"
    );

    // (c) No bar is left, on the last screen or in the history: above all
    // none frozen at zero.
    for l in last_screen.lines().chain(rows.lines()).chain(all.lines()) {
        assert!(
            !is_bar(l),
            "a progress bar stayed on screen: {l:?}; {shown}"
        );
        assert!(!l.contains(" 0 B/"), "a bar frozen at zero: {l:?}; {shown}");
    }
    drop(tmux);
}
