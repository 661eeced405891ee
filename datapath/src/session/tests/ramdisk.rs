//! Thousands of random reads and writes through a small scripted target model (a RAM disk
//! on typed headers), across window changes, R2T splits, random Data-In sizes and
//! interleaving. Seeded and bounded: a failure replays from its seed.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::*;
use crate::pdu::{SerialNumber, RESERVED_TAG};
use crate::text::OperationalParams;

const BLOCK: usize = 512;
const BLOCKS: usize = 512;
const MAX_IO_BLOCKS: u64 = 64;

/// xorshift64*: small, seeded, good enough to pick sizes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

struct R2tState {
    ttt: u32,
    offset: u32,
    len: u32,
    got: u32,
    next_data_sn: u32,
}

struct WriteTask {
    disk_offset: usize,
    edtl: u32,
    data: Vec<u8>,
    received: u32,
    unsolicited_end: u32,
    unsolicited_next_offset: u32,
    unsolicited_data_sn: u32,
    next_r2t_offset: u32,
    next_r2t_sn: u32,
    r2ts: Vec<R2tState>,
}

/// The target: executes reads at once and writes when their data is whole, in CmdSN order.
struct Model {
    disk: Vec<u8>,
    p: OperationalParams,
    exp_cmd_sn: u32,
    max_cmd_sn: u32,
    stat_sn: u32,
    queues: BTreeMap<u32, VecDeque<(Header, Vec<u8>)>>,
    writes: HashMap<u32, WriteTask>,
    next_ttt: u32,
}

impl Model {
    fn grow_window(&mut self, rng: &mut Rng) {
        let proposed = self
            .exp_cmd_sn
            .wrapping_sub(1)
            .wrapping_add(rng.below(6) as u32);
        if SerialNumber(proposed) > SerialNumber(self.max_cmd_sn) {
            self.max_cmd_sn = proposed;
        }
    }

    fn queue(&mut self, itt: u32, header: Header, data: Vec<u8>) {
        self.queues
            .entry(itt)
            .or_default()
            .push_back((header, data));
    }

    fn receive(&mut self, rng: &mut Rng, header: Header, data: Vec<u8>) {
        match header {
            Header::ScsiCommand(c) => {
                assert_eq!(c.cmd_sn, self.exp_cmd_sn, "commands arrive in CmdSN order");
                assert!(
                    SerialNumber(c.cmd_sn) <= SerialNumber(self.max_cmd_sn),
                    "CmdSN {} beyond MaxCmdSN {}",
                    c.cmd_sn,
                    self.max_cmd_sn
                );
                self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
                self.grow_window(rng);
                let lba = u32::from_be_bytes(c.cdb[2..6].try_into().unwrap()) as usize;
                let blocks = u16::from_be_bytes([c.cdb[7], c.cdb[8]]) as usize;
                let disk_offset = lba * BLOCK;
                let len = blocks * BLOCK;
                if c.read {
                    assert!(data.is_empty());
                    self.read(
                        rng,
                        c.initiator_task_tag,
                        c.expected_data_transfer_length,
                        disk_offset,
                        len,
                    );
                } else {
                    assert!(c.write);
                    assert_eq!(c.expected_data_transfer_length as usize, len);
                    self.start_write(c, disk_offset, data);
                }
            }
            Header::DataOut(d) => self.data_out(d, data),
            other => panic!("target model got {other:?}"),
        }
    }

