//! Discovery: `SendTargets=All` over Text Request/Response, RFC 7143 sections 11.10,
//! 11.11 and appendix C (SendTargets operation).
//!
//! A long response comes in several Text Responses: F=0 with a Target Transfer Tag means
//! "more to come", answered by an empty Text Request echoing the TTT; C=1 means a pair is
//! split across PDUs. The whole response is bounded in bytes, pairs and PDUs.
//!
//! A SendTargets response repeats keys (`TargetAddress` once per portal, `TargetName`
//! once per target), so it is parsed with `text::parse_repeated_pairs`.

use super::{
    DiscoveredTarget, Event, Outgoing, Session, SessionError, SessionState, Transmit, TransmitData,
};
use crate::pdu::{self, Header, Opcode, Tag, RESERVED_TAG};
use crate::text::{parse_repeated_pairs, TextAccumulator, TextLimits};

/// Most bytes of one SendTargets response.
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// Most Text Response PDUs for one SendTargets.
const MAX_RESPONSE_PDUS: u32 = 1024;
/// Most key=value pairs in one SendTargets response.
const MAX_RESPONSE_PAIRS: usize = 65536;
/// The well-known iSCSI port, for addresses given without one (section 13.8 of RFC 7143's
/// key definitions: TargetAddress=domainname[:port][,portal-group-tag]).
const DEFAULT_PORT: u16 = 3260;
/// The portal group tag assumed when a TargetAddress omits it.
const DEFAULT_PORTAL_GROUP_TAG: u16 = 1;

/// One text exchange in progress: SendTargets, or the renegotiation a target asks for with
/// Async Message event 4.
pub(crate) struct Discovery {
    itt: Tag,
    accumulator: TextAccumulator,
    pdus: u32,
    pairs: Vec<(String, String)>,
    purpose: TextPurpose,
}

/// What a text exchange is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextPurpose {
    SendTargets,
    /// Section 11.9.1, event 4: the initiator answers with a Text Request (ours declares
    /// our MaxRecvDataSegmentLength again, the one key both sides may change in full
    /// feature phase) and takes what the target declares back.
    Renegotiate,
}

impl Discovery {
    /// The exchange and its first Text Request (immediate, so it needs no window).
    pub(crate) fn start(itt: Tag, cmd_sn: u32) -> (Discovery, Transmit) {
        Discovery::open(
            itt,
            cmd_sn,
            TextPurpose::SendTargets,
            b"SendTargets=All\0".to_vec(),
        )
    }

    /// A renegotiation's exchange (event 4), declaring `our_max_recv`.
    pub(crate) fn renegotiate(itt: Tag, cmd_sn: u32, our_max_recv: u32) -> (Discovery, Transmit) {
        let text = format!("MaxRecvDataSegmentLength={our_max_recv}\0").into_bytes();
        Discovery::open(itt, cmd_sn, TextPurpose::Renegotiate, text)
    }

    fn open(itt: Tag, cmd_sn: u32, purpose: TextPurpose, text: Vec<u8>) -> (Discovery, Transmit) {
        let header = Header::TextRequest(pdu::TextRequest {
            immediate: true,
            final_pdu: true,
            continue_: false,
            lun: [0; 8],
            initiator_task_tag: itt,
            target_transfer_tag: RESERVED_TAG,
            cmd_sn,
            exp_stat_sn: 0,
        });
        let discovery = Discovery {
            itt,
            accumulator: TextAccumulator::new(MAX_RESPONSE_BYTES),
            pdus: 0,
            pairs: Vec::new(),
            purpose,
        };
        (
            discovery,
            Transmit {
                header,
                data: TransmitData::Owned(text),
            },
        )
    }

    pub(crate) fn itt(&self) -> Tag {
        self.itt
    }
}

/// Parses one whole SendTargets text (repeated keys allowed) and appends its pairs.
pub(crate) fn split_repeated_pairs(
    text: &[u8],
    out: &mut Vec<(String, String)>,
    max_pairs: usize,
) -> Result<(), SessionError> {
    let limits = TextLimits {
        max_text_len: MAX_RESPONSE_BYTES,
        max_pairs: max_pairs.saturating_sub(out.len()),
        ..TextLimits::default()
    };
    out.extend(parse_repeated_pairs(text, &limits)?);
    Ok(())
}

