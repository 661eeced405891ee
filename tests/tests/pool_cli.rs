//! `iscsi-gateway pool ...` as an operator runs it: create, volumes, clone, list, check,
//! grow, delete, and the errors that name the problem; a pool a gateway has open is locked.

use std::process::{Command, Output};

use system_tests::gateway_process::GatewaySpec;
use system_tests::{gateway_binary, GatewayProcess, TempDir};

fn pool(args: &[&str]) -> Output {
    Command::new(gateway_binary())
        .arg("pool")
        .args(args)
        .output()
        .expect("iscsi-gateway runs")
}

fn ok(args: &[&str]) -> String {
    let out = pool(args);
    assert!(
        out.status.success(),
        "pool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused(args: &[&str]) -> String {
    let out = pool(args);
    assert!(!out.status.success(), "pool {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_pool_subcommand_manages_volumes_and_refuses_with_the_reason() {
    let scratch = TempDir::new("pool-cli").expect("scratch directory");
    let path = scratch.join("pool.img");
    let p = path.to_str().unwrap();
    assert!(ok(&["create", p, "1G"]).contains("chunks of 1 MiB"));
    assert!(refused(&["create", p, "1G"]).contains("already exists"));
    ok(&["volume-create", p, "vm1", "1T"]);
    assert!(refused(&["volume-create", p, "vm1", "1T"]).contains("already exists"));
    assert!(refused(&["volume-create", p, "bad name", "1G"]).contains("volume name"));
    ok(&["clone", p, "vm1", "vm1-copy"]);
    ok(&["grow", p, "vm1", "2T"]);
    assert!(refused(&["grow", p, "vm1", "1G"]).contains("never shrink"));
    let listed = ok(&["list", p]);
    assert!(
        listed.contains("vm1 ") && listed.contains("vm1-copy"),
        "{listed}"
    );
    assert!(listed.contains("2199023255552"), "grown: {listed}");
    ok(&["delete", p, "vm1-copy"]);
    assert!(refused(&["delete", p, "vm1-copy"]).contains("no volume"));
    assert!(ok(&["check", p]).contains("1 volumes, 0 map entries"));

    // Exported by a gateway: the pool is locked against a second process.
    let spec = GatewaySpec::new(&[&format!("pool:{p},volume=vm1")]);
    let gateway = GatewayProcess::start(&spec).expect("the gateway exports a pool volume");
    assert!(refused(&["check", p]).contains("in use by another gateway"));
    gateway.kill_hard();
    assert!(ok(&["check", p]).contains("0 chunks used"));
    let missing = GatewayProcess::start(&GatewaySpec::new(&[&format!("pool:{p},volume=nope")]));
    assert!(missing.is_err_and(|e| e.contains("no volume \"nope\"")));
}
