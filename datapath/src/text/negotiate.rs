//! Negotiation of the operational keys, RFC 7143 section 6.2 (rules) and section 13 (keys,
//! ranges, defaults).
//!
//! Each key follows one rule ([`KeyRule`]):
//! - list (section 6.2.1): the originator lists values in preference order; the responder
//!   answers with the first one it supports, or `Reject`.
//! - simple values (section 6.2.2): numerical keys take the minimum or maximum of the two
//!   values; Boolean keys take the AND or OR. An answer is optional when the result is
//!   already fixed by the offer (AND with `No`, OR with `Yes`).
//! - declarative: each side states its own value; nothing is answered. Here only
//!   MaxRecvDataSegmentLength, where each side declares the most it can receive.
//!
//! Any side may also answer `Reject` (a value it cannot accept), `Irrelevant` (the key does
//! not apply, for example in a discovery session) or `NotUnderstood` (an unknown key); the
//! key then keeps its default. A value not admissible under the rule is a negotiation
//! failure, reported as [`NegotiationError`]. A key may be negotiated only once (section 6.2).
//!
//! [`Negotiation`] is one side's state: it makes this side's proposals, answers the peer's
//! and checks the peer's answers, and yields the [`OperationalParams`] both sides agree on.

use thiserror::Error;

/// The negotiation rule of a key (RFC 7143 section 6.2 and the "Result function" of each key
/// in section 13). Numerical ranges are inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRule {
    /// The responder picks the first value of the originator's list that it supports.
    List,
    /// The result is the smaller of the two values.
    NumericalMin { min: u32, max: u32 },
    /// The result is the larger of the two values.
    NumericalMax { min: u32, max: u32 },
    /// The result is `Yes` only if both sides say `Yes`.
    BooleanAnd,
    /// The result is `Yes` if either side says `Yes`.
    BooleanOr,
    /// Each side declares its own value; there is no answer.
    Declarative,
}

/// Largest value of the 24-bit length keys (section 13: 512 to 2^24-1).
const MAX_LENGTH_KEY: u32 = (1 << 24) - 1;

/// The operational keys this module negotiates, in the order of section 13.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    HeaderDigest,
    DataDigest,
    MaxConnections,
    InitialR2t,
    ImmediateData,
    MaxRecvDataSegmentLength,
    MaxBurstLength,
    FirstBurstLength,
    DefaultTime2Wait,
    DefaultTime2Retain,
    MaxOutstandingR2t,
    DataPduInOrder,
    DataSequenceInOrder,
    ErrorRecoveryLevel,
}

/// One row of the key table.
struct KeySpec {
    key: Key,
    name: &'static str,
    rule: KeyRule,
    /// Section 13 marks these "Irrelevant when: SessionType=Discovery".
    relevant_in_discovery: bool,
}

