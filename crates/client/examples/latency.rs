//! Per-message latency through a running server: N sequential calls over
//! one connection, each carrying `[1, 2, ..., 8]` (which both `echo` and
//! `sum` handlers accept), then the median, 99th percentile and mean.
//!
//!   cargo run --release -p arrpc-client --example latency -- 127.0.0.1:8080 2000

use std::time::{Duration, Instant};

use arrpc_client::{BlockingClient, ClientConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let calls: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(1000);
    let message: Vec<u32> = (1..=8).collect();
    let mut client = BlockingClient::new(ClientConfig::new(addr))?;
    // The first call connects; it is not counted.
    client.send_raw(&rmp_serde::to_vec(&message)?)?;
    let bytes = rmp_serde::to_vec(&message)?;
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        client.send_raw(&bytes)?;
        times.push(started.elapsed());
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    let mean = times.iter().sum::<Duration>() / calls.max(1) as u32;
    println!(
        "{calls} calls: median {:?}, p99 {:?}, mean {mean:?}",
        at(0.5),
        at(0.99)
    );
    Ok(())
}
