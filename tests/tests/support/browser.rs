//! A report opened in a real browser: headless Chromium (Debian's
//! `chromium`) renders the page, gives back the DOM it built and a PNG
//! screenshot, and every console message it logged.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the browser made of a page.
pub struct Rendered {
    /// The DOM after loading, serialised.
    pub dom: String,
    /// Console messages (there must be none: the page has no script).
    pub console: Vec<String>,
    /// The screenshot.
    pub png: PathBuf,
}

/// Where the tests keep what a person may want to look at afterwards:
/// `<target>/test-artifacts/`.
pub fn artifacts_dir() -> PathBuf {
    let bin = super::bin("hubshift");
    let dir = bin
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("test-artifacts dir");
    dir
}

fn chromium(profile: &Path, args: &[String], page: &Path) -> std::process::Output {
    let out = Command::new("chromium")
        .args([
            "--headless",
            // As root Chromium refuses to start without this.
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap_or_else(|e| panic!("chromium does not start ({e}); apt-get install chromium"));
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn console_lines(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .map(String::from)
        .collect()
}

/// Loads `page` in headless Chromium: its DOM, its console, and a
/// screenshot of `width` x `height` written to `png`.
pub fn render(page: &Path, png: &Path, width: u32, height: u32) -> Rendered {
    let profile = tempfile::tempdir().expect("browser profile dir");
    let dom = chromium(profile.path(), &["--dump-dom".to_string()], page);
    let shot = chromium(
        profile.path(),
        &[
            format!("--screenshot={}", png.display()),
            format!("--window-size={width},{height}"),
        ],
        page,
    );
    let mut console = console_lines(&dom.stderr);
    console.extend(console_lines(&shot.stderr));
    Rendered {
        dom: String::from_utf8_lossy(&dom.stdout).into_owned(),
        console,
        png: png.to_path_buf(),
    }
}

/// Checks a rendered report page: no console message, one lane per node,
/// one bar per step attempt, every window's label, and a readable PNG.
pub fn check_page(page: &std::path::Path, png: &str, report: &Value) -> Rendered {
    let png = artifacts_dir().join(png);
    let _ = std::fs::remove_file(&png);
    let shown = render(page, &png, 1280, 1400);
    assert!(
        shown.console.is_empty(),
        "console messages: {:#?}",
        shown.console
    );
    let lanes = report["lanes"].as_array().unwrap();
    assert_eq!(
        shown.dom.matches("<g class=\"lane\"").count(),
        lanes.len(),
        "one lane per node"
    );
    for l in lanes {
        let node = l["node"].as_str().unwrap();
        assert!(
            shown.dom.contains(&format!("data-node=\"{node}\"")),
            "lane of {node}"
        );
    }
    assert_eq!(
        shown.dom.matches("<g class=\"step-bar\"").count(),
        report["steps"].as_array().unwrap().len(),
        "a bar per step attempt"
    );
    for w in report["windows"].as_array().unwrap() {
        let ms = w["duration_ms"].as_u64().unwrap();
        let label = format!("window {} · {}", w["window"], dur(ms));
        assert!(shown.dom.contains(&label), "{label} not on the page");
    }
    let bytes = std::fs::metadata(&shown.png)
        .expect("screenshot written")
        .len();
    assert!(bytes > 20_000, "screenshot of {bytes} bytes");
    shown
}

/// The report's own way of writing a length (see `report::svg::dur`).
pub fn dur(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.2} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// The windows a page lists in its table (window number, length in ms
/// read back from the label is not exact, so the label text is kept).
pub fn windows_of(html: &str) -> Vec<Value> {
    html.match_indices("<g class=\"window\" data-window=\"")
        .map(|(i, m)| {
            let rest = &html[i + m.len()..];
            let n: u64 = rest[..rest.find('"').unwrap()].parse().unwrap();
            let title = &rest[rest.find("<title>window ").unwrap() + "<title>window ".len()..];
            let label = &title[title.find(": ").unwrap() + 2..title.find(" (").unwrap()];
            json!({ "window": n, "duration_ms": ms_of(label) })
        })
        .collect()
}

/// Reads back "850 ms" or "3.25 s" as ms (to the label's precision).
fn ms_of(label: &str) -> u64 {
    if let Some(ms) = label.strip_suffix(" ms") {
        ms.parse().unwrap()
    } else {
        let s: f64 = label.strip_suffix(" s").unwrap().parse().unwrap();
        (s * 1000.0).round() as u64
    }
}
