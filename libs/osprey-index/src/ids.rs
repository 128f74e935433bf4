//! The gallery's id map: FAISS id → (template id, subject id), kept compact
//! so that a gallery of millions costs a few bytes per template beyond its
//! index.
//!
//! FAISS ids are assigned in order and never reused, so the map is a set of
//! columns indexed by FAISS id rather than hash maps of owned strings:
//! template ids are packed one after another ([`Strings`]), each template
//! names its subject by number (4 bytes), and subject names are packed the
//! same way and found through a table of subject numbers. The packed names
//! themselves are in memory-mapped local files, like the re-ranking vectors
//! (a search reads only the names of the candidates it returns), so the
//! heap holds about 4 bytes of offset per template id and per subject name,
//! 4 for the subject number and the lookup table's 5–10 per subject:
//! 12–23 bytes per template at a million, whatever the ids' length (a
//! 36-character UUID costs what a short number does), where
//! `HashMap<i64, (String, String)>` and a per-subject `HashMap` cost about
//! 440. A subject's templates are found by a scan of the subject column,
//! which only erasure needs.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use osprey_core::{Error, Result};

use crate::mapped::MappedFile;

/// Strings per block of [`Strings`]: offsets inside a block are 32-bit.
const BLOCK: usize = 1 << 16;

/// Longest template or subject id: a block of [`BLOCK`] ids then always
/// fits 32-bit offsets.
pub(crate) const MAX_ID_BYTES: usize = (u32::MAX as usize) / BLOCK;

/// Bytes gathered on the heap before they go to the file in one write.
const TAIL_BYTES: usize = 16 << 10;

/// Append-only packed strings, addressed by position, the bytes in a
/// memory-mapped local file ([`MappedFile`]): on the heap, 4 bytes of
/// offset per string plus 8 per block of 65,536, and the last few
/// kilobytes of strings not yet written out.
pub(crate) struct Strings {
    /// Strings before `file.len()`.
    file: MappedFile,
    /// Strings from `file.len()` on, written out when it fills.
    tail: Vec<u8>,
    /// End of each string, relative to its block's base.
    ends: Vec<u32>,
    /// Start of each block (a position in the file then the tail).
    bases: Vec<usize>,
}

impl Strings {
    fn new(what: &'static str) -> Result<Strings> {
        Ok(Strings { file: MappedFile::new(what)?, tail: Vec::new(), ends: Vec::new(), bases: Vec::new() })
    }

    fn push(&mut self, s: &str, what: &str) -> Result<usize> {
        if s.len() > MAX_ID_BYTES {
            return Err(Error::invalid(format!("{what} is {} bytes long; at most {MAX_ID_BYTES} allowed", s.len())));
        }
        let n = self.ends.len();
        let end = self.file.len() + self.tail.len();
        if n.is_multiple_of(BLOCK) {
            self.bases.push(end);
        }
        self.tail.extend_from_slice(s.as_bytes());
        self.ends.push((end + s.len() - self.bases[n / BLOCK]) as u32);
        if self.tail.len() >= TAIL_BYTES {
            self.file.append(&self.tail)?;
            self.tail.clear();
        }
        Ok(n)
    }

    fn range(&self, i: usize) -> std::ops::Range<usize> {
        let base = self.bases[i / BLOCK];
        let start = if i.is_multiple_of(BLOCK) { 0 } else { self.ends[i - 1] as usize };
        base + start..base + self.ends[i] as usize
    }

    /// The bytes of string `i` (whole in the file or whole in the tail: the
    /// tail is written out whole).
    fn raw(&self, i: usize) -> &[u8] {
        let r = self.range(i);
        let written = self.file.len();
        if r.start < written { &self.file.bytes()[r] } else { &self.tail[r.start - written..r.end - written] }
    }

    pub(crate) fn get(&self, i: usize) -> &str {
        // Only whole `&str`s are pushed and only zeroes written over them.
        std::str::from_utf8(self.raw(i)).expect("packed ids are UTF-8")
    }

    /// Overwrites string `i` with zero bytes (erasure: the name must not
    /// stay readable, in memory or in the file).
    fn wipe(&mut self, i: usize) -> Result<()> {
        let r = self.range(i);
        let written = self.file.len();
        if r.start < written {
            self.file.write_at(r.start, &vec![0; r.len()])
        } else {
            self.tail[r.start - written..r.end - written].fill(0);
            Ok(())
        }
    }

