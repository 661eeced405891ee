//! Helpers for tests that drive an [`Engine`] by hand: this crate's engine tests and the
//! system tests against real targets. Built for tests and with the `test-utils` feature.

use std::time::{Duration, Instant};

use super::Engine;
use crate::io::{Direction, IoDone, IoUnit};

/// A unit of `len` bytes at `offset`, moving through `buffer`.
pub fn unit(id: u64, direction: Direction, offset: u64, buffer: Vec<u8>, len: u32) -> IoUnit {
    IoUnit {
        id,
        direction,
        file: 0,
        offset,
        len,
        buffer,
    }
}

/// Queues, submits and reaps every unit (no more at once than the engine takes), each reap
/// waiting up to `wait`; returns the completions sorted by id. Panics when an engine call
/// fails or the units take longer than `wait` in all.
pub fn run_units(engine: &mut dyn Engine, units: Vec<IoUnit>, wait: Duration) -> Vec<IoDone> {
    let total = units.len();
    let mut waiting = units.into_iter();
    let mut next = waiting.next();
    let mut done = Vec::with_capacity(total);
    let deadline = Instant::now() + wait;
    while done.len() < total {
        assert!(Instant::now() < deadline, "I/O did not complete");
        while let Some(u) = next.take() {
            match engine.queue(u) {
                Ok(()) => next = waiting.next(),
                Err(back) => {
                    next = Some(back);
                    break;
                }
            }
        }
        engine.submit().expect("submit");
        engine.reap(1, wait, &mut done).expect("reap");
    }
    done.sort_by_key(|d| d.unit.id);
    done
}
