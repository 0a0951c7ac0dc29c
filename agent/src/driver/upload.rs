//! What every runtime store does with an InstallRuntime upload before it
//! unpacks or loads anything: one install per target at a time, the
//! header's checks, the chunks passed on with a stall limit, and the
//! received size and digest held against the header.

use super::{Chunks, RuntimeHeader};
use crate::config::LimitsSection;
use crate::error::{AgentError, Result};
use hubshift_common::names::validate_name;
use tokio_stream::StreamExt;

/// Installs running now, by what they install (a runtime directory, an
/// image tag): one install per version at a time.
static INSTALLING: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// The claim of one install on its target; released on drop.
#[derive(Debug)]
pub struct InstallClaim(String);

impl Drop for InstallClaim {
    fn drop(&mut self) {
        INSTALLING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.0);
    }
}

/// Claims `target` for one install of `version`. A second upload of a
/// version being installed is answered at once (ABORTED) rather than left
/// unread behind the first until its sender times out: the first may take
/// as long as its sender does, and the answer "installed" is only known
/// when it ends.
pub fn claim_install(target: &str, version: &str) -> Result<InstallClaim> {
    let mut installing = INSTALLING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !installing.insert(target.to_string()) {
        return Err(AgentError::Aborted(format!(
            "runtime {version} is being installed by another request now; retry when it has \
             ended (the same archive is then already installed)"
        )));
    }
    Ok(InstallClaim(target.to_string()))
}

/// Checks what every runtime store asks of a header: version, digest and
/// size (within `max_archive_bytes`); the format is the store's to judge.
pub(crate) fn check_header_fields(h: &mut RuntimeHeader, limits: &LimitsSection) -> Result<()> {
    validate_name("runtime version", &h.version)?;
    h.sha256 = h.sha256.to_ascii_lowercase();
    if h.sha256.len() != 64 || !h.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AgentError::InvalidArgument(
            "sha256 must be 64 hex digits".into(),
        ));
    }
    if h.size_bytes == 0 {
        return Err(AgentError::InvalidArgument(
            "size_bytes must be positive".into(),
        ));
    }
    if h.size_bytes > limits.max_archive_bytes {
        return Err(AgentError::InvalidArgument(format!(
            "archive of {} bytes exceeds the limit of {} bytes",
            h.size_bytes, limits.max_archive_bytes
        )));
    }
    Ok(())
}

/// Refuses an upload whose size or SHA-256 is not what its header announced.
pub(crate) fn check_received(header: &RuntimeHeader, size: u64, sha: &str) -> Result<()> {
    if size != header.size_bytes {
        return Err(AgentError::InvalidArgument(format!(
            "size mismatch: announced {} bytes, received {size}",
            header.size_bytes
        )));
    }
    if sha != header.sha256 {
        return Err(AgentError::InvalidArgument(format!(
            "checksum mismatch: expected {}, received {sha}",
            header.sha256
        )));
    }
    Ok(())
}

/// Passes the chunks that follow an upload's header to `tx` until the
/// stream ends; returns why it stopped early, if it did: more bytes than
/// announced, a failed stream (which says why), or a stall
/// (a controller that vanished without closing sends nothing more; without
/// a limit its staging and threads would stay). Shared by every runtime store.
pub async fn receive_chunks(
    chunks: &mut Chunks,
    tx: &tokio::sync::mpsc::Sender<Vec<u8>>,
    header: &RuntimeHeader,
    limits: &LimitsSection,
) -> Option<AgentError> {
    let idle = std::time::Duration::from_secs(limits.upload_idle_timeout_secs);
    let mut received = 0u64;
    loop {
        let Ok(next) = tokio::time::timeout(idle, chunks.next()).await else {
            return Some(AgentError::DeadlineExceeded(format!(
                "upload of runtime {} stalled: nothing received for {} s (limits.upload_idle_timeout_secs)",
                header.version, limits.upload_idle_timeout_secs
            )));
        };
        let chunk = match next? {
            Ok(chunk) => chunk,
            Err(why) => return Some(why),
        };
        received += chunk.len() as u64;
        if received > header.size_bytes {
            return Some(AgentError::InvalidArgument(format!(
                "more bytes than the announced {}",
                header.size_bytes
            )));
        }
        if tx.send(chunk).await.is_err() {
            return None;
        }
    }
}
