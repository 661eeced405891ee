//! The control plane's array methods (issue 15), typed: portal weights and drain,
//! rebalancing, the virtual portal and its redirect kind, ALUA states. No I/O; the
//! server handles them in `control::array`, `iscsi-ctl gateway` sends them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::rpc::{ErrorCode, RpcError};

/// Seconds a host gets to log out after Async Message event 1 when none is given.
pub const DEFAULT_LOGOUT_DEADLINE_S: u16 = 10;

/// `portal_set`: a real portal's weight and/or drain flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalSet {
    pub address: std::net::SocketAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining: Option<bool>,
}

/// `portal_drain`: move every session off a portal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalDrain {
    pub address: std::net::SocketAddr,
    /// Parameter3 of event 1: seconds to log out before event 3 and the close.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_s: Option<u16>,
}

/// `portal_rebalance`: move the surplus of each portal to the others.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rebalance {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_s: Option<u16>,
}

/// `portal_resume`, `virtual_portal_add`: one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub address: std::net::SocketAddr,
}

/// `redirect_set`: `temporary`, `permanent` or `accept`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectSet {
    pub redirect: String,
}

/// `alua_set`: one port group's state, by name (`standby`...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AluaSet {
    pub group: u16,
    pub state: String,
}

/// `params_set`: the operational limits new logins are offered; sessions get Async
/// Message event 4 and may declare MaxRecvDataSegmentLength again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamsSet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_recv_data_segment_length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_burst_length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_burst_length: Option<u32>,
}

/// The largest MaxRecvDataSegmentLength `params_set` takes: a busy connection holds a
/// receive buffer of that size.
pub const PARAMS_MAX_RECV_DATA_SEGMENT_LENGTH_MAX: u32 = 1 << 20;
/// The largest burst RFC 7143 allows (2^24 - 1).
pub const PARAMS_BURST_LENGTH_MAX: u32 = 16_777_215;

impl ParamsSet {
    /// Each value in its range (section 13), and at least one given.
    fn check(&self) -> Result<(), String> {
        let ranges = [
            (
                "max_recv_data_segment_length",
                self.max_recv_data_segment_length,
                PARAMS_MAX_RECV_DATA_SEGMENT_LENGTH_MAX,
            ),
            (
                "max_burst_length",
                self.max_burst_length,
                PARAMS_BURST_LENGTH_MAX,
            ),
            (
                "first_burst_length",
                self.first_burst_length,
                PARAMS_BURST_LENGTH_MAX,
            ),
        ];
        if ranges.iter().all(|(_, value, _)| value.is_none()) {
            return Err("params_set: give at least one of max_recv_data_segment_length, max_burst_length, first_burst_length".into());
        }
        for (name, value, max) in ranges {
            if let Some(value) = value.filter(|v| !(512..=max).contains(v)) {
                return Err(format!("params_set: {name} {value}: expected 512 to {max}"));
            }
        }
        Ok(())
    }
}

/// `send_targets_set`: the portals SendTargets lists for one portal group (empty: the
/// own group's default again, or another group no longer listed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendTargetsSet {
    pub group: u16,
    #[serde(default)]
    pub portals: Vec<std::net::SocketAddr>,
}

/// One array method with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArrayCall {
    PortalSet(PortalSet),
    PortalDrain(PortalDrain),
    PortalResume(Address),
    Rebalance(Rebalance),
    VirtualPortalAdd(Address),
    RedirectSet(RedirectSet),
    AluaList,
    AluaSet(AluaSet),
    ParamsSet(ParamsSet),
    SendTargetsSet(SendTargetsSet),
}

/// The array methods' names.
pub const ARRAY_METHODS: &[&str] = &[
    "portal_set",
    "portal_drain",
    "portal_resume",
    "portal_rebalance",
    "virtual_portal_add",
    "redirect_set",
    "alua_list",
    "alua_set",
    "params_set",
    "send_targets_set",
];

fn typed<T: serde::de::DeserializeOwned>(method: &str, params: Value) -> Result<T, RpcError> {
    serde_json::from_value(params)
        .map_err(|e| RpcError::new(ErrorCode::InvalidParams, format!("{method}: {e}")))
}

