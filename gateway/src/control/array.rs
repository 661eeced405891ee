//! The array methods of the control plane (`array_rpc`): weights, drain and rebalance
//! with Async Messages, the virtual portal, ALUA states. The settings among them are
//! checked, made durable in the state directory's journal (`array_state`: the call is
//! the record), then applied; where only applying can check a setting (binding a virtual
//! portal, the ALUA table's room) it is applied first and undone if it cannot be kept.
//!
//! A move (drain, rebalance): the sessions chosen get Async Message event 1 with
//! Parameter3 = the deadline; a thread of this module waits for the deadline, sends event
//! 3 (session dropped, Time2Wait 0, Time2Retain 0) to those still there and closes them
//! [`ARRAY_EVENT_GRACE`] later. `portal_list` shows the sessions left on each portal:
//! the drain's progress.

use std::net::SocketAddr;
use std::time::Duration;

use datapath::scsi::alua::AccessState;
use serde_json::{json, Value};

use super::array_rpc::{Address, ArrayCall, DEFAULT_LOGOUT_DEADLINE_S};
use super::array_state::ArraySettings;
use super::rpc::{ErrorCode, RpcError};
use super::{Control, JournalRecord};
use crate::portal::{PortalRole, RedirectKind};
use crate::server::{AsyncRequestSpec, Controller, SessionInfo, ARRAY_EVENT_GRACE};

/// Async Message events (RFC 7143 section 11.9.1).
const LOGOUT_REQUESTED: u8 = 1;
const SESSION_DROPPED: u8 = 3;

fn bad(code: ErrorCode, message: impl Into<String>) -> RpcError {
    RpcError::new(code, message)
}

fn role_name(role: PortalRole) -> &'static str {
    match role {
        PortalRole::Real => "real",
        PortalRole::Virtual => "virtual",
    }
}

/// `portal_list`: every portal with its role, sessions, weight and drain flag.
pub(super) fn portal_list(controller: Option<&Controller>, group_tag: u16) -> Value {
    let portals: Vec<Value> = controller
        .map(|c| c.portal_status())
        .unwrap_or_default()
        .iter()
        .map(|p| {
            json!({
                "address": p.addr.to_string(),
                "group_tag": group_tag,
                "role": role_name(p.role),
                "sessions": p.sessions,
                "weight": p.weight,
                "draining": p.draining,
            })
        })
        .collect();
    let redirect = controller.map_or(RedirectKind::Temporary, Controller::redirect);
    let send_targets: serde_json::Map<String, Value> = controller
        .map(Controller::send_targets)
        .unwrap_or_default()
        .into_iter()
        .map(|(group, portals)| {
            let portals: Vec<String> = portals.iter().map(ToString::to_string).collect();
            (group.to_string(), json!(portals))
        })
        .collect();
    json!({ "portals": portals, "redirect": redirect.name(), "send_targets": send_targets })
}

/// Who a session is, for finding it again after the deadline.
fn same_session(a: &SessionInfo, b: &SessionInfo) -> bool {
    a.initiator == b.initiator && a.isid == b.isid && a.target == b.target && a.tsih == b.tsih
}

