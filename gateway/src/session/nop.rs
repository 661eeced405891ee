//! NOP-Out and NOP-In (RFC 7143 sections 11.18, 11.19): pings answered, and the target's
//! own pings to an idle initiator.
#![forbid(unsafe_code)]

use super::*;

impl TargetSession {
    pub(super) fn handle_nop_out(
        &mut self,
        _now: Instant,
        h: pdu::NopOut,
        data: &[u8],
    ) -> Result<(), TargetError> {
        if h.initiator_task_tag == RESERVED_TAG {
            // An answer to our ping (section 11.18.3); it must be immediate and takes no
            // CmdSN.
            if let Some(ping) = self.ping {
                if h.target_transfer_tag == ping.ttt {
                    self.ping = None;
                }
            }
            return Ok(());
        }
        if !self.accept_cmd_sn(h.cmd_sn, h.immediate, "NOP-Out")? {
            return Ok(());
        }
        let stat_sn = self.take_stat_sn();
        self.push(
            Header::NopIn(pdu::NopIn {
                lun: h.lun,
                initiator_task_tag: h.initiator_task_tag,
                target_transfer_tag: RESERVED_TAG,
                stat_sn,
                exp_cmd_sn: 0,
                max_cmd_sn: 0,
            }),
            // Echo the ping data (section 11.19.7); bounded by our MaxRecvDataSegmentLength
            // and to be sent within the initiator's.
            data.get(..self.params.initiator_max_recv_data_segment_length as usize)
                .unwrap_or(data)
                .to_vec(),
        );
        self.update_window();
        Ok(())
    }

    pub(super) fn send_ping(&mut self, now: Instant) {
        let ttt = self.allocate_ttt();
        self.ping = Some(Ping { ttt, sent: now });
        self.stats.pings_sent += 1;
        // A ping carries the next StatSN without taking it (section 11.19.4).
        let stat_sn = self.stat_sn;
        self.push(
            Header::NopIn(pdu::NopIn {
                lun: [0; 8],
                initiator_task_tag: RESERVED_TAG,
                target_transfer_tag: ttt,
                stat_sn,
                exp_cmd_sn: 0,
                max_cmd_sn: 0,
            }),
            Vec::new(),
        );
    }
}
