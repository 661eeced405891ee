//! fio's `exitall`, `exit_what` and `exitall_on_error`: which jobs a job's end ends too
//! (fio's `fio_terminate_threads`). Pure bookkeeping; the runner asks the running jobs to
//! stop and skips the ones not started yet, which are reported with nothing done, as fio
//! reports them.

use std::collections::BTreeSet;

use crate::job::spec::{ExitWhat, JobSpec};

/// What has been ended so far.
#[derive(Debug, Default)]
pub(super) struct Ended {
    /// Every job (`exit_what=all`, `exitall_on_error`).
    all: bool,
    /// The running jobs (`exit_what=stonewall`): this phase only, later ones still run.
    running: bool,
    /// Reporting groups (`exit_what=group`), running or not started.
    groups: BTreeSet<u32>,
}

impl Ended {
    /// `spec`'s job has ended (in error or not); true when that ends other jobs.
    pub(super) fn on_job_end(&mut self, spec: &JobSpec, failed: bool) -> bool {
        if failed && spec.exitall_on_error {
            self.all = true;
            return true;
        }
        if !spec.exitall {
            return false;
        }
        match spec.exit_what {
            ExitWhat::All => self.all = true,
            ExitWhat::Stonewall => self.running = true,
            ExitWhat::Group => {
                self.groups.insert(spec.group_id);
            }
        }
        true
    }

    /// Whether a running job of `spec` is to stop.
    pub(super) fn covers_running(&self, spec: &JobSpec) -> bool {
        self.all || self.running || self.groups.contains(&spec.group_id)
    }

    /// Whether a job of `spec` not started yet is not to start. Ends of running jobs
    /// (`exit_what=stonewall`) are forgotten at the next phase.
    pub(super) fn covers(&mut self, spec: &JobSpec) -> bool {
        self.running = false;
        self.all || self.groups.contains(&spec.group_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(group: u32, exitall: bool, what: ExitWhat) -> JobSpec {
        let mut spec = JobSpec::new("j");
        spec.group_id = group;
        spec.exitall = exitall;
        spec.exit_what = what;
        spec
    }

    #[test]
    fn each_exit_what_ends_its_jobs() {
        let mut ended = Ended::default();
        assert!(!ended.on_job_end(&job(0, false, ExitWhat::All), false));
        assert!(ended.on_job_end(&job(0, true, ExitWhat::Group), false));
        assert!(ended.covers_running(&job(0, false, ExitWhat::Group)));
        assert!(!ended.covers_running(&job(1, false, ExitWhat::Group)));
        assert!(!ended.covers(&job(1, false, ExitWhat::Group)));

        let mut ended = Ended::default();
        ended.on_job_end(&job(0, true, ExitWhat::Stonewall), false);
        assert!(ended.covers_running(&job(3, false, ExitWhat::Group)));
        assert!(!ended.covers(&job(3, false, ExitWhat::Group)));

        let mut ended = Ended::default();
        let mut failing = job(0, false, ExitWhat::Group);
        failing.exitall_on_error = true;
        assert!(!ended.on_job_end(&failing, false));
        assert!(ended.on_job_end(&failing, true));
        assert!(ended.covers(&job(5, false, ExitWhat::Group)));
    }
}
