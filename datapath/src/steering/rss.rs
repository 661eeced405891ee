//! A NIC's RSS configuration as data, and the choice of a local port that lands a connection's
//! receive traffic on a wanted queue.
//!
//! How a NIC picks the receive queue (Linux `Documentation/networking/scaling.rst`, "RSS"): it
//! hashes the packet (Toeplitz over the 4-tuple, see [`super::toeplitz`]), uses the low-order
//! bits of the hash to index the indirection table, and the entry is the queue. Linux drivers
//! size the table as a power of two, so `hash % len` below is the same as masking the low bits;
//! for the rare driver with another size the modulo is this module's assumption.
//!
//! No I/O here: [`RssConfig`] is built from what [`super::ethtool`] read, or from fixtures.

#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

use super::toeplitz;
use super::SteeringError;

/// `ETH_RSS_HASH_TOP`: the Toeplitz hash function bit in ethtool's `hfunc` field
/// (`include/uapi/linux/ethtool.h`).
pub const HASH_FUNCTION_TOEPLITZ: u8 = 1 << 0;
/// `ETH_RSS_HASH_XOR`.
pub const HASH_FUNCTION_XOR: u8 = 1 << 1;
/// `ETH_RSS_HASH_CRC32`.
pub const HASH_FUNCTION_CRC32: u8 = 1 << 2;

/// The most indirection table entries accepted (real NICs have 64 to 2048; the ethtool core
/// caps the table far below this).
pub const INDIRECTION_ENTRIES_MAX: usize = 1 << 16;
/// The longest RSS key accepted in bytes (real keys are 40 or 52 bytes).
pub const KEY_BYTES_MAX: usize = 256;

/// A NIC's receive-side scaling setup: how many receive queues, the hash key, and the
/// indirection table that maps the low bits of the hash to a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RssConfig {
    /// Receive queues the NIC spreads flows over (`ETHTOOL_GRXRINGS`, or the channel count).
    pub queues: u32,
    /// The Toeplitz key (`ETHTOOL_GRSSH`), usually 40 or 52 bytes.
    pub key: Vec<u8>,
    /// The indirection table: entry `hash % len` is the receive queue.
    pub indirection: Vec<u32>,
    /// ethtool's `hfunc` bits (`ETH_RSS_HASH_*`); only Toeplitz can be predicted here.
    pub hash_function: u8,
    /// ethtool's `input_xfrm` (non-zero: the NIC transforms the input, e.g. symmetric XOR,
    /// before hashing, so the plain Toeplitz prediction does not hold).
    pub input_transform: u8,
}

impl RssConfig {
    /// A Toeplitz RSS configuration from its parts (for fixtures and tests, and what the
    /// ethtool reader builds). Refuses an empty table, a table entry naming a queue at or above
    /// `queues`, or sizes beyond [`INDIRECTION_ENTRIES_MAX`] / [`KEY_BYTES_MAX`].
    pub fn new(queues: u32, key: Vec<u8>, indirection: Vec<u32>) -> Result<Self, SteeringError> {
        if indirection.is_empty() || indirection.len() > INDIRECTION_ENTRIES_MAX {
            return Err(SteeringError::BadRssConfig {
                what: "indirection table size",
                value: indirection.len() as u64,
            });
        }
        if key.len() > KEY_BYTES_MAX {
            return Err(SteeringError::BadRssConfig {
                what: "key length",
                value: key.len() as u64,
            });
        }
        if let Some(&entry) = indirection.iter().find(|&&q| q >= queues) {
            return Err(SteeringError::BadRssConfig {
                what: "indirection entry beyond the queue count",
                value: u64::from(entry),
            });
        }
        Ok(RssConfig {
            queues,
            key,
            indirection,
            hash_function: HASH_FUNCTION_TOEPLITZ,
            input_transform: 0,
        })
    }

    /// An evenly spread table of `entries` over `queues` queues (`ethtool -X equal`), the
    /// default most drivers program.
    pub fn equal_spread(queues: u32, key: Vec<u8>, entries: usize) -> Result<Self, SteeringError> {
        let queues_nonzero = queues.max(1);
        let indirection = (0..entries)
            .map(|i| (i as u64 % u64::from(queues_nonzero)) as u32)
            .collect();
        Self::new(queues, key, indirection)
    }

    /// Whether the receive queue of a flow can be predicted: Toeplitz, no input transform.
    pub fn is_predictable(&self) -> bool {
        self.hash_function == HASH_FUNCTION_TOEPLITZ && self.input_transform == 0
    }

    /// The receive queue for a packet whose RSS hash is `hash`.
    pub fn queue_for_hash(&self, hash: u32) -> Option<u32> {
        let len = self.indirection.len();
        if len == 0 {
            return None;
        }
        self.indirection.get(hash as usize % len).copied()
    }

    /// The receive queue for the packets `target` sends to `local` (the NIC hashes the packet
    /// it receives: source = target, destination = us). `None` if the hash cannot be predicted
    /// (not Toeplitz, key too short, mixed address families).
    pub fn receive_queue(&self, target: SocketAddr, local: SocketAddr) -> Option<u32> {
        if !self.is_predictable() {
            return None;
        }
        let hash = toeplitz::hash_tcp(&self.key, target, local)?;
        self.queue_for_hash(hash)
    }

