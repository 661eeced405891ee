//! When each I/O is due: fio's `rate`, `rate_iops`, `rate_process` and `thinktime` options
//! (fio(1), "I/O rate"), as a schedule computed ahead of the clock.
//!
//! Each direction with a limit has its own lane, as fio limits reads and writes separately
//! (`rate=1m,500k`). In a lane, I/O number `k` is due at
//! - `linear`: `max(bytes before it / rate, k / rate_iops)` after the lane's origin, in exact
//!   integer nanoseconds, so rounding never accumulates;
//! - `poisson`: the previous one's due time plus an exponential gap with the same mean
//!   (`len / rate`, or `1 / rate_iops`, whichever is longer), so arrivals form a Poisson
//!   process of the target rate.
//!
//! The origin is the time of the first I/O asked for. The schedule never looks at when I/Os
//! actually went out: if the runner stalls, the I/Os due during the stall are handed out at
//! once with their original due times, the rate catches up, and a runner that measures
//! latency from the due time shows the stall in its latencies instead of hiding it (the
//! "coordinated omission" problem; fio(1) mentions it under `io_submit_mode`). An I/O of a
//! direction without a limit is due when it is asked for.
//!
//! `thinktime` follows fio's `handle_thinktime` (backend.c). When the runner asks for the
//! next I/O (by then it has issued the last one and reaped what a full queue made it reap,
//! where fio checks), the pacer checks whether to think: `thinktime_blocks` I/Os counted
//! since the last pause
//! (`thinktime_blocks_type`: I/Os completed, fio's default, or issued), or
//! `thinktime_iotime` of I/O since the last pause ended (then the block count is checked
//! only where `thinktime_blocks` was given). To think, the runner first reaps every I/O in
//! flight (fio's `io_u_quiesce`, whatever the trigger), and the pause runs from the last
//! completion: `thinktime_spin` of it busy ([`Pacer::spin_until`], for the runner), the rest
//! asleep (a spin longer than `thinktime` is cut to it, as fio's init.c does). The counts
//! restart at the check, so completions reaped by the drain count for the next pause, as
//! fio's `last_thinktime_blocks` does. An I/O after a pause is due at the later of its rate
//! slot and the pause's end: the pause is intended, so it is not counted as latency. The
//! rate then catches up (fio's default), or with `rate_ignore_thinktime` each rated lane's
//! schedule moves later by the pause less one I/O's slot, as fio adds the bytes the pause
//! would have carried, so the first I/O goes at the pause's end and the rest at the rate.
//! The last I/O of a job may end in a pause too ([`Pacer::pause_end`]), which the job waits
//! out before it ends, as fio's thread sleeps before it leaves its loop.
//!
//! A backlog bound ([`PacingConfig::backlog`], the job's `rate_backlog`) limits the catching
//! up after a stall of the target: when the job's queue was full for longer than that (a
//! path was lost, the target froze; the runner says so with [`Pacer::note_queue_full`])
//! and the next I/O is that late, it keeps its due time (its latency shows the stall) but
//! the lane's schedule moves later by the lateness, so the I/Os after it are spaced at the
//! rate from then on: a stall shows as a stall, never as a burst above the rate (fio
//! bursts; its issue 1886). The I/O slots the stall swallowed are not issued;
//! [`Pacer::shifted`] says how much schedule was given up. A runner that was late for
//! other reasons (its thread not scheduled, a think-time pause) still catches up, so the
//! rate is met on a busy machine.

use std::time::Duration;

use super::rng::SplitMix64;
use super::WorkloadError;
use crate::io::Direction;
use crate::io::{PerDir, RateProcess};

/// fio's `thinktime_blocks_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ThinkTimeTrigger {
    #[default]
    Complete,
    Issue,
}

/// fio's `thinktime`, `thinktime_spin`, `thinktime_blocks`, `thinktime_blocks_type`,
/// `thinktime_iotime` and `rate_ignore_thinktime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThinkTime {
    pub pause: Duration,
    pub spin: Duration,
    /// At least 1 (fio's default 1); `None` where only `iotime` triggers a pause (fio
    /// skips the block count when `thinktime_iotime` is given without `thinktime_blocks`).
    pub blocks: Option<u32>,
    pub trigger: ThinkTimeTrigger,
    /// `thinktime_iotime`: pause after this long doing I/O.
    pub iotime: Option<Duration>,
    /// `rate_ignore_thinktime`.
    pub ignore_for_rate: bool,
}

