//! The server's side of `crate::portal`: what SendTargets advertises, the virtual portal's
//! redirect plan in each configuration snapshot, the ALUA table the connections check,
//! and the control plane's operations on portals (weights, drain, rebalance, Async
//! Messages to chosen sessions, ALUA changes with their unit attention).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use datapath::scsi::alua::{AccessState, ACCESS_STATE_CHANGED};

use super::{Controller, PortalListener, ServerError, SessionInfo, TargetConfig};
use crate::portal::balance::{self, Candidate};
use crate::portal::{AluaGroups, PortalLoad, PortalRole, RedirectKind, RedirectPlan};
use crate::session::Portal;

/// How long after an Async Message event 2 or 3 the gateway closes a connection the host
/// did not close itself.
pub const ARRAY_EVENT_GRACE: Duration = Duration::from_millis(500);

/// What the event loops and the control plane share about the array.
pub(crate) struct ArrayShared {
    pub(crate) alua: Arc<AluaGroups>,
    redirect: AtomicU8,
    /// The own port group went to standby because every real portal drains (an implicit
    /// transition, undone when one takes logins again).
    implicit_standby: std::sync::atomic::AtomicBool,
    /// What SendTargets lists per portal group, as configured (`portal::send_targets`).
    send_targets: std::sync::Mutex<crate::portal::send_targets::ListedGroups>,
}

impl ArrayShared {
    pub(crate) fn new(config: &TargetConfig) -> Result<ArrayShared, ServerError> {
        let alua = Arc::new(AluaGroups::new(config.portal_group_tag));
        for (group, state) in &config.array.alua {
            alua.set(*group, *state)
                .map_err(|e| ServerError::Config(e.to_string()))?;
        }
        Ok(ArrayShared {
            alua,
            redirect: AtomicU8::new(redirect_code(config.array.redirect)),
            implicit_standby: std::sync::atomic::AtomicBool::new(false),
            send_targets: std::sync::Mutex::new(Default::default()),
        })
    }

    /// The configured SendTargets groups (a copy).
    pub(crate) fn send_targets(&self) -> crate::portal::send_targets::ListedGroups {
        match self.send_targets.lock() {
            Ok(groups) => groups.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn redirect(&self) -> RedirectKind {
        match self.redirect.load(Ordering::Relaxed) {
            1 => RedirectKind::Permanent,
            2 => RedirectKind::Accept,
            _ => RedirectKind::Temporary,
        }
    }
}

fn redirect_code(kind: RedirectKind) -> u8 {
    match kind {
        RedirectKind::Temporary => 0,
        RedirectKind::Permanent => 1,
        RedirectKind::Accept => 2,
    }
}

/// What SendTargets lists: with a virtual portal, only it (hosts come back to the array's
/// one address, which places them); without, every portal.
pub(crate) fn advertised(listeners: &[PortalListener], group_tag: u16) -> Vec<Portal> {
    let virtual_only = listeners.iter().any(|l| l.load.role == PortalRole::Virtual);
    listeners
        .iter()
        .filter(|l| !virtual_only || l.load.role == PortalRole::Virtual)
        .map(|l| Portal {
            addr: l.addr,
            group_tag,
        })
        .collect()
}

/// The redirect plan of a snapshot: `None` without a virtual portal, or when it accepts.
pub(crate) fn redirect_plan(
    listeners: &[PortalListener],
    kind: RedirectKind,
    group_tag: u16,
) -> Option<Arc<RedirectPlan>> {
    if kind == RedirectKind::Accept || !listeners.iter().any(|l| l.load.role == PortalRole::Virtual)
    {
        return None;
    }
    Some(Arc::new(RedirectPlan {
        kind,
        group_tag,
        portals: listeners
            .iter()
            .filter(|l| l.load.role == PortalRole::Real)
            .map(|l| Arc::clone(&l.load))
            .collect(),
    }))
}

/// An Async Message the control plane asks an event loop to send on one connection,
/// packed into the connection's `async_request` word: event in bits 48..56, Parameter2
/// in 16..32, Parameter3 in 0..16; bit 63 marks it present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AsyncRequest {
    pub(crate) event: u8,
    pub(crate) parameter2: u16,
    pub(crate) parameter3: u16,
}

impl AsyncRequest {
    pub(crate) fn encode(self) -> u64 {
        1 << 63
            | u64::from(self.event) << 48
            | u64::from(self.parameter2) << 16
            | u64::from(self.parameter3)
    }

