//! The Toeplitz hash that NICs use for receive-side scaling (RSS), as Microsoft's NDIS
//! documentation defines it ("RSS hashing functions"; checked against the "Verifying the RSS
//! Hash Calculation" key and vectors in the tests below).
//!
//! Definition: for every bit of the input, most significant bit of the first byte first, if the
//! bit is set the result is XORed with the 32 key bits that start at the same bit position of
//! the key. The key window therefore slides one bit per input bit, so a key of `n + 4` bytes
//! covers an input of `n` bytes (a 40-byte key covers the 36 bytes of an IPv6 TCP 4-tuple).
//!
//! Input layouts (the order the fields occur in the packet headers):
//! - IPv4 with TCP: source address, destination address, source port, destination port
//!   (4 + 4 + 2 + 2 = 12 bytes, network byte order); IPv4 alone: the first 8 bytes.
//! - IPv6 with TCP: the same order with 16-byte addresses (36 bytes); IPv6 alone: 32 bytes.
//!
//! Direction matters: the NIC hashes the packet it *receives*, so for a connection we opened
//! the source is the target and the destination is us.

#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};

/// The largest input a hash in this module takes (an IPv6 TCP 4-tuple).
const TUPLE_BYTES_MAX: usize = 16 + 16 + 2 + 2;

/// The Toeplitz hash of `input` under `key`, or `None` if the key is shorter than
/// `input.len() + 4` bytes (it would not cover every input bit).
pub fn toeplitz_hash(key: &[u8], input: &[u8]) -> Option<u32> {
    if key.len() < input.len().checked_add(4)? {
        return None;
    }
    // `window` holds the 32 key bits aligned with the current input bit; after each input bit
    // it shifts left by one and takes in the next key bit.
    let mut window = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
    let mut result = 0u32;
    for (index, &byte) in input.iter().enumerate() {
        // In range: index + 4 < input.len() + 4 <= key.len().
        let next_key_byte = key[index + 4];
        for bit in (0..8).rev() {
            if byte & (1 << bit) != 0 {
                result ^= window;
            }
            window = (window << 1) | u32::from((next_key_byte >> bit) & 1);
        }
    }
    Some(result)
}

/// The RSS hash of a TCP segment from `source` to `destination` (the 4-tuple hash), or `None`
/// if the two addresses are of different families or the key is too short.
pub fn hash_tcp(key: &[u8], source: SocketAddr, destination: SocketAddr) -> Option<u32> {
    let mut tuple = [0u8; TUPLE_BYTES_MAX];
    let len = put_addresses(&mut tuple, source.ip(), destination.ip())?;
    tuple[len..len + 2].copy_from_slice(&source.port().to_be_bytes());
    tuple[len + 2..len + 4].copy_from_slice(&destination.port().to_be_bytes());
    toeplitz_hash(key, &tuple[..len + 4])
}

/// The RSS hash over the addresses only (the 2-tuple hash NICs use for non-TCP/UDP packets or
/// when configured so), or `None` for mixed families or a short key.
pub fn hash_ip(key: &[u8], source: IpAddr, destination: IpAddr) -> Option<u32> {
    let mut tuple = [0u8; TUPLE_BYTES_MAX];
    let len = put_addresses(&mut tuple, source, destination)?;
    toeplitz_hash(key, &tuple[..len])
}

/// Writes source then destination address into `tuple`; returns the bytes written, or `None`
/// for mixed families.
fn put_addresses(
    tuple: &mut [u8; TUPLE_BYTES_MAX],
    source: IpAddr,
    destination: IpAddr,
) -> Option<usize> {
    match (source, destination) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            tuple[..4].copy_from_slice(&s.octets());
            tuple[4..8].copy_from_slice(&d.octets());
            Some(8)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            tuple[..16].copy_from_slice(&s.octets());
            tuple[16..32].copy_from_slice(&d.octets());
            Some(32)
        }
        _ => None,
    }
}

