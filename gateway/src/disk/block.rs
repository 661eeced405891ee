//! The block commands of SBC-3 clause 5: READ CAPACITY, READ, WRITE, WRITE AND VERIFY,
//! VERIFY, ORWRITE, COMPARE AND WRITE, WRITE SAME, UNMAP, GET LBA STATUS, PRE-FETCH and
//! SYNCHRONIZE CACHE.
//!
//! Order of checks, the same for every command: write protection (DATA PROTECT), command
//! fields, LBA range (LOGICAL BLOCK ADDRESS OUT OF RANGE), transfer length against the
//! Block Limits page, then the Data-Out length. Only then is the backend touched.

use super::opcodes::op;
use super::sense::{asc, key, Check};
use super::{be16, be32, be64, medium_error, truncate, IoKind, IoPlan, LogicalUnit, Plan};
use super::{gate, opcodes, ScsiResult, ScsiTask};
use super::{MAX_COMPARE_AND_WRITE_BLOCKS, MAX_UNMAP_BLOCKS, MAX_UNMAP_DESCRIPTORS};

/// WRITE SAME writes its pattern in pieces of at most this size.
const PATTERN_BUFFER_BYTES: usize = 1024 * 1024;
/// VERIFY with BYTCHK 11b reads the medium in pieces of at most this size.
const VERIFY_PIECE_BYTES: u64 = 1024 * 1024;
/// GET LBA STATUS returns at most this many descriptors.
const LBA_STATUS_DESCRIPTORS_MAX: usize = 64;

/// The LBA and transfer length fields of a CDB, and where the length lives (for the
/// sense-key specific field pointer).
#[derive(Debug, Clone, Copy)]
struct Extent {
    lba: u64,
    blocks: u64,
    length_byte: u16,
}

