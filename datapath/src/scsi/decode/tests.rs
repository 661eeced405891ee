//! Decoder tests. Vectors marked "tgt" were captured from tgt 1.0 (scsi-target-utils) on
//! loopback with libiscsi's iscsi-inq / iscsi-readcapacity16 / iscsi-ls as the initiator;
//! the others are built by hand from the SPC-4 / SBC-3 tables.

use super::*;
use proptest::prelude::*;

fn unhex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

// tgt, INQUIRY allocation length 0x42 (the full 66 bytes) for a disk LUN.
const TGT_INQUIRY_DISK: &str = "000005123d00000249455420202020205649525455414c2d4449534b20202020\
                                303030310000000000000000000000000000000000000000000004c0096003000000";
// tgt, INQUIRY for the controller LUN 0, allocation length 0x40.
const TGT_INQUIRY_CONTROLLER: &str = "0c0005123d0000024945542020202020436f6e74726f6c6c6572202020202020\
                                      303030310000000000000000000000000000000000000000000004c0096001fb";
// tgt, VPD 0x83, allocation length 0x4c (the full 76 bytes).
const TGT_VPD_83: &str = "0083004802010024494554202020202030303031303030310000000000000000\
                          0000000000000000000000000103000830000001000000010103001060000000\
                          000000000e00000000010001";

#[test]
fn standard_inquiry_from_tgt_disk() {
    let inq = StandardInquiry::decode(&unhex(TGT_INQUIRY_DISK)).unwrap();
    assert_eq!(inq.peripheral_qualifier, 0);
    assert_eq!(inq.peripheral_qualifier_name(), "connected");
    assert_eq!(inq.device_type, 0);
    assert_eq!(inq.device_type_name(), "direct access block device");
    assert!(!inq.removable);
    assert_eq!(inq.version, 5);
    assert_eq!(inq.version_name(), "SPC-3");
    assert!(inq.hisup);
    assert!(!inq.norm_aca);
    assert_eq!(inq.response_data_format, 2);
    assert_eq!(inq.tpgs, 0);
    assert!(!inq.third_party_copy);
    assert!(!inq.protect);
    assert!(inq.cmd_que);
    assert_eq!(inq.vendor, "IET");
    assert_eq!(inq.product, "VIRTUAL-DISK");
    assert_eq!(inq.revision, "0001");
    assert_eq!(inq.full_length, 66);
    assert!(!inq.truncated);
}

#[test]
fn standard_inquiry_from_tgt_controller_is_truncated_at_64() {
    let inq = StandardInquiry::decode(&unhex(TGT_INQUIRY_CONTROLLER)).unwrap();
    assert_eq!(inq.device_type, 0x0c);
    assert_eq!(inq.device_type_name(), "storage array controller device");
    assert_eq!(inq.product, "Controller");
    // 0x3d + 5 = 66 bytes announced, 64 asked for and sent.
    assert_eq!(inq.full_length, 66);
    assert!(inq.truncated);
}

#[test]
fn standard_inquiry_flags_by_hand() {
    // Qualifier 1 (not connected), type 0x05; RMB; SPC-4; NormACA+HiSup, RDF 2;
    // SCCS, ACC, TPGS 3, 3PC, PROTECT; EncServ, MultiP; CmdQue.
    let mut data = vec![0x25, 0x80, 0x06, 0x32, 31, 0xf9, 0x50, 0x02];
    data.extend_from_slice(b"VENDOR\0\0PRODUCT         1.2 ");
    let inq = StandardInquiry::decode(&data).unwrap();
    assert_eq!(inq.peripheral_qualifier, 1);
    assert_eq!(inq.device_type, 5);
    assert!(inq.removable && !inq.lu_cong);
    assert_eq!(inq.version_name(), "SPC-4");
    assert!(inq.norm_aca && inq.hisup);
    assert!(inq.sccs && inq.acc && inq.third_party_copy && inq.protect);
    assert_eq!(inq.tpgs, 3);
    assert_eq!(inq.tpgs_name(), "implicit and explicit");
    assert!(inq.enc_serv && inq.multi_port && inq.cmd_que);
    assert_eq!(inq.vendor, "VENDOR");
    assert_eq!(inq.product, "PRODUCT");
    assert_eq!(inq.revision, "1.2");
    assert!(!inq.truncated);
}

