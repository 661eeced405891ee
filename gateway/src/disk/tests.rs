use std::sync::Arc;

use datapath::scsi::{
    BlockLimits, Cdb, DesignatorValue, DeviceIdentification, ReadCapacity10, ReadCapacity16,
    ReportLuns, Sense, SenseKeySpecific, StandardInquiry, SupportedVpdPages, UnitSerialNumber,
};
use proptest::prelude::*;

use super::opcodes::op;
use super::sense::{asc, key, status};
use super::*;
use crate::backend::{NullBackend, RamBackend};

const TARGET: &str = "iqn.2024-01.test:disk";
const BLOCKS: u64 = 2048;

fn ram_lu(blocks: u64) -> LogicalUnit {
    LogicalUnit::new(
        Box::new(RamBackend::new(blocks * 512)),
        LuConfig::for_name("test"),
    )
}

fn port() -> TargetPortInfo<'static> {
    TargetPortInfo {
        relative_port_id: 1,
        target_port_group: 7,
        target_name: TARGET,
        tpgt: 1,
    }
}

fn run(lu: &LogicalUnit, cdb: &[u8], data_out: &[u8]) -> ScsiResult {
    let mut padded = [0u8; 16];
    padded[..cdb.len()].copy_from_slice(cdb);
    lu.execute(&ScsiTask {
        cdb: &padded,
        data_out,
        expected_data_in_len: 1 << 24,
        target_port: port(),
        nexus: Default::default(),
    })
}

fn good(lu: &LogicalUnit, cdb: &[u8], data_out: &[u8]) -> Vec<u8> {
    let result = run(lu, cdb, data_out);
    assert_eq!(
        result.status,
        status::GOOD,
        "cdb {cdb:02x?}: sense {:?}",
        Sense::decode(&result.sense).ok()
    );
    assert!(result.sense.is_empty());
    result.data_in
}

fn sense_of(result: &ScsiResult) -> Sense {
    assert_eq!(result.status, status::CHECK_CONDITION);
    assert_eq!(result.sense.len(), 18);
    assert_eq!(result.sense[0] & 0x7f, 0x70);
    Sense::decode(&result.sense).expect("fixed sense decodes")
}

fn check(lu: &LogicalUnit, cdb: &[u8], data_out: &[u8], sense_key: u8, code: (u8, u8)) -> Sense {
    let sense = sense_of(&run(lu, cdb, data_out));
    assert_eq!(
        (sense.key, sense.asc, sense.ascq),
        (sense_key, code.0, code.1),
        "cdb {cdb:02x?}"
    );
    sense
}

fn cdb10(opcode: u8, flags: u8, lba: u32, blocks: u16) -> Vec<u8> {
    let mut cdb = vec![0u8; 10];
    cdb[0] = opcode;
    cdb[1] = flags;
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    cdb
}

fn cdb16(opcode: u8, flags: u8, lba: u64, blocks: u32) -> Vec<u8> {
    let mut cdb = vec![0u8; 16];
    cdb[0] = opcode;
    cdb[1] = flags;
    cdb[2..10].copy_from_slice(&lba.to_be_bytes());
    cdb[10..14].copy_from_slice(&blocks.to_be_bytes());
    cdb
}

