//! The backend a LUN runs on while it migrates: the source and the destination behind one
//! [`Backend`], with the copy's cursor and phase in [`Shared`].
//!
//! Mirror mode (VMware's later design): a host write to the part the copy has passed goes
//! to both sides, to the rest only the source. DBT mode (the first design): host writes go
//! to the source and mark their regions dirty for the next pass. Either way, once the two
//! sides are in step (phase `Ready`), every write goes to both, and after the switch reads
//! come from the destination while the source is kept in step until the commit, so a
//! rollback loses nothing.
//!
//! A copy of a range and a host write into it never interleave, and two host writes to
//! one region reach both sides in the same order: a host write holds its regions' stripe
//! locks (64 stripes) while it writes, as does the copy for each piece it copies (a piece,
//! [`COPY_PIECE_BYTES`], lies within one region). The cursor is kept in bytes and moves
//! only under the stripe of the region it moves within, so a write that holds its stripes
//! sees a cursor that stays put for its regions: the part of a region the copy has passed
//! goes to both sides, the rest only to the source, which the copy reads later. (Host
//! writes once shared the stripes: two writes to the same blocks in flight together could
//! land in one order on the source and the other on the destination, and after the switch
//! the destination read back other data than the source kept. The copy once held a
//! stripe for the read and write of a whole region: a host write to any region of that
//! stripe waited for a megabyte's copy.)
//!
//! A destination that fails (a write, a read after the switch, a flush) fails the migration
//! (phase `Failed`): from then on the source alone serves, and it has every write. The
//! host's command succeeds when the source's part did.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::backend::{Backend, QueuedIo, QueuedKind, QueuedRequest, RingFile, RingLegs};
use crate::changes::{ChangeMap, ChangeTracker, RegionLog};
use crate::disk::IoKind;

use super::mirror_queue::MirrorQueue;
use super::stripes::{stripe_of_region, stripes_of, HeldStripes, StripeGuard, Stripes};

/// How a migration copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Mirror,
    Dbt,
}

/// Where a migration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Copying (pass 1, or DBT's dirty passes).
    Copying = 0,
    /// The two sides are in step; every write goes to both. Reads from the source.
    Ready = 1,
    /// Switched: reads from the destination, writes to both until the commit.
    Switched = 2,
    /// The destination failed: the source alone serves.
    Failed = 3,
    /// Cancelled or rolled back: the source alone serves.
    Cancelled = 4,
    /// DBT only: a pass did not shrink what is dirty; the copy stopped.
    NotConverging = 5,
}

impl Phase {
    fn from_u8(value: u8) -> Phase {
        match value {
            0 => Phase::Copying,
            1 => Phase::Ready,
            2 => Phase::Switched,
            3 => Phase::Failed,
            4 => Phase::Cancelled,
            _ => Phase::NotConverging,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Phase::Copying => "copying",
            Phase::Ready => "ready",
            Phase::Switched => "switched",
            Phase::Failed => "failed",
            Phase::Cancelled => "cancelled",
            Phase::NotConverging => "cannot-converge",
        }
    }

    /// Whether the destination takes no more writes.
    pub fn source_only(self) -> bool {
        matches!(self, Phase::Failed | Phase::Cancelled)
    }
}

/// Bytes per copy region (the unit of the recorded cursor, of DBT's dirty map and of the
/// locks).
pub const REGION_BYTES: u64 = 1 << 20;
/// Bytes the copy reads and writes under a stripe at once: a host write into a region
/// under copy waits for at most one piece, and the copy gives the CPU back between
/// pieces (`super::copy`). Divides [`REGION_BYTES`].
pub const COPY_PIECE_BYTES: u64 = 64 << 10;
const _: () = assert!(REGION_BYTES.is_multiple_of(COPY_PIECE_BYTES));

