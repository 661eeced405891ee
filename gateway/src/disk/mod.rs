//! SCSI block-device emulation: the device server of a direct-access logical unit
//! (SPC-4 clause 6, SBC-3 clause 5) over a [`Backend`]. No network, no iSCSI: the target
//! session hands each command in as a [`ScsiTask`] and sends the [`ScsiResult`] back.
//!
//! What is implemented, by section:
//! - SPC-4: INQUIRY (6.6) with the VPD pages (7.8) Supported VPD Pages 0x00, Unit Serial
//!   Number 0x80, Device Identification 0x83 (NAA, T10 vendor ID, relative target port,
//!   target port group and SCSI name string designators); MODE SENSE(6)/(10) (6.11, 6.12)
//!   and MODE SELECT(6)/(10) (6.9, 6.10) for the Caching (SBC-3 6.4.5) and Control (SPC-4
//!   7.5.8) mode pages; REPORT LUNS (6.27, in [`LunMap`]); REPORT SUPPORTED OPERATION
//!   CODES (6.35); REQUEST SENSE (6.39); TEST UNIT READY (6.47); sense data (4.5).
//! - SBC-3: READ(6/10/12/16), WRITE(6/10/12/16), WRITE AND VERIFY(10/12/16),
//!   VERIFY(10/12/16), ORWRITE(16), COMPARE AND WRITE (5.2), WRITE SAME(10/16) with
//!   UNMAP, UNMAP (5.28), GET LBA STATUS (5.7), READ CAPACITY(10)/(16) with LBPME/LBPRZ,
//!   SYNCHRONIZE CACHE(10/16), PRE-FETCH(10/16), START STOP UNIT, PREVENT ALLOW MEDIUM
//!   REMOVAL; the VPD pages Block Limits 0xB0, Block Device Characteristics 0xB1 and
//!   Logical Block Provisioning 0xB2 (6.6).
//!
//! Every CDB field is validated before data is touched: opcode and service action, then
//! reserved bits against the command's usage data ([`opcodes`]), then command fields, then
//! the LBA range, then the transfer length against the limits in the Block Limits page,
//! then the Data-Out length. Nothing is allocated from a length the initiator sent beyond
//! those limits. No unit attention is ever reported: the logical unit has no power-on or
//! reset events of its own to announce (the target session owns nexus-level events).
//!
//! Concurrency: [`LogicalUnit::execute`] takes `&self` and may run on several threads at
//! once. Ordinary writes share a write gate; COMPARE AND WRITE and ORWRITE take it
//! exclusively, so their read-compare-write is atomic against every other write.
#![forbid(unsafe_code)]

mod block;
pub mod conglomerate;
mod gate;
mod inquiry;
mod mode;
pub mod opcodes;
mod sanitizing;
pub use sanitizing::{Fence as SanitizeFence, FenceRefused as SanitizeFenceRefused};
pub mod sense;
mod special;
pub mod xcopy;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::backend::Backend;
use opcodes::{op, service_action, Command};
use sense::{asc, key, status, Check};

/// The largest transfer one command may move, advertised in the Block Limits VPD page.
pub const MAX_TRANSFER_BYTES: u32 = 8 * 1024 * 1024;
/// COMPARE AND WRITE moves twice this many blocks (Block Limits byte 5).
pub const MAX_COMPARE_AND_WRITE_BLOCKS: u8 = 255;
/// Largest UNMAP LBA count per command, and per WRITE SAME with UNMAP.
pub const MAX_UNMAP_BLOCKS: u32 = 1 << 20;
/// Largest number of UNMAP block descriptors per parameter list.
pub const MAX_UNMAP_DESCRIPTORS: u32 = 256;

/// How a logical unit describes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuConfig {
    /// Logical block length in bytes: 512 or 4096.
    pub block_size: u32,
    /// T10 VENDOR IDENTIFICATION, at most 8 ASCII characters (padded with spaces).
    pub vendor: std::borrow::Cow<'static, str>,
    /// PRODUCT IDENTIFICATION, at most 16 ASCII characters.
    pub product: std::borrow::Cow<'static, str>,
    /// PRODUCT REVISION LEVEL, at most 4 ASCII characters.
    pub revision: std::borrow::Cow<'static, str>,
    /// Unit serial number (VPD 0x80), printable ASCII.
    pub serial: String,
    /// The NAA designator of the logical unit (VPD 0x83): NAA 3h, locally assigned,
    /// 8 bytes. Multipath and clustered file systems key on it, so it must be unique and
    /// stable: the server takes it from the LU's storage (`crate::backend::LuIdentity`);
    /// [`LuConfig::for_name`] derives one from a name, for tests and embedders.
    pub naa_id: [u8; 8],
    /// WCE in the Caching mode page at start; MODE SELECT may change it.
    pub write_cache: bool,
    /// Write protected by configuration (`readonly` in the LUN spec): MODE SENSE reports
    /// WP and every write fails with DATA PROTECT; MODE SELECT cannot lift it.
    pub read_only: bool,
    /// Its place in a conglomerate: a plain LU, a protocol endpoint, or a bound volume.
    pub role: conglomerate::Role,
}