#[test]
fn standard_inquiry_short_and_odd() {
    assert_eq!(
        StandardInquiry::decode(&[0, 0, 5, 2]),
        Err(ScsiError::Truncated {
            what: "standard INQUIRY data",
            needed: 5,
            got: 4
        })
    );
    // Header only: strings empty, flagged truncated.
    let inq = StandardInquiry::decode(&[0, 0, 5, 2, 31]).unwrap();
    assert!(inq.truncated);
    assert_eq!(inq.vendor, "");
    // Cut inside the product field: what is there is kept.
    let full = unhex(TGT_INQUIRY_DISK);
    let inq = StandardInquiry::decode(&full[..20]).unwrap();
    assert_eq!(inq.vendor, "IET");
    assert_eq!(inq.product, "VIRT");
    assert!(inq.truncated);
    // Control characters do not pass through.
    let mut data = full.clone();
    data[8] = 0x1b;
    assert_eq!(StandardInquiry::decode(&data).unwrap().vendor, "\u{fffd}ET");
}

#[test]
fn supported_vpd_pages_from_tgt() {
    let pages = SupportedVpdPages::decode(&unhex("00000006008083b0b1b2")).unwrap();
    assert_eq!(pages.pages, vec![0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2]);
    assert!(pages.supports(0xb0));
    assert!(!pages.supports(0x89));
    assert!(!pages.truncated);
    assert_eq!(vpd_page_name(0xb2), "Logical Block Provisioning");

    let cut = SupportedVpdPages::decode(&unhex("000000060080")).unwrap();
    assert_eq!(cut.pages, vec![0x00, 0x80]);
    assert!(cut.truncated);
    assert_eq!(cut.full_length, 10);
}

#[test]
fn vpd_header_checks() {
    assert_eq!(
        SupportedVpdPages::decode(&unhex("008000")),
        Err(ScsiError::Truncated {
            what: "Supported VPD Pages page",
            needed: 4,
            got: 3
        })
    );
    assert_eq!(
        UnitSerialNumber::decode(&unhex("00000006008083b0b1b2")),
        Err(ScsiError::WrongVpdPage {
            expected: 0x80,
            got: 0x00
        })
    );
}

#[test]
fn unit_serial_number_from_tgt() {
    // tgt left-pads the serial with spaces to 36 bytes.
    let data =
        unhex("00800024202020202020202020202020202020202020202020202020202020202020626561663131");
    let serial = UnitSerialNumber::decode(&data).unwrap();
    assert_eq!(serial.serial, "beaf11");
    assert_eq!(serial.full_length, 40);
    assert!(!serial.truncated);
    // Bytes past the page length are not part of the serial.
    let mut longer = data.clone();
    longer.extend_from_slice(b"JUNK");
    assert_eq!(UnitSerialNumber::decode(&longer).unwrap().serial, "beaf11");
}

