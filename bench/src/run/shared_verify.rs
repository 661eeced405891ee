//! `verify_shared` at run setup: the jobs of one phase that write the same target with
//! `verify_shared` share one ledger (`workload::shared_ledger`). They must agree on how
//! blocks are verified (kind and interval), and write whole verify blocks; a job that
//! cannot is refused before any I/O, by name.

use std::collections::HashMap;
use std::sync::Arc;

use crate::job::spec::{JobSpec, Region};
use crate::workload::{SharedLedger, Verifier, VerifyKind};

/// A job's handle on its ledger.
#[derive(Debug, Clone)]
pub struct SharedVerify {
    pub ledger: Arc<SharedLedger>,
    /// The job's index among the ledger's sharers.
    pub job: u32,
}

/// Why a `verify_shared` job cannot share its target's ledger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SharedVerifyRefused {
    #[error(
        "job {job:?} verifies {target} with verify_shared using {kind} blocks of {interval} \
         bytes, but job {first:?} shares it with {first_kind} blocks of {first_interval} \
         bytes: sharers must verify alike (same verify and verify_interval)"
    )]
    Unlike {
        job: String,
        first: String,
        target: String,
        kind: &'static str,
        interval: u32,
        first_kind: &'static str,
        first_interval: u32,
    },
    #[error("job {job:?}: verify_shared needs every write to cover whole verify blocks: {why}")]
    Misaligned { job: String, why: String },
}

struct Group {
    ledger: Arc<SharedLedger>,
    first: String,
    kind: VerifyKind,
    interval: u32,
}

/// The ledgers of a run, by (phase, target).
#[derive(Default)]
pub struct SharedLedgers {
    groups: HashMap<(usize, String), Group>,
}

impl SharedLedgers {
    /// Joins the job (named `job`, the clone's name) to its target's ledger in `phase`.
    pub fn join(
        &mut self,
        spec: &JobSpec,
        job: String,
        phase: usize,
        target: &str,
        region: &Region,
        verifier: &Verifier,
    ) -> Result<SharedVerify, SharedVerifyRefused> {
        let interval = verifier.interval_bytes();
        spec.check_block_alignment(
            region,
            interval,
            &format!("its verify_interval ({interval} bytes)"),
        )
        .map_err(|e| SharedVerifyRefused::Misaligned {
            job: job.clone(),
            why: e.to_string(),
        })?;
        let group = self
            .groups
            .entry((phase, target.to_string()))
            .or_insert_with(|| Group {
                ledger: Arc::new(SharedLedger::starting_now(target, interval)),
                first: job.clone(),
                kind: verifier.kind(),
                interval,
            });
        if group.kind != verifier.kind() || group.interval != interval {
            return Err(SharedVerifyRefused::Unlike {
                job,
                first: group.first.clone(),
                target: target.to_string(),
                kind: verifier.kind().fio_name(),
                interval,
                first_kind: group.kind.fio_name(),
                first_interval: group.interval,
            });
        }
        let index = group.ledger.join(job);
        Ok(SharedVerify {
            ledger: Arc::clone(&group.ledger),
            job: index,
        })
    }
}
