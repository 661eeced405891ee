//! CHAP for iSCSI, RFC 7143 section 12.1.3, with the response computed as in RFC 1994
//! section 4.1 (MD5 over identifier, secret and challenge; CHAP_A=5 names MD5).
//!
//! The exchange, initiator side:
//! 1. I -> T: `CHAP_A=5` ([`InitiatorChap::first_pairs`]).
//! 2. T -> I: `CHAP_A=5`, `CHAP_I=<id>`, `CHAP_C=<challenge>`.
//! 3. I -> T: `CHAP_N=<user>`, `CHAP_R=<response>`, and for mutual authentication also
//!    `CHAP_I=<our id>`, `CHAP_C=<our challenge>`.
//! 4. (mutual only) T -> I: `CHAP_N=<target user>`, `CHAP_R=<target response>`, which the
//!    initiator verifies.
//!
//! Binary values (challenges, responses) are written as `0x` hex or `0b` base64
//! (section 6.1). A challenge equal to the one we sent is refused, since a peer that
//! reflects our challenge could get our own answer to it (section 12.1.3).

use md5::{Digest, Md5};
use thiserror::Error;

/// The CHAP algorithm number of MD5 (RFC 1994, IANA PPP authentication algorithms).
pub const CHAP_ALGORITHM_MD5: &str = "5";

/// Longest challenge or response accepted, in bytes. Common targets send 16 to 1024 bytes.
pub const MAX_BINARY_LEN: usize = 1024;

/// Longest value kept in an error, in characters.
const ERROR_VALUE_LEN: usize = 64;

/// A CHAP failure: a malformed or unexpected key from the peer, or failed authentication.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChapError {
    /// A binary value that is not `0x` hex or `0b` base64 (section 6.1).
    #[error("{value:?} is not a hex (0x) or base64 (0b) binary value")]
    InvalidBinary { value: String },
    /// A binary value longer than [`MAX_BINARY_LEN`] bytes.
    #[error("binary value of about {len} bytes exceeds the limit of {max}")]
    BinaryTooLong { len: usize, max: usize },
    /// The target chose an algorithm other than MD5, or rejected ours.
    #[error("target chose CHAP_A={chosen}; only 5 (MD5) is supported")]
    UnsupportedAlgorithm { chosen: String },
    /// A key the current step needs is missing.
    #[error("CHAP key {key} missing from the target's text")]
    MissingKey { key: &'static str },
    /// A CHAP key not expected at this step.
    #[error("unexpected CHAP key {key} at this step of the exchange")]
    UnexpectedKey { key: String },
    /// CHAP_I that is not a number from 0 to 255.
    #[error("CHAP_I={value} is not an identifier from 0 to 255")]
    InvalidIdentifier { value: String },
    /// A zero-length challenge.
    #[error("empty CHAP challenge")]
    EmptyChallenge,
    /// The target sent back the challenge we sent it.
    #[error("target challenge equals our own (reflection)")]
    ReflectedChallenge,
    /// The target named itself differently from the configured target user.
    #[error("target CHAP_N={got:?}, expected {expected:?}")]
    TargetNameMismatch { expected: String, got: String },
    /// The target's response to our challenge is wrong: mutual authentication failed.
    #[error("target CHAP_R does not match: mutual authentication failed")]
    TargetResponseMismatch,
}

fn cut(value: &str) -> String {
    value.chars().take(ERROR_VALUE_LEN).collect()
}

/// The CHAP response, RFC 1994 section 4.1: MD5(identifier || secret || challenge).
pub fn chap_response(id: u8, secret: &[u8], challenge: &[u8]) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update([id]);
    md5.update(secret);
    md5.update(challenge);
    md5.finalize().into()
}

/// True when `response` is the right answer to `challenge` sent with identifier `id`, for
/// a peer knowing `secret`. Compares in constant time. For the target side, which sends the
/// challenge and checks the initiator's CHAP_R.
pub fn verify_response(id: u8, secret: &[u8], challenge: &[u8], response: &[u8]) -> bool {
    constant_time_eq(&chap_response(id, secret, challenge), response)
}

