//! One command's file I/O on the event loop's ring: a READ, a WRITE (then an fdatasync
//! for FUA or with the write cache off) or a SYNCHRONIZE CACHE that the disk emulation has
//! already checked ([`crate::disk::LogicalUnit::plan`]).
//!
//! A migrating LUN whose sides are both files ([`crate::backend::Backend::ring_legs`])
//! does the same on two files at once: the source's leg takes the whole command, the
//! destination's the part the migration sends there, each with its own sync when one is
//! due, both in the kernel together (the write's stripes make that safe: no copy and no
//! other write of those regions runs meanwhile). The operation holds what the legs hold
//! until neither has a request in the kernel; a destination leg that fails fails the
//! migration, and the command stands on the source's.
//!
//! The operation owns its buffer from the first submission to the last completion, so
//! neither the connection closing nor anything else can free memory the kernel still
//! writes to: the event loop keeps every [`FileOp`] in its own table until the ring
//! reports the last request done. A short read or write is resumed from where it stopped;
//! end of file on a read (a file truncated underneath) is an error, like `EIO`.
//!
//! For `O_DIRECT` the buffer is a page-aligned allocation (`datapath::sys::AlignedBuf`): the write data
//! is copied into it, and the data read is copied out into the Data-In vector (one copy
//! each way, the price of bypassing the page cache with the session's plain vectors).

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use datapath::sys::AlignedBuf;
use io_uring::{opcode, squeue, types};

use crate::backend::{RingFile, RingLegs, DIRECT_IO_BUFFER_ALIGN};
use crate::disk::IoKind;
use crate::migration::HeldStripes;
use crate::session::{CommandId, CommandResult};

use super::FileIo;

/// The memory an operation reads into or writes from.
enum IoBuffer {
    /// The Data-Out vector itself (buffered writes), or a fresh vector (buffered reads).
    Plain(Vec<u8>),
    /// A page-aligned copy for `O_DIRECT`.
    Aligned(AlignedBuf),
}

impl IoBuffer {
    fn as_mut_slice(&mut self) -> &mut [u8] {
        match self {
            IoBuffer::Plain(vec) => vec,
            IoBuffer::Aligned(buf) => buf.as_mut_slice(),
        }
    }

    fn into_vec(self) -> Vec<u8> {
        match self {
            IoBuffer::Plain(vec) => vec,
            IoBuffer::Aligned(buf) => buf.as_slice().to_vec(),
        }
    }
}

/// Which file a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LegId {
    Source,
    /// A migrating LUN's second file.
    Destination,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Moving bytes; `done` of them so far.
    Transfer,
    /// fdatasync after a FUA write (or with the write cache off), or SYNCHRONIZE CACHE.
    Sync,
    /// Nothing more for this file.
    Done,
}

/// One file an operation moves bytes to or from, and how far it got.
#[derive(Debug, Clone, Copy)]
struct Leg {
    fd: RawFd,
    /// Bytes of the operation this file takes (from its start).
    len: usize,
    /// Submit with `IOSQE_ASYNC` ([`crate::backend::RingFile::submit_may_block`]).
    force_async: bool,
    done: usize,
    stage: Stage,
    /// A request of this leg is in the kernel.
    in_flight: bool,
}

impl Leg {
    /// A side that answered on the event loop when the legs were taken.
    fn written_on_the_loop() -> Leg {
        Leg {
            fd: -1,
            len: 0,
            force_async: false,
            done: 0,
            stage: Stage::Done,
            in_flight: false,
        }
    }

    fn of(file: RingFile<'_>, len: usize, kind: IoKind) -> Leg {
        Leg {
            fd: file.fd.as_raw_fd(),
            len,
            force_async: file.submit_may_block,
            done: 0,
            stage: if kind == IoKind::Flush {
                Stage::Sync
            } else {
                Stage::Transfer
            },
            in_flight: false,
        }
    }
}

