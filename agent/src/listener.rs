//! The accept loop in front of tonic. The agent listens on a network port
//! of a production host, so strangers must not be able to use up its file
//! descriptors or its attention: every connection holds one of
//! `limits.max_connections` slots; the TLS handshake runs in its own task
//! with a timeout; at the cap the oldest connection still in its handshake
//! is dropped to make room (a flood of silent connections cannot lock out
//! the controller, whose handshake takes milliseconds); accept errors are
//! logged at most every few seconds and followed by a pause when the
//! process is out of descriptors; TCP keepalive finds dead peers.

use crate::config::{LimitsSection, TlsSection};
use crate::metrics::{Counters, OpenConnection};
use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// A connection past its handshake, holding its slot (and its place in
/// the open-connections count) until tonic drops it.
pub struct Conn<IO> {
    io: IO,
    _slot: OwnedSemaphorePermit,
    _open: OpenConnection,
}

impl<IO: Connected> Connected for Conn<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Conn<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Conn<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The rustls server configuration: the agent's certificate, client
/// certificates required and checked against `client_ca`, HTTP/2 only.
pub fn tls_config(tls: &TlsSection) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("certificate file {}", tls.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .with_context(|| format!("private key file {}", tls.key.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&tls.client_ca)
        .with_context(|| format!("client CA file {}", tls.client_ca.display()))?
    {
        let ca = ca.with_context(|| format!("client CA file {}", tls.client_ca.display()))?;
        roots
            .add(ca)
            .with_context(|| format!("client CA file {}", tls.client_ca.display()))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .context("client certificate verifier")?;
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .context("certificate and key do not fit together")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts on `listener` and yields the connections whose `handshake`
/// finished in time, within the limits above.
pub fn incoming<IO, H, F>(
    listener: TcpListener,
    limits: LimitsSection,
    counters: Counters,
    handshake: H,
) -> ReceiverStream<io::Result<Conn<IO>>>
where
    H: Fn(TcpStream) -> F + Send + 'static,
    F: Future<Output = io::Result<IO>> + Send + 'static,
    IO: Send + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(accept_loop(listener, limits, counters, handshake, tx));
    ReceiverStream::new(rx)
}

async fn accept_loop<IO, H, F>(
    listener: TcpListener,
    limits: LimitsSection,
    counters: Counters,
    handshake: H,
    out: mpsc::Sender<io::Result<Conn<IO>>>,
) where
    H: Fn(TcpStream) -> F + Send + 'static,
    F: Future<Output = io::Result<IO>> + Send + 'static,
    IO: Send + 'static,
{
    let max = limits.max_connections as usize;
    let slots = Arc::new(Semaphore::new(max));
    let handshake_timeout = Duration::from_secs(limits.tls_handshake_timeout_secs);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(limits.keepalive_interval_secs))
        .with_interval(Duration::from_secs(
            limits.keepalive_interval_secs.div_ceil(3),
        ));
    // Handshakes in progress, oldest first; dropping a sender cancels one.
    let mut handshaking: VecDeque<oneshot::Sender<()>> = VecDeque::new();
    let mut errors = RateLimited::new(Duration::from_secs(10));
    let mut at_cap = RateLimited::new(Duration::from_secs(10));
    loop {
        handshaking.retain(|h| !h.is_closed());
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if let Some(oldest) = handshaking.pop_front() {
                    tracing::debug!("connection cap reached: dropping the oldest handshake");
                    counters.connections_refused.inc();
                    drop(oldest);
                } else if at_cap.allow() {
                    tracing::warn!(
                        max_connections = max,
                        "connection cap reached (limits.max_connections): new connections wait"
                    );
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => return,
                    },
                    _ = out.closed() => return,
                }
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = out.closed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                if errors.allow() {
                    tracing::warn!(error = %e, suppressed = errors.take_suppressed(), "cannot accept a connection");
                }
                if out_of_resources(&e) {
                    // Retrying at once would spin: give descriptors time to free.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
            tracing::debug!(%peer, error = %e, "cannot set TCP keepalive");
        }
        let (cancel, cancelled) = oneshot::channel();
        handshaking.push_back(cancel);
        let out = out.clone();
        let counters = counters.clone();
        let shake = handshake(stream);
        tokio::spawn(async move {
            let result = tokio::select! {
                _ = cancelled => {
                    tracing::debug!(%peer, "handshake dropped to make room");
                    return;
                }
                r = tokio::time::timeout(handshake_timeout, shake) => r,
            };
            match result {
                Ok(Ok(io)) => {
                    let open = OpenConnection::count(&counters);
                    let _ = out
                        .send(Ok(Conn {
                            io,
                            _slot: slot,
                            _open: open,
                        }))
                        .await;
                }
                Ok(Err(e)) => {
                    counters.tls_handshake_failures.inc();
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    counters.tls_handshake_timeouts.inc();
                    tracing::debug!(%peer, "TLS handshake timed out");
                }
            }
        });
    }
}

/// EMFILE, ENFILE, ENOBUFS, ENOMEM: accepting again at once fails again.
fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Lets one log line through per interval and counts the others.
struct RateLimited {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Whether to log now; otherwise the line is counted as suppressed.
    fn allow(&mut self) -> bool {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            self.suppressed += 1;
            return false;
        }
        self.last = Some(now);
        true
    }

    /// Lines suppressed since the last call.
    fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

/// Raises the soft open-files limit to the hard one (the unit sets
/// `LimitNOFILE`) and warns when it cannot hold the connection cap.
pub fn raise_nofile_limit(max_connections: u32) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    // Connections, plus files, the hub log, backups and uploads.
    let needed = u64::from(max_connections) + 64;
    if lim.rlim_cur < needed {
        tracing::warn!(
            open_files = lim.rlim_cur,
            max_connections,
            "the open-files limit is below limits.max_connections + 64; raise LimitNOFILE or lower the cap"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_lets_one_line_through_per_interval() {
        let mut r = RateLimited::new(Duration::from_secs(3600));
        assert!(r.allow());
        for _ in 0..1000 {
            assert!(!r.allow());
        }
        assert_eq!(r.take_suppressed(), 1000);
        assert_eq!(r.take_suppressed(), 0);
        let mut r = RateLimited::new(Duration::ZERO);
        assert!(r.allow() && r.allow());
    }

    #[test]
    fn out_of_descriptors_is_out_of_resources() {
        assert!(out_of_resources(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(!out_of_resources(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
    }
}
