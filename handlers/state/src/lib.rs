//! `state`: runs the key-value store operation a message asks for and
//! answers what it gave, so the host's tests and benchmarks can drive
//! every `wasi:keyvalue` call from inside the sandbox. It is also the
//! smallest example of a Rust handler that keeps state, through
//! `arrpc_handler::store`.
//!
//! The message is a map with an `op` and the `store` to open:
//! - `{"op": "increment", "key": k, "by"?: n}` answers the new count (`by`
//!   defaults to 1);
//! - `{"op": "cas-add", "key": k, "by"?: n}` adds by compare-and-swap,
//!   retrying while others win, and answers `[count, retries]`;
//! - `{"op": "get", "key": k}` answers the value (bin) or nil;
//! - `{"op": "set", "key": k, "value": bin}`, `{"op": "delete", "key": k}`
//!   answer nil; `{"op": "exists", "key": k}` a bool;
//! - `{"op": "list", "cursor"?: text}` answers `{"keys": [..], "cursor": text or nil}`;
//! - `{"op": "get-many", "keys": [..]}` answers a value or nil per key;
//!   `{"op": "set-many", "pairs": {k: bin}}` and
//!   `{"op": "delete-many", "keys": [..]}` answer nil.
//!
//! A failure is the error reply `<op>: <error>`, the error being
//! `access-denied`, `no-such-store` or `other: <the host's words>`.

use arrpc_handler::Context;
use arrpc_handler::store::{Error, Store};
use rmpv::Value;

fn state(_ctx: &Context, payload: Vec<u8>) -> Result<Vec<u8>, String> {
    let message = rmpv::decode::read_value(&mut payload.as_slice())
        .map_err(|e| format!("state: not MessagePack: {e}"))?;
    let field = |name: &str| {
        message
            .as_map()
            .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(name)))
            .map(|(_, v)| v)
    };
    let text = |name: &str| field(name).and_then(Value::as_str).map(str::to_owned);
    let op = text("op").ok_or("state: expected {\"op\": name, \"store\": name, ...}")?;
    let store = text("store").ok_or_else(|| format!("{op}: expected a \"store\""))?;
    let key = || text("key").ok_or_else(|| format!("{op}: expected a \"key\""));
    let failed = |e: Error| format!("{op}: {}", e.describe());
    let store = Store::open(&store).map_err(failed)?;
    let by = field("by").and_then(Value::as_i64).unwrap_or(1);
    let strings = |name: &str| -> Result<Vec<String>, String> {
        field(name)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|k| k.as_str().map(str::to_owned)).collect())
            .ok_or_else(|| format!("{op}: expected \"{name}\": [text, ...]"))
    };
    let reply = match op.as_str() {
        "increment" => Value::from(store.increment(&key()?, by).map_err(failed)?),
        "cas-add" => {
            let (count, retries) = store
                .update(&key()?, |now| {
                    let now: i64 = now
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(0);
                    (now + by).to_string().into_bytes()
                })
                .map_err(failed)?;
            let count: i64 = String::from_utf8_lossy(&count).parse().unwrap_or(0);
            Value::Array(vec![count.into(), retries.into()])
        }
        "get" => store
            .get(&key()?)
            .map_err(failed)?
            .map_or(Value::Nil, Value::Binary),
        "set" => {
            let value = field("value")
                .and_then(Value::as_slice)
                .ok_or_else(|| format!("{op}: expected \"value\": bin"))?;
            store.set(&key()?, value).map_err(failed)?;
            Value::Nil
        }
        "delete" => {
            store.delete(&key()?).map_err(failed)?;
            Value::Nil
        }
        "exists" => Value::Boolean(store.exists(&key()?).map_err(failed)?),
        "list" => {
            let (keys, cursor) = store
                .keys_page(text("cursor").as_deref())
                .map_err(failed)?;
            Value::Map(vec![
                ("keys".into(), keys.into_iter().map(Value::from).collect::<Vec<_>>().into()),
                ("cursor".into(), cursor.map_or(Value::Nil, Value::from)),
            ])
        }
        "get-many" => Value::Array(
            store
                .get_many(&strings("keys")?)
                .map_err(failed)?
                .into_iter()
                .map(|v| v.map_or(Value::Nil, Value::Binary))
                .collect(),
        ),
        "set-many" => {
            let pairs = field("pairs")
                .and_then(Value::as_map)
                .ok_or_else(|| format!("{op}: expected \"pairs\": {{text: bin}}"))?
                .iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_slice()?.to_vec())))
                .collect::<Vec<_>>();
            store.set_many(&pairs).map_err(failed)?;
            Value::Nil
        }
        "delete-many" => {
            store.delete_many(&strings("keys")?).map_err(failed)?;
            Value::Nil
        }
        other => return Err(format!("state: no operation {other:?}")),
    };
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &reply).map_err(|e| format!("{op}: {e}"))?;
    Ok(out)
}

arrpc_handler::raw_handler!(state);
