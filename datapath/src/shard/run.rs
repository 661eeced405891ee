//! The one shard loop, whatever carries the commands (libiscsi's transport table is the
//! model): software TCP through the shard's own io_uring (`tcp`), or a queue pair of a
//! dependent or independent offload adapter (`adapters`). Each is a [`Path`]; the loop owns
//! everything about the callers, once: the bounded queues, room, the work running on the
//! shard, aborts, completion posting, caller wake moderation and the idle poll.
//!
//! # One turn
//! 1. [`Path::poll`]: the path moves its I/O on without blocking and hands back the
//!    commands that finished (only once no buffer of theirs is in use by the kernel or an
//!    adapter);
//! 2. finished commands go to the work that made them or out to the callers' queue;
//! 3. a waiting work, then aborts, then queued requests are taken while there is room;
//! 4. the work runs when due; its requests go straight to the path;
//! 5. completions are posted and a sleeping caller is woken when its moderation says so;
//! 6. with nothing held, the queue is polled for `idle_spin` before sleeping;
//! 7. [`Path::wait`]: the path starts what it queued and sleeps until it has news, a
//!    caller rings the doorbell, or the earliest deadline (its own timers, the work's next
//!    poll, a due caller wake-up).
//!
//! Requests carry the caller's `user_data`; the loop hands the path its own tag (an index
//! into `Tags`, which also says whether the command is a work's) and maps it back once.

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use super::work::{RunningWork, ShardWork, WorkStatus, WorkSubmitter};
use super::SharedStats;
use super::{failure, Doorbell, ShardCompletion, ShardConfig, ShardRequest, ShardStats};
use crate::session::{CommandError, CommandFailure, CommandOutcome};

/// The longest an idle shard sleeps before it looks at its timers again.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// How long a shard whose completion queue is full waits before it looks again (the caller
/// takes completions without ringing the doorbell).
const FULL_WAIT: Duration = Duration::from_millis(1);

/// One finished command: the loop's tag and its result.
pub(super) type Finished = (u64, Result<CommandOutcome, CommandFailure>);

/// Why a path did not take a request.
pub(super) enum Refusal {
    /// No room now: the request waits in the loop and goes first next turn.
    Full(ShardRequest),
    /// It can never go: it fails at once with this error.
    Failed(ShardRequest, CommandError),
}

/// What a path says after a turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PathState {
    /// Carrying commands, or recovering its connection (requests wait or fail in it).
    Serving,
    /// It will never carry a command again (recovery gave up): the shard ends.
    Gone(String),
}

/// What carries a shard's commands (see the module docs).
pub(super) trait Path {
    /// Commands the path holds: in flight, waiting inside it, or kept for a new connection.
    fn held(&self) -> usize;
    /// Takes one command. `resend` allows sending it again on a new connection after a
    /// loss (callers' commands; a work hears of the loss instead).
    fn submit(
        &mut self,
        now: Instant,
        tag: u64,
        request: ShardRequest,
        resend: bool,
    ) -> Result<(), Refusal>;
    /// The caller gave up on command `tag` (ABORT TASK where the path can send one).
    fn abort(&mut self, now: Instant, tag: u64);
    /// Moves I/O on without blocking and appends the commands that finished.
    fn poll(&mut self, now: Instant, done: &mut Vec<Finished>) -> PathState;
    /// Starts what the turn queued and sleeps up to `timeout` (zero: do not sleep) until
    /// the path has news or `callers_ready` turns true (a caller rang the doorbell).
    fn wait(&mut self, timeout: Duration, callers_ready: &dyn Fn() -> bool);
    /// The path's next timer, if any.
    fn next_deadline(&self) -> Option<Instant>;
    /// The pool stops and nothing is held: log out. True once the path is closed.
    fn close(&mut self, now: Instant) -> bool;
    /// Adds the path's counters (kernel entries, bytes copied, reconnects) to `stats`.
    fn count(&self, stats: &mut ShardStats);
}

/// The queues between a shard and its callers.
pub(super) struct Channels {
    pub(super) submit_rx: Receiver<ShardRequest>,
    pub(super) work_rx: Receiver<Box<dyn ShardWork>>,
    /// ABORT TASK requests, by the command's `user_data`.
    pub(super) abort_rx: Receiver<u64>,
    pub(super) done_tx: Sender<ShardCompletion>,
}

/// Whose command a tag is.
#[derive(Clone, Copy)]
struct Owner {
    user_data: u64,
    from_work: bool,
}

/// The loop's tags: a slab of owners, indexed by tag (at most twice the queue depth).
#[derive(Default)]
struct Tags {
    slots: Vec<Option<Owner>>,
    free: Vec<u64>,
}

