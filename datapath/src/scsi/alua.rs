//! Asymmetric logical unit access (SPC-4 5.15): the access states of target port groups,
//! and REPORT TARGET PORT GROUPS (SPC-4 6.36, MAINTENANCE IN service action 0Ah): its CDB
//! and its parameter data (length-only and extended header formats), emitted by the
//! gateway and parsed by `iscsi-ctl` and the tests, one module for both ends.
#![forbid(unsafe_code)]

use super::cdb::opcode;

/// MAINTENANCE IN service action of REPORT TARGET PORT GROUPS.
pub const REPORT_TARGET_PORT_GROUPS: u8 = super::cdb::service_action::REPORT_TARGET_PORT_GROUPS;

/// ASC/ASCQ of the unit attention a change of access state establishes (SPC-4 5.15.2.2):
/// ASYMMETRIC ACCESS STATE CHANGED.
pub const ACCESS_STATE_CHANGED: (u8, u8) = (0x2a, 0x06);

/// An asymmetric access state (SPC-4 table 13, the four-bit codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessState {
    ActiveOptimized,
    ActiveNonOptimized,
    Standby,
    Unavailable,
    Transitioning,
}

impl AccessState {
    pub const ALL: [AccessState; 5] = [
        AccessState::ActiveOptimized,
        AccessState::ActiveNonOptimized,
        AccessState::Standby,
        AccessState::Unavailable,
        AccessState::Transitioning,
    ];

    pub fn code(self) -> u8 {
        match self {
            AccessState::ActiveOptimized => 0x0,
            AccessState::ActiveNonOptimized => 0x1,
            AccessState::Standby => 0x2,
            AccessState::Unavailable => 0x3,
            AccessState::Transitioning => 0xf,
        }
    }

    pub fn from_code(code: u8) -> Option<AccessState> {
        AccessState::ALL.into_iter().find(|s| s.code() == code)
    }

    /// The word an operator types and reads: `active/optimized`, `active/non-optimized`,
    /// `standby`, `unavailable`, `transitioning`.
    pub fn name(self) -> &'static str {
        match self {
            AccessState::ActiveOptimized => "active/optimized",
            AccessState::ActiveNonOptimized => "active/non-optimized",
            AccessState::Standby => "standby",
            AccessState::Unavailable => "unavailable",
            AccessState::Transitioning => "transitioning",
        }
    }

    /// Whether reads and writes are served in this state.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            AccessState::ActiveOptimized | AccessState::ActiveNonOptimized
        )
    }

    /// The NOT READY additional sense a medium access command gets in this state
    /// (SPC-4 5.15.2.4): 04/0Bh standby, 04/0Ch unavailable, 04/0Ah transitioning.
    pub fn not_ready_asc(self) -> Option<(u8, u8)> {
        match self {
            AccessState::Standby => Some((0x04, 0x0b)),
            AccessState::Unavailable => Some((0x04, 0x0c)),
            AccessState::Transitioning => Some((0x04, 0x0a)),
            _ => None,
        }
    }
}

impl std::fmt::Display for AccessState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for AccessState {
    type Err = String;

    /// The names of [`AccessState::name`], and the short forms `ao`, `an`, `s`, `u`, `t`.
    fn from_str(text: &str) -> Result<AccessState, String> {
        let lower = text.trim().to_ascii_lowercase();
        let state = match lower.as_str() {
            "active/optimized" | "ao" | "optimized" => AccessState::ActiveOptimized,
            "active/non-optimized" | "an" | "non-optimized" => AccessState::ActiveNonOptimized,
            "standby" | "s" => AccessState::Standby,
            "unavailable" | "u" => AccessState::Unavailable,
            "transitioning" | "t" => AccessState::Transitioning,
            _ => {
                return Err(format!(
                    "ALUA state {:?}: expected active/optimized, active/non-optimized, \
                     standby, unavailable or transitioning",
                    text.chars().take(40).collect::<String>()
                ))
            }
        };
        Ok(state)
    }
}

/// One target port group as REPORT TARGET PORT GROUPS describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortGroup {
    pub id: u16,
    pub state: AccessState,
    /// PREF: the preferred group.
    pub preferred: bool,
    /// STATUS CODE: 0 none, 1 changed by SET TARGET PORT GROUPS, 2 changed implicitly.
    pub status: u8,
    /// The relative target port identifiers of its ports.
    pub ports: Vec<u16>,
}

