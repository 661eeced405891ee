//! Directions, offsets and sizes (fio(1): `rw`, `rwmixread`, `size`, `offset`, `io_size`,
//! `loops`, `number_ios`, `time_based`, `blockalign`, `norandommap`, `random_distribution`).
//!
//! - Mixed jobs pick each I/O's direction by `rwmixread` percent.
//! - Sequential I/O keeps one position per direction, as fio does (`rw=rw` reads and writes
//!   each walk the region), starting at the region's start; an I/O that would cross the end
//!   wraps to the start, which begins a new *pass* of that direction.
//! - Random I/O draws a map unit (the smallest `blockalign` of the job's directions, by
//!   default its smallest block size). With the random map (fio's default) the units of one
//!   pass come from a keyed permutation, so each is visited once per pass in a seeded order;
//!   the next pass gets a new key. `norandommap` draws units uniformly with repeats. A skewed
//!   `random_distribution` draws from its model and, as in fio, does without the map. fio
//!   turns the random map off when `blockalign` is set; the permutation has no such limit,
//!   so here the map stays on. The offset is the unit's, aligned down to the direction's
//!   `blockalign`; an I/O that would cross the region's end is moved back to fit.
//! - A loop moves `io_size` bytes (default `size`); the last I/O of a loop is shortened to a
//!   multiple of the minimum block size that fits, and a loop ends when not even the minimum
//!   fits. `loops` loops make the job, unless `time_based`, which never ends by bytes and has
//!   no loop boundaries. Each new loop starts over at the region's start, as fio's does, and
//!   begins a new pass. `number_ios` ends the job after that many I/Os in any case.
//! - fio's offset modifiers ([`OffsetModifiers`]), placed as fio's `get_next_offset` does and
//!   checked against fio's `write_iolog` in `tests/fio_options.rs`: `rw=read:8k` adds 8 KiB
//!   after each I/O (holes; running off the end ends the loop, as in fio), `rw=read:-8k`
//!   walks backwards (wrapping to `size - 8k`), `rw=randread:N` draws a random offset every
//!   N I/Os and places the ones between by `rw_sequencer` (after the last I/O, or on it),
//!   and `percentage_random` continues sequentially instead of drawing for the rest. Such a
//!   job's writes are tracked by the generation table, not by pass order.
//! - fio's strided zones ([`super::strided`]): I/O goes to the current zone, sequential from
//!   where the direction's last I/O ended (the zone's start after a reset), random from the
//!   zone's units (its own random map, emptied at each reset), and, as fio's
//!   `get_next_offset` fails there, an offset `size` or more past the zone's start or an I/O
//!   past the target's end ends the loop (so does an I/O of a block size range past the
//!   region's end: fio's `io_u_fits`). Zones take plain offsets: with offset modifiers,
//!   `percentage_random` or a skewed distribution the job is refused. Writes are tracked by
//!   the table.

use super::blocksize::BlockSizePicker;
use super::distribution::{SkewedSampler, ZonedSampler};
use super::permutation::Permutation;
use super::rng::{stream_seed, streams, SplitMix64};
use super::strided::ZoneWalk;
use super::{OffsetModifiers, RwSequencer, WorkloadConfig, WorkloadError};
use crate::io::Direction;
use crate::io::{Distribution, PerDir, RwKind};

pub(crate) enum GenStep {
    Io {
        direction: Direction,
        offset: u64,
        len: u32,
    },
    /// One loop is over; the next call starts the next loop.
    LoopEnd,
    Done,
}

/// A sequential stream of one direction.
#[derive(Debug, Clone, Default)]
pub(crate) struct SeqCursor {
    /// Bytes from the region's start.
    pub(crate) position: u64,
    pub(crate) pass: u64,
    /// The first pass of the current loop.
    pub(crate) loop_first_pass: u64,
}

