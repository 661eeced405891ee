//! Login redirection, RFC 7143 sections 11.13.5 (status class 1) and 13.8 (`TargetAddress`):
//! where a connection goes next, with no I/O.
//!
//! An array that presents one virtual portal answers a login there with "target moved"
//! and a `TargetAddress`; the initiator connects there and logs in again. The session reports
//! the redirect ([`super::Event::Redirect`]); a driver asks its [`PortalRoute`] where the
//! next attempt of the same login goes ([`RouteAttempt::follow`]) and, once logged in,
//! where the next *reconnect* starts ([`PortalRoute::logged_in`]):
//! - after a temporary move (0x0101, and 0x0100, which RFC 3720 drafts used and some arrays
//!   still send) every reconnect starts again at the portal the route was made with (the
//!   virtual portal), so the array can place the host anew;
//! - after a permanent move (0x0102) the route's start moves to the new address, but only
//!   when every move before it was permanent too (a permanent move behind a temporary one
//!   describes the temporary destination, not the virtual portal).
//!
//! One login follows at most [`PortalRoute::max_hops`] moves and never visits a portal
//! twice: a target that sends the initiator round in circles gets an error naming the circle.
//!
//! Name resolution is I/O: the driver resolves a [`TargetAddress`] (its `host` may be a
//! DNS name) and hands the resolved socket address to [`RouteAttempt::follow`].

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The well-known iSCSI port (RFC 7143 section 13.8: the default of `TargetAddress`).
const DEFAULT_PORT: u16 = 3260;

/// Most moves one login follows (open-iscsi follows 8 redirects per login attempt).
pub const DEFAULT_MAX_HOPS: usize = 8;

/// A `TargetAddress` value: `domainname[:port][,portal-group-tag]`, where `domainname` is a
/// DNS host name, a dotted IPv4 address or an IPv6 address in brackets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetAddress {
    /// Host name or address literal, without brackets.
    pub host: String,
    pub port: u16,
    /// `None` when the value carried no tag (section 13.8: the tag is optional in a
    /// redirection).
    pub portal_group_tag: Option<u16>,
}

/// Why a `TargetAddress` value or a redirect cannot be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RedirectError {
    #[error("malformed TargetAddress {value:?}: {reason}")]
    Malformed { value: String, reason: &'static str },
    #[error("redirected in a loop: {chain}")]
    Loop { chain: String },
    #[error("more than {max} redirects in one login: {chain}")]
    TooManyHops { max: usize, chain: String },
    #[error("cannot resolve redirect target {address}: {reason}")]
    Unresolved { address: String, reason: String },
}

impl TargetAddress {
    /// Parses a `TargetAddress` value (section 13.8).
    pub fn parse(value: &str) -> Result<TargetAddress, RedirectError> {
        let bad = |reason| RedirectError::Malformed {
            value: value.to_owned(),
            reason,
        };
        // The portal group tag follows the last comma; an IPv6 literal has no commas.
        let (address, tag) = match value.rsplit_once(',') {
            Some((address, tag)) => {
                let tag = tag
                    .parse::<u16>()
                    .map_err(|_| bad("portal group tag is not a 16-bit number"))?;
                (address, Some(tag))
            }
            None => (value, None),
        };
        let parse_port = |port: &str| {
            port.parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| bad("port is not a number from 1 to 65535"))
        };
        let (host, port) = if let Some(rest) = address.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("IPv6 address without a closing bracket"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("not an IPv6 address inside the brackets"));
            }
            let port = match after {
                "" => DEFAULT_PORT,
                _ => parse_port(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| bad("text after the IPv6 address is not :port"))?,
                )?,
            };
            (host, port)
        } else if address.matches(':').count() > 1 {
            // RFC 7143 requires brackets around an IPv6 literal; some targets leave them
            // out, which leaves no room for a port.
            if address.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("several colons but not an IPv6 address"));
            }
            (address, DEFAULT_PORT)
        } else if let Some((host, port)) = address.split_once(':') {
            (host, parse_port(port)?)
        } else {
            (address, DEFAULT_PORT)
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        if host
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(bad("host contains white space or control characters"));
        }
        Ok(TargetAddress {
            host: host.to_owned(),
            port,
            portal_group_tag: tag,
        })
    }

    /// `host:port` as `ToSocketAddrs` takes it (IPv6 literals in brackets).
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The socket address when the host is an address literal (no resolution needed).
    pub fn literal(&self) -> Option<SocketAddr> {
        self.host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }
}

