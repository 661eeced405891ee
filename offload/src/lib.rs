//! iSCSI offload adapters (HNICs) behind the interface `datapath` defines (DESIGN.md,
//! "offload"): software models of dependent and independent adapters, and discovery of
//! real offload adapters on Linux.
//!
//! - [`dependent::DependentModel`]: frames the host session's PDUs, computes and checks
//!   CRC32C digests when configured to offload them, carries TCP and places Data-In payload
//!   into the host buffer registered for the task tag.
//! - [`independent::IndependentModel`]: runs the whole initiator with `datapath`'s sans-IO
//!   `Session`, configured through its own interface, and completes SCSI commands.
//! - [`faults::Faults`]: fault hooks (drop an entry, stall a doorbell, corrupt a digest,
//!   reset the adapter), flipped by tests at run time.
//! - [`cpu::CpuMeter`]: the CPU time of a model's own threads.
//! - [`discovery`]: real adapters from `/sys/class/iscsi_host` and `/sys/class/iscsi_iface`.
//!
//! The models really move data to real targets. Each runs its engines on its own threads
//! and meets the host only through its queue pairs (`datapath::adapter::ring`); control
//! (connect, configure, reset) goes through the `datapath::adapter` traits.

pub mod cpu;
pub mod dependent;
pub mod discovery;
pub mod faults;
pub mod independent;
pub mod net;
mod slots;
mod wire;
