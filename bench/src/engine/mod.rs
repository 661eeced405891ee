//! Engines: where a job's I/O goes (fio's `ioengine=`).
//!
//! - [`NullEngine`] (`null`): completes every I/O at once and moves no data, like fio's
//!   `null` engine: it measures the tool itself.
//! - [`UringEngine`] (`io_uring`): local files and block devices through io_uring
//!   (`O_DIRECT`, registered buffers and files, `SQPOLL`), like fio's `io_uring` engine;
//!   with [`UringOptions::sync_call`] it is fio's `psync`, `sync`, `pvsync` or `pvsync2`
//!   instead: the same files, one I/O at a time, each a system call inside `submit`
//!   (module `sync_call`), issued when `submit` starts.
//! - [`IscsiEngine`] (`iscsi`): our data path, a [`datapath::shard::ShardPool`] logged in to
//!   an `iscsi://` URL, or to a target started in-process ([`embedded`]) when the job names
//!   no file.
//!
//! # How the runner drives an engine
//! One thread per job owns its engine and calls, in a loop:
//! 1. [`Engine::queue`] for each new I/O. A full engine (queued plus in flight reached
//!    [`Engine::queue_depth`]) hands the unit back, as a full bounded queue does (STYLE.md).
//! 2. [`Engine::submit`] once `iodepth_batch_submit` units are queued: every queued unit goes
//!    to the kernel (or the shard) before it returns. The runner stamps the issue time of
//!    every unit of the batch, fio's *slat* end and *clat* start: after `submit` returns for
//!    io_uring (the `io_uring_enter` that carried them, as fio's io_uring engine does), and
//!    when `submit` starts for iSCSI ([`Engine::issues_when_submit_starts`]). The iSCSI hand-over
//!    puts the units on the shards' queues, and a shard on another core may send, and even
//!    complete, a unit before `submit` returns to a job thread that was preempted meanwhile;
//!    stamped after, such a unit showed a clat of 3 µs. The shard API does not report when a
//!    PDU goes out, so clat covers the hand-over too (the README and the JSON's
//!    `"iscsi_bench"."latency"` say so). For null there is no submission at all.
//! 3. [`Engine::reap`] with a minimum count and a timeout; each [`IoDone`] carries the unit
//!    back, with its buffer, and a `Result` with the [`IoError`] kind.
//! 4. [`Engine::close`] at the end: it waits for I/O still in flight and returns the final
//!    [`EngineCounters`]. Dropping an engine does the same, without the counters.
//!
//! # Buffers
//! I/O buffers are `Vec<u8>` carried by value in [`IoUnit`]. The runner should take them
//! from [`Engine::buffer`] and give spare ones back with [`Engine::recycle`] (a unit's buffer
//! comes back in its completion and may simply be queued again): that way an engine whose
//! memory must be prepared gets its own memory back. The io_uring engine with `fixedbufs`
//! hands out `iodepth` buffers that it registered with the ring at open, and recognises them
//! by address when they are queued, so `READ_FIXED`/`WRITE_FIXED` run on the runner's own
//! buffer without a copy (see [`uring`] for the rules that keeps safe). A buffer from
//! elsewhere still works, through the plain opcodes.
//!
//! `O_DIRECT` wants memory aligned to the file's direct-I/O memory alignment (`statx`
//! `STATX_DIOALIGN`). The `iscsi-bench` binary's allocator starts every allocation of a
//! page or more on a page ([`crate::page_alloc`]), as fio page-aligns its I/O memory, so
//! its buffers are used in place. A misaligned buffer (a library caller's, or one smaller
//! than a page) goes through an aligned bounce buffer of the engine, and the bytes copied
//! are counted in [`EngineCounters::bytes_copied`] (in the JSON job extension's `"engine"`).

pub mod embedded;
pub mod file_setup;
pub mod iscsi;
pub mod null;
mod shards;
mod sync_call;
#[cfg(any(test, feature = "test-utils"))]
pub mod testing;
pub mod uring;

use std::time::Duration;

use crate::io::{IoDone, IoUnit};

pub use embedded::{EmbeddedLun, EmbeddedOptions};
pub use iscsi::{
    DigestPreference, IscsiEngine, IscsiOptions, IscsiTarget, LoginOptions, TransportKind,
};
pub use null::{NullEngine, NullOptions};
pub use uring::{LayoutPolicy, UringEngine, UringOptions};

/// One engine as the job runner drives it (see the module docs for the call order).
pub trait Engine: Send {
    /// fio's name of the engine (`null`, `io_uring`, `iscsi`).
    fn name(&self) -> &'static str;

