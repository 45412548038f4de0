//! Closed-loop load: N connections, each keeping P messages in flight.
//!
//! Every connection writes P messages, then answers each reply with a new
//! message until the run ends, so the offered load follows the server's
//! pace. Replies are checked against what was sent (all targets echo) and
//! timed from write to read.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arrpc_wire::Connection;
use hdrhistogram::Histogram;
use tokio::net::TcpStream;

/// One measured point's shape.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub conns: usize,
    pub pipeline: usize,
    pub payload: usize,
}

/// What one point measured.
#[derive(Debug)]
pub struct Outcome {
    pub msgs_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub errors: u64,
    /// Why the point could not be measured, when it could not.
    pub failure: Option<String>,
}

/// How long a run warms up and then measures, and how long one reply may take.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub warmup: Duration,
    pub measure: Duration,
    pub reply_timeout: Duration,
}

/// A MessagePack binary of exactly `size` bytes (2 to 65538), header included.
pub fn message(size: usize) -> Vec<u8> {
    assert!((2..=65538).contains(&size), "message size out of range");
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

/// What goes on the wire and what must come back.
pub struct Exchange {
    pub request: Vec<u8>,
    pub reply: Vec<u8>,
}

impl Exchange {
    /// A plain message of `size` bytes, echoed.
    pub fn plain(size: usize) -> Exchange {
        let m = message(size);
        Exchange {
            request: m.clone(),
            reply: m,
        }
    }

    /// A message of `size` bytes in an envelope signed with `secret`; the
    /// reply is the message itself.
    pub fn signed(size: usize, secret: &[u8]) -> Exchange {
        let m = message(size);
        Exchange {
            request: arrpc_wire::envelope::sign(secret, &m),
            reply: m,
        }
    }
}

pub async fn drive(addr: SocketAddr, point: Point, timing: Timing, exchange: Exchange) -> Outcome {
    let start = Instant::now();
    let measure_from = start + timing.warmup;
    let end = measure_from + timing.measure;
    let exchange = std::sync::Arc::new(exchange);
    let tasks: Vec<_> = (0..point.conns)
        .map(|_| {
            let exchange = exchange.clone();
            tokio::spawn(async move {
                one_connection(addr, point.pipeline, &exchange, measure_from, end, timing).await
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
        p50_us: histogram.value_at_quantile(0.5),
        p99_us: histogram.value_at_quantile(0.99),
        errors,
        failure,
    }
}

async fn one_connection(
    addr: SocketAddr,
    pipeline: usize,
    exchange: &Exchange,
    measure_from: Instant,
    end: Instant,
    timing: Timing,
) -> ConnResult {
    let mut result = ConnResult {
        histogram: Histogram::new(3).expect("valid precision"),
        measured: 0,
        errors: 0,
        failure: None,
    };
    let stream = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            result.failure = Some(format!("connect: {e}"));
            return result;
        }
    };
    let _ = stream.set_nodelay(true);
    let mut conn = Connection::new(stream, 1 << 24);
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
        let reply = match tokio::time::timeout(timing.reply_timeout, conn.read_message()).await {
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
                    "no reply within {:?} ({} in flight): the server lost messages",
                    timing.reply_timeout,
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
            if reply[..] != exchange.reply[..] {
                result.errors += 1;
            } else if at >= measure_from && now < end {
                result.measured += 1;
                let _ = result
                    .histogram
                    .record(now.duration_since(at).as_micros() as u64);
            }
            if now < end {
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
}
