//! Reservations on the wire, for both ends: CDBs and parameter data of RESERVE(6)/(10) and
//! RELEASE(6)/(10) (SPC-2 7.21-7.24), PERSISTENT RESERVE IN (SPC-4 6.15: READ KEYS, READ
//! RESERVATION, REPORT CAPABILITIES, READ FULL STATUS) and PERSISTENT RESERVE OUT (SPC-4
//! 6.16, SPC-5 6.17: the basic parameter list and the REGISTER AND MOVE one), and the iSCSI
//! TransportID (SPC-4 7.6.4.6). Each structure has `parse` and `emit`; the initiator emits
//! what the target parses and the other way round, and a property test holds them to it.
#![forbid(unsafe_code)]

use super::bytes::{u16_at, u32_at, u64_at};
use super::cdb::{Cdb, DataDirection};
use super::ScsiError;

/// Operation codes.
pub mod opcode {
    pub const RESERVE_6: u8 = 0x16;
    pub const RELEASE_6: u8 = 0x17;
    pub const RESERVE_10: u8 = 0x56;
    pub const RELEASE_10: u8 = 0x57;
    pub const PERSISTENT_RESERVE_IN: u8 = 0x5e;
    pub const PERSISTENT_RESERVE_OUT: u8 = 0x5f;
}

/// PERSISTENT RESERVE IN service actions (SPC-4 6.15.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrInAction {
    ReadKeys = 0,
    ReadReservation = 1,
    ReportCapabilities = 2,
    ReadFullStatus = 3,
}

impl PrInAction {
    pub fn from_code(code: u8) -> Option<PrInAction> {
        Some(match code {
            0 => PrInAction::ReadKeys,
            1 => PrInAction::ReadReservation,
            2 => PrInAction::ReportCapabilities,
            3 => PrInAction::ReadFullStatus,
            _ => return None,
        })
    }
}

/// PERSISTENT RESERVE OUT service actions (SPC-4 6.16.1, SPC-5 for REPLACE LOST RESERVATION).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrOutAction {
    Register = 0,
    Reserve = 1,
    Release = 2,
    Clear = 3,
    Preempt = 4,
    PreemptAndAbort = 5,
    RegisterAndIgnoreExistingKey = 6,
    RegisterAndMove = 7,
    ReplaceLostReservation = 8,
}

impl PrOutAction {
    pub fn from_code(code: u8) -> Option<PrOutAction> {
        Some(match code {
            0 => PrOutAction::Register,
            1 => PrOutAction::Reserve,
            2 => PrOutAction::Release,
            3 => PrOutAction::Clear,
            4 => PrOutAction::Preempt,
            5 => PrOutAction::PreemptAndAbort,
            6 => PrOutAction::RegisterAndIgnoreExistingKey,
            7 => PrOutAction::RegisterAndMove,
            8 => PrOutAction::ReplaceLostReservation,
            _ => return None,
        })
    }

    /// sg_persist's names, lower case with dashes (`register-and-ignore`).
    pub fn name(self) -> &'static str {
        match self {
            PrOutAction::Register => "register",
            PrOutAction::Reserve => "reserve",
            PrOutAction::Release => "release",
            PrOutAction::Clear => "clear",
            PrOutAction::Preempt => "preempt",
            PrOutAction::PreemptAndAbort => "preempt-abort",
            PrOutAction::RegisterAndIgnoreExistingKey => "register-ignore",
            PrOutAction::RegisterAndMove => "register-move",
            PrOutAction::ReplaceLostReservation => "replace-lost",
        }
    }
}

/// Persistent reservation types (SPC-4 6.15.3.4, table 169).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PrType {
    WriteExclusive = 1,
    ExclusiveAccess = 3,
    WriteExclusiveRegistrantsOnly = 5,
    ExclusiveAccessRegistrantsOnly = 6,
    WriteExclusiveAllRegistrants = 7,
    ExclusiveAccessAllRegistrants = 8,
}

impl PrType {
    pub const ALL: [PrType; 6] = [
        PrType::WriteExclusive,
        PrType::ExclusiveAccess,
        PrType::WriteExclusiveRegistrantsOnly,
        PrType::ExclusiveAccessRegistrantsOnly,
        PrType::WriteExclusiveAllRegistrants,
        PrType::ExclusiveAccessAllRegistrants,
    ];