    /// Local ports in `ports`, in ascending order, whose connections to `target` from
    /// `local_ip` receive on `wanted_queue`. Visits each port of the range at most once.
    pub fn ports_for_queue(
        &self,
        target: SocketAddr,
        local_ip: IpAddr,
        wanted_queue: u32,
        ports: RangeInclusive<u16>,
    ) -> impl Iterator<Item = u16> + '_ {
        ports.filter(move |&port| {
            self.receive_queue(target, SocketAddr::new(local_ip, port)) == Some(wanted_queue)
        })
    }

    /// The first local port in `ports` that lands `target`'s traffic on `wanted_queue`, or
    /// `None` if no port of the range does (or the hash cannot be predicted).
    pub fn choose_local_port(
        &self,
        target: SocketAddr,
        local_ip: IpAddr,
        wanted_queue: u32,
        ports: RangeInclusive<u16>,
    ) -> Option<u16> {
        self.ports_for_queue(target, local_ip, wanted_queue, ports)
            .next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steering::toeplitz::MICROSOFT_VERIFICATION_KEY;

    fn fixture() -> RssConfig {
        // Four queues, a 128-entry table spread evenly (what `ethtool -x` shows on a 4-queue
        // ixgbe/mlx5 port), the Microsoft key.
        RssConfig::equal_spread(4, MICROSOFT_VERIFICATION_KEY.to_vec(), 128).unwrap()
    }

    #[test]
    fn queue_follows_the_published_hash_through_the_table() {
        let rss = fixture();
        // From the Microsoft table: 66.9.149.187:2794 -> 161.142.100.80:1766 hashes to
        // 0x51ccc178; entry 0x78 % 128 = 120 of an equal spread over 4 is queue 0.
        let target: SocketAddr = "66.9.149.187:2794".parse().unwrap();
        let local: SocketAddr = "161.142.100.80:1766".parse().unwrap();
        assert_eq!(rss.queue_for_hash(0x51cc_c178), Some(120 % 4));
        assert_eq!(rss.receive_queue(target, local), Some(0));
    }

    #[test]
    fn chosen_port_lands_on_each_wanted_queue() {
        let rss = fixture();
        let target: SocketAddr = "192.0.2.10:3260".parse().unwrap();
        let local_ip: IpAddr = "198.51.100.7".parse().unwrap();
        for wanted in 0..4 {
            let port = rss
                .choose_local_port(target, local_ip, wanted, 40000..=40999)
                .expect("a port for every queue in 1000 tries");
            let hash =
                toeplitz::hash_tcp(&rss.key, target, SocketAddr::new(local_ip, port)).unwrap();
            assert_eq!(rss.indirection[hash as usize % 128], wanted);
        }
    }

    #[test]
    fn ports_spread_roughly_evenly() {
        let rss = fixture();
        let target: SocketAddr = "[2001:db8::10]:3260".parse().unwrap();
        let local_ip: IpAddr = "2001:db8::7".parse().unwrap();
        let counts: Vec<usize> = (0..4)
            .map(|q| {
                rss.ports_for_queue(target, local_ip, q, 50000..=51023)
                    .count()
            })
            .collect();
        assert_eq!(counts.iter().sum::<usize>(), 1024);
        for count in counts {
            assert!((128..=384).contains(&count), "{count}");
        }
    }

    #[test]
    fn an_unreachable_queue_gives_no_port() {
        let rss = RssConfig::new(4, MICROSOFT_VERIFICATION_KEY.to_vec(), vec![0, 1, 2, 0]).unwrap();
        let target: SocketAddr = "192.0.2.10:3260".parse().unwrap();
        let local_ip: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(
            rss.choose_local_port(target, local_ip, 3, 1024..=65535),
            None
        );
    }

    #[test]
    fn unpredictable_configurations_choose_nothing() {
        let mut rss = fixture();
        let target: SocketAddr = "192.0.2.10:3260".parse().unwrap();
        let local_ip: IpAddr = "198.51.100.7".parse().unwrap();
        rss.hash_function = HASH_FUNCTION_XOR;
        assert_eq!(
            rss.choose_local_port(target, local_ip, 0, 1024..=2047),
            None
        );
        let mut rss = fixture();
        rss.input_transform = 1;
        assert_eq!(
            rss.choose_local_port(target, local_ip, 0, 1024..=2047),
            None
        );
        let v6_local: IpAddr = "2001:db8::7".parse().unwrap();
        assert_eq!(
            fixture().choose_local_port(target, v6_local, 0, 1024..=2047),
            None
        );
    }

    #[test]
    fn bad_configurations_are_refused() {
        let key = MICROSOFT_VERIFICATION_KEY.to_vec();
        assert!(RssConfig::new(4, key.clone(), vec![]).is_err());
        assert!(RssConfig::new(4, key.clone(), vec![0, 4]).is_err());
        assert!(RssConfig::new(4, vec![0; KEY_BYTES_MAX + 1], vec![0]).is_err());
        assert!(RssConfig::new(0, key, vec![0]).is_err());
    }
}
