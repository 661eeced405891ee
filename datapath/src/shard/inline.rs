//! A shard run on the caller's own thread: the same path and the same bookkeeping as a
//! pool's shard (`run::Core`), driven by the caller instead of a loop of its own. A job
//! that owns one generates, submits, reaps, records and verifies on one thread, with no
//! queue, doorbell, futex or second thread between it and its I/O (the on-shard model of
//! SPDK's and Seastar's reactors, with the application's loop as the reactor).
//!
//! Per turn the caller [`InlineShard::submit`]s, then [`InlineShard::poll`]s (which sends
//! what was submitted and takes what finished, without blocking), and when it has nothing
//! else to do it [`InlineShard::wait`]s in the path (one kernel entry on the software
//! path) until an answer comes or its own deadline. Pinning the thread is the caller's
//! business (fio's `cpus_allowed`).
//!
//! The software path's ring accepts work only from the thread that made it
//! (`SINGLE_ISSUER`): an inline shard is driven from the thread that connected it. It may
//! be moved elsewhere (it is `Send`), but there it refuses to move I/O
//! ([`ShardError::WrongThread`]) rather than enter a ring that is not its thread's.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::run::{Core, Path, PathState, Started};
use super::{adapters, tcp, Doorbell, ShardCompletion, ShardConfig, ShardError, ShardInfo};
use super::{PathStatus, ShardPath, ShardStats};
use crate::session::connect::ClientConfig;
use crate::session::Request;

/// How long [`InlineShard::close`] waits for the session to log out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// One shard on the caller's thread (see the module docs).
pub struct InlineShard {
    core: Core,
    depth: usize,
    /// Never rung by anyone: the software path keeps a read of it on its ring, and its
    /// stop flag tells a recovering path that the caller is done.
    doorbell: Arc<Doorbell>,
    /// Finished while the caller was not looking (failed at submission or abort).
    early: Vec<ShardCompletion>,
    info: ShardInfo,
    gone: Option<String>,
    closed: bool,
    /// The thread that connected it (`this_thread`): the only one that may enter its ring.
    owner: usize,
}

impl std::fmt::Debug for InlineShard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineShard")
            .field("info", &self.info)
            .field("held", &self.core.held())
            .finish_non_exhaustive()
    }
}

impl InlineShard {
    /// Connects and logs in (software), or takes queue pair `index` of the adapter
    /// `config.path` names, on the calling thread. `index` makes the shard's ISID, as for
    /// shard `index` of a pool.
    pub fn connect(
        client_config: &ClientConfig,
        config: &ShardConfig,
        index: usize,
    ) -> Result<InlineShard, ShardError> {
        if config.queue_depth == 0 {
            return Err(ShardError::InvalidConfig("queue_depth must be at least 1"));
        }
        if client_config.target_name.is_none() {
            return Err(ShardError::InvalidConfig(
                "shards need a target name (not a discovery session)",
            ));
        }
        let doorbell = Arc::new(Doorbell::new().map_err(|source| ShardError::Spawn {
            shard: index,
            source,
        })?);
        let setup = tcp::Setup {
            index,
            client_config: client_config.clone(),
            config: config.clone(),
            core: None,
            doorbell: Arc::clone(&doorbell),
        };
        let (path, info): (Box<dyn Path>, ShardInfo) = match config.path {
            ShardPath::Software => tcp::connect_software(setup)?,
            // Each sub-path takes its own queue pairs (`member`).
            _ if config.multipath.is_some() => super::multipath::connect(setup)?,
            _ => {
                // Shard `index` of one: its queue pair, and the next to spare for moves.
                let queue_pairs = config
                    .path
                    .adapter_info()
                    .map_or(0, |a| usize::from(a.capabilities.queue_pairs));
                let slot = adapters::AdapterSlot::of_shard(index, 1, queue_pairs);
                let (path, info) =
                    adapters::AdapterShardPath::connect(slot, client_config, config, None)?;
                (Box::new(path), info)
            }
        };
        Ok(InlineShard {
            core: Core::new(index, path, config.queue_depth),
            depth: config.queue_depth,
            doorbell,
            early: Vec::new(),
            info,
            gone: None,
            closed: false,
            owner: this_thread(),
        })
    }

    pub fn info(&self) -> &ShardInfo {
        &self.info
    }

    /// The shard number it was connected as (its ISID's).
    pub fn index(&self) -> usize {
        self.core.index
    }

    /// Commands held (sent, or waiting in the path).
    pub fn held(&self) -> usize {
        self.core.held()
    }

    /// Room for more commands under the queue depth.
    pub fn room(&self) -> usize {
        self.depth.saturating_sub(self.core.held())
    }

    /// Takes one command, started at `now` (the caller's reading of the clock: one serves
    /// a batch, as the session's own `submit` takes it); with no room (or once the shard
    /// is gone) it comes back. It goes on the wire at the next [`InlineShard::poll`] or
    /// [`InlineShard::wait`].
    pub fn submit(&mut self, now: Instant, request: Request) -> Result<(), Request> {
        if self.room() == 0 || self.gone.is_some() {
            return Err(request);
        }
        match self.core.start(now, request, false) {
            Started::Taken => Ok(()),
            Started::Full(request) => Err(request),
            Started::Failed(completion) => {
                self.early.push(completion);
                Ok(())
            }
        }
    }

