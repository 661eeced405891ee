//! Commands libiscsi's conformance suite exercises beyond reads and writes: WRITE ATOMIC(16)
//! (SBC-4 5.48), READ DEFECT DATA(10)/(12) (SBC-4 5.19, 5.20) and SANITIZE (SBC-4 5.30)
//! with OVERWRITE, BLOCK ERASE and EXIT FAILURE MODE.
//!
//! WRITE ATOMIC runs as a WRITE(16) under the logical unit's exclusive write gate (as
//! COMPARE AND WRITE does): no other write interleaves with it, so it lands whole or not at
//! all with respect to every other command. No ATOMIC BOUNDARY is supported.
//! A virtual disk has no grown or primary defects: READ DEFECT DATA returns empty lists.
//! SANITIZE runs on a thread that may wait; meanwhile the unit answers other commands NOT
//! READY, SANITIZE IN PROGRESS with the progress (`sanitizing`). Without IMMED the command
//! answers when the operation ends (with its error, if any); with IMMED (SBC-4 5.30.1) it
//! answers GOOD once the CDB and parameter data are checked and the operation started, and
//! the operation goes on on a thread of its own: hosts follow it with TEST UNIT READY or
//! REQUEST SENSE (progress in the sense-key specific bytes), and learn a failure from
//! MEDIUM ERROR, SANITIZE COMMAND FAILED afterwards.
//! CRYPTO ERASE is not offered: nothing here is encrypted.
#![forbid(unsafe_code)]

use super::opcodes::op;
use super::sense::Check;
use super::{be16, be32, truncate, LogicalUnit};

pub mod sanitize_action {
    pub const OVERWRITE: u8 = 0x01;
    pub const BLOCK_ERASE: u8 = 0x02;
    pub const EXIT_FAILURE_MODE: u8 = 0x1f;
}

/// Bytes written per call while sanitizing.
const SANITIZE_PIECE_BYTES: u64 = 1 << 20;

impl LogicalUnit {
    pub(super) fn write_atomic(&self, cdb: &[u8], data_out: &[u8]) -> Result<Vec<u8>, Check> {
        // The same fields as WRITE(16) except the 16-bit TRANSFER LENGTH at 12..14 and the
        // ATOMIC BOUNDARY at 10..12 (masked as reserved in the usage data).
        let mut write16 = [0u8; 16];
        write16[0] = op::WRITE_16;
        write16[1] = cdb[1];
        write16[2..10].copy_from_slice(&cdb[2..10]);
        write16[12..14].copy_from_slice(&cdb[12..14]);
        write16[14] = cdb[14];
        write16[15] = cdb[15];
        // The caller holds the write gate exclusively (`LogicalUnit::execute`).
        self.write_gated(&write16, data_out, false)
    }

