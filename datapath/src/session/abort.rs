//! ABORT TASK: the task management function that ends one command without ending the
//! connection (RFC 7143 sections 11.5 and 11.6; SAM-5 7.2).
//!
//! [`Session::abort_task`] queues a Task Management Function Request (immediate, function
//! 1, the command's LUN, its Initiator Task Tag as the Referenced Task Tag and its CmdSN
//! as RefCmdSN). The response settles it:
//! - "Function complete" (0) or "Task does not exist" (1): the target holds no such task
//!   and sends nothing more for it (responses on a connection come in StatSN order, so an
//!   answer to the command itself would have come first). The command, if still held,
//!   fails with [`CommandError::Aborted`].
//! - Any other response (not supported, rejected, ...): the command is left as it is; its
//!   own deadline (`command_timeout`) is the backstop, which fails the connection.
//!
//! A command not yet sent (waiting for the CmdSN window) is aborted locally: no PDU.
//! Aborts in progress are bounded by the commands held (one per command).

use std::time::Instant;

use super::error::{CommandError, SessionError};
use super::{Outgoing, Session, SessionState, TaskId, Transmit, TransmitData};
use crate::pdu::{self, Header, Opcode, Tag};

/// ABORT TASK, RFC 7143 section 11.5.1.
const FUNCTION_ABORT_TASK: u8 = 1;
/// Section 11.6.1.
const RESPONSE_FUNCTION_COMPLETE: u8 = 0;
const RESPONSE_TASK_DOES_NOT_EXIST: u8 = 1;

/// One ABORT TASK in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PendingAbort {
    /// The request's own Initiator Task Tag.
    pub(super) itt: Tag,
    /// The command it aborts.
    pub(super) task: Tag,
}

/// Why [`Session::abort_task`] did not start an abort.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AbortRejection {
    #[error("the session is not in full feature phase")]
    NotLoggedIn,
    #[error("no such command (it completed already)")]
    UnknownTask,
    #[error("an abort of this command is already in progress")]
    AlreadyAborting,
}

impl Session {
    /// Asks the target to abort `task` (see the module docs). `Ok` means the request is
    /// queued (or the command, not yet sent, failed at once); the command's completion
    /// ([`super::Event::CommandComplete`]) says how it ended.
    pub fn abort_task(&mut self, _now: Instant, task: TaskId) -> Result<(), AbortRejection> {
        if self.state != SessionState::FullFeature {
            return Err(AbortRejection::NotLoggedIn);
        }
        let tag = task.itt();
        let Some(command) = self.tasks.get(tag) else {
            return Err(AbortRejection::UnknownTask);
        };
        if !command.is_issued() {
            self.complete_with_error(tag, CommandError::Aborted);
            self.stats.tasks_aborted += 1;
            return Ok(());
        }
        if self.aborts.iter().any(|a| a.task == tag) {
            return Err(AbortRejection::AlreadyAborting);
        }
        let (lun, ref_cmd_sn) = (command.lun(), command.cmd_sn());
        let itt = self.allocate_tag();
        self.aborts.push(PendingAbort { itt, task: tag });
        let header = Header::TaskMgmtRequest(pdu::TaskMgmtRequest {
            immediate: true,
            function: FUNCTION_ABORT_TASK,
            lun,
            initiator_task_tag: itt,
            referenced_task_tag: tag,
            // Immediate: carries the next CmdSN without taking it (section 3.2.2.1).
            cmd_sn: self.window.peek(),
            exp_stat_sn: 0,
            ref_cmd_sn,
            exp_data_sn: 0,
        });
        self.outbox.push_back(Outgoing::Pdu(Transmit {
            header,
            data: TransmitData::None,
        }));
        self.stats.aborts_sent += 1;
        Ok(())
    }

    /// Section 11.6: the answer to one of our aborts.
    pub(super) fn handle_task_mgmt_response(
        &mut self,
        h: pdu::TaskMgmtResponse,
    ) -> Result<(), SessionError> {
        self.window.update(h.exp_cmd_sn, h.max_cmd_sn);
        if self.handle_task_management_response(&h) {
            return Ok(());
        }
        let Some(at) = self
            .aborts
            .iter()
            .position(|a| a.itt == h.initiator_task_tag)
        else {
            return Err(SessionError::UnknownTaskTag {
                opcode: Opcode::TaskMgmtResponse,
                tag: h.initiator_task_tag,
            });
        };
        self.stat.acknowledge(h.stat_sn);
        let abort = self.aborts.swap_remove(at);
        match h.response {
            RESPONSE_FUNCTION_COMPLETE | RESPONSE_TASK_DOES_NOT_EXIST => {
                if self.tasks.get(abort.task).is_some() {
                    self.complete_with_error(abort.task, CommandError::Aborted);
                    self.stats.tasks_aborted += 1;
                }
            }
            response => {
                tracing::warn!(
                    response,
                    task = abort.task,
                    "the target did not abort the task; its command timeout still runs"
                );
            }
        }
        Ok(())
    }

    /// The Initiator Task Tags of the aborts in progress (for tag allocation).
    pub(super) fn abort_tags(&self) -> impl Iterator<Item = Tag> + '_ {
        self.aborts.iter().map(|a| a.itt)
    }
}
