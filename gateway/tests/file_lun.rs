//! File LUNs through the real server: READ, WRITE and SYNCHRONIZE CACHE go through the
//! event loop's io_uring (direct I/O where the file allows it, buffered otherwise), checked
//! against our initiator and against the file itself; I/O failures come back as sense.

use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use datapath::client::{Client, ClientConfig};
use datapath::scsi::cdb::opcode::{READ_16, SYNCHRONIZE_CACHE_10, WRITE_16};
use datapath::scsi::sense::{asc, key, status};
use datapath::scsi::Sense;
use datapath::session::{DataDirection, Request};
use gateway::backend::{Backend, FileBackend, RingFile};
use gateway::disk::{LogicalUnit, LuConfig, LunMap};
use gateway::server::{self, RunningTarget, TargetConfig, TargetNodeConfig};

const IQN: &str = "iqn.2026-11.test:file-lun";
const BLOCK: usize = 512;

/// A directory of its own under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "gateway-file-lun-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn file(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(luns: Vec<(u64, String)>) -> TargetConfig {
    let node = TargetNodeConfig::new(IQN, luns);
    let mut config = TargetConfig::new("127.0.0.1:0".parse().unwrap(), node);
    config.threads = Some(2);
    config.max_cmd_window = 32;
    config.stall_timeout = Duration::from_secs(5);
    config
}

fn client(addr: SocketAddr) -> Client {
    let mut config = ClientConfig::new(addr, Some(IQN.into()));
    config.initiator_name = "iqn.2026-11.test:file-initiator".into();
    config.queue_depth = 16;
    Client::connect(&config).expect("login")
}

fn rw16(opcode: u8, lba: u64, blocks: u32, fua: bool) -> Vec<u8> {
    let mut cdb = vec![0u8; 16];
    cdb[0] = opcode;
    if fua {
        cdb[1] = 0x08;
    }
    cdb[2..10].copy_from_slice(&lba.to_be_bytes());
    cdb[10..14].copy_from_slice(&blocks.to_be_bytes());
    cdb
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed.wrapping_mul(7)) % 251) as u8)
        .collect()
}

