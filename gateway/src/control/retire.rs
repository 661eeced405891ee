//! Storage the control plane retires is given back off the I/O path: a migration's source
//! after the commit, its destination after a cancel, a rollback or a failure, and a RAM
//! LUN that is detached (or whose target is deleted).
//!
//! Such a backend can hold GiBs of RAM. Dropped on the control thread that ended the
//! migration, all of it went back at once: when a RAM LUN's chunks lived in the allocator's
//! heap (a 256 MiB RAM LUN was 4,096 boxes of 64 KiB, most allocated by the event loops, so
//! freed into their arenas) the event loops, which allocate from those arenas for every
//! command, waited behind it, and host writes crossing the commit of a 256 MiB RAM LUN took
//! 7-9 ms against 0.2-0.4 ms just before (`scripts/bench-migration-switch.sh`, per command).
//! RAM LUNs are mapped memory now (`backend::ram`), given back with `munmap`, but unmapping
//! GiBs still takes the kernel a while on the thread that does it, which must not be an
//! event loop. Here a thread of its own waits until it holds the last reference (commands
//! still in flight on the old unit finish first, and so never read memory given back),
//! then has the backend give its memory back ([`crate::backend::Backend::release_memory`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::disk::LogicalUnit;

/// How long the thread waits for the other references to go; past it the backend is
/// dropped as before, by whoever holds it last.
const LAST_REFERENCE_WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);

/// Retires a unit the LUN no longer runs on.
pub(super) fn unit(unit: Arc<LogicalUnit>) {
    later("unit", unit, |unit| match Arc::try_unwrap(unit) {
        // The last strong reference. Weak ones (the per-LUN statistics, the copy
        // manager's registry of units by identity) do not keep the unit: they cannot
        // upgrade any more.
        Ok(mut unit) => {
            if let Some(backend) = unit.backend_mut() {
                backend.release_memory();
            }
            Ok(())
        }
        Err(unit) => Err(unit),
    });
}

/// Retires a backend no unit runs on any more.
pub(super) fn backend(backend: Arc<dyn Backend>) {
    later("backend", backend, |mut backend| {
        match Arc::get_mut(&mut backend) {
            Some(only) => {
                only.release_memory();
                Ok(())
            }
            None => Err(backend),
        }
    });
}

/// Runs `release` on `item` from a thread of its own until it succeeds (no one else holds
/// the item any more) or [`LAST_REFERENCE_WAIT`] passes; `release` hands the item back
/// while others still hold it.
fn later<T: ?Sized + Send + Sync + 'static>(
    what: &'static str,
    item: Arc<T>,
    release: fn(Arc<T>) -> Result<(), Arc<T>>,
) {
    let spawned = std::thread::Builder::new()
        .name("retire".into())
        .spawn(move || {
            let mut item = item;
            let deadline = Instant::now() + LAST_REFERENCE_WAIT;
            // Bounded by the deadline.
            loop {
                item = match release(item) {
                    Ok(()) => return,
                    Err(still_held) => still_held,
                };
                if Instant::now() >= deadline {
                    tracing::debug!(what, "a retired backend is still referenced; dropped as is");
                    return;
                }
                std::thread::sleep(POLL);
            }
        });
    if let Err(error) = spawned {
        // The item went down with the closure: dropped here, as before.
        tracing::warn!(what, %error, "no thread to retire a backend on; freed at once");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::RamBackend;

    #[test]
    fn a_retired_backend_gives_its_memory_back_only_once_no_one_else_holds_it() {
        let ram = Arc::new(RamBackend::new(8 << 20));
        ram.write_at(0, &[7u8; 4096]).unwrap();
        ram.write_at(5 << 20, &[9u8; 4096]).unwrap();
        assert_eq!(ram.allocated_bytes(), 2 * 64 * 1024);
        let user = Arc::clone(&ram);
        backend(Arc::clone(&ram) as Arc<dyn Backend>);
        // Still used (a command in flight on the old unit): its data stays.
        std::thread::sleep(POLL * 5);
        let mut block = [0u8; 4096];
        user.read_at(0, &mut block).unwrap();
        assert_eq!(block, [7u8; 4096]);
        assert_eq!(ram.allocated_bytes(), 2 * 64 * 1024);
        drop(user);
        drop(ram);
    }

    #[test]
    fn ram_gives_back_every_chunk_and_reads_zeros_after() {
        let mut ram = RamBackend::new(16 << 20);
        for n in 0..16u64 {
            ram.write_at(n << 20, &[1u8; 512]).unwrap();
        }
        assert_eq!(ram.allocated_bytes(), 16 * 64 * 1024);
        ram.release_memory();
        assert_eq!(ram.allocated_bytes(), 0);
        let mut block = [5u8; 512];
        ram.read_at(3 << 20, &mut block).unwrap();
        assert_eq!(block, [0u8; 512]);
    }
}
