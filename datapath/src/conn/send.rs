//! The send batch: the session's next PDUs as a gather list (section 11.1 layout): each
//! header encoded (BHS, AHS, header digest), its payload borrowed from the command's buffer
//! or the session's owned bytes, then its padding and data digest. No payload is copied.

use std::ops::Range;

use crate::pdu::{self, PduError, BHS_LEN};
use crate::session::{Session, Transmit};

/// PDUs one batch holds at most (three slices each: 768, under the kernel's IOV_MAX of
/// 1024 buffers per `sendmsg`).
pub const SEND_BATCH_MAX_PDUS: usize = 256;

struct Entry {
    transmit: Transmit,
    header: Range<usize>,
    trailer: Range<usize>,
}

/// Encoded headers and trailers of up to [`SEND_BATCH_MAX_PDUS`] PDUs, beside the
/// transmits whose payload the session lends.
#[derive(Default)]
pub struct SendBatch {
    /// Headers and trailers, back to back.
    encoded: Vec<u8>,
    entries: Vec<Entry>,
}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("pdus", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl SendBatch {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Takes the session's queued PDUs into the batch, up to its bound; returns how many
    /// it holds. Each PDU is framed with the digests in force when it is taken.
    pub fn fill(&mut self, session: &mut Session) -> Result<usize, PduError> {
        while self.entries.len() < SEND_BATCH_MAX_PDUS {
            let Some(transmit) = session.poll_transmit() else {
                break;
            };
            let digests = session.digests();
            let data = session.transmit_data(&transmit);
            let data_len = u32::try_from(data.len()).map_err(|_| PduError::DataSegmentTooLong {
                len: data.len(),
                max: pdu::MAX_DATA_SEGMENT_LENGTH as usize,
            })?;
            let start = self.encoded.len();
            let room = BHS_LEN + transmit.header.ahs_len() + pdu::digest::DIGEST_LEN;
            self.encoded.resize(start + room, 0);
            let written = match pdu::encode_header(
                &transmit.header,
                data_len,
                digests,
                &mut self.encoded[start..],
            ) {
                Ok(n) => n,
                Err(e) => {
                    self.encoded.truncate(start);
                    return Err(e);
                }
            };
            self.encoded.truncate(start + written);
            let header = start..start + written;
            let (trailer, trailer_len) = pdu::data_trailer(data, digests);
            self.encoded.extend_from_slice(&trailer[..trailer_len]);
            let trailer = header.end..header.end + trailer_len;
            self.entries.push(Entry {
                transmit,
                header,
                trailer,
            });
        }
        Ok(self.entries.len())
    }

    /// The batch as a gather list, in wire order: header, payload, trailer of each PDU
    /// (empty parts left out). The payload slices are lent by `session`.
    pub fn slices<'a>(&'a self, session: &'a Session, out: &mut Vec<&'a [u8]>) {
        for entry in &self.entries {
            out.push(&self.encoded[entry.header.clone()]);
            let data = session.transmit_data(&entry.transmit);
            if !data.is_empty() {
                out.push(data);
            }
            if !entry.trailer.is_empty() {
                out.push(&self.encoded[entry.trailer.clone()]);
            }
        }
    }

    /// The batch was sent whole: empty it for the next one.
    pub fn clear(&mut self) {
        self.encoded.clear();
        self.entries.clear();
    }
}
