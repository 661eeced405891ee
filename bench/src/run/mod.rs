//! Running a set of parsed jobs (fio's `run_threads`): targets opened and every job
//! checked before any I/O starts, then the jobs run as threads, phase by phase
//! (`stonewall` starts a new phase), with the live status line on the main thread, and
//! the results gathered into one [`RunReport`].

mod buffers;
mod dump;
mod exits;
pub mod flow;
mod hooks;
pub mod interrupt;
pub mod ioscheduler;
#[cfg(test)]
mod issue_time_tests;
pub mod job;
pub mod latency_target;
mod overlap;
mod pinned;
pub mod priority;
pub mod replay_setup;
pub mod report;
#[cfg(test)]
mod serialize_tests;
pub mod setup;
pub mod shared_verify;
mod start_latch;
mod status;
pub mod steadystate;
pub mod verify_state;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::engine::embedded::EmbeddedTarget;
use crate::engine::{self, EmbeddedOptions, EngineCounters};
use crate::job::spec::{Engine as EngineKind, JobSpec, Region, SizeSpec};
use crate::job::ToolOptions;
use crate::output::iolog::IologWriter;
use crate::output::logs::{JobLogs, LogError, LogOptions};
use crate::output::{JobReport, PercentileOptions, RunReport};
use crate::stats::disk_util::DiskWatch;
use crate::stats::{LiveCounters, ResourceUsage, StatsConfig};
use crate::workload::{ContentGenerator, FileRegion, Workload};

use job::{JobOutcome, JobProgress, JobSetup};