    pub(super) fn sanitize(&self, cdb: &[u8], data_out: &[u8]) -> Result<Vec<u8>, Check> {
        let action = cdb[1] & 0x1f;
        let immediate = cdb[1] & 0x80 != 0;
        let length = usize::from(be16(cdb, 7));
        let work = match action {
            sanitize_action::OVERWRITE => {
                let block = self.block_size() as usize;
                if length < 5 || length > block + 4 {
                    return Err(Check::invalid_cdb_field(7, None));
                }
                let parameters = data_out
                    .get(..length)
                    .ok_or_else(|| Check::invalid_cdb_field(7, None))?;
                let invert = parameters[0] & 0x80 != 0;
                let count = parameters[0] & 0x1f;
                let pattern_length = usize::from(be16(parameters, 2));
                if count == 0 {
                    return Err(Check::invalid_parameter(0));
                }
                if pattern_length == 0 || pattern_length > block || pattern_length + 4 != length {
                    return Err(Check::invalid_parameter(2));
                }
                if self.write_protected() {
                    return Err(Check::write_protected());
                }
                let pattern = &parameters[4..];
                // The last of `count` passes is inverted when INVERT is set and the count
                // is even (passes alternate, the first is not inverted).
                let inverted = invert && count % 2 == 0;
                // Each block starts the pattern anew: a piece is whole blocks, and the
                // pattern is repeated within each block.
                let block_image: Vec<u8> = pattern
                    .iter()
                    .cycle()
                    .take(block)
                    .map(|&b| if inverted { !b } else { b })
                    .collect();
                Work::Overwrite(block_image.repeat(SANITIZE_PIECE_BYTES as usize / block))
            }
            sanitize_action::BLOCK_ERASE => {
                if length != 0 {
                    return Err(Check::invalid_cdb_field(7, None));
                }
                if self.write_protected() {
                    return Err(Check::write_protected());
                }
                Work::Erase
            }
            sanitize_action::EXIT_FAILURE_MODE => {
                if length != 0 {
                    return Err(Check::invalid_cdb_field(7, None));
                }
                self.sanitizing.exit_failure_mode();
                return Ok(Vec::new());
            }
            _ => return Err(Check::invalid_cdb_field(1, Some(4))),
        };
        let running = self.sanitizing.begin()?;
        if !immediate {
            sanitize_medium(self.backend.as_ref(), &self.write_gate, &work, &running)
                .map_err(|e| super::medium_error(e, true))?;
            running.complete();
            return Ok(Vec::new());
        }
        // IMMED: the operation belongs to the unit from here on. At most one runs per
        // unit (`begin` refused a second), so threads are bounded by the units.
        let backend = std::sync::Arc::clone(&self.backend);
        let gate = std::sync::Arc::clone(&self.write_gate);
        let started = std::thread::Builder::new()
            .name("sanitize".into())
            .spawn(move || {
                match sanitize_medium(backend.as_ref(), &gate, &work, &running) {
                    Ok(()) => running.complete(),
                    // Dropped without completing: the unit reports SANITIZE COMMAND
                    // FAILED from now on.
                    Err(error) => tracing::error!(%error, "SANITIZE (IMMED) failed"),
                }
            });
        match started {
            Ok(_) => Ok(Vec::new()),
            // The closure (and with it `running`) is gone: the unit is not left busy.
            Err(error) => {
                tracing::error!(%error, "SANITIZE (IMMED): no thread to run it");
                Err(Check::new(
                    super::sense::key::HARDWARE_ERROR,
                    (0x44, 0x00), // INTERNAL TARGET FAILURE
                ))
            }
        }
    }
}

/// What a SANITIZE does to every block.
enum Work {
    /// Write this piece (whole blocks of the pattern) over the medium, piece by piece.
    Overwrite(Vec<u8>),
    /// Deallocate (or zero) the medium.
    Erase,
}

/// Runs `work` over the whole medium of `backend`, alone (the write gate held
/// exclusively), reporting progress to `running`.
fn sanitize_medium(
    backend: &dyn crate::backend::Backend,
    gate: &super::gate::WriteGate,
    work: &Work,
    running: &super::sanitizing::Running,
) -> std::io::Result<()> {
    let _alone = gate.exclusive();
    let size = backend.size_bytes();
    let mut at = 0;
    while at < size {
        let n = (size - at).min(SANITIZE_PIECE_BYTES);
        match work {
            Work::Overwrite(piece) => backend.write_at(at, &piece[..n as usize])?,
            Work::Erase => backend.unmap(at, n)?,
        }
        at += n;
        running.advance(at, size);
    }
    Ok(())
}

