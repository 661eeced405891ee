//! One shard of a pool as a [`ScsiExecute`], so the LUN probe
//! ([`crate::scsi::probe`]) runs on a shard as it runs on the blocking client.

use std::time::Duration;

use super::{ShardError, ShardPool, ShardRequest};
use crate::scsi::probe::{ScsiAnswer, ScsiExecute};
use crate::scsi::{Cdb, DataDirection as CdbDirection};
use crate::session::CommandFailure;

/// Commands on shard `shard` of `pool`, each waited for at most `timeout`
/// ([`ShardPool::execute`]).
#[derive(Clone, Copy)]
pub struct ShardExecutor<'a> {
    pub pool: &'a ShardPool,
    pub shard: usize,
    pub timeout: Duration,
}

impl<'a> ShardExecutor<'a> {
    pub fn new(pool: &'a ShardPool, shard: usize, timeout: Duration) -> Self {
        ShardExecutor {
            pool,
            shard,
            timeout,
        }
    }
}

/// A command a shard could not run: the shard failed it, or the command itself failed
/// (connection lost, timed out, refused by the session).
#[derive(Debug, thiserror::Error)]
pub enum ShardCommandError {
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error("{}", .0.error)]
    Command(CommandFailure),
}

impl ScsiExecute for ShardExecutor<'_> {
    type Error = ShardCommandError;

    fn execute_scsi(&mut self, lun: u64, cdb: &Cdb) -> Result<ScsiAnswer, ShardCommandError> {
        let direction = cdb.direction();
        let buffer = match direction {
            CdbDirection::Read(len) => vec![0; len as usize],
            _ => Vec::new(),
        };
        let request = ShardRequest {
            lun,
            cdb: cdb.as_bytes().to_vec(),
            direction: direction.into(),
            buffer,
            // Far from the small numbers callers give their own commands.
            user_data: u64::MAX - u64::from(cdb.opcode()),
        };
        let done = self.pool.execute(self.shard, request, self.timeout)?;
        let outcome = done.result.map_err(ShardCommandError::Command)?;
        Ok(ScsiAnswer::new(
            outcome.status,
            outcome.sense,
            outcome.buffer,
            outcome.transferred,
        ))
    }
}
