//! Every fio `verify=` checksum, beside fio. Our verify header is not fio's
//! (`bench/src/workload/verify.rs`), so neither tool can read the other's blocks; what the two
//! share is each checksum's algorithm. So, per kind:
//! (a) the blocks fio writes carry, in fio's own header, the digest `ChecksumKind` computes
//!     over fio's data (Debian's fio 3.33 and, where built, fio 3.42, whose headers differ);
//! (b) iscsi-bench writes and verifies a file with it (io_uring), and a later `verify_only`
//!     run verifies the file again;
//! (c) one flipped byte fails that run, naming the byte's offset and the kind.
//! Skipped (loudly) where fio is missing, a failure under CI.

mod common;

use common::{describe, ScratchDir};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bench::workload::ChecksumKind;

/// fio's magic at the start of every verify header (verify.h: `FIO_HDR_MAGIC`), as stored.
const FIO_MAGIC: [u8; 2] = 0xaccau16.to_le_bytes();
/// The version byte fio 3.41 and later put after the magic (verify.h:
/// `VERIFY_HEADER_VERSION`), with a 64-bit `numberio` that grew the header from 40 bytes to 48.
const FIO_HEADER_VERSION: u8 = 0x81;
const BLOCK_BYTES: usize = 4096;

/// An installed fio and its (major, minor) version.
struct Fio {
    path: PathBuf,
    version: (u32, u32),
}

impl Fio {
    fn find(path: &Path) -> Option<Fio> {
        let out = Command::new(path).arg("--version").output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (major, minor) = text.trim().strip_prefix("fio-")?.split_once('.')?;
        let minor: String = minor.chars().take_while(char::is_ascii_digit).collect();
        Some(Fio {
            path: path.to_path_buf(),
            version: (major.parse().ok()?, minor.parse().ok()?),
        })
    }

    /// Writes one file of 4 blocks per kind, `<dir>/<kind>.img`, with `verify=<kind>`,
    /// without reading them back: one fio run, one job per kind.
    fn write_each_kind(&self, dir: &ScratchDir) {
        let mut jobs =
            String::from("[global]\nrw=write\nbs=4k\nsize=16k\nioengine=psync\ndo_verify=0\n");
        for kind in ChecksumKind::ALL {
            let file = dir.join(&format!("{}.img", kind.fio_name()));
            jobs += &format!(
                "[{name}]\nfilename={file}\nverify={name}\n",
                name = kind.fio_name(),
                file = file.display()
            );
        }
        let job_file = dir.join("write.fio");
        std::fs::write(&job_file, jobs).expect("job file");
        // In the scratch directory: fio leaves its verify state files where it runs.
        let out = Command::new("timeout")
            .current_dir(dir.path())
            .arg("60")
            .arg(&self.path)
            .arg("--output=/dev/null")
            .arg(&job_file)
            .output()
            .expect("run fio");
        assert!(out.status.success(), "fio: {}", describe(&out));
    }

    /// fio's verdict on a job file: accepted or not.
    fn accepts(&self, job_file: &Path) -> bool {
        Command::new(&self.path)
            .arg("--parse-only")
            .arg(job_file)
            .output()
            .expect("run fio")
            .status
            .success()
    }

    /// What this fio stores in its header for `ours`, our digest of the same data; `None`
    /// where its function is not the algorithm ours computes (`checksum`'s module doc).
    fn stored_form(&self, kind: ChecksumKind, ours: Vec<u8>) -> Option<Vec<u8>> {
        match kind {
            // Five native-endian (here little-endian) words.
            ChecksumKind::Sha1 => Some(
                ours.chunks(4)
                    .flat_map(|word| word.iter().rev().copied())
                    .collect(),
            ),
            // The register before the final inversion.
            ChecksumKind::Crc32c => Some(ours.iter().map(|byte| !byte).collect()),
            // SHA-256 with the length little-endian and the state words cut to a byte each.
            ChecksumKind::Sha256 => None,
            // Never finalized before fio 3.39 (commit 3ee53198).
            ChecksumKind::Sha512 if self.version < (3, 39) => None,
            _ => Some(ours),
        }
    }
}

