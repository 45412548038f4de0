//! Closed-loop load: N connections, each keeping P messages in flight,
//! over plain TCP or TLS.
//!
//! Every connection writes P messages, then answers each reply with a new
//! message until the run ends, so the offered load follows the server's
//! pace. Replies are checked against what was sent (all targets echo) and
//! timed from write to read.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrpc_wire::Connection;
use hdrhistogram::Histogram;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

/// One measured point's shape.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub conns: usize,
    pub pipeline: usize,
    pub payload: usize,
}

/// How connections reach a server.
#[derive(Clone)]
pub enum Transport {
    Tcp,
    /// TLS, with the handshake done before the first message (inside the
    /// warm-up, so measured latency is per message, not per connection).
    Tls(TlsConnector),
}

/// A server to load.
#[derive(Clone)]
pub struct Server {
    pub addr: SocketAddr,
    pub transport: Transport,
}

/// What one run measured.
#[derive(Debug)]
pub struct Outcome {
    pub msgs_per_s: f64,
    /// Latency in µs of every reply inside the measuring window; kept whole
    /// so rounds can be merged before taking percentiles.
    pub histogram: Histogram<u64>,
    pub errors: u64,
    /// Why the run could not be measured, when it could not.
    pub failure: Option<String>,
}

/// Replies counted as they arrive, warm-up included, so a long run can be
/// sampled while it goes on (the soak).
#[derive(Debug, Default)]
pub struct Progress {
    pub replies: AtomicU64,
    pub errors: AtomicU64,
}

/// How long one reply may take before the server is said to have lost it.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a run warms up and then measures, and how long one reply may take.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub warmup: Duration,
    pub measure: Duration,
    pub reply_timeout: Duration,
}

/// Sizes [`message`] can make: a bin 8 or bin 16 value, header included.
const MESSAGE_SIZES: std::ops::RangeInclusive<usize> = 2..=65538;

/// Parses a `--payload` size, refusing one [`message`] cannot make.
pub fn message_size(text: &str) -> Result<usize, String> {
    let size: usize = text.parse().map_err(|e| format!("{e}"))?;
    if MESSAGE_SIZES.contains(&size) {
        Ok(size)
    } else {
        Err(format!("{size} is not between 2 and 65,538 bytes"))
    }
}

/// A MessagePack binary of exactly `size` bytes (2 to 65538), header included.
pub fn message(size: usize) -> Vec<u8> {
    assert!(MESSAGE_SIZES.contains(&size), "message size out of range");
    let mut out = if size <= 257 {
        vec![0xc4, (size - 2) as u8]
    } else {
        let body = size - 3;
        vec![0xc5, (body >> 8) as u8, body as u8]
    };
    out.resize(size, 0x5a);
    out
}

struct ConnResult {
    histogram: Histogram<u64>,
    measured: u64,
    errors: u64,
    failure: Option<String>,
}

impl ConnResult {
    fn new(failure: Option<String>) -> ConnResult {
        ConnResult {
            histogram: Histogram::new(3).expect("valid precision"),
            measured: 0,
            errors: 0,
            failure,
        }
    }
}

/// What goes on the wire and what must come back.
pub struct Exchange {
    pub request: Vec<u8>,
    pub reply: Reply,
}

/// The reply a message must get to count.
pub enum Reply {
    /// These bytes exactly.
    Exactly(Vec<u8>),
    /// Any MessagePack integer, such as a counter's new value.
    Integer,
}

impl Reply {
    fn accepts(&self, reply: &[u8]) -> bool {
        match self {
            Reply::Exactly(want) => reply == &want[..],
            Reply::Integer => matches!(
                rmpv::decode::read_value(&mut &reply[..]),
                Ok(rmpv::Value::Integer(_))
            ),
        }
    }
}

impl Exchange {
    /// A plain message of `size` bytes, echoed.
    pub fn plain(size: usize) -> Exchange {
        let m = message(size);
        Exchange {
            request: m.clone(),
            reply: Reply::Exactly(m),
        }
    }

    /// A message of `size` bytes in an envelope signed with `secret`; the
    /// reply is the message itself.
    pub fn signed(size: usize, secret: &[u8]) -> Exchange {
        let m = message(size);
        Exchange {
            request: arrpc_wire::envelope::sign(secret, &m),
            reply: Reply::Exactly(m),
        }
    }
}

