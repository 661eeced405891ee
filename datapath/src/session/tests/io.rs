//! Reads, writes, the command window, NOPs, timeouts and logout.

use super::*;

#[test]
fn read_with_several_data_in_and_status_in_the_last() {
    let mut h = Harness::logged_in(config(), &TargetParams::default());
    let id = h.s.submit(h.now, read_request(3000)).unwrap();
    let (cmd, data) = h.expect_command();
    assert!(data.is_empty());
    assert!(cmd.read && !cmd.write && cmd.final_pdu && !cmd.immediate);
    assert_eq!(cmd.initiator_task_tag, id.itt());
    assert_eq!(cmd.expected_data_transfer_length, 3000);
    assert_eq!(cmd.cmd_sn, 1);
    assert_eq!(cmd.exp_stat_sn, h.stat_sn);
    assert_eq!(cmd.cdb.len(), 16, "CDB padded to 16 bytes");
    assert_eq!(&cmd.cdb[..10], &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]);

    let payload = pattern(3000, 3);
    let d0 = h.data_in(id.itt(), 0, 0, None);
    h.deliver(Header::DataIn(d0), &payload[..1024]).unwrap();
    let d1 = h.data_in(id.itt(), 1, 1024, None);
    h.deliver(Header::DataIn(d1), &payload[1024..2048]).unwrap();
    assert!(h.events().is_empty());
    let d2 = h.data_in(id.itt(), 2, 2048, Some(0));
    h.deliver(Header::DataIn(d2), &payload[2048..]).unwrap();
    let (done, result) = h.completion();
    assert_eq!(done, id);
    let outcome = result.unwrap();
    assert_eq!(
        (outcome.status, outcome.residual, outcome.transferred),
        (0, Residual::None, 3000)
    );
    assert_eq!(outcome.buffer, payload);
    assert_eq!(outcome.sense, None);
    let stats = h.s.stats();
    assert_eq!(
        (stats.bytes_read, stats.bytes_copied, stats.data_in_pdus),
        (3000, 3000, 3)
    );
    assert_eq!(stats.commands_completed, 1);

    // ExpStatSN acknowledges the status.
    h.s.submit(h.now, read_request(16)).unwrap();
    let (cmd, _) = h.expect_command();
    assert_eq!(cmd.exp_stat_sn, h.stat_sn);
    assert_eq!(cmd.cmd_sn, 2);
}

#[test]
fn read_with_underflow_residual() {
    let mut h = Harness::logged_in(config(), &TargetParams::default());
    let id = h.s.submit(h.now, read_request(4096)).unwrap();
    h.expect_command();
    let mut d = h.data_in(id.itt(), 0, 0, Some(0));
    d.underflow = true;
    d.residual_count = 4096 - 1000;
    h.deliver(Header::DataIn(d), &pattern(1000, 1)).unwrap();
    let outcome = h.completion().1.unwrap();
    assert_eq!(outcome.residual, Residual::Underflow(3096));
    assert_eq!(outcome.transferred, 1000);
    assert_eq!(&outcome.buffer[..1000], &pattern(1000, 1)[..]);
}

#[test]
fn read_status_in_a_separate_scsi_response() {
    let mut h = Harness::logged_in(config(), &TargetParams::default());
    let id = h.s.submit(h.now, read_request(512)).unwrap();
    h.expect_command();
    let d = h.data_in(id.itt(), 0, 0, None);
    h.deliver(
        Header::DataIn(pdu::DataIn {
            final_pdu: true,
            ..d
        }),
        &[7; 512],
    )
    .unwrap();
    let r = h.scsi_response(id.itt(), 0);
    h.deliver(Header::ScsiResponse(r), &[]).unwrap();
    let outcome = h.completion().1.unwrap();
    assert_eq!(outcome.buffer, vec![7; 512]);
}