/// fio's number for each kind in its header (verify.h's enum; options.c maps `crc32c` and
/// `crc32c-intel` both to `VERIFY_CRC32C`).
fn fio_type(kind: ChecksumKind) -> u8 {
    match kind {
        ChecksumKind::Md5 => 2,
        ChecksumKind::Crc64 => 3,
        ChecksumKind::Crc32 => 4,
        ChecksumKind::Crc32c => 5,
        ChecksumKind::Crc16 => 7,
        ChecksumKind::Crc7 => 8,
        ChecksumKind::Sha256 => 9,
        ChecksumKind::Sha512 => 10,
        ChecksumKind::Sha3_224 => 11,
        ChecksumKind::Sha3_256 => 12,
        ChecksumKind::Sha3_384 => 13,
        ChecksumKind::Sha3_512 => 14,
        ChecksumKind::Xxhash => 15,
        ChecksumKind::Sha1 => 16,
    }
}

/// Bytes of fio's checksum slot after its header (verify.h's `vhdr_*`): the digest, but
/// 64 for sha256 and 128 for sha512.
fn fio_slot_len(kind: ChecksumKind) -> usize {
    match kind {
        ChecksumKind::Sha256 => 64,
        ChecksumKind::Sha512 => 128,
        kind => kind.digest_len(),
    }
}

/// One block fio wrote: the kind its header names, its checksum slot and the data the
/// checksum covers (the rest of the block).
struct FioBlock<'a> {
    verify_type: u8,
    slot: &'a [u8],
    data: &'a [u8],
}

fn decode_fio_block(block: &[u8], kind: ChecksumKind) -> FioBlock<'_> {
    assert_eq!(block[..2], FIO_MAGIC, "not a fio verify header");
    // fio 3.41 on: magic, version, type (u8); before: magic, type (u16).
    let (verify_type, header_len) = if block[2] == FIO_HEADER_VERSION {
        (block[3], 48)
    } else {
        (block[2], 40)
    };
    let interval = u32::from_le_bytes(block[4..8].try_into().expect("4 bytes")) as usize;
    assert_eq!(
        interval,
        block.len(),
        "fio's header names another block length"
    );
    let (slot, data) = block[header_len..].split_at(fio_slot_len(kind));
    FioBlock {
        verify_type,
        slot,
        data,
    }
}

/// Debian's fio (required) and fio 3.42, the anchor ([`common::fio_anchor_path`]), where
/// built.
fn installed_fios() -> Vec<Fio> {
    let debian = Fio::find(Path::new("fio"));
    if !common::require_tool("fio", debian.is_some()) {
        return Vec::new();
    }
    debian
        .into_iter()
        .chain(Fio::find(&common::fio_anchor_path()))
        .collect()
}

#[test]
fn blocks_fio_writes_carry_the_digest_ours_computes() {
    let dir = ScratchDir::new("verify-kinds", "fio-written");
    for fio in installed_fios() {
        fio.write_each_kind(&dir);
        let mut not_compared = Vec::new();
        for kind in ChecksumKind::ALL {
            let file = dir.join(&format!("{}.img", kind.fio_name()));
            let image = std::fs::read(&file).expect("read fio's file");
            assert_eq!(image.len(), 4 * BLOCK_BYTES);
            for (index, block) in image.chunks(BLOCK_BYTES).enumerate() {
                let block = decode_fio_block(block, kind);
                assert_eq!(block.verify_type, fio_type(kind), "{kind:?} block {index}");
                let Some(expected) = fio.stored_form(kind, kind.digest(&[block.data])) else {
                    not_compared.push(kind);
                    break;
                };
                assert_eq!(
                    block.slot[..expected.len()],
                    expected,
                    "fio {:?} {kind:?} block {index}: fio stored {:02x?}",
                    fio.version,
                    block.slot
                );
            }
        }
        let mut not_fios_algorithm = vec![ChecksumKind::Sha256];
        if fio.version < (3, 39) {
            not_fios_algorithm.push(ChecksumKind::Sha512);
        }
        assert_eq!(not_compared, not_fios_algorithm, "fio {:?}", fio.version);
    }
}