/// The table of section 13 (sections 13.1 to 13.20 for the keys kept here).
const KEYS: [KeySpec; 14] = [
    KeySpec {
        key: Key::HeaderDigest,
        name: "HeaderDigest",
        rule: KeyRule::List,
        relevant_in_discovery: true,
    },
    KeySpec {
        key: Key::DataDigest,
        name: "DataDigest",
        rule: KeyRule::List,
        relevant_in_discovery: true,
    },
    KeySpec {
        key: Key::MaxConnections,
        name: "MaxConnections",
        rule: KeyRule::NumericalMin { min: 1, max: 65535 },
        relevant_in_discovery: false,
    },
    KeySpec {
        key: Key::InitialR2t,
        name: "InitialR2T",
        rule: KeyRule::BooleanOr,
        relevant_in_discovery: false,
    },
    KeySpec {
        key: Key::ImmediateData,
        name: "ImmediateData",
        rule: KeyRule::BooleanAnd,
        relevant_in_discovery: false,
    },
    KeySpec {
        key: Key::MaxRecvDataSegmentLength,
        name: "MaxRecvDataSegmentLength",
        rule: KeyRule::Declarative,
        relevant_in_discovery: true,
    },
    KeySpec {
        key: Key::MaxBurstLength,
        name: "MaxBurstLength",
        rule: KeyRule::NumericalMin {
            min: 512,
            max: MAX_LENGTH_KEY,
        },
        relevant_in_discovery: false,
    },
    KeySpec {
        key: Key::FirstBurstLength,
        name: "FirstBurstLength",
        rule: KeyRule::NumericalMin {
            min: 512,
            max: MAX_LENGTH_KEY,
        },
        relevant_in_discovery: false,
    },
    KeySpec {
        key: Key::DefaultTime2Wait,
        name: "DefaultTime2Wait",
        rule: KeyRule::NumericalMax { min: 0, max: 3600 },
        relevant_in_discovery: true,
    },
    KeySpec {
        key: Key::DefaultTime2Retain,
        name: "DefaultTime2Retain",
        rule: KeyRule::NumericalMin { min: 0, max: 3600 },
        relevant_in_discovery: true,
    },
    KeySpec {
        key: Key::MaxOutstandingR2t,
        name: "MaxOutstandingR2T",
        rule: KeyRule::NumericalMin { min: 1, max: 65535 },
        relevant_in_discovery: false,
    },
    KeySpec {
        key: Key::DataPduInOrder,
        name: "DataPDUInOrder",
        rule: KeyRule::BooleanOr,
        relevant_in_discovery: false,
    },
    KeySpec {
        key: Key::DataSequenceInOrder,
        name: "DataSequenceInOrder",
        rule: KeyRule::BooleanOr,
        relevant_in_discovery: false,
    },
    KeySpec {
        key: Key::ErrorRecoveryLevel,
        name: "ErrorRecoveryLevel",
        rule: KeyRule::NumericalMin { min: 0, max: 2 },
        relevant_in_discovery: true,
    },
];

/// Range of MaxRecvDataSegmentLength (section 13.12), a declarative key.
const MRDSL_RANGE: (u32, u32) = (512, MAX_LENGTH_KEY);

impl Key {
    fn spec(self) -> &'static KeySpec {
        // Every Key has exactly one row; the fallback row is never reached.
        KEYS.iter().find(|s| s.key == self).unwrap_or(&KEYS[0])
    }

    fn name(self) -> &'static str {
        self.spec().name
    }

    fn rule(self) -> KeyRule {
        self.spec().rule
    }

    fn from_name(name: &str) -> Option<Key> {
        KEYS.iter().find(|s| s.name == name).map(|s| s.key)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// The rule of an operational key negotiated by [`Negotiation`], `None` for any other key.
pub fn key_rule(key: &str) -> Option<KeyRule> {
    Key::from_name(key).map(Key::rule)
}

/// Keys of the login and security phases (section 12, 13.6 to 13.9, 13.13 and 13.21 to
/// 13.24 for session identification) that the session handles itself.
const SESSION_KEYS: [&str; 9] = [
    "AuthMethod",
    "InitiatorName",
    "TargetName",
    "SessionType",
    "TargetAlias",
    "InitiatorAlias",
    "TargetAddress",
    "TargetPortalGroupTag",
    "SendTargets",
];

/// Prefixes of the authentication method keys (section 12.1).
const SECURITY_KEY_PREFIXES: [&str; 4] = ["CHAP_", "SRP_", "KRB_", "SPKM"];

/// True for every key that [`Negotiation::handle_peer_pairs`] should be given: the
/// operational keys, the obsolete and extension keys it answers for, and unknown keys
/// (which it answers `NotUnderstood`). False for the security and session keys
/// (AuthMethod, CHAP_*, SRP_*, KRB_*, SPKM*, InitiatorName, TargetName, SessionType,
/// TargetAlias, InitiatorAlias, TargetAddress, TargetPortalGroupTag, SendTargets), which
/// the caller handles. Callers pass only operational keys to a [`Negotiation`].
pub fn is_operational_key(key: &str) -> bool {
    !SESSION_KEYS.contains(&key) && !SECURITY_KEY_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// A digest a side can use (sections 13.1 and 13.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestChoice {
    None,
    Crc32c,
}

impl DigestChoice {
    /// The value as written in text.
    pub fn as_str(self) -> &'static str {
        match self {
            DigestChoice::None => "None",
            DigestChoice::Crc32c => "CRC32C",
        }
    }

    /// Parses one value of a digest list; `None` for a digest this stack does not know.
    pub fn parse(value: &str) -> Option<DigestChoice> {
        match value {
            "None" => Some(DigestChoice::None),
            "CRC32C" => Some(DigestChoice::Crc32c),
            _ => None,
        }
    }
}