    pub(crate) fn decode(word: u64) -> Option<AsyncRequest> {
        (word >> 63 == 1).then_some(AsyncRequest {
            event: (word >> 48) as u8,
            parameter2: (word >> 16) as u16,
            parameter3: word as u16,
        })
    }
}

/// One portal as `portal_list` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalStatus {
    pub addr: SocketAddr,
    pub role: PortalRole,
    pub sessions: u32,
    pub weight: u32,
    pub draining: bool,
}

impl Controller {
    fn listener_loads(&self) -> Vec<Arc<PortalLoad>> {
        self.current()
            .listeners
            .iter()
            .map(|l| Arc::clone(&l.load))
            .collect()
    }

    fn load_of(&self, addr: SocketAddr) -> Option<Arc<PortalLoad>> {
        self.listener_loads().into_iter().find(|l| l.addr == addr)
    }

    /// Every portal with its role, sessions, weight and drain flag.
    pub fn portal_status(&self) -> Vec<PortalStatus> {
        self.listener_loads()
            .iter()
            .map(|l| PortalStatus {
                addr: l.addr,
                role: l.role,
                sessions: l.sessions(),
                weight: l.weight(),
                draining: l.draining(),
            })
            .collect()
    }

    /// Sets a real portal's weight; false when there is no such portal.
    pub fn set_portal_weight(&self, addr: SocketAddr, weight: u32) -> bool {
        self.load_of(addr).map(|l| l.set_weight(weight)).is_some()
    }

    /// Marks a portal draining (no new logins through the virtual portal) or open
    /// again; false when there is no such portal. When every real portal drains, the
    /// own ALUA port group goes to standby (an implicit transition, with its unit
    /// attention); when one opens again, back to active/optimized.
    pub fn set_portal_draining(&self, addr: SocketAddr, draining: bool) -> bool {
        if self
            .load_of(addr)
            .map(|l| l.set_draining(draining))
            .is_none()
        {
            return false;
        }
        let real: Vec<PortalStatus> = self
            .portal_status()
            .into_iter()
            .filter(|p| p.role == PortalRole::Real)
            .collect();
        let all_draining = !real.is_empty() && real.iter().all(|p| p.draining);
        let array = &self.shared.array;
        let own = array.alua.own_group();
        if all_draining && array.alua.own_state().is_active() {
            array.implicit_standby.store(true, Ordering::Relaxed);
            let _ = self.set_alua_state(own, AccessState::Standby);
        } else if !all_draining && array.implicit_standby.swap(false, Ordering::Relaxed) {
            let _ = self.set_alua_state(own, AccessState::ActiveOptimized);
        }
        true
    }

    /// How the virtual portal answers logins from now on (the next snapshot carries it).
    pub fn set_redirect(&self, kind: RedirectKind) {
        self.shared
            .array
            .redirect
            .store(redirect_code(kind), Ordering::Relaxed);
        self.publish_with(None, None);
    }

    pub fn redirect(&self) -> RedirectKind {
        self.shared.array.redirect()
    }

    /// Sets which portals SendTargets lists for `group` (empty: the default again) and
    /// publishes it: discoveries from then on answer with it.
    pub fn set_send_targets(&self, group: u16, portals: Vec<SocketAddr>) -> Result<(), String> {
        {
            let mut groups = match self.shared.array.send_targets.lock() {
                Ok(groups) => groups,
                Err(poisoned) => poisoned.into_inner(),
            };
            crate::portal::send_targets::set(&mut groups, group, portals)?;
        }
        self.publish_with(None, None);
        Ok(())
    }

