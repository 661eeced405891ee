//! The verify intervals of one file that a `verify_backlog` check read back and that no
//! write touched since: the verify phase at the end of the pass skips them, as fio's
//! does (its backlog check takes the blocks out of its log), so a backlog job reads each
//! written block back once.
//!
//! One bit per interval of the job's region (a 64 GiB region at 4 KiB intervals: 2 MiB).

use super::generation::ReadBackIo;

#[derive(Debug, Clone)]
pub(crate) struct VerifiedBlocks {
    region_offset: u64,
    interval_bytes: u64,
    bits: Vec<u64>,
}

impl VerifiedBlocks {
    pub(crate) fn new(region_offset: u64, region_bytes: u64, interval_bytes: u32) -> Self {
        let interval_bytes = u64::from(interval_bytes.max(1));
        let intervals = region_bytes.div_ceil(interval_bytes);
        VerifiedBlocks {
            region_offset,
            interval_bytes,
            bits: vec![0; intervals.div_ceil(64) as usize],
        }
    }

    /// The intervals `[offset, offset + len)` covers, relative to the region, clamped to it.
    fn intervals(&self, offset: u64, len: u32) -> std::ops::Range<u64> {
        let start = offset.saturating_sub(self.region_offset);
        let first = start / self.interval_bytes;
        let end = (start + u64::from(len)).div_ceil(self.interval_bytes);
        let limit = self.bits.len() as u64 * 64;
        first.min(limit)..end.min(limit)
    }

    fn get(&self, interval: u64) -> bool {
        self.bits[(interval / 64) as usize] & (1 << (interval % 64)) != 0
    }

    fn set(&mut self, interval: u64, on: bool) {
        let word = &mut self.bits[(interval / 64) as usize];
        if on {
            *word |= 1 << (interval % 64);
        } else {
            *word &= !(1 << (interval % 64));
        }
    }

    /// A backlog check read these bytes back.
    pub(crate) fn mark(&mut self, offset: u64, len: u32) {
        for interval in self.intervals(offset, len) {
            self.set(interval, true);
        }
    }

    /// A write was planned over these bytes: they must be checked again.
    pub(crate) fn clear(&mut self, offset: u64, len: u32) {
        for interval in self.intervals(offset, len) {
            self.set(interval, false);
        }
    }

    /// The parts of `io` not verified yet, appended to `runs`.
    pub(crate) fn unverified(&self, io: ReadBackIo, runs: &mut Vec<ReadBackIo>) {
        let all = self.intervals(io.offset, io.len);
        let mut run_start: Option<u64> = None;
        let mut close = |start: u64, end: u64| {
            runs.push(ReadBackIo {
                offset: self.region_offset + start * self.interval_bytes,
                len: ((end - start) * self.interval_bytes) as u32,
                ..io
            });
        };
        // Bounded by the intervals of one read.
        for interval in all.clone() {
            if self.get(interval) {
                if let Some(start) = run_start.take() {
                    close(start, interval);
                }
            } else {
                run_start.get_or_insert(interval);
            }
        }
        if let Some(start) = run_start {
            close(start, all.end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(offset: u64, len: u32) -> ReadBackIo {
        ReadBackIo {
            file: 0,
            offset,
            len,
            generation: 3,
        }
    }

    #[test]
    fn verified_intervals_are_cut_out_until_written_again() {
        // A region of 64 KiB at 1 MiB, 4 KiB intervals.
        let mut verified = VerifiedBlocks::new(1 << 20, 64 << 10, 4096);
        verified.mark((1 << 20) + 8192, 8192); // intervals 2 and 3
        let mut runs = Vec::new();
        verified.unverified(io(1 << 20, 32 << 10), &mut runs);
        assert_eq!(
            runs,
            vec![io(1 << 20, 8192), io((1 << 20) + (16 << 10), 16 << 10)]
        );
        verified.clear((1 << 20) + 12288, 4096); // interval 3 written again
        runs.clear();
        verified.unverified(io(1 << 20, 32 << 10), &mut runs);
        assert_eq!(
            runs,
            vec![io(1 << 20, 8192), io((1 << 20) + 12288, 20 << 10)]
        );
    }
}