#[test]
fn out_of_order_data_in_is_accepted_when_negotiated() {
    let mut cfg = config();
    cfg.offer.data_pdu_in_order = false;
    let t = TargetParams {
        data_pdu_in_order: false,
        ..TargetParams::default()
    };
    let mut h = Harness::logged_in(cfg, &t);
    assert!(!h.s.params().unwrap().data_pdu_in_order);
    let id = h.s.submit(h.now, read_request(3000)).unwrap();
    h.expect_command();
    let payload = pattern(3000, 5);
    let d = h.data_in(id.itt(), 0, 2000, None);
    h.deliver(Header::DataIn(d), &payload[2000..]).unwrap();
    let d = h.data_in(id.itt(), 1, 0, None);
    h.deliver(Header::DataIn(d), &payload[..1000]).unwrap();
    // Overlap is refused.
    let mut h2 = Harness::logged_in(
        {
            let mut c = config();
            c.offer.data_pdu_in_order = false;
            c
        },
        &t,
    );
    let id2 = h2.s.submit(h2.now, read_request(3000)).unwrap();
    h2.expect_command();
    let d = h2.data_in(id2.itt(), 0, 1000, None);
    h2.deliver(Header::DataIn(d), &[0; 1000]).unwrap();
    let d = h2.data_in(id2.itt(), 1, 1500, None);
    assert_eq!(
        h2.deliver(Header::DataIn(d), &[0; 100]),
        Err(SessionError::DataOverlap {
            tag: id2.itt(),
            offset: 1500,
            len: 100
        })
    );
    // Back to the first: complete the hole.
    let d = h.data_in(id.itt(), 2, 1000, Some(0));
    h.deliver(Header::DataIn(d), &payload[1000..2000]).unwrap();
    assert_eq!(h.completion().1.unwrap().buffer, payload);
}

#[test]
fn check_condition_with_fixed_sense() {
    let mut h = Harness::logged_in(config(), &TargetParams::default());
    let id = h.s.submit(h.now, read_request(512)).unwrap();
    h.expect_command();
    // Fixed format sense: ILLEGAL REQUEST, LBA OUT OF RANGE (0x21/0x00).
    let mut sense = vec![0u8; 18];
    sense[0] = 0x70;
    sense[2] = 0x05;
    sense[7] = 10;
    sense[12] = 0x21;
    let mut segment = (sense.len() as u16).to_be_bytes().to_vec();
    segment.extend_from_slice(&sense);
    let r = h.scsi_response(id.itt(), 0x02);
    h.deliver(Header::ScsiResponse(r), &segment).unwrap();
    let outcome = h.completion().1.unwrap();
    assert_eq!(outcome.status, 0x02);
    assert_eq!(outcome.sense, Some(sense));
    assert_eq!(outcome.transferred, 0);
}

#[test]
fn target_failure_response_fails_the_command_only() {
    let mut h = Harness::logged_in(config(), &TargetParams::default());
    let id = h.s.submit(h.now, read_request(512)).unwrap();
    h.expect_command();
    let mut r = h.scsi_response(id.itt(), 0);
    r.response = 1;
    h.deliver(Header::ScsiResponse(r), &[]).unwrap();
    let failure = h.completion().1.unwrap_err();
    assert_eq!(failure.error, CommandError::TargetFailure { response: 1 });
    assert_eq!(failure.buffer.len(), 512, "buffer handed back");
    assert_eq!(h.s.state(), SessionState::FullFeature);
}

#[test]
fn write_with_immediate_data() {
    let t = TargetParams {
        mrdsl: 4096,
        ..TargetParams::default()
    };
    let mut h = Harness::logged_in(config(), &t);
    let payload = pattern(3000, 9);
    let id = h.s.submit(h.now, write_request(payload.clone())).unwrap();
    let (cmd, data) = h.expect_command();
    assert!(cmd.write && !cmd.read && cmd.final_pdu);
    assert_eq!(data, payload, "all 3000 bytes go as immediate data");
    h.expect_none();
    let r = h.scsi_response(id.itt(), 0);
    h.deliver(Header::ScsiResponse(r), &[]).unwrap();
    let outcome = h.completion().1.unwrap();
    assert_eq!(outcome.transferred, 3000);
    assert_eq!(outcome.buffer, payload);
    assert_eq!(h.s.stats().bytes_written, 3000);
}