/// The random map: a permutation per pass.
#[derive(Debug, Clone)]
pub(crate) struct RandomMap {
    pub(crate) permutation: Permutation,
    pub(crate) pass: u64,
    /// Units handed out in this pass.
    pub(crate) visited: u64,
    pub(crate) loop_first_pass: u64,
}

impl RandomMap {
    fn is_exhausted(&self) -> bool {
        self.visited >= self.permutation.len()
    }

    /// Starts the next pass over `units` units: a new order, nothing visited.
    fn begin_pass(&mut self, seed: u64, units: u64) {
        self.pass += 1;
        self.permutation = pass_permutation(seed, units, self.pass);
        self.visited = 0;
    }

    /// The next unit of the pass (a new pass once this one visited every unit).
    fn next_unit(&mut self, seed: u64, units: u64) -> u64 {
        if self.is_exhausted() {
            self.begin_pass(seed, units);
        }
        let unit = self.permutation.apply(self.visited);
        self.visited += 1;
        unit
    }
}

#[derive(Debug, Clone)]
enum RandomSource {
    Map(RandomMap),
    Uniform,
    Skewed(SkewedSampler),
    Zoned(ZonedSampler),
    /// fio's `sequence`: the block list, the stride flag, and I/Os issued per direction.
    Sequence {
        blocks: Vec<u64>,
        stride: bool,
        issued: PerDir<u64>,
    },
}

/// How the blocks a write stream visits can be told from its state alone, with no table: the
/// stream writes one fixed size and visits each block at most once per pass.
#[derive(Debug, Clone, Copy)]
pub(crate) enum WriteOrder {
    Sequential,
    RandomMap,
}

#[derive(Debug, Clone)]
pub(crate) struct Generator {
    seed: u64,
    region_offset: u64,
    size: u64,
    rw: RwKind,
    rwmixread_percent: u32,
    pickers: PerDir<Option<BlockSizePicker>>,
    align: PerDir<u64>,
    map_unit: u64,
    units: u64,
    random: Option<RandomSource>,
    sequential: PerDir<SeqCursor>,
    direction_rng: SplitMix64,
    size_rng: SplitMix64,
    offset_rng: SplitMix64,
    loop_bytes: u64,
    loops: u32,
    loops_done: u32,
    bytes_in_loop: u64,
    ios_total: u64,
    number_ios: Option<u64>,
    time_based: bool,
    loop_reset_pending: bool,
    /// Times the I/O started over on the region: a new loop, or a time-based job's new pass
    /// of the random map or sequential wrap. fio invalidates the file's page cache again
    /// at each (`loop_cache_invalidate`, or the file's reopening between loops).
    restarts: u64,
    done: bool,
    /// `rw=...:N`, `rw_sequencer`, `percentage_random`.
    mods: OffsetModifiers,
    /// I/Os left before the next random offset (fio's `ddir_seq_nr` countdown; starts at
    /// 1, so the first I/O of a random job is random).
    random_countdown: u32,
    /// Per direction, the region-relative start and end of its last I/O (fio's
    /// `last_start` and `last_pos`); cleared at each loop, as fio resets its files.
    last: PerDir<Option<(u64, u64)>>,
    /// `percentage_random`'s draws.
    sequential_choice_rng: SplitMix64,
    /// fio's strided zones; `units` then counts the units of one zone.
    zones: Option<ZoneWalk>,
}

