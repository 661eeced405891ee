//! A software model of a dependent iSCSI adapter (the kind bnx2i, qedi and cxgb4i drive in
//! Linux): the host's session makes the PDUs; the adapter frames them (RFC 7143 section
//! 11.1), computes and checks CRC32C digests when it offloads them (section 13.1), carries
//! TCP, and places Data-In payload (section 11.7) into the host buffer registered for the
//! Initiator Task Tag, received from the socket straight into it.
//!
//! Each queue pair has two engine threads: a transmit engine that sleeps on the
//! submission doorbell and writes PDUs, and a receive engine that reads PDUs (framed with
//! `datapath::pdu::frame`, parsed with `Header::parse`) and posts them to the completion
//! ring. They share no lock: the transmit engine hands the receive engine Data-In
//! placements and the connection parameters through a bounded channel, in stream order.
//!
//! After the final Login Response (T bit, next stage full feature, status 0) the receive
//! engine waits for the host's [`DependentSubmission::SetConnection`] before it reads on:
//! digests and the receive limit change right there in the byte stream.
//!
//! Faults ([`Faults`]): a dropped submission entry, an injected reset and a transmit error
//! stop the engines and post the fault; a digest mismatch or a framing error stops them
//! from the receive side. The host then resets the queue pair and connects again.

use std::collections::HashMap;
use std::io::Read;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use datapath::adapter::{
    queue_pair, AdapterError, AdapterFault, AdapterInfo, Capabilities, ConnectionInfo,
    ConnectionParams, Consumer, DependentAdapter, DependentAdapterQueue, DependentCompletion,
    DependentHostQueue, DependentSubmission, DigestKind, HostRegion, NetworkConfig, Notifier,
    PduData, PduSubmission, Producer, ReceivedData, ReceivedPdu,
};
use datapath::pdu::{self, digest, Digests, Header, Limits, LoginStage, Tag, BHS_LEN};
use datapath::transport::TransportKind;

use crate::cpu::CpuMeter;
use crate::faults::Faults;
use crate::net;
use crate::slots;
use crate::wire::{after, post_waiting, write_all_vectored, FAULT_POST_WAIT};

/// Largest AHS the models accept or emit, in bytes.
const MAX_AHS_BYTES: usize = 1024;
/// Longest the receive engine waits for the host's connection parameters after login.
const PARAMS_WAIT: Duration = Duration::from_secs(30);
/// How long an idle engine sleeps before it looks at its stop flag again.
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// How a [`DependentModel`] is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependentModelConfig {
    pub name: String,
    pub queue_pairs: usize,
    pub submission_entries: usize,
    pub completion_entries: usize,
    /// Compute and check HeaderDigest (else the host does).
    pub header_digest_offload: bool,
    /// Compute and check DataDigest (else the host does).
    pub data_digest_offload: bool,
    /// Place Data-In into registered host buffers (else hand payload up in the entry).
    pub direct_data_placement: bool,
    pub max_pdu_bytes: u32,
    pub max_io_bytes: u32,
}

impl Default for DependentModelConfig {
    fn default() -> Self {
        DependentModelConfig {
            name: "model-dependent0".into(),
            queue_pairs: 1,
            submission_entries: 256,
            completion_entries: 512,
            header_digest_offload: true,
            data_digest_offload: true,
            direct_data_placement: true,
            max_pdu_bytes: 256 * 1024,
            max_io_bytes: 16 * 1024 * 1024,
        }
    }
}

/// A dependent adapter model. See the module docs.
pub struct DependentModel {
    config: DependentModelConfig,
    caps: Capabilities,
    faults: Faults,
    cpu: CpuMeter,
    queue_pairs: Vec<Mutex<QueuePairSlot>>,
}

impl std::fmt::Debug for DependentModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DependentModel")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The control-plane state of one queue pair (never touched by the engines).
struct QueuePairSlot {
    host: Option<DependentHostQueue>,
    /// The adapter's end while no engines run.
    idle: Option<DependentAdapterQueue>,
    engines: Option<Engines>,
    adapter_wake: Arc<Notifier>,
}

struct Engines {
    stream: TcpStream,
    stop: Arc<AtomicBool>,
    completions: Producer<DependentCompletion>,
    tx: JoinHandle<Consumer<DependentSubmission>>,
    rx: JoinHandle<()>,
}

