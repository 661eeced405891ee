//! Login and text-mode key=value text, RFC 7143 section 6, and the negotiation of the
//! operational keys, sections 6.2 and 13.
//!
//! - [`kv`] (re-exported here): the `key=value\0` format, limits, and joining or splitting
//!   text over PDUs with the C bit.
//! - [`negotiate`]: the negotiation rules (list, numerical min/max, Boolean AND/OR,
//!   declarative) for every operational key, and [`Negotiation`], one side's negotiation
//!   state. Security and session keys (AuthMethod, CHAP_*, InitiatorName, ...) are the
//!   caller's; see [`is_operational_key`].
//!
//! No I/O happens here: bytes and pairs in, pairs and results out.
#![forbid(unsafe_code)]

pub mod kv;
pub mod negotiate;

pub use kv::*;
pub use negotiate::{
    is_operational_key, key_rule, DigestChoice, KeyRule, Negotiation, NegotiationError,
    OperationalOffer, OperationalParams, Role, SessionKind,
};