/// Why a run could not start (nothing was done) or had to stop.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no jobs to run")]
    NoJobs,
    #[error("starting the embedded target: {0}")]
    EmbeddedTarget(Box<engine::EngineError>),
    #[error("job {job}: opening {engine}: {source}")]
    Engine {
        job: String,
        engine: &'static str,
        source: Box<engine::EngineError>,
    },
    #[error(transparent)]
    Setup(#[from] setup::SetupError),
    #[error(transparent)]
    Job(#[from] Box<crate::job::JobError>),
    #[error("job {job}: {source}")]
    Workload {
        job: String,
        source: crate::workload::WorkloadError,
    },
    #[error("job {job}: {source}")]
    Content {
        job: String,
        source: crate::workload::ContentError,
    },
    #[error("{0}")]
    VerifyOverlap(#[from] overlap::VerifyOverlap),
    #[error("{0}")]
    SharedVerify(#[from] shared_verify::SharedVerifyRefused),
    #[error("job {job}: --readonly refuses a job that writes or trims")]
    ReadOnly { job: String },
    #[error("job {job}: {source}")]
    Logs { job: String, source: LogError },
    #[error("not started: {0}")]
    Gate(String),
    #[error("job {job}: {reason}")]
    VerifyState { job: String, reason: String },
    #[error("job {job}: {reason}")]
    Replay { job: String, reason: String },
    #[error("job {job}: {reason}")]
    IoScheduler { job: String, reason: String },
    #[error("job {job}: its thread could not start: {source}")]
    Spawn { job: String, source: std::io::Error },
}

/// One finished job (or, with `group_reporting`, one group of jobs merged).
pub struct FinishedJob {
    pub report: JobReport,
    pub engine: EngineCounters,
    pub verify_failures: u64,
}

/// The results of a run.
pub struct RunOutcome {
    pub report: RunReport,
    pub engines: Vec<EngineCounters>,
    /// Any job failed (I/O errors, verification, setup of logs).
    pub failed: bool,
    /// The signal that ended the run early (see [`interrupt`]).
    pub interrupted_by: Option<i32>,
    /// When each job of the first phase started its clock (CLOCK_MONOTONIC, ns): the
    /// host's actual start, for a cluster's start skew.
    pub job_starts_ns: Vec<u64>,
}

/// A job ready to start, with what the report needs of its spec.
struct Prepared {
    spec_index: usize,
    setup: JobSetup,
    live: Arc<LiveCounters>,
    bytes_total: Option<u64>,
}

/// Opens every target, checks every job and starts nothing until all are good; then runs
/// the jobs phase by phase.
///
/// With `--status-interval`, `on_status` is handed the report of the results so far every
/// interval (the caller prints it as it prints the final one).
pub fn run(
    tool: &ToolOptions,
    specs: &[JobSpec],
    on_status: &mut dyn FnMut(&RunReport),
) -> Result<RunOutcome, RunError> {
    run_gated(tool, specs, on_status, None)
}

/// [`run`], with `gate` called once every target is open, every job checked and every job
/// of the first phase has set its engine up on its own thread (an iSCSI job has logged
/// in) and waits ([`start_latch`]): a cluster agent reports itself armed there and waits
/// for the common start (`crate::cluster`); the gate returns the start instant
/// (CLOCK_MONOTONIC ns, 0 for at once) and every job sleeps to it on its own thread. An error from the gate stops the jobs before their first I/O and ends the
/// run. The report's time axis starts when the gate returns.
pub fn run_gated(
    tool: &ToolOptions,
    specs: &[JobSpec],
    on_status: &mut dyn FnMut(&RunReport),
    mut gate: Option<&mut dyn FnMut() -> Result<u64, String>>,
) -> Result<RunOutcome, RunError> {
    if specs.is_empty() {
        return Err(RunError::NoJobs);
    }
    let process_start = ResourceUsage::process().ok();
    let timestamp_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let embedded = start_embedded_target(specs)?;
    let embedded_url = embedded.as_ref().map(EmbeddedTarget::url);
    let interval = tool
        .interval_results
        .or(tool.report_dir.as_ref().map(|_| Duration::from_secs(1)));

    let mut prepared: Vec<Prepared> = Vec::new();
    let flows = flow::Flows::default();
    // fio's ramp_size with group_reporting: the bytes each group has moved in its ramp.
    let mut ramp_groups: std::collections::HashMap<u32, Arc<std::sync::atomic::AtomicU64>> =
        std::collections::HashMap::new();
    let mut footprints: Vec<overlap::Footprint> = Vec::new();
    let mut shared_ledgers = shared_verify::SharedLedgers::default();
    let mut job_number = 0u32;
    // The local files of the jobs with disk_util on: their disks are watched over the run.
    let mut disk_paths: Vec<std::path::PathBuf> = Vec::new();
    let entropy = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x5eed);
    for (spec_index, spec) in specs.iter().enumerate() {
        // read_iolog: the job as the log makes it (its files, directions and sizes).
        let replays = replay_setup::prepare(spec).map_err(|reason| RunError::Replay {
            job: spec.name.clone(),
            reason,
        })?;
        let job_spec = spec;
        for spec in std::iter::once(spec).chain(replays.iter().map(|replay| &replay.spec)) {
            if tool.readonly
                && (spec.does(crate::io::Direction::Write) || spec.does(crate::io::Direction::Trim))
            {
                return Err(RunError::ReadOnly {
                    job: spec.name.clone(),
                });
            }
        }
        // fio's file_append: the job starts at the file's end as it is now.
        let appended;
        let job_spec = match setup::appended(job_spec)? {
            Some(moved) => {
                appended = moved;
                &appended
            }
            None => job_spec,
        };
        for clone in 0..job_spec.numjobs.max(1) {
            job_number += 1;
            let replay = replays.get(clone as usize);
            let spec = replay.map_or(job_spec, |replay| &replay.spec);
            let seed = crate::workload::job_seed(
                spec.randseed,
                spec.randrepeat,
                job_number,
                entropy.wrapping_add(u64::from(job_number)),
            );
            let config = setup::engine_config(spec, embedded_url.as_ref(), seed)?;
            let engine = engine::open(&config).map_err(|source| RunError::Engine {
                job: spec.name.clone(),
                engine: spec.engine_name(),
                source: Box::new(source),
            })?;
            if let (Some(replay), EngineKind::Iscsi) = (replay, spec.engine()) {
                let lun = |file: usize| {
                    let (bytes, block) = engine
                        .file_geometry(file)
                        .unwrap_or((engine.size_bytes(), engine.block_size_bytes()));
                    (bytes, u64::from(block), target_name(spec, file))
                };
                replay_setup::check_fits(replay, lun).map_err(|reason| RunError::Replay {
                    job: spec.name.clone(),
                    reason,
                })?;
            }
            if spec.report.disk_util && spec.engine() == EngineKind::IoUring {
                disk_paths.extend(local_paths(spec));
            }
            if let Some(scheduler) = spec.files.ioscheduler.as_deref() {
                switch_ioscheduler(spec, scheduler)?;
            }
            let files = file_regions(spec, engine.as_ref(), clone, seed)?;
            let file_names = (0..files.len())
                .map(|file| file_name_in_errors(spec, file))
                .collect();
            let region = files[0].region;
            let mut workload_config =
                setup::workload_config(spec, region, seed, engine.block_size_bytes())?;
            // fio's zones wrap at the end of the file, not of the region.
            if let Some(zones) = workload_config.strided_zones.as_mut() {
                zones.target_end_bytes = files[0].target_bytes;
            }
            let zoned = workload_config.strided_zones.is_some();
            // fio's size over files of a filesize: shared out as its file service would.
            let region_bytes: Vec<u64> = files.iter().map(|file| file.region.len_bytes).collect();
            let shares = setup::filesize_io_shares(spec, &region_bytes);
            if let Some(shares) = &shares {
                workload_config.io_size_bytes = Some(shares[0]);
            }
            workload_config.more_files = files[1..]
                .iter()
                .enumerate()
                .map(|(index, file)| FileRegion {
                    offset_bytes: file.region.offset_bytes,
                    size_bytes: file.region.len_bytes,
                    io_size_bytes: shares.as_ref().map(|shares| shares[index + 1]),
                })
                .collect();
            let mut content =
                ContentGenerator::new(&spec.buffers, workload_config.seed).map_err(|source| {
                    RunError::Content {
                        job: spec.name.clone(),
                        source,
                    }
                })?;
            if let Some(percent) = spec.buffers.dedupe_working_set_percent {
                // fio: the working set is that percent of the region's minimum-size blocks.
                let blocks = workload_config.size_bytes / spec.min_block_size_bytes().max(1)
                    * u64::from(percent)
                    / 100;
                let set_seed = if spec.buffers.dedupe_global {
                    crate::workload::job_seed(spec.randseed, spec.randrepeat, 0, entropy)
                } else {
                    workload_config.seed
                };
                content = content.with_working_set(blocks.max(1), set_seed);
            }
            let mut workload =
                Workload::new(workload_config).map_err(|source| RunError::Workload {
                    job: spec.name.clone(),
                    source,
                })?;
            if let Some(replay) = replay {
                let log =
                    crate::workload::replay::Replay::open(&replay.path, replay.options.clone())
                        .map_err(|e| RunError::Replay {
                            job: spec.name.clone(),
                            reason: e.to_string(),
                        })?;
                workload = workload.replaying(log, replay.summary.bytes);
            }
            let state_path = verify_state::state_path(&spec.name, job_number);
            if spec.verify_state_load {
                verify_state::load(&state_path, &spec.name)
                    .and_then(|state| {
                        workload.resume_write_state(&state).map_err(|why| {
                            format!("verify_state_load: {}: {why}", state_path.display())
                        })
                    })
                    .map_err(|reason| RunError::VerifyState {
                        job: spec.name.clone(),
                        reason,
                    })?;
            }
            // What fio saves: a job writing with verify; a verify_only run wrote nothing.
            let verify_state_save = (spec.verify_state_save
                && !spec.verify_only
                && spec.verify != crate::job::spec::VerifyKind::None
                && spec.does(crate::io::Direction::Write))
            .then_some(state_path);
            // As the phases are cut below: each job (clone) with stonewall starts one.
            let phase = footprints
                .last()
                .map_or(0, |last| last.phase + usize::from(spec.stonewall));
            let shared_verify = match (spec.verify_shared, workload.verifier()) {
                (true, Some(verifier)) => Some(shared_ledgers.join(
                    spec,
                    overlap::clone_name(&spec.name, clone + 1, spec.numjobs.max(1)),
                    phase,
                    &files[0].name,
                    &files[0].reach(zoned),
                    verifier,
                )?),
                _ => None,
            };
            let files_named = files.len();
            for file in files {
                footprints.push(overlap::Footprint {
                    job: spec.name.clone(),
                    clone: clone + 1,
                    clones: spec.numjobs.max(1),
                    phase,
                    region: file.reach(zoned),
                    targets: vec![file.name],
                    writes: spec.does(crate::io::Direction::Write)
                        || spec.does(crate::io::Direction::Trim),
                    verifies: spec.verify != crate::job::spec::VerifyKind::None,
                    shared: spec.verify_shared,
                });
            }
            let live = Arc::new(LiveCounters::new());
            let bytes_total = workload.total_bytes();
            let end_syncfs = spec.end_syncfs && spec.does(crate::io::Direction::Write);
            let end_syncfs_local = end_syncfs && spec.engine() == EngineKind::IoUring;
            let end_syncfs_lun = end_syncfs && spec.engine() == EngineKind::Iscsi;
            let setup = JobSetup {
                name: spec.name.clone(),
                job_number,
                engine,
                workload,
                content,
                rate_floor: setup::rate_floor(spec),
                iodepth: spec.iodepth.max(1) as usize,
                batch_submit: match spec.iodepth_batch_submit {
                    0 => spec.iodepth.max(1) as usize,
                    n => n as usize,
                },
                latency_target: spec.latency_target.map(|target| {
                    latency_target::LatencyTarget::new(
                        target,
                        spec.latency_window,
                        spec.latency_percentile,
                        spec.latency_run,
                        spec.iodepth,
                    )
                }),
                max_latency_ns: setup::max_latency_ns(spec),
                priority: priority::ThreadPriority::from_options(
                    spec.nice,
                    spec.prioclass,
                    spec.prio,
                )
                .with_hint(spec.priohint),
                fsync_every: spec.fsync,
                fdatasync_every: spec.fdatasync,
                sync_file_range: spec.sync_file_range,
                verify_only: spec.verify_only,
                verify_state_save,
                // fio's fsync_on_close flushes at the end of a writing job as end_fsync
                // does (and once more as the file closes: the engine's part).
                end_fsync: (spec.end_fsync
                    || (spec.files.fsync_on_close && spec.does(crate::io::Direction::Write)))
                    && !end_syncfs_local
                    || end_syncfs_lun,
                steadystate: (!spec.ss_dur.is_zero()).then(|| {
                    steadystate::SteadyState::new(
                        spec.steadystate,
                        spec.ss_dur,
                        spec.ss_ramp,
                        spec.ss_interval,
                    )
                }),
                flow: flows.join(spec.flow_id, spec.flow, spec.flow_sleep),
                iodepth_low: spec
                    .iodepth_low
                    .map_or(spec.iodepth, |low| low.min(spec.iodepth))
                    .max(1) as usize,
                batch_complete_min: spec.iodepth_batch_complete_min.max(1) as usize,
                batch_complete_max: spec
                    .iodepth_batch_complete_max
                    .unwrap_or(spec.iodepth_batch_complete_min)
                    .max(1) as usize,
                runtime: spec.runtime.filter(|r| !r.is_zero()),
                ramp: spec.ramp_time,
                startdelay: spec.startdelay.min,
                verify_fatal: spec.verify_fatal,
                verify_dump: spec.verify_dump.then(|| dump_base(spec)),
                error_policy: spec.error_policy.clone(),
                file_names,
                stats_config: StatsConfig {
                    sample_interval_ms: spec.bw_sample_period().0,
                    iops_sample_interval_ms: spec.iops_sample_period().0,
                    track_intervals: interval.is_some(),
                    measure: crate::stats::Measured {
                        slat: !spec.disable_slat,
                        clat: !spec.disable_clat,
                        lat: !spec.disable_lat,
                        bandwidth: !spec.disable_bw,
                    },
                },
                interval,
                percentiles: spec.percentile_list.clone(),
                logs: log_options(spec, job_number)
                    .map(JobLogs::create)
                    .transpose()
                    .map_err(|source| RunError::Logs {
                        job: spec.name.clone(),
                        source,
                    })?,
                iolog: spec
                    .iolog
                    .write
                    .as_ref()
                    .map(|path| {
                        IologWriter::create(path, iolog_file_names(spec, clone, files_named))
                    })
                    .transpose()
                    .map_err(|source| RunError::Logs {
                        job: spec.name.clone(),
                        source,
                    })?,
                cpus: setup::job_cpus(spec, job_number),
                live: Arc::clone(&live),
                progress: Arc::new(JobProgress::default()),
                shared_verify,
                exec_prerun: spec.files.exec_prerun.clone(),
                exec_postrun: spec.files.exec_postrun.clone(),
                create_only: spec.files.create_only,
                lockmem_bytes: spec.files.lockmem_bytes,
                thinkcycles: spec.thinkcycles,
                // fio's end_syncfs (a writing job's, as fio's should_fsync): on local files
                // one syncfs(2) per file system instead of end_fsync's fsync per file; on
                // a LUN it is end_fsync's SYNCHRONIZE CACHE (below).
                syncfs_paths: if end_syncfs_local {
                    local_paths(spec).collect()
                } else {
                    Vec::new()
                },
                ramp_size: spec.ramp_size.map(|bytes| job::RampSize {
                    bytes,
                    moved: if spec.group_reporting {
                        Arc::clone(ramp_groups.entry(spec.group_id).or_default())
                    } else {
                        Arc::default()
                    },
                }),
                // fio drops it where nothing changes data or one I/O is in flight.
                unlink_each_loop: spec.files.unlink_each_loop,
                serialize_overlap: spec.serialize_overlap
                    && spec.iodepth > 1
                    && (spec.does(crate::io::Direction::Write)
                        || spec.does(crate::io::Direction::Trim)),
            };
            prepared.push(Prepared {
                spec_index,
                setup,
                live,
                bytes_total,
            });
        }
    }

    if let Some(overlap) = overlap::find_verify_overlap(&footprints) {
        return Err(overlap.into());
    }
    let disk_watch = DiskWatch::start(disk_paths.iter().map(|p| p.as_path()));
    let mut wall_start = Instant::now();
    let mut first_phase: Vec<Arc<JobProgress>> = Vec::new();

    // Phases: a job with `stonewall` waits for every job before it.
    let mut phases: Vec<Vec<Prepared>> = Vec::new();
    for job in prepared {
        let new_phase = specs[job.spec_index].stonewall || phases.is_empty();
        if new_phase {
            phases.push(Vec::new());
        }
        if let Some(phase) = phases.last_mut() {
            phase.push(job);
        }
    }
    let mut finished: Vec<(usize, JobOutcome)> = Vec::new();
    // When each job's phase started, ms after the run's start (the report's time axis).
    let mut phase_start_ms = vec![0u64; specs.len()];
    let mut status = status::StatusPrinter::new(tool);
    let mut dumps = dump::DumpClock::new(tool.status_interval, wall_start);
    let mut interrupted_by = None;
    let mut ended = exits::Ended::default();
    for (phase_index, phase) in phases.into_iter().enumerate() {
        if interrupted_by.is_some() {
            break;
        }
        let mut threads = Vec::with_capacity(phase.len());
        let mut watched = Vec::with_capacity(phase.len());
        let latch = gate
            .is_some()
            .then(|| Arc::new(start_latch::StartLatch::default()));
        // fio's wait_for: a job whose waitee is still running (or held itself) is held
        // back and started from the watch loop below once it ended.
        let mut held = phase;
        for job in take_released(&mut held, specs, &[]) {
            if ended.covers(&specs[job.spec_index]) {
                finished.push(never_started(&job));
                continue;
            }
            phase_start_ms[job.spec_index] = wall_start.elapsed().as_millis() as u64;
            if phase_index == 0 {
                first_phase.push(Arc::clone(&job.setup.progress));
            }
            let (watch, thread) = launch(job, specs, latch.as_ref())?;
            watched.push(watch);
            threads.push(thread);
        }
        if let (Some(latch), Some(gate)) = (latch, gate.take()) {
            let arrived = latch.wait_arrived(threads.len(), &|| {
                threads.iter().any(|(_, t)| t.is_finished()) || interrupt::caught().is_some()
            });
            let opened = if arrived {
                gate()
            } else {
                Err("a job ended while setting up its engine, or the run was interrupted".into())
            };
            let start_at_ns = match opened {
                Ok(start_at_ns) => start_at_ns,
                Err(e) => {
                    watched.iter().for_each(|job| job.progress.request_stop());
                    latch.open(0);
                    for (_, thread) in threads {
                        let _ = thread.join();
                    }
                    return Err(RunError::Gate(e));
                }
            };
            latch.open(start_at_ns);
            // The run's time axis starts with the common start.
            let wait_ns = start_at_ns.saturating_sub(crate::cluster::conn::now_ns());
            wall_start = Instant::now() + Duration::from_nanos(wait_ns);
            for (spec_index, _) in &threads {
                phase_start_ms[*spec_index] = 0;
            }
        }
        // The main thread watches; every job ends by itself (runtime, size or failure),
        // or at its next turn once a signal asked the run to end. Jobs are joined as they
        // end, so a status report has their final results.
        let mut outcomes: Vec<Option<JobOutcome>> = threads.iter().map(|_| None).collect();
        let mut handles: Vec<_> = threads.into_iter().map(Some).collect();
        loop {
            for (outcome, handle) in outcomes.iter_mut().zip(handles.iter_mut()) {
                if let Some((spec_index, thread)) = handle.take_if(|(_, t)| t.is_finished()) {
                    match thread.join() {
                        Ok(done) => {
                            // fio's exitall, exit_what and exitall_on_error.
                            if ended.on_job_end(&specs[spec_index], done.error != 0) {
                                watched
                                    .iter()
                                    .filter(|job| ended.covers_running(job.spec))
                                    .for_each(|job| job.progress.request_stop());
                            }
                            *outcome = Some(done);
                        }
                        Err(_) => tracing::error!("a job thread panicked"),
                    }
                }
            }
            let running: Vec<usize> = handles.iter().flatten().map(|(i, _)| *i).collect();
            for job in take_released(&mut held, specs, &running) {
                if ended.covers(&specs[job.spec_index]) {
                    finished.push(never_started(&job));
                    continue;
                }
                phase_start_ms[job.spec_index] = wall_start.elapsed().as_millis() as u64;
                let (watch, thread) = launch(job, specs, None)?;
                watched.push(watch);
                handles.push(Some(thread));
                outcomes.push(None);
            }
            if handles.iter().all(Option::is_none) && held.is_empty() {
                break;
            }
            if interrupted_by.is_none() {
                interrupted_by = interrupt::caught();
                if interrupted_by.is_some() {
                    // As with the phases after this one, the held jobs never start.
                    held.clear();
                    watched.iter().for_each(|job| job.progress.request_stop());
                }
            }
            if dumps.due(Instant::now()) {
                status.clear();
                let so_far = results_so_far(&finished, &watched, &outcomes);
                on_status(&run_report(specs, so_far, &phase_start_ms, wall_start));
            }
            status.maybe_print(&watched);
            std::thread::sleep(Duration::from_millis(50));
        }
        for (watch, outcome) in watched.iter().zip(outcomes) {
            if let Some(outcome) = outcome {
                finished.push((watch.spec_index, outcome));
            }
        }
        status.finish_phase(&watched);
    }
    status.clear();
    // The embedded target runs in this process: its threads' CPU is the target's, not
    // the tool's, and is left out of the tool's CPU per I/O.
    let target_cpu = embedded.as_ref().map(|_| threads_cpu("iscsi-target-"));
    drop(embedded);

    let failed = finished.iter().any(|(_, o)| o.error != 0);
    let engines = finished.iter().map(|(_, o)| o.engine).collect();
    let mut report = run_report(specs, finished, &phase_start_ms, wall_start);
    report.disks = disk_watch.finish();
    report.timestamp_ms = timestamp_ms;
    report.portable = tool.json_histograms;
    if let (Some(start), Ok(end)) = (process_start, ResourceUsage::process()) {
        let mut usage = end.since(&start);
        if let Some(target) = target_cpu {
            usage.user_ns = usage.user_ns.saturating_sub(target.user_ns);
            usage.system_ns = usage.system_ns.saturating_sub(target.system_ns);
        }
        report.process_usage = Some(usage);
    }
    let job_starts_ns = first_phase
        .iter()
        .map(|p| p.started_ns.load(Ordering::Relaxed))
        .filter(|&ns| ns != 0)
        .collect();
    Ok(RunOutcome {
        report,
        engines,
        failed,
        interrupted_by,
        job_starts_ns,
    })
}

/// Takes from `held` (in order) the jobs free to start: those without `wait_for`, and
/// those whose waitee, every clone of it, has ended (fio's `waitee_running`, backend.c).
/// A waitee is an earlier job: held or `running` in this phase, or ended in an earlier one.
fn take_released(held: &mut Vec<Prepared>, specs: &[JobSpec], running: &[usize]) -> Vec<Prepared> {
    let busy: Vec<&str> = held
        .iter()
        .map(|job| job.spec_index)
        .chain(running.iter().copied())
        .map(|index| specs[index].name.as_str())
        .collect();
    let (released, still_held) = std::mem::take(held).into_iter().partition(|job| {
        specs[job.spec_index]
            .wait_for
            .as_deref()
            .is_none_or(|waitee| !busy.contains(&waitee))
    });
    *held = still_held;
    released
}

/// A job `exitall` ended before it started: reported with nothing done, as fio.
fn never_started(job: &Prepared) -> (usize, JobOutcome) {
    let stats = crate::stats::JobStats::new(0, job.setup.stats_config.clone());
    (job.spec_index, JobOutcome::so_far(stats))
}

/// Starts `job` on its own thread; with a `latch`, it waits there for the common start.
fn launch<'a>(
    job: Prepared,
    specs: &'a [JobSpec],
    latch: Option<&Arc<start_latch::StartLatch>>,
) -> Result<
    (
        status::Watched<'a>,
        (usize, std::thread::JoinHandle<JobOutcome>),
    ),
    RunError,
> {
    let name = job.setup.name.clone();
    let watch = status::Watched {
        spec_index: job.spec_index,
        spec: &specs[job.spec_index],
        live: Arc::clone(&job.live),
        progress: Arc::clone(&job.setup.progress),
        bytes_total: job.bytes_total,
    };
    if let (Some(latch), Ok(mut slot)) = (latch, job.setup.progress.start_latch.lock()) {
        *slot = Some(Arc::clone(latch));
    }
    let spec_index = job.spec_index;
    let thread = std::thread::Builder::new()
        // fio's comm names the job's process (prctl PR_SET_NAME): here its thread.
        .name(
            specs[job.spec_index]
                .comm
                .clone()
                .unwrap_or_else(|| format!("job-{name}")),
        )
        .spawn(move || job::run_job(job.setup))
        .map_err(|source| RunError::Spawn { job: name, source })?;
    Ok((watch, (spec_index, thread)))
}

/// The local files (`filename` and the rest of its list) of a job on a local engine.
/// fio's `ioscheduler` for an io_uring job's local files (a LUN has no disk of ours):
/// warnings go to stderr and the job goes on, a failed switch fails the run before any I/O.
fn switch_ioscheduler(spec: &JobSpec, scheduler: &str) -> Result<(), RunError> {
    if spec.engine() != EngineKind::IoUring {
        return Ok(());
    }
    for path in local_paths(spec) {
        match ioscheduler::switch(&path, scheduler) {
            Ok(None) => {}
            Ok(Some(warning)) => eprintln!("iscsi-bench: {}: {warning}", spec.name),
            Err(reason) => {
                return Err(RunError::IoScheduler {
                    job: spec.name.clone(),
                    reason,
                })
            }
        }
    }
    Ok(())
}

fn local_paths(spec: &JobSpec) -> impl Iterator<Item = std::path::PathBuf> + '_ {
    std::iter::once(&spec.filename)
        .flatten()
        .chain(&spec.more_filenames)
        .filter_map(|target| match target {
            crate::job::spec::Target::Path(path) => Some(path.clone()),
            _ => None,
        })
}

