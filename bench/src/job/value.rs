//! Value parsers for job options, following fio 3.33's documented syntax (`man fio`,
//! "PARAMETER TYPES" and the option entries):
//!
//! - sizes: a decimal or `0x` hex integer with an optional, case-insensitive suffix
//!   `b`, `k`/`kb`, `ki`/`kib`, `m`..., `g`..., `t`..., `p`.... With the default
//!   `kb_base=1024` fio reads `k` as 1024 and `ki`/`KiB` as 1000 (its "compatibility
//!   mode"); `kb_base=1000` swaps them. `kB` and `KB` are the same.
//! - times: an integer with an optional suffix `d`, `h`, `m`, `s`/`sec`, `ms`/`msec`,
//!   `us`/`usec`; without a suffix the option's own default unit (seconds for `runtime`,
//!   microseconds for `thinktime`).
//! - per-direction lists `read,write,trim`: "a value not terminated in a comma applies to
//!   subsequent types", and an empty slot keeps what the direction had.
//!
//! Where fio quietly accepts nonsense, these parsers refuse it: fio reads `1.5g` as 1 byte,
//! `10min` as 10 microseconds, `4q` as 4 bytes and ` 1m` as 1; here each is an error.

use std::path::PathBuf;
use std::time::Duration;

use super::error::ValueError;
use super::spec::{
    BsSplitEntry, ChecksumKind, Distribution, IscsiUrl, PerDir, RwKind, RwMode, SizeSpec, Target,
    ValueRange, VerifyKind, Zone, ZoneSkip,
};

/// Most entries a list value (bssplit, percentile_list, cpus_allowed) may have.
pub const MAX_LIST_ENTRIES: usize = 4096;
/// Most `bssplit` entries per direction (fio's limit).
pub const MAX_BSSPLIT_ENTRIES: usize = 64;
/// Most percentiles in `percentile_list` (fio allows 20; HdrHistogram lets us give more).
pub const MAX_PERCENTILES: usize = 256;
/// Highest CPU number `cpus_allowed` accepts.
pub const MAX_CPU_INDEX: u32 = 4095;

type Result<T> = std::result::Result<T, ValueError>;

/// Split `text` into the leading number and the suffix after it.
fn split_number(text: &str) -> (&str, &str) {
    let digits_end = if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X"))
    {
        2 + hex
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(hex.len())
    } else {
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len())
    };
    text.split_at(digits_end)
}

/// `text` trimmed, refused when empty, negative (`what` names the values in the message)
/// or one of fio's arithmetic expressions, which this parser does not evaluate.
fn plain_magnitude<'a>(text: &'a str, what: &str) -> Result<&'a str> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ValueError::new("empty value"));
    }
    if text.starts_with('(') {
        return Err(ValueError::new(
            "arithmetic expressions in parentheses are not supported",
        ));
    }
    if text.starts_with('-') {
        return Err(ValueError::new(format!("negative {what} are not allowed")));
    }
    Ok(text)
}

/// A non-negative integer, decimal or `0x` hex.
pub fn parse_u64(text: &str) -> Result<u64> {
    let text = plain_magnitude(text, "values")?;
    let (number, rest) = split_number(text);
    if !rest.is_empty() {
        return Err(ValueError::new(format!(
            "unexpected {rest:?} after the number"
        )));
    }
    parse_number_part(number)
}

fn parse_number_part(number: &str) -> Result<u64> {
    let parsed = if let Some(hex) = number
        .strip_prefix("0x")
        .or_else(|| number.strip_prefix("0X"))
    {
        u64::from_str_radix(hex, 16)
    } else {
        number.parse::<u64>()
    };
    parsed.map_err(|error| match error.kind() {
        std::num::IntErrorKind::PosOverflow => ValueError::new("number too large"),
        _ => ValueError::new("not a number"),
    })
}

/// An integer within `min..=max`.
pub fn parse_u64_in(text: &str, min: u64, max: u64) -> Result<u64> {
    let value = parse_u64(text)?;
    if value < min || value > max {
        return Err(ValueError::new(format!("must be between {min} and {max}")));
    }
    Ok(value)
}

/// An integer in `min..=max` that may be negative (`nice`).
pub fn parse_i64_in(text: &str, min: i64, max: i64) -> Result<i64> {
    let text = text.trim();
    let (negative, magnitude) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let magnitude = i64::try_from(parse_u64(magnitude)?)
        .map_err(|_| ValueError::new(format!("must be between {min} and {max}")))?;
    let value = if negative { -magnitude } else { magnitude };
    if value < min || value > max {
        return Err(ValueError::new(format!("must be between {min} and {max}")));
    }
    Ok(value)
}

/// The multiplier of a size suffix under `kb_base` (1024 or 1000).
fn size_multiplier(suffix: &str, kb_base: u32) -> Result<u64> {
    let unknown_unit = || {
        ValueError::new(format!(
            "unknown size unit {suffix:?} (use k, m, g, t, p, optionally with b or ib)"
        ))
    };
    let lower = suffix.to_ascii_lowercase();
    if lower.is_empty() || lower == "b" {
        return Ok(1);
    }
    // By character, not byte: a suffix may start with any character (a job file from
    // anywhere), and only the ASCII ones below are units.
    let mut chars = lower.chars();
    let power = match chars.next() {
        Some('k') => 1,
        Some('m') => 2,
        Some('g') => 3,
        Some('t') => 4,
        Some('p') => 5,
        _ => return Err(unknown_unit()),
    };
    let tail = chars.as_str();
    // The "opposite" convention of kb_base=1024: plain prefixes are powers of 2, the
    // IEC-looking ones powers of 10.
    let iec_spelling = match tail {
        "" | "b" => false,
        "i" | "ib" => true,
        _ => return Err(unknown_unit()),
    };
    let base: u64 = match (kb_base, iec_spelling) {
        (1000, false) | (1024, true) => 1000,
        _ => 1024,
    };
    Ok(base.pow(power))
}

/// A size in bytes with an optional unit suffix (see the module docs).
pub fn parse_size(text: &str, kb_base: u32) -> Result<u64> {
    let text = plain_magnitude(text, "sizes")?;
    let (number, suffix) = split_number(text);
    if number.is_empty() {
        return Err(ValueError::new("not a number"));
    }
    if suffix.starts_with('.') {
        return Err(ValueError::new(
            "fractional sizes are not supported (fio would truncate them)",
        ));
    }
    if number.starts_with("0x") || number.starts_with("0X") {
        if !suffix.is_empty() {
            return Err(ValueError::new("a hex number takes no unit"));
        }
        return parse_number_part(number);
    }
    let value = parse_number_part(number)?;
    let multiplier = size_multiplier(suffix, kb_base)?;
    value
        .checked_mul(multiplier)
        .ok_or_else(|| ValueError::new("size too large"))
}

