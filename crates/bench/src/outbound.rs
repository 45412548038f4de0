//! What handlers' outbound calls cost, in two measurements:
//!
//! - **forwarding**: a host whose `forward` handler sends each message on
//!   to an upstream `arrpc-host` serving echo (as an `[[upstream]]` call),
//!   against calling that upstream directly, in rotating turns of the same
//!   rounds; once with a fresh `forward` instance per message and once with
//!   instances reused, which leaves the instance out of the hop's cost.
//!   Both hosts share the server CPU, so the forwarded side pays for both
//!   hops there;
//! - **pooling**: a host whose `net` handler makes one HTTP GET per message
//!   to a local keep-alive server, which counts the TCP connections it
//!   accepts: with connections kept per handler, a fresh instance per
//!   message opens almost none.
//!
//! Each prints one JSON line per measurement and a summary on stderr.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::bail;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

use crate::Pinning;
use crate::load::{self, Exchange, Point, Progress, Reply, Server, Timing, Transport};
use crate::rounds::median;
use crate::targets::{self, HostVariant, Target};

/// Least share of the direct calls per second the forwarded side must
/// reach.
const FORWARD_LIMIT: f64 = 0.5;
/// Most new TCP connections per 100 messages the pooled side may open.
const POOL_LIMIT: f64 = 1.0;

#[derive(clap::Args)]
pub struct OutboundArgs {
    /// Connections, each with one message in flight.
    #[arg(long, default_value_t = 64)]
    conns: usize,
    /// Message size in bytes (forwarding).
    #[arg(long, default_value_t = 64, value_parser = crate::load::message_size)]
    payload: usize,
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    measure: Duration,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[command(flatten)]
    pub pin: Pinning,
    /// The `arrpc-host` binary (default: next to this one).
    #[arg(long)]
    pub host_bin: Option<PathBuf>,
}

pub fn run(
    args: &OutboundArgs,
    repo: &Path,
    host_bin: &Path,
    server_cpu: Option<usize>,
    rt: &Runtime,
) -> anyhow::Result<()> {
    let timing = Timing {
        warmup: args.warmup,
        measure: args.measure,
        reply_timeout: load::REPLY_TIMEOUT,
    };
    let point = Point {
        conns: args.conns,
        pipeline: 1,
        payload: args.payload,
    };
    let [fresh, reused] = forwarding(args, repo, host_bin, server_cpu, rt, point, timing)?;
    let pooled = pooling(args, repo, host_bin, server_cpu, rt, point, timing)?;
    eprintln!(
        "forwarding: {fresh:.2}x the direct calls per second with a fresh instance per \
         message, {reused:.2}x with instances reused (limit {FORWARD_LIMIT}x); \
         pooling: {pooled:.2} new connections per 100 messages (limit {POOL_LIMIT})"
    );
    Ok(())
}

/// Each forwarding host's calls per second over the direct side's, median
/// of the rounds: first with a fresh `forward` instance per message, then
/// with instances reused. Each side's CPU per message (the hosts it runs
/// through, warm-up included) is printed beside: steadier than the rates
/// on a busy machine, and what one shared core allows.
fn forwarding(
    args: &OutboundArgs,
    repo: &Path,
    host_bin: &Path,
    server_cpu: Option<usize>,
    rt: &Runtime,
    point: Point,
    timing: Timing,
) -> anyhow::Result<[f64; 2]> {
    let echo = targets::echo_component(repo)?;
    let forward = targets::handler_component(repo, "forward")?;
    let upstream = targets::host(host_bin, &echo, server_cpu, HostVariant::Fresh, None)?;
    let fresh = targets::forwarding_host(host_bin, &forward, upstream.addr, 1, server_cpu)?;
    let reused = targets::forwarding_host(
        host_bin,
        &forward,
        upstream.addr,
        targets::REUSE,
        server_cpu,
    )?;
    // Direct, fresh forwarder, reused forwarder: the host called, and the
    // upstream behind it.
    let sides: [(&Target, Option<&Target>); 3] = [
        (&upstream, None),
        (&fresh, Some(&upstream)),
        (&reused, Some(&upstream)),
    ];
    let mut rates = [Vec::new(), Vec::new(), Vec::new()];
    let mut cpu = [Cpu::default(); 3];
    for round in 0..args.rounds {
        // Rotating which goes first, so none always meets a warmer machine.
        for turn in 0..sides.len() {
            let side = (round + turn) % sides.len();
            let (called, behind) = sides[side];
            let read_cpu = || -> anyhow::Result<(Duration, Duration)> {
                let behind = behind.map(Target::cpu_time).transpose()?;
                Ok((called.cpu_time()?, behind.unwrap_or_default()))
            };
            let before = read_cpu()?;
            let progress = Arc::new(Progress::default());
            let exchange = Exchange::plain(point.payload);
            let outcome = drive(rt, called.addr, point, timing, exchange, progress.clone());
            if let Some(failure) = outcome.failure {
                bail!("forwarding bench: {failure}");
            }
            let after = read_cpu()?;
            cpu[side].called += after.0.saturating_sub(before.0);
            cpu[side].behind += after.1.saturating_sub(before.1);
            cpu[side].replies += progress.replies.load(Ordering::Relaxed);
            rates[side].push(outcome.msgs_per_s);
        }
    }
    let [direct, fresh, reused] = rates.map(median);
    let (Some(direct), Some(fresh), Some(reused)) = (direct, fresh, reused) else {
        bail!("forwarding bench: no rounds measured");
    };
    let ratios = [fresh / direct, reused / direct];
    let direct_cpu = cpu[0].per_message(cpu[0].called);
    for (((instances, forwarded), ratio), cpu) in [("fresh", fresh), ("reused", reused)]
        .into_iter()
        .zip(ratios)
        .zip(&cpu[1..])
    {
        let forwarded_cpu = cpu.per_message(cpu.called + cpu.behind);
        println!(
            "{}",
            serde_json::json!({
                "bench": "outbound-forwarding",
                "forwarder_instances": instances,
                "conns": point.conns,
                "payload": point.payload,
                "rounds": args.rounds,
                "direct_msgs_per_s": direct.round(),
                "forwarded_msgs_per_s": forwarded.round(),
                "ratio_to_direct": (ratio * 1000.0).round() / 1000.0,
                "limit": FORWARD_LIMIT,
                "direct_cpu_us_per_msg": round_tenth(direct_cpu),
                "forwarded_cpu_us_per_msg": round_tenth(forwarded_cpu),
                "forwarder_cpu_us_per_msg": round_tenth(cpu.per_message(cpu.called)),
                "cpu_ratio_to_direct": (direct_cpu / forwarded_cpu * 1000.0).round() / 1000.0,
            })
        );
    }
    Ok(ratios)
}

