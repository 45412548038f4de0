//! MessagePack-RPC routing: requests reach the handler their method names,
//! responses come back matched by msgid as handlers finish, notifications
//! get no reply, bare messages keep working, and clients this project did
//! not write (Node's `msgpack-rpc-lite`) and did write (`RpcClient`,
//! `send --handler`) interoperate.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use arrpc_client::{ClientConfig, Error, RpcClient};
use arrpc_host::config::{Config, HandlerConfig};
use common::*;
use rmpv::Value;

/// `misbehave`, the default handler, and `sum`.
fn two_handlers() -> Config {
    serving(vec![
        handler_config("misbehave", "misbehave"),
        handler_config("sum", "sum"),
    ])
}

/// [`two_handlers`] where `misbehave` can wait on `gate`.
fn gated_handlers(gate: &Gate) -> Config {
    let mut config = two_handlers();
    config.handlers[0].dirs.push(gate.grant());
    config
}

#[test]
fn interleaved_requests_come_back_matched_by_msgid_as_handlers_finish() {
    let gate = Gate::new();
    let host = InProcessHost::start(gated_handlers(&gate));
    let mut wire = host.connect();
    // One write, four requests to two handlers; the first two wait until
    // the test opens their gates, in the opposite order.
    let mut batch = request(10, "misbehave", &str_value(&Gate::wait("a")));
    batch.extend(request(11, "misbehave", &str_value(&Gate::wait("b"))));
    batch.extend(request(
        12,
        "sum",
        &Value::Array(vec![Value::from(2), Value::from(40)]),
    ));
    batch.extend(request(13, "misbehave", &str_value("fast")));
    wire.write(&batch);
    let mut replies: Vec<_> = (0..2).map(|_| response(&wire.read().unwrap())).collect();
    gate.open("b");
    replies.push(response(&wire.read().unwrap()));
    gate.open("a");
    replies.push(response(&wire.read().unwrap()));
    let order: Vec<u64> = replies.iter().map(|r| r.0).collect();
    assert_eq!(&order[2..], [11, 10], "held calls answer last: {order:?}");
    let by_id = |id| replies.iter().find(|r| r.0 == id).unwrap().clone();
    assert_eq!(by_id(10), (10, Value::Nil, str_value("/gate/a")));
    assert_eq!(by_id(11), (11, Value::Nil, str_value("/gate/b")));
    assert_eq!(
        by_id(12).2,
        Value::Map(vec![
            (str_value("sum"), Value::from(42)),
            (str_value("count"), Value::from(2))
        ])
    );
    assert_eq!(by_id(13), (13, Value::Nil, str_value("fast")));
}

#[test]
fn a_spinning_handler_does_not_hold_up_calls_behind_it_on_its_connection() {
    // A connection's messages share its task: the spinning guest must yield
    // at every epoch tick, so the call behind it is answered long before
    // the spinner's timeout.
    let host = InProcessHost::start(serving(vec![HandlerConfig {
        timeout: Duration::from_secs(3),
        ..handler_config("misbehave", "misbehave")
    }]));
    let mut wire = host.connect();
    let mut batch = request(1, "misbehave", &str_value("loop"));
    batch.extend(request(2, "misbehave", &str_value("fast")));
    wire.write(&batch);
    // The fast call's response comes first, before the spinner is cut off.
    let first = response(&wire.read().unwrap());
    assert_eq!(first, (2, Value::Nil, str_value("fast")));
    let (msgid, error, _) = response(&wire.read().unwrap());
    assert_eq!(msgid, 1);
    assert!(
        error.as_str().is_some_and(|e| e.contains("timeout")),
        "{error:?}"
    );
}

#[test]
fn errors_go_in_the_error_field_and_unknown_methods_are_named() {
    let host = InProcessHost::start(two_handlers());
    let mut wire = host.connect();
    let (id, error, result) = response(&wire.call(&request(1, "nope", &Value::Nil)));
    assert_eq!(
        (id, error, result),
        (1, str_value("no handler is named `nope`"), Value::Nil)
    );
    let (_, error, _) = response(&wire.call(&request(2, "misbehave", &str_value("error"))));
    assert_eq!(error, str_value("misbehave: asked to fail"));
    let (_, error, _) = response(&wire.call(&request(3, "misbehave", &str_value("trap"))));
    assert!(
        error
            .as_str()
            .unwrap()
            .contains("handler `misbehave` trapped"),
        "{error}"
    );
}

#[test]
fn notifications_run_but_get_no_reply() {
    let host = InProcessHost::start(two_handlers());
    let mut wire = host.connect();
    wire.write(&arrpc_wire::rpc::notification(
        "misbehave",
        &encode(&str_value("print:1")),
    ));
    // The next thing on the wire is the reply to the request after it.
    let (id, _, result) = response(&wire.call(&request(5, "misbehave", &str_value("x"))));
    assert_eq!((id, result), (5, str_value("x")));
    // The notification ran too.
    host.wait_for_metric(
        "arrpc_messages_total",
        &[("handler", "misbehave"), ("outcome", "ok")],
        2.0,
    );
}

