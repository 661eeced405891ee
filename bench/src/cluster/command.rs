//! The cluster commands as the binary runs them: agent, controller, launcher, merge.
//!
//! Controller exit status: 0 when every host finished clean; 1 when a host was flagged
//! (lost, failed, not armed) or a job failed; 2 when nothing could start (bad options, no
//! token, an unreadable job file); 128 after SIGINT/SIGTERM (the agents were told to stop
//! and the report covers the time run), as a plain run.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::aggregate::{self, HostResult, HostStatus};
use super::cli::{self, ClusterCommand, ClusterOptions, HostSpec};
use super::render::{self, RenderOptions};
use crate::output::json::Flavor;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Runs a cluster command line; `None` when `args` hold none (a plain run).
pub fn main(args: &[String]) -> Option<ExitCode> {
    let command = match cli::parse(args) {
        Ok(Some(command)) => command,
        Ok(None) => return None,
        Err(e) => {
            eprintln!("iscsi-bench: {e}");
            return Some(ExitCode::from(2));
        }
    };
    Some(match command {
        ClusterCommand::Agent {
            bind,
            port,
            options,
        } => agent(&bind, port, &options, None),
        ClusterCommand::Controller {
            shared,
            hosts,
            options,
        } => controller(&shared, hosts, options),
        ClusterCommand::Launcher {
            hosts,
            args,
            options,
        } => launcher(hosts, &args, options),
        ClusterCommand::Merge { files, args } => merge(&files, &args),
    })
}

fn agent(bind: &str, port: u16, options: &ClusterOptions, runs: Option<u32>) -> ExitCode {
    let token = match cli::read_token(options, &env) {
        Ok(token) => token,
        Err(e) => {
            eprintln!("iscsi-bench: --server: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind((bind, port)) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("iscsi-bench: --server: cannot listen on {bind},{port}: {e}");
            return ExitCode::from(2);
        }
    };
    let local = listener.local_addr().map_or_else(
        |_| format!("{bind},{port}"),
        |a| format!("{},{}", a.ip(), a.port()),
    );
    // Tests and launch scripts wait for this line.
    eprintln!("iscsi-bench: agent listening on {local}");
    match super::agent::serve(listener, token, runs) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iscsi-bench: agent: {e}");
            ExitCode::from(2)
        }
    }
}

