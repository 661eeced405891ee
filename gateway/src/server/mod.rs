//! The running target: portals on io_uring TCP, one event loop thread per core, and the
//! embedding API ([`start`] and [`RunningTarget`]).
//!
//! Each event loop thread owns one io_uring instance, accepts on every portal (the kernel
//! hands each connection to one waiting accept) and drives its connections through
//! receive and send operations on its ring. Connections never move between threads.
//! What threads share is off the data path: the session registry for reinstatement
//! (RFC 7143 section 6.3.5: a new login with the same initiator name and ISID replaces the
//! old session), the TSIH counter and the shutdown flag.
//!
//! - `connection`: framing, command execution and output of one connection (no I/O).
//! - `event_loop`: the io_uring loop (with `file_io`, the only `unsafe` here).
//! - `file_io`: one command's file I/O on the loop's ring (READ, WRITE, SYNCHRONIZE CACHE
//!   on file units), resumed when short, with aligned buffers for `O_DIRECT`.

mod attention;
mod blocking;
mod checks;
mod connection;
mod event_loop;
mod file_io;
mod listener;
mod lun_stats;
mod params;
mod portals;
mod queued_io;
mod rx_buffers;
mod takeover;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use datapath::pdu::Isid;

use crate::disk::{self, IoPlan, LogicalUnit};
use crate::portal::{PortalLoad, PortalRole};
use crate::reservation::{Nexus, NexusView, OwnedTicket, ResetKind};
use crate::session::{ChapCredentials, CommandResult, TargetNode, TargetSessionConfig};

pub use blocking::BlockingJob;
pub use checks::LUN_NUMBER_LIMIT;

use crate::conglomerate::HostBindings;
pub use connection::{CloseReason, Connection, ConnectionLimits};
pub use lun_stats::{LunCounters, LunFigures};
pub use params::{OfferChange, OfferLimits, RENEGOTIATE_WITHIN_S};
pub use portals::{AsyncRequestSpec, PortalStatus, ARRAY_EVENT_GRACE};

/// Runs SCSI commands for the LUNs of one target node.
pub trait LunExecutor: Send + Sync {
    /// Runs one command. `data_out` holds all write data; `expected_data_in_len` bounds
    /// what the initiator expects back; `nexus` is the I_T nexus it came on.
    fn execute(
        &self,
        nexus: disk::Nexus<'_>,
        lun: u64,
        cdb: &[u8],
        data_out: &[u8],
        expected_data_in_len: u32,
    ) -> CommandResult;
    /// Starts one command: either runs it at once, or checks it and hands back the file
    /// I/O that finishes it, which the event loop issues on its own ring. The default
    /// runs everything at once.
    fn submit(
        &self,
        nexus: disk::Nexus<'_>,
        lun: u64,
        cdb: &[u8],
        data_out: Vec<u8>,
        expected_data_in_len: u32,
    ) -> Submission {
        Submission::Done(self.execute(nexus, lun, cdb, &data_out, expected_data_in_len))
    }
    /// [`LunExecutor::submit`] for a command of this I_T nexus, checked against the
    /// unit's reservations and unit attentions first (`crate::reservation`). The default
    /// knows no reservations.
    fn submit_as(
        &self,
        nexus: &mut NexusView,
        lun: u64,
        cdb: &[u8],
        data_out: Vec<u8>,
        expected_data_in_len: u32,
    ) -> Submission {
        let nexus = nexus.nexus().command_nexus();
        self.submit(nexus, lun, cdb, data_out, expected_data_in_len)
    }
    /// What the unit answers before anything else for this nexus (a pending unit
    /// attention, a reservation conflict), without running the command: the target
    /// port's own refusals (ALUA's NOT READY) come after it (SAM-5 5.14). The default
    /// has none.
    fn answer_first(
        &self,
        _nexus: &mut NexusView,
        _lun: u64,
        _cdb: &[u8],
    ) -> Option<CommandResult> {
        None
    }
    /// A nexus logged in to this target (reset attentions will reach it).
    fn nexus_joined(&self, _nexus: &Nexus) {}
    /// A nexus is gone (logout, connection loss, reinstatement): SCSI-2 reservations it
    /// held are released. The view says which units it joined by its commands.
    fn nexus_lost(&self, _nexus: &NexusView) {}
    /// LOGICAL UNIT RESET of `lun`, or with `None` a target reset, of every unit.
    fn reset(&self, _lun: Option<u64>, _kind: ResetKind) {}
    /// Makes written data durable (called at shutdown).
    fn flush(&self) {}
    /// Establishes the unit attention `asc` for every nexus of every unit (ASYMMETRIC
    /// ACCESS STATE CHANGED when a port group's ALUA state changes).
    fn announce(&self, _asc: (u8, u8)) {}
    /// The volume bound at the two-level LUN `lun` for this executor's host, for the
    /// per-LUN statistics (`lun_stats`). The default has no bound volumes.
    fn subsidiary_unit(&self, _lun: u64) -> Option<Arc<LogicalUnit>> {
        None
    }
    /// [`LunExecutor::submit_as`], also handing back the volume a two-level LUN reached
    /// (for the statistics), found by the same lookup. The default looks it up apart.
    fn submit_as_bound(
        &self,
        nexus: &mut NexusView,
        lun: u64,
        cdb: &[u8],
        data_out: Vec<u8>,
        expected_data_in_len: u32,
    ) -> (Submission, Option<Arc<LogicalUnit>>) {
        let bound = self.subsidiary_unit(lun);
        let submission = self.submit_as(nexus, lun, cdb, data_out, expected_data_in_len);
        (submission, bound)
    }
}

/// What [`LunExecutor::submit`] decided.
#[derive(Debug)]
pub enum Submission {
    /// The command's result.
    Done(CommandResult),
    /// The command passed its checks; this I/O finishes it.
    Io(FileIo),
    /// The command makes calls that may block: it runs on the blocking pool.
    Blocking(BlockingJob),
}

/// A command that finishes off the connection's own turn: file I/O on the loop's ring,
/// or a job on the blocking pool. Either way the loop answers it by its deadline
/// ([`ClientLimits::backend_timeout`]) if the backend has not.
#[derive(Debug)]
pub(crate) enum Deferred {
    Io(FileIo),
    Blocking(BlockingJob),
}

/// A checked READ, WRITE or SYNCHRONIZE CACHE waiting for its I/O on a logical unit whose
/// backend has a ring file ([`crate::backend::Backend::ring_file`]). Holding the unit keeps
/// the backend, and so the descriptor the I/O uses, open until the I/O is done.
#[derive(Debug)]
pub struct FileIo {
    unit: Arc<LogicalUnit>,
    plan: IoPlan,
    /// For a write: exactly the bytes to write (`plan.len`). Empty otherwise.
    data_out: Vec<u8>,
    data_out_wanted: Option<u32>,
    /// Admitted past the unit's reservations: held until the I/O is done, so that
    /// PREEMPT AND ABORT waits for it.
    admitted: Option<OwnedTicket>,
}

