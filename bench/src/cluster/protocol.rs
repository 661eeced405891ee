//! The controller-agent protocol: framing, messages and the handshake, with no I/O.
//!
//! A frame is a 4-byte big-endian length and that many bytes of one JSON object, the
//! message; its `"type"` names it. Self-describing, so a peer one minor version ahead can
//! add fields (ignored here) without breaking us; a message of a type we do not know is
//! reported as [`ProtocolError::UnknownType`], which the state machines skip.
//!
//! Every frame is bounded: [`HANDSHAKE_FRAME_MAX_BYTES`] until the peer is authenticated
//! (a stranger cannot make us allocate more), [`FRAME_MAX_BYTES`] after. The length is
//! checked from the prefix, before anything is allocated.
//!
//! Handshake: the agent speaks first ([`Message::AgentHello`]: its version range and a
//! random nonce); the controller answers with its range and a proof of the shared token,
//! SHA-256 over a domain string, the nonce and the token (the token itself never crosses
//! the wire, and a proof is good for one nonce only); the agent checks the proof and the
//! versions and answers [`Message::Accepted`] with the version both will speak, or
//! [`Message::Refused`] saying why. Versions: the majors must be equal and the minor
//! ranges overlap; the highest common minor is spoken.
//!
//! After the handshake (see `controller` and `agent` for the order): `Job` → `Armed` (or
//! `Failed`) → `ClockProbe`/`ClockReply` rounds → `Release` → `Started` → `Heartbeat`s →
//! `Results` (or `Failed`); `Abort` from the controller at any time after `Job`.
//!
//! The token authenticates the controller to the agent (an agent runs load only for a
//! controller that knows it); nothing is encrypted and the agent is not authenticated to
//! the controller, so across an untrusted network run it inside a tunnel (ssh, WireGuard).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// This build's protocol: major 1, minors 0 to 0.
pub const PROTOCOL: VersionRange = VersionRange {
    major: 1,
    minor_min: 0,
    minor_max: 0,
};
/// Largest frame before the peer proved the token.
pub const HANDSHAKE_FRAME_MAX_BYTES: usize = 64 * 1024;
/// Largest frame after (a results message carries every job's histograms).
pub const FRAME_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Longest shared token read from a file or the environment.
pub const TOKEN_MAX_BYTES: usize = 4096;
const LENGTH_BYTES: usize = 4;
const PROOF_DOMAIN: &[u8] = b"iscsi-bench cluster token proof v1\0";

/// The versions one side speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRange {
    pub major: u16,
    pub minor_min: u16,
    pub minor_max: u16,
}

/// The version both sides speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub major: u16,
    pub minor: u16,
}

impl std::fmt::Display for VersionRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}-{}.{}",
            self.major, self.minor_min, self.major, self.minor_max
        )
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A job file sent to an agent: its name (for errors) and text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFile {
    pub name: String,
    pub text: String,
}

/// Every message, tagged by `"type"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    AgentHello {
        protocol: VersionRange,
        /// 32 random bytes in hex.
        nonce: String,
        /// The agent's host name, for the report.
        host: String,
    },
    ControllerHello {
        protocol: VersionRange,
        /// Hex SHA-256 proof of the token for the agent's nonce.
        proof: String,
    },
    Accepted {
        version: Version,
    },
    Refused {
        reason: String,
    },
    /// What to run: job files and command-line job options (the host's own after the
    /// shared ones), this host's rank among `size`, the interval of the aligned series.
    Job {
        files: Vec<JobFile>,
        args: Vec<String>,
        rank: u32,
        size: u32,
        interval_ms: u64,
        /// How long the agent waits, armed, for the release before giving up.
        release_timeout_ms: u64,
        /// How often the agent says it is alive while running.
        heartbeat_ms: u64,
    },
    /// Targets opened and every job checked: ready to start.
    Armed {
        jobs: u32,
    },
    ClockProbe {
        seq: u32,
    },
    /// The agent's monotonic clock when it answered probe `seq`, ns.
    ClockReply {
        seq: u32,
        agent_ns: u64,
    },
    /// Start at this instant of the agent's own clock (ns).
    Release {
        start_at_ns: u64,
    },
    /// When the agent actually started, on its own clock (ns).
    Started {
        start_ns: u64,
    },
    /// The agent is running (every `heartbeat_ms`): the controller's sign of life.
    Heartbeat {
        ios: u64,
    },
    /// The agent's JSON document (fio's shape, with portable stats per job) and when its
    /// run ended on its own clock (ns).
    Results {
        document: serde_json::Value,
        end_ns: u64,
        /// When its first job's clock started (0: unknown), after every job set up its
        /// engine and the release: the host's actual start.
        #[serde(default)]
        job_start_ns: u64,
    },
    /// The agent could not go on: at which stage and why.
    Failed {
        stage: String,
        error: String,
    },
    /// The controller asks the agent to stop now and send what it has.
    Abort {
        reason: String,
    },
}

