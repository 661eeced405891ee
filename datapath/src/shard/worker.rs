//! One shard's thread: its connection, its session and its loop (see the module docs of
//! [`crate::shard`] for the order of work in one turn).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use super::{failure, ShardCompletion, ShardConfig, ShardError, ShardInfo, ShardRequest};
use super::{ShardStats, SharedStats};
use crate::client::{random_bytes, ClientConfig};
use crate::pdu::{self, digest, Header, Limits, BHS_LEN};
use crate::scsi::Lun;
use crate::session::{
    CommandError, DataDirection, Event, ScsiCommandRequest, Session, SessionConfig, SessionState,
    SubmitRejection, TaskId, Transmit,
};
use crate::transport::{RingConfig, TcpConnection, TransportError};

/// How long one send, or the rest of a PDU whose header has arrived, may take.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an idle shard waits on its queue before it looks at the socket and the timers.
const IDLE_WAIT: Duration = Duration::from_millis(50);
/// Room for one encoded header: BHS, the largest AHS we accept, header digest.
const HEADER_SLOT: usize = BHS_LEN + 1024 + 4;
/// PDUs sent in one gather send: each takes up to three buffers (header, data, trailer),
/// under the transport's limit of 1024.
const PDUS_PER_SEND: usize = 256;
/// The staging buffer for greedy receives of small PDUs.
const STAGING_MIN: usize = 64 * 1024;

/// What the shard thread owns before it has connected.
pub(super) struct Worker {
    index: usize,
    client_config: ClientConfig,
    config: ShardConfig,
    core: Option<core_affinity::CoreId>,
    submit_rx: Receiver<ShardRequest>,
    done_tx: Sender<ShardCompletion>,
    shared: Arc<SharedStats>,
}

impl Worker {
    pub(super) fn new(
        index: usize,
        client_config: ClientConfig,
        config: ShardConfig,
        core: Option<core_affinity::CoreId>,
        submit_rx: Receiver<ShardRequest>,
        done_tx: Sender<ShardCompletion>,
        shared: Arc<SharedStats>,
    ) -> Worker {
        Worker {
            index,
            client_config,
            config,
            core,
            submit_rx,
            done_tx,
            shared,
        }
    }

    /// The thread body: pin, connect, log in, report, then serve until the queue closes.
    pub(super) fn run(self, ready: Sender<Result<ShardInfo, ShardError>>) {
        if let Some(core) = self.core {
            if !core_affinity::set_for_current(core) {
                tracing::warn!(
                    shard = self.index,
                    core = core.id,
                    "could not pin the shard"
                );
            }
        }
        match Shard::connect(self) {
            Ok((shard, info)) => {
                let _ = ready.send(Ok(info));
                shard.serve();
            }
            Err(e) => {
                let _ = ready.send(Err(e));
            }
        }
    }
}

/// What a request became inside the session.
struct Held {
    user_data: u64,
    large_read: bool,
}

/// A running shard.
struct Shard {
    index: usize,
    config: ShardConfig,
    conn: TcpConnection,
    session: Session,
    submit_rx: Receiver<ShardRequest>,
    done_tx: Sender<ShardCompletion>,
    shared: Arc<SharedStats>,
    held: HashMap<TaskId, Held>,
    /// Reads in flight at least `zero_copy_min_bytes` long: while any is, headers are
    /// received alone so their payload can be placed.
    large_reads: usize,
    staging: Vec<u8>,
    staged: std::ops::Range<usize>,
    /// Send side scratch, reused: the transmits of one batch and their encoded headers.
    transmits: Vec<Transmit>,
    headers: Vec<u8>,
    /// Completions of one turn, posted together after the counters are published.
    outgoing: Vec<ShardCompletion>,
    stats: ShardStats,
    kernel_entries_at_login: u64,
    staged_copy_bytes: u64,
    window_closed_since: Option<Instant>,
    /// Set when the connection is gone: the reason later requests fail with.
    dead: Option<String>,
    stopping: bool,
    logout_started: bool,
}

