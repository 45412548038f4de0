//! The soak: `arrpc-host` under steady closed-loop load for minutes, its
//! resident memory sampled as the load goes on, to show that memory levels
//! off instead of growing with every message or instance.
//!
//! The load's connections stay open for the whole soak; sampling only reads
//! counters and `/proc`, so it never pauses the load.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::runtime::Runtime;

use crate::Pinning;
use crate::load::{self, Exchange, Point, Progress, Server, Timing, Transport};
use crate::targets::{self, HostVariant};

#[derive(clap::Args)]
pub struct SoakArgs {
    /// How the host serves the echo component.
    #[arg(long, value_enum, default_value_t = Variant::Fresh)]
    variant: Variant,
    /// Connections, each open for the whole soak.
    #[arg(long, default_value_t = 64)]
    conns: usize,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 16)]
    pipeline: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64, value_parser = crate::load::message_size)]
    payload: usize,
    /// How long the load runs.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Time between memory samples.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    every: Duration,
    /// Growth is counted from the first sample at or after this, once
    /// pools, caches and buffers have filled.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    warmup: Duration,
    #[command(flatten)]
    pub pin: Pinning,
    /// The `arrpc-host` binary (default: next to this one).
    #[arg(long)]
    pub host_bin: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Variant {
    /// A fresh instance per message.
    Fresh,
    /// `reuse = 10000`.
    Reuse,
}

/// One memory sample.
struct Sample {
    t: Duration,
    rss_mib: f64,
}

pub fn run(
    args: &SoakArgs,
    repo: &Path,
    host_bin: &Path,
    server_cpu: Option<usize>,
    rt: &Runtime,
) -> anyhow::Result<()> {
    anyhow::ensure!(!args.every.is_zero(), "--every must be longer than zero");
    let (variant, variant_name) = match args.variant {
        Variant::Fresh => (HostVariant::Fresh, "fresh"),
        Variant::Reuse => (HostVariant::Reuse, "reuse"),
    };
    let echo = targets::echo_component(repo)?;
    let host = targets::host(host_bin, &echo, server_cpu, variant, None)?;
    let server = Server {
        addr: host.addr,
        transport: Transport::Tcp,
    };
    let point = Point {
        conns: args.conns,
        pipeline: args.pipeline,
        payload: args.payload,
    };
    let timing = Timing {
        warmup: Duration::ZERO,
        measure: args.duration,
        reply_timeout: load::REPLY_TIMEOUT,
    };
    let progress = Arc::new(Progress::default());

    let (samples, outcome) = rt.block_on(async {
        let started = Instant::now();
        let load = tokio::spawn({
            let progress = progress.clone();
            async move {
                let exchange = Exchange::plain(point.payload);
                load::drive(&server, point, timing, exchange, progress).await
            }
        });
        let mut samples = Vec::new();
        let (mut last_at, mut last_replies, mut last_errors) = (started, 0, 0);
        for k in 1.. {
            let due = args.every * k;
            if due > args.duration {
                break;
            }
            tokio::time::sleep_until((started + due).into()).await;
            let rss_kib = host.memory_kib().context("the host is gone")?.0;
            let now = Instant::now();
            let replies = progress.replies.load(Ordering::Relaxed);
            let errors = progress.errors.load(Ordering::Relaxed);
            let sample = Sample {
                t: now - started,
                rss_mib: mib(rss_kib),
            };
            println!(
                "{}",
                serde_json::json!({
                    "bench": "soak",
                    "t_s": (sample.t.as_secs_f64() * 10.0).round() / 10.0,
                    "rss_mib": sample.rss_mib,
                    "msgs_per_s": ((replies - last_replies) as f64
                        / (now - last_at).as_secs_f64())
                    .round(),
                    "errors": errors - last_errors,
                })
            );
            (last_at, last_replies, last_errors) = (now, replies, errors);
            samples.push(sample);
        }
        anyhow::Ok((samples, load.await?))
    })?;

    let rss = |s: Option<&Sample>| s.map(|s| s.rss_mib);
    let settled = rss(samples.iter().find(|s| s.t >= args.warmup));
    let last = rss(samples.last());
    println!(
        "{}",
        serde_json::json!({
            "bench": "soak-summary",
            "variant": variant_name,
            "conns": point.conns,
            "pipeline": point.pipeline,
            "payload": point.payload,
            "duration_s": args.duration.as_secs_f64(),
            "samples": samples.len(),
            "msgs_per_s": outcome.msgs_per_s.round(),
            "errors": outcome.errors,
            "rss_first_mib": rss(samples.first()),
            "warmup_s": args.warmup.as_secs_f64(),
            "rss_after_warmup_mib": settled,
            "rss_max_mib": samples.iter().map(|s| s.rss_mib).reduce(f64::max),
            "rss_last_mib": last,
            "growth_mib": settled.zip(last).map(|(from, to)| ((to - from) * 10.0).round() / 10.0),
            "failure": outcome.failure,
        })
    );
    Ok(())
}

/// KiB to MiB, to a tenth.
fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}