/// A size or a percentage `1%`..`100%`.
pub fn parse_size_or_percent(text: &str, kb_base: u32) -> Result<SizeSpec> {
    let text = text.trim();
    if let Some(number) = text.strip_suffix('%') {
        let percent = parse_u64(number)?;
        if !(1..=100).contains(&percent) {
            return Err(ValueError::new("a percentage must be between 1 and 100"));
        }
        return Ok(SizeSpec::Percent(percent as u8));
    }
    parse_size(text, kb_base).map(SizeSpec::Bytes)
}

/// `zoneskip=`: a size, or a whole number of zones with fio's `z` suffix (`2z`).
pub fn parse_zone_skip(text: &str, kb_base: u32) -> Result<ZoneSkip> {
    let text = text.trim();
    match text.strip_suffix('z') {
        Some(zones) => {
            let zones = parse_u64(zones)?;
            u32::try_from(zones)
                .map(ZoneSkip::Zones)
                .map_err(|_| ValueError::new("too many zones"))
        }
        None => parse_size(text, kb_base).map(ZoneSkip::Bytes),
    }
}

/// The unit of a time value without a suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    Seconds,
    Milliseconds,
    Microseconds,
}

/// A time: integer and optional suffix (see the module docs).
pub fn parse_time(text: &str, default_unit: TimeUnit) -> Result<Duration> {
    let text = plain_magnitude(text, "times")?;
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits_end);
    if number.is_empty() {
        return Err(ValueError::new("not a number"));
    }
    if suffix.starts_with('.') {
        return Err(ValueError::new(
            "fractional times are not supported; use a smaller unit (1500ms)",
        ));
    }
    let value: u64 = number
        .parse()
        .map_err(|_| ValueError::new("number too large"))?;
    let micros_per_unit: u64 = match suffix.to_ascii_lowercase().as_str() {
        "" => match default_unit {
            TimeUnit::Seconds => 1_000_000,
            TimeUnit::Milliseconds => 1_000,
            TimeUnit::Microseconds => 1,
        },
        "us" | "usec" => 1,
        "ms" | "msec" => 1_000,
        "s" | "sec" => 1_000_000,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => 86_400_000_000,
        _ => {
            return Err(ValueError::new(format!(
                "unknown time unit {suffix:?} (use d, h, m, s, ms or us)"
            )))
        }
    };
    value
        .checked_mul(micros_per_unit)
        .map(Duration::from_micros)
        .ok_or_else(|| ValueError::new("time too large"))
}

/// A boolean: `1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off` (fio itself takes only
/// `1`/`0`). A bare option name means true; the caller handles that.
pub fn parse_bool(text: &str) -> Result<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ValueError::new(
            "expected 1/0, true/false, yes/no or on/off",
        )),
    }
}

/// fio's per-direction list `read[,write[,trim]]` over the current values: an empty slot
/// keeps a direction's value; the last slot, when not followed by a comma, also applies to
/// the directions after it.
pub fn parse_per_dir<T: Clone>(
    text: &str,
    current: &PerDir<T>,
    mut parse_one: impl FnMut(&str) -> Result<T>,
) -> Result<PerDir<T>> {
    let parts: Vec<&str> = text.split(',').collect();
    if parts.len() > 3 {
        return Err(ValueError::new(
            "at most three comma-separated values (read,write,trim)",
        ));
    }
    let mut out = current.clone();
    let directions = [
        crate::io::Direction::Read,
        crate::io::Direction::Write,
        crate::io::Direction::Trim,
    ];
    let mut last: Option<T> = None;
    for (index, part) in parts.iter().enumerate() {
        let part = part.trim();
        let direction = directions[index];
        if part.is_empty() {
            last = None;
            continue;
        }
        let value = parse_one(part)?;
        *out.get_mut(direction) = value.clone();
        last = Some(value);
    }
    if let Some(value) = last {
        for direction in directions.iter().skip(parts.len()) {
            *out.get_mut(*direction) = value.clone();
        }
    }
    Ok(out)
}

/// An inclusive range `min-max` (fio also takes `min:max`), or a single value for both.
pub fn parse_range<T: PartialOrd + Copy>(
    text: &str,
    mut parse_one: impl FnMut(&str) -> Result<T>,
) -> Result<ValueRange<T>> {
    let text = text.trim();
    let split = text.find(['-', ':']);
    let range = match split {
        Some(at) if at > 0 => {
            let (low, high) = (&text[..at], &text[at + 1..]);
            ValueRange {
                min: parse_one(low)?,
                max: parse_one(high)?,
            }
        }
        _ => {
            let value = parse_one(text)?;
            ValueRange {
                min: value,
                max: value,
            }
        }
    };
    if range.min > range.max {
        return Err(ValueError::new("the range's minimum is above its maximum"));
    }
    Ok(range)
}

/// One direction's `bssplit`: `size/percent:size/percent...`. Blank percentages share
/// what is left evenly (the first blank takes the remainder); the total must be 100.
pub fn parse_bssplit(text: &str, kb_base: u32) -> Result<Vec<BsSplitEntry>> {
    let mut entries = Vec::new();
    let mut blanks = Vec::new();
    let mut given_total: u64 = 0;
    for (index, item) in text.split(':').enumerate() {
        if index >= MAX_BSSPLIT_ENTRIES {
            return Err(ValueError::new(format!(
                "more than {MAX_BSSPLIT_ENTRIES} block sizes"
            )));
        }
        let item = item.trim();
        let (size_text, percent_text) = item.split_once('/').unwrap_or((item, ""));
        let len_bytes = parse_size(size_text, kb_base)?;
        if len_bytes == 0 {
            return Err(ValueError::new("a block size of 0"));
        }
        let percent = if percent_text.trim().is_empty() {
            blanks.push(index);
            0
        } else {
            let percent = parse_u64_in(percent_text, 0, 100)?;
            given_total += percent;
            percent as u32
        };
        entries.push(BsSplitEntry { len_bytes, percent });
    }
    if given_total > 100 {
        return Err(ValueError::new(format!(
            "percentages add up to {given_total}, over 100"
        )));
    }
    let left = 100 - given_total as u32;
    if blanks.is_empty() {
        if left != 0 {
            return Err(ValueError::new(format!(
                "percentages add up to {given_total}, not 100"
            )));
        }
    } else {
        let share = left / blanks.len() as u32;
        let remainder = left % blanks.len() as u32;
        for (nth, index) in blanks.iter().enumerate() {
            if let Some(entry) = entries.get_mut(*index) {
                entry.percent = share + if nth == 0 { remainder } else { 0 };
            }
        }
    }
    Ok(entries)
}

