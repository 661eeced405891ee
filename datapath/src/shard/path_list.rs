//! Which portals a multipath shard uses, as users write them: `iscsi-bench`'s `paths=`
//! and `iscsi-ctl --paths`. `all` (every portal SendTargets lists for the target), or
//! portals separated by commas (`host[:port]`, `[v6][:port]`, port 3260 when left out).
//! The shape is checked when the text is parsed; names are resolved (and `all`
//! discovered) when the shard is about to connect.

use std::net::{SocketAddr, ToSocketAddrs};

use crate::client::Client;
use crate::session::connect::ClientConfig;

/// The well-known iSCSI port (RFC 7143 section 13.2).
const ISCSI_PORT: u16 = 3260;

/// Which portals a multipath shard uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathList {
    /// Every portal SendTargets lists for the target, asked through the URL's portal.
    All,
    /// These portals, as written (`host:port`, `[v6]:port`, `host`, `[v6]`).
    Portals(Vec<String>),
}

impl std::str::FromStr for PathList {
    type Err = String;

    fn from_str(text: &str) -> Result<PathList, String> {
        if text == "all" {
            return Ok(PathList::All);
        }
        let portals = text
            .split(',')
            .map(str::trim)
            .map(|portal| check_portal(portal).map(|()| portal.to_string()))
            .collect::<Result<_, _>>()?;
        Ok(PathList::Portals(portals))
    }
}

impl std::fmt::Display for PathList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathList::All => f.write_str("all"),
            PathList::Portals(list) => f.write_str(&list.join(",")),
        }
    }
}

impl PathList {
    /// The portals as socket addresses: resolved, or for `all` discovered through
    /// `discovery`'s portal. An empty answer is an error naming where it was asked.
    pub fn resolve(&self, discovery: &ClientConfig) -> Result<Vec<SocketAddr>, String> {
        let portals = match self {
            PathList::All => Client::target_portals(discovery).map_err(|e| {
                format!(
                    "paths=all: discovering the target's portals through {}: {e}",
                    discovery.portal
                )
            })?,
            PathList::Portals(list) => list
                .iter()
                .map(|text| resolve_portal(text))
                .collect::<Result<_, _>>()?,
        };
        if portals.is_empty() {
            return Err(format!(
                "paths=all: SendTargets through {} lists no portal for the target",
                discovery.portal
            ));
        }
        Ok(portals)
    }
}

/// One portal's shape: a host, an optional port 1-65535, IPv6 in brackets.
fn check_portal(portal: &str) -> Result<(), String> {
    let (host, port) = match portal.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':').filter(|_| !after.is_empty())),
            None => return Err(format!("{portal:?}: unclosed [ in an IPv6 portal")),
        },
        None => match portal.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            Some(_) => {
                return Err(format!(
                    "{portal:?}: write an IPv6 portal in brackets, [addr]:port"
                ))
            }
            None => (portal, None),
        },
    };
    if host.is_empty() {
        return Err(format!(
            "{portal:?}: no host (expected host[:port], [v6][:port] or all)"
        ));
    }
    if let Some(port) = port {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("{portal:?}: port {port:?} is not 1-65535"));
        }
    }
    Ok(())
}

/// `host:port`, `[v6]:port`, `host` or `[v6]` (port 3260) as one socket address.
fn resolve_portal(text: &str) -> Result<SocketAddr, String> {
    let bad = |why: String| format!("paths: portal {text:?}: {why}");
    let with_port = if text.ends_with(']') || (!text.contains(':') && !text.is_empty()) {
        format!("{text}:{ISCSI_PORT}")
    } else {
        text.to_string()
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("resolves to no address".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_names_what_is_wrong() {
        let list: PathList = "10.0.0.1:3261, host-b,[fd00::1]:3262,[::1]"
            .parse()
            .unwrap();
        assert_eq!(
            list,
            PathList::Portals(vec![
                "10.0.0.1:3261".into(),
                "host-b".into(),
                "[fd00::1]:3262".into(),
                "[::1]".into(),
            ])
        );
        assert_eq!("all".parse::<PathList>().unwrap(), PathList::All);
        for (bad, why) in [
            ("fd00::1:3260", "brackets"),
            ("[fd00::1:3260", "unclosed"),
            ("host:0", "not 1-65535"),
            ("host:x", "not 1-65535"),
            (":3260", "no host"),
            ("a,,b", "no host"),
        ] {
            let error = bad.parse::<PathList>().unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn resolves_with_the_default_port() {
        let list: PathList = "127.0.0.1,[::1]:3262,127.0.0.2:3261".parse().unwrap();
        let config = ClientConfig::new("127.0.0.1:1".parse().unwrap(), Some("iqn.x".into()));
        assert_eq!(
            list.resolve(&config).unwrap(),
            vec![
                "127.0.0.1:3260".parse::<SocketAddr>().unwrap(),
                "[::1]:3262".parse().unwrap(),
                "127.0.0.2:3261".parse().unwrap(),
            ]
        );
    }
}
