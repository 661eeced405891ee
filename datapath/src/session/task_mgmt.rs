//! Task management beyond ABORT TASK (`abort`): ABORT TASK SET, CLEAR TASK SET, LOGICAL UNIT
//! RESET, TARGET WARM RESET and TARGET COLD RESET (RFC 7143 sections 11.5.1 and 11.6; SAM-5
//! 7.3-7.10).
//!
//! [`Session::task_management`] queues the immediate request; its answer comes out of
//! [`Session::poll_task_management`] (a queue of its own beside [`super::Event`], so that
//! drivers that never send these need not know them). When the target answers "function complete", the
//! commands the function ended on its side (those issued to the LUN, or all of them for a
//! target reset) fail with [`CommandError::Aborted`]: responses on a connection come in
//! StatSN order, so an answer to any of them would have come before this one. Commands not
//! yet sent stay queued (they were never in the target's task set). After a TARGET COLD
//! RESET the target closes the connection (section 11.5.1); the session then fails as for
//! any lost connection. At most [`MAX_PENDING`] requests are in progress at once.

use std::time::Instant;

use super::error::CommandError;
use super::{Outgoing, Session, SessionState, Transmit, TransmitData};
use crate::pdu::{self, Header, LunField, Tag, RESERVED_TAG};

/// Requests in progress at once; more are refused ([`TaskManagementRejection::TooMany`]).
pub const MAX_PENDING: usize = 8;

/// The functions this module sends (RFC 7143 section 11.5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskManagementFunction {
    AbortTaskSet,
    ClearTaskSet,
    LogicalUnitReset,
    TargetWarmReset,
    TargetColdReset,
}

impl TaskManagementFunction {
    pub fn code(self) -> u8 {
        match self {
            TaskManagementFunction::AbortTaskSet => 2,
            TaskManagementFunction::ClearTaskSet => 4,
            TaskManagementFunction::LogicalUnitReset => 5,
            TaskManagementFunction::TargetWarmReset => 6,
            TaskManagementFunction::TargetColdReset => 7,
        }
    }

    /// Whether the function addresses one logical unit (the others, the whole target).
    pub fn per_lun(self) -> bool {
        matches!(
            self,
            TaskManagementFunction::AbortTaskSet
                | TaskManagementFunction::ClearTaskSet
                | TaskManagementFunction::LogicalUnitReset
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            TaskManagementFunction::AbortTaskSet => "ABORT TASK SET",
            TaskManagementFunction::ClearTaskSet => "CLEAR TASK SET",
            TaskManagementFunction::LogicalUnitReset => "LOGICAL UNIT RESET",
            TaskManagementFunction::TargetWarmReset => "TARGET WARM RESET",
            TaskManagementFunction::TargetColdReset => "TARGET COLD RESET",
        }
    }
}

/// The Response field of a Task Management Function Response (section 11.6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskManagementResponse {
    FunctionComplete,
    TaskDoesNotExist,
    LunDoesNotExist,
    TaskStillAllegiant,
    ReassignmentNotSupported,
    NotSupported,
    AuthorizationFailed,
    Rejected,
    Other(u8),
}

impl TaskManagementResponse {
    pub fn from_code(code: u8) -> TaskManagementResponse {
        match code {
            0 => TaskManagementResponse::FunctionComplete,
            1 => TaskManagementResponse::TaskDoesNotExist,
            2 => TaskManagementResponse::LunDoesNotExist,
            3 => TaskManagementResponse::TaskStillAllegiant,
            4 => TaskManagementResponse::ReassignmentNotSupported,
            5 => TaskManagementResponse::NotSupported,
            6 => TaskManagementResponse::AuthorizationFailed,
            255 => TaskManagementResponse::Rejected,
            other => TaskManagementResponse::Other(other),
        }
    }

    pub fn description(self) -> String {
        match self {
            TaskManagementResponse::FunctionComplete => "function complete".into(),
            TaskManagementResponse::TaskDoesNotExist => "task does not exist".into(),
            TaskManagementResponse::LunDoesNotExist => "LUN does not exist".into(),
            TaskManagementResponse::TaskStillAllegiant => "task still allegiant".into(),
            TaskManagementResponse::ReassignmentNotSupported => {
                "task allegiance reassignment not supported".into()
            }
            TaskManagementResponse::NotSupported => "function not supported".into(),
            TaskManagementResponse::AuthorizationFailed => "function authorization failed".into(),
            TaskManagementResponse::Rejected => "function rejected".into(),
            TaskManagementResponse::Other(code) => format!("response {code}"),
        }
    }
}

