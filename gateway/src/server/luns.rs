//! The default logical units: the SCSI disk emulation (`crate::disk`) over the backends
//! (`crate::backend`) that each LUN spec names.

use std::sync::Arc;

use datapath::scsi::LunAddress;

use crate::backend::{LunSpec, SharedWord, Storage};
use crate::conglomerate::HostBindings;
use crate::disk::conglomerate::{self, Inventory, Role};
use crate::disk::opcodes::op;
use crate::disk::{
    self, data_out_length, IoKind, LogicalUnit, LuConfig, LunMap, Plan, ScsiResult, ScsiTask,
    TargetPortInfo,
};
use crate::reservation::{Admission, LuReservations, Nexus, NexusView, ResetKind};
use crate::session::CommandResult;

use super::{BlockingJob, FileIo, LunExecutor, ServerError, Submission, TargetNodeConfig};

/// The LUNs of one target node and the port identity they report; for a host with
/// bound volumes, also the subsidiary LUs bound for it (one executor per such host, over
/// the same map).
struct DiskLuns {
    map: Arc<LunMap>,
    bound: Option<Arc<HostBindings>>,
    target_name: String,
    tpgt: u16,
}

impl Inventory for DiskLuns {
    fn for_each_unit(&self, f: &mut dyn FnMut(u16, Role)) {
        self.map.for_each_unit(f)
    }
    fn for_each_subsidiary(&self, endpoint: Option<u16>, f: &mut dyn FnMut(u16, u32)) {
        if let Some(bound) = &self.bound {
            bound.for_each(endpoint, |e, s, _| f(e, s));
        }
    }
}

impl DiskLuns {
    /// The unit `lun` (a [`LunAddress::key`]) names: a single-level LUN of the map, or a
    /// volume bound for this host through an endpoint of the map.
    fn unit(&self, lun: u64) -> Option<&Arc<LogicalUnit>> {
        if lun <= datapath::scsi::lun::SIMPLE_MAX {
            return self.map.get(lun);
        }
        let Some(LunAddress::Subsidiary {
            endpoint,
            secondary,
        }) = LunAddress::from_key(lun)
        else {
            return None;
        };
        let endpoint_unit = self.map.get(u64::from(endpoint))?;
        if endpoint_unit.config().role != Role::Endpoint {
            return None;
        }
        self.bound.as_ref()?.get(endpoint, secondary)
    }

    /// Every unit this executor reaches (for nexus events, resets and flushes).
    /// The units of the map (plain LUNs and endpoints), not the bound volumes.
    fn map_units(&self, mut f: impl FnMut(&Arc<LogicalUnit>)) {
        for lun in self.map.luns() {
            if let Some(unit) = self.map.get(lun) {
                f(unit);
            }
        }
    }

    fn for_each_unit(&self, mut f: impl FnMut(u64, &Arc<LogicalUnit>)) {
        for lun in self.map.luns() {
            if let Some(unit) = self.map.get(lun) {
                f(lun, unit);
            }
        }
        if let Some(bound) = &self.bound {
            bound.for_each(None, |endpoint, secondary, unit| {
                let key = LunAddress::Subsidiary {
                    endpoint,
                    secondary,
                }
                .key();
                f(key, unit)
            });
        }
    }

    /// REPORT LUNS and missing units are answered at once; others run on their unit.
    fn run(&self, lun: u64, task: &ScsiTask) -> ScsiResult {
        if task.cdb.first() == Some(&op::REPORT_LUNS) {
            return report_luns(task, lun, self);
        }
        match self.unit(lun) {
            Some(unit) => unit.execute(task),
            None => self.map.execute(lun, task),
        }
    }

    /// [`LogicalUnit::plan`] on the unit `lun` names (found by the caller, once per
    /// command: a bound volume's lookup is a B-tree step and a binary search).
    fn plan_on(&self, unit: &LogicalUnit, lun: u64, task: &ScsiTask) -> Plan {
        if task.cdb.first() == Some(&op::REPORT_LUNS) {
            return Plan::Done(report_luns(task, lun, self));
        }
        unit.plan(task)
    }

