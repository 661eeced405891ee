//! `iscsi-gateway`: run an iSCSI target from the command line.
//!
//! ```text
//! iscsi-gateway --portal 127.0.0.1:3260 --iqn iqn.2026-11.io.iscsi-uring:target \
//!     --lun ram:1G --lun null:100G --lun file:/path
//! ```
//! LUNs are numbered from 0 in the order given. Several targets, CHAP per target and the
//! rest: `iscsi-gateway --config FILE` (TOML, see `gateway/iscsi-gateway.example.toml`).
//! `--control-socket PATH` turns on the live control plane (`iscsi-ctl gateway`), and
//! `--state-dir DIR` keeps its changes across restarts.
//! Pools of thin volumes: `iscsi-gateway pool create|check|list|volume-create|grow|clone|
//! delete ...`, exported with `--lun pool:PATH,volume=NAME[,size=SIZE]`.
//! SIGINT or SIGTERM shuts down cleanly; SIGHUP (a closed terminal, a log rotation) is
//! logged and ignored: there is nothing to reload, and dying of it lost every session.

use std::net::SocketAddr;
use std::process::ExitCode;

use std::sync::Arc;

use clap::Parser;
use gateway::config::ControlSettings;
use gateway::control;
use gateway::server::{self, TargetConfig, TargetNodeConfig};
use gateway::session::ChapCredentials;

