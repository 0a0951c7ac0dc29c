//! Free space of a file system, as the agent checks it before an outage
//! and the sandbox before it keeps files in memory.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Bytes available to unprivileged users on the file system holding
/// `path` (which must exist); `None` when it cannot be read.
pub fn available_bytes(path: &Path) -> Option<u64> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a valid C string and `st` a properly sized out-buffer.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_existing_directory_has_a_size_and_a_missing_one_none() {
        assert!(super::available_bytes(std::path::Path::new("/tmp")).is_some_and(|b| b > 0));
        assert_eq!(
            super::available_bytes(std::path::Path::new("/does/not/exist")),
            None
        );
    }
}
