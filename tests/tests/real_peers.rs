//! Our initiator against real targets this project did not write: tgt's `tgtd` and `istgt`,
//! each started per test on a free loopback port with its own LUNs.
//!
//! Data checks compare with the LUN's backing file as well as with our own read-back, so a
//! block written to the wrong place cannot pass by being read from the same wrong place.

use std::time::Duration;

use datapath::client::{Client, ClientConfig, ClientError};
use datapath::scsi::probe::{probe_lun, ProbeConfig};
use datapath::scsi::Cdb;
use datapath::session::{ChapConfig, Request};
use datapath::text::DigestChoice;
use system_tests::{pattern, ChapSpec, Istgt, LunSpec, TargetSpec, Tgt};

const BLOCK: u32 = 512;
const LUN_BYTES: u64 = 8 << 20;

fn target(iqn: &str) -> TargetSpec {
    TargetSpec {
        iqn: iqn.to_string(),
        luns: vec![LunSpec {
            size_bytes: LUN_BYTES,
        }],
        chap: None,
    }
}

/// Login and operational choices for one pass over the LUN.
#[derive(Clone, Copy, Debug)]
struct Variant {
    digests: bool,
    immediate_data: bool,
    initial_r2t: bool,
    max_burst_length: u32,
    io_bytes: u32,
}

fn client_config(portal: std::net::SocketAddr, iqn: &str, v: Variant) -> ClientConfig {
    let mut config = ClientConfig::new(portal, Some(iqn.to_string()));
    let digest = if v.digests {
        vec![DigestChoice::Crc32c]
    } else {
        vec![DigestChoice::None]
    };
    config.offer.header_digests = digest.clone();
    config.offer.data_digests = digest;
    config.offer.immediate_data = v.immediate_data;
    config.offer.initial_r2t = v.initial_r2t;
    config.offer.max_burst_length = v.max_burst_length;
    config.offer.first_burst_length = v.max_burst_length.min(65536);
    config.command_timeout = Duration::from_secs(20);
    config.queue_depth = 8;
    config
}

fn execute_ok(client: &mut Client, lun: u64, cdb: &Cdb, buffer: Vec<u8>) -> Vec<u8> {
    for _ in 0..3 {
        let outcome = client
            .execute(Request::new(lun, cdb.clone(), buffer.clone(), 0))
            .expect("command completes");
        if outcome.status == 0 {
            return outcome.buffer;
        }
        // A fresh LUN reports a unit attention (power on / reset) once.
        assert!(
            datapath::scsi::is_unit_attention(outcome.status, outcome.sense.as_deref()),
            "status {:#x}, sense {:02x?}",
            outcome.status,
            outcome.sense
        );
    }
    panic!("unit attention repeated");
}

