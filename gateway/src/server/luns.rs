//! The default logical units: the SCSI disk emulation (`crate::disk`) over the backends
//! (`crate::backend`) that each LUN spec names.

use std::sync::Arc;

use crate::backend::backend_from_spec;
use crate::disk::{data_out_length, LogicalUnit, LuConfig, LunMap, ScsiTask, TargetPortInfo};
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
        // Section 11.4.5.1 residuals for writes: the initiator may send more or less
        // Data-Out than the CDB asks for. Only the CDB's amount is written; with less,
        // a WRITE is cut to the whole blocks that came (the rest is an overflow).
        let block_size = self.map.get(lun).map(|lu| lu.block_size());
        let wanted = block_size.and_then(|b| data_out_length(cdb, b));
        let mut cdb_buf;
        let (cdb, data_out) = match (wanted, block_size) {
            (Some(wanted), _) if (wanted as usize) < data_out.len() => {
                (cdb, data_out.get(..wanted as usize).unwrap_or(data_out))
            }
            (Some(wanted), Some(block_size)) if (wanted as usize) > data_out.len() => {
                let blocks = data_out.len() as u64 / u64::from(block_size.max(1));
                cdb_buf = cdb.to_vec();
                if set_write_blocks(&mut cdb_buf, blocks) {
                    let len = (blocks * u64::from(block_size)) as usize;
                    (&cdb_buf[..], data_out.get(..len).unwrap_or(data_out))
                } else {
                    (cdb, data_out)
                }
            }
            _ => (cdb, data_out),
        };
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
            data_out_wanted: wanted,
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

/// Rewrites the transfer length of a WRITE or WRITE AND VERIFY (10, 12, 16) CDB; false
/// for other commands, which then run with the data as it came.
fn set_write_blocks(cdb: &mut [u8], blocks: u64) -> bool {
    match cdb.first() {
        Some(0x2a | 0x2e) if cdb.len() >= 10 => {
            cdb[7..9].copy_from_slice(&(blocks as u16).to_be_bytes());
            true
        }
        Some(0xaa | 0xae) if cdb.len() >= 12 => {
            cdb[6..10].copy_from_slice(&(blocks as u32).to_be_bytes());
            true
        }
        Some(0x8a | 0x8e) if cdb.len() >= 16 => {
            cdb[10..14].copy_from_slice(&(blocks as u32).to_be_bytes());
            true
        }
        _ => false,
    }
}