    /// Section 11.4.5.1 residuals for writes: the initiator may send more or less
    /// Data-Out than the CDB asks for. Only the CDB's amount is written; with less, a
    /// WRITE is cut to the whole blocks that came (the rest is an overflow). COMPARE AND
    /// WRITE is the exception: SBC-3 5.2 makes a Data-Out of any other length than twice
    /// NUMBER OF LOGICAL BLOCKS an error, and that count is one byte, so 256 blocks arrive
    /// as 0 with 512 blocks of Data-Out. Trimming would turn that into a successful no-op;
    /// the disk must see the whole Data-Out and refuse it.
    ///
    /// Returns the CDB to run (rewritten into `cdb_buf` when cut), how many bytes of the
    /// Data-Out it uses, and the Data-Out length the CDB asked for.
    fn trim<'a>(
        block_size: Option<u32>,
        cdb: &'a [u8],
        data_out_len: usize,
        cdb_buf: &'a mut Vec<u8>,
    ) -> (&'a [u8], usize, Option<u32>) {
        let wanted = block_size.and_then(|b| data_out_length(cdb, b));
        if cdb.first() == Some(&op::COMPARE_AND_WRITE) {
            return (cdb, data_out_len, wanted);
        }
        match (wanted, block_size) {
            (Some(wanted), _) if (wanted as usize) < data_out_len => {
                (cdb, wanted as usize, wanted.into())
            }
            (Some(wanted), Some(block_size)) if (wanted as usize) > data_out_len => {
                let blocks = data_out_len as u64 / u64::from(block_size.max(1));
                *cdb_buf = cdb.to_vec();
                if set_write_blocks(cdb_buf, blocks) {
                    let len = (blocks * u64::from(block_size)) as usize;
                    (&cdb_buf[..], len, Some(wanted))
                } else {
                    (cdb, data_out_len, Some(wanted))
                }
            }
            _ => (cdb, data_out_len, wanted),
        }
    }

    /// Starts a command on `unit`, the unit `lun` names (looked up once by the caller).
    fn submit_to(
        &self,
        unit: &Arc<LogicalUnit>,
        nexus: disk::Nexus<'_>,
        lun: u64,
        cdb: &[u8],
        mut data_out: Vec<u8>,
        expected_data_in_len: u32,
    ) -> Submission {
        let mut cdb_buf = Vec::new();
        let (cdb, used, wanted) =
            Self::trim(Some(unit.block_size()), cdb, data_out.len(), &mut cdb_buf);
        let data = data_out.get(..used).unwrap_or(&data_out);
        match self.plan_on(
            unit,
            lun,
            &self.task(nexus, cdb, data, expected_data_in_len),
        ) {
            Plan::Done(result) => Submission::Done(command_result(result, wanted)),
            Plan::Blocking => {
                data_out.truncate(used);
                let unit = Arc::clone(unit);
                let cdb = cdb.to_vec();
                let (target_name, tpgt) = (self.target_name.clone(), self.tpgt);
                let nexus = nexus.to_key();
                let ticket = unit.blocking_ticket();
                Submission::Blocking(BlockingJob {
                    unit: Arc::as_ptr(&unit) as usize,
                    run: Box::new(move || {
                        let _ticket = ticket;
                        let task = ScsiTask {
                            cdb: &cdb,
                            data_out: &data_out,
                            expected_data_in_len,
                            target_port: port_info(&target_name, tpgt),
                            nexus: nexus.as_nexus(),
                        };
                        command_result(unit.execute(&task), wanted)
                    }),
                })
            }
            Plan::Io(plan) => {
                // The plan's length is what the CDB writes, a prefix of the Data-Out.
                if plan.kind == IoKind::Write {
                    data_out.truncate(plan.len as usize);
                } else {
                    data_out = Vec::new();
                }
                Submission::Io(FileIo {
                    unit: Arc::clone(unit),
                    plan,
                    data_out,
                    data_out_wanted: wanted,
                    admitted: None,
                })
            }
        }
    }

    /// [`LunExecutor::submit_as`] on `unit`, the unit `lun` names (looked up once).
    fn submit_as_on(
        &self,
        unit: &Arc<LogicalUnit>,
        nexus: &mut NexusView,
        lun: u64,
        cdb: &[u8],
        data_out: Vec<u8>,
        expected_data_in_len: u32,
    ) -> Submission {
        let reservations = unit.reservations();
        let admission = reservations.admit(nexus, lun as usize, cdb);
        // A bound volume learns of a nexus at its first command (a login walks only the
        // map's units); the nexus remembers it, to leave it when it is lost.
        if nexus.take_joined_by_last_admit() && lun > datapath::scsi::lun::SIMPLE_MAX {
            nexus.remember_joined(unit);
        }
        let admitted = match admission {
            Admission::Go(admitted) => admitted,
            Admission::Done(result) => return Submission::Done(command_result(result, None)),
            Admission::Reservation if reservations.may_block(cdb) => {
                let unit = Arc::clone(unit);
                let (who, cdb) = (nexus.nexus().clone(), cdb.to_vec());
                return Submission::Blocking(BlockingJob {
                    unit: Arc::as_ptr(&unit) as usize,
                    run: Box::new(move || {
                        let result = unit.reservations().execute(&who, &cdb, &data_out);
                        command_result(result, None)
                    }),
                });
            }
            Admission::Reservation => {
                let result = reservations.execute(nexus.nexus(), cdb, &data_out);
                return Submission::Done(command_result(result, None));
            }
        };
        // The ticket stays with the command until it is done (here, on the ring or on
        // the blocking pool).
        let command_nexus = nexus.nexus().command_nexus();
        match self.submit_to(
            unit,
            command_nexus,
            lun,
            cdb,
            data_out,
            expected_data_in_len,
        ) {
            Submission::Done(result) => Submission::Done(result),
            Submission::Io(mut io) => {
                io.admitted = admitted.into_owned(Arc::clone(unit));
                Submission::Io(io)
            }
            Submission::Blocking(job) => {
                let ticket = admitted.into_owned(Arc::clone(unit));
                let run = job.run;
                Submission::Blocking(BlockingJob {
                    unit: job.unit,
                    run: Box::new(move || {
                        let _admitted = ticket;
                        run()
                    }),
                })
            }
        }
    }

    fn task<'a>(
        &'a self,
        nexus: disk::Nexus<'a>,
        cdb: &'a [u8],
        data_out: &'a [u8],
        expected_data_in_len: u32,
    ) -> ScsiTask<'a> {
        ScsiTask {
            cdb,
            data_out,
            expected_data_in_len,
            target_port: port_info(&self.target_name, self.tpgt),
            nexus,
        }
    }
}

