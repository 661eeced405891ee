//! Port takeover, the I/O (the decision is `crate::portal::takeover`): a thread reads the
//! link state of each portal's interface (`/sys/class/net/IFACE/operstate`) every
//! [`POLL_INTERVAL`]; when one goes down, the portal's address is added to a live
//! interface (`ip address add ADDR/32 dev IFACE`, iproute2), announced with three
//! gratuitous ARPs, or for IPv6 three unsolicited neighbour advertisements with the
//! Override flag (`crate::portal::announce`), in the first 100 ms (a raw `AF_PACKET`
//! socket), and the sessions that
//! came through the lost portal are closed at once, so their hosts log in again to the
//! same address now answered by the other interface instead of waiting out TCP
//! retransmissions. The listening socket is bound to the address, not the interface, so it
//! answers wherever the address lives. An IPv6 address is added with `nodad`: duplicate
//! address detection would keep it tentative, unusable, for a second or more.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::portal::takeover::{plan, PortalLink, Takeover};

use super::Controller;

/// How often the link states are read.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// When the gratuitous ARPs go out after the address is added.
const ANNOUNCE_AT_MS: [u64; 3] = [0, 50, 100];

fn link_up(interface: &str) -> bool {
    // "up", or "unknown" for links without carrier reporting (lo, some tunnels).
    std::fs::read_to_string(format!("/sys/class/net/{interface}/operstate"))
        .map(|state| matches!(state.trim(), "up" | "unknown"))
        .unwrap_or(false)
}

/// Watches `links` until the target shuts down; returns the thread.
pub fn watch_portal_links(
    controller: Controller,
    links: Vec<PortalLink>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("portal-links".into())
        .spawn(move || {
            let mut moved = vec![false; links.len()];
            while !controller.shared.shutdown.load(Ordering::Acquire) {
                let up: Vec<bool> = links.iter().map(|l| link_up(&l.interface)).collect();
                for takeover in plan(&links, &up, &moved) {
                    let started = Instant::now();
                    match take_over(&controller, &takeover) {
                        Ok(dropped) => tracing::info!(
                            portal = %takeover.portal,
                            interface = %takeover.interface,
                            sessions_reset = dropped,
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "portal taken over"
                        ),
                        Err(error) => tracing::error!(
                            portal = %takeover.portal,
                            interface = %takeover.interface,
                            %error,
                            "portal takeover failed"
                        ),
                    }
                    if let Some(at) = links.iter().position(|l| l.portal == takeover.portal) {
                        moved[at] = true;
                    }
                }
                std::thread::sleep(POLL_INTERVAL);
            }
        })
}