impl Shard {
    fn connect(worker: Worker) -> Result<(Shard, ShardInfo), ShardError> {
        let Worker {
            index,
            client_config: cc,
            config,
            core,
            submit_rx,
            done_tx,
            shared,
        } = worker;
        let ring = RingConfig {
            entries: config.ring_entries,
            ..RingConfig::default()
        };
        let conn = TcpConnection::connect_with_config(cc.portal, cc.connect_timeout, &ring)
            .map_err(|source| ShardError::Connect {
                shard: index,
                portal: cc.portal,
                source,
            })?;
        let isid = shard_isid(index);
        let session_config = SessionConfig {
            initiator_name: cc.initiator_name.clone(),
            initiator_alias: None,
            target_name: cc.target_name.clone(),
            isid,
            tsih: 0,
            cid: 0,
            chap: cc.chap.clone(),
            offer: cc.offer.clone(),
            login_timeout: cc.login_timeout,
            command_timeout: cc.command_timeout,
            nop_interval: cc.nop_interval,
            nop_timeout: cc.nop_timeout,
            logout_timeout: cc.login_timeout,
            max_queued_commands: config.queue_depth,
            max_outstanding_commands: config.queue_depth,
            initial_cmd_sn: 1,
            chap_challenge: random_bytes(16),
        };
        let ring_flags = conn.ring_flags_description().to_string();
        let mut shard = Shard {
            index,
            conn,
            session: Session::new(session_config, Instant::now()),
            submit_rx,
            done_tx,
            shared,
            held: HashMap::with_capacity(config.queue_depth),
            large_reads: 0,
            staging: vec![0; STAGING_MIN],
            staged: 0..0,
            transmits: Vec::with_capacity(PDUS_PER_SEND),
            headers: vec![0; HEADER_SLOT * PDUS_PER_SEND],
            outgoing: Vec::with_capacity(config.queue_depth),
            stats: ShardStats::default(),
            kernel_entries_at_login: 0,
            staged_copy_bytes: 0,
            window_closed_since: None,
            dead: None,
            stopping: false,
            logout_started: false,
            config,
        };
        let login_failed = |reason: String| ShardError::Login {
            shard: index,
            reason,
        };
        loop {
            shard.flush();
            while let Some(event) = shard.session.poll_event() {
                match event {
                    Event::LoginComplete => {
                        shard.kernel_entries_at_login = shard.conn.kernel_entries();
                        let info = ShardInfo {
                            core: core.map(|c| c.id),
                            isid,
                            tsih: shard.session.tsih(),
                            ring_flags,
                        };
                        return Ok((shard, info));
                    }
                    Event::LoginFailed { reason, .. } => return Err(login_failed(reason)),
                    Event::Redirect { address, .. } => {
                        return Err(login_failed(format!("redirected to {address}")))
                    }
                    Event::ConnectionFailed(e) => return Err(login_failed(e.to_string())),
                    _ => {}
                }
            }
            if let Some(reason) = &shard.dead {
                return Err(login_failed(reason.clone()));
            }
            shard.receive(shard.wait_for_timers(IDLE_WAIT));
            shard.fire_timers();
        }
    }

    /// The loop of a logged-in shard; returns when the queue is closed and the session is
    /// over.
    fn serve(mut self) {
        loop {
            let idle_timed_out = self.accept();
            if self.stopping && self.held.is_empty() && !self.logout_started {
                self.logout_started = true;
                self.session.logout(Instant::now());
            }
            let receiving = !self.held.is_empty() || self.logout_started;
            if !receiving {
                self.flush();
            }
            self.drain_events();
            self.track_window();
            self.publish();
            let over = matches!(
                self.session.state(),
                SessionState::Closed | SessionState::Failed
            ) || self.dead.is_some();
            if self.stopping && self.held.is_empty() && over {
                self.flush();
                break;
            }
            if receiving {
                self.flush_and_receive(self.wait_for_timers(IDLE_WAIT));
            } else if idle_timed_out && self.dead.is_none() {
                // Idle: take NOP-Ins and Async Messages already queued, without waiting.
                self.receive(Duration::ZERO);
            }
            self.fire_timers();
            self.drain_events();
        }
        let _ = self.conn.shutdown();
        self.publish();
    }

