//! SCSI commands on the target side: RFC 7143 sections 11.3 (SCSI Command), 11.4 (SCSI
//! Response), 11.7 (Data-Out and Data-In), 11.8 (R2T), with the data transfer keys of
//! section 13 (ImmediateData, InitialR2T, FirstBurstLength, MaxBurstLength,
//! MaxOutstandingR2T) and the flow of section 4.2 / 10.
//!
//! A write collects its data before the logical unit runs it: immediate data in the
//! command PDU, then unsolicited Data-Out (TTT 0xffffffff) up to FirstBurstLength when
//! InitialR2T=No, then R2Ts of at most MaxBurstLength, at most MaxOutstandingR2T at a time,
//! until the Expected Data Transfer Length is in. The buffer is sized by that length, which
//! is capped by the target's maximum transfer. A read's data goes out in Data-In PDUs of at
//! most the initiator's MaxRecvDataSegmentLength, in sequences of at most MaxBurstLength;
//! GOOD status without sense rides in the last Data-In (S bit).

use std::sync::Arc;

use datapath::pdu::{self, Header, LunField, Tag, RESERVED_TAG};
use datapath::scsi::sense::status;
use datapath::scsi::Lun;

use super::{
    reject_reason, Burst, CommandId, CommandRequest, CommandResult, Outgoing, SessionType,
    TargetError, TargetSession, TargetState, Transmit, TransmitData,
};

/// SCSI status codes (SAM-5 section 5.3).

#[derive(Debug)]
pub(super) struct Task {
    pub(super) lun_field: LunField,
    pub(super) phase: Phase,
}

#[derive(Debug)]
pub(super) enum Phase {
    Collecting(WriteState),
    /// Handed to the logical unit.
    Running {
        read: bool,
        edtl: u32,
        r2ts_sent: u32,
    },
}

#[derive(Debug)]
pub(super) struct WriteState {
    lun: u64,
    cdb: Vec<u8>,
    /// The write data, `edtl` bytes; empty while lent to the receiver ([`Placement`]).
    buffer: Vec<u8>,
    edtl: u32,
    received: u32,
    /// Where unsolicited data (immediate and TTT=0xffffffff Data-Out) ends.
    unsolicited_end: u32,
    unsolicited_next: u32,
    /// DataSN the next unsolicited Data-Out must carry (section 11.7.5).
    unsolicited_data_sn: u32,
    /// The next offset to ask for with an R2T.
    next_r2t_offset: u32,
    r2ts: Vec<OpenR2t>,
    r2t_sn: u32,
}

#[derive(Debug)]
struct OpenR2t {
    ttt: Tag,
    end: u32,
    next: u32,
    /// DataSN the next Data-Out of this burst must carry (from 0 per R2T).
    data_sn: u32,
}

/// Where the data segment of a SCSI Command (immediate data) or a Data-Out goes, found from
/// its header before the data is received (the header phase of SPDK's `iscsi_read_pdu`):
/// the command's write buffer at the PDU's buffer offset, lent to the receiver until
/// [`TargetSession::handle_placed_pdu`] hands it back. Only the slice the header names
/// can be written, after the same checks the session makes of the whole PDU, so a bad
/// digest or offset cannot touch another command's data (nor data already accepted).
#[derive(Debug)]
pub struct Placement {
    itt: Tag,
    buffer: Vec<u8>,
    offset: usize,
    len: usize,
    /// A buffer made for a new SCSI Command's immediate data (no task has it yet).
    new_command: bool,
    /// Bytes the receiver copied in (they arrived with the header) rather than received
    /// in place.
    copied: usize,
}

impl Placement {
    /// The data segment's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the data segment is empty (never, for a placement the session made).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the data segment goes.
    pub fn target(&mut self) -> &mut [u8] {
        let range = self.offset..self.offset + self.len;
        self.buffer.get_mut(range).unwrap_or_default()
    }

    /// The data segment as placed.
    pub fn placed(&self) -> &[u8] {
        let range = self.offset..self.offset + self.len;
        self.buffer.get(range).unwrap_or_default()
    }

    /// Counts `len` bytes the receiver copied into [`Placement::target`] from its own
    /// buffer (the session's stats count them as copied).
    pub fn note_copied(&mut self, len: usize) {
        self.copied = (self.copied + len).min(self.len);
    }
}

/// A PDU's data segment as the session gets it.
#[derive(Debug)]
pub(super) enum Payload<'a> {
    /// In the receiver's buffer: write data is copied into its command's buffer.
    Bytes(&'a [u8]),
    /// Already in its command's buffer.
    Placed(Placement),
}

