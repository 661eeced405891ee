//! The resumable PDU receiver (RFC 7143 section 11.1 layout; SPDK's `iscsi_read_pdu` is the
//! model): header first (BHS, AHS, header digest), then the data segment where the session
//! says (a Data-In it can place goes straight into the command's buffer, anything else into
//! one staging buffer), then padding and data digest. It takes bytes in pieces of any size
//! and resumes where the last piece ended; it does no I/O and allocates nothing past the
//! negotiated MaxRecvDataSegmentLength.

use crate::pdu::{self, digest, Digests, Frame, Header, Limits, PduError, BHS_LEN};

/// Largest header the receiver holds: BHS, the largest AHS [`Limits`] allows by default
/// (the field itself allows 1020 bytes), header digest.
const HEADER_MAX: usize = BHS_LEN + 1024 + digest::DIGEST_LEN;

/// What a receiver delivers to, and asks where payload goes: the session, or a test double.
pub trait PduSink {
    type Error;
    /// The digests in force for the PDU that starts now (they switch on after login).
    fn digests(&self) -> Digests;
    /// The receive limits in force for the PDU that starts now.
    fn limits(&self) -> Limits;
    /// Where the `data_len` payload bytes of this header belong, if they can be placed.
    /// Asked again for each piece of the payload, so it must give the same slice for the
    /// same header until that PDU is delivered (`Session::data_in_destination` does).
    fn destination(&mut self, header: &Header, data_len: u32) -> Option<&mut [u8]>;
    /// A PDU whose `data_len` payload bytes were placed in [`PduSink::destination`].
    fn handle_placed(&mut self, header: Header, data_len: u32) -> Result<(), Self::Error>;
    /// A PDU with its (staged) payload.
    fn handle_pdu(&mut self, header: Header, data: &[u8]) -> Result<(), Self::Error>;
}

/// Why receiving stopped. After either, the byte stream is not to be trusted: close it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiveError<E> {
    #[error("malformed PDU: {0}")]
    Pdu(#[from] PduError),
    #[error(transparent)]
    Sink(E),
}

/// Counters of one receiver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiveStats {
    pub pdus: u64,
    /// Payload bytes that reached their placement straight from the wire
    /// ([`PduReceiver::placement_spare`]): never copied.
    pub bytes_placed: u64,
    /// Payload bytes copied into their placement from a piece handed to
    /// [`PduReceiver::handle_bytes`] (the caller received them into its own buffer).
    pub bytes_copied_to_placement: u64,
    /// Payload bytes of PDUs that could not be placed, copied into the staging buffer.
    pub bytes_staged: u64,
}

/// Where in the PDU the next byte belongs.
#[derive(Debug)]
enum Phase {
    /// BHS, AHS and header digest, into `PduReceiver::header`; `frame` once the BHS is in.
    Header { have: usize, frame: Option<Frame> },
    /// The data segment: `done` of `frame.data_len` bytes in; `crc` runs over them when a
    /// data digest follows.
    Payload {
        header: Header,
        frame: Frame,
        placed: bool,
        done: usize,
        crc: u32,
    },
    /// Padding then data digest: `have` of them in `trailer`.
    Trailer {
        header: Header,
        frame: Frame,
        placed: bool,
        crc: u32,
        have: usize,
        trailer: [u8; 7],
    },
    /// A fault was found: the stream ends here.
    Failed(PduError),
}

/// The resumable receiver of one connection. Feed it with [`PduReceiver::handle_bytes`]
/// (bytes the caller received into its own buffer) or, while a payload is being placed,
/// receive into [`PduReceiver::placement_spare`] and report with
/// [`PduReceiver::handle_placed_bytes`] (no copy).
pub struct PduReceiver {
    phase: Phase,
    header: Box<[u8; HEADER_MAX]>,
    staging: Vec<u8>,
    stats: ReceiveStats,
}

impl Default for PduReceiver {
    fn default() -> Self {
        PduReceiver::new()
    }
}