#[test]
fn immediate_data_is_capped_by_target_mrdsl_and_the_rest_solicited() {
    let t = TargetParams {
        mrdsl: 1024,
        ..TargetParams::default()
    };
    let mut h = Harness::logged_in(config(), &t);
    let payload = pattern(5000, 1);
    let id = h.s.submit(h.now, write_request(payload.clone())).unwrap();
    let (cmd, data) = h.expect_command();
    assert!(
        cmd.final_pdu,
        "InitialR2T=Yes: no unsolicited Data-Out follows"
    );
    assert_eq!(data, &payload[..1024]);
    h.expect_none();
    h.deliver(h.r2t(id.itt(), 0x900, 0, 1024, 3976), &[])
        .unwrap();
    let mut got = Vec::new();
    for (i, expected_len) in [1024, 1024, 1024, 904].into_iter().enumerate() {
        let (d, data) = h.expect_data_out();
        assert_eq!(d.data_sn, i as u32);
        assert_eq!(d.buffer_offset, 1024 + 1024 * i as u32);
        assert_eq!(d.target_transfer_tag, 0x900);
        assert_eq!(d.final_pdu, i == 3);
        assert_eq!(data.len(), expected_len);
        got.extend(data);
    }
    assert_eq!(got, &payload[1024..]);
    h.expect_none();
}

#[test]
fn write_with_unsolicited_data_out_when_initial_r2t_is_no() {
    let mut cfg = config();
    cfg.offer.initial_r2t = false;
    cfg.offer.immediate_data = false;
    let t = TargetParams {
        initial_r2t: false,
        mrdsl: 2048,
        first_burst: 4096,
        ..TargetParams::default()
    };
    let mut h = Harness::logged_in(cfg, &t);
    let p = h.s.params().unwrap().clone();
    assert!(!p.initial_r2t && !p.immediate_data);
    assert_eq!(p.first_burst_length, 4096);
    let payload = pattern(10_000, 2);
    let id = h.s.submit(h.now, write_request(payload.clone())).unwrap();
    let (cmd, data) = h.expect_command();
    assert!(data.is_empty());
    assert!(!cmd.final_pdu, "unsolicited Data-Out follows");
    for (i, off) in [0u32, 2048].into_iter().enumerate() {
        let (d, data) = h.expect_data_out();
        assert_eq!(
            (d.data_sn, d.buffer_offset, d.target_transfer_tag),
            (i as u32, off, pdu::RESERVED_TAG)
        );
        assert_eq!(d.final_pdu, i == 1);
        assert_eq!(data, &payload[off as usize..off as usize + 2048]);
    }
    h.expect_none();
    h.deliver(h.r2t(id.itt(), 7, 0, 4096, 5904), &[]).unwrap();
    let mut got = Vec::new();
    while let Some((Header::DataOut(d), data)) = h.sent() {
        assert_eq!(d.target_transfer_tag, 7);
        got.extend(data);
    }
    assert_eq!(got, &payload[4096..]);
}

#[test]
fn write_with_several_r2ts_when_max_burst_is_smaller_than_the_io() {
    let mut cfg = config();
    cfg.offer.max_burst_length = 8192;
    cfg.offer.first_burst_length = 4096;
    cfg.offer.max_outstanding_r2t = 2;
    cfg.offer.immediate_data = false;
    let t = TargetParams {
        mrdsl: 4096,
        max_outstanding_r2t: 2,
        ..TargetParams::default()
    };
    let mut h = Harness::logged_in(cfg, &t);
    assert_eq!(h.s.params().unwrap().max_outstanding_r2t, 2);
    let payload = pattern(20_000, 4);
    let id = h.s.submit(h.now, write_request(payload.clone())).unwrap();
    let (cmd, data) = h.expect_command();
    assert!(cmd.final_pdu && data.is_empty());
    let mut received = vec![0u8; 20_000];
    // Two R2Ts outstanding at once, then the last one.
    h.deliver(h.r2t(id.itt(), 0x10, 0, 0, 8192), &[]).unwrap();
    h.deliver(h.r2t(id.itt(), 0x11, 1, 8192, 8192), &[])
        .unwrap();
    // A third while both are queued exceeds MaxOutstandingR2T=2.
    let mut extra = Harness::logged_in(
        {
            let mut c = config();
            c.offer.max_outstanding_r2t = 2;
            c
        },
        &t,
    );
    let eid = extra
        .s
        .submit(extra.now, write_request(vec![0; 100_000]))
        .unwrap();
    extra.expect_command();
    extra
        .deliver(extra.r2t(eid.itt(), 1, 0, 8192, 8192), &[])
        .unwrap();
    extra
        .deliver(extra.r2t(eid.itt(), 2, 1, 16384, 8192), &[])
        .unwrap();
    assert_eq!(
        extra.deliver(extra.r2t(eid.itt(), 3, 2, 24576, 8192), &[]),
        Err(SessionError::TooManyR2ts {
            tag: eid.itt(),
            max: 2
        })
    );

    let mut sequences = std::collections::BTreeMap::new();
    while let Some((Header::DataOut(d), data)) = h.sent() {
        let seq: &mut Vec<u32> = sequences.entry(d.target_transfer_tag).or_default();
        seq.push(d.data_sn);
        assert!(data.len() <= 4096);
        received[d.buffer_offset as usize..d.buffer_offset as usize + data.len()]
            .copy_from_slice(&data);
        if d.final_pdu {
            seq.push(u32::MAX);
        }
    }
    assert_eq!(
        sequences[&0x10],
        vec![0, 1, u32::MAX],
        "DataSN per sequence, F on the last"
    );
    assert_eq!(sequences[&0x11], vec![0, 1, u32::MAX]);
    // After the first two sequences went out, another R2T is allowed.
    h.deliver(h.r2t(id.itt(), 0x12, 2, 16384, 20_000 - 16384), &[])
        .unwrap();
    while let Some((Header::DataOut(d), data)) = h.sent() {
        received[d.buffer_offset as usize..d.buffer_offset as usize + data.len()]
            .copy_from_slice(&data);
    }
    assert_eq!(received, payload);
    let r = h.scsi_response(id.itt(), 0);
    h.deliver(Header::ScsiResponse(r), &[]).unwrap();
    assert_eq!(h.completion().1.unwrap().transferred, 20_000);
}

