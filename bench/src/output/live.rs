//! The live status line, fio's style (`display_thread_status`):
//! `Jobs: 1 (f=1): [r(1)][45.0%][r=123MiB/s][r=31.5k IOPS][eta 00m:05s]`, redrawn in place
//! with a carriage return. This module formats the line and decides when to print it;
//! the thread that gathers the figures and prints belongs to the runner.
//!
//! When (fio's `--eta`): `auto` prints when stdout is a terminal, `always` prints anyway,
//! `never` never; at most once per status period (1 s), with fio's 5% slack.

use std::time::Duration;

use super::format::{eta_string, num2str, Unit};

/// fio's `--eta` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EtaMode {
    #[default]
    Auto,
    Always,
    Never,
}

impl EtaMode {
    /// Parses fio's values: "auto", "always", "never".
    pub fn parse(text: &str) -> Option<EtaMode> {
        match text {
            "auto" => Some(EtaMode::Auto),
            "always" => Some(EtaMode::Always),
            "never" => Some(EtaMode::Never),
            _ => None,
        }
    }
}

/// Whether stdout is a terminal (the `auto` rule).
pub fn stdout_is_terminal() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stdout())
}

/// Decides when to print the status line.
#[derive(Debug, Clone)]
pub struct StatusPacer {
    enabled: bool,
    interval_ms: u64,
    last_ms: Option<u64>,
}

impl StatusPacer {
    /// fio's default period: one second.
    pub const DEFAULT_INTERVAL_MS: u64 = 1_000;

    pub fn new(mode: EtaMode, stdout_is_terminal: bool) -> StatusPacer {
        StatusPacer::with_interval(mode, stdout_is_terminal, StatusPacer::DEFAULT_INTERVAL_MS)
    }

    /// With fio's `--eta-interval`.
    pub fn with_interval(mode: EtaMode, stdout_is_terminal: bool, interval_ms: u64) -> StatusPacer {
        let enabled = match mode {
            EtaMode::Always => true,
            EtaMode::Never => false,
            EtaMode::Auto => stdout_is_terminal,
        };
        StatusPacer {
            enabled,
            interval_ms,
            last_ms: None,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// True when a line is due at `now_ms` (and notes that it was printed): the first
    /// call, then once 95% of the period has passed since the last line.
    pub fn should_print(&mut self, now_ms: u64) -> bool {
        if !self.enabled {
            return false;
        }
        let due = match self.last_ms {
            None => true,
            Some(last) => now_ms.saturating_sub(last) > self.interval_ms * 95 / 100,
        };
        if due {
            self.last_ms = Some(now_ms);
        }
        due
    }
}

/// What one job is doing, as a character of the status line's run string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Not started yet ('P').
    NotStarted,
    /// Setting up: login, file layout ('I').
    SettingUp,
    /// In `ramp_time` ('/').
    Ramp,
    /// Doing I/O; the character from [`running_char`].
    Running(char),
    Verifying,
    Finishing,
    /// Ended, not yet reaped ('E').
    Exited,
    /// Ended cleanly ('_').
    Done,
    /// Ended with an error ('X').
    Failed,
}

impl JobState {
    pub fn symbol(self) -> char {
        match self {
            JobState::NotStarted => 'P',
            JobState::SettingUp => 'I',
            JobState::Ramp => '/',
            JobState::Running(c) => c,
            JobState::Verifying => 'V',
            JobState::Finishing => 'f',
            JobState::Exited => 'E',
            JobState::Done => '_',
            JobState::Failed => 'X',
        }
    }

