//! The copy of a migration, on its own thread: one pass behind the cursor (mirror mode),
//! or passes over the dirty regions until the rest fits the stun budget (DBT mode).
//!
//! A region is copied in pieces of [`COPY_PIECE_BYTES`], each read and written under its
//! region's stripe lock ([`Shared::lock_region`]), so no host write into it runs
//! meanwhile, and the cursor moves past each piece before the stripe is let go. Between
//! pieces the copy gives the CPU back: it sleeps when it is ahead of its rate, and
//! otherwise yields, so a runnable event loop or host I/O thread goes first (as control
//! calls do, `crate::control::pace`). A whole region at once held, for a megabyte's read
//! and write, a host write to any region of that stripe, the CPU, and (measured, issue 19)
//! mostly a host write's leg into the same destination file, which the kernel serializes
//! behind the copy's write: 2.4% of mirrored writes spent 0.5 ms or more on a worker,
//! 0.15% with pieces.
//! Every [`PROGRESS_BYTES`] the destination is flushed and only then the cursor (in whole
//! regions) reported as progress (the caller makes it durable), so a restart after
//! `kill -9` copies again at most the regions since the last report. The copy stops as
//! soon as the phase leaves `Copying` (cancelled, failed).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::mirror::{Mode, Phase, Shared, COPY_PIECE_BYTES, REGION_BYTES};
use crate::backend::Backend;

/// Progress is reported (and made durable by the caller) at least this often.
pub const PROGRESS_BYTES: u64 = 64 << 20;
/// DBT gives up after this many passes even when each one shrinks a little.
pub const PASSES_MAX: usize = 20;

/// How to copy.
#[derive(Debug, Clone, Copy)]
pub struct CopySettings {
    /// At most this many bytes per second (`None`: as fast as the sides go).
    pub rate_bytes_per_second: Option<u64>,
    /// DBT: the remainder is copied with host writes held when it takes at most this long
    /// at the rate the last pass measured.
    pub stun_budget: Duration,
}

impl Default for CopySettings {
    fn default() -> Self {
        CopySettings {
            rate_bytes_per_second: None,
            stun_budget: Duration::from_millis(100),
        }
    }
}

/// Paces the copy to a rate.
struct Pacer {
    rate: Option<u64>,
    started: Instant,
    bytes: u64,
}

impl Pacer {
    fn new(rate: Option<u64>) -> Pacer {
        Pacer {
            rate,
            started: Instant::now(),
            bytes: 0,
        }
    }

    /// `bytes` more were copied: sleeps until they are due at the rate, or, when the copy
    /// is not ahead of it (or has no rate), yields the CPU to whatever else is runnable.
    fn took(&mut self, bytes: u64) {
        self.bytes += bytes;
        if let Some(rate) = self.rate.filter(|r| *r > 0) {
            let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                std::thread::sleep(wait);
                return;
            }
        }
        std::thread::yield_now();
    }
}

/// The copy of one migration.
pub struct Copier {
    pub source: Arc<dyn Backend>,
    pub dest: Arc<dyn Backend>,
    pub shared: Arc<Shared>,
    pub settings: CopySettings,
    /// Called with the cursor (in regions) and the phase when progress is durable on the
    /// destination; the caller records it.
    pub progress: Box<dyn Fn(u64, Phase) + Send>,
}

impl Copier {
    /// Runs the copy to its end (ready, failed, cancelled, cannot converge).
    pub fn run(self) {
        let mut buffer = vec![0u8; REGION_BYTES as usize];
        let mut pacer = Pacer::new(self.settings.rate_bytes_per_second);
        match self.shared.mode {
            Mode::Mirror => {
                if let Some(bytes) = self.first_pass(&mut buffer, &mut pacer) {
                    self.shared
                        .passes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(bytes);
                    if self.flushed() && self.shared.change_phase(Phase::Copying, Phase::Ready) {
                        (self.progress)(self.shared.regions(), Phase::Ready);
                    }
                }
            }
            Mode::Dbt => self.dbt(&mut buffer, &mut pacer),
        }
    }

