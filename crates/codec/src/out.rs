//! MessagePack written as it is read from a format that gives a
//! container's length only at its end (a marshal dict, JSON).

use rmp::encode;

/// A writer that leaves a container's header blank until its end, then
/// writes every header at its shortest in one final pass, so writing stays
/// linear however deep the containers nest.
#[derive(Default)]
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

    /// The bytes, every header written in place of its blank.
    pub fn finish(self) -> Vec<u8> {
        let mut done = Vec::with_capacity(self.buf.len());
        let mut from = 0;
        for header in self.headers {
            done.extend_from_slice(&self.buf[from..header.at]);
            if header.map {
                encode::write_map_len(&mut done, header.len).expect("writes to a Vec");
            } else {
                encode::write_array_len(&mut done, header.len).expect("writes to a Vec");
            }
            from = header.at + BLANK;
        }
        done.extend_from_slice(&self.buf[from..]);
        done
    }
}

/// Writes an integer at its shortest, as msgpack-python and
/// `@msgpack/msgpack` both do: unsigned formats for values from 0, signed
/// ones below. The caller has checked that it fits `i64` or `u64`.
pub fn write_int(buf: &mut Vec<u8>, n: i128) {
    if n >= 0 {
        encode::write_uint(buf, n as u64).expect("writes to a Vec");
    } else {
        encode::write_sint(buf, n as i64).expect("writes to a Vec");
    }
}
