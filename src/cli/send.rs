//! `arrpc-host send`: one message to any arrpc server, from the shell.
//!
//! The message is JSON by default (encoded as MessagePack for the wire) and
//! the reply is printed as JSON; `--hex` and `--raw` pass MessagePack bytes
//! through untouched for values JSON cannot express. With `--handler` the
//! message is the `params` of a MessagePack-RPC call to that handler and the
//! call's result is printed.
//!
//! `--addr` may name replicas (`dns://name:port`, `a:port,b:port`); calls
//! then spread over them, and `--stats N` makes N calls and prints how they
//! spread, with latency percentiles: the quickest look at a deployment's
//! balance.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use arrpc_client::{BlockingClient, ClientConfig, RpcClient};
use clap::Args;

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The message. Without it, the message is read from --file or stdin.
    message: Option<String>,
    /// Call this handler over MessagePack-RPC, with the message as params.
    #[arg(long)]
    handler: Option<String>,
    /// Server address: `host:port`, a list of replicas `a:port,b:port`,
    /// or `dns://name:port` for every A/AAAA record of the name (a
    /// Kubernetes headless Service). Replicas need --handler.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Make this many calls (with --handler) and print how they spread over
    /// the replicas, with latency percentiles, instead of the reply.
    #[arg(long, value_name = "N", requires = "handler", value_parser = clap::value_parser!(u64).range(1..))]
    stats: Option<u64>,
    /// Calls in flight at once under --stats.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    concurrency: u64,
    /// Ask this nameserver (`ip:port`) about `dns://` names instead of the
    /// system's.
    #[arg(long, value_name = "IP:PORT")]
    dns_server: Option<std::net::SocketAddr>,
    /// Read the message from this file.
    #[arg(long, conflicts_with = "message")]
    file: Option<PathBuf>,
    /// Limit on the whole request (e.g. `10s`, `500ms`).
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    timeout: Duration,
    /// Connection attempts before giving up.
    #[arg(long, default_value_t = 5)]
    retries: u32,
    /// Message and reply are hex-encoded MessagePack instead of JSON.
    #[arg(long, conflicts_with = "raw")]
    hex: bool,
    /// Message and reply are raw MessagePack bytes (stdin/--file to stdout).
    #[arg(long)]
    raw: bool,
    /// Continue this W3C trace (`00-<trace id>-<parent id>-<flags>`): the
    /// message travels in a trace envelope, and the host's span for it (or,
    /// with tracing off, its handler) gets this context. Only for
    /// `arrpc-host`: the Python arrpc package's server takes the envelope for
    /// the message.
    #[arg(long, value_parser = parse_traceparent)]
    traceparent: Option<String>,
    /// Log connection attempts and other detail.
    #[arg(long)]
    pub debug: bool,
    #[command(flatten)]
    security: super::security::SendSecurityArgs,
}

