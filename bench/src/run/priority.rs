//! fio's `nice`, `prio` and `prioclass` (backend.c, `thread_main`): the job thread's CPU
//! nice value and I/O priority, set on the thread itself before its first I/O.
//!
//! On Linux both `setpriority(PRIO_PROCESS, 0, ..)` and `ioprio_set(IOPRIO_WHO_PROCESS, 0,
//! ..)` act on the calling thread alone, so each job thread gets its own, as fio's threads
//! (`thread`) do. `nice` adds to the thread's nice value, as fio's `nice(3)` call does.
//! The I/O priority is the block layer's: the io_uring engine's requests carry it to the
//! device; the iSCSI engine's PDUs are socket writes, which no I/O scheduler sees, so the
//! target never learns of it (fio with libiscsi likewise only sets it on its process).

/// `ioprio_set`'s "who" kind for a thread or process (linux/ioprio.h).
const IOPRIO_WHO_PROCESS: libc::c_int = 1;
/// Where the class sits in an I/O priority value (linux/ioprio.h).
const IOPRIO_CLASS_SHIFT: u32 = 13;
/// Where the hint sits in an I/O priority value (linux/ioprio.h, IOPRIO_HINT_SHIFT).
const IOPRIO_HINT_SHIFT: u32 = 3;
/// The best-effort class, which fio uses when only `prio` is given.
const IOPRIO_CLASS_BE: u32 = 2;

/// What the job thread's priority becomes; the default changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ThreadPriority {
    /// Added to the nice value (-20..19; 0: left alone).
    pub nice: i32,
    /// `prioclass` and `prio`, where either is given: class 0..3 (0: best effort, as fio
    /// reads it), level 0..7.
    pub io: Option<(u32, u32)>,
    /// `priohint` (0..1023; 0: none), set with the class and level.
    pub hint: u32,
}

impl ThreadPriority {
    /// fio's options as the job spec carries them.
    pub fn from_options(nice: i32, prioclass: Option<u32>, prio: Option<u32>) -> Self {
        let io = (prioclass.is_some() || prio.is_some())
            .then(|| (prioclass.unwrap_or(0), prio.unwrap_or(0)));
        ThreadPriority { nice, io, hint: 0 }
    }

    /// fio's `priohint`: as fio (backend.c), a hint alone sets the I/O priority too
    /// (best effort, level 0, with the hint).
    pub fn with_hint(self, priohint: Option<u32>) -> Self {
        match priohint {
            Some(hint) => ThreadPriority {
                io: Some(self.io.unwrap_or((0, 0))),
                hint,
                ..self
            },
            None => self,
        }
    }

    /// The I/O priority value `ioprio_set` takes (class 0 means best effort, as in fio).
    pub fn ioprio_value(class: u32, level: u32) -> u32 {
        let class = if class == 0 { IOPRIO_CLASS_BE } else { class };
        (class << IOPRIO_CLASS_SHIFT) | level
    }

    /// Sets them on the calling thread; the error names the option and the system's
    /// reason (a negative nice or the realtime class need CAP_SYS_NICE or CAP_SYS_ADMIN).
    pub fn apply(&self) -> Result<(), String> {
        if self.nice != 0 {
            // SAFETY: getpriority/setpriority on the calling thread (who 0) take and
            // return plain integers. errno is cleared first: -1 is a valid nice value.
            let result = unsafe {
                *libc::__errno_location() = 0;
                let current = libc::getpriority(libc::PRIO_PROCESS, 0);
                let read_failed = current == -1 && *libc::__errno_location() != 0;
                if read_failed {
                    -1
                } else {
                    let wanted = (current + self.nice).clamp(-20, 19);
                    libc::setpriority(libc::PRIO_PROCESS, 0, wanted)
                }
            };
            if result != 0 {
                return Err(format!(
                    "nice={}: {}",
                    self.nice,
                    std::io::Error::last_os_error()
                ));
            }
        }
        if let Some((class, level)) = self.io {
            let value = Self::ioprio_value(class, level) | (self.hint << IOPRIO_HINT_SHIFT);
            // SAFETY: the ioprio_set system call takes three integers.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_ioprio_set,
                    IOPRIO_WHO_PROCESS,
                    0,
                    value as libc::c_int,
                )
            };
            if rc != 0 {
                let hint = match self.hint {
                    0 => String::new(),
                    hint => format!(", priohint={hint}"),
                };
                return Err(format!(
                    "prioclass={class}, prio={level}{hint} (ioprio_set): {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_zero_is_best_effort_as_in_fio() {
        assert_eq!(ThreadPriority::ioprio_value(0, 4), (2 << 13) | 4);
        assert_eq!(ThreadPriority::ioprio_value(3, 0), 3 << 13);
        assert_eq!(ThreadPriority::from_options(0, None, None).io, None);
        assert_eq!(
            ThreadPriority::from_options(0, None, Some(5)).io,
            Some((0, 5))
        );
        assert_eq!(
            ThreadPriority::from_options(0, Some(1), None).io,
            Some((1, 0))
        );
    }

    #[test]
    fn a_hint_goes_with_the_class_and_level_and_alone_sets_best_effort() {
        let alone = ThreadPriority::default().with_hint(Some(3));
        assert_eq!((alone.io, alone.hint), (Some((0, 0)), 3));
        let with = ThreadPriority::from_options(0, Some(1), Some(2)).with_hint(Some(7));
        assert_eq!((with.io, with.hint), (Some((1, 2)), 7));
        assert_eq!(
            ThreadPriority::default().with_hint(None),
            ThreadPriority::default()
        );
        let seen = std::thread::spawn(move || {
            // A kernel before 6.5 knows no hints and refuses them (EINVAL), as with fio.
            alone.apply().map(|()| {
                // SAFETY: reads the calling thread's I/O priority.
                unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0) }
            })
        })
        .join()
        .unwrap();
        match seen {
            Ok(seen) => assert_eq!(seen, (2 << 13) | (3 << 3), "best effort, level 0, hint 3"),
            Err(e) => assert!(e.contains("priohint=3"), "{e}"),
        }
    }

    #[test]
    fn applies_to_the_calling_thread_only() {
        let seen = std::thread::spawn(|| {
            ThreadPriority {
                nice: 3,
                io: Some((3, 0)),
                hint: 0,
            }
            .apply()
            .unwrap();
            // SAFETY: reads the calling thread's priorities.
            unsafe {
                (
                    libc::getpriority(libc::PRIO_PROCESS, 0),
                    libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0),
                )
            }
        })
        .join()
        .unwrap();
        // SAFETY: as above, on this thread, which was left alone.
        let own = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        assert_eq!(seen.0, (own + 3).min(19));
        assert_eq!(seen.1, 3 << 13);
    }
}