/// READ DEFECT DATA(10)/(12): empty primary and grown lists in the format asked for.
pub(super) fn read_defect_data(cdb: &[u8]) -> Result<Vec<u8>, Check> {
    if cdb[0] == op::READ_DEFECT_DATA_10 {
        let format = cdb[2] & 0x07;
        let allocation_length = usize::from(be16(cdb, 7));
        // PLISTV and GLISTV set: both lists are valid (and empty).
        let data = vec![0, 0x18 | format, 0, 0];
        Ok(truncate(data, allocation_length))
    } else {
        let format = cdb[1] & 0x07;
        let allocation_length = be32(cdb, 6) as usize;
        let data = vec![0, 0x18 | format, 0, 0, 0, 0, 0, 0];
        Ok(truncate(data, allocation_length))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::RamBackend;
    use crate::disk::sense::status;
    use crate::disk::{LuConfig, ScsiResult, ScsiTask, TargetPortInfo};

    fn run(lu: &LogicalUnit, cdb: &[u8], data_out: &[u8]) -> ScsiResult {
        let mut padded = [0u8; 16];
        padded[..cdb.len()].copy_from_slice(cdb);
        lu.execute(&ScsiTask {
            cdb: &padded,
            data_out,
            expected_data_in_len: 1 << 24,
            target_port: TargetPortInfo::default(),
            nexus: Default::default(),
        })
    }

    fn lu(read_only: bool) -> LogicalUnit {
        LogicalUnit::new(
            Box::new(RamBackend::new(4 << 20)),
            LuConfig {
                read_only,
                ..LuConfig::for_name("special")
            },
        )
    }

    fn read(lu: &LogicalUnit, lba: u8, blocks: u8) -> Vec<u8> {
        run(lu, &[0x28, 0, 0, 0, 0, lba, 0, 0, blocks, 0], &[]).data_in
    }

    #[test]
    fn write_atomic_writes_and_a_boundary_is_refused() {
        let lu = lu(false);
        let mut cdb = [0u8; 16];
        cdb[0] = op::WRITE_ATOMIC_16;
        cdb[9] = 3; // LBA 3
        cdb[13] = 2; // 2 blocks
        assert_eq!(run(&lu, &cdb, &[0x5a; 1024]).status, status::GOOD);
        assert!(read(&lu, 3, 2).iter().all(|&b| b == 0x5a));
        cdb[11] = 1; // ATOMIC BOUNDARY
        assert_eq!(run(&lu, &cdb, &[0x5a; 1024]).sense[12], 0x24);
    }

    #[test]
    fn sanitize_overwrites_with_the_pattern_or_erases_and_read_only_refuses() {
        let lu = lu(false);
        run(&lu, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0], &[0x11; 4096]);
        let mut parameters = vec![0x01, 0, 0, 2, 0xab, 0xcd];
        let cdb = [
            op::SANITIZE,
            0x01,
            0,
            0,
            0,
            0,
            0,
            0,
            parameters.len() as u8,
            0,
        ];
        assert_eq!(run(&lu, &cdb, &parameters).status, status::GOOD);
        assert!(read(&lu, 7, 1).chunks(2).all(|p| p == [0xab, 0xcd]));
        parameters[0] = 0; // OVERWRITE COUNT 0
        assert_eq!(run(&lu, &cdb, &parameters).sense[12], 0x26);
        assert_eq!(
            run(&lu, &[op::SANITIZE, 0x02, 0, 0, 0, 0, 0, 0, 0, 0], &[]).status,
            status::GOOD
        );
        assert!(
            read(&lu, 7, 1).iter().all(|&b| b == 0),
            "block erase reads zeros"
        );
        assert_eq!(
            run(&lu, &[op::SANITIZE, 0x03, 0, 0, 0, 0, 0, 0, 0, 0], &[]).sense[12],
            0x24
        );
        let protected = lu_read_only();
        let result = run(
            &protected,
            &[op::SANITIZE, 0x02, 0, 0, 0, 0, 0, 0, 0, 0],
            &[],
        );
        assert_eq!((result.sense[2], result.sense[12]), (0x07, 0x27));
        let result = run(&protected, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[0; 512]);
        assert_eq!((result.sense[2], result.sense[12]), (0x07, 0x27));
        let mode = run(&protected, &[0x1a, 0, 0x3f, 0, 255, 0], &[]).data_in;
        assert_eq!(mode[2] & 0x80, 0x80, "WP in MODE SENSE");
    }

    fn lu_read_only() -> LogicalUnit {
        lu(true)
    }

    #[test]
    fn defect_lists_are_empty_in_the_format_asked_for() {
        let lu = lu(false);
        let ten = run(
            &lu,
            &[op::READ_DEFECT_DATA_10, 0, 0x18 | 4, 0, 0, 0, 0, 0, 32, 0],
            &[],
        );
        assert_eq!(ten.data_in, vec![0, 0x18 | 4, 0, 0]);
        let twelve = run(
            &lu,
            &[
                op::READ_DEFECT_DATA_12,
                0x18 | 5,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                32,
                0,
                0,
            ],
            &[],
        );
        assert_eq!(twelve.data_in, vec![0, 0x18 | 5, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn commands_that_fsync_a_pool_or_move_the_whole_medium_go_to_the_blocking_pool() {
        use crate::backend::pool::engine::Engine;
        use crate::backend::pool::format::Layout;
        use crate::backend::pool::store::SimStore;
        use crate::backend::Pool;
        use crate::disk::Plan;
        use std::sync::Arc;

        let store = SimStore::new();
        Engine::format(&store, Layout::for_chunks(8), 1).unwrap();
        let pool = Arc::new(Pool::with_store(Box::new(store), "sim".into()).unwrap());
        let volume = pool.open_volume("v", Some(4 << 20)).unwrap();
        let lu = LogicalUnit::new(Box::new(volume), LuConfig::for_name("plan"));
        let plan = |cdb: &[u8], data: &[u8]| {
            let mut padded = [0u8; 16];
            padded[..cdb.len()].copy_from_slice(cdb);
            lu.plan(&ScsiTask {
                cdb: &padded,
                data_out: data,
                expected_data_in_len: 1 << 20,
                target_port: TargetPortInfo::default(),
                nexus: Default::default(),
            })
        };
        let block = [0u8; 512];
        assert!(matches!(
            plan(&[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]),
            Plan::Blocking
        ));
        assert!(matches!(
            plan(&[0x2a, 0x08, 0, 0, 0, 0, 0, 0, 1, 0], &block),
            Plan::Blocking
        ));
        assert!(matches!(
            plan(&[op::SANITIZE, 0x02, 0, 0, 0, 0, 0, 0, 0, 0], &[]),
            Plan::Blocking
        ));
        // An ordinary write and a read run at once, on the event loop.
        assert!(matches!(
            plan(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &block),
            Plan::Done(_)
        ));
        assert!(matches!(
            plan(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[]),
            Plan::Done(_)
        ));
    }

    /// While a paced SANITIZE runs on another thread, TEST UNIT READY and READ get NOT
    /// READY, SANITIZE IN PROGRESS with a growing progress indication, REQUEST SENSE
    /// answers GOOD with the same sense, INQUIRY passes; afterwards the unit is ready.
    #[test]
    fn a_running_sanitize_shows_its_progress_and_holds_off_medium_access() {
        let lu = std::sync::Arc::new(lu(false).with_sanitize_rate(Some(8 << 20)));
        let worker = {
            let lu = std::sync::Arc::clone(&lu);
            std::thread::spawn(move || {
                run(&lu, &[op::SANITIZE, 0x02, 0, 0, 0, 0, 0, 0, 0, 0], &[]).status
            })
        };
        let started = std::time::Instant::now();
        let mut progress = Vec::new();
        while !worker.is_finished() && started.elapsed() < std::time::Duration::from_secs(10) {
            let tur = run(&lu, &[0x00, 0, 0, 0, 0, 0], &[]);
            if tur.status == status::CHECK_CONDITION {
                assert_eq!(
                    (tur.sense[2], tur.sense[12], tur.sense[13]),
                    (0x02, 0x04, 0x1b)
                );
                assert_eq!(tur.sense[15], 0x80, "SKSV");
                progress.push(u16::from_be_bytes([tur.sense[16], tur.sense[17]]));
                let sense = run(&lu, &[op::REQUEST_SENSE, 0, 0, 0, 18, 0], &[]);
                assert_eq!(sense.status, status::GOOD);
                assert_eq!((sense.data_in[2], sense.data_in[12]), (0x02, 0x04));
                assert_eq!(run(&lu, &[0x12, 0, 0, 0, 36, 0], &[]).status, status::GOOD);
                assert_eq!(
                    run(&lu, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[]).sense[13],
                    0x1b
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(worker.join().unwrap(), status::GOOD);
        // 4 MiB at 8 MiB/s: about half a second, polled every 50 ms.
        assert!(progress.len() >= 2, "seen in progress: {progress:?}");
        assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
        assert_eq!(run(&lu, &[0x00, 0, 0, 0, 0, 0], &[]).status, status::GOOD);
    }

    /// SANITIZE with IMMED answers GOOD at once and goes on by itself: TEST UNIT READY
    /// reports NOT READY, SANITIZE IN PROGRESS with a progress that grows, REQUEST SENSE
    /// the same, a second SANITIZE is refused meanwhile; then the unit is ready and holds
    /// the pattern. IMMED with a bad parameter list is refused before anything starts.
    #[test]
    fn sanitize_with_immed_answers_at_once_and_reports_progress_until_done() {
        // 4 MiB at 4 MiB/s: about a second, so the first look after the answer finds
        // it running even on a loaded machine.
        let lu = lu(false).with_sanitize_rate(Some(4 << 20));
        let mut parameters = vec![0x01, 0, 0x02, 0x00];
        parameters.extend(std::iter::repeat_n(0xa5u8, 512));
        let overwrite_immed = [op::SANITIZE, 0x81, 0, 0, 0, 0, 0, 0x02, 0x04, 0];
        let bad = run(&lu, &overwrite_immed, &parameters[..100]);
        assert_eq!(bad.status, status::CHECK_CONDITION, "short parameter list");
        assert_eq!(run(&lu, &[0x00, 0, 0, 0, 0, 0], &[]).status, status::GOOD);

        let answer = run(&lu, &overwrite_immed, &parameters);
        assert_eq!(answer.status, status::GOOD, "{:?}", answer.sense);
        let tur = run(&lu, &[0x00, 0, 0, 0, 0, 0], &[]);
        assert_eq!(
            (tur.status, tur.sense[2], tur.sense[12], tur.sense[13]),
            (status::CHECK_CONDITION, 0x02, 0x04, 0x1b),
            "in progress after the answer"
        );
        let again = run(&lu, &[op::SANITIZE, 0x82, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
        assert_eq!((again.sense[2], again.sense[13]), (0x02, 0x1b));

        let started = std::time::Instant::now();
        let mut progress = Vec::new();
        loop {
            let tur = run(&lu, &[0x00, 0, 0, 0, 0, 0], &[]);
            if tur.status == status::GOOD {
                break;
            }
            assert_eq!((tur.sense[2], tur.sense[12]), (0x02, 0x04));
            progress.push(u16::from_be_bytes([tur.sense[16], tur.sense[17]]));
            let sense = run(&lu, &[op::REQUEST_SENSE, 0, 0, 0, 18, 0], &[]);
            assert_eq!(sense.status, status::GOOD);
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "the sanitize never ends: {progress:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
        assert!(read(&lu, 0, 1).iter().all(|&b| b == 0xa5));
        let last = run(&lu, &[0x28, 0, 0, 0, 0x1f, 0xff, 0, 0, 1, 0], &[]).data_in;
        assert!(last.iter().all(|&b| b == 0xa5), "the last block (8191) too");
        let sense = run(&lu, &[op::REQUEST_SENSE, 0, 0, 0, 18, 0], &[]);
        assert_eq!(sense.data_in[2] & 0x0f, 0, "no sense once done");
    }
}
