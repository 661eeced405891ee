//! Sense data tests: tgt's captured responses (fixed format inside the iSCSI sense
//! segment) and hand-built fixed and descriptor format data from the SPC-4 4.5 tables.

use super::*;
use proptest::prelude::*;

// tgt, SCSI Response data segment after login: SenseLength 18, then fixed format sense
// data, UNIT ATTENTION 0x29/0x00.
const TGT_UNIT_ATTENTION: [u8; 20] = [
    0x00, 0x12, 0x70, 0x00, 0x06, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x29, 0x00,
    0x00, 0x00, 0x00, 0x00,
];

// tgt, INQUIRY for an unsupported VPD page: ILLEGAL REQUEST 0x24/0x00.
const TGT_INVALID_FIELD: [u8; 20] = [
    0x00, 0x12, 0x70, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x24, 0x00,
    0x00, 0x00, 0x00, 0x00,
];

#[test]
fn tgt_unit_attention() {
    let sense = Sense::decode_iscsi_sense_data(&TGT_UNIT_ATTENTION)
        .unwrap()
        .unwrap();
    assert_eq!(sense.format, SenseFormat::Fixed);
    assert!(!sense.deferred);
    assert_eq!(sense.key, key::UNIT_ATTENTION);
    assert_eq!((sense.asc, sense.ascq), (0x29, 0x00));
    assert!(sense.is_unit_attention());
    assert_eq!(sense.information, None);
    assert_eq!(sense.sense_key_specific, None);
    assert!(!sense.truncated);
    assert_eq!(
        sense.to_string(),
        "UNIT ATTENTION: POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (0x29/0x00)"
    );
}

#[test]
fn tgt_invalid_field_in_cdb() {
    let sense = Sense::decode_iscsi_sense_data(&TGT_INVALID_FIELD)
        .unwrap()
        .unwrap();
    assert_eq!(sense.key_name(), "ILLEGAL REQUEST");
    assert_eq!(sense.asc_ascq(), 0x2400);
    assert_eq!(
        sense.to_string(),
        "ILLEGAL REQUEST: INVALID FIELD IN CDB (0x24/0x00)"
    );
}

#[test]
fn iscsi_segment_edge_cases() {
    assert_eq!(Sense::decode_iscsi_sense_data(&[]), Ok(None));
    assert_eq!(Sense::decode_iscsi_sense_data(&[0, 0, 0xaa]), Ok(None));
    assert!(matches!(
        Sense::decode_iscsi_sense_data(&[0]),
        Err(ScsiError::Truncated {
            needed: 2,
            got: 1,
            ..
        })
    ));
    // SenseLength promises more than the segment holds.
    let mut short = TGT_INVALID_FIELD.to_vec();
    short[1] = 0x40;
    let sense = Sense::decode_iscsi_sense_data(&short).unwrap().unwrap();
    assert!(sense.truncated);
    assert_eq!(sense.asc, 0x24);
}

#[test]
fn fixed_format_every_field() {
    // VALID, deferred (0x71); FILEMARK, EOM, ILI, SDAT_OVFL, MEDIUM ERROR; INFORMATION
    // 0x01020304; additional length 10; command-specific 0x0a0b0c0d; 0x11/0x00; FRU 7;
    // SKSV with actual retry count 0x0102.
    let data = [
        0xf1, 0x00, 0xf3, 0x01, 0x02, 0x03, 0x04, 0x0a, 0x0a, 0x0b, 0x0c, 0x0d, 0x11, 0x00, 0x07,
        0x80, 0x01, 0x02,
    ];
    let sense = Sense::decode(&data).unwrap();
    assert_eq!(sense.format, SenseFormat::Fixed);
    assert!(sense.deferred);
    assert_eq!(sense.key, key::MEDIUM_ERROR);
    assert!(sense.filemark && sense.end_of_medium && sense.incorrect_length && sense.overflow);
    assert_eq!(sense.information, Some(0x0102_0304));
    assert_eq!(sense.command_specific, Some(0x0a0b_0c0d));
    assert_eq!((sense.asc, sense.ascq), (0x11, 0x00));
    assert_eq!(sense.field_replaceable_unit, Some(7));
    assert_eq!(
        sense.sense_key_specific,
        Some(SenseKeySpecific::ActualRetryCount(0x0102))
    );
    assert!(!sense.truncated);
    assert_eq!(
        sense.to_string(),
        "deferred: MEDIUM ERROR: UNRECOVERED READ ERROR (0x11/0x00)"
    );
}

