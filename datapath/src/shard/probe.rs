//! The LUN probe's I/O glue ([`crate::scsi::probe`]) for one shard of a pool and for an
//! inline shard, as [`ScsiExecute`] (the blocking client's is in `client`). Here, not in
//! `scsi`, which depends on neither.

use std::time::{Duration, Instant};

use super::{InlineShard, ShardError, ShardPool};
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

/// Commands on an inline shard, each waited for at most `timeout` (on the caller's
/// thread). For set-up, before the caller's own I/O: completions of other commands that
/// finish meanwhile are dropped.
pub struct InlineExecutor<'a> {
    pub shard: &'a mut InlineShard,
    pub timeout: Duration,
}

impl ScsiExecute for InlineExecutor<'_> {
    type Error = ShardCommandError;

    fn execute_scsi(&mut self, lun: u64, cdb: &Cdb) -> Result<ScsiAnswer, ShardCommandError> {
        // Far from the small numbers callers give their own commands.
        let user_data = u64::MAX - u64::from(cdb.opcode());
        let request = Request::new(lun, cdb.clone(), read_buffer(cdb), user_data);
        let index = self.shard.index();
        if self.shard.submit(Instant::now(), request).is_err() {
            return Err(ShardCommandError::Shard(ShardError::InvalidConfig(
                "the inline shard has no room for a set-up command",
            )));
        }
        let until = Instant::now() + self.timeout;
        let mut done = Vec::new();
        // Bounded by the clock.
        loop {
            self.shard.poll(&mut done)?;
            if let Some(at) = done.iter().position(|c| c.user_data == user_data) {
                let outcome = done
                    .swap_remove(at)
                    .result
                    .map_err(ShardCommandError::Command)?;
                return Ok(ScsiAnswer::new(
                    outcome.status,
                    outcome.sense,
                    outcome.buffer,
                    outcome.transferred,
                ));
            }
            let now = Instant::now();
            if now >= until {
                self.shard.abort(user_data);
                return Err(ShardCommandError::Shard(ShardError::TimedOut {
                    shard: index,
                    after: self.timeout,
                }));
            }
            self.shard.wait(until - now);
        }
    }
}
