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
impl FromStr for Lun {
    type Err = ScsiError;

    fn from_str(text: &str) -> Result<Lun, ScsiError> {
        let invalid = || ScsiError::InvalidLun {
            text: text.chars().take(40).collect(),
        };
        let trimmed = text.trim();
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
    }

    #[test]
    fn display_shows_numbers() {
        assert_eq!(Lun::from_u64(7).to_string(), "7");
        assert_eq!(Lun::from_u64(300).to_string(), "300");
    }

    proptest! {
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
