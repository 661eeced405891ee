//! The iSCSI PDU wire format, RFC 7143 section 11.
//!
//! Two levels, in the manner of smoltcp: [`view::BhsView`] is a checked, zero-copy view over
//! the 48-byte Basic Header Segment; [`Header`] is the typed representation of one PDU's
//! header (BHS plus any AHS), with `parse` and `emit`. The data segment is never owned by
//! the header: on send it comes from the caller's buffer, on receive it is delivered
//! beside the header, so payload bytes can be placed once.
//!
//! Layout of a PDU on the wire (section 11.1):
//! `BHS (48) | AHS (TotalAHSLength * 4) | HeaderDigest (0/4) | Data (DataSegmentLength) |
//! pad to 4 | DataDigest (0/4)`.
#![forbid(unsafe_code)]

pub mod codec;
pub mod digest;
pub mod serial;
pub mod types;
pub mod view;

#[allow(unused_imports)]
pub use codec::*;
pub use serial::SerialNumber;
pub use types::*;
