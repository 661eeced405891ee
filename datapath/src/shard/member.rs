//! A sub-path of a multipath shard (`multipath`), whatever carries it: software TCP
//! ([`TcpPath`]) or a queue pair of a dependent or independent adapter
//! ([`AdapterShardPath`]). Multipath, failover, the joining identity check (VPD 0x83) and
//! ALUA are written once over this interface (issue 14: "a path is a path of the one shard
//! loop").
//!
//! Queue pairs: sub-path `k` of `n` on shard `i` drives adapter queue pair `2(i·n + k)`
//! and keeps `2(i·n + k) + 1` to spare for an Async Message event 1 move (make before
//! break), so an adapter serves `shards` multipath shards with
//! [`queue_pairs_needed`](super::adapters::queue_pairs_needed) queue pairs.

use std::time::Duration;

use super::adapters::{AdapterShardPath, AdapterSlot};
use super::ring_wake::WakeSource;
use super::run::{Finished, Path};
use super::tcp::{Setup, TcpPath};
use super::{ShardError, ShardInfo, ShardPath};
use crate::adapter::Notifier;

/// What a multipath shard needs of a sub-path beyond [`Path`].
pub(super) trait MemberPath: Path {
    /// The connection is gone and the path does not bring it back itself.
    fn is_lost(&self) -> bool;
    /// The Time2Wait the target gave when it dropped the path (event 2 or 3), if it did.
    fn lost_time2wait(&self) -> Option<Duration>;
    /// Ends a lost path: hands back every command it held (failed with the loss, or
    /// finished), buffers included, once nothing (kernel or adapter) uses them.
    fn end_lost(&mut self, done: &mut Vec<Finished>);
    /// What another sub-path's ring watches to wake a shard sleeping there (software
    /// paths only; `None`: the multipath sleep is bounded instead).
    fn wake_source(&self) -> Option<WakeSource> {
        None
    }
    /// Has this path's ring watch `sources` while the shard sleeps in it; true when all
    /// are watched.
    fn watch_rings(&mut self, sources: &[WakeSource]) -> bool {
        let _ = sources;
        false
    }
    /// The eventfds an adapter writes when it has news for this path (adapter paths only:
    /// every queue pair it drives, a move's included). A multipath shard over adapters
    /// sleeps on all of its sub-paths' at once (`Notifier::wait_any`).
    fn adapter_notifiers<'a>(&'a self, out: &mut Vec<&'a Notifier>) {
        let _ = out;
    }
    /// True when a poll would find news without sleeping (adapter paths).
    fn ready_to_poll(&self) -> bool {
        false
    }
}

impl MemberPath for TcpPath {
    fn is_lost(&self) -> bool {
        TcpPath::is_lost(self)
    }

    fn lost_time2wait(&self) -> Option<Duration> {
        TcpPath::lost_time2wait(self)
    }

    fn end_lost(&mut self, done: &mut Vec<Finished>) {
        TcpPath::end_lost(self, done)
    }

    fn wake_source(&self) -> Option<WakeSource> {
        TcpPath::wake_source(self)
    }

    fn watch_rings(&mut self, sources: &[WakeSource]) -> bool {
        TcpPath::watch_rings(self, sources)
    }
}

impl MemberPath for AdapterShardPath {
    fn is_lost(&self) -> bool {
        AdapterShardPath::is_lost(self)
    }

    fn lost_time2wait(&self) -> Option<Duration> {
        AdapterShardPath::lost_time2wait(self)
    }

    fn end_lost(&mut self, done: &mut Vec<Finished>) {
        AdapterShardPath::end_lost(self, done)
    }

    fn adapter_notifiers<'a>(&'a self, out: &mut Vec<&'a Notifier>) {
        AdapterShardPath::notifiers(self, out)
    }

    fn ready_to_poll(&self) -> bool {
        AdapterShardPath::ready_to_poll(self)
    }
}

/// The queue pairs sub-path `k` of `n` on shard `shard` drives on an adapter with
/// `queue_pairs` (see the module docs); an error when the adapter has too few.
pub(super) fn member_slot(
    shard: usize,
    k: usize,
    n: usize,
    queue_pairs: usize,
) -> Result<AdapterSlot, ShardError> {
    let queue_pair = 2 * (shard * n + k);
    if queue_pair >= queue_pairs {
        return Err(ShardError::InvalidConfig(
            "the adapter has too few queue pairs for every path of every shard (it needs two per path per shard)",
        ));
    }
    Ok(AdapterSlot {
        shard,
        queue_pair,
        spare: Some(queue_pair + 1).filter(|&q| q < queue_pairs),
        member: true,
    })
}

/// Connects sub-path `k` of `n` (the portal is `setup.client_config.portal`) over what
/// `setup.config.path` names.
pub(super) fn connect_member(
    setup: Setup,
    k: usize,
    n: usize,
) -> Result<(Box<dyn MemberPath>, ShardInfo), ShardError> {
    match &setup.config.path {
        ShardPath::Software => {
            let (path, info) = TcpPath::connect(setup)?;
            Ok((Box::new(path), info))
        }
        adapter => {
            let queue_pairs = adapter
                .adapter_info()
                .map_or(0, |a| usize::from(a.capabilities.queue_pairs));
            let slot = member_slot(setup.index, k, n, queue_pairs)?;
            let core = setup.core.map(|c| c.id);
            let (path, info) =
                AdapterShardPath::connect(slot, &setup.client_config, &setup.config, core)?;
            Ok((Box::new(path), info))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// However many shards and paths, and however many queue pairs the adapter has,
        /// no two sub-paths (nor their spares) share a queue pair, every one named exists,
        /// and with `queue_pairs_needed` every sub-path joins and has a spare.
        #[test]
        fn queue_pairs_are_never_shared(shards in 1usize..16, n in 1usize..6, short in 0usize..8) {
            let needed = super::super::adapters::queue_pairs_needed(shards, n);
            let queue_pairs = needed.saturating_sub(short);
            let mut taken = std::collections::HashSet::new();
            for shard in 0..shards {
                for k in 0..n {
                    match member_slot(shard, k, n, queue_pairs) {
                        Ok(slot) => {
                            prop_assert!(slot.queue_pair < queue_pairs);
                            prop_assert!(taken.insert(slot.queue_pair));
                            if let Some(spare) = slot.spare {
                                prop_assert!(spare < queue_pairs);
                                prop_assert!(taken.insert(spare));
                            } else {
                                prop_assert!(short > 0);
                            }
                        }
                        Err(_) => prop_assert!(short > 0),
                    }
                }
            }
        }
    }

    #[test]
    fn sub_paths_take_distinct_queue_pairs_and_spares() {
        let (shards, n) = (3, 2);
        let queue_pairs = super::super::adapters::queue_pairs_needed(shards, n);
        let mut taken = std::collections::HashSet::new();
        for shard in 0..shards {
            for k in 0..n {
                let slot = member_slot(shard, k, n, queue_pairs).unwrap();
                assert!(slot.member);
                let spare = slot.spare.expect("room for a spare");
                assert!(taken.insert(slot.queue_pair), "{slot:?}");
                assert!(taken.insert(spare), "{slot:?}");
            }
        }
        assert_eq!(taken.len(), queue_pairs);
        // One short: the last path keeps no spare; two short: it cannot join.
        let last = member_slot(shards - 1, n - 1, n, queue_pairs - 1).unwrap();
        assert_eq!(last.spare, None);
        assert!(member_slot(shards - 1, n - 1, n, queue_pairs - 2).is_err());
    }
}