    fn region_len(&self, region: u64) -> u64 {
        (self.shared.size_bytes - region * REGION_BYTES).min(REGION_BYTES)
    }

    /// Copies one region piece by piece, each under the region's stripe, paced; false
    /// when the migration failed or stopped.
    fn copy_region(
        &self,
        region: u64,
        buffer: &mut [u8],
        move_cursor: bool,
        pacer: &mut Pacer,
    ) -> bool {
        let start = region * REGION_BYTES;
        let end = start + self.region_len(region);
        let mut offset = start;
        while offset < end {
            let len = (end - offset).min(COPY_PIECE_BYTES);
            if !self.copy_piece(region, offset, &mut buffer[..len as usize], move_cursor) {
                return false;
            }
            pacer.took(len);
            offset += len;
        }
        true
    }

    /// Copies `buffer.len()` bytes at `offset` (within `region`) under the region's
    /// stripe, and moves the cursor past them (`move_cursor`) before letting it go.
    fn copy_piece(&self, region: u64, offset: u64, buffer: &mut [u8], move_cursor: bool) -> bool {
        let _locked = self.shared.lock_region(region);
        if self.shared.phase().source_only() {
            return false;
        }
        if let Err(error) = self.source.read_at(offset, buffer) {
            self.shared
                .fail(format!("reading the source at {offset}: {error}"));
            return false;
        }
        if let Err(error) = self.dest.write_at(offset, buffer) {
            self.shared
                .fail(format!("writing the destination at {offset}: {error}"));
            return false;
        }
        let len = buffer.len() as u64;
        if move_cursor {
            self.shared.set_cursor_bytes(offset + len);
        }
        self.shared.copied_bytes.fetch_add(len, Ordering::Relaxed);
        true
    }

    fn flushed(&self) -> bool {
        match self.dest.flush() {
            Ok(()) => true,
            Err(error) => {
                self.shared
                    .fail(format!("flushing the destination: {error}"));
                false
            }
        }
    }

    /// The pass behind the cursor, from where it stands; the bytes it copied, or `None`
    /// when it stopped.
    fn first_pass(&self, buffer: &mut [u8], pacer: &mut Pacer) -> Option<u64> {
        let mut since_progress = 0;
        let mut bytes = 0;
        for region in self.shared.cursor()..self.shared.regions() {
            if self.shared.phase() != Phase::Copying {
                return None;
            }
            if !self.copy_region(region, buffer, true, pacer) {
                return None;
            }
            let len = self.region_len(region);
            bytes += len;
            since_progress += len;
            if since_progress >= PROGRESS_BYTES {
                since_progress = 0;
                if !self.flushed() {
                    return None;
                }
                (self.progress)(region + 1, Phase::Copying);
            }
        }
        Some(bytes)
    }

    /// Regions of byte extents.
    fn regions_of(extents: &[(u64, u64)]) -> Vec<u64> {
        let mut regions: Vec<u64> = extents
            .iter()
            .flat_map(|(o, l)| o / REGION_BYTES..(o + l).div_ceil(REGION_BYTES))
            .collect();
        regions.dedup();
        regions
    }

