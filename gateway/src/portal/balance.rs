//! Where a login goes and who moves (sans-IO): the real portal with the fewest sessions
//! per unit of weight takes the next login, and a rebalance asks the sessions above each
//! portal's fair share (its weight's part of all sessions) to move. Used by the virtual
//! portal's redirects and by the control plane's `portal_rebalance` and `portal_drain`.
#![forbid(unsafe_code)]

/// One real portal as a choice sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Sessions on it now (and logins sent its way that have not arrived yet).
    pub sessions: u32,
    /// Its share of the load relative to the others; 0 takes no new logins.
    pub weight: u32,
    /// Draining (no new logins, everyone asked to leave) or down.
    pub draining: bool,
}

impl Candidate {
    fn open(&self) -> bool {
        self.weight > 0 && !self.draining
    }
}

/// The portal the next login goes to: the open one whose load after taking it,
/// (sessions + 1) / weight, is lowest; ties go to the first. `None` when none is open.
pub fn choose(candidates: &[Candidate]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (index, candidate) in candidates.iter().enumerate() {
        if !candidate.open() {
            continue;
        }
        best = match best {
            None => Some(index),
            Some(current) => {
                let c = &candidates[current];
                // (s+1)/w < (s'+1)/w'  ⇔  (s+1)·w' < (s'+1)·w, in u64 (no overflow).
                let this = (u64::from(candidate.sessions) + 1) * u64::from(c.weight);
                let that = (u64::from(c.sessions) + 1) * u64::from(candidate.weight);
                if this < that {
                    Some(index)
                } else {
                    Some(current)
                }
            }
        };
    }
    best
}

/// Each portal's fair share of `total` sessions: in proportion to the weights of the open
/// portals (largest remainders get the rest), 0 for the others. Sums to `total` when any
/// portal is open.
pub fn fair_shares(total: u32, candidates: &[Candidate]) -> Vec<u32> {
    let weight_sum: u64 = candidates
        .iter()
        .filter(|c| c.open())
        .map(|c| u64::from(c.weight))
        .sum();
    if weight_sum == 0 {
        return vec![0; candidates.len()];
    }
    let mut shares = Vec::with_capacity(candidates.len());
    let mut remainders = Vec::new();
    let mut given = 0u64;
    for (index, candidate) in candidates.iter().enumerate() {
        if !candidate.open() {
            shares.push(0);
            continue;
        }
        let exact = u64::from(total) * u64::from(candidate.weight);
        let share = exact / weight_sum;
        shares.push(share as u32);
        given += share;
        remainders.push((exact % weight_sum, index));
    }
    // Largest remainder first; equal remainders to the first portal.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, index) in remainders.iter().take((u64::from(total) - given) as usize) {
        shares[index] += 1;
    }
    shares
}

/// How many sessions each portal should be asked to move so that every one ends at its
/// fair share: all of a draining portal's, the excess over the share of the others.
/// Nothing moves when no portal is open (there would be nowhere to go).
pub fn surplus(candidates: &[Candidate]) -> Vec<u32> {
    let total: u32 = candidates.iter().map(|c| c.sessions).sum();
    if !candidates.iter().any(Candidate::open) {
        return vec![0; candidates.len()];
    }
    let shares = fair_shares(total, candidates);
    candidates
        .iter()
        .zip(shares)
        .map(|(c, share)| c.sessions.saturating_sub(share))
        .collect()
}