    pub fn from_code(code: u8) -> Option<PrType> {
        PrType::ALL.into_iter().find(|t| *t as u8 == code)
    }

    /// Every registrant holds the reservation (types 7h and 8h).
    pub fn all_registrants(self) -> bool {
        matches!(
            self,
            PrType::WriteExclusiveAllRegistrants | PrType::ExclusiveAccessAllRegistrants
        )
    }

    /// Registrants other than the holder have full access (types 5h to 8h).
    pub fn registrants_have_access(self) -> bool {
        !matches!(self, PrType::WriteExclusive | PrType::ExclusiveAccess)
    }

    /// Others may not even read (the exclusive access types).
    pub fn exclusive_access(self) -> bool {
        matches!(
            self,
            PrType::ExclusiveAccess
                | PrType::ExclusiveAccessRegistrantsOnly
                | PrType::ExclusiveAccessAllRegistrants
        )
    }

    /// sg_persist's abbreviations.
    pub fn short_name(self) -> &'static str {
        match self {
            PrType::WriteExclusive => "WE",
            PrType::ExclusiveAccess => "EA",
            PrType::WriteExclusiveRegistrantsOnly => "WERO",
            PrType::ExclusiveAccessRegistrantsOnly => "EARO",
            PrType::WriteExclusiveAllRegistrants => "WEAR",
            PrType::ExclusiveAccessAllRegistrants => "EAAR",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PrType::WriteExclusive => "Write Exclusive",
            PrType::ExclusiveAccess => "Exclusive Access",
            PrType::WriteExclusiveRegistrantsOnly => "Write Exclusive, registrants only",
            PrType::ExclusiveAccessRegistrantsOnly => "Exclusive Access, registrants only",
            PrType::WriteExclusiveAllRegistrants => "Write Exclusive, all registrants",
            PrType::ExclusiveAccessAllRegistrants => "Exclusive Access, all registrants",
        }
    }
}

/// The basic PERSISTENT RESERVE OUT parameter list is 24 bytes (SPC-4 6.16.3).
pub const PR_OUT_BASIC_LENGTH: usize = 24;
/// SPC-4 7.6.4.6: protocol identifier of iSCSI.
pub const PROTOCOL_ISCSI: u8 = 0x5;
/// Longest iSCSI name (RFC 7143 section 4.2.7.1), bounding a TransportID.
const MAX_ISCSI_NAME: usize = 223;

impl Cdb {
    /// RESERVE(6) (SPC-2 7.21): the whole logical unit, no third party, no data.
    pub fn reserve_6() -> Cdb {
        Cdb::from_parts(&[opcode::RESERVE_6, 0, 0, 0, 0, 0], DataDirection::None)
    }

    /// RELEASE(6) (SPC-2 7.23).
    pub fn release_6() -> Cdb {
        Cdb::from_parts(&[opcode::RELEASE_6, 0, 0, 0, 0, 0], DataDirection::None)
    }

    /// RESERVE(10) (SPC-2 7.22): the whole logical unit, no third party, no data.
    pub fn reserve_10() -> Cdb {
        Cdb::from_parts(
            &[opcode::RESERVE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            DataDirection::None,
        )
    }

    /// RELEASE(10) (SPC-2 7.24).
    pub fn release_10() -> Cdb {
        Cdb::from_parts(
            &[opcode::RELEASE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            DataDirection::None,
        )
    }

    /// PERSISTENT RESERVE IN (SPC-4 6.15).
    pub fn persistent_reserve_in(action: PrInAction, allocation_length: u16) -> Cdb {
        let mut bytes = [0u8; 10];
        bytes[0] = opcode::PERSISTENT_RESERVE_IN;
        bytes[1] = action as u8;
        bytes[7..9].copy_from_slice(&allocation_length.to_be_bytes());
        Cdb::from_parts(&bytes, DataDirection::Read(u32::from(allocation_length)))
    }

    /// PERSISTENT RESERVE OUT (SPC-4 6.16) carrying `parameter_length` bytes; scope is
    /// always LU_SCOPE (0h), the only one SPC-4 keeps.
    pub fn persistent_reserve_out(
        action: PrOutAction,
        pr_type: Option<PrType>,
        parameter_length: u32,
    ) -> Cdb {
        let mut bytes = [0u8; 10];
        bytes[0] = opcode::PERSISTENT_RESERVE_OUT;
        bytes[1] = action as u8;
        bytes[2] = pr_type.map_or(0, |t| t as u8);
        bytes[5..9].copy_from_slice(&parameter_length.to_be_bytes());
        Cdb::from_parts(&bytes, DataDirection::Write(parameter_length))
    }
}

/// An iSCSI TransportID (SPC-4 7.6.4.6): an initiator name, with the ISID for an
/// initiator port (format 01b) or without it for every port of that name (format 00b).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransportId {
    pub name: String,
    pub isid: Option<[u8; 6]>,
}

impl TransportId {
    /// The initiator port name the TransportID carries (`name,i,0x<ISID>`).
    pub fn port_name(&self) -> String {
        match self.isid {
            Some(isid) => format!("{},i,0x{}", self.name, hex(&isid)),
            None => self.name.clone(),
        }
    }

