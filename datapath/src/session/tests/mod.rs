//! Scripted PDU exchanges: the test plays the target, expecting the session's PDUs and
//! answering with typed headers, on a simulated clock.

mod abort;
mod bench;
mod conn;
mod failures;
mod io;
mod login;
mod ramdisk;
mod tags;
mod task_mgmt;

use std::time::{Duration, Instant};

use super::*;
use crate::pdu::{self, Header, LoginStage};
use crate::scsi::{Cdb, DataDirection as CdbDirection};
use crate::text::{encode_pairs, parse_pairs, TextLimits};

pub(super) const INITIATOR: &str = "iqn.2024-01.test:initiator";
pub(super) const TARGET: &str = "iqn.2024-01.test:target";

/// The session under test, its clock, and the target's numbering.
pub(super) struct Harness {
    pub s: Session,
    pub now: Instant,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

/// What the scripted target answers in the operational stage.
#[derive(Debug, Clone)]
pub(super) struct TargetParams {
    pub mrdsl: u32,
    pub max_burst: u32,
    pub first_burst: u32,
    pub immediate_data: bool,
    pub initial_r2t: bool,
    pub max_outstanding_r2t: u16,
    pub data_pdu_in_order: bool,
}

impl Default for TargetParams {
    fn default() -> Self {
        TargetParams {
            mrdsl: 8192,
            max_burst: 262_144,
            first_burst: 65_536,
            immediate_data: true,
            initial_r2t: true,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
        }
    }
}

pub(super) fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(super) fn text(list: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_pairs(&pairs(list), &mut out);
    out
}

pub(super) fn parse(data: &[u8]) -> Vec<(String, String)> {
    parse_pairs(data, &TextLimits::default()).expect("session sent malformed text")
}

pub(super) fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

pub(super) fn config() -> SessionConfig {
    let mut c = SessionConfig::new(INITIATOR, Some(TARGET.to_string()));
    c.nop_interval = Duration::ZERO;
    c
}

/// The target's answers to the initiator's operational proposals, by the result
/// functions of section 13 applied to `t`.
pub(super) fn operational_answers(
    proposals: &[(String, String)],
    t: &TargetParams,
) -> Vec<(String, String)> {
    let num = |v: &str| v.parse::<u32>().unwrap();
    let yes = |v: &str| v == "Yes";
    let b = |v: bool| {
        if v {
            "Yes".to_string()
        } else {
            "No".to_string()
        }
    };
    proposals
        .iter()
        .map(|(k, v)| {
            let answer = match k.as_str() {
                "HeaderDigest" | "DataDigest" => v.split(',').next().unwrap().to_string(),
                "MaxRecvDataSegmentLength" => t.mrdsl.to_string(),
                "MaxBurstLength" => num(v).min(t.max_burst).to_string(),
                "FirstBurstLength" => num(v).min(t.first_burst).to_string(),
                "MaxOutstandingR2T" => num(v).min(u32::from(t.max_outstanding_r2t)).to_string(),
                "ImmediateData" => b(yes(v) && t.immediate_data),
                "InitialR2T" => b(yes(v) || t.initial_r2t),
                "DataPDUInOrder" => b(yes(v) || t.data_pdu_in_order),
                _ => v.clone(),
            };
            (k.clone(), answer)
        })
        .collect()
}

impl Harness {
    pub fn new(config: SessionConfig) -> Harness {
        let now = Instant::now();
        Harness {
            s: Session::new(config, now),
            now,
            stat_sn: 100,
            exp_cmd_sn: 1,
            max_cmd_sn: 32,
        }
    }

    /// A session logged in with AuthMethod=None and the given target answers.
    pub fn logged_in(config: SessionConfig, target: &TargetParams) -> Harness {
        let mut h = Harness::new(config);
        h.login_none(target);
        h
    }

