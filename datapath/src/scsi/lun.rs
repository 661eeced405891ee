//! The 8-byte LUN field, SAM-5 section 4.7.
//!
//! A LUN travels as eight bytes: up to four two-byte levels, each led by a two-bit
//! ADDRESS METHOD. An initiator talking to a single-level target needs two of them:
//! - peripheral device addressing (method 00b, SAM-5 4.7.7): byte 0 holds the bus
//!   identifier (0 for "this level"), byte 1 the LUN, so LUNs 0-255;
//! - flat space addressing (method 01b, SAM-5 4.7.8): 14 bits across bytes 0-1, so LUNs
//!   0-16383.
//!
//! The remaining six bytes are zero for a single-level LUN. Anything else (hierarchical
//! LUNs, logical unit addressing, extended or well-known LUNs) is kept as the raw field:
//! the initiator never needs to interpret it, only to send back what REPORT LUNS gave.
//!
//! Conglomerates (SAM-5 4.7.2 with LU_CONG set, SPC-5 6.7.2): a subsidiary logical unit
//! is reached through its administrative logical unit (a protocol endpoint) with a
//! two-level LUN ([`LunAddress`]): the first level is the administrative LU in simple
//! logical unit addressing (method 00b, 14 bits), the second level the subsidiary's
//! secondary ID, in simple addressing (up to 16,383, two bytes) or in extended flat space
//! addressing (extended method 11b, length 01b, extended address method 2h: up to
//! 2^24 - 1, four bytes). This is what sg3_utils' `sg_luns --lu_cong` decodes.

use std::fmt;
use std::str::FromStr;

use super::ScsiError;

/// Address method 00b in the top two bits of byte 0.
const METHOD_PERIPHERAL: u8 = 0x00;
/// Address method 01b in the top two bits of byte 0.
const METHOD_FLAT: u8 = 0x40;
const METHOD_MASK: u8 = 0xc0;

/// Highest LUN the flat space method can carry (14 bits).
pub const FLAT_SPACE_MAX: u64 = 0x3fff;

/// Highest LUN simple logical unit addressing carries (14 bits, method 00b).
pub const SIMPLE_MAX: u64 = 0x3fff;

/// Highest secondary ID extended flat space addressing carries (24 bits).
pub const EXTENDED_FLAT_SPACE_MAX: u64 = 0xff_ffff;

/// Byte 0 of an extended flat space level: method 11b, length 01b (four bytes), extended
/// address method 2h.
const EXTENDED_FLAT_SPACE: u8 = 0xd2;

/// What a LUN field addresses, as a gateway with conglomerates reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LunAddress {
    /// A single-level LUN, 0 to 16,383 (peripheral, simple or flat space form).
    Single(u16),
    /// A subsidiary logical unit: the administrative LU (the protocol endpoint) and the
    /// secondary ID, 1 to 2^24 - 1.
    Subsidiary { endpoint: u16, secondary: u32 },
}

impl LunAddress {
    /// The one `u64` a gateway keys a LUN by: the number of a single-level LUN, or the
    /// canonical field (simple form up to 16,383, extended flat space above) of a
    /// subsidiary LU, big-endian. A subsidiary's key is at least 2^16 (its second level
    /// is not zero), so the two never meet; `Lun::from_u64(key)` gives the field back.
    pub fn key(self) -> u64 {
        match self {
            LunAddress::Single(n) => u64::from(n),
            LunAddress::Subsidiary { .. } => self.to_lun().raw(),
        }
    }

    /// The LUN field of this address: a single-level LUN as [`Lun::from_u64`] encodes
    /// it; a subsidiary in simple addressing at both levels while the secondary ID fits
    /// 14 bits, else extended flat space at the second level.
    pub fn to_lun(self) -> Lun {
        match self {
            LunAddress::Single(n) => Lun::from_u64(u64::from(n)),
            LunAddress::Subsidiary {
                endpoint,
                secondary,
            } => {
                let mut field = [0u8; 8];
                field[..2].copy_from_slice(&simple_level(endpoint));
                if u64::from(secondary) <= SIMPLE_MAX {
                    field[2..4].copy_from_slice(&simple_level(secondary as u16));
                } else {
                    field[2] = EXTENDED_FLAT_SPACE;
                    field[3..6].copy_from_slice(&secondary.to_be_bytes()[1..]);
                }
                Lun { field }
            }
        }
    }

    /// The inverse of [`LunAddress::key`], for a key [`LunAddress::key`] made.
    pub fn from_key(key: u64) -> Option<LunAddress> {
        if key <= SIMPLE_MAX {
            return Some(LunAddress::Single(key as u16));
        }
        Lun::from_field(key.to_be_bytes()).address()
    }
}

