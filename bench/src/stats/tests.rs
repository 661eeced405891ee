use proptest::prelude::*;

use super::*;
use crate::io::{Direction, IoError};

/// Nearest-rank percentile of raw data by fio's rule: the first value whose rank reaches
/// `p / 100 * n`.
fn exact_percentile(sorted: &[u64], p: f64) -> u64 {
    let n = sorted.len();
    let mut rank = 1usize;
    while rank < n && (rank as f64) < p / 100.0 * n as f64 {
        rank += 1;
    }
    sorted[rank - 1]
}

const LIST: [f64; 20] = [
    0.5, 1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 99.5, 99.9,
    99.95, 99.99, 99.999, 100.0,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Shards merged give exactly the percentiles of one histogram of all the data, and
    /// those agree with the raw data's own percentiles to 3 significant digits.
    #[test]
    fn merged_percentiles_equal_combined_raw_data(
        shards in prop::collection::vec(
            prop::collection::vec(
                prop_oneof![0u64..2_000, 2_000u64..5_000_000, 5_000_000u64..7_200_000_000_000],
                1..400,
            ),
            1..6,
        )
    ) {
        let mut merged = LatencyStat::new();
        let mut combined = LatencyStat::new();
        let mut raw: Vec<u64> = Vec::new();
        for shard in &shards {
            let mut one = LatencyStat::new();
            for &value in shard {
                one.record(value);
                combined.record(value);
                raw.push(value);
            }
            merged.merge(&one);
        }
        raw.sort_unstable();
        let from_merged = merged.percentiles(&LIST);
        prop_assert_eq!(&from_merged, &combined.percentiles(&LIST));
        prop_assert_eq!(from_merged.len(), LIST.len());
        for (p, reported) in from_merged {
            let exact = exact_percentile(&raw, p);
            // The report is the top of the exact value's 3-digit bucket (or the exact
            // max when that is lower); values past the histogram's hour saturate.
            if exact <= LATENCY_HIGHEST_NS {
                let h = merged.histogram();
                prop_assert!(reported >= exact, "p{p}: {reported} < exact {exact}");
                prop_assert!(
                    h.equivalent(reported, exact) || reported == *raw.last().unwrap(),
                    "p{p}: {reported} not equivalent to exact {exact}"
                );
                prop_assert!((reported - exact) as f64 <= exact as f64 / 1000.0 + 1.0);
            }
        }
        let m = merged.moments();
        let c = combined.moments();
        prop_assert_eq!(m.count(), raw.len() as u64);
        prop_assert_eq!(m.min(), raw[0]);
        prop_assert_eq!(m.max(), *raw.last().unwrap());
        prop_assert!((m.mean() - c.mean()).abs() <= c.mean().abs() * 1e-9 + 1e-6);
        prop_assert!((m.stddev() - c.stddev()).abs() <= c.stddev() * 1e-6 + 1e-3);
    }
}