/// Asks `asked` to log out within `deadline_s`, then drops those still there (see the
/// module docs). Returns at once; the enforcement runs on its own thread.
fn move_sessions(controller: &Controller, asked: Vec<SessionInfo>, deadline_s: u16) -> usize {
    let request = AsyncRequestSpec {
        event: LOGOUT_REQUESTED,
        parameter2: 0,
        parameter3: deadline_s,
    };
    let sent = controller.send_async(request, |s| asked.iter().any(|a| same_session(a, s)));
    let count = sent.len();
    if count == 0 {
        return 0;
    }
    let controller = controller.clone();
    let spawned = std::thread::Builder::new()
        .name("array-move".into())
        .spawn(move || {
            std::thread::sleep(Duration::from_secs(u64::from(deadline_s)));
            let still = |s: &SessionInfo| sent.iter().any(|a| same_session(a, s));
            let drop = AsyncRequestSpec {
                event: SESSION_DROPPED,
                parameter2: 0,
                parameter3: 0,
            };
            let late = controller.send_async(drop, still);
            if late.is_empty() {
                return;
            }
            tracing::info!(
                sessions = late.len(),
                "hosts did not log out by the deadline: session dropped (async event 3)"
            );
            std::thread::sleep(ARRAY_EVENT_GRACE);
            controller.drop_sessions(|s| late.iter().any(|a| same_session(a, s)));
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the thread that enforces the move deadline");
    }
    count
}

impl Control {
    fn controller(&self) -> Result<Controller, RpcError> {
        self.lock()
            .controller
            .clone()
            .ok_or_else(|| bad(ErrorCode::NotAvailable, "the server is not running yet"))
    }

    /// Makes an array setting durable: recorded in the model's array settings and written
    /// as a journal record (the call itself), undone in the model if that fails; returns
    /// once a group commit has synced it.
    fn keep_array_setting(&self, call: &ArrayCall) -> Result<(), RpcError> {
        self.check_usable()?;
        let mut inner = self.lock();
        let before = inner.model.array.clone();
        inner.model.array.record(call);
        inner.model.generation += 1;
        let (method, params) = call.to_method_params();
        let record = JournalRecord {
            method: method.to_string(),
            params,
            identities: Vec::new(),
        };
        let version = match Self::write(&mut inner, &record) {
            Ok(version) => version,
            Err(e) => {
                inner.model.array = before;
                inner.model.generation -= 1;
                return Err(e);
            }
        };
        drop(inner);
        // Synced (and the model published) by a group commit before the setting is made.
        self.settle(version)
    }

    /// Runs one array method.
    pub(super) fn array_call(&self, call: ArrayCall) -> Result<Value, RpcError> {
        let controller = self.controller()?;
        let no_portal = |addr: SocketAddr| bad(ErrorCode::NotFound, format!("no portal {addr}"));
        let known = |addr: SocketAddr| {
            if controller.portal_status().iter().any(|p| p.addr == addr) {
                Ok(())
            } else {
                Err(no_portal(addr))
            }
        };
        debug_assert!(
            ArraySettings::is_setting(&call)
                != matches!(call, ArrayCall::Rebalance(_) | ArrayCall::AluaList)
        );
        match call {
            ArrayCall::PortalSet(ref p) => {
                if let Some(weight) = p.weight {
                    if weight > 1000 {
                        return Err(bad(
                            ErrorCode::InvalidParams,
                            format!("portal_set: weight {weight}: expected 0 to 1000"),
                        ));
                    }
                }
                known(p.address)?;
                self.keep_array_setting(&call)?;
                if let Some(weight) = p.weight {
                    if !controller.set_portal_weight(p.address, weight) {
                        return Err(no_portal(p.address));
                    }
                }
                if let Some(draining) = p.draining {
                    if !controller.set_portal_draining(p.address, draining) {
                        return Err(no_portal(p.address));
                    }
                }
                Ok(portal_list(Some(&controller), self.portal_group_tag))
            }
            ArrayCall::PortalDrain(ref p) => {
                known(p.address)?;
                self.keep_array_setting(&call)?;
                if !controller.set_portal_draining(p.address, true) {
                    return Err(no_portal(p.address));
                }
                let deadline_s = p.deadline_s.unwrap_or(DEFAULT_LOGOUT_DEADLINE_S);
                let here: Vec<SessionInfo> = controller
                    .sessions()
                    .into_iter()
                    .filter(|s| s.portal == p.address)
                    .collect();
                let asked = move_sessions(&controller, here, deadline_s);
                tracing::info!(portal = %p.address, asked, deadline_s, "draining");
                Ok(json!({ "asked": asked, "deadline_s": deadline_s }))
            }
            ArrayCall::PortalResume(ref p) => {
                known(p.address)?;
                self.keep_array_setting(&call)?;
                if !controller.set_portal_draining(p.address, false) {
                    return Err(no_portal(p.address));
                }
                Ok(portal_list(Some(&controller), self.portal_group_tag))
            }
            ArrayCall::Rebalance(p) => {
                let deadline_s = p.deadline_s.unwrap_or(DEFAULT_LOGOUT_DEADLINE_S);
                let moving = controller.rebalance_candidates();
                let asked = move_sessions(&controller, moving, deadline_s);
                tracing::info!(asked, deadline_s, "rebalancing");
                Ok(json!({ "asked": asked, "deadline_s": deadline_s }))
            }
            ArrayCall::VirtualPortalAdd(p) => {
                let bound = controller
                    .add_portal_as(p.address, PortalRole::Virtual)
                    .map_err(|e| bad(ErrorCode::Refused, format!("portal {}: {e}", p.address)))?;
                let kept = ArrayCall::VirtualPortalAdd(Address { address: bound });
                if let Err(e) = self.keep_array_setting(&kept) {
                    controller.remove_portal(bound);
                    return Err(e);
                }
                Ok(json!({ "address": bound.to_string() }))
            }
            ArrayCall::RedirectSet(ref p) => {
                let kind: RedirectKind = p
                    .redirect
                    .parse()
                    .map_err(|e: String| bad(ErrorCode::InvalidParams, e))?;
                self.keep_array_setting(&call)?;
                controller.set_redirect(kind);
                Ok(json!({ "redirect": kind.name() }))
            }
            ArrayCall::AluaList => Ok(alua_list(&controller)),
            ArrayCall::SendTargetsSet(ref p) => {
                // Checked against the live groups first, so what is kept always applies.
                let mut groups = controller.send_targets();
                crate::portal::send_targets::set(&mut groups, p.group, p.portals.clone())
                    .map_err(|e| bad(ErrorCode::Refused, e))?;
                self.keep_array_setting(&call)?;
                controller
                    .set_send_targets(p.group, p.portals.clone())
                    .map_err(|e| bad(ErrorCode::Refused, e))?;
                Ok(portal_list(Some(&controller), self.portal_group_tag))
            }
            ArrayCall::ParamsSet(ref p) => {
                let now = controller.offer_limits();
                let first = p.first_burst_length.unwrap_or(now.first_burst_length);
                let max = p.max_burst_length.unwrap_or(now.max_burst_length);
                if first > max {
                    return Err(bad(
                        ErrorCode::InvalidParams,
                        format!("params_set: first_burst_length {first} is above max_burst_length {max}"),
                    ));
                }
                self.keep_array_setting(&call)?;
                let (limits, asked) = controller.set_offer(crate::server::OfferChange {
                    max_recv_data_segment_length: p.max_recv_data_segment_length,
                    max_burst_length: p.max_burst_length,
                    first_burst_length: p.first_burst_length,
                });
                tracing::info!(
                    ?limits,
                    sessions = asked.len(),
                    "operational limits changed: async event 4 sent"
                );
                Ok(json!({
                    "max_recv_data_segment_length": limits.max_recv_data_segment_length,
                    "max_burst_length": limits.max_burst_length,
                    "first_burst_length": limits.first_burst_length,
                    "asked": asked.len(),
                }))
            }
            ArrayCall::AluaSet(ref p) => {
                let state: AccessState = p
                    .state
                    .parse()
                    .map_err(|e: String| bad(ErrorCode::InvalidParams, e))?;
                let previous = controller.alua().state(p.group);
                let changed = controller
                    .set_alua_state(p.group, state)
                    .map_err(|e| bad(ErrorCode::Refused, e))?;
                if let Err(e) = self.keep_array_setting(&call) {
                    if let (true, Some(previous)) = (changed, previous) {
                        let _ = controller.set_alua_state(p.group, previous);
                    }
                    return Err(e);
                }
                let mut answer = alua_list(&controller);
                answer["changed"] = json!(changed);
                Ok(answer)
            }
        }
    }
}

fn alua_list(controller: &Controller) -> Value {
    let alua = controller.alua();
    let groups: Vec<Value> = alua
        .groups()
        .iter()
        .map(|g| {
            json!({
                "group": g.id,
                "state": g.state.name(),
                "own": g.id == alua.own_group(),
                "ports": g.ports,
            })
        })
        .collect();
    json!({ "groups": groups })
}