    pub fn emit(&self) -> Vec<u8> {
        let text = match self.isid {
            Some(isid) => format!("{},i,0x{}", self.name, hex(&isid)),
            None => self.name.clone(),
        };
        // NUL-terminated, padded to a multiple of four (SPC-4 7.6.4.6).
        let mut body = text.into_bytes();
        body.push(0);
        while body.len() % 4 != 0 {
            body.push(0);
        }
        let format: u8 = if self.isid.is_some() { 0x40 } else { 0x00 };
        let mut out = vec![format | PROTOCOL_ISCSI, 0];
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Parses one TransportID at the start of `data`; returns it and its length.
    pub fn parse(data: &[u8]) -> Result<(TransportId, usize), ScsiError> {
        let what = "iSCSI TransportID";
        if data.len() < 4 {
            return Err(ScsiError::Truncated {
                what,
                needed: 4,
                got: data.len(),
            });
        }
        let bad = |reason: &'static str| ScsiError::BadField { what, reason };
        if data[0] & 0x0f != PROTOCOL_ISCSI {
            return Err(bad("protocol identifier is not iSCSI (5h)"));
        }
        let format = data[0] >> 6;
        let length = usize::from(u16_at(data, 2));
        let total = 4 + length;
        if data.len() < total {
            return Err(ScsiError::Truncated {
                what,
                needed: total,
                got: data.len(),
            });
        }
        if length < 4 || length % 4 != 0 || length > MAX_ISCSI_NAME + 24 {
            return Err(bad(
                "ADDITIONAL LENGTH is not a multiple of 4 between 4 and 248",
            ));
        }
        let body = &data[4..total];
        let text_end = body
            .iter()
            .position(|&b| b == 0)
            .ok_or(bad("name is not NUL-terminated"))?;
        let text = std::str::from_utf8(&body[..text_end]).map_err(|_| bad("name is not UTF-8"))?;
        let id = match format {
            0 => TransportId {
                name: text.to_string(),
                isid: None,
            },
            1 => {
                let (name, isid) = split_port_name(text).ok_or(bad(
                    "initiator port TransportID without a \",i,0x\" ISID of 12 hex digits",
                ))?;
                TransportId {
                    name: name.to_string(),
                    isid: Some(isid),
                }
            }
            _ => return Err(bad("format code is neither 00b nor 01b")),
        };
        if id.name.is_empty() || id.name.len() > MAX_ISCSI_NAME {
            return Err(bad("iSCSI name is empty or longer than 223 bytes"));
        }
        Ok((id, total))
    }
}

/// `name,i,0xISID` → name and ISID; the separator is case-insensitive (SPC-4 7.6.4.6).
pub fn split_port_name(text: &str) -> Option<(&str, [u8; 6])> {
    let at = text.to_ascii_lowercase().rfind(",i,0x")?;
    let digits = &text[at + 5..];
    if digits.len() != 12 {
        return None;
    }
    let mut isid = [0u8; 6];
    for (i, byte) in isid.iter_mut().enumerate() {
        *byte = u8::from_str_radix(digits.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some((&text[..at], isid))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The basic PERSISTENT RESERVE OUT parameter list (SPC-4 6.16.3), with the TransportIDs
/// SPEC_I_PT adds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrOutParams {
    pub key: u64,
    pub service_action_key: u64,
    pub spec_i_pt: bool,
    pub all_tg_pt: bool,
    pub aptpl: bool,
    pub transport_ids: Vec<TransportId>,
}

/// Where a parameter list is wrong: the byte the sense-key specific field points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("parameter list length {0} is wrong for this service action")]
    Length(usize),
    #[error("invalid field in the parameter list at byte {0}")]
    Field(u16),
}

impl PrOutParams {
    pub fn emit(&self) -> Vec<u8> {
        let mut out = vec![0u8; PR_OUT_BASIC_LENGTH];
        out[0..8].copy_from_slice(&self.key.to_be_bytes());
        out[8..16].copy_from_slice(&self.service_action_key.to_be_bytes());
        out[20] =
            u8::from(self.spec_i_pt) << 3 | u8::from(self.all_tg_pt) << 2 | u8::from(self.aptpl);
        if self.spec_i_pt {
            let ids: Vec<u8> = self.transport_ids.iter().flat_map(|t| t.emit()).collect();
            out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
            out.extend_from_slice(&ids);
        }
        out
    }

    /// Parses a list of `data.len()` bytes (the CDB's PARAMETER LIST LENGTH). Only
    /// SPEC_I_PT makes a list longer than 24 bytes; at most `max_ids` TransportIDs.
    pub fn parse(data: &[u8], max_ids: usize) -> Result<PrOutParams, ParamError> {
        if data.len() < PR_OUT_BASIC_LENGTH {
            return Err(ParamError::Length(data.len()));
        }
        let flags = data[20];
        if flags & 0xf2 != 0 {
            return Err(ParamError::Field(20));
        }
        let mut params = PrOutParams {
            key: u64_at(data, 0),
            service_action_key: u64_at(data, 8),
            spec_i_pt: flags & 0x08 != 0,
            all_tg_pt: flags & 0x04 != 0,
            aptpl: flags & 0x01 != 0,
            transport_ids: Vec::new(),
        };
        if !params.spec_i_pt {
            if data.len() != PR_OUT_BASIC_LENGTH {
                return Err(ParamError::Length(data.len()));
            }
            return Ok(params);
        }
        if data.len() < PR_OUT_BASIC_LENGTH + 4 {
            return Err(ParamError::Length(data.len()));
        }
        let ids_len = u32_at(data, 24) as usize;
        if PR_OUT_BASIC_LENGTH + 4 + ids_len != data.len() {
            return Err(ParamError::Length(data.len()));
        }
        let mut at = PR_OUT_BASIC_LENGTH + 4;
        while at < data.len() {
            if params.transport_ids.len() == max_ids {
                return Err(ParamError::Field(at as u16));
            }
            let (id, len) = TransportId::parse(&data[at..])
                .map_err(|_| ParamError::Field(at.min(usize::from(u16::MAX)) as u16))?;
            params.transport_ids.push(id);
            at += len;
        }
        Ok(params)
    }
}

/// The REGISTER AND MOVE parameter list (SPC-4 6.16.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterMoveParams {
    pub key: u64,
    pub service_action_key: u64,
    pub unregister: bool,
    pub aptpl: bool,
    pub relative_target_port: u16,
    pub transport_id: TransportId,
}

impl RegisterMoveParams {
    pub fn emit(&self) -> Vec<u8> {
        let id = self.transport_id.emit();
        let mut out = vec![0u8; 24];
        out[0..8].copy_from_slice(&self.key.to_be_bytes());
        out[8..16].copy_from_slice(&self.service_action_key.to_be_bytes());
        out[17] = u8::from(self.unregister) << 1 | u8::from(self.aptpl);
        out[18..20].copy_from_slice(&self.relative_target_port.to_be_bytes());
        out[20..24].copy_from_slice(&(id.len() as u32).to_be_bytes());
        out.extend_from_slice(&id);
        out
    }