/// The supported-states bits every group reports: T_SUP, U_SUP, S_SUP, AN_SUP, AO_SUP
/// (SPC-4 6.36.2; no offline or LBA-dependent states).
const SUPPORTED_STATES: u8 = 0x80 | 0x08 | 0x04 | 0x02 | 0x01;

/// The REPORT TARGET PORT GROUPS CDB (12 bytes); `extended` asks for the extended header.
pub fn report_target_port_groups_cdb(allocation_length: u32, extended: bool) -> [u8; 12] {
    let mut cdb = [0u8; 12];
    cdb[0] = opcode::MAINTENANCE_IN;
    cdb[1] = REPORT_TARGET_PORT_GROUPS | if extended { 0x20 } else { 0 };
    cdb[6..10].copy_from_slice(&allocation_length.to_be_bytes());
    cdb
}

/// Whether `cdb` is REPORT TARGET PORT GROUPS; if so, (extended header, allocation length).
pub fn parse_report_target_port_groups(cdb: &[u8]) -> Option<(bool, u32)> {
    if cdb.len() < 12
        || cdb[0] != opcode::MAINTENANCE_IN
        || cdb[1] & 0x1f != REPORT_TARGET_PORT_GROUPS
    {
        return None;
    }
    let extended = cdb[1] >> 5 == 1;
    Some((
        extended,
        u32::from_be_bytes([cdb[6], cdb[7], cdb[8], cdb[9]]),
    ))
}

/// The parameter data for `groups` (whole; the caller cuts it to the allocation length).
/// `transition_time_s` is the IMPLICIT TRANSITION TIME of the extended header.
pub fn encode_port_groups(groups: &[PortGroup], extended: bool, transition_time_s: u8) -> Vec<u8> {
    let header = if extended { 8 } else { 4 };
    let mut data = vec![0u8; header];
    for group in groups {
        data.push(if group.preferred { 0x80 } else { 0 } | group.state.code());
        data.push(SUPPORTED_STATES);
        data.extend_from_slice(&group.id.to_be_bytes());
        data.push(0);
        data.push(group.status);
        data.push(0);
        let ports = &group.ports[..group.ports.len().min(255)];
        data.push(ports.len() as u8);
        for port in ports {
            data.extend_from_slice(&[0, 0]);
            data.extend_from_slice(&port.to_be_bytes());
        }
    }
    // RETURN DATA LENGTH counts what follows it (the rest of the header included, SPC-4
    // 6.36.2 table 226 and 227).
    let length = (data.len() - 4) as u32;
    data[..4].copy_from_slice(&length.to_be_bytes());
    if extended {
        data[4] = 0x10; // FORMAT TYPE 001b
        data[5] = transition_time_s;
    }
    data
}

/// The state of group `id` among `groups`, if listed.
pub fn state_of(groups: &[PortGroup], id: u16) -> Option<AccessState> {
    groups.iter().find(|g| g.id == id).map(|g| g.state)
}

/// What a command's CHECK CONDITION (ASC, ASCQ) says about access states: `None` when it
/// is not about them; `Some(None)` for ASYMMETRIC ACCESS STATE CHANGED (read them again);
/// `Some(Some(state))` for the NOT READY of a group in `state`. Either way the command
/// was not executed (SPC-4 5.15.2).
pub fn access_state_sense(asc_ascq: (u8, u8)) -> Option<Option<AccessState>> {
    if asc_ascq == ACCESS_STATE_CHANGED {
        return Some(None);
    }
    AccessState::ALL
        .into_iter()
        .find(|state| state.not_ready_asc() == Some(asc_ascq))
        .map(Some)
}

/// Why REPORT TARGET PORT GROUPS data did not parse.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AluaError {
    #[error("REPORT TARGET PORT GROUPS data of {0} bytes: shorter than its header")]
    Short(usize),
    #[error("target port group descriptor at byte {at} runs past the data")]
    Truncated { at: usize },
    #[error("target port group {group}: unknown asymmetric access state {code:#x}")]
    UnknownState { group: u16, code: u8 },
}

