//! SCSI commands in full feature phase: SCSI Command (RFC 7143 section 11.3), SCSI
//! Response (11.4), Data-In and Data-Out (11.7), R2T (11.8), with the data transfer rules
//! of the operational keys InitialR2T (13.10), ImmediateData (13.11), MaxBurstLength
//! (13.13), FirstBurstLength (13.14), MaxOutstandingR2T (13.17), DataPDUInOrder (13.18).
//!
//! Reads: Data-In lands in the command's buffer at its Buffer Offset: either received
//! there directly by the transport (`Session::data_in_destination`, then
//! `handle_pdu_placed`: no copy), or copied from the transport's buffer by `handle_pdu`
//! (the one copy on that path, counted in `SessionStats::bytes_copied`). DataSN must run 0, 1, 2, ...; data
//! outside the expected length, out of order under DataPDUInOrder=Yes, or overlapping, is a
//! fatal fault. GOOD status is only reported when every byte the target claims to have sent
//! (expected length minus an underflow residual) has arrived.
//!
//! Writes: immediate data up to min(FirstBurstLength, the target's
//! MaxRecvDataSegmentLength); with InitialR2T=No, unsolicited Data-Out up to
//! FirstBurstLength; the rest as the target asks with R2Ts, each answered by a sequence of
//! Data-Out PDUs no longer than the target's MaxRecvDataSegmentLength, DataSN from 0 per
//! sequence and the F bit on the last.

use std::time::Instant;

use super::{
    CommandError, CommandFailure, CommandOutcome, DataDirection, Event, Outgoing, Request,
    Residual, Session, SessionError, SessionState, TaskId, Transmit, TransmitData,
};
use crate::pdu::{self, Header, LunField, Opcode, Tag, TaskAttribute, RESERVED_TAG};
use crate::scsi::{Cdb, Lun};

/// Most separate received ranges tracked for one read under DataPDUInOrder=No; a target
/// that leaves more holes than this is treated as sending out of order.
const MAX_RECEIVED_RANGES: usize = 256;

/// The smallest MaxRecvDataSegmentLength a peer may declare (section 13.12).
const MIN_DATA_SEGMENT: u32 = 512;

/// One command, from `submit` to completion.
pub(crate) struct Task {
    id: TaskId,
    lun: LunField,
    /// Moved into the SCSI Command PDU when it is issued (at ERL 0 a command is never sent
    /// twice).
    cdb: Option<Cdb>,
    attribute: TaskAttribute,
    direction: DataDirection,
    pub(crate) buffer: Vec<u8>,
    pub(crate) submitted_at: Instant,
    issued: bool,
    /// The CmdSN it was issued with (an abort's RefCmdSN).
    cmd_sn: u32,
    /// Reads: the DataSN the next Data-In must carry.
    next_data_sn: u32,
    /// Reads: the data received so far from offset 0 without a hole, `[0, prefix_end)`.
    /// In-order data (the usual case, and the only one under DataPDUInOrder=Yes) only
    /// moves this on, so such a read allocates nothing.
    prefix_end: u32,
    /// Reads under DataPDUInOrder=No: byte ranges received beyond a hole, `[start, end)`,
    /// sorted, merged, each starting after `prefix_end`.
    received_beyond: Vec<(u32, u32)>,
    /// Writes: the R2TSN the next R2T must carry.
    next_r2t_sn: u32,
    /// Writes: R2Ts whose Data-Out sequence is not yet fully handed to the transport.
    outstanding_r2ts: u32,
}

impl Task {
    pub(crate) fn lun(&self) -> LunField {
        self.lun
    }

    /// Meaningful once issued.
    pub(crate) fn cmd_sn(&self) -> u32 {
        self.cmd_sn
    }

    pub(crate) fn new(id: TaskId, request: Request, now: Instant) -> Task {
        let Request {
            lun,
            cdb,
            direction,
            buffer,
            attribute,
            user_data: _,
        } = request;
        Task {
            id,
            lun: Lun::from_u64(lun).to_field(),
            cdb: Some(cdb),
            attribute,
            direction,
            buffer,
            submitted_at: now,
            issued: false,
            cmd_sn: 0,
            next_data_sn: 0,
            prefix_end: 0,
            received_beyond: Vec::new(),
            next_r2t_sn: 0,
            outstanding_r2ts: 0,
        }
    }

    pub(crate) fn is_issued(&self) -> bool {
        self.issued
    }

