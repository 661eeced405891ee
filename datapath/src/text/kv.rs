//! The iSCSI text format, RFC 7143 section 6.1, and text split over several PDUs with the
//! C (continue) bit, sections 6.2 and 11.10.2 / 11.13.
//!
//! A text is a sequence of `key=value` pairs, each terminated by one NUL byte, in UTF-8.
//! Key names are at most 63 bytes of letters, digits, `.`, `-`, `+`, `@` and `_`
//! (section 6.1). Values are at most 255 bytes except binary values (CHAP challenges and
//! responses), which may be up to 8192 bytes; list values are comma separated and left to
//! the caller to split. A data segment may carry NUL padding after the last pair.
//!
//! Everything here is bounded by [`TextLimits`]: a text over a limit is an error, never an
//! allocation.

use std::collections::HashSet;

use thiserror::Error;

/// Bounds applied when parsing or accumulating text from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextLimits {
    /// Longest key name accepted, in bytes (section 6.1: 63).
    pub max_key_len: usize,
    /// Longest value accepted, in bytes (section 6.1: 255 for text, 8192 for binary values;
    /// the larger one here, since this layer does not know which keys carry binary values).
    pub max_value_len: usize,
    /// Most `key=value` pairs accepted in one text.
    pub max_pairs: usize,
    /// Most bytes accepted in one whole text, after joining continued PDUs.
    pub max_text_len: usize,
}

impl Default for TextLimits {
    fn default() -> Self {
        TextLimits {
            max_key_len: 63,
            max_value_len: 8192,
            max_pairs: 256,
            max_text_len: 65536,
        }
    }
}

/// Longest prefix of an offending key or pair kept in an error, so an error never holds a
/// large amount of peer data.
const ERROR_SNIPPET_LEN: usize = 64;

/// Malformed or over-limit text from a peer (section 6.1).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TextError {
    /// The whole text is longer than [`TextLimits::max_text_len`].
    #[error("text of {len} bytes exceeds the limit of {max} bytes")]
    TextTooLong { len: usize, max: usize },
    /// More pairs than [`TextLimits::max_pairs`].
    #[error("text has more than {max} key=value pairs")]
    TooManyPairs { max: usize },
    /// A pair without `=` (the pair is shown, cut to 64 bytes).
    #[error("text pair {pair:?} has no '=' separator")]
    MissingSeparator { pair: String },
    /// A pair starting with `=`.
    #[error("text pair with an empty key (value {value:?})")]
    EmptyKey { value: String },
    /// Two NUL bytes in a row before the end of the text: an empty pair.
    #[error("empty key=value pair after key {after:?}")]
    EmptyPair { after: Option<String> },
    /// The last pair is not NUL-terminated: the text was cut short.
    #[error("last text pair {pair:?} is not NUL-terminated")]
    Unterminated { pair: String },
    /// A key or value that is not UTF-8 (the key is shown lossily).
    #[error("text pair with key {key:?} is not valid UTF-8")]
    InvalidUtf8 { key: String },
    /// A key with a character section 6.1 does not allow in key names.
    #[error("key {key:?} has a character not allowed in key names")]
    InvalidKey { key: String },
    /// A key longer than [`TextLimits::max_key_len`] (shown cut to 64 bytes).
    #[error("key {key:?} is {len} bytes, over the limit of {max}")]
    KeyTooLong { key: String, len: usize, max: usize },
    /// A value longer than [`TextLimits::max_value_len`].
    #[error("value of key {key:?} is {len} bytes, over the limit of {max}")]
    ValueTooLong { key: String, len: usize, max: usize },
    /// The same key twice in one text (section 6.2 forbids negotiating a key twice).
    #[error("key {key:?} appears more than once")]
    DuplicateKey { key: String },
}

/// A bounded, lossy rendering of peer bytes for an error message.
fn snippet(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(ERROR_SNIPPET_LEN)];
    String::from_utf8_lossy(cut).into_owned()
}

/// Section 6.1: key names consist of letters, digits, dot, minus, plus, commercial at and
/// underscore.
fn is_key_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'+' | b'@' | b'_')
}

