//! Per-queue CPU settings in sysfs (Linux `Documentation/networking/scaling.rst`, "XPS" and
//! "RPS"): `/sys/class/net/<dev>/queues/tx-<n>/xps_cpus` (the CPUs whose sends use transmit
//! queue n) and `.../rx-<n>/rps_cpus` (the CPUs receive processing of queue n is steered to).
//!
//! Both files hold a CPU bitmap in the kernel's `%*pb` format: comma-separated groups of 32
//! bits in hex, most significant group first (`00000001,00000003` = CPUs 0, 1 and 32).
//!
//! The sysfs root is a parameter so that tests run against a fixture tree. Writing XPS needs
//! root (or `CAP_NET_ADMIN`) and a multi-queue device (single-queue devices have no
//! `xps_cpus` file): both are reported as distinct errors, and [`try_set_xps`] turns any
//! failure into an [`XpsOutcome`] so that a connection never fails because of XPS.

#![forbid(unsafe_code)]

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::SteeringError;

/// Where network devices live in sysfs.
pub const SYSFS_NET: &str = "/sys/class/net";

/// The most 32-bit groups a CPU mask may have (8192 CPUs, far above any real machine).
pub const MASK_GROUPS_MAX: usize = 256;

/// The longest mask file read, in bytes (a sysfs attribute is at most one page).
const MASK_FILE_BYTES_MAX: u64 = 4096;

/// Formats a set of CPUs as the kernel's bitmap text (what `xps_cpus` accepts).
/// CPUs at or beyond `MASK_GROUPS_MAX * 32` are refused.
pub fn format_cpu_mask(cpus: &[usize]) -> Result<String, SteeringError> {
    let highest = cpus.iter().copied().max().unwrap_or(0);
    let groups = highest / 32 + 1;
    if groups > MASK_GROUPS_MAX {
        return Err(SteeringError::BadCpuMask {
            text: format!("CPU {highest} is beyond {} CPUs", MASK_GROUPS_MAX * 32),
        });
    }
    let mut words = vec![0u32; groups];
    for &cpu in cpus {
        words[cpu / 32] |= 1 << (cpu % 32);
    }
    Ok(words
        .iter()
        .rev()
        .map(|word| format!("{word:08x}"))
        .collect::<Vec<_>>()
        .join(","))
}

/// Parses the kernel's bitmap text into the CPUs it names, ascending.
pub fn parse_cpu_mask(text: &str) -> Result<Vec<usize>, SteeringError> {
    let bad = || SteeringError::BadCpuMask {
        text: text.chars().take(80).collect(),
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(bad());
    }
    let groups: Vec<&str> = trimmed.split(',').collect();
    if groups.len() > MASK_GROUPS_MAX {
        return Err(bad());
    }
    let mut cpus = Vec::new();
    for (index_from_low, group) in groups.iter().rev().enumerate() {
        if group.is_empty() || group.len() > 8 {
            return Err(bad());
        }
        let word = u32::from_str_radix(group, 16).map_err(|_| bad())?;
        for bit in 0..32 {
            if word & (1 << bit) != 0 {
                cpus.push(index_from_low * 32 + bit);
            }
        }
    }
    cpus.sort_unstable();
    Ok(cpus)
}

fn queue_file(sysfs_net: &Path, interface: &str, queue_dir: &str, file: &str) -> PathBuf {
    sysfs_net
        .join(interface)
        .join("queues")
        .join(queue_dir)
        .join(file)
}

fn sysfs_error(path: PathBuf, source: io::Error) -> SteeringError {
    match source.kind() {
        io::ErrorKind::NotFound => SteeringError::SysfsAbsent { path },
        io::ErrorKind::PermissionDenied => SteeringError::SysfsPermission { path },
        _ => SteeringError::Sysfs { path, source },
    }
}

fn read_mask_file(path: PathBuf) -> Result<Vec<usize>, SteeringError> {
    let file = std::fs::File::open(&path).map_err(|e| sysfs_error(path.clone(), e))?;
    let mut text = String::new();
    file.take(MASK_FILE_BYTES_MAX)
        .read_to_string(&mut text)
        .map_err(|e| sysfs_error(path.clone(), e))?;
    parse_cpu_mask(&text)
}

