//! The control plane's migration and changed-block tracking methods (`migrate_*`,
//! `changes_*`), over `crate::migration` and `crate::changes`.
//!
//! Both work by swapping the LUN's logical unit for one over another backend
//! ([`LogicalUnit::over_backend`]): the same identity, reservations and unit id, so the
//! event loops pick it up at their next turn (the usual published snapshot) and hosts see
//! no unit attention and keep their sessions. Starting a migration records it durably in
//! the state directory before the LUN changes; a restart resumes it from its record
//! ([`Control::resume`]). The commit writes the LUN's new spec (the destination's, the
//! identity kept) as a state snapshot before it answers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use super::rpc::{ErrorCode, RpcError};
use super::sanitize_fence::fence_lun;
use super::{bad, Control, Inner};
use crate::backend::{Backend, IscsiBackend, LunSpec, Storage};
use crate::changes::{ChangeId, ChangeTracker, RegionLog, Tracked, DEFAULT_CHUNK_BYTES};
use crate::disk::LogicalUnit;
use crate::migration::{
    Copier, CopySettings, Migration, Mirror, Mode, Phase, Record, Shared, SharedBackend,
    UnitBackend, DIRTY_LOG_REGION_BYTES, REGION_BYTES,
};

/// A migration destination on another array gives up logging in again after this, so a
/// destination that is gone fails the migration within a second.
const DESTINATION_RECONNECT_BUDGET: Duration = Duration::from_millis(400);
/// How long a unit being replaced may take to finish its writes on a ring.
const DRAIN_LIMIT: Duration = Duration::from_secs(15);

/// The migrations in progress, by (target, LUN).
#[derive(Default)]
pub(super) struct Migrations {
    active: Mutex<HashMap<(String, u64), Migration>>,
    /// Migrations whose destination failed, for the watcher to end (`fail_back`).
    failures: Arc<FailureQueue>,
    /// The last status of migrations that ended `failed`, until the LUN migrates again
    /// or an operator acknowledges it (cancel, rollback).
    ended: Mutex<HashMap<(String, u64), Value>>,
}

impl Migrations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u64), Migration>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ended(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u64), Value>> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The LUNs whose migration failed, told from the thread that saw it (an event loop, the
/// copy) without blocking it, and taken by the watcher thread.
#[derive(Default)]
struct FailureQueue {
    keys: Mutex<Vec<(String, u64)>>,
    told: std::sync::Condvar,
}

impl FailureQueue {
    fn tell(&self, key: (String, u64)) {
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(key);
        self.told.notify_one();
    }

    /// The keys told so far, after waiting at most `limit` for one.
    fn take(&self, limit: Duration) -> Vec<(String, u64)> {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let (mut keys, _) = self
            .told
            .wait_timeout_while(keys, limit, |k| k.is_empty())
            .unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *keys)
    }
}