    /// The configured SendTargets groups.
    pub fn send_targets(&self) -> crate::portal::send_targets::ListedGroups {
        self.shared.array.send_targets()
    }

    /// The ALUA table (states of the port groups).
    pub fn alua(&self) -> Arc<AluaGroups> {
        Arc::clone(&self.shared.array.alua)
    }

    /// Sets a port group's state; when it changed, every nexus of every LU gets the
    /// ASYMMETRIC ACCESS STATE CHANGED unit attention (SPC-4 5.15.2.2). Returns whether
    /// it changed.
    pub fn set_alua_state(&self, group: u16, state: AccessState) -> Result<bool, String> {
        let changed = self
            .shared
            .array
            .alua
            .set(group, state)
            .map_err(|e| e.to_string())?;
        if changed {
            for target in self.targets() {
                target.executor.announce(ACCESS_STATE_CHANGED);
            }
            tracing::info!(group, %state, "ALUA state changed");
        }
        Ok(changed)
    }

    /// Asks the sessions `pick` chooses for an Async Message; returns them.
    pub fn send_async(
        &self,
        request: AsyncRequestSpec,
        pick: impl Fn(&SessionInfo) -> bool,
    ) -> Vec<SessionInfo> {
        let Ok(registry) = self.shared.registry.lock() else {
            return Vec::new();
        };
        let word = AsyncRequest {
            event: request.event,
            parameter2: request.parameter2,
            parameter3: request.parameter3,
        }
        .encode();
        let mut asked = Vec::new();
        for (key, control) in registry.iter() {
            let info = super::session_info(key, control);
            if pick(&info) {
                control.async_request.store(word, Ordering::Release);
                control
                    .loop_waker
                    .kills_requested
                    .store(true, Ordering::Release);
                control.loop_waker.wake();
                asked.push(info);
            }
        }
        asked
    }

    /// The sessions on real portals that a rebalance would move (the surplus of each
    /// portal over its fair share; all of a draining portal's), most recent first
    /// within a portal (their TSIH is the highest).
    pub fn rebalance_candidates(&self) -> Vec<SessionInfo> {
        let loads: Vec<Arc<PortalLoad>> = self
            .listener_loads()
            .into_iter()
            .filter(|l| l.role == PortalRole::Real)
            .collect();
        let candidates: Vec<Candidate> = loads.iter().map(|l| l.present()).collect();
        let surplus = balance::surplus(&candidates);
        let sessions = self.sessions();
        let mut chosen = Vec::new();
        for (load, count) in loads.iter().zip(surplus) {
            let mut here: Vec<&SessionInfo> =
                sessions.iter().filter(|s| s.portal == load.addr).collect();
            here.sort_by_key(|s| std::cmp::Reverse(s.tsih));
            chosen.extend(here.into_iter().take(count as usize).cloned());
        }
        chosen
    }
}

/// An Async Message to send (the event and its parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsyncRequestSpec {
    /// 1 logout requested, 2 connection drop, 3 session drop, 4 renegotiate.
    pub event: u8,
    /// Time2Wait for events 2 and 3.
    pub parameter2: u16,
    /// The logout deadline (event 1) or Time2Retain (events 2, 3), seconds.
    pub parameter3: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn async_requests_pack_into_one_word() {
        let request = AsyncRequest {
            event: 3,
            parameter2: 2,
            parameter3: 20,
        };
        assert_eq!(AsyncRequest::decode(request.encode()), Some(request));
        assert_eq!(AsyncRequest::decode(0), None);
        let max = AsyncRequest {
            event: 255,
            parameter2: u16::MAX,
            parameter3: u16::MAX,
        };
        assert_eq!(AsyncRequest::decode(max.encode()), Some(max));
    }
}