fn parse_float(text: &str) -> Result<f64> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| ValueError::new(format!("{text:?} is not a number")))?;
    if !value.is_finite() {
        return Err(ValueError::new("not a finite number"));
    }
    Ok(value)
}

/// `random_distribution=random|zipf[:theta[:center]]|pareto[:power[:center]]|
/// normal[:deviation[:center]]`, with fio's defaults (zipf 1.1, pareto 0.2, normal 0)
/// and ranges (zipf theta not 1, pareto 0 < h < 1, normal 0 <= d < 100, center 0..=1).
pub fn parse_distribution(text: &str, kb_base: u32) -> Result<Distribution> {
    let text = text.trim();
    for (prefix, absolute) in [("zoned_abs:", true), ("zoned:", false)] {
        if let Some(rest) = text.strip_prefix(prefix) {
            return parse_zoned(rest, absolute, kb_base);
        }
    }
    if let Some(list) = text.strip_prefix("sequence:") {
        let blocks = list
            .split(',')
            .map(|n| {
                let n = n.trim();
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ValueError::new(format!(
                        "sequence: {n:?} is not a block number"
                    )));
                }
                parse_u64(n)
            })
            .collect::<Result<Vec<u64>>>()?;
        if blocks.len() > SEQUENCE_MAX {
            return Err(ValueError::new(format!(
                "sequence: at most {SEQUENCE_MAX} blocks (fio's FIO_SEQ_MAX)"
            )));
        }
        return Ok(Distribution::Sequence {
            blocks,
            stride: false,
        });
    }
    let mut parts = text.trim().split(':');
    let kind = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let first = parts.next().map(parse_float).transpose()?;
    let center = parts.next().map(parse_float).transpose()?;
    if parts.next().is_some() {
        return Err(ValueError::new("too many ':'-separated values"));
    }
    if let Some(center) = center {
        if !(0.0..=1.0).contains(&center) {
            return Err(ValueError::new("the center must be between 0 and 1"));
        }
    }
    match kind.as_str() {
        "random" => {
            if first.is_some() {
                return Err(ValueError::new("random takes no value"));
            }
            Ok(Distribution::Random)
        }
        "zipf" => {
            let theta = first.unwrap_or(1.1);
            if theta <= 0.0 || theta == 1.0 {
                return Err(ValueError::new("zipf theta must be above 0 and not 1.0"));
            }
            Ok(Distribution::Zipf { theta, center })
        }
        "pareto" => {
            let power = first.unwrap_or(0.2);
            if power <= 0.0 || power >= 1.0 {
                return Err(ValueError::new("pareto power must be in (0, 1)"));
            }
            Ok(Distribution::Pareto { power, center })
        }
        "normal" => {
            let deviation_percent = first.unwrap_or(0.0);
            if !(0.0..100.0).contains(&deviation_percent) {
                return Err(ValueError::new("normal deviation must be in [0, 100)"));
            }
            Ok(Distribution::Normal {
                deviation_percent,
                center,
            })
        }
        "zoned" | "zoned_abs" => Err(ValueError::new(format!(
            "{kind} needs its zones: {kind}:access%/size:access%/size..."
        ))),
        _ => Err(ValueError::new(
            "unknown distribution (random, zipf, pareto, normal, zoned, zoned_abs)",
        )),
    }
}

/// Most blocks of `random_distribution=sequence` (fio's FIO_SEQ_MAX).
pub const SEQUENCE_MAX: usize = 64;

/// Most zones of one direction (fio's ZONESPLIT_MAX).
pub const ZONES_MAX: usize = 256;

/// fio's zone split: `a/s:a/s...` per direction, directions separated by `,` as in
/// `bssplit` (one list for all, or read,write[,trim]; an empty list draws uniformly).
/// Access percentages add up to 100; `zoned` sizes are percentages adding up to at most
/// 100, `zoned_abs` sizes are byte counts. As fio (`zone_split_ddir`), a `zoned` size left
/// blank (`20/`, `20`, or 0) gets an equal share of what the others leave, and the list
/// ends at its first empty entry (a trailing `:`); a `zoned_abs` zone needs its size.
fn parse_zoned(text: &str, absolute: bool, kb_base: u32) -> Result<Distribution> {
    let parse_dir = |part: &str| -> Result<Vec<Zone>> {
        let part = part.trim();
        if part.is_empty() {
            return Ok(Vec::new());
        }
        // (access %, size or None for a blank one)
        let mut parsed: Vec<(u32, Option<u64>)> = Vec::new();
        for entry in part.split(':').map(str::trim).take_while(|e| !e.is_empty()) {
            let (access, size) = match entry.split_once('/') {
                Some((access, size)) => (access, size.trim()),
                None if absolute => {
                    return Err(ValueError::new(format!(
                        "zone {entry:?}: zoned_abs needs access%/size"
                    )))
                }
                None => (entry, ""),
            };
            let access_percent = parse_u64(access.trim())?;
            let size = if absolute {
                Some(parse_size(size, kb_base)?)
            } else if size.is_empty() {
                None
            } else {
                Some(parse_u64(size.trim_end_matches('%'))?).filter(|&percent| percent > 0)
            };
            if access_percent > 100 || (!absolute && size.is_some_and(|s| s > 100)) {
                return Err(ValueError::new(format!(
                    "zone {entry:?}: percentages are 0 to 100"
                )));
            }
            parsed.push((access_percent as u32, size));
        }
        if parsed.len() > ZONES_MAX {
            return Err(ValueError::new(format!("more than {ZONES_MAX} zones")));
        }
        let access: u32 = parsed.iter().map(|z| z.0).sum();
        if access != 100 {
            return Err(ValueError::new(format!(
                "the zones' access percentages add up to {access}, not 100"
            )));
        }
        let given: u64 = parsed.iter().filter_map(|z| z.1).sum();
        if !absolute && given > 100 {
            return Err(ValueError::new("the zones' sizes add up to more than 100%"));
        }
        let blanks = parsed.iter().filter(|z| z.1.is_none()).count() as u64;
        let share = (100 - given.min(100)).checked_div(blanks).unwrap_or(0);
        Ok(parsed
            .into_iter()
            .map(|(access_percent, size)| Zone {
                access_percent,
                size: size.unwrap_or(share),
            })
            .collect())
    };
    let parts: Vec<&str> = text.split(',').collect();
    let zones = match parts.as_slice() {
        [all] => PerDir::splat(parse_dir(all)?),
        [read, write] => {
            let write = parse_dir(write)?;
            PerDir {
                read: parse_dir(read)?,
                trim: write.clone(),
                write,
            }
        }
        [read, write, trim] => PerDir {
            read: parse_dir(read)?,
            write: parse_dir(write)?,
            trim: parse_dir(trim)?,
        },
        _ => {
            return Err(ValueError::new(
                "at most three comma-separated zone lists (read,write,trim)",
            ))
        }
    };
    Ok(Distribution::Zoned { absolute, zones })
}