    /// Takes requests from the queue while the shard has room. Waits (bounded) only when
    /// the shard holds nothing. Returns true when an idle wait ran out.
    fn accept(&mut self) -> bool {
        let mut idle_timed_out = false;
        loop {
            // The shard holds at most `queue_depth` commands, and never more than fit in
            // the completion queue (twice that) beside the completions not yet taken, so
            // posting a completion never blocks.
            let depth = self.config.queue_depth;
            let room = depth
                .saturating_sub(self.held.len())
                .min((2 * depth).saturating_sub(self.held.len() + self.done_tx.len()));
            if room == 0 || self.stopping {
                if room == 0 && self.held.is_empty() {
                    // The caller has not taken its completions yet.
                    std::thread::sleep(Duration::from_micros(200));
                }
                return idle_timed_out;
            }
            let request = if self.held.is_empty() && !idle_timed_out {
                if let Some(r) = self.spin_for_request() {
                    self.start(r);
                    continue;
                }
                match self.submit_rx.recv_timeout(self.wait_for_timers(IDLE_WAIT)) {
                    Ok(r) => r,
                    Err(RecvTimeoutError::Timeout) => {
                        idle_timed_out = true;
                        return idle_timed_out;
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        self.stopping = true;
                        return idle_timed_out;
                    }
                }
            } else {
                match self.submit_rx.try_recv() {
                    Ok(r) => r,
                    Err(TryRecvError::Empty) => return idle_timed_out,
                    Err(TryRecvError::Disconnected) => {
                        self.stopping = true;
                        return idle_timed_out;
                    }
                }
            };
            self.start(request);
        }
    }

