//! The command window (RFC 7143 section 4.2.2.1): CmdSN checked against ExpCmdSN and
//! MaxCmdSN, and MaxCmdSN moved on as commands free their slots.
#![forbid(unsafe_code)]

use super::*;

impl TargetSession {
    /// Recomputes MaxCmdSN from the free command slots, never lowering it (section 4.2.2.1).
    /// A command holds its slot until its status has left, not only until the logical
    /// unit is done with it: an initiator that does not read its answers cannot make the
    /// target run (and buffer the data of) more than a window of commands.
    pub(super) fn update_window(&mut self) {
        let outstanding = u32::try_from(self.commands_held()).unwrap_or(u32::MAX);
        let free = self.config.cmd_window.max(1).saturating_sub(outstanding);
        let candidate = self.exp_cmd_sn.wrapping_add(free).wrapping_sub(1);
        if SerialNumber(candidate) > SerialNumber(self.max_cmd_sn) {
            self.max_cmd_sn = candidate;
        }
    }

    /// Commands that hold a slot of the window: accepted and not finished (those waiting
    /// for the logical unit are among them), or finished with their status still queued.
    pub(super) fn commands_held(&self) -> usize {
        self.tasks.len() + self.statuses_owed
    }

    /// Section 4.2.2.1: checks a PDU's CmdSN against the window. `Ok(true)` means take it
    /// (and a non-immediate one advances ExpCmdSN), `Ok(false)` means ignore it.
    pub(super) fn accept_cmd_sn(
        &mut self,
        cmd_sn: u32,
        immediate: bool,
        what: &str,
    ) -> Result<bool, TargetError> {
        if immediate {
            return Ok(true);
        }
        if cmd_sn == self.exp_cmd_sn && SerialNumber(cmd_sn) <= SerialNumber(self.max_cmd_sn) {
            self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
            self.window_violations = 0;
            return Ok(true);
        }
        self.stats.dropped_out_of_window += 1;
        self.window_violations += 1;
        tracing::warn!(
            cmd_sn,
            exp_cmd_sn = self.exp_cmd_sn,
            max_cmd_sn = self.max_cmd_sn,
            pdu = what,
            "CmdSN outside the command window: PDU ignored (RFC 7143 section 4.2.2.1)"
        );
        if self.window_violations >= MAX_WINDOW_VIOLATIONS {
            return Err(TargetError::WindowViolations {
                count: self.window_violations,
            });
        }
        Ok(false)
    }
}