impl Generator {
    pub(crate) fn new(config: &WorkloadConfig) -> Result<Self, WorkloadError> {
        if config.size_bytes == 0 {
            return Err(WorkloadError::ZeroSize);
        }
        if config.offset_bytes.checked_add(config.size_bytes).is_none() {
            return Err(WorkloadError::RegionOverflow {
                offset_bytes: config.offset_bytes,
                size_bytes: config.size_bytes,
            });
        }
        if config.loops == 0 {
            return Err(WorkloadError::ZeroLoops);
        }
        if config.rwmixread_percent > 100 {
            return Err(WorkloadError::RwMixOutOfRange(config.rwmixread_percent));
        }
        let mut pickers = PerDir::splat(None);
        let mut align = PerDir::splat(0u64);
        let mut min_len = u32::MAX;
        let mut map_unit = u64::MAX;
        for &direction in config.rw.directions() {
            let picker = BlockSizePicker::new(direction, config.block_sizes.get(direction))?;
            if u64::from(picker.max_bytes()) > config.size_bytes {
                return Err(WorkloadError::BlockLargerThanRegion {
                    direction,
                    len_bytes: picker.max_bytes(),
                    size_bytes: config.size_bytes,
                });
            }
            let direction_align = match config.block_align_bytes.get(direction) {
                Some(0) => return Err(WorkloadError::ZeroBlockAlign { direction }),
                Some(bytes) => u64::from(*bytes),
                None => u64::from(picker.min_bytes()),
            };
            min_len = min_len.min(picker.min_bytes());
            map_unit = map_unit.min(direction_align);
            *align.get_mut(direction) = direction_align;
            *pickers.get_mut(direction) = Some(picker);
        }
        let loop_bytes = config.io_size_bytes.unwrap_or(config.size_bytes);
        if loop_bytes < u64::from(min_len) {
            return Err(WorkloadError::IoSizeBelowBlockSize {
                io_size_bytes: loop_bytes,
                block_bytes: min_len,
            });
        }
        if config.strided_zones.is_some() {
            check_plain_offsets(config)?;
        }
        // Units whose start leaves room for the shortest I/O: of the region, or of one zone.
        let span_bytes = match &config.strided_zones {
            None => config.size_bytes,
            Some(zones) if zones.range_bytes < u64::from(min_len) => {
                return Err(WorkloadError::ZoneRangeBelowBlockSize {
                    range_bytes: zones.range_bytes,
                    block_bytes: min_len,
                })
            }
            Some(zones) => zones.range_bytes,
        };
        let units = (span_bytes - u64::from(min_len)) / map_unit + 1;
        let random = if config.rw.is_random() {
            Some(random_source(config, units, map_unit)?)
        } else {
            None
        };
        Ok(Generator {
            seed: config.seed,
            region_offset: config.offset_bytes,
            size: config.size_bytes,
            rw: config.rw,
            rwmixread_percent: config.rwmixread_percent,
            pickers,
            align,
            map_unit,
            units,
            random,
            sequential: PerDir::default(),
            direction_rng: SplitMix64::new(stream_seed(config.seed, streams::DIRECTION, 0)),
            size_rng: SplitMix64::new(stream_seed(config.seed, streams::BLOCK_SIZE, 0)),
            offset_rng: SplitMix64::new(stream_seed(config.seed, streams::OFFSET, 0)),
            loop_bytes,
            loops: config.loops,
            loops_done: 0,
            bytes_in_loop: 0,
            ios_total: 0,
            number_ios: config.number_ios,
            time_based: config.time_based,
            loop_reset_pending: false,
            restarts: 0,
            done: false,
            mods: config.offsets.clone(),
            random_countdown: 1,
            last: PerDir::default(),
            sequential_choice_rng: SplitMix64::new(stream_seed(
                config.seed,
                streams::SEQUENTIAL_CHOICE,
                0,
            )),
            zones: config
                .strided_zones
                .map(|zones| ZoneWalk::new(zones, config.offset_bytes, zone_round_bytes(config))),
        })
    }