impl ThinkTime {
    /// How long the busy part of a pause lasts: fio cuts a `thinktime_spin` longer than
    /// `thinktime` to it (init.c), so the pause is always `thinktime` long.
    pub fn spin_part(&self) -> Duration {
        self.spin.min(self.pause)
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct PacingConfig {
    /// `rate`, bytes per second per direction; `None` for no limit.
    pub rate_bytes_per_s: PerDir<Option<u64>>,
    /// `rate_iops` per direction.
    pub rate_iops: PerDir<Option<u64>>,
    pub process: RateProcess,
    pub thinktime: Option<ThinkTime>,
    /// How late the schedule may fall and still catch up (`None`: always catch up).
    pub backlog: Option<Duration>,
}

const NANOS_PER_SECOND: u128 = 1_000_000_000;

#[derive(Debug, Clone, Default)]
struct Lane {
    bytes_per_s: Option<u64>,
    iops: Option<u64>,
    bytes_before: u128,
    ios_before: u128,
    /// Poisson: when the next I/O is due, in nanoseconds after the origin.
    next_due_ns: f64,
    /// How far the schedule moved later after stalls beyond the backlog.
    shift_ns: u128,
}

impl Lane {
    fn is_limited(&self) -> bool {
        self.bytes_per_s.is_some() || self.iops.is_some()
    }

    /// Nanoseconds after the origin at which the next I/O is due, without taking it (for a
    /// linear lane the due time does not depend on the next I/O's length).
    fn peek(&self, process: RateProcess) -> u128 {
        self.shift_ns
            + match process {
                RateProcess::Linear => {
                    let by_bytes = self.bytes_per_s.map_or(0, |rate| {
                        self.bytes_before * NANOS_PER_SECOND / u128::from(rate)
                    });
                    let by_ios = self.iops.map_or(0, |iops| {
                        self.ios_before * NANOS_PER_SECOND / u128::from(iops)
                    });
                    by_bytes.max(by_ios)
                }
                RateProcess::Poisson => self.next_due_ns as u128,
            }
    }

    /// The gap between two I/Os of `len` bytes at this lane's rate, in nanoseconds.
    fn slot_ns(&self, len: u32) -> u128 {
        let by_bytes = self.bytes_per_s.map_or(0, |rate| {
            u128::from(len) * NANOS_PER_SECOND / u128::from(rate)
        });
        let by_ios = self
            .iops
            .map_or(0, |iops| NANOS_PER_SECOND / u128::from(iops));
        by_bytes.max(by_ios)
    }

    /// Nanoseconds after the origin at which the next I/O of `len` bytes is due; advances.
    fn take(&mut self, len: u32, process: RateProcess, rng: &mut SplitMix64) -> u128 {
        let due_ns = match process {
            RateProcess::Linear => self.peek(process),
            RateProcess::Poisson => {
                let due = self.next_due_ns + self.shift_ns as f64;
                let mean_by_bytes = self
                    .bytes_per_s
                    .map_or(0.0, |rate| f64::from(len) * 1e9 / rate as f64);
                let mean_by_ios = self.iops.map_or(0.0, |iops| 1e9 / iops as f64);
                let mean_ns = mean_by_bytes.max(mean_by_ios);
                // Inverse transform: -mean * ln(U) with U in (0, 1] is exponential.
                self.next_due_ns += -mean_ns * rng.next_f64_open_zero().ln();
                due as u128
            }
        };
        self.bytes_before += u128::from(len);
        self.ios_before += 1;
        due_ns
    }
}

#[derive(Debug, Clone)]
struct ThinkState {
    config: ThinkTime,
    /// I/Os issued and completed since the last check that started a pause.
    issued_in_cycle: u32,
    completed_in_cycle: u32,
    /// When I/O resumed after the last pause (or the job's first I/O), for `iotime`.
    cycle_start: Option<Duration>,
    /// The last I/O handed out was not yet checked for a pause ([`Pacer::check_think`]).
    check_owed: bool,
    waiting_for_drain: bool,
    not_before: Duration,
    /// The end of the busy part of the current pause.
    spin_until: Duration,
    /// The length of the last I/O handed out, for `rate_ignore_thinktime`'s slot.
    last_len: u32,
}

/// The schedule of one job; see the module docs.
#[derive(Debug, Clone)]
pub struct Pacer {
    lanes: PerDir<Lane>,
    process: RateProcess,
    rng: SplitMix64,
    origin: Option<Duration>,
    in_flight: u64,
    think: Option<ThinkState>,
    backlog: Option<Duration>,
    shifted: Duration,
    /// Since when the runner's queue is full, and the longest it was full since the last
    /// I/O was scheduled.
    full_since: Option<Duration>,
    stalled_for: Duration,
}

impl Pacer {
    pub fn new(config: &PacingConfig, seed: u64) -> Result<Self, WorkloadError> {
        let mut lanes = PerDir::<Lane>::default();
        for direction in [Direction::Read, Direction::Write, Direction::Trim] {
            let bytes_per_s = *config.rate_bytes_per_s.get(direction);
            let iops = *config.rate_iops.get(direction);
            if bytes_per_s == Some(0) || iops == Some(0) {
                return Err(WorkloadError::ZeroRate { direction });
            }
            *lanes.get_mut(direction) = Lane {
                bytes_per_s,
                iops,
                ..Lane::default()
            };
        }
        let think = match config.thinktime {
            Some(think) if think.blocks == Some(0) => {
                return Err(WorkloadError::ZeroThinkTimeBlocks)
            }
            Some(think) => Some(ThinkState {
                config: think,
                issued_in_cycle: 0,
                completed_in_cycle: 0,
                cycle_start: None,
                check_owed: false,
                waiting_for_drain: false,
                not_before: Duration::ZERO,
                spin_until: Duration::ZERO,
                last_len: 0,
            }),
            None => None,
        };
        Ok(Pacer {
            lanes,
            process: config.process,
            rng: SplitMix64::new(seed),
            origin: None,
            in_flight: 0,
            think,
            backlog: config.backlog,
            shifted: Duration::ZERO,
            full_since: None,
            stalled_for: Duration::ZERO,
        })
    }

    /// Whether any direction has a rate limit.
    /// Whether a schedule depends on the time it is asked at: a rate limit or a think time.
    pub fn uses_time(&self) -> bool {
        self.is_limited() || self.think.is_some()
    }

    pub fn is_limited(&self) -> bool {
        [Direction::Read, Direction::Write, Direction::Trim]
            .iter()
            .any(|&direction| self.lanes.get(direction).is_limited())
    }

    /// Which of a mixed job's two directions to issue next at `now` (fio's `rate_ddir`):
    /// `drawn` (chosen by `rwmixread`) if it is due, else `other` if that one is due, else
    /// whichever is due first. A direction without a limit is always due.
    pub fn steer(&self, now: Duration, drawn: Direction, other: Direction) -> Direction {
        let Some(origin) = self.origin else {
            return drawn;
        };
        let due = |direction: Direction| {
            let lane = self.lanes.get(direction);
            if lane.is_limited() {
                origin.saturating_add(nanos(lane.peek(self.process)))
            } else {
                now
            }
        };
        let (drawn_due, other_due) = (due(drawn), due(other));
        if drawn_due <= now || (other_due > now && drawn_due <= other_due) {
            drawn
        } else {
            other
        }
    }

    /// True while a think-time cycle waits for the I/Os in flight to complete (call
    /// [`Pacer::check_think`] first).
    pub fn must_wait_for_completions(&self) -> bool {
        self.think
            .as_ref()
            .is_some_and(|think| think.waiting_for_drain)
    }

    /// Commits the next I/O (`direction`, `len`) asked for at `now` and returns when it is
    /// due. Callers check [`Pacer::must_wait_for_completions`] first.
    pub fn schedule(&mut self, now: Duration, direction: Direction, len: u32) -> Duration {
        let origin = *self.origin.get_or_insert(now);
        let process = self.process;
        let lane = self.lanes.get_mut(direction);
        let mut due = if lane.is_limited() {
            let due_ns = lane.take(len, process, &mut self.rng);
            let due = origin.saturating_add(nanos(due_ns));
            let paused_until = self.think.as_ref().map_or(Duration::ZERO, |t| t.not_before);
            let late = now.saturating_sub(due.max(paused_until));
            let stalled = std::mem::take(&mut self.stalled_for);
            if self
                .backlog
                .is_some_and(|backlog| late > backlog && stalled > backlog)
            {
                lane.shift_ns += late.as_nanos();
                self.shifted += late;
            }
            due
        } else {
            now
        };
        if let Some(think) = &mut self.think {
            due = due.max(think.not_before);
            think.last_len = len;
            think.issued_in_cycle += 1;
            think.cycle_start.get_or_insert(due.max(now));
            think.check_owed = true;
        }
        self.in_flight += 1;
        due
    }

    /// fio's `handle_thinktime` check, owed since the last I/O was handed out: the runner
    /// has issued it, and reaped what a full queue made it reap, by the time it asks for
    /// the next one, which is when fio checks. Starts a pause (after a drain, if I/O is in
    /// flight) when the blocks counted or the I/O time since the last pause call for one.
    pub fn check_think(&mut self, now: Duration) {
        let Some(think) = self.think.as_mut().filter(|think| think.check_owed) else {
            return;
        };
        think.check_owed = false;
        let by_time = match (think.config.iotime, think.cycle_start) {
            (Some(iotime), Some(start)) => now.saturating_sub(start) >= iotime,
            _ => false,
        };
        let counted = match think.config.trigger {
            ThinkTimeTrigger::Issue => think.issued_in_cycle,
            ThinkTimeTrigger::Complete => think.completed_in_cycle,
        };
        let by_blocks = think.config.blocks.is_some_and(|blocks| counted >= blocks);
        if by_time || by_blocks {
            think.issued_in_cycle = 0;
            think.completed_in_cycle = 0;
            think.waiting_for_drain = true;
            if self.in_flight == 0 {
                self.start_pause(now);
            }
        }
    }

    /// One I/O completed at `now`. The last one a pause waits for starts it.
    pub fn on_complete(&mut self, now: Duration) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let Some(think) = &mut self.think else {
            return;
        };
        think.completed_in_cycle = think.completed_in_cycle.saturating_add(1);
        if think.waiting_for_drain && self.in_flight == 0 {
            self.start_pause(now);
        }
    }

    /// The drain is over: the pause runs from `now`.
    fn start_pause(&mut self, now: Duration) {
        let Some(think) = &mut self.think else {
            return;
        };
        think.waiting_for_drain = false;
        let length = think.config.pause;
        think.not_before = now.saturating_add(length);
        think.spin_until = now.saturating_add(think.config.spin_part());
        think.cycle_start = Some(think.not_before);
        if think.config.ignore_for_rate {
            // fio adds the bytes the pause would have carried, less one I/O, to what the
            // rate has seen: each rated lane's schedule moves on by that much.
            let len = think.last_len;
            for direction in [Direction::Read, Direction::Write, Direction::Trim] {
                let lane = self.lanes.get_mut(direction);
                if !lane.is_limited() {
                    continue;
                }
                let slot_ns = lane.slot_ns(len);
                let pause_ns = length.as_nanos();
                lane.shift_ns += pause_ns.saturating_sub(slot_ns);
            }
        }
    }

    /// When the current think pause ends, if one was started or is owed (`None` without
    /// think time). A job with no I/O left waits until then before it ends.
    pub fn pause_end(&self) -> Option<Duration> {
        self.think.as_ref().map(|think| think.not_before)
    }

    /// Until when the runner spins rather than sleeps (`thinktime_spin`): the end of the
    /// busy part of the current pause, zero without one.
    pub fn spin_until(&self) -> Duration {
        self.think
            .as_ref()
            .map_or(Duration::ZERO, |think| think.spin_until)
    }

    /// The runner found its queue full (`true`) or with room (`false`) at `now`: a queue
    /// full longer than the backlog is a stall of the target (see the module docs).
    pub fn note_queue_full(&mut self, now: Duration, full: bool) {
        match (full, self.full_since) {
            (true, None) => self.full_since = Some(now),
            (false, Some(since)) => {
                self.stalled_for = self.stalled_for.max(now.saturating_sub(since));
                self.full_since = None;
            }
            _ => {}
        }
    }

    /// How much schedule stalls beyond the backlog gave up (the I/O slots in it were
    /// not issued); zero without a backlog bound.
    pub fn shifted(&self) -> Duration {
        self.shifted
    }
}

fn nanos(ns: u128) -> Duration {
    let secs = u64::try_from(ns / NANOS_PER_SECOND).unwrap_or(u64::MAX);
    // The remainder is below 10^9 and fits.
    Duration::new(secs, (ns % NANOS_PER_SECOND) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iops_config(read_iops: u64) -> PacingConfig {
        PacingConfig {
            rate_iops: PerDir {
                read: Some(read_iops),
                write: None,
                trim: None,
            },
            ..PacingConfig::default()
        }
    }

    #[test]
    fn linear_iops_schedule_is_exact() {
        let mut pacer = Pacer::new(&iops_config(1000), 1).expect("valid");
        let start = Duration::from_secs(5);
        for k in 0..10_000u64 {
            // The runner asks as soon as it can; the due times are what matter.
            let due = pacer.schedule(start, Direction::Read, 4096);
            assert_eq!(due, start + Duration::from_micros(1000 * k));
        }
    }

    #[test]
    fn a_stall_keeps_the_schedule() {
        // 1000 IOPS. The runner keeps up for 100 ms, stalls for 1 s, then goes on.
        let mut pacer = Pacer::new(&iops_config(1000), 1).expect("valid");
        let mut now = Duration::ZERO;
        let mut dues = Vec::new();
        for _ in 0..100 {
            let due = pacer.schedule(now, Direction::Read, 4096);
            now = now.max(due);
            dues.push(due);
        }
        now += Duration::from_secs(1);
        let stall_ended = now;
        // After the stall: every I/O due during it comes out at once, each with its own due
        // time, none skipped or moved.
        let mut overdue = 0;
        for _ in 0..2000 {
            let due = pacer.schedule(now, Direction::Read, 4096);
            if due < stall_ended {
                overdue += 1;
                // Latency measured from `due` includes the stall it waited through.
                assert!(stall_ended - due > Duration::ZERO);
            }
            now = now.max(due);
            dues.push(due);
        }
        for (k, due) in dues.iter().enumerate() {
            assert_eq!(*due, Duration::from_millis(k as u64), "I/O {k}");
        }
        // Due during the stall (it ended at 1099 ms): I/Os 100 to 1098.
        assert_eq!(overdue, 999);
        // By the end, the count of I/Os matches the rate exactly: 2100 I/Os in 2.1 s.
        assert_eq!(dues.len(), 2100);
    }

    #[test]
    fn a_stall_beyond_the_backlog_moves_the_schedule_instead_of_bursting() {
        // 1000 IOPS with a 10 ms backlog. 100 ms in step, a 1 s stall, then in step again.
        let config = PacingConfig {
            backlog: Some(Duration::from_millis(10)),
            ..iops_config(1000)
        };
        let mut pacer = Pacer::new(&config, 1).expect("valid");
        let mut now = Duration::ZERO;
        for _ in 0..100 {
            now = now.max(pacer.schedule(now, Direction::Read, 4096));
        }
        // The queue fills as the target stops answering, and frees when it comes back.
        pacer.note_queue_full(now, true);
        now += Duration::from_secs(1);
        pacer.note_queue_full(now, false);
        let stall_ended = now;
        // The first I/O after the stall keeps its due time: its latency shows the stall.
        let first = pacer.schedule(now, Direction::Read, 4096);
        assert_eq!(first, Duration::from_millis(100));
        // The next ones are spaced at the rate from the stall's end: no burst.
        let mut dues = Vec::new();
        for _ in 0..1000 {
            let due = pacer.schedule(now, Direction::Read, 4096);
            now = now.max(due);
            dues.push(due);
        }
        assert_eq!(dues[0], stall_ended + Duration::from_millis(1));
        for pair in dues.windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::from_millis(1));
        }
        assert_eq!(pacer.shifted(), stall_ended - Duration::from_millis(100));
        // Small lateness (within the backlog) still catches up, moving nothing.
        let before = pacer.shifted();
        let due = pacer.schedule(now + Duration::from_millis(5), Direction::Read, 4096);
        assert_eq!(due, now + Duration::from_millis(1));
        assert_eq!(pacer.shifted(), before);
    }