    fn counts_as_running(self) -> bool {
        matches!(
            self,
            JobState::Ramp | JobState::Running(_) | JobState::Verifying | JobState::Finishing
        )
    }
}

/// fio's running character for an `rw=` value: upper case sequential, lower case random;
/// R/r read, W/w write, M/m mixed (R/W when `rwmixread` is 100/0), D/d trim.
pub fn running_char(rw: &str, rwmix_read: u32) -> char {
    let random = rw.starts_with("rand");
    let base = rw.trim_start_matches("rand");
    let c = match base {
        "read" => 'R',
        "write" => 'W',
        "trim" => 'D',
        "rw" | "readwrite" => match rwmix_read {
            100 => 'R',
            0 => 'W',
            _ => 'M',
        },
        _ => 'M',
    };
    if random {
        c.to_ascii_lowercase()
    } else {
        c
    }
}

/// Runs of equal states as fio shows them: "r(2),_(1)".
pub fn condense(states: &[JobState]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = states.iter().map(|s| s.symbol()).peekable();
    while let Some(c) = iter.next() {
        let mut run = 1;
        while iter.peek() == Some(&c) {
            iter.next();
            run += 1;
        }
        parts.push(format!("{c}({run})"));
    }
    parts.join(",")
}

/// The figures of one status line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveStatus {
    pub states: Vec<JobState>,
    /// Open files / sessions (fio's "f=").
    pub files_open: u32,
    /// Summed `rate_iops` limits of running jobs, (minimum, target), if any.
    pub iops_limit: Option<(u64, u64)>,
    /// Summed `rate` limits of running jobs in bytes/s, (minimum, target), if any.
    pub rate_limit_bytes: Option<(u64, u64)>,
    /// Percent done, `None` while unknown (shown as "-.-%").
    pub percent_done: Option<f64>,
    /// Bandwidth per direction over the last period, bytes/s.
    pub bytes_per_s: [u64; 3],
    pub iops: [u64; 3],
    /// Seconds left, `None` while unknown (then only the "Jobs:" part is shown).
    pub eta_s: Option<u64>,
}

/// The line without carriage return or padding.
pub fn render(status: &LiveStatus) -> String {
    let running = status
        .states
        .iter()
        .filter(|s| s.counts_as_running())
        .count();
    let mut line = format!("Jobs: {running} (f={})", status.files_open);
    if let Some((min, target)) = status.rate_limit_bytes {
        line.push_str(&format!(
            ", {}-{}",
            num2str(min, 4, 1, true, Unit::BytePerSec),
            num2str(target, 4, 1, true, Unit::BytePerSec)
        ));
    } else if let Some((min, target)) = status.iops_limit {
        line.push_str(&format!(", {min}-{target} IOPS"));
    }
    let Some(eta_s) = status.eta_s else {
        return line;
    };
    if running == 0 {
        return line;
    }
    let percent = status
        .percent_done
        .map_or_else(|| "-.-%".to_string(), |p| format!("{p:3.1}%"));
    line.push_str(&format!(": [{}][{percent}]", condense(&status.states)));
    let letters = ['r', 'w', 't'];
    let shown: Vec<usize> = (0..3)
        .filter(|&i| status.bytes_per_s[i] > 0 || status.iops[i] > 0)
        .collect();
    if !shown.is_empty() {
        let rates: Vec<String> = shown
            .iter()
            .map(|&i| {
                let kib = status.bytes_per_s[i] / 1024;
                format!(
                    "{}={}",
                    letters[i],
                    num2str(kib, 4, 1024, true, Unit::BytePerSec)
                )
            })
            .collect();
        let iops: Vec<String> = shown
            .iter()
            .map(|&i| {
                format!(
                    "{}={}",
                    letters[i],
                    num2str(status.iops[i], 4, 1, false, Unit::None)
                )
            })
            .collect();
        line.push_str(&format!("[{}][{} IOPS]", rates.join(","), iops.join(",")));
    }
    line.push_str(&format!("[eta {}]", eta_string(eta_s)));
    line
}

/// Redraws the line in place: pads over a longer previous line, ends with '\r'.
#[derive(Debug, Clone, Default)]
pub struct StatusLine {
    last_len: usize,
}

impl StatusLine {
    pub fn new() -> StatusLine {
        StatusLine::default()
    }

    /// The text to print for `status`.
    pub fn line(&mut self, status: &LiveStatus) -> String {
        let mut text = render(status);
        let len = text.chars().count();
        if len < self.last_len {
            text.push_str(&" ".repeat(self.last_len - len));
        }
        self.last_len = len;
        text.push('\r');
        text
    }
}

