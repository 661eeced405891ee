//! Property tests for the PDU codec (RFC 7143 section 11): every opcode round-trips through
//! `encode_pdu`/`decode_pdu` with and without digests; digests catch any corrupted byte;
//! decoding arbitrary or truncated input never panics.

use datapath::pdu::*;
use datapath::scsi::{Cdb, DataDirection as CdbDirection};
use proptest::collection::vec;
use proptest::prelude::*;

fn arb_stage() -> impl Strategy<Value = LoginStage> {
    prop_oneof![
        Just(LoginStage::SecurityNegotiation),
        Just(LoginStage::LoginOperationalNegotiation),
        Just(LoginStage::FullFeaturePhase),
    ]
}

fn arb_attribute() -> impl Strategy<Value = TaskAttribute> {
    prop_oneof![
        Just(TaskAttribute::Untagged),
        Just(TaskAttribute::Simple),
        Just(TaskAttribute::Ordered),
        Just(TaskAttribute::HeadOfQueue),
        Just(TaskAttribute::Aca),
    ]
}

/// CDBs as the codec returns them: 16 bytes at least (shorter ones come back padded).
fn arb_cdb() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => vec(any::<u8>(), 16..=16),
        1 => vec(any::<u8>(), 17..=MAX_CDB_LEN),
    ]
}

prop_compose! {
    fn arb_nop_out()(immediate: bool, lun: LunField, sn: [u32; 4]) -> Header {
        Header::NopOut(NopOut {
            immediate, lun, initiator_task_tag: sn[0], target_transfer_tag: sn[1],
            cmd_sn: sn[2], exp_stat_sn: sn[3],
        })
    }
}

prop_compose! {
    fn arb_scsi_command()(
        flags: [bool; 4], attribute in arb_attribute(), lun: LunField, sn: [u32; 4],
        cdb in arb_cdb(), bidi_read_length: Option<u32>,
    ) -> Header {
        // The direction a parsed CDB carries is the one the R/W flags declare.
        let direction = match (flags[2], flags[3]) {
            (_, true) => CdbDirection::Write(sn[1]),
            (true, false) => CdbDirection::Read(sn[1]),
            (false, false) => CdbDirection::None,
        };
        let cdb = Cdb::from_bytes(&cdb, direction).expect("16 to 260 bytes");
        Header::ScsiCommand(ScsiCommand {
            immediate: flags[0], final_pdu: flags[1], read: flags[2], write: flags[3],
            attribute, lun, initiator_task_tag: sn[0], expected_data_transfer_length: sn[1],
            cmd_sn: sn[2], exp_stat_sn: sn[3], cdb, bidi_read_length,
        })
    }
}

prop_compose! {
    fn arb_task_mgmt_request()(immediate: bool, function in 0u8..=0x7f, lun: LunField, sn: [u32; 6])
        -> Header {
        Header::TaskMgmtRequest(TaskMgmtRequest {
            immediate, function, lun, initiator_task_tag: sn[0], referenced_task_tag: sn[1],
            cmd_sn: sn[2], exp_stat_sn: sn[3], ref_cmd_sn: sn[4], exp_data_sn: sn[5],
        })
    }
}

prop_compose! {
    fn arb_login_request()(
        flags: [bool; 2], current_stage in arb_stage(), next_stage in arb_stage(),
        versions: [u8; 2], isid: Isid, tsih: u16, cid: u16, sn: [u32; 3],
    ) -> Header {
        Header::LoginRequest(LoginRequest {
            transit: flags[0], continue_: flags[1], current_stage, next_stage,
            version_max: versions[0], version_min: versions[1], isid, tsih,
            initiator_task_tag: sn[0], cid, cmd_sn: sn[1], exp_stat_sn: sn[2],
        })
    }
}

prop_compose! {
    fn arb_text_request()(flags: [bool; 3], lun: LunField, sn: [u32; 4]) -> Header {
        Header::TextRequest(TextRequest {
            immediate: flags[0], final_pdu: flags[1], continue_: flags[2], lun,
            initiator_task_tag: sn[0], target_transfer_tag: sn[1], cmd_sn: sn[2],
            exp_stat_sn: sn[3],
        })
    }
}

