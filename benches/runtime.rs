//! Per-message cost at the runtime level: `Handler::call` on the echo
//! component, no sockets, with a fresh instance per message and with
//! instance reuse measured in the same run. Prints one JSON line per case.
//!
//! Run: `cargo bench --bench runtime` (builds the echo component if
//! missing). It pins itself to the first CPU it may use: unpinned, with the
//! other core busy, the figures here read up to twice as high.

use std::path::Path;
use std::time::Instant;

use arrpc_host::config::Config;
use arrpc_host::runtime::{Handler, Request, Runtime, RuntimeOptions};

const CALLS: u64 = 20_000;

fn main() {
    let cpu = core_affinity::get_core_ids()
        .and_then(|ids| ids.into_iter().next())
        .expect("a CPU to run on");
    assert!(core_affinity::set_for_current(cpu), "pinning to {cpu:?}");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let echo = repo.join("handlers/target/wasm32-wasip2/release/echo.wasm");
    let config: Config = toml::from_str(&format!(
        "[[handler]]\nname = \"echo\"\nmodule = \"{0}\"\nbuild = \"sh handlers/build.sh echo\"\n\
         [[handler]]\nname = \"echo-reuse\"\nmodule = \"{0}\"\nreuse = 1000000\n",
        echo.display()
    ))
    .expect("bench config");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let runtime = Runtime::new(RuntimeOptions::for_config(&config)).expect("engine");
        let fresh = runtime
            .load(&config.handlers[0], repo)
            .await
            .expect("echo loads");
        let reuse = runtime
            .load(&config.handlers[1], repo)
            .await
            .expect("echo loads");
        for payload_size in [64usize, 4096] {
            let mut payload = vec![0xc5, 0, 0];
            payload.resize(payload_size, 7);
            let body = (payload_size - 3) as u16;
            payload[1..3].copy_from_slice(&body.to_be_bytes());
            let fresh_us = per_call(&fresh, &payload).await;
            let reuse_us = per_call(&reuse, &payload).await;
            for (mode, us) in [("fresh_instance", fresh_us), ("reused_instance", reuse_us)] {
                println!(
                    "{}",
                    serde_json::json!({
                        "bench": "runtime_call",
                        "mode": mode,
                        "handler": "echo",
                        "payload": payload_size,
                        "calls": CALLS,
                        "us_per_call": (us * 100.0).round() / 100.0,
                        "ratio_to_reused": ((us / reuse_us) * 10.0).round() / 10.0,
                    })
                );
            }
        }
    });
}

/// Mean microseconds per call over `CALLS` calls, after a warm-up.
async fn per_call(handler: &Handler, payload: &[u8]) -> f64 {
    let call = |request_id| {
        handler.call(Request {
            payload,
            request_id,
            peer: "127.0.0.1:1",
            traceparent: None,
            caller: None,
            started: Instant::now(),
        })
    };
    for id in 0..2_000 {
        call(id).await.expect("echo call");
    }
    let started = Instant::now();
    for id in 0..CALLS {
        call(id).await.expect("echo call");
    }
    started.elapsed().as_secs_f64() * 1e6 / CALLS as f64
}
