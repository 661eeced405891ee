//! The command line of the cluster modes, fio's habits first:
//!
//! - `iscsi-bench --server[=ADDR[,PORT]]`: an agent (fio's `--server`; default all
//!   addresses, port 8765; `ip:`/`ip6:` prefixes as fio's).
//! - `iscsi-bench [shared args] --client=HOST[,PORT] [its args] --client=... `: the
//!   controller. Arguments before the first `--client` (tool options, job options, job
//!   files) go to every host; those after a `--client` to that host only, after the shared
//!   ones (fio's `--client=h1 job1 --client=h2 job2`). When only the last `--client` has
//!   arguments of its own they are every host's (`--client=a --client=b job.fio`): fio
//!   gives them to the last client only, which surprises its users; we do not copy that.
//!   `--client=FILE` names a host file: one host a line, `HOST[,PORT] [job options]`
//!   (`name=value` or `--name=value`; `#` starts a comment).
//! - `iscsi-bench --launcher [--cluster-hosts=FILE|H1,H2,...] [args]`: rank and size from
//!   Slurm, MPI, PMI or a Kubernetes Indexed Job ([`super::launcher`]); rank 0 is the
//!   controller (and runs an agent of its own), the others agents.
//! - `iscsi-bench merge FILE...`: per-host JSON results merged after the fact.
//!
//! Cluster options: `--token-file=FILE` (else `ISCSI_BENCH_TOKEN`): the shared token,
//! required on both sides; `--arm-timeout=S` (30): how long a host may take to open its
//! targets; `--agent-timeout=S` (10): silence after which a running host counts as lost;
//! `--cluster-interval=MS` (1000): the period of the time-aligned IOPS/bandwidth series.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// fio's default server port.
pub const DEFAULT_PORT: u16 = 8765;
/// Longest host file read.
const HOST_FILE_MAX_BYTES: u64 = 1024 * 1024;
/// Most hosts in one run.
pub const MAX_HOSTS: usize = 4096;

/// Tool options of fio's grammar that take their value from the next argument when
/// written without `=`.
const TOOL_OPTIONS_WITH_VALUE: &[&str] = &[
    "output-format",
    "output",
    "terse-version",
    "status-interval",
    "eta",
    "section",
    "report",
];
/// Tool options the controller keeps for itself (how to print), never sent to agents.
const CONTROLLER_ONLY: &[&str] = &[
    "output-format",
    "output",
    "minimal",
    "terse-version",
    "status-interval",
    "eta",
    "report",
    "interval-results",
];

/// One agent to drive: where, and its own extra arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    pub host: String,
    pub port: u16,
    /// Job options and files of this host only, after the shared ones.
    pub args: Vec<String>,
}

impl HostSpec {
    /// "host,port" as fio writes a client.
    pub fn label(&self) -> String {
        format!("{},{}", self.host, self.port)
    }
}

/// Settings shared by the controller and agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    pub token_file: Option<PathBuf>,
    pub arm_timeout: Duration,
    pub agent_timeout: Duration,
    pub interval: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            token_file: None,
            arm_timeout: Duration::from_secs(30),
            agent_timeout: Duration::from_secs(10),
            interval: Duration::from_secs(1),
        }
    }
}

/// What a cluster command line asks for; `None` from [`parse`] for a plain run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterCommand {
    Agent {
        bind: String,
        port: u16,
        options: ClusterOptions,
    },
    Controller {
        /// Arguments every host gets (tool options included; the controller strips its
        /// own before sending).
        shared: Vec<String>,
        hosts: Vec<HostSpec>,
        options: ClusterOptions,
    },
    Launcher {
        hosts: Option<String>,
        args: Vec<String>,
        options: ClusterOptions,
    },
    Merge {
        files: Vec<PathBuf>,
        args: Vec<String>,
    },
}

/// A bad cluster command line, naming the argument.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterCliError {
    #[error("{option}: {reason}")]
    BadValue { option: String, reason: String },
    #[error("{file}:{line}: {reason}")]
    HostFile {
        file: String,
        line: usize,
        reason: String,
    },
    #[error("--server cannot be combined with {0}")]
    Conflict(&'static str),
    #[error("merge needs at least one JSON file")]
    NothingToMerge,
    #[error("more than {MAX_HOSTS} hosts")]
    TooManyHosts,
}

fn option_name(arg: &str) -> Option<(&str, Option<&str>)> {
    let body = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    Some(match body.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (body, None),
    })
}