    /// DBT: the first pass, then dirty passes until the rest fits the stun budget.
    fn dbt(&self, buffer: &mut [u8], pacer: &mut Pacer) {
        let dirty = &self.shared.dirty;
        let mut since = dirty.current_id();
        // Resumed after a crash: what host writes touched before it is copied again.
        for (offset, len) in self.shared.take_resumed_dirty() {
            dirty.mark(offset, len);
        }
        let started = Instant::now();
        let Some(first) = self.first_pass(buffer, pacer) else {
            return;
        };
        let mut rate = first as f64 / started.elapsed().as_secs_f64().max(1e-3);
        self.passes().push(first);
        let Some(mut pending) = self.next_dirty(&mut since) else {
            return;
        };
        let mut previous: Option<u64> = None;
        loop {
            let remaining = pending.len() as u64 * REGION_BYTES;
            if remaining as f64 <= rate * self.settings.stun_budget.as_secs_f64() {
                self.stun(pending, &mut since, buffer);
                return;
            }
            let passes = self.passes().len();
            if previous.is_some_and(|p| remaining >= p) || passes >= PASSES_MAX {
                tracing::warn!(passes, remaining, "DBT migration cannot converge");
                self.shared
                    .change_phase(Phase::Copying, Phase::NotConverging);
                return;
            }
            previous = Some(remaining);
            let pass_started = Instant::now();
            let mut bytes = 0;
            for region in pending {
                if self.shared.phase() != Phase::Copying
                    || !self.copy_region(region, buffer, false, pacer)
                {
                    return;
                }
                bytes += self.region_len(region);
            }
            rate = bytes as f64 / pass_started.elapsed().as_secs_f64().max(1e-3);
            self.passes().push(bytes);
            pending = match self.next_dirty(&mut since) {
                Some(p) => p,
                None => return,
            };
        }
    }

    fn passes(&self) -> std::sync::MutexGuard<'_, Vec<u64>> {
        self.shared.passes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next_dirty(&self, since: &mut crate::changes::ChangeId) -> Option<Vec<u64>> {
        match self.shared.dirty.changed_since(Some(*since)) {
            Ok(changed) => {
                *since = changed.next;
                Some(Self::regions_of(&changed.extents))
            }
            Err(error) => {
                self.shared.fail(format!("dirty map: {error}"));
                None
            }
        }
    }

