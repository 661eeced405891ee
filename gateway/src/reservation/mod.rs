//! Reservations of a logical unit: SCSI-2 RESERVE/RELEASE and SCSI-3 persistent
//! reservations, their unit attentions, and the check every command passes on its way in.
//!
//! - `state`: the rules (SPC-2, SPC-4 5.12), sans-IO: nexus and parameters in, outcome out.
//! - `access`: which class each opcode belongs to (what a reservation allows, SPC-4 table
//!   63 and SBC-4 table 13 condensed to four classes).
//! - `fence`: lets PREEMPT AND ABORT wait for the commands admitted before it, without a
//!   lock or counter shared by all cores on the I/O path.
//! - `persist`: APTPL state on disk (temporary file, fsync, rename, directory fsync).
//! - `lu`: [`LuReservations`], the one object a logical unit holds: the state behind a
//!   mutex taken only by reservation commands, resets and nexus changes, and an epoch that
//!   every other command compares with the one its connection saw last ([`NexusView`]):
//!   one atomic load and a mask test per command while nothing changes.
#![forbid(unsafe_code)]

pub mod access;
mod fence;
mod lu;
mod persist;
pub mod state;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use datapath::scsi::reservation::{hex, TransportId};

use crate::disk::LogicalUnit;

pub use fence::OwnedTicket;
pub use lu::{Admission, LuReservations, ResetKind};
pub use persist::PersistError;

/// An I_T nexus (SAM-5 4.6.4): the iSCSI initiator port (initiator name and ISID, RFC 7143
/// section 4.2.7) and the relative target port it reaches the unit through.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nexus {
    pub initiator_name: String,
    pub isid: [u8; 6],
    pub target_port: u16,
}

impl Nexus {
    /// The nexus as a command carries it to its logical unit (`crate::disk::Nexus`).
    pub fn command_nexus(&self) -> crate::disk::Nexus<'_> {
        crate::disk::Nexus {
            initiator_name: &self.initiator_name,
            isid: self.isid,
        }
    }

    pub fn new(initiator_name: &str, isid: [u8; 6], target_port: u16) -> Nexus {
        Nexus {
            initiator_name: initiator_name.to_string(),
            isid,
            target_port,
        }
    }

    /// The TransportID that names this nexus's initiator port (format 01b).
    pub fn transport_id(&self) -> TransportId {
        TransportId {
            name: self.initiator_name.clone(),
            isid: Some(self.isid),
        }
    }
}

impl std::fmt::Display for Nexus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},i,0x{}", self.initiator_name, hex(&self.isid))
    }
}

/// What one connection last learned of each unit's reservations for its nexus.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cached {
    pub(crate) epoch: u64,
    pub(crate) mask: state::AccessMask,
    pub(crate) attention: bool,
}

/// Hashes a unit key (a LUN number, or a two-level LUN's key) with one multiplication
/// (Fibonacci hashing): the view is looked up on every command, and with commands spread
/// over a thousand bound volumes SipHash was a visible share of the turn. The keys are
/// only those of units that exist, so an initiator cannot grow the map by choosing them.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct UnitKeyHasher(u64);

impl std::hash::Hasher for UnitKeyHasher {
    fn finish(&self) -> u64 {
        // The table indexes by the low bits: fold the product's well-mixed high half in
        // (a two-level LUN's key differs from its neighbours in its upper bytes).
        self.0 ^ (self.0 >> 32)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

#[cfg(test)]
mod hasher_tests {
    use super::UnitKeyHasher;
    use std::hash::{BuildHasher, BuildHasherDefault};

    #[test]
    fn two_level_lun_keys_spread_over_the_low_bits() {
        let build = BuildHasherDefault::<UnitKeyHasher>::default();
        let mut buckets = std::collections::HashSet::new();
        for secondary in 1..=1024u32 {
            let key = datapath::scsi::LunAddress::Subsidiary {
                endpoint: 0,
                secondary,
            }
            .key() as usize;
            buckets.insert(build.hash_one(key) & 1023);
        }
        // 1,024 keys into 1,024 buckets: a random hash fills about 63% of them.
        assert!(buckets.len() > 550, "{} buckets used", buckets.len());
    }
}

/// One nexus's view, owned by its connection (never shared): the nexus and, per unit,
/// what it may do as of which epoch; and the units it joined at their first command
/// rather than at login (bound volumes), so that only those are told when it is lost.
#[derive(Debug)]
pub struct NexusView {
    nexus: Nexus,
    cached: HashMap<usize, Cached, std::hash::BuildHasherDefault<UnitKeyHasher>>,
    /// Set by [`LuReservations::admit`] when the command it admitted made the nexus
    /// present on its unit; read (and cleared) by the caller, which knows the unit.
    joined_by_last_admit: bool,
    /// Units that learnt of this nexus from its commands. `Weak`: an unbound volume
    /// closes when its last command ends, whatever the sessions that once used it.
    joined_late: Vec<Weak<LogicalUnit>>,
}

impl NexusView {
    pub fn new(nexus: Nexus) -> NexusView {
        NexusView {
            nexus,
            cached: HashMap::default(),
            joined_by_last_admit: false,
            joined_late: Vec::new(),
        }
    }

    pub fn nexus(&self) -> &Nexus {
        &self.nexus
    }

    /// Whether the last [`LuReservations::admit`] made this nexus present on its unit
    /// (the unit's first command from it); clears the flag.
    pub fn take_joined_by_last_admit(&mut self) -> bool {
        std::mem::take(&mut self.joined_by_last_admit)
    }

    /// Remembers a unit this nexus joined by a command, to leave it when it is lost.
    pub fn remember_joined(&mut self, unit: &Arc<LogicalUnit>) {
        self.joined_late.push(Arc::downgrade(unit));
    }

    /// The units this nexus joined by its commands that are still open.
    pub fn joined_late(&self) -> impl Iterator<Item = Arc<LogicalUnit>> + '_ {
        self.joined_late.iter().filter_map(Weak::upgrade)
    }
}
