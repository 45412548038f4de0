//! What keeping state costs: a host whose `state` handler increments one
//! counter per message, in an embedded store (each increment on disk
//! before its reply leaves) and, when a Redis server is named, in Redis;
//! against the same host serving echo, in alternating turns of the same
//! rounds. After each store's rounds the counter must equal the
//! increments answered, give or take those still in flight when a round
//! ended: a fast wrong counter fails the bench.
//!
//! Prints one JSON line per store and a summary on stderr.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{bail, ensure};
use arrpc_host::config::{SecretSource, StoreConfig};
use tokio::runtime::Runtime;

use crate::Pinning;
use crate::load::{self, Exchange, Point, Progress, Reply, Server, Timing, Transport};
use crate::rounds::median;
use crate::targets::{self, HostVariant};

/// Counter increments per second the embedded store must sustain at 64
/// connections, each durable before its reply.
const EMBEDDED_TARGET: f64 = 10_000.0;

#[derive(clap::Args)]
pub struct StoreArgs {
    /// Connections, each with one message in flight.
    #[arg(long, default_value_t = 64)]
    conns: usize,
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    measure: Duration,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Also measure a Redis store at this URL (`redis://127.0.0.1:6379`);
    /// its `arrpc:counts:` keys are overwritten.
    #[arg(long)]
    redis: Option<String>,
    /// Where the embedded store's file goes (default: a temporary folder);
    /// the disk under it sets the fsync cost.
    #[arg(long)]
    dir: Option<PathBuf>,
    #[command(flatten)]
    pub pin: Pinning,
    /// The `arrpc-host` binary (default: next to this one).
    #[arg(long)]
    pub host_bin: Option<PathBuf>,
}

pub fn run(
    args: &StoreArgs,
    repo: &Path,
    host_bin: &Path,
    server_cpu: Option<usize>,
    rt: &Runtime,
) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let mut stores = vec![(
        "embedded",
        StoreConfig::embedded("counts", scratch.path().join("counts.redb")),
    )];
    if let Some(url) = &args.redis {
        stores.push((
            "redis",
            StoreConfig::redis("counts", SecretSource::Value(url.clone())),
        ));
    }
    let echo = targets::echo_component(repo)?;
    let state = targets::handler_component(repo, "state")?;
    let echo_host = targets::host(host_bin, &echo, server_cpu, HostVariant::Fresh, None)?;
    let mut embedded = 0.0;
    for (kind, store) in stores {
        let host = targets::store_host(host_bin, &state, store, server_cpu)?;
        let rate = measure(args, rt, kind, echo_host.addr, host.addr)?;
        if kind == "embedded" {
            embedded = rate;
        }
    }
    eprintln!(
        "store: {embedded:.0} durable increments per second in the embedded store at {} connections (target {EMBEDDED_TARGET})",
        args.conns
    );
    Ok(())
}

/// Increments per second against `counter`, median of the rounds, with
/// echo on `echo` measured in the same rounds.
fn measure(
    args: &StoreArgs,
    rt: &Runtime,
    kind: &str,
    echo: SocketAddr,
    counter: SocketAddr,
) -> anyhow::Result<f64> {
    let timing = Timing {
        warmup: args.warmup,
        measure: args.measure,
        reply_timeout: load::REPLY_TIMEOUT,
    };
    let point = Point {
        conns: args.conns,
        pipeline: 1,
        payload: 64,
    };
    let increment = encode(&op("increment"));
    let (mut echoed, mut counted) = (Vec::new(), Vec::new());
    let mut answered = 0;
    reset(rt, counter)?;
    for round in 0..args.rounds {
        let mut order = [false, true];
        if round % 2 == 1 {
            order.reverse();
        }
        for is_counter in order {
            let (addr, exchange) = if is_counter {
                let exchange = Exchange {
                    request: increment.clone(),
                    reply: Reply::Integer,
                };
                (counter, exchange)
            } else {
                (echo, Exchange::plain(point.payload))
            };
            let progress = Arc::new(Progress::default());
            let server = Server {
                addr,
                transport: Transport::Tcp,
            };
            let outcome = rt.block_on(load::drive(
                &server,
                point,
                timing,
                exchange,
                progress.clone(),
            ));
            if let Some(failure) = outcome.failure {
                bail!("store bench ({kind}): {failure}");
            }
            ensure!(
                progress.errors.load(Ordering::Relaxed) == 0,
                "store bench ({kind}): some replies were errors"
            );
            if is_counter {
                answered += progress.replies.load(Ordering::Relaxed);
                counted.push(outcome.msgs_per_s);
            } else {
                echoed.push(outcome.msgs_per_s);
            }
        }
    }
    // Unanswered increments may have committed when a round stopped reading.
    let stored = counter_value(rt, counter)?;
    let in_flight = (args.conns * args.rounds) as u64;
    ensure!(
        stored >= answered && stored <= answered + in_flight,
        "store bench ({kind}): the counter holds {stored}, but {answered} increments were answered"
    );
    let (Some(echo), Some(counter)) = (median(echoed), median(counted)) else {
        bail!("store bench: no rounds measured");
    };
    println!(
        "{}",
        serde_json::json!({
            "bench": format!("store-{kind}"),
            "conns": point.conns,
            "rounds": args.rounds,
            "echo_msgs_per_s": echo.round(),
            "increments_per_s": counter.round(),
            "ratio_to_echo": (counter / echo * 1000.0).round() / 1000.0,
            "increments_answered": answered,
            "counter_after": stored,
            "target": (kind == "embedded").then_some(EMBEDDED_TARGET),
        })
    );
    Ok(counter)
}

fn op(name: &str) -> rmpv::Value {
    rmpv::Value::Map(vec![
        ("op".into(), name.into()),
        ("store".into(), "counts".into()),
        ("key".into(), "hits".into()),
    ])
}

fn encode(value: &rmpv::Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, value).expect("writing into a Vec");
    out
}

/// Sets the counter to 0, so a Redis store's earlier runs do not count.
fn reset(rt: &Runtime, addr: SocketAddr) -> anyhow::Result<()> {
    let reply = call(rt, addr, &op("delete"))?;
    ensure!(
        reply.is_nil(),
        "store bench: resetting the counter answered {reply}"
    );
    Ok(())
}

/// The counter's value, read through the handler.
fn counter_value(rt: &Runtime, addr: SocketAddr) -> anyhow::Result<u64> {
    let reply = call(rt, addr, &op("get"))?;
    let text = reply
        .as_slice()
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|t| t.parse().ok());
    text.ok_or_else(|| anyhow::anyhow!("store bench: the counter reads {reply}"))
}

fn call(rt: &Runtime, addr: SocketAddr, message: &rmpv::Value) -> anyhow::Result<rmpv::Value> {
    let mut client = arrpc_client::Client::new(arrpc_client::ClientConfig::new(addr.to_string()));
    let reply = rt.block_on(client.send_raw(&encode(message)))?;
    Ok(rmpv::decode::read_value(&mut &reply[..])?)
}
