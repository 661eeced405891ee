//! Protocol endpoints and bound volumes on the real `iscsi-gateway`, changed by
//! `iscsi-ctl gateway bind/unbind/bindings`, reached by our initiator with two-level LUNs
//! (the one Linux client that can: libiscsi addresses two-byte LUNs only), listed by
//! `iscsi-ctl luns --select-report 0x12`; plain LUNs of the same target stay what
//! libiscsi's `iscsi-inq` expects.

use std::process::Command;
use std::time::{Duration, Instant};

use datapath::client::Client;
use datapath::scsi::{Cdb, Lun};
use serde_json::Value;
use system_tests::endpoint_fixture::{
    bound_lun, execute, test_unit_ready as tur, EndpointSpec, ILLEGAL_REQUEST, UNIT_ATTENTION,
};
use system_tests::gateway_ctl::{ctl, ctl_json, ctl_ok};
use system_tests::libiscsi::{inquiry, iscsi_url, peripheral_device_type};
use system_tests::{run_command, workspace_binary};

const TARGET: &str = "iqn.2026-12.test:endpoints";
const HOST_A: &str = "iqn.2026-12.test:esx-a";
const HOST_B: &str = "iqn.2026-12.test:esx-b";

/// The `u64` our initiator takes for a subsidiary LU (its 8-byte field).
fn sub(endpoint: u16, secondary: u32) -> u64 {
    let key = bound_lun(endpoint, secondary);
    assert_eq!(
        Some(Lun::from_u64(key)),
        Lun::subsidiary(u64::from(endpoint), u64::from(secondary))
    );
    key
}

fn read(client: &mut Client, lun: u64) -> (u8, Option<(u8, u8, u8)>, Vec<u8>) {
    execute(
        client,
        lun,
        Cdb::read_10(0, 8, 512, false).unwrap(),
        vec![0; 8 * 512],
    )
}

fn clear_attentions(client: &mut Client) {
    let (status, _, _) = execute(client, 0, Cdb::report_luns(0, 4096), vec![0; 4096]);
    assert_eq!(status, 0);
    for _ in 0..4 {
        if tur(client, 1).0 == 0 {
            return;
        }
    }
    panic!("unit attentions do not clear");
}