impl Message {
    /// The message's `"type"`, for errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::AgentHello { .. } => "agent_hello",
            Message::ControllerHello { .. } => "controller_hello",
            Message::Accepted { .. } => "accepted",
            Message::Refused { .. } => "refused",
            Message::Job { .. } => "job",
            Message::Armed { .. } => "armed",
            Message::ClockProbe { .. } => "clock_probe",
            Message::ClockReply { .. } => "clock_reply",
            Message::Release { .. } => "release",
            Message::Started { .. } => "started",
            Message::Heartbeat { .. } => "heartbeat",
            Message::Results { .. } => "results",
            Message::Failed { .. } => "failed",
            Message::Abort { .. } => "abort",
        }
    }
}

/// What went wrong with a frame or the handshake.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("a frame of {length} bytes is over the limit of {limit} bytes")]
    FrameTooLarge { length: usize, limit: usize },
    #[error("a frame is not a JSON object with a \"type\": {0}")]
    Malformed(String),
    #[error("a message of unknown type \"{0}\" (a newer peer?)")]
    UnknownType(String),
    #[error("a \"{kind}\" message is malformed: {detail}")]
    BadMessage { kind: String, detail: String },
    #[error("expected {expected}, got a \"{got}\" message")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },
    #[error("no common protocol version: we speak {ours}, the peer {theirs}")]
    Incompatible {
        ours: VersionRange,
        theirs: VersionRange,
    },
    #[error("the controller's token proof is wrong: it was not given this agent's token")]
    Untrusted,
    #[error("the agent refused us: {0}")]
    Refused(String),
}

/// One frame's bytes for `message`.
pub fn encode(message: &Message) -> Vec<u8> {
    // Serializing our own enum into a Vec cannot fail.
    let body = serde_json::to_vec(message).unwrap_or_default();
    let mut frame = Vec::with_capacity(LENGTH_BYTES + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// The body length a frame's prefix declares, checked against `limit`; `None` until the
/// prefix is in.
pub fn frame_length(prefix: &[u8], limit: usize) -> Result<Option<usize>, ProtocolError> {
    let Some(bytes) = prefix.get(..LENGTH_BYTES) else {
        return Ok(None);
    };
    let length = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    if length > limit {
        return Err(ProtocolError::FrameTooLarge { length, limit });
    }
    Ok(Some(length))
}

/// The message of one frame's body.
pub fn decode_body(body: &[u8]) -> Result<Message, ProtocolError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    let kind = value
        .get("type")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| ProtocolError::Malformed("no \"type\" string".into()))?
        .to_string();
    serde_json::from_value(value).map_err(|e| {
        if e.to_string().starts_with("unknown variant") {
            ProtocolError::UnknownType(kind)
        } else {
            ProtocolError::BadMessage {
                kind,
                detail: e.to_string(),
            }
        }
    })
}

/// Frames out of a byte stream: feed what arrives, take whole messages.
#[derive(Debug)]
pub struct FrameReader {
    buffer: Vec<u8>,
    limit: usize,
}

impl FrameReader {
    /// A reader refusing frames over `limit` bytes.
    pub fn new(limit: usize) -> FrameReader {
        FrameReader {
            buffer: Vec::new(),
            limit,
        }
    }

    /// Raises (or lowers) the limit, after the handshake.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole message, `Ok(None)` until one is in. An oversized prefix is an error
    /// as soon as it is in (nothing more is buffered for it by a well-behaved caller).
    pub fn next_message(&mut self) -> Result<Option<Message>, ProtocolError> {
        let Some(length) = frame_length(&self.buffer, self.limit)? else {
            return Ok(None);
        };
        if self.buffer.len() < LENGTH_BYTES + length {
            return Ok(None);
        }
        let message = decode_body(&self.buffer[LENGTH_BYTES..LENGTH_BYTES + length]);
        self.buffer.drain(..LENGTH_BYTES + length);
        message.map(Some)
    }

    /// How many more bytes the frame being read needs (at least 1), for a bounded read.
    pub fn wanted(&self) -> usize {
        match frame_length(&self.buffer, self.limit) {
            Ok(Some(length)) => (LENGTH_BYTES + length)
                .saturating_sub(self.buffer.len())
                .max(1),
            _ => LENGTH_BYTES.saturating_sub(self.buffer.len()).max(1),
        }
    }
}

