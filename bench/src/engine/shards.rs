//! Where the `iscsi` engine's commands go: one shard on the job's own thread
//! ([`InlineShard`]: the job generates, submits, reaps, records and verifies on the shard's
//! loop, one thread on one core), or a [`ShardPool`] of shard threads fed through their
//! queues (`shards=N` above 1: several sessions for one job).
//!
//! The inline shard's ring belongs to the thread that makes it (`SINGLE_ISSUER`,
//! `DEFER_TASKRUN`), and the engine is opened on the run's main thread: it logs in there
//! only to probe the LUN, logs out, and logs in again on the job's thread
//! ([`Shards::on_job_thread`]), before the job's clock starts.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select, TryRecvError};
use datapath::client::ClientConfig;
use datapath::session::Request;
use datapath::shard::{
    InlineShard, PathStatus, ShardCompletion, ShardConfig, ShardError, ShardInfo, ShardPool,
    ShardStats,
};

/// See the module docs.
pub(super) enum Shards {
    /// Shard threads fed through their queues.
    Pool(ShardPool),
    /// One shard on the job's thread; `None` until the job's thread connects it.
    Inline {
        shard: Option<Box<InlineShard>>,
        client: Box<ClientConfig>,
        config: Box<ShardConfig>,
        info: Box<ShardInfo>,
    },
}

impl std::fmt::Debug for Shards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shards::Pool(pool) => pool.fmt(f),
            Shards::Inline { info, .. } => f.debug_tuple("Inline").field(info).finish(),
        }
    }
}

impl Shards {
    pub(super) fn len(&self) -> usize {
        match self {
            Shards::Pool(pool) => pool.len(),
            Shards::Inline { .. } => 1,
        }
    }

    /// Whether commands go to shard threads (a pool) rather than an inline shard.
    pub(super) fn threaded(&self) -> bool {
        matches!(self, Shards::Pool(_))
    }

    /// Whether the inline shard has yet to log in (see [`Shards::on_job_thread`]).
    pub(super) fn needs_connect(&self) -> bool {
        matches!(self, Shards::Inline { shard: None, .. })
    }

    /// On the job's thread, before its clock starts: the inline shard logs in here.
    pub(super) fn on_job_thread(&mut self) -> Result<&mut InlineShard, ShardError> {
        match self {
            Shards::Pool(_) => Err(ShardError::InvalidConfig("a pool has no inline shard")),
            Shards::Inline {
                shard,
                client,
                config,
                info,
            } => {
                if shard.is_none() {
                    let connected = InlineShard::connect(client, config, 0)?;
                    **info = connected.info().clone();
                    *shard = Some(Box::new(connected));
                }
                shard.as_deref_mut().ok_or(ShardError::InvalidConfig(
                    "the inline shard did not connect",
                ))
            }
        }
    }

    pub(super) fn info(&self) -> Vec<ShardInfo> {
        match self {
            Shards::Pool(pool) => (0..pool.len())
                .filter_map(|i| pool.info(i).cloned())
                .collect(),
            Shards::Inline { info, .. } => vec![ShardInfo::clone(info)],
        }
    }

    /// Hands one request to shard `shard`; a full (or not yet connected) shard hands it back.
    /// Hands `request` to shard `shard`; `now` is the batch's reading of the clock.
    pub(super) fn submit(
        &mut self,
        shard: usize,
        now: Instant,
        request: Request,
    ) -> Result<(), Request> {
        match self {
            Shards::Pool(pool) => pool.submit(shard, request),
            Shards::Inline { shard: Some(s), .. } => s.submit(now, request),
            Shards::Inline { shard: None, .. } => Err(request),
        }
    }

    /// Sends what was submitted (the pool's shards send on their own).
    pub(super) fn flush(&mut self) {
        if let Shards::Inline { shard: Some(s), .. } = self {
            s.flush();
        }
    }

    /// ABORT TASK for the command `tag` on shard `shard`.
    pub(super) fn abort(&mut self, shard: usize, tag: u64) -> Result<(), ShardError> {
        match self {
            Shards::Pool(pool) => pool.abort(shard, tag),
            Shards::Inline { shard: Some(s), .. } => {
                s.abort(tag);
                Ok(())
            }
            Shards::Inline { shard: None, .. } => Ok(()),
        }
    }

    /// Takes the completions waiting on every shard (at most `bound` from each, so one
    /// busy shard cannot hold the caller); a shard that is gone for good goes to `gone`.
    pub(super) fn drain(
        &mut self,
        bound: usize,
        out: &mut Vec<ShardCompletion>,
        gone: &mut Vec<usize>,
    ) {
        match self {
            Shards::Pool(pool) => {
                for shard in 0..pool.len() {
                    let Some(rx) = pool.completions(shard) else {
                        continue;
                    };
                    for _ in 0..bound {
                        match rx.try_recv() {
                            Ok(completion) => out.push(completion),
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => {
                                gone.push(shard);
                                break;
                            }
                        }
                    }
                }
            }
            Shards::Inline { shard: Some(s), .. } => {
                if s.poll(out).is_err() {
                    gone.push(0);
                }
            }
            Shards::Inline { shard: None, .. } => {}
        }
    }

    /// Waits up to `wait` for a completion on any live shard (it is left for `drain`).
    pub(super) fn wait_any(&mut self, wait: Duration, dead: &[bool]) {
        match self {
            Shards::Pool(pool) => {
                let receivers: Vec<&Receiver<ShardCompletion>> = (0..pool.len())
                    .filter(|i| !dead.get(*i).copied().unwrap_or(true))
                    .filter_map(|i| pool.completions(i))
                    .collect();
                if receivers.is_empty() {
                    std::thread::sleep(wait);
                    return;
                }
                let mut select = Select::new();
                for rx in &receivers {
                    select.recv(rx);
                }
                let _ = select.ready_timeout(wait);
            }
            Shards::Inline { shard: Some(s), .. } if !dead.first().copied().unwrap_or(true) => {
                s.wait(wait)
            }
            Shards::Inline { .. } => std::thread::sleep(wait),
        }
    }

    /// The sub-paths of a multipath job, one entry per portal: counts summed over the
    /// shards (each has its own session per portal), up when up on any shard.
    pub(super) fn path_statuses(&self) -> Vec<PathStatus> {
        let per_shard: Vec<Vec<PathStatus>> = match self {
            Shards::Pool(pool) => (0..pool.len()).map(|i| pool.path_statuses(i)).collect(),
            Shards::Inline { shard: Some(s), .. } => vec![s.path_statuses()],
            Shards::Inline { shard: None, .. } => Vec::new(),
        };
        let mut merged: Vec<PathStatus> = Vec::new();
        for statuses in per_shard {
            super::add_paths(&mut merged, &statuses);
        }
        merged
    }

    pub(super) fn stats(&self) -> ShardStats {
        match self {
            Shards::Pool(pool) => ShardStats::sum(&pool.all_stats()),
            Shards::Inline { shard: Some(s), .. } => s.stats(),
            Shards::Inline { shard: None, .. } => ShardStats::default(),
        }
    }

    /// Logs every session out.
    pub(super) fn shutdown(self) {
        match self {
            Shards::Pool(pool) => {
                pool.shutdown();
            }
            Shards::Inline { shard, .. } => {
                if let Some(s) = shard {
                    s.close();
                }
            }
        }
    }
}
