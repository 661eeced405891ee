//! Port takeover, the decision (sans-IO): each real portal may name the network interface
//! that carries its address (`--portal-interface ADDR=IFACE`). When that interface goes
//! down, the address moves to the interface of a portal whose link is up, so hosts find
//! the same portal address again at once (after a gratuitous ARP) rather than after their
//! own timeouts. The I/O (reading link states, adding the address, the ARP, resetting the
//! sessions of the lost port) is `server::takeover`.
#![forbid(unsafe_code)]

use std::net::SocketAddr;

/// A real portal and the interface that carries its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalLink {
    pub portal: SocketAddr,
    pub interface: String,
}

/// One move: `portal`'s address goes to `interface`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Takeover {
    pub portal: SocketAddr,
    pub interface: String,
}

/// The moves the link states call for. `up[i]` is whether `links[i]`'s interface is up;
/// `moved[i]` whether `links[i]`'s address was already moved (it is not moved twice; it
/// stays where it went when its own link comes back, as the array keeps serving it). A
/// portal whose link is down goes to the first portal (in order) whose link is up and whose
/// own address has not moved away.
pub fn plan(links: &[PortalLink], up: &[bool], moved: &[bool]) -> Vec<Takeover> {
    let survivor = links
        .iter()
        .zip(up)
        .zip(moved)
        .find(|((_, &up), &moved)| up && !moved)
        .map(|((link, _), _)| link.interface.clone());
    let Some(survivor) = survivor else {
        return Vec::new();
    };
    links
        .iter()
        .zip(up)
        .zip(moved)
        .filter(|((link, &up), &moved)| !up && !moved && link.interface != survivor)
        .map(|((link, _), _)| Takeover {
            portal: link.portal,
            interface: survivor.clone(),
        })
        .collect()
}

/// `ADDR=IFACE` (`--portal-interface`).
pub fn parse_portal_link(text: &str) -> Result<PortalLink, String> {
    let (addr, interface) = text
        .rsplit_once('=')
        .ok_or_else(|| format!("{text:?}: expected ADDRESS:PORT=INTERFACE"))?;
    let portal = addr
        .parse()
        .map_err(|e| format!("{addr:?}: not an address and port ({e})"))?;
    let valid = !interface.is_empty()
        && interface.len() < 16
        && interface
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    if !valid {
        return Err(format!(
            "interface {interface:?}: 1 to 15 letters, digits, '-', '_', '.' or '@'"
        ));
    }
    Ok(PortalLink {
        portal,
        interface: interface.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(port: u16, interface: &str) -> PortalLink {
        PortalLink {
            portal: SocketAddr::from(([10, 0, 0, port as u8], port)),
            interface: interface.into(),
        }
    }

    #[test]
    fn a_lost_link_moves_its_address_to_the_first_live_one_once() {
        let links = [link(1, "a1"), link(2, "a2"), link(3, "a3")];
        assert_eq!(plan(&links, &[true, true, true], &[false; 3]), vec![]);
        assert_eq!(
            plan(&links, &[false, true, true], &[false; 3]),
            vec![Takeover {
                portal: links[0].portal,
                interface: "a2".into()
            }]
        );
        // Already moved: not again.
        assert_eq!(
            plan(&links, &[false, true, true], &[true, false, false]),
            vec![]
        );
        // Every link down: nowhere to go.
        assert_eq!(plan(&links, &[false, false, false], &[false; 3]), vec![]);
        // A portal whose address moved away does not take another's.
        assert_eq!(
            plan(&links, &[true, false, true], &[true, false, false]),
            vec![Takeover {
                portal: links[1].portal,
                interface: "a3".into()
            }]
        );
    }

    #[test]
    fn portal_links_parse_or_name_the_problem() {
        assert_eq!(
            parse_portal_link("10.0.0.1:3260=eth0").unwrap().interface,
            "eth0"
        );
        assert!(parse_portal_link("10.0.0.1:3260")
            .unwrap_err()
            .contains("INTERFACE"));
        assert!(parse_portal_link("10.0.0.1:3260=a/b")
            .unwrap_err()
            .contains("interface"));
        assert!(parse_portal_link("nowhere=eth0")
            .unwrap_err()
            .contains("nowhere"));
    }
}