/// The state the I/O path, the copy and the control plane share.
pub struct Shared {
    pub mode: Mode,
    pub size_bytes: u64,
    /// Bytes below are copied (mirror mode) or were copied by the first pass (DBT). Moves
    /// only under the stripe of the region it moves within.
    cursor_bytes: AtomicU64,
    phase: AtomicU8,
    pub(super) stripes: Stripes,
    /// DBT: regions written since their last copy.
    pub(crate) dirty: ChangeMap,
    pub copied_bytes: AtomicU64,
    /// Bytes copied per pass (DBT: one entry per pass).
    pub passes: Mutex<Vec<u64>>,
    pub error: Mutex<Option<String>>,
    pub started: Instant,
    /// The longest time host writes were held for the switch (DBT's stun), in µs.
    pub stun_us: AtomicU64,
    /// Told once when the migration fails, from whatever thread saw it (an event loop
    /// too): the control plane then puts the LUN back on its source. Must not block.
    on_fail: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// DBT with a state directory: the regions host writes touched since the migration
    /// started, recorded durably before the first write into each, so a copy resumed
    /// after `kill -9` knows what it must copy again ([`DIRTY_LOG_REGION_BYTES`]).
    dirty_log: std::sync::OnceLock<RegionLog>,
    /// DBT resumed: the regions its log held at the restart, for the first dirty pass.
    resumed_dirty: Mutex<Vec<(u64, u64)>>,
}

/// The regions of a DBT migration's durable dirty log: 64 per GiB, so the first writes
/// cost few syncs, and a resume copies again at most this much around each write.
pub const DIRTY_LOG_REGION_BYTES: u64 = 16 << 20;

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("mode", &self.mode)
            .field("phase", &self.phase())
            .field("cursor", &self.cursor())
            .finish()
    }
}

impl Shared {
    pub fn new(mode: Mode, size_bytes: u64, cursor_regions: u64, phase: Phase) -> Shared {
        Shared {
            mode,
            size_bytes,
            cursor_bytes: AtomicU64::new(
                cursor_regions.saturating_mul(REGION_BYTES).min(size_bytes),
            ),
            phase: AtomicU8::new(phase as u8),
            stripes: Stripes::new(),
            dirty: ChangeMap::new(size_bytes, REGION_BYTES, 1),
            copied_bytes: AtomicU64::new(0),
            passes: Mutex::new(Vec::new()),
            error: Mutex::new(None),
            started: Instant::now(),
            stun_us: AtomicU64::new(0),
            on_fail: std::sync::OnceLock::new(),
            dirty_log: std::sync::OnceLock::new(),
            resumed_dirty: Mutex::new(Vec::new()),
        }
    }

    /// Gives a DBT migration its durable dirty log and what the log held at a restart
    /// (to copy again in the first dirty pass).
    pub fn set_dirty_log(&self, log: RegionLog, held: Vec<(u64, u64)>) {
        *self.resumed_dirty.lock().unwrap_or_else(|p| p.into_inner()) = held;
        let _ = self.dirty_log.set(log);
    }

