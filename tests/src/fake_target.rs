//! Pieces of the scripted fake targets some tests run, for behaviour no real target can be
//! told to show (a command window held shut, answers that break the protocol).

use std::io::{Read, Write};
use std::net::TcpStream;

use datapath::pdu::{Header, LoginRequest, LoginResponse, LoginStage};

/// The Login Response that accepts `request` as it stands (RFC 7143 section 11.13):
/// status success, the stages and transit the initiator asked for, numbered `stat_sn`,
/// ExpCmdSN the request's CmdSN, commands granted up to `max_cmd_sn`. The final response
/// (transit into full feature phase) gives the session `tsih`, earlier ones 0.
pub fn accept_login(
    request: &LoginRequest,
    tsih: u16,
    stat_sn: u32,
    max_cmd_sn: u32,
) -> LoginResponse {
    let last = request.transit && request.next_stage == LoginStage::FullFeaturePhase;
    LoginResponse {
        transit: request.transit,
        continue_: false,
        current_stage: request.current_stage,
        next_stage: request.next_stage,
        version_max: 0,
        version_active: 0,
        isid: request.isid,
        tsih: if last { tsih } else { 0 },
        initiator_task_tag: request.initiator_task_tag,
        stat_sn,
        exp_cmd_sn: request.cmd_sn,
        max_cmd_sn,
        status_class: 0,
        status_detail: 0,
    }
}

/// Reads PDUs from a stream, keeping what arrives beyond one PDU for the next call (an
/// initiator sends many PDUs per write). No digests, default limits.
#[derive(Debug, Default)]
pub struct PduReader {
    buf: Vec<u8>,
}

impl PduReader {
    pub fn new() -> PduReader {
        PduReader::default()
    }

