//! MessagePack to CPython's `marshal` format and back.
//!
//! To the guest, [`msgpack_to_marshal`] writes what `marshal.dumps` would
//! for the object msgpack-python's `unpackb(raw=False,
//! strict_map_key=False)` returns, so `marshal.loads` gives an equal
//! object. Back, [`marshal_to_msgpack`] reads what `marshal.dumps(obj, 2)`
//! wrote and writes what msgpack-python's `packb(obj)` would. Version 2
//! has no back-references, so nothing read can expand beyond its input.
//!
//! The codes are CPython's (`Python/marshal.c`); those written here are
//! read by every CPython 3.

use rmp::encode;

use crate::cursor::Cursor;
use crate::msgpack::{Reader, Token};
use crate::out::{Out, write_array_len, write_int as write_msgpack_int};
use crate::{Error, MAX_DEPTH};

const NULL: u8 = b'0';
const NONE: u8 = b'N';
const FALSE: u8 = b'F';
const TRUE: u8 = b'T';
const STOPITER: u8 = b'S';
const ELLIPSIS: u8 = b'.';
const INT: u8 = b'i';
const INT64: u8 = b'I';
const FLOAT: u8 = b'f';
const BINARY_FLOAT: u8 = b'g';
const COMPLEX: u8 = b'x';
const BINARY_COMPLEX: u8 = b'y';
const LONG: u8 = b'l';
const STRING: u8 = b's';
const INTERNED: u8 = b't';
const REF: u8 = b'r';
const TUPLE: u8 = b'(';
const LIST: u8 = b'[';
const DICT: u8 = b'{';
const CODE: u8 = b'c';
const UNICODE: u8 = b'u';
const SET: u8 = b'<';
const FROZENSET: u8 = b'>';
const SLICE: u8 = b':';
const ASCII: u8 = b'a';
const ASCII_INTERNED: u8 = b'A';
const SMALL_TUPLE: u8 = b')';
const SHORT_ASCII: u8 = b'z';
const SHORT_ASCII_INTERNED: u8 = b'Z';
/// Set on a code by versions 3 and up when the object may be referred to
/// later; it changes nothing about the object itself.
const FLAG_REF: u8 = 0x80;

/// A long's digits are 15 bits each, least significant first.
const DIGIT_BITS: u32 = 15;

/// `value`, exactly one MessagePack value, as marshal bytes; `None` when
/// msgpack-python would not give a plain object marshal can carry: an ext
/// (it gives an `ExtType` or `Timestamp`), a map key that is an array or a
/// map (it raises, as the key cannot be hashed), or a str that is not
/// UTF-8 (it raises).
pub fn msgpack_to_marshal(value: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    let mut reader = Reader::new(value);
    // marshal is rarely much longer than MessagePack: 5 bytes for an
    // integer, 4 more for each str's length.
    let mut out = Vec::with_capacity(value.len() * 2);
    if !write_value(&mut reader, &mut out, 0, false)? {
        // What is left unread, msgpack itself will read or refuse.
        return Ok(None);
    }
    reader.finish()?;
    Ok(Some(out))
}

/// An array item or a map value: a small integer written straight from its
/// bytes (most are), anything else through [`write_value`]. Inlined into
/// the container loops, where it runs once per item.
#[inline(always)]
fn write_item(reader: &mut Reader, out: &mut Vec<u8>, depth: usize) -> Result<bool, Error> {
    if let Some(n) = reader.small_int() {
        write_int(out, n);
        return Ok(true);
    }
    write_value(reader, out, depth, false)
}

/// Writes the next value; false when marshal cannot carry it.
fn write_value(
    reader: &mut Reader,
    out: &mut Vec<u8>,
    depth: usize,
    key: bool,
) -> Result<bool, Error> {
    match reader.token()? {
        Token::Nil => out.push(NONE),
        Token::Bool(b) => out.push(if b { TRUE } else { FALSE }),
        Token::Int(n) => write_long(out, n),
        Token::F32(x) => write_float(out, x.into()),
        Token::F64(x) => write_float(out, x),
        Token::Str(bytes) => {
            // ASCII is UTF-8: most strs need no second pass.
            let ascii = bytes.is_ascii();
            if !ascii && std::str::from_utf8(bytes).is_err() {
                return Ok(false);
            }
            match (ascii, u8::try_from(bytes.len())) {
                (true, Ok(len)) => out.extend_from_slice(&[SHORT_ASCII, len]),
                (true, Err(_)) => write_sized(out, ASCII, bytes.len()),
                (false, _) => write_sized(out, UNICODE, bytes.len()),
            }
            out.extend_from_slice(bytes);
        }
        Token::Bin(bytes) => {
            write_sized(out, STRING, bytes.len());
            out.extend_from_slice(bytes);
        }
        Token::Ext => return Ok(false),
        Token::Array(_) | Token::Map(_) if key => return Ok(false),
        Token::Array(len) => {
            if depth == MAX_DEPTH {
                return Err(Error::too_deep());
            }
            write_sized(out, LIST, len as usize);
            for _ in 0..len {
                if !write_item(reader, out, depth + 1)? {
                    return Ok(false);
                }
            }
        }
        Token::Map(len) => {
            if depth == MAX_DEPTH {
                return Err(Error::too_deep());
            }
            out.push(DICT);
            for _ in 0..len {
                if !write_value(reader, out, depth + 1, true)? {
                    return Ok(false);
                }
                if !write_item(reader, out, depth + 1)? {
                    return Ok(false);
                }
            }
            out.push(NULL);
        }
    }
    Ok(true)
}

