//! MessagePack transcoded to the formats that guest language runtimes
//! decode in C, and back: CPython's `marshal` (componentize-py), and JSON
//! (QuickJS's `JSON.parse`) or, for an array of numbers, 64-bit floats (a
//! `Float64Array`).
//!
//! A Python or JavaScript handler that decoded MessagePack itself would do
//! it in interpreted code, tens of times slower than msgpack-python's C
//! extension. The host does it here, natively, and the guest's SDK then
//! calls `marshal.loads` or `JSON.parse`.
//!
//! Each direction keeps the types exactly as the language's usual
//! MessagePack library would (msgpack-python, `@msgpack/msgpack`), or says
//! it cannot: [`msgpack_to_marshal`] and [`msgpack_to_json`] answer `None`
//! for a value the other format cannot carry exactly (an ext, say), and
//! the SDK decodes that one with the MessagePack library itself. The
//! reverse directions read what a guest wrote, so they treat it as
//! hostile: nesting is capped at [`MAX_DEPTH`], work and output are linear
//! in the input, and anything else is an [`Error`] naming what is wrong.

mod cursor;
mod json;
mod marshal;
mod msgpack;
mod numbers;
mod out;

pub use json::{json_to_msgpack, msgpack_to_json};
pub use marshal::{marshal_to_msgpack, msgpack_to_marshal};
pub use numbers::msgpack_to_numbers;

/// Containers nested deeper than this are refused, in every direction: the
/// same limit as the wire's framing (`arrpc_wire::frame::MAX_DEPTH`), so
/// whatever a client may send, a guest may echo.
pub const MAX_DEPTH: usize = 512;

/// The largest integer a JavaScript number holds exactly,
/// `Number.MAX_SAFE_INTEGER`.
const MAX_SAFE_INTEGER: i128 = (1 << 53) - 1;

