//! The three transports of the data path against tgt (DESIGN.md, "The path of one I/O"):
//! the same [`ShardPool`] API carried by software TCP, by a dependent adapter model and by
//! an independent adapter model (shard `i` on queue pair `i`) gives identical data, on the
//! LUN and in its backing file; a fault injected in a model while a pool runs fails the I/O
//! it hits with an error naming the fault, and the pool recovers with no acknowledged data
//! lost; the blocking `Client` drives each of them; and `iscsi-ctl` chooses a transport
//! with `--transport` and lists adapters.

use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use datapath::adapter::{DependentAdapter, IndependentAdapter};
use datapath::client::{Client, ClientConfig};
use datapath::shard::{ShardConfig, ShardPath, ShardPool};
use datapath::text::DigestChoice;
use datapath::transport::TransportKind;
use offload::dependent::{DependentModel, DependentModelConfig};
use offload::faults::Faults;
use offload::independent::{IndependentModel, IndependentModelConfig};
use serde_json::Value;
use system_tests::scsi_io::{
    self, assert_backing_file_holds, fault_round, read_all, until_ready, write_then_verify,
    OnClient, OnShard, FAULTS,
};
use system_tests::{pattern, require_tools, run_tool, workspace_binary, TargetSpec, Tgt};

const BLOCK: u32 = 512;
const LUN_BYTES: u64 = 16 << 20;
const SHARDS: usize = 2;

fn start_tgt(iqn: &str) -> Tgt {
    let tgt = Tgt::start(&[TargetSpec::new(iqn, &[LUN_BYTES])]).expect("tgtd starts");
    tgt.allow_digests_and_unsolicited_data(1)
        .expect("tgt allows digests");
    tgt
}

fn client_config(tgt: &Tgt) -> ClientConfig {
    let mut config = ClientConfig::new(tgt.portal(), Some(tgt.iqn(0).to_string()));
    config.offer.header_digests = vec![DigestChoice::Crc32c];
    config.offer.data_digests = vec![DigestChoice::Crc32c];
    config.offer.max_recv_data_segment_length = 64 * 1024;
    config.offer.max_burst_length = 256 * 1024;
    config.command_timeout = Duration::from_secs(20);
    // No NOP-Out during a test: a fault armed for "the next submission" must hit the I/O.
    config.nop_interval = Duration::from_secs(600);
    config
}

/// The three transports ([`TransportKind::ALL`]), each adapter over a fresh model with a
/// queue pair per shard, kept here for its fault hooks.
#[derive(Clone)]
enum Transport {
    Software,
    Dependent(Arc<DependentModel>),
    Independent(Arc<IndependentModel>),
}

impl Transport {
    fn new(kind: TransportKind) -> Transport {
        match kind {
            TransportKind::Software => Transport::Software,
            TransportKind::Dependent => {
                Transport::Dependent(DependentModel::new(DependentModelConfig {
                    queue_pairs: SHARDS,
                    ..DependentModelConfig::default()
                }))
            }
            TransportKind::Independent => {
                Transport::Independent(IndependentModel::new(IndependentModelConfig {
                    queue_pairs: SHARDS,
                    ..IndependentModelConfig::default()
                }))
            }
        }
    }

    fn all() -> Vec<Transport> {
        TransportKind::ALL.into_iter().map(Transport::new).collect()
    }

    fn path(&self) -> ShardPath {
        match self {
            Transport::Software => ShardPath::Software,
            Transport::Dependent(m) => {
                let adapter: Arc<dyn DependentAdapter> = m.clone();
                ShardPath::Dependent(adapter)
            }
            Transport::Independent(m) => {
                let adapter: Arc<dyn IndependentAdapter> = m.clone();
                ShardPath::Independent(adapter)
            }
        }
    }

    fn kind(&self) -> TransportKind {
        self.path().kind()
    }

    fn name(&self) -> &'static str {
        self.kind().name()
    }

    fn faults(&self) -> Option<&Faults> {
        match self {
            Transport::Software => None,
            Transport::Dependent(m) => Some(m.faults()),
            Transport::Independent(m) => Some(m.faults()),
        }
    }
}