    pub fn parse(data: &[u8]) -> Result<RegisterMoveParams, ParamError> {
        if data.len() < 24 + 4 {
            return Err(ParamError::Length(data.len()));
        }
        if data[17] & 0xfc != 0 {
            return Err(ParamError::Field(17));
        }
        let id_len = u32_at(data, 20) as usize;
        if 24 + id_len != data.len() {
            return Err(ParamError::Length(data.len()));
        }
        let (transport_id, used) =
            TransportId::parse(&data[24..]).map_err(|_| ParamError::Field(24))?;
        if used != id_len {
            return Err(ParamError::Field(20));
        }
        Ok(RegisterMoveParams {
            key: u64_at(data, 0),
            service_action_key: u64_at(data, 8),
            unregister: data[17] & 0x02 != 0,
            aptpl: data[17] & 0x01 != 0,
            relative_target_port: u16_at(data, 18),
            transport_id,
        })
    }
}

/// READ KEYS parameter data (SPC-4 6.15.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadKeys {
    pub generation: u32,
    pub keys: Vec<u64>,
    /// The target announced more keys than the data held.
    pub truncated: bool,
}

impl ReadKeys {
    pub fn emit(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 8 * self.keys.len());
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.extend_from_slice(&((8 * self.keys.len()) as u32).to_be_bytes());
        for key in &self.keys {
            out.extend_from_slice(&key.to_be_bytes());
        }
        out
    }

