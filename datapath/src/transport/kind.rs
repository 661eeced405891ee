//! Which path carries a session's commands (DESIGN.md, "The path of one I/O"): the one
//! spelling of "software, dependent or independent" that shards, adapters, the offload
//! discovery, `iscsi-bench`'s `transport=`, `iscsi-ctl --transport` and the tests use.

use std::fmt;
use std::str::FromStr;

/// The three transports of the data path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TransportKind {
    /// Our session over kernel TCP through io_uring.
    #[default]
    Software,
    /// A dependent HNIC (bnx2i, qedi, cxgb4i): our session; the adapter frames, digests,
    /// places Data-In and carries TCP.
    Dependent,
    /// An independent HNIC (qla4xxx): the adapter owns login, the session and TCP; the host
    /// hands it SCSI commands.
    Independent,
}

impl TransportKind {
    /// Every kind, in the order tools list them.
    pub const ALL: [TransportKind; 3] = [
        TransportKind::Software,
        TransportKind::Dependent,
        TransportKind::Independent,
    ];

    /// `software`, `dependent` or `independent`: the word options take and reports print.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Software => "software",
            TransportKind::Dependent => "dependent",
            TransportKind::Independent => "independent",
        }
    }

    /// True for the two offload adapter kinds.
    pub fn is_adapter(self) -> bool {
        self != TransportKind::Software
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A word that names no transport.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown transport {0:?} (software, dependent or independent)")]
pub struct UnknownTransport(pub String);

impl FromStr for TransportKind {
    type Err = UnknownTransport;

    fn from_str(word: &str) -> Result<TransportKind, UnknownTransport> {
        TransportKind::ALL
            .into_iter()
            .find(|kind| kind.name() == word)
            .ok_or_else(|| UnknownTransport(word.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_word_parses_back_to_its_kind_and_others_are_refused() {
        for kind in TransportKind::ALL {
            assert_eq!(kind.to_string().parse::<TransportKind>(), Ok(kind));
        }
        assert_eq!(
            "Software".parse::<TransportKind>(),
            Err(UnknownTransport("Software".into()))
        );
        assert!(!TransportKind::Software.is_adapter());
        assert!(TransportKind::Independent.is_adapter());
    }
}