/// How often the watcher looks whether its control plane is still there.
const WATCH_TICK: Duration = Duration::from_millis(500);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LunParams {
    target: String,
    lun: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartParams {
    target: String,
    lun: u64,
    to: String,
    #[serde(default)]
    mode: Option<String>,
    /// Bytes per second, a number or text with a K/M/G suffix.
    #[serde(default)]
    rate: Option<Value>,
    #[serde(default)]
    stun_budget_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompleteParams {
    target: String,
    lun: u64,
    #[serde(default)]
    commit: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusParams {
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    lun: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrackParams {
    target: String,
    lun: u64,
    /// Bytes per chunk of the map (a power of two, 4 KiB to 64 MiB); 64 KiB by default.
    #[serde(default)]
    chunk: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryParams {
    target: String,
    lun: u64,
    /// A change ID (`EPOCH-GENERATION`); every change of the epoch when left out.
    #[serde(default)]
    since: Option<String>,
}

fn typed<T: serde::de::DeserializeOwned>(method: &str, params: Value) -> Result<T, RpcError> {
    serde_json::from_value(params)
        .map_err(|e| bad(ErrorCode::InvalidParams, format!("{method}: {e}")))
}

fn size_param(method: &str, what: &str, value: &Value) -> Result<u64, RpcError> {
    let invalid = || {
        bad(
            ErrorCode::InvalidParams,
            format!("{method}: {what} {value}: expected bytes, a number or text like 100M"),
        )
    };
    match value {
        Value::Number(n) => n.as_u64().ok_or_else(invalid),
        Value::String(text) => crate::backend::parse_size(text).map_err(|_| invalid()),
        _ => Err(invalid()),
    }
}

impl Control {
    fn state_dir(inner: &Inner) -> Option<PathBuf> {
        inner
            .state
            .as_ref()
            .and_then(|dir| dir.path().parent().map(Path::to_path_buf))
    }

    /// A `migrate_*` or `changes_*` call.
    pub(super) fn migration_call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        match method {
            "migrate_start" => self.migrate_start(typed(method, params)?),
            "migrate_status" => {
                let p: StatusParams = typed(method, params)?;
                Ok(self.migrate_status(p))
            }
            "migrate_complete" => self.migrate_complete(typed(method, params)?),
            "migrate_commit" => {
                let p: LunParams = typed(method, params)?;
                self.migrate_commit(&p.target, p.lun)
            }
            "migrate_cancel" | "migrate_rollback" => {
                let p: LunParams = typed(method, params)?;
                self.migrate_back(method, &p.target, p.lun)
            }
            "changes_track" => self.changes_track(typed(method, params)?),
            "changes_query" => self.changes_query(typed(method, params)?),
            other => Err(bad(
                ErrorCode::MethodNotFound,
                format!("no method {other:?}"),
            )),
        }
    }

    /// The unit LUN `lun` of `target` runs on now.
    fn unit_of(inner: &Inner, target: &str, lun: u64) -> Result<Arc<LogicalUnit>, RpcError> {
        let entry = inner
            .model
            .targets
            .get(target)
            .ok_or_else(|| bad(ErrorCode::NotFound, format!("no target {target}")))?;
        entry
            .luns
            .get(&lun)
            .map(|e| Arc::clone(&e.unit))
            .ok_or_else(|| bad(ErrorCode::NotFound, format!("no LUN {lun} in {target}")))
    }

    /// Makes `unit` the LUN's unit (and `spec` its spec, durably, when given) and
    /// publishes it to the event loops.
    fn swap_unit(
        &self,
        inner: &mut Inner,
        target: &str,
        lun: u64,
        unit: Arc<LogicalUnit>,
        spec: Option<String>,
    ) -> Result<(), RpcError> {
        let tpgt = self.portal_group_tag;
        let mut next = inner.model.clone();
        let entry = next.target_mut(target)?;
        let lun_entry = entry
            .luns
            .get_mut(&lun)
            .ok_or_else(|| bad(ErrorCode::NotFound, format!("no LUN {lun} in {target}")))?;
        lun_entry.unit = unit;
        let respec = spec.is_some();
        if let Some(spec) = spec {
            lun_entry.spec = spec;
        }
        entry.rebuild(target, tpgt);
        if respec {
            next.generation += 1;
            if let Some(dir) = inner.state.as_mut() {
                dir.snapshot(&next.to_state()).map_err(|e| {
                    bad(
                        ErrorCode::Persist,
                        format!("LUN {lun} of {target}: the new spec was not recorded: {e}"),
                    )
                })?;
            }
        }
        self.publish_locked(inner, &next)?;
        inner.model = next;
        Ok(())
    }

    /// Opens a migration's destination: an `iscsi:` one with a short reconnect budget.
    fn open_destination(to: &str, unit: &LogicalUnit) -> Result<Arc<dyn Backend>, RpcError> {
        let spec = LunSpec::parse(to)
            .map_err(|e| bad(ErrorCode::InvalidParams, format!("destination {to:?}: {e}")))?;
        let backend: Box<dyn Backend> = match &spec.storage {
            Storage::Iscsi { url } => Box::new(
                IscsiBackend::open_with(url, None, DESTINATION_RECONNECT_BUDGET)
                    .map_err(|e| bad(ErrorCode::Backend, format!("destination {to}: {e}")))?,
            ),
            _ => {
                spec.open()
                    .map_err(|e| bad(ErrorCode::Backend, format!("destination {to}: {e}")))?
                    .0
            }
        };
        let size = unit.blocks() * u64::from(unit.block_size());
        if backend.size_bytes() < size {
            return Err(bad(
                ErrorCode::Refused,
                format!(
                    "destination {to} has {} bytes, the LUN {size}: give a destination at least \
                     as large",
                    backend.size_bytes()
                ),
            ));
        }
        let block = backend.logical_block_bytes().unwrap_or(512);
        if block != unit.block_size() {
            return Err(bad(
                ErrorCode::Refused,
                format!(
                    "destination {to} has {block}-byte blocks, the LUN {}",
                    unit.block_size()
                ),
            ));
        }
        Ok(Arc::from(backend))
    }

    fn migrate_start(&self, p: StartParams) -> Result<Value, RpcError> {
        let mode = match p.mode.as_deref() {
            None | Some("mirror") => Mode::Mirror,
            Some("dbt") => Mode::Dbt,
            Some(other) => {
                return Err(bad(
                    ErrorCode::InvalidParams,
                    format!("migrate_start: mode {other:?}: expected mirror or dbt"),
                ))
            }
        };
        let rate = p
            .rate
            .as_ref()
            .map(|r| size_param("migrate_start", "rate", r))
            .transpose()?;
        if rate == Some(0) {
            return Err(bad(
                ErrorCode::InvalidParams,
                "migrate_start: rate must be above zero bytes per second",
            ));
        }
        let mut inner = self.lock();
        let key = (p.target.clone(), p.lun);
        if self.migrations.lock().contains_key(&key) {
            return Err(bad(
                ErrorCode::AlreadyExists,
                format!(
                    "LUN {} of {} is migrating already: see migrate_status; cancel it first",
                    p.lun, p.target
                ),
            ));
        }
        let record = Record {
            target: p.target,
            lun: p.lun,
            to: p.to,
            mode,
            rate_bytes_per_second: rate,
            stun_budget_ms: p.stun_budget_ms.unwrap_or(100),
            cursor_regions: 0,
            phase: Phase::Copying.name().into(),
            error: None,
        };
        // Held until the old unit drained (in `start`): no SANITIZE writes only the source.
        let _fences = fence_lun("migrate_start", &inner.model, &record.target, record.lun)?;
        if let Some(dir) = Self::state_dir(&inner) {
            // A fresh migration: no dirty log (or failed record) of an earlier one counts.
            let _ = record.remove(&dir);
        }
        let status = self.start(&mut inner, record, Phase::Copying)?;
        self.migrations.ended().remove(&key);
        Ok(status)
    }

    /// Starts (or resumes) the migration `record` describes.
    fn start(&self, inner: &mut Inner, record: Record, phase: Phase) -> Result<Value, RpcError> {
        let unit = Self::unit_of(inner, &record.target, record.lun)?;
        let spec = inner.model.targets[&record.target].luns[&record.lun]
            .spec
            .clone();
        let fresh_each_time = record.to.starts_with("ram:") || record.to.starts_with("null:");
        if spec == record.to && !fresh_each_time {
            return Err(bad(
                ErrorCode::Refused,
                format!(
                    "LUN {} of {} is on {spec} already",
                    record.lun, record.target
                ),
            ));
        }
        let dest = Self::open_destination(&record.to, &unit)?;
        let size = unit.blocks() * u64::from(unit.block_size());
        let regions = size.div_ceil(REGION_BYTES);
        let state_dir = Self::state_dir(inner);
        // DBT keeps the regions host writes touched in a durable log (with a state
        // directory): resumed, it goes on from its cursor and copies those again.
        let dirty_log = match (record.mode, &state_dir) {
            (Mode::Dbt, Some(dir)) => {
                std::fs::create_dir_all(crate::migration::record::dir(dir)).ok();
                let path = record.dirty_log_path(dir);
                Some(
                    RegionLog::open(&path, size, DIRTY_LOG_REGION_BYTES).map_err(|e| {
                        bad(
                            ErrorCode::Persist,
                            format!("the migration's dirty log {}: {e}", path.display()),
                        )
                    })?,
                )
            }
            _ => None,
        };
        let cursor = match (record.mode, phase) {
            (_, Phase::Ready | Phase::Switched) => regions,
            (Mode::Dbt, _) if dirty_log.is_none() => 0,
            _ => record.cursor_regions.min(regions),
        };
        let shared = Arc::new(Shared::new(record.mode, size, cursor, phase));
        if let Some((log, held)) = dirty_log {
            if !held.is_empty() {
                tracing::info!(regions = held.len(), "DBT migration resumed: the regions written before the restart are copied again");
            }
            shared.set_dirty_log(log, held);
        }
        let failures = Arc::clone(&self.migrations.failures);
        let key = (record.target.clone(), record.lun);
        shared.set_on_fail(Box::new(move || failures.tell(key.clone())));
        let source: Arc<dyn Backend> = Arc::new(UnitBackend(Arc::clone(&unit)));
        let mirror = Mirror::new(Arc::clone(&source), Arc::clone(&dest), Arc::clone(&shared));
        if let Some(dir) = &state_dir {
            let mut saved = record.clone();
            saved.cursor_regions = cursor;
            saved.phase = phase.name().into();
            saved.save(dir).map_err(|e| {
                bad(
                    ErrorCode::Persist,
                    format!("the migration was not started: its record was not written: {e}"),
                )
            })?;
        }
        let migrating = Arc::new(unit.over_backend(Box::new(mirror)));
        if let Err(error) = self.swap_unit(inner, &record.target, record.lun, migrating, None) {
            if let Some(dir) = &state_dir {
                let _ = record.remove(dir);
            }
            return Err(error);
        }
        // Writes the old unit still runs finish before the copy reads their regions.
        unit.drain_writes();
        let drain_started = Instant::now();
        while !(unit.ring_writes_idle() && unit.blocking_idle())
            && drain_started.elapsed() < DRAIN_LIMIT
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        let settings = CopySettings {
            rate_bytes_per_second: record.rate_bytes_per_second,
            stun_budget: Duration::from_millis(record.stun_budget_ms),
        };
        let progress_record = record.clone();
        let progress: Box<dyn Fn(u64, Phase) + Send> = Box::new(move |cursor, phase| {
            if let Some(dir) = &state_dir {
                let mut saved = progress_record.clone();
                saved.cursor_regions = cursor;
                saved.phase = phase.name().into();
                if let Err(error) = saved.save(dir) {
                    tracing::error!(%error, "migration progress not recorded");
                }
            }
        });
        let copier = Copier {
            source,
            dest: Arc::clone(&dest),
            shared: Arc::clone(&shared),
            settings,
            progress,
        };
        let thread = (phase == Phase::Copying)
            .then(|| {
                std::thread::Builder::new()
                    .name("migration-copy".into())
                    .spawn(move || copier.run())
            })
            .transpose()
            .map_err(|e| bad(ErrorCode::Internal, format!("starting the copy: {e}")))?;
        tracing::info!(target = %record.target, lun = record.lun, to = %record.to, mode = ?record.mode, phase = phase.name(), "migration started");
        let migration = Migration {
            to: record.to.clone(),
            settings,
            source_unit: unit,
            dest,
            shared,
            copier: thread,
        };
        let status = migration.status();
        self.migrations
            .lock()
            .insert((record.target, record.lun), migration);
        Ok(status)
    }

    fn migrate_status(&self, p: StatusParams) -> Value {
        let active = self.migrations.lock();
        let mut rows: Vec<Value> = active
            .iter()
            .filter(|((t, l), _)| {
                p.target.as_ref().is_none_or(|x| x == t) && p.lun.is_none_or(|x| x == *l)
            })
            .map(|((t, l), m)| {
                let mut status = m.status();
                status["target"] = json!(t);
                status["lun"] = json!(l);
                status
            })
            .collect();
        rows.extend(
            self.migrations
                .ended()
                .iter()
                .filter(|((t, l), _)| {
                    p.target.as_ref().is_none_or(|x| x == t) && p.lun.is_none_or(|x| x == *l)
                })
                .map(|(_, status)| status.clone()),
        );
        rows.sort_by_key(|r| (r["target"].to_string(), r["lun"].as_u64()));
        json!({ "migrations": rows })
    }

    fn migrate_complete(&self, p: CompleteParams) -> Result<Value, RpcError> {
        {
            let inner = self.lock();
            let _fences = fence_lun("migrate_complete", &inner.model, &p.target, p.lun)?;
            let active = self.migrations.lock();
            let migration = active.get(&(p.target.clone(), p.lun)).ok_or_else(|| {
                bad(
                    ErrorCode::NotFound,
                    format!("LUN {} of {} is not migrating", p.lun, p.target),
                )
            })?;
            let shared = &migration.shared;
            if shared.phase() != Phase::Switched {
                if !shared.change_phase(Phase::Ready, Phase::Switched) {
                    return Err(bad(
                        ErrorCode::Refused,
                        format!(
                            "migrate_complete: the migration is {}, not ready: {}",
                            shared.phase().name(),
                            match shared.phase() {
                                Phase::Copying => "wait until the copy is done (migrate_status)",
                                _ => "cancel it (the source has every write)",
                            }
                        ),
                    ));
                }
                tracing::info!(target = %p.target, lun = p.lun, "migration switched: reads from the destination");
                if let Some(dir) = Self::state_dir(&inner) {
                    let record = Record {
                        target: p.target.clone(),
                        lun: p.lun,
                        to: migration.to.clone(),
                        mode: shared.mode,
                        rate_bytes_per_second: migration.settings.rate_bytes_per_second,
                        stun_budget_ms: migration.settings.stun_budget.as_millis() as u64,
                        cursor_regions: shared.regions(),
                        phase: Phase::Switched.name().into(),
                        error: None,
                    };
                    record.save(&dir).map_err(|e| {
                        bad(ErrorCode::Persist, format!("switch not recorded: {e}"))
                    })?;
                }
            }
        }
        if p.commit {
            return self.migrate_commit(&p.target, p.lun);
        }
        Ok(self.migrate_status(StatusParams {
            target: Some(p.target),
            lun: Some(p.lun),
        }))
    }

    /// Commit: the LUN runs on the destination alone; its spec is the destination's.
    fn migrate_commit(&self, target: &str, lun: u64) -> Result<Value, RpcError> {
        let mut inner = self.lock();
        let _fences = fence_lun("migrate_commit", &inner.model, target, lun)?;
        let key = (target.to_string(), lun);
        let mut active = self.migrations.lock();
        let migration = active.get(&key).ok_or_else(|| {
            bad(
                ErrorCode::NotFound,
                format!("LUN {lun} of {target} is not migrating"),
            )
        })?;
        if migration.shared.phase() != Phase::Switched {
            return Err(bad(
                ErrorCode::Refused,
                format!(
                    "migrate_commit: the migration is {}, not switched: complete it first",
                    migration.shared.phase().name()
                ),
            ));
        }
        let dest: Box<dyn Backend> = match migration.source_unit.backend().change_tracker() {
            Some(tracker) => Box::new(Tracked::new(
                Arc::clone(&migration.dest),
                Arc::clone(tracker),
            )),
            None => Box::new(SharedBackend(Arc::clone(&migration.dest))),
        };
        let unit = Arc::new(migration.source_unit.over_backend(dest));
        let to = migration.to.clone();
        self.swap_unit(&mut inner, target, lun, unit, Some(to.clone()))?;
        let mut migration = active.remove(&key).expect("checked above");
        drop(active);
        if let Some(dir) = Self::state_dir(&inner) {
            let record = Record {
                target: target.to_string(),
                lun,
                to: to.clone(),
                mode: migration.shared.mode,
                rate_bytes_per_second: None,
                stun_budget_ms: 0,
                cursor_regions: 0,
                phase: String::new(),
                error: None,
            };
            if let Err(error) = record.remove(&dir) {
                tracing::error!(%error, "migration record not removed after the commit");
            }
        }
        if let Some(thread) = migration.copier.take() {
            let _ = thread.join();
        }
        if let Err(error) = migration.source_unit.backend().flush() {
            tracing::warn!(%error, "flushing the source after the commit failed");
        }
        tracing::info!(target, lun, to = %to, "migration committed");
        let mut status = migration.status();
        status["state"] = json!("committed");
        // The source's memory goes back off the I/O path (`retire`).
        super::retire::unit(migration.source_unit);
        Ok(status)
    }

    /// Cancel or roll back: the LUN runs on its source again (which has every write).
    fn migrate_back(&self, method: &str, target: &str, lun: u64) -> Result<Value, RpcError> {
        let mut inner = self.lock();
        let key = (target.to_string(), lun);
        let mut active = self.migrations.lock();
        if !active.contains_key(&key) {
            // A failed migration already ended by itself (the LUN is on its source):
            // cancel and rollback acknowledge it.
            if let Some(mut status) = self.migrations.ended().remove(&key) {
                drop(active);
                if let Some(dir) = Self::state_dir(&inner) {
                    let _ = Self::record_of(target, lun, &status).remove(&dir);
                }
                status["was"] = json!("failed");
                status["state"] = json!(if method == "migrate_cancel" {
                    "cancelled"
                } else {
                    "rolled-back"
                });
                return Ok(status);
            }
        }
        let migration = active.get(&key).ok_or_else(|| {
            bad(
                ErrorCode::NotFound,
                format!("{method}: LUN {lun} of {target} is not migrating"),
            )
        })?;
        let _fences = fence_lun(method, &inner.model, target, lun)?;
        let before = migration.shared.phase();
        migration.shared.set_phase(Phase::Cancelled);
        let unit = Arc::clone(&migration.source_unit);
        if let Err(error) = self.swap_unit(&mut inner, target, lun, unit, None) {
            migration.shared.set_phase(before);
            return Err(error);
        }
        let mut migration = active.remove(&key).expect("checked above");
        drop(active);
        if let Some(thread) = migration.copier.take() {
            let _ = thread.join();
        }
        if let Some(dir) = Self::state_dir(&inner) {
            let record = Record {
                target: target.to_string(),
                lun,
                to: migration.to.clone(),
                mode: migration.shared.mode,
                rate_bytes_per_second: None,
                stun_budget_ms: 0,
                cursor_regions: 0,
                phase: String::new(),
                error: None,
            };
            if let Err(error) = record.remove(&dir) {
                tracing::error!(%error, "migration record not removed");
            }
        }
        tracing::info!(
            target,
            lun,
            method,
            was = before.name(),
            "migration ended; the LUN runs on its source"
        );
        let mut status = migration.status();
        status["state"] = json!(if method == "migrate_cancel" {
            "cancelled"
        } else {
            "rolled-back"
        });
        status["was"] = json!(before.name());
        super::retire::backend(migration.dest);
        Ok(status)
    }

    /// Starts the thread that ends failed migrations by themselves ([`Control::fail_back`]);
    /// it stops once the control plane is dropped.
    pub fn watch_migrations(self: &Arc<Self>) -> std::io::Result<()> {
        let control = Arc::downgrade(self);
        let failures = Arc::clone(&self.migrations.failures);
        std::thread::Builder::new()
            .name("migration-watch".into())
            .spawn(move || loop {
                let keys = failures.take(WATCH_TICK);
                let Some(control) = control.upgrade() else {
                    return;
                };
                for (target, lun) in keys {
                    control.fail_back(&target, lun);
                }
            })
            .map(|_| ())
    }

    /// A failed migration ends by itself: the LUN runs on its source again as a plain LUN
    /// (the source has every write: the mirror kept writing it), the copy stops, and the
    /// record says `failed` and why, until the next migration of the LUN.
    fn fail_back(&self, target: &str, lun: u64) {
        let mut inner = self.lock();
        let key = (target.to_string(), lun);
        let mut active = self.migrations.lock();
        let unit = match active.get(&key) {
            Some(m) if m.shared.phase() == Phase::Failed => Arc::clone(&m.source_unit),
            _ => return,
        };
        if let Err(error) = self.swap_unit(&mut inner, target, lun, unit, None) {
            tracing::error!(target, lun, %error, "failed migration: the LUN stays on the migration backend (it serves from the source)");
            return;
        }
        let mut migration = active.remove(&key).expect("checked above");
        drop(active);
        if let Some(thread) = migration.copier.take() {
            let _ = thread.join();
        }
        let mut status = migration.status();
        status["target"] = json!(target);
        status["lun"] = json!(lun);
        status["state"] = json!("failed");
        if let Some(dir) = Self::state_dir(&inner) {
            let record = Self::record_of(target, lun, &status);
            if let Err(error) = record.save(&dir) {
                tracing::error!(%error, "the failed migration's record was not written");
            }
        }
        tracing::warn!(target, lun, error = ?migration.shared.error(), "migration failed; the LUN runs on its source again");
        self.migrations.ended().insert(key, status);
        super::retire::backend(migration.dest);
    }

    /// The record of a migration that ended `failed`, from its status.
    fn record_of(target: &str, lun: u64, status: &Value) -> Record {
        Record {
            target: target.to_string(),
            lun,
            to: status["to"].as_str().unwrap_or_default().to_string(),
            mode: if status["mode"] == "dbt" {
                Mode::Dbt
            } else {
                Mode::Mirror
            },
            rate_bytes_per_second: None,
            stun_budget_ms: 0,
            cursor_regions: 0,
            phase: "failed".into(),
            error: status["error"].as_str().map(str::to_string),
        }
    }

    /// The clean stop, after the event loops stopped: every change map is saved exactly.
    /// (A migration's copy is left where its record says; the next start resumes it.)
    pub fn shutdown(&self) {
        let inner = self.lock();
        for target in inner.model.targets.values() {
            for entry in target.luns.values() {
                if let Some(tracker) = entry.unit.backend().change_tracker() {
                    tracker.close();
                }
            }
        }
    }

    /// Resumes the migrations and the change tracking the state directory records (at
    /// load, before the server runs the configuration).
    pub(super) fn resume(&self, inner: &mut Inner) -> Result<(), RpcError> {
        let Some(dir) = Self::state_dir(inner) else {
            return Ok(());
        };
        let luns: Vec<(String, u64, String)> = inner
            .model
            .targets
            .iter()
            .flat_map(|(t, e)| {
                e.luns
                    .iter()
                    .map(|(l, entry)| (t.clone(), *l, super::hex(&entry.identity.naa_id)))
            })
            .collect();
        for (target, lun, naa) in luns {
            if dir.join("changes").join(format!("{naa}.cbt")).exists() {
                self.track(inner, &target, lun, None)?;
            }
        }
        for record in Record::load_all(&dir) {
            if record.phase == "failed" {
                let status = json!({
                    "target": record.target, "lun": record.lun, "to": record.to,
                    "mode": if record.mode == Mode::Dbt { "dbt" } else { "mirror" },
                    "state": "failed", "error": record.error,
                });
                self.migrations
                    .ended()
                    .insert((record.target.clone(), record.lun), status);
                continue;
            }
            let phase = match record.phase.as_str() {
                "ready" => Phase::Ready,
                "switched" => Phase::Switched,
                _ => Phase::Copying,
            };
            let (target, lun) = (record.target.clone(), record.lun);
            match self.start(inner, record, phase) {
                Ok(_) => tracing::info!(%target, lun, phase = phase.name(), "migration resumed"),
                Err(error) => {
                    tracing::error!(%target, lun, %error, "migration not resumed; the LUN runs on its source")
                }
            }
        }
        Ok(())
    }

    /// Tracks the LUN's changes from now on; its first change ID.
    fn track(
        &self,
        inner: &mut Inner,
        target: &str,
        lun: u64,
        chunk: Option<u64>,
    ) -> Result<Value, RpcError> {
        let unit = Self::unit_of(inner, target, lun)?;
        if let Some(tracker) = unit.backend().change_tracker() {
            return Err(bad(
                ErrorCode::AlreadyExists,
                format!(
                    "LUN {lun} of {target} is tracked already (change ID now {})",
                    tracker.map().current_id()
                ),
            ));
        }
        if self
            .migrations
            .lock()
            .contains_key(&(target.to_string(), lun))
        {
            return Err(bad(
                ErrorCode::Refused,
                format!("LUN {lun} of {target} is migrating: track it before or after"),
            ));
        }
        let size = unit.blocks() * u64::from(unit.block_size());
        let chunk = chunk.unwrap_or(DEFAULT_CHUNK_BYTES);
        if !crate::changes::ChangeMap::fits(size, chunk) {
            return Err(bad(
                ErrorCode::InvalidParams,
                format!("changes_track: LUN {lun} of {target} has {size} bytes: too many {chunk}-byte chunks; give a larger chunk"),
            ));
        }
        let naa = super::hex(&inner.model.targets[target].luns[&lun].identity.naa_id);
        let tracker = match Self::state_dir(inner) {
            Some(dir) => {
                ChangeTracker::open(&dir.join("changes"), &naa, size, chunk).map_err(|e| {
                    bad(
                        ErrorCode::Persist,
                        format!("LUN {lun} of {target}: the change map could not be opened: {e}"),
                    )
                })?
            }
            None => ChangeTracker::in_memory(size, chunk),
        };
        let tracker = Arc::new(tracker);
        let id = tracker.map().current_id();
        let tracked = Tracked::new(
            Arc::new(UnitBackend(Arc::clone(&unit))),
            Arc::clone(&tracker),
        );
        let new_unit = Arc::new(unit.over_backend(Box::new(tracked)));
        self.swap_unit(inner, target, lun, new_unit, None)?;
        unit.drain_writes();
        let started = Instant::now();
        // Writes already on the blocking pool for the old unit land untracked: the answer
        // (and the change ID it carries) waits for them.
        while !(unit.ring_writes_idle() && unit.blocking_idle()) && started.elapsed() < DRAIN_LIMIT
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(json!({
            "target": target,
            "lun": lun,
            "change_id": id.to_string(),
            "chunk_bytes": tracker.map().chunk_bytes(),
            "durable": Self::state_dir(inner).is_some(),
        }))
    }

    fn changes_track(&self, p: TrackParams) -> Result<Value, RpcError> {
        let chunk = p
            .chunk
            .as_ref()
            .map(|c| size_param("changes_track", "chunk", c))
            .transpose()?;
        if let Some(chunk) = chunk {
            if !chunk.is_power_of_two() || !(4096..=64 << 20).contains(&chunk) {
                return Err(bad(
                    ErrorCode::InvalidParams,
                    format!("changes_track: chunk {chunk}: a power of two from 4K to 64M"),
                ));
            }
        }
        let mut inner = self.lock();
        let _fences = fence_lun("changes_track", &inner.model, &p.target, p.lun)?;
        self.track(&mut inner, &p.target, p.lun, chunk)
    }

    fn changes_query(&self, p: QueryParams) -> Result<Value, RpcError> {
        let since: Option<ChangeId> = p.since.as_deref().map(str::parse).transpose().map_err(
            |e: crate::changes::ChangeError| {
                bad(ErrorCode::InvalidParams, format!("changes_query: {e}"))
            },
        )?;
        let unit = {
            let inner = self.lock();
            Self::unit_of(&inner, &p.target, p.lun)?
        };
        let tracker = unit.backend().change_tracker().ok_or_else(|| {
            bad(
                ErrorCode::Refused,
                format!(
                    "LUN {} of {} is not tracked: changes_track it first",
                    p.lun, p.target
                ),
            )
        })?;
        let answer = tracker
            .changed_since(since)
            .map_err(|e| bad(ErrorCode::Persist, format!("changes_query: {e}")))?
            .map_err(|e| bad(ErrorCode::Refused, format!("changes_query: {e}")))?;
        let changed: u64 = answer.extents.iter().map(|(_, l)| l).sum();
        Ok(json!({
            "target": p.target,
            "lun": p.lun,
            "since": since.map(|s| s.to_string()),
            "next": answer.next.to_string(),
            "chunk_bytes": tracker.map().chunk_bytes(),
            "changed_bytes": changed,
            "extents": answer.extents.iter().map(|(o, l)| json!([o, l])).collect::<Vec<_>>(),
            "map_memory_bytes": tracker.map().memory_bytes(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::rpc::parse_call;

    const T: &str = "iqn.2026-01.test:migrate";

    fn call(control: &Control, method: &str, params: Value) -> Result<Value, RpcError> {
        control.handle(parse_call(method, params)?)
    }

    fn lun(control: &Control) -> Arc<LogicalUnit> {
        Control::unit_of(&control.lock(), T, 0).unwrap()
    }

    #[test]
    fn bad_requests_are_refused_with_the_reason_and_change_nothing() {
        let control = Control::new(None, 1);
        call(
            &control,
            "target_create",
            json!({"name": T, "luns": [{"lun": 0, "backend": "ram:4M"}]}),
        )
        .unwrap();
        let refused = |method: &str, params: Value, code: ErrorCode, text: &str| {
            let error = call(&control, method, params).unwrap_err();
            assert_eq!(error.code, code, "{method}: {}", error.message);
            assert!(error.message.contains(text), "{method}: {}", error.message);
        };
        refused(
            "migrate_start",
            json!({"target": T, "lun": 0, "to": "ram:4M", "mode": "fast"}),
            ErrorCode::InvalidParams,
            "expected mirror or dbt",
        );
        refused(
            "migrate_start",
            json!({"target": T, "lun": 0, "to": "ram:4M", "rate": "lots"}),
            ErrorCode::InvalidParams,
            "rate",
        );
        refused(
            "migrate_start",
            json!({"target": T, "lun": 0, "to": "ram:2M"}),
            ErrorCode::Refused,
            "at least as large",
        );
        refused(
            "migrate_start",
            json!({"target": T, "lun": 0, "to": "disk:x"}),
            ErrorCode::InvalidParams,
            "destination",
        );
        refused(
            "migrate_start",
            json!({"target": T, "lun": 9, "to": "ram:4M"}),
            ErrorCode::NotFound,
            "no LUN 9",
        );
        refused(
            "migrate_start",
            json!({"target": T, "lun": 0, "to": "ram:4M", "colour": 1}),
            ErrorCode::InvalidParams,
            "colour",
        );
        refused(
            "migrate_complete",
            json!({"target": T, "lun": 0}),
            ErrorCode::NotFound,
            "not migrating",
        );
        refused(
            "changes_query",
            json!({"target": T, "lun": 0}),
            ErrorCode::Refused,
            "not tracked",
        );
        refused(
            "changes_track",
            json!({"target": T, "lun": 0, "chunk": "3K"}),
            ErrorCode::InvalidParams,
            "power of two",
        );
        refused(
            "changes_query",
            json!({"target": T, "lun": 0, "since": "nope"}),
            ErrorCode::InvalidParams,
            "EPOCH-GENERATION",
        );
        assert_eq!(lun(&control).backend().kind(), "ram", "nothing changed");
    }

    #[test]
    fn a_mirror_migration_between_ram_luns_keeps_the_data_and_the_unit_identity() {
        let control = Control::new(None, 1);
        call(
            &control,
            "target_create",
            json!({"name": T, "luns": [{"lun": 0, "backend": "ram:8M"}]}),
        )
        .unwrap();
        let before = lun(&control);
        before.backend().write_at(3 << 20, &[7; 4096]).unwrap();
        call(
            &control,
            "migrate_start",
            json!({"target": T, "lun": 0, "to": "ram:8M"}),
        )
        .unwrap();
        // The LUN runs on the migration's backend; a write lands on the source.
        lun(&control)
            .backend()
            .write_at(5 << 20, &[9; 512])
            .unwrap();
        let started = Instant::now();
        while call(&control, "migrate_status", json!({})).unwrap()["migrations"][0]["state"]
            != "ready"
        {
            assert!(started.elapsed() < Duration::from_secs(20));
            std::thread::sleep(Duration::from_millis(5));
        }
        let refused = call(&control, "migrate_commit", json!({"target": T, "lun": 0})).unwrap_err();
        assert!(
            refused.message.contains("complete it first"),
            "{}",
            refused.message
        );
        call(
            &control,
            "migrate_complete",
            json!({"target": T, "lun": 0, "commit": true}),
        )
        .unwrap();
        let after = lun(&control);
        assert_eq!(after.config().naa_id, before.config().naa_id);
        let mut buf = vec![0; 4096];
        after.backend().read_at(3 << 20, &mut buf).unwrap();
        assert_eq!(buf, vec![7; 4096]);
        after.backend().read_at(5 << 20, &mut buf[..512]).unwrap();
        assert_eq!(&buf[..512], &[9; 512]);
        // The source no longer takes writes.
        after.backend().write_at(0, &[1; 512]).unwrap();
        before.backend().read_at(0, &mut buf[..512]).unwrap();
        assert_eq!(&buf[..512], &[0; 512]);
        let listed = call(&control, "target_list", json!({})).unwrap();
        assert_eq!(listed["targets"][0]["luns"][0]["backend"], "ram:8M");
    }

    #[test]
    fn tracking_answers_the_writes_through_the_lun_and_refuses_a_second_tracking() {
        let control = Control::new(None, 1);
        call(
            &control,
            "target_create",
            json!({"name": T, "luns": [{"lun": 0, "backend": "ram:8M"}]}),
        )
        .unwrap();
        let tracked = call(&control, "changes_track", json!({"target": T, "lun": 0})).unwrap();
        let id = tracked["change_id"].as_str().unwrap().to_string();
        let again = call(&control, "changes_track", json!({"target": T, "lun": 0})).unwrap_err();
        assert_eq!(again.code, ErrorCode::AlreadyExists);
        lun(&control)
            .backend()
            .write_at(1 << 20, &[1; 512])
            .unwrap();
        let answer = call(
            &control,
            "changes_query",
            json!({"target": T, "lun": 0, "since": id}),
        )
        .unwrap();
        assert_eq!(answer["extents"], json!([[1 << 20, 65536]]));
        assert_eq!(answer["changed_bytes"], 65536);
    }
}
