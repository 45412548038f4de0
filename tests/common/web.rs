//! A plain HTTP/1.1 server for tests of handlers' outbound requests: real
//! sockets on 127.0.0.1, optionally TLS, with paths that misbehave on
//! purpose.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_rustls::rustls;

/// An HTTP/1.1 server on 127.0.0.1 that keeps connections alive, counts
/// them, and records each request: its head, a blank line, its body.
/// Paths:
/// - `/hello`: `hello`;
/// - `/missing`: 404;
/// - `/stall`: headers never come;
/// - `/trickle`: headers and 2 of 10 body bytes, then nothing;
/// - `/big/N`: N bytes;
/// - any other: a `text/plain` body naming the method and path.
///
/// Every answer has an `x-served-by` header.
pub struct HttpServer {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl HttpServer {
    pub fn start() -> HttpServer {
        HttpServer::start_with(None)
    }

    /// Serves HTTPS with `tls` when given.
    pub fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (connections.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let (seen, tls) = (seen.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    Some(tls) => {
                        let connection = rustls::ServerConnection::new(tls).unwrap();
                        serve_http(rustls::StreamOwned::new(connection, stream), &seen);
                    }
                    None => serve_http(stream, &seen),
                });
            }
        });
        HttpServer {
            addr,
            connections,
            requests,
        }
    }

    pub fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{path}", self.addr)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Every request so far: its head, a blank line, its body.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve_http(stream: impl Read + Write, seen: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => head.push_str(&line),
            }
        }
        let length = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        seen.lock()
            .unwrap()
            .push(format!("{head}\r\n{}", String::from_utf8_lossy(&body)));
        let mut words = head.split_whitespace();
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
        let out = reader.get_mut();
        let (status, body) = match path {
            "/stall" => {
                std::thread::sleep(Duration::from_secs(30));
                return;
            }
            "/trickle" => {
                let _ = out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nab");
                let _ = out.flush();
                std::thread::sleep(Duration::from_secs(30));
                return;
            }
            "/hello" => ("200 OK", b"hello".to_vec()),
            "/missing" => ("404 Not Found", b"nothing here".to_vec()),
            big if big.starts_with("/big/") => ("200 OK", vec![b'x'; big[5..].parse().unwrap()]),
            _ => ("200 OK", format!("{method} {path}: héllo").into_bytes()),
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\n\
             x-served-by: arrpc tests\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        if out.write_all(reply.as_bytes()).is_err()
            || out.write_all(&body).is_err()
            || out.flush().is_err()
        {
            return;
        }
    }
}