/// Why an operation does not go on the ring.
pub(super) enum NotOnRing {
    /// Over: the result to deliver (no ring file, or memory refused).
    Finished(CommandId, CommandResult),
    /// The backend's queue runs it ([`crate::backend::Backend::queued_io`]).
    Queue(FileIo),
}

/// What the event loop does next with an operation.
pub(super) enum Progress {
    /// Submit this request of that leg (its user data still to be set).
    Submit(LegId, squeue::Entry),
    /// Nothing to submit for that leg; the other still has a request in the kernel.
    Waiting,
    /// The operation is over; [`FileOp::finish`] gives the command's result.
    Finished(io::Result<()>),
}

/// One command's file I/O in flight on a ring.
pub(super) struct FileOp {
    /// The connection slot and its generation: the result goes there only if that
    /// connection is still the one in the slot.
    pub(super) conn_index: usize,
    pub(super) conn_generation: u32,
    pub(super) command: CommandId,
    /// The command was answered already (its deadline passed); the outcome is dropped.
    pub(super) answered: bool,
    io: FileIo,
    source: Leg,
    /// A migrating LUN's second file, in the kernel at the same time as the source.
    destination: Option<Leg>,
    /// Where a read that failed on `source` is read again (a migration's source, when
    /// `source` is its destination after the switch).
    fallback: Option<Leg>,
    /// What the legs hold until the operation ends (a mirrored write's stripes).
    hold: Option<HeldStripes>,
    buf: IoBuffer,
    /// The source's outcome: the command's.
    outcome: io::Result<()>,
}

impl FileOp {
    /// Takes the legs from the unit's backend and prepares the buffer; `Err` says the
    /// backend's queue runs the command instead, or hands it back finished (no ring file,
    /// which cannot happen for a plan the unit made, or memory refused).
    pub(super) fn new(
        conn_index: usize,
        conn_generation: u32,
        command: CommandId,
        mut io: FileIo,
    ) -> Result<FileOp, NotOnRing> {
        let len = usize::try_from(io.plan.len).unwrap_or(usize::MAX);
        let kind = io.plan.kind;
        let backend = io.unit.backend();
        let legs = match backend.ring_file() {
            Some(file) => Some(RingLegs {
                source: Some(file),
                destination: None,
                destination_len: 0,
                fallback: None,
                hold: None,
            }),
            None => backend.ring_legs(kind, io.plan.offset, &io.data_out),
        };
        let Some(legs) = legs else {
            if backend.queued_io().is_some() {
                return Err(NotOnRing::Queue(io));
            }
            let error = io::Error::new(io::ErrorKind::Unsupported, "backend has no ring file");
            return Err(NotOnRing::Finished(command, io.complete(Err(error))));
        };
        let direct = legs.source.is_some_and(|file| file.direct)
            || legs.destination.is_some_and(|file| file.direct)
            || legs.fallback.is_some_and(|file| file.direct);
        let source = match legs.source {
            Some(file) => Leg::of(file, len, kind),
            None => Leg::written_on_the_loop(),
        };
        let destination_len = usize::try_from(legs.destination_len).unwrap_or(usize::MAX);
        let destination = legs
            .destination
            .map(|file| Leg::of(file, destination_len.min(len), kind));
        let fallback = legs.fallback.map(|file| Leg::of(file, len, kind));
        let hold = legs.hold;
        let buf = match (io.plan.kind, direct) {
            (IoKind::Flush, _) => IoBuffer::Plain(Vec::new()),
            (IoKind::Write, false) => IoBuffer::Plain(std::mem::take(&mut io.data_out)),
            (IoKind::Read, false) => IoBuffer::Plain(vec![0; len]),
            (kind, true) => match AlignedBuf::zeroed(len, DIRECT_IO_BUFFER_ALIGN) {
                Some(mut aligned) => {
                    if kind == IoKind::Write {
                        let data = std::mem::take(&mut io.data_out);
                        let target = aligned.as_mut_slice();
                        match data.get(..len) {
                            Some(data) => target.copy_from_slice(data),
                            None => {
                                let error = io::Error::from(io::ErrorKind::InvalidInput);
                                return Err(NotOnRing::Finished(command, io.complete(Err(error))));
                            }
                        }
                    }
                    IoBuffer::Aligned(aligned)
                }
                None => IoBuffer::Plain(Vec::new()),
            },
        };
        Ok(FileOp {
            conn_index,
            conn_generation,
            command,
            answered: false,
            io,
            source,
            destination,
            fallback,
            hold,
            buf,
            outcome: Ok(()),
        })
    }