fn cdb12(opcode: u8, flags: u8, lba: u32, blocks: u32) -> Vec<u8> {
    let mut cdb = vec![0u8; 12];
    cdb[0] = opcode;
    cdb[1] = flags;
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[6..10].copy_from_slice(&blocks.to_be_bytes());
    cdb
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn compare_and_write(lba: u64, blocks: u8) -> Vec<u8> {
    let mut cdb = vec![0u8; 16];
    cdb[0] = op::COMPARE_AND_WRITE;
    cdb[2..10].copy_from_slice(&lba.to_be_bytes());
    cdb[13] = blocks;
    cdb
}

fn unmap_list(descriptors: &[(u64, u32)]) -> Vec<u8> {
    let mut list = vec![0u8; 8];
    let body = (descriptors.len() * 16) as u16;
    list[0..2].copy_from_slice(&(body + 6).to_be_bytes());
    list[2..4].copy_from_slice(&body.to_be_bytes());
    for &(lba, blocks) in descriptors {
        list.extend_from_slice(&lba.to_be_bytes());
        list.extend_from_slice(&blocks.to_be_bytes());
        list.extend_from_slice(&[0u8; 4]);
    }
    list
}

fn unmap_cdb(list_length: u16) -> Vec<u8> {
    let mut cdb = vec![0u8; 10];
    cdb[0] = op::UNMAP;
    cdb[7..9].copy_from_slice(&list_length.to_be_bytes());
    cdb
}

// --- SPC: TEST UNIT READY, INQUIRY, REQUEST SENSE, REPORT LUNS -------------------------

#[test]
fn test_unit_ready_is_good_from_the_start_without_unit_attention() {
    let lu = ram_lu(BLOCKS);
    assert!(good(&lu, Cdb::test_unit_ready().as_bytes(), &[]).is_empty());
}

#[test]
fn standard_inquiry_matches_spc4_layout() {
    let lu = ram_lu(BLOCKS);
    let data = good(&lu, Cdb::inquiry(260).as_bytes(), &[]);
    assert_eq!(data.len(), 74);
    let inquiry = StandardInquiry::decode(&data).unwrap();
    assert_eq!(inquiry.peripheral_qualifier, 0);
    assert_eq!(inquiry.device_type, 0);
    assert_eq!(inquiry.version, 6);
    assert_eq!(inquiry.response_data_format, 2);
    assert!(inquiry.hisup && inquiry.cmd_que && !inquiry.protect);
    assert_eq!(inquiry.full_length, data.len());
    assert_eq!(inquiry.vendor, "IOURING");
    assert_eq!(&data[8..16], b"IOURING ");
    assert!(!inquiry.truncated);
    // AERC and TRMTSK clear, SBC-3 version descriptor present.
    assert_eq!(data[3] & 0xc0, 0);
    assert!(data[58..74].chunks(2).any(|d| d == [0x04, 0xc0]));
    assert!(data[58..74].chunks(2).any(|d| d == [0x04, 0x60]));
}

#[test]
fn inquiry_honours_every_allocation_length() {
    let lu = ram_lu(BLOCKS);
    let full = good(&lu, Cdb::inquiry(255).as_bytes(), &[]);
    for length in 0..=80u16 {
        let data = good(&lu, Cdb::inquiry(length).as_bytes(), &[]);
        assert_eq!(data.len(), usize::from(length).min(full.len()));
        assert_eq!(&data[..], &full[..data.len()]);
    }
}

#[test]
fn inquiry_page_code_without_evpd_is_invalid_field() {
    let lu = ram_lu(BLOCKS);
    let sense = check(
        &lu,
        &[op::INQUIRY, 0, 0x80, 0, 255, 0],
        &[],
        key::ILLEGAL_REQUEST,
        asc::INVALID_FIELD_IN_CDB,
    );
    assert_eq!(
        sense.sense_key_specific,
        Some(SenseKeySpecific::FieldPointer {
            in_cdb: true,
            bit: None,
            byte: 2
        })
    );
    check(
        &lu,
        Cdb::inquiry_vpd(0x99, 255).as_bytes(),
        &[],
        key::ILLEGAL_REQUEST,
        asc::INVALID_FIELD_IN_CDB,
    );
}

#[test]
fn vpd_pages_listed_are_all_served_with_matching_lengths() {
    let lu = ram_lu(BLOCKS);
    let data = good(&lu, Cdb::inquiry_vpd(0x00, 255).as_bytes(), &[]);
    let pages = SupportedVpdPages::decode(&data).unwrap();
    for page in [0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2] {
        assert!(pages.supports(page), "page {page:02x} not listed");
        let data = good(&lu, Cdb::inquiry_vpd(page, 255).as_bytes(), &[]);
        assert_eq!(data[1], page);
        assert_eq!(
            usize::from(u16::from_be_bytes([data[2], data[3]])) + 4,
            data.len()
        );
    }
    let serial =
        UnitSerialNumber::decode(&good(&lu, Cdb::inquiry_vpd(0x80, 255).as_bytes(), &[])).unwrap();
    assert_eq!(serial.serial, lu.config().serial);
}

#[test]
fn device_identification_has_naa_and_target_port_designators() {
    let lu = ram_lu(BLOCKS);
    let data = good(&lu, Cdb::inquiry_vpd(0x83, 1024).as_bytes(), &[]);
    let page = DeviceIdentification::decode(&data).unwrap();
    assert!(!page.truncated);
    let values: Vec<_> = page.descriptors.iter().map(|d| d.value.clone()).collect();
    assert!(values.contains(&DesignatorValue::Naa(lu.config().naa_id.to_vec())));
    assert_eq!(lu.config().naa_id[0] >> 4, 3, "NAA locally assigned");
    assert!(values.contains(&DesignatorValue::RelativeTargetPort(1)));
    assert!(values.contains(&DesignatorValue::TargetPortGroup(7)));
    assert!(values.contains(&DesignatorValue::ScsiName(format!("{TARGET},t,0x0001"))));
    let lu_designator = page.preferred_logical_unit_designator().unwrap();
    assert_eq!(lu_designator.designator_type, 3);
    for descriptor in &page.descriptors {
        if descriptor.association == 1 {
            assert!(descriptor.piv);
            assert_eq!(descriptor.protocol_identifier, 5, "iSCSI");
        }
        if descriptor.designator_type == 8 {
            assert_eq!(descriptor.designator.len() % 4, 0);
        }
    }
}

#[test]
fn naa_and_serial_derive_stably_from_the_name() {
    assert_eq!(LuConfig::for_name("a"), LuConfig::for_name("a"));
    assert_ne!(
        LuConfig::for_name("a").naa_id,
        LuConfig::for_name("b").naa_id
    );
    assert_ne!(
        LuConfig::for_name("a").serial,
        LuConfig::for_name("b").serial
    );
}

#[test]
fn block_limits_advertise_the_enforced_limits() {
    let lu = ram_lu(BLOCKS);
    let data = good(&lu, Cdb::inquiry_vpd(0xb0, 64).as_bytes(), &[]);
    assert_eq!(data.len(), 64);
    assert_eq!(data[3], 0x3c);
    let limits = BlockLimits::decode(&data).unwrap();
    assert!(limits.write_same_no_zero);
    assert_eq!(limits.max_transfer_length_blocks, MAX_TRANSFER_BYTES / 512);
    assert_eq!(
        limits.max_compare_and_write_length_blocks,
        MAX_COMPARE_AND_WRITE_BLOCKS
    );
    assert_eq!(limits.max_unmap_lba_count, MAX_UNMAP_BLOCKS);
    assert!(limits.max_unmap_lba_count <= 1024 * 1024);
    assert_eq!(
        limits.max_unmap_block_descriptor_count,
        MAX_UNMAP_DESCRIPTORS
    );
    assert_eq!(
        limits.max_write_same_length_blocks,
        u64::from(MAX_TRANSFER_BYTES / 512)
    );
}

#[test]
fn provisioning_page_reports_thin_with_unmap_and_lbprz() {
    let lu = ram_lu(BLOCKS);
    let data = good(&lu, Cdb::inquiry_vpd(0xb2, 64).as_bytes(), &[]);
    assert_eq!(data, [0x00, 0xb2, 0x00, 0x04, 0x00, 0xe4, 0x02, 0x00]);
    let characteristics = good(&lu, Cdb::inquiry_vpd(0xb1, 64).as_bytes(), &[]);
    assert_eq!(&characteristics[4..6], &[0, 1], "non-rotating");
}

#[test]
fn request_sense_reports_no_sense_in_either_format() {
    let lu = ram_lu(BLOCKS);
    let fixed = good(&lu, Cdb::request_sense(252, false).as_bytes(), &[]);
    let sense = Sense::decode(&fixed).unwrap();
    assert_eq!((sense.key, sense.asc, sense.ascq), (0, 0, 0));
    let descriptor = good(&lu, Cdb::request_sense(252, true).as_bytes(), &[]);
    assert_eq!(descriptor[0], 0x72);
}

#[test]
fn lun_map_reports_luns_and_handles_missing_luns() {
    let mut map = LunMap::new();
    map.insert(0, Arc::new(ram_lu(64)));
    map.insert(3, Arc::new(ram_lu(64)));
    let task = |cdb: &'static [u8]| ScsiTask {
        cdb,
        data_out: &[],
        expected_data_in_len: 4096,
        target_port: port(),
        nexus: Default::default(),
    };
    let report = Cdb::report_luns(0, 4096);
    let result = map.execute(
        9,
        &ScsiTask {
            cdb: report.as_bytes(),
            ..task(&[])
        },
    );
    assert_eq!(result.status, status::GOOD);
    let luns = ReportLuns::decode(&result.data_in).unwrap();
    let numbers: Vec<_> = luns.luns.iter().map(|l| l.number().unwrap()).collect();
    assert_eq!(numbers, [0, 3]);

    // Allocation length below 16 is an invalid field (SPC-4 6.27).
    let short = Cdb::report_luns(0, 8);
    let result = map.execute(
        0,
        &ScsiTask {
            cdb: short.as_bytes(),
            ..task(&[])
        },
    );
    assert_eq!(sense_of(&result).asc, 0x24);

    let inquiry = Cdb::inquiry(96);
    let result = map.execute(
        5,
        &ScsiTask {
            cdb: inquiry.as_bytes(),
            ..task(&[])
        },
    );
    assert_eq!(result.status, status::GOOD);
    assert_eq!(result.data_in[0], 0x7f, "qualifier 3, type 1Fh");

    let read = Cdb::read_10(0, 1, 512, false).unwrap();
    let result = map.execute(
        5,
        &ScsiTask {
            cdb: read.as_bytes(),
            ..task(&[])
        },
    );
    let sense = sense_of(&result);
    assert_eq!(
        (sense.key, sense.asc, sense.ascq),
        (key::ILLEGAL_REQUEST, 0x25, 0x00)
    );

    let result = map.execute(1, &task(&[op::REQUEST_SENSE, 0, 0, 0, 18, 0]));
    assert_eq!(result.status, status::GOOD);
    let sense = Sense::decode(&result.data_in).unwrap();
    assert_eq!((sense.asc, sense.ascq), (0x25, 0x00));

    let result = map.execute(
        3,
        &ScsiTask {
            cdb: read.as_bytes(),
            ..task(&[])
        },
    );
    assert_eq!(result.status, status::GOOD);
    assert_eq!(result.data_in.len(), 512);
}

// --- Capacity ------------------------------------------------------------------------

#[test]
fn read_capacity_reports_last_lba_block_size_and_thin_bits() {
    let lu = ram_lu(BLOCKS);
    let data = good(&lu, Cdb::read_capacity_10().as_bytes(), &[]);
    let capacity = ReadCapacity10::decode(&data).unwrap();
    assert_eq!(
        (capacity.last_lba, capacity.block_length_bytes),
        (BLOCKS as u32 - 1, 512)
    );
    let data = good(&lu, Cdb::read_capacity_16(32).as_bytes(), &[]);
    assert_eq!(data.len(), 32);
    let capacity = ReadCapacity16::decode(&data).unwrap();
    assert_eq!(capacity.last_lba, BLOCKS - 1);
    assert!(capacity.lbpme && capacity.lbprz && !capacity.prot_en);
    assert_eq!(capacity.logical_blocks_per_physical_block_exponent, 0);
    // Allocation length 15 cuts the data, it is not an error.
    assert_eq!(
        good(&lu, Cdb::read_capacity_16(15).as_bytes(), &[]).len(),
        15
    );
    assert!(good(&lu, Cdb::read_capacity_16(0).as_bytes(), &[]).is_empty());
}

