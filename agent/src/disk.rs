//! Free disk space of the managed directories (statvfs), and the size of a
//! tree (what a backup of it will hold), so the controller can check for room
//! before an outage starts.

use std::path::Path;

/// Bytes available to unprivileged users on the filesystem holding `path`
/// (or its nearest existing ancestor); 0 when unknown.
pub fn free_bytes(path: &Path) -> u64 {
    let mut at = Some(path);
    while let Some(p) = at {
        if p.exists() {
            return hubshift_common::disk::available_bytes(p).unwrap_or(0);
        }
        at = p.parent();
    }
    0
}

/// Sum of the sizes of the regular files under `dir`, not following
/// symlinks; unreadable entries count as 0.
pub fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                total = total.saturating_add(meta.len());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    #[test]
    fn tree_bytes_sums_files_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/x"), [0u8; 100]).unwrap();
        std::fs::write(dir.path().join("a/b/y"), [0u8; 23]).unwrap();
        std::os::unix::fs::symlink("/usr", dir.path().join("link")).unwrap();
        assert_eq!(super::tree_bytes(dir.path()), 123);
    }

    #[test]
    fn tmp_has_room_and_missing_paths_use_the_ancestor() {
        assert!(super::free_bytes(std::path::Path::new("/tmp")) > 0);
        assert!(super::free_bytes(std::path::Path::new("/tmp/does/not/exist")) > 0);
    }
}
