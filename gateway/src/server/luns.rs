//! The default logical units: the SCSI disk emulation (`crate::disk`) over the backends
//! (`crate::backend`) that each LUN spec names.

use std::sync::Arc;

use crate::backend::backend_from_spec;
use crate::disk::{LogicalUnit, LuConfig, LunMap, ScsiTask, TargetPortInfo};
use crate::session::CommandResult;

use super::{LunExecutor, ServerError, TargetNodeConfig};

/// The LUNs of one target node and the port identity they report.
struct DiskLuns {
    map: LunMap,
    target_name: String,
    tpgt: u16,
}

impl LunExecutor for DiskLuns {
    fn execute(
        &self,
        lun: u64,
        cdb: &[u8],
        data_out: &[u8],
        expected_data_in_len: u32,
    ) -> CommandResult {
        let task = ScsiTask {
            cdb,
            data_out,
            expected_data_in_len,
            target_port: TargetPortInfo {
                relative_port_id: 1,
                target_port_group: 0,
                target_name: &self.target_name,
                tpgt: self.tpgt,
            },
        };
        let result = self.map.execute(lun, &task);
        CommandResult {
            status: result.status,
            sense: result.sense,
            data_in: result.data_in,
        }
    }

    fn flush(&self) {
        for lun in self.map.luns() {
            if let Some(lu) = self.map.get(lun) {
                if let Err(error) = lu.backend().flush() {
                    tracing::error!(target = %self.target_name, lun, %error, "flush failed");
                }
            }
        }
    }
}

pub(super) fn build(
    node: &TargetNodeConfig,
    portal_group_tag: u16,
) -> Result<Arc<dyn LunExecutor>, ServerError> {
    let mut map = LunMap::new();
    for (lun, spec) in &node.luns {
        let backend = backend_from_spec(spec).map_err(|e| ServerError::Lun {
            target: node.iqn.clone(),
            lun: *lun,
            spec: spec.clone(),
            reason: e.to_string(),
        })?;
        let config = LuConfig::for_name(&format!("{}/{lun}", node.iqn));
        map.insert(*lun, Arc::new(LogicalUnit::new(backend, config)));
    }
    Ok(Arc::new(DiskLuns {
        map,
        target_name: node.iqn.clone(),
        tpgt: portal_group_tag,
    }))
}