    fn read(&mut self, rng: &mut Rng, itt: u32, edtl: u32, disk_offset: usize, len: usize) {
        let mrdsl = self.p.initiator_max_recv_data_segment_length as u64;
        let mut pieces = Vec::new();
        let mut at = 0;
        while at < len {
            let n = rng.range(1, mrdsl.min((len - at) as u64)) as usize;
            pieces.push((at, n));
            at += n;
        }
        if !self.p.data_pdu_in_order {
            for i in (1..pieces.len()).rev() {
                pieces.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        let residual = edtl - len as u32;
        let status_in_data = rng.chance(50);
        let count = pieces.len();
        for (data_sn, (at, n)) in pieces.into_iter().enumerate() {
            let last = data_sn + 1 == count;
            let with_status = last && status_in_data;
            let header = Header::DataIn(pdu::DataIn {
                final_pdu: last,
                acknowledge: false,
                overflow: false,
                underflow: with_status && residual > 0,
                status: with_status.then_some(0),
                lun: [0; 8],
                initiator_task_tag: itt,
                target_transfer_tag: RESERVED_TAG,
                stat_sn: 0,
                exp_cmd_sn: 0,
                max_cmd_sn: 0,
                data_sn: data_sn as u32,
                buffer_offset: at as u32,
                residual_count: if with_status { residual } else { 0 },
            });
            let bytes = self.disk[disk_offset + at..disk_offset + at + n].to_vec();
            self.queue(itt, header, bytes);
        }
        if !status_in_data {
            self.respond(itt, residual);
        }
    }

    fn respond(&mut self, itt: u32, underflow: u32) {
        let header = Header::ScsiResponse(pdu::ScsiResponse {
            bidi_read_overflow: false,
            bidi_read_underflow: false,
            overflow: false,
            underflow: underflow > 0,
            response: 0,
            status: 0,
            initiator_task_tag: itt,
            snack_tag: 0,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            exp_data_sn: 0,
            bidi_read_residual_count: 0,
            residual_count: underflow,
        });
        self.queue(itt, header, Vec::new());
    }

    fn start_write(&mut self, c: pdu::ScsiCommand, disk_offset: usize, immediate: Vec<u8>) {
        let edtl = c.expected_data_transfer_length;
        let p = &self.p;
        let max_immediate = if p.immediate_data {
            p.first_burst_length
                .min(p.target_max_recv_data_segment_length)
        } else {
            0
        };
        assert!(
            immediate.len() as u32 <= max_immediate.min(edtl),
            "immediate data over its limit"
        );
        let unsolicited_end = if p.initial_r2t {
            immediate.len() as u32
        } else {
            edtl.min(p.first_burst_length)
        };
        assert_eq!(
            c.final_pdu,
            unsolicited_end == immediate.len() as u32,
            "F bit names unsolicited Data-Out"
        );
        let mut data = vec![0; edtl as usize];
        data[..immediate.len()].copy_from_slice(&immediate);
        let itt = c.initiator_task_tag;
        self.writes.insert(
            itt,
            WriteTask {
                disk_offset,
                edtl,
                data,
                received: immediate.len() as u32,
                unsolicited_end,
                unsolicited_next_offset: immediate.len() as u32,
                unsolicited_data_sn: 0,
                next_r2t_offset: unsolicited_end,
                next_r2t_sn: 0,
                r2ts: Vec::new(),
            },
        );
        self.solicit(itt);
        self.maybe_finish_write(itt);
    }

    /// Sends R2Ts while MaxOutstandingR2T allows.
    fn solicit(&mut self, itt: u32) {
        let max_outstanding = self.p.max_outstanding_r2t as usize;
        let max_burst = self.p.max_burst_length;
        let mut r2ts = Vec::new();
        {
            let w = self.writes.get_mut(&itt).unwrap();
            while w.r2ts.len() < max_outstanding && w.next_r2t_offset < w.edtl {
                let len = max_burst.min(w.edtl - w.next_r2t_offset);
                self.next_ttt = self.next_ttt.wrapping_add(1) & 0x7fff_ffff;
                let ttt = self.next_ttt;
                w.r2ts.push(R2tState {
                    ttt,
                    offset: w.next_r2t_offset,
                    len,
                    got: 0,
                    next_data_sn: 0,
                });
                r2ts.push(Header::R2t(pdu::R2t {
                    lun: [0; 8],
                    initiator_task_tag: itt,
                    target_transfer_tag: ttt,
                    stat_sn: 0,
                    exp_cmd_sn: 0,
                    max_cmd_sn: 0,
                    r2t_sn: w.next_r2t_sn,
                    buffer_offset: w.next_r2t_offset,
                    desired_data_transfer_length: len,
                }));
                w.next_r2t_sn += 1;
                w.next_r2t_offset += len;
            }
        }
        for r2t in r2ts {
            self.queue(itt, r2t, Vec::new());
        }
    }

    fn data_out(&mut self, d: pdu::DataOut, data: Vec<u8>) {
        assert!(
            data.len() as u32 <= self.p.target_max_recv_data_segment_length,
            "Data-Out over target MRDSL"
        );
        let itt = d.initiator_task_tag;
        let w = self
            .writes
            .get_mut(&itt)
            .expect("Data-Out for a live write");
        let len = data.len() as u32;
        let mut r2t_done = false;
        if d.target_transfer_tag == RESERVED_TAG {
            assert_eq!(d.data_sn, w.unsolicited_data_sn);
            assert_eq!(d.buffer_offset, w.unsolicited_next_offset);
            w.unsolicited_data_sn += 1;
            w.unsolicited_next_offset += len;
            assert!(w.unsolicited_next_offset <= w.unsolicited_end);
            assert_eq!(d.final_pdu, w.unsolicited_next_offset == w.unsolicited_end);
        } else {
            let i = w
                .r2ts
                .iter()
                .position(|r| r.ttt == d.target_transfer_tag)
                .expect("TTT of a live R2T");
            let r = &mut w.r2ts[i];
            assert_eq!(
                d.data_sn, r.next_data_sn,
                "DataSN restarts per R2T sequence"
            );
            assert_eq!(d.buffer_offset, r.offset + r.got);
            r.next_data_sn += 1;
            r.got += len;
            assert!(r.got <= r.len);
            assert_eq!(
                d.final_pdu,
                r.got == r.len,
                "F bit on the last Data-Out of the sequence"
            );
            if d.final_pdu {
                w.r2ts.remove(i);
                r2t_done = true;
            }
        }
        let at = d.buffer_offset as usize;
        w.data[at..at + data.len()].copy_from_slice(&data);
        w.received += len;
        if r2t_done {
            self.solicit(itt);
        }
        self.maybe_finish_write(itt);
    }

    fn maybe_finish_write(&mut self, itt: u32) {
        let w = &self.writes[&itt];
        if w.received < w.edtl {
            return;
        }
        let w = self.writes.remove(&itt).unwrap();
        self.disk[w.disk_offset..w.disk_offset + w.data.len()].copy_from_slice(&w.data);
        self.respond(itt, 0);
    }

    /// Stamps the numbering current at delivery.
    fn stamp(&mut self, header: &mut Header) {
        let (exp, max) = (self.exp_cmd_sn, self.max_cmd_sn);
        let mut status_sn = || {
            let sn = self.stat_sn;
            self.stat_sn = sn.wrapping_add(1);
            sn
        };
        match header {
            Header::DataIn(d) => {
                d.stat_sn = if d.status.is_some() { status_sn() } else { 0 };
                (d.exp_cmd_sn, d.max_cmd_sn) = (exp, max);
            }
            Header::ScsiResponse(r) => {
                r.stat_sn = status_sn();
                (r.exp_cmd_sn, r.max_cmd_sn) = (exp, max);
            }
            Header::R2t(r) => (r.exp_cmd_sn, r.max_cmd_sn) = (exp, max),
            _ => {}
        }
    }

    /// One PDU from a random task's queue (per-task order kept, tasks interleaved).
    fn pop_random(&mut self, rng: &mut Rng) -> Option<(Header, Vec<u8>)> {
        let live: Vec<u32> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(k, _)| *k)
            .collect();
        if live.is_empty() {
            return None;
        }
        let itt = live[rng.below(live.len() as u64) as usize];
        let queue = self.queues.get_mut(&itt)?;
        let (mut header, data) = queue.pop_front()?;
        if queue.is_empty() {
            self.queues.remove(&itt);
        }
        self.stamp(&mut header);
        Some((header, data))
    }
}

struct Op {
    write: bool,
    disk_offset: usize,
    len: usize,
    extra: u32,
    data: Vec<u8>,
}

fn run(seed: u64, ops: usize) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut cfg = config();
    // Every combination of ImmediateData and InitialR2T, by the seed's low bits.
    cfg.offer.immediate_data = seed & 1 == 1;
    cfg.offer.initial_r2t = seed & 2 == 0;
    cfg.offer.data_pdu_in_order = rng.chance(50);
    cfg.offer.max_recv_data_segment_length = rng.range(512, 16384) as u32;
    cfg.offer.max_burst_length = rng.range(512, 65536) as u32;
    cfg.offer.first_burst_length = rng.range(512, 65536) as u32;
    cfg.offer.max_outstanding_r2t = rng.range(1, 4) as u16;
    cfg.max_outstanding_commands = rng.range(1, 16) as usize;
    cfg.max_queued_commands = 8;
    cfg.initial_cmd_sn = if rng.chance(50) {
        0xffff_fff0
    } else {
        rng.next() as u32
    };
    let t = TargetParams {
        mrdsl: rng.range(512, 16384) as u32,
        max_burst: rng.range(512, 65536) as u32,
        first_burst: rng.range(512, 65536) as u32,
        immediate_data: true,
        initial_r2t: false,
        max_outstanding_r2t: rng.range(1, 4) as u16,
        data_pdu_in_order: rng.chance(50),
    };
    let initial = cfg.initial_cmd_sn;
    let mut h = Harness::new(cfg);
    h.exp_cmd_sn = initial;
    h.max_cmd_sn = initial; // a window of one to start
    h.login_none(&t);
    let p = h.s.params().unwrap().clone();
    let mut model = Model {
        disk: rng.bytes(BLOCK * BLOCKS),
        p,
        exp_cmd_sn: initial,
        max_cmd_sn: initial,
        stat_sn: h.stat_sn,
        queues: BTreeMap::new(),
        writes: HashMap::new(),
        next_ttt: 0,
    };
    let mut shadow = model.disk.clone();
    let mut inflight: HashMap<TaskId, Op> = HashMap::new();
    let mut completed = 0usize;
    let mut submitted = 0usize;

