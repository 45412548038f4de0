//! Finding where one MessagePack value ends in a byte stream.
//!
//! arrpc frames messages the way the Python arrpc package does: back-to-back
//! MessagePack values with no length prefix. MessagePack is self-delimiting,
//! so a reader walks the value's markers to learn its length. [`Scanner`]
//! does that incrementally: it remembers how far it got and which containers
//! are still open, so a value arriving in many small reads is walked once,
//! not once per read, and nothing is allocated beyond the open-container
//! stack.

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

/// What a marker byte says about the value it starts.
#[derive(Clone, Copy)]
enum Class {
    /// A value of this many bytes, marker included: nil, a boolean, a
    /// number, a fixext.
    Fixed(u8),
    /// A str of this many bytes after the marker.
    FixStr(u8),
    /// A str, bin or ext whose length follows the marker in `width` bytes;
    /// `extra` more header bytes follow it (an ext's type).
    Sized { width: u8, extra: u8, utf8: bool },
    /// An array or map of this many items (a map's keys and values both
    /// count), given in the marker.
    Items(u8),
    /// An array or map whose entry count follows in `width` bytes; each
    /// entry is `per_entry` items.
    Counted { width: u8, per_entry: u8 },
    /// 0xc1.
    Reserved,
}

const fn sized(width: u8, extra: u8, utf8: bool) -> Class {
    Class::Sized { width, extra, utf8 }
}

const fn counted(width: u8, per_entry: u8) -> Class {
    Class::Counted { width, per_entry }
}

const fn classify(marker: u8) -> Class {
    match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Class::Fixed(1),
        0x80..=0x8f => Class::Items(2 * (marker & 0x0f)),
        0x90..=0x9f => Class::Items(marker & 0x0f),
        0xa0..=0xbf => Class::FixStr(marker & 0x1f),
        0xc1 => Class::Reserved,
        0xc4 => sized(1, 0, false),
        0xc5 => sized(2, 0, false),
        0xc6 => sized(4, 0, false),
        0xc7 => sized(1, 1, false),
        0xc8 => sized(2, 1, false),
        0xc9 => sized(4, 1, false),
        0xcc | 0xd0 => Class::Fixed(2),
        0xcd | 0xd1 | 0xd4 => Class::Fixed(3),
        0xd5 => Class::Fixed(4),
        0xca | 0xce | 0xd2 => Class::Fixed(5),
        0xd6 => Class::Fixed(6),
        0xcb | 0xcf | 0xd3 => Class::Fixed(9),
        0xd7 => Class::Fixed(10),
        0xd8 => Class::Fixed(18),
        0xd9 => sized(1, 0, true),
        0xda => sized(2, 0, true),
        0xdb => sized(4, 0, true),
        0xdc => counted(2, 1),
        0xdd => counted(4, 1),
        0xde => counted(2, 2),
        0xdf => counted(4, 2),
    }
}