fn write_sized(out: &mut Vec<u8>, code: u8, len: usize) {
    // MessagePack lengths are 32-bit, so every length read fits.
    let [a, b, c, d] = (len as u32).to_le_bytes();
    out.extend_from_slice(&[code, a, b, c, d]);
}

fn write_float(out: &mut Vec<u8>, x: f64) {
    let mut code = [BINARY_FLOAT; 9];
    code[1..].copy_from_slice(&x.to_le_bytes());
    out.extend_from_slice(&code);
}

fn write_int(out: &mut Vec<u8>, n: i32) {
    let [a, b, c, d] = n.to_le_bytes();
    out.extend_from_slice(&[INT, a, b, c, d]);
}

fn write_long(out: &mut Vec<u8>, n: i128) {
    if let Ok(small) = i32::try_from(n) {
        write_int(out, small);
        return;
    }
    let mut magnitude = n.unsigned_abs();
    let mut digits = Vec::with_capacity(5);
    while magnitude != 0 {
        digits.push((magnitude & ((1 << DIGIT_BITS) - 1)) as u16);
        magnitude >>= DIGIT_BITS;
    }
    let count = digits.len() as i32;
    out.push(LONG);
    out.extend_from_slice(&(if n < 0 { -count } else { count }).to_le_bytes());
    for digit in digits {
        out.extend_from_slice(&digit.to_le_bytes());
    }
}

/// What `marshal.dumps(obj, 2)` wrote, as the MessagePack msgpack-python's
/// `packb(obj)` writes: tuples and lists as arrays, bytes as bin, every
/// float as a float 64. What `packb` refuses is refused with its words: a
/// set, a complex or a code object, an int outside 64 bits, a str holding
/// a lone surrogate.
pub fn marshal_to_msgpack(value: &[u8]) -> Result<Vec<u8>, Error> {
    let mut reader = MarshalReader(Cursor::new(value, "marshal data"));
    // MessagePack is rarely longer than marshal: an int takes 5 bytes in
    // marshal, a str's length 4.
    let mut out = Out::with_capacity(value.len());
    let code = reader.code()?;
    reader.value(code, &mut out, 0)?;
    if !reader.0.at_end() {
        return Err(Error::new("bytes after the marshal value"));
    }
    Ok(out.finish())
}

struct MarshalReader<'a>(Cursor<'a>);

