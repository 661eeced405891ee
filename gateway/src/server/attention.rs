//! Unit attention conditions of one I_T nexus (SAM-5 5.14, SPC-4 5.14 and 6.27), for the
//! changes the control plane makes while hosts are logged in:
//! - REPORTED LUNS DATA HAS CHANGED (3Fh/0Eh) when a LUN appears or goes, established on
//!   every LUN the nexus can reach after the change (as LIO does), and cleared on all of
//!   them by REPORT LUNS (SPC-4 6.33);
//! - CAPACITY DATA HAS CHANGED (2Ah/09h) on a LUN whose capacity changed.
//!
//! - REPORTED LUNS DATA HAS CHANGED once to the nexus (not per LUN) when the volumes bound
//!   for its host through the target's protocol endpoints change: with thousands of
//!   subsidiary LUs a condition per LU would be thousands of reports; the host learns
//!   of the change from the first command after it, whatever LU it addresses, and
//!   rescans with REPORT LUNS (which clears it).
//!
//! A pending condition is reported once, as CHECK CONDITION with UNIT ATTENTION, to the
//! next command for that LUN other than INQUIRY, REPORT LUNS and REQUEST SENSE (SAM-5
//! 5.14), and then cleared. One connection is one nexus here (MaxConnections=1). No I/O.

use crate::disk::sense::Check;

use super::LunInfo;

const UNIT_ATTENTION: u8 = 0x6;
pub(crate) const REPORTED_LUNS_DATA_HAS_CHANGED: (u8, u8) = (0x3f, 0x0e);
pub(crate) const CAPACITY_DATA_HAS_CHANGED: (u8, u8) = (0x2a, 0x09);

const INQUIRY: u8 = 0x12;
const REQUEST_SENSE: u8 = 0x03;
const REPORT_LUNS: u8 = 0xa0;

/// Conditions per LUN are few (at most the two kinds above): a LUN holds each kind once.
const KINDS_PER_LUN: usize = 2;

/// The pending unit attentions of one nexus.
#[derive(Debug, Default)]
pub(crate) struct Attentions {
    /// (LUN, ASC/ASCQ), oldest first. Bounded: at most [`KINDS_PER_LUN`] per LUN of the
    /// target, since establishing a condition already pending does nothing.
    pending: Vec<(u64, (u8, u8))>,
    /// REPORTED LUNS DATA HAS CHANGED for the whole nexus (bindings changed).
    bindings_changed: bool,
}

impl Attentions {
    /// Establishes the conditions a change of the target's LUNs from `old` to `new`
    /// calls for; true when the inventory changed (REPORTED LUNS DATA HAS CHANGED).
    pub(crate) fn handle_change(&mut self, old: &[LunInfo], new: &[LunInfo]) -> bool {
        let same_inventory = old.len() == new.len()
            && old
                .iter()
                .zip(new)
                .all(|(a, b)| a.lun == b.lun && a.unit_id == b.unit_id);
        if !same_inventory {
            // Units gone take their conditions with them.
            self.pending
                .retain(|(lun, _)| new.iter().any(|info| info.lun == *lun));
            for info in new {
                self.establish(info.lun, REPORTED_LUNS_DATA_HAS_CHANGED);
            }
        }
        for info in new {
            let grown = old
                .iter()
                .any(|o| o.unit_id == info.unit_id && o.lun == info.lun && o.blocks != info.blocks);
            if grown {
                self.establish(info.lun, CAPACITY_DATA_HAS_CHANGED);
            }
        }
        !same_inventory
    }

    /// The volumes bound for this nexus's host changed: the next command (any LU)
    /// reports REPORTED LUNS DATA HAS CHANGED, once.
    pub(crate) fn handle_bindings_change(&mut self) {
        self.bindings_changed = true;
    }

    fn establish(&mut self, lun: u64, asc: (u8, u8)) {
        if !self.pending.contains(&(lun, asc)) {
            debug_assert!(self.pending.iter().filter(|(l, _)| *l == lun).count() < KINDS_PER_LUN);
            self.pending.push((lun, asc));
        }
    }