/// One gateway process is one target port and one ALUA target port group, both numbered
/// by its portal group tag (`crate::portal`).
fn port_info(target_name: &str, tpgt: u16) -> TargetPortInfo<'_> {
    TargetPortInfo {
        relative_port_id: tpgt.max(1),
        target_port_group: tpgt,
        target_name,
        tpgt,
    }
}

fn command_result(result: ScsiResult, data_out_wanted: Option<u32>) -> CommandResult {
    CommandResult {
        status: result.status,
        sense: result.sense,
        data_in: result.data_in,
        data_out_wanted,
    }
}

impl LunExecutor for DiskLuns {
    fn execute(
        &self,
        nexus: disk::Nexus<'_>,
        lun: u64,
        cdb: &[u8],
        data_out: &[u8],
        expected_data_in_len: u32,
    ) -> CommandResult {
        let mut cdb_buf = Vec::new();
        let block_size = self.unit(lun).map(|lu| lu.block_size());
        let (cdb, used, wanted) = Self::trim(block_size, cdb, data_out.len(), &mut cdb_buf);
        let data_out = data_out.get(..used).unwrap_or(data_out);
        let result = self.run(lun, &self.task(nexus, cdb, data_out, expected_data_in_len));
        command_result(result, wanted)
    }

    fn submit(
        &self,
        nexus: disk::Nexus<'_>,
        lun: u64,
        cdb: &[u8],
        data_out: Vec<u8>,
        expected_data_in_len: u32,
    ) -> Submission {
        match self.unit(lun) {
            Some(unit) => self.submit_to(unit, nexus, lun, cdb, data_out, expected_data_in_len),
            None => {
                Submission::Done(self.execute(nexus, lun, cdb, &data_out, expected_data_in_len))
            }
        }
    }

