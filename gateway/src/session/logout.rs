//! Logout (RFC 7143 sections 11.14, 11.15).
#![forbid(unsafe_code)]

use super::*;

impl TargetSession {
    pub(super) fn handle_logout(&mut self, h: pdu::LogoutRequest) -> Result<(), TargetError> {
        if !self.accept_cmd_sn(h.cmd_sn, h.immediate, "Logout Request")? {
            return Ok(());
        }
        // 0 = closed successfully, 2 = connection recovery not supported (ERL 0).
        let response = match h.reason_code {
            0 | 1 => 0,
            _ => 2,
        };
        let stat_sn = self.take_stat_sn();
        self.push(
            Header::LogoutResponse(pdu::LogoutResponse {
                response,
                initiator_task_tag: h.initiator_task_tag,
                stat_sn,
                exp_cmd_sn: 0,
                max_cmd_sn: 0,
                time2wait: 0,
                time2retain: 0,
            }),
            Vec::new(),
        );
        if response == 0 {
            tracing::info!(initiator = %self.initiator_name, reason = h.reason_code, "logout");
            self.tasks.clear();
            self.ready.clear();
            self.state = TargetState::Closed;
            self.events.push_back(TargetEvent::LoggedOut);
        }
        Ok(())
    }
}
