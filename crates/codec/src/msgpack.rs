//! Reading MessagePack one token at a time: a container's header, then its
//! items as further tokens.

use rmp::Marker;

use crate::Error;
use crate::cursor::Cursor;

/// One MessagePack item; containers give only their length.
pub enum Token<'a> {
    Nil,
    Bool(bool),
    /// Every integer fits `i128`: MessagePack's range is `i64` and `u64`.
    Int(i128),
    F32(f32),
    F64(f64),
    Str(&'a [u8]),
    Bin(&'a [u8]),
    Ext,
    Array(u32),
    Map(u32),
}

/// A cursor over MessagePack bytes.
pub struct Reader<'a>(Cursor<'a>);

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader(Cursor::new(buf, "MessagePack value"))
    }

    /// Fails unless every byte was read: the input must be exactly one value.
    pub fn finish(&self) -> Result<(), Error> {
        if self.0.at_end() {
            Ok(())
        } else {
            Err(Error::new("more than one MessagePack value"))
        }
    }

    /// The next value when it is an integer of at most 16 bits (most
    /// are), read without making a token; `None` reads nothing.
    pub fn small_int(&mut self) -> Option<i32> {
        let (n, len) = match *self.0.rest() {
            [marker @ 0x00..=0x7f, ..] => (marker.into(), 1),
            [marker @ 0xe0..=0xff, ..] => ((marker as i8).into(), 1),
            [0xcc, n, ..] => (n.into(), 2),
            [0xcd, high, low, ..] => (u16::from_be_bytes([high, low]).into(), 3),
            _ => return None,
        };
        self.take(len).ok()?;
        Some(n)
    }

    pub fn token(&mut self) -> Result<Token<'a>, Error> {
        let marker = self.take(1)?[0];
        // The most common integers first, matched on the byte itself.
        Ok(match marker {
            0x00..=0x7f => Token::Int(marker.into()),
            0xe0..=0xff => Token::Int((marker as i8).into()),
            0xcc => Token::Int(self.array::<1>()?[0].into()),
            0xcd => Token::Int(u16::from_be_bytes(self.array()?).into()),
            _ => self.other(Marker::from_u8(marker))?,
        })
    }

    /// A token whose marker is any but the few [`Reader::token`] reads itself.
    fn other(&mut self, marker: Marker) -> Result<Token<'a>, Error> {
        Ok(match marker {
            Marker::Null => Token::Nil,
            Marker::True => Token::Bool(true),
            Marker::False => Token::Bool(false),
            Marker::FixPos(_) | Marker::FixNeg(_) | Marker::U8 | Marker::U16 => {
                unreachable!("Reader::token reads these itself")
            }
            Marker::U32 => Token::Int(u32::from_be_bytes(self.array()?).into()),
            Marker::U64 => Token::Int(u64::from_be_bytes(self.array()?).into()),
            Marker::I8 => Token::Int(i8::from_be_bytes(self.array()?).into()),
            Marker::I16 => Token::Int(i16::from_be_bytes(self.array()?).into()),
            Marker::I32 => Token::Int(i32::from_be_bytes(self.array()?).into()),
            Marker::I64 => Token::Int(i64::from_be_bytes(self.array()?).into()),
            Marker::F32 => Token::F32(f32::from_be_bytes(self.array()?)),
            Marker::F64 => Token::F64(f64::from_be_bytes(self.array()?)),
            Marker::FixStr(n) => Token::Str(self.take(n.into())?),
            Marker::Str8 => Token::Str(self.sized::<1>()?),
            Marker::Str16 => Token::Str(self.sized::<2>()?),
            Marker::Str32 => Token::Str(self.sized::<4>()?),
            Marker::Bin8 => Token::Bin(self.sized::<1>()?),
            Marker::Bin16 => Token::Bin(self.sized::<2>()?),
            Marker::Bin32 => Token::Bin(self.sized::<4>()?),
            Marker::FixArray(n) => Token::Array(n.into()),
            Marker::Array16 => Token::Array(self.length::<2>()?),
            Marker::Array32 => Token::Array(self.length::<4>()?),
            Marker::FixMap(n) => Token::Map(n.into()),
            Marker::Map16 => Token::Map(self.length::<2>()?),
            Marker::Map32 => Token::Map(self.length::<4>()?),
            Marker::FixExt1 => self.ext(1)?,
            Marker::FixExt2 => self.ext(2)?,
            Marker::FixExt4 => self.ext(4)?,
            Marker::FixExt8 => self.ext(8)?,
            Marker::FixExt16 => self.ext(16)?,
            Marker::Ext8 => self.sized_ext::<1>()?,
            Marker::Ext16 => self.sized_ext::<2>()?,
            Marker::Ext32 => self.sized_ext::<4>()?,
            Marker::Reserved => return Err(Error::new("the reserved byte 0xc1")),
        })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        self.0.take(n)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        self.0.array()
    }

    /// A big-endian length of `N` bytes.
    fn length<const N: usize>(&mut self) -> Result<u32, Error> {
        let mut be = [0; 4];
        be[4 - N..].copy_from_slice(self.take(N)?);
        Ok(u32::from_be_bytes(be))
    }

    /// Bytes preceded by their length, itself `N` bytes.
    fn sized<const N: usize>(&mut self) -> Result<&'a [u8], Error> {
        let len = self.length::<N>()?;
        self.take(len as usize)
    }

    fn ext(&mut self, len: usize) -> Result<Token<'a>, Error> {
        self.take(1 + len)?;
        Ok(Token::Ext)
    }

    fn sized_ext<const N: usize>(&mut self) -> Result<Token<'a>, Error> {
        let len = self.length::<N>()?;
        self.ext(len as usize)
    }
}
