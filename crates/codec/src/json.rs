//! MessagePack to JSON and back, as `@msgpack/msgpack` decodes and encodes
//! JavaScript values by default.
//!
//! JSON carries what a JavaScript program most often receives (null,
//! booleans, numbers, strings, arrays, plain objects) and QuickJS parses it
//! in C. What it cannot carry as `@msgpack/msgpack` would decode it (bin as
//! a `Uint8Array`, an ext, a map key that is not a str, the key
//! `__proto__`, an integer beyond 2**53 - 1, NaN and the infinities, a str
//! that is not UTF-8) makes [`msgpack_to_json`] answer `None`, and the SDK
//! decodes that message with `@msgpack/msgpack` itself.

use std::fmt;

use rmp::encode;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::msgpack::{Reader, Token};
use crate::out::{Out, write_int as write_msgpack_int};
use crate::{Error, MAX_DEPTH, MAX_SAFE_INTEGER};

/// `value`, exactly one MessagePack value, as JSON text that `JSON.parse`
/// turns into what `@msgpack/msgpack`'s `decode` would return; `None` when
/// JSON cannot carry it exactly.
pub fn msgpack_to_json(value: &[u8]) -> Result<Option<String>, Error> {
    let mut reader = Reader::new(value);
    let mut out = Vec::with_capacity(value.len() * 2);
    if !write_value(&mut reader, &mut out, 0)? {
        // What is left unread, `@msgpack/msgpack` will read or refuse.
        return Ok(None);
    }
    reader.finish()?;
    Ok(Some(
        String::from_utf8(out).expect("JSON written from UTF-8 checked as such"),
    ))
}

/// An array item or a map value: a small integer written straight from its
/// bytes (most are), anything else through [`write_value`]. Inlined into
/// the container loops, where it runs once per item.
#[inline(always)]
fn write_item(reader: &mut Reader, out: &mut Vec<u8>, depth: usize) -> Result<bool, Error> {
    if let Some(n) = reader.small_int() {
        write_int(out, n.into());
        return Ok(true);
    }
    write_value(reader, out, depth)
}

fn write_value(reader: &mut Reader, out: &mut Vec<u8>, depth: usize) -> Result<bool, Error> {
    match reader.token()? {
        Token::Nil => out.extend_from_slice(b"null"),
        Token::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        Token::Int(n) if n.abs() <= MAX_SAFE_INTEGER => write_int(out, n as i64),
        Token::Int(_) => return Ok(false),
        Token::F32(x) => return Ok(write_float(out, x.into())),
        Token::F64(x) => return Ok(write_float(out, x)),
        Token::Str(bytes) => return Ok(write_str(out, bytes)),
        Token::Bin(_) | Token::Ext => return Ok(false),
        Token::Array(len) => {
            if depth == MAX_DEPTH {
                return Err(Error::too_deep());
            }
            out.push(b'[');
            for index in 0..len {
                if index > 0 {
                    out.push(b',');
                }
                if !write_item(reader, out, depth + 1)? {
                    return Ok(false);
                }
            }
            out.push(b']');
        }
        Token::Map(len) => {
            if depth == MAX_DEPTH {
                return Err(Error::too_deep());
            }
            out.push(b'{');
            for index in 0..len {
                if index > 0 {
                    out.push(b',');
                }
                // `@msgpack/msgpack` refuses `__proto__`, where JSON.parse
                // would make it an own property: it must refuse it here too.
                match reader.token()? {
                    Token::Str(key) if key != b"__proto__" => {
                        if !write_str(out, key) {
                            return Ok(false);
                        }
                    }
                    _ => return Ok(false),
                }
                out.push(b':');
                if !write_item(reader, out, depth + 1)? {
                    return Ok(false);
                }
            }
            out.push(b'}');
        }
    }
    Ok(true)
}

/// Writes an integer as serde_json (and `JSON.stringify`) does, without
/// its writer's per-call cost. Up to five digits, the digits are worked
/// out here and written at a fixed size; longer ones go through itoa.
fn write_int(out: &mut Vec<u8>, n: i64) {
    let digit = |n: i64| b'0' + (n % 10) as u8;
    match n {
        0..10 => out.push(digit(n)),
        10..100 => out.extend_from_slice(&[digit(n / 10), digit(n)]),
        100..1000 => out.extend_from_slice(&[digit(n / 100), digit(n / 10), digit(n)]),
        1000..10000 => {
            out.extend_from_slice(&[digit(n / 1000), digit(n / 100), digit(n / 10), digit(n)])
        }
        10000..100000 => out.extend_from_slice(&[
            digit(n / 10000),
            digit(n / 1000),
            digit(n / 100),
            digit(n / 10),
            digit(n),
        ]),
        _ => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
    }
}