    pub fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// The next PDU the session sends, after a trip through the codec (encode with the
    /// session's digests, decode, compare), so every script also checks the wire form.
    pub fn sent(&mut self) -> Option<(Header, Vec<u8>)> {
        let t = self.s.poll_transmit()?;
        let data = self.s.transmit_data(&t).to_vec();
        let header = codec_round_trip(&t.header, &data, self.s.digests());
        assert_eq!(header, t.header, "header changed through the codec");
        Some((header, data))
    }

    #[track_caller]
    pub fn expect(&mut self) -> (Header, Vec<u8>) {
        self.sent().expect("the session sent nothing")
    }

    #[track_caller]
    pub fn expect_none(&mut self) {
        if let Some((h, _)) = self.sent() {
            panic!("unexpected PDU from the session: {h:?}");
        }
    }

    /// Hands a target PDU to the session, after a trip through the codec.
    pub fn deliver(&mut self, header: Header, data: &[u8]) -> Result<(), SessionError> {
        let header = codec_round_trip(&header, data, self.s.digests());
        self.s.handle_pdu(self.now, header, data)
    }

    pub fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.s.poll_event()).collect()
    }

    pub fn timeout(&mut self) {
        self.s.handle_timeout(self.now);
    }

    #[track_caller]
    pub fn expect_login(&mut self) -> (pdu::LoginRequest, Vec<(String, String)>) {
        match self.expect() {
            (Header::LoginRequest(r), data) => (r, parse(&data)),
            (other, _) => panic!("expected a Login Request, got {other:?}"),
        }
    }

    pub fn login_response(
        &mut self,
        req: &pdu::LoginRequest,
        transit: bool,
        next_stage: LoginStage,
        tsih: u16,
    ) -> pdu::LoginResponse {
        let stat_sn = self.stat_sn;
        self.stat_sn += 1;
        pdu::LoginResponse {
            transit,
            continue_: false,
            current_stage: req.current_stage,
            next_stage,
            version_max: 0,
            version_active: 0,
            isid: req.isid,
            tsih,
            initiator_task_tag: req.initiator_task_tag,
            stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn,
            status_class: 0,
            status_detail: 0,
        }
    }

    /// Runs the operational stage from the request that opens it to full feature phase.
    pub fn finish_operational(
        &mut self,
        req: pdu::LoginRequest,
        proposals: &[(String, String)],
        t: &TargetParams,
    ) {
        assert_eq!(req.current_stage, LoginStage::LoginOperationalNegotiation);
        assert!(req.transit);
        assert_eq!(req.next_stage, LoginStage::FullFeaturePhase);
        let answers = operational_answers(proposals, t);
        let mut body = Vec::new();
        encode_pairs(&answers, &mut body);
        let resp = self.login_response(&req, true, LoginStage::FullFeaturePhase, 0x1234);
        self.deliver(Header::LoginResponse(resp), &body).unwrap();
        assert_eq!(self.s.state(), SessionState::FullFeature);
        assert_eq!(self.events(), vec![Event::LoginComplete]);
    }

    pub fn login_none(&mut self, t: &TargetParams) {
        let (req, keys) = self.expect_login();
        assert_eq!(get(&keys, "AuthMethod"), Some("None"));
        let resp = self.login_response(&req, true, LoginStage::LoginOperationalNegotiation, 0);
        self.deliver(
            Header::LoginResponse(resp),
            &text(&[("AuthMethod", "None"), ("TargetPortalGroupTag", "1")]),
        )
        .unwrap();
        let (req, proposals) = self.expect_login();
        self.finish_operational(req, &proposals, t);
    }

    /// Next StatSN for a status-carrying PDU.
    pub fn next_stat(&mut self) -> u32 {
        let sn = self.stat_sn;
        self.stat_sn += 1;
        sn
    }

    pub fn nop_in(&self, itt: u32, ttt: u32) -> Header {
        Header::NopIn(pdu::NopIn {
            lun: [0; 8],
            initiator_task_tag: itt,
            target_transfer_tag: ttt,
            stat_sn: self.stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn,
        })
    }

    pub fn scsi_response(&mut self, itt: u32, status: u8) -> pdu::ScsiResponse {
        pdu::ScsiResponse {
            bidi_read_overflow: false,
            bidi_read_underflow: false,
            overflow: false,
            underflow: false,
            response: 0,
            status,
            initiator_task_tag: itt,
            snack_tag: 0,
            stat_sn: self.next_stat(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn,
            exp_data_sn: 0,
            bidi_read_residual_count: 0,
            residual_count: 0,
        }
    }

    pub fn data_in(
        &mut self,
        itt: u32,
        data_sn: u32,
        offset: u32,
        status: Option<u8>,
    ) -> pdu::DataIn {
        let stat_sn = if status.is_some() {
            self.next_stat()
        } else {
            self.stat_sn
        };
        pdu::DataIn {
            final_pdu: status.is_some(),
            acknowledge: false,
            overflow: false,
            underflow: false,
            status,
            lun: [0; 8],
            initiator_task_tag: itt,
            target_transfer_tag: pdu::RESERVED_TAG,
            stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn,
            data_sn,
            buffer_offset: offset,
            residual_count: 0,
        }
    }

    pub fn r2t(&self, itt: u32, ttt: u32, r2t_sn: u32, offset: u32, len: u32) -> Header {
        Header::R2t(pdu::R2t {
            lun: [0; 8],
            initiator_task_tag: itt,
            target_transfer_tag: ttt,
            stat_sn: self.stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn,
            r2t_sn,
            buffer_offset: offset,
            desired_data_transfer_length: len,
        })
    }

    #[track_caller]
    pub fn expect_command(&mut self) -> (pdu::ScsiCommand, Vec<u8>) {
        match self.expect() {
            (Header::ScsiCommand(c), data) => (c, data),
            (other, _) => panic!("expected a SCSI Command, got {other:?}"),
        }
    }

    #[track_caller]
    pub fn expect_data_out(&mut self) -> (pdu::DataOut, Vec<u8>) {
        match self.expect() {
            (Header::DataOut(d), data) => (d, data),
            (other, _) => panic!("expected a Data-Out, got {other:?}"),
        }
    }

    /// The single completion among the events.
    #[track_caller]
    pub fn completion(&mut self) -> (TaskId, Result<CommandOutcome, CommandFailure>) {
        let mut events = self.events();
        assert_eq!(events.len(), 1, "expected one completion, got {events:?}");
        match events.remove(0) {
            Event::CommandComplete(id, result) => (id, result),
            other => panic!("expected a completion, got {other:?}"),
        }
    }
}

