//! The task table seen from the wire: a completed command's tag stays unknown after its
//! slot holds a newer command, the reserved tag is never issued, command deadlines run in
//! submission order through the lazily pruned queue, and out-of-order Data-In is still
//! checked for overlaps and holes beside the in-order fast path.

use super::*;

/// Reads `len` bytes with one Data-In carrying GOOD status.
fn answer_read(h: &mut Harness, id: TaskId, len: usize) {
    let d = h.data_in(id.itt(), 0, 0, Some(0));
    h.deliver(Header::DataIn(d), &vec![0; len]).unwrap();
    let (done, result) = h.completion();
    assert_eq!(done, id);
    assert!(result.is_ok());
}

/// A logged-in session where command `a` has completed and command `b`, now in flight,
/// took `a`'s slot.
fn slot_reused() -> (Harness, TaskId, TaskId) {
    let mut h = Harness::logged_in(config(), &TargetParams::default());
    let a = h.s.submit(h.now, read_request(8)).unwrap();
    h.expect_command();
    answer_read(&mut h, a, 8);
    let b = h.s.submit(h.now, read_request(8)).unwrap();
    h.expect_command();
    assert_eq!(h.s.tasks.slot_of(a.itt()), h.s.tasks.slot_of(b.itt()));
    assert_ne!(a.itt(), b.itt());
    (h, a, b)
}

/// The fault was fatal and the newer command failed with the connection, untouched.
#[track_caller]
fn assert_unknown(
    h: &mut Harness,
    result: Result<(), SessionError>,
    expected: SessionError,
    b: TaskId,
) {
    assert_eq!(result, Err(expected.clone()));
    assert_eq!(h.s.state(), SessionState::Failed);
    let events = h.events();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(matches!(&events[0], Event::CommandComplete(i, Err(f))
        if *i == b && f.error == CommandError::ConnectionLost(expected.to_string())
            && f.buffer == vec![0; 8]));
    assert_eq!(events[1], Event::ConnectionFailed(expected));
}

#[test]
fn a_stale_tag_after_slot_reuse_is_an_unknown_tag() {
    // Data-In: no destination, and fatal as an unknown tag.
    let (mut h, a, b) = slot_reused();
    let header = Header::DataIn(h.data_in(a.itt(), 0, 0, Some(0)));
    assert!(h.s.data_in_destination(&header, 8).is_none());
    let r = h.deliver(header, &[0xee; 8]);
    let err = SessionError::UnknownTaskTag {
        opcode: pdu::Opcode::DataIn,
        tag: a.itt(),
    };
    assert_unknown(&mut h, r, err, b);

    // SCSI Response.
    let (mut h, a, b) = slot_reused();
    let resp = h.scsi_response(a.itt(), 0);
    let r = h.deliver(Header::ScsiResponse(resp), &[]);
    let err = SessionError::UnknownTaskTag {
        opcode: pdu::Opcode::ScsiResponse,
        tag: a.itt(),
    };
    assert_unknown(&mut h, r, err, b);

    // R2T.
    let (mut h, a, b) = slot_reused();
    let r = h.deliver(h.r2t(a.itt(), 1, 0, 0, 8), &[]);
    let err = SessionError::UnknownTaskTag {
        opcode: pdu::Opcode::R2t,
        tag: a.itt(),
    };
    assert_unknown(&mut h, r, err, b);

    // A Reject of the old SCSI Command does not fail the new one: it is a Reject of a
    // command we do not have, so the connection fails.
    let (mut h, a, b) = slot_reused();
    let mut rejected = vec![0u8; 48];
    rejected[0] = pdu::Opcode::ScsiCommand as u8;
    rejected[16..20].copy_from_slice(&a.itt().to_be_bytes());
    let reject = Header::Reject(pdu::Reject {
        reason: 0x09,
        stat_sn: h.next_stat(),
        exp_cmd_sn: h.exp_cmd_sn,
        max_cmd_sn: h.max_cmd_sn,
        data_sn_or_r2t_sn: 0,
    });
    let r = h.deliver(reject, &rejected);
    let err = SessionError::Reject {
        reason: 0x09,
        opcode: Some(pdu::Opcode::ScsiCommand),
    };
    assert_unknown(&mut h, r, err, b);
}

