//! `iscsi-ctl`: the admin tool. Discovery, login checks, LUN, INQUIRY and capacity
//! inspection, and block reads and writes, against any iSCSI target, over software TCP or
//! an offload adapter model (`--transport`); and the offload adapters it can drive.
//! Reservations (`reserve`, `release`, `pr`) and resets (`reset`) run on a session whose
//! ISID is stable per initiator name (`nexus`).

mod adapters;
mod arbitrate;
mod commands;
mod config;
mod gateway_array;
mod gateway_ctl;
mod gateway_migrate;
mod gateway_pool;
mod nexus;
mod render;
mod reservations;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "iscsi-ctl",
    version,
    about = "iSCSI admin tool (io_uring initiator)"
)]
struct Cli {
    #[command(flatten)]
    options: config::ConnectOptions,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Log to stderr: -v the login outcome and negotiated parameters, -vv every login
    /// request and response with its keys, -vvv everything. RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the targets a portal offers (SendTargets discovery).
    Discover {
        /// HOST[:PORT] or iscsi://HOST[:PORT]
        portal: String,
    },
    /// Log in to a target and print the negotiated parameters.
    Login { url: String },
    /// List the LUNs of a target (REPORT LUNS).
    Luns {
        url: String,
        /// SELECT REPORT (0x00 all but well-known LUs, 0x02 all with subsidiaries, 0x10
        /// endpoints, 0x11 endpoints and plain LUs, 0x12 sent to the URL's endpoint LUN:
        /// it and the volumes bound through it). Two-level LUNs are shown ENDPOINT:ID.
        #[arg(long, value_parser = parse_number::<u8>, default_value = "0")]
        select_report: u8,
        /// List the LUNs only (no INQUIRY or READ CAPACITY of each).
        #[arg(long)]
        no_inquiry: bool,
    },
    /// Show standard INQUIRY data, or a VPD page.
    Inquiry {
        url: String,
        /// VPD page code (0x00, 0x80, 0x83, 0xb0, or decimal).
        #[arg(long, value_parser = parse_number::<u8>)]
        vpd: Option<u8>,
    },
    /// List the paths to a LU: every portal SendTargets lists for the target, plus those
    /// given with --path, each logged in to; up or down, and whether it reaches the same
    /// LU (INQUIRY VPD 0x83) as the first that answered.
    Paths {
        url: String,
        /// Another portal to check (HOST[:PORT]); repeatable.
        #[arg(long = "path", id = "extra_path")]
        paths: Vec<String>,
    },
    /// Show the capacity (READ CAPACITY 16, falling back to 10).
    Readcap { url: String },
    /// Read blocks.
    Read(ReadArgs),
    /// Write blocks from a file, then make them durable (SYNCHRONIZE CACHE by default).
    Write(WriteArgs),
    /// Copy blocks within a LUN with EXTENDED COPY (the target moves the data), or
    /// through this host with --through-host; then SYNCHRONIZE CACHE. Prints the time.
    Copy(CopyArgs),
    /// SCSI-2 RESERVE(6) (or (10) with --ten) of the URL's LUN. The reservation ends with
    /// the session: keep it with --hold.
    Reserve(reservations::ReserveArgs),
    /// SCSI-2 RELEASE(6) (or (10) with --ten).
    Release(reservations::ReserveArgs),
    /// Task management: LOGICAL UNIT RESET (--lun), TARGET WARM RESET (--target-warm),
    /// TARGET COLD RESET (--target-cold), ABORT TASK SET, CLEAR TASK SET.
    Reset(reservations::ResetArgs),
    /// Persistent reservations (PERSISTENT RESERVE IN/OUT), with sg_persist's options.
    /// Exits 24 on RESERVATION CONFLICT.
    Pr(Box<reservations::PrArgs>),
    /// Cluster disk arbiter: own the LU with a renewed SCSI-2 reservation (--mode scsi2) or
    /// a Write Exclusive, Registrants Only persistent reservation with a key heartbeat (--mode
    /// pr), take it over from an owner that stops renewing. Prints every state change;
    /// exits 3 when the disk is lost.
    Arbitrate(Box<arbitrate::ArbitrateArgs>),
    /// List offload adapters: the software models (kind, queue pairs, capabilities, the
    /// shard and core each queue pair is pinned to) and the real ones in sysfs.
    Adapters(AdaptersArgs),
    /// Drive a running iscsi-gateway through its control socket: targets, LUNs, ACLs,
    /// CHAP, sessions, portals (`iscsi-gateway --control-socket PATH`).
    Gateway(gateway_ctl::GatewayArgs),
}