#[test]
fn device_identification_from_tgt() {
    let page = DeviceIdentification::decode(&unhex(TGT_VPD_83)).unwrap();
    assert!(!page.truncated);
    assert_eq!(page.descriptors.len(), 3);

    let t10 = &page.descriptors[0];
    assert_eq!(t10.code_set, code_set::ASCII);
    assert_eq!(t10.code_set_name(), "ASCII");
    assert!(!t10.piv);
    assert_eq!(t10.association, association::LOGICAL_UNIT);
    assert_eq!(t10.association_name(), "logical unit");
    assert_eq!(t10.designator_type, designator_type::T10_VENDOR_ID);
    assert_eq!(t10.designator_type_name(), "T10 vendor ID based");
    assert_eq!(t10.designator.len(), 36);
    assert_eq!(
        t10.value,
        DesignatorValue::T10VendorId {
            vendor: "IET".into(),
            identifier: "00010001".into()
        }
    );
    assert_eq!(t10.value.to_string(), "IET 00010001");
    assert_eq!(t10.protocol(), None);

    let naa3 = &page.descriptors[1];
    assert_eq!(naa3.designator_type_name(), "NAA");
    assert_eq!(naa3.code_set_name(), "binary");
    assert_eq!(naa3.value.to_string(), "naa.3000000100000001");

    let naa6 = &page.descriptors[2];
    assert_eq!(
        naa6.value.to_string(),
        "naa.60000000000000000e00000000010001"
    );

    // NAA first among the logical unit names.
    assert_eq!(page.preferred_logical_unit_designator(), Some(naa3));
}

#[test]
fn device_identification_from_tgt_cut_at_64() {
    // tgt with allocation length 0x40: the page is 0x48 + 4 = 76 bytes, the last
    // descriptor is cut off and dropped.
    let full = unhex(TGT_VPD_83);
    let page = DeviceIdentification::decode(&full[..64]).unwrap();
    assert!(page.truncated);
    assert_eq!(page.full_length, 76);
    assert_eq!(page.descriptors.len(), 2);
}

#[test]
fn device_identification_port_designators_by_hand() {
    let mut data = vec![0x00, 0x83, 0x00, 0x00];
    // iSCSI (5), UTF-8, PIV, target port, SCSI name string; null-terminated and padded.
    let name = b"iqn.2024-01.org.example:disk,t,0x0001\0\0\0";
    data.extend_from_slice(&[0x53, 0x98, 0x00, name.len() as u8]);
    data.extend_from_slice(name);
    // iSCSI, binary, PIV, target port, relative target port 2.
    data.extend_from_slice(&[0x51, 0x94, 0x00, 0x04, 0x00, 0x00, 0x00, 0x02]);
    // Binary, target port group 0x0102.
    data.extend_from_slice(&[0x01, 0x15, 0x00, 0x04, 0x00, 0x00, 0x01, 0x02]);
    // Binary, EUI-64, logical unit.
    data.extend_from_slice(&[0x01, 0x02, 0x00, 0x08, 1, 2, 3, 4, 5, 6, 7, 8]);
    // Vendor specific, binary; and vendor specific, ASCII.
    data.extend_from_slice(&[0x01, 0x00, 0x00, 0x02, 0xab, 0xcd]);
    data.extend_from_slice(&[0x02, 0x00, 0x00, 0x03, b'a', b'b', b'c']);
    // Logical unit group with a wrong length stays binary.
    data.extend_from_slice(&[0x01, 0x06, 0x00, 0x02, 0x00, 0x07]);
    let page_length = (data.len() - 4) as u16;
    data[2..4].copy_from_slice(&page_length.to_be_bytes());

    let page = DeviceIdentification::decode(&data).unwrap();
    assert!(!page.truncated);
    let d = &page.descriptors;
    assert_eq!(d.len(), 7);
    assert_eq!(
        d[0].value,
        DesignatorValue::ScsiName("iqn.2024-01.org.example:disk,t,0x0001".into())
    );
    assert_eq!(d[0].protocol(), Some("iSCSI"));
    assert_eq!(d[0].association_name(), "target port");
    assert_eq!(d[0].code_set_name(), "UTF-8");
    assert_eq!(d[1].value, DesignatorValue::RelativeTargetPort(2));
    assert_eq!(d[1].designator_type_name(), "relative target port");
    assert_eq!(d[2].value, DesignatorValue::TargetPortGroup(0x0102));
    assert_eq!(d[2].protocol(), None, "PIV clear");
    assert_eq!(d[2].association_name(), "target port");
    assert_eq!(page.target_port_group(), Some(0x0102));
    assert_eq!(d[3].value.to_string(), "eui.0102030405060708");
    assert_eq!(d[4].value.to_string(), "0xabcd");
    assert_eq!(d[5].value, DesignatorValue::Text("abc".into()));
    assert_eq!(d[6].value, DesignatorValue::Binary(vec![0, 7]));
    // Only the EUI-64 and the two vendor specific ones name the LU; EUI-64 wins.
    assert_eq!(page.logical_unit_designators().count(), 4);
    assert_eq!(page.preferred_logical_unit_designator(), Some(&d[3]));
}