/// Drives `point`'s load against `server` for the warm-up and the measuring
/// time, counting every reply into `progress` as well.
pub async fn drive(
    server: &Server,
    point: Point,
    timing: Timing,
    exchange: Exchange,
    progress: Arc<Progress>,
) -> Outcome {
    let start = Instant::now();
    let window = Window {
        from: start + timing.warmup,
        end: start + timing.warmup + timing.measure,
        reply_timeout: timing.reply_timeout,
    };
    let exchange = Arc::new(exchange);
    let tasks: Vec<_> = (0..point.conns)
        .map(|_| {
            let (server, exchange, progress) = (server.clone(), exchange.clone(), progress.clone());
            tokio::spawn(async move {
                one_connection(&server, point.pipeline, &exchange, window, &progress).await
            })
        })
        .collect();
    let mut histogram = Histogram::<u64>::new(3).expect("valid precision");
    let (mut measured, mut errors, mut failure) = (0, 0, None);
    for task in tasks {
        match task.await {
            Ok(r) => {
                histogram.add(&r.histogram).expect("same precision");
                measured += r.measured;
                errors += r.errors;
                failure = failure.or(r.failure);
            }
            Err(e) => failure = Some(format!("load task failed: {e}")),
        }
    }
    Outcome {
        msgs_per_s: measured as f64 / timing.measure.as_secs_f64(),
        histogram,
        errors,
        failure,
    }
}

/// When replies count, and how long one may take.
#[derive(Debug, Clone, Copy)]
struct Window {
    from: Instant,
    end: Instant,
    reply_timeout: Duration,
}

async fn one_connection(
    server: &Server,
    pipeline: usize,
    exchange: &Exchange,
    window: Window,
    progress: &Progress,
) -> ConnResult {
    let failed = |why: String| ConnResult::new(Some(why));
    let stream = match TcpStream::connect(server.addr).await {
        Ok(s) => s,
        Err(e) => return failed(format!("connect: {e}")),
    };
    let _ = stream.set_nodelay(true);
    match &server.transport {
        Transport::Tcp => {
            let conn = Connection::new(stream, 1 << 24);
            exchange_loop(conn, pipeline, exchange, window, progress).await
        }
        Transport::Tls(connector) => {
            let name = ServerName::try_from(crate::tls::SERVER_NAME).expect("a valid DNS name");
            match connector.connect(name, stream).await {
                Ok(tls) => {
                    let conn = Connection::new(tls, 1 << 24);
                    exchange_loop(conn, pipeline, exchange, window, progress).await
                }
                Err(e) => failed(format!("TLS handshake: {e}")),
            }
        }
    }
}

async fn exchange_loop<S: AsyncRead + AsyncWrite + Unpin>(
    mut conn: Connection<S>,
    pipeline: usize,
    exchange: &Exchange,
    window: Window,
    progress: &Progress,
) -> ConnResult {
    let mut result = ConnResult::new(None);
    let mut sent: VecDeque<Instant> = VecDeque::with_capacity(pipeline);
    for _ in 0..pipeline {
        if conn.write_message(&exchange.request).await.is_err() {
            result.failure = Some("write failed".into());
            return result;
        }
        sent.push_back(Instant::now());
    }
    let _ = conn.flush().await;
    while !sent.is_empty() {
        let reply = match tokio::time::timeout(window.reply_timeout, conn.read_message()).await {
            Ok(Ok(Some(reply))) => reply,
            Ok(Ok(None)) => {
                result.failure = Some("server closed the connection".into());
                break;
            }
            Ok(Err(e)) => {
                result.failure = Some(format!("read: {e}"));
                break;
            }
            Err(_) => {
                result.failure = Some(format!(
                    "no reply within {:?} ({} in flight): the server lost messages, or the \
                     machine is too busy to answer in time",
                    window.reply_timeout,
                    sent.len()
                ));
                break;
            }
        };
        // Handle this reply and every other already buffered, then refill
        // the pipeline with one flush.
        let mut replies = vec![reply];
        while let Ok(Some(more)) = conn.try_message() {
            replies.push(more);
        }
        let now = Instant::now();
        for reply in replies {
            let Some(at) = sent.pop_front() else {
                result.failure = Some("more replies than requests".into());
                return result;
            };
            if !exchange.reply.accepts(&reply) {
                result.errors += 1;
                progress.errors.fetch_add(1, Ordering::Relaxed);
            } else {
                progress.replies.fetch_add(1, Ordering::Relaxed);
                if at >= window.from && now < window.end {
                    result.measured += 1;
                    let _ = result
                        .histogram
                        .record(now.duration_since(at).as_micros() as u64);
                }
            }
            if now < window.end {
                if conn.write_message(&exchange.request).await.is_err() {
                    result.failure = Some("write failed".into());
                    return result;
                }
                sent.push_back(Instant::now());
            }
        }
        if conn.flush().await.is_err() {
            result.failure = Some("write failed".into());
            break;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_exact_size_and_are_one_value() {
        for size in [2, 64, 257, 258, 4096, 65535] {
            let m = message(size);
            assert_eq!(m.len(), size);
            assert_eq!(arrpc_wire::frame::value_len(&m), Some(size));
        }
    }

    #[test]
    fn payload_sizes_outside_what_a_message_can_be_are_refused() {
        assert_eq!(message_size("2"), Ok(2));
        assert_eq!(message_size("65538"), Ok(65538));
        for bad in ["0", "1", "65539", "-5", "big"] {
            assert!(message_size(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(
            message_size("1").unwrap_err(),
            "1 is not between 2 and 65,538 bytes"
        );
    }
}
