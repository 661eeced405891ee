//! Text requests and SendTargets (RFC 7143 sections 11.10, 11.11, appendix C).
#![forbid(unsafe_code)]

use super::*;
use std::sync::Arc;

impl TargetSession {
    pub(super) fn handle_text_request(
        &mut self,
        h: pdu::TextRequest,
        data: &[u8],
    ) -> Result<(), TargetError> {
        if !self.accept_cmd_sn(h.cmd_sn, h.immediate, "Text Request")? {
            return Ok(());
        }
        self.update_window();
        // A request for the rest of a long response.
        if h.target_transfer_tag != RESERVED_TAG {
            match self.pending_text.take() {
                Some(pending) if pending.ttt == h.target_transfer_tag && data.is_empty() => {
                    self.send_text_piece(pending.itt, pending.rest);
                    return Ok(());
                }
                _ => {
                    return Err(TargetError::UnknownTargetTransferTag {
                        opcode: Opcode::TextRequest,
                        itt: h.initiator_task_tag,
                        ttt: h.target_transfer_tag,
                    })
                }
            }
        }
        // A new request abandons any unfinished response (section 11.10.4).
        self.pending_text = None;
        let Some(text) = self.text_in.push(data, h.continue_)? else {
            // More request text follows: acknowledge with an empty response.
            let stat_sn = self.take_stat_sn();
            let ttt = self.allocate_ttt();
            self.push(
                Header::TextResponse(pdu::TextResponse {
                    final_pdu: false,
                    continue_: false,
                    lun: [0; 8],
                    initiator_task_tag: h.initiator_task_tag,
                    target_transfer_tag: ttt,
                    stat_sn,
                    exp_cmd_sn: 0,
                    max_cmd_sn: 0,
                }),
                Vec::new(),
            );
            return Ok(());
        };
        let limits = TextLimits {
            max_text_len: MAX_TEXT_LEN,
            ..TextLimits::default()
        };
        let pairs = datapath::text::parse_repeated_pairs(&text, &limits)?;
        let mut replies = Vec::new();
        for (key, value) in &pairs {
            match key.as_str() {
                "SendTargets" => replies.extend(self.send_targets(value)),
                _ => match self.redeclare(key, value) {
                    Some(reply) => replies.push(reply),
                    None => replies.push((key.clone(), "NotUnderstood".to_owned())),
                },
            }
        }
        let mut out = Vec::new();
        encode_pairs(&replies, &mut out);
        self.send_text_piece(h.initiator_task_tag, out);
        Ok(())
    }

    /// Sends as much of `text` as fits in one PDU; the rest waits for the initiator's
    /// next empty Text Request (C=1 and a Target Transfer Tag, section 11.11.2).
    pub(super) fn send_text_piece(&mut self, itt: Tag, mut text: Vec<u8>) {
        let max = self.params.initiator_max_recv_data_segment_length.max(512) as usize;
        let stat_sn = self.take_stat_sn();
        if text.len() <= max {
            self.push(
                Header::TextResponse(pdu::TextResponse {
                    final_pdu: true,
                    continue_: false,
                    lun: [0; 8],
                    initiator_task_tag: itt,
                    target_transfer_tag: RESERVED_TAG,
                    stat_sn,
                    exp_cmd_sn: 0,
                    max_cmd_sn: 0,
                }),
                text,
            );
            return;
        }
        let rest = text.split_off(max);
        let ttt = self.allocate_ttt();
        self.pending_text = Some(PendingText { ttt, itt, rest });
        self.push(
            Header::TextResponse(pdu::TextResponse {
                final_pdu: false,
                continue_: true,
                lun: [0; 8],
                initiator_task_tag: itt,
                target_transfer_tag: ttt,
                stat_sn,
                exp_cmd_sn: 0,
                max_cmd_sn: 0,
            }),
            text,
        );
    }

    /// SendTargets (appendix C): `All` lists every target (in a discovery session);
    /// a target name lists that one; empty lists the session's target.
    pub(super) fn send_targets(&self, value: &str) -> Vec<(String, String)> {
        let config = &self.config;
        let wanted: Vec<&TargetNode> = match value {
            "All" if self.session_type == SessionType::Discovery => {
                config.targets.iter().map(Arc::as_ref).collect()
            }
            "All" | "" => self.target().into_iter().collect(),
            name => config
                .targets
                .iter()
                .filter(|t| t.name == name)
                .map(Arc::as_ref)
                .collect(),
        };
        let mut out = Vec::new();
        for target in wanted {
            if !initiator_allowed(target, &self.initiator_name) {
                continue;
            }
            out.push(("TargetName".to_owned(), target.name.clone()));
            for portal in &config.portals {
                out.push(("TargetAddress".to_owned(), target_address(portal)));
            }
        }
        out
    }
}

/// `host:port,tpgt` with IPv6 hosts in brackets (section 13.8 / appendix C).
pub(super) fn target_address(portal: &Portal) -> String {
    match portal.addr {
        SocketAddr::V4(a) => format!("{}:{},{}", a.ip(), a.port(), portal.group_tag),
        SocketAddr::V6(a) => format!("[{}]:{},{}", a.ip(), a.port(), portal.group_tag),
    }
}
