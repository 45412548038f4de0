//! `arrpc-codec` checked against the libraries whose behaviour it promises:
//! msgpack-python's C extension and CPython's marshal (in the Python arrpc
//! package's virtualenv), and `@msgpack/msgpack` under Node (the version
//! the JavaScript example locks). A corpus of MessagePack values, every
//! kind and edge, goes through the host's transcoders; the real libraries
//! then say whether the result is exactly what they make of the same
//! value, in both directions.

mod common;

use std::path::Path;
use std::process::Command;

use common::corpus::{Rng, check, corpus, scalar};
use common::toolchains::toolchain;
use common::{hex, unhex};
use rmpv::Value;

/// Arrays of numbers only, every width and edge among them, as a vector
/// or a batch of ids would come: the route that skips JSON.
fn number_arrays() -> Vec<Vec<u8>> {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    (0..400)
        .map(|_| {
            let items = (0..rng.below(40))
                .map(|_| {
                    loop {
                        let item = scalar(&mut rng);
                        if matches!(item, Value::Integer(_) | Value::F32(_) | Value::F64(_)) {
                            break item;
                        }
                    }
                })
                .collect();
            let mut out = Vec::new();
            rmpv::encode::write_value(&mut out, &Value::Array(items)).unwrap();
            out
        })
        .collect()
}

/// Whether the value is an array of numbers JSON carries (integers within
/// 2^53 - 1, finite floats): the values `msgpack_to_numbers` must carry,
/// and only those.
fn exact_numbers(value: &Value) -> bool {
    let Value::Array(items) = value else {
        return false;
    };
    items.iter().all(|item| {
        matches!(item, Value::Integer(_) | Value::F32(_) | Value::F64(_)) && !beyond_json(item)
    })
}

/// Whether the value holds what marshal cannot carry as msgpack-python
/// decodes it: an ext, an array or map as a map key, a str not UTF-8.
fn beyond_marshal(value: &Value) -> bool {
    match value {
        Value::Ext(..) => true,
        Value::String(s) => !s.is_str(),
        Value::Array(items) => items.iter().any(beyond_marshal),
        Value::Map(entries) => entries.iter().any(|(k, v)| {
            matches!(k, Value::Array(_) | Value::Map(_)) || beyond_marshal(k) || beyond_marshal(v)
        }),
        _ => false,
    }
}

/// Whether the value holds what JSON cannot carry as `@msgpack/msgpack`
/// decodes it: bin, an ext, an integer past 2^53 - 1, NaN or an infinity, a
/// map key not a str or `__proto__`, a str not UTF-8.
fn beyond_json(value: &Value) -> bool {
    const SAFE: i128 = (1 << 53) - 1;
    match value {
        Value::Binary(_) | Value::Ext(..) => true,
        Value::Integer(n) => {
            let n = n.as_i64().map(i128::from).or(n.as_u64().map(i128::from));
            n.expect("MessagePack integers fit i64 or u64").abs() > SAFE
        }
        Value::F32(x) => !x.is_finite(),
        Value::F64(x) => !x.is_finite(),
        Value::String(s) => !s.is_str(),
        Value::Array(items) => items.iter().any(beyond_json),
        Value::Map(entries) => entries
            .iter()
            .any(|(k, v)| !matches!(k.as_str(), Some(key) if key != "__proto__") || beyond_json(v)),
        _ => false,
    }
}

/// Every value marshal can carry loads in CPython as exactly what
/// msgpack-python's `unpackb(raw=False, strict_map_key=False)` gives, and
/// the rest (ext, an array as a key, bad UTF-8) is left to msgpack; back,
/// what `marshal.dumps(obj, 2)` writes becomes exactly `packb(obj)`'s bytes,
/// or the error `packb` raises.
#[test]
fn marshal_matches_msgpack_python_both_ways() {
    let lines: Vec<String> = corpus()
        .iter()
        .map(|packed| {
            let marshal = arrpc_codec::msgpack_to_marshal(packed).unwrap();
            let value = rmpv::decode::read_value(&mut &packed[..]).unwrap();
            assert_eq!(marshal.is_none(), beyond_marshal(&value), "{value}");
            format!(
                "{} {}",
                hex(packed),
                marshal.map_or("-".to_owned(), |m| hex(&m))
            )
        })
        .collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/codec/python_check.py");
    let out = check(Command::new(common::seed::python()).arg(script), &lines);
    let dumps: Vec<&String> = out.iter().filter(|l| l.starts_with("dump ")).collect();
    assert!(dumps.len() > 1000, "only {} values came back", dumps.len());
    let mut refused = 0;
    for line in dumps {
        let mut words = line.splitn(3, ' ').skip(1);
        let (dumped, packed) = (unhex(words.next().unwrap()), words.next().unwrap());
        let got = arrpc_codec::marshal_to_msgpack(&dumped);
        match packed.strip_prefix('!') {
            None => assert_eq!(got.as_deref().map(hex), Ok(packed.to_owned()), "{line}"),
            Some(error) => {
                refused += 1;
                let got = got.expect_err(line).to_string();
                if error.starts_with("can not serialize") || error.contains("out of range") {
                    assert_eq!(got, error, "{line}");
                }
            }
        }
    }
    // A set, a frozenset, a complex, two ints out of range, a surrogate.
    assert_eq!(refused, 6);
}

/// Every value JSON can carry parses in JavaScript as exactly what
/// `@msgpack/msgpack`'s `decode` gives (`-0`, NaN and key order included),
/// and the rest is left to it; so does every array of numbers as the
/// `Array` the SDK makes of its floats. Back, what `JSON.stringify` writes
/// becomes exactly `encode`'s bytes.
#[test]
fn json_matches_msgpack_javascript_both_ways() {
    toolchain("js");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("handlers/js-example");
    if !example.join("node_modules/@msgpack/msgpack").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&example)
            .status()
            .unwrap();
        assert!(status.success(), "npm ci in handlers/js-example failed");
    }
    let mut carried = 0;
    let lines: Vec<String> = corpus()
        .into_iter()
        .chain(number_arrays())
        .map(|packed| {
            let json = arrpc_codec::msgpack_to_json(&packed).unwrap();
            let numbers = arrpc_codec::msgpack_to_numbers(&packed);
            let value = rmpv::decode::read_value(&mut &packed[..]).unwrap();
            assert_eq!(json.is_none(), beyond_json(&value), "{value}");
            assert_eq!(numbers.is_some(), exact_numbers(&value), "{value}");
            carried += usize::from(numbers.is_some());
            format!(
                "{} {} {}",
                hex(&packed),
                json.map_or("-".to_owned(), |j| hex(j.as_bytes())),
                numbers.map_or("-".to_owned(), |n| hex(&n))
            )
        })
        .collect();
    assert!(carried > 200, "only {carried} arrays of numbers");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/codec/node_check.mjs");
    let out = check(Command::new("node").arg(script).arg(&example), &lines);
    let encoded: Vec<&String> = out.iter().filter(|l| l.starts_with("json ")).collect();
    assert!(
        encoded.len() > 500,
        "only {} values came back",
        encoded.len()
    );
    for line in encoded {
        let mut words = line.split(' ').skip(1);
        let json = String::from_utf8(unhex(words.next().unwrap())).unwrap();
        let packed = words.next().unwrap();
        assert_eq!(
            arrpc_codec::json_to_msgpack(&json).map(|p| hex(&p)),
            Ok(packed.to_owned()),
            "{json}"
        );
    }
}
