//! Skewed random offsets: fio's `random_distribution` (fio(1), "random_distribution"):
//! `zipf:theta`, `pareto:h`, `normal:stddev%`, each with an optional `:center`.
//!
//! Each model draws a *rank* in `0..n` (rank 0 the hottest for zipf and pareto; for normal the
//! ranks cluster around the centre) and then places ranks on blocks:
//! - without a centre (fio's default for zipf and pareto), ranks are scattered over the
//!   region by a seeded permutation, as fio scatters them with a hash: the hot blocks are
//!   spread out, and the same seed gives the same hot blocks. Unlike fio's hash, a
//!   permutation never sends two ranks to one block, so the skew is exactly the model's;
//! - with a centre `c` in `[0, 1]` the ranks are laid out in order from block `c * n`,
//!   wrapping at the end, so the hot spot is where the user put it.
//!
//! `normal` without a centre is centred at 0.5 and scattered, as fio does by default.
//!
//! Zipf uses the method of Gray et al., "Quickly generating billion-record synthetic
//! databases" (SIGMOD 1994), as fio does. Its normalising sum `zeta(n, theta)` is summed
//! exactly for the first 100,000 terms and by the Euler-Maclaurin formula beyond, where fio
//! stops summing at 10 million terms. Pareto follows fio's power law: rank =
//! `(n - 1) * u^(ln h / ln(1 - h))`. Normal uses Box-Muller with a standard deviation of
//! `stddev%` of the region, folded back into it at the ends.

use super::permutation::Permutation;
use super::rng::SplitMix64;
use super::WorkloadError;
use crate::io::{Direction, PerDir, Zone};

/// Terms of the zipf normalising sum computed one by one before switching to the closed form.
const ZIPF_EXACT_TERMS: u64 = 100_000;

#[derive(Debug, Clone)]
enum Model {
    Zipf {
        zeta_n: f64,
        alpha: f64,
        eta: f64,
        second_threshold: f64,
    },
    Pareto {
        power: f64,
    },
    Normal {
        stddev_units: f64,
        centre_units: f64,
    },
}

#[derive(Debug, Clone)]
enum Placement {
    Scatter(Permutation),
    From(u64),
}

/// Draws block indexes in `0..n` with a skewed popularity.
#[derive(Debug, Clone)]
pub(crate) struct SkewedSampler {
    units: u64,
    model: Model,
    placement: Placement,
}

impl SkewedSampler {
    pub(crate) fn zipf(units: u64, theta: f64, centre: Option<f64>, scatter_key: u64) -> Self {
        let units = units.max(1);
        let n = units as f64;
        let zeta_n = zeta(units, theta);
        let zeta_2 = 1.0 + 0.5f64.powf(theta);
        let alpha = 1.0 / (1.0 - theta);
        let eta = if units <= 2 {
            0.0
        } else {
            (1.0 - (2.0 / n).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n)
        };
        SkewedSampler {
            units,
            model: Model::Zipf {
                zeta_n,
                alpha,
                eta,
                second_threshold: zeta_2,
            },
            placement: placement(units, centre, scatter_key),
        }
    }

    pub(crate) fn pareto(units: u64, h: f64, centre: Option<f64>, scatter_key: u64) -> Self {
        let units = units.max(1);
        SkewedSampler {
            units,
            model: Model::Pareto {
                power: h.ln() / (1.0 - h).ln(),
            },
            placement: placement(units, centre, scatter_key),
        }
    }

    pub(crate) fn normal(
        units: u64,
        stddev_percent: f64,
        centre: Option<f64>,
        scatter_key: u64,
    ) -> Self {
        let units = units.max(1);
        let n = units as f64;
        let (centre_fraction, placement) = match centre {
            Some(c) => (c, Placement::From(0)),
            None => (
                0.5,
                Placement::Scatter(Permutation::new(units, scatter_key)),
            ),
        };
        SkewedSampler {
            units,
            model: Model::Normal {
                stddev_units: stddev_percent / 100.0 * n,
                centre_units: centre_fraction * n,
            },
            placement,
        }
    }

    pub(crate) fn sample(&self, rng: &mut SplitMix64) -> u64 {
        let rank = self.rank(rng).min(self.units - 1);
        match &self.placement {
            Placement::Scatter(permutation) => permutation.apply(rank),
            Placement::From(start) => (start % self.units + rank) % self.units,
        }
    }

    fn rank(&self, rng: &mut SplitMix64) -> u64 {
        let n = self.units as f64;
        match self.model {
            Model::Zipf {
                zeta_n,
                alpha,
                eta,
                second_threshold,
            } => {
                let u = rng.next_f64();
                let uz = u * zeta_n;
                if uz < 1.0 {
                    0
                } else if uz < second_threshold && self.units >= 2 {
                    1
                } else {
                    let rank = n * (eta * u - eta + 1.0).powf(alpha);
                    to_rank(rank)
                }
            }
            Model::Pareto { power } => to_rank((n - 1.0) * rng.next_f64().powf(power)),
            Model::Normal {
                stddev_units,
                centre_units,
            } => {
                // Box-Muller: one standard normal from two uniforms.
                let radius = (-2.0 * rng.next_f64_open_zero().ln()).sqrt();
                let angle = std::f64::consts::TAU * rng.next_f64();
                let value = centre_units + stddev_units * radius * angle.cos();
                to_rank(value.rem_euclid(n))
            }
        }
    }
}

