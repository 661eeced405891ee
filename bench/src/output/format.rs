//! fio's number and time formatting: `num2str` (the "15.2k", "59.2MiB/s", "120MiB" of its
//! reports), `ctime`-style dates, and ETA strings ("00m:05s").

/// The unit `num2str` appends (fio's `N2S_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    None,
    PerSec,
    Byte,
    Bit,
    BytePerSec,
    BitPerSec,
}

impl Unit {
    fn suffix(self) -> &'static str {
        match self {
            Unit::None => "",
            Unit::PerSec => "/s",
            Unit::Byte => "B",
            Unit::Bit => "bit",
            Unit::BytePerSec => "B/s",
            Unit::BitPerSec => "bit/s",
        }
    }
}

// fio stops at P; E is here so that no u64 runs off the table.
const SI_PREFIXES: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
const IEC_PREFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];

fn digit_count(value: u64) -> usize {
    value.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// fio's `num2str`: `num` (in units of `base`, e.g. 1024 for KiB) shown with at most
/// `max_digits` digits (the decimal point counts), scaled by 1000 (SI) or 1024 (IEC when
/// `pow2`), with a unit prefix and `unit`. Kept faithful to fio (lib/num2str.c), rounding
/// quirks included: when no decimals are shown, only the last remainder dropped rounds the
/// last digit; when decimals are shown, they are that remainder rounded to nearest, and a
/// fraction that rounds to 1 carries (9.996k is "10.00k", one character over `max_digits`,
/// as in fio).
pub fn num2str(num: u64, max_digits: usize, base: u64, pow2: bool, unit: Unit) -> String {
    let thousand: u64 = if pow2 { 1024 } else { 1000 };
    let prefixes = if pow2 { &IEC_PREFIXES } else { &SI_PREFIXES };
    let mut prefix_index = 0usize;
    let mut base = base;
    while base > 1 {
        base /= thousand;
        prefix_index += 1;
    }
    let mut num = match unit {
        Unit::Bit | Unit::BitPerSec => num.saturating_mul(8),
        _ => num,
    };
    let mut remainder: Option<u64> = None;
    let mut carry = false;
    while prefix_index < prefixes.len() {
        if digit_count(num) <= max_digits {
            break;
        }
        let modulo = num % thousand;
        num /= thousand;
        carry = modulo >= thousand / 2;
        remainder = Some(modulo);
        prefix_index += 1;
    }
    let prefix = prefixes.get(prefix_index).copied().unwrap_or("");
    let Some(modulo) = remainder else {
        return format!("{num}{prefix}{}", unit.suffix());
    };
    let room = max_digits as i64 - digit_count(num) as i64;
    if room <= 1 {
        if carry {
            num += 1;
        }
        return format!("{num}{prefix}{}", unit.suffix());
    }
    let decimals = (room - 1) as usize;
    // printf's rounding (to nearest, ties to even on the exact binary value), as fio's
    // `%.*f`; Rust's formatting rounds the same way.
    let fraction = format!("{:.*}", decimals, modulo as f64 / thousand as f64);
    // A fraction that rounds up to "1.0…" carries into the integer part: 10.98k is "11.0k",
    // never "10.0k". The digits after the point are then all zeros.
    if fraction.starts_with('1') {
        num += 1;
    }
    let digits = fraction.get(2..).unwrap_or("0");
    format!("{num}.{digits}{prefix}{}", unit.suffix())
}

/// Seconds as fio's ETA: "05s" never alone; "00m:05s", "01h:00m:05s", "01d:01h:00m:05s".
pub fn eta_string(seconds: u64) -> String {
    let s = seconds % 60;
    let m = (seconds / 60) % 60;
    let h = (seconds / 3600) % 24;
    let d = seconds / 86_400;
    let mut out = String::new();
    if d > 0 {
        out.push_str(&format!("{d:02}d:"));
    }
    if h > 0 || d > 0 {
        out.push_str(&format!("{h:02}h:"));
    }
    out.push_str(&format!("{m:02}m:{s:02}s"));
    out
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A Unix time as `ctime(3)` shows it in local time, without the newline:
/// "Sat Nov 21 18:19:02 2026" (fio's "time" key and job header).
pub fn ctime(unix_seconds: i64) -> String {
    let time: libc::time_t = unix_seconds as libc::time_t;
    let mut tm = std::mem::MaybeUninit::<libc::tm>::zeroed();
    // SAFETY: both pointers are valid for the call; localtime_r is the reentrant form and
    // fills `tm` (zeroed beforehand) or returns null.
    let filled = unsafe { libc::localtime_r(&time, tm.as_mut_ptr()) };
    if filled.is_null() {
        return format!("@{unix_seconds}");
    }
    // SAFETY: localtime_r succeeded, so `tm` is initialised.
    let tm = unsafe { tm.assume_init() };
    let weekday = usize::try_from(tm.tm_wday)
        .ok()
        .and_then(|i| WEEKDAYS.get(i))
        .copied()
        .unwrap_or("???");
    let month = usize::try_from(tm.tm_mon)
        .ok()
        .and_then(|i| MONTHS.get(i))
        .copied()
        .unwrap_or("???");
    format!(
        "{weekday} {month} {:2} {:02}:{:02}:{:02} {}",
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        i64::from(tm.tm_year) + 1900
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn num2str_matches_fio_output() {
        // Figures from real fio 3.33 runs.
        assert_eq!(num2str(15_159, 4, 1, false, Unit::None), "15.2k");
        assert_eq!(
            num2str(62_090_000, 4, 1, true, Unit::BytePerSec),
            "59.2MiB/s"
        );
        assert_eq!(
            num2str(62_090_000, 4, 1, false, Unit::BytePerSec),
            "62.1MB/s"
        );
        assert_eq!(num2str(125_734_912, 4, 1, true, Unit::Byte), "120MiB");
        assert_eq!(num2str(125_734_912, 4, 1, false, Unit::Byte), "126MB");
        assert_eq!(num2str(4096, 4, 1, true, Unit::Byte), "4096B");
        assert_eq!(num2str(65_536, 4, 1, true, Unit::Byte), "64.0KiB");
        assert_eq!(num2str(62_932_123, 6, 1, false, Unit::None), "62932k");
        assert_eq!(num2str(137_442, 4, 1, false, Unit::None), "137k");
        assert_eq!(num2str(0, 4, 1, true, Unit::BytePerSec), "0B/s");
        // Base 1024: the number is already in KiB.
        assert_eq!(num2str(800, 4, 1024, true, Unit::BytePerSec), "800KiB/s");
        assert_eq!(
            num2str(82_124, 4, 1024, true, Unit::BytePerSec),
            "80.2MiB/s"
        );
        assert_eq!(num2str(u64::MAX, 4, 1, false, Unit::None), "18.4E");
    }

    #[test]
    fn num2str_carries_a_fraction_that_rounds_to_one() {
        // fio 3.42, `--ioengine=null --rate_iops=10980`: "IOPS=11.0k, BW=42.9MiB/s (45.0MB/s)".
        assert_eq!(num2str(10_980, 4, 1, false, Unit::None), "11.0k");
        assert_eq!(
            num2str(44_970_000, 4, 1, false, Unit::BytePerSec),
            "45.0MB/s"
        );
        let mib_80_97 = 80 * 1_048_576 + 97 * 1_048_576 / 100;
        assert_eq!(
            num2str(mib_80_97, 4, 1, true, Unit::BytePerSec),
            "81.0MiB/s"
        );
        assert_eq!(num2str(9_996, 5, 1, false, Unit::None), "9996");
        assert_eq!(num2str(9_996, 3, 1, false, Unit::None), "10.0k");
        assert_eq!(num2str(1_999_600, 4, 1, false, Unit::None), "2000k");
    }

    /// The number `num2str` shows, its prefix applied, and the size of its last digit's unit.
    fn shown_value(text: &str, pow2: bool) -> (f64, f64) {
        let end = text
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(text.len());
        let (number, rest) = text.split_at(end);
        let thousand: f64 = if pow2 { 1024.0 } else { 1000.0 };
        let prefixes = if pow2 { &IEC_PREFIXES } else { &SI_PREFIXES };
        let power = prefixes
            .iter()
            .rposition(|p| !p.is_empty() && rest.starts_with(p))
            .unwrap_or(0);
        let scale = thousand.powi(power as i32);
        let decimals = number.split_once('.').map_or(0, |(_, d)| d.len());
        let value: f64 = number.parse().expect("a number");
        (value * scale, scale / 10f64.powi(decimals as i32))
    }

    proptest::proptest! {
        /// fio's rules as properties: at most `max_digits` characters of number (one more only
        /// when a carry turns 9.99 into 10.00), and the shown value within 1.5 units of its
        /// last digit of the true one (half a unit from rounding, under one from the
        /// remainders dropped before it; 1024's fractions add a little). Truncating the
        /// fraction, as before the carry was kept, is off by up to 9.8 units.
        #[test]
        fn num2str_follows_fios_rounding(
            num in 0u64..(1 << 53),
            max_digits in 3usize..=6,
            pow2 in proptest::bool::ANY,
        ) {
            let text = num2str(num, max_digits, 1, pow2, Unit::None);
            let (shown, unit) = shown_value(&text, pow2);
            let number_len = text
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .unwrap_or(text.len());
            proptest::prop_assert!(number_len <= max_digits + 1, "{text}");
            if number_len > max_digits {
                proptest::prop_assert!(text.starts_with("10"), "{text}");
            }
            let error = (shown - num as f64).abs();
            proptest::prop_assert!(
                error <= 1.5 * unit,
                "{num} shown as {text}: off by {error}, unit {unit}"
            );
        }
    }

    #[test]
    fn eta_strings() {
        assert_eq!(eta_string(5), "00m:05s");
        assert_eq!(eta_string(3_725), "01h:02m:05s");
        assert_eq!(eta_string(90_000), "01d:01h:00m:00s");
    }

    #[test]
    fn ctime_has_the_c_layout() {
        let text = ctime(1_795_285_142);
        let fields: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(fields.len(), 5, "{text}");
        assert!(WEEKDAYS.contains(&fields[0]));
        assert!(MONTHS.contains(&fields[1]));
        assert_eq!(fields[4], "2026");
        assert_eq!(text.len(), 24);
    }
}