/// Writes pseudo-random data over the whole LUN in `io_bytes` commands (pipelined),
/// reads it back, and compares with what was sent and with the backing file.
fn whole_lun_round_trip(
    portal: std::net::SocketAddr,
    iqn: &str,
    lun: u64,
    backing: &std::path::Path,
    v: Variant,
    seed: u64,
    peer_requires_initial_r2t: bool,
) {
    let mut client = Client::connect(&client_config(portal, iqn, v))
        .unwrap_or_else(|e| panic!("login with {v:?}: {e}"));
    let params = client.params().cloned().expect("negotiated");
    assert_eq!(
        params.header_digest, v.digests,
        "{v:?}: header digest not as offered"
    );
    assert_eq!(
        params.data_digest, v.digests,
        "{v:?}: data digest not as offered"
    );
    // The peers are configured to accept what we offer, so each variant is real.
    assert_eq!(
        params.immediate_data, v.immediate_data,
        "{v:?}: ImmediateData"
    );
    // InitialR2T is an OR: istgt 0.4 cannot be configured to No.
    let initial_r2t = v.initial_r2t || peer_requires_initial_r2t;
    assert_eq!(params.initial_r2t, initial_r2t, "{v:?}: InitialR2T");
    assert_eq!(
        params.max_burst_length, v.max_burst_length,
        "{v:?}: MaxBurstLength"
    );
    let writes_before = client.session().expect("software session").stats();
    // The LUN probe, past the unit attention a new LUN reports: the capacity is the LUN's.
    let facts = probe_lun(&mut client, lun, ProbeConfig::FULL)
        .unwrap_or_else(|e| panic!("{v:?}: probe: {e}"));
    assert_eq!(facts.size().expect("capacity"), (LUN_BYTES, BLOCK), "{v:?}");

    let data = pattern(LUN_BYTES as usize, seed);
    let blocks_per_io = v.io_bytes / BLOCK;
    let mut writes = Vec::new();
    for (i, chunk) in data.chunks(v.io_bytes as usize).enumerate() {
        let lba = i as u64 * blocks_per_io as u64;
        let cdb = Cdb::write(lba, chunk.len() as u32 / BLOCK, BLOCK, false).expect("cdb");
        writes.push(Request::new(lun, cdb, chunk.to_vec(), 0));
    }
    for result in client.execute_batch(writes).expect("write batch") {
        let outcome = result.unwrap_or_else(|e| panic!("{v:?}: write failed: {e}"));
        assert_eq!(outcome.status, 0, "{v:?}: write status");
    }
    let mut reads = Vec::new();
    for i in 0..(LUN_BYTES / v.io_bytes as u64) {
        let lba = i * blocks_per_io as u64;
        let cdb = Cdb::read(lba, blocks_per_io, BLOCK, false).expect("cdb");
        reads.push(Request::new(lun, cdb, vec![0u8; v.io_bytes as usize], 0));
    }
    let mut read_back = Vec::with_capacity(data.len());
    for result in client.execute_batch(reads).expect("read batch") {
        let outcome = result.unwrap_or_else(|e| panic!("{v:?}: read failed: {e}"));
        assert_eq!(outcome.status, 0, "{v:?}: read status");
        assert_eq!(outcome.transferred, v.io_bytes, "{v:?}: short read");
        read_back.extend_from_slice(&outcome.buffer);
    }
    // The burst limit must really have split writes into several R2T-driven sequences.
    let stats = client.session().expect("software session").stats();
    let r2ts = stats.r2ts - writes_before.r2ts;
    // At most FirstBurstLength goes unsolicited; the rest needs one R2T per burst.
    let solicited = v.io_bytes.saturating_sub(v.max_burst_length.min(65536)) as u64;
    let writes = LUN_BYTES / v.io_bytes as u64;
    let min_r2ts = writes * solicited.div_ceil(v.max_burst_length as u64);
    assert!(
        r2ts >= min_r2ts,
        "{v:?}: only {r2ts} R2Ts for the whole LUN"
    );
    let sync = Cdb::synchronize_cache_10(0, 0, false);
    execute_ok(&mut client, lun, &sync, Vec::new());
    client.logout().expect("logout");
    assert!(
        read_back == data,
        "{v:?}: data read back differs from data written"
    );
    let on_disk = std::fs::read(backing).expect("backing file");
    assert!(
        on_disk.len() >= data.len() && on_disk[..data.len()] == data[..],
        "{v:?}: the backing file does not hold what we wrote"
    );
}

fn variants() -> Vec<Variant> {
    let mut out = Vec::new();
    for digests in [false, true] {
        for immediate_data in [true, false] {
            for initial_r2t in [true, false] {
                out.push(Variant {
                    digests,
                    immediate_data,
                    initial_r2t,
                    max_burst_length: 262144,
                    io_bytes: 128 * 1024,
                });
            }
        }
    }
    // Bursts smaller than the I/O: several R2Ts per write, several sequences per read.
    out.push(Variant {
        digests: true,
        immediate_data: true,
        initial_r2t: false,
        max_burst_length: 16384,
        io_bytes: 256 * 1024,
    });
    out
}

#[test]
fn tgt_whole_lun_round_trips_in_every_login_variant() {
    let iqn = "iqn.2026-11.test.tgt:roundtrip";
    let tgt = Tgt::start(&[target(iqn)]).expect("tgtd starts");
    tgt.allow_digests_and_unsolicited_data(1)
        .expect("tgt parameters");
    let lun = tgt.first_data_lun();
    for (i, v) in variants().into_iter().enumerate() {
        whole_lun_round_trip(
            tgt.portal(),
            iqn,
            lun,
            &tgt.lun_path(0, 0),
            v,
            i as u64 + 1,
            false,
        );
    }
}

#[test]
fn istgt_whole_lun_round_trips_in_every_login_variant() {
    let iqn_name = "roundtrip";
    let istgt = Istgt::start(&[target(iqn_name)]).expect("istgt starts");
    let iqn = istgt.iqn(0).to_string();
    let lun = istgt.first_data_lun();
    for (i, v) in variants().into_iter().enumerate() {
        whole_lun_round_trip(
            istgt.portal(),
            &iqn,
            lun,
            &istgt.lun_path(0, 0),
            v,
            100 + i as u64,
            true,
        );
    }
}