    /// Lets go of what the legs hold (a mirrored write's stripes) without waiting for
    /// them: the loop stops with the operation still in the kernel.
    pub(super) fn release_hold(&mut self) {
        self.hold = None;
    }

    /// Identifies the operation's logical unit (the address of its shared state).
    pub(super) fn unit_key(&self) -> usize {
        std::sync::Arc::as_ptr(&self.io.unit) as usize
    }

    /// The source's first request.
    pub(super) fn start(&mut self) -> Progress {
        self.next(LegId::Source)
    }

    /// The destination's first request, when there is a destination: it goes to the
    /// kernel beside the source's (both under the write's stripes), so a mirrored write
    /// takes the slower leg's time, not the sum.
    pub(super) fn start_destination(&mut self) -> Option<Progress> {
        self.destination
            .is_some()
            .then(|| self.next(LegId::Destination))
    }

    fn leg_mut(&mut self, leg: LegId) -> &mut Leg {
        match (leg, self.destination.as_mut()) {
            (LegId::Destination, Some(destination)) => destination,
            _ => &mut self.source,
        }
    }

    /// A completion of `leg`'s request arrived with `result` (bytes moved, or a negated
    /// errno).
    pub(super) fn handle_completion(&mut self, leg: LegId, result: i32) -> Progress {
        let kind = self.io.plan.kind;
        let state = self.leg_mut(leg);
        state.in_flight = false;
        if result < 0 {
            let errno = -result;
            if matches!(errno, libc::EINTR | libc::EAGAIN) {
                return self.next(leg);
            }
            return self.leg_failed(leg, io::Error::from_raw_os_error(errno));
        }
        match state.stage {
            Stage::Sync | Stage::Done => state.stage = Stage::Done,
            Stage::Transfer if result == 0 => {
                return self.leg_failed(
                    leg,
                    if kind == IoKind::Read {
                        io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "end of file inside the logical unit's range",
                        )
                    } else {
                        io::Error::from(io::ErrorKind::WriteZero)
                    },
                );
            }
            Stage::Transfer => {
                state.done = state.done.saturating_add(result as usize).min(state.len)
            }
        }
        self.next(leg)
    }

    /// `leg` failed: the source's fails the command (the destination stops after its
    /// request in the kernel); the destination's fails the migration, and the command
    /// stands on the source's.
    fn leg_failed(&mut self, leg: LegId, error: io::Error) -> Progress {
        match leg {
            LegId::Source if self.fallback.is_some() => {
                if let Some(hold) = &self.hold {
                    hold.destination_failed(format!(
                        "destination read at {}: {error}",
                        self.io.plan.offset
                    ));
                }
                if let Some(fallback) = self.fallback.take() {
                    self.source = fallback;
                }
                return self.next(leg);
            }
            LegId::Source => {
                self.outcome = Err(error);
                if let Some(destination) = self.destination.as_mut() {
                    if !destination.in_flight {
                        destination.stage = Stage::Done;
                    }
                }
            }
            LegId::Destination => {
                let Leg { stage, len, .. } = *self.leg_mut(leg);
                let what = match stage {
                    Stage::Transfer => format!(
                        "destination write at {}+{len}: {error}",
                        self.io.plan.offset
                    ),
                    _ => format!("destination flush: {error}"),
                };
                if let Some(hold) = &self.hold {
                    hold.destination_failed(what);
                }
            }
        }
        self.leg_mut(leg).stage = Stage::Done;
        self.next(leg)
    }

    /// What follows for `leg`: resume a short transfer, sync, or nothing; the operation
    /// is over once neither leg has anything left.
    fn next(&mut self, leg: LegId) -> Progress {
        let flush_after = self.io.plan.kind == IoKind::Write && self.io.plan.flush_after;
        let source_failed = self.outcome.is_err();
        let state = self.leg_mut(leg);
        if leg == LegId::Destination && source_failed {
            state.stage = Stage::Done;
        }
        if state.stage == Stage::Transfer && state.done >= state.len {
            state.stage = if flush_after {
                Stage::Sync
            } else {
                Stage::Done
            };
        }
        if state.stage == Stage::Done {
            let over = |leg: &Leg| leg.stage == Stage::Done && !leg.in_flight;
            if over(&self.source) && self.destination.as_ref().is_none_or(over) {
                let outcome = std::mem::replace(&mut self.outcome, Ok(()));
                return Progress::Finished(outcome);
            }
            return Progress::Waiting;
        }
        let entry = match self.request(leg) {
            Ok(entry) => entry,
            Err(error) => return self.leg_failed(leg, error),
        };
        let state = self.leg_mut(leg);
        state.in_flight = true;
        let entry = if state.force_async {
            entry.flags(squeue::Flags::ASYNC)
        } else {
            entry
        };
        Progress::Submit(leg, entry)
    }

    /// `leg`'s next request in its current stage.
    fn request(&mut self, leg: LegId) -> io::Result<squeue::Entry> {
        let kind = self.io.plan.kind;
        let offset = self.io.plan.offset;
        let state = *self.leg_mut(leg);
        let fd = types::Fd(state.fd);
        if state.stage == Stage::Sync {
            return Ok(opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build());
        }
        let Some(rest) = self.buf.as_mut_slice().get_mut(state.done..state.len) else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        // Plans are at most MAX_TRANSFER_BYTES, far below u32::MAX.
        let rest_len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
        let offset = offset.saturating_add(state.done as u64);
        Ok(match kind {
            IoKind::Read => opcode::Read::new(fd, rest.as_mut_ptr(), rest_len)
                .offset(offset)
                .build(),
            _ => opcode::Write::new(fd, rest.as_ptr(), rest_len)
                .offset(offset)
                .build(),
        })
    }

    /// The command's result, once [`Progress::Finished`] came.
    pub(super) fn finish(self, outcome: io::Result<()>) -> CommandResult {
        let data = match (&outcome, self.io.plan.kind) {
            (Ok(()), IoKind::Read) => {
                let mut data = self.buf.into_vec();
                data.truncate(self.source.len);
                data
            }
            _ => Vec::new(),
        };
        self.io.complete(outcome.map(|()| data))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;
    use std::sync::Arc;

    use io_uring::IoUring;

    use super::*;
    use crate::backend::{Backend, FileBackend};
    use crate::disk::{LogicalUnit, LuConfig, LunMap};
    use crate::migration::{Mirror, Mode, Phase, Shared, UnitBackend, REGION_BYTES};
    use crate::server::{luns, Submission};

    /// Writes `bytes` at the start of the existing file at `path`.
    fn write_at_start(path: impl AsRef<std::path::Path>, bytes: &[u8]) {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .write_all_at(bytes, 0)
            .unwrap();
    }

    /// A buffered file LUN of 64 blocks (520-byte "blocks" for the direct I/O decision
    /// keep it buffered, so a resumed transfer may start anywhere) and its file.
    fn file_lun(name: &str) -> (Arc<dyn crate::server::LunExecutor>, String) {
        let path =
            std::env::temp_dir().join(format!("gateway-file-io-{name}-{}.img", std::process::id()));
        let path = path.to_str().unwrap().to_string();
        let _ = std::fs::remove_file(&path);
        let backend = FileBackend::open_for_block_size(&path, Some(64 * 512), 520).unwrap();
        assert!(!backend.direct_io());
        let contents: Vec<u8> = (0..64 * 512u32).map(|i| (i % 253) as u8).collect();
        write_at_start(&path, &contents);
        let mut map = LunMap::new();
        map.insert(
            0,
            Arc::new(LogicalUnit::new(Box::new(backend), LuConfig::default())),
        );
        (luns::from_map("iqn.2026-11.test:file-io", 1, map), path)
    }

    fn op_for(luns: &dyn crate::server::LunExecutor, cdb: &[u8], data_out: Vec<u8>) -> FileOp {
        let Submission::Io(io) =
            luns.submit(crate::disk::Nexus::default(), 0, cdb, data_out, 1 << 20)
        else {
            panic!("a planned command");
        };
        let command = crate::session::CommandId::for_tests(1);
        FileOp::new(0, 1, command, io).ok().unwrap()
    }

    /// Runs one request on a real ring and returns its result.
    fn run_on_ring(entry: squeue::Entry) -> i32 {
        let mut ring = IoUring::new(4).unwrap();
        // SAFETY: the test keeps the operation (and its buffer) alive until the wait
        // below returns the completion.
        unsafe { ring.submission().push(&entry.user_data(7)).unwrap() };
        ring.submit_and_wait(1).unwrap();
        let result = ring.completion().next().unwrap().result();
        result
    }

    fn submitted(progress: Progress) -> squeue::Entry {
        match progress {
            Progress::Submit(_, entry) => entry,
            Progress::Waiting => panic!("nothing submitted"),
            Progress::Finished(outcome) => panic!("finished early: {outcome:?}"),
        }
    }

    #[test]
    fn a_short_read_is_resumed_where_it_stopped() {
        let (luns, path) = file_lun("short-read");
        // READ(10) of 8 blocks at LBA 2.
        let mut op = op_for(&*luns, &[0x28, 0, 0, 0, 0, 2, 0, 0, 8, 0], Vec::new());
        let _first = submitted(op.start());
        // The kernel moved only 1000 bytes (left as zeros here): the rest is asked for.
        let resumed = submitted(op.handle_completion(LegId::Source, 1000));
        assert_eq!(run_on_ring(resumed), 4096 - 1000);
        let Progress::Finished(outcome) = op.handle_completion(LegId::Source, 4096 - 1000) else {
            panic!("done after the whole transfer");
        };
        let result = op.finish(outcome);
        assert_eq!(result.status, 0);
        let mut expected = vec![0u8; 4096];
        std::fs::File::open(&path)
            .unwrap()
            .read_exact_at(&mut expected[1000..], 1024 + 1000)
            .unwrap();
        assert!(result.data_in == expected);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn interrupted_requests_are_retried_and_errors_end_the_command_with_sense() {
        let (luns, path) = file_lun("errors");
        let mut op = op_for(&*luns, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], Vec::new());
        let _ = submitted(op.start());
        let _ = submitted(op.handle_completion(LegId::Source, -libc::EINTR));
        // End of file before the range ends: an unrecovered read error.
        let Progress::Finished(outcome) = op.handle_completion(LegId::Source, 0) else {
            panic!("EOF ends the read");
        };
        let result = op.finish(outcome);
        assert_eq!(
            (result.status, result.sense[2], result.sense[12]),
            (2, 3, 0x11)
        );
        // EIO on a write: a write error.
        let mut op = op_for(&*luns, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], vec![1; 512]);
        let _ = submitted(op.start());
        let Progress::Finished(outcome) = op.handle_completion(LegId::Source, -libc::EIO) else {
            panic!("EIO ends the write");
        };
        let result = op.finish(outcome);
        assert_eq!(
            (result.status, result.sense[2], result.sense[12]),
            (2, 3, 0x0c)
        );
        let _ = std::fs::remove_file(&path);
    }

    /// A LUN migrating between two files with the copy's cursor at the end of region 0,
    /// and what reaches into it: the LUNs, the migration's shared state, both files' paths.
    struct FileMirror {
        luns: Arc<dyn crate::server::LunExecutor>,
        unit: Arc<LogicalUnit>,
        shared: Arc<Shared>,
        source: String,
        dest: String,
    }

    const MIRROR_SIZE: u64 = 4 * REGION_BYTES;

    fn file_mirror(name: &str) -> FileMirror {
        let path = |side: &str| {
            let path = std::env::temp_dir().join(format!(
                "gateway-file-io-{name}-{side}-{}.img",
                std::process::id()
            ));
            let path = path.to_str().unwrap().to_string();
            let _ = std::fs::remove_file(&path);
            path
        };
        let (source, dest) = (path("source"), path("dest"));
        let source_unit = Arc::new(LogicalUnit::new(
            Box::new(FileBackend::open(&source, Some(MIRROR_SIZE)).unwrap()),
            LuConfig::default(),
        ));
        let dest_backend: Arc<dyn Backend> =
            Arc::new(FileBackend::open(&dest, Some(MIRROR_SIZE)).unwrap());
        let shared = Arc::new(Shared::new(Mode::Mirror, MIRROR_SIZE, 1, Phase::Copying));
        let mirror = Mirror::new(
            Arc::new(UnitBackend(Arc::clone(&source_unit))),
            dest_backend,
            Arc::clone(&shared),
        );
        let unit = Arc::new(source_unit.over_backend(Box::new(mirror)));
        let mut map = LunMap::new();
        map.insert(0, Arc::clone(&unit));
        FileMirror {
            luns: luns::from_map("iqn.2026-11.test:file-mirror", 1, map),
            unit,
            shared,
            source,
            dest,
        }
    }

    impl FileMirror {
        fn read(&self, dest: bool, offset: u64, len: usize) -> Vec<u8> {
            let mut data = vec![0u8; len];
            let path = if dest { &self.dest } else { &self.source };
            std::fs::File::open(path)
                .unwrap()
                .read_exact_at(&mut data, offset)
                .unwrap();
            data
        }

        /// Whether a write to `offset` could take its stripes now.
        fn stripes_free(&self, offset: u64) -> bool {
            let legs = self
                .unit
                .backend()
                .ring_legs(IoKind::Write, offset, &[0; 512]);
            legs.is_some_and(|legs| legs.hold.is_some())
        }
    }

    impl Drop for FileMirror {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.source);
            let _ = std::fs::remove_file(&self.dest);
        }
    }

    /// WRITE(16) (FUA with `fua`) of `data` at byte `offset`.
    fn write16(offset: u64, blocks: u32, fua: bool) -> [u8; 16] {
        let mut cdb = [0u8; 16];
        cdb[0] = 0x8a;
        cdb[1] = if fua { 0x08 } else { 0 };
        cdb[2..10].copy_from_slice(&(offset / 512).to_be_bytes());
        cdb[10..14].copy_from_slice(&blocks.to_be_bytes());
        cdb
    }

    /// Runs an operation's requests on a ring, in the order they were submitted, until
    /// it finishes; each request's leg and result.
    fn run_to_the_end(op: &mut FileOp) -> (Vec<(LegId, i32)>, io::Result<()>) {
        let mut submitted = std::collections::VecDeque::new();
        let mut results = Vec::new();
        let first = op.start();
        let second = match first {
            Progress::Finished(_) => None,
            _ => op.start_destination(),
        };
        let mut progress: Vec<Progress> = [Some(first), second].into_iter().flatten().collect();
        loop {
            for step in progress.drain(..) {
                match step {
                    Progress::Submit(leg, entry) => submitted.push_back((leg, entry)),
                    Progress::Waiting => {}
                    Progress::Finished(outcome) => return (results, outcome),
                }
            }
            let (leg, entry) = submitted
                .pop_front()
                .expect("a request in the kernel while the operation is not over");
            let result = run_on_ring(entry);
            results.push((leg, result));
            progress.push(op.handle_completion(leg, result));
        }
    }

    #[test]
    fn a_mirrored_write_on_two_files_goes_to_the_source_then_the_copied_part_of_the_destination() {
        let mirror = file_mirror("mirrored");
        // 8 KiB across the cursor (the end of region 0): all of it to the source, the
        // first 4 KiB to the destination.
        let at = REGION_BYTES - 4096;
        let mut op = op_for(&*mirror.luns, &write16(at, 16, false), vec![0x5a; 8192]);
        assert!(
            !mirror.stripes_free(0) && !mirror.stripes_free(REGION_BYTES),
            "the write holds both regions' stripes from the start"
        );
        assert!(mirror.stripes_free(2 * REGION_BYTES), "and no other");
        let (results, outcome) = run_to_the_end(&mut op);
        assert_eq!(
            results,
            vec![(LegId::Source, 8192), (LegId::Destination, 4096)],
            "both legs in the kernel at once"
        );
        assert_eq!(op.finish(outcome).status, 0);
        assert!(mirror.stripes_free(0), "released when the operation ended");
        assert_eq!(mirror.read(false, at, 8192), vec![0x5a; 8192]);
        assert_eq!(mirror.read(true, at, 4096), vec![0x5a; 4096]);
        assert_eq!(mirror.read(true, REGION_BYTES, 4096), vec![0; 4096]);
        assert_eq!(mirror.shared.phase(), Phase::Copying);

        // A write whose stripe someone holds is not run on the ring: the workers wait.
        let held = mirror.shared.lock_region(0);
        let Submission::Io(io) = mirror.luns.submit(
            crate::disk::Nexus::default(),
            0,
            &write16(0, 1, false),
            vec![1; 512],
            1 << 20,
        ) else {
            panic!("a planned command");
        };
        let command = crate::session::CommandId::for_tests(2);
        assert!(matches!(
            FileOp::new(0, 1, command, io),
            Err(NotOnRing::Queue(_))
        ));
        drop(held);
    }

    #[test]
    fn a_durable_mirrored_write_syncs_both_files_and_a_failed_destination_leg_fails_only_the_migration(
    ) {
        let mirror = file_mirror("durable");
        // FUA below the cursor: both transfers, then both syncs.
        let mut op = op_for(&*mirror.luns, &write16(4096, 8, true), vec![0x77; 4096]);
        let (results, outcome) = run_to_the_end(&mut op);
        use LegId::{Destination, Source};
        assert_eq!(
            results,
            vec![
                (Source, 4096),
                (Destination, 4096),
                (Source, 0),
                (Destination, 0)
            ],
            "each leg syncs after its own transfer"
        );
        assert_eq!(op.finish(outcome).status, 0);
        assert_eq!(mirror.read(true, 4096, 4096), vec![0x77; 4096]);

        // The destination's transfer fails: GOOD on the source's, the migration fails, and
        // the source's sync still runs.
        let mut op = op_for(&*mirror.luns, &write16(8192, 8, true), vec![0x78; 4096]);
        let source_leg = submitted(op.start());
        let _destination_leg = submitted(op.start_destination().unwrap());
        assert_eq!(run_on_ring(source_leg), 4096);
        let source_sync = submitted(op.handle_completion(Source, 4096));
        assert!(matches!(
            op.handle_completion(Destination, -libc::EIO),
            Progress::Waiting
        ));
        assert_eq!(run_on_ring(source_sync), 0);
        let Progress::Finished(outcome) = op.handle_completion(Source, 0) else {
            panic!("over after the source's sync");
        };
        assert_eq!(op.finish(outcome).status, 0);
        assert_eq!(mirror.shared.phase(), Phase::Failed);
        assert!(mirror
            .shared
            .error()
            .unwrap()
            .contains("destination write at 8192+4096"));
        assert_eq!(mirror.read(false, 8192, 4096), vec![0x78; 4096]);

        // From then on the source alone: one leg, no stripes.
        let mut op = op_for(&*mirror.luns, &write16(0, 1, false), vec![0x79; 512]);
        assert!(op.hold.is_none() && op.destination.is_none());
        let (results, outcome) = run_to_the_end(&mut op);
        assert_eq!(results, vec![(Source, 512)]);
        assert_eq!(op.finish(outcome).status, 0);
    }

    #[test]
    fn after_the_switch_a_read_comes_from_the_destination_and_from_the_source_should_it_fail() {
        let mirror = file_mirror("switched-read");
        let read10 = [0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0];
        write_at_start(&mirror.source, &[0x51; 4096]);
        write_at_start(&mirror.dest, &[0x52; 4096]);
        assert!(mirror.shared.change_phase(Phase::Copying, Phase::Switched));

        let mut op = op_for(&*mirror.luns, &read10, Vec::new());
        let (results, outcome) = run_to_the_end(&mut op);
        assert_eq!(
            results,
            vec![(LegId::Source, 4096)],
            "one read, no fallback used"
        );
        assert_eq!(
            op.finish(outcome).data_in,
            vec![0x52; 4096],
            "the destination's"
        );

        // The destination fails the read: the same read again from the source, GOOD, and
        // the migration fails (the source serves alone from now on).
        let mut op = op_for(&*mirror.luns, &read10, Vec::new());
        let _destination = submitted(op.start());
        let from_source = submitted(op.handle_completion(LegId::Source, -libc::EIO));
        assert_eq!(run_on_ring(from_source), 4096);
        let Progress::Finished(outcome) = op.handle_completion(LegId::Source, 4096) else {
            panic!("over after the source's read");
        };
        let result = op.finish(outcome);
        assert_eq!((result.status, result.data_in), (0, vec![0x51; 4096]));
        assert_eq!(mirror.shared.phase(), Phase::Failed);
        assert!(mirror
            .shared
            .error()
            .unwrap()
            .contains("destination read at 0"));
    }

    #[test]
    fn a_failed_source_leg_fails_the_command_once_the_destinations_request_is_back() {
        let mirror = file_mirror("source-fails");
        // FUA: after a failed source, the destination does not go on to its sync.
        let mut op = op_for(&*mirror.luns, &write16(0, 1, true), vec![0x10; 512]);
        let _source_leg = submitted(op.start());
        let _destination_leg = submitted(op.start_destination().unwrap());
        assert!(
            matches!(
                op.handle_completion(LegId::Source, -libc::EIO),
                Progress::Waiting
            ),
            "the destination's request still uses the buffer"
        );
        assert!(!mirror.stripes_free(0), "held until then");
        let Progress::Finished(outcome) = op.handle_completion(LegId::Destination, 512) else {
            panic!("over once the destination's request is back");
        };
        let result = op.finish(outcome);
        assert_eq!((result.status, result.sense[2]), (2, 3));
        assert_eq!(
            mirror.shared.phase(),
            Phase::Copying,
            "the migration goes on"
        );
        assert!(mirror.stripes_free(0));
    }

    #[test]
    fn a_fua_write_lands_then_syncs() {
        let (luns, path) = file_lun("fua");
        // WRITE(10), FUA, 2 blocks at LBA 5.
        let mut op = op_for(
            &*luns,
            &[0x2a, 0x08, 0, 0, 0, 5, 0, 0, 2, 0],
            vec![0xee; 1024],
        );
        let write = submitted(op.start());
        assert_eq!(run_on_ring(write), 1024);
        let sync = submitted(op.handle_completion(LegId::Source, 1024));
        assert_eq!(run_on_ring(sync), 0);
        let Progress::Finished(outcome) = op.handle_completion(LegId::Source, 0) else {
            panic!("done after the sync");
        };
        assert_eq!(op.finish(outcome).status, 0);
        let mut on_disk = vec![0u8; 1024];
        std::fs::File::open(&path)
            .unwrap()
            .read_exact_at(&mut on_disk, 5 * 512)
            .unwrap();
        assert!(on_disk.iter().all(|&b| b == 0xee));
        let _ = std::fs::remove_file(&path);
    }
}