/// Does option `name`, written without `=`, take the next argument as its value?
fn takes_next_value(name: &str) -> bool {
    TOOL_OPTIONS_WITH_VALUE.contains(&name)
        || crate::job::options::lookup(name)
            .is_some_and(|def| def.kind == crate::job::options::ValueKind::Required)
}

fn seconds(option: &str, value: Option<&str>) -> Result<Duration, ClusterCliError> {
    let text = value.unwrap_or_default();
    crate::job::value::parse_time(text, crate::job::value::TimeUnit::Seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| ClusterCliError::BadValue {
            option: format!("--{option}"),
            reason: format!("\"{text}\" is not a time above 0 (seconds without a unit)"),
        })
}

/// Reads a cluster command line (`args` without the program name); `Ok(None)` when it
/// has none of the cluster options.
pub fn parse(args: &[String]) -> Result<Option<ClusterCommand>, ClusterCliError> {
    if args.first().map(String::as_str) == Some("merge") {
        let (files, rest): (Vec<&String>, Vec<&String>) =
            args[1..].iter().partition(|a| !a.starts_with('-'));
        if files.is_empty() {
            return Err(ClusterCliError::NothingToMerge);
        }
        return Ok(Some(ClusterCommand::Merge {
            files: files.into_iter().map(PathBuf::from).collect(),
            args: rest.into_iter().cloned().collect(),
        }));
    }
    let mut options = ClusterOptions::default();
    let mut server: Option<(String, u16)> = None;
    let mut launcher = false;
    let mut cluster_hosts = None;
    let mut shared: Vec<String> = Vec::new();
    // (client argument, its own arguments)
    let mut clients: Vec<(String, Vec<String>)> = Vec::new();
    let mut index = 0;
    while index < args.len() {
        let arg = &args[index];
        index += 1;
        let Some((name, value)) = option_name(arg) else {
            push_arg(&mut shared, &mut clients, arg.clone());
            continue;
        };
        match name {
            "server" => {
                server = Some(parse_address(value.unwrap_or(""), "0.0.0.0", "--server")?);
            }
            "client" => {
                let value =
                    value
                        .filter(|v| !v.is_empty())
                        .ok_or_else(|| ClusterCliError::BadValue {
                            option: "--client".into(),
                            reason: "needs HOST[,PORT] or a host file (--client=HOST)".into(),
                        })?;
                clients.push((value.to_string(), Vec::new()));
            }
            "launcher" => launcher = true,
            "cluster-hosts" => cluster_hosts = value.map(str::to_string),
            "token-file" => options.token_file = value.map(PathBuf::from),
            "arm-timeout" => options.arm_timeout = seconds(name, value)?,
            "agent-timeout" => options.agent_timeout = seconds(name, value)?,
            "cluster-interval" => {
                let ms = value
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|&ms| (10..=3_600_000).contains(&ms));
                options.interval =
                    Duration::from_millis(ms.ok_or_else(|| ClusterCliError::BadValue {
                        option: "--cluster-interval".into(),
                        reason: "expected milliseconds from 10 to 3600000".into(),
                    })?);
            }
            _ => {
                push_arg(&mut shared, &mut clients, arg.clone());
                if value.is_none() && takes_next_value(name) {
                    if let Some(next) = args.get(index) {
                        push_arg(&mut shared, &mut clients, next.clone());
                        index += 1;
                    }
                }
            }
        }
    }
    if let Some((bind, port)) = server {
        if !clients.is_empty() {
            return Err(ClusterCliError::Conflict("--client"));
        }
        if launcher {
            return Err(ClusterCliError::Conflict("--launcher"));
        }
        return Ok(Some(ClusterCommand::Agent {
            bind,
            port,
            options,
        }));
    }
    if launcher {
        return Ok(Some(ClusterCommand::Launcher {
            hosts: cluster_hosts,
            args: shared,
            options,
        }));
    }
    if clients.is_empty() {
        return Ok(None);
    }
    // fio's `--client=a --client=b job.fio`: the last client's arguments are everyone's
    // when no other client has its own.
    let own = clients.iter().filter(|(_, a)| !a.is_empty()).count();
    if clients.len() > 1 && own == 1 && !clients[clients.len() - 1].1.is_empty() {
        let last = clients.len() - 1;
        let taken = std::mem::take(&mut clients[last].1);
        shared.extend(taken);
    }
    let mut hosts = Vec::new();
    for (client, own_args) in clients {
        if Path::new(&client).is_file() {
            for mut host in read_host_file(Path::new(&client))? {
                host.args.extend(own_args.iter().cloned());
                hosts.push(host);
            }
        } else {
            let (host, port) = parse_address(&client, "", "--client")?;
            hosts.push(HostSpec {
                host,
                port,
                args: own_args,
            });
        }
        if hosts.len() > MAX_HOSTS {
            return Err(ClusterCliError::TooManyHosts);
        }
    }
    Ok(Some(ClusterCommand::Controller {
        shared,
        hosts,
        options,
    }))
}

