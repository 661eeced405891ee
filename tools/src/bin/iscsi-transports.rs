//! `iscsi-transports`: one read workload through the shard data path over each transport
//! (software TCP, a dependent adapter model, an independent adapter model) in one run, side
//! by side (issue 6 item 7; DESIGN.md rule 7: measured, in the same run, as ratios).
//!
//! For each transport it starts a fresh [`ShardPool`] (over a fresh adapter model with one
//! queue pair per shard), takes the unit attention and the capacity, warms up, then keeps
//! `--qd` reads in flight per shard for `--seconds` and measures:
//! - IOPS and MB/s;
//! - **host CPU per I/O**: this process's user + system CPU (`getrusage(RUSAGE_SELF)`)
//!   minus the adapter model's own threads (its `offload::cpu::CpuMeter`): the caller's
//!   driver threads and the shard threads, i.e. what a real host would still spend;
//! - of which **shard CPU per I/O**: the shard threads alone (`/proc/self/task/*/schedstat`,
//!   threads named `iscsi-shard-*`), the part the transport changes;
//! - **adapter CPU per I/O**: the model's threads (what a real adapter's processors would do);
//! - p50/p99 latency, the shards' kernel entries per I/O and bytes copied on the host.
//!
//! The models run on the same cores as the host here, so adapter CPU competes with host CPU:
//! totals and IOPS are not what hardware would give; the host/adapter split is the point.
//! Meant for null LUNs (the write patterns write zeroes).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use datapath::client::ClientConfig;
use datapath::shard::{ShardCompletion, ShardConfig, ShardPool, ShardStats};
use datapath::transport::TransportKind;
use hdrhistogram::Histogram;
use tools::perf::{
    drive_through_queue, prepare_workload, process_cpu, DriverResult, Pattern, Workload,
    WorkloadSpec,
};

#[derive(Debug, Parser)]
#[command(
    name = "iscsi-transports",
    about = "One read workload over software TCP, a dependent and an independent adapter model"
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
    #[arg(long, default_value_t = 32)]
    qd: usize,
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Pin shard i to core (core + i).
    #[arg(long)]
    core: Option<usize>,
    /// Measured run time per transport.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Unmeasured run time before each measurement.
    #[arg(long, default_value_t = 0.5)]
    warmup_seconds: f64,
    /// The transports to run, in order (comma-separated).
    #[arg(
        long,
        value_parser = tools::args::transport_parser(),
        value_delimiter = ',',
        default_value = "software,dependent,independent"
    )]
    transports: Vec<TransportKind>,
    /// Offer CRC32C header and data digests (the adapters offload them; software computes).
    #[arg(long)]
    digests: bool,
    /// Microseconds the caller and the shards poll their queues before sleeping.
    #[arg(long, default_value_t = 50)]
    spin_us: u64,
    /// Print one JSON object per transport instead of the table.
    #[arg(long)]
    json: bool,
}

/// Thread name prefixes: the caller's driver threads, the shards, the models' engines.
const DRIVER_THREAD: &str = "driver-";
const SHARD_THREAD: &str = "iscsi-shard-";
const ADAPTER_THREADS: [&str; 2] = ["dep", "indep"];