/// Sets the CPUs whose sends use transmit queue `tx_queue` of `interface` (XPS).
pub fn set_xps(
    sysfs_net: &Path,
    interface: &str,
    tx_queue: u32,
    cpus: &[usize],
) -> Result<(), SteeringError> {
    let path = queue_file(sysfs_net, interface, &format!("tx-{tx_queue}"), "xps_cpus");
    let mask = format_cpu_mask(cpus)?;
    // Open without create: a missing file means no XPS on this device, never a new file.
    // Truncate as `echo mask > xps_cpus` does (sysfs ignores it; a fixture file needs it).
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| sysfs_error(path.clone(), e))?;
    io::Write::write_all(&mut file, format!("{mask}\n").as_bytes())
        .map_err(|e| sysfs_error(path, e))
}

/// The CPUs transmit queue `tx_queue` is bound to by XPS (empty: XPS not set).
pub fn read_xps(
    sysfs_net: &Path,
    interface: &str,
    tx_queue: u32,
) -> Result<Vec<usize>, SteeringError> {
    read_mask_file(queue_file(
        sysfs_net,
        interface,
        &format!("tx-{tx_queue}"),
        "xps_cpus",
    ))
}

/// The CPUs receive processing of `rx_queue` is steered to by RPS (empty: RPS off, so the
/// queue's packets are processed on the CPU its interrupt runs on).
pub fn read_rps_cpus(
    sysfs_net: &Path,
    interface: &str,
    rx_queue: u32,
) -> Result<Vec<usize>, SteeringError> {
    read_mask_file(queue_file(
        sysfs_net,
        interface,
        &format!("rx-{rx_queue}"),
        "rps_cpus",
    ))
}

/// What became of an attempt to set XPS (never fails a connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XpsOutcome {
    /// The mask was written.
    Set {
        /// The transmit queue.
        tx_queue: u32,
        /// The CPUs bound to it.
        cpus: Vec<usize>,
    },
    /// The device has no such file (single-queue device, or no such queue): XPS not possible.
    Absent(PathBuf),
    /// Writing needs root or `CAP_NET_ADMIN`.
    NotPermitted(PathBuf),
    /// Any other failure, as text.
    Failed(String),
}

impl fmt::Display for XpsOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XpsOutcome::Set { tx_queue, cpus } => write!(f, "XPS tx-{tx_queue} -> CPUs {cpus:?}"),
            XpsOutcome::Absent(path) => write!(f, "XPS not available ({} absent)", path.display()),
            XpsOutcome::NotPermitted(path) => {
                write!(
                    f,
                    "XPS not permitted (writing {} needs root)",
                    path.display()
                )
            }
            XpsOutcome::Failed(error) => write!(f, "XPS failed: {error}"),
        }
    }
}