    pub fn parse(data: &[u8]) -> Result<ReadKeys, ScsiError> {
        super::bytes::require("READ KEYS data", data, 8)?;
        let announced = u32_at(data, 4) as usize;
        let present = (data.len() - 8).min(announced) / 8;
        Ok(ReadKeys {
            generation: u32_at(data, 0),
            keys: (0..present).map(|i| u64_at(data, 8 + 8 * i)).collect(),
            truncated: present * 8 < announced,
        })
    }
}

/// The reservation READ RESERVATION reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservationHeld {
    /// The holder's key; zero for the all-registrants types.
    pub key: u64,
    pub pr_type: Option<PrType>,
    /// The raw type code, for a type this decoder does not know.
    pub type_code: u8,
}

/// READ RESERVATION parameter data (SPC-4 6.15.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadReservation {
    pub generation: u32,
    pub reservation: Option<ReservationHeld>,
}

impl ReadReservation {
    pub fn emit(&self) -> Vec<u8> {
        let mut out = vec![0u8; 8];
        out[0..4].copy_from_slice(&self.generation.to_be_bytes());
        if let Some(held) = self.reservation {
            out[4..8].copy_from_slice(&16u32.to_be_bytes());
            out.extend_from_slice(&held.key.to_be_bytes());
            out.extend_from_slice(&[0u8; 8]);
            out[8 + 8 + 5] = held.type_code & 0x0f; // scope LU_SCOPE (0h)
        }
        out
    }

    pub fn parse(data: &[u8]) -> Result<ReadReservation, ScsiError> {
        super::bytes::require("READ RESERVATION data", data, 8)?;
        let reservation = (u32_at(data, 4) >= 16).then(|| {
            let type_code = super::bytes::u8_at(data, 21) & 0x0f;
            ReservationHeld {
                key: u64_at(data, 8),
                pr_type: PrType::from_code(type_code),
                type_code,
            }
        });
        Ok(ReadReservation {
            generation: u32_at(data, 0),
            reservation,
        })
    }
}

/// REPORT CAPABILITIES parameter data (SPC-4 6.15.4).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// CRH: RESERVE/RELEASE(6/10) are handled as SPC-4 5.12.3 says with PRs present.
    pub compatible_reservation_handling: bool,
    pub specify_initiator_ports: bool,
    pub all_target_ports: bool,
    /// PTPL_C: APTPL can be set.
    pub persist_through_power_loss_capable: bool,
    /// TMV: the type mask is valid.
    pub type_mask_valid: bool,
    /// ALLOW COMMANDS (3 bits).
    pub allow_commands: u8,
    /// PTPL_A: APTPL is in force.
    pub persist_through_power_loss_active: bool,
    /// The PERSISTENT RESERVATION TYPE MASK.
    pub types: Vec<PrType>,
}

impl Capabilities {
    fn mask_bit(t: PrType) -> u16 {
        match t {
            PrType::WriteExclusiveAllRegistrants => 0x8000,
            PrType::ExclusiveAccessRegistrantsOnly => 0x4000,
            PrType::WriteExclusiveRegistrantsOnly => 0x2000,
            PrType::ExclusiveAccess => 0x0800,
            PrType::WriteExclusive => 0x0200,
            PrType::ExclusiveAccessAllRegistrants => 0x0001,
        }
    }