/// fio's estimate of a running job's time left (`thread_eta`): from the share of bytes
/// done, or of time done for a time-based job (whichever is less), bounded by the runtime
/// limit. Worked in milliseconds, not whole seconds: with whole seconds a size-based
/// run's estimate stalls and jumps (0.99 s in counts as 0 s, so the first estimate is 0).
pub fn job_eta(
    elapsed: Duration,
    bytes_done: u64,
    bytes_total: u64,
    runtime_limit: Option<Duration>,
    time_based: bool,
) -> Duration {
    let elapsed_s = elapsed.as_secs_f64();
    let runtime_limit = runtime_limit.filter(|limit| !limit.is_zero());
    let mut done = if bytes_total > 0 {
        (bytes_done as f64 / bytes_total as f64).min(1.0)
    } else {
        0.0
    };
    if time_based {
        done = match runtime_limit {
            Some(limit) => done.min(elapsed_s / limit.as_secs_f64()),
            None => 0.0,
        };
    }
    let mut eta = if done <= 0.0 {
        runtime_limit.unwrap_or_default()
    } else {
        Duration::from_secs_f64((elapsed_s / done - elapsed_s).clamp(0.0, ETA_MAX_S))
    };
    if let Some(limit) = runtime_limit {
        eta = eta.min(limit.saturating_sub(elapsed));
    }
    eta
}

/// An estimate this long is "forever" (a job that has hardly moved).
const ETA_MAX_S: f64 = 100.0 * 86_400.0;

/// Whole seconds of an ETA as the line shows them: rounded up, so "00m:00s" means done.
pub fn eta_seconds(eta: Duration) -> u64 {
    eta.as_secs() + u64::from(eta.subsec_nanos() > 0)
}

