//! Handlers in their sandbox: failures become error replies, limits hold,
//! capabilities stay closed, output reaches the host log, and the host
//! keeps serving through all of it. Hosts run in process, but where a
//! test reads the host's log.

mod common;

use std::time::Duration;

use arrpc_host::config::HandlerConfig;
use common::*;
use rmpv::Value;

fn command(wire: &mut Wire, text: &str) -> Vec<u8> {
    wire.call(&encode(&str_value(text)))
}

#[test]
fn a_trap_becomes_an_error_reply_and_the_connection_goes_on() {
    let host = Host::start_config(&misbehave_config(|h| h));
    let mut wire = host.connect();
    let error = error_text(&command(&mut wire, "trap")).unwrap();
    assert!(
        error.starts_with("arrpc.error.RpcException: handler `misbehave` trapped:"),
        "{error}"
    );
    assert_eq!(decode(&command(&mut wire, "hello")), str_value("hello"));
    // The guest's panic message went to the host log, tagged.
    let log = host.wait_for_log("misbehave: asked to trap");
    let line = log.lines().find(|l| l.contains("asked to trap")).unwrap();
    assert!(
        line.contains("handler=misbehave") && line.contains("stream=\"stderr\""),
        "{line}"
    );
}

#[test]
fn an_error_returned_by_the_handler_reaches_the_client_verbatim() {
    let host = misbehave_host(|h| h);
    let error = error_text(&command(&mut host.connect(), "error")).unwrap();
    assert_eq!(error, "arrpc.error.RpcException: misbehave: asked to fail");
}

#[test]
fn output_that_is_not_exactly_one_messagepack_value_is_refused() {
    let host = misbehave_host(|h| h);
    let mut wire = host.connect();
    for (cmd, why) in [
        ("invalid-output", "not one whole MessagePack value"),
        ("truncated-output", "not one whole MessagePack value"),
        ("two-values", "more than one MessagePack value"),
    ] {
        let error = error_text(&command(&mut wire, cmd)).unwrap();
        assert!(error.contains(why), "{cmd}: {error}");
    }
    assert_eq!(decode(&command(&mut wire, "fine")), str_value("fine"));
}

#[test]
fn an_endless_loop_is_cut_off_at_the_timeout_while_others_are_served() {
    let host = Host::start_config(&serving(vec![
        HandlerConfig {
            timeout: Duration::from_millis(500),
            ..handler_config("misbehave", "misbehave")
        },
        // Spins far longer than the test runs.
        HandlerConfig {
            timeout: Duration::from_secs(600),
            ..handler_config("spinner", "misbehave")
        },
    ]));
    let mut spinning = host.connect();
    spinning.write(&arrpc_wire::rpc::request(
        1,
        "spinner",
        &encode(&str_value("loop")),
    ));
    host.wait_for_log("misbehave: spinning");
    // While one guest spins, other connections are answered.
    let mut other = host.connect();
    for i in 0..20 {
        assert_eq!(
            decode(&command(&mut other, &format!("m{i}"))),
            str_value(&format!("m{i}"))
        );
    }
    spinning.stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let still = std::io::Read::read(&mut spinning.stream, &mut byte);
    assert!(
        still.is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "the spinning call ended"
    );
    // A loop is cut off at its timeout.
    let mut looping = host.connect();
    looping.write(&encode(&str_value("loop")));
    let error = error_text(&looping.read().unwrap()).unwrap();
    assert!(error.contains("exceeded its timeout of 500 ms"), "{error}");
    // A handler blocked in a host call (sleep) is cut off too.
    let error = error_text(&command(&mut looping, "sleep:3000")).unwrap();
    assert!(error.contains("timeout"), "{error}");
}

#[test]
fn unbounded_allocation_stops_at_the_memory_limit() {
    let host = misbehave_host(|h| HandlerConfig {
        max_memory_mib: 16,
        ..h
    });
    let mut wire = host.connect();
    let error = error_text(&command(&mut wire, "alloc")).unwrap();
    assert!(
        error.contains("exceeded its memory limit of 16 MiB"),
        "{error}"
    );
    assert_eq!(decode(&command(&mut wire, "ok")), str_value("ok"));
}

#[test]
fn no_filesystem_and_no_environment_by_default() {
    let host = misbehave_host(|h| h);
    let mut wire = host.connect();
    let error = error_text(&command(&mut wire, "read-file")).unwrap();
    assert!(error.contains("read-file failed"), "{error}");
    assert_eq!(decode(&command(&mut wire, "env")), Value::Map(vec![]));
}

#[test]
fn each_message_gets_a_fresh_instance_and_its_context() {
    let host = misbehave_host(|h| HandlerConfig {
        timeout: Duration::from_secs(2),
        ..h
    });
    let mut wire = host.connect();
    let first = decode(&command(&mut wire, "context"));
    let second = decode(&command(&mut wire, "context"));
    let get = |v: &Value, k: &str| {
        v.as_map()
            .unwrap()
            .iter()
            .find(|(key, _)| key.as_str() == Some(k))
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get(&first, "handler"), str_value("misbehave"));
    assert_eq!(get(&first, "timeout_ms"), Value::from(2000));
    assert_eq!(get(&first, "traceparent"), Value::Nil);
    let local = wire.stream.local_addr().unwrap().to_string();
    assert_eq!(get(&first, "peer"), str_value(&local));
    assert_ne!(get(&first, "request_id"), get(&second, "request_id"));
}

