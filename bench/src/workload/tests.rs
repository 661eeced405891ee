//! The workload as the runner sees it: whole jobs driven through [`Workload::next`], with an
//! in-memory disk where verification is on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use proptest::prelude::*;

use super::*;

const KIB: u64 = 1024;

fn config(rw: RwKind, size_bytes: u64, bs: u32) -> WorkloadConfig {
    WorkloadConfig {
        size_bytes,
        rw,
        block_sizes: PerDir::splat(BlockSizeSpec::Fixed(bs)),
        ..WorkloadConfig::default()
    }
}

/// Every I/O of a job that needs no completions, up to `limit`.
fn all_ios(config: WorkloadConfig, limit: usize) -> Vec<PlannedIo> {
    let mut workload = Workload::new(config).expect("valid config");
    let mut ios = Vec::new();
    while ios.len() < limit {
        match workload.next(Duration::ZERO) {
            Next::Io(io) => ios.push(io),
            Next::Done => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    ios
}

#[test]
fn sequential_read_walks_the_region_once() {
    let mut job = config(RwKind::Read, 64 * KIB, 4096);
    job.offset_bytes = 1 << 20;
    let ios = all_ios(job, 1000);
    assert_eq!(ios.len(), 16);
    for (index, io) in ios.iter().enumerate() {
        assert_eq!(io.direction, Direction::Read);
        assert_eq!(io.offset, (1 << 20) + 4096 * index as u64);
        assert_eq!(io.len, 4096);
        assert_eq!(io.verify, VerifyAction::None);
    }
}

#[test]
fn io_size_beyond_size_wraps() {
    let mut job = config(RwKind::Write, 40 * KIB, 8192);
    job.io_size_bytes = Some(100 * KIB);
    let ios = all_ios(job.clone(), 1000);
    let offsets: Vec<u64> = ios.iter().map(|io| io.offset / 1024).collect();
    // 5 blocks per pass; 100 KiB is 12 blocks and 4 KiB, too little for one more.
    assert_eq!(offsets, vec![0, 8, 16, 24, 32, 0, 8, 16, 24, 32, 0, 8]);
    // With a 4 KiB size in the mix, the last I/O is cut to what is left.
    job.block_sizes.write = BlockSizeSpec::Split(vec![
        BsSplitEntry {
            len_bytes: 8192,
            percent: Some(100),
        },
        BsSplitEntry {
            len_bytes: 4096,
            percent: Some(0),
        },
    ]);
    let ios = all_ios(job, 1000);
    assert_eq!(ios.len(), 13);
    assert_eq!(
        ios.last().map(|io| (io.offset, io.len)),
        Some((16 * KIB, 4096))
    );
    let total: u64 = ios.iter().map(|io| u64::from(io.len)).sum();
    assert_eq!(total, 100 * KIB);
}

#[test]
fn sequential_wrap_skips_a_tail_too_short_for_the_block() {
    let mut job = config(RwKind::Read, 10 * KIB, 4096);
    job.io_size_bytes = Some(16 * KIB);
    let offsets: Vec<u64> = all_ios(job, 100)
        .iter()
        .map(|io| io.offset / 1024)
        .collect();
    assert_eq!(offsets, vec![0, 4, 0, 4]);
}

#[test]
fn loops_repeat_the_job_from_the_start() {
    let mut job = config(RwKind::Read, 64 * KIB, 4096);
    job.loops = 3;
    job.io_size_bytes = Some(8 * KIB);
    let offsets: Vec<u64> = all_ios(job, 100)
        .iter()
        .map(|io| io.offset / 1024)
        .collect();
    assert_eq!(offsets, vec![0, 4, 0, 4, 0, 4]);
}

#[test]
fn number_ios_ends_the_job_early_even_time_based() {
    let mut job = config(RwKind::RandRead, 1 << 30, 4096);
    job.number_ios = Some(37);
    assert_eq!(all_ios(job.clone(), 1000).len(), 37);
    job.time_based = true;
    assert_eq!(all_ios(job, 1000).len(), 37);
}

#[test]
fn time_based_never_ends_by_itself() {
    let mut job = config(RwKind::Read, 16 * KIB, 4096);
    job.time_based = true;
    let ios = all_ios(job.clone(), 10_000);
    assert_eq!(ios.len(), 10_000);
    assert_eq!(Workload::new(job).expect("valid").total_bytes(), None);
}

#[test]
fn random_map_touches_every_block_once_per_pass() {
    let mut job = config(RwKind::RandRead, 1000 * 4096 + 100, 4096);
    job.offset_bytes = 4096 * 7;
    job.io_size_bytes = Some(3 * 1000 * 4096);
    let ios = all_ios(job, 10_000);
    assert_eq!(ios.len(), 3000);
    let mut orders = Vec::new();
    for pass in ios.chunks(1000) {
        let blocks: Vec<u64> = pass
            .iter()
            .map(|io| (io.offset - 4096 * 7) / 4096)
            .collect();
        let distinct: HashSet<u64> = blocks.iter().copied().collect();
        assert_eq!(distinct.len(), 1000);
        assert!(blocks.iter().all(|&b| b < 1000));
        assert!(pass.iter().all(|io| io.offset % 4096 == 0));
        orders.push(blocks);
    }
    assert_ne!(orders[0], orders[1]);
    assert_ne!(orders[1], orders[2]);
}

#[test]
fn norandommap_repeats_blocks() {
    let mut job = config(RwKind::RandRead, 1000 * 4096, 4096);
    job.norandommap = true;
    let ios = all_ios(job, 10_000);
    let distinct: HashSet<u64> = ios.iter().map(|io| io.offset).collect();
    // 1000 draws from 1000 blocks: about 1 - 1/e = 63% distinct.
    assert!((550..720).contains(&distinct.len()), "{}", distinct.len());
    assert!(ios
        .iter()
        .all(|io| io.offset % 4096 == 0 && io.offset < 1000 * 4096));
}

#[test]
fn same_seed_same_ios_other_seed_other_ios() {
    let mut job = config(RwKind::RandRw, 1 << 24, 4096);
    job.block_sizes.write = BlockSizeSpec::Range {
        min_bytes: 4096,
        max_bytes: 65536,
    };
    let first = all_ios(job.clone(), 500);
    assert_eq!(first, all_ios(job.clone(), 500));
    job.seed = job_seed(Some(42), true, 1, 0);
    assert_ne!(first, all_ios(job, 500));
    assert_eq!(job_seed(None, true, 3, 1), job_seed(None, true, 3, 2));
    assert_ne!(job_seed(None, false, 3, 1), job_seed(None, false, 3, 2));
    assert_ne!(job_seed(None, true, 1, 0), job_seed(None, true, 2, 0));
}

#[test]
fn sizes_and_alignment_per_direction() {
    let mut job = config(RwKind::RandRw, 1 << 24, 4096);
    job.block_sizes.write = BlockSizeSpec::Range {
        min_bytes: 8192,
        max_bytes: 32768,
    };
    job.block_align_bytes.read = Some(16384);
    for io in all_ios(job, 5000) {
        match io.direction {
            Direction::Read => {
                assert_eq!(io.len, 4096);
                assert_eq!(io.offset % 16384, 0);
            }
            Direction::Write => {
                assert!(
                    io.len % 8192 == 0 && (8192..=32768).contains(&io.len),
                    "{io:?}"
                );
                assert_eq!(io.offset % 8192, 0);
            }
            Direction::Trim => panic!("no trims in randrw"),
        }
        assert!(io.offset + u64::from(io.len) <= 1 << 24);
    }
}

#[test]
fn trims_use_the_trim_block_size() {
    let mut job = config(RwKind::RandTrim, 1 << 20, 4096);
    job.block_sizes.trim = BlockSizeSpec::Fixed(65536);
    let ios = all_ios(job, 100);
    assert_eq!(ios.len(), 16);
    assert!(ios
        .iter()
        .all(|io| io.direction == Direction::Trim && io.len == 65536));
}

#[test]
fn random_ios_never_cross_the_region_end() {
    let mut job = config(RwKind::RandRead, 100 * KIB, 4096);
    job.block_sizes.read = BlockSizeSpec::Split(vec![
        BsSplitEntry {
            len_bytes: 4096,
            percent: Some(50),
        },
        BsSplitEntry {
            len_bytes: 65536,
            percent: None,
        },
    ]);
    job.time_based = true;
    for io in all_ios(job, 5000) {
        assert!(io.offset + u64::from(io.len) <= 100 * KIB, "{io:?}");
        assert_eq!(io.offset % 4096, 0);
    }
}

#[test]
fn zipf_jobs_concentrate_on_few_blocks() {
    let mut job = config(RwKind::RandRead, 10_000 * 4096, 4096);
    job.random_distribution = Distribution::Zipf {
        theta: 1.2,
        center: None,
    };
    job.io_size_bytes = Some(100_000 * 4096);
    let mut hits: HashMap<u64, u32> = HashMap::new();
    for io in all_ios(job, 200_000) {
        *hits.entry(io.offset / 4096).or_insert(0) += 1;
    }
    let mut counts: Vec<u32> = hits.into_values().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let top: u32 = counts.iter().take(1000).sum();
    assert!(f64::from(top) / 100_000.0 > 0.75, "top 10% got {top}");
}

#[test]
fn pareto_and_normal_through_the_job() {
    for distribution in [
        Distribution::Pareto {
            power: 0.2,
            center: None,
        },
        Distribution::Normal {
            deviation_percent: 2.0,
            center: None,
        },
    ] {
        let mut job = config(RwKind::RandRead, 10_000 * 4096, 4096);
        job.random_distribution = distribution.clone();
        job.io_size_bytes = Some(50_000 * 4096);
        let mut hits: HashMap<u64, u32> = HashMap::new();
        for io in all_ios(job, 100_000) {
            *hits.entry(io.offset / 4096).or_insert(0) += 1;
        }
        let mut counts: Vec<u32> = hits.into_values().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top: u32 = counts.iter().take(1000).sum();
        assert!(
            f64::from(top) / 50_000.0 > 0.5,
            "{distribution:?}: top 10% got {top}"
        );
    }
}

#[test]
fn bad_configurations_are_refused() {
    let base = config(RwKind::RandRead, 1 << 20, 4096);
    let refused = |change: &dyn Fn(&mut WorkloadConfig)| {
        let mut job = base.clone();
        change(&mut job);
        Workload::new(job).err()
    };
    assert_eq!(
        refused(&|j| j.size_bytes = 0),
        Some(WorkloadError::ZeroSize)
    );
    assert!(matches!(
        refused(&|j| j.offset_bytes = u64::MAX),
        Some(WorkloadError::RegionOverflow { .. })
    ));
    assert!(matches!(
        refused(&|j| j.block_sizes.read = BlockSizeSpec::Fixed(2 << 20)),
        Some(WorkloadError::BlockLargerThanRegion { .. })
    ));
    assert_eq!(refused(&|j| j.loops = 0), Some(WorkloadError::ZeroLoops));
    assert_eq!(
        refused(&|j| j.rwmixread_percent = 101),
        Some(WorkloadError::RwMixOutOfRange(101))
    );
    assert!(matches!(
        refused(&|j| j.io_size_bytes = Some(100)),
        Some(WorkloadError::IoSizeBelowBlockSize { .. })
    ));
    assert!(matches!(
        refused(&|j| j.random_distribution = Distribution::Zipf {
            theta: 1.0,
            center: None
        }),
        Some(WorkloadError::DistributionParameter { name: "zipf", .. })
    ));
    assert!(matches!(
        refused(&|j| j.random_distribution = Distribution::Pareto {
            power: 1.5,
            center: None
        }),
        Some(WorkloadError::DistributionParameter { name: "pareto", .. })
    ));
    assert!(matches!(
        refused(&|j| j.random_distribution = Distribution::Normal {
            deviation_percent: 5.0,
            center: Some(2.0)
        }),
        Some(WorkloadError::DistributionParameter { name: "normal", .. })
    ));
    assert!(matches!(
        refused(&|j| j.block_align_bytes.read = Some(0)),
        Some(WorkloadError::ZeroBlockAlign { .. })
    ));
    // A trim job with verify, a verify interval that does not divide the block size.
    assert!(matches!(
        refused(&|j| {
            j.rw = RwKind::Trim;
            j.verify = Some(VerifyConfig::default());
        }),
        Some(WorkloadError::VerifyWithTrim(RwKind::Trim))
    ));
    assert!(matches!(
        refused(&|j| {
            j.rw = RwKind::Write;
            j.verify = Some(VerifyConfig {
                interval_bytes: Some(3000),
                ..VerifyConfig::default()
            });
        }),
        Some(WorkloadError::VerifyIntervalMismatch { .. })
    ));
    // A workload that needs a generation table larger than allowed.
    assert!(matches!(
        refused(&|j| {
            j.rw = RwKind::RandWrite;
            j.norandommap = true;
            j.verify = Some(VerifyConfig {
                max_tracked_blocks: 100,
                ..VerifyConfig::default()
            });
        }),
        Some(WorkloadError::VerifyTooManyBlocks {
            blocks: 256,
            limit_blocks: 100
        })
    ));
    // Error texts name the option and value.
    let text = refused(&|j| j.block_sizes.read = BlockSizeSpec::Fixed(2 << 20))
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        text.contains("read block size 2097152") && text.contains("1048576"),
        "{text}"
    );
}

#[test]
fn rate_limited_jobs_carry_their_schedule() {
    let mut job = config(RwKind::RandRead, 1 << 20, 4096);
    job.pacing.rate_iops.read = Some(2000);
    job.time_based = true;
    let mut workload = Workload::new(job).expect("valid");
    let start = Duration::from_secs(1);
    for k in 0..100u64 {
        // A runner that asks late still gets the original due times.
        let now = start + Duration::from_millis(3 * k);
        let Next::Io(io) = workload.next(now) else {
            panic!("I/O expected");
        };
        assert_eq!(io.scheduled_at, start + Duration::from_micros(500 * k));
    }
}

#[test]
fn unpaced_ios_are_due_when_asked() {
    let mut workload = Workload::new(config(RwKind::Read, 1 << 20, 4096)).expect("valid");
    let now = Duration::from_millis(1234);
    let Next::Io(io) = workload.next(now) else {
        panic!("I/O expected");
    };
    assert_eq!(io.scheduled_at, now);
}

#[test]
fn think_time_makes_the_runner_drain() {
    let mut job = config(RwKind::Read, 1 << 20, 4096);
    job.pacing.thinktime = Some(ThinkTime {
        pause: Duration::from_millis(1),
        spin: Duration::ZERO,
        blocks: Some(3),
        trigger: ThinkTimeTrigger::Issue,
        iotime: None,
        ignore_for_rate: false,
    });
    let mut workload = Workload::new(job).expect("valid");
    let now = Duration::ZERO;
    for _ in 0..3 {
        assert!(matches!(workload.next(now), Next::Io(_)));
    }
    assert_eq!(workload.next(now), Next::WaitForCompletions);
    for _ in 0..3 {
        workload.on_complete(Duration::from_millis(2));
    }
    let Next::Io(io) = workload.next(Duration::from_millis(2)) else {
        panic!("I/O expected");
    };
    assert_eq!(io.scheduled_at, Duration::from_millis(3));
}

#[test]
fn the_pause_after_the_last_io_is_waited_out() {
    // Two I/Os, a pause after each (fio sleeps after the last one too).
    let mut job = config(RwKind::Read, 8192, 4096);
    job.pacing.thinktime = Some(ThinkTime {
        pause: Duration::from_millis(5),
        spin: Duration::ZERO,
        blocks: Some(1),
        trigger: ThinkTimeTrigger::Complete,
        iotime: None,
        ignore_for_rate: false,
    });
    let mut workload = Workload::new(job).expect("valid");
    let ms = Duration::from_millis;
    assert!(matches!(workload.next(ms(0)), Next::Io(_)));
    workload.on_complete(ms(1));
    let Next::Io(second) = workload.next(ms(1)) else {
        panic!("I/O expected");
    };
    assert_eq!(second.scheduled_at, ms(6));
    workload.on_complete(ms(7));
    assert_eq!(workload.next(ms(7)), Next::Pause(ms(12)));
    assert_eq!(workload.next(ms(12)), Next::Done);
}

proptest! {
    #[test]
    fn rwmix_ratio_converges(read_percent in 0u32..=100, seed in any::<u64>()) {
        let mut job = config(RwKind::RandRw, 1 << 30, 4096);
        job.rwmixread_percent = read_percent;
        job.seed = seed;
        job.number_ios = Some(20_000);
        let ios = all_ios(job, 20_000);
        let reads = ios.iter().filter(|io| io.direction == Direction::Read).count();
        let share = reads as f64 / ios.len() as f64;
        prop_assert!((share - f64::from(read_percent) / 100.0).abs() < 0.02, "{} vs {}", share, read_percent);
    }

    #[test]
    fn random_map_covers_any_region(blocks in 1u64..3000, seed in any::<u64>()) {
        let mut job = config(RwKind::RandWrite, blocks * 512, 512);
        job.seed = seed;
        let ios = all_ios(job, 10_000);
        prop_assert_eq!(ios.len() as u64, blocks);
        let distinct: HashSet<u64> = ios.iter().map(|io| io.offset).collect();
        prop_assert_eq!(distinct.len() as u64, blocks);
    }
}

// ---- verification, end to end, on an in-memory disk ----

/// A job run on a RAM disk: writes are filled and stored, reads checked, verify phases read
/// the plan back. Returns the verify errors and how many blocks each phase read back.
struct Run {
    errors: Vec<VerifyError>,
    read_back_per_phase: Vec<u64>,
    ios: u64,
}

fn run_on_disk(
    job: WorkloadConfig,
    disk: &mut [u8],
    max_ios: u64,
    mut tamper: impl FnMut(u64, &mut [u8]),
) -> Run {
    let mut workload = Workload::new(job).expect("valid config");
    let verifier = workload.verifier().cloned();
    let mut run = Run {
        errors: Vec::new(),
        read_back_per_phase: Vec::new(),
        ios: 0,
    };
    let now = Duration::ZERO;
    let check = |verifier: &Verifier,
                 disk: &[u8],
                 offset: u64,
                 len: u32,
                 generation,
                 errors: &mut Vec<_>| {
        let range = offset as usize..(offset + u64::from(len)) as usize;
        if let Err(error) = verifier.check(&disk[range], offset, generation) {
            errors.push(error);
        }
    };
    // Bounded: each round hands out an I/O, a phase or the end.
    for _ in 0..max_ios * 2 + 10 {
        match workload.next(now) {
            Next::Io(io) => {
                run.ios += 1;
                let range = io.offset as usize..(io.offset + u64::from(io.len)) as usize;
                match io.verify {
                    VerifyAction::Fill { generation } => {
                        let verifier = verifier.as_ref().expect("verify on");
                        verifier.fill(&mut disk[range], io.offset, generation);
                    }
                    VerifyAction::Check {
                        expected_generation,
                    } => {
                        let verifier = verifier.as_ref().expect("verify on");
                        check(
                            verifier,
                            disk,
                            io.offset,
                            io.len,
                            expected_generation,
                            &mut run.errors,
                        );
                    }
                    VerifyAction::None => {}
                }
                tamper(run.ios, disk);
                workload.on_complete(now);
                if run.ios >= max_ios {
                    break;
                }
            }
            Next::VerifyPhase => {
                let verifier = verifier.as_ref().expect("verify on");
                let mut blocks = 0;
                for read in workload.read_back_plan().expect("a write job") {
                    let io = read.planned(now);
                    blocks += u64::from(read.len) / u64::from(verifier.interval_bytes());
                    check(
                        verifier,
                        disk,
                        io.offset,
                        io.len,
                        Some(read.generation),
                        &mut run.errors,
                    );
                }
                run.read_back_per_phase.push(blocks);
            }
            Next::VerifyBacklog => {
                let verifier = verifier.as_ref().expect("verify on");
                let due = workload.take_backlog();
                for read in &due {
                    check(
                        verifier,
                        disk,
                        read.offset,
                        read.len,
                        Some(read.generation),
                        &mut run.errors,
                    );
                }
                workload.mark_verified(&due);
            }
            Next::WaitForCompletions | Next::Pause(_) => {}
            Next::Done => break,
        }
    }
    run
}

fn verify_job(rw: RwKind, size_bytes: u64, bs: u32) -> WorkloadConfig {
    WorkloadConfig {
        verify: Some(VerifyConfig::default()),
        ..config(rw, size_bytes, bs)
    }
}

#[test]
fn sequential_write_verifies_everything_it_wrote() {
    let mut job = verify_job(RwKind::Write, 256 * KIB, 4096);
    job.offset_bytes = 64 * KIB;
    let mut disk = vec![0u8; 320 * KIB as usize];
    let run = run_on_disk(job, &mut disk, 10_000, |_, _| {});
    assert!(run.errors.is_empty(), "{:?}", run.errors.first());
    assert_eq!(run.read_back_per_phase, vec![64]);
    // Nothing before the region was touched.
    assert!(disk[..64 * KIB as usize].iter().all(|&b| b == 0));
}

#[test]
fn random_write_with_partial_passes_verifies_each_block_at_its_generation() {
    for io_size_blocks in [40u64, 100, 250, 301] {
        let mut job = verify_job(RwKind::RandWrite, 100 * 4096, 4096);
        job.io_size_bytes = Some(io_size_blocks * 4096);
        let mut disk = vec![0u8; 100 * 4096];
        let run = run_on_disk(job, &mut disk, 10_000, |_, _| {});
        assert!(run.errors.is_empty(), "{io_size_blocks}: {}", run.errors[0]);
        assert_eq!(run.read_back_per_phase, vec![io_size_blocks.min(100)]);
    }
}

#[test]
fn backlog_checks_hold_every_block_at_its_generation_even_when_rewritten() {
    // Random writes without the random map (blocks rewritten within a pass: a table
    // tracker) and with it, several passes: every backlog read and the final phase agree
    // with what the disk holds; a write that overwrote a block of the backlog before its
    // check is not read at the older generation.
    for norandommap in [false, true] {
        let mut job = verify_job(RwKind::RandWrite, 64 * 4096, 4096);
        job.io_size_bytes = Some(300 * 4096);
        job.norandommap = norandommap;
        if let Some(verify) = job.verify.as_mut() {
            verify.backlog = Some(10);
        }
        let mut disk = vec![0u8; 64 * 4096];
        let run = run_on_disk(job, &mut disk, 10_000, |_, _| {});
        assert!(
            run.errors.is_empty(),
            "norandommap={norandommap}: {}",
            run.errors[0]
        );
    }
}

#[test]
fn a_block_changed_behind_the_targets_back_is_reported_with_its_lba() {
    let job = verify_job(RwKind::RandWrite, 100 * 4096, 4096);
    let mut disk = vec![0u8; 100 * 4096];
    let run = run_on_disk(job, &mut disk, 10_000, |ios, disk| {
        if ios == 100 {
            // After the last write: flip one byte in the 37th block's data.
            disk[37 * 4096 + 1000] ^= 0x10;
        }
    });
    assert_eq!(run.errors.len(), 1);
    let error = &run.errors[0];
    assert_eq!(error.mismatch, Mismatch::Checksum);
    assert_eq!(error.block_offset, 37 * 4096);
    assert_eq!(error.bad_byte_offset, 37 * 4096 + 1000);
    assert_eq!(error.lba, (37 * 4096 + 1000) / 512);
    // The digest of the data read is shown beside the one in the header, and the bytes
    // that differ beside what they should be: never two equal "expected" and "found".
    let digests = error
        .digests
        .as_ref()
        .expect("a checksum mismatch has its digests");
    assert_ne!(digests.in_header, digests.of_data_read);
    assert_ne!(error.expected, error.found);
    let text = error.to_string();
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert!(
        text.contains(&format!(
            "crc32c in the header {}, computed over the data read {}",
            hex(&digests.in_header),
            hex(&digests.of_data_read)
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("bytes at {:#x}", 37 * 4096 + 1000)),
        "{text}"
    );
    assert_eq!(
        error.summary(),
        format!(
            "checksum mismatch in the block at offset {:#x}, LBA {}",
            37 * 4096,
            (37 * 4096 + 1000) / 512
        )
    );
}

#[test]
fn a_lost_write_shows_as_a_stale_generation() {
    let mut job = verify_job(RwKind::Write, 16 * 4096, 4096);
    job.io_size_bytes = Some(32 * 4096);
    let mut disk = vec![0u8; 16 * 4096];
    let mut saved = Vec::new();
    let run = run_on_disk(job, &mut disk, 10_000, |ios, disk| {
        if ios == 16 {
            // First pass done: keep block 5 as it is now.
            saved = disk[5 * 4096..6 * 4096].to_vec();
        }
        if ios == 32 {
            // The second pass's write of block 5 "got lost".
            disk[5 * 4096..6 * 4096].copy_from_slice(&saved);
        }
    });
    assert_eq!(run.errors.len(), 1);
    assert_eq!(
        run.errors[0].mismatch,
        Mismatch::Generation {
            expected: 1,
            found: 0
        }
    );
    assert_eq!(run.errors[0].block_offset, 5 * 4096);
}

#[test]
fn a_misdirected_write_shows_as_another_offset() {
    let job = verify_job(RwKind::Write, 16 * 4096, 4096);
    let mut disk = vec![0u8; 16 * 4096];
    let run = run_on_disk(job, &mut disk, 10_000, |ios, disk| {
        if ios == 16 {
            disk.copy_within(2 * 4096..3 * 4096, 9 * 4096);
        }
    });
    assert_eq!(run.errors.len(), 1);
    assert_eq!(run.errors[0].mismatch, Mismatch::Offset);
    assert_eq!(run.errors[0].block_offset, 9 * 4096);
    assert_eq!(run.errors[0].lba, 9 * 8);
}

#[test]
fn each_loop_has_its_verify_phase() {
    let mut job = verify_job(RwKind::RandWrite, 64 * 4096, 4096);
    job.loops = 3;
    job.io_size_bytes = Some(20 * 4096);
    let mut disk = vec![0u8; 64 * 4096];
    let run = run_on_disk(job, &mut disk, 10_000, |_, _| {});
    assert!(run.errors.is_empty(), "{}", run.errors[0]);
    assert_eq!(run.read_back_per_phase, vec![20, 20, 20]);
    assert_eq!(run.ios, 60);
}

#[test]
fn no_read_back_without_do_verify() {
    let mut job = verify_job(RwKind::Write, 64 * 4096, 4096);
    if let Some(verify) = &mut job.verify {
        verify.do_verify = false;
    }
    let mut disk = vec![0u8; 64 * 4096];
    let run = run_on_disk(job, &mut disk, 10_000, |_, _| {});
    assert!(run.read_back_per_phase.is_empty());
    // The headers are written all the same, for a later read job to check.
    let read_job = verify_job(RwKind::RandRead, 64 * 4096, 4096);
    let run = run_on_disk(read_job, &mut disk, 10_000, |ios, disk| {
        if ios == 1 {
            disk[63 * 4096 + 5] ^= 1;
        }
    });
    assert_eq!(run.ios, 64);
    assert_eq!(run.errors.len(), 1);
    assert_eq!(run.errors[0].bad_byte_offset, 63 * 4096 + 5);
}

#[test]
fn time_based_write_stopped_by_the_runner_verifies_what_it_wrote() {
    let mut job = verify_job(RwKind::RandWrite, 50 * 4096, 4096);
    job.time_based = true;
    let mut disk = vec![0u8; 50 * 4096];
    let mut workload_run = run_on_disk(job.clone(), &mut disk, 173, |_, _| {});
    assert!(workload_run.errors.is_empty());
    // The runner stops at "runtime" and reads back by itself.
    let mut workload = Workload::new(job).expect("valid");
    for _ in 0..173 {
        assert!(matches!(workload.next(Duration::ZERO), Next::Io(_)));
    }
    let verifier = workload.verifier().cloned().expect("verify on");
    let plan: Vec<ReadBackIo> = workload.read_back_plan().expect("write job").collect();
    assert_eq!(plan.len(), 50);
    let generations: BTreeMap<u64, usize> =
        plan.iter().fold(BTreeMap::new(), |mut counts, read| {
            *counts.entry(read.generation).or_insert(0) += 1;
            counts
        });
    // 173 = 3 passes of 50 and 23 into the fourth.
    assert_eq!(generations, BTreeMap::from([(2, 27), (3, 23)]));
    for read in plan {
        let range = read.offset as usize..(read.offset + u64::from(read.len)) as usize;
        if let Err(error) = verifier.check(&disk[range], read.offset, Some(read.generation)) {
            workload_run.errors.push(error);
        }
    }
    assert!(workload_run.errors.is_empty(), "{}", workload_run.errors[0]);
}

#[test]
fn table_mode_handles_overwrites_and_mixed_sizes() {
    let jobs = {
        let mut norandommap = verify_job(RwKind::RandWrite, 200 * 4096, 4096);
        norandommap.norandommap = true;
        norandommap.io_size_bytes = Some(600 * 4096);
        let mut zipf = verify_job(RwKind::RandWrite, 200 * 4096, 4096);
        zipf.random_distribution = Distribution::Zipf {
            theta: 1.1,
            center: None,
        };
        let mut split = verify_job(RwKind::RandWrite, 200 * 4096, 4096);
        split.block_sizes.write = BlockSizeSpec::Split(vec![
            BsSplitEntry {
                len_bytes: 4096,
                percent: Some(50),
            },
            BsSplitEntry {
                len_bytes: 16384,
                percent: Some(50),
            },
        ]);
        split.io_size_bytes = Some(2000 * 4096);
        let mut mixed = verify_job(RwKind::RandRw, 200 * 4096, 4096);
        mixed.io_size_bytes = Some(1000 * 4096);
        let mut sequential_mixed = verify_job(RwKind::ReadWrite, 200 * 4096, 4096);
        sequential_mixed.io_size_bytes = Some(500 * 4096);
        [norandommap, zipf, split, mixed, sequential_mixed]
    };
    for job in jobs {
        let mut disk = vec![0u8; 200 * 4096];
        let description = format!("{:?} {:?}", job.rw, job.random_distribution);
        let run = run_on_disk(job, &mut disk, 100_000, |_, _| {});
        assert!(run.errors.is_empty(), "{description}: {}", run.errors[0]);
        assert_eq!(run.read_back_per_phase.len(), 1, "{description}");
        assert!(run.read_back_per_phase[0] > 0, "{description}");
    }
}

#[test]
fn table_mode_catches_a_stale_overwritten_block() {
    let mut job = verify_job(RwKind::RandWrite, 8 * 4096, 4096);
    job.norandommap = true;
    job.io_size_bytes = Some(64 * 4096);
    let mut disk = vec![0u8; 8 * 4096];
    let mut first_copy: Option<Vec<u8>> = None;
    let run = run_on_disk(job, &mut disk, 100_000, |ios, disk| {
        if ios == 8 {
            first_copy = Some(disk[..4096].to_vec());
        }
        if ios == 64 {
            if let Some(copy) = &first_copy {
                disk[..4096].copy_from_slice(copy);
            }
        }
    });
    // Block 0 was written again after I/O 8 (64 writes over 8 blocks), unless it was not
    // written at all by then, in which case the copy is zeros: both are caught.
    assert_eq!(run.errors.len(), 1, "{:?}", run.errors);
    assert!(
        matches!(
            run.errors[0].mismatch,
            Mismatch::Generation { .. } | Mismatch::Magic
        ),
        "{}",
        run.errors[0]
    );
}

#[test]
fn mixed_verify_jobs_may_read_in_smaller_units() {
    let mut job = verify_job(RwKind::RandRw, 64 * 4096, 4096);
    job.block_sizes.read = BlockSizeSpec::Fixed(512);
    let mut disk = vec![0u8; 64 * 4096];
    let run = run_on_disk(job, &mut disk, 100_000, |_, _| {});
    assert!(run.errors.is_empty(), "{}", run.errors[0]);
    // A read-only job must read whole verify intervals.
    let mut read_job = verify_job(RwKind::RandRead, 64 * 4096, 512);
    read_job.verify = Some(VerifyConfig {
        interval_bytes: Some(4096),
        ..VerifyConfig::default()
    });
    assert!(matches!(
        Workload::new(read_job).err(),
        Some(WorkloadError::VerifyIntervalMismatch {
            direction: Direction::Read,
            ..
        })
    ));
}

#[test]
fn read_only_verify_checks_every_read_with_any_generation() {
    let mut workload = Workload::new(verify_job(RwKind::RandRead, 1 << 20, 4096)).expect("valid");
    let Next::Io(io) = workload.next(Duration::ZERO) else {
        panic!("I/O expected");
    };
    assert_eq!(
        io.verify,
        VerifyAction::Check {
            expected_generation: None
        }
    );
    assert!(workload.read_back_plan().is_none());
}

/// A runner that keeps up: it asks at `now`, waits for each I/O's due time, and counts what
/// it issued per direction in `seconds` of simulated time.
fn paced_counts(mut job: WorkloadConfig, seconds: u64) -> (u64, u64) {
    job.time_based = true;
    let mut workload = Workload::new(job).expect("valid config");
    let end = Duration::from_secs(seconds);
    let mut now = Duration::ZERO;
    let (mut reads, mut writes) = (0, 0);
    while now < end {
        let Next::Io(io) = workload.next(now) else {
            panic!("a time-based job ended");
        };
        now = now.max(io.scheduled_at);
        if now >= end {
            break;
        }
        match io.direction {
            Direction::Read => reads += 1,
            _ => writes += 1,
        }
    }
    (reads, writes)
}

#[test]
fn mixed_rate_limits_pace_each_direction_on_its_own() {
    // fio --rw=randrw --rate_iops=2000,500 gives 1999 / 499 IOPS: the lower limit does not
    // hold back the other direction.
    let mut job = config(RwKind::RandRw, 64 << 20, 4096);
    job.pacing.rate_iops = PerDir {
        read: Some(2000),
        write: Some(500),
        trim: None,
    };
    let (reads, writes) = paced_counts(job.clone(), 4);
    assert!(reads.abs_diff(8000) <= 2, "{reads} reads in 4 s");
    assert!(writes.abs_diff(2000) <= 2, "{writes} writes in 4 s");
    // The same by bandwidth: --rate=8m,2m with 4 KiB blocks.
    job.pacing.rate_iops = PerDir::splat(None);
    job.pacing.rate_bytes_per_s = PerDir {
        read: Some(8 << 20),
        write: Some(2 << 20),
        trim: None,
    };
    let (reads, writes) = paced_counts(job.clone(), 4);
    assert!(reads.abs_diff(8192) <= 2, "{reads} reads in 4 s");
    assert!(writes.abs_diff(2048) <= 2, "{writes} writes in 4 s");
    // Only one direction limited: the other goes as fast as it is asked for, and the
    // limited one still keeps its rate.
    job.pacing.rate_bytes_per_s = PerDir {
        read: None,
        write: Some(2 << 20),
        trim: None,
    };
    let mut workload = Workload::new(job).expect("valid config");
    let mut writes = 0u64;
    for now in [Duration::ZERO, Duration::from_secs(1)] {
        for _ in 0..10_000 {
            if let Next::Io(io) = workload.next(now) {
                assert!(io.scheduled_at <= now, "{io:?} at {now:?}");
                if io.direction == Direction::Write {
                    writes += 1;
                }
            }
        }
    }
    // 512 writes per second, the first at 0.
    assert_eq!(writes, 513, "writes due by 1 s");
}

#[test]
fn mixed_rate_with_rwmixread_100_never_writes() {
    let mut job = config(RwKind::RandRw, 64 << 20, 4096);
    job.rwmixread_percent = 100;
    job.pacing.rate_iops = PerDir {
        read: Some(100),
        write: Some(1000),
        trim: None,
    };
    let (reads, writes) = paced_counts(job, 2);
    assert_eq!(writes, 0);
    assert!(reads.abs_diff(200) <= 1, "{reads}");
}

fn two_files(service: FileServiceKind, switch_after_ios: u32) -> WorkloadConfig {
    let mut job = config(RwKind::Write, 16 * KIB, 4096);
    job.more_files = vec![FileRegion {
        offset_bytes: 8 * KIB,
        size_bytes: 16 * KIB,
        io_size_bytes: None,
    }];
    job.file_service = FileService {
        kind: service,
        switch_after_ios,
    };
    job
}

#[test]
fn roundrobin_alternates_files_each_with_its_own_position() {
    let ios = all_ios(two_files(FileServiceKind::RoundRobin, 1), 100);
    let seen: Vec<(u32, u64)> = ios.iter().map(|io| (io.file, io.offset / KIB)).collect();
    assert_eq!(
        seen,
        vec![
            (0, 0),
            (1, 8),
            (0, 4),
            (1, 12),
            (0, 8),
            (1, 16),
            (0, 12),
            (1, 20)
        ]
    );
    // roundrobin:2 takes two I/Os per file.
    let files: Vec<u32> = all_ios(two_files(FileServiceKind::RoundRobin, 2), 100)
        .iter()
        .map(|io| io.file)
        .collect();
    assert_eq!(files, vec![0, 0, 1, 1, 0, 0, 1, 1]);
}

#[test]
fn sequential_service_finishes_a_file_first() {
    let files: Vec<u32> = all_ios(two_files(FileServiceKind::Sequential, 1), 100)
        .iter()
        .map(|io| io.file)
        .collect();
    assert_eq!(files, vec![0, 0, 0, 0, 1, 1, 1, 1]);
    // Time-based too: a file's loop of bytes, then the next.
    let mut job = two_files(FileServiceKind::Sequential, 1);
    job.time_based = true;
    let files: Vec<u32> = all_ios(job, 12).iter().map(|io| io.file).collect();
    assert_eq!(files, vec![0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0]);
}

#[test]
fn random_service_uses_every_file_and_the_job_ends_when_all_are_done() {
    let mut job = two_files(FileServiceKind::Random, 1);
    job.size_bytes = 1 << 20;
    job.more_files[0].size_bytes = 1 << 20;
    let ios = all_ios(job, 10_000);
    // Each file is written once over: 256 blocks each, then the job is done.
    assert_eq!(ios.len(), 512);
    let first: usize = ios.iter().filter(|io| io.file == 0).count();
    assert_eq!(first, 256);
    // Files are interleaved at random, not one after the other.
    let switches = ios.windows(2).filter(|w| w[0].file != w[1].file).count();
    assert!(switches > 100, "{switches} switches");
}

#[test]
fn verify_reads_back_every_file() {
    let mut job = two_files(FileServiceKind::RoundRobin, 1);
    job.verify = Some(VerifyConfig::default());
    let mut workload = Workload::new(job).expect("valid");
    let mut written = HashSet::new();
    loop {
        match workload.next(Duration::ZERO) {
            Next::Io(io) => {
                assert!(matches!(io.verify, VerifyAction::Fill { .. }));
                written.insert((io.file, io.offset));
            }
            Next::VerifyPhase => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let read: HashSet<(u32, u64)> = workload
        .read_back_plan()
        .expect("a write job")
        .flat_map(|io| (0..u64::from(io.len) / 4096).map(move |b| (io.file, io.offset + b * 4096)))
        .collect();
    assert_eq!(read, written);
    assert_eq!(read.iter().filter(|(file, _)| *file == 1).count(), 4);
}

/// Issue 11 item 5: the verify bookkeeping of a write that failed, timed out or was never
/// sent. Its blocks leave the read-back plan (counted by cause) until a write planned
/// after the failure succeeds; the table (norandommap) and pass-based trackers alike.
#[test]
fn a_failed_write_leaves_its_blocks_unknown_until_a_later_write_succeeds() {
    let mut table_job = verify_job(RwKind::RandWrite, 16 * 4096, 4096);
    table_job.norandommap = true;
    table_job.io_size_bytes = Some(64 * 4096);
    let mut sequential_job = verify_job(RwKind::Write, 16 * 4096, 4096);
    // Time-based: the runner's clock ends it, so the writes wrap round to the block.
    sequential_job.time_based = true;
    table_job.time_based = true;
    for job in [table_job, sequential_job] {
        let mut workload = Workload::new(job).expect("valid");
        let Next::Io(failed) = workload.next(Duration::ZERO) else {
            panic!("an I/O first");
        };
        workload.on_write_result(&failed, Some(UnknownCause::WriteTimedOut));
        // The read-back leaves the timed-out write's block out and counts it.
        let checkable = |workload: &Workload| {
            let mut runs = Vec::new();
            let mut skipped = SkippedBlocks::default();
            for read in workload.read_back_plan().expect("write job") {
                workload.checkable_runs(read, &mut runs, &mut skipped);
            }
            (runs, skipped)
        };
        let (runs, skipped) = checkable(&workload);
        assert_eq!(skipped.write_timed_out, 1, "{runs:?}");
        assert!(runs
            .iter()
            .all(|r| r.offset + u64::from(r.len) <= failed.offset
                || r.offset >= failed.offset + u64::from(failed.len)));
        // Rewrite until the failed block is written again with a newer generation.
        let mut rewritten = false;
        for _ in 0..200 {
            match workload.next(Duration::ZERO) {
                Next::Io(io) => {
                    workload.on_write_result(&io, None);
                    if io.offset == failed.offset {
                        rewritten = true;
                        break;
                    }
                }
                Next::VerifyPhase
                | Next::VerifyBacklog
                | Next::WaitForCompletions
                | Next::Pause(_) => {}
                Next::Done => break,
            }
        }
        assert!(rewritten, "the block came round again");
        let (runs, skipped) = checkable(&workload);
        assert_eq!(skipped.total(), 0);
        assert!(runs
            .iter()
            .any(|r| r.offset <= failed.offset && failed.offset < r.offset + u64::from(r.len)));
    }
}

/// Unknown blocks are per file: a failed write on file 1 of a two-file job leaves only file
/// 1's blocks unknown, though file 0 has a block at the same offset (the regions overlap).
#[test]
fn a_failed_write_on_one_file_leaves_only_that_files_blocks_unknown() {
    let mut job = two_files(FileServiceKind::RoundRobin, 1);
    job.verify = Some(VerifyConfig::default());
    let mut workload = Workload::new(job).expect("valid");
    let mut written = HashSet::new();
    let mut failed = None;
    loop {
        match workload.next(Duration::ZERO) {
            Next::Io(io) => {
                written.insert((io.file, io.offset));
                if io.file == 1 && failed.is_none() {
                    workload.on_write_result(&io, Some(UnknownCause::WriteFailed));
                    failed = Some(io);
                } else {
                    workload.on_write_result(&io, None);
                }
            }
            Next::VerifyPhase => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let failed = failed.expect("file 1 was written");
    assert_eq!((failed.file, failed.offset), (1, 8 * KIB));
    assert!(
        written.contains(&(0, failed.offset)),
        "file 0 writes the same offset"
    );
    let mut runs = Vec::new();
    let mut skipped = SkippedBlocks::default();
    for read in workload.read_back_plan().expect("a write job") {
        workload.checkable_runs(read, &mut runs, &mut skipped);
    }
    assert_eq!(
        skipped,
        SkippedBlocks {
            write_failed: 1,
            ..SkippedBlocks::default()
        }
    );
    let read: HashSet<(u32, u64)> = runs
        .iter()
        .flat_map(|io| (0..u64::from(io.len) / 4096).map(move |b| (io.file, io.offset + b * 4096)))
        .collect();
    let mut expected = written.clone();
    expected.remove(&(1, failed.offset));
    assert_eq!(read, expected);
    assert!(
        read.contains(&(0, failed.offset)),
        "file 0's block is checked"
    );
}

fn strided(job: &mut WorkloadConfig, io_per_zone: u64, range: u64, skip: u64, end: u64) {
    job.strided_zones = Some(StridedZones {
        io_per_zone_bytes: io_per_zone,
        range_bytes: range,
        skip_bytes: skip,
        target_end_bytes: end,
    });
}

#[test]
fn strided_writes_past_the_region_verify_at_their_generations() {
    // A 64 KiB region whose 16 KiB zones, 48 KiB apart, reach the 256 KiB target's end,
    // written with io_size twice the region (one round, as fio 3.42): the read-back plan
    // covers every block written, past the region's end too, each at its last generation.
    // (The sequential job writes each zone past the region's end at its start only: fio's
    // rewind past io_size.)
    for rw in [RwKind::Write, RwKind::RandWrite] {
        let mut job = verify_job(rw, 64 * KIB, 4096);
        job.io_size_bytes = Some(128 * KIB);
        job.norandommap = true;
        strided(&mut job, 16 * KIB, 16 * KIB, 48 * KIB, 256 * KIB);
        let mut disk = vec![0u8; 256 * KIB as usize];
        let run = run_on_disk(job, &mut disk, 10_000, |_, _| {});
        assert!(run.errors.is_empty(), "{rw:?}: {:?}", run.errors.first());
        assert_eq!(run.ios, 32, "{rw:?}");
        let written = |range: std::ops::Range<usize>| {
            range
                .filter(|&block| disk[block * 4096..][..4096].iter().any(|&b| b != 0))
                .count() as u64
        };
        assert_eq!(run.read_back_per_phase, vec![written(0..64)], "{rw:?}");
        for zone in 0..4 {
            assert!(written(zone * 16..zone * 16 + 4) > 0, "{rw:?}: zone {zone}");
        }
    }
}

#[test]
fn strided_zones_refuse_what_would_place_offsets_otherwise() {
    let refused = |edit: &dyn Fn(&mut WorkloadConfig)| {
        let mut job = config(RwKind::RandRead, 64 * KIB, 4096);
        strided(&mut job, 16 * KIB, 16 * KIB, 0, 64 * KIB);
        edit(&mut job);
        Workload::new(job).err()
    };
    assert_eq!(refused(&|_| {}), None);
    assert!(matches!(
        refused(&|job| job.offsets.random_every = 4),
        Some(WorkloadError::StridedZonesWith(_))
    ));
    assert!(matches!(
        refused(&|job| job.offsets.percentage_random = PerDir::splat(50)),
        Some(WorkloadError::StridedZonesWith("percentage_random"))
    ));
    assert!(matches!(
        refused(&|job| job.random_distribution = Distribution::Zipf {
            theta: 1.2,
            center: None
        }),
        Some(WorkloadError::StridedZonesWith(_))
    ));
    assert!(matches!(
        refused(&|job| strided(job, 2048, 2048, 0, 64 * KIB)),
        Some(WorkloadError::ZoneRangeBelowBlockSize { .. })
    ));
}

/// fio's `openfiles=2` over four files: roundrobin alternates between the first two until
/// they are done, then the last two (fio 3.42 with `write_iolog` shows the same order).
#[test]
fn openfiles_limits_the_files_served_at_once() {
    let mut job = config(RwKind::Write, 8 * KIB, 4096);
    job.more_files = (1..4)
        .map(|_| FileRegion {
            offset_bytes: 0,
            size_bytes: 8 * KIB,
            io_size_bytes: None,
        })
        .collect();
    job.open_files = 2;
    let seen: Vec<(u32, u64)> = all_ios(job.clone(), 100)
        .iter()
        .map(|io| (io.file, io.offset / KIB))
        .collect();
    assert_eq!(
        seen,
        [
            (0, 0),
            (1, 0),
            (0, 4),
            (1, 4),
            (2, 0),
            (3, 0),
            (2, 4),
            (3, 4)
        ]
    );
    job.open_files = 0;
    let files: Vec<u32> = all_ios(job, 100).iter().map(|io| io.file).collect();
    assert_eq!(files, [0, 1, 2, 3, 0, 1, 2, 3]);
}

/// The I/Os of a sequential verified write of `blocks` blocks with `verify_backlog=every`
/// and `verify_backlog_batch=batch`: `W`/`R` and the block, backlog reads and the verify
/// phase's alike.
fn backlog_sequence(blocks: u64, every: u64, batch: Option<u64>) -> Vec<(char, u64)> {
    let mut job = verify_job(RwKind::Write, blocks * 4096, 4096);
    if let Some(verify) = job.verify.as_mut() {
        verify.backlog = Some(every);
        verify.backlog_batch = batch;
    }
    let mut workload = Workload::new(job).expect("valid config");
    let mut seen = Vec::new();
    // Bounded: each round hands out a write, a check or the end.
    for _ in 0..blocks * 4 + 10 {
        match workload.next(Duration::ZERO) {
            Next::Io(io) => {
                seen.push(('W', io.offset / 4096));
                workload.on_complete(Duration::ZERO);
            }
            Next::VerifyBacklog => {
                let due = workload.take_backlog();
                seen.extend(due.iter().map(|io| ('R', io.offset / 4096)));
                workload.mark_verified(&due);
            }
            Next::VerifyPhase => {
                // As the runner does: blocks a backlog check read are skipped.
                let plan: Vec<_> = workload.read_back_plan().expect("a write job").collect();
                let (mut runs, mut skipped) = (Vec::new(), SkippedBlocks::default());
                for io in plan {
                    workload.checkable_runs(io, &mut runs, &mut skipped);
                }
                for io in runs {
                    seen.extend((0..u64::from(io.len) / 4096).map(|b| ('R', io.offset / 4096 + b)));
                }
            }
            Next::WaitForCompletions | Next::Pause(_) => {}
            Next::Done => break,
        }
    }
    seen
}

#[test]
fn backlog_batches_read_part_of_the_backlog_and_leave_the_rest_for_later() {
    let w = |range: std::ops::Range<u64>| range.map(|b| ('W', b)).collect::<Vec<_>>();
    let r = |range: std::ops::Range<u64>| range.map(|b| ('R', b)).collect::<Vec<_>>();
    // Batch 2 of a backlog of 4 (fio's io_u.c): after 4 writes read the oldest 2; 2 more
    // writes fill the backlog again; the phase at the end reads what is left.
    let expected = [
        w(0..4),
        r(0..2),
        w(4..6),
        r(2..4),
        w(6..8),
        r(4..6),
        r(6..8),
    ]
    .concat();
    assert_eq!(backlog_sequence(8, 4, Some(2)), expected);
    // Batch 6: the check reads the 4, then stays open for each of the next 2 writes; the
    // last 2 are left to the phase.
    let expected = [
        w(0..4),
        r(0..4),
        vec![('W', 4), ('R', 4), ('W', 5), ('R', 5)],
        w(6..8),
        r(6..8),
    ]
    .concat();
    assert_eq!(backlog_sequence(8, 4, Some(6)), expected);
    // No batch: the whole backlog each time, as before.
    assert_eq!(
        backlog_sequence(8, 4, None),
        [w(0..4), r(0..4), w(4..8), r(4..8)].concat()
    );
}