    /// The regions the dirty log held at the restart (taken once).
    pub(crate) fn take_resumed_dirty(&self) -> Vec<(u64, u64)> {
        std::mem::take(&mut *self.resumed_dirty.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The dirty log to write before a host write in this phase, if any.
    fn dirty_log_for(&self, phase: Phase) -> Option<&RegionLog> {
        (phase == Phase::Copying && self.mode == Mode::Dbt)
            .then(|| self.dirty_log.get())
            .flatten()
    }

    /// Sets what [`Shared::fail`] tells (once; a second hook is refused and dropped).
    pub fn set_on_fail(&self, hook: Box<dyn Fn() + Send + Sync>) {
        let _ = self.on_fail.set(hook);
    }

    pub fn regions(&self) -> u64 {
        self.size_bytes.div_ceil(REGION_BYTES)
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// Moves `from` to `to` only if the phase is still `from`.
    pub fn change_phase(&self, from: Phase, to: Phase) -> bool {
        self.phase
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The regions copied whole (what a record keeps: a resumed copy starts there).
    pub fn cursor(&self) -> u64 {
        let bytes = self.cursor_bytes();
        if bytes >= self.size_bytes {
            self.regions()
        } else {
            bytes / REGION_BYTES
        }
    }

    /// The bytes copied from the start.
    pub fn cursor_bytes(&self) -> u64 {
        self.cursor_bytes.load(Ordering::Acquire)
    }

    pub(crate) fn set_cursor(&self, regions: u64) {
        self.set_cursor_bytes(regions.saturating_mul(REGION_BYTES));
    }

    /// Moves the cursor to `bytes`; the caller holds the stripe of the region it moves
    /// within (the copy of a piece).
    pub(crate) fn set_cursor_bytes(&self, bytes: u64) {
        self.cursor_bytes
            .store(bytes.min(self.size_bytes), Ordering::Release);
    }

    /// The destination (or the copy) failed: the source alone serves from now on.
    pub fn fail(&self, why: String) {
        let before = self.phase();
        if before.source_only() {
            return;
        }
        tracing::warn!(error = %why, phase = before.name(), "migration failed; the source serves alone");
        {
            let mut error = self.error.lock().unwrap_or_else(|p| p.into_inner());
            error.get_or_insert(why);
        }
        // Only the thread that moves the phase to Failed tells.
        if self
            .phase
            .compare_exchange(
                before as u8,
                Phase::Failed as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            if let Some(hook) = self.on_fail.get() {
                hook();
            }
        } else if !self.phase().source_only() {
            // The phase moved meanwhile (ready, switched): fail from there.
            self.set_phase(Phase::Failed);
            if let Some(hook) = self.on_fail.get() {
                hook();
            }
        }
    }

    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Region `region`'s stripe (the copy of a piece of that region).
    pub(crate) fn lock_region(&self, region: u64) -> StripeGuard<'_> {
        StripeGuard::lock(&self.stripes, stripe_of_region(region))
    }

    /// Every stripe: no host write runs (DBT's stun).
    pub(crate) fn lock_all(&self) -> StripeGuard<'_> {
        StripeGuard::lock(&self.stripes, u64::MAX)
    }

    /// The stripes of `offset..offset+len`, taken in ascending order (no deadlock with
    /// the copy, which holds one stripe, nor with the stun, which takes them in order).
    fn hold(&self, offset: u64, len: u64) -> StripeGuard<'_> {
        StripeGuard::lock(&self.stripes, stripes_of(offset, len, REGION_BYTES))
    }

    /// The part of `offset..offset+len` that goes to the destination now, in phase `phase`.
    fn to_destination(&self, phase: Phase, offset: u64, len: u64) -> Option<(u64, u64)> {
        match (phase, self.mode) {
            (Phase::Ready | Phase::Switched, _) => Some((offset, len)),
            (Phase::Copying, Mode::Mirror) => {
                let copied_end = self.cursor_bytes();
                let end = (offset + len).min(copied_end);
                (end > offset).then(|| (offset, end - offset))
            }
            _ => None,
        }
    }
}

/// The migrating LUN's backend.
pub struct Mirror {
    pub(crate) source: Arc<dyn Backend>,
    pub(crate) dest: Arc<dyn Backend>,
    pub(crate) shared: Arc<Shared>,
    /// With a side that may block (a file, another array): the workers that run the
    /// planned I/O the event loops hand over ([`MirrorQueue`]).
    queue: Option<MirrorQueue>,
}

impl Mirror {
    pub fn new(source: Arc<dyn Backend>, dest: Arc<dyn Backend>, shared: Arc<Shared>) -> Mirror {
        let mut mirror = Mirror::without_queue(source, dest, shared);
        if mirror.sides_may_block() {
            let sides = Mirror::without_queue(
                Arc::clone(&mirror.source),
                Arc::clone(&mirror.dest),
                Arc::clone(&mirror.shared),
            );
            match MirrorQueue::start(Arc::new(sides)) {
                Ok(queue) => mirror.queue = Some(queue),
                // The blocking pool then runs the LUN's I/O, as it runs its other commands.
                Err(error) => tracing::warn!(%error, "no workers for the migrating LUN's I/O"),
            }
        }
        mirror
    }