#[test]
fn device_identification_descriptor_overrunning_page() {
    // The page says 8 bytes follow; the descriptor inside claims 200.
    let data = unhex("00830008 010300c8 11223344");
    let page = DeviceIdentification::decode(&data).unwrap();
    assert!(page.descriptors.is_empty());
    assert!(page.truncated);
    // A dangling partial header.
    let data = unhex("00830002 0103");
    assert!(DeviceIdentification::decode(&data).unwrap().truncated);
}

#[test]
fn block_limits_from_tgt() {
    let mut data = unhex("00b0003c0080");
    data.resize(64, 0);
    let limits = BlockLimits::decode(&data).unwrap();
    assert_eq!(limits.max_compare_and_write_length_blocks, 128);
    assert_eq!(limits.max_transfer_length_blocks, 0);
    assert!(!limits.write_same_no_zero);
    assert!(!limits.truncated);
    assert_eq!(limits.full_length, 64);
}

#[test]
fn block_limits_every_field_by_hand() {
    let data = unhex(
        "00b0003c 01 10 0008 00000800 00000100 00000400 00400000 00000001 00000008
         80000003 0000000000010000 00000020 00000004 00000002 00000040 00000010",
    );
    assert_eq!(data.len(), 64);
    let l = BlockLimits::decode(&data).unwrap();
    assert!(l.write_same_no_zero);
    assert_eq!(l.max_compare_and_write_length_blocks, 0x10);
    assert_eq!(l.optimal_transfer_length_granularity_blocks, 8);
    assert_eq!(l.max_transfer_length_blocks, 0x800);
    assert_eq!(l.optimal_transfer_length_blocks, 0x100);
    assert_eq!(l.max_prefetch_length_blocks, 0x400);
    assert_eq!(l.max_unmap_lba_count, 0x0040_0000);
    assert_eq!(l.max_unmap_block_descriptor_count, 1);
    assert_eq!(l.optimal_unmap_granularity_blocks, 8);
    assert!(l.unmap_granularity_alignment_valid);
    assert_eq!(l.unmap_granularity_alignment_blocks, 3);
    assert_eq!(l.max_write_same_length_blocks, 0x1_0000);
    assert_eq!(l.max_atomic_transfer_length_blocks, 0x20);
    assert_eq!(l.atomic_alignment_blocks, 4);
    assert_eq!(l.atomic_transfer_length_granularity_blocks, 2);
    assert_eq!(l.max_atomic_transfer_length_with_boundary_blocks, 0x40);
    assert_eq!(l.max_atomic_boundary_size_blocks, 0x10);
}

#[test]
fn block_limits_old_short_page_and_truncation() {
    // An SBC-2 era page of 0x10 bytes: complete, later fields absent.
    let old = unhex("00b00010 0000 0001 00000080 00000040 00000000 00000000");
    let l = BlockLimits::decode(&old[..20]).unwrap();
    assert!(!l.truncated);
    assert_eq!(l.max_transfer_length_blocks, 0x80);
    assert_eq!(l.optimal_transfer_length_blocks, 0x40);
    // Bytes beyond the announced page do not leak in.
    assert_eq!(l.max_prefetch_length_blocks, 0);
    let l = BlockLimits::decode(&old).unwrap();
    assert_eq!(l.max_unmap_lba_count, 0);
    // A full-length page cut at 10 bytes: the cut field reads as its present bytes.
    let cut = BlockLimits::decode(&unhex("00b0003c 0000 0001 0000")).unwrap();
    assert!(cut.truncated);
    assert_eq!(cut.optimal_transfer_length_granularity_blocks, 1);
    assert_eq!(cut.max_transfer_length_blocks, 0);
}