#[test]
fn the_reserved_tag_is_never_issued_across_generation_wrap() {
    // Bounds this large give the tag 20 index bits and 12 generation bits: one slot's
    // tag comes round after 4096 commands.
    let mut cfg = config();
    cfg.max_queued_commands = 1 << 21;
    cfg.max_outstanding_commands = 1;
    let mut h = Harness::logged_in(cfg, &TargetParams::default());
    assert_eq!(h.s.tasks.index_bits(), tasks::MAX_INDEX_BITS);
    let period = 1usize << (32 - tasks::MAX_INDEX_BITS);
    let mut tags = Vec::with_capacity(period + 2);
    for _ in 0..period + 2 {
        let id = h.s.submit(h.now, read_request(0)).unwrap();
        // Straight from the session (the codec round trip of every PDU is checked
        // elsewhere; 4098 of them would only slow this down).
        let Some(Transmit {
            header: Header::ScsiCommand(cmd),
            ..
        }) = h.s.poll_transmit()
        else {
            panic!("expected the SCSI Command");
        };
        assert_eq!(cmd.initiator_task_tag, id.itt());
        assert_ne!(cmd.initiator_task_tag, pdu::RESERVED_TAG);
        h.exp_cmd_sn += 1;
        h.max_cmd_sn += 1;
        let resp = h.scsi_response(id.itt(), 0);
        h.s.handle_pdu(h.now, Header::ScsiResponse(resp), &[])
            .unwrap();
        assert!(matches!(h.s.poll_event(), Some(Event::CommandComplete(i, Ok(_))) if i == id));
        tags.push(id.itt());
    }
    let distinct: std::collections::HashSet<Tag> = tags[..period].iter().copied().collect();
    assert_eq!(distinct.len(), period);
    assert_eq!(tags[period], tags[0], "the slot's generation wrapped");
    assert_eq!(h.s.tasks.slot_count(), 1);

    // Control tags (here NOP-Out pings) live in the index commands never use.
    let mut cfg = config();
    cfg.nop_interval = Duration::from_secs(1);
    let mut h = Harness::logged_in(cfg, &TargetParams::default());
    let id = h.s.submit(h.now, read_request(8)).unwrap();
    h.expect_command();
    h.advance(Duration::from_secs(1));
    h.timeout();
    let ping = match h.expect() {
        (Header::NopOut(n), _) => n.initiator_task_tag,
        other => panic!("expected a ping, got {other:?}"),
    };
    assert_ne!(ping, pdu::RESERVED_TAG);
    assert_ne!(h.s.tasks.slot_of(ping), h.s.tasks.slot_of(id.itt()));
    assert!(h.s.tasks.get(ping).is_none());
}