    /// Heap bytes.
    fn heap_bytes(&self) -> usize {
        self.tail.capacity() + 4 * self.ends.len() + 8 * self.bases.len()
    }

    /// Bytes in the file and its tail.
    fn packed_bytes(&self) -> usize {
        self.file.len() + self.tail.len()
    }
}

/// Subject number of a FAISS id that is removed, or was never live.
const NONE: u32 = u32::MAX;

/// FAISS id → template and subject; see the module documentation.
pub(crate) struct IdMap {
    /// Template id by FAISS id (wiped when removed).
    templates: Strings,
    /// Subject number by FAISS id; [`NONE`] once removed.
    subject_of: Vec<u32>,
    /// Subject id by subject number (wiped when erased).
    subjects: Strings,
    /// Numbers of the live subjects, hashed by name.
    lookup: HashTable<u32>,
    hasher: RandomState,
    live: usize,
}

impl IdMap {
    pub(crate) fn new() -> Result<IdMap> {
        Ok(IdMap {
            templates: Strings::new("template ids")?,
            subject_of: Vec::new(),
            subjects: Strings::new("subject ids")?,
            lookup: HashTable::new(),
            hasher: RandomState::new(),
            live: 0,
        })
    }

    /// The FAISS id the next template gets.
    pub(crate) fn next_id(&self) -> i64 {
        self.subject_of.len() as i64
    }

    /// Live templates.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// Live subjects.
    pub(crate) fn num_subjects(&self) -> usize {
        self.lookup.len()
    }

    fn find(&self, subject: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(subject);
        self.lookup.find(hash, |&n| self.subjects.get(n as usize) == subject).copied()
    }

    pub(crate) fn contains_subject(&self, subject: &str) -> bool {
        self.find(subject).is_some()
    }

    fn intern(&mut self, subject: &str) -> Result<u32> {
        if let Some(n) = self.find(subject) {
            return Ok(n);
        }
        let n = self.subjects.push(subject, "subject id")?;
        if n >= NONE as usize {
            return Err(Error::invalid("a gallery holds at most 2^32 - 1 subjects"));
        }
        let (subjects, hasher) = (&self.subjects, &self.hasher);
        self.lookup.insert_unique(hasher.hash_one(subject), n as u32, |&m| hasher.hash_one(subjects.get(m as usize)));
        Ok(n as u32)
    }

    /// Assigns the next FAISS id to a live template of `subject`.
    pub(crate) fn push(&mut self, template: &str, subject: &str) -> Result<i64> {
        let number = self.intern(subject)?;
        let id = self.next_id();
        self.templates.push(template, "template id")?;
        self.subject_of.push(number);
        self.live += 1;
        Ok(id)
    }

    /// Assigns the next FAISS id to nothing (an id removed before a load).
    pub(crate) fn push_gap(&mut self) {
        self.templates.push("", "template id").expect("the empty id fits");
        self.subject_of.push(NONE);
    }

    /// Template and subject of a live FAISS id.
    pub(crate) fn get(&self, id: i64) -> Option<(&str, &str)> {
        let number = *self.subject_of.get(usize::try_from(id).ok()?)?;
        (number != NONE).then(|| (self.templates.get(id as usize), self.subjects.get(number as usize)))
    }

    /// Subject number of a live FAISS id (cheap to compare and hash).
    pub(crate) fn subject_number(&self, id: i64) -> Option<u32> {
        let number = *self.subject_of.get(usize::try_from(id).ok()?)?;
        (number != NONE).then_some(number)
    }

