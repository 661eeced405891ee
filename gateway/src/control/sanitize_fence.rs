//! Control verbs that replace or remove a unit's backend do not run beside a SANITIZE.
//!
//! A SANITIZE (with IMMED, on a thread of its own) writes to the backend it started on
//! until the whole medium is done (`disk::sanitizing`). Replacing that backend meanwhile
//! would lose it: a migration would copy blocks the sanitize had not reached yet and
//! switch to a destination that never gets the rest; a detach or delete would leave a
//! thread writing to a medium no longer exported; a grow would add blocks the operation
//! does not cover although it reports the medium done. So those verbs (`lun_detach`,
//! `target_delete`, `volume_grow` of an exported volume, `migrate_start`,
//! `migrate_complete`, `migrate_commit`, `migrate_cancel`/`migrate_rollback`,
//! `changes_track`) take a fence on each unit they touch before they change anything
//! and are refused, with an error that names the sanitize and its progress, while one
//! runs. They refuse rather than wait: a sanitize can take hours, and a control call
//! that hangs that long holds the control plane's lock. While a fence is held a SANITIZE
//! that arrives is refused with NOT READY, OPERATION IN PROGRESS (hosts retry); a unit
//! detached or deleted keeps its fence, so a SANITIZE still queued for it never starts.

use std::sync::Arc;

use super::rpc::{Call, ErrorCode, RpcError};
use super::{bad, Model};
use crate::disk::{LogicalUnit, SanitizeFence, SanitizeFenceRefused};

/// The fences a verb holds on the units it replaces or removes.
#[must_use = "the fences hold off SANITIZE only while kept"]
#[derive(Debug, Default)]
pub(super) struct Fences(Vec<SanitizeFence>);

impl Fences {
    /// The units are gone for good (detached, deleted): no SANITIZE starts on them again.
    pub fn keep(self) {
        self.0.into_iter().for_each(SanitizeFence::keep);
    }
}

/// Fences every unit of `units` (target, LUN, unit), or none: the error names the first
/// refused and why.
pub(super) fn fence_units<'a>(
    verb: &str,
    units: impl IntoIterator<Item = (&'a str, u64, &'a LogicalUnit)>,
) -> Result<Fences, RpcError> {
    let mut fences = Fences::default();
    for (target, lun, unit) in units {
        let fence = unit.fence_sanitize().map_err(|refused| match refused {
            SanitizeFenceRefused::Running { percent_done } => bad(
                ErrorCode::Refused,
                format!(
                    "{verb}: LUN {lun} of {target}: a SANITIZE is in progress on it \
                     ({percent_done}% done) and writes to its backend until it ends; try again \
                     once TEST UNIT READY no longer reports SANITIZE IN PROGRESS (04h/1Bh)"
                ),
            ),
            SanitizeFenceRefused::Fenced => bad(
                ErrorCode::Refused,
                format!(
                    "{verb}: LUN {lun} of {target}: another control call is replacing its \
                     backend; try again"
                ),
            ),
        })?;
        fences.0.push(fence);
    }
    Ok(fences)
}

/// The fences a configuration change needs: the units `lun_detach` and `target_delete`
/// remove (none for the other changes, and none for what does not exist: the change
/// itself reports that).
pub(super) fn fence_change(model: &Model, call: &Call) -> Result<Fences, RpcError> {
    let (verb, target, lun) = match call {
        Call::LunDetach(p) => ("lun_detach", &p.target, Some(p.lun)),
        Call::TargetDelete(p) => ("target_delete", &p.name, None),
        _ => return Ok(Fences::default()),
    };
    let Some(entry) = model.targets.get(target) else {
        return Ok(Fences::default());
    };
    let units: Vec<(&str, u64, &LogicalUnit)> = entry
        .luns
        .iter()
        .filter(|(number, _)| lun.is_none_or(|l| l == **number))
        .map(|(number, e)| (target.as_str(), *number, e.unit.as_ref()))
        .collect();
    fence_units(verb, units)
}

/// The fences of the LUNs `attached` (target, LUN) of `model` (a grown volume's).
pub(super) fn fence_attached(
    verb: &str,
    model: &Model,
    attached: &[(String, u64)],
) -> Result<Fences, RpcError> {
    let units: Vec<(&str, u64, Arc<LogicalUnit>)> = attached
        .iter()
        .filter_map(|(target, lun)| {
            let unit = model.targets.get(target)?.luns.get(lun)?.unit.clone();
            Some((target.as_str(), *lun, unit))
        })
        .collect();
    fence_units(verb, units.iter().map(|(t, l, u)| (*t, *l, u.as_ref())))
}

/// The fence of LUN `lun` of `target` (none when there is no such LUN: the verb reports
/// that itself).
pub(super) fn fence_lun(
    verb: &str,
    model: &Model,
    target: &str,
    lun: u64,
) -> Result<Fences, RpcError> {
    fence_attached(verb, model, &[(target.to_string(), lun)])
}
