//! Per-message cost at the runtime level: `Handler::call` with no sockets,
//! a fresh instance per message and a reused one, measured in the same run
//! for the Rust echo component and the Python and JavaScript examples
//! (served as `python-echo`, `js-echo`). Prints one JSON line per case.
//!
//! Run: `cargo bench --bench runtime` (builds the echo component if
//! missing; the examples are skipped with a note when their component is
//! missing: `sh handlers/python-example/build.sh`, `sh
//! handlers/js-example/build.sh`). It pins itself to the first CPU it may
//! use: unpinned, with the other core busy, the figures here read up to
//! twice as high.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrpc_host::config::Config;
use arrpc_host::runtime::{Handler, Peer, Request, Runtime, RuntimeOptions};

/// A component the bench runs: its handler name, module, and how many
/// calls a fresh instance per message gets (fewer for the interpreters,
/// whose fresh instances take up to a millisecond; reused calls get ten
/// times as many).
const CASES: [(&str, &str, u64); 3] = [
    (
        "echo",
        "handlers/target/wasm32-wasip2/release/echo.wasm",
        20_000,
    ),
    (
        "python-echo",
        "handlers/python-example/python-example.wasm",
        1_000,
    ),
    ("js-echo", "handlers/js-example/js-example.wasm", 2_000),
];

fn main() {
    let cpu = core_affinity::get_core_ids()
        .and_then(|ids| ids.into_iter().next())
        .expect("a CPU to run on");
    assert!(core_affinity::set_for_current(cpu), "pinning to {cpu:?}");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut text = String::new();
    for (name, module, _) in CASES {
        let module = repo.join(module);
        if name != "echo" && !module.exists() {
            eprintln!("{name}: not measured: {} is missing", module.display());
            continue;
        }
        let build = if name == "echo" {
            "build = \"sh handlers/build.sh echo\"\n"
        } else {
            ""
        };
        text += &format!(
            "[[handler]]\nname = \"{name}\"\nmodule = \"{0}\"\n{build}\
             [[handler]]\nname = \"reused-{name}\"\nmodule = \"{0}\"\nreuse = 1000000\n",
            module.display()
        );
    }
    text = format!("[server]\ndefault_handler = \"echo\"\n{text}");
    let config: Config = toml::from_str(&text).expect("bench config");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let runtime = Runtime::new(RuntimeOptions::for_config(&config)).expect("engine");
        let mut loaded = Vec::new();
        for handler in &config.handlers {
            let calls = CASES
                .iter()
                .find(|(name, ..)| handler.name.trim_start_matches("reused-") == *name)
                .map(|(.., calls)| *calls)
                .expect("a listed case");
            let loaded_handler = runtime
                .load(handler, repo)
                .await
                .unwrap_or_else(|e| panic!("{} loads: {e}", handler.name));
            loaded.push((loaded_handler, calls));
        }
        for payload_size in [64usize, 4096] {
            let mut payload = vec![0xc5, 0, 0];
            payload.resize(payload_size, 7);
            let body = (payload_size - 3) as u16;
            payload[1..3].copy_from_slice(&body.to_be_bytes());
            for pair in loaded.chunks(2) {
                let [(fresh, calls), (reused, _)] = pair else {
                    unreachable!("handlers come in fresh and reused pairs")
                };
                let fresh_us = per_call(fresh, &payload, *calls).await;
                let reuse_us = per_call(reused, &payload, calls * 10).await;
                for (mode, us) in [("fresh_instance", fresh_us), ("reused_instance", reuse_us)] {
                    println!(
                        "{}",
                        serde_json::json!({
                            "bench": "runtime_call",
                            "mode": mode,
                            "handler": fresh.name(),
                            "payload": payload_size,
                            "us_per_call": (us * 100.0).round() / 100.0,
                            "ratio_to_reused": ((us / reuse_us) * 10.0).round() / 10.0,
                        })
                    );
                }
            }
        }
    });
}

/// Mean microseconds per call over `calls` calls, after a tenth as many
/// to warm up.
async fn per_call(handler: &Handler, payload: &[u8], calls: u64) -> f64 {
    let peer = Arc::new(Peer::anonymous("127.0.0.1:1"));
    let call = |request_id| {
        handler.call(Request {
            payload,
            request_id,
            peer: &peer,
            traceparent: None,
            started: Instant::now(),
        })
    };
    for id in 0..calls / 10 {
        call(id).await.expect("echo call");
    }
    let started = Instant::now();
    for id in 0..calls {
        call(id).await.expect("echo call");
    }
    started.elapsed().as_secs_f64() * 1e6 / calls as f64
}