impl LuConfig {
    /// A configuration whose serial number and NAA designator derive from `name` (for
    /// example the target name and LUN), with 512-byte blocks and the write cache on.
    pub fn for_name(name: &str) -> LuConfig {
        let hash = fnv1a_64(name.as_bytes());
        let mut naa_id = (hash & 0x0fff_ffff_ffff_ffff).to_be_bytes();
        naa_id[0] |= 0x30;
        let serial = format!("{:016x}", fnv1a_64(&[name.as_bytes(), b"/serial"].concat()));
        LuConfig::with_identity(serial, naa_id)
    }

    /// A configuration with this serial number and NAA designator (the storage's own
    /// identity), 512-byte blocks and the write cache on: [`LuConfig::for_name`] without
    /// the name (a bind opens a unit per volume; deriving an identity it replaces at once
    /// cost it a few allocations and hashes).
    pub fn with_identity(serial: String, naa_id: [u8; 8]) -> LuConfig {
        LuConfig {
            block_size: 512,
            // Borrowed: no allocation per unit (a bind opens one per volume).
            vendor: "IOURING ".into(),
            product: "gateway disk".into(),
            revision: "0001".into(),
            serial,
            naa_id,
            write_cache: true,
            read_only: false,
            role: conglomerate::Role::Plain,
        }
    }
}

impl Default for LuConfig {
    fn default() -> LuConfig {
        LuConfig::for_name("lun")
    }
}

/// FNV-1a, 64-bit: a small, stable hash for identifiers (not for security).
fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The target port a command came through, for the Device Identification VPD page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetPortInfo<'a> {
    /// RELATIVE TARGET PORT IDENTIFIER (1 for the first port; 0 is reserved).
    pub relative_port_id: u16,
    /// TARGET PORT GROUP.
    pub target_port_group: u16,
    /// The iSCSI target name (`iqn...`).
    pub target_name: &'a str,
    /// The target portal group tag. The SCSI name string designator of the target port
    /// is the iSCSI target port name: `target_name`, `",t,0x"`, then the tag in hex
    /// (SPC-4 7.8.6.11 and the iSCSI naming of ports, RFC 7143 section 4.2.7).
    pub tpgt: u16,
}

impl Default for TargetPortInfo<'_> {
    fn default() -> Self {
        TargetPortInfo {
            relative_port_id: 1,
            target_port_group: 0,
            target_name: "",
            tpgt: 1,
        }
    }
}

/// The I_T nexus a command came on, by its initiator port: the iSCSI initiator name and
/// the session's ISID (RFC 7143 section 4.2.7; the target port is [`TargetPortInfo`]).
/// State SPC keeps per I_T nexus (held copy results; reservations) is keyed by it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Nexus<'a> {
    pub initiator_name: &'a str,
    pub isid: [u8; 6],
}

impl Nexus<'_> {
    /// An owned copy, to keep with state of the nexus.
    pub fn to_key(&self) -> NexusKey {
        NexusKey {
            initiator_name: self.initiator_name.to_string(),
            isid: self.isid,
        }
    }
}

/// A [`Nexus`] to keep.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NexusKey {
    pub initiator_name: String,
    pub isid: [u8; 6],
}

impl NexusKey {
    pub fn as_nexus(&self) -> Nexus<'_> {
        Nexus {
            initiator_name: &self.initiator_name,
            isid: self.isid,
        }
    }
}

/// One SCSI command as the target session received it.
#[derive(Debug, Clone, Copy)]
pub struct ScsiTask<'a> {
    /// The CDB (16 bytes from the iSCSI header, plus any additional header segment).
    pub cdb: &'a [u8],
    /// All Data-Out the initiator sent (immediate, unsolicited and solicited).
    pub data_out: &'a [u8],
    /// Expected Data Transfer Length from the iSCSI header for a read. The device server
    /// produces what the command asks for (already cut to the CDB's allocation length);
    /// the session sends at most this many bytes and reports the residual.
    pub expected_data_in_len: u32,
    pub target_port: TargetPortInfo<'a>,
    /// The I_T nexus it came on.
    pub nexus: Nexus<'a>,
}

