//! Harness for whole-system tests against iSCSI peers this project did not write.
//!
//! DESIGN.md rule 6: real peers are the judge. This crate starts them, each on its own free
//! loopback port with its own LUN files, control channel and scratch directory, so tests run
//! in parallel without colliding, and removes everything again on drop:
//!
//! - [`Tgt`]: the Linux SCSI target framework daemon (`tgtd`, configured through `tgtadm`).
//! - [`Istgt`]: the FreeBSD-born `istgt` (configured through its config files).
//! - [`Capture`]: a `dumpcap` capture of one port, judged afterwards by Wireshark's iSCSI
//!   dissector ([`tshark_iscsi_problems`], [`tshark_iscsi_opcodes`]).
//! - [`libiscsi`]: URLs for and parsers of libiscsi's command-line tools (`iscsi-ls`,
//!   `iscsi-inq`, `iscsi-readcapacity16`), the reference initiator.
//! - [`cunit`]: libiscsi's `iscsi-test-cu` run per family, its verdicts and skip notices.
//! - [`fake_target`]: pieces of scripted fake targets.
//! - [`endpoint_fixture`]: a gateway with a pool and a protocol endpoint, binds, and the
//!   helpers the endpoint tests share.
//! - [`gateway_process`]: our `iscsi-gateway` as a child process (signals, restarts, log
//!   lines), its memory and CPU.
//! - [`paused_fuse`]: a file on a FUSE mount whose daemon can be stopped (a hung backing
//!   store).
//! - [`hostile`]: hostile clients (floods, slow readers, idle and slowloris connections)
//!   and the judges beside them (a healthy session's latency, the gateway's memory).
//! - [`scsi_io`]: SCSI I/O through an adapter path or a shard, write-then-verify, the
//!   offload models' faults.
//! - [`run_tool`], [`free_port`], [`require_tools!`]: bounded subprocesses, ports, and the
//!   skip-locally / fail-under-CI rule for missing peer binaries.
//!
//! ```no_run
//! use system_tests::{require_tools, tshark_iscsi_opcodes, tshark_iscsi_problems};
//! use system_tests::{Capture, Peer, TargetSpec, Tgt};
//!
//! fn reads_what_tgt_serves() {
//!     require_tools!("tgtd", "tgtadm", "dumpcap", "tshark");
//!     let tgt = Tgt::start(&[TargetSpec::new("iqn.2024-01.invalid.example:disk", &[8 << 20])])
//!         .expect("tgt starts");
//!     let port = tgt.portal().port();
//!     let capture = Capture::start(port);
//!     // ... log in to tgt.portal(), target tgt.iqn(0), LUN tgt.lun_number(0) ...
//!     let pcap = capture.stop();
//!     assert!(!tshark_iscsi_opcodes(&pcap, port).unwrap().is_empty());
//!     assert_eq!(tshark_iscsi_problems(&pcap, port), Vec::<String>::new());
//! }
//! ```
//!
//! Peer quirks this harness absorbs (found by running them; see each type for details):
//! tgt exposes a controller at LUN 0 and the backing stores from LUN 1, istgt from LUN 0
//! ([`Peer::first_data_lun`]); tgtd ignores SIGTERM; istgt advances ExpCmdSN on immediate
//! Text requests, which makes `iscsi-ls` hang against it.

pub mod capture;
pub mod cluster;
pub mod cunit;
pub mod endpoint_fixture;
pub mod failover;
pub mod fake_target;
pub mod gateway_ctl;
pub mod gateway_process;
pub mod hostile;
pub mod istgt;
pub mod libiscsi;
pub mod netns;
pub mod paused_fuse;
pub mod process;
pub mod scsi_io;
pub mod stall;
pub mod tgt;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use capture::{
    tshark_iscsi_key_values, tshark_iscsi_opcodes, tshark_iscsi_problems, Capture, Pcap,
};
pub use gateway_process::{gateway_binary, GatewayProcess};
pub use istgt::Istgt;
pub use process::{
    describe_output, fio_anchor, free_port, require_facility, require_tools, run_command, run_tool,
    running_in_ci, tool_available, tool_path, tool_verdict, workspace_binary,
    workspace_binary_release, TempDir, ToolVerdict,
};
pub use tgt::Tgt;

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Block size both peers use for file-backed LUNs; LUN sizes must be a multiple of it.
pub const LUN_BLOCK_BYTES: u64 = 512;

/// One logical unit, backed by a sparse file in the peer's scratch directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunSpec {
    /// Capacity in bytes: non-zero and a multiple of [`LUN_BLOCK_BYTES`].
    pub size_bytes: u64,
}

/// CHAP (RFC 1994, RFC 7143 section 12.1.3) credentials a target demands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChapSpec {
    /// The name the initiator presents (CHAP_N).
    pub user: String,
    /// The secret the initiator proves it knows.
    pub secret: String,
    /// For mutual CHAP: (target user, target secret), the name and secret the target answers
    /// with when the initiator challenges it. Both peers make the mutual step the initiator's
    /// choice: an initiator that does not challenge still logs in.
    pub mutual: Option<(String, String)>,
}