pub fn run(args: SendArgs) -> ExitCode {
    match send(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(hint) = e
                .downcast_ref::<arrpc_client::Error>()
                .and_then(|e| args.security.tls_hint(e))
            {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

fn send(args: &SendArgs) -> anyhow::Result<()> {
    let input = read_input(args)?;
    let message = if args.raw {
        input
    } else if args.hex {
        hex::decode(String::from_utf8_lossy(&input).trim()).context("--hex message is not hex")?
    } else {
        let json: serde_json::Value =
            serde_json::from_slice(&input).context("message is not JSON")?;
        rmp_serde::to_vec(&json)?
    };
    if !arrpc_wire::frame::is_single_value(&message) {
        bail!("message is not exactly one MessagePack value");
    }

    let mut config = ClientConfig::new(args.addr.clone());
    config.timeout = Some(args.timeout);
    config.connect_timeout = args.timeout;
    config.connect_attempts = args.retries.max(1);
    config.dns_server = args.dns_server;
    args.security.apply(&mut config)?;
    if let (Some(calls), Some(handler)) = (args.stats, &args.handler) {
        let client = RpcClient::new(config);
        let stats = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(stats(&client, handler, &message, calls, args.concurrency))?;
        print!("{stats}");
        return Ok(());
    }
    let reply = match (&args.handler, &args.traceparent) {
        (Some(handler), traceparent) => {
            let client = RpcClient::new(config);
            let call = async {
                match traceparent {
                    Some(tp) => client.call_raw_traced(handler, &message, tp).await,
                    None => client.call_raw(handler, &message).await,
                }
            };
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(call)?
        }
        (None, Some(tp)) => BlockingClient::new(config)?.send_raw_traced(&message, tp)?,
        (None, None) => BlockingClient::new(config)?.send_raw(&message)?,
    };

    let mut stdout = std::io::stdout().lock();
    if args.raw {
        stdout.write_all(&reply)?;
    } else if args.hex {
        writeln!(stdout, "{}", hex::encode(&reply))?;
    } else {
        let value =
            rmpv::decode::read_value(&mut &reply[..]).context("reply is not MessagePack")?;
        writeln!(stdout, "{}", to_json(value))?;
    }
    Ok(())
}

/// Makes `calls` calls, `concurrency` at a time; how they spread over the
/// replicas and how long they took, as a table. The first failed call ends
/// the run with its error.
async fn stats(
    client: &RpcClient,
    handler: &str,
    params: &[u8],
    calls: u64,
    concurrency: u64,
) -> anyhow::Result<String> {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = std::time::Instant::now();
    let workers = (0..concurrency.min(calls)).map(|_| {
        let (client, next) = (client.clone(), next.clone());
        let (handler, params) = (handler.to_owned(), params.to_vec());
        tokio::spawn(async move {
            let mut took = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < calls {
                let call = std::time::Instant::now();
                let (_, replica) = client.call_raw_via(&handler, &params).await?;
                took.push((replica, call.elapsed()));
            }
            Ok::<_, arrpc_client::Error>(took)
        })
    });
    let mut by_replica: std::collections::BTreeMap<String, Vec<Duration>> = Default::default();
    for worker in futures::future::join_all(workers).await {
        for (replica, took) in worker?? {
            by_replica
                .entry(replica.to_string())
                .or_default()
                .push(took);
        }
    }
    let elapsed = started.elapsed();
    let mut all: Vec<Duration> = by_replica.values().flatten().copied().collect();
    let mut table = format!(
        "{:<24} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9}\n",
        "replica", "calls", "share", "p50", "p90", "p99", "max"
    );
    let total = all.len();
    for (replica, took) in &mut by_replica {
        table += &stats_line(replica, took, total);
    }
    table += &stats_line("all", &mut all, total);
    table += &format!(
        "{total} calls in {elapsed:.2?}, {:.0} calls/s\n",
        total as f64 / elapsed.as_secs_f64()
    );
    Ok(table)
}

/// One row of the `--stats` table.
fn stats_line(name: &str, took: &mut [Duration], total: usize) -> String {
    took.sort_unstable();
    let at = |q: f64| took[((took.len() as f64 * q).ceil() as usize).clamp(1, took.len()) - 1];
    format!(
        "{name:<24} {:>8} {:>6.1}% {:>9.2?} {:>9.2?} {:>9.2?} {:>9.2?}\n",
        took.len(),
        100.0 * took.len() as f64 / total as f64,
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    )
}

fn parse_traceparent(text: &str) -> Result<String, String> {
    arrpc_wire::trace::check_traceparent(text)
        .map(|()| text.to_owned())
        .map_err(str::to_owned)
}

fn read_input(args: &SendArgs) -> anyhow::Result<Vec<u8>> {
    if let Some(message) = &args.message {
        return Ok(message.clone().into_bytes());
    }
    if let Some(path) = &args.file {
        return std::fs::read(path).with_context(|| format!("cannot read {}", path.display()));
    }
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .context("cannot read stdin")?;
    Ok(input)
}

/// MessagePack to JSON, for printing. Binary becomes an array of byte
/// values, non-string map keys become their JSON text, and an extension
/// becomes `{"ext": type, "data": [bytes]}`.
fn to_json(value: rmpv::Value) -> serde_json::Value {
    use rmpv::Value as M;
    use serde_json::Value as J;
    match value {
        M::Nil => J::Null,
        M::Boolean(b) => J::Bool(b),
        M::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => J::from(u),
            (_, Some(s)) => J::from(s),
            _ => J::Null,
        },
        M::F32(f) => J::from(f64::from(f)),
        M::F64(f) => J::from(f),
        M::String(s) => J::String(match s.into_str() {
            Some(s) => s,
            None => String::from("<invalid UTF-8>"),
        }),
        M::Binary(bytes) => J::from(bytes),
        M::Array(items) => J::Array(items.into_iter().map(to_json).collect()),
        M::Map(entries) => J::Object(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let key = match to_json(k) {
                        J::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        M::Ext(kind, data) => serde_json::json!({ "ext": kind, "data": data }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_survives_a_round_trip_through_messagepack() {
        let json: serde_json::Value =
            serde_json::from_str(r#"{"foo":"bar","n":[1,-2,3.5,null,true],"nested":{}}"#).unwrap();
        let packed = rmp_serde::to_vec(&json).unwrap();
        let value = rmpv::decode::read_value(&mut &packed[..]).unwrap();
        assert_eq!(to_json(value), json);
    }

    #[test]
    fn non_json_values_are_spelled_out() {
        let value = rmpv::Value::Map(vec![
            (rmpv::Value::from(1), rmpv::Value::Binary(vec![7, 8])),
            (rmpv::Value::from("e"), rmpv::Value::Ext(5, vec![1])),
        ]);
        assert_eq!(
            to_json(value),
            serde_json::json!({"1": [7, 8], "e": {"ext": 5, "data": [1]}})
        );
    }
}
