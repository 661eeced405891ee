//! The controller (`iscsi-bench --client=...`): one thread per agent, a coordinator that
//! releases them together, and the merged report.
//!
//! 1. Every host's command line (shared arguments, then its own) is parsed here first, so
//!    a bad option fails before any host is contacted; job files are read here and sent.
//! 2. Each host thread connects (retrying until the arm timeout: launched ranks start in
//!    any order), checks the agent's hello, proves the token, sends the job and waits for
//!    `Armed`.
//! 3. The coordinator waits for every host to arm or fail, at most `--arm-timeout`; a host
//!    not armed by then is aborted and flagged, and the others go on without it (a slow
//!    host does not hold the start hostage, and cannot skew it: it is not released).
//! 4. Each armed host's clock is probed ([`super::clock`]); the release instant is picked
//!    on the controller's clock far enough ahead for every `Release` to arrive first, and
//!    sent to each host on its own clock. Each reports its actual start.
//! 5. While running, a host that is silent for `--agent-timeout` (no heartbeat) or whose
//!    connection breaks is flagged lost; the others finish. SIGINT/SIGTERM here sends
//!    `Abort` to every host, which stop and send what they have.
//! 6. The results are merged ([`super::aggregate`]) and printed ([`super::render`]).
//!    Exit status: 0 when every host finished clean, 1 when a host was flagged or a job
//!    failed, 2 when nothing could start.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::aggregate::{HostResult, HostStatus};
use super::cli::{ClusterOptions, HostSpec};
use super::clock::{self, ClockOffset, ClockSample};
use super::conn::{self, Conn, ConnError};
use super::protocol::{self, JobFile, Message, PROTOCOL};
use crate::output::portable::PortableJob;

/// Probes per host; the best round trip of these sets the offset.
const CLOCK_PROBES: u32 = 16;
/// Least time between the release decision and the start.
const RELEASE_MARGIN: Duration = Duration::from_millis(50);
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What the controller needs to run.
pub struct ControllerPlan {
    pub hosts: Vec<HostSpec>,
    /// Per host (same order): the job files' contents and the arguments sent.
    pub jobs: Vec<(Vec<JobFile>, Vec<String>)>,
    pub options: ClusterOptions,
    pub token: Vec<u8>,
}

/// Each host's command line parsed here (errors name the host), its job files read.
pub fn plan(
    shared: &[String],
    hosts: Vec<HostSpec>,
    options: ClusterOptions,
    token: Vec<u8>,
) -> Result<(ControllerPlan, crate::job::Invocation), String> {
    let mut jobs = Vec::new();
    let mut first_invocation = None;
    for host in &hosts {
        let mut args: Vec<String> = shared.to_vec();
        args.extend(host.args.iter().cloned());
        let invocation = crate::job::parse_command_line(&args)
            .map_err(|e| format!("host {}: {e}", host.label()))?;
        if invocation.action != crate::job::Action::Run {
            return Err(format!(
                "host {}: the arguments ask for no run",
                host.label()
            ));
        }
        let sent = super::cli::agent_args(&args);
        let (options_only, files) = split_files(&sent);
        let mut contents = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("host {}: job file {}: {e}", host.label(), file.display()))?;
            contents.push(JobFile {
                name: file.display().to_string(),
                text,
            });
        }
        jobs.push((contents, options_only));
        first_invocation.get_or_insert(invocation);
    }
    let invocation = first_invocation.ok_or("no hosts given")?;
    Ok((
        ControllerPlan {
            hosts,
            jobs,
            options,
            token,
        },
        invocation,
    ))
}