    /// The next I/O. The direction drawn by `rwmixread` goes through `steer`, which may swap
    /// it for the mode's other direction (the pacer does, to serve whichever direction is
    /// due); `steer` must return one of the mode's directions.
    pub(crate) fn next_io(&mut self, steer: impl FnOnce(Direction) -> Direction) -> GenStep {
        if self.done {
            return GenStep::Done;
        }
        if self.number_ios.is_some_and(|limit| self.ios_total >= limit) {
            self.done = true;
            return GenStep::Done;
        }
        if self.loop_reset_pending {
            self.start_next_loop();
        }
        let direction = steer(self.pick_direction());
        let Some(picker) = self.pickers.get(direction) else {
            // Unreachable: pick_direction only returns the mode's directions, which all have
            // pickers. Ending the job is the safe answer.
            self.done = true;
            return GenStep::Done;
        };
        let min_len = picker.min_bytes();
        let mut len = picker.pick(&mut self.size_rng);
        if !self.time_based {
            let remaining = self.loop_bytes - self.bytes_in_loop;
            if remaining < u64::from(min_len) {
                self.loops_done += 1;
                if self.loops_done >= self.loops {
                    self.done = true;
                    return GenStep::Done;
                }
                self.loop_reset_pending = true;
                return GenStep::LoopEnd;
            }
            if u64::from(len) > remaining {
                // remaining < len <= u32::MAX here.
                len = (remaining - remaining % u64::from(min_len)) as u32;
            }
        }
        let placed = if self.zones.is_some() {
            self.enter_zone(direction);
            self.zone_place(direction, len)
        } else {
            self.pick_offset(direction, len).map(|offset| (offset, len))
        };
        let Some((offset, len)) = placed else {
            // A holed or backward sequential stream ran off the region's end, or a zone's
            // I/O off the target's: as in fio, that ends the loop even though fewer than
            // io_size bytes were moved.
            self.loops_done += 1;
            if self.loops_done >= self.loops {
                self.done = true;
                return GenStep::Done;
            }
            self.loop_reset_pending = true;
            return GenStep::LoopEnd;
        };
        *self.last.get_mut(direction) = Some((offset, offset + u64::from(len)));
        if let Some(zones) = &mut self.zones {
            zones.on_io(len);
        }
        self.bytes_in_loop += u64::from(len);
        self.ios_total += 1;
        GenStep::Io {
            direction,
            offset: self.region_offset + offset,
            len,
        }
    }

    fn pick_direction(&mut self) -> Direction {
        match self.rw.directions() {
            [only] => *only,
            _ => {
                if self.direction_rng.below(100) < u64::from(self.rwmixread_percent) {
                    Direction::Read
                } else {
                    Direction::Write
                }
            }
        }
    }

    /// The region-relative offset of the next I/O, as fio's `get_next_offset` places it:
    /// every `random_every`-th I/O of a random job draws a random offset (or, by
    /// `percentage_random`, continues sequentially), the ones between follow
    /// `rw_sequencer`; sequential jobs step by the block plus `seq_add_bytes`. `None` when a
    /// holed sequential stream has run off the end (not time-based).
    fn pick_offset(&mut self, direction: Direction, len: u32) -> Option<u64> {
        if !self.rw.is_random() {
            if self.mods.seq_add_bytes == 0 {
                return Some(self.sequential_offset(direction, len));
            }
            return self.holed_offset(direction, len);
        }
        let every = self.mods.random_every.max(1);
        self.random_countdown = self.random_countdown.saturating_sub(1);
        let new_offset = self.random_countdown == 0;
        if new_offset {
            self.random_countdown = every;
        }
        if new_offset {
            let percent = *self.mods.percentage_random.get(direction);
            // fio: random when a draw in 1..=100 is at most the percentage.
            if percent >= 100 || self.sequential_choice_rng.below(100) < u64::from(percent) {
                return self.random_offset(direction, len);
            }
            return self.follow_on(direction, len);
        }
        match self.mods.sequencer {
            RwSequencer::Sequential => self.follow_on(direction, len),
            RwSequencer::Identical => Some(match self.last.get(direction) {
                Some((start, _)) if start + u64::from(len) <= self.size => *start,
                _ => 0,
            }),
        }
    }

