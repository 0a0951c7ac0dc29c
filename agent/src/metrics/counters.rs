//! What the agent counts as it works (connections, uploads, starts,
//! backups): shared by the listener and the service, read at each scrape.
//! Cloning shares the same counts.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

/// A float gauge (seconds, bytes beyond i64's comfort).
pub type FloatGauge = Gauge<f64, AtomicU64>;

/// The counts, each an `Arc` inside: a clone counts into the same place.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// gRPC connections past their handshake and still open.
    pub connections_open: Gauge,
    /// gRPC connections dropped at `limits.max_connections`.
    pub connections_refused: Counter,
    /// TLS handshakes cut at `limits.tls_handshake_timeout_secs`.
    pub tls_handshake_timeouts: Counter,
    /// TLS handshakes that failed (wrong CA, no client certificate, junk).
    pub tls_handshake_failures: Counter,
    /// Bytes of runtime archives accepted.
    pub upload_bytes: Counter,
    /// Uploads refused, by gRPC status code.
    pub upload_refusals: Family<Vec<(String, String)>, Counter>,
    /// Hub starts this agent made (restarts included).
    pub hub_starts: Counter,
    /// The last backup written: when (Unix seconds), its size, how long.
    pub last_backup: Arc<LastBackup>,
}

/// The last backup's numbers; zero until one is known.
#[derive(Debug, Default)]
pub struct LastBackup {
    /// Unix seconds when it was written.
    pub at: FloatGauge,
    /// Its size in bytes.
    pub bytes: FloatGauge,
    /// Seconds it took to write and check it; 0 when known only from its file.
    pub seconds: FloatGauge,
    /// Set once a backup was written by this process (then a file found at
    /// start-up no longer overrides it).
    written: std::sync::atomic::AtomicBool,
}

impl Counters {
    /// A refused upload, counted by the code the controller saw.
    pub fn upload_refused(&self, code: tonic::Code) {
        self.upload_refusals
            .get_or_create(&vec![("code".to_string(), code_name(code).to_string())])
            .inc();
    }

    /// A backup this process wrote.
    pub fn backup_written(&self, bytes: u64, seconds: f64) {
        let b = &self.last_backup;
        b.written.store(true, Ordering::Relaxed);
        b.at.set(now_secs());
        b.bytes.set(bytes as f64);
        b.seconds.set(seconds);
    }

    /// The newest backup found on disk at start-up (an agent restarted
    /// since still says when the last backup was made).
    pub fn backup_found(&self, at_secs: f64, bytes: u64) {
        let b = &self.last_backup;
        if !b.written.load(Ordering::Relaxed) {
            b.at.set(at_secs);
            b.bytes.set(bytes as f64);
        }
    }
}

/// A connection past its handshake: counted open while it lives.
#[derive(Debug)]
pub struct OpenConnection(Gauge);

impl OpenConnection {
    /// Counts one more open connection until the returned guard drops.
    pub fn count(c: &Counters) -> Self {
        c.connections_open.inc();
        Self(c.connections_open.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The code's name as gRPC spells it (a closed set: a bounded label).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