fn controller(shared: &[String], hosts: Vec<HostSpec>, options: ClusterOptions) -> ExitCode {
    let token = match cli::read_token(&options, &env) {
        Ok(token) => token,
        Err(e) => {
            eprintln!("iscsi-bench: --client: {e}");
            return ExitCode::from(2);
        }
    };
    let interval_ms = options.interval.as_millis() as u64;
    let (plan, invocation) = match super::controller::plan(shared, hosts, options, token) {
        Ok(planned) => planned,
        Err(e) => {
            eprintln!("iscsi-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let tool = invocation.tool;
    let mut output_file = match &tool.output {
        Some(path) => match std::fs::File::create(path) {
            Ok(file) => Some(file),
            Err(e) => {
                eprintln!(
                    "iscsi-bench: cannot open the output file {}: {e}",
                    path.display()
                );
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    if let Err(e) = crate::run::interrupt::install() {
        eprintln!("iscsi-bench: installing the SIGINT/SIGTERM handler: {e}");
        return ExitCode::from(2);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (stop, watching) = (Arc::clone(&stop), Arc::clone(&watching));
        std::thread::spawn(move || {
            while watching.load(Ordering::Relaxed) {
                if crate::run::interrupt::caught().is_some() {
                    stop.store(true, Ordering::Relaxed);
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        })
    };
    let results = super::controller::run(plan, Arc::clone(&stop));
    watching.store(false, Ordering::Relaxed);
    let _ = watcher.join();
    let summary = match aggregate::summarize(results, interval_ms) {
        Ok(summary) => summary,
        Err(e) => {
            eprintln!("iscsi-bench: merging the hosts' results: {e}");
            return ExitCode::from(1);
        }
    };
    let text = report_text(&summary, tool.output_formats, tool.json_histograms);
    let written = match output_file.as_mut() {
        Some(file) => file.write_all(text.as_bytes()),
        None => std::io::stdout().lock().write_all(text.as_bytes()),
    };
    if let Err(e) = written {
        eprintln!("iscsi-bench: writing the results: {e}");
        return ExitCode::from(2);
    }
    for host in summary.flagged() {
        eprintln!(
            "iscsi-bench: host {} ({}) {}: {}",
            host.hostname,
            host.label,
            host.status.word(),
            host.status.reason()
        );
    }
    let job_failed = summary
        .hosts
        .iter()
        .flat_map(|h| &h.jobs)
        .any(|j| j.error != 0);
    if let Some(signal) = crate::run::interrupt::caught() {
        // As a plain run: the report of the time run, then fio's exit value after a signal.
        eprintln!("iscsi-bench: terminating on signal {signal}");
        return ExitCode::from(128);
    }
    if summary.flagged().count() > 0 || job_failed || summary.all_clients.is_none() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn report_text(
    summary: &aggregate::ClusterSummary,
    formats: crate::job::OutputFormats,
    portable: bool,
) -> String {
    let timestamp_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut options = RenderOptions {
        flavor: Flavor::Json,
        portable,
        timestamp_ms,
    };
    let mut text = String::new();
    if formats.normal || formats.terse {
        text.push_str(&render::text(summary, &options));
    }
    if formats.json || formats.json_plus {
        if formats.json_plus {
            options.flavor = Flavor::JsonPlus;
        }
        text.push_str(&render::json_text(summary, &options));
    }
    text
}

fn launcher(hosts: Option<String>, args: &[String], options: ClusterOptions) -> ExitCode {
    let hosts_text = hosts.or_else(|| env("ISCSI_BENCH_HOSTS"));
    let port = match env("ISCSI_BENCH_PORT") {
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => {
                eprintln!("iscsi-bench: ISCSI_BENCH_PORT={text} is not a port (1-65535)");
                return ExitCode::from(2);
            }
        },
        None => cli::DEFAULT_PORT,
    };
    let hosts = match hosts_text
        .as_deref()
        .map(|t| host_list(t, port))
        .transpose()
    {
        Ok(hosts) => hosts,
        Err(e) => {
            eprintln!("iscsi-bench: --cluster-hosts: {e}");
            return ExitCode::from(2);
        }
    };
    let rank = match super::launcher::from_env(&env, hosts.as_ref().map(|h| h.len() as u32)) {
        Ok(rank) => rank,
        Err(e) => {
            eprintln!("iscsi-bench: --launcher: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(hosts) = hosts else {
        eprintln!("iscsi-bench: --launcher needs the hosts of every rank: --cluster-hosts=FILE|H1,H2,... or ISCSI_BENCH_HOSTS");
        return ExitCode::from(2);
    };
    if hosts.len() as u32 != rank.size {
        eprintln!(
            "iscsi-bench: --launcher: {} hosts listed but {} says the size is {}",
            hosts.len(),
            rank.launcher,
            rank.size
        );
        return ExitCode::from(2);
    }
    if rank.rank != 0 {
        return agent("0.0.0.0", hosts[rank.rank as usize].port, &options, Some(1));
    }
    // Rank 0: its own agent in a thread, then the controller over every rank.
    let own_port = hosts[0].port;
    let agent_options = options.clone();
    std::thread::spawn(move || agent("0.0.0.0", own_port, &agent_options, Some(1)));
    controller(args, hosts, options)
}

/// A host file (`HOST[,PORT] [options]` a line) or a comma list of hosts on `port`.
fn host_list(text: &str, port: u16) -> Result<Vec<HostSpec>, String> {
    if Path::new(text).is_file() {
        return cli::read_host_file(Path::new(text)).map_err(|e| e.to_string());
    }
    let hosts: Vec<HostSpec> = text
        .split([',', ' ', '\n'])
        .filter(|h| !h.is_empty())
        .map(|h| HostSpec {
            host: h.to_string(),
            port,
            args: Vec::new(),
        })
        .collect();
    if hosts.is_empty() {
        return Err("no hosts".into());
    }
    Ok(hosts)
}

fn merge(files: &[std::path::PathBuf], args: &[String]) -> ExitCode {
    // Only the tool options matter here; a placeholder job satisfies the parser.
    let mut parsed: Vec<String> = args.to_vec();
    parsed.extend(["--name=merge".to_string(), "--ioengine=null".to_string()]);
    let invocation = match crate::job::parse_command_line(&parsed) {
        Ok(invocation) => invocation,
        Err(e) => {
            eprintln!("iscsi-bench merge: {e}");
            return ExitCode::from(2);
        }
    };
    let mut hosts: Vec<HostResult> = Vec::new();
    for (rank, file) in files.iter().enumerate() {
        let document: serde_json::Value = match std::fs::read(file)
            .map_err(|e| e.to_string())
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
        {
            Ok(document) => document,
            Err(e) => {
                eprintln!("iscsi-bench merge: {}: {e}", file.display());
                return ExitCode::from(2);
            }
        };
        let jobs = match super::controller::portable_jobs(&document) {
            Ok(jobs) => jobs,
            Err(e) => {
                eprintln!("iscsi-bench merge: {}: {e}", file.display());
                return ExitCode::from(2);
            }
        };
        let name = file.file_stem().map_or_else(
            || file.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        hosts.push(HostResult {
            label: file.display().to_string(),
            hostname: name,
            rank: rank as u32,
            status: HostStatus::Done,
            jobs,
            start_ns: None,
            end_ns: None,
            clock_uncertainty_ns: 0,
        });
    }
    let summary = match aggregate::summarize(hosts, 1000) {
        Ok(summary) => summary,
        Err(e) => {
            eprintln!("iscsi-bench merge: {e}");
            return ExitCode::from(2);
        }
    };
    let text = report_text(
        &summary,
        invocation.tool.output_formats,
        invocation.tool.json_histograms,
    );
    let written = match &invocation.tool.output {
        Some(path) => std::fs::write(path, text.as_bytes()),
        None => std::io::stdout().lock().write_all(text.as_bytes()),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iscsi-bench merge: writing the results: {e}");
            ExitCode::from(2)
        }
    }
}
