//! The wire protocol as a client sees it over a real socket: framing,
//! pipelining, odd-sized and falsy messages, malformed and over-size input.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use arrpc_host::config::{HandlerConfig, ServerConfig};
use common::*;
use rmpv::Value;

#[test]
fn falsy_values_are_answered() {
    let host = echo_host(ServerConfig::default());
    let mut wire = host.connect();
    // 0, "", {}, [], nil, false: the Python arrpc package drops these silently.
    for message in [[0x00], [0xa0], [0x80], [0x90], [0xc0], [0xc2]] {
        assert_eq!(wire.call(&message), message);
    }
}

#[test]
fn message_fed_one_byte_at_a_time() {
    let host = echo_host(ServerConfig::default());
    let mut wire = host.connect();
    let message = encode(&Value::Map(vec![(
        str_value("words"),
        Value::Array((0..50).map(|i| str_value(&format!("w{i}"))).collect()),
    )]));
    for byte in &message {
        wire.write(&[*byte]);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(wire.read().unwrap(), message);
}

#[test]
fn message_split_across_writes_that_arrive_apart() {
    let host = echo_host(ServerConfig::default());
    let mut wire = host.connect();
    let message = encode(&Value::Binary(vec![7; 10_000]));
    let (head, tail) = message.split_at(3);
    wire.write(head);
    std::thread::sleep(Duration::from_millis(300));
    wire.write(tail);
    assert_eq!(wire.read().unwrap(), message);
}

#[test]
fn two_hundred_messages_in_one_write_get_two_hundred_replies_in_order() {
    let host = echo_host(ServerConfig::default());
    let mut wire = host.connect();
    let mut batch = Vec::new();
    for i in 0..200u64 {
        batch.extend(encode(&Value::Array(vec![Value::from(i), str_value("x")])));
    }
    wire.write(&batch);
    for i in 0..200u64 {
        assert_eq!(
            decode(&wire.read().unwrap()),
            Value::Array(vec![Value::from(i), str_value("x")])
        );
    }
}

#[test]
fn messages_of_exactly_4096_bytes_and_of_1_mib_round_trip() {
    let host = echo_host(ServerConfig::default());
    let mut wire = host.connect();
    // bin16 header (3 bytes) + 4093 bytes = 4096, the Python arrpc package's
    // read size.
    let exact = encode(&Value::Binary(vec![1; 4093]));
    assert_eq!(exact.len(), 4096);
    assert_eq!(wire.call(&exact), exact);
    let big = encode(&Value::Binary((0..1 << 20).map(|i| i as u8).collect()));
    assert_eq!(wire.call(&big), big);
}

#[test]
fn pipelined_replies_keep_request_order_when_handlers_finish_out_of_order() {
    let gate = Gate::new();
    let host = misbehave_host(|h| HandlerConfig {
        dirs: vec![gate.grant()],
        ..h
    });
    let mut wire = host.connect();
    let names = ["a", "b", "c", "d", "e"];
    let mut batch = Vec::new();
    for name in names {
        batch.extend(encode(&str_value(&Gate::wait(name))));
    }
    wire.write(&batch);
    // All five run side by side ...
    host.wait_for_in_flight(names.len());
    // ... and finish last to first.
    for (finished, name) in names.iter().rev().enumerate() {
        gate.open(name);
        host.wait_for_in_flight(names.len() - finished - 1);
    }
    for name in names {
        assert_eq!(
            decode(&wire.read().unwrap()),
            str_value(&format!("/gate/{name}"))
        );
    }
}

#[test]
fn malformed_input_gets_an_error_and_a_close_and_other_connections_carry_on() {
    let host = echo_host(ServerConfig::default());
    let mut good = host.connect();
    assert_eq!(good.call(&[0x01]), [0x01]);

    let mut bad = host.connect();
    // A good message, then 0xc1 (never valid), then what would be a good one.
    bad.write(&[0x02, 0xc1, 0x03]);
    assert_eq!(bad.read().unwrap(), [0x02]);
    let error = error_text(&bad.read().unwrap()).expect("an error reply");
    assert!(
        error.starts_with("arrpc.error.RpcException: malformed MessagePack"),
        "{error}"
    );
    assert_eq!(bad.read(), None, "connection is closed after the error");

    // Invalid UTF-8 in a string is malformed too.
    let mut utf8 = host.connect();
    utf8.write(&[0xa2, 0xff, 0xfe]);
    assert!(error_text(&utf8.read().unwrap()).unwrap().contains("UTF-8"));

    assert_eq!(good.call(&[0x04]), [0x04]);
}

#[test]
fn over_size_message_is_refused_before_it_is_buffered() {
    let host = echo_host(ServerConfig {
        max_message_bytes: 1000,
        ..ServerConfig::default()
    });
    let mut wire = host.connect();
    let fits = encode(&Value::Binary(vec![0; 990]));
    assert_eq!(wire.call(&fits), fits);
    // Only the header of a 1 MiB binary is sent: the declared size is enough.
    wire.write(&[0xc6, 0x00, 0x10, 0x00, 0x00]);
    let error = error_text(&wire.read().unwrap()).unwrap();
    assert!(error.contains("larger than the 1000-byte limit"), "{error}");
    assert_eq!(wire.read(), None);
    assert_eq!(host.connect().call(&[0x05]), [0x05]);
}

/// Bytes a client sends after the host has decided to close are read and
/// dropped until the client closes too. Left unread, they would make the
/// host's close a reset, which throws away the replies still queued for a
/// client that reads slowly: here a 256 KiB echo, through a client receive
/// buffer of a few KiB, and the error reply after it.
#[test]
fn input_after_the_last_reply_is_drained_not_reset() {
    let host = echo_host(ServerConfig::default());
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut stream = runtime
        .block_on(socket.connect(host.addr))
        .unwrap()
        .into_std()
        .unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let big = encode(&Value::Binary(vec![7; 256 << 10]));
    // The echo (which fits in the host's send buffer, so the host does not
    // wait for this client to read), then a byte that is never
    // MessagePack: the host answers both and stops reading.
    stream.write_all(&[&big[..], &[0xc1]].concat()).unwrap();
    host.wait_for_metric("arrpc_messages_total", &[("outcome", "malformed")], 1.0);
    stream.write_all(&[0; 64 << 10]).unwrap();

    let mut received = Vec::new();
    stream
        .read_to_end(&mut received)
        .expect("the replies and a clean close, not a reset");
    let rest = received
        .strip_prefix(&big[..])
        .expect("the echo whole first");
    let error = error_text(rest).expect("then the error reply");
    assert!(
        error.starts_with("arrpc.error.RpcException: malformed MessagePack"),
        "{error}"
    );
}

#[test]
fn idle_connections_are_closed() {
    let host = echo_host(ServerConfig {
        idle_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    });
    let mut wire = host.connect();
    assert_eq!(wire.call(&[0x01]), [0x01]);
    let started = Instant::now();
    assert_eq!(wire.read(), None);
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[test]
fn connections_beyond_the_cap_wait_instead_of_failing() {
    let host = echo_host(ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    });
    let accepted = || host.metric("arrpc_connections_total", &[]);
    let mut first = host.connect();
    let mut second = host.connect();
    assert_eq!(first.call(&[0x01]), [0x01]);
    assert_eq!(second.call(&[0x02]), [0x02]);
    let mut third = host.connect();
    third.write(&[0x03]);
    // The host is answering on the open connections meanwhile, but has not
    // taken the third.
    assert_eq!(second.call(&[0x04]), [0x04]);
    assert_eq!(accepted(), 2.0);
    // It is taken once the first has closed.
    drop(first);
    assert_eq!(third.read().unwrap(), [0x03]);
    assert_eq!(accepted(), 3.0);
}

#[test]
fn at_max_pipelined_the_host_stops_reading_until_a_reply_is_written() {
    let gate = Gate::new();
    let mut config = misbehave_config(|h| HandlerConfig {
        dirs: vec![gate.grant()],
        ..h
    });
    config.server.max_pipelined = 2;
    let host = InProcessHost::start(config);
    let mut wire = host.connect();
    // Two held calls, then one that reads the first one's gate: it finds
    // the gate open only if it was read once the first call had its reply.
    let mut batch = Vec::new();
    for command in [Gate::wait("a"), Gate::wait("b"), "read-file:/gate/a".into()] {
        batch.extend(encode(&str_value(&command)));
    }
    wire.write(&batch);
    host.wait_for_in_flight(2);
    gate.open("a");
    assert_eq!(decode(&wire.read().unwrap()), str_value("/gate/a"));
    gate.open("b");
    assert_eq!(decode(&wire.read().unwrap()), str_value("/gate/b"));
    assert_eq!(
        decode(&wire.read().unwrap()),
        str_value(""),
        "the third message ran while two were in flight"
    );
}
