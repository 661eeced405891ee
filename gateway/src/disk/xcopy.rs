//! Copy offload: EXTENDED COPY (LID1, SPC-4 6.4) with identification descriptor target
//! descriptors (0xE4, NAA designators) and block device to block device segment descriptors
//! (0x02); RECEIVE COPY RESULTS (SPC-4 6.18) with COPY STATUS, OPERATING PARAMETERS and
//! FAILED SEGMENT DETAILS; the Third-party Copy VPD page (0x8F, SPC-4 7.8.17).
//!
//! The copy manager reaches every logical unit of this gateway by its NAA designator
//! ([`register`]), so a copy may go between LUNs and targets. Between two volumes of one
//! pool, whole chunks are remapped (reference counts, no data moves); everything else is
//! read and written inside the gateway, never through the host.
//!
//! Results are kept per logical unit for the last [`HELD_RESULTS`] copies (by I_T nexus
//! and list identifier, as SPC-4 6.18.1 scopes a list identifier) that asked for them (LIST ID USAGE 00b or 01b). Copies run to completion within the command,
//! so COPY STATUS always reports a finished operation.
#![forbid(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::sense::{asc, key, Check};
use super::{be16, be32, be64, truncate, LogicalUnit, Nexus, NexusKey, ScsiTask};
use crate::backend::pool::format::CHUNK_BYTES;

pub const EXTENDED_COPY: u8 = 0x83;
pub const RECEIVE_COPY_RESULTS: u8 = 0x84;
/// RECEIVE COPY RESULTS service actions.
pub const COPY_STATUS: u8 = 0x00;
pub const OPERATING_PARAMETERS: u8 = 0x03;
pub const FAILED_SEGMENT_DETAILS: u8 = 0x04;
pub const THIRD_PARTY_COPY_PAGE: u8 = 0x8f;

const COPY_ABORTED: u8 = 0x0a;
const HEADER_BYTES: usize = 16;
const TARGET_DESCRIPTOR_BYTES: usize = 32;
const IDENTIFICATION_DESCRIPTOR: u8 = 0xe4;
const BLOCK_TO_BLOCK: u8 = 0x02;
/// Limits reported in OPERATING PARAMETERS.
const MAX_TARGET_DESCRIPTORS: u16 = 8;
const MAX_SEGMENT_DESCRIPTORS: u16 = 64;
const MAX_DESCRIPTOR_LIST_BYTES: u32 = 4096;
/// Largest segment: the 16-bit block count of a block-to-block descriptor.
const MAX_SEGMENT_BYTES: u32 = 0xffff * 512;
const MAX_CONCURRENT_COPIES: u8 = 16;
/// Results held per logical unit.
pub const HELD_RESULTS: usize = 16;
/// Bytes copied per read and write when a copy is not a remap.
const COPY_PIECE_BYTES: usize = 1 << 20;

/// Logical units by NAA designator, for target descriptors.
#[derive(Default)]
struct Registry {
    units: HashMap<[u8; 8], Weak<LogicalUnit>>,
    /// Entries left by the last sweep of units gone.
    kept: usize,
}

fn registry() -> &'static Mutex<Registry> {
    static UNITS: OnceLock<Mutex<Registry>> = OnceLock::new();
    UNITS.get_or_init(|| Mutex::new(Registry::default()))
}

/// Makes `lu` reachable as a copy source or destination. Units gone are swept once the
/// table doubled since the last sweep: a sweep per call made every LUN attached through
/// the control plane cost a walk over every unit (thousands).
pub fn register(lu: &Arc<LogicalUnit>) {
    let mut registry = registry().lock().unwrap_or_else(|p| p.into_inner());
    if registry.units.len() > 2 * registry.kept + 64 {
        registry.units.retain(|_, unit| unit.strong_count() > 0);
        registry.kept = registry.units.len();
    }
    registry.units.insert(lu.config.naa_id, Arc::downgrade(lu));
}

fn find(naa: &[u8]) -> Option<Arc<LogicalUnit>> {
    let registry = registry().lock().unwrap_or_else(|p| p.into_inner());
    registry.units.get(naa).and_then(Weak::upgrade)
}

