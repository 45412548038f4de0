//! Nanoseconds per call of each transcoder on the messages `arrpc-bench`
//! sends the Python and JavaScript examples: 1,000 integers (3,003 bytes
//! of uint 16s) and a nested record (a map of 20 keys, 1,008 bytes). The
//! reverse directions read what the forward ones wrote. Prints one JSON
//! line per case.
//!
//! Run: `cargo bench -p arrpc-codec --bench transcode`. Each figure is the
//! best of several rounds, so a busy neighbour core inflates it less.

use std::hint::black_box;
use std::time::{Duration, Instant};

use rmpv::Value;

fn ints() -> Vec<u8> {
    pack(&Value::Array(
        (0..1000).map(|i| Value::from(1000 + i * 61)).collect(),
    ))
}

fn record() -> Vec<u8> {
    let mut fields: Vec<(Value, Value)> = vec![
        ("id".into(), 48_213.into()),
        ("customer".into(), "Ada Lovelace".into()),
        ("email".into(), "ada@example.com".into()),
        ("total".into(), 1234.56.into()),
        ("tax".into(), 98.76.into()),
        ("currency".into(), "EUR".into()),
    ];
    fields.extend((0..13).map(|i| {
        (
            format!("attribute_{i}").into(),
            format!("value number {i}").into(),
        )
    }));
    let items = (0..10)
        .map(|i| {
            Value::Map(vec![
                ("sku".into(), format!("SKU-{:05}", i * 37).into()),
                ("quantity".into(), (i + 1).into()),
                ("price".into(), (9.99 + f64::from(i) * 1.25).into()),
                ("note".into(), "gift wrap".into()),
            ])
        })
        .collect();
    fields.push(("items".into(), Value::Array(items)));
    pack(&Value::Map(fields))
}

fn pack(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, value).unwrap();
    out
}

/// Best nanoseconds per call of `f` over rounds of about 50 ms.
fn ns_per_call<T>(mut f: impl FnMut() -> T) -> f64 {
    let mut calls = 1u64;
    loop {
        let start = Instant::now();
        for _ in 0..calls {
            black_box(f());
        }
        if start.elapsed() > Duration::from_millis(50) {
            break;
        }
        calls *= 2;
    }
    (0..10)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..calls {
                black_box(f());
            }
            start.elapsed().as_nanos() as f64 / calls as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn report(function: &str, message: &str, bytes: usize, ns: f64) {
    println!(
        r#"{{"function":"{function}","message":"{message}","input_bytes":{bytes},"ns_per_call":{ns:.0}}}"#
    );
}

fn main() {
    for (message, packed) in [("ints", ints()), ("record", record())] {
        let packed = &packed[..];
        let marshal = arrpc_codec::msgpack_to_marshal(packed).unwrap().unwrap();
        let json = arrpc_codec::msgpack_to_json(packed).unwrap().unwrap();
        let ns = ns_per_call(|| arrpc_codec::msgpack_to_marshal(black_box(packed)));
        report("msgpack_to_marshal", message, packed.len(), ns);
        let ns = ns_per_call(|| arrpc_codec::msgpack_to_json(black_box(packed)));
        report("msgpack_to_json", message, packed.len(), ns);
        let ns = ns_per_call(|| arrpc_codec::marshal_to_msgpack(black_box(&marshal)));
        report("marshal_to_msgpack", message, marshal.len(), ns);
        let ns = ns_per_call(|| arrpc_codec::json_to_msgpack(black_box(&json)));
        report("json_to_msgpack", message, json.len(), ns);
    }
}