prop_compose! {
    fn arb_data_out()(final_pdu: bool, lun: LunField, sn: [u32; 5]) -> Header {
        Header::DataOut(DataOut {
            final_pdu, lun, initiator_task_tag: sn[0], target_transfer_tag: sn[1],
            exp_stat_sn: sn[2], data_sn: sn[3], buffer_offset: sn[4],
        })
    }
}

prop_compose! {
    fn arb_logout_request()(immediate: bool, reason_code in 0u8..=0x7f, cid: u16, sn: [u32; 3])
        -> Header {
        Header::LogoutRequest(LogoutRequest {
            immediate, reason_code, initiator_task_tag: sn[0], cid, cmd_sn: sn[1],
            exp_stat_sn: sn[2],
        })
    }
}

prop_compose! {
    fn arb_snack_request()(snack_type in 0u8..=0x0f, lun: LunField, sn: [u32; 5]) -> Header {
        Header::SnackRequest(SnackRequest {
            snack_type, lun, initiator_task_tag: sn[0], target_transfer_tag: sn[1],
            exp_stat_sn: sn[2], beg_run: sn[3], run_length: sn[4],
        })
    }
}

prop_compose! {
    fn arb_nop_in()(lun: LunField, sn: [u32; 5]) -> Header {
        Header::NopIn(NopIn {
            lun, initiator_task_tag: sn[0], target_transfer_tag: sn[1], stat_sn: sn[2],
            exp_cmd_sn: sn[3], max_cmd_sn: sn[4],
        })
    }
}

prop_compose! {
    fn arb_scsi_response()(flags: [bool; 4], response: u8, status: u8, sn: [u32; 8]) -> Header {
        Header::ScsiResponse(ScsiResponse {
            bidi_read_overflow: flags[0], bidi_read_underflow: flags[1], overflow: flags[2],
            underflow: flags[3], response, status, initiator_task_tag: sn[0],
            snack_tag: sn[1], stat_sn: sn[2], exp_cmd_sn: sn[3], max_cmd_sn: sn[4],
            exp_data_sn: sn[5], bidi_read_residual_count: sn[6], residual_count: sn[7],
        })
    }
}

prop_compose! {
    fn arb_task_mgmt_response()(response: u8, sn: [u32; 4]) -> Header {
        Header::TaskMgmtResponse(TaskMgmtResponse {
            response, initiator_task_tag: sn[0], stat_sn: sn[1], exp_cmd_sn: sn[2],
            max_cmd_sn: sn[3],
        })
    }
}

prop_compose! {
    fn arb_login_response()(
        flags: [bool; 2], current_stage in arb_stage(), next_stage in arb_stage(),
        bytes: [u8; 4], isid: Isid, tsih: u16, sn: [u32; 4],
    ) -> Header {
        Header::LoginResponse(LoginResponse {
            transit: flags[0], continue_: flags[1], current_stage, next_stage,
            version_max: bytes[0], version_active: bytes[1], isid, tsih,
            initiator_task_tag: sn[0], stat_sn: sn[1], exp_cmd_sn: sn[2], max_cmd_sn: sn[3],
            status_class: bytes[2], status_detail: bytes[3],
        })
    }
}

prop_compose! {
    fn arb_text_response()(flags: [bool; 2], lun: LunField, sn: [u32; 5]) -> Header {
        Header::TextResponse(TextResponse {
            final_pdu: flags[0], continue_: flags[1], lun, initiator_task_tag: sn[0],
            target_transfer_tag: sn[1], stat_sn: sn[2], exp_cmd_sn: sn[3], max_cmd_sn: sn[4],
        })
    }
}

prop_compose! {
    fn arb_data_in()(flags: [bool; 4], status: Option<u8>, lun: LunField, sn: [u32; 8]) -> Header {
        Header::DataIn(DataIn {
            final_pdu: flags[0], acknowledge: flags[1], overflow: flags[2], underflow: flags[3],
            status, lun, initiator_task_tag: sn[0], target_transfer_tag: sn[1],
            stat_sn: sn[2], exp_cmd_sn: sn[3], max_cmd_sn: sn[4], data_sn: sn[5],
            buffer_offset: sn[6], residual_count: sn[7],
        })
    }
}