fn push_arg(shared: &mut Vec<String>, clients: &mut [(String, Vec<String>)], arg: String) {
    match clients.last_mut() {
        Some((_, own)) => own.push(arg),
        None => shared.push(arg),
    }
}

/// `[ip:|ip6:]HOST[,PORT]` (fio's form; IPv6 may be bracketed). An empty host is
/// `default_host`.
pub fn parse_address(
    text: &str,
    default_host: &str,
    option: &str,
) -> Result<(String, u16), ClusterCliError> {
    let bad = |reason: String| ClusterCliError::BadValue {
        option: option.to_string(),
        reason,
    };
    let text = text
        .strip_prefix("ip:")
        .or_else(|| text.strip_prefix("ip6:"))
        .unwrap_or(text);
    if text.starts_with("sock:") {
        return Err(bad(
            "Unix sockets (fio's sock:) are not supported; give HOST[,PORT]".into(),
        ));
    }
    let (host, port) = match text.rsplit_once(',') {
        Some((host, port)) => {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| bad(format!("\"{port}\" is not a port (1-65535)")))?;
            (host, port)
        }
        None => (text, DEFAULT_PORT),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() { default_host } else { host };
    if host.is_empty() {
        return Err(bad("no host given".into()));
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(format!("\"{host}\" is not a host name or address")));
    }
    Ok((host.to_string(), port))
}

/// A host file: `HOST[,PORT] [job options]` a line; blank lines and `#` comments skipped.
pub fn read_host_file(path: &Path) -> Result<Vec<HostSpec>, ClusterCliError> {
    let file_error = |line: usize, reason: String| ClusterCliError::HostFile {
        file: path.display().to_string(),
        line,
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| file_error(0, e.to_string()))?;
    if meta.len() > HOST_FILE_MAX_BYTES {
        return Err(file_error(
            0,
            format!("larger than {HOST_FILE_MAX_BYTES} bytes"),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| file_error(0, e.to_string()))?;
    parse_host_lines(&text).map_err(|(line, reason)| file_error(line, reason))
}

/// The lines of a host file; errors carry the line number.
pub fn parse_host_lines(text: &str) -> Result<Vec<HostSpec>, (usize, String)> {
    let mut hosts = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let address = words.next().unwrap_or_default();
        let (host, port) =
            parse_address(address, "", "host").map_err(|e| (number + 1, e.to_string()))?;
        let mut args = Vec::new();
        for word in words {
            let option = word.trim_start_matches('-');
            if !option.contains('=') && crate::job::options::lookup(option).is_none() {
                return Err((
                    number + 1,
                    format!("\"{word}\" is not a job option (name=value)"),
                ));
            }
            args.push(format!("--{option}"));
        }
        hosts.push(HostSpec { host, port, args });
        if hosts.len() > MAX_HOSTS {
            return Err((number + 1, format!("more than {MAX_HOSTS} hosts")));
        }
    }
    if hosts.is_empty() {
        return Err((0, "no hosts in the file".into()));
    }
    Ok(hosts)
}

/// The arguments an agent gets: everything but the controller's own output options.
pub fn agent_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip_next = false;
    for arg in args {
        if std::mem::take(&mut skip_next) {
            continue;
        }
        if let Some((name, value)) = option_name(arg) {
            if CONTROLLER_ONLY.contains(&name) {
                skip_next = value.is_none() && TOOL_OPTIONS_WITH_VALUE.contains(&name);
                continue;
            }
        }
        out.push(arg.clone());
    }
    out
}

