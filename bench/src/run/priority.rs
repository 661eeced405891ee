//! fio's `nice`, `prio` and `prioclass` (backend.c, `thread_main`): the job thread's CPU
//! nice value and I/O priority, set on the thread itself before its first I/O.
//!
//! On Linux both `setpriority(PRIO_PROCESS, 0, ..)` and `ioprio_set(IOPRIO_WHO_PROCESS, 0,
//! ..)` act on the calling thread alone, so each job thread gets its own, as fio's threads
//! (`thread`) do. `nice` adds to the thread's nice value, as fio's `nice(3)` call does.
//! The I/O priority is the block layer's: the io_uring engine's requests carry it to the
//! device; the iSCSI engine's PDUs are socket writes, which no I/O scheduler sees, so the
//! target never learns of it (fio with libiscsi likewise only sets it on its process).
//!
//! fio's io_uring engine also writes the priority into each read's and write's submission
//! entry (a `sqthread_poll` thread does not inherit the job thread's), and its `cmdprio`
//! options (engines/cmdprio.c) give a share of the reads and writes another priority
//! there: [`CmdPrioOptions`] and [`CmdPrio`], the values made by
//! [`ThreadPriority::ioprio_value_hinted`] as the thread's are.

use crate::io::{Direction, PerDir};

/// `ioprio_set`'s "who" kind for a thread or process (linux/ioprio.h).
const IOPRIO_WHO_PROCESS: libc::c_int = 1;
/// Where the class sits in an I/O priority value (linux/ioprio.h).
const IOPRIO_CLASS_SHIFT: u32 = 13;
/// Where the hint sits in an I/O priority value (linux/ioprio.h, IOPRIO_HINT_SHIFT).
const IOPRIO_HINT_SHIFT: u32 = 3;
/// The best-effort class, which fio uses when only `prio` is given.
const IOPRIO_CLASS_BE: u32 = 2;
/// The realtime class, which `cmdprio` uses when `cmdprio_class` is not given.
const IOPRIO_CLASS_RT: u32 = 1;

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
        Self::ioprio_value_hinted(class, level, 0)
    }

    /// As [`Self::ioprio_value`], with a priority hint (fio's `priohint`, `cmdprio_hint`).
    pub fn ioprio_value_hinted(class: u32, level: u32, hint: u32) -> u32 {
        let class = if class == 0 { IOPRIO_CLASS_BE } else { class };
        (class << IOPRIO_CLASS_SHIFT) | (hint << IOPRIO_HINT_SHIFT) | level
    }

    /// The value fio's io_uring engine writes into each read's and write's entry: the
    /// thread's I/O priority (its hint included) where `prio`, `prioclass` or `priohint`
    /// is given, else 0 (none).
    pub fn sqe_ioprio(&self) -> u16 {
        self.io.map_or(0, |(class, level)| {
            Self::ioprio_value_hinted(class, level, self.hint) as u16
        })
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
            let value = Self::ioprio_value_hinted(class, level, self.hint);
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

/// One entry of fio's `cmdprio_bssplit`: `bs/perc[/class/level[/hint]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BsPrio {
    /// The I/O length in bytes the entry is for.
    pub bs: u64,
    /// Share (0..=100) of the I/Os of that length that take the priority.
    pub percentage: u32,
    /// `(class, level, hint)` of the entry; `None`: `cmdprio_class`/`cmdprio`/`cmdprio_hint`.
    pub priority: Option<(u32, u32, u32)>,
}

/// fio's `cmdprio_percentage`, `cmdprio_class`, `cmdprio`, `cmdprio_hint` and
/// `cmdprio_bssplit` (each `read[,write]`; the trim slot is read and unused, as fio ignores
/// trims here).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CmdPrioOptions {
    /// Share of the direction's I/Os (0..=100) issued with the priority below.
    pub percentage: PerDir<u32>,
    /// 1 realtime, 2 best effort, 3 idle; 0 (not given) is realtime, as in fio.
    pub class: PerDir<u32>,
    /// Level 0..=7.
    pub level: PerDir<u32>,
    /// Hint 0..=1023.
    pub hint: PerDir<u32>,
    /// `cmdprio_bssplit`, per direction, in the order given (`None`: not given).
    pub bssplit: Option<PerDir<Vec<BsPrio>>>,
}

impl CmdPrioOptions {
    /// Whether any read or write takes a command priority.
    pub fn is_active(&self) -> bool {
        self.percentage.read > 0 || self.percentage.write > 0 || self.bssplit.is_some()
    }

    /// fio's check at the engine's start: the two ways of choosing exclude each other.
    pub fn conflict(&self) -> Option<&'static str> {
        (self.bssplit.is_some() && (self.percentage.read > 0 || self.percentage.write > 0))
            .then_some("cmdprio_percentage and cmdprio_bssplit options are mutually exclusive")
    }

    /// The I/O priority value a chosen I/O of `direction` carries.
    pub fn value(&self, direction: Direction) -> u16 {
        let class = match *self.class.get(direction) {
            0 => IOPRIO_CLASS_RT,
            class => class,
        };
        ThreadPriority::ioprio_value_hinted(
            class,
            *self.level.get(direction),
            *self.hint.get(direction),
        ) as u16
    }
}