/// Our binary on `file` with io_uring: 16 blocks of 4 KiB written sequentially with
/// `verify=kind`, then `extra` options. It runs in `file`'s directory, where it keeps its
/// verify state (as fio does).
fn bench_run(file: &Path, kind: ChecksumKind, extra: &[&str]) -> Output {
    Command::new("timeout")
        .current_dir(file.parent().expect("a file in a directory"))
        .arg("30")
        .arg(env!("CARGO_BIN_EXE_iscsi-bench"))
        .args([
            "--name=w",
            "--ioengine=io_uring",
            "--rw=write",
            "--bs=4k",
            "--size=64k",
        ])
        .arg(format!("--filename={}", file.display()))
        .arg(format!("--verify={}", kind.fio_name()))
        .args(extra)
        .output()
        .expect("run iscsi-bench")
}

#[test]
fn each_kind_round_trips_and_names_a_flipped_byte() {
    let dir = ScratchDir::new("verify-kinds", "round-trip");
    // In the data of the sixth block, past the longest header (40 + 64 bytes).
    let flipped_at = 5 * BLOCK_BYTES + 1234;
    for kind in ChecksumKind::ALL {
        let file = dir.join(&format!("{}.img", kind.fio_name()));
        std::fs::write(&file, vec![0u8; 16 * BLOCK_BYTES]).expect("scratch file");
        // Written, then read back in the same run (do_verify), then in a run of its own.
        let written = bench_run(&file, kind, &[]);
        assert!(written.status.success(), "{kind:?}: {}", describe(&written));
        let verified = bench_run(&file, kind, &["--verify_only=1"]);
        assert!(
            verified.status.success(),
            "{kind:?}: {}",
            describe(&verified)
        );

        let mut image = std::fs::read(&file).expect("read back");
        image[flipped_at] ^= 0x01;
        std::fs::write(&file, &image).expect("flip a byte");
        let failed = bench_run(&file, kind, &["--verify_only=1"]);
        assert!(!failed.status.success(), "{kind:?}: {}", describe(&failed));
        let stderr = String::from_utf8_lossy(&failed.stderr);
        for needle in [
            "checksum mismatch in the block at offset 0x5000".to_string(),
            format!("first bad byte at {flipped_at:#x}"),
            format!("{} in the header", kind.fio_name()),
        ] {
            assert!(stderr.contains(&needle), "{kind:?}: {}", describe(&failed));
        }
    }
}

/// fio's spellings all parse to the kind, and fio's refusals are ours (fio has no `sha224`
/// or `sha384`): checked against fio's own parser where installed.
#[test]
fn the_names_fio_takes_are_the_names_we_take() {
    let dir = ScratchDir::new("verify-kinds", "names");
    let fio = installed_fios().into_iter().next();
    let job = |name: &str| format!("[{name}]\nioengine=null\nrw=write\nsize=1m\nverify={name}\n");
    let taken: Vec<&str> = ChecksumKind::ALL
        .iter()
        .map(|kind| kind.fio_name())
        .chain(["crc32c-intel"])
        .collect();
    for name in &taken {
        let parsed = bench::job::parse_job_str(Path::new("t.fio"), &job(name), &|_| None);
        assert!(parsed.is_ok(), "{name}: {:?}", parsed.err());
    }
    let refused = ["sha224", "sha384"];
    for name in refused {
        let parsed = bench::job::parse_job_str(Path::new("t.fio"), &job(name), &|_| None);
        assert!(parsed.is_err(), "{name} taken");
    }
    let Some(fio) = fio else { return };
    let all_taken = dir.join("taken.fio");
    std::fs::write(
        &all_taken,
        taken.iter().map(|name| job(name)).collect::<String>(),
    )
    .expect("job file");
    assert!(fio.accepts(&all_taken), "fio refuses one of {taken:?}");
    for name in refused {
        let path = dir.join(&format!("{name}.fio"));
        std::fs::write(&path, job(name)).expect("job file");
        assert!(!fio.accepts(&path), "fio takes {name}");
    }
}