    /// Holds host writes, copies what is still dirty, and makes the sides in step.
    fn stun(&self, pending: Vec<u64>, since: &mut crate::changes::ChangeId, buffer: &mut [u8]) {
        let started = Instant::now();
        let all = self.shared.lock_all();
        let mut regions = pending;
        if let Some(more) = self.next_dirty(since) {
            regions.extend(more);
        }
        regions.sort_unstable();
        regions.dedup();
        let mut bytes = 0;
        for region in &regions {
            let len = self.region_len(*region) as usize;
            let offset = region * REGION_BYTES;
            let copied = self
                .source
                .read_at(offset, &mut buffer[..len])
                .and_then(|()| self.dest.write_at(offset, &buffer[..len]));
            if let Err(error) = copied {
                drop(all);
                self.shared
                    .fail(format!("copy at {offset} during the stun: {error}"));
                return;
            }
            bytes += len as u64;
        }
        self.shared.copied_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.passes().push(bytes);
        self.shared.set_cursor(self.shared.regions());
        let ready = self.shared.change_phase(Phase::Copying, Phase::Ready);
        drop(all);
        self.shared
            .stun_us
            .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        if ready && self.flushed() {
            (self.progress)(self.shared.regions(), Phase::Ready);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::RamBackend;
    use crate::migration::mirror::Mirror;

    fn setup(mode: Mode) -> (Arc<dyn Backend>, Arc<dyn Backend>, Arc<Shared>) {
        let size = 16 * REGION_BYTES;
        let source: Arc<dyn Backend> = Arc::new(RamBackend::new(size));
        for region in 0..16u64 {
            source
                .write_at(region * REGION_BYTES, &[region as u8 + 1; 4096])
                .unwrap();
        }
        let dest: Arc<dyn Backend> = Arc::new(RamBackend::new(size));
        (
            source,
            dest,
            Arc::new(Shared::new(mode, size, 0, Phase::Copying)),
        )
    }

    fn same(a: &dyn Backend, b: &dyn Backend) -> bool {
        let size = a.size_bytes() as usize;
        let (mut x, mut y) = (vec![0; size], vec![0; size]);
        a.read_at(0, &mut x).unwrap();
        b.read_at(0, &mut y).unwrap();
        x == y
    }

    fn copier(source: &Arc<dyn Backend>, dest: &Arc<dyn Backend>, shared: &Arc<Shared>) -> Copier {
        Copier {
            source: Arc::clone(source),
            dest: Arc::clone(dest),
            shared: Arc::clone(shared),
            settings: CopySettings::default(),
            progress: Box::new(|_, _| {}),
        }
    }

    #[test]
    fn host_writes_during_a_mirror_copy_end_in_step_on_both_sides() {
        for mode in [Mode::Mirror, Mode::Dbt] {
            let (source, dest, shared) = setup(mode);
            let mirror = Mirror::new(Arc::clone(&source), Arc::clone(&dest), Arc::clone(&shared));
            let copy = copier(&source, &dest, &shared);
            let thread = std::thread::spawn(move || copy.run());
            let mut seed = 1u64;
            for i in 0..2000u64 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let offset = (seed >> 20) % (16 * REGION_BYTES / 512 - 8) * 512;
                mirror.write_at(offset, &[(i % 251) as u8; 4096]).unwrap();
                if shared.phase() != Phase::Copying && i > 200 {
                    break;
                }
            }
            thread.join().unwrap();
            assert_eq!(shared.phase(), Phase::Ready, "{mode:?}");
            assert!(
                same(source.as_ref(), dest.as_ref()),
                "{mode:?}: sides differ"
            );
        }
    }

    /// The calls a side saw, each with the ticks it started and ended at (one clock for
    /// both sides).
    #[derive(Default)]
    struct Journal {
        clock: std::sync::atomic::AtomicU64,
        calls: std::sync::Mutex<Vec<Call>>,
    }

    #[derive(Debug, Clone, Copy)]
    struct Call {
        source: bool,
        read: bool,
        offset: u64,
        len: u64,
        started: u64,
        ended: u64,
    }

    /// A RAM side that writes every call into the journal.
    struct Journaled {
        ram: RamBackend,
        journal: Arc<Journal>,
        source: bool,
    }

    impl Journaled {
        fn noted<T>(&self, read: bool, offset: u64, len: u64, call: impl FnOnce() -> T) -> T {
            let started = self.journal.clock.fetch_add(1, Ordering::SeqCst);
            let result = call();
            let ended = self.journal.clock.fetch_add(1, Ordering::SeqCst);
            self.journal.calls.lock().unwrap().push(Call {
                source: self.source,
                read,
                offset,
                len,
                started,
                ended,
            });
            result
        }
    }

    impl Backend for Journaled {
        fn size_bytes(&self) -> u64 {
            self.ram.size_bytes()
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
            let len = buf.len() as u64;
            self.noted(true, offset, len, || self.ram.read_at(offset, buf))
        }
        fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.noted(false, offset, data.len() as u64, || {
                self.ram.write_at(offset, data)
            })
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn unmap(&self, offset: u64, len: u64) -> std::io::Result<()> {
            self.ram.unmap(offset, len)
        }
        fn kind(&self) -> &'static str {
            "journaled"
        }
        fn thin(&self) -> bool {
            false
        }
    }

