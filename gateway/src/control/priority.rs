//! The scheduling priority of the control plane's threads (`--control-priority`).
//!
//! On an array the event loops' I/O comes first: a storm of binds and unbinds should
//! only use the CPU the loops leave. Every control call runs on its client's thread (the
//! RPC itself, the group commit's journal sync and publication when it leads, the
//! snapshot of the targets), so lowering those is enough; the event loops and the
//! blocking pool keep theirs. With a lowered class each client gets two threads
//! (`super::socket`): a reader at the normal priority, which only reads requests and
//! writes answers, and a worker in the lowered class, which runs the calls. The threads a
//! lowered thread starts inherit its class (clone(2) copies the policy and the nice
//! value).
//!
//! Classes (sched(7)): `normal` leaves them as they are; `nice:N` (1 to 19) lowers their
//! weight; `batch` (SCHED_BATCH, optionally `batch:N` with a nice value) also keeps them
//! from preempting a running loop when they wake; `idle` (SCHED_IDLE) runs them only on
//! CPU time nothing else wants, and a loop that wakes always preempts them. A new
//! configuration reaches the loops through a channel and an atomic epoch. Locks a loop
//! shares with these threads: the applied epochs' condition variable (held by a control
//! thread only to read the epochs, never while it works) and, when an unbind flushes a
//! pool, each of the pool's stripe locks in turn (a loop reading that stripe waits for a
//! preempted holder until it runs again: the price of a lowered class, paid once per
//! unbind call and pool, for the time one stripe's dirty keys take to drain).
//!
//! A lowered class must not starve a call: SCHED_IDLE gets almost nothing while other
//! threads keep every CPU busy (a bind of 200 volumes waited 19.5 s behind 4 busy
//! threads, until they stopped). So the reader watches its call: one not answered within
//! `socket::RESCUE_AFTER` is taken over by the reader if the worker has not started it,
//! or its worker is raised to the reader's class until it is answered, then lowered again
//! (raising needs CAP_SYS_NICE: [`can_raise_from`] tries it at start, and without it the
//! gateway says so and only takes over calls not started).
//!
//! The class is a trade: measured with the reads saturating both CPUs of the benchmark's
//! VM, `idle` kept the reads' p99 in the range of their quiet figure in some sittings and
//! did no better than `normal` in others (ARCHITECTURE.md, "Storms of binds beside the
//! I/O"), so the default stays `normal`. Whatever the class, a control call gives the
//! CPU back every `pace::SLICE` it runs (`super::pace`): a saturated loop never sleeps, so no
//! class but `idle` kept a batch from running its few hundred microseconds in one slice
//! of that loop's CPU (`batch` measured no better than `normal` without it).
//!
//! A thread started by a lowered thread inherits its class, and an unprivileged process
//! cannot raise it again. So the calls that may start threads that serve I/O (a LUN on
//! another array opens its sessions' threads, a migration its copy and mirror threads:
//! `target_create`, `lun_attach`, `migrate_*`) are handed to one thread kept at the
//! normal priority ([`NormalLane`]), and only the others run on the lowered workers.

use std::str::FromStr;
use std::sync::mpsc;

use serde_json::Value;

use super::rpc::{Call, RpcError};
use super::Control;

/// How the control plane's threads are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ControlPriority {
    /// As the process was started.
    #[default]
    Normal,
    /// SCHED_OTHER with this nice value (1 to 19).
    Nice(i32),
    /// SCHED_BATCH with this nice value (0 to 19).
    Batch(i32),
    /// SCHED_IDLE.
    Idle,
}

/// Why a `--control-priority` value was refused.
#[derive(Debug, thiserror::Error)]
#[error("control priority {given:?}: {reason} (normal, nice:1..19, batch, batch:0..19 or idle)")]
pub struct PriorityParseError {
    given: String,
    reason: &'static str,
}

impl FromStr for ControlPriority {
    type Err = PriorityParseError;

