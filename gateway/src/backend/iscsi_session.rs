//! One session thread of the `iscsi:` backend: it owns one `datapath::client::Client` (a
//! client stays on the thread that logged it in) and keeps up to [`SESSION_DEPTH`]
//! commands in flight on it, taken from its own queue (the backend sends a command to the
//! first session whose window is not full: `iscsi.rs`). Its client sends a batch and
//! waits for the answers in one kernel entry. A read's buffer is lent to the far command
//! (the data comes back in the outcome); a write's data is kept to be sent again.
//!
//! A turn: take what the queue holds (waiting for it only when nothing is in flight), log
//! in if the session is gone, submit everything that fits, wait for at least one
//! completion, answer or retry each. A lost session (connection reset, the far side
//! restarted) is logged in again and every command it held is sent again, each within its
//! own budget from when it was queued ([`Far::reconnect_budget`]); BUSY and TASK SET FULL
//! are retried within that budget; a unit attention (the far side's answer after such a
//! login) is taken and the command retried, [`UNIT_ATTENTION_RETRIES`] times at most. A SCSI
//! refusal is an I/O error naming its sense. The thread ends when the queue closes.
//!
//! The answers of one receive are posted as one batch ([`crate::wake_batch`]): an event
//! loop is woken once for all of its commands among them.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::time::{Duration, Instant};

use datapath::client::{Client, ClientConfig, ClientError, Refused};
use datapath::scsi::probe::describe;
use datapath::scsi::{Cdb, DataDirection, Sense};
use datapath::session::{CommandOutcome, Request};

/// Commands one session keeps in flight at most (the far side's window may hold it lower).
pub const SESSION_DEPTH: usize = 32;
/// Unit attentions taken per command before its answer counts as a failure.
const UNIT_ATTENTION_RETRIES: u32 = 4;

const STATUS_GOOD: u8 = 0x00;
const STATUS_CHECK_CONDITION: u8 = 0x02;
const STATUS_BUSY: u8 = 0x08;
const STATUS_TASK_SET_FULL: u8 = 0x28;

/// What a session thread needs to log in and run commands.
pub(super) struct Far {
    pub url: String,
    pub config: ClientConfig,
    pub lun: u64,
    pub reconnect_budget: Duration,
}

/// Where a command's outcome goes: a caller waiting on a channel (the backend's
/// synchronous calls) or a callback (queued I/O from an event loop).
pub(super) enum Reply {
    Wait(crossbeam_channel::Sender<io::Result<Vec<u8>>>),
    Call(super::QueuedDone),
}

impl Reply {
    fn send(self, outcome: io::Result<Vec<u8>>) {
        match self {
            Reply::Wait(channel) => {
                let _ = channel.send(outcome);
            }
            Reply::Call(done) => done(outcome),
        }
    }
}

/// One command for a session thread.
pub(super) struct Job {
    pub cdb: Cdb,
    /// The write data (sent again after a lost session, so each attempt sends a copy), or
    /// a buffer of the read's length (lent to the attempt: see `attempt_buffer`).
    pub buffer: Vec<u8>,
    pub reply: Reply,
    /// Counts the job in its session's load until it is dropped (answered, or its thread
    /// gone).
    pub load: LoadTicket,
}

impl Job {
    /// Answers the job: its session's load goes down first, so a command the answer lets
    /// the host send finds the session's window as it is.
    pub(super) fn answer(self, outcome: io::Result<Vec<u8>>) {
        let Job { reply, load, .. } = self;
        drop(load);
        reply.send(outcome);
    }
}

/// One command in a session's load ([`super::iscsi`]'s choice of session); the count
/// goes down when the ticket is dropped.
pub(super) struct LoadTicket(pub std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for LoadTicket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A job with its retry state.
struct Attempt {
    job: Job,
    /// Retries (a lost session, BUSY) stop here.
    deadline: Instant,
    attentions: u32,
}

/// What a session thread did, for its tests: the most commands it had in flight at once
/// and how many times it logged in.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct SessionTally {
    pub in_flight_most: usize,
    pub logins: usize,
}