/// The I/Os one entry of [`CmdPrio`] is for: one I/O length (`None`: every length), and
/// its shares as `(cumulative percentage, priority value)`.
type Shares = (Option<u64>, Vec<(u32, u16)>);

/// Which reads and writes take the command priority: each one with its direction's
/// percentage (or, with `cmdprio_bssplit`, its length's entries), drawn from a generator
/// seeded by the job (fio's `prio_state`).

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdPrio {
    /// Per direction (read, write): `(bs, [(cumulative percentage, value)])`; `bs` `None`
    /// for `cmdprio_percentage`, which takes every length.
    choices: [Vec<Shares>; 2],
    state: u64,
}

impl CmdPrio {
    /// `None` when no direction takes a command priority.
    pub fn new(options: &CmdPrioOptions, seed: u64) -> Option<CmdPrio> {
        if !options.is_active() {
            return None;
        }
        let per_direction = |direction: Direction| {
            let implicit = options.value(direction);
            let Some(split) = &options.bssplit else {
                let percentage = *options.percentage.get(direction);
                return if percentage == 0 {
                    Vec::new()
                } else {
                    vec![(None, vec![(percentage, implicit)])]
                };
            };
            // Grouped by length (fio sorts them); zero shares are left out, as in fio.
            let mut groups: Vec<Shares> = Vec::new();
            for entry in split.get(direction).iter().filter(|e| e.percentage > 0) {
                let value = entry.priority.map_or(implicit, |(class, level, hint)| {
                    ThreadPriority::ioprio_value_hinted(class, level, hint) as u16
                });
                match groups.iter_mut().find(|(bs, _)| *bs == Some(entry.bs)) {
                    Some((_, shares)) => {
                        let total = shares.last().map_or(0, |(total, _)| *total);
                        shares.push((total + entry.percentage, value));
                    }
                    None => groups.push((Some(entry.bs), vec![(entry.percentage, value)])),
                }
            }
            groups
        };
        Some(CmdPrio {
            choices: [
                per_direction(Direction::Read),
                per_direction(Direction::Write),
            ],
            state: seed,
        })
    }

    /// The priority of the next I/O of `direction` and `len` bytes, or `None` for the
    /// default one.
    pub fn pick(&mut self, direction: Direction, len: u64) -> Option<u16> {
        let index = match direction {
            Direction::Read => 0,
            Direction::Write => 1,
            Direction::Trim => return None,
        };
        let shares = &self.choices[index]
            .iter()
            .find(|(bs, _)| bs.is_none_or(|bs| bs == len))?
            .1;
        // SplitMix64: one draw in 0..100 per I/O that has a share.
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let draw = (z % 100) as u32;
        shares
            .iter()
            .find(|(total, _)| draw < *total)
            .map(|(_, value)| *value)
    }
}

/// fio's `cmdprio_bssplit` value: `read[,write]` lists of `bs/perc[/class/level[/hint]]`
/// entries joined by `:` (one list without a comma is both directions'). Out-of-range
/// class, level and hint are clamped and a percentage above 100 is 100, as fio does; the
/// entries of one length adding up to more than 100 are an error, as in fio.
pub fn parse_cmdprio_bssplit(
    text: &str,
    mut parse_bs: impl FnMut(&str) -> Result<u64, String>,
) -> Result<PerDir<Vec<BsPrio>>, String> {
    let mut parse_list = |list: &str| -> Result<Vec<BsPrio>, String> {
        let mut entries = Vec::new();
        for entry in list.trim().split(':') {
            if entry.is_empty() {
                break;
            }
            let mut fields = entry.split('/');
            let bs = parse_bs(fields.next().unwrap_or("").trim())?;
            let numbers = fields
                .filter(|f| !f.is_empty())
                .map(|f| f.trim().parse::<u32>())
                .collect::<Result<Vec<u32>, _>>()
                .map_err(|_| format!("invalid cmdprio_bssplit entry \"{entry}\""))?;
            let priority = match numbers[..] {
                [] | [_] => None,
                [_, class, level] => Some((class.min(3), level.min(7), 0)),
                [_, class, level, hint] => Some((class.min(3), level.min(7), hint.min(1023))),
                _ => return Err(format!("invalid cmdprio_bssplit entry \"{entry}\"")),
            };
            let percentage = numbers.first().copied().unwrap_or(0).min(100);
            entries.push(BsPrio {
                bs,
                percentage,
                priority,
            });
        }
        let mut lengths: Vec<u64> = entries.iter().map(|e| e.bs).collect();
        lengths.dedup();
        for bs in lengths {
            let total: u32 = entries
                .iter()
                .filter(|e| e.bs == bs)
                .map(|e| e.percentage)
                .sum();
            if total > 100 {
                return Err(format!(
                    "cmdprio_bssplit total percentage for bs: {bs} exceeds 100"
                ));
            }
        }
        Ok(entries)
    };
    let lists: Vec<&str> = text.split(',').collect();
    let read = parse_list(lists[0])?;
    let write = match lists.get(1) {
        Some(list) => parse_list(list)?,
        None => read.clone(),
    };
    Ok(PerDir {
        read,
        write,
        trim: Vec::new(),
    })
}

