//! Control verbs that replace or remove a unit's backend do not run beside a SANITIZE.
//!
//! A SANITIZE (with IMMED, on a thread of its own) writes to the backend it started on
//! until the whole medium is done (`disk::sanitizing`). Replacing that backend meanwhile
//! would lose it: a migration would copy blocks the sanitize had not reached yet and
//! switch to a destination that never gets the rest; a detach, delete or unbind would
//! leave a thread writing to a medium no longer exported; a grow would add blocks the
//! operation does not cover although it reports the medium done. So those verbs
//! (`lun_detach`, `target_delete`, `unbind`, `volume_grow` of an exported volume,
//! `migrate_start`, `migrate_complete`, `migrate_commit`,
//! `migrate_cancel`/`migrate_rollback`, `changes_track`) take a fence on each unit they
//! touch before they change anything
//! and are refused, with an error that names the sanitize and its progress, while one
//! runs. They refuse rather than wait: a sanitize can take hours, and a control call
//! that hangs that long holds the control plane's lock. While a fence is held a SANITIZE
//! that arrives is refused with NOT READY, OPERATION IN PROGRESS (hosts retry); a unit
//! detached or deleted keeps its fence, so a SANITIZE still queued for it never starts.

use std::sync::Arc;

use super::rpc::{Call, ErrorCode, RpcError, Unbind};
use super::{bad, bindings, Model};
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

/// Fences every unit of `units` (what it is, e.g. "LUN 0 of iqn...", and the unit), or
/// none: the error names the first refused and why.
pub(super) fn fence_units<'a, W: std::fmt::Display>(
    verb: &str,
    units: impl IntoIterator<Item = (W, &'a LogicalUnit)>,
) -> Result<Fences, RpcError> {
    let mut fences = Fences::default();
    for (what, unit) in units {
        let fence = unit.fence_sanitize().map_err(|refused| match refused {
            SanitizeFenceRefused::Running { percent_done } => bad(
                ErrorCode::Refused,
                format!(
                    "{verb}: {what}: a SANITIZE is in progress on it ({percent_done}% done) \
                     and writes to its backend until it ends; try again once TEST UNIT READY \
                     no longer reports SANITIZE IN PROGRESS (04h/1Bh)"
                ),
            ),
            SanitizeFenceRefused::Fenced => bad(
                ErrorCode::Refused,
                format!("{verb}: {what}: another control call is replacing its backend; try again"),
            ),
        })?;
        fences.0.push(fence);
    }
    Ok(fences)
}

fn lun_of(lun: u64, target: &str) -> String {
    format!("LUN {lun} of {target}")
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
    let units = entry
        .luns
        .iter()
        .filter(|(number, _)| lun.is_none_or(|l| l == **number))
        .map(|(number, e)| (lun_of(*number, target), e.unit.as_ref()));
    fence_units(verb, units)
}

/// The fences of the LUNs `attached` (target, LUN) of `model` (a grown volume's).
pub(super) fn fence_attached(
    verb: &str,
    model: &Model,
    attached: &[(String, u64)],
) -> Result<Fences, RpcError> {
    let units: Vec<(String, Arc<LogicalUnit>)> = attached
        .iter()
        .filter_map(|(target, lun)| {
            let unit = model.targets.get(target)?.luns.get(lun)?.unit.clone();
            Some((lun_of(*lun, target), unit))
        })
        .collect();
    fence_units(
        verb,
        units.iter().map(|(what, u)| (what.clone(), u.as_ref())),
    )
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

/// The fences of the bound volumes `unbind` names (each whether or not other bindings keep
/// it open: refusing the unbind while its volume sanitizes is the simple rule).
pub(super) fn fence_unbind(model: &Model, p: &Unbind) -> Result<Fences, RpcError> {
    let pool = bindings::canonical_pool(&p.pool);
    let units = p.volumes.iter().filter_map(|volume| {
        let bound = model.bound.get(&pool, volume)?;
        Some((VolumeLabel(volume), bound.unit.as_ref()))
    });
    fence_units("unbind", units)
}

/// "volume NAME", written only when a refusal names it (an unbind fences every volume
/// of its batch).
struct VolumeLabel<'a>(&'a str);

impl std::fmt::Display for VolumeLabel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "volume {}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::RamBackend;
    use crate::disk::{LuConfig, ScsiTask, TargetPortInfo};

    /// A 1 MiB unit sanitizing at 256 KiB/s (about 4 s), bound as `vol` of pool `p`.
    fn sanitizing_bound_volume(model: &mut Model) -> Arc<LogicalUnit> {
        let unit = Arc::new(
            LogicalUnit::new(Box::new(RamBackend::new(1 << 20)), LuConfig::default())
                .with_sanitize_rate(Some(256 << 10)),
        );
        // SANITIZE, BLOCK ERASE with IMMED: answered at once, erases at the paced rate.
        let mut cdb = [0u8; 16];
        cdb[..2].copy_from_slice(&[0x48, 0x82]);
        let answer = unit.execute(&ScsiTask {
            cdb: &cdb,
            data_out: &[],
            expected_data_in_len: 0,
            target_port: TargetPortInfo::default(),
            nexus: Default::default(),
        });
        assert_eq!(answer.status, 0, "SANITIZE IMMED: {:?}", answer.sense);
        let (pool, volume) = bindings::key("p", "vol");
        model.bound_mut().insert(
            &pool,
            volume,
            bindings::BoundVolume {
                unit: Arc::clone(&unit),
                places: vec![("t".into(), "h".into(), 1, 1)],
                opened_at: std::time::Instant::now(),
            },
        );
        unit
    }

    /// An unbind of a volume that sanitizes is refused naming it (another volume's is
    /// not); once the sanitize ended it is fenced, and a kept fence stays.
    #[test]
    fn an_unbind_of_a_sanitizing_volume_is_refused_naming_it() {
        let mut model = Model::default();
        let unit = sanitizing_bound_volume(&mut model);
        let unbind = |volumes: &[&str]| Unbind {
            target: "t".into(),
            host: "h".into(),
            pool: "p".into(),
            volumes: volumes.iter().map(|v| v.to_string()).collect(),
            endpoint: None,
        };
        let refused = fence_unbind(&model, &unbind(&["vol"])).unwrap_err();
        assert_eq!(refused.code, ErrorCode::Refused);
        assert!(
            refused
                .message
                .contains("unbind: volume vol: a SANITIZE is in progress"),
            "{}",
            refused.message
        );
        assert!(fence_unbind(&model, &unbind(&["other"])).is_ok());
        // The refusal took no fence: the sanitize goes on and ends.
        let started = std::time::Instant::now();
        while unit.fence_sanitize().is_err() {
            assert!(started.elapsed() < std::time::Duration::from_secs(60));
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        fence_unbind(&model, &unbind(&["vol"])).unwrap().keep();
        assert!(
            fence_unbind(&model, &unbind(&["vol"])).is_err(),
            "a kept fence stays"
        );
    }
}