    /// Live FAISS ids, ascending.
    pub(crate) fn live_ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.subject_of.iter().enumerate().filter(|(_, n)| **n != NONE).map(|(id, _)| id as i64)
    }

    /// Live subject ids (in no order).
    pub(crate) fn subjects(&self) -> impl Iterator<Item = &str> {
        self.lookup.iter().map(|&n| self.subjects.get(n as usize))
    }

    /// The first live FAISS id of each named subject, in one pass.
    pub(crate) fn first_ids(&self, subjects: &[&str]) -> Vec<Option<i64>> {
        let numbers: Vec<Option<u32>> = subjects.iter().map(|s| self.find(s)).collect();
        let mut wanted: std::collections::HashMap<u32, Vec<usize>> = Default::default();
        for (i, n) in numbers.iter().enumerate() {
            if let Some(n) = n {
                wanted.entry(*n).or_default().push(i);
            }
        }
        let mut out = vec![None; subjects.len()];
        for (id, n) in self.subject_of.iter().enumerate() {
            if let Some(slots) = wanted.remove(n) {
                for i in slots {
                    out[i] = Some(id as i64);
                }
                if wanted.is_empty() {
                    break;
                }
            }
        }
        out
    }

    /// Removes every template of `subject` and wipes its names; the removed
    /// FAISS ids, or `None` if the subject is not enrolled.
    pub(crate) fn remove_subject(&mut self, subject: &str) -> Result<Option<Vec<i64>>> {
        let Some(number) = self.find(subject) else { return Ok(None) };
        let hash = self.hasher.hash_one(subject);
        if let Ok(entry) = self.lookup.find_entry(hash, |&n| n == number) {
            entry.remove();
        }
        let mut removed = Vec::new();
        for (id, n) in self.subject_of.iter_mut().enumerate() {
            if *n == number {
                *n = NONE;
                removed.push(id as i64);
            }
        }
        self.live -= removed.len();
        for &id in &removed {
            self.templates.wipe(id as usize)?;
        }
        self.subjects.wipe(number as usize)?;
        Ok(Some(removed))
    }

    /// Heap bytes in use (a vector's unused capacity is never touched, so
    /// not resident; the lookup table counts whole).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.templates.heap_bytes()
            + self.subjects.heap_bytes()
            + 4 * self.subject_of.len()
            + self.lookup.allocation_size()
    }

    /// Bytes of ids in the mapped local files.
    pub(crate) fn file_bytes(&self) -> usize {
        self.templates.packed_bytes() + self.subjects.packed_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_cross_blocks() {
        let mut s = Strings::new("test").unwrap();
        for i in 0..(BLOCK * 2 + 10) {
            assert_eq!(s.push(&format!("t{i}"), "id").unwrap(), i);
        }
        for i in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK, 2 * BLOCK + 9] {
            assert_eq!(s.get(i), format!("t{i}"));
        }
        s.push("", "id").unwrap();
        assert_eq!(s.get(2 * BLOCK + 10), "");
        // Most strings went out to the file; the newest are still on the heap.
        assert!(s.file.len() > 0 && !s.tail.is_empty());
        s.wipe(1).unwrap();
        s.wipe(2 * BLOCK + 9).unwrap();
        assert_eq!(s.get(1), "\0\0");
        assert_eq!(s.get(2 * BLOCK + 9), "\0".repeat(format!("t{}", 2 * BLOCK + 9).len()));
        assert_eq!(s.get(2), "t2");
        assert!(s.push(&"x".repeat(MAX_ID_BYTES + 1), "template id").is_err());
    }

    #[test]
    fn map_adds_finds_and_erases() {
        let mut m = IdMap::new().unwrap();
        assert_eq!(m.push("a1", "alice").unwrap(), 0);
        assert_eq!(m.push("b1", "bob").unwrap(), 1);
        m.push_gap();
        assert_eq!(m.push("a2", "alice").unwrap(), 3);
        assert_eq!((m.len(), m.num_subjects(), m.next_id()), (3, 2, 4));
        assert_eq!(m.get(3), Some(("a2", "alice")));
        assert_eq!(m.get(2), None);
        assert_eq!(m.get(-1), None);
        assert_eq!(m.get(99), None);
        assert_eq!(m.subject_number(0), m.subject_number(3));
        assert_eq!(m.first_ids(&["bob", "carol", "alice"]), vec![Some(1), None, Some(0)]);

        assert_eq!(m.remove_subject("alice").unwrap(), Some(vec![0, 3]));
        assert_eq!(m.remove_subject("alice").unwrap(), None);
        assert!(!m.contains_subject("alice"));
        assert_eq!((m.len(), m.num_subjects()), (1, 1));
        assert_eq!(m.live_ids().collect::<Vec<_>>(), vec![1]);
        assert_eq!(m.subjects().collect::<Vec<_>>(), vec!["bob"]);
        // The erased names are gone from memory, not only unreachable.
        let packed = |s: &Strings| [s.file.bytes(), &s.tail].concat();
        assert!(!packed(&m.templates).windows(2).any(|w| w == b"a1" || w == b"a2"));
        assert!(!packed(&m.subjects).windows(5).any(|w| w == b"alice"));

        // Enrolled again, the subject is a new one.
        assert_eq!(m.push("a3", "alice").unwrap(), 4);
        assert_eq!(m.get(4), Some(("a3", "alice")));
        assert_eq!(m.num_subjects(), 2);
    }
}
