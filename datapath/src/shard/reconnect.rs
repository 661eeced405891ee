//! Session recovery of a software shard: after its connection is lost (the target closed
//! it, a command outlived `command_timeout` and failed it at ERL 0, a protocol fault), the
//! shard connects and logs in again with the same ISID and TSIH 0, which makes the target
//! reinstate the session and end the old one's tasks (RFC 7143 section 6.3.5,
//! "session reinstatement"). The commands the lost connection held are sent again on the
//! new one, except those that timed out (they fail with `CommandError::TimedOut`) and those
//! the caller asked to abort (it gave up on them: they fail with the connection); requests
//! that arrive meanwhile wait (up to twice the queue depth; then the queue is full).
//!
//! Bounded like libiscsi's reconnect (`iscsi_set_reconnect_max_retries`) and open-iscsi's
//! `replacement_timeout`: at most [`ReconnectPolicy::attempts_max`] attempts per loss,
//! waiting [`ReconnectPolicy::backoff_first`] before the first and doubling up to
//! [`ReconnectPolicy::backoff_max`], all within [`ReconnectPolicy::replacement_timeout`]
//! of the loss; a recovery after which no command succeeded counts against the same
//! bound, so a target that accepts logins and then drops every command cannot keep the
//! shard looping. When the bound is reached, the held and waiting commands fail with
//! `CommandError::ConnectionLost` and the shard's thread ends (its completion queue
//! closes, which callers see as a stopped shard).
//!
//! This module is the policy and its arithmetic; `worker` does the I/O.

use std::time::{Duration, Instant};

/// How a shard recovers a lost connection (see the module docs). `attempts_max == 0`
/// turns recovery off: a lost connection then fails the shard's commands for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectPolicy {
    pub attempts_max: u32,
    pub backoff_first: Duration,
    pub backoff_max: Duration,
    pub replacement_timeout: Duration,
}

impl ReconnectPolicy {
    /// No recovery (the default of [`super::ShardConfig`]).
    pub const OFF: ReconnectPolicy = ReconnectPolicy {
        attempts_max: 0,
        backoff_first: Duration::from_millis(100),
        backoff_max: Duration::from_secs(2),
        replacement_timeout: Duration::from_secs(30),
    };

    /// `attempts_max` attempts within `replacement_timeout`, 100 ms before the first,
    /// doubling up to 2 s.
    pub fn new(attempts_max: u32, replacement_timeout: Duration) -> ReconnectPolicy {
        ReconnectPolicy {
            attempts_max,
            replacement_timeout,
            ..ReconnectPolicy::OFF
        }
    }

    pub fn enabled(&self) -> bool {
        self.attempts_max > 0 && !self.replacement_timeout.is_zero()
    }

    /// The wait before attempt `attempt` (1 for the first).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(16);
        self.backoff_first
            .saturating_mul(1 << doublings)
            .min(self.backoff_max)
    }
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy::OFF
    }
}

/// One recovery in progress: when the connection was lost and how many attempts were made.
#[derive(Debug, Clone, Copy)]
pub(super) struct Recovery {
    policy: ReconnectPolicy,
    lost_at: Instant,
    attempts: u32,
}

/// What the worker does next in a recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Wait this long, then try with at most `budget` for connect and login.
    Attempt { wait: Duration, budget: Duration },
    /// The bound is reached: fail what is held and stop.
    GiveUp,
}

impl Recovery {
    /// `earlier_recoveries`: recoveries in a row after which no command succeeded.
    pub(super) fn new(policy: ReconnectPolicy, lost_at: Instant, earlier_recoveries: u32) -> Self {
        Recovery {
            policy,
            lost_at,
            attempts: earlier_recoveries,
        }
    }

    pub(super) fn lost_at(&self) -> Instant {
        self.lost_at
    }

    /// The next step at `now`.
    pub(super) fn next(&mut self, now: Instant) -> Step {
        self.attempts += 1;
        let spent = now.saturating_duration_since(self.lost_at);
        if !self.policy.enabled()
            || self.attempts > self.policy.attempts_max
            || spent >= self.policy.replacement_timeout
        {
            return Step::GiveUp;
        }
        let left = self.policy.replacement_timeout - spent;
        let wait = self.policy.backoff(self.attempts).min(left);
        Step::Attempt {
            wait,
            budget: left - wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let policy = ReconnectPolicy::new(10, Duration::from_secs(60));
        let waits: Vec<u64> = (1..=7)
            .map(|a| policy.backoff(a).as_millis() as u64)
            .collect();
        assert_eq!(waits, vec![100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn recovery_stops_at_the_attempt_bound() {
        let now = Instant::now();
        let mut recovery = Recovery::new(ReconnectPolicy::new(2, Duration::from_secs(60)), now, 0);
        assert!(matches!(recovery.next(now), Step::Attempt { .. }));
        assert!(matches!(recovery.next(now), Step::Attempt { .. }));
        assert_eq!(recovery.next(now), Step::GiveUp);
    }

    #[test]
    fn recovery_stops_at_the_replacement_timeout_and_fits_its_waits_in() {
        let now = Instant::now();
        let policy = ReconnectPolicy::new(100, Duration::from_secs(1));
        let mut recovery = Recovery::new(policy, now, 0);
        assert_eq!(
            recovery.next(now + Duration::from_millis(950)),
            Step::Attempt {
                wait: Duration::from_millis(50),
                budget: Duration::ZERO
            }
        );
        assert_eq!(recovery.next(now + Duration::from_secs(1)), Step::GiveUp);
    }

    #[test]
    fn recoveries_without_progress_count_against_the_bound_and_off_never_tries() {
        let now = Instant::now();
        let mut recovery = Recovery::new(ReconnectPolicy::new(3, Duration::from_secs(60)), now, 3);
        assert_eq!(recovery.next(now), Step::GiveUp);
        let mut off = Recovery::new(ReconnectPolicy::OFF, now, 0);
        assert_eq!(off.next(now), Step::GiveUp);
    }
}
