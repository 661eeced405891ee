//! The planned I/O (READ, WRITE, SYNCHRONIZE CACHE) of a migrating LUN with a side that
//! may block (a file, a LUN on another array), run by the migration's own workers instead
//! of the gateway's blocking pool.
//!
//! The blocking pool runs at most two commands of one unit at once
//! (`server::blocking::PER_UNIT_RUNNING`) and runs the whole SCSI emulation there; a
//! migrating LUN with a file side then served a host's 32 commands two at a time. Here the
//! event loop plans the command (every check, the write gate's ticket) as for a file's
//! ring, hands the I/O to this queue ([`crate::backend::QueuedIo`], as the `iscsi:`
//! backend's) and answers it when the worker calls back. [`WORKERS`] threads per
//! migration take the queue; each runs one command through the [`Mirror`]'s synchronous
//! calls, so everything the mirror guarantees holds unchanged: a write holds its regions'
//! stripes while it writes both sides (never interleaving with the copy of a piece of a
//! region, two writes to one block reaching both sides in one order), reads come from the side the
//! phase names, a flush syncs both sides, and the source is reached through the unit's
//! wrapper (change tracking kept). A worker may wait on a stripe or a file: it is not an
//! event loop.
//!
//! A LUN whose sides are both files runs these commands on the event loop's ring
//! instead (`Mirror::ring_legs`); they come here only when that would wait (a held
//! stripe, DBT's copying phase) or a side has no file to read or flush.
//!
//! Bounded: [`QUEUED_MAX`] commands wait at most (the hosts' command windows bound what
//! arrives); past that a command is refused with an error, never waited for.

use std::io;
use std::sync::Arc;

use crate::backend::{Backend, QueuedDone, QueuedIo, QueuedKind, QueuedRequest};

use super::Mirror;

/// Threads per migration that run its queued commands: the queue depth a host reaches on
/// a migrating LUN with a file or `iscsi:` side.
pub const WORKERS: usize = 8;
/// Commands waiting for a worker at most.
const QUEUED_MAX: usize = 4096;

type Job = (QueuedRequest, QueuedDone);

/// The queue; dropping it lets the workers end once the commands queued are done.
pub(crate) struct MirrorQueue {
    jobs: Option<crossbeam_channel::Sender<Job>>,
}

impl std::fmt::Debug for MirrorQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorQueue").finish_non_exhaustive()
    }
}

impl MirrorQueue {
    /// Starts the workers over `sides` (a mirror of the same sides without a queue).
    pub(crate) fn start(sides: Arc<Mirror>) -> io::Result<MirrorQueue> {
        let (jobs, queue) = crossbeam_channel::bounded::<Job>(QUEUED_MAX);
        for index in 0..WORKERS {
            let (sides, queue) = (Arc::clone(&sides), queue.clone());
            std::thread::Builder::new()
                .name(format!("mirror-io-{index}"))
                .spawn(move || {
                    // Ends when the queue closes and is empty.
                    for (request, done) in queue.iter() {
                        done(run(&sides, request));
                    }
                })?;
        }
        Ok(MirrorQueue { jobs: Some(jobs) })
    }
}

impl Drop for MirrorQueue {
    fn drop(&mut self) {
        self.jobs.take();
    }
}

impl QueuedIo for MirrorQueue {
    fn submit(&self, request: QueuedRequest, done: QueuedDone) {
        let Some(jobs) = self.jobs.as_ref() else {
            return done(Err(io::Error::other("the migration's workers stopped")));
        };
        match jobs.try_send((request, done)) {
            Ok(()) => {}
            Err(crossbeam_channel::TrySendError::Full((_, done))) => done(Err(io::Error::other(
                format!("{QUEUED_MAX} commands already queued for the migrating LUN"),
            ))),
            Err(crossbeam_channel::TrySendError::Disconnected((_, done))) => {
                done(Err(io::Error::other("the migration's workers stopped")))
            }
        }
    }
}

/// One command through the mirror's synchronous calls: the bytes read, or nothing.
fn run(sides: &Mirror, request: QueuedRequest) -> io::Result<Vec<u8>> {
    let QueuedRequest {
        kind,
        offset,
        len,
        data,
    } = request;
    match kind {
        QueuedKind::Read => {
            let len = usize::try_from(len).map_err(|_| too_long(len))?;
            let mut buffer = vec![0u8; len];
            sides.read_at(offset, &mut buffer)?;
            Ok(buffer)
        }
        QueuedKind::Write { durable } => {
            if data.len() as u64 != len {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a write of {len} bytes came with {} bytes of data",
                        data.len()
                    ),
                ));
            }
            sides.write_at(offset, &data)?;
            if durable {
                // FUA or the write cache off: both sides on stable media before GOOD.
                sides.flush()?;
            }
            Ok(Vec::new())
        }
        QueuedKind::Flush => sides.flush().map(|()| Vec::new()),
    }
}

fn too_long(len: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("a read of {len} bytes is more than this machine can hold"),
    )
}