/// Writes `count` transfers of `len` bytes from `first_lba`, 16 in flight, reads them back
/// the same way, and checks both the Data-In and the bytes in the file.
fn write_read_pipelined(client: &mut Client, path: &str, first_lba: u64, len: usize, count: u32) {
    let blocks = (len / BLOCK) as u32;
    let lba_of = |i: u32| first_lba + u64::from(i) * u64::from(blocks);
    let writes = (0..count)
        .map(|i| {
            Request::raw(
                0,
                &rw16(WRITE_16, lba_of(i), blocks, i % 5 == 0),
                DataDirection::Write { len: len as u32 },
                pattern(len, i + first_lba as u32),
            )
            .expect("CDB")
        })
        .collect();
    for (i, outcome) in client
        .execute_batch(writes)
        .unwrap()
        .into_iter()
        .enumerate()
    {
        assert_eq!(outcome.unwrap().status, 0, "write {i}");
    }
    let sync = client
        .execute(
            Request::raw(
                0,
                &[SYNCHRONIZE_CACHE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                DataDirection::None,
                Vec::new(),
            )
            .expect("CDB"),
        )
        .unwrap();
    assert_eq!(sync.status, 0);
    let reads = (0..count)
        .map(|i| {
            Request::raw(
                0,
                &rw16(READ_16, lba_of(i), blocks, false),
                DataDirection::Read { len: len as u32 },
                vec![0; len],
            )
            .expect("CDB")
        })
        .collect();
    let file = File::open(path).unwrap();
    for (i, outcome) in client.execute_batch(reads).unwrap().into_iter().enumerate() {
        let outcome = outcome.unwrap();
        let expected = pattern(len, i as u32 + first_lba as u32);
        assert_eq!(outcome.status, 0, "read {i}");
        assert!(outcome.buffer == expected, "read {i} differs");
        let mut on_disk = vec![0; len];
        file.read_exact_at(&mut on_disk, lba_of(i as u32) * BLOCK as u64)
            .unwrap();
        assert!(on_disk == expected, "file content of transfer {i} differs");
    }
}

fn start_with_file_lun(
    path: &str,
    block_size_for_direct_io: u32,
    direct: Arc<AtomicBool>,
) -> RunningTarget {
    let path = path.to_string();
    let builder = move |node: &TargetNodeConfig, tpgt: u16| {
        let backend =
            FileBackend::open_for_block_size(&path, Some(64 << 20), block_size_for_direct_io)
                .expect("file backend");
        direct.store(backend.direct_io(), Ordering::Relaxed);
        let mut map = LunMap::new();
        map.insert(
            0,
            Arc::new(LogicalUnit::new(
                Box::new(backend),
                LuConfig::for_name(&path),
            )),
        );
        Ok(server::disk_luns(&node.iqn, tpgt, map))
    };
    server::start_with(config(vec![(0, String::new())]), &builder).expect("target starts")
}

#[test]
fn file_lun_by_spec_writes_and_reads_back_1mib_and_4kib_pipelined() {
    let dir = TempDir::new("spec");
    let path = dir.file("lun0.img");
    let target = server::start(config(vec![(0, format!("file:{path}:64M"))])).unwrap();
    let mut client = client(target.addrs()[0]);
    write_read_pipelined(&mut client, &path, 0, 1 << 20, 32);
    write_read_pipelined(&mut client, &path, 70_000, 4096, 64);
    // Every READ, WRITE and SYNCHRONIZE CACHE above went through a ring.
    assert_eq!(target.file_ios_completed(), (32 + 1 + 32) + (64 + 1 + 64));
    client.logout().unwrap();
    target.shutdown();
    // Still there after shutdown (flushed).
    let file = File::open(&path).unwrap();
    let mut first = vec![0; 4096];
    file.read_exact_at(&mut first, 0).unwrap();
    assert!(first == pattern(1 << 20, 0)[..4096]);
}

#[test]
fn direct_io_when_aligned_through_the_server() {
    let dir = TempDir::new("direct");
    let path = dir.file("direct.img");
    let direct = Arc::new(AtomicBool::new(false));
    let target = start_with_file_lun(&path, 4096, Arc::clone(&direct));
    // A file system without O_DIRECT (tmpfs on old kernels) cannot prove the direct path.
    // (Asked of another file in the same directory: the target holds this one's lock.)
    let supported = FileBackend::open_for_block_size(&dir.file("probe.img"), Some(1 << 20), 4096)
        .unwrap()
        .direct_io();
    assert_eq!(direct.load(Ordering::Relaxed), supported);
    if !supported {
        eprintln!("the temp dir's file system has no direct I/O; the buffered path ran");
    }
    let mut client = client(target.addrs()[0]);
    write_read_pipelined(&mut client, &path, 8, 1 << 20, 16);
    write_read_pipelined(&mut client, &path, 40_000, 4096, 48);
    client.logout().unwrap();
    target.shutdown();
}

#[test]
fn buffered_io_when_the_block_size_is_not_aligned() {
    let dir = TempDir::new("buffered");
    let path = dir.file("buffered.img");
    // 520-byte blocks (as with protection information) are no multiple of any direct
    // I/O alignment, so the ring uses the buffered descriptor.
    let probe = dir.file("probe.img");
    let unaligned = FileBackend::open_for_block_size(&probe, Some(1 << 20), 520).unwrap();
    assert!(!unaligned.direct_io());
    assert!(!unaligned.ring_file().unwrap().direct);
    drop(unaligned);
    let direct = Arc::new(AtomicBool::new(true));
    let target = start_with_file_lun(&path, 520, Arc::clone(&direct));
    assert!(!direct.load(Ordering::Relaxed));
    let mut client = client(target.addrs()[0]);
    write_read_pipelined(&mut client, &path, 0, 1 << 20, 16);
    write_read_pipelined(&mut client, &path, 50_000, 4096, 32);
    client.logout().unwrap();
    target.shutdown();
}

/// The sense key and the ASC/ASCQ pair of a CHECK CONDITION's sense data.
fn sense_key_and_asc(outcome: &datapath::session::CommandOutcome) -> (u8, (u8, u8)) {
    let sense = outcome.sense.as_deref().expect("sense data");
    let sense = Sense::decode(sense).expect("fixed format sense");
    (sense.key, (sense.asc, sense.ascq))
}

#[test]
fn reading_past_a_file_truncated_underneath_is_an_unrecovered_read_error() {
    let dir = TempDir::new("truncated");
    let path = dir.file("shrinks.img");
    let target = server::start(config(vec![(0, format!("file:{path}:8M"))])).unwrap();
    let mut client = client(target.addrs()[0]);
    let data = pattern(65536, 1);
    let write = client
        .execute(
            Request::raw(
                0,
                &rw16(WRITE_16, 0, 128, false),
                DataDirection::Write { len: 65536 },
                data,
            )
            .expect("CDB"),
        )
        .unwrap();
    assert_eq!(write.status, 0);
    // Someone shrinks the file to 1 MiB behind the target's back.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let read = client
        .execute(
            Request::raw(
                0,
                &rw16(READ_16, 4096, 8, false),
                DataDirection::Read { len: 4096 },
                vec![0; 4096],
            )
            .expect("CDB"),
        )
        .unwrap();
    assert_eq!(read.status, status::CHECK_CONDITION);
    assert_eq!(
        sense_key_and_asc(&read),
        (key::MEDIUM_ERROR, asc::UNRECOVERED_READ_ERROR)
    );
    // What is still in the file reads fine, and the session goes on.
    let read = client
        .execute(
            Request::raw(
                0,
                &rw16(READ_16, 0, 8, false),
                DataDirection::Read { len: 4096 },
                vec![0; 4096],
            )
            .expect("CDB"),
        )
        .unwrap();
    assert_eq!(read.status, 0);
    assert!(read.buffer == pattern(65536, 1)[..4096]);
    client.logout().unwrap();
    target.shutdown();
}

/// A backend whose ring file is `/dev/full`: reads give zeros, every write fails with
/// ENOSPC.
struct FullDevice {
    full: File,
}

impl Backend for FullDevice {
    fn size_bytes(&self) -> u64 {
        1 << 20
    }
    fn read_at(&self, _offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        buf.fill(0);
        Ok(())
    }
    fn write_at(&self, _offset: u64, _data: &[u8]) -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn unmap(&self, _offset: u64, _len: u64) -> std::io::Result<()> {
        Ok(())
    }
    fn kind(&self) -> &'static str {
        "full"
    }
    fn thin(&self) -> bool {
        false
    }
    fn ring_file(&self) -> Option<RingFile<'_>> {
        Some(RingFile {
            fd: self.full.as_fd(),
            direct: false,
            memory_align_bytes: 1,
            submit_may_block: false,
        })
    }
}

