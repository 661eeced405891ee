//! `iscsi-ctl arbitrate`: a cluster disk arbiter, run on each node against the same LU.
//!
//! `--mode scsi2` (the scheme of the first cluster services): the owner holds a SCSI-2
//! reservation and renews it (RESERVE again) every `--renew-interval` (3 s). A challenger
//! resets the LU (LOGICAL UNIT RESET clears SCSI-2 reservations), waits `--challenge-wait`
//! (7 s: two renewals of a live owner), then reserves; if it gets the reservation it goes
//! online at `--online-after` (10 s) from the reset. While it waits it polls with TEST UNIT
//! READY: a RESERVATION CONFLICT means the owner renewed, and the challenge starts over at
//! once (so a challenge follows an owner's death by at most one renewal interval).
//!
//! `--mode pr` (fence_scsi's scheme): each node registers a key whose high 32 bits name the
//! node and whose low 32 bits count its heartbeats; the owner holds Write Exclusive,
//! Registrants Only and renews by registering its next key (REGISTER with the old key, so a
//! preempted owner gets RESERVATION CONFLICT). A challenger reads the reservation every
//! interval and, when the holder's key has not changed for `--missed` intervals, PREEMPT AND
//! ABORTs it: the owner's registration goes, its commands in flight end before GOOD, and
//! its later writes conflict.
//!
//! Every state change is printed with a UTC timestamp (`--json`: one object per line). The
//! arbiter exits 3 when it loses the disk, so a service manager can stop what depends on
//! it; 0 when `--duration` ends. With `--stamp-lba`, the owner writes stamps (node, sequence,
//! time) into its blocks every `--stamp-interval`, FUA, as a service's writes would be.

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use datapath::scsi::reservation::{PrInAction, PrOutAction, PrOutParams, PrType, ReadReservation};
use datapath::scsi::{Cdb, ReadCapacity10};
use datapath::session::TaskManagementFunction;
use datapath::url::IscsiUrl;
use serde_json::json;

use crate::commands::CtlError;
use crate::config::ConnectOptions;
use crate::nexus::{stable_isid, NexusSession};
use crate::reservations::{is_conflict, run, NexusArgs};

/// Exit status when the disk is lost.
pub const EXIT_LOST: i32 = 3;
/// The stamp block's first bytes.
pub const STAMP_MAGIC: &[u8; 8] = b"ARBSTAMP";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Scsi2,
    Pr,
}

#[derive(Args, Debug)]
pub struct ArbitrateArgs {
    pub url: String,
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// How often the owner renews (default: 3 s for scsi2, 1 s for pr).
    #[arg(long, value_name = "SECONDS")]
    pub renew_interval: Option<f64>,
    /// scsi2: the wait between the LU reset and the RESERVE.
    #[arg(long, value_name = "SECONDS", default_value_t = 7.0)]
    pub challenge_wait: f64,
    /// scsi2: online this long after the LU reset that won.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub online_after: f64,
    /// scsi2: how often a challenger polls (TEST UNIT READY) while it waits.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.5)]
    pub poll_interval: f64,
    /// pr: renewals the owner may miss before it is preempted.
    #[arg(long, default_value_t = 3)]
    pub missed: u32,
    /// pr: this node's number, the key's high 32 bits (default: from the initiator name).
    #[arg(long)]
    pub node_id: Option<u32>,
    /// Stop after this many seconds (exit 0 unless the disk was lost).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// While online, write stamps into blocks from this LBA (this node's own region).
    #[arg(long)]
    pub stamp_lba: Option<u32>,
    /// Blocks of the stamp region (written in turn).
    #[arg(long, default_value_t = 64)]
    pub stamp_blocks: u32,
    #[arg(long, value_name = "SECONDS", default_value_t = 0.2)]
    pub stamp_interval: f64,
    /// pr: register with APTPL (the target keeps the state across power loss), and print
    /// the PERSISTENT RESERVE OUT latencies at the end.
    #[arg(long)]
    pub aptpl: bool,
    /// pr: challenge with PREEMPT rather than PREEMPT AND ABORT (for targets without it,
    /// such as tgt); the owner's commands in flight are then not aborted.
    #[arg(long)]
    pub plain_preempt: bool,
    #[command(flatten)]
    pub nexus: NexusArgs,
}

