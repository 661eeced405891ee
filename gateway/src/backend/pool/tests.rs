//! The pool against a model: random operations on a simulated disk, contents compared with
//! plain byte arrays, `check` after every step; and power cuts that drop a random part of
//! the unsynced writes, after which every block holds what was last synced, something this
//! volume wrote since, or zeros, never another volume's data.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use proptest::prelude::*;

use super::engine::Engine;
use super::format::{Layout, CHUNK_BYTES};
use super::store::{SimStore, Store};
use super::Pool;

const CHUNKS: u32 = 24;
const VOLUME_BYTES: u64 = 4 * CHUNK_BYTES;
const BLOCK: u64 = 512;

/// A small pool whose journal fills after a few batches, so checkpoints happen too.
fn sim_pool(store: &SimStore) -> Pool {
    let layout = Layout {
        journal_bytes: 64 << 10,
        ..Layout::for_chunks(CHUNKS)
    };
    Engine::format(store, layout, 42).unwrap();
    Pool::with_store(Box::new(store.clone()), PathBuf::from("sim")).unwrap()
}

fn reopen(store: &SimStore) -> Pool {
    Pool::with_store(Box::new(store.clone()), PathBuf::from("sim")).unwrap()
}

#[derive(Debug, Clone)]
enum Op {
    /// Write `blocks` blocks at `block` of volume `volume` (an index into the live ones).
    Write {
        volume: usize,
        block: u64,
        blocks: u64,
    },
    Unmap {
        volume: usize,
        block: u64,
        blocks: u64,
    },
    Flush,
    Clone {
        volume: usize,
    },
    Delete {
        volume: usize,
    },
    /// Whole-chunk remap (EXTENDED COPY inside a pool).
    Remap {
        from: usize,
        to: usize,
        chunk: u32,
        dest_chunk: u32,
        chunks: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let blocks = VOLUME_BYTES / BLOCK;
    prop_oneof![
        6 => (0..4usize, 0..blocks, 1..700u64).prop_map(move |(volume, block, n)| Op::Write {
            volume,
            block,
            blocks: n.min(blocks - block),
        }),
        2 => (0..4usize, 0..blocks, 1..5000u64).prop_map(move |(volume, block, n)| Op::Unmap {
            volume,
            block,
            blocks: n.min(blocks - block),
        }),
        2 => Just(Op::Flush),
        1 => (0..4usize).prop_map(|volume| Op::Clone { volume }),
        1 => (0..4usize).prop_map(|volume| Op::Delete { volume }),
        1 => (0..4usize, 0..4usize, 0..4u32, 0..4u32, 1..4u32).prop_map(
            |(from, to, chunk, dest_chunk, chunks)| Op::Remap {
                from,
                to,
                chunk,
                dest_chunk,
                chunks: chunks.min(4 - chunk).min(4 - dest_chunk),
            }
        ),
    ]
}

/// Each 512-byte block written carries (volume id, block, stamp) in every 8 bytes, so a
/// block read back names where it came from.
fn stamped(volume: u32, block: u64, stamp: u32) -> Vec<u8> {
    let word = (u64::from(volume) << 48) | (block << 20) | u64::from(stamp);
    word.to_le_bytes().repeat((BLOCK / 8) as usize)
}

/// The model: the volumes' contents, and for the crash test the set of contents each block
/// may have after a power cut.
struct Model {
    names: Vec<String>,
    contents: BTreeMap<String, Vec<Vec<u8>>>,
    possible: BTreeMap<String, Vec<HashSet<Vec<u8>>>>,
    next_name: u32,
}

impl Model {
    fn new(pool: &Pool) -> Model {
        let mut model = Model {
            names: Vec::new(),
            contents: BTreeMap::new(),
            possible: BTreeMap::new(),
            next_name: 0,
        };
        for _ in 0..2 {
            model.add(pool, None);
        }
        model
    }

    fn add(&mut self, pool: &Pool, source: Option<&str>) {
        let name = format!("v{}", self.next_name);
        self.next_name += 1;
        let blocks = (VOLUME_BYTES / BLOCK) as usize;
        let (contents, possible) = match source {
            None => {
                pool.create_volume(&name, VOLUME_BYTES).unwrap();
                let zero = vec![0u8; BLOCK as usize];
                (
                    vec![zero.clone(); blocks],
                    vec![HashSet::from([zero]); blocks],
                )
            }
            Some(source) => {
                pool.clone_volume(source, &name).unwrap();
                // A clone commits: everything written so far is durable.
                self.synced();
                let contents = self.contents[source].clone();
                let possible = contents
                    .iter()
                    .map(|c| HashSet::from([c.clone()]))
                    .collect();
                (contents, possible)
            }
        };
        self.contents.insert(name.clone(), contents);
        self.possible.insert(name.clone(), possible);
        self.names.push(name);
    }

