//! fio's `rate_min`, `rate_iops_min` and `rate_cycle` (fio(1), "I/O rate"): a job that
//! falls below its floor in a direction fails ("Failing to meet this requirement will cause
//! the job to exit").
//!
//! As fio does it (`check_min_rate`): nothing is judged in the job's first 2 seconds (a
//! settle period); after that, the rate of each direction is measured over at least
//! `rate_cycle` between checks, from the I/Os completed. A bandwidth floor is checked when
//! both are given, as in fio. Pure logic: the runner passes the time and its counts in.

use std::time::Duration;

use crate::io::{Direction, PerDir};

/// fio's settle period before the first judgement.
const SETTLE: Duration = Duration::from_secs(2);

/// fio's default `rate_cycle`: 1000 ms.
pub const RATE_CYCLE_DEFAULT: Duration = Duration::from_millis(1000);

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RateFloorConfig {
    /// `rate_min`, bytes per second per direction.
    pub bytes_per_s: PerDir<Option<u64>>,
    /// `rate_iops_min` per direction.
    pub iops: PerDir<Option<u64>>,
    /// `rate_cycle` (0 is taken as the default).
    pub cycle: Duration,
}

impl RateFloorConfig {
    pub fn is_set(&self) -> bool {
        self.bytes_per_s.each().iter().any(|(_, v)| v.is_some())
            || self.iops.each().iter().any(|(_, v)| v.is_some())
    }
}

/// A floor that was not met, in fio's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateFloorMiss {
    #[error("{} rate_min={floor}B/s not met, got {got}B/s", direction.fio_name())]
    Bandwidth {
        direction: Direction,
        floor: u64,
        got: u64,
    },
    #[error("{} rate_iops_min={floor} not met, got {got} IOPS", direction.fio_name())]
    Iops {
        direction: Direction,
        floor: u64,
        got: u64,
    },
}

/// The bytes and I/Os completed at one check.
#[derive(Debug, Clone, Copy)]
struct Mark {
    at: Duration,
    bytes: u64,
    ios: u64,
}

#[derive(Debug, Clone)]
pub struct RateFloor {
    config: RateFloorConfig,
    marks: PerDir<Option<Mark>>,
}

impl RateFloor {
    pub fn new(config: RateFloorConfig) -> Self {
        RateFloor {
            config,
            marks: PerDir::splat(None),
        }
    }

    /// Checks `direction` at `now` (time since the job started) with the bytes and I/Os it
    /// has completed so far. Counts that go back (the ramp's end resets them) start a new
    /// measurement.
    pub fn check(
        &mut self,
        now: Duration,
        direction: Direction,
        bytes: u64,
        ios: u64,
    ) -> Result<(), RateFloorMiss> {
        let floor_bytes = *self.config.bytes_per_s.get(direction);
        let floor_iops = *self.config.iops.get(direction);
        if (floor_bytes.is_none() && floor_iops.is_none()) || now < SETTLE || ios == 0 {
            return Ok(());
        }
        let cycle = if self.config.cycle.is_zero() {
            RATE_CYCLE_DEFAULT
        } else {
            self.config.cycle
        };
        let here = Mark {
            at: now,
            bytes,
            ios,
        };
        let mark = self.marks.get_mut(direction);
        let Some(last) = *mark else {
            *mark = Some(here);
            return Ok(());
        };
        let spent = now.saturating_sub(last.at);
        if bytes < last.bytes || ios < last.ios {
            *mark = Some(here);
            return Ok(());
        }
        if spent < cycle {
            return Ok(());
        }
        *mark = Some(here);
        let spent_ms = spent.as_millis().max(1) as u64;
        if let Some(floor) = floor_bytes {
            let got = (bytes - last.bytes).saturating_mul(1000) / spent_ms;
            if got < floor {
                return Err(RateFloorMiss::Bandwidth {
                    direction,
                    floor,
                    got,
                });
            }
        } else if let Some(floor) = floor_iops {
            let got = (ios - last.ios).saturating_mul(1000) / spent_ms;
            if got < floor {
                return Err(RateFloorMiss::Iops {
                    direction,
                    floor,
                    got,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floor(iops: u64) -> RateFloor {
        RateFloor::new(RateFloorConfig {
            iops: PerDir {
                read: None,
                write: Some(iops),
                trim: None,
            },
            ..RateFloorConfig::default()
        })
    }

    #[test]
    fn settles_for_two_seconds_then_judges_each_cycle() {
        let mut floor = floor(100);
        let s = Duration::from_secs;
        // Nothing is judged in the first 2 s, however slow.
        assert!(floor.check(s(1), Direction::Write, 4096, 1).is_ok());
        // The first check after the settle only marks.
        assert!(floor.check(s(2), Direction::Write, 4096, 1).is_ok());
        // Less than a cycle later: not judged yet.
        assert!(floor
            .check(Duration::from_millis(2500), Direction::Write, 4096, 2)
            .is_ok());
        // 150 I/Os in the next second: met.
        assert!(floor.check(s(3), Direction::Write, 0, 151).is_ok());
        // 50 in the one after: not met.
        assert_eq!(
            floor.check(s(4), Direction::Write, 0, 201),
            Err(RateFloorMiss::Iops {
                direction: Direction::Write,
                floor: 100,
                got: 50
            })
        );
        // Reads have no floor.
        assert!(floor.check(s(9), Direction::Read, 0, 1).is_ok());
    }

    #[test]
    fn bandwidth_floor_and_reset_counts() {
        let mut floor = RateFloor::new(RateFloorConfig {
            bytes_per_s: PerDir::splat(Some(1 << 20)),
            cycle: Duration::from_millis(500),
            ..RateFloorConfig::default()
        });
        let ms = Duration::from_millis;
        assert!(floor.check(ms(2000), Direction::Read, 1 << 20, 256).is_ok());
        assert!(floor.check(ms(2500), Direction::Read, 3 << 20, 768).is_ok());
        // The ramp's end reset the counts: a new start, not a miss.
        assert!(floor.check(ms(3000), Direction::Read, 4096, 1).is_ok());
        let miss = floor.check(ms(3500), Direction::Read, 8192, 2).unwrap_err();
        assert_eq!(
            miss.to_string(),
            "read rate_min=1048576B/s not met, got 8192B/s"
        );
    }
}
