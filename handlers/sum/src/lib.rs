//! `sum`: adds up numbers, decoding and encoding MessagePack inside the guest.
//!
//! It stands for a handler that does real work on the message, so the host's
//! benchmarks and tests cover decoding, computing and encoding in the sandbox,
//! including errors the handler itself reports.
//!
//! Input: an array of numbers, `[1, 2.5, -3]`, or a map `{"numbers": [...]}`.
//! Output: `{"sum": <n>, "count": <n>}`, where `sum` is an integer when every
//! input is one and a float otherwise.

use rmpv::Value;
use serde::Serialize;

use arrpc_handler::Context;

/// What the caller is told to send, repeated in every shape error.
const EXPECTED: &str = r#"an array of numbers or {"numbers": [...]}"#;

/// Decodes any MessagePack value, so shape errors can say what arrived.
fn handle(_ctx: &Context, input: Value) -> Result<Reply, String> {
    sum(numbers(&input)?)
}

arrpc_handler::handler!(handle);

/// The reply, encoded as a map with these field names.
#[derive(Serialize)]
struct Reply {
    sum: Total,
    count: usize,
}

/// An integer total keeps its exact value; any float makes the total a float.
/// Integers are kept in the signed or unsigned 64-bit range MessagePack allows.
#[derive(Serialize)]
#[serde(untagged)]
enum Total {
    Signed(i64),
    Unsigned(u64),
    Float(f64),
}

/// Finds the list of numbers in either accepted shape.
fn numbers(input: &Value) -> Result<&[Value], String> {
    match input {
        Value::Array(items) => Ok(items),
        Value::Map(entries) => {
            let mut found = None;
            for (key, value) in entries {
                match key.as_str() {
                    Some("numbers") => found = Some(value),
                    _ => {
                        return Err(format!(
                            "sum: expected {EXPECTED}, got a map with the key {key}"
                        ));
                    }
                }
            }
            match found {
                Some(Value::Array(items)) => Ok(items),
                Some(other) => Err(format!(
                    "sum: expected {EXPECTED}, got \"numbers\" holding {}",
                    kind(other)
                )),
                None => Err(format!(
                    "sum: expected {EXPECTED}, got a map without \"numbers\""
                )),
            }
        }
        other => Err(format!("sum: expected {EXPECTED}, got {}", kind(other))),
    }
}

/// Adds the numbers exactly while all are integers, and as `f64` otherwise.
fn sum(items: &[Value]) -> Result<Reply, String> {
    // i128 holds any sum of fewer than 2^64 values in the i64 or u64 range,
    // so only the final total can fall outside what MessagePack can carry.
    let mut exact: i128 = 0;
    let mut float: f64 = 0.0;
    let mut any_float = false;
    for (index, item) in items.iter().enumerate() {
        match item {
            Value::Integer(n) => {
                let n = n
                    .as_i64()
                    .map(i128::from)
                    .or_else(|| n.as_u64().map(i128::from))
                    .ok_or("sum: integer overflow")?;
                exact += n;
                float += n as f64;
            }
            Value::F32(x) => {
                any_float = true;
                float += f64::from(*x);
            }
            Value::F64(x) => {
                any_float = true;
                float += x;
            }
            other => {
                return Err(format!(
                    "sum: expected {EXPECTED}, got {} at index {index}",
                    kind(other)
                ));
            }
        }
    }
    let total = if any_float {
        Total::Float(float)
    } else if let Ok(n) = i64::try_from(exact) {
        Total::Signed(n)
    } else if let Ok(n) = u64::try_from(exact) {
        Total::Unsigned(n)
    } else {
        return Err("sum: integer overflow".into());
    };
    Ok(Reply {
        sum: total,
        count: items.len(),
    })
}

/// Names a value's MessagePack type for error messages, with its article.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Nil => "nil",
        Value::Boolean(_) => "a boolean",
        Value::Integer(_) => "an integer",
        Value::F32(_) | Value::F64(_) => "a float",
        Value::String(_) => "a string",
        Value::Binary(_) => "binary data",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        Value::Ext(..) => "an extension value",
    }
}
