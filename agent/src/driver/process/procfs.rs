//! The hub's process as `/proc` shows it, and signals to its group.

/// Start time (clock ticks since boot) of `pid`, field 22 of /proc/<pid>/stat.
pub fn proc_start_ticks(pid: u32) -> Option<u64> {
    let (_, ticks) = proc_stat(pid)?;
    Some(ticks)
}

/// (state char, start ticks) of `pid`.
pub(super) fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: parse
    // after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); field 22 is fields[19].
    let state = fields.first()?.chars().next()?;
    let ticks = fields.get(19)?.parse().ok()?;
    Some((state, ticks))
}

/// Whether `pid` runs (not a zombie) and started at `ticks` (0: unknown).
pub fn process_alive(pid: u32, ticks: u64) -> bool {
    match proc_stat(pid) {
        Some((state, t)) => state != 'Z' && state != 'X' && (ticks == 0 || t == ticks),
        None => false,
    }
}

/// Whether `pid` is stopped by a signal or traced (state T or t).
pub fn process_frozen(pid: u32) -> bool {
    matches!(proc_stat(pid), Some(('T' | 't', _)))
}

pub(super) fn group_exists(pgid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    unsafe { libc::kill(-pgid, 0) == 0 }
}

pub(super) fn signal_group(pgid: i32, sig: i32) {
    if pgid <= 1 {
        return;
    }
    // SAFETY: plain syscall on a process group we started (pgid == hub pid).
    unsafe {
        libc::kill(-pgid, sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_stat_parses() {
        let me = std::process::id();
        let ticks = proc_start_ticks(me).unwrap();
        assert!(process_alive(me, ticks));
        assert!(!process_alive(me, ticks + 1));
        assert!(!process_alive(u32::MAX - 1, 0));
    }
}
