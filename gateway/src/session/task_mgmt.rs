//! Task Management Function Request and Response (RFC 7143 sections 11.5, 11.6): ABORT
//! TASK by its task tag and RefCmdSN (section 11.5.1), ABORT TASK SET, CLEAR TASK SET,
//! LOGICAL UNIT RESET, TARGET WARM RESET and TARGET COLD RESET (SAM-5 7.2-7.10). The
//! session aborts its own tasks; the effects on the units every nexus shares (SCSI-2
//! reservations released, unit attentions) are reported as [`TargetEvent`]s for the
//! driver to apply before the response leaves.
#![forbid(unsafe_code)]

use super::*;
use datapath::scsi::LunAddress;

impl TargetSession {
    pub(super) fn handle_task_mgmt(&mut self, h: pdu::TaskMgmtRequest) -> Result<(), TargetError> {
        if !self.accept_cmd_sn(h.cmd_sn, h.immediate, "Task Management")? {
            return Ok(());
        }
        const FUNCTION_COMPLETE: u8 = 0;
        const TASK_DOES_NOT_EXIST: u8 = 1;
        const LUN_DOES_NOT_EXIST: u8 = 2;
        const REASSIGNMENT_NOT_SUPPORTED: u8 = 4;
        const NOT_SUPPORTED: u8 = 5;
        // A single-level LUN by its number, a subsidiary LU (a bound volume, two levels)
        // by its key: what the executor and the reset event name it by.
        let field = Lun::from_field(h.lun);
        let subsidiary = match field.address() {
            Some(address @ LunAddress::Subsidiary { .. }) => Some(address.key()),
            _ => None,
        };
        let lun = field.number().or(subsidiary);
        let lun_exists = |s: &Self| match (lun, subsidiary) {
            (Some(key), Some(_)) => s.subsidiaries.as_ref().is_some_and(|d| d.contains(key)),
            (Some(n), None) => s.target().is_some_and(|t| t.luns.contains(&n)),
            (None, _) => false,
        };
        let response = match h.function {
            // ABORT TASK.
            1 => {
                if self.tasks.remove(&h.referenced_task_tag).is_some() {
                    self.drop_queued_data_in(h.referenced_task_tag);
                    FUNCTION_COMPLETE
                } else if SerialNumber(h.ref_cmd_sn) >= SerialNumber(self.exp_cmd_sn)
                    && SerialNumber(h.ref_cmd_sn) <= SerialNumber(self.max_cmd_sn)
                    && SerialNumber(h.ref_cmd_sn) < SerialNumber(h.cmd_sn)
                {
                    // Section 11.5.1 b): a command inside the window that has not
                    // arrived counts as received and aborted. On one in-order TCP
                    // connection this only happens for a CmdSN the initiator skipped.
                    FUNCTION_COMPLETE
                } else {
                    // Section 11.5.1 c): outside the window, in particular below
                    // ExpCmdSN: the command already ran and was answered, so there is
                    // nothing left to abort. Initiators (libiscsi's async abort test)
                    // rely on this to tell "completed first" from "aborted".
                    TASK_DOES_NOT_EXIST
                }
            }
            // ABORT TASK SET, CLEAR TASK SET, LOGICAL UNIT RESET.
            2 | 4 | 5 => {
                if !lun_exists(self) {
                    LUN_DOES_NOT_EXIST
                } else {
                    let aborted: Vec<Tag> = self
                        .tasks
                        .iter()
                        .filter(|(_, t)| t.lun_field == h.lun)
                        .map(|(itt, _)| *itt)
                        .collect();
                    for itt in aborted {
                        self.tasks.remove(&itt);
                        self.drop_queued_data_in(itt);
                    }
                    if let (5, Some(lun)) = (h.function, lun) {
                        self.events.push_back(TargetEvent::LogicalUnitReset { lun });
                    }
                    FUNCTION_COMPLETE
                }
            }
            // TARGET WARM RESET, TARGET COLD RESET.
            6 | 7 => {
                self.tasks.clear();
                let itts: Vec<Tag> = self.outbox_data_in_tags();
                for itt in itts {
                    self.drop_queued_data_in(itt);
                }
                self.events.push_back(TargetEvent::TargetReset {
                    cold: h.function == 7,
                });
                FUNCTION_COMPLETE
            }
            // TASK REASSIGN needs ERL 2 (section 11.5.1).
            8 => REASSIGNMENT_NOT_SUPPORTED,
            // CLEAR ACA (no ACA here) and anything else.
            _ => NOT_SUPPORTED,
        };
        tracing::info!(
            function = h.function,
            referenced = h.referenced_task_tag,
            response,
            "task management"
        );
        let stat_sn = self.take_stat_sn();
        self.push(
            Header::TaskMgmtResponse(pdu::TaskMgmtResponse {
                response,
                initiator_task_tag: h.initiator_task_tag,
                stat_sn,
                exp_cmd_sn: 0,
                max_cmd_sn: 0,
            }),
            Vec::new(),
        );
        self.update_window();
        if h.function == 7 && response == FUNCTION_COMPLETE {
            // RFC 7143 11.5.1: after a cold reset the target closes every connection;
            // this one once its response is out.
            tracing::info!(initiator = %self.initiator_name, "target cold reset: closing the session");
            self.ready.clear();
            self.state = TargetState::Closed;
        }
        Ok(())
    }

    pub(super) fn outbox_data_in_tags(&self) -> Vec<Tag> {
        self.outbox
            .iter()
            .filter_map(|o| match o {
                Outgoing::DataIn(r) => Some(r.itt),
                Outgoing::Pdu(_) | Outgoing::CommandStatus(_) => None,
            })
            .collect()
    }

    /// An aborted read sends no more data (its status, already numbered, still goes out
    /// only if the reply was complete; at ERL 0 the abort response covers it).
    pub(super) fn drop_queued_data_in(&mut self, itt: Tag) {
        self.outbox.retain(|o| match o {
            Outgoing::DataIn(r) => r.itt != itt,
            Outgoing::Pdu(_) | Outgoing::CommandStatus(_) => true,
        });
        self.recount_outbox();
        self.ready.retain(|r| r.id.0 != itt);
    }
}