    fn synced(&mut self) {
        for (name, contents) in &self.contents {
            let possible = self.possible.get_mut(name).unwrap();
            for (p, c) in possible.iter_mut().zip(contents) {
                *p = HashSet::from([c.clone()]);
            }
        }
    }

    fn set(&mut self, name: &str, block: usize, data: Vec<u8>) {
        self.possible.get_mut(name).unwrap()[block].insert(data.clone());
        self.contents.get_mut(name).unwrap()[block] = data;
    }

    fn apply(&mut self, pool: &Pool, op: &Op, stamp: u32) {
        let name_of = |names: &Vec<String>, i: usize| names[i % names.len()].clone();
        match *op {
            Op::Write {
                volume,
                block,
                blocks,
            } => {
                let name = name_of(&self.names, volume);
                let id = pool.engine().volume(&name).unwrap().id;
                let mut data = Vec::new();
                for b in block..block + blocks {
                    let bytes = stamped(id, b, stamp);
                    self.set(&name, b as usize, bytes.clone());
                    data.extend_from_slice(&bytes);
                }
                pool.engine().write(id, block * BLOCK, &data).unwrap();
            }
            Op::Unmap {
                volume,
                block,
                blocks,
            } => {
                let name = name_of(&self.names, volume);
                let id = pool.engine().volume(&name).unwrap().id;
                pool.engine()
                    .unmap(id, block * BLOCK, blocks * BLOCK)
                    .unwrap();
                for b in block..block + blocks {
                    self.set(&name, b as usize, vec![0; BLOCK as usize]);
                }
            }
            Op::Flush => {
                pool.engine().flush().unwrap();
                self.synced();
            }
            Op::Clone { volume } => {
                if self.names.len() < 4 {
                    let source = name_of(&self.names, volume);
                    self.add(pool, Some(&source));
                }
            }
            Op::Delete { volume } => {
                if self.names.len() > 1 {
                    let name = self.names.remove(volume % self.names.len());
                    pool.delete_volume(&name).unwrap();
                    self.contents.remove(&name);
                    self.possible.remove(&name);
                    self.synced();
                }
            }
            Op::Remap {
                from,
                to,
                chunk,
                dest_chunk,
                chunks,
            } => {
                let (source, dest) = (name_of(&self.names, from), name_of(&self.names, to));
                let ids = (
                    pool.engine().volume(&source).unwrap().id,
                    pool.engine().volume(&dest).unwrap().id,
                );
                pool.engine()
                    .remap(ids.0, chunk, ids.1, dest_chunk, chunks)
                    .unwrap();
                let per_chunk = (CHUNK_BYTES / BLOCK) as usize;
                let copied: Vec<Vec<u8>> = self.contents[&source]
                    [chunk as usize * per_chunk..(chunk + chunks) as usize * per_chunk]
                    .to_vec();
                for (i, data) in copied.into_iter().enumerate() {
                    self.set(&dest, dest_chunk as usize * per_chunk + i, data);
                }
            }
        }
    }