#[derive(Debug, Parser)]
#[command(name = "iscsi-gateway", version, about = "An iSCSI target on io_uring")]
struct Args {
    /// TOML configuration file (portals, targets, LUNs, CHAP, ACLs); replaces every other
    /// option except --threads.
    #[arg(long, value_name = "FILE", conflicts_with_all = [
        "control_socket", "state_dir", "control_priority",
        "portals", "iqn", "luns", "chap_user", "chap_secret", "chap_secret_file", "mutual_user",
        "mutual_secret", "mutual_secret_file", "allowed_initiators", "queue_depth",
        "portal_group_tag", "virtual_portal", "portal_weights", "alua", "portal_links",
    ])]
    config: Option<std::path::PathBuf>,
    /// Address to listen on (repeatable).
    #[arg(long = "portal", default_value = "127.0.0.1:3260")]
    portals: Vec<SocketAddr>,
    /// TargetPortalGroupTag of this gateway's portals; also its relative target port
    /// identifier and ALUA target port group (two gateways exporting one `shared` file
    /// are two ports of one LU when their tags differ).
    #[arg(long, value_name = "TAG", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    portal_group_tag: u16,
    /// The array's virtual portal: normal logins there are redirected to the real portal
    /// (--portal) with the fewest sessions per weight; SendTargets lists only it.
    #[arg(long, value_name = "ADDR")]
    virtual_portal: Option<SocketAddr>,
    /// How the virtual portal answers: temporary (0x0101), permanent (0x0102) or accept
    /// (carry sessions itself).
    #[arg(
        long,
        value_name = "KIND",
        default_value = "temporary",
        requires = "virtual_portal"
    )]
    redirect: gateway::portal::RedirectKind,
    /// ADDR=WEIGHT: a real portal's share of the sessions (default 1; 0 takes none).
    #[arg(long = "portal-weight", value_name = "ADDR=WEIGHT", value_parser = gateway::portal::parse_weight)]
    portal_weights: Vec<(SocketAddr, u32)>,
    /// ADDR=IFACE: the interface carrying a real portal's address. When it goes down the
    /// address moves to a live portal's interface (ip(8)), is announced with gratuitous
    /// ARP and the sessions of the lost port are reset (port takeover); repeatable.
    #[arg(long = "portal-interface", value_name = "ADDR=IFACE", value_parser = gateway::portal::takeover::parse_portal_link)]
    portal_links: Vec<gateway::portal::takeover::PortalLink>,
    /// GROUP=STATE: an ALUA target port group's state (active/optimized,
    /// active/non-optimized, standby, unavailable, transitioning); repeatable. The own
    /// group (--portal-group-tag) is active/optimized unless given.
    #[arg(long = "alua", value_name = "GROUP=STATE", value_parser = gateway::portal::parse_alua)]
    alua: Vec<(u16, datapath::scsi::alua::AccessState)>,
    /// Target name.
    #[arg(long, default_value = "iqn.2026-11.io.iscsi-uring:target")]
    iqn: String,
    /// LUN backend: ram:SIZE, null:SIZE, file:PATH, file:PATH:SIZE or
    /// pool:PATH,volume=NAME[,size=SIZE] (see `iscsi-gateway pool --help`), then options:
    /// ,serial=TEXT ,naa=HEX16 (the identity hosts see; file LUNs keep a generated one in
    /// PATH.identity, RAM and null LUNs get a new one per start), ,grow (grow a shorter
    /// existing file to SIZE), ,shared (export a file another gateway exports too),
    /// ,buffered (a file LUN through the page cache, never O_DIRECT; SYNCHRONIZE CACHE
    /// makes it durable, as for pool volumes), ,readonly (write protected).
    /// Repeatable; LUN numbers from 0 in order.
    #[arg(long = "lun", required_unless_present_any = ["config", "control_socket"])]
    luns: Vec<String>,
    /// Serve the live control plane (JSON-RPC 2.0, `iscsi-ctl gateway`) on this Unix
    /// socket, created mode 0600. With it, --lun is optional: targets can come later.
    #[arg(long, value_name = "PATH")]
    control_socket: Option<std::path::PathBuf>,
    /// Keep the control plane's configuration in this directory, written and synced
    /// before each change is acknowledged. Once it holds a state, that state is the
    /// configuration at start (--iqn/--lun are then not used).
    #[arg(long, value_name = "DIR", requires = "control_socket")]
    state_dir: Option<std::path::PathBuf>,
    /// How the control plane's threads are scheduled beside the event loops: normal,
    /// nice:N (1-19), batch[:N] (SCHED_BATCH, nice N) or idle (SCHED_IDLE: only CPU time
    /// the loops leave). Default: normal.
    #[arg(long, value_name = "CLASS", requires = "control_socket")]
    control_priority: Option<gateway::control::priority::ControlPriority>,
    /// CHAP user the initiator must log in as; its secret comes from --chap-secret-file,
    /// $ISCSI_GATEWAY_CHAP_SECRET or --chap-secret.
    #[arg(long)]
    chap_user: Option<String>,
    /// CHAP secret of that user, at least 12 bytes. `ps` shows it to every user: prefer
    /// --chap-secret-file or $ISCSI_GATEWAY_CHAP_SECRET.
    #[arg(long, requires = "chap_user", conflicts_with = "chap_secret_file")]
    chap_secret: Option<String>,
    /// Read the CHAP secret from this file (one line).
    #[arg(long, value_name = "FILE", requires = "chap_user")]
    chap_secret_file: Option<std::path::PathBuf>,
    /// Our user name for mutual CHAP; its secret comes from --mutual-secret-file,
    /// $ISCSI_GATEWAY_MUTUAL_SECRET or --mutual-secret.
    #[arg(long, requires = "chap_user")]
    mutual_user: Option<String>,
    /// Our secret for mutual CHAP (prefer --mutual-secret-file or the environment).
    #[arg(long, requires = "mutual_user", conflicts_with = "mutual_secret_file")]
    mutual_secret: Option<String>,
    /// Read our mutual CHAP secret from this file (one line).
    #[arg(long, value_name = "FILE", requires = "mutual_user")]
    mutual_secret_file: Option<std::path::PathBuf>,
    /// Initiator allowed to log in (repeatable; all when not given).
    #[arg(long = "allow-initiator")]
    allowed_initiators: Vec<String>,
    /// Commands in flight per session (MaxCmdSN window).
    #[arg(long, default_value_t = 128)]
    queue_depth: u32,
    /// Event loop threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Seconds a backend may take on a command before the gateway answers it with
    /// ABORTED COMMAND (COMMAND TIMEOUT DURING PROCESSING), so a hung file system stalls
    /// only its own LUN.
    #[arg(long, value_name = "SECONDS", default_value_t = 15.0)]
    backend_timeout: f64,
    /// KiB of output a connection may owe (responses, read data) before it stops reading
    /// from its initiator.
    #[arg(long, value_name = "KIB", default_value_t = 512)]
    max_output_kib: usize,
    /// Seconds of silence from an initiator before the gateway pings it (NOP-In). With
    /// --nop-timeout it bounds how long a lost connection, and a SCSI-2 reservation that
    /// ends with it, lingers: 1 and 1 notice a dead host within 2 s, inside a cluster's 3 s
    /// reservation renewal.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    nop_interval: f64,
    /// Seconds to wait for the answer to a NOP-In ping before the connection is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    nop_timeout: f64,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: in a log file or a journal they are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if std::env::args().nth(1).as_deref() == Some("pool") {
        return gateway::backend::pool::cli::run(std::env::args().skip(1));
    }
    let args = Args::parse();

    let (config, control_settings) = match &args.config {
        Some(path) => match gateway::config::load_gateway_config(path) {
            Ok((mut config, control)) => {
                if args.threads.is_some() {
                    config.threads = args.threads;
                }
                (config, control)
            }
            Err(e) => {
                eprintln!("iscsi-gateway: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => match config_from_args(args) {
            Ok(both) => both,
            Err(e) => {
                eprintln!("iscsi-gateway: {e}");
                return ExitCode::FAILURE;
            }
        },
    };

    // Block the stop signals before any thread starts, so every thread inherits the mask
    // and only `sigwait` below sees them.
    let signals = match block_stop_signals() {
        Ok(set) => set,
        Err(e) => {
            eprintln!("iscsi-gateway: blocking signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let iqns = config
        .targets
        .iter()
        .map(|t| t.iqn.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let (target, _control_socket, control) = match &control_settings.control_socket {
        None => match server::start(config) {
            Ok(target) => (target, None, None),
            Err(e) => {
                eprintln!("iscsi-gateway: {e}");
                return ExitCode::FAILURE;
            }
        },
        Some(socket) => {
            match start_controlled(
                config,
                socket,
                control_settings.state_dir.as_deref(),
                control_settings.control_priority,
            ) {
                Ok((target, socket, control)) => (target, Some(socket), Some(control)),
                Err(e) => {
                    eprintln!("iscsi-gateway: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    for addr in target.addrs() {
        tracing::info!(portal = %addr, targets = %iqns, "target ready");
    }
    loop {
        let signal = wait_for_signal(&signals);
        if signal == libc::SIGUSR1 {
            log_stats(&target, "SIGUSR1");
            continue;
        }
        if signal == libc::SIGHUP {
            tracing::info!(
                signal = "SIGHUP",
                "signal received; ignored (nothing to reload: restart to apply a new configuration)"
            );
            continue;
        }
        tracing::info!(
            signal = signal_name(signal),
            "signal received; shutting down"
        );
        break;
    }
    log_stats(&target, "shutdown");
    target.shutdown();
    if let Some(control) = control {
        // No write can come any more: change maps are saved exactly.
        control.shutdown();
    }
    ExitCode::SUCCESS
}

/// Starts the target under the control plane: the socket is bound first (a second
/// gateway on the same path is refused before it opens any LUN), then the configuration
/// comes from the state directory or the startup configuration, then the target starts
/// and the socket is served.
fn start_controlled(
    mut config: TargetConfig,
    socket: &std::path::Path,
    state_dir: Option<&std::path::Path>,
    priority: control::priority::ControlPriority,
) -> Result<
    (
        server::RunningTarget,
        control::socket::ControlSocket,
        Arc<control::Control>,
    ),
    String,
> {
    let (listener, guard) = control::socket::bind(socket).map_err(|e| e.to_string())?;
    let state = state_dir
        .map(control::state::StateDir::open)
        .transpose()
        .map_err(|e| e.to_string())?;
    let control = Arc::new(control::Control::new(state, config.portal_group_tag));
    // Before the state is loaded: it may name pools to open again.
    control.set_volumes(Arc::new(control::volumes::PoolVolumes::new()));
    let from_state = control.load(&config.targets).map_err(|e| e.to_string())?;
    if let Some(portals) = control.state_portals() {
        // Portals changed through the control plane are part of the state.
        config.portals = portals;
    }
    if from_state {
        tracing::info!(
            state_dir = %state_dir.map(|d| d.display().to_string()).unwrap_or_default(),
            "configuration restored from the state directory"
        );
    }
    let target = server::start_live(config, control.live_targets()).map_err(|e| e.to_string())?;
    control.set_controller(target.controller());
    control
        .watch_migrations()
        .map_err(|e| format!("starting the migration watcher: {e}"))?;
    control::socket::serve(listener, Arc::clone(&control), priority)
        .map_err(|e| format!("starting the control plane: {e}"))?;
    tracing::info!(socket = %socket.display(), %priority, "control plane ready");
    Ok((target, guard, control))
}

/// The figures of the gateway's memory budget and what its limits turned away.
fn log_stats(target: &server::RunningTarget, why: &str) {
    let stats = target.stats();
    tracing::info!(
        why,
        connections = stats.connections,
        logging_in = stats.logging_in,
        refused = stats.refused,
        output_owed_bytes = stats.output_owed_bytes,
        receive_buffer_bytes = stats.receive_buffer_bytes,
        commands_timed_out = stats.commands_timed_out,
        "stats"
    );
}

/// Environment variables that hold the gateway's CHAP secrets (not shown by `ps`).
const CHAP_SECRET_ENV: &str = "ISCSI_GATEWAY_CHAP_SECRET";
const MUTUAL_SECRET_ENV: &str = "ISCSI_GATEWAY_MUTUAL_SECRET";

/// The credentials of `user` with the secret from the first of: the option, the file, the
/// environment variable.
fn credentials(
    what: &str,
    user: Option<String>,
    secret: Option<String>,
    secret_file: Option<&std::path::Path>,
    secret_env: &str,
) -> Result<Option<ChapCredentials>, String> {
    let Some(user) = user else {
        return Ok(None);
    };
    let secret = match (secret, secret_file) {
        (Some(secret), _) => secret,
        (None, Some(path)) => datapath::credentials::read_secret_file(path)?,
        (None, None) => std::env::var(secret_env).map_err(|_| {
            format!("{what} user {user} has no secret: give --{what}-secret-file FILE or set ${secret_env}")
        })?,
    };
    Ok(Some(ChapCredentials {
        user,
        secret: secret.into_bytes(),
    }))
}

fn config_from_args(args: Args) -> Result<(TargetConfig, ControlSettings), String> {
    let control = ControlSettings {
        control_socket: args.control_socket.clone(),
        state_dir: args.state_dir.clone(),
        control_priority: args.control_priority.unwrap_or_default(),
    };
    let mut node = TargetNodeConfig::new(
        args.iqn.clone(),
        args.luns
            .iter()
            .enumerate()
            .map(|(n, spec)| (n as u64, spec.clone()))
            .collect(),
    );
    node.chap = credentials(
        "chap",
        args.chap_user,
        args.chap_secret,
        args.chap_secret_file.as_deref(),
        CHAP_SECRET_ENV,
    )?;
    node.mutual_chap = credentials(
        "mutual",
        args.mutual_user,
        args.mutual_secret,
        args.mutual_secret_file.as_deref(),
        MUTUAL_SECRET_ENV,
    )?;
    if !args.allowed_initiators.is_empty() {
        node.allowed_initiators = Some(args.allowed_initiators);
    }
    let mut config = TargetConfig::new(args.portals[0], node);
    config.portals = args.portals;
    config.portal_group_tag = args.portal_group_tag;
    config.array = gateway::portal::ArrayConfig {
        virtual_portal: args.virtual_portal,
        redirect: args.redirect,
        weights: args.portal_weights,
        alua: args.alua,
        links: args.portal_links,
    };
    config.max_cmd_window = args.queue_depth.max(1);
    config.threads = args.threads;
    config.client_limits.backend_timeout = seconds("--backend-timeout", args.backend_timeout)?;
    config.nop_interval = seconds("--nop-interval", args.nop_interval)?;
    config.nop_timeout = seconds("--nop-timeout", args.nop_timeout)?;
    if args.max_output_kib == 0 {
        return Err("--max-output-kib must be at least 1".into());
    }
    config.client_limits.max_output_bytes_per_connection = args.max_output_kib << 10;
    if config.targets.iter().all(|t| t.luns.is_empty()) {
        // Only with a control socket (clap requires --lun otherwise): targets come later.
        config.targets.clear();
    }
    Ok((config, control))
}

/// A positive duration in seconds from an option.
fn seconds(option: &str, value: f64) -> Result<std::time::Duration, String> {
    if !(value.is_finite() && value > 0.0 && value <= 86_400.0) {
        return Err(format!(
            "{option} {value}: give seconds, more than 0 and at most 86400"
        ));
    }
    Ok(std::time::Duration::from_secs_f64(value))
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        libc::SIGUSR1 => "SIGUSR1",
        _ => "another signal",
    }
}

/// Blocks SIGINT, SIGTERM, SIGHUP and SIGUSR1 (stats to the log) in this thread (and so in every thread it starts).
fn block_stop_signals() -> std::io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; the libc calls get valid pointers to it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        Ok(set)
    }
}

fn wait_for_signal(set: &libc::sigset_t) -> i32 {
    loop {
        let mut signal = 0;
        // SAFETY: `set` and `signal` are valid for the call.
        let rc = unsafe { libc::sigwait(set, &mut signal) };
        if rc == 0 {
            return signal;
        }
    }
}
