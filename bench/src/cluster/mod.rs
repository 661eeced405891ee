//! Load from many hosts at once (fio's client/server), merged exactly.
//!
//! - [`protocol`]: framing, messages, version ranges and the token handshake (no I/O);
//! - [`clock`]: each agent's clock against the controller's, the start skew (no I/O);
//! - [`launcher`]: rank and size from Slurm, MPI, PMI or a Kubernetes Indexed Job;
//! - [`cli`]: `--server`, `--client`, host files, `--launcher`, `merge`;
//! - [`aggregate`]: per-host reports merged, the common window, the time-aligned series;
//! - [`render`]: fio's "All clients" text and `client_stats` JSON;
//! - [`agent`] and [`controller`]: the two ends over TCP.
pub mod agent;
pub mod aggregate;
pub mod cli;
pub mod clock;
pub mod command;
pub mod conn;
pub mod controller;
pub mod launcher;
pub mod protocol;
pub mod render;