/// The negotiated operational parameters of a session and connection (section 13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationalParams {
    /// CRC32C header digests in use (HeaderDigest).
    pub header_digest: bool,
    /// CRC32C data digests in use (DataDigest).
    pub data_digest: bool,
    pub max_connections: u16,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    /// The most a PDU from target to initiator may carry: the initiator's declared
    /// MaxRecvDataSegmentLength.
    pub initiator_max_recv_data_segment_length: u32,
    /// The most a PDU from initiator to target may carry: the target's declared
    /// MaxRecvDataSegmentLength.
    pub target_max_recv_data_segment_length: u32,
    pub max_burst_length: u32,
    /// Never more than `max_burst_length` in [`Negotiation::params`].
    pub first_burst_length: u32,
    pub default_time2wait: u16,
    pub default_time2retain: u16,
    pub max_outstanding_r2t: u16,
    pub data_pdu_in_order: bool,
    pub data_sequence_in_order: bool,
    pub error_recovery_level: u8,
}

impl Default for OperationalParams {
    /// The defaults of section 13, in force for every key not negotiated.
    fn default() -> Self {
        OperationalParams {
            header_digest: false,
            data_digest: false,
            max_connections: 1,
            initial_r2t: true,
            immediate_data: true,
            initiator_max_recv_data_segment_length: 8192,
            target_max_recv_data_segment_length: 8192,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
        }
    }
}

/// What this side wants. Digest lists are in preference order and also name what this side
/// accepts when the peer proposes; an empty list means `[None]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationalOffer {
    pub header_digests: Vec<DigestChoice>,
    pub data_digests: Vec<DigestChoice>,
    pub max_connections: u16,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    /// The most this side can receive in one PDU (declared, not negotiated).
    pub max_recv_data_segment_length: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub default_time2wait: u16,
    pub default_time2retain: u16,
    pub max_outstanding_r2t: u16,
    pub data_pdu_in_order: bool,
    pub data_sequence_in_order: bool,
    pub error_recovery_level: u8,
}

impl Default for OperationalOffer {
    /// The defaults of section 13, with no digests.
    fn default() -> Self {
        let d = OperationalParams::default();
        OperationalOffer {
            header_digests: vec![DigestChoice::None],
            data_digests: vec![DigestChoice::None],
            max_connections: d.max_connections,
            initial_r2t: d.initial_r2t,
            immediate_data: d.immediate_data,
            max_recv_data_segment_length: d.initiator_max_recv_data_segment_length,
            max_burst_length: d.max_burst_length,
            first_burst_length: d.first_burst_length,
            default_time2wait: d.default_time2wait,
            default_time2retain: d.default_time2retain,
            max_outstanding_r2t: d.max_outstanding_r2t,
            data_pdu_in_order: d.data_pdu_in_order,
            data_sequence_in_order: d.data_sequence_in_order,
            error_recovery_level: d.error_recovery_level,
        }
    }
}

/// Which side of the login this negotiation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Initiator,
    Target,
}

/// The kind of session: in a discovery session most operational keys are irrelevant
/// (section 13, "Irrelevant when: SessionType=Discovery").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionKind {
    #[default]
    Normal,
    Discovery,
}

/// A negotiation failure (section 6.2): the peer broke a rule. The login fails.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NegotiationError {
    /// A value that is not valid for the key (not a number, not `Yes`/`No`, ...).
    #[error("{key}={value}: not a valid value for this key")]
    InvalidValue { key: String, value: String },
    /// A numerical value outside the range of section 13.
    #[error("{key}={value}: outside the allowed range {min}..={max}")]
    OutOfRange {
        key: String,
        value: String,
        min: u32,
        max: u32,
    },
    /// An answer the rule does not admit for what this side offered.
    #[error("{key}={answer}: not an admissible answer to our offer {key}={offered}")]
    AnswerNotAdmissible {
        key: String,
        offered: String,
        answer: String,
    },
    /// The peer proposed or declared a key that was already negotiated.
    #[error("{key}={value}: key negotiated more than once")]
    Renegotiated { key: String, value: String },
}