impl fmt::Display for TargetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host_port())?;
        if let Some(tag) = self.portal_group_tag {
            write!(f, ",{tag}")?;
        }
        Ok(())
    }
}

/// How long a move holds (the Login Response's status detail in class 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectKind {
    /// 0x0101 (and 0x0100): reconnects start again at the original portal.
    Temporary,
    /// 0x0102: the original portal is not to be used again.
    Permanent,
}

impl RedirectKind {
    /// The kind of a class-1 status detail: 2 is permanent, anything else temporary (the
    /// safer reading: the original portal stays the start).
    pub fn from_detail(detail: u8) -> RedirectKind {
        if detail == 0x02 {
            RedirectKind::Permanent
        } else {
            RedirectKind::Temporary
        }
    }
}

/// Where a path's logins start, kept across its reconnects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalRoute {
    /// The portal the route was made with (the virtual portal of an array).
    original: SocketAddr,
    /// Where the next login starts.
    start: SocketAddr,
    max_hops: usize,
}

/// One login's way through redirects, from the route's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAttempt {
    /// Portals visited, the current one last.
    visited: Vec<SocketAddr>,
    /// The kind of each move (one fewer than `visited`).
    kinds: Vec<RedirectKind>,
    max_hops: usize,
}

impl PortalRoute {
    pub fn new(portal: SocketAddr) -> PortalRoute {
        PortalRoute::with_max_hops(portal, DEFAULT_MAX_HOPS)
    }

    pub fn with_max_hops(portal: SocketAddr, max_hops: usize) -> PortalRoute {
        PortalRoute {
            original: portal,
            start: portal,
            max_hops,
        }
    }

    /// The portal the route was made with.
    pub fn original(&self) -> SocketAddr {
        self.original
    }

    /// Where the next login (first login or reconnect) starts.
    pub fn start(&self) -> SocketAddr {
        self.start
    }

    pub fn max_hops(&self) -> usize {
        self.max_hops
    }

    /// A new login attempt, starting at [`PortalRoute::start`].
    pub fn begin(&self) -> RouteAttempt {
        RouteAttempt {
            visited: vec![self.start],
            kinds: Vec::new(),
            max_hops: self.max_hops,
        }
    }

    /// The login of `attempt` succeeded: its leading permanent moves become the start of
    /// later logins (see the module docs). Returns the start now in force.
    pub fn logged_in(&mut self, attempt: &RouteAttempt) -> SocketAddr {
        let permanent = attempt
            .kinds
            .iter()
            .take_while(|kind| **kind == RedirectKind::Permanent)
            .count();
        self.start = attempt.visited[permanent];
        self.start
    }
}

impl RouteAttempt {
    /// The portal to connect to now.
    pub fn portal(&self) -> SocketAddr {
        *self
            .visited
            .last()
            .expect("an attempt starts with one portal")
    }

    /// Moves made so far in this login.
    pub fn hops(&self) -> usize {
        self.kinds.len()
    }

    /// The login at [`RouteAttempt::portal`] was redirected to `to` (resolved by the
    /// caller): the portal to try next, or an error naming the loop or the hop limit.
    pub fn follow(
        &mut self,
        to: SocketAddr,
        kind: RedirectKind,
    ) -> Result<SocketAddr, RedirectError> {
        if self.visited.contains(&to) {
            let mut chain = self.chain();
            chain.push_str(&format!(" → {to}"));
            return Err(RedirectError::Loop { chain });
        }
        if self.kinds.len() >= self.max_hops {
            let mut chain = self.chain();
            chain.push_str(&format!(" → {to}"));
            return Err(RedirectError::TooManyHops {
                max: self.max_hops,
                chain,
            });
        }
        self.visited.push(to);
        self.kinds.push(kind);
        Ok(to)
    }

    /// The portals visited, `a → b → c`.
    pub fn chain(&self) -> String {
        self.visited
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" → ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_ipv4_ipv6_names_ports_and_tags() {
        let cases = [
            ("10.1.2.3", "10.1.2.3", 3260, None),
            ("10.1.2.3:3261", "10.1.2.3", 3261, None),
            ("10.1.2.3:3261,2", "10.1.2.3", 3261, Some(2)),
            ("[fe80::1]", "fe80::1", 3260, None),
            ("[2001:db8::5]:860,7", "2001:db8::5", 860, Some(7)),
            ("2001:db8::5", "2001:db8::5", 3260, None),
            (
                "array-b.example.com:3262,1",
                "array-b.example.com",
                3262,
                Some(1),
            ),
            ("array", "array", 3260, None),
        ];
        for (value, host, port, tag) in cases {
            let parsed = TargetAddress::parse(value).unwrap();
            assert_eq!(
                (parsed.host.as_str(), parsed.port, parsed.portal_group_tag),
                (host, port, tag),
                "{value}"
            );
        }
        let v6 = TargetAddress::parse("[2001:db8::5]:860,7").unwrap();
        assert_eq!(v6.host_port(), "[2001:db8::5]:860");
        assert_eq!(v6.to_string(), "[2001:db8::5]:860,7");
        assert_eq!(v6.literal(), Some(addr("[2001:db8::5]:860")));
        assert_eq!(TargetAddress::parse("array:1").unwrap().literal(), None);
    }

