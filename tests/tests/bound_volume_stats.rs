//! Per-LUN statistics of bound volumes (issue 18) on the real `iscsi-gateway`, read with
//! `iscsi-ctl gateway lun stats`: reads and writes sent by our initiator to two volumes
//! bound through an endpoint are counted on each volume's own row (two-level LUN, host,
//! volume), a bound volume without I/O has no row, and an unbound one drops out.

use std::path::Path;
use std::time::Duration;

use datapath::client::Client;
use datapath::scsi::Cdb;
use serde_json::Value;
use system_tests::endpoint_fixture::{bound_lun, execute, settle, EndpointGateway, EndpointSpec};
use system_tests::gateway_ctl::{ctl_json, ctl_ok};

const TARGET: &str = "iqn.2026-12.test:bound-stats";
const HOST: &str = "iqn.2026-12.test:esx-stats";

fn sub(secondary: u32) -> u64 {
    bound_lun(0, secondary)
}

/// Status of one command.
fn status(client: &mut Client, lun: u64, cdb: Cdb, data: Vec<u8>) -> u8 {
    execute(client, lun, cdb, data).0
}

/// The rows of `lun stats --target TARGET`, by their LUN as text.
fn rows(socket: &Path) -> Vec<(String, Value)> {
    let stats = ctl_json(socket, &["lun", "stats", "--target", TARGET]);
    stats["luns"]
        .as_array()
        .expect("a list of LUNs")
        .iter()
        .map(|row| {
            let lun = match &row["lun"] {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            (lun, row.clone())
        })
        .collect()
}

fn row<'a>(rows: &'a [(String, Value)], lun: &str) -> Option<&'a Value> {
    rows.iter().find(|(l, _)| l == lun).map(|(_, r)| r)
}

fn setup() -> EndpointGateway {
    EndpointSpec::new(TARGET)
        .volumes(&["v1", "v2", "v3"], "4M")
        .plain_lun(1, "ram:1M")
        .start()
}

#[test]
fn lun_stats_count_the_io_of_each_bound_volume_and_forget_an_unbound_one() {
    let s = setup();
    s.bind(HOST, &["v1", "v2", "v3"]);
    let mut client = s.session(HOST, None);
    for lun in [1, sub(1), sub(2)] {
        settle(&mut client, lun);
    }
    // Before any read or write: the volumes' rows count only the TEST UNIT READYs.
    let before = rows(&s.socket);
    for lun in ["0:1", "0:2"] {
        let r = row(&before, lun).unwrap_or_else(|| panic!("row {lun}: {before:?}"));
        assert_eq!(
            (r["reads"].as_u64(), r["writes"].as_u64()),
            (Some(0), Some(0))
        );
    }

    // 20 reads of 8 blocks on v1, 10 writes of 4 blocks on v2.
    for lba in 0..20u32 {
        let cdb = Cdb::read_10(lba * 8, 8, 512, false).unwrap();
        assert_eq!(status(&mut client, sub(1), cdb, vec![0; 8 * 512]), 0);
    }
    for lba in 0..10u32 {
        let cdb = Cdb::write_10(lba * 4, 4, 512, false).unwrap();
        assert_eq!(status(&mut client, sub(2), cdb, vec![0x5a; 4 * 512]), 0);
    }

    let after = rows(&s.socket);
    let v1 = row(&after, "0:1").unwrap_or_else(|| panic!("v1's row: {after:?}"));
    assert_eq!(
        (v1["reads"].as_u64(), v1["writes"].as_u64()),
        (Some(20), Some(0)),
        "{v1}"
    );
    assert_eq!(v1["read_bytes"].as_u64(), Some(20 * 8 * 512));
    assert_eq!(
        (v1["volume"].as_str(), v1["host"].as_str()),
        (Some("v1"), Some(HOST))
    );
    assert_eq!(
        (v1["endpoint"].as_u64(), v1["secondary"].as_u64()),
        (Some(0), Some(1))
    );
    assert!(v1["latency_us"]["p99"].as_u64().unwrap() >= 1, "{v1}");
    assert!(v1["iops"].as_f64().unwrap() > 0.0, "{v1}");
    let v2 = row(&after, "0:2").unwrap_or_else(|| panic!("v2's row: {after:?}"));
    assert_eq!(
        (v2["reads"].as_u64(), v2["writes"].as_u64()),
        (Some(0), Some(10)),
        "{v2}"
    );
    assert_eq!(v2["write_bytes"].as_u64(), Some(10 * 4 * 512));
    assert!(row(&after, "0:3").is_none(), "v3 ran no command: {after:?}");
    let plain = row(&after, "1").unwrap_or_else(|| panic!("LUN 1: {after:?}"));
    assert_eq!(plain["reads"].as_u64(), Some(0), "the plain LUN's own row");

    // Over an interval: only what happened in it.
    let during = std::thread::scope(|scope| {
        let socket = s.socket.clone();
        let asked = scope.spawn(move || {
            ctl_json(
                &socket,
                &["lun", "stats", "--target", TARGET, "--interval-ms", "1500"],
            )
        });
        std::thread::sleep(Duration::from_millis(300));
        for lba in 0..5u32 {
            let cdb = Cdb::read_10(lba, 1, 512, false).unwrap();
            assert_eq!(status(&mut client, sub(2), cdb, vec![0; 512]), 0);
        }
        asked.join().unwrap()
    });
    let during: Vec<Value> = during["luns"].as_array().unwrap().clone();
    let v2 = during
        .iter()
        .find(|r| r["lun"] == "0:2")
        .unwrap_or_else(|| panic!("v2 in the interval: {during:?}"));
    assert_eq!(
        (v2["reads"].as_u64(), v2["writes"].as_u64()),
        (Some(5), Some(0))
    );
    assert!(
        during.iter().all(|r| r["lun"] != "0:1"),
        "v1 ran nothing in the interval: {during:?}"
    );

    // The human table names the two-level LUN.
    let table = ctl_ok(&s.socket, &["lun", "stats", "--target", TARGET]);
    assert!(table.contains("0:1") && table.contains("0:2"), "{table}");

    // Unbound: v1 has no row any more; v2 keeps its figures.
    s.unbind(HOST, &["v1"]);
    let last = rows(&s.socket);
    assert!(row(&last, "0:1").is_none(), "{last:?}");
    assert_eq!(row(&last, "0:2").unwrap()["writes"].as_u64(), Some(10));
}
