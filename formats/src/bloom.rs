//! Key bloom filter (FORMAT.md, "Bloom filter").
//!
//! Bits are set by double hashing of the xxh3-64 hash of the encoded key:
//! probe i sets bit `(h1 + i * h2) mod num_bits`, where h1 and h2 are the low
//! and high 32 bits of the hash.

use xxhash_rust::xxh3::xxh3_64;

use crate::codec::{Decoder, Encoder};
use crate::error::Result;

pub const BITS_PER_KEY: usize = 10;
pub const NUM_PROBES: u8 = 7;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BloomFilter {
    probes: u8,
    bits: Vec<u8>,
}

impl BloomFilter {
    pub fn build<'a>(keys: impl ExactSizeIterator<Item = &'a [u8]>) -> BloomFilter {
        let hashes: Vec<u64> = keys.map(Self::hash).collect();
        Self::from_hashes(&hashes)
    }

    /// The hash a key is filed under; writers collect these instead of keys.
    pub fn hash(key: &[u8]) -> u64 {
        xxh3_64(key)
    }

    pub fn from_hashes(hashes: &[u64]) -> BloomFilter {
        let num_bits = (hashes.len() * BITS_PER_KEY).max(64);
        let mut filter = BloomFilter {
            probes: NUM_PROBES,
            bits: vec![0; num_bits.div_ceil(8)],
        };
        for &hash in hashes {
            for bit in filter.positions(hash).collect::<Vec<_>>() {
                filter.bits[bit / 8] |= 1 << (bit % 8);
            }
        }
        filter
    }

    fn num_bits(&self) -> u64 {
        self.bits.len() as u64 * 8
    }

    fn positions(&self, hash: u64) -> impl Iterator<Item = usize> {
        let (h1, h2) = (hash & 0xFFFF_FFFF, hash >> 32);
        let m = self.num_bits().max(1);
        (0..self.probes as u64).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % m) as usize)
    }

    /// False means the key is certainly absent.
    pub fn may_contain(&self, key: &[u8]) -> bool {
        self.may_contain_hash(Self::hash(key))
    }

    pub fn may_contain_hash(&self, hash: u64) -> bool {
        self.positions(hash)
            .all(|bit| self.bits[bit / 8] & (1 << (bit % 8)) != 0)
    }

    pub fn encode(&self, e: &mut Encoder) {
        e.u8(self.probes);
        e.bytes(&self.bits);
    }

    pub fn decode(d: &mut Decoder<'_>) -> Result<BloomFilter> {
        let probes = d.u8()?;
        let bits = d.bytes()?.to_vec();
        if bits.is_empty() {
            return Err(d.error("empty bloom filter"));
        }
        Ok(BloomFilter { probes, bits })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let keys: Vec<Vec<u8>> = (0..10_000u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let filter = BloomFilter::build(keys.iter().map(|k| k.as_slice()));
        assert!(keys.iter().all(|k| filter.may_contain(k)));
        let false_positives = (10_000..110_000u32)
            .filter(|i| filter.may_contain(&i.to_be_bytes()))
            .count();
        assert!(
            false_positives < 2_000,
            "{false_positives} false positives in 100000"
        );
    }

    #[test]
    fn round_trips() {
        let filter = BloomFilter::build([&b"a"[..], b"b"].into_iter());
        let mut e = Encoder::new();
        filter.encode(&mut e);
        let bytes = e.into_inner();
        assert_eq!(
            BloomFilter::decode(&mut Decoder::new(&bytes)).unwrap(),
            filter
        );
    }
}