#[test]
fn commands_wait_for_a_closed_window_until_nop_in_opens_it() {
    let mut h = Harness::new(config());
    h.exp_cmd_sn = 1;
    h.max_cmd_sn = 0; // zero window at login
    h.login_none(&TargetParams::default());
    let a = h.s.submit(h.now, read_request(16)).unwrap();
    let b = h.s.submit(h.now, read_request(16)).unwrap();
    h.expect_none();
    // A stale or insane update changes nothing.
    h.max_cmd_sn = 0xffff_0000;
    h.deliver(h.nop_in(pdu::RESERVED_TAG, pdu::RESERVED_TAG), &[])
        .unwrap();
    h.expect_none();
    // Open by one.
    h.max_cmd_sn = 1;
    h.deliver(h.nop_in(pdu::RESERVED_TAG, pdu::RESERVED_TAG), &[])
        .unwrap();
    let (cmd, _) = h.expect_command();
    assert_eq!((cmd.initiator_task_tag, cmd.cmd_sn), (a.itt(), 1));
    h.expect_none();
    // The response to the first opens it by another.
    h.exp_cmd_sn = 2;
    h.max_cmd_sn = 2;
    let d = h.data_in(a.itt(), 0, 0, Some(0));
    h.deliver(Header::DataIn(d), &[1; 16]).unwrap();
    let (cmd, _) = h.expect_command();
    assert_eq!((cmd.initiator_task_tag, cmd.cmd_sn), (b.itt(), 2));
}

#[test]
fn queued_commands_are_bounded() {
    let mut cfg = config();
    cfg.max_queued_commands = 2;
    let mut h = Harness::new(cfg);
    h.max_cmd_sn = 0;
    h.login_none(&TargetParams::default());
    h.s.submit(h.now, read_request(16)).unwrap();
    h.s.submit(h.now, read_request(16)).unwrap();
    let refused = h.s.submit(h.now, read_request(77)).unwrap_err();
    assert_eq!(refused.reason, SubmitRejection::QueueFull);
    assert_eq!(
        refused.request.buffer.len(),
        77,
        "request handed back whole"
    );
}

#[test]
fn submit_validates_requests() {
    let mut h = Harness::new(config());
    assert_eq!(
        h.s.submit(h.now, read_request(1)).unwrap_err().reason,
        SubmitRejection::NotLoggedIn
    );
    h.login_none(&TargetParams::default());
    let mut short = read_request(100);
    short.buffer.truncate(10);
    assert_eq!(
        h.s.submit(h.now, short).unwrap_err().reason,
        SubmitRejection::BufferTooShort {
            buffer: 10,
            transfer: 100
        }
    );
}

