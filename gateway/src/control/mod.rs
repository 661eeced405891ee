//! The gateway's live control plane: JSON-RPC 2.0 on a Unix socket (`rpc`, `socket`),
//! the configuration it changes, and its durable copy (`state`).
//!
//! A change goes: validate (names, LUN numbers, secrets, the backend opens), persist (the
//! whole configuration written and synced in the state directory, when there is one),
//! then apply (a new immutable configuration published to the event loops through
//! [`crate::server::Controller`]: each loop takes it before the next PDU it handles, and a
//! change that removes something also waits until every loop runs it), then answer.
//! A change that fails any step changes nothing. Changes are serialized by one lock, held
//! by the control plane's threads only; the event loops never take it.
//!
//! Volumes (`volume_*` methods, `pool:` LUNs) belong to the volume pool, which plugs in
//! through [`VolumeService`]; without one those methods answer "not available".

mod array;
pub mod array_rpc;
pub mod array_state;
mod bindings;
mod group_commit;
mod migration;
mod pace;
mod phases;
pub mod pools;
pub mod priority;
mod retire;
pub mod rpc;
mod sanitize_fence;
pub mod socket;
pub mod state;
mod stats;
mod volume_attach;
pub mod volumes;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::backend::{LuIdentity, LunSpec};
use crate::disk::{LogicalUnit, LuConfig, LunMap};
use crate::server::{self, Controller, LiveTarget, LunInfo, TargetNodeConfig};
use crate::session::ChapCredentials;

use rpc::{Call, Chap, ErrorCode, RpcError};
use state::{LunState, State, StateDir, TargetState};

/// The volume pool's side of the control plane: it answers the `volume_*` methods. The
/// pool registers one with [`Control::set_volumes`].
pub trait VolumeService: Send + Sync {
    /// Runs `method` (`volume_create`, ...) with its parameters (an object).
    fn call(&self, method: &str, params: Value) -> Result<Value, RpcError>;

    /// Makes volume `name` of `size_bytes` in the pool at `pool` in memory only, for
    /// `volume_create` with `attach` (`volume_attach`). `durable_elsewhere`: the state
    /// directory's journal records it (else the pool's record is synced when appended).
    fn reserve_volume(
        &self,
        pool: &str,
        _name: &str,
        _size_bytes: u64,
        _durable_elsewhere: bool,
    ) -> Result<volumes::Reservation, RpcError> {
        Err(bad(
            ErrorCode::NotAvailable,
            format!("pool {pool}: not available: no pool configured"),
        ))
    }

    /// The pools open, by path: the control plane records them in its state directory.
    fn pools(&self) -> Vec<String> {
        Vec::new()
    }

    /// Opens the pool at `path` (kept open) and returns the path it is recorded under.
    fn open_pool(&self, path: &str) -> Result<String, RpcError> {
        Err(bad(
            ErrorCode::NotAvailable,
            format!("pool {path}: not available: no pool configured"),
        ))
    }

    /// Creates a pool of `size_bytes` on a new file at `path` (kept open) and returns the
    /// path it is recorded under (`pool_create`).
    fn create_pool(&self, path: &str, _size_bytes: u64) -> Result<String, RpcError> {
        Err(bad(
            ErrorCode::NotAvailable,
            format!("pool {path}: not available: no pool configured"),
        ))
    }

    /// Forgets the open pool at `path` (`pool_close`; the caller checked nothing uses it).
    fn close_pool(&self, path: &str) -> Result<String, RpcError> {
        Err(bad(ErrorCode::NotFound, format!("no open pool {path}")))
    }

    /// One row per open pool (`pool_list`).
    fn describe_pools(&self) -> Vec<Value> {
        Vec::new()
    }

    /// Opens again the pools a restart finds recorded.
    fn restore(&self, pools: &[String]) -> Result<(), RpcError> {
        pools.iter().try_for_each(|p| self.open_pool(p).map(drop))
    }
}

/// One LUN of the configuration.
#[derive(Clone)]
struct LunEntry {
    /// The spec as given.
    spec: String,
    identity: LuIdentity,
    unit: Arc<LogicalUnit>,
    info: LunInfo,
    /// When it was attached (or restored): the time its statistics cover.
    attached_at: std::time::Instant,
}

/// One target node of the configuration.
#[derive(Clone)]
struct TargetEntry {
    alias: Option<String>,
    allowed_initiators: Option<Vec<String>>,
    chap: Option<Chap>,
    mutual_chap: Option<Chap>,
    luns: BTreeMap<u64, LunEntry>,
    /// The volumes bound through its endpoints, per host (`bindings`).
    bindings: bindings::HostTable,
    /// What the event loops run for this target, rebuilt when the target changes.
    live: Arc<LiveTarget>,
}

#[derive(Clone, Default)]
struct Model {
    generation: u64,
    /// Shared with the configuration before a change: a change copies the map's spine
    /// and the one target it touches (`Arc::make_mut`), not every target.
    targets: BTreeMap<String, Arc<TargetEntry>>,
    /// The portals, once a portal change set them; `None` while the startup
    /// configuration's apply.
    portals: Option<Vec<std::net::SocketAddr>>,
    /// The volume pools open through the volume methods, by path.
    pools: Vec<String>,
    /// The volumes bound for hosts (`bindings`), by pool and name. Changed in place by
    /// binds and unbinds (see `bindings`), shared by the copies other changes make.
    bound: Arc<bindings::BoundVolumes>,
    /// Weights, drains, ALUA states, redirect kind, virtual portals (`array_state`).
    array: array_state::ArraySettings,
}

struct Inner {
    model: Model,
    /// Counts the model's changes that the event loops must see, in the order they were
    /// made (and journaled): what the group commit settles and publishes in order.
    version: u64,
    state: Option<StateDir>,
    controller: Option<Controller>,
    /// Work the changes written since the last leader's snapshot left for after their
    /// sync (`group_commit::AfterSync`), in version order.
    after_sync: Vec<AfterSyncWork>,
}

/// Work a change leaves for its group commit's leader (`group_commit::AfterSync`).
type AfterSyncWork = Box<dyn group_commit::AfterSync>;

/// The control plane of one gateway.
pub struct Control {
    inner: Mutex<Inner>,
    /// Concurrent changes share a journal sync and a publication (`group_commit`).
    commits: group_commit::GroupCommit,
    portal_group_tag: u16,
    volumes: Mutex<Option<Arc<dyn VolumeService>>>,
    /// Migrations in progress (`migrate_*`, see `migration.rs`).
    migrations: migration::Migrations,
}

/// Why the control plane could not start.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("state directory: {0}")]
    Restore(RpcError),
    #[error("configuration: {0}")]
    Config(RpcError),
    #[error("control socket {path}: {reason}")]
    Socket { path: String, reason: String },
}

fn bad(code: ErrorCode, message: impl Into<String>) -> RpcError {
    RpcError::new(code, message)
}

fn credentials(chap: &Option<Chap>) -> Option<ChapCredentials> {
    chap.as_ref().map(|c| ChapCredentials {
        user: c.user.clone(),
        secret: c.secret.clone().into_bytes(),
    })
}

fn hex(bytes: &[u8]) -> String {
    // One allocation (a `format!` per byte made a string per byte: a bind answers an
    // NAA per volume).
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    text
}

fn check_name(what: &str, name: &str) -> Result<(), RpcError> {
    datapath::names::check_iscsi_name(name)
        .map_err(|e| bad(ErrorCode::InvalidParams, format!("{what}: {e}")))
}

fn check_chap(what: &str, chap: &Option<Chap>) -> Result<(), RpcError> {
    match chap {
        Some(c) if c.secret.len() < crate::config::MIN_CHAP_SECRET_BYTES => Err(bad(
            ErrorCode::InvalidParams,
            format!(
                "{what}: secret of {} bytes, at least {} required (RFC 7143 section 12.1.3)",
                c.secret.len(),
                crate::config::MIN_CHAP_SECRET_BYTES
            ),
        )),
        Some(c) if c.user.is_empty() => Err(bad(
            ErrorCode::InvalidParams,
            format!("{what}: empty user name"),
        )),
        Some(c) => {
            check_text(&format!("{what} user"), &c.user)?;
            check_text(&format!("{what} secret"), &c.secret)
        }
        None => Ok(()),
    }
}

/// Target nodes one gateway holds at most: bounds the configuration every login and
/// SendTargets walks (the LUNs per target are bounded by the LUN number limit).
pub const MAX_TARGETS: usize = 16_384;

/// Text values such as TargetAlias and CHAP user names are at most 255 bytes
/// (RFC 7143 section 6.1), without control characters (they go into text keys).
const MAX_TEXT_VALUE_BYTES: usize = 255;

fn check_text(what: &str, value: &str) -> Result<(), RpcError> {
    if value.len() > MAX_TEXT_VALUE_BYTES || value.chars().any(char::is_control) {
        return Err(bad(
            ErrorCode::InvalidParams,
            format!("{what}: at most {MAX_TEXT_VALUE_BYTES} bytes without control characters"),
        ));
    }
    Ok(())
}