    fn submit_as(
        &self,
        nexus: &mut NexusView,
        lun: u64,
        cdb: &[u8],
        data_out: Vec<u8>,
        expected_data_in_len: u32,
    ) -> Submission {
        match self.unit(lun) {
            Some(unit) => self.submit_as_on(unit, nexus, lun, cdb, data_out, expected_data_in_len),
            None => self.submit(
                nexus.nexus().command_nexus(),
                lun,
                cdb,
                data_out,
                expected_data_in_len,
            ),
        }
    }

    fn submit_as_bound(
        &self,
        nexus: &mut NexusView,
        lun: u64,
        cdb: &[u8],
        data_out: Vec<u8>,
        expected_data_in_len: u32,
    ) -> (Submission, Option<Arc<LogicalUnit>>) {
        match self.unit(lun) {
            Some(unit) => {
                let bound = (lun > datapath::scsi::lun::SIMPLE_MAX).then(|| Arc::clone(unit));
                let submission =
                    self.submit_as_on(unit, nexus, lun, cdb, data_out, expected_data_in_len);
                (submission, bound)
            }
            None => (
                self.submit(
                    nexus.nexus().command_nexus(),
                    lun,
                    cdb,
                    data_out,
                    expected_data_in_len,
                ),
                None,
            ),
        }
    }
    fn answer_first(&self, nexus: &mut NexusView, lun: u64, cdb: &[u8]) -> Option<CommandResult> {
        let unit = self.map.get(lun)?;
        match unit.reservations().admit(nexus, lun as usize, cdb) {
            Admission::Done(result) => Some(command_result(result, None)),
            Admission::Go(_) | Admission::Reservation => None,
        }
    }

    /// The map's units only: a host may have 65,536 volumes bound, and a lock and an
    /// epoch advance on each made its login and logout cost that many. A bound volume
    /// counts the nexus present from its first command instead (`join_if_absent`).
    fn nexus_joined(&self, nexus: &Nexus) {
        self.map_units(|unit| unit.reservations().nexus_joined(nexus));
    }

    /// The map's units and the bound volumes this nexus sent commands to.
    fn nexus_lost(&self, view: &NexusView) {
        let nexus = view.nexus();
        self.map_units(|unit| unit.reservations().nexus_lost(nexus));
        for unit in view.joined_late() {
            unit.reservations().nexus_lost(nexus);
        }
    }

    fn reset(&self, lun: Option<u64>, kind: ResetKind) {
        match lun {
            // One unit: a plain LUN or a volume bound for this host (found directly, not
            // by walking thousands of bindings).
            Some(lun) => {
                if let Some(unit) = self.unit(lun) {
                    unit.reservations().reset(kind);
                }
            }
            None => self.for_each_unit(|_, unit| unit.reservations().reset(kind)),
        }
        tracing::info!(target = %self.target_name, ?lun, ?kind, "reset");
    }

    fn announce(&self, asc: (u8, u8)) {
        for lun in self.map.luns() {
            if let Some(unit) = self.map.get(lun) {
                unit.reservations().announce(asc);
            }
        }
    }

    fn subsidiary_unit(&self, lun: u64) -> Option<Arc<LogicalUnit>> {
        if lun <= datapath::scsi::lun::SIMPLE_MAX {
            return None;
        }
        self.unit(lun).cloned()
    }

    fn flush(&self) {
        self.for_each_unit(|lun, unit| {
            if let Err(error) = unit.backend().flush() {
                tracing::error!(target = %self.target_name, lun, %error, "flush failed");
            }
        });
    }
}