    fn without_queue(
        source: Arc<dyn Backend>,
        dest: Arc<dyn Backend>,
        shared: Arc<Shared>,
    ) -> Mirror {
        Mirror {
            source,
            dest,
            shared,
            queue: None,
        }
    }

    /// Whether a side's calls may wait (a file's, another array's): no event loop makes
    /// them.
    fn sides_may_block(&self) -> bool {
        self.source.io_may_block() || self.dest.io_may_block() || self.dest.ring_file().is_some()
    }

    /// A change of the medium (write or unmap) on both sides as the phase says.
    fn change(
        &self,
        offset: u64,
        len: u64,
        apply: impl Fn(&dyn Backend, u64, u64) -> io::Result<()>,
    ) -> io::Result<()> {
        if self.shared.phase().source_only() {
            return apply(self.source.as_ref(), offset, len);
        }
        let _held = self.shared.hold(offset, len);
        // Read under the stripes: the copy cannot move the cursor over these regions now.
        let phase = self.shared.phase();
        if let Some(log) = self.shared.dirty_log_for(phase) {
            log.record(offset, len)?;
        }
        apply(self.source.as_ref(), offset, len)?;
        if phase == Phase::Copying && self.shared.mode == Mode::Dbt {
            self.shared.dirty.mark(offset, len);
        }
        if phase.source_only() {
            return Ok(());
        }
        if let Some((at, part)) = self.shared.to_destination(phase, offset, len) {
            if let Err(error) = apply(self.dest.as_ref(), at, part) {
                self.shared
                    .fail(format!("destination write at {at}+{part}: {error}"));
            }
        }
        Ok(())
    }
}

/// How long a mirrored write waits for its destination leg at most: the destination's
/// own budget answers first (an `iscsi:` destination gives up within its reconnect budget);
/// this only bounds a queue that broke its promise to answer.
const DESTINATION_LEG_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

impl Mirror {
    /// A write whose destination takes queued I/O (`iscsi:`): the destination's leg is
    /// queued first and the source's written meanwhile, so the write takes the slower leg's
    /// time, not the sum. Same stripes, phase and failure rules as [`Mirror::change`]; the
    /// host's command waits for both legs (a failed source leg fails it, a failed
    /// destination leg fails the migration).
    fn write_both_legs_at_once(
        &self,
        queue: &dyn QueuedIo,
        offset: u64,
        data: &[u8],
    ) -> io::Result<()> {
        let len = data.len() as u64;
        if self.shared.phase().source_only() {
            return self.source.write_at(offset, data);
        }
        let _held = self.shared.hold(offset, len);
        let phase = self.shared.phase();
        if let Some(log) = self.shared.dirty_log_for(phase) {
            log.record(offset, len)?;
        }
        let dest_leg = match self.shared.to_destination(phase, offset, len) {
            Some((at, part)) if !phase.source_only() => {
                let start = (at - offset) as usize;
                let (sender, outcome) = crossbeam_channel::bounded(1);
                queue.submit(
                    QueuedRequest {
                        kind: QueuedKind::Write { durable: false },
                        offset: at,
                        len: part,
                        data: data[start..start + part as usize].to_vec(),
                    },
                    Box::new(move |result| drop(sender.send(result))),
                );
                Some((at, part, outcome))
            }
            _ => None,
        };
        let source_leg = self.source.write_at(offset, data);
        if source_leg.is_ok() && phase == Phase::Copying && self.shared.mode == Mode::Dbt {
            self.shared.dirty.mark(offset, len);
        }
        if let Some((at, part, outcome)) = dest_leg {
            // Waited for even when the source failed: the stripes stay held until both
            // legs are done, so no later write to these blocks overtakes this one.
            let result = outcome
                .recv_timeout(DESTINATION_LEG_WAIT)
                .unwrap_or_else(|_| Err(io::Error::other("no answer from the destination")));
            if let Err(error) = result {
                self.shared
                    .fail(format!("destination write at {at}+{part}: {error}"));
            }
        }
        source_leg
    }
}

impl Backend for Mirror {
    fn size_bytes(&self) -> u64 {
        self.shared.size_bytes
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if self.shared.phase() == Phase::Switched {
            match self.dest.read_at(offset, buf) {
                Ok(()) => return Ok(()),
                Err(error) => self
                    .shared
                    .fail(format!("destination read at {offset}: {error}")),
            }
        }
        self.source.read_at(offset, buf)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if let Some(queue) = self.dest.queued_io() {
            return self.write_both_legs_at_once(queue, offset, data);
        }
        self.change(offset, data.len() as u64, |backend, at, len| {
            let start = (at - offset) as usize;
            backend.write_at(at, &data[start..start + len as usize])
        })
    }

