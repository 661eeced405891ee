//! Work that runs on a shard's own thread (run to completion, as SPDK and Seastar
//! applications run on their reactor): the shard hands it the completions of its requests
//! inside its loop, and takes the requests it makes straight into the session. No
//! submission queue, no doorbell, no futex and no second thread stand between the work and
//! its I/O, so an application that can live on the shard's core pays none of their cost.
//!
//! A work runs on a software shard ([`ShardPool::run_on_shard`]), next to callers that use
//! the queue. It sends its results out itself (a channel it owns, or its `Drop`): the shard
//! drops it once it has said it is finished and none of its requests is left in flight, or
//! when the pool stops. A work that panics is never called again and is dropped once its
//! commands are back; the shard goes on.
//!
//! [`ShardPool::run_on_shard`]: super::ShardPool::run_on_shard

use std::time::Instant;

use super::ShardCompletion;
use crate::session::Request;

/// What a work tells its shard after each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkStatus {
    /// Call again when completions arrive (or soon, if none of its requests is in flight).
    Running,
    /// Done: the shard drops the work once its last request has completed.
    Finished,
}

/// A piece of work on a shard's thread. It must not block: it runs inside the shard's loop.
pub trait ShardWork: Send + 'static {
    /// Called once when the shard takes the work, then in every turn that brings
    /// completions of its requests (`done`, which it drains: what it leaves there is
    /// dropped, buffers and all), and about every
    /// [`IDLE_POLL`](super::work::IDLE_POLL) while it has none in flight. `now` is the
    /// time the turn began (after the kernel's wait returned): the completions arrived
    /// before it. New requests go through `submit`, up to its room.
    fn poll(
        &mut self,
        now: Instant,
        done: &mut Vec<ShardCompletion>,
        submit: &mut WorkSubmitter<'_>,
    ) -> WorkStatus;
}

/// How often a running work with nothing in flight is called again.
pub const IDLE_POLL: std::time::Duration = std::time::Duration::from_micros(50);

/// Takes a work's new requests, up to the room the shard has for them in this turn.
pub struct WorkSubmitter<'a> {
    room: usize,
    requests: &'a mut Vec<Request>,
}

impl<'a> WorkSubmitter<'a> {
    pub(super) fn new(room: usize, requests: &'a mut Vec<Request>) -> WorkSubmitter<'a> {
        WorkSubmitter { room, requests }
    }

    /// How many more requests the shard takes in this turn (its queue depth less what it
    /// holds, for the work and for queue callers together).
    pub fn room(&self) -> usize {
        self.room
    }

    /// Queues a request for this turn's send; a full shard hands it back.
    pub fn submit(&mut self, request: Request) -> Result<(), Request> {
        if self.room == 0 {
            return Err(request);
        }
        self.room -= 1;
        self.requests.push(request);
        Ok(())
    }
}

/// The work a shard runs, with what the shard keeps for it between turns.
pub(super) struct RunningWork {
    pub(super) work: Box<dyn ShardWork>,
    pub(super) status: WorkStatus,
    /// Its requests the session holds.
    pub(super) in_flight: usize,
    /// Completions of its requests not yet handed to it.
    pub(super) done: Vec<ShardCompletion>,
    /// When it was last called: a work with nothing in flight is called every `IDLE_POLL`.
    pub(super) polled_at: Option<Instant>,
    /// It panicked: never called again, dropped once its commands are back.
    pub(super) panicked: bool,
}

impl RunningWork {
    pub(super) fn new(work: Box<dyn ShardWork>) -> RunningWork {
        RunningWork {
            work,
            status: WorkStatus::Running,
            in_flight: 0,
            done: Vec::new(),
            polled_at: None,
            panicked: false,
        }
    }

    /// Whether the shard should call it in this turn.
    pub(super) fn due(&self, now: Instant) -> bool {
        if self.status == WorkStatus::Finished {
            // Only to hand over the completions of what it left in flight.
            return !self.done.is_empty();
        }
        !self.done.is_empty()
            || match self.polled_at {
                None => true,
                Some(at) => self.in_flight == 0 && now.saturating_duration_since(at) >= IDLE_POLL,
            }
    }

    /// Whether the shard may drop it.
    pub(super) fn over(&self) -> bool {
        self.status == WorkStatus::Finished && self.in_flight == 0 && self.done.is_empty()
    }

    /// When a running work with nothing in flight wants its next call.
    pub(super) fn next_poll(&self) -> Option<Instant> {
        match (self.status, self.polled_at) {
            (WorkStatus::Running, Some(at)) if self.in_flight == 0 => Some(at + IDLE_POLL),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(tag: u64) -> Request {
        Request::new(0, crate::scsi::Cdb::test_unit_ready(), Vec::new(), tag)
    }

    #[test]
    fn the_submitter_takes_requests_up_to_its_room_and_hands_back_the_rest() {
        let mut taken = Vec::new();
        let mut submit = WorkSubmitter::new(2, &mut taken);
        assert!(submit.submit(request(1)).is_ok());
        assert_eq!(submit.room(), 1);
        assert!(submit.submit(request(2)).is_ok());
        let back = submit.submit(request(3)).unwrap_err();
        assert_eq!(back.user_data, 3);
        assert_eq!(
            taken.iter().map(|r| r.user_data).collect::<Vec<_>>(),
            [1, 2]
        );
    }

    struct Nothing;
    impl ShardWork for Nothing {
        fn poll(
            &mut self,
            _: Instant,
            _: &mut Vec<ShardCompletion>,
            _: &mut WorkSubmitter<'_>,
        ) -> WorkStatus {
            WorkStatus::Running
        }
    }

    #[test]
    fn a_work_is_called_at_once_then_on_completions_or_when_idle_long_enough() {
        let t0 = Instant::now();
        let mut w = RunningWork::new(Box::new(Nothing));
        assert!(w.due(t0), "a new work is called at once");
        w.polled_at = Some(t0);
        w.in_flight = 1;
        assert!(!w.due(t0 + IDLE_POLL * 10), "busy and nothing arrived");
        w.done.push(ShardCompletion {
            user_data: 1,
            result: Err(crate::shard::failure(
                crate::session::CommandError::TimedOut,
                Vec::new(),
            )),
        });
        assert!(w.due(t0));
        w.done.clear();
        w.in_flight = 0;
        assert!(!w.due(t0));
        assert_eq!(w.next_poll(), Some(t0 + IDLE_POLL));
        assert!(w.due(t0 + IDLE_POLL));
        w.status = WorkStatus::Finished;
        assert!(!w.due(t0 + IDLE_POLL) && w.over());
    }
}