    /// Where the direction's last I/O ended, or a random offset when the next I/O would
    /// not fit before the region's end (fio falls back to a random block there too).
    fn follow_on(&mut self, direction: Direction, len: u32) -> Option<u64> {
        let end = self.last.get(direction).map_or(0, |(_, end)| end);
        if end + u64::from(len) <= self.size {
            Some(end)
        } else {
            self.random_offset(direction, len)
        }
    }

    /// fio's `get_next_seq_offset` with `ddir_seq_add`: the next offset is the last I/O's
    /// end plus the modifier (not for the first I/O, at the region's start); past either end
    /// it wraps, forward to the start, backward to `size + modifier`.
    fn holed_offset(&mut self, direction: Direction, len: u32) -> Option<u64> {
        let size = self.size;
        let len = u64::from(len);
        let mut last_end = self.last.get(direction).map_or(0, |(_, end)| end);
        if last_end >= size {
            if !self.time_based {
                return None;
            }
            last_end = 0;
            self.restarts += 1;
        }
        let add = i128::from(self.mods.seq_add_bytes);
        let size_i = i128::from(size);
        let mut pos = i128::from(last_end);
        if pos != 0 {
            pos += add;
            if pos < 0 || pos >= size_i {
                pos = if add > 0 { 0 } else { size_i + add };
            }
        }
        // An I/O never crosses the region's end (fio would trim it): move it back to fit.
        let pos = pos.clamp(0, size_i - i128::from(len)) as u64;
        Some(pos)
    }

    fn sequential_offset(&mut self, direction: Direction, len: u32) -> u64 {
        let size = self.size;
        let cursor = self.sequential.get_mut(direction);
        if cursor.position + u64::from(len) > size {
            cursor.position = 0;
            cursor.pass += 1;
            self.restarts += 1;
        }
        let offset = cursor.position;
        cursor.position += u64::from(len);
        offset
    }

    /// A random offset; `None` only when `random_distribution=sequence` has run past the
    /// region (fio then ends the loop).
    fn random_offset(&mut self, direction: Direction, len: u32) -> Option<u64> {
        let unit = match &mut self.random {
            Some(RandomSource::Map(map)) => {
                if map.is_exhausted() && self.time_based {
                    self.restarts += 1;
                }
                map.next_unit(self.seed, self.units)
            }
            Some(RandomSource::Uniform) | None => self.offset_rng.below(self.units),
            Some(RandomSource::Skewed(sampler)) => sampler.sample(&mut self.offset_rng),
            Some(RandomSource::Zoned(sampler)) => sampler.sample(direction, &mut self.offset_rng),
            Some(RandomSource::Sequence {
                blocks,
                stride,
                issued,
            }) => {
                // fio's __get_next_rand_offset_sequence, in units of blockalign.
                let count = issued.get_mut(direction);
                let nr = blocks.len() as u64;
                let index = (*count % nr) as usize;
                let block = if *stride {
                    (*count / nr) * nr + blocks[index]
                } else {
                    blocks[index]
                };
                *count += 1;
                let align = (*self.align.get(direction)).max(1);
                let offset = block.saturating_mul(align);
                return if offset.saturating_add(u64::from(len)) > self.size {
                    None
                } else {
                    Some(offset)
                };
            }
        };
        let mut offset = self.unit_offset(direction, unit);
        let len = u64::from(len);
        if offset + len > self.size {
            let last_start = self.size - len;
            let align = (*self.align.get(direction)).max(1);
            offset = last_start - last_start % align;
        }
        Some(offset)
    }

    /// fio's `setup_strided_zone_mode` before an I/O of `direction`: the zone moves on once
    /// it had its bytes; at a reset every direction starts over at the zone's start and the
    /// random map is emptied; a direction whose position ran past the zone's end starts over
    /// too (`None` stands for the zone's start).
    fn enter_zone(&mut self, direction: Direction) {
        let Some(zones) = &mut self.zones else {
            return;
        };
        if zones.turn() {
            self.last = PerDir::default();
            if let Some(RandomSource::Map(map)) = &mut self.random {
                map.begin_pass(self.seed, self.units);
            }
        }
        let zone_end = zones.end();
        if self
            .last
            .get(direction)
            .is_some_and(|(_, end)| end >= zone_end)
        {
            *self.last.get_mut(direction) = None;
        }
    }