fn main() -> ExitCode {
    let args = Args::parse();
    if args.qd == 0
        || args.shards == 0
        || args.bs == 0
        || !args.seconds.is_finite()
        || args.seconds <= 0.0
    {
        eprintln!("iscsi-transports: --qd, --shards, --bs and --seconds must be positive");
        return ExitCode::FAILURE;
    }
    let mut rows = Vec::new();
    for transport in &args.transports {
        match measure(&args, *transport) {
            Ok(row) => rows.push(row),
            Err(e) => {
                eprintln!("iscsi-transports: {transport}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    print_rows(&args, &rows);
    if rows.iter().any(|r| r.errors > 0) {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// What one transport measured.
struct Row {
    transport: &'static str,
    ios: u64,
    errors: u64,
    seconds: f64,
    bytes: u64,
    process_cpu: Duration,
    adapter_cpu: Duration,
    /// The adapter's threads as the kernel counts them (a check on the meter).
    adapter_threads_cpu: Duration,
    shard_cpu: Duration,
    caller_cpu: Duration,
    p50_us: u64,
    p99_us: u64,
    stats: ShardStats,
}

impl Row {
    fn per_io_us(&self, cpu: Duration) -> f64 {
        if self.ios == 0 {
            0.0
        } else {
            cpu.as_secs_f64() * 1e6 / self.ios as f64
        }
    }

    fn host_cpu(&self) -> Duration {
        self.process_cpu.saturating_sub(self.adapter_cpu)
    }
}

fn measure(args: &Args, transport: TransportKind) -> Result<Row, String> {
    let mut client = ClientConfig::new(args.portal, Some(args.target.clone()));
    client.offer.max_recv_data_segment_length = 262_144;
    client.offer.max_burst_length = 262_144u32.max(args.bs);
    client.offer.immediate_data = true;
    if args.digests {
        client.offer.header_digests = vec![datapath::text::DigestChoice::Crc32c];
        client.offer.data_digests = vec![datapath::text::DigestChoice::Crc32c];
    }
    client.command_timeout = Duration::from_secs(30);
    // For an adapter, a fresh model with one queue pair per shard.
    let path = offload::model_path(transport, args.shards);
    let spin = Duration::from_micros(args.spin_us);
    let config = ShardConfig {
        core: args.core,
        queue_depth: args.qd,
        idle_spin: spin,
        path: path.clone(),
        ..ShardConfig::default()
    };
    let pool = ShardPool::start(&client, args.shards, &config).map_err(|e| e.to_string())?;
    let spec = prepare_workload(&pool, args.pattern, args.lun, args.bs, args.qd)?;
    let job = Job { spec, spin };
    if args.warmup_seconds > 0.0 {
        run_drivers(&pool, &job, Duration::from_secs_f64(args.warmup_seconds))?;
    }
    let stats_before = ShardStats::sum(&pool.all_stats());
    let process_before = process_cpu();
    let adapter_before = path.adapter_cpu_time().unwrap_or_default();
    let shard_before = threads_cpu(&[SHARD_THREAD]);
    let adapter_threads_before = threads_cpu(&ADAPTER_THREADS);
    let started = Instant::now();
    let results = run_drivers(&pool, &job, Duration::from_secs_f64(args.seconds))?;
    let seconds = started.elapsed().as_secs_f64();
    let process_cpu = process_cpu().saturating_sub(process_before);
    let adapter_cpu = path
        .adapter_cpu_time()
        .unwrap_or_default()
        .saturating_sub(adapter_before);
    let shard_cpu = threads_cpu(&[SHARD_THREAD]).saturating_sub(shard_before);
    let adapter_threads_cpu = threads_cpu(&ADAPTER_THREADS).saturating_sub(adapter_threads_before);
    let stats_after = ShardStats::sum(&pool.all_stats());
    drop(pool);

    let mut latency = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    let (mut ios, mut bytes, mut errors) = (0u64, 0u64, 0u64);
    let caller_cpu = results.iter().map(|r| r.cpu).sum();
    for Driven { result: r, .. } in results {
        ios += r.ios;
        bytes += r.bytes;
        errors += r.errors;
        latency.add(&r.latency).map_err(|e| e.to_string())?;
    }
    let stats = ShardStats {
        kernel_entries: stats_after
            .kernel_entries
            .saturating_sub(stats_before.kernel_entries),
        bytes_copied: stats_after
            .bytes_copied
            .saturating_sub(stats_before.bytes_copied),
        ..stats_after
    };
    Ok(Row {
        transport: path.name(),
        ios,
        errors,
        seconds,
        bytes,
        process_cpu,
        adapter_cpu,
        adapter_threads_cpu,
        shard_cpu,
        caller_cpu,
        p50_us: latency.value_at_quantile(0.50),
        p99_us: latency.value_at_quantile(0.99),
        stats,
    })
}

fn print_rows(args: &Args, rows: &[Row]) {
    let software_host = rows
        .iter()
        .find(|r| r.transport == "software")
        .map(|r| r.per_io_us(r.host_cpu()));
    if args.json {
        for r in rows {
            println!(
                "{{\"transport\": \"{}\", \"pattern\": \"{:?}\", \"bs\": {}, \"qd\": {}, \"ios\": {}, \"errors\": {}, \"iops\": {:.0}, \"mbps\": {:.1}, \"host_cpu_us_per_io\": {:.2}, \"caller_cpu_us_per_io\": {:.2}, \"shard_cpu_us_per_io\": {:.2}, \"adapter_cpu_us_per_io\": {:.2}, \"adapter_threads_cpu_us_per_io\": {:.2}, \"p50_us\": {}, \"p99_us\": {}, \"kernel_entries_per_io\": {:.3}, \"bytes_copied\": {}}}",
                r.transport,
                args.pattern,
                args.bs,
                args.qd,
                r.ios,
                r.errors,
                r.ios as f64 / r.seconds,
                r.bytes as f64 / r.seconds / 1e6,
                r.per_io_us(r.host_cpu()),
                r.per_io_us(r.caller_cpu),
                r.per_io_us(r.shard_cpu),
                r.per_io_us(r.adapter_cpu),
                r.per_io_us(r.adapter_threads_cpu),
                r.p50_us,
                r.p99_us,
                r.stats.kernel_entries as f64 / r.ios.max(1) as f64,
                r.stats.bytes_copied,
            );
        }
        return;
    }
    println!(
        "{:<12} {:>8} {:>7} | {:>10} {:>9} {:>8} {:>6} | {:>10} {:>8} | {:>6} {:>6} | {:>6} {:>9}",
        "transport",
        "IOPS",
        "MB/s",
        "host us/IO",
        "caller us",
        "shard us",
        "host x",
        "adapter us",
        "(threads)",
        "p50 us",
        "p99 us",
        "ent/IO",
        "copied B"
    );
    for r in rows {
        let host = r.per_io_us(r.host_cpu());
        let ratio = match software_host {
            Some(s) if s > 0.0 => format!("{:.2}", host / s),
            _ => "n/a".into(),
        };
        println!(
            "{:<12} {:>8.0} {:>7.1} | {:>10.2} {:>9.2} {:>8.2} {:>6} | {:>10.2} {:>8.2} | {:>6} {:>6} | {:>6.3} {:>9}",
            r.transport,
            r.ios as f64 / r.seconds,
            r.bytes as f64 / r.seconds / 1e6,
            host,
            r.per_io_us(r.caller_cpu),
            r.per_io_us(r.shard_cpu),
            ratio,
            r.per_io_us(r.adapter_cpu),
            r.per_io_us(r.adapter_threads_cpu),
            r.p50_us,
            r.p99_us,
            r.stats.kernel_entries as f64 / r.ios.max(1) as f64,
            r.stats.bytes_copied,
        );
    }
}

/// The calling thread's CPU time.
fn thread_cpu() -> Duration {
    Duration::from_nanos(offload::cpu::thread_cpu_ns())
}

/// CPU time of this process's live threads whose name starts with one of `prefixes`, from
/// `/proc/self/task/<tid>/schedstat` (first field: nanoseconds on a CPU). Bounded by the
/// thread count the kernel lists.
fn threads_cpu(prefixes: &[&str]) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let mut total_ns = 0u64;
    for task in tasks.flatten().take(4096) {
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !prefixes.iter().any(|p| name.trim_end().starts_with(p)) {
            continue;
        }
        let schedstat = std::fs::read_to_string(dir.join("schedstat")).unwrap_or_default();
        total_ns += schedstat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Duration::from_nanos(total_ns)
}

/// The fixed facts of one workload.
struct Job {
    spec: WorkloadSpec,
    spin: Duration,
}

/// What one shard's driver thread measured, and its own CPU time over the run.
struct Driven {
    cpu: Duration,
    result: DriverResult,
}

/// One driver thread per shard for `run_for`.
fn run_drivers(pool: &ShardPool, job: &Job, run_for: Duration) -> Result<Vec<Driven>, String> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..pool.len())
            .map(|shard| {
                std::thread::Builder::new()
                    .name(format!("{DRIVER_THREAD}{shard}"))
                    .spawn_scoped(scope, move || drive(pool, shard, job, run_for))
                    .map_err(|e| format!("driver thread: {e}"))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h?.join().unwrap_or_else(|_| Err("driver panicked".into())))
            .collect()
    })
}

/// The next completion: polled for up to `spin`, then waited for (at most 30 s).
fn next_completion(
    completions: &crossbeam_channel::Receiver<ShardCompletion>,
    spin: Duration,
) -> Option<ShardCompletion> {
    let until = Instant::now() + spin;
    while Instant::now() < until {
        if let Ok(done) = completions.try_recv() {
            return Some(done);
        }
        std::thread::yield_now();
    }
    completions.recv_timeout(Duration::from_secs(30)).ok()
}

/// Keeps the job's reads in flight on one shard until `run_for` has passed, then drains.
fn drive(pool: &ShardPool, shard: usize, job: &Job, run_for: Duration) -> Result<Driven, String> {
    let cpu_started = thread_cpu();
    let completions = pool.completions(shard).ok_or("no such shard")?;
    let mut workload = Workload::new(job.spec, shard, run_for);
    let result = drive_through_queue(pool, shard, &mut workload, || {
        next_completion(completions, job.spin)
            .ok_or_else(|| format!("shard {shard}: no completion within 30 s"))
    })?;
    if let Some(e) = &result.first_error {
        eprintln!("shard {shard}: {e}");
    }
    Ok(Driven {
        cpu: thread_cpu().saturating_sub(cpu_started),
        result,
    })
}