pub(super) fn build(
    node: &TargetNodeConfig,
    portal_group_tag: u16,
) -> Result<Arc<dyn LunExecutor>, ServerError> {
    let mut map = LunMap::new();
    for (lun, spec) in &node.luns {
        let lun_error = |reason: String| ServerError::Lun {
            target: node.iqn.clone(),
            lun: *lun,
            spec: spec.clone(),
            reason,
        };
        let parsed = LunSpec::parse(spec).map_err(|e| lun_error(e.to_string()))?;
        let (backend, identity) = parsed.open().map_err(|e| lun_error(e.to_string()))?;
        let read_only = parsed.options.readonly;
        // APTPL state lives beside a file's storage (PATH.pr); RAM and null units lose
        // their contents at restart anyway, and refuse APTPL.
        let mut reservations = match &parsed.storage {
            Storage::File { path, .. } => LuReservations::persistent(format!("{path}.pr").into())
                .map_err(|e| lun_error(e.to_string()))?,
            _ => LuReservations::new(),
        };
        // A file other gateways export too is one LU reached through several
        // processes: a reset through any of them reaches the nexuses of all (PATH.resets).
        if let (Storage::File { path, .. }, true) = (&parsed.storage, parsed.options.shared) {
            let resets = format!("{path}.resets");
            let word = SharedWord::open(&resets)
                .map_err(|e| lun_error(format!("mapping {resets}: {e}")))?;
            reservations = reservations.with_peer_resets(word);
        }
        // The identity belongs to the storage (see `backend::identity`), not to the target
        // name and LUN number, which are the same on every gateway started with defaults.
        let config = LuConfig {
            serial: identity.serial,
            naa_id: identity.naa_id,
            read_only,
            role: parsed.role(),
            ..LuConfig::for_name(&format!("{}/{lun}", node.iqn))
        };
        map.insert(
            *lun,
            Arc::new(
                LogicalUnit::new(backend, config)
                    .with_reservations(reservations)
                    .with_sanitize_rate(parsed.options.sanitize_bytes_per_second),
            ),
        );
    }
    Ok(from_map(&node.iqn, portal_group_tag, map))
}

/// REPORT LUNS as the addressed nexus sees the target (`conglomerate::report_luns`).
fn report_luns(task: &ScsiTask, lun: u64, inventory: &dyn Inventory) -> ScsiResult {
    let checked = crate::disk::opcodes::lookup(task.cdb, false)
        .and_then(|command| crate::disk::opcodes::check_reserved_bits(command, task.cdb))
        .and_then(|()| conglomerate::report_luns(task.cdb, lun, inventory));
    match checked {
        Ok(data) => ScsiResult::good(data),
        Err(check) => ScsiResult::check_condition(&check),
    }
}

pub(crate) fn from_map(
    target_name: &str,
    portal_group_tag: u16,
    map: LunMap,
) -> Arc<dyn LunExecutor> {
    Arc::new(DiskLuns {
        map: Arc::new(map),
        bound: None,
        target_name: target_name.to_string(),
        tpgt: portal_group_tag,
    })
}

pub(crate) fn shared(
    target_name: &str,
    portal_group_tag: u16,
    map: Arc<LunMap>,
) -> Arc<dyn LunExecutor> {
    Arc::new(DiskLuns {
        map,
        bound: None,
        target_name: target_name.to_string(),
        tpgt: portal_group_tag,
    })
}

/// The executor of one host that has volumes bound: the target's `map` (shared with the
/// other hosts' executors) and the host's `bound` units.
pub(crate) fn for_host(
    target_name: &str,
    portal_group_tag: u16,
    map: Arc<LunMap>,
    bound: Arc<HostBindings>,
) -> Arc<dyn LunExecutor> {
    Arc::new(DiskLuns {
        map,
        bound: Some(bound),
        target_name: target_name.to_string(),
        tpgt: portal_group_tag,
    })
}

