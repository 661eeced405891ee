//! The LUN probe every caller runs before I/O: TEST UNIT READY until GOOD, taking the unit
//! attentions a new I_T nexus sees (SAM-5 5.14); READ CAPACITY(16) (SBC-3 5.16), or
//! READ CAPACITY(10) (SBC-3 5.15) when the device does not know the (16) form; then the Block
//! Limits VPD page (SBC-3 6.6.3), when asked for, which a device may lack.
//!
//! Sans-IO: [`LunProbe`] hands out one CDB at a time ([`LunProbe::cdb`]) and takes its
//! answer ([`LunProbe::answer`]) until it yields the [`LunFacts`]. A unit attention on any
//! of its commands is taken and the same command sent again, at most
//! [`ProbeConfig::unit_attention_retries`] times per command. [`probe_lun`] drives it over
//! anything that runs one command ([`ScsiExecute`]): the blocking client, one shard of a
//! pool, a test harness.

use super::sense::{key, status};
use super::{BlockLimits, Cdb, ReadCapacity10, ReadCapacity16, ScsiError, Sense};

/// What to probe, and how many unit attentions to take per command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeConfig {
    /// TEST UNIT READY first (until GOOD, past unit attentions). Without it the first
    /// command is the capacity's, its unit attentions taken all the same.
    pub ready: bool,
    /// Unit attentions taken per command before its answer counts as a refusal: a command
    /// is sent at most this many times plus one.
    pub unit_attention_retries: u32,
    /// READ CAPACITY(16), or (10).
    pub capacity: bool,
    /// INQUIRY of the Block Limits VPD page (after the capacity).
    pub block_limits: bool,
}

impl ProbeConfig {
    /// TEST UNIT READY past unit attentions, nothing more (a second session to a LUN
    /// already probed).
    pub const READY: ProbeConfig = ProbeConfig {
        ready: true,
        unit_attention_retries: 3,
        capacity: false,
        block_limits: false,
    };
    /// Ready, capacity and Block Limits.
    pub const FULL: ProbeConfig = ProbeConfig {
        ready: true,
        unit_attention_retries: 3,
        capacity: true,
        block_limits: true,
    };
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig::FULL
    }
}

/// The capacity as the device reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capacity {
    /// READ CAPACITY(16) parameter data.
    Long(ReadCapacity16),
    /// READ CAPACITY(10) parameter data (the device refused the (16) form).
    Short(ReadCapacity10),
}

impl Capacity {
    pub fn block_length_bytes(&self) -> u32 {
        match self {
            Capacity::Long(c) => c.block_length_bytes,
            Capacity::Short(c) => c.block_length_bytes,
        }
    }

    pub fn block_count(&self) -> u128 {
        match self {
            Capacity::Long(c) => c.block_count(),
            Capacity::Short(c) => u128::from(c.block_count()),
        }
    }

    pub fn capacity_bytes(&self) -> u128 {
        match self {
            Capacity::Long(c) => c.capacity_bytes(),
            Capacity::Short(c) => c.capacity_bytes(),
        }
    }

    /// The command that answered.
    pub fn command(&self) -> &'static str {
        match self {
            Capacity::Long(_) => READ_CAPACITY_16,
            Capacity::Short(_) => READ_CAPACITY_10,
        }
    }
}

/// What the probe learned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LunFacts {
    /// Unit attentions taken, over all commands.
    pub unit_attentions: u32,
    /// `None` when not asked for ([`ProbeConfig::capacity`]).
    pub capacity: Option<Capacity>,
    /// `None` when not asked for, refused, or undecodable: the device has no such page.
    pub block_limits: Option<BlockLimits>,
}

impl LunFacts {
    /// (size in bytes, logical block length), both non-zero; an error when the capacity
    /// was not probed, does not fit 64 bits, or is zero.
    pub fn size(&self) -> Result<(u64, u32), ProbeError> {
        let capacity = self.capacity.ok_or(ProbeError::NoCapacity)?;
        let bytes = capacity.capacity_bytes();
        let block = capacity.block_length_bytes();
        match u64::try_from(bytes) {
            Ok(size) if size > 0 && block > 0 => Ok((size, block)),
            _ => Err(ProbeError::UnusableCapacity { bytes, block }),
        }
    }

    /// Whether the device supports UNMAP (MAXIMUM UNMAP LBA COUNT above zero), if it has
    /// a Block Limits page.
    pub fn unmap_supported(&self) -> Option<bool> {
        self.block_limits
            .as_ref()
            .map(|limits| limits.max_unmap_lba_count > 0)
    }
}

