//! CPU time, context switches and page faults from `getrusage(2)`: per thread
//! (`RUSAGE_THREAD`, fio's per-job `usr_cpu`/`sys_cpu`/`ctx`/`majf`/`minf`) and for the
//! whole process (`RUSAGE_SELF`, the tool's own CPU per I/O).

/// A reading of `getrusage`, or the difference of two.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceUsage {
    pub user_ns: u64,
    pub system_ns: u64,
    /// Voluntary plus involuntary context switches.
    pub context_switches: u64,
    pub major_faults: u64,
    pub minor_faults: u64,
}

impl ResourceUsage {
    /// The calling thread's usage so far.
    pub fn thread() -> std::io::Result<ResourceUsage> {
        read(libc::RUSAGE_THREAD)
    }

    /// The whole process's usage so far (all threads, live and ended).
    pub fn process() -> std::io::Result<ResourceUsage> {
        read(libc::RUSAGE_SELF)
    }

    /// What was used between `earlier` and this reading.
    pub fn since(&self, earlier: &ResourceUsage) -> ResourceUsage {
        ResourceUsage {
            user_ns: self.user_ns.saturating_sub(earlier.user_ns),
            system_ns: self.system_ns.saturating_sub(earlier.system_ns),
            context_switches: self
                .context_switches
                .saturating_sub(earlier.context_switches),
            major_faults: self.major_faults.saturating_sub(earlier.major_faults),
            minor_faults: self.minor_faults.saturating_sub(earlier.minor_faults),
        }
    }

    /// Adds another thread's usage (group reporting sums them, as fio does).
    pub fn add(&mut self, other: &ResourceUsage) {
        self.user_ns += other.user_ns;
        self.system_ns += other.system_ns;
        self.context_switches += other.context_switches;
        self.major_faults += other.major_faults;
        self.minor_faults += other.minor_faults;
    }

    /// User plus system time.
    pub fn cpu_ns(&self) -> u64 {
        self.user_ns + self.system_ns
    }
}

fn timeval_ns(tv: &libc::timeval) -> u64 {
    let seconds = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u64::try_from(tv.tv_usec).unwrap_or(0);
    seconds * 1_000_000_000 + micros * 1_000
}

fn read(who: libc::c_int) -> std::io::Result<ResourceUsage> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` points to writable memory the size of a `struct rusage`, which
    // getrusage fills on success; `who` is RUSAGE_THREAD or RUSAGE_SELF.
    let rc = unsafe { libc::getrusage(who, usage.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: getrusage returned 0, so the struct is initialised (it was zeroed before).
    let usage = unsafe { usage.assume_init() };
    let count = |value: libc::c_long| u64::try_from(value).unwrap_or(0);
    Ok(ResourceUsage {
        user_ns: timeval_ns(&usage.ru_utime),
        system_ns: timeval_ns(&usage.ru_stime),
        context_switches: count(usage.ru_nvcsw) + count(usage.ru_nivcsw),
        major_faults: count(usage.ru_majflt),
        minor_faults: count(usage.ru_minflt),
    })
}
