//! The target session against the real initiator session of `datapath`, on a simulated
//! clock, every PDU through the codec; plus scripted PDUs for what an initiator of ours
//! would never send.

mod scripted;

use std::sync::Arc;
use std::time::{Duration, Instant};

use datapath::pdu::{self, Digests, Header, Limits};
use datapath::session::{
    ChapConfig, CommandOutcome, DataDirection, Event, Request, Session, SessionConfig, SessionState,
};

use super::*;

pub(crate) const TARGET: &str = "iqn.2026-11.test:disk";
pub(super) const OTHER_TARGET: &str = "iqn.2026-11.test:other";
pub(super) const INITIATOR: &str = "iqn.2026-11.test:host";
pub(super) const BLOCK: usize = 512;
pub(super) const BLOCKS: usize = 2048;

/// A stand-in logical unit: READ(10), WRITE(10) and TEST UNIT READY on a RAM buffer.
pub(super) struct RamLu {
    pub disk: Vec<u8>,
}

impl RamLu {
    pub fn new() -> RamLu {
        RamLu {
            disk: vec![0; BLOCK * BLOCKS],
        }
    }

    pub fn execute(&mut self, req: &CommandRequest) -> CommandResult {
        let cdb = &req.cdb;
        let lba = u32::from_be_bytes([cdb[2], cdb[3], cdb[4], cdb[5]]) as usize;
        let blocks = u16::from_be_bytes([cdb[7], cdb[8]]) as usize;
        let range = lba * BLOCK..(lba + blocks) * BLOCK;
        match cdb[0] {
            0x28 if range.end <= self.disk.len() => CommandResult {
                status: 0,
                sense: Vec::new(),
                data_in: self.disk[range].to_vec(),
                data_out_wanted: None,
            },
            0x2a if range.end <= self.disk.len() && req.data_out.len() == range.len() => {
                self.disk[range].copy_from_slice(&req.data_out);
                CommandResult::default()
            }
            0x00 => CommandResult::default(),
            _ => CommandResult {
                status: 2,
                sense: vec![0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x21, 0, 0, 0, 0, 0],
                data_in: Vec::new(),
                data_out_wanted: None,
            },
        }
    }
}

pub(super) fn node(name: &str) -> TargetNode {
    TargetNode {
        name: name.to_owned(),
        alias: None,
        luns: vec![0],
        chap: None,
        mutual_chap: None,
        allowed_initiators: None,
        max_transfer_bytes: 1 << 20,
    }
}

pub(super) fn target_config(nodes: Vec<TargetNode>) -> TargetSessionConfig {
    let mut config = TargetSessionConfig::new(
        nodes,
        vec![
            Portal {
                addr: "127.0.0.1:3260".parse().unwrap(),
                group_tag: 1,
            },
            Portal {
                addr: "[::1]:3261".parse().unwrap(),
                group_tag: 2,
            },
        ],
    );
    config.cmd_window = 8;
    config.nop_interval = Duration::from_secs(5);
    config.nop_timeout = Duration::from_secs(5);
    config
}

pub(super) fn conn_params() -> ConnectionParams {
    ConnectionParams {
        tsih: 7,
        chap_challenge: (0..16).map(|i| i * 7 + 3).collect(),
        initial_stat_sn: 100,
        portal_group_tag: 1,
        via_virtual_portal: false,
    }
}

pub(super) fn initiator(target: Option<&str>) -> SessionConfig {
    let mut config = SessionConfig::new(INITIATOR, target.map(str::to_owned));
    config.chap_challenge = vec![0x42; 16];
    config
}