/// The thread's loop, until the queue closes.
pub(super) fn session_thread(far: &Far, queue: &crossbeam_channel::Receiver<Job>) -> SessionTally {
    let mut tally = SessionTally::default();
    let mut session: Option<Client> = None;
    let mut waiting: VecDeque<Attempt> = VecDeque::new();
    let mut in_flight: HashMap<u64, Attempt> = HashMap::new();
    let mut next_tag = 0u64;
    let mut pause = Duration::from_millis(20);
    let mut finished = Vec::with_capacity(SESSION_DEPTH);
    loop {
        if waiting.is_empty() && in_flight.is_empty() {
            match queue.recv() {
                Ok(job) => waiting.push_back(attempt(far, job)),
                Err(_) => break,
            }
        }
        while waiting.len() + in_flight.len() < SESSION_DEPTH {
            match queue.try_recv() {
                Ok(job) => waiting.push_back(attempt(far, job)),
                Err(_) => break,
            }
        }
        let client = match &mut session {
            Some(client) => client,
            None => match Client::connect(&far.config) {
                Ok(client) => {
                    tally.logins += 1;
                    pause = Duration::from_millis(20);
                    session.insert(client)
                }
                Err(error) => {
                    let why = format!("{}: logging in again: {error}", far.url);
                    fail_expired(&mut waiting, &why);
                    if !waiting.is_empty() {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_millis(500));
                    }
                    continue;
                }
            },
        };
        let mut window_closed = false;
        while in_flight.len() < SESSION_DEPTH {
            let Some(mut next) = waiting.pop_front() else {
                break;
            };
            let tag = next_tag;
            next_tag = next_tag.wrapping_add(1);
            let request = Request::new(
                far.lun,
                next.job.cdb.clone(),
                attempt_buffer(&mut next.job),
                tag,
            );
            match client.submit(request) {
                Ok(()) => {
                    in_flight.insert(tag, next);
                }
                Err(Refused::Full(_)) => {
                    waiting.push_front(next);
                    window_closed = true;
                    break;
                }
                Err(Refused::Failed(error)) => next
                    .job
                    .answer(Err(io::Error::other(format!("{}: {error}", far.url)))),
            }
        }
        tally.in_flight_most = tally.in_flight_most.max(in_flight.len());
        if in_flight.is_empty() {
            if window_closed {
                // The far side's window is shut with nothing of ours in it: wait for it to
                // open (its NOP-In or a later login), within the commands' budgets.
                fail_expired(
                    &mut waiting,
                    &format!("{}: the command window stayed shut", far.url),
                );
                std::thread::sleep(Duration::from_millis(5));
                session = None;
            }
            continue;
        }
        finished.clear();
        let mut lost_session = false;
        match client.wait_completions(&mut finished) {
            Ok(()) => {}
            Err(error) => {
                tracing::debug!(url = %far.url, %error, "the session's connection failed");
                lost_session = true;
            }
        }
        // What one receive brought is answered as one batch: each event loop that has
        // answers among them is woken once, at the end (`wake_batch`), not per command.
        let busy = crate::wake_batch::batch(|| {
            let mut busy = false;
            for (tag, result) in finished.drain(..) {
                let Some(mut attempt) = in_flight.remove(&tag) else {
                    continue;
                };
                match judge(far, &mut attempt, result) {
                    Verdict::Done(outcome) => attempt.job.answer(outcome),
                    Verdict::Retry { lost, was_busy } => {
                        lost_session |= lost;
                        busy |= was_busy;
                        waiting.push_back(attempt);
                    }
                }
            }
            busy
        });
        if lost_session {
            tracing::warn!(
                url = %far.url,
                still_in_flight = in_flight.len(),
                "session to the far side lost; logging in again"
            );
            session = None;
            // What the lost session held goes again, oldest first.
            let mut held: Vec<(u64, Attempt)> = in_flight.drain().collect();
            held.sort_unstable_by_key(|(tag, _)| *tag);
            for (_, attempt) in held.into_iter().rev() {
                waiting.push_front(attempt);
            }
            let why = format!("{}: the session was lost and not regained in time", far.url);
            fail_expired(&mut waiting, &why);
        }
        if busy {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    if let Some(client) = session {
        let _ = client.logout();
    }
    tally
}

/// The buffer one attempt of `job` sends: a read's own buffer, lent (the data comes back
/// in the outcome, and an attempt lost with its session gets a fresh one); a copy of a
/// write's data, which is kept to be sent again after a lost session.
fn attempt_buffer(job: &mut Job) -> Vec<u8> {
    match job.cdb.direction() {
        DataDirection::Read(len) => {
            let buffer = std::mem::take(&mut job.buffer);
            if buffer.len() == len as usize {
                buffer
            } else {
                vec![0; len as usize]
            }
        }
        _ => job.buffer.clone(),
    }
}

fn attempt(far: &Far, job: Job) -> Attempt {
    Attempt {
        job,
        deadline: Instant::now() + far.reconnect_budget,
        attentions: 0,
    }
}

/// Answers the waiting commands whose budget is spent with `why`.
fn fail_expired(waiting: &mut VecDeque<Attempt>, why: &str) {
    let now = Instant::now();
    let mut kept = VecDeque::with_capacity(waiting.len());
    for attempt in waiting.drain(..) {
        if attempt.deadline <= now {
            attempt.job.answer(Err(io::Error::other(why.to_string())));
        } else {
            kept.push_back(attempt);
        }
    }
    *waiting = kept;
}

enum Verdict {
    Done(io::Result<Vec<u8>>),
    Retry { lost: bool, was_busy: bool },
}

/// What one completion means for its command.
fn judge(far: &Far, attempt: &mut Attempt, result: Result<CommandOutcome, ClientError>) -> Verdict {
    let in_budget = Instant::now() < attempt.deadline;
    match result {
        Ok(outcome) => match outcome.status {
            STATUS_GOOD => Verdict::Done(Ok(outcome.buffer)),
            STATUS_BUSY | STATUS_TASK_SET_FULL if in_budget => Verdict::Retry {
                lost: false,
                was_busy: true,
            },
            STATUS_CHECK_CONDITION
                if attempt.attentions < UNIT_ATTENTION_RETRIES
                    && datapath::scsi::is_unit_attention(
                        STATUS_CHECK_CONDITION,
                        outcome.sense.as_deref(),
                    ) =>
            {
                attempt.attentions += 1;
                Verdict::Retry {
                    lost: false,
                    was_busy: false,
                }
            }
            status => {
                let sense = outcome.sense.as_deref().and_then(|s| Sense::decode(s).ok());
                Verdict::Done(Err(io::Error::other(format!(
                    "{} answered {}",
                    far.url,
                    describe(status, sense.as_ref())
                ))))
            }
        },
        Err(error) if lost(&error) && in_budget => Verdict::Retry {
            lost: true,
            was_busy: false,
        },
        Err(error) => Verdict::Done(Err(io::Error::other(format!("{}: {error}", far.url)))),
    }
}

/// Whether the error means the session is gone (log in again), not that the command failed.
fn lost(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::Transport { .. }
            | ClientError::Connect { .. }
            | ClientError::Session { .. }
            | ClientError::Pdu { .. }
            | ClientError::Closed(_)
            | ClientError::Command(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{start, RunningTarget, TargetConfig, TargetNodeConfig};

    const IQN: &str = "iqn.2026-12.test:far-queue";

    /// An embedded target with a RAM LUN 0 of 16 MiB, as the far array.
    fn far_target() -> RunningTarget {
        let node = TargetNodeConfig::new(IQN, vec![(0, "ram:16M".into())]);
        start(TargetConfig::new("127.0.0.1:0".parse().unwrap(), node)).expect("far target")
    }

    fn far(target: &RunningTarget) -> Far {
        let mut config = ClientConfig::new(target.addrs()[0], Some(IQN.into()));
        config.queue_depth = SESSION_DEPTH;
        Far {
            url: format!("iscsi://{}/{IQN}/0", target.addrs()[0]),
            config,
            lun: 0,
            reconnect_budget: Duration::from_secs(5),
        }
    }

    /// Runs `jobs` on one session thread, queued before it starts, and returns its tally
    /// and the outcomes in job order.
    fn run_queued(far: Far, jobs: Vec<(Cdb, Vec<u8>)>) -> (SessionTally, Vec<io::Result<Vec<u8>>>) {
        let (sender, queue) = crossbeam_channel::bounded(jobs.len());
        let mut answers = Vec::new();
        for (cdb, buffer) in jobs {
            let (reply, answer) = crossbeam_channel::bounded(1);
            sender
                .send(Job {
                    cdb,
                    buffer,
                    reply: Reply::Wait(reply),
                    load: LoadTicket(std::sync::Arc::new(1.into())),
                })
                .unwrap();
            answers.push(answer);
        }
        drop(sender);
        let tally = std::thread::spawn(move || session_thread(&far, &queue))
            .join()
            .unwrap();
        let outcomes = answers
            .into_iter()
            .map(|a| a.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        (tally, outcomes)
    }

    #[test]
    fn one_session_keeps_many_commands_in_flight_and_each_lands_where_it_was_sent() {
        let target = far_target();
        // 4 KiB writes, each its own pattern (every 16th with FUA); the first ones also
        // meet the new nexus's unit attention and are sent again.
        let writes: Vec<(Cdb, Vec<u8>)> = (0..96u64)
            .map(|n| {
                (
                    Cdb::write(n * 8, 8, 512, n % 16 == 0).unwrap(),
                    vec![(n % 251) as u8 + 1; 4096],
                )
            })
            .collect();
        let (tally, outcomes) = run_queued(far(&target), writes);
        assert!(outcomes.iter().all(|o| o.is_ok()), "{outcomes:?}");
        assert_eq!(tally.logins, 1);
        assert!(
            tally.in_flight_most >= SESSION_DEPTH / 2,
            "one session kept {} commands in flight at most",
            tally.in_flight_most
        );
        let reads: Vec<(Cdb, Vec<u8>)> = (0..96u64)
            .map(|n| (Cdb::read(n * 8, 8, 512, false).unwrap(), vec![0; 4096]))
            .collect();
        let (_, outcomes) = run_queued(far(&target), reads);
        for (n, outcome) in outcomes.into_iter().enumerate() {
            let data = outcome.expect("read");
            assert!(
                data.iter().all(|&b| b == (n % 251) as u8 + 1),
                "block run {n} reads back what was written to it"
            );
        }
    }

    #[test]
    fn a_far_side_that_is_gone_fails_each_command_within_its_budget() {
        let target = far_target();
        let mut gone = far(&target);
        drop(target);
        gone.reconnect_budget = Duration::from_millis(300);
        gone.config.connect_timeout = Duration::from_millis(200);
        let started = Instant::now();
        let jobs = (0..4u64)
            .map(|n| (Cdb::read(n, 1, 512, false).unwrap(), vec![0; 512]))
            .collect();
        let (tally, outcomes) = run_queued(gone, jobs);
        assert_eq!(tally.logins, 0);
        for outcome in outcomes {
            let error = outcome.expect_err("no far side").to_string();
            assert!(error.contains("logging in again"), "{error}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
    }
}
