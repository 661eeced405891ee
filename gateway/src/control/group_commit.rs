//! Group commit of control-plane changes: concurrent calls share one `fdatasync` of the
//! journal and one publication to the event loops.
//!
//! A change is applied to the model and its record written to the journal (no sync)
//! under the control plane's lock, which gives it the next *version* (the order of the
//! model's changes, so also the journal's order). Then, outside the lock, the call waits
//! in [`GroupCommit::settle`] until its version is *settled*: its record synced and a
//! configuration holding it published. The first waiter to find no sync running becomes
//! the leader: it takes, under the lock, the version the model is at and the event loops'
//! view of it ([`Snapshot`]), syncs the journal (every record written before covers all of
//! those versions), publishes that view, and wakes everyone it settled. Publishing does
//! not wait for the event loops (each takes the new view before the next PDU it handles);
//! a call whose change removes something then waits, on its own, until every loop runs it
//! ([`Visibility`]). Calls that arrive
//! while it syncs write their records meanwhile and are settled by the next leader, so
//! the number of syncs per second stays about the disk's sync rate whatever the number of
//! clients.
//!
//! What replay sees does not change: records land in version order; a crash leaves a
//! prefix of them (the first torn record ends the replay), so the configuration after
//! `kill -9` is the last acknowledged one or one with some of the unacknowledged changes
//! that were in flight, each a whole change, never a mix. No call is answered before its
//! record is synced, and nothing is published before it is durable. Publications go out in
//! version order: one that would go back to an older version is skipped
//! ([`GroupCommit::publish_in_order`], which the control plane's other publishers use too).
//!
//! A change may leave work for the moment its record is durable ([`AfterSync`]): the
//! leader runs it after the sync and before it publishes (`volume_create` with `attach`
//! appends the pool's record of the volume then, `volume_attach`). One that fails fails
//! the group like a failed sync: nothing of it is published.
//!
//! A failed `fdatasync` leaves the journal in an unknown state (the kernel may have dropped
//! the dirty pages, so a retry proves nothing): the changes waiting are answered with an
//! error saying so and every later change is refused until the gateway restarts and
//! replays what did land.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::pace;
use super::phases::{self, Phase};
use crate::server::{Controller, LiveTarget};

/// What a change needs of the event loops before its call is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Visibility {
    /// The change only adds (a target, a LUN, a binding, secrets for later logins): every
    /// PDU received after the answer meets it, which publishing alone ensures.
    NextPdu,
    /// The change takes something away (a LUN, a target, a binding, an initiator from an
    /// ACL) or changes what commands do: every loop must run the new configuration before
    /// the answer, so no command received earlier starts under the old one afterwards.
    EveryLoop,
}

/// Work a change leaves for when its record is durable and before any event loop can see
/// it (run by the group commit's leader), or to undo if the change is not made.
pub(super) trait AfterSync: Send {
    /// The change's record is synced; nothing of it is published yet.
    fn run(&self) -> Result<(), String>;
    /// The change was not made (refused, or its record not written).
    fn cancel(&self);
}

/// What a leader takes under the control plane's lock: the model's version, the view of
/// it the event loops get, how to sync the journal that holds its records, and the work
/// those changes left for after the sync.
pub(super) struct Snapshot {
    pub version: u64,
    pub live: Vec<Arc<LiveTarget>>,
    pub controller: Option<Controller>,
    pub journal: Option<Arc<std::fs::File>>,
    pub after_sync: Vec<Box<dyn AfterSync>>,
}

#[derive(Default)]
struct Progress {
    /// Every change up to this version is synced and published.
    settled: u64,
    /// A leader is syncing.
    syncing: bool,
    /// A leader's snapshot is taken and not yet published ([`GroupCommit::snapshot_taken`]).
    taken: bool,
    /// Why a sync failed; then no change is accepted any more.
    failed: Option<String>,
}

