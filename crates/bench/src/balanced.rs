//! The balancer's cost per call: an `RpcClient` balancing over three
//! `arrpc-host` replicas (127.0.0.1, .2 and .3 on one port, given as a
//! static list) against the same client type driving one of them directly,
//! in the same run, at the same number of calls in flight and about as many
//! connections.
//!
//! What balancing adds (tower's power-of-two-choices pick, the retry
//! budget, per-call bookkeeping) is work in the client, so besides calls per
//! second the run reports the client's CPU time per call: this process's
//! user and system time over the measuring window (`getrusage`), which
//! leaves out the hosts, as they are separate processes. The sides
//! take turns within each round, in alternating order, and each line reports
//! the median of the rounds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arrpc_client::{ClientConfig, RpcClient};
use hdrhistogram::Histogram;
use tokio::runtime::Runtime;

use crate::Pinning;
use crate::rounds::median;
use crate::targets::{self, HostVariant};

/// Replicas behind the balanced client.
const REPLICAS: u8 = 3;
/// Most the balanced side's client CPU per call may exceed the direct side's.
const LIMIT: f64 = 1.10;

#[derive(clap::Args)]
pub struct BalancedArgs {
    /// Calls in flight on each side. The direct side opens this many
    /// connections to its host; the balanced side as many, rounded up to a
    /// multiple of the replicas (`connections_per_replica`).
    #[arg(long, default_value_t = 64)]
    conns: usize,
    /// Size of each call's params in bytes (echoed back).
    #[arg(long, default_value_t = 64, value_parser = crate::load::message_size)]
    payload: usize,
    /// Load before measuring starts, per side and round.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Measuring time per side and round.
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

/// How the calls reach the hosts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// One `RpcClient` per connection, each to the first replica.
    Direct,
    /// One `RpcClient` over the list of every replica.
    Balanced,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Direct => "direct",
            Side::Balanced => "balanced",
        }
    }
}

/// One side's run in one round.
struct Measured {
    calls_per_s: f64,
    cpu_us_per_call: f64,
    tally: Tally,
}

/// What calls saw: one task's, or a run's merged.
struct Tally {
    /// Latency in µs of every call answered in the window.
    histogram: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
    /// Calls answered in the window, by the replica that answered.
    spread: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            histogram: Histogram::new(3).expect("valid precision"),
            errors: 0,
            first_error: None,
            spread: BTreeMap::new(),
        }
    }

    fn add(&mut self, other: &Tally) {
        self.histogram
            .add(&other.histogram)
            .expect("same precision");
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        for (replica, calls) in &other.spread {
            *self.spread.entry(replica.clone()).or_insert(0) += calls;
        }
    }
}

