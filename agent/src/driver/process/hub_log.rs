//! `<state>/hub.log`: the hub's output, with the JDBC URI masked where it
//! passes through the agent, read back for error messages, and kept under
//! its cap.

use crate::error::{AgentError, Result};
use hubshift_common::redact::{Secret, redact_with};
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// Copies lines of `from` into the log, masking the secret and passwords.
pub(super) fn copy_masked<R>(
    from: R,
    log: Arc<std::fs::File>,
    jdbc: Secret,
) -> tokio::task::JoinHandle<()>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    use tokio::io::AsyncBufReadExt;
    tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(from);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let text = redact_with(&String::from_utf8_lossy(&line), &[jdbc.expose()]);
            let _ = (&*log).write_all(text.as_bytes());
        }
    })
}

/// Last 2 KiB of hub.log after `offset`, with the secret masked.
pub(super) fn log_tail(path: &Path, offset: u64, jdbc: &Secret) -> String {
    const TAIL: u64 = 2048;
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = offset.max(len.saturating_sub(TAIL));
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(from)).is_err() || f.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    redact_with(text.trim(), &[jdbc.expose()])
}

/// Cuts `path` back to its last half when longer than `max`. Returns the
/// number of bytes removed from the front.
pub fn cut_log(path: &Path, max: u64) -> Result<u64> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(AgentError::io("cannot open", path)(e)),
    };
    let len = file
        .metadata()
        .map_err(AgentError::io("cannot stat", path))?
        .len();
    if len <= max {
        return Ok(0);
    }
    let keep = max / 2;
    let cut = len - keep;
    let mut buf = vec![0u8; 256 * 1024];
    let mut read_pos = cut;
    let mut write_pos = 0u64;
    file.seek(SeekFrom::Start(read_pos))
        .map_err(AgentError::io("cannot seek", path))?;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(AgentError::io("cannot read", path))?;
        if n == 0 {
            break;
        }
        file.write_all_at(&buf[..n], write_pos)
            .map_err(AgentError::io("cannot write", path))?;
        read_pos += n as u64;
        write_pos += n as u64;
        file.seek(SeekFrom::Start(read_pos))
            .map_err(AgentError::io("cannot seek", path))?;
    }
    file.set_len(write_pos)
        .map_err(AgentError::io("cannot truncate", path))?;
    Ok(read_pos - write_pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_cut_keeps_the_last_half() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hub.log");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        assert_eq!(cut_log(&p, 20_000).unwrap(), 0);
        let cut = cut_log(&p, 8_000).unwrap();
        assert_eq!(cut, 6_000);
        assert_eq!(std::fs::read(&p).unwrap(), &data[6_000..]);
    }
}