    fn assert_contents(&self, pool: &Pool) {
        for name in &self.names {
            let id = pool.engine().volume(name).unwrap().id;
            let mut bytes = vec![0u8; VOLUME_BYTES as usize];
            pool.engine().read(id, 0, &mut bytes).unwrap();
            for (block, expected) in self.contents[name].iter().enumerate() {
                let got = &bytes[block * BLOCK as usize..(block + 1) * BLOCK as usize];
                assert!(got == &expected[..], "{name} block {block} differs");
            }
        }
    }
}

fn assert_checks(pool: &Pool) {
    let report = pool.check();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn the_pool_matches_the_model_and_checks_clean(ops in proptest::collection::vec(op(), 1..40)) {
        let store = SimStore::new();
        let pool = sim_pool(&store);
        let mut model = Model::new(&pool);
        for (stamp, op) in ops.iter().enumerate() {
            model.apply(&pool, op, stamp as u32 + 1);
            assert_checks(&pool);
        }
        model.assert_contents(&pool);
        // What a flush made durable comes back on open.
        pool.engine().flush().unwrap();
        let reopened = reopen(&store);
        assert_checks(&reopened);
        model.assert_contents(&reopened);
    }

    #[test]
    fn after_a_power_cut_blocks_hold_synced_or_own_data(
        ops in proptest::collection::vec(op(), 1..40),
        seed in any::<u64>(),
    ) {
        let store = SimStore::new();
        let pool = sim_pool(&store);
        let mut model = Model::new(&pool);
        for (stamp, op) in ops.iter().enumerate() {
            model.apply(&pool, op, stamp as u32 + 1);
        }
        let survivor = store.power_cut(seed);
        let pool = reopen(&survivor);
        assert_checks(&pool);
        for name in &model.names {
            let Some(volume) = pool.engine().volume(name) else {
                panic!("{name}: a committed volume is gone");
            };
            let mut bytes = vec![0u8; VOLUME_BYTES as usize];
            pool.engine().read(volume.id, 0, &mut bytes).unwrap();
            for (block, possible) in model.possible[name].iter().enumerate() {
                let got = &bytes[block * BLOCK as usize..(block + 1) * BLOCK as usize];
                assert!(
                    possible.contains(got),
                    "{name} block {block} holds {:02x?}, none of the {} allowed",
                    &got[..8],
                    possible.len()
                );
            }
        }
    }
}

#[test]
fn a_small_write_into_a_new_chunk_allocates_one_sub_chunk_and_lba_status_is_exact() {
    let store = SimStore::new();
    let pool = sim_pool(&store);
    pool.create_volume("a", VOLUME_BYTES).unwrap();
    let id = pool.engine().volume("a").unwrap().id;
    pool.engine()
        .write(id, CHUNK_BYTES + 8192, &[7u8; 4096])
        .unwrap();
    let info = &pool.list_volumes()[0];
    assert_eq!((info.chunks, info.allocated_bytes), (1, 4096));
    let engine = pool.engine();
    assert_eq!(
        engine.mapped_extent(id, 0, VOLUME_BYTES),
        (false, CHUNK_BYTES + 8192)
    );
    assert_eq!(
        engine.mapped_extent(id, CHUNK_BYTES + 8192, VOLUME_BYTES),
        (true, 4096)
    );
    // Unmapping the whole chunk frees it at the next commit.
    engine.unmap(id, CHUNK_BYTES, CHUNK_BYTES).unwrap();
    engine.flush().unwrap();
    let report = pool.check();
    assert_eq!((report.used_chunks, report.problems.len()), (0, 0));
}

#[test]
fn a_clone_shares_chunks_until_written_and_a_delete_frees_them() {
    let store = SimStore::new();
    let pool = sim_pool(&store);
    pool.create_volume("base", VOLUME_BYTES).unwrap();
    let base = pool.engine().volume("base").unwrap().id;
    pool.engine()
        .write(base, 0, &vec![1u8; 2 * CHUNK_BYTES as usize])
        .unwrap();
    pool.clone_volume("base", "copy").unwrap();
    assert_eq!(pool.check().used_chunks, 2, "shared, not copied");
    let copy = pool.engine().volume("copy").unwrap().id;
    pool.engine().write(copy, 4096, &[2u8; 512]).unwrap();
    assert_eq!(pool.check().used_chunks, 3, "one chunk copied on write");
    let mut byte = [0u8; 1];
    pool.engine().read(base, 4096, &mut byte).unwrap();
    assert_eq!(byte[0], 1, "the source keeps its data");
    pool.engine().read(copy, 4096 + 511, &mut byte).unwrap();
    assert_eq!(byte[0], 2);
    pool.engine().read(copy, 8192, &mut byte).unwrap();
    assert_eq!(byte[0], 1, "the rest of the chunk was copied");
    pool.delete_volume("base").unwrap();
    let report = pool.check();
    assert_eq!((report.used_chunks, report.problems.len()), (2, 0));
    assert!(matches!(
        pool.delete_volume("base"),
        Err(super::PoolError::NoVolume(_))
    ));
}

#[test]
fn ten_thousand_volumes_cost_metadata_only_for_what_they_map() {
    let store = SimStore::new();
    let pool = sim_pool(&store);
    for i in 0..200 {
        pool.create_volume(&format!("vm{i}"), 1 << 40).unwrap();
    }
    let report = pool.check();
    assert_eq!(report.volumes, 200);
    assert!(
        report.metadata_bytes < 200 * 32,
        "{}",
        report.metadata_bytes
    );
    let _ = store.sync();
}

#[test]
fn a_chunk_left_by_copy_on_write_is_not_overwritten_before_the_commit() {
    // A and its clone B share a chunk; A copies it on write, then B writes all of it. On
    // disk A still maps the shared chunk until a commit: B must not write it in place.
    for seed in 1..40u64 {
        let store = SimStore::new();
        let pool = sim_pool(&store);
        pool.create_volume("a", VOLUME_BYTES).unwrap();
        let a = pool.engine().volume("a").unwrap().id;
        pool.engine()
            .write(a, 0, &vec![0xaa; CHUNK_BYTES as usize])
            .unwrap();
        pool.clone_volume("a", "b").unwrap();
        let b = pool.engine().volume("b").unwrap().id;
        pool.engine().write(a, 0, &[0xa1; 4096]).unwrap();
        pool.engine()
            .write(b, 0, &vec![0xbb; CHUNK_BYTES as usize])
            .unwrap();
        let pool = reopen(&store.power_cut(seed));
        assert_checks(&pool);
        let mut bytes = vec![0u8; CHUNK_BYTES as usize];
        pool.engine().read(a, 0, &mut bytes).unwrap();
        assert!(
            bytes[4096..].iter().all(|&x| x == 0xaa),
            "seed {seed}: volume a reads b's data"
        );
    }
}

#[test]
fn a_full_pool_refuses_new_chunks_with_space_exhausted_and_stays_consistent() {
    let store = SimStore::new();
    let pool = sim_pool(&store);
    pool.create_volume("big", 64 * CHUNK_BYTES).unwrap();
    let id = pool.engine().volume("big").unwrap().id;
    for chunk in 0..u64::from(CHUNKS) {
        pool.engine()
            .write(id, chunk * CHUNK_BYTES, &[1; 512])
            .unwrap();
    }
    let error = pool
        .engine()
        .write(id, u64::from(CHUNKS) * CHUNK_BYTES, &[1; 512])
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::StorageFull);
    assert!(error
        .get_ref()
        .is_some_and(|e| e.is::<crate::backend::SpaceExhausted>()));
    // Unmapping one chunk frees it at the next commit, and the write then succeeds.
    pool.engine().unmap(id, 0, CHUNK_BYTES).unwrap();
    pool.engine().flush().unwrap();
    pool.engine()
        .write(id, u64::from(CHUNKS) * CHUNK_BYTES, &[1; 512])
        .unwrap();
    assert_checks(&pool);
}

