//! Scripted PDUs: what a broken or hostile initiator sends.

use super::*;
use datapath::pdu::{LoginStage, RESERVED_TAG};
use datapath::text::encode_pairs;

struct Script {
    target: TargetSession,
    now: Instant,
    cmd_sn: u32,
}

fn text(list: &[(&str, &str)]) -> Vec<u8> {
    let pairs: Vec<(String, String)> = list
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut out = Vec::new();
    encode_pairs(&pairs, &mut out);
    out
}

fn login_request(transit: bool, csg: LoginStage, nsg: LoginStage) -> pdu::LoginRequest {
    pdu::LoginRequest {
        transit,
        continue_: false,
        current_stage: csg,
        next_stage: nsg,
        version_max: 0,
        version_min: 0,
        isid: [0x80, 0, 0, 0, 0, 9],
        tsih: 0,
        initiator_task_tag: 1,
        cid: 0,
        cmd_sn: 10,
        exp_stat_sn: 0,
    }
}

impl Script {
    fn new() -> Script {
        Script {
            target: TargetSession::new(
                Arc::new(target_config(vec![node(TARGET)])),
                conn_params(),
                Instant::now(),
            ),
            now: Instant::now(),
            cmd_sn: 10,
        }
    }

    /// Logs in straight from the security stage to full feature phase.
    fn logged_in() -> Script {
        let mut s = Script::new();
        let data = text(&[
            ("InitiatorName", INITIATOR),
            ("SessionType", "Normal"),
            ("TargetName", TARGET),
            ("AuthMethod", "None"),
        ]);
        let req = login_request(
            true,
            LoginStage::SecurityNegotiation,
            LoginStage::FullFeaturePhase,
        );
        s.send(Header::LoginRequest(req), &data).unwrap();
        let sent = s.sent();
        let Header::LoginResponse(resp) = &sent[0].0 else {
            panic!("{sent:?}")
        };
        assert_eq!(resp.status_class, 0);
        assert!(resp.transit);
        assert_eq!(resp.tsih, 7);
        assert_eq!(resp.exp_cmd_sn, 10);
        assert_eq!(resp.max_cmd_sn, 17);
        assert_eq!(s.target.state(), TargetState::FullFeature);
        s
    }

    fn send(&mut self, header: Header, data: &[u8]) -> Result<(), TargetError> {
        self.target.handle_pdu(self.now, header, data)
    }

    fn sent(&mut self) -> Vec<(Header, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(cmd) = self.target.poll_command() {
            let result = RamLu::new().execute(&cmd);
            self.target.complete_command(cmd.id, result);
        }
        while let Some(t) = self.target.poll_transmit() {
            out.push((t.header.clone(), t.data().to_vec()));
        }
        out
    }

    fn command(&mut self, itt: u32, cmd_sn: u32, cdb: Vec<u8>) -> Header {
        // As the codec parses it: zero-padded to 16 bytes.
        let full = datapath::scsi::Cdb::from_bytes(&cdb, datapath::scsi::DataDirection::None)
            .expect("1 to 260 bytes")
            .into_wire_form();
        Header::ScsiCommand(pdu::ScsiCommand {
            immediate: false,
            final_pdu: true,
            read: false,
            write: false,
            attribute: pdu::TaskAttribute::Simple,
            lun: lun_field(0),
            initiator_task_tag: itt,
            expected_data_transfer_length: 0,
            cmd_sn,
            exp_stat_sn: 0,
            cdb: full,
            bidi_read_length: None,
        })
    }

    fn next_cmd_sn(&mut self) -> u32 {
        let sn = self.cmd_sn;
        self.cmd_sn += 1;
        sn
    }
}

#[test]
fn commands_outside_the_window_are_ignored_and_logged() {
    let mut s = Script::logged_in();
    // MaxCmdSN is 17: CmdSN 30 is outside, CmdSN 9 is an old duplicate.
    let too_high = s.command(1, 30, vec![0]);
    s.send(too_high, &[]).unwrap();
    let too_low = s.command(2, 9, vec![0]);
    s.send(too_low, &[]).unwrap();
    assert!(s.sent().is_empty());
    assert_eq!(s.target.stats().dropped_out_of_window, 2);
    let sn = s.next_cmd_sn();
    let good = s.command(3, sn, vec![0]);
    s.send(good, &[]).unwrap();
    let sent = s.sent();
    let Header::ScsiResponse(resp) = &sent[0].0 else {
        panic!("{sent:?}")
    };
    assert_eq!(resp.initiator_task_tag, 3);
    assert_eq!(resp.exp_cmd_sn, 11);
    assert_eq!(resp.max_cmd_sn, 18);
}

