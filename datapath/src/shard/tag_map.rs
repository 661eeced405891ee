//! A hasher for maps keyed by task tags (and other integer keys a program hands out
//! itself, such as iscsi-bench's I/O ids and buffer addresses). The keys are our own (not
//! a peer's), so no peer chooses them and std's SipHash (built to resist chosen keys) only
//! costs time on the per-command path; a multiplicative (Fibonacci) hash spreads the
//! sequential tags over the table's control bits.

use std::hash::{BuildHasherDefault, Hasher};

/// Hashes one integer key by a multiplication with the golden ratio.
#[derive(Debug, Default, Clone, Copy)]
pub struct TagHasher(u64);

impl Hasher for TagHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by integer keys; folded in anyway so any key type stays correct.
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A `HashMap` keyed by task tags.
pub type TagMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<TagHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn sequential_tags_differ_in_their_top_bits() {
        // hashbrown takes its control byte from the top 7 bits: sequential tags must not
        // all share them.
        let build = BuildHasherDefault::<TagHasher>::default();
        let tops: std::collections::HashSet<u64> =
            (1u32..=64).map(|t| build.hash_one(t) >> 57).collect();
        assert!(tops.len() > 32, "{} distinct", tops.len());
    }

    #[test]
    fn the_map_finds_what_it_holds() {
        let mut map: TagMap<u32, u32> = TagMap::default();
        for t in 0..1000 {
            map.insert(t, t * 2);
        }
        assert!((0..1000).all(|t| map.get(&t) == Some(&(t * 2))));
        assert_eq!(map.remove(&7), Some(14));
        assert_eq!(map.get(&7), None);
    }
}