impl FileIo {
    /// The command's result from the I/O's outcome (the bytes read, for a read).
    fn complete(self, outcome: std::io::Result<Vec<u8>>) -> CommandResult {
        let result = self.unit.finish(self.plan, outcome);
        CommandResult {
            status: result.status,
            sense: result.sense,
            data_in: result.data_in,
            data_out_wanted: self.data_out_wanted,
        }
    }
}

/// One target node to export.
#[derive(Debug, Clone)]
pub struct TargetNodeConfig {
    pub iqn: String,
    pub alias: Option<String>,
    /// LUN number and backend spec (`ram:1G`, `null:100G`, `file:/path`).
    pub luns: Vec<(u64, String)>,
    /// CHAP the initiator must pass.
    pub chap: Option<ChapCredentials>,
    /// Our credentials for mutual CHAP.
    pub mutual_chap: Option<ChapCredentials>,
    /// InitiatorNames allowed to see and log in to this node; `None` allows all.
    pub allowed_initiators: Option<Vec<String>>,
}

impl TargetNodeConfig {
    pub fn new(iqn: impl Into<String>, luns: Vec<(u64, String)>) -> TargetNodeConfig {
        TargetNodeConfig {
            iqn: iqn.into(),
            alias: None,
            luns,
            chap: None,
            mutual_chap: None,
            allowed_initiators: None,
        }
    }
}

/// Everything a target needs to start.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// Addresses to listen on; port 0 picks a free port.
    pub portals: Vec<SocketAddr>,
    /// TargetPortalGroupTag of all portals (one portal group).
    pub portal_group_tag: u16,
    pub targets: Vec<TargetNodeConfig>,
    /// Commands a session may have outstanding (sets MaxCmdSN).
    pub max_cmd_window: u32,
    /// Largest write a command may carry, in bytes.
    pub max_transfer_bytes: u32,
    /// Event loop threads; `None` uses one per core (at most 8).
    pub threads: Option<usize>,
    /// Connections per event loop; more are refused at accept.
    pub max_connections_per_thread: usize,
    pub login_timeout: Duration,
    pub nop_interval: Duration,
    pub nop_timeout: Duration,
    /// An initiator that stops in the middle of a PDU this long is disconnected.
    pub stall_timeout: Duration,
    /// Our MaxRecvDataSegmentLength.
    pub max_recv_data_segment_length: u32,
    /// CHAP required on discovery sessions.
    pub discovery_chap: Option<ChapCredentials>,
    /// What one client may hold of the target (see [`ClientLimits`]).
    pub client_limits: ClientLimits,
    /// The virtual portal, weights and ALUA states (`crate::portal`).
    pub array: crate::portal::ArrayConfig,
}

/// Limits that keep one client from taking the target down. Memory per connection, as a
/// sum: a receive buffer of one PDU (8 KiB while logging in, then our
/// MaxRecvDataSegmentLength, 256 KiB by default), up to two send buffers of 256 KiB, and
/// `max_output_bytes_per_connection` of output owed (responses, NOP-In echoes, read data
/// queued or being read from a file), which one command may overshoot by its own read
/// data (at most the maximum transfer). Past that limit a connection takes no input and
/// starts no command until its initiator reads.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    /// Output a connection may owe before it stops taking input.
    pub max_output_bytes_per_connection: usize,
    /// A new connection that sends no byte this long is closed.
    pub first_pdu_timeout: Duration,
    /// Connections logging in at once from one address, per event loop; more are
    /// refused at accept.
    pub max_logins_per_source: usize,
    /// Connections logging in at once, per event loop; past it the one logging in
    /// longest is closed. The rest of `max_connections_per_thread` is kept for logged-in
    /// sessions.
    pub max_logins: usize,
    /// A command whose backend has not answered this long is answered for it: CHECK
    /// CONDITION, ABORTED COMMAND, COMMAND TIMEOUT DURING PROCESSING. A hung backend
    /// then stalls only its own commands, and the initiator learns of it before its own
    /// timeout (30 s for Linux's SCSI layer) starts resets.
    pub backend_timeout: Duration,
    /// Threads that run commands whose backend calls may block (see `blocking`).
    pub blocking_threads: usize,
    /// Submission queue entries of each event loop's ring. When it is full (and a submit
    /// made no room) receives, sends and accepts are armed on a later turn rather than
    /// queued; only file I/O waits, at most one entry per operation issued. The
    /// completion queue is sized from the connection limit.
    pub ring_entries: u32,
}

impl Default for ClientLimits {
    fn default() -> ClientLimits {
        ClientLimits {
            max_output_bytes_per_connection: 512 << 10,
            first_pdu_timeout: Duration::from_secs(5),
            max_logins_per_source: 64,
            max_logins: 512,
            backend_timeout: Duration::from_secs(15),
            blocking_threads: 4,
            ring_entries: 256,
        }
    }
}

impl TargetConfig {
    /// One portal, one node, usual limits.
    pub fn new(portal: SocketAddr, target: TargetNodeConfig) -> TargetConfig {
        TargetConfig {
            portals: vec![portal],
            portal_group_tag: 1,
            targets: vec![target],
            max_cmd_window: 128,
            max_transfer_bytes: crate::disk::MAX_TRANSFER_BYTES,
            threads: None,
            max_connections_per_thread: 16_384,
            login_timeout: Duration::from_secs(30),
            nop_interval: Duration::from_secs(30),
            nop_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(30),
            max_recv_data_segment_length: 262_144,
            discovery_chap: None,
            client_limits: ClientLimits::default(),
            array: crate::portal::ArrayConfig::default(),
        }
    }
}

/// Why the target could not start.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("binding portal {addr}: {source}{hint}", hint = listener::bind_hint(source))]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("LUN {lun} of {target} ({spec}): {reason}")]
    Lun {
        target: String,
        lun: u64,
        spec: String,
        reason: String,
    },
    #[error("configuration: {0}")]
    Config(String),
    #[error("{what}: {source}")]
    Name {
        what: String,
        source: datapath::names::NameError,
    },
    #[error(
        "LUN {lun} of {target}: LUN numbers go up to {} (what REPORT LUNS can encode)",
        checks::LUN_NUMBER_LIMIT - 1
    )]
    LunNumber { target: String, lun: u64 },
    #[error(
        "{what}: secret of {len} bytes, at least {} required (RFC 7143 section 12.1.3)",
        crate::config::MIN_CHAP_SECRET_BYTES
    )]
    ShortSecret { what: String, len: usize },
    #[error("io_uring setup: {0}")]
    Ring(std::io::Error),
    #[error("starting an event loop thread: {0}")]
    Thread(std::io::Error),
}