/// The report of `jobs` (final or so far), `wall_start` being the run's start.
fn run_report(
    specs: &[JobSpec],
    jobs: Vec<(usize, JobOutcome)>,
    phase_start_ms: &[u64],
    wall_start: Instant,
) -> RunReport {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let unreported_groups = unreported_groups(specs);
    let mut report = RunReport::new(now_ms, job_reports(specs, jobs, phase_start_ms));
    report.unreported_groups = unreported_groups;
    report.disk_util = specs.iter().any(|spec| spec.report.disk_util);
    report.global_options = specs[0].given.global.clone();
    report.elapsed_s = wall_start.elapsed().as_secs();
    report
}

/// Every job's results so far, in run order: final ones for the jobs that ended, a copy
/// taken now for the ones still running (see [`dump`]).
fn results_so_far(
    finished: &[(usize, JobOutcome)],
    watched: &[status::Watched<'_>],
    outcomes: &[Option<JobOutcome>],
) -> Vec<(usize, JobOutcome)> {
    let running: Vec<&job::JobProgress> = watched
        .iter()
        .zip(outcomes)
        .filter(|(_, outcome)| outcome.is_none())
        .map(|(watch, _)| watch.progress.as_ref())
        .collect();
    let mut copies = dump::collect(&running).into_iter();
    let mut jobs = finished.to_vec();
    for (watch, outcome) in watched.iter().zip(outcomes) {
        let outcome = match outcome {
            Some(outcome) => Some(outcome.clone()),
            None => copies.next().flatten().map(JobOutcome::so_far),
        };
        if let Some(outcome) = outcome {
            jobs.push((watch.spec_index, outcome));
        }
    }
    jobs
}

/// How errors name file `file` of the job (0: `filename`, then the rest of its list).
/// The job's `file`th target as written (`None`: the embedded target, or none).
fn job_target(spec: &JobSpec, file: usize) -> Option<&crate::job::spec::Target> {
    match file {
        0 => spec.filename.as_ref(),
        n => spec.more_filenames.get(n - 1),
    }
}

/// How `write_iolog` names the job's files: as fio does, by the name it opens (the path
/// as given, or the file fio would make for a job without one, `$jobname.$jobnum.$filenum`
/// with clones numbered from 0), an iSCSI LUN by its URL.
fn iolog_file_names(spec: &JobSpec, clone: u32, count: usize) -> Vec<String> {
    (0..count.max(1))
        .map(|file| match job_target(spec, file) {
            None if spec.engine() != EngineKind::Iscsi => spec.local_file_name(clone, file as u32),
            _ => file_name_in_errors(spec, file),
        })
        .collect()
}

/// How a failed I/O's line names its file, as fio names it by its file name.
fn file_name_in_errors(spec: &JobSpec, file: usize) -> String {
    match (spec.engine(), job_target(spec, file)) {
        (EngineKind::Iscsi, None) => "the embedded target's LUN".into(),
        (_, target) => setup::describe_target(target),
    }
}

fn target_name(spec: &JobSpec, file: usize) -> String {
    let target = job_target(spec, file);
    match (spec.engine(), target) {
        (EngineKind::Iscsi, None) => "the embedded target's LUN".into(),
        (EngineKind::Iscsi, target) => format!("LUN {}", setup::describe_target(target)),
        (EngineKind::IoUring, target) if spec.direct => format!(
            "{} (its direct-I/O alignment)",
            setup::describe_target(target)
        ),
        (_, target) => setup::describe_target(target),
    }
}

/// One file (LUN) of a job clone: its region, its size and how errors name it.
struct JobFile {
    region: Region,
    target_bytes: u64,
    name: String,
}

impl JobFile {
    /// What the clone's I/O may touch: its region, or with strided zones (which wrap at the
    /// file's end, as fio's do) everything from its start to the file's end.
    fn reach(&self, zoned: bool) -> Region {
        if !zoned {
            return self.region;
        }
        Region {
            offset_bytes: self.region.offset_bytes,
            len_bytes: self.target_bytes - self.region.offset_bytes,
        }
    }
}

/// The region of clone `clone` (whose seed is `seed`) in each file the engine opened,
/// checked against that file's size and logical block. As in fio, a `size` in bytes is
/// divided between the files, and a `filesize` sets the size each file is taken to have.
fn file_regions(
    spec: &JobSpec,
    engine: &dyn engine::Engine,
    clone: u32,
    seed: u64,
) -> Result<Vec<JobFile>, RunError> {
    let count = engine.file_count().max(1);
    let divided;
    let per_file = match spec.size {
        Some(SizeSpec::Bytes(bytes)) if count > 1 => {
            let block = spec.min_block_size_bytes().max(1);
            let mut each = spec.clone();
            each.size = Some(SizeSpec::Bytes(bytes / count as u64 / block * block));
            divided = each;
            &divided
        }
        _ => spec,
    };
    let mut files = Vec::with_capacity(count);
    for file in 0..count {
        let (size_bytes, block_bytes) = engine
            .file_geometry(file)
            .unwrap_or((engine.size_bytes(), engine.block_size_bytes()));
        let name = target_name(spec, file);
        let used_bytes = file_bytes_used(spec, file, size_bytes, seed, &name)?;
        let region = per_file
            .region_for_clone(used_bytes, clone)
            .map_err(Box::new)?;
        // The null engine moves no data, so any size goes, as in fio.
        if spec.engine() != EngineKind::Null {
            per_file
                .check_block_alignment(&region, block_bytes, &name)
                .map_err(Box::new)?;
        }
        files.push(JobFile {
            region,
            target_bytes: size_bytes,
            name,
        });
    }
    Ok(files)
}

/// How much of file `file` (`size_bytes` long) the job uses: all of it, or its `filesize`.
/// The embedded target's LUN is new to the job, as a file fio creates is; a filesize past
/// the end of a LUN or device is refused (a regular file was laid out to it already).
fn file_bytes_used(
    spec: &JobSpec,
    file: usize,
    size_bytes: u64,
    seed: u64,
    name: &str,
) -> Result<u64, RunError> {
    let embedded = spec.engine() == EngineKind::Iscsi && spec.filename.is_none();
    let current_bytes = if embedded { 0 } else { size_bytes };
    match setup::file_size_bytes(spec, current_bytes, seed, file) {
        None => Ok(size_bytes),
        Some(used) if used <= size_bytes => Ok(used),
        Some(used) => Err(RunError::from(Box::new(crate::job::JobError::InvalidJob {
            at: spec.origin.clone(),
            job: spec.name.clone(),
            reason: format!(
                "filesize {used} is past the end of {name} ({size_bytes} bytes): only regular \
                 files are laid out to their filesize"
            ),
        }))),
    }
}

/// One embedded target for every iSCSI job that names no target, big enough for all.
fn start_embedded_target(specs: &[JobSpec]) -> Result<Option<EmbeddedTarget>, RunError> {
    let users: Vec<&JobSpec> = specs
        .iter()
        .filter(|s| s.engine() == EngineKind::Iscsi && s.filename.is_none())
        .collect();
    if users.is_empty() {
        return Ok(None);
    }
    let size = users
        .iter()
        .map(|s| setup::embedded_bytes_needed(s).unwrap_or(setup::EMBEDDED_DEFAULT_BYTES))
        .max()
        .unwrap_or(setup::EMBEDDED_DEFAULT_BYTES);
    EmbeddedTarget::start(&EmbeddedOptions::new(size))
        .map(Some)
        .map_err(|e| RunError::EmbeddedTarget(Box::new(e)))
}

fn log_options(spec: &JobSpec, job_number: u32) -> Option<LogOptions> {
    use crate::job::spec::LogName;
    let prefix = |name: &Option<LogName>| {
        name.as_ref().map(|n| match n {
            LogName::JobName => spec.name.clone(),
            LogName::Prefix(p) => p.clone(),
        })
    };
    let options = LogOptions {
        lat_prefix: prefix(&spec.write_lat_log),
        bw_prefix: prefix(&spec.write_bw_log),
        iops_prefix: prefix(&spec.write_iops_log),
        avg_msec: spec.log_avg_msec,
        bw_avg_msec: Some(spec.bw_sample_period().1),
        iops_avg_msec: Some(spec.iops_sample_period().1),
        log_offset: spec.log_offset,
        log_issue_time: spec.log_issue_time,
        window_value: spec.log_window_value,
        unix_epoch: spec.log_unix_epoch,
        job_number,
        shared_files: !spec.report.per_job_logs,
        silent: !spec.report.stats,
        hist_prefix: prefix(&spec.write_hist_log),
        hist_msec: spec.log_hist_msec,
        hist_coarseness: spec.log_hist_coarseness,
    };
    (options.lat_prefix.is_some()
        || options.bw_prefix.is_some()
        || options.iops_prefix.is_some()
        || options.hist_prefix.is_some())
    .then_some(options)
}

/// The per-job entries of the report: one per job, or one per group where the jobs ask
/// for `group_reporting` (fio merges the whole group then).
fn job_reports(
    specs: &[JobSpec],
    finished: Vec<(usize, JobOutcome)>,
    phase_start_ms: &[u64],
) -> Vec<JobReport> {
    // In job order, as fio reports: held (wait_for) and skipped jobs end out of order.
    let mut finished = finished;
    finished.sort_by_key(|(spec_index, _)| *spec_index);
    let mut reports: Vec<JobReport> = Vec::new();
    let mut merged_groups: Vec<(u32, usize)> = Vec::new();
    for (spec_index, outcome) in finished {
        let spec = &specs[spec_index];
        // fio's stats=0: the job runs, but no report (JSON, text, terse, group totals)
        // has it. (fio 3.42 still prints a blank entry per such job in its JSON and terse
        // output, with no name and group -1: a counting slip in its show_run_stats, not
        // copied here.)
        if !spec.report.stats {
            continue;
        }
        if spec.group_reporting {
            if let Some(&(_, at)) = merged_groups.iter().find(|(g, _)| *g == spec.group_id) {
                let report = &mut reports[at];
                report.stats.merge(&outcome.stats);
                report.sync.merge(&outcome.sync);
                report.recovery.merge(&recovery_report(&outcome));
                crate::engine::add_paths(&mut report.paths, &outcome.paths);
                report.rate_skipped_ns += outcome.rate_skipped.as_nanos() as u64;
                report.members += 1;
                if report.error == 0 && outcome.error != 0 {
                    report.error = outcome.error;
                    report.error_text = outcome.error_text;
                }
                continue;
            }
            merged_groups.push((spec.group_id, reports.len()));
        }
        let recovery = recovery_report(&outcome);
        let mut report = job_report(spec, outcome);
        // Its measurements start after its phase, its start delay and its ramp.
        report.start_ms = phase_start_ms.get(spec_index).copied().unwrap_or(0)
            + (spec.startdelay.min + spec.ramp_time).as_millis() as u64;
        report.recovery = recovery;
        reports.push(report);
    }
    reports
}

/// The groups none of whose jobs is reported (all `stats=0`).
fn unreported_groups(specs: &[JobSpec]) -> Vec<u32> {
    let mut groups: Vec<u32> = specs
        .iter()
        .filter(|spec| {
            specs
                .iter()
                .filter(|other| other.group_id == spec.group_id)
                .all(|other| !other.report.stats)
        })
        .map(|spec| spec.group_id)
        .collect();
    groups.dedup();
    groups
}

fn recovery_report(outcome: &JobOutcome) -> crate::output::RecoveryReport {
    crate::output::RecoveryReport {
        ios_timed_out: outcome.engine.ios_timed_out,
        late_completions: outcome.engine.late_completions,
        reconnects: outcome.engine.reconnects,
        reconnect_gap_ns_max: outcome.engine.reconnect_gap_ns_max,
        commands_resent: outcome.engine.commands_resent,
        verify_skipped: outcome.verify_skipped,
    }
}

fn job_report(spec: &JobSpec, outcome: JobOutcome) -> JobReport {
    let JobOutcome {
        stats,
        intervals,
        error,
        error_text,
        steadystate,
        sync,
        latency_depth,
        paths,
        rate_skipped,
        engine,
        ..
    } = outcome;
    let mut report = JobReport::new(&spec.name, spec.group_id, stats);
    report.error = error;
    report.error_text = error_text;
    report.iodepth = spec.iodepth;
    report.unified = spec.unified_rw_reporting;
    report.numbers = crate::output::NumberStyle {
        sig_figs: spec.report.significant_figures as usize,
        bits: spec.report.unit_base.bits(),
    };
    report.steadystate = steadystate;
    report.sync = sync;
    if let Some(depth) = latency_depth {
        report.iodepth = depth;
        report.latency_target = spec.latency_target.map_or(0, |t| t.as_nanos() as u64);
        report.latency_percentile = spec.latency_percentile;
        report.latency_window_us = spec.latency_window.as_micros() as u64;
    }
    report.intervals = intervals;
    report.paths = paths;
    report.engine = engine;
    report.rate_skipped_ns = rate_skipped.as_nanos() as u64;
    report.percentiles = PercentileOptions {
        list: spec.percentile_list.clone(),
        slat: spec.slat_percentiles,
        clat: spec.clat_percentiles,
        lat: spec.lat_percentiles,
    };
    report.options = job_options(spec);
    report.target = target_description(spec);
    report
}

/// fio's name for a job's verify dumps: the base name of its file (the LUN number of an
/// iSCSI URL, whose last part it is).
fn dump_base(spec: &JobSpec) -> String {
    use crate::job::spec::Target;
    match &spec.filename {
        Some(Target::Path(path)) => path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| spec.name.clone()),
        Some(Target::Iscsi(url)) => url.lun.to_string(),
        _ => spec.name.clone(),
    }
}

