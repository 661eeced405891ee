//! Pieces of the scripted fake targets some tests run, for behaviour no real target can be
//! told to show (a command window held shut, answers that break the protocol).

use datapath::pdu::{LoginRequest, LoginResponse, LoginStage};

/// The Login Response that accepts `request` as it stands (RFC 7143 section 11.13):
/// status success, the stages and transit the initiator asked for, numbered `stat_sn`,
/// ExpCmdSN the request's CmdSN, commands granted up to `max_cmd_sn`. The final response
/// (transit into full feature phase) gives the session `tsih`, earlier ones 0.
pub fn accept_login(
    request: &LoginRequest,
    tsih: u16,
    stat_sn: u32,
    max_cmd_sn: u32,
) -> LoginResponse {
    let last = request.transit && request.next_stage == LoginStage::FullFeaturePhase;
    LoginResponse {
        transit: request.transit,
        continue_: false,
        current_stage: request.current_stage,
        next_stage: request.next_stage,
        version_max: 0,
        version_active: 0,
        isid: request.isid,
        tsih: if last { tsih } else { 0 },
        initiator_task_tag: request.initiator_task_tag,
        stat_sn,
        exp_cmd_sn: request.cmd_sn,
        max_cmd_sn,
        status_class: 0,
        status_detail: 0,
    }
}
