//! `arrpc-bench`: measures arrpc servers against a native ceiling measured
//! in the same run.
//!
//! For every point (connections × pipeline depth × payload size) it drives
//! closed-loop load against the native echo ceiling and each target
//! (`arrpc-host` serving the echo component plain, reused, signed or over
//! TLS, and Python arrpc's own server when available) in interleaved rounds, and
//! prints one JSON line per target: messages/s, p50 and p99 latency,
//! errors, and the ratio to the ceiling. Servers run pinned to one CPU and
//! the load generator to another. `footprint` measures start-up and memory,
//! `soak` memory under minutes of load, `path` the host's own
//! message path without sockets, `balanced` the client's balancer against
//! the same client driving one host directly, `outbound` handlers calling
//! out (forwarding to an upstream, pooled HTTP).

mod balanced;
mod ceiling;
mod load;
mod outbound;
mod path;
mod rounds;
mod soak;
mod store;
mod targets;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use targets::HostVariant;

/// A flag given twice takes its last value, so a script's defaults can be
/// overridden by flags passed after them.
#[derive(Parser)]
#[command(name = "arrpc-bench", args_override_self = true)]
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
        /// Serve TLS with this PEM certificate (and `--tls-key`).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
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
    /// The host's memory under minutes of steady load, sampled as it runs.
    Soak(soak::SoakArgs),
    /// The host's own message path in this process, over in-memory
    /// streams instead of sockets: nanoseconds per message beside the
    /// ceiling's loop over the same streams.
    Path(path::PathArgs),
    /// The client's balancer: an `RpcClient` over three replicas against
    /// the same client driving one host directly, in the same run.
    Balanced(balanced::BalancedArgs),
    /// Handlers calling out: a handler forwarding to an upstream host
    /// against calling it directly, and the TCP connections one HTTP GET
    /// per message opens.
    Outbound(outbound::OutboundArgs),
    /// Handlers keeping state: durable counter increments per second in
    /// an embedded store (and Redis, when named) beside echo.
    Store(store::StoreArgs),
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
    #[arg(long, value_delimiter = ',', default_values_t = [64, 4096], value_parser = load::message_size)]
    payload: Vec<usize>,
    /// Load before measuring starts, per round.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Measuring time per target per round.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    measure: Duration,
    /// Rounds per point; each measures the ceilings and every target back
    /// to back, and a line reports the median.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Targets to measure, of: ceiling, host (fresh instance per message),
    /// host-reuse (`reuse = 10000`), host-signed (HMAC envelopes),
    /// host-tls (TLS, fresh instance), ceiling-tls, seed (the Python arrpc
    /// server's echo). Beside the Python arrpc server running plain Python
    /// (python-arrpc-echo, python-arrpc-sum), with the ratio to it:
    /// host-python-echo, host-python-sum, host-js-echo, host-js-sum (the
    /// examples in handlers/, a fresh instance per message), each also with
    /// `-reuse` (`--reuse`), and the Rust echo as host-echo-vs-python,
    /// host-reuse-vs-python. The ceiling always runs, since ratios need
    /// it; ceiling-tls whenever host-tls does.
    #[arg(long, value_delimiter = ',', default_values_t = ["ceiling".to_string(), "host".into(), "host-reuse".into(), "host-signed".into(), "host-tls".into(), "seed".into()])]
    targets: Vec<String>,
    #[command(flatten)]
    pin: Pinning,
    /// The `arrpc-host` binary (default: next to this one).
    #[arg(long)]
    host_bin: Option<PathBuf>,
    /// Another `arrpc-host` build (say, of the previous commit) to measure
    /// in the same rounds: `host` and `host-reuse`, when requested, are
    /// joined by `host@baseline` and `host-reuse@baseline`, so a change is
    /// judged against its baseline under the same conditions: their lines
    /// give `ratio_to_baseline`, and a table on stderr sums them up.
    #[arg(long)]
    baseline_host_bin: Option<PathBuf>,
    /// The echo component the baseline build serves (say, built from the
    /// same commit); default: the one this tree builds.
    #[arg(long, requires = "baseline_host_bin")]
    baseline_echo: Option<PathBuf>,
    /// What the baseline is called in the comparison table printed at the
    /// end (say, its commit).
    #[arg(long, requires = "baseline_host_bin")]
    baseline_name: Option<String>,
    /// Messages one instance serves in the `-reuse` language targets
    /// (default: what `arrpc-host new` sets for Python and JavaScript).
    #[arg(long, default_value_t = arrpc_host::cli::INTERPRETED_REUSE)]
    reuse: u32,
    /// What the language targets send: `--payload` sized bin for echo and
    /// 10 floats for sum, 1,000 integers, or a nested record. Identity
    /// (`host-python-identity`, `host-js-identity`, beside
    /// `python-arrpc-identity`) returns the message as objects, decoded and
    /// encoded again; echo returns its bytes.
    #[arg(long, value_enum, default_value_t = targets::Message::Sized)]
    message: targets::Message,
    /// A Python with `arrpc==0.5.0` installed, to measure the Python
    /// arrpc server (`seed`, `python-arrpc-*`).
    #[arg(long, default_value = "target/tmp/seed-venv/bin/python")]
    seed_python: PathBuf,
}

