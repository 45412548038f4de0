//! Per-message cost at the runtime level: `Handler::call` with no sockets,
//! a fresh instance per message and a reused one, measured in the same run
//! for the Rust echo component and the Python and JavaScript examples
//! (served as `python-echo`, `js-echo`); then, on reused instances, the
//! examples' object operations (`sum`, `identity`) on the messages
//! `arrpc-bench --message` sends, where the interpreter's own work shows
//! without the load generator's noise. Prints one JSON line per case.
//!
//! Run: `cargo bench --bench runtime [NAME]`, where NAME, when given,
//! measures only the cases whose handler name contains it. The echo
//! component is built if missing; the examples are skipped with a note
//! when their component is missing (`sh handlers/python-example/build.sh`,
//! `sh handlers/js-example/build.sh`). It pins itself to the first CPU it
//! may use: unpinned, with the other core busy, the figures here read up to
//! twice as high.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrpc_host::config::Config;
use arrpc_host::runtime::{Handler, Peer, Request, Runtime, RuntimeOptions};

#[path = "../crates/wire/benches/support/messages.rs"]
mod messages;

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

/// The examples' object operations: the served name, its module, and how
/// many calls a reused instance gets per message.
const OBJECT_CASES: [(&str, &str, u64); 4] = [
    (
        "python-sum",
        "handlers/python-example/python-example.wasm",
        20_000,
    ),
    (
        "python-identity",
        "handlers/python-example/python-example.wasm",
        20_000,
    ),
    ("js-sum", "handlers/js-example/js-example.wasm", 5_000),
    ("js-identity", "handlers/js-example/js-example.wasm", 5_000),
];

fn main() {
    let cpu = core_affinity::get_core_ids()
        .and_then(|ids| ids.into_iter().next())
        .expect("a CPU to run on");
    assert!(core_affinity::set_for_current(cpu), "pinning to {cpu:?}");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // cargo passes `--bench`; the first other argument filters.
    let filter = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with("--"))
        .unwrap_or_default();
    let present = |name: &str, module: &str| {
        if !name.contains(&filter) {
            return false;
        }
        let present = name == "echo" || repo.join(module).exists();
        if !present {
            eprintln!("{name}: not measured: {module} is missing");
        }
        present
    };
    let mut text = String::new();
    for (name, module, _) in CASES {
        if !present(name, module) {
            continue;
        }
        let build = if name == "echo" {
            "build = \"sh handlers/build.sh echo\"\n"
        } else {
            ""
        };
        text += &format!(
            "[[handler]]\nname = \"{name}\"\nmodule = \"{module}\"\n{build}\
             [[handler]]\nname = \"reused-{name}\"\nmodule = \"{module}\"\nreuse = 1000000\n"
        );
    }
    for (name, module, _) in OBJECT_CASES {
        if present(name, module) {
            text += &format!(
                "[[handler]]\nname = \"{name}\"\nmodule = \"{module}\"\nreuse = 1000000\n"
            );
        }
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
        let mut objects = Vec::new();
        for handler in &config.handlers {
            let loaded_handler = runtime
                .load(handler, repo)
                .await
                .unwrap_or_else(|e| panic!("{} loads: {e}", handler.name));
            let name = handler.name.trim_start_matches("reused-");
            match CASES.iter().find(|(case, ..)| *case == name) {
                Some((.., calls)) => loaded.push((loaded_handler, *calls)),
                None => {
                    let (.., calls) = OBJECT_CASES
                        .iter()
                        .find(|(case, ..)| *case == name)
                        .expect("a listed case");
                    objects.push((loaded_handler, *calls));
                }
            }
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
        // Three integers: what the object path costs whatever the message.
        let tiny = rmpv::Value::Array(vec![1.into(), 2.into(), 3.into()]);
        let messages = [
            ("three-ints", tiny),
            ("ints", messages::ints()),
            ("record", messages::record()),
        ];
        for (message, value) in messages {
            let payload = messages::pack(&value);
            for (handler, calls) in &objects {
                if message == "record" && handler.name().ends_with("sum") {
                    continue;
                }
                // The fastest of five runs: on a shared machine, anything
                // else running only ever adds time.
                let mut us = f64::INFINITY;
                for _ in 0..5 {
                    us = us.min(per_call(handler, &payload, *calls / 5).await);
                }
                println!(
                    "{}",
                    serde_json::json!({
                        "bench": "runtime_objects",
                        "handler": handler.name(),
                        "message": message,
                        "us_per_call": (us * 100.0).round() / 100.0,
                    })
                );
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
        call(id).await.expect("a reply");
    }
    let started = Instant::now();
    for id in 0..calls {
        call(id).await.expect("a reply");
    }
    started.elapsed().as_secs_f64() * 1e6 / calls as f64
}