/// `verify=`: fio's names (fio has no `sha224` or `sha384`: they are unknown there too).
pub fn parse_verify_kind(text: &str) -> Result<VerifyKind> {
    let name = text.trim().to_ascii_lowercase();
    match name.as_str() {
        "0" | "null" | "none" => Ok(VerifyKind::None),
        "pattern" => Ok(VerifyKind::Pattern),
        "meta" => Ok(VerifyKind::Meta),
        name => ChecksumKind::from_fio_name(name)
            .map(VerifyKind::Checksum)
            .ok_or_else(|| {
                let checksums: Vec<&str> = ChecksumKind::ALL
                    .iter()
                    .map(|kind| kind.fio_name())
                    .collect();
                ValueError::new(format!(
                    "unknown verify method ({}, pattern, meta or 0)",
                    checksums.join(", ")
                ))
            }),
    }
}

/// `verify_pattern=`: one or more of `0x` hex bytes (as written, first byte first),
/// a decimal number up to 32 bits (little-endian, in the fewest bytes), or a quoted
/// string, written next to each other. fio's `%o` (the block offset) is not supported.
pub fn parse_verify_pattern(text: &str) -> Result<Vec<u8>> {
    let text = text.trim();
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        if out.len() > 4096 {
            return Err(ValueError::new("pattern longer than 4096 bytes"));
        }
        if let Some(hex) = rest.strip_prefix("0x").or_else(|| rest.strip_prefix("0X")) {
            let end = hex
                .find(|c: char| !c.is_ascii_hexdigit())
                .unwrap_or(hex.len());
            let digits = &hex[..end];
            if digits.is_empty() {
                return Err(ValueError::new("0x without hex digits"));
            }
            let padded = if digits.len() % 2 == 1 {
                format!("0{digits}")
            } else {
                digits.to_string()
            };
            for pair in padded.as_bytes().chunks(2) {
                let pair = std::str::from_utf8(pair).map_err(|_| ValueError::new("bad hex"))?;
                out.push(u8::from_str_radix(pair, 16).map_err(|_| ValueError::new("bad hex"))?);
            }
            rest = &hex[end..];
        } else if let Some(quoted) = rest.strip_prefix('"').or_else(|| rest.strip_prefix('\'')) {
            let quote = rest.as_bytes().first().copied().unwrap_or(b'"') as char;
            let end = quoted
                .find(quote)
                .ok_or_else(|| ValueError::new("unterminated quoted string"))?;
            out.extend_from_slice(&quoted.as_bytes()[..end]);
            rest = &quoted[end + 1..];
        } else if rest.starts_with(|c: char| c.is_ascii_digit()) {
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let value: u32 = rest[..end]
                .parse()
                .map_err(|_| ValueError::new("a decimal pattern must fit in 32 bits"))?;
            let bytes = value.to_le_bytes();
            let width = (4 - value.leading_zeros() as usize / 8).max(1);
            out.extend_from_slice(&bytes[..width]);
            rest = &rest[end..];
        } else if rest.starts_with('%') {
            return Err(ValueError::new(
                "fio's %o (offset) pattern format is not supported",
            ));
        } else {
            return Err(ValueError::new(
                "expected 0x hex bytes, a decimal number or a quoted string",
            ));
        }
    }
    if out.is_empty() {
        return Err(ValueError::new("empty pattern"));
    }
    Ok(out)
}

/// `percentile_list=`: `:`-separated numbers in (0, 100].
pub fn parse_percentile_list(text: &str) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for (index, item) in text.split(':').enumerate() {
        if index >= MAX_PERCENTILES {
            return Err(ValueError::new(format!(
                "more than {MAX_PERCENTILES} percentiles"
            )));
        }
        let value = parse_float(item)?;
        if !(value > 0.0 && value <= 100.0) {
            return Err(ValueError::new("each percentile must be in (0, 100]"));
        }
        out.push(value);
    }
    Ok(out)
}

/// `cpus_allowed=0-1,3`: CPU numbers and inclusive ranges; sorted, without repeats.
pub fn parse_cpu_list(text: &str) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        let (low, high) = match item.split_once('-') {
            Some((low, high)) => (parse_u64(low)?, parse_u64(high)?),
            None => {
                let cpu = parse_u64(item)?;
                (cpu, cpu)
            }
        };
        if low > high {
            return Err(ValueError::new(format!("range {item} runs backwards")));
        }
        if high > u64::from(MAX_CPU_INDEX) {
            return Err(ValueError::new(format!(
                "CPU {high} is above the limit of {MAX_CPU_INDEX}"
            )));
        }
        for cpu in low..=high {
            out.push(cpu as u32);
        }
        if out.len() > MAX_LIST_ENTRIES {
            return Err(ValueError::new("too many CPUs"));
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// fio's `cpumask`: a bit mask (decimal or `0x` hex), bit N for CPU N; the CPUs it sets,
/// ascending. A mask of no CPU would leave the job nowhere to run, so it is refused.
pub fn parse_cpu_mask(text: &str) -> Result<Vec<u32>> {
    let mask = parse_u64(text)?;
    if mask == 0 {
        return Err(ValueError::new("the mask selects no CPU"));
    }
    Ok((0..64).filter(|bit| mask & (1u64 << bit) != 0).collect())
}

/// `rw=` with fio's optional `:<nr>` offset modifier.
pub fn parse_rw(text: &str, kb_base: u32) -> Result<RwMode> {
    let text = text.trim();
    let (kind_text, modifier) = match text.split_once(':') {
        Some((kind, modifier)) => (kind, Some(modifier)),
        None => (text, None),
    };
    let kind = match kind_text {
        "read" => RwKind::Read,
        "write" => RwKind::Write,
        "trim" => RwKind::Trim,
        "randread" => RwKind::RandRead,
        "randwrite" => RwKind::RandWrite,
        "randtrim" => RwKind::RandTrim,
        "rw" | "readwrite" => RwKind::ReadWrite,
        "randrw" => RwKind::RandRw,
        "trimwrite" | "randtrimwrite" => {
            return Err(ValueError::new(format!(
                "rw={kind_text} is a fio pattern iscsi-bench does not support"
            )))
        }
        _ => return Err(ValueError::new(
            "expected read, write, trim, randread, randwrite, randtrim, rw, readwrite or randrw",
        )),
    };
    // As fio's str_rw_cb: random patterns take a count of I/Os per random offset (1 and
    // up), sequential ones a signed size.
    let offset_modifier = match modifier.map(str::trim) {
        None => None,
        Some(text) if kind.is_random() => {
            let count = parse_size(text, kb_base)?;
            if count == 0 || count > u64::from(u32::MAX) {
                return Err(ValueError::new(
                    "a random pattern's ':N' is a count of I/Os, 1 to 4294967295",
                ));
            }
            Some(count as i64)
        }
        Some(text) => {
            let (negative, magnitude) = match text.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, text),
            };
            let bytes = i64::try_from(parse_size(magnitude, kb_base)?)
                .map_err(|_| ValueError::new("offset modifier too large"))?;
            Some(if negative { -bytes } else { bytes })
        }
    };
    Ok(RwMode {
        kind,
        offset_modifier,
    })
}

