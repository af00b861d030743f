//! A cheap hasher for maps keyed by pseudonyms, IE signatures and cluster ids (also the
//! visitor counter's).
//!
//! Those keys are already keyed hashes (the host's, with a key the plugin never sees, new every
//! epoch), so nobody can choose them to collide: the flooding defence of std's SipHash buys
//! nothing here and costs most of a sighting's time inside the plugin. One multiply mixes a
//! word; the rotation in `finish` moves the product's best-mixed high bits down to where the
//! table takes its bucket index (the low bits, also on 32-bit wasm).
//!
//! Nothing counted depends on a map's iteration order, so the hasher changes speed only.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// An odd constant with well-spread bits (2^64 / φ, made odd).
const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

#[derive(Default, Clone, Copy)]
pub struct WordHasher(u64);

impl WordHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(MIX);
    }
}

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn write_isize(&mut self, n: isize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
}

pub type Build = BuildHasherDefault<WordHasher>;
pub type FastMap<K, V> = HashMap<K, V, Build>;
pub type FastSet<K> = HashSet<K, Build>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    fn hash<T: Hash>(t: &T) -> u64 {
        Build::default().hash_one(t)
    }

    #[test]
    fn none_and_some_of_the_same_word_differ() {
        assert_ne!(hash(&None::<u64>), hash(&Some(0u64)));
        assert_ne!(hash(&Some(0u64)), hash(&Some(1u64)));
    }

    #[test]
    fn consecutive_keys_spread_over_the_low_bits() {
        // Even keys that are not hashes (consecutive numbers) fill a 1024-bucket table evenly.
        let mut buckets = [0u32; 1024];
        for k in 0..65_536u64 {
            buckets[(hash(&k) & 1023) as usize] += 1;
        }
        let max = *buckets.iter().max().unwrap();
        assert!(max <= 128, "{max}");
    }
}
