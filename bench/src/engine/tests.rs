//! Engine tests: the null engine's semantics, the io_uring engine on temporary files, the
//! iSCSI engine against the embedded target. The iSCSI engine against tgt and the io_uring
//! engine on a loop device (skipped locally, failed under CI when none can be attached) are
//! tested in `tests/tests/bench_engines.rs`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::testing::{run_units, unit};
use super::*;
use crate::io::{Direction, IoDone, IoError, IoUnit};

const WAIT: Duration = Duration::from_secs(10);

/// A path in the temporary directory, removed on drop.
struct TempPath(PathBuf);

impl TempPath {
    fn new(name: &str) -> TempPath {
        let path = std::env::temp_dir().join(format!(
            "bench-engine-{}-{name}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let _ = std::fs::remove_file(&path);
        TempPath(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Deterministic bytes, different per seed.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
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

fn run(engine: &mut dyn Engine, units: Vec<IoUnit>) -> Vec<IoDone> {
    run_units(engine, units, WAIT)
}

/// Writes a different pattern at each offset, reads them back and compares.
fn write_read_compare(engine: &mut dyn Engine, offsets: &[u64], len: u32) {
    let writes = offsets
        .iter()
        .enumerate()
        .map(|(i, &offset)| {
            let mut buffer = engine.buffer(len);
            buffer.copy_from_slice(&pattern(len as usize, offset + 1));
            unit(i as u64, Direction::Write, offset, buffer, len)
        })
        .collect();
    for done in run(engine, writes) {
        assert_eq!(done.result, Ok(()), "write at {}", done.unit.offset);
        engine.recycle(done.unit.buffer);
    }
    let reads = offsets
        .iter()
        .enumerate()
        .map(|(i, &offset)| {
            let mut buffer = engine.buffer(len);
            buffer.fill(0xee);
            unit(i as u64, Direction::Read, offset, buffer, len)
        })
        .collect();
    for done in run(engine, reads) {
        assert_eq!(done.result, Ok(()), "read at {}", done.unit.offset);
        assert_eq!(done.unit.buffer.len(), len as usize);
        assert!(
            done.unit.buffer == pattern(len as usize, done.unit.offset + 1),
            "data read at {} differs from what was written",
            done.unit.offset
        );
        engine.recycle(done.unit.buffer);
    }
}

// ---------------------------------------------------------------------------------------
// null

#[test]
fn null_completes_everything_at_submit_and_moves_no_data() {
    let mut engine = NullEngine::open(&NullOptions::new(1 << 20, 4)).unwrap();
    assert_eq!(
        (engine.size_bytes(), engine.block_size_bytes()),
        (1 << 20, 512)
    );
    for id in 0..4 {
        engine
            .queue(unit(
                id,
                Direction::Read,
                id * 512,
                vec![id as u8; 512],
                512,
            ))
            .unwrap();
    }
    let back = engine
        .queue(unit(9, Direction::Write, 0, vec![0; 512], 512))
        .expect_err("a full engine hands the unit back");
    assert_eq!(back.id, 9);
    let mut out = Vec::new();
    assert_eq!(
        engine.reap(0, Duration::ZERO, &mut out).unwrap(),
        0,
        "nothing submitted"
    );
    assert_eq!(engine.submit().unwrap(), 4);
    assert_eq!(engine.in_flight(), 4);
    let started = std::time::Instant::now();
    assert_eq!(engine.reap(4, WAIT, &mut out).unwrap(), 4);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "null never waits"
    );
    for (i, done) in out.iter().enumerate() {
        assert_eq!(done.result, Ok(()));
        assert_eq!(done.unit.buffer, vec![i as u8; 512], "buffer untouched");
    }
    assert_eq!(engine.in_flight(), 0);
    let counters = Box::new(engine).close().unwrap();
    assert_eq!((counters.ios_submitted, counters.ios_completed), (4, 4));
    assert_eq!((counters.kernel_entries, counters.bytes_copied), (0, 0));
}

#[test]
fn null_refuses_a_zero_size_or_depth() {
    assert!(NullEngine::open(&NullOptions::new(0, 4)).is_err());
    assert!(NullEngine::open(&NullOptions::new(4096, 0)).is_err());
    let engine = open(&EngineConfig::Null(NullOptions::new(4096, 1))).unwrap();
    assert_eq!(engine.name(), "null");
}

// ---------------------------------------------------------------------------------------
// io_uring

fn uring_options(path: &Path, size: u64) -> UringOptions {
    let mut options = UringOptions::new(path, 8, 64 * 1024);
    options.size_bytes = Some(size);
    options
}

#[test]
fn uring_buffered_file_write_read_compare_and_layout() {
    let file = TempPath::new("buffered");
    let size = 4 << 20;
    let mut engine = UringEngine::open(&uring_options(file.path(), size)).unwrap();
    assert_eq!(engine.size_bytes(), size);
    assert_eq!(
        engine.block_size_bytes(),
        1,
        "a buffered file has no alignment rule"
    );
    // Laid out with data: every block allocated, not a sparse file.
    let meta = std::fs::metadata(file.path()).unwrap();
    assert_eq!(meta.len(), size);
    assert!(meta.blocks() * 512 >= size, "the file was written out");
    write_read_compare(
        &mut engine,
        &[0, 65536, 1 << 20, size - 65536, 212345],
        65536 - 7,
    );
    let counters = Box::new(engine).close().unwrap();
    assert_eq!(counters.ios_completed, 10);
    assert_eq!(counters.ios_fixed_buffers, 0);
    assert!(counters.kernel_entries > 0);
    // The bytes are in the file, where a plain read finds them.
    let data = std::fs::read(file.path()).unwrap();
    assert!(data[65536..65536 + 100] == pattern(65536 - 7, 65537)[..100]);
}

#[test]
fn uring_layout_policies() {
    let extended = TempPath::new("extend");
    let mut options = uring_options(extended.path(), 8 << 20);
    options.layout = LayoutPolicy::Extend;
    options.fallocate = crate::job::spec::Fallocate::Truncate;
    let engine = UringEngine::open(&options).unwrap();
    assert_eq!(engine.size_bytes(), 8 << 20);
    let meta = std::fs::metadata(extended.path()).unwrap();
    assert!(
        meta.blocks() * 512 < 8 << 20,
        "extended sparse, not written"
    );
    drop(engine);

    let refused = TempPath::new("refuse");
    std::fs::write(refused.path(), [0u8; 4096]).unwrap();
    let mut options = uring_options(refused.path(), 8192);
    options.layout = LayoutPolicy::Refuse;
    let error = UringEngine::open(&options).unwrap_err().to_string();
    assert!(
        error.contains("4096 bytes, fewer than the job's size 8192"),
        "{error}"
    );

    let missing = TempPath::new("missing");
    let mut options = uring_options(missing.path(), 0);
    options.size_bytes = None;
    assert!(UringEngine::open(&options).is_err(), "no file and no size");
}

#[test]
fn uring_fixed_buffers_and_registered_file() {
    let file = TempPath::new("fixed");
    let mut options = uring_options(file.path(), 2 << 20);
    options.fixedbufs = true;
    options.registerfiles = true;
    let mut engine = UringEngine::open(&options).unwrap();
    assert_eq!(engine.registered_buffers(), 8);
    write_read_compare(&mut engine, &[0, 65536, 1 << 20, (2 << 20) - 65536], 65536);
    // A buffer from elsewhere still works, through the plain opcodes.
    let done = run(
        &mut engine,
        vec![unit(0, Direction::Read, 0, vec![0; 4096], 4096)],
    );
    assert_eq!(done[0].result, Ok(()));
    assert!(done[0].unit.buffer == pattern(65536, 1)[..4096]);
    let counters = engine.counters();
    assert_eq!(
        counters.ios_fixed_buffers, 8,
        "every engine buffer went READ/WRITE_FIXED"
    );
    assert_eq!(counters.ios_completed, 9);
    assert_eq!(counters.bytes_copied, 0);
}

/// Several files in one engine (fio's nrfiles): each laid out, units reach the one they
/// name, with registered files too; `recreate_files` (unlink_each_loop) leaves each empty
/// and writable, and a unit naming a file not opened is refused.
#[test]
fn uring_serves_several_files_and_creates_them_again() {
    let first = TempPath::new("multi0");
    let second = TempPath::new("multi1");
    for registerfiles in [false, true] {
        let mut options = uring_options(first.path(), 1 << 20);
        options.more_paths = vec![second.path().to_path_buf()];
        options.registerfiles = registerfiles;
        let mut engine = UringEngine::open(&options).unwrap();
        assert_eq!(engine.file_count(), 2);
        assert_eq!(engine.file_geometry(1), Some((1 << 20, 1)));
        assert_eq!(std::fs::metadata(second.path()).unwrap().len(), 1 << 20);
        let mut buffer = engine.buffer(4096);
        buffer.fill(0x5a);
        let mut write = unit(0, Direction::Write, 8192, buffer, 4096);
        write.file = 1;
        let mut stray = unit(1, Direction::Read, 0, vec![0; 4096], 4096);
        stray.file = 2;
        let done = run(&mut engine, vec![write, stray]);
        let result = |id: u64| {
            done.iter()
                .find(|d| d.unit.id == id)
                .unwrap()
                .result
                .clone()
        };
        assert_eq!(result(0), Ok(()));
        assert!(result(1).is_err(), "file 2 was never opened");
        let data = std::fs::read(second.path()).unwrap();
        assert!(data[8192..12288].iter().all(|&b| b == 0x5a));
        assert!(std::fs::read(first.path()).unwrap()[8192..12288]
            .iter()
            .all(|&b| b == 0));

        engine.recreate_files().unwrap();
        for path in [first.path(), second.path()] {
            assert_eq!(
                std::fs::metadata(path).unwrap().len(),
                0,
                "{}",
                path.display()
            );
        }
        let mut again = unit(2, Direction::Write, 0, vec![1; 4096], 4096);
        again.file = 1;
        assert_eq!(run(&mut engine, vec![again])[0].result, Ok(()));
        assert_eq!(std::fs::metadata(second.path()).unwrap().len(), 4096);
        Box::new(engine).close().unwrap();
        let _ = std::fs::remove_file(first.path());
        let _ = std::fs::remove_file(second.path());
    }
}

/// fio's filesize over several files: each further file laid out to its own size
/// (`more_size_bytes`) in place of the job's; a `None` takes the file as it is.
#[test]
fn uring_lays_out_each_further_file_to_its_own_size() {
    let first = TempPath::new("sized0");
    let second = TempPath::new("sized1");
    let third = TempPath::new("sized2");
    std::fs::write(third.path(), vec![0u8; 12288]).unwrap();
    let mut options = uring_options(first.path(), 16384);
    options.more_paths = vec![second.path().to_path_buf(), third.path().to_path_buf()];
    options.more_size_bytes = vec![Some(8192), None];
    let engine = UringEngine::open(&options).unwrap();
    assert_eq!(engine.file_count(), 3);
    assert_eq!(engine.file_geometry(0), Some((16384, 1)));
    assert_eq!(engine.file_geometry(1), Some((8192, 1)));
    assert_eq!(engine.file_geometry(2), Some((12288, 1)));
    for (path, len) in [
        (first.path(), 16384),
        (second.path(), 8192),
        (third.path(), 12288),
    ] {
        assert_eq!(
            std::fs::metadata(path).unwrap().len(),
            len,
            "{}",
            path.display()
        );
    }
    Box::new(engine).close().unwrap();
    for path in [first.path(), second.path(), third.path()] {
        let _ = std::fs::remove_file(path);
    }
}

#[test]
fn uring_direct_io_checks_alignment_and_moves_data() {
    let file = TempPath::new("direct");
    let mut options = uring_options(file.path(), 1 << 20);
    options.direct = true;
    options.fixedbufs = true;
    let mut engine = match UringEngine::open(&options) {
        Ok(engine) => engine,
        Err(EngineError::Target { reason, .. }) if reason.contains("O_DIRECT") => {
            eprintln!("skipped: {reason}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let (memory_align, offset_align) = engine.direct_alignment().unwrap();
    assert_eq!(engine.block_size_bytes(), offset_align);
    assert!(offset_align >= 1 && memory_align >= 1);
    write_read_compare(&mut engine, &[0, 16384, 65536], 16384);
    let counters = engine.counters();
    // Malloc'd buffers meet the memory alignment or go through a counted bounce.
    assert!(counters.bytes_copied <= 6 * 16384 && counters.bytes_copied % 16384 == 0);
    // A buffer off the memory alignment is bounced (one copy, counted); an aligned one is not.
    let buffer = vec![0u8; 16384];
    let misaligned = !(buffer.as_ptr() as usize).is_multiple_of(memory_align as usize);
    let done = run(
        &mut engine,
        vec![unit(0, Direction::Read, 16384, buffer, 16384)],
    );
    assert_eq!(done[0].result, Ok(()));
    assert!(done[0].unit.buffer == pattern(16384, 16385));
    let copied = engine.counters().bytes_copied - counters.bytes_copied;
    assert_eq!(copied, if misaligned { 16384 } else { 0 });

    // An offset off the alignment fails clearly, without reaching the kernel.
    if offset_align > 1 {
        let done = run(
            &mut engine,
            vec![unit(0, Direction::Read, 100, vec![0; 4096], 4096)],
        );
        match &done[0].result {
            Err(IoError::Transport(message)) => {
                assert!(message.contains("O_DIRECT"), "{message}");
                assert!(
                    message.contains(&format!("multiples of {offset_align} bytes")),
                    "{message}"
                );
                assert!(message.contains("offset 100"), "{message}");
            }
            other => panic!("expected an alignment error, got {other:?}"),
        }
    }
}

#[test]
fn uring_trim_punches_a_hole_in_a_file() {
    let file = TempPath::new("trim");
    let size = 4 << 20;
    let mut engine = UringEngine::open(&uring_options(file.path(), size)).unwrap();
    write_read_compare(&mut engine, &[1 << 20], 65536);
    let before = std::fs::metadata(file.path()).unwrap().blocks();
    let done = run(
        &mut engine,
        vec![unit(0, Direction::Trim, 1 << 20, Vec::new(), 1 << 20)],
    );
    assert_eq!(done[0].result, Ok(()));
    let after = std::fs::metadata(file.path()).unwrap().blocks();
    assert!(
        after * 512 <= before * 512 - (1 << 20),
        "blocks {before} -> {after}"
    );
    assert_eq!(
        std::fs::metadata(file.path()).unwrap().len(),
        size,
        "size kept"
    );
    let done = run(
        &mut engine,
        vec![unit(0, Direction::Read, 1 << 20, vec![0xff; 65536], 65536)],
    );
    assert_eq!(done[0].result, Ok(()));
    assert!(
        done[0].unit.buffer.iter().all(|b| *b == 0),
        "the hole reads zeros"
    );
}

#[test]
fn uring_sqpoll_runs_or_falls_back_and_errors_are_reported() {
    let file = TempPath::new("sqpoll");
    let mut options = uring_options(file.path(), 1 << 20);
    options.sqthread_poll = true;
    let mut engine = UringEngine::open(&options).unwrap();
    eprintln!("SQPOLL granted: {}", engine.sqpoll());
    write_read_compare(&mut engine, &[0, 65536], 4096);
    // Past the end of the file: a short read.
    let done = run(
        &mut engine,
        vec![unit(
            0,
            Direction::Read,
            (1 << 20) - 512,
            vec![0; 4096],
            4096,
        )],
    );
    assert_eq!(
        done[0].result,
        Err(IoError::Short {
            wanted: 4096,
            done: 512
        })
    );
    // A buffer shorter than the I/O is refused, not overrun.
    let done = run(
        &mut engine,
        vec![unit(0, Direction::Read, 0, vec![0; 100], 4096)],
    );
    assert!(matches!(&done[0].result, Err(IoError::Transport(m)) if m.contains("shorter")));
    // Nothing in flight: reap returns at once.
    let mut out = Vec::new();
    assert_eq!(engine.reap(1, Duration::from_secs(5), &mut out).unwrap(), 0);
}

// ---------------------------------------------------------------------------------------
// iscsi against the embedded target

fn embedded(size: u64, shards: usize) -> IscsiEngine {
    let mut options = IscsiOptions::new(IscsiTarget::Embedded(EmbeddedOptions::new(size)), 8);
    options.shards = shards;
    IscsiEngine::open(&options).expect("embedded target and engine start")
}

#[test]
fn iscsi_embedded_write_read_compare_size_and_trim() {
    let size = 8 << 20;
    let mut engine = embedded(size, 2);
    assert_eq!(engine.size_bytes(), size, "READ CAPACITY");
    assert_eq!(engine.block_size_bytes(), 512);
    assert_eq!(engine.queue_depth(), 16, "iodepth per shard");
    assert_eq!(engine.unmap_supported(), Some(true), "a RAM LUN is thin");
    assert_eq!(engine.shard_info().len(), 2);
    let offsets: Vec<u64> = (0..24).map(|i| i * 131072 + 512 * (i % 3)).collect();
    write_read_compare(&mut engine, &offsets, 65536);

    // Trim one range; it reads back as zeros (the RAM LUN reports LBPRZ).
    let done = run(
        &mut engine,
        vec![unit(0, Direction::Trim, 0, Vec::new(), 131072)],
    );
    assert_eq!(done[0].result, Ok(()));
    let done = run(
        &mut engine,
        vec![unit(0, Direction::Read, 0, vec![0xff; 65536], 65536)],
    );
    assert_eq!(done[0].result, Ok(()));
    assert!(
        done[0].unit.buffer.iter().all(|b| *b == 0),
        "trimmed blocks read zeros"
    );

    // Past the end: the target's CHECK CONDITION, ILLEGAL REQUEST / LBA OUT OF RANGE.
    let done = run(
        &mut engine,
        vec![unit(0, Direction::Read, size, vec![0; 4096], 4096)],
    );
    assert_eq!(
        done[0].result,
        Err(IoError::CheckCondition {
            key: 0x5,
            asc: 0x21,
            ascq: 0x00
        })
    );
    assert_eq!(done[0].unit.buffer.len(), 4096, "buffer handed back");

    // Misaligned: refused before it reaches the wire.
    let done = run(
        &mut engine,
        vec![unit(0, Direction::Read, 100, vec![0; 4096], 4096)],
    );
    assert!(matches!(&done[0].result, Err(IoError::Transport(m)) if m.contains("512-byte blocks")));

    let counters = Box::new(engine).close().unwrap();
    assert!(
        counters.kernel_entries > 0,
        "the shards' kernel entries are reported"
    );
    assert_eq!(counters.ios_timed_out, 0);
}

#[test]
fn iscsi_over_both_adapter_models_moves_data_intact() {
    for transport in [TransportKind::Dependent, TransportKind::Independent] {
        let mut options =
            IscsiOptions::new(IscsiTarget::Embedded(EmbeddedOptions::new(8 << 20)), 4);
        options.shards = 2;
        options.transport = transport;
        let mut engine = IscsiEngine::open(&options).expect("engine over an adapter model");
        assert_eq!(engine.shard_info().len(), 2);
        let offsets: Vec<u64> = (0..12).map(|i| i * 262144 + 4096 * (i % 2)).collect();
        write_read_compare(&mut engine, &offsets, 65536);
        let name = engine.transport();
        assert_eq!(name, format!("{transport:?}").to_lowercase());
        let cpu = engine.adapter_cpu_time().expect("an adapter path");
        assert!(
            cpu > Duration::ZERO,
            "{name}: the adapter's threads are metered"
        );
        let counters = Box::new(engine).close().unwrap();
        assert_eq!(counters.ios_timed_out, 0, "{name}");
    }
    let engine = embedded(1 << 20, 1);
    assert_eq!(engine.transport(), "software");
    assert_eq!(engine.adapter_cpu_time(), None);
}

#[test]
fn iscsi_with_digests_and_small_bursts_moves_data_intact() {
    let mut options = IscsiOptions::new(IscsiTarget::Embedded(EmbeddedOptions::new(4 << 20)), 4);
    options.login = LoginOptions {
        header_digest: Some(DigestPreference::Crc32c),
        data_digest: Some(DigestPreference::Crc32c),
        immediate_data: Some(false),
        initial_r2t: Some(true),
        max_burst_length: Some(65536),
        first_burst_length: Some(65536),
        max_recv_data_segment_length: Some(32768),
        initiator_name: Some("iqn.2026-11.test:bench-initiator".into()),
        ..LoginOptions::default()
    };
    let mut engine = IscsiEngine::open(&options).expect("login with digests");
    // 256 KiB units cross several bursts and Data-In PDUs under these limits.
    write_read_compare(&mut engine, &[0, 1 << 20], 256 * 1024);
}

#[test]
fn iscsi_io_timeout_fails_the_unit_and_drops_the_late_completion() {
    let mut options = IscsiOptions::new(IscsiTarget::Embedded(EmbeddedOptions::new(64 << 20)), 16);
    options.io_timeout = Some(Duration::from_micros(1));
    let mut engine = IscsiEngine::open(&options).unwrap();
    let len = 1 << 20;
    for i in 0..16u64 {
        let buffer = engine.buffer(len);
        engine
            .queue(unit(i, Direction::Write, i * u64::from(len), buffer, len))
            .unwrap();
    }
    engine.submit().unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    while out.len() < 16 && std::time::Instant::now() < deadline {
        engine.reap(16 - out.len(), WAIT, &mut out).unwrap();
    }
    assert_eq!(out.len(), 16);
    let timed_out: Vec<&IoDone> = out
        .iter()
        .filter(|d| matches!(d.result, Err(IoError::Timeout(_))))
        .collect();
    assert!(!timed_out.is_empty(), "1 µs is shorter than a 1 MiB write");
    assert!(
        timed_out.iter().all(|d| d.unit.buffer.is_empty()),
        "the shard keeps the buffer"
    );
    assert_eq!(
        engine.in_flight(),
        0,
        "timed-out units no longer count for the runner"
    );
    let counters = Box::new(engine).close().unwrap();
    assert_eq!(counters.ios_timed_out, timed_out.len() as u64);
    assert_eq!(
        counters.late_completions, counters.ios_timed_out,
        "close waits for the late completions and drops them"
    );
}

#[test]
fn iscsi_engine_opens_through_the_generic_entry_with_a_null_lun() {
    let mut embedded = EmbeddedOptions::new(1 << 30);
    embedded.lun = EmbeddedLun::Null;
    let config = EngineConfig::Iscsi(Box::new(IscsiOptions::new(
        IscsiTarget::Embedded(embedded),
        4,
    )));
    let mut engine = open(&config).unwrap();
    assert_eq!((engine.name(), engine.size_bytes()), ("iscsi", 1 << 30));
    let done = run(
        engine.as_mut(),
        vec![unit(0, Direction::Write, 1 << 29, vec![7; 4096], 4096)],
    );
    assert_eq!(done[0].result, Ok(()));
    engine.close().unwrap();
}

#[test]
fn iscsi_refuses_a_url_without_lun_and_an_unreachable_portal() {
    let url = datapath::url::IscsiUrl::parse("iscsi://127.0.0.1:1/iqn.x:y").unwrap();
    let options = IscsiOptions::new(IscsiTarget::Url(url), 4);
    assert!(matches!(
        IscsiEngine::open(&options),
        Err(EngineError::Url(datapath::url::UrlError::NoLun { .. }))
    ));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let url =
        datapath::url::IscsiUrl::parse(&format!("iscsi://127.0.0.1:{port}/iqn.x:y/0")).unwrap();
    let mut options = IscsiOptions::new(IscsiTarget::Url(url), 4);
    options.login.connect_timeout = Some(Duration::from_secs(2));
    let error = IscsiEngine::open(&options).unwrap_err().to_string();
    assert!(error.contains(&port.to_string()), "{error}");
}