    pub fn emit(&self) -> Vec<u8> {
        let mut out = vec![0u8; 8];
        out[0..2].copy_from_slice(&8u16.to_be_bytes());
        out[2] = u8::from(self.compatible_reservation_handling) << 4
            | u8::from(self.specify_initiator_ports) << 3
            | u8::from(self.all_target_ports) << 2
            | u8::from(self.persist_through_power_loss_capable);
        out[3] = u8::from(self.type_mask_valid) << 7
            | (self.allow_commands & 0x07) << 4
            | u8::from(self.persist_through_power_loss_active);
        let mask = self.types.iter().fold(0u16, |m, t| m | Self::mask_bit(*t));
        out[4..6].copy_from_slice(&mask.to_be_bytes());
        out
    }

    pub fn parse(data: &[u8]) -> Result<Capabilities, ScsiError> {
        super::bytes::require("REPORT CAPABILITIES data", data, 6)?;
        let mask = u16_at(data, 4);
        Ok(Capabilities {
            compatible_reservation_handling: data[2] & 0x10 != 0,
            specify_initiator_ports: data[2] & 0x08 != 0,
            all_target_ports: data[2] & 0x04 != 0,
            persist_through_power_loss_capable: data[2] & 0x01 != 0,
            type_mask_valid: data[3] & 0x80 != 0,
            allow_commands: (data[3] >> 4) & 0x07,
            persist_through_power_loss_active: data[3] & 0x01 != 0,
            types: PrType::ALL
                .into_iter()
                .filter(|t| mask & Self::mask_bit(*t) != 0)
                .collect(),
        })
    }
}

/// One registration in READ FULL STATUS (SPC-4 6.15.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullStatusEntry {
    pub key: u64,
    pub all_tg_pt: bool,
    pub holder: bool,
    /// The reservation's type when `holder`.
    pub type_code: u8,
    pub relative_target_port: u16,
    pub transport_id: TransportId,
}

/// READ FULL STATUS parameter data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FullStatus {
    pub generation: u32,
    pub entries: Vec<FullStatusEntry>,
    pub truncated: bool,
}