/// Rewrites the transfer length of a WRITE or WRITE AND VERIFY (10, 12, 16) CDB; false
/// for other commands, which then run with the data as it came.
fn set_write_blocks(cdb: &mut [u8], blocks: u64) -> bool {
    use datapath::scsi::cdb::opcode::*;
    match cdb.first().copied() {
        Some(WRITE_10 | WRITE_AND_VERIFY_10) if cdb.len() >= 10 => {
            cdb[7..9].copy_from_slice(&(blocks as u16).to_be_bytes());
            true
        }
        Some(WRITE_12 | WRITE_AND_VERIFY_12) if cdb.len() >= 12 => {
            cdb[6..10].copy_from_slice(&(blocks as u32).to_be_bytes());
            true
        }
        Some(WRITE_16 | WRITE_AND_VERIFY_16) if cdb.len() >= 16 => {
            cdb[10..14].copy_from_slice(&(blocks as u32).to_be_bytes());
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datapath::scsi::sense::status::CHECK_CONDITION;

    fn luns() -> Arc<dyn LunExecutor> {
        let node = TargetNodeConfig::new("iqn.2024-01.test:luns", vec![(0, "ram:1M".into())]);
        build(&node, 1).unwrap()
    }

    fn compare_and_write(blocks_byte: u8) -> [u8; 16] {
        let mut cdb = [0u8; 16];
        cdb[0] = op::COMPARE_AND_WRITE;
        cdb[13] = blocks_byte;
        cdb
    }

    #[test]
    fn compare_and_write_with_more_data_out_than_the_cdb_is_refused_not_trimmed() {
        let luns = luns();
        // 256 blocks do not fit the one-byte count (it wraps to 0); the Data-Out still
        // carries 2 x 256 blocks. libiscsi's CompareAndWrite.Simple expects INVALID
        // FIELD IN CDB here.
        let result = luns.execute(
            disk::Nexus::default(),
            0,
            &compare_and_write(0),
            &vec![0; 2 * 256 * 512],
            0,
        );
        assert_eq!(result.status, CHECK_CONDITION);
        // One block asked for, four sent.
        let result = luns.execute(
            disk::Nexus::default(),
            0,
            &compare_and_write(1),
            &[0; 4 * 512],
            0,
        );
        assert_eq!(result.status, CHECK_CONDITION);
        // The exact amount works (the medium is zeros, so the compare matches).
        let result = luns.execute(
            disk::Nexus::default(),
            0,
            &compare_and_write(1),
            &[0; 2 * 512],
            0,
        );
        assert_eq!(result.status, 0);
    }

    #[test]
    fn report_luns_through_submit_lists_every_lun_of_a_file_target() {
        let dir = std::env::temp_dir().join(format!("gateway-luns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let spec = |n: u64| format!("file:{}:1M", dir.join(format!("{n}.img")).display());
        let node = TargetNodeConfig::new("iqn.2024-01.test:luns", vec![(0, spec(0)), (3, spec(3))]);
        let luns = build(&node, 1).unwrap();
        let report_luns = [op::REPORT_LUNS, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
        let Submission::Done(result) =
            luns.submit(disk::Nexus::default(), 0, &report_luns, Vec::new(), 256)
        else {
            panic!("REPORT LUNS runs at once");
        };
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(result.status, 0);
        assert_eq!(
            &result.data_in[..4],
            &16u32.to_be_bytes(),
            "two LUNs listed"
        );
        // A READ on a file LUN is left to the ring.
        let read10 = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        assert!(matches!(
            luns.submit(disk::Nexus::default(), 3, &read10, Vec::new(), 512),
            Submission::Io(_)
        ));
    }

    /// A host with `bound` volumes through an endpoint at LUN 0, beside a RAM LUN 1.
    fn host_with_bindings(bound: u32) -> (Arc<dyn LunExecutor>, Vec<Arc<LogicalUnit>>) {
        let mut map = LunMap::new();
        for (lun, spec) in [(0, "endpoint"), (1, "ram:1M")] {
            let (backend, _) = LunSpec::parse(spec).unwrap().open().unwrap();
            let role = LunSpec::parse(spec).unwrap().role();
            let config = LuConfig {
                role,
                ..LuConfig::for_name(&format!("t/{lun}"))
            };
            map.insert(lun, Arc::new(LogicalUnit::new(backend, config)));
        }
        let mut bindings = HostBindings::default();
        let mut units = Vec::new();
        for secondary in 1..=bound {
            let config = LuConfig {
                role: Role::Subsidiary,
                ..LuConfig::for_name(&format!("pool/v{secondary}"))
            };
            let unit = Arc::new(LogicalUnit::new(
                Box::new(crate::backend::NullBackend::new(1 << 20)),
                config,
            ));
            assert!(bindings.insert(0, secondary, Arc::clone(&unit)));
            units.push(unit);
        }
        let executor = for_host("t", 1, Arc::new(map), Arc::new(bindings));
        (executor, units)
    }

    fn bound_key(secondary: u32) -> u64 {
        LunAddress::Subsidiary {
            endpoint: 0,
            secondary,
        }
        .key()
    }

    fn test_unit_ready(executor: &dyn LunExecutor, view: &mut NexusView, lun: u64) -> u8 {
        match executor.submit_as(view, lun, &[0; 6], Vec::new(), 0) {
            Submission::Done(result) => result.status,
            other => panic!("TEST UNIT READY runs at once: {other:?}"),
        }
    }

    /// Issue 18: a login or logout of a host with thousands of bindings took a lock and
    /// advanced an epoch on every bound volume. Now they touch the map's units and the
    /// volumes the nexus used, and a volume counts the nexus present from its first
    /// command (so its resets still reach it), until the nexus is lost.
    #[test]
    fn a_login_and_a_logout_touch_only_the_bound_volumes_the_nexus_used() {
        let (executor, units) = host_with_bindings(1000);
        let nexus = Nexus::new("iqn.2024-01.test:host", [0x80, 0, 0, 0, 0, 1], 1);
        executor.nexus_joined(&nexus);
        let mut view = NexusView::new(nexus.clone());
        let present = |unit: &LogicalUnit| unit.reservations().snapshot().is_present(&nexus);
        assert!(
            units.iter().all(|unit| !present(unit)),
            "the login walks no volume"
        );

        for secondary in [7, 500] {
            assert_eq!(
                test_unit_ready(&*executor, &mut view, bound_key(secondary)),
                0
            );
            // Again: the second command finds the nexus present and adds nothing.
            assert_eq!(
                test_unit_ready(&*executor, &mut view, bound_key(secondary)),
                0
            );
        }
        assert_eq!(test_unit_ready(&*executor, &mut view, 1), 0);
        let used: Vec<usize> = (0..units.len()).filter(|&i| present(&units[i])).collect();
        assert_eq!(used, vec![6, 499], "present where it sent commands");
        assert_eq!(view.joined_late().count(), 2, "one entry per volume used");

        // A reset of a used volume reaches the nexus.
        executor.reset(Some(bound_key(7)), ResetKind::LogicalUnit);
        assert_eq!(
            test_unit_ready(&*executor, &mut view, bound_key(7)),
            CHECK_CONDITION
        );

        let epochs_before: Vec<u64> = units.iter().map(|u| u.reservations().epoch()).collect();
        executor.nexus_lost(&view);
        assert!(
            units.iter().all(|unit| !present(unit)),
            "the nexus left them all"
        );
        let advanced: Vec<usize> = (0..units.len())
            .filter(|&i| units[i].reservations().epoch() != epochs_before[i])
            .collect();
        assert_eq!(advanced, vec![6, 499], "only the volumes used were told");
    }

    #[test]
    fn a_volume_used_by_a_nexus_and_then_unbound_closes_with_its_last_command() {
        let (executor, mut units) = host_with_bindings(2);
        let nexus = Nexus::new("iqn.2024-01.test:host", [0x80, 0, 0, 0, 0, 2], 1);
        let mut view = NexusView::new(nexus);
        assert_eq!(test_unit_ready(&*executor, &mut view, bound_key(2)), 0);
        // The executor and the list hold the unit; the view only a weak reference.
        let unit = units.pop().unwrap();
        drop(units);
        drop(executor);
        assert_eq!(Arc::strong_count(&unit), 1);
        drop(unit);
        assert_eq!(view.joined_late().count(), 0);
    }

    #[test]
    fn write_with_more_data_out_than_the_cdb_writes_what_the_cdb_asks() {
        let luns = luns();
        let mut write10 = [0u8; 10];
        write10[0] = 0x2a;
        write10[8] = 1;
        let result = luns.execute(disk::Nexus::default(), 0, &write10, &[7; 2 * 512], 0);
        assert_eq!(result.status, 0);
        assert_eq!(result.data_out_wanted, Some(512));
    }
}
