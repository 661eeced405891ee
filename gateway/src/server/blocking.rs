//! A small pool of threads for the commands whose backend calls may block (COMPARE AND
//! WRITE, WRITE SAME, VERIFY, UNMAP... on file units): an event loop must never wait on
//! a file system or a device, or every connection on it waits too.
//!
//! Fairness: a logical unit has at most [`PER_UNIT_RUNNING`] of its jobs running at once,
//! so a unit whose backend hangs holds that many threads and no more; the other units'
//! jobs pass it in the queue. The queue itself is bounded by the command windows of the
//! sessions feeding it. Results go back to the event loop that submitted the job through
//! its inbox, and the loop's eventfd wakes it.
//!
//! A thread stuck in a backend call stays stuck (a thread cannot be cancelled out of the
//! kernel); the event loop answers that command when its deadline passes and drops the
//! late result, and shutdown does not wait for such threads.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::session::{CommandId, CommandResult};

use crate::wake_batch::Signal;

use super::event_loop::Waker;

/// Jobs of one logical unit running at once.
pub(crate) const PER_UNIT_RUNNING: usize = 2;

/// A command to run off the event loop. Built by [`super::LunExecutor::submit`].
pub struct BlockingJob {
    /// Identifies the logical unit, for fairness (the address of its shared state).
    pub(crate) unit: usize,
    pub(crate) run: Box<dyn FnOnce() -> CommandResult + Send>,
}

/// Set by the event loop when it answered a job's command by the deadline: a job not yet
/// started then never runs (the initiator was told the command failed, and may already
/// have sent another in its place).
pub(crate) type Cancelled = Arc<std::sync::atomic::AtomicBool>;

impl std::fmt::Debug for BlockingJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingJob")
            .field("unit", &self.unit)
            .finish_non_exhaustive()
    }
}

/// Where a job's result goes: the submitting loop's inbox, and which command it answers
/// there (the loop's own job token).
pub(crate) struct Reply {
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) token: (usize, u32),
    pub(crate) command: CommandId,
    pub(crate) cancelled: Cancelled,
}

/// A finished job: the loop's token, the command, its result.
pub(crate) type Finished = ((usize, u32), CommandId, CommandResult);

/// Results for one event loop, and its waker.
///
/// One wake-up per batch, not per result: a post signals the loop only when no signal is
/// pending since the loop's last [`Inbox::take`], and a poster inside a
/// [`crate::wake_batch::batch`] (an `iscsi:` session thread answering what one receive
/// brought) defers that signal to the batch's end.
pub(crate) struct Inbox {
    results: Mutex<Vec<Finished>>,
    waker: Arc<dyn Signal>,
    /// A signal was sent (or deferred) and the loop has not taken the results since.
    signal_pending: AtomicBool,
    /// Signals sent or deferred, for tests and figures.
    signals: AtomicU64,
}

impl Inbox {
    pub(crate) fn new(waker: Arc<Waker>) -> Inbox {
        Inbox {
            results: Mutex::new(Vec::new()),
            waker,
            signal_pending: AtomicBool::new(false),
            signals: AtomicU64::new(0),
        }
    }

    pub(crate) fn post(&self, token: (usize, u32), command: CommandId, result: CommandResult) {
        if let Ok(mut results) = self.results.lock() {
            results.push((token, command, result));
        }
        // SeqCst with `take`'s store: a post whose swap still saw `true` pushed before the
        // loop's take locked the results, so that take finds it.
        if !self.signal_pending.swap(true, Ordering::SeqCst) {
            self.signals.fetch_add(1, Ordering::Relaxed);
            crate::wake_batch::signal_or_defer(&self.waker);
        }
    }

    /// The results posted since the last call.
    pub(crate) fn take(&self) -> Vec<Finished> {
        // Cleared before the results are taken: a post after this signals again.
        self.signal_pending.store(false, Ordering::SeqCst);
        self.results
            .lock()
            .map(|mut results| std::mem::take(&mut *results))
            .unwrap_or_default()
    }

    /// Signals sent (or deferred to a batch's end) so far.
    #[cfg(test)]
    pub(crate) fn signals(&self) -> u64 {
        self.signals.load(Ordering::Relaxed)
    }
}

struct Queued {
    job: BlockingJob,
    reply: Reply,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    /// Jobs running per unit (few units at once, so a list).
    running: Vec<(usize, usize)>,
    stopping: bool,
}

impl State {
    fn running_of(&self, unit: usize) -> usize {
        self.running
            .iter()
            .find(|(u, _)| *u == unit)
            .map_or(0, |(_, n)| *n)
    }

    fn adjust(&mut self, unit: usize, delta: isize) {
        match self.running.iter().position(|(u, _)| *u == unit) {
            Some(at) => {
                let n = self.running[at].1.saturating_add_signed(delta);
                if n == 0 {
                    self.running.swap_remove(at);
                } else {
                    self.running[at].1 = n;
                }
            }
            None if delta > 0 => self.running.push((unit, delta.unsigned_abs())),
            None => {}
        }
    }

    /// The first queued job whose unit has room.
    fn next_runnable(&mut self) -> Option<Queued> {
        let at = self
            .queue
            .iter()
            .position(|q| self.running_of(q.job.unit) < PER_UNIT_RUNNING)?;
        self.queue.remove(at)
    }
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
}