impl Payload<'_> {
    pub(super) fn len(&self) -> usize {
        match self {
            Payload::Bytes(bytes) => bytes.len(),
            Payload::Placed(placement) => placement.len,
        }
    }

    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            Payload::Bytes(bytes) => bytes,
            Payload::Placed(placement) => placement.placed(),
        }
    }
}

/// Status to send with (or after) a read's data.
#[derive(Debug, Clone, Copy)]
pub(super) struct Status {
    status: u8,
    stat_sn: u32,
    underflow: bool,
    overflow: bool,
    residual: u32,
}

/// A read's data being cut into Data-In PDUs as the transmit queue drains.
#[derive(Debug)]
pub(super) struct ReadReply {
    pub(super) itt: Tag,
    lun_field: LunField,
    data: Arc<Vec<u8>>,
    len: u32,
    offset: u32,
    data_sn: u32,
    burst_left: u32,
    /// `Some` when the last Data-In carries the status (S bit).
    status: Option<Status>,
}

impl ReadReply {
    /// Data bytes still to be cut into Data-In, with a header per segment left to send
    /// counted roughly (one per 8 KiB) so that tiny segments are not free.
    pub(super) fn remaining_bytes(&self) -> usize {
        let left = (self.len - self.offset) as usize;
        left + left.div_ceil(8192) * pdu::BHS_LEN
    }

    /// Whether the last Data-In carries the command's status (S bit).
    pub(super) fn carries_status(&self) -> bool {
        self.status.is_some()
    }
}

/// Fixed-format sense data (SPC-4 section 4.5.3) for faults found at the iSCSI layer.
fn fixed_sense(key: u8, asc: u8, ascq: u8) -> Vec<u8> {
    let mut sense = vec![0u8; 18];
    sense[0] = 0x70;
    sense[2] = key;
    sense[7] = 10;
    sense[12] = asc;
    sense[13] = ascq;
    sense
}

/// ILLEGAL REQUEST, INVALID FIELD IN CDB.
fn invalid_field_in_cdb() -> Vec<u8> {
    use datapath::scsi::sense::{asc, key};
    let (code, qualifier) = asc::INVALID_FIELD_IN_CDB;
    fixed_sense(key::ILLEGAL_REQUEST, code, qualifier)
}

impl TargetSession {
    /// The header phase of a receive (SPDK's `iscsi_read_pdu`): where the `data_len`
    /// bytes of data after this header go, when they are write data the session would
    /// take: the slice of the command's write buffer at the PDU's buffer offset (for a
    /// Data-Out, after the checks [`TargetSession::handle_pdu`] makes of it; for a SCSI
    /// Command's immediate data, a new buffer of its Expected Data Transfer Length).
    /// `None`: receive the PDU whole and deliver it with `handle_pdu`, which checks it
    /// all again. Nothing changes in the session but the lending of the buffer; deliver
    /// the PDU with [`TargetSession::handle_placed_pdu`] next (a connection that closes
    /// instead just drops the placement).
    pub fn place_data(&mut self, header: &Header, data_len: usize) -> Option<Placement> {
        if self.state != TargetState::FullFeature
            || self.session_type == SessionType::Discovery
            || data_len == 0
            || data_len > self.max_recv_data_segment_length() as usize
        {
            return None;
        }
        let len = u32::try_from(data_len).ok()?;
        match header {
            Header::DataOut(h) => {
                let itt = h.initiator_task_tag;
                let Phase::Collecting(write) = &mut self.tasks.get_mut(&itt)?.phase else {
                    return None;
                };
                if write.buffer.is_empty() || write.check_data_out(itt, h, len).is_err() {
                    return None;
                }
                Some(Placement {
                    itt,
                    buffer: std::mem::take(&mut write.buffer),
                    offset: h.buffer_offset as usize,
                    len: data_len,
                    new_command: false,
                    copied: 0,
                })
            }
            Header::ScsiCommand(h) if h.write && !h.read => {
                let edtl = h.expected_data_transfer_length;
                let max_transfer = self.target().map_or(0, |t| t.max_transfer_bytes);
                let fits = self.params.immediate_data
                    && len <= self.params.first_burst_length
                    && len <= edtl
                    && edtl <= max_transfer
                    && !self.tasks.contains_key(&h.initiator_task_tag);
                fits.then(|| Placement {
                    itt: h.initiator_task_tag,
                    buffer: vec![0; edtl as usize],
                    offset: 0,
                    len: data_len,
                    new_command: true,
                    copied: 0,
                })
            }
            _ => None,
        }
    }

