//! The `volume_*` methods over the volume pool's library API ([`crate::backend::Pool`]).
//!
//! Every method names its pool by path (`pool`). A pool the control plane touches stays
//! open here (an `Arc<Pool>`), and [`VolumeService::pools`] lists them, so the control
//! plane records which pools are open in its state directory and a restart opens them
//! again ([`VolumeService::restore`]). The volumes themselves are the pool's: each pool
//! operation is committed in the pool before it returns, so nothing about a volume is
//! kept in the control plane's state.
//!
//! What needs the configuration (refusing to delete a volume attached as a LUN, a LUN's
//! new capacity after a grow) is done by [`super::Control`] around these calls.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::{json, Value};

use super::rpc::{ErrorCode, RpcError};
use super::VolumeService;
use crate::backend::{parse_size, Pool, PoolError};

/// A size: bytes, or text with a unit (`"10G"`), as in LUN specs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    pub fn bytes(&self, what: &str) -> Result<u64, RpcError> {
        match self {
            Size::Bytes(bytes) => Ok(*bytes),
            Size::Text(text) => parse_size(text)
                .map_err(|e| RpcError::new(ErrorCode::InvalidParams, format!("{what}: {e}"))),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    pool: String,
    name: String,
    size: Size,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloneParams {
    pool: String,
    source: String,
    name: String,
}

/// `volume_delete` (and the volume a call names).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeRef {
    pub pool: String,
    pub name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolFilter {
    #[serde(default)]
    pool: Option<String>,
}

/// The methods this service answers.
pub const METHODS: [&str; 6] = [
    "volume_create",
    "volume_grow",
    "volume_clone",
    "volume_delete",
    "volume_list",
    "volume_check",
];

fn params<T: serde::de::DeserializeOwned>(method: &str, params: Value) -> Result<T, RpcError> {
    serde_json::from_value(params).map_err(|e| {
        RpcError::new(
            ErrorCode::InvalidParams,
            format!("{method}: invalid parameters: {e}"),
        )
    })
}

/// The error code for a pool's refusal.
fn pool_error(method: &str, pool: &str, error: PoolError) -> RpcError {
    let code = match &error {
        PoolError::NoVolume(_) => ErrorCode::NotFound,
        PoolError::VolumeExists(_) | PoolError::Exists { .. } => ErrorCode::AlreadyExists,
        PoolError::VolumeInUse(_) | PoolError::VolumeCreating(_) | PoolError::Locked { .. } => {
            ErrorCode::Refused
        }
        PoolError::BadName(_)
        | PoolError::BadSize(_)
        | PoolError::Shrink { .. }
        | PoolError::TooSmall(_) => ErrorCode::InvalidParams,
        _ => ErrorCode::Backend,
    };
    RpcError::new(code, format!("{method} (pool {pool}): {error}"))
}

/// The pool's path as the registry keys it, or the path as given when it does not exist.
pub fn canonical(path: &str) -> PathBuf {
    crate::backend::pool::resolved_path(Path::new(path)).unwrap_or_else(|_| PathBuf::from(path))
}

/// The volume pools the control plane has opened.
#[derive(Default)]
pub struct PoolVolumes {
    /// By canonical path.
    pools: Mutex<BTreeMap<PathBuf, Arc<Pool>>>,
}

impl PoolVolumes {
    pub fn new() -> PoolVolumes {
        PoolVolumes::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<PathBuf, Arc<Pool>>> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pool at `path`, opened (and kept open) when it is not yet.
    fn pool(&self, method: &str, path: &str) -> Result<Arc<Pool>, RpcError> {
        let key = canonical(path);
        if let Some(pool) = self.lock().get(&key) {
            return Ok(Arc::clone(pool));
        }
        let pool = Pool::open(Path::new(path)).map_err(|e| pool_error(method, path, e))?;
        self.lock()
            .insert(pool.path().to_path_buf(), Arc::clone(&pool));
        Ok(pool)
    }

    /// The pools a filter names: the one given, else every open pool.
    fn selected(&self, method: &str, filter: &Option<String>) -> Result<Vec<Arc<Pool>>, RpcError> {
        match filter {
            Some(path) => Ok(vec![self.pool(method, path)?]),
            None => Ok(self.lock().values().cloned().collect()),
        }
    }
}

/// A volume made in a pool's memory only (`Engine::reserve_volume`), for `volume_create`
/// with `attach` (`super::volume_attach`): its record is appended to the pool's journal
/// once the control plane's own record is synced, or the volume is dropped.
pub struct Reservation {
    pool: Arc<Pool>,
    id: u32,
    /// Sync the pool's record too: no state directory holds the volume.
    sync: bool,
}

impl super::group_commit::AfterSync for Reservation {
    fn run(&self) -> Result<(), String> {
        self.pool
            .engine()
            .journal_reserved(self.id, self.sync)
            .map_err(|e| {
                format!(
                    "recording the new volume in pool {}: {e}",
                    self.pool.path().display()
                )
            })
    }

    fn cancel(&self) {
        self.pool.engine().cancel_reserved(self.id);
    }
}

fn volume_row(pool: &Pool, v: &crate::backend::pool::VolumeInfo) -> Value {
    json!({
        "pool": pool.path().display().to_string(),
        "name": v.name,
        "size_bytes": v.size_bytes,
        "allocated_bytes": v.allocated_bytes,
        "chunks": v.chunks,
    })
}

impl VolumeService for PoolVolumes {
    fn call(&self, method: &str, raw: Value) -> Result<Value, RpcError> {
        match method {
            "volume_create" => {
                let p: CreateParams = params(method, raw)?;
                let size = p.size.bytes("size")?;
                let pool = self.pool(method, &p.pool)?;
                pool.create_volume(&p.name, size)
                    .map_err(|e| pool_error(method, &p.pool, e))?;
                Ok(
                    json!({ "pool": pool.path().display().to_string(), "name": p.name, "size_bytes": size }),
                )
            }
            "volume_grow" => {
                let p: CreateParams = params(method, raw)?;
                let size = p.size.bytes("size")?;
                let pool = self.pool(method, &p.pool)?;
                pool.grow_volume(&p.name, size)
                    .map_err(|e| pool_error(method, &p.pool, e))?;
                Ok(
                    json!({ "pool": pool.path().display().to_string(), "name": p.name, "size_bytes": size }),
                )
            }
            "volume_clone" => {
                let p: CloneParams = params(method, raw)?;
                let pool = self.pool(method, &p.pool)?;
                pool.clone_volume(&p.source, &p.name)
                    .map_err(|e| pool_error(method, &p.pool, e))?;
                let size = pool
                    .list_volumes()
                    .iter()
                    .find(|v| v.name == p.name)
                    .map_or(0, |v| v.size_bytes);
                Ok(json!({
                    "pool": pool.path().display().to_string(),
                    "source": p.source,
                    "name": p.name,
                    "size_bytes": size,
                }))
            }
            "volume_delete" => {
                let p: VolumeRef = params(method, raw)?;
                let pool = self.pool(method, &p.pool)?;
                pool.delete_volume(&p.name)
                    .map_err(|e| pool_error(method, &p.pool, e))?;
                Ok(json!({ "pool": pool.path().display().to_string(), "name": p.name }))
            }
            "volume_list" => {
                let p: PoolFilter = params(method, raw)?;
                let rows: Vec<Value> = self
                    .selected(method, &p.pool)?
                    .iter()
                    .flat_map(|pool| {
                        pool.list_volumes()
                            .iter()
                            .map(|v| volume_row(pool, v))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                Ok(json!({ "volumes": rows }))
            }
            "volume_check" => {
                let p: PoolFilter = params(method, raw)?;
                let rows: Vec<Value> = self
                    .selected(method, &p.pool)?
                    .iter()
                    .map(|pool| {
                        let r = pool.check();
                        json!({
                            "pool": pool.path().display().to_string(),
                            "ok": r.problems.is_empty(),
                            "volumes": r.volumes,
                            "mapped_entries": r.mapped_entries,
                            "used_chunks": r.used_chunks,
                            "free_chunks": r.free_chunks,
                            "total_chunks": r.total_chunks,
                            "metadata_bytes": r.metadata_bytes,
                            "problems": r.problems,
                        })
                    })
                    .collect();
                Ok(json!({ "pools": rows }))
            }
            other => Err(RpcError::new(
                ErrorCode::MethodNotFound,
                format!(
                    "no method {other:?}; the volume methods are {}",
                    METHODS.join(", ")
                ),
            )),
        }
    }

    fn reserve_volume(
        &self,
        pool: &str,
        name: &str,
        size_bytes: u64,
        durable_elsewhere: bool,
    ) -> Result<Reservation, RpcError> {
        let opened = self.pool("volume_create", pool)?;
        let id = opened
            .engine()
            .reserve_volume(name, size_bytes)
            .map_err(|e| pool_error("volume_create", pool, e))?;
        Ok(Reservation {
            pool: opened,
            id,
            sync: !durable_elsewhere,
        })
    }

    fn pools(&self) -> Vec<String> {
        self.lock()
            .keys()
            .map(|path| path.display().to_string())
            .collect()
    }

    fn open_pool(&self, path: &str) -> Result<String, RpcError> {
        let pool = self.pool("opening the pool", path)?;
        Ok(pool.path().display().to_string())
    }

    fn create_pool(&self, path: &str, size_bytes: u64) -> Result<String, RpcError> {
        let pool = Pool::create(Path::new(path), size_bytes)
            .map_err(|e| pool_error("pool_create", path, e))?;
        let recorded = pool.path().to_path_buf();
        self.lock().insert(recorded.clone(), pool);
        Ok(recorded.display().to_string())
    }

    fn close_pool(&self, path: &str) -> Result<String, RpcError> {
        match self.lock().remove(&canonical(path)) {
            // The pool closes (and its lock goes) when the last LUN holding it is gone;
            // the control plane refused the close while any LUN exported it.
            Some(pool) => Ok(pool.path().display().to_string()),
            None => Err(RpcError::new(
                ErrorCode::NotFound,
                format!("pool_close: no open pool {path}"),
            )),
        }
    }

    fn describe_pools(&self) -> Vec<Value> {
        self.lock()
            .values()
            .map(|pool| {
                let volumes = pool.list_volumes();
                json!({
                    "path": pool.path().display().to_string(),
                    "volumes": volumes.len(),
                    "allocated_bytes": volumes.iter().map(|v| v.allocated_bytes).sum::<u64>(),
                    "data_bytes": u64::from(pool.engine().layout().chunks) * crate::backend::pool::format::CHUNK_BYTES,
                })
            })
            .collect()
    }
}
