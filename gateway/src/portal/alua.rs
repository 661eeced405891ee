//! The ALUA state of each target port group this gateway knows (SPC-4 5.15): its own
//! group (its portal group tag; one target port whose relative port identifier is the
//! same number) and, for a LU that several gateway processes export, the groups of the
//! others, so REPORT TARGET PORT GROUPS describes the whole array. A fixed table of
//! atomics: the per-command check is one load, and a change takes no lock.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use datapath::scsi::alua::{self, AccessState, PortGroup};

use crate::disk::sense::Check;

/// Port groups one gateway describes at most.
pub const MAX_GROUPS: usize = 16;

/// IMPLICIT TRANSITION TIME reported (seconds): a state change here is immediate.
const TRANSITION_TIME_S: u8 = 1;

/// Group ids are stored +1 so that 0 marks a free slot.
#[derive(Debug, Default)]
struct Slot {
    id_plus_one: AtomicU32,
    state: AtomicU8,
    /// STATUS CODE of the last change (2 = implicit, by the array).
    status: AtomicU8,
}

/// The table (see the module docs).
#[derive(Debug)]
pub struct AluaGroups {
    own: u16,
    slots: [Slot; MAX_GROUPS],
}

/// Why a state could not be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AluaError {
    #[error("target port group {0}: at most {MAX_GROUPS} groups are described")]
    Full(u16),
    #[error("target port group 0 is reserved; use 1 to 65535")]
    Zero,
}

impl AluaGroups {
    /// The own group `own`, active/optimized.
    pub fn new(own: u16) -> AluaGroups {
        let groups = AluaGroups {
            own,
            slots: Default::default(),
        };
        let _ = groups.set(own, AccessState::ActiveOptimized);
        groups
    }

    pub fn own_group(&self) -> u16 {
        self.own
    }

    /// The own group's state: the one commands through this gateway meet.
    pub fn own_state(&self) -> AccessState {
        self.state(self.own).unwrap_or(AccessState::ActiveOptimized)
    }

    pub fn state(&self, group: u16) -> Option<AccessState> {
        let key = u32::from(group) + 1;
        self.slots
            .iter()
            .find(|s| s.id_plus_one.load(Ordering::Acquire) == key)
            .and_then(|s| AccessState::from_code(s.state.load(Ordering::Acquire)))
    }

    /// Sets `group`'s state (adding the group when new); returns whether it changed.
    pub fn set(&self, group: u16, state: AccessState) -> Result<bool, AluaError> {
        if group == 0 {
            return Err(AluaError::Zero);
        }
        let key = u32::from(group) + 1;
        let slot = match self
            .slots
            .iter()
            .find(|s| s.id_plus_one.load(Ordering::Acquire) == key)
        {
            Some(slot) => slot,
            None => self
                .slots
                .iter()
                .find(|s| {
                    s.id_plus_one
                        .compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                })
                .ok_or(AluaError::Full(group))?,
        };
        let before = slot.state.swap(state.code(), Ordering::AcqRel);
        slot.status.store(2, Ordering::Release);
        Ok(before != state.code())
    }

    /// Every group described, by id.
    pub fn groups(&self) -> Vec<PortGroup> {
        let mut groups: Vec<PortGroup> = self
            .slots
            .iter()
            .filter_map(|s| {
                let key = s.id_plus_one.load(Ordering::Acquire);
                let id = u16::try_from(key.checked_sub(1)?).ok()?;
                Some(PortGroup {
                    id,
                    state: AccessState::from_code(s.state.load(Ordering::Acquire))?,
                    preferred: false,
                    status: s.status.load(Ordering::Acquire),
                    // One target port per group: its relative port id is the group's.
                    ports: vec![id],
                })
            })
            .collect();
        groups.sort_by_key(|g| g.id);
        groups
    }

    /// REPORT TARGET PORT GROUPS data, cut to the allocation length.
    pub fn report(&self, cdb: &[u8]) -> Option<Vec<u8>> {
        let (extended, allocation) = alua::parse_report_target_port_groups(cdb)?;
        let mut data = alua::encode_port_groups(&self.groups(), extended, TRANSITION_TIME_S);
        data.truncate(allocation as usize);
        Some(data)
    }

    /// The refusal a command meets in the own group's state: NOT READY for medium
    /// access in standby, unavailable and transitioning (SPC-4 5.15.2.4); `None` to run it.
    pub fn refusal(&self, cdb: &[u8]) -> Option<Check> {
        let state = self.own_state();
        let (asc, ascq) = state.not_ready_asc()?;
        let opcode = *cdb.first()?;
        if allowed_when_inactive(state, opcode) {
            return None;
        }
        Some(Check::new(crate::disk::sense::key::NOT_READY, (asc, ascq)))
    }
}

/// Commands served whatever the state: the ones that tell a host where to go (SPC-4
/// 5.15.2.4.4-6), and in standby also the mode, log and reservation commands.
fn allowed_when_inactive(state: AccessState, opcode: u8) -> bool {
    const ALWAYS: [u8; 5] = [
        0x12, // INQUIRY
        0xa0, // REPORT LUNS
        0x03, // REQUEST SENSE
        0xa3, // MAINTENANCE IN (REPORT TARGET PORT GROUPS, supported opcodes)
        0xa4, // MAINTENANCE OUT
    ];
    const STANDBY: [u8; 7] = [
        0x1a, 0x5a, // MODE SENSE(6)/(10)
        0x15, 0x55, // MODE SELECT(6)/(10)
        0x4d, // LOG SENSE
        0x5e, 0x5f, // PERSISTENT RESERVE IN/OUT
    ];
    ALWAYS.contains(&opcode) || (state == AccessState::Standby && STANDBY.contains(&opcode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_added_changed_and_enforced() {
        let table = AluaGroups::new(2);
        assert_eq!(table.own_state(), AccessState::ActiveOptimized);
        assert_eq!(table.set(1, AccessState::ActiveNonOptimized), Ok(true));
        assert_eq!(table.set(1, AccessState::ActiveNonOptimized), Ok(false));
        assert_eq!(table.set(0, AccessState::Standby), Err(AluaError::Zero));
        let ids: Vec<u16> = table.groups().iter().map(|g| g.id).collect();
        assert_eq!(ids, vec![1, 2]);
        let read10 = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        assert!(table.refusal(&read10).is_none());
        table.set(2, AccessState::Standby).unwrap();
        let check = table.refusal(&read10).expect("reads refused in standby");
        assert_eq!((check.key, check.asc), (0x02, (0x04, 0x0b)));
        assert!(
            table.refusal(&[0x12, 0, 0, 0, 36, 0]).is_none(),
            "INQUIRY runs"
        );
        assert!(table.refusal(&[0x5e, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_none());
        table.set(2, AccessState::Unavailable).unwrap();
        assert!(table.refusal(&[0x5e, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_some());
        let data = table
            .report(&alua::report_target_port_groups_cdb(4096, false))
            .unwrap();
        let parsed = alua::parse_port_groups(&data).unwrap();
        assert_eq!(parsed[1].state, AccessState::Unavailable);
        assert_eq!(parsed[1].ports, vec![2]);
        for id in 3..=(MAX_GROUPS as u16) {
            table.set(id, AccessState::Standby).unwrap();
        }
        assert_eq!(
            table.set(100, AccessState::Standby),
            Err(AluaError::Full(100))
        );
    }
}
