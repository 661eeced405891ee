//! The iSCSI initiator data path.
//!
//! Layers, bottom up (see `ARCHITECTURE.md` at the repository root):
//! - [`pdu`]: the RFC 7143 wire format (a checked view over the 48-byte header, typed PDUs,
//!   AHS, padding, digests) and RFC 1982 serial arithmetic. No I/O.
//! - [`text`]: key=value text and the RFC 7143 negotiation rules. No I/O.
//! - [`scsi`]: CDB builders and decoders for the SCSI commands the tools use, sense data. No I/O.
//! - [`session`]: the sans-IO initiator session (login, discovery, full-feature phase).
//! - [`transport`]: TCP over io_uring.
//! - [`conn`]: the sans-IO connection driver every path drives (resumable PDU receiver,
//!   send batch).
//! - [`shard`]: per-core shards: one pinned thread, one loop and one session each, fed
//!   through bounded queues (the fast data path), over software TCP or an adapter.
//! - [`adapter`]: the interface to iSCSI offload adapters (dependent and independent HNICs),
//!   their queue rings, and the host paths a shard drives them with.
//! - [`steering`]: NIC queue steering for the software path (RSS port choice, XPS,
//!   `SO_INCOMING_CPU`).
//! - [`client`]: a blocking convenience client that drives a session over the transport.
//! - [`sys`]: the one eventfd and the one aligned buffer (for `O_DIRECT`) of the workspace.
//! - [`url`]: libiscsi-style `iscsi://` target URLs (shared by `iscsi-ctl` and `iscsi-bench`).

pub mod adapter;
pub mod auth;
pub mod client;
pub mod conn;
pub mod credentials;
pub mod names;
pub mod pdu;
pub mod scsi;
pub mod session;
pub mod shard;
pub mod steering;
pub mod sys;
pub mod text;
pub mod transport;
pub mod url;
