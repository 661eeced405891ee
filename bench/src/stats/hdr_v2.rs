//! A latency histogram in HdrHistogram's "V2" encoding (uncompressed), in base64: how
//! histograms travel whole between hosts and inside JSON files, so that a merge adds the
//! very counters each host recorded.
//!
//! The layout is HdrHistogram's own (`AbstractHistogram.encodeIntoByteBuffer`, V2
//! cookie `0x1c849303`): a 40-byte big-endian header (cookie, payload length, normalizing
//! index offset, significant digits, lowest discernible value, highest trackable value,
//! integer-to-double ratio), then the counts by index up to the last non-zero one, each a
//! ZigZag LEB128 varint (at most 9 bytes, the ninth carrying 8 bits), a run of `n` empty
//! buckets written as `-n`. Other HdrHistogram implementations read it (after base64 and
//! without the DEFLATE wrapper of the "compressed" form, which needs a crate we do not
//! carry).
//!
//! Decoding takes untrusted bytes: every length and count is checked against the one
//! histogram shape this tool records ([`LatencyStat`]'s), so input can neither allocate
//! beyond it nor panic.

use std::sync::OnceLock;

use hdrhistogram::Histogram;

use super::latency::{LATENCY_HIGHEST_NS, LATENCY_SIGNIFICANT_DIGITS};

/// HdrHistogram's V2 encoding cookie (uncompressed, 64-bit counts, word size 0).
const V2_COOKIE: u32 = 0x1c84_9303;
const HEADER_BYTES: usize = 40;
/// Our histograms' lowest discernible value (1 ns).
const LOWEST_NS: u64 = 1;

/// Why an encoded histogram was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistogramDecodeError {
    #[error("histogram: not base64 ({0})")]
    Base64(&'static str),
    #[error("histogram: {0} bytes is shorter than the 40-byte V2 header")]
    TooShort(usize),
    #[error("histogram: cookie {0:#010x} is not HdrHistogram's uncompressed V2 (0x1c849303)")]
    Cookie(u32),
    #[error("histogram: the payload length {declared} does not match the {actual} bytes after the header")]
    PayloadLength { declared: u64, actual: usize },
    #[error(
        "histogram: shape (lowest {lowest}, highest {highest}, {digits} digits, offset {offset}) \
         is not this tool's (1 ns, {LATENCY_HIGHEST_NS} ns, {LATENCY_SIGNIFICANT_DIGITS} digits): \
         it cannot merge exactly"
    )]
    Shape {
        lowest: u64,
        highest: u64,
        digits: u32,
        offset: u32,
    },
    #[error("histogram: a varint at byte {0} runs past 9 bytes or the end")]
    Varint(usize),
    #[error("histogram: counts run past the histogram's {0} buckets")]
    TooManyBuckets(usize),
    #[error("histogram: the total count overflows")]
    Overflow,
    #[error("results: direction {0} is not read (0), write (1) or trim (2)")]
    Direction(u8),
}

/// The value each bucket index stands for (its highest equivalent value), for our shape.
fn index_values() -> &'static [u64] {
    static VALUES: OnceLock<Vec<u64>> = OnceLock::new();
    VALUES.get_or_init(|| {
        empty_histogram()
            .iter_all()
            .map(|v| v.value_iterated_to())
            .collect()
    })
}

