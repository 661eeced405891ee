//! The volumes bound for one host, by endpoint and secondary ID: what the event loops
//! read on every command to a subsidiary LU, and what the control plane copies on every
//! bind.
//!
//! A copy must be cheap with tens of thousands of bindings (a bind's p99 goal is 2 ms),
//! and a lookup must take no lock. So the map is persistent in the simplest way: per
//! endpoint, secondary IDs are grouped in runs of 256 (`id >> 8`), each run an
//! `Arc<Vec<_>>` sorted by ID. Cloning a [`HostBindings`] copies the spine (one `Arc` per
//! run: 256 runs for 65,536 dense IDs) and a bind copies the one run it changes. A lookup
//! is one B-tree step and a binary search in at most 256 entries. No I/O.

use std::collections::BTreeMap;
use std::sync::Arc;

use datapath::scsi::lun::EXTENDED_FLAT_SPACE_MAX;

use crate::disk::LogicalUnit;

const RUN_SHIFT: u32 = 8;

type Run = Arc<Vec<(u32, Arc<LogicalUnit>)>>;

#[derive(Clone, Default)]
struct EndpointBindings {
    runs: BTreeMap<u32, Run>,
    count: usize,
}

/// The subsidiary LUs one host reaches, per endpoint.
#[derive(Clone, Default)]
pub struct HostBindings {
    endpoints: BTreeMap<u16, EndpointBindings>,
}

impl std::fmt::Debug for HostBindings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostBindings")
            .field("bindings", &self.len())
            .finish()
    }
}

impl crate::session::SubsidiaryLuns for HostBindings {
    fn contains(&self, key: u64) -> bool {
        match datapath::scsi::LunAddress::from_key(key) {
            Some(datapath::scsi::LunAddress::Subsidiary {
                endpoint,
                secondary,
            }) => self.get(endpoint, secondary).is_some(),
            _ => false,
        }
    }
}

impl HostBindings {
    /// The unit bound at `secondary` through `endpoint`.
    pub fn get(&self, endpoint: u16, secondary: u32) -> Option<&Arc<LogicalUnit>> {
        let run = self
            .endpoints
            .get(&endpoint)?
            .runs
            .get(&(secondary >> RUN_SHIFT))?;
        // IDs are handed out in order, so a run is usually dense from its first ID: then
        // the entry sits at `secondary - first`, one line read instead of a binary search
        // over 4 KiB (a cache miss per step when thousands of volumes take turns).
        let first = run.first()?.0;
        if let Some((id, unit)) = secondary
            .checked_sub(first)
            .and_then(|offset| run.get(offset as usize))
        {
            if *id == secondary {
                return Some(unit);
            }
        }
        run.binary_search_by_key(&secondary, |(id, _)| *id)
            .ok()
            .map(|at| &run[at].1)
    }

    /// Binds `unit` at `secondary` through `endpoint`; false (and nothing changes) when
    /// the ID is taken or outside 1 to 2^24 - 1.
    pub fn insert(&mut self, endpoint: u16, secondary: u32, unit: Arc<LogicalUnit>) -> bool {
        if secondary == 0 || u64::from(secondary) > EXTENDED_FLAT_SPACE_MAX {
            return false;
        }
        let bindings = self.endpoints.entry(endpoint).or_default();
        let run = Arc::make_mut(bindings.runs.entry(secondary >> RUN_SHIFT).or_default());
        match run.binary_search_by_key(&secondary, |(id, _)| *id) {
            Ok(_) => false,
            Err(at) => {
                run.insert(at, (secondary, unit));
                bindings.count += 1;
                true
            }
        }
    }

    /// Unbinds `secondary` of `endpoint`, returning its unit.
    pub fn remove(&mut self, endpoint: u16, secondary: u32) -> Option<Arc<LogicalUnit>> {
        let bindings = self.endpoints.get_mut(&endpoint)?;
        let key = secondary >> RUN_SHIFT;
        let run = bindings.runs.get_mut(&key)?;
        let at = run.binary_search_by_key(&secondary, |(id, _)| *id).ok()?;
        let (_, unit) = Arc::make_mut(run).remove(at);
        if run.is_empty() {
            bindings.runs.remove(&key);
        }
        bindings.count -= 1;
        if bindings.count == 0 {
            self.endpoints.remove(&endpoint);
        }
        Some(unit)
    }