/// Arguments split into options (with their separate values) and job files.
fn split_files(args: &[String]) -> (Vec<String>, Vec<PathBuf>) {
    let mut options = Vec::new();
    let mut files = Vec::new();
    let mut index = 0;
    let mut only_files = false;
    while index < args.len() {
        let arg = &args[index];
        index += 1;
        if only_files || !arg.starts_with('-') || arg == "-" {
            files.push(PathBuf::from(arg));
            continue;
        }
        if arg == "--" {
            only_files = true;
            continue;
        }
        options.push(arg.clone());
        let name = arg.trim_start_matches('-');
        if !name.contains('=')
            && crate::job::options::lookup(name)
                .is_some_and(|def| def.kind == crate::job::options::ValueKind::Required)
        {
            if let Some(value) = args.get(index) {
                options.push(value.clone());
                index += 1;
            }
        }
    }
    (options, files)
}

/// What a host thread tells the coordinator.
enum Event {
    Armed {
        host: usize,
    },
    Synced {
        host: usize,
        offset: ClockOffset,
    },
    Done {
        host: usize,
        result: Box<HostResult>,
    },
}

/// What the coordinator tells a host thread.
enum Command {
    /// Probe the clock.
    Sync,
    /// Start at this instant of the controller's clock.
    Release { at_ns: u64 },
    /// Not armed in time, or the run is over for the others: stop.
    Abort { reason: String },
}

