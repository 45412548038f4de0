//! `arrpc-bench`: measures arrpc servers against a native ceiling measured
//! in the same run.
//!
//! For every target (the native echo ceiling, `arrpc-host` serving the echo
//! component, and the Python seed when available) and every point
//! (connections × pipeline depth × payload size) it drives closed-loop load
//! for a fixed time after a warm-up and prints one JSON line: messages/s,
//! p50 and p99 latency, errors, and the ratio to the ceiling at the same
//! point. Servers run pinned to one CPU and the load generator to another.

mod ceiling;
mod load;
mod targets;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use load::{Exchange, Outcome, Point, Timing};
use targets::HostVariant;

#[derive(Parser)]
#[command(name = "arrpc-bench")]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Sub {
    /// Serve the native echo ceiling (started by a run; rarely by hand).
    Ceiling {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Start-up time (warm compile cache) and memory with many handlers
    /// and idle connections.
    Footprint {
        #[arg(long, default_value_t = 10)]
        handlers: usize,
        #[arg(long, default_value_t = 1000)]
        idle: usize,
        /// The `arrpc-host` binary (default: next to this one).
        #[arg(long)]
        host_bin: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Connection counts to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 64])]
    conns: Vec<usize>,
    /// Pipeline depths (messages in flight per connection).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16])]
    pipeline: Vec<usize>,
    /// Message sizes in bytes.
    #[arg(long, value_delimiter = ',', default_values_t = [64, 4096])]
    payload: Vec<usize>,
    /// Load before measuring starts.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Measuring time per point.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    measure: Duration,
    /// Targets to measure, of: ceiling, host (fresh instance per message),
    /// host-reuse (`reuse = 10000`), host-signed (HMAC envelopes), seed.
    /// The ceiling always runs, since ratios need it.
    #[arg(long, value_delimiter = ',', default_values_t = ["ceiling".to_string(), "host".into(), "host-reuse".into(), "host-signed".into(), "seed".into()])]
    targets: Vec<String>,
    /// CPU the server under test is pinned to (with taskset).
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// CPU the load generator is pinned to.
    #[arg(long, default_value_t = 1)]
    client_cpu: usize,
    /// Do not pin anything.
    #[arg(long)]
    no_pin: bool,
    /// The `arrpc-host` binary (default: next to this one).
    #[arg(long)]
    host_bin: Option<PathBuf>,
    /// A Python with `arrpc==0.5.0` installed, to measure the seed.
    #[arg(long, default_value = "target/seed-venv/bin/python")]
    seed_python: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let sibling_host = || std::env::current_exe().map(|exe| exe.with_file_name("arrpc-host"));
    match cli.command {
        Some(Sub::Ceiling { listen }) => return runtime(1)?.block_on(ceiling::serve(listen)),
        Some(Sub::Footprint {
            handlers,
            idle,
            host_bin,
        }) => {
            return footprint(
                &repo,
                &host_bin.map_or_else(sibling_host, Ok)?,
                handlers,
                idle,
            );
        }
        None => {}
    }
    let args = cli.run;
    let server_cpu = (!args.no_pin).then_some(args.server_cpu);
    if !args.no_pin {
        let pinned = core_affinity::set_for_current(core_affinity::CoreId {
            id: args.client_cpu,
        });
        anyhow::ensure!(
            pinned,
            "cannot pin the load generator to CPU {}",
            args.client_cpu
        );
    }
    let rt = runtime(1)?;
    let host_bin = args.host_bin.clone().map_or_else(sibling_host, Ok)?;
    let timing = Timing {
        warmup: args.warmup,
        measure: args.measure,
        reply_timeout: Duration::from_secs(2),
    };
    let mut points = Vec::new();
    for &conns in &args.conns {
        for &pipeline in &args.pipeline {
            for &payload in &args.payload {
                points.push(Point {
                    conns,
                    pipeline,
                    payload,
                });
            }
        }
    }

    let ceiling_target = targets::ceiling(server_cpu)?;
    let ceiling: Vec<Outcome> = points
        .iter()
        .map(|p| {
            let outcome = rt.block_on(load::drive(
                ceiling_target.addr,
                *p,
                timing,
                Exchange::plain(p.payload),
            ));
            report("ceiling", p, &outcome, None);
            outcome
        })
        .collect();
    drop(ceiling_target);

    for name in args.targets.iter().filter(|t| *t != "ceiling") {
        let host = |variant| {
            targets::echo_component(&repo)
                .and_then(|wasm| targets::host(&host_bin, &wasm, server_cpu, variant, None))
        };
        let target = match name.as_str() {
            "host" => host(HostVariant::Fresh),
            "host-reuse" => host(HostVariant::Reuse),
            "host-signed" => host(HostVariant::Signed),
            "seed" if !args.seed_python.exists() => {
                eprintln!(
                    "seed: not measured: {} not found (create a venv with arrpc==0.5.0 or pass --seed-python)",
                    args.seed_python.display()
                );
                continue;
            }
            "seed" => targets::seed(&args.seed_python, server_cpu),
            other => anyhow::bail!(
                "unknown target `{other}` (ceiling, host, host-reuse, host-signed, seed)"
            ),
        };
        let target = target?;
        for (p, base) in points.iter().zip(&ceiling) {
            let exchange = match name.as_str() {
                "host-signed" => Exchange::signed(p.payload, targets::BENCH_SECRET),
                _ => Exchange::plain(p.payload),
            };
            let outcome = rt.block_on(load::drive(target.addr, *p, timing, exchange));
            report(name, p, &outcome, Some(base));
        }
    }
    Ok(())
}

fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
}

/// Prints one JSON line on stdout.
fn report(target: &str, p: &Point, o: &Outcome, ceiling: Option<&Outcome>) {
    let ratio = ceiling
        .filter(|c| c.msgs_per_s > 0.0 && o.failure.is_none())
        .map(|c| (o.msgs_per_s / c.msgs_per_s * 1000.0).round() / 1000.0);
    let line = serde_json::json!({
        "target": target,
        "conns": p.conns,
        "pipeline": p.pipeline,
        "payload": p.payload,
        "msgs_per_s": o.msgs_per_s.round(),
        "p50_us": o.p50_us,
        "p99_us": o.p99_us,
        "errors": o.errors,
        "ratio_to_ceiling": ratio,
        "failure": o.failure,
    });
    println!("{line}");
}

/// Start-up time with a warm compile cache and memory with many handlers
/// and idle connections, each beside the native ceiling's in the same run.
fn footprint(
    repo: &std::path::Path,
    host_bin: &std::path::Path,
    handlers: usize,
    idle: usize,
) -> anyhow::Result<()> {
    let echo = targets::echo_component(repo)?;
    let cache = tempfile::tempdir()?;
    let variant = HostVariant::Handlers(handlers);
    // The first start fills the compile cache; the second is timed.
    drop(targets::host(
        host_bin,
        &echo,
        None,
        variant,
        Some(cache.path()),
    )?);
    let started = std::time::Instant::now();
    let host = targets::host(host_bin, &echo, None, variant, Some(cache.path()))?;
    let host_start = started.elapsed();
    let started = std::time::Instant::now();
    let ceiling = targets::ceiling(None)?;
    let ceiling_start = started.elapsed();

    let hold = |addr| -> anyhow::Result<Vec<std::net::TcpStream>> {
        (0..idle)
            .map(|_| Ok(std::net::TcpStream::connect(addr)?))
            .collect()
    };
    let host_conns = hold(host.addr)?;
    let ceiling_conns = hold(ceiling.addr)?;
    std::thread::sleep(Duration::from_secs(1));
    let (host_rss, host_peak) = host.memory_kib()?;
    let (ceiling_rss, ceiling_peak) = ceiling.memory_kib()?;
    drop((host_conns, ceiling_conns));
    println!(
        "{}",
        serde_json::json!({
            "bench": "footprint",
            "handlers": handlers,
            "idle_connections": idle,
            "host_start_ms": host_start.as_millis(),
            "ceiling_start_ms": ceiling_start.as_millis(),
            "host_rss_mib": host_rss / 1024,
            "host_peak_rss_mib": host_peak / 1024,
            "ceiling_rss_mib": ceiling_rss / 1024,
            "ceiling_peak_rss_mib": ceiling_peak / 1024,
        })
    );
    Ok(())
}