prop_compose! {
    fn arb_logout_response()(response: u8, sn: [u32; 4], times: [u16; 2]) -> Header {
        Header::LogoutResponse(LogoutResponse {
            response, initiator_task_tag: sn[0], stat_sn: sn[1], exp_cmd_sn: sn[2],
            max_cmd_sn: sn[3], time2wait: times[0], time2retain: times[1],
        })
    }
}

prop_compose! {
    fn arb_r2t()(lun: LunField, sn: [u32; 8]) -> Header {
        Header::R2t(R2t {
            lun, initiator_task_tag: sn[0], target_transfer_tag: sn[1], stat_sn: sn[2],
            exp_cmd_sn: sn[3], max_cmd_sn: sn[4], r2t_sn: sn[5], buffer_offset: sn[6],
            desired_data_transfer_length: sn[7],
        })
    }
}

prop_compose! {
    fn arb_async_message()(lun: LunField, sn: [u32; 3], codes: [u8; 2], params: [u16; 3])
        -> Header {
        Header::AsyncMessage(AsyncMessage {
            lun, stat_sn: sn[0], exp_cmd_sn: sn[1], max_cmd_sn: sn[2], async_event: codes[0],
            async_vcode: codes[1], parameter1: params[0], parameter2: params[1],
            parameter3: params[2],
        })
    }
}

prop_compose! {
    fn arb_reject()(reason: u8, sn: [u32; 4]) -> Header {
        Header::Reject(Reject {
            reason, stat_sn: sn[0], exp_cmd_sn: sn[1], max_cmd_sn: sn[2],
            data_sn_or_r2t_sn: sn[3],
        })
    }
}

/// Every opcode, in spec order.
fn arb_header() -> impl Strategy<Value = Header> {
    prop_oneof![
        arb_nop_out(),
        arb_scsi_command(),
        arb_task_mgmt_request(),
        arb_login_request(),
        arb_text_request(),
        arb_data_out(),
        arb_logout_request(),
        arb_snack_request(),
        arb_nop_in(),
        arb_scsi_response(),
        arb_task_mgmt_response(),
        arb_login_response(),
        arb_text_response(),
        arb_data_in(),
        arb_logout_response(),
        arb_r2t(),
        arb_async_message(),
        arb_reject(),
    ]
}

fn arb_digests() -> impl Strategy<Value = Digests> {
    (any::<bool>(), any::<bool>()).prop_map(|(header, data)| Digests { header, data })
}

const BOTH: Digests = Digests {
    header: true,
    data: true,
};

