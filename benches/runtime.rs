//! Per-message cost at the runtime level: `Handler::call` on the echo
//! component, no sockets. Prints one JSON line per payload size.
//!
//! Run: `cargo bench --bench runtime` (builds the echo component if missing).

use std::path::Path;
use std::time::Instant;

use arrpc_host::config::Config;
use arrpc_host::runtime::{Request, Runtime, RuntimeOptions};

fn main() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config: Config = toml::from_str(&format!(
        "[[handler]]\nname = \"echo\"\nmodule = \"{}\"\nbuild = \"sh handlers/build.sh echo\"\n",
        repo.join("handlers/target/wasm32-wasip2/release/echo.wasm")
            .display()
    ))
    .expect("bench config");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let runtime = Runtime::new(RuntimeOptions::for_config(&config)).expect("engine");
        let handler = runtime
            .load(&config.handlers[0], repo)
            .await
            .expect("echo loads");
        for payload_size in [64usize, 4096] {
            let mut payload = vec![0xc5, 0, 0];
            payload.resize(payload_size, 7);
            let body = payload_size - 3;
            payload[1..3].copy_from_slice(&(body as u16).to_be_bytes());
            let call = |id| {
                handler.call(Request {
                    payload: &payload,
                    request_id: id,
                    peer: "127.0.0.1:1".into(),
                    traceparent: None,
                })
            };
            for id in 0..2_000 {
                call(id).await.expect("echo call");
            }
            let calls = 20_000u64;
            let started = Instant::now();
            for id in 0..calls {
                call(id).await.expect("echo call");
            }
            let per_call = started.elapsed().as_secs_f64() * 1e6 / calls as f64;
            println!(
                "{}",
                serde_json::json!({
                    "bench": "runtime_call_fresh_instance",
                    "handler": "echo",
                    "payload": payload_size,
                    "calls": calls,
                    "us_per_call": (per_call * 100.0).round() / 100.0,
                })
            );
        }
    });
}