    /// The sense data of the unit attention this command must end with instead of
    /// running, if any (the condition is then cleared).
    pub(crate) fn take_for(&mut self, lun: u64, cdb: &[u8]) -> Option<Vec<u8>> {
        if self.pending.is_empty() && !self.bindings_changed {
            return None;
        }
        match cdb.first().copied() {
            Some(INQUIRY | REQUEST_SENSE) | None => None,
            Some(REPORT_LUNS) => {
                self.pending
                    .retain(|(_, asc)| *asc != REPORTED_LUNS_DATA_HAS_CHANGED);
                self.bindings_changed = false;
                None
            }
            Some(_) if self.bindings_changed => {
                self.bindings_changed = false;
                // The same condition pending per LUN would be a second report of it.
                self.pending
                    .retain(|(_, asc)| *asc != REPORTED_LUNS_DATA_HAS_CHANGED);
                Some(Check::new(UNIT_ATTENTION, REPORTED_LUNS_DATA_HAS_CHANGED).to_fixed_sense())
            }
            Some(_) => {
                let at = self.pending.iter().position(|(l, _)| *l == lun)?;
                let (_, asc) = self.pending.remove(at);
                Some(Check::new(UNIT_ATTENTION, asc).to_fixed_sense())
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn pending(&self) -> &[(u64, (u8, u8))] {
        &self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(lun: u64, unit_id: u64, blocks: u64) -> LunInfo {
        LunInfo {
            lun,
            unit_id,
            blocks,
        }
    }

    const READ10: [u8; 10] = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];

    #[test]
    fn a_new_lun_is_announced_once_on_every_lun_and_report_luns_clears_it() {
        let mut ua = Attentions::default();
        let old = [info(0, 1, 100)];
        let new = [info(0, 1, 100), info(1, 2, 100)];
        ua.handle_change(&old, &new);
        assert_eq!(ua.pending().len(), 2);
        // INQUIRY neither reports nor clears.
        assert_eq!(ua.take_for(0, &[INQUIRY, 0, 0, 0, 36, 0]), None);
        let sense = ua.take_for(0, &READ10).expect("unit attention on LUN 0");
        assert_eq!((sense[2], sense[12], sense[13]), (0x6, 0x3f, 0x0e));
        assert_eq!(ua.take_for(0, &READ10), None, "reported once");
        // REPORT LUNS clears what LUN 1 still had.
        assert_eq!(ua.take_for(0, &[REPORT_LUNS; 12]), None);
        assert_eq!(ua.take_for(1, &READ10), None);
    }

    #[test]
    fn a_lun_gone_is_announced_on_those_left_and_its_own_conditions_go() {
        let mut ua = Attentions::default();
        ua.handle_change(&[info(0, 1, 8)], &[info(0, 1, 8), info(5, 2, 8)]);
        ua.handle_change(&[info(0, 1, 8), info(5, 2, 8)], &[info(0, 1, 8)]);
        assert_eq!(ua.pending(), &[(0, REPORTED_LUNS_DATA_HAS_CHANGED)]);
    }

    #[test]
    fn a_grown_lun_gets_capacity_data_has_changed_and_others_nothing() {
        let mut ua = Attentions::default();
        ua.handle_change(
            &[info(0, 1, 8), info(1, 2, 8)],
            &[info(0, 1, 8), info(1, 2, 16)],
        );
        assert_eq!(ua.pending(), &[(1, CAPACITY_DATA_HAS_CHANGED)]);
        let sense = ua.take_for(1, &READ10).unwrap();
        assert_eq!((sense[2], sense[12], sense[13]), (0x6, 0x2a, 0x09));
        // A unit replaced at the same number is a new inventory, not a capacity change.
        ua.handle_change(&[info(1, 2, 16)], &[info(1, 3, 32)]);
        assert_eq!(ua.pending(), &[(1, REPORTED_LUNS_DATA_HAS_CHANGED)]);
    }

    #[test]
    fn a_bindings_change_is_reported_once_to_the_nexus_on_any_lun() {
        let mut ua = Attentions::default();
        ua.handle_bindings_change();
        ua.handle_bindings_change();
        assert_eq!(ua.take_for(0, &[INQUIRY, 0, 0, 0, 36, 0]), None);
        // A subsidiary LU's key: the report goes to whichever LU the command addresses.
        let sense = ua.take_for(1 << 32, &READ10).expect("reported");
        assert_eq!((sense[2], sense[12], sense[13]), (0x6, 0x3f, 0x0e));
        assert_eq!(ua.take_for(1 << 32, &READ10), None, "once");
        assert_eq!(ua.take_for(0, &READ10), None, "once per nexus, not per LU");
        // REPORT LUNS clears it before any other command sees it.
        ua.handle_bindings_change();
        assert_eq!(ua.take_for(0, &[REPORT_LUNS; 12]), None);
        assert_eq!(ua.take_for(0, &READ10), None);
    }

    #[test]
    fn no_change_establishes_nothing() {
        let mut ua = Attentions::default();
        ua.handle_change(&[info(0, 1, 8)], &[info(0, 1, 8)]);
        assert!(ua.pending().is_empty());
    }
}