/// Groups `TargetName` / `TargetAddress` pairs into targets; other keys (TargetAlias) are
/// skipped.
pub(crate) fn group_targets(
    pairs: Vec<(String, String)>,
) -> Result<Vec<DiscoveredTarget>, SessionError> {
    let mut targets: Vec<DiscoveredTarget> = Vec::new();
    for (key, value) in pairs {
        match key.as_str() {
            "TargetName" => targets.push(DiscoveredTarget {
                name: value,
                addresses: Vec::new(),
            }),
            "TargetAddress" => {
                let Some(target) = targets.last_mut() else {
                    return Err(SessionError::InvalidSendTargets(format!(
                        "TargetAddress={value} before any TargetName"
                    )));
                };
                target.addresses.push(parse_target_address(&value)?);
            }
            _ => {}
        }
    }
    Ok(targets)
}

/// `host[:port][,tpgt]` to (`host:port`, tpgt). IPv6 literals are bracketed.
pub(crate) fn parse_target_address(value: &str) -> Result<(String, u16), SessionError> {
    let bad = || SessionError::InvalidSendTargets(format!("TargetAddress={value}"));
    let (address, tpgt) = match value.rsplit_once(',') {
        Some((address, tag)) => (address, tag.parse::<u16>().map_err(|_| bad())?),
        None => (value, DEFAULT_PORTAL_GROUP_TAG),
    };
    let host_port = if let Some(rest) = address.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        if host.is_empty() {
            return Err(bad());
        }
        match after {
            "" => format!("[{host}]:{DEFAULT_PORT}"),
            _ => {
                let port = after.strip_prefix(':').ok_or_else(bad)?;
                port.parse::<u16>().map_err(|_| bad())?;
                address.to_string()
            }
        }
    } else if address.matches(':').count() > 1 {
        // An IPv6 literal without brackets and so without a port.
        format!("[{address}]:{DEFAULT_PORT}")
    } else if let Some((host, port)) = address.split_once(':') {
        if host.is_empty() {
            return Err(bad());
        }
        port.parse::<u16>().map_err(|_| bad())?;
        address.to_string()
    } else if address.is_empty() {
        return Err(bad());
    } else {
        format!("{address}:{DEFAULT_PORT}")
    };
    Ok((host_port, tpgt))
}

impl Session {
    /// Event 4: starts the renegotiation, unless a text exchange is already pending (which
    /// section 11.9.1 accepts as the answer).
    pub(super) fn start_renegotiation(&mut self) {
        if self.discovery.is_some() || self.state != SessionState::FullFeature {
            return;
        }
        let ours = self.config.offer.max_recv_data_segment_length;
        let itt = self.allocate_tag();
        let (exchange, request) = Discovery::renegotiate(itt, self.window.peek(), ours);
        self.discovery = Some(exchange);
        self.outbox.push_back(Outgoing::Pdu(request));
    }

    /// The target's answer to a renegotiation: a MaxRecvDataSegmentLength it declares
    /// bounds what we send from now on; other keys are reported, not applied.
    fn renegotiated(&mut self, pairs: Vec<(String, String)>) -> Result<(), SessionError> {
        for (key, value) in &pairs {
            if key != "MaxRecvDataSegmentLength" {
                continue;
            }
            let length = value
                .parse::<u32>()
                .ok()
                .filter(|n| (512..=16_777_215).contains(n))
                .ok_or(SessionError::TextProtocol(
                    "renegotiated MaxRecvDataSegmentLength is not from 512 to 2^24-1",
                ))?;
            if let Some(params) = self.params.as_mut() {
                params.target_max_recv_data_segment_length = length;
            }
        }
        tracing::info!(keys = ?pairs, "renegotiated at the target's request");
        self.events.push_back(Event::Renegotiated(pairs));
        Ok(())
    }

