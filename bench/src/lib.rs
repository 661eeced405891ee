//! `iscsi-bench`: a fio-style load tool for iSCSI arrays (DESIGN.md, "bench").
//!
//! The parts, each in its own module:
//! - `io`: the unit of work every part shares (one I/O, its completion, its error kinds);
//! - `job`: fio job files and command-line options, parsed into typed job specs;
//! - `workload`: offsets, sizes, directions, pacing and verification headers;
//! - `engine`: where I/O goes (our iSCSI data path, io_uring on local files, null);
//! - `stats` and `output`: latency histograms, counters, fio's text and JSON reports;
//! - `run`: jobs, groups and their threads.

pub mod cluster;
pub mod copy_jobs;
pub mod copy_offload;
pub mod engine;
pub mod io;
pub mod job;
pub mod output;
pub mod page_alloc;
pub mod report;
pub mod run;
pub mod stats;
pub mod workload;
