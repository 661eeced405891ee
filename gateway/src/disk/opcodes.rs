//! The commands this device server implements, with their CDB usage data.
//!
//! One table serves two purposes: REPORT SUPPORTED OPERATION CODES (SPC-4 6.35) returns
//! it, and [`check_reserved_bits`] rejects any CDB that sets a bit its usage data does not
//! list, with INVALID FIELD IN CDB pointing at that bit. Protection fields (RDPROTECT,
//! WRPROTECT, VRPROTECT) are absent from every mask because the logical unit has no
//! protection information (PROTECT = 0), so SBC-3 requires those fields to be zero.

use super::sense::Check;

/// Operation codes and service actions: the data path's one list.
pub use datapath::scsi::cdb::{opcode as op, service_action};

/// One supported command.
#[derive(Debug)]
pub struct Command {
    pub opcode: u8,
    /// The service action in the low five bits of CDB byte 1, for commands that have one.
    pub service_action: Option<u8>,
    /// CDB USAGE DATA: byte 0 the opcode, byte 1 the service action where there is one,
    /// every other byte the mask of bits the device server evaluates. Its length is the
    /// CDB length.
    pub usage: &'static [u8],
    /// Only offered when the backend is thin provisioned (UNMAP).
    pub needs_thin: bool,
}

// The CONTROL byte: NACA and LINK are not supported (no ACA, linked commands are
// obsolete), so none of its bits is evaluated.
const C: u8 = 0x00;

const fn cmd(opcode: u8, usage: &'static [u8]) -> Command {
    Command {
        opcode,
        service_action: None,
        usage,
        needs_thin: false,
    }
}

const fn cmd_sa(opcode: u8, service_action: u8, usage: &'static [u8]) -> Command {
    Command {
        opcode,
        service_action: Some(service_action),
        usage,
        needs_thin: false,
    }
}

