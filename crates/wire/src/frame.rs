//! Finding where one MessagePack value ends in a byte stream.
//!
//! arrpc frames messages the way the Python arrpc package does: back-to-back
//! MessagePack values with no length prefix. MessagePack is self-delimiting,
//! so a reader walks the value's markers to learn its length. [`Scanner`]
//! does that incrementally: it remembers how far it got and which containers
//! are still open, so a value arriving in many small reads is walked once,
//! not once per read, and nothing is allocated beyond the open-container
//! stack.

use rmp::Marker;

/// Deepest nesting of arrays and maps accepted in one message.
///
/// Bounds the scanner's stack and protects handlers whose decoders recurse.
pub const MAX_DEPTH: usize = 512;

/// Why a byte stream is not a usable MessagePack value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("malformed MessagePack at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: &'static str },
    #[error("message larger than the {limit}-byte limit")]
    TooLarge { limit: usize },
}

/// Incremental walker over one MessagePack value at the start of a buffer.
///
/// Call [`Scanner::scan`] with the buffered bytes each time more arrive; the
/// buffer must keep its earlier bytes in place until a value is complete.
#[derive(Debug)]
pub struct Scanner {
    /// Bytes of the current value already walked.
    pos: usize,
    /// Items still expected by each open array or map, innermost last.
    open: Vec<u64>,
    /// Largest value accepted, in bytes.
    limit: usize,
}

impl Scanner {
    pub fn new(limit: usize) -> Self {
        Scanner {
            pos: 0,
            open: Vec::new(),
            limit,
        }
    }

    /// The size limit this scanner enforces.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Walks on from where the last call stopped.
    ///
    /// Returns `Ok(Some(len))` once `buf[..len]` holds one whole value (and
    /// resets for the next value), `Ok(None)` while more bytes are needed.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        loop {
            let Some(head) = buf.get(self.pos) else {
                return self.incomplete(buf);
            };
            let (header, body, items) = match Marker::from_u8(*head) {
                Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null => (1, 0, 0),
                Marker::True | Marker::False => (1, 0, 0),
                Marker::U8 | Marker::I8 => (2, 0, 0),
                Marker::U16 | Marker::I16 => (3, 0, 0),
                Marker::U32 | Marker::I32 | Marker::F32 => (5, 0, 0),
                Marker::U64 | Marker::I64 | Marker::F64 => (9, 0, 0),
                Marker::FixStr(n) => (1, u64::from(n), 0),
                Marker::Str8 | Marker::Bin8 => match self.length(buf, 1)? {
                    Some(n) => (2, n, 0),
                    None => return self.incomplete(buf),
                },
                Marker::Str16 | Marker::Bin16 => match self.length(buf, 2)? {
                    Some(n) => (3, n, 0),
                    None => return self.incomplete(buf),
                },
                Marker::Str32 | Marker::Bin32 => match self.length(buf, 4)? {
                    Some(n) => (5, n, 0),
                    None => return self.incomplete(buf),
                },
                Marker::FixExt1 => (2, 1, 0),
                Marker::FixExt2 => (2, 2, 0),
                Marker::FixExt4 => (2, 4, 0),
                Marker::FixExt8 => (2, 8, 0),
                Marker::FixExt16 => (2, 16, 0),
                Marker::Ext8 => match self.length(buf, 1)? {
                    Some(n) => (3, n, 0),
                    None => return self.incomplete(buf),
                },
                Marker::Ext16 => match self.length(buf, 2)? {
                    Some(n) => (4, n, 0),
                    None => return self.incomplete(buf),
                },
                Marker::Ext32 => match self.length(buf, 4)? {
                    Some(n) => (6, n, 0),
                    None => return self.incomplete(buf),
                },
                Marker::FixArray(n) => (1, 0, u64::from(n)),
                Marker::FixMap(n) => (1, 0, 2 * u64::from(n)),
                Marker::Array16 | Marker::Map16 | Marker::Array32 | Marker::Map32 => {
                    let width = match Marker::from_u8(*head) {
                        Marker::Array16 | Marker::Map16 => 2,
                        _ => 4,
                    };
                    let Some(n) = self.length(buf, width)? else {
                        return self.incomplete(buf);
                    };
                    let per_entry = match Marker::from_u8(*head) {
                        Marker::Map16 | Marker::Map32 => 2,
                        _ => 1,
                    };
                    (1 + width, 0, per_entry * n)
                }
                Marker::Reserved => return Err(self.malformed("0xc1 is never used")),
            };
            let end = self.pos as u64 + header as u64 + body;
            // Every item takes at least one byte, so a count that cannot fit
            // under the limit is refused before any of it arrives.
            if end.saturating_add(items) > self.limit as u64 {
                return Err(FrameError::TooLarge { limit: self.limit });
            }
            if (buf.len() as u64) < end {
                return self.incomplete(buf);
            }
            let end = end as usize;
            if matches!(
                Marker::from_u8(*head),
                Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32
            ) && std::str::from_utf8(&buf[self.pos + header..end]).is_err()
            {
                return Err(self.malformed("string is not valid UTF-8"));
            }
            self.pos = end;
            if items > 0 {
                if self.open.len() == MAX_DEPTH {
                    return Err(self.malformed("nested deeper than the depth limit"));
                }
                self.open.push(items);
                continue;
            }
            // A whole value ended: it may close the containers around it.
            while let Some(left) = self.open.last_mut() {
                *left -= 1;
                if *left > 0 {
                    break;
                }
                self.open.pop();
            }
            if self.open.is_empty() {
                let len = self.pos;
                self.pos = 0;
                return Ok(Some(len));
            }
        }
    }

    /// Big-endian length field of `width` bytes right after the marker.
    fn length(&self, buf: &[u8], width: usize) -> Result<Option<u64>, FrameError> {
        let start = self.pos + 1;
        let Some(field) = buf.get(start..start + width) else {
            return Ok(None);
        };
        Ok(Some(field.iter().fold(0u64, |n, b| n << 8 | u64::from(*b))))
    }

    fn incomplete(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        if buf.len() > self.limit {
            return Err(FrameError::TooLarge { limit: self.limit });
        }
        Ok(None)
    }

    fn malformed(&self, reason: &'static str) -> FrameError {
        FrameError::Malformed {
            offset: self.pos,
            reason,
        }
    }
}

