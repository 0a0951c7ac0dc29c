//! Store and forward: ticks that could not be written to the database are
//! appended, one JSON line each, to `intelligencehub-writestore-ticks.sf` in
//! the store-and-forward directory (`directories.storeForwardData`, else the
//! runtime directory — named like the real hub's files, so the agent carries
//! them across a runtime switch). Replay first renames that file to
//! `intelligencehub-writestore-ticks-replay-<nanos>.sf` (new ticks go to a
//! fresh file), inserts its lines with their original `produced_at` and
//! deletes it once the database has them. Only files with that prefix are
//! read: anything else in the runtime directory is not ours.

use super::schema::TickRow;
use std::fs;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Name prefix of every store-and-forward file, as the real hub's.
pub const PREFIX: &str = "intelligencehub-writestore-";
/// File new ticks are appended to.
pub const CURRENT_FILE: &str = "intelligencehub-writestore-ticks.sf";

/// The store-and-forward directory of one node.
#[derive(Debug, Clone)]
pub struct StoreForward {
    dir: PathBuf,
}

impl StoreForward {
    /// Uses `dir` (created on first append).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// The file new ticks go to.
    pub fn current_path(&self) -> PathBuf {
        self.dir.join(CURRENT_FILE)
    }

    /// Appends one tick.
    pub fn append(&self, tick: &TickRow) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let mut line = serde_json::to_string(tick).map_err(io::Error::other)?;
        line.push('\n');
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.current_path())?;
        f.write_all(line.as_bytes())
    }

    /// Whether any `.sf` file holds data.
    pub fn has_pending(&self) -> bool {
        self.files().map(|f| !f.is_empty()).unwrap_or(false)
    }

    /// Non-empty `.sf` files, oldest name first.
    fn files(&self) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            let ours = entry.file_name().to_string_lossy().starts_with(PREFIX)
                && path.extension().is_some_and(|e| e == "sf");
            if ours && entry.metadata()?.len() > 0 {
                out.push(path);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Moves `current.sf` aside and returns every file to replay with its
    /// ticks. Lines that do not parse (a torn last line) are skipped.
    pub fn take_batches(&self) -> io::Result<Vec<(PathBuf, Vec<TickRow>)>> {
        let current = self.current_path();
        if current.exists() {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            fs::rename(
                &current,
                self.dir
                    .join(format!("{PREFIX}ticks-replay-{nanos:024}.sf")),
            )?;
        }
        let mut out = Vec::new();
        for path in self.files()? {
            if path == current {
                continue;
            }
            let f = fs::File::open(&path)?;
            let ticks = io::BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| serde_json::from_str::<TickRow>(&l).ok())
                .collect();
            out.push((path, ticks));
        }
        Ok(out)
    }

    /// Deletes a replayed file.
    pub fn done(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(seq: i64) -> TickRow {
        TickRow {
            node: "a".into(),
            seq,
            version: "1".into(),
            produced_at_us: 1_700_000_000_000_000 + seq,
        }
    }

    #[test]
    fn appends_rotates_and_replays() {
        let dir = tempfile::tempdir().unwrap();
        let sf = StoreForward::new(&dir.path().join("storeforward"));
        assert!(!sf.has_pending());
        // Not ours: other files of a runtime directory, a set-aside file.
        fs::create_dir_all(dir.path().join("storeforward")).unwrap();
        for other in [
            "VERSION.sf",
            "hubshift-set-aside-1-intelligencehub-writestore-ticks.sf",
        ] {
            fs::write(dir.path().join("storeforward").join(other), b"x\n").unwrap();
        }
        assert!(!sf.has_pending());
        sf.append(&tick(1)).unwrap();
        sf.append(&tick(2)).unwrap();
        assert!(sf.has_pending());
        let batches = sf.take_batches().unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].1, vec![tick(1), tick(2)]);
        sf.append(&tick(3)).unwrap();
        let batches2 = sf.take_batches().unwrap();
        assert_eq!(batches2.len(), 2, "the unreplayed file stays");
        for (p, _) in batches2 {
            sf.done(&p).unwrap();
        }
        assert!(!sf.has_pending());
    }
}