    /// The target's size in bytes (file, device or LUN), as found at open.
    fn size_bytes(&self) -> u64;

    /// The unit offsets and lengths must be multiples of: the LUN's logical block, the
    /// device's logical block or the file's direct-I/O alignment with `O_DIRECT`, 1 for a
    /// buffered file. An I/O that breaks it fails with a message that says so.
    fn block_size_bytes(&self) -> u32;

    /// fio's `unlink_each_loop`, between two loops of the job: unlink the job's files and
    /// create them again, empty, opened as before. Called with nothing in flight; engines
    /// without files refuse it.
    fn recreate_files(&mut self) -> Result<(), EngineError> {
        Err(EngineError::InvalidOption(format!(
            "unlink_each_loop: the {} engine has no files to unlink",
            self.name()
        )))
    }

    /// File `file`'s I/O starts over on its region (a new loop, or a time-based job's new
    /// pass over it): fio drops a buffered file's page cache again there (`invalidate`),
    /// so each pass reads from the device as the first did. The default does nothing.
    fn file_restarted(&mut self, _file: usize) {}

    /// Files (LUNs) the engine addresses: units name one by index ([`IoUnit::file`]).
    fn file_count(&self) -> usize {
        1
    }

    /// Size and logical block of file `file` (file 0 is the one [`Engine::size_bytes`] and
    /// [`Engine::block_size_bytes`] describe); `None` past the last.
    fn file_geometry(&self, file: usize) -> Option<(u64, u32)> {
        (file == 0).then(|| (self.size_bytes(), self.block_size_bytes()))
    }

    /// Most units the engine holds at once, queued and in flight together.
    fn queue_depth(&self) -> usize;

    /// Units queued or in flight now (timed-out units whose late completion has not come
    /// yet are not counted: they are the engine's business).
    fn in_flight(&self) -> usize;

    /// A buffer of `len_bytes` bytes for an I/O, from the engine's pool when it has one.
    /// Its contents are unspecified (zeros or an earlier I/O's data).
    fn buffer(&mut self, len_bytes: u32) -> Vec<u8> {
        vec![0; len_bytes as usize]
    }

    /// Gives a buffer back to the engine's pool (one from [`Engine::buffer`] or from a
    /// completion). The default drops it.
    fn recycle(&mut self, buffer: Vec<u8>) {
        drop(buffer);
    }

    /// Whether the engine carries out flush units ([`IoUnit::flush`]): `fsync(2)` for
    /// io_uring, nothing to do for null. The runner refuses `fsync`/`end_fsync` on an
    /// engine without it.
    fn supports_flush(&self) -> bool {
        false
    }

    /// The paths to the target and their states, for a multipath iSCSI job (`paths=`);
    /// empty for every other engine.
    fn paths(&self) -> Vec<datapath::shard::PathStatus> {
        Vec::new()
    }

    /// Queues one I/O. A full engine hands the unit back untouched. An I/O the engine
    /// cannot carry out (misaligned, past the end) is accepted and completes with an error.
    fn queue(&mut self, unit: IoUnit) -> Result<(), IoUnit>;

    /// Whether a unit counts as issued when [`Engine::submit`] starts rather than when it
    /// returns: true for engines whose `submit` hands units to another thread that may
    /// complete them before `submit` returns (see the module docs).
    fn issues_when_submit_starts(&self) -> bool {
        false
    }

    /// Called once on the job's thread before its clock starts: an engine whose I/O must
    /// live on the thread that drives it (the `iscsi` engine's inline shard) sets it up
    /// here. The default does nothing.
    fn on_job_thread(&mut self) -> Result<(), EngineError> {
        Ok(())
    }
    /// Submits every queued unit; returns how many went out.
    fn submit(&mut self) -> Result<usize, EngineError>;

    /// Appends completions to `out`: waits until at least `min` are there (at most the
    /// units in flight), or until `timeout` passes, whichever is first; then takes every
    /// completion already available. `min = 0` does not wait. Returns how many it appended.
    /// An engine that still holds units it failed (timed out) and is full of them waits,
    /// when `min` exceeds the units in flight, until one of them frees its slot or
    /// `timeout` passes, so a runner with nothing in flight does not spin.
    fn reap(
        &mut self,
        min: usize,
        timeout: Duration,
        out: &mut Vec<IoDone>,
    ) -> Result<usize, EngineError>;