/// One finished copy's results.
#[derive(Debug, Clone)]
struct CopyRecord {
    /// Results are held per I_T nexus and list id (SPC-4 6.18.1): another initiator's
    /// copy with the same list id is another copy.
    nexus: NexusKey,
    list_id: u8,
    /// COPY MANAGER STATUS: 0 done, 1 failed (SPC-4 table 352).
    failed: bool,
    segments_processed: u16,
    /// Blocks moved (TRANSFER COUNT UNITS 0: bytes would overflow for large copies).
    transferred_blocks: u32,
    sense: Vec<u8>,
}

/// The held results of one logical unit.
#[derive(Debug, Default)]
pub struct CopyResults {
    held: Mutex<VecDeque<CopyRecord>>,
}

impl CopyResults {
    fn hold(&self, record: CopyRecord) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.retain(|r| (r.list_id, &r.nexus) != (record.list_id, &record.nexus));
        if held.len() == HELD_RESULTS {
            held.pop_front();
        }
        held.push_back(record);
    }

    fn get(&self, nexus: Nexus, list_id: u8) -> Option<CopyRecord> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.iter()
            .find(|r| r.list_id == list_id && r.nexus.as_nexus() == nexus)
            .cloned()
    }
}

fn too_many_targets() -> Check {
    Check::new(key::ILLEGAL_REQUEST, (0x26, 0x06))
}
fn too_many_segments() -> Check {
    Check::new(key::ILLEGAL_REQUEST, (0x26, 0x08))
}
fn unsupported_target_type() -> Check {
    Check::new(key::ILLEGAL_REQUEST, (0x26, 0x07))
}
fn unsupported_segment_type() -> Check {
    Check::new(key::ILLEGAL_REQUEST, (0x26, 0x09))
}
fn list_length_error() -> Check {
    Check::new(key::ILLEGAL_REQUEST, asc::PARAMETER_LIST_LENGTH_ERROR)
}
/// COPY ABORTED, COPY TARGET DEVICE NOT REACHABLE.
fn unreachable() -> Check {
    Check::new(COPY_ABORTED, (0x0d, 0x02))
}
fn aborted() -> Check {
    Check::new(COPY_ABORTED, asc::NO_ADDITIONAL_SENSE)
}

/// One block-to-block segment.
#[derive(Debug, Clone, Copy)]
struct Segment {
    source: usize,
    dest: usize,
    blocks: u64,
    source_lba: u64,
    dest_lba: u64,
}

/// A parsed parameter list.
struct CopyList {
    list_id: u8,
    hold: bool,
    targets: Vec<Option<Arc<LogicalUnit>>>,
    segments: Vec<Segment>,
}