    /// Polls the queue for up to `idle_spin` before the shard sleeps on it: a sleeping
    /// thread costs a wake-up (tens to hundreds of microseconds on a busy machine) per
    /// request at queue depth 1.
    fn spin_for_request(&mut self) -> Option<ShardRequest> {
        if self.config.idle_spin.is_zero() {
            return None;
        }
        let until = Instant::now() + self.config.idle_spin;
        loop {
            match self.submit_rx.try_recv() {
                Ok(r) => return Some(r),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) if Instant::now() >= until => return None,
                Err(TryRecvError::Empty) => std::thread::yield_now(),
            }
        }
    }

    /// Hands one request to the session, or fails it at once.
    fn start(&mut self, request: ShardRequest) {
        let ShardRequest {
            lun,
            cdb,
            direction,
            buffer,
            user_data,
        } = request;
        let large_read = matches!(direction, DataDirection::Read { len } if len >= self.config.zero_copy_min_bytes);
        let command = ScsiCommandRequest {
            lun: Lun::from_u64(lun).to_field(),
            cdb,
            direction,
            buffer,
            attribute: pdu::TaskAttribute::Simple,
        };
        match self.session.submit(Instant::now(), command) {
            Ok(task) => {
                self.held.insert(
                    task,
                    Held {
                        user_data,
                        large_read,
                    },
                );
                if large_read {
                    self.large_reads += 1;
                }
                let depth = self.held.len() as u64;
                self.stats.peak_queue_depth = self.stats.peak_queue_depth.max(depth);
            }
            Err(refused) => {
                let error = match (&self.dead, refused.reason) {
                    (Some(reason), _) => CommandError::ConnectionLost(reason.clone()),
                    (None, SubmitRejection::NotLoggedIn) => {
                        CommandError::ConnectionLost("the shard's session has ended".into())
                    }
                    (None, reason) => CommandError::Protocol(format!("not submitted: {reason}")),
                };
                self.stats.ios += 1;
                self.stats.ios_failed += 1;
                self.outgoing.push(ShardCompletion {
                    user_data,
                    result: Err(failure(error, refused.request.buffer)),
                });
                self.drain_events();
            }
        }
    }

    /// Moves up to one send's worth of queued PDUs from the session into `transmits`.
    fn take_transmits(&mut self) {
        self.transmits.clear();
        while self.transmits.len() < PDUS_PER_SEND {
            match self.session.poll_transmit() {
                Some(t) => self.transmits.push(t),
                None => break,
            }
        }
    }

    /// Sends everything the session has queued, many PDUs per kernel entry.
    fn flush(&mut self) {
        if self.dead.is_some() {
            return;
        }
        loop {
            self.take_transmits();
            if self.transmits.is_empty() {
                return;
            }
            let result = send_batch(
                &mut self.conn,
                &self.session,
                &self.transmits,
                &mut self.headers,
            );
            if let Err(e) = result {
                self.lose_connection(format!("send failed: {e}"));
                return;
            }
        }
    }

    /// Sends everything the session has queued and receives, like [`Shard::flush`] then
    /// [`Shard::receive`], but the last send and the first receive go to the kernel in one
    /// entry: at low queue depth a command and the wait for its answer cost one.
    fn flush_and_receive(&mut self, wait: Duration) {
        if self.dead.is_some() {
            return;
        }
        if self.staged.len() >= BHS_LEN {
            // A header is already here: no receive to combine with.
            self.flush();
            self.receive(wait);
            return;
        }
        loop {
            self.take_transmits();
            if self.transmits.is_empty() {
                self.receive(wait);
                return;
            }
            if self.transmits.len() == PDUS_PER_SEND {
                // Possibly more to come: send this batch alone.
                let result = send_batch(
                    &mut self.conn,
                    &self.session,
                    &self.transmits,
                    &mut self.headers,
                );
                if let Err(e) = result {
                    self.lose_connection(format!("send failed: {e}"));
                    return;
                }
                continue;
            }
            break;
        }
        // The last batch, with the receive of the next header (and, when no large read
        // is in flight, as many small PDUs as are queued).
        self.compact();
        let want = if self.large_reads > 0 {
            BHS_LEN
        } else {
            self.staging.len()
        };
        let end = self.staged.end;
        let staging = &mut self.staging[end..want];
        let result = send_batch_with(
            &mut self.conn,
            &self.session,
            &self.transmits,
            &mut self.headers,
            |conn, bufs| conn.send_all_and_recv(bufs, IO_TIMEOUT, staging, wait),
        );
        match result {
            Ok(Some(0)) => self.lose_connection("the target closed the connection".into()),
            Ok(Some(n)) => {
                self.staged.end += n;
                if self.staged.len() >= BHS_LEN {
                    self.receive(IO_TIMEOUT);
                }
            }
            // Nothing arrived within `wait`.
            Ok(None) => {}
            Err(e) => self.lose_connection(format!("send or receive failed: {e}")),
        }
    }

    /// Receives and delivers PDUs: waits up to `wait` for the first bytes, then delivers
    /// every PDU that is whole or whose rest is already on its way.
    fn receive(&mut self, wait: Duration) {
        if self.dead.is_some() {
            return;
        }
        let mut wait = wait;
        // Bounded: each round delivers one PDU or returns; the staging buffer holds at
        // most its own length of PDUs.
        for _ in 0..self.staging.len() / BHS_LEN + 1 {
            match self.receive_one(wait) {
                Ok(true) if !self.staged.is_empty() => wait = IO_TIMEOUT,
                Ok(_) => return,
                Err(reason) => {
                    self.lose_connection(reason);
                    return;
                }
            }
            if self.session.state() == SessionState::Failed {
                // A fault in a PDU failed the session: post its failures, close.
                self.drain_events();
            }
            if self.dead.is_some() {
                return;
            }
        }
    }

    /// One PDU. `Ok(false)` when no header arrived within `wait`.
    fn receive_one(&mut self, wait: Duration) -> Result<bool, String> {
        let digests = self.session.digests();
        let limits = Limits {
            max_data_segment_length: self.session.max_recv_data_segment_length(),
            ..Limits::default()
        };
        // 1. The BHS. While a large read is in flight, read no further than the BHS, so
        //    its payload can go straight to the caller's buffer.
        if self.staged.len() < BHS_LEN {
            self.compact();
            let want = if self.large_reads > 0 {
                BHS_LEN
            } else {
                self.staging.len()
            };
            let end = self.staged.end;
            match self.conn.recv(&mut self.staging[end..want], wait) {
                Ok(0) => return Err("the target closed the connection".into()),
                Ok(n) => self.staged.end += n,
                Err(TransportError::TimedOut { .. }) => return Ok(false),
                Err(e) => return Err(format!("receive failed: {e}")),
            }
            if self.staged.len() < BHS_LEN {
                return Ok(false);
            }
        }
        let start = self.staged.start;
        let frame = pdu::frame(&self.staging[start..start + BHS_LEN], digests, &limits)
            .map_err(|e| format!("malformed PDU: {e}"))?;
        let header_len = frame.header_len();
        let total = frame.total_len();
        if self.staging.len() - start < total {
            // Bounded by the limits `frame` checked.
            self.compact();
            if self.staging.len() < total {
                self.staging.resize(total, 0);
            }
        }
        let start = self.staged.start;
        if self.staged.len() < header_len {
            let (from, to) = (self.staged.end, start + header_len);
            self.recv_exact_staged(from, to)?;
        }
        let header = parse_header(&self.staging[start..start + header_len], &frame)?;

        // 2. A Data-In whose payload is not yet here: receive it in place.
        let payload_staged = self.staged.len() - header_len;
        if frame.data_len > 0 && payload_staged < frame.data_len {
            if let Header::DataIn(_) = header {
                let data_len = frame.data_len as u32;
                if let Some(dest) = self.session.data_in_destination(&header, data_len) {
                    let from = start + header_len;
                    dest[..payload_staged]
                        .copy_from_slice(&self.staging[from..from + payload_staged]);
                    self.staged_copy_bytes += payload_staged as u64;
                    self.staged = 0..0;
                    self.conn
                        .recv_exact(&mut dest[payload_staged..], IO_TIMEOUT)
                        .map_err(|e| format!("receive failed: {e}"))?;
                    let mut trailer = [0u8; 8];
                    let trailer = &mut trailer[..frame.pad_len + frame.data_digest_len];
                    if !trailer.is_empty() {
                        self.conn
                            .recv_exact(trailer, IO_TIMEOUT)
                            .map_err(|e| format!("receive failed: {e}"))?;
                    }
                    if frame.data_digest_len > 0 {
                        let expected =
                            digest::data_digest_append(digest::crc32c(dest), frame.data_len);
                        let mut wire = [0u8; 4];
                        wire.copy_from_slice(&trailer[frame.pad_len..]);
                        if digest::digest_from_wire(wire) != expected {
                            return Err("data digest mismatch on Data-In".into());
                        }
                    }
                    // A fault here has already failed the session and queued its events.
                    let _ = self
                        .session
                        .handle_pdu_placed(Instant::now(), header, data_len);
                    return Ok(true);
                }
            }
        }

        // 3. Everything else: the whole PDU through the staging buffer.
        if self.staged.len() < total {
            let (from, to) = (self.staged.end, start + total);
            self.recv_exact_staged(from, to)?;
        }
        let decoded = pdu::decode_pdu(&self.staging[start..start + total], digests, &limits)
            .map_err(|e| format!("malformed PDU: {e}"))?
            .ok_or("a whole PDU did not decode")?;
        let data = start + decoded.data.start..start + decoded.data.end;
        let _ = self
            .session
            .handle_pdu(Instant::now(), decoded.header, &self.staging[data]);
        self.staged.start += total;
        if self.staged.is_empty() {
            self.staged = 0..0;
        }
        Ok(true)
    }

    /// Receives exactly `staging[from..to]` (the rest of a PDU already begun).
    fn recv_exact_staged(&mut self, from: usize, to: usize) -> Result<(), String> {
        self.conn
            .recv_exact(&mut self.staging[from..to], IO_TIMEOUT)
            .map_err(|e| format!("receive failed: {e}"))?;
        self.staged.end = to;
        Ok(())
    }

    /// Moves staged bytes to the front of the staging buffer.
    fn compact(&mut self) {
        if self.staged.start > 0 {
            let len = self.staged.len();
            self.staging.copy_within(self.staged.clone(), 0);
            self.staged = 0..len;
        }
    }

    /// Posts completions and notes the end of the session. The counters are published
    /// first, so a caller holding a completion sees counters that include it.
    fn drain_events(&mut self) {
        self.collect_events();
        if !self.outgoing.is_empty() {
            self.publish();
            for completion in self.outgoing.drain(..) {
                // Never blocks: the shard holds no more than the queue's free room.
                let _ = self.done_tx.send(completion);
            }
        }
    }

    fn collect_events(&mut self) {
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::CommandComplete(task, result) => {
                    let Some(held) = self.held.remove(&task) else {
                        continue;
                    };
                    if held.large_read {
                        self.large_reads = self.large_reads.saturating_sub(1);
                    }
                    self.stats.ios += 1;
                    match &result {
                        Ok(outcome) => self.stats.bytes += u64::from(outcome.transferred),
                        Err(_) => self.stats.ios_failed += 1,
                    }
                    self.outgoing.push(ShardCompletion {
                        user_data: held.user_data,
                        result,
                    });
                }
                Event::ConnectionFailed(e) => {
                    tracing::warn!(shard = self.index, error = %e, "shard session failed");
                    if self.dead.is_none() {
                        self.dead = Some(e.to_string());
                    }
                    let _ = self.conn.shutdown();
                }
                Event::AsyncMessage(m) => {
                    tracing::info!(shard = self.index, event = ?m, "async message")
                }
                _ => {}
            }
        }
    }

    fn lose_connection(&mut self, reason: String) {
        tracing::warn!(shard = self.index, %reason, "shard connection lost");
        self.session
            .handle_connection_lost(Instant::now(), reason.clone());
        if self.dead.is_none() && self.session.state() == SessionState::Failed {
            self.dead = Some(reason);
        }
        let _ = self.conn.shutdown();
        if self.dead.is_none() {
            self.dead = Some("connection closed".into());
        }
        self.drain_events();
    }

    /// `max`, shortened so the session's next timer is not missed.
    fn wait_for_timers(&self, max: Duration) -> Duration {
        match self.session.poll_timeout() {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()).min(max),
            None => max,
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        if self.session.poll_timeout().is_some_and(|d| d <= now) {
            self.session.handle_timeout(now);
        }
    }

    fn track_window(&mut self) {
        let now = Instant::now();
        let closed = self.session.commands_waiting() > 0;
        match (self.window_closed_since, closed) {
            (None, true) => self.window_closed_since = Some(now),
            (Some(since), false) => {
                self.stats.window_closed_ns += (now - since).as_nanos() as u64;
                self.window_closed_since = None;
            }
            _ => {}
        }
    }

    fn publish(&mut self) {
        self.stats.kernel_entries = self
            .conn
            .kernel_entries()
            .saturating_sub(self.kernel_entries_at_login);
        self.stats.bytes_copied = self.session.stats().bytes_copied + self.staged_copy_bytes;
        self.stats.queue_depth = self.held.len() as u64;
        self.shared.store(&self.stats);
    }
}

