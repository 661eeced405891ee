//! Failed I/Os counted by kind: CHECK CONDITION by sense key and ASC/ASCQ (SPC-4 4.5),
//! other SCSI status codes (SAM-5 5.3), short transfers, timeouts and transport failures.

use std::collections::BTreeMap;

use datapath::scsi::sense::{asc_name, sense_key_name, status_name};

use crate::io::IoError;

/// The sense triple of a CHECK CONDITION.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SenseCode {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
}

impl SenseCode {
    /// "UNIT ATTENTION 0x29/0x00 (POWER ON, RESET, OR BUS DEVICE RESET OCCURRED)".
    pub fn describe(&self) -> String {
        format!(
            "{} {:#04x}/{:#04x} ({})",
            sense_key_name(self.key),
            self.asc,
            self.ascq,
            asc_name(self.asc, self.ascq)
        )
    }
}

/// Failures of one job (or group), by kind. The maps are keyed by protocol values, so
/// their size is bounded by the code space (16 x 256 x 256 sense triples, 256 statuses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    pub check_condition: BTreeMap<SenseCode, u64>,
    /// Non-GOOD statuses other than CHECK CONDITION with sense (BUSY, TASK SET FULL...).
    pub status: BTreeMap<u8, u64>,
    pub short: u64,
    pub timeout: u64,
    pub transport: u64,
    /// The first failure seen, for the report's `err=` and `first_error`.
    pub first: Option<IoError>,
}

impl ErrorCounts {
    pub fn record(&mut self, error: &IoError) {
        match error {
            IoError::CheckCondition { key, asc, ascq } => {
                let code = SenseCode {
                    key: *key,
                    asc: *asc,
                    ascq: *ascq,
                };
                *self.check_condition.entry(code).or_insert(0) += 1;
            }
            IoError::Status(status) => *self.status.entry(*status).or_insert(0) += 1,
            IoError::Short { .. } => self.short += 1,
            IoError::Timeout(_) => self.timeout += 1,
            IoError::Transport(_) | IoError::Os { .. } | IoError::Disconnected(_) => {
                self.transport += 1
            }
        }
        if self.first.is_none() {
            self.first = Some(error.clone());
        }
    }

    pub fn merge(&mut self, other: &ErrorCounts) {
        for (code, count) in &other.check_condition {
            *self.check_condition.entry(*code).or_insert(0) += count;
        }
        for (status, count) in &other.status {
            *self.status.entry(*status).or_insert(0) += count;
        }
        self.short += other.short;
        self.timeout += other.timeout;
        self.transport += other.transport;
        if self.first.is_none() {
            self.first.clone_from(&other.first);
        }
    }

    pub fn total(&self) -> u64 {
        self.check_condition.values().sum::<u64>()
            + self.status.values().sum::<u64>()
            + self.short
            + self.timeout
            + self.transport
    }

    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    /// Every non-zero kind as (description, count), CHECK CONDITIONs first.
    pub fn describe(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for (code, count) in &self.check_condition {
            out.push((format!("CHECK CONDITION {}", code.describe()), *count));
        }
        for (status, count) in &self.status {
            out.push((status_name(*status).into_owned(), *count));
        }
        for (name, count) in [
            ("short transfer", self.short),
            ("timeout", self.timeout),
            ("transport", self.transport),
        ] {
            if count > 0 {
                out.push((name.to_string(), count));
            }
        }
        out
    }
}
