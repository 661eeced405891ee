//! LOGICAL UNIT RESET addressed to a bound volume (a subsidiary LU, two-level LUN) on
//! the real `iscsi-gateway` (issue 18): it resets that volume, and every nexus that uses
//! it gets POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (29h/03h) there and only there;
//! an ID not bound for the host answers "LUN does not exist".

use datapath::session::TaskManagementFunction;
use datapath::session::TaskManagementResponse;
use system_tests::endpoint_fixture::{
    bound_lun, settle, test_unit_ready as tur, EndpointSpec, UNIT_ATTENTION,
};

const TARGET: &str = "iqn.2026-12.test:bound-reset";
const HOST: &str = "iqn.2026-12.test:esx-reset";

fn sub(secondary: u32) -> u64 {
    bound_lun(0, secondary)
}

#[test]
fn a_logical_unit_reset_of_a_bound_volume_resets_that_volume_only() {
    let gateway = EndpointSpec::new(TARGET)
        .volumes(&["v1", "v2"], "4M")
        .plain_lun(1, "ram:1M")
        .start();
    // Two nexuses of the host log in before the volumes are bound.
    let session = |tail: u8| gateway.session(HOST, Some([0x80, 0, 0, 0x18, 0, tail]));
    let mut a = session(1);
    let mut b = session(2);
    gateway.bind(HOST, &["v1", "v2"]);
    for client in [&mut a, &mut b] {
        for lun in [1, sub(1), sub(2)] {
            settle(client, lun);
        }
    }

    let reset = a
        .task_management(TaskManagementFunction::LogicalUnitReset, sub(1))
        .expect("the reset is answered");
    assert_eq!(reset.response, TaskManagementResponse::FunctionComplete);
    // The reset volume reports it to both nexuses, once; the other volume and the plain
    // LUN do not.
    for client in [&mut a, &mut b] {
        assert_eq!(tur(client, sub(2)), (0, None), "the other volume");
        assert_eq!(tur(client, 1), (0, None), "the plain LUN");
        assert_eq!(
            tur(client, sub(1)),
            (2, Some((UNIT_ATTENTION, 0x29, 0x03))),
            "the reset volume"
        );
        assert_eq!(tur(client, sub(1)), (0, None), "reported once");
    }

    // An ID bound for nobody: LUN does not exist, and nothing is reset.
    let missing = a
        .task_management(TaskManagementFunction::LogicalUnitReset, sub(3))
        .expect("the reset is answered");
    assert_eq!(missing.response, TaskManagementResponse::LunDoesNotExist);
    assert_eq!(tur(&mut b, sub(1)), (0, None));
    // ABORT TASK SET on a bound volume is accepted too (it names an LU that exists).
    let abort = a
        .task_management(TaskManagementFunction::AbortTaskSet, sub(2))
        .expect("the abort is answered");
    assert_eq!(abort.response, TaskManagementResponse::FunctionComplete);
}