/// The pool. Dropping it asks the threads to stop once their job is done.
pub(crate) struct BlockingPool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl BlockingPool {
    pub(crate) fn start(threads: usize) -> std::io::Result<BlockingPool> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
        });
        let mut handles = Vec::new();
        for index in 0..threads.max(1) {
            let shared = Arc::clone(&shared);
            handles.push(
                std::thread::Builder::new()
                    .name(format!("iscsi-blocking-{index}"))
                    .spawn(move || worker(&shared))?,
            );
        }
        Ok(BlockingPool {
            shared,
            threads: handles,
        })
    }

    pub(crate) fn submit(&self, job: BlockingJob, reply: Reply) {
        if let Ok(mut state) = self.shared.state.lock() {
            state.queue.push_back(Queued { job, reply });
        }
        self.shared.work.notify_one();
    }

    /// Stops the threads that are idle or finish their job; threads stuck in a backend
    /// call are left behind (detached), not waited for.
    pub(crate) fn stop(&mut self) {
        if let Ok(mut state) = self.shared.state.lock() {
            state.stopping = true;
        }
        self.shared.work.notify_all();
        for thread in self.threads.drain(..) {
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for BlockingPool {
    fn drop(&mut self) {
        self.stop();
    }
}

fn worker(shared: &Shared) {
    let Ok(mut state) = shared.state.lock() else {
        return;
    };
    loop {
        if state.stopping {
            return;
        }
        let Some(queued) = state.next_runnable() else {
            state = match shared.work.wait(state) {
                Ok(state) => state,
                Err(_) => return,
            };
            continue;
        };
        let unit = queued.job.unit;
        state.adjust(unit, 1);
        drop(state);
        let result = if queued
            .reply
            .cancelled
            .load(std::sync::atomic::Ordering::Acquire)
        {
            CommandResult::default()
        } else {
            (queued.job.run)()
        };
        queued
            .reply
            .inbox
            .post(queued.reply.token, queued.reply.command, result);
        state = match shared.state.lock() {
            Ok(state) => state,
            Err(_) => return,
        };
        state.adjust(unit, -1);
        // This unit has room again: a job of it may be waiting behind others.
        shared.work.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    fn job(unit: usize, run: impl FnOnce() -> CommandResult + Send + 'static) -> BlockingJob {
        BlockingJob {
            unit,
            run: Box::new(run),
        }
    }

    #[test]
    fn an_inbox_wakes_its_loop_once_per_take_and_once_per_batch() {
        let waker = Arc::new(Waker::new().unwrap());
        let inbox = Inbox::new(Arc::clone(&waker));
        let post = |n: u32| {
            inbox.post(
                (n as usize, 1),
                CommandId::for_tests(n),
                CommandResult::default(),
            )
        };
        // Posts the loop has not taken yet share one wake-up.
        for n in 0..10 {
            post(n);
        }
        assert_eq!((waker.take_wakes(), inbox.signals()), (1, 1));
        assert_eq!(inbox.take().len(), 10);
        // After a take, the next post wakes the loop again.
        post(10);
        assert_eq!(waker.take_wakes(), 1);
        assert_eq!(inbox.take().len(), 1);
        // Inside a batch the wake-up waits for the batch's end, however the loop takes.
        crate::wake_batch::batch(|| {
            post(11);
            assert_eq!(inbox.take().len(), 1);
            post(12);
            assert_eq!(waker.take_wakes(), 0, "held to the batch's end");
        });
        assert_eq!(
            waker.take_wakes(),
            1,
            "two signals deferred to one target: one wake-up"
        );
        assert_eq!(inbox.take().len(), 1);
        assert_eq!(inbox.signals(), 4);
    }

    #[test]
    fn a_hung_unit_holds_only_its_share_of_the_threads() {
        let waker = Arc::new(Waker::new().unwrap());
        let inbox = Arc::new(Inbox::new(waker));
        let pool = BlockingPool::start(3).unwrap();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        // Unit 1 hangs: four jobs that wait for a release that comes at the end.
        for n in 0..4 {
            let release_rx = Arc::clone(&release_rx);
            let reply = Reply {
                inbox: Arc::clone(&inbox),
                token: (n, 1),
                command: CommandId::for_tests(n as u32),
                cancelled: Cancelled::default(),
            };
            pool.submit(
                job(1, move || {
                    let _ = release_rx
                        .lock()
                        .unwrap()
                        .recv_timeout(Duration::from_secs(10));
                    CommandResult::default()
                }),
                reply,
            );
        }
        // Unit 2's job queued behind them still runs, on the third thread.
        let reply = Reply {
            inbox: Arc::clone(&inbox),
            token: (9, 1),
            command: CommandId::for_tests(9),
            cancelled: Cancelled::default(),
        };
        pool.submit(
            job(2, || CommandResult {
                status: 0x42,
                ..CommandResult::default()
            }),
            reply,
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut results = Vec::new();
        while results.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            results = inbox.take();
        }
        assert_eq!(results.len(), 1, "only unit 2's job finished");
        assert_eq!(results[0].0, (9, 1));
        assert_eq!(results[0].2.status, 0x42);
        for _ in 0..4 {
            release_tx.send(()).unwrap();
        }
        let mut finished = 0;
        while finished < 4 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            finished += inbox.take().len();
        }
        assert_eq!(finished, 4, "the hung unit's jobs ran once released");
    }
}
