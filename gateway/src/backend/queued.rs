//! Queued I/O: a backend that takes READ, WRITE and SYNCHRONIZE CACHE without a thread
//! waiting for each (a LUN on another array, whose sessions keep many commands in flight)
//! and calls back when each is done. The event loop hands such a backend its planned I/O
//! ([`crate::disk::IoPlan`]) as it hands a file's to its ring, and the callback posts the
//! result to the loop's inbox: neither an event loop nor a blocking-pool thread waits on
//! the network, and the queue depth is the far side's, not the blocking pool's.

use std::io;

/// What a queued command does (the planned I/O, already checked by the disk layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueuedKind {
    Read,
    /// A write; `durable` asks for it to be on stable media before the answer (FUA, or
    /// the gateway's write cache off).
    Write {
        durable: bool,
    },
    Flush,
}

/// One queued command.
#[derive(Debug)]
pub struct QueuedRequest {
    pub kind: QueuedKind,
    pub offset: u64,
    pub len: u64,
    /// A write's bytes (`len` of them); empty otherwise.
    pub data: Vec<u8>,
}

/// Called once with the outcome: the bytes read (`len` of them) for a read, empty
/// otherwise. It runs on the backend's thread and must not block.
pub type QueuedDone = Box<dyn FnOnce(io::Result<Vec<u8>>) + Send>;

/// A backend's queue ([`super::Backend::queued_io`]).
pub trait QueuedIo: Send + Sync {
    /// Starts `request`; `done` is called exactly once, possibly before this returns (a
    /// refusal: a full queue, stopped sessions). Never blocks.
    fn submit(&self, request: QueuedRequest, done: QueuedDone);
}
