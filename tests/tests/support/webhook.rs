//! A local HTTP server standing in for a `[notify]` webhook: it records
//! every request and answers 500 first, or never.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// One request the webhook received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

/// What the server does with a request.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Answer 500 to this many requests, then 200.
    FailFirst(usize),
    /// Read the request and never answer.
    Silent,
}

/// A running webhook.
pub struct Hook {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// What it received, in order.
    pub got: Arc<Mutex<Vec<Received>>>,
}

fn read_request(stream: &TcpStream) -> Option<Received> {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut headers = Vec::new();
    let mut len = 0;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        if k.eq_ignore_ascii_case("content-length") {
            len = v.trim().parse().ok()?;
        }
        headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Received {
        headers,
        body: String::from_utf8(body).ok()?,
    })
}

/// A webhook on 127.0.0.1 answering as `mode` says.
pub fn hook(mode: Mode) -> Hook {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let Some(req) = read_request(&stream) else {
                    return;
                };
                let n = {
                    let mut g = seen.lock().unwrap();
                    g.push(req);
                    g.len()
                };
                match mode {
                    Mode::FailFirst(k) => {
                        let status = if n <= k {
                            "500 Internal Server Error"
                        } else {
                            "200 OK"
                        };
                        let _ = write!(
                            stream,
                            "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        );
                    }
                    // Holds the connection open, unanswered, until the
                    // controller gives up on it.
                    Mode::Silent => {
                        let mut sink = [0u8; 64];
                        while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
                    }
                }
            });
        }
    });
    Hook { port, got }
}
