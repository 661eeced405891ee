//! Property: any valid set of job settings, rendered as a fio job file (and as a command
//! line), parses back to the same job specs.

#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use bench::job::{
    parse_command_line_with_env, parse_job_str, render_command_line, render_job_file, BlockSize,
    BsSplitEntry, ChapCredentials, ChecksumKind, DigestChoice, Distribution, Engine, IscsiUrl,
    JobSpec, LogName, Origin, PerDir, RateProcess, RwKind, RwMode, SizeSpec, Target, TransportKind,
    ValueRange, VerifyKind,
};
use proptest::collection::{btree_set, vec};
use proptest::option;
use proptest::prelude::*;

fn pow2(min_shift: u32, max_shift: u32) -> impl Strategy<Value = u64> {
    (min_shift..=max_shift).prop_map(|shift| 1u64 << shift)
}

fn block_size() -> impl Strategy<Value = BlockSize> {
    prop_oneof![
        pow2(9, 20).prop_map(BlockSize::Fixed),
        (pow2(9, 16), 0u32..5).prop_map(|(min, up)| BlockSize::Range(ValueRange {
            min,
            max: min << up
        })),
        vec((pow2(9, 20), 1u32..50), 1..5).prop_map(|weights| {
            let total: u32 = weights.iter().map(|(_, w)| w).sum();
            let mut entries: Vec<BsSplitEntry> = weights
                .iter()
                .map(|(len, w)| BsSplitEntry {
                    len_bytes: *len,
                    percent: w * 100 / total,
                })
                .collect();
            let given: u32 = entries.iter().map(|e| e.percent).sum();
            if let Some(first) = entries.first_mut() {
                first.percent += 100 - given;
            }
            BlockSize::Split(entries)
        }),
    ]
}

fn size_spec(min_bytes: u64) -> impl Strategy<Value = SizeSpec> {
    prop_oneof![
        (min_bytes..1u64 << 50).prop_map(SizeSpec::Bytes),
        (1u8..=100).prop_map(SizeSpec::Percent),
    ]
}

fn micros(max: u64) -> impl Strategy<Value = Duration> {
    (0..max).prop_map(Duration::from_micros)
}

fn word() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,8}"
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        Just(Target::Null),
        "/tmp/[a-z0-9_]{1,8}(:[a-z]{1,3})?".prop_map(|p| Target::Path(PathBuf::from(p))),
        (
            prop_oneof![
                Just("127.0.0.1".to_string()),
                Just("::1".to_string()),
                "h[a-z]{0,5}"
            ],
            1u16..=65535,
            "iqn\\.2024-01\\.[a-z]{1,5}:[a-z0-9]{1,5}",
            0u64..1000,
            option::of((word(), option::of(word()))),
        )
            .prop_map(|(host, port, target_iqn, lun, credentials)| {
                let (user, password) = match credentials {
                    Some((user, password)) => (Some(user), password),
                    None => (None, None),
                };
                Target::Iscsi(IscsiUrl {
                    user,
                    password,
                    host,
                    port,
                    target_iqn,
                    lun,
                })
            }),
    ]
}

fn distribution() -> impl Strategy<Value = Distribution> {
    let center = option::of(0.0f64..=1.0);
    prop_oneof![
        Just(Distribution::Random),
        (0.01f64..3.0, center.clone())
            .prop_filter("zipf theta 1", |(theta, _)| *theta != 1.0)
            .prop_map(|(theta, center)| Distribution::Zipf { theta, center }),
        (0.01f64..0.99, center.clone())
            .prop_map(|(power, center)| Distribution::Pareto { power, center }),
        (0.0f64..99.9, center).prop_map(|(deviation_percent, center)| Distribution::Normal {
            deviation_percent,
            center
        }),
    ]
}

fn rw_kind() -> impl Strategy<Value = RwKind> {
    prop_oneof![
        Just(RwKind::Read),
        Just(RwKind::Write),
        Just(RwKind::Trim),
        Just(RwKind::RandRead),
        Just(RwKind::RandWrite),
        Just(RwKind::RandTrim),
        Just(RwKind::ReadWrite),
        Just(RwKind::RandRw),
    ]
}

fn log_name() -> impl Strategy<Value = Option<LogName>> {
    option::of(prop_oneof![
        Just(LogName::JobName),
        word().prop_map(LogName::Prefix)
    ])
}

