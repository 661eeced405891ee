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
use datapath::scsi::Cdb;
use datapath::session::DataDirection;
use datapath::shard::{
    ShardCompletion, ShardConfig, ShardPool, ShardRequest, ShardStats, ShardWork, WorkStatus,
    WorkSubmitter,
};
use hdrhistogram::Histogram;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Pattern {
    /// Uniformly random block-aligned offsets.
    Randread,
    /// Consecutive offsets, wrapping at the end of the LUN.
    Seqread,
    /// Random offsets, writes (zeroes): for null LUNs only.
    Randwrite,
    /// Consecutive offsets, writes (zeroes): for null LUNs only.
    Seqwrite,
}

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

/// User + system CPU time of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass; all-zero is a valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer to a live rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// A small xorshift generator: random offsets without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// What one shard's workload measured.
struct DriverResult {
    ios: u64,
    bytes: u64,
    errors: u64,
    first_error: Option<String>,
    latency: Histogram<u64>,
}

impl DriverResult {
    fn empty() -> DriverResult {
        DriverResult {
            ios: 0,
            bytes: 0,
            errors: 0,
            first_error: None,
            latency: Histogram::<u64>::new(3).expect("3 significant digits is valid"),
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
    let (block_len, blocks) = prepare(&pool, args)?;
    if !args.bs.is_multiple_of(block_len) {
        return Err(format!(
            "--bs {} is not a multiple of the block length {block_len}",
            args.bs
        ));
    }
    let io_blocks = args.bs / block_len;
    let slots = blocks / u64::from(io_blocks);
    if slots == 0 {
        return Err("the LUN is smaller than one I/O".into());
    }
    let run_for = Duration::from_secs_f64(args.seconds);
    // The counters of the measured phase only (not login, TEST UNIT READY, capacity).
    let before = ShardStats::sum(&pool.all_stats());

    let cpu_before = cpu_time();
    let started = Instant::now();
    let workloads = (0..args.shards)
        .map(|shard| Workload::new(shard, args, io_blocks, block_len, slots, run_for))
        .collect::<Result<Vec<_>, _>>()?;
    let results: Vec<Result<DriverResult, String>> = match args.mode {
        Mode::OnShard => drive_on_shards(&pool, workloads),
        Mode::Queue => std::thread::scope(|scope| {
            let handles: Vec<_> = workloads
                .into_iter()
                .enumerate()
                .map(|(shard, w)| {
                    let pool = &pool;
                    scope.spawn(move || drive_through_queue(pool, shard, w, args.spin))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("driver panicked".into())))
                .collect()
        }),
    };
    let elapsed = started.elapsed();
    let cpu = cpu_time().saturating_sub(cpu_before);
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

/// Clears the unit attention of each fresh session and reads the capacity: (block length,
/// blocks).
fn prepare(pool: &ShardPool, args: &Args) -> Result<(u32, u64), String> {
    let wait = Duration::from_secs(10);
    for shard in 0..pool.len() {
        let mut good = false;
        for attempt in 0..3 {
            let tur = ShardRequest {
                lun: args.lun,
                cdb: vec![0; 6],
                direction: DataDirection::None,
                buffer: Vec::new(),
                user_data: attempt,
            };
            let done = pool.execute(shard, tur, wait).map_err(|e| e.to_string())?;
            let outcome = done.result.map_err(|e| e.to_string())?;
            if outcome.status == 0 {
                good = true;
                break;
            }
        }
        if !good {
            return Err(format!("shard {shard}: the LUN does not become ready"));
        }
    }
    let cdb = Cdb::read_capacity_16(32);
    let request = ShardRequest {
        lun: args.lun,
        cdb: cdb.as_bytes().to_vec(),
        direction: DataDirection::Read { len: 32 },
        buffer: vec![0; 32],
        user_data: 0,
    };
    let done = pool.execute(0, request, wait).map_err(|e| e.to_string())?;
    let outcome = done.result.map_err(|e| e.to_string())?;
    if outcome.status != 0 {
        return Err(format!("READ CAPACITY(16): status {:#x}", outcome.status));
    }
    let b = &outcome.buffer;
    let last_lba = u64::from_be_bytes(b[0..8].try_into().map_err(|_| "short capacity data")?);
    let block_len = u32::from_be_bytes(b[8..12].try_into().map_err(|_| "short capacity data")?);
    if block_len == 0 {
        return Err("the LUN reports a block length of 0".into());
    }
    Ok((block_len, last_lba.saturating_add(1)))
}

/// The I/O one shard is given: offsets, CDBs and buffers out, latencies and counts back.
/// Shared by both ways of driving a shard (`drive_through_queue`, `OnShard`).
struct Workload {
    pattern: Pattern,
    lun: u64,
    bs: u32,
    io_blocks: u32,
    block_len: u32,
    slots: u64,
    rng: Rng,
    next_slot: u64,
    submitted_at: Vec<Instant>,
    free: Vec<(usize, Vec<u8>)>,
    in_flight: usize,
    end: Instant,
    /// A command failed outright (not with a SCSI status): submit no more.
    failed: bool,
    result: DriverResult,
}

impl Workload {
    fn new(
        shard: usize,
        args: &Args,
        io_blocks: u32,
        block_len: u32,
        slots: u64,
        run_for: Duration,
    ) -> Result<Workload, String> {
        Ok(Workload {
            pattern: args.pattern,
            lun: args.lun,
            bs: args.bs,
            io_blocks,
            block_len,
            slots,
            rng: Rng(0x9e37_79b9_7f4a_7c15 ^ (shard as u64 + 1)),
            next_slot: (slots / args.shards as u64) * shard as u64,
            submitted_at: vec![Instant::now(); args.qd],
            free: (0..args.qd)
                .map(|i| (i, vec![0u8; args.bs as usize]))
                .collect(),
            in_flight: 0,
            end: Instant::now() + run_for,
            failed: false,
            result: DriverResult {
                ios: 0,
                bytes: 0,
                errors: 0,
                first_error: None,
                latency: Histogram::<u64>::new(3).map_err(|e| e.to_string())?,
            },
        })
    }

    /// Whether more I/O should be issued at `now`.
    fn issuing(&self, now: Instant) -> bool {
        now < self.end && !self.failed
    }

    /// The next request, if a slot is free.
    fn next_request(&mut self, now: Instant) -> Result<Option<ShardRequest>, String> {
        let Some((slot, buffer)) = self.free.pop() else {
            return Ok(None);
        };
        let io_slot = match self.pattern {
            Pattern::Randread | Pattern::Randwrite => self.rng.next() % self.slots,
            Pattern::Seqread | Pattern::Seqwrite => {
                let s = self.next_slot % self.slots;
                self.next_slot += 1;
                s
            }
        };
        let lba = io_slot * u64::from(self.io_blocks);
        let write = matches!(self.pattern, Pattern::Randwrite | Pattern::Seqwrite);
        let (cdb, direction) = if write {
            (
                Cdb::write(lba, self.io_blocks, self.block_len, false),
                DataDirection::Write { len: self.bs },
            )
        } else {
            (
                Cdb::read(lba, self.io_blocks, self.block_len, false),
                DataDirection::Read { len: self.bs },
            )
        };
        let cdb = cdb.map_err(|e| e.to_string())?;
        // Padded to the 16 bytes of the BHS field here, in a buffer that fits, so the
        // session does not grow (reallocate) it.
        let mut cdb_bytes = Vec::with_capacity(16);
        cdb_bytes.extend_from_slice(cdb.as_bytes());
        cdb_bytes.resize(cdb_bytes.len().max(16), 0);
        self.submitted_at[slot] = now;
        self.in_flight += 1;
        Ok(Some(ShardRequest {
            lun: self.lun,
            cdb: cdb_bytes,
            direction,
            buffer,
            user_data: slot as u64,
        }))
    }

    /// A request the shard did not take.
    fn give_back(&mut self, request: ShardRequest) {
        self.in_flight -= 1;
        self.free.push((request.user_data as usize, request.buffer));
    }

    /// Records one completion, seen at `completed_at`.
    fn complete(&mut self, done: ShardCompletion, completed_at: Instant) {
        self.in_flight -= 1;
        let slot = done.user_data as usize;
        let took = self.submitted_at.get(slot).map_or(Duration::ZERO, |t| {
            completed_at.saturating_duration_since(*t)
        });
        let r = &mut self.result;
        let buffer = match done.result {
            Ok(outcome) if outcome.status == 0 => {
                r.ios += 1;
                r.bytes += u64::from(outcome.transferred);
                let _ = r.latency.record(took.as_micros().max(1) as u64);
                outcome.buffer
            }
            Ok(outcome) => {
                r.errors += 1;
                r.first_error
                    .get_or_insert_with(|| format!("SCSI status {:#x}", outcome.status));
                outcome.buffer
            }
            Err(failure) => {
                r.errors += 1;
                r.first_error
                    .get_or_insert_with(|| failure.error.to_string());
                self.failed = true;
                failure.buffer
            }
        };
        self.free.push((slot, buffer));
    }
}

/// Keeps `args.qd` reads in flight on one shard until `run_for` has passed, from this
/// thread, through the shard's queue.
fn drive_through_queue(
    pool: &ShardPool,
    shard: usize,
    mut w: Workload,
    spin: Duration,
) -> Result<DriverResult, String> {
    loop {
        let now = Instant::now();
        if w.issuing(now) {
            while let Some(request) = w.next_request(now)? {
                if let Err(back) = pool.submit(shard, request) {
                    w.give_back(back);
                    break;
                }
            }
        } else if w.in_flight == 0 {
            break;
        }
        let first = pool
            .wait_completion(shard, spin, Duration::from_secs(30))
            .map_err(|e| e.to_string())?;
        // Take every completion that is ready before submitting again, so the shard gets
        // its new requests in one burst (one doorbell at most). One clock reading serves
        // the burst: each of its completions was posted before it.
        let completed_at = Instant::now();
        let mut next = Some(first);
        while let Some(done) = next
            .take()
            .or_else(|| pool.completions(shard).and_then(|c| c.try_recv().ok()))
        {
            w.complete(done, completed_at);
            if w.in_flight == 0 {
                break;
            }
        }
    }
    Ok(w.result)
}

/// The same workload run on the shard's own thread ([`ShardWork`]): the shard hands it
/// completions inside its loop and takes its requests straight into the session.
struct OnShard {
    workload: Workload,
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
        let mut error = None;
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
                        error = Some(e);
                        w.failed = true;
                        break;
                    }
                }
            }
        }
        if w.in_flight > 0 {
            return WorkStatus::Running;
        }
        if let Some(results) = self.results.take() {
            let result = match error {
                Some(e) => Err(e),
                None => Ok(std::mem::replace(
                    &mut self.workload.result,
                    DriverResult::empty(),
                )),
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
        longest = longest.max(workload.end.saturating_duration_since(Instant::now()));
        let work = OnShard {
            workload,
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