/// What the transmit engine tells the receive engine, in stream order.
enum RxControl {
    Register(Tag, HostRegion),
    Params(ConnectionParams),
}

impl DependentModel {
    pub fn new(config: DependentModelConfig) -> Arc<DependentModel> {
        let caps = Capabilities {
            header_digest: config.header_digest_offload,
            data_digest: config.data_digest_offload,
            direct_data_placement: config.direct_data_placement,
            tcp_offload: true,
            max_pdu_bytes: config.max_pdu_bytes,
            max_io_bytes: config.max_io_bytes,
            queue_pairs: config.queue_pairs.min(u16::MAX as usize) as u16,
        };
        let queue_pairs = (0..config.queue_pairs)
            .map(|_| {
                let adapter_wake = Notifier::new();
                let (host, adapter) = queue_pair(
                    config.submission_entries,
                    config.completion_entries,
                    Notifier::new(),
                    adapter_wake.clone(),
                );
                Mutex::new(QueuePairSlot {
                    host: Some(host),
                    idle: Some(adapter),
                    engines: None,
                    adapter_wake,
                })
            })
            .collect();
        Arc::new(DependentModel {
            config,
            caps,
            faults: Faults::new(),
            cpu: CpuMeter::new(),
            queue_pairs,
        })
    }

    /// The fault hooks.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    fn slot(&self, index: usize) -> Result<std::sync::MutexGuard<'_, QueuePairSlot>, AdapterError> {
        slots::lock(&self.queue_pairs, index)
    }

    /// Stops a queue pair's engines and takes its adapter end back, its submission ring
    /// emptied.
    fn stop_engines(&self, slot: &mut QueuePairSlot) {
        let Some(engines) = slot.engines.take() else {
            return;
        };
        engines.stop.store(true, Ordering::SeqCst);
        let _ = engines.stream.shutdown(Shutdown::Both);
        slot.adapter_wake.wake();
        let submissions = engines.tx.join();
        let _ = engines.rx.join();
        if let Ok(mut submissions) = submissions {
            // Queue reset: entries not taken are dropped unsent (and retired).
            submissions.discard_all();
            slot.idle = Some(DependentAdapterQueue {
                submissions,
                completions: engines.completions,
            });
        }
        self.faults.clear_stall();
    }
}

impl DependentAdapter for DependentModel {
    fn info(&self) -> AdapterInfo {
        AdapterInfo {
            name: self.config.name.clone(),
            kind: TransportKind::Dependent,
            capabilities: self.caps,
        }
    }

    fn cpu_time(&self) -> Duration {
        self.cpu.total()
    }

    fn take_queue_pair(&self, index: usize) -> Result<DependentHostQueue, AdapterError> {
        self.slot(index)?
            .host
            .take()
            .ok_or(AdapterError::QueuePairTaken(index))
    }

    fn connect(
        &self,
        index: usize,
        network: &NetworkConfig,
    ) -> Result<ConnectionInfo, AdapterError> {
        let mut slot = self.slot(index)?;
        self.stop_engines(&mut slot);
        let portal = network.portal;
        let connect_error = |e: std::io::Error| AdapterError::Connect {
            portal,
            reason: e.to_string(),
        };
        let stream = net::connect(portal, network.local_addr, network.connect_timeout)
            .map_err(connect_error)?;
        // A link cut silently fails the connection after this (the host session's pings
        // notice it too): the host's liveness settings, handed down.
        net::set_user_timeout(&stream, network.tcp_user_timeout).map_err(connect_error)?;
        let info = ConnectionInfo {
            local_addr: stream.local_addr().map_err(connect_error)?,
            peer_addr: stream.peer_addr().map_err(connect_error)?,
        };
        let tx_stream = stream.try_clone().map_err(connect_error)?;
        let rx_stream = stream.try_clone().map_err(connect_error)?;
        let Some(queue) = slot.idle.take() else {
            return Err(AdapterError::EngineStopped {
                index,
                reason: "the engines of the last connection did not hand the queue back".into(),
            });
        };
        let stop = Arc::new(AtomicBool::new(false));
        // Bounded: one entry per command in flight plus the parameters, far below this.
        let (control_tx, control_rx) = crossbeam_channel::bounded(4096);
        let rx = RxEngine {
            index,
            stream: rx_stream,
            completions: queue.completions.clone(),
            control: control_rx,
            caps: self.caps,
            faults: self.faults.clone(),
            stop: stop.clone(),
            cpu: self.cpu.clone(),
            digests: Digests::default(),
            limits: Limits::login(),
            registrations: HashMap::new(),
        };
        let tx = TxEngine {
            index,
            stream: tx_stream,
            submissions: queue.submissions,
            completions: queue.completions.clone(),
            control: control_tx,
            caps: self.caps,
            faults: self.faults.clone(),
            stop: stop.clone(),
            cpu: self.cpu.clone(),
            digests: Digests::default(),
        };
        let spawn_error = |e: std::io::Error| AdapterError::EngineStopped {
            index,
            reason: format!("spawning an engine: {e}"),
        };
        let rx = std::thread::Builder::new()
            .name(format!("dep{index}-rx"))
            .spawn(move || rx.run())
            .map_err(spawn_error)?;
        let tx = std::thread::Builder::new()
            .name(format!("dep{index}-tx"))
            .spawn(move || tx.run())
            .map_err(spawn_error)?;
        slot.engines = Some(Engines {
            stream,
            stop,
            completions: queue.completions,
            tx,
            rx,
        });
        Ok(info)
    }

