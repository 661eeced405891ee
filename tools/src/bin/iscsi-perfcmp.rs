//! `iscsi-perfcmp`: drives one workload through the shard path ([`datapath::shard`]) for a
//! fixed time and prints one result line, in the same terms `scripts/bench.sh` uses for
//! libiscsi's `iscsi-perf`: IOPS, MB/s, initiator CPU seconds per million I/Os (user +
//! system of this whole process, from `getrusage`), p50/p99 latency (submit to completion,
//! HdrHistogram), and the shard counters (kernel entries per I/O, user-space copies, time
//! the command window was closed, peak queue depth).
//!
//! Meant for null LUNs: the write patterns write zeroes.
//!
//! `--send-zc-min-bytes` sends PDUs with payloads at least that long with
//! `IORING_OP_SENDMSG_ZC`. Measured on loopback (Linux 6.18, 2 vCPUs, null LUN of the
//! embedded target, two rounds, same minute): zero-copy never paid. 64 KiB seqwrite qd8:
//! 49-55K IOPS plain, 20-25K with zero-copy at a 4 KiB or 64 KiB threshold; 1 MiB qd4:
//! 1.3-2.1K plain, 0.9-1.5K zero-copy, with more CPU per I/O in every case (loopback
//! copies the pages anyway; the pinning and the notification completion come on top).
//! So the shard's default threshold is "never"; on a real NIC measure with this option
//! before setting one.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use datapath::client::ClientConfig;
use datapath::shard::{
    ShardCompletion, ShardConfig, ShardPool, ShardStats, ShardWork, WorkStatus, WorkSubmitter,
};
use hdrhistogram::Histogram;
use tools::perf::{
    drive_through_queue, prepare_workload, process_cpu, DriverResult, Pattern, Workload,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// On the shard's own thread (`ShardPool::run_on_shard`).
    OnShard,
    /// From a caller thread per shard, through the shard's queue.
    Queue,
}

