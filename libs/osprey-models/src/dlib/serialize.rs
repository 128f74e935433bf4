//! A reader for dlib's binary serialization (dlib/serialize.h), enough for the
//! DNN and shape-predictor files dlib ships.
//!
//! Encodings, as dlib writes them:
//! * integers: one control byte (bit 7 = sign, low nibble = byte count 1..8),
//!   then the magnitude, little-endian;
//! * `bool`: ASCII `'1'`/`'0'`;
//! * `float`/`double`: an integer mantissa then an integer exponent,
//!   value = mantissa·2^exponent (exponents 32000..32002 are ±inf and NaN);
//! * strings and vectors: a length, then the items;
//! * `matrix<T>`: −rows and −cols, then the items row-major;
//! * `resizable_tensor`: version 2, n, k, nr, nc, then raw little-endian f32.
//!
//! Every error names the file and the byte offset, so a truncated download or
//! a foreign file is reported as what it is.

use osprey_core::{Error, ErrorKind, Result};

/// A cursor over a dlib-serialized byte buffer.
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    name: String,
}

/// A dense float tensor in NCHW order, as dlib stores network parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: [usize; 4],
    pub data: Vec<f32>,
}

impl Tensor {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }
    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`; `name` (usually the file path) appears in errors.
    pub fn new(bytes: &'a [u8], name: impl Into<String>) -> Self {
        Self { bytes, pos: 0, name: name.into() }
    }

    /// Byte offset of the next read.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Goes back to an offset read earlier (to re-read a value as another type).
    pub fn rewind(&mut self, pos: usize) {
        self.pos = pos.min(self.pos);
    }

    /// True when every byte has been consumed.
    pub fn at_end(&self) -> bool {
        self.pos == self.bytes.len()
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// A `Corrupt` error at the current offset.
    pub fn error(&self, what: impl std::fmt::Display) -> Error {
        Error::new(ErrorKind::Corrupt, format!("{}: byte {}: {what}", self.name, self.pos))
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(self.error(format_args!(
                "file ends while reading {what} ({n} bytes needed, {} left); is the file truncated?",
                self.remaining()
            )));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// A raw byte (`char`, `uint8_t`).
    pub fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1, "a byte")?[0])
    }

    /// Any integer type; the caller checks the range.
    pub fn int(&mut self) -> Result<i64> {
        let start = self.pos;
        let control = self.byte()?;
        if control & 0x70 != 0 {
            self.pos = start;
            return Err(self.error(format_args!("0x{control:02x} is not an integer's control byte")));
        }
        let n = (control & 0x0f) as usize;
        if n == 0 || n > 8 {
            self.pos = start;
            return Err(self.error(format_args!("integer with {n} bytes")));
        }
        let mut magnitude: u64 = 0;
        for (i, b) in self.take(n, "an integer")?.iter().enumerate() {
            magnitude |= (*b as u64) << (8 * i);
        }
        if control & 0x80 != 0 {
            if magnitude > i64::MAX as u64 + 1 {
                return Err(self.error("negative integer out of range"));
            }
            Ok((magnitude as i64).wrapping_neg())
        } else {
            i64::try_from(magnitude).map_err(|_| self.error("integer out of range"))
        }
    }

    /// A non-negative integer that must fit `max` (sizes, counts, indices).
    pub fn size(&mut self, what: &str, max: u64) -> Result<usize> {
        let start = self.pos;
        let v = self.int()?;
        if v < 0 || v as u64 > max {
            self.pos = start;
            return Err(self.error(format_args!("{what} = {v} is out of range 0..={max}")));
        }
        Ok(v as usize)
    }

    /// An `int` that must equal `expected` (dlib's version numbers).
    pub fn expect_int(&mut self, expected: i64, what: &str) -> Result<()> {
        let start = self.pos;
        let v = self.int()?;
        if v != expected {
            self.pos = start;
            return Err(self.error(format_args!("expected {what} {expected}, found {v}")));
        }
        Ok(())
    }

    /// A `bool`.
    pub fn boolean(&mut self) -> Result<bool> {
        match self.byte()? {
            b'1' => Ok(true),
            b'0' => Ok(false),
            other => {
                self.pos -= 1;
                Err(self.error(format_args!("0x{other:02x} is not a serialized bool")))
            }
        }
    }

    /// A `double` (also used for `float`, which dlib writes the same way).
    pub fn double(&mut self) -> Result<f64> {
        let start = self.pos;
        let first = *self.bytes.get(self.pos).ok_or_else(|| self.error("file ends while reading a float"))?;
        if first & 0x70 != 0 {
            return Err(self.error("old-style ASCII float; re-save the model with a current dlib"));
        }
        let mantissa = self.int()?;
        let exponent = self.int()?;
        Ok(match exponent {
            32000 => f64::INFINITY,
            32001 => f64::NEG_INFINITY,
            32002 => f64::NAN,
            e if (-1100..=1100).contains(&e) => mantissa as f64 * (e as f64).exp2(),
            e => {
                self.pos = start;
                return Err(self.error(format_args!("float exponent {e} out of range")));
            }
        })
    }

    /// A `float`.
    pub fn float(&mut self) -> Result<f32> {
        Ok(self.double()? as f32)
    }

    /// A `std::string` of at most `max` bytes.
    pub fn string(&mut self, max: usize) -> Result<String> {
        let start = self.pos;
        let n = self.size("string length", max as u64)?;
        let raw = self.take(n, "a string")?;
        String::from_utf8(raw.to_vec()).map_err(|_| {
            self.pos = start;
            self.error("string is not UTF-8")
        })
    }

    /// A version string that must be one of `accepted`.
    pub fn tag(&mut self, accepted: &[&str], what: &str) -> Result<String> {
        let start = self.pos;
        let s = self.string(64).map_err(|e| e.context(format!("reading the {what} tag")))?;
        if !accepted.contains(&s.as_str()) {
            self.pos = start;
            return Err(self.error(format_args!("expected {what} ({}), found {s:?}", accepted.join(" or "))));
        }
        Ok(s)
    }

    /// A `dlib::matrix<float>`; returns (rows, cols, row-major data).
    pub fn matrix_f32(&mut self) -> Result<(usize, usize, Vec<f32>)> {
        let start = self.pos;
        let nr = -self.int()?;
        let nc = -self.int()?;
        if nr < 0 || nc < 0 || nr.saturating_mul(nc) > (self.remaining() as i64) {
            self.pos = start;
            return Err(self.error(format_args!("matrix of {nr}x{nc} does not fit the file")));
        }
        let mut data = Vec::with_capacity((nr * nc) as usize);
        for _ in 0..nr * nc {
            data.push(self.float()?);
        }
        Ok((nr as usize, nc as usize, data))
    }

    /// A `resizable_tensor` (shape, then raw float32 data).
    pub fn tensor(&mut self) -> Result<Tensor> {
        self.expect_int(2, "tensor version")?;
        let mut shape = [0usize; 4];
        for d in &mut shape {
            *d = self.size("tensor dimension", 1 << 31)?;
        }
        let n =
            shape.iter().try_fold(1usize, |a, d| a.checked_mul(*d)).ok_or_else(|| self.error("tensor too large"))?;
        let raw = self.take(n.checked_mul(4).ok_or_else(|| self.error("tensor too large"))?, "tensor data")?;
        let data = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        Ok(Tensor { shape, data })
    }

    /// An `alias_tensor` (version 1 then n, k, nr, nc; no data).
    pub fn alias_tensor(&mut self) -> Result<[usize; 4]> {
        self.expect_int(1, "alias_tensor version")?;
        let mut shape = [0usize; 4];
        for d in &mut shape {
            *d = self.size("alias_tensor dimension", 1 << 31)?;
        }
        Ok(shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_floats_decode_as_dlib_writes_them() {
        let mut r = Reader::new(&[0x01, 0x00, 0x01, 0x02, 0x81, 0x0a, 0x02, 0x34, 0x12], "t");
        assert_eq!(r.int().unwrap(), 0);
        assert_eq!(r.int().unwrap(), 2);
        assert_eq!(r.int().unwrap(), -10);
        assert_eq!(r.int().unwrap(), 0x1234);
        assert!(r.at_end());
        let mut r = Reader::new(&[0x01, 0x10, 0x81, 0x04], "t");
        assert_eq!(r.double().unwrap(), 1.0);
        let mut r = Reader::new(&[0x01, 0x00, 0x02, 0x00, 0x7d], "t");
        assert_eq!(r.double().unwrap(), f64::INFINITY);
    }

    #[test]
    fn truncation_and_foreign_bytes_are_corrupt_errors_with_offsets() {
        let mut r = Reader::new(&[0x02, 0x34], "model.dat");
        let e = r.int().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(e.message().contains("model.dat: byte 1") && e.message().contains("truncated"), "{e}");
        let mut r = Reader::new(b"PK\x03\x04", "x.zip");
        assert!(r.int().unwrap_err().message().contains("not an integer"));
        let mut r = Reader::new(&[0x01, 0x05, b'h', b'i'], "s");
        assert!(r.string(10).is_err());
    }

    #[test]
    fn tensors_read_raw_little_endian_floats() {
        let mut bytes = vec![0x01, 0x02, 0x01, 0x01, 0x01, 0x02, 0x01, 0x01, 0x01, 0x01];
        bytes.extend(1.5f32.to_le_bytes());
        bytes.extend((-2.0f32).to_le_bytes());
        let t = Reader::new(&bytes, "t").tensor().unwrap();
        assert_eq!(t.shape, [1, 2, 1, 1]);
        assert_eq!(t.data, vec![1.5, -2.0]);
    }
}