/// CPU the hosts of one side used over its turns, and the replies it gave.
#[derive(Debug, Default, Clone, Copy)]
struct Cpu {
    /// The host the load generator called.
    called: Duration,
    /// The upstream behind it, when there is one.
    behind: Duration,
    replies: u64,
}

impl Cpu {
    /// `spent` over the replies, in µs.
    fn per_message(&self, spent: Duration) -> f64 {
        spent.as_secs_f64() * 1e6 / self.replies.max(1) as f64
    }
}

fn round_tenth(us: f64) -> f64 {
    (us * 10.0).round() / 10.0
}

/// New TCP connections per 100 messages, each message one HTTP GET.
fn pooling(
    args: &OutboundArgs,
    repo: &Path,
    host_bin: &Path,
    server_cpu: Option<usize>,
    rt: &Runtime,
    point: Point,
    timing: Timing,
) -> anyhow::Result<f64> {
    let (web, accepted) = rt.block_on(keep_alive_server())?;
    let net = targets::handler_component(repo, "net")?;
    let host = targets::fetching_host(host_bin, &net, web, server_cpu)?;
    let url = format!("http://{web}/");
    let request = encode_map(&[("op", "get".into()), ("url", url.as_str().into())]);
    let reply = encode_map(&[
        ("status", 200.into()),
        ("body", rmpv::Value::Binary(b"hello".to_vec())),
    ]);
    let mut messages = 0;
    let mut msgs_per_s = Vec::new();
    let before = accepted.load(Ordering::Relaxed);
    for _ in 0..args.rounds {
        let progress = Arc::new(Progress::default());
        let exchange = Exchange {
            request: request.clone(),
            reply: Reply::Exactly(reply.clone()),
        };
        let outcome = drive(rt, host.addr, point, timing, exchange, progress.clone());
        if let Some(failure) = outcome.failure {
            bail!("pooling bench: {failure}");
        }
        messages += progress.replies.load(Ordering::Relaxed);
        msgs_per_s.push(outcome.msgs_per_s);
    }
    let opened = accepted.load(Ordering::Relaxed) - before;
    let per_100 = opened as f64 * 100.0 / messages.max(1) as f64;
    println!(
        "{}",
        serde_json::json!({
            "bench": "outbound-pooling",
            "conns": point.conns,
            "rounds": args.rounds,
            "messages": messages,
            "msgs_per_s": median(msgs_per_s).map(f64::round),
            "tcp_connections_opened": opened,
            "connections_per_100_messages": (per_100 * 1000.0).round() / 1000.0,
            "limit": POOL_LIMIT,
        })
    );
    Ok(per_100)
}

/// `point`'s load on the plain TCP server at `addr`, replies counted
/// into `progress`.
fn drive(
    rt: &Runtime,
    addr: SocketAddr,
    point: Point,
    timing: Timing,
    exchange: Exchange,
    progress: Arc<Progress>,
) -> load::Outcome {
    let server = Server {
        addr,
        transport: Transport::Tcp,
    };
    rt.block_on(load::drive(&server, point, timing, exchange, progress))
}

fn encode_map(pairs: &[(&str, rmpv::Value)]) -> Vec<u8> {
    let map = rmpv::Value::Map(
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), v.clone()))
            .collect(),
    );
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &map).expect("writing into a Vec");
    out
}

/// An HTTP/1.1 server on 127.0.0.1 answering every request `hello` and
/// keeping connections open; counts the connections it accepts.
async fn keep_alive_server() -> anyhow::Result<(SocketAddr, Arc<AtomicU64>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    // A request ends at its blank line (GETs carry no body).
                    if line.is_empty()
                        && write
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
                            .await
                            .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    Ok((addr, accepted))
}
