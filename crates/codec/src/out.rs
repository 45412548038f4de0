//! MessagePack written as it is read from a format that gives a
//! container's length only at its end (a marshal dict, JSON).

/// A writer that leaves a container's header blank until its end, then
/// writes every header at its shortest in one final pass, so writing stays
/// linear however deep the containers nest.
pub struct Out {
    buf: Vec<u8>,
    /// Where each blank header is, in the order they were opened.
    headers: Vec<Header>,
}

#[derive(Clone, Copy)]
struct Header {
    at: usize,
    len: u32,
    map: bool,
}

/// The room left for a header: a marker and a 32-bit length.
const BLANK: usize = 5;

/// A container opened with [`Out::open`], to be closed with its length.
pub struct Open(usize);

impl Out {
    /// A writer with room for `capacity` bytes before it grows.
    pub fn with_capacity(capacity: usize) -> Out {
        Out {
            buf: Vec::with_capacity(capacity),
            headers: Vec::new(),
        }
    }

    pub fn bytes(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    pub fn open(&mut self, map: bool) -> Open {
        self.headers.push(Header {
            at: self.buf.len(),
            len: 0,
            map,
        });
        self.buf.extend_from_slice(&[0; BLANK]);
        Open(self.headers.len() - 1)
    }

    pub fn close(&mut self, open: Open, len: u32) {
        self.headers[open.0].len = len;
    }

    /// The bytes, every header written in place of its blank. Headers only
    /// shrink, so the bytes move towards the start within the one buffer,
    /// and not at all when no container was opened.
    pub fn finish(self) -> Vec<u8> {
        let Out { mut buf, headers } = self;
        let (mut to, mut from) = (0, 0);
        for header in headers {
            buf.copy_within(from..header.at, to);
            to += header.at - from;
            let mut written = [0; BLANK];
            let len = write_len(&mut written, header.map, header.len);
            buf[to..to + len].copy_from_slice(&written[..len]);
            to += len;
            from = header.at + BLANK;
        }
        let end = buf.len();
        buf.copy_within(from..end, to);
        buf.truncate(to + end - from);
        buf
    }
}

/// Writes an array's or a map's header at its shortest into `out`, as
/// `rmp::encode::write_array_len` and `write_map_len` do; returns its size.
fn write_len(out: &mut [u8; BLANK], map: bool, len: u32) -> usize {
    let (fix, wide16, wide32) = if map {
        (0x80, 0xde, 0xdf)
    } else {
        (0x90, 0xdc, 0xdd)
    };
    if len < 16 {
        out[0] = fix | len as u8;
        1
    } else if let Ok(len) = u16::try_from(len) {
        out[0] = wide16;
        out[1..3].copy_from_slice(&len.to_be_bytes());
        3
    } else {
        out[0] = wide32;
        out[1..5].copy_from_slice(&len.to_be_bytes());
        5
    }
}

/// Writes an array header for `len` items known before they are written.
pub fn write_array_len(buf: &mut Vec<u8>, len: u32) {
    let mut header = [0; BLANK];
    let size = write_len(&mut header, false, len);
    buf.extend_from_slice(&header[..size]);
}

/// Writes an integer at its shortest, as msgpack-python and
/// `@msgpack/msgpack` both do: unsigned formats for values from 0, signed
/// ones below. The caller has checked that it fits `i64` or `u64`. Each
/// form is written at its fixed size, so no copy of a variable length.
pub fn write_int(buf: &mut Vec<u8>, n: i128) {
    if n >= 0 {
        write_uint(buf, n as u64);
    } else {
        write_negative(buf, n as i64);
    }
}

/// As `rmp::encode::write_uint`.
fn write_uint(buf: &mut Vec<u8>, n: u64) {
    if n < 0x80 {
        buf.push(n as u8);
    } else if let Ok(n) = u8::try_from(n) {
        buf.extend_from_slice(&[0xcc, n]);
    } else if let Ok(n) = u16::try_from(n) {
        let [a, b] = n.to_be_bytes();
        buf.extend_from_slice(&[0xcd, a, b]);
    } else if let Ok(n) = u32::try_from(n) {
        let [a, b, c, d] = n.to_be_bytes();
        buf.extend_from_slice(&[0xce, a, b, c, d]);
    } else {
        let mut bytes = [0xcf; 9];
        bytes[1..].copy_from_slice(&n.to_be_bytes());
        buf.extend_from_slice(&bytes);
    }
}

/// As `rmp::encode::write_sint` for a negative integer.
fn write_negative(buf: &mut Vec<u8>, n: i64) {
    if n >= -32 {
        buf.push(n as u8);
    } else if let Ok(n) = i8::try_from(n) {
        buf.extend_from_slice(&[0xd0, n as u8]);
    } else if let Ok(n) = i16::try_from(n) {
        let [a, b] = n.to_be_bytes();
        buf.extend_from_slice(&[0xd1, a, b]);
    } else if let Ok(n) = i32::try_from(n) {
        let [a, b, c, d] = n.to_be_bytes();
        buf.extend_from_slice(&[0xd2, a, b, c, d]);
    } else {
        let mut bytes = [0xd3; 9];
        bytes[1..].copy_from_slice(&n.to_be_bytes());
        buf.extend_from_slice(&bytes);
    }
}
