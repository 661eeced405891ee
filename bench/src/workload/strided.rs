//! fio's strided zones (fio(1) `zonemode=strided`, `zonesize`, `zonerange`, `zoneskip`),
//! walked as fio's `setup_strided_zone_mode` (io_u.c) walks them before each I/O:
//!
//! - I/O stays in the current zone, `[start, start + zonerange)`, until `zonesize` bytes
//!   were issued there (every I/O counts its whole length, fio's `zone_bytes`); then the
//!   zone moves `zonerange + zoneskip` further, and back to the region's start once it would
//!   begin at or past the end of the target (fio's `real_file_size`, which may lie beyond
//!   `offset + size`: zones are not held to the region);
//! - at a zone's start, and again after every `zonerange` bytes of I/O in it (a `zonesize`
//!   larger than `zonerange` visits the zone again), the zone's positions start over: each
//!   direction's sequential position goes back to the zone's start and the random map is
//!   emptied (fio's `fio_file_reset`);
//! - a sequential position that has run past the zone's end goes back to its start.
//!
//! The skipped bytes count for nothing: the job still ends when `size` (or `io_size`) bytes
//! were issued (fio's `io_bytes_exceeded`), so a job usually walks its zones several times.
//! A job with an `io_size` above `size` issues it in rounds of `size` bytes (fio's `do_io`
//! stops there, and the next round starts the file over, `clear_io_state`), each from the
//! first zone; fio 3.42 lets sequential writes, and random writes without the random map,
//! run their whole `io_size` in one round. This module only moves the zone; the generator
//! places each I/O in it.

/// fio's strided zones, resolved (fio's `fixup_options`: `zonerange` defaults to
/// `zonesize`, a `zoneskip` in zones is a multiple of `zonesize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StridedZones {
    /// `zonesize`: bytes issued in a zone before the next one.
    pub io_per_zone_bytes: u64,
    /// `zonerange`: the length of a zone; sequential I/O starts over at its end, random
    /// I/O draws from it.
    pub range_bytes: u64,
    /// `zoneskip`: the gap between the end of one zone and the start of the next.
    pub skip_bytes: u64,
    /// Where the target ends (a byte offset, at or past the region's end): the zones wrap
    /// to the region's start there.
    pub target_end_bytes: u64,
}

/// Where a job is in its walk over the zones.
#[derive(Debug, Clone)]
pub(crate) struct ZoneWalk {
    zones: StridedZones,
    /// Bytes from the region's start to the target's end: no zone starts there or later.
    reach_bytes: u64,
    /// The current zone's start, in bytes from the region's start.
    start: u64,
    /// Bytes issued in the current zone.
    issued: u64,
    /// Bytes of one round, and issued in this one.
    round_bytes: u64,
    issued_in_round: u64,
}

impl ZoneWalk {
    /// The walk of a region starting at `region_offset`, at its first zone, going back to it
    /// after every `round_bytes` bytes of I/O.
    pub(crate) fn new(zones: StridedZones, region_offset: u64, round_bytes: u64) -> ZoneWalk {
        ZoneWalk {
            zones,
            reach_bytes: zones.target_end_bytes.saturating_sub(region_offset),
            start: 0,
            issued: 0,
            round_bytes,
            issued_in_round: 0,
        }
    }

    /// Before an I/O: back to the first zone once a round is over, on to the next zone once
    /// this one had its `zonesize` bytes. Returns whether the zone's positions start over
    /// (see the module docs).
    pub(crate) fn turn(&mut self) -> bool {
        if self.issued_in_round >= self.round_bytes {
            self.rewind();
        }
        if self.issued >= self.zones.io_per_zone_bytes {
            self.issued = 0;
            self.start = self
                .start
                .saturating_add(self.zones.range_bytes)
                .saturating_add(self.zones.skip_bytes);
            if self.start >= self.reach_bytes {
                self.start = 0;
            }
        }
        self.issued.is_multiple_of(self.zones.range_bytes)
    }

    /// An I/O of `len` bytes went to the current zone.
    pub(crate) fn on_io(&mut self, len: u32) {
        self.issued += u64::from(len);
        self.issued_in_round += u64::from(len);
    }

    /// Back to the first zone (a new round or loop: fio's `clear_io_state`).
    pub(crate) fn rewind(&mut self) {
        self.start = 0;
        self.issued = 0;
        self.issued_in_round = 0;
    }

    /// The current zone's start, in bytes from the region's start.
    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    /// The current zone's end, in bytes from the region's start.
    pub(crate) fn end(&self) -> u64 {
        self.start.saturating_add(self.zones.range_bytes)
    }

    /// Bytes from the region's start to the target's end, where every I/O must end.
    pub(crate) fn reach_bytes(&self) -> u64 {
        self.reach_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(io_per_zone: u64, range: u64, skip: u64, end: u64) -> ZoneWalk {
        ZoneWalk::new(
            StridedZones {
                io_per_zone_bytes: io_per_zone,
                range_bytes: range,
                skip_bytes: skip,
                target_end_bytes: end,
            },
            0,
            u64::MAX,
        )
    }

    /// The zone starts and resets of `ios` I/Os of `len` bytes.
    fn starts(walk: &mut ZoneWalk, ios: usize, len: u32) -> Vec<(u64, bool)> {
        (0..ios)
            .map(|_| {
                let reset = walk.turn();
                walk.on_io(len);
                (walk.start(), reset)
            })
            .collect()
    }

    #[test]
    fn moves_by_range_and_skip_and_wraps_at_the_target_end() {
        let mut zones = walk(2, 2, 6, 32);
        let seen: Vec<u64> = starts(&mut zones, 10, 1).iter().map(|s| s.0).collect();
        assert_eq!(seen, [0, 0, 8, 8, 16, 16, 24, 24, 0, 0]);
    }

    #[test]
    fn a_zone_larger_than_its_range_starts_over_every_range() {
        let mut zones = walk(6, 2, 0, 100);
        let seen = starts(&mut zones, 7, 1);
        let resets: Vec<bool> = seen.iter().map(|s| s.1).collect();
        assert_eq!(resets, [true, false, true, false, true, false, true]);
        assert_eq!(seen[6].0, 2, "the seventh byte opens the next zone");
    }

    #[test]
    fn a_round_starts_over_at_the_first_zone() {
        let mut zones = walk(2, 2, 2, 100);
        zones.round_bytes = 6;
        let seen: Vec<u64> = starts(&mut zones, 8, 1).iter().map(|s| s.0).collect();
        assert_eq!(seen, [0, 0, 4, 4, 8, 8, 0, 0]);
    }
}