    /// The caller gave up on the command it submitted with `user_data` (ABORT TASK where
    /// the path offers it; the command then ends as `CommandError::Aborted`).
    pub fn abort(&mut self, user_data: u64) {
        if let Some(aborted) = self.core.abort(Instant::now(), user_data) {
            self.early.push(aborted);
        }
    }

    /// Takes what arrived without blocking or entering the kernel, and appends the
    /// commands that finished. What was submitted goes out with the next
    /// [`InlineShard::flush`] or [`InlineShard::wait`]. `Err` once the path is gone for good
    /// (recovery gave up): the commands it held are among the completions, failed.
    pub fn poll(&mut self, out: &mut Vec<ShardCompletion>) -> Result<(), ShardError> {
        self.on_owner()?;
        out.append(&mut self.early);
        if let Some(reason) = &self.gone {
            return Err(gone(self.core.index, reason));
        }
        let now = Instant::now();
        let state = self.core.poll(now);
        self.core
            .take_finished(|_, completion| out.push(completion));
        if let PathState::Gone(reason) = state {
            let error = gone(self.core.index, &reason);
            self.gone = Some(reason);
            return Err(error);
        }
        // Nothing is submitted here: what this turn queued (receives armed again, Data-Out
        // for an R2T) goes in with the caller's next flush or wait, in one entry with the
        // commands it submits meanwhile, instead of an entry of its own.
        Ok(())
    }

    /// Sends what was submitted, without taking answers or sleeping.
    pub fn flush(&mut self) {
        if self.gone.is_none() && self.on_owner().is_ok() {
            self.core.path.wait(Duration::ZERO, &|| true);
        }
    }

    /// Sends what was submitted and sleeps in the path up to `timeout`, until something
    /// may have finished (then [`InlineShard::poll`]): one kernel entry for both. Returns
    /// at once, after sending, when something already has.
    pub fn wait(&mut self, timeout: Duration) {
        if !self.early.is_empty() {
            self.flush();
            return;
        }
        if self.gone.is_some() || self.on_owner().is_err() {
            return;
        }
        let timeout = match self.core.path.next_deadline() {
            Some(at) => timeout.min(at.saturating_duration_since(Instant::now())),
            None => timeout,
        };
        self.core.path.wait(timeout, &|| false);
    }

    /// The shard's counters.
    pub fn stats(&self) -> ShardStats {
        self.core.stats()
    }

    /// The sub-paths and their states (multipath; empty otherwise).
    pub fn path_statuses(&self) -> Vec<PathStatus> {
        self.core.path.statuses()
    }

    /// Logs out (waiting up to 5 s for what is held to finish first) and returns the
    /// counters. Completions that arrive meanwhile are dropped with their buffers.
    pub fn close(mut self) -> ShardStats {
        self.shut();
        self.core.stats()
    }

    /// Whether the calling thread is the one that connected the shard.
    fn on_owner(&self) -> Result<(), ShardError> {
        if this_thread() == self.owner {
            Ok(())
        } else {
            Err(ShardError::WrongThread {
                shard: self.core.index,
            })
        }
    }

    fn shut(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        if self.on_owner().is_err() {
            // Its ring cannot be entered from here to let the kernel finish what it
            // holds, so nothing the kernel may still write is freed: the shard is leaked.
            tracing::error!(
                shard = self.core.index,
                "an inline shard dropped away from its thread is leaked"
            );
            let path = std::mem::replace(&mut self.core.path, Box::new(super::run::Closed));
            std::mem::forget(path);
            return;
        }
        self.doorbell.stopping.store(true, Ordering::SeqCst);
        let until = Instant::now() + CLOSE_TIMEOUT;
        let mut dropped = Vec::new();
        // Bounded by the clock.
        while Instant::now() < until {
            dropped.clear();
            if self.poll(&mut dropped).is_err() {
                return;
            }
            if self.core.held() == 0 && self.core.path.close(Instant::now()) {
                return;
            }
            self.wait(Duration::from_millis(10));
        }
        tracing::warn!(shard = self.core.index, "closing an inline shard timed out");
    }
}

impl Drop for InlineShard {
    fn drop(&mut self) {
        self.shut();
    }
}

/// Names the calling thread cheaply: the address of a thread-local, unique among live
/// threads (`std::thread::current()` would touch a reference count at every turn).
fn this_thread() -> usize {
    thread_local! {
        static MARK: u8 = const { 0 };
    }
    MARK.with(|mark| std::ptr::from_ref(mark) as usize)
}

fn gone(shard: usize, reason: &str) -> ShardError {
    ShardError::Lost {
        shard,
        reason: format!("{reason} (reconnect gave up)"),
    }
}