/// One target node with its LUNs and optional CHAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    /// Full target name (`iqn.…`); lower case, as RFC 3722 normalises them.
    pub iqn: String,
    /// Logical units in order; the first gets [`Peer::first_data_lun`].
    pub luns: Vec<LunSpec>,
    /// CHAP the target demands at login; discovery sessions stay open to all.
    pub chap: Option<ChapSpec>,
}

impl TargetSpec {
    /// A target with LUNs of the given sizes and no CHAP.
    pub fn new(iqn: &str, lun_sizes_bytes: &[u64]) -> TargetSpec {
        TargetSpec {
            iqn: iqn.to_owned(),
            luns: lun_sizes_bytes
                .iter()
                .map(|&size_bytes| LunSpec { size_bytes })
                .collect(),
            chap: None,
        }
    }

    /// The same target demanding CHAP.
    pub fn with_chap(mut self, chap: ChapSpec) -> TargetSpec {
        self.chap = Some(chap);
        self
    }
}

impl ChapSpec {
    /// One-way CHAP.
    pub fn new(user: &str, secret: &str) -> ChapSpec {
        ChapSpec {
            user: user.to_owned(),
            secret: secret.to_owned(),
            mutual: None,
        }
    }

    /// The same credentials with mutual CHAP: the target answers as `target_user`.
    pub fn with_mutual(mut self, target_user: &str, target_secret: &str) -> ChapSpec {
        self.mutual = Some((target_user.to_owned(), target_secret.to_owned()));
        self
    }
}

/// Checks specs before any daemon starts, so a bad spec is a clear error, not a daemon log.
pub(crate) fn validate_targets(targets: &[TargetSpec]) -> Result<(), String> {
    if targets.is_empty() {
        return Err("at least one target is needed".into());
    }
    for (index, target) in targets.iter().enumerate() {
        if !process::is_plain_token(&target.iqn) {
            return Err(format!(
                "target {index}: name {:?} must be non-empty printable ASCII without spaces or quotes",
                target.iqn
            ));
        }
        if targets[..index]
            .iter()
            .any(|earlier| earlier.iqn == target.iqn)
        {
            return Err(format!("target {index}: name {} is used twice", target.iqn));
        }
        for (lun, spec) in target.luns.iter().enumerate() {
            if spec.size_bytes == 0 || spec.size_bytes % LUN_BLOCK_BYTES != 0 {
                return Err(format!(
                    "target {index} LUN {lun}: size {} must be a non-zero multiple of {LUN_BLOCK_BYTES}",
                    spec.size_bytes
                ));
            }
        }
        if let Some(chap) = &target.chap {
            let mut fields = vec![&chap.user, &chap.secret];
            if let Some((user, secret)) = &chap.mutual {
                fields.push(user);
                fields.push(secret);
            }
            // The libiscsi URL syntax (user%secret@host) cannot carry these characters.
            if let Some(bad) = fields.iter().find(|field| {
                !process::is_plain_token(field) || field.contains(['%', '@', '/', '?', '&', '='])
            }) {
                return Err(format!(
                    "target {index}: CHAP field {bad:?} must be plain printable ASCII without % @ / ? & ="
                ));
            }
        }
    }
    Ok(())
}

/// What every peer harness exposes, so one test body can run against each of them.
pub trait Peer {
    /// Short name of the peer software (`"tgt"`, `"istgt"`), for messages.
    fn software(&self) -> &'static str;
    /// The portal the target listens on (127.0.0.1, a free port).
    fn portal(&self) -> SocketAddr;
    /// The full name of target `target` (index into the specs) as the peer announces it.
    fn iqn(&self, target: usize) -> &str;
    /// The LUN number of the first LUN of a spec.
    fn first_data_lun(&self) -> u64;
    /// The backing file of LUN `lun` (index into the target's specs) of target `target`.
    fn lun_path(&self, target: usize, lun: usize) -> PathBuf;
    /// The daemon's log so far (its stdout and stderr), for failure messages.
    fn log(&self) -> String;
    /// The LUN number of LUN `lun` (index into the specs).
    fn lun_number(&self, lun: usize) -> u64 {
        self.first_data_lun() + lun as u64
    }
}

/// Deterministic pseudo-random bytes (xorshift64), different per seed: test data whose
/// every block differs, so data written to the wrong place cannot pass a comparison.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_with_bad_sizes_names_or_credentials_are_refused() {
        let good = TargetSpec::new("iqn.2024-01.test:a", &[4096]);
        assert!(validate_targets(std::slice::from_ref(&good)).is_ok());
        assert!(validate_targets(&[]).is_err());
        assert!(validate_targets(&[TargetSpec::new("iqn.2024-01.test:a", &[1000])]).is_err());
        assert!(validate_targets(&[TargetSpec::new("iqn.2024-01.test:a", &[0])]).is_err());
        assert!(validate_targets(&[TargetSpec::new("iqn with space", &[512])]).is_err());
        assert!(validate_targets(&[good.clone(), good.clone()]).is_err());
        let bad_secret = good.clone().with_chap(ChapSpec::new("user", "se%cret"));
        assert!(validate_targets(&[bad_secret]).is_err());
        let quoted_mutual = good.with_chap(ChapSpec::new("user", "secret").with_mutual("t\"", "s"));
        assert!(validate_targets(&[quoted_mutual]).is_err());
    }
}