    #[test]
    fn a_late_runner_with_room_in_its_queue_catches_up() {
        // The job's thread was not scheduled for 300 ms (a busy machine), its queue never
        // full: the rate is made up for, nothing moves.
        let config = PacingConfig {
            backlog: Some(Duration::from_millis(10)),
            ..iops_config(1000)
        };
        let mut pacer = Pacer::new(&config, 1).expect("valid");
        let mut now = Duration::ZERO;
        for _ in 0..100 {
            now = now.max(pacer.schedule(now, Direction::Read, 4096));
        }
        now += Duration::from_millis(300);
        pacer.note_queue_full(now, false);
        let dues: Vec<Duration> = (0..400)
            .map(|_| pacer.schedule(now, Direction::Read, 4096))
            .collect();
        assert_eq!(pacer.shifted(), Duration::ZERO);
        assert_eq!(dues[399], Duration::from_millis(499));
    }

    #[test]
    fn linear_bandwidth_converges_with_mixed_sizes() {
        let config = PacingConfig {
            rate_bytes_per_s: PerDir {
                read: None,
                write: Some(10 * 1024 * 1024),
                trim: None,
            },
            ..PacingConfig::default()
        };
        let mut pacer = Pacer::new(&config, 1).expect("valid");
        let mut rng = SplitMix64::new(3);
        let mut bytes = 0u64;
        let mut last_due = Duration::ZERO;
        for _ in 0..20_000 {
            let len = 4096 * (1 + rng.below(16) as u32);
            last_due = pacer.schedule(Duration::ZERO, Direction::Write, len);
            bytes += u64::from(len);
        }
        // The last I/O is due when the bytes before it have had their time.
        let rate = (bytes as f64) / last_due.as_secs_f64();
        assert!(
            (rate / (10.0 * 1024.0 * 1024.0) - 1.0).abs() < 0.01,
            "{rate}"
        );
    }