#[derive(Debug, Parser)]
#[command(
    name = "iscsi-perfcmp",
    about = "Read benchmark over the shard data path"
)]
struct Args {
    /// Target portal, host:port.
    #[arg(long)]
    portal: SocketAddr,
    /// Target IQN.
    #[arg(long)]
    target: String,
    #[arg(long, default_value_t = 1)]
    lun: u64,
    #[arg(long, value_enum, default_value_t = Pattern::Randread)]
    pattern: Pattern,
    /// Bytes per I/O (a multiple of the LUN's block length).
    #[arg(long, default_value_t = 4096)]
    bs: u32,
    /// I/Os in flight per shard.
    #[arg(long, default_value_t = 1)]
    qd: usize,
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Pin shard i to core (core + i).
    #[arg(long)]
    core: Option<usize>,
    /// Measured run time.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// MaxRecvDataSegmentLength we declare. 1 MiB: payloads are placed straight into the
    /// caller's buffer, so a larger Data-In costs nothing extra and saves headers and
    /// kernel entries (1 MiB reads: about 2.7 entries per I/O instead of 8.7 at 256 KiB).
    #[arg(long, default_value_t = 1_048_576)]
    max_recv_segment: u32,
    /// Microseconds this program (the caller) polls for a completion before it sleeps.
    /// Default: 50 at --qd 1 and 2 (latency-bound: a sleeping caller costs a wake-up per
    /// I/O), 0 above (completions come in batches and sleeping is cheap).
    #[arg(long)]
    spin_us: Option<u64>,
    /// Microseconds an idle shard polls its queue before it sleeps.
    #[arg(long, default_value_t = 50)]
    shard_spin_us: u64,
    /// Microseconds a shard with one or two commands in flight polls for their answers
    /// before it sleeps (ShardConfig::completion_spin).
    #[arg(long, default_value_t = 20)]
    completion_spin_us: u64,
    /// Ask for an SQPOLL kernel thread per shard.
    #[arg(long)]
    sqpoll: bool,
    /// SO_BUSY_POLL / io_uring NAPI busy poll, microseconds (0: off).
    #[arg(long, default_value_t = 0)]
    busy_poll_us: u32,
    /// Zero-copy sends for payloads at least this long (default: never).
    #[arg(long)]
    send_zc_min_bytes: Option<u32>,
    /// Completions the shard posts before it wakes this program when it sleeps, while
    /// more are in flight (ShardConfig::caller_wake_batch). Default: --qd.
    #[arg(long)]
    wake_batch: Option<usize>,
    /// Longest a posted completion waits for that wake-up, microseconds.
    #[arg(long, default_value_t = 100)]
    wake_delay_us: u64,
    /// Receive coalescing, microseconds (ShardConfig::recv_coalesce; 0: off).
    #[arg(long, default_value_t = 150)]
    recv_coalesce_us: u64,
    /// Where the workload runs: on each shard's own thread (`on-shard`, run to
    /// completion: no queue, doorbell or wake-up between the workload and its I/O) or on
    /// a thread of its own per shard that submits through the shard's queue (`queue`).
    #[arg(long, value_enum, default_value_t = Mode::OnShard)]
    mode: Mode,
    #[arg(skip)]
    spin: Duration,
    /// Print one JSON object instead of key=value pairs.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    let default_spin_us = if args.qd <= 2 { 50 } else { 0 };
    args.spin = Duration::from_micros(args.spin_us.unwrap_or(default_spin_us));
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iscsi-perfcmp: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    if args.qd == 0 || args.shards == 0 || args.bs == 0 {
        return Err("--qd, --shards and --bs must be positive".into());
    }
    let mut client = ClientConfig::new(args.portal, Some(args.target.clone()));
    client.offer.max_recv_data_segment_length = args.max_recv_segment;
    client.offer.max_burst_length = args.max_recv_segment.max(args.bs);
    client.offer.immediate_data = true;
    client.command_timeout = Duration::from_secs(30);
    let config = ShardConfig {
        core: args.core,
        queue_depth: args.qd,
        idle_spin: Duration::from_micros(args.shard_spin_us),
        completion_spin: Duration::from_micros(args.completion_spin_us),
        sqpoll: args.sqpoll,
        busy_poll_us: args.busy_poll_us,
        send_zc_min_bytes: args.send_zc_min_bytes,
        caller_wake_batch: args.wake_batch,
        recv_coalesce: Duration::from_micros(args.recv_coalesce_us),
        caller_wake_delay_max: Duration::from_micros(args.wake_delay_us),
        ..ShardConfig::default()
    };
    let pool = ShardPool::start(&client, args.shards, &config).map_err(|e| e.to_string())?;
    let spec = prepare_workload(&pool, args.pattern, args.lun, args.bs, args.qd)?;
    let run_for = Duration::from_secs_f64(args.seconds);
    // The counters of the measured phase only (not login, TEST UNIT READY, capacity).
    let before = ShardStats::sum(&pool.all_stats());

