//! Receive buffers sized on demand. A connection keeps only a small buffer of its own
//! (one login PDU, a few KiB: what an idle session's armed receive needs) and takes a
//! full-size buffer (one whole PDU at our MaxRecvDataSegmentLength) from its event loop's
//! pool only while PDUs too large for it, or a burst that fills it, are being received.
//! With a receive armed on every logged-in connection, a buffer per connection sized for
//! the largest PDU cost 256 KiB of RSS per idle session; the pool holds one per busy
//! connection instead, and a few spare so a burst does not allocate.
#![forbid(unsafe_code)]

use std::sync::Mutex;

/// Spare full-size buffers an event loop keeps for its connections' next bursts: freed
/// memory beyond them goes back to the allocator.
pub const SPARE_RX_BUFFERS_MAX: usize = 16;

/// Full-size receive buffers shared by the connections of one event loop.
#[derive(Debug)]
pub struct RxBufferPool {
    spare_max: usize,
    /// Buffers no connection holds; each is fully initialised, so one taken again needs no
    /// zeroing (only the bytes a receive filled are ever read).
    spare: Mutex<Vec<Vec<u8>>>,
}

impl RxBufferPool {
    pub fn new(spare_max: usize) -> RxBufferPool {
        RxBufferPool {
            spare_max,
            spare: Mutex::new(Vec::new()),
        }
    }

    /// A buffer of exactly `len` bytes: a spare one of that length, else a new one (the
    /// limit behind `len` can change with the configuration, so lengths may differ).
    pub fn take(&self, len: usize) -> Vec<u8> {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        match spare.iter().position(|b| b.len() == len) {
            Some(at) => spare.swap_remove(at),
            None => {
                drop(spare);
                vec![0; len]
            }
        }
    }

    /// Hands a buffer back; kept as a spare while there is room, else freed.
    pub fn give(&self, buffer: Vec<u8>) {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < self.spare_max {
            spare.push(buffer);
        }
    }

    /// Spare buffers held now.
    pub fn spare_count(&self) -> usize {
        self.spare.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Default for RxBufferPool {
    fn default() -> Self {
        RxBufferPool::new(SPARE_RX_BUFFERS_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_is_taken_again_and_spares_are_bounded() {
        let pool = RxBufferPool::new(2);
        let mut first = pool.take(1000);
        assert_eq!(first.len(), 1000);
        first[0] = 7;
        pool.give(first);
        assert_eq!(pool.spare_count(), 1);
        // Another length is not served from the spare of this one.
        assert_eq!(pool.take(500).len(), 500);
        let again = pool.take(1000);
        assert_eq!(again[0], 7, "the spare buffer itself came back");
        assert_eq!(pool.spare_count(), 0);
        for _ in 0..5 {
            pool.give(vec![0; 1000]);
        }
        assert_eq!(pool.spare_count(), 2);
    }
}
