//! `bind`, `unbind` and `binding_list`: pool volumes bound for a host through a protocol
//! endpoint (a LUN whose spec is `endpoint`), each a subsidiary LU at a secondary ID.
//!
//! A volume is one logical unit (one NAA, derived from its pool and volume ids) however
//! many hosts and endpoints it is bound through; it is opened at its first binding and
//! closed after its last. A bound volume cannot be deleted, nor attached as a plain LUN,
//! and an endpoint with bindings cannot be detached.
//!
//! A bind or unbind is applied to the model in place (a copy of the whole binding table
//! per change would cost O(bindings)), made durable (its journal record carries the
//! secondary IDs chosen, so a replay binds the same ones), and undone in place if that
//! fails; then published. The event loops see the host's new `HostBindings` (a cheap
//! persistent copy, `crate::conglomerate`) and each nexus of that host reports
//! REPORTED LUNS DATA HAS CHANGED once. An unbind answers after the commands still
//! running on a volume it closes have finished (the published configuration no longer
//! reaches it; the commands in flight hold it) and its data is flushed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use datapath::scsi::lun::{EXTENDED_FLAT_SPACE_MAX, SIMPLE_MAX};

use crate::backend::Pool;
use crate::conglomerate::HostBindings;
use crate::disk::conglomerate::Role;
use crate::disk::{LogicalUnit, LuConfig};

use super::rpc::{Bind, BindingFilter, ErrorCode, RpcError, Unbind};
use super::state::BindingState;
use super::{bad, hex, pace, volumes, Model};

/// The most volumes one `bind` or `unbind` takes (a request line is at most 64 KiB anyway).
pub const MAX_BATCH: usize = 10_000;

/// How long an unbind waits for the commands in flight on a volume it closes.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// A pool volume, by canonical pool path and name.
pub(super) type VolumeKey = (String, String);

/// A volume bound somewhere: its unit and where it is bound.
#[derive(Clone)]
pub(super) struct BoundVolume {
    pub unit: Arc<LogicalUnit>,
    /// (target, host, endpoint, secondary).
    pub places: Vec<(String, String, u16, u32)>,
    /// When its unit was opened (its first binding): what its statistics count from.
    pub opened_at: Instant,
}

pub(super) fn key(pool: &str, volume: &str) -> VolumeKey {
    (canonical_pool(pool), volume.to_string())
}

/// The bound volumes, by canonical pool path, then name. Looked up by `&str`: a map
/// keyed by `(String, String)` needed a key made (two allocations) for every lookup, and
/// a bind and its unbind look each volume up several times.
#[derive(Clone, Default)]
pub(super) struct BoundVolumes {
    pools: BTreeMap<String, BTreeMap<String, BoundVolume>>,
}

impl BoundVolumes {
    pub fn get(&self, pool: &str, volume: &str) -> Option<&BoundVolume> {
        self.pools.get(pool)?.get(volume)
    }

    pub fn get_key(&self, (pool, volume): &VolumeKey) -> Option<&BoundVolume> {
        self.get(pool, volume)
    }

    pub fn get_mut(&mut self, pool: &str, volume: &str) -> Option<&mut BoundVolume> {
        self.pools.get_mut(pool)?.get_mut(volume)
    }

    pub fn contains(&self, pool: &str, volume: &str) -> bool {
        self.get(pool, volume).is_some()
    }

    pub fn contains_key(&self, (pool, volume): &VolumeKey) -> bool {
        self.contains(pool, volume)
    }

    pub fn insert(&mut self, pool: &str, volume: String, bound: BoundVolume) {
        match self.pools.get_mut(pool) {
            Some(volumes) => {
                volumes.insert(volume, bound);
            }
            None => {
                self.pools
                    .insert(pool.to_string(), BTreeMap::from([(volume, bound)]));
            }
        }
    }

    pub fn remove(&mut self, pool: &str, volume: &str) -> Option<BoundVolume> {
        let volumes = self.pools.get_mut(pool)?;
        let removed = volumes.remove(volume);
        if volumes.is_empty() {
            self.pools.remove(pool);
        }
        removed
    }