    fn flush(&self) -> io::Result<()> {
        self.source.flush()?;
        if !self.shared.phase().source_only() {
            if let Err(error) = self.dest.flush() {
                self.shared.fail(format!("destination flush: {error}"));
            }
        }
        Ok(())
    }

    fn unmap(&self, offset: u64, len: u64) -> io::Result<()> {
        if !self.dest.thin() {
            // The destination cannot unmap: it gets zeros written instead, in pieces.
            return self.change(offset, len, |backend, at, part| {
                if backend.thin() {
                    return backend.unmap(at, part);
                }
                let zeros = vec![0u8; part.min(REGION_BYTES) as usize];
                let mut done = 0;
                while done < part {
                    let piece = (part - done).min(zeros.len() as u64);
                    backend.write_at(at + done, &zeros[..piece as usize])?;
                    done += piece;
                }
                Ok(())
            });
        }
        self.change(offset, len, |backend, at, part| backend.unmap(at, part))
    }

    fn kind(&self) -> &'static str {
        "migrating"
    }

    fn thin(&self) -> bool {
        self.source.thin()
    }

    fn mapped_extent(&self, offset: u64, max_len: u64) -> io::Result<(bool, u64)> {
        if self.shared.phase() == Phase::Switched {
            return self.dest.mapped_extent(offset, max_len);
        }
        self.source.mapped_extent(offset, max_len)
    }

