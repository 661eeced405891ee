//! Authentication for the iSCSI security negotiation phase, RFC 7143 section 12.
//!
//! - [`chap`]: CHAP (RFC 1994) as carried in iSCSI text keys, section 12.1.3, with the
//!   initiator's side of one-way and mutual authentication and a target-side verifier.
//!
//! No I/O happens here; random challenges come from the caller.
#![forbid(unsafe_code)]

pub mod chap;
