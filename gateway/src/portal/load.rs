//! The live figures of one portal that the event loops, the virtual portal's redirects and
//! the control plane share: sessions on it, logins sent its way, its weight, whether it
//! drains. Atomics only: a login reads and bumps them, the I/O path never touches them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::balance::{self, Candidate};
use super::RedirectKind;

/// How long a login sent to a portal is counted there before it arrives.
const EXPECTED_FOR: Duration = Duration::from_secs(10);

/// The origin of the loads' millisecond clock.
fn clock_origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    clock_origin().elapsed().as_millis() as u64
}

/// What a portal is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortalRole {
    /// Sessions run here.
    Real,
    /// The array's one advertised address: logins are redirected to a real portal (or
    /// accepted, with [`RedirectKind::Accept`]).
    Virtual,
}

/// One portal's shared figures (see the module docs).
#[derive(Debug)]
pub struct PortalLoad {
    pub addr: SocketAddr,
    pub role: PortalRole,
    sessions: AtomicU32,
    /// Logins redirected here that have not logged in yet: counted so that a burst of
    /// logins through the virtual portal spreads before the first of them arrives.
    expected: AtomicU32,
    /// When the last login was sent here (ms since [`clock_origin`]): logins expected
    /// longer than [`EXPECTED_FOR`] ago are not counted (a host that was redirected and
    /// never came, or failed its login, does not weigh on the portal for ever).
    last_redirect_ms: AtomicU64,
    weight: AtomicU32,
    draining: AtomicBool,
}

impl PortalLoad {
    pub fn new(addr: SocketAddr, role: PortalRole, weight: u32) -> PortalLoad {
        PortalLoad {
            addr,
            role,
            sessions: AtomicU32::new(0),
            expected: AtomicU32::new(0),
            last_redirect_ms: AtomicU64::new(0),
            weight: AtomicU32::new(weight),
            draining: AtomicBool::new(false),
        }
    }

    pub fn sessions(&self) -> u32 {
        self.sessions.load(Ordering::Relaxed)
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    pub fn set_weight(&self, weight: u32) {
        self.weight.store(weight, Ordering::Relaxed);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    /// A session logged in here (one redirected here has arrived).
    pub fn session_joined(&self) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .expected
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// A session that logged in here is gone.
    pub fn session_left(&self) {
        let _ = self
            .sessions
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Logins sent here lately and not arrived (see `last_redirect_ms`).
    fn expected_now(&self) -> u32 {
        let last = self.last_redirect_ms.load(Ordering::Relaxed);
        if now_ms().saturating_sub(last) > EXPECTED_FOR.as_millis() as u64 {
            self.expected.store(0, Ordering::Relaxed);
            return 0;
        }
        self.expected.load(Ordering::Relaxed)
    }

    /// A login is sent here.
    fn redirected_here(&self) {
        self.last_redirect_ms.store(now_ms(), Ordering::Relaxed);
        self.expected.fetch_add(1, Ordering::Relaxed);
    }

    /// The portal as a balancing choice sees it.
    pub fn candidate(&self) -> Candidate {
        Candidate {
            sessions: self.sessions() + self.expected_now(),
            weight: self.weight(),
            draining: self.draining(),
        }
    }

    /// The portal as a rebalance sees it: sessions that are here.
    pub fn present(&self) -> Candidate {
        Candidate {
            sessions: self.sessions(),
            ..self.candidate()
        }
    }
}

/// Where a login at the virtual portal goes: the real portals of this gateway, each with
/// its load, and how the login is told (part of the configuration snapshot).
#[derive(Debug)]
pub struct RedirectPlan {
    pub kind: RedirectKind,
    pub group_tag: u16,
    pub portals: Vec<Arc<PortalLoad>>,
}

impl RedirectPlan {
    /// The real portal the next login should use, counted as expected there; `None`
    /// when every real portal is draining or weighted 0 (the login is then served where
    /// it is).
    pub fn choose(&self) -> Option<SocketAddr> {
        let candidates: Vec<Candidate> = self.portals.iter().map(|p| p.candidate()).collect();
        let chosen = &self.portals[balance::choose(&candidates)?];
        chosen.redirected_here();
        Some(chosen.addr)
    }

    /// Whether a redirect answer is temporary (0x0101) or permanent (0x0102).
    pub fn permanent(&self) -> bool {
        self.kind == RedirectKind::Permanent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_sent_to_a_portal_count_there_until_they_arrive() {
        let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let plan = RedirectPlan {
            kind: RedirectKind::Temporary,
            group_tag: 1,
            portals: vec![
                Arc::new(PortalLoad::new(addr(1), PortalRole::Real, 1)),
                Arc::new(PortalLoad::new(addr(2), PortalRole::Real, 1)),
            ],
        };
        // Four logins before any arrives: two each.
        let sent: Vec<SocketAddr> = (0..4).map(|_| plan.choose().unwrap()).collect();
        assert_eq!(sent, vec![addr(1), addr(2), addr(1), addr(2)]);
        // They arrive: expected turns into sessions, the load stays.
        for load in &plan.portals {
            load.session_joined();
            load.session_joined();
            assert_eq!(load.candidate().sessions, 2);
        }
        plan.portals[0].session_left();
        assert_eq!(plan.choose(), Some(addr(1)));
        plan.portals[1].set_draining(true);
        plan.portals[0].set_weight(0);
        assert_eq!(plan.choose(), None, "every portal closed");
    }
}
