//! Asymmetric logical unit access (SPC-4 5.15): the access states of target port groups,
//! REPORT TARGET PORT GROUPS parameter data (SPC-4 6.36, length-only header format), and
//! the sense codes a command gets when its port group cannot serve it.
//!
//! A multipath host reads the state of the group behind each of its paths, prefers
//! active/optimized paths, and reads the states again when a unit attention 2Ah/06h
//! (ASYMMETRIC ACCESS STATE CHANGED) or a NOT READY for an ALUA state says they moved.

use std::fmt;

use super::bytes::{require, u16_at, u32_at};
use super::ScsiError;

/// Asymmetric access state of a target port group (SPC-4 table 111).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AluaState {
    ActiveOptimized,
    ActiveNonOptimized,
    Standby,
    Unavailable,
    Offline,
    Transitioning,
    /// A reserved code, as sent.
    Reserved(u8),
}

impl AluaState {
    /// The state in the low nibble of `code`.
    pub fn from_code(code: u8) -> AluaState {
        match code & 0x0f {
            0x0 => AluaState::ActiveOptimized,
            0x1 => AluaState::ActiveNonOptimized,
            0x2 => AluaState::Standby,
            0x3 => AluaState::Unavailable,
            0xe => AluaState::Offline,
            0xf => AluaState::Transitioning,
            other => AluaState::Reserved(other),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            AluaState::ActiveOptimized => 0x0,
            AluaState::ActiveNonOptimized => 0x1,
            AluaState::Standby => 0x2,
            AluaState::Unavailable => 0x3,
            AluaState::Offline => 0xe,
            AluaState::Transitioning => 0xf,
            AluaState::Reserved(code) => code & 0x0f,
        }
    }

    /// Whether a port group in this state serves media access commands (SPC-4 5.15.2.4
    /// and 5.15.2.5: only the two active states do).
    pub fn serves_io(self) -> bool {
        matches!(
            self,
            AluaState::ActiveOptimized | AluaState::ActiveNonOptimized
        )
    }

    /// The name multipath tools print (`multipath -ll`, `sg_rtpg -d`).
    pub fn name(self) -> &'static str {
        match self {
            AluaState::ActiveOptimized => "active/optimized",
            AluaState::ActiveNonOptimized => "active/non-optimized",
            AluaState::Standby => "standby",
            AluaState::Unavailable => "unavailable",
            AluaState::Offline => "offline",
            AluaState::Transitioning => "transitioning",
            AluaState::Reserved(_) => "reserved",
        }
    }
}

impl fmt::Display for AluaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One target port group descriptor of REPORT TARGET PORT GROUPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetPortGroup {
    /// PREF: the group is a preferred path.
    pub preferred: bool,
    pub state: AluaState,
    pub id: u16,
    /// STATUS CODE: 1 when the state was changed by SET TARGET PORT GROUPS, 2 when
    /// changed implicitly.
    pub status_code: u8,
    /// The relative target port identifiers of the group's ports.
    pub ports: Vec<u16>,
}

/// REPORT TARGET PORT GROUPS parameter data (length-only header format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetPortGroups {
    pub groups: Vec<TargetPortGroup>,
    /// The whole list did not fit the allocation length; `full_length` is what to ask for.
    pub truncated: bool,
    pub full_length: usize,
}

impl TargetPortGroups {
    /// Decodes parameter data; a descriptor cut off by the allocation length is left out
    /// and `truncated` is set.
    pub fn decode(data: &[u8]) -> Result<TargetPortGroups, ScsiError> {
        require("REPORT TARGET PORT GROUPS data", data, 4)?;
        let announced = u32_at(data, 0) as usize;
        let full_length = announced.saturating_add(4);
        let end = full_length.min(data.len());
        let mut groups = Vec::new();
        let mut at = 4;
        let mut truncated = full_length > data.len();
        while at + 8 <= end {
            let count = usize::from(data[at + 7]);
            let next = at + 8 + 4 * count;
            if next > end {
                truncated = true;
                break;
            }
            groups.push(TargetPortGroup {
                preferred: data[at] & 0x80 != 0,
                state: AluaState::from_code(data[at]),
                id: u16_at(data, at + 2),
                status_code: data[at + 5],
                ports: (0..count)
                    .map(|k| u16_at(data, at + 8 + 4 * k + 2))
                    .collect(),
            });
            at = next;
        }
        Ok(TargetPortGroups {
            groups,
            truncated,
            full_length,
        })
    }

    /// Encodes `groups` in the length-only format (what a target sends).
    pub fn encode(groups: &[TargetPortGroup]) -> Vec<u8> {
        let mut out = vec![0; 4];
        for group in groups {
            out.push(u8::from(group.preferred) << 7 | group.state.code());
            // Supported states: T_SUP, O_SUP, U_SUP, S_SUP, AN_SUP, AO_SUP.
            out.push(0xcf);
            out.extend_from_slice(&group.id.to_be_bytes());
            out.push(0);
            out.push(group.status_code);
            out.push(0);
            out.push(group.ports.len().min(255) as u8);
            for port in group.ports.iter().take(255) {
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&port.to_be_bytes());
            }
        }
        let len = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        out
    }

    /// The state of group `id`, if listed.
    pub fn state_of(&self, id: u16) -> Option<AluaState> {
        self.groups.iter().find(|g| g.id == id).map(|g| g.state)
    }
}