/// Moves one portal's address; returns how many sessions were reset.
fn take_over(controller: &Controller, takeover: &Takeover) -> Result<usize, String> {
    let ip = takeover.portal.ip();
    let prefix = if ip.is_ipv4() { "32" } else { "128" };
    let mut command = Command::new("ip");
    command
        .args(["address", "add", &format!("{ip}/{prefix}")])
        .args(["dev", &takeover.interface]);
    if ip.is_ipv6() {
        command.arg("nodad");
    }
    let output = command
        .output()
        .map_err(|e| format!("running ip(8): {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        // Already there (a second gateway, or a restart): announce and reset anyway.
        if !stderr.contains("File exists") {
            return Err(format!("ip address add: {}", stderr.trim()));
        }
    }
    let began = Instant::now();
    let mut dropped = None;
    for at_ms in ANNOUNCE_AT_MS {
        let due = Duration::from_millis(at_ms);
        if let Some(wait) = due.checked_sub(began.elapsed()) {
            std::thread::sleep(wait);
        }
        match ip {
            IpAddr::V4(v4) => gratuitous_arp(&takeover.interface, v4)
                .map_err(|e| format!("gratuitous ARP on {}: {e}", takeover.interface))?,
            IpAddr::V6(v6) => neighbour_advertisement(&takeover.interface, v6).map_err(|e| {
                format!(
                    "unsolicited neighbour advertisement on {}: {e}",
                    takeover.interface
                )
            })?,
        }
        // After the first announcement, the hosts of the lost port are reset: they log
        // in again at once, and their packets already go to the new interface.
        if dropped.is_none() {
            dropped = Some(controller.drop_sessions(|s| s.portal == takeover.portal));
        }
    }
    Ok(dropped.unwrap_or(0))
}

fn read_sys(interface: &str, file: &str) -> std::io::Result<String> {
    std::fs::read_to_string(format!("/sys/class/net/{interface}/{file}"))
        .map(|s| s.trim().to_string())
}

/// The interface's hardware address, from sysfs (`aa:bb:...`).
fn mac_of(interface: &str) -> std::io::Result<[u8; 6]> {
    let text = read_sys(interface, "address")?;
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() != 6 {
        return Err(std::io::Error::other(format!("hardware address {text:?}")));
    }
    for (byte, part) in mac.iter_mut().zip(parts) {
        *byte = u8::from_str_radix(part, 16)
            .map_err(|_| std::io::Error::other(format!("hardware address {text:?}")))?;
    }
    Ok(mac)
}

/// An Ethernet frame holding a gratuitous ARP request for `ip` from `mac` (RFC 5227
/// section 3: sender and target protocol address both `ip`, broadcast).
pub fn gratuitous_arp_frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 42] {
    let mut frame = [0u8; 42];
    frame[0..6].copy_from_slice(&[0xff; 6]);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&0x0806u16.to_be_bytes()); // ARP
    frame[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    frame[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    frame[18] = 6;
    frame[19] = 4;
    frame[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    frame[22..28].copy_from_slice(&mac);
    frame[28..32].copy_from_slice(&ip.octets());
    // Target hardware address left zero.
    frame[38..42].copy_from_slice(&ip.octets());
    frame
}

fn gratuitous_arp(interface: &str, ip: Ipv4Addr) -> std::io::Result<()> {
    let frame = gratuitous_arp_frame(mac_of(interface)?, ip);
    send_frame(interface, &frame, libc::ETH_P_ARP as u16, [0xff; 6])
}

fn neighbour_advertisement(interface: &str, ip: Ipv6Addr) -> std::io::Result<()> {
    let frame = crate::portal::announce::unsolicited_na_frame(mac_of(interface)?, ip);
    send_frame(
        interface,
        &frame,
        libc::ETH_P_IPV6 as u16,
        [0x33, 0x33, 0, 0, 0, 1],
    )
}

/// Sends one whole Ethernet frame (`ethertype`, to `destination`) out of `interface`.
fn send_frame(
    interface: &str,
    frame: &[u8],
    ethertype: u16,
    destination: [u8; 6],
) -> std::io::Result<()> {
    let index: i32 = read_sys(interface, "ifindex")?
        .parse()
        .map_err(|_| std::io::Error::other("ifindex"))?;
    let protocol = ethertype.to_be();
    // SAFETY: socket(2) with constant arguments; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(protocol)) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: an all-zero sockaddr_ll is valid; the fields are set below.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_protocol = protocol;
    address.sll_ifindex = index;
    address.sll_halen = 6;
    address.sll_addr[..6].copy_from_slice(&destination);
    // SAFETY: the frame and the address are live locals whose lengths are passed.
    let sent = unsafe {
        libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&address as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    let result = if sent < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    };
    // SAFETY: closing the descriptor made above, once.
    unsafe { libc::close(fd) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gratuitous_arp_names_the_address_twice_and_broadcasts() {
        let mac = [2, 0, 0, 0, 0, 7];
        let frame = gratuitous_arp_frame(mac, Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(&frame[0..6], &[0xff; 6]);
        assert_eq!(&frame[6..12], &mac);
        assert_eq!(&frame[12..14], &[0x08, 0x06]);
        assert_eq!(&frame[20..22], &[0, 1], "request");
        assert_eq!(&frame[28..32], &[10, 77, 0, 1], "sender protocol address");
        assert_eq!(&frame[38..42], &[10, 77, 0, 1], "target protocol address");
    }
}