fn check_acl(target: &str, names: &Option<Vec<String>>) -> Result<(), RpcError> {
    for name in names.iter().flatten() {
        check_name(&format!("allowed initiator of {target}"), name)?;
    }
    Ok(())
}

impl TargetEntry {
    fn new(
        name: &str,
        alias: Option<String>,
        allowed_initiators: Option<Vec<String>>,
        chap: Option<Chap>,
        mutual_chap: Option<Chap>,
        tpgt: u16,
    ) -> TargetEntry {
        let mut entry = TargetEntry {
            alias,
            allowed_initiators,
            chap,
            mutual_chap,
            luns: BTreeMap::new(),
            bindings: BTreeMap::new(),
            live: Arc::new(LiveTarget::new(
                name,
                server::disk_luns(name, tpgt, LunMap::new()),
                Vec::new(),
            )),
        };
        entry.rebuild(name, tpgt);
        entry
    }

    /// Makes `live` match the entry.
    fn rebuild(&mut self, name: &str, tpgt: u16) {
        let mut map = LunMap::new();
        for (lun, entry) in &self.luns {
            map.insert(*lun, Arc::clone(&entry.unit));
        }
        let map = Arc::new(map);
        let hosts = self
            .bindings
            .iter()
            .map(|(host, bound)| {
                let executor =
                    server::disk_luns_for_host(name, tpgt, Arc::clone(&map), Arc::clone(bound));
                let view = server::HostView {
                    executor,
                    bindings: Arc::clone(bound),
                };
                (host.clone(), view)
            })
            .collect();
        let mut live = LiveTarget::new(
            name,
            server::disk_luns_shared(name, tpgt, map),
            self.luns.values().map(|entry| entry.info).collect(),
        );
        live.hosts = Arc::new(hosts);
        live.alias = self.alias.clone();
        live.chap = credentials(&self.chap);
        live.mutual_chap = credentials(&self.mutual_chap);
        live.allowed_initiators = self.allowed_initiators.clone();
        self.live = Arc::new(live);
    }
}

/// Protocol endpoints are LUNs below this (ESXi scans LUNs 0 to 1023 by default).
pub const ENDPOINT_LUN_LIMIT: u64 = 1024;

/// Opens the LUN `spec` describes, with `identity` when the state directory kept one.
fn open_lun(
    target: &str,
    lun: u64,
    spec_text: &str,
    identity: Option<LuIdentity>,
) -> Result<LunEntry, RpcError> {
    if lun >= server::LUN_NUMBER_LIMIT {
        return Err(bad(
            ErrorCode::InvalidParams,
            format!(
                "LUN {lun}: LUN numbers go up to {} (what REPORT LUNS can encode)",
                server::LUN_NUMBER_LIMIT - 1
            ),
        ));
    }
    let mut spec = LunSpec::parse(spec_text).map_err(|e| {
        bad(
            ErrorCode::InvalidParams,
            format!("backend {spec_text:?}: {e}"),
        )
    })?;
    if let Some(identity) = &identity {
        spec.options.serial = Some(identity.serial.clone());
        spec.options.naa_id = Some(identity.naa_id);
    }
    if spec.role() == crate::disk::conglomerate::Role::Endpoint && lun >= ENDPOINT_LUN_LIMIT {
        return Err(bad(
            ErrorCode::InvalidParams,
            format!(
                "LUN {lun}: endpoints live below LUN {ENDPOINT_LUN_LIMIT} (hosts such as ESXi scan no further by default)"
            ),
        ));
    }
    let (backend, identity) = spec.open().map_err(|e| {
        bad(
            ErrorCode::Backend,
            format!("LUN {lun} of {target} ({spec_text}): {e}"),
        )
    })?;
    let config = LuConfig {
        serial: identity.serial.clone(),
        naa_id: identity.naa_id,
        role: spec.role(),
        // `,readonly` means on a LUN attached live what it means at start.
        read_only: spec.options.readonly,
        ..LuConfig::for_name(&format!("{target}/{lun}"))
    };
    let unit = Arc::new(
        LogicalUnit::new(backend, config)
            .with_sanitize_rate(spec.options.sanitize_bytes_per_second),
    );
    let info = LunInfo {
        lun,
        unit_id: server::next_unit_id(),
        blocks: unit.blocks(),
    };
    Ok(LunEntry {
        spec: spec_text.to_string(),
        identity,
        unit,
        info,
        attached_at: std::time::Instant::now(),
    })
}

/// The LUNs (target, number) that export volume `name` of the pool at `pool`.
fn attachments(model: &Model, pool: &str, name: &str) -> Vec<(String, u64)> {
    pool_attachments(model, pool)
        .remove(name)
        .unwrap_or_default()
}

/// The LUNs (target, number) that export a volume of the pool at `pool`, by volume name:
/// one walk of the LUNs (a path resolved per pool LUN) for a whole batch of volumes, where
/// [`attachments`] per volume resolved every pool LUN's path again for each.
fn pool_attachments(model: &Model, pool: &str) -> BTreeMap<String, Vec<(String, u64)>> {
    pool_attachments_at(model, &volumes::canonical(pool))
}

/// [`pool_attachments`] of the pool whose canonical path is `pool` (a caller that has
/// resolved it already).
fn pool_attachments_at(
    model: &Model,
    pool: &std::path::Path,
) -> BTreeMap<String, Vec<(String, u64)>> {
    let mut found: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for (target, entry) in &model.targets {
        for (lun, lun_entry) in &entry.luns {
            if let Ok(LunSpec {
                storage: crate::backend::Storage::Pool { path, volume, .. },
                ..
            }) = LunSpec::parse(&lun_entry.spec)
            {
                if volumes::canonical(&path) == pool {
                    found
                        .entry(volume)
                        .or_default()
                        .push((target.clone(), *lun));
                }
            }
        }
    }
    found
}

fn parse_naa(text: &str) -> Option<[u8; 8]> {
    if text.len() != 16 {
        return None;
    }
    u64::from_str_radix(text, 16).ok().map(u64::to_be_bytes)
}

impl Model {
    fn to_state(&self) -> State {
        State {
            version: 0,
            generation: self.generation,
            portals: self.portals.clone(),
            pools: self.pools.clone(),
            targets: self
                .targets
                .iter()
                .map(|(name, t)| TargetState {
                    name: name.clone(),
                    alias: t.alias.clone(),
                    allowed_initiators: t.allowed_initiators.clone(),
                    chap: t.chap.clone(),
                    mutual_chap: t.mutual_chap.clone(),
                    luns: t
                        .luns
                        .iter()
                        .map(|(lun, entry)| LunState {
                            lun: *lun,
                            backend: entry.spec.clone(),
                            naa: hex(&entry.identity.naa_id),
                            serial: entry.identity.serial.clone(),
                        })
                        .collect(),
                })
                .collect(),
            bindings: bindings::rows(self),
            array: self.array.clone(),
        }
    }

    fn live_targets(&self) -> Vec<Arc<LiveTarget>> {
        self.targets.values().map(|t| Arc::clone(&t.live)).collect()
    }

    fn bound_mut(&mut self) -> &mut bindings::BoundVolumes {
        Arc::make_mut(&mut self.bound)
    }

    fn target_mut(&mut self, name: &str) -> Result<&mut TargetEntry, RpcError> {
        self.targets
            .get_mut(name)
            .map(Arc::make_mut)
            .ok_or_else(|| bad(ErrorCode::NotFound, format!("no target {name}")))
    }
}

