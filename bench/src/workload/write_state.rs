//! How far a write job got, for fio's `verify_state_save` / `verify_state_load`: a later
//! `verify_only` run replays the same plan up to where the writing run stopped (a runtime,
//! a signal, an error) and checks exactly what it wrote, instead of a full pass of which
//! only a part was ever written.
//!
//! The plan is a pure function of the job's settings and seed, so the state is small: the
//! number of I/Os the workload handed out, the verify intervals whose contents the writing
//! run could not know (a failed, timed-out or unsent last write), and a fingerprint of the
//! settings that shape the plan, so a state is never applied to a different job. A mixed
//! job whose directions are steered by per-direction rate limits depends on timing too;
//! the replay of such a job can differ from the run, as fio's does.

use serde::{Deserialize, Serialize};

use super::unknown::UnknownCause;
use super::WorkloadConfig;

/// One run of consecutive verify intervals left unknown, in bytes of the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnknownRun {
    /// The job's file (0 for a one-file job).
    pub file: u32,
    pub offset: u64,
    pub len: u64,
    pub cause: UnknownCause,
}

/// Where a write job stopped (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteState {
    /// I/Os handed out by the workload, all directions.
    pub ios: u64,
    pub plan: PlanFingerprint,
    pub unknown: Vec<UnknownRun>,
}

/// What shapes a job's plan: its seed, pattern, mix, block sizes, region and verify
/// interval, with a digest of all of them for the comparison and the first few in clear
/// for the message when they differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanFingerprint {
    pub seed: u64,
    pub rw: String,
    pub offset_bytes: u64,
    pub size_bytes: u64,
    pub digest: u32,
}

impl PlanFingerprint {
    pub(crate) fn of(config: &WorkloadConfig) -> PlanFingerprint {
        // Debug output of the plan-shaping fields, in a fixed order: the same settings
        // give the same text in the same build. Left out on purpose: what may differ
        // between the writing run and the verifying one (number_ios, time_based, pacing).
        let shaping = format!(
            "{:?}|{}|{:?}|{:?}|{}|{:?}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{}|{}|{:?}|{:?}",
            config.rw,
            config.rwmixread_percent,
            config.block_sizes,
            config.block_align_bytes,
            config.norandommap,
            config.random_distribution,
            config.loops,
            config.io_size_bytes,
            config.more_files,
            config.file_service,
            config.offsets,
            config.verify.as_ref().map(|v| (v.kind, v.interval_bytes)),
            config.offset_bytes,
            config.size_bytes,
            config.seed,
            config.strided_zones,
        );
        PlanFingerprint {
            seed: config.seed,
            rw: format!("{:?}", config.rw).to_lowercase(),
            offset_bytes: config.offset_bytes,
            size_bytes: config.size_bytes,
            digest: crc32c::crc32c(shaping.as_bytes()),
        }
    }

    /// Why a state saved with `self` cannot be replayed by a job planning `this`, if so.
    pub fn mismatch(&self, this: &PlanFingerprint) -> Option<String> {
        if self == this {
            return None;
        }
        let mut differs = Vec::new();
        if self.seed != this.seed {
            differs.push(format!("seed {} (this job: {})", self.seed, this.seed));
        }
        if self.rw != this.rw {
            differs.push(format!("rw {} (this job: {})", self.rw, this.rw));
        }
        if (self.offset_bytes, self.size_bytes) != (this.offset_bytes, this.size_bytes) {
            differs.push(format!(
                "region {}+{} (this job: {}+{})",
                self.offset_bytes, self.size_bytes, this.offset_bytes, this.size_bytes
            ));
        }
        if differs.is_empty() {
            differs.push("block sizes, mix, distribution, loops or verify interval".into());
        }
        Some(format!(
            "it was saved by a job that planned other I/O: {}",
            differs.join(", ")
        ))
    }
}
