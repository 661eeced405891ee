//! Serial number arithmetic for 32-bit sequence numbers (CmdSN, StatSN, DataSN, R2TSN),
//! RFC 1982 as required by RFC 7143 section 4.2.2.1.

/// A 32-bit sequence number compared with RFC 1982 rules: `a < b` when `b` is ahead of `a`
/// by less than 2^31. Two numbers exactly 2^31 apart are unordered (`partial_cmp` is `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SerialNumber(pub u32);

impl SerialNumber {
    /// The number `n` steps ahead, wrapping at 2^32.
    #[allow(clippy::should_implement_trait)] // RFC 1982 addition is not `Add`: n < 2^31
    pub fn add(self, n: u32) -> SerialNumber {
        SerialNumber(self.0.wrapping_add(n))
    }

    /// How far `later` is ahead of `self`, if it is not behind (RFC 1982 order).
    pub fn distance_to(self, later: SerialNumber) -> Option<u32> {
        let d = later.0.wrapping_sub(self.0);
        (d < 1 << 31).then_some(d)
    }
}

impl PartialOrd for SerialNumber {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        use std::cmp::Ordering::*;
        let (a, b) = (self.0, other.0);
        if a == b {
            Some(Equal)
        } else if (a < b && b - a < 1 << 31) || (a > b && a - b > 1 << 31) {
            Some(Less)
        } else if (a < b && b - a > 1 << 31) || (a > b && a - b < 1 << 31) {
            Some(Greater)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_and_orders() {
        assert!(SerialNumber(0xffff_fff0) < SerialNumber(5));
        assert!(SerialNumber(5) > SerialNumber(0xffff_fff0));
        assert!(SerialNumber(1) < SerialNumber(2));
        assert_eq!(SerialNumber(0).partial_cmp(&SerialNumber(1 << 31)), None);
        assert_eq!(SerialNumber(0xffff_ffff).add(2), SerialNumber(1));
        assert_eq!(
            SerialNumber(0xffff_ffff).distance_to(SerialNumber(1)),
            Some(2)
        );
        assert_eq!(SerialNumber(10).distance_to(SerialNumber(9)), None);
    }
}
