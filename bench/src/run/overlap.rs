//! Jobs that verify what they write must not share blocks with another job writing at the
//! same time: each would overwrite blocks the other checks, and verify would report
//! thousands of bad blocks that are the jobs' own doing (`numjobs=4` with `verify` and no
//! `offset_increment` is the usual way to get there). Such a set of jobs is refused before
//! any I/O, naming both jobs and what they share, unless both have `verify_shared` (they
//! then verify against one ledger: see `shared_verify`).

use crate::job::spec::Region;

/// Where one job clone writes, as far as overlap goes.
#[derive(Debug, Clone)]
pub(crate) struct Footprint {
    pub job: String,
    /// 1-based clone number and the job's `numjobs`.
    pub clone: u32,
    pub clones: u32,
    /// Jobs of one phase (between stonewalls) run at the same time.
    pub phase: usize,
    /// The targets (LUNs, files) the clone does I/O to, as the user would name them.
    pub targets: Vec<String>,
    pub region: Region,
    pub writes: bool,
    pub verifies: bool,
    /// `verify_shared`: two such writers of one target verify together (one ledger).
    pub shared: bool,
}

impl Footprint {
    fn name(&self) -> String {
        if self.clones > 1 {
            format!(
                "job {:?} (clone {} of {})",
                self.job, self.clone, self.clones
            )
        } else {
            format!("job {:?}", self.job)
        }
    }
}

/// A job clone as the shared ledger's errors name it: `w (clone 2 of 4)`, or `w` alone.
pub(crate) fn clone_name(job: &str, clone: u32, clones: u32) -> String {
    if clones > 1 {
        format!("{job} (clone {clone} of {clones})")
    } else {
        job.to_string()
    }
}

/// Two concurrent writers sharing blocks while one of them verifies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{first} and {second} both write bytes {start}..{end} of {target} at the same time, and \
     {verifier} verifies them: each overwrites blocks the other wrote, so verify would fail. \
     Give the clones their own regions (offset_increment={hint_bytes}, the size), run the \
     jobs one after the other (stonewall), verify in one job, or give every writer \
     verify_shared=1"
)]
pub struct VerifyOverlap {
    pub first: String,
    pub second: String,
    pub verifier: String,
    pub target: String,
    pub start: u64,
    pub end: u64,
    pub hint_bytes: u64,
}

/// The first pair of footprints that breaks the rule above, in job order.
pub(crate) fn find_verify_overlap(footprints: &[Footprint]) -> Option<VerifyOverlap> {
    for (index, first) in footprints.iter().enumerate() {
        if !first.writes {
            continue;
        }
        for second in &footprints[index + 1..] {
            if !second.writes || second.phase != first.phase {
                continue;
            }
            if !(first.verifies || second.verifies) || (first.shared && second.shared) {
                continue;
            }
            let Some(target) = first.targets.iter().find(|t| second.targets.contains(t)) else {
                continue;
            };
            let start = first.region.offset_bytes.max(second.region.offset_bytes);
            let end = (first.region.offset_bytes + first.region.len_bytes)
                .min(second.region.offset_bytes + second.region.len_bytes);
            if start >= end {
                continue;
            }
            let verifier = if first.verifies { first } else { second };
            return Some(VerifyOverlap {
                first: first.name(),
                second: second.name(),
                verifier: verifier.name(),
                target: target.clone(),
                start,
                end,
                hint_bytes: verifier.region.len_bytes,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clone(clone: u32, offset_bytes: u64, verifies: bool) -> Footprint {
        Footprint {
            job: "w".into(),
            clone,
            clones: 4,
            phase: 0,
            targets: vec!["LUN iscsi://h:3260/iqn.x/1".into()],
            region: Region {
                offset_bytes,
                len_bytes: 1 << 20,
            },
            writes: true,
            verifies,
            shared: false,
        }
    }

    #[test]
    fn overlapping_verify_clones_are_named() {
        let clones: Vec<Footprint> = (1..=4).map(|c| clone(c, 0, true)).collect();
        let overlap = find_verify_overlap(&clones).expect("overlap");
        assert_eq!(
            overlap.to_string(),
            "job \"w\" (clone 1 of 4) and job \"w\" (clone 2 of 4) both write bytes \
             0..1048576 of LUN iscsi://h:3260/iqn.x/1 at the same time, and job \"w\" (clone 1 \
             of 4) verifies them: each overwrites blocks the other wrote, so verify would \
             fail. Give the clones their own regions (offset_increment=1048576, the size), \
             run the jobs one after the other (stonewall), verify in one job, or give every \
             writer verify_shared=1"
        );
    }

    #[test]
    fn disjoint_regions_other_phases_targets_and_readers_are_fine() {
        let disjoint: Vec<Footprint> = (0..4)
            .map(|c| clone(c + 1, u64::from(c) << 20, true))
            .collect();
        assert_eq!(find_verify_overlap(&disjoint), None);
        let mut later = clone(2, 0, true);
        later.phase = 1;
        assert_eq!(find_verify_overlap(&[clone(1, 0, true), later]), None);
        let mut elsewhere = clone(2, 0, true);
        elsewhere.targets = vec!["LUN iscsi://h:3260/iqn.x/2".into()];
        assert_eq!(find_verify_overlap(&[clone(1, 0, true), elsewhere]), None);
        let mut reader = clone(2, 0, true);
        reader.writes = false;
        assert_eq!(find_verify_overlap(&[clone(1, 0, true), reader]), None);
        // Two writers without verify are the user's business.
        assert_eq!(
            find_verify_overlap(&[clone(1, 0, false), clone(2, 0, false)]),
            None
        );
        // One verifying writer beside a plain writer is not.
        assert!(find_verify_overlap(&[clone(1, 0, false), clone(2, 0, true)]).is_some());
        // verify_shared writers verify together; beside a writer without it they do not.
        let shared = |c| Footprint {
            shared: true,
            ..clone(c, 0, true)
        };
        assert_eq!(find_verify_overlap(&[shared(1), shared(2)]), None);
        assert!(find_verify_overlap(&[shared(1), clone(2, 0, false)]).is_some());
    }
}
