//! Portals as an array presents them (issue 15): real portals that carry sessions, an
//! optional virtual portal whose logins are redirected to the least loaded real one
//! (RFC 7143 section 11.13.5, status class 1), weights, draining, and the ALUA state of
//! each target port group (SPC-4 5.15).
//!
//! - `balance`: where a login goes and who moves (sans-IO, property-tested).
//! - `load`: each portal's live figures (atomics shared by the event loops and the control
//!   plane) and the virtual portal's [`RedirectPlan`].
//! - `alua`: the port groups' access states, REPORT TARGET PORT GROUPS and the per-command
//!   check.
//! - `send_targets`: which portals SendTargets lists, per portal group.
//! - `announce`: the unsolicited neighbour advertisement of an IPv6 address taken over.
//! - `takeover`: which portal's address moves to which interface when a link goes down.
//!
//! One gateway process is one target port group whose tag is its portal group tag; the
//! relative target port identifier and the ALUA group id are that same number, so two
//! processes exporting one LU (`shared`) with tags 1 and 2 are two ports of one LU.

pub mod alua;
pub mod announce;
pub mod balance;
mod load;
pub mod send_targets;
pub mod takeover;

use std::net::SocketAddr;

pub use alua::AluaGroups;
pub use load::{PortalLoad, PortalRole, RedirectPlan};

use datapath::scsi::alua::AccessState;

/// How a login at the virtual portal is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedirectKind {
    /// 0x0101 TARGET MOVED TEMPORARILY: hosts come back to the virtual portal on every
    /// reconnect, so the array places them again.
    #[default]
    Temporary,
    /// 0x0102 TARGET MOVED PERMANENTLY.
    Permanent,
    /// No redirect: the virtual portal carries sessions itself.
    Accept,
}

impl std::str::FromStr for RedirectKind {
    type Err = String;
    fn from_str(text: &str) -> Result<RedirectKind, String> {
        match text {
            "temporary" => Ok(RedirectKind::Temporary),
            "permanent" => Ok(RedirectKind::Permanent),
            "accept" => Ok(RedirectKind::Accept),
            other => Err(format!(
                "redirect {:?}: expected temporary, permanent or accept",
                other.chars().take(40).collect::<String>()
            )),
        }
    }
}

impl RedirectKind {
    pub fn name(self) -> &'static str {
        match self {
            RedirectKind::Temporary => "temporary",
            RedirectKind::Permanent => "permanent",
            RedirectKind::Accept => "accept",
        }
    }
}

/// The array settings of a target's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArrayConfig {
    /// The virtual portal's address, listened on beside the real portals.
    pub virtual_portal: Option<SocketAddr>,
    pub redirect: RedirectKind,
    /// Weights of real portals (by the address given); 1 for the others.
    pub weights: Vec<(SocketAddr, u32)>,
    /// ALUA states of port groups (the own group is active/optimized unless set).
    pub alua: Vec<(u16, AccessState)>,
    /// The interface of each real portal that may be taken over (`takeover`).
    pub links: Vec<takeover::PortalLink>,
}

impl ArrayConfig {
    pub fn weight_of(&self, addr: SocketAddr) -> u32 {
        self.weights
            .iter()
            .find(|(a, _)| *a == addr)
            .map_or(1, |(_, w)| *w)
    }
}

/// `ADDR=WEIGHT` (`--portal-weight`).
pub fn parse_weight(text: &str) -> Result<(SocketAddr, u32), String> {
    let (addr, weight) = text
        .rsplit_once('=')
        .ok_or_else(|| format!("{text:?}: expected ADDRESS:PORT=WEIGHT"))?;
    let addr = addr
        .parse()
        .map_err(|e| format!("{addr:?}: not an address and port ({e})"))?;
    let weight = weight
        .parse::<u32>()
        .ok()
        .filter(|w| *w <= 1000)
        .ok_or_else(|| format!("weight {weight:?}: expected 0 to 1000"))?;
    Ok((addr, weight))
}

/// `GROUP=STATE` (`--alua`).
pub fn parse_alua(text: &str) -> Result<(u16, AccessState), String> {
    let (group, state) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected GROUP=STATE, e.g. 2=standby"))?;
    let group = group
        .parse::<u16>()
        .ok()
        .filter(|g| *g > 0)
        .ok_or_else(|| format!("port group {group:?}: expected 1 to 65535"))?;
    Ok((group, state.parse()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_or_name_what_is_wrong() {
        assert_eq!(
            parse_weight("127.0.0.1:3260=3"),
            Ok(("127.0.0.1:3260".parse().unwrap(), 3))
        );
        assert!(parse_weight("127.0.0.1:3260")
            .unwrap_err()
            .contains("WEIGHT"));
        assert!(parse_weight("127.0.0.1:3260=x")
            .unwrap_err()
            .contains("weight"));
        assert!(parse_weight("[::1]:3260=2").is_ok());
        assert_eq!(parse_alua("2=standby"), Ok((2, AccessState::Standby)));
        assert!(parse_alua("0=standby").unwrap_err().contains("port group"));
        assert!(parse_alua("1=sleepy").unwrap_err().contains("sleepy"));
        assert_eq!("permanent".parse(), Ok(RedirectKind::Permanent));
        assert!("sideways".parse::<RedirectKind>().is_err());
    }
}