/// Percent done for the line from the time elapsed and the time left (for one size-based
/// job this is its share of bytes done).
pub fn percent_done(elapsed: Duration, eta: Duration) -> Option<f64> {
    let total = (elapsed + eta).as_secs_f64();
    (!elapsed.is_zero() && total > 0.0).then(|| elapsed.as_secs_f64() * 100.0 / total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_fio() {
        // From fio 3.33: "Jobs: 1 (f=1): [m(1)][75.0%][r=80.2MiB/s,w=80.3MiB/s][r=20.5k,w=20.5k IOPS][eta 00m:01s]"
        let status = LiveStatus {
            states: vec![JobState::Running(running_char("randrw", 50))],
            files_open: 1,
            percent_done: Some(75.0),
            bytes_per_s: [82_124 * 1024, 82_227 * 1024, 0],
            iops: [20_531, 20_556, 0],
            eta_s: Some(1),
            ..LiveStatus::default()
        };
        assert_eq!(
            render(&status),
            "Jobs: 1 (f=1): [m(1)][75.0%][r=80.2MiB/s,w=80.3MiB/s][r=20.5k,w=20.6k IOPS][eta 00m:01s]"
        );
        // "Jobs: 2 (f=2), 0-200 IOPS: [R(2)][75.0%][r=800KiB/s][r=200 IOPS][eta 00m:01s]"
        let paced = LiveStatus {
            states: vec![JobState::Running('R'); 2],
            files_open: 2,
            iops_limit: Some((0, 200)),
            percent_done: Some(75.0),
            bytes_per_s: [800 * 1024, 0, 0],
            iops: [200, 0, 0],
            eta_s: Some(1),
            ..LiveStatus::default()
        };
        assert_eq!(
            render(&paced),
            "Jobs: 2 (f=2), 0-200 IOPS: [R(2)][75.0%][r=800KiB/s][r=200 IOPS][eta 00m:01s]"
        );
        let starting = LiveStatus {
            states: vec![JobState::Running('r')],
            files_open: 1,
            ..LiveStatus::default()
        };
        assert_eq!(render(&starting), "Jobs: 1 (f=1)");
    }

    #[test]
    fn condenses_runs_and_pads_shorter_lines() {
        let states = [
            JobState::Running('r'),
            JobState::Running('r'),
            JobState::Done,
            JobState::NotStarted,
        ];
        assert_eq!(condense(&states), "r(2),_(1),P(1)");
        let mut line = StatusLine::new();
        let long = LiveStatus {
            states: vec![JobState::Running('w')],
            files_open: 1,
            percent_done: None,
            bytes_per_s: [0, 4096 * 1000, 0],
            iops: [0, 1000, 0],
            eta_s: Some(100),
            ..LiveStatus::default()
        };
        let first = line.line(&long);
        assert!(first.contains("[-.-%]"), "{first}");
        assert!(first.ends_with('\r'));
        let short = LiveStatus {
            eta_s: None,
            ..long
        };
        let second = line.line(&short);
        assert_eq!(second.len(), first.len(), "padding covers the longer line");
    }

    #[test]
    fn pacing_follows_the_eta_mode() {
        let mut never = StatusPacer::new(EtaMode::Never, true);
        assert!(!never.should_print(0));
        let mut auto_pipe = StatusPacer::new(EtaMode::Auto, false);
        assert!(!auto_pipe.should_print(0));
        let mut always = StatusPacer::new(EtaMode::Always, false);
        assert!(always.should_print(0));
        assert!(!always.should_print(500));
        assert!(always.should_print(960), "95% of the period is enough");
        assert!(!always.should_print(1_500));
        let mut auto_tty = StatusPacer::new(EtaMode::Auto, true);
        assert!(auto_tty.should_print(10));
        assert_eq!(EtaMode::parse("always"), Some(EtaMode::Always));
        assert_eq!(EtaMode::parse("sometimes"), None);
    }

    #[test]
    fn eta_estimates() {
        // Half the bytes in 10 s: 10 s to go.
        let s = Duration::from_secs;
        assert_eq!(job_eta(s(10), 50, 100, None, false), s(10));
        // Time-based 60 s run, 15 s in, bytes long done: time decides.
        assert_eq!(job_eta(s(15), 100, 100, Some(s(60)), true), s(45));
        // A runtime limit caps a slow size-based job.
        assert_eq!(job_eta(s(10), 1, 100, Some(s(30)), false), s(20));
        assert_eq!(percent_done(s(15), s(45)), Some(25.0));
        assert_eq!(percent_done(s(0), s(45)), None);
        assert_eq!(eta_seconds(Duration::from_millis(1)), 1);
        assert_eq!(eta_seconds(Duration::ZERO), 0);
    }

    #[test]
    fn a_size_based_eta_follows_the_bytes_done() {
        // 48 MiB at a steady 16 MiB/s, looked at just before each second (as the status
        // line does): the estimate counts down and the percentage is the share of bytes.
        let total = 48u64 << 20;
        let mut last_eta = u64::MAX;
        let mut last_percent = 0.0;
        for looked_at_ms in [990u64, 1_990, 2_700] {
            let elapsed = Duration::from_millis(looked_at_ms);
            let done = (16u64 << 20) * looked_at_ms / 1000;
            let eta = job_eta(elapsed, done, total, None, false);
            let percent = percent_done(elapsed, eta).expect("a percentage");
            let by_bytes = done as f64 * 100.0 / total as f64;
            assert!((percent - by_bytes).abs() < 0.1, "{percent} vs {by_bytes}");
            let shown = eta_seconds(eta);
            assert!(shown < last_eta, "the ETA stalled at {shown} s");
            assert!(percent > last_percent);
            let left_s = (total - done) as f64 / (16u64 << 20) as f64;
            assert_eq!(shown, left_s.ceil() as u64, "at {looked_at_ms} ms");
            last_eta = shown;
            last_percent = percent;
        }
        assert_eq!(running_char("randread", 100), 'r');
        assert_eq!(running_char("rw", 100), 'R');
        assert_eq!(running_char("randtrim", 100), 'd');
    }
}
