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

use super::multipath::PathStatus;
use super::work::{RunningWork, ShardWork, WorkStatus, WorkSubmitter};
use super::SharedStats;
use super::{failure, Doorbell, ShardCompletion, ShardConfig, ShardStats};
use crate::adapter::PathFailure;
use crate::session::{CommandError, CommandOutcome, Request};

/// The longest an idle shard sleeps before it looks at its timers again.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// How long a shard whose completion queue is full waits before it looks again (the caller
/// takes completions without ringing the doorbell).
const FULL_WAIT: Duration = Duration::from_millis(1);

/// One finished command: the loop's tag and its result.
pub(super) type Finished = (u64, Result<CommandOutcome, PathFailure>);

/// Why a path did not take a request.
pub(super) enum Refusal {
    /// No room now: the request waits in the loop and goes first next turn.
    Full(Request),
    /// It can never go: it fails at once with this error.
    Failed(Request, CommandError),
}

/// What a path says after a turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PathState {
    /// Carrying commands, or recovering its connection (requests wait or fail in it).
    Serving,
    /// It will never carry a command again (recovery gave up): the shard ends.
    Gone(String),
}

/// What carries a shard's commands (see the module docs). `Send` so that an inline shard
/// can be made on one thread and handed, before its first command, to the one that
/// drives it.
pub(super) trait Path: Send {
    /// Commands the path holds: in flight, waiting inside it, or kept for a new connection.
    fn held(&self) -> usize;
    /// Takes one command. `resend` allows sending it again on a new connection after a
    /// loss (callers' commands; a work hears of the loss instead). A refused command comes
    /// back whole, by value: boxing it would cost an allocation on the I/O path.
    #[allow(clippy::result_large_err)]
    fn submit(
        &mut self,
        now: Instant,
        tag: u64,
        request: Request,
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
    /// Each sub-path's state, for a path made of several (multipath); none otherwise.
    fn statuses(&self) -> Vec<PathStatus> {
        Vec::new()
    }
}

/// How often a shard publishes its sub-paths' states.
const STATUSES_EVERY: Duration = Duration::from_millis(100);

/// A path that carries nothing (what is left of a path handed away).
pub(super) struct Closed;

impl Path for Closed {
    fn held(&self) -> usize {
        0
    }

    fn submit(&mut self, _: Instant, _: u64, r: Request, _: bool) -> Result<(), Refusal> {
        let error = CommandError::ConnectionLost("the shard is closed".into());
        Err(Refusal::Failed(r, error))
    }

    fn abort(&mut self, _: Instant, _: u64) {}

    fn poll(&mut self, _: Instant, _: &mut Vec<Finished>) -> PathState {
        PathState::Gone("the shard is closed".into())
    }

    fn wait(&mut self, _: Duration, _: &dyn Fn() -> bool) {}

    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    fn close(&mut self, _: Instant) -> bool {
        true
    }

    fn count(&self, _: &mut ShardStats) {}
}

/// The queues between a shard and its callers.
pub(super) struct Channels {
    pub(super) submit_rx: Receiver<Request>,
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

/// What every way of running a shard shares: its path, the tags that map the path's
/// commands back to their callers, the one request waiting for room, and the counters.
/// The threaded loop ([`ShardLoop`]) and the inline shard (`inline`) drive it.
pub(super) struct Core {
    pub(super) index: usize,
    pub(super) path: Box<dyn Path>,
    tags: Tags,
    /// A request the path had no room for; first in line next turn.
    pub(super) backlog: Option<Request>,
    finished: Vec<Finished>,
    stats: ShardStats,
}

/// What became of a request handed to [`Core::start`].
pub(super) enum Started {
    Taken,
    /// The path had no room: the request comes back.
    Full(Request),
    /// It can never go: its completion, failed.
    Failed(ShardCompletion),
}

impl Core {
    pub(super) fn new(index: usize, path: Box<dyn Path>, depth: usize) -> Core {
        Core {
            index,
            path,
            tags: Tags::default(),
            backlog: None,
            finished: Vec::with_capacity(depth),
            stats: ShardStats::default(),
        }
    }

    /// Commands held: in the path, and the one waiting for room in it.
    pub(super) fn held(&self) -> usize {
        self.path.held() + usize::from(self.backlog.is_some())
    }

