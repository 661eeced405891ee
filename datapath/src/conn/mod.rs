//! The connection driver: one initiator [`Session`] with its byte stream, sans-IO.
//!
//! It owns what every path needs between the session and a socket (RFC 7143 section 11.1
//! framing): a resumable receiver ([`PduReceiver`]: header, then the payload placed where
//! the session says, then trailer and digests) and a send batch ([`SendBatch`]: encoded
//! headers, payload borrowed from command buffers, trailers). It does no I/O and reads no
//! clock: the caller passes `now` and moves the bytes.
//!
//! Calling order, per turn of the caller's loop:
//! 1. [`Conn::fill_send`], then send [`Conn::send_slices`] whole and call
//!    [`Conn::handle_sent`];
//! 2. receive into [`Conn::placement_spare`] when it is `Some` and report with
//!    [`Conn::handle_placed_received`], else receive into a buffer of your own and hand
//!    it to [`Conn::handle_received`];
//! 3. drain [`Session::poll_event`] and honour [`Session::poll_timeout`] through
//!    [`Conn::session_mut`].
//!
//! An error from either receive call means the stream cannot be trusted: by then the
//! session has failed (its commands end with the fault) and the connection is to be closed.
#![forbid(unsafe_code)]

mod receive;
mod send;
#[cfg(test)]
mod tests;

use std::time::Instant;

pub use receive::{PduReceiver, PduSink, ReceiveError, ReceiveStats};
pub use send::{SendBatch, SEND_BATCH_MAX_PDUS};

use crate::pdu::{Digests, Header, Limits, PduError};
use crate::session::{Session, SessionError};

/// Why the connection's byte stream ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnError {
    /// The peer sent something that is not a PDU we accept (framing, limits, digests).
    #[error("malformed PDU: {0}")]
    Pdu(#[from] PduError),
    /// A PDU the session refused; the session has failed.
    #[error(transparent)]
    Session(#[from] SessionError),
}

impl From<ReceiveError<SessionError>> for ConnError {
    fn from(e: ReceiveError<SessionError>) -> ConnError {
        match e {
            ReceiveError::Pdu(e) => ConnError::Pdu(e),
            ReceiveError::Sink(e) => ConnError::Session(e),
        }
    }
}

/// One session and its connection's framing.
#[derive(Debug)]
pub struct Conn {
    session: Session,
    receiver: PduReceiver,
    batch: SendBatch,
}

impl Conn {
    pub fn new(session: Session) -> Conn {
        Conn {
            session,
            receiver: PduReceiver::new(),
            batch: SendBatch::default(),
        }
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    pub fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }

    pub fn receive_stats(&self) -> ReceiveStats {
        self.receiver.stats()
    }

    /// Bytes the receiver needs before its next decision ([`PduReceiver::bytes_wanted`]).
    pub fn receive_wanted(&self) -> usize {
        self.receiver.bytes_wanted()
    }

    /// While a payload is being received: the padding and data digest that follow it.
    pub fn receive_trailer_after_payload(&self) -> usize {
        self.receiver.trailer_after_payload()
    }

    /// Whether the receiver waits for a payload's padding or data digest.
    pub fn receive_in_trailer(&self) -> bool {
        self.receiver.in_trailer()
    }

    /// Whether the send batch holds PDUs not yet reported sent.
    pub fn send_pending(&self) -> bool {
        !self.batch.is_empty()
    }

    /// Takes the session's queued PDUs into the send batch; returns the PDUs it holds
    /// (0: nothing to send).
    pub fn fill_send(&mut self) -> Result<usize, PduError> {
        self.batch.fill(&mut self.session)
    }

    /// The send batch as a gather list for one send.
    pub fn send_slices<'a>(&'a self, out: &mut Vec<&'a [u8]>) {
        self.batch.slices(&self.session, out);
    }

    /// The whole batch went out.
    pub fn handle_sent(&mut self) {
        self.batch.clear();
    }

    /// Bytes received into the caller's own buffer.
    pub fn handle_received(&mut self, now: Instant, bytes: &[u8]) -> Result<(), ConnError> {
        let mut sink = SessionSink {
            session: &mut self.session,
            now,
        };
        let result = self.receiver.handle_bytes(&mut sink, bytes);
        self.settle(now, result)
    }

    /// Where the payload being received belongs, while it is a placed Data-In: receive
    /// into it directly (no copy).
    pub fn placement_spare(&mut self) -> Option<&mut [u8]> {
        let (header, data_len, done) = self.receiver.placing()?;
        self.session
            .data_in_destination(header, data_len)?
            .get_mut(done..)
    }

    /// `n` bytes were received into [`Conn::placement_spare`].
    pub fn handle_placed_received(&mut self, now: Instant, n: usize) -> Result<(), ConnError> {
        let mut sink = SessionSink {
            session: &mut self.session,
            now,
        };
        let result = self.receiver.handle_placed_bytes(&mut sink, n);
        self.settle(now, result)
    }

    /// A framing fault fails the session as a lost connection (its commands end with it).
    fn settle(
        &mut self,
        now: Instant,
        result: Result<(), ReceiveError<SessionError>>,
    ) -> Result<(), ConnError> {
        if let Err(ReceiveError::Pdu(e)) = &result {
            self.session
                .handle_connection_lost(now, format!("malformed PDU: {e}"));
        }
        result.map_err(ConnError::from)
    }
}

/// The session as the receiver's sink, at one instant.
struct SessionSink<'s> {
    session: &'s mut Session,
    now: Instant,
}

impl PduSink for SessionSink<'_> {
    type Error = SessionError;

    fn digests(&self) -> Digests {
        self.session.digests()
    }

    fn limits(&self) -> Limits {
        Limits {
            max_data_segment_length: self.session.max_recv_data_segment_length(),
            ..Limits::default()
        }
    }

    fn destination(&mut self, header: &Header, data_len: u32) -> Option<&mut [u8]> {
        self.session.data_in_destination(header, data_len)
    }

    fn handle_placed(&mut self, header: Header, data_len: u32) -> Result<(), SessionError> {
        self.session.handle_pdu_placed(self.now, header, data_len)
    }

    fn handle_pdu(&mut self, header: Header, data: &[u8]) -> Result<(), SessionError> {
        self.session.handle_pdu(self.now, header, data)
    }
}