/// Undo fio's `\:` escape (a colon in a name; a bare `:` separates file names) and tell
/// whether a bare `:` was there.
fn unescape_colons(text: &str) -> (String, bool) {
    let mut out = String::with_capacity(text.len());
    let mut bare_colon = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.peek() == Some(&':') {
            out.push(':');
            chars.next();
        } else {
            if c == ':' {
                bare_colon = true;
            }
            out.push(c);
        }
    }
    (out, bare_colon)
}

/// Most files in one job's `filename` list: enough for the thousands of volumes a host
/// reaches through one protocol endpoint. (A job file line holds 8 KiB and one
/// command-line argument 128 KiB, about 2,000 URLs of 60 bytes.)
pub const FILENAMES_MAX: usize = 4096;

/// `filename=`: one target, or fio's `:`-separated list of them (a `:` inside a name escaped
/// as `\:`). In a list of `iscsi://` URLs, whose colons may also be left bare
/// (`iscsi://host:3260/iqn.2001-04.com.example:disk/1`), a bare `:` separates two targets
/// only where the next one starts (`:iscsi:` or `:iscsi\:`).
pub fn parse_targets(text: &str) -> Result<Vec<Target>> {
    let text = text.trim();
    let urls = text.starts_with("iscsi:") || text.starts_with("iscsi\\:");
    let mut pieces = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for (index, &byte) in bytes.iter().enumerate() {
        let escaped = index > 0 && bytes[index - 1] == b'\\';
        if byte != b':' || escaped {
            continue;
        }
        let rest = &text[index + 1..];
        let separates = if urls {
            rest.starts_with("iscsi:") || rest.starts_with("iscsi\\:")
        } else {
            true
        };
        if separates {
            pieces.push(&text[start..index]);
            start = index + 1;
        }
    }
    pieces.push(&text[start..]);
    if pieces.len() > FILENAMES_MAX {
        return Err(ValueError::new(format!(
            "{} files in one job; at most {FILENAMES_MAX}",
            pieces.len()
        )));
    }
    pieces.into_iter().map(parse_target).collect()
}

/// `filename=`: an `iscsi://` URL (colons escaped as in fio's libiscsi examples, or not),
/// `null`, or a path. A bare `:` in a path is refused here ([`parse_targets`] splits lists).
pub fn parse_target(text: &str) -> Result<Target> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ValueError::new("empty file name"));
    }
    let (unescaped, bare_colon) = unescape_colons(text);
    if unescaped.starts_with("iscsi://") {
        return parse_iscsi_url(&unescaped).map(Target::Iscsi);
    }
    if unescaped == "null" {
        return Ok(Target::Null);
    }
    if bare_colon {
        return Err(ValueError::new(
            "a bare ':' separates file names; write a ':' inside a name as '\\:'",
        ));
    }
    Ok(Target::Path(PathBuf::from(unescaped)))
}

/// `iscsi://[user[%password]@]host[:port]/target-iqn/lun` (libiscsi's URL form), parsed by
/// the data path's parser (the one `iscsi-ctl` uses); a job needs the target and the LUN.
pub fn parse_iscsi_url(text: &str) -> Result<IscsiUrl> {
    let url = datapath::url::IscsiUrl::parse_lun_url(text)
        .map_err(|error| ValueError::new(error.to_string()))?;
    let (Some(target_iqn), Some(lun)) = (url.target, url.lun) else {
        return Err(ValueError::new(
            "expected iscsi://host[:port]/target-iqn/lun",
        ));
    };
    Ok(IscsiUrl {
        user: url.user,
        password: url.secret,
        host: url.host,
        port: url.port,
        target_iqn,
        lun,
    })
}