/// Issue 16: create + attach through the control plane costs one flush per RPC. A volume
/// operation with no writes pending is one journal append and one sync; with writes
/// pending it syncs their data first (rule 1), and after a power cut the clone it made
/// holds the source's synced data.
#[test]
fn a_volume_operation_syncs_data_only_when_writes_are_pending() {
    let store = SimStore::new();
    let pool = sim_pool(&store);
    let before = store.syncs();
    pool.create_volume("a", VOLUME_BYTES).unwrap();
    assert_eq!(store.syncs() - before, 1, "create: the journal's sync only");
    let before = store.syncs();
    pool.grow_volume("a", 2 * VOLUME_BYTES).unwrap();
    assert_eq!(store.syncs() - before, 1, "grow: the journal's sync only");

    let a = pool.engine().volume("a").unwrap().id;
    pool.engine().write(a, 0, &[7u8; 4096]).unwrap();
    let before = store.syncs();
    pool.clone_volume("a", "b").unwrap();
    assert_eq!(
        store.syncs() - before,
        2,
        "data pending: data sync, then the journal's"
    );

    let after = reopen(&store.power_cut(7));
    let b = after.engine().volume("b").unwrap().id;
    let mut block = [0u8; 4096];
    after.engine().read(b, 0, &mut block).unwrap();
    assert_eq!(block, [7u8; 4096], "the clone's map points at synced data");
    assert_checks(&after);
}

/// Issue 18: an unbind flushes its volume, and a volume that was only read has nothing to
/// make durable: the flush makes no sync then. A write (in place or not) and an unmap each
/// make the next flush sync again, and what it flushed survives a power cut.
#[test]
fn a_flush_with_nothing_written_since_the_last_one_makes_no_sync() {
    let store = SimStore::new();
    let pool = sim_pool(&store);
    pool.create_volume("a", VOLUME_BYTES).unwrap();
    let a = pool.engine().volume("a").unwrap().id;
    pool.engine().write(a, 0, &[1u8; 4096]).unwrap();
    pool.engine().flush().unwrap();

    let before = store.syncs();
    let mut block = [0u8; 4096];
    pool.engine().read(a, 0, &mut block).unwrap();
    pool.engine().flush().unwrap();
    pool.engine().flush().unwrap();
    assert_eq!(store.syncs(), before, "reads only: no sync");
    assert_eq!(pool.engine().flushes_skipped(), 2);

    // In place this time (the chunk is this volume's alone): still a sync.
    pool.engine().write(a, 0, &[2u8; 4096]).unwrap();
    pool.engine().flush().unwrap();
    assert!(
        store.syncs() > before,
        "a write since the last flush: synced"
    );
    let before = store.syncs();
    pool.engine().unmap(a, 0, CHUNK_BYTES).unwrap();
    pool.engine().flush().unwrap();
    assert!(
        store.syncs() > before,
        "an unmap since the last flush: synced"
    );
    pool.engine().write(a, 8192, &[3u8; 4096]).unwrap();
    pool.engine().flush().unwrap();
    pool.engine().flush().unwrap();

    let after = reopen(&store.power_cut(11));
    let a = after.engine().volume("a").unwrap().id;
    after.engine().read(a, 8192, &mut block).unwrap();
    assert_eq!(block, [3u8; 4096], "the flushed write survives");
    after.engine().read(a, 0, &mut block).unwrap();
    assert_eq!(block, [0u8; 4096], "the flushed unmap survives");
    assert_checks(&after);
}