impl Control {
    /// A control plane with no target yet; `state` is the state directory, if any.
    pub fn new(state: Option<StateDir>, portal_group_tag: u16) -> Control {
        Control {
            inner: Mutex::new(Inner {
                model: Model::default(),
                version: 0,
                state,
                controller: None,
                after_sync: Vec::new(),
            }),
            commits: group_commit::GroupCommit::default(),
            portal_group_tag,
            volumes: Mutex::new(None),
            migrations: migration::Migrations::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(inner) => inner,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Plugs in the volume pool.
    pub fn set_volumes(&self, volumes: Arc<dyn VolumeService>) {
        if let Ok(mut slot) = self.volumes.lock() {
            *slot = Some(volumes);
        }
    }

    /// Builds the starting configuration: the state directory's, when it has one (the
    /// targets in `startup` are then not used), else `startup`'s targets, committed to
    /// the state directory as its first state. Every LUN is opened. Returns whether the
    /// state directory's configuration was used.
    pub fn load(&self, startup: &[TargetNodeConfig]) -> Result<bool, ControlError> {
        let mut inner = self.lock();
        let tpgt = self.portal_group_tag;
        let restored = match inner.state.as_mut() {
            Some(dir) => dir.load()?,
            None => None,
        };
        let mut model = Model::default();
        let from_state = restored.is_some();
        match restored {
            Some(state::Loaded {
                snapshot: state,
                changes,
            }) => {
                model.generation = state.generation;
                model.portals = state.portals.clone();
                model.pools = state.pools.clone();
                model.array = state.array.clone();
                for target in state.targets {
                    let mut entry = TargetEntry::new(
                        &target.name,
                        target.alias,
                        target.allowed_initiators,
                        target.chap,
                        target.mutual_chap,
                        tpgt,
                    );
                    for lun in target.luns {
                        let identity = parse_naa(&lun.naa).map(|naa_id| LuIdentity {
                            naa_id,
                            serial: lun.serial.clone(),
                        });
                        let opened = open_lun(&target.name, lun.lun, &lun.backend, identity)
                            .map_err(ControlError::Restore)?;
                        entry.luns.insert(lun.lun, opened);
                    }
                    entry.rebuild(&target.name, tpgt);
                    model.targets.insert(target.name, Arc::new(entry));
                }
                bindings::restore(&mut model, state.bindings, tpgt)
                    .map_err(ControlError::Restore)?;
                let replayed = changes.len();
                let mut records = Vec::with_capacity(changes.len());
                for (generation, payload) in changes {
                    let record: JournalRecord = serde_json::from_slice(&payload).map_err(|e| {
                        ControlError::Restore(bad(
                            ErrorCode::Internal,
                            format!("journal record of change {generation}: {e}"),
                        ))
                    })?;
                    records.push((generation, record));
                }
                let forgotten = forgotten_volumes(&records);
                let mut placeholders = Vec::new();
                for (index, (generation, record)) in records.into_iter().enumerate() {
                    if record.method == FORGET_METHOD {
                        model.generation = generation;
                        continue;
                    }
                    let mut call = rpc::parse_call(&record.method, record.params)
                        .map_err(ControlError::Restore)?;
                    let stand_ins = stand_in_for_deleted(&mut call, |key| {
                        forgotten.get(key).is_some_and(|&at| at > index)
                    });
                    let replayed = match call {
                        Call::Bind(p) => bindings::replay_bind(&mut model, p, tpgt),
                        Call::Unbind(p) => bindings::replay_unbind(&mut model, p, tpgt),
                        Call::Array(call) => {
                            model.array.record(&call);
                            Ok(())
                        }
                        call => apply_change(&mut model, call, &record.identities, tpgt).map(drop),
                    };
                    replayed.map_err(|e| {
                        ControlError::Restore(bad(
                            e.code,
                            format!("replaying change {generation}: {}", e.message),
                        ))
                    })?;
                    for (target, lun, spec) in stand_ins {
                        let unit = model
                            .targets
                            .get(&target)
                            .and_then(|t| t.luns.get(&lun))
                            .map(|e| e.info.unit_id);
                        placeholders.extend(unit.map(|unit| (target, lun, spec, unit)));
                    }
                    model.generation = generation;
                }
                reopen_stand_ins(&mut model, placeholders, tpgt).map_err(ControlError::Restore)?;
                if replayed > 0 {
                    // Start from a snapshot of what was replayed, with an empty journal.
                    if let Some(dir) = inner.state.as_mut() {
                        dir.snapshot(&model.to_state())?;
                    }
                }
            }
            None => {
                for node in startup {
                    let chap = node.chap.as_ref().map(|c| Chap {
                        user: c.user.clone(),
                        secret: String::from_utf8_lossy(&c.secret).into_owned(),
                    });
                    let mutual = node.mutual_chap.as_ref().map(|c| Chap {
                        user: c.user.clone(),
                        secret: String::from_utf8_lossy(&c.secret).into_owned(),
                    });
                    let mut entry = TargetEntry::new(
                        &node.iqn,
                        node.alias.clone(),
                        node.allowed_initiators.clone(),
                        chap,
                        mutual,
                        tpgt,
                    );
                    for (lun, spec) in &node.luns {
                        let opened =
                            open_lun(&node.iqn, *lun, spec, None).map_err(ControlError::Config)?;
                        entry.luns.insert(*lun, opened);
                    }
                    entry.rebuild(&node.iqn, tpgt);
                    model.targets.insert(node.iqn.clone(), Arc::new(entry));
                }
                if let Some(dir) = inner.state.as_mut() {
                    dir.snapshot(&model.to_state())?;
                }
            }
        }
        if !model.pools.is_empty() {
            let volumes = self.volumes.lock().ok().and_then(|v| v.clone());
            match volumes {
                Some(volumes) => volumes
                    .restore(&model.pools)
                    .map_err(ControlError::Restore)?,
                None => {
                    return Err(ControlError::Restore(bad(
                        ErrorCode::NotAvailable,
                        "the state directory names open pools, but no volume service is set",
                    )))
                }
            }
        }
        inner.model = model;
        // Change tracking and migrations the state directory records go on.
        self.resume(&mut inner).map_err(ControlError::Restore)?;
        Ok(from_state)
    }

    /// The portals the state directory holds, when a portal change set them: they
    /// replace the startup configuration's.
    pub fn state_portals(&self) -> Option<Vec<std::net::SocketAddr>> {
        self.lock().model.portals.clone()
    }

    /// The target nodes to start the server with ([`crate::server::start_live`]).
    pub fn live_targets(&self) -> Vec<Arc<LiveTarget>> {
        self.lock().model.live_targets()
    }

    /// Connects the control plane to the running server, and sets it to the array
    /// settings the state directory kept.
    pub fn set_controller(&self, controller: Controller) {
        let mut inner = self.lock();
        inner.model.array.apply(&controller);
        inner.controller = Some(controller);
    }

    /// Runs one call: validate, persist, apply, answer.
    pub fn handle(&self, call: Call) -> Result<Value, RpcError> {
        match call {
            Call::Volume { method, params } => self.volume_call(&method, params),
            Call::Pool(call) => self.pool_call(call),
            Call::Migration { method, params } => self.migration_call(&method, params),
            Call::TargetList => Ok(self.target_list()),
            Call::PortalList => {
                let inner = self.lock();
                Ok(array::portal_list(
                    inner.controller.as_ref(),
                    self.portal_group_tag,
                ))
            }
            Call::Array(call) => self.array_call(call),
            Call::SessionList(filter) => {
                let inner = self.lock();
                let sessions: Vec<Value> = inner
                    .controller
                    .as_ref()
                    .map(|c| c.sessions())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|s| filter.target.as_ref().is_none_or(|t| *t == s.target))
                    .map(|s| {
                        json!({
                            "initiator": s.initiator,
                            "isid": s.isid,
                            "target": s.target,
                            "peer": s.peer.to_string(),
                            "tsih": s.tsih,
                            "portal": s.portal.to_string(),
                        })
                    })
                    .collect();
                Ok(json!({ "sessions": sessions }))
            }
            Call::SessionDrop(filter) => {
                if filter.target.is_none()
                    && filter.initiator.is_none()
                    && filter.isid.is_none()
                    && filter.portal.is_none()
                {
                    return Err(bad(
                        ErrorCode::InvalidParams,
                        "session_drop: give at least one of target, initiator, isid, portal",
                    ));
                }
                let inner = self.lock();
                let Some(controller) = inner.controller.as_ref() else {
                    return Ok(json!({ "dropped": 0 }));
                };
                let isid = filter.isid.as_ref().map(|i| i.to_ascii_lowercase());
                let dropped = controller.drop_sessions(|s| {
                    filter.target.as_ref().is_none_or(|t| *t == s.target)
                        && filter.initiator.as_ref().is_none_or(|i| *i == s.initiator)
                        && isid.as_ref().is_none_or(|i| *i == s.isid)
                        && filter.portal.is_none_or(|p| p == s.portal)
                });
                Ok(json!({ "dropped": dropped }))
            }
            Call::LunStats(p) => self.lun_stats(p),
            Call::Bind(p) => self.bind(p),
            Call::Unbind(p) => self.unbind(p),
            Call::BindingList(filter) => Ok(bindings::list(&self.lock().model, &filter)),
            Call::PortalAdd(p) => self.portal_change(true, p.address),
            Call::PortalRemove(p) => self.portal_change(false, p.address),
            change => self.change(change),
        }
    }

    /// Adds or removes a portal. Rare, so made durable as a whole snapshot (the journal's
    /// replay then never needs the startup portals). An added portal listens before the
    /// commit (binding is the check that can fail) and is closed again if the commit
    /// fails; a removed one stops listening after it.
    fn portal_change(&self, add: bool, address: std::net::SocketAddr) -> Result<Value, RpcError> {
        let mut inner = self.lock();
        let Some(controller) = inner.controller.clone() else {
            return Err(bad(
                ErrorCode::NotAvailable,
                "the gateway is not running yet",
            ));
        };
        let mut next = inner.model.clone();
        let mut portals = next.portals.clone().unwrap_or_else(|| controller.portals());
        let live = controller.portals();
        let answer;
        if add {
            if address.port() != 0 && live.contains(&address) {
                return Err(bad(
                    ErrorCode::AlreadyExists,
                    format!("portal {address} exists"),
                ));
            }
            let bound = controller
                .add_portal(address)
                .map_err(|e| bad(ErrorCode::Refused, format!("portal {address}: {e}")))?;
            portals.push(bound);
            answer = json!({ "address": bound.to_string() });
            next.portals = Some(portals);
            next.generation += 1;
            if let Some(dir) = inner.state.as_mut() {
                if let Err(e) = dir.snapshot(&next.to_state()) {
                    controller.remove_portal(bound);
                    return Err(bad(
                        ErrorCode::Persist,
                        format!("the change was not made: state not written: {e}"),
                    ));
                }
            }
        } else {
            if !live.contains(&address) {
                return Err(bad(ErrorCode::NotFound, format!("no portal {address}")));
            }
            if live.len() == 1 {
                return Err(bad(
                    ErrorCode::Refused,
                    format!("portal {address} is the last one; add another first"),
                ));
            }
            portals.retain(|p| *p != address);
            next.portals = Some(portals);
            next.generation += 1;
            if let Some(dir) = inner.state.as_mut() {
                dir.snapshot(&next.to_state()).map_err(|e| {
                    bad(
                        ErrorCode::Persist,
                        format!("the change was not made: state not written: {e}"),
                    )
                })?;
            }
            controller.remove_portal(address);
            answer = json!({ "address": address.to_string() });
        }
        inner.model = next;
        Ok(answer)
    }

    /// A `volume_*` call. The pool does the work (each pool operation is committed in the
    /// pool); around it the control plane records a pool opened for the first time in the
    /// state directory before using it, refuses to delete a volume attached as a LUN
    /// (naming the LUN), and gives the LUNs of a grown volume their new capacity, which
    /// the event loops see in the next configuration (hosts get CAPACITY DATA HAS CHANGED).
    fn volume_call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let Some(volumes) = self.volumes.lock().ok().and_then(|v| v.clone()) else {
            return Err(bad(
                ErrorCode::NotAvailable,
                format!("{method}: not available: no pool configured"),
            ));
        };
        if method == "volume_create" && params.get("attach").is_some() {
            return self.volume_create_attached(volumes, params);
        }
        let field = |key: &str| params.get(key).and_then(Value::as_str).map(str::to_string);
        let (pool, name) = (field("pool"), field("name"));
        if let (Some(pool), Some(name), "volume_delete") = (&pool, &name, method) {
            self.forget_volume(pool, name)?;
        }
        let mut inner = self.lock();
        if let Some(pool) = &pool {
            Self::record_pool(&mut inner, &*volumes, pool, method)?;
        }
        // Only a delete and a grow need the volume's LUNs (a walk over every LUN, each
        // pool path resolved): a create would pay it on every call.
        let attached = match (&pool, &name) {
            (Some(pool), Some(name)) if matches!(method, "volume_delete" | "volume_grow") => {
                attachments(&inner.model, pool, name)
            }
            _ => Vec::new(),
        };
        if method == "volume_delete" {
            let bound = match (&pool, &name) {
                (Some(pool), Some(name)) => inner.model.bound.get_key(&bindings::key(pool, name)),
                _ => None,
            };
            if let Some(place) = bound.and_then(|b| b.places.first()) {
                return Err(bad(
                    ErrorCode::Refused,
                    format!(
                        "volume_delete: volume {} is bound for {} through endpoint {} of {} (secondary ID {}); unbind it first",
                        name.unwrap_or_default(), place.1, place.2, place.0, place.3
                    ),
                ));
            }
            if let Some((target, lun)) = attached.first() {
                return Err(bad(
                    ErrorCode::Refused,
                    format!(
                        "volume_delete: volume {} is attached as LUN {lun} of {target}; detach it first",
                        name.unwrap_or_default()
                    ),
                ));
            }
        }
        // A grown LUN's SANITIZE would not cover the new blocks (`sanitize_fence`).
        let _fences = sanitize_fence::fence_attached(method, &inner.model, &attached)?;
        phases::mark(phases::Phase::Apply);
        if !matches!(method, "volume_delete" | "volume_grow") {
            // A create, clone, list or check needs nothing of the model: the pool's own
            // commit (a sync) does not hold every other change of the control plane.
            drop(inner);
            let answer = volumes.call(method, params)?;
            phases::mark(phases::Phase::Pool);
            return Ok(answer);
        }
        let answer = volumes.call(method, params)?;
        phases::mark(phases::Phase::Pool);
        if method == "volume_grow" && !attached.is_empty() {
            let tpgt = self.portal_group_tag;
            let mut next = inner.model.clone();
            for (target, lun) in &attached {
                let entry = next.target_mut(target)?;
                if let Some(lun_entry) = entry.luns.get_mut(lun) {
                    lun_entry.info.blocks = lun_entry.unit.refresh_capacity();
                }
                entry.rebuild(target, tpgt);
            }
            self.publish_locked(&mut inner, &next)?;
            inner.model = next;
        }
        Ok(answer)
    }