/// The outcome of one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiResult {
    /// SCSI status: GOOD (0x00) or CHECK CONDITION (0x02).
    pub status: u8,
    /// Fixed-format sense data (0x70, 18 bytes) with CHECK CONDITION; empty with GOOD.
    pub sense: Vec<u8>,
    /// Data-In, at most the CDB's allocation length. For reads it is the whole transfer;
    /// the session cuts it to Expected Data Transfer Length and reports the residual.
    pub data_in: Vec<u8>,
}

impl ScsiResult {
    pub fn good(data_in: Vec<u8>) -> ScsiResult {
        ScsiResult {
            status: status::GOOD,
            sense: Vec::new(),
            data_in,
        }
    }

    pub fn check_condition(check: &Check) -> ScsiResult {
        ScsiResult {
            status: status::CHECK_CONDITION,
            sense: check.to_fixed_sense(),
            data_in: Vec::new(),
        }
    }

    fn from_outcome(outcome: Result<Vec<u8>, Check>) -> ScsiResult {
        match outcome {
            Ok(data) => ScsiResult::good(data),
            Err(check) => ScsiResult::check_condition(&check),
        }
    }
}

/// A direct-access logical unit over a backend.
pub struct LogicalUnit {
    /// Shared only with a SANITIZE run with IMMED set (`special`), which outlives its
    /// command.
    backend: Arc<dyn Backend>,
    config: LuConfig,
    /// Grows when the backend grows ([`LogicalUnit::refresh_capacity`]); a relaxed load
    /// on the I/O path, no lock.
    blocks: AtomicU64,
    write_cache: AtomicBool,
    /// SWP in the Control mode page: the medium is write protected.
    software_write_protect: AtomicBool,
    /// Shared by ordinary writes (no lock or counter shared by all cores), exclusive for
    /// COMPARE AND WRITE and ORWRITE; also counts the planned writes the server has not
    /// finished yet (see [`LogicalUnit::plan`]).
    write_gate: Arc<gate::WriteGate>,
    /// EXTENDED COPY results held for RECEIVE COPY RESULTS.
    copies: xcopy::CopyResults,
    /// SCSI-2 and persistent reservations; the server checks each command against them
    /// before it reaches this unit (`crate::reservation`).
    reservations: Arc<crate::reservation::LuReservations>,
    /// A SANITIZE in progress (`sanitizing`), shared with the unit's other backends.
    sanitizing: Arc<sanitizing::Sanitizing>,
    /// Commands on the blocking pool (`blocking_ticket`): this unit's own.
    blocking_commands: Arc<AtomicU64>,
}

/// A command of a unit on the blocking pool ([`LogicalUnit::blocking_ticket`]).
#[derive(Debug)]
pub struct BlockingTicket {
    /// The unit's count of such commands, less one when dropped.
    count: Arc<AtomicU64>,
}

impl Drop for BlockingTicket {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What [`LogicalUnit::plan`] decided.
#[derive(Debug)]
pub enum Plan {
    /// The command ran (or failed its checks); this is its result.
    Done(ScsiResult),
    /// The command passed every check; the caller does this I/O on the backend's ring
    /// file ([`Backend::ring_file`]) and hands the outcome to [`LogicalUnit::finish`].
    Io(IoPlan),
    /// Nothing ran: the command needs synchronous calls on a backend whose calls may
    /// block (a file), so the caller runs [`LogicalUnit::execute`] on a thread that may
    /// wait, not on an event loop.
    Blocking,
}

/// The I/O a planned command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    /// Read `len` bytes at `offset`; they are the command's Data-In.
    Read,
    /// Write the first `len` bytes of the Data-Out at `offset`.
    Write,
    /// Make every completed write durable (fdatasync).
    Flush,
}

/// One planned I/O: byte offset and length on the backend (checked against the medium and
/// the transfer limit), and whether a write must be made durable before GOOD (FUA or the
/// write cache off).
#[derive(Debug)]
pub struct IoPlan {
    pub kind: IoKind,
    pub offset: u64,
    pub len: u64,
    pub flush_after: bool,
    /// Counts a write as in flight until the plan is dropped (finished or abandoned).
    _ticket: Option<gate::RingTicket>,
}

impl std::fmt::Debug for LogicalUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogicalUnit")
            .field("backend", &self.backend.kind())
            .field("blocks", &self.blocks())
            .field("config", &self.config)
            .finish()
    }
}