#[test]
fn fixed_format_information_needs_valid() {
    let data = [
        0x70, 0x00, 0x05, 0x01, 0x02, 0x03, 0x04, 0x0a, 0, 0, 0, 0, 0x21, 0x00, 0, 0, 0, 0,
    ];
    let sense = Sense::decode(&data).unwrap();
    assert_eq!(sense.information, None);
    assert_eq!(
        sense.to_string(),
        "ILLEGAL REQUEST: LOGICAL BLOCK ADDRESS OUT OF RANGE (0x21/0x00)"
    );
}

#[test]
fn fixed_format_field_pointer() {
    // ILLEGAL REQUEST, 0x24/0x00, SKSV + C/D + BPV bit 3, byte 2 of the CDB.
    let data = [
        0x70, 0x00, 0x05, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0, 0x24, 0x00, 0x00, 0xcb, 0x00, 0x02,
    ];
    let sense = Sense::decode(&data).unwrap();
    assert_eq!(
        sense.sense_key_specific,
        Some(SenseKeySpecific::FieldPointer {
            in_cdb: true,
            bit: Some(3),
            byte: 2
        })
    );
    // Same without BPV, pointing into the parameter list.
    let mut data = data;
    data[15] = 0x80;
    assert_eq!(
        Sense::decode(&data).unwrap().sense_key_specific,
        Some(SenseKeySpecific::FieldPointer {
            in_cdb: false,
            bit: None,
            byte: 2
        })
    );
}

#[test]
fn fixed_format_short_data() {
    assert!(matches!(
        Sense::decode(&[0x70, 0x00]),
        Err(ScsiError::Truncated {
            needed: 3,
            got: 2,
            ..
        })
    ));
    // Key present, ASC missing: decoded as far as it goes, truncated.
    let sense = Sense::decode(&[0x70, 0x00, 0x02]).unwrap();
    assert_eq!(sense.key, key::NOT_READY);
    assert_eq!((sense.asc, sense.ascq), (0, 0));
    assert!(sense.truncated);
    // Additional length 10 but only 14 bytes: ASC/ASCQ present, rest zero.
    let data = [0x70, 0, 0x02, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0, 0x04, 0x01];
    let sense = Sense::decode(&data).unwrap();
    assert!(sense.truncated);
    assert_eq!(
        sense.to_string(),
        "NOT READY: LOGICAL UNIT IS IN PROCESS OF BECOMING READY (0x04/0x01)"
    );
    // Bytes past the additional length are ignored (here they would set ASC).
    let data = [0x70, 0, 0x02, 0, 0, 0, 0, 0x00, 0, 0, 0, 0, 0x3a, 0x00];
    let sense = Sense::decode(&data).unwrap();
    assert_eq!(sense.asc, 0);
    assert!(!sense.truncated);
}

#[test]
fn descriptor_format_with_information_and_field_pointer() {
    let data = [
        0x72, 0x05, 0x24, 0x00, 0x00, 0x00, 0x00, 0x14, // header, 20 bytes of descriptors
        0x00, 0x0a, 0x80, 0x00, 1, 2, 3, 4, 5, 6, 7, 8, // information, VALID
        0x02, 0x06, 0x00, 0x00, 0xc8, 0x00, 0x01, 0x00, // sense key specific, byte 1 bit 0
    ];
    let sense = Sense::decode(&data).unwrap();
    assert_eq!(sense.format, SenseFormat::Descriptor);
    assert!(!sense.deferred);
    assert_eq!(sense.key, key::ILLEGAL_REQUEST);
    assert_eq!(sense.information, Some(0x0102_0304_0506_0708));
    assert_eq!(
        sense.sense_key_specific,
        Some(SenseKeySpecific::FieldPointer {
            in_cdb: true,
            bit: Some(0),
            byte: 1
        })
    );
    assert!(sense.other_descriptors.is_empty());
    assert!(!sense.truncated);
    assert_eq!(
        sense.to_string(),
        "ILLEGAL REQUEST: INVALID FIELD IN CDB (0x24/0x00)"
    );
}

