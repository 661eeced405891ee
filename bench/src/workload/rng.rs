//! The seeded random numbers behind every choice the workload makes.
//!
//! SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
//! OOPSLA 2014): 64 bits of state, full period 2^64, passes BigCrush, and cheap to seed. It is
//! not cryptographic and need not be: it decides offsets, sizes and arrival times. Each
//! decision gets its own stream ([`stream_seed`]) so that, for example, turning on a rate
//! limit does not change which offsets a job visits.

/// The SplitMix64 output function: a bijective 64-bit mixer (also used as a keyed hash).
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of one independent stream of a job: which decision it drives (`stream`), and an
/// optional index (a pass number, say).
pub(crate) fn stream_seed(job_seed: u64, stream: u64, index: u64) -> u64 {
    mix64(mix64(job_seed ^ mix64(stream.wrapping_add(0x9e37_79b9_7f4a_7c15))) ^ index)
}

/// Stream names, so two decisions never share a stream by accident.
pub(crate) mod streams {
    pub const DIRECTION: u64 = 1;
    pub const BLOCK_SIZE: u64 = 2;
    pub const OFFSET: u64 = 3;
    pub const PASS_KEY: u64 = 4;
    pub const SCATTER_KEY: u64 = 5;
    pub const PACING: u64 = 6;
    pub const BUFFER_CONTENT: u64 = 7;
    pub const FILE: u64 = 8;
    pub const SEQUENTIAL_CHOICE: u64 = 9;
    pub const FILE_SIZE: u64 = 10;
}

#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.state)
    }

    /// Uniform in `[0, bound)` without modulo bias (Lemire's multiply-and-reject).
    /// `bound` 0 gives 0.
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        let threshold = bound.wrapping_neg() % bound;
        // The rejection zone is smaller than `bound` out of 2^64: the loop almost never
        // repeats, and each round has probability > 1/2 of ending it.
        loop {
            let product = u128::from(self.next_u64()) * u128::from(bound);
            if (product as u64) >= threshold {
                return (product >> 64) as u64;
            }
        }
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `(0, 1]`: safe to take the logarithm of.
    pub(crate) fn next_f64_open_zero(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_streams_differ() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        let a_values: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let b_values: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(a_values, b_values);
        assert_ne!(
            stream_seed(7, streams::OFFSET, 0),
            stream_seed(7, streams::DIRECTION, 0)
        );
        assert_ne!(
            stream_seed(7, streams::OFFSET, 0),
            stream_seed(7, streams::OFFSET, 1)
        );
    }

    #[test]
    fn below_stays_in_bounds_and_covers_them() {
        let mut rng = SplitMix64::new(1);
        let mut seen = [0u32; 7];
        for _ in 0..7000 {
            let value = rng.below(7);
            assert!(value < 7);
            seen[value as usize] += 1;
        }
        assert!(seen.iter().all(|&count| count > 800), "{seen:?}");
        assert_eq!(rng.below(1), 0);
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn unit_floats_in_range() {
        let mut rng = SplitMix64::new(3);
        for _ in 0..1000 {
            let x = rng.next_f64();
            assert!((0.0..1.0).contains(&x));
            let y = rng.next_f64_open_zero();
            assert!(y > 0.0 && y <= 1.0);
        }
    }
}
