//! Where the commands of a tracked or migrating LUN run: on the event loop (inline, or on
//! its ring for a file) or on the blocking pool. The plan a unit makes decides it
//! ([`LogicalUnit::plan`]); these tests pin it for each kind of wrapper.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::backend::{Backend, FileBackend, QueuedKind, QueuedRequest, RamBackend};
use crate::changes::{ChangeTracker, Tracked, DEFAULT_CHUNK_BYTES};
use crate::disk::{IoKind, LogicalUnit, LuConfig, Plan, ScsiTask};
use crate::migration::{Mirror, Mode, Phase, Shared, UnitBackend, REGION_BYTES};

const SIZE: u64 = 8 * REGION_BYTES;

fn scratch(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "loop-plans-{tag}-{}-{:x}",
        std::process::id(),
        u64::from_le_bytes(datapath::client::random_bytes(8).try_into().unwrap())
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write10(lba: u32, blocks: u16) -> [u8; 16] {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x2a;
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    cdb
}

fn read10(lba: u32, blocks: u16) -> [u8; 16] {
    let mut cdb = write10(lba, blocks);
    cdb[0] = 0x28;
    cdb
}

fn task<'a>(cdb: &'a [u8], data_out: &'a [u8]) -> ScsiTask<'a> {
    ScsiTask {
        cdb,
        data_out,
        expected_data_in_len: 1 << 24,
        target_port: Default::default(),
        nexus: Default::default(),
    }
}

#[test]
fn a_tracked_file_lun_keeps_its_ring_and_marks_the_map_when_a_write_is_planned() {
    let dir = scratch("tracked-file");
    let path = dir.join("lun.img");
    let file = FileBackend::open(path.to_str().unwrap(), Some(SIZE)).unwrap();
    let tracker = Arc::new(
        ChangeTracker::open(&dir.join("changes"), "lun", SIZE, DEFAULT_CHUNK_BYTES).unwrap(),
    );
    let tracked = Tracked::new(Arc::new(file), Arc::clone(&tracker));
    assert!(tracked.ring_file().is_some(), "the file's ring is kept");
    let unit = LogicalUnit::new(Box::new(tracked), LuConfig::for_name("t"));
    let start = tracker.map().current_id();
    let data = vec![0x11u8; 4096];

    // Reads never wait for a record: on the ring.
    let read = read10(0, 8);
    assert!(matches!(unit.plan(&task(&read, &[])), Plan::Io(ref io) if io.kind == IoKind::Read));

    // The first write into the (1 GiB) region since the start must be recorded durably:
    // the blocking pool runs it (an fsync), never the event loop.
    let first = write10(16, 8);
    assert!(matches!(unit.plan(&task(&first, &data)), Plan::Blocking));
    assert_eq!(unit.execute(&task(&first, &data)).status, 0);

    // Then writes there go to the ring, and planning one marks its chunk.
    let later = write10(4096, 8); // 2 MiB in: another 64 KiB chunk.
    match unit.plan(&task(&later, &data)) {
        Plan::Io(io) => assert_eq!((io.kind, io.offset, io.len), (IoKind::Write, 2 << 20, 4096)),
        other => panic!("a write into a recorded region runs on the ring, planned {other:?}"),
    }
    let changed = tracker.changed_since(Some(start)).unwrap().unwrap();
    assert_eq!(
        changed.extents,
        vec![(0, DEFAULT_CHUNK_BYTES), (2 << 20, DEFAULT_CHUNK_BYTES)],
        "the blocking write and the ring write are both in the map"
    );
    drop(unit);
    drop(tracker);
    let _ = std::fs::remove_dir_all(&dir);
}

fn mirror_unit(
    source: Box<dyn Backend>,
    dest: Arc<dyn Backend>,
    cursor: u64,
) -> (LogicalUnit, Arc<Shared>) {
    let source_unit = Arc::new(LogicalUnit::new(source, LuConfig::for_name("m")));
    let shared = Arc::new(Shared::new(Mode::Mirror, SIZE, cursor, Phase::Copying));
    let mirror = Mirror::new(
        Arc::new(UnitBackend(Arc::clone(&source_unit))),
        dest,
        Arc::clone(&shared),
    );
    (source_unit.over_backend(Box::new(mirror)), shared)
}

#[test]
fn a_mirror_between_ram_sides_answers_on_the_event_loop_and_writes_both_sides() {
    let dest: Arc<dyn Backend> = Arc::new(RamBackend::new(SIZE));
    let (unit, shared) = mirror_unit(Box::new(RamBackend::new(SIZE)), Arc::clone(&dest), 4);
    let data = vec![0x22u8; 4096];
    // Below the cursor (region 0): both sides, answered in the plan itself.
    let below = write10(8, 8);
    match unit.plan(&task(&below, &data)) {
        Plan::Done(result) => assert_eq!(result.status, 0),
        other => panic!("a RAM mirror runs inline, planned {other:?}"),
    }
    let mut on_dest = vec![0u8; 4096];
    dest.read_at(8 * 512, &mut on_dest).unwrap();
    assert_eq!(on_dest, data);
    // After the switch, reads come from the destination, still inline.
    dest.write_at(REGION_BYTES * 6, &[0x33; 512]).unwrap();
    assert!(shared.change_phase(Phase::Copying, Phase::Switched));
    let read = read10((REGION_BYTES * 6 / 512) as u32, 1);
    match unit.plan(&task(&read, &[])) {
        Plan::Done(result) => assert_eq!(result.data_in, vec![0x33; 512]),
        other => panic!("a RAM mirror reads inline, planned {other:?}"),
    }
}

/// Waits for a queued command's outcome.
fn queued(unit: &LogicalUnit, request: QueuedRequest) -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (sender, outcome) = mpsc::channel();
    let queue = unit.backend().queued_io().expect("the mirror's queue");
    queue.submit(request, Box::new(move |o| drop(sender.send(o))));
    outcome
}