    /// Opens the pool at `pool` and, the first time, records it in the state (a
    /// snapshot: rare); the path it is recorded under.
    fn record_pool(
        inner: &mut Inner,
        volumes: &dyn VolumeService,
        pool: &str,
        method: &str,
    ) -> Result<String, RpcError> {
        let recorded = volumes.open_pool(pool)?;
        if !inner.model.pools.contains(&recorded) {
            let mut next = inner.model.clone();
            next.pools.push(recorded.clone());
            next.pools.sort();
            next.generation += 1;
            // Rare: made durable as a whole snapshot, like portal changes.
            if let Some(dir) = inner.state.as_mut() {
                dir.snapshot(&next.to_state()).map_err(|e| {
                    bad(
                        ErrorCode::Persist,
                        format!("{method}: not done: the open pool was not recorded: {e}"),
                    )
                })?;
            }
            inner.model = next;
        }
        Ok(recorded)
    }

    /// Before `volume_delete` of a volume that a record of the state journal attaches:
    /// a `volume_forget` record, synced before the pool deletes it, so that a replay of
    /// that attach (whose spec may create a missing volume, `volume_attach`) neither
    /// fails on the deleted volume nor brings it back (`stand_in_for_deleted`).
    fn forget_volume(&self, pool: &str, name: &str) -> Result<(), RpcError> {
        let mut inner = self.lock();
        let Some(dir) = inner.state.as_ref() else {
            return Ok(());
        };
        let canonical = volumes::canonical(pool).display().to_string();
        if !dir.names_volume(&canonical, name) {
            return Ok(());
        }
        self.check_usable()?;
        // An attached or bound volume: the delete refuses it below, nothing to forget.
        if !attachments(&inner.model, pool, name).is_empty()
            || inner.model.bound.contains_key(&bindings::key(pool, name))
        {
            return Ok(());
        }
        inner.model.generation += 1;
        let record = JournalRecord {
            method: FORGET_METHOD.into(),
            params: json!({ "pool": canonical, "name": name }),
            identities: Vec::new(),
        };
        let version = match Self::write(&mut inner, &record) {
            Ok(version) => version,
            Err(e) => {
                inner.model.generation -= 1;
                return Err(e);
            }
        };
        drop(inner);
        self.settle_published(version)
    }

    /// Per-LUN figures (`stats`): plain LUNs and bound volumes.
    fn lun_stats(&self, p: rpc::LunStatsParams) -> Result<Value, RpcError> {
        stats::lun_stats(self, p)
    }

    fn target_list(&self) -> Value {
        let inner = self.lock();
        let targets: Vec<Value> = inner
            .model
            .targets
            .iter()
            .map(|(name, t)| {
                let luns: Vec<Value> = t
                    .luns
                    .iter()
                    .map(|(lun, e)| {
                        json!({
                            "lun": lun,
                            "backend": e.spec,
                            "kind": e.unit.backend().kind(),
                            "size_bytes": e.unit.blocks() * u64::from(e.unit.block_size()),
                            "block_size": e.unit.block_size(),
                            "naa": hex(&e.identity.naa_id),
                            "serial": e.identity.serial,
                        })
                    })
                    .collect();
                json!({
                    "name": name,
                    "alias": t.alias,
                    "allowed_initiators": t.allowed_initiators,
                    "chap_user": t.chap.as_ref().map(|c| c.user.clone()),
                    "mutual_chap_user": t.mutual_chap.as_ref().map(|c| c.user.clone()),
                    "luns": luns,
                })
            })
            .collect();
        json!({ "generation": inner.model.generation, "targets": targets })
    }