/// A session logged in to [`TARGET`] through the security and operational stages, with
/// `keys` offered in the latter (for the layers that drive a session).
pub(crate) fn logged_in_session(keys: &[(&str, &str)]) -> TargetSession {
    let now = Instant::now();
    let mut config = target_config(vec![node(TARGET)]);
    // InitialR2T is Yes if either side says so.
    config.offer.initial_r2t = false;
    let mut target = TargetSession::new(Arc::new(config), conn_params(), now);
    let login = |csg, nsg, cmd_sn| {
        Header::LoginRequest(pdu::LoginRequest {
            transit: true,
            continue_: false,
            current_stage: csg,
            next_stage: nsg,
            version_max: 0,
            version_min: 0,
            isid: [0x80, 0, 0, 0, 0, 9],
            tsih: 0,
            initiator_task_tag: 1,
            cid: 0,
            cmd_sn,
            exp_stat_sn: 0,
        })
    };
    let pairs = |list: &[(&str, &str)]| {
        let pairs: Vec<(String, String)> = list
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut out = Vec::new();
        datapath::text::encode_pairs(&pairs, &mut out);
        out
    };
    let security = pairs(&[
        ("InitiatorName", INITIATOR),
        ("SessionType", "Normal"),
        ("TargetName", TARGET),
        ("AuthMethod", "None"),
    ]);
    use pdu::LoginStage::{FullFeaturePhase, LoginOperationalNegotiation, SecurityNegotiation};
    target
        .handle_pdu(
            now,
            login(SecurityNegotiation, LoginOperationalNegotiation, 10),
            &security,
        )
        .expect("security stage");
    target
        .handle_pdu(
            now,
            login(LoginOperationalNegotiation, FullFeaturePhase, 10),
            &pairs(keys),
        )
        .expect("operational stage");
    // The target proposes keys of its own; the initiator's answers take their values.
    let mut proposals = Vec::new();
    while let Some(t) = target.poll_transmit() {
        proposals = t.data().to_vec();
    }
    let answers: Vec<(String, String)> =
        datapath::text::parse_pairs(&proposals, &TextLimits::default())
            .expect("login text")
            .into_iter()
            .filter(|(k, _)| k != "MaxRecvDataSegmentLength" && !keys.iter().any(|(o, _)| o == k))
            .collect();
    let mut answer_text = Vec::new();
    datapath::text::encode_pairs(&answers, &mut answer_text);
    target
        .handle_pdu(
            now,
            login(LoginOperationalNegotiation, FullFeaturePhase, 10),
            &answer_text,
        )
        .expect("operational answers");
    while target.poll_transmit().is_some() {}
    assert_eq!(target.state(), TargetState::FullFeature);
    target
}

/// Moves one PDU through the codec, as the wire would.
fn wire(header: &Header, data: &[u8], digests: Digests) -> (Header, Vec<u8>) {
    let mut bytes = Vec::new();
    pdu::encode_pdu(header, data, digests, &mut bytes).expect("encode");
    let limits = Limits {
        max_data_segment_length: 1 << 24,
        max_ahs_length: 1024,
    };
    let decoded = pdu::decode_pdu(&bytes, digests, &limits)
        .expect("decode")
        .expect("whole PDU");
    assert_eq!(decoded.consumed, bytes.len());
    (decoded.header, bytes[decoded.data].to_vec())
}

/// An initiator session and a target session joined by an in-memory wire.
pub(super) struct Pair {
    pub init: Session,
    pub target: TargetSession,
    pub lu: RamLu,
    pub now: Instant,
    /// Every PDU the target sent, in order.
    pub target_log: Vec<(Header, usize)>,
    pub target_error: Option<TargetError>,
    pub events: Vec<Event>,
}

impl Pair {
    pub fn new(target_config: TargetSessionConfig, init_config: SessionConfig) -> Pair {
        let now = Instant::now();
        Pair {
            init: Session::new(init_config, now),
            target: TargetSession::new(Arc::new(target_config), conn_params(), now),
            lu: RamLu::new(),
            now,
            target_log: Vec::new(),
            target_error: None,
            events: Vec::new(),
        }
    }