/// Values of a key as held internally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Bool(bool),
    Number(u32),
}

/// Answers that mean "no change" (section 6.2): the key keeps its default.
fn is_reserved_answer(value: &str) -> bool {
    matches!(value, "Reject" | "Irrelevant" | "NotUnderstood")
}

/// Longest piece of a peer value kept in an error.
const ERROR_VALUE_LEN: usize = 64;

fn cut(value: &str) -> String {
    let mut end = value.len().min(ERROR_VALUE_LEN);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_owned()
}

/// Section 6.1 numerical values: a decimal constant or a hex constant (`0x...`).
fn parse_number(value: &str) -> Option<u64> {
    let (digits, radix) = match value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        Some(hex) => (hex, 16),
        None => (value, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "Yes" => Some(true),
        "No" => Some(false),
        _ => None,
    }
}

fn bool_str(value: bool) -> &'static str {
    if value {
        "Yes"
    } else {
        "No"
    }
}

/// A proposal of ours waiting for the peer's answer.
#[derive(Debug, Clone)]
struct Pending {
    key: Key,
    offered: String,
    /// The rule fixes the result whatever the peer says (AND with No, OR with Yes), so the
    /// peer may leave it unanswered (section 6.2.2).
    answer_optional: bool,
}

/// One side's negotiation of the operational keys (RFC 7143 section 6.2).
///
/// Use: send [`initial_proposals`](Self::initial_proposals) with the other login keys, feed
/// every operational pair received to [`handle_peer_pairs`](Self::handle_peer_pairs) and
/// send back what it returns, until [`is_complete`](Self::is_complete) and nothing is left
/// to send; then read [`params`](Self::params). Keys for which
/// [`is_operational_key`] is false must not be passed in.
#[derive(Debug, Clone)]
pub struct Negotiation {
    role: Role,
    kind: SessionKind,
    offer: OperationalOffer,
    params: OperationalParams,
    /// Our proposals not answered yet.
    pending: Vec<Pending>,
    /// Keys whose negotiation is over (answered, replied to, or refused), as `Key::bit`s.
    settled: u16,
    declared_ours: bool,
    peer_declared: bool,
}

impl Negotiation {
    /// A negotiation for a normal session.
    pub fn new(role: Role, offer: OperationalOffer) -> Self {
        Self::with_session_kind(role, offer, SessionKind::Normal)
    }

    /// A negotiation for the given kind of session. In a discovery session the keys that
    /// section 13 marks irrelevant are neither proposed nor accepted (answered `Irrelevant`).
    pub fn with_session_kind(role: Role, offer: OperationalOffer, kind: SessionKind) -> Self {
        Negotiation {
            role,
            kind,
            offer,
            params: OperationalParams::default(),
            pending: Vec::new(),
            settled: 0,
            declared_ours: false,
            peer_declared: false,
        }
    }

    /// The keys this side originates, in the order of section 13. Keys already negotiated
    /// or already proposed are left out, so a second call returns only what is new.
    ///
    /// An initiator proposes every relevant operational key, as common initiators do, so
    /// the target states its values. A target proposes only the keys whose wanted value
    /// differs from the default. Both declare MaxRecvDataSegmentLength.
    pub fn initial_proposals(&mut self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for spec in &KEYS {
            let key = spec.key;
            if !self.is_relevant(key) || self.is_settled(key) || self.is_pending(key) {
                continue;
            }
            if key == Key::MaxRecvDataSegmentLength {
                if !self.declared_ours {
                    out.push(self.declare_ours());
                }
                continue;
            }
            let ours = self.our_outcome(key);
            if self.role == Role::Target && ours == default_outcome(key) {
                continue;
            }
            let offered = self.our_value_text(key);
            let answer_optional = match (key.rule(), ours) {
                (KeyRule::BooleanAnd, Outcome::Bool(false))
                | (KeyRule::BooleanOr, Outcome::Bool(true)) => {
                    // The result is fixed now; record it.
                    set_outcome(&mut self.params, key, ours);
                    true
                }
                _ => false,
            };
            self.pending.push(Pending {
                key,
                offered: offered.clone(),
                answer_optional,
            });
            out.push((key.name().to_owned(), offered));
        }
        out
    }