fn placement(units: u64, centre: Option<f64>, scatter_key: u64) -> Placement {
    match centre {
        Some(c) => Placement::From((c.clamp(0.0, 1.0) * units as f64) as u64),
        None => Placement::Scatter(Permutation::new(units, scatter_key)),
    }
}

/// A float rank to an index, saturating; NaN (from degenerate parameters) goes to 0.
fn to_rank(value: f64) -> u64 {
    if value.is_nan() || value <= 0.0 {
        0
    } else if value >= u64::MAX as f64 {
        u64::MAX
    } else {
        value as u64
    }
}

/// `sum_{i=1..n} i^-theta`: exact for the first terms, Euler-Maclaurin for the tail.
fn zeta(n: u64, theta: f64) -> f64 {
    let exact_terms = n.min(ZIPF_EXACT_TERMS);
    let mut sum = 0.0;
    for i in 1..=exact_terms {
        sum += (i as f64).powf(-theta);
    }
    if n > exact_terms {
        let m = exact_terms as f64;
        let n = n as f64;
        let f = |x: f64| x.powf(-theta);
        let f_prime = |x: f64| -theta * x.powf(-theta - 1.0);
        let integral = (n.powf(1.0 - theta) - m.powf(1.0 - theta)) / (1.0 - theta);
        sum += integral + (f(n) - f(m)) / 2.0 + (f_prime(n) - f_prime(m)) / 12.0;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Share of all hits that land on the most-hit `top_fraction` of blocks.
    fn top_share(sampler: &SkewedSampler, units: u64, draws: u32, top_fraction: f64) -> f64 {
        let mut hits = vec![0u32; units as usize];
        let mut rng = SplitMix64::new(11);
        for _ in 0..draws {
            let block = sampler.sample(&mut rng);
            assert!(block < units);
            hits[block as usize] += 1;
        }
        hits.sort_unstable_by(|a, b| b.cmp(a));
        let top = (units as f64 * top_fraction).ceil() as usize;
        hits[..top].iter().map(|&h| f64::from(h)).sum::<f64>() / f64::from(draws)
    }

    #[test]
    fn zeta_tail_matches_exact_sum() {
        let exact: f64 = (1..=300_000u64).map(|i| (i as f64).powf(-1.2)).sum();
        let approximated = zeta(300_000, 1.2);
        assert!(
            (exact - approximated).abs() / exact < 1e-9,
            "{exact} {approximated}"
        );
        let exact: f64 = (1..=250_000u64).map(|i| (i as f64).powf(-0.8)).sum();
        assert!((exact - zeta(250_000, 0.8)).abs() / exact < 1e-9);
    }

    #[test]
    fn zipf_top_tenth_gets_most_hits() {
        let units = 10_000;
        let sampler = SkewedSampler::zipf(units, 1.2, None, 5);
        let share = top_share(&sampler, units, 200_000, 0.10);
        assert!(share > 0.75, "zipf 1.2: top 10% got {share}");
        // Uniform for comparison: the top tenth gets only a little over a tenth.
        let uniform_share = {
            let mut hits = vec![0u32; units as usize];
            let mut rng = SplitMix64::new(11);
            for _ in 0..200_000 {
                hits[rng.below(units) as usize] += 1;
            }
            hits.sort_unstable_by(|a, b| b.cmp(a));
            hits[..1000].iter().map(|&h| f64::from(h)).sum::<f64>() / 200_000.0
        };
        assert!(uniform_share < 0.2, "{uniform_share}");
    }

    #[test]
    fn zipf_theta_below_one_still_skews() {
        let units = 10_000;
        let share = top_share(
            &SkewedSampler::zipf(units, 0.8, None, 5),
            units,
            200_000,
            0.10,
        );
        assert!(share > 0.4 && share < 0.9, "zipf 0.8: top 10% got {share}");
    }

    #[test]
    fn zipf_frequency_follows_the_power_law() {
        // With a centre the ranks are laid out in order: block 0 is rank 1, block 1 rank 2.
        let units = 1000;
        let sampler = SkewedSampler::zipf(units, 1.2, Some(0.0), 0);
        let mut rng = SplitMix64::new(2);
        let mut hits = vec![0u32; units as usize];
        for _ in 0..400_000 {
            hits[sampler.sample(&mut rng) as usize] += 1;
        }
        // P(rank 1) / P(rank 2) = 2^1.2 = 2.30.
        let ratio = f64::from(hits[0]) / f64::from(hits[1]);
        assert!((ratio - 2.30).abs() < 0.15, "{ratio}");
        let expected_first = 1.0 / zeta(units, 1.2);
        let first = f64::from(hits[0]) / 400_000.0;
        assert!(
            (first - expected_first).abs() < 0.01,
            "{first} vs {expected_first}"
        );
    }

    #[test]
    fn pareto_top_tenth_gets_most_hits() {
        let units = 10_000;
        let share = top_share(
            &SkewedSampler::pareto(units, 0.3, None, 9),
            units,
            200_000,
            0.10,
        );
        // fio's pareto:0.3: rank = n * u^3.37, so the first tenth of ranks holds
        // P(u^3.37 < 0.1) = 0.1^(1/3.37) = 50% of the hits.
        assert!(share > 0.45, "pareto 0.3: top 10% got {share}");
        let share_sharp = top_share(
            &SkewedSampler::pareto(units, 0.1, None, 9),
            units,
            200_000,
            0.10,
        );
        assert!(share_sharp > share, "{share_sharp} <= {share}");
    }

    #[test]
    fn normal_clusters_around_the_centre() {
        let units = 10_000;
        let sampler = SkewedSampler::normal(units, 5.0, Some(0.25), 0);
        let mut rng = SplitMix64::new(4);
        let draws = 100_000;
        let within_one_sigma = (0..draws)
            .map(|_| sampler.sample(&mut rng))
            .filter(|&block| (2000..3000).contains(&block))
            .count();
        let share = within_one_sigma as f64 / f64::from(draws);
        assert!((share - 0.683).abs() < 0.02, "{share}");
    }

    #[test]
    fn hot_spots_come_from_the_seed() {
        let units = 5000;
        let hottest = |key: u64| {
            let sampler = SkewedSampler::zipf(units, 1.5, None, key);
            let mut rng = SplitMix64::new(1);
            let mut hits = vec![0u32; units as usize];
            for _ in 0..20_000 {
                hits[sampler.sample(&mut rng) as usize] += 1;
            }
            (0..units as usize).max_by_key(|&i| hits[i]).unwrap_or(0)
        };
        assert_eq!(hottest(3), hottest(3));
        assert_ne!(hottest(3), hottest(4));
    }

    #[test]
    fn degenerate_sizes_stay_in_range() {
        let mut rng = SplitMix64::new(0);
        for units in 1..5 {
            for sampler in [
                SkewedSampler::zipf(units, 1.2, None, 1),
                SkewedSampler::zipf(units, 0.5, Some(1.0), 1),
                SkewedSampler::pareto(units, 0.5, None, 1),
                SkewedSampler::normal(units, 0.0, None, 1),
                SkewedSampler::normal(units, 100.0, Some(1.0), 1),
            ] {
                for _ in 0..100 {
                    assert!(sampler.sample(&mut rng) < units);
                }
            }
        }
    }
}

/// fio's `zoned` and `zoned_abs` distributions (fio's `__get_next_rand_offset_zoned*`): a
/// draw in 1..=100 picks a zone by its access percentage, then a unit uniformly inside it.
/// fio looks for a free block of its random map inside the zone; here a zone draws with
/// repeats, as the other skewed distributions do.
#[derive(Debug, Clone)]
pub(crate) struct ZonedSampler {
    units: u64,
    /// Per direction, indexed by draw - 1: the zone's first unit and its length in units.
    /// `None` for a direction without zones (uniform over the region).
    tables: PerDir<Option<Vec<(u64, u64)>>>,
}

impl ZonedSampler {
    pub(crate) fn new(
        zones: &PerDir<Vec<Zone>>,
        absolute: bool,
        units: u64,
        unit_bytes: u64,
    ) -> Result<Self, WorkloadError> {
        let units = units.max(1);
        let unit_bytes = unit_bytes.max(1);
        let mut tables = PerDir::splat(None);
        for direction in [Direction::Read, Direction::Write, Direction::Trim] {
            let list = zones.get(direction);
            if list.is_empty() {
                continue;
            }
            let mut table = Vec::with_capacity(100);
            let mut start = 0u64;
            for zone in list {
                let (first, len) = if absolute {
                    let first = start / unit_bytes;
                    let end = (start + zone.size) / unit_bytes;
                    if end > units {
                        return Err(WorkloadError::ZonesBeyondRegion {
                            zones_end_bytes: start + zone.size,
                            size_bytes: units * unit_bytes,
                        });
                    }
                    (first, end - first)
                } else {
                    // fio: start = stotal% of the blocks, length = size% of them.
                    let first = start * units / 100;
                    (first, units * zone.size / 100)
                };
                for _ in 0..zone.access_percent {
                    table.push((first, len.max(1)));
                }
                start += zone.size;
            }
            *tables.get_mut(direction) = Some(table);
        }
        Ok(ZonedSampler { units, tables })
    }

    pub(crate) fn sample(&self, direction: Direction, rng: &mut SplitMix64) -> u64 {
        match self.tables.get(direction) {
            Some(table) if !table.is_empty() => {
                let (first, len) = table[rng.below(table.len() as u64) as usize];
                (first + rng.below(len)).min(self.units - 1)
            }
            _ => rng.below(self.units),
        }
    }
}