/// Builds the logical units of a node. The default builder is [`build_luns`].
/// Its arguments: the node and the portal group tag its ports report.
pub type LunBuilder =
    dyn Fn(&TargetNodeConfig, u16) -> Result<Arc<dyn LunExecutor>, ServerError> + Send + Sync;

/// Identity of a session for reinstatement: initiator name, ISID, target name.
type SessionKey = (String, Isid, String);

/// Counters of one event loop.
#[derive(Debug, Default)]
pub(crate) struct LoopStats {
    pub(crate) file_ios_completed: std::sync::atomic::AtomicU64,
    pub(crate) connections: std::sync::atomic::AtomicU64,
    pub(crate) logging_in: std::sync::atomic::AtomicU64,
    pub(crate) refused: std::sync::atomic::AtomicU64,
    pub(crate) output_owed_bytes: std::sync::atomic::AtomicU64,
    pub(crate) receive_buffer_bytes: std::sync::atomic::AtomicU64,
    pub(crate) commands_timed_out: std::sync::atomic::AtomicU64,
    pub(crate) ring_backlog_high_water: std::sync::atomic::AtomicU64,
    pub(crate) arms_deferred: std::sync::atomic::AtomicU64,
}

/// What the target holds now, summed over its event loops: the figures its memory budget
/// ([`ClientLimits`]) is made of, and what the limits turned away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections open, and those among them still logging in.
    pub connections: u64,
    pub logging_in: u64,
    /// Connections refused at accept by the login-phase limits or the connection limit
    /// since the start (and accepts paused for want of descriptors).
    pub refused: u64,
    /// Output the connections owe their initiators (each bounded by
    /// `max_output_bytes_per_connection`, plus one command's read data).
    pub output_owed_bytes: u64,
    /// The connections' receive buffers (8 KiB while logging in, one PDU after).
    pub receive_buffer_bytes: u64,
    /// Commands answered by their deadline because their backend did not answer.
    pub commands_timed_out: u64,
    /// The most entries that waited for room in a ring's submission queue at once (the
    /// largest over the event loops; only file I/O and the eventfd read wait).
    pub ring_backlog_high_water: u64,
    /// Receives, sends and accepts put off to a later turn for a full submission queue.
    pub arms_deferred: u64,
}

/// One LUN as the event loops see it: its number, which unit it is (an id that differs
/// between any two units ever attached, so a unit replaced at the same number is seen as a
/// new one), and its capacity in blocks (0 when the executor does not say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LunInfo {
    pub lun: u64,
    pub unit_id: u64,
    pub blocks: u64,
}

/// A unit id for [`LunInfo::unit_id`], never handed out twice in this process.
pub fn next_unit_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One host's view of a target with volumes bound for it ([`LiveTarget::hosts`]).
#[derive(Clone)]
pub struct HostView {
    pub executor: Arc<dyn LunExecutor>,
    pub bindings: Arc<HostBindings>,
}

/// One target node as the event loops see it: what its logins check, and its LUNs.
#[derive(Clone)]
pub struct LiveTarget {
    pub name: String,
    pub alias: Option<String>,
    pub chap: Option<ChapCredentials>,
    pub mutual_chap: Option<ChapCredentials>,
    pub allowed_initiators: Option<Vec<String>>,
    pub executor: Arc<dyn LunExecutor>,
    /// By LUN number, ascending.
    pub luns: Vec<LunInfo>,
    /// The hosts (initiator names) with volumes bound through its endpoints: each has its
    /// own executor (the same LUNs plus its subsidiary LUs) and its bindings, which a
    /// connection compares across configurations to announce a change.
    pub hosts: Arc<std::collections::BTreeMap<String, HostView>>,
    /// What logins see of it, made once per target value (see [`LiveTarget::new`]).
    session_node: std::sync::OnceLock<Arc<TargetNode>>,
}

impl std::fmt::Debug for LiveTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveTarget")
            .field("name", &self.name)
            .field("luns", &self.luns)
            .finish_non_exhaustive()
    }
}

impl LiveTarget {
    /// A target named `name` with no CHAP and no ACL, over `executor` with `luns`.
    pub fn new(name: &str, executor: Arc<dyn LunExecutor>, luns: Vec<LunInfo>) -> LiveTarget {
        LiveTarget {
            name: name.to_string(),
            alias: None,
            chap: None,
            mutual_chap: None,
            allowed_initiators: None,
            executor,
            luns,
            hosts: Arc::default(),
            session_node: std::sync::OnceLock::new(),
        }
    }

    /// The executor for commands of `initiator`: its own when it has volumes bound.
    pub fn executor_for(&self, initiator: &str) -> &Arc<dyn LunExecutor> {
        self.hosts
            .get(initiator)
            .map_or(&self.executor, |host| &host.executor)
    }

    /// The volumes bound for `initiator`, if any.
    pub fn bindings_for(&self, initiator: &str) -> Option<&Arc<HostBindings>> {
        self.hosts.get(initiator).map(|host| &host.bindings)
    }

    /// A target with the settings of `node` (its LUN specs aside) over `executor`.
    pub fn from_node(node: &TargetNodeConfig, executor: Arc<dyn LunExecutor>) -> LiveTarget {
        let luns = node
            .luns
            .iter()
            .map(|(lun, _)| LunInfo {
                lun: *lun,
                unit_id: next_unit_id(),
                blocks: 0,
            })
            .collect();
        LiveTarget {
            alias: node.alias.clone(),
            chap: node.chap.clone(),
            mutual_chap: node.mutual_chap.clone(),
            allowed_initiators: node.allowed_initiators.clone(),
            ..LiveTarget::new(&node.iqn, executor, luns)
        }
    }

    /// The node logins and SendTargets see.
    fn session_node(&self, max_transfer_bytes: u32) -> Arc<TargetNode> {
        Arc::clone(self.session_node.get_or_init(|| {
            Arc::new(TargetNode {
                name: self.name.clone(),
                alias: self.alias.clone(),
                luns: self.luns.iter().map(|info| info.lun).collect(),
                chap: self.chap.clone(),
                mutual_chap: self.mutual_chap.clone(),
                allowed_initiators: self.allowed_initiators.clone(),
                max_transfer_bytes,
            })
        }))
    }
}

/// Where the target named `name` is in `targets`: a binary search, since the control
/// plane publishes its targets in name order (a map's), then a walk for a list in another
/// order (the startup configuration's). Each loop looks once per connection and change, so
/// thousands of targets and sessions made the walk a cost of every change on the I/O path.
pub(crate) fn find_target(targets: &[Arc<LiveTarget>], name: &str) -> Option<usize> {
    let at = targets.partition_point(|t| t.name.as_str() < name);
    if targets.get(at).is_some_and(|t| t.name == name) {
        return Some(at);
    }
    targets.iter().position(|t| t.name == name)
}