#[test]
fn target_nop_in_ping_is_answered() {
    let mut h = Harness::logged_in(config(), &TargetParams::default());
    let mut ping = h.nop_in(pdu::RESERVED_TAG, 0x4242);
    if let Header::NopIn(p) = &mut ping {
        p.lun = [0, 1, 0, 0, 0, 0, 0, 0];
    }
    h.deliver(ping, b"echo me").unwrap();
    match h.expect() {
        (Header::NopOut(n), data) => {
            assert!(n.immediate);
            assert_eq!(n.initiator_task_tag, pdu::RESERVED_TAG);
            assert_eq!(n.target_transfer_tag, 0x4242);
            assert_eq!(n.lun, [0, 1, 0, 0, 0, 0, 0, 0]);
            assert_eq!(
                n.cmd_sn, 1,
                "immediate: carries the next CmdSN without using it"
            );
            assert_eq!(data, b"echo me");
        }
        other => panic!("{other:?}"),
    }
    // The ping did not consume a CmdSN.
    h.s.submit(h.now, read_request(1)).unwrap();
    assert_eq!(h.expect_command().0.cmd_sn, 1);
    assert_eq!(h.s.stats().nop_target_pings_answered, 1);
}

#[test]
fn target_ping_flood_is_bounded() {
    let mut h = Harness::logged_in(config(), &TargetParams::default());
    let mut result = Ok(());
    for i in 0..20 {
        result = h.deliver(h.nop_in(pdu::RESERVED_TAG, i + 1), b"x");
        if result.is_err() {
            assert_eq!(i, 16, "16 replies may wait");
            break;
        }
    }
    assert!(matches!(
        result,
        Err(SessionError::InvalidPdu {
            opcode: pdu::Opcode::NopIn,
            ..
        })
    ));
}

#[test]
fn keepalive_ping_then_nop_timeout() {
    let mut cfg = config();
    cfg.nop_interval = Duration::from_secs(5);
    cfg.nop_timeout = Duration::from_secs(3);
    let mut h = Harness::logged_in(cfg, &TargetParams::default());
    let start = h.now;
    assert_eq!(h.s.poll_timeout(), Some(start + Duration::from_secs(5)));
    h.advance(Duration::from_secs(5));
    h.timeout();
    let itt = match h.expect() {
        (Header::NopOut(n), data) => {
            assert!(n.immediate && data.is_empty());
            assert_eq!(n.target_transfer_tag, pdu::RESERVED_TAG);
            assert_ne!(n.initiator_task_tag, pdu::RESERVED_TAG);
            n.initiator_task_tag
        }
        other => panic!("{other:?}"),
    };
    // Answered: the next ping is due after another quiet interval.
    h.advance(Duration::from_secs(1));
    let mut answer = h.nop_in(itt, pdu::RESERVED_TAG);
    if let Header::NopIn(a) = &mut answer {
        a.stat_sn = h.next_stat();
    }
    h.deliver(answer, &[]).unwrap();
    assert_eq!(h.s.poll_timeout(), Some(h.now + Duration::from_secs(5)));
    h.advance(Duration::from_secs(5));
    h.timeout();
    assert!(matches!(h.expect(), (Header::NopOut(_), _)));
    assert_eq!(h.s.poll_timeout(), Some(h.now + Duration::from_secs(3)));
    // Unanswered: the connection fails, taking a command in flight with it.
    let id = h.s.submit(h.now, read_request(8)).unwrap();
    h.expect_command();
    h.advance(Duration::from_secs(3));
    h.timeout();
    assert_eq!(h.s.state(), SessionState::Failed);
    let events = h.events();
    let nop_timeout = SessionError::NopTimeout {
        waited: Duration::from_secs(3),
    };
    assert!(matches!(&events[0], Event::CommandComplete(i, Err(f))
        if *i == id && f.error == CommandError::ConnectionLost(nop_timeout.to_string())));
    assert_eq!(events[1], Event::ConnectionFailed(nop_timeout));
    assert_eq!(h.s.stats().nop_pings_sent, 2);
}

#[test]
fn command_timeout_fails_the_connection() {
    let mut cfg = config();
    cfg.command_timeout = Duration::from_secs(10);
    let mut h = Harness::logged_in(cfg, &TargetParams::default());
    let a = h.s.submit(h.now, read_request(8)).unwrap();
    h.advance(Duration::from_secs(4));
    let b = h.s.submit(h.now, read_request(8)).unwrap();
    h.expect_command();
    h.expect_command();
    assert_eq!(h.s.poll_timeout(), Some(h.now + Duration::from_secs(6)));
    h.advance(Duration::from_secs(6));
    h.timeout();
    assert_eq!(h.s.state(), SessionState::Failed);
    let events = h.events();
    let err = SessionError::CommandTimeout { tag: a.itt() };
    assert_eq!(events.len(), 3);
    assert!(
        matches!(&events[0], Event::CommandComplete(i, Err(f)) if *i == a && f.error == CommandError::TimedOut)
    );
    assert!(matches!(&events[1], Event::CommandComplete(i, Err(f))
        if *i == b && f.error == CommandError::ConnectionLost(err.to_string())));
    assert_eq!(events[2], Event::ConnectionFailed(err));
}