    /// Where the next I/O goes in the current strided zone, from the region's start, and
    /// its length; `None` where fio's `get_next_offset` or `fill_io_u` would fail, which ends
    /// the loop: an offset `size` or more past the zone's start, an I/O past the target's end,
    /// or (for a direction with several block sizes) one whose shortest size does not fit
    /// before the region's end. Such an I/O is shortened to fit, where fio draws sizes until
    /// one does (`io_u_fits`).
    fn zone_place(&mut self, direction: Direction, len: u32) -> Option<(u64, u32)> {
        let (zone_start, reach) = self
            .zones
            .as_ref()
            .map(|zones| (zones.start(), zones.reach_bytes()))?;
        let offset = if self.rw.is_random() {
            zone_start + self.zone_random_offset(direction)?
        } else {
            let position = self.last.get(direction).map_or(zone_start, |(_, end)| end);
            // fio's get_next_seq_offset: a time-based job, or one writing more than its size,
            // goes back to the file offset (the zone's start) once past the region's end.
            let rewinds =
                self.time_based || (self.rw.does(Direction::Write) && self.loop_bytes > self.size);
            if rewinds && position >= self.size {
                zone_start
            } else {
                position
            }
        };
        let picker = self.pickers.get(direction).as_ref()?;
        let len = if picker.fixed().is_some() {
            len
        } else {
            let room = self.size.checked_sub(offset)?;
            let min_len = u64::from(picker.min_bytes());
            if room < min_len {
                return None;
            }
            // room >= min_len here, and the result is at most len.
            len.min((room - room % min_len).min(u64::from(u32::MAX)) as u32)
        };
        let end = offset.checked_add(u64::from(len))?;
        (offset - zone_start < self.size && end <= reach).then_some((offset, len))
    }

    /// A random offset in the current zone, from the zone's start: the zone's next unit by
    /// the random map (a full map ends the loop unless time-based, as in fio), or any unit
    /// with `norandommap`.
    fn zone_random_offset(&mut self, direction: Direction) -> Option<u64> {
        let unit = match &mut self.random {
            Some(RandomSource::Map(map)) => {
                if map.is_exhausted() && !self.time_based {
                    return None;
                }
                map.next_unit(self.seed, self.units)
            }
            _ => self.offset_rng.below(self.units),
        };
        Some(self.unit_offset(direction, unit))
    }

    /// The offset of random unit `unit`, aligned down to the direction's `blockalign`.
    fn unit_offset(&self, direction: Direction, unit: u64) -> u64 {
        let align = (*self.align.get(direction)).max(1);
        let offset = unit * self.map_unit;
        offset - offset % align
    }

    fn start_next_loop(&mut self) {
        self.loop_reset_pending = false;
        self.restarts += 1;
        self.bytes_in_loop = 0;
        self.last = PerDir::default();
        for direction in [Direction::Read, Direction::Write, Direction::Trim] {
            let cursor = self.sequential.get_mut(direction);
            cursor.position = 0;
            cursor.pass += 1;
            cursor.loop_first_pass = cursor.pass;
        }
        if let Some(RandomSource::Map(map)) = &mut self.random {
            map.begin_pass(self.seed, self.units);
            map.loop_first_pass = map.pass;
        }
        if let Some(zones) = &mut self.zones {
            zones.rewind();
        }
    }

    /// See the field: how many times the I/O started over on the region.
    pub(crate) fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Bytes per loop (`io_size`, else `size`).
    pub(crate) fn loop_bytes(&self) -> u64 {
        self.loop_bytes
    }

