//! Command numbering and the command window, RFC 7143 section 4.2.2.1, and status
//! numbering (ExpStatSN), section 4.2.2.2. Sequence numbers compare with RFC 1982 serial
//! arithmetic ([`SerialNumber`]).
//!
//! The target opens the window with MaxCmdSN: a non-immediate command may go out when its
//! CmdSN is at most MaxCmdSN. A window of zero (MaxCmdSN = ExpCmdSN - 1) holds commands
//! back. Immediate PDUs carry the next CmdSN but do not consume it.

use crate::pdu::SerialNumber;

#[derive(Debug, Clone)]
pub(crate) struct CmdWindow {
    /// The CmdSN the next non-immediate command will carry.
    next_cmd_sn: u32,
    exp_cmd_sn: u32,
    max_cmd_sn: u32,
}

impl CmdWindow {
    /// Before the login completes the window is the one command the login numbers.
    pub(crate) fn new(initial_cmd_sn: u32) -> CmdWindow {
        CmdWindow {
            next_cmd_sn: initial_cmd_sn,
            exp_cmd_sn: initial_cmd_sn,
            max_cmd_sn: initial_cmd_sn,
        }
    }

    /// Section 4.2.2.1: ignore both numbers when MaxCmdSN < ExpCmdSN - 1; otherwise take
    /// each only when it is newer than ours.
    pub(crate) fn update(&mut self, exp_cmd_sn: u32, max_cmd_sn: u32) {
        if SerialNumber(max_cmd_sn) < SerialNumber(exp_cmd_sn.wrapping_sub(1)) {
            return;
        }
        if SerialNumber(exp_cmd_sn) > SerialNumber(self.exp_cmd_sn) {
            self.exp_cmd_sn = exp_cmd_sn;
        }
        if SerialNumber(max_cmd_sn) > SerialNumber(self.max_cmd_sn) {
            self.max_cmd_sn = max_cmd_sn;
        }
    }

    /// Takes the window from the Login Response that ends the login, where it is set
    /// for the first time (still subject to the sanity rule).
    pub(crate) fn reset_from_login(&mut self, exp_cmd_sn: u32, max_cmd_sn: u32) {
        if SerialNumber(max_cmd_sn) < SerialNumber(exp_cmd_sn.wrapping_sub(1)) {
            return;
        }
        self.exp_cmd_sn = exp_cmd_sn;
        self.max_cmd_sn = max_cmd_sn;
    }

    /// True when a non-immediate command may go out now.
    pub(crate) fn is_open(&self) -> bool {
        matches!(
            SerialNumber(self.next_cmd_sn).partial_cmp(&SerialNumber(self.max_cmd_sn)),
            Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
        )
    }

    /// The CmdSN for an immediate PDU (not consumed).
    pub(crate) fn peek(&self) -> u32 {
        self.next_cmd_sn
    }

    /// Consumes a CmdSN for a non-immediate command.
    pub(crate) fn take(&mut self) -> u32 {
        let sn = self.next_cmd_sn;
        self.next_cmd_sn = sn.wrapping_add(1);
        sn
    }

    #[cfg(test)]
    pub(crate) fn exp_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn
    }

    #[cfg(test)]
    pub(crate) fn max_cmd_sn(&self) -> u32 {
        self.max_cmd_sn
    }
}

/// ExpStatSN: one past the newest StatSN seen on a PDU that carries a status.
#[derive(Debug, Clone, Default)]
pub(crate) struct StatWindow {
    exp_stat_sn: u32,
}

impl StatWindow {
    /// The first Login Response sets the starting StatSN (section 11.13.3).
    pub(crate) fn reset(&mut self, stat_sn: u32) {
        self.exp_stat_sn = stat_sn.wrapping_add(1);
    }

    /// A status numbered `stat_sn` arrived; older numbers never move ExpStatSN back.
    pub(crate) fn acknowledge(&mut self, stat_sn: u32) {
        if SerialNumber(stat_sn) >= SerialNumber(self.exp_stat_sn) {
            self.exp_stat_sn = stat_sn.wrapping_add(1);
        }
    }

    pub(crate) fn exp_stat_sn(&self) -> u32 {
        self.exp_stat_sn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_window_holds_then_opens() {
        let mut w = CmdWindow::new(10);
        w.reset_from_login(10, 9);
        assert!(!w.is_open(), "MaxCmdSN = ExpCmdSN - 1 is a zero window");
        w.update(10, 11);
        assert!(w.is_open());
        assert_eq!(w.take(), 10);
        assert_eq!(w.take(), 11);
        assert!(!w.is_open());
    }

    #[test]
    fn ignores_stale_and_insane_updates() {
        let mut w = CmdWindow::new(100);
        w.reset_from_login(100, 110);
        w.update(100, 105); // not newer
        assert_eq!(w.max_cmd_sn(), 110);
        w.update(120, 50); // MaxCmdSN < ExpCmdSN - 1: ignore both
        assert_eq!((w.exp_cmd_sn(), w.max_cmd_sn()), (100, 110));
        w.update(101, 120);
        assert_eq!((w.exp_cmd_sn(), w.max_cmd_sn()), (101, 120));
    }

    #[test]
    fn window_works_across_wrap() {
        let mut w = CmdWindow::new(u32::MAX);
        w.reset_from_login(u32::MAX, 1);
        assert_eq!(w.take(), u32::MAX);
        assert_eq!(w.take(), 0);
        assert_eq!(w.take(), 1);
        assert!(!w.is_open());
    }

    #[test]
    fn stat_sn_never_goes_back() {
        let mut s = StatWindow::default();
        s.reset(u32::MAX);
        assert_eq!(s.exp_stat_sn(), 0);
        s.acknowledge(0);
        assert_eq!(s.exp_stat_sn(), 1);
        s.acknowledge(u32::MAX);
        assert_eq!(s.exp_stat_sn(), 1);
    }
}
