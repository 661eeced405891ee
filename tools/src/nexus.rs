//! A session with a chosen ISID, for the commands whose meaning depends on the I_T nexus:
//! reservations (a registration belongs to the initiator port, name and ISID, SPC-4
//! 5.12.7) and task management (`iscsi-ctl reset`). By default the ISID is derived from the
//! initiator name, so successive `iscsi-ctl pr --out` runs of one host act as one
//! initiator port, as a host's kernel initiator does; `--isid` sets it.
//!
//! It is the blocking `datapath::client::Client` with `ClientConfig::isid` set (and its
//! task management call).

use std::time::Instant;

use datapath::client::{Client, ClientConfig};
use datapath::pdu::Isid;
use datapath::scsi::{Cdb, DataDirection};
use datapath::session::{CommandOutcome, Request, TaskManagementFunction, TaskManagementOutcome};

use crate::commands::CtlError;

/// The ISID this host uses for `initiator_name` unless told otherwise: FNV-1a of the name,
/// in an ISID of the random type (T = 11b, RFC 7143 section 11.12.5).
pub fn stable_isid(initiator_name: &str) -> Isid {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in initiator_name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let bytes = hash.to_be_bytes();
    [
        0xc0 | (bytes[0] & 0x3f),
        bytes[1],
        bytes[2],
        bytes[3],
        bytes[4],
        bytes[5],
    ]
}

/// `--isid`: 12 hex digits.
pub fn parse_isid(text: &str) -> Result<Isid, String> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    if digits.len() != 12 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("'{text}' is not an ISID (12 hex digits)"));
    }
    let mut isid = [0u8; 6];
    for (i, byte) in isid.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(isid)
}

/// A session with a fixed ISID, so a host keeps one I_T nexus across runs (its
/// registrations and reservations are found again), on the blocking client.
pub struct NexusSession {
    client: Client,
}

impl NexusSession {
    /// Connects and logs in with `isid`.
    pub fn connect(config: &ClientConfig, isid: Isid) -> Result<NexusSession, CtlError> {
        let mut config = config.clone();
        config.isid = Some(isid);
        Ok(NexusSession {
            client: Client::connect(&config)?,
        })
    }

    /// Runs one command; `data` is its Data-Out (writes) and is ignored otherwise.
    pub fn execute(
        &mut self,
        lun: u64,
        cdb: &Cdb,
        data: Vec<u8>,
    ) -> Result<CommandOutcome, CtlError> {
        let buffer = match cdb.direction() {
            DataDirection::Read(len) => vec![0; len as usize],
            DataDirection::Write(_) => data,
            DataDirection::None => Vec::new(),
        };
        Ok(self
            .client
            .execute(Request::new(lun, cdb.clone(), buffer, 0))?)
    }

    /// Sends `function` (for `lun` when it addresses one) and waits for the answer.
    pub fn task_management(
        &mut self,
        function: TaskManagementFunction,
        lun: u64,
    ) -> Result<TaskManagementOutcome, CtlError> {
        Ok(self.client.task_management(function, lun)?)
    }

    /// Keeps the session serviced (answers the target's NOP-In pings) until `until`.
    pub fn service_until(&mut self, until: Instant) -> Result<(), CtlError> {
        Ok(self.client.service_until(until)?)
    }

    /// Logs out, unless the session already ended.
    pub fn logout(self) {
        if self.client.logged_in() {
            let _ = self.client.logout();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isids_are_stable_per_name_and_of_the_random_type() {
        let a = stable_isid("iqn.2026-12.test:a");
        assert_eq!(a, stable_isid("iqn.2026-12.test:a"));
        assert_ne!(a, stable_isid("iqn.2026-12.test:b"));
        assert_eq!(a[0] >> 6, 0b11);
        assert_eq!(parse_isid("0x400001370000"), Ok([0x40, 0, 1, 0x37, 0, 0]));
        assert!(parse_isid("12345").is_err());
    }
}