    /// Runs until neither side has anything to say.
    pub fn pump(&mut self) {
        for _ in 0..100_000 {
            let mut moved = false;
            while let Some(t) = self.init.poll_transmit() {
                moved = true;
                let digests = self.init.digests();
                let (h, d) = wire(&t.header, self.init.transmit_data(&t), digests);
                if self.target_error.is_none() {
                    if let Err(e) = self.target.handle_pdu(self.now, h, &d) {
                        self.target_error = Some(e);
                    }
                }
            }
            while let Some(cmd) = self.target.poll_command() {
                moved = true;
                let result = self.lu.execute(&cmd);
                self.target.complete_command(cmd.id, result);
            }
            while let Some(t) = self.target.poll_transmit() {
                moved = true;
                let (h, d) = wire(&t.header, t.data(), t.digests);
                self.target_log.push((h.clone(), d.len()));
                if !matches!(
                    self.init.state(),
                    SessionState::Closed | SessionState::Failed
                ) {
                    let _ = self.init.handle_pdu(self.now, h, &d);
                }
            }
            while let Some(e) = self.init.poll_event() {
                self.events.push(e);
            }
            if !moved {
                return;
            }
        }
        panic!("pump did not settle");
    }

    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        if let Err(e) = self.target.handle_timeout(self.now) {
            self.target_error = Some(e);
        }
        self.init.handle_timeout(self.now);
        self.pump();
    }

    pub fn logged_in(target_config: TargetSessionConfig, init_config: SessionConfig) -> Pair {
        let mut pair = Pair::new(target_config, init_config);
        pair.pump();
        assert!(
            pair.events.contains(&Event::LoginComplete),
            "login failed: {:?} / {:?}",
            pair.events,
            pair.target_error
        );
        assert_eq!(pair.target.state(), TargetState::FullFeature);
        pair.events.clear();
        pair
    }

    pub fn run(
        &mut self,
        cdb: Vec<u8>,
        direction: DataDirection,
        buffer: Vec<u8>,
    ) -> CommandOutcome {
        let request = Request::raw(0, &cdb, direction, buffer).expect("1 to 260 bytes");
        let task = self.init.submit(self.now, request).expect("submit");
        self.pump();
        let position = self
            .events
            .iter()
            .position(|e| matches!(e, Event::CommandComplete(t, _) if *t == task))
            .unwrap_or_else(|| panic!("no completion: {:?} {:?}", self.events, self.target_error));
        match self.events.remove(position) {
            Event::CommandComplete(_, Ok(outcome)) => outcome,
            other => panic!("command failed: {other:?}"),
        }
    }

    pub fn login_failure(&self) -> Option<(u8, u8)> {
        self.events.iter().find_map(|e| match e {
            Event::LoginFailed {
                status_class,
                status_detail,
                ..
            } => Some((*status_class, *status_detail)),
            _ => None,
        })
    }
}

pub(super) fn rw10(opcode: u8, lba: u32, blocks: u16) -> Vec<u8> {
    let mut cdb = vec![0u8; 10];
    cdb[0] = opcode;
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    cdb
}

fn chap_node(mutual: bool) -> TargetNode {
    TargetNode {
        chap: Some(ChapCredentials {
            user: "alice".into(),
            secret: b"secret-of-alice".to_vec(),
        }),
        mutual_chap: mutual.then(|| ChapCredentials {
            user: "disk".into(),
            secret: b"secret-of-the-disk".to_vec(),
        }),
        ..node(TARGET)
    }
}

fn chap_initiator(secret: &[u8], mutual: Option<&[u8]>) -> SessionConfig {
    let mut config = initiator(Some(TARGET));
    config.chap = Some(ChapConfig {
        user: "alice".into(),
        secret: secret.to_vec(),
        mutual: mutual.map(|s| ("disk".to_owned(), s.to_vec())),
    });
    config
}

#[test]
fn login_without_authentication_reports_portal_group_and_tsih() {
    let pair = Pair::logged_in(target_config(vec![node(TARGET)]), initiator(Some(TARGET)));
    assert_eq!(pair.init.target_info().portal_group_tag, Some(1));
    assert_eq!(pair.init.tsih(), 7);
    let params = pair.init.params().expect("params");
    assert_eq!(params.target_max_recv_data_segment_length, 262_144);
    assert_eq!(pair.target.initiator_name(), INITIATOR);
}

#[test]
fn login_with_chap_and_mutual_chap() {
    Pair::logged_in(
        target_config(vec![chap_node(false)]),
        chap_initiator(b"secret-of-alice", None),
    );
    Pair::logged_in(
        target_config(vec![chap_node(true)]),
        chap_initiator(b"secret-of-alice", Some(b"secret-of-the-disk")),
    );
}