impl LogicalUnit {
    /// A logical unit exporting `backend.size_bytes() / block_size` blocks (the backend's
    /// own block length when it has one). A block size other than 512 or 4096 is taken as
    /// 512.
    pub fn new(backend: Box<dyn Backend>, mut config: LuConfig) -> Self {
        // A far array's LUN dictates its block length (its LBAs are ours).
        if let Some(block_bytes) = backend.logical_block_bytes() {
            config.block_size = block_bytes;
        }
        if config.block_size != 512 && config.block_size != 4096 {
            config.block_size = 512;
        }
        let blocks = backend.size_bytes() / u64::from(config.block_size);
        LogicalUnit {
            backend: Arc::from(backend),
            write_cache: AtomicBool::new(config.write_cache),
            software_write_protect: AtomicBool::new(false),
            write_gate: Arc::new(gate::WriteGate::new()),
            copies: xcopy::CopyResults::default(),
            reservations: Arc::new(crate::reservation::LuReservations::new()),
            sanitizing: Arc::default(),
            blocking_commands: Arc::default(),
            config,
            blocks: AtomicU64::new(blocks),
        }
    }

    /// Caps the pace of SANITIZE at `bytes_per_second` (`sanitize_rate=` in the LUN
    /// spec; see `sanitizing`).
    pub fn with_sanitize_rate(mut self, bytes_per_second: Option<u64>) -> Self {
        self.sanitizing = Arc::new(sanitizing::Sanitizing::with_rate(bytes_per_second));
        self
    }

    /// Keeps APTPL state (persistent reservations across restarts) in the given
    /// reservations, typically [`crate::reservation::LuReservations::persistent`].
    pub fn with_reservations(mut self, reservations: crate::reservation::LuReservations) -> Self {
        self.reservations = Arc::new(reservations);
        self
    }

    /// The same logical unit over another backend (a migration's, a change tracker's): the
    /// identity, block size, mode settings, reservations and write gate are shared with
    /// this one, so a host sees one unit before, during and after the swap, and COMPARE
    /// AND WRITE excludes writes on both while commands still finish on the old one.
    /// Held EXTENDED COPY results stay with this one.
    pub fn over_backend(&self, backend: Box<dyn Backend>) -> LogicalUnit {
        // The capacity hosts see stays (a larger backend's rest is not exported).
        LogicalUnit {
            backend: Arc::from(backend),
            config: self.config.clone(),
            blocks: AtomicU64::new(self.blocks()),
            write_cache: AtomicBool::new(self.write_cache_enabled()),
            software_write_protect: AtomicBool::new(
                self.software_write_protect.load(Ordering::Relaxed),
            ),
            write_gate: Arc::clone(&self.write_gate),
            copies: xcopy::CopyResults::default(),
            reservations: Arc::clone(&self.reservations),
            sanitizing: Arc::clone(&self.sanitizing),
            blocking_commands: Arc::default(),
        }
    }

    /// Whether no write planned on a ring is in flight on this unit (or a unit sharing its
    /// gate).
    pub fn ring_writes_idle(&self) -> bool {
        !self.write_gate.ring_writes_in_flight()
    }

    /// Counts a command [`LogicalUnit::plan`] left to the blocking pool until the guard
    /// drops (it travels with the job). A job waiting for a pool thread has not taken the
    /// write gate yet, so without this a unit being replaced (a migration starting) could
    /// drain while such a write still waited, and the write then reached the old backend
    /// after the copy had passed its region: the destination never got it. The count is
    /// this unit's own, not shared with the unit that replaces it.
    pub fn blocking_ticket(&self) -> BlockingTicket {
        self.blocking_commands.fetch_add(1, Ordering::SeqCst);
        BlockingTicket {
            count: Arc::clone(&self.blocking_commands),
        }
    }

    /// Keeps SANITIZE from starting on this unit (and the units sharing its state, see
    /// [`LogicalUnit::over_backend`]) while the control plane replaces or removes its
    /// backend; refused while one runs (`sanitizing`).
    pub fn fence_sanitize(&self) -> Result<SanitizeFence, SanitizeFenceRefused> {
        self.sanitizing.fence()
    }

    /// Whether no command of this unit is on the blocking pool (waiting or running).
    pub fn blocking_idle(&self) -> bool {
        self.blocking_commands.load(Ordering::SeqCst) == 0
    }

    /// Waits until no ordinary synchronous write runs on this unit (or any unit sharing
    /// its gate), by taking the gate exclusively for a moment.
    pub fn drain_writes(&self) {
        drop(self.write_gate.exclusive());
    }

    pub fn reservations(&self) -> &crate::reservation::LuReservations {
        &self.reservations
    }

    pub fn block_size(&self) -> u32 {
        self.config.block_size
    }

    /// Number of logical blocks (the last LBA is one less).
    pub fn blocks(&self) -> u64 {
        self.blocks.load(Ordering::Relaxed)
    }

