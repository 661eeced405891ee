//! Sense data the device server returns: fixed format (SPC-4 4.5.3), with the sense-key
//! specific field pointer for ILLEGAL REQUEST (SPC-4 4.5.2.4.2) and the INFORMATION field
//! for MISCOMPARE (SBC-3 5.2, 5.22). Descriptor format is never produced: the Control mode
//! page reports D_SENSE = 0 and does not let it change.

/// Sense keys (SPC-4 4.5.6), ASC/ASCQ pairs (SPC-4 Annex D) and status codes (SAM-5
/// 5.3.1): the data path's one vocabulary.
pub use datapath::scsi::sense::{asc, key, status};

/// Length of fixed-format sense data with no additional bytes beyond the standard ones.
pub const FIXED_SENSE_LENGTH: usize = 18;

/// Where in the CDB or parameter list an ILLEGAL REQUEST points (SPC-4 4.5.2.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldPointer {
    /// C/D: true when the bad field is in the CDB, false for the parameter data.
    pub in_cdb: bool,
    pub byte: u16,
    /// The bit within that byte (BPV set), when one bit is to blame.
    pub bit: Option<u8>,
}

/// A CHECK CONDITION: what goes into the sense data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    pub key: u8,
    pub asc: (u8, u8),
    /// The INFORMATION field (VALID set), e.g. the miscompare offset.
    pub information: Option<u32>,
    pub field: Option<FieldPointer>,
    /// The progress indication (SKSV set), 0 to 65535, when no field pointer is given
    /// (NOT READY during a SANITIZE, SPC-4 4.5.2.4.4).
    pub progress: Option<u16>,
}

impl Check {
    pub fn new(key: u8, asc: (u8, u8)) -> Check {
        Check {
            key,
            asc,
            information: None,
            field: None,
            progress: None,
        }
    }

    pub fn invalid_opcode() -> Check {
        Check::new(key::ILLEGAL_REQUEST, asc::INVALID_COMMAND_OPERATION_CODE).cdb_field(0, None)
    }

    /// INVALID FIELD IN CDB pointing at `byte` (and `bit`, if one bit is wrong).
    pub fn invalid_cdb_field(byte: u16, bit: Option<u8>) -> Check {
        Check::new(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB).cdb_field(byte, bit)
    }

    /// INVALID FIELD IN PARAMETER LIST pointing at `byte` of the parameter data.
    pub fn invalid_parameter(byte: u16) -> Check {
        let mut check = Check::new(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_PARAMETER_LIST);
        check.field = Some(FieldPointer {
            in_cdb: false,
            byte,
            bit: None,
        });
        check
    }

    pub fn lba_out_of_range() -> Check {
        Check::new(key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE)
    }

    pub fn write_protected() -> Check {
        Check::new(key::DATA_PROTECT, asc::WRITE_PROTECTED)
    }

    /// MISCOMPARE DURING VERIFY OPERATION with the offset of the first differing byte.
    pub fn miscompare(offset: u32) -> Check {
        let mut check = Check::new(key::MISCOMPARE, asc::MISCOMPARE_DURING_VERIFY);
        check.information = Some(offset);
        check
    }

    fn cdb_field(mut self, byte: u16, bit: Option<u8>) -> Check {
        self.field = Some(FieldPointer {
            in_cdb: true,
            byte,
            bit,
        });
        self
    }

    /// The 18 bytes of fixed-format sense data (response code 0x70, current error).
    pub fn to_fixed_sense(&self) -> Vec<u8> {
        let mut sense = vec![0u8; FIXED_SENSE_LENGTH];
        sense[0] = 0x70;
        if let Some(information) = self.information {
            sense[0] |= 0x80;
            sense[3..7].copy_from_slice(&information.to_be_bytes());
        }
        sense[2] = self.key & 0x0f;
        // ADDITIONAL SENSE LENGTH: the bytes after byte 7.
        sense[7] = (FIXED_SENSE_LENGTH - 8) as u8;
        sense[12] = self.asc.0;
        sense[13] = self.asc.1;
        if let Some(field) = self.field {
            let mut flags = 0x80; // SKSV
            if field.in_cdb {
                flags |= 0x40;
            }
            if let Some(bit) = field.bit {
                flags |= 0x08 | (bit & 0x07);
            }
            sense[15] = flags;
            sense[16..18].copy_from_slice(&field.byte.to_be_bytes());
        } else if let Some(progress) = self.progress {
            sense[15] = 0x80; // SKSV
            sense[16..18].copy_from_slice(&progress.to_be_bytes());
        }
        sense
    }
}
