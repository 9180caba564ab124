//! B-tree index file (FORMAT.md, "B-tree index file"): one segment's rows
//! sorted by their encoded index key (section 9's order-preserving
//! encoding, so byte order is value order), each with its segment row. A
//! sorted array rather than a tree of pages: the file is immutable and read
//! in place, and a binary search over it is a B-tree search with one level.
//! Version 2 adds a bloom filter of the first column's values, so that a
//! lookup skips, without a search, the many segments of a table that do
//! not hold the value.

use std::io::Write;

use arrow_buffer::Buffer;

use crate::bloom::BloomFilter;
use crate::codec::{Decoder, Encoder};
use crate::error::{Error, Result};
use crate::key::partition_point;

pub const MAGIC: &[u8; 8] = b"BSLTBTRE";
pub const VERSION: u32 = 2;
/// Files without the bloom filter, still read.
const VERSION_WITHOUT_BLOOM: u32 = 1;
const HEADER: usize = 16;

/// Writes entries (key, segment row), which must be sorted by key then row,
/// and the bloom filter of the encoded first-column values of their keys.
pub fn write<W: Write>(
    entries: &[(Vec<u8>, u32)],
    first_values: &BloomFilter,
    mut out: W,
) -> Result<u64> {
    let n = u32::try_from(entries.len()).map_err(|_| Error::corrupt(0, "too many entries"))?;
    let mut bytes = Vec::with_capacity(HEADER + entries.len() * 12);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&n.to_le_bytes());
    let mut offset = 0u32;
    bytes.extend_from_slice(&offset.to_le_bytes());
    for (key, _) in entries {
        offset = u32::try_from(key.len())
            .ok()
            .and_then(|len| offset.checked_add(len))
            .ok_or_else(|| Error::corrupt(0, "index keys exceed 4 GiB"))?;
        bytes.extend_from_slice(&offset.to_le_bytes());
    }
    for (_, row) in entries {
        bytes.extend_from_slice(&row.to_le_bytes());
    }
    for (key, _) in entries {
        bytes.extend_from_slice(key);
    }
    let mut bloom = Encoder::new();
    first_values.encode(&mut bloom);
    bytes.extend_from_slice(&bloom.into_inner());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    out.write_all(&bytes)?;
    out.flush()?;
    Ok(bytes.len() as u64)
}

/// An opened, checked B-tree index file.
#[derive(Debug)]
pub struct BTreeIndex {
    buffer: Buffer,
    n: usize,
    keys_at: usize,
    /// None in version 1 files.
    first_values: Option<BloomFilter>,
    /// Every [`FENCE_STRIDE`]th key, packed together in memory: a search
    /// narrows to one stride among them, in cache, before it touches the
    /// file's scattered offsets and keys.
    fences: Fences,
}

/// Entries per fence key.
const FENCE_STRIDE: usize = 64;

#[derive(Debug, Default)]
struct Fences {
    bytes: Vec<u8>,
    /// Where each fence key starts in `bytes`, then its end.
    offsets: Vec<u32>,
}

impl Fences {
    fn of(index: &BTreeIndex) -> Fences {
        let mut fences = Fences {
            bytes: Vec::new(),
            offsets: vec![0],
        };
        for i in (0..index.n).step_by(FENCE_STRIDE) {
            fences.bytes.extend_from_slice(index.key(i));
            // A key section past 4 GiB keeps no fences: searches go to the
            // file directly.
            let Ok(end) = u32::try_from(fences.bytes.len()) else {
                return Fences::default();
            };
            fences.offsets.push(end);
        }
        fences
    }

    fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    fn key(&self, i: usize) -> &[u8] {
        &self.bytes[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
}

impl BTreeIndex {
    /// Checks the magic, version, shape and checksum of a whole file.
    pub fn open(buffer: Buffer) -> Result<BTreeIndex> {
        let bytes = buffer.as_slice();
        if bytes.len() < HEADER + 8 {
            return Err(Error::corrupt(0, "B-tree index file too short"));
        }
        if &bytes[..8] != MAGIC {
            return Err(Error::corrupt(0, "not a B-tree index file (bad magic)"));
        }
        let version = read_u32(bytes, 8);
        if version != VERSION && version != VERSION_WITHOUT_BLOOM {
            return Err(Error::corrupt(
                8,
                format!("unsupported B-tree index file version {version}"),
            ));
        }
        let body = bytes.len() - 4;
        let stored = read_u32(bytes, body);
        if crc32fast::hash(&bytes[..body]) != stored {
            return Err(Error::corrupt(body, "B-tree index checksum mismatch"));
        }
        let n = read_u32(bytes, 12) as usize;
        let keys_at = HEADER + (n + 1) * 4 + n * 4;
        if keys_at > body {
            return Err(Error::corrupt(12, "entry count past the end of the file"));
        }
        let mut index = BTreeIndex {
            buffer,
            n,
            keys_at,
            first_values: None,
            fences: Fences::default(),
        };
        let mut previous = 0;
        for i in 0..=n {
            let offset = index.offset(i);
            if offset < previous || keys_at + offset > body {
                return Err(Error::corrupt(HEADER + i * 4, "key offsets out of order"));
            }
            previous = offset;
        }
        let keys_end = keys_at + previous;
        index.fences = Fences::of(&index);
        if version == VERSION_WITHOUT_BLOOM {
            if keys_end != body {
                return Err(Error::corrupt(keys_at, "key bytes do not fill the file"));
            }
            return Ok(index);
        }
        let tail = &index.buffer.as_slice()[keys_end..body];
        let mut d = Decoder::new(tail);
        let bloom = BloomFilter::decode(&mut d).map_err(|e| e.at_base(keys_end as u64))?;
        if !d.is_empty() {
            return Err(Error::corrupt(
                keys_end + d.position(),
                "bloom filter does not fill the file",
            ));
        }
        index.first_values = Some(bloom);
        Ok(index)
    }

    /// False when no entry's first column is the encoded `value`: a
    /// version 1 file, which has no filter, always says true.
    pub fn may_hold_first(&self, value: &[u8]) -> bool {
        self.first_values
            .as_ref()
            .is_none_or(|bloom| bloom.may_contain(value))
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn offset(&self, i: usize) -> usize {
        read_u32(self.buffer.as_slice(), HEADER + i * 4) as usize
    }

    /// Entry `i`'s encoded key.
    pub fn key(&self, i: usize) -> &[u8] {
        let bytes = self.buffer.as_slice();
        &bytes[self.keys_at + self.offset(i)..self.keys_at + self.offset(i + 1)]
    }

    /// Entry `i`'s segment row.
    pub fn row(&self, i: usize) -> u32 {
        read_u32(self.buffer.as_slice(), HEADER + (self.n + 1) * 4 + i * 4)
    }

    /// The first entry for which `pred` is false (`pred` true on a prefix).
    pub fn partition_point(&self, pred: impl Fn(&[u8]) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.n);
        if self.fences.len() > 0 {
            // Fence f is entry f * FENCE_STRIDE; `pred` holds on the first
            // `true_fences` of them, so the answer lies after the last of
            // those and at or before the next.
            let true_fences = partition_point(0..self.fences.len(), |f| pred(self.fences.key(f)));
            if true_fences == 0 {
                return 0;
            }
            lo = (true_fences - 1) * FENCE_STRIDE + 1;
            hi = (true_fences * FENCE_STRIDE).min(self.n);
        }
        partition_point(lo..hi, |i| pred(self.key(i)))
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_values(entries: &[(Vec<u8>, u32)]) -> BloomFilter {
        BloomFilter::build(entries.iter().map(|(key, _)| key.as_slice()))
    }

    fn written(entries: &[(Vec<u8>, u32)]) -> Vec<u8> {
        let mut bytes = Vec::new();
        write(entries, &first_values(entries), &mut bytes).unwrap();
        bytes
    }

    /// The version 1 layout: the same bytes without the filter.
    fn written_v1(entries: &[(Vec<u8>, u32)]) -> Vec<u8> {
        let mut bytes = written(entries);
        let keys_end = HEADER
            + (entries.len() + 1) * 4
            + entries.len() * 4
            + entries.iter().map(|(k, _)| k.len()).sum::<usize>();
        bytes.truncate(keys_end);
        bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    fn entries() -> Vec<(Vec<u8>, u32)> {
        vec![
            (b"apple".to_vec(), 3),
            (b"apple".to_vec(), 7),
            (b"banana".to_vec(), 0),
            (b"cherry".to_vec(), 1),
        ]
    }

    #[test]
    fn entries_round_trip_and_search() {
        let index = BTreeIndex::open(Buffer::from_vec(written(&entries()))).unwrap();
        assert_eq!(index.len(), 4);
        let read: Vec<_> = (0..4)
            .map(|i| (index.key(i).to_vec(), index.row(i)))
            .collect();
        assert_eq!(read, entries());
        assert_eq!(index.partition_point(|k| k < b"banana".as_slice()), 2);
        assert!(index.may_hold_first(b"cherry"));
        assert!(!index.may_hold_first(b"durian"));
        let empty = BTreeIndex::open(Buffer::from_vec(written(&[]))).unwrap();
        assert!(empty.is_empty() && !empty.may_hold_first(b"apple"));
    }

    /// Searches narrowed by the fence keys land where a scan of every entry
    /// does, at stride edges, between duplicates and past either end.
    #[test]
    fn fenced_searches_agree_with_a_linear_scan() {
        for n in [1usize, 63, 64, 65, 128, 129, 1000] {
            let entries: Vec<(Vec<u8>, u32)> = (0..n)
                .map(|i| ((i as u32 / 3).to_be_bytes().to_vec(), i as u32))
                .collect();
            let index = BTreeIndex::open(Buffer::from_vec(written(&entries))).unwrap();
            for probe in 0..(n as u32 / 3 + 2) {
                let value = probe.to_be_bytes();
                for below in [true, false] {
                    let pred = |k: &[u8]| match below {
                        true => k < value.as_slice(),
                        false => k <= value.as_slice(),
                    };
                    let want = entries.iter().take_while(|(k, _)| pred(k)).count();
                    assert_eq!(index.partition_point(pred), want, "n {n} probe {probe}");
                }
            }
        }
    }

    #[test]
    fn version_1_files_read_and_hold_every_value() {
        let index = BTreeIndex::open(Buffer::from_vec(written_v1(&entries()))).unwrap();
        assert_eq!(index.len(), 4);
        assert_eq!(index.key(3), b"cherry");
        assert!(index.may_hold_first(b"durian"));
    }

    #[test]
    fn damage_is_reported_never_a_panic() {
        for bytes in [written(&entries()), written_v1(&entries())] {
            for i in 0..bytes.len() {
                let mut damaged = bytes.clone();
                damaged[i] ^= 0x41;
                assert!(
                    BTreeIndex::open(Buffer::from_vec(damaged)).is_err(),
                    "byte {i}"
                );
                assert!(BTreeIndex::open(Buffer::from_vec(bytes[..i].to_vec())).is_err());
            }
        }
    }
}