/// Why a probe stopped.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// A command answered with a status other than GOOD (a unit attention after the
    /// retries are spent, NOT READY, a READ CAPACITY(10) refused as well...).
    #[error("{command}: {}", describe(*status, sense.as_ref()))]
    Refused {
        command: &'static str,
        status: u8,
        sense: Option<Sense>,
    },
    /// GOOD, with parameter data that cannot be decoded.
    #[error("{command}: {source}")]
    Decode {
        command: &'static str,
        #[source]
        source: ScsiError,
    },
    /// READ CAPACITY(10) says the device is too large for it, after (16) was refused.
    #[error("READ CAPACITY(10): the device is too large for it and READ CAPACITY(16) was refused")]
    TooLargeFor10,
    /// A capacity of zero bytes or blocks of zero bytes, or more than 64 bits of bytes.
    #[error("the LUN reports {bytes} bytes in blocks of {block} bytes")]
    UnusableCapacity { bytes: u128, block: u32 },
    /// [`LunFacts::size`] of a probe that did not read the capacity.
    #[error("the capacity was not probed")]
    NoCapacity,
}

impl ProbeError {
    /// The command that failed (READ CAPACITY for a capacity that cannot be used).
    pub fn command(&self) -> &'static str {
        match self {
            ProbeError::Refused { command, .. } | ProbeError::Decode { command, .. } => command,
            ProbeError::TooLargeFor10 => READ_CAPACITY_10,
            ProbeError::UnusableCapacity { .. } | ProbeError::NoCapacity => "READ CAPACITY",
        }
    }
}

/// `status 0x02 (CHECK CONDITION), UNIT ATTENTION: ...` or `status 0x08 (BUSY)`.
pub fn describe(status: u8, sense: Option<&Sense>) -> String {
    let name = super::status_name(status);
    match sense {
        Some(sense) => format!("status {status:#04x} ({name}), {sense}"),
        None => format!("status {status:#04x} ({name})"),
    }
}

const TEST_UNIT_READY: &str = "TEST UNIT READY";
const READ_CAPACITY_16: &str = "READ CAPACITY(16)";
const READ_CAPACITY_10: &str = "READ CAPACITY(10)";
const BLOCK_LIMITS: &str = "INQUIRY (Block Limits VPD)";
/// Allocation length of the Block Limits INQUIRY (the SBC-4 page is 64 bytes).
const BLOCK_LIMITS_LENGTH: u16 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Ready,
    Capacity16,
    Capacity10,
    BlockLimits,
    Done,
}

/// The probe's state: the command to send now and what is known so far.
#[derive(Debug, Clone)]
pub struct LunProbe {
    config: ProbeConfig,
    stage: Stage,
    cdb: Cdb,
    /// Unit attentions taken for the current command.
    attentions_here: u32,
    facts: LunFacts,
}

impl LunProbe {
    /// A probe at its first command. (A configuration that asks for nothing is done at
    /// once: its first answer, to TEST UNIT READY, yields the empty facts.)
    pub fn new(config: ProbeConfig) -> LunProbe {
        let mut probe = LunProbe {
            config,
            stage: Stage::Ready,
            cdb: Cdb::test_unit_ready(),
            attentions_here: 0,
            facts: LunFacts::default(),
        };
        if !config.ready {
            // Moves to the capacity (or the limits); never done here.
            let _ = probe.after_ready();
        }
        probe
    }

    /// The command to send now (the same one again after a unit attention).
    pub fn cdb(&self) -> &Cdb {
        &self.cdb
    }

