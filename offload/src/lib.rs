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
//! - [`model_path`]: a [`TransportKind`] as a shard path over a fresh model.
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

use std::sync::Arc;

use datapath::adapter::{DependentAdapter, IndependentAdapter};
use datapath::shard::ShardPath;
use datapath::transport::TransportKind;

/// The shard path `kind` names: software TCP, or a fresh software model of that adapter
/// kind with `queue_pairs` queue pairs (shard `i` takes pair `i`). The one place
/// `iscsi-bench`, `iscsi-ctl` and `iscsi-transports` turn a transport word into a path.
pub fn model_path(kind: TransportKind, queue_pairs: usize) -> ShardPath {
    match kind {
        TransportKind::Software => ShardPath::Software,
        TransportKind::Dependent => {
            let model: Arc<dyn DependentAdapter> =
                dependent::DependentModel::new(dependent::DependentModelConfig {
                    queue_pairs,
                    ..Default::default()
                });
            ShardPath::Dependent(model)
        }
        TransportKind::Independent => {
            let model: Arc<dyn IndependentAdapter> =
                independent::IndependentModel::new(independent::IndependentModelConfig {
                    queue_pairs,
                    ..Default::default()
                });
            ShardPath::Independent(model)
        }
    }
}