    /// `bind`: checked, applied in place, written to the journal (undone if that fails),
    /// then answered once a group commit synced and published it.
    fn bind(&self, p: rpc::Bind) -> Result<Value, RpcError> {
        let tpgt = self.portal_group_tag;
        self.check_usable()?;
        let mut inner = self.lock();
        let plan = bindings::plan_bind(&inner.model, p)?;
        let (answer, resolved) = bindings::apply_bind(&mut inner.model, plan, tpgt)?;
        phases::mark(phases::Phase::Apply);
        inner.model.generation += 1;
        let record = RecordOf {
            method: "bind",
            params: &resolved,
        };
        let version = match Self::write(&mut inner, &record) {
            Ok(version) => version,
            Err(e) => {
                bindings::undo_bind(&mut inner.model, &resolved, tpgt);
                inner.model.generation -= 1;
                return Err(e);
            }
        };
        drop(inner);
        phases::mark(phases::Phase::Journal);
        pace::tick();
        // A binding only adds: the host's next command sees it (and its unit attention).
        self.settle_for(version, group_commit::Visibility::NextPdu)?;
        Ok(answer)
    }

    /// `unbind`: applied in place, written to the journal (undone if that fails), synced
    /// and published by a group commit; answered once the commands in flight on the
    /// volumes it closes are done and flushed.
    fn unbind(&self, p: rpc::Unbind) -> Result<Value, RpcError> {
        let tpgt = self.portal_group_tag;
        self.check_usable()?;
        let mut inner = self.lock();
        // A volume closed while a SANITIZE writes to it: refused (`sanitize_fence`).
        let fences = sanitize_fence::fence_unbind(&inner.model, &p)?;
        let unbound = bindings::apply_unbind(&mut inner.model, &p, tpgt)?;
        phases::mark(phases::Phase::Apply);
        inner.model.generation += 1;
        let record = RecordOf {
            method: "unbind",
            params: &p,
        };
        let version = match Self::write(&mut inner, &record) {
            Ok(version) => version,
            Err(e) => {
                bindings::undo_unbind(&mut inner.model, unbound, tpgt);
                inner.model.generation -= 1;
                return Err(e);
            }
        };
        drop(inner);
        phases::mark(phases::Phase::Journal);
        pace::tick();
        self.settle(version)?;
        // Held until the volumes it closes have no command left (other bindings may keep
        // a volume open: its fence is not kept).
        let answer = bindings::drain(unbound);
        drop(fences);
        Ok(answer)
    }

    /// Writes the record of the model's change (already made) to the journal, unsynced,
    /// and gives the change its version. A full journal is written as a snapshot
    /// instead (synced at once).
    fn write(inner: &mut Inner, record: &impl serde::Serialize) -> Result<u64, RpcError> {
        if let Some(dir) = inner.state.as_mut() {
            write_record(dir, &inner.model, record).map_err(|e| {
                bad(
                    ErrorCode::Persist,
                    format!("the change was not made: state not written: {e}"),
                )
            })?;
        }
        inner.version += 1;
        Ok(inner.version)
    }

    /// Refuses changes once a journal sync failed (`group_commit`).
    fn check_usable(&self) -> Result<(), RpcError> {
        self.commits
            .check_usable()
            .map_err(|reason| bad(ErrorCode::Persist, reason))
    }

    /// Waits until the change at `version` is synced and published (`group_commit`), and
    /// until every event loop runs it.
    fn settle(&self, version: u64) -> Result<(), RpcError> {
        self.settle_for(version, group_commit::Visibility::EveryLoop)
    }

    /// Waits until the change at `version` is synced and published, and as `visibility`
    /// asks, until every event loop runs it.
    fn settle_for(
        &self,
        version: u64,
        visibility: group_commit::Visibility,
    ) -> Result<(), RpcError> {
        self.settle_published(version)?;
        if visibility == group_commit::Visibility::EveryLoop {
            let controller = self.lock().controller.clone();
            if let Some(controller) = controller {
                // A configuration holding the change (or a newer one) is published.
                controller.wait_applied(controller.published_epoch());
                phases::mark(phases::Phase::Visible);
            }
        }
        Ok(())
    }

    fn settle_published(&self, version: u64) -> Result<(), RpcError> {
        self.commits
            .settle(version, || {
                let mut inner = self.lock();
                self.commits.snapshot_taken();
                group_commit::Snapshot {
                    version: inner.version,
                    live: inner.model.live_targets(),
                    controller: inner.controller.clone(),
                    journal: inner.state.as_ref().map(StateDir::journal),
                    after_sync: std::mem::take(&mut inner.after_sync),
                }
            })
            .map_err(|reason| bad(ErrorCode::Persist, reason))
    }

    /// Publishes the model now, under the lock, for the rare changes that do not go
    /// through the journal (a grown volume, a migration's switch): the journal is synced
    /// first, since the model may hold records other calls wrote and still wait for.
    fn publish_locked(&self, inner: &mut Inner, next: &Model) -> Result<(), RpcError> {
        // A leader still doing the after-sync work of changes in `next` goes first.
        self.commits.wait_for_leader();
        if let Some(dir) = inner.state.as_ref() {
            dir.journal().sync_data().map_err(|e| {
                bad(
                    ErrorCode::Persist,
                    format!("syncing the state journal before publishing: {e}"),
                )
            })?;
        }
        // Changes whose records that sync covered and no leader took yet.
        for work in std::mem::take(&mut inner.after_sync) {
            work.run().map_err(|e| bad(ErrorCode::Persist, e))?;
        }
        inner.version += 1;
        if let Some(controller) = &inner.controller {
            self.commits
                .publish_in_order(controller, inner.version, next.live_targets());
            controller.wait_applied(controller.published_epoch());
        }
        Ok(())
    }

    /// A change of the configuration: made on a copy, written to the journal, kept, then
    /// answered once a group commit synced and published it.
    fn change(&self, call: Call) -> Result<Value, RpcError> {
        self.change_with(call, |_, _| Ok(None))
    }

    /// [`Control::change`], with `prepare` run under the lock before anything else: it
    /// may complete the call from the model, or refuse; the work it returns is run by
    /// the group commit's leader once the change's record is synced and before it is
    /// published, or cancelled if the change is not made (`volume_attach`).
    fn change_with(
        &self,
        mut call: Call,
        prepare: impl FnOnce(&Inner, &mut Call) -> Result<Option<AfterSyncWork>, RpcError>,
    ) -> Result<Value, RpcError> {
        let tpgt = self.portal_group_tag;
        self.check_usable()?;
        let mut inner = self.lock();
        let after_sync = prepare(&inner, &mut call)?;
        let cancel = |after_sync: &Option<AfterSyncWork>| {
            if let Some(work) = after_sync {
                work.cancel();
            }
        };
        let (method, params) = call.to_method_params();
        let visibility = visibility_of(&call);
        // Made in place: a change touches one target, so only that entry is kept aside
        // to undo it, not a copy of the whole model (thousands of targets).
        let touched = touched_target(&call).map(str::to_string);
        let prior = touched
            .as_ref()
            .map(|name| inner.model.targets.get(name).cloned());
        let undo = |model: &mut Model| {
            if let (Some(name), Some(prior)) = (&touched, &prior) {
                match prior {
                    Some(entry) => model.targets.insert(name.clone(), Arc::clone(entry)),
                    None => model.targets.remove(name),
                };
            }
        };
        // A unit removed while a SANITIZE writes to it: refused (`sanitize_fence`).
        let fences = match sanitize_fence::fence_change(&inner.model, &call) {
            Ok(fences) => fences,
            Err(e) => {
                cancel(&after_sync);
                return Err(e);
            }
        };
        // What a later `volume_delete` must forget first (`forget_volume`).
        let volumes_attached = match inner.state {
            Some(_) => pool_volumes_of(&call),
            None => Vec::new(),
        };
        let (answer, detached) = match apply_change(&mut inner.model, call, &[], tpgt) {
            Ok(done) => done,
            Err(e) => {
                undo(&mut inner.model);
                cancel(&after_sync);
                return Err(e);
            }
        };
        phases::mark(phases::Phase::Apply);
        inner.model.generation += 1;
        let Inner { model, state, .. } = &mut *inner;
        if let Some(dir) = state.as_mut() {
            let record = JournalRecord {
                method,
                params,
                identities: attached_identities(&answer),
            };
            if let Err(e) = write_record(dir, model, &record) {
                undo(model);
                model.generation -= 1;
                cancel(&after_sync);
                return Err(bad(
                    ErrorCode::Persist,
                    format!("the change was not made: state not written: {e}"),
                ));
            }
            for (pool, volume) in volumes_attached {
                dir.name_volume(pool, volume);
            }
        }
        inner.after_sync.extend(after_sync);
        inner.version += 1;
        let version = inner.version;
        drop(inner);
        phases::mark(phases::Phase::Journal);
        self.settle_for(version, visibility)?;
        fences.keep();
        // Data written to a detached unit is made durable now; the unit itself closes
        // when the last command still running on it ends (a RAM LUN's memory goes back
        // on a thread of its own then, not on the event loop that ran that command).
        for unit in detached {
            if let Err(error) = unit.backend().flush() {
                tracing::error!(%error, "flushing a detached LUN failed");
            }
            if unit.backend().holds_memory() {
                retire::unit(unit);
            }
        }
        Ok(answer)
    }
}

