//! ABORT TASK SET, LOGICAL UNIT RESET, TARGET WARM/COLD RESET (RFC 7143 11.5, 11.6).

use super::*;
use crate::scsi::Lun;

fn answer(h: &mut Harness, itt: u32, response: u8) {
    let stat_sn = h.next_stat();
    let header = Header::TaskMgmtResponse(pdu::TaskMgmtResponse {
        response,
        initiator_task_tag: itt,
        stat_sn,
        exp_cmd_sn: h.exp_cmd_sn,
        max_cmd_sn: h.max_cmd_sn,
    });
    h.deliver(header, &[]).unwrap();
}

fn on_lun(mut request: Request, lun: u64) -> Request {
    request.lun = lun;
    request
}

#[test]
fn a_lun_reset_ends_the_commands_of_that_lun_only() {
    let mut h = Harness::logged_in(config(), &TargetParams::default());
    let on_zero = h.s.submit(h.now, on_lun(read_request(8), 0)).unwrap();
    h.expect_command();
    let on_one = h.s.submit(h.now, on_lun(read_request(8), 1)).unwrap();
    let (command, _) = h.expect_command();
    let id =
        h.s.task_management(
            h.now,
            TaskManagementFunction::LogicalUnitReset,
            Lun::from_u64(1).to_field(),
        )
        .unwrap();
    let request = match h.expect() {
        (Header::TaskMgmtRequest(r), _) => r,
        (other, _) => panic!("expected a task management request, got {other:?}"),
    };
    assert_eq!(request.function, 5);
    assert!(request.immediate);
    assert_eq!(request.lun, Lun::from_u64(1).to_field());
    assert_eq!(request.referenced_task_tag, pdu::RESERVED_TAG);
    assert_eq!(
        request.cmd_sn,
        command.cmd_sn + 1,
        "immediate: CmdSN not taken"
    );
    assert_eq!(h.s.poll_task_management(), None, "not answered yet");
    answer(&mut h, request.initiator_task_tag, 0);
    let outcome = h.s.poll_task_management().unwrap();
    assert_eq!(outcome.id, id);
    assert_eq!(outcome.response, TaskManagementResponse::FunctionComplete);
    assert_eq!(outcome.commands_aborted, 1);
    let (done, result) = h.completion();
    assert_eq!(done, on_one);
    assert_eq!(result.unwrap_err().error, CommandError::Aborted);
    // LUN 0's read is still held and completes normally.
    let d = h.data_in(on_zero.itt(), 0, 0, Some(0));
    h.deliver(Header::DataIn(d), &[0; 8]).unwrap();
    let (done, result) = h.completion();
    assert_eq!(done, on_zero);
    assert!(result.is_ok());
    assert_eq!(h.s.state(), SessionState::FullFeature);
}

#[test]
fn a_refused_target_reset_ends_nothing_and_a_warm_one_ends_everything() {
    let mut h = Harness::logged_in(config(), &TargetParams::default());
    h.s.submit(h.now, on_lun(read_request(8), 0)).unwrap();
    h.expect_command();
    h.s.submit(h.now, on_lun(read_request(8), 3)).unwrap();
    h.expect_command();
    h.s.task_management(
        h.now,
        TaskManagementFunction::TargetColdReset,
        Lun::from_u64(3).to_field(),
    )
    .unwrap();
    let request = match h.expect() {
        (Header::TaskMgmtRequest(r), _) => r,
        (other, _) => panic!("expected a task management request, got {other:?}"),
    };
    assert_eq!(
        (request.function, request.lun),
        (7, pdu::LunField::default())
    );
    // 6: function authorization failed.
    answer(&mut h, request.initiator_task_tag, 6);
    let outcome = h.s.poll_task_management().unwrap();
    assert_eq!(
        outcome.response,
        TaskManagementResponse::AuthorizationFailed
    );
    assert_eq!(outcome.commands_aborted, 0);
    assert!(h.events().is_empty());
    h.s.task_management(
        h.now,
        TaskManagementFunction::TargetWarmReset,
        pdu::LunField::default(),
    )
    .unwrap();
    let request = match h.expect() {
        (Header::TaskMgmtRequest(r), _) => r,
        (other, _) => panic!("expected a task management request, got {other:?}"),
    };
    answer(&mut h, request.initiator_task_tag, 0);
    assert_eq!(h.s.poll_task_management().unwrap().commands_aborted, 2);
    assert_eq!(h.events().len(), 2);
}

#[test]
fn requests_are_bounded_and_need_a_logged_in_session() {
    let mut h = Harness::new(config());
    assert_eq!(
        h.s.task_management(
            h.now,
            TaskManagementFunction::AbortTaskSet,
            pdu::LunField::default()
        ),
        Err(TaskManagementRejection::NotLoggedIn)
    );
    let mut h = Harness::logged_in(config(), &TargetParams::default());
    for _ in 0..crate::session::task_mgmt::MAX_PENDING {
        h.s.task_management(
            h.now,
            TaskManagementFunction::AbortTaskSet,
            pdu::LunField::default(),
        )
        .unwrap();
    }
    assert_eq!(
        h.s.task_management(
            h.now,
            TaskManagementFunction::AbortTaskSet,
            pdu::LunField::default()
        ),
        Err(TaskManagementRejection::TooMany)
    );
}
