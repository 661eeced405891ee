//! What a reservation allows, by command (SPC-4 5.12.1 table 63, SBC-4 4.17 table 13, and
//! SPC-2 5.5.1 for RESERVE(6)/(10)), condensed to classes so that the check per command is
//! one table lookup and one mask test.
#![forbid(unsafe_code)]

use datapath::scsi::reservation::opcode as rop;

/// Command classes; a nexus's access mask holds the classes it may run.
pub mod class {
    /// Allowed under persistent reservations of every type, refused to others under a
    /// SCSI-2 reservation: TEST UNIT READY, READ CAPACITY, REPORT SUPPORTED OPERATION CODES.
    pub const PR_FREE: u8 = 0x01;
    /// Reads: allowed under the Write Exclusive types, refused under Exclusive Access.
    pub const READ: u8 = 0x02;
    /// Everything that changes the medium or the unit's settings.
    pub const WRITE: u8 = 0x04;
    pub const ALL: u8 = PR_FREE | READ | WRITE;
    /// Never refused for a reservation (INQUIRY, REPORT LUNS, REQUEST SENSE).
    pub const ALWAYS: u8 = 0x00;
    /// RESERVE/RELEASE and PERSISTENT RESERVE IN/OUT: judged by the reservation rules.
    pub const RESERVATION: u8 = 0x80;
}

const fn table() -> [u8; 256] {
    // Anything not listed is WRITE: an unknown opcode conflicts (and then fails as unknown
    // for the holder), which is the safe way round.
    let mut t = [class::WRITE; 256];
    t[0x12] = class::ALWAYS; // INQUIRY
    t[0xa0] = class::ALWAYS; // REPORT LUNS
    t[0x03] = class::ALWAYS; // REQUEST SENSE
    t[0x00] = class::PR_FREE; // TEST UNIT READY
    t[0x25] = class::PR_FREE; // READ CAPACITY(10)
    t[0x9e] = class::PR_FREE; // SERVICE ACTION IN(16): READ CAPACITY(16)
    t[0xa3] = class::PR_FREE; // MAINTENANCE IN: REPORT SUPPORTED OPERATION CODES
    let reads = [
        0x08, 0x28, 0xa8, 0x88, // READ(6/10/12/16)
        0x2f, 0xaf, 0x8f, // VERIFY(10/12/16)
        0x34, 0x90, // PRE-FETCH(10/16)
        0x1a, 0x5a, // MODE SENSE(6/10)
    ];
    let mut i = 0;
    while i < reads.len() {
        t[reads[i]] = class::READ;
        i += 1;
    }
    t[rop::RESERVE_6 as usize] = class::RESERVATION;
    t[rop::RELEASE_6 as usize] = class::RESERVATION;
    t[rop::RESERVE_10 as usize] = class::RESERVATION;
    t[rop::RELEASE_10 as usize] = class::RESERVATION;
    t[rop::PERSISTENT_RESERVE_IN as usize] = class::RESERVATION;
    t[rop::PERSISTENT_RESERVE_OUT as usize] = class::RESERVATION;
    t
}

static CLASS: [u8; 256] = table();

/// The class of a CDB's command.
pub fn class_of(opcode: u8) -> u8 {
    CLASS[usize::from(opcode)]
}

/// Whether a unit attention is reported instead of running the command (SAM-5 5.14: all
/// but INQUIRY, REPORT LUNS and REQUEST SENSE, which reports it as its data).
pub fn reports_attention(opcode: u8) -> bool {
    !matches!(opcode, 0x12 | 0xa0)
}