/// Decodes LBA and TRANSFER LENGTH for the 6, 10, 12 and 16-byte CDB layouts (SBC-3
/// 5.x). The caller has checked the CDB is long enough for its opcode.
fn extent(cdb: &[u8]) -> Extent {
    match cdb[0] {
        op::READ_6 | op::WRITE_6 => Extent {
            lba: u64::from(cdb[1] & 0x1f) << 16 | u64::from(be16(cdb, 2)),
            // READ(6)/WRITE(6): zero means 256 blocks.
            blocks: match cdb[4] {
                0 => 256,
                n => u64::from(n),
            },
            length_byte: 4,
        },
        op::READ_12 | op::WRITE_12 | op::WRITE_AND_VERIFY_12 | op::VERIFY_12 => Extent {
            lba: u64::from(be32(cdb, 2)),
            blocks: u64::from(be32(cdb, 6)),
            length_byte: 6,
        },
        op::READ_16
        | op::WRITE_16
        | op::ORWRITE_16
        | op::WRITE_AND_VERIFY_16
        | op::VERIFY_16
        | op::PRE_FETCH_16
        | op::SYNCHRONIZE_CACHE_16
        | op::WRITE_SAME_16 => Extent {
            lba: be64(cdb, 2),
            blocks: u64::from(be32(cdb, 10)),
            length_byte: 10,
        },
        op::COMPARE_AND_WRITE => Extent {
            lba: be64(cdb, 2),
            blocks: u64::from(cdb[13]),
            length_byte: 13,
        },
        // The 10-byte layouts: READ(10), WRITE(10), WRITE AND VERIFY(10), VERIFY(10),
        // PRE-FETCH(10), SYNCHRONIZE CACHE(10), WRITE SAME(10).
        _ => Extent {
            lba: u64::from(be32(cdb, 2)),
            blocks: u64::from(be16(cdb, 7)),
            length_byte: 7,
        },
    }
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

impl LogicalUnit {
    /// LOGICAL BLOCK ADDRESS OUT OF RANGE unless `lba..lba+blocks` lies on the medium.
    fn check_range(&self, extent: Extent) -> Result<(), Check> {
        match extent.lba.checked_add(extent.blocks) {
            Some(end) if end <= self.blocks() => Ok(()),
            _ => Err(Check::lba_out_of_range()),
        }
    }

    /// INVALID FIELD IN CDB for a transfer over MAXIMUM TRANSFER LENGTH (SBC-3 6.6.3).
    fn check_transfer(&self, extent: Extent) -> Result<(), Check> {
        if extent.blocks > u64::from(self.max_transfer_blocks()) {
            return Err(Check::invalid_cdb_field(extent.length_byte, None));
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<(), Check> {
        if self.write_protected() {
            return Err(Check::write_protected());
        }
        Ok(())
    }

    /// Byte offset and length of a checked extent (fits: the extent is within the medium
    /// and at most MAXIMUM TRANSFER LENGTH, or the caller bounds it otherwise).
    fn bytes_of(&self, lba: u64, blocks: u64) -> (u64, u64) {
        let block_size = u64::from(self.config.block_size);
        (lba * block_size, blocks * block_size)
    }

    fn read_blocks(&self, lba: u64, blocks: u64) -> Result<Vec<u8>, Check> {
        let (offset, len) = self.bytes_of(lba, blocks);
        let mut data = vec![0u8; len as usize];
        self.backend
            .read_at(offset, &mut data)
            .map_err(|error| medium_error(error, false))?;
        Ok(data)
    }

    fn write_blocks(&self, lba: u64, data: &[u8], force_unit_access: bool) -> Result<(), Check> {
        let (offset, _) = self.bytes_of(lba, 0);
        self.backend
            .write_at(offset, data)
            .map_err(|error| medium_error(error, true))?;
        // FUA, or no write cache: the data must be on the medium before GOOD.
        if force_unit_access || !self.write_cache_enabled() {
            self.backend
                .flush()
                .map_err(|error| medium_error(error, true))?;
        }
        Ok(())
    }

    /// The Data-Out for a transfer of `blocks`: at least that many bytes must have come
    /// (a longer Data-Out is an iSCSI overflow the session reports; the rest is ignored).
    fn data_for<'d>(&self, extent: Extent, data_out: &'d [u8]) -> Result<&'d [u8], Check> {
        let (_, len) = self.bytes_of(0, extent.blocks);
        data_out
            .get(..len as usize)
            .ok_or(Check::invalid_cdb_field(extent.length_byte, None))
    }

    /// READ CAPACITY(10) (SBC-3 5.15): the last LBA, or FFFFFFFFh when it does not fit.
    pub(super) fn read_capacity_10(&self, cdb: &[u8]) -> Result<Vec<u8>, Check> {
        let partial_medium_indicator = cdb[8] & 0x01 != 0;
        if !partial_medium_indicator && be32(cdb, 2) != 0 {
            return Err(Check::invalid_cdb_field(2, None));
        }
        let last_lba = u32::try_from(self.blocks().saturating_sub(1)).unwrap_or(u32::MAX);
        let mut data = Vec::with_capacity(8);
        data.extend_from_slice(&last_lba.to_be_bytes());
        data.extend_from_slice(&self.config.block_size.to_be_bytes());
        Ok(data)
    }

    /// READ CAPACITY(16) (SBC-3 5.16): with LBPME and LBPRZ for a thin backend; no
    /// protection information; one logical block per physical block.
    pub(super) fn read_capacity_16(&self, cdb: &[u8]) -> Result<Vec<u8>, Check> {
        let allocation_length = be32(cdb, 10) as usize;
        let mut data = vec![0u8; 32];
        data[..8].copy_from_slice(&self.blocks().saturating_sub(1).to_be_bytes());
        data[8..12].copy_from_slice(&self.config.block_size.to_be_bytes());
        if self.thin() {
            data[14] = 0x80 | 0x40; // LBPME, LBPRZ
        }
        Ok(truncate(data, allocation_length))
    }

    pub(super) fn read(&self, cdb: &[u8]) -> Result<Vec<u8>, Check> {
        let extent = extent(cdb);
        self.check_range(extent)?;
        self.check_transfer(extent)?;
        self.read_blocks(extent.lba, extent.blocks)
    }

    pub(super) fn write(&self, cdb: &[u8], data_out: &[u8]) -> Result<Vec<u8>, Check> {
        self.write_gated(cdb, data_out, true)
    }

    /// WRITE; `take_gate` false when the caller holds the write gate exclusively (WRITE
    /// ATOMIC).
    pub(super) fn write_gated(
        &self,
        cdb: &[u8],
        data_out: &[u8],
        take_gate: bool,
    ) -> Result<Vec<u8>, Check> {
        self.check_writable()?;
        let extent = extent(cdb);
        self.check_range(extent)?;
        self.check_transfer(extent)?;
        let data = self.data_for(extent, data_out)?;
        let force_unit_access = cdb[0] != op::WRITE_6 && cdb[1] & 0x08 != 0;
        let _gate = take_gate.then(|| self.write_gate.shared());
        self.write_blocks(extent.lba, data, force_unit_access)?;
        Ok(Vec::new())
    }

    /// The first half of READ, WRITE and SYNCHRONIZE CACHE for a backend the server drives
    /// through its own ring: every check [`LogicalUnit::execute`] makes, in the same order,
    /// then the I/O to issue instead of doing it. Any other command runs here and now.
    pub fn plan(&self, task: &ScsiTask) -> Plan {
        let cdb = task.cdb;
        if let Some(check) = self.sanitizing.refuses(cdb) {
            return Plan::Done(ScsiResult::check_condition(&check));
        }
        // A queue that calls back (`iscsi:`) takes planned I/O as a ring file does.
        let ring_capable = self.backend.ring_file().is_some() || self.backend.queued_io().is_some();
        let opcode = cdb.first().copied();
        let plannable = matches!(
            opcode,
            Some(
                op::READ_6
                    | op::READ_10
                    | op::READ_12
                    | op::READ_16
                    | op::WRITE_6
                    | op::WRITE_10
                    | op::WRITE_12
                    | op::WRITE_16
                    | op::SYNCHRONIZE_CACHE_10
                    | op::SYNCHRONIZE_CACHE_16
            )
        );
        if self.write_waits_for_a_record(cdb) {
            return Plan::Blocking;
        }
        if !ring_capable {
            // A flush that waits on storage (a pool's fsyncs) must not stall an event loop,
            // nor may a copy or a sanitize that moves the whole medium.
            let flush = matches!(
                opcode,
                Some(op::SYNCHRONIZE_CACHE_10 | op::SYNCHRONIZE_CACHE_16)
            );
            // A write that must be durable before GOOD (FUA, or the write cache off) flushes.
            let fua = matches!(
                opcode,
                Some(op::WRITE_10 | op::WRITE_12 | op::WRITE_16 | op::WRITE_ATOMIC_16)
            ) && cdb.get(1).is_some_and(|flags| flags & 0x08 != 0);
            let write = matches!(
                opcode,
                Some(
                    op::WRITE_6 | op::WRITE_10 | op::WRITE_12 | op::WRITE_16 | op::WRITE_ATOMIC_16
                )
            );
            let durable_write = fua || (write && !self.write_cache_enabled());
            if ((flush || durable_write) && self.backend.flush_may_block())
                || matches!(opcode, Some(op::EXTENDED_COPY | op::SANITIZE))
                || (self.backend.io_may_block() && !answers_without_the_medium(cdb))
            {
                return Plan::Blocking;
            }
            return Plan::Done(self.execute(task));
        }
        if !plannable {
            // A ring-capable backend is a file, whose synchronous calls can block for as
            // long as its file system or device likes (a hung FUSE daemon, a suspended
            // device): only commands that never touch it run here.
            return if answers_without_the_medium(cdb) {
                Plan::Done(self.execute(task))
            } else {
                Plan::Blocking
            };
        }
        match self.plan_io(task) {
            Ok(plan) => Plan::Io(plan),
            Err(check) => Plan::Done(ScsiResult::check_condition(&check)),
        }
    }

    /// Whether the command may change the medium where the backend must first record the
    /// change durably (a change tracker's first write into a region: an fsync), which no
    /// event loop waits for. READ and WRITE ask about their extent; any other command
    /// that touches the medium about the whole of it.
    fn write_waits_for_a_record(&self, cdb: &[u8]) -> bool {
        let cdb_len = match cdb.first().copied() {
            Some(
                op::READ_6
                | op::READ_10
                | op::READ_12
                | op::READ_16
                | op::SYNCHRONIZE_CACHE_10
                | op::SYNCHRONIZE_CACHE_16,
            ) => return false,
            Some(op::WRITE_6) => 6,
            Some(op::WRITE_10) => 10,
            Some(op::WRITE_12) => 12,
            Some(op::WRITE_16) => 16,
            _ if answers_without_the_medium(cdb) => return false,
            _ => 0,
        };
        let size = self.backend.size_bytes();
        if cdb_len == 0 || cdb.len() < cdb_len {
            return self.backend.write_needs_record(0, size);
        }
        let extent = extent(cdb);
        let block_size = u64::from(self.config.block_size);
        let offset = extent.lba.saturating_mul(block_size);
        let len = extent.blocks.saturating_mul(block_size);
        self.backend.write_needs_record(offset, len.min(size))
    }

    fn plan_io(&self, task: &ScsiTask) -> Result<IoPlan, Check> {
        let cdb = task.cdb;
        let command = opcodes::lookup(cdb, self.thin())?;
        opcodes::check_reserved_bits(command, cdb)?;
        match command.opcode {
            op::READ_6 | op::READ_10 | op::READ_12 | op::READ_16 => {
                let extent = extent(cdb);
                self.check_range(extent)?;
                self.check_transfer(extent)?;
                let (offset, len) = self.bytes_of(extent.lba, extent.blocks);
                Ok(IoPlan {
                    kind: IoKind::Read,
                    offset,
                    len,
                    flush_after: false,
                    _ticket: None,
                })
            }
            op::SYNCHRONIZE_CACHE_10 | op::SYNCHRONIZE_CACHE_16 => {
                self.check_range(extent(cdb))?;
                Ok(IoPlan {
                    kind: IoKind::Flush,
                    offset: 0,
                    len: 0,
                    flush_after: false,
                    _ticket: None,
                })
            }
            _ => {
                self.check_writable()?;
                let extent = extent(cdb);
                self.check_range(extent)?;
                self.check_transfer(extent)?;
                let data = self.data_for(extent, task.data_out)?;
                let force_unit_access = cdb[0] != op::WRITE_6 && cdb[1] & 0x08 != 0;
                let (offset, _) = self.bytes_of(extent.lba, 0);
                // Taken under the shared gate, so COMPARE AND WRITE (exclusive) either
                // sees this write in flight or runs wholly before it starts.
                let ticket = {
                    let entered = self.write_gate.shared();
                    gate::RingTicket::new(&self.write_gate, &entered)
                };
                self.backend.before_ring_write(offset, data.len() as u64);
                Ok(IoPlan {
                    kind: IoKind::Write,
                    offset,
                    len: data.len() as u64,
                    flush_after: force_unit_access || !self.write_cache_enabled(),
                    _ticket: Some(ticket),
                })
            }
        }
    }

    /// The second half: the outcome of a planned I/O as the command's result. `Ok` holds
    /// the bytes read (empty for writes and flushes); an error is a MEDIUM ERROR, UNRECOVERED
    /// READ ERROR for a read and WRITE ERROR otherwise.
    pub fn finish(&self, plan: IoPlan, outcome: std::io::Result<Vec<u8>>) -> ScsiResult {
        match outcome {
            Ok(data) if plan.kind == IoKind::Read => ScsiResult::good(data),
            Ok(_) => ScsiResult::good(Vec::new()),
            Err(error) => {
                ScsiResult::check_condition(&medium_error(error, plan.kind != IoKind::Read))
            }
        }
    }

    /// WRITE AND VERIFY (SBC-3 5.37): the medium holds exactly what was written, so the
    /// verification (BYTCHK 0 or 1) always succeeds once the write is durable.
    pub(super) fn write_and_verify(&self, cdb: &[u8], data_out: &[u8]) -> Result<Vec<u8>, Check> {
        self.check_writable()?;
        if (cdb[1] >> 1) & 0x03 > 1 {
            return Err(Check::invalid_cdb_field(1, Some(2)));
        }
        let extent = extent(cdb);
        self.check_range(extent)?;
        self.check_transfer(extent)?;
        let data = self.data_for(extent, data_out)?;
        let _gate = self.write_gate.shared();
        self.write_blocks(extent.lba, data, true)?;
        Ok(Vec::new())
    }

    /// VERIFY (SBC-3 5.33, SBC-4 BYTCHK): 00b checks only the range; 01b compares the
    /// Data-Out with the medium; 11b compares one Data-Out block with every block.
    pub(super) fn verify(&self, cdb: &[u8], data_out: &[u8]) -> Result<Vec<u8>, Check> {
        let byte_check = (cdb[1] >> 1) & 0x03;
        if byte_check == 2 {
            return Err(Check::invalid_cdb_field(1, Some(2)));
        }
        let extent = extent(cdb);
        self.check_range(extent)?;
        if byte_check == 0 || extent.blocks == 0 {
            return Ok(Vec::new());
        }
        self.check_transfer(extent)?;
        if byte_check == 1 {
            let expected = self.data_for(extent, data_out)?;
            let medium = self.read_blocks(extent.lba, extent.blocks)?;
            if let Some(offset) = first_difference(expected, &medium) {
                return Err(Check::miscompare(offset as u32));
            }
            return Ok(Vec::new());
        }
        let one_block = Extent {
            blocks: 1,
            ..extent
        };
        let pattern = self.data_for(one_block, data_out)?;
        let blocks_per_piece = (VERIFY_PIECE_BYTES / u64::from(self.config.block_size)).max(1);
        let mut done = 0u64;
        while done < extent.blocks {
            let count = blocks_per_piece.min(extent.blocks - done);
            let medium = self.read_blocks(extent.lba + done, count)?;
            for (index, block) in medium.chunks(pattern.len()).enumerate() {
                if let Some(offset) = first_difference(pattern, block) {
                    let before = (done + index as u64) * pattern.len() as u64;
                    return Err(Check::miscompare((before + offset as u64) as u32));
                }
            }
            done += count;
        }
        Ok(Vec::new())
    }

    /// PRE-FETCH (SBC-3 5.10, 5.11): nothing to stage, only the range is checked.
    pub(super) fn pre_fetch(&self, cdb: &[u8]) -> Result<Vec<u8>, Check> {
        self.check_range(extent(cdb))?;
        Ok(Vec::new())
    }

    /// SYNCHRONIZE CACHE (SBC-3 5.22, 5.23): checks the range, then flushes everything.
    pub(super) fn synchronize_cache(&self, cdb: &[u8]) -> Result<Vec<u8>, Check> {
        self.check_range(extent(cdb))?;
        self.backend
            .flush()
            .map_err(|error| medium_error(error, true))?;
        Ok(Vec::new())
    }

    /// WRITE SAME(10)/(16) (SBC-3 5.41, 5.42). With UNMAP the range is deallocated (it
    /// then reads as zeros, LBPRZ); otherwise the one Data-Out block (zeros with NDOB) is
    /// written to every block. Zero blocks is refused (WSNZ = 1).
    pub(super) fn write_same(&self, cdb: &[u8], data_out: &[u8]) -> Result<Vec<u8>, Check> {
        self.check_writable()?;
        let unmap = cdb[1] & 0x08 != 0;
        let no_data_out = cdb[0] == op::WRITE_SAME_16 && cdb[1] & 0x01 != 0;
        let extent = extent(cdb);
        self.check_range(extent)?;
        if extent.blocks == 0 || extent.blocks > self.max_write_same_blocks() {
            return Err(Check::invalid_cdb_field(extent.length_byte, None));
        }
        if unmap && !self.thin() {
            return Err(Check::invalid_cdb_field(1, Some(3)));
        }
        let block_size = self.config.block_size as usize;
        let pattern: Vec<u8> = if no_data_out {
            vec![0u8; block_size]
        } else if data_out.len() == block_size {
            data_out.to_vec()
        } else {
            // Exactly one block must come: more or less is a malformed command.
            return Err(Check::invalid_cdb_field(extent.length_byte, None));
        };
        let _gate = self.write_gate.shared();
        if unmap {
            let (offset, len) = self.bytes_of(extent.lba, extent.blocks);
            self.backend
                .unmap(offset, len)
                .map_err(|error| medium_error(error, true))?;
            return Ok(Vec::new());
        }
        let blocks_per_piece = (PATTERN_BUFFER_BYTES / block_size).max(1) as u64;
        let piece_blocks = blocks_per_piece.min(extent.blocks);
        let buffer = pattern.repeat(piece_blocks as usize);
        let mut done = 0u64;
        while done < extent.blocks {
            let count = piece_blocks.min(extent.blocks - done);
            let bytes = &buffer[..count as usize * block_size];
            self.write_blocks(extent.lba + done, bytes, false)?;
            done += count;
        }
        if !self.write_cache_enabled() {
            self.backend
                .flush()
                .map_err(|error| medium_error(error, true))?;
        }
        Ok(Vec::new())
    }

    /// UNMAP (SBC-3 5.28): every block descriptor is checked before any is applied.
    pub(super) fn unmap(&self, cdb: &[u8], data_out: &[u8]) -> Result<Vec<u8>, Check> {
        self.check_writable()?;
        let list_length = usize::from(be16(cdb, 7));
        if list_length == 0 {
            return Ok(Vec::new());
        }
        let length_error = || Check::new(key::ILLEGAL_REQUEST, asc::PARAMETER_LIST_LENGTH_ERROR);
        if list_length < 8 {
            return Err(length_error());
        }
        let list = data_out.get(..list_length).ok_or_else(length_error)?;
        let descriptor_bytes = usize::from(be16(list, 2)).min(list.len() - 8);
        // A partial trailing descriptor is ignored (SBC-3 5.28.2).
        let count = descriptor_bytes / 16;
        if count > MAX_UNMAP_DESCRIPTORS as usize {
            return Err(Check::invalid_parameter(2));
        }
        let descriptors = || {
            list[8..8 + count * 16]
                .chunks_exact(16)
                .map(|d| (be64(d, 0), u64::from(be32(d, 8))))
        };
        let mut total = 0u64;
        for (index, (lba, blocks)) in descriptors().enumerate() {
            self.check_range(Extent {
                lba,
                blocks,
                length_byte: 0,
            })?;
            total += blocks;
            if total > u64::from(MAX_UNMAP_BLOCKS) {
                return Err(Check::invalid_parameter((8 + index * 16 + 8) as u16));
            }
        }
        let _gate = self.write_gate.shared();
        for (lba, blocks) in descriptors() {
            let (offset, len) = self.bytes_of(lba, blocks);
            self.backend
                .unmap(offset, len)
                .map_err(|error| medium_error(error, true))?;
        }
        Ok(Vec::new())
    }

    /// COMPARE AND WRITE (SBC-3 5.2): compares the first half of the Data-Out with the
    /// medium and, when equal, writes the second half, all while holding the write gate
    /// exclusively, so no other write can come between the compare and the write. On a
    /// difference: MISCOMPARE with the offset of the first differing byte.
    pub(super) fn compare_and_write(&self, cdb: &[u8], data_out: &[u8]) -> Result<Vec<u8>, Check> {
        self.check_writable()?;
        let extent = extent(cdb);
        self.check_range(extent)?;
        if extent.blocks == 0 {
            // Nothing to compare or write; Data-Out sent anyway means the initiator meant
            // a count the one-byte field cannot hold (256 wraps to 0).
            if data_out.is_empty() {
                return Ok(Vec::new());
            }
            return Err(Check::invalid_cdb_field(13, None));
        }
        if extent.blocks > u64::from(MAX_COMPARE_AND_WRITE_BLOCKS) {
            return Err(Check::invalid_cdb_field(13, None));
        }
        let (_, half) = self.bytes_of(0, extent.blocks);
        if data_out.len() as u64 != 2 * half {
            return Err(Check::invalid_cdb_field(13, None));
        }
        let (compare, write) = data_out.split_at(half as usize);
        let force_unit_access = cdb[1] & 0x08 != 0;
        // The caller ([`LogicalUnit::execute`]) holds the write gate exclusively.
        let medium = self.read_blocks(extent.lba, extent.blocks)?;
        if let Some(offset) = first_difference(compare, &medium) {
            return Err(Check::miscompare(offset as u32));
        }
        self.write_blocks(extent.lba, write, force_unit_access)?;
        Ok(Vec::new())
    }

    /// ORWRITE(16) (SBC-3 5.9, without the multi-command form): ORs the Data-Out into the
    /// medium, atomically against every other write.
    pub(super) fn orwrite(&self, cdb: &[u8], data_out: &[u8]) -> Result<Vec<u8>, Check> {
        self.check_writable()?;
        let extent = extent(cdb);
        self.check_range(extent)?;
        self.check_transfer(extent)?;
        let data = self.data_for(extent, data_out)?;
        let force_unit_access = cdb[1] & 0x08 != 0;
        // The caller ([`LogicalUnit::execute`]) holds the write gate exclusively.
        let mut medium = self.read_blocks(extent.lba, extent.blocks)?;
        for (byte, with) in medium.iter_mut().zip(data) {
            *byte |= with;
        }
        self.write_blocks(extent.lba, &medium, force_unit_access)?;
        Ok(Vec::new())
    }

    /// GET LBA STATUS (SBC-3 5.7): descriptors of mapped and deallocated extents from
    /// the starting LBA, as many as the allocation length holds (at most 64).
    pub(super) fn get_lba_status(&self, cdb: &[u8]) -> Result<Vec<u8>, Check> {
        let start = be64(cdb, 2);
        let allocation_length = be32(cdb, 10) as usize;
        if start >= self.blocks() {
            return Err(Check::lba_out_of_range());
        }
        let wanted =
            (allocation_length.saturating_sub(8) / 16).clamp(1, LBA_STATUS_DESCRIPTORS_MAX);
        let block_size = u64::from(self.config.block_size);
        let mut descriptors = Vec::with_capacity(wanted * 16);
        let mut lba = start;
        while descriptors.len() < wanted * 16 && lba < self.blocks() {
            let remaining = (self.blocks() - lba).min(u64::from(u32::MAX));
            let (mapped, run_bytes) = self
                .backend
                .mapped_extent(lba * block_size, remaining * block_size)
                .map_err(|error| medium_error(error, false))?;
            let run = (run_bytes / block_size).clamp(1, remaining);
            descriptors.extend_from_slice(&lba.to_be_bytes());
            descriptors.extend_from_slice(&(run as u32).to_be_bytes());
            // PROVISIONING STATUS: 0 mapped, 1 deallocated.
            descriptors.push(if mapped { 0 } else { 1 });
            descriptors.extend_from_slice(&[0u8; 3]);
            lba += run;
        }
        let mut data = Vec::with_capacity(8 + descriptors.len());
        data.extend_from_slice(&((4 + descriptors.len()) as u32).to_be_bytes());
        data.extend_from_slice(&[0u8; 4]);
        data.extend_from_slice(&descriptors);
        Ok(truncate(data, allocation_length))
    }
}

/// Commands answered from the logical unit's own state (identity, capacity, mode pages,
/// sense), never from its backend's medium.
fn answers_without_the_medium(cdb: &[u8]) -> bool {
    use super::opcodes::service_action::READ_CAPACITY_16;
    match cdb.first().copied() {
        Some(
            op::TEST_UNIT_READY
            | op::REQUEST_SENSE
            | op::INQUIRY
            | op::MODE_SELECT_6
            | op::MODE_SENSE_6
            | op::MODE_SELECT_10
            | op::MODE_SENSE_10
            | op::START_STOP_UNIT
            | op::PREVENT_ALLOW_MEDIUM_REMOVAL
            | op::READ_CAPACITY_10
            | op::REPORT_LUNS
            | op::MAINTENANCE_IN,
        ) => true,
        Some(op::SERVICE_ACTION_IN_16) => {
            cdb.get(1).is_some_and(|sa| sa & 0x1f == READ_CAPACITY_16)
        }
        _ => false,
    }
}
