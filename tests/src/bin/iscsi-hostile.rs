//! `iscsi-hostile`: the attacks of issue 11 from the command line, for
//! `scripts/bench-hostile.sh` (the CI tests call the same library functions in-process).
//!
//! ```text
//! iscsi-hostile nop-flood   --portal 127.0.0.1:3260 [--target IQN] --ping-kib 256 --seconds 10
//! iscsi-hostile slow-reader --portal 127.0.0.1:3260 --target IQN --lun 0 --read-kib 1024 --seconds 10
//! iscsi-hostile idle-flood  --portal 127.0.0.1:3260 --source 127.0.0.2 --connections 10000 --seconds 30
//! iscsi-hostile slowloris   --portal 127.0.0.1:3260 --target IQN --connections 2000 --interval-ms 2000 --seconds 20
//! iscsi-hostile stuck-write --portal 127.0.0.1:3260 --target IQN --lun 1 --seconds 20
//! ```
//! Each prints one JSON line when its connections are open (`"event":"open"`, for the
//! slot attacks) and one with its report when it ends (`"event":"done"`). With
//! `--watch-pid PID --max-rss-mib N` the attack stops early once that process is resident
//! over N MiB (or gone), so a gateway without bounds cannot eat the machine.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use system_tests::hostile::{self, wire::ipv4_portal, AttackReport, MemoryWatch, Until};

#[derive(Debug, Parser)]
#[command(
    name = "iscsi-hostile",
    about = "Hostile iSCSI clients (bounded, for tests and benchmarks)"
)]
struct Cli {
    #[command(subcommand)]
    attack: Attack,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct Common {
    /// The gateway's portal (IPv4).
    #[arg(long, global = true, default_value = "127.0.0.1:3260")]
    portal: SocketAddr,
    /// Loopback source address the attack connects from.
    #[arg(long, global = true, default_value = "127.0.0.2")]
    source: Ipv4Addr,
    /// How long the attack runs.
    #[arg(long, global = true, default_value_t = 10)]
    seconds: u64,
    /// Process to watch (the gateway); the attack stops once it is over --max-rss-mib.
    #[arg(long, global = true, requires = "max_rss_mib")]
    watch_pid: Option<u32>,
    /// Resident-memory ceiling of the watched process, in MiB.
    #[arg(long, global = true)]
    max_rss_mib: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum Attack {
    /// NOP-Outs with ping data, never reading the echoes.
    NopFlood {
        /// Target to log in to; a discovery session when absent.
        #[arg(long)]
        target: Option<String>,
        #[arg(long, default_value_t = 256)]
        ping_kib: usize,
    },
    /// READs past MaxCmdSN, never reading Data-In.
    SlowReader {
        #[arg(long)]
        target: String,
        #[arg(long, default_value_t = 0)]
        lun: u64,
        #[arg(long, default_value_t = 1024)]
        read_kib: u32,
    },
    /// Connections that never send a byte.
    IdleFlood {
        #[arg(long, default_value_t = 3000)]
        connections: usize,
    },
    /// Connections trickling a Login Request one byte at a time.
    Slowloris {
        #[arg(long)]
        target: String,
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        #[arg(long, default_value_t = 2000)]
        interval_ms: u64,
    },
    /// One WRITE to a LUN whose backing store hangs; reports how the gateway answered.
    StuckWrite {
        #[arg(long)]
        target: String,
        #[arg(long)]
        lun: u64,
        #[arg(long, default_value_t = 4)]
        write_kib: u32,
    },
}

/// Block length of the gateway's LUNs (its default).
const BLOCK_BYTES: u32 = 512;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let common = &cli.common;
    let portal = match ipv4_portal(common.portal) {
        Ok(portal) => portal,
        Err(e) => {
            eprintln!("iscsi-hostile: {e}");
            return ExitCode::FAILURE;
        }
    };
    let until = Until::after(Duration::from_secs(common.seconds));
    let watch = common.watch_pid.zip(common.max_rss_mib).map(|(pid, mib)| {
        MemoryWatch::start(
            pid,
            mib * 1024,
            until.stop_flag(),
            Duration::from_secs(common.seconds + 5),
        )
    });
    let mut announce_open = |report: &AttackReport| {
        let mut line = report.to_json();
        line["event"] = "open".into();
        println!("{line}");
    };
    let report = match &cli.attack {
        Attack::NopFlood { target, ping_kib } => hostile::nop_flood(
            &hostile::NopFlood {
                portal,
                source: common.source,
                target: target.clone(),
                ping_bytes: ping_kib * 1024,
            },
            &until,
        ),
        Attack::SlowReader {
            target,
            lun,
            read_kib,
        } => hostile::slow_reader(
            &hostile::SlowReader {
                portal,
                source: common.source,
                target: target.clone(),
                lun: *lun,
                read_bytes: read_kib * 1024,
                block_bytes: BLOCK_BYTES,
            },
            &until,
        ),
        Attack::IdleFlood { connections } => hostile::idle_flood(
            &hostile::IdleFlood {
                portal,
                source: common.source,
                connections: *connections,
            },
            &until,
            &mut announce_open,
        ),
        Attack::Slowloris {
            target,
            connections,
            interval_ms,
        } => hostile::login_slowloris(
            &hostile::Slowloris {
                portal,
                source: common.source,
                connections: *connections,
                target: target.clone(),
                byte_interval: Duration::from_millis(*interval_ms),
            },
            &until,
            &mut announce_open,
        ),
        Attack::StuckWrite {
            target,
            lun,
            write_kib,
        } => hostile::stuck_write(
            &hostile::StuckWrite {
                portal,
                target: target.clone(),
                lun: *lun,
                write_bytes: write_kib * 1024,
                block_bytes: BLOCK_BYTES,
            },
            &until,
        ),
    };
    let mut line = report.to_json();
    line["event"] = "done".into();
    if let Some(watch) = watch {
        let seen = watch.finish();
        line["watched_max_rss_kib"] = seen.max_rss_kib.into();
        line["watched_over_ceiling"] = seen.over_ceiling.into();
        line["watched_process_gone"] = seen.process_gone.into();
    }
    println!("{line}");
    ExitCode::SUCCESS
}