/// Encodes and decodes one PDU with the project's codec.
#[track_caller]
pub(super) fn codec_round_trip(header: &Header, data: &[u8], digests: pdu::Digests) -> Header {
    let mut wire = Vec::new();
    pdu::encode_pdu(header, data, digests, &mut wire).expect("codec refused to encode");
    let limits = pdu::Limits {
        max_data_segment_length: 1 << 24,
        ..pdu::Limits::default()
    };
    let decoded = pdu::decode_pdu(&wire, digests, &limits)
        .expect("codec refused to decode")
        .expect("whole PDU");
    assert_eq!(decoded.consumed, wire.len());
    assert_eq!(&wire[decoded.data], data);
    decoded.header
}

/// A READ(10) of one block whose transfer length is `len` (the harness's target answers
/// whatever length the request declares).
pub(super) fn read_request(len: u32) -> Request {
    let cdb = Cdb::from_bytes(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], CdbDirection::Read(len))
        .expect("10 bytes");
    Request::new(0, cdb, vec![0; len as usize], 0)
}

/// A WRITE(10) of one block carrying `data`.
pub(super) fn write_request(data: Vec<u8>) -> Request {
    let len = data.len() as u32;
    let cdb = Cdb::from_bytes(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], CdbDirection::Write(len))
        .expect("10 bytes");
    Request::new(0, cdb, data, 0)
}

pub(super) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