#[test]
fn bare_messages_keep_their_order_and_their_form_beside_rpc() {
    let gate = Gate::new();
    let host = InProcessHost::start(gated_handlers(&gate));
    let mut wire = host.connect();
    let mut batch = encode(&str_value(&Gate::wait("first")));
    batch.extend(request(7, "misbehave", &str_value("quick")));
    batch.extend(encode(&str_value("second")));
    wire.write(&batch);
    // The RPC response overtakes the held bare message; the bare replies
    // stay in request order.
    assert_eq!(
        response(&wire.read().unwrap()),
        (7, Value::Nil, str_value("quick"))
    );
    gate.open("first");
    assert_eq!(decode(&wire.read().unwrap()), str_value("/gate/first"));
    assert_eq!(decode(&wire.read().unwrap()), str_value("second"));
}

#[test]
fn with_rpc_off_an_rpc_shaped_message_is_bare() {
    let mut config = two_handlers();
    config.server.rpc = false;
    let host = InProcessHost::start(config);
    let message = request(1, "sum", &Value::Array(vec![Value::from(1)]));
    // misbehave echoes what it does not understand: the whole message.
    assert_eq!(host.connect().call(&message), message);
}

#[test]
fn the_rpc_client_multiplexes_concurrent_calls_over_one_connection() {
    let gate = Gate::new();
    let host = InProcessHost::start(gated_handlers(&gate));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = RpcClient::new(ClientConfig::new(host.addr.to_string()));
    let calls: Vec<_> = (0..16u64)
        .map(|i| {
            let client = client.clone();
            runtime.spawn(async move {
                let opened: String = client.call("misbehave", &Gate::wait("all")).await.unwrap();
                assert_eq!(opened, "/gate/all");
                let sum: std::collections::HashMap<String, f64> =
                    client.call("sum", &[i, 1]).await.unwrap();
                sum["sum"]
            })
        })
        .collect();
    // All sixteen are in flight at once before any of them can finish.
    host.wait_for_in_flight(16);
    gate.open("all");
    let sums: Vec<f64> = calls
        .into_iter()
        .map(|call| runtime.block_on(call).unwrap())
        .collect();
    assert_eq!(sums, (0..16).map(|i| i as f64 + 1.0).collect::<Vec<_>>());
    assert_eq!(host.metric("arrpc_connections_total", &[]), 1.0);

    let error = runtime
        .block_on(client.call::<_, String>("misbehave", "error"))
        .unwrap_err();
    assert!(
        matches!(&error, Error::Rpc(text) if text == "misbehave: asked to fail"),
        "{error:?}"
    );
}

#[test]
fn send_with_handler_calls_that_handler() {
    let host = InProcessHost::start(two_handlers());
    let addr = host.addr.to_string();
    let out = host_command()
        .args(["send", "--addr", &addr, "--handler", "sum", "[1, 2, 4]"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"count\":3,\"sum\":7}\n"
    );
    let out = host_command()
        .args(["send", "--addr", &addr, "--handler", "nope", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr, "error: remote error: no handler is named `nope`\n",
        "{stderr}"
    );
}

/// Node's `msgpack-rpc-lite`, installed with npm on first use.
fn msgpack_rpc_lite() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("node-msgpack-rpc-lite");
    common::toolchains::toolchain("node");
    if !dir.join("node_modules/msgpack-rpc-lite").exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("npm")
            .args([
                "install",
                "--no-save",
                "--no-audit",
                "--no-fund",
                "--prefix",
            ])
            .arg(&dir)
            .arg("msgpack-rpc-lite@1.0.2")
            .status()
            .expect("running npm");
        assert!(status.success(), "npm install msgpack-rpc-lite failed");
    }
    dir
}

const NODE_CLIENT: &str = r#"
const fs = require('fs');
const rpc = require('msgpack-rpc-lite');
const [port, gate] = process.argv.slice(2);
const client = rpc.createClient(Number(port), '127.0.0.1');
const finished = [];
const call = (name, method, ...params) =>
  client.request(method, ...params).then(
    ([result]) => { finished.push(name); return { result }; },
    (error) => { finished.push(name); return { error: String(error) }; });
const others = [
  call('sum', 'sum', 1, 2, 3.5),
  call('echo', 'misbehave', { nested: [1, 'two'] }),
  call('missing', 'nope', 1),
  call('failing', 'misbehave', 'error'),
];
// The held call ends only once the other four have been answered.
Promise.all(others).then(() => fs.writeFileSync(gate, ''));
Promise.all([
  call('held', 'misbehave', 'wait-file:/gate/held'),
  ...others,
]).then((results) => {
  console.log(JSON.stringify({ results, finished }));
  client.close();
});
"#;

#[test]
fn a_third_party_node_client_calls_handlers_concurrently() {
    let gate = Gate::new();
    let host = InProcessHost::start(gated_handlers(&gate));
    let dir = msgpack_rpc_lite();
    let script = dir.join("client.js");
    std::fs::write(&script, NODE_CLIENT).unwrap();
    let out = Command::new("node")
        .arg(&script)
        .arg(host.addr.port().to_string())
        .arg(gate.path("held"))
        .current_dir(&dir)
        .output()
        .expect("running node");
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["results"],
        serde_json::json!([
            { "result": "/gate/held" },
            { "result": { "sum": 6.5, "count": 3 } },
            { "result": [{ "nested": [1, "two"] }] },
            { "error": "no handler is named `nope`" },
            { "error": "misbehave: asked to fail" },
        ])
    );
    // All five were in flight at once: the held one finished last.
    assert_eq!(report["finished"][4], "held", "{report}");
}
