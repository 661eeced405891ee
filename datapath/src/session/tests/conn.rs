//! The session driven through `conn::Conn`, as the drivers drive it: a read's Data-In
//! arrives in pieces, part through the driver's own buffer and part straight into the
//! placement, and lands once; a write goes out as one gather list from the command buffer.

use super::*;
use crate::conn::Conn;

/// One send batch of `conn`, as the bytes a gather send puts on the wire.
fn send_batch(conn: &mut Conn) -> (usize, Vec<u8>) {
    let queued = conn.fill_send().unwrap();
    let mut slices = Vec::new();
    conn.send_slices(&mut slices);
    let wire = slices.concat();
    conn.handle_sent();
    (queued, wire)
}

#[test]
fn a_read_split_across_receives_is_placed_without_a_session_copy() {
    let mut h = Harness::logged_in(config(), &TargetParams::default());
    let session = std::mem::replace(&mut h.s, Session::new(config(), h.now));
    let mut conn = Conn::new(session);
    let id = conn
        .session_mut()
        .submit(h.now, read_request(12_000))
        .unwrap();
    let (queued, wire) = send_batch(&mut conn);
    assert_eq!(queued, 1);
    let limits = pdu::Limits::default();
    let sent = pdu::decode_pdu(&wire, pdu::Digests::default(), &limits)
        .unwrap()
        .unwrap();
    assert!(matches!(sent.header, Header::ScsiCommand(c) if c.initiator_task_tag == id.itt()));

    let payload = pattern(12_000, 9);
    let mut stream = Vec::new();
    let d0 = h.data_in(id.itt(), 0, 0, None);
    pdu::encode_pdu(
        &Header::DataIn(d0),
        &payload[..8192],
        Default::default(),
        &mut stream,
    )
    .unwrap();
    let d1 = h.data_in(id.itt(), 1, 8192, Some(0));
    pdu::encode_pdu(
        &Header::DataIn(d1),
        &payload[8192..],
        Default::default(),
        &mut stream,
    )
    .unwrap();

    // The header and 52 payload bytes through the driver's own buffer (copied into place),
    // then the rest of that payload straight into the placement.
    conn.handle_received(h.now, &stream[..100]).unwrap();
    let spare = conn.placement_spare().expect("the Data-In is placed");
    assert_eq!(spare.len(), 8192 - 52);
    spare.copy_from_slice(&stream[100..100 + 8192 - 52]);
    conn.handle_placed_received(h.now, 8192 - 52).unwrap();
    for piece in stream[48 + 8192..].chunks(7) {
        conn.handle_received(h.now, piece).unwrap();
    }
    let Some(Event::CommandComplete(done, result)) = conn.session_mut().poll_event() else {
        panic!("the read completes");
    };
    assert_eq!(done, id);
    assert_eq!(result.unwrap().buffer, payload);
    assert_eq!(conn.session().stats().bytes_copied, 0);
    let rx = conn.receive_stats();
    assert_eq!(rx.bytes_placed, 8192 - 52);
    assert_eq!(rx.bytes_copied_to_placement, 52 + (12_000 - 8192));
    assert_eq!(rx.bytes_staged, 0);
}

#[test]
fn a_write_goes_out_as_one_gather_list_from_the_command_buffer() {
    let target = TargetParams {
        initial_r2t: false,
        ..TargetParams::default()
    };
    let mut h = Harness::logged_in(config(), &target);
    let session = std::mem::replace(&mut h.s, Session::new(config(), h.now));
    let mut conn = Conn::new(session);
    let data = pattern(3001, 4);
    conn.session_mut()
        .submit(h.now, write_request(data.clone()))
        .unwrap();
    let (queued, wire) = send_batch(&mut conn);
    // Decode what went out and gather its payload back.
    let limits = pdu::Limits::default();
    let mut at = 0;
    let mut sent = Vec::new();
    let mut pdus = 0;
    while at < wire.len() {
        let d = pdu::decode_pdu(&wire[at..], pdu::Digests::default(), &limits)
            .unwrap()
            .unwrap();
        sent.extend_from_slice(&wire[at + d.data.start..at + d.data.end]);
        at += d.consumed;
        pdus += 1;
    }
    assert_eq!(pdus, queued);
    assert_eq!(sent, data, "immediate and unsolicited data, in order");
}
