//! Connections sharing one worker thread take turns: a client that
//! pipelines thousands of quick messages does not keep the others waiting
//! until all of them are answered.
//!
//! The host's connection loop runs in process on a single-threaded tokio
//! runtime over in-memory streams, so which connection runs when is
//! deterministic; over sockets it would depend on the kernel's timing.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrpc_host::config::{Config, HandlerConfig, ServerConfig};
use arrpc_host::runtime::{HandlerRegistry, HandlerSet, Runtime, RuntimeOptions};
use arrpc_host::server::{ConnectionLimits, Dispatcher, Peer, serve_connection, shutdown};
use arrpc_host::telemetry::Metrics;
use arrpc_wire::Connection;
use futures::FutureExt;

const MAX_PIPELINED: usize = 16;
const FLOOD: usize = 4_000;

/// `tokio::test` runs on one thread: every connection shares its worker.
#[tokio::test]
async fn a_deep_pipeline_does_not_hold_the_worker_from_other_connections() {
    let config = Config {
        server: ServerConfig {
            default_handler: Some("echo".into()),
            max_pipelined: MAX_PIPELINED,
            // Compiled code goes under the test's target folder, not the
            // user's cache.
            cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("arrpc-host")),
            ..ServerConfig::default()
        },
        handlers: vec![HandlerConfig {
            reuse: 100_000,
            ..common::handler_config("echo", "echo")
        }],
        ..Config::default()
    }
    .prepare(Path::new("."))
    .expect("config");
    let runtime = Runtime::new(RuntimeOptions::for_config(&config)).expect("engine");
    let set = HandlerSet::load(&runtime, &config, Path::new("."), None)
        .await
        .expect("echo loads");
    let dispatcher = Arc::new(Dispatcher::new(
        Arc::new(HandlerRegistry::new(set)),
        false,
        None,
        Arc::new(Metrics::new()),
    ));
    let limits = ConnectionLimits {
        max_message: config.server.max_message_bytes,
        max_pipelined: MAX_PIPELINED,
        idle_timeout: Duration::from_secs(60),
        max_age: None,
    };
    let (_trigger, shutdown) = shutdown::channel();
    let open = |peer: &str| {
        let (client, server) = tokio::io::duplex(1 << 20);
        tokio::spawn(serve_connection(
            server,
            Arc::new(Peer::anonymous(peer)),
            dispatcher.clone(),
            limits,
            shutdown.clone(),
        ));
        Connection::new(client, 1 << 20)
    };
    let mut flood = open("127.0.0.1:1");
    let mut single = open("127.0.0.1:2");

    // The flood's messages (positive fixints, one byte each) are all
    // buffered at the host before the other connection's one message.
    for i in 0..FLOOD {
        flood.write_message(&[(i % 128) as u8]).await.unwrap();
    }
    flood.flush().await.unwrap();
    single.write_message(&[0x2a]).await.unwrap();
    single.flush().await.unwrap();

    let reply = single.read_message().await.unwrap().expect("a reply");
    assert_eq!(&reply[..], &[0x2a], "the echo of the single message");

    // Nothing runs while this task does: count the flood's replies
    // that were sent before the single message was answered.
    let mut answered = 0;
    while let Some(reply) = flood.read_message().now_or_never() {
        let reply = reply.unwrap().expect("a reply");
        assert_eq!(&reply[..], &[(answered % 128) as u8], "replies in order");
        answered += 1;
    }
    assert!(
        answered < FLOOD / 4,
        "the single message waited for {answered} of the flood's {FLOOD} messages"
    );

    // The flood is still answered in full, in order.
    while answered < FLOOD {
        let reply = flood.read_message().await.unwrap().expect("a reply");
        assert_eq!(&reply[..], &[(answered % 128) as u8], "replies in order");
        answered += 1;
    }
}
