//! Rank and size from a launcher's environment, so one command line serves every host of
//! `srun`, `mpirun`, a Kubernetes Indexed Job or pdsh.
//!
//! Rank 0 is the controller: it reads the other ranks' addresses from `--cluster-hosts`
//! (a host file or a comma list; with `--cluster-hosts` absent it takes
//! `ISCSI_BENCH_HOSTS`), and every other rank runs an agent on the port in
//! `ISCSI_BENCH_PORT` (default 8765, fio's) and waits for it. Rank 0 retries each agent
//! until `--cluster-wait` has passed, as the ranks start in no particular order. The
//! launchers themselves tell no rank where rank 0 is (Slurm gives `SLURM_JOB_NODELIST`
//! in its compressed form; Kubernetes gives stable names `JOB-INDEX.SERVICE`), so the
//! host list is the one thing the user writes: in Slurm `scontrol show hostnames`, in a
//! Kubernetes Indexed Job the pod names of the headless service.

/// Where the rank and size came from and what they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchRank {
    pub rank: u32,
    pub size: u32,
    /// The launcher whose variables were read ("slurm", "open-mpi", "pmi", "kubernetes",
    /// "iscsi-bench").
    pub launcher: &'static str,
}

/// (launcher, rank variable, size variable), in the order they are tried. Kubernetes has
/// no size variable: the size is the host list's length.
const LAUNCHERS: &[(&str, &str, Option<&str>)] = &[
    ("iscsi-bench", "ISCSI_BENCH_RANK", Some("ISCSI_BENCH_SIZE")),
    ("slurm", "SLURM_PROCID", Some("SLURM_NTASKS")),
    (
        "open-mpi",
        "OMPI_COMM_WORLD_RANK",
        Some("OMPI_COMM_WORLD_SIZE"),
    ),
    ("pmi", "PMI_RANK", Some("PMI_SIZE")),
    ("pmix", "PMIX_RANK", None),
    (
        "mvapich",
        "MV2_COMM_WORLD_RANK",
        Some("MV2_COMM_WORLD_SIZE"),
    ),
    ("kubernetes", "JOB_COMPLETION_INDEX", None),
];

/// Why the environment does not give a usable rank.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaunchError {
    #[error("no launcher rank in the environment (looked for {0})")]
    NoRank(String),
    #[error("{variable}={value} is not a whole number")]
    NotANumber {
        variable: &'static str,
        value: String,
    },
    #[error("rank {rank} from {launcher} is not below the size {size}")]
    RankOutOfRange {
        launcher: &'static str,
        rank: u32,
        size: u32,
    },
}

/// The rank from the first launcher whose rank variable is set; the size from its size
/// variable, else `hosts_len` (the host list's length).
pub fn from_env(
    env: &dyn Fn(&str) -> Option<String>,
    hosts_len: Option<u32>,
) -> Result<LaunchRank, LaunchError> {
    let number = |variable: &'static str| -> Result<Option<u32>, LaunchError> {
        match env(variable) {
            None => Ok(None),
            Some(value) => value
                .trim()
                .parse::<u32>()
                .map(Some)
                .map_err(|_| LaunchError::NotANumber { variable, value }),
        }
    };
    for &(launcher, rank_var, size_var) in LAUNCHERS {
        let Some(rank) = number(rank_var)? else {
            continue;
        };
        let size = match size_var {
            Some(variable) => number(variable)?,
            None => None,
        }
        .or(hosts_len)
        .unwrap_or(rank + 1);
        if rank >= size {
            return Err(LaunchError::RankOutOfRange {
                launcher,
                rank,
                size,
            });
        }
        return Ok(LaunchRank {
            rank,
            size,
            launcher,
        });
    }
    Err(LaunchError::NoRank(
        LAUNCHERS
            .iter()
            .map(|(_, rank, _)| *rank)
            .collect::<Vec<_>>()
            .join(", "),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn each_launcher_is_read() {
        let slurm = env_of(&[("SLURM_PROCID", "3"), ("SLURM_NTASKS", "8")]);
        assert_eq!(
            from_env(&slurm, None),
            Ok(LaunchRank {
                rank: 3,
                size: 8,
                launcher: "slurm"
            })
        );
        let mpi = env_of(&[("OMPI_COMM_WORLD_RANK", "0"), ("OMPI_COMM_WORLD_SIZE", "2")]);
        assert_eq!(from_env(&mpi, None).unwrap().launcher, "open-mpi");
        let pmi = env_of(&[("PMI_RANK", "1"), ("PMI_SIZE", "4")]);
        assert_eq!(from_env(&pmi, None).unwrap().rank, 1);
        let k8s = env_of(&[("JOB_COMPLETION_INDEX", "2")]);
        assert_eq!(
            from_env(&k8s, Some(5)),
            Ok(LaunchRank {
                rank: 2,
                size: 5,
                launcher: "kubernetes"
            })
        );
    }

    #[test]
    fn bad_values_are_named() {
        let bad = env_of(&[("SLURM_PROCID", "x")]);
        assert!(matches!(
            from_env(&bad, None),
            Err(LaunchError::NotANumber {
                variable: "SLURM_PROCID",
                ..
            })
        ));
        let out = env_of(&[("PMI_RANK", "4"), ("PMI_SIZE", "4")]);
        assert!(matches!(
            from_env(&out, None),
            Err(LaunchError::RankOutOfRange { .. })
        ));
        assert!(matches!(
            from_env(&env_of(&[]), None),
            Err(LaunchError::NoRank(_))
        ));
    }
}
