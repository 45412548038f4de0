//! Reading bytes in order, for both formats read here: running out is an
//! error that names the format.

use crate::Error;

pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// What the bytes are, for the error when they end too soon.
    what: &'static str,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Cursor<'a> {
        Cursor { buf, pos: 0, what }
    }

    pub fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    #[inline]
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let Some(bytes) = self.buf[self.pos..].get(..n) else {
            return Err(self.cut_short());
        };
        self.pos += n;
        Ok(bytes)
    }

    /// Kept out of line: reading stays small where the bytes are there.
    #[cold]
    fn cut_short(&self) -> Error {
        Error::new(format!("{} cut short", self.what))
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }
}
