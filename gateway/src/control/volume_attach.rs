//! `volume_create` with `attach`: a volume made in a pool and attached to a target as a
//! LUN in one call and one durable commit (issue 16: create + attach through the control
//! plane, p99 < 2 ms with the commit; arrays offer it as one call).
//!
//! Done as two calls it costs two syncs one after the other: the pool's journal
//! (`volume_create`), then the state directory's (`lun_attach`). Here the state
//! directory's journal is the one commit point:
//! 1. under the control lock the volume is reserved in the pool, in memory only
//!    (`Engine::reserve_volume`: no record, no sync), and attached as the LUN spec
//!    `pool:PATH,volume=NAME,size=BYTES`, whose `size=` creates the volume when a
//!    restart does not find it (`Pool::open_volume`); the call's record is a
//!    `lun_attach` of that spec, written like any change;
//! 2. the group commit's leader syncs the state journal, then appends the pool's record
//!    of the volume without syncing it (`Engine::journal_reserved`, an
//!    [`AfterSync`]), then publishes: no host can write to the volume before its record
//!    is in the pool's journal, and the pool's next commit syncs that record before any
//!    of the volume's chunks.
//!
//! So a crash leaves neither (the reservation was memory only: the pool's checkpoints
//! leave it out) or both (the record replays; the volume is there, or created again
//! with the recorded identity if its pool record was lost): exactly once. Without a
//! state directory the pool's record, synced, is the commit. A volume deleted after such
//! a record is forgotten in the journal first (`Control::forget_volume`), so a replay
//! does not create it again.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use super::group_commit::AfterSync;
use super::rpc::{self, Call, ErrorCode, RpcError};
use super::volumes::Size;
use super::{bad, Control, VolumeService};
use crate::server;

/// `volume_create` parameters with `attach`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAttached {
    pool: String,
    name: String,
    size: Size,
    attach: AttachTo,
}

/// Where the new volume goes: a target, at `lun` or the lowest free LUN number.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachTo {
    target: String,
    #[serde(default)]
    lun: Option<u64>,
}

impl Control {
    /// `volume_create` with `attach` (see the module doc).
    pub(super) fn volume_create_attached(
        &self,
        service: Arc<dyn VolumeService>,
        params: Value,
    ) -> Result<Value, RpcError> {
        let p: CreateAttached = serde_json::from_value(params).map_err(|e| {
            bad(
                ErrorCode::InvalidParams,
                format!("volume_create: invalid parameters: {e}"),
            )
        })?;
        let size_bytes = p.size.bytes("size")?;
        let pool = {
            let mut inner = self.lock();
            Self::record_pool(&mut inner, &*service, &p.pool, "volume_create")?
        };
        let target = p.attach.target;
        let name = p.name;
        let mut answer = self.change_with(
            Call::LunAttach(rpc::LunAttach {
                target: target.clone(),
                lun: 0,
                backend: String::new(),
            }),
            |inner, call| {
                let entry = inner.model.targets.get(&target).ok_or_else(|| {
                    bad(
                        ErrorCode::NotFound,
                        format!("volume_create: no target {target} to attach to"),
                    )
                })?;
                let lun = match p.attach.lun {
                    Some(lun) if entry.luns.contains_key(&lun) => {
                        return Err(bad(
                            ErrorCode::AlreadyExists,
                            format!("LUN {lun} of {target} exists; the volume was not created"),
                        ))
                    }
                    Some(lun) => lun,
                    None => (0..server::LUN_NUMBER_LIMIT)
                        .find(|lun| !entry.luns.contains_key(lun))
                        .ok_or_else(|| {
                            bad(
                                ErrorCode::Refused,
                                format!("{target} has no free LUN number"),
                            )
                        })?,
                };
                let reservation =
                    service.reserve_volume(&pool, &name, size_bytes, inner.state.is_some())?;
                if let Call::LunAttach(attach) = call {
                    attach.lun = lun;
                    attach.backend = format!("pool:{pool},volume={name},size={size_bytes}");
                }
                Ok(Some(Box::new(reservation) as Box<dyn AfterSync>))
            },
        )?;
        answer["pool"] = json!(pool);
        answer["name"] = json!(name);
        Ok(answer)
    }
}
