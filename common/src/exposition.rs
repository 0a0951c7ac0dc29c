//! The HTTP face that monitoring scrapes: `/metrics` (OpenMetrics text) and
//! `/healthz`, on a listener of its own, never the gRPC port. It answers
//! nothing else and nothing but GET, and it is bounded like the agent's
//! gRPC listener: a connection cap (beyond it new connections are closed at
//! once), a deadline on reading a request's headers, and a limit on how
//! long one connection may stay open, so that strangers on the network can
//! neither hold it nor use up the process's descriptors.

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// The content type of the OpenMetrics text format, which Prometheus reads.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A boxed future, as the trait below returns.
pub type Answer<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a health check found: 200 when `ok`, else 503; `body` is one line
/// of text for a person or a probe's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Serving as it should.
    pub ok: bool,
    /// One line saying what was looked at.
    pub body: String,
}

/// What the listener serves; rendered afresh at each request.
pub trait Exposed: Send + Sync + 'static {
    /// Every metric, in the OpenMetrics text format.
    fn metrics(&self) -> Answer<'_, String>;
    /// The process's own health.
    fn health(&self) -> Answer<'_, Health>;
}

/// The bounds every connection is held to.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Connections open at once; more are closed as they arrive.
    pub max_connections: usize,
    /// A request's headers must arrive within this.
    pub header_timeout: Duration,
    /// A connection is closed after this, however busy (a scraper reconnects).
    pub connection_lifetime: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            max_connections: 16,
            header_timeout: Duration::from_secs(5),
            connection_lifetime: Duration::from_secs(300),
        }
    }
}

/// Serves `exposed` on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    bounds: Bounds,
    exposed: Arc<dyn Exposed>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(bounds.max_connections.max(1)));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "metrics listener: cannot accept");
                // Out of descriptors: retrying at once would spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics listener: connection cap reached, closing");
            drop(stream);
            continue;
        };
        let exposed = exposed.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let exposed = exposed.clone();
                async move { Ok::<_, Infallible>(answer(&*exposed, &req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(bounds.header_timeout)
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(bounds.connection_lifetime, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics connection ended"),
                Err(_) => tracing::debug!(%peer, "metrics connection closed at its lifetime"),
            }
        });
    }
}

async fn answer(exposed: &dyn Exposed, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            let body = exposed.metrics().await;
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(OPENMETRICS),
            );
            r
        }
        "/healthz" => {
            let h = exposed.health().await;
            let code = if h.ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            plain(code, format!("{}\n", h.body))
        }
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found: /metrics and /healthz are served here\n".into(),
        ),
    }
}

fn plain(code: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Fixed;

    impl Exposed for Fixed {
        fn metrics(&self) -> Answer<'_, String> {
            Box::pin(async { "# TYPE up gauge\nup 1\n# EOF\n".to_string() })
        }
        fn health(&self) -> Answer<'_, Health> {
            Box::pin(async {
                Health {
                    ok: false,
                    body: "hub unreachable".into(),
                }
            })
        }
    }

    /// What the server answered; empty when it closed (or reset) the
    /// connection without an answer.
    async fn get(addr: std::net::SocketAddr, request: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        if s.write_all(request.as_bytes()).await.is_err() {
            return String::new();
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn started(bounds: Bounds) -> (std::net::SocketAddr, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        tokio::spawn(serve(listener, bounds, Arc::new(Fixed), rx));
        (addr, tx)
    }

    #[tokio::test]
    async fn serves_metrics_health_and_nothing_else() {
        let (addr, _stop) = started(Bounds::default()).await;
        let m = get(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(m.starts_with("HTTP/1.1 200"), "{m}");
        assert!(
            m.contains(OPENMETRICS) && m.ends_with("up 1\n# EOF\n"),
            "{m}"
        );
        let h = get(
            addr,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            h.starts_with("HTTP/1.1 503") && h.ends_with("hub unreachable\n"),
            "{h}"
        );
        let n = get(
            addr,
            "GET /etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(n.starts_with("HTTP/1.1 404"), "{n}");
        let p = get(
            addr,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(p.starts_with("HTTP/1.1 405"), "{p}");
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_and_the_cap_holds() {
        let (addr, _stop) = started(Bounds {
            max_connections: 1,
            header_timeout: Duration::from_millis(300),
            connection_lifetime: Duration::from_secs(60),
        })
        .await;
        // One silent peer holds the only slot until its header deadline.
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A second is closed at once, without an answer.
        let refused = get(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(refused, "", "a connection beyond the cap was served");
        // The silent one is closed by the header deadline, freeing its slot.
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut buf))
            .await
            .expect("a silent connection was held open past its header deadline");
        assert!(n.is_ok());
        let mut served = String::new();
        for _ in 0..100 {
            served = get(
                addr,
                "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await;
            if !served.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    }
}