/// Per volume (canonical pool path, name), the index of the last `volume_forget` record.
fn forgotten_volumes(records: &[(u64, JournalRecord)]) -> BTreeMap<(String, String), usize> {
    let mut forgotten = BTreeMap::new();
    for (index, (_, record)) in records.iter().enumerate() {
        if record.method != FORGET_METHOD {
            continue;
        }
        let field = |key: &str| record.params.get(key).and_then(Value::as_str);
        if let (Some(pool), Some(name)) = (field("pool"), field("name")) {
            forgotten.insert((pool.to_string(), name.to_string()), index);
        }
    }
    forgotten
}

/// A LUN of a replayed change whose pool volume a later record deletes
/// (`forgotten_later`) and which the pool no longer has: opened as a stand-in (a null
/// unit; a later record of the journal detaches it), so the replay neither fails on it
/// nor creates it again. Returns (target, LUN, spec) of each stand-in.
fn stand_in_for_deleted(
    call: &mut Call,
    forgotten_later: impl Fn(&(String, String)) -> bool,
) -> Vec<(String, u64, String)> {
    let (target, specs): (&str, Vec<(u64, &mut String)>) = match call {
        Call::LunAttach(p) => (p.target.as_str(), vec![(p.lun, &mut p.backend)]),
        Call::TargetCreate(p) => (
            p.name.as_str(),
            p.luns.iter_mut().map(|l| (l.lun, &mut l.backend)).collect(),
        ),
        _ => return Vec::new(),
    };
    let mut stand_ins = Vec::new();
    for (lun, spec) in specs {
        let Ok(LunSpec {
            storage: crate::backend::Storage::Pool { path, volume, .. },
            ..
        }) = LunSpec::parse(spec)
        else {
            continue;
        };
        let key = (volumes::canonical(&path).display().to_string(), volume);
        if !forgotten_later(&key) {
            continue;
        }
        let present = crate::backend::Pool::open(std::path::Path::new(&path))
            .is_ok_and(|pool| pool.engine().volume(&key.1).is_some());
        if !present {
            stand_ins.push((target.to_string(), lun, std::mem::take(spec)));
            *spec = "null:1M".into();
        }
    }
    stand_ins
}

/// Stand-ins (`stand_in_for_deleted`) that no later record detached (the delete that
/// forgot the volume was refused): opened with their own spec after all, which creates a
/// volume `volume_create` with `attach` made and the pool lost.
fn reopen_stand_ins(
    model: &mut Model,
    stand_ins: Vec<(String, u64, String, u64)>,
    tpgt: u16,
) -> Result<(), RpcError> {
    for (target, lun, spec, unit) in stand_ins {
        let Some(entry) = model.targets.get_mut(&target).map(Arc::make_mut) else {
            continue;
        };
        let Some(identity) = entry
            .luns
            .get(&lun)
            .filter(|e| e.info.unit_id == unit)
            .map(|e| e.identity.clone())
        else {
            continue;
        };
        let opened = open_lun(&target, lun, &spec, Some(identity))?;
        entry.luns.insert(lun, opened);
        entry.rebuild(&target, tpgt);
    }
    Ok(())
}

/// The pool volumes (canonical pool path, volume) a change attaches as LUNs.
fn pool_volumes_of(call: &Call) -> Vec<(String, String)> {
    let specs: Vec<&str> = match call {
        Call::LunAttach(p) => vec![p.backend.as_str()],
        Call::TargetCreate(p) => p.luns.iter().map(|l| l.backend.as_str()).collect(),
        _ => Vec::new(),
    };
    specs
        .into_iter()
        .filter_map(|spec| match LunSpec::parse(spec) {
            Ok(LunSpec {
                storage: crate::backend::Storage::Pool { path, volume, .. },
                ..
            }) => Some((volumes::canonical(&path).display().to_string(), volume)),
            _ => None,
        })
        .collect()
}

/// The one target a change (`apply_change`) may alter, by name.
fn touched_target(call: &Call) -> Option<&str> {
    match call {
        Call::TargetCreate(p) => Some(&p.name),
        Call::TargetDelete(p) => Some(&p.name),
        Call::TargetSetAcl(p) => Some(&p.name),
        Call::TargetSetChap(p) => Some(&p.name),
        Call::LunAttach(p) => Some(&p.target),
        Call::LunDetach(p) => Some(&p.target),
        _ => None,
    }
}

/// What `call` needs of the event loops before its answer: changes that only add are
/// seen by the next PDU; the others wait until every loop runs them.
fn visibility_of(call: &Call) -> group_commit::Visibility {
    match call {
        // A new target or LUN, or secrets that only later logins use.
        Call::TargetCreate(_) | Call::LunAttach(_) | Call::TargetSetChap(_) => {
            group_commit::Visibility::NextPdu
        }
        _ => group_commit::Visibility::EveryLoop,
    }
}

/// The journal record written before a volume that records attach is deleted
/// (`Control::forget_volume`); not a method of the control socket.
const FORGET_METHOD: &str = "volume_forget";

/// One change as the journal keeps it: the call, and the identity found for each LUN it
/// attached, so that a replay opens them as the same disks.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct JournalRecord {
    method: String,
    params: Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    identities: Vec<RecordedIdentity>,
}

/// A [`JournalRecord`] with no identities, its parameters serialized where they are (a
/// `bind` or `unbind` of a batch: copying them into a `Value` first made an allocation
/// per volume name). Replay reads it as a `JournalRecord`.
#[derive(serde::Serialize)]
struct RecordOf<'a, P: serde::Serialize> {
    method: &'a str,
    params: &'a P,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct RecordedIdentity {
    lun: u64,
    naa: String,
    serial: String,
}

/// The identities an answer reports for the LUNs it attached (`lun_attach` answers one,
/// `target_create` a list).
fn attached_identities(answer: &Value) -> Vec<RecordedIdentity> {
    let one = |v: &Value| {
        Some(RecordedIdentity {
            lun: v.get("lun")?.as_u64()?,
            naa: v.get("naa")?.as_str()?.to_string(),
            serial: v.get("serial")?.as_str()?.to_string(),
        })
    };
    match answer.get("luns").and_then(Value::as_array) {
        Some(luns) => luns.iter().filter_map(one).collect(),
        None => one(answer).into_iter().collect(),
    }
}

/// The identity recorded for `lun`, if any.
fn recorded(identities: &[RecordedIdentity], lun: u64) -> Option<LuIdentity> {
    identities.iter().find(|i| i.lun == lun).and_then(|i| {
        parse_naa(&i.naa).map(|naa_id| LuIdentity {
            naa_id,
            serial: i.serial.clone(),
        })
    })
}

/// Writes `next`'s change to the journal, unsynced (a group commit syncs it), or a
/// snapshot of it (synced) when the journal is full.
fn write_record(
    dir: &mut StateDir,
    next: &Model,
    record: &impl serde::Serialize,
) -> Result<(), state::StateError> {
    let payload = serde_json::to_vec(record).unwrap_or_default();
    match dir.write(next.generation, &payload) {
        Err(state::StateError::JournalFull) => dir.snapshot(&next.to_state()),
        other => other,
    }
}