fn encode(header: &Header, data: &[u8], digests: Digests) -> Vec<u8> {
    let mut out = Vec::new();
    encode_pdu(header, data, digests, &mut out).expect("a generated header encodes");
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_opcode_round_trips(
        header in arb_header(),
        data in vec(any::<u8>(), 0..300),
        digests in arb_digests(),
        trailing in vec(any::<u8>(), 0..8),
    ) {
        let mut wire = encode(&header, &data, digests);
        let len = wire.len();
        prop_assert_eq!(len % 4, 0);
        wire.extend_from_slice(&trailing);
        let decoded = decode_pdu(&wire, digests, &Limits::default())?.expect("whole PDU");
        prop_assert_eq!(&decoded.header, &header);
        prop_assert_eq!(&wire[decoded.data.clone()], &data[..]);
        prop_assert_eq!(decoded.consumed, len);

        // The two levels agree: emit/parse alone give the same header.
        let header_len = BHS_LEN + header.ahs_len();
        let mut buf = vec![0u8; header_len];
        prop_assert_eq!(header.emit(data.len() as u32, &mut buf)?, header_len);
        prop_assert_eq!(&buf[..], &wire[..header_len]);
        prop_assert_eq!(Header::parse(&buf[..BHS_LEN], &buf[BHS_LEN..])?, header);
    }

    #[test]
    fn any_corrupted_byte_of_a_digested_pdu_is_caught(
        header in arb_header(),
        data in vec(any::<u8>(), 0..200),
        index in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let mut wire = encode(&header, &data, BOTH);
        let i = index.index(wire.len());
        wire[i] ^= xor;
        match decode_pdu(&wire, BOTH, &Limits::default()) {
            Err(_) => {}
            // Only a larger TotalAHSLength can move the header digest past the bytes present.
            Ok(None) if i == 4 => {}
            other => prop_assert!(false, "byte {} ^ {:#x} went unnoticed: {:?}", i, xor, other),
        }
    }

    #[test]
    fn every_prefix_of_a_pdu_asks_for_more(
        header in arb_header(),
        data in vec(any::<u8>(), 0..100),
        digests in arb_digests(),
    ) {
        let wire = encode(&header, &data, digests);
        for cut in 0..wire.len() {
            prop_assert_eq!(decode_pdu(&wire[..cut], digests, &Limits::default()), Ok(None));
        }
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(
        bytes in vec(any::<u8>(), 0..400),
        digests in arb_digests(),
    ) {
        let limits = Limits { max_data_segment_length: 512, max_ahs_length: 1024 };
        for cut in [0, bytes.len() / 3, bytes.len() / 2, bytes.len()] {
            let _ = decode_pdu(&bytes[..cut], digests, &limits);
        }
        check_reencodes(&bytes, digests, &limits)?;
    }

    /// Random BHS bytes behind a defined opcode reach every parser; whatever parses must
    /// emit and parse back to the same header.
    #[test]
    fn parse_emit_is_stable_on_random_headers(
        opcode in prop::sample::select(vec![
            0x00u8, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x10,
            0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x31, 0x32, 0x3f,
        ]),
        mut bhs in vec(any::<u8>(), BHS_LEN..=BHS_LEN),
        top_bits in 0u8..4,
        ahs in vec(any::<u8>(), 0..64),
    ) {
        bhs[0] = opcode | top_bits << 6;
        bhs[4] = (ahs.len() / 4) as u8;
        let ahs = &ahs[..ahs.len() / 4 * 4];
        if let Ok(header) = Header::parse(&bhs, ahs) {
            let mut buf = vec![0u8; BHS_LEN + header.ahs_len()];
            header.emit(0, &mut buf)?;
            prop_assert_eq!(Header::parse(&buf[..BHS_LEN], &buf[BHS_LEN..])?, header);
        }
    }

    #[test]
    fn corrupted_valid_pdus_decode_or_fail_cleanly(
        header in arb_header(),
        data in vec(any::<u8>(), 0..64),
        digests in arb_digests(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut wire = encode(&header, &data, digests);
        for (index, value) in edits {
            let i = index.index(wire.len());
            wire[i] = value;
        }
        check_reencodes(&wire, digests, &Limits::default())?;
    }

    #[test]
    fn emit_into_a_short_buffer_writes_nothing(header in arb_header(), short in 0usize..48) {
        let needed = BHS_LEN + header.ahs_len();
        let len = short.min(needed - 1);
        let mut buf = vec![0xa5u8; len];
        prop_assert_eq!(
            header.emit(0, &mut buf),
            Err(PduError::BufferTooSmall { needed, got: len })
        );
        prop_assert!(buf.iter().all(|&b| b == 0xa5));
    }
}

/// If `bytes` decode, the PDU re-encodes and decodes to the same header and data.
fn check_reencodes(bytes: &[u8], digests: Digests, limits: &Limits) -> Result<(), TestCaseError> {
    if let Ok(Some(decoded)) = decode_pdu(bytes, digests, limits) {
        let data = &bytes[decoded.data.clone()];
        let again = encode(&decoded.header, data, digests);
        let redecoded = decode_pdu(&again, digests, limits)?.expect("whole PDU");
        prop_assert_eq!(&redecoded.header, &decoded.header);
        prop_assert_eq!(&again[redecoded.data], data);
    }
    Ok(())
}

#[test]
fn limits_reject_before_reading_the_data() {
    // A BHS announcing 16 MiB of data fails on its first 48 bytes.
    let mut bhs = [0u8; 48];
    bhs[0] = 0x25;
    bhs[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    assert_eq!(
        decode_pdu(&bhs, Digests::default(), &Limits::login()),
        Err(PduError::DataSegmentTooLong {
            len: 0xff_ffff,
            max: 8192
        })
    );
}