    /// The lowest free secondary ID above the highest bound one, else the lowest gap;
    /// `None` when all 2^24 - 1 are taken.
    pub fn next_free(&self, endpoint: u16) -> Option<u32> {
        let Some(bindings) = self.endpoints.get(&endpoint) else {
            return Some(1);
        };
        let highest = bindings
            .runs
            .values()
            .next_back()
            .and_then(|run| run.last())
            .map_or(0, |(id, _)| *id);
        if u64::from(highest) < EXTENDED_FLAT_SPACE_MAX {
            return Some(highest + 1);
        }
        let mut expected = 1u32;
        for run in bindings.runs.values() {
            for (id, _) in run.iter() {
                if *id != expected {
                    return Some(expected);
                }
                expected += 1;
            }
        }
        None
    }

    /// Every binding through `endpoint` (all endpoints when `None`), ascending by
    /// endpoint, then secondary ID.
    pub fn for_each(&self, endpoint: Option<u16>, mut f: impl FnMut(u16, u32, &Arc<LogicalUnit>)) {
        for (e, bindings) in &self.endpoints {
            if endpoint.is_some_and(|wanted| wanted != *e) {
                continue;
            }
            for run in bindings.runs.values() {
                for (id, unit) in run.iter() {
                    f(*e, *id, unit);
                }
            }
        }
    }

    /// How many bindings through `endpoint`.
    pub fn count(&self, endpoint: u16) -> usize {
        self.endpoints.get(&endpoint).map_or(0, |b| b.count)
    }

    pub fn len(&self) -> usize {
        self.endpoints.values().map(|b| b.count).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::NullBackend;
    use crate::disk::LuConfig;
    use proptest::prelude::*;

    fn unit() -> Arc<LogicalUnit> {
        Arc::new(LogicalUnit::new(
            Box::new(NullBackend::new(1 << 20)),
            LuConfig::default(),
        ))
    }

    #[test]
    fn a_copy_shares_untouched_runs_and_the_original_stays_as_it_was() {
        let mut a = HostBindings::default();
        for id in 1..=1000 {
            assert!(a.insert(0, id, unit()));
        }
        let before = a.clone();
        assert!(a.insert(0, 1001, unit()));
        assert!(a.remove(0, 5).is_some());
        assert_eq!(before.len(), 1000);
        assert!(before.get(0, 5).is_some());
        assert!(a.get(0, 5).is_none());
        assert!(!a.insert(0, 7, unit()), "taken");
        assert!(!a.insert(0, 0, unit()), "0 is the endpoint itself");
        assert!(!a.insert(0, 1 << 24, unit()), "beyond extended flat space");
        // A run untouched by the changes is the same allocation in both.
        let run = |b: &HostBindings| Arc::as_ptr(&b.endpoints[&0].runs[&1]);
        assert_eq!(run(&a), run(&before));
        assert_eq!(a.next_free(0), Some(1002));
        assert_eq!(a.next_free(9), Some(1));
    }

    #[test]
    fn next_free_finds_a_gap_once_the_top_id_is_taken() {
        let mut a = HostBindings::default();
        assert!(a.insert(2, 1, unit()));
        assert!(a.insert(2, 0xff_ffff, unit()));
        assert_eq!(a.next_free(2), Some(2));
    }

    proptest! {
        /// The map agrees with a plain BTreeMap model under any sequence of inserts and
        /// removes, and iterates in order.
        #[test]
        fn agrees_with_a_model(ops in proptest::collection::vec((any::<bool>(), 0u16..3, 0u32..1200), 1..200)) {
            let mut map = HostBindings::default();
            let mut model = std::collections::BTreeMap::new();
            let u = unit();
            for (insert, e, s) in ops {
                if insert {
                    let fresh = s != 0 && !model.contains_key(&(e, s));
                    prop_assert_eq!(map.insert(e, s, Arc::clone(&u)), fresh);
                    if fresh { model.insert((e, s), ()); }
                } else {
                    prop_assert_eq!(map.remove(e, s).is_some(), model.remove(&(e, s)).is_some());
                }
            }
            let mut listed = Vec::new();
            map.for_each(None, |e, s, _| listed.push((e, s)));
            prop_assert_eq!(listed, model.keys().copied().collect::<Vec<_>>());
            prop_assert_eq!(map.len(), model.len());
            for e in 0..3 {
                prop_assert_eq!(map.count(e), model.keys().filter(|(x, _)| *x == e).count());
                // Lookups agree whether a run is dense (found by its offset) or has gaps.
                for s in 0..1300 {
                    prop_assert_eq!(map.get(e, s).is_some(), model.contains_key(&(e, s)), "{}:{}", e, s);
                }
            }
        }
    }
}