    fn reset_queue_pair(&self, index: usize) -> Result<(), AdapterError> {
        let mut slot = self.slot(index)?;
        self.stop_engines(&mut slot);
        if slot.idle.is_none() {
            return Err(AdapterError::EngineStopped {
                index,
                reason: "an engine panicked; the queue pair is lost".into(),
            });
        }
        Ok(())
    }

    fn return_queue_pair(&self, index: usize, mut host: DependentHostQueue) {
        let Ok(mut slot) = self.slot(index) else {
            return;
        };
        self.stop_engines(&mut slot);
        // What the stopped engines left in the completion ring belongs to no one now.
        host.completions.discard_all();
        slot.host = Some(host);
    }
}

impl Drop for DependentModel {
    fn drop(&mut self) {
        for index in 0..self.queue_pairs.len() {
            if let Ok(mut slot) = self.slot(index) {
                self.stop_engines(&mut slot);
            }
        }
    }
}

/// Rings the completion doorbell unless the stall fault holds it.
fn announce(completions: &Producer<DependentCompletion>, faults: &Faults) {
    if !faults.doorbell_stalled() {
        completions.ring_doorbell();
    }
}

/// Stops both engines of a queue pair (the flag, and the socket either may be blocked on)
/// and posts the fault that stopped them; the host resets the queue pair next.
fn stop_engines_with(
    fault: AdapterFault,
    stop: &AtomicBool,
    stream: &TcpStream,
    completions: &Producer<DependentCompletion>,
    faults: &Faults,
) {
    stop.store(true, Ordering::SeqCst);
    let _ = stream.shutdown(Shutdown::Both);
    post_waiting(
        completions,
        DependentCompletion::Fault(fault),
        after(FAULT_POST_WAIT),
        || !faults.doorbell_stalled(),
    );
    announce(completions, faults);
}

/// The transmit engine of one queue pair.
struct TxEngine {
    index: usize,
    stream: TcpStream,
    submissions: Consumer<DependentSubmission>,
    completions: Producer<DependentCompletion>,
    control: Sender<RxControl>,
    caps: Capabilities,
    faults: Faults,
    stop: Arc<AtomicBool>,
    cpu: CpuMeter,
    digests: Digests,
}