fn empty_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LOWEST_NS, LATENCY_HIGHEST_NS, LATENCY_SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// The V2 bytes of `histogram` (which must have our shape; `LatencyStat` guarantees it).
pub fn encode_v2(histogram: &Histogram<u64>) -> Vec<u8> {
    let mut payload = Vec::new();
    if !histogram.is_empty() {
        let counts: Vec<u64> = histogram.iter_all().map(|v| v.count_at_value()).collect();
        let used = counts.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
        let mut zeros: i64 = 0;
        for &count in &counts[..used] {
            if count == 0 {
                zeros += 1;
                continue;
            }
            if zeros > 0 {
                put_zigzag(&mut payload, -zeros);
                zeros = 0;
            }
            // Counts above i64::MAX cannot be recorded in a run (they would need 2^63 I/Os).
            put_zigzag(&mut payload, i64::try_from(count).unwrap_or(i64::MAX));
        }
    }
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(&V2_COOKIE.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&u32::from(LATENCY_SIGNIFICANT_DIGITS).to_be_bytes());
    out.extend_from_slice(&LOWEST_NS.to_be_bytes());
    out.extend_from_slice(&LATENCY_HIGHEST_NS.to_be_bytes());
    out.extend_from_slice(&1.0f64.to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

/// A histogram of our shape from V2 bytes.
pub fn decode_v2(bytes: &[u8]) -> Result<Histogram<u64>, HistogramDecodeError> {
    if bytes.len() < HEADER_BYTES {
        return Err(HistogramDecodeError::TooShort(bytes.len()));
    }
    let u32_at =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let u64_at = |at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_be_bytes(word)
    };
    let cookie = u32_at(0);
    if cookie != V2_COOKIE {
        return Err(HistogramDecodeError::Cookie(cookie));
    }
    let declared = u64::from(u32_at(4));
    let payload = &bytes[HEADER_BYTES..];
    if declared != payload.len() as u64 {
        return Err(HistogramDecodeError::PayloadLength {
            declared,
            actual: payload.len(),
        });
    }
    let (offset, digits, lowest, highest) = (u32_at(8), u32_at(12), u64_at(16), u64_at(24));
    if offset != 0
        || digits != u32::from(LATENCY_SIGNIFICANT_DIGITS)
        || lowest != LOWEST_NS
        || highest != LATENCY_HIGHEST_NS
    {
        return Err(HistogramDecodeError::Shape {
            lowest,
            highest,
            digits,
            offset,
        });
    }
    let values = index_values();
    let mut histogram = empty_histogram();
    let mut index = 0usize;
    let mut total = 0u64;
    let mut at = 0usize;
    while at < payload.len() {
        let (value, used) =
            get_zigzag(&payload[at..]).ok_or(HistogramDecodeError::Varint(HEADER_BYTES + at))?;
        at += used;
        if value < 0 {
            let run = usize::try_from(value.unsigned_abs()).unwrap_or(usize::MAX);
            index = index.saturating_add(run);
            if index > values.len() {
                return Err(HistogramDecodeError::TooManyBuckets(values.len()));
            }
            continue;
        }
        let count = value as u64;
        let Some(&bucket_value) = values.get(index) else {
            return Err(HistogramDecodeError::TooManyBuckets(values.len()));
        };
        total = total
            .checked_add(count)
            .ok_or(HistogramDecodeError::Overflow)?;
        if count > 0 {
            histogram
                .record_n(bucket_value, count)
                .map_err(|_| HistogramDecodeError::Overflow)?;
        }
        index += 1;
    }
    Ok(histogram)
}

/// [`encode_v2`] in standard base64 (with padding), as HdrHistogram's logs carry it.
pub fn encode_base64(histogram: &Histogram<u64>) -> String {
    base64_encode(&encode_v2(histogram))
}

/// [`decode_v2`] of standard base64 text.
pub fn decode_base64(text: &str) -> Result<Histogram<u64>, HistogramDecodeError> {
    decode_v2(&base64_decode(text)?)
}

/// HdrHistogram's ZigZag LEB128: 7 bits a byte, low first; the ninth byte holds 8 bits.
fn put_zigzag(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    for _ in 0..8 {
        if v < 0x80 {
            out.push(v as u8);
            return;
        }
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// One varint: (value, bytes used), `None` when it runs past the input.
fn get_zigzag(input: &[u8]) -> Option<(i64, usize)> {
    let mut v = 0u64;
    for i in 0..9 {
        let byte = *input.get(i)?;
        if i == 8 {
            v |= u64::from(byte) << 56;
            return Some((unzigzag(v), 9));
        }
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((unzigzag(v), i + 1));
        }
    }
    None
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let word = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64_ALPHABET[(word >> (18 - 6 * i) & 0x3f) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Result<Vec<u8>, HistogramDecodeError> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return Err(HistogramDecodeError::Base64(
            "length is not a multiple of 4",
        ));
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let chunks = bytes.len() / 4;
    for (n, chunk) in bytes.chunks(4).enumerate() {
        let last = n + 1 == chunks;
        let padding = chunk.iter().rev().take_while(|&&b| b == b'=').count();
        if padding > 2 || (padding > 0 && !last) {
            return Err(HistogramDecodeError::Base64("misplaced padding"));
        }
        let mut word = 0u32;
        for &byte in &chunk[..4 - padding] {
            let sextet = match byte {
                b'A'..=b'Z' => byte - b'A',
                b'a'..=b'z' => byte - b'a' + 26,
                b'0'..=b'9' => byte - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => {
                    return Err(HistogramDecodeError::Base64(
                        "a character outside the alphabet",
                    ))
                }
            };
            word = word << 6 | u32::from(sextet);
        }
        word <<= 6 * padding as u32;
        let decoded = [(word >> 16) as u8, (word >> 8) as u8, word as u8];
        out.extend_from_slice(&decoded[..3 - padding]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn histogram_of(values: &[u64]) -> Histogram<u64> {
        let mut h = empty_histogram();
        for &v in values {
            h.saturating_record(v);
        }
        h
    }

    #[test]
    fn empty_histogram_is_the_bare_header() {
        let bytes = encode_v2(&empty_histogram());
        assert_eq!(bytes.len(), HEADER_BYTES);
        assert!(decode_v2(&bytes).unwrap().is_empty());
    }

    #[test]
    fn header_fields_are_refused_by_name() {
        let mut bytes = encode_v2(&histogram_of(&[5, 10]));
        bytes[0] ^= 1;
        assert!(matches!(
            decode_v2(&bytes),
            Err(HistogramDecodeError::Cookie(_))
        ));
        let mut bytes = encode_v2(&histogram_of(&[5, 10]));
        bytes[15] = 2; // two significant digits
        assert!(matches!(
            decode_v2(&bytes),
            Err(HistogramDecodeError::Shape { digits: 2, .. })
        ));
        let mut bytes = encode_v2(&histogram_of(&[5, 10]));
        bytes.push(0);
        assert!(matches!(
            decode_v2(&bytes),
            Err(HistogramDecodeError::PayloadLength { .. })
        ));
        assert_eq!(decode_v2(&[0; 12]), Err(HistogramDecodeError::TooShort(12)));
        assert!(matches!(
            decode_base64("abc"),
            Err(HistogramDecodeError::Base64(_))
        ));
        assert!(matches!(
            decode_base64("ab=c"),
            Err(HistogramDecodeError::Base64(_))
        ));
    }

    #[test]
    fn a_run_past_the_buckets_is_refused() {
        let mut bytes = encode_v2(&empty_histogram());
        let mut payload = Vec::new();
        put_zigzag(&mut payload, -(1 << 40));
        put_zigzag(&mut payload, 1);
        bytes[4..8].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&payload);
        assert!(matches!(
            decode_v2(&bytes),
            Err(HistogramDecodeError::TooManyBuckets(_))
        ));
    }

    proptest! {
        #[test]
        fn zigzag_round_trips(value in any::<i64>()) {
            let mut out = Vec::new();
            put_zigzag(&mut out, value);
            prop_assert!(out.len() <= 9);
            prop_assert_eq!(get_zigzag(&out), Some((value, out.len())));
        }

        #[test]
        fn base64_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert_eq!(base64_decode(&base64_encode(&bytes)).unwrap(), bytes);
        }

        #[test]
        fn histograms_round_trip_bucket_for_bucket(
            values in proptest::collection::vec(
                prop_oneof![1u64..2_000, 1u64..10_000_000, 1u64..LATENCY_HIGHEST_NS * 2], 0..300),
            repeat in 1u64..1_000_000,
        ) {
            let mut h = histogram_of(&values);
            if let Some(&v) = values.first() {
                h.saturating_record_n(v, repeat);
            }
            let back = decode_base64(&encode_base64(&h)).unwrap();
            prop_assert_eq!(back.len(), h.len());
            let a: Vec<(u64, u64)> = h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect();
            let b: Vec<(u64, u64)> = back.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect();
            prop_assert_eq!(a, b);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let mut framed = encode_v2(&empty_histogram());
            framed[4..8].copy_from_slice(&(bytes.len() as u32).to_be_bytes());
            framed.extend_from_slice(&bytes);
            let _ = decode_v2(&framed);
            let _ = decode_v2(&bytes);
        }
    }
}