/// Issue 16, `volume_create` with `attach`: a reserved volume is exportable at once but
/// costs no sync; no checkpoint names it before its record is appended (a power cut then
/// leaves no volume); its record, appended without a sync, is made durable by the next
/// flush before the volume's own data; grow, clone and delete refuse it until then; a
/// cancelled one is gone.
#[test]
fn a_reserved_volume_is_durable_only_from_its_record_and_before_its_data() {
    let store = SimStore::new();
    let pool = sim_pool(&store);
    let engine = pool.engine();
    let before = store.syncs();
    let id = engine.reserve_volume("r", VOLUME_BYTES).unwrap();
    assert_eq!(store.syncs(), before, "a reservation makes no sync");
    assert!(matches!(
        engine.reserve_volume("r", VOLUME_BYTES),
        Err(super::PoolError::VolumeExists(_))
    ));
    for refused in [
        pool.grow_volume("r", 2 * VOLUME_BYTES),
        pool.clone_volume("r", "c"),
        pool.delete_volume("r"),
    ] {
        assert!(
            matches!(refused, Err(super::PoolError::VolumeCreating(_))),
            "{refused:?}"
        );
    }
    // Checkpoints (the small journal fills) while it is reserved: none names it.
    pool.create_volume("other", VOLUME_BYTES).unwrap();
    let other = engine.volume("other").unwrap().id;
    for n in 0..40u64 {
        engine.write(other, n * 4096, &[5u8; 4096]).unwrap();
        engine.flush().unwrap();
    }
    let cut = reopen(&store.power_cut(3));
    assert!(cut.engine().volume("r").is_none(), "reserved only: gone");
    assert_checks(&cut);

    let before = store.syncs();
    engine.journal_reserved(id, false).unwrap();
    assert_eq!(store.syncs(), before, "appended without a sync");
    engine.journal_reserved(id, false).unwrap();
    assert_eq!(store.syncs(), before, "a second call does nothing");
    // The volume's data: the flush that makes it durable syncs the record first.
    engine.write(id, 0, &[9u8; 4096]).unwrap();
    engine.flush().unwrap();
    let after = reopen(&store.power_cut(5));
    let r = after.engine().volume("r").expect("journaled and flushed");
    let mut block = [0u8; 4096];
    after.engine().read(r.id, 0, &mut block).unwrap();
    assert_eq!(block, [9u8; 4096]);
    assert_checks(&after);
    pool.grow_volume("r", 2 * VOLUME_BYTES).unwrap();

    // Cancelled: gone, and its name free again.
    let gone = engine.reserve_volume("gone", VOLUME_BYTES).unwrap();
    engine.cancel_reserved(gone);
    assert!(engine.volume("gone").is_none());
    engine.cancel_reserved(id);
    assert!(engine.volume("r").is_some(), "a journaled volume stays");
    pool.create_volume("gone", VOLUME_BYTES).unwrap();
    assert_checks(&pool);
}

/// A pool file's journal region is backed by blocks (written zeros) once the pool is
/// made or opened, so an append overwrites and its sync flushes data only.
#[test]
fn a_pool_file_has_its_journal_allocated() {
    use std::os::unix::fs::MetadataExt;
    let dir = std::env::temp_dir().join(format!("pool-journal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pool.img");
    let pool = Pool::create(&path, 256 << 20).unwrap();
    let journal = pool.engine().layout().journal_bytes;
    let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
    assert!(
        allocated >= journal,
        "{allocated} bytes allocated, the journal has {journal}"
    );
    assert_eq!(
        pool.engine().allocate_journal().unwrap(),
        0,
        "nothing left to fill"
    );
    drop(pool);
    let _ = std::fs::remove_dir_all(&dir);
}