fn start_pool(tgt: &Tgt, transport: &Transport) -> ShardPool {
    let config = ShardConfig {
        core: Some(0),
        queue_depth: 8,
        path: transport.path(),
        ..ShardConfig::default()
    };
    let pool = ShardPool::start(&client_config(tgt), SHARDS, &config)
        .unwrap_or_else(|e| panic!("{} pool starts: {e}", transport.name()));
    for shard in 0..SHARDS {
        until_ready(&mut OnShard::new(&pool, shard), tgt.first_data_lun());
    }
    pool
}

/// The I/Os of one workload: sizes from one block to 512 (256 KiB: several Data-In PDUs
/// and R2Ts).
fn layout() -> Vec<(u64, u32)> {
    scsi_io::layout(&[8, 1, 128, 512, 33, 64, 7, 256], 3)
}

#[test]
fn the_same_workload_through_all_three_transports_gives_identical_data() {
    require_tools!("tgtd", "tgtadm");
    let tgt = start_tgt("iqn.2026-11.test:transports-identical");
    let lun = tgt.first_data_lun();
    let transports = Transport::all();
    let pools: Vec<ShardPool> = transports.iter().map(|t| start_pool(&tgt, t)).collect();

    // Each transport's shards write and verify their own regions...
    let region_blocks = LUN_BYTES / u64::from(BLOCK) / (transports.len() * SHARDS) as u64;
    let mut written: Vec<Vec<(u64, Vec<u8>)>> = Vec::new();
    for (t, pool) in pools.iter().enumerate() {
        let mut by_transport = Vec::new();
        for shard in 0..SHARDS {
            let region = (t * SHARDS + shard) as u64 * region_blocks;
            let seed = (t * SHARDS + shard) as u64 + 1;
            let on_shard = &mut OnShard::new(pool, shard);
            by_transport.extend(write_then_verify(on_shard, lun, &layout(), region, seed));
        }
        written.push(by_transport);
    }
    // ...and every transport reads what every other wrote: identical data.
    for (reader, pool) in pools.iter().enumerate() {
        for (writer, data) in written.iter().enumerate() {
            let seen = read_all(&mut OnShard::new(pool, reader % SHARDS), lun, data);
            for ((lba, expected), got) in data.iter().zip(seen) {
                assert!(
                    got == *expected,
                    "{} reads other data at LBA {lba} than {} wrote",
                    transports[reader].name(),
                    transports[writer].name()
                );
            }
        }
    }
    for data in &written {
        assert_backing_file_holds(&tgt, data);
    }

    // Each pool says which path, queue pair and core each shard has, and counted its I/O.
    for (transport, pool) in transports.iter().zip(&pools) {
        for shard in 0..SHARDS {
            let info = pool.path_info(shard).expect("path info");
            assert_eq!(info.transport, transport.name());
            let adapter = transport.kind().is_adapter();
            assert_eq!(info.queue_pair, adapter.then_some(shard), "{info:?}");
            assert_eq!(info.adapter.is_some(), adapter, "{info:?}");
            assert!(info.core.is_some(), "pinned: {info:?}");
            let stats = pool.stats(shard).expect("stats");
            assert_eq!(stats.ios_failed, 0, "{}: {stats:?}", transport.name());
            assert!(stats.bytes >= 2 * 1009 * u64::from(BLOCK), "{stats:?}");
        }
    }
    // The dependent adapter places Data-In: the host copied no payload.
    let dependent = pools[1].all_stats();
    assert_eq!(
        dependent.iter().map(|s| s.bytes_copied).sum::<u64>(),
        0,
        "{dependent:?}"
    );
    for transport in &transports[1..] {
        let cpu = transport.path().adapter_cpu_time().expect("adapter CPU");
        assert!(cpu > Duration::ZERO, "{}: no adapter CPU", transport.name());
    }
    for pool in pools {
        let stats = pool.shutdown();
        assert!(stats.iter().all(|s| s.queue_depth == 0), "{stats:?}");
    }
}

