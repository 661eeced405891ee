//! fio's token flow control (`flow`, `flow_id`, `flow_sleep`; fio's flow.c): jobs sharing
//! a `flow_id` keep their I/O counts in the ratio of their `flow` weights. Each flow has a
//! shared I/O counter (starting at 1, as fio's) and the sum of its running jobs' weights;
//! before each I/O a job compares its share of the counter with its share of the weight,
//! and holds back while ahead. A job leaving takes its count and weight out again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One `flow_id`'s shared counters.
#[derive(Debug)]
pub struct FlowGroup {
    counter: AtomicU64,
    total_weight: AtomicU64,
}

/// The flows of a run, by `flow_id`.
#[derive(Debug, Default)]
pub struct Flows {
    groups: Mutex<BTreeMap<u32, Arc<FlowGroup>>>,
}

impl Flows {
    /// A job's place in flow `id` with `weight` (fio: only jobs with `flow` > 0 take part).
    pub fn join(&self, id: u32, weight: u32, sleep: Duration) -> Option<JobFlow> {
        if weight == 0 {
            return None;
        }
        let group = {
            let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(groups.entry(id).or_insert_with(|| {
                Arc::new(FlowGroup {
                    counter: AtomicU64::new(1),
                    total_weight: AtomicU64::new(0),
                })
            }))
        };
        Some(JobFlow {
            group,
            weight: u64::from(weight),
            sleep,
            mine: 0,
            joined: false,
        })
    }
}

/// One job's side of its flow. Its weight counts from [`JobFlow::start`] (when the job
/// starts I/O, as fio's `flow_init_job`) to its drop.
#[derive(Debug)]
pub struct JobFlow {
    group: Arc<FlowGroup>,
    weight: u64,
    /// `flow_sleep`: how long a held job pauses (after draining) before it asks again.
    pub sleep: Duration,
    mine: u64,
    joined: bool,
}

impl JobFlow {
    pub fn start(&mut self) {
        if !self.joined {
            self.group
                .total_weight
                .fetch_add(self.weight, Ordering::Relaxed);
            self.joined = true;
        }
    }

    /// fio's `flow_threshold_exceeded`, negated: true (and the I/O counted) when the job
    /// may issue one more I/O now.
    pub fn admit(&mut self) -> bool {
        self.start();
        let counter = self.group.counter.load(Ordering::Relaxed).max(1) as f64;
        let total_weight = self.group.total_weight.load(Ordering::Relaxed).max(1) as f64;
        if self.mine as f64 / counter > self.weight as f64 / total_weight {
            return false;
        }
        self.group.counter.fetch_add(1, Ordering::Relaxed);
        self.mine += 1;
        true
    }
}

impl Drop for JobFlow {
    fn drop(&mut self) {
        if self.joined {
            self.group.counter.fetch_sub(self.mine, Ordering::Relaxed);
            self.group
                .total_weight
                .fetch_sub(self.weight, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_jobs_keep_their_weights_ratio() {
        let flows = Flows::default();
        let mut a = flows.join(1, 3, Duration::ZERO).unwrap();
        let mut b = flows.join(1, 1, Duration::ZERO).unwrap();
        assert!(flows.join(1, 0, Duration::ZERO).is_none());
        a.start();
        b.start();
        let (mut na, mut nb) = (0u32, 0u32);
        // Both ask as fast as they can, alternately: the admitted ones keep 3:1.
        for _ in 0..4000 {
            na += u32::from(a.admit());
            nb += u32::from(b.admit());
        }
        let ratio = f64::from(na) / f64::from(nb);
        assert!((2.9..3.1).contains(&ratio), "{na}:{nb}");
        // A job leaving frees the flow for the other.
        drop(a);
        assert!((0..10).all(|_| b.admit()));
    }
}