#[test]
fn wrong_chap_secret_is_authentication_failure() {
    let mut pair = Pair::new(
        target_config(vec![chap_node(false)]),
        chap_initiator(b"not-the-secret!", None),
    );
    pair.pump();
    assert_eq!(pair.login_failure(), Some((0x02, 0x01)));
    assert!(matches!(
        pair.target_error,
        Some(TargetError::LoginRefused {
            class: 2,
            detail: 1,
            ..
        })
    ));
    assert_eq!(pair.target.state(), TargetState::Closed);
}

#[test]
fn mutual_chap_with_wrong_target_secret_fails_at_the_initiator() {
    let mut pair = Pair::new(
        target_config(vec![chap_node(true)]),
        chap_initiator(b"secret-of-alice", Some(b"another-secret")),
    );
    pair.pump();
    assert!(!pair.events.contains(&Event::LoginComplete));
    assert!(pair
        .events
        .iter()
        .any(|e| matches!(e, Event::ConnectionFailed(_))));
}

#[test]
fn chap_required_but_initiator_offers_none() {
    let mut pair = Pair::new(
        target_config(vec![chap_node(false)]),
        initiator(Some(TARGET)),
    );
    pair.pump();
    assert_eq!(pair.login_failure(), Some((0x02, 0x01)));
}

#[test]
fn unknown_target_is_not_found() {
    let mut pair = Pair::new(
        target_config(vec![node(TARGET)]),
        initiator(Some("iqn.2026-11.test:nobody")),
    );
    pair.pump();
    assert_eq!(pair.login_failure(), Some((0x02, 0x03)));
}

#[test]
fn initiator_outside_the_acl_is_told_the_target_does_not_exist() {
    // Hidden from it in SendTargets, and answered as a missing target: 0x0203, not 0x0202.
    let mut restricted = node(TARGET);
    restricted.allowed_initiators = Some(vec!["iqn.2026-11.test:someone-else".into()]);
    restricted.alias = Some("secret alias".into());
    let mut pair = Pair::new(target_config(vec![restricted]), initiator(Some(TARGET)));
    pair.pump();
    assert_eq!(pair.login_failure(), Some((0x02, 0x03)));

    let mut allowed = node(TARGET);
    allowed.allowed_initiators = Some(vec![INITIATOR.to_uppercase()]);
    Pair::logged_in(target_config(vec![allowed]), initiator(Some(TARGET)));
}

#[test]
fn the_acl_is_checked_only_after_chap_so_it_cannot_be_probed_without_the_secret() {
    let restricted = |allowed: &str| {
        let mut node = chap_node(false);
        node.allowed_initiators = Some(vec![allowed.to_owned()]);
        node
    };
    // Without the secret, an allowed and a refused initiator name get the same answer.
    for allowed in [INITIATOR, "iqn.2026-11.test:someone-else"] {
        let mut pair = Pair::new(
            target_config(vec![restricted(allowed)]),
            chap_initiator(b"not-the-secret!", None),
        );
        pair.pump();
        assert_eq!(pair.login_failure(), Some((0x02, 0x01)), "ACL {allowed}");
    }
    // With the secret, outside the ACL: not found.
    let mut pair = Pair::new(
        target_config(vec![restricted("iqn.2026-11.test:someone-else")]),
        chap_initiator(b"secret-of-alice", None),
    );
    pair.pump();
    assert_eq!(pair.login_failure(), Some((0x02, 0x03)));
    // With the secret, inside the ACL: logged in.
    Pair::logged_in(
        target_config(vec![restricted(INITIATOR)]),
        chap_initiator(b"secret-of-alice", None),
    );
}

#[test]
fn discovery_lists_every_target_and_portal() {
    let mut hidden = node("iqn.2026-11.test:hidden");
    hidden.allowed_initiators = Some(vec![]);
    let mut pair = Pair::logged_in(
        target_config(vec![node(TARGET), node(OTHER_TARGET), hidden]),
        initiator(None),
    );
    pair.init.send_targets(pair.now).unwrap();
    pair.pump();
    let targets = pair
        .events
        .iter()
        .find_map(|e| match e {
            Event::TargetsDiscovered(t) => Some(t.clone()),
            _ => None,
        })
        .expect("targets");
    let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, [TARGET, OTHER_TARGET]);
    assert_eq!(
        targets[0].addresses,
        [
            ("127.0.0.1:3260".to_owned(), 1),
            ("[::1]:3261".to_owned(), 2)
        ]
    );
}

