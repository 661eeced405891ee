//! The array settings that survive a restart: portal weights, drained portals, ALUA
//! states set by the operator, the redirect kind and the virtual portals added live. They
//! are kept in the state directory like any other change: each setting call is a journal
//! record (the call as sent), replayed here at start, and the snapshot holds the result.
//!
//! What is kept is what the operator asked for, not what it caused: a drain keeps its
//! portal closed to new logins after a restart, but the sessions it moved are not moved
//! again, and an implicit ALUA transition (every real portal draining) follows from the
//! drained portals rather than being recorded itself.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use datapath::scsi::alua::AccessState;
use serde::{Deserialize, Serialize};

use super::array_rpc::{ArrayCall, ParamsSet};
use crate::portal::{PortalRole, RedirectKind};
use crate::server::Controller;

/// The array settings of one gateway, as the state directory keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArraySettings {
    /// Weights set through the control plane, by portal.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub weights: BTreeMap<SocketAddr, u32>,
    /// Portals drained (closed to new logins through the virtual portal).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub draining: BTreeSet<SocketAddr>,
    /// Port group states the operator set, by group (`standby`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub alua: BTreeMap<u16, String>,
    /// `temporary`, `permanent` or `accept`, once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<String>,
    /// Virtual portals added through the control plane (bound addresses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub virtual_portals: Vec<SocketAddr>,
    /// What SendTargets lists per portal group (`send_targets_set`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub send_targets: BTreeMap<u16, Vec<SocketAddr>>,
    /// Operational limits offered to new logins (`params_set`), once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<ParamsSet>,
}

impl ArraySettings {
    pub fn is_empty(&self) -> bool {
        *self == ArraySettings::default()
    }

    /// Whether `call` changes a setting kept here (and so is journaled). Moves (the
    /// sessions a drain or rebalance asks to leave) and lists are not settings.
    pub fn is_setting(call: &ArrayCall) -> bool {
        matches!(
            call,
            ArrayCall::PortalSet(_)
                | ArrayCall::PortalDrain(_)
                | ArrayCall::PortalResume(_)
                | ArrayCall::VirtualPortalAdd(_)
                | ArrayCall::RedirectSet(_)
                | ArrayCall::AluaSet(_)
                | ArrayCall::ParamsSet(_)
                | ArrayCall::SendTargetsSet(_)
        )
    }

    /// Records what `call` set (a call already checked by `ArrayCall::parse`; the
    /// virtual portal's address is the bound one). Calls that set nothing are ignored.
    pub fn record(&mut self, call: &ArrayCall) {
        match call {
            ArrayCall::PortalSet(p) => {
                if let Some(weight) = p.weight {
                    // Kept even at the default: it overrides `--portal-weight`.
                    self.weights.insert(p.address, weight);
                }
                match p.draining {
                    Some(true) => {
                        self.draining.insert(p.address);
                    }
                    Some(false) => {
                        self.draining.remove(&p.address);
                    }
                    None => {}
                }
            }
            ArrayCall::PortalDrain(p) => {
                self.draining.insert(p.address);
            }
            ArrayCall::PortalResume(p) => {
                self.draining.remove(&p.address);
            }
            ArrayCall::VirtualPortalAdd(p) => {
                if !self.virtual_portals.contains(&p.address) {
                    self.virtual_portals.push(p.address);
                }
            }
            ArrayCall::RedirectSet(p) => self.redirect = Some(p.redirect.clone()),
            ArrayCall::AluaSet(p) => {
                self.alua.insert(p.group, p.state.clone());
            }
            ArrayCall::ParamsSet(p) => {
                let kept = self.params.get_or_insert_with(ParamsSet::default);
                if p.max_recv_data_segment_length.is_some() {
                    kept.max_recv_data_segment_length = p.max_recv_data_segment_length;
                }
                if p.max_burst_length.is_some() {
                    kept.max_burst_length = p.max_burst_length;
                }
                if p.first_burst_length.is_some() {
                    kept.first_burst_length = p.first_burst_length;
                }
            }
            ArrayCall::SendTargetsSet(p) => {
                if p.portals.is_empty() {
                    self.send_targets.remove(&p.group);
                } else {
                    self.send_targets.insert(p.group, p.portals.clone());
                }
            }
            ArrayCall::Rebalance(_) | ArrayCall::AluaList => {}
        }
    }