    #[test]
    fn refuses_malformed_addresses() {
        for value in [
            "",
            ":3260",
            "10.1.2.3:",
            "10.1.2.3:0",
            "10.1.2.3:65536",
            "10.1.2.3:3260,",
            "10.1.2.3:3260,70000",
            "[fe80::1",
            "[fe80::1]3260",
            "[not-v6]:3260",
            "a:b:c",
            "[]:3260",
            "bad host:3260",
        ] {
            assert!(
                matches!(
                    TargetAddress::parse(value),
                    Err(RedirectError::Malformed { .. })
                ),
                "{value:?} accepted"
            );
        }
    }

    #[test]
    fn temporary_moves_keep_the_original_start() {
        let virtual_portal = addr("192.0.2.1:3260");
        let mut route = PortalRoute::new(virtual_portal);
        let mut attempt = route.begin();
        assert_eq!(attempt.portal(), virtual_portal);
        let real = attempt
            .follow(addr("192.0.2.7:3260"), RedirectKind::Temporary)
            .unwrap();
        assert_eq!(attempt.portal(), real);
        assert_eq!(route.logged_in(&attempt), virtual_portal);
        assert_eq!(route.begin().portal(), virtual_portal);
    }

    #[test]
    fn permanent_moves_become_the_start_unless_behind_a_temporary_one() {
        let mut route = PortalRoute::new(addr("192.0.2.1:3260"));
        let mut attempt = route.begin();
        attempt
            .follow(addr("192.0.2.2:3260"), RedirectKind::Permanent)
            .unwrap();
        attempt
            .follow(addr("192.0.2.3:3260"), RedirectKind::Permanent)
            .unwrap();
        attempt
            .follow(addr("192.0.2.4:3260"), RedirectKind::Temporary)
            .unwrap();
        attempt
            .follow(addr("192.0.2.5:3260"), RedirectKind::Permanent)
            .unwrap();
        assert_eq!(route.logged_in(&attempt), addr("192.0.2.3:3260"));
        assert_eq!(route.start(), addr("192.0.2.3:3260"));
        assert_eq!(route.original(), addr("192.0.2.1:3260"));

        let mut route = PortalRoute::new(addr("192.0.2.1:3260"));
        let mut attempt = route.begin();
        attempt
            .follow(addr("192.0.2.4:3260"), RedirectKind::Temporary)
            .unwrap();
        attempt
            .follow(addr("192.0.2.5:3260"), RedirectKind::Permanent)
            .unwrap();
        assert_eq!(route.logged_in(&attempt), addr("192.0.2.1:3260"));
    }

    #[test]
    fn a_loop_is_named() {
        let route = PortalRoute::new(addr("192.0.2.1:3260"));
        let mut attempt = route.begin();
        attempt
            .follow(addr("192.0.2.2:3260"), RedirectKind::Temporary)
            .unwrap();
        let error = attempt
            .follow(addr("192.0.2.1:3260"), RedirectKind::Temporary)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "redirected in a loop: 192.0.2.1:3260 → 192.0.2.2:3260 → 192.0.2.1:3260"
        );
    }

    #[test]
    fn the_hop_limit_holds() {
        let route = PortalRoute::with_max_hops(addr("192.0.2.1:3260"), 2);
        let mut attempt = route.begin();
        attempt
            .follow(addr("192.0.2.2:3260"), RedirectKind::Temporary)
            .unwrap();
        attempt
            .follow(addr("192.0.2.3:3260"), RedirectKind::Temporary)
            .unwrap();
        let error = attempt
            .follow(addr("192.0.2.4:3260"), RedirectKind::Temporary)
            .unwrap_err();
        assert!(
            matches!(error, RedirectError::TooManyHops { max: 2, .. }),
            "{error}"
        );
        assert!(error
            .to_string()
            .ends_with("192.0.2.3:3260 → 192.0.2.4:3260"));
    }
}
