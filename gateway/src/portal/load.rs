//! The live figures of one portal that the event loops, the virtual portal's redirects and
//! the control plane share: sessions on it, logins sent its way, its weight, whether it
//! drains. Atomics only: a login reads and bumps them, the I/O path never touches them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use super::balance::{self, Candidate};
use super::RedirectKind;

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

    /// The portal as a balancing choice sees it.
    pub fn candidate(&self) -> Candidate {
        Candidate {
            sessions: self.sessions() + self.expected.load(Ordering::Relaxed),
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
        chosen.expected.fetch_add(1, Ordering::Relaxed);
        Some(chosen.addr)
    }

    /// Whether a redirect answer is temporary (0x0101) or permanent (0x0102).
    pub fn permanent(&self) -> bool {
        self.kind == RedirectKind::Permanent
    }
}
