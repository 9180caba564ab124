//! Little-endian primitive encoding shared by every Basalt structure
//! (FORMAT.md, "Conventions").

use crate::error::{Error, Result};

/// Appends little-endian primitives to a byte vector.
#[derive(Default, Debug)]
pub struct Encoder {
    pub buf: Vec<u8>,
}

impl Encoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        Encoder {
            buf: Vec::with_capacity(n),
        }
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn i128(&mut self, v: i128) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A u32 length followed by the bytes.
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
    }

    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    pub fn raw(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    /// Zero bytes up to the next multiple of `align`.
    pub fn pad_to(&mut self, align: usize) {
        let rem = self.buf.len() % align;
        if rem != 0 {
            self.buf.resize(self.buf.len() + align - rem, 0);
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads little-endian primitives from a slice; every read is bounds-checked and
/// reports the offset it failed at.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Decoder { data, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::corrupt(
                self.pos,
                format!("need {n} bytes, {} left", self.remaining()),
            ));
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    pub fn i128(&mut self) -> Result<i128> {
        Ok(i128::from_le_bytes(self.array()?))
    }

    pub fn bool(&mut self) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.error_before(1, format!("invalid boolean byte {other}"))),
        }
    }

    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    pub fn str(&mut self) -> Result<&'a str> {
        let start = self.pos;
        let raw = self.bytes()?;
        std::str::from_utf8(raw).map_err(|_| Error::corrupt(start, "string is not UTF-8"))
    }

    /// A count that must fit in what is left, given each element takes at least
    /// `min_element_size` bytes: stops a corrupt count from driving a huge allocation.
    pub fn count(&mut self, min_element_size: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_element_size.max(1)) > self.remaining() {
            return Err(self.error_before(4, format!("count {n} exceeds the remaining bytes")));
        }
        Ok(n)
    }

    pub fn skip_to_alignment(&mut self, align: usize) -> Result<()> {
        let rem = self.pos % align;
        if rem != 0 {
            self.take(align - rem)?;
        }
        Ok(())
    }

    pub fn error(&self, reason: impl Into<String>) -> Error {
        Error::corrupt(self.pos, reason)
    }

    fn error_before(&self, width: usize, reason: impl Into<String>) -> Error {
        Error::corrupt(self.pos - width, reason)
    }

    pub fn expect_end(&self, what: &str) -> Result<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self.error(format!("{} trailing bytes after {what}", self.remaining())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_round_trip() {
        let mut e = Encoder::new();
        e.u8(7);
        e.u16(0xBEEF);
        e.u32(0xDEAD_BEEF);
        e.u64(u64::MAX - 1);
        e.i64(-5);
        e.i128(-(1i128 << 100));
        e.str("basalt");
        e.pad_to(16);
        assert_eq!(e.len() % 16, 0);
        let bytes = e.into_inner();
        let mut d = Decoder::new(&bytes);
        assert_eq!(d.u8().unwrap(), 7);
        assert_eq!(d.u16().unwrap(), 0xBEEF);
        assert_eq!(d.u32().unwrap(), 0xDEAD_BEEF);
        assert_eq!(d.u64().unwrap(), u64::MAX - 1);
        assert_eq!(d.i64().unwrap(), -5);
        assert_eq!(d.i128().unwrap(), -(1i128 << 100));
        assert_eq!(d.str().unwrap(), "basalt");
        d.skip_to_alignment(16).unwrap();
        d.expect_end("test").unwrap();
    }

    #[test]
    fn short_input_reports_offset() {
        let mut d = Decoder::new(&[1, 2, 3]);
        d.u8().unwrap();
        let err = d.u32().unwrap_err();
        assert_eq!(err.offset(), Some(1));
    }

    #[test]
    fn corrupt_count_is_refused() {
        let mut e = Encoder::new();
        e.u32(1_000_000);
        let bytes = e.into_inner();
        assert!(Decoder::new(&bytes).count(1).is_err());
    }
}