/// An immutable configuration: what logins see and which units commands reach. The
/// control plane publishes a new one per change; an event loop swaps its `Arc` at a turn
/// boundary, so the I/O path reads its own copy and takes no lock for configuration.
pub(crate) struct ConfigSnapshot {
    pub(crate) epoch: u64,
    pub(crate) session_config: Arc<TargetSessionConfig>,
    pub(crate) targets: Arc<Vec<Arc<LiveTarget>>>,
    /// The portals' listening sockets: every loop accepts on each.
    pub(crate) listeners: Arc<Vec<PortalListener>>,
}

/// One portal's listening socket. `id` tells a loop's accepts on it apart from those of a
/// removed portal whose slot was reused.
#[derive(Debug, Clone)]
pub(crate) struct PortalListener {
    pub(crate) id: u32,
    pub(crate) addr: SocketAddr,
    pub(crate) socket: Arc<TcpListener>,
    /// Its role (real or virtual), sessions, weight and drain flag.
    pub(crate) load: Arc<PortalLoad>,
}

/// A portal id for [`PortalListener::id`], never 0.
fn next_portal_id() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// What a snapshot takes from the array settings: the own portal group, how the virtual
/// portal answers, what SendTargets lists per group.
#[derive(Clone, Copy)]
pub(crate) struct ArrayView<'a> {
    pub(crate) portal_group_tag: u16,
    pub(crate) redirect: crate::portal::RedirectKind,
    pub(crate) send_targets: &'a crate::portal::send_targets::ListedGroups,
}

impl ConfigSnapshot {
    /// `base` with `targets` in place of its target nodes.
    fn new(
        epoch: u64,
        base: &TargetSessionConfig,
        targets: Vec<Arc<LiveTarget>>,
        listeners: Arc<Vec<PortalListener>>,
        array: ArrayView<'_>,
        max_transfer_bytes: u32,
    ) -> ConfigSnapshot {
        let ArrayView {
            portal_group_tag,
            redirect,
            send_targets,
        } = array;
        let mut session_config = base.clone();
        session_config.portals = crate::portal::send_targets::listed(
            portal_group_tag,
            portals::advertised(&listeners, portal_group_tag),
            send_targets,
        );
        session_config.redirect = portals::redirect_plan(&listeners, redirect, portal_group_tag);
        session_config.targets = targets
            .iter()
            .map(|t| t.session_node(max_transfer_bytes))
            .collect();
        ConfigSnapshot {
            epoch,
            session_config: Arc::new(session_config),
            targets: Arc::new(targets),
            listeners,
        }
    }
}

/// What one event loop needs to take new configurations: its mailbox and where it says
/// which epoch it runs.
pub(crate) struct LoopConfig {
    pub(crate) current: Arc<ConfigSnapshot>,
    pub(crate) mailbox: std::sync::mpsc::Receiver<LoopMessage>,
    pub(crate) applied_epoch: Arc<AtomicU64>,
    /// Where the loop hands the configuration it replaced: the control plane drops it
    /// (`Shared::retired`), so the loop does not pay for releasing thousands of targets'
    /// pointers per change.
    pub(crate) retired: std::sync::mpsc::Sender<Arc<ConfigSnapshot>>,
}

/// What the control plane asks of an event loop, at its next turn.
pub(crate) enum LoopMessage {
    /// Run with this configuration from now on.
    Config(Arc<ConfigSnapshot>),
    /// Send a copy of the loop's per-unit statistics.
    Stats(std::sync::mpsc::Sender<LunFigures>),
}

/// The sending side of one loop's [`LoopConfig`].
struct LoopMailbox {
    sender: std::sync::mpsc::Sender<LoopMessage>,
    waker: Arc<event_loop::Waker>,
    applied_epoch: Arc<AtomicU64>,
}

/// One logged-in session, as [`Controller::sessions`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub initiator: String,
    /// The initiator's session id, 12 hex digits.
    pub isid: String,
    pub target: String,
    pub peer: SocketAddr,
    pub tsih: u16,
    /// The portal it came in on.
    pub portal: SocketAddr,
}

fn session_info((initiator, isid, target): &SessionKey, control: &ConnControl) -> SessionInfo {
    SessionInfo {
        initiator: initiator.clone(),
        isid: isid.iter().map(|b| format!("{b:02x}")).collect(),
        target: target.clone(),
        peer: control.peer,
        tsih: control.tsih,
        portal: control.portal,
    }
}

/// Changes a running target's configuration live (see [`ConfigSnapshot`]). Cheap to
/// clone; calls from several threads are serialized.
#[derive(Clone)]
pub struct Controller {
    shared: Arc<Shared>,
    mailboxes: Arc<Mutex<Vec<LoopMailbox>>>,
    max_transfer_bytes: u32,
}

/// How long [`Controller::publish`] waits for the event loops to take a change.
const APPLY_WAIT: Duration = Duration::from_secs(5);

impl Controller {
    /// Publishes `targets` as the whole set of target nodes, and returns once every event
    /// loop runs with it: logins from then on see it, sessions of a deleted target (or of
    /// an initiator no longer allowed) are closed, and sessions whose target's LUNs
    /// changed get the unit attentions the change calls for. Sessions of unchanged
    /// targets are not disturbed.
    pub fn publish(&self, targets: Vec<Arc<LiveTarget>>) {
        self.publish_with(Some(targets), None);
    }

    /// Starts listening on `addr` (port 0 picks one) as one more portal of the group:
    /// every event loop accepts on it once this returns, and SendTargets lists it.
    /// Returns the bound address.
    pub fn add_portal(&self, addr: SocketAddr) -> Result<SocketAddr, ServerError> {
        self.add_portal_as(addr, PortalRole::Real)
    }

    /// [`Controller::add_portal`] with its role: a virtual portal redirects the logins
    /// it gets to the real ones (see `crate::portal`).
    pub fn add_portal_as(
        &self,
        addr: SocketAddr,
        role: PortalRole,
    ) -> Result<SocketAddr, ServerError> {
        let bind_error = |source| ServerError::Bind { addr, source };
        let socket = listener::bind_portal(addr).map_err(bind_error)?;
        let bound = socket.local_addr().map_err(bind_error)?;
        let mut listeners: Vec<PortalListener> = self.current().listeners.as_ref().clone();
        listeners.push(PortalListener {
            id: next_portal_id(),
            addr: bound,
            socket: Arc::new(socket),
            load: Arc::new(PortalLoad::new(bound, role, 1)),
        });
        self.publish_with(None, Some(listeners));
        tracing::info!(portal = %bound, ?role, "listening (added live)");
        Ok(bound)
    }