/// Every marker's class, looked up once per value.
static CLASSES: [Class; 256] = {
    let mut classes = [Class::Reserved; 256];
    let mut marker = 0;
    while marker < 256 {
        classes[marker] = classify(marker as u8);
        marker += 1;
    }
    classes
};

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
        // Bytes a run of scalars may take: those buffered, under the limit.
        let room = buf.len().min(self.limit);
        loop {
            if let Some(left) = self.open.last_mut() {
                let (pos, rest) = skip_scalars(buf, room, self.pos, *left);
                self.pos = pos;
                *left = rest;
                if rest == 0 {
                    // The container itself is a whole value that ended.
                    self.open.pop();
                    if self.value_ended() {
                        return Ok(Some(self.finish()));
                    }
                    continue;
                }
            }
            // Whatever the run stopped at (a container, a longer string, the
            // end of the bytes, a value too large or malformed) is read here.
            let Some(&head) = buf.get(self.pos) else {
                return self.incomplete(buf);
            };
            let (header, body, items) = match CLASSES[usize::from(head)] {
                Class::Fixed(size) => (usize::from(size), 0, 0),
                Class::FixStr(len) => (1, u64::from(len), 0),
                Class::Items(n) => (1, 0, u64::from(n)),
                Class::Sized { width, extra, .. } => match self.length(buf, width) {
                    Some(n) => (1 + usize::from(width + extra), n, 0),
                    None => return self.incomplete(buf),
                },
                Class::Counted { width, per_entry } => match self.length(buf, width) {
                    Some(n) => (1 + usize::from(width), 0, u64::from(per_entry) * n),
                    None => return self.incomplete(buf),
                },
                Class::Reserved => return Err(self.malformed("0xc1 is never used")),
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
            let is_str = matches!(
                CLASSES[usize::from(head)],
                Class::FixStr(_) | Class::Sized { utf8: true, .. }
            );
            if is_str && !is_utf8(&buf[self.pos + header..end]) {
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
            if self.value_ended() {
                return Ok(Some(self.finish()));
            }
        }
    }

    /// Counts a whole value as read: it may close the containers around
    /// it. True when it completed the outermost value.
    fn value_ended(&mut self) -> bool {
        while let Some(left) = self.open.last_mut() {
            *left -= 1;
            if *left > 0 {
                return false;
            }
            self.open.pop();
        }
        true
    }

    /// The length of the value just completed; the scanner starts over.
    fn finish(&mut self) -> usize {
        std::mem::take(&mut self.pos)
    }

    /// Big-endian length field of `width` bytes right after the marker.
    fn length(&self, buf: &[u8], width: u8) -> Option<u64> {
        let start = self.pos + 1;
        let field = buf.get(start..start + usize::from(width))?;
        Some(field.iter().fold(0u64, |n, b| n << 8 | u64::from(*b)))
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

/// Walks up to `left` items from `pos` while each is a number, nil, a
/// boolean, a fixext or a short valid str lying wholly in `buf[..room]`,
/// with no bookkeeping per item: the bulk of most messages. Returns where
/// it stopped and how many items are still expected; anything else (the
/// end of the room included) is left to the general path, which refuses
/// or waits exactly as it would have.
fn skip_scalars(buf: &[u8], room: usize, mut pos: usize, mut left: u64) -> (usize, u64) {
    while left > 0 {
        let Some(&head) = buf.get(pos) else { break };
        match CLASSES[usize::from(head)] {
            Class::Fixed(size) => {
                if pos + usize::from(size) > room {
                    break;
                }
                // Items of one size in a row (an array of uint 16s, say):
                // where the next one starts does not wait on reading this
                // one's marker, so the walk is not one long chain of loads.
                loop {
                    pos += usize::from(size);
                    left -= 1;
                    if left == 0
                        || pos + usize::from(size) > room
                        || !matches!(CLASSES[usize::from(buf[pos])], Class::Fixed(next) if next == size)
                    {
                        break;
                    }
                }
            }
            Class::FixStr(len) => {
                let end = pos + 1 + usize::from(len);
                if end > room || !is_utf8(&buf[pos + 1..end]) {
                    break;
                }
                pos = end;
                left -= 1;
            }
            _ => break,
        }
    }
    (pos, left)
}

/// Whether `text` is UTF-8; most strings in messages are short and ASCII,
/// checked inline without a call.
#[inline]
fn is_utf8(text: &[u8]) -> bool {
    text.is_ascii() || std::str::from_utf8(text).is_ok()
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
    fn runs_of_numbers_resume_mid_item_and_stop_at_the_limit() {
        // [1000, 1001, ..., 1099, "é", 7]: uint 16s, a str, a fixint.
        let mut v = vec![0xdc, 0, 102];
        for n in 1000u16..1100 {
            v.push(0xcd);
            v.extend(n.to_be_bytes());
        }
        v.extend([0xa2, 0xc3, 0xa9, 0x07]);
        let mut s = Scanner::new(1 << 20);
        for end in 1..v.len() {
            assert_eq!(s.scan(&v[..end]), Ok(None), "at {end}");
        }
        assert_eq!(s.scan(&v), Ok(Some(v.len())));
        // One byte short of the limit fails where the last item would end.
        let short = v.len() - 1;
        assert_eq!(
            Scanner::new(short).scan(&v),
            Err(FrameError::TooLarge { limit: short })
        );
        let mut bad = v.clone();
        bad[v.len() - 3] = 0xff;
        assert_eq!(
            whole(&bad),
            Err(FrameError::Malformed {
                offset: v.len() - 4,
                reason: "string is not valid UTF-8"
            })
        );
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