impl FullStatus {
    pub fn emit(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for entry in &self.entries {
            let id = entry.transport_id.emit();
            let mut descriptor = vec![0u8; 24];
            descriptor[0..8].copy_from_slice(&entry.key.to_be_bytes());
            descriptor[12] = u8::from(entry.all_tg_pt) << 1 | u8::from(entry.holder);
            descriptor[13] = if entry.holder {
                entry.type_code & 0x0f
            } else {
                0
            };
            descriptor[18..20].copy_from_slice(&entry.relative_target_port.to_be_bytes());
            descriptor[20..24].copy_from_slice(&(id.len() as u32).to_be_bytes());
            descriptor.extend_from_slice(&id);
            body.extend_from_slice(&descriptor);
        }
        let mut out = Vec::with_capacity(8 + body.len());
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    pub fn parse(data: &[u8]) -> Result<FullStatus, ScsiError> {
        super::bytes::require("READ FULL STATUS data", data, 8)?;
        let announced = u32_at(data, 4) as usize;
        let end = data.len().min(8usize.saturating_add(announced));
        let mut status = FullStatus {
            generation: u32_at(data, 0),
            entries: Vec::new(),
            truncated: data.len() < 8usize.saturating_add(announced),
        };
        let mut at = 8;
        while at + 24 <= end {
            let id_len = u32_at(data, at + 20) as usize;
            let Some(id_bytes) = data.get(at + 24..(at + 24).saturating_add(id_len).min(end))
            else {
                break;
            };
            let Ok((transport_id, _)) = TransportId::parse(id_bytes) else {
                status.truncated = true;
                break;
            };
            status.entries.push(FullStatusEntry {
                key: u64_at(data, at),
                all_tg_pt: data[at + 12] & 0x02 != 0,
                holder: data[at + 12] & 0x01 != 0,
                type_code: data[at + 13] & 0x0f,
                relative_target_port: u16_at(data, at + 18),
                transport_id,
            });
            at += 24 + id_len;
        }
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(name: &str, isid: Option<[u8; 6]>) -> TransportId {
        TransportId {
            name: name.into(),
            isid,
        }
    }

    #[test]
    fn transport_ids_carry_the_isid_as_spc_4_spells_it() {
        let t = id("iqn.2024-01.a:b", Some([0x40, 0, 1, 0x37, 0, 0]));
        let bytes = t.emit();
        assert_eq!(bytes[0], 0x45);
        assert_eq!(bytes.len() % 4, 0);
        assert!(String::from_utf8_lossy(&bytes).contains("iqn.2024-01.a:b,i,0x400001370000"));
        assert_eq!(TransportId::parse(&bytes).unwrap(), (t, bytes.len()));
        assert!(
            TransportId::parse(&[0x41, 0, 0, 4, b'a', 0, 0, 0]).is_err(),
            "FCP"
        );
        assert!(
            TransportId::parse(&[0x45, 0, 0, 8, b'a', 0, 0, 0]).is_err(),
            "short"
        );
        assert!(TransportId::parse(&[0x45, 0, 0, 4, b'a', b'b', b'c', b'd']).is_err());
    }

    #[test]
    fn pr_out_lists_of_the_wrong_length_are_refused() {
        let params = PrOutParams {
            key: 1,
            service_action_key: 2,
            ..Default::default()
        };
        let bytes = params.emit();
        assert_eq!(PrOutParams::parse(&bytes, 8), Ok(params));
        assert_eq!(
            PrOutParams::parse(&bytes[..20], 8),
            Err(ParamError::Length(20))
        );
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(PrOutParams::parse(&long, 8), Err(ParamError::Length(25)));
        let mut flags = bytes;
        flags[20] = 0x80;
        assert_eq!(PrOutParams::parse(&flags, 8), Err(ParamError::Field(20)));
    }

    #[test]
    fn cdbs_have_their_lengths_and_directions() {
        let cdb =
            Cdb::persistent_reserve_out(PrOutAction::Reserve, Some(PrType::ExclusiveAccess), 24);
        assert_eq!(cdb.as_bytes(), &[0x5f, 1, 3, 0, 0, 0, 0, 0, 24, 0]);
        assert_eq!(cdb.direction(), DataDirection::Write(24));
        let cdb = Cdb::persistent_reserve_in(PrInAction::ReadFullStatus, 512);
        assert_eq!(cdb.as_bytes(), &[0x5e, 3, 0, 0, 0, 0, 0, 2, 0, 0]);
        assert_eq!(Cdb::reserve_6().as_bytes(), &[0x16, 0, 0, 0, 0, 0]);
        assert_eq!(Cdb::release_10().len(), 10);
    }

    fn transport_id() -> impl Strategy<Value = TransportId> {
        (
            "[a-z][a-z0-9.:-]{0,40}",
            proptest::option::of(any::<[u8; 6]>()),
        )
            .prop_map(|(name, isid)| TransportId { name, isid })
    }

    proptest! {
        #[test]
        fn what_one_end_emits_the_other_parses(
            key in any::<u64>(), sak in any::<u64>(), aptpl in any::<bool>(),
            all_tg_pt in any::<bool>(), ids in proptest::collection::vec(transport_id(), 0..4),
            generation in any::<u32>(), keys in proptest::collection::vec(any::<u64>(), 0..8),
        ) {
            let params = PrOutParams {
                key, service_action_key: sak, spec_i_pt: !ids.is_empty(), all_tg_pt, aptpl,
                transport_ids: ids.clone(),
            };
            prop_assert_eq!(PrOutParams::parse(&params.emit(), 8).unwrap(), params);
            let rk = ReadKeys { generation, keys: keys.clone(), truncated: false };
            prop_assert_eq!(ReadKeys::parse(&rk.emit()).unwrap(), rk);
            let status = FullStatus {
                generation,
                entries: ids.iter().zip(&keys).map(|(id, key)| FullStatusEntry {
                    key: *key, all_tg_pt, holder: aptpl, type_code: if aptpl { 3 } else { 0 },
                    relative_target_port: 1, transport_id: id.clone(),
                }).collect(),
                truncated: false,
            };
            prop_assert_eq!(FullStatus::parse(&status.emit()).unwrap(), status);
            if let Some(first) = ids.first() {
                let mv = RegisterMoveParams { key, service_action_key: sak, unregister: aptpl,
                    aptpl: all_tg_pt, relative_target_port: 1, transport_id: first.clone() };
                prop_assert_eq!(RegisterMoveParams::parse(&mv.emit()).unwrap(), mv);
            }
        }

        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..96)) {
            let _ = PrOutParams::parse(&data, 4);
            let _ = RegisterMoveParams::parse(&data);
            let _ = ReadKeys::parse(&data);
            let _ = ReadReservation::parse(&data);
            let _ = Capabilities::parse(&data);
            let _ = FullStatus::parse(&data);
            let _ = TransportId::parse(&data);
        }
    }
}
