//! `istgt` as a test peer.
//!
//! Quirks, found by running istgt 0.4 (20111008, Debian 12):
//! - Foreground is `istgt -D -c CONF` (`-H` prints usage; `-h` is not an option).
//! - Start-up fails without a `[UnitControl]` section ("istgt_init_uctl() failed"); a section
//!   with no `Portal` line disables the control listener, so only the iSCSI portal listens.
//! - A `TargetName` that starts with `iqn.`, `eui.` or `naa.` is used as is; anything else is
//!   prefixed with the global `NodeBase` and a colon ([`istgt_full_name`]).
//! - LUNs start at 0 (`LUN0 Storage FILE Auto`; `Auto` takes the size of an existing file).
//! - CHAP: `AuthMethod CHAP` plus `AuthGroup AuthGroupN` in the target's section; the auth
//!   file holds `[AuthGroupN]` with `Auth "user" "secret" "mutual-user" "mutual-secret"`.
//!   With plain `CHAP` the mutual step is the initiator's choice (`CHAP Mutual` would demand
//!   it). The auth file is read at each login.
//! - SIGTERM stops it cleanly, but only after 2.5-3 s (its threads poll once a second); as
//!   nothing it holds outlives the scratch directory, Drop gives it [`STOP_GRACE`] and then
//!   kills it.
//! - It answers the final Login request about one second late (measured: 1.0 s between
//!   Login Command and Login Response on loopback), so every libiscsi tool run against it
//!   takes a second: keep the number of logins in istgt tests small.
//! - It advances ExpCmdSN after an *immediate* Text request (RFC 7143 section 3.2.2.1 says
//!   immediate commands do not advance CmdSN). libiscsi then finds its Logout CmdSN below
//!   ExpCmdSN, refuses to send it and loops reconnecting: `iscsi-ls` hangs against istgt.
//!   Discovery against istgt must therefore be judged another way (the smoke tests capture
//!   the SendTargets reply and decode it with tshark).

use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use crate::process::{
    create_sparse_file, free_port, log_tail, spawn_daemon, stop_child, tool_path, wait_for_portal,
    TempDir,
};
use crate::{validate_targets, Peer, TargetSpec};

/// How long the daemon may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts with a fresh port when another process took ours first.
const START_ATTEMPTS: usize = 3;
/// How long Drop lets istgt exit on SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_millis(300);
/// The `NodeBase` written into every configuration (reserved `.invalid` domain).
pub const ISTGT_NODE_BASE: &str = "iqn.2024-01.invalid.system-tests.istgt";

/// The name istgt announces for a configured `TargetName`.
pub fn istgt_full_name(node_base: &str, target_name: &str) -> String {
    let lower = target_name.to_ascii_lowercase();
    if ["iqn.", "eui.", "naa."]
        .iter()
        .any(|prefix| lower.starts_with(prefix))
    {
        target_name.to_owned()
    } else {
        format!("{node_base}:{target_name}")
    }
}

/// A running `istgt` serving the targets it was started with. Dropping it stops the daemon
/// and removes its configuration and LUN files.
///
/// The daemon is tied to the thread that started it (the kernel kills it if that thread
/// exits): keep the `Istgt` in that thread.
#[derive(Debug)]
pub struct Istgt {
    child: Child,
    portal: SocketAddr,
    log: PathBuf,
    iqns: Vec<String>,
    lun_paths: Vec<Vec<PathBuf>>,
    // Declared last so it is removed after the daemon is stopped in `drop`.
    dir: TempDir,
}

impl Istgt {
    /// istgt numbers LUNs from 0.
    pub const FIRST_DATA_LUN: u64 = 0;