    fn from_str(text: &str) -> Result<ControlPriority, PriorityParseError> {
        let refuse = |reason| PriorityParseError {
            given: text.to_string(),
            reason,
        };
        let (class, nice) = match text.split_once(':') {
            Some((class, nice)) => (
                class,
                Some(
                    nice.parse::<i32>()
                        .map_err(|_| refuse("the nice value is not a number"))?,
                ),
            ),
            None => (text, None),
        };
        match (class, nice) {
            ("normal", None) => Ok(ControlPriority::Normal),
            ("idle", None) => Ok(ControlPriority::Idle),
            ("nice", Some(n)) if (1..=19).contains(&n) => Ok(ControlPriority::Nice(n)),
            ("nice", Some(_)) => Err(refuse("a nice value lowers priority from 1 to 19")),
            ("nice", None) => Err(refuse("give the nice value, as nice:10")),
            ("batch", None) => Ok(ControlPriority::Batch(0)),
            ("batch", Some(n)) if (0..=19).contains(&n) => Ok(ControlPriority::Batch(n)),
            ("batch", Some(_)) => Err(refuse("a nice value lowers priority from 0 to 19")),
            ("normal" | "idle", Some(_)) => Err(refuse("this class takes no nice value")),
            _ => Err(refuse("unknown class")),
        }
    }
}

impl std::fmt::Display for ControlPriority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlPriority::Normal => write!(f, "normal"),
            ControlPriority::Nice(n) => write!(f, "nice:{n}"),
            ControlPriority::Batch(n) => write!(f, "batch:{n}"),
            ControlPriority::Idle => write!(f, "idle"),
        }
    }
}

impl ControlPriority {
    /// Puts the calling thread (only it: Linux schedules threads one by one) in this class;
    /// `normal` leaves it as it is.
    pub fn apply_to_current_thread(self) -> std::io::Result<()> {
        self.apply_to(current_tid())
    }

    /// Puts thread `tid` of this process in this class (a rescued worker goes back to it:
    /// lowering needs no privilege); `normal` leaves it as it is.
    pub(super) fn apply_to(self, tid: libc::pid_t) -> std::io::Result<()> {
        match self.class() {
            Some(class) => class.set(tid),
            None => Ok(()),
        }
    }

    fn class(self) -> Option<ThreadClass> {
        Some(match self {
            ControlPriority::Normal => return None,
            ControlPriority::Nice(n) => ThreadClass {
                policy: libc::SCHED_OTHER,
                nice: Some(n),
            },
            ControlPriority::Batch(n) => ThreadClass {
                policy: libc::SCHED_BATCH,
                nice: Some(n),
            },
            // SCHED_IDLE ignores the nice value: it is left as it is.
            ControlPriority::Idle => ThreadClass {
                policy: libc::SCHED_IDLE,
                nice: None,
            },
        })
    }
}

/// A thread's scheduling policy and nice value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ThreadClass {
    policy: i32,
    /// `None`: left as it is.
    nice: Option<i32>,
}

impl ThreadClass {
    /// The calling thread's.
    pub fn of_current() -> std::io::Result<ThreadClass> {
        // SAFETY: pid 0 is the calling thread.
        let policy = unsafe { libc::sched_getscheduler(0) };
        if policy < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // getpriority may return -1 as a value: errno tells an error apart.
        // SAFETY: errno is this thread's; getpriority on our own thread id.
        let nice = unsafe {
            *libc::__errno_location() = 0;
            libc::getpriority(libc::PRIO_PROCESS, current_tid() as libc::id_t)
        };
        let errno = std::io::Error::last_os_error();
        if nice == -1 && errno.raw_os_error() != Some(0) {
            return Err(errno);
        }
        Ok(ThreadClass {
            policy,
            nice: Some(nice),
        })
    }

