//! One command's file I/O on the event loop's ring: a READ, a WRITE (then an fdatasync
//! for FUA or with the write cache off) or a SYNCHRONIZE CACHE that the disk emulation has
//! already checked ([`crate::disk::LogicalUnit::plan`]).
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

use crate::backend::DIRECT_IO_BUFFER_ALIGN;
use crate::disk::IoKind;
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Moving bytes; `done` of them so far.
    Transfer,
    /// fdatasync after a FUA write (or with the write cache off), or SYNCHRONIZE CACHE.
    Sync,
}

/// What the event loop does next with an operation.
pub(super) enum Progress {
    /// Submit this request (its user data still to be set).
    Submit(squeue::Entry),
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
    /// Submit with `IOSQE_ASYNC` ([`crate::backend::RingFile::submit_may_block`]).
    force_async: bool,
    io: FileIo,
    fd: RawFd,
    buf: IoBuffer,
    len: usize,
    done: usize,
    stage: Stage,
}

impl FileOp {
    /// Prepares the buffer; `Err` hands the operation back finished when the unit has no
    /// ring file (it cannot happen for a plan the unit made) or memory is refused.
    pub(super) fn new(
        conn_index: usize,
        conn_generation: u32,
        command: CommandId,
        mut io: FileIo,
    ) -> Result<FileOp, (CommandId, CommandResult)> {
        let Some(ring_file) = io.unit.backend().ring_file() else {
            let error = io::Error::new(io::ErrorKind::Unsupported, "backend has no ring file");
            return Err((command, io.complete(Err(error))));
        };
        let (fd, direct) = (ring_file.fd.as_raw_fd(), ring_file.direct);
        let force_async = ring_file.submit_may_block;
        let len = usize::try_from(io.plan.len).unwrap_or(usize::MAX);
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
                                return Err((command, io.complete(Err(error))));
                            }
                        }
                    }
                    IoBuffer::Aligned(aligned)
                }
                None => IoBuffer::Plain(Vec::new()),
            },
        };
        let stage = if io.plan.kind == IoKind::Flush {
            Stage::Sync
        } else {
            Stage::Transfer
        };
        Ok(FileOp {
            conn_index,
            conn_generation,
            command,
            answered: false,
            force_async,
            io,
            fd,
            buf,
            len,
            done: 0,
            stage,
        })
    }

    /// Identifies the operation's logical unit (the address of its shared state).
    pub(super) fn unit_key(&self) -> usize {
        std::sync::Arc::as_ptr(&self.io.unit) as usize
    }

    /// The first request.
    pub(super) fn start(&mut self) -> Progress {
        self.next()
    }

    /// A completion arrived with `result` (bytes moved, or a negated errno).
    pub(super) fn handle_completion(&mut self, result: i32) -> Progress {
        if result < 0 {
            let errno = -result;
            if matches!(errno, libc::EINTR | libc::EAGAIN) {
                return self.next();
            }
            return Progress::Finished(Err(io::Error::from_raw_os_error(errno)));
        }
        match self.stage {
            Stage::Sync => Progress::Finished(Ok(())),
            Stage::Transfer if result == 0 => {
                Progress::Finished(Err(if self.io.plan.kind == IoKind::Read {
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "end of file inside the logical unit's range",
                    )
                } else {
                    io::Error::from(io::ErrorKind::WriteZero)
                }))
            }
            Stage::Transfer => {
                self.done = self.done.saturating_add(result as usize).min(self.len);
                self.next()
            }
        }
    }

    /// What follows from the current state: resume a short transfer, sync, or finish.
    fn next(&mut self) -> Progress {
        match self.next_request() {
            Progress::Submit(entry) if self.force_async => {
                Progress::Submit(entry.flags(squeue::Flags::ASYNC))
            }
            progress => progress,
        }
    }

    fn next_request(&mut self) -> Progress {
        if self.stage == Stage::Transfer && self.done >= self.len {
            if self.io.plan.kind == IoKind::Write && self.io.plan.flush_after {
                self.stage = Stage::Sync;
            } else {
                return Progress::Finished(Ok(()));
            }
        }
        let fd = types::Fd(self.fd);
        if self.stage == Stage::Sync {
            return Progress::Submit(
                opcode::Fsync::new(fd)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build(),
            );
        }
        let (done, len) = (self.done, self.len);
        let Some(rest) = self.buf.as_mut_slice().get_mut(done..len) else {
            return Progress::Finished(Err(io::Error::from(io::ErrorKind::InvalidInput)));
        };
        // Plans are at most MAX_TRANSFER_BYTES, far below u32::MAX.
        let rest_len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
        let offset = self.io.plan.offset.saturating_add(done as u64);
        let entry = match self.io.plan.kind {
            IoKind::Read => opcode::Read::new(fd, rest.as_mut_ptr(), rest_len)
                .offset(offset)
                .build(),
            _ => opcode::Write::new(fd, rest.as_ptr(), rest_len)
                .offset(offset)
                .build(),
        };
        Progress::Submit(entry)
    }

    /// The command's result, once [`Progress::Finished`] came.
    pub(super) fn finish(self, outcome: io::Result<()>) -> CommandResult {
        let data = match (&outcome, self.io.plan.kind) {
            (Ok(()), IoKind::Read) => {
                let mut data = self.buf.into_vec();
                data.truncate(self.len);
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
    use crate::backend::FileBackend;
    use crate::disk::{LogicalUnit, LuConfig, LunMap};
    use crate::server::{luns, Submission};

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
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all_at(&contents, 0)
            .unwrap();
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
            Progress::Submit(entry) => entry,
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
        let resumed = submitted(op.handle_completion(1000));
        assert_eq!(run_on_ring(resumed), 4096 - 1000);
        let Progress::Finished(outcome) = op.handle_completion(4096 - 1000) else {
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
        let _ = submitted(op.handle_completion(-libc::EINTR));
        // End of file before the range ends: an unrecovered read error.
        let Progress::Finished(outcome) = op.handle_completion(0) else {
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
        let Progress::Finished(outcome) = op.handle_completion(-libc::EIO) else {
            panic!("EIO ends the write");
        };
        let result = op.finish(outcome);
        assert_eq!(
            (result.status, result.sense[2], result.sense[12]),
            (2, 3, 0x0c)
        );
        let _ = std::fs::remove_file(&path);
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
        let sync = submitted(op.handle_completion(1024));
        assert_eq!(run_on_ring(sync), 0);
        let Progress::Finished(outcome) = op.handle_completion(0) else {
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
