//! ABORT TASK (RFC 7143 sections 11.5, 11.6): one command ends, the connection stays.

use super::*;

fn tmf_response(h: &mut Harness, itt: u32, response: u8) -> Header {
    let stat_sn = h.next_stat();
    Header::TaskMgmtResponse(pdu::TaskMgmtResponse {
        response,
        initiator_task_tag: itt,
        stat_sn,
        exp_cmd_sn: h.exp_cmd_sn,
        max_cmd_sn: h.max_cmd_sn,
    })
}

fn expect_abort(h: &mut Harness) -> pdu::TaskMgmtRequest {
    match h.expect() {
        (Header::TaskMgmtRequest(r), data) => {
            assert!(data.is_empty());
            r
        }
        (other, _) => panic!("expected a Task Management Function Request, got {other:?}"),
    }
}

#[test]
fn abort_task_names_the_command_and_its_answer_ends_it_alone() {
    let mut h = Harness::logged_in(config(), &TargetParams::default());
    let a = h.s.submit(h.now, read_request(8)).unwrap();
    let (command, _) = h.expect_command();
    h.s.abort_task(h.now, a).unwrap();
    let request = expect_abort(&mut h);
    assert_eq!(request.function, 1, "ABORT TASK");
    assert!(request.immediate);
    assert_eq!(request.referenced_task_tag, a.itt());
    assert_eq!(request.ref_cmd_sn, command.cmd_sn);
    assert_eq!(request.lun, command.lun);
    assert_ne!(request.initiator_task_tag, a.itt());
    // Immediate: the CmdSN is not taken.
    assert_eq!(request.cmd_sn, command.cmd_sn + 1);
    assert_eq!(
        h.s.abort_task(h.now, a),
        Err(AbortRejection::AlreadyAborting)
    );
    let response = tmf_response(&mut h, request.initiator_task_tag, 0);
    h.deliver(response, &[]).unwrap();
    let (done, result) = h.completion();
    assert_eq!(done, a);
    assert_eq!(result.unwrap_err().error, CommandError::Aborted);
    assert_eq!(h.s.state(), SessionState::FullFeature);
    assert_eq!(h.s.stats().tasks_aborted, 1);
    // The connection goes on: the next command is sent with the next CmdSN.
    let b = h.s.submit(h.now, read_request(8)).unwrap();
    let (next, _) = h.expect_command();
    assert_eq!(next.initiator_task_tag, b.itt());
    assert_eq!(next.cmd_sn, command.cmd_sn + 1);
}

#[test]
fn a_refused_abort_leaves_the_command_to_its_timeout() {
    let mut h = Harness::logged_in(config(), &TargetParams::default());
    let a = h.s.submit(h.now, read_request(8)).unwrap();
    h.expect_command();
    h.s.abort_task(h.now, a).unwrap();
    let request = expect_abort(&mut h);
    // 5: Task management function not supported.
    let response = tmf_response(&mut h, request.initiator_task_tag, 5);
    h.deliver(response, &[]).unwrap();
    assert!(h.events().is_empty(), "the command is still held");
    let d = h.data_in(a.itt(), 0, 0, Some(0));
    h.deliver(Header::DataIn(d), &[0; 8]).unwrap();
    assert!(h.completion().1.is_ok());
}

#[test]
fn a_command_not_yet_sent_is_aborted_without_a_pdu_and_a_stray_answer_is_fatal() {
    let mut h = Harness::new(config());
    h.exp_cmd_sn = 1;
    h.max_cmd_sn = 0; // zero window at login: the command waits
    h.login_none(&TargetParams::default());
    let a = h.s.submit(h.now, read_request(8)).unwrap();
    h.expect_none();
    h.s.abort_task(h.now, a).unwrap();
    h.expect_none();
    assert_eq!(h.completion().1.unwrap_err().error, CommandError::Aborted);
    assert_eq!(h.s.abort_task(h.now, a), Err(AbortRejection::UnknownTask));
    let stray = tmf_response(&mut h, 0x77, 0);
    assert!(h.deliver(stray, &[]).is_err());
    assert_eq!(h.s.state(), SessionState::Failed);
}