#[test]
fn moments_match_textbook_values() {
    let mut m = Moments::default();
    for v in [2, 4, 4, 4, 5, 5, 7, 9] {
        m.add(v);
    }
    assert_eq!((m.count(), m.min(), m.max()), (8, 2, 9));
    assert!((m.mean() - 5.0).abs() < 1e-12);
    // Sample standard deviation (n - 1): sqrt(32 / 7).
    assert!((m.stddev() - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
    let mut one = Moments::default();
    one.add(7);
    assert_eq!(one.stddev(), 0.0);
}

#[test]
fn summed_moments_add_like_fio_group_reporting() {
    let mut a = Moments::default();
    let mut b = Moments::default();
    for v in [100, 200] {
        a.add(v);
    }
    for v in [10, 30] {
        b.add(v);
    }
    a.merge_summed(&b);
    assert_eq!((a.min(), a.max(), a.count()), (110, 230, 4));
    assert!((a.mean() - 170.0).abs() < 1e-9);
}

#[test]
fn percentile_values_clamp_to_exact_extremes() {
    let mut s = LatencyStat::new();
    s.record(123_456_789);
    let p = s.percentiles(&[50.0, 100.0]);
    assert_eq!(p, vec![(50.0, 123_456_789), (100.0, 123_456_789)]);
    assert!(LatencyStat::new().percentiles(&[50.0]).is_empty());
    // Out-of-range entries are skipped; the list comes back sorted.
    let mut s = LatencyStat::new();
    for v in 1..=1000 {
        s.record(v);
    }
    let p = s.percentiles(&[90.0, 0.0, 50.0, 101.0, f64::NAN]);
    assert_eq!(p, vec![(50.0, 500), (90.0, 900)]);
}

#[test]
fn bins_hold_every_count_at_bucket_tops() {
    let mut s = LatencyStat::new();
    for v in [5, 5, 1500, 1_000_000, 1_000_100] {
        s.record(v);
    }
    let bins: Vec<(u64, u64)> = s.bins().collect();
    assert_eq!(bins.iter().map(|b| b.1).sum::<u64>(), 5);
    assert_eq!(bins[0], (5, 2));
    assert_eq!(bins[1], (1500, 1));
    for (value, _) in &bins {
        assert_eq!(s.histogram().highest_equivalent(*value), *value);
    }
}

#[test]
fn latency_buckets_use_fio_edges() {
    let mut b = LatencyBuckets::default();
    for ns in [0, 1, 2, 3, 4, 999, 1_000, 1_999, 2_000, 999_999] {
        b.record(ns);
    }
    assert_eq!(b.ns, [2, 2, 1, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(b.us, [2, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
    let mut m = LatencyBuckets::default();
    for ms in [1u64, 2, 750, 999, 1_000, 1_999, 2_000, 10_000] {
        m.record(ms * 1_000_000);
    }
    // 750 and 999 ms both fall in "1000" (750-999), as in fio.
    assert_eq!(m.ms, [1, 1, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2]);
    let (ns, _, _) = b.percentages(100_000);
    assert_eq!(ns[0], 0.01, "a non-empty bucket shows at least 0.01%");
    assert_eq!(ns[3], 0.0);
}

#[test]
fn depth_distribution_uses_fio_edges() {
    let mut d = DepthDistribution::default();
    d.record_submit(1, 1);
    d.record_submit(4, 8);
    d.record_submit(5, 64);
    d.record_complete(0);
    d.record_complete(3);
    assert_eq!(d.level, [1, 0, 0, 4, 0, 0, 5]);
    assert_eq!(d.submit, [0, 2, 1, 0, 0, 0, 0]);
    assert_eq!(d.complete, [1, 1, 0, 0, 0, 0, 0]);
    let (level, submit, _) = d.percentages(10_000);
    assert_eq!(level[0], 0.1, "a non-empty bucket shows at least 0.1%");
    assert!((submit[1] - 200.0 / 3.0).abs() < 1e-9);
}

#[test]
fn io_times_measure_total_latency_from_the_schedule() {
    let unpaced = IoTimes {
        scheduled_ns: None,
        start_ns: 1_000,
        issue_ns: 1_500,
        complete_ns: 11_500,
    };
    assert_eq!(unpaced.latencies(), (500, 10_000, 10_500));
    // The I/O was due at 0 but started at 1000: the 1000 ns of lateness count.
    let late = IoTimes {
        scheduled_ns: Some(0),
        ..unpaced
    };
    assert_eq!(late.latencies(), (500, 10_000, 11_500));
    let mut stats = JobStats::new(0, StatsConfig::default());
    stats.record_times(Direction::Read, 4096, &late);
    let read = stats.dir(Direction::Read).unwrap();
    assert_eq!(read.lat.moments().max(), 11_500);
    assert_eq!(read.clat.moments().max(), 10_000);
}

const MS: u64 = 1_000_000;

#[test]
fn tick_samples_bandwidth_and_iops_like_fio() {
    let mut stats = JobStats::new(0, StatsConfig::default());
    for _ in 0..100 {
        stats.record(Direction::Read, 4096, 10, 100, 110);
    }
    assert_eq!(stats.tick(250 * MS), None, "half a period is too early");
    let sample = stats
        .tick(499 * MS)
        .expect("1 ms early is within fio's slack");
    // 409600 bytes in 499 ms: 409600 * 1000 / 499 / 1024 KiB/s.
    assert_eq!(sample.bw_kib[0], Some(409_600 * 1000 / 499 / 1024));
    assert_eq!(sample.iops[0], Some(100 * 1000 / 499));
    assert_eq!(sample.bw_kib[1], None);
    assert_eq!(sample.time_ms, 499);
    // A period without I/O (a stall) samples 0 for a direction that moved data before, so
    // the logs have one line per period; one never used stays out. The report's
    // statistics count only periods with I/O, as fio's.
    let quiet = stats.tick(1_000 * MS).unwrap();
    assert_eq!(quiet.bw_kib[0], Some(0));
    assert_eq!(quiet.iops[0], Some(0));
    assert_eq!(quiet.bw_kib[1], None);
    let read = stats.dir(Direction::Read).unwrap();
    assert_eq!(read.bw_kib.count(), 1);
    assert_eq!(read.iops.count(), 1);
}

#[test]
fn bandwidth_and_iops_keep_their_own_periods() {
    // bwavgtime=1000, iopsavgtime=250.
    let config = StatsConfig {
        sample_interval_ms: 1_000,
        iops_sample_interval_ms: 250,
        ..StatsConfig::default()
    };
    let mut stats = JobStats::new(0, config);
    for k in 1..=4u64 {
        for _ in 0..10 {
            stats.record(Direction::Read, 4096, 10, 100, 110);
        }
        let sample = stats.tick(k * 250 * MS).expect("an IOPS period ended");
        assert_eq!(sample.iops[0], Some(40), "10 I/Os in 250 ms");
        if k < 4 {
            assert_eq!(sample.bw_kib[0], None, "no bandwidth sample before 1 s");
        } else {
            // 40 I/Os of 4 KiB over the whole second.
            assert_eq!(sample.bw_kib[0], Some(160));
        }
    }
    let read = stats.dir(Direction::Read).unwrap();
    assert_eq!((read.bw_kib.count(), read.iops.count()), (1, 4));
}

#[test]
fn errors_are_counted_by_kind() {
    let mut stats = JobStats::new(0, StatsConfig::default());
    let ua = IoError::CheckCondition {
        key: 6,
        asc: 0x29,
        ascq: 0,
    };
    stats.record_error(Direction::Write, &ua);
    stats.record_error(Direction::Write, &ua);
    stats.record_error(Direction::Read, &IoError::Status(0x08));
    stats.record_error(
        Direction::Read,
        &IoError::Short {
            wanted: 4096,
            done: 512,
        },
    );
    stats.record_error(
        Direction::Read,
        &IoError::Timeout(std::time::Duration::from_secs(1)),
    );
    let errors = stats.errors();
    assert_eq!(errors.total(), 5);
    assert_eq!(errors.first, Some(ua));
    let lines = errors.describe();
    assert_eq!(lines[0].1, 2);
    assert!(lines[0]
        .0
        .starts_with("CHECK CONDITION UNIT ATTENTION 0x29/0x00"));
    assert_eq!(lines[1], ("BUSY".to_string(), 1));
    assert_eq!(stats.dir(Direction::Read).unwrap().short_ios, 1);
    assert_eq!(stats.total_ios(), 0, "failures are not I/Os done");
}

#[test]
fn job_merge_adds_counts_and_keeps_longest_runtime() {
    let mut a = JobStats::new(0, StatsConfig::default());
    let mut b = JobStats::new(0, StatsConfig::default());
    a.record(Direction::Read, 4096, 1, 1_000, 1_001);
    b.record(Direction::Read, 8192, 1, 3_000, 3_001);
    b.record(Direction::Write, 512, 1, 2_000, 2_001);
    b.record_submit(2, 2);
    a.finish(1_000 * MS);
    b.finish(2_000 * MS);
    a.merge(&b);
    let read = a.dir(Direction::Read).unwrap();
    assert_eq!((read.ios, read.bytes, read.runtime_ms), (2, 12_288, 2_000));
    assert_eq!(read.clat.moments().mean(), 2_000.0);
    assert_eq!(a.dir(Direction::Write).unwrap().ios, 1);
    assert_eq!(
        a.job_runtime_ms(),
        3_000,
        "fio sums job runtimes in a group"
    );
    assert_eq!(a.depth().total_submit, 1);
    assert_eq!(a.latency_buckets().us[1], 2);
}

#[test]
fn intervals_hold_only_their_own_io_and_merge() {
    let mut a = JobStats::new(0, StatsConfig::default());
    let mut b = JobStats::new(0, StatsConfig::default());
    a.record(Direction::Read, 4096, 1, 100, 200);
    let first = a.take_interval(1_000 * MS);
    a.record(Direction::Read, 4096, 1, 300, 400);
    a.record(Direction::Read, 4096, 1, 500, 600);
    b.record(Direction::Read, 4096, 1, 900, 1_000);
    let mut second = a.take_interval(2_000 * MS);
    second.merge(&b.take_interval(2_000 * MS));
    assert_eq!(first.dir(Direction::Read).unwrap().ios, 1);
    let record = second.summarize(0, &[50.0, 100.0]);
    assert_eq!(
        (record.start_ms, record.end_ms),
        (0, 2_000),
        "merge widens the bounds"
    );
    let read = record.dirs[0].as_ref().unwrap();
    assert_eq!(read.ios, 3);
    assert_eq!(read.lat.max_ns, 1_000);
    assert_eq!(read.lat.percentiles, vec![(50.0, 600), (100.0, 1_000)]);
    assert!(record.dirs[1].is_none());
    // Totals still hold everything.
    assert_eq!(a.dir(Direction::Read).unwrap().ios, 3);
    // A quiet interval: zeros for the direction that moved data before, nothing else.
    let empty = a.take_interval(3_000 * MS).summarize(0, &[50.0]);
    assert_eq!(empty.dirs[0].as_ref().map(|d| d.ios), Some(0));
    assert!(empty.dirs[1..].iter().all(Option::is_none));
}

#[test]
fn reset_starts_over_and_keeps_live_counters() {
    let live = std::sync::Arc::new(LiveCounters::new());
    let mut stats = JobStats::new(0, StatsConfig::default());
    stats.attach_live(live.clone());
    stats.record(Direction::Write, 100, 1, 1, 1);
    stats.reset(5 * MS);
    assert_eq!(stats.total_ios(), 0);
    assert_eq!(stats.start_ns(), 5 * MS);
    stats.record(Direction::Write, 100, 1, 1, 1);
    let totals = live.read();
    assert_eq!((totals.ios[1], totals.bytes[1]), (2, 200));
    let (bytes_per_s, ios_per_s) = totals.rates_since(&LiveTotals::default(), 500);
    assert_eq!((bytes_per_s[1], ios_per_s[1]), (400, 4));
}

#[test]
fn thread_and_process_usage_read() {
    let before = ResourceUsage::thread().unwrap();
    let mut x = 0u64;
    for i in 0..2_000_000u64 {
        x = x.wrapping_mul(31).wrapping_add(i);
    }
    std::hint::black_box(x);
    let used = ResourceUsage::thread().unwrap().since(&before);
    let process = ResourceUsage::process().unwrap();
    assert!(process.cpu_ns() >= used.cpu_ns());
}

#[test]
fn an_interval_without_io_is_there_with_zeros() {
    let config = StatsConfig {
        track_intervals: true,
        ..StatsConfig::default()
    };
    let mut stats = JobStats::new(0, config);
    let before_any_io = stats.take_interval(500 * MS);
    assert!(before_any_io.dir(Direction::Read).is_none());
    stats.record(Direction::Read, 4096, 10, 100, 110);
    let busy = stats.take_interval(1_000 * MS);
    assert_eq!(busy.dir(Direction::Read).map(|d| d.ios), Some(1));
    let stalled = stats.take_interval(2_000 * MS);
    assert_eq!(stalled.dir(Direction::Read).map(|d| d.ios), Some(0));
    assert!(stalled.dir(Direction::Write).is_none(), "never written");
    let record = stalled.summarize(0, &[50.0]);
    let read = record.dirs[0].as_ref().expect("a read entry");
    assert_eq!((read.ios, read.bw_bytes_per_s, read.iops), (0, 0, 0.0));
}

fn completion_at(stats: &mut JobStats, complete_ns: u64) {
    let times = IoTimes {
        scheduled_ns: None,
        start_ns: complete_ns.saturating_sub(1_000),
        issue_ns: complete_ns.saturating_sub(500),
        complete_ns,
    };
    stats.record_times(Direction::Read, 4096, &times);
}

#[test]
fn the_longest_completion_gap_is_a_number_per_run_and_per_interval() {
    let ms = 1_000_000;
    let mut stats = JobStats::new(0, StatsConfig::default());
    // Completions every millisecond for 100 ms...
    for k in 1..=100 {
        completion_at(&mut stats, k * ms);
    }
    let first = stats.take_interval(200 * ms);
    // ...then nothing for 400 ms, spanning the interval boundary at 200 ms.
    assert_eq!(first.longest_gap_ns, 100 * ms, "open at the interval's end");
    completion_at(&mut stats, 500 * ms);
    completion_at(&mut stats, 501 * ms);
    let second = stats.take_interval(600 * ms);
    assert_eq!(second.longest_gap_ns, 400 * ms, "the whole stall");
    assert_eq!(stats.longest_gap_ns(), 400 * ms);
    // A quiet interval after the last completion shows its own length.
    let third = stats.take_interval(700 * ms);
    assert_eq!(third.longest_gap_ns, 100 * ms);
    // The end of the run closes the open gap: 501 ms to 1000 ms.
    stats.finish(1_000 * ms);
    assert_eq!(stats.longest_gap_ns(), 499 * ms);
    assert_eq!(second.summarize(0, &[]).longest_gap_ns, 400 * ms);
}

#[test]
fn quiet_after_the_workload_stopped_is_no_stall() {
    let ms = 1_000_000;
    let mut stats = JobStats::new(0, StatsConfig::default());
    for k in 1..=10 {
        completion_at(&mut stats, k * 10 * ms);
    }
    // The runtime ends at 105 ms; a read-back and a flush take until 2 s.
    stats.stop_gaps(105 * ms);
    completion_at(&mut stats, 1_900 * ms);
    let last = stats.take_interval(2_000 * ms);
    stats.finish(2_000 * ms);
    assert_eq!(stats.longest_gap_ns(), 10 * ms);
    assert_eq!(last.longest_gap_ns, 10 * ms);
}
