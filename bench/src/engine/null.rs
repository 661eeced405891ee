//! The `null` engine: every I/O completes at once and successfully, and no byte moves
//! (fio's `null` engine, "for measuring the tool itself": its numbers are the cost of
//! workload generation, statistics and the runner's loop).
//!
//! Queued units complete at [`Engine::submit`]; read buffers come back as they went in.
//! The engine never enters the kernel and never copies.

use std::collections::VecDeque;
use std::time::Duration;

use super::{take_buffer, Engine, EngineCounters, EngineError};
use crate::io::{IoDone, IoUnit};

/// Set-up of a null engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NullOptions {
    /// The size the engine reports (fio's null engine has whatever size the job gives).
    pub size_bytes: u64,
    /// The block size it reports; 512 unless the job wants another.
    pub block_size_bytes: u32,
    /// Units held at once (the job's iodepth).
    pub iodepth: usize,
}

impl NullOptions {
    pub fn new(size_bytes: u64, iodepth: usize) -> NullOptions {
        NullOptions {
            size_bytes,
            block_size_bytes: 512,
            iodepth,
        }
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct NullEngine {
    options: NullOptions,
    queued: Vec<IoUnit>,
    done: VecDeque<IoUnit>,
    /// Buffers of finished I/Os, handed out again (an allocation and a zero fill per I/O
    /// cost more than the rest of a null I/O).
    buffers: Vec<Vec<u8>>,
    counters: EngineCounters,
}

impl NullEngine {
    pub fn open(options: &NullOptions) -> Result<NullEngine, EngineError> {
        if options.iodepth == 0 {
            return Err(EngineError::InvalidOption(
                "iodepth must be at least 1".into(),
            ));
        }
        if options.size_bytes == 0 {
            return Err(EngineError::InvalidOption(
                "the null engine needs a size greater than 0".into(),
            ));
        }
        if options.block_size_bytes == 0 {
            return Err(EngineError::InvalidOption(
                "block size must be at least 1 byte".into(),
            ));
        }
        Ok(NullEngine {
            options: options.clone(),
            queued: Vec::with_capacity(options.iodepth),
            done: VecDeque::with_capacity(options.iodepth),
            buffers: Vec::new(),
            counters: EngineCounters::default(),
        })
    }
}

impl Engine for NullEngine {
    fn name(&self) -> &'static str {
        "null"
    }

    fn size_bytes(&self) -> u64 {
        self.options.size_bytes
    }

    fn block_size_bytes(&self) -> u32 {
        self.options.block_size_bytes
    }

    fn queue_depth(&self) -> usize {
        self.options.iodepth
    }

    fn in_flight(&self) -> usize {
        self.queued.len() + self.done.len()
    }

    fn supports_flush(&self) -> bool {
        true
    }

    fn buffer(&mut self, len_bytes: u32) -> Vec<u8> {
        take_buffer(&mut self.buffers, len_bytes)
    }

    fn recycle(&mut self, buffer: Vec<u8>) {
        if self.buffers.len() < 2 * self.options.iodepth {
            self.buffers.push(buffer);
        }
    }

    fn queue(&mut self, unit: IoUnit) -> Result<(), IoUnit> {
        if self.in_flight() >= self.options.iodepth {
            return Err(unit);
        }
        self.queued.push(unit);
        Ok(())
    }

    fn submit(&mut self) -> Result<usize, EngineError> {
        let submitted = self.queued.len();
        self.counters.ios_submitted += submitted as u64;
        self.done.extend(self.queued.drain(..));
        Ok(submitted)
    }

    fn reap(
        &mut self,
        _min: usize,
        _timeout: Duration,
        out: &mut Vec<IoDone>,
    ) -> Result<usize, EngineError> {
        // Everything submitted is already complete: there is never anything to wait for.
        let reaped = self.done.len();
        out.extend(self.done.drain(..).map(|unit| IoDone {
            unit,
            result: Ok(()),
        }));
        self.counters.ios_completed += reaped as u64;
        Ok(reaped)
    }

    fn counters(&self) -> EngineCounters {
        self.counters
    }

    fn close(self: Box<Self>) -> Result<EngineCounters, EngineError> {
        Ok(self.counters)
    }
}