    /// Stops listening on the portal bound to `addr`; false when there is none.
    /// Connections accepted on it go on.
    pub fn remove_portal(&self, addr: SocketAddr) -> bool {
        let mut listeners: Vec<PortalListener> = self.current().listeners.as_ref().clone();
        let Some(at) = listeners.iter().position(|l| l.addr == addr) else {
            return false;
        };
        let removed = listeners.remove(at);
        self.publish_with(None, Some(listeners));
        // The loops no longer arm accepts on it; one still in the kernel ends now.
        // SAFETY: shutdown(2) on a descriptor the Arc keeps open; no memory is passed.
        unsafe {
            libc::shutdown(
                std::os::fd::AsRawFd::as_raw_fd(removed.socket.as_ref()),
                libc::SHUT_RDWR,
            );
        }
        tracing::info!(portal = %addr, "portal removed");
        true
    }

    fn current(&self) -> Arc<ConfigSnapshot> {
        match self.shared.current.lock() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Publishes the current configuration with new targets and/or portals, and returns
    /// once every event loop runs with it.
    fn publish_with(
        &self,
        targets: Option<Vec<Arc<LiveTarget>>>,
        listeners: Option<Vec<PortalListener>>,
    ) {
        let epoch = self.send_config(targets, listeners);
        self.wait_applied(epoch);
    }

    /// Publishes `targets` as the whole set of target nodes without waiting for the event
    /// loops, and returns the new configuration's epoch. Each loop compares the published
    /// epoch with its own after every wait for completions, before it handles any of
    /// them (`event_loop::EventLoop::take_published_config`), so every PDU that reaches
    /// the target after this returns (a login, a REPORT LUNS, a command to a LUN just
    /// attached) meets the new configuration or a newer one. Enough for a change that
    /// only adds (a target, a LUN, a binding, CHAP secrets for later logins); a change
    /// that takes something away also needs [`Controller::wait_applied`], so that no
    /// command received before it starts on what was removed.
    pub fn publish_visible(&self, targets: Vec<Arc<LiveTarget>>) -> u64 {
        self.send_config(Some(targets), None)
    }

    /// The epoch of the configuration last published.
    pub fn published_epoch(&self) -> u64 {
        self.shared.published_epoch.load(Ordering::Acquire)
    }

    /// Builds the next configuration, hands it to every loop's mailbox, wakes the loops
    /// (so idle ones take it too), then says it is published; returns its epoch.
    fn send_config(
        &self,
        targets: Option<Vec<Arc<LiveTarget>>>,
        listeners: Option<Vec<PortalListener>>,
    ) -> u64 {
        let mailboxes = match self.mailboxes.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        // The configurations the loops let go of since the last publication end here.
        self.drop_retired();
        let snapshot = {
            let mut current = match self.shared.current.lock() {
                Ok(c) => c,
                Err(poisoned) => poisoned.into_inner(),
            };
            let targets = targets.unwrap_or_else(|| current.targets.as_ref().clone());
            let listeners = match listeners {
                Some(listeners) => Arc::new(listeners),
                None => Arc::clone(&current.listeners),
            };
            let snapshot = Arc::new(ConfigSnapshot::new(
                current.epoch + 1,
                &current.session_config,
                targets,
                listeners,
                ArrayView {
                    portal_group_tag: self.shared.portal_group_tag,
                    redirect: self.shared.array.redirect(),
                    send_targets: &self.shared.array.send_targets(),
                },
                self.max_transfer_bytes,
            ));
            *current = Arc::clone(&snapshot);
            snapshot
        };
        for mailbox in mailboxes.iter() {
            // A loop that is gone (shutdown) has dropped its receiver: nothing to tell
            // (its eventfd, which the mailbox keeps, may still be written below).
            let _ = mailbox
                .sender
                .send(LoopMessage::Config(Arc::clone(&snapshot)));
        }
        // After the sends: a loop that sees this epoch finds the snapshot in its mailbox.
        // Before the wake-ups, with `SeqCst`: see `Waker::wake_if_parked`.
        self.shared
            .published_epoch
            .fetch_max(snapshot.epoch, Ordering::SeqCst);
        for mailbox in mailboxes.iter() {
            mailbox.waker.wake_if_parked();
        }
        snapshot.epoch
    }

    /// Drops the configurations the loops replaced (`LoopConfig::retired`).
    fn drop_retired(&self) {
        let retired: Vec<Arc<ConfigSnapshot>> = match self.shared.retired.lock() {
            Ok(receiver) => receiver.try_iter().collect(),
            Err(poisoned) => poisoned.into_inner().try_iter().collect(),
        };
        drop(retired);
    }

    /// Returns once every event loop runs with configuration `epoch` or a newer one (or
    /// the server stops, or after 5 s with a warning): from then on no command starts
    /// under an older configuration, on any loop.
    pub fn wait_applied(&self, epoch: u64) {
        // Not under the mailboxes' lock: publishers go on meanwhile.
        let applied: Vec<Arc<AtomicU64>> = match self.mailboxes.lock() {
            Ok(m) => m.iter().map(|m| Arc::clone(&m.applied_epoch)).collect(),
            Err(poisoned) => poisoned
                .into_inner()
                .iter()
                .map(|m| Arc::clone(&m.applied_epoch))
                .collect(),
        };
        let (lock, condvar) = &self.shared.applied;
        let deadline = std::time::Instant::now() + APPLY_WAIT;
        let mut guard = match lock.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Counted before the epochs are read, and a loop stores its epoch before it reads
        // the count (both fenced): either this caller sees the loop's epoch, or the loop
        // sees a waiter and notifies under the lock this caller holds until it waits.
        self.shared.applied_waiters.fetch_add(1, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        loop {
            let all = applied.iter().all(|a| a.load(Ordering::Acquire) >= epoch);
            let now = std::time::Instant::now();
            if all || self.shared.shutdown.load(Ordering::Acquire) || now >= deadline {
                self.shared.applied_waiters.fetch_sub(1, Ordering::SeqCst);
                // Not under the lock the loops take to say which epoch they run: releasing
                // old configurations can take a while, and a control thread running at a
                // lower priority (`--control-priority`) must not hold a loop meanwhile.
                drop(guard);
                // What the loops replaced no longer holds units removed by the change.
                self.drop_retired();
                if !all {
                    tracing::warn!(
                        epoch,
                        "an event loop has not taken the new configuration yet"
                    );
                }
                return;
            }
            guard = match condvar.wait_timeout(guard, deadline - now) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// The statistics of every unit that ran a command, by unit id
    /// ([`LunInfo::unit_id`]) and for bound volumes by unit, summed over the event loops.
    pub fn lun_stats(&self) -> LunFigures {
        let (reply, answers) = std::sync::mpsc::channel();
        let mut asked = 0;
        if let Ok(mailboxes) = self.mailboxes.lock() {
            for mailbox in mailboxes.iter() {
                if mailbox
                    .sender
                    .send(LoopMessage::Stats(reply.clone()))
                    .is_ok()
                {
                    mailbox.waker.wake();
                    asked += 1;
                }
            }
        }
        let mut merged = LunFigures::default();
        let deadline = std::time::Instant::now() + APPLY_WAIT;
        for _ in 0..asked {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Ok(copy) = answers.recv_timeout(left) else {
                tracing::warn!("an event loop did not send its statistics in time");
                break;
            };
            merged.merge(copy);
        }
        merged
    }

    /// The target nodes now published.
    pub fn targets(&self) -> Vec<Arc<LiveTarget>> {
        match self.shared.current.lock() {
            Ok(c) => c.targets.as_ref().clone(),
            Err(poisoned) => poisoned.into_inner().targets.as_ref().clone(),
        }
    }

    /// The portals' addresses, as SendTargets reports them.
    pub fn portals(&self) -> Vec<SocketAddr> {
        self.current().listeners.iter().map(|l| l.addr).collect()
    }

    /// The logged-in sessions of normal (not discovery) type.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let Ok(registry) = self.shared.registry.lock() else {
            return Vec::new();
        };
        let mut sessions: Vec<SessionInfo> = registry
            .iter()
            .map(|(key, control)| session_info(key, control))
            .collect();
        sessions.sort_by(|a, b| {
            (&a.target, &a.initiator, &a.isid).cmp(&(&b.target, &b.initiator, &b.isid))
        });
        sessions
    }

    /// Closes the sessions `pick` chooses; returns how many.
    pub fn drop_sessions(&self, pick: impl Fn(&SessionInfo) -> bool) -> usize {
        let Ok(registry) = self.shared.registry.lock() else {
            return 0;
        };
        let mut dropped = 0;
        for (key, control) in registry.iter() {
            let info = session_info(key, control);
            if pick(&info) {
                control.dropped.store(true, Ordering::Release);
                control.kill.store(true, Ordering::Release);
                control
                    .loop_waker
                    .kills_requested
                    .store(true, Ordering::Release);
                control.loop_waker.wake();
                dropped += 1;
            }
        }
        dropped
    }
}

/// A connection another thread can ask to close.
#[derive(Debug)]
pub(crate) struct ConnControl {
    pub(crate) kill: AtomicBool,
    /// Set with `kill` when an administrator dropped the session (the control plane),
    /// rather than a new login reinstating it.
    pub(crate) dropped: AtomicBool,
    pub(crate) loop_waker: Arc<event_loop::Waker>,
    pub(crate) peer: SocketAddr,
    pub(crate) tsih: u16,
    /// The portal the connection came in on.
    pub(crate) portal: SocketAddr,
    /// An Async Message the control plane asks the loop to send
    /// (`portals::AsyncRequest`, encoded; 0 = none).
    pub(crate) async_request: AtomicU64,
}

/// State shared by the event loops (none of it on the data path).
pub(crate) struct Shared {
    /// The configuration last published (the control plane's changes publish a new one;
    /// each event loop holds its own copy of the `Arc` and takes the new one at a turn).
    pub(crate) current: Mutex<Arc<ConfigSnapshot>>,
    /// Event loops report here when they took a new configuration, to the callers of
    /// `Controller::wait_applied` counted in `applied_waiters`.
    pub(crate) applied: (Mutex<()>, Condvar),
    /// Callers inside `Controller::wait_applied`. A loop takes the lock and notifies only
    /// when there is one: most publications (a bind, which only adds) have no waiter, and
    /// a notify is a system call on the loop's thread, beside its I/O.
    pub(crate) applied_waiters: AtomicUsize,
    /// Configurations the loops replaced, dropped by the control plane at its next
    /// publication (`LoopConfig::retired`).
    pub(crate) retired: Mutex<std::sync::mpsc::Receiver<Arc<ConfigSnapshot>>>,
    /// The epoch of the newest configuration in the loops' mailboxes: each loop compares
    /// it with its own at every turn (one atomic load) and takes the new one before it
    /// handles the turn's completions (`Controller::publish_visible`).
    pub(crate) published_epoch: AtomicU64,
    pub(crate) shutdown: AtomicBool,
    pub(crate) next_tsih: AtomicU16,
    pub(crate) registry: Mutex<HashMap<SessionKey, Arc<ConnControl>>>,
    pub(crate) stall_timeout: std::time::Duration,
    pub(crate) max_connections_per_thread: usize,
    pub(crate) portal_group_tag: u16,
    pub(crate) limits: ClientLimits,
    pub(crate) blocking: Mutex<blocking::BlockingPool>,
    /// ALUA states and the virtual portal's redirect kind (`portals`).
    pub(crate) array: portals::ArrayShared,
}

impl Shared {
    /// A TSIH not 0 (section 11.12.6: 0 means "new session").
    pub(crate) fn allocate_tsih(&self) -> u16 {
        loop {
            let tsih = self.next_tsih.fetch_add(1, Ordering::Relaxed);
            if tsih != 0 {
                return tsih;
            }
        }
    }

    /// Registers a new session; an old one with the same identity is told to close.
    pub(crate) fn register_session(&self, key: SessionKey, control: Arc<ConnControl>) {
        let old = match self.registry.lock() {
            Ok(mut registry) => registry.insert(key.clone(), control),
            Err(_) => None,
        };
        if let Some(old) = old {
            tracing::info!(
                initiator = %key.0,
                target = %key.2,
                "session reinstatement: closing the old session of this initiator and ISID"
            );
            old.kill.store(true, Ordering::Release);
            old.loop_waker
                .kills_requested
                .store(true, Ordering::Release);
            old.loop_waker.wake();
        }
    }

    /// Closes every session of `target` but the one `except` controls (TARGET COLD RESET).
    pub(crate) fn close_target_sessions(&self, target: &str, except: &Arc<ConnControl>) {
        let Ok(registry) = self.registry.lock() else {
            return;
        };
        for (key, control) in registry.iter() {
            if key.2 == target && !Arc::ptr_eq(control, except) {
                control.kill.store(true, Ordering::Release);
                control
                    .loop_waker
                    .kills_requested
                    .store(true, Ordering::Release);
                control.loop_waker.wake();
            }
        }
    }

    pub(crate) fn unregister_session(&self, key: &SessionKey, control: &Arc<ConnControl>) {
        if let Ok(mut registry) = self.registry.lock() {
            if registry.get(key).is_some_and(|c| Arc::ptr_eq(c, control)) {
                registry.remove(key);
            }
        }
    }
}

/// A target running in this process. Dropping it shuts it down.
pub struct RunningTarget {
    addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
    mailboxes: Arc<Mutex<Vec<LoopMailbox>>>,
    max_transfer_bytes: u32,
    wakers: Vec<Arc<event_loop::Waker>>,
    /// One per event loop, each written only by its loop.
    loop_stats: Vec<Arc<LoopStats>>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for RunningTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningTarget")
            .field("addrs", &self.addrs)
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

impl RunningTarget {
    /// The portals' bound addresses (port 0 resolved).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Commands whose file I/O ran on an event loop's ring and finished (READ, WRITE and
    /// SYNCHRONIZE CACHE on file units), summed over the loops.
    pub fn file_ios_completed(&self) -> u64 {
        self.loop_stats
            .iter()
            .map(|stats| stats.file_ios_completed.load(Ordering::Relaxed))
            .sum()
    }

    /// The handle that changes this target's configuration live.
    pub fn controller(&self) -> Controller {
        Controller {
            shared: Arc::clone(&self.shared),
            mailboxes: Arc::clone(&self.mailboxes),
            max_transfer_bytes: self.max_transfer_bytes,
        }
    }

    /// What the target holds now (see [`ServerStats`]).
    pub fn stats(&self) -> ServerStats {
        let sum = |field: fn(&LoopStats) -> &std::sync::atomic::AtomicU64| {
            self.loop_stats
                .iter()
                .map(|stats| field(stats).load(Ordering::Relaxed))
                .sum()
        };
        ServerStats {
            connections: sum(|s| &s.connections),
            logging_in: sum(|s| &s.logging_in),
            refused: sum(|s| &s.refused),
            output_owed_bytes: sum(|s| &s.output_owed_bytes),
            receive_buffer_bytes: sum(|s| &s.receive_buffer_bytes),
            commands_timed_out: sum(|s| &s.commands_timed_out),
            ring_backlog_high_water: self
                .loop_stats
                .iter()
                .map(|s| s.ring_backlog_high_water.load(Ordering::Relaxed))
                .max()
                .unwrap_or(0),
            arms_deferred: sum(|s| &s.arms_deferred),
        }
    }

    /// Stops accepting, closes every connection (commands waiting for write data are
    /// dropped; the initiator sees the connection close), flushes the logical units and
    /// joins the event loop threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.shared.shutdown.store(true, Ordering::Release);
        for waker in &self.wakers {
            waker.wake();
        }
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("an event loop thread panicked");
            }
        }
        // Configurations the loops replaced hold units (files, pool volumes) that a
        // restart in this process may open again.
        let retired: Vec<Arc<ConfigSnapshot>> = match self.shared.retired.lock() {
            Ok(receiver) => receiver.try_iter().collect(),
            Err(poisoned) => poisoned.into_inner().try_iter().collect(),
        };
        drop(retired);
        // The rings' pending accepts hold the listening sockets until the kernel finishes
        // tearing the rings down, after the threads are gone: stop listening now, so a
        // connection attempt after `shutdown` returns is refused, not queued.
        let listeners = match self.shared.current.lock() {
            Ok(c) => Arc::clone(&c.listeners),
            Err(poisoned) => Arc::clone(&poisoned.into_inner().listeners),
        };
        for listener in listeners.iter() {
            // SAFETY: shutdown(2) on a descriptor the snapshot keeps open; no memory is
            // passed.
            unsafe {
                libc::shutdown(
                    std::os::fd::AsRawFd::as_raw_fd(listener.socket.as_ref()),
                    libc::SHUT_RDWR,
                );
            }
        }
        if let Ok(mut pool) = self.shared.blocking.lock() {
            pool.stop();
        }
        let current = match self.shared.current.lock() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        for target in current.targets.iter() {
            tracing::debug!(target = %target.name, "flushing logical units");
            target.executor.flush();
        }
        tracing::info!("target stopped");
    }
}