/// Parses a whole text (already joined over continued PDUs) into its pairs, in order.
///
/// NUL padding after the last pair is allowed; every pair must be NUL-terminated, have a
/// non-empty valid key, and be UTF-8. Values may be empty. A key may appear only once
/// (negotiation text); see [`parse_repeated_pairs`] for SendTargets responses.
pub fn parse_pairs(data: &[u8], limits: &TextLimits) -> Result<Vec<(String, String)>, TextError> {
    parse_text(data, limits, true)
}

/// Like [`parse_pairs`], but a key may appear many times: a SendTargets response repeats
/// `TargetName` and `TargetAddress` once per target and portal (RFC 7143 Appendix C).
pub fn parse_repeated_pairs(
    data: &[u8],
    limits: &TextLimits,
) -> Result<Vec<(String, String)>, TextError> {
    parse_text(data, limits, false)
}

fn parse_text(
    data: &[u8],
    limits: &TextLimits,
    unique_keys: bool,
) -> Result<Vec<(String, String)>, TextError> {
    if data.len() > limits.max_text_len {
        return Err(TextError::TextTooLong {
            len: data.len(),
            max: limits.max_text_len,
        });
    }
    // Strip the padding: everything after the NUL that ends the last pair.
    let content_len = match data.iter().rposition(|&b| b != 0) {
        None => return Ok(Vec::new()),
        Some(last) if last + 1 == data.len() => {
            return Err(TextError::Unterminated {
                pair: snippet(last_pair(data)),
            })
        }
        Some(last) => last + 1,
    };
    let content = &data[..content_len];

    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for raw in content.split(|&b| b == 0) {
        if raw.is_empty() {
            return Err(TextError::EmptyPair {
                after: pairs.last().map(|(k, _)| k.clone()),
            });
        }
        if pairs.len() >= limits.max_pairs {
            return Err(TextError::TooManyPairs {
                max: limits.max_pairs,
            });
        }
        let (key, value) = parse_one(raw, limits)?;
        if unique_keys && !seen.insert(key.clone()) {
            return Err(TextError::DuplicateKey { key });
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// The bytes after the last NUL of `data` (the unterminated tail).
fn last_pair(data: &[u8]) -> &[u8] {
    match data.iter().rposition(|&b| b == 0) {
        Some(nul) => &data[nul + 1..],
        None => data,
    }
}

fn parse_one(raw: &[u8], limits: &TextLimits) -> Result<(String, String), TextError> {
    let Some(eq) = raw.iter().position(|&b| b == b'=') else {
        return Err(TextError::MissingSeparator { pair: snippet(raw) });
    };
    let (key_bytes, value_bytes) = (&raw[..eq], &raw[eq + 1..]);
    if key_bytes.is_empty() {
        return Err(TextError::EmptyKey {
            value: snippet(value_bytes),
        });
    }
    if key_bytes.len() > limits.max_key_len {
        return Err(TextError::KeyTooLong {
            key: snippet(key_bytes),
            len: key_bytes.len(),
            max: limits.max_key_len,
        });
    }
    if !key_bytes.iter().all(|&b| is_key_byte(b)) {
        return Err(TextError::InvalidKey {
            key: snippet(key_bytes),
        });
    }
    // Key bytes are ASCII by now.
    let key = String::from_utf8_lossy(key_bytes).into_owned();
    if value_bytes.len() > limits.max_value_len {
        return Err(TextError::ValueTooLong {
            key,
            len: value_bytes.len(),
            max: limits.max_value_len,
        });
    }
    let value = match std::str::from_utf8(value_bytes) {
        Ok(v) => v.to_owned(),
        Err(_) => return Err(TextError::InvalidUtf8 { key }),
    };
    Ok((key, value))
}

/// Appends `key=value\0` for each pair to `out`. The caller supplies valid keys and values
/// (no NUL, no `=` in keys); nothing is checked here.
pub fn encode_pairs(pairs: &[(String, String)], out: &mut Vec<u8>) {
    for (key, value) in pairs {
        out.reserve(key.len() + value.len() + 2);
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
}

/// Joins a text sent over several PDUs with the C bit (sections 6.2, 11.10.2, 11.13):
/// segments are appended while C=1; the segment with C=0 completes the text. A pair may be
/// split anywhere across segments, so parsing waits for the whole text.
#[derive(Debug)]
pub struct TextAccumulator {
    buffer: Vec<u8>,
    max_text_len: usize,
}

impl TextAccumulator {
    /// An empty accumulator that refuses texts longer than `max_text_len` bytes.
    pub fn new(max_text_len: usize) -> Self {
        TextAccumulator {
            buffer: Vec::new(),
            max_text_len,
        }
    }

    /// Adds one PDU's data segment. Returns the whole text when `continue_bit` is clear,
    /// `None` while more segments are expected. On error the partial text is dropped, so
    /// the accumulator can be reused for the next text.
    pub fn push(
        &mut self,
        segment: &[u8],
        continue_bit: bool,
    ) -> Result<Option<Vec<u8>>, TextError> {
        let len = self.buffer.len().saturating_add(segment.len());
        if len > self.max_text_len {
            self.buffer = Vec::new();
            return Err(TextError::TextTooLong {
                len,
                max: self.max_text_len,
            });
        }
        self.buffer.extend_from_slice(segment);
        if continue_bit {
            Ok(None)
        } else {
            Ok(Some(std::mem::take(&mut self.buffer)))
        }
    }

    /// Bytes held from segments that had the C bit set.
    pub fn pending_len(&self) -> usize {
        self.buffer.len()
    }

    /// True when a text has been started but not completed.
    pub fn is_partial(&self) -> bool {
        !self.buffer.is_empty()
    }

    /// Drops any partial text (for example when the exchange is abandoned).
    pub fn reset(&mut self) {
        self.buffer.clear();
    }
}

/// Splits an encoded text into chunks of at most `max_segment` bytes (the peer's
/// MaxRecvDataSegmentLength), to be sent with C=1 on every chunk but the last. An empty
/// text gives one empty chunk. A `max_segment` of 0 is treated as 1.
pub fn split_text(data: &[u8], max_segment: usize) -> Vec<&[u8]> {
    if data.is_empty() {
        return vec![data];
    }
    data.chunks(max_segment.max(1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(data: &[u8]) -> Result<Vec<(String, String)>, TextError> {
        parse_pairs(data, &TextLimits::default())
    }

    #[test]
    fn parses_pairs_in_order_with_padding() {
        let got =
            parse(b"HeaderDigest=CRC32C,None\0MaxBurstLength=262144\0TargetAlias=\0\0\0").unwrap();
        assert_eq!(
            got,
            pairs(&[
                ("HeaderDigest", "CRC32C,None"),
                ("MaxBurstLength", "262144"),
                ("TargetAlias", "")
            ])
        );
    }

    #[test]
    fn value_may_contain_equals_sign() {
        let got = parse(b"X-com.example.k=a=b\0").unwrap();
        assert_eq!(got, pairs(&[("X-com.example.k", "a=b")]));
    }

    #[test]
    fn empty_and_all_padding_texts_have_no_pairs() {
        assert_eq!(parse(b"").unwrap(), vec![]);
        assert_eq!(parse(b"\0\0\0\0").unwrap(), vec![]);
    }

    #[test]
    fn malformed_texts_are_errors_naming_the_key() {
        assert_eq!(
            parse(b"NoEquals\0"),
            Err(TextError::MissingSeparator {
                pair: "NoEquals".into()
            })
        );
        assert_eq!(
            parse(b"=Yes\0"),
            Err(TextError::EmptyKey {
                value: "Yes".into()
            })
        );
        assert_eq!(
            parse(b"A=1\0\0B=2\0"),
            Err(TextError::EmptyPair {
                after: Some("A".into())
            })
        );
        assert_eq!(
            parse(b"A=1\0B=2"),
            Err(TextError::Unterminated { pair: "B=2".into() })
        );
        assert_eq!(
            parse(b"A=\xff\xfe\0"),
            Err(TextError::InvalidUtf8 { key: "A".into() })
        );
        assert_eq!(
            parse(b"Bad Key=1\0"),
            Err(TextError::InvalidKey {
                key: "Bad Key".into()
            })
        );
        assert_eq!(
            parse(b"A=1\0A=2\0"),
            Err(TextError::DuplicateKey { key: "A".into() })
        );
        assert_eq!(
            parse_repeated_pairs(b"A=1\0A=2\0", &TextLimits::default()).map(|p| p.len()),
            Ok(2)
        );
    }

    #[test]
    fn limits_are_enforced() {
        let key64 = "K".repeat(64);
        let text = format!("{key64}=1\0");
        assert!(matches!(
            parse(text.as_bytes()),
            Err(TextError::KeyTooLong {
                len: 64,
                max: 63,
                ..
            })
        ));
        let key63 = "K".repeat(63);
        assert!(parse(format!("{key63}=1\0").as_bytes()).is_ok());

        let limits = TextLimits {
            max_value_len: 255,
            ..TextLimits::default()
        };
        let long = format!("TargetAlias={}\0", "a".repeat(256));
        assert_eq!(
            parse_pairs(long.as_bytes(), &limits),
            Err(TextError::ValueTooLong {
                key: "TargetAlias".into(),
                len: 256,
                max: 255
            })
        );

        let limits = TextLimits {
            max_pairs: 2,
            ..TextLimits::default()
        };
        assert_eq!(
            parse_pairs(b"A=1\0B=2\0C=3\0", &limits),
            Err(TextError::TooManyPairs { max: 2 })
        );
        assert!(parse_pairs(b"A=1\0B=2\0", &limits).is_ok());

        let limits = TextLimits {
            max_text_len: 7,
            ..TextLimits::default()
        };
        assert_eq!(
            parse_pairs(b"A=1\0B=2\0", &limits),
            Err(TextError::TextTooLong { len: 8, max: 7 })
        );
    }

    #[test]
    fn encode_then_parse_round_trips() {
        let original = pairs(&[
            ("InitiatorName", "iqn.2024-01.org.example:host"),
            ("SessionType", "Normal"),
        ]);
        let mut out = Vec::new();
        encode_pairs(&original, &mut out);
        assert_eq!(
            out,
            b"InitiatorName=iqn.2024-01.org.example:host\0SessionType=Normal\0"
        );
        assert_eq!(parse(&out).unwrap(), original);
    }

    #[test]
    fn accumulator_joins_continued_segments() {
        let mut acc = TextAccumulator::new(64);
        assert_eq!(acc.push(b"MaxBurst", true).unwrap(), None);
        assert!(acc.is_partial());
        assert_eq!(acc.push(b"Length=5", true).unwrap(), None);
        assert_eq!(
            acc.push(b"12\0", false).unwrap(),
            Some(b"MaxBurstLength=512\0".to_vec())
        );
        assert!(!acc.is_partial());
        // Reusable for the next text.
        assert_eq!(acc.push(b"A=1\0", false).unwrap(), Some(b"A=1\0".to_vec()));
    }

    #[test]
    fn accumulator_refuses_texts_over_the_limit() {
        let mut acc = TextAccumulator::new(8);
        assert_eq!(acc.push(b"AAAAA", true).unwrap(), None);
        assert_eq!(
            acc.push(b"BBBB", false),
            Err(TextError::TextTooLong { len: 9, max: 8 })
        );
        assert_eq!(acc.pending_len(), 0);
        assert_eq!(
            acc.push(b"12345678", false).unwrap(),
            Some(b"12345678".to_vec())
        );
    }

    #[test]
    fn split_text_chunks() {
        assert_eq!(split_text(b"abcdefg", 3), vec![&b"abc"[..], b"def", b"g"]);
        assert_eq!(split_text(b"abcdef", 3), vec![&b"abc"[..], b"def"]);
        assert_eq!(split_text(b"", 3), vec![&b""[..]]);
        assert_eq!(split_text(b"ab", 0), vec![&b"a"[..], b"b"]);
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        "[A-Za-z0-9.+@_-]{1,63}"
    }

    proptest! {
        #[test]
        fn round_trip_through_split_and_accumulate(
            map in proptest::collection::btree_map(key_strategy(), "[^\u{0}]{0,40}", 0..20),
            segment in 1usize..50,
        ) {
            let original: Vec<(String, String)> = map.into_iter().collect();
            let mut encoded = Vec::new();
            encode_pairs(&original, &mut encoded);
            let chunks = split_text(&encoded, segment);
            let mut acc = TextAccumulator::new(65536);
            let mut whole = None;
            for (i, chunk) in chunks.iter().enumerate() {
                let last = i + 1 == chunks.len();
                whole = acc.push(chunk, !last).unwrap();
                prop_assert_eq!(whole.is_some(), last);
            }
            let parsed = parse_pairs(&whole.unwrap(), &TextLimits::default()).unwrap();
            prop_assert_eq!(parsed, original);
        }

        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_pairs(&data, &TextLimits::default());
        }
    }
}