/// The rendezvous of the calls waiting for their commit.
#[derive(Default)]
pub(super) struct GroupCommit {
    progress: Mutex<Progress>,
    settled: Condvar,
    /// The newest version published: publications never go back.
    published: Mutex<u64>,
    /// How many syncs the leaders made (for tests and statistics).
    syncs: std::sync::atomic::AtomicU64,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl GroupCommit {
    /// Refuses a change once a sync failed (see the module doc).
    pub fn check_usable(&self) -> Result<(), String> {
        match &locked(&self.progress).failed {
            Some(reason) => Err(format!(
                "a sync of the state journal failed earlier ({reason}); no change is accepted until the gateway restarts"
            )),
            None => Ok(()),
        }
    }

    /// Returns once `version` is synced and published. `take` is called (by a leader) to
    /// take a [`Snapshot`] under the control plane's lock.
    pub fn settle(&self, version: u64, take: impl Fn() -> Snapshot) -> Result<(), String> {
        let mut progress = locked(&self.progress);
        loop {
            if progress.settled >= version {
                return Ok(());
            }
            if let Some(reason) = &progress.failed {
                return Err(format!(
                    "the change may not be durable: syncing the state journal failed: {reason}; the gateway accepts no change until it restarts"
                ));
            }
            if progress.syncing {
                progress = self
                    .settled
                    .wait(progress)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                phases::mark(Phase::Wait);
                continue;
            }
            progress.syncing = true;
            drop(progress);
            let snapshot = take();
            phases::mark(Phase::Snapshot);
            let outcome = self.lead(snapshot);
            progress = locked(&self.progress);
            progress.syncing = false;
            progress.taken = false;
            match outcome {
                Ok(version) => progress.settled = progress.settled.max(version),
                Err(reason) => progress.failed = Some(reason),
            }
            self.settled.notify_all();
        }
    }

    /// One leader's round: sync, publish; the version it settled.
    fn lead(&self, snapshot: Snapshot) -> Result<u64, String> {
        if let Some(journal) = &snapshot.journal {
            journal.sync_data().map_err(|e| e.to_string())?;
            self.syncs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            phases::mark(Phase::Sync);
            pace::tick();
        }
        for work in &snapshot.after_sync {
            work.run()?;
        }
        if !snapshot.after_sync.is_empty() {
            phases::mark(Phase::Pool);
        }
        if let Some(controller) = &snapshot.controller {
            self.publish_in_order(controller, snapshot.version, snapshot.live);
            phases::mark(Phase::Publish);
            pace::tick();
        }
        Ok(snapshot.version)
    }

    /// Called by `take` (see [`GroupCommit::settle`]) under the control plane's lock, as
    /// it takes a snapshot: until its leader has published, [`GroupCommit::wait_for_leader`]
    /// waits.
    pub fn snapshot_taken(&self) {
        locked(&self.progress).taken = true;
    }

    /// Returns once no leader is between its snapshot and the end of its publication: a
    /// publisher outside the group commit (`Control::publish_locked`, under the control
    /// lock, so no new leader takes a snapshot meanwhile) then cannot publish a change
    /// whose [`AfterSync`] work a leader is still doing. (Lock order: the control lock,
    /// then this one's, as in `take`.)
    pub fn wait_for_leader(&self) {
        let mut progress = locked(&self.progress);
        while progress.taken {
            progress = self
                .settled
                .wait(progress)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Publishes `live` (the model at `version`) unless a newer version went out already.
    /// It does not wait for the event loops: each takes it before it handles the next PDU
    /// it receives (`Controller::publish_visible`); a change that removes something waits
    /// for every loop afterwards ([`Visibility::EveryLoop`]), outside every lock here, so
    /// the next leader's sync and publication do not queue behind that wait.
    pub fn publish_in_order(
        &self,
        controller: &Controller,
        version: u64,
        live: Vec<Arc<LiveTarget>>,
    ) {
        let mut published = locked(&self.published);
        if version > *published {
            controller.publish_visible(live);
            *published = version;
        }
    }

    /// How many journal syncs the leaders made so far.
    #[cfg(test)]
    pub fn syncs(&self) -> u64 {
        self.syncs.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Many threads each "write" a version and settle it: every one returns only once a
    /// leader's snapshot covered it, and the leaders' syncs are fewer than the changes.
    #[test]
    fn concurrent_settles_share_syncs_and_each_waits_for_its_version() {
        let commits = Arc::new(GroupCommit::default());
        let written = Arc::new(Mutex::new(0u64));
        let file = Arc::new(tempfile_in_target());
        let synced_upto = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (commits, written, file, synced_upto) = (
                    Arc::clone(&commits),
                    Arc::clone(&written),
                    Arc::clone(&file),
                    Arc::clone(&synced_upto),
                );
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let mine = {
                            let mut w = locked(&written);
                            *w += 1;
                            *w
                        };
                        let take = || {
                            let version = *locked(&written);
                            synced_upto.fetch_max(version, Ordering::SeqCst);
                            Snapshot {
                                version,
                                live: Vec::new(),
                                controller: None,
                                journal: Some(Arc::clone(&file)),
                                after_sync: Vec::new(),
                            }
                        };
                        commits.settle(mine, take).unwrap();
                        assert!(synced_upto.load(Ordering::SeqCst) >= mine);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(commits.syncs() >= 1);
        assert!(commits.check_usable().is_ok());
    }

    fn tempfile_in_target() -> std::fs::File {
        let path = std::env::temp_dir().join(format!("group-commit-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let _ = std::fs::remove_file(&path);
        file
    }
}