#[test]
fn every_expired_command_times_out_and_only_the_younger_are_lost_with_the_connection() {
    // Commands past their deadline fail as timed out (the caller was told, so a driver
    // that logs in again must not send them again); only the younger ones are
    // ConnectionLost, which a recovering driver may send again.
    let mut cfg = config();
    cfg.command_timeout = Duration::from_secs(10);
    let mut h = Harness::logged_in(cfg, &TargetParams::default());
    let a = h.s.submit(h.now, read_request(8)).unwrap();
    let b = h.s.submit(h.now, read_request(8)).unwrap();
    h.advance(Duration::from_secs(4));
    let c = h.s.submit(h.now, read_request(8)).unwrap();
    for _ in 0..3 {
        h.expect_command();
    }
    h.advance(Duration::from_secs(6));
    h.timeout();
    assert_eq!(h.s.state(), SessionState::Failed);
    let events = h.events();
    let err = SessionError::CommandTimeout { tag: a.itt() };
    assert_eq!(events.len(), 4);
    for (event, id) in events[..2].iter().zip([a, b]) {
        assert!(
            matches!(event, Event::CommandComplete(i, Err(f)) if *i == id && f.error == CommandError::TimedOut),
            "{event:?}"
        );
    }
    assert!(matches!(&events[2], Event::CommandComplete(i, Err(f))
        if *i == c && f.error == CommandError::ConnectionLost(err.to_string())));
    assert_eq!(events[3], Event::ConnectionFailed(err));
}

#[test]
fn a_command_stuck_behind_a_shut_window_times_out_alone() {
    let mut cfg = config();
    cfg.command_timeout = Duration::from_secs(10);
    let mut h = Harness::new(cfg);
    h.max_cmd_sn = 0;
    h.login_none(&TargetParams::default());
    let a = h.s.submit(h.now, read_request(8)).unwrap();
    h.advance(Duration::from_secs(10));
    h.timeout();
    let (id, result) = h.completion();
    assert_eq!(id, a);
    assert_eq!(result.unwrap_err().error, CommandError::TimedOut);
    assert_eq!(h.s.state(), SessionState::FullFeature);
}

