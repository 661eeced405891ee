//! Each agent's clock against the controller's, from probe round trips (no I/O), and the
//! start skew.
//!
//! The controller sends a probe at `sent_ns` (its clock), the agent answers with its own
//! clock's reading, the answer arrives at `received_ns`. The agent read its clock at some
//! instant inside the round trip, so `offset = agent_ns - (sent_ns + received_ns) / 2` is
//! wrong by at most half the round trip; the round trip with the shortest time gives the
//! tightest bound (Cristian's algorithm, as NTP's clock filter keeps the minimum-delay
//! sample). No wall clocks, no synchronised hosts: monotonic clocks on both sides.

/// One probe's times: controller send, agent reading, controller receive (ns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSample {
    pub sent_ns: u64,
    pub agent_ns: u64,
    pub received_ns: u64,
}

/// The agent's clock minus the controller's, and how wrong it may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockOffset {
    pub offset_ns: i128,
    /// Half the shortest round trip: the offset is within this of the truth.
    pub uncertainty_ns: u64,
}

impl ClockOffset {
    /// An instant of the controller's clock on the agent's clock.
    pub fn to_agent(&self, controller_ns: u64) -> u64 {
        clamp_u64(i128::from(controller_ns) + self.offset_ns)
    }

    /// An instant of the agent's clock on the controller's clock.
    pub fn to_controller(&self, agent_ns: u64) -> u64 {
        clamp_u64(i128::from(agent_ns) - self.offset_ns)
    }
}

fn clamp_u64(value: i128) -> u64 {
    value.clamp(0, i128::from(u64::MAX)) as u64
}

/// The estimate from the sample with the shortest round trip; `None` without a sample
/// (or with only samples whose answer came before the probe left: a broken clock).
pub fn estimate(samples: &[ClockSample]) -> Option<ClockOffset> {
    let best = samples
        .iter()
        .filter(|s| s.received_ns >= s.sent_ns)
        .min_by_key(|s| s.received_ns - s.sent_ns)?;
    let round_trip = best.received_ns - best.sent_ns;
    let midpoint = i128::from(best.sent_ns) + i128::from(round_trip / 2);
    Some(ClockOffset {
        offset_ns: i128::from(best.agent_ns) - midpoint,
        uncertainty_ns: round_trip.div_ceil(2),
    })
}

/// Max minus min of the start instants (on one clock), 0 for fewer than two.
pub fn skew_ns(starts: &[u64]) -> u64 {
    match (starts.iter().max(), starts.iter().min()) {
        (Some(max), Some(min)) => max - min,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_shortest_round_trip_wins() {
        let samples = [
            ClockSample {
                sent_ns: 0,
                agent_ns: 5_000_900,
                received_ns: 2_000,
            },
            ClockSample {
                sent_ns: 10_000,
                agent_ns: 5_010_050,
                received_ns: 10_100,
            },
        ];
        let offset = estimate(&samples).unwrap();
        assert_eq!(offset.offset_ns, 5_000_000);
        assert_eq!(offset.uncertainty_ns, 50);
        assert_eq!(offset.to_agent(1_000), 5_001_000);
        assert_eq!(offset.to_controller(5_001_000), 1_000);
        assert_eq!(estimate(&[]), None);
        assert_eq!(skew_ns(&[7, 3, 5]), 4);
        assert_eq!(skew_ns(&[9]), 0);
    }

    proptest! {
        /// Whatever the true offset and delays, the estimate is within its uncertainty.
        #[test]
        fn the_estimate_is_within_its_bound(
            true_offset in -1_000_000_000_000i128..1_000_000_000_000,
            probes in proptest::collection::vec((0u64..1_000_000, 0u64..1_000_000), 1..10),
        ) {
            let mut samples = Vec::new();
            let mut now = 2_000_000_000_000u64;
            for (out, back) in probes {
                let agent_at = now + out;
                samples.push(ClockSample {
                    sent_ns: now,
                    agent_ns: (i128::from(agent_at) + true_offset) as u64,
                    received_ns: agent_at + back,
                });
                now += out + back + 1;
            }
            let estimate = estimate(&samples).unwrap();
            prop_assert!((estimate.offset_ns - true_offset).unsigned_abs() <= u128::from(estimate.uncertainty_ns));
        }
    }
}