    /// Handles the operational pairs of one text from the peer: answers to our proposals
    /// are checked and recorded, the peer's proposals are answered by the rule, the peer's
    /// MaxRecvDataSegmentLength is recorded (and ours declared if not yet), unknown keys
    /// are answered `NotUnderstood`. Returns the pairs to send back.
    pub fn handle_peer_pairs(
        &mut self,
        pairs: &[(String, String)],
    ) -> Result<Vec<(String, String)>, NegotiationError> {
        let mut replies = Vec::new();
        for (name, value) in pairs {
            let Some(key) = Key::from_name(name) else {
                if let Some(reply) = self.answer_other_key(name, value) {
                    replies.push((name.clone(), reply));
                }
                continue;
            };
            if key == Key::MaxRecvDataSegmentLength {
                self.handle_peer_declaration(value, &mut replies)?;
            } else if let Some(index) = self.pending.iter().position(|p| p.key == key) {
                let pending = self.pending.remove(index);
                self.settled |= key.bit();
                self.handle_answer(&pending, value)?;
            } else if self.is_settled(key) {
                return Err(NegotiationError::Renegotiated {
                    key: name.clone(),
                    value: cut(value),
                });
            } else if is_reserved_answer(value) {
                // An answer to a proposal we never made: nothing to do, and answering it
                // could loop.
                tracing::warn!(key = %name, %value, "peer answered a key we did not propose; ignored");
            } else {
                self.settled |= key.bit();
                let reply = self.answer_proposal(key, value);
                replies.push((name.clone(), reply));
            }
        }
        Ok(replies)
    }

    /// How many of our proposals still need an answer (optional answers not counted).
    pub fn pending_answers(&self) -> usize {
        self.pending.iter().filter(|p| !p.answer_optional).count()
    }

    /// True when every proposal of ours that needs an answer has one.
    pub fn is_complete(&self) -> bool {
        self.pending_answers() == 0
    }

    /// The parameters in force: negotiated results, defaults for keys not negotiated, the
    /// two declared receive lengths, and FirstBurstLength no larger than MaxBurstLength.
    pub fn params(&self) -> OperationalParams {
        let mut params = self.params.clone();
        params.first_burst_length = params.first_burst_length.min(params.max_burst_length);
        params
    }

    /// The role given at creation.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The session kind given at creation.
    pub fn session_kind(&self) -> SessionKind {
        self.kind
    }

    fn is_relevant(&self, key: Key) -> bool {
        self.kind == SessionKind::Normal || key.spec().relevant_in_discovery
    }

    fn is_settled(&self, key: Key) -> bool {
        self.settled & key.bit() != 0
    }

    fn is_pending(&self, key: Key) -> bool {
        self.pending.iter().any(|p| p.key == key)
    }

    /// Declares our MaxRecvDataSegmentLength and starts enforcing it as our limit.
    fn declare_ours(&mut self) -> (String, String) {
        let ours = self
            .offer
            .max_recv_data_segment_length
            .clamp(MRDSL_RANGE.0, MRDSL_RANGE.1);
        match self.role {
            Role::Initiator => self.params.initiator_max_recv_data_segment_length = ours,
            Role::Target => self.params.target_max_recv_data_segment_length = ours,
        }
        self.declared_ours = true;
        (
            Key::MaxRecvDataSegmentLength.name().to_owned(),
            ours.to_string(),
        )
    }