    let mut step = 0usize;
    while completed < ops {
        step += 1;
        assert!(
            step < ops * 50,
            "seed {seed}: no progress ({completed} of {ops} done)"
        );
        // Submit a few commands on ranges no command in flight touches.
        for _ in 0..rng.below(4) {
            if submitted >= ops {
                break;
            }
            let blocks = rng.range(1, MAX_IO_BLOCKS) as usize;
            let lba = rng.below((BLOCKS - blocks) as u64 + 1) as usize;
            let (start, len) = (lba * BLOCK, blocks * BLOCK);
            if inflight
                .values()
                .any(|o| start < o.disk_offset + o.len && o.disk_offset < start + len)
            {
                continue;
            }
            let write = rng.chance(50);
            let mut cdb = vec![if write { 0x2a } else { 0x28 }, 0];
            cdb.extend_from_slice(&(lba as u32).to_be_bytes());
            cdb.push(0);
            cdb.extend_from_slice(&(blocks as u16).to_be_bytes());
            cdb.push(0);
            let (request, op) = if write {
                let data = rng.bytes(len);
                (
                    write_request(data.clone()),
                    Op {
                        write,
                        disk_offset: start,
                        len,
                        extra: 0,
                        data,
                    },
                )
            } else {
                // Sometimes expect more than the CDB asks for: the target reports an underflow.
                let extra = if rng.chance(20) {
                    rng.range(1, 1024) as u32
                } else {
                    0
                };
                let edtl = len as u32 + extra;
                (
                    read_request(edtl),
                    Op {
                        write,
                        disk_offset: start,
                        len,
                        extra,
                        data: Vec::new(),
                    },
                )
            };
            let cdb = Cdb::from_bytes(&cdb, request.cdb.direction()).expect("10 bytes");
            let request = Request { cdb, ..request };
            match h.s.submit(h.now, request) {
                Ok(id) => {
                    inflight.insert(id, op);
                    submitted += 1;
                }
                Err(e) => {
                    assert_eq!(e.reason, SubmitRejection::QueueFull);
                    break;
                }
            }
        }
        // Carry PDUs both ways for a while.
        for _ in 0..rng.range(1, 8) {
            while let Some((header, data)) = h.sent() {
                model.receive(&mut rng, header, data);
            }
            match model.pop_random(&mut rng) {
                Some((header, data)) => {
                    if let Err(e) = h.deliver(header, &data) {
                        panic!("seed {seed}: session failed: {e}");
                    }
                }
                None if !inflight.is_empty() => {
                    // Nothing to say but commands wait: the window is shut. Open it with a
                    // NOP-In carrying a larger MaxCmdSN.
                    let opened = model.exp_cmd_sn.wrapping_add(rng.below(4) as u32);
                    if SerialNumber(opened) > SerialNumber(model.max_cmd_sn) {
                        model.max_cmd_sn = opened;
                    }
                    let nop = Header::NopIn(pdu::NopIn {
                        lun: [0; 8],
                        initiator_task_tag: RESERVED_TAG,
                        target_transfer_tag: RESERVED_TAG,
                        stat_sn: model.stat_sn,
                        exp_cmd_sn: model.exp_cmd_sn,
                        max_cmd_sn: model.max_cmd_sn,
                    });
                    h.deliver(nop, &[]).unwrap();
                }
                None => break,
            }
        }
        for event in h.events() {
            let Event::CommandComplete(id, result) = event else {
                panic!("seed {seed}: {event:?}")
            };
            let op = inflight
                .remove(&id)
                .expect("completion of a command in flight");
            let outcome = result.unwrap_or_else(|f| panic!("seed {seed}: command failed: {f}"));
            assert_eq!(outcome.status, 0);
            if op.write {
                assert_eq!(outcome.transferred as usize, op.len);
                assert_eq!(
                    outcome.buffer, op.data,
                    "write buffer handed back unchanged"
                );
                shadow[op.disk_offset..op.disk_offset + op.len].copy_from_slice(&op.data);
            } else {
                let expected_residual = if op.extra > 0 {
                    Residual::Underflow(op.extra)
                } else {
                    Residual::None
                };
                assert_eq!(outcome.residual, expected_residual, "seed {seed}");
                assert_eq!(outcome.transferred as usize, op.len);
                assert_eq!(
                    &outcome.buffer[..op.len],
                    &shadow[op.disk_offset..op.disk_offset + op.len],
                    "seed {seed}: read data differs"
                );
            }
            completed += 1;
        }
    }
    assert!(inflight.is_empty());
    assert_eq!(
        model.disk, shadow,
        "seed {seed}: disk differs from the writes acknowledged"
    );
    let stats = h.s.stats();
    assert_eq!(stats.commands_completed as usize, ops);
    assert_eq!(stats.commands_failed, 0);
}

#[test]
fn random_reads_and_writes_round_trip_exactly() {
    for seed in 1..=12 {
        run(seed, 300);
    }
}