#[test]
fn discovery_lists_exactly_the_configured_targets() {
    let names = ["iqn.2026-11.test.tgt:alpha", "iqn.2026-11.test.tgt:beta"];
    let tgt = Tgt::start(&[target(names[0]), target(names[1])]).expect("tgtd starts");
    let found = Client::discover(&ClientConfig::new(tgt.portal(), None)).expect("discovery");
    let mut found_names: Vec<_> = found.iter().map(|t| t.name.clone()).collect();
    found_names.sort();
    assert_eq!(found_names, names);
    for t in &found {
        assert!(
            t.addresses
                .iter()
                .any(|(a, _)| a.contains(&tgt.portal().port().to_string())),
            "{}: no portal on our port in {:?}",
            t.name,
            t.addresses
        );
    }

    let istgt = Istgt::start(&[target("one"), target("two")]).expect("istgt starts");
    let found = Client::discover(&ClientConfig::new(istgt.portal(), None)).expect("discovery");
    let mut found_names: Vec<_> = found.iter().map(|t| t.name.clone()).collect();
    found_names.sort();
    let mut want = vec![istgt.iqn(0).to_string(), istgt.iqn(1).to_string()];
    want.sort();
    assert_eq!(found_names, want);
}

fn chap_target(iqn: &str, mutual: bool) -> TargetSpec {
    TargetSpec {
        chap: Some(ChapSpec {
            user: "alice".into(),
            secret: "alice-secret-1234".into(),
            mutual: mutual.then(|| ("target-bob".into(), "bob-secret-56789".into())),
        }),
        ..target(iqn)
    }
}

fn chap_config(
    portal: std::net::SocketAddr,
    iqn: &str,
    secret: &str,
    mutual: Option<(&str, &str)>,
) -> ClientConfig {
    let mut config = ClientConfig::new(portal, Some(iqn.to_string()));
    config.chap = Some(ChapConfig {
        user: "alice".into(),
        secret: secret.as_bytes().to_vec(),
        mutual: mutual.map(|(u, s)| (u.to_string(), s.as_bytes().to_vec())),
    });
    config.login_timeout = Duration::from_secs(5);
    config
}

fn assert_auth_failure(result: Result<Client, ClientError>, what: &str) {
    match result {
        Ok(_) => panic!("{what}: login succeeded with a wrong secret"),
        Err(e) => {
            let message = e.to_string().to_lowercase();
            assert!(
                message.contains("authentication") || message.contains("chap"),
                "{what}: failure does not name authentication: {message}"
            );
        }
    }
}

fn check_chap(portal: std::net::SocketAddr, iqn: &str, peer: &str) {
    let good = chap_config(portal, iqn, "alice-secret-1234", None);
    Client::connect(&good)
        .unwrap_or_else(|e| panic!("{peer}: CHAP with the right secret: {e}"))
        .logout()
        .expect("logout");
    assert_auth_failure(
        Client::connect(&chap_config(portal, iqn, "wrong-secret-0000", None)),
        peer,
    );
}

fn check_mutual_chap(portal: std::net::SocketAddr, iqn: &str, peer: &str) {
    let good = chap_config(
        portal,
        iqn,
        "alice-secret-1234",
        Some(("target-bob", "bob-secret-56789")),
    );
    Client::connect(&good)
        .unwrap_or_else(|e| panic!("{peer}: mutual CHAP with the right secrets: {e}"))
        .logout()
        .expect("logout");
    // The target proves a secret we do not expect: we must refuse it.
    let wrong_target = chap_config(
        portal,
        iqn,
        "alice-secret-1234",
        Some(("target-bob", "not-bobs-secret-0")),
    );
    assert_auth_failure(Client::connect(&wrong_target), peer);
    assert_auth_failure(
        Client::connect(&chap_config(
            portal,
            iqn,
            "wrong-secret-0000",
            Some(("target-bob", "bob-secret-56789")),
        )),
        peer,
    );
}

#[test]
fn tgt_chap_and_mutual_chap() {
    let one_way = "iqn.2026-11.test.tgt:chap";
    let mutual = "iqn.2026-11.test.tgt:mutual";
    let tgt =
        Tgt::start(&[chap_target(one_way, false), chap_target(mutual, true)]).expect("tgtd starts");
    check_chap(tgt.portal(), one_way, "tgt");
    check_mutual_chap(tgt.portal(), mutual, "tgt");
}

#[test]
fn istgt_chap_and_mutual_chap() {
    let istgt = Istgt::start(&[chap_target("chap", false)]).expect("istgt starts");
    check_chap(istgt.portal(), istgt.iqn(0), "istgt");
    let istgt = Istgt::start(&[chap_target("mutual", true)]).expect("istgt starts");
    check_mutual_chap(istgt.portal(), istgt.iqn(0), "istgt");
}