#[test]
fn guest_output_is_logged_with_handler_and_request_and_capped() {
    // 200k lines take more than the default 5 s on a loaded machine.
    let host = Host::start_config(&misbehave_config(|h| HandlerConfig {
        timeout: Duration::from_secs(600),
        ..h
    }));
    let mut wire = host.connect();
    assert_eq!(decode(&command(&mut wire, "print:3")), Value::from(3));
    let log = host.wait_for_log("stdout line 3");
    let line = log.lines().find(|l| l.contains("stdout line 2")).unwrap();
    assert!(
        line.contains("handler=misbehave") && line.contains("request_id="),
        "{line}"
    );
    // 100k lines is far over the per-message budget: the call still succeeds,
    // the log says the rest was dropped, and it holds far fewer lines.
    assert_eq!(
        decode(&command(&mut wire, "print:100000")),
        Value::from(100000)
    );
    let log = host.wait_for_log("output over");
    assert!(!log.contains("stdout line 99999"));
    assert!(log.lines().count() < 20_000);
}

/// Past `max_output_bytes` a message's output on each stream is cut at
/// the cap to the byte, one notice naming the setting follows, and the
/// message is still answered.
#[test]
fn guest_output_is_cut_at_max_output_bytes_with_a_notice() {
    let host = Host::start_config(&misbehave_config(|h| HandlerConfig {
        max_output_bytes: 100,
        ..h
    }));
    let mut wire = host.connect();
    assert_eq!(decode(&command(&mut wire, "print:10")), Value::from(10));
    let notice = "guest output over 100 bytes (max_output_bytes); the rest of this message's output is dropped";
    let log = host.wait_for_log_count(notice, 2);
    for stream in ["stdout", "stderr"] {
        let tag = format!("stream=\"{stream}\"");
        let logged: Vec<&str> = log
            .lines()
            .filter(|line| line.contains(&tag))
            .map(|line| match line.split_once(" guest: ") {
                Some((_, message)) => message.split(" handler=").next().unwrap(),
                None if line.contains(notice) => notice,
                None => line,
            })
            .collect();
        // Lines of 14 bytes: seven whole ones and the first 2 bytes of the
        // eighth make the 100, then the notice.
        let mut want: Vec<String> = (1..=7).map(|i| format!("{stream} line {i}")).collect();
        want.extend(["st".into(), notice.into()]);
        assert_eq!(logged, want, "{log}");
    }
}

#[test]
fn busy_handler_refuses_beyond_max_instances() {
    let gate = Gate::new();
    let host = Host::start_config(&misbehave_config(|h| HandlerConfig {
        max_instances: 1,
        dirs: vec![gate.grant()],
        ..h
    }));
    let mut slow = host.connect();
    slow.write(&encode(&str_value(&Gate::wait("slow"))));
    host.wait_for_log("misbehave: waiting for /gate/slow");
    let error = error_text(&command(&mut host.connect(), "x")).unwrap();
    assert!(error.contains("busy"), "{error}");
    gate.open("slow");
    assert_eq!(decode(&slow.read().unwrap()), str_value("/gate/slow"));
    assert_eq!(decode(&command(&mut host.connect(), "x")), str_value("x"));
}

#[test]
fn the_sum_handler_does_real_work_on_the_decoded_message() {
    let host = InProcessHost::start(serving(vec![handler_config("sum", "sum")]));
    let mut wire = host.connect();
    let reply = wire.call_value(&Value::Array(vec![
        Value::from(1),
        Value::from(2),
        Value::from(39),
    ]));
    assert_eq!(
        reply,
        Value::Map(vec![
            (str_value("sum"), Value::from(42)),
            (str_value("count"), Value::from(3))
        ])
    );
    let error = error_text(&wire.call(&encode(&str_value("nope")))).unwrap();
    assert!(error.contains("expected an array of numbers"), "{error}");
}

/// A reused instance that has grown past half its memory cap is replaced
/// after its message, so a heap that grows message after message never
/// meets the cap; one that stays below is kept.
#[test]
fn a_reused_instance_grown_past_half_its_memory_cap_is_replaced() {
    let host = misbehave_host(|h| HandlerConfig {
        reuse: 100,
        max_memory_mib: 32,
        ..h
    });
    let mut wire = host.connect();
    assert_eq!(decode(&command(&mut wire, "count")), Value::from(1));
    assert_eq!(decode(&command(&mut wire, "grow:4")), Value::from(4));
    assert_eq!(decode(&command(&mut wire, "count")), Value::from(2));
    assert_eq!(decode(&command(&mut wire, "grow:14")), Value::from(14));
    assert_eq!(decode(&command(&mut wire, "count")), Value::from(1));
}

#[test]
fn instances_are_fresh_per_message_unless_reuse_is_set() {
    let fresh = misbehave_host(|h| h);
    let mut wire = fresh.connect();
    for _ in 0..3 {
        assert_eq!(decode(&command(&mut wire, "count")), Value::from(1));
    }

    let reusing = misbehave_host(|h| HandlerConfig { reuse: 3, ..h });
    let mut wire = reusing.connect();
    let seen: Vec<Value> = (0..6)
        .map(|_| decode(&command(&mut wire, "count")))
        .collect();
    assert_eq!(seen, [1, 2, 3, 1, 2, 3].map(Value::from));
    // A trap retires the instance: the next message starts on a new one.
    assert_eq!(decode(&command(&mut wire, "count")), Value::from(1));
    assert!(error_text(&command(&mut wire, "trap")).is_some());
    assert_eq!(decode(&command(&mut wire, "count")), Value::from(1));
}