#[test]
fn read_capacity_10_saturates_for_huge_luns_and_4k_blocks_work() {
    let config = LuConfig {
        block_size: 4096,
        ..LuConfig::for_name("big")
    };
    let lu = LogicalUnit::new(Box::new(NullBackend::new(100 << 40)), config);
    let data = good(&lu, Cdb::read_capacity_10().as_bytes(), &[]);
    assert_eq!(ReadCapacity10::decode(&data).unwrap().last_lba, u32::MAX);
    let data = good(&lu, Cdb::read_capacity_16(32).as_bytes(), &[]);
    let capacity = ReadCapacity16::decode(&data).unwrap();
    assert_eq!(capacity.last_lba, (100u64 << 40) / 4096 - 1);
    assert_eq!(capacity.block_length_bytes, 4096);
}

// --- READ / WRITE ----------------------------------------------------------------------

#[test]
fn writes_read_back_through_every_cdb_size() {
    let lu = ram_lu(BLOCKS);
    let data = pattern(4 * 512, 1);
    good(&lu, &[op::WRITE_6, 0, 0, 10, 4, 0], &data);
    assert_eq!(good(&lu, &[op::READ_6, 0, 0, 10, 4, 0], &[]), data);
    let data = pattern(3 * 512, 2);
    good(&lu, &cdb10(op::WRITE_10, 0, 100, 3), &data);
    assert_eq!(good(&lu, &cdb10(op::READ_10, 0, 100, 3), &[]), data);
    let data = pattern(5 * 512, 3);
    good(&lu, &cdb12(op::WRITE_12, 0, 200, 5), &data);
    assert_eq!(good(&lu, &cdb12(op::READ_12, 0, 200, 5), &[]), data);
    let data = pattern(2 * 512, 4);
    good(&lu, &cdb16(op::WRITE_16, 0x08, BLOCKS - 2, 2), &data);
    assert_eq!(
        good(&lu, &cdb16(op::READ_16, 0x18, BLOCKS - 2, 2), &[]),
        data
    );
    // Cross-check with the initiator side's CDB builders.
    let write = Cdb::write_16(300, 2, 512, true).unwrap();
    good(&lu, write.as_bytes(), &data);
    let read = Cdb::read_10(300, 2, 512, false).unwrap();
    assert_eq!(good(&lu, read.as_bytes(), &[]), data);
}

#[test]
fn read_6_transfer_length_zero_means_256_blocks() {
    let lu = ram_lu(BLOCKS);
    assert_eq!(
        good(&lu, &[op::READ_6, 0, 0, 0, 0, 0], &[]).len(),
        256 * 512
    );
}

#[test]
fn zero_block_transfers_are_good_and_move_nothing() {
    let lu = ram_lu(BLOCKS);
    assert!(good(&lu, &cdb10(op::READ_10, 0, 0, 0), &[]).is_empty());
    assert!(good(&lu, &cdb16(op::WRITE_16, 0, BLOCKS, 0), &[]).is_empty());
}

#[test]
fn out_of_range_lbas_are_lba_out_of_range() {
    let lu = ram_lu(BLOCKS);
    let oob = |cdb: Vec<u8>, data: &[u8]| {
        check(&lu, &cdb, data, key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE);
    };
    oob(cdb10(op::READ_10, 0, BLOCKS as u32, 1), &[]);
    oob(cdb10(op::READ_10, 0, BLOCKS as u32 - 1, 2), &[]);
    oob(cdb10(op::READ_10, 0, BLOCKS as u32 + 1, 0), &[]);
    oob(cdb10(op::READ_10, 0, u32::MAX, 1), &[]);
    oob(cdb16(op::READ_16, 0, u64::MAX, 1), &[]);
    oob(cdb16(op::READ_16, 0, 1 << 63, 1), &[]);
    oob(cdb16(op::WRITE_16, 0, BLOCKS, 1), &[0u8; 512]);
    oob(cdb12(op::WRITE_12, 0, 0x8000_0000, 1), &[0u8; 512]);
    oob(vec![op::READ_6, 0x1f, 0xff, 0xff, 1, 0], &[]);
    oob(cdb10(op::VERIFY_10, 0, BLOCKS as u32, 1), &[]);
    oob(cdb16(op::SYNCHRONIZE_CACHE_16, 0, BLOCKS, 1), &[]);
}

#[test]
fn protection_fields_and_reserved_bits_are_invalid_field_in_cdb() {
    let lu = ram_lu(BLOCKS);
    for protect in 1..8u8 {
        let sense = check(
            &lu,
            &cdb10(op::READ_10, protect << 5, 0, 1),
            &[],
            key::ILLEGAL_REQUEST,
            asc::INVALID_FIELD_IN_CDB,
        );
        match sense.sense_key_specific {
            Some(SenseKeySpecific::FieldPointer { in_cdb, byte, bit }) => {
                assert!(in_cdb);
                assert_eq!(byte, 1);
                assert!(bit.unwrap() >= 5);
            }
            other => panic!("no field pointer: {other:?}"),
        }
        check(
            &lu,
            &cdb16(op::WRITE_16, protect << 5, 0, 1),
            &[0u8; 512],
            key::ILLEGAL_REQUEST,
            asc::INVALID_FIELD_IN_CDB,
        );
        check(
            &lu,
            &cdb10(op::VERIFY_10, protect << 5, 0, 1),
            &[],
            key::ILLEGAL_REQUEST,
            asc::INVALID_FIELD_IN_CDB,
        );
    }
    // NACA in the CONTROL byte is not supported.
    let mut cdb = cdb10(op::READ_10, 0, 0, 1);
    cdb[9] = 0x04;
    check(
        &lu,
        &cdb,
        &[],
        key::ILLEGAL_REQUEST,
        asc::INVALID_FIELD_IN_CDB,
    );
}

#[test]
fn dpo_and_fua_are_accepted() {
    let lu = ram_lu(BLOCKS);
    good(&lu, &cdb10(op::READ_10, 0x18, 0, 1), &[]);
    good(&lu, &cdb10(op::WRITE_10, 0x18, 0, 1), &[0u8; 512]);
    good(&lu, &cdb12(op::READ_12, 0x18, 0, 1), &[]);
}

#[test]
fn transfers_over_the_maximum_are_invalid_field_not_allocations() {
    // 2^33 blocks: every transfer length fits on the medium, so only the limit applies.
    let lu = LogicalUnit::new(Box::new(NullBackend::new(4 << 40)), LuConfig::default());
    let max = MAX_TRANSFER_BYTES / 512;
    assert_eq!(
        good(&lu, &cdb16(op::READ_16, 0, 0, max), &[]).len() as u32,
        MAX_TRANSFER_BYTES
    );
    check(
        &lu,
        &cdb16(op::READ_16, 0, 0, max + 1),
        &[],
        key::ILLEGAL_REQUEST,
        asc::INVALID_FIELD_IN_CDB,
    );
    check(
        &lu,
        &cdb16(op::READ_16, 0, 0, u32::MAX),
        &[],
        key::ILLEGAL_REQUEST,
        asc::INVALID_FIELD_IN_CDB,
    );
}

#[test]
fn short_data_out_is_refused_before_writing() {
    let lu = ram_lu(BLOCKS);
    check(
        &lu,
        &cdb10(op::WRITE_10, 0, 0, 2),
        &[1u8; 700],
        key::ILLEGAL_REQUEST,
        asc::INVALID_FIELD_IN_CDB,
    );
    assert_eq!(
        good(&lu, &cdb10(op::READ_10, 0, 0, 2), &[]),
        vec![0u8; 1024]
    );
}

#[test]
fn null_backend_reads_zeros_and_drops_writes() {
    let lu = LogicalUnit::new(Box::new(NullBackend::new(1 << 20)), LuConfig::default());
    good(&lu, &cdb10(op::WRITE_10, 0, 0, 1), &[0xaa; 512]);
    assert_eq!(good(&lu, &cdb10(op::READ_10, 0, 0, 1), &[]), vec![0u8; 512]);
}