    /// Section 11.11.
    pub(super) fn handle_text_response(
        &mut self,
        h: pdu::TextResponse,
        data: &[u8],
    ) -> Result<(), SessionError> {
        self.window.update(h.exp_cmd_sn, h.max_cmd_sn);
        let Some(discovery) = self
            .discovery
            .as_mut()
            .filter(|d| d.itt == h.initiator_task_tag)
        else {
            return Err(SessionError::UnknownTaskTag {
                opcode: Opcode::TextResponse,
                tag: h.initiator_task_tag,
            });
        };
        self.stat.acknowledge(h.stat_sn);
        discovery.pdus += 1;
        if discovery.pdus > MAX_RESPONSE_PDUS {
            return Err(SessionError::TextResponseTooLong {
                max: MAX_RESPONSE_PDUS,
            });
        }
        if h.final_pdu && h.continue_ {
            return Err(SessionError::TextProtocol("F and C bits both set"));
        }
        if let Some(text) = discovery.accumulator.push(data, h.continue_)? {
            split_repeated_pairs(&text, &mut discovery.pairs, MAX_RESPONSE_PAIRS)?;
        }
        if h.final_pdu {
            let pairs = std::mem::take(&mut discovery.pairs);
            let purpose = discovery.purpose;
            self.discovery = None;
            match purpose {
                TextPurpose::SendTargets => {
                    let targets = group_targets(pairs)?;
                    self.events.push_back(Event::TargetsDiscovered(targets));
                }
                TextPurpose::Renegotiate => self.renegotiated(pairs)?,
            }
            self.maybe_send_logout();
            return Ok(());
        }
        if h.target_transfer_tag == RESERVED_TAG {
            return Err(SessionError::TextProtocol(
                "F=0 without a Target Transfer Tag to continue with",
            ));
        }
        let itt = discovery.itt;
        let header = Header::TextRequest(pdu::TextRequest {
            immediate: true,
            final_pdu: true,
            continue_: false,
            lun: [0; 8],
            initiator_task_tag: itt,
            target_transfer_tag: h.target_transfer_tag,
            cmd_sn: self.window.peek(),
            exp_stat_sn: 0,
        });
        self.outbox.push_back(Outgoing::Pdu(Transmit {
            header,
            data: TransmitData::None,
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalised() {
        let ok = |v: &str| parse_target_address(v).unwrap();
        assert_eq!(ok("10.0.0.1:3261,2"), ("10.0.0.1:3261".into(), 2));
        assert_eq!(ok("10.0.0.1,7"), ("10.0.0.1:3260".into(), 7));
        assert_eq!(ok("[::1]:3260,1"), ("[::1]:3260".into(), 1));
        assert_eq!(ok("[fe80::1],3"), ("[fe80::1]:3260".into(), 3));
        assert_eq!(ok("fe80::1,3"), ("[fe80::1]:3260".into(), 3));
        assert_eq!(ok("host.example"), ("host.example:3260".into(), 1));
        for bad in [
            "", ",1", "h:x,1", "h:1,x", "[::1", "[]:1,1", "[::1]x,1", ":3260,1",
        ] {
            assert!(parse_target_address(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn repeated_keys_group_into_targets() {
        let text = b"TargetName=iqn.a\0TargetAddress=1.1.1.1:3260,1\0TargetAddress=[::1]:3260,1\0\
TargetName=iqn.b\0TargetAlias=b\0TargetAddress=2.2.2.2:3260,2\0\0\0";
        let mut pairs = Vec::new();
        split_repeated_pairs(text, &mut pairs, 100).unwrap();
        let targets = group_targets(pairs).unwrap();
        assert_eq!(targets.len(), 2);
        assert_eq!(
            targets[0].addresses,
            vec![("1.1.1.1:3260".into(), 1), ("[::1]:3260".into(), 1)]
        );
        assert_eq!(
            targets[1],
            DiscoveredTarget {
                name: "iqn.b".into(),
                addresses: vec![("2.2.2.2:3260".into(), 2)]
            }
        );
    }

    #[test]
    fn malformed_send_targets_are_errors() {
        let mut pairs = Vec::new();
        assert!(split_repeated_pairs(b"TargetName=x", &mut pairs, 10).is_err());
        assert!(split_repeated_pairs(b"A=1\0\0B=2\0", &mut Vec::new(), 10).is_err());
        assert!(split_repeated_pairs(b"A=1\0B=2\0C=3\0", &mut Vec::new(), 2).is_err());
        assert!(group_targets(vec![("TargetAddress".into(), "1.1.1.1,1".into())]).is_err());
    }
}
