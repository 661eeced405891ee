//! Logical unit conglomerates (SAM-5 4.6.21 and 4.7.2, SPC-5 6.7.2 and 7.7.7): a protocol
//! endpoint is the administrative logical unit, and each virtual volume bound to a host
//! through it is a subsidiary logical unit, addressed with a two-level LUN
//! ([`datapath::scsi::LunAddress`]). This module is the SCSI side, free of I/O:
//! - the role a logical unit plays ([`Role`]), which sets LU_CONG in standard INQUIRY
//!   data and LU_COLL_TYPE in the Extended INQUIRY Data VPD page (0x86);
//! - which commands an endpoint refuses: it has no medium, so every command that reads,
//!   writes, flushes or maps blocks ends in ILLEGAL REQUEST, INVALID COMMAND OPERATION
//!   CODE (its command set is that of the administrative LU: inquiry, sense, REPORT
//!   LUNS, mode pages, capacity 0);
//! - REPORT LUNS with every SELECT REPORT value (SPC-5 6.33, table 280).

use datapath::scsi::{Lun, LunAddress};

use super::opcodes::op;
use super::sense::Check;
use super::{be32, truncate};

/// What a logical unit is in a conglomerate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Not in a conglomerate.
    #[default]
    Plain,
    /// A protocol endpoint: the administrative logical unit.
    Endpoint,
    /// A volume bound through an endpoint: a subsidiary logical unit.
    Subsidiary,
}

impl Role {
    /// LU_CONG (standard INQUIRY byte 1, bit 6): the LU is in a conglomerate.
    pub fn lu_cong(self) -> bool {
        self != Role::Plain
    }

    /// LU_COLL_TYPE (Extended INQUIRY Data byte 8, bits 7-5): 001b, conglomerate.
    fn lu_coll_type(self) -> u8 {
        if self.lu_cong() {
            0b001
        } else {
            0
        }
    }
}

/// The body of the Extended INQUIRY Data VPD page (SPC-5 7.7.7): 60 bytes after the
/// four-byte header. Only SIMPSUP (simple task attribute) and LU_COLL_TYPE are set; the
/// rest (protection information, microcode, sense lengths) is not supported here.
pub fn extended_inquiry_body(role: Role) -> [u8; 60] {
    let mut body = [0u8; 60];
    body[1] = 0x01; // SIMPSUP (page byte 5)
    body[4] = role.lu_coll_type() << 5; // page byte 8
    body
}

/// Whether an endpoint refuses `cdb`: the commands that touch a medium.
pub fn endpoint_refuses(cdb: &[u8]) -> bool {
    matches!(
        cdb.first().copied(),
        Some(
            op::READ_6
                | op::READ_10
                | op::READ_12
                | op::READ_16
                | op::WRITE_6
                | op::WRITE_10
                | op::WRITE_12
                | op::WRITE_16
                | op::WRITE_AND_VERIFY_10
                | op::WRITE_AND_VERIFY_12
                | op::WRITE_AND_VERIFY_16
                | op::VERIFY_10
                | op::VERIFY_12
                | op::VERIFY_16
                | op::PRE_FETCH_10
                | op::PRE_FETCH_16
                | op::SYNCHRONIZE_CACHE_10
                | op::SYNCHRONIZE_CACHE_16
                | op::WRITE_SAME_10
                | op::WRITE_SAME_16
                | op::UNMAP
                | op::COMPARE_AND_WRITE
                | op::ORWRITE_16
                | op::EXTENDED_COPY
                | op::WRITE_ATOMIC_16
                | op::SANITIZE
        )
    ) || (cdb.first() == Some(&op::SERVICE_ACTION_IN_16)
        && cdb.get(1).map(|b| b & 0x1f) != Some(super::opcodes::service_action::READ_CAPACITY_16))
}

/// The logical units one I_T nexus can reach, as REPORT LUNS lists them.
pub trait Inventory {
    /// Every single-level LUN (plain units and endpoints), ascending, with its role.
    fn for_each_unit(&self, f: &mut dyn FnMut(u16, Role));
    /// The subsidiaries bound for this nexus's host: through `endpoint`, or through every
    /// endpoint when `None`; ascending by endpoint, then secondary ID.
    fn for_each_subsidiary(&self, endpoint: Option<u16>, f: &mut dyn FnMut(u16, u32));
}

/// SELECT REPORT values (SPC-5 table 280).
mod select {
    pub const ALL_BUT_WELL_KNOWN: u8 = 0x00;
    pub const WELL_KNOWN: u8 = 0x01;
    pub const ALL: u8 = 0x02;
    pub const ADMINISTRATIVE: u8 = 0x10;
    pub const ADMINISTRATIVE_AND_PLAIN: u8 = 0x11;
    pub const CONGLOMERATE: u8 = 0x12;
}

