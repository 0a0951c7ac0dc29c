//! A report opened in a real browser: headless Chromium (Debian's
//! `chromium`) renders the page, gives back the DOM it built and a PNG
//! screenshot, and every console message it logged.

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