/// Runs the plan; every host's result, flagged or not.
pub fn run(plan: ControllerPlan, stop: Arc<AtomicBool>) -> Vec<HostResult> {
    let size = plan.hosts.len() as u32;
    let (events_tx, events) = mpsc::channel::<Event>();
    let mut commands = Vec::new();
    let mut threads = Vec::new();
    let duplicate_hosts = {
        let mut names: Vec<&str> = plan.hosts.iter().map(|h| h.host.as_str()).collect();
        names.sort_unstable();
        names.windows(2).any(|w| w[0] == w[1])
    };
    let abandoned: Vec<Arc<AtomicBool>> = (0..plan.hosts.len())
        .map(|_| Arc::new(AtomicBool::new(false)))
        .collect();
    for (index, (host, (files, args))) in plan.hosts.iter().zip(plan.jobs).enumerate() {
        let (command_tx, command_rx) = mpsc::channel::<Command>();
        commands.push(command_tx);
        let host = host.clone();
        let hostname = if duplicate_hosts {
            host.label()
        } else {
            host.host.clone()
        };
        let thread = HostThread {
            index,
            rank: index as u32,
            size,
            host,
            hostname,
            files,
            args,
            options: plan.options.clone(),
            token: plan.token.clone(),
            events: events_tx.clone(),
            commands: command_rx,
            stop: Arc::clone(&stop),
            abandoned: Arc::clone(&abandoned[index]),
        };
        threads.push(std::thread::spawn(move || thread.run()));
    }
    drop(events_tx);
    let hosts = plan.hosts.len();
    let mut results: Vec<Option<HostResult>> = (0..hosts).map(|_| None).collect();
    let mut armed = vec![false; hosts];
    // Phase 1: arming.
    let arm_deadline = Instant::now() + plan.options.arm_timeout;
    while results.iter().zip(&armed).any(|(r, a)| r.is_none() && !a) {
        let left = arm_deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stop.load(Ordering::Relaxed) {
            break;
        }
        match events.recv_timeout(left.min(Duration::from_millis(100))) {
            Ok(Event::Armed { host }) => armed[host] = true,
            Ok(Event::Done { host, result }) => results[host] = Some(*result),
            Ok(Event::Synced { .. }) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let reason = if stop.load(Ordering::Relaxed) {
        "the controller was interrupted".to_string()
    } else {
        format!(
            "not armed within --arm-timeout ({:?})",
            plan.options.arm_timeout
        )
    };
    for (host, command) in commands.iter().enumerate() {
        if armed[host] {
            let _ = command.send(Command::Sync);
        } else if results[host].is_none() {
            abandoned[host].store(true, Ordering::Relaxed);
            let _ = command.send(Command::Abort {
                reason: reason.clone(),
            });
        }
    }
    // Phase 2: clocks, then one release for all.
    let mut offsets: Vec<Option<ClockOffset>> = vec![None; hosts];
    let sync_deadline = Instant::now() + Duration::from_secs(10);
    while (0..hosts).any(|h| armed[h] && results[h].is_none() && offsets[h].is_none()) {
        let left = sync_deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match events.recv_timeout(left) {
            Ok(Event::Synced { host, offset }) => offsets[host] = Some(offset),
            Ok(Event::Done { host, result }) => results[host] = Some(*result),
            Ok(Event::Armed { .. }) => {}
            Err(_) => break,
        }
    }
    let worst_uncertainty = offsets
        .iter()
        .flatten()
        .map(|o| o.uncertainty_ns)
        .max()
        .unwrap_or(0);
    // Far enough ahead for every Release to be sent and to cross the network (the
    // round trip bounds one way), with room for a busy scheduler.
    let margin_ns = (RELEASE_MARGIN.as_nanos() as u64).max(worst_uncertainty * 8);
    let at_ns = conn::now_ns() + margin_ns;
    for (host, command) in commands.iter().enumerate() {
        if offsets[host].is_some() && results[host].is_none() {
            let _ = command.send(Command::Release { at_ns });
        } else if armed[host] && results[host].is_none() {
            let _ = command.send(Command::Abort {
                reason: "its clock could not be probed".into(),
            });
        }
    }
    // Phase 3: the run, until every host thread has reported.
    while results.iter().any(Option::is_none) {
        match events.recv_timeout(Duration::from_millis(100)) {
            Ok(Event::Done { host, result }) => results[host] = Some(*result),
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    for thread in threads {
        let _ = thread.join();
    }
    results
        .into_iter()
        .enumerate()
        .map(|(index, result)| {
            result.unwrap_or_else(|| HostResult {
                label: plan.hosts[index].label(),
                hostname: plan.hosts[index].host.clone(),
                rank: index as u32,
                status: HostStatus::Lost {
                    reason: "its thread ended without a result".into(),
                },
                jobs: Vec::new(),
                start_ns: None,
                end_ns: None,
                clock_uncertainty_ns: 0,
            })
        })
        .collect()
}

/// One host's side of the run.
struct HostThread {
    index: usize,
    rank: u32,
    size: u32,
    host: HostSpec,
    hostname: String,
    files: Vec<JobFile>,
    args: Vec<String>,
    options: ClusterOptions,
    token: Vec<u8>,
    events: mpsc::Sender<Event>,
    commands: mpsc::Receiver<Command>,
    stop: Arc<AtomicBool>,
    /// Set by the coordinator when the host did not arm in time: give up at once.
    abandoned: Arc<AtomicBool>,
}

/// Where a host thread got to, for its result.
#[derive(Default)]
struct Progress {
    offset: Option<ClockOffset>,
    start_ns: Option<u64>,
}

impl HostThread {
    fn run(self) {
        let mut progress = Progress::default();
        let status = match self.drive(&mut progress) {
            Ok((jobs, end_ns)) => (HostStatus::Done, jobs, end_ns),
            Err(_) if self.abandoned.load(Ordering::Relaxed) => (
                HostStatus::Failed {
                    stage: "arm".into(),
                    error: format!(
                        "not armed within --arm-timeout ({:?}); left out of the run",
                        self.options.arm_timeout
                    ),
                },
                Vec::new(),
                None,
            ),
            Err(status) => (status, Vec::new(), None),
        };
        let (status, jobs, end_ns) = status;
        let result = HostResult {
            label: self.host.label(),
            hostname: self.hostname.clone(),
            rank: self.rank,
            status,
            jobs,
            start_ns: progress.start_ns,
            end_ns,
            clock_uncertainty_ns: progress.offset.map_or(0, |o| o.uncertainty_ns),
        };
        let _ = self.events.send(Event::Done {
            host: self.index,
            result: Box::new(result),
        });
    }

    fn lost(&self, what: &str, error: impl std::fmt::Display) -> HostStatus {
        HostStatus::Lost {
            reason: format!("{what}: {error}"),
        }
    }

    fn connect(&self) -> Result<Conn, HostStatus> {
        let deadline = Instant::now() + self.options.arm_timeout;
        let mut last_error = String::from("no address");
        loop {
            let addresses = (self.host.host.as_str(), self.host.port)
                .to_socket_addrs()
                .map_err(|e| self.lost("resolving", e))?;
            for address in addresses {
                match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
                    Ok(stream) => return Conn::new(stream).map_err(|e| self.lost("socket", e)),
                    Err(e) => last_error = format!("{address}: {e}"),
                }
            }
            if Instant::now() >= deadline
                || self.stop.load(Ordering::Relaxed)
                || self.abandoned.load(Ordering::Relaxed)
            {
                return Err(self.lost("connecting", last_error));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The host's whole exchange; its jobs and end on success.
    fn drive(
        &self,
        progress: &mut Progress,
    ) -> Result<(Vec<PortableJob>, Option<u64>), HostStatus> {
        let stop = || self.stop.load(Ordering::Relaxed) || self.abandoned.load(Ordering::Relaxed);
        let mut conn = self.connect()?;
        let handshake = Duration::from_secs(10);
        let hello = conn
            .recv(handshake, &stop)
            .map_err(|e| self.lost("waiting for the agent's hello", e))?;
        let (answer, _, _) = protocol::answer_agent_hello(PROTOCOL, &hello, &self.token)
            .map_err(|e| self.failed("handshake", e))?;
        conn.send(&answer).map_err(|e| self.lost("handshake", e))?;
        let verdict = conn
            .recv(handshake, &stop)
            .map_err(|e| self.lost("handshake", e))?;
        protocol::read_verdict(&verdict).map_err(|e| self.failed("handshake", e))?;
        conn.authenticated();
        conn.send(&Message::Job {
            files: self.files.clone(),
            args: self.args.clone(),
            rank: self.rank,
            size: self.size,
            interval_ms: self.options.interval.as_millis() as u64,
            release_timeout_ms: (self.options.arm_timeout + Duration::from_secs(30)).as_millis()
                as u64,
            heartbeat_ms: (self.options.agent_timeout / 4).as_millis().max(50) as u64,
        })
        .map_err(|e| self.lost("sending the job", e))?;
        match conn
            .recv(self.options.arm_timeout, &stop)
            .map_err(|e| self.lost("arming", e))?
        {
            Message::Armed { .. } => {}
            Message::Failed { stage, error } => return Err(HostStatus::Failed { stage, error }),
            other => return Err(self.failed("arming", format!("unexpected \"{}\"", other.kind()))),
        }
        let _ = self.events.send(Event::Armed { host: self.index });
        // Wait for the coordinator's word.
        match self.wait_command() {
            Command::Sync => {}
            Command::Abort { reason } => return Err(self.abort(&mut conn, reason)),
            Command::Release { .. } => {}
        }
        let offset = self.probe_clock(&mut conn, &stop)?;
        progress.offset = Some(offset);
        let _ = self.events.send(Event::Synced {
            host: self.index,
            offset,
        });
        let at_ns = match self.wait_command() {
            Command::Release { at_ns } => at_ns,
            Command::Abort { reason } => return Err(self.abort(&mut conn, reason)),
            Command::Sync => return Err(self.failed("release", "synced twice")),
        };
        conn.send(&Message::Release {
            start_at_ns: offset.to_agent(at_ns),
        })
        .map_err(|e| self.lost("sending the release", e))?;
        let aborted = std::cell::Cell::new(false);
        // An interruption ends the wait at once, so the Abort goes out without waiting
        // for the agent's next message.
        let interrupted = || !aborted.get() && stop();
        loop {
            if interrupted() {
                let _ = conn.send(&Message::Abort {
                    reason: "the controller was interrupted".into(),
                });
                aborted.set(true);
            }
            match conn.recv(self.options.agent_timeout, &interrupted) {
                Err(ConnError::Stopped) => continue,
                Ok(Message::Started { start_ns }) => {
                    progress.start_ns = Some(offset.to_controller(start_ns));
                }
                Ok(Message::Heartbeat { .. }) | Ok(Message::ClockReply { .. }) => {}
                Ok(Message::Results {
                    document,
                    end_ns,
                    job_start_ns,
                }) => {
                    let jobs = portable_jobs(&document).map_err(|e| self.failed("results", e))?;
                    if job_start_ns != 0 {
                        progress.start_ns = Some(offset.to_controller(job_start_ns));
                    }
                    return Ok((jobs, Some(offset.to_controller(end_ns))));
                }
                Ok(Message::Failed { stage, error }) => {
                    return Err(HostStatus::Failed { stage, error })
                }
                Ok(other) => {
                    return Err(self.failed("run", format!("unexpected \"{}\"", other.kind())))
                }
                Err(ConnError::Silent(d)) => {
                    return Err(self.lost("running", format!("no heartbeat for {d:?}")))
                }
                Err(e) => return Err(self.lost("running", e)),
            }
        }
    }

    fn failed(&self, stage: &str, error: impl std::fmt::Display) -> HostStatus {
        HostStatus::Failed {
            stage: stage.into(),
            error: error.to_string(),
        }
    }

    fn abort(&self, conn: &mut Conn, reason: String) -> HostStatus {
        let _ = conn.send(&Message::Abort {
            reason: reason.clone(),
        });
        HostStatus::Failed {
            stage: "arm".into(),
            error: reason,
        }
    }

    fn wait_command(&self) -> Command {
        loop {
            match self.commands.recv_timeout(Duration::from_millis(100)) {
                Ok(command) => return command,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Command::Abort {
                        reason: "the coordinator is gone".into(),
                    }
                }
            }
        }
    }

    fn probe_clock(
        &self,
        conn: &mut Conn,
        stop: &dyn Fn() -> bool,
    ) -> Result<ClockOffset, HostStatus> {
        let mut samples = Vec::new();
        for seq in 0..CLOCK_PROBES {
            let sent_ns = conn::now_ns();
            conn.send(&Message::ClockProbe { seq })
                .map_err(|e| self.lost("probing the clock", e))?;
            loop {
                match conn.recv(Duration::from_secs(5), stop) {
                    Ok(Message::ClockReply { seq: got, agent_ns }) if got == seq => {
                        samples.push(ClockSample {
                            sent_ns,
                            agent_ns,
                            received_ns: conn::now_ns(),
                        });
                        break;
                    }
                    Ok(Message::ClockReply { .. }) => {}
                    Ok(Message::Failed { stage, error }) => {
                        return Err(HostStatus::Failed { stage, error })
                    }
                    Ok(other) => {
                        return Err(self.failed("clock", format!("unexpected \"{}\"", other.kind())))
                    }
                    Err(e) => return Err(self.lost("probing the clock", e)),
                }
            }
        }
        clock::estimate(&samples).ok_or_else(|| self.failed("clock", "no usable probe"))
    }
}

/// The portable jobs of a JSON document (`jobs` or `client_stats`; "All clients" skipped).
pub fn portable_jobs(document: &serde_json::Value) -> Result<Vec<PortableJob>, String> {
    let entries = document
        .get("jobs")
        .or_else(|| document.get("client_stats"))
        .and_then(serde_json::Value::as_array)
        .ok_or("no \"jobs\" or \"client_stats\" array")?;
    let mut jobs = Vec::new();
    for entry in entries {
        let name = entry.get("jobname").and_then(|v| v.as_str()).unwrap_or("?");
        if name == "All clients" {
            continue;
        }
        let portable = entry
            .get(crate::output::json::EXTENSION_KEY)
            .and_then(|e| e.get("portable"))
            .ok_or_else(|| {
                format!("job {name} carries no histograms (run it with --json-histograms)")
            })?;
        let job: PortableJob = serde_json::from_value(portable.clone())
            .map_err(|e| format!("job {name}: its portable results: {e}"))?;
        jobs.push(job);
    }
    Ok(jobs)
}