    fn received_bytes(&self) -> u32 {
        let beyond: u32 = self.received_beyond.iter().map(|(s, e)| e - s).sum();
        self.prefix_end + beyond
    }

    /// How many separate ranges have been received (the prefix counts as one once it
    /// holds data).
    fn received_ranges(&self) -> usize {
        usize::from(self.prefix_end > 0) + self.received_beyond.len()
    }

    /// True if `[start, end)` shares a byte with, or (empty) lies strictly inside, data
    /// received before.
    fn overlaps_received(&self, start: u32, end: u32) -> bool {
        let in_prefix = self.prefix_end > 0 && 0 < end && start < self.prefix_end;
        in_prefix
            || self
                .received_beyond
                .iter()
                .any(|&(s, e)| s < end && start < e)
    }

    /// Records `[start, end)` as received; false if it overlaps what arrived before.
    fn record_received(&mut self, start: u32, end: u32) -> bool {
        if start == end {
            return true;
        }
        if start < self.prefix_end {
            return false;
        }
        if start == self.prefix_end {
            // Extends the prefix: the fast path of in-order data.
            match self.received_beyond.first() {
                None => self.prefix_end = end,
                Some(&(next, _)) if end > next => return false,
                Some(&(next, next_end)) if end == next => {
                    self.prefix_end = next_end;
                    self.received_beyond.remove(0);
                }
                Some(_) => self.prefix_end = end,
            }
            return true;
        }
        // Beyond a hole (DataPDUInOrder=No only).
        let ranges = &mut self.received_beyond;
        let at = ranges.partition_point(|&(s, _)| s < start);
        let before = at.checked_sub(1).and_then(|i| ranges.get(i).copied());
        let after = ranges.get(at).copied();
        if before.is_some_and(|(_, e)| e > start) || after.is_some_and(|(s, _)| s < end) {
            return false;
        }
        let joins_before = before.is_some_and(|(_, e)| e == start);
        let joins_after = after.is_some_and(|(s, _)| s == end);
        match (joins_before, joins_after) {
            (true, true) => {
                let merged_end = ranges.remove(at).1;
                if let Some(r) = ranges.get_mut(at - 1) {
                    r.1 = merged_end;
                }
            }
            (true, false) => {
                if let Some(r) = ranges.get_mut(at - 1) {
                    r.1 = end;
                }
            }
            (false, true) => {
                if let Some(r) = ranges.get_mut(at) {
                    r.0 = start;
                }
            }
            (false, false) => ranges.insert(at, (start, end)),
        }
        true
    }

    /// The end of the data received so far from offset 0 without a hole.
    fn contiguous_end(&self) -> u32 {
        self.prefix_end
    }
}

/// The data segment of a received PDU: bytes to copy into place, or a count of bytes the
/// transport already received into the slice [`Session::data_in_destination`] gave.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Payload<'a> {
    Bytes(&'a [u8]),
    Placed(u32),
}

impl Payload<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Payload::Bytes(data) => data.len(),
            Payload::Placed(len) => *len as usize,
        }
    }
}

impl Task {
    /// The slice of this read's buffer that a Data-In with these fields fills, if it is the
    /// Data-In expected next (the same checks `handle_data_in` makes before it places
    /// bytes, so a payload received here is never written where a fault would be found).
    pub(crate) fn placement(
        &mut self,
        data_sn: u32,
        offset: u32,
        len: u32,
        in_order: bool,
    ) -> Option<&mut [u8]> {
        let DataDirection::Read { len: expected } = self.direction else {
            return None;
        };
        if !self.issued || data_sn != self.next_data_sn {
            return None;
        }
        let end = offset.checked_add(len).filter(|&end| end <= expected)?;
        if in_order && offset != self.contiguous_end() {
            return None;
        }
        if self.overlaps_received(offset, end) {
            return None;
        }
        self.buffer.get_mut(offset as usize..end as usize)
    }
}

/// The rest of one Data-Out sequence, cut into PDUs as the transmit queue is polled.
#[derive(Debug)]
pub(crate) struct DataOutBurst {
    task: Tag,
    /// The R2T's Target Transfer Tag, or the reserved tag for unsolicited data.
    target_transfer_tag: Tag,
    offset: u32,
    remaining: u32,
    data_sn: u32,
    /// Answers an R2T (counts against MaxOutstandingR2T until fully sent).
    solicited: bool,
}