impl Tags {
    fn insert(&mut self, owner: Owner) -> u64 {
        match self.free.pop() {
            Some(tag) => {
                self.slots[tag as usize] = Some(owner);
                tag
            }
            None => {
                self.slots.push(Some(owner));
                self.slots.len() as u64 - 1
            }
        }
    }

    fn remove(&mut self, tag: u64) -> Option<Owner> {
        let owner = self.slots.get_mut(tag as usize)?.take()?;
        self.free.push(tag);
        Some(owner)
    }

    /// A caller's command by its `user_data` (aborts only: a scan of the slab).
    fn find_caller(&self, user_data: u64) -> Option<u64> {
        self.slots
            .iter()
            .position(|o| o.is_some_and(|o| !o.from_work && o.user_data == user_data))
            .map(|i| i as u64)
    }
}

/// A running shard: its path and its callers.
pub(super) struct ShardLoop {
    index: usize,
    config: ShardConfig,
    path: Box<dyn Path>,
    channels: Channels,
    shared: Arc<SharedStats>,
    doorbell: Arc<Doorbell>,
    tags: Tags,
    /// A request the path had no room for; first in line next turn.
    backlog: Option<ShardRequest>,
    /// The work running on this shard, if any (one at a time; others wait in `work_rx`).
    work: Option<RunningWork>,
    /// The requests the work made in this turn (kept to reuse the allocation).
    work_requests: Vec<ShardRequest>,
    finished: Vec<Finished>,
    /// Completions waiting to be posted.
    outgoing: Vec<ShardCompletion>,
    /// Completions posted since the caller was last woken, and when the first of them was
    /// (`ShardConfig::caller_wake_batch`).
    unwoken: usize,
    unwoken_since: Option<Instant>,
    stats: ShardStats,
    stopping: bool,
}

impl ShardLoop {
    pub(super) fn new(
        index: usize,
        config: ShardConfig,
        path: Box<dyn Path>,
        channels: Channels,
        shared: Arc<SharedStats>,
        doorbell: Arc<Doorbell>,
    ) -> ShardLoop {
        let depth = config.queue_depth;
        ShardLoop {
            index,
            path,
            channels,
            shared,
            doorbell,
            tags: Tags::default(),
            backlog: None,
            work: None,
            work_requests: Vec::with_capacity(depth),
            finished: Vec::with_capacity(depth),
            outgoing: Vec::with_capacity(depth),
            unwoken: 0,
            unwoken_since: None,
            stats: ShardStats::default(),
            stopping: false,
            config,
        }
    }

    /// Serves until the pool stops (and the path has closed) or the path is gone for good.
    pub(super) fn serve(mut self) {
        // Bounded by the pool: it stops the shard, or the path gives up.
        loop {
            let now = Instant::now();
            if let PathState::Gone(reason) = self.path.poll(now, &mut self.finished) {
                self.route_finished();
                self.give_up(&reason);
                break;
            }
            self.route_finished();
            self.accept(now);
            self.run_work(now);
            self.route_finished();
            self.post();
            self.wake_caller_if_due(now);
            if self.stopping && self.held() == 0 && self.outgoing.is_empty() {
                if self.path.close(now) {
                    break;
                }
            } else if self.idle_spin_pays() && self.spin_for_request(now) {
                // Before the path arms anything: the request and the receive for its
                // answer then share this turn's kernel entry.
                self.accept(now);
            }
            self.publish();
            self.wait(now);
        }
        self.work = None;
        self.publish();
    }

    /// Commands held: in the path, and the one waiting for room in it.
    fn held(&self) -> usize {
        self.path.held() + usize::from(self.backlog.is_some())
    }

    /// Room for more commands: under `queue_depth`, and never more than fit in the
    /// completion queue (twice that) beside the completions not yet taken, so posting a
    /// completion never blocks.
    fn room(&self) -> usize {
        let depth = self.config.queue_depth;
        let held = self.held();
        let pending = held + self.channels.done_tx.len() + self.outgoing.len();
        depth
            .saturating_sub(held)
            .min((2 * depth).saturating_sub(pending))
    }

    /// Takes a waiting work, the aborts asked for, and requests while there is room.
    fn accept(&mut self, now: Instant) {
        if self.work.is_none() && !self.stopping {
            if let Ok(work) = self.channels.work_rx.try_recv() {
                self.work = Some(RunningWork::new(work));
            }
        }
        // Bounded by the abort queue's capacity.
        while let Ok(user_data) = self.channels.abort_rx.try_recv() {
            match self.tags.find_caller(user_data) {
                Some(tag) => self.path.abort(now, tag),
                // Not yet handed to the path: it never goes.
                None if self
                    .backlog
                    .as_ref()
                    .is_some_and(|r| r.user_data == user_data) =>
                {
                    if let Some(request) = self.backlog.take() {
                        self.fail_now(request, CommandError::Aborted, false);
                    }
                }
                // Already finished: nothing to do.
                None => {}
            }
        }
        if let Some(request) = self.backlog.take() {
            if !self.start(now, request, false) {
                return;
            }
        }
        // Bounded by the room, which each request taken shrinks.
        while !self.stopping && self.room() > 0 {
            match self.channels.submit_rx.try_recv() {
                Ok(request) => {
                    if !self.start(now, request, false) {
                        return;
                    }
                }
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => self.stopping = true,
            }
        }
    }