#[test]
fn invalid_opcode_and_service_action_senses() {
    let lu = ram_lu(BLOCKS);
    for opcode in [0x02u8, 0x04, 0x3b, 0x4c, 0x5e, 0x7f, 0x86, 0xc0, 0xff] {
        let sense = check(
            &lu,
            &[opcode, 0, 0, 0, 0, 0],
            &[],
            key::ILLEGAL_REQUEST,
            asc::INVALID_COMMAND_OPERATION_CODE,
        );
        assert!(matches!(
            sense.sense_key_specific,
            Some(SenseKeySpecific::FieldPointer {
                in_cdb: true,
                byte: 0,
                ..
            })
        ));
    }
    check(
        &lu,
        &[op::SERVICE_ACTION_IN_16, 0x11],
        &[],
        key::ILLEGAL_REQUEST,
        asc::INVALID_FIELD_IN_CDB,
    );
    let result = lu.execute(&ScsiTask {
        cdb: &[],
        data_out: &[],
        expected_data_in_len: 0,
        target_port: port(),
        nexus: Default::default(),
    });
    assert_eq!(sense_of(&result).asc, 0x20);
}

// --- VERIFY, WRITE AND VERIFY -----------------------------------------------------------

#[test]
fn verify_compares_and_reports_the_first_differing_byte() {
    let lu = ram_lu(BLOCKS);
    let data = pattern(2 * 512, 9);
    good(&lu, &cdb10(op::WRITE_AND_VERIFY_10, 0x02, 50, 2), &data);
    good(&lu, &cdb10(op::VERIFY_10, 0x02, 50, 2), &data);
    good(&lu, &cdb16(op::VERIFY_16, 0x02, 50, 2), &data);
    good(&lu, &cdb12(op::VERIFY_12, 0x02, 50, 2), &data);
    let mut wrong = data.clone();
    wrong[700] ^= 1;
    let sense = check(
        &lu,
        &cdb10(op::VERIFY_10, 0x02, 50, 2),
        &wrong,
        key::MISCOMPARE,
        asc::MISCOMPARE_DURING_VERIFY,
    );
    assert_eq!(sense.information, Some(700));
    // BYTCHK 0: no comparison, whatever the data.
    good(&lu, &cdb10(op::VERIFY_10, 0, 50, 2), &[]);
    // BYTCHK 11b: one block against each.
    good(&lu, &cdb16(op::WRITE_SAME_16, 0, 60, 3), &[5u8; 512]);
    good(&lu, &cdb10(op::VERIFY_10, 0x06, 60, 3), &[5u8; 512]);
    let sense = check(
        &lu,
        &cdb10(op::VERIFY_10, 0x06, 59, 3),
        &[5u8; 512],
        key::MISCOMPARE,
        asc::MISCOMPARE_DURING_VERIFY,
    );
    assert_eq!(sense.information, Some(0));
    check(
        &lu,
        &cdb10(op::VERIFY_10, 0x04, 50, 2),
        &[],
        key::ILLEGAL_REQUEST,
        asc::INVALID_FIELD_IN_CDB,
    );
}

// --- COMPARE AND WRITE -----------------------------------------------------------------

#[test]
fn compare_and_write_swaps_on_match_and_reports_miscompare_offset() {
    let lu = ram_lu(BLOCKS);
    let old = pattern(512, 1);
    let new = pattern(512, 2);
    good(&lu, &cdb10(op::WRITE_10, 0, 7, 1), &old);
    good(
        &lu,
        &compare_and_write(7, 1),
        &[old.clone(), new.clone()].concat(),
    );
    assert_eq!(good(&lu, &cdb10(op::READ_10, 0, 7, 1), &[]), new);

    let sense = check(
        &lu,
        &compare_and_write(7, 1),
        &[old.clone(), pattern(512, 3)].concat(),
        key::MISCOMPARE,
        asc::MISCOMPARE_DURING_VERIFY,
    );
    let first = old.iter().zip(&new).position(|(a, b)| a != b).unwrap();
    assert_eq!(sense.information, Some(first as u64));
    assert_eq!(
        good(&lu, &cdb10(op::READ_10, 0, 7, 1), &[]),
        new,
        "unchanged"
    );
}

#[test]
fn compare_and_write_checks_length_range_and_data_out_size() {
    let lu = ram_lu(BLOCKS);
    good(&lu, &compare_and_write(0, 0), &[]);
    // 256 blocks wrap to 0 in the one-byte field: the Data-Out gives it away.
    check(
        &lu,
        &compare_and_write(0, 0),
        &vec![0u8; 2 * 256 * 512],
        key::ILLEGAL_REQUEST,
        asc::INVALID_FIELD_IN_CDB,
    );
    check(
        &lu,
        &compare_and_write(BLOCKS, 1),
        &[0u8; 1024],
        key::ILLEGAL_REQUEST,
        asc::LBA_OUT_OF_RANGE,
    );
    // Unwritten blocks compare equal to zeros.
    good(
        &lu,
        &compare_and_write(9, 2),
        &[vec![0u8; 1024], vec![1u8; 1024]].concat(),
    );
    for wrong in [0usize, 512, 1023, 1025, 4 * 512] {
        check(
            &lu,
            &compare_and_write(0, 1),
            &vec![0u8; wrong],
            key::ILLEGAL_REQUEST,
            asc::INVALID_FIELD_IN_CDB,
        );
    }
}