/// How far the busiest open portal is from its fair share, as a fraction of that share
/// (0.0 = perfectly even): the benchmark's measure of spreading.
pub fn imbalance(candidates: &[Candidate]) -> f64 {
    let total: u32 = candidates.iter().map(|c| c.sessions).sum();
    let shares = fair_shares(total, candidates);
    candidates
        .iter()
        .zip(shares)
        .filter(|(c, share)| c.open() && *share > 0)
        .map(|(c, share)| (f64::from(c.sessions) - f64::from(share)).abs() / f64::from(share))
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn open(sessions: u32, weight: u32) -> Candidate {
        Candidate {
            sessions,
            weight,
            draining: false,
        }
    }

    #[test]
    fn the_least_loaded_open_portal_per_weight_takes_the_login() {
        assert_eq!(choose(&[]), None);
        assert_eq!(choose(&[open(3, 1), open(1, 1), open(1, 1)]), Some(1));
        // Twice the weight takes twice the sessions before it stops being chosen.
        assert_eq!(choose(&[open(2, 1), open(3, 2)]), Some(1));
        assert_eq!(choose(&[open(2, 1), open(5, 2)]), Some(0));
        let draining = Candidate {
            draining: true,
            ..open(0, 1)
        };
        assert_eq!(choose(&[draining, open(9, 1)]), Some(1));
        assert_eq!(choose(&[draining, open(0, 0)]), None);
    }

    #[test]
    fn a_drained_portal_moves_everyone_and_a_new_one_gets_its_share() {
        let draining = Candidate {
            draining: true,
            ..open(10, 1)
        };
        assert_eq!(surplus(&[draining, open(0, 1)]), vec![10, 0]);
        // A portal back at 0 beside three with 10 each: 30 over 4 portals is 8, 8, 7, 7.
        assert_eq!(
            surplus(&[open(10, 1), open(10, 1), open(10, 1), open(0, 1)]),
            vec![2, 2, 3, 0]
        );
        // Nowhere to go: nobody moves.
        assert_eq!(surplus(&[draining]), vec![0]);
    }

    fn candidates() -> impl Strategy<Value = Vec<Candidate>> {
        proptest::collection::vec(
            (0u32..500, 0u32..5, proptest::bool::weighted(0.2)).prop_map(
                |(sessions, weight, draining)| Candidate {
                    sessions,
                    weight,
                    draining,
                },
            ),
            0..8,
        )
    }

    proptest! {
        #[test]
        fn shares_sum_to_the_total_and_respect_weights(total in 0u32..10_000, cs in candidates()) {
            let shares = fair_shares(total, &cs);
            let any_open = cs.iter().any(Candidate::open);
            prop_assert_eq!(shares.iter().sum::<u32>(), if any_open { total } else { 0 });
            for (c, share) in cs.iter().zip(&shares) {
                if !c.open() {
                    prop_assert_eq!(*share, 0);
                }
            }
        }

        #[test]
        fn after_the_moves_every_portal_is_within_one_of_its_share(cs in candidates()) {
            // Move the surplus off, then send each moved session where `choose` says.
            let moves = surplus(&cs);
            let mut after: Vec<Candidate> = cs
                .iter()
                .zip(&moves)
                .map(|(c, m)| Candidate { sessions: c.sessions - m, ..*c })
                .collect();
            for _ in 0..moves.iter().sum::<u32>() {
                let to = choose(&after).expect("an open portal exists when anything moves");
                after[to].sessions += 1;
            }
            let total: u32 = cs.iter().map(|c| c.sessions).sum();
            prop_assert_eq!(after.iter().map(|c| c.sessions).sum::<u32>(), total);
            if cs.iter().any(Candidate::open) {
                let shares = fair_shares(total, &cs);
                for (c, share) in after.iter().zip(shares) {
                    prop_assert!(c.sessions.abs_diff(share) <= 1, "{after:?}");
                }
            }
        }

        #[test]
        fn logins_one_at_a_time_spread_evenly(n in 1u32..2000, portals in 1usize..6) {
            let mut cs = vec![open(0, 1); portals];
            for _ in 0..n {
                let to = choose(&cs).unwrap();
                cs[to].sessions += 1;
            }
            let (min, max) = cs.iter().fold((u32::MAX, 0), |(lo, hi), c| (lo.min(c.sessions), hi.max(c.sessions)));
            prop_assert!(max - min <= 1);
        }
    }
}
