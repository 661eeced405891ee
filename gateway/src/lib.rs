//! The iSCSI target side (work in progress; see ARCHITECTURE.md for what is built).
//!
//! - [`disk`]: SCSI block-device emulation (SPC/SBC) over a [`backend::Backend`]. No network.
//! - [`backend`]: LUN storage: RAM, null, file.
//! - [`conglomerate`]: the volumes bound for a host through protocol endpoints.
//! - [`reservation`]: SCSI-2 and persistent reservations of a unit, the per-command check.
//! - [`session`]: the sans-IO target session (login responder, discovery, full-feature phase).
//! - [`server`]: portals on io_uring TCP and the embeddable target.
//! - [`config`]: the `iscsi-gateway --config` TOML file.

pub mod backend;
pub mod config;
pub mod conglomerate;
pub mod control;
pub mod disk;
pub mod portal;
pub mod reservation;
pub mod server;
pub mod session;