pub fn run(
    args: &BalancedArgs,
    repo: &Path,
    host_bin: &Path,
    server_cpu: Option<usize>,
    rt: &Runtime,
) -> anyhow::Result<()> {
    anyhow::ensure!(args.conns > 0, "--conns must be at least 1");
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    anyhow::ensure!(
        !args.measure.is_zero(),
        "--measure must be longer than zero"
    );
    let echo = targets::echo_component(repo)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let hosts = (1..=REPLICAS)
        .map(|last| {
            let listen = format!("127.0.0.{last}:{port}");
            targets::host_on(
                &listen,
                host_bin,
                &echo,
                server_cpu,
                HostVariant::Reuse,
                None,
            )
            .with_context(|| format!("starting a replica on {listen}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let addrs: Vec<String> = hosts.iter().map(|h| h.addr.to_string()).collect();
    let params = Arc::new(crate::load::message(args.payload));

    let mut runs: BTreeMap<&str, Vec<Measured>> = BTreeMap::new();
    for round in 0..args.rounds {
        let order = if round % 2 == 0 {
            [Side::Direct, Side::Balanced]
        } else {
            [Side::Balanced, Side::Direct]
        };
        for side in order {
            let measured = rt.block_on(measure(side, args, &addrs, params.clone()))?;
            if let Some(error) = &measured.tally.first_error {
                eprintln!(
                    "{} round {}: {} calls failed, first: {error}",
                    side.name(),
                    round + 1,
                    measured.tally.errors
                );
            }
            runs.entry(side.name()).or_default().push(measured);
        }
    }

    let per_replica = args.conns.div_ceil(REPLICAS.into());
    let direct = report(Side::Direct, args, args.conns, &runs["direct"])?;
    let balanced = report(
        Side::Balanced,
        args,
        per_replica * usize::from(REPLICAS),
        &runs["balanced"],
    )?;
    let cpu_ratio = balanced.cpu_us_per_call / direct.cpu_us_per_call;
    println!(
        "{}",
        serde_json::json!({
            "bench": "balanced",
            "compare": "balanced/direct",
            "cpu_per_call_ratio": thousandths(cpu_ratio),
            "time_per_call_ratio": thousandths(direct.calls_per_s / balanced.calls_per_s),
            "limit": LIMIT,
            "within_limit": cpu_ratio <= LIMIT,
        })
    );
    Ok(())
}

/// Medians over rounds, for the comparison line.
struct Medians {
    calls_per_s: f64,
    cpu_us_per_call: f64,
}

/// Prints one side's line: medians over rounds, percentiles over every
/// measured call.
fn report(
    side: Side,
    args: &BalancedArgs,
    connections: usize,
    runs: &[Measured],
) -> anyhow::Result<Medians> {
    let mut all = Tally::new();
    for m in runs {
        all.add(&m.tally);
    }
    if all.histogram.is_empty() {
        bail!("the {} side answered no call", side.name());
    }
    let medians = Medians {
        calls_per_s: median(runs.iter().map(|m| m.calls_per_s).collect()).unwrap_or(0.0),
        cpu_us_per_call: median(runs.iter().map(|m| m.cpu_us_per_call).collect()).unwrap_or(0.0),
    };
    println!(
        "{}",
        serde_json::json!({
            "bench": "balanced",
            "target": side.name(),
            "replicas": all.spread.len(),
            "connections": connections,
            "in_flight": args.conns,
            "payload": args.payload,
            "rounds": runs.len(),
            "calls_per_s": medians.calls_per_s.round(),
            "client_cpu_us_per_call": thousandths(medians.cpu_us_per_call),
            "p50_us": all.histogram.value_at_quantile(0.5),
            "p99_us": all.histogram.value_at_quantile(0.99),
            "errors": all.errors,
            "spread": all.spread,
        })
    );
    Ok(medians)
}

/// Runs `side` with `args.conns` calls in flight: warm-up (connections
/// open in it), then the measuring window.
async fn measure(
    side: Side,
    args: &BalancedArgs,
    addrs: &[String],
    params: Arc<Vec<u8>>,
) -> anyhow::Result<Measured> {
    let clients: Vec<RpcClient> = match side {
        Side::Direct => (0..args.conns)
            .map(|_| RpcClient::new(ClientConfig::new(addrs[0].clone())))
            .collect(),
        Side::Balanced => {
            let mut config = ClientConfig::new(addrs.join(","));
            config.connections_per_replica = args.conns.div_ceil(addrs.len());
            let client = RpcClient::new(config);
            vec![client; args.conns]
        }
    };
    let calls = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let (calls, measuring, stop) = (calls.clone(), measuring.clone(), stop.clone());
            let params = params.clone();
            tokio::spawn(async move {
                let mut tally = Tally::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let result = client.call_raw_via("echo", &params).await;
                    calls.fetch_add(1, Ordering::Relaxed);
                    let error = match result {
                        Ok((reply, _)) if reply[..] != params[..] => {
                            Some("the reply is not the params sent".to_owned())
                        }
                        Ok((_, replica)) => {
                            if measuring.load(Ordering::Relaxed) {
                                let us = started.elapsed().as_micros() as u64;
                                tally.histogram.saturating_record(us);
                                *tally.spread.entry(replica.to_string()).or_insert(0) += 1;
                            }
                            None
                        }
                        Err(e) => Some(e.to_string()),
                    };
                    if let Some(error) = error {
                        tally.errors += 1;
                        tally.first_error.get_or_insert(error);
                    }
                }
                tally
            })
        })
        .collect();

    tokio::time::sleep(args.warmup).await;
    let (calls_before, cpu_before, started) =
        (calls.load(Ordering::Relaxed), cpu_time()?, Instant::now());
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(args.measure).await;
    measuring.store(false, Ordering::Relaxed);
    let (calls_after, cpu_after, elapsed) = (
        calls.load(Ordering::Relaxed),
        cpu_time()?,
        started.elapsed(),
    );
    stop.store(true, Ordering::Relaxed);

    let mut tally = Tally::new();
    for task in tasks {
        tally.add(&task.await?);
    }
    let done = calls_after - calls_before;
    Ok(Measured {
        calls_per_s: done as f64 / elapsed.as_secs_f64(),
        cpu_us_per_call: (cpu_after - cpu_before).as_secs_f64() * 1e6 / done.max(1) as f64,
        tally,
    })
}

/// User plus system CPU time of this process (every thread) so far.
fn cpu_time() -> anyhow::Result<Duration> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct it is given on success.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error()).context("getrusage");
        }
        usage.assume_init()
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(time(usage.ru_utime) + time(usage.ru_stime))
}

fn thousandths(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}