/// Writes `bytes` as a JSON string, as serde_json writes the same text;
/// false when they are not UTF-8. Text with no quote, backslash or control
/// character is quoted as it is (serde_json escapes only those), so only
/// the rest goes through serde_json.
fn write_str(out: &mut Vec<u8>, bytes: &[u8]) -> bool {
    // Printable ASCII other than a quote or a backslash, the common case,
    // in one pass that does not stop early and so runs many bytes at once.
    let plain_ascii = bytes.iter().fold(true, |plain, &b| {
        plain & (0x20..0x80).contains(&b) & (b != b'"') & (b != b'\\')
    });
    if !plain_ascii {
        let Ok(text) = std::str::from_utf8(bytes) else {
            return false;
        };
        if text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
            serde_json::to_writer(&mut *out, text).expect("writes to a Vec");
            return true;
        }
    }
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    out.extend_from_slice(bytes);
    out.push(b'"');
    true
}

/// Writes a finite float; false for NaN and the infinities.
fn write_float(out: &mut Vec<u8>, x: f64) -> bool {
    if !x.is_finite() {
        return false;
    }
    // The shortest text that reads back as the same double (ryu).
    serde_json::to_writer(&mut *out, &x).expect("writes to a Vec");
    true
}

/// JSON text, as `JSON.stringify` writes it, as the MessagePack
/// `@msgpack/msgpack`'s `encode` writes for the same value: a number that
/// is a safe integer as an integer at its shortest, any other as a float
/// 64, objects as maps in their key order.
pub fn json_to_msgpack(value: &str) -> Result<Vec<u8>, Error> {
    let mut de = serde_json::Deserializer::from_str(value);
    de.disable_recursion_limit();
    // MessagePack is rarely longer than the JSON it is read from.
    let mut out = Out::with_capacity(value.len());
    Value {
        out: &mut out,
        depth: 0,
    }
    .deserialize(&mut de)
    .map_err(|e| Error::new(format!("invalid JSON: {e}")))?;
    de.end()
        .map_err(|e| Error::new(format!("invalid JSON: {e}")))?;
    Ok(out.finish())
}

/// One JSON value, written as MessagePack as it is read.
struct Value<'o> {
    out: &'o mut Out,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Value<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Value<'_> {
    fn nested<E: de::Error>(&mut self) -> Result<Value<'_>, E> {
        if self.depth == MAX_DEPTH {
            return Err(E::custom(Error::too_deep()));
        }
        Ok(Value {
            out: self.out,
            depth: self.depth + 1,
        })
    }

    fn number(&mut self, n: i128) {
        if n.abs() <= MAX_SAFE_INTEGER {
            write_msgpack_int(self.out.bytes(), n);
        } else {
            encode::write_f64(self.out.bytes(), n as f64).expect("writes to a Vec");
        }
    }
}

impl<'de> Visitor<'de> for Value<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.out.bytes().push(0xc0);
        Ok(())
    }

    fn visit_bool<E>(self, b: bool) -> Result<(), E> {
        self.out.bytes().push(if b { 0xc3 } else { 0xc2 });
        Ok(())
    }

    fn visit_i64<E>(mut self, n: i64) -> Result<(), E> {
        self.number(n.into());
        Ok(())
    }

    fn visit_u64<E>(mut self, n: u64) -> Result<(), E> {
        self.number(n.into());
        Ok(())
    }

    fn visit_f64<E>(mut self, x: f64) -> Result<(), E> {
        // A JavaScript number is a double: one that is a safe integer
        // (1e3, or -0) is encoded as an integer, as `@msgpack/msgpack` does.
        if x.fract() == 0.0 && x.abs() <= MAX_SAFE_INTEGER as f64 {
            self.number(x as i128);
        } else {
            encode::write_f64(self.out.bytes(), x).expect("writes to a Vec");
        }
        Ok(())
    }

    fn visit_str<E>(self, text: &str) -> Result<(), E> {
        let buf = self.out.bytes();
        encode::write_str_len(buf, text.len() as u32).expect("writes to a Vec");
        buf.extend_from_slice(text.as_bytes());
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let open = self.out.open(false);
        let mut len: u32 = 0;
        while seq.next_element_seed(self.nested()?)?.is_some() {
            len = len
                .checked_add(1)
                .ok_or_else(|| de::Error::custom("array too long"))?;
        }
        self.out.close(open, len);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let open = self.out.open(true);
        let mut len: u32 = 0;
        while map.next_key_seed(self.nested()?)?.is_some() {
            map.next_value_seed(self.nested()?)?;
            len = len
                .checked_add(1)
                .ok_or_else(|| de::Error::custom("object too long"))?;
        }
        self.out.close(open, len);
        Ok(())
    }
}
