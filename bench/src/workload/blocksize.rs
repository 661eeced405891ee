//! Block sizes per direction: fio's `bs`, `bsrange` and `bssplit` (fio(1), "Block size").
//!
//! - `bs=4k`: every I/O is 4 KiB.
//! - `bsrange=1k-8k`: a size drawn uniformly from the multiples of the minimum in the range
//!   (fio draws uniformly in `[1, max]`, raises it to the minimum and rounds up to a multiple
//!   of it, which gives the same uniform choice among the multiples when `max` is one).
//! - `bssplit=4k/10:64k/50:32k/40`: sizes with weights in percent. Entries without a weight
//!   share what the others leave of 100% evenly (integer division, as fio does); weights over
//!   100% are an error; if the weights add to less than 100 the last entry takes the rest,
//!   which is where fio's own selection loop ends up too. At most 64 entries, as in fio.

use super::rng::SplitMix64;
use super::{BlockSizeSpec, WorkloadError};
use crate::io::Direction;

/// fio's limit on bssplit entries per direction.
pub const BSSPLIT_ENTRIES_MAX: usize = 64;

#[derive(Debug, Clone)]
pub(crate) enum BlockSizePicker {
    Fixed(u32),
    /// Multiples of `min_bytes` from 1 to `multiples`.
    Range {
        min_bytes: u32,
        multiples: u32,
    },
    /// Any length in `[min_bytes, max_bytes]` (fio's `bs_unaligned`), drawn as fio draws
    /// it: `min + uniform[0, max)`, what passes `max` taken as `max`.
    Unaligned {
        min_bytes: u32,
        max_bytes: u32,
    },
    /// `(len_bytes, cumulative percent)`, the last at 100.
    Split(Vec<(u32, u32)>),
}

impl BlockSizePicker {
    pub(crate) fn new(direction: Direction, spec: &BlockSizeSpec) -> Result<Self, WorkloadError> {
        match spec {
            BlockSizeSpec::Fixed(0) => Err(WorkloadError::ZeroBlockSize { direction }),
            BlockSizeSpec::Fixed(len) => Ok(BlockSizePicker::Fixed(*len)),
            BlockSizeSpec::Range {
                min_bytes,
                max_bytes,
            } => {
                if *min_bytes == 0 {
                    return Err(WorkloadError::ZeroBlockSize { direction });
                }
                if max_bytes < min_bytes {
                    return Err(WorkloadError::BlockSizeRangeInverted {
                        direction,
                        min_bytes: *min_bytes,
                        max_bytes: *max_bytes,
                    });
                }
                Ok(BlockSizePicker::Range {
                    min_bytes: *min_bytes,
                    multiples: max_bytes / min_bytes,
                })
            }
            BlockSizeSpec::RangeUnaligned {
                min_bytes,
                max_bytes,
            } => {
                if *min_bytes == 0 {
                    return Err(WorkloadError::ZeroBlockSize { direction });
                }
                if max_bytes < min_bytes {
                    return Err(WorkloadError::BlockSizeRangeInverted {
                        direction,
                        min_bytes: *min_bytes,
                        max_bytes: *max_bytes,
                    });
                }
                Ok(BlockSizePicker::Unaligned {
                    min_bytes: *min_bytes,
                    max_bytes: *max_bytes,
                })
            }
            BlockSizeSpec::Split(entries) => Self::split(direction, entries),
        }
    }

    fn split(direction: Direction, entries: &[super::BsSplitEntry]) -> Result<Self, WorkloadError> {
        if entries.is_empty() {
            return Err(WorkloadError::BsSplitEmpty { direction });
        }
        if entries.len() > BSSPLIT_ENTRIES_MAX {
            return Err(WorkloadError::BsSplitTooManyEntries {
                direction,
                entries: entries.len(),
            });
        }
        if entries.iter().any(|entry| entry.len_bytes == 0) {
            return Err(WorkloadError::ZeroBlockSize { direction });
        }
        let given: u64 = entries
            .iter()
            .filter_map(|e| e.percent)
            .map(u64::from)
            .sum();
        let missing = entries.iter().filter(|e| e.percent.is_none()).count() as u64;
        if given > 100 {
            return Err(WorkloadError::BsSplitOver100 {
                direction,
                total_percent: given,
            });
        }
        let share_of_missing = (100 - given).checked_div(missing).unwrap_or(0);
        let mut cumulative = 0u32;
        let mut table = Vec::with_capacity(entries.len());
        for entry in entries {
            // Both parts are at most 100, so the sum cannot overflow.
            cumulative += entry.percent.unwrap_or(share_of_missing as u32);
            table.push((entry.len_bytes, cumulative));
        }
        if let Some(last) = table.last_mut() {
            last.1 = 100;
        }
        Ok(BlockSizePicker::Split(table))
    }