/// A level in simple logical unit addressing: method 00b, 14 bits.
fn simple_level(n: u16) -> [u8; 2] {
    [((n >> 8) as u8) & 0x3f, n as u8]
}

/// A logical unit number, held as its 8-byte wire field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Lun {
    field: [u8; 8],
}

impl Lun {
    /// Encodes a LUN number the way targets report small LUNs: the peripheral device
    /// method below 256, the flat space method below 16384. A larger `n` is taken as the
    /// raw 8-byte field, big-endian (what [`Lun`]'s `Display` prints for a LUN it cannot
    /// show as a number), so a value read from a display round-trips.
    pub fn from_u64(n: u64) -> Lun {
        let mut field = [0u8; 8];
        if n < 256 {
            field[0] = METHOD_PERIPHERAL;
            field[1] = n as u8;
        } else if n <= FLAT_SPACE_MAX {
            field[0] = METHOD_FLAT | ((n >> 8) as u8 & 0x3f);
            field[1] = n as u8;
        } else {
            field = n.to_be_bytes();
        }
        Lun { field }
    }

    /// Takes a LUN field as received (from REPORT LUNS or a PDU header), unchanged.
    pub fn from_field(field: [u8; 8]) -> Lun {
        Lun { field }
    }

    /// The 8-byte field to put in a PDU header.
    pub fn to_field(self) -> [u8; 8] {
        self.field
    }

    /// The LUN as a number when the field is a single-level LUN in the peripheral device
    /// (bus 0) or flat space method; `None` for any other form.
    pub fn number(self) -> Option<u64> {
        if self.field[2..].iter().any(|&b| b != 0) {
            return None;
        }
        let byte0 = self.field[0];
        match byte0 & METHOD_MASK {
            // A nonzero bus identifier addresses a device behind another level: not a
            // plain number at this level.
            METHOD_PERIPHERAL if byte0 == 0 => Some(u64::from(self.field[1])),
            METHOD_FLAT => Some(u64::from(byte0 & 0x3f) << 8 | u64::from(self.field[1])),
            _ => None,
        }
    }

    /// The field as one big-endian number, whatever its form.
    pub fn raw(self) -> u64 {
        u64::from_be_bytes(self.field)
    }

    /// A subsidiary LU's LUN ([`LunAddress::to_lun`]); `None` when the endpoint is above
    /// 16,383 or the secondary ID is 0 or above 2^24 - 1.
    pub fn subsidiary(endpoint: u64, secondary: u64) -> Option<Lun> {
        (endpoint <= SIMPLE_MAX && (1..=EXTENDED_FLAT_SPACE_MAX).contains(&secondary)).then(|| {
            LunAddress::Subsidiary {
                endpoint: endpoint as u16,
                secondary: secondary as u32,
            }
            .to_lun()
        })
    }

    /// What the field addresses under conglomerate rules: a single level in the
    /// peripheral (bus 0), simple (method 00b, 14 bits) or flat space form, or two
    /// levels whose first is simple or flat space and whose second is simple (nonzero)
    /// or extended flat space (nonzero), with every later byte zero. `None` for any
    /// other form (logical unit addressing, well-known LUNs, three or four levels).
    pub fn address(self) -> Option<LunAddress> {
        let f = self.field;
        let first = match f[0] & METHOD_MASK {
            METHOD_PERIPHERAL | METHOD_FLAT => u16::from(f[0] & 0x3f) << 8 | u16::from(f[1]),
            _ => return None,
        };
        if f[2..].iter().all(|&b| b == 0) {
            return Some(LunAddress::Single(first));
        }
        let secondary = match f[2] {
            b if b & METHOD_MASK == METHOD_PERIPHERAL && f[4..].iter().all(|&b| b == 0) => {
                u32::from(b & 0x3f) << 8 | u32::from(f[3])
            }
            EXTENDED_FLAT_SPACE if f[6..].iter().all(|&b| b == 0) => {
                u32::from_be_bytes([0, f[3], f[4], f[5]])
            }
            _ => return None,
        };
        (secondary != 0).then_some(LunAddress::Subsidiary {
            endpoint: first,
            secondary,
        })
    }
}

impl From<Lun> for [u8; 8] {
    fn from(lun: Lun) -> [u8; 8] {
        lun.field
    }
}

impl From<[u8; 8]> for Lun {
    fn from(field: [u8; 8]) -> Lun {
        Lun::from_field(field)
    }
}

/// The number for a single-level LUN (`3`, `300`), otherwise the raw field in hex
/// (`0x0001000200000000`).
impl fmt::Display for Lun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.number() {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "0x{:016x}", self.raw()),
        }
    }
}