impl TxEngine {
    fn run(mut self) -> Consumer<DependentSubmission> {
        let mut clock = self.cpu.thread_clock();
        'engine: while !self.stop.load(Ordering::SeqCst) {
            let mut worked = false;
            while let Some(entry) = self.submissions.poll() {
                worked = true;
                let index = self.submissions.consumed().saturating_sub(1);
                let result = self.carry(index, entry);
                self.submissions.retire_through(index);
                if let Err(fault) = result {
                    tracing::warn!(queue_pair = self.index, %fault, "dependent model: transmit engine stops");
                    clock.charge();
                    // Stop the receive engine too: the host resets the queue pair next.
                    stop_engines_with(
                        fault,
                        &self.stop,
                        &self.stream,
                        &self.completions,
                        &self.faults,
                    );
                    break 'engine;
                }
            }
            if worked {
                clock.charge();
            }
            self.submissions.wait(IDLE_WAIT);
        }
        self.submissions
    }

    /// Carries one submission entry out, or names the fault that stops the engine.
    fn carry(&mut self, index: u64, entry: DependentSubmission) -> Result<(), AdapterFault> {
        let tag = match &entry {
            DependentSubmission::Pdu(pdu) => pdu.header.initiator_task_tag().map(u64::from),
            DependentSubmission::SetConnection(_) => None,
        };
        if self.faults.take_reset() {
            return Err(AdapterFault::Reset { injected: true });
        }
        if self.faults.take_drop() {
            return Err(AdapterFault::DroppedSubmission {
                index,
                tag,
                injected: true,
            });
        }
        match entry {
            DependentSubmission::SetConnection(params) => {
                self.digests = params.digests;
                self.tell_rx(RxControl::Params(params))
            }
            DependentSubmission::Pdu(pdu) => self.send(pdu),
        }
    }

    fn tell_rx(&self, message: RxControl) -> Result<(), AdapterFault> {
        self.control
            .send_timeout(message, PARAMS_WAIT)
            .map_err(|_| AdapterFault::ConnectionLost("receive engine stopped".into()))
    }

    fn send(&mut self, pdu: PduSubmission) -> Result<(), AdapterFault> {
        let PduSubmission {
            header,
            data,
            header_digest,
            data_digest,
            placement,
        } = pdu;
        if let (Some(region), Some(tag)) = (placement, header.initiator_task_tag()) {
            // Registered before the command goes out, so it is there before its Data-In.
            self.tell_rx(RxControl::Register(tag, region))?;
        }
        let bytes: &[u8] = match &data {
            PduData::None => &[],
            PduData::Owned(bytes) => bytes,
            // SAFETY: the entry that lends this region was taken and is retired only after
            // this send returns; the host keeps the buffer alive and unwritten until then.
            PduData::Host(region) => unsafe { region.slice() },
        };
        if bytes.len() > self.caps.max_pdu_bytes as usize {
            return Err(AdapterFault::Framing(format!(
                "{:?} data segment of {} bytes exceeds the adapter's {}-byte PDU limit",
                header.opcode(),
                bytes.len(),
                self.caps.max_pdu_bytes
            )));
        }
        let mut head = [0u8; BHS_LEN + MAX_AHS_BYTES + digest::DIGEST_LEN];
        let header_end = header
            .emit(bytes.len() as u32, &mut head[..BHS_LEN + MAX_AHS_BYTES])
            .map_err(|e| AdapterFault::Framing(e.to_string()))?;
        let mut head_len = header_end;
        if self.digests.header {
            let value = if self.caps.header_digest {
                digest::header_digest(&head[..header_end])
            } else {
                header_digest.ok_or_else(|| {
                    AdapterFault::Framing(
                        "host gave no header digest and the adapter does not compute it".into(),
                    )
                })?
            };
            head[header_end..header_end + digest::DIGEST_LEN]
                .copy_from_slice(&digest::digest_to_wire(value));
            head_len += digest::DIGEST_LEN;
        }
        let mut trailer = [0u8; 8];
        let pad = digest::pad_len(bytes.len());
        let mut trailer_len = pad;
        if self.digests.data && !bytes.is_empty() {
            let value = if self.caps.data_digest {
                digest::data_digest(bytes)
            } else {
                data_digest.ok_or_else(|| {
                    AdapterFault::Framing(
                        "host gave no data digest and the adapter does not compute it".into(),
                    )
                })?
            };
            trailer[pad..pad + digest::DIGEST_LEN].copy_from_slice(&digest::digest_to_wire(value));
            trailer_len += digest::DIGEST_LEN;
        }
        write_all_vectored(
            &mut self.stream,
            &[&head[..head_len], bytes, &trailer[..trailer_len]],
        )
        .map_err(|e| AdapterFault::ConnectionLost(format!("send: {e}")))
    }
}

/// The receive engine of one queue pair.
struct RxEngine {
    index: usize,
    stream: TcpStream,
    completions: Producer<DependentCompletion>,
    control: Receiver<RxControl>,
    caps: Capabilities,
    faults: Faults,
    stop: Arc<AtomicBool>,
    cpu: CpuMeter,
    digests: Digests,
    limits: Limits,
    /// Where the Data-In of each reading task goes.
    registrations: HashMap<Tag, HostRegion>,
}