    /// Hands one request to the path.
    pub(super) fn start(&mut self, now: Instant, request: Request, from_work: bool) -> Started {
        let user_data = request.user_data;
        let tag = self.tags.insert(Owner {
            user_data,
            from_work,
        });
        match self.path.submit(now, tag, request, !from_work) {
            Ok(()) => {
                let depth = self.held() as u64;
                self.stats.peak_queue_depth = self.stats.peak_queue_depth.max(depth);
                Started::Taken
            }
            Err(Refusal::Full(request)) => {
                self.tags.remove(tag);
                Started::Full(request)
            }
            Err(Refusal::Failed(request, error)) => {
                self.tags.remove(tag);
                Started::Failed(self.failed(request, error))
            }
        }
    }

    /// The completion of a request the path never took.
    pub(super) fn failed(&mut self, request: Request, error: CommandError) -> ShardCompletion {
        self.stats.ios += 1;
        self.stats.ios_failed += 1;
        ShardCompletion {
            user_data: request.user_data,
            result: Err(failure(error, request.buffer)),
        }
    }

    /// The caller gave up on the command it submitted with `user_data`: the path is asked
    /// to abort it, or, still waiting for room, it never goes (its failed completion).
    pub(super) fn abort(&mut self, now: Instant, user_data: u64) -> Option<ShardCompletion> {
        if let Some(tag) = self.tags.find_caller(user_data) {
            self.path.abort(now, tag);
            return None;
        }
        if self
            .backlog
            .as_ref()
            .is_some_and(|r| r.user_data == user_data)
        {
            let request = self.backlog.take()?;
            return Some(self.failed(request, CommandError::Aborted));
        }
        // Already finished: nothing to do.
        None
    }

    /// One turn of the path; finished commands wait for [`Core::take_finished`].
    pub(super) fn poll(&mut self, now: Instant) -> PathState {
        self.path.poll(now, &mut self.finished)
    }

    /// Hands each finished command to `to`, with whether a work made it.
    pub(super) fn take_finished(&mut self, mut to: impl FnMut(bool, ShardCompletion)) {
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
            to(owner.from_work, completion);
        }
    }

