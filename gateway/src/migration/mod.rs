//! Live migration of a LUN between two backends while hosts use it.
//!
//! - `mirror`: the backend the LUN runs on meanwhile ([`Mirror`]): cursor, phase, the
//!   stripe locks that keep a copy and a host write apart, mirrored writes.
//! - `copy`: the copy on its own thread ([`Copier`]): one pass (mirror mode) or dirty
//!   passes and a stun (DBT mode).
//! - `record`: the durable record of a migration in the state directory, for `kill -9`.
//!
//! The control plane (`crate::control::migration`) swaps the LUN's logical unit for one
//! over a [`Mirror`] (same identity, reservations and unit id: the host sees no change),
//! and at the end for one over the destination (commit) or the source again (cancel,
//! rollback, failure).

pub mod copy;
#[cfg(test)]
mod loop_plans;
pub mod mirror;
mod mirror_queue;
pub mod record;
mod stripes;

use std::io;
use std::sync::Arc;

pub use copy::{Copier, CopySettings};
pub use mirror::{
    Mirror, Mode, Phase, Shared, COPY_PIECE_BYTES, DIRTY_LOG_REGION_BYTES, REGION_BYTES,
};
pub use record::Record;
pub use stripes::HeldStripes;

use crate::backend::{Backend, PoolVolume, RingFile};
use crate::changes::ChangeTracker;
use crate::disk::LogicalUnit;

/// A logical unit's backend as an `Arc<dyn Backend>`: the source of a migration is the
/// unit the LUN ran on, kept alive (and restored as it was on a rollback).
pub struct UnitBackend(pub Arc<LogicalUnit>);

impl Backend for UnitBackend {
    fn size_bytes(&self) -> u64 {
        self.0.backend().size_bytes()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.backend().read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.backend().write_at(offset, data)
    }
    fn flush(&self) -> io::Result<()> {
        self.0.backend().flush()
    }
    fn unmap(&self, offset: u64, len: u64) -> io::Result<()> {
        self.0.backend().unmap(offset, len)
    }
    fn kind(&self) -> &'static str {
        self.0.backend().kind()
    }
    fn thin(&self) -> bool {
        self.0.backend().thin()
    }
    fn mapped_extent(&self, offset: u64, max_len: u64) -> io::Result<(bool, u64)> {
        self.0.backend().mapped_extent(offset, max_len)
    }
    // The mirror writes the source on its ring when both sides are files
    // (`Mirror::ring_legs`), marking its change map first.
    fn ring_file(&self) -> Option<RingFile<'_>> {
        self.0.backend().ring_file()
    }
    fn before_ring_write(&self, offset: u64, len: u64) {
        self.0.backend().before_ring_write(offset, len);
    }
    fn pool_volume(&self) -> Option<&PoolVolume> {
        None
    }
    // A file's synchronous calls may block; RAM, null and pool volumes answer on the
    // event loop as they do as plain LUNs.
    fn flush_may_block(&self) -> bool {
        let inner = self.0.backend();
        inner.flush_may_block() || inner.ring_file().is_some()
    }
    fn io_may_block(&self) -> bool {
        let inner = self.0.backend();
        inner.io_may_block() || inner.ring_file().is_some()
    }
    fn write_needs_record(&self, offset: u64, len: u64) -> bool {
        self.0.backend().write_needs_record(offset, len)
    }
    fn logical_block_bytes(&self) -> Option<u32> {
        Some(self.0.block_size())
    }
    fn change_tracker(&self) -> Option<&Arc<ChangeTracker>> {
        self.0.backend().change_tracker()
    }
    fn release_memory(&mut self) {
        if let Some(backend) = Arc::get_mut(&mut self.0).and_then(LogicalUnit::backend_mut) {
            backend.release_memory();
        }
    }
}

/// A backend shared by `Arc` as a `Box<dyn Backend>` (the destination after the commit).
pub struct SharedBackend(pub Arc<dyn Backend>);

impl Backend for SharedBackend {
    fn size_bytes(&self) -> u64 {
        self.0.size_bytes()
    }
    fn refresh_size(&self) -> u64 {
        self.0.refresh_size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write_at(offset, data)
    }
    fn flush(&self) -> io::Result<()> {
        self.0.flush()
    }
    fn unmap(&self, offset: u64, len: u64) -> io::Result<()> {
        self.0.unmap(offset, len)
    }
    fn kind(&self) -> &'static str {
        self.0.kind()
    }
    fn thin(&self) -> bool {
        self.0.thin()
    }
    fn mapped_extent(&self, offset: u64, max_len: u64) -> io::Result<(bool, u64)> {
        self.0.mapped_extent(offset, max_len)
    }
    fn ring_file(&self) -> Option<RingFile<'_>> {
        self.0.ring_file()
    }
    fn pool_volume(&self) -> Option<&PoolVolume> {
        self.0.pool_volume()
    }
    fn flush_may_block(&self) -> bool {
        self.0.flush_may_block()
    }
    fn io_may_block(&self) -> bool {
        self.0.io_may_block()
    }
    fn logical_block_bytes(&self) -> Option<u32> {
        self.0.logical_block_bytes()
    }
    fn change_tracker(&self) -> Option<&Arc<ChangeTracker>> {
        self.0.change_tracker()
    }
    fn release_memory(&mut self) {
        if let Some(backend) = Arc::get_mut(&mut self.0) {
            backend.release_memory();
        }
    }
}

/// One migration in progress: what the control plane holds.
pub struct Migration {
    /// The destination's spec as given.
    pub to: String,
    pub settings: CopySettings,
    /// The unit the LUN ran on before (restored by cancel and rollback).
    pub source_unit: Arc<LogicalUnit>,
    pub dest: Arc<dyn Backend>,
    pub shared: Arc<Shared>,
    pub copier: Option<std::thread::JoinHandle<()>>,
}

impl Migration {
    /// The status for `migrate_status`: copied, dirty, passes, rate, ETA, state.
    pub fn status(&self) -> serde_json::Value {
        let shared = &self.shared;
        let copied = shared
            .copied_bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        let elapsed = shared.started.elapsed().as_secs_f64().max(1e-3);
        let rate = copied as f64 / elapsed;
        let phase = shared.phase();
        // Behind the cursor in the first pass; for DBT's later passes, the last pass's size
        // (what was dirty when it started).
        let passes = shared.passes.lock().map(|p| p.clone()).unwrap_or_default();
        let remaining = match (phase, shared.mode) {
            (Phase::Copying, Mode::Dbt) if !passes.is_empty() => {
                passes.last().copied().unwrap_or(0)
            }
            (Phase::Copying, _) => shared.size_bytes.saturating_sub(shared.cursor_bytes()),
            _ => 0,
        };
        serde_json::json!({
            "to": self.to,
            "mode": match shared.mode { Mode::Mirror => "mirror", Mode::Dbt => "dbt" },
            "state": phase.name(),
            "size_bytes": shared.size_bytes,
            "copied_bytes": copied,
            "cursor_bytes": shared.cursor_bytes(),
            "dirty_bytes": remaining,
            "passes": passes.len(),
            "bytes_per_pass": passes,
            "copied_ratio": copied as f64 / shared.size_bytes.max(1) as f64,
            "rate_bytes_per_second": rate,
            "eta_seconds": if phase == Phase::Copying && rate > 0.0 { Some(remaining as f64 / rate) } else { None },
            "elapsed_seconds": elapsed,
            "stun_us": shared.stun_us.load(std::sync::atomic::Ordering::Relaxed),
            "error": shared.error(),
        })
    }
}
