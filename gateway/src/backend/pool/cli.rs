//! `iscsi-gateway pool ...`: create and check pools and manage their volumes from the
//! command line, through the same library calls the control plane makes.
//!
//! ```text
//! iscsi-gateway pool create /srv/pool.img 100G
//! iscsi-gateway pool volume-create /srv/pool.img vm1 1T
//! iscsi-gateway pool clone /srv/pool.img vm1 vm1-snap
//! iscsi-gateway pool list /srv/pool.img
//! iscsi-gateway pool check /srv/pool.img
//! ```
//! A pool a running gateway has open is locked: these commands then refuse to touch it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};

use super::{Pool, PoolError};
use crate::backend::parse_size;

#[derive(Debug, Parser)]
#[command(name = "iscsi-gateway pool", about = "Manage a thin volume pool")]
struct PoolArgs {
    #[command(subcommand)]
    command: PoolCommand,
}

#[derive(Debug, Subcommand)]
enum PoolCommand {
    /// Create a pool of SIZE bytes (metadata included) on a new file.
    Create { path: PathBuf, size: String },
    /// Verify the map, the reference counts and the free space; exit 1 on a problem.
    Check { path: PathBuf },
    /// List the volumes with their size and allocation.
    List { path: PathBuf },
    /// Create a thin volume (with --count N: NAME-0 ... NAME-(N-1)).
    VolumeCreate {
        path: PathBuf,
        name: String,
        size: String,
        #[arg(long)]
        count: Option<u32>,
    },
    /// Grow a volume to SIZE.
    Grow {
        path: PathBuf,
        name: String,
        size: String,
    },
    /// A new volume sharing every chunk of SOURCE (copy on write).
    Clone {
        path: PathBuf,
        source: String,
        name: String,
    },
    /// Delete a volume (its chunks return to the pool).
    Delete { path: PathBuf, name: String },
}

/// Runs `iscsi-gateway pool <args>` (`args` starts with the program name).
pub fn run(args: impl IntoIterator<Item = String>) -> ExitCode {
    let args = match PoolArgs::try_parse_from(args) {
        Ok(args) => args,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match execute(args.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("iscsi-gateway pool: {error}");
            ExitCode::FAILURE
        }
    }
}

fn size(text: &str) -> Result<u64, PoolError> {
    parse_size(text).map_err(|_| PoolError::BadSize(0))
}

fn execute(command: PoolCommand) -> Result<ExitCode, PoolError> {
    match command {
        PoolCommand::Create { path, size: text } => {
            let pool = Pool::create(&path, size(&text)?)?;
            let report = pool.check();
            println!(
                "created {}: {} chunks of 1 MiB ({} bytes of data)",
                path.display(),
                report.total_chunks,
                report.total_chunks << 20
            );
        }
        PoolCommand::Check { path } => {
            let pool = Pool::open(&path)?;
            let report = pool.check();
            let per_entry = match report.mapped_entries {
                0 => String::new(),
                entries => format!(
                    " ({:.1} bytes per map entry)",
                    report.metadata_bytes as f64 / entries as f64
                ),
            };
            println!(
                "{}: {} volumes, {} map entries, {} chunks used, {} free of {}, \
                 metadata {} bytes{per_entry}",
                path.display(),
                report.volumes,
                report.mapped_entries,
                report.used_chunks,
                report.free_chunks,
                report.total_chunks,
                report.metadata_bytes,
            );
            for problem in &report.problems {
                println!("problem: {problem}");
            }
            if !report.problems.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        PoolCommand::List { path } => {
            let pool = Pool::open(&path)?;
            println!(
                "{:<24} {:>16} {:>16} {:>10}",
                "NAME", "SIZE", "ALLOCATED", "CHUNKS"
            );
            for v in pool.list_volumes() {
                println!(
                    "{:<24} {:>16} {:>16} {:>10}",
                    v.name, v.size_bytes, v.allocated_bytes, v.chunks
                );
            }
        }
        PoolCommand::VolumeCreate {
            path,
            name,
            size: text,
            count,
        } => {
            let pool = Pool::open(&path)?;
            let bytes = size(&text)?;
            match count {
                None => pool.create_volume(&name, bytes)?,
                Some(count) => {
                    let started = Instant::now();
                    for i in 0..count {
                        pool.create_volume(&format!("{name}-{i}"), bytes)?;
                    }
                    println!(
                        "created {count} volumes in {:.3} s (each committed before the next)",
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        }
        PoolCommand::Grow {
            path,
            name,
            size: text,
        } => {
            Pool::open(&path)?.grow_volume(&name, size(&text)?)?;
        }
        PoolCommand::Clone { path, source, name } => {
            let started = Instant::now();
            let pool = Pool::open(&path)?;
            let opened = started.elapsed();
            pool.clone_volume(&source, &name)?;
            println!(
                "cloned {source} to {name} in {:.3} s (committed; opening the pool took {:.3} s)",
                (started.elapsed() - opened).as_secs_f64(),
                opened.as_secs_f64()
            );
        }
        PoolCommand::Delete { path, name } => {
            Pool::open(&path)?.delete_volume(&name)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