/// Splits a SCSI Response or Async Message data segment into its sense data
/// (section 11.4.7: a 2-byte SenseLength, then the sense bytes, then response data).
/// `None` when SenseLength runs past the segment; `Some(None)` when there is no sense.
pub(crate) fn parse_sense(data: &[u8]) -> Option<Option<&[u8]>> {
    match data {
        [] => Some(None),
        [_] => None,
        [hi, lo, rest @ ..] => {
            let sense_len = u16::from_be_bytes([*hi, *lo]) as usize;
            if sense_len == 0 {
                Some(None)
            } else {
                rest.get(..sense_len).map(Some)
            }
        }
    }
}

/// Section 11.4.5: reads the residual flags against the expected length.
fn residual_of(
    tag: Tag,
    overflow: bool,
    underflow: bool,
    count: u32,
    expected: u32,
) -> Result<Residual, SessionError> {
    match (overflow, underflow) {
        (true, true) => Err(SessionError::BadResidual {
            tag,
            reason: "both overflow and underflow set",
        }),
        (true, false) => Ok(Residual::Overflow(count)),
        (false, true) if count > expected => Err(SessionError::BadResidual {
            tag,
            reason: "underflow residual larger than the expected length",
        }),
        (false, true) => Ok(Residual::Underflow(count)),
        (false, false) => Ok(Residual::None),
    }
}

impl Session {
    /// Sends waiting commands while the window and the in-flight bound allow.
    pub(super) fn issue_waiting(&mut self, _now: Instant) {
        while self.state == SessionState::FullFeature
            && self.in_flight < self.config.max_outstanding_commands.max(1)
            && self.window.is_open()
        {
            let Some(tag) = self.waiting.pop_front() else {
                break;
            };
            self.issue(tag);
        }
    }

    fn issue(&mut self, tag: Tag) {
        let Some(params) = self.params.as_ref() else {
            return;
        };
        let Some(task) = self.tasks.get_mut(tag) else {
            return;
        };
        // Each task is issued once (it leaves `waiting` here), so its CDB is still here.
        let Some(cdb) = task.cdb.take() else {
            return;
        };
        let cmd_sn = self.window.take();
        task.issued = true;
        task.cmd_sn = cmd_sn;
        self.in_flight += 1;
        let expected = task.direction.transfer_len();
        let (read, write) = match task.direction {
            DataDirection::None => (false, false),
            DataDirection::Read { .. } => (true, false),
            DataDirection::Write { .. } => (false, true),
        };
        let mut immediate_len = 0;
        let mut unsolicited_len = 0;
        if write {
            if params.immediate_data {
                immediate_len = expected.min(params.first_burst_length).min(
                    params
                        .target_max_recv_data_segment_length
                        .max(MIN_DATA_SEGMENT),
                );
            }
            unsolicited_len = if params.initial_r2t {
                immediate_len
            } else {
                expected.min(params.first_burst_length)
            };
            unsolicited_len = unsolicited_len.max(immediate_len);
        }
        let data_out_len = unsolicited_len - immediate_len;
        let header = Header::ScsiCommand(pdu::ScsiCommand {
            immediate: false,
            final_pdu: data_out_len == 0,
            read,
            write,
            attribute: task.attribute,
            lun: task.lun,
            initiator_task_tag: tag,
            expected_data_transfer_length: expected,
            cmd_sn,
            exp_stat_sn: 0,
            // Zero-padded to the 16 bytes the BHS carries (section 11.3.5).
            cdb: cdb.into_wire_form(),
            bidi_read_length: None,
        });
        let data = if immediate_len > 0 {
            self.stats.bytes_written += u64::from(immediate_len);
            TransmitData::CommandBuffer {
                task: task.id,
                offset: 0,
                len: immediate_len,
            }
        } else {
            TransmitData::None
        };
        self.outbox
            .push_back(Outgoing::Pdu(Transmit { header, data }));
        if data_out_len > 0 {
            self.outbox.push_back(Outgoing::DataOut(DataOutBurst {
                task: tag,
                target_transfer_tag: RESERVED_TAG,
                offset: immediate_len,
                remaining: data_out_len,
                data_sn: 0,
                solicited: false,
            }));
        }
    }