#[test]
fn read_is_split_into_data_in_pdus_by_mrdsl_and_burst() {
    let mut init = initiator(Some(TARGET));
    init.offer.max_recv_data_segment_length = 4096;
    init.offer.max_burst_length = 16384;
    let mut pair = Pair::logged_in(target_config(vec![node(TARGET)]), init);
    for (i, byte) in pair.lu.disk.iter_mut().enumerate() {
        *byte = (i * 31 % 251) as u8;
    }
    pair.target_log.clear();
    let outcome = pair.run(
        rw10(0x28, 8, 64),
        DataDirection::Read { len: 32768 },
        vec![0; 32768],
    );
    assert_eq!(outcome.status, 0);
    assert_eq!(outcome.buffer[..], pair.lu.disk[8 * BLOCK..72 * BLOCK]);
    let data_ins: Vec<&pdu::DataIn> = pair
        .target_log
        .iter()
        .filter_map(|(h, _)| match h {
            Header::DataIn(d) => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(data_ins.len(), 8);
    assert!(pair
        .target_log
        .iter()
        .all(|(h, len)| !matches!(h, Header::DataIn(_)) || *len <= 4096));
    // F at the end of each 16 KiB sequence; status only in the last.
    let finals: Vec<u32> = data_ins
        .iter()
        .filter(|d| d.final_pdu)
        .map(|d| d.data_sn)
        .collect();
    assert_eq!(finals, [3, 7]);
    assert_eq!(data_ins.iter().filter(|d| d.status.is_some()).count(), 1);
    assert_eq!(data_ins.last().unwrap().status, Some(0));
    assert!(!pair
        .target_log
        .iter()
        .any(|(h, _)| matches!(h, Header::ScsiResponse(_))));
}

#[test]
fn short_read_reports_underflow() {
    let mut pair = Pair::logged_in(target_config(vec![node(TARGET)]), initiator(Some(TARGET)));
    let outcome = pair.run(
        rw10(0x28, 0, 1),
        DataDirection::Read { len: 4096 },
        vec![0; 4096],
    );
    assert_eq!(
        outcome.residual,
        datapath::session::Residual::Underflow(4096 - 512)
    );
}

#[test]
fn write_with_immediate_unsolicited_and_solicited_data() {
    let mut init = initiator(Some(TARGET));
    init.offer.initial_r2t = false;
    init.offer.immediate_data = true;
    init.offer.first_burst_length = 16384;
    init.offer.max_burst_length = 16384;
    init.offer.max_recv_data_segment_length = 8192;
    let mut target = target_config(vec![node(TARGET)]);
    target.offer.max_recv_data_segment_length = 4096;
    target.offer.initial_r2t = false;
    let mut pair = Pair::logged_in(target, init);
    let params = pair.init.params().unwrap().clone();
    assert!(!params.initial_r2t && params.immediate_data);
    assert_eq!(params.first_burst_length, 16384);
    let data: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 253) as u8).collect();
    pair.target_log.clear();
    let outcome = pair.run(
        rw10(0x2a, 100, 128),
        DataDirection::Write { len: 65536 },
        data.clone(),
    );
    assert_eq!(outcome.status, 0);
    assert_eq!(pair.lu.disk[100 * BLOCK..228 * BLOCK], data[..]);
    let r2ts: Vec<&pdu::R2t> = pair
        .target_log
        .iter()
        .filter_map(|(h, _)| match h {
            Header::R2t(r) => Some(r),
            _ => None,
        })
        .collect();
    // 16 KiB unsolicited (4 KiB immediate + 12 KiB Data-Out), then 48 KiB in 16 KiB R2Ts.
    assert_eq!(r2ts.len(), 3);
    assert_eq!(r2ts[0].buffer_offset, 16384);
    assert!(r2ts.iter().all(|r| r.desired_data_transfer_length == 16384));
    assert_eq!(
        pair.target.stats().bytes_written,
        65536,
        "immediate data counts too"
    );
    // Read it back through the target.
    let back = pair.run(
        rw10(0x28, 100, 128),
        DataDirection::Read { len: 65536 },
        vec![0; 65536],
    );
    assert_eq!(back.buffer, data);
}