impl std::fmt::Debug for PduReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PduReceiver")
            .field("phase", &self.phase)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl PduReceiver {
    pub fn new() -> PduReceiver {
        PduReceiver {
            phase: Phase::Header {
                have: 0,
                frame: None,
            },
            header: Box::new([0; HEADER_MAX]),
            staging: Vec::new(),
            stats: ReceiveStats::default(),
        }
    }

    pub fn stats(&self) -> ReceiveStats {
        self.stats
    }

    /// Whether the receiver is between PDUs (no partial PDU held).
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Header { have: 0, .. })
    }

    /// Bytes the receiver needs before it can make its next decision: the rest of the BHS
    /// (then of the AHS and header digest), of a payload, or of its trailer. A caller that
    /// must not read past a header (so that the payload after it can be placed) receives
    /// exactly this many.
    pub fn bytes_wanted(&self) -> usize {
        match &self.phase {
            Phase::Header { have, frame } => frame.map_or(BHS_LEN, |f| f.header_len()) - have,
            Phase::Payload { frame, done, .. } => frame.data_len - done,
            Phase::Trailer { frame, have, .. } => frame.pad_len + frame.data_digest_len - have,
            Phase::Failed(_) => 0,
        }
    }

    /// While a payload is being received: the padding and data digest that follow it.
    pub fn trailer_after_payload(&self) -> usize {
        match &self.phase {
            Phase::Payload { frame, .. } => frame.pad_len + frame.data_digest_len,
            _ => 0,
        }
    }

    /// Whether the receiver waits for a payload's padding or data digest.
    pub fn in_trailer(&self) -> bool {
        matches!(self.phase, Phase::Trailer { .. })
    }

    /// Takes in `bytes` received from the peer (any piece of the stream), delivering each
    /// PDU to `sink` as it completes. All of `bytes` is consumed unless an error is returned.
    pub fn handle_bytes<S: PduSink>(
        &mut self,
        sink: &mut S,
        mut bytes: &[u8],
    ) -> Result<(), ReceiveError<S::Error>> {
        // Bounded: each round consumes at least one byte, or delivers a PDU whose header
        // took at least a BHS of bytes, or returns.
        while !bytes.is_empty() || self.deliverable() {
            let taken = self.step(sink, bytes)?;
            bytes = &bytes[taken..];
        }
        Ok(())
    }

    /// While the payload of a placeable Data-In is being received: the part of its
    /// placement still to fill. Receive into it and call
    /// [`PduReceiver::handle_placed_bytes`] with the count.
    pub fn placement_spare<'s, S: PduSink>(&self, sink: &'s mut S) -> Option<&'s mut [u8]> {
        let (header, data_len, done) = self.placing()?;
        sink.destination(header, data_len)?.get_mut(done..)
    }

    /// The payload being placed, if one is: its header, length and the bytes already in.
    pub fn placing(&self) -> Option<(&Header, u32, usize)> {
        match &self.phase {
            Phase::Payload {
                header,
                frame,
                placed: true,
                done,
                ..
            } => Some((header, frame.data_len as u32, *done)),
            _ => None,
        }
    }

    /// `n` bytes were received into [`PduReceiver::placement_spare`].
    pub fn handle_placed_bytes<S: PduSink>(
        &mut self,
        sink: &mut S,
        n: usize,
    ) -> Result<(), ReceiveError<S::Error>> {
        let Phase::Payload {
            header,
            frame,
            placed: true,
            done,
            crc,
        } = &mut self.phase
        else {
            assert!(n == 0, "placed bytes reported with no placement open");
            return Ok(());
        };
        assert!(*done + n <= frame.data_len, "more bytes placed than asked");
        if frame.data_digest_len > 0 {
            if let Some(dest) = sink.destination(header, frame.data_len as u32) {
                *crc = digest::crc32c_append(*crc, &dest[*done..*done + n]);
            }
        }
        *done += n;
        self.stats.bytes_placed += n as u64;
        // A payload that ends here moves on to its trailer (or delivery).
        self.handle_bytes(sink, &[])
    }

    /// Whether the current phase can move on without more input (a PDU with nothing
    /// left to receive).
    fn deliverable(&self) -> bool {
        match &self.phase {
            Phase::Payload { frame, done, .. } => *done == frame.data_len,
            Phase::Trailer { frame, have, .. } => *have == frame.pad_len + frame.data_digest_len,
            // The BHS is in and says there is nothing more to the header.
            Phase::Header { have, frame } => frame.is_some_and(|f| *have == f.header_len()),
            Phase::Failed(_) => false,
        }
    }

    /// One move of the machine; returns the bytes of `input` taken.
    fn step<S: PduSink>(
        &mut self,
        sink: &mut S,
        input: &[u8],
    ) -> Result<usize, ReceiveError<S::Error>> {
        match &mut self.phase {
            Phase::Failed(e) => Err(ReceiveError::Pdu(e.clone())),
            Phase::Header { have, frame } => {
                let want = frame.map_or(BHS_LEN, |f| f.header_len());
                let take = (want - *have).min(input.len());
                self.header[*have..*have + take].copy_from_slice(&input[..take]);
                *have += take;
                if *have < want {
                    return Ok(take);
                }
                match frame {
                    None => {
                        let f = self.check(pdu::frame(
                            &self.header[..BHS_LEN],
                            sink.digests(),
                            &clamp(sink.limits()),
                        ))?;
                        if let Phase::Header { frame, .. } = &mut self.phase {
                            *frame = Some(f);
                        }
                    }
                    Some(f) => {
                        let f = *f;
                        let header =
                            self.check(pdu::decode_header(&self.header[..f.header_len()], &f))?;
                        self.start_payload(sink, header, f);
                    }
                }
                Ok(take)
            }
            Phase::Payload {
                header,
                frame,
                placed,
                done,
                crc,
            } => {
                let take = (frame.data_len - *done).min(input.len());
                let piece = &input[..take];
                if *placed {
                    if let Some(dest) = sink.destination(header, frame.data_len as u32) {
                        dest[*done..*done + take].copy_from_slice(piece);
                    }
                    self.stats.bytes_copied_to_placement += take as u64;
                } else {
                    self.staging.extend_from_slice(piece);
                    self.stats.bytes_staged += take as u64;
                }
                if frame.data_digest_len > 0 {
                    *crc = digest::crc32c_append(*crc, piece);
                }
                *done += take;
                if *done == frame.data_len {
                    let Phase::Payload {
                        header,
                        frame,
                        placed,
                        crc,
                        ..
                    } = std::mem::replace(&mut self.phase, idle())
                    else {
                        unreachable!("in the payload phase");
                    };
                    self.phase = Phase::Trailer {
                        header,
                        frame,
                        placed,
                        crc,
                        have: 0,
                        trailer: [0; 7],
                    };
                }
                Ok(take)
            }
            Phase::Trailer {
                frame,
                have,
                trailer,
                ..
            } => {
                let want = frame.pad_len + frame.data_digest_len;
                let take = (want - *have).min(input.len());
                trailer[*have..*have + take].copy_from_slice(&input[..take]);
                *have += take;
                if *have == want {
                    self.deliver(sink)?;
                }
                Ok(take)
            }
        }
    }

    /// The header is in: decide where its payload goes.
    fn start_payload<S: PduSink>(&mut self, sink: &mut S, header: Header, frame: Frame) {
        let placed = frame.data_len > 0
            && matches!(header, Header::DataIn(_))
            && sink.destination(&header, frame.data_len as u32).is_some();
        if !placed {
            self.staging.clear();
            self.staging.reserve(frame.data_len);
        }
        self.phase = Phase::Payload {
            header,
            frame,
            placed,
            done: 0,
            crc: 0,
        };
    }

    /// Padding and digest are in: check the digest and hand the PDU over.
    fn deliver<S: PduSink>(&mut self, sink: &mut S) -> Result<(), ReceiveError<S::Error>> {
        let Phase::Trailer {
            header,
            frame,
            placed,
            crc,
            trailer,
            ..
        } = std::mem::replace(&mut self.phase, idle())
        else {
            unreachable!("delivering from the trailer phase");
        };
        if frame.data_digest_len > 0 {
            let expected = digest::crc32c_append(crc, &trailer[..frame.pad_len]);
            let mut wire = [0u8; digest::DIGEST_LEN];
            wire.copy_from_slice(&trailer[frame.pad_len..frame.pad_len + digest::DIGEST_LEN]);
            let found = digest::digest_from_wire(wire);
            if expected != found {
                let e = PduError::DataDigestMismatch { expected, found };
                self.phase = Phase::Failed(e.clone());
                return Err(ReceiveError::Pdu(e));
            }
        }
        self.stats.pdus += 1;
        let result = if placed {
            sink.handle_placed(header, frame.data_len as u32)
        } else {
            sink.handle_pdu(header, &self.staging)
        };
        result.map_err(ReceiveError::Sink)
    }

    /// Keeps the first fault: the stream is not read past it.
    fn check<T>(&mut self, result: Result<T, PduError>) -> Result<T, PduError> {
        if let Err(e) = &result {
            self.phase = Phase::Failed(e.clone());
        }
        result
    }
}

fn idle() -> Phase {
    Phase::Header {
        have: 0,
        frame: None,
    }
}

/// The header buffer bounds the AHS whatever the sink's limits say.
fn clamp(limits: Limits) -> Limits {
    Limits {
        max_ahs_length: limits
            .max_ahs_length
            .min(HEADER_MAX - BHS_LEN - digest::DIGEST_LEN),
        ..limits
    }
}