fn parse(data: &[u8]) -> Result<CopyList, Check> {
    if data.len() < HEADER_BYTES {
        return Err(list_length_error());
    }
    let list_id = data[0];
    let list_id_usage = (data[1] >> 3) & 0x03;
    let target_bytes = usize::from(be16(data, 2));
    let segment_bytes = be32(data, 8) as usize;
    let inline_bytes = be32(data, 12) as usize;
    if target_bytes.saturating_add(segment_bytes) > MAX_DESCRIPTOR_LIST_BYTES as usize {
        return Err(list_length_error());
    }
    if HEADER_BYTES + target_bytes + segment_bytes + inline_bytes > data.len() {
        return Err(list_length_error());
    }
    if inline_bytes != 0 {
        return Err(Check::invalid_parameter(12));
    }
    if !target_bytes.is_multiple_of(TARGET_DESCRIPTOR_BYTES) {
        return Err(list_length_error());
    }
    if target_bytes / TARGET_DESCRIPTOR_BYTES > usize::from(MAX_TARGET_DESCRIPTORS) {
        return Err(too_many_targets());
    }
    let mut targets = Vec::new();
    for (i, descriptor) in data[HEADER_BYTES..HEADER_BYTES + target_bytes]
        .chunks_exact(TARGET_DESCRIPTOR_BYTES)
        .enumerate()
    {
        let at = (HEADER_BYTES + i * TARGET_DESCRIPTOR_BYTES) as u16;
        if descriptor[0] != IDENTIFICATION_DESCRIPTOR {
            return Err(unsupported_target_type());
        }
        // Byte 1: LU ID TYPE is ignored (SPC-4), NUL obsolete; only block devices.
        if descriptor[1] & 0x1f != 0 {
            return Err(Check::invalid_parameter(at + 1));
        }
        let (association, designator_type) = ((descriptor[5] >> 4) & 0x03, descriptor[5] & 0x0f);
        let length = usize::from(descriptor[7]);
        // Only NAA designators of the logical unit name a copy target here.
        let unit = (association == 0 && designator_type == 3 && length == 8)
            .then(|| find(&descriptor[8..16]))
            .flatten();
        if let Some(unit) = &unit {
            let block_size =
                u32::from_be_bytes([0, descriptor[29], descriptor[30], descriptor[31]]);
            if block_size != unit.block_size() {
                return Err(Check::invalid_parameter(at + 29));
            }
        }
        targets.push(unit);
    }
    let mut segments = Vec::new();
    let list = &data[HEADER_BYTES + target_bytes..HEADER_BYTES + target_bytes + segment_bytes];
    let mut at = 0usize;
    while at < list.len() {
        if segments.len() == usize::from(MAX_SEGMENT_DESCRIPTORS) {
            return Err(too_many_segments());
        }
        let Some(header) = list.get(at..at + 4) else {
            return Err(list_length_error());
        };
        if header[0] != BLOCK_TO_BLOCK {
            return Err(unsupported_segment_type());
        }
        let length = usize::from(be16(header, 2));
        let Some(descriptor) = list.get(at..at + 4 + length) else {
            return Err(list_length_error());
        };
        if length != 0x18 {
            return Err(Check::invalid_parameter(
                (HEADER_BYTES + target_bytes + at + 2) as u16,
            ));
        }
        segments.push(Segment {
            source: usize::from(be16(descriptor, 4)),
            dest: usize::from(be16(descriptor, 6)),
            blocks: u64::from(be16(descriptor, 10)),
            source_lba: be64(descriptor, 12),
            dest_lba: be64(descriptor, 20),
        });
        at += 4 + length;
    }
    Ok(CopyList {
        list_id,
        hold: list_id_usage <= 1,
        targets,
        segments,
    })
}

impl LogicalUnit {
    /// EXTENDED COPY (LID1).
    pub(super) fn extended_copy(&self, task: &ScsiTask) -> Result<Vec<u8>, Check> {
        let length = be32(task.cdb, 10) as usize;
        if length == 0 {
            return Ok(Vec::new());
        }
        let data = task.data_out.get(..length).unwrap_or(task.data_out);
        let list = parse(data)?;
        let mut record = CopyRecord {
            nexus: task.nexus.to_key(),
            list_id: list.list_id,
            failed: false,
            segments_processed: 0,
            transferred_blocks: 0,
            sense: Vec::new(),
        };
        let mut outcome = Ok(Vec::new());
        for segment in &list.segments {
            match copy_segment(&list, segment) {
                Ok(()) => {
                    record.segments_processed += 1;
                    record.transferred_blocks = record
                        .transferred_blocks
                        .saturating_add(segment.blocks as u32);
                }
                Err(check) => {
                    record.failed = true;
                    record.sense = check.to_fixed_sense();
                    outcome = Err(check);
                    break;
                }
            }
        }
        if list.hold {
            self.copies.hold(record);
        }
        outcome
    }

