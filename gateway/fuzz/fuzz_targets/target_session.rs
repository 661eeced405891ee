//! Fuzzes the sans-IO target session and the SCSI disk emulation behind it with what a
//! hostile initiator could send: the input is cut into PDUs by the codec (malformed ones go
//! to `handle_malformed_pdu`), once from the first byte of a connection and once after an
//! honest login, and every SCSI command the session accepts runs on a RAM LUN.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use datapath::pdu::{self, Limits};
use datapath::session::{Session, SessionConfig};
use gateway::server::{build_luns, LunExecutor, TargetNodeConfig};
use gateway::session::{
    ConnectionParams, Portal, TargetNode, TargetSession, TargetSessionConfig, TargetState,
};
use libfuzzer_sys::fuzz_target;

const TARGET: &str = "iqn.2026-11.fuzz:target";

fn session(now: Instant) -> TargetSession {
    let node = TargetNode {
        name: TARGET.into(),
        alias: None,
        luns: vec![0],
        chap: None,
        mutual_chap: None,
        allowed_initiators: None,
        max_transfer_bytes: 1 << 20,
    };
    let portal = Portal {
        addr: "127.0.0.1:3260".parse().expect("literal address"),
        group_tag: 1,
    };
    let config = TargetSessionConfig::new(vec![node], vec![portal]);
    let params = ConnectionParams {
        tsih: 1,
        chap_challenge: vec![7; 16],
        initial_stat_sn: 1,
        portal_group_tag: 1,
        via_virtual_portal: false,
    };
    TargetSession::new(Arc::new(config), params, now)
}

/// Runs every queued command and drains every output, as a server would.
fn drain(target: &mut TargetSession, luns: &dyn LunExecutor) {
    for _ in 0..64 {
        let Some(command) = target.poll_command() else { break };
        let nexus = gateway::disk::Nexus {
            initiator_name: target.initiator_name(),
            isid: target.isid(),
        };
        let result = luns.execute(
            nexus,
            command.lun,
            &command.cdb,
            &command.data_out,
            command.expected_data_in_len,
        );
        target.complete_command(command.id, result);
    }
    while let Some(t) = target.poll_transmit() {
        let _ = t.data();
    }
    while target.poll_event().is_some() {}
}

fn feed(target: &mut TargetSession, luns: &dyn LunExecutor, mut now: Instant, mut bytes: &[u8]) {
    for _ in 0..256 {
        let limits = Limits {
            max_data_segment_length: target.max_recv_data_segment_length(),
            ..Limits::default()
        };
        let result = match pdu::decode_pdu(bytes, target.digests(), &limits) {
            Ok(None) => return,
            Ok(Some(decoded)) => {
                let data = &bytes[decoded.data.clone()];
                let result = target.handle_pdu(now, decoded.header, data);
                bytes = &bytes[decoded.consumed..];
                result.map(|_| ())
            }
            Err(error) => {
                let bhs = &bytes[..bytes.len().min(pdu::BHS_LEN)];
                let _ = target.handle_malformed_pdu(now, bhs, error);
                return;
            }
        };
        drain(target, luns);
        now += Duration::from_millis(50);
        let timed_out = target.handle_timeout(now);
        if result.is_err() || timed_out.is_err() {
            return;
        }
    }
}

/// Logs in with our own initiator session (AuthMethod None), PDUs passed by hand.
fn honest_login(target: &mut TargetSession, now: Instant) {
    let config = SessionConfig::new("iqn.2026-11.fuzz:initiator", Some(TARGET.to_string()));
    let mut initiator = Session::new(config, now);
    for _ in 0..16 {
        while let Some(t) = initiator.poll_transmit() {
            let data = initiator.transmit_data(&t).to_vec();
            let _ = target.handle_pdu(now, t.header, &data);
        }
        let mut answered = false;
        while let Some(t) = target.poll_transmit() {
            let _ = initiator.handle_pdu(now, t.header.clone(), t.data());
            answered = true;
        }
        if target.state() == TargetState::FullFeature || !answered {
            return;
        }
    }
}

fuzz_target!(|bytes: &[u8]| {
    let now = Instant::now();
    let node = TargetNodeConfig::new(TARGET, vec![(0, "ram:4M".into())]);
    let Ok(luns) = build_luns(&node, 1) else { return };
    let (first, rest) = bytes.split_at(bytes.len() / 2);

    let mut fresh = session(now);
    feed(&mut fresh, luns.as_ref(), now, first);

    let mut logged_in = session(now);
    honest_login(&mut logged_in, now);
    // Otherwise the second half would only ever test the login again.
    assert_eq!(logged_in.state(), TargetState::FullFeature);
    feed(&mut logged_in, luns.as_ref(), now, rest);
});
