//! The null backend: a size and nothing behind it. Reads return zeros, writes are
//! dropped. For measuring the target's protocol path without storage costs.

use std::io;

use super::{check_range, Backend};

/// Reads return zeros, writes are accepted and dropped.
#[derive(Debug, Clone)]
pub struct NullBackend {
    size_bytes: u64,
}

impl NullBackend {
    pub fn new(size_bytes: u64) -> NullBackend {
        NullBackend { size_bytes }
    }
}

impl Backend for NullBackend {
    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(self.size_bytes, offset, buf.len() as u64)?;
        buf.fill(0);
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        check_range(self.size_bytes, offset, data.len() as u64)
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn unmap(&self, offset: u64, len: u64) -> io::Result<()> {
        check_range(self.size_bytes, offset, len)
    }

    fn kind(&self) -> &'static str {
        "null"
    }

    /// Everything already reads as zeros, so unmapping is exact: thin, with LBPRZ.
    fn thin(&self) -> bool {
        true
    }
}