    /// Reads the backend's size again (a pool volume grown while exported) and returns
    /// the block count. It never shrinks. The caller publishes the new count to the
    /// event loops, which report CAPACITY DATA HAS CHANGED.
    pub fn refresh_capacity(&self) -> u64 {
        let blocks = self.backend.refresh_size() / u64::from(self.config.block_size);
        self.blocks.fetch_max(blocks, Ordering::Relaxed);
        self.blocks()
    }

    pub fn config(&self) -> &LuConfig {
        &self.config
    }

    /// The backend, when this unit holds it alone (a retired unit's, to give its memory
    /// back: `control::retire`).
    pub fn backend_mut(&mut self) -> Option<&mut (dyn Backend + 'static)> {
        Arc::get_mut(&mut self.backend)
    }

    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    fn thin(&self) -> bool {
        self.backend.thin()
    }

    fn max_transfer_blocks(&self) -> u32 {
        MAX_TRANSFER_BYTES / self.config.block_size
    }

    /// Largest WRITE SAME, with or without UNMAP (Block Limits MAXIMUM WRITE SAME LENGTH):
    /// the transfer limit. Initiators size WRITE SAME like the writes they could send
    /// instead (libiscsi writes a range with WRITE(16) before it unmaps it with WRITE
    /// SAME(16) and expects WRITE SAME beyond the advertised limit to fail), and a WRITE
    /// SAME without UNMAP writes every block, so this also bounds one command's work.
    fn max_write_same_blocks(&self) -> u64 {
        u64::from(self.max_transfer_blocks())
    }

    /// Runs one command. Never panics on any CDB or Data-Out.
    pub fn execute(&self, task: &ScsiTask) -> ScsiResult {
        if let Some(check) = self.sanitizing.refuses(task.cdb) {
            return ScsiResult::check_condition(&check);
        }
        if matches!(
            task.cdb.first().copied(),
            Some(op::COMPARE_AND_WRITE | op::ORWRITE_16 | op::WRITE_ATOMIC_16)
        ) {
            // Their read-compare-write is atomic against every other write: no ordinary
            // write may start (the gate) and none planned on a ring may be in flight.
            // A planned write in flight holds a ticket: COMPARE AND WRITE and ORWRITE refuse
            // with BUSY while any does, because the thread running them may be the one
            // that would complete that write.
            let _gate = self.write_gate.exclusive();
            if self.write_gate.ring_writes_in_flight() {
                return ScsiResult {
                    status: status::BUSY,
                    sense: Vec::new(),
                    data_in: Vec::new(),
                };
            }
            return ScsiResult::from_outcome(self.dispatch(task));
        }
        ScsiResult::from_outcome(self.dispatch(task))
    }

    fn dispatch(&self, task: &ScsiTask) -> Result<Vec<u8>, Check> {
        let cdb = task.cdb;
        if self.config.role == conglomerate::Role::Endpoint && conglomerate::endpoint_refuses(cdb) {
            return Err(Check::invalid_opcode());
        }
        let command: &Command = opcodes::lookup(cdb, self.thin())?;
        opcodes::check_reserved_bits(command, cdb)?;
        match command.opcode {
            op::TEST_UNIT_READY => Ok(Vec::new()),
            op::REQUEST_SENSE => Ok(request_sense(cdb, self.sanitizing.condition())),
            op::INQUIRY => self.inquiry(task),
            op::MODE_SELECT_6 | op::MODE_SELECT_10 => self.mode_select(task),
            op::MODE_SENSE_6 | op::MODE_SENSE_10 => self.mode_sense(cdb),
            op::START_STOP_UNIT | op::PREVENT_ALLOW_MEDIUM_REMOVAL => Ok(Vec::new()),
            op::READ_CAPACITY_10 => self.read_capacity_10(cdb),
            op::SERVICE_ACTION_IN_16 => match cdb[1] & 0x1f {
                service_action::READ_CAPACITY_16 => self.read_capacity_16(cdb),
                _ => self.get_lba_status(cdb),
            },
            op::MAINTENANCE_IN => report_supported_operation_codes(cdb, self.thin()),
            op::READ_6 | op::READ_10 | op::READ_12 | op::READ_16 => self.read(cdb),
            op::WRITE_6 | op::WRITE_10 | op::WRITE_12 | op::WRITE_16 => {
                self.write(cdb, task.data_out)
            }
            op::WRITE_AND_VERIFY_10 | op::WRITE_AND_VERIFY_12 | op::WRITE_AND_VERIFY_16 => {
                self.write_and_verify(cdb, task.data_out)
            }
            op::VERIFY_10 | op::VERIFY_12 | op::VERIFY_16 => self.verify(cdb, task.data_out),
            op::PRE_FETCH_10 | op::PRE_FETCH_16 => self.pre_fetch(cdb),
            op::SYNCHRONIZE_CACHE_10 | op::SYNCHRONIZE_CACHE_16 => self.synchronize_cache(cdb),
            op::WRITE_SAME_10 | op::WRITE_SAME_16 => self.write_same(cdb, task.data_out),
            op::UNMAP => self.unmap(cdb, task.data_out),
            op::COMPARE_AND_WRITE => self.compare_and_write(cdb, task.data_out),
            op::ORWRITE_16 => self.orwrite(cdb, task.data_out),
            // REPORT LUNS is in the table so that REPORT SUPPORTED OPERATION CODES lists
            // it; a logical unit on its own reports just LUN 0.
            op::REPORT_LUNS => conglomerate::report_luns(cdb, 0, &SoleUnit(self.config.role)),
            op::EXTENDED_COPY => self.extended_copy(task),
            op::RECEIVE_COPY_RESULTS => self.receive_copy_results(task),
            op::WRITE_ATOMIC_16 => self.write_atomic(cdb, task.data_out),
            op::READ_DEFECT_DATA_10 | op::READ_DEFECT_DATA_12 => special::read_defect_data(cdb),
            op::SANITIZE => self.sanitize(cdb, task.data_out),
            _ => Err(Check::invalid_opcode()),
        }
    }
}

