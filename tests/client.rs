//! The Rust client against a real host: typed errors, timeouts, reconnects.
//! The host runs in process, but where a test kills it.

mod common;

use std::time::Duration;

use arrpc_client::{ClientConfig, Error, RpcClient};
use arrpc_host::config::HandlerConfig;
use common::*;

#[test]
fn handler_errors_come_back_typed() {
    let host = misbehave_host(|h| h);
    let mut client = client(&host, Duration::from_secs(10));
    match client.send::<_, String>("error") {
        Err(Error::Rpc(reason)) => assert_eq!(reason, "misbehave: asked to fail"),
        other => panic!("expected an rpc error, got {other:?}"),
    }
    assert_eq!(client.send::<_, String>("again").unwrap(), "again");
}

#[test]
fn a_slow_reply_times_out_and_does_not_answer_the_next_request() {
    let gate = Gate::new();
    // The client gives up first: the host would end the call at its own
    // timeout.
    let host = misbehave_host(|h| HandlerConfig {
        dirs: vec![gate.grant()],
        timeout: Duration::from_secs(60),
        ..h
    });
    // The timeout also bounds the next request, which reconnects first:
    // long enough for that on a busy machine.
    let mut client = client(&host, Duration::from_secs(5));
    let outcome = client.send::<_, String>(&Gate::wait("late"));
    assert!(matches!(outcome, Err(Error::Timeout { .. })), "{outcome:?}");
    // The late reply must not be taken as the next request's reply.
    gate.open("late");
    host.wait_for_metric(
        "arrpc_messages_total",
        &[("handler", "misbehave"), ("outcome", "ok")],
        1.0,
    );
    assert_eq!(client.send::<_, String>("next").unwrap(), "next");
}

#[test]
fn the_client_reconnects_after_the_server_closed_an_idle_connection() {
    let mut config = misbehave_config(|h| h);
    config.server.idle_timeout = Duration::from_millis(200);
    let host = InProcessHost::start(config);
    let mut client = client(&host, Duration::from_secs(10));
    assert_eq!(client.send::<_, String>("one").unwrap(), "one");
    // The host closes the idle connection ...
    host.wait_for_metric("arrpc_connections_open", &[], 0.0);
    assert_eq!(client.send::<_, String>("two").unwrap(), "two");
    // ... and the second message goes over a second one.
    assert_eq!(host.metric("arrpc_connections_total", &[]), 2.0);
}

#[test]
fn an_rpc_client_that_loses_its_connection_fails_every_call_in_flight() {
    let gate = Gate::new();
    let mut host = Host::start_config(&misbehave_config(|h| HandlerConfig {
        dirs: vec![gate.grant()],
        ..h
    }));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut config = ClientConfig::new(host.addr.to_string());
    config.connect_attempts = 1;
    // Far longer than the test takes: a call that is never failed shows as
    // a timeout, not as a hang.
    config.timeout = Some(Duration::from_secs(120));
    let client = RpcClient::new(config);
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let client = client.clone();
            runtime.spawn(async move {
                client
                    .call::<_, String>("misbehave", &Gate::wait(&format!("never-{i}")))
                    .await
            })
        })
        .collect();
    host.wait_for_log_count("misbehave: waiting for /gate/never-", 8);
    host.child().kill().unwrap();
    host.child().wait().unwrap();
    for call in calls {
        let outcome = runtime.block_on(call).unwrap();
        assert!(
            matches!(outcome, Err(Error::Transport { .. })),
            "{outcome:?}"
        );
    }
    // The next call tries a new connection, and there is no server.
    let next = runtime.block_on(client.call::<_, String>("misbehave", "hi"));
    assert!(matches!(next, Err(Error::Connect { .. })), "{next:?}");
}