    /// The copy goes piece by piece, letting the stripe go between pieces, and host writes
    /// into the region under copy run between them: none of them may land between the
    /// copy's read of a range from the source and its write of that range to the
    /// destination (on either side), and the sides end in step.
    #[test]
    fn a_host_write_never_lands_between_the_copys_read_and_write_of_its_range() {
        let size = 4 * REGION_BYTES;
        let journal = Arc::new(Journal::default());
        let side = |source: bool| -> Arc<dyn Backend> {
            Arc::new(Journaled {
                ram: RamBackend::new(size),
                journal: Arc::clone(&journal),
                source,
            })
        };
        let (source, dest) = (side(true), side(false));
        let shared = Arc::new(Shared::new(Mode::Mirror, size, 0, Phase::Copying));
        let mirror = Arc::new(Mirror::new(
            Arc::clone(&source),
            Arc::clone(&dest),
            Arc::clone(&shared),
        ));
        let mut copy = copier(&source, &dest, &shared);
        // Slow enough that the writers meet the copy inside every region.
        copy.settings.rate_bytes_per_second = Some(8 * REGION_BYTES);
        let copy = std::thread::spawn(move || copy.run());
        let writers: Vec<_> = (0..3u64)
            .map(|w| {
                let (mirror, shared) = (Arc::clone(&mirror), Arc::clone(&shared));
                std::thread::spawn(move || {
                    let mut i = w;
                    while shared.phase() == Phase::Copying {
                        // Just ahead of and just behind the cursor, in 4 KiB blocks.
                        let cursor = shared.cursor_bytes();
                        let near = cursor.saturating_sub(COPY_PIECE_BYTES) / 4096 * 4096;
                        let offset = (near + (i * 7919 % 48) * 4096).min(size - 4096);
                        mirror
                            .write_at(offset, &[(i % 251) as u8 + 1; 4096])
                            .unwrap();
                        i += 3;
                        std::thread::sleep(Duration::from_micros(50));
                    }
                })
            })
            .collect();
        copy.join().unwrap();
        for writer in writers {
            writer.join().unwrap();
        }
        assert_eq!(shared.phase(), Phase::Ready);
        let calls = journal.calls.lock().unwrap().clone();
        assert!(same(source.as_ref(), dest.as_ref()), "sides differ");

        let overlaps =
            |a: &Call, offset: u64, len: u64| a.offset < offset + len && offset < a.offset + a.len;
        // The copy's calls: its reads of the source and the destination writes of the
        // same ranges (host writes are 4 KiB, the copy's pieces larger).
        let reads: Vec<&Call> = calls.iter().filter(|c| c.source && c.read).collect();
        assert_eq!(
            reads.len() as u64,
            size / COPY_PIECE_BYTES,
            "one read per piece"
        );
        let host_writes: Vec<&Call> = calls.iter().filter(|c| !c.read && c.len == 4096).collect();
        // Per region, from the start of its first piece's read to the end of its last
        // piece's write.
        let mut spans = vec![(u64::MAX, 0u64); (size / REGION_BYTES) as usize];
        for read in reads {
            let write = calls
                .iter()
                .find(|c| !c.source && !c.read && c.offset == read.offset && c.len == read.len)
                .expect("the piece was written to the destination");
            for host in &host_writes {
                assert!(
                    !(overlaps(host, read.offset, read.len)
                        && host.ended > read.started
                        && host.started < write.ended),
                    "a host write {host:?} ran while the copy of {read:?} was under way"
                );
            }
            let span = &mut spans[(read.offset / REGION_BYTES) as usize];
            *span = (span.0.min(read.started), span.1.max(write.ended));
        }
        let host_writes_inside_a_region_under_copy = host_writes
            .iter()
            .filter(|host| {
                let (from, to) = spans[(host.offset / REGION_BYTES) as usize];
                host.started > from && host.ended < to
            })
            .count();
        assert!(
            host_writes_inside_a_region_under_copy > 0,
            "the writers never met the copy inside a region: the test proves nothing"
        );
    }

    #[test]
    fn dbt_says_it_cannot_converge_when_a_pass_does_not_shrink() {
        let (source, dest, shared) = setup(Mode::Dbt);
        let mirror = Arc::new(Mirror::new(
            Arc::clone(&source),
            Arc::clone(&dest),
            Arc::clone(&shared),
        ));
        let mut copy = copier(&source, &dest, &shared);
        copy.settings.stun_budget = Duration::ZERO;
        copy.settings.rate_bytes_per_second = Some(64 * REGION_BYTES);
        let writer = {
            let (mirror, shared) = (Arc::clone(&mirror), Arc::clone(&shared));
            std::thread::spawn(move || {
                // Every region dirtied again and again until the copy gives up (bounded).
                for i in 0..200_000u64 {
                    if shared.phase() != Phase::Copying {
                        break;
                    }
                    let offset = (i % 16) * REGION_BYTES;
                    mirror.write_at(offset, &[1; 512]).unwrap();
                    if i % 16 == 0 {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            })
        };
        copy.run();
        writer.join().unwrap();
        assert_eq!(shared.phase(), Phase::NotConverging);
        assert!(shared.passes.lock().unwrap().len() >= 2);
    }
}
