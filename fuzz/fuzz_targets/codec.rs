//! `arrpc-codec`, MessagePack to and from marshal and JSON (and an array
//! of numbers to floats), on arbitrary bytes: what a client sends one way,
//! what a guest hands back the other.
//!
//! The first byte picks the direction. Checked beyond "no panic": what the
//! guest hands back (marshal, JSON) is either refused or read as exactly
//! one MessagePack value; and MessagePack taken to marshal or JSON comes
//! back as the same value, bar what the format itself folds (a float 32
//! widens; in JSON, a float without a fraction is a JavaScript integer).

#![no_main]

use libfuzzer_sys::fuzz_target;
use rmpv::Value;

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    match mode % 3 {
        0 => round_trips(data),
        1 => one_value(arrpc_codec::marshal_to_msgpack(data)),
        _ => {
            if let Ok(text) = std::str::from_utf8(data) {
                one_value(arrpc_codec::json_to_msgpack(text));
            }
        }
    }
});

/// What a guest handed back, when read, is one whole MessagePack value.
fn one_value(read: Result<Vec<u8>, arrpc_codec::Error>) {
    if let Ok(packed) = read {
        let mut rest = &packed[..];
        rmpv::decode::read_value(&mut rest).expect("the host wrote MessagePack");
        assert!(rest.is_empty(), "the host wrote more than one value");
    }
}

fn round_trips(data: &[u8]) {
    let numbers = arrpc_codec::msgpack_to_numbers(data);
    let Ok(value) = rmpv::decode::read_value(&mut &data[..]) else {
        assert!(numbers.is_none(), "floats from bytes that are not MessagePack");
        return;
    };
    if let Some(floats) = numbers {
        same_numbers(data, &value, &floats);
    }
    if let Ok(Some(marshal)) = arrpc_codec::msgpack_to_marshal(data) {
        let back = arrpc_codec::marshal_to_msgpack(&marshal).expect("marshal the host wrote reads back");
        let back = rmpv::decode::read_value(&mut &back[..]).unwrap();
        assert!(same(&back, &widened(&value, false)), "marshal: {value} came back as {back}");
    }
    if let Ok(Some(json)) = arrpc_codec::msgpack_to_json(data) {
        let back = arrpc_codec::json_to_msgpack(&json).expect("JSON the host wrote reads back");
        let back = rmpv::decode::read_value(&mut &back[..]).unwrap();
        assert!(same(&back, &widened(&value, true)), "JSON {json}: {value} came back as {back}");
    }
}

/// Floats the host made of an array of numbers hold exactly its items, and
/// JSON would have carried the same array: the two routes agree.
fn same_numbers(data: &[u8], value: &Value, floats: &[u8]) {
    let Value::Array(items) = value else {
        panic!("floats from {value}, which is not an array");
    };
    assert_eq!(floats.len(), items.len() * 8, "{value}");
    for (item, bytes) in items.iter().zip(floats.chunks_exact(8)) {
        let got = f64::from_le_bytes(bytes.try_into().unwrap());
        let want = match item {
            Value::Integer(n) => n.as_i64().map(|n| n as f64).or(n.as_u64().map(|n| n as f64)).unwrap(),
            Value::F32(x) => f64::from(*x),
            Value::F64(x) => *x,
            other => panic!("a float for {other} in {value}"),
        };
        assert_eq!(got.to_bits(), want.to_bits(), "{item} in {value}");
    }
    assert!(
        matches!(arrpc_codec::msgpack_to_json(data), Ok(Some(_))),
        "floats for {value}, which JSON does not carry"
    );
}

/// `value` as it comes back: floats 32 widened, and for JSON, a float
/// without a fraction (in the safe range) an integer.
fn widened(value: &Value, json: bool) -> Value {
    let float = |x: f64| {
        if json && x.fract() == 0.0 && x.abs() < 9007199254740992.0 {
            Value::from(x as i64)
        } else {
            Value::F64(x)
        }
    };
    match value {
        Value::F32(x) => float(f64::from(*x)),
        Value::F64(x) => float(*x),
        Value::Array(items) => Value::Array(items.iter().map(|v| widened(v, json)).collect()),
        Value::Map(entries) => Value::Map(
            entries
                .iter()
                .map(|(k, v)| (widened(k, json), widened(v, json)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Equal, with NaN equal to NaN and -0.0 told from 0.0.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|((ka, va), (kb, vb))| same(ka, kb) && same(va, vb))
        }
        _ => a == b,
    }
}