    /// Starts `istgt` on a free 127.0.0.1 port with `targets` (every target needs at least one
    /// LUN: istgt refuses a unit without LUN 0).
    pub fn start(targets: &[TargetSpec]) -> Result<Istgt, String> {
        validate_targets(targets)?;
        if let Some(index) = targets.iter().position(|target| target.luns.is_empty()) {
            return Err(format!("target {index}: istgt needs at least one LUN"));
        }
        let istgt = tool_path("istgt").ok_or("istgt is not installed")?;
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            match Istgt::start_once(&istgt, targets) {
                Ok(started) => return Ok(started),
                Err(StartError::PortTaken(error)) => last_error = error,
                Err(StartError::Fatal(error)) => return Err(error),
            }
        }
        Err(last_error)
    }

    fn start_once(istgt: &Path, targets: &[TargetSpec]) -> Result<Istgt, StartError> {
        let dir = TempDir::new("istgt").map_err(StartError::Fatal)?;
        let log = dir.join("istgt.log");
        let portal = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));

        let mut lun_paths = Vec::with_capacity(targets.len());
        for (target_index, target) in targets.iter().enumerate() {
            let mut paths = Vec::with_capacity(target.luns.len());
            for (lun_index, lun) in target.luns.iter().enumerate() {
                let path = dir.join(format!("target{target_index}-lun{lun_index}.img"));
                create_sparse_file(&path, lun.size_bytes).map_err(StartError::Fatal)?;
                paths.push(path);
            }
            lun_paths.push(paths);
        }

        let files = IstgtFiles {
            pid_file: dir.join("istgt.pid"),
            auth_file: dir.join("auth.conf"),
            media_dir: dir.path().to_path_buf(),
        };
        let (config, auth) = istgt_config(portal, targets, &lun_paths, &files);
        let config_path = dir.join("istgt.conf");
        fs::write(&config_path, config)
            .and_then(|()| fs::write(&files.auth_file, auth))
            .map_err(|e| StartError::Fatal(format!("writing istgt config: {e}")))?;

        let mut command = Command::new(istgt);
        command.arg("-D").arg("-c").arg(&config_path);
        let child = spawn_daemon(command, &log).map_err(StartError::Fatal)?;
        let mut started = Istgt {
            child,
            portal,
            log,
            iqns: targets
                .iter()
                .map(|target| istgt_full_name(ISTGT_NODE_BASE, &target.iqn))
                .collect(),
            lun_paths,
            dir,
        };
        if let Err(error) = wait_for_portal(&mut started.child, portal, START_TIMEOUT) {
            let message = format!("istgt did not come up: {error}\n{}", started.log());
            return Err(StartError::PortTaken(message));
        }
        Ok(started)
    }

    /// The portal (127.0.0.1 and this instance's port).
    pub fn portal(&self) -> SocketAddr {
        self.portal
    }

    /// The full name of target `target` (index into the specs) as istgt announces it.
    pub fn iqn(&self, target: usize) -> &str {
        &self.iqns[target]
    }

    /// The backing file of LUN `lun` of target `target` (indexes into the specs). Panics on an
    /// index outside the specs, which is a bug in the test.
    pub fn lun_path(&self, target: usize, lun: usize) -> PathBuf {
        self.lun_paths[target][lun].clone()
    }

    /// 0: see [`Istgt::FIRST_DATA_LUN`].
    pub fn first_data_lun(&self) -> u64 {
        Istgt::FIRST_DATA_LUN
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        log_tail(&self.log)
    }

    /// The scratch directory holding the configuration, LUN files and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Peer for Istgt {
    fn software(&self) -> &'static str {
        "istgt"
    }
    fn portal(&self) -> SocketAddr {
        Istgt::portal(self)
    }
    fn iqn(&self, target: usize) -> &str {
        Istgt::iqn(self, target)
    }
    fn first_data_lun(&self) -> u64 {
        Istgt::FIRST_DATA_LUN
    }
    fn lun_path(&self, target: usize, lun: usize) -> PathBuf {
        Istgt::lun_path(self, target, lun)
    }
    fn log(&self) -> String {
        Istgt::log(self)
    }
}

impl Drop for Istgt {
    fn drop(&mut self) {
        stop_child(&mut self.child, STOP_GRACE);
    }
}

/// Where the files named in an istgt configuration live.
#[derive(Debug, Clone)]
pub struct IstgtFiles {
    /// `PidFile`.
    pub pid_file: PathBuf,
    /// `AuthFile` (CHAP secrets).
    pub auth_file: PathBuf,
    /// `MediaDirectory` (removable media; unused, but it must not point at /var/istgt).
    pub media_dir: PathBuf,
}

