//! A job's recorder in a form that travels (serde, JSON): every counter, the exact latency
//! moments (floats by their bits, so nothing is lost to decimal text) and the whole
//! histograms ([`super::hdr_v2`]). [`JobStats::from_portable`] of
//! [`JobStats::to_portable`] is the recorder again, so recorders of several hosts merge
//! exactly as recorders of one process do (`iscsi-bench --client` and `iscsi-bench merge`).
//!
//! Not carried: the live counters, the sampling state of a running job and its current
//! interval (a finished job has none), and the first error's kind (its text is kept).

use serde::{Deserialize, Serialize};

use super::dist::{DepthDistribution, LatencyBuckets};
use super::errors::{ErrorCounts, SenseCode};
use super::hdr_v2::{self, HistogramDecodeError};
use super::job::{DirStats, JobStats, StatsConfig};
use super::latency::{LatencyStat, Moments};
use super::rusage::ResourceUsage;

/// [`Moments`] with its floats as IEEE bits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortableMoments {
    pub count: u64,
    pub min: u64,
    pub max: u64,
    pub mean_bits: u64,
    pub m2_bits: u64,
}

/// A [`LatencyStat`]: moments and the V2 histogram in base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortableLatency {
    pub moments: PortableMoments,
    pub hdr_v2: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortableDir {
    pub ios: u64,
    pub bytes: u64,
    pub short_ios: u64,
    pub slat: PortableLatency,
    pub clat: PortableLatency,
    pub lat: PortableLatency,
    pub bw_kib: PortableMoments,
    pub iops: PortableMoments,
    pub runtime_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortableErrors {
    /// (sense key, ASC, ASCQ, count).
    pub check_condition: Vec<(u8, u8, u8, u64)>,
    /// (status, count).
    pub status: Vec<(u8, u64)>,
    pub short: u64,
    pub timeout: u64,
    pub transport: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
}

/// Everything a finished [`JobStats`] reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortableStats {
    pub sample_interval_ms: u64,
    pub start_ns: u64,
    /// (direction index: read 0, write 1, trim 2; its results), for each direction seen.
    /// A list, not `[Option; 3]`: fio-shaped JSON has no null.
    pub dirs: Vec<(u8, PortableDir)>,
    pub latency_ns: [u64; 10],
    pub latency_us: [u64; 10],
    pub latency_ms: [u64; 12],
    pub depth_level: [u64; 7],
    pub depth_submit: [u64; 7],
    pub depth_complete: [u64; 7],
    pub total_submit: u64,
    pub total_complete: u64,
    pub errors: PortableErrors,
    /// user_ns, system_ns, context switches, major faults, minor faults.
    pub usage: [u64; 5],
    pub job_runtime_ms: u64,
    /// The longest time between two completions (0 from a file without it).
    #[serde(default)]
    pub longest_gap_ns: u64,
}

fn moments_out(m: &Moments) -> PortableMoments {
    let (count, min, max, mean, m2) = m.raw();
    PortableMoments {
        count,
        min,
        max,
        mean_bits: mean.to_bits(),
        m2_bits: m2.to_bits(),
    }
}

fn moments_in(m: &PortableMoments) -> Moments {
    Moments::from_raw(
        m.count,
        m.min,
        m.max,
        f64::from_bits(m.mean_bits),
        f64::from_bits(m.m2_bits),
    )
}

fn latency_out(stat: &LatencyStat) -> PortableLatency {
    PortableLatency {
        moments: moments_out(stat.moments()),
        hdr_v2: hdr_v2::encode_base64(stat.histogram()),
    }
}

fn latency_in(stat: &PortableLatency) -> Result<LatencyStat, HistogramDecodeError> {
    Ok(LatencyStat::from_parts(
        moments_in(&stat.moments),
        hdr_v2::decode_base64(&stat.hdr_v2)?,
    ))
}

impl JobStats {
    /// The recorder as it travels.
    pub fn to_portable(&self) -> PortableStats {
        let dirs = (0u8..)
            .zip(&self.dirs)
            .filter_map(|(i, dir)| Some((i, dir.as_deref()?)))
            .map(|(i, d)| {
                (
                    i,
                    PortableDir {
                        ios: d.ios,
                        bytes: d.bytes,
                        short_ios: d.short_ios,
                        slat: latency_out(&d.slat),
                        clat: latency_out(&d.clat),
                        lat: latency_out(&d.lat),
                        bw_kib: moments_out(&d.bw_kib),
                        iops: moments_out(&d.iops),
                        runtime_ms: d.runtime_ms,
                    },
                )
            })
            .collect();
        let e = &self.errors;
        PortableStats {
            sample_interval_ms: self.config.sample_interval_ms,
            start_ns: self.start_ns,
            dirs,
            latency_ns: self.latency_buckets.ns,
            latency_us: self.latency_buckets.us,
            latency_ms: self.latency_buckets.ms,
            depth_level: self.depth.level,
            depth_submit: self.depth.submit,
            depth_complete: self.depth.complete,
            total_submit: self.depth.total_submit,
            total_complete: self.depth.total_complete,
            errors: PortableErrors {
                check_condition: e
                    .check_condition
                    .iter()
                    .map(|(c, n)| (c.key, c.asc, c.ascq, *n))
                    .collect(),
                status: e.status.iter().map(|(s, n)| (*s, *n)).collect(),
                short: e.short,
                timeout: e.timeout,
                transport: e.transport,
                first: e.first.as_ref().map(ToString::to_string),
            },
            usage: [
                self.usage.user_ns,
                self.usage.system_ns,
                self.usage.context_switches,
                self.usage.major_faults,
                self.usage.minor_faults,
            ],
            job_runtime_ms: self.job_runtime_ms,
            longest_gap_ns: self.longest_gap_ns,
        }
    }