/// [`parse_cmdprio_bssplit`]'s form of `split` again.
pub fn render_cmdprio_bssplit(split: &PerDir<Vec<BsPrio>>) -> String {
    let list = |entries: &[BsPrio]| {
        entries
            .iter()
            .map(|e| match e.priority {
                None => format!("{}/{}", e.bs, e.percentage),
                Some((class, level, hint)) => {
                    format!("{}/{}/{class}/{level}/{hint}", e.bs, e.percentage)
                }
            })
            .collect::<Vec<_>>()
            .join(":")
    };
    format!("{},{}", list(&split.read), list(&split.write))
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
    fn cmdprio_defaults_to_realtime_and_takes_its_share() {
        let mut options = CmdPrioOptions::default();
        assert!(CmdPrio::new(&options, 1).is_none());
        options.percentage = PerDir {
            read: 30,
            write: 0,
            trim: 0,
        };
        options.hint.read = 2;
        options.level.read = 7;
        assert_eq!(options.value(Direction::Read), (1 << 13) | (2 << 3) | 7);
        options.class.read = 3;
        assert_eq!(options.value(Direction::Read), (3 << 13) | (2 << 3) | 7);
        let mut pick = CmdPrio::new(&options, 7).unwrap();
        let chosen = (0..10_000)
            .filter(|_| pick.pick(Direction::Read, 4096).is_some())
            .count();
        assert!((2_700..3_300).contains(&chosen), "{chosen} of 10000");
        assert!((0..100).all(|_| pick.pick(Direction::Write, 4096).is_none()));
        assert!(pick.pick(Direction::Trim, 4096).is_none());
        assert_eq!(ThreadPriority::default().sqe_ioprio(), 0);
        let thread = ThreadPriority::from_options(0, Some(3), Some(1));
        assert_eq!(thread.sqe_ioprio(), (3 << 13) | 1);
    }

    #[test]
    fn cmdprio_bssplit_reads_fios_three_forms_and_picks_by_length() {
        let bs = |text: &str| match text {
            "4k" => Ok(4096),
            "64k" => Ok(65536),
            other => other.parse().map_err(|_| format!("bad size {other}")),
        };
        let split = parse_cmdprio_bssplit("4k/50:64k/100/3/7/9,64k/20/2/1", bs).unwrap();
        assert_eq!(
            split.read,
            vec![
                BsPrio {
                    bs: 4096,
                    percentage: 50,
                    priority: None
                },
                BsPrio {
                    bs: 65536,
                    percentage: 100,
                    priority: Some((3, 7, 9))
                },
            ]
        );
        assert_eq!(split.write[0].priority, Some((2, 1, 0)));
        let both = parse_cmdprio_bssplit("4k/10", bs).unwrap();
        assert_eq!(both.read, both.write);
        // Clamped as fio clamps; a length's shares above 100 and a bad form are errors.
        let clamped = parse_cmdprio_bssplit("4k/150/9/9/5000", bs).unwrap();
        assert_eq!(clamped.read[0].percentage, 100);
        assert_eq!(clamped.read[0].priority, Some((3, 7, 1023)));
        assert!(parse_cmdprio_bssplit("4k/60:4k/50", bs).is_err());
        assert!(parse_cmdprio_bssplit("4k/50/2", bs).is_err());
        assert!(parse_cmdprio_bssplit("4k/x", bs).is_err());
        let again = render_cmdprio_bssplit(&split);
        assert_eq!(parse_cmdprio_bssplit(&again, bs).unwrap(), split);

        let options = CmdPrioOptions {
            bssplit: Some(split),
            ..Default::default()
        };
        assert!(options.conflict().is_none());
        let mut pick = CmdPrio::new(&options, 3).unwrap();
        // 64 KiB reads: all of them, with their own priority; other lengths: none.
        assert!(
            (0..100).all(|_| pick.pick(Direction::Read, 65536) == Some((3 << 13) | (9 << 3) | 7))
        );
        assert!((0..100).all(|_| pick.pick(Direction::Read, 8192).is_none()));
        // 4 KiB reads: half, with cmdprio_class's default (realtime).
        let chosen: Vec<_> = (0..10_000)
            .filter_map(|_| pick.pick(Direction::Read, 4096))
            .collect();
        assert!((4_500..5_500).contains(&chosen.len()), "{}", chosen.len());
        assert!(chosen.iter().all(|&value| value == 1 << 13));
        let both = CmdPrioOptions {
            percentage: PerDir::splat(10),
            ..options
        };
        assert!(both.conflict().is_some());
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