#[test]
fn command_timeouts_follow_submission_order_past_completed_commands() {
    let mut cfg = config();
    cfg.command_timeout = Duration::from_secs(10);
    let mut h = Harness::logged_in(cfg, &TargetParams::default());
    let t0 = h.now;
    let a = h.s.submit(h.now, read_request(8)).unwrap();
    h.advance(Duration::from_secs(1));
    let b = h.s.submit(h.now, read_request(8)).unwrap();
    h.advance(Duration::from_secs(1));
    let c = h.s.submit(h.now, read_request(8)).unwrap();
    for _ in 0..3 {
        h.expect_command();
    }
    assert_eq!(h.s.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    // The middle one completes: the deadline is still the oldest's.
    answer_read(&mut h, b, 8);
    assert_eq!(h.s.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    // The oldest completes: the next deadline is c's, past b's dead entry.
    answer_read(&mut h, a, 8);
    assert_eq!(h.s.poll_timeout(), Some(t0 + Duration::from_secs(12)));
    h.now = t0 + Duration::from_secs(12) - Duration::from_millis(1);
    h.timeout();
    assert_eq!(h.s.state(), SessionState::FullFeature);
    assert!(h.events().is_empty());
    h.now = t0 + Duration::from_secs(12);
    h.timeout();
    assert_eq!(h.s.state(), SessionState::Failed);
    let err = SessionError::CommandTimeout { tag: c.itt() };
    let events = h.events();
    assert_eq!(events.len(), 2);
    assert!(matches!(&events[0], Event::CommandComplete(i, Err(f))
        if *i == c && f.error == CommandError::TimedOut));
    assert_eq!(events[1], Event::ConnectionFailed(err));
}

#[test]
fn waiting_commands_time_out_alone_one_after_another() {
    let mut cfg = config();
    cfg.command_timeout = Duration::from_secs(10);
    let mut h = Harness::new(cfg);
    h.max_cmd_sn = 1; // room for one command
    h.login_none(&TargetParams::default());
    let t0 = h.now;
    let a = h.s.submit(h.now, read_request(8)).unwrap();
    h.expect_command();
    h.advance(Duration::from_secs(1));
    let b = h.s.submit(h.now, read_request(8)).unwrap();
    h.advance(Duration::from_secs(1));
    let c = h.s.submit(h.now, read_request(8)).unwrap();
    h.expect_none();
    // a completes; the window stays shut (MaxCmdSN 1), so b and c keep waiting.
    h.advance(Duration::from_secs(3));
    answer_read(&mut h, a, 8);
    assert_eq!(h.s.commands_waiting(), 2);
    assert_eq!(h.s.poll_timeout(), Some(t0 + Duration::from_secs(11)));
    h.now = t0 + Duration::from_secs(11);
    h.timeout();
    let (id, result) = h.completion();
    assert_eq!((id, result.unwrap_err().error), (b, CommandError::TimedOut));
    assert_eq!(h.s.state(), SessionState::FullFeature);
    assert_eq!(h.s.poll_timeout(), Some(t0 + Duration::from_secs(12)));
    h.now = t0 + Duration::from_secs(12);
    h.timeout();
    let (id, result) = h.completion();
    assert_eq!((id, result.unwrap_err().error), (c, CommandError::TimedOut));
    assert_eq!(h.s.state(), SessionState::FullFeature);
    assert_eq!(h.s.commands_waiting(), 0);
    assert_eq!(h.s.poll_timeout(), None);
}

#[test]
fn a_long_command_keeps_its_deadline_while_many_complete_behind_it() {
    let mut cfg = config();
    cfg.command_timeout = Duration::from_secs(10);
    cfg.max_outstanding_commands = 4;
    cfg.max_queued_commands = 4;
    let mut h = Harness::logged_in(cfg, &TargetParams::default());
    h.max_cmd_sn = 10_000;
    let t0 = h.now;
    let slow = h.s.submit(h.now, read_request(8)).unwrap();
    h.expect_command();
    for _ in 0..1000 {
        h.advance(Duration::from_millis(5));
        let id = h.s.submit(h.now, read_request(8)).unwrap();
        h.expect_command();
        answer_read(&mut h, id, 8);
        // The queue of deadlines is pruned, not grown by every command.
        assert!(h.s.tasks.order_len() <= 2 * (4 + 4) + 32);
        assert_eq!(h.s.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    }
    assert_eq!(h.s.tasks.len(), 1);
    assert!(h.s.tasks.slot_count() <= 2);
    h.now = t0 + Duration::from_secs(10);
    h.timeout();
    let err = SessionError::CommandTimeout { tag: slow.itt() };
    let events = h.events();
    assert!(matches!(&events[0], Event::CommandComplete(i, Err(f))
        if *i == slow && f.error == CommandError::TimedOut));
    assert_eq!(events[1], Event::ConnectionFailed(err));
}

#[test]
fn connection_loss_fails_commands_in_submission_order_across_reused_slots() {
    let mut h = Harness::logged_in(config(), &TargetParams::default());
    let ids: Vec<TaskId> = (0..4)
        .map(|_| {
            let id = h.s.submit(h.now, read_request(8)).unwrap();
            h.expect_command();
            id
        })
        .collect();
    // Free the first two slots; the next two commands take them (newest freed first).
    answer_read(&mut h, ids[0], 8);
    answer_read(&mut h, ids[1], 8);
    let later: Vec<TaskId> = (0..2)
        .map(|_| {
            let id = h.s.submit(h.now, read_request(8)).unwrap();
            h.expect_command();
            id
        })
        .collect();
    assert!(later.iter().all(|id| h.s.tasks.slot_of(id.itt()) < 2));
    h.s.handle_connection_lost(h.now, "reset".into());
    let failed: Vec<TaskId> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::CommandComplete(id, Err(_)) => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(failed, vec![ids[2], ids[3], later[0], later[1]]);
}

/// A session negotiated with DataPDUInOrder=No and one 4096-byte read in flight.
fn out_of_order_read() -> (Harness, TaskId) {
    let mut cfg = config();
    cfg.offer.data_pdu_in_order = false;
    let t = TargetParams {
        data_pdu_in_order: false,
        ..TargetParams::default()
    };
    let mut h = Harness::logged_in(cfg, &t);
    let id = h.s.submit(h.now, read_request(4096)).unwrap();
    h.expect_command();
    (h, id)
}

/// Delivers Data-In `sn` at `offset` with `len` bytes of the read's pattern.
fn data_in(
    h: &mut Harness,
    id: TaskId,
    sn: u32,
    offset: u32,
    len: usize,
    status: Option<u8>,
) -> Result<(), SessionError> {
    let payload = pattern(4096, 3);
    let d = h.data_in(id.itt(), sn, offset, status);
    let start = offset as usize;
    h.deliver(Header::DataIn(d), &payload[start..start + len])
}

#[test]
fn out_of_order_data_in_fills_holes_and_completes() {
    let (mut h, id) = out_of_order_read();
    data_in(&mut h, id, 0, 1024, 1024, None).unwrap();
    data_in(&mut h, id, 1, 3072, 1024, None).unwrap();
    // Joins the prefix with the range beyond it.
    data_in(&mut h, id, 2, 0, 1024, None).unwrap();
    data_in(&mut h, id, 3, 2048, 1024, Some(0)).unwrap();
    let outcome = h.completion().1.unwrap();
    assert_eq!(outcome.transferred, 4096);
    assert_eq!(outcome.buffer, pattern(4096, 3));
}

#[test]
fn out_of_order_data_in_overlapping_the_prefix_or_a_later_range_is_fatal() {
    let (mut h, id) = out_of_order_read();
    data_in(&mut h, id, 0, 0, 1024, None).unwrap();
    let r = data_in(&mut h, id, 1, 512, 1024, None);
    assert_eq!(
        r,
        Err(SessionError::DataOverlap {
            tag: id.itt(),
            offset: 512,
            len: 1024
        })
    );
    assert_eq!(h.s.state(), SessionState::Failed);

    let (mut h, id) = out_of_order_read();
    data_in(&mut h, id, 0, 0, 1024, None).unwrap();
    data_in(&mut h, id, 1, 2048, 1024, None).unwrap();
    let r = data_in(&mut h, id, 2, 1536, 1024, None);
    assert_eq!(
        r,
        Err(SessionError::DataOverlap {
            tag: id.itt(),
            offset: 1536,
            len: 1024
        })
    );

    let (mut h, id) = out_of_order_read();
    data_in(&mut h, id, 0, 2048, 1024, None).unwrap();
    let header = Header::DataIn(h.data_in(id.itt(), 1, 2560, None));
    assert!(h.s.data_in_destination(&header, 512).is_none());
    let r = data_in(&mut h, id, 1, 2560, 512, None);
    assert_eq!(
        r,
        Err(SessionError::DataOverlap {
            tag: id.itt(),
            offset: 2560,
            len: 512
        })
    );
}

#[test]
fn good_status_with_a_hole_is_missing_data() {
    let (mut h, id) = out_of_order_read();
    data_in(&mut h, id, 0, 0, 1024, None).unwrap();
    let r = data_in(&mut h, id, 1, 2048, 2048, Some(0));
    assert_eq!(
        r,
        Err(SessionError::MissingData {
            tag: id.itt(),
            expected: 4096,
            received: 3072
        })
    );
    let events = h.events();
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::CommandComplete(_, Ok(_)))));

    // In order (the default), a skipped offset is refused as out of order.
    let mut h = Harness::logged_in(config(), &TargetParams::default());
    let id = h.s.submit(h.now, read_request(4096)).unwrap();
    h.expect_command();
    data_in(&mut h, id, 0, 0, 1024, None).unwrap();
    let r = data_in(&mut h, id, 1, 2048, 1024, None);
    assert_eq!(
        r,
        Err(SessionError::DataOutOfOrder {
            tag: id.itt(),
            offset: 2048,
            expected_offset: 1024
        })
    );
}
