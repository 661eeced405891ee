//! Declarations in full feature phase (RFC 7143 section 13.12 and 11.9.1 event 4):
//! MaxRecvDataSegmentLength is the one operational key declared again after the login,
//! in a Text Request, typically the one an initiator sends when the target asked for a
//! renegotiation with Async Message event 4 after its operator changed its limits. The
//! keys negotiated in the login only (MaxBurstLength, FirstBurstLength, ...; "LO" and "IO"
//! in section 13) are refused here: a changed value of theirs applies to new sessions.
#![forbid(unsafe_code)]

use super::*;

/// The key both sides may declare again.
pub(super) const MAX_RECV_DATA_SEGMENT_LENGTH: &str = "MaxRecvDataSegmentLength";

/// Keys that only a login negotiates: declared in full feature phase, they get `Reject`.
const LOGIN_ONLY_KEYS: &[&str] = &[
    "HeaderDigest",
    "DataDigest",
    "MaxConnections",
    "InitialR2T",
    "ImmediateData",
    "MaxBurstLength",
    "FirstBurstLength",
    "DefaultTime2Wait",
    "DefaultTime2Retain",
    "MaxOutstandingR2T",
    "DataPDUInOrder",
    "DataSequenceInOrder",
    "ErrorRecoveryLevel",
];

impl TargetSession {
    /// The answer to one operational key of a full feature phase Text Request, or `None`
    /// when `key` is not an operational key.
    pub(super) fn redeclare(&mut self, key: &str, value: &str) -> Option<(String, String)> {
        if LOGIN_ONLY_KEYS.contains(&key) {
            return Some((key.to_owned(), "Reject".to_owned()));
        }
        if key != MAX_RECV_DATA_SEGMENT_LENGTH {
            return None;
        }
        let Some(theirs) = value
            .parse::<u32>()
            .ok()
            .filter(|n| (512..=16_777_215).contains(n))
        else {
            return Some((key.to_owned(), "Reject".to_owned()));
        };
        self.params.initiator_max_recv_data_segment_length = theirs;
        let ours = self.config.offer.max_recv_data_segment_length;
        // Never below what the connection accepted so far: PDUs the initiator sent
        // before it reads this answer are still on their way.
        self.params.target_max_recv_data_segment_length =
            self.params.target_max_recv_data_segment_length.max(ours);
        Some((key.to_owned(), ours.to_string()))
    }
}