    pub(crate) fn pick(&self, rng: &mut SplitMix64) -> u32 {
        match self {
            BlockSizePicker::Fixed(len) => *len,
            BlockSizePicker::Range {
                min_bytes,
                multiples,
            } => {
                let multiple = 1 + rng.below(u64::from(*multiples)) as u32;
                min_bytes.saturating_mul(multiple)
            }
            BlockSizePicker::Unaligned {
                min_bytes,
                max_bytes,
            } => {
                let drawn = u64::from(*min_bytes) + rng.below(u64::from(*max_bytes));
                drawn.min(u64::from(*max_bytes)) as u32
            }
            BlockSizePicker::Split(table) => {
                let draw = rng.below(100) as u32;
                table
                    .iter()
                    .find(|(_, cumulative)| draw < *cumulative)
                    .or(table.last())
                    .map_or(0, |(len, _)| *len)
            }
        }
    }

    pub(crate) fn min_bytes(&self) -> u32 {
        match self {
            BlockSizePicker::Fixed(len) => *len,
            BlockSizePicker::Range { min_bytes, .. } => *min_bytes,
            BlockSizePicker::Unaligned { min_bytes, .. } => *min_bytes,
            BlockSizePicker::Split(table) => table.iter().map(|(len, _)| *len).min().unwrap_or(0),
        }
    }

    pub(crate) fn max_bytes(&self) -> u32 {
        match self {
            BlockSizePicker::Fixed(len) => *len,
            BlockSizePicker::Range {
                min_bytes,
                multiples,
            } => min_bytes.saturating_mul(*multiples),
            BlockSizePicker::Unaligned { max_bytes, .. } => *max_bytes,
            BlockSizePicker::Split(table) => table.iter().map(|(len, _)| *len).max().unwrap_or(0),
        }
    }

    /// Every length this picker can return (for checks against the verify interval).
    pub(crate) fn each_len(&self) -> Vec<u32> {
        match self {
            BlockSizePicker::Fixed(len) => vec![*len],
            BlockSizePicker::Range { min_bytes, .. } => vec![*min_bytes],
            // Every length in the range (the job refuses verify with bs_unaligned).
            BlockSizePicker::Unaligned {
                min_bytes,
                max_bytes,
            } => vec![*min_bytes, *max_bytes],
            BlockSizePicker::Split(table) => table.iter().map(|(len, _)| *len).collect(),
        }
    }

