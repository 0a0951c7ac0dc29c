//! Free disk space of the managed directories (statvfs).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Bytes available to unprivileged users on the filesystem holding `path`
/// (or its nearest existing ancestor); 0 when unknown.
pub fn free_bytes(path: &Path) -> u64 {
    let mut at = Some(path);
    while let Some(p) = at {
        if p.exists() {
            return statvfs_free(p).unwrap_or(0);
        }
        at = p.parent();
    }
    0
}

fn statvfs_free(path: &Path) -> Option<u64> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a valid C string and `st` a properly sized out-buffer.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tmp_has_room_and_missing_paths_use_the_ancestor() {
        assert!(super::free_bytes(std::path::Path::new("/tmp")) > 0);
        assert!(super::free_bytes(std::path::Path::new("/tmp/does/not/exist")) > 0);
    }
}
