//! The exact vectors beside a compressed index, for re-ranking.
//!
//! A product-quantised index keeps a few bytes per template in memory and
//! ranks by approximate scores. To give back exact cosine similarities (and
//! the order they imply) a gallery with re-ranking keeps every template's
//! float vector in a file on local disk, memory-mapped: reading the few
//! hundred rows a search re-ranks costs page-cache reads, not resident
//! memory. Row `i` holds the template with FAISS id `i` (ids are assigned in
//! order and never reused), so a lookup is one offset.
//!
//! On the object store the rows are kept in fixed-size chunks,
//! `galleries/<name>/vectors/<chunk>.f32` (little-endian `f32`, row-major),
//! written when they change; a chunk is the unit a save rewrites, so adding
//! templates rewrites only the chunks they landed in, and erasing a subject
//! zeroes its rows and rewrites theirs (the vectors do not outlive the
//! right to erasure).

use std::collections::BTreeSet;

use bytes::Bytes;
use osprey_core::{Error, ErrorKind, Result};
use osprey_store::{Root, layout};

use crate::mapped::MappedFile;

#[cfg(not(target_endian = "little"))]
compile_error!("the vector store maps little-endian f32 rows directly");

/// Bytes a stored chunk aims at (its rows: this over the row width).
const CHUNK_BYTES: usize = 32 << 20;

/// Rows per stored chunk for vectors of width `dim`.
pub(crate) fn chunk_rows_for(dim: usize) -> usize {
    (CHUNK_BYTES / (4 * dim.max(1))).max(1)
}

fn chunk_key(gallery: &str, chunk: usize) -> String {
    format!("{}/vectors/{chunk:06}.f32", layout::gallery_dir(gallery))
}

/// Float vectors by FAISS id in a memory-mapped local file.
pub(crate) struct VectorStore {
    dim: usize,
    chunk_rows: usize,
    /// Row-major little-endian `f32`s.
    file: MappedFile,
    /// Rows in the file (the next FAISS id).
    rows: usize,
    /// Chunks changed since the last save.
    dirty: BTreeSet<usize>,
}

/// The bytes of `floats` (the store is little-endian, as checked above).
fn as_bytes(floats: &[f32]) -> &[u8] {
    // SAFETY: any f32 memory is valid as bytes; u8 has no alignment.
    unsafe { std::slice::from_raw_parts(floats.as_ptr().cast::<u8>(), std::mem::size_of_val(floats)) }
}

impl VectorStore {
    pub(crate) fn new(dim: usize, chunk_rows: usize) -> Result<VectorStore> {
        let file = MappedFile::new("vector store")?;
        Ok(VectorStore { dim, chunk_rows: chunk_rows.max(1), file, rows: 0, dirty: BTreeSet::new() })
    }

    /// Writes `vectors` (rows of `dim`) as ids `first..`.
    pub(crate) fn put(&mut self, first: usize, vectors: &[f32]) -> Result<()> {
        debug_assert_eq!(vectors.len() % self.dim, 0);
        let n = vectors.len() / self.dim;
        if n == 0 {
            return Ok(());
        }
        self.file.write_at(first * self.dim * 4, as_bytes(vectors))?;
        self.rows = self.rows.max(first + n);
        self.dirty.extend(first / self.chunk_rows..=(first + n - 1) / self.chunk_rows);
        Ok(())
    }

    /// The row of id `id`, if stored.
    pub(crate) fn row(&self, id: i64) -> Option<&[f32]> {
        let id = usize::try_from(id).ok().filter(|id| *id < self.rows)?;
        let bytes = self.file.bytes().get(id * self.dim * 4..(id + 1) * self.dim * 4)?;
        // SAFETY: the map is page-aligned and rows start at multiples of 4
        // bytes, so the cast is aligned; every bit pattern is a valid f32.
        let (head, floats, tail) = unsafe { bytes.align_to::<f32>() };
        (head.is_empty() && tail.is_empty()).then_some(floats)
    }

    /// Overwrites the rows of `ids` with zeros (erasure).
    pub(crate) fn zero(&mut self, ids: &[i64]) -> Result<()> {
        let zeros = vec![0u8; self.dim * 4];
        for &id in ids {
            let Ok(id) = usize::try_from(id) else { continue };
            if id < self.rows {
                self.file.write_at(id * self.dim * 4, &zeros)?;
                self.dirty.insert(id / self.chunk_rows);
            }
        }
        Ok(())
    }