/// Equality whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Encodes bytes as a section 6.1 hex constant: `0x` and lowercase hex digits.
pub fn encode_binary(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 + 2 * bytes.len());
    out.push_str("0x");
    for byte in bytes {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

/// Decodes a section 6.1 binary value: `0x`/`0X` and hex digits (an odd count implies a
/// leading zero digit), or `0b`/`0B` and base64 (padding optional). At most
/// [`MAX_BINARY_LEN`] bytes; longer input is refused before anything is allocated.
pub fn decode_binary(value: &str) -> Result<Vec<u8>, ChapError> {
    let invalid = || ChapError::InvalidBinary { value: cut(value) };
    let (prefix, body) = value.split_at_checked(2).ok_or_else(invalid)?;
    // Bound the decoded size before decoding anything.
    let decoded_len = match prefix {
        "0x" | "0X" => body.len().div_ceil(2),
        _ => body.len() / 4 * 3,
    };
    if decoded_len > MAX_BINARY_LEN {
        return Err(ChapError::BinaryTooLong {
            len: decoded_len,
            max: MAX_BINARY_LEN,
        });
    }
    match prefix {
        "0x" | "0X" => decode_hex(body).ok_or_else(invalid),
        "0b" | "0B" => decode_base64(body).ok_or_else(invalid),
        _ => Err(invalid()),
    }
    .and_then(|bytes| {
        if bytes.is_empty() {
            Err(invalid())
        } else {
            Ok(bytes)
        }
    })
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn decode_hex(body: &str) -> Option<Vec<u8>> {
    let digits = body.as_bytes();
    let len = digits.len().div_ceil(2);
    if len > MAX_BINARY_LEN {
        return None;
    }
    let mut out = Vec::with_capacity(len);
    // An odd count: the first digit stands alone as the low nibble of the first byte.
    let (first, rest) = if digits.len() % 2 == 1 {
        digits.split_at(1)
    } else {
        digits.split_at(0)
    };
    if let Some(&d) = first.first() {
        out.push(hex_digit(d)?);
    }
    for pair in rest.chunks_exact(2) {
        out.push(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?);
    }
    Some(out)
}

fn base64_digit(c: u8) -> Option<u32> {
    let value = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(value))
}

fn decode_base64(body: &str) -> Option<Vec<u8>> {
    let bytes = body.as_bytes();
    let data = bytes
        .strip_suffix(b"==")
        .or_else(|| bytes.strip_suffix(b"="))
        .unwrap_or(bytes);
    // With padding, the whole must be a multiple of 4 characters.
    if data.len() != bytes.len() && !bytes.len().is_multiple_of(4) {
        return None;
    }
    // A single trailing character carries fewer than 8 bits: not valid base64.
    if data.len() % 4 == 1 {
        return None;
    }
    let len = data.len() / 4 * 3 + (data.len() % 4).saturating_sub(1);
    if len > MAX_BINARY_LEN {
        return None;
    }
    let mut out = Vec::with_capacity(len);
    for group in data.chunks(4) {
        let mut acc = 0u32;
        for &c in group {
            acc = acc << 6 | base64_digit(c)?;
        }
        // Left-align a short final group into 24 bits, then take its whole bytes.
        acc <<= 6 * (4 - group.len() as u32);
        let [_, b0, b1, b2] = acc.to_be_bytes();
        out.extend_from_slice(&[b0, b1, b2][..group.len() - 1]);
    }
    Some(out)
}

/// Where an initiator is in the CHAP exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// `CHAP_A` sent; waiting for the target's algorithm, identifier and challenge.
    AwaitChallenge,
    /// Our response and our challenge sent; waiting for the target's response.
    AwaitTargetResponse,
    /// Our part is done (and, for mutual authentication, the target verified).
    Done,
}

/// The initiator's side of CHAP (section 12.1.3), one-way or mutual.
#[derive(Debug, Clone)]
pub struct InitiatorChap {
    user: String,
    secret: Vec<u8>,
    mutual: Option<(String, Vec<u8>)>,
    our_challenge: Vec<u8>,
    our_identifier: u8,
    step: Step,
}

impl InitiatorChap {
    /// `user`/`secret` are what we answer with; `mutual` is the target's expected user name
    /// and secret when the target must authenticate too; `our_challenge` (random bytes from
    /// the caller, 16 or more advised) and `our_identifier` are sent to the target for
    /// mutual authentication.
    pub fn new(
        user: String,
        secret: Vec<u8>,
        mutual: Option<(String, Vec<u8>)>,
        our_challenge: Vec<u8>,
        our_identifier: u8,
    ) -> Self {
        if let Some((_, target_secret)) = &mutual {
            if *target_secret == secret {
                // Section 12.1.3 forbids one secret for both directions.
                tracing::warn!("CHAP: the target secret equals the initiator secret");
            }
        }
        InitiatorChap {
            user,
            secret,
            mutual,
            our_challenge,
            our_identifier,
            step: Step::AwaitChallenge,
        }
    }

    /// The pairs that start CHAP after `AuthMethod=CHAP` is agreed: `CHAP_A=5`.
    pub fn first_pairs(&self) -> Vec<(String, String)> {
        vec![("CHAP_A".to_owned(), CHAP_ALGORITHM_MD5.to_owned())]
    }