impl<'a> MarshalReader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        self.0.take(n)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        self.0.array()
    }

    fn code(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0] & !FLAG_REF)
    }

    /// A 32-bit length, which marshal writes signed.
    fn length(&mut self) -> Result<usize, Error> {
        usize::try_from(i32::from_le_bytes(self.array()?))
            .map_err(|_| Error::new("marshal data with a negative length"))
    }

    fn value(&mut self, code: u8, out: &mut Out, depth: usize) -> Result<(), Error> {
        let buf = out.bytes();
        match code {
            NONE => buf.push(0xc0),
            FALSE => buf.push(0xc2),
            TRUE => buf.push(0xc3),
            INT => write_msgpack_int(buf, i32::from_le_bytes(self.array()?).into()),
            INT64 => write_msgpack_int(buf, i64::from_le_bytes(self.array()?).into()),
            LONG => {
                write_msgpack_int(buf, self.long()?);
            }
            BINARY_FLOAT => {
                encode::write_f64(buf, f64::from_le_bytes(self.array()?)).expect("writes to a Vec")
            }
            FLOAT => {
                let len = self.take(1)?[0];
                let text = self.take(len.into())?;
                let x = std::str::from_utf8(text)
                    .ok()
                    .and_then(|text| text.parse::<f64>().ok())
                    .ok_or_else(|| Error::new("marshal float that is not a number"))?;
                encode::write_f64(buf, x).expect("writes to a Vec");
            }
            STRING => {
                let len = self.length()?;
                let bytes = self.take(len)?;
                encode::write_bin_len(buf, bytes.len() as u32).map_err(|_| too_long())?;
                buf.extend_from_slice(bytes);
            }
            UNICODE | INTERNED | ASCII | ASCII_INTERNED => {
                let len = self.length()?;
                self.text(len, out, code == UNICODE || code == INTERNED)?;
            }
            SHORT_ASCII | SHORT_ASCII_INTERNED => {
                let len = self.take(1)?[0];
                self.text(len.into(), out, false)?;
            }
            TUPLE | LIST => {
                let len = self.length()?;
                self.items(len, out, depth)?;
            }
            SMALL_TUPLE => {
                let len = self.take(1)?[0];
                self.items(len.into(), out, depth)?;
            }
            DICT => {
                if depth == MAX_DEPTH {
                    return Err(Error::too_deep());
                }
                let open = out.open(true);
                let mut len: u32 = 0;
                loop {
                    let code = self.code()?;
                    if code == NULL {
                        break;
                    }
                    self.value(code, out, depth + 1)?;
                    let code = self.code()?;
                    self.value(code, out, depth + 1)?;
                    len = len.checked_add(1).ok_or_else(too_long)?;
                }
                out.close(open, len);
            }
            SET => return Err(cannot("set")),
            FROZENSET => return Err(cannot("frozenset")),
            COMPLEX | BINARY_COMPLEX => return Err(cannot("complex")),
            CODE => return Err(cannot("code")),
            SLICE => return Err(cannot("slice")),
            ELLIPSIS => return Err(cannot("ellipsis")),
            STOPITER => return Err(cannot("type")),
            REF => {
                return Err(Error::new(
                    "marshal back-references are not read: dump with marshal version 2",
                ));
            }
            NULL => return Err(Error::new("marshal data with a value missing")),
            other => {
                return Err(Error::new(format!(
                    "unknown marshal type code 0x{other:02x}"
                )));
            }
        }
        Ok(())
    }

    fn text(&mut self, len: usize, out: &mut Out, utf8: bool) -> Result<(), Error> {
        let bytes = self.take(len)?;
        // marshal writes a str's lone surrogates too ("surrogatepass"),
        // which UTF-8 proper, and so MessagePack, cannot carry.
        let valid = if utf8 {
            std::str::from_utf8(bytes).is_ok()
        } else {
            bytes.is_ascii()
        };
        if !valid {
            return Err(Error::new(
                "a str holding a lone surrogate cannot be written as MessagePack (surrogates not allowed)",
            ));
        }
        let buf = out.bytes();
        encode::write_str_len(buf, len as u32).map_err(|_| too_long())?;
        buf.extend_from_slice(bytes);
        Ok(())
    }

    fn items(&mut self, len: usize, out: &mut Out, depth: usize) -> Result<(), Error> {
        if depth == MAX_DEPTH {
            return Err(Error::too_deep());
        }
        let len = u32::try_from(len).map_err(|_| too_long())?;
        // The length is known here, so the header needs no blank.
        write_array_len(out.bytes(), len);
        for _ in 0..len {
            let code = self.code()?;
            self.value(code, out, depth + 1)?;
        }
        Ok(())
    }

    /// A long's value; msgpack-python packs from -2**63 up to 2**64 - 1.
    fn long(&mut self) -> Result<i128, Error> {
        let count = i32::from_le_bytes(self.array()?);
        let mut magnitude: u128 = 0;
        for index in 0..count.unsigned_abs() {
            let digit = u16::from_le_bytes(self.array()?);
            if digit >> DIGIT_BITS != 0 {
                return Err(Error::new("marshal long with a digit out of range"));
            }
            if digit == 0 {
                continue;
            }
            // Past 5 digits (75 bits) no value is in range.
            if index >= 5 {
                return Err(Error::new("Integer value out of range"));
            }
            magnitude |= u128::from(digit) << (DIGIT_BITS * index);
        }
        let n = if count < 0 {
            -(magnitude as i128)
        } else {
            magnitude as i128
        };
        if n < i128::from(i64::MIN) || n > i128::from(u64::MAX) {
            return Err(Error::new("Integer value out of range"));
        }
        Ok(n)
    }
}

fn cannot(kind: &str) -> Error {
    Error::new(format!("can not serialize '{kind}' object"))
}

fn too_long() -> Error {
    Error::new("longer than MessagePack's 2**32 - 1")
}