#[test]
fn a_failing_ring_write_is_a_write_error_and_reads_still_work() {
    let builder = |node: &TargetNodeConfig, tpgt: u16| {
        let full = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let mut map = LunMap::new();
        map.insert(
            0,
            Arc::new(LogicalUnit::new(
                Box::new(FullDevice { full }),
                LuConfig::default(),
            )),
        );
        Ok(server::disk_luns(&node.iqn, tpgt, map))
    };
    let target = server::start_with(config(vec![(0, String::new())]), &builder).unwrap();
    let mut client = client(target.addrs()[0]);
    let write = client
        .execute(
            Request::raw(
                0,
                &rw16(WRITE_16, 0, 8, false),
                DataDirection::Write { len: 4096 },
                vec![1; 4096],
            )
            .expect("CDB"),
        )
        .unwrap();
    assert_eq!(write.status, status::CHECK_CONDITION);
    assert_eq!(
        sense_key_and_asc(&write),
        (key::MEDIUM_ERROR, asc::WRITE_ERROR)
    );
    let read = client
        .execute(
            Request::raw(
                0,
                &rw16(READ_16, 0, 8, false),
                DataDirection::Read { len: 4096 },
                vec![7; 4096],
            )
            .expect("CDB"),
        )
        .unwrap();
    assert_eq!(read.status, 0);
    assert!(read.buffer.iter().all(|&b| b == 0));
    // Checks still come before I/O: out of range is ILLEGAL REQUEST, not a medium error.
    let read = client
        .execute(
            Request::raw(
                0,
                &rw16(READ_16, 4096, 1, false),
                DataDirection::Read { len: 512 },
                vec![0; 512],
            )
            .expect("CDB"),
        )
        .unwrap();
    assert_eq!(
        sense_key_and_asc(&read),
        (key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE)
    );
    client.logout().unwrap();
    target.shutdown();
}

/// Shutting down while writes are in flight: connections close under their I/O (whose
/// completions then find no connection), the loops wait for the I/O, and the target
/// stops without hanging or touching freed memory.
#[test]
fn shutdown_with_writes_in_flight_stops_cleanly() {
    let dir = TempDir::new("shutdown");
    let path = dir.file("inflight.img");
    let target = server::start(config(vec![(0, format!("file:{path}:64M"))])).unwrap();
    let addr = target.addrs()[0];
    let writer = std::thread::spawn(move || {
        let mut client = client(addr);
        let writes = (0..64u32)
            .map(|i| {
                Request::raw(
                    0,
                    &rw16(WRITE_16, u64::from(i) * 2048, 2048, false),
                    DataDirection::Write { len: 1 << 20 },
                    pattern(1 << 20, i),
                )
                .expect("CDB")
            })
            .collect();
        // The target goes away in the middle: the connection fails, which is fine.
        let _ = client.execute_batch(writes);
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while target.file_ios_completed() < 4 {
        assert!(std::time::Instant::now() < deadline, "no write completed");
        std::thread::sleep(Duration::from_millis(1));
    }
    target.shutdown();
    writer.join().unwrap();
}