/// [`set_xps`], with any failure turned into an outcome to report.
pub fn try_set_xps(sysfs_net: &Path, interface: &str, tx_queue: u32, cpus: &[usize]) -> XpsOutcome {
    match set_xps(sysfs_net, interface, tx_queue, cpus) {
        Ok(()) => XpsOutcome::Set {
            tx_queue,
            cpus: cpus.to_vec(),
        },
        Err(SteeringError::SysfsAbsent { path }) => XpsOutcome::Absent(path),
        Err(SteeringError::SysfsPermission { path }) => XpsOutcome::NotPermitted(path),
        Err(other) => XpsOutcome::Failed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Copies the fixture tree `tests/fixtures/sysfs-net` into a fresh temporary directory (so
    /// writes never touch the repository) and returns its path.
    fn fixture_copy(tag: &str) -> PathBuf {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sysfs-net");
        let target = std::env::temp_dir().join(format!(
            "steering-sysfs-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&target);
        copy_tree(&source, &target, 8);
        target
    }

    fn copy_tree(from: &Path, to: &Path, depth_left: u32) {
        assert!(depth_left > 0, "fixture tree too deep");
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let dest = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_tree(&entry.path(), &dest, depth_left - 1);
            } else {
                std::fs::copy(entry.path(), &dest).unwrap();
            }
        }
    }

    #[test]
    fn masks_format_like_the_kernel() {
        assert_eq!(format_cpu_mask(&[]).unwrap(), "00000000");
        assert_eq!(format_cpu_mask(&[0]).unwrap(), "00000001");
        assert_eq!(format_cpu_mask(&[0, 1, 32]).unwrap(), "00000001,00000003");
        assert!(format_cpu_mask(&[MASK_GROUPS_MAX * 32]).is_err());
    }

    #[test]
    fn masks_parse_like_the_kernel_prints_them() {
        assert_eq!(parse_cpu_mask("0\n").unwrap(), Vec::<usize>::new());
        assert_eq!(parse_cpu_mask("f\n").unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(parse_cpu_mask("00000001,00000003").unwrap(), vec![0, 1, 32]);
        assert!(parse_cpu_mask("").is_err());
        assert!(parse_cpu_mask("xyz").is_err());
        assert!(parse_cpu_mask("1,,2").is_err());
        assert!(parse_cpu_mask("123456789").is_err());
    }

    proptest! {
        #[test]
        fn masks_round_trip(cpus in proptest::collection::btree_set(0usize..512, 0..40)) {
            let cpus: Vec<usize> = cpus.into_iter().collect();
            let text = format_cpu_mask(&cpus).unwrap();
            prop_assert_eq!(parse_cpu_mask(&text).unwrap(), cpus);
        }
    }

    #[test]
    fn xps_is_written_and_read_back_in_a_fixture_tree() {
        let root = fixture_copy("xps");
        assert_eq!(read_xps(&root, "eth1", 2).unwrap(), Vec::<usize>::new());
        let outcome = try_set_xps(&root, "eth1", 2, &[2]);
        assert_eq!(
            outcome,
            XpsOutcome::Set {
                tx_queue: 2,
                cpus: vec![2]
            }
        );
        assert_eq!(
            std::fs::read_to_string(root.join("eth1/queues/tx-2/xps_cpus")).unwrap(),
            "00000004\n"
        );
        assert_eq!(read_xps(&root, "eth1", 2).unwrap(), vec![2]);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_missing_xps_file_is_absent_not_created() {
        let root = fixture_copy("absent");
        // The fixture's single-queue device has no xps_cpus, as on a real one.
        let outcome = try_set_xps(&root, "eth0", 0, &[0]);
        assert!(matches!(outcome, XpsOutcome::Absent(_)), "{outcome:?}");
        assert!(outcome.to_string().contains("absent"));
        assert!(!root.join("eth0/queues/tx-0/xps_cpus").exists());
        let outcome = try_set_xps(&root, "eth1", 9, &[0]);
        assert!(matches!(outcome, XpsOutcome::Absent(_)), "{outcome:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_read_only_xps_file_is_not_permitted() {
        use std::os::unix::fs::PermissionsExt;
        let root = fixture_copy("perm");
        let path = root.join("eth1/queues/tx-1/xps_cpus");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
        let outcome = try_set_xps(&root, "eth1", 1, &[1]);
        // Root ignores file modes: then the write goes through, which is also correct.
        let is_root = std::fs::OpenOptions::new().write(true).open(&path).is_ok();
        if is_root {
            assert!(matches!(outcome, XpsOutcome::Set { .. }), "{outcome:?}");
        } else {
            assert!(
                matches!(outcome, XpsOutcome::NotPermitted(_)),
                "{outcome:?}"
            );
            assert!(outcome.to_string().contains("needs root"));
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn io_errors_are_classified() {
        let path = PathBuf::from("/x");
        let denied = io::Error::from_raw_os_error(libc::EACCES);
        assert!(matches!(
            sysfs_error(path.clone(), denied),
            SteeringError::SysfsPermission { .. }
        ));
        let missing = io::Error::from_raw_os_error(libc::ENOENT);
        assert!(matches!(
            sysfs_error(path.clone(), missing),
            SteeringError::SysfsAbsent { .. }
        ));
        let other = io::Error::from_raw_os_error(libc::EINVAL);
        let error = sysfs_error(path, other);
        assert!(matches!(error, SteeringError::Sysfs { .. }));
        assert!(error.to_string().starts_with("/x: "), "{error}");
    }

    #[test]
    fn rps_cpus_are_read_from_the_fixture() {
        let root = fixture_copy("rps");
        assert_eq!(read_rps_cpus(&root, "eth1", 3).unwrap(), vec![3]);
        assert_eq!(
            read_rps_cpus(&root, "eth0", 0).unwrap(),
            Vec::<usize>::new()
        );
        assert!(matches!(
            read_rps_cpus(&root, "eth7", 0),
            Err(SteeringError::SysfsAbsent { .. })
        ));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
