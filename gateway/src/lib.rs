//! The iSCSI target side (work in progress; see ARCHITECTURE.md for what is built).
//!
//! - [`disk`]: SCSI block-device emulation (SPC/SBC) over a [`backend::Backend`]. No network.
//! - [`backend`]: LUN storage: RAM, null, file, pool volumes, LUNs of other arrays.
//! - [`changes`]: changed-block tracking (per-LUN map, change IDs, durable).
//! - [`conglomerate`]: the volumes bound for a host through protocol endpoints.
//! - [`migration`]: live migration of a LUN between backends (mirror and DBT modes).
//! - [`reservation`]: SCSI-2 and persistent reservations of a unit, the per-command check.
//! - [`session`]: the sans-IO target session (login responder, discovery, full-feature phase).
//! - [`server`]: portals on io_uring TCP and the embeddable target.
//! - [`config`]: the `iscsi-gateway --config` TOML file.

pub mod backend;
pub mod changes;
pub mod config;
pub mod conglomerate;
pub mod control;
pub mod disk;
pub mod migration;
pub mod portal;
pub mod reservation;
pub mod server;
pub mod session;
mod wake_batch;