/// Applies one change to `next` (a copy of the configuration): the answer, and the units it
/// detached. `identities` are those a journal replay brings for the LUNs it attaches.
fn apply_change(
    next: &mut Model,
    call: Call,
    identities: &[RecordedIdentity],
    tpgt: u16,
) -> Result<(Value, Vec<Arc<LogicalUnit>>), RpcError> {
    {
        let mut detached: Vec<Arc<LogicalUnit>> = Vec::new();
        let answer = match call {
            Call::TargetCreate(p) => {
                check_name("target name", &p.name)?;
                check_acl(&p.name, &p.allowed_initiators)?;
                check_chap("chap", &p.chap)?;
                check_chap("mutual_chap", &p.mutual_chap)?;
                if p.mutual_chap.is_some() && p.chap.is_none() {
                    return Err(bad(
                        ErrorCode::InvalidParams,
                        "mutual_chap needs chap (the initiator authenticates first)",
                    ));
                }
                if let Some(alias) = &p.alias {
                    check_text("alias", alias)?;
                }
                if next.targets.contains_key(&p.name) {
                    return Err(bad(
                        ErrorCode::AlreadyExists,
                        format!("target {} exists", p.name),
                    ));
                }
                if next.targets.len() >= MAX_TARGETS {
                    return Err(bad(
                        ErrorCode::Refused,
                        format!("{MAX_TARGETS} targets exist already, the most one gateway holds"),
                    ));
                }
                let mut entry = TargetEntry::new(
                    &p.name,
                    p.alias,
                    p.allowed_initiators,
                    p.chap,
                    p.mutual_chap,
                    tpgt,
                );
                let mut luns = Vec::new();
                for new in &p.luns {
                    if entry.luns.contains_key(&new.lun) {
                        return Err(bad(
                            ErrorCode::InvalidParams,
                            format!("LUN {} is given twice", new.lun),
                        ));
                    }
                    let opened = open_lun(
                        &p.name,
                        new.lun,
                        &new.backend,
                        recorded(identities, new.lun),
                    )?;
                    luns.push(json!({
                        "lun": new.lun,
                        "size_bytes": opened.unit.blocks() * u64::from(opened.unit.block_size()),
                        "naa": hex(&opened.identity.naa_id),
                        "serial": opened.identity.serial,
                    }));
                    entry.luns.insert(new.lun, opened);
                }
                entry.rebuild(&p.name, tpgt);
                next.targets.insert(p.name.clone(), Arc::new(entry));
                json!({ "name": p.name, "luns": luns })
            }
            Call::TargetDelete(p) => {
                if next
                    .targets
                    .get(&p.name)
                    .is_some_and(|t| !t.bindings.is_empty())
                {
                    return Err(bad(
                        ErrorCode::Refused,
                        format!(
                            "target {} has volumes bound through its endpoints; unbind them first",
                            p.name
                        ),
                    ));
                }
                let Some(entry) = next.targets.remove(&p.name) else {
                    return Err(bad(ErrorCode::NotFound, format!("no target {}", p.name)));
                };
                detached.extend(entry.luns.values().map(|e| Arc::clone(&e.unit)));
                json!({ "name": p.name, "luns_detached": entry.luns.len() })
            }
            Call::TargetSetAcl(p) => {
                check_acl(&p.name, &p.allowed_initiators)?;
                let entry = next.target_mut(&p.name)?;
                entry.allowed_initiators = p.allowed_initiators;
                entry.rebuild(&p.name, tpgt);
                json!({ "name": p.name })
            }
            Call::TargetSetChap(p) => {
                check_chap("chap", &p.chap)?;
                check_chap("mutual_chap", &p.mutual_chap)?;
                if p.mutual_chap.is_some() && p.chap.is_none() {
                    return Err(bad(
                        ErrorCode::InvalidParams,
                        "mutual_chap needs chap (the initiator authenticates first)",
                    ));
                }
                let entry = next.target_mut(&p.name)?;
                entry.chap = p.chap;
                entry.mutual_chap = p.mutual_chap;
                entry.rebuild(&p.name, tpgt);
                json!({ "name": p.name })
            }
            Call::LunAttach(p) => {
                if let Ok(LunSpec {
                    storage: crate::backend::Storage::Pool { path, volume, .. },
                    ..
                }) = LunSpec::parse(&p.backend)
                {
                    if next.bound.contains_key(&bindings::key(&path, &volume)) {
                        return Err(bad(
                            ErrorCode::Refused,
                            format!(
                                "volume {volume} is bound through an endpoint; unbind it first"
                            ),
                        ));
                    }
                }
                let entry = next.target_mut(&p.target)?;
                if entry.luns.contains_key(&p.lun) {
                    return Err(bad(
                        ErrorCode::AlreadyExists,
                        format!("LUN {} of {} exists; detach it first", p.lun, p.target),
                    ));
                }
                let opened = open_lun(&p.target, p.lun, &p.backend, recorded(identities, p.lun))?;
                let answer = json!({
                    "target": p.target,
                    "lun": p.lun,
                    "size_bytes": opened.unit.blocks() * u64::from(opened.unit.block_size()),
                    "naa": hex(&opened.identity.naa_id),
                    "serial": opened.identity.serial,
                });
                entry.luns.insert(p.lun, opened);
                entry.rebuild(&p.target, tpgt);
                answer
            }
            Call::LunDetach(p) => {
                let entry = next.target_mut(&p.target)?;
                if let Ok(endpoint) = u16::try_from(p.lun) {
                    if let Some((host, _)) =
                        entry.bindings.iter().find(|(_, b)| b.count(endpoint) > 0)
                    {
                        return Err(bad(
                            ErrorCode::Refused,
                            format!("LUN {} of {} is an endpoint with volumes bound for {host}; unbind them first", p.lun, p.target),
                        ));
                    }
                }
                let Some(removed) = entry.luns.remove(&p.lun) else {
                    return Err(bad(
                        ErrorCode::NotFound,
                        format!("no LUN {} on {}", p.lun, p.target),
                    ));
                };
                detached.push(removed.unit);
                entry.rebuild(&p.target, tpgt);
                json!({ "target": p.target, "lun": p.lun })
            }
            other => {
                return Err(bad(
                    ErrorCode::Internal,
                    format!("{:?} is not a change", other.to_method_params().0),
                ))
            }
        };
        Ok((answer, detached))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpc::{LunAttach, LunRef, TargetCreate, TargetName};

    fn create(name: &str) -> Call {
        Call::TargetCreate(TargetCreate {
            name: name.into(),
            alias: None,
            allowed_initiators: None,
            chap: None,
            mutual_chap: None,
            luns: Vec::new(),
        })
    }

    fn attach(target: &str, lun: u64, backend: &str) -> Call {
        Call::LunAttach(LunAttach {
            target: target.into(),
            lun,
            backend: backend.into(),
        })
    }

    const T: &str = "iqn.2026-01.test:ctl";

    #[test]
    fn changes_are_checked_and_errors_name_the_problem() {
        let control = Control::new(None, 1);
        assert_eq!(
            control.handle(create("not a name")).unwrap_err().code,
            ErrorCode::InvalidParams
        );
        control.handle(create(T)).unwrap();
        assert_eq!(
            control.handle(create(T)).unwrap_err().code,
            ErrorCode::AlreadyExists
        );
        control.handle(attach(T, 0, "ram:1M")).unwrap();
        let e = control.handle(attach(T, 0, "ram:1M")).unwrap_err();
        assert_eq!(e.code, ErrorCode::AlreadyExists);
        assert!(e.message.contains("LUN 0"), "{}", e.message);
        let e = control.handle(attach(T, 1, "floppy:1M")).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidParams);
        let e = control.handle(attach(T, 20000, "ram:1M")).unwrap_err();
        assert!(e.message.contains("16383"), "{}", e.message);
        let e = control
            .handle(attach("iqn.2026-01.test:none", 0, "ram:1M"))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
        let e = control
            .handle(Call::LunDetach(LunRef {
                target: T.into(),
                lun: 9,
            }))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
        let e = control
            .handle(Call::Volume {
                method: "volume_create".into(),
                params: json!({}),
            })
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::NotAvailable);
        assert!(e.message.contains("no pool configured"));
        let list = control.handle(Call::TargetList).unwrap();
        assert_eq!(list["targets"][0]["luns"][0]["size_bytes"], 1 << 20);
        assert_eq!(list["generation"], 2);
    }

    #[test]
    fn a_lun_attached_live_keeps_its_options() {
        let entry = open_lun(T, 3, "ram:1M,readonly", None).unwrap();
        assert!(entry.unit.config().read_only, "readonly attached live");
        let entry = open_lun(T, 4, "ram:1M", None).unwrap();
        assert!(!entry.unit.config().read_only);
    }

    #[test]
    fn a_restart_from_the_state_directory_brings_back_targets_luns_and_identities() {
        let dir = std::env::temp_dir().join(format!("gateway-control-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let control = Control::new(Some(StateDir::open(&dir).unwrap()), 1);
        control.load(&[]).unwrap();
        control.handle(create(T)).unwrap();
        let attached = control.handle(attach(T, 3, "ram:2M")).unwrap();
        let with_luns = control
            .handle(Call::TargetCreate(TargetCreate {
                luns: vec![
                    rpc::NewLun {
                        lun: 0,
                        backend: "ram:1M".into(),
                    },
                    rpc::NewLun {
                        lun: 7,
                        backend: "null:1G".into(),
                    },
                ],
                ..match create("iqn.2026-01.test:two") {
                    Call::TargetCreate(p) => p,
                    _ => unreachable!(),
                }
            }))
            .unwrap();
        assert_eq!(with_luns["luns"].as_array().map(Vec::len), Some(2));
        control.handle(create("iqn.2026-01.test:gone")).unwrap();
        control
            .handle(Call::TargetDelete(TargetName {
                name: "iqn.2026-01.test:gone".into(),
            }))
            .unwrap();
        let before = control.handle(Call::TargetList).unwrap();
        drop(control);

        let again = Control::new(Some(StateDir::open(&dir).unwrap()), 1);
        assert!(
            again.load(&[]).unwrap(),
            "the state directory's configuration is used"
        );
        let after = again.handle(Call::TargetList).unwrap();
        assert_eq!(before, after);
        assert_eq!(after["targets"][0]["luns"][0]["naa"], attached["naa"]);
        assert_eq!(after["targets"][0]["luns"][0]["serial"], attached["serial"]);
        assert_eq!(after["generation"], 5);
        let two = &after["targets"][1];
        assert_eq!(two["name"], "iqn.2026-01.test:two");
        assert_eq!(two["luns"][1]["naa"], with_luns["luns"][1]["naa"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod volume_tests {
    use super::*;

    fn volume(method: &str, params: Value) -> Call {
        Call::Volume {
            method: method.into(),
            params,
        }
    }

    #[test]
    fn an_open_pool_is_recorded_in_the_state_and_opened_again_at_restart() {
        let dir = std::env::temp_dir().join(format!("gateway-volumes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pool = dir.join("pool.img");
        drop(crate::backend::Pool::create(&pool, 64 << 20).unwrap());
        let p = pool.display().to_string();
        let state = dir.join("state");
        let control = Control::new(Some(StateDir::open(&state).unwrap()), 1);
        control.set_volumes(Arc::new(volumes::PoolVolumes::new()));
        control.load(&[]).unwrap();
        let made = control
            .handle(volume(
                "volume_create",
                json!({"pool": p, "name": "v1", "size": "8M"}),
            ))
            .unwrap();
        assert_eq!(made["size_bytes"], 8 << 20);
        let e = control
            .handle(volume(
                "volume_create",
                json!({"pool": p, "name": "v1", "size": 1}),
            ))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::AlreadyExists);
        let e = control
            .handle(volume(
                "volume_create",
                json!({"pool": p, "name": "v2", "size": "8Q"}),
            ))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidParams, "{}", e.message);
        let e = control
            .handle(volume(
                "volume_grow",
                json!({"pool": p, "name": "v1", "size": "1M"}),
            ))
            .unwrap_err();
        assert!(e.message.contains("never shrink"), "{}", e.message);
        let e = control
            .handle(volume("volume_remove", json!({"pool": p})))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::MethodNotFound);
        drop(control);

        // Without a volume service the recorded pool cannot be opened: start refuses.
        let bare = Control::new(Some(StateDir::open(&state).unwrap()), 1);
        let e = bare.load(&[]).expect_err("refused");
        assert!(e.to_string().contains("open pools"), "{e}");
        drop(bare);

        let again = Control::new(Some(StateDir::open(&state).unwrap()), 1);
        again.set_volumes(Arc::new(volumes::PoolVolumes::new()));
        again.load(&[]).unwrap();
        // No pool named: the pools recorded are open again.
        let list = again.handle(volume("volume_list", json!({}))).unwrap();
        assert_eq!(list["volumes"][0]["name"], "v1", "{list}");
        let check = again.handle(volume("volume_check", json!({}))).unwrap();
        assert_eq!(check["pools"][0]["ok"], true, "{check}");
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod volume_attach_tests {
    use super::*;

    const T: &str = "iqn.2026-12.test:attach";

    fn volume(method: &str, params: Value) -> Call {
        Call::Volume {
            method: method.into(),
            params,
        }
    }

    fn call(control: &Control, method: &str, params: Value) -> Result<Value, RpcError> {
        let call = rpc::parse_call(method, params).unwrap();
        control.handle(call)
    }

    /// A state directory and a pool file in a fresh directory, and a control plane over
    /// them with the target `T`.
    fn start(dir: &std::path::Path) -> (Control, String) {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        let pool = dir.join("pool.img");
        drop(crate::backend::Pool::create(&pool, 64 << 20).unwrap());
        let control = restart(dir);
        call(&control, "target_create", json!({ "name": T })).unwrap();
        (control, pool.display().to_string())
    }

    fn restart(dir: &std::path::Path) -> Control {
        let control = Control::new(Some(StateDir::open(&dir.join("state")).unwrap()), 1);
        control.set_volumes(Arc::new(volumes::PoolVolumes::new()));
        control.load(&[]).unwrap();
        control
    }

    fn names(control: &Control) -> Vec<String> {
        let list = control.handle(volume("volume_list", json!({}))).unwrap();
        list["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn luns(control: &Control) -> Vec<(u64, String)> {
        let list = control.handle(Call::TargetList).unwrap();
        list["targets"][0]["luns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["lun"].as_u64().unwrap(),
                    l["naa"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// One call makes the volume and its LUN (the lowest free number when none is
    /// given); a refusal (no such target, a LUN taken, a bad size) leaves no volume; a
    /// restart brings both back once, with the same identity; a volume deleted after its
    /// LUN was detached neither stops the replay nor comes back, made with `attach` or
    /// by the two calls.
    #[test]
    fn create_with_attach_replays_exactly_once_and_deleted_volumes_stay_deleted() {
        let dir = std::env::temp_dir().join(format!("gateway-attach-{}", std::process::id()));
        let (control, p) = start(&dir);
        let create = |name: &str, attach: Value| {
            volume(
                "volume_create",
                json!({"pool": p, "name": name, "size": "8M", "attach": attach}),
            )
        };
        let e = control
            .handle(create("v1", json!({"target": "iqn.2026-12.test:none"})))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound, "{}", e.message);
        control
            .handle(Call::LunAttach(rpc::LunAttach {
                target: T.into(),
                lun: 0,
                backend: "ram:1M".into(),
            }))
            .unwrap();
        let e = control
            .handle(create("v1", json!({"target": T, "lun": 0})))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::AlreadyExists, "{}", e.message);
        let e = control
            .handle(volume(
                "volume_create",
                json!({"pool": p, "name": "v1", "size": 1000, "attach": {"target": T}}),
            ))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidParams, "{}", e.message);
        assert!(names(&control).is_empty(), "refused: no volume made");

        let made = control.handle(create("v1", json!({"target": T}))).unwrap();
        assert_eq!(
            (made["lun"].as_u64(), made["name"].as_str()),
            (Some(1), Some("v1"))
        );
        assert_eq!(made["size_bytes"], 8 << 20);
        assert_eq!(names(&control), ["v1"]);
        // Made with `attach`, then detached and deleted; and the same by two calls.
        control
            .handle(create("v2", json!({"target": T, "lun": 5})))
            .unwrap();
        call(
            &control,
            "volume_create",
            json!({"pool": p, "name": "v3", "size": "8M"}),
        )
        .unwrap();
        let spec = format!("pool:{p},volume=v3");
        call(
            &control,
            "lun_attach",
            json!({"target": T, "lun": 6, "backend": spec}),
        )
        .unwrap();
        for (lun, name) in [(5, "v2"), (6, "v3")] {
            call(&control, "lun_detach", json!({"target": T, "lun": lun})).unwrap();
            call(&control, "volume_delete", json!({"pool": p, "name": name})).unwrap();
        }
        let before = luns(&control);
        drop(control);

        let again = restart(&dir);
        assert_eq!(luns(&again), before, "LUNs 0 and 1, the same identities");
        assert_eq!(luns(&again)[1].1, made["naa"].as_str().unwrap());
        assert_eq!(names(&again), ["v1"], "deleted volumes stay deleted");
        let check = again.handle(volume("volume_check", json!({}))).unwrap();
        assert_eq!(check["pools"][0]["ok"], true, "{check}");
        // The replayed state was snapshotted: a second restart agrees.
        drop(again);
        let third = restart(&dir);
        assert_eq!(luns(&third), before);
        assert_eq!(names(&third), ["v1"]);
        drop(third);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Without a state directory the pool's own record is the commit: appended (and
    /// synced) before the call returns, so the pool opened again has the volume.
    #[test]
    fn without_a_state_directory_the_pool_records_the_volume_itself() {
        let dir = std::env::temp_dir().join(format!("gateway-attach-bare-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pool = dir.join("pool.img");
        drop(crate::backend::Pool::create(&pool, 64 << 20).unwrap());
        let p = pool.display().to_string();
        let control = Control::new(None, 1);
        control.set_volumes(Arc::new(volumes::PoolVolumes::new()));
        control.load(&[]).unwrap();
        call(&control, "target_create", json!({ "name": T })).unwrap();
        let made = control
            .handle(volume(
                "volume_create",
                json!({"pool": p, "name": "v1", "size": "8M", "attach": {"target": T}}),
            ))
            .unwrap();
        assert_eq!(made["lun"], 0);
        drop(control);
        let reopened = crate::backend::Pool::open(&pool).unwrap();
        assert!(reopened.engine().volume("v1").is_some(), "the pool has it");
        drop(reopened);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The state journal is the commit of `volume_create` with `attach`: a pool that lost
    /// the volume's record (here a new pool file at the same path) gets the volume again
    /// at restart, under the LUN's recorded identity.
    #[test]
    fn a_volume_the_pool_lost_is_created_again_from_the_state_journal() {
        let dir = std::env::temp_dir().join(format!("gateway-attach-lost-{}", std::process::id()));
        let (control, p) = start(&dir);
        let made = control
            .handle(volume(
                "volume_create",
                json!({"pool": p, "name": "v1", "size": "8M", "attach": {"target": T, "lun": 2}}),
            ))
            .unwrap();
        drop(control);
        std::fs::remove_file(&p).unwrap();
        drop(crate::backend::Pool::create(std::path::Path::new(&p), 64 << 20).unwrap());

        let again = restart(&dir);
        assert_eq!(names(&again), ["v1"]);
        assert_eq!(
            luns(&again),
            [(2, made["naa"].as_str().unwrap().to_string())]
        );
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
