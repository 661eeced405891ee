//! iSCSI offload adapters (HNICs) behind the interface `datapath` defines (DESIGN.md,
//! "offload"): software models of dependent and independent adapters, and discovery of
//! real offload adapters on Linux.

pub mod discovery;