fn per_dir<S: Strategy>(make: impl Fn() -> S) -> impl Strategy<Value = PerDir<S::Value>>
where
    S::Value: Clone + std::fmt::Debug,
{
    (make(), make(), make()).prop_map(|(read, write, trim)| PerDir { read, write, trim })
}

/// A spec with random settings, then repaired into one the checks accept (the repairs
/// mirror the documented conflicts).
fn job_spec() -> impl Strategy<Value = JobSpec> {
    let target_and_engine = (
        option::of(target()),
        option::of(prop_oneof![
            Just(Engine::Iscsi),
            Just(Engine::IoUring),
            Just(Engine::Null)
        ]),
        any::<[bool; 4]>(),
    );
    let region = (
        option::of(size_spec(1 << 20)),
        size_spec(0),
        option::of(size_spec(0)),
        option::of(size_spec(1)),
        option::of(1u64..1 << 40),
        1u32..100,
        prop_oneof![Just(1024u32), Just(1000u32)],
    );
    let pattern = (
        rw_kind(),
        option::of(0u64..1 << 20),
        0u32..=100,
        per_dir(block_size),
        per_dir(|| option::of(pow2(9, 12))),
        distribution(),
        any::<bool>(),
        option::of(any::<u64>()),
        any::<bool>(),
    );
    let depth = (
        1u32..512,
        0u32..512,
        0u32..512,
        option::of(1u32..512),
        1u32..64,
    );
    let time = (
        option::of(1u64..1 << 40).prop_map(|t| t.map(Duration::from_micros)),
        any::<bool>(),
        micros(1 << 36),
        (micros(1 << 30), micros(1 << 30)),
    );
    let pacing = (
        per_dir(|| (0u8..3, 1u64..1 << 40)),
        any::<bool>(),
        micros(1 << 30),
        1u32..64,
    );
    let verify = (
        prop_oneof![
            Just(VerifyKind::None),
            proptest::sample::select(ChecksumKind::ALL.to_vec()).prop_map(VerifyKind::Checksum),
            Just(VerifyKind::Pattern),
        ],
        vec(any::<u8>(), 0..8),
        any::<[bool; 2]>(),
        option::of(1u64..1000),
    );
    let reporting = (
        any::<[bool; 6]>(),
        option::of(vec(0.001f64..=100.0, 1..30)),
        (log_name(), log_name(), log_name()),
        0u64..100_000,
        option::of(btree_set(0u32..64, 1..8)),
        option::of(1u64..1 << 30).prop_map(|t| t.map(Duration::from_micros)),
    );
    let iscsi = (
        any::<[bool; 2]>(),
        (option::of(any::<bool>()), option::of(any::<bool>())),
        (
            option::of(512u32..=0xFF_FFFF),
            option::of(512u32..=0xFF_FFFF),
            option::of(512u32..=0xFF_FFFF),
        ),
        option::of(((word(), word()), option::of((word(), word())))),
        option::of("iqn\\.2024-01\\.[a-z]{1,6}:[a-z0-9]{1,6}"),
        0u8..3,
        option::of(1u32..64),
    );
    (
        word(),
        option::of(word()),
        target_and_engine,
        region,
        pattern,
        depth,
        time,
        pacing,
        verify,
        reporting,
        iscsi,
    )
        .prop_map(
            |(
                name,
                description,
                target_and_engine,
                region,
                pattern,
                depth,
                time,
                pacing,
                verify,
                reporting,
                iscsi,
            )| {
                let mut spec = JobSpec::new(if name == "global" { "g".into() } else { name });
                spec.description = description;
                let (filename, ioengine, [direct, fixedbufs, registerfiles, sqthread_poll]) =
                    target_and_engine;
                spec.filename = filename;
                spec.ioengine = ioengine;
                spec.direct = direct;
                (
                    spec.size,
                    spec.offset,
                    spec.offset_increment,
                    spec.io_size,
                    spec.number_ios,
                    spec.loops,
                    spec.kb_base,
                ) = region;
                let (
                    kind,
                    modifier,
                    rwmixread,
                    block_size,
                    block_align,
                    distribution,
                    randrepeat,
                    randseed,
                    norandommap,
                ) = pattern;
                spec.rw = RwMode {
                    kind,
                    // A random pattern's ':N' is a count of at least 1; a sequential one's
                    // a signed size (backwards when negative).
                    offset_modifier: modifier.map(|m| {
                        if kind.is_random() {
                            m.max(1) as i64
                        } else if m % 2 == 1 {
                            -(m as i64)
                        } else {
                            m as i64
                        }
                    }),
                };
                spec.rwmixread = rwmixread;
                spec.block_size = block_size;
                spec.block_align = block_align;
                spec.random_distribution = distribution;
                spec.randrepeat = randrepeat;
                spec.randseed = randseed;
                spec.norandommap = norandommap;
                let (iodepth, batch, complete_min, complete_max, numjobs) = depth;
                spec.iodepth = iodepth;
                spec.iodepth_batch_submit = batch.min(iodepth);
                spec.iodepth_batch_complete_min = complete_min.min(iodepth);
                spec.iodepth_batch_complete_max =
                    complete_max.map(|max| max.max(spec.iodepth_batch_complete_min).max(1));
                spec.numjobs = numjobs;
                let (runtime, time_based, ramp_time, (delay_a, delay_b)) = time;
                spec.runtime = runtime;
                spec.time_based = time_based && runtime.is_some();
                spec.ramp_time = ramp_time;
                spec.startdelay = ValueRange {
                    min: delay_a.min(delay_b),
                    max: delay_a.max(delay_b),
                };
                let (rates, poisson, thinktime, thinktime_blocks) = pacing;
                for direction in [
                    bench::io::Direction::Read,
                    bench::io::Direction::Write,
                    bench::io::Direction::Trim,
                ] {
                    let (choice, value) = *rates.get(direction);
                    let (rate, iops) = match choice {
                        0 => (None, None),
                        1 => (Some(value), None),
                        _ => (None, Some(value)),
                    };
                    match direction {
                        bench::io::Direction::Read => {
                            (spec.rate.read, spec.rate_iops.read) = (rate, iops)
                        }
                        bench::io::Direction::Write => {
                            (spec.rate.write, spec.rate_iops.write) = (rate, iops)
                        }
                        bench::io::Direction::Trim => {
                            (spec.rate.trim, spec.rate_iops.trim) = (rate, iops)
                        }
                    }
                }
                let any_rate = spec
                    .rate
                    .each()
                    .iter()
                    .chain(spec.rate_iops.each().iter())
                    .any(|(_, r)| r.is_some());
                spec.rate_process = if poisson && any_rate {
                    RateProcess::Poisson
                } else {
                    RateProcess::Linear
                };
                spec.thinktime = thinktime;
                spec.thinktime_blocks = if thinktime.is_zero() {
                    None
                } else {
                    Some(thinktime_blocks)
                };
                let (verify_kind, pattern_bytes, [fatal, no_do_verify], backlog) = verify;
                let readable =
                    kind.does(bench::io::Direction::Read) || kind.does(bench::io::Direction::Write);
                spec.verify_pattern = pattern_bytes;
                spec.verify = match verify_kind {
                    _ if !readable => VerifyKind::None,
                    VerifyKind::Pattern if spec.verify_pattern.is_empty() => VerifyKind::None,
                    VerifyKind::None if !spec.verify_pattern.is_empty() => VerifyKind::Pattern,
                    other => other,
                };
                if spec.verify == VerifyKind::None {
                    spec.verify_pattern.clear();
                } else {
                    spec.verify_fatal = fatal;
                    spec.do_verify = !no_do_verify;
                    spec.verify_backlog = backlog;
                }
                let (
                    [group_reporting, stonewall, new_group, clat, lat, slat],
                    percentiles,
                    logs,
                    log_avg_msec,
                    cpus,
                    io_timeout,
                ) = reporting;
                spec.group_reporting = group_reporting;
                spec.stonewall = stonewall;
                spec.new_group = new_group;
                spec.clat_percentiles = clat;
                spec.lat_percentiles = lat;
                spec.slat_percentiles = slat;
                if let Some(list) = percentiles {
                    spec.percentile_list = list;
                }
                (spec.write_lat_log, spec.write_bw_log, spec.write_iops_log) = logs;
                spec.log_avg_msec = log_avg_msec;
                spec.cpus_allowed = cpus.map(|set| set.into_iter().collect());
                spec.io_timeout = io_timeout;

                // Engine and target must fit each other.
                match (spec.engine(), &spec.filename) {
                    (Engine::Iscsi, Some(Target::Path(_) | Target::Null)) => {
                        spec.ioengine = Some(Engine::Null)
                    }
                    (Engine::IoUring, None | Some(Target::Iscsi(_) | Target::Null)) => {
                        spec.ioengine = Some(Engine::Null)
                    }
                    _ => {}
                }
                if spec.engine() == Engine::IoUring {
                    spec.fixedbufs = fixedbufs;
                    spec.registerfiles = registerfiles;
                    spec.sqthread_poll = sqthread_poll;
                }
                if spec.engine() == Engine::Iscsi {
                    let (
                        [header, data],
                        (immediate, r2t),
                        (max_burst, first_burst, mrdsl),
                        chap,
                        initiator,
                        transport,
                        shards,
                    ) = iscsi;
                    let options = &mut spec.iscsi;
                    options.header_digest = if header {
                        DigestChoice::Crc32c
                    } else {
                        DigestChoice::None
                    };
                    options.data_digest = if data {
                        DigestChoice::Crc32c
                    } else {
                        DigestChoice::None
                    };
                    options.immediate_data = immediate;
                    options.initial_r2t = r2t;
                    options.max_burst_length_bytes = max_burst;
                    options.first_burst_length_bytes = match (first_burst, max_burst) {
                        (Some(first), Some(max)) => Some(first.min(max)),
                        (first, _) => first,
                    };
                    options.max_recv_data_segment_length_bytes = mrdsl;
                    let url_has_user =
                        matches!(&spec.filename, Some(Target::Iscsi(url)) if url.user.is_some());
                    if let Some(((user, secret), mutual)) = chap.filter(|_| !url_has_user) {
                        options.chap = Some(ChapCredentials {
                            username: user,
                            secret,
                        });
                        options.mutual_chap =
                            mutual.map(|(username, secret)| ChapCredentials { username, secret });
                    }
                    options.initiator_name = initiator;
                    options.transport = match transport {
                        0 => TransportKind::Software,
                        1 => TransportKind::Dependent,
                        _ => TransportKind::Independent,
                    };
                    options.shards = shards;
                }
                spec
            },
        )
}

