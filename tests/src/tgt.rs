//! `tgtd`, the Linux SCSI target framework daemon, as a test peer.
//!
//! Quirks, found by running tgt 1.0.85 (Debian 12):
//! - `tgtd -f` stays in the foreground and logs to stderr; `--iscsi portal=127.0.0.1:PORT`
//!   makes it listen on that address only (no 0.0.0.0:3260).
//! - The management channel is a Unix socket named `$TGT_IPC_SOCKET.<control port>`
//!   (default `/var/run/tgtd/socket.0`), plus a `.lock` file. Both `tgtd` and `tgtadm` read
//!   `TGT_IPC_SOCKET`, so each instance here keeps its socket in its own scratch directory
//!   and never meets a system `tgtd` or another test. `-C N` only changes the suffix.
//! - Each target gets a controller (peripheral type 0x0c) at LUN 0; backing stores are added
//!   from LUN 1, so [`Tgt::FIRST_DATA_LUN`] is 1.
//! - Accounts are global to the daemon and then bound to targets; a plain bind is the
//!   IncomingUser (the initiator's CHAP), `--outgoing` the OutgoingUser (mutual CHAP). Mutual
//!   is the initiator's choice. Discovery sessions demand no CHAP, so a libiscsi URL that asks
//!   for mutual CHAP fails discovery ("did not return CHAP_N during SECNEG"): use mutual
//!   credentials only on normal sessions.
//! - `tgtd` ignores SIGTERM and SIGINT; it exits on `tgtadm --op delete --mode system` once
//!   its targets are deleted. Drop does that, then SIGKILL if needed.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use crate::process::{
    create_sparse_file, describe_output, free_port, log_tail, run_command, spawn_daemon,
    stop_child, tool_path, wait_for_path, wait_for_portal, TempDir,
};
use crate::{validate_targets, Peer, TargetSpec};

/// How long the daemon may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one `tgtadm` call (they take milliseconds).
const TGTADM_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts with a fresh port when another process took ours first.
const START_ATTEMPTS: usize = 3;
/// The control "port" number: only a file-name suffix here, since the socket lives in our
/// own directory.
const CONTROL_PORT: &str = "0";
/// Backing-store I/O threads per LUN (tgtd's default is 16, a lot on a 2-core CI machine).
const IO_THREADS: &str = "4";

/// A running `tgtd` serving the targets it was started with. Dropping it stops the daemon
/// and removes its LUN files.
///
/// The daemon is tied to the thread that started it (the kernel kills it if that thread
/// exits, so a crashed test leaves nothing behind): keep the `Tgt` in that thread.
#[derive(Debug)]
pub struct Tgt {
    child: Child,
    portal: SocketAddr,
    ipc_socket: PathBuf,
    log: PathBuf,
    iqns: Vec<String>,
    lun_paths: Vec<Vec<PathBuf>>,
    // Declared last so it is removed after the daemon is stopped in `drop`.
    dir: TempDir,
}

impl Tgt {
    /// tgt puts a controller at LUN 0 and the first backing store at LUN 1.
    pub const FIRST_DATA_LUN: u64 = 1;

    /// Starts `tgtd` on a free 127.0.0.1 port with `targets` (tids 1, 2, … in order), each
    /// LUN backed by a fresh sparse file, all initiator addresses allowed, CHAP as specified.
    pub fn start(targets: &[TargetSpec]) -> Result<Tgt, String> {
        Tgt::start_at(Ipv4Addr::LOCALHOST, targets)
    }

