//! The demo's report: `hubshift report` of the run just made, with the
//! data-tick gaps the sandbox measured as a second track, so the windows
//! the controller reported and the real gaps can be compared by eye.

use crate::demo_args::hubshift_command;
use crate::measure::Window;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The newest run in the sandbox's journal.
async fn newest_run(inventory: &Path) -> anyhow::Result<String> {
    let out = hubshift_command()?
        .args(["runs", "--json", "--limit", "1", "-i"])
        .arg(inventory)
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "hubshift runs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "run")
        .and_then(|v| v["id"].as_str().map(String::from))
        .ok_or_else(|| anyhow::anyhow!("hubshift runs listed no run"))
}

/// Writes the report of the newest run to `to` (default: the system's
/// temporary directory, so it outlives the sandbox) and returns its path.
pub(crate) async fn write(
    inventory: &Path,
    scratch: &Path,
    measured: &[Window],
    to: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    let run = newest_run(inventory).await?;
    let gaps: Vec<serde_json::Value> = measured
        .iter()
        .map(|w| {
            serde_json::json!({
                "start_ms": unix_ms(w.start), "end_ms": unix_ms(w.end),
                "from": w.from_node, "to": w.to_node,
            })
        })
        .collect();
    let gaps_file = scratch.join("measured-gaps.json");
    std::fs::write(&gaps_file, serde_json::to_vec(&gaps)?)?;
    let path = match to {
        Some(p) => p.to_path_buf(),
        None => std::env::temp_dir().join(format!("hubshift-report-{run}.html")),
    };
    let status = hubshift_command()?
        .args(["report", "--run", &run, "-o"])
        .arg(&path)
        .arg("--measured-gaps")
        .arg(&gaps_file)
        .arg("-i")
        .arg(inventory)
        .status()
        .await?;
    anyhow::ensure!(status.success(), "hubshift report failed ({status})");
    Ok(path)
}