#[test]
fn report_luns_from_tgt() {
    let luns =
        ReportLuns::decode(&unhex("000000100000000000000000000000000001000000000000")).unwrap();
    assert_eq!(luns.luns, vec![Lun::from_u64(0), Lun::from_u64(1)]);
    assert_eq!(luns.full_length, 24);
    assert!(!luns.truncated);

    // The same target asked with allocation length 16: one LUN fits.
    let cut = ReportLuns::decode(&unhex("00000010000000000000000000000000")).unwrap();
    assert_eq!(cut.luns, vec![Lun::from_u64(0)]);
    assert!(cut.truncated);
    assert_eq!(cut.full_length, 24);
}

#[test]
fn report_luns_bounds() {
    assert_eq!(
        ReportLuns::decode(&[0, 0, 0, 8]),
        Err(ScsiError::Truncated {
            what: "REPORT LUNS parameter data",
            needed: 8,
            got: 4
        })
    );
    // LUN LIST LENGTH 8 but two entries sent: only the announced one counts.
    let data = unhex("00000008 00000000 4005000000000000 0001000000000000");
    let luns = ReportLuns::decode(&data).unwrap();
    assert_eq!(luns.luns.len(), 1);
    assert_eq!(luns.luns[0].number(), Some(5));
    assert!(!luns.truncated);
    // A partial entry is dropped and reported.
    let data = unhex("0000000c 00000000 0001000000000000 0002");
    let luns = ReportLuns::decode(&data).unwrap();
    assert_eq!(luns.luns, vec![Lun::from_u64(1)]);
    assert!(luns.truncated);
    // A huge announced length allocates only for what is present.
    let data = unhex("ffffffff 00000000 0003000000000000");
    let luns = ReportLuns::decode(&data).unwrap();
    assert_eq!(luns.luns, vec![Lun::from_u64(3)]);
    assert!(luns.truncated);
    assert_eq!(luns.full_length, 0xffff_ffff + 8);
}

#[test]
fn read_capacity_10_from_tgt() {
    let cap = ReadCapacity10::decode(&unhex("0001ffff00000200")).unwrap();
    assert_eq!(cap.last_lba, 131_071);
    assert_eq!(cap.block_length_bytes, 512);
    assert_eq!(cap.block_count(), 131_072);
    assert_eq!(cap.capacity_bytes(), 64 << 20);
    assert!(!cap.needs_read_capacity_16());
    assert!(ReadCapacity10::decode(&unhex("ffffffff00000200"))
        .unwrap()
        .needs_read_capacity_16());
    assert_eq!(
        ReadCapacity10::decode(&unhex("0001ffff0000")),
        Err(ScsiError::Truncated {
            what: "READ CAPACITY(10) parameter data",
            needed: 8,
            got: 6
        })
    );
}

#[test]
fn read_capacity_16_from_tgt() {
    let cap = ReadCapacity16::decode(&unhex(
        "000000000001ffff000002000003000000000000000000000000000000000000",
    ))
    .unwrap();
    assert_eq!(cap.last_lba, 131_071);
    assert_eq!(cap.block_length_bytes, 512);
    assert_eq!(cap.logical_blocks_per_physical_block_exponent, 3);
    assert_eq!(cap.physical_block_length_bytes(), 4096);
    assert_eq!(cap.capacity_bytes(), 64 << 20);
    assert!(!cap.prot_en && !cap.lbpme && !cap.lbprz);
    assert_eq!(cap.protection_type(), None);
    assert!(!cap.truncated);
}