fn compare_ready(mut jobs: Vec<JobSpec>) -> Vec<JobSpec> {
    for job in &mut jobs {
        job.origin = Origin::Builtin;
    }
    jobs
}

/// Group ids as fio numbers them within one file.
fn with_groups(mut jobs: Vec<JobSpec>) -> Vec<JobSpec> {
    let mut group = 0;
    for (index, job) in jobs.iter_mut().enumerate() {
        if index > 0 && (job.stonewall || job.new_group) {
            group += 1;
        }
        job.group_id = group;
    }
    jobs
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn rendered_job_files_parse_back(jobs in vec(job_spec(), 1..4)) {
        let jobs = with_groups(jobs);
        let text = render_job_file(&jobs);
        let parsed = parse_job_str(Path::new("gen.fio"), &text, &|_| None)
            .map_err(|error| TestCaseError::fail(format!("{error}\n--- file ---\n{text}")))?;
        prop_assert_eq!(compare_ready(parsed), jobs, "file:\n{}", text);
    }

    #[test]
    fn rendered_command_lines_parse_back(jobs in vec(job_spec(), 1..3)) {
        let jobs = with_groups(jobs);
        let line = render_command_line(&jobs);
        // The renderer quotes for a shell; undo the simple quoting it uses.
        let args = split_shell_words(&line);
        let parsed = parse_command_line_with_env(args.iter().skip(1), &|_| None)
            .map_err(|error| TestCaseError::fail(format!("{error}\n--- line ---\n{line}")))?;
        prop_assert_eq!(compare_ready(parsed.jobs), jobs, "line:\n{}", line);
    }
}

/// Split the renderer's output: words separated by spaces, `'...'` quoted with `'\''`.
fn split_shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut chars = line.chars().peekable();
    let mut started = false;
    while let Some(c) = chars.next() {
        match (c, in_quotes) {
            ('\'', false) => {
                in_quotes = true;
                started = true;
            }
            ('\'', true) => in_quotes = false,
            ('\\', false) if chars.peek() == Some(&'\'') => {
                current.push('\'');
                chars.next();
            }
            (' ', false) => {
                if started {
                    words.push(std::mem::take(&mut current));
                    started = false;
                }
            }
            (other, _) => {
                current.push(other);
                started = true;
            }
        }
    }
    if started {
        words.push(current);
    }
    words
}
