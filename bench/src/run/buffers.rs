//! The write buffers of one job that does not verify: filled once and reused, as fio's
//! are (see [`crate::workload::content`] for what they hold and why).
//!
//! A buffer that came back from a write still holds its content, so it is kept here and
//! handed to the next write instead of going back to the engine, where a read could
//! overwrite it. Reads keep taking the engine's buffers. At most `iodepth` buffers are kept;
//! the rest go back to the engine. With `refill_buffers` (or compression or dedupe, which
//! need it) every write is filled afresh and nothing is kept.

use crate::engine::Engine;
use crate::workload::content::{scramble, ContentGenerator};

pub(crate) struct WriteBuffers {
    content: ContentGenerator,
    /// Buffers whose `len()` bytes hold filled content.
    filled: Vec<Vec<u8>>,
    kept_max: usize,
}

impl WriteBuffers {
    pub(crate) fn new(content: ContentGenerator, iodepth: usize) -> Self {
        WriteBuffers {
            content,
            filled: Vec::with_capacity(iodepth),
            kept_max: iodepth.max(1),
        }
    }

    /// The buffer of a write of `len` bytes at `offset`; `stamp` changes from write to write
    /// (the job's clock) and goes into the scramble.
    pub(crate) fn take(
        &mut self,
        engine: &mut dyn Engine,
        len: u32,
        offset: u64,
        stamp: u64,
    ) -> Vec<u8> {
        let len = len as usize;
        if self.content.refills() {
            let mut buffer = engine.buffer(len as u32);
            buffer.resize(len, 0);
            self.content.fill(&mut buffer);
            return buffer;
        }
        // An exact fit first (fixed block sizes always find one), then any that is long
        // enough, then one that only needs its tail filled.
        let index = self
            .filled
            .iter()
            .rposition(|b| b.len() == len)
            .or_else(|| self.filled.iter().rposition(|b| b.len() >= len))
            .or_else(|| self.filled.iter().rposition(|b| b.capacity() >= len));
        let mut buffer = match index {
            Some(i) => self.filled.swap_remove(i),
            None => {
                let mut buffer = engine.buffer(len as u32);
                buffer.clear();
                buffer
            }
        };
        let filled = buffer.len();
        if filled >= len {
            buffer.truncate(len);
        } else {
            buffer.resize(len, 0);
            self.content.fill_tail(&mut buffer, filled);
        }
        if self.content.scrambles() {
            scramble(&mut buffer, offset, stamp);
        }
        buffer
    }

    /// A buffer back from a write (or a write the engine did not take).
    pub(crate) fn give_back(&mut self, engine: &mut dyn Engine, buffer: Vec<u8>) {
        if self.content.refills() || buffer.is_empty() || self.filled.len() >= self.kept_max {
            engine.recycle(buffer);
        } else {
            self.filled.push(buffer);
        }
    }

    /// Hands every kept buffer back to the engine (before it closes).
    pub(crate) fn release(&mut self, engine: &mut dyn Engine) {
        for buffer in self.filled.drain(..) {
            engine.recycle(buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{NullEngine, NullOptions};
    use crate::io::BufferOptions;

    fn buffers(options: BufferOptions) -> (WriteBuffers, NullEngine) {
        let content = ContentGenerator::new(&options, 3).unwrap();
        let engine = NullEngine::open(&NullOptions::new(1 << 20, 4)).unwrap();
        (WriteBuffers::new(content, 4), engine)
    }

    #[test]
    fn a_reused_buffer_keeps_its_content_and_is_only_stamped() {
        let (mut buffers, mut engine) = buffers(BufferOptions {
            scramble_buffers: false,
            ..BufferOptions::default()
        });
        let first = buffers.take(&mut engine, 4096, 0, 1);
        assert!(first.iter().filter(|&&b| b == 0).count() < 64, "not random");
        let copy = first.clone();
        buffers.give_back(&mut engine, first);
        let again = buffers.take(&mut engine, 4096, 4096, 2);
        assert_eq!(again, copy, "refilled although refill_buffers is off");
        // A shorter write keeps the head; a longer one fills only the new tail.
        buffers.give_back(&mut engine, again);
        let short = buffers.take(&mut engine, 1024, 0, 3);
        assert_eq!(short[..], copy[..1024]);
        buffers.give_back(&mut engine, short);
        let long = buffers.take(&mut engine, 4096, 0, 4);
        assert_eq!(long[..1024], copy[..1024]);
        assert_ne!(long[1024..], copy[1024..], "the tail is filled anew");
        assert!(long[1024..].iter().filter(|&&b| b == 0).count() < 64);
    }

    #[test]
    fn refill_gives_new_content_each_write() {
        let (mut buffers, mut engine) = buffers(BufferOptions {
            refill_buffers: true,
            ..BufferOptions::default()
        });
        let first = buffers.take(&mut engine, 4096, 0, 1);
        let copy = first.clone();
        buffers.give_back(&mut engine, first);
        assert_ne!(buffers.take(&mut engine, 4096, 0, 1), copy);
    }
}