#[test]
fn logout_waits_for_commands_in_flight() {
    let mut h = Harness::new(config());
    h.max_cmd_sn = 1; // room for one command
    h.login_none(&TargetParams::default());
    let a = h.s.submit(h.now, read_request(8)).unwrap();
    let b = h.s.submit(h.now, read_request(8)).unwrap();
    h.expect_command();
    h.s.logout(h.now);
    assert_eq!(h.s.state(), SessionState::LoggingOut);
    let (id, result) = h.completion();
    assert_eq!(
        (id, result.unwrap_err().error),
        (b, CommandError::LoggingOut)
    );
    assert_eq!(
        h.s.submit(h.now, read_request(8)).unwrap_err().reason,
        SubmitRejection::NotLoggedIn
    );
    h.expect_none();
    let d = h.data_in(a.itt(), 0, 0, Some(0));
    h.deliver(Header::DataIn(d), &[0; 8]).unwrap();
    assert!(h.completion().1.is_ok());
    let req = match h.expect() {
        (Header::LogoutRequest(r), _) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(req.reason_code, 0);
    assert!(req.immediate);
    let resp = pdu::LogoutResponse {
        response: 0,
        initiator_task_tag: req.initiator_task_tag,
        stat_sn: h.next_stat(),
        exp_cmd_sn: 2,
        max_cmd_sn: 2,
        time2wait: 0,
        time2retain: 0,
    };
    h.deliver(Header::LogoutResponse(resp), &[]).unwrap();
    assert_eq!(h.s.state(), SessionState::Closed);
    assert_eq!(h.events(), vec![Event::LogoutComplete]);
    // The transport closing afterwards is no failure.
    h.s.handle_connection_lost(h.now, "eof".into());
    assert_eq!(h.s.state(), SessionState::Closed);
    assert!(h.events().is_empty());
}

#[test]
fn target_closing_instead_of_answering_logout_ends_the_session() {
    let mut h = Harness::logged_in(config(), &TargetParams::default());
    // Before the Logout Request goes out, a close is a failure like any other.
    let mut early = Harness::logged_in(config(), &TargetParams::default());
    early.s.handle_connection_lost(early.now, "eof".into());
    assert_eq!(early.s.state(), SessionState::Failed);

    h.s.logout(h.now);
    assert!(matches!(h.expect(), (Header::LogoutRequest(_), _)));
    h.s.handle_connection_lost(h.now, "eof".into());
    assert_eq!(h.s.state(), SessionState::Closed);
    assert_eq!(h.events(), vec![Event::LogoutComplete]);
}

#[test]
fn logout_times_out() {
    let mut h = Harness::logged_in(config(), &TargetParams::default());
    h.s.logout(h.now);
    assert!(matches!(h.expect(), (Header::LogoutRequest(_), _)));
    h.advance(Duration::from_secs(15));
    h.timeout();
    assert_eq!(
        h.events(),
        vec![Event::ConnectionFailed(SessionError::LogoutTimeout)]
    );
}

fn async_message(h: &mut Harness, event: u8) -> Header {
    Header::AsyncMessage(pdu::AsyncMessage {
        lun: [0; 8],
        stat_sn: h.next_stat(),
        exp_cmd_sn: h.exp_cmd_sn,
        max_cmd_sn: h.max_cmd_sn,
        async_event: event,
        async_vcode: 0,
        parameter1: 0,
        parameter2: 2,
        parameter3: 20,
    })
}

#[test]
fn async_logout_request_is_reported_and_left_to_the_driver() {
    let mut h = Harness::logged_in(config(), &TargetParams::default());
    let m = async_message(&mut h, 1);
    h.deliver(m, &[]).unwrap();
    assert_eq!(
        h.events(),
        vec![Event::AsyncMessage(AsyncEvent::LogoutRequested {
            within_secs: 20,
            time2wait: 2,
        })]
    );
    // Commands keep flowing until the driver moves them and logs out.
    h.expect_none();
    assert_eq!(h.s.state(), SessionState::FullFeature);
}

#[test]
fn async_renegotiation_sends_a_text_request_and_takes_the_targets_length() {
    let mut h = Harness::logged_in(config(), &TargetParams::default());
    let ours = h.s.params().unwrap().initiator_max_recv_data_segment_length;
    let m = async_message(&mut h, 4);
    h.deliver(m, &[]).unwrap();
    assert_eq!(
        h.events(),
        vec![Event::AsyncMessage(AsyncEvent::Renegotiate)]
    );
    let (req, data) = match h.expect() {
        (Header::TextRequest(r), d) => (r, d),
        other => panic!("{other:?}"),
    };
    assert!(req.final_pdu && req.immediate);
    assert_eq!(
        data,
        text(&[("MaxRecvDataSegmentLength", &ours.to_string())])
    );
    let response = Header::TextResponse(pdu::TextResponse {
        final_pdu: true,
        continue_: false,
        lun: [0; 8],
        initiator_task_tag: req.initiator_task_tag,
        target_transfer_tag: pdu::RESERVED_TAG,
        stat_sn: h.next_stat(),
        exp_cmd_sn: h.exp_cmd_sn,
        max_cmd_sn: h.max_cmd_sn,
    });
    h.deliver(response, &text(&[("MaxRecvDataSegmentLength", "4096")]))
        .unwrap();
    assert_eq!(
        h.events(),
        vec![Event::Renegotiated(vec![(
            "MaxRecvDataSegmentLength".into(),
            "4096".into()
        )])]
    );
    assert_eq!(
        h.s.params().unwrap().target_max_recv_data_segment_length,
        4096
    );
    // A second request while one is pending is answered by the pending one.
    let m = async_message(&mut h, 4);
    h.deliver(m, &[]).unwrap();
    h.events();
    let m = async_message(&mut h, 4);
    h.deliver(m, &[]).unwrap();
    assert!(matches!(h.expect(), (Header::TextRequest(_), _)));
    h.expect_none();
}

#[test]
fn async_scsi_event_surfaces_its_sense_and_drop_fails_the_connection() {
    let mut h = Harness::logged_in(config(), &TargetParams::default());
    let m = async_message(&mut h, 0);
    h.deliver(m, &[0, 3, 0x70, 0, 6]).unwrap();
    assert_eq!(
        h.events(),
        vec![Event::AsyncMessage(AsyncEvent::Scsi {
            lun: [0; 8],
            sense: vec![0x70, 0, 6]
        })]
    );
    let m = async_message(&mut h, 2);
    let err = SessionError::TargetDroppedConnection {
        event: 2,
        time2wait: 2,
        time2retain: 20,
    };
    assert_eq!(h.deliver(m, &[]), Err(err.clone()));
    assert_eq!(h.events(), vec![Event::ConnectionFailed(err)]);
}

#[test]
fn connection_lost_fails_everything_outstanding() {
    let mut h = Harness::new(config());
    h.max_cmd_sn = 1;
    h.login_none(&TargetParams::default());
    let a = h.s.submit(h.now, read_request(8)).unwrap();
    let b = h.s.submit(h.now, read_request(8)).unwrap();
    h.s.handle_connection_lost(h.now, "reset by peer".into());
    let events = h.events();
    let lost = CommandError::ConnectionLost(
        SessionError::ConnectionLost("reset by peer".into()).to_string(),
    );
    assert!(
        matches!(&events[0], Event::CommandComplete(i, Err(f)) if *i == a && f.error == lost && f.buffer.len() == 8)
    );
    assert!(matches!(&events[1], Event::CommandComplete(i, Err(f)) if *i == b && f.error == lost));
    assert_eq!(
        events[2],
        Event::ConnectionFailed(SessionError::ConnectionLost("reset by peer".into()))
    );
    h.expect_none();
    assert_eq!(h.s.poll_timeout(), None);
}

#[test]
fn placed_data_in_lands_in_the_buffer_without_a_copy() {
    let mut h = Harness::logged_in(config(), &TargetParams::default());
    let id = h.s.submit(h.now, read_request(3000)).unwrap();
    h.expect_command();
    let payload = pattern(3000, 7);
    for (sn, (start, end)) in [(0u32, (0usize, 1024usize)), (1, (1024, 3000))] {
        let status = (end == 3000).then_some(0);
        let header = Header::DataIn(h.data_in(id.itt(), sn, start as u32, status));
        let len = (end - start) as u32;
        let slot =
            h.s.data_in_destination(&header, len)
                .expect("the next Data-In has a place");
        assert_eq!(slot.len(), end - start);
        slot.copy_from_slice(&payload[start..end]);
        h.s.handle_pdu_placed(h.now, header, len).unwrap();
    }
    let (done, result) = h.completion();
    assert_eq!(done, id);
    let outcome = result.unwrap();
    assert_eq!(outcome.buffer, payload);
    let stats = h.s.stats();
    assert_eq!((stats.bytes_read, stats.bytes_copied), (3000, 0));
}

#[test]
fn no_destination_for_a_data_in_that_is_not_expected_next() {
    let mut h = Harness::logged_in(config(), &TargetParams::default());
    let id = h.s.submit(h.now, read_request(3000)).unwrap();
    h.expect_command();
    // Wrong DataSN, offset past the expected length, an unknown tag, out-of-order offset.
    let gap = Header::DataIn(h.data_in(id.itt(), 1, 0, None));
    assert!(h.s.data_in_destination(&gap, 512).is_none());
    let beyond = Header::DataIn(h.data_in(id.itt(), 0, 2900, None));
    assert!(h.s.data_in_destination(&beyond, 512).is_none());
    let unknown = Header::DataIn(h.data_in(id.itt() + 99, 0, 0, None));
    assert!(h.s.data_in_destination(&unknown, 512).is_none());
    let skipped = Header::DataIn(h.data_in(id.itt(), 0, 512, None));
    assert!(h.s.data_in_destination(&skipped, 512).is_none());
    // The copying path still reports the fault as before.
    assert!(h.deliver(gap, &[0u8; 512]).is_err());
}

#[test]
fn placed_payload_on_a_pdu_other_than_data_in_is_a_fault() {
    let mut h = Harness::logged_in(config(), &TargetParams::default());
    let id = h.s.submit(h.now, read_request(16)).unwrap();
    h.expect_command();
    let response = h.scsi_response(id.itt(), 0);
    let result =
        h.s.handle_pdu_placed(h.now, Header::ScsiResponse(response), 16);
    assert!(result.is_err());
    assert_eq!(h.s.state(), SessionState::Failed);
}