/// The version both ranges share: equal majors, the highest common minor.
pub fn negotiate(ours: VersionRange, theirs: VersionRange) -> Result<Version, ProtocolError> {
    let low = ours.minor_min.max(theirs.minor_min);
    let high = ours.minor_max.min(theirs.minor_max);
    if ours.major != theirs.major || low > high {
        return Err(ProtocolError::Incompatible { ours, theirs });
    }
    Ok(Version {
        major: ours.major,
        minor: high,
    })
}

/// The proof of `token` for `nonce` (hex SHA-256).
pub fn token_proof(token: &[u8], nonce: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(PROOF_DOMAIN);
    hash.update((nonce.len() as u64).to_be_bytes());
    hash.update(nonce.as_bytes());
    hash.update(token);
    hex(&hash.finalize())
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal in time independent of where they differ (a proof is a secret's function).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The agent's first message.
pub fn agent_hello(nonce: &str, host: &str) -> Message {
    Message::AgentHello {
        protocol: PROTOCOL,
        nonce: nonce.to_string(),
        host: host.to_string(),
    }
}

/// The controller's answer to the agent's hello: its own hello, the version to speak and
/// the agent's host name.
pub fn answer_agent_hello(
    ours: VersionRange,
    hello: &Message,
    token: &[u8],
) -> Result<(Message, Version, String), ProtocolError> {
    let Message::AgentHello {
        protocol,
        nonce,
        host,
    } = hello
    else {
        return Err(ProtocolError::Unexpected {
            expected: "the agent's hello",
            got: hello.kind(),
        });
    };
    let version = negotiate(ours, *protocol)?;
    let answer = Message::ControllerHello {
        protocol: ours,
        proof: token_proof(token, nonce),
    };
    Ok((answer, version, host.clone()))
}

/// The agent's check of the controller's hello: the version to speak, or why the
/// controller is refused (send it [`Message::Refused`] with the error's text).
pub fn check_controller_hello(
    ours: VersionRange,
    hello: &Message,
    nonce: &str,
    token: &[u8],
) -> Result<Version, ProtocolError> {
    let Message::ControllerHello { protocol, proof } = hello else {
        return Err(ProtocolError::Unexpected {
            expected: "the controller's hello",
            got: hello.kind(),
        });
    };
    // The proof first: a stranger learns nothing, not even our versions' fit.
    if !same_bytes(proof.as_bytes(), token_proof(token, nonce).as_bytes()) {
        return Err(ProtocolError::Untrusted);
    }
    negotiate(ours, *protocol)
}

/// The controller's reading of the agent's verdict.
pub fn read_verdict(message: &Message) -> Result<Version, ProtocolError> {
    match message {
        Message::Accepted { version } => Ok(*version),
        Message::Refused { reason } => Err(ProtocolError::Refused(reason.clone())),
        other => Err(ProtocolError::Unexpected {
            expected: "accepted or refused",
            got: other.kind(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn range(major: u16, minor_min: u16, minor_max: u16) -> VersionRange {
        VersionRange {
            major,
            minor_min,
            minor_max,
        }
    }

    #[test]
    fn a_minor_version_apart_still_talks() {
        assert_eq!(
            negotiate(range(1, 0, 0), range(1, 0, 3)),
            Ok(Version { major: 1, minor: 0 })
        );
        assert_eq!(
            negotiate(range(1, 1, 4), range(1, 0, 2)),
            Ok(Version { major: 1, minor: 2 })
        );
        assert!(matches!(
            negotiate(range(1, 0, 0), range(2, 0, 0)),
            Err(ProtocolError::Incompatible { .. })
        ));
        assert!(matches!(
            negotiate(range(1, 3, 4), range(1, 0, 2)),
            Err(ProtocolError::Incompatible { .. })
        ));
    }

    #[test]
    fn the_handshake_accepts_the_token_and_refuses_others() {
        let hello = agent_hello("00ff", "host-a");
        let (answer, version, host) = answer_agent_hello(PROTOCOL, &hello, b"secret").unwrap();
        assert_eq!(host, "host-a");
        assert_eq!(
            check_controller_hello(PROTOCOL, &answer, "00ff", b"secret"),
            Ok(version)
        );
        assert_eq!(
            check_controller_hello(PROTOCOL, &answer, "00ff", b"other"),
            Err(ProtocolError::Untrusted)
        );
        // A proof replayed against another nonce is refused.
        assert_eq!(
            check_controller_hello(PROTOCOL, &answer, "00fe", b"secret"),
            Err(ProtocolError::Untrusted)
        );
        assert!(matches!(
            read_verdict(&Message::Refused { reason: "no".into() }),
            Err(ProtocolError::Refused(r)) if r == "no"
        ));
    }

    #[test]
    fn a_newer_peer_may_add_fields_and_types() {
        let body = br#"{"type":"armed","jobs":2,"added_in_1_1":true}"#;
        assert_eq!(decode_body(body), Ok(Message::Armed { jobs: 2 }));
        assert_eq!(
            decode_body(br#"{"type":"telemetry","x":1}"#),
            Err(ProtocolError::UnknownType("telemetry".into()))
        );
        assert!(matches!(
            decode_body(br#"{"type":"armed"}"#),
            Err(ProtocolError::BadMessage { .. })
        ));
        assert!(matches!(
            decode_body(b"[1]"),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn an_oversized_frame_is_refused_from_its_prefix() {
        let mut reader = FrameReader::new(HANDSHAKE_FRAME_MAX_BYTES);
        reader.push(&(HANDSHAKE_FRAME_MAX_BYTES as u32 + 1).to_be_bytes());
        assert!(matches!(
            reader.next_message(),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
    }

    fn message_strategy() -> impl Strategy<Value = Message> {
        let text = "[ -~]{0,40}";
        prop_oneof![
            (text, text).prop_map(|(n, h)| agent_hello(&n, &h)),
            (text, any::<u16>()).prop_map(|(proof, minor)| Message::ControllerHello {
                protocol: range(1, 0, minor),
                proof
            }),
            (any::<u16>(), any::<u16>()).prop_map(|(major, minor)| Message::Accepted {
                version: Version { major, minor }
            }),
            text.prop_map(|reason| Message::Refused { reason }),
            (
                proptest::collection::vec((text, ".{0,200}"), 0..3),
                proptest::collection::vec(text, 0..4),
                any::<u32>(),
                any::<u32>(),
                any::<u64>()
            )
                .prop_map(|(files, args, rank, size, interval_ms)| Message::Job {
                    release_timeout_ms: interval_ms / 3,
                    heartbeat_ms: interval_ms / 7,
                    files: files
                        .into_iter()
                        .map(|(name, text)| JobFile { name, text })
                        .collect(),
                    args,
                    rank,
                    size,
                    interval_ms
                }),
            any::<u32>().prop_map(|jobs| Message::Armed { jobs }),
            any::<u32>().prop_map(|seq| Message::ClockProbe { seq }),
            (any::<u32>(), any::<u64>())
                .prop_map(|(seq, agent_ns)| Message::ClockReply { seq, agent_ns }),
            any::<u64>().prop_map(|start_at_ns| Message::Release { start_at_ns }),
            any::<u64>().prop_map(|start_ns| Message::Started { start_ns }),
            any::<u64>().prop_map(|ios| Message::Heartbeat { ios }),
            (text, any::<u64>()).prop_map(|(t, end_ns)| Message::Results {
                document: serde_json::json!({ "jobs": [t] }),
                end_ns,
                job_start_ns: end_ns / 2,
            }),
            (text, text).prop_map(|(stage, error)| Message::Failed { stage, error }),
            text.prop_map(|reason| Message::Abort { reason }),
        ]
    }

    proptest! {
        /// Any sequence of messages, cut into any pieces, comes out whole and in order.
        #[test]
        fn frames_round_trip_through_any_split(
            messages in proptest::collection::vec(message_strategy(), 1..8),
            cuts in proptest::collection::vec(1usize..50, 0..40),
        ) {
            let stream: Vec<u8> = messages.iter().flat_map(encode).collect();
            let mut reader = FrameReader::new(FRAME_MAX_BYTES);
            let mut out = Vec::new();
            let mut at = 0;
            let mut cuts = cuts.into_iter();
            while at < stream.len() {
                let step = cuts.next().unwrap_or(stream.len()).min(stream.len() - at);
                reader.push(&stream[at..at + step]);
                at += step;
                while let Some(message) = reader.next_message().unwrap() {
                    out.push(message);
                }
            }
            prop_assert_eq!(out, messages);
        }

        #[test]
        fn arbitrary_bytes_give_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut reader = FrameReader::new(HANDSHAKE_FRAME_MAX_BYTES);
            reader.push(&bytes);
            for _ in 0..8 {
                match reader.next_message() {
                    Ok(Some(_)) | Err(ProtocolError::UnknownType(_) | ProtocolError::BadMessage { .. } | ProtocolError::Malformed(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