/// The main configuration and the auth file for `targets` on `portal`; `lun_paths[t][l]` is
/// the backing file of LUN `l` of target `t`. Target `t` is `[LogicalUnit<t+1>]`; its CHAP
/// credentials are `[AuthGroup<t+1>]`.
pub fn istgt_config(
    portal: SocketAddr,
    targets: &[TargetSpec],
    lun_paths: &[Vec<PathBuf>],
    files: &IstgtFiles,
) -> (String, String) {
    let mut config = String::new();
    let mut auth = String::new();
    // `writeln!` into a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(
        config,
        "[Global]\n  NodeBase \"{ISTGT_NODE_BASE}\"\n  PidFile \"{}\"\n  AuthFile \"{}\"\n  \
         MediaDirectory \"{}\"\n  Timeout 30\n  NopInInterval 20\n  DiscoveryAuthMethod Auto\n  \
         MaxSessions 16\n  MaxConnections 4\n  MaxR2T 32\n  MaxOutstandingR2T 16\n  \
         DefaultTime2Wait 2\n  DefaultTime2Retain 60\n  FirstBurstLength 262144\n  \
         MaxBurstLength 1048576\n  MaxRecvDataSegmentLength 262144\n  InitialR2T Yes\n  \
         ImmediateData Yes\n  DataPDUInOrder Yes\n  DataSequenceInOrder Yes\n  \
         ErrorRecoveryLevel 0\n",
        files.pid_file.display(),
        files.auth_file.display(),
        files.media_dir.display(),
    );
    // Required by istgt; no Portal line means no control listener.
    let _ = writeln!(config, "[UnitControl]\n  AuthMethod CHAP Mutual\n");
    let _ = writeln!(config, "[PortalGroup1]\n  Portal DA1 {portal}\n");
    let _ = writeln!(
        config,
        "[InitiatorGroup1]\n  InitiatorName \"ALL\"\n  Netmask 127.0.0.0/8\n"
    );
    for (index, target) in targets.iter().enumerate() {
        let unit = index + 1;
        let _ = writeln!(
            config,
            "[LogicalUnit{unit}]\n  TargetName \"{}\"\n  Mapping PortalGroup1 InitiatorGroup1\n  \
             UseDigest Auto\n  UnitType Disk",
            target.iqn
        );
        match &target.chap {
            Some(chap) => {
                let _ = writeln!(config, "  AuthMethod CHAP\n  AuthGroup AuthGroup{unit}");
                let _ = write!(
                    auth,
                    "[AuthGroup{unit}]\n  Auth \"{}\" \"{}\"",
                    chap.user, chap.secret
                );
                if let Some((user, secret)) = &chap.mutual {
                    let _ = write!(auth, " \"{user}\" \"{secret}\"");
                }
                let _ = writeln!(auth, "\n");
            }
            None => {
                let _ = writeln!(config, "  AuthMethod None");
            }
        }
        for (lun, path) in lun_paths[index].iter().enumerate() {
            let _ = writeln!(config, "  LUN{lun} Storage \"{}\" Auto", path.display());
        }
        let _ = writeln!(config);
    }
    (config, auth)
}

enum StartError {
    /// The daemon did not come up, most likely because the port was taken: retry.
    PortTaken(String),
    /// Anything else: give up.
    Fatal(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChapSpec;

    #[test]
    fn short_target_names_get_the_node_base_and_full_names_stay() {
        assert_eq!(
            istgt_full_name("iqn.2024-01.x", "disk1"),
            "iqn.2024-01.x:disk1"
        );
        assert_eq!(
            istgt_full_name("iqn.2024-01.x", "iqn.2024-01.y:d"),
            "iqn.2024-01.y:d"
        );
        assert_eq!(
            istgt_full_name("iqn.2024-01.x", "EUI.0123456789abcdef"),
            "EUI.0123456789abcdef"
        );
        assert_eq!(istgt_full_name("iqn.2024-01.x", "naa.5000"), "naa.5000");
    }

    #[test]
    fn config_maps_each_target_to_a_unit_with_its_luns_and_auth_group() {
        let targets = [
            TargetSpec::new("iqn.2024-01.test:open", &[512, 1024]),
            TargetSpec::new("iqn.2024-01.test:chap", &[512]).with_chap(
                ChapSpec::new("alice", "alicesecret12").with_mutual("tgt", "tgtsecret123"),
            ),
        ];
        let lun_paths = vec![
            vec![PathBuf::from("/d/a0"), PathBuf::from("/d/a1")],
            vec![PathBuf::from("/d/b0")],
        ];
        let files = IstgtFiles {
            pid_file: "/d/pid".into(),
            auth_file: "/d/auth".into(),
            media_dir: "/d".into(),
        };
        let portal: SocketAddr = "127.0.0.1:4321".parse().unwrap();
        let (config, auth) = istgt_config(portal, &targets, &lun_paths, &files);
        assert!(config.contains("Portal DA1 127.0.0.1:4321"));
        assert!(config.contains("[LogicalUnit1]\n  TargetName \"iqn.2024-01.test:open\"\n"));
        assert!(config.contains(
            "  AuthMethod None\n  LUN0 Storage \"/d/a0\" Auto\n  LUN1 Storage \"/d/a1\" Auto\n"
        ));
        assert!(config.contains("[LogicalUnit2]"));
        assert!(config
            .contains("AuthMethod CHAP\n  AuthGroup AuthGroup2\n  LUN0 Storage \"/d/b0\" Auto"));
        assert_eq!(
            auth,
            "[AuthGroup2]\n  Auth \"alice\" \"alicesecret12\" \"tgt\" \"tgtsecret123\"\n\n"
        );
    }
}