    /// The counters, the path's included.
    pub(super) fn stats(&self) -> ShardStats {
        let mut stats = self.stats;
        self.path.count(&mut stats);
        stats.queue_depth = self.held() as u64;
        stats
    }
}

/// A running shard on its own thread: its path and its callers.
pub(super) struct ShardLoop {
    config: ShardConfig,
    /// When the sub-paths' states are next published.
    statuses_due: Instant,
    core: Core,
    channels: Channels,
    shared: Arc<SharedStats>,
    doorbell: Arc<Doorbell>,
    /// The work running on this shard, if any (one at a time; others wait in `work_rx`).
    work: Option<RunningWork>,
    /// The requests the work made in this turn (kept to reuse the allocation).
    work_requests: Vec<Request>,
    /// Completions waiting to be posted.
    outgoing: Vec<ShardCompletion>,
    /// Completions posted since the caller was last woken, and when the first of them was
    /// (`ShardConfig::caller_wake_batch`).
    unwoken: usize,
    unwoken_since: Option<Instant>,
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
            statuses_due: Instant::now(),
            core: Core::new(index, path, depth),
            channels,
            shared,
            doorbell,
            work: None,
            work_requests: Vec::with_capacity(depth),
            outgoing: Vec::with_capacity(depth),
            unwoken: 0,
            unwoken_since: None,
            stopping: false,
            config,
        }
    }

    /// Serves until the pool stops (and the path has closed) or the path is gone for good.
    pub(super) fn serve(mut self) {
        // Bounded by the pool: it stops the shard, or the path gives up.
        loop {
            let now = Instant::now();
            if let PathState::Gone(reason) = self.core.poll(now) {
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
                if self.core.path.close(now) {
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

    fn held(&self) -> usize {
        self.core.held()
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
            if let Some(aborted) = self.core.abort(now, user_data) {
                self.outgoing.push(aborted);
            }
        }
        if let Some(request) = self.core.backlog.take() {
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
    fn start(&mut self, now: Instant, request: Request, from_work: bool) -> bool {
        match self.core.start(now, request, from_work) {
            Started::Taken => {
                if from_work {
                    if let Some(work) = self.work.as_mut() {
                        work.in_flight += 1;
                    }
                }
                true
            }
            Started::Full(request) if from_work => {
                let error = CommandError::Protocol("the path's queue is full".into());
                let failed = self.core.failed(request, error);
                if let Some(work) = self.work.as_mut() {
                    work.done.push(failed);
                }
                false
            }
            Started::Full(request) => {
                self.core.backlog = Some(request);
                false
            }
            Started::Failed(completion) => {
                match self.work.as_mut() {
                    Some(work) if from_work => work.done.push(completion),
                    _ => self.outgoing.push(completion),
                }
                true
            }
        }
    }

    /// Finished commands go to their work or out to the callers.
    fn route_finished(&mut self) {
        let (work, outgoing) = (&mut self.work, &mut self.outgoing);
        self.core
            .take_finished(|from_work, completion| match work.as_mut() {
                Some(work) if from_work => {
                    work.in_flight = work.in_flight.saturating_sub(1);
                    work.done.push(completion);
                }
                // Dropped if the work is gone (the pool is stopping).
                _ if from_work => {}
                _ => outgoing.push(completion),
            });
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
                shard = self.core.index,
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
            self.core.path.wait(Duration::ZERO, &|| true);
            return;
        }
        let mut timeout = IDLE_WAIT;
        let mut until = |at: Instant| {
            timeout = timeout.min(
                at.saturating_duration_since(now)
                    .max(Duration::from_micros(1)),
            );
        };
        if let Some(at) = self.core.path.next_deadline() {
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
                self.core.path.wait(Duration::ZERO, &|| true);
                return;
            }
        }
        let submit_rx = &self.channels.submit_rx;
        let work_rx = &self.channels.work_rx;
        let abort_rx = &self.channels.abort_rx;
        let ready =
            || (can_take && !submit_rx.is_empty()) || !work_rx.is_empty() || !abort_rx.is_empty();
        self.core.path.wait(timeout, &ready);
        self.doorbell.sleeping.store(false, Ordering::Relaxed);
    }

    /// The path is gone for good: every request waiting fails with the reason, and the
    /// shard ends (its completion queue closes, which callers see as a stopped shard).
    fn give_up(&mut self, reason: &str) {
        tracing::error!(shard = self.core.index, %reason, "giving up on the session");
        let error = || CommandError::ConnectionLost(format!("{reason} (reconnect gave up)"));
        if let Some(request) = self.core.backlog.take() {
            let failed = self.core.failed(request, error());
            self.outgoing.push(failed);
        }
        // Bounded by the queue's capacity.
        while let Ok(request) = self.channels.submit_rx.try_recv() {
            let failed = self.core.failed(request, error());
            self.outgoing.push(failed);
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
        self.shared.store(&self.core.stats());
        // Sub-path states change seldom and are read by people: a tenth of a second
        // late is soon enough, and saves a lock and a copy per turn.
        let now = Instant::now();
        if now >= self.statuses_due {
            self.statuses_due = now + STATUSES_EVERY;
            self.shared.store_paths(self.core.path.statuses());
        }
    }
}

#[cfg(test)]
mod tests {
    //! The loop against a scripted path: no socket, no ring, no adapter.
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::adapter::PathError;
    use crate::scsi::Cdb;
    use crate::session::Residual;

    /// What the scripted path saw and does.
    #[derive(Default)]
    struct Script {
        /// Requests taken, by the loop's tag, in order.
        taken: Vec<(u64, Request)>,
        /// Commands in flight (finished when `finish` says).
        in_flight: VecDeque<(u64, Request)>,
        /// The path takes at most this many at once (`Refusal::Full` beyond).
        capacity: usize,
        /// Finish every command in flight at each poll.
        finish: bool,
        aborted: Vec<u64>,
        gone: Option<String>,
    }

    struct ScriptedPath(Arc<Mutex<Script>>);

    fn good(request: Request) -> Result<CommandOutcome, PathFailure> {
        Ok(CommandOutcome {
            status: 0,
            sense: None,
            residual: Residual::None,
            transferred: request.buffer.len() as u32,
            buffer: request.buffer,
        })
    }

    impl Path for ScriptedPath {
        fn held(&self) -> usize {
            self.0.lock().unwrap().in_flight.len()
        }

        fn submit(&mut self, _: Instant, tag: u64, r: Request, _: bool) -> Result<(), Refusal> {
            let mut s = self.0.lock().unwrap();
            if s.in_flight.len() >= s.capacity {
                return Err(Refusal::Full(r));
            }
            s.taken.push((tag, r.clone()));
            s.in_flight.push_back((tag, r));
            Ok(())
        }

        fn abort(&mut self, _: Instant, tag: u64) {
            let mut s = self.0.lock().unwrap();
            s.aborted.push(tag);
        }

        fn poll(&mut self, _: Instant, done: &mut Vec<Finished>) -> PathState {
            let mut s = self.0.lock().unwrap();
            if let Some(reason) = s.gone.clone() {
                return PathState::Gone(reason);
            }
            if s.finish {
                done.extend(s.in_flight.drain(..).map(|(tag, r)| (tag, good(r))));
            }
            PathState::Serving
        }

        fn wait(&mut self, timeout: Duration, ready: &dyn Fn() -> bool) {
            let until = Instant::now() + timeout.min(Duration::from_millis(2));
            while Instant::now() < until && !ready() {
                std::thread::yield_now();
            }
        }

        fn next_deadline(&self) -> Option<Instant> {
            None
        }

        fn close(&mut self, _: Instant) -> bool {
            true
        }

        fn count(&self, _: &mut ShardStats) {}
    }

    struct Running {
        script: Arc<Mutex<Script>>,
        submit: Option<Sender<Request>>,
        works: Sender<Box<dyn ShardWork>>,
        aborts: Sender<u64>,
        done: Receiver<ShardCompletion>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    fn start(depth: usize, script: Script) -> Running {
        let script = Arc::new(Mutex::new(script));
        let (submit, submit_rx) = crossbeam_channel::bounded(depth);
        let (works, work_rx) = crossbeam_channel::bounded(4);
        let (aborts, abort_rx) = crossbeam_channel::bounded(depth);
        let (done_tx, done) = crossbeam_channel::bounded(2 * depth);
        let config = ShardConfig {
            queue_depth: depth,
            ..ShardConfig::default()
        };
        let path = ScriptedPath(Arc::clone(&script));
        let channels = Channels {
            submit_rx,
            work_rx,
            abort_rx,
            done_tx,
        };
        let doorbell = Arc::new(Doorbell::new().expect("eventfd"));
        let thread = std::thread::spawn(move || {
            let shared = Arc::new(SharedStats::default());
            ShardLoop::new(0, config, Box::new(path), channels, shared, doorbell).serve()
        });
        Running {
            script,
            submit: Some(submit),
            works,
            aborts,
            done,
            thread: Some(thread),
        }
    }

    impl Running {
        fn submit(&self, user_data: u64) {
            let request = Request::new(
                0,
                Cdb::read(0, 1, 8, false).expect("a READ(10)"),
                vec![0; 8],
                user_data,
            );
            self.submit.as_ref().unwrap().send(request).unwrap();
        }

        fn next(&self) -> ShardCompletion {
            self.done
                .recv_timeout(Duration::from_secs(5))
                .expect("a completion within 5 s")
        }

        fn script(&self) -> std::sync::MutexGuard<'_, Script> {
            self.script.lock().unwrap()
        }

        fn wait_until(&self, what: &str, cond: impl Fn(&Script) -> bool) {
            let until = Instant::now() + Duration::from_secs(5);
            while !cond(&self.script()) {
                assert!(Instant::now() < until, "timed out waiting for {what}");
                std::thread::sleep(Duration::from_millis(1));
            }
        }

        fn stop(mut self) {
            self.submit = None;
            self.thread
                .take()
                .unwrap()
                .join()
                .expect("the loop ends cleanly");
        }
    }

    #[test]
    fn completions_carry_the_callers_user_data_whatever_tag_the_path_saw() {
        let shard = start(
            4,
            Script {
                capacity: 4,
                finish: true,
                ..Script::default()
            },
        );
        for user_data in [u64::MAX, 7, 7, 0] {
            shard.submit(user_data);
        }
        let mut seen: Vec<u64> = (0..4).map(|_| shard.next().user_data).collect();
        seen.sort_unstable();
        assert_eq!(seen, [0, 7, 7, u64::MAX]);
        // The path never saw the caller's values as tags: they are the loop's own.
        assert!(shard.script().taken.iter().all(|(tag, _)| *tag < 4));
        shard.stop();
    }

    #[test]
    fn a_request_the_path_has_no_room_for_waits_and_goes_first_in_order() {
        let shard = start(
            8,
            Script {
                capacity: 2,
                ..Script::default()
            },
        );
        for user_data in 1..=5 {
            shard.submit(user_data);
        }
        shard.wait_until("two requests in the path", |s| s.taken.len() == 2);
        std::thread::sleep(Duration::from_millis(20));
        // Full: no more went in, none was failed or lost.
        assert_eq!(shard.script().taken.len(), 2);
        assert!(shard.done.is_empty());
        shard.script().finish = true;
        let mut seen: Vec<u64> = (0..5).map(|_| shard.next().user_data).collect();
        let order: Vec<u64> = shard
            .script()
            .taken
            .iter()
            .map(|(_, r)| r.user_data)
            .collect();
        assert_eq!(order, [1, 2, 3, 4, 5], "taken in submission order");
        seen.sort_unstable();
        assert_eq!(seen, [1, 2, 3, 4, 5]);
        shard.stop();
    }

    #[test]
    fn an_abort_reaches_the_path_by_tag_or_fails_a_request_it_never_took() {
        let shard = start(
            4,
            Script {
                capacity: 1,
                ..Script::default()
            },
        );
        shard.submit(10);
        shard.submit(20);
        shard.wait_until("the first request in the path", |s| s.taken.len() == 1);
        let tag_of_10 = shard.script().taken[0].0;
        // 20 waits in the loop (the path is full): aborting it fails it at once.
        shard.aborts.send(20).unwrap();
        let aborted = shard.next();
        assert_eq!(aborted.user_data, 20);
        assert!(matches!(
            aborted.result,
            Err(PathFailure {
                error: PathError::Command(CommandError::Aborted),
                ..
            })
        ));
        // 10 is in the path: the path is asked, with its own tag.
        shard.aborts.send(10).unwrap();
        shard.wait_until("the abort in the path", |s| s.aborted == [tag_of_10]);
        // An abort of something unknown does nothing.
        shard.aborts.send(99).unwrap();
        shard.script().finish = true;
        assert_eq!(shard.next().user_data, 10);
        assert_eq!(shard.script().aborted, [tag_of_10]);
        shard.stop();
    }

    /// A work that reads `count` times with the same `user_data` callers use.
    struct Reads {
        left: usize,
        back: Arc<Mutex<Vec<u64>>>,
    }

    impl ShardWork for Reads {
        fn poll(
            &mut self,
            _: Instant,
            done: &mut Vec<ShardCompletion>,
            submit: &mut WorkSubmitter<'_>,
        ) -> WorkStatus {
            self.back
                .lock()
                .unwrap()
                .extend(done.iter().map(|c| c.user_data));
            while self.left > 0 && submit.room() > 0 {
                let request = Request::new(
                    0,
                    Cdb::read(0, 1, 8, false).expect("a READ(10)"),
                    vec![0; 8],
                    7,
                );
                if submit.submit(request).is_err() {
                    break;
                }
                self.left -= 1;
            }
            match self.left {
                0 => WorkStatus::Finished,
                _ => WorkStatus::Running,
            }
        }
    }

    #[test]
    fn a_works_completions_go_to_the_work_and_the_callers_to_the_queue() {
        let shard = start(
            4,
            Script {
                capacity: 4,
                finish: true,
                ..Script::default()
            },
        );
        let back = Arc::new(Mutex::new(Vec::new()));
        let work = Reads {
            left: 6,
            back: Arc::clone(&back),
        };
        shard.works.send(Box::new(work)).unwrap();
        shard.submit(7);
        assert_eq!(shard.next().user_data, 7);
        let until = Instant::now() + Duration::from_secs(5);
        while back.lock().unwrap().len() < 6 {
            assert!(Instant::now() < until, "the work's completions came back");
            std::thread::sleep(Duration::from_millis(1));
        }
        // The caller got exactly its one completion; the work its six.
        std::thread::sleep(Duration::from_millis(20));
        assert!(shard.done.is_empty());
        assert_eq!(back.lock().unwrap().len(), 6);
        shard.stop();
    }

    #[test]
    fn a_path_that_is_gone_fails_what_waits_and_ends_the_shard() {
        let shard = start(
            4,
            Script {
                capacity: 0,
                ..Script::default()
            },
        );
        shard.submit(1);
        shard.submit(2);
        std::thread::sleep(Duration::from_millis(20));
        shard.script().gone = Some("the target went away".into());
        for _ in 0..2 {
            let c = shard.next();
            match c.result {
                Err(PathFailure {
                    error: PathError::Command(CommandError::ConnectionLost(reason)),
                    ..
                }) => assert!(reason.contains("the target went away"), "{reason}"),
                other => panic!("expected a lost connection, got {other:?}"),
            }
        }
        // The thread ended by itself: the completion queue is closed.
        assert!(shard.done.recv_timeout(Duration::from_secs(5)).is_err());
        shard.stop();
    }
}