#[test]
fn volumes_bound_through_an_endpoint_are_per_host_announced_once_and_survive_a_restart() {
    system_tests::require_tools!("iscsi-inq");
    let mut gateway = EndpointSpec::new(TARGET)
        .pool_size("128M")
        .volumes(&["v1", "v2", "v3"], "4M")
        .plain_lun(1, "ram:1M")
        .state_dir()
        .start();
    let portal = gateway.portal();
    let socket = gateway.socket.clone();
    let p = gateway.pool.clone();

    let mut a = gateway.session(HOST_A, None);
    let mut b = gateway.session(HOST_B, None);
    clear_attentions(&mut a);
    clear_attentions(&mut b);

    // One bind call, two volumes: IDs 1 and 2 through endpoint 0.
    let out = ctl_ok(&socket, &gateway.bind_args(HOST_A, &["v1", "v2"]));
    assert!(out.contains("secondary ID 1, LUN 0:1"), "{out}");
    assert!(out.contains("secondary ID 2, LUN 0:2"), "{out}");

    // Host A: REPORTED LUNS DATA HAS CHANGED once, on whatever LU the next command
    // addresses; host B: nothing.
    assert_eq!(
        tur(&mut a, sub(0, 1)),
        (2, Some((UNIT_ATTENTION, 0x3f, 0x0e)))
    );
    assert_eq!(tur(&mut a, 1), (0, None), "exactly once per nexus");
    assert_eq!(tur(&mut a, sub(0, 1)), (0, None));
    assert_eq!(tur(&mut b, 1), (0, None), "host B is not affected");

    // I/O through the subsidiary LU; each volume is its own medium.
    let pattern: Vec<u8> = (0..8 * 512).map(|i| (i * 7 % 251) as u8).collect();
    let (status, _, _) = execute(
        &mut a,
        sub(0, 1),
        Cdb::write_10(0, 8, 512, false).unwrap(),
        pattern.clone(),
    );
    assert_eq!(status, 0);
    let (status, _, data) = read(&mut a, sub(0, 1));
    assert_eq!((status, &data[..]), (0, &pattern[..]));
    let (status, _, data) = read(&mut a, sub(0, 2));
    assert_eq!(status, 0);
    assert!(data.iter().all(|&b| b == 0), "v2 is untouched");
    // An unbound ID, and a bound one from another host: LOGICAL UNIT NOT SUPPORTED.
    assert_eq!(read(&mut a, sub(0, 3)).1, Some((ILLEGAL_REQUEST, 0x25, 0)));
    assert_eq!(read(&mut b, sub(0, 1)).1, Some((ILLEGAL_REQUEST, 0x25, 0)));
    // The endpoint refuses media access.
    assert_eq!(read(&mut a, 0).1, Some((ILLEGAL_REQUEST, 0x20, 0)));

    // iscsi-ctl luns --select-report 0x12 decodes the conglomerate.
    let mut luns = Command::new(workspace_binary("tools", "iscsi-ctl"));
    luns.args([
        "--json",
        "--initiator-name",
        HOST_A,
        "luns",
        "--select-report",
        "0x12",
        &format!("iscsi://{portal}/{TARGET}/0"),
    ]);
    let output = run_command(luns, Duration::from_secs(30));
    assert!(output.status.success(), "{output:?}");
    let listed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let rows = listed["luns"].as_array().unwrap();
    let names: Vec<String> = rows.iter().map(|r| r["lun"].to_string()).collect();
    assert_eq!(names, ["0", "\"0:1\"", "\"0:2\""], "{listed}");
    assert_eq!(rows[0]["role"], "endpoint");
    assert_eq!(rows[1]["role"], "subsidiary");
    assert_eq!(rows[1]["bytes"], 4 << 20);
    // 0x12 to a plain LU is refused, naming the field.
    let (status, sense, _) = execute(&mut a, 1, Cdb::report_luns(0x12, 4096), vec![0; 4096]);
    assert_eq!((status, sense), (2, Some((ILLEGAL_REQUEST, 0x24, 0))));

    // libiscsi sees the plain LUN as before, and the endpoint with LU_CONG.
    for lun in [0, 1] {
        let report = inquiry(&iscsi_url(portal, None, Some((TARGET, lun)))).unwrap();
        assert!(
            peripheral_device_type(&report).is_some_and(|t| t.contains("DIRECT")),
            "LUN {lun}: {report}"
        );
    }

    // A bound volume cannot be deleted.
    let refused = ctl(&socket, &["volume", "delete", "--pool", &p, "v1"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("unbind it first"),
        "{refused:?}"
    );

    // Unbind v1 while host A reads it: every read before the unbind's answer completes
    // (GOOD), then the nexus hears of the change once, then the LU is gone.
    // A second nexus of host A, logged in after the bind: it hears of the unbind only.
    let (out, seen) = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut a = gateway.session(HOST_A, None);
            let mut seen = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && seen.len() < 100_000 {
                let (status, sense, _) = read(&mut a, sub(0, 1));
                seen.push((status, sense));
                if sense == Some((ILLEGAL_REQUEST, 0x25, 0)) {
                    break;
                }
            }
            seen
        });
        std::thread::sleep(Duration::from_millis(100));
        let out = gateway.unbind(HOST_A, &["v1"]);
        (out, reader.join().unwrap())
    });
    assert!(out.contains("v1 unbound"), "{out}");
    let good = seen.iter().take_while(|s| s.0 == 0).count();
    assert!(good > 0, "reads ran before the unbind");
    let rest: Vec<_> = seen[good..].iter().map(|s| s.1).collect();
    assert_eq!(
        rest,
        [
            Some((UNIT_ATTENTION, 0x3f, 0x0e)),
            Some((ILLEGAL_REQUEST, 0x25, 0))
        ],
        "after {good} good reads"
    );
    // The first nexus too, once.
    assert_eq!(tur(&mut a, 1), (2, Some((UNIT_ATTENTION, 0x3f, 0x0e))));
    assert_eq!(read(&mut a, sub(0, 1)).1, Some((ILLEGAL_REQUEST, 0x25, 0)));
    ctl_ok(&socket, &["volume", "delete", "--pool", &p, "v1"]);
    drop(a);
    drop(b);

    // A restart brings back the binding of v2 at the same ID, with its data.
    gateway.restart();
    let list = ctl_json(&gateway.socket, &["bindings", "--host", HOST_A]);
    let bindings = list["bindings"].as_array().unwrap();
    assert_eq!(bindings.len(), 1, "{list}");
    assert_eq!(bindings[0]["volume"], "v2");
    assert_eq!(bindings[0]["lun"], "0:2");
    let mut a = gateway.session(HOST_A, None);
    clear_attentions(&mut a);
    assert_eq!(read(&mut a, sub(0, 2)).0, 0);
    drop(a);
}