/// Parses REPORT TARGET PORT GROUPS data (either format, told apart by FORMAT TYPE) up to
/// what RETURN DATA LENGTH and the bytes received cover.
pub fn parse_port_groups(data: &[u8]) -> Result<Vec<PortGroup>, AluaError> {
    if data.len() < 4 {
        return Err(AluaError::Short(data.len()));
    }
    let declared = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    let end = declared.saturating_add(4).min(data.len());
    let extended = data.len() >= 8 && data[4] >> 4 == 1;
    let mut at = if extended { 8 } else { 4 };
    let mut groups = Vec::new();
    while at < end {
        let Some(descriptor) = data.get(at..at + 8).filter(|_| at + 8 <= end) else {
            return Err(AluaError::Truncated { at });
        };
        let id = u16::from_be_bytes([descriptor[2], descriptor[3]]);
        let code = descriptor[0] & 0x0f;
        let state =
            AccessState::from_code(code).ok_or(AluaError::UnknownState { group: id, code })?;
        let count = usize::from(descriptor[7]);
        let ports_end = at + 8 + 4 * count;
        if ports_end > end {
            return Err(AluaError::Truncated { at });
        }
        let ports = data[at + 8..ports_end]
            .chunks_exact(4)
            .map(|p| u16::from_be_bytes([p[2], p[3]]))
            .collect();
        groups.push(PortGroup {
            id,
            state,
            preferred: descriptor[0] & 0x80 != 0,
            status: descriptor[5],
            ports,
        });
        at = ports_end;
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn group() -> impl Strategy<Value = PortGroup> {
        (
            any::<u16>(),
            0usize..5,
            any::<bool>(),
            0u8..3,
            proptest::collection::vec(any::<u16>(), 0..6),
        )
            .prop_map(|(id, state, preferred, status, ports)| PortGroup {
                id,
                state: AccessState::ALL[state],
                preferred,
                status,
                ports,
            })
    }

    proptest! {
        #[test]
        fn what_the_gateway_emits_the_initiator_reads_back(
            groups in proptest::collection::vec(group(), 0..6),
            extended: bool,
        ) {
            let data = encode_port_groups(&groups, extended, 5);
            prop_assert_eq!(parse_port_groups(&data).unwrap(), groups);
        }

        #[test]
        fn any_bytes_parse_or_fail_without_panic(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse_port_groups(&data);
        }
    }

    #[test]
    fn the_cdb_round_trips_and_names_parse() {
        let cdb = report_target_port_groups_cdb(1024, true);
        assert_eq!(parse_report_target_port_groups(&cdb), Some((true, 1024)));
        assert_eq!(parse_report_target_port_groups(&cdb[..10]), None);
        for state in AccessState::ALL {
            assert_eq!(state.name().parse::<AccessState>(), Ok(state));
        }
        assert!("activeish"
            .parse::<AccessState>()
            .unwrap_err()
            .contains("activeish"));
    }

    #[test]
    fn senses_about_access_states() {
        assert_eq!(access_state_sense((0x2a, 0x06)), Some(None));
        assert_eq!(
            access_state_sense((0x04, 0x0b)),
            Some(Some(AccessState::Standby))
        );
        assert_eq!(
            access_state_sense((0x04, 0x0a)),
            Some(Some(AccessState::Transitioning))
        );
        assert_eq!(access_state_sense((0x29, 0x00)), None);
        let groups = [PortGroup {
            id: 7,
            state: AccessState::ActiveNonOptimized,
            preferred: false,
            status: 0,
            ports: vec![1],
        }];
        assert_eq!(state_of(&groups, 7), Some(AccessState::ActiveNonOptimized));
        assert_eq!(state_of(&groups, 8), None);
    }

    #[test]
    fn a_cut_descriptor_is_an_error() {
        let groups = [PortGroup {
            id: 2,
            state: AccessState::Standby,
            preferred: false,
            status: 2,
            ports: vec![2, 3],
        }];
        let data = encode_port_groups(&groups, false, 0);
        // Data cut by a small allocation length: RETURN DATA LENGTH says more.
        assert!(matches!(
            parse_port_groups(&data[..14]),
            Err(AluaError::Truncated { .. })
        ));
    }
}
