//! Where the sandbox keeps files that no disk needs to hold: memory
//! (`/dev/shm`) when the machine has it with room to spare. A fleet's two
//! hundred agents and its database server creating and deleting files at
//! once on one disk made the file system's inode allocation a contended
//! part of every step, which hosts of their own would not share.

use std::path::Path;

/// `/dev/shm` when it is a directory with at least `room` bytes free,
/// else `None` (use the temporary directory).
pub fn memory_dir(room: u64) -> Option<&'static Path> {
    let shm = Path::new("/dev/shm");
    (shm.is_dir() && hubshift_common::disk::available_bytes(shm).is_some_and(|free| free >= room))
        .then_some(shm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_used_only_with_the_room_asked_for() {
        if Path::new("/dev/shm").is_dir() {
            assert_eq!(memory_dir(0), Some(Path::new("/dev/shm")));
        }
        assert_eq!(memory_dir(u64::MAX), None);
    }
}