/// Cuts parameter data to the allocation length (SPC-4 4.2.5.6): never an error.
fn truncate(mut data: Vec<u8>, allocation_length: usize) -> Vec<u8> {
    data.truncate(allocation_length);
    data
}

fn be16(bytes: &[u8], at: usize) -> u16 {
    match bytes.get(at..at + 2) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => 0,
    }
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    match bytes.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

fn be64(bytes: &[u8], at: usize) -> u64 {
    match bytes.get(at..at + 8) {
        Some(slice) => {
            let mut array = [0u8; 8];
            array.copy_from_slice(slice);
            u64::from_be_bytes(array)
        }
        None => 0,
    }
}

/// REQUEST SENSE (SPC-4 6.39). Sense is returned with each CHECK CONDITION (autosense),
/// so no sense is ever pending: the answer is NO SENSE, or the given condition for a LUN
/// that does not exist, in the format DESC asks for.
fn request_sense(cdb: &[u8], condition: Option<Check>) -> Vec<u8> {
    let descriptor_format = cdb.get(1).is_some_and(|b| b & 0x01 != 0);
    let allocation_length = usize::from(cdb.get(4).copied().unwrap_or(0));
    let check = condition.unwrap_or(Check::new(key::NO_SENSE, asc::NO_ADDITIONAL_SENSE));
    let data = if descriptor_format {
        vec![0x72, check.key, check.asc.0, check.asc.1, 0, 0, 0, 0]
    } else {
        check.to_fixed_sense()
    };
    truncate(data, allocation_length)
}

/// A logical unit on its own, as LUN 0, for REPORT LUNS.
struct SoleUnit(conglomerate::Role);

impl conglomerate::Inventory for SoleUnit {
    fn for_each_unit(&self, f: &mut dyn FnMut(u16, conglomerate::Role)) {
        f(0, self.0)
    }
    fn for_each_subsidiary(&self, _: Option<u16>, _: &mut dyn FnMut(u16, u32)) {}
}

/// The single-level units of a map: every key up to 16,383 (subsidiaries are not kept in
/// a `LunMap`).
impl conglomerate::Inventory for LunMap {
    fn for_each_unit(&self, f: &mut dyn FnMut(u16, conglomerate::Role)) {
        for (lun, unit) in self.units.range(..=datapath::scsi::lun::SIMPLE_MAX) {
            f(*lun as u16, unit.config.role)
        }
    }
    fn for_each_subsidiary(&self, _: Option<u16>, _: &mut dyn FnMut(u16, u32)) {}
}