    /// The name of the command [`Self::cdb`] is, for messages.
    pub fn command(&self) -> &'static str {
        match self.stage {
            Stage::Ready | Stage::Done => TEST_UNIT_READY,
            Stage::Capacity16 => READ_CAPACITY_16,
            Stage::Capacity10 => READ_CAPACITY_10,
            Stage::BlockLimits => BLOCK_LIMITS,
        }
    }

    /// Takes the answer to [`Self::cdb`]: its status, its sense data (bare, as
    /// `CommandOutcome::sense` holds it) and the data it read (`transferred` bytes). `Some`
    /// when the probe is done; then the probe is spent.
    pub fn answer(
        &mut self,
        status: u8,
        sense: Option<&[u8]>,
        data: &[u8],
    ) -> Result<Option<LunFacts>, ProbeError> {
        let sense = sense.and_then(|bytes| Sense::decode(bytes).ok());
        if status == status::CHECK_CONDITION
            && sense.as_ref().is_some_and(Sense::is_unit_attention)
            && self.attentions_here < self.config.unit_attention_retries
            && self.stage != Stage::Done
        {
            self.attentions_here += 1;
            self.facts.unit_attentions += 1;
            return Ok(None);
        }
        let good = status == status::GOOD;
        let refused = |command| ProbeError::Refused {
            command,
            status,
            sense: sense.clone(),
        };
        match self.stage {
            Stage::Ready if good => self.after_ready(),
            Stage::Capacity16 if good => {
                let c = ReadCapacity16::decode(data).map_err(|source| ProbeError::Decode {
                    command: READ_CAPACITY_16,
                    source,
                })?;
                self.facts.capacity = Some(Capacity::Long(c));
                self.after_capacity()
            }
            // Only a device that does not know SERVICE ACTION IN(16) / READ CAPACITY(16)
            // (INVALID COMMAND OPERATION CODE, INVALID FIELD IN CDB) gets the (10) form.
            Stage::Capacity16
                if status == status::CHECK_CONDITION
                    && sense.as_ref().is_some_and(|s| {
                        s.key == key::ILLEGAL_REQUEST && matches!(s.asc, 0x20 | 0x24)
                    }) =>
            {
                self.next(Stage::Capacity10, Cdb::read_capacity_10())
            }
            Stage::Capacity10 if good => {
                let c = ReadCapacity10::decode(data).map_err(|source| ProbeError::Decode {
                    command: READ_CAPACITY_10,
                    source,
                })?;
                if c.needs_read_capacity_16() {
                    return Err(ProbeError::TooLargeFor10);
                }
                self.facts.capacity = Some(Capacity::Short(c));
                self.after_capacity()
            }
            Stage::BlockLimits => {
                if good {
                    self.facts.block_limits = BlockLimits::decode(data).ok();
                }
                self.finish()
            }
            Stage::Done => Ok(Some(self.facts.clone())),
            _ => Err(refused(self.command())),
        }
    }

    fn next(&mut self, stage: Stage, cdb: Cdb) -> Result<Option<LunFacts>, ProbeError> {
        self.stage = stage;
        self.cdb = cdb;
        self.attentions_here = 0;
        Ok(None)
    }

    fn after_ready(&mut self) -> Result<Option<LunFacts>, ProbeError> {
        if self.config.capacity {
            let cdb = Cdb::read_capacity_16(super::cdb::READ_CAPACITY_16_LENGTH);
            self.next(Stage::Capacity16, cdb)
        } else {
            self.after_capacity()
        }
    }

    fn after_capacity(&mut self) -> Result<Option<LunFacts>, ProbeError> {
        if self.config.block_limits {
            let cdb = Cdb::inquiry_vpd(BlockLimits::PAGE_CODE, BLOCK_LIMITS_LENGTH);
            self.next(Stage::BlockLimits, cdb)
        } else {
            self.finish()
        }
    }

    fn finish(&mut self) -> Result<Option<LunFacts>, ProbeError> {
        self.stage = Stage::Done;
        Ok(Some(self.facts.clone()))
    }
}

/// One command's answer, as [`ScsiExecute`] returns it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScsiAnswer {
    pub status: u8,
    pub sense: Option<Vec<u8>>,
    /// The bytes read (the buffer cut to the bytes transferred).
    pub data: Vec<u8>,
}

impl ScsiAnswer {
    /// From a completed command's fields: `buffer` is cut to `transferred` bytes.
    pub fn new(status: u8, sense: Option<Vec<u8>>, mut buffer: Vec<u8>, transferred: u32) -> Self {
        buffer.truncate(transferred as usize);
        ScsiAnswer {
            status,
            sense,
            data: buffer,
        }
    }
}

/// Runs one SCSI command and waits for its answer: the blocking client, one shard of a
/// pool, a test path. The probe's only I/O.
pub trait ScsiExecute {
    type Error;
    /// Runs `cdb` on `lun` (data-in into a buffer of the CDB's allocation length).
    fn execute_scsi(&mut self, lun: u64, cdb: &Cdb) -> Result<ScsiAnswer, Self::Error>;
}

/// A probe that stopped: the command could not be run, or the device refused it.
#[derive(Debug, thiserror::Error)]
pub enum ProbeFailure<E> {
    #[error("{command}: {error}")]
    Execute { command: &'static str, error: E },
    #[error(transparent)]
    Scsi(#[from] ProbeError),
}

/// Runs a [`LunProbe`] on `lun` through `executor`.
pub fn probe_lun<X: ScsiExecute + ?Sized>(
    executor: &mut X,
    lun: u64,
    config: ProbeConfig,
) -> Result<LunFacts, ProbeFailure<X::Error>> {
    let mut probe = LunProbe::new(config);
    loop {
        let answer =
            executor
                .execute_scsi(lun, probe.cdb())
                .map_err(|error| ProbeFailure::Execute {
                    command: probe.command(),
                    error,
                })?;
        if let Some(facts) = probe.answer(answer.status, answer.sense.as_deref(), &answer.data)? {
            return Ok(facts);
        }
    }
}

#[cfg(test)]
mod tests;