#[test]
fn endless_window_violations_close_the_connection() {
    let mut s = Script::logged_in();
    let mut result = Ok(());
    for i in 0..MAX_WINDOW_VIOLATIONS {
        let cmd = s.command(i, 1000 + i, vec![0]);
        result = s.send(cmd, &[]);
    }
    assert!(matches!(result, Err(TargetError::WindowViolations { .. })));
}

#[test]
fn snack_at_erl0_is_rejected_and_the_connection_stays() {
    let mut s = Script::logged_in();
    let snack = Header::SnackRequest(pdu::SnackRequest {
        snack_type: 1,
        lun: [0; 8],
        initiator_task_tag: 5,
        target_transfer_tag: RESERVED_TAG,
        exp_stat_sn: 0,
        beg_run: 0,
        run_length: 0,
    });
    s.send(snack, &[]).unwrap();
    let sent = s.sent();
    let Header::Reject(reject) = &sent[0].0 else {
        panic!("{sent:?}")
    };
    assert_eq!(reject.reason, reject_reason::PROTOCOL_ERROR);
    assert_eq!(sent[0].1.len(), 48);
    assert_eq!(sent[0].1[0] & 0x3f, 0x10);
    assert_eq!(s.target.state(), TargetState::FullFeature);
}

#[test]
fn unknown_opcode_is_rejected_then_closed() {
    let mut s = Script::logged_in();
    let mut bhs = [0u8; 48];
    bhs[0] = 0x1c;
    let error = s
        .target
        .handle_malformed_pdu(s.now, &bhs, PduError::UnknownOpcode(0x1c));
    assert!(matches!(error, TargetError::Malformed { opcode: 0x1c, .. }));
    let sent = s.sent();
    let Header::Reject(reject) = &sent[0].0 else {
        panic!("{sent:?}")
    };
    assert_eq!(reject.reason, reject_reason::COMMAND_NOT_SUPPORTED);
    assert_eq!(s.target.state(), TargetState::Closed);
}

#[test]
fn garbage_login_text_is_an_initiator_error() {
    let mut s = Script::new();
    let req = login_request(
        true,
        LoginStage::SecurityNegotiation,
        LoginStage::FullFeaturePhase,
    );
    let result = s.send(Header::LoginRequest(req), b"no equals sign here\0");
    assert!(matches!(
        result,
        Err(TargetError::LoginRefused {
            class: 2,
            detail: 0,
            ..
        })
    ));
    let sent = s.sent();
    let Header::LoginResponse(resp) = &sent[0].0 else {
        panic!("{sent:?}")
    };
    assert_eq!((resp.status_class, resp.status_detail), (2, 0));
}

#[test]
fn missing_target_name_is_missing_parameter() {
    let mut s = Script::new();
    let req = login_request(
        true,
        LoginStage::SecurityNegotiation,
        LoginStage::FullFeaturePhase,
    );
    let data = text(&[("InitiatorName", INITIATOR), ("AuthMethod", "None")]);
    assert!(matches!(
        s.send(Header::LoginRequest(req), &data),
        Err(TargetError::LoginRefused {
            class: 2,
            detail: 7,
            ..
        })
    ));
}

#[test]
fn scsi_command_before_login_closes() {
    let mut s = Script::new();
    let cmd = s.command(1, 10, vec![0]);
    assert!(matches!(
        s.send(cmd, &[]),
        Err(TargetError::UnexpectedPdu { .. })
    ));
}

