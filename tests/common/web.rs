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
/// them, and records each request's head. Paths:
/// - `/hello`: `hello`;
/// - `/stall`: headers never come;
/// - `/trickle`: headers and 2 of 10 body bytes, then nothing;
/// - `/big/N`: N bytes.
pub struct HttpServer {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
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
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (connections.clone(), heads.clone());
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
            heads,
        }
    }

    pub fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{path}", self.addr)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
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
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        seen.lock().unwrap().push(head.clone());
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let out = reader.get_mut();
        let body = match path.as_str() {
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
            big if big.starts_with("/big/") => vec![b'x'; big[5..].parse().unwrap()],
            _ => b"hello".to_vec(),
        };
        let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
        if out.write_all(reply.as_bytes()).is_err()
            || out.write_all(&body).is_err()
            || out.flush().is_err()
        {
            return;
        }
    }
}