/// Names one request in progress and its [`TaskManagementOutcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskManagementId(Tag);

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskManagementOutcome {
    pub id: TaskManagementId,
    pub function: TaskManagementFunction,
    pub response: TaskManagementResponse,
    /// Commands of ours that ended aborted with it.
    pub commands_aborted: usize,
}

/// Why [`Session::task_management`] sent nothing.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TaskManagementRejection {
    #[error("the session is not in full feature phase")]
    NotLoggedIn,
    #[error("{MAX_PENDING} task management requests are in progress already")]
    TooMany,
}

/// One request in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PendingTaskManagement {
    itt: Tag,
    function: TaskManagementFunction,
    lun: LunField,
}

impl Session {
    /// Sends `function` for `lun` (ignored by the target-wide functions, sent as zero).
    pub fn task_management(
        &mut self,
        _now: Instant,
        function: TaskManagementFunction,
        lun: LunField,
    ) -> Result<TaskManagementId, TaskManagementRejection> {
        if self.state != SessionState::FullFeature {
            return Err(TaskManagementRejection::NotLoggedIn);
        }
        if self.task_mgmt.len() + self.task_mgmt_done.len() >= MAX_PENDING {
            return Err(TaskManagementRejection::TooMany);
        }
        let lun = if function.per_lun() {
            lun
        } else {
            LunField::default()
        };
        let itt = self.allocate_tag();
        self.task_mgmt
            .push(PendingTaskManagement { itt, function, lun });
        let header = Header::TaskMgmtRequest(pdu::TaskMgmtRequest {
            immediate: true,
            function: function.code(),
            lun,
            initiator_task_tag: itt,
            referenced_task_tag: RESERVED_TAG,
            // Immediate: carries the next CmdSN without taking it (section 3.2.2.1).
            cmd_sn: self.window.peek(),
            exp_stat_sn: 0,
            ref_cmd_sn: 0,
            exp_data_sn: 0,
        });
        self.outbox.push_back(Outgoing::Pdu(Transmit {
            header,
            data: TransmitData::None,
        }));
        Ok(TaskManagementId(itt))
    }

    /// The answer to one of [`Session::task_management`]'s requests; `false` when `h` is
    /// not one (the caller then looks elsewhere).
    pub(super) fn handle_task_management_response(&mut self, h: &pdu::TaskMgmtResponse) -> bool {
        let Some(at) = self
            .task_mgmt
            .iter()
            .position(|p| p.itt == h.initiator_task_tag)
        else {
            return false;
        };
        self.stat.acknowledge(h.stat_sn);
        let pending = self.task_mgmt.swap_remove(at);
        let response = TaskManagementResponse::from_code(h.response);
        let mut aborted = 0;
        if response == TaskManagementResponse::FunctionComplete {
            let ended: Vec<Tag> = self
                .tasks
                .tags_in_submission_order()
                .into_iter()
                .filter(|tag| {
                    self.tasks.get(*tag).is_some_and(|task| {
                        task.is_issued()
                            && (!pending.function.per_lun() || task.lun() == pending.lun)
                    })
                })
                .collect();
            for tag in &ended {
                self.complete_with_error(*tag, CommandError::Aborted);
                self.stats.tasks_aborted += 1;
            }
            aborted = ended.len();
        }
        tracing::info!(
            function = pending.function.name(),
            response = %response.description(),
            "task management"
        );
        // Bounded: one answer per request, at most MAX_PENDING requests at once.
        self.task_mgmt_done.push_back(TaskManagementOutcome {
            id: TaskManagementId(pending.itt),
            function: pending.function,
            response,
            commands_aborted: aborted,
        });
        true
    }

    /// The answer to a [`Session::task_management`] request, once it came.
    pub fn poll_task_management(&mut self) -> Option<TaskManagementOutcome> {
        self.task_mgmt_done.pop_front()
    }

    /// The Initiator Task Tags of the requests in progress (for tag allocation).
    pub(super) fn task_management_tags(&self) -> impl Iterator<Item = Tag> + '_ {
        self.task_mgmt.iter().map(|p| p.itt)
    }
}