    let cpu_before = process_cpu();
    let started = Instant::now();
    let workloads: Vec<Workload> = (0..args.shards)
        .map(|shard| Workload::new(spec, shard, run_for))
        .collect();
    let results: Vec<Result<DriverResult, String>> = match args.mode {
        Mode::OnShard => drive_on_shards(&pool, workloads),
        Mode::Queue => std::thread::scope(|scope| {
            let handles: Vec<_> = workloads
                .into_iter()
                .enumerate()
                .map(|(shard, mut w)| {
                    let pool = &pool;
                    scope.spawn(move || {
                        drive_through_queue(pool, shard, &mut w, || {
                            pool.wait_completion(shard, args.spin, Duration::from_secs(30))
                                .map_err(|e| e.to_string())
                        })
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("driver panicked".into())))
                .collect()
        }),
    };
    let elapsed = started.elapsed();
    let cpu = process_cpu().saturating_sub(cpu_before);
    let stats = ShardStats::sum(&pool.all_stats());
    drop(pool);

    let mut latency = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    let (mut ios, mut bytes, mut errors) = (0u64, 0u64, 0u64);
    let mut first_error = None;
    for r in results {
        let r = r?;
        ios += r.ios;
        bytes += r.bytes;
        errors += r.errors;
        first_error = first_error.or(r.first_error);
        latency.add(&r.latency).map_err(|e| e.to_string())?;
    }
    let secs = elapsed.as_secs_f64();
    let iops = ios as f64 / secs;
    let mbps = bytes as f64 / secs / 1e6;
    let cpu_per_million = if ios == 0 {
        0.0
    } else {
        cpu.as_secs_f64() * 1e6 / ios as f64
    };
    let p50 = latency.value_at_quantile(0.50);
    let p99 = latency.value_at_quantile(0.99);
    let fields: Vec<(&str, String)> = vec![
        ("ios", ios.to_string()),
        ("errors", errors.to_string()),
        ("seconds", format!("{secs:.3}")),
        ("iops", format!("{iops:.0}")),
        ("mbps", format!("{mbps:.1}")),
        ("cpu_s", format!("{:.3}", cpu.as_secs_f64())),
        ("cpu_s_per_mio", format!("{cpu_per_million:.2}")),
        ("p50_us", p50.to_string()),
        ("p99_us", p99.to_string()),
        (
            "kernel_entries_per_io",
            format!(
                "{:.2}",
                (stats.kernel_entries - before.kernel_entries) as f64 / ios.max(1) as f64
            ),
        ),
        (
            "bytes_copied",
            (stats.bytes_copied - before.bytes_copied).to_string(),
        ),
        (
            "window_closed_ms",
            format!("{:.1}", stats.window_closed_ns as f64 / 1e6),
        ),
        ("peak_queue_depth", stats.peak_queue_depth.to_string()),
    ];
    if args.json {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("\"{k}\": {v}"))
            .collect();
        println!("{{{}}}", body.join(", "));
    } else {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("{}", body.join(" "));
    }
    if errors > 0 {
        return Err(format!(
            "{errors} I/Os failed, the first with: {}",
            first_error.unwrap_or_default()
        ));
    }
    Ok(())
}

/// The same workload run on the shard's own thread ([`ShardWork`]): the shard hands it
/// completions inside its loop and takes its requests straight into the session.
struct OnShard {
    workload: Workload,
    /// Why it stopped issuing, if it could not build a request.
    error: Option<String>,
    results: Option<crossbeam_channel::Sender<Result<DriverResult, String>>>,
}

impl ShardWork for OnShard {
    fn poll(
        &mut self,
        now: Instant,
        done: &mut Vec<ShardCompletion>,
        submit: &mut WorkSubmitter<'_>,
    ) -> WorkStatus {
        let w = &mut self.workload;
        for completion in done.drain(..) {
            w.complete(completion, now);
        }
        if w.issuing(now) {
            // Bounded by the free slots and the shard's room.
            while submit.room() > 0 {
                match w.next_request(now) {
                    Ok(Some(request)) => {
                        if let Err(back) = submit.submit(request) {
                            w.give_back(back);
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.error.get_or_insert(e);
                        break;
                    }
                }
            }
        }
        if w.in_flight() > 0 {
            return WorkStatus::Running;
        }
        if let Some(results) = self.results.take() {
            let result = match self.error.take() {
                Some(e) => Err(e),
                None => Ok(self.workload.take_result()),
            };
            let _ = results.send(result);
        }
        WorkStatus::Finished
    }
}

/// Runs one workload per shard on the shards' own threads and waits for their results.
fn drive_on_shards(
    pool: &ShardPool,
    workloads: Vec<Workload>,
) -> Vec<Result<DriverResult, String>> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut started = 0;
    let mut results = Vec::new();
    let mut longest = Duration::ZERO;
    for (shard, workload) in workloads.into_iter().enumerate() {
        longest = longest.max(workload.end().saturating_duration_since(Instant::now()));
        let work = OnShard {
            workload,
            error: None,
            results: Some(tx.clone()),
        };
        match pool.run_on_shard(shard, Box::new(work)) {
            Ok(()) => started += 1,
            Err(e) => results.push(Err(e.to_string())),
        }
    }
    drop(tx);
    // Bounded: each shard answers once, or drops its work (and its sender) when it stops.
    let deadline = Instant::now() + longest + Duration::from_secs(30);
    for _ in 0..started {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(result) => results.push(result),
            Err(_) => {
                results.push(Err("a shard stopped before its workload finished".into()));
                break;
            }
        }
    }
    results
}