/// The shared token: `--token-file`, else `ISCSI_BENCH_TOKEN`; trailing newlines dropped.
pub fn read_token(
    options: &ClusterOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<u8>, String> {
    use super::protocol::TOKEN_MAX_BYTES;
    let token = match &options.token_file {
        Some(path) => {
            let meta = std::fs::metadata(path)
                .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
            if meta.len() > TOKEN_MAX_BYTES as u64 {
                return Err(format!(
                    "--token-file {}: larger than {TOKEN_MAX_BYTES} bytes",
                    path.display()
                ));
            }
            std::fs::read(path).map_err(|e| format!("--token-file {}: {e}", path.display()))?
        }
        None => env("ISCSI_BENCH_TOKEN")
            .map(String::into_bytes)
            .ok_or("no shared token: give --token-file=FILE or set ISCSI_BENCH_TOKEN (the same on the controller and every agent)")?,
    };
    let mut token = token;
    while token.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        token.pop();
    }
    if token.is_empty() {
        return Err("the shared token is empty".into());
    }
    if token.len() > TOKEN_MAX_BYTES {
        return Err(format!(
            "the shared token is longer than {TOKEN_MAX_BYTES} bytes"
        ));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fio_client_forms() {
        let cmd = parse(&strings(&[
            "--output-format=json",
            "--client=a",
            "one.fio",
            "--client=[::1],9000",
            "two.fio",
            "--bs",
            "8k",
        ]))
        .unwrap()
        .unwrap();
        let ClusterCommand::Controller { shared, hosts, .. } = cmd else {
            panic!("not a controller")
        };
        assert_eq!(shared, strings(&["--output-format=json"]));
        assert_eq!(
            hosts[0],
            HostSpec {
                host: "a".into(),
                port: 8765,
                args: strings(&["one.fio"])
            }
        );
        assert_eq!(hosts[1].host, "::1");
        assert_eq!(hosts[1].port, 9000);
        assert_eq!(hosts[1].args, strings(&["two.fio", "--bs", "8k"]));
        // The last client's arguments are everyone's when only it has any.
        let cmd = parse(&strings(&["--client=a", "--client=b", "job.fio"]))
            .unwrap()
            .unwrap();
        let ClusterCommand::Controller { shared, hosts, .. } = cmd else {
            panic!("not a controller")
        };
        assert_eq!(shared, strings(&["job.fio"]));
        assert!(hosts.iter().all(|h| h.args.is_empty()));
        assert_eq!(parse(&strings(&["--name=x", "--rw=read"])).unwrap(), None);
    }

    #[test]
    fn server_addresses() {
        let agent = |a: &str| match parse(&strings(&[a])).unwrap().unwrap() {
            ClusterCommand::Agent { bind, port, .. } => (bind, port),
            other => panic!("{other:?}"),
        };
        assert_eq!(agent("--server"), ("0.0.0.0".into(), 8765));
        assert_eq!(agent("--server=127.0.0.2,9100"), ("127.0.0.2".into(), 9100));
        assert_eq!(agent("--server=ip6:::1,9100"), ("::1".into(), 9100));
        assert!(parse(&strings(&["--server=x,0"])).is_err());
        assert!(parse(&strings(&["--server=sock:/tmp/s"])).is_err());
        assert!(matches!(
            parse(&strings(&["--server", "--client=a"])),
            Err(ClusterCliError::Conflict(_))
        ));
    }

    #[test]
    fn host_files_carry_per_host_options() {
        let hosts = parse_host_lines(
            "# rack 1\nhostA\nhostB,9000 filename=iscsi://t/iqn.x/1 --iodepth=8\n\n",
        )
        .unwrap();
        assert_eq!(hosts.len(), 2);
        assert_eq!(
            hosts[1].args,
            strings(&["--filename=iscsi://t/iqn.x/1", "--iodepth=8"])
        );
        assert_eq!(parse_host_lines("a\nb,x\n").unwrap_err().0, 2);
        assert!(parse_host_lines("a bogus\n")
            .unwrap_err()
            .1
            .contains("bogus"));
        assert!(parse_host_lines("# none\n").is_err());
    }

    #[test]
    fn the_controller_keeps_its_output_options() {
        assert_eq!(
            agent_args(&strings(&[
                "--output",
                "x.json",
                "--output-format=json",
                "--bs=4k",
                "job.fio"
            ])),
            strings(&["--bs=4k", "job.fio"])
        );
    }

    #[test]
    fn the_token_is_required() {
        let none = |_: &str| None;
        assert!(read_token(&ClusterOptions::default(), &none)
            .unwrap_err()
            .contains("ISCSI_BENCH_TOKEN"));
        let some = |_: &str| Some("s3cret\n".to_string());
        assert_eq!(
            read_token(&ClusterOptions::default(), &some).unwrap(),
            b"s3cret"
        );
    }
}