/// The key the session gives the REPORT LUNS well-known logical unit (C101h, extended
/// addressing: not a [`LunAddress`], so its raw field).
pub const REPORT_LUNS_WLUN_KEY: u64 = 0xc101_0000_0000_0000;

/// The LUN field REPORT LUNS lists for a single-level unit: an endpoint in simple
/// addressing (what a host reading LU_CONG expects), a plain LUN as before (peripheral
/// below 256, flat space above).
fn unit_field(lun: u16, role: Role) -> [u8; 8] {
    match role {
        Role::Plain => Lun::from_u64(u64::from(lun)).to_field(),
        _ => [((lun >> 8) as u8) & 0x3f, lun as u8, 0, 0, 0, 0, 0, 0],
    }
}

fn subsidiary_field(endpoint: u16, secondary: u32) -> [u8; 8] {
    LunAddress::Subsidiary {
        endpoint,
        secondary,
    }
    .to_lun()
    .to_field()
}

/// REPORT LUNS (SPC-5 6.33) addressed to the LU keyed `addressed` (see
/// [`LunAddress::key`]):
/// - 00h: plain units and endpoints (no well-known LUs, no subsidiaries);
/// - 01h: well-known LUs: none are listed (the REPORT LUNS well-known LU answers only
///   REPORT LUNS here);
/// - 02h: every LU the nexus can reach, subsidiaries included;
/// - 10h: the endpoints; 11h: the endpoints and the plain units; both only through LUN 0
///   or the REPORT LUNS well-known LU, as SPC-5 requires;
/// - 12h: addressed to an endpoint, that endpoint and the subsidiaries bound through it
///   for this host; to anything else, INVALID FIELD IN CDB;
/// - C0h-FFh (vendor specific): as 00h;
/// - other values are reserved: INVALID FIELD IN CDB.
///
/// The header's LUN LIST LENGTH is the whole list's, whatever the allocation length cuts.
pub fn report_luns(
    cdb: &[u8],
    addressed: u64,
    inventory: &dyn Inventory,
) -> Result<Vec<u8>, Check> {
    if cdb.len() < 12 {
        return Err(Check::invalid_cdb_field(0, None));
    }
    let select_report = cdb[2];
    let allocation_length = be32(cdb, 6);
    if allocation_length < 16 {
        return Err(Check::invalid_cdb_field(6, None));
    }
    let bad_select = || Check::invalid_cdb_field(2, None);
    let mut data = vec![0u8; 8];
    let mut push = |field: [u8; 8]| data.extend_from_slice(&field);
    match select_report {
        select::ALL_BUT_WELL_KNOWN | 0xc0..=0xff => {
            inventory.for_each_unit(&mut |lun, role| push(unit_field(lun, role)));
        }
        select::WELL_KNOWN => {}
        select::ALL => {
            inventory.for_each_unit(&mut |lun, role| push(unit_field(lun, role)));
            inventory.for_each_subsidiary(None, &mut |e, s| push(subsidiary_field(e, s)));
        }
        select::ADMINISTRATIVE | select::ADMINISTRATIVE_AND_PLAIN => {
            if addressed != 0 && addressed != REPORT_LUNS_WLUN_KEY {
                return Err(bad_select());
            }
            let with_plain = select_report == select::ADMINISTRATIVE_AND_PLAIN;
            inventory.for_each_unit(&mut |lun, role| {
                if role == Role::Endpoint || with_plain {
                    push(unit_field(lun, role));
                }
            });
        }
        select::CONGLOMERATE => {
            let mut endpoint = None;
            if let Ok(addressed) = u16::try_from(addressed) {
                inventory.for_each_unit(&mut |lun, role| {
                    if lun == addressed && role == Role::Endpoint {
                        endpoint = Some(lun);
                    }
                });
            }
            let Some(endpoint) = endpoint else {
                return Err(bad_select());
            };
            push(unit_field(endpoint, Role::Endpoint));
            inventory.for_each_subsidiary(Some(endpoint), &mut |e, s| push(subsidiary_field(e, s)));
        }
        _ => return Err(bad_select()),
    }
    let list_length = (data.len() - 8) as u32;
    data[..4].copy_from_slice(&list_length.to_be_bytes());
    Ok(truncate(data, allocation_length as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datapath::scsi::decode::ReportLuns;

    /// Plain LUN 1, endpoints 0 and 256; through endpoint 0 secondaries 1 and 2^24 - 1,
    /// through 256 secondary 16,383.
    struct Fixture;

    impl Inventory for Fixture {
        fn for_each_unit(&self, f: &mut dyn FnMut(u16, Role)) {
            f(0, Role::Endpoint);
            f(1, Role::Plain);
            f(256, Role::Endpoint);
        }
        fn for_each_subsidiary(&self, endpoint: Option<u16>, f: &mut dyn FnMut(u16, u32)) {
            for (e, s) in [(0, 1), (0, 0xff_ffff), (256, 16383)] {
                if endpoint.is_none_or(|x| x == e) {
                    f(e, s);
                }
            }
        }
    }

    fn cdb(select: u8, allocation: u32) -> [u8; 12] {
        let mut cdb = [0u8; 12];
        cdb[0] = op::REPORT_LUNS;
        cdb[2] = select;
        cdb[6..10].copy_from_slice(&allocation.to_be_bytes());
        cdb
    }

    fn listed(select: u8, addressed: u64) -> Result<Vec<[u8; 8]>, Check> {
        let data = report_luns(&cdb(select, 4096), addressed, &Fixture)?;
        let decoded = ReportLuns::decode(&data).expect("decodes");
        Ok(decoded.luns.iter().map(|l| l.to_field()).collect())
    }

    fn sub(e: u16, s: u32) -> [u8; 8] {
        subsidiary_field(e, s)
    }

    const EP0: [u8; 8] = [0; 8];
    const PLAIN1: [u8; 8] = [0, 1, 0, 0, 0, 0, 0, 0];
    const EP256: [u8; 8] = [1, 0, 0, 0, 0, 0, 0, 0];

    #[test]
    fn every_select_report_value_lists_what_spc5_says() {
        assert_eq!(listed(0x00, 0).unwrap(), vec![EP0, PLAIN1, EP256]);
        assert_eq!(listed(0x01, 0).unwrap(), Vec::<[u8; 8]>::new());
        assert_eq!(
            listed(0x02, 0).unwrap(),
            vec![
                EP0,
                PLAIN1,
                EP256,
                sub(0, 1),
                sub(0, 0xff_ffff),
                sub(256, 16383)
            ]
        );
        assert_eq!(listed(0x10, 0).unwrap(), vec![EP0, EP256]);
        assert_eq!(
            listed(0x10, REPORT_LUNS_WLUN_KEY).unwrap(),
            vec![EP0, EP256]
        );
        assert_eq!(listed(0x11, 0).unwrap(), vec![EP0, PLAIN1, EP256]);
        assert_eq!(
            listed(0x12, 0).unwrap(),
            vec![EP0, sub(0, 1), sub(0, 0xff_ffff)]
        );
        assert_eq!(listed(0x12, 256).unwrap(), vec![EP256, sub(256, 16383)]);
        assert_eq!(listed(0xc0, 1).unwrap(), listed(0x00, 1).unwrap());
        assert_eq!(listed(0xff, 1).unwrap(), listed(0x00, 1).unwrap());
    }

    #[test]
    fn wrong_addressees_and_reserved_values_are_invalid_field_in_cdb() {
        let invalid_select = |r: Result<Vec<[u8; 8]>, Check>| {
            let check = r.expect_err("refused");
            assert_eq!((check.key, check.asc), (0x5, (0x24, 0)));
            assert_eq!(
                check.to_fixed_sense()[16..18],
                [0, 2],
                "field pointer at byte 2"
            );
        };
        // 0x10 and 0x11 go to LUN 0 or the well-known LU; 0x12 to an endpoint.
        invalid_select(listed(0x10, 1));
        invalid_select(listed(0x11, 256));
        invalid_select(listed(0x12, 1));
        invalid_select(listed(0x12, sub_key(0, 1)));
        for reserved in [0x03, 0x0f, 0x13, 0x7f, 0xbf] {
            invalid_select(listed(reserved, 0));
        }
    }

    fn sub_key(e: u16, s: u32) -> u64 {
        LunAddress::Subsidiary {
            endpoint: e,
            secondary: s,
        }
        .key()
    }

    #[test]
    fn the_header_has_the_whole_length_when_the_allocation_cuts_the_list() {
        let data = report_luns(&cdb(0x02, 16), 0, &Fixture).unwrap();
        assert_eq!(data.len(), 16);
        assert_eq!(be32(&data, 0), 6 * 8);
        assert!(report_luns(&cdb(0x02, 15), 0, &Fixture).is_err());
    }

    #[test]
    fn an_endpoint_refuses_media_access_and_answers_the_rest() {
        for opcode in [
            op::READ_10,
            op::WRITE_16,
            op::SYNCHRONIZE_CACHE_10,
            op::UNMAP,
        ] {
            assert!(endpoint_refuses(&[opcode, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
        }
        // GET LBA STATUS is a SERVICE ACTION IN(16); READ CAPACITY(16) is not refused.
        assert!(endpoint_refuses(&[op::SERVICE_ACTION_IN_16, 0x12]));
        assert!(!endpoint_refuses(&[op::SERVICE_ACTION_IN_16, 0x10]));
        for opcode in [
            op::INQUIRY,
            op::TEST_UNIT_READY,
            op::REPORT_LUNS,
            op::READ_CAPACITY_10,
        ] {
            assert!(!endpoint_refuses(&[opcode, 0, 0, 0, 0, 0]));
        }
    }
}
