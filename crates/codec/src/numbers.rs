//! An array of numbers as little-endian 64-bit floats, for a JavaScript
//! `Float64Array`.
//!
//! A message that is an array of numbers only (a vector, a batch of ids or
//! prices) is where JSON costs QuickJS most: `JSON.parse` reads each
//! number's digits at about 930 instructions a number. Handed the floats
//! instead, the SDK makes the same `Array` from a `Float64Array` in C,
//! with nothing to parse.

use crate::MAX_SAFE_INTEGER;
use crate::msgpack::{Reader, Token};

/// The items of `value` as little-endian `f64`s, when `value` is exactly
/// one MessagePack array whose every item is a number JSON would carry: an
/// integer within ±(2^53 - 1), or a finite float 32 or 64 (-0 included).
/// So the SDK gets what it would have parsed from
/// [`msgpack_to_json`](crate::msgpack_to_json)'s text, and an array with
/// NaN or an infinity goes, as it would have, to `@msgpack/msgpack`.
/// `None` for anything else, malformed MessagePack included, which the
/// other routes then decode or refuse.
pub fn msgpack_to_numbers(value: &[u8]) -> Option<Vec<u8>> {
    let mut reader = Reader::new(value);
    let Ok(Token::Array(len)) = reader.token() else {
        return None;
    };
    // Every item takes a byte at least: a longer length is not the truth,
    // and must not size the allocation.
    let len = usize::try_from(len).ok().filter(|&n| n < value.len())?;
    let mut out = Vec::with_capacity(len * 8);
    for _ in 0..len {
        let x = match reader.small_int() {
            Some(n) => n.into(),
            None => match reader.token().ok()? {
                Token::Int(n) if n.abs() <= MAX_SAFE_INTEGER => n as f64,
                Token::F32(x) if x.is_finite() => x.into(),
                Token::F64(x) if x.is_finite() => x,
                _ => return None,
            },
        };
        out.extend_from_slice(&x.to_le_bytes());
    }
    reader.finish().ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::pack;
    use rmpv::Value;

    fn floats(value: &Value) -> Option<Vec<f64>> {
        let bytes = msgpack_to_numbers(&pack(value))?;
        Some(
            bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        )
    }

    #[test]
    fn every_width_of_integer_and_float_keeps_its_value() {
        let safe = (1i64 << 53) - 1;
        let items = vec![
            Value::from(0),
            Value::from(-1),
            Value::from(-32),
            Value::from(-33),
            Value::from(127),
            Value::from(255),
            Value::from(65_535),
            Value::from(-32_768),
            Value::from(4_294_967_295u64),
            Value::from(-2_147_483_648i64),
            Value::from(safe),
            Value::from(-safe),
            Value::F32(1.5),
            Value::F64(-0.0),
            Value::F64(1e300),
            Value::F64(0.1),
        ];
        let got = floats(&Value::Array(items)).expect("all numbers");
        let want = [
            0.0,
            -1.0,
            -32.0,
            -33.0,
            127.0,
            255.0,
            65_535.0,
            -32_768.0,
            4_294_967_295.0,
            -2_147_483_648.0,
            safe as f64,
            -safe as f64,
            1.5,
            -0.0,
            1e300,
            0.1,
        ];
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g.to_bits(), w.to_bits(), "{g} against {w}");
        }
    }

    #[test]
    fn anything_but_an_array_of_exact_numbers_is_left_to_the_other_routes() {
        let unsafe_int = Value::from(1i64 << 53);
        for value in [
            Value::from(1),
            Value::Map(vec![]),
            Value::Array(vec![Value::from(1), Value::Nil]),
            Value::Array(vec![Value::from(1), Value::from("2")]),
            Value::Array(vec![Value::Boolean(true)]),
            Value::Array(vec![Value::Array(vec![])]),
            Value::Array(vec![unsafe_int.clone()]),
            Value::Array(vec![Value::from(u64::MAX)]),
            Value::Array(vec![Value::from(1), Value::F64(f64::NAN)]),
            Value::Array(vec![Value::F32(f32::INFINITY)]),
            Value::Array(vec![Value::F64(f64::NEG_INFINITY)]),
        ] {
            assert_eq!(msgpack_to_numbers(&pack(&value)), None, "{value}");
        }
        assert_eq!(floats(&Value::Array(vec![])), Some(vec![]));
    }

    #[test]
    fn malformed_or_trailing_bytes_give_none_and_a_false_length_allocates_nothing() {
        // An array32 claiming 4 billion items, then one.
        assert_eq!(msgpack_to_numbers(&[0xdd, 0xff, 0xff, 0xff, 0xff, 1]), None);
        // Two items promised, one given.
        assert_eq!(msgpack_to_numbers(&[0x92, 1]), None);
        // A float cut short.
        assert_eq!(msgpack_to_numbers(&[0x91, 0xcb, 0, 0]), None);
        // A second value after the array.
        assert_eq!(msgpack_to_numbers(&[0x91, 1, 2]), None);
    }
}