#[test]
fn faults_injected_while_a_pool_runs_fail_the_io_by_name_and_the_pool_recovers() {
    require_tools!("tgtd", "tgtadm");
    let tgt = start_tgt("iqn.2026-11.test:transports-faults");
    let lun = tgt.first_data_lun();
    let half = LUN_BYTES / u64::from(BLOCK) / 2;
    for (t, transport) in Transport::all().into_iter().skip(1).enumerate() {
        let pool = start_pool(&tgt, &transport);
        let faults = transport.faults().expect("a model");
        // Shard 1 holds acknowledged data that no fault may touch.
        let region = t as u64 * half;
        let bystander_shard = &mut OnShard::new(&pool, 1);
        let bystander = write_then_verify(
            bystander_shard,
            lun,
            &layout(),
            region + half / 2,
            40 + t as u64,
        );
        for (round, case) in FAULTS.into_iter().enumerate() {
            let lba = region + 1024 * round as u64;
            fault_round(&mut OnShard::new(&pool, 0), &tgt, faults, lba, case);
        }
        let seen = read_all(bystander_shard, lun, &bystander);
        for ((lba, expected), got) in bystander.iter().zip(seen) {
            assert!(
                got == *expected,
                "{}: shard 1 lost LBA {lba}",
                transport.name()
            );
        }
        let stats = pool.stats(0).expect("stats");
        assert!(
            stats.ios_failed >= FAULTS.len() as u64,
            "{}: {stats:?}",
            transport.name()
        );
        assert_eq!(pool.stats(1).expect("stats").ios_failed, 0);
        pool.shutdown();
    }
}

#[test]
fn the_blocking_client_drives_every_transport() {
    require_tools!("tgtd", "tgtadm");
    let tgt = start_tgt("iqn.2026-11.test:transports-client");
    let lun = tgt.first_data_lun();
    let region_blocks = LUN_BYTES / u64::from(BLOCK) / 3;
    let mut written = Vec::new();
    for (t, transport) in Transport::all().into_iter().enumerate() {
        let mut config = client_config(&tgt);
        config.queue_depth = 8;
        let mut client = Client::connect_path(&config, transport.path())
            .unwrap_or_else(|e| panic!("{} client logs in: {e}", transport.name()));
        assert_eq!(client.path_name(), transport.name());
        // Only the software path's session lives in the client.
        assert_eq!(client.session().is_some(), !transport.kind().is_adapter());
        let on_client = &mut OnClient(&mut client);
        until_ready(on_client, lun);
        let region = t as u64 * region_blocks;
        written.extend(write_then_verify(
            on_client,
            lun,
            &layout(),
            region,
            70 + t as u64,
        ));
        client.logout().expect("logout");
    }
    assert_backing_file_holds(&tgt, &written);
}

/// The `iscsi-ctl` binary of this workspace.
fn iscsi_ctl() -> PathBuf {
    workspace_binary("tools", "iscsi-ctl")
}

fn ctl(args: &[&str]) -> Output {
    let path = iscsi_ctl().to_string_lossy().into_owned();
    run_tool(&path, args, Duration::from_secs(60))
}