/// Parses what `Display` prints: a decimal or `0x`-prefixed hex number is a LUN number
/// ([`Lun::from_u64`]); exactly 16 hex digits after `0x` are the raw field, so any LUN
/// shown round-trips, including raw fields whose value happens to be small.
/// `ENDPOINT:SECONDARY` (each decimal or `0x` hex) names a subsidiary logical unit
/// ([`Lun::subsidiary`]), as URLs and job options write it.
impl FromStr for Lun {
    type Err = ScsiError;

    fn from_str(text: &str) -> Result<Lun, ScsiError> {
        let invalid = || ScsiError::InvalidLun {
            text: text.chars().take(40).collect(),
        };
        let trimmed = text.trim();
        if let Some((endpoint, secondary)) = trimmed.split_once(':') {
            let number = |t: &str| match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => t.parse::<u64>().ok(),
            };
            return match (number(endpoint), number(secondary)) {
                (Some(e), Some(s)) => Lun::subsidiary(e, s).ok_or_else(invalid),
                _ => Err(invalid()),
            };
        }
        match trimmed
            .strip_prefix("0x")
            .or_else(|| trimmed.strip_prefix("0X"))
        {
            Some(hex) => {
                let value = u64::from_str_radix(hex, 16).map_err(|_| invalid())?;
                if hex.len() == 16 {
                    Ok(Lun::from_field(value.to_be_bytes()))
                } else {
                    Ok(Lun::from_u64(value))
                }
            }
            None => trimmed
                .parse::<u64>()
                .map(Lun::from_u64)
                .map_err(|_| invalid()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn small_luns_use_peripheral_method() {
        assert_eq!(Lun::from_u64(0).to_field(), [0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Lun::from_u64(1).to_field(), [0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Lun::from_u64(255).to_field(), [0, 0xff, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn medium_luns_use_flat_space_method() {
        assert_eq!(
            Lun::from_u64(256).to_field(),
            [0x41, 0x00, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            Lun::from_u64(0x1234).to_field(),
            [0x52, 0x34, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            Lun::from_u64(16383).to_field(),
            [0x7f, 0xff, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn large_values_are_the_raw_field() {
        let lun = Lun::from_u64(0x0102_0304_0506_0708);
        assert_eq!(lun.to_field(), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(lun.number(), None);
        assert_eq!(lun.to_string(), "0x0102030405060708");
    }

    #[test]
    fn decodes_flat_space_below_256_too() {
        // A target may report LUN 5 in flat space form; it is still LUN 5.
        assert_eq!(
            Lun::from_field([0x40, 5, 0, 0, 0, 0, 0, 0]).number(),
            Some(5)
        );
    }

    #[test]
    fn other_forms_are_not_numbers() {
        // Peripheral method with bus 1.
        assert_eq!(Lun::from_field([0x01, 5, 0, 0, 0, 0, 0, 0]).number(), None);
        // Two levels.
        assert_eq!(Lun::from_field([0, 1, 0, 2, 0, 0, 0, 0]).number(), None);
        // Logical unit addressing method (10b).
        assert_eq!(Lun::from_field([0x80, 1, 0, 0, 0, 0, 0, 0]).number(), None);
        // REPORT LUNS well-known logical unit (extended addressing, 0xC101).
        let wlun = Lun::from_field([0xc1, 0x01, 0, 0, 0, 0, 0, 0]);
        assert_eq!(wlun.number(), None);
        assert_eq!(wlun.to_string(), "0xc101000000000000");
    }

    #[test]
    fn parses_numbers_and_raw_fields() {
        assert_eq!("7".parse::<Lun>(), Ok(Lun::from_u64(7)));
        assert_eq!("0x100".parse::<Lun>(), Ok(Lun::from_u64(256)));
        assert_eq!(
            "0x0000000000000100".parse::<Lun>(),
            Ok(Lun::from_field([0, 0, 0, 0, 0, 0, 1, 0]))
        );
        assert!(matches!(
            "lun7".parse::<Lun>(),
            Err(ScsiError::InvalidLun { .. })
        ));
        assert!("0x".parse::<Lun>().is_err());
        assert_eq!("5:1".parse::<Lun>(), Ok(Lun::subsidiary(5, 1).unwrap()));
        assert_eq!(
            "0x3ff:0xffffff".parse::<Lun>(),
            Ok(Lun::subsidiary(1023, 0xff_ffff).unwrap())
        );
        assert!("5:0".parse::<Lun>().is_err());
        assert!("16384:1".parse::<Lun>().is_err());
        assert!("5:x".parse::<Lun>().is_err());
    }

    #[test]
    fn display_shows_numbers() {
        assert_eq!(Lun::from_u64(7).to_string(), "7");
        assert_eq!(Lun::from_u64(300).to_string(), "300");
    }

    #[test]
    fn subsidiaries_use_simple_then_extended_flat_space_form() {
        // Endpoint 0, secondary 1: what sg_luns --lu_cong decodes as "simple 0 / simple 1".
        assert_eq!(
            Lun::subsidiary(0, 1).unwrap().to_field(),
            [0, 0, 0, 1, 0, 0, 0, 0]
        );
        // Endpoint 1023 (simple addressing, not flat space), secondary 16,383.
        assert_eq!(
            Lun::subsidiary(1023, 16383).unwrap().to_field(),
            [0x03, 0xff, 0x3f, 0xff, 0, 0, 0, 0]
        );
        // Endpoint 256, secondary 2^24 - 1: extended flat space.
        assert_eq!(
            Lun::subsidiary(256, 0xff_ffff).unwrap().to_field(),
            [0x01, 0x00, 0xd2, 0xff, 0xff, 0xff, 0, 0]
        );
        assert_eq!(Lun::subsidiary(0, 0), None);
        assert_eq!(Lun::subsidiary(0, 1 << 24), None);
        assert_eq!(Lun::subsidiary(16384, 1), None);
    }

    #[test]
    fn addresses_decode_every_accepted_form() {
        let sub = |endpoint, secondary| LunAddress::Subsidiary {
            endpoint,
            secondary,
        };
        assert_eq!(Lun::from_u64(300).address(), Some(LunAddress::Single(300)));
        // Simple addressing of 256 (LU_CONG form) is LUN 256 too.
        assert_eq!(
            Lun::from_field([0x01, 0, 0, 0, 0, 0, 0, 0]).address(),
            Some(LunAddress::Single(256))
        );
        // A flat space first level and an extended flat space second level for ID 5.
        assert_eq!(
            Lun::from_field([0x41, 0, 0xd2, 0, 0, 5, 0, 0]).address(),
            Some(sub(256, 5))
        );
        // Not accepted: secondary 0 in either form, logical unit addressing, the REPORT
        // LUNS well-known LU, trailing bytes, three levels.
        for field in [
            [0, 1, 0xd2, 0, 0, 0, 0, 0],
            [0x80, 1, 0, 0, 0, 0, 0, 0],
            [0xc1, 1, 0, 0, 0, 0, 0, 0],
            [0, 1, 0xd2, 0, 0, 5, 0, 1],
            [0, 1, 0, 2, 0, 3, 0, 0],
            [0, 1, 0x40, 2, 0, 0, 0, 0],
        ] {
            assert_eq!(Lun::from_field(field).address(), None, "{field:02x?}");
        }
    }

    proptest! {
        #[test]
        fn subsidiary_addresses_round_trip_through_field_and_key(
            endpoint in 0u16..=0x3fff,
            secondary in 1u32..=0xff_ffff,
        ) {
            let address = LunAddress::Subsidiary { endpoint, secondary };
            let lun = address.to_lun();
            prop_assert_eq!(lun.address(), Some(address));
            prop_assert!(address.key() > 0xffff);
            prop_assert_eq!(LunAddress::from_key(address.key()), Some(address));
            prop_assert_eq!(Lun::from_u64(address.key()), lun);
            // The other form of the second level names the same LU.
            let mut field = lun.to_field();
            field[2..6].copy_from_slice(&[0xd2, (secondary >> 16) as u8, (secondary >> 8) as u8, secondary as u8]);
            prop_assert_eq!(Lun::from_field(field).address(), Some(address));
        }

        #[test]
        fn address_never_panics_and_keys_are_stable(field in any::<[u8; 8]>()) {
            if let Some(address) = Lun::from_field(field).address() {
                prop_assert_eq!(address.to_lun().address(), Some(address));
                prop_assert_eq!(LunAddress::from_key(address.key()), Some(address));
            }
        }

        #[test]
        fn single_level_numbers_round_trip(n in 0u64..=FLAT_SPACE_MAX) {
            let lun = Lun::from_u64(n);
            prop_assert_eq!(lun.number(), Some(n));
            prop_assert_eq!(Lun::from_field(lun.to_field()), lun);
        }

        #[test]
        fn any_field_round_trips(field in any::<[u8; 8]>()) {
            let lun = Lun::from_field(field);
            prop_assert_eq!(lun.to_field(), field);
            // Whatever Display shows parses back to the same LUN (a number-form field
            // may come back in the other single-level method: same number).
            let parsed: Lun = lun.to_string().parse().unwrap();
            prop_assert_eq!(parsed.number(), lun.number());
            if lun.number().is_none() {
                prop_assert_eq!(parsed, lun);
            }
        }

        #[test]
        fn parse_never_panics(text in ".{0,40}") {
            let _ = text.parse::<Lun>();
        }
    }
}