/// Why a value could not be transcoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    fn new(reason: impl Into<String>) -> Error {
        Error(reason.into())
    }

    fn too_deep() -> Error {
        Error::new(format!("nested deeper than {MAX_DEPTH}"))
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value;

    /// `value` as MessagePack, as rmpv writes it.
    pub(crate) fn pack(value: &Value) -> Vec<u8> {
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, value).unwrap();
        buf
    }

    fn map(entries: Vec<(Value, Value)>) -> Value {
        Value::Map(entries)
    }

    #[test]
    fn marshal_is_written_as_cpython_writes_it() {
        let value = Value::Array(vec![
            1.into(),
            (-70000).into(),
            Value::from(u64::MAX),
            "ab".into(),
            "é".into(),
            Value::Nil,
            true.into(),
            Value::Binary(vec![7]),
            map(vec![(1.into(), 1.5.into())]),
        ]);
        // marshal.dumps([1, -70000, 2**64-1, "ab", "é", None, True, b"\x07", {1: 1.5}], 4)
        // less its references, with "ab" as a short ASCII str.
        let mut expected = b"[\x09\x00\x00\x00i\x01\x00\x00\x00i\x90\xee\xfe\xff".to_vec();
        expected.extend(b"l\x05\x00\x00\x00\xff\x7f\xff\x7f\xff\x7f\xff\x7f\x0f\x00");
        expected.extend(b"z\x02abu\x02\x00\x00\x00\xc3\xa9NTs\x01\x00\x00\x00\x07");
        expected.extend(b"{i\x01\x00\x00\x00g\x00\x00\x00\x00\x00\x00\xf8\x3f0");
        assert_eq!(msgpack_to_marshal(&pack(&value)).unwrap(), Some(expected));
    }

    #[test]
    fn what_marshal_cannot_carry_is_left_to_msgpack() {
        let ext = Value::Ext(5, vec![1]);
        let array_key = map(vec![(Value::Array(vec![]), 1.into())]);
        let bad_str = [0xa1, 0xff];
        assert_eq!(msgpack_to_marshal(&pack(&ext)).unwrap(), None);
        assert_eq!(msgpack_to_marshal(&pack(&array_key)).unwrap(), None);
        assert_eq!(msgpack_to_marshal(&bad_str).unwrap(), None);
        // A str key and a bin key are both hashable.
        let keys = map(vec![
            ("a".into(), 1.into()),
            (Value::Binary(vec![1]), 2.into()),
        ]);
        assert!(msgpack_to_marshal(&pack(&keys)).unwrap().is_some());
    }

    #[test]
    fn malformed_or_too_deep_input_is_an_error() {
        assert!(msgpack_to_marshal(&[0x92, 0x01]).is_err());
        assert!(msgpack_to_marshal(&[0x01, 0x01]).is_err());
        assert!(msgpack_to_marshal(&[0xc1]).is_err());
        let mut deep = vec![0x91; MAX_DEPTH + 1];
        deep.push(0xc0);
        assert_eq!(msgpack_to_marshal(&deep).unwrap_err(), Error::too_deep());
        assert_eq!(msgpack_to_json(&deep).unwrap_err(), Error::too_deep());
        let mut ok = vec![0x91; MAX_DEPTH];
        ok.push(0xc0);
        assert!(msgpack_to_marshal(&ok).unwrap().is_some());
        assert!(msgpack_to_json(&ok).unwrap().is_some());
    }

    #[test]
    fn marshal_reads_back_as_packb_writes() {
        // marshal.dumps([1, 200, -33, 2**40, -2**63, "hé", b"x", (None, False), {"k": 0.5}], 2)
        let mut input =
            b"[\x09\x00\x00\x00i\x01\x00\x00\x00i\xc8\x00\x00\x00i\xdf\xff\xff\xff".to_vec();
        input.extend(b"l\x03\x00\x00\x00\x00\x00\x00\x00\x00\x04");
        input.extend(b"l\xfb\xff\xff\xff\x00\x00\x00\x00\x00\x00\x00\x00\x08\x00");
        input.extend(b"u\x03\x00\x00\x00h\xc3\xa9s\x01\x00\x00\x00x(\x02\x00\x00\x00NF");
        input.extend(b"{u\x01\x00\x00\x00kg\x00\x00\x00\x00\x00\x00\xe0\x3f0");
        let expected = Value::Array(vec![
            1.into(),
            200.into(),
            (-33).into(),
            Value::from(1u64 << 40),
            Value::from(i64::MIN),
            "hé".into(),
            Value::Binary(b"x".to_vec()),
            Value::Array(vec![Value::Nil, false.into()]),
            map(vec![("k".into(), 0.5.into())]),
        ]);
        let packed = marshal_to_msgpack(&input).unwrap();
        assert_eq!(packed, pack(&expected));
        // The shortest forms: 200 as a uint 8, -33 as an int 8.
        assert_eq!(&packed[..5], &[0x99, 0x01, 0xcc, 0xc8, 0xd0]);
    }

    #[test]
    fn marshal_that_packb_refuses_is_refused_by_name() {
        let set = b"<\x01\x00\x00\x00i\x01\x00\x00\x00";
        assert_eq!(
            marshal_to_msgpack(set).unwrap_err().to_string(),
            "can not serialize 'set' object"
        );
        let complex = b"y\x00\x00\x00\x00\x00\x00\xf0\x3f\x00\x00\x00\x00\x00\x00\xf0\x3f";
        assert!(
            marshal_to_msgpack(complex)
                .unwrap_err()
                .to_string()
                .contains("'complex'")
        );
        // 2**64
        let big = b"l\x05\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10\x00";
        assert_eq!(
            marshal_to_msgpack(big).unwrap_err().to_string(),
            "Integer value out of range"
        );
        // A lone surrogate, as marshal writes it ("surrogatepass").
        let lone = b"u\x03\x00\x00\x00\xed\xa0\x80";
        assert!(
            marshal_to_msgpack(lone)
                .unwrap_err()
                .to_string()
                .contains("surrogate")
        );
        // Version 3 and up refer back to earlier objects.
        let refs = b"[\x02\x00\x00\x00\xfa\x01ar\x01\x00\x00\x00";
        assert!(
            marshal_to_msgpack(refs)
                .unwrap_err()
                .to_string()
                .contains("version 2")
        );
        assert!(marshal_to_msgpack(b"[\x02\x00\x00\x00N").is_err());
        assert!(marshal_to_msgpack(b"NN").is_err());
        assert!(marshal_to_msgpack(b"[\xff\xff\xff\xff").is_err());
    }

    #[test]
    fn deep_marshal_is_refused_and_wide_marshal_is_linear() {
        let mut deep = Vec::new();
        for _ in 0..=MAX_DEPTH {
            deep.extend(b")\x01");
        }
        deep.push(b'N');
        assert_eq!(marshal_to_msgpack(&deep).unwrap_err(), Error::too_deep());
        let mut dicts = Vec::new();
        for _ in 0..=MAX_DEPTH {
            dicts.extend(b"{N");
        }
        assert_eq!(marshal_to_msgpack(&dicts).unwrap_err(), Error::too_deep());
        // 100,000 one-entry dicts in a list: headers shrink to one byte each.
        let mut wide = b"[\xa0\x86\x01\x00".to_vec();
        for _ in 0..100_000 {
            wide.extend(b"{NN0");
        }
        let packed = marshal_to_msgpack(&wide).unwrap();
        assert_eq!(packed.len(), 5 + 100_000 * 3);
    }

    #[test]
    fn json_carries_what_javascript_receives() {
        let value = map(vec![
            (
                "n".into(),
                Value::Array(vec![1.into(), (-1).into(), 0.25.into(), Value::F32(1.5)]),
            ),
            ("s".into(), "q\"\n\u{1}é".into()),
            ("b".into(), true.into()),
            ("z".into(), Value::Nil),
            ("big".into(), Value::from((1u64 << 53) - 1)),
        ]);
        let json = msgpack_to_json(&pack(&value)).unwrap().unwrap();
        assert_eq!(
            json,
            r#"{"n":[1,-1,0.25,1.5],"s":"q\"\n\u0001é","b":true,"z":null,"big":9007199254740991}"#
        );
    }

    #[test]
    fn what_json_cannot_carry_is_left_to_msgpack() {
        let cases = [
            Value::Binary(vec![1]),
            Value::Ext(1, vec![]),
            Value::from(1u64 << 53),
            Value::from(-(1i64 << 53)),
            Value::F64(f64::NAN),
            Value::F32(f32::INFINITY),
            map(vec![(1.into(), 1.into())]),
            map(vec![("__proto__".into(), 1.into())]),
            Value::Array(vec![Value::F64(f64::NEG_INFINITY)]),
        ];
        for case in cases {
            assert_eq!(msgpack_to_json(&pack(&case)).unwrap(), None, "{case}");
        }
    }

    #[test]
    fn json_reads_back_as_javascript_numbers_encode() {
        let packed = json_to_msgpack(
            r#"[0,127,128,-32,-33,1e3,-0,0.5,9007199254740991,9007199254740992,1e300,{"a":[]}]"#,
        )
        .unwrap();
        let expected = Value::Array(vec![
            0.into(),
            127.into(),
            128.into(),
            (-32).into(),
            (-33).into(),
            1000.into(),
            0.into(),
            0.5.into(),
            Value::from((1u64 << 53) - 1),
            Value::F64(9007199254740992.0),
            Value::F64(1e300),
            map(vec![("a".into(), Value::Array(vec![]))]),
        ]);
        assert_eq!(packed, pack(&expected));
        assert_eq!(&packed[..4], &[0x9c, 0x00, 0x7f, 0xcc]);
    }

    #[test]
    fn bad_or_deep_json_is_an_error() {
        assert!(json_to_msgpack("[1,").is_err());
        assert!(json_to_msgpack("1 2").is_err());
        assert!(json_to_msgpack(r#""\ud800""#).is_err());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(
            json_to_msgpack(&deep)
                .unwrap_err()
                .to_string()
                .contains("deeper")
        );
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(json_to_msgpack(&ok).is_ok());
    }
}
