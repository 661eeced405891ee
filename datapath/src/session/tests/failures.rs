//! Hostile or broken targets: every fault is fatal, named, and never reported as good data.

use super::*;

/// A logged-in session with one read of `len` bytes in flight.
fn with_read(len: u32) -> (Harness, TaskId) {
    let mut h = Harness::logged_in(config(), &TargetParams::default());
    let id = h.s.submit(h.now, read_request(len)).unwrap();
    h.expect_command();
    (h, id)
}

/// Checks the fault was fatal: the command failed naming it, and ConnectionFailed came.
#[track_caller]
fn assert_fatal(
    h: &mut Harness,
    result: Result<(), SessionError>,
    expected: SessionError,
    id: Option<TaskId>,
) {
    assert_eq!(result, Err(expected.clone()));
    assert_eq!(h.s.state(), SessionState::Failed);
    let events = h.events();
    assert_eq!(
        events.last(),
        Some(&Event::ConnectionFailed(expected.clone()))
    );
    if let Some(id) = id {
        let failure = events
            .iter()
            .find_map(|e| match e {
                Event::CommandComplete(i, Err(f)) if *i == id => Some(f.clone()),
                _ => None,
            })
            .expect("the command failed");
        assert_eq!(failure.error, CommandError::Protocol(expected.to_string()));
    }
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::CommandComplete(_, Ok(_)))),
        "no command may complete as good"
    );
    h.expect_none();
    // Later input is ignored.
    assert_eq!(h.deliver(h.nop_in(pdu::RESERVED_TAG, 1), &[]), Ok(()));
    h.expect_none();
}

#[test]
fn data_in_for_unknown_itt() {
    let (mut h, id) = with_read(512);
    let d = h.data_in(id.itt() + 100, 0, 0, None);
    let r = h.deliver(Header::DataIn(d), &[0; 10]);
    let err = SessionError::UnknownTaskTag {
        opcode: pdu::Opcode::DataIn,
        tag: id.itt() + 100,
    };
    assert_fatal(&mut h, r, err, None);
}

#[test]
fn data_in_offset_beyond_the_buffer() {
    let (mut h, id) = with_read(512);
    let d = h.data_in(id.itt(), 0, 4096, None);
    let r = h.deliver(Header::DataIn(d), &[0; 10]);
    let err = SessionError::DataOutOfRange {
        tag: id.itt(),
        offset: 4096,
        len: 10,
        expected: 512,
    };
    assert_fatal(&mut h, r, err, Some(id));
}

#[test]
fn data_in_offset_that_wraps() {
    let (mut h, id) = with_read(512);
    let d = h.data_in(id.itt(), 0, u32::MAX - 4, None);
    let r = h.deliver(Header::DataIn(d), &[0; 10]);
    let err = SessionError::DataOutOfRange {
        tag: id.itt(),
        offset: u32::MAX - 4,
        len: 10,
        expected: 512,
    };
    assert_fatal(&mut h, r, err, Some(id));
}

#[test]
fn data_in_larger_than_the_expected_length() {
    let (mut h, id) = with_read(512);
    let d = h.data_in(id.itt(), 0, 0, Some(0));
    let r = h.deliver(Header::DataIn(d), &[0; 600]);
    let err = SessionError::DataOutOfRange {
        tag: id.itt(),
        offset: 0,
        len: 600,
        expected: 512,
    };
    assert_fatal(&mut h, r, err, Some(id));
}

#[test]
fn data_in_out_of_order_when_in_order_was_negotiated() {
    let (mut h, id) = with_read(2048);
    let d = h.data_in(id.itt(), 0, 1024, None);
    let r = h.deliver(Header::DataIn(d), &[0; 1024]);
    let err = SessionError::DataOutOfOrder {
        tag: id.itt(),
        offset: 1024,
        expected_offset: 0,
    };
    assert_fatal(&mut h, r, err, Some(id));
}

#[test]
fn data_in_with_a_datasn_gap() {
    let (mut h, id) = with_read(2048);
    let d = h.data_in(id.itt(), 0, 0, None);
    h.deliver(Header::DataIn(d), &[0; 1024]).unwrap();
    let d = h.data_in(id.itt(), 2, 1024, Some(0));
    let r = h.deliver(Header::DataIn(d), &[0; 1024]);
    let err = SessionError::DataSnOutOfOrder {
        tag: id.itt(),
        expected: 1,
        got: 2,
    };
    assert_fatal(&mut h, r, err, Some(id));
}