#[test]
fn a_mirror_with_a_file_side_plans_its_io_for_its_workers_and_the_rest_for_the_blocking_pool() {
    let dir = scratch("mirror-file");
    let path = dir.join("dest.img");
    let dest: Arc<dyn Backend> =
        Arc::new(FileBackend::open(path.to_str().unwrap(), Some(SIZE)).unwrap());
    let (unit, shared) = mirror_unit(Box::new(RamBackend::new(SIZE)), Arc::clone(&dest), 1);
    // READ, WRITE, SYNCHRONIZE CACHE: planned on the event loop, run by the workers.
    let data = vec![0x55u8; 4096];
    let write = write10(8, 8);
    match unit.plan(&task(&write, &data)) {
        Plan::Io(io) => assert_eq!((io.kind, io.offset, io.len), (IoKind::Write, 4096, 4096)),
        other => panic!("a mirrored write goes to the workers, planned {other:?}"),
    }
    let sync = [0x35u8, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert!(matches!(unit.plan(&task(&sync, &[])), Plan::Io(ref io) if io.kind == IoKind::Flush));
    // Below the cursor a write lands on both sides; above it only on the source.
    let write_at = |offset: u64, fill: u8, durable: bool| QueuedRequest {
        kind: QueuedKind::Write { durable },
        offset,
        len: 4096,
        data: vec![fill; 4096],
    };
    let below = queued(&unit, write_at(4096, 0x55, true));
    let above = queued(&unit, write_at(REGION_BYTES * 3, 0x66, false));
    for outcome in [below, above] {
        assert_eq!(
            outcome
                .recv_timeout(Duration::from_secs(10))
                .unwrap()
                .unwrap(),
            Vec::<u8>::new()
        );
    }
    let mut on_dest = vec![0u8; 4096];
    dest.read_at(4096, &mut on_dest).unwrap();
    assert_eq!(on_dest, data, "below the cursor: the destination has it");
    dest.read_at(REGION_BYTES * 3, &mut on_dest).unwrap();
    assert_eq!(on_dest, vec![0u8; 4096], "above the cursor: not yet");
    let read_back = |offset: u64| {
        queued(
            &unit,
            QueuedRequest {
                kind: QueuedKind::Read,
                offset,
                len: 4096,
                data: Vec::new(),
            },
        )
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap()
    };
    assert_eq!(
        read_back(REGION_BYTES * 3),
        vec![0x66u8; 4096],
        "read from the source"
    );
    // After the switch reads come from the destination.
    dest.write_at(REGION_BYTES * 5, &[0x77u8; 4096]).unwrap();
    assert!(shared.change_phase(Phase::Copying, Phase::Switched));
    assert_eq!(read_back(REGION_BYTES * 5), vec![0x77u8; 4096]);
    // A bad request is refused with what was wrong.
    let short = QueuedRequest {
        data: vec![0; 512],
        ..write_at(0, 0, false)
    };
    let error = queued(&unit, short)
        .recv()
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(error.contains("came with 512 bytes"), "{error}");
    // Other medium commands still run on the blocking pool (WRITE SAME(10)).
    let mut write_same = write10(0, 1);
    write_same[0] = 0x41;
    assert!(matches!(
        unit.plan(&task(&write_same, &[0; 512])),
        Plan::Blocking
    ));
    drop(unit);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_mirror_between_two_files_runs_on_the_ring_and_leaves_the_workers_what_would_wait() {
    let dir = scratch("mirror-two-files");
    let open = |name: &str| FileBackend::open(dir.join(name).to_str().unwrap(), Some(SIZE));
    let dest: Arc<dyn Backend> = Arc::new(open("dest.img").unwrap());
    let (unit, shared) = mirror_unit(Box::new(open("source.img").unwrap()), dest, 1);
    let block = [0u8; 4096];
    let legs = |kind: IoKind, offset: u64| {
        let data: &[u8] = if kind == IoKind::Write { &block } else { &[] };
        unit.backend().ring_legs(kind, offset, data)
    };

    // A write below the cursor: both files, its stripe held by the legs.
    let data = vec![0x21u8; 4096];
    assert!(matches!(
        unit.plan(&task(&write10(8, 8), &data)),
        Plan::Io(_)
    ));
    let held = legs(IoKind::Write, 4096).expect("a write on the ring");
    assert!(held.destination.is_some() && held.destination_len == 4096);
    assert!(held.hold.is_some());
    // Another write into a region of that stripe would wait: the workers take it.
    assert!(legs(IoKind::Write, 0).is_none());
    assert!(
        legs(IoKind::Write, REGION_BYTES).is_some(),
        "another stripe is free"
    );
    drop(held);
    // Above the cursor: the source only, still under the stripe.
    let above = legs(IoKind::Write, 3 * REGION_BYTES).unwrap();
    assert!(above.destination.is_none() && above.hold.is_some());
    drop(above);
    // Reads from the source, a flush on both files.
    let read = legs(IoKind::Read, 0).unwrap();
    assert!(read.destination.is_none() && read.hold.is_none());
    assert!(legs(IoKind::Flush, 0).unwrap().destination.is_some());
    // After the switch a read comes from the destination, the source its fallback.
    assert!(shared.change_phase(Phase::Copying, Phase::Switched));
    let read = legs(IoKind::Read, 0).unwrap();
    assert!(read.fallback.is_some() && read.hold.is_some() && read.destination.is_none());
    drop(read);
    assert_eq!(
        legs(IoKind::Write, 3 * REGION_BYTES)
            .unwrap()
            .destination_len,
        4096
    );
    // A failed migration: the source alone, nothing held.
    shared.set_phase(Phase::Failed);
    let alone = legs(IoKind::Write, 0).unwrap();
    assert!(alone.destination.is_none() && alone.hold.is_none());
    drop(alone);
    drop(unit);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_mirror_with_one_file_side_writes_the_other_on_the_loop_and_the_file_on_the_ring() {
    let dir = scratch("mirror-one-file");
    let file = || FileBackend::open(dir.join("f.img").to_str().unwrap(), Some(SIZE)).unwrap();
    let data = [0x42u8; 4096];

    // RAM source, file destination, cursor past region 0.
    let (unit, shared) = mirror_unit(Box::new(RamBackend::new(SIZE)), Arc::new(file()), 1);
    let legs = unit
        .backend()
        .ring_legs(IoKind::Write, 4096, &data)
        .unwrap();
    assert!(
        legs.source.is_none(),
        "the RAM source was written on the loop"
    );
    assert!(legs.destination.is_some() && legs.destination_len == 4096);
    let mut on_source = [0u8; 4096];
    unit.backend().read_at(4096, &mut on_source).unwrap();
    assert_eq!(
        on_source, data,
        "reads come from the source: it has the write"
    );
    drop(legs);
    // Reads of a side without a file, and its flushes, go to the workers.
    assert!(unit.backend().ring_legs(IoKind::Read, 0, &[]).is_none());
    assert!(unit.backend().ring_legs(IoKind::Flush, 0, &[]).is_none());
    drop(unit);
    drop(shared);
    std::fs::remove_file(dir.join("f.img")).unwrap();

    // File source, RAM destination: the destination is written on the loop, below the
    // cursor only; the source on the ring.
    let dest: Arc<dyn Backend> = Arc::new(RamBackend::new(SIZE));
    let (unit, shared) = mirror_unit(Box::new(file()), Arc::clone(&dest), 1);
    let below = unit
        .backend()
        .ring_legs(IoKind::Write, 4096, &data)
        .unwrap();
    assert!(below.source.is_some() && below.destination.is_none() && below.hold.is_some());
    let mut on_dest = [0u8; 4096];
    dest.read_at(4096, &mut on_dest).unwrap();
    assert_eq!(on_dest, data, "below the cursor: the destination has it");
    drop(below);
    let above = unit
        .backend()
        .ring_legs(IoKind::Write, 2 * REGION_BYTES, &data)
        .unwrap();
    assert_eq!(above.destination_len, 0);
    drop(above);
    dest.read_at(2 * REGION_BYTES, &mut on_dest).unwrap();
    assert_eq!(on_dest, [0u8; 4096], "above the cursor: not yet");
    assert!(unit.backend().ring_legs(IoKind::Read, 0, &[]).is_some());
    assert_eq!(shared.phase(), Phase::Copying);
    drop(unit);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dbt_copying_between_two_files_leaves_writes_to_the_workers() {
    let dir = scratch("dbt-two-files");
    let open = |name: &str| FileBackend::open(dir.join(name).to_str().unwrap(), Some(SIZE));
    let source_unit = Arc::new(LogicalUnit::new(
        Box::new(open("source.img").unwrap()),
        LuConfig::for_name("d"),
    ));
    let shared = Arc::new(Shared::new(Mode::Dbt, SIZE, 8, Phase::Copying));
    let mirror = Mirror::new(
        Arc::new(UnitBackend(Arc::clone(&source_unit))),
        Arc::new(open("dest.img").unwrap()),
        Arc::clone(&shared),
    );
    // Its writes mark the dirty map (and, with a state directory, its durable log).
    assert!(mirror.ring_legs(IoKind::Write, 0, &[0; 4096]).is_none());
    assert!(mirror.ring_legs(IoKind::Read, 0, &[]).is_some());
    // Once ready, every write goes to both files on the ring.
    shared.set_phase(Phase::Ready);
    assert!(mirror
        .ring_legs(IoKind::Write, 0, &[0; 4096])
        .unwrap()
        .destination
        .is_some());
    drop(mirror);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A RAM destination whose writes wait (up to a bound) until `wanted` of them are in at
/// once, and count the most that were.
struct Rendezvous {
    ram: RamBackend,
    inside: Mutex<usize>,
    most: AtomicUsize,
    wanted: usize,
    all_in: Condvar,
}

impl Backend for Rendezvous {
    fn size_bytes(&self) -> u64 {
        self.ram.size_bytes()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.ram.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut inside = self.inside.lock().unwrap();
        *inside += 1;
        self.most.fetch_max(*inside, Ordering::SeqCst);
        self.all_in.notify_all();
        let deadline = Instant::now() + Duration::from_secs(5);
        while *inside < self.wanted && self.most.load(Ordering::SeqCst) < self.wanted {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            inside = self.all_in.wait_timeout(inside, left).unwrap().0;
        }
        *inside -= 1;
        drop(inside);
        self.ram.write_at(offset, data)
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn unmap(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.ram.unmap(offset, len)
    }
    fn kind(&self) -> &'static str {
        "rendezvous"
    }
    fn thin(&self) -> bool {
        false
    }
    fn io_may_block(&self) -> bool {
        true
    }
}

#[test]
fn a_migrating_lun_with_a_side_that_blocks_runs_more_than_two_commands_at_once() {
    let wanted = 6;
    let dest = Arc::new(Rendezvous {
        ram: RamBackend::new(SIZE),
        inside: Mutex::new(0),
        most: AtomicUsize::new(0),
        wanted,
        all_in: Condvar::new(),
    });
    let (unit, _shared) = mirror_unit(Box::new(RamBackend::new(SIZE)), dest.clone(), 8);
    // One write per region (each its own stripe), all queued at once.
    let started = Instant::now();
    let outcomes: Vec<_> = (0..wanted as u64)
        .map(|n| {
            queued(
                &unit,
                QueuedRequest {
                    kind: QueuedKind::Write { durable: false },
                    offset: n * REGION_BYTES,
                    len: 512,
                    data: vec![n as u8 + 1; 512],
                },
            )
        })
        .collect();
    for outcome in outcomes {
        outcome
            .recv_timeout(Duration::from_secs(20))
            .unwrap()
            .unwrap();
    }
    assert_eq!(
        dest.most.load(Ordering::SeqCst),
        wanted,
        "the blocking pool ran two of a unit's commands at once; the workers run {wanted} ({:?})",
        started.elapsed()
    );
    for n in 0..wanted as u64 {
        let mut back = vec![0u8; 512];
        dest.read_at(n * REGION_BYTES, &mut back).unwrap();
        assert_eq!(back, vec![n as u8 + 1; 512]);
    }
}

#[test]
fn a_dbt_write_into_a_region_its_dirty_log_lacks_goes_to_the_blocking_pool_once() {
    let dir = scratch("dbt-log");
    let source_unit = Arc::new(LogicalUnit::new(
        Box::new(RamBackend::new(SIZE)),
        LuConfig::for_name("d"),
    ));
    let shared = Arc::new(Shared::new(Mode::Dbt, SIZE, 0, Phase::Copying));
    let (log, held) = crate::changes::RegionLog::open(
        &dir.join("m.dirty"),
        SIZE,
        crate::migration::DIRTY_LOG_REGION_BYTES,
    )
    .unwrap();
    assert!(held.is_empty());
    shared.set_dirty_log(log, held);
    let dest: Arc<dyn Backend> = Arc::new(RamBackend::new(SIZE));
    let mirror = Mirror::new(
        Arc::new(UnitBackend(Arc::clone(&source_unit))),
        dest,
        Arc::clone(&shared),
    );
    let unit = source_unit.over_backend(Box::new(mirror));
    let data = vec![0x44u8; 4096];
    let write = write10(64, 8);
    assert!(matches!(unit.plan(&task(&write, &data)), Plan::Blocking));
    assert_eq!(unit.execute(&task(&write, &data)).status, 0);
    assert!(matches!(unit.plan(&task(&write, &data)), Plan::Done(ref r) if r.status == 0));
    drop(unit);
    // The log survives: a restart finds the region.
    let (_, held) = crate::changes::RegionLog::open(
        &dir.join("m.dirty"),
        SIZE,
        crate::migration::DIRTY_LOG_REGION_BYTES,
    )
    .unwrap();
    assert_eq!(
        held,
        vec![(0, SIZE)],
        "one 16 MiB region holds the whole 8 MiB LUN"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failure_is_told_once_whichever_thread_sees_it() {
    let shared = Arc::new(Shared::new(Mode::Mirror, SIZE, 8, Phase::Ready));
    let told = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&told);
    shared.set_on_fail(Box::new(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || shared.fail(format!("destination write {i}")))
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(shared.phase(), Phase::Failed);
    assert_eq!(told.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(shared.error().unwrap().starts_with("destination write"));
}