    /// Counts write data taken in: placed, or copied once from the receiver's buffer.
    fn count_write_data(&mut self, len: usize, copied: usize) {
        self.stats.bytes_written += len as u64;
        self.stats.data_out_bytes_copied += copied as u64;
        self.stats.data_out_bytes_placed += (len - copied.min(len)) as u64;
    }

    pub(super) fn handle_scsi_command(
        &mut self,
        h: pdu::ScsiCommand,
        data: Payload<'_>,
    ) -> Result<(), TargetError> {
        if !self.accept_cmd_sn(h.cmd_sn, h.immediate, "SCSI Command")? {
            return Ok(());
        }
        self.stats.commands += 1;
        let itt = h.initiator_task_tag;
        if self.tasks.contains_key(&itt) {
            return Err(TargetError::TaskTagInUse { itt });
        }
        let outstanding = self.commands_held();
        if outstanding >= self.config.cmd_window.max(1) as usize {
            // Only immediate commands can get here (the window bounds the rest).
            tracing::warn!(itt, outstanding, "task set full");
            self.send_scsi_response(
                Outgoing::Pdu,
                itt,
                status::TASK_SET_FULL,
                &[],
                0,
                (false, false, 0),
            );
            return Ok(());
        }
        // The LU's key: a single-level number, or a subsidiary LU's canonical two-level
        // field (`LunAddress::key`); any other form keeps its raw field, which names no
        // unit (the REPORT LUNS well-known LU answers REPORT LUNS only).
        let lun = Lun::from_field(h.lun)
            .address()
            .map(|address| address.key())
            .unwrap_or_else(|| match Lun::from_field(h.lun).raw() {
                // A raw value that low would look like a single-level number.
                raw if raw <= 0xffff => u64::MAX,
                raw => raw,
            });
        let edtl = h.expected_data_transfer_length;
        let params = self.params.clone();
        if !h.write && data.len() > 0 {
            let bhs = self.reencode(&Header::ScsiCommand(h));
            self.queue_reject(reject_reason::PROTOCOL_ERROR, &bhs);
            return Err(TargetError::DataWithoutWrite {
                itt,
                len: data.len(),
            });
        }
        if h.write && h.read {
            // Bidirectional commands are not supported by the logical units here.
            self.send_scsi_response(
                Outgoing::Pdu,
                itt,
                status::CHECK_CONDITION,
                &invalid_field_in_cdb(),
                0,
                (false, false, 0),
            );
            return Ok(());
        }
        if !h.write {
            self.tasks.insert(
                itt,
                Task {
                    lun_field: h.lun,
                    phase: Phase::Running {
                        read: h.read,
                        edtl,
                        r2ts_sent: 0,
                    },
                },
            );
            self.ready.push_back(CommandRequest {
                id: CommandId(itt),
                lun,
                // The one allocation per command the codec's `Vec` CDB used to make.
                cdb: h.cdb.to_vec(),
                data_out: Vec::new(),
                expected_data_in_len: if h.read { edtl } else { 0 },
            });
            self.update_window();
            return Ok(());
        }
        // A write.
        let immediate_len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        if immediate_len > 0 && !params.immediate_data {
            return Err(TargetError::ImmediateDataRefused {
                itt,
                len: immediate_len,
            });
        }
        if immediate_len > params.first_burst_length || immediate_len > edtl {
            return Err(TargetError::ImmediateDataTooLong {
                itt,
                len: immediate_len,
                first_burst_length: params.first_burst_length,
                edtl,
            });
        }
        let max_transfer = self.target().map_or(0, |t| t.max_transfer_bytes);
        if edtl > max_transfer {
            tracing::warn!(
                itt,
                edtl,
                max_transfer,
                "write longer than the target's maximum transfer"
            );
            self.send_scsi_response(
                Outgoing::Pdu,
                itt,
                status::CHECK_CONDITION,
                &invalid_field_in_cdb(),
                0,
                (false, false, 0),
            );
            return Ok(());
        }
        let unsolicited_end = if h.final_pdu || params.initial_r2t {
            immediate_len
        } else {
            params.first_burst_length.min(edtl).max(immediate_len)
        };
        let buffer = match data {
            Payload::Placed(placement)
                if placement.new_command && placement.buffer.len() == edtl as usize =>
            {
                self.count_write_data(placement.len, placement.copied);
                placement.buffer
            }
            data => {
                let mut buffer = vec![0u8; edtl as usize];
                let bytes = data.bytes();
                if let Some(dst) = buffer.get_mut(..bytes.len()) {
                    dst.copy_from_slice(bytes);
                }
                self.count_write_data(bytes.len(), bytes.len());
                buffer
            }
        };
        let state = WriteState {
            lun,
            cdb: h.cdb.to_vec(),
            buffer,
            edtl,
            received: immediate_len,
            unsolicited_end,
            unsolicited_next: immediate_len,
            unsolicited_data_sn: 0,
            next_r2t_offset: unsolicited_end,
            r2ts: Vec::new(),
            r2t_sn: 0,
        };
        self.tasks.insert(
            itt,
            Task {
                lun_field: h.lun,
                phase: Phase::Collecting(state),
            },
        );
        self.progress_write(itt);
        self.update_window();
        Ok(())
    }