#[test]
fn read_capacity_16_every_field_by_hand() {
    // P_TYPE 1 + PROT_EN (type 2), P_I_EXPONENT 2, LB per PB exponent 3, LBPME, LBPRZ,
    // lowest aligned LBA 0x1234 & 0x3fff.
    let data = unhex("ffffffffffffffff 00001000 03 23 d2 34 0000000000000000 0000000000000000");
    let cap = ReadCapacity16::decode(&data).unwrap();
    assert_eq!(cap.last_lba, u64::MAX);
    assert_eq!(cap.block_length_bytes, 4096);
    assert_eq!(cap.p_type, 1);
    assert!(cap.prot_en);
    assert_eq!(cap.protection_type(), Some(2));
    assert_eq!(cap.p_i_exponent, 2);
    assert_eq!(cap.logical_blocks_per_physical_block_exponent, 3);
    assert!(cap.lbpme && cap.lbprz);
    assert_eq!(cap.lowest_aligned_lba, 0x1234);
    // No overflow at the extreme.
    assert_eq!(cap.block_count(), 1u128 << 64);
    assert_eq!(cap.capacity_bytes(), (1u128 << 64) * 4096);
}

#[test]
fn read_capacity_16_short() {
    let data = unhex("0000000000000fff00000200");
    let cap = ReadCapacity16::decode(&data).unwrap();
    assert_eq!(cap.last_lba, 0xfff);
    assert!(cap.truncated);
    assert_eq!(cap.logical_blocks_per_physical_block_exponent, 0);
    assert!(matches!(
        ReadCapacity16::decode(&data[..11]),
        Err(ScsiError::Truncated {
            needed: 12,
            got: 11,
            ..
        })
    ));
}

#[test]
fn names_cover_their_ranges() {
    for code in 0..=0xff_u8 {
        assert!(!device_type_name(code).is_empty());
        assert!(!vpd_page_name(code).is_empty());
        assert!(!protocol_name(code).is_empty());
        assert!(!designator_type_name(code).is_empty());
    }
    assert_eq!(device_type_name(0x1f), "unknown or no device type");
    assert_eq!(protocol_name(5), "iSCSI");
    assert_eq!(peripheral_qualifier_name(3), "not supported");
}

proptest! {
    #[test]
    fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = StandardInquiry::decode(&data);
        let _ = SupportedVpdPages::decode(&data);
        let _ = UnitSerialNumber::decode(&data);
        let _ = DeviceIdentification::decode(&data);
        let _ = BlockLimits::decode(&data);
        let _ = ReportLuns::decode(&data);
        let _ = ReadCapacity10::decode(&data);
        let _ = ReadCapacity16::decode(&data);
    }

    #[test]
    fn vpd_83_with_right_page_code_never_panics(
        body in proptest::collection::vec(any::<u8>(), 0..300),
        page_length in any::<u16>(),
    ) {
        let mut data = vec![0x00, 0x83];
        data.extend_from_slice(&page_length.to_be_bytes());
        data.extend_from_slice(&body);
        let page = DeviceIdentification::decode(&data).unwrap();
        // Every descriptor kept fits within the data and the page.
        let used: usize = page.descriptors.iter().map(|d| 4 + d.designator.len()).sum();
        prop_assert!(used <= body.len().min(usize::from(page_length)));
        for d in &page.descriptors {
            let _ = d.value.to_string();
        }
    }

    #[test]
    fn report_luns_count_is_bounded(
        list_length in any::<u32>(),
        entries in proptest::collection::vec(any::<[u8; 8]>(), 0..20),
    ) {
        let mut data = list_length.to_be_bytes().to_vec();
        data.extend_from_slice(&[0; 4]);
        for entry in &entries {
            data.extend_from_slice(entry);
        }
        let luns = ReportLuns::decode(&data).unwrap();
        let expected = (list_length as usize / 8).min(entries.len());
        prop_assert_eq!(luns.luns.len(), expected);
        prop_assert_eq!(luns.truncated, (list_length as usize) > entries.len() * 8);
    }
}
