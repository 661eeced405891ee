//! Fuzzes the sans-IO initiator session with whatever a hostile target could send: the
//! input is cut into PDUs by the codec and fed to a session, first at login, then (by a
//! scripted honest login) in the full-feature phase with a read and a write in flight.
//! The session may fail the connection; it must never panic or grow without bound.
#![no_main]

use std::time::{Duration, Instant};

use datapath::pdu::{self, Digests, Header, Limits, LoginResponse, LoginStage};
use datapath::session::{
    DataDirection, Request, Session, SessionConfig, SessionState, TransmitData,
};
use libfuzzer_sys::fuzz_target;

/// Feeds every PDU the codec can cut from `bytes`, stepping the clock between them.
fn feed(session: &mut Session, mut now: Instant, mut bytes: &[u8]) {
    let limits = Limits::default();
    for _ in 0..256 {
        let Ok(Some(decoded)) = pdu::decode_pdu(bytes, Digests::default(), &limits) else {
            return;
        };
        let data = &bytes[decoded.data.clone()];
        let _ = session.handle_pdu(now, decoded.header, data);
        now += Duration::from_millis(50);
        session.handle_timeout(now);
        while let Some(t) = session.poll_transmit() {
            let payload = session.transmit_data(&t);
            if let TransmitData::CommandBuffer { len, .. } = t.data {
                assert_eq!(payload.len(), len as usize);
            }
        }
        while session.poll_event().is_some() {}
        bytes = &bytes[decoded.consumed..];
        if matches!(session.state(), SessionState::Failed | SessionState::Closed) {
            return;
        }
    }
}

/// A session that an honest target has just logged in (AuthMethod None, defaults).
fn logged_in(now: Instant) -> Option<Session> {
    let config = SessionConfig::new("iqn.2026-11.fuzz:initiator", Some("iqn.2026-11.fuzz:t".into()));
    let mut session = Session::new(config, now);
    for _ in 0..4 {
        let request = match session.poll_transmit()?.header {
            Header::LoginRequest(r) => r,
            _ => return None,
        };
        let last = request.transit && request.next_stage == LoginStage::FullFeaturePhase;
        let response = LoginResponse {
            transit: request.transit,
            continue_: false,
            current_stage: request.current_stage,
            next_stage: request.next_stage,
            version_max: 0,
            version_active: 0,
            isid: request.isid,
            tsih: if last { 1 } else { 0 },
            initiator_task_tag: request.initiator_task_tag,
            stat_sn: 0,
            exp_cmd_sn: request.cmd_sn,
            max_cmd_sn: request.cmd_sn.wrapping_add(16),
            status_class: 0,
            status_detail: 0,
        };
        let body: &[u8] = if request.current_stage == LoginStage::SecurityNegotiation {
            b"AuthMethod=None\0"
        } else {
            b""
        };
        session.handle_pdu(now, Header::LoginResponse(response), body).ok()?;
        if session.state() == SessionState::FullFeature {
            return Some(session);
        }
    }
    None
}

fuzz_target!(|bytes: &[u8]| {
    let now = Instant::now();
    let (first, rest) = bytes.split_at(bytes.len() / 2);
    // A hostile target during login.
    let mut fresh = Session::new(SessionConfig::new("iqn.2026-11.fuzz:i", None), now);
    while fresh.poll_transmit().is_some() {}
    feed(&mut fresh, now, first);

    // A hostile target in the full-feature phase, with a read and a write outstanding.
    let Some(mut session) = logged_in(now) else { return };
    for direction in [DataDirection::Read { len: 8192 }, DataDirection::Write { len: 8192 }] {
        let request = Request::raw(0, &[0x28, 0, 0, 0, 0, 0, 0, 0, 16, 0], direction, vec![0; 8192])
            .expect("10 bytes");
        let _ = session.submit(now, request);
    }
    while session.poll_transmit().is_some() {}
    feed(&mut session, now, rest);
});