    /// The engine's counters so far.
    fn counters(&self) -> EngineCounters;

    /// Waits for the I/O still in flight (dropping its completions), releases everything
    /// (the iSCSI engine logs out and stops its embedded target) and returns the final
    /// counters.
    fn close(self: Box<Self>) -> Result<EngineCounters, EngineError>;
}

/// An engine's [`Engine::buffer`] from its pool of recycled buffers: the most recently
/// recycled one large enough, resized to `len_bytes` (within its capacity, so it is not
/// reallocated and a registered buffer stays registered), or a new one.
pub(crate) fn take_buffer(pool: &mut Vec<Vec<u8>>, len_bytes: u32) -> Vec<u8> {
    let len = len_bytes as usize;
    match pool.iter().rposition(|b| b.capacity() >= len) {
        Some(i) => {
            let mut buffer = pool.swap_remove(i);
            buffer.resize(len, 0);
            buffer
        }
        None => vec![0; len],
    }
}

/// What an engine counts about itself, beside what the runner measures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineCounters {
    /// Units handed to the kernel or a shard.
    pub ios_submitted: u64,
    /// Completions handed to the runner (including failures and timeouts).
    pub ios_completed: u64,
    /// Calls that entered the kernel to submit or wait (io_uring: `io_uring_enter`,
    /// counted per call; with `SQPOLL` some calls return without entering. iSCSI: the
    /// shards' own count).
    pub kernel_entries: u64,
    /// Payload bytes copied in user space (bounce buffers for `O_DIRECT`, staged iSCSI
    /// receives). 0 means every byte went straight between the buffer and the kernel.
    pub bytes_copied: u64,
    /// Units that went through registered buffers (`READ_FIXED`/`WRITE_FIXED`).
    pub ios_fixed_buffers: u64,
    /// Units failed with [`crate::io::IoError::Timeout`].
    pub ios_timed_out: u64,
    /// Completions that came after their unit had timed out, and were dropped.
    pub late_completions: u64,
    /// iSCSI: connections re-established after a loss, the longest gap from a loss to the
    /// new login (ns), and commands sent again on a new connection.
    pub reconnects: u64,
    pub reconnect_gap_ns_max: u64,
    pub commands_resent: u64,
}

/// Adds the paths of another shard or job to `into`, by portal: counts add, a path is up
/// when up in either, the first known ALUA state stays.
pub fn add_paths(
    into: &mut Vec<datapath::shard::PathStatus>,
    from: &[datapath::shard::PathStatus],
) {
    for path in from {
        match into.iter_mut().find(|p| p.portal == path.portal) {
            Some(p) => {
                p.up |= path.up;
                p.ios += path.ios;
                p.losses += path.losses;
                p.held += path.held;
                if p.alua.is_none() {
                    p.alua = path.alua;
                    p.group = path.group;
                }
            }
            None => into.push(path.clone()),
        }
    }
}

/// How to set up one job's engine: the lead maps the parsed job onto one of these.
#[derive(Debug, Clone)]
pub enum EngineConfig {
    Null(NullOptions),
    Uring(UringOptions),
    Iscsi(Box<IscsiOptions>),
}

/// Opens the engine `config` describes.
pub fn open(config: &EngineConfig) -> Result<Box<dyn Engine>, EngineError> {
    Ok(match config {
        EngineConfig::Null(options) => Box::new(NullEngine::open(options)?),
        EngineConfig::Uring(options) => Box::new(UringEngine::open(options)?),
        EngineConfig::Iscsi(options) => Box::new(IscsiEngine::open(options)?),
    })
}

/// Why an engine could not open, or failed as a whole (one I/O failing is an
/// [`crate::io::IoError`] in its completion instead).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid engine option: {0}")]
    InvalidOption(String),
    #[error("{path}: {what}: {source}")]
    File {
        path: String,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Target { path: String, reason: String },
    #[error("io_uring: {what}: {source}")]
    Ring {
        what: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Url(#[from] datapath::url::UrlError),
    #[error("cannot resolve iSCSI host '{host}': {reason}")]
    Resolve { host: String, reason: String },
    #[error("iSCSI: {0}")]
    Shards(#[from] datapath::shard::ShardError),
    #[error("embedded target: {0}")]
    EmbeddedTarget(#[from] gateway::server::ServerError),
    /// A set-up command (TEST UNIT READY, READ CAPACITY) ended badly.
    #[error("{command}: {reason}")]
    Scsi {
        command: &'static str,
        reason: String,
    },
}

#[cfg(test)]
mod tests;
