//! Group commit of the control plane (issue 18): many clients bind and unbind volumes
//! through one endpoint at once on the real `iscsi-gateway`, which is killed with
//! SIGKILL in the middle, restarted from its state directory, and again. Every bind and
//! unbind that was answered must have survived (with the secondary ID it answered); the
//! one call each client had in flight may or may not have; nothing else changed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use system_tests::gateway_ctl::{ctl_json, ctl_ok};
use system_tests::loopback;
use system_tests::{free_port, GatewayProcess, TempDir};

const TARGET: &str = "iqn.2026-12.test:group-commit";
const HOST: &str = "iqn.2026-12.test:esx-storm";
const CLIENTS: usize = 8;
/// Volumes per client: its sequence of calls is 2 * VOLUMES - 1 long.
const VOLUMES: usize = 128;

fn volume(client: usize, v: usize) -> String {
    format!("c{client}-v{v}")
}

/// A client's calls: bind v0, then (bind v_k, unbind v_{k-1}) for k = 1.., so at most
/// two of its volumes are bound at any time and every call changes something.
fn calls(client: usize) -> Vec<(bool, String)> {
    let mut calls = vec![(true, volume(client, 0))];
    for k in 1..VOLUMES {
        calls.push((true, volume(client, k)));
        calls.push((false, volume(client, k - 1)));
    }
    calls
}

/// The client's bound volumes after its first `done` calls.
fn bound_after(client: usize, done: usize) -> Vec<String> {
    let mut bound: Vec<String> = Vec::new();
    for (bind, volume) in calls(client).into_iter().take(done) {
        if bind {
            bound.push(volume);
        } else {
            bound.retain(|v| *v != volume);
        }
    }
    bound.sort();
    bound
}

fn request(id: u64, method: &str, params: Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(&json!({
        "jsonrpc": "2.0", "id": id, "method": method, "params": params,
    }))
    .unwrap();
    line.push(b'\n');
    line
}

/// One client's stream of calls, from call `from` on, until the gateway goes away or the
/// calls run out. Returns how many were answered (successfully: a refusal fails the test)
/// and the secondary ID each answered bind got.
fn stream(socket: &Path, client: usize, pool: &str, from: usize) -> (usize, Vec<(String, u64)>) {
    let mut answered = from;
    let mut secondaries = Vec::new();
    let Ok(stream) = UnixStream::connect(socket) else {
        return (answered, secondaries);
    };
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    for (n, (bind, volume)) in calls(client).into_iter().enumerate().skip(from) {
        let method = if bind { "bind" } else { "unbind" };
        let mut params = json!({
            "target": TARGET, "host": HOST, "pool": pool, "volumes": [volume],
        });
        if bind {
            params["endpoint"] = json!(0);
        }
        if writer
            .write_all(&request(n as u64, method, params))
            .is_err()
        {
            break;
        }
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            break;
        }
        let answer: Value = serde_json::from_slice(&line).unwrap();
        assert!(
            answer.get("error").is_none(),
            "client {client}: {method} {volume} refused: {answer}"
        );
        if bind {
            let secondary = answer["result"]["bindings"][0]["secondary"]
                .as_u64()
                .unwrap();
            secondaries.push((volume.clone(), secondary));
        }
        answered = n + 1;
    }
    (answered, secondaries)
}

#[test]
fn kill_9_under_concurrent_binds_and_unbinds_keeps_every_acknowledged_one() {
    let dir = TempDir::new("gateway-group-commit").unwrap();
    let pool = dir.join("pool.img");
    let pool_text = pool.display().to_string();
    let created = Command::new(system_tests::gateway_binary())
        .args(["pool", "create", &pool_text, "2G"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let state = dir.join("state").display().to_string();
    let socket = dir.join("control.sock");
    let socket_text = socket.display().to_string();
    let portal = loopback(free_port());
    let args = [
        "--control-socket",
        &socket_text,
        "--threads",
        "2",
        "--state-dir",
        &state,
    ];

    // Calls answered per client, and the secondary ID of each volume's answered bind.
    let mut answered = [0usize; CLIENTS];
    let mut secondaries: BTreeMap<String, u64> = BTreeMap::new();
    let mut total_answered = 0usize;
    // Four rounds of calls cut by SIGKILL; each restart (the fifth only checks) verifies.
    for round in 0..5u64 {
        let gateway = GatewayProcess::start_with_args(
            portal,
            &args,
            &dir.join(format!("gateway-{round}.log")),
        )
        .unwrap_or_else(|e| panic!("gateway starts: {e}"));
        if round == 0 {
            let sock = UnixStream::connect(&socket).unwrap();
            let mut writer = sock.try_clone().unwrap();
            let mut reader = BufReader::new(sock);
            for client in 0..CLIENTS {
                for v in 0..VOLUMES {
                    let params =
                        json!({ "pool": pool_text, "name": volume(client, v), "size": "1M" });
                    writer
                        .write_all(&request(1, "volume_create", params))
                        .unwrap();
                    let mut line = Vec::new();
                    reader.read_until(b'\n', &mut line).unwrap();
                    assert!(
                        !String::from_utf8_lossy(&line).contains("\"error\""),
                        "{}",
                        String::from_utf8_lossy(&line)
                    );
                }
            }
            ctl_ok(&socket, &["target", "create", TARGET]);
            ctl_ok(&socket, &["lun", "attach", TARGET, "0", "endpoint"]);
        } else {
            // What came back: per client, the state after its answered calls or after
            // the one it had in flight too.
            let list = ctl_json(&socket, &["bindings", "--host", HOST]);
            let rows = list["bindings"].as_array().unwrap();
            let mut found: Vec<Vec<String>> = vec![Vec::new(); CLIENTS];
            for row in rows {
                let name = row["volume"].as_str().unwrap().to_string();
                let client: usize = name[1..name.find('-').unwrap()].parse().unwrap();
                if let Some(secondary) = secondaries.get(&name) {
                    assert_eq!(
                        row["secondary"].as_u64(),
                        Some(*secondary),
                        "round {round}: {name} came back with another secondary ID"
                    );
                }
                found[client].push(name);
            }
            for (client, bound) in found.iter_mut().enumerate() {
                bound.sort();
                let done = answered[client];
                if *bound == bound_after(client, done) {
                    continue;
                }
                assert_eq!(
                    *bound,
                    bound_after(client, done + 1),
                    "round {round}: client {client} had {done} calls answered; its bindings are neither that state nor the next"
                );
                // Its call in flight landed: that is where it goes on from.
                answered[client] = done + 1;
            }
        }
        if round == 4 {
            break;
        }
        let pid = gateway.pid();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(60 + 40 * round));
            // SAFETY: kill(2) on the pid of our own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        });
        let streams: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (socket, pool) = (socket.clone(), pool_text.clone());
                let from = answered[client];
                std::thread::spawn(move || stream(&socket, client, &pool, from))
            })
            .collect();
        for (client, handle) in streams.into_iter().enumerate() {
            let (done, bound) = handle.join().unwrap();
            total_answered += done - answered[client];
            answered[client] = done;
            secondaries.extend(bound);
        }
        killer.join().unwrap();
        drop(gateway);
        eprintln!("round {round}: calls answered per client {answered:?}");
    }
    assert!(
        total_answered >= CLIENTS,
        "binds and unbinds were answered: {total_answered}"
    );
}