#[test]
fn good_status_with_missing_data() {
    let (mut h, id) = with_read(2048);
    let d = h.data_in(id.itt(), 0, 0, Some(0));
    let r = h.deliver(Header::DataIn(d), &[0; 1024]);
    let err = SessionError::MissingData {
        tag: id.itt(),
        expected: 2048,
        received: 1024,
    };
    assert_fatal(&mut h, r, err, Some(id));
}

#[test]
fn good_scsi_response_with_no_data_at_all() {
    let (mut h, id) = with_read(2048);
    let resp = h.scsi_response(id.itt(), 0);
    let r = h.deliver(Header::ScsiResponse(resp), &[]);
    let err = SessionError::MissingData {
        tag: id.itt(),
        expected: 2048,
        received: 0,
    };
    assert_fatal(&mut h, r, err, Some(id));
}

#[test]
fn underflow_residual_that_does_not_match_the_data() {
    let (mut h, id) = with_read(2048);
    let mut d = h.data_in(id.itt(), 0, 0, Some(0));
    d.underflow = true;
    d.residual_count = 1000; // claims 1048 sent, 1024 arrived
    let r = h.deliver(Header::DataIn(d), &[0; 1024]);
    let err = SessionError::MissingData {
        tag: id.itt(),
        expected: 1048,
        received: 1024,
    };
    assert_fatal(&mut h, r, err, Some(id));
}

#[test]
fn contradictory_residual_flags() {
    let (mut h, id) = with_read(16);
    let mut resp = h.scsi_response(id.itt(), 2);
    resp.overflow = true;
    resp.underflow = true;
    let r = h.deliver(Header::ScsiResponse(resp), &[]);
    let err = SessionError::BadResidual {
        tag: id.itt(),
        reason: "both overflow and underflow set",
    };
    assert_fatal(&mut h, r, err, Some(id));
}

#[test]
fn sense_length_beyond_the_segment() {
    let (mut h, id) = with_read(16);
    let resp = h.scsi_response(id.itt(), 2);
    let r = h.deliver(Header::ScsiResponse(resp), &[0, 200, 0x70, 0]);
    let err = SessionError::SenseTruncated {
        tag: id.itt(),
        sense_len: 200,
        segment_len: 4,
    };
    assert_fatal(&mut h, r, err, Some(id));
}

#[test]
fn r2t_beyond_the_buffer() {
    let mut h = Harness::logged_in(config(), &TargetParams::default());
    let id = h.s.submit(h.now, write_request(vec![1; 100_000])).unwrap();
    h.expect_command();
    let r = h.deliver(h.r2t(id.itt(), 5, 0, 90_000, 20_000), &[]);
    let err = SessionError::R2tOutOfRange {
        tag: id.itt(),
        offset: 90_000,
        len: 20_000,
        expected: 100_000,
    };
    assert_fatal(&mut h, r, err, Some(id));
}

#[test]
fn r2t_for_a_read() {
    let (mut h, id) = with_read(512);
    let r = h.deliver(h.r2t(id.itt(), 5, 0, 0, 512), &[]);
    let err = SessionError::WrongDataDirection {
        opcode: pdu::Opcode::R2t,
        tag: id.itt(),
    };
    assert_fatal(&mut h, r, err, Some(id));
}

#[test]
fn reject_of_a_command_fails_that_command_only() {
    let (mut h, id) = with_read(512);
    // The rejected PDU's header: opcode 0x01 (SCSI Command), ITT at bytes 16..20.
    let mut rejected = vec![0u8; 48];
    rejected[0] = 0x01;
    rejected[16..20].copy_from_slice(&id.itt().to_be_bytes());
    let reject = Header::Reject(pdu::Reject {
        reason: 0x05,
        stat_sn: h.next_stat(),
        exp_cmd_sn: 2,
        max_cmd_sn: h.max_cmd_sn,
        data_sn_or_r2t_sn: 0,
    });
    h.deliver(reject, &rejected).unwrap();
    let failure = h.completion().1.unwrap_err();
    assert_eq!(failure.error, CommandError::Rejected { reason: 0x05 });
    assert!(failure.error.to_string().contains("command not supported"));
    assert_eq!(h.s.state(), SessionState::FullFeature);
    assert_eq!(h.s.stats().rejects, 1);
}