    /// Hands one request to the path. False when the path had no room (a caller's request
    /// then waits in the backlog; a work's fails as "queue full" to the work).
    fn start(&mut self, now: Instant, request: ShardRequest, from_work: bool) -> bool {
        let user_data = request.user_data;
        let tag = self.tags.insert(Owner {
            user_data,
            from_work,
        });
        match self.path.submit(now, tag, request, !from_work) {
            Ok(()) => {
                if from_work {
                    if let Some(work) = self.work.as_mut() {
                        work.in_flight += 1;
                    }
                }
                let depth = self.held() as u64;
                self.stats.peak_queue_depth = self.stats.peak_queue_depth.max(depth);
                true
            }
            Err(Refusal::Full(request)) => {
                self.tags.remove(tag);
                if from_work {
                    let error = CommandError::Protocol("the path's queue is full".into());
                    self.fail_now(request, error, true);
                } else {
                    self.backlog = Some(request);
                }
                false
            }
            Err(Refusal::Failed(request, error)) => {
                self.tags.remove(tag);
                self.fail_now(request, error, from_work);
                true
            }
        }
    }

    /// Fails a request the path never took.
    fn fail_now(&mut self, request: ShardRequest, error: CommandError, from_work: bool) {
        self.stats.ios += 1;
        self.stats.ios_failed += 1;
        let completion = ShardCompletion {
            user_data: request.user_data,
            result: Err(failure(error, request.buffer)),
        };
        match self.work.as_mut() {
            Some(work) if from_work => work.done.push(completion),
            _ => self.outgoing.push(completion),
        }
    }

    /// Finished commands go to their work or out to the callers.
    fn route_finished(&mut self) {
        for (tag, result) in self.finished.drain(..) {
            let Some(owner) = self.tags.remove(tag) else {
                tracing::warn!(
                    shard = self.index,
                    tag,
                    "a path finished an unknown command"
                );
                continue;
            };
            self.stats.ios += 1;
            match &result {
                Ok(outcome) => self.stats.bytes += u64::from(outcome.transferred),
                Err(_) => self.stats.ios_failed += 1,
            }
            let completion = ShardCompletion {
                user_data: owner.user_data,
                result,
            };
            if owner.from_work {
                // Dropped if the work is gone (the pool is stopping).
                if let Some(work) = self.work.as_mut() {
                    work.in_flight = work.in_flight.saturating_sub(1);
                    work.done.push(completion);
                }
            } else {
                self.outgoing.push(completion);
            }
        }
    }