    /// Bytes in the whole job; `None` when time-based.
    pub(crate) fn total_bytes(&self) -> Option<u64> {
        if self.time_based {
            None
        } else {
            Some(self.loop_bytes.saturating_mul(u64::from(self.loops)))
        }
    }

    /// Every size and alignment of the job must be whole verify intervals, so that each
    /// header sits at the same place whichever I/O wrote or reads it.
    pub(crate) fn check_verify_grid(&self, interval_bytes: u32) -> Result<(), WorkloadError> {
        let interval = u64::from(interval_bytes);
        // Reads are checked one by one only in a job that does not write; in a job that
        // writes, the read-back phase reads whole written blocks whatever the read size.
        let checked: &[Direction] = if self.rw.does(Direction::Write) {
            &[Direction::Write]
        } else {
            &[Direction::Read]
        };
        for &direction in checked {
            let Some(picker) = self.pickers.get(direction) else {
                continue;
            };
            let mut lens: Vec<u64> = picker.each_len().into_iter().map(u64::from).collect();
            if self.rw.is_random() {
                // Offsets are aligned down to the direction's own alignment.
                lens.push(*self.align.get(direction));
            }
            if let Some(&bad) = lens.iter().find(|&&len| len % interval != 0) {
                return Err(WorkloadError::VerifyIntervalMismatch {
                    direction,
                    len_bytes: u32::try_from(bad).unwrap_or(u32::MAX),
                    interval_bytes,
                });
            }
        }
        Ok(())
    }

    /// The write stream's order when its blocks can be told from its state alone.
    pub(crate) fn write_order(&self) -> Option<(WriteOrder, u32)> {
        // Holes, backward steps, sequential runs inside a random job and zones leave the pass
        // order behind: the generation table keeps track instead.
        if self.mods != OffsetModifiers::default() || self.zones.is_some() {
            return None;
        }
        let block = self.pickers.write.as_ref()?.fixed()?;
        match self.rw {
            RwKind::Write | RwKind::ReadWrite => Some((WriteOrder::Sequential, block)),
            RwKind::RandWrite => match &self.random {
                Some(RandomSource::Map(_))
                    if self.map_unit == u64::from(block)
                        && self.align.write == u64::from(block) =>
                {
                    Some((WriteOrder::RandomMap, block))
                }
                _ => None,
            },
            _ => None,
        }
    }

    pub(crate) fn write_cursor(&self) -> &SeqCursor {
        &self.sequential.write
    }

    pub(crate) fn random_map(&self) -> Option<&RandomMap> {
        match &self.random {
            Some(RandomSource::Map(map)) => Some(map),
            _ => None,
        }
    }

    pub(crate) fn region_offset(&self) -> u64 {
        self.region_offset
    }

    /// Bytes from the region's start that I/O may touch: the region, or with strided zones
    /// everything up to the target's end.
    pub(crate) fn reach_bytes(&self) -> u64 {
        self.zones
            .as_ref()
            .map_or(self.size, |zones| zones.reach_bytes().max(self.size))
    }

    /// fio's default `verify_interval`: the block size; the smallest write size, or read
    /// size for a job that does not write.
    pub(crate) fn default_verify_interval(&self) -> u32 {
        self.pickers
            .write
            .as_ref()
            .or(self.pickers.read.as_ref())
            .map_or(0, BlockSizePicker::min_bytes)
    }

    pub(crate) fn max_write_len(&self) -> u32 {
        self.pickers
            .write
            .as_ref()
            .map_or(0, BlockSizePicker::max_bytes)
    }
}

/// How many bytes fio's `do_io` issues before it stops and the job starts its files (and
/// zones) over: `size`, but a time-based job never stops by bytes, and fio 3.42 lets
/// sequential writes and random writes without the random map go on to `io_size`.
fn zone_round_bytes(config: &WorkloadConfig) -> u64 {
    let writes_whole_io_size =
        config.rw.does(Direction::Write) && (!config.rw.is_random() || config.norandommap);
    if config.time_based || writes_whole_io_size {
        u64::MAX
    } else {
        config.size_bytes
    }
}