    /// Every bound volume, ascending by (pool, name).
    pub fn iter(&self) -> impl Iterator<Item = ((&String, &String), &BoundVolume)> {
        self.pools.iter().flat_map(|(pool, volumes)| {
            volumes
                .iter()
                .map(move |(volume, bound)| ((pool, volume), bound))
        })
    }
}

/// The pool's path as volumes are keyed by. A `realpath` (a system call per component of
/// the path): a batch resolves it once, not per volume.
pub(super) fn canonical_pool(pool: &str) -> String {
    volumes::canonical(pool).display().to_string()
}

fn check_batch(method: &str, volumes: &[String]) -> Result<(), RpcError> {
    if volumes.is_empty() || volumes.len() > MAX_BATCH {
        return Err(bad(
            ErrorCode::InvalidParams,
            format!(
                "{method}: give 1 to {MAX_BATCH} volumes, not {}",
                volumes.len()
            ),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for v in volumes {
        if !seen.insert(v) {
            return Err(bad(
                ErrorCode::InvalidParams,
                format!("{method}: volume {v} is given twice"),
            ));
        }
    }
    Ok(())
}

/// Opens the pool a batch binds from, once for the whole batch (opening it by path
/// resolves the path and takes the registry of open pools: per volume, that was most of
/// a bind's cost).
fn open_pool(pool: &str) -> Result<Arc<Pool>, RpcError> {
    Pool::open(std::path::Path::new(pool))
        .map_err(|e| bad(ErrorCode::Backend, format!("bind: pool {pool}: {e}")))
}

/// Opens a volume of `pool` (at path `path`, as the call named it) as a subsidiary LU, with
/// the identity `LunSpec::open` gives a pool volume.
fn open_volume(pool: &Arc<Pool>, path: &str, volume: &str) -> Result<Arc<LogicalUnit>, RpcError> {
    let backend = pool.open_volume(volume, None).map_err(|e| {
        bad(
            ErrorCode::Backend,
            format!("bind: volume {volume} of pool {path}: {e}"),
        )
    })?;
    let identity = backend.identity();
    let config = LuConfig {
        role: Role::Subsidiary,
        ..LuConfig::with_identity(identity.serial, identity.naa_id)
    };
    Ok(Arc::new(LogicalUnit::new(Box::new(backend), config)))
}

/// What a checked bind will do.
pub(super) struct BindPlan {
    /// The call with every secondary ID filled in (what the journal records).
    pub resolved: Bind,
    /// Per volume of the call, in its order: the unit opened for it when it is bound
    /// nowhere yet.
    opened: Vec<Option<Arc<LogicalUnit>>>,
    /// The pool's canonical path (resolved once per call: a system call per component).
    canon: String,
}

/// Checks a bind against the model and chooses its secondary IDs; opens the volumes not
/// bound yet. Changes nothing.
pub(super) fn plan_bind(model: &Model, p: Bind) -> Result<BindPlan, RpcError> {
    check_batch("bind", &p.volumes)?;
    super::check_name("host", &p.host)?;
    let target = model
        .targets
        .get(&p.target)
        .ok_or_else(|| bad(ErrorCode::NotFound, format!("bind: no target {}", p.target)))?;
    let endpoint = u16::try_from(p.endpoint)
        .ok()
        .filter(|e| u64::from(*e) <= SIMPLE_MAX);
    let is_endpoint = endpoint
        .and_then(|e| target.luns.get(&u64::from(e)))
        .is_some_and(|lun| lun.unit.config().role == Role::Endpoint);
    let (Some(endpoint), true) = (endpoint, is_endpoint) else {
        return Err(bad(
            ErrorCode::InvalidParams,
            format!(
                "bind: LUN {} of {} is not a protocol endpoint (attach one with the backend \"endpoint\")",
                p.endpoint, p.target
            ),
        ));
    };
    let host = target.bindings.get(&p.host);
    let secondaries: Vec<u32> = match &p.secondaries {
        Some(given) => {
            if given.len() != p.volumes.len() {
                return Err(bad(
                    ErrorCode::InvalidParams,
                    format!(
                        "bind: {} secondary IDs for {} volumes",
                        given.len(),
                        p.volumes.len()
                    ),
                ));
            }
            let mut seen = std::collections::HashSet::new();
            for id in given {
                let free = host.is_none_or(|h| h.get(endpoint, *id as u32).is_none());
                if *id == 0 || *id > EXTENDED_FLAT_SPACE_MAX || !free || !seen.insert(id) {
                    return Err(bad(
                        ErrorCode::InvalidParams,
                        format!(
                            "bind: secondary ID {id} is taken, repeated or outside 1 to {EXTENDED_FLAT_SPACE_MAX}"
                        ),
                    ));
                }
            }
            given.iter().map(|id| *id as u32).collect()
        }
        None => {
            let first = host.map_or(Some(1), |h| h.next_free(endpoint));
            let last = first.and_then(|f| f.checked_add(p.volumes.len() as u32 - 1));
            match (first, last) {
                (Some(first), Some(last)) if u64::from(last) <= EXTENDED_FLAT_SPACE_MAX => {
                    (first..=last).collect()
                }
                _ => {
                    return Err(bad(
                        ErrorCode::Refused,
                        format!(
                            "bind: no room for {} more secondary IDs through endpoint {endpoint} for {}",
                            p.volumes.len(),
                            p.host
                        ),
                    ))
                }
            }
        }
    };
    let mut opened = Vec::with_capacity(p.volumes.len());
    let canon = canonical_pool(&p.pool);
    let attached = super::pool_attachments_at(model, std::path::Path::new(&canon));
    let mut pool = None;
    for volume in &p.volumes {
        pace::tick();
        if let Some((t, lun)) = attached.get(volume).and_then(|places| places.first()) {
            return Err(bad(
                ErrorCode::Refused,
                format!("bind: volume {volume} is attached as LUN {lun} of {t}; detach it first"),
            ));
        }
        match model.bound.get(&canon, volume) {
            Some(bound) => {
                if let Some(place) = bound
                    .places
                    .iter()
                    .find(|(t, h, e, _)| *t == p.target && *h == p.host && *e == endpoint)
                {
                    return Err(bad(
                        ErrorCode::AlreadyExists,
                        format!(
                            "bind: volume {volume} is bound for {} through endpoint {endpoint} already (secondary ID {})",
                            p.host, place.3
                        ),
                    ));
                }
                opened.push(None);
            }
            None => {
                if pool.is_none() {
                    pool = Some(open_pool(&p.pool)?);
                }
                let pool = pool.as_ref().expect("opened above");
                opened.push(Some(open_volume(pool, &p.pool, volume)?));
            }
        }
    }
    Ok(BindPlan {
        resolved: Bind {
            secondaries: Some(secondaries.iter().map(|s| u64::from(*s)).collect()),
            ..p
        },
        opened,
        canon,
    })
}

/// Applies a checked bind in place; returns the answer and the call as the journal
/// records it.
pub(super) fn apply_bind(
    model: &mut Model,
    plan: BindPlan,
    tpgt: u16,
) -> Result<(Value, Bind), RpcError> {
    let p = plan.resolved;
    let canon = plan.canon;
    let endpoint = p.endpoint as u16;
    let secondaries = p.secondaries.as_deref().unwrap_or_default();
    let mut rows = Vec::with_capacity(p.volumes.len());
    let mut units = Vec::with_capacity(p.volumes.len());
    let bound_volumes = model.bound_mut();
    for ((volume, secondary), opened) in p.volumes.iter().zip(secondaries).zip(plan.opened) {
        pace::tick();
        let secondary = *secondary as u32;
        let place = (p.target.clone(), p.host.clone(), endpoint, secondary);
        let unit = match opened {
            Some(unit) => {
                bound_volumes.insert(
                    &canon,
                    volume.clone(),
                    BoundVolume {
                        unit: Arc::clone(&unit),
                        places: vec![place],
                        opened_at: Instant::now(),
                    },
                );
                unit
            }
            None => {
                let bound = bound_volumes
                    .get_mut(&canon, volume)
                    .ok_or_else(|| bad(ErrorCode::Internal, "bind: volume not opened"))?;
                bound.places.push(place);
                Arc::clone(&bound.unit)
            }
        };
        rows.push(json!({
            "volume": volume,
            "secondary": secondary,
            "lun": lun_text(endpoint, secondary),
            "naa": hex(&unit.config().naa_id),
        }));
        units.push((secondary, unit));
    }
    let entry = model.target_mut(&p.target)?;
    let host = Arc::make_mut(entry.bindings.entry(p.host.clone()).or_default());
    for (secondary, unit) in units {
        host.insert(endpoint, secondary, unit);
    }
    entry.rebuild(&p.target, tpgt);
    let answer = json!({
        "target": p.target,
        "endpoint": endpoint,
        "host": p.host,
        "bindings": rows,
    });
    Ok((answer, p))
}

/// The LUN a host addresses a subsidiary by, as `iscsi-ctl` and URLs write it.
fn lun_text(endpoint: u16, secondary: u32) -> String {
    format!("{endpoint}:{secondary}")
}

/// What an unbind took from one volume: its name, the whole entry when that was its
/// last binding (its places as they were), and the (endpoint, secondary ID) removed.
type UndoEntry = (String, Option<BoundVolume>, Vec<(u16, u32)>);

/// What an unbind took out: the units that lost their last binding.
pub(super) struct Unbound {
    pub answer: Value,
    pub closed: Vec<Arc<LogicalUnit>>,
    /// To put back if the commit fails: the pool, target and host of the call, and per
    /// volume what it lost.
    undo: (String, String, String, Vec<UndoEntry>),
}

/// Applies an unbind in place (every volume must be bound for the host, through
/// `endpoint` when given); changes nothing when it fails.
pub(super) fn apply_unbind(model: &mut Model, p: &Unbind, tpgt: u16) -> Result<Unbound, RpcError> {
    check_batch("unbind", &p.volumes)?;
    if !model.targets.contains_key(&p.target) {
        return Err(bad(
            ErrorCode::NotFound,
            format!("unbind: no target {}", p.target),
        ));
    }
    // Check every volume first.
    let mut found = Vec::with_capacity(p.volumes.len());
    let canon = canonical_pool(&p.pool);
    for volume in &p.volumes {
        pace::tick();
        let places: Vec<(u16, u32)> = model
            .bound
            .get(&canon, volume)
            .map(|b| {
                b.places
                    .iter()
                    .filter(|(t, h, e, _)| {
                        *t == p.target
                            && *h == p.host
                            && p.endpoint.is_none_or(|want| u64::from(*e) == want)
                    })
                    .map(|(_, _, e, s)| (*e, *s))
                    .collect()
            })
            .unwrap_or_default();
        if places.is_empty() {
            return Err(bad(
                ErrorCode::NotFound,
                format!(
                    "unbind: volume {volume} is not bound for {} on {}",
                    p.host, p.target
                ),
            ));
        }
        found.push((volume, places));
    }
    let mut rows = Vec::with_capacity(found.len());
    let mut closed = Vec::new();
    let mut undo = Vec::with_capacity(found.len());
    let entry = model.target_mut(&p.target)?;
    let host = Arc::make_mut(entry.bindings.entry(p.host.clone()).or_default());
    for (volume, places) in &found {
        for (e, s) in places {
            host.remove(*e, *s);
            rows.push(json!({"volume": volume, "endpoint": e, "secondary": s}));
        }
    }
    if host.is_empty() {
        entry.bindings.remove(&p.host);
    }
    entry.rebuild(&p.target, tpgt);
    let bound = model.bound_mut();
    for (volume, places) in found {
        pace::tick();
        let Some(b) = bound.get_mut(&canon, volume) else {
            continue;
        };
        let removed = |(t, h, e, s): &(String, String, u16, u32)| {
            *t == p.target && *h == p.host && places.contains(&(*e, *s))
        };
        if b.places.iter().all(removed) {
            // Its last binding: the entry leaves whole (kept as it was, for an undo).
            if let Some(gone) = bound.remove(&canon, volume) {
                closed.push(Arc::clone(&gone.unit));
                undo.push((volume.clone(), Some(gone), places));
            }
        } else {
            b.places.retain(|place| !removed(place));
            undo.push((volume.clone(), None, places));
        }
    }
    Ok(Unbound {
        answer: json!({"target": p.target, "host": p.host, "unbound": rows}),
        closed,
        undo: (canon, p.target.clone(), p.host.clone(), undo),
    })
}

/// Puts back what [`apply_unbind`] took out (its commit failed).
pub(super) fn undo_unbind(model: &mut Model, unbound: Unbound, tpgt: u16) {
    let (pool, target, host, entries) = unbound.undo;
    let mut units = Vec::new();
    for (volume, whole, places) in entries {
        let bound = model.bound_mut();
        let unit = match whole {
            Some(whole) => {
                let unit = Arc::clone(&whole.unit);
                bound.insert(&pool, volume, whole);
                unit
            }
            None => {
                let Some(b) = bound.get_mut(&pool, &volume) else {
                    continue;
                };
                b.places.extend(
                    places
                        .iter()
                        .map(|(e, s)| (target.clone(), host.clone(), *e, *s)),
                );
                Arc::clone(&b.unit)
            }
        };
        units.extend(places.into_iter().map(|(e, s)| (e, s, Arc::clone(&unit))));
    }
    if let Ok(entry) = model.target_mut(&target) {
        let bindings = Arc::make_mut(entry.bindings.entry(host).or_default());
        for (e, s, unit) in units {
            bindings.insert(e, s, unit);
        }
        entry.rebuild(&target, tpgt);
    }
}

/// Undoes [`apply_bind`] (its commit failed): unbinds what it bound.
pub(super) fn undo_bind(model: &mut Model, bind: &Bind, tpgt: u16) {
    let unbind = Unbind {
        target: bind.target.clone(),
        host: bind.host.clone(),
        pool: bind.pool.clone(),
        volumes: bind.volumes.clone(),
        endpoint: Some(bind.endpoint),
    };
    if let Err(error) = apply_unbind(model, &unbind, tpgt) {
        tracing::error!(%error, "undoing a bind whose commit failed");
    }
}

/// Waits until no command runs on the units an unbind closed (the configuration that
/// reaches them is gone from every event loop), then flushes them: each pool once, since
/// a pool's flush covers all its volumes and walks all its stripes (a batch of 50
/// volumes flushed one by one walked them 50 times, beside the event loops' reads).
/// Returns the unbind's answer.
pub(super) fn drain(unbound: Unbound) -> Value {
    let Unbound {
        answer,
        closed,
        undo,
    } = unbound;
    // The undo record holds the units too.
    drop(undo);
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    for unit in &closed {
        while Arc::strong_count(unit) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
        if Arc::strong_count(unit) > 1 {
            tracing::warn!("unbind: commands still hold a volume after 15 s");
        }
    }
    let mut pools_flushed: Vec<Arc<Pool>> = Vec::new();
    for unit in &closed {
        let backend = unit.backend();
        if let Some(volume) = backend.pool_volume() {
            if pools_flushed.iter().any(|p| Arc::ptr_eq(p, volume.pool())) {
                continue;
            }
            pools_flushed.push(Arc::clone(volume.pool()));
        }
        if let Err(error) = backend.flush() {
            tracing::error!(%error, "flushing an unbound volume failed");
        }
    }
    // Closed one by one in slices (`pace`): a batch's units and their volumes' closes
    // were one piece of work as long as its apply.
    for unit in closed {
        drop(unit);
        pace::tick();
    }
    answer
}

/// A journal's bind, replayed: a volume deleted later (after the unbind the journal
/// also holds: a bound volume cannot be deleted) is skipped, as is its unbind.
pub(super) fn replay_bind(model: &mut Model, mut p: Bind, tpgt: u16) -> Result<(), RpcError> {
    let secondaries = p.secondaries.clone().unwrap_or_default();
    let (mut volumes, mut ids) = (Vec::new(), Vec::new());
    let canon = canonical_pool(&p.pool);
    let pool = Pool::open(std::path::Path::new(&p.pool)).ok();
    for (i, volume) in p.volumes.iter().enumerate() {
        let bound = model.bound.contains(&canon, volume);
        let exists = || {
            pool.as_ref()
                .is_some_and(|pool| pool.engine().volume(volume).is_some())
        };
        if bound || exists() {
            volumes.push(volume.clone());
            ids.extend(secondaries.get(i).copied());
        } else {
            tracing::info!(volume, "replay: a bound volume since deleted is skipped");
        }
    }
    if volumes.is_empty() {
        return Ok(());
    }
    p.volumes = volumes;
    p.secondaries = (!ids.is_empty()).then_some(ids);
    let plan = plan_bind(model, p)?;
    apply_bind(model, plan, tpgt).map(drop)
}

/// A journal's unbind, replayed (see [`replay_bind`]).
pub(super) fn replay_unbind(model: &mut Model, mut p: Unbind, tpgt: u16) -> Result<(), RpcError> {
    let canon = canonical_pool(&p.pool);
    p.volumes
        .retain(|volume| model.bound.contains(&canon, volume));
    if p.volumes.is_empty() {
        return Ok(());
    }
    apply_unbind(model, &p, tpgt).map(drop)
}

/// `binding_list`.
pub(super) fn list(model: &Model, filter: &BindingFilter) -> Value {
    let rows = match &filter.host {
        Some(host) => host_rows(model, filter.target.as_deref(), host),
        None => rows_where(model, |target, _| {
            filter.target.as_ref().is_none_or(|t| t == target)
        }),
    };
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|b| {
            json!({
                "target": b.target,
                "host": b.host,
                "endpoint": b.endpoint,
                "secondary": b.secondary,
                "lun": lun_text(b.endpoint as u16, b.secondary as u32),
                "pool": b.pool,
                "volume": b.volume,
            })
        })
        .collect();
    json!({ "bindings": rows })
}

/// The bindings of one host (on one target, or on all), sorted as [`rows`], from the
/// targets' per-host tables: O(the host's bindings), not O(every binding), so a host's
/// list costs nothing for the others' tens of thousands.
fn host_rows(model: &Model, target: Option<&str>, host: &str) -> Vec<BindingState> {
    let mut rows = Vec::new();
    for (name, entry) in &model.targets {
        if target.is_some_and(|t| t != name) {
            continue;
        }
        let Some(bindings) = entry.bindings.get(host) else {
            continue;
        };
        bindings.for_each(None, |endpoint, secondary, unit| {
            let Some(volume) = unit.backend().pool_volume() else {
                return;
            };
            let Some(name_of_volume) = volume.pool().engine().volume_name(volume.id()) else {
                return;
            };
            rows.push(BindingState {
                target: name.clone(),
                host: host.to_string(),
                endpoint: u64::from(endpoint),
                secondary: u64::from(secondary),
                pool: volume.pool().path().display().to_string(),
                volume: name_of_volume,
            });
        });
    }
    rows
}

/// Every binding, as the state file keeps them (sorted by target, host, endpoint, ID).
pub(super) fn rows(model: &Model) -> Vec<BindingState> {
    rows_where(model, |_, _| true)
}

/// The bindings whose (target, host) `wanted` accepts, sorted as [`rows`]. A filtered
/// list copies and sorts only its own rows: copying every binding first (4 strings
/// each) made a `binding_list` for a host with none cost as much as listing all of them.
fn rows_where(model: &Model, wanted: impl Fn(&str, &str) -> bool) -> Vec<BindingState> {
    let mut rows = Vec::new();
    for ((pool, volume), bound) in model.bound.iter() {
        for (target, host, endpoint, secondary) in &bound.places {
            if !wanted(target, host) {
                continue;
            }
            rows.push(BindingState {
                target: target.clone(),
                host: host.clone(),
                endpoint: u64::from(*endpoint),
                secondary: u64::from(*secondary),
                pool: pool.clone(),
                volume: volume.clone(),
            });
        }
    }
    rows.sort_by(|a, b| {
        (&a.target, &a.host, a.endpoint, a.secondary).cmp(&(
            &b.target,
            &b.host,
            b.endpoint,
            b.secondary,
        ))
    });
    rows
}

/// Restores the bindings of a snapshot (grouped into one bind per target, host, endpoint
/// and pool).
pub(super) fn restore(
    model: &mut Model,
    rows: Vec<BindingState>,
    tpgt: u16,
) -> Result<(), RpcError> {
    /// (target, host, endpoint, pool) → (volume, secondary ID).
    type Groups = BTreeMap<(String, String, u64, String), Vec<(String, u64)>>;
    let mut groups = Groups::new();
    for row in rows {
        groups
            .entry((row.target, row.host, row.endpoint, row.pool))
            .or_default()
            .push((row.volume, row.secondary));
    }
    for ((target, host, endpoint, pool), items) in groups {
        for chunk in items.chunks(MAX_BATCH) {
            let bind = Bind {
                target: target.clone(),
                endpoint,
                host: host.clone(),
                pool: pool.clone(),
                volumes: chunk.iter().map(|(v, _)| v.clone()).collect(),
                secondaries: Some(chunk.iter().map(|(_, s)| *s).collect()),
            };
            replay_bind(model, bind, tpgt)?;
        }
    }
    Ok(())
}

/// The bindings of a host on a target, for the executor (`TargetEntry::rebuild`).
pub(super) type HostTable = BTreeMap<String, Arc<HostBindings>>;

#[cfg(test)]
mod tests {
    use super::super::rpc::{Call, LunAttach, NewLun, TargetCreate};
    use super::super::state::StateDir;
    use super::super::{volumes, Control};
    use super::*;
    use crate::disk::Nexus;
    use datapath::scsi::LunAddress;

    const HOST: &str = "iqn.2026-01.host:a";
    const OTHER: &str = "iqn.2026-01.host:b";
    const TARGET: &str = "iqn.2026-01.t:pe";

    fn key(e: u16, s: u32) -> u64 {
        LunAddress::Subsidiary {
            endpoint: e,
            secondary: s,
        }
        .key()
    }

    fn start(state: &std::path::Path) -> Control {
        let control = Control::new(Some(StateDir::open(state).unwrap()), 1);
        control.set_volumes(Arc::new(volumes::PoolVolumes::new()));
        control.load(&[]).unwrap();
        control
    }

    fn run(
        control: &Control,
        host: &str,
        lun: u64,
        cdb: &[u8],
        len: u32,
    ) -> crate::session::CommandResult {
        let live = control.live_targets();
        let target = live.iter().find(|t| t.name == TARGET).unwrap();
        let nexus = Nexus {
            initiator_name: host,
            isid: [0; 6],
        };
        target.executor_for(host).execute(nexus, lun, cdb, &[], len)
    }

    fn report_luns(select: u8) -> [u8; 12] {
        let mut cdb = [0u8; 12];
        cdb[0] = 0xa0;
        cdb[2] = select;
        cdb[6..10].copy_from_slice(&4096u32.to_be_bytes());
        cdb
    }

    const READ10: [u8; 10] = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];

    fn asc(result: &crate::session::CommandResult) -> (u8, u8, u8) {
        (result.sense[2], result.sense[12], result.sense[13])
    }

    #[test]
    fn bind_list_refuse_restart_and_unbind() {
        let dir = std::env::temp_dir().join(format!("gateway-bindings-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pool = dir.join("pool.img");
        drop(crate::backend::Pool::create(&pool, 64 << 20).unwrap());
        let p = pool.display().to_string();
        let state = dir.join("state");
        let control = start(&state);
        for v in ["v1", "v2", "v3"] {
            control
                .handle(Call::Volume {
                    method: "volume_create".into(),
                    params: json!({"pool": p, "name": v, "size": "4M"}),
                })
                .unwrap();
        }
        control
            .handle(Call::TargetCreate(TargetCreate {
                name: TARGET.into(),
                alias: None,
                allowed_initiators: None,
                chap: None,
                mutual_chap: None,
                luns: vec![
                    NewLun {
                        lun: 0,
                        backend: "endpoint".into(),
                    },
                    NewLun {
                        lun: 1,
                        backend: "ram:1M".into(),
                    },
                ],
            }))
            .unwrap();
        let bind = |volumes: &[&str], endpoint: u64| {
            control.handle(Call::Bind(Bind {
                target: TARGET.into(),
                endpoint,
                host: HOST.into(),
                pool: p.clone(),
                volumes: volumes.iter().map(|v| v.to_string()).collect(),
                secondaries: None,
            }))
        };
        let answer = bind(&["v1", "v2"], 0).unwrap();
        assert_eq!(answer["bindings"][0]["secondary"], 1, "{answer}");
        assert_eq!(answer["bindings"][1]["lun"], "0:2", "{answer}");
        let naa = answer["bindings"][0]["naa"].clone();

        // The host sees the endpoint and both volumes through it; another host nothing.
        let listed = run(&control, HOST, 0, &report_luns(0x12), 4096);
        assert_eq!(listed.status, 0);
        assert_eq!(&listed.data_in[..4], &24u32.to_be_bytes());
        assert_eq!(&listed.data_in[16..24], &[0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(run(&control, HOST, key(0, 2), &READ10, 512).status, 0);
        let other = run(&control, OTHER, key(0, 2), &READ10, 512);
        assert_eq!(asc(&other), (5, 0x25, 0), "not bound for that host");
        let listed = run(&control, OTHER, 0, &report_luns(0x12), 4096);
        assert_eq!(
            &listed.data_in[..4],
            &8u32.to_be_bytes(),
            "the endpoint alone"
        );
        // The endpoint itself refuses media access.
        assert_eq!(asc(&run(&control, HOST, 0, &READ10, 512)), (5, 0x20, 0));

        // Refusals name the problem.
        let e = bind(&["v1"], 0).unwrap_err();
        assert_eq!(e.code, ErrorCode::AlreadyExists, "{}", e.message);
        let e = control
            .handle(Call::LunAttach(LunAttach {
                target: TARGET.into(),
                lun: 1024,
                backend: "endpoint".into(),
            }))
            .unwrap_err();
        assert!(e.message.contains("below LUN 1024"), "{}", e.message);
        let e = bind(&["v3"], 1).unwrap_err();
        assert!(
            e.message.contains("not a protocol endpoint"),
            "{}",
            e.message
        );
        let e = bind(&["v3", "v3"], 0).unwrap_err();
        assert!(e.message.contains("twice"), "{}", e.message);
        let e = bind(&["nope"], 0).unwrap_err();
        assert_eq!(e.code, ErrorCode::Backend, "{}", e.message);
        let e = control
            .handle(Call::Volume {
                method: "volume_delete".into(),
                params: json!({"pool": p, "name": "v1"}),
            })
            .unwrap_err();
        assert!(e.message.contains("bound for"), "{}", e.message);
        let e = control
            .handle(Call::LunDetach(super::super::rpc::LunRef {
                target: TARGET.into(),
                lun: 0,
            }))
            .unwrap_err();
        assert!(e.message.contains("unbind them first"), "{}", e.message);
        let e = control
            .handle(Call::LunAttach(LunAttach {
                target: TARGET.into(),
                lun: 5,
                backend: format!("pool:{p},volume=v2"),
            }))
            .unwrap_err();
        assert!(
            e.message.contains("bound through an endpoint"),
            "{}",
            e.message
        );
        drop(control);

        // A restart (journal replay) brings back the same IDs and identities.
        let control = start(&state);
        let list = control
            .handle(Call::BindingList(BindingFilter::default()))
            .unwrap();
        assert_eq!(list["bindings"].as_array().unwrap().len(), 2, "{list}");
        let inquiry = [0x12, 1, 0x83, 0, 255, 0];
        let vpd = run(&control, HOST, key(0, 1), &inquiry, 255);
        let naa_text: String = vpd.data_in[8..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(Value::String(naa_text), naa);

        // Unbind: the volume is gone for the host, and can be deleted.
        control
            .handle(Call::Unbind(Unbind {
                target: TARGET.into(),
                host: HOST.into(),
                pool: p.clone(),
                volumes: vec!["v1".into()],
                endpoint: None,
            }))
            .unwrap();
        assert_eq!(
            asc(&run(&control, HOST, key(0, 1), &READ10, 512)),
            (5, 0x25, 0)
        );
        assert_eq!(run(&control, HOST, key(0, 2), &READ10, 512).status, 0);
        control
            .handle(Call::Volume {
                method: "volume_delete".into(),
                params: json!({"pool": p, "name": "v1"}),
            })
            .unwrap();
        drop(control);
        let control = start(&state);
        let list = control
            .handle(Call::BindingList(BindingFilter {
                target: None,
                host: Some(HOST.into()),
            }))
            .unwrap();
        assert_eq!(list["bindings"].as_array().unwrap().len(), 1, "{list}");
        assert_eq!(list["bindings"][0]["volume"], "v2");
        drop(control);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