    /// Calls the work when it is due: hands it its completions and starts the requests it
    /// makes. Drops it once it is over, or at once (with whatever it still holds) when the
    /// pool stops.
    fn run_work(&mut self, now: Instant) {
        let room = self.room();
        let stopping = self.stopping;
        let Some(work) = self.work.as_mut() else {
            return;
        };
        if stopping || work.panicked {
            work.done.clear();
            if work.in_flight == 0 {
                self.work = None;
            }
            return;
        }
        if !work.due(now) {
            return;
        }
        let mut requests = std::mem::take(&mut self.work_requests);
        let mut submit = WorkSubmitter::new(room, &mut requests);
        // A work that panics must not take the shard (and the I/O it holds) down.
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            work.work.poll(now, &mut work.done, &mut submit)
        }));
        let status = polled.unwrap_or_else(|_| {
            tracing::error!(
                shard = self.index,
                "the work on this shard panicked: it is dropped once its commands are back"
            );
            work.panicked = true;
            requests.clear();
            WorkStatus::Finished
        });
        // A finished work stays finished.
        if work.status == WorkStatus::Running {
            work.status = status;
        }
        work.done.clear();
        work.polled_at = Some(now);
        for request in requests.drain(..) {
            self.start(now, request, true);
        }
        self.work_requests = requests;
        if self.work.as_ref().is_some_and(RunningWork::over) {
            self.work = None;
        }
    }

    /// Posts the completions collected so far; the counters are published first, so a
    /// caller holding a completion sees counters that include it.
    fn post(&mut self) {
        if self.outgoing.is_empty() {
            return;
        }
        self.publish();
        self.unwoken += self.outgoing.len();
        for completion in self.outgoing.drain(..) {
            // Never blocks: the shard holds no more than the queue's free room.
            let _ = self.channels.done_tx.send(completion);
        }
        self.unwoken_since.get_or_insert_with(Instant::now);
    }

    /// Wakes a sleeping caller once enough completions are posted, none of its commands is
    /// left in flight, the oldest posted completion has waited long enough, or the shard
    /// stops (`ShardConfig::caller_wake_batch`).
    fn wake_caller_if_due(&mut self, now: Instant) {
        let Some(since) = self.unwoken_since else {
            return;
        };
        let batch = self
            .config
            .caller_wake_batch
            .unwrap_or(self.config.queue_depth);
        let due = self.unwoken >= batch
            || self.held() == 0
            || self.stopping
            || now.saturating_duration_since(since) >= self.config.caller_wake_delay_max;
        if due {
            self.doorbell.caller.wake();
            self.unwoken = 0;
            self.unwoken_since = None;
        }
    }

    /// Whether to poll the queue before the path arms its receive and sleeps: idle, room
    /// for requests, and a spin configured.
    fn idle_spin_pays(&self) -> bool {
        !self.config.idle_spin.is_zero()
            && !self.stopping
            && self.held() == 0
            && self.outgoing.is_empty()
            && self.room() > 0
    }

    /// Polls the queue for up to `idle_spin`: a sleeping shard costs the caller a doorbell
    /// write and the shard a wake-up per request at queue depth 1. True when a request came.
    fn spin_for_request(&self, now: Instant) -> bool {
        let until = now + self.config.idle_spin;
        // Bounded by the clock: each round either finds a request or reads the clock.
        loop {
            if !self.channels.submit_rx.is_empty() {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::yield_now();
        }
    }

    /// Lets the path start what it queued and sleep: not at all when requests are queued
    /// and there is room for them, else until its news, the doorbell, or the earliest
    /// deadline.
    fn wait(&mut self, now: Instant) {
        let can_take = !self.stopping && self.room() > 0;
        if can_take && !self.channels.submit_rx.is_empty() {
            self.path.wait(Duration::ZERO, &|| true);
            return;
        }
        let mut timeout = IDLE_WAIT;
        let mut until = |at: Instant| {
            timeout = timeout.min(
                at.saturating_duration_since(now)
                    .max(Duration::from_micros(1)),
            );
        };
        if let Some(at) = self.path.next_deadline() {
            until(at);
        }
        if let Some(at) = self.work.as_ref().and_then(RunningWork::next_poll) {
            until(at);
        }
        if let Some(since) = self.unwoken_since {
            // Back in time to wake the caller for completions posted but not announced.
            until(since + self.config.caller_wake_delay_max);
        }
        if !self.stopping && self.room() == 0 && self.held() == 0 {
            // The caller has not taken its completions yet; it does not ring for that.
            timeout = timeout.min(FULL_WAIT);
        }
        if self.stopping && self.held() == 0 {
            // Closing: the path's own answers drive it.
            timeout = timeout.min(FULL_WAIT);
        }
        if can_take {
            // Dekker-style hand-off with `Doorbell::ring`: announce the sleep, then look
            // at the queue once more; a caller queues, then looks at the flag.
            self.doorbell.sleeping.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if !self.channels.submit_rx.is_empty() {
                self.doorbell.sleeping.store(false, Ordering::Relaxed);
                self.path.wait(Duration::ZERO, &|| true);
                return;
            }
        }
        let submit_rx = &self.channels.submit_rx;
        let work_rx = &self.channels.work_rx;
        let abort_rx = &self.channels.abort_rx;
        let ready =
            || (can_take && !submit_rx.is_empty()) || !work_rx.is_empty() || !abort_rx.is_empty();
        self.path.wait(timeout, &ready);
        self.doorbell.sleeping.store(false, Ordering::Relaxed);
    }

    /// The path is gone for good: every request waiting fails with the reason, and the
    /// shard ends (its completion queue closes, which callers see as a stopped shard).
    fn give_up(&mut self, reason: &str) {
        tracing::error!(shard = self.index, %reason, "giving up on the session");
        let error = || CommandError::ConnectionLost(format!("{reason} (reconnect gave up)"));
        if let Some(request) = self.backlog.take() {
            self.fail_now(request, error(), false);
        }
        // Bounded by the queue's capacity.
        while let Ok(request) = self.channels.submit_rx.try_recv() {
            self.fail_now(request, error(), false);
        }
        self.publish();
        for completion in self.outgoing.drain(..) {
            // The caller may not be taking completions (it is stopping): wait a little
            // for room, then drop the rest with the thread.
            if self
                .channels
                .done_tx
                .send_timeout(completion, Duration::from_secs(1))
                .is_err()
            {
                break;
            }
            self.doorbell.caller.wake();
        }
    }

    fn publish(&mut self) {
        let mut stats = self.stats;
        self.path.count(&mut stats);
        stats.queue_depth = self.held() as u64;
        self.shared.store(&stats);
    }
}