#[test]
fn data_out_out_of_place_closes_and_stray_data_out_is_dropped() {
    let mut s = Script::logged_in();
    let stray = Header::DataOut(pdu::DataOut {
        final_pdu: true,
        lun: [0; 8],
        initiator_task_tag: 77,
        target_transfer_tag: RESERVED_TAG,
        exp_stat_sn: 0,
        data_sn: 0,
        buffer_offset: 0,
    });
    s.send(stray, &[0; 512]).unwrap();
    assert!(s.sent().is_empty());
    // A write expecting solicited data only (InitialR2T=Yes by default negotiation).
    let sn = s.next_cmd_sn();
    let Header::ScsiCommand(mut write) = s.command(8, sn, rw10(0x2a, 0, 2)) else {
        unreachable!()
    };
    write.write = true;
    write.expected_data_transfer_length = 1024;
    s.send(Header::ScsiCommand(write), &[]).unwrap();
    let sent = s.sent();
    let Header::R2t(r2t) = &sent[0].0 else {
        panic!("{sent:?}")
    };
    assert_eq!(r2t.desired_data_transfer_length, 1024);
    let wrong_offset = Header::DataOut(pdu::DataOut {
        final_pdu: true,
        lun: [0; 8],
        initiator_task_tag: 8,
        target_transfer_tag: r2t.target_transfer_tag,
        exp_stat_sn: 0,
        data_sn: 0,
        buffer_offset: 512,
    });
    assert!(matches!(
        s.send(wrong_offset, &[0; 512]),
        Err(TargetError::DataOutOutOfPlace {
            burst: Burst::Solicited { .. },
            offset: 512,
            len: 512,
            expected: 0,
            ..
        })
    ));
}

#[test]
fn task_management_answers() {
    let mut s = Script::logged_in();
    let tmf = |function, itt, referenced, lun: u64, cmd_sn| {
        Header::TaskMgmtRequest(pdu::TaskMgmtRequest {
            immediate: true,
            function,
            lun: lun_field(lun),
            initiator_task_tag: itt,
            referenced_task_tag: referenced,
            cmd_sn,
            exp_stat_sn: 0,
            ref_cmd_sn: cmd_sn + 5,
            exp_data_sn: 0,
        })
    };
    let responses = |s: &mut Script| -> Vec<u8> {
        s.sent()
            .into_iter()
            .filter_map(|(h, _)| match h {
                Header::TaskMgmtResponse(r) => Some(r.response),
                _ => None,
            })
            .collect()
    };
    // ABORT TASK of a task never seen.
    s.send(tmf(1, 50, 999, 0, 10), &[]).unwrap();
    assert_eq!(responses(&mut s), [1]);
    // LOGICAL UNIT RESET of a LUN that does not exist, then of LUN 0.
    s.send(tmf(5, 51, RESERVED_TAG, 3, 10), &[]).unwrap();
    s.send(tmf(5, 52, RESERVED_TAG, 0, 10), &[]).unwrap();
    assert_eq!(responses(&mut s), [2, 0]);
    // ABORT TASK of a write waiting for data: complete, and the task is gone.
    let sn = s.next_cmd_sn();
    let Header::ScsiCommand(mut write) = s.command(9, sn, rw10(0x2a, 0, 2)) else {
        unreachable!()
    };
    write.write = true;
    write.expected_data_transfer_length = 1024;
    s.send(Header::ScsiCommand(write), &[]).unwrap();
    s.sent();
    assert_eq!(s.target.outstanding_commands(), 1);
    s.send(tmf(1, 53, 9, 0, 11), &[]).unwrap();
    assert_eq!(responses(&mut s), [0]);
    assert_eq!(s.target.outstanding_commands(), 0);
    // The LU reset was reported to the driver (for reservations and attentions).
    let events: Vec<TargetEvent> = std::iter::from_fn(|| s.target.poll_event()).collect();
    assert!(
        events.contains(&TargetEvent::LogicalUnitReset { lun: 0 }),
        "{events:?}"
    );
    assert!(
        !events.contains(&TargetEvent::LogicalUnitReset { lun: 3 }),
        "{events:?}"
    );
    // TARGET WARM RESET, then TARGET COLD RESET, which closes the session once answered.
    s.send(tmf(6, 54, RESERVED_TAG, 0, 11), &[]).unwrap();
    assert_eq!(
        s.target.poll_event(),
        Some(TargetEvent::TargetReset { cold: false })
    );
    assert_eq!(s.target.state(), TargetState::FullFeature);
    s.send(tmf(7, 55, RESERVED_TAG, 0, 11), &[]).unwrap();
    assert_eq!(
        s.target.poll_event(),
        Some(TargetEvent::TargetReset { cold: true })
    );
    assert_eq!(responses(&mut s), [0, 0]);
    assert_eq!(s.target.state(), TargetState::Closed);
}