    pub(super) fn handle_data_out(
        &mut self,
        h: pdu::DataOut,
        data: Payload<'_>,
    ) -> Result<(), TargetError> {
        let itt = h.initiator_task_tag;
        let Some(task) = self.tasks.get_mut(&itt) else {
            // A task already answered (refused, aborted): its data is dropped.
            tracing::debug!(itt, "Data-Out for no task in progress; dropped");
            return Ok(());
        };
        let Phase::Collecting(write) = &mut task.phase else {
            return Err(TargetError::DataOutNotExpected { itt });
        };
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        // Data placed by the receiver comes back with the buffer it was lent.
        let (staged, copied) = match data {
            Payload::Bytes(bytes) => (Some(bytes), bytes.len()),
            Payload::Placed(placement) => {
                if placement.new_command || placement.itt != itt || !write.buffer.is_empty() {
                    // Cannot happen: the placement was made for this task's header.
                    return Err(TargetError::DataOutNotExpected { itt });
                }
                write.buffer = placement.buffer;
                (None, placement.copied)
            }
        };
        write.check_data_out(itt, &h, len)?;
        let offset = h.buffer_offset;
        let end = offset + len;
        if h.target_transfer_tag == RESERVED_TAG {
            write.unsolicited_data_sn += 1;
            write.unsolicited_next = end;
            if h.final_pdu && end < write.unsolicited_end {
                // The initiator ended its unsolicited burst early.
                write.unsolicited_end = end;
                write.next_r2t_offset = end;
            }
        } else if let Some(index) = write
            .r2ts
            .iter()
            .position(|r| r.ttt == h.target_transfer_tag)
        {
            let r2t = &mut write.r2ts[index];
            r2t.data_sn += 1;
            r2t.next = end;
            if r2t.next == r2t.end {
                write.r2ts.swap_remove(index);
            }
        }
        if let (Some(bytes), Some(dst)) =
            (staged, write.buffer.get_mut(offset as usize..end as usize))
        {
            dst.copy_from_slice(bytes);
        }
        write.received += len;
        self.count_write_data(len as usize, copied);
        self.progress_write(itt);
        Ok(())
    }

    /// Sends R2Ts while allowed, or hands the write to the logical unit once all is in.
    fn progress_write(&mut self, itt: Tag) {
        let max_r2t = usize::from(self.params.max_outstanding_r2t.max(1));
        let max_burst = self.params.max_burst_length.max(512);
        let mut r2ts = Vec::new();
        let Some(task) = self.tasks.get_mut(&itt) else {
            return;
        };
        let lun_field = task.lun_field;
        let Phase::Collecting(write) = &mut task.phase else {
            return;
        };
        let edtl = write.edtl;
        if write.received >= edtl {
            let r2ts_sent = write.r2t_sn;
            let request = CommandRequest {
                id: CommandId(itt),
                lun: write.lun,
                cdb: std::mem::take(&mut write.cdb),
                data_out: std::mem::take(&mut write.buffer),
                expected_data_in_len: 0,
            };
            task.phase = Phase::Running {
                read: false,
                edtl,
                r2ts_sent,
            };
            self.ready.push_back(request);
            return;
        }
        let unsolicited_done = write.unsolicited_next >= write.unsolicited_end;
        while unsolicited_done && write.r2ts.len() < max_r2t && write.next_r2t_offset < edtl {
            let offset = write.next_r2t_offset;
            let len = max_burst.min(edtl - offset);
            write.next_r2t_offset += len;
            r2ts.push((offset, len, write.r2t_sn));
            write.r2t_sn += 1;
            write.r2ts.push(OpenR2t {
                ttt: 0,
                end: offset + len,
                next: offset,
                data_sn: 0,
            });
        }
        // Tags are allocated outside the borrow of the task.
        let mut ttts = Vec::with_capacity(r2ts.len());
        for _ in &r2ts {
            ttts.push(self.allocate_ttt());
        }
        if let Some(Task {
            phase: Phase::Collecting(write),
            ..
        }) = self.tasks.get_mut(&itt)
        {
            let first_new = write.r2ts.len() - r2ts.len();
            for (r2t, ttt) in write.r2ts[first_new..].iter_mut().zip(&ttts) {
                r2t.ttt = *ttt;
            }
        }
        for ((offset, len, r2t_sn), ttt) in r2ts.into_iter().zip(ttts) {
            self.stats.r2ts += 1;
            let stat_sn = self.stat_sn;
            self.push(
                Header::R2t(pdu::R2t {
                    lun: lun_field,
                    initiator_task_tag: itt,
                    target_transfer_tag: ttt,
                    stat_sn,
                    exp_cmd_sn: 0,
                    max_cmd_sn: 0,
                    r2t_sn,
                    buffer_offset: offset,
                    desired_data_transfer_length: len,
                }),
                Vec::new(),
            );
        }
    }