    /// As [`Tgt::start`], listening on another loopback address (`127.0.0.2`, …): tgt
    /// redirects a login only when the redirect address differs from the initiator's, which
    /// on loopback is 127.0.0.1, so a redirect test needs its real portal elsewhere.
    pub fn start_at(ip: Ipv4Addr, targets: &[TargetSpec]) -> Result<Tgt, String> {
        validate_targets(targets)?;
        let tgtd = tool_path("tgtd").ok_or("tgtd is not installed")?;
        tool_path("tgtadm").ok_or("tgtadm is not installed")?;
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            match Tgt::start_once(&tgtd, ip, targets) {
                Ok(tgt) => return Ok(tgt),
                Err(StartError::PortTaken(error)) => last_error = error,
                Err(StartError::Fatal(error)) => return Err(error),
            }
        }
        Err(last_error)
    }

    fn start_once(tgtd: &Path, ip: Ipv4Addr, targets: &[TargetSpec]) -> Result<Tgt, StartError> {
        let dir = TempDir::new("tgt").map_err(StartError::Fatal)?;
        let ipc_socket = dir.join("tgtd-ipc");
        let log = dir.join("tgtd.log");
        let portal = SocketAddr::from((ip, free_port()));

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

        let mut command = Command::new(tgtd);
        command
            .args(["-f", "-C", CONTROL_PORT, "-t", IO_THREADS, "--iscsi"])
            .arg(format!("portal={portal}"))
            .env("TGT_IPC_SOCKET", &ipc_socket);
        let child = spawn_daemon(command, &log).map_err(StartError::Fatal)?;
        let mut tgt = Tgt {
            child,
            portal,
            ipc_socket,
            log,
            iqns: targets.iter().map(|target| target.iqn.clone()).collect(),
            lun_paths,
            dir,
        };

        let socket_path = tgt.control_socket_path();
        if let Err(error) = wait_for_portal(&mut tgt.child, portal, START_TIMEOUT)
            .and_then(|()| wait_for_path(&mut tgt.child, &socket_path, START_TIMEOUT))
        {
            let message = format!("tgtd did not come up: {error}\n{}", tgt.log());
            // A daemon that died at start-up most likely lost the race for the port.
            return Err(StartError::PortTaken(message));
        }
        tgt.configure(targets).map_err(|error| {
            StartError::Fatal(format!("configuring tgtd: {error}\n{}", tgt.log()))
        })?;
        Ok(tgt)
    }

    fn control_socket_path(&self) -> PathBuf {
        let mut name = self.ipc_socket.clone().into_os_string();
        name.push(".");
        name.push(CONTROL_PORT);
        PathBuf::from(name)
    }

    fn configure(&self, targets: &[TargetSpec]) -> Result<(), String> {
        // Accounts are global to the daemon: create each once, refuse one name with two secrets.
        let mut accounts: HashMap<&str, &str> = HashMap::new();
        for (index, target) in targets.iter().enumerate() {
            let tid = (index + 1).to_string();
            self.tgtadm_iscsi(
                "target",
                "new",
                &["--tid", &tid, "--targetname", &target.iqn],
            )?;
            for (lun_index, path) in self.lun_paths[index].iter().enumerate() {
                let lun = (Tgt::FIRST_DATA_LUN + lun_index as u64).to_string();
                let path = path.to_str().ok_or("LUN path is not UTF-8")?;
                let options = ["--tid", &tid, "--lun", &lun, "--backing-store", path];
                self.tgtadm_iscsi("logicalunit", "new", &options)?;
            }
            let options = ["--tid", &tid, "--initiator-address", "ALL"];
            self.tgtadm_iscsi("target", "bind", &options)?;
            let Some(chap) = &target.chap else { continue };
            let mut bindings = vec![(chap.user.as_str(), chap.secret.as_str(), false)];
            if let Some((user, secret)) = &chap.mutual {
                bindings.push((user.as_str(), secret.as_str(), true));
            }
            for (user, secret, outgoing) in bindings {
                match accounts.get(user) {
                    Some(&known) if known != secret => {
                        return Err(format!(
                        "CHAP user {user} has two different secrets; tgt accounts are per daemon"
                    ))
                    }
                    Some(_) => {}
                    None => {
                        let options = ["--user", user, "--password", secret];
                        self.tgtadm_iscsi("account", "new", &options)?;
                        accounts.insert(user, secret);
                    }
                }
                // A plain bind makes the IncomingUser; --outgoing the OutgoingUser (mutual).
                let mut options = vec!["--tid", &tid, "--user", user];
                if outgoing {
                    options.push("--outgoing");
                }
                self.tgtadm_iscsi("account", "bind", &options)?;
            }
        }
        Ok(())
    }

    /// `tgtadm --lld iscsi --mode MODE --op OP OPTIONS…` against this daemon.
    pub fn tgtadm_iscsi(&self, mode: &str, op: &str, options: &[&str]) -> Result<String, String> {
        let mut args = vec!["--lld", "iscsi", "--mode", mode, "--op", op];
        args.extend_from_slice(options);
        self.tgtadm(&args)
    }

    /// Lets target `tid` negotiate CRC32C digests and InitialR2T=No: tgt offers neither
    /// unless told, so an initiator's offer of them would otherwise be refused.
    pub fn allow_digests_and_unsolicited_data(&self, tid: usize) -> Result<(), String> {
        let tid = tid.to_string();
        for (key, value) in [
            ("HeaderDigest", "CRC32C,None"),
            ("DataDigest", "CRC32C,None"),
            ("InitialR2T", "No"),
        ] {
            self.tgtadm(&[
                "--lld", "iscsi", "--op", "update", "--mode", "target", "--tid", &tid, "--name",
                key, "--value", value,
            ])?;
        }
        Ok(())
    }

    /// Closes, from the target side, the connection of the session of target 1 that tgt
    /// handed `tsih`, and gives tgtd a moment to tear it down.
    pub fn close_session(&self, tsih: u16) -> Result<(), String> {
        // tgt copies its session id into the TSIH field in host byte order (iscsid.c,
        // `rsp->tsih = conn->tsih`, no cpu_to_be16): on a little-endian host the TSIH we
        // decode is the id with its bytes swapped. The TSIH is opaque to an initiator, so
        // this is harmless on the wire; only this mapping has to know.
        let sid = u16::from_le_bytes(tsih.to_be_bytes()).to_string();
        self.tgtadm_iscsi(
            "connection",
            "delete",
            &["--tid", "1", "--sid", &sid, "--cid", "0"],
        )
        .map_err(|e| format!("closing session {sid}: {e}"))?;
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }

    /// Makes target `tid` redirect logins (tgt's `RedirectAddress`, `RedirectPort` and
    /// `RedirectReason`: `Temporary` or `Permanent`) to `to`, unless they come from `to`'s
    /// own address.
    pub fn redirect(&self, tid: usize, to: SocketAddr, reason: &str) -> Result<(), String> {
        let tid = tid.to_string();
        let (ip, port) = (to.ip().to_string(), to.port().to_string());
        for (key, value) in [
            ("RedirectAddress", ip.as_str()),
            ("RedirectPort", port.as_str()),
            ("RedirectReason", reason),
        ] {
            self.tgtadm_iscsi(
                "target",
                "update",
                &["--tid", &tid, "--name", key, "--value", value],
            )?;
        }
        Ok(())
    }

    /// The number of connections target `tid` holds (`tgtadm --mode conn --op show`).
    pub fn connections(&self, tid: usize) -> Result<usize, String> {
        let shown = self.tgtadm_iscsi("conn", "show", &["--tid", &tid.to_string()])?;
        Ok(shown
            .lines()
            .filter(|line| line.trim_start().starts_with("Connection:"))
            .count())
    }

    /// Makes LUN `lun` of target `tid` the file `backing` (for two daemons exporting one
    /// LU: multipath tests) and gives it the identity `scsi_id` / `scsi_sn` (tgt's
    /// `--params`, which its INQUIRY VPD pages 0x80 and 0x83 report).
    pub fn share_lun(
        &self,
        tid: usize,
        lun: u64,
        backing: &Path,
        scsi_id: &str,
        scsi_sn: &str,
    ) -> Result<(), String> {
        let (tid, lun) = (tid.to_string(), lun.to_string());
        let backing = backing.to_str().ok_or("backing path is not UTF-8")?;
        self.tgtadm_iscsi("logicalunit", "delete", &["--tid", &tid, "--lun", &lun])?;
        let new = ["--tid", &tid, "--lun", &lun, "--backing-store", backing];
        self.tgtadm_iscsi("logicalunit", "new", &new)?;
        let params = format!("scsi_id={scsi_id},scsi_sn={scsi_sn}");
        let update = ["--tid", &tid, "--lun", &lun, "--params", &params];
        self.tgtadm_iscsi("logicalunit", "update", &update)?;
        Ok(())
    }

    /// Kills the daemon at once (SIGKILL): its connections reset, as when a storage
    /// controller dies. Dropping the `Tgt` afterwards still cleans up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Runs `tgtadm` against this daemon's own control socket.
    pub fn tgtadm(&self, args: &[&str]) -> Result<String, String> {
        let tgtadm = tool_path("tgtadm").ok_or("tgtadm is not installed")?;
        let mut command = Command::new(tgtadm);
        command
            .args(["-C", CONTROL_PORT])
            .args(args)
            .env("TGT_IPC_SOCKET", &self.ipc_socket);
        let output = run_command(command, TGTADM_TIMEOUT);
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!(
                "tgtadm {}: {}",
                args.join(" "),
                describe_output(&output)
            ))
        }
    }

    /// The portal (127.0.0.1 and this instance's port).
    pub fn portal(&self) -> SocketAddr {
        self.portal
    }

    /// The name of target `target` (index into the specs).
    pub fn iqn(&self, target: usize) -> &str {
        &self.iqns[target]
    }

    /// The backing file of LUN `lun` of target `target` (indexes into the specs). Panics on an
    /// index outside the specs, which is a bug in the test.
    pub fn lun_path(&self, target: usize, lun: usize) -> PathBuf {
        self.lun_paths[target][lun].clone()
    }

    /// 1: see [`Tgt::FIRST_DATA_LUN`].
    pub fn first_data_lun(&self) -> u64 {
        Tgt::FIRST_DATA_LUN
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        log_tail(&self.log)
    }

    /// The scratch directory holding the LUN files, log and control socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Peer for Tgt {
    fn software(&self) -> &'static str {
        "tgt"
    }
    fn portal(&self) -> SocketAddr {
        Tgt::portal(self)
    }
    fn iqn(&self, target: usize) -> &str {
        Tgt::iqn(self, target)
    }
    fn first_data_lun(&self) -> u64 {
        Tgt::FIRST_DATA_LUN
    }
    fn lun_path(&self, target: usize, lun: usize) -> PathBuf {
        Tgt::lun_path(self, target, lun)
    }
    fn log(&self) -> String {
        Tgt::log(self)
    }
}

impl Drop for Tgt {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // tgtd ignores SIGTERM; the orderly way out is to delete the targets, then the system.
            for tid in 1..=self.iqns.len() {
                let tid = tid.to_string();
                let _ = self.tgtadm_iscsi("target", "delete", &["--force", "--tid", &tid]);
            }
            let _ = self.tgtadm(&["--mode", "system", "--op", "delete"]);
        }
        stop_child(&mut self.child, Duration::from_secs(2));
    }
}

enum StartError {
    /// The daemon did not come up, most likely because the port was taken: retry.
    PortTaken(String),
    /// Anything else: give up.
    Fatal(String),
}
