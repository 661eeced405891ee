//! `--status-interval`: every interval, the full report of the results so far (fio's
//! `show_running_run_stats`): each running job hands a copy of its statistics at its next
//! turn, finished jobs give their final ones, and the report is printed in the run's
//! output formats, as the final one is.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::stats::JobStats;

use super::job::JobProgress;

/// How long the run waits for the jobs' copies: a job looks at the request at least once a
/// turn (50 ms at most); a job that is not taking turns (a start delay) is left out.
const SNAPSHOT_WAIT: Duration = Duration::from_millis(250);
const SNAPSHOT_POLL: Duration = Duration::from_millis(5);

/// When the next report is due.
pub struct DumpClock {
    every: Option<Duration>,
    next: Instant,
}

impl DumpClock {
    pub fn new(every: Option<Duration>, start: Instant) -> DumpClock {
        DumpClock {
            every,
            next: start + every.unwrap_or_default(),
        }
    }

    /// Whether a report is due at `now`; the next one is then one interval later (reports
    /// missed while the run was busy are not made up).
    pub fn due(&mut self, now: Instant) -> bool {
        let Some(every) = self.every else {
            return false;
        };
        if now < self.next {
            return false;
        }
        while self.next <= now {
            self.next += every;
        }
        true
    }
}

/// Asks the jobs in `running` for their results so far and waits (bounded) for them; a
/// job that did not answer in time gives `None`.
pub fn collect(running: &[&JobProgress]) -> Vec<Option<JobStats>> {
    for job in running {
        job.snapshot_wanted.store(true, Ordering::Relaxed);
    }
    let deadline = Instant::now() + SNAPSHOT_WAIT;
    let mut copies: Vec<Option<JobStats>> = running.iter().map(|_| None).collect();
    loop {
        for (copy, job) in copies.iter_mut().zip(running) {
            if copy.is_none() {
                *copy = job.snapshot.lock().ok().and_then(|mut slot| slot.take());
            }
        }
        if copies.iter().all(Option::is_some) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(SNAPSHOT_POLL);
    }
    for job in running {
        job.snapshot_wanted.store(false, Ordering::Relaxed);
    }
    copies
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_fall_due_once_per_interval() {
        let start = Instant::now();
        let mut clock = DumpClock::new(Some(Duration::from_secs(1)), start);
        assert!(!clock.due(start + Duration::from_millis(999)));
        assert!(clock.due(start + Duration::from_millis(1_000)));
        assert!(!clock.due(start + Duration::from_millis(1_500)));
        // Late by more than an interval: one report, not a burst.
        assert!(clock.due(start + Duration::from_millis(3_200)));
        assert!(!clock.due(start + Duration::from_millis(3_900)));
        let mut never = DumpClock::new(None, start);
        assert!(!never.due(start + Duration::from_secs(100)));
    }

    #[test]
    fn a_job_that_does_not_answer_is_left_out_in_bounded_time() {
        let silent = JobProgress::default();
        let started = Instant::now();
        let copies = collect(&[&silent]);
        assert!(copies[0].is_none());
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(!silent.snapshot_wanted.load(Ordering::Relaxed));
    }
}