/// Length of the single MessagePack value at the start of `buf`, or `None`
/// when `buf` does not begin with a whole, well-formed value.
pub fn value_len(buf: &[u8]) -> Option<usize> {
    Scanner::new(buf.len()).scan(buf).ok().flatten()
}

/// Whether `buf` is exactly one well-formed MessagePack value.
pub fn is_single_value(buf: &[u8]) -> bool {
    value_len(buf) == Some(buf.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(buf: &[u8]) -> Result<Option<usize>, FrameError> {
        Scanner::new(1 << 20).scan(buf)
    }

    #[test]
    fn scalars_and_containers_have_their_encoded_length() {
        // {"a": [1, -1, 300, 1.5, nil, true, "xyz", bin(2)]}
        let mut v = vec![0x81, 0xa1, b'a', 0x98];
        v.extend([0x01, 0xff, 0xcd, 0x01, 0x2c]);
        v.extend([0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]);
        v.extend([0xc0, 0xc3, 0xa3, b'x', b'y', b'z', 0xc4, 0x02, 9, 9]);
        assert_eq!(whole(&v), Ok(Some(v.len())));
        let mut two = v.clone();
        two.extend_from_slice(&v);
        assert_eq!(whole(&two), Ok(Some(v.len())));
    }

    #[test]
    fn empty_containers_and_falsy_values_are_whole_values() {
        for v in [&[0x80][..], &[0x90], &[0xa0], &[0xc0], &[0xc2], &[0x00]] {
            assert_eq!(whole(v), Ok(Some(1)), "{v:?}");
        }
    }

    #[test]
    fn byte_at_a_time_resumes_and_finds_the_same_end() {
        let mut v = vec![0x92, 0xda, 0x01, 0x00];
        v.extend(std::iter::repeat_n(b'q', 256));
        v.extend([0x82, 0xa1, b'k', 0x90, 0xa1, b'l', 0xd6, 1, 1, 2, 3, 4]);
        let mut s = Scanner::new(1 << 20);
        for end in 1..v.len() {
            assert_eq!(s.scan(&v[..end]), Ok(None), "at {end}");
        }
        assert_eq!(s.scan(&v), Ok(Some(v.len())));
        // The scanner is ready for the next value.
        assert_eq!(s.scan(&[0x01]), Ok(Some(1)));
    }

    #[test]
    fn reserved_marker_and_bad_utf8_are_malformed() {
        assert!(matches!(whole(&[0xc1]), Err(FrameError::Malformed { .. })));
        assert!(matches!(
            whole(&[0x91, 0xa2, 0xff, 0xfe]),
            Err(FrameError::Malformed { offset: 1, .. })
        ));
    }

    #[test]
    fn declared_sizes_over_the_limit_fail_before_the_bytes_arrive() {
        let mut s = Scanner::new(100);
        assert_eq!(
            s.scan(&[0xc6, 0, 0, 1, 0]),
            Err(FrameError::TooLarge { limit: 100 })
        );
        let mut s = Scanner::new(100);
        assert_eq!(
            s.scan(&[0xdd, 0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::TooLarge { limit: 100 })
        );
        let mut s = Scanner::new(100);
        assert_eq!(s.scan(&[0xc4, 95]), Ok(None));
        let mut at_limit = vec![0xc4, 98];
        at_limit.extend([0; 98]);
        assert_eq!(Scanner::new(100).scan(&at_limit), Ok(Some(100)));
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = vec![0x91; MAX_DEPTH + 1];
        assert!(matches!(whole(&deep), Err(FrameError::Malformed { .. })));
        let mut ok = vec![0x91; MAX_DEPTH];
        ok.push(0x01);
        assert_eq!(whole(&ok), Ok(Some(ok.len())));
    }

    #[test]
    fn single_value_check_rejects_trailing_and_missing_bytes() {
        assert!(is_single_value(&[0x92, 1, 2]));
        assert!(!is_single_value(&[0x92, 1]));
        assert!(!is_single_value(&[1, 2]));
        assert!(!is_single_value(&[]));
    }
}