    pub(crate) fn fixed(&self) -> Option<u32> {
        match self {
            BlockSizePicker::Fixed(len) => Some(*len),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::BsSplitEntry;
    use super::*;
    use proptest::prelude::*;

    fn entry(len_bytes: u32, percent: Option<u32>) -> BsSplitEntry {
        BsSplitEntry { len_bytes, percent }
    }

    fn counts(picker: &BlockSizePicker, draws: u32) -> std::collections::BTreeMap<u32, u32> {
        let mut rng = SplitMix64::new(8);
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..draws {
            *counts.entry(picker.pick(&mut rng)).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn bssplit_follows_the_weights() {
        let spec = BlockSizeSpec::Split(vec![
            entry(4096, Some(10)),
            entry(65536, Some(50)),
            entry(32768, Some(40)),
        ]);
        let picker = BlockSizePicker::new(Direction::Read, &spec).expect("valid");
        let counts = counts(&picker, 100_000);
        let share = |len: u32| f64::from(counts.get(&len).copied().unwrap_or(0)) / 100_000.0;
        assert!((share(4096) - 0.10).abs() < 0.01, "{counts:?}");
        assert!((share(65536) - 0.50).abs() < 0.01, "{counts:?}");
        assert!((share(32768) - 0.40).abs() < 0.01, "{counts:?}");
    }

    #[test]
    fn bssplit_blank_weights_share_the_rest() {
        // fio(1): "bssplit=4k/50:1k/:32k/ would have 50% 4k ios, and 25% 1k and 32k ios".
        let spec = BlockSizeSpec::Split(vec![
            entry(4096, Some(50)),
            entry(1024, None),
            entry(32768, None),
        ]);
        let picker = BlockSizePicker::new(Direction::Write, &spec).expect("valid");
        let counts = counts(&picker, 100_000);
        let share = |len: u32| f64::from(counts.get(&len).copied().unwrap_or(0)) / 100_000.0;
        assert!((share(4096) - 0.50).abs() < 0.01, "{counts:?}");
        assert!((share(1024) - 0.25).abs() < 0.01, "{counts:?}");
        assert!((share(32768) - 0.25).abs() < 0.01, "{counts:?}");
    }

    #[test]
    fn bssplit_errors() {
        let over = BlockSizeSpec::Split(vec![entry(4096, Some(60)), entry(8192, Some(50))]);
        assert!(matches!(
            BlockSizePicker::new(Direction::Read, &over),
            Err(WorkloadError::BsSplitOver100 {
                total_percent: 110,
                ..
            })
        ));
        assert!(matches!(
            BlockSizePicker::new(Direction::Read, &BlockSizeSpec::Split(vec![])),
            Err(WorkloadError::BsSplitEmpty { .. })
        ));
        let too_many = BlockSizeSpec::Split((1..=65).map(|i| entry(512 * i, None)).collect());
        assert!(matches!(
            BlockSizePicker::new(Direction::Read, &too_many),
            Err(WorkloadError::BsSplitTooManyEntries { entries: 65, .. })
        ));
        let zero = BlockSizeSpec::Split(vec![entry(0, None)]);
        assert!(matches!(
            BlockSizePicker::new(Direction::Trim, &zero),
            Err(WorkloadError::ZeroBlockSize {
                direction: Direction::Trim
            })
        ));
    }

    #[test]
    fn bssplit_short_of_100_gives_the_rest_to_the_last() {
        let spec = BlockSizeSpec::Split(vec![entry(4096, Some(30)), entry(8192, Some(30))]);
        let picker = BlockSizePicker::new(Direction::Read, &spec).expect("valid");
        let counts = counts(&picker, 100_000);
        let share_8k = f64::from(counts.get(&8192).copied().unwrap_or(0)) / 100_000.0;
        assert!((share_8k - 0.70).abs() < 0.01, "{counts:?}");
    }

    #[test]
    fn bs_unaligned_draws_any_length_as_fio_does() {
        let spec = BlockSizeSpec::RangeUnaligned {
            min_bytes: 1024,
            max_bytes: 8192,
        };
        let picker = BlockSizePicker::new(Direction::Read, &spec).expect("valid");
        let counts = counts(&picker, 40_000);
        assert!(counts.keys().all(|len| (1024..=8192).contains(len)));
        assert!(counts.keys().any(|len| len % 512 != 0), "{counts:?}");
        // fio's draw past the maximum becomes the maximum: 1/8 of them here.
        let at_max = counts[&8192];
        assert!((4_000..6_000).contains(&at_max), "{at_max}");
    }

    #[test]
    fn bsrange_gives_multiples_of_the_minimum_uniformly() {
        let spec = BlockSizeSpec::Range {
            min_bytes: 1024,
            max_bytes: 4096,
        };
        let picker = BlockSizePicker::new(Direction::Read, &spec).expect("valid");
        let counts = counts(&picker, 40_000);
        assert_eq!(
            counts.keys().copied().collect::<Vec<_>>(),
            vec![1024, 2048, 3072, 4096]
        );
        for count in counts.values() {
            assert!((9_000..11_000).contains(count), "{counts:?}");
        }
        // A maximum that is not a multiple is rounded down to one.
        let spec = BlockSizeSpec::Range {
            min_bytes: 4096,
            max_bytes: 10_000,
        };
        let picker = BlockSizePicker::new(Direction::Read, &spec).expect("valid");
        assert_eq!(picker.max_bytes(), 8192);
        let inverted = BlockSizeSpec::Range {
            min_bytes: 8192,
            max_bytes: 4096,
        };
        assert!(matches!(
            BlockSizePicker::new(Direction::Write, &inverted),
            Err(WorkloadError::BlockSizeRangeInverted { .. })
        ));
    }

    proptest! {
        #[test]
        fn bssplit_proportions_match(weights in proptest::collection::vec(1u32..40, 1..5)) {
            let total: u32 = weights.iter().sum();
            prop_assume!(total <= 100);
            let entries: Vec<BsSplitEntry> = weights
                .iter()
                .enumerate()
                .map(|(i, w)| entry(512 << i, Some(*w)))
                .collect();
            let picker = BlockSizePicker::new(Direction::Read, &BlockSizeSpec::Split(entries)).expect("valid");
            let draws = 50_000u32;
            let counts = counts(&picker, draws);
            for (i, weight) in weights.iter().enumerate() {
                let mut expected = f64::from(*weight) / 100.0;
                if i + 1 == weights.len() {
                    expected += f64::from(100 - total) / 100.0;
                }
                let got = f64::from(counts.get(&(512 << i)).copied().unwrap_or(0)) / f64::from(draws);
                prop_assert!((got - expected).abs() < 0.015, "entry {} expected {} got {}", i, expected, got);
            }
        }
    }
}