    /// Cuts the next Data-Out PDU from a burst; `None` if its command is gone.
    pub(super) fn next_data_out(&mut self, mut burst: DataOutBurst) -> Option<Transmit> {
        let max_segment = self
            .params
            .as_ref()
            .map_or(MIN_DATA_SEGMENT, |p| p.target_max_recv_data_segment_length)
            .max(MIN_DATA_SEGMENT);
        let task = self.tasks.get_mut(burst.task)?;
        let len = burst.remaining.min(max_segment);
        let last = len == burst.remaining;
        let header = Header::DataOut(pdu::DataOut {
            final_pdu: last,
            lun: task.lun,
            initiator_task_tag: burst.task,
            target_transfer_tag: burst.target_transfer_tag,
            exp_stat_sn: 0,
            data_sn: burst.data_sn,
            buffer_offset: burst.offset,
        });
        let data = TransmitData::CommandBuffer {
            task: task.id,
            offset: burst.offset,
            len,
        };
        if last {
            if burst.solicited {
                task.outstanding_r2ts = task.outstanding_r2ts.saturating_sub(1);
            }
        } else {
            burst.offset += len;
            burst.remaining -= len;
            burst.data_sn = burst.data_sn.wrapping_add(1);
            self.outbox.push_front(Outgoing::DataOut(burst));
        }
        self.stats.bytes_written += u64::from(len);
        self.stats.data_out_pdus += 1;
        Some(Transmit { header, data })
    }

    fn issued_task(&mut self, opcode: Opcode, tag: Tag) -> Result<&mut Task, SessionError> {
        match self.tasks.get_mut(tag) {
            Some(task) if task.issued => Ok(task),
            _ => Err(SessionError::UnknownTaskTag { opcode, tag }),
        }
    }

    /// Section 11.7: places read data; completes the command when the S bit is set.
    pub(super) fn handle_data_in(
        &mut self,
        h: pdu::DataIn,
        payload: Payload<'_>,
    ) -> Result<(), SessionError> {
        self.window.update(h.exp_cmd_sn, h.max_cmd_sn);
        let tag = h.initiator_task_tag;
        let in_order = self.params.as_ref().is_none_or(|p| p.data_pdu_in_order);
        let task = self.issued_task(Opcode::DataIn, tag)?;
        let DataDirection::Read { len: expected } = task.direction else {
            return Err(SessionError::WrongDataDirection {
                opcode: Opcode::DataIn,
                tag,
            });
        };
        if h.data_sn != task.next_data_sn {
            return Err(SessionError::DataSnOutOfOrder {
                tag,
                expected: task.next_data_sn,
                got: h.data_sn,
            });
        }
        task.next_data_sn = task.next_data_sn.wrapping_add(1);
        // The data segment is bounded by MaxRecvDataSegmentLength, checked on entry.
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let offset = h.buffer_offset;
        let end = match offset.checked_add(len) {
            Some(end) if end <= expected => end,
            _ => {
                return Err(SessionError::DataOutOfRange {
                    tag,
                    offset,
                    len,
                    expected,
                })
            }
        };
        if in_order && offset != task.contiguous_end() {
            return Err(SessionError::DataOutOfOrder {
                tag,
                offset,
                expected_offset: task.contiguous_end(),
            });
        }
        if !task.record_received(offset, end) {
            return Err(SessionError::DataOverlap { tag, offset, len });
        }
        if task.received_ranges() > MAX_RECEIVED_RANGES {
            return Err(SessionError::DataOutOfOrder {
                tag,
                offset,
                expected_offset: task.contiguous_end(),
            });
        }
        let Some(target) = task.buffer.get_mut(offset as usize..end as usize) else {
            // The buffer is at least `expected` long (checked in submit); kept as an error
            // rather than a panic all the same.
            return Err(SessionError::DataOutOfRange {
                tag,
                offset,
                len,
                expected,
            });
        };
        if let Payload::Bytes(data) = payload {
            target.copy_from_slice(data);
            self.stats.bytes_copied += u64::from(len);
        }
        self.stats.bytes_read += u64::from(len);
        self.stats.data_in_pdus += 1;
        if let Some(status) = h.status {
            if !h.final_pdu {
                return Err(SessionError::InvalidPdu {
                    opcode: Opcode::DataIn,
                    reason: "S bit set without the F bit",
                });
            }
            self.stat.acknowledge(h.stat_sn);
            let residual = residual_of(tag, h.overflow, h.underflow, h.residual_count, expected)?;
            self.complete(tag, status, None, residual)?;
        }
        Ok(())
    }