/// Strided zones place offsets their own way (`zone_place`): what would place them
/// otherwise is refused rather than ignored.
fn check_plain_offsets(config: &WorkloadConfig) -> Result<(), WorkloadError> {
    let refused = if config.offsets.seq_add_bytes != 0 || config.offsets.random_every != 1 {
        Some("an rw offset modifier (rw=read:N, rw=randread:N)")
    } else if config.rw.is_random()
        && config
            .rw
            .directions()
            .iter()
            .any(|&direction| *config.offsets.percentage_random.get(direction) < 100)
    {
        Some("percentage_random")
    } else if config.rw.is_random() && config.random_distribution != Distribution::Random {
        Some("a random_distribution other than random (fio draws those over the whole file)")
    } else {
        None
    };
    match refused {
        Some(what) => Err(WorkloadError::StridedZonesWith(what)),
        None => Ok(()),
    }
}

pub(crate) fn pass_permutation(seed: u64, units: u64, pass: u64) -> Permutation {
    Permutation::new(units, stream_seed(seed, streams::PASS_KEY, pass))
}

fn random_source(
    config: &WorkloadConfig,
    units: u64,
    unit_bytes: u64,
) -> Result<RandomSource, WorkloadError> {
    let scatter_key = stream_seed(config.seed, streams::SCATTER_KEY, 0);
    let check_centre = |name: &'static str, centre: Option<f64>| match centre {
        Some(c) if !(0.0..=1.0).contains(&c) => Err(WorkloadError::DistributionParameter {
            name,
            value: c,
            why: "the centre must be in [0, 1]",
        }),
        _ => Ok(()),
    };
    Ok(match config.random_distribution {
        Distribution::Zoned {
            absolute,
            ref zones,
        } => RandomSource::Zoned(ZonedSampler::new(zones, absolute, units, unit_bytes)?),
        Distribution::Sequence { ref blocks, stride } => {
            if blocks.is_empty() {
                return Err(WorkloadError::DistributionParameter {
                    name: "sequence",
                    value: 0.0,
                    why: "the sequence has no blocks",
                });
            }
            RandomSource::Sequence {
                blocks: blocks.clone(),
                stride,
                issued: PerDir::default(),
            }
        }
        Distribution::Random if config.norandommap => RandomSource::Uniform,
        Distribution::Random => RandomSource::Map(RandomMap {
            permutation: pass_permutation(config.seed, units, 0),
            pass: 0,
            visited: 0,
            loop_first_pass: 0,
        }),
        Distribution::Zipf { theta, center } => {
            if !(theta.is_finite() && theta > 0.0 && theta != 1.0) {
                return Err(WorkloadError::DistributionParameter {
                    name: "zipf",
                    value: theta,
                    why: "theta must be above 0 and not 1",
                });
            }
            check_centre("zipf", center)?;
            RandomSource::Skewed(SkewedSampler::zipf(units, theta, center, scatter_key))
        }
        Distribution::Pareto { power: h, center } => {
            if !(h > 0.0 && h < 1.0) {
                return Err(WorkloadError::DistributionParameter {
                    name: "pareto",
                    value: h,
                    why: "h must be between 0 and 1, exclusive",
                });
            }
            check_centre("pareto", center)?;
            RandomSource::Skewed(SkewedSampler::pareto(units, h, center, scatter_key))
        }
        Distribution::Normal {
            deviation_percent: stddev_percent,
            center,
        } => {
            if !(0.0..=100.0).contains(&stddev_percent) {
                return Err(WorkloadError::DistributionParameter {
                    name: "normal",
                    value: stddev_percent,
                    why: "the deviation is a percentage, 0 to 100",
                });
            }
            check_centre("normal", center)?;
            RandomSource::Skewed(SkewedSampler::normal(
                units,
                stddev_percent,
                center,
                scatter_key,
            ))
        }
    })
}