#[test]
fn descriptor_format_other_descriptors() {
    let data = [
        0x73, 0x03, 0x11, 0x00, 0x80, 0x00, 0x00, 0x22, // deferred, SDAT_OVFL, 34 bytes
        0x01, 0x0a, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0x12, 0x34, // command-specific
        0x03, 0x02, 0x00, 0x2a, // FRU 0x2a
        0x05, 0x02, 0x00, 0x20, // block commands, ILI
        0x04, 0x02, 0x00, 0xc0, // stream commands, FILEMARK + EOM
        0x0a, 0x02, 0x00, 0x00, // ATA status return: not decoded, listed
        0x00, 0x0a, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 9, // information, VALID clear
    ];
    // 8 + 0x22 = 42 bytes announced, 48 present: the announced end cuts the last
    // (information) descriptor in two.
    let sense = Sense::decode(&data).unwrap();
    assert!(sense.deferred && sense.overflow);
    assert_eq!(sense.command_specific, Some(0x1234));
    assert_eq!(sense.field_replaceable_unit, Some(0x2a));
    assert!(sense.incorrect_length && sense.filemark && sense.end_of_medium);
    assert_eq!(sense.other_descriptors, vec![0x0a]);
    // The trailing descriptor lies outside the announced length, so it is not seen.
    assert_eq!(sense.information, None);
    assert!(
        sense.truncated,
        "the last listed descriptor is cut by the announced length"
    );
}

#[test]
fn descriptor_format_short_data() {
    assert!(matches!(
        Sense::decode(&[0x72, 0x06, 0x29]),
        Err(ScsiError::Truncated {
            needed: 4,
            got: 3,
            ..
        })
    ));
    let sense = Sense::decode(&[0x72, 0x06, 0x29, 0x00]).unwrap();
    assert_eq!(
        sense.to_string(),
        "UNIT ATTENTION: POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (0x29/0x00)"
    );
    assert!(sense.truncated);
    // A descriptor longer than the data.
    let data = [
        0x72, 0x03, 0x11, 0x00, 0, 0, 0, 0x0c, 0x00, 0x0a, 0x80, 0x00,
    ];
    let sense = Sense::decode(&data).unwrap();
    assert!(sense.truncated);
    assert_eq!(sense.information, None);
}

#[test]
fn unknown_response_codes() {
    assert_eq!(
        Sense::decode(&[]),
        Err(ScsiError::Truncated {
            what: "sense data",
            needed: 1,
            got: 0
        })
    );
    assert_eq!(
        Sense::decode(&[0x7f, 0, 0, 0]),
        Err(ScsiError::UnknownSenseFormat(0x7f))
    );
    assert_eq!(
        Sense::decode(&[0x00; 18]),
        Err(ScsiError::UnknownSenseFormat(0x00))
    );
}

#[test]
fn all_sixteen_sense_keys_have_names() {
    let names: Vec<&str> = (0..16).map(sense_key_name).collect();
    assert_eq!(names[0], "NO SENSE");
    assert_eq!(names[5], "ILLEGAL REQUEST");
    assert_eq!(names[6], "UNIT ATTENTION");
    assert_eq!(names[0xe], "MISCOMPARE");
    assert_eq!(names[0xf], "COMPLETED");
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 16);
}