    /// RECEIVE COPY RESULTS.
    pub(super) fn receive_copy_results(&self, task: &ScsiTask) -> Result<Vec<u8>, Check> {
        let cdb = task.cdb;
        let list_id = cdb[2];
        let allocation_length = be32(cdb, 10) as usize;
        let data = match cdb[1] & 0x1f {
            OPERATING_PARAMETERS => operating_parameters(),
            COPY_STATUS => {
                let record = self
                    .copies
                    .get(task.nexus, list_id)
                    .ok_or_else(|| Check::invalid_cdb_field(2, None))?;
                let mut data = vec![0u8; 12];
                data[0..4].copy_from_slice(&8u32.to_be_bytes());
                data[4] = u8::from(record.failed); // HDD 0, status 0 done / 1 failed
                data[5..7].copy_from_slice(&record.segments_processed.to_be_bytes());
                data[7] = 0x01; // TRANSFER COUNT UNITS: kibibytes
                let kib =
                    (u64::from(record.transferred_blocks) * u64::from(self.block_size())) >> 10;
                data[8..12].copy_from_slice(&(kib.min(u64::from(u32::MAX)) as u32).to_be_bytes());
                data
            }
            FAILED_SEGMENT_DETAILS => {
                let record = self
                    .copies
                    .get(task.nexus, list_id)
                    .ok_or_else(|| Check::invalid_cdb_field(2, None))?;
                let mut data = vec![0u8; 60];
                // EXTENDED COPY COMPLETION STATUS: the SCSI status it ended with.
                data[56] = if record.failed { 0x02 } else { 0x00 };
                data[58..60].copy_from_slice(&(record.sense.len() as u16).to_be_bytes());
                data.extend_from_slice(&record.sense);
                let available = (data.len() - 4) as u32;
                data[0..4].copy_from_slice(&available.to_be_bytes());
                data
            }
            _ => return Err(Check::invalid_cdb_field(1, Some(4))),
        };
        Ok(truncate(data, allocation_length))
    }
}

/// OPERATING PARAMETERS (SPC-4 6.18.4).
fn operating_parameters() -> Vec<u8> {
    let mut data = vec![0u8; 45];
    data[0..4].copy_from_slice(&41u32.to_be_bytes());
    data[4] = 0x01; // SNLID: list identifiers are kept
    data[8..10].copy_from_slice(&MAX_TARGET_DESCRIPTORS.to_be_bytes());
    data[10..12].copy_from_slice(&MAX_SEGMENT_DESCRIPTORS.to_be_bytes());
    data[12..16].copy_from_slice(&MAX_DESCRIPTOR_LIST_BYTES.to_be_bytes());
    data[16..20].copy_from_slice(&MAX_SEGMENT_BYTES.to_be_bytes());
    // Inline data, held data and stream transfers: none.
    data[34..36].copy_from_slice(&u16::from(MAX_CONCURRENT_COPIES).to_be_bytes());
    data[36] = MAX_CONCURRENT_COPIES;
    data[37] = 9; // DATA SEGMENT GRANULARITY: 2^9 bytes
    data[43] = 2; // IMPLEMENTED DESCRIPTOR LIST LENGTH
    data.truncate(44);
    data.extend_from_slice(&[BLOCK_TO_BLOCK, IDENTIFICATION_DESCRIPTOR]);
    let available = (data.len() - 4) as u32;
    data[0..4].copy_from_slice(&available.to_be_bytes());
    data
}

/// The Third-party Copy VPD page body: one Supported Commands descriptor.
pub(super) fn third_party_copy_page() -> Vec<u8> {
    let commands: &[u8] = &[
        EXTENDED_COPY,
        1,
        0x00, // LID1
        RECEIVE_COPY_RESULTS,
        3,
        COPY_STATUS,
        OPERATING_PARAMETERS,
        FAILED_SEGMENT_DETAILS,
    ];
    let mut descriptor = vec![0x00, 0x01, 0, 0, commands.len() as u8];
    descriptor.extend_from_slice(commands);
    while (descriptor.len() - 4) % 4 != 0 {
        descriptor.push(0);
    }
    let length = (descriptor.len() - 4) as u16;
    descriptor[2..4].copy_from_slice(&length.to_be_bytes());
    descriptor
}

/// Runs one segment: checks its targets and range, then remaps or copies.
fn copy_segment(list: &CopyList, segment: &Segment) -> Result<(), Check> {
    let target = |index: usize| {
        list.targets
            .get(index)
            .cloned()
            .flatten()
            .ok_or_else(unreachable)
    };
    let (source, dest) = (target(segment.source)?, target(segment.dest)?);
    for (unit, lba) in [(&source, segment.source_lba), (&dest, segment.dest_lba)] {
        if lba
            .checked_add(segment.blocks)
            .is_none_or(|end| end > unit.blocks())
        {
            return Err(aborted());
        }
    }
    if dest.write_protected() {
        return Err(Check::write_protected());
    }
    if segment.blocks == 0 {
        return Ok(());
    }
    let block = u64::from(source.block_size());
    let (from, to, len) = (
        segment.source_lba * block,
        segment.dest_lba * block,
        segment.blocks * block,
    );
    let _entered = dest.write_gate.shared();
    copy_bytes(&source, &dest, from, to, len).map_err(|error| {
        tracing::warn!(%error, "EXTENDED COPY segment failed");
        aborted()
    })
}