#[test]
fn abort_of_an_answered_command_is_task_does_not_exist() {
    // RFC 7143 section 11.5.1 c): a command below ExpCmdSN already ran and was answered;
    // "Function complete" would tell the initiator it was aborted although its response
    // came (libiscsi's iSCSITMF.AbortTaskSimpleAsync checks exactly this).
    let mut s = Script::logged_in();
    let sn = s.next_cmd_sn();
    let Header::ScsiCommand(mut read) = s.command(9, sn, rw10(0x28, 0, 1)) else {
        unreachable!()
    };
    read.read = true;
    read.expected_data_transfer_length = 512;
    s.send(Header::ScsiCommand(read), &[]).unwrap();
    let sent = s.sent();
    assert!(sent.iter().any(
        |(h, _)| matches!(h, Header::DataIn(d) if d.status.is_some())
            || matches!(h, Header::ScsiResponse(_))
    ));
    assert_eq!(s.target.outstanding_commands(), 0);
    let abort = Header::TaskMgmtRequest(pdu::TaskMgmtRequest {
        immediate: true,
        function: 1,
        lun: lun_field(0),
        initiator_task_tag: 60,
        referenced_task_tag: 9,
        cmd_sn: sn + 1,
        exp_stat_sn: 0,
        ref_cmd_sn: sn,
        exp_data_sn: 0,
    });
    s.send(abort, &[]).unwrap();
    let responses: Vec<u8> = s
        .sent()
        .into_iter()
        .filter_map(|(h, _)| match h {
            Header::TaskMgmtResponse(r) => Some(r.response),
            _ => None,
        })
        .collect();
    assert_eq!(responses, [1], "TASK DOES NOT EXIST");
}

#[test]
fn unanswered_ping_fails_the_connection() {
    let mut s = Script::logged_in();
    s.now += Duration::from_secs(6);
    s.target.handle_timeout(s.now).unwrap();
    let sent = s.sent();
    assert!(matches!(&sent[0].0, Header::NopIn(n) if n.target_transfer_tag != RESERVED_TAG));
    s.now += Duration::from_secs(6);
    assert!(matches!(
        s.target.handle_timeout(s.now),
        Err(TargetError::PingTimeout { .. })
    ));
}

#[test]
fn nop_out_is_echoed() {
    let mut s = Script::logged_in();
    let nop = Header::NopOut(pdu::NopOut {
        immediate: true,
        lun: [0; 8],
        initiator_task_tag: 3,
        target_transfer_tag: RESERVED_TAG,
        cmd_sn: 10,
        exp_stat_sn: 0,
    });
    s.send(nop, b"ping").unwrap();
    let sent = s.sent();
    assert!(matches!(&sent[0].0, Header::NopIn(n) if n.initiator_task_tag == 3));
    assert_eq!(sent[0].1, b"ping");
}

#[test]
fn send_targets_in_a_normal_session_names_only_its_target() {
    let mut s = Script::logged_in();
    let request = Header::TextRequest(pdu::TextRequest {
        immediate: true,
        final_pdu: true,
        continue_: false,
        lun: [0; 8],
        initiator_task_tag: 4,
        target_transfer_tag: RESERVED_TAG,
        cmd_sn: 10,
        exp_stat_sn: 0,
    });
    s.send(request, &text(&[("SendTargets", "All")])).unwrap();
    let sent = s.sent();
    let body = String::from_utf8(sent[0].1.clone()).unwrap();
    assert!(
        body.starts_with(&format!("TargetName={TARGET}\0")),
        "{body}"
    );
    assert!(body.contains("TargetAddress=[::1]:3261,2\0"));
}

