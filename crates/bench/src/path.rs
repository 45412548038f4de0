//! `arrpc-bench path`: the host's own message path, without a network.
//!
//! Connections are served by `arrpc_host::server::serve_connection` over
//! in-memory streams: framing, dispatch, metrics, the echo handler (fresh
//! instance per message, and reused) and reply writing, all in this
//! process on one pinned thread with the client. The baseline, measured
//! in the same rounds, is the native ceiling's loop over the same streams.
//! The kernel's TCP work, which dominates the network benchmark on
//! loopback and varies with the machine's load, is left out, so a change
//! to the host's own code shows here when it is lost in that noise.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use arrpc_host::config::{Config, HandlerConfig, ServerConfig};
use arrpc_host::runtime::{HandlerRegistry, HandlerSet, Runtime, RuntimeOptions};
use arrpc_host::server::{ConnectionLimits, Dispatcher, Peer, serve_connection, shutdown};
use arrpc_host::telemetry::Metrics;
use arrpc_wire::Connection;
use tokio::io::DuplexStream;

use crate::rounds::median;

#[derive(clap::Args)]
pub struct PathArgs {
    /// Connection counts to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 64])]
    conns: Vec<usize>,
    /// Messages in flight per connection: each connection sends a batch
    /// this size and reads its replies before sending the next.
    #[arg(long, default_value_t = 16)]
    pipeline: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64, value_parser = crate::load::message_size)]
    payload: usize,
    /// Messages per target per round.
    #[arg(long, default_value_t = 400_000)]
    messages: usize,
    /// Rounds per point; each measures every target back to back, and a
    /// line reports the median.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Targets besides the ceiling, which always runs: host (fresh
    /// instance per message), host-reuse.
    #[arg(long, value_delimiter = ',', default_values_t = ["host".to_string(), "host-reuse".into()])]
    targets: Vec<String>,
    /// CPU to run on; client and server share it.
    #[arg(long, default_value_t = 0)]
    cpu: usize,
}

pub fn run(args: &PathArgs, repo: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        core_affinity::set_for_current(core_affinity::CoreId { id: args.cpu }),
        "cannot pin to CPU {}",
        args.cpu
    );
    anyhow::ensure!(
        args.pipeline > 0 && args.rounds > 0 && !args.conns.contains(&0),
        "--conns, --pipeline and --rounds are at least 1"
    );
    let echo = crate::targets::echo_component(repo)?;
    let config = |default: &str| -> anyhow::Result<Config> {
        let handler = |name: &str, reuse| HandlerConfig {
            max_instances: 4096,
            reuse,
            ..HandlerConfig::new(name, &echo)
        };
        let config = Config {
            server: ServerConfig {
                default_handler: Some(default.into()),
                max_pipelined: args.pipeline,
                ..ServerConfig::default()
            },
            handlers: vec![handler("echo", 0), handler("echo-reuse", 1_000_000)],
            ..Config::default()
        };
        config.prepare(repo).map_err(anyhow::Error::msg)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let fresh = config("echo")?;
        let runtime = Runtime::new(RuntimeOptions::for_config(&fresh))
            .map_err(|e| anyhow::anyhow!("cannot create the engine: {e:#}"))?;
        let fresh_set = HandlerSet::load(&runtime, &fresh, repo, None)
            .await
            .context("loading echo")?;
        let reuse_set = HandlerSet::load(&runtime, &config("echo-reuse")?, repo, Some(&fresh_set))
            .await
            .context("loading echo")?;
        let limits = ConnectionLimits {
            max_message: fresh.server.max_message_bytes,
            max_pipelined: args.pipeline,
            idle_timeout: Duration::from_secs(600),
            max_age: None,
        };
        let dispatcher = |set| {
            let registry = Arc::new(HandlerRegistry::new(set));
            Arc::new(Dispatcher::new(
                registry,
                false,
                None,
                Arc::new(Metrics::new()),
            ))
        };
        let mut targets = vec![("ceiling", None)];
        for (name, set) in [("host", fresh_set), ("host-reuse", reuse_set)] {
            if args.targets.iter().any(|t| t == name) {
                targets.push((name, Some(dispatcher(set))));
            }
        }
        let payload = crate::load::message(args.payload);
        for &conns in &args.conns {
            let batches = (args.messages / (conns * args.pipeline)).max(1);
            let mut rounds = vec![Vec::new(); targets.len()];
            for _ in 0..args.rounds {
                for (i, (_, dispatcher)) in targets.iter().enumerate() {
                    let load = Load {
                        conns,
                        pipeline: args.pipeline,
                        batches,
                        payload: &payload,
                    };
                    rounds[i].push(load.ns_per_message(dispatcher.clone(), limits).await?);
                }
            }
            let ceiling = median(rounds[0].clone()).context("no rounds")?;
            for ((target, _), measured) in targets.iter().zip(&rounds) {
                let ns = median(measured.clone()).context("no rounds")?;
                let fastest = measured.iter().copied().fold(f64::INFINITY, f64::min);
                println!(
                    "{}",
                    serde_json::json!({
                        "bench": "path",
                        "target": target,
                        "conns": conns,
                        "pipeline": args.pipeline,
                        "payload": args.payload,
                        "rounds": args.rounds,
                        "ns_per_message": ns.round(),
                        "ns_fastest": fastest.round(),
                        "ratio_to_ceiling": ((ceiling / ns) * 1000.0).round() / 1000.0,
                    })
                );
            }
        }
        Ok(())
    })
}

/// One round's load on one target.
struct Load<'a> {
    conns: usize,
    pipeline: usize,
    batches: usize,
    payload: &'a [u8],
}

impl Load<'_> {
    /// Nanoseconds per message, the client's share included: every
    /// connection sends `batches` batches of `pipeline` messages.
    async fn ns_per_message(
        &self,
        dispatcher: Option<Arc<Dispatcher>>,
        limits: ConnectionLimits,
    ) -> anyhow::Result<f64> {
        let (_trigger, shutdown) = shutdown::channel();
        let mut clients = Vec::new();
        for _ in 0..self.conns {
            let (client, server) = tokio::io::duplex(64 << 10);
            match &dispatcher {
                Some(dispatcher) => tokio::spawn(serve_connection(
                    server,
                    Arc::new(Peer::anonymous("127.0.0.1:1")),
                    dispatcher.clone(),
                    limits,
                    shutdown.clone(),
                )),
                None => tokio::spawn(async move {
                    let _ = crate::ceiling::echo(server).await;
                }),
            };
            clients.push(Connection::new(client, 1 << 20));
        }
        // One batch per connection warms up, then the clock starts.
        let drive = |clients: Vec<_>, batches| {
            futures::future::try_join_all(clients.into_iter().map(|c| self.drive(c, batches)))
        };
        let clients = drive(clients, 1).await?;
        let started = Instant::now();
        drive(clients, self.batches).await?;
        let messages = self.conns * self.batches * self.pipeline;
        Ok(started.elapsed().as_nanos() as f64 / messages as f64)
    }

    /// Sends `batches` batches on one connection, checking every reply.
    async fn drive(
        &self,
        mut conn: Connection<DuplexStream>,
        batches: usize,
    ) -> anyhow::Result<Connection<DuplexStream>> {
        for _ in 0..batches {
            for _ in 0..self.pipeline {
                conn.write_message(self.payload).await?;
            }
            conn.flush().await?;
            for _ in 0..self.pipeline {
                let reply = conn.read_message().await?.context("connection closed")?;
                anyhow::ensure!(reply == self.payload, "the echo's reply differs");
            }
        }
        Ok(conn)
    }
}