/// Copies `len` bytes: whole chunks between volumes of one pool by remapping, the rest
/// through a buffer.
fn copy_bytes(
    source: &LogicalUnit,
    dest: &LogicalUnit,
    from: u64,
    to: u64,
    len: u64,
) -> std::io::Result<()> {
    let (src, dst) = (source.backend(), dest.backend());
    if let (Some(a), Some(b)) = (src.pool_volume(), dst.pool_volume()) {
        if Arc::ptr_eq(a.pool(), b.pool()) && from % CHUNK_BYTES == to % CHUNK_BYTES {
            let head = ((CHUNK_BYTES - from % CHUNK_BYTES) % CHUNK_BYTES).min(len);
            let chunks = (len - head) / CHUNK_BYTES;
            if chunks > 0 {
                copy_through_buffer(src, dst, from, to, head)?;
                let (first_src, first_dst) =
                    ((from + head) / CHUNK_BYTES, (to + head) / CHUNK_BYTES);
                a.pool().engine().remap(
                    a.id(),
                    first_src as u32,
                    b.id(),
                    first_dst as u32,
                    chunks as u32,
                )?;
                let done = head + chunks * CHUNK_BYTES;
                return copy_through_buffer(src, dst, from + done, to + done, len - done);
            }
        }
    }
    copy_through_buffer(src, dst, from, to, len)
}