/// REPORT SUPPORTED OPERATION CODES (SPC-4 6.35).
fn report_supported_operation_codes(cdb: &[u8], thin: bool) -> Result<Vec<u8>, Check> {
    let return_timeouts = cdb[2] & 0x80 != 0;
    let reporting_options = cdb[2] & 0x07;
    let requested_opcode = cdb[3];
    let requested_action = be16(cdb, 4);
    let allocation_length = be32(cdb, 6) as usize;
    let offered = || {
        opcodes::COMMANDS
            .iter()
            .filter(move |command| thin || !command.needs_thin)
    };
    // The command timeouts descriptor (SPC-4 6.35.4): no nominal or recommended timeout.
    let timeouts = [0u8, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let data = match reporting_options {
        0 => {
            let mut descriptors = Vec::new();
            for command in offered() {
                descriptors.push(command.opcode);
                descriptors.push(0);
                let action = u16::from(command.service_action.unwrap_or(0));
                descriptors.extend_from_slice(&action.to_be_bytes());
                descriptors.push(0);
                let mut flags = 0u8;
                if return_timeouts {
                    flags |= 0x02; // CTDP
                }
                if command.service_action.is_some() {
                    flags |= 0x01; // SERVACTV
                }
                descriptors.push(flags);
                descriptors.extend_from_slice(&(command.usage.len() as u16).to_be_bytes());
                if return_timeouts {
                    descriptors.extend_from_slice(&timeouts);
                }
            }
            let mut data = Vec::with_capacity(4 + descriptors.len());
            data.extend_from_slice(&(descriptors.len() as u32).to_be_bytes());
            data.extend_from_slice(&descriptors);
            data
        }
        1..=3 => {
            let with_actions = opcodes::has_service_actions(requested_opcode);
            // 001b: the opcode alone, an error for one with service actions. 010b: the
            // opcode and service action, an error for one without. 011b: either.
            let found = match (reporting_options, with_actions) {
                (1, true) => return Err(Check::invalid_cdb_field(3, None)),
                (2, false) => return Err(Check::invalid_cdb_field(3, None)),
                (_, true) => offered().find(|c| {
                    c.opcode == requested_opcode
                        && c.service_action.map(u16::from) == Some(requested_action)
                }),
                (_, false) => offered().find(|c| c.opcode == requested_opcode),
            };
            let mut data = vec![0u8; 4];
            if return_timeouts {
                data[1] |= 0x80; // CTDP
            }
            match found {
                Some(command) => {
                    data[1] |= 0x03; // SUPPORT: supported, as the standard describes
                    data[2..4].copy_from_slice(&(command.usage.len() as u16).to_be_bytes());
                    data.extend_from_slice(command.usage);
                }
                None => data[1] |= 0x01, // SUPPORT: not supported
            }
            if return_timeouts {
                data.extend_from_slice(&timeouts);
            }
            data
        }
        _ => return Err(Check::invalid_cdb_field(2, Some(2))),
    };
    Ok(truncate(data, allocation_length))
}

/// How many bytes of Data-Out a CDB asks the initiator for, so the session can solicit
/// them (R2T) and check the Expected Data Transfer Length. `Some(0)` for commands without
/// Data-Out; `None` for a CDB this device server does not recognise or one whose length
/// does not fit in 32 bits (the command itself will fail with the proper sense).
pub fn data_out_length(cdb: &[u8], block_size: u32) -> Option<u32> {
    let opcode = *cdb.first()?;
    let block_size = u64::from(block_size);
    let blocks = |count: u64| u32::try_from(count.checked_mul(block_size)?).ok();
    if cdb.len() < command_length(opcode)? {
        return None;
    }
    match opcode {
        op::WRITE_6 => blocks(match cdb[4] {
            0 => 256,
            n => u64::from(n),
        }),
        op::WRITE_10 | op::WRITE_AND_VERIFY_10 => blocks(u64::from(be16(cdb, 7))),
        op::WRITE_12 | op::WRITE_AND_VERIFY_12 => blocks(u64::from(be32(cdb, 6))),
        op::WRITE_16 | op::WRITE_AND_VERIFY_16 | op::ORWRITE_16 => blocks(u64::from(be32(cdb, 10))),
        op::VERIFY_10 | op::VERIFY_12 | op::VERIFY_16 => {
            let count = match opcode {
                op::VERIFY_10 => u64::from(be16(cdb, 7)),
                op::VERIFY_12 => u64::from(be32(cdb, 6)),
                _ => u64::from(be32(cdb, 10)),
            };
            match (cdb[1] >> 1) & 0x03 {
                0 => Some(0),
                1 => blocks(count),
                3 if count > 0 => blocks(1),
                _ => Some(0),
            }
        }
        op::COMPARE_AND_WRITE => blocks(2 * u64::from(cdb[13])),
        op::WRITE_SAME_10 => blocks(1),
        op::WRITE_SAME_16 if cdb[1] & 0x01 != 0 => Some(0), // NDOB
        op::WRITE_SAME_16 => blocks(1),
        op::UNMAP | op::MODE_SELECT_10 => Some(u32::from(be16(cdb, 7))),
        op::EXTENDED_COPY => Some(be32(cdb, 10)),
        op::WRITE_ATOMIC_16 => blocks(u64::from(be16(cdb, 12))),
        op::SANITIZE => Some(u32::from(be16(cdb, 7))),
        op::MODE_SELECT_6 => Some(u32::from(cdb[4])),
        _ => Some(0),
    }
}

/// CDB length of a command in the table, `None` for an unknown opcode.
fn command_length(opcode: u8) -> Option<usize> {
    opcodes::COMMANDS
        .iter()
        .find(|command| command.opcode == opcode)
        .map(|command| command.usage.len())
}

/// The logical units of one target, by LUN number.
#[derive(Debug, Default, Clone)]
pub struct LunMap {
    units: BTreeMap<u64, Arc<LogicalUnit>>,
}

impl LunMap {
    pub fn new() -> LunMap {
        LunMap::default()
    }

    pub fn insert(&mut self, lun: u64, lu: Arc<LogicalUnit>) {
        xcopy::register(&lu);
        self.units.insert(lun, lu);
    }

    pub fn get(&self, lun: u64) -> Option<&Arc<LogicalUnit>> {
        self.units.get(&lun)
    }

    pub fn luns(&self) -> impl Iterator<Item = u64> + '_ {
        self.units.keys().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// Runs a command addressed to `lun`. REPORT LUNS is answered here for any LUN (SPC-4
    /// 6.27: it is addressed to LUN 0 or the REPORT LUNS well-known LU, and it lists every
    /// LUN of the target). For a LUN that does not exist (SPC-4 6.6.2, the peripheral
    /// qualifier; SAM-5 incorrect logical unit selection): INQUIRY returns standard data with peripheral qualifier 011b and device
    /// type 1Fh, REQUEST SENSE returns LOGICAL UNIT NOT SUPPORTED as its parameter data,
    /// and every other command ends in CHECK CONDITION, ILLEGAL REQUEST, LOGICAL UNIT NOT
    /// SUPPORTED.
    /// [`LogicalUnit::plan`] for the unit `lun`, with [`LunMap::execute`]'s handling of
    /// REPORT LUNS and of missing units (both answered at once).
    pub fn plan(&self, lun: u64, task: &ScsiTask) -> Plan {
        match self.get(lun) {
            Some(lu) if task.cdb.first() != Some(&op::REPORT_LUNS) => lu.plan(task),
            _ => Plan::Done(self.execute(lun, task)),
        }
    }

    pub fn execute(&self, lun: u64, task: &ScsiTask) -> ScsiResult {
        let opcode = task.cdb.first().copied();
        if opcode == Some(op::REPORT_LUNS) {
            let command = opcodes::lookup(task.cdb, false)
                .and_then(|command| opcodes::check_reserved_bits(command, task.cdb));
            return ScsiResult::from_outcome(
                command.and_then(|()| conglomerate::report_luns(task.cdb, lun, self)),
            );
        }
        if let Some(lu) = self.get(lun) {
            return lu.execute(task);
        }
        let not_supported = Check::new(key::ILLEGAL_REQUEST, asc::LOGICAL_UNIT_NOT_SUPPORTED);
        let outcome = match opcode {
            Some(op::INQUIRY) => inquiry::missing_lun_inquiry(task.cdb).map_err(|check| {
                // Field errors in the CDB take precedence over the missing LUN.
                if check.asc == asc::INVALID_FIELD_IN_CDB {
                    check
                } else {
                    not_supported
                }
            }),
            Some(op::REQUEST_SENSE) if task.cdb.len() >= 6 => {
                Ok(request_sense(task.cdb, Some(not_supported)))
            }
            _ => Err(not_supported),
        };
        ScsiResult::from_outcome(outcome)
    }
}

/// Maps a backend I/O failure to sense data: MEDIUM ERROR with the read or write
/// condition. The cause is logged; the initiator learns the class of failure.
fn medium_error(error: std::io::Error, writing: bool) -> Check {
    tracing::warn!(%error, writing, "backend I/O failed");
    if error
        .get_ref()
        .is_some_and(|inner| inner.is::<crate::backend::SpaceExhausted>())
    {
        // A thin pool out of chunks (SBC-4 4.7.3.7): SPACE ALLOCATION FAILED WRITE PROTECT.
        return Check::new(key::DATA_PROTECT, (0x27, 0x07));
    }
    if writing {
        Check::new(key::MEDIUM_ERROR, asc::WRITE_ERROR)
    } else {
        Check::new(key::MEDIUM_ERROR, asc::UNRECOVERED_READ_ERROR)
    }
}

impl LogicalUnit {
    fn write_protected(&self) -> bool {
        self.config.read_only || self.software_write_protect.load(Ordering::Relaxed)
    }

    fn write_cache_enabled(&self) -> bool {
        self.write_cache.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
