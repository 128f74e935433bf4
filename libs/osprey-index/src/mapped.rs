//! A growable byte file on local disk, read through a memory map.
//!
//! What a large gallery holds per template but reads only a few rows of per
//! search (exact vectors for re-ranking, template and subject ids) lives in
//! an unlinked temporary file rather than on the heap: the pages it reads
//! are page cache, which the kernel can drop and read back, not resident
//! memory the process pins. Writes go through `pwrite`, so a full disk is
//! an error, not a fault in a mapped page; reads go through a read-only
//! map, which sees those writes (one page cache).

use std::os::unix::fs::FileExt;

use memmap2::Mmap;
use osprey_core::{Error, Result};

/// The smallest mapping made: small galleries remap rarely.
const MIN_MAP_BYTES: usize = 1 << 20;

/// Bytes in an unlinked temporary file (in `$TMPDIR`), mapped for reading.
pub(crate) struct MappedFile {
    /// What the file holds, for error messages.
    what: &'static str,
    file: std::fs::File,
    /// Maps the file's first `map.len()` bytes (the file is grown, sparse,
    /// ahead of what is written, so that appends rarely remap).
    map: Option<Mmap>,
    len: usize,
}

impl MappedFile {
    pub(crate) fn new(what: &'static str) -> Result<MappedFile> {
        let file = tempfile::tempfile().map_err(|e| Error::internal(format!("{what}: creating a local file: {e}")))?;
        Ok(MappedFile { what, file, map: None, len: 0 })
    }

    fn io(&self, doing: &str, e: std::io::Error) -> Error {
        Error::internal(format!("{}: {doing} its local file: {e}", self.what))
    }

    /// Bytes written so far (the highest end of any write).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Writes `bytes` at `offset`, growing the file as needed.
    pub(crate) fn write_at(&mut self, offset: usize, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.file.write_all_at(bytes, offset as u64).map_err(|e| self.io("writing", e))?;
        self.len = self.len.max(offset + bytes.len());
        if self.len > self.map.as_ref().map_or(0, |m| m.len()) {
            let capacity = self.len.next_power_of_two().max(MIN_MAP_BYTES);
            self.file.set_len(capacity as u64).map_err(|e| self.io("growing", e))?;
            // SAFETY: the file is private to this value (unlinked, never
            // shared) and never shrinks; writes go through `pwrite`, and no
            // slice handed out by `bytes` outlives a `&mut self` call.
            self.map = Some(unsafe { Mmap::map(&self.file) }.map_err(|e| self.io("mapping", e))?);
        }
        Ok(())
    }

    /// Appends `bytes`; where they start.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> Result<usize> {
        let offset = self.len;
        self.write_at(offset, bytes)?;
        Ok(offset)
    }

    /// The bytes written so far.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.map.as_ref().map_or(&[], |m| &m[..self.len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_grow_the_map_and_read_back() {
        let mut f = MappedFile::new("test").unwrap();
        assert!(f.bytes().is_empty());
        assert_eq!(f.append(b"abc").unwrap(), 0);
        assert_eq!(f.append(b"de").unwrap(), 3);
        assert_eq!(f.bytes(), b"abcde");
        // Past the first mapping, then over earlier bytes.
        let far = MIN_MAP_BYTES + 10;
        f.write_at(far, b"z").unwrap();
        assert_eq!(f.len(), far + 1);
        assert_eq!(&f.bytes()[far..], b"z");
        assert_eq!(f.bytes()[far - 1], 0);
        f.write_at(1, b"XY").unwrap();
        assert_eq!(&f.bytes()[..5], b"aXYde");
    }
}