    /// Bytes the caller read from the stream itself, taken before any read of `next`.
    pub fn push_received(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next PDU: its header and data segment. Bounded by the stream's read timeout
    /// and end of stream.
    pub fn next(&mut self, stream: &mut TcpStream) -> std::io::Result<(Header, Vec<u8>)> {
        let limits = datapath::pdu::Limits::default();
        let digests = datapath::pdu::Digests::default();
        loop {
            if let Ok(Some(pdu)) = datapath::pdu::decode_pdu(&self.buf, digests, &limits) {
                let data = self.buf[pdu.data.clone()].to_vec();
                self.buf.drain(..pdu.consumed);
                return Ok((pdu.header, data));
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Sends one PDU (no digests).
pub fn send_pdu(stream: &mut TcpStream, header: Header, data: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::new();
    datapath::pdu::encode_pdu(&header, data, datapath::pdu::Digests::default(), &mut out)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    stream.write_all(&out)
}

/// `key=value` pairs as a login or text data segment.
pub fn text_segment(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in pairs {
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}

/// Accepts the initiator's login on `stream` (AuthMethod=None, whatever it offers within
/// our defaults), giving the session `tsih` and granting `first_window` commands: returns
/// (the next StatSN, the next ExpCmdSN).
pub fn serve_login(
    stream: &mut TcpStream,
    reader: &mut PduReader,
    tsih: u16,
    first_window: u32,
) -> std::io::Result<(u32, u32)> {
    use datapath::text::{self, Negotiation, OperationalOffer, Role, TextLimits};
    let mut negotiation = Negotiation::new(Role::Target, OperationalOffer::default());
    let mut stat_sn = 1u32;
    loop {
        let (Header::LoginRequest(request), data) = reader.next(stream)? else {
            return Err(std::io::ErrorKind::InvalidData.into());
        };
        let exp_cmd_sn = request.cmd_sn;
        let pairs = text::parse_pairs(&data, &TextLimits::default()).unwrap_or_default();
        let last = request.transit && request.next_stage == LoginStage::FullFeaturePhase;
        let max_cmd_sn = exp_cmd_sn.wrapping_add(first_window - 1);
        let response = accept_login(&request, tsih, stat_sn, max_cmd_sn);
        let mut replies = Vec::new();
        if pairs.iter().any(|(k, _)| k == "AuthMethod") {
            replies.push(("AuthMethod".to_string(), "None".to_string()));
        }
        let operational: Vec<_> = pairs
            .into_iter()
            .filter(|(k, _)| text::is_operational_key(k))
            .collect();
        replies.extend(
            negotiation
                .handle_peer_pairs(&operational)
                .unwrap_or_default(),
        );
        let mut body = Vec::new();
        text::encode_pairs(&replies, &mut body);
        stat_sn += 1;
        send_pdu(stream, Header::LoginResponse(response), &body)?;
        if last {
            return Ok((stat_sn, exp_cmd_sn));
        }
    }
}

/// One full-feature connection of a scripted target: its stream and sequence numbers, and
/// the answers scripts give (a read's data, an Async Message, a logout, a ping). Used by
/// the Async Message tests (`async_events`, `adapter_moves`).
#[derive(Debug)]
pub struct Wire {
    pub stream: TcpStream,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    /// Commands granted beyond ExpCmdSN.
    pub window: u32,
}

impl Wire {
    /// After [`serve_login`] returned (`stat_sn`, `exp_cmd_sn`).
    pub fn new(stream: TcpStream, (stat_sn, exp_cmd_sn): (u32, u32), window: u32) -> Wire {
        Wire {
            stream,
            stat_sn,
            exp_cmd_sn,
            window,
        }
    }

    pub fn max_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn.wrapping_add(self.window)
    }

    /// Takes a SCSI Command's CmdSN into ExpCmdSN (non-immediate ones).
    pub fn take_command(&mut self, command: &datapath::pdu::ScsiCommand) {
        if !command.immediate {
            self.exp_cmd_sn = command.cmd_sn.wrapping_add(1);
        }
    }

    /// Answers read `itt` with `len` bytes of `fill` and GOOD status in one Data-In.
    pub fn answer_read(&mut self, itt: u32, len: u32, fill: u8) -> std::io::Result<()> {
        let data_in = datapath::pdu::DataIn {
            final_pdu: true,
            acknowledge: false,
            overflow: false,
            underflow: false,
            status: Some(0),
            lun: [0; 8],
            initiator_task_tag: itt,
            target_transfer_tag: datapath::pdu::RESERVED_TAG,
            stat_sn: self.stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
            data_sn: 0,
            buffer_offset: 0,
            residual_count: 0,
        };
        self.stat_sn += 1;
        let data = vec![fill; len as usize];
        send_pdu(&mut self.stream, Header::DataIn(data_in), &data)
    }

    /// Sends Async Message `event` (RFC 7143 section 11.9) with its parameters and data.
    pub fn async_message(
        &mut self,
        event: u8,
        parameter2: u16,
        parameter3: u16,
        data: &[u8],
    ) -> std::io::Result<()> {
        let message = datapath::pdu::AsyncMessage {
            lun: [0; 8],
            stat_sn: self.stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
            async_event: event,
            async_vcode: 0,
            parameter1: 0,
            parameter2,
            parameter3,
        };
        self.stat_sn += 1;
        send_pdu(&mut self.stream, Header::AsyncMessage(message), data)
    }

    /// Answers a Logout Request: success, no Time2Wait.
    pub fn answer_logout(&mut self, request: &datapath::pdu::LogoutRequest) -> std::io::Result<()> {
        let response = datapath::pdu::LogoutResponse {
            response: 0,
            initiator_task_tag: request.initiator_task_tag,
            stat_sn: self.stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
            time2wait: 0,
            time2retain: 0,
        };
        send_pdu(&mut self.stream, Header::LogoutResponse(response), &[])
    }

    /// Answers a ping that asks for an answer (its tag not the reserved one), echoing
    /// `data`; other NOP-Outs need none.
    pub fn answer_nop(&mut self, nop: &datapath::pdu::NopOut, data: &[u8]) -> std::io::Result<()> {
        if nop.initiator_task_tag == datapath::pdu::RESERVED_TAG {
            return Ok(());
        }
        let answer = datapath::pdu::NopIn {
            lun: [0; 8],
            initiator_task_tag: nop.initiator_task_tag,
            target_transfer_tag: datapath::pdu::RESERVED_TAG,
            stat_sn: self.stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
        };
        self.stat_sn += 1;
        send_pdu(&mut self.stream, Header::NopIn(answer), data)
    }
}