    /// The recorder back; a histogram that is not ours is refused by name.
    pub fn from_portable(p: &PortableStats) -> Result<JobStats, HistogramDecodeError> {
        let mut stats = JobStats::new(
            p.start_ns,
            StatsConfig {
                sample_interval_ms: p.sample_interval_ms,
                iops_sample_interval_ms: p.sample_interval_ms,
                track_intervals: false,
                measure: crate::stats::Measured::default(),
            },
        );
        for (index, d) in &p.dirs {
            let Some(slot) = stats.dirs.get_mut(usize::from(*index)) else {
                return Err(HistogramDecodeError::Direction(*index));
            };
            *slot = Some(Box::new(DirStats {
                ios: d.ios,
                bytes: d.bytes,
                short_ios: d.short_ios,
                slat: latency_in(&d.slat)?,
                clat: latency_in(&d.clat)?,
                lat: latency_in(&d.lat)?,
                bw_kib: moments_in(&d.bw_kib),
                iops: moments_in(&d.iops),
                runtime_ms: d.runtime_ms,
            }));
        }
        stats.latency_buckets = LatencyBuckets {
            ns: p.latency_ns,
            us: p.latency_us,
            ms: p.latency_ms,
        };
        stats.depth = DepthDistribution {
            level: p.depth_level,
            submit: p.depth_submit,
            complete: p.depth_complete,
            total_submit: p.total_submit,
            total_complete: p.total_complete,
        };
        let e = &p.errors;
        stats.errors = ErrorCounts {
            check_condition: e
                .check_condition
                .iter()
                .map(|&(key, asc, ascq, n)| (SenseCode { key, asc, ascq }, n))
                .collect(),
            status: e.status.iter().copied().collect(),
            short: e.short,
            timeout: e.timeout,
            transport: e.transport,
            first: e.first.clone().map(crate::io::IoError::Transport),
        };
        let [user_ns, system_ns, context_switches, major_faults, minor_faults] = p.usage;
        stats.usage = ResourceUsage {
            user_ns,
            system_ns,
            context_switches,
            major_faults,
            minor_faults,
        };
        stats.job_runtime_ms = p.job_runtime_ms;
        stats.longest_gap_ns = p.longest_gap_ns;
        // A finished recorder: no further completion makes a gap.
        stats.gaps_end_ns = Some(stats.last_completion_ns);
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::Direction;
    use crate::stats::FIO_DEFAULT_PERCENTILES;
    use proptest::prelude::*;

    /// One I/O of a recorded run: direction, slat, clat, lat (ns).
    type Io = (u8, u64, u64, u64);

    fn record(ios: &[Io]) -> JobStats {
        let mut stats = JobStats::new(0, StatsConfig::default());
        for &(dir, slat, clat, lat) in ios {
            let direction = [Direction::Read, Direction::Write, Direction::Trim][dir as usize % 3];
            stats.record(direction, 4096, slat, clat, lat);
        }
        stats.finish(1_000_000_000);
        stats
    }

    fn travelled(stats: &JobStats) -> JobStats {
        let text = serde_json::to_string(&stats.to_portable()).unwrap();
        let back: PortableStats = serde_json::from_str(&text).unwrap();
        JobStats::from_portable(&back).unwrap()
    }

    fn latency_strategy() -> impl Strategy<Value = u64> {
        prop_oneof![0u64..5_000, 1_000u64..50_000_000, 0u64..u64::MAX / 2]
    }

    #[test]
    fn a_recorder_travels_unchanged() {
        let mut stats = record(&[(0, 10, 2_000, 2_100), (1, 5, 900_000, 901_000)]);
        stats.record_error(
            Direction::Read,
            &crate::io::IoError::CheckCondition {
                key: 3,
                asc: 0x11,
                ascq: 0,
            },
        );
        stats.record_submit(4, 3);
        let back = travelled(&stats);
        assert_eq!(back.to_portable(), stats.to_portable());
        assert_eq!(back.errors().total(), 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Merging any split of a run, each part sent through JSON, gives bit-identical
        /// percentiles (and counts, min, max) to the whole run recorded in one place.
        #[test]
        fn any_split_merges_to_the_whole(
            ios in proptest::collection::vec(
                (0u8..3, latency_strategy(), latency_strategy(), latency_strategy()), 1..400),
            parts in 1usize..9,
            assignment in proptest::collection::vec(0usize..64, 400),
        ) {
            let whole = record(&ios);
            let mut split: Vec<Vec<Io>> = vec![Vec::new(); parts];
            for (i, io) in ios.iter().enumerate() {
                split[assignment[i] % parts].push(*io);
            }
            let mut merged = travelled(&record(&split[0]));
            for part in &split[1..] {
                merged.merge(&travelled(&record(part)));
            }
            let mut list = FIO_DEFAULT_PERCENTILES.to_vec();
            list.extend([0.001, 12.5, 99.9999, 100.0]);
            for direction in [Direction::Read, Direction::Write, Direction::Trim] {
                let (a, b) = (whole.dir(direction), merged.dir(direction));
                prop_assert_eq!(a.is_some(), b.is_some());
                let (Some(a), Some(b)) = (a, b) else { continue };
                prop_assert_eq!(a.ios, b.ios);
                for (x, y) in [(&a.slat, &b.slat), (&a.clat, &b.clat), (&a.lat, &b.lat)] {
                    prop_assert_eq!(x.percentiles(&list), y.percentiles(&list));
                    prop_assert_eq!(x.moments().min(), y.moments().min());
                    prop_assert_eq!(x.moments().max(), y.moments().max());
                    prop_assert_eq!(x.count(), y.count());
                }
            }
            prop_assert_eq!(whole.latency_buckets(), merged.latency_buckets());
        }
    }
}
