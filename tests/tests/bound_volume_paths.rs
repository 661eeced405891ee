//! Multipathing on a protocol endpoint (issue 18, item 6): the same bound volume reached
//! through two portals of one `iscsi-gateway`, addressed with its two-level LUN.
//! `iscsi-ctl paths` reads the volume's own NAA (INQUIRY VPD 0x83 through the endpoint)
//! on both portals; an `iscsi-bench` verifying job with `paths=` over both (datapath's
//! multipath, whose identity check reads the same page) loses one path mid-run, its
//! portal removed and its session dropped with `iscsi-ctl gateway`, and ends with no
//! error and no verify failure.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use system_tests::endpoint_fixture::EndpointSpec;
use system_tests::gateway_ctl::{ctl_json, ctl_ok};
use system_tests::{run_command, workspace_binary};

const TARGET: &str = "iqn.2026-12.test:bound-paths";
const HOST: &str = "iqn.2026-12.test:esx-paths";

/// `iscsi-ctl --json paths URL --path OTHER` as HOST: the JSON document.
fn paths(url: &str, other: SocketAddr) -> Value {
    let mut command = Command::new(workspace_binary("tools", "iscsi-ctl"));
    command.args([
        "--json",
        "--initiator-name",
        HOST,
        "paths",
        url,
        "--path",
        &other.to_string(),
    ]);
    let out = run_command(command, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        system_tests::describe_output(&out)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn a_verify_job_over_two_portals_to_a_bound_volume_survives_losing_one() {
    let gateway = EndpointSpec::new(TARGET)
        .pool_size("128M")
        .volumes(&["v1", "v2"], "16M")
        .portals(2)
        .start();
    let (first, second) = (gateway.portals[0], gateway.portals[1]);
    let second_text = second.to_string();
    let socket = &gateway.socket;
    let bound = gateway.bind(HOST, &["v1", "v2"]);
    let naa_of = |volume: &str| {
        bound["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["volume"] == volume)
            .and_then(|b| b["naa"].as_str())
            .unwrap_or_else(|| panic!("{volume} in {bound}"))
            .to_lowercase()
    };
    let (naa1, naa2) = (naa_of("v1"), naa_of("v2"));
    assert_ne!(naa1, naa2, "each volume has its own NAA");

    // Both portals show v2's own identity through LUN 0:2 (not the endpoint's, not v1's).
    let url = format!("iscsi://{first}/{TARGET}/0:2");
    let listed = paths(&url, second);
    let rows = listed["paths"].as_array().expect("paths");
    assert_eq!(rows.len(), 2, "{listed}");
    for row in rows {
        assert_eq!(
            (row["up"].as_bool(), row["same_lu"].as_bool()),
            (Some(true), Some(true)),
            "{listed}"
        );
        let designators: Vec<String> = row["designators"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["designator"].as_str().unwrap_or("").to_lowercase())
            .collect();
        assert!(
            designators.iter().any(|d| d.contains(&naa2)),
            "v2's NAA {naa2} on {}: {designators:?}",
            row["portal"]
        );
        assert!(
            !designators.iter().any(|d| d.contains(&naa1)),
            "not v1's: {designators:?}"
        );
    }

    // The verifying job over both portals; the second is lost 1.5 s in.
    let mut bench = Command::new(workspace_binary("bench", "iscsi-bench"));
    bench.args([
        "--name=bound-paths",
        "--ioengine=iscsi",
        &format!("--filename={url}"),
        &format!("--paths={first},{second}"),
        &format!("--initiator_name={HOST}"),
        "--path_policy=round-robin",
        "--no_path_retry=10",
        "--rw=randrw",
        "--rwmixread=70",
        "--bs=4k",
        "--iodepth=16",
        "--verify=crc32c",
        "--runtime=4",
        "--time_based",
        "--output-format=json",
    ]);
    let out = std::thread::scope(|scope| {
        let job = scope.spawn(|| run_command(bench, Duration::from_secs(120)));
        std::thread::sleep(Duration::from_millis(1500));
        // No new login through the second portal, then its session goes.
        ctl_ok(socket, &["portal", "remove", &second_text]);
        let dropped = ctl_json(socket, &["session", "drop", "--portal", &second_text]);
        assert!(dropped["dropped"].as_u64() >= Some(1), "{dropped}");
        job.join().expect("bench thread")
    });
    assert!(
        out.status.success(),
        "{}",
        system_tests::describe_output(&out)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let job = &doc["jobs"][0];
    let ext = &job["iscsi_bench"];
    assert_eq!(ext["errors"]["total"], 0, "{ext}");
    assert_eq!(job["error"], 0, "{job}");
    let rows = ext["paths"].as_array().expect("paths");
    let by_portal = |portal: SocketAddr| {
        rows.iter()
            .find(|p| p["portal"] == portal.to_string())
            .unwrap_or_else(|| panic!("{portal} not in {rows:?}"))
    };
    let (alive, lost) = (by_portal(first), by_portal(second));
    assert_eq!(alive["state"], "up", "{rows:?}");
    assert_eq!(lost["state"], "down", "{rows:?}");
    assert!(lost["losses"].as_u64() >= Some(1), "{rows:?}");
    for path in [alive, lost] {
        assert!(
            path["total_ios"].as_u64() > Some(0),
            "both carried I/O: {rows:?}"
        );
    }
    let reads = job["read"]["total_ios"].as_u64().unwrap();
    let writes = job["write"]["total_ios"].as_u64().unwrap();
    assert!(reads > 0 && writes > 0, "{job}");
}