/// Every command, in opcode order.
pub static COMMANDS: &[Command] = &[
    cmd(op::TEST_UNIT_READY, &[op::TEST_UNIT_READY, 0, 0, 0, 0, C]),
    cmd(op::REQUEST_SENSE, &[op::REQUEST_SENSE, 0x01, 0, 0, 0xff, C]),
    cmd(op::READ_6, &[op::READ_6, 0x1f, 0xff, 0xff, 0xff, C]),
    cmd(op::WRITE_6, &[op::WRITE_6, 0x1f, 0xff, 0xff, 0xff, C]),
    cmd(op::INQUIRY, &[op::INQUIRY, 0x01, 0xff, 0xff, 0xff, C]),
    // PF evaluated; SP (save pages) is not supported.
    cmd(op::MODE_SELECT_6, &[op::MODE_SELECT_6, 0x10, 0, 0, 0xff, C]),
    cmd(
        op::MODE_SENSE_6,
        &[op::MODE_SENSE_6, 0x08, 0xff, 0xff, 0xff, C],
    ),
    cmd(
        op::START_STOP_UNIT,
        &[op::START_STOP_UNIT, 0x01, 0, 0x0f, 0xf7, C],
    ),
    cmd(
        op::PREVENT_ALLOW_MEDIUM_REMOVAL,
        &[op::PREVENT_ALLOW_MEDIUM_REMOVAL, 0, 0, 0, 0x03, C],
    ),
    cmd(
        op::READ_CAPACITY_10,
        &[
            op::READ_CAPACITY_10,
            0,
            0xff,
            0xff,
            0xff,
            0xff,
            0,
            0,
            0x01,
            C,
        ],
    ),
    // DPO, FUA, RARC and the obsolete FUA_NV; group number.
    cmd(
        op::READ_10,
        &[
            op::READ_10,
            0x1e,
            0xff,
            0xff,
            0xff,
            0xff,
            0x1f,
            0xff,
            0xff,
            C,
        ],
    ),
    cmd(
        op::WRITE_10,
        &[
            op::WRITE_10,
            0x1a,
            0xff,
            0xff,
            0xff,
            0xff,
            0x1f,
            0xff,
            0xff,
            C,
        ],
    ),
    // DPO and the two-bit BYTCHK (SBC-4; SBC-3 defines only its low bit).
    cmd(
        op::WRITE_AND_VERIFY_10,
        &[
            op::WRITE_AND_VERIFY_10,
            0x16,
            0xff,
            0xff,
            0xff,
            0xff,
            0x1f,
            0xff,
            0xff,
            C,
        ],
    ),
    cmd(
        op::VERIFY_10,
        &[
            op::VERIFY_10,
            0x16,
            0xff,
            0xff,
            0xff,
            0xff,
            0x1f,
            0xff,
            0xff,
            C,
        ],
    ),
    cmd(
        op::PRE_FETCH_10,
        &[
            op::PRE_FETCH_10,
            0x02,
            0xff,
            0xff,
            0xff,
            0xff,
            0x1f,
            0xff,
            0xff,
            C,
        ],
    ),
    cmd(
        op::SYNCHRONIZE_CACHE_10,
        &[
            op::SYNCHRONIZE_CACHE_10,
            0x06,
            0xff,
            0xff,
            0xff,
            0xff,
            0x1f,
            0xff,
            0xff,
            C,
        ],
    ),
    // UNMAP; ANCHOR is not supported (ANC_SUP = 0).
    cmd(
        op::WRITE_SAME_10,
        &[
            op::WRITE_SAME_10,
            0x08,
            0xff,
            0xff,
            0xff,
            0xff,
            0x1f,
            0xff,
            0xff,
            C,
        ],
    ),
    Command {
        opcode: op::UNMAP,
        service_action: None,
        usage: &[op::UNMAP, 0, 0, 0, 0, 0, 0x1f, 0xff, 0xff, C],
        needs_thin: true,
    },
    cmd(
        op::MODE_SELECT_10,
        &[op::MODE_SELECT_10, 0x10, 0, 0, 0, 0, 0, 0xff, 0xff, C],
    ),
    cmd(
        op::MODE_SENSE_10,
        &[op::MODE_SENSE_10, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, C],
    ),
    cmd(
        op::READ_16,
        &[
            op::READ_16,
            0x1e,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0x1f,
            C,
        ],
    ),
    cmd(
        op::COMPARE_AND_WRITE,
        &[
            op::COMPARE_AND_WRITE,
            0x18,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0,
            0,
            0,
            0xff,
            0x1f,
            C,
        ],
    ),
    cmd(
        op::WRITE_16,
        &[
            op::WRITE_16,
            0x1a,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0x1f,
            C,
        ],
    ),
    cmd(
        op::ORWRITE_16,
        &[
            op::ORWRITE_16,
            0x1a,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0x1f,
            C,
        ],
    ),
    cmd(
        op::WRITE_AND_VERIFY_16,
        &[
            op::WRITE_AND_VERIFY_16,
            0x16,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0x1f,
            C,
        ],
    ),
    cmd(
        op::VERIFY_16,
        &[
            op::VERIFY_16,
            0x16,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0x1f,
            C,
        ],
    ),
    cmd(
        op::PRE_FETCH_16,
        &[
            op::PRE_FETCH_16,
            0x02,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0x1f,
            C,
        ],
    ),
    cmd(
        op::SYNCHRONIZE_CACHE_16,
        &[
            op::SYNCHRONIZE_CACHE_16,
            0x06,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0x1f,
            C,
        ],
    ),
    // UNMAP and NDOB; no ANCHOR.
    cmd(
        op::WRITE_SAME_16,
        &[
            op::WRITE_SAME_16,
            0x09,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0x1f,
            C,
        ],
    ),
    cmd_sa(
        op::SERVICE_ACTION_IN_16,
        service_action::READ_CAPACITY_16,
        &[
            op::SERVICE_ACTION_IN_16,
            service_action::READ_CAPACITY_16,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0x01,
            C,
        ],
    ),
    cmd_sa(
        op::SERVICE_ACTION_IN_16,
        service_action::GET_LBA_STATUS,
        &[
            op::SERVICE_ACTION_IN_16,
            service_action::GET_LBA_STATUS,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0,
            C,
        ],
    ),
    cmd(
        op::REPORT_LUNS,
        &[
            op::REPORT_LUNS,
            0,
            0xff,
            0,
            0,
            0,
            0xff,
            0xff,
            0xff,
            0xff,
            0,
            C,
        ],
    ),
    cmd_sa(
        op::MAINTENANCE_IN,
        service_action::REPORT_SUPPORTED_OPERATION_CODES,
        &[
            op::MAINTENANCE_IN,
            service_action::REPORT_SUPPORTED_OPERATION_CODES,
            0x87,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0,
            C,
        ],
    ),
    cmd(
        op::READ_12,
        &[
            op::READ_12,
            0x1e,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0x1f,
            C,
        ],
    ),
    cmd(
        op::WRITE_12,
        &[
            op::WRITE_12,
            0x1a,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0x1f,
            C,
        ],
    ),
    cmd(
        op::WRITE_AND_VERIFY_12,
        &[
            op::WRITE_AND_VERIFY_12,
            0x16,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0x1f,
            C,
        ],
    ),
    cmd(
        op::VERIFY_12,
        &[
            op::VERIFY_12,
            0x16,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0x1f,
            C,
        ],
    ),
    // Copy offload, WRITE ATOMIC, defect data and SANITIZE (see `xcopy` and `special`).
    cmd(
        op::READ_DEFECT_DATA_10,
        &[op::READ_DEFECT_DATA_10, 0, 0x1f, 0, 0, 0, 0, 0xff, 0xff, C],
    ),
    cmd_sa(
        op::SANITIZE,
        super::special::sanitize_action::OVERWRITE,
        &[op::SANITIZE, 0x80, 0, 0, 0, 0, 0, 0xff, 0xff, C],
    ),
    cmd_sa(
        op::SANITIZE,
        super::special::sanitize_action::BLOCK_ERASE,
        &[op::SANITIZE, 0x80, 0, 0, 0, 0, 0, 0xff, 0xff, C],
    ),
    cmd_sa(
        op::SANITIZE,
        super::special::sanitize_action::EXIT_FAILURE_MODE,
        &[op::SANITIZE, 0x80, 0, 0, 0, 0, 0, 0xff, 0xff, C],
    ),
    cmd_sa(
        op::EXTENDED_COPY,
        0x00,
        &[
            op::EXTENDED_COPY,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0xff,
            0xff,
            0xff,
            0xff,
            0,
            C,
        ],
    ),
    cmd_sa(
        op::RECEIVE_COPY_RESULTS,
        super::xcopy::COPY_STATUS,
        &[
            op::RECEIVE_COPY_RESULTS,
            0,
            0xff,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0xff,
            0xff,
            0xff,
            0xff,
            0,
            C,
        ],
    ),
    cmd_sa(
        op::RECEIVE_COPY_RESULTS,
        super::xcopy::OPERATING_PARAMETERS,
        &[
            op::RECEIVE_COPY_RESULTS,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0xff,
            0xff,
            0xff,
            0xff,
            0,
            C,
        ],
    ),
    cmd_sa(
        op::RECEIVE_COPY_RESULTS,
        super::xcopy::FAILED_SEGMENT_DETAILS,
        &[
            op::RECEIVE_COPY_RESULTS,
            0,
            0xff,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0xff,
            0xff,
            0xff,
            0xff,
            0,
            C,
        ],
    ),
    cmd(
        op::WRITE_ATOMIC_16,
        &[
            op::WRITE_ATOMIC_16,
            0x18,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0,
            0,
            0xff,
            0xff,
            0x1f,
            C,
        ],
    ),
    cmd(
        op::READ_DEFECT_DATA_12,
        &[
            op::READ_DEFECT_DATA_12,
            0x1f,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0,
            C,
        ],
    ),
];