    /// Handles the target's CHAP keys and returns the pairs to send. Keys that do not
    /// start with `CHAP_` are ignored (they are the caller's).
    pub fn handle_target_pairs(
        &mut self,
        pairs: &[(String, String)],
    ) -> Result<Vec<(String, String)>, ChapError> {
        let chap = |name: &'static str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        match self.step {
            Step::AwaitChallenge => {
                self.reject_keys_other_than(pairs, &["CHAP_A", "CHAP_I", "CHAP_C"])?;
                let algorithm = chap("CHAP_A").ok_or(ChapError::MissingKey { key: "CHAP_A" })?;
                if algorithm != CHAP_ALGORITHM_MD5 {
                    return Err(ChapError::UnsupportedAlgorithm {
                        chosen: cut(algorithm),
                    });
                }
                let id_text = chap("CHAP_I").ok_or(ChapError::MissingKey { key: "CHAP_I" })?;
                let id = parse_identifier(id_text)?;
                let challenge_text =
                    chap("CHAP_C").ok_or(ChapError::MissingKey { key: "CHAP_C" })?;
                let challenge = decode_challenge(challenge_text)?;
                if challenge == self.our_challenge {
                    return Err(ChapError::ReflectedChallenge);
                }
                let response = chap_response(id, &self.secret, &challenge);
                let mut out = vec![
                    ("CHAP_N".to_owned(), self.user.clone()),
                    ("CHAP_R".to_owned(), encode_binary(&response)),
                ];
                if self.mutual.is_some() {
                    out.push(("CHAP_I".to_owned(), self.our_identifier.to_string()));
                    out.push(("CHAP_C".to_owned(), encode_binary(&self.our_challenge)));
                    self.step = Step::AwaitTargetResponse;
                } else {
                    self.step = Step::Done;
                }
                Ok(out)
            }
            Step::AwaitTargetResponse => {
                self.reject_keys_other_than(pairs, &["CHAP_N", "CHAP_R"])?;
                let name = chap("CHAP_N").ok_or(ChapError::MissingKey { key: "CHAP_N" })?;
                let response_text =
                    chap("CHAP_R").ok_or(ChapError::MissingKey { key: "CHAP_R" })?;
                let Some((target_user, target_secret)) = &self.mutual else {
                    return Err(ChapError::UnexpectedKey {
                        key: "CHAP_N".to_owned(),
                    });
                };
                if name != target_user {
                    return Err(ChapError::TargetNameMismatch {
                        expected: target_user.clone(),
                        got: cut(name),
                    });
                }
                let response = decode_binary(response_text)?;
                if !verify_response(
                    self.our_identifier,
                    target_secret,
                    &self.our_challenge,
                    &response,
                ) {
                    return Err(ChapError::TargetResponseMismatch);
                }
                self.step = Step::Done;
                Ok(Vec::new())
            }
            Step::Done => {
                self.reject_keys_other_than(pairs, &[])?;
                Ok(Vec::new())
            }
        }
    }

    /// True while the target's response to our challenge is awaited.
    pub fn is_mutual_pending(&self) -> bool {
        self.step == Step::AwaitTargetResponse
    }

    /// True when the exchange is over on our side: our response is sent and, for mutual
    /// authentication, the target's response was verified.
    pub fn is_done(&self) -> bool {
        self.step == Step::Done
    }

    /// True when the target proved it knows the target secret.
    pub fn is_target_verified(&self) -> bool {
        self.step == Step::Done && self.mutual.is_some()
    }

    fn reject_keys_other_than(
        &self,
        pairs: &[(String, String)],
        allowed: &[&str],
    ) -> Result<(), ChapError> {
        match pairs
            .iter()
            .find(|(k, _)| k.starts_with("CHAP_") && !allowed.contains(&k.as_str()))
        {
            Some((key, _)) => Err(ChapError::UnexpectedKey { key: cut(key) }),
            None => Ok(()),
        }
    }
}

/// CHAP_I: a number from 0 to 255, decimal or `0x` hex (section 12.1.3).
fn parse_identifier(value: &str) -> Result<u8, ChapError> {
    let invalid = || ChapError::InvalidIdentifier { value: cut(value) };
    let (digits, radix) = match value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        Some(hex) => (hex, 16),
        None => (value, 10),
    };
    if digits.is_empty() || digits.len() > 8 || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(invalid());
    }
    u32::from_str_radix(digits, radix)
        .ok()
        .and_then(|n| u8::try_from(n).ok())
        .ok_or_else(invalid)
}

/// A challenge: a binary value of 1 to [`MAX_BINARY_LEN`] bytes.
fn decode_challenge(value: &str) -> Result<Vec<u8>, ChapError> {
    if matches!(value, "0x" | "0X" | "0b" | "0B") {
        return Err(ChapError::EmptyChallenge);
    }
    decode_binary(value)
}

#[cfg(test)]
mod tests;