    fn handle_peer_declaration(
        &mut self,
        value: &str,
        replies: &mut Vec<(String, String)>,
    ) -> Result<(), NegotiationError> {
        let name = Key::MaxRecvDataSegmentLength.name();
        if self.peer_declared {
            return Err(NegotiationError::Renegotiated {
                key: name.to_owned(),
                value: cut(value),
            });
        }
        let length = checked_number(Key::MaxRecvDataSegmentLength, value, MRDSL_RANGE)?;
        match self.role {
            Role::Initiator => self.params.target_max_recv_data_segment_length = length,
            Role::Target => self.params.initiator_max_recv_data_segment_length = length,
        }
        self.peer_declared = true;
        if !self.declared_ours && self.is_relevant(Key::MaxRecvDataSegmentLength) {
            replies.push(self.declare_ours());
        }
        Ok(())
    }

    /// Checks the peer's answer to one of our proposals and records the result.
    fn handle_answer(&mut self, pending: &Pending, answer: &str) -> Result<(), NegotiationError> {
        let key = pending.key;
        if is_reserved_answer(answer) {
            tracing::warn!(key = key.name(), offered = %pending.offered, %answer, "proposal not accepted; default kept");
            set_outcome(&mut self.params, key, default_outcome(key));
            return Ok(());
        }
        let not_admissible = || NegotiationError::AnswerNotAdmissible {
            key: key.name().to_owned(),
            offered: pending.offered.clone(),
            answer: cut(answer),
        };
        let outcome = match (key.rule(), self.our_outcome(key)) {
            (KeyRule::List, _) => {
                // One value, and one of those we offered.
                let choice = DigestChoice::parse(answer).ok_or_else(not_admissible)?;
                if !self.digest_list(key).contains(&choice) {
                    return Err(not_admissible());
                }
                Outcome::Bool(choice == DigestChoice::Crc32c)
            }
            (KeyRule::NumericalMin { min, max }, Outcome::Number(ours)) => {
                let result = checked_number(key, answer, (min, max))?;
                if result > ours {
                    return Err(not_admissible());
                }
                Outcome::Number(result)
            }
            (KeyRule::NumericalMax { min, max }, Outcome::Number(ours)) => {
                let result = checked_number(key, answer, (min, max))?;
                if result < ours {
                    return Err(not_admissible());
                }
                Outcome::Number(result)
            }
            (KeyRule::BooleanAnd, Outcome::Bool(ours)) => {
                let result = checked_bool(key, answer)?;
                if result && !ours {
                    return Err(not_admissible());
                }
                Outcome::Bool(result)
            }
            (KeyRule::BooleanOr, Outcome::Bool(ours)) => {
                let result = checked_bool(key, answer)?;
                if ours && !result {
                    return Err(not_admissible());
                }
                Outcome::Bool(result)
            }
            // Declarative keys are never pending, and the table pairs every rule with its
            // kind of value.
            _ => return Err(not_admissible()),
        };
        set_outcome(&mut self.params, key, outcome);
        Ok(())
    }

    /// Our answer to the peer's proposal of `key`, recording the result. Malformed or
    /// out-of-range proposals are answered `Reject` (section 6.2.2) and keep the default.
    fn answer_proposal(&mut self, key: Key, value: &str) -> String {
        if !self.is_relevant(key) {
            return "Irrelevant".to_owned();
        }
        let result = match (key.rule(), self.our_outcome(key)) {
            (KeyRule::List, _) => {
                // Unknown values in the peer's list are skipped (section 6.2.1); the list is
                // bounded by the text limits.
                let accepted = self.digest_list(key);
                value
                    .split(',')
                    .filter_map(DigestChoice::parse)
                    .find(|c| accepted.contains(c))
                    .map(|choice| {
                        (
                            Outcome::Bool(choice == DigestChoice::Crc32c),
                            choice.as_str().to_owned(),
                        )
                    })
            }
            (KeyRule::NumericalMin { min, max }, Outcome::Number(ours)) => {
                checked_number(key, value, (min, max))
                    .ok()
                    .map(|theirs| theirs.min(ours))
                    .map(|r| (Outcome::Number(r), r.to_string()))
            }
            (KeyRule::NumericalMax { min, max }, Outcome::Number(ours)) => {
                checked_number(key, value, (min, max))
                    .ok()
                    .map(|theirs| theirs.max(ours))
                    .map(|r| (Outcome::Number(r), r.to_string()))
            }
            (KeyRule::BooleanAnd, Outcome::Bool(ours)) => parse_bool(value)
                .map(|theirs| theirs && ours)
                .map(|r| (Outcome::Bool(r), bool_str(r).to_owned())),
            (KeyRule::BooleanOr, Outcome::Bool(ours)) => parse_bool(value)
                .map(|theirs| theirs || ours)
                .map(|r| (Outcome::Bool(r), bool_str(r).to_owned())),
            _ => None,
        };
        match result {
            Some((outcome, reply)) => {
                set_outcome(&mut self.params, key, outcome);
                reply
            }
            None => {
                tracing::warn!(key = key.name(), value = %cut(value), "peer proposal not admissible; answered Reject");
                "Reject".to_owned()
            }
        }
    }