    fn ring_file(&self) -> Option<RingFile<'_>> {
        None
    }

    /// A side a file: a host's READ, WRITE and SYNCHRONIZE CACHE run on the event loop's
    /// ring, not on the workers (whose wake-up, and the answer's way back to the loop, cost
    /// a mirrored write more than both its legs on `/dev/shm`). A write takes its stripes
    /// without waiting and holds them until its legs are done; a side that answers on the
    /// event loop (RAM, null, a pool volume) is written here and now, under them.
    /// Everything else [`Mirror::change`] guarantees holds the same way (the phase and the
    /// cursor read under the stripes, a failed destination failing the migration only).
    /// After the switch a read comes from the destination's file, and from the source's
    /// should it fail (the migration then fails). What would wait goes to the workers: a
    /// stripe someone holds, a read or flush of a side with no file, DBT's copying phase
    /// (its dirty map and durable log), a source written here that failed (a worker
    /// writes it again and answers with the error's sense).
    fn ring_legs(&self, kind: IoKind, offset: u64, data: &[u8]) -> Option<RingLegs<'_>> {
        let len = data.len() as u64;
        let source = self.source.ring_file();
        let phase = self.shared.phase();
        let source_alone = RingLegs {
            source,
            destination: None,
            destination_len: 0,
            fallback: None,
            hold: None,
        };
        match kind {
            IoKind::Read if phase == Phase::Switched => Some(RingLegs {
                source: Some(self.dest.ring_file()?),
                fallback: Some(source?),
                hold: Some(HeldStripes::none(&self.shared)),
                ..source_alone
            }),
            IoKind::Read => source.is_some().then_some(source_alone),
            IoKind::Flush if phase.source_only() => source.is_some().then_some(source_alone),
            IoKind::Flush => Some(RingLegs {
                source: Some(source?),
                destination: Some(self.dest.ring_file()?),
                ..source_alone
            }),
            IoKind::Write => {
                let on_the_loop =
                    |side: &Arc<dyn Backend>| side.ring_file().is_none() && !side.io_may_block();
                let destination = self.dest.ring_file();
                if source.is_none() && !on_the_loop(&self.source)
                    || destination.is_none() && !on_the_loop(&self.dest)
                {
                    return None;
                }
                let hold = if phase.source_only() {
                    None
                } else {
                    let mask = stripes_of(offset, len, REGION_BYTES);
                    Some(HeldStripes::try_take(&self.shared, mask)?)
                };
                // Read under the stripes: the copy cannot move the cursor over these
                // regions, nor the phase leave DBT's copying, until the legs are done.
                let phase = self.shared.phase();
                if phase == Phase::Copying && self.shared.mode == Mode::Dbt {
                    return None;
                }
                let part = match self.shared.to_destination(phase, offset, len) {
                    Some((_, part)) if hold.is_some() && !phase.source_only() => part,
                    _ => 0,
                };
                match source {
                    Some(_) => self.source.before_ring_write(offset, len),
                    None => self.source.write_at(offset, data).ok()?,
                }
                if destination.is_none() && part > 0 {
                    if let Err(error) = self.dest.write_at(offset, &data[..part as usize]) {
                        self.shared
                            .fail(format!("destination write at {offset}+{part}: {error}"));
                    }
                }
                Some(RingLegs {
                    destination: destination.filter(|_| part > 0),
                    destination_len: part,
                    hold,
                    ..source_alone
                })
            }
        }
    }

    fn flush_may_block(&self) -> bool {
        self.source.flush_may_block()
            || self.dest.flush_may_block()
            || self.dest.ring_file().is_some()
    }

    /// Over sides that answer on the event loop (RAM, null, pool volumes) the mirror does
    /// too: a host write then holds its region's stripe, and waits only while another
    /// write to a region of that stripe, the copy of a piece of such a region, or DBT's
    /// stun holds it. A file
    /// or another array on either side: READ, WRITE and SYNCHRONIZE CACHE go to the
    /// migration's workers ([`Mirror::queued_io`]), the other medium commands to the
    /// blocking pool.
    fn io_may_block(&self) -> bool {
        self.sides_may_block()
    }

    fn queued_io(&self) -> Option<&dyn QueuedIo> {
        self.queue.as_ref().map(|queue| queue as &dyn QueuedIo)
    }

    fn write_needs_record(&self, offset: u64, len: u64) -> bool {
        self.source.write_needs_record(offset, len)
            || self.dest.write_needs_record(offset, len)
            || self
                .shared
                .dirty_log_for(self.shared.phase())
                .is_some_and(|log| log.needs_record(offset, len))
    }

    fn logical_block_bytes(&self) -> Option<u32> {
        self.source.logical_block_bytes()
    }

    fn change_tracker(&self) -> Option<&Arc<ChangeTracker>> {
        self.source.change_tracker()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::RamBackend;

    fn mirror(mode: Mode, cursor: u64) -> (Mirror, Arc<dyn Backend>, Arc<dyn Backend>) {
        let size = 8 * REGION_BYTES;
        let source: Arc<dyn Backend> = Arc::new(RamBackend::new(size));
        let dest: Arc<dyn Backend> = Arc::new(RamBackend::new(size));
        let shared = Arc::new(Shared::new(mode, size, cursor, Phase::Copying));
        (
            Mirror::new(Arc::clone(&source), Arc::clone(&dest), shared),
            source,
            dest,
        )
    }

    fn read(backend: &dyn Backend, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        backend.read_at(offset, &mut buf).unwrap();
        buf
    }

    #[test]
    fn a_write_goes_to_the_destination_only_where_the_copy_has_passed() {
        let (m, source, dest) = mirror(Mode::Mirror, 2);
        // Straddles the cursor (region 2 starts at 2 MiB).
        let at = 2 * REGION_BYTES - 4096;
        m.write_at(at, &[7u8; 8192]).unwrap();
        assert_eq!(read(source.as_ref(), at, 8192), vec![7u8; 8192]);
        assert_eq!(read(dest.as_ref(), at, 4096), vec![7u8; 4096]);
        assert_eq!(read(dest.as_ref(), at + 4096, 4096), vec![0u8; 4096]);
    }

    #[test]
    fn inside_a_region_under_copy_a_write_goes_to_the_destination_only_below_the_cursor() {
        let (m, source, dest) = mirror(Mode::Mirror, 2);
        // The copy has passed two pieces of region 2.
        let cursor = 2 * REGION_BYTES + 2 * COPY_PIECE_BYTES;
        m.shared.set_cursor_bytes(cursor);
        assert_eq!(m.shared.cursor(), 2, "the record keeps whole regions");
        let at = cursor - 4096;
        m.write_at(at, &[8u8; 8192]).unwrap();
        assert_eq!(read(source.as_ref(), at, 8192), vec![8u8; 8192]);
        assert_eq!(read(dest.as_ref(), at, 4096), vec![8u8; 4096]);
        assert_eq!(read(dest.as_ref(), cursor, 4096), vec![0u8; 4096]);
        // The last region, shorter or not, counts as copied once the cursor reaches the end.
        m.shared.set_cursor_bytes(u64::MAX);
        assert_eq!(m.shared.cursor(), m.shared.regions());
    }

    #[test]
    fn after_the_switch_reads_come_from_the_destination_and_both_sides_take_writes() {
        let (m, source, dest) = mirror(Mode::Mirror, 8);
        m.shared.set_phase(Phase::Switched);
        dest.write_at(0, &[9u8; 512]).unwrap();
        assert_eq!(read(&m, 0, 512), vec![9u8; 512]);
        m.write_at(4096, &[3u8; 512]).unwrap();
        assert_eq!(read(source.as_ref(), 4096, 512), vec![3u8; 512]);
        assert_eq!(read(dest.as_ref(), 4096, 512), vec![3u8; 512]);
    }

    #[test]
    fn dbt_marks_dirty_regions_and_writes_only_the_source() {
        let (m, _source, dest) = mirror(Mode::Dbt, 8);
        let start = m.shared.dirty.current_id();
        m.write_at(3 * REGION_BYTES, &[1u8; 512]).unwrap();
        assert_eq!(read(dest.as_ref(), 3 * REGION_BYTES, 512), vec![0u8; 512]);
        let dirty = m.shared.dirty.changed_since(Some(start)).unwrap();
        assert_eq!(dirty.extents, vec![(3 * REGION_BYTES, REGION_BYTES)]);
    }

    /// A destination that refuses every call.
    struct Broken(u64);
    impl Backend for Broken {
        fn size_bytes(&self) -> u64 {
            self.0
        }
        fn read_at(&self, _: u64, _: &mut [u8]) -> io::Result<()> {
            Err(io::Error::other("gone"))
        }
        fn write_at(&self, _: u64, _: &[u8]) -> io::Result<()> {
            Err(io::Error::other("gone"))
        }
        fn flush(&self) -> io::Result<()> {
            Err(io::Error::other("gone"))
        }
        fn unmap(&self, _: u64, _: u64) -> io::Result<()> {
            Err(io::Error::other("gone"))
        }
        fn kind(&self) -> &'static str {
            "broken"
        }
        fn thin(&self) -> bool {
            false
        }
    }

    /// Both legs of a two-leg write meet here: each side's write waits (at most 5 s) for
    /// the other's to have started, and notes whether it did.
    #[derive(Default)]
    struct Meeting {
        started: std::sync::Mutex<(bool, bool)>,
        met: std::sync::Condvar,
        overlapped: std::sync::atomic::AtomicBool,
    }

    impl Meeting {
        fn arrive(&self, source: bool) {
            let mut started = self.started.lock().unwrap();
            // Only the first leg to arrive can see the other start while it is under way.
            let first = !(started.0 || started.1);
            if source {
                started.0 = true;
            } else {
                started.1 = true;
            }
            self.met.notify_all();
            let deadline = Instant::now() + std::time::Duration::from_secs(5);
            while !(started.0 && started.1) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return;
                }
                started = self.met.wait_timeout(started, left).unwrap().0;
            }
            if first {
                self.overlapped.store(true, Ordering::SeqCst);
            }
        }
    }

    /// A RAM side whose writes go through the meeting; with `queued`, it also takes queued
    /// writes (answered from a thread of their own, like `iscsi:`).
    struct MeetingSide {
        ram: Arc<RamBackend>,
        meeting: Arc<Meeting>,
        source: bool,
        queued: bool,
    }

    impl Backend for MeetingSide {
        fn size_bytes(&self) -> u64 {
            self.ram.size_bytes()
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            self.ram.read_at(offset, buf)
        }
        fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
            self.meeting.arrive(self.source);
            self.ram.write_at(offset, data)
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
        fn unmap(&self, offset: u64, len: u64) -> io::Result<()> {
            self.ram.unmap(offset, len)
        }
        fn kind(&self) -> &'static str {
            "meeting"
        }
        fn thin(&self) -> bool {
            false
        }
        fn queued_io(&self) -> Option<&dyn QueuedIo> {
            self.queued.then_some(self as &dyn QueuedIo)
        }
    }

    impl QueuedIo for MeetingSide {
        fn submit(&self, request: QueuedRequest, done: crate::backend::QueuedDone) {
            let (ram, meeting) = (Arc::clone(&self.ram), Arc::clone(&self.meeting));
            std::thread::spawn(move || {
                meeting.arrive(false);
                done(
                    ram.write_at(request.offset, &request.data)
                        .map(|()| Vec::new()),
                );
            });
        }
    }

    #[test]
    fn a_destination_with_a_queue_takes_its_leg_while_the_source_writes() {
        let size = 4 * REGION_BYTES;
        let meeting = Arc::new(Meeting::default());
        let side = |source: bool| {
            let ram = Arc::new(RamBackend::new(size));
            let backend = MeetingSide {
                ram: Arc::clone(&ram),
                meeting: Arc::clone(&meeting),
                source,
                queued: !source,
            };
            (ram, Arc::new(backend) as Arc<dyn Backend>)
        };
        let ((source_ram, source), (dest_ram, dest)) = (side(true), side(false));
        let shared = Arc::new(Shared::new(Mode::Mirror, size, 4, Phase::Copying));
        let m = Mirror::new(source, dest, Arc::clone(&shared));
        m.write_at(REGION_BYTES, &[0x5au8; 4096]).unwrap();
        assert!(
            meeting.overlapped.load(Ordering::SeqCst),
            "the destination's leg started while the source's was under way"
        );
        for ram in [&source_ram, &dest_ram] {
            assert_eq!(read(ram.as_ref(), REGION_BYTES, 4096), vec![0x5au8; 4096]);
        }
        assert_eq!(shared.phase(), Phase::Copying);
    }

    #[test]
    fn a_failing_destination_fails_the_migration_not_the_host_write() {
        let size = 4 * REGION_BYTES;
        let source: Arc<dyn Backend> = Arc::new(RamBackend::new(size));
        let shared = Arc::new(Shared::new(Mode::Mirror, size, 4, Phase::Switched));
        let m = Mirror::new(
            Arc::clone(&source),
            Arc::new(Broken(size)),
            Arc::clone(&shared),
        );
        m.write_at(0, &[5u8; 512]).unwrap();
        assert_eq!(shared.phase(), Phase::Failed);
        assert!(shared.error().unwrap().contains("gone"));
        assert_eq!(
            read(&m, 0, 512),
            vec![5u8; 512],
            "the source serves the read"
        );
    }
}
