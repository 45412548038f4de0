//! The messages `arrpc-bench --message` sends the Python and JavaScript
//! examples, in one place so that the load bench and the wire and codec
//! crates' benches measure the same bytes.

use rmpv::Value;

/// 1,000 integers, each a uint 16 (3,003 bytes).
pub fn ints() -> Value {
    Value::Array((0..1000).map(|i| Value::from(1000 + i * 61)).collect())
}

/// A record: a map of 20 keys holding strings, integers, floats and a list
/// of 10 maps of 4 keys (1,008 bytes). Every float has a fraction, so
/// JavaScript gives it back as a float.
pub fn record() -> Value {
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
    Value::Map(fields)
}

/// `value` as MessagePack bytes.
pub fn pack(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, value).expect("writes to a Vec");
    out
}