/// Additional sense codes of ALUA (SPC-4 5.15.2, Annex D).
pub mod sense_code {
    /// UNIT ATTENTION: ASYMMETRIC ACCESS STATE CHANGED.
    pub const STATE_CHANGED: (u8, u8) = (0x2a, 0x06);
    /// NOT READY: LOGICAL UNIT NOT ACCESSIBLE, ASYMMETRIC ACCESS STATE TRANSITION.
    pub const TRANSITIONING: (u8, u8) = (0x04, 0x0a);
    /// NOT READY: LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN STANDBY STATE.
    pub const STANDBY: (u8, u8) = (0x04, 0x0b);
    /// NOT READY: LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN UNAVAILABLE STATE.
    pub const UNAVAILABLE: (u8, u8) = (0x04, 0x0c);
}

/// Whether (ASC, ASCQ) says the port group's access state moved or does not serve I/O:
/// the command was not executed and the states should be read again.
pub fn is_access_state_sense(asc_ascq: (u8, u8)) -> bool {
    use sense_code::*;
    matches!(
        asc_ascq,
        STATE_CHANGED | TRANSITIONING | STANDBY | UNAVAILABLE
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn group(id: u16, state: AluaState, ports: Vec<u16>) -> TargetPortGroup {
        TargetPortGroup {
            preferred: id == 1,
            state,
            id,
            status_code: 2,
            ports,
        }
    }

    #[test]
    fn decodes_what_a_target_sends() {
        // Two groups: 1 active/optimized (preferred) with ports 1 and 2, 2 standby with 3.
        let data = [
            0, 0, 0, 28, // length
            0x80, 0xcf, 0, 1, 0, 2, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2, // group 1
            0x02, 0xcf, 0, 2, 0, 0, 0, 1, 0, 0, 0, 3, // group 2
        ];
        let tpgs = TargetPortGroups::decode(&data).unwrap();
        assert!(!tpgs.truncated);
        assert_eq!(
            tpgs.groups,
            vec![
                group(1, AluaState::ActiveOptimized, vec![1, 2]),
                TargetPortGroup {
                    status_code: 0,
                    ..group(2, AluaState::Standby, vec![3])
                },
            ]
        );
        assert_eq!(tpgs.state_of(2), Some(AluaState::Standby));
        assert_eq!(tpgs.state_of(3), None);
    }

    #[test]
    fn a_cut_descriptor_is_left_out_and_flagged() {
        let full = TargetPortGroups::encode(&[
            group(1, AluaState::ActiveOptimized, vec![1]),
            group(2, AluaState::ActiveNonOptimized, vec![2, 3]),
        ]);
        let cut = TargetPortGroups::decode(&full[..20]).unwrap();
        assert!(cut.truncated);
        assert_eq!(cut.full_length, full.len());
        assert_eq!(cut.groups.len(), 1);
        assert!(TargetPortGroups::decode(&full[..3]).is_err());
    }

    #[test]
    fn access_state_senses() {
        assert!(is_access_state_sense((0x2a, 0x06)));
        assert!(is_access_state_sense((0x04, 0x0b)));
        assert!(!is_access_state_sense((0x29, 0x00)));
        assert!(AluaState::ActiveNonOptimized.serves_io());
        assert!(!AluaState::Transitioning.serves_io());
    }

    fn any_state() -> impl Strategy<Value = AluaState> {
        prop_oneof![
            Just(AluaState::ActiveOptimized),
            Just(AluaState::ActiveNonOptimized),
            Just(AluaState::Standby),
            Just(AluaState::Unavailable),
            Just(AluaState::Offline),
            Just(AluaState::Transitioning),
        ]
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(
            groups in proptest::collection::vec(
                (any::<bool>(), any_state(), any::<u16>(), 0u8..3,
                 proptest::collection::vec(any::<u16>(), 0..6)),
                0..8,
            )
        ) {
            let groups: Vec<TargetPortGroup> = groups
                .into_iter()
                .map(|(preferred, state, id, status_code, ports)| TargetPortGroup {
                    preferred, state, id, status_code, ports,
                })
                .collect();
            let bytes = TargetPortGroups::encode(&groups);
            let back = TargetPortGroups::decode(&bytes).unwrap();
            prop_assert!(!back.truncated);
            prop_assert_eq!(back.full_length, bytes.len());
            prop_assert_eq!(back.groups, groups);
        }

        #[test]
        fn any_bytes_decode_without_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = TargetPortGroups::decode(&data);
        }
    }
}