    /// Sets the running server to these settings (at start, after a restart). A setting
    /// that no longer fits (its portal was removed, its address cannot be bound) is
    /// skipped with a warning naming it: the gateway still starts.
    pub fn apply(&self, controller: &Controller) {
        let present =
            |addr: &SocketAddr| controller.portal_status().iter().any(|p| p.addr == *addr);
        for addr in &self.virtual_portals {
            if present(addr) {
                continue;
            }
            if let Err(error) = controller.add_portal_as(*addr, PortalRole::Virtual) {
                tracing::warn!(portal = %addr, %error, "kept virtual portal not restored");
            }
        }
        for (addr, weight) in &self.weights {
            if !controller.set_portal_weight(*addr, *weight) {
                tracing::warn!(portal = %addr, weight, "kept weight of a portal that is gone");
            }
        }
        for addr in &self.draining {
            if !controller.set_portal_draining(*addr, true) {
                tracing::warn!(portal = %addr, "kept drain of a portal that is gone");
            }
        }
        if let Some(kind) = &self.redirect {
            match kind.parse::<RedirectKind>() {
                Ok(kind) => controller.set_redirect(kind),
                Err(error) => tracing::warn!(%error, "kept redirect kind not understood"),
            }
        }
        if let Some(p) = &self.params {
            controller.set_offer(crate::server::OfferChange {
                max_recv_data_segment_length: p.max_recv_data_segment_length,
                max_burst_length: p.max_burst_length,
                first_burst_length: p.first_burst_length,
            });
        }
        for (group, portals) in &self.send_targets {
            if let Err(error) = controller.set_send_targets(*group, portals.clone()) {
                tracing::warn!(group, %error, "kept SendTargets group not restored");
            }
        }
        for (group, state) in &self.alua {
            let restored = state
                .parse::<AccessState>()
                .and_then(|state| controller.set_alua_state(*group, state));
            if let Err(error) = restored {
                tracing::warn!(group, state, %error, "kept ALUA state not restored");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::array_rpc::{Address, AluaSet, PortalDrain, PortalSet, RedirectSet};
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn settings_follow_the_calls_and_survive_serialisation() {
        let mut settings = ArraySettings::default();
        assert!(settings.is_empty());
        let calls = [
            ArrayCall::PortalSet(PortalSet {
                address: addr(1),
                weight: Some(3),
                draining: None,
            }),
            ArrayCall::PortalDrain(PortalDrain {
                address: addr(2),
                deadline_s: None,
            }),
            ArrayCall::PortalDrain(PortalDrain {
                address: addr(3),
                deadline_s: Some(4),
            }),
            ArrayCall::PortalResume(Address { address: addr(3) }),
            ArrayCall::VirtualPortalAdd(Address { address: addr(9) }),
            ArrayCall::VirtualPortalAdd(Address { address: addr(9) }),
            ArrayCall::RedirectSet(RedirectSet {
                redirect: "accept".into(),
            }),
            ArrayCall::AluaSet(AluaSet {
                group: 2,
                state: "standby".into(),
            }),
            ArrayCall::AluaSet(AluaSet {
                group: 2,
                state: "unavailable".into(),
            }),
        ];
        for call in &calls {
            assert!(ArraySettings::is_setting(call));
            settings.record(call);
        }
        assert_eq!(settings.weights, BTreeMap::from([(addr(1), 3)]));
        assert_eq!(settings.draining, BTreeSet::from([addr(2)]));
        assert_eq!(settings.virtual_portals, vec![addr(9)]);
        assert_eq!(settings.redirect.as_deref(), Some("accept"));
        assert_eq!(settings.alua, BTreeMap::from([(2, "unavailable".into())]));
        settings.record(&ArrayCall::PortalSet(PortalSet {
            address: addr(1),
            weight: Some(1),
            draining: Some(true),
        }));
        assert_eq!(settings.weights, BTreeMap::from([(addr(1), 1)]));
        assert!(settings.draining.contains(&addr(1)));
        let text = serde_json::to_string(&settings).unwrap();
        assert_eq!(
            serde_json::from_str::<ArraySettings>(&text).unwrap(),
            settings
        );
        assert!(!ArraySettings::is_setting(&ArrayCall::AluaList));
    }
}
