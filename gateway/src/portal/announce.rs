//! The unsolicited neighbour advertisement that announces an IPv6 portal address taken
//! over by another interface (RFC 4861 section 7.2.6): to all nodes (ff02::1), Override
//! set so hosts replace the link-layer address they cached, Solicited clear, with the new
//! interface's link-layer address as the Target Link-Layer Address option. The IPv4
//! counterpart is the gratuitous ARP of `server::takeover`. Frame building only; no I/O.

use std::net::Ipv6Addr;

/// Ethernet header + IPv6 header + NA (24 bytes) + target link-layer option (8 bytes).
pub const NEIGHBOUR_ADVERTISEMENT_FRAME_BYTES: usize = 14 + 40 + 32;

const ICMPV6: u8 = 58;
const NEIGHBOUR_ADVERTISEMENT: u8 = 136;
/// Flags word: Router (bit 31) and Solicited (bit 30) clear, Override (bit 29) set.
const OVERRIDE_FLAG: u32 = 1 << 29;
const TARGET_LINK_LAYER_ADDRESS: u8 = 2;
/// ff02::1, the all-nodes multicast address, and its Ethernet mapping (RFC 2464).
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

/// The Ethernet frame of an unsolicited NA for `target` from the interface `mac`, sent
/// from `target` itself (an address the interface now holds) with hop limit 255.
pub fn unsolicited_na_frame(
    mac: [u8; 6],
    target: Ipv6Addr,
) -> [u8; NEIGHBOUR_ADVERTISEMENT_FRAME_BYTES] {
    let mut frame = [0u8; NEIGHBOUR_ADVERTISEMENT_FRAME_BYTES];
    frame[0..6].copy_from_slice(&ALL_NODES_MAC);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    let ip = &mut frame[14..54];
    ip[0] = 0x60; // version 6, traffic class and flow label 0
    ip[4..6].copy_from_slice(&32u16.to_be_bytes()); // payload length
    ip[6] = ICMPV6;
    ip[7] = 255; // hop limit: receivers drop NAs with any other
    ip[8..24].copy_from_slice(&target.octets());
    ip[24..40].copy_from_slice(&ALL_NODES.octets());
    let icmp = &mut frame[54..86];
    icmp[0] = NEIGHBOUR_ADVERTISEMENT;
    icmp[4..8].copy_from_slice(&OVERRIDE_FLAG.to_be_bytes());
    icmp[8..24].copy_from_slice(&target.octets());
    icmp[24] = TARGET_LINK_LAYER_ADDRESS;
    icmp[25] = 1; // length in units of 8 bytes
    icmp[26..32].copy_from_slice(&mac);
    let checksum = icmpv6_checksum(target, ALL_NODES, icmp);
    icmp[2..4].copy_from_slice(&checksum.to_be_bytes());
    frame
}

/// The ICMPv6 checksum (RFC 4443 section 2.3) over the pseudo-header (RFC 8200 section
/// 8.1) and `message` (its checksum field zero).
pub fn icmpv6_checksum(source: Ipv6Addr, destination: Ipv6Addr, message: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
            sum += u32::from(word);
        }
    };
    add(&source.octets());
    add(&destination.octets());
    add(&(message.len() as u32).to_be_bytes());
    add(&[0, 0, 0, ICMPV6]);
    add(message);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_advertisement_overrides_for_all_nodes_with_the_new_link_address() {
        let mac = [2, 0, 0, 0, 0, 9];
        let target: Ipv6Addr = "fd77::1".parse().unwrap();
        let frame = unsolicited_na_frame(mac, target);
        assert_eq!(&frame[0..6], &ALL_NODES_MAC);
        assert_eq!(&frame[12..14], &[0x86, 0xdd]);
        assert_eq!(frame[14 + 7], 255, "hop limit");
        assert_eq!(frame[54], 136, "neighbour advertisement");
        assert_eq!(frame[58], 0x20, "override only");
        assert_eq!(&frame[62..78], &target.octets());
        assert_eq!(&frame[80..86], &mac);
        // A receiver's check: the sum over the message with its checksum is zero.
        assert_eq!(icmpv6_checksum(target, ALL_NODES, &frame[54..]), 0);
    }

    proptest! {
        #[test]
        fn every_advertisement_checks_out(mac in any::<[u8; 6]>(), bits in any::<u128>()) {
            let target = Ipv6Addr::from(bits);
            let frame = unsolicited_na_frame(mac, target);
            prop_assert_eq!(icmpv6_checksum(target, ALL_NODES, &frame[54..]), 0);
            prop_assert_eq!(&frame[80..86], &mac[..]);
        }
    }
}