/// An arbiter's states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Standby,
    Challenging,
    Online,
    Lost,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Standby => "standby",
            State::Challenging => "challenging",
            State::Online => "online",
            State::Lost => "lost",
        }
    }
}

/// UTC `YYYY-MM-DDTHH:MM:SS.mmmZ` (civil-from-days, H. Hinnant's algorithm).
pub fn utc_timestamp(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

fn unix_ns(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

/// One stamp block: magic, node id, sequence, wall-clock nanoseconds, zero padding.
pub fn stamp_block(block_len: usize, node_id: u32, sequence: u64, time_ns: u64) -> Vec<u8> {
    let mut block = vec![0u8; block_len.max(32)];
    block[0..8].copy_from_slice(STAMP_MAGIC);
    block[8..12].copy_from_slice(&node_id.to_be_bytes());
    block[16..24].copy_from_slice(&sequence.to_be_bytes());
    block[24..32].copy_from_slice(&time_ns.to_be_bytes());
    block
}

/// The key a PR node registers: node id, heartbeat count.
pub fn heartbeat_key(node_id: u32, beat: u32) -> u64 {
    u64::from(node_id) << 32 | u64::from(beat)
}

/// pr: whether the holder missed its renewals: its key has not changed for `missed`
/// intervals.
pub fn holder_is_stale(unchanged_for: Duration, renew: Duration, missed: u32) -> bool {
    unchanged_for >= renew.saturating_mul(missed)
}

struct Arbiter<'a> {
    args: &'a ArbitrateArgs,
    session: NexusSession,
    lun: u64,
    node: String,
    node_id: u32,
    json: bool,
    state: State,
    /// Learned when first needed (READ CAPACITY conflicts with another's SCSI-2
    /// reservation, so a standby node cannot ask at start).
    block_len: Option<u32>,
    renew: Duration,
    stamp_sequence: u64,
    next_stamp: Instant,
    deadline: Option<Instant>,
    /// Round trips of PERSISTENT RESERVE OUT registrations with APTPL, microseconds
    /// (bounded).
    pr_out_us: Vec<u64>,
}

/// PR OUT latencies kept for the closing figures.
const MAX_LATENCY_SAMPLES: usize = 1 << 16;

impl Arbiter<'_> {
    fn announce(&mut self, state: State, detail: serde_json::Value) {
        self.state = state;
        let now = SystemTime::now();
        let line = if self.json {
            let mut value = json!({
                "time": utc_timestamp(now),
                "unix_ms": unix_ns(now) / 1_000_000,
                "node": self.node,
                "state": state.name(),
                "mode": format!("{:?}", self.args.mode).to_lowercase(),
            });
            if let (Some(map), Some(extra)) = (value.as_object_mut(), detail.as_object()) {
                map.extend(extra.clone());
            }
            value.to_string()
        } else {
            format!(
                "{} {} {} {}",
                utc_timestamp(now),
                self.node,
                state.name(),
                detail
            )
        };
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }

    /// The closing figures: PR OUT latency percentiles.
    fn print_latencies(&mut self) {
        if self.pr_out_us.is_empty() {
            return;
        }
        self.pr_out_us.sort_unstable();
        let at = |q: f64| {
            let i =
                ((self.pr_out_us.len() as f64 * q).ceil() as usize).clamp(1, self.pr_out_us.len());
            self.pr_out_us[i - 1]
        };
        let value = json!({
            "time": utc_timestamp(SystemTime::now()),
            "node": self.node,
            "pr_out": {
                "count": self.pr_out_us.len(),
                "aptpl": self.args.aptpl,
                "p50_us": at(0.50),
                "p99_us": at(0.99),
                "max_us": at(1.0),
            },
        });
        println!("{value}");
    }

    fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Sleeps until `until` (or the run's end), writing stamps while online.
    fn idle_until(&mut self, until: Instant) -> Result<(), CtlError> {
        loop {
            let now = Instant::now();
            let end = self.deadline.map_or(until, |d| d.min(until));
            if now >= end {
                return Ok(());
            }
            let stamping = self.state == State::Online && self.args.stamp_lba.is_some();
            if stamping && now >= self.next_stamp {
                self.write_stamp()?;
                self.next_stamp = now + Duration::from_secs_f64(self.args.stamp_interval);
                continue;
            }
            let wake = if stamping {
                end.min(self.next_stamp)
            } else {
                end
            };
            self.session.service_until(wake)?;
        }
    }

    fn write_stamp(&mut self) -> Result<(), CtlError> {
        let Some(base) = self.args.stamp_lba else {
            return Ok(());
        };
        let block_len = match self.block_len {
            Some(len) => len,
            None => {
                let cdb = Cdb::read_capacity_10();
                let data = run(&mut self.session, "READ CAPACITY(10)", self.lun, &cdb, &[])?;
                let len = ReadCapacity10::decode(&data)
                    .map_err(|source| CtlError::Decode {
                        command: "READ CAPACITY(10)",
                        source,
                    })?
                    .block_length_bytes;
                self.block_len = Some(len);
                len
            }
        };
        let lba = base + (self.stamp_sequence % u64::from(self.args.stamp_blocks.max(1))) as u32;
        let data = stamp_block(
            block_len as usize,
            self.node_id,
            self.stamp_sequence,
            unix_ns(SystemTime::now()),
        );
        let cdb = Cdb::write_10(lba, 1, block_len, true).map_err(|source| CtlError::Decode {
            command: "WRITE(10)",
            source,
        })?;
        run(&mut self.session, "WRITE(10)", self.lun, &cdb, &data)?;
        self.stamp_sequence += 1;
        Ok(())
    }

    fn reserve6(&mut self) -> Result<bool, CtlError> {
        match run(
            &mut self.session,
            "RESERVE(6)",
            self.lun,
            &Cdb::reserve_6(),
            &[],
        ) {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// scsi2: defend by renewing; challenge with a LU reset.
    fn run_scsi2(&mut self) -> Result<(), CtlError> {
        if self.reserve6()? {
            self.announce(State::Online, json!({ "how": "reserved at start" }));
        } else {
            self.announce(State::Standby, json!({ "how": "reserved by another node" }));
        }
        while !self.expired() {
            if self.state == State::Online {
                let next = Instant::now() + self.renew;
                self.idle_until(next)?;
                if self.expired() {
                    break;
                }
                if !self.reserve6()? {
                    self.announce(State::Lost, json!({ "how": "renewal conflicted" }));
                    return Ok(());
                }
                continue;
            }
            // Challenge: reset, wait, reserve; start over as soon as the owner renews.
            let started = Instant::now();
            self.session
                .task_management(TaskManagementFunction::LogicalUnitReset, self.lun)?;
            if self.state != State::Challenging {
                self.announce(State::Challenging, json!({}));
            }
            let reserve_at = started + Duration::from_secs_f64(self.args.challenge_wait);
            let poll = Duration::from_secs_f64(self.args.poll_interval.max(0.05));
            let mut owner_alive = false;
            while Instant::now() < reserve_at && !self.expired() {
                self.idle_until((Instant::now() + poll).min(reserve_at))?;
                match run(
                    &mut self.session,
                    "TEST UNIT READY",
                    self.lun,
                    &Cdb::test_unit_ready(),
                    &[],
                ) {
                    Err(e) if is_conflict(&e) => {
                        owner_alive = true;
                        break;
                    }
                    Err(e) => return Err(e),
                    Ok(_) => {}
                }
            }
            if owner_alive || self.expired() {
                continue;
            }
            if self.reserve6()? {
                self.idle_until(started + Duration::from_secs_f64(self.args.online_after))?;
                // Renew before announcing: the reservation is ours only if it still is.
                if self.reserve6()? {
                    self.announce(
                        State::Online,
                        json!({ "how": "challenge won", "since_reset_ms": started.elapsed().as_millis() as u64 }),
                    );
                }
            }
        }
        Ok(())
    }

    fn pr_out(&mut self, action: PrOutAction, key: u64, sa_key: u64) -> Result<bool, CtlError> {
        let aptpl = self.args.aptpl
            && matches!(
                action,
                PrOutAction::Register | PrOutAction::RegisterAndIgnoreExistingKey
            );
        let params = PrOutParams {
            key,
            service_action_key: sa_key,
            aptpl,
            ..Default::default()
        }
        .emit();
        let pr_type = matches!(
            action,
            PrOutAction::Reserve | PrOutAction::Preempt | PrOutAction::PreemptAndAbort
        )
        .then_some(PrType::WriteExclusiveRegistrantsOnly);
        let cdb = Cdb::persistent_reserve_out(action, pr_type, params.len() as u32);
        let started = Instant::now();
        let result = run(
            &mut self.session,
            "PERSISTENT RESERVE OUT",
            self.lun,
            &cdb,
            &params,
        );
        // The figure is the APTPL registrations' (the renewals): the target writes and syncs
        // its state before it answers them.
        if aptpl && self.pr_out_us.len() < MAX_LATENCY_SAMPLES {
            self.pr_out_us.push(started.elapsed().as_micros() as u64);
        }
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn read_reservation(&mut self) -> Result<Option<u64>, CtlError> {
        let cdb = Cdb::persistent_reserve_in(PrInAction::ReadReservation, 64);
        let data = run(
            &mut self.session,
            "PERSISTENT RESERVE IN",
            self.lun,
            &cdb,
            &[],
        )?;
        let decoded = ReadReservation::parse(&data).map_err(|source| CtlError::Decode {
            command: "PERSISTENT RESERVE IN",
            source,
        })?;
        Ok(decoded.reservation.map(|r| r.key))
    }

    /// pr: unregisters this node (which releases the reservation it holds).
    fn leave_pr(&mut self) -> Result<(), CtlError> {
        let cdb = Cdb::persistent_reserve_out(PrOutAction::RegisterAndIgnoreExistingKey, None, 24);
        let params = PrOutParams::default().emit();
        run(
            &mut self.session,
            "PERSISTENT RESERVE OUT",
            self.lun,
            &cdb,
            &params,
        )
        .map(|_| ())
    }

    /// pr: heartbeat by key changes; challenge with PREEMPT AND ABORT.
    fn run_pr(&mut self) -> Result<(), CtlError> {
        let mut beat = 0u32;
        let mut key = heartbeat_key(self.node_id, beat);
        self.pr_out(PrOutAction::RegisterAndIgnoreExistingKey, 0, key)?;
        let mut last_seen: Option<(u64, Instant)> = None;
        match self.read_reservation()? {
            None if self.pr_out(PrOutAction::Reserve, key, 0)? => self.announce(
                State::Online,
                json!({ "how": "reserved at start", "key": format!("0x{key:x}") }),
            ),
            Some(holder) if holder >> 32 == u64::from(self.node_id) => {
                // Our own earlier run (same initiator port) still holds it.
                self.announce(State::Online, json!({ "how": "held from before" }))
            }
            _ => self.announce(State::Standby, json!({})),
        }
        while !self.expired() {
            let next = Instant::now() + self.renew;
            self.idle_until(next)?;
            if self.expired() {
                break;
            }
            if self.state == State::Online {
                let next_key = heartbeat_key(self.node_id, beat.wrapping_add(1));
                if !self.pr_out(PrOutAction::Register, key, next_key)? {
                    self.announce(
                        State::Lost,
                        json!({ "how": "preempted: renewal conflicted" }),
                    );
                    return Ok(());
                }
                beat = beat.wrapping_add(1);
                key = next_key;
                if beat.is_multiple_of(16) {
                    // Running figures, so a node that is killed has reported them too.
                    self.print_latencies();
                }
                continue;
            }
            let now = Instant::now();
            match self.read_reservation()? {
                None => {
                    if self.pr_out(PrOutAction::Reserve, key, 0)? {
                        self.announce(State::Online, json!({ "how": "reservation free" }));
                    }
                    last_seen = None;
                }
                Some(holder) => {
                    let since = match last_seen {
                        Some((seen, at)) if seen == holder => at,
                        _ => {
                            last_seen = Some((holder, now));
                            now
                        }
                    };
                    if holder_is_stale(now - since, self.renew, self.args.missed) {
                        self.announce(
                            State::Challenging,
                            json!({ "victim": format!("0x{holder:x}"), "unchanged_ms": (now - since).as_millis() as u64 }),
                        );
                        let preempt = if self.args.plain_preempt {
                            PrOutAction::Preempt
                        } else {
                            PrOutAction::PreemptAndAbort
                        };
                        if self.pr_out(preempt, key, holder)? {
                            self.announce(State::Online, json!({ "how": "preempted the owner" }));
                        } else {
                            self.announce(
                                State::Standby,
                                json!({ "how": "the owner renewed meanwhile" }),
                            );
                        }
                        last_seen = None;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Runs the arbiter; `Ok(true)` when the disk was lost (exit [`EXIT_LOST`]).
pub fn arbitrate(
    options: &ConnectOptions,
    args: &ArbitrateArgs,
    json: bool,
) -> Result<bool, CtlError> {
    let url = IscsiUrl::parse_lun_url(&args.url)?;
    let lun = url.lun.unwrap_or(0);
    let config = options.client_config(&url)?;
    let isid = args
        .nexus
        .isid
        .unwrap_or_else(|| stable_isid(&config.initiator_name));
    let node_id = args
        .node_id
        .unwrap_or_else(|| u32::from_be_bytes([isid[2], isid[3], isid[4], isid[5]]) | 1);
    let session = NexusSession::connect(&config, isid)?;
    let renew = Duration::from_secs_f64(args.renew_interval.unwrap_or(match args.mode {
        Mode::Scsi2 => 3.0,
        Mode::Pr => 1.0,
    }));
    let mut arbiter = Arbiter {
        args,
        session,
        lun,
        node: config.initiator_name.clone(),
        node_id,
        json,
        state: State::Standby,
        block_len: None,
        renew,
        stamp_sequence: 0,
        next_stamp: Instant::now(),
        deadline: args
            .duration
            .map(|s| Instant::now() + Duration::from_secs_f64(s)),
        pr_out_us: Vec::new(),
    };
    let result = match args.mode {
        Mode::Scsi2 => arbiter.run_scsi2(),
        Mode::Pr => arbiter.run_pr(),
    };
    let lost = match result {
        Ok(()) => arbiter.state == State::Lost,
        // A write or command refused for a reservation while online: the disk is gone.
        Err(e) if is_conflict(&e) => {
            arbiter.announce(State::Lost, json!({ "how": e.to_string() }));
            true
        }
        Err(e) => return Err(e),
    };
    if !lost {
        // A clean stop gives the disk up rather than leave it to a challenge.
        let _ = match args.mode {
            Mode::Scsi2 => run(
                &mut arbiter.session,
                "RELEASE(6)",
                lun,
                &Cdb::release_6(),
                &[],
            ),
            Mode::Pr => arbiter.leave_pr().map(|_| Vec::new()),
        };
    }
    arbiter.print_latencies();
    arbiter.session.logout();
    Ok(lost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_time() {
        let t = UNIX_EPOCH + Duration::from_millis(1_765_005_000_123);
        assert_eq!(utc_timestamp(t), "2025-12-06T07:10:00.123Z");
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&utc_timestamp(leap)[..10], "2000-02-29");
    }

    #[test]
    fn heartbeats_change_the_low_half_of_the_key_only() {
        let key = heartbeat_key(0xabcd, 7);
        assert_eq!(key >> 32, 0xabcd);
        assert_eq!(key as u32, 7);
        let renew = Duration::from_secs(1);
        assert!(!holder_is_stale(Duration::from_millis(2999), renew, 3));
        assert!(holder_is_stale(Duration::from_secs(3), renew, 3));
    }

    #[test]
    fn stamps_carry_node_sequence_and_time() {
        let block = stamp_block(512, 9, 42, 1234);
        assert_eq!(block.len(), 512);
        assert_eq!(&block[..8], STAMP_MAGIC);
        assert_eq!(u32::from_be_bytes(block[8..12].try_into().unwrap()), 9);
        assert_eq!(u64::from_be_bytes(block[16..24].try_into().unwrap()), 42);
        assert_eq!(u64::from_be_bytes(block[24..32].try_into().unwrap()), 1234);
    }
}
