//! The live status line while jobs run (fio's ETA line), printed by the main thread from
//! the jobs' atomic counters.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::job::spec::JobSpec;
use crate::job::{Eta, ToolOptions};
use crate::output::live::{
    eta_seconds, job_eta, percent_done, running_char, stdout_is_terminal, EtaMode, JobState,
    LiveStatus, StatusLine, StatusPacer,
};
use crate::stats::{LiveCounters, LiveTotals};

use super::job::{state, JobProgress};

/// One running job as the status line sees it.
pub struct Watched<'a> {
    pub spec_index: usize,
    pub spec: &'a JobSpec,
    pub live: Arc<LiveCounters>,
    pub progress: Arc<JobProgress>,
    pub bytes_total: Option<u64>,
}

pub struct StatusPrinter {
    pacer: StatusPacer,
    line: StatusLine,
    started: Instant,
    last: Option<(Instant, LiveTotals)>,
    printed: bool,
}

impl StatusPrinter {
    pub fn new(tool: &ToolOptions) -> StatusPrinter {
        let mode = match tool.eta {
            Eta::Auto => EtaMode::Auto,
            Eta::Always => EtaMode::Always,
            Eta::Never => EtaMode::Never,
        };
        StatusPrinter {
            pacer: StatusPacer::new(mode, stdout_is_terminal()),
            line: StatusLine::new(),
            started: Instant::now(),
            last: None,
            printed: false,
        }
    }

    /// Prints the line when a period has passed.
    pub fn maybe_print(&mut self, jobs: &[Watched<'_>]) {
        let now_ms = self.started.elapsed().as_millis() as u64;
        if !self.pacer.enabled() || !self.pacer.should_print(now_ms) {
            return;
        }
        let status = self.status(jobs);
        let line = self.line.line(&status);
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
        self.printed = true;
    }

    /// A phase ended: forget its rates.
    pub fn finish_phase(&mut self, _jobs: &[Watched<'_>]) {
        self.last = None;
    }

    /// Clears the line before the results are printed.
    pub fn clear(&mut self) {
        if self.printed {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(b"\r\x1b[2K");
            let _ = out.flush();
            self.printed = false;
        }
    }

    fn status(&mut self, jobs: &[Watched<'_>]) -> LiveStatus {
        let mut totals = LiveTotals::default();
        for job in jobs {
            totals.add(&job.live.read());
        }
        let now = Instant::now();
        let (bytes_per_s, iops) = match &self.last {
            Some((then, earlier)) => {
                totals.rates_since(earlier, now.duration_since(*then).as_millis() as u64)
            }
            None => ([0; 3], [0; 3]),
        };
        self.last = Some((now, totals));
        let elapsed = self.started.elapsed();
        let mut eta: Option<Duration> = None;
        let states = jobs
            .iter()
            .map(|job| {
                let running = running_char(job.spec.rw.kind.fio_name(), job.spec.rwmixread);
                let job_state = match job.progress.state.load(Ordering::Relaxed) {
                    state::NOT_STARTED => JobState::NotStarted,
                    state::RAMP => JobState::Ramp,
                    state::RUNNING => JobState::Running(running),
                    state::VERIFYING => JobState::Verifying,
                    state::DONE => JobState::Done,
                    _ => JobState::Failed,
                };
                if !super::is_over(&job.progress) {
                    let job_left = job_eta(
                        elapsed,
                        job.progress.bytes_done.load(Ordering::Relaxed),
                        job.bytes_total.unwrap_or(0),
                        job.spec.runtime.map(|r| r + job.spec.ramp_time),
                        job.spec.time_based || job.bytes_total.is_none(),
                    );
                    eta = Some(eta.map_or(job_left, |e| e.max(job_left)));
                }
                job_state
            })
            .collect();
        LiveStatus {
            states,
            files_open: jobs.len() as u32,
            iops_limit: None,
            rate_limit_bytes: None,
            percent_done: eta.and_then(|eta| percent_done(elapsed, eta)),
            bytes_per_s,
            iops,
            eta_s: eta.map(eta_seconds),
        }
    }
}