impl Drop for RunningTarget {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts a target with the default LUN builder ([`build_luns`]).
pub fn start(config: TargetConfig) -> Result<RunningTarget, ServerError> {
    start_with(config, &build_luns)
}

/// Starts a target whose logical units come from `builder`.
pub fn start_with(
    config: TargetConfig,
    builder: &LunBuilder,
) -> Result<RunningTarget, ServerError> {
    if config.targets.is_empty() {
        return Err(ServerError::Config("no target node".into()));
    }
    checks::check_config(&config)?;
    // Every LUN is opened and checked before any portal listens: a gateway that cannot
    // serve its LUNs never says "listening".
    let mut targets = Vec::new();
    for node in &config.targets {
        let executor = builder(node, config.portal_group_tag)?;
        targets.push(Arc::new(LiveTarget::from_node(node, executor)));
    }
    start_live(config, targets)
}

/// Starts a target with target nodes built by the caller (the control plane builds its
/// own, so that it can change them later); `config.targets` is not used. No target at
/// all is allowed: they come later through [`RunningTarget::controller`].
pub fn start_live(
    config: TargetConfig,
    targets: Vec<Arc<LiveTarget>>,
) -> Result<RunningTarget, ServerError> {
    if config.portals.is_empty() {
        return Err(ServerError::Config("no portal".into()));
    }
    checks::check_config(&config)?;
    raise_descriptor_limit();
    keep_freed_memory();
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    for addr in &config.portals {
        let bind_error = |source| {
            let error = ServerError::Bind {
                addr: *addr,
                source,
            };
            tracing::error!(portal = %addr, %error, "cannot listen");
            error
        };
        let listener = listener::bind_portal(*addr).map_err(bind_error)?;
        let bound = listener.local_addr().map_err(bind_error)?;
        tracing::info!(portal = %bound, "listening");
        addrs.push(bound);
        listeners.push(listener);
    }
    let mut roles = vec![PortalRole::Real; addrs.len()];
    if let Some(addr) = config.array.virtual_portal {
        let bind_error = |source| ServerError::Bind { addr, source };
        let listener = listener::bind_portal(addr).map_err(bind_error)?;
        let bound = listener.local_addr().map_err(bind_error)?;
        tracing::info!(portal = %bound, redirect = config.array.redirect.name(), "listening (virtual portal)");
        addrs.push(bound);
        listeners.push(listener);
        roles.push(PortalRole::Virtual);
    }
    let mut session_config = TargetSessionConfig::new(Vec::new(), Vec::new());
    session_config.cmd_window = config.max_cmd_window.max(1);
    session_config.login_timeout = config.login_timeout;
    session_config.nop_interval = config.nop_interval;
    session_config.nop_timeout = config.nop_timeout;
    session_config.discovery_chap = config.discovery_chap.clone();
    session_config.offer.max_recv_data_segment_length = config.max_recv_data_segment_length;
    let listeners = Arc::new(
        listeners
            .into_iter()
            .zip(addrs.iter().zip(&roles))
            .map(|(socket, (addr, role))| PortalListener {
                id: next_portal_id(),
                addr: *addr,
                socket: Arc::new(socket),
                load: Arc::new(PortalLoad::new(*addr, *role, config.array.weight_of(*addr))),
            })
            .collect::<Vec<_>>(),
    );
    let snapshot = Arc::new(ConfigSnapshot::new(
        1,
        &session_config,
        targets,
        listeners,
        ArrayView {
            portal_group_tag: config.portal_group_tag,
            redirect: config.array.redirect,
            send_targets: &Default::default(),
        },
        config.max_transfer_bytes,
    ));
    let array = portals::ArrayShared::new(&config)?;

    let (retired_sender, retired_receiver) = std::sync::mpsc::channel();
    let shared = Arc::new(Shared {
        array,
        current: Mutex::new(Arc::clone(&snapshot)),
        applied: (Mutex::new(()), Condvar::new()),
        applied_waiters: AtomicUsize::new(0),
        retired: Mutex::new(retired_receiver),
        published_epoch: AtomicU64::new(snapshot.epoch),
        shutdown: AtomicBool::new(false),
        next_tsih: AtomicU16::new(1),
        registry: Mutex::new(HashMap::new()),
        stall_timeout: config.stall_timeout,
        max_connections_per_thread: config.max_connections_per_thread.max(1),
        portal_group_tag: config.portal_group_tag,
        limits: config.client_limits,
        blocking: Mutex::new(
            blocking::BlockingPool::start(config.client_limits.blocking_threads)
                .map_err(ServerError::Thread)?,
        ),
    });
    let threads_wanted = config.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(8)
    });
    let mut target = RunningTarget {
        addrs,
        shared: Arc::clone(&shared),
        mailboxes: Arc::new(Mutex::new(Vec::new())),
        max_transfer_bytes: config.max_transfer_bytes,
        wakers: Vec::new(),
        loop_stats: Vec::new(),
        threads: Vec::new(),
    };
    for index in 0..threads_wanted.max(1) {
        let waker = Arc::new(event_loop::Waker::new().map_err(ServerError::Ring)?);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (sender, mailbox) = std::sync::mpsc::channel();
        let applied_epoch = Arc::new(AtomicU64::new(snapshot.epoch));
        let loop_config = LoopConfig {
            current: Arc::clone(&snapshot),
            mailbox,
            applied_epoch: Arc::clone(&applied_epoch),
            retired: retired_sender.clone(),
        };
        if let Ok(mut mailboxes) = target.mailboxes.lock() {
            mailboxes.push(LoopMailbox {
                sender,
                waker: Arc::clone(&waker),
                applied_epoch,
            });
        }
        let thread = {
            let shared = Arc::clone(&shared);
            let waker = Arc::clone(&waker);
            let stats = Arc::new(LoopStats::default());
            target.loop_stats.push(Arc::clone(&stats));
            std::thread::Builder::new()
                .name(format!("iscsi-target-{index}"))
                .spawn(move || event_loop::run(shared, waker, stats, loop_config, ready_tx))
                .map_err(ServerError::Thread)?
        };
        target.wakers.push(waker);
        target.threads.push(thread);
        // The loop reports whether its ring came up.
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ServerError::Ring(e)),
            Err(_) => return Err(ServerError::Config("event loop died at start".into())),
        }
    }
    if !config.array.links.is_empty() {
        // Port takeover: the watcher ends with the target (its shutdown flag).
        takeover::watch_portal_links(target.controller(), config.array.links.clone())
            .map_err(ServerError::Thread)?;
    }
    Ok(target)
}