#[test]
fn write_with_initial_r2t_is_all_solicited() {
    let mut init = initiator(Some(TARGET));
    init.offer.initial_r2t = true;
    init.offer.immediate_data = false;
    let mut pair = Pair::logged_in(target_config(vec![node(TARGET)]), init);
    let data = vec![0xa5; 8192];
    pair.target_log.clear();
    let outcome = pair.run(
        rw10(0x2a, 0, 16),
        DataDirection::Write { len: 8192 },
        data.clone(),
    );
    assert_eq!(outcome.status, 0);
    assert_eq!(pair.lu.disk[..8192], data[..]);
    assert_eq!(pair.target.stats().r2ts, 1);
}

#[test]
fn check_condition_carries_sense() {
    let mut pair = Pair::logged_in(target_config(vec![node(TARGET)]), initiator(Some(TARGET)));
    let outcome = pair.run(
        vec![0x12, 0, 0, 0, 36, 0],
        DataDirection::Read { len: 36 },
        vec![0; 36],
    );
    assert_eq!(
        outcome.status,
        datapath::scsi::sense::status::CHECK_CONDITION
    );
    let sense = outcome.sense.expect("sense");
    assert_eq!(sense[2], 5);
    assert_eq!(sense[12], 0x21);
}

#[test]
fn many_commands_keep_the_window_open() {
    let mut pair = Pair::logged_in(target_config(vec![node(TARGET)]), initiator(Some(TARGET)));
    for i in 0..40u32 {
        let outcome = pair.run(
            rw10(0x28, i, 1),
            DataDirection::Read { len: 512 },
            vec![0; 512],
        );
        assert_eq!(outcome.status, 0);
    }
    assert_eq!(pair.target.outstanding_commands(), 0);
}

#[test]
fn idle_initiator_is_pinged_and_its_answer_keeps_the_connection() {
    let mut init = initiator(Some(TARGET));
    init.nop_interval = Duration::ZERO;
    let mut pair = Pair::logged_in(target_config(vec![node(TARGET)]), init);
    pair.target_log.clear();
    pair.advance(Duration::from_secs(6));
    assert!(pair
        .target_log
        .iter()
        .any(|(h, _)| matches!(h, Header::NopIn(n) if n.initiator_task_tag == pdu::RESERVED_TAG)));
    pair.advance(Duration::from_secs(6));
    assert!(pair.target_error.is_none(), "{:?}", pair.target_error);
    assert_eq!(pair.target.state(), TargetState::FullFeature);
}

#[test]
fn logout_closes_the_session() {
    let mut pair = Pair::logged_in(target_config(vec![node(TARGET)]), initiator(Some(TARGET)));
    pair.init.logout(pair.now);
    pair.pump();
    assert!(pair.events.contains(&Event::LogoutComplete));
    assert_eq!(pair.target.state(), TargetState::Closed);
    assert_eq!(
        pair.target.poll_event(),
        Some(TargetEvent::LoggedIn {
            initiator_name: INITIATOR.into(),
            isid: [0x80, 0, 0, 0, 0, 1],
            target_name: Some(TARGET.into()),
            tsih: 7,
        })
    );
    assert_eq!(pair.target.poll_event(), Some(TargetEvent::LoggedOut));
}

#[test]
fn digests_are_used_after_login() {
    let mut init = initiator(Some(TARGET));
    init.offer.header_digests = vec![datapath::text::DigestChoice::Crc32c];
    init.offer.data_digests = vec![datapath::text::DigestChoice::Crc32c];
    let mut pair = Pair::logged_in(target_config(vec![node(TARGET)]), init);
    assert!(pair.target.digests().header && pair.target.digests().data);
    let outcome = pair.run(
        rw10(0x28, 0, 4),
        DataDirection::Read { len: 2048 },
        vec![0; 2048],
    );
    assert_eq!(outcome.status, 0);
}