/// What the job ran against, for the report (the URL without its password).
fn target_description(spec: &JobSpec) -> String {
    use crate::job::spec::Target;
    match (&spec.filename, spec.engine()) {
        (_, EngineKind::Null) | (Some(Target::Null), _) => "null engine (no target)".to_string(),
        (Some(Target::Iscsi(url)), _) => {
            let user = url
                .user
                .as_ref()
                .map(|u| format!("{u}@"))
                .unwrap_or_default();
            let host = if url.host.contains(':') {
                format!("[{}]", url.host)
            } else {
                url.host.clone()
            };
            format!(
                "iscsi://{user}{host}:{}/{}/{}",
                url.port, url.target_iqn, url.lun
            )
        }
        (Some(Target::Path(path)), _) => format!("{} ({})", path.display(), spec.engine_name()),
        (None, _) => "embedded target (an in-process RAM LUN)".to_string(),
    }
}

/// fio's "job options": the options of the job's own section, as written (`name` is
/// shown as the job's name already).
fn job_options(spec: &JobSpec) -> Vec<(String, String)> {
    spec.given
        .own
        .iter()
        .filter(|(key, _)| key != "name")
        .cloned()
        .collect()
}

/// Used by `status` to know a job is over.
fn is_over(progress: &JobProgress) -> bool {
    matches!(
        progress.state.load(Ordering::Relaxed),
        job::state::DONE | job::state::FAILED
    )
}

/// The CPU time of this process's threads whose name starts with `prefix`, from
/// `/proc/self/task/*/stat` (utime and stime, fields 14 and 15, in clock ticks).
fn threads_cpu(prefix: &str) -> ResourceUsage {
    let mut usage = ResourceUsage::default();
    // SAFETY: sysconf has no preconditions.
    let ticks_per_s = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as u64,
        _ => 100,
    };
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return usage;
    };
    for task in tasks.flatten().take(4096) {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // The command name may hold spaces; the fields after it are plain.
        let Some(after) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        // After ')' the state is field 3, so utime (14) and stime (15) are at 11 and 12.
        let tick = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        usage.user_ns += tick(11) * 1_000_000_000 / ticks_per_s;
        usage.system_ns += tick(12) * 1_000_000_000 / ticks_per_s;
    }
    usage
}