    /// Answers for keys outside the table: the RFC 7143 extension key TaskReporting, the
    /// marker keys RFC 3720 defined and RFC 7143 obsoleted, and unknown keys. `None` when
    /// nothing must be sent.
    fn answer_other_key(&self, name: &str, value: &str) -> Option<String> {
        if is_reserved_answer(value) {
            tracing::warn!(key = %name, %value, "peer answered a key we did not propose; ignored");
            return None;
        }
        let reply = match name {
            // Section 13.23: only the RFC 3720 task reporting semantics are implemented.
            "TaskReporting" => {
                if value.split(',').any(|v| v == "RFC3720") {
                    "RFC3720"
                } else {
                    "Reject"
                }
            }
            // Markers are not supported: Boolean AND with No, and their intervals are then
            // irrelevant (RFC 3720 sections 12.17 to 12.20).
            "IFMarker" | "OFMarker" => "No",
            "IFMarkInt" | "OFMarkInt" => "Irrelevant",
            _ => {
                tracing::info!(key = %name, "unknown key; answered NotUnderstood");
                "NotUnderstood"
            }
        };
        Some(reply.to_owned())
    }

    /// The digest list of our offer for a digest key; an empty list means `[None]`.
    fn digest_list(&self, key: Key) -> &[DigestChoice] {
        let list = match key {
            Key::HeaderDigest => &self.offer.header_digests,
            _ => &self.offer.data_digests,
        };
        if list.is_empty() {
            &[DigestChoice::None]
        } else {
            list
        }
    }

    /// What we want for `key`, clamped into its range so we never send an invalid value.
    fn our_outcome(&self, key: Key) -> Outcome {
        let o = &self.offer;
        let number = |value: u32| match key.rule() {
            KeyRule::NumericalMin { min, max } | KeyRule::NumericalMax { min, max } => {
                Outcome::Number(value.clamp(min, max))
            }
            _ => Outcome::Number(value),
        };
        match key {
            Key::HeaderDigest | Key::DataDigest => {
                Outcome::Bool(self.digest_list(key).first() == Some(&DigestChoice::Crc32c))
            }
            Key::MaxConnections => number(o.max_connections.into()),
            Key::InitialR2t => Outcome::Bool(o.initial_r2t),
            Key::ImmediateData => Outcome::Bool(o.immediate_data),
            Key::MaxRecvDataSegmentLength => Outcome::Number(
                o.max_recv_data_segment_length
                    .clamp(MRDSL_RANGE.0, MRDSL_RANGE.1),
            ),
            Key::MaxBurstLength => number(o.max_burst_length),
            // Section 13.14: FirstBurstLength must not exceed MaxBurstLength.
            Key::FirstBurstLength => number(o.first_burst_length.min(o.max_burst_length)),
            Key::DefaultTime2Wait => number(o.default_time2wait.into()),
            Key::DefaultTime2Retain => number(o.default_time2retain.into()),
            Key::MaxOutstandingR2t => number(o.max_outstanding_r2t.into()),
            Key::DataPduInOrder => Outcome::Bool(o.data_pdu_in_order),
            Key::DataSequenceInOrder => Outcome::Bool(o.data_sequence_in_order),
            Key::ErrorRecoveryLevel => number(o.error_recovery_level.into()),
        }
    }

