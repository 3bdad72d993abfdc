//! Maps keyed by ids the isolate hands out itself (streams, connections, tasks, timer
//! holders), hashed by a multiply-rotate hasher instead of the standard SipHash.
//!
//! Every relayed message looks its stream up several times (its queue, its waker, its
//! task), and the profile (`test-client bench --only profile`, BENCHMARKS.md) put SipHash
//! at about 5 % of the snippet's CPU per message. SipHash resists keys chosen to collide;
//! these keys are counters the isolate assigns, which nobody outside chooses, so a
//! cheaper hash is safe here. Maps keyed by what a client sends (tenant names, callers)
//! keep SipHash.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` keyed by an id the isolate assigned.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// An empty [`IdMap`].
pub fn id_map<K, V>() -> IdMap<K, V> {
    HashMap::default()
}

/// The multiplier of FxHash (rustc's own hasher): odd, with bits spread over the word,
/// so consecutive ids land far apart.
const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// Hashes integer keys with one rotate, xor and multiply per word.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not the path of integer keys; taken word by word for anything else.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            for (to, from) in word.iter_mut().zip(chunk) {
                *to = *from;
            }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    fn hash<T: Hash>(t: T) -> u64 {
        BuildHasherDefault::<IdHasher>::default().hash_one(t)
    }

    #[test]
    fn consecutive_ids_spread_over_the_buckets_a_map_uses() {
        // hashbrown takes a bucket from the low bits and a tag from the top seven.
        let ids = 0u32..4096;
        let low: std::collections::HashSet<u64> = ids.clone().map(|i| hash(i) & 4095).collect();
        let top: std::collections::HashSet<u64> = ids.map(|i| hash(i) >> 57).collect();
        assert!(low.len() > 2048, "{} of 4096 low-bit buckets used", low.len());
        assert_eq!(top.len(), 128, "every top-7-bit tag is used");
    }

    #[test]
    fn an_id_map_finds_what_it_holds() {
        let mut m: IdMap<u64, u64> = id_map();
        for i in 0..10_000 {
            m.insert(i, i * 2);
        }
        assert!((0..10_000).all(|i| m.get(&i) == Some(&(i * 2))));
        assert_eq!(m.get(&10_000), None);
    }
}