/// Whether an opcode carries a service action in CDB byte 1 (for the commands here).
pub fn has_service_actions(opcode: u8) -> bool {
    COMMANDS
        .iter()
        .any(|command| command.opcode == opcode && command.service_action.is_some())
}

/// Looks a CDB up in the table. `Err` is the CHECK CONDITION to return: INVALID COMMAND
/// OPERATION CODE for an unknown opcode, INVALID FIELD IN CDB for an unknown service action
/// or a CDB shorter than the command.
pub fn lookup(cdb: &[u8], thin: bool) -> Result<&'static Command, Check> {
    let opcode = *cdb.first().ok_or_else(Check::invalid_opcode)?;
    let mut known_opcode = false;
    for command in COMMANDS.iter().filter(|c| c.opcode == opcode) {
        if command.needs_thin && !thin {
            continue;
        }
        known_opcode = true;
        if let Some(action) = command.service_action {
            match cdb.get(1) {
                Some(byte) if byte & 0x1f == action => {}
                _ => continue,
            }
        }
        if cdb.len() < command.usage.len() {
            return Err(Check::invalid_cdb_field(0, None));
        }
        return Ok(command);
    }
    if known_opcode {
        Err(Check::invalid_cdb_field(1, Some(4)))
    } else {
        Err(Check::invalid_opcode())
    }
}

/// Rejects a CDB that sets any bit its command's usage data does not list (SPC-4 6.35.3:
/// the usage data names the bits the device server evaluates; SAM-5 5.2: a reserved bit
/// set is INVALID FIELD IN CDB). The vendor-specific top bits of the CONTROL byte are
/// ignored.
pub fn check_reserved_bits(command: &Command, cdb: &[u8]) -> Result<(), Check> {
    let last = command.usage.len() - 1;
    for (index, (&byte, &mask)) in cdb.iter().zip(command.usage).enumerate().skip(1) {
        let mask = match index {
            1 if command.service_action.is_some() => mask | 0x1f,
            i if i == last => mask | 0xc0,
            _ => mask,
        };
        let stray = byte & !mask;
        if stray != 0 {
            let bit = 7 - stray.leading_zeros() as u8;
            return Err(Check::invalid_cdb_field(index as u16, Some(bit)));
        }
    }
    Ok(())
}