#[test]
fn reject_of_another_pdu_is_fatal() {
    let (mut h, id) = with_read(512);
    let mut rejected = vec![0u8; 48];
    rejected[0] = 0x05; // Data-Out
    let reject = Header::Reject(pdu::Reject {
        reason: 0x09,
        stat_sn: h.next_stat(),
        exp_cmd_sn: 2,
        max_cmd_sn: h.max_cmd_sn,
        data_sn_or_r2t_sn: 0,
    });
    let r = h.deliver(reject, &rejected);
    let err = SessionError::Reject {
        reason: 0x09,
        opcode: Some(pdu::Opcode::DataOut),
    };
    assert!(err.to_string().contains("invalid PDU field"));
    assert_eq!(r, Err(err.clone()));
    let events = h.events();
    assert!(matches!(&events[0], Event::CommandComplete(i, Err(f))
        if *i == id && f.error == CommandError::ConnectionLost(err.to_string())));
}

#[test]
fn unexpected_opcodes_are_fatal() {
    // An initiator opcode from the target.
    let (mut h, _) = with_read(512);
    let nop_out = Header::NopOut(pdu::NopOut {
        immediate: true,
        lun: [0; 8],
        initiator_task_tag: 1,
        target_transfer_tag: pdu::RESERVED_TAG,
        cmd_sn: 0,
        exp_stat_sn: 0,
    });
    let r = h.deliver(nop_out, &[]);
    assert_fatal(
        &mut h,
        r,
        SessionError::UnexpectedPdu {
            opcode: pdu::Opcode::NopOut,
            state: "full feature phase",
        },
        None,
    );

    // A Login Response after login, and a Data-In during login.
    let (mut h, _) = with_read(512);
    let resp = pdu::LoginResponse {
        transit: true,
        continue_: false,
        current_stage: LoginStage::LoginOperationalNegotiation,
        next_stage: LoginStage::FullFeaturePhase,
        version_max: 0,
        version_active: 0,
        isid: [0; 6],
        tsih: 1,
        initiator_task_tag: 1,
        stat_sn: 0,
        exp_cmd_sn: 0,
        max_cmd_sn: 0,
        status_class: 0,
        status_detail: 0,
    };
    let r = h.deliver(Header::LoginResponse(resp), &[]);
    assert!(matches!(
        r,
        Err(SessionError::UnexpectedPdu {
            opcode: pdu::Opcode::LoginResponse,
            ..
        })
    ));
    let mut h = Harness::new(config());
    let d = h.data_in(1, 0, 0, None);
    assert_eq!(
        h.deliver(Header::DataIn(d), &[]),
        Err(SessionError::UnexpectedPdu {
            opcode: pdu::Opcode::DataIn,
            state: "login"
        })
    );
}

#[test]
fn oversized_data_segment_is_fatal() {
    let (mut h, id) = with_read(100_000);
    let d = h.data_in(id.itt(), 0, 0, None);
    let r = h.deliver(Header::DataIn(d), &vec![0; 8193]);
    let err = SessionError::PduTooLong {
        opcode: pdu::Opcode::DataIn,
        len: 8193,
        max: 8192,
    };
    assert_fatal(&mut h, r, err, None);
}

#[test]
fn nop_in_answer_to_a_ping_we_never_sent() {
    let (mut h, _) = with_read(16);
    let r = h.deliver(h.nop_in(0x777, pdu::RESERVED_TAG), &[]);
    assert_fatal(
        &mut h,
        r,
        SessionError::UnknownTaskTag {
            opcode: pdu::Opcode::NopIn,
            tag: 0x777,
        },
        None,
    );
}

#[test]
fn scsi_response_twice() {
    let (mut h, id) = with_read(0);
    let resp = h.scsi_response(id.itt(), 0);
    h.deliver(Header::ScsiResponse(resp), &[]).unwrap();
    assert!(h.completion().1.is_ok());
    let resp = h.scsi_response(id.itt(), 0);
    let r = h.deliver(Header::ScsiResponse(resp), &[]);
    assert_fatal(
        &mut h,
        r,
        SessionError::UnknownTaskTag {
            opcode: pdu::Opcode::ScsiResponse,
            tag: id.itt(),
        },
        None,
    );
}

/// The one rule for sending a command again after its connection was lost: anything but a
/// write whose data did not come back (an adapter that kept it).
#[test]
fn a_write_without_its_data_is_never_sent_again() {
    use crate::session::DataDirection;
    let write = DataDirection::Write { len: 4096 };
    assert!(write.can_send_again(&[0u8; 4096]));
    assert!(write.can_send_again(&[0u8; 8192]));
    assert!(!write.can_send_again(&[0u8; 4095]));
    assert!(!write.can_send_again(&[]));
    assert!(DataDirection::Read { len: 4096 }.can_send_again(&[]));
    assert!(DataDirection::None.can_send_again(&[]));
}