/// Render an iSCSI URL with fio's `\:` escapes, so fio's libiscsi engine reads it too.
pub fn render_iscsi_url(url: &IscsiUrl) -> String {
    let mut out = String::from("iscsi\\://");
    if let Some(user) = &url.user {
        out.push_str(user);
        if let Some(password) = &url.password {
            out.push('%');
            out.push_str(password);
        }
        out.push('@');
    }
    if url.host.contains(':') {
        out.push('[');
        out.push_str(&url.host.replace(':', "\\:"));
        out.push(']');
    } else {
        out.push_str(&url.host);
    }
    out.push_str(&format!("\\:{}/", url.port));
    out.push_str(&url.target_iqn.replace(':', "\\:"));
    out.push_str(&format!("/{}", url.lun));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::spec::BlockSize;

    #[test]
    fn filename_lists_split_where_fio_splits_them() {
        let lun = |target: &Target| match target {
            Target::Iscsi(url) => (url.host.clone(), url.port, url.target_iqn.clone(), url.lun),
            other => panic!("not a URL: {other:?}"),
        };
        // fio's escaped form (the one that failed with "LUN '1:iscsi:' is not a number").
        let targets = parse_targets(
            "iscsi\\://127.0.0.1\\:3260/iqn.2016-02.com.fio\\:system\\:fio/0:\
             iscsi\\://127.0.0.1\\:3260/iqn.2016-02.com.fio\\:system\\:fio/1",
        )
        .expect("two LUNs");
        assert_eq!(targets.len(), 2);
        assert_eq!(
            lun(&targets[1]),
            (
                "127.0.0.1".into(),
                3260,
                "iqn.2016-02.com.fio:system:fio".into(),
                1
            )
        );
        // Bare colons inside URLs stay; a new URL starts a new entry.
        let targets = parse_targets(
            "iscsi://h:3261/iqn.2001-04.com.example:disk/1:iscsi://h:3261/iqn.2001-04.com.example:disk/2",
        )
        .expect("two LUNs");
        assert_eq!(lun(&targets[0]).3, 1);
        assert_eq!(
            lun(&targets[1]),
            ("h".into(), 3261, "iqn.2001-04.com.example:disk".into(), 2)
        );
        // One URL is one target.
        assert_eq!(parse_targets("iscsi://h/iqn.x:y/3").map(|t| t.len()), Ok(1));
        // Subsidiary LUs (ENDPOINT:SECONDARY) of one endpoint, bare or escaped.
        let targets =
            parse_targets("iscsi://h/iqn.x:y/0:1:iscsi://h/iqn.x:y/0\\:2").expect("two LUs");
        let subsidiary = |s| datapath::scsi::Lun::subsidiary(0, s).unwrap().raw();
        assert_eq!(lun(&targets[0]).3, subsidiary(1));
        assert_eq!(lun(&targets[1]).3, subsidiary(2));
        // What a report renders parses back to the same LU.
        let Target::Iscsi(url) = &targets[1] else {
            unreachable!()
        };
        let again = parse_targets(&render_iscsi_url(url)).unwrap();
        assert_eq!(lun(&again[0]).3, subsidiary(2));
        // Paths split at every bare colon; an escaped one is part of the name.
        assert_eq!(
            parse_targets("/dev/sdb:/dev/sdc\\:x"),
            Ok(vec![
                Target::Path("/dev/sdb".into()),
                Target::Path("/dev/sdc:x".into())
            ])
        );
        assert!(parse_targets("/a::/b").is_err(), "an empty name");
    }

    #[test]
    fn sizes_follow_fio_default_kb_base() {
        assert_eq!(parse_size("4k", 1024), Ok(4096));
        assert_eq!(parse_size("4K", 1024), Ok(4096));
        assert_eq!(parse_size("4kb", 1024), Ok(4096));
        assert_eq!(parse_size("4KB", 1024), Ok(4096));
        assert_eq!(parse_size("4kB", 1024), Ok(4096));
        // fio 3.33 --debug=parse prints out=4000 for bs=4KiB.
        assert_eq!(parse_size("4KiB", 1024), Ok(4000));
        assert_eq!(parse_size("1mi", 1024), Ok(1_000_000));
        assert_eq!(parse_size("1m", 1024), Ok(1 << 20));
        assert_eq!(parse_size("1g", 1024), Ok(1 << 30));
        assert_eq!(parse_size("1t", 1024), Ok(1 << 40));
        assert_eq!(parse_size("1Ti", 1024), Ok(1_000_000_000_000));
        assert_eq!(parse_size("2p", 1024), Ok(2 << 50));
        assert_eq!(parse_size("4b", 1024), Ok(4));
        assert_eq!(parse_size("512", 1024), Ok(512));
        assert_eq!(parse_size("0x1000", 1024), Ok(4096));
    }

    #[test]
    fn kb_base_1000_swaps_the_prefixes() {
        assert_eq!(parse_size("4k", 1000), Ok(4000));
        assert_eq!(parse_size("4KiB", 1000), Ok(4096));
        assert_eq!(parse_size("1m", 1000), Ok(1_000_000));
    }

    #[test]
    fn a_size_with_a_non_ascii_unit_is_refused_not_a_panic() {
        // Found by the job_file fuzz target: the unit's first byte was split off.
        for text in ["6M\u{314}", "4\u{e9}", "1k\u{e9}", "2\u{1f600}b"] {
            let error = parse_size(text, 1024).unwrap_err();
            assert!(error.0.contains("unknown size unit"), "{text:?}: {error:?}");
        }
    }

    #[test]
    fn sizes_refuse_what_fio_would_misread() {
        for bad in [
            "1.5g",
            "4q",
            "-1",
            "",
            "k",
            "(1+2)",
            "4kk",
            "0x10k",
            "99999999999999999999",
        ] {
            assert!(parse_size(bad, 1024).is_err(), "{bad:?} accepted");
        }
        assert!(parse_size("16384p", 1024).is_err(), "overflow accepted");
    }

    #[test]
    fn percentages() {
        assert_eq!(
            parse_size_or_percent("50%", 1024),
            Ok(SizeSpec::Percent(50))
        );
        assert_eq!(
            parse_size_or_percent("100%", 1024),
            Ok(SizeSpec::Percent(100))
        );
        assert_eq!(
            parse_size_or_percent("1m", 1024),
            Ok(SizeSpec::Bytes(1 << 20))
        );
        assert!(parse_size_or_percent("0%", 1024).is_err());
        assert!(parse_size_or_percent("101%", 1024).is_err());
    }

    #[test]
    fn times_take_the_option_default_unit() {
        let s = TimeUnit::Seconds;
        assert_eq!(parse_time("10", s), Ok(Duration::from_secs(10)));
        assert_eq!(parse_time("2m", s), Ok(Duration::from_secs(120)));
        assert_eq!(parse_time("5M", s), Ok(Duration::from_secs(300)));
        assert_eq!(parse_time("2h", s), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_time("1d", s), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_time("100ms", s), Ok(Duration::from_millis(100)));
        assert_eq!(parse_time("500usec", s), Ok(Duration::from_micros(500)));
        assert_eq!(parse_time("3S", s), Ok(Duration::from_secs(3)));
        assert_eq!(parse_time("7sec", s), Ok(Duration::from_secs(7)));
        assert_eq!(
            parse_time("3", TimeUnit::Microseconds),
            Ok(Duration::from_micros(3))
        );
        assert_eq!(
            parse_time("5ms", TimeUnit::Microseconds),
            Ok(Duration::from_millis(5))
        );
        assert_eq!(
            parse_time("7", TimeUnit::Milliseconds),
            Ok(Duration::from_millis(7))
        );
        for bad in [
            "10min",
            "1.5s",
            "x",
            "",
            "-3",
            "5ns",
            "18446744073709551615d",
        ] {
            assert!(parse_time(bad, s).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn booleans() {
        for yes in ["1", "true", "YES", "on"] {
            assert_eq!(parse_bool(yes), Ok(true));
        }
        for no in ["0", "false", "no", "Off"] {
            assert_eq!(parse_bool(no), Ok(false));
        }
        assert!(parse_bool("2").is_err());
        assert!(parse_bool("").is_err());
    }

    fn sizes(text: &str) -> PerDir<u64> {
        parse_per_dir(text, &PerDir::splat(7), |part| parse_size(part, 1024)).unwrap()
    }

    #[test]
    fn per_direction_lists_follow_the_man_page_examples() {
        let pd = |read, write, trim| PerDir { read, write, trim };
        assert_eq!(sizes("256k"), pd(262144, 262144, 262144));
        assert_eq!(sizes("8k,32k"), pd(8192, 32768, 32768));
        assert_eq!(sizes("8k,32k,"), pd(8192, 32768, 7));
        assert_eq!(sizes(",8k"), pd(7, 8192, 8192));
        assert_eq!(sizes(",8k,"), pd(7, 8192, 7));
        assert_eq!(sizes("500k,"), pd(512000, 7, 7));
        assert_eq!(sizes("1m,,2m"), pd(1 << 20, 7, 2 << 20));
        assert!(parse_per_dir("1,2,3,4", &PerDir::splat(0), |p| parse_size(p, 1024)).is_err());
        assert!(parse_per_dir("1,x", &PerDir::splat(0), |p| parse_size(p, 1024)).is_err());
    }

    #[test]
    fn ranges() {
        let size = |p: &str| parse_size(p, 1024);
        assert_eq!(
            parse_range("4k-64k", size),
            Ok(ValueRange {
                min: 4096,
                max: 65536
            })
        );
        assert_eq!(
            parse_range("1k:4k", size),
            Ok(ValueRange {
                min: 1024,
                max: 4096
            })
        );
        assert_eq!(
            parse_range("8k", size),
            Ok(ValueRange {
                min: 8192,
                max: 8192
            })
        );
        assert!(parse_range("64k-4k", size).is_err());
        assert!(parse_range("-4k", size).is_err());
    }

    #[test]
    fn bssplit_fills_blanks_and_checks_the_total() {
        let entry = |len_bytes, percent| BsSplitEntry { len_bytes, percent };
        assert_eq!(
            parse_bssplit("4k/10:64k/50:32k/40", 1024),
            Ok(vec![entry(4096, 10), entry(65536, 50), entry(32768, 40)])
        );
        assert_eq!(
            parse_bssplit("4k/50:1k/:32k/", 1024),
            Ok(vec![entry(4096, 50), entry(1024, 25), entry(32768, 25)])
        );
        assert_eq!(
            parse_bssplit("4k/:8k/:16k/", 1024),
            Ok(vec![entry(4096, 34), entry(8192, 33), entry(16384, 33)])
        );
        assert!(parse_bssplit("4k/50:8k/60", 1024).is_err());
        assert!(parse_bssplit("4k/50:8k/40", 1024).is_err());
        assert!(parse_bssplit("0/100", 1024).is_err());
        assert!(parse_bssplit("4k/x", 1024).is_err());
        let many = vec!["4k/"; 65].join(":");
        assert!(parse_bssplit(&many, 1024).is_err());
        assert_eq!(
            BlockSize::Split(vec![entry(4096, 50), entry(65536, 50)]).max_bytes(),
            65536
        );
    }

    #[test]
    fn distributions() {
        assert_eq!(parse_distribution("random", 1024), Ok(Distribution::Random));
        assert_eq!(
            parse_distribution("zipf:1.2", 1024),
            Ok(Distribution::Zipf {
                theta: 1.2,
                center: None
            })
        );
        assert_eq!(
            parse_distribution("zipf", 1024),
            Ok(Distribution::Zipf {
                theta: 1.1,
                center: None
            })
        );
        assert_eq!(
            parse_distribution("zipf:1.2:0.25", 1024),
            Ok(Distribution::Zipf {
                theta: 1.2,
                center: Some(0.25)
            })
        );
        assert_eq!(
            parse_distribution("pareto:0.9", 1024),
            Ok(Distribution::Pareto {
                power: 0.9,
                center: None
            })
        );
        assert_eq!(
            parse_distribution("normal:10", 1024),
            Ok(Distribution::Normal {
                deviation_percent: 10.0,
                center: None
            })
        );
        for bad in [
            "zipf:1",
            "zipf:1.0",
            "pareto:1.5",
            "normal:100",
            "zipf:x",
            "gamma",
            "zoned:60/10:30/90",
            "zoned:60/10:40/95",
            "zoned:60/50:20/60:20/",
            "zoned_abs:50/1m",
            "zoned_abs:50/1m:50",
            "zipf:1.2:2",
            "random:3",
            "zipf:1.2:0.5:1",
            "zipf:inf",
        ] {
            assert!(parse_distribution(bad, 1024).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn blank_zone_sizes_share_what_the_others_leave_as_in_fio() {
        let sizes = |text: &str| match parse_distribution(text, 1024) {
            Ok(Distribution::Zoned { zones, .. }) => zones
                .read
                .iter()
                .map(|z| (z.access_percent, z.size))
                .collect::<Vec<_>>(),
            other => panic!("{text}: {other:?}"),
        };
        // fio's examples/rand-zones.fio.
        assert_eq!(sizes("zoned:50/5:30/15:20/"), [(50, 5), (30, 15), (20, 80)]);
        // Blank, bare and zero sizes are all blanks; the list ends at an empty entry.
        assert_eq!(
            sizes("zoned:40/10:30:30/0:"),
            [(40, 10), (30, 45), (30, 45)]
        );
        assert_eq!(sizes("zoned:100"), [(100, 100)]);
    }

    #[test]
    fn verify_methods() {
        let checksum = |kind| Ok(VerifyKind::Checksum(kind));
        assert_eq!(parse_verify_kind("crc32c"), checksum(ChecksumKind::Crc32c));
        assert_eq!(
            parse_verify_kind("crc32c-intel"),
            checksum(ChecksumKind::Crc32c)
        );
        assert_eq!(parse_verify_kind("md5"), checksum(ChecksumKind::Md5));
        assert_eq!(parse_verify_kind("sha256"), checksum(ChecksumKind::Sha256));
        assert_eq!(parse_verify_kind("crc64"), checksum(ChecksumKind::Crc64));
        assert_eq!(
            parse_verify_kind("SHA3-512"),
            checksum(ChecksumKind::Sha3_512)
        );
        assert_eq!(parse_verify_kind("xxhash"), checksum(ChecksumKind::Xxhash));
        assert_eq!(parse_verify_kind("pattern"), Ok(VerifyKind::Pattern));
        assert_eq!(parse_verify_kind("meta"), Ok(VerifyKind::Meta));
        assert_eq!(parse_verify_kind("0"), Ok(VerifyKind::None));
        // Not fio's: refused, with fio's names listed.
        for name in ["sha224", "sha384", "sha9"] {
            let unknown = parse_verify_kind(name).unwrap_err();
            assert!(
                unknown.0.contains("unknown verify method") && unknown.0.contains("sha3-224"),
                "{unknown:?}"
            );
        }
    }

    #[test]
    fn verify_patterns() {
        assert_eq!(
            parse_verify_pattern("0xdeadbeef"),
            Ok(vec![0xde, 0xad, 0xbe, 0xef])
        );
        assert_eq!(parse_verify_pattern("0xabc"), Ok(vec![0x0a, 0xbc]));
        assert_eq!(parse_verify_pattern("255"), Ok(vec![0xff]));
        assert_eq!(parse_verify_pattern("258"), Ok(vec![0x02, 0x01]));
        assert_eq!(parse_verify_pattern("0"), Ok(vec![0]));
        assert_eq!(parse_verify_pattern("\"ab\""), Ok(b"ab".to_vec()));
        assert_eq!(
            parse_verify_pattern("0xff\"ab\""),
            Ok(vec![0xff, b'a', b'b'])
        );
        for bad in ["%o", "0x", "\"open", "zz", "", "99999999999"] {
            assert!(parse_verify_pattern(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn percentile_lists() {
        assert_eq!(
            parse_percentile_list("1:5:50:99:99.9"),
            Ok(vec![1.0, 5.0, 50.0, 99.0, 99.9])
        );
        assert_eq!(parse_percentile_list("100"), Ok(vec![100.0]));
        for bad in ["0", "101", "50::99", "x", "-1", "nan"] {
            assert!(parse_percentile_list(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1,3"), Ok(vec![0, 1, 3]));
        assert_eq!(parse_cpu_list("5,0,5,2-3"), Ok(vec![0, 2, 3, 5]));
        for bad in ["3-1", "a", "", "0-99999", "1,,2"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rw_modes() {
        assert_eq!(
            parse_rw("randread", 1024),
            Ok(RwMode {
                kind: RwKind::RandRead,
                offset_modifier: None
            })
        );
        assert_eq!(
            parse_rw("readwrite", 1024).map(|m| m.kind),
            Ok(RwKind::ReadWrite)
        );
        assert_eq!(parse_rw("rw", 1024).map(|m| m.kind), Ok(RwKind::ReadWrite));
        assert_eq!(
            parse_rw("randread:8", 1024),
            Ok(RwMode {
                kind: RwKind::RandRead,
                offset_modifier: Some(8)
            })
        );
        assert_eq!(
            parse_rw("write:4k", 1024),
            Ok(RwMode {
                kind: RwKind::Write,
                offset_modifier: Some(4096)
            })
        );
        assert!(parse_rw("trimwrite", 1024)
            .unwrap_err()
            .0
            .contains("not support"));
        assert!(parse_rw("randwrites", 1024).is_err());
        assert!(parse_rw("read:x", 1024).is_err());
    }

    #[test]
    fn targets() {
        let url = |host: &str, port, iqn: &str, lun| {
            Target::Iscsi(IscsiUrl {
                user: None,
                password: None,
                host: host.into(),
                port,
                target_iqn: iqn.into(),
                lun,
            })
        };
        assert_eq!(
            parse_target("iscsi://127.0.0.1/iqn.x/0"),
            Ok(url("127.0.0.1", 3260, "iqn.x", 0))
        );
        // fio's libiscsi example escapes every colon.
        assert_eq!(
            parse_target("iscsi\\://192.168.1.220\\:3261/iqn.2003-01.org.linux-iscsi\\:sn.2a/7"),
            Ok(url(
                "192.168.1.220",
                3261,
                "iqn.2003-01.org.linux-iscsi:sn.2a",
                7
            ))
        );
        assert_eq!(
            parse_target("iscsi://[::1]:3262/iqn.a:b/1"),
            Ok(url("::1", 3262, "iqn.a:b", 1))
        );
        assert_eq!(
            parse_target("iscsi://alice%s3cret@h/iqn.t/2"),
            Ok(Target::Iscsi(IscsiUrl {
                user: Some("alice".into()),
                password: Some("s3cret".into()),
                host: "h".into(),
                port: 3260,
                target_iqn: "iqn.t".into(),
                lun: 2,
            }))
        );
        assert_eq!(
            parse_target("/dev/sdb"),
            Ok(Target::Path("/dev/sdb".into()))
        );
        assert_eq!(parse_target("a\\:b"), Ok(Target::Path("a:b".into())));
        assert_eq!(parse_target("null"), Ok(Target::Null));
        for bad in [
            "a:b",
            "iscsi://h/iqn",
            "iscsi:///iqn/0",
            "iscsi://h:0/iqn/0",
            "iscsi://h//0",
            "iscsi://h/iqn/x",
            "iscsi://[::1/iqn/0",
            "",
        ] {
            assert!(parse_target(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rendered_urls_parse_back() {
        for text in [
            "iscsi://127.0.0.1/iqn.x/0",
            "iscsi://u%p@[::1]:9/iqn.a:b:c/3",
        ] {
            let Ok(Target::Iscsi(url)) = parse_target(text) else {
                panic!("{text} did not parse");
            };
            assert_eq!(
                parse_target(&render_iscsi_url(&url)),
                Ok(Target::Iscsi(url))
            );
        }
    }

    #[test]
    fn plain_integers() {
        assert_eq!(parse_u64("0x10"), Ok(16));
        assert_eq!(parse_u64_in("5", 1, 10), Ok(5));
        assert!(parse_u64_in("0", 1, 10).is_err());
        assert!(parse_u64("4k").is_err());
        assert!(parse_u64("-1").is_err());
        assert_eq!(parse_i64_in("-20", -20, 19), Ok(-20));
        assert_eq!(parse_i64_in("19", -20, 19), Ok(19));
        assert!(parse_i64_in("-21", -20, 19).is_err());
        assert!(parse_i64_in("20", -20, 19).is_err());
        assert!(parse_i64_in("-", -20, 19).is_err());
    }

    #[test]
    fn cpu_masks_are_bit_sets() {
        assert_eq!(parse_cpu_mask("2"), Ok(vec![1]));
        assert_eq!(parse_cpu_mask("0x5"), Ok(vec![0, 2]));
        assert_eq!(parse_cpu_mask("0x8000000000000000"), Ok(vec![63]));
        assert!(parse_cpu_mask("0").is_err());
        assert!(parse_cpu_mask("-1").is_err());
    }
}
