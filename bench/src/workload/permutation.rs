//! A keyed pseudo-random permutation of `0..n` in constant memory: what lets random I/O
//! touch every block exactly once per pass (fio's "random map", see `norandommap` in
//! fio(1)) without a bitmap the size of the device.
//!
//! Construction: a Feistel network over the smallest power of two `2^b >= n`, split into a
//! high and a low half (unequal when `b` is odd); each round XORs one half with a keyed hash
//! of the other, so every round, and the network, is a bijection of `0..2^b` (Luby and
//! Rackoff). Values that land in `n..2^b` are fed through again ("cycle walking", Black and
//! Rogaway, "Ciphers with arbitrary finite domains", 2002) until they fall in `0..n`, which
//! keeps a bijection of `0..n`. As `2^b < 2n`, a walk takes fewer than two steps on average.
//! The inverse is the rounds run backwards, walked the same way: it answers "when in this
//! pass was block `k` visited", which the verify read-back plan needs.

use super::rng::{mix64, SplitMix64};

/// Rounds of the network. Four make a pseudo-random permutation in the Luby-Rackoff sense;
/// six leave no visible pattern with this weak round function.
const ROUNDS: usize = 6;

#[derive(Debug, Clone)]
pub(crate) struct Permutation {
    len: u64,
    low_bits: u32,
    low_mask: u64,
    high_mask: u64,
    round_keys: [u64; ROUNDS],
}

impl Permutation {
    /// A permutation of `0..len` chosen by `key`. `len` 0 is treated as 1.
    pub(crate) fn new(len: u64, key: u64) -> Self {
        let len = len.max(1);
        // At least 2 bits so both halves exist.
        let bits = (64 - (len - 1).leading_zeros()).max(2);
        let low_bits = bits / 2;
        let high_bits = bits - low_bits;
        let mut key_stream = SplitMix64::new(key);
        let mut round_keys = [0u64; ROUNDS];
        for round_key in &mut round_keys {
            *round_key = key_stream.next_u64();
        }
        Permutation {
            len,
            low_bits,
            low_mask: mask(low_bits),
            high_mask: mask(high_bits),
            round_keys,
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Where `index` (in `0..len`) goes. Outside that range the result is unspecified but
    /// still below `len`.
    pub(crate) fn apply(&self, index: u64) -> u64 {
        let mut value = index % self.len;
        // Terminates: the network is a permutation of the power-of-two domain, so the orbit
        // of `value` comes back to `value` itself, which is below `len`.
        loop {
            value = self.forward(value);
            if value < self.len {
                return value;
            }
        }
    }

    /// The index that [`Permutation::apply`] sends to `value`.
    pub(crate) fn invert(&self, value: u64) -> u64 {
        let mut index = value % self.len;
        loop {
            index = self.backward(index);
            if index < self.len {
                return index;
            }
        }
    }

    fn split(&self, value: u64) -> (u64, u64) {
        (
            (value >> self.low_bits) & self.high_mask,
            value & self.low_mask,
        )
    }

    fn join(&self, high: u64, low: u64) -> u64 {
        (high << self.low_bits) | low
    }

    fn forward(&self, value: u64) -> u64 {
        let (mut high, mut low) = self.split(value);
        for (round, key) in self.round_keys.iter().enumerate() {
            if round % 2 == 0 {
                high ^= mix64(low ^ key) & self.high_mask;
            } else {
                low ^= mix64(high ^ key) & self.low_mask;
            }
        }
        self.join(high, low)
    }

    fn backward(&self, value: u64) -> u64 {
        let (mut high, mut low) = self.split(value);
        for (round, key) in self.round_keys.iter().enumerate().rev() {
            if round % 2 == 0 {
                high ^= mix64(low ^ key) & self.high_mask;
            } else {
                low ^= mix64(high ^ key) & self.low_mask;
            }
        }
        self.join(high, low)
    }
}

fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn assert_is_permutation(len: u64, key: u64) {
        let permutation = Permutation::new(len, key);
        let mut seen = vec![false; len as usize];
        for index in 0..len {
            let value = permutation.apply(index);
            assert!(value < len, "len {len} key {key}: {index} -> {value}");
            assert!(!seen[value as usize], "len {len} key {key}: {value} twice");
            seen[value as usize] = true;
            assert_eq!(permutation.invert(value), index, "len {len} key {key}");
        }
    }

    #[test]
    fn small_sizes_are_permutations() {
        for len in 1..=300 {
            assert_is_permutation(len, len * 31 + 5);
        }
    }

    #[test]
    fn powers_of_two_and_neighbours() {
        for shift in 2..=16 {
            for len in [(1u64 << shift) - 1, 1 << shift, (1 << shift) + 1] {
                assert_is_permutation(len, 99);
            }
        }
    }

    #[test]
    fn different_keys_give_different_orders() {
        let a = Permutation::new(1000, 1);
        let b = Permutation::new(1000, 2);
        let differing = (0..1000).filter(|&i| a.apply(i) != b.apply(i)).count();
        assert!(differing > 900, "{differing}");
    }

    #[test]
    fn order_is_not_sequential() {
        // Neighbouring indexes should rarely map to neighbouring values.
        let permutation = Permutation::new(100_000, 42);
        let adjacent = (0..99_999)
            .filter(|&i| permutation.apply(i + 1) == permutation.apply(i) + 1)
            .count();
        assert!(adjacent < 100, "{adjacent}");
    }

    #[test]
    fn huge_domains_round_trip() {
        for len in [u64::MAX, 1 << 63, (1 << 40) + 12_345] {
            let permutation = Permutation::new(len, 7);
            for index in [0, 1, len / 2, len - 1] {
                let value = permutation.apply(index);
                assert!(value < len);
                assert_eq!(permutation.invert(value), index);
            }
        }
    }

    proptest! {
        #[test]
        fn any_size_is_a_permutation(len in 1u64..5000, key in any::<u64>()) {
            assert_is_permutation(len, key);
        }

        #[test]
        fn inverse_undoes_apply_on_large_domains(len in 1u64..u64::MAX, key in any::<u64>(), index in any::<u64>()) {
            let permutation = Permutation::new(len, key);
            let index = index % len;
            let value = permutation.apply(index);
            prop_assert!(value < len);
            prop_assert_eq!(permutation.invert(value), index);
        }
    }
}