    /// Hands back what the logical unit made of a command from
    /// [`TargetSession::poll_command`]. A command aborted meanwhile is dropped silently.
    pub fn complete_command(&mut self, id: CommandId, result: CommandResult) {
        let itt = id.0;
        let Some(task) = self.tasks.remove(&itt) else {
            return;
        };
        let Phase::Running {
            read,
            edtl,
            r2ts_sent,
        } = task.phase
        else {
            return;
        };
        let CommandResult {
            status,
            sense,
            data_in,
            data_out_wanted,
        } = result;
        let produced = u32::try_from(data_in.len()).unwrap_or(u32::MAX);
        let send_len = if read { produced.min(edtl) } else { 0 };
        let residual = if !read {
            match data_out_wanted {
                Some(wanted) if wanted < edtl => (true, false, edtl - wanted),
                Some(wanted) if wanted > edtl => (false, true, wanted - edtl),
                _ => (false, false, 0),
            }
        } else if produced < edtl {
            (true, false, edtl - produced)
        } else if produced > edtl {
            (false, true, produced - edtl)
        } else {
            (false, false, 0)
        };
        if send_len == 0 {
            self.send_scsi_response(
                Outgoing::CommandStatus,
                itt,
                status,
                &sense,
                r2ts_sent,
                residual,
            );
            self.update_window();
            return;
        }
        self.stats.bytes_read += u64::from(send_len);
        let status_in_data = status == status::GOOD && sense.is_empty();
        let status_info = status_in_data.then(|| Status {
            status,
            stat_sn: self.take_stat_sn(),
            underflow: residual.0,
            overflow: residual.1,
            residual: residual.2,
        });
        let pdus = self.data_in_pdu_count(send_len);
        self.enqueue(Outgoing::DataIn(ReadReply {
            itt,
            lun_field: task.lun_field,
            data: Arc::new(data_in),
            len: send_len,
            offset: 0,
            data_sn: 0,
            burst_left: self.params.max_burst_length.max(512),
            status: status_info,
        }));
        if !status_in_data {
            self.send_scsi_response(Outgoing::CommandStatus, itt, status, &sense, pdus, residual);
        }
        self.update_window();
    }

    /// How many Data-In PDUs `len` bytes take (for the SCSI Response's ExpDataSN).
    fn data_in_pdu_count(&self, len: u32) -> u32 {
        let segment = self.params.initiator_max_recv_data_segment_length.max(512);
        let burst = self.params.max_burst_length.max(512);
        let full_bursts = len / burst;
        let last = len % burst;
        full_bursts * burst.div_ceil(segment) + last.div_ceil(segment)
    }

    /// Queues a SCSI Response as `entry` ([`Outgoing::Pdu`] for a command refused before
    /// the window counted it, [`Outgoing::CommandStatus`] for one that ends an accepted
    /// command, which holds its window slot until sent).
    fn send_scsi_response(
        &mut self,
        entry: fn(Transmit) -> Outgoing,
        itt: Tag,
        status: u8,
        sense: &[u8],
        exp_data_sn: u32,
        residual: (bool, bool, u32),
    ) {
        let transmit = self.scsi_response(itt, status, sense, exp_data_sn, residual);
        self.enqueue(entry(transmit));
    }

