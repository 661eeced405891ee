//! Changed-block tracking of a LUN, for incremental backup and for migration: which
//! chunks were written since a change ID (`map`, no I/O), made durable and fed by the
//! LUN's writes (`tracker`). See ARCHITECTURE.md, "Changed-block tracking".

pub mod map;
pub mod region_log;
pub mod tracker;

pub use map::{ChangeError, ChangeId, ChangeMap, Changed, DEFAULT_CHUNK_BYTES};
pub use region_log::RegionLog;
pub use tracker::{ChangeTracker, Tracked, REGION_BYTES};