#[derive(Args, Debug)]
struct AdaptersArgs {
    /// Shards (one queue pair each) to plan for; default: the cores this process may use.
    #[arg(long)]
    shards: Option<usize>,
    /// The core shard 0 pins to; shard i pins to the (core + i)-th usable core.
    #[arg(long, default_value_t = 0)]
    core: usize,
    /// Read real adapters from this sysfs tree instead of /sys.
    #[arg(long, default_value = offload::discovery::SYSFS_ROOT)]
    sysfs_root: std::path::PathBuf,
}

#[derive(Args, Debug)]
struct ReadArgs {
    url: String,
    #[arg(long, value_parser = parse_number::<u64>)]
    lba: u64,
    #[arg(long, value_parser = parse_number::<u32>)]
    blocks: u32,
    /// Write the data to this file, or raw to stdout with `-` (default: a hex dump).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
struct CopyArgs {
    url: String,
    #[arg(long, value_parser = parse_number::<u64>)]
    source_lba: u64,
    #[arg(long, value_parser = parse_number::<u64>)]
    dest_lba: u64,
    #[arg(long, value_parser = parse_number::<u64>)]
    blocks: u64,
    /// Read the blocks and write them back from this host instead of EXTENDED COPY.
    #[arg(long)]
    through_host: bool,
}

#[derive(Args, Debug)]
struct WriteArgs {
    url: String,
    #[arg(long, value_parser = parse_number::<u64>)]
    lba: u64,
    /// The data (`-` for stdin); its length must be a whole number of blocks.
    #[arg(long = "in")]
    input: std::path::PathBuf,
    /// Set FUA on every WRITE (each is on the medium before it completes) instead of one
    /// SYNCHRONIZE CACHE after the last write.
    #[arg(long, conflicts_with = "no_sync")]
    fua: bool,
    /// Send neither FUA nor SYNCHRONIZE CACHE: the data may sit in the target's volatile
    /// write cache when the command returns, and a power cut loses it. Default: one
    /// SYNCHRONIZE CACHE of the range written after the last WRITE.
    #[arg(long)]
    no_sync: bool,
}

impl WriteArgs {
    fn durability(&self) -> commands::Durability {
        match (self.fua, self.no_sync) {
            (true, _) => commands::Durability::ForceUnitAccess,
            (false, true) => commands::Durability::None,
            (false, false) => commands::Durability::SynchronizeCache,
        }
    }
}

/// Accepts decimal or 0x-prefixed hex.
fn parse_number<T: TryFrom<u64>>(text: &str) -> Result<T, String> {
    let value = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse::<u64>(),
    }
    .map_err(|_| format!("'{text}' is not a number"))?;
    T::try_from(value).map_err(|_| format!("'{text}' is out of range"))
}

fn main() {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: in a log file or a journal they are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let out = render::Output { json: cli.json };
    let result = match &cli.command {
        Command::Discover { portal } => commands::discover(&cli.options, portal, &out),
        Command::Login { url } => commands::login(&cli.options, url, &out),
        Command::Luns {
            url,
            select_report,
            no_inquiry,
        } => commands::luns(&cli.options, url, *select_report, !*no_inquiry, &out),
        Command::Inquiry { url, vpd } => commands::inquiry(&cli.options, url, *vpd, &out),
        Command::Readcap { url } => commands::readcap(&cli.options, url, &out),
        Command::Paths { url, paths } => commands::paths(&cli.options, url, paths, &out),
        Command::Read(a) => commands::read(
            &cli.options,
            &a.url,
            a.lba,
            a.blocks,
            a.out.as_deref(),
            &out,
        ),
        Command::Write(a) => {
            commands::write(&cli.options, &a.url, a.lba, &a.input, a.durability(), &out)
        }
        Command::Copy(a) => commands::copy(
            &cli.options,
            &a.url,
            a.source_lba,
            a.dest_lba,
            a.blocks,
            a.through_host,
            &out,
        ),
        Command::Adapters(a) => adapters::adapters(a.shards, a.core, &a.sysfs_root, &out),
        Command::Gateway(a) => gateway_ctl::run(a, &out),
        Command::Reserve(a) => reservations::reserve(&cli.options, a, false, &out),
        Command::Release(a) => reservations::reserve(&cli.options, a, true, &out),
        Command::Reset(a) => reservations::reset(&cli.options, a, &out),
        Command::Pr(a) => reservations::pr(&cli.options, a, &out),
        Command::Arbitrate(a) => match arbitrate::arbitrate(&cli.options, a, cli.json) {
            Ok(true) => std::process::exit(arbitrate::EXIT_LOST),
            Ok(false) => Ok(()),
            Err(error) => Err(error),
        },
    };
    if let Err(error) = result {
        if cli.json {
            println!("{}", serde_json::json!({ "error": error.to_string() }));
        }
        eprintln!("iscsi-ctl: error: {error}");
        std::process::exit(if reservations::is_conflict(&error) {
            24
        } else {
            1
        });
    }
}