    /// Our offer for `key` as text.
    fn our_value_text(&self, key: Key) -> String {
        match (key.rule(), self.our_outcome(key)) {
            (KeyRule::List, _) => self
                .digest_list(key)
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(","),
            (_, Outcome::Bool(b)) => bool_str(b).to_owned(),
            (_, Outcome::Number(n)) => n.to_string(),
        }
    }
}

fn checked_number(key: Key, value: &str, (min, max): (u32, u32)) -> Result<u32, NegotiationError> {
    let number = parse_number(value).ok_or_else(|| NegotiationError::InvalidValue {
        key: key.name().to_owned(),
        value: cut(value),
    })?;
    match u32::try_from(number) {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(NegotiationError::OutOfRange {
            key: key.name().to_owned(),
            value: cut(value),
            min,
            max,
        }),
    }
}

fn checked_bool(key: Key, value: &str) -> Result<bool, NegotiationError> {
    parse_bool(value).ok_or_else(|| NegotiationError::InvalidValue {
        key: key.name().to_owned(),
        value: cut(value),
    })
}

fn default_outcome(key: Key) -> Outcome {
    get_outcome(&OperationalParams::default(), key)
}

fn get_outcome(p: &OperationalParams, key: Key) -> Outcome {
    match key {
        Key::HeaderDigest => Outcome::Bool(p.header_digest),
        Key::DataDigest => Outcome::Bool(p.data_digest),
        Key::MaxConnections => Outcome::Number(p.max_connections.into()),
        Key::InitialR2t => Outcome::Bool(p.initial_r2t),
        Key::ImmediateData => Outcome::Bool(p.immediate_data),
        // Per direction; the default is the same for both.
        Key::MaxRecvDataSegmentLength => Outcome::Number(p.initiator_max_recv_data_segment_length),
        Key::MaxBurstLength => Outcome::Number(p.max_burst_length),
        Key::FirstBurstLength => Outcome::Number(p.first_burst_length),
        Key::DefaultTime2Wait => Outcome::Number(p.default_time2wait.into()),
        Key::DefaultTime2Retain => Outcome::Number(p.default_time2retain.into()),
        Key::MaxOutstandingR2t => Outcome::Number(p.max_outstanding_r2t.into()),
        Key::DataPduInOrder => Outcome::Bool(p.data_pdu_in_order),
        Key::DataSequenceInOrder => Outcome::Bool(p.data_sequence_in_order),
        Key::ErrorRecoveryLevel => Outcome::Number(p.error_recovery_level.into()),
    }
}

/// Stores a result. Numbers were range-checked against the key's range, so the narrowing
/// conversions do not saturate in practice.
fn set_outcome(p: &mut OperationalParams, key: Key, outcome: Outcome) {
    let (flag, number) = match outcome {
        Outcome::Bool(b) => (b, 0),
        Outcome::Number(n) => (false, n),
    };
    let as_u16 = u16::try_from(number).unwrap_or(u16::MAX);
    match key {
        Key::HeaderDigest => p.header_digest = flag,
        Key::DataDigest => p.data_digest = flag,
        Key::MaxConnections => p.max_connections = as_u16,
        Key::InitialR2t => p.initial_r2t = flag,
        Key::ImmediateData => p.immediate_data = flag,
        // Declarations are stored by direction where they are handled.
        Key::MaxRecvDataSegmentLength => {}
        Key::MaxBurstLength => p.max_burst_length = number,
        Key::FirstBurstLength => p.first_burst_length = number,
        Key::DefaultTime2Wait => p.default_time2wait = as_u16,
        Key::DefaultTime2Retain => p.default_time2retain = as_u16,
        Key::MaxOutstandingR2t => p.max_outstanding_r2t = as_u16,
        Key::DataPduInOrder => p.data_pdu_in_order = flag,
        Key::DataSequenceInOrder => p.data_sequence_in_order = flag,
        Key::ErrorRecoveryLevel => p.error_recovery_level = u8::try_from(number).unwrap_or(u8::MAX),
    }
}

#[cfg(test)]
mod tests;