/// Where servers and the load generator run, so neither borrows the
/// other's core.
#[derive(clap::Args)]
struct Pinning {
    /// CPU the server under test is pinned to (with taskset).
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// CPU the load generator is pinned to.
    #[arg(long, default_value_t = 1)]
    client_cpu: usize,
    /// Do not pin anything.
    #[arg(long)]
    no_pin: bool,
}

impl Pinning {
    /// Pins the calling thread (threads started later inherit it) and
    /// returns the CPU servers are to be pinned to.
    fn apply(&self) -> anyhow::Result<Option<usize>> {
        if self.no_pin {
            return Ok(None);
        }
        let pinned = core_affinity::set_for_current(core_affinity::CoreId {
            id: self.client_cpu,
        });
        anyhow::ensure!(
            pinned,
            "cannot pin the load generator to CPU {}",
            self.client_cpu
        );
        Ok(Some(self.server_cpu))
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let host_bin = |given: Option<PathBuf>| {
        given.map_or_else(
            || std::env::current_exe().map(|exe| exe.with_file_name("arrpc-host")),
            Ok,
        )
    };
    match cli.command {
        Some(Sub::Ceiling {
            listen,
            tls_cert,
            tls_key,
        }) => {
            let tls = tls_cert
                .zip(tls_key)
                .map(|(cert, key)| tls::acceptor(&cert, &key))
                .transpose()?;
            runtime(1)?.block_on(ceiling::serve(listen, tls))
        }
        Some(Sub::Footprint {
            handlers,
            idle,
            host_bin: given,
        }) => footprint(&repo, &host_bin(given)?, handlers, idle),
        Some(Sub::Soak(args)) => {
            // Pinned before the runtime starts, so its threads inherit it.
            let server_cpu = args.pin.apply()?;
            let host_bin = host_bin(args.host_bin.clone())?;
            soak::run(&args, &repo, &host_bin, server_cpu, &runtime(1)?)
        }
        Some(Sub::Path(args)) => path::run(&args, &repo),
        Some(Sub::Balanced(args)) => {
            let server_cpu = args.pin.apply()?;
            let host_bin = host_bin(args.host_bin.clone())?;
            balanced::run(&args, &repo, &host_bin, server_cpu, &runtime(1)?)
        }
        Some(Sub::Outbound(args)) => {
            let server_cpu = args.pin.apply()?;
            let host_bin = host_bin(args.host_bin.clone())?;
            outbound::run(&args, &repo, &host_bin, server_cpu, &runtime(1)?)
        }
        Some(Sub::Store(args)) => {
            let server_cpu = args.pin.apply()?;
            let host_bin = host_bin(args.host_bin.clone())?;
            store::run(&args, &repo, &host_bin, server_cpu, &runtime(1)?)
        }
        None => {
            let args = cli.run;
            let server_cpu = args.pin.apply()?;
            let host_bin = host_bin(args.host_bin.clone())?;
            rounds::run(&args, &repo, &host_bin, server_cpu, &runtime(1)?)
        }
    }
}

fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
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
    let ceiling = targets::ceiling(None, None)?;
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