    fn scsi_response(
        &mut self,
        itt: Tag,
        status: u8,
        sense: &[u8],
        exp_data_sn: u32,
        (underflow, overflow, residual): (bool, bool, u32),
    ) -> Transmit {
        let mut data = Vec::new();
        if !sense.is_empty() {
            let sense = sense.get(..u16::MAX as usize).unwrap_or(sense);
            // Cannot fail: the length fits in 16 bits.
            let _ = pdu::encode_scsi_response_data(sense, &[], &mut data);
        }
        let stat_sn = self.take_stat_sn();
        self.transmit(
            Header::ScsiResponse(pdu::ScsiResponse {
                bidi_read_overflow: false,
                bidi_read_underflow: false,
                overflow,
                underflow,
                response: 0,
                status,
                initiator_task_tag: itt,
                snack_tag: 0,
                stat_sn,
                exp_cmd_sn: 0,
                max_cmd_sn: 0,
                exp_data_sn,
                bidi_read_residual_count: 0,
                residual_count: residual,
            }),
            data,
        )
    }

    /// Cuts the next Data-In PDU of `reply`; `true` when it was the last.
    pub(super) fn next_data_in(&mut self, reply: &mut ReadReply) -> (Transmit, bool) {
        let segment = self.params.initiator_max_recv_data_segment_length.max(512);
        let remaining = reply.len - reply.offset;
        let len = segment.min(remaining).min(reply.burst_left);
        let last = len == remaining;
        let end_of_burst = last || len == reply.burst_left;
        let status = if last { reply.status } else { None };
        let header = Header::DataIn(pdu::DataIn {
            final_pdu: end_of_burst,
            acknowledge: false,
            overflow: status.is_some_and(|s| s.overflow),
            underflow: status.is_some_and(|s| s.underflow),
            status: status.map(|s| s.status),
            lun: reply.lun_field,
            initiator_task_tag: reply.itt,
            target_transfer_tag: RESERVED_TAG,
            stat_sn: status.map_or(0, |s| s.stat_sn),
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            data_sn: reply.data_sn,
            buffer_offset: reply.offset,
            residual_count: status.map_or(0, |s| s.residual),
        });
        let transmit = Transmit {
            header,
            data: TransmitData::Shared {
                buffer: Arc::clone(&reply.data),
                offset: reply.offset as usize,
                len: len as usize,
            },
            digests: self.digests,
        };
        reply.offset += len;
        reply.data_sn += 1;
        reply.burst_left -= len;
        if reply.burst_left == 0 {
            reply.burst_left = self.params.max_burst_length.max(512);
        }
        (transmit, last)
    }
}

impl WriteState {
    /// Whether a Data-Out of `len` bytes for task `itt` fits this write now: at the offset
    /// and DataSN its burst expects (unsolicited, or of the R2T its TTT names) and within
    /// the buffer. Changes nothing, so the receiver can ask before the data is in.
    fn check_data_out(&self, itt: Tag, h: &pdu::DataOut, len: u32) -> Result<(), TargetError> {
        let offset = h.buffer_offset;
        let end = offset
            .checked_add(len)
            .ok_or(TargetError::DataOutOverflow { itt, offset, len })?;
        let (burst, expected, limit, data_sn) = if h.target_transfer_tag == RESERVED_TAG {
            (
                Burst::Unsolicited,
                self.unsolicited_next,
                self.unsolicited_end,
                self.unsolicited_data_sn,
            )
        } else {
            let ttt = h.target_transfer_tag;
            let Some(r2t) = self.r2ts.iter().find(|r| r.ttt == ttt) else {
                return Err(TargetError::UnknownTargetTransferTag {
                    opcode: pdu::Opcode::DataOut,
                    itt,
                    ttt,
                });
            };
            (Burst::Solicited { ttt }, r2t.next, r2t.end, r2t.data_sn)
        };
        if offset != expected || end > limit {
            return Err(TargetError::DataOutOutOfPlace {
                itt,
                burst,
                offset,
                len,
                expected,
                end: limit,
            });
        }
        if h.data_sn != data_sn {
            return Err(TargetError::DataSnMismatch {
                itt,
                burst,
                expected: data_sn,
                got: h.data_sn,
            });
        }
        if end > self.edtl || self.buffer.len() != self.edtl as usize {
            return Err(TargetError::DataOutPastEnd {
                itt,
                offset,
                len,
                edtl: self.edtl,
            });
        }
        Ok(())
    }
}