impl RxEngine {
    fn run(mut self) {
        let mut clock = self.cpu.thread_clock();
        loop {
            match self.receive_one() {
                Ok(received) => {
                    let final_login = matches!(&received.header, Header::LoginResponse(r)
                        if r.transit
                            && r.next_stage == LoginStage::FullFeaturePhase
                            && r.status_class == 0);
                    let faults = self.faults.clone();
                    let posted = post_waiting(
                        &self.completions,
                        DependentCompletion::Pdu(received),
                        || self.stop.load(Ordering::SeqCst),
                        || !faults.doorbell_stalled(),
                    );
                    clock.charge();
                    announce(&self.completions, &self.faults);
                    if !posted {
                        return;
                    }
                    // Digests and the receive limit change right after this PDU: wait for
                    // the host's parameters before reading the next one.
                    if final_login {
                        if let Err(fault) = self.await_params() {
                            self.stop_with(fault);
                            return;
                        }
                    }
                }
                Err(fault) => {
                    clock.charge();
                    if self.stop.load(Ordering::SeqCst) {
                        // A reset or the transmit engine's fault closed the socket.
                        return;
                    }
                    self.stop_with(fault);
                    return;
                }
            }
        }
    }

    /// Stops both engines and posts the fault that stopped them.
    fn stop_with(&mut self, fault: AdapterFault) {
        // The target closing the connection is how every logout ends: the host path, which
        // knows whether the session was still in use, decides whether it is a fault.
        if matches!(fault, AdapterFault::ConnectionLost(_)) {
            tracing::debug!(queue_pair = self.index, %fault, "dependent model: receive engine stops");
        } else {
            tracing::warn!(queue_pair = self.index, %fault, "dependent model: receive engine stops");
        }
        stop_engines_with(
            fault,
            &self.stop,
            &self.stream,
            &self.completions,
            &self.faults,
        );
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), AdapterFault> {
        self.stream.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                AdapterFault::ConnectionLost("the target closed the connection".into())
            } else {
                AdapterFault::ConnectionLost(format!("receive: {e}"))
            }
        })
    }

    fn apply_control(&mut self, message: RxControl) {
        match message {
            RxControl::Register(tag, region) => {
                self.registrations.insert(tag, region);
            }
            RxControl::Params(params) => {
                self.digests = params.digests;
                self.limits = Limits {
                    max_data_segment_length: params
                        .max_recv_data_segment_length
                        .min(self.caps.max_pdu_bytes),
                    max_ahs_length: MAX_AHS_BYTES,
                };
            }
        }
    }

    /// Reads, checks and places one PDU.
    fn receive_one(&mut self) -> Result<ReceivedPdu, AdapterFault> {
        let mut head = [0u8; BHS_LEN + MAX_AHS_BYTES + digest::DIGEST_LEN];
        self.read_exact(&mut head[..BHS_LEN])?;
        let frame = pdu::frame(&head[..BHS_LEN], self.digests, &self.limits)
            .map_err(|e| AdapterFault::Framing(e.to_string()))?;
        self.read_exact(&mut head[BHS_LEN..frame.header_len()])?;
        let covered = BHS_LEN + frame.ahs_len;
        let bhs_tag = u32::from_be_bytes([head[16], head[17], head[18], head[19]]);
        let opcode = pdu::Opcode::from_u8(head[0] & 0x3f);
        let mut unchecked_header_digest = None;
        if frame.header_digest_len > 0 {
            let mut found = digest::digest_from_wire([
                head[covered],
                head[covered + 1],
                head[covered + 2],
                head[covered + 3],
            ]);
            // Only header digests to corrupt when data digests are off.
            let injected = !self.digests.data && self.faults.take_corrupt_digest();
            if injected {
                found = !found;
            }
            if self.caps.header_digest {
                let expected = digest::header_digest(&head[..covered]);
                if expected != found {
                    return Err(AdapterFault::DigestMismatch {
                        kind: DigestKind::Header,
                        opcode,
                        tag: Some(u64::from(bhs_tag)),
                        expected,
                        found,
                        injected,
                    });
                }
            } else {
                unchecked_header_digest = Some(found);
            }
        }
        let header = Header::parse(&head[..BHS_LEN], &head[BHS_LEN..covered])
            .map_err(|e| AdapterFault::Framing(e.to_string()))?;
        // Placements registered so far (the transmit engine sent them before the commands).
        while let Ok(message) = self.control.try_recv() {
            self.apply_control(message);
        }
        let (data, unchecked_data_digest) = self.receive_data(&header, &frame, bhs_tag)?;
        let placement_released = self.released_placement(&header, &data);
        Ok(ReceivedPdu {
            header,
            data,
            header_digest: unchecked_header_digest,
            data_digest: unchecked_data_digest,
            placement_released,
        })
    }

    /// The data segment: placed into the registered host buffer for a Data-In, else read
    /// into an owned buffer; then padding and the data digest.
    fn receive_data(
        &mut self,
        header: &Header,
        frame: &pdu::Frame,
        tag: Tag,
    ) -> Result<(ReceivedData, Option<u32>), AdapterFault> {
        if frame.data_len == 0 {
            return Ok((ReceivedData::None, None));
        }
        let placed = match header {
            Header::DataIn(h) if self.caps.direct_data_placement => self
                .registrations
                .get(&h.initiator_task_tag)
                // SAFETY: the region stays registered (the host keeps the buffer alive and
                // leaves it alone) until this engine releases it with the response that
                // ends the command; this is the only slice of it alive.
                .and_then(|region| unsafe {
                    region.slice_mut(h.buffer_offset as usize, frame.data_len)
                })
                .map(|slice| (h.buffer_offset, slice)),
            _ => None,
        };
        let (data, crc) = match placed {
            Some((offset, slice)) => {
                self.stream
                    .read_exact(slice)
                    .map_err(|e| AdapterFault::ConnectionLost(format!("receive: {e}")))?;
                let crc = (frame.data_digest_len > 0 && self.caps.data_digest)
                    .then(|| digest::data_digest(slice));
                let len = frame.data_len as u32;
                (ReceivedData::Placed { offset, len }, crc)
            }
            None => {
                let mut owned = vec![0u8; frame.data_len];
                self.read_exact(&mut owned)?;
                let crc = (frame.data_digest_len > 0 && self.caps.data_digest)
                    .then(|| digest::data_digest(&owned));
                (ReceivedData::Owned(owned), crc)
            }
        };
        let mut trailer = [0u8; 8];
        let trailer_len = frame.pad_len + frame.data_digest_len;
        self.read_exact(&mut trailer[..trailer_len])?;
        if frame.data_digest_len == 0 {
            return Ok((data, None));
        }
        let pad = frame.pad_len;
        let mut found = digest::digest_from_wire([
            trailer[pad],
            trailer[pad + 1],
            trailer[pad + 2],
            trailer[pad + 3],
        ]);
        let injected = self.faults.take_corrupt_digest();
        if injected {
            found = !found;
        }
        match crc {
            Some(expected) if expected != found => Err(AdapterFault::DigestMismatch {
                kind: DigestKind::Data,
                opcode: Some(header.opcode()),
                tag: Some(u64::from(tag)),
                expected,
                found,
                injected,
            }),
            Some(_) => Ok((data, None)),
            None => Ok((data, Some(found))),
        }
    }

    /// The placement a PDU ends: the response to the command (SCSI Response, or a
    /// Data-In with status), or a Reject of the command itself.
    fn released_placement(&mut self, header: &Header, data: &ReceivedData) -> Option<Tag> {
        let tag = match header {
            Header::ScsiResponse(h) => h.initiator_task_tag,
            Header::DataIn(h) if h.status.is_some() => h.initiator_task_tag,
            Header::Reject(_) => match data {
                ReceivedData::Owned(bytes) => {
                    let rejected = bytes.get(16..20)?;
                    u32::from_be_bytes([rejected[0], rejected[1], rejected[2], rejected[3]])
                }
                _ => return None,
            },
            _ => return None,
        };
        self.registrations.remove(&tag).map(|_| tag)
    }

    /// Waits for the host's connection parameters after the final Login Response.
    fn await_params(&mut self) -> Result<(), AdapterFault> {
        let deadline = Instant::now() + PARAMS_WAIT;
        while Instant::now() < deadline && !self.stop.load(Ordering::SeqCst) {
            match self.control.recv_timeout(IDLE_WAIT) {
                Ok(RxControl::Params(params)) => {
                    self.apply_control(RxControl::Params(params));
                    return Ok(());
                }
                Ok(other) => self.apply_control(other),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
        }
        Err(AdapterFault::ConnectionLost(
            "no connection parameters from the host after login".into(),
        ))
    }
}
