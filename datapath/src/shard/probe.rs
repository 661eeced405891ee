//! The LUN probe's I/O glue ([`crate::scsi::probe`]) for one shard of a pool, as
//! [`ScsiExecute`] (the blocking client's is in `client`). Here, not in `scsi`, which
//! depends on neither.

use std::time::Duration;

use super::{ShardError, ShardPool};
use crate::adapter::PathFailure;
use crate::scsi::probe::{ScsiAnswer, ScsiExecute};
use crate::scsi::{Cdb, DataDirection as CdbDirection};
use crate::session::Request;

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
    Command(PathFailure),
}

fn read_buffer(cdb: &Cdb) -> Vec<u8> {
    match cdb.direction() {
        CdbDirection::Read(len) => vec![0; len as usize],
        _ => Vec::new(),
    }
}

impl ScsiExecute for ShardExecutor<'_> {
    type Error = ShardCommandError;

    fn execute_scsi(&mut self, lun: u64, cdb: &Cdb) -> Result<ScsiAnswer, ShardCommandError> {
        // The tag is far from the small numbers callers give their own commands.
        let user_data = u64::MAX - u64::from(cdb.opcode());
        let request = Request::new(lun, cdb.clone(), read_buffer(cdb), user_data);
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