#[test]
fn data_out_with_a_wrong_data_sn_closes() {
    let mut s = Script::logged_in();
    let sn = s.next_cmd_sn();
    let Header::ScsiCommand(mut write) = s.command(8, sn, rw10(0x2a, 0, 2)) else {
        unreachable!()
    };
    write.write = true;
    write.expected_data_transfer_length = 1024;
    s.send(Header::ScsiCommand(write), &[]).unwrap();
    let sent = s.sent();
    let Header::R2t(r2t) = &sent[0].0 else {
        panic!("{sent:?}")
    };
    let data_out = |data_sn, buffer_offset| {
        Header::DataOut(pdu::DataOut {
            final_pdu: false,
            lun: [0; 8],
            initiator_task_tag: 8,
            target_transfer_tag: r2t.target_transfer_tag,
            exp_stat_sn: 0,
            data_sn,
            buffer_offset,
        })
    };
    s.send(data_out(0, 0), &[0; 512]).unwrap();
    assert!(matches!(
        s.send(data_out(0, 512), &[0; 512]),
        Err(TargetError::DataSnMismatch {
            itt: 8,
            expected: 1,
            got: 0,
            ..
        })
    ));
}

/// READ(10) of `blocks` blocks at LBA 0 that reads (the scripted `command` reads nothing).
fn read10(s: &mut Script, itt: u32, blocks: u16) -> Header {
    let cmd_sn = s.next_cmd_sn();
    let mut cdb = vec![0x28, 0, 0, 0, 0, 0, 0];
    cdb.extend_from_slice(&blocks.to_be_bytes());
    let Header::ScsiCommand(mut h) = s.command(itt, cmd_sn, cdb) else {
        unreachable!()
    };
    h.read = true;
    h.expected_data_transfer_length = u32::from(blocks) * BLOCK as u32;
    Header::ScsiCommand(h)
}

#[test]
fn answers_not_yet_sent_hold_the_command_window_shut() {
    // A client that sends reads and never reads the answers: once the window's eight
    // commands have run, MaxCmdSN stays put until their answers leave.
    let mut s = Script::logged_in();
    for itt in 0..8 {
        let read = read10(&mut s, itt, 64);
        s.send(read, &[]).unwrap();
    }
    let mut lu = RamLu::new();
    while let Some(cmd) = s.target.poll_command() {
        let result = lu.execute(&cmd);
        s.target.complete_command(cmd.id, result);
    }
    assert_eq!(s.target.outstanding_commands(), 0, "all eight ran");
    assert!(s.target.queued_output_bytes() >= 8 * 64 * BLOCK);
    // A ninth command is past MaxCmdSN (17): ignored, not run.
    let ninth = read10(&mut s, 8, 64);
    s.send(ninth, &[]).unwrap();
    assert!(!s.target.has_ready_commands());
    assert_eq!(s.target.stats().dropped_out_of_window, 1);
    // Sending the answers opens the window again, and the last status says so.
    let mut last_max_cmd_sn = 0;
    while let Some(t) = s.target.poll_transmit() {
        if let Header::DataIn(h) = &t.header {
            last_max_cmd_sn = h.max_cmd_sn;
        }
    }
    assert_eq!(s.target.queued_output_bytes(), 0);
    assert_eq!(
        last_max_cmd_sn,
        10 + 8 + 7,
        "eight freed slots past ExpCmdSN 18"
    );
}

#[test]
fn queued_output_counts_nop_echoes_until_they_are_sent() {
    let mut s = Script::logged_in();
    let ping = vec![0x5a; 4096];
    for itt in 0..4 {
        let nop = Header::NopOut(pdu::NopOut {
            immediate: true,
            lun: [0; 8],
            initiator_task_tag: itt,
            target_transfer_tag: RESERVED_TAG,
            cmd_sn: s.cmd_sn,
            exp_stat_sn: 0,
        });
        s.send(nop, &ping).unwrap();
    }
    assert_eq!(s.target.queued_output_bytes(), 4 * (pdu::BHS_LEN + 4096));
    let first = s.target.poll_transmit().unwrap();
    assert_eq!(first.data(), &ping[..]);
    assert_eq!(s.target.queued_output_bytes(), 3 * (pdu::BHS_LEN + 4096));
    while s.target.poll_transmit().is_some() {}
    assert_eq!(s.target.queued_output_bytes(), 0);
}
