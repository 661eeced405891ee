//! iSCSI offload adapters (HNICs) behind the interface `datapath` defines (DESIGN.md,
//! "offload"): software models of dependent and independent adapters, and discovery of
//! real offload adapters on Linux.
//!
//!   CRC32C digests when configured to offload them, carries TCP and places Data-In payload
//!   `Session`, configured through its own interface, and completes SCSI commands.
//!   into the host buffer registered for the task tag.
//!   reset the adapter), flipped by tests at run time.
//! (connect, configure, reset) goes through the `datapath::adapter` traits.
//! - [`cpu::CpuMeter`]: the CPU time of a model's own threads.
//! - [`dependent::DependentModel`]: frames the host session's PDUs, computes and checks
//! - [`faults::Faults`]: fault hooks (drop an entry, stall a doorbell, corrupt a digest,
//! - [`independent::IndependentModel`]: runs the whole initiator with `datapath`'s sans-IO
//! The models really move data to real targets. Each runs its engines on its own threads
//! and meets the host only through its queue pairs (`datapath::adapter::ring`); control
mod wire;
pub mod cpu;
pub mod dependent;
pub mod discovery;
pub mod faults;
pub mod independent;
pub mod net;
