//! One I/O as every part of the tool sees it: the workload makes an [`IoUnit`], an engine
//! carries it out and hands it back in an [`IoDone`], the statistics count it.

/// Which way the data goes. Trim carries no data (UNMAP on iSCSI, discard on a device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Read,
    Write,
    Trim,
}

impl Direction {
    /// fio's name for the direction in its reports ("read", "write", "trim").
    pub fn fio_name(self) -> &'static str {
        match self {
            Direction::Read => "read",
            Direction::Write => "write",
            Direction::Trim => "trim",
        }
    }
}

/// One I/O. The buffer travels with it by value: write data is sent from it, read data
/// lands in it, and it comes back in the completion. For a read its length is `len`; for a
/// trim it is empty.
#[derive(Clone, PartialEq, Eq)]
pub struct IoUnit {
    /// The caller's tag, unique among the I/Os in flight of one job.
    pub id: u64,
    pub direction: Direction,
    /// Byte offset in the target (file, device or LUN).
    pub offset: u64,
    /// Bytes moved.
    pub len: u32,
    pub buffer: Vec<u8>,
}

impl std::fmt::Debug for IoUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoUnit")
            .field("id", &self.id)
            .field("direction", &self.direction)
            .field("offset", &self.offset)
            .field("len", &self.len)
            .field("buffer_len", &self.buffer.len())
            .finish()
    }
}

/// Why one I/O failed, sorted so the report can count failures by kind.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IoError {
    /// CHECK CONDITION with sense data (SPC-4 4.5): key, ASC, ASCQ.
    #[error("CHECK CONDITION: sense key {key:#x}, ASC/ASCQ {asc:#04x}/{ascq:#04x}")]
    CheckCondition { key: u8, asc: u8, ascq: u8 },
    /// Any other SCSI status that is not GOOD (BUSY, RESERVATION CONFLICT, TASK SET FULL...).
    #[error("SCSI status {0:#04x}")]
    Status(u8),
    /// Fewer bytes moved than asked.
    #[error("short transfer: {done} of {wanted} bytes")]
    Short { wanted: u32, done: u32 },
    /// The per-I/O timeout ran out.
    #[error("no completion within {0:?}")]
    Timeout(std::time::Duration),
    /// The transport or session failed (connection lost, protocol error, local errno).
    #[error("{0}")]
    Transport(String),
}

/// A finished I/O: the unit (buffer handed back) and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoDone {
    pub unit: IoUnit,
    pub result: Result<(), IoError>,
}