/// The verification key from Microsoft's "Verifying the RSS Hash Calculation" (also in Intel's
/// 82599 datasheet, section 7.1.2.8.3, "RSS Verification Suite").
pub const MICROSOFT_VERIFICATION_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One row of the published table: destination, source, hash over the addresses only,
    /// hash with the TCP ports.
    struct Vector {
        destination: &'static str,
        source: &'static str,
        ip_only: u32,
        with_tcp: u32,
    }

    /// Microsoft, "Verifying the RSS Hash Calculation": the IPv4 table.
    const IPV4_VECTORS: &[Vector] = &[
        Vector {
            destination: "161.142.100.80:1766",
            source: "66.9.149.187:2794",
            ip_only: 0x323e_8fc2,
            with_tcp: 0x51cc_c178,
        },
        Vector {
            destination: "65.69.140.83:4739",
            source: "199.92.111.2:14230",
            ip_only: 0xd718_262a,
            with_tcp: 0xc626_b0ea,
        },
        Vector {
            destination: "12.22.207.184:38024",
            source: "24.19.198.95:12898",
            ip_only: 0xd2d0_a5de,
            with_tcp: 0x5c2b_394a,
        },
        Vector {
            destination: "209.142.163.6:2217",
            source: "38.27.205.30:48228",
            ip_only: 0x8298_9176,
            with_tcp: 0xafc7_327f,
        },
        Vector {
            destination: "202.188.127.2:1303",
            source: "153.39.163.191:44251",
            ip_only: 0x5d18_09c5,
            with_tcp: 0x10e8_28a2,
        },
    ];

    /// Microsoft, "Verifying the RSS Hash Calculation": the IPv6 table.
    const IPV6_VECTORS: &[Vector] = &[
        Vector {
            destination: "[3ffe:2501:200:3::1]:1766",
            source: "[3ffe:2501:200:1fff::7]:2794",
            ip_only: 0x2cc1_8cd5,
            with_tcp: 0x4020_7d3d,
        },
        Vector {
            destination: "[ff02::1]:4739",
            source: "[3ffe:501:8::260:97ff:fe40:efab]:14230",
            ip_only: 0x0f0c_461c,
            with_tcp: 0xdde5_1bbf,
        },
        Vector {
            destination: "[fe80::200:f8ff:fe21:67cf]:38024",
            source: "[3ffe:1900:4545:3:200:f8ff:fe21:67cf]:44251",
            ip_only: 0x4b61_e985,
            with_tcp: 0x02d1_feef,
        },
    ];

    fn check(vectors: &[Vector]) {
        for v in vectors {
            let destination: SocketAddr = v.destination.parse().unwrap();
            let source: SocketAddr = v.source.parse().unwrap();
            assert_eq!(
                hash_tcp(&MICROSOFT_VERIFICATION_KEY, source, destination),
                Some(v.with_tcp),
                "with TCP: {} -> {}",
                v.source,
                v.destination
            );
            assert_eq!(
                hash_ip(&MICROSOFT_VERIFICATION_KEY, source.ip(), destination.ip()),
                Some(v.ip_only),
                "addresses only: {} -> {}",
                v.source,
                v.destination
            );
        }
    }

    #[test]
    fn microsoft_ipv4_vectors() {
        check(IPV4_VECTORS);
    }

    #[test]
    fn microsoft_ipv6_vectors() {
        check(IPV6_VECTORS);
    }

    #[test]
    fn direction_matters() {
        let v = &IPV4_VECTORS[0];
        let destination: SocketAddr = v.destination.parse().unwrap();
        let source: SocketAddr = v.source.parse().unwrap();
        assert_ne!(
            hash_tcp(&MICROSOFT_VERIFICATION_KEY, destination, source),
            Some(v.with_tcp)
        );
    }

    #[test]
    fn short_key_and_mixed_families_are_refused() {
        let v4: SocketAddr = "192.0.2.1:3260".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:3260".parse().unwrap();
        assert_eq!(hash_tcp(&MICROSOFT_VERIFICATION_KEY, v4, v6), None);
        assert_eq!(hash_tcp(&MICROSOFT_VERIFICATION_KEY[..15], v4, v4), None);
        assert!(hash_tcp(&MICROSOFT_VERIFICATION_KEY[..16], v4, v4).is_some());
        assert_eq!(hash_tcp(&MICROSOFT_VERIFICATION_KEY[..39], v6, v6), None);
        assert_eq!(toeplitz_hash(&[], &[]), None);
        assert_eq!(toeplitz_hash(&[0; 4], &[]), Some(0));
    }

    proptest! {
        /// The hash is linear over XOR (a property of Toeplitz matrices): h(a ^ b) = h(a) ^ h(b).
        #[test]
        fn hash_is_xor_linear(a in proptest::array::uniform12(any::<u8>()),
                              b in proptest::array::uniform12(any::<u8>())) {
            let key = MICROSOFT_VERIFICATION_KEY;
            let mut c = [0u8; 12];
            for i in 0..12 {
                c[i] = a[i] ^ b[i];
            }
            let ha = toeplitz_hash(&key, &a).unwrap();
            let hb = toeplitz_hash(&key, &b).unwrap();
            prop_assert_eq!(toeplitz_hash(&key, &c).unwrap(), ha ^ hb);
        }

        /// A single set bit at position `i` yields the 32 key bits starting at bit `i`.
        #[test]
        fn single_bit_selects_the_key_window(i in 0usize..96) {
            let key = MICROSOFT_VERIFICATION_KEY;
            let mut input = [0u8; 12];
            input[i / 8] = 0x80 >> (i % 8);
            let mut expected = 0u32;
            for j in 0..32 {
                let bit = i + j;
                let key_bit = (key[bit / 8] >> (7 - bit % 8)) & 1;
                expected = (expected << 1) | u32::from(key_bit);
            }
            prop_assert_eq!(toeplitz_hash(&key, &input).unwrap(), expected);
        }
    }
}