    #[test]
    fn poisson_rate_converges_and_gaps_vary() {
        let config = PacingConfig {
            process: RateProcess::Poisson,
            ..iops_config(5000)
        };
        let mut pacer = Pacer::new(&config, 9).expect("valid");
        let count = 200_000u32;
        let mut previous = Duration::ZERO;
        let mut gaps = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let due = pacer.schedule(Duration::ZERO, Direction::Read, 4096);
            assert!(due >= previous);
            gaps.push((due - previous).as_secs_f64());
            previous = due;
        }
        let rate = f64::from(count) / previous.as_secs_f64();
        assert!((rate / 5000.0 - 1.0).abs() < 0.01, "{rate}");
        // Exponential gaps: the standard deviation equals the mean (0.2 ms).
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let variance = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        assert!(
            (variance.sqrt() / mean - 1.0).abs() < 0.03,
            "mean {mean} sd {}",
            variance.sqrt()
        );
    }

    #[test]
    fn directions_have_their_own_lanes() {
        let config = PacingConfig {
            rate_iops: PerDir {
                read: Some(100),
                write: Some(10),
                trim: None,
            },
            ..PacingConfig::default()
        };
        let mut pacer = Pacer::new(&config, 1).expect("valid");
        let now = Duration::ZERO;
        assert_eq!(pacer.schedule(now, Direction::Read, 512), Duration::ZERO);
        assert_eq!(pacer.schedule(now, Direction::Write, 512), Duration::ZERO);
        assert_eq!(
            pacer.schedule(now, Direction::Read, 512),
            Duration::from_millis(10)
        );
        assert_eq!(
            pacer.schedule(now, Direction::Write, 512),
            Duration::from_millis(100)
        );
        // Unlimited trims are due when asked for.
        let later = Duration::from_secs(3);
        assert_eq!(pacer.schedule(later, Direction::Trim, 512), later);
    }

    #[test]
    fn bytes_and_iops_limits_take_the_stricter() {
        let config = PacingConfig {
            rate_bytes_per_s: PerDir::splat(Some(1024 * 1024)),
            rate_iops: PerDir::splat(Some(1000)),
            ..PacingConfig::default()
        };
        let mut pacer = Pacer::new(&config, 1).expect("valid");
        // 64 KiB I/Os: the bandwidth limit (16 per second) is the stricter one.
        pacer.schedule(Duration::ZERO, Direction::Read, 65536);
        assert_eq!(
            pacer.schedule(Duration::ZERO, Direction::Read, 65536),
            Duration::from_micros(62_500)
        );
    }

    fn think(pause_ms: u64, blocks: u32, trigger: ThinkTimeTrigger) -> ThinkTime {
        ThinkTime {
            pause: Duration::from_millis(pause_ms),
            spin: Duration::ZERO,
            blocks: Some(blocks),
            trigger,
            iotime: None,
            ignore_for_rate: false,
        }
    }

    /// A runner at queue depth 1 whose I/Os take `service` each: the due times of `n`.
    fn run_depth_one(pacer: &mut Pacer, n: usize, service: Duration) -> Vec<Duration> {
        let mut now = Duration::ZERO;
        let mut dues = Vec::new();
        for _ in 0..n {
            pacer.check_think(now);
            assert!(!pacer.must_wait_for_completions(), "nothing is in flight");
            let due = pacer.schedule(now, Direction::Read, 4096);
            now = now.max(due) + service;
            pacer.on_complete(now);
            dues.push(due);
        }
        dues
    }

    #[test]
    fn a_think_time_pause_is_not_a_stall() {
        // 1000 IOPS, a 500 ms pause after every 10 I/Os: the rate catches up after each
        // pause, as fio's rate_ignore_thinktime=0, whatever the backlog.
        let config = PacingConfig {
            backlog: Some(Duration::from_millis(10)),
            thinktime: Some(think(500, 10, ThinkTimeTrigger::Issue)),
            ..iops_config(1000)
        };
        let mut pacer = Pacer::new(&config, 1).expect("valid");
        run_depth_one(&mut pacer, 40, Duration::ZERO);
        assert_eq!(pacer.shifted(), Duration::ZERO);
    }

    #[test]
    fn think_time_pauses_after_every_n_blocks_at_depth_one() {
        for trigger in [ThinkTimeTrigger::Issue, ThinkTimeTrigger::Complete] {
            let config = PacingConfig {
                thinktime: Some(think(10, 4, trigger)),
                ..PacingConfig::default()
            };
            let mut pacer = Pacer::new(&config, 1).expect("valid");
            let service = Duration::from_micros(1);
            let dues = run_depth_one(&mut pacer, 12, service);
            // At depth 1 each I/O is reaped before the check: both count the same.
            assert_eq!(dues[3], Duration::from_micros(3), "{trigger:?}");
            assert_eq!(dues[4], dues[3] + service + Duration::from_millis(10));
            assert_eq!(dues[5], dues[4] + service, "{trigger:?}");
            assert_eq!(dues[8], dues[7] + service + Duration::from_millis(10));
            // The last I/O of a cycle leaves a pause owed, which a job ending there waits.
            pacer.check_think(dues[11] + service);
            assert_eq!(
                pacer.pause_end(),
                Some(dues[11] + service + Duration::from_millis(10))
            );
        }
    }

    #[test]
    fn the_complete_trigger_counts_completions_and_the_issue_trigger_issues() {
        for trigger in [ThinkTimeTrigger::Issue, ThinkTimeTrigger::Complete] {
            let config = PacingConfig {
                thinktime: Some(think(5, 2, trigger)),
                ..PacingConfig::default()
            };
            let mut pacer = Pacer::new(&config, 1).expect("valid");
            let ms = Duration::from_millis;
            pacer.schedule(ms(0), Direction::Read, 4096);
            pacer.check_think(ms(0));
            pacer.schedule(ms(0), Direction::Read, 4096);
            pacer.check_think(ms(0));
            // Two issued, none completed.
            assert_eq!(
                pacer.must_wait_for_completions(),
                trigger == ThinkTimeTrigger::Issue
            );
            pacer.on_complete(ms(1));
            pacer.on_complete(ms(2));
            assert!(!pacer.must_wait_for_completions());
            let due = pacer.schedule(ms(2), Direction::Read, 4096);
            match trigger {
                // The drain ended at 2 ms: the pause runs to 7 ms.
                ThinkTimeTrigger::Issue => assert_eq!(due, ms(7)),
                ThinkTimeTrigger::Complete => {
                    assert_eq!(due, ms(2));
                    // Two completions since the last pause: this I/O is drained, then a pause.
                    pacer.check_think(ms(2));
                    assert!(pacer.must_wait_for_completions());
                    pacer.on_complete(ms(3));
                    assert!(!pacer.must_wait_for_completions());
                    assert_eq!(pacer.pause_end(), Some(ms(8)));
                }
            }
        }
    }

    #[test]
    fn spin_is_the_first_part_of_the_pause_and_never_longer() {
        for (spin_ms, busy_ms) in [(2, 2), (5, 5), (9, 5)] {
            let config = PacingConfig {
                thinktime: Some(ThinkTime {
                    spin: Duration::from_millis(spin_ms),
                    ..think(5, 1, ThinkTimeTrigger::Complete)
                }),
                ..PacingConfig::default()
            };
            let mut pacer = Pacer::new(&config, 1).expect("valid");
            let dues = run_depth_one(&mut pacer, 2, Duration::from_millis(1));
            // The pause runs 1..6 ms whatever the spin (fio cuts the spin to thinktime).
            assert_eq!(dues[1], Duration::from_millis(6));
            assert_eq!(pacer.spin_until(), Duration::from_millis(1 + busy_ms));
        }
    }

    #[test]
    fn iotime_pauses_after_that_much_io_and_blocks_only_where_given() {
        let ms = Duration::from_millis;
        let iotime_only = ThinkTime {
            blocks: None,
            iotime: Some(ms(10)),
            ..think(100, 1, ThinkTimeTrigger::Complete)
        };
        for (think_time, first_pause_after) in [
            (iotime_only, 10),
            // Blocks given too: whichever comes first.
            (
                ThinkTime {
                    blocks: Some(4),
                    ..iotime_only
                },
                4,
            ),
        ] {
            let config = PacingConfig {
                thinktime: Some(think_time),
                ..PacingConfig::default()
            };
            let mut pacer = Pacer::new(&config, 1).expect("valid");
            let dues = run_depth_one(&mut pacer, 30, ms(1));
            let first_gap = dues
                .windows(2)
                .position(|pair| pair[1] - pair[0] > ms(50))
                .map(|index| index + 1);
            assert_eq!(first_gap, Some(first_pause_after), "{dues:?}");
        }
    }

    #[test]
    fn rate_catches_up_after_think_time_unless_told_to_ignore_it() {
        for ignore in [false, true] {
            let config = PacingConfig {
                thinktime: Some(ThinkTime {
                    ignore_for_rate: ignore,
                    ..think(50, 10, ThinkTimeTrigger::Issue)
                }),
                ..iops_config(1000)
            };
            let mut pacer = Pacer::new(&config, 1).expect("valid");
            let dues = run_depth_one(&mut pacer, 20, Duration::ZERO);
            let ms = Duration::from_millis;
            // I/O 10 waits out the pause (9 ms + 50 ms).
            assert_eq!(dues[10], ms(59));
            if ignore {
                // The rate goes on from the pause's end: one slot apart.
                assert_eq!(dues[11], ms(60));
                assert_eq!(dues[19], ms(68));
            } else {
                // 11..19 are overdue and go at once.
                assert_eq!(dues[11], ms(59));
                assert_eq!(dues[19], ms(59));
            }
        }
    }

    #[test]
    fn zero_rates_are_refused() {
        let config = PacingConfig {
            rate_bytes_per_s: PerDir {
                read: None,
                write: Some(0),
                trim: None,
            },
            ..PacingConfig::default()
        };
        assert_eq!(
            Pacer::new(&config, 1).err(),
            Some(WorkloadError::ZeroRate {
                direction: Direction::Write
            })
        );
    }
}
