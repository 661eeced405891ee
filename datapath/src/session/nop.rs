//! NOP-Out and NOP-In, RFC 7143 sections 11.18 and 11.19.
//!
//! - A NOP-In with a Target Transfer Tag other than 0xffffffff is the target's ping: we
//!   answer with an immediate NOP-Out, ITT 0xffffffff, echoing the TTT, LUN and data.
//! - A NOP-In with ITT 0xffffffff and TTT 0xffffffff only updates the window (its StatSN
//!   is not advanced, section 11.19.4).
//! - When the target has been silent for `nop_interval`, we ping it with an immediate
//!   NOP-Out carrying a fresh ITT; the NOP-In answering it must come within
//!   `nop_timeout`, or the connection is declared failed.

use std::time::Instant;

use super::{Outgoing, Session, SessionError, Transmit, TransmitData};
use crate::pdu::{self, Header, Opcode, Tag, RESERVED_TAG};

#[derive(Debug, Clone, Copy)]
struct Ping {
    tag: Tag,
    deadline: Instant,
}

/// Our outstanding ping, if any.
#[derive(Debug, Default)]
pub(crate) struct Keepalive {
    ping: Option<Ping>,
}

impl Keepalive {
    pub(crate) fn ping_tag(&self) -> Option<Tag> {
        self.ping.map(|p| p.tag)
    }
}

impl Session {
    pub(super) fn handle_nop_in(
        &mut self,
        _now: Instant,
        h: pdu::NopIn,
        data: &[u8],
    ) -> Result<(), SessionError> {
        self.window.update(h.exp_cmd_sn, h.max_cmd_sn);
        if h.initiator_task_tag != RESERVED_TAG {
            // The answer to our ping.
            if self.keepalive.ping_tag() != Some(h.initiator_task_tag) {
                return Err(SessionError::UnknownTaskTag {
                    opcode: Opcode::NopIn,
                    tag: h.initiator_task_tag,
                });
            }
            if h.target_transfer_tag != RESERVED_TAG {
                return Err(SessionError::InvalidPdu {
                    opcode: Opcode::NopIn,
                    reason: "answer to a NOP-Out carries a Target Transfer Tag",
                });
            }
            self.stat.acknowledge(h.stat_sn);
            self.keepalive.ping = None;
            self.stats.nop_pings_answered += 1;
            return Ok(());
        }
        if h.target_transfer_tag != RESERVED_TAG {
            // The target's ping: echo its data, no longer than the target accepts.
            let max = self
                .params
                .as_ref()
                .map_or(super::LOGIN_MAX_RECV_DATA_SEGMENT_LENGTH, |p| {
                    p.target_max_recv_data_segment_length
                }) as usize;
            let echo = &data[..data.len().min(max)];
            let header = Header::NopOut(pdu::NopOut {
                immediate: true,
                lun: h.lun,
                initiator_task_tag: RESERVED_TAG,
                target_transfer_tag: h.target_transfer_tag,
                cmd_sn: self.window.peek(),
                exp_stat_sn: 0,
            });
            let data = if echo.is_empty() {
                TransmitData::None
            } else {
                TransmitData::Owned(echo.to_vec())
            };
            self.outbox
                .push_back(Outgoing::Pdu(Transmit { header, data }));
            self.stats.nop_target_pings_answered += 1;
        }
        Ok(())
    }

    pub(super) fn check_keepalive(&mut self, now: Instant) -> Result<(), SessionError> {
        if let Some(ping) = self.keepalive.ping {
            if now >= ping.deadline {
                return Err(SessionError::NopTimeout {
                    waited: self.config.nop_timeout,
                });
            }
            return Ok(());
        }
        if self.config.nop_interval.is_zero() || now < self.last_received + self.config.nop_interval
        {
            return Ok(());
        }
        let tag = self.allocate_tag();
        self.keepalive.ping = Some(Ping {
            tag,
            deadline: now + self.config.nop_timeout,
        });
        let header = Header::NopOut(pdu::NopOut {
            immediate: true,
            lun: [0; 8],
            initiator_task_tag: tag,
            target_transfer_tag: RESERVED_TAG,
            cmd_sn: self.window.peek(),
            exp_stat_sn: 0,
        });
        self.outbox.push_back(Outgoing::Pdu(Transmit {
            header,
            data: TransmitData::None,
        }));
        self.stats.nop_pings_sent += 1;
        Ok(())
    }

    pub(super) fn keepalive_deadline(&self) -> Option<Instant> {
        match self.keepalive.ping {
            Some(ping) => Some(ping.deadline),
            None if self.config.nop_interval.is_zero() => None,
            None => Some(self.last_received + self.config.nop_interval),
        }
    }
}