    /// Puts thread `tid` of this process in this class. Lowering is always allowed;
    /// raising (a lower nice value, or out of SCHED_IDLE) needs CAP_SYS_NICE.
    pub fn set(self, tid: libc::pid_t) -> std::io::Result<()> {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `tid` names a thread (or none: ESRCH); `param` is a valid sched_param.
        if unsafe { libc::sched_setscheduler(tid, self.policy, &param) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let Some(nice) = self.nice else {
            return Ok(());
        };
        // SAFETY: setpriority on a thread id (PRIO_PROCESS with a tid sets that thread's
        // nice value on Linux).
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The calling thread's id.
pub(super) fn current_tid() -> libc::pid_t {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// Whether a thread lowered to `priority` can be raised back to the calling thread's class
/// (CAP_SYS_NICE, or an RLIMIT_NICE that allows it): tried on a thread of its own, which
/// starts in the caller's class.
pub(super) fn can_raise_from(priority: ControlPriority) -> bool {
    std::thread::spawn(move || {
        let Ok(started) = ThreadClass::of_current() else {
            return false;
        };
        priority.apply_to_current_thread().is_ok() && started.set(current_tid()).is_ok()
    })
    .join()
    .unwrap_or(false)
}

/// Whether `call` may start threads that serve I/O, which must not inherit a lowered
/// class (see the module doc).
pub(super) fn starts_io_threads(call: &Call) -> bool {
    matches!(
        call,
        Call::TargetCreate(_) | Call::LunAttach(_) | Call::Migration { .. }
    )
}

type Job = (Call, mpsc::Sender<Result<Value, RpcError>>);

/// A thread at the normal priority that runs the calls [`starts_io_threads`] names for
/// control threads running lowered, one at a time (they are rare).
#[derive(Clone)]
pub(super) struct NormalLane {
    jobs: mpsc::Sender<Job>,
}

impl NormalLane {
    /// Starts the lane's thread; call it from a thread at the normal priority.
    pub fn start(control: std::sync::Arc<Control>) -> std::io::Result<NormalLane> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("iscsi-control-io".into())
            .spawn(move || {
                for (call, answer) in queue {
                    let _ = answer.send(control.handle(call));
                }
            })?;
        Ok(NormalLane { jobs })
    }

    /// Runs `call` on the lane's thread and returns its outcome.
    pub fn handle(&self, call: Call) -> Result<Value, RpcError> {
        let (answer, outcome) = mpsc::channel();
        let gone = || {
            RpcError::new(
                super::rpc::ErrorCode::Internal,
                "the control thread for calls that start I/O threads is gone",
            )
        };
        self.jobs.send((call, answer)).map_err(|_| gone())?;
        outcome.recv().map_err(|_| gone())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_parse_and_bad_values_are_named() {
        assert_eq!(
            "normal".parse::<ControlPriority>().unwrap(),
            ControlPriority::Normal
        );
        assert_eq!(
            "idle".parse::<ControlPriority>().unwrap(),
            ControlPriority::Idle
        );
        assert_eq!(
            "nice:10".parse::<ControlPriority>().unwrap(),
            ControlPriority::Nice(10)
        );
        assert_eq!(
            "batch".parse::<ControlPriority>().unwrap(),
            ControlPriority::Batch(0)
        );
        assert_eq!(
            "batch:19".parse::<ControlPriority>().unwrap(),
            ControlPriority::Batch(19)
        );
        for (bad, why) in [
            ("nice:0", "from 1 to 19"),
            ("nice:-5", "from 1 to 19"),
            ("nice", "give the nice value"),
            ("batch:20", "from 0 to 19"),
            ("idle:3", "no nice value"),
            ("fast", "unknown class"),
            ("nice:x", "not a number"),
        ] {
            let error = bad.parse::<ControlPriority>().unwrap_err().to_string();
            assert!(error.contains(why) && error.contains(bad), "{bad}: {error}");
        }
        for text in ["normal", "nice:7", "batch:3", "idle"] {
            let parsed: ControlPriority = text.parse().unwrap();
            assert_eq!(
                parsed.to_string().parse::<ControlPriority>().unwrap(),
                parsed
            );
        }
    }

    /// A thread put in a class runs in it, and threads it starts inherit it.
    #[test]
    fn a_thread_takes_the_class_and_passes_it_on() {
        let observed = std::thread::spawn(|| {
            ControlPriority::Batch(7).apply_to_current_thread().unwrap();
            let here = current();
            let child = std::thread::spawn(current).join().unwrap();
            (here, child)
        })
        .join()
        .unwrap();
        assert_eq!(observed.0, (libc::SCHED_BATCH, 7));
        assert_eq!(observed.1, (libc::SCHED_BATCH, 7));
        let idle = std::thread::spawn(|| {
            ControlPriority::Idle.apply_to_current_thread().unwrap();
            current().0
        })
        .join()
        .unwrap();
        assert_eq!(idle, libc::SCHED_IDLE);
    }

    /// The calling thread's policy and nice value.
    fn current() -> (i32, i32) {
        // SAFETY: as in `apply_to_current_thread`.
        unsafe {
            let tid = libc::gettid();
            (
                libc::sched_getscheduler(0),
                libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t),
            )
        }
    }
}