    /// Writes the chunks changed since the last save under gallery `name`.
    pub(crate) async fn save(&mut self, root: &Root, name: &str) -> Result<()> {
        let chunks: Vec<usize> = self.dirty.iter().copied().collect();
        let row_bytes = self.dim * 4;
        for chunk in chunks {
            let start = chunk * self.chunk_rows;
            let end = ((chunk + 1) * self.chunk_rows).min(self.rows);
            if start >= end {
                continue;
            }
            let Some(bytes) = self.file.bytes().get(start * row_bytes..end * row_bytes) else { continue };
            let bytes = Bytes::copy_from_slice(bytes);
            root.put(&chunk_key(name, chunk), bytes).await?;
        }
        self.dirty.clear();
        Ok(())
    }

    /// Reads `rows` rows of gallery `name`'s stored chunks into a new
    /// local file.
    pub(crate) async fn load(root: &Root, name: &str, dim: usize, rows: usize, chunk_rows: usize) -> Result<Self> {
        let mut store = VectorStore::new(dim, chunk_rows)?;
        let row_bytes = dim * 4;
        for chunk in 0..rows.div_ceil(store.chunk_rows) {
            let key = chunk_key(name, chunk);
            let start = chunk * store.chunk_rows;
            let want = ((chunk + 1) * store.chunk_rows).min(rows) - start;
            let bytes = root.get(&key).await.map_err(|e| match e.kind() {
                ErrorKind::NotFound => Error::new(
                    ErrorKind::Corrupt,
                    format!("gallery `{name}` re-ranks but its vector chunk `{}` is missing", root.url_of(&key)),
                ),
                _ => e,
            })?;
            // A chunk may hold more rows than the manifest counts (written by
            // a save that did not reach its manifest); never fewer.
            if bytes.len() < want * row_bytes || bytes.len() % row_bytes != 0 {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "vector chunk `{}` holds {} bytes; {want} rows of {dim} floats expected",
                        root.url_of(&key),
                        bytes.len()
                    ),
                ));
            }
            store.file.write_at(start * row_bytes, &bytes[..want * row_bytes])?;
        }
        store.rows = rows;
        Ok(store)
    }

    /// Deletes gallery `name`'s stored chunks beyond the first `rows` rows'.
    pub(crate) async fn delete_beyond(root: &Root, name: &str, rows: usize, chunk_rows: usize) -> Result<()> {
        let keep = rows.div_ceil(chunk_rows.max(1));
        for obj in root.glob(&format!("{}/vectors/*.f32", layout::gallery_dir(name))).await? {
            let chunk = obj.key.rsplit('/').next().and_then(|f| f.strip_suffix(".f32")).and_then(|c| c.parse().ok());
            if chunk.is_some_and(|c: usize| c >= keep) {
                root.delete(&obj.key).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rows_round_trip_through_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(&dir.path().display().to_string()).unwrap();
        let dim = 3;
        let mut store = VectorStore::new(dim, 2).unwrap();
        let v: Vec<f32> = (0..15).map(|i| i as f32).collect();
        store.put(0, &v[..9]).unwrap();
        store.put(3, &v[9..]).unwrap();
        assert_eq!(store.row(4), Some(&v[12..15]));
        assert_eq!(store.row(5), None);
        store.save(&root, "g").await.unwrap();
        // Erasure reaches the stored chunk.
        store.zero(&[1]).unwrap();
        assert_eq!(store.row(1), Some(&[0.0, 0.0, 0.0][..]));
        store.save(&root, "g").await.unwrap();
        let loaded = VectorStore::load(&root, "g", dim, 5, 2).await.unwrap();
        assert_eq!(loaded.row(0), Some(&v[..3]));
        assert_eq!(loaded.row(1), Some(&[0.0, 0.0, 0.0][..]));
        assert_eq!(loaded.row(4), Some(&v[12..15]));
        // Asking for more rows than were saved is corruption, said plainly.
        let err = VectorStore::load(&root, "g", dim, 7, 2).await.err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    }
}