/// Encodes the headers of `transmits` and sends them with their payload (borrowed from
/// the command buffers) and trailers in one gather send.
fn send_batch(
    conn: &mut TcpConnection,
    session: &Session,
    transmits: &[Transmit],
    headers: &mut [u8],
) -> Result<(), String> {
    send_batch_with(conn, session, transmits, headers, |conn, bufs| {
        conn.send_all(bufs, IO_TIMEOUT)
    })
}

/// Encodes the headers of `transmits` and hands the gather list of the whole batch to
/// `send`, which sends it (and may start a receive in the same kernel entry).
fn send_batch_with<R>(
    conn: &mut TcpConnection,
    session: &Session,
    transmits: &[Transmit],
    headers: &mut [u8],
    send: impl FnOnce(&mut TcpConnection, &[&[u8]]) -> Result<R, TransportError>,
) -> Result<R, String> {
    let digests = session.digests();
    let mut trailers = Vec::with_capacity(transmits.len());
    let mut header_lens = Vec::with_capacity(transmits.len());
    for (transmit, slot) in transmits.iter().zip(headers.chunks_mut(HEADER_SLOT)) {
        let data = session.transmit_data(transmit);
        let len = pdu::encode_header(&transmit.header, data.len() as u32, digests, slot)
            .map_err(|e| format!("encoding a PDU: {e}"))?;
        header_lens.push(len);
        trailers.push(pdu::data_trailer(data, digests));
    }
    let mut bufs: Vec<&[u8]> = Vec::with_capacity(transmits.len() * 3);
    for (((transmit, slot), len), (trailer, trailer_len)) in transmits
        .iter()
        .zip(headers.chunks(HEADER_SLOT))
        .zip(&header_lens)
        .zip(&trailers)
    {
        bufs.push(&slot[..*len]);
        bufs.push(session.transmit_data(transmit));
        bufs.push(&trailer[..*trailer_len]);
    }
    send(conn, &bufs).map_err(|e| e.to_string())
}

/// Parses a header whose bytes (BHS, AHS, header digest) are all in `bytes`.
fn parse_header(bytes: &[u8], frame: &pdu::Frame) -> Result<Header, String> {
    let covered = BHS_LEN + frame.ahs_len;
    let (head, digest_bytes) = bytes.split_at(covered);
    if frame.header_digest_len > 0 {
        let mut wire = [0u8; 4];
        wire.copy_from_slice(&digest_bytes[..4]);
        if digest::digest_from_wire(wire) != digest::header_digest(head) {
            return Err("header digest mismatch".into());
        }
    }
    let (bhs, ahs) = head.split_at(BHS_LEN);
    Header::parse(bhs, ahs).map_err(|e| format!("malformed PDU: {e}"))
}

/// A random-type ISID (RFC 7143 section 11.12.5, T = 0b11) whose last byte is the shard
/// index, so the shards of one pool never share an I_T nexus.
fn shard_isid(index: usize) -> pdu::Isid {
    let r = random_bytes(5);
    [0xc0 | (r[0] & 0x3f), r[1], r[2], r[3], r[4], index as u8]
}
