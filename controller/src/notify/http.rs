//! One webhook POST: HTTP/1.1 over TCP, TLS (system roots) for https. A
//! small client on hyper and the tokio-rustls the workspace already has,
//! rather than a second HTTP stack.

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper::Uri;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::net::TcpStream;

/// Where and how to post.
#[derive(Clone)]
pub struct Endpoint {
    /// The webhook URL.
    pub uri: Uri,
    /// Headers (values from the environment; never logged).
    pub headers: Vec<(String, String)>,
    /// TLS for https, with the system's roots.
    pub tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("uri", &self.uri)
            .field("headers", &self.headers.len())
            .finish_non_exhaustive()
    }
}

/// TLS client configuration with the system's roots.
pub fn system_tls() -> Arc<rustls::ClientConfig> {
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(crate::system_roots::system_roots())
            .with_no_client_auth(),
    )
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Posts `body` as JSON once; the HTTP status on an answer, or what went
/// wrong (without header values).
pub async fn post(ep: &Endpoint, body: Bytes) -> Result<u16, String> {
    let host = ep.uri.host().ok_or("the webhook URL names no host")?;
    let https = ep.uri.scheme_str() == Some("https");
    let port = ep.uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((bare, port))
        .await
        .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
    let stream: Box<dyn Io> = if https {
        let name = rustls::pki_types::ServerName::try_from(bare.to_string())
            .map_err(|e| format!("{host}: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(ep.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS to {host}:{port}: {e}"))?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP to {host}:{port}: {e}"))?;
    let driver = tokio::spawn(conn);
    let path = ep
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let authority = ep.uri.authority().map_or(host, |a| a.as_str()).to_string();
    let mut req = Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, "hubshift");
    for (k, v) in &ep.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req
        .body(Full::new(body))
        .map_err(|_| "a header of [notify] cannot be sent".to_string())?;
    let answer = sender.send_request(req).await;
    driver.abort();
    let answer = answer.map_err(|e| format!("HTTP to {host}:{port}: {e}"))?;
    Ok(answer.status().as_u16())
}