fn ctl_ok(args: &[&str]) -> String {
    let out = ctl(args);
    assert!(
        out.status.success(),
        "iscsi-ctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../offload/tests/fixtures/sysfs")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn iscsi_ctl_adapters_lists_the_fixture_adapters_with_their_kinds() {
    let cases = [
        ("bnx2i", "dependent"),
        ("qedi", "dependent"),
        ("cxgb3i", "dependent"),
        ("cxgb4i", "dependent"),
        ("be2iscsi", "dependent"),
        ("qla4xxx", "independent"),
    ];
    for (tree, kind) in cases {
        let root = fixture(tree);
        let json: Value =
            serde_json::from_str(&ctl_ok(&["adapters", "--json", "--sysfs-root", &root]))
                .expect("adapters --json prints JSON");
        let real = json["real"].as_array().expect("a list of real adapters");
        assert_eq!(real.len(), 1, "{tree}: {json}");
        assert_eq!(real[0]["kind"], kind, "{tree}: {json}");
        assert_eq!(real[0]["driver"], tree, "{tree}: {json}");
        let text = ctl_ok(&["adapters", "--sysfs-root", &root]);
        assert!(
            text.lines().any(|l| l.contains(tree) && l.contains(kind)),
            "{tree}: text output does not show `{tree}` as {kind}:\n{text}"
        );
    }
    // A software host is listed as such, not as an offload adapter.
    let json: Value = serde_json::from_str(&ctl_ok(&[
        "adapters",
        "--json",
        "--sysfs-root",
        &fixture("mixed"),
    ]))
    .expect("JSON");
    let kinds: Vec<&str> = json["real"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|a| a["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"software"), "{json}");
}

#[test]
fn iscsi_ctl_adapters_json_shows_the_models_and_their_queue_pinning() {
    let empty = std::env::temp_dir().join(format!("iscsi-ctl-no-sysfs-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("temp dir");
    let root = empty.to_string_lossy().into_owned();
    let out = ctl_ok(&[
        "adapters",
        "--json",
        "--shards",
        "3",
        "--core",
        "0",
        "--sysfs-root",
        &root,
    ]);
    let json: Value = serde_json::from_str(&out).expect("adapters --json prints JSON");
    let models = json["models"].as_array().expect("models");
    let kinds: Vec<&str> = models.iter().filter_map(|m| m["kind"].as_str()).collect();
    assert_eq!(kinds, ["dependent", "independent"], "{json}");
    for model in models {
        assert_eq!(model["queue_pairs"], 3, "{model}");
        let queues = model["queues"].as_array().expect("queues");
        assert_eq!(queues.len(), 3, "{model}");
        for (i, q) in queues.iter().enumerate() {
            assert_eq!(q["queue_pair"], i, "{q}");
            assert_eq!(q["shard"], i, "{q}");
            assert!(q["core"].is_u64(), "pinned: {q}");
        }
        assert!(model["capabilities"]["tcp_offload"]
            .as_bool()
            .expect("bool"));
    }
    assert_eq!(json["real"].as_array().map(Vec::len), Some(0), "{json}");
    let text = ctl_ok(&["adapters", "--sysfs-root", &root]);
    assert!(
        text.contains("no offload adapters found in"),
        "text output: {text}"
    );
    // And the real system (none on a test machine, or whatever it has) still gives JSON.
    let _: Value = serde_json::from_str(&ctl_ok(&["adapters", "--json"])).expect("JSON");
    let _ = std::fs::remove_dir_all(&empty);
}

#[test]
fn iscsi_ctl_moves_the_same_bytes_over_every_transport() {
    require_tools!("tgtd", "tgtadm");
    let tgt = start_tgt("iqn.2026-11.test:transports-ctl");
    let url = format!(
        "iscsi://{}/{}/{}",
        tgt.portal(),
        tgt.iqn(0),
        tgt.first_data_lun()
    );
    let dir = std::env::temp_dir().join(format!("iscsi-ctl-transports-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let transports = TransportKind::ALL.map(TransportKind::name);
    for (i, writer) in transports.iter().enumerate() {
        let data = pattern(96 * 1024, 77 + i as u64);
        let input = dir.join(format!("in-{writer}"));
        std::fs::write(&input, &data).expect("write input");
        let lba = (i * 1024).to_string();
        let input_text = input.to_string_lossy().into_owned();
        ctl_ok(&[
            "--transport",
            writer,
            "write",
            &url,
            "--lba",
            &lba,
            "--in",
            &input_text,
        ]);
        for reader in transports {
            let output = dir.join(format!("out-{writer}-{reader}"));
            let output_text = output.to_string_lossy().into_owned();
            let blocks = (data.len() / BLOCK as usize).to_string();
            ctl_ok(&[
                "--transport",
                reader,
                "read",
                &url,
                "--lba",
                &lba,
                "--blocks",
                &blocks,
                "--out",
                &output_text,
            ]);
            let got = std::fs::read(&output).expect("read output");
            assert!(
                got == data,
                "{reader} reads other bytes than {writer} wrote"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