fn copy_through_buffer(
    src: &dyn crate::backend::Backend,
    dst: &dyn crate::backend::Backend,
    from: u64,
    to: u64,
    len: u64,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; COPY_PIECE_BYTES.min(len as usize)];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        src.read_at(from + done, &mut buf[..n])?;
        dst.write_at(to + done, &buf[..n])?;
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::RamBackend;
    use crate::disk::sense::status;
    use crate::disk::{LuConfig, LunMap, ScsiResult, TargetPortInfo};

    fn lu(name: &str) -> Arc<LogicalUnit> {
        Arc::new(LogicalUnit::new(
            Box::new(RamBackend::new(8 << 20)),
            LuConfig::for_name(name),
        ))
    }

    fn run(lu: &LogicalUnit, cdb: &[u8], data_out: &[u8]) -> ScsiResult {
        run_on(Nexus::default(), lu, cdb, data_out)
    }

    fn run_on(nexus: Nexus, lu: &LogicalUnit, cdb: &[u8], data_out: &[u8]) -> ScsiResult {
        let mut padded = [0u8; 16];
        padded[..cdb.len()].copy_from_slice(cdb);
        lu.execute(&ScsiTask {
            cdb: &padded,
            data_out,
            expected_data_in_len: 1 << 24,
            target_port: TargetPortInfo::default(),
            nexus,
        })
    }

    fn sense(result: &ScsiResult) -> (u8, u8, u8) {
        assert_eq!(result.status, status::CHECK_CONDITION);
        (result.sense[2] & 0x0f, result.sense[12], result.sense[13])
    }

    fn target(lu: &LogicalUnit) -> Vec<u8> {
        let mut d = vec![0u8; 32];
        d[0] = IDENTIFICATION_DESCRIPTOR;
        d[4] = 1;
        d[5] = 3;
        d[7] = 8;
        d[8..16].copy_from_slice(&lu.config().naa_id);
        d[29..32].copy_from_slice(&lu.block_size().to_be_bytes()[1..]);
        d
    }

    fn segment(source: u16, dest: u16, blocks: u16, from: u64, to: u64) -> Vec<u8> {
        let mut s = vec![0u8; 28];
        s[0] = BLOCK_TO_BLOCK;
        s[2..4].copy_from_slice(&0x18u16.to_be_bytes());
        s[4..6].copy_from_slice(&source.to_be_bytes());
        s[6..8].copy_from_slice(&dest.to_be_bytes());
        s[10..12].copy_from_slice(&blocks.to_be_bytes());
        s[12..20].copy_from_slice(&from.to_be_bytes());
        s[20..28].copy_from_slice(&to.to_be_bytes());
        s
    }

    fn list(list_id: u8, targets: &[Vec<u8>], segments: &[Vec<u8>]) -> Vec<u8> {
        let (t, s) = (targets.concat(), segments.concat());
        let mut l = vec![0u8; 16];
        l[0] = list_id;
        l[2..4].copy_from_slice(&(t.len() as u16).to_be_bytes());
        l[8..12].copy_from_slice(&(s.len() as u32).to_be_bytes());
        l.extend_from_slice(&t);
        l.extend_from_slice(&s);
        l
    }

    fn xcopy_cdb(len: usize) -> Vec<u8> {
        let mut cdb = vec![EXTENDED_COPY, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        cdb.extend_from_slice(&(len as u32).to_be_bytes());
        cdb
    }

    fn rcr(action: u8, list_id: u8) -> Vec<u8> {
        vec![
            RECEIVE_COPY_RESULTS,
            action,
            list_id,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            4,
            0,
        ]
    }

    #[test]
    fn segments_copy_between_logical_units_and_results_are_held_by_list_id() {
        let (a, b) = (lu("xcopy-a"), lu("xcopy-b"));
        let mut map = LunMap::new();
        map.insert(0, Arc::clone(&a));
        map.insert(1, Arc::clone(&b));
        let data: Vec<u8> = (0..64 * 512).map(|i| (i % 251) as u8).collect();
        a.backend().write_at(0, &data).unwrap();
        // Two segments: A[0..32) -> B[100..132), then A[32..64) -> A[200..232).
        let params = list(
            7,
            &[target(&a), target(&b)],
            &[segment(0, 1, 32, 0, 100), segment(0, 0, 32, 32, 200)],
        );
        let result = run(&a, &xcopy_cdb(params.len()), &params);
        assert_eq!(result.status, status::GOOD, "{:02x?}", result.sense);
        let mut copied = vec![0u8; 32 * 512];
        b.backend().read_at(100 * 512, &mut copied).unwrap();
        assert!(copied == data[..32 * 512]);
        a.backend().read_at(200 * 512, &mut copied).unwrap();
        assert!(copied == data[32 * 512..]);
        let status_page = run(&a, &rcr(COPY_STATUS, 7), &[]).data_in;
        assert_eq!(status_page[4] & 0x7f, 0, "copy done");
        assert_eq!(u16::from_be_bytes([status_page[5], status_page[6]]), 2);
        assert_eq!(
            u32::from_be_bytes(status_page[8..12].try_into().unwrap()),
            32,
            "KiB"
        );
        assert_eq!(
            sense(&run(&a, &rcr(COPY_STATUS, 8), &[])),
            (0x05, 0x24, 0x00)
        );
        let parameters = run(&a, &rcr(OPERATING_PARAMETERS, 0), &[]).data_in;
        assert_eq!(
            u16::from_be_bytes([parameters[8], parameters[9]]),
            MAX_TARGET_DESCRIPTORS
        );
        assert_eq!(
            &parameters[44..46],
            &[BLOCK_TO_BLOCK, IDENTIFICATION_DESCRIPTOR]
        );
    }

    #[test]
    fn copy_results_are_held_per_i_t_nexus() {
        let a = lu("xcopy-nexus");
        LunMap::new().insert(0, Arc::clone(&a));
        let host = |isid: u8| Nexus {
            initiator_name: "iqn.2026-12.test:host",
            isid: [0x80, 0, 0, 0, 0, isid],
        };
        let other = Nexus {
            initiator_name: "iqn.2026-12.test:other",
            isid: [0x80, 0, 0, 0, 0, 1],
        };
        // List id 1 on one nexus: a good copy of 4 blocks; on another, a failing one.
        let good = list(1, &[target(&a)], &[segment(0, 0, 4, 0, 100)]);
        let result = run_on(host(1), &a, &xcopy_cdb(good.len()), &good);
        assert_eq!(result.status, status::GOOD);
        let bad = list(1, &[target(&a)], &[segment(0, 0, 2, 0, 16383)]);
        assert_eq!(
            run_on(other, &a, &xcopy_cdb(bad.len()), &bad).status,
            status::CHECK_CONDITION
        );
        let status_of = |nexus| run_on(nexus, &a, &rcr(COPY_STATUS, 1), &[]);
        let mine = status_of(host(1));
        assert_eq!(mine.status, status::GOOD, "{:02x?}", mine.sense);
        assert_eq!(mine.data_in[4] & 0x7f, 0, "done, not the other's failure");
        assert_eq!(u16::from_be_bytes([mine.data_in[5], mine.data_in[6]]), 1);
        assert_eq!(status_of(other).data_in[4] & 0x7f, 1, "failed");
        // Another ISID of the same initiator is another nexus: nothing held for it.
        assert_eq!(sense(&status_of(host(2))), (0x05, 0x24, 0x00));
    }

    #[test]
    fn bad_lists_fail_with_the_sense_spc_names_and_failures_are_detailed() {
        let a = lu("xcopy-bad");
        LunMap::new().insert(0, Arc::clone(&a));
        let check = |params: &[u8]| sense(&run(&a, &xcopy_cdb(params.len()), params));
        let one = [segment(0, 0, 1, 0, 1)];
        let mut unknown = target(&a);
        unknown[15] ^= 0xff;
        assert_eq!(
            check(&list(1, &[unknown], &one)),
            (COPY_ABORTED, 0x0d, 0x02)
        );
        assert_eq!(
            check(&list(1, &[target(&a)], &[segment(0, 1, 1, 0, 1)])).0,
            COPY_ABORTED
        );
        assert_eq!(
            check(&list(1, &[target(&a)], &[segment(0, 0, 2, 0, 16383)])),
            (COPY_ABORTED, 0, 0),
            "past the end"
        );
        let nine = vec![target(&a); 9];
        assert_eq!(check(&list(1, &nine, &one)), (0x05, 0x26, 0x06));
        let mut fc = target(&a);
        fc[0] = 0xe0;
        assert_eq!(check(&list(1, &[fc], &one)), (0x05, 0x26, 0x07));
        let mut stream = segment(0, 0, 1, 0, 1);
        stream[0] = 0x03;
        assert_eq!(
            check(&list(1, &[target(&a)], &[stream])),
            (0x05, 0x26, 0x09)
        );
        let whole = list(1, &[target(&a)], &one);
        assert_eq!(check(&whole[..whole.len() - 1]), (0x05, 0x1a, 0x00));
        // The failed copy with list identifier 1 is held with its sense data.
        let details = run(&a, &rcr(FAILED_SEGMENT_DETAILS, 1), &[]).data_in;
        assert_eq!(details[56], status::CHECK_CONDITION);
        assert_eq!(details[60 + 2] & 0x0f, COPY_ABORTED);
        assert_eq!(
            run(&a, &xcopy_cdb(0), &[]).status,
            status::GOOD,
            "empty list"
        );
    }

    #[test]
    fn third_party_copy_page_lists_both_commands_and_inquiry_sets_3pc() {
        let a = lu("xcopy-vpd");
        let page = run(&a, &[0x12, 1, THIRD_PARTY_COPY_PAGE, 0, 255, 0], &[]).data_in;
        assert_eq!(page[1], THIRD_PARTY_COPY_PAGE);
        let body = &page[4..];
        assert_eq!(
            u16::from_be_bytes([body[0], body[1]]),
            1,
            "supported commands"
        );
        assert_eq!(&body[5..8], &[EXTENDED_COPY, 1, 0]);
        assert_eq!(&body[8..13], &[RECEIVE_COPY_RESULTS, 3, 0, 3, 4]);
        let standard = run(&a, &[0x12, 0, 0, 0, 96, 0], &[]).data_in;
        assert_eq!(standard[5] & 0x08, 0x08);
    }
}