impl ArrayCall {
    /// The typed call, or `None` when `method` is not an array method. Values are
    /// checked here (state names, redirect kinds, a zero deadline), so a bad one is
    /// refused before anything runs.
    pub fn parse(method: &str, params: Value) -> Option<Result<ArrayCall, RpcError>> {
        let invalid = |message: String| RpcError::new(ErrorCode::InvalidParams, message);
        let call = match method {
            "portal_set" => typed(method, params).map(ArrayCall::PortalSet),
            "portal_drain" => typed::<PortalDrain>(method, params).and_then(|p| {
                if p.deadline_s == Some(0) {
                    Err(invalid(
                        "portal_drain: deadline_s must be at least 1".into(),
                    ))
                } else {
                    Ok(ArrayCall::PortalDrain(p))
                }
            }),
            "portal_resume" => typed(method, params).map(ArrayCall::PortalResume),
            "portal_rebalance" => typed::<Rebalance>(method, params).and_then(|p| {
                if p.deadline_s == Some(0) {
                    Err(invalid(
                        "portal_rebalance: deadline_s must be at least 1".into(),
                    ))
                } else {
                    Ok(ArrayCall::Rebalance(p))
                }
            }),
            "virtual_portal_add" => typed(method, params).map(ArrayCall::VirtualPortalAdd),
            "redirect_set" => typed::<RedirectSet>(method, params).and_then(|p| {
                p.redirect
                    .parse::<crate::portal::RedirectKind>()
                    .map_err(|e| invalid(format!("redirect_set: {e}")))?;
                Ok(ArrayCall::RedirectSet(p))
            }),
            "alua_list" => match params {
                Value::Object(map) if map.is_empty() => Ok(ArrayCall::AluaList),
                _ => Err(invalid("alua_list takes no parameters".into())),
            },
            "alua_set" => typed::<AluaSet>(method, params).and_then(|p| {
                if p.group == 0 {
                    return Err(invalid(
                        "alua_set: group 0 is reserved; use 1 to 65535".into(),
                    ));
                }
                p.state
                    .parse::<datapath::scsi::alua::AccessState>()
                    .map_err(|e| invalid(format!("alua_set: {e}")))?;
                Ok(ArrayCall::AluaSet(p))
            }),
            "params_set" => typed::<ParamsSet>(method, params).and_then(|p| {
                p.check().map_err(invalid)?;
                Ok(ArrayCall::ParamsSet(p))
            }),
            "send_targets_set" => typed::<SendTargetsSet>(method, params).and_then(|p| {
                crate::portal::send_targets::check(p.group, &p.portals).map_err(invalid)?;
                Ok(ArrayCall::SendTargetsSet(p))
            }),
            _ => return None,
        };
        Some(call)
    }

    /// The method name and parameters, as a client sends them.
    pub fn to_method_params(&self) -> (&'static str, Value) {
        fn v<T: Serialize>(params: &T) -> Value {
            serde_json::to_value(params).unwrap_or(Value::Null)
        }
        match self {
            ArrayCall::PortalSet(p) => ("portal_set", v(p)),
            ArrayCall::PortalDrain(p) => ("portal_drain", v(p)),
            ArrayCall::PortalResume(p) => ("portal_resume", v(p)),
            ArrayCall::Rebalance(p) => ("portal_rebalance", v(p)),
            ArrayCall::VirtualPortalAdd(p) => ("virtual_portal_add", v(p)),
            ArrayCall::RedirectSet(p) => ("redirect_set", v(p)),
            ArrayCall::AluaList => ("alua_list", Value::Object(Default::default())),
            ArrayCall::AluaSet(p) => ("alua_set", v(p)),
            ArrayCall::ParamsSet(p) => ("params_set", v(p)),
            ArrayCall::SendTargetsSet(p) => ("send_targets_set", v(p)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn calls_round_trip_and_bad_values_are_named() {
        let calls = [
            ArrayCall::PortalSet(PortalSet {
                address: "127.0.0.1:3260".parse().unwrap(),
                weight: Some(2),
                draining: None,
            }),
            ArrayCall::PortalDrain(PortalDrain {
                address: "[::1]:3260".parse().unwrap(),
                deadline_s: Some(5),
            }),
            ArrayCall::Rebalance(Rebalance::default()),
            ArrayCall::AluaList,
            ArrayCall::AluaSet(AluaSet {
                group: 2,
                state: "standby".into(),
            }),
            ArrayCall::RedirectSet(RedirectSet {
                redirect: "permanent".into(),
            }),
            ArrayCall::ParamsSet(ParamsSet {
                max_recv_data_segment_length: Some(65536),
                max_burst_length: None,
                first_burst_length: Some(8192),
            }),
            ArrayCall::SendTargetsSet(SendTargetsSet {
                group: 2,
                portals: vec!["127.0.0.1:3261".parse().unwrap()],
            }),
        ];
        for call in calls {
            let (method, params) = call.to_method_params();
            assert_eq!(ArrayCall::parse(method, params).unwrap().unwrap(), call);
        }
        let error = |method: &str, params: Value| {
            ArrayCall::parse(method, params)
                .unwrap()
                .unwrap_err()
                .message
        };
        assert!(error("alua_set", json!({"group": 1, "state": "asleep"})).contains("asleep"));
        assert!(error("alua_set", json!({"group": 0, "state": "standby"})).contains("group 0"));
        assert!(error("redirect_set", json!({"redirect": "sideways"})).contains("sideways"));
        assert!(error(
            "portal_drain",
            json!({"address": "1.2.3.4:1", "deadline_s": 0})
        )
        .contains("deadline_s"));
        assert!(error("portal_set", json!({"address": "nowhere"})).contains("portal_set"));
        assert!(
            error("portal_set", json!({"address": "1.2.3.4:1", "wieght": 1})).contains("wieght")
        );
        assert!(ArrayCall::parse("target_list", json!({})).is_none());
        assert!(error("params_set", json!({})).contains("at least one"));
        assert!(
            error("params_set", json!({"max_burst_length": 100})).contains("max_burst_length 100")
        );
        assert!(error(
            "params_set",
            json!({"max_recv_data_segment_length": 4 << 20})
        )
        .contains("max_recv_data_segment_length"));
        assert!(error(
            "send_targets_set",
            json!({"group": 2, "portals": ["1.2.3.4:1", "1.2.3.4:1"]})
        )
        .contains("twice"));
    }
}