    /// Section 11.8: queues the Data-Out sequence an R2T asks for.
    pub(super) fn handle_r2t(&mut self, h: pdu::R2t) -> Result<(), SessionError> {
        self.window.update(h.exp_cmd_sn, h.max_cmd_sn);
        self.stats.r2ts += 1;
        let tag = h.initiator_task_tag;
        let (max_burst, max_outstanding) = self.params.as_ref().map_or((0, 1), |p| {
            (p.max_burst_length, u32::from(p.max_outstanding_r2t.max(1)))
        });
        let task = self.issued_task(Opcode::R2t, tag)?;
        let DataDirection::Write { len: expected } = task.direction else {
            return Err(SessionError::WrongDataDirection {
                opcode: Opcode::R2t,
                tag,
            });
        };
        if h.target_transfer_tag == RESERVED_TAG {
            return Err(SessionError::InvalidPdu {
                opcode: Opcode::R2t,
                reason: "reserved Target Transfer Tag",
            });
        }
        if h.r2t_sn != task.next_r2t_sn {
            return Err(SessionError::R2tSnOutOfOrder {
                tag,
                expected: task.next_r2t_sn,
                got: h.r2t_sn,
            });
        }
        let (offset, len) = (h.buffer_offset, h.desired_data_transfer_length);
        if len == 0 || offset.checked_add(len).is_none_or(|end| end > expected) {
            return Err(SessionError::R2tOutOfRange {
                tag,
                offset,
                len,
                expected,
            });
        }
        if len > max_burst {
            return Err(SessionError::R2tTooLong {
                tag,
                len,
                max_burst,
            });
        }
        if task.outstanding_r2ts >= max_outstanding {
            return Err(SessionError::TooManyR2ts {
                tag,
                max: max_outstanding,
            });
        }
        task.next_r2t_sn = task.next_r2t_sn.wrapping_add(1);
        task.outstanding_r2ts += 1;
        self.outbox.push_back(Outgoing::DataOut(DataOutBurst {
            task: tag,
            target_transfer_tag: h.target_transfer_tag,
            offset,
            remaining: len,
            data_sn: 0,
            solicited: true,
        }));
        Ok(())
    }