/// Raises this process's soft limit on open descriptors to its hard limit: a target
/// holds one per connection, and the usual soft limit (1024) is far below the
/// connections it is built to serve.
fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct we pass, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            let wanted = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
                tracing::warn!(
                    soft = limit.rlim_cur,
                    "could not raise the open-descriptor limit; connections past it are refused"
                );
            }
        }
    }
}

/// Keeps memory the allocator got back for reuse instead of returning it to the kernel:
/// every command allocates its read data (64 KiB to 8 MiB) and frees it a moment later,
/// and with glibc's defaults that memory went back to the kernel (trimmed, or unmapped
/// above the mmap threshold) and was faulted in again by the next command, a fifth of an
/// event loop's time at 64 KiB reads (measured with perf). The resident size stays bounded
/// by the client limits either way.
fn keep_freed_memory() {
    #[cfg(target_env = "gnu")]
    {
        const MMAP_THRESHOLD: libc::c_int = 32 << 20;
        const TRIM_THRESHOLD: libc::c_int = 64 << 20;
        // SAFETY: mallopt only changes the allocator's thresholds; no memory is passed.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    }
}

/// The default LUN builder: the SCSI disk emulation over the backend each spec names.
pub fn build_luns(
    node: &TargetNodeConfig,
    portal_group_tag: u16,
) -> Result<Arc<dyn LunExecutor>, ServerError> {
    luns::build(node, portal_group_tag)
}

/// The SCSI disk emulation over logical units built by the caller (for example over
/// backends of its own), as [`build_luns`] builds it from specs.
pub fn disk_luns(
    target_name: &str,
    portal_group_tag: u16,
    map: crate::disk::LunMap,
) -> Arc<dyn LunExecutor> {
    luns::from_map(target_name, portal_group_tag, map)
}

/// [`disk_luns`] over a map shared with the host executors of the same target.
pub fn disk_luns_shared(
    target_name: &str,
    portal_group_tag: u16,
    map: Arc<crate::disk::LunMap>,
) -> Arc<dyn LunExecutor> {
    luns::shared(target_name, portal_group_tag, map)
}

/// The executor of a host with volumes bound: `map` (the target's LUNs) and `bound`.
pub fn disk_luns_for_host(
    target_name: &str,
    portal_group_tag: u16,
    map: Arc<crate::disk::LunMap>,
    bound: Arc<HostBindings>,
) -> Arc<dyn LunExecutor> {
    luns::for_host(target_name, portal_group_tag, map, bound)
}

mod luns;

#[cfg(test)]
mod find_target_tests {
    use super::*;

    fn targets(names: &[&str]) -> Vec<Arc<LiveTarget>> {
        names
            .iter()
            .map(|name| {
                Arc::new(LiveTarget::new(
                    name,
                    disk_luns(name, 1, crate::disk::LunMap::new()),
                    Vec::new(),
                ))
            })
            .collect()
    }

    /// In name order (what the control plane publishes) or not (a startup list), every
    /// target is found where it is, and an absent one is not found.
    #[test]
    fn a_target_is_found_in_a_sorted_list_and_in_any_other() {
        let sorted = targets(&["iqn.a", "iqn.b", "iqn.c", "iqn.d"]);
        let shuffled = targets(&["iqn.c", "iqn.a", "iqn.d", "iqn.b"]);
        for list in [&sorted, &shuffled] {
            for (i, target) in list.iter().enumerate() {
                assert_eq!(find_target(list, &target.name), Some(i));
            }
            assert_eq!(find_target(list, "iqn.e"), None);
            assert_eq!(find_target(list, "iqn."), None);
        }
        assert_eq!(find_target(&[], "iqn.a"), None);
    }
}