#[test]
fn compare_and_write_is_atomic_against_concurrent_writers() {
    // Many threads take a "lock" block from 0 to their id with COMPARE AND WRITE and
    // release it back to 0; plain writers hammer the next block. If the compare and the
    // write were not atomic, two threads could both own the lock; each owner checks the
    // lock block still holds its id before releasing.
    let lu = Arc::new(ram_lu(64));
    let threads: Vec<_> = (1..=4u8)
        .map(|id| {
            let lu = Arc::clone(&lu);
            std::thread::spawn(move || {
                let free = vec![0u8; 512];
                let mine = vec![id; 512];
                let mut acquired = 0;
                while acquired < 50 {
                    let take = run(
                        &lu,
                        &compare_and_write(0, 1),
                        &[free.clone(), mine.clone()].concat(),
                    );
                    if take.status != status::GOOD {
                        good(&lu, &cdb10(op::WRITE_10, 0, 1, 1), &mine);
                        continue;
                    }
                    acquired += 1;
                    assert_eq!(good(&lu, &cdb10(op::READ_10, 0, 0, 1), &[]), mine);
                    good(
                        &lu,
                        &compare_and_write(0, 1),
                        &[mine.clone(), free.clone()].concat(),
                    );
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn orwrite_ors_into_the_medium() {
    let lu = ram_lu(BLOCKS);
    good(&lu, &cdb10(op::WRITE_10, 0, 3, 1), &[0x0f; 512]);
    good(&lu, &cdb16(op::ORWRITE_16, 0, 3, 1), &[0x30; 512]);
    assert_eq!(
        good(&lu, &cdb10(op::READ_10, 0, 3, 1), &[]),
        vec![0x3f; 512]
    );
}

// --- WRITE SAME, UNMAP, GET LBA STATUS --------------------------------------------------

#[test]
fn write_same_beyond_the_transfer_limit_is_invalid_field() {
    // MAXIMUM WRITE SAME LENGTH is the transfer limit, and it is enforced: libiscsi's
    // WriteSame16.Unmap unmaps 65536 blocks only when the page allows it and otherwise
    // expects INVALID FIELD IN CDB.
    let max = u64::from(MAX_TRANSFER_BYTES / 512);
    let lu = ram_lu(max + 16);
    good(
        &lu,
        &cdb16(op::WRITE_SAME_16, 0x08, 0, max as u32),
        &[0; 512],
    );
    let sense = check(
        &lu,
        &cdb16(op::WRITE_SAME_16, 0x08, 0, max as u32 + 1),
        &[0; 512],
        key::ILLEGAL_REQUEST,
        asc::INVALID_FIELD_IN_CDB,
    );
    assert!(sense.sense_key_specific.is_some());
}

#[test]
fn write_same_fills_and_unmaps() {
    let lu = ram_lu(BLOCKS);
    good(&lu, &cdb10(op::WRITE_SAME_10, 0, 10, 256), &[0x5a; 512]);
    assert_eq!(
        good(&lu, &cdb10(op::READ_10, 0, 10, 256), &[]),
        vec![0x5a; 256 * 512]
    );
    good(&lu, &cdb10(op::WRITE_SAME_10, 0x08, 10, 100), &[0xff; 512]);
    let back = good(&lu, &cdb10(op::READ_10, 0, 10, 256), &[]);
    assert!(back[..100 * 512].iter().all(|&b| b == 0), "LBPRZ");
    assert!(back[100 * 512..].iter().all(|&b| b == 0x5a));
    // NDOB writes zeros without Data-Out.
    good(&lu, &cdb16(op::WRITE_SAME_16, 0x01, 200, 10), &[]);
    assert_eq!(
        good(&lu, &cdb10(op::READ_10, 0, 200, 10), &[]),
        vec![0u8; 10 * 512]
    );
    // Up to the last block.
    good(
        &lu,
        &cdb16(op::WRITE_SAME_16, 0, BLOCKS - 3, 3),
        &[1u8; 512],
    );
}

#[test]
fn write_same_refuses_zero_blocks_bad_data_out_and_out_of_range() {
    let lu = ram_lu(BLOCKS);
    check(
        &lu,
        &cdb10(op::WRITE_SAME_10, 0, 0, 0),
        &[0u8; 512],
        key::ILLEGAL_REQUEST,
        asc::INVALID_FIELD_IN_CDB,
    );
    for lba in [BLOCKS as u32 + 1, 0x8000_0000, u32::MAX] {
        check(
            &lu,
            &cdb10(op::WRITE_SAME_10, 0, lba, 0),
            &[0u8; 512],
            key::ILLEGAL_REQUEST,
            asc::LBA_OUT_OF_RANGE,
        );
    }
    for size in [256usize, 1024] {
        check(
            &lu,
            &cdb10(op::WRITE_SAME_10, 0x08, 0, 1),
            &vec![0u8; size],
            key::ILLEGAL_REQUEST,
            asc::INVALID_FIELD_IN_CDB,
        );
    }
    // ANCHOR is not supported.
    check(
        &lu,
        &cdb10(op::WRITE_SAME_10, 0x18, 0, 1),
        &[0u8; 512],
        key::ILLEGAL_REQUEST,
        asc::INVALID_FIELD_IN_CDB,
    );
}

#[test]
fn unmap_deallocates_and_get_lba_status_reports_it() {
    // 1024 blocks of 512 bytes: 8 RAM chunks of 128 blocks.
    let lu = ram_lu(1024);
    good(&lu, &cdb10(op::WRITE_SAME_10, 0, 0, 1024), &[0xee; 512]);
    let list = unmap_list(&[(128, 256), (1000, 3)]);
    good(&lu, &unmap_cdb(list.len() as u16), &list);
    let back = good(&lu, &cdb10(op::READ_10, 0, 0, 1024), &[]);
    for (block, bytes) in back.chunks(512).enumerate() {
        let unmapped = (128..384).contains(&block) || (1000..1003).contains(&block);
        assert_eq!(bytes[0], if unmapped { 0 } else { 0xee }, "block {block}");
    }

    let mut cdb = vec![0u8; 16];
    cdb[0] = op::SERVICE_ACTION_IN_16;
    cdb[1] = 0x12;
    cdb[2..10].copy_from_slice(&0u64.to_be_bytes());
    cdb[10..14].copy_from_slice(&1024u32.to_be_bytes());
    let status_data = good(&lu, &cdb, &[]);
    let length = u32::from_be_bytes(status_data[0..4].try_into().unwrap()) as usize;
    assert_eq!(length + 4, status_data.len());
    let descriptors: Vec<(u64, u32, u8)> = status_data[8..]
        .chunks(16)
        .map(|d| {
            (
                u64::from_be_bytes(d[0..8].try_into().unwrap()),
                u32::from_be_bytes(d[8..12].try_into().unwrap()),
                d[12],
            )
        })
        .collect();
    assert_eq!(descriptors, [(0, 128, 0), (128, 256, 1), (384, 640, 0)]);

    // Starting inside a run, the first descriptor starts at the requested LBA.
    cdb[2..10].copy_from_slice(&200u64.to_be_bytes());
    let data = good(&lu, &cdb, &[]);
    assert_eq!(u64::from_be_bytes(data[8..16].try_into().unwrap()), 200);
    assert_eq!(data[20], 1);

    cdb[2..10].copy_from_slice(&1024u64.to_be_bytes());
    check(&lu, &cdb, &[], key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE);
    cdb[2..10].copy_from_slice(&1023u64.to_be_bytes());
    good(&lu, &cdb, &[]);
}

#[test]
fn unmap_validates_the_whole_list_before_unmapping() {
    let lu = ram_lu(BLOCKS);
    good(&lu, &cdb10(op::WRITE_10, 0, 0, 1), &[1u8; 512]);
    good(&lu, &unmap_cdb(0), &[]);
    let list = unmap_list(&[(0, 1), (BLOCKS, 1)]);
    check(
        &lu,
        &unmap_cdb(list.len() as u16),
        &list,
        key::ILLEGAL_REQUEST,
        asc::LBA_OUT_OF_RANGE,
    );
    assert_eq!(good(&lu, &cdb10(op::READ_10, 0, 0, 1), &[]), vec![1u8; 512]);
    check(
        &lu,
        &unmap_cdb(4),
        &list[..4],
        key::ILLEGAL_REQUEST,
        asc::PARAMETER_LIST_LENGTH_ERROR,
    );
    let many: Vec<(u64, u32)> = (0..=MAX_UNMAP_DESCRIPTORS as u64).map(|i| (i, 1)).collect();
    let list = unmap_list(&many);
    check(
        &lu,
        &unmap_cdb(list.len() as u16),
        &list,
        key::ILLEGAL_REQUEST,
        asc::INVALID_FIELD_IN_PARAMETER_LIST,
    );
    // A zero-length descriptor list is fine.
    let list = unmap_list(&[]);
    good(&lu, &unmap_cdb(list.len() as u16), &list);
}

#[test]
fn unmap_is_not_offered_without_thin_provisioning() {
    struct Thick(RamBackend);
    impl crate::backend::Backend for Thick {
        fn size_bytes(&self) -> u64 {
            self.0.size_bytes()
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
            self.0.read_at(offset, buf)
        }
        fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.0.write_at(offset, data)
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn unmap(&self, _: u64, _: u64) -> std::io::Result<()> {
            unreachable!("unmap on a thick backend")
        }
        fn kind(&self) -> &'static str {
            "thick"
        }
        fn thin(&self) -> bool {
            false
        }
    }
    let lu = LogicalUnit::new(
        Box::new(Thick(RamBackend::new(1 << 20))),
        LuConfig::default(),
    );
    let list = unmap_list(&[(0, 1)]);
    check(
        &lu,
        &unmap_cdb(list.len() as u16),
        &list,
        key::ILLEGAL_REQUEST,
        asc::INVALID_COMMAND_OPERATION_CODE,
    );
    check(
        &lu,
        &cdb10(op::WRITE_SAME_10, 0x08, 0, 1),
        &[0u8; 512],
        key::ILLEGAL_REQUEST,
        asc::INVALID_FIELD_IN_CDB,
    );
    let data = good(&lu, Cdb::read_capacity_16(32).as_bytes(), &[]);
    assert!(!ReadCapacity16::decode(&data).unwrap().lbpme);
    let data = good(&lu, Cdb::inquiry_vpd(0xb0, 64).as_bytes(), &[]);
    assert_eq!(BlockLimits::decode(&data).unwrap().max_unmap_lba_count, 0);
}

// --- MODE SENSE / MODE SELECT -----------------------------------------------------------

fn mode_sense_6(page: u8, page_control: u8, dbd: bool, allocation: u8) -> Vec<u8> {
    vec![
        op::MODE_SENSE_6,
        if dbd { 0x08 } else { 0 },
        page_control << 6 | page,
        0,
        allocation,
        0,
    ]
}

#[test]
fn mode_sense_returns_caching_and_control_pages() {
    let lu = ram_lu(BLOCKS);
    let data = good(&lu, &mode_sense_6(0x3f, 0, false, 255), &[]);
    assert_eq!(usize::from(data[0]) + 1, data.len());
    assert_eq!(data[2] & 0x10, 0x10, "DPOFUA");
    assert_eq!(data[2] & 0x80, 0, "not write protected");
    assert_eq!(data[3], 8);
    assert_eq!(u32::from_be_bytes([0, data[9], data[10], data[11]]), 512);
    assert_eq!(
        u32::from_be_bytes(data[4..8].try_into().unwrap()),
        BLOCKS as u32
    );
    let pages = &data[12..];
    assert_eq!(&pages[..2], &[0x08, 0x12]);
    assert_eq!(pages[2] & 0x04, 0x04, "WCE");
    assert_eq!(&pages[20..22], &[0x0a, 0x0a]);
    assert_eq!(pages[22] & 0x04, 0, "D_SENSE clear: fixed format sense");
    assert_eq!(pages.len(), 20 + 12);

    // Residuals: the allocation length cuts the data.
    assert_eq!(good(&lu, &mode_sense_6(0x3f, 0, false, 4), &[]).len(), 4);

    let control = good(&lu, &mode_sense_6(0x0a, 0, true, 255), &[]);
    assert_eq!(control[3], 0);
    assert_eq!(&control[4..6], &[0x0a, 0x0a]);

    // MODE SENSE(10) with LLBAA: the long block descriptor.
    let data = good(
        &lu,
        &[op::MODE_SENSE_10, 0x10, 0x08, 0, 0, 0, 0, 0x01, 0x00, 0],
        &[],
    );
    assert_eq!(
        usize::from(u16::from_be_bytes([data[0], data[1]])) + 2,
        data.len()
    );
    assert_eq!(data[4] & 0x01, 1);
    assert_eq!(u16::from_be_bytes([data[6], data[7]]), 16);
    assert_eq!(u64::from_be_bytes(data[8..16].try_into().unwrap()), BLOCKS);
    assert_eq!(&data[24..26], &[0x08, 0x12]);

    check(
        &lu,
        &mode_sense_6(0x19, 0, false, 255),
        &[],
        key::ILLEGAL_REQUEST,
        asc::INVALID_FIELD_IN_CDB,
    );
    check(
        &lu,
        &mode_sense_6(0x08, 3, false, 255),
        &[],
        key::ILLEGAL_REQUEST,
        asc::SAVING_PARAMETERS_NOT_SUPPORTED,
    );
    let changeable = good(&lu, &mode_sense_6(0x0a, 1, true, 255), &[]);
    assert_eq!(changeable[4 + 4], 0x08, "SWP changeable");
}

#[test]
fn mode_select_sets_swp_which_write_protects() {
    let lu = ram_lu(BLOCKS);
    // Read the control page, set SWP, send it back as MODE SELECT(6) does in libiscsi.
    let sense = good(&lu, &mode_sense_6(0x0a, 0, true, 255), &[]);
    let mut page = sense[4..].to_vec();
    page[0] &= 0x7f; // PS is reserved in MODE SELECT
    page[4] |= 0x08;
    let mut list = vec![0u8, 0, 0, 0];
    list.extend_from_slice(&page);
    good(
        &lu,
        &[op::MODE_SELECT_6, 0x10, 0, 0, list.len() as u8, 0],
        &list,
    );
    let after = good(&lu, &mode_sense_6(0x0a, 0, true, 255), &[]);
    assert_eq!(after[4 + 4] & 0x08, 0x08);
    assert_eq!(after[2] & 0x80, 0x80, "WP in the device-specific parameter");
    good(&lu, &cdb10(op::READ_10, 0, 0, 1), &[]);
    check(
        &lu,
        &cdb10(op::WRITE_10, 0, 0, 1),
        &[0u8; 512],
        key::DATA_PROTECT,
        asc::WRITE_PROTECTED,
    );
    check(
        &lu,
        &compare_and_write(0, 1),
        &[0u8; 1024],
        key::DATA_PROTECT,
        asc::WRITE_PROTECTED,
    );
    // Clear it again.
    list[4 + 4] &= !0x08;
    good(
        &lu,
        &[op::MODE_SELECT_6, 0x10, 0, 0, list.len() as u8, 0],
        &list,
    );
    good(&lu, &cdb10(op::WRITE_10, 0, 0, 1), &[0u8; 512]);
}

#[test]
fn mode_select_changes_wce_and_refuses_unchangeable_bits() {
    let lu = ram_lu(BLOCKS);
    let sense = good(
        &lu,
        &[op::MODE_SENSE_10, 0x08, 0x08, 0, 0, 0, 0, 0, 255, 0],
        &[],
    );
    let mut list = vec![0u8; 8];
    list.extend_from_slice(&sense[8..]);
    list[8 + 2] &= !0x04;
    let cdb = [
        op::MODE_SELECT_10,
        0x10,
        0,
        0,
        0,
        0,
        0,
        0,
        list.len() as u8,
        0,
    ];
    good(&lu, &cdb, &list);
    let after = good(&lu, &mode_sense_6(0x08, 0, true, 255), &[]);
    assert_eq!(after[4 + 2] & 0x04, 0, "WCE cleared");
    // Default values still report the configured WCE.
    let default = good(&lu, &mode_sense_6(0x08, 2, true, 255), &[]);
    assert_eq!(default[4 + 2] & 0x04, 0x04);

    list[8 + 2] |= 0x01; // RCD is not changeable
    let sense = check(
        &lu,
        &cdb,
        &list,
        key::ILLEGAL_REQUEST,
        asc::INVALID_FIELD_IN_PARAMETER_LIST,
    );
    assert!(matches!(
        sense.sense_key_specific,
        Some(SenseKeySpecific::FieldPointer {
            in_cdb: false,
            byte: 10,
            ..
        })
    ));
    // SP (save pages) is not supported.
    check(
        &lu,
        &[
            op::MODE_SELECT_10,
            0x11,
            0,
            0,
            0,
            0,
            0,
            0,
            list.len() as u8,
            0,
        ],
        &list,
        key::ILLEGAL_REQUEST,
        asc::INVALID_FIELD_IN_CDB,
    );
    // A list longer than the Data-Out.
    check(
        &lu,
        &[op::MODE_SELECT_10, 0x10, 0, 0, 0, 0, 0, 0, 200, 0],
        &list,
        key::ILLEGAL_REQUEST,
        asc::PARAMETER_LIST_LENGTH_ERROR,
    );
}

// --- REPORT SUPPORTED OPERATION CODES --------------------------------------------------

fn rsoc(options: u8, opcode: u8, action: u16, allocation: u32) -> Vec<u8> {
    let mut cdb = vec![0u8; 12];
    cdb[0] = op::MAINTENANCE_IN;
    cdb[1] = 0x0c;
    cdb[2] = options;
    cdb[3] = opcode;
    cdb[4..6].copy_from_slice(&action.to_be_bytes());
    cdb[6..10].copy_from_slice(&allocation.to_be_bytes());
    cdb
}

#[test]
fn report_supported_operation_codes_lists_every_command_consistently() {
    let lu = ram_lu(BLOCKS);
    let all = good(&lu, &rsoc(0, 0, 0, 65535), &[]);
    let length = u32::from_be_bytes(all[0..4].try_into().unwrap()) as usize;
    assert_eq!(length + 4, all.len());
    let descriptors: Vec<&[u8]> = all[4..].chunks(8).collect();
    assert_eq!(descriptors.len(), opcodes::COMMANDS.len());
    for descriptor in descriptors {
        let opcode = descriptor[0];
        let action = u16::from_be_bytes([descriptor[2], descriptor[3]]);
        let servactv = descriptor[5] & 0x01 != 0;
        assert!(servactv || action == 0);
        let cdb_length = u16::from_be_bytes([descriptor[6], descriptor[7]]);
        let (right, wrong) = if servactv { (2, 1) } else { (1, 2) };
        let one = good(&lu, &rsoc(right, opcode, action, 65535), &[]);
        assert_eq!(one[1] & 0x07, 3, "opcode {opcode:02x} supported");
        assert_eq!(u16::from_be_bytes([one[2], one[3]]), cdb_length);
        assert_eq!(one[4], opcode);
        assert_eq!(one.len(), 4 + usize::from(cdb_length));
        check(
            &lu,
            &rsoc(wrong, opcode, action, 65535),
            &[],
            key::ILLEGAL_REQUEST,
            asc::INVALID_FIELD_IN_CDB,
        );
    }
    // READ(10): DPO and FUA are in the usage data.
    let read10 = good(&lu, &rsoc(1, op::READ_10, 0, 65535), &[]);
    assert_eq!(read10[5] & 0x18, 0x18);
    // With RCTD every descriptor carries a 12-byte timeouts descriptor.
    let with_timeouts = good(&lu, &rsoc(0x80, 0, 0, 65535), &[]);
    assert_eq!(with_timeouts.len() - 4, opcodes::COMMANDS.len() * 20);
    assert_eq!(with_timeouts[4 + 5] & 0x02, 0x02, "CTDP");
    // An unsupported opcode with option 1 is GOOD with SUPPORT 001b.
    let unsupported = good(&lu, &rsoc(1, 0x02, 0, 65535), &[]);
    assert_eq!(unsupported[1] & 0x07, 1);
    assert_eq!(good(&lu, &rsoc(0, 0, 0, 10), &[]).len(), 10);
}

#[test]
fn every_listed_command_really_executes() {
    // Each command in the table, sent with its usage data as the CDB, must not be refused
    // as an unknown opcode.
    let lu = ram_lu(BLOCKS);
    for command in opcodes::COMMANDS {
        let result = run(&lu, command.usage, &[]);
        if result.status != status::GOOD {
            let sense = sense_of(&result);
            assert_ne!(sense.asc, 0x20, "opcode {:02x} unknown", command.opcode);
        }
    }
}

// --- data_out_length -------------------------------------------------------------------

#[test]
fn data_out_length_follows_the_cdb() {
    assert_eq!(
        data_out_length(&cdb10(op::WRITE_10, 0, 0, 8), 512),
        Some(4096)
    );
    assert_eq!(data_out_length(&cdb10(op::READ_10, 0, 0, 8), 512), Some(0));
    assert_eq!(
        data_out_length(&[op::WRITE_6, 0, 0, 0, 0, 0], 512),
        Some(256 * 512)
    );
    assert_eq!(
        data_out_length(&cdb16(op::WRITE_16, 0, 0, 2), 4096),
        Some(8192)
    );
    assert_eq!(data_out_length(&compare_and_write(0, 1), 512), Some(1024));
    assert_eq!(
        data_out_length(&cdb10(op::WRITE_SAME_10, 0, 0, 100), 512),
        Some(512)
    );
    assert_eq!(
        data_out_length(&cdb16(op::WRITE_SAME_16, 0x01, 0, 100), 512),
        Some(0)
    );
    assert_eq!(data_out_length(&unmap_cdb(24), 512), Some(24));
    assert_eq!(
        data_out_length(&cdb10(op::VERIFY_10, 0x02, 0, 3), 512),
        Some(1536)
    );
    assert_eq!(
        data_out_length(&cdb10(op::VERIFY_10, 0x06, 0, 3), 512),
        Some(512)
    );
    assert_eq!(
        data_out_length(&cdb10(op::VERIFY_10, 0, 0, 3), 512),
        Some(0)
    );
    assert_eq!(
        data_out_length(&[op::MODE_SELECT_6, 0x10, 0, 0, 28, 0], 512),
        Some(28)
    );
    assert_eq!(
        data_out_length(&cdb16(op::WRITE_16, 0, 0, u32::MAX), 4096),
        None
    );
    assert_eq!(data_out_length(&[0x02, 0, 0, 0, 0, 0], 512), None);
    assert_eq!(data_out_length(&[op::WRITE_10, 0, 0], 512), None);
    assert_eq!(data_out_length(&[], 512), None);
}

// --- Robustness ------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn execute_never_panics_on_arbitrary_cdbs_and_data(
        cdb in proptest::collection::vec(any::<u8>(), 0..20),
        opcode_choice in proptest::sample::select(
            opcodes::COMMANDS.iter().map(|c| c.opcode).collect::<Vec<_>>()),
        use_known_opcode in any::<bool>(),
        data in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let lu = LogicalUnit::new(Box::new(RamBackend::new(64 * 512)), LuConfig::default());
        let mut cdb = cdb;
        if use_known_opcode && !cdb.is_empty() {
            cdb[0] = opcode_choice;
        }
        let task = ScsiTask {
            cdb: &cdb,
            data_out: &data,
            expected_data_in_len: 4096,
            target_port: port(),
            nexus: Default::default(),
        };
        let result = lu.execute(&task);
        if result.status == status::GOOD {
            prop_assert!(result.sense.is_empty());
        } else {
            prop_assert_eq!(result.status, status::CHECK_CONDITION);
            prop_assert_eq!(result.sense.len(), 18);
            prop_assert!(result.data_in.is_empty());
        }
        prop_assert!(result.data_in.len() <= MAX_TRANSFER_BYTES as usize);
        let mut map = LunMap::new();
        map.insert(0, Arc::new(lu));
        let _ = map.execute(1, &task);
        let _ = data_out_length(&cdb, 512);
    }
}

/// RAM storage that also offers a ring file (`/dev/null`), so [`LogicalUnit::plan`] plans
/// I/O for it instead of running it.
struct RingRam {
    ram: RamBackend,
    null: std::fs::File,
}

impl crate::backend::Backend for RingRam {
    fn size_bytes(&self) -> u64 {
        self.ram.size_bytes()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.ram.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.ram.write_at(offset, data)
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn unmap(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.ram.unmap(offset, len)
    }
    fn kind(&self) -> &'static str {
        "ring-ram"
    }
    fn thin(&self) -> bool {
        self.ram.thin()
    }
    fn ring_file(&self) -> Option<crate::backend::RingFile<'_>> {
        use std::os::fd::AsFd;
        Some(crate::backend::RingFile {
            fd: self.null.as_fd(),
            direct: false,
            memory_align_bytes: 1,
            submit_may_block: false,
        })
    }
}

fn ring_lu(blocks: u64) -> LogicalUnit {
    let backend = RingRam {
        ram: RamBackend::new(blocks * 512),
        null: std::fs::File::open("/dev/null").unwrap(),
    };
    LogicalUnit::new(Box::new(backend), LuConfig::for_name("test"))
}

fn plan(lu: &LogicalUnit, cdb: &[u8], data_out: &[u8]) -> Plan {
    let mut padded = [0u8; 16];
    padded[..cdb.len()].copy_from_slice(cdb);
    lu.plan(&ScsiTask {
        cdb: &padded,
        data_out,
        expected_data_in_len: 1 << 24,
        target_port: port(),
        nexus: Default::default(),
    })
}

#[test]
fn plan_turns_read_write_and_synchronize_cache_into_io() {
    let lu = ring_lu(BLOCKS);
    let Plan::Io(read) = plan(&lu, &cdb10(op::READ_10, 0, 10, 4), &[]) else {
        panic!("READ(10) is planned");
    };
    assert_eq!(
        (read.kind, read.offset, read.len, read.flush_after),
        (IoKind::Read, 5120, 2048, false)
    );
    let Plan::Io(write) = plan(&lu, &cdb16(op::WRITE_16, 0x08, 3, 2), &[0; 2048]) else {
        panic!("WRITE(16) is planned");
    };
    // FUA: durable before GOOD. Only the CDB's two blocks are written.
    assert_eq!(
        (write.kind, write.offset, write.len, write.flush_after),
        (IoKind::Write, 1536, 1024, true)
    );
    let Plan::Io(sync) = plan(&lu, &cdb10(op::SYNCHRONIZE_CACHE_10, 0, 0, 0), &[]) else {
        panic!("SYNCHRONIZE CACHE is planned");
    };
    assert_eq!(sync.kind, IoKind::Flush);
    // Other commands run at once; so does everything on a unit without a ring file.
    assert!(matches!(
        plan(&lu, &[op::TEST_UNIT_READY, 0, 0, 0, 0, 0], &[]),
        Plan::Done(ScsiResult { status: 0, .. })
    ));
    assert!(matches!(
        plan(&ram_lu(BLOCKS), &cdb10(op::READ_10, 0, 0, 1), &[]),
        Plan::Done(ScsiResult { status: 0, .. })
    ));
}

#[test]
fn finish_maps_io_errors_to_medium_errors() {
    let lu = ring_lu(BLOCKS);
    let eio = || std::io::Error::from_raw_os_error(5);
    let Plan::Io(read) = plan(&lu, &cdb10(op::READ_10, 0, 0, 1), &[]) else {
        panic!("planned");
    };
    let result = lu.finish(read, Err(eio()));
    assert_eq!(sense_of(&result).key, key::MEDIUM_ERROR);
    assert_eq!(sense_of(&result).asc, asc::UNRECOVERED_READ_ERROR.0);
    let Plan::Io(write) = plan(&lu, &cdb10(op::WRITE_10, 0, 0, 1), &[0; 512]) else {
        panic!("planned");
    };
    let result = lu.finish(write, Err(eio()));
    assert_eq!(sense_of(&result).asc, asc::WRITE_ERROR.0);
    let Plan::Io(read) = plan(&lu, &cdb10(op::READ_10, 0, 0, 1), &[]) else {
        panic!("planned");
    };
    assert_eq!(
        lu.finish(read, Ok(vec![9; 512])),
        ScsiResult::good(vec![9; 512])
    );
}

#[test]
fn compare_and_write_is_busy_while_a_planned_write_is_in_flight() {
    let lu = ring_lu(BLOCKS);
    let Plan::Io(write) = plan(&lu, &cdb10(op::WRITE_10, 0, 0, 1), &[0; 512]) else {
        panic!("planned");
    };
    let caw = |lu: &LogicalUnit| run(lu, &compare_and_write(0, 1), &[0; 1024]).status;
    assert_eq!(caw(&lu), status::BUSY);
    // A read in flight does not hold COMPARE AND WRITE back.
    drop(lu.finish(write, Ok(Vec::new())));
    let _read = plan(&lu, &cdb10(op::READ_10, 0, 0, 1), &[]);
    assert_eq!(caw(&lu), status::GOOD);
}

/// The CDB opcodes the plan step handles itself.
const PLANNED_OPCODES: [u8; 10] = [
    op::READ_6,
    op::READ_10,
    op::READ_12,
    op::READ_16,
    op::WRITE_6,
    op::WRITE_10,
    op::WRITE_12,
    op::WRITE_16,
    op::SYNCHRONIZE_CACHE_10,
    op::SYNCHRONIZE_CACHE_16,
];

proptest! {
    /// The plan step refuses exactly what execution refuses, with the same sense, and
    /// plans exactly the bytes execution would move.
    #[test]
    fn plan_checks_every_cdb_as_execute_does(
        opcode_index in 0usize..PLANNED_OPCODES.len(),
        mut cdb in proptest::collection::vec(any::<u8>(), 16),
        lba in prop_oneof![0u64..64, (BLOCKS - 48)..(BLOCKS + 4)],
        blocks in 0u32..40,
        data_blocks in 0usize..40,
        flags_only in any::<bool>(),
    ) {
        let opcode = PLANNED_OPCODES[opcode_index];
        cdb[0] = opcode;
        if flags_only {
            // Mostly well-formed CDBs: random flags, sane LBA and length fields.
            let sane = match opcode {
                op::READ_6 | op::WRITE_6 => {
                    let mut c = vec![opcode, (lba >> 16) as u8 & 0x1f, (lba >> 8) as u8, lba as u8, blocks as u8, 0];
                    c.resize(16, 0);
                    c
                }
                op::READ_12 | op::WRITE_12 => cdb12(opcode, cdb[1] & 0x08, lba as u32, blocks),
                op::READ_16 | op::WRITE_16 | op::SYNCHRONIZE_CACHE_16 => {
                    cdb16(opcode, cdb[1] & 0x0a, lba, blocks)
                }
                _ => cdb10(opcode, cdb[1] & 0x0a, lba as u32, blocks as u16),
            };
            cdb = sane;
            cdb.resize(16, 0);
        }
        let data_out = vec![0x5a; data_blocks * 512];
        let ring = ring_lu(BLOCKS);
        let ram = ram_lu(BLOCKS);
        let executed = run(&ram, &cdb, &data_out);
        match plan(&ring, &cdb, &data_out) {
            Plan::Done(result) => prop_assert_eq!(result, executed),
            Plan::Io(io) => {
                prop_assert_eq!(executed.status, status::GOOD);
                if io.kind == IoKind::Read {
                    prop_assert_eq!(io.len, executed.data_in.len() as u64);
                }
                prop_assert!(io.offset + io.len <= BLOCKS * 512);
                prop_assert!(io.len <= data_out.len() as u64 || io.kind != IoKind::Write);
            }
            Plan::Blocking => prop_assert!(false, "a planned opcode left to the blocking pool"),
        }
    }
}

#[test]
fn on_a_ring_unit_commands_that_touch_the_medium_are_left_to_a_thread_that_may_block() {
    let ring = ring_lu(BLOCKS);
    let write_same = cdb10(op::WRITE_SAME_10, 0, 0, 1);
    assert!(matches!(
        plan(&ring, &write_same, &[0; 512]),
        Plan::Blocking
    ));
    let verify = cdb10(op::VERIFY_10, 0, 0, 1);
    assert!(matches!(plan(&ring, &verify, &[]), Plan::Blocking));
    let mut compare_and_write = vec![0u8; 16];
    compare_and_write[0] = op::COMPARE_AND_WRITE;
    compare_and_write[13] = 1;
    assert!(matches!(
        plan(&ring, &compare_and_write, &[0; 1024]),
        Plan::Blocking
    ));
    // Identity, capacity and sense come from the unit itself: answered at once.
    let mut inquiry = vec![op::INQUIRY, 0, 0, 0, 96, 0];
    inquiry.resize(16, 0);
    assert!(matches!(plan(&ring, &inquiry, &[]), Plan::Done(_)));
    let mut read_capacity_16 = vec![0u8; 16];
    read_capacity_16[0] = op::SERVICE_ACTION_IN_16;
    read_capacity_16[1] = 0x10;
    read_capacity_16[13] = 32;
    assert!(matches!(plan(&ring, &read_capacity_16, &[]), Plan::Done(_)));
    // A RAM unit never blocks: everything runs at once.
    let ram = ram_lu(BLOCKS);
    assert!(matches!(plan(&ram, &write_same, &[0; 512]), Plan::Done(_)));
}
