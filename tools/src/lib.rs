//! The parts of the `tools` binaries that more than one of them uses.

pub mod args;
pub mod perf;