#[test]
fn asc_names_for_what_disks_report() {
    let cases: &[(u8, u8, &str)] = &[
        (0x00, 0x00, "NO ADDITIONAL SENSE INFORMATION"),
        (0x04, 0x00, "LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE"),
        (
            0x04,
            0x02,
            "LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED",
        ),
        (
            0x04,
            0x0b,
            "LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN STANDBY STATE",
        ),
        (0x0c, 0x00, "WRITE ERROR"),
        (0x11, 0x00, "UNRECOVERED READ ERROR"),
        (0x1d, 0x00, "MISCOMPARE DURING VERIFY OPERATION"),
        (0x20, 0x00, "INVALID COMMAND OPERATION CODE"),
        (0x21, 0x00, "LOGICAL BLOCK ADDRESS OUT OF RANGE"),
        (0x24, 0x00, "INVALID FIELD IN CDB"),
        (0x25, 0x00, "LOGICAL UNIT NOT SUPPORTED"),
        (0x26, 0x00, "INVALID FIELD IN PARAMETER LIST"),
        (0x27, 0x00, "WRITE PROTECTED"),
        (
            0x28,
            0x00,
            "NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED",
        ),
        (0x29, 0x01, "POWER ON OCCURRED"),
        (0x29, 0x07, "I_T NEXUS LOSS OCCURRED"),
        (0x2a, 0x01, "MODE PARAMETERS CHANGED"),
        (0x2a, 0x09, "CAPACITY DATA HAS CHANGED"),
        (0x3a, 0x00, "MEDIUM NOT PRESENT"),
        (0x3f, 0x0e, "REPORTED LUNS DATA HAS CHANGED"),
        (0x44, 0x00, "INTERNAL TARGET FAILURE"),
        (0x47, 0x00, "SCSI PARITY ERROR"),
        (0x55, 0x03, "INSUFFICIENT RESOURCES"),
    ];
    for &(asc, ascq, name) in cases {
        assert_eq!(
            asc_name(asc, ascq),
            name,
            "ASC 0x{asc:02x} ASCQ 0x{ascq:02x}"
        );
    }
    for ascq in 0..=7 {
        assert!(asc_lookup(0x29, ascq).is_some(), "0x29/0x{ascq:02x}");
    }
    assert_eq!(asc_name(0x99, 0x01), "ASC 0x99 ASCQ 0x01");
    assert_eq!(
        asc_name(0x4d, 0x12),
        "TAGGED OVERLAPPED COMMANDS (TASK TAG 0x12)"
    );
    assert_eq!(asc_name(0x40, 0x81), "DIAGNOSTIC FAILURE ON COMPONENT 0x81");
}

#[test]
fn unknown_pair_display_does_not_repeat_codes() {
    let sense = Sense::decode(&[0x72, 0x04, 0x99, 0x01]).unwrap();
    assert_eq!(sense.to_string(), "HARDWARE ERROR: ASC 0x99 ASCQ 0x01");
}

#[test]
fn status_names() {
    assert_eq!(status_name(status::GOOD), "GOOD");
    assert_eq!(status_name(0x02), "CHECK CONDITION");
    assert_eq!(status_name(0x04), "CONDITION MET");
    assert_eq!(status_name(0x08), "BUSY");
    assert_eq!(status_name(0x18), "RESERVATION CONFLICT");
    assert_eq!(status_name(0x28), "TASK SET FULL");
    assert_eq!(status_name(0x30), "ACA ACTIVE");
    assert_eq!(status_name(0x40), "TASK ABORTED");
    assert_eq!(status_name(0x42), "status 0x42");
}

proptest! {
    #[test]
    fn sense_decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(sense) = Sense::decode(&data) {
            let _ = sense.to_string();
            prop_assert!(sense.key <= 0x0f);
        }
        let _ = Sense::decode_iscsi_sense_data(&data);
    }

    #[test]
    fn descriptor_sense_never_panics(
        header in any::<[u8; 7]>(),
        body in proptest::collection::vec(any::<u8>(), 0..260),
    ) {
        let mut data = vec![0x72];
        data.extend_from_slice(&header);
        data.extend_from_slice(&body);
        let sense = Sense::decode(&data).unwrap();
        prop_assert!(sense.other_descriptors.len() <= 128);
    }

    #[test]
    fn asc_name_is_never_empty(asc in any::<u8>(), ascq in any::<u8>()) {
        prop_assert!(!asc_name(asc, ascq).is_empty());
    }
}

#[test]
fn unit_attention_is_check_condition_with_that_key() {
    let sense = &TGT_UNIT_ATTENTION[2..];
    assert!(is_unit_attention(status::CHECK_CONDITION, Some(sense)));
    assert_eq!(
        Sense::decode(sense).map(|s| (s.asc, s.ascq)),
        Ok(asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET)
    );
    assert!(!is_unit_attention(status::GOOD, Some(sense)));
    assert!(!is_unit_attention(status::CHECK_CONDITION, None));
    assert!(!is_unit_attention(
        status::CHECK_CONDITION,
        Some(&TGT_INVALID_FIELD[2..])
    ));
}