    /// Section 11.4.
    pub(super) fn handle_scsi_response(
        &mut self,
        h: pdu::ScsiResponse,
        data: &[u8],
    ) -> Result<(), SessionError> {
        self.window.update(h.exp_cmd_sn, h.max_cmd_sn);
        let tag = h.initiator_task_tag;
        let task = self.issued_task(Opcode::ScsiResponse, tag)?;
        let expected = task.direction.transfer_len();
        self.stat.acknowledge(h.stat_sn);
        if h.response != 0 {
            self.complete_with_error(
                tag,
                CommandError::TargetFailure {
                    response: h.response,
                },
            );
            return Ok(());
        }
        let sense = match parse_sense(data) {
            Some(sense) => sense.map(<[u8]>::to_vec),
            None => {
                let sense_len = data
                    .get(..2)
                    .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]) as usize);
                return Err(SessionError::SenseTruncated {
                    tag,
                    sense_len,
                    segment_len: data.len(),
                });
            }
        };
        let residual = residual_of(tag, h.overflow, h.underflow, h.residual_count, expected)?;
        self.complete(tag, h.status, sense, residual)
    }

    /// Completes a command the target answered. A read with GOOD status must have
    /// received exactly the bytes the target accounts for, from offset 0 without holes.
    fn complete(
        &mut self,
        tag: Tag,
        status: u8,
        sense: Option<Vec<u8>>,
        residual: Residual,
    ) -> Result<(), SessionError> {
        let Some(task) = self.tasks.get(tag) else {
            return Err(SessionError::UnknownTaskTag {
                opcode: Opcode::ScsiResponse,
                tag,
            });
        };
        let expected = task.direction.transfer_len();
        let accounted = match residual {
            Residual::Underflow(n) => expected - n.min(expected),
            Residual::None | Residual::Overflow(_) => expected,
        };
        let transferred = match task.direction {
            DataDirection::Read { .. } => {
                let received = task.received_bytes();
                if status == crate::scsi::sense::status::GOOD
                    && (received != accounted || task.contiguous_end() != accounted)
                {
                    return Err(SessionError::MissingData {
                        tag,
                        expected: accounted,
                        received,
                    });
                }
                received
            }
            DataDirection::Write { .. } => accounted,
            DataDirection::None => 0,
        };
        let Some(task) = self.tasks.remove(tag) else {
            return Ok(());
        };
        if task.issued {
            self.in_flight -= 1;
        }
        self.stats.commands_completed += 1;
        let outcome = CommandOutcome {
            status,
            sense,
            residual,
            buffer: task.buffer,
            transferred,
        };
        self.events
            .push_back(Event::CommandComplete(task.id, Ok(outcome)));
        Ok(())
    }

    /// Fails one command and hands its buffer back.
    pub(super) fn complete_with_error(&mut self, tag: Tag, error: CommandError) {
        let Some(task) = self.tasks.remove(tag) else {
            return;
        };
        if task.issued {
            self.in_flight -= 1;
        } else {
            self.waiting.retain(|&t| t != tag);
        }
        self.stats.commands_failed += 1;
        let failure = CommandFailure {
            error,
            buffer: task.buffer,
        };
        self.events
            .push_back(Event::CommandComplete(task.id, Err(failure)));
    }

    /// A command in flight too long fails the connection (its state is unknown at ERL 0);
    /// one still waiting for the window fails alone. Every command past its deadline fails
    /// with [`CommandError::TimedOut`], the others of the failed connection with
    /// `ConnectionLost` (a driver that logs in again may send those once more; a timed-out
    /// one it must not, as the caller has been told it failed).
    ///
    /// Deadlines are the submission instant plus one timeout, so they run in submission
    /// order (`now` never goes back): only the expired commands at the front of that order
    /// are looked at.
    pub(super) fn check_command_timeouts(&mut self, now: Instant) -> Result<(), SessionError> {
        let timeout = self.config.command_timeout;
        if timeout.is_zero() {
            return Ok(());
        }
        let mut expired = Vec::new();
        let mut first_issued = None;
        for (tag, task) in self.tasks.in_submission_order() {
            match task.submitted_at.checked_add(timeout) {
                Some(deadline) if now >= deadline => {}
                _ => break,
            }
            if task.issued && first_issued.is_none() {
                first_issued = Some(tag);
            }
            expired.push(tag);
        }
        for tag in expired {
            self.complete_with_error(tag, CommandError::TimedOut);
        }
        match first_issued {
            Some(tag) => Err(SessionError::CommandTimeout { tag }),
            None => Ok(()),
        }
    }

    /// The earliest command deadline: the oldest command's.
    pub(super) fn command_deadline(&self) -> Option<Instant> {
        let timeout = self.config.command_timeout;
        if timeout.is_zero() {
            return None;
        }
        self.tasks.oldest()?.submitted_at.checked_add(timeout)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const LEN: usize = 80;

    fn read_task() -> Task {
        let request = Request::new(0, Cdb::test_unit_ready(), vec![0; LEN], 0);
        let request = Request {
            direction: DataDirection::Read { len: LEN as u32 },
            ..request
        };
        Task::new(TaskId(0), request, Instant::now())
    }

    proptest! {
        /// The prefix counter and the range list together behave as a byte map would:
        /// overlaps refused, holes kept, counts and the contiguous prefix exact.
        #[test]
        fn received_tracking_matches_a_byte_map(
            segments in prop::collection::vec((0u32..72, 0u32..9), 0..40),
        ) {
            let mut task = read_task();
            let mut model = [false; LEN];
            for (start, len) in segments {
                let end = start + len;
                let overlap = (start..end).any(|i| model[i as usize]);
                if len > 0 {
                    prop_assert_eq!(task.overlaps_received(start, end), overlap);
                }
                let accepted = len == 0 || !overlap;
                prop_assert_eq!(task.record_received(start, end), accepted);
                if accepted {
                    (start..end).for_each(|i| model[i as usize] = true);
                }
                let bytes = model.iter().filter(|&&b| b).count() as u32;
                let prefix = model.iter().take_while(|&&b| b).count() as u32;
                let runs = (0..LEN).filter(|&i| model[i] && (i == 0 || !model[i - 1])).count();
                prop_assert_eq!(task.received_bytes(), bytes);
                prop_assert_eq!(task.contiguous_end(), prefix);
                prop_assert_eq!(task.received_ranges(), runs);
                // Ranges beyond the prefix: sorted, apart, after a hole.
                let mut last_end = task.prefix_end;
                for &(s, e) in &task.received_beyond {
                    prop_assert!(s > last_end && e > s);
                    last_end = e;
                }
            }
        }
    }

    #[test]
    fn in_order_reads_allocate_no_range_list() {
        let mut task = read_task();
        for start in (0..LEN as u32).step_by(16) {
            assert!(task.record_received(start, (start + 16).min(LEN as u32)));
        }
        assert_eq!(task.received_beyond.capacity(), 0);
        assert_eq!(task.contiguous_end(), LEN as u32);
    }
}
