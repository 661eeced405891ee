//! fio's command line: `iscsi-bench [tool options] [job options] [job files]`.
//!
//! As fio 3.33 reads it (getopt "long only"): an argument starting with `-` or `--` is an
//! option, anything else a job file. `--name=x` starts a new job; job options before the
//! first `--name` are defaults for every job (command-line jobs and job-file jobs alike);
//! after it they belong to the job. Command-line jobs run before the jobs of the files.
//! Options take their value after `=`, or, for options that need one, from the next
//! argument (`--bs 4k`). Tool options may stand anywhere.
//!
//! clap is not used: fio's grammar (options that start jobs, order-dependent scoping,
//! single-dash long options) is not clap's.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use super::build::Collector;
use super::error::{JobError, Origin, Suggestion, ValueError};
use super::ini::{process_env, IniReader, Item};
use super::options::{lookup, suggest, ValueKind};
use super::spec::JobSpec;
use super::value::{self, TimeUnit};

/// Most command-line arguments read.
pub const MAX_ARGS: usize = 65536;

/// `--output-format`: any of fio's formats iscsi-bench writes, comma-separated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputFormats {
    pub normal: bool,
    pub json: bool,
    pub json_plus: bool,
    /// fio's terse format, version 3 (`--minimal`, `terse`).
    pub terse: bool,
}

impl Default for OutputFormats {
    fn default() -> Self {
        OutputFormats {
            normal: true,
            json: false,
            json_plus: false,
            terse: false,
        }
    }
}

/// `--eta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Eta {
    /// Show the status line when stdout is a terminal.
    #[default]
    Auto,
    Always,
    Never,
}

/// The options about the tool rather than the jobs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ToolOptions {
    pub output_formats: OutputFormats,
    /// `--output=FILE`: write the results there instead of stdout.
    pub output: Option<PathBuf>,
    /// `--status-interval=T`: a full status dump every T (fio's meaning).
    pub status_interval: Option<Duration>,
    pub eta: Eta,
    /// `--report=DIR`: write the HTML report there (iscsi-bench's own).
    pub report_dir: Option<PathBuf>,
    /// `--interval-results[=T]`: per-interval results every T inside the one JSON document
    /// (iscsi-bench's own; fio prints several documents instead). Without a value, the
    /// status interval, else one second.
    pub interval_results: Option<Duration>,
    /// `--readonly`: refuse jobs that write or trim.
    pub readonly: bool,
    /// `--section=name` (repeatable): run only these job sections.
    pub sections: Vec<String>,
    /// `--json-histograms`: JSON output carries each job's whole histograms, for
    /// `iscsi-bench merge` (iscsi-bench's own).
    pub json_histograms: bool,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Run the jobs.
    Run,
    /// `--parse-only`: parse and check, start no I/O.
    ParseOnly,
    /// `--showcmd`: print the jobs as command-line options.
    ShowCmd,
    /// `--help`: print [`help_text`].
    Help,
    /// `--version`: print [`version_text`].
    Version,
    /// `--cmdhelp=opt`: print this text.
    CmdHelp(String),
}

/// The parsed command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub action: Action,
    pub tool: ToolOptions,
    /// Empty for Help, Version and CmdHelp.
    pub jobs: Vec<JobSpec>,
}

/// `--version` text.
pub fn version_text() -> String {
    format!("iscsi-bench-{}", env!("CARGO_PKG_VERSION"))
}

/// `--help` text.
pub fn help_text() -> String {
    format!(
        "{}\n\
         iscsi-bench [options] [job options] <job file(s)>\n\
         \x20 --output-format=type  normal, terse, json, json+ (comma-separated for several)\n\
         \x20 --minimal             fio's terse output (version 3), one line per job\n\
         \x20 --output=file         Write output to file\n\
         \x20 --status-interval=t   Full status dump every t (seconds without unit)\n\
         \x20 --eta=when            auto, always or never: the live status line\n\
         \x20 --parse-only          Parse and check the jobs, start no I/O\n\
         \x20 --showcmd             Print the jobs as command-line options\n\
         \x20 --readonly            Refuse jobs that write or trim\n\
         \x20 --section=name        Run only this job section (repeatable)\n\
         \x20 --cmdhelp=opt         Help for a job option, or \"all\"\n\
         \x20 --version             Print the version\n\
         \x20 --help                Print this page\n\
         \x20 --report=dir          Write an HTML report with charts into dir\n\
         \x20 --interval-results[=t] Per-interval results inside the one JSON document\n\
         \x20 --json-histograms     JSON carries whole histograms (for iscsi-bench merge)\n\
         \x20 --server[=addr[,port]] Run as a cluster agent (see --client)\n\
         \x20 --client=host[,port]  Run the jobs on agents (repeatable, or a host file)\n\
         \x20 --launcher            Rank and size from Slurm/MPI/PMI/Kubernetes; rank 0 leads\n\
         \x20 merge file...         Merge per-host JSON results (with --json-histograms)\n\
         Job options use fio's names: --name=job starts a job, e.g.\n\
         \x20 iscsi-bench --name=r --rw=randread --bs=4k --iodepth=32 --runtime=10\n\
         With no filename the jobs run against an embedded iSCSI target.\n",
        version_text()
    )
}

/// fio tool options iscsi-bench does not have.
const UNSUPPORTED_TOOL_OPTIONS: &[&str] = &[
    "debug",
    "merge-blktrace-only",
    "bandwidth-log",
    "cpuclock-test",
    "crctest",
    "enghelp",
    "eta-newline",
    "eta-interval",
    "warnings-fatal",
    "max-jobs",
    "server",
    "daemonize",
    "client",
    "remote-config",
    "idle-prof",
    "inflate-log",
    "trigger-file",
    "trigger-timeout",
    "trigger",
    "trigger-remote",
    "aux-path",
    "alloc-size",
];

/// Tool options (name, needs a value).
const TOOL_OPTIONS: &[(&str, ValueKind)] = &[
    ("output-format", ValueKind::Required),
    ("output", ValueKind::Required),
    ("minimal", ValueKind::Flag),
    ("terse-version", ValueKind::Required),
    ("status-interval", ValueKind::Required),
    ("eta", ValueKind::Required),
    ("parse-only", ValueKind::Flag),
    ("showcmd", ValueKind::Flag),
    ("readonly", ValueKind::Flag),
    ("section", ValueKind::Required),
    ("cmdhelp", ValueKind::Optional),
    ("version", ValueKind::Flag),
    ("help", ValueKind::Flag),
    ("report", ValueKind::Required),
    ("interval-results", ValueKind::Optional),
    ("json-histograms", ValueKind::Flag),
];

/// A job-definition event of the command line, replayed after all arguments are read.
enum Event {
    Section(String, Origin),
    Option(String, Option<String>, Origin),
}

/// Parse fio's command line (`args` without the program name) and the job files it names,
/// reading `${NAME}` from the process environment.
pub fn parse_command_line<I, S>(args: I) -> Result<Invocation, JobError>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    parse_command_line_with_env(args, &process_env)
}

/// As [`parse_command_line`], with `env` answering `${NAME}` in job files.
pub fn parse_command_line_with_env<I, S>(
    args: I,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Invocation, JobError>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let args: Vec<OsString> = args
        .into_iter()
        .take(MAX_ARGS + 1)
        .map(Into::into)
        .collect();
    if args.len() > MAX_ARGS {
        return Err(JobError::TooLarge {
            at: Origin::CommandLine {
                arg_index: MAX_ARGS,
            },
            what: "the number of arguments",
            limit: MAX_ARGS as u64,
        });
    }
    let mut tool = ToolOptions::default();
    let mut action = Action::Run;
    let mut events = Vec::new();
    let mut files = Vec::new();
    let mut interval_results_default = false;
    let mut index = 0;
    let mut only_files = false;
    while index < args.len() {
        let arg_index = index + 1;
        let at = Origin::CommandLine { arg_index };
        let arg = args[index].to_str().ok_or_else(|| JobError::BadValue {
            at: at.clone(),
            option: "argument".into(),
            value: args[index].to_string_lossy().into_owned(),
            reason: "not valid UTF-8".into(),
        })?;
        index += 1;
        if only_files || !arg.starts_with('-') || arg == "-" {
            files.push(PathBuf::from(arg));
            continue;
        }
        if arg == "--" {
            only_files = true;
            continue;
        }
        let body = arg.trim_start_matches('-');
        let (name, inline_value) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (body, None),
        };
        if name == "h" {
            action = Action::Help;
            continue;
        }
        let tool_kind = TOOL_OPTIONS
            .iter()
            .find(|(tool_name, _)| *tool_name == name)
            .map(|(_, kind)| *kind);
        let job_def = lookup(name);
        let kind = match (tool_kind, job_def) {
            (Some(kind), _) => kind,
            (None, Some(def)) => def.kind,
            (None, None) => {
                if UNSUPPORTED_TOOL_OPTIONS.contains(&name) {
                    return Err(JobError::Unsupported {
                        at,
                        option: format!("--{name}"),
                        why: Default::default(),
                    });
                }
                let job_error = super::options::unknown_option(name, &at);
                if let JobError::Unsupported { .. } = job_error {
                    return Err(job_error);
                }
                let candidates = TOOL_OPTIONS
                    .iter()
                    .map(|(tool_name, _)| *tool_name)
                    .chain(super::options::all_names());
                return Err(JobError::UnknownToolOption {
                    at,
                    option: arg.to_string(),
                    suggestion: Suggestion(suggest(name, candidates).map(|s| format!("--{s}"))),
                });
            }
        };
        // A required value may be the next argument (getopt's `--bs 4k`).
        let value = match (inline_value, kind) {
            (Some(value), _) => Some(value),
            (None, ValueKind::Required) => {
                let next = args
                    .get(index)
                    .and_then(|next| next.to_str())
                    .map(str::to_string);
                match next {
                    Some(next) => {
                        index += 1;
                        Some(next)
                    }
                    None => {
                        return Err(JobError::MissingValue {
                            at,
                            option: format!("--{name}"),
                        })
                    }
                }
            }
            (None, _) => None,
        };
        if tool_kind.is_none() {
            if name == "name" {
                events.push(Event::Section(value.unwrap_or_default(), at));
            } else {
                events.push(Event::Option(name.to_string(), value, at));
            }
            continue;
        }
        let text = value.clone().unwrap_or_default();
        let bad = |error: ValueError| error.into_job_error(&at, &format!("--{name}"), &text);
        match name {
            "output-format" => tool.output_formats = parse_output_formats(&text).map_err(bad)?,
            "output" => tool.output = Some(PathBuf::from(&text)),
            // fio: --minimal is --output-format=terse.
            "minimal" => {
                tool.output_formats = OutputFormats {
                    normal: false,
                    json: false,
                    json_plus: false,
                    terse: true,
                }
            }
            "terse-version" if text.trim() != "3" => {
                return Err(bad(ValueError::new(
                    "iscsi-bench writes terse version 3 only (fio's default)",
                )));
            }
            "terse-version" => {}
            "status-interval" => {
                tool.status_interval =
                    Some(value::parse_time(&text, TimeUnit::Seconds).map_err(bad)?)
                        .filter(|interval| !interval.is_zero())
            }
            "eta" => {
                tool.eta = match text.as_str() {
                    "auto" => Eta::Auto,
                    "always" => Eta::Always,
                    "never" => Eta::Never,
                    _ => return Err(bad(ValueError::new("expected auto, always or never"))),
                }
            }
            "parse-only" => action = Action::ParseOnly,
            "showcmd" => action = Action::ShowCmd,
            "readonly" => tool.readonly = true,
            "json-histograms" => tool.json_histograms = true,
            "section" => tool.sections.push(text),
            "cmdhelp" => {
                let topic = value.unwrap_or_else(|| "all".to_string());
                return Ok(Invocation {
                    action: Action::CmdHelp(super::options::cmdhelp(&topic)?),
                    tool,
                    jobs: Vec::new(),
                });
            }
            "version" => {
                return Ok(Invocation {
                    action: Action::Version,
                    tool,
                    jobs: Vec::new(),
                })
            }
            "help" => action = Action::Help,
            "report" => tool.report_dir = Some(PathBuf::from(&text)),
            "interval-results" => match value {
                Some(text) => {
                    let interval = value::parse_time(&text, TimeUnit::Seconds).map_err(bad)?;
                    if interval.is_zero() {
                        return Err(bad(ValueError::new("the interval must be above 0")));
                    }
                    tool.interval_results = Some(interval);
                }
                None => interval_results_default = true,
            },
            _ => {}
        }
    }
    if action == Action::Help {
        return Ok(Invocation {
            action,
            tool,
            jobs: Vec::new(),
        });
    }
    if interval_results_default && tool.interval_results.is_none() {
        tool.interval_results = Some(tool.status_interval.unwrap_or(Duration::from_secs(1)));
    }

    let sections: BTreeSet<String> = tool.sections.iter().cloned().collect();
    let mut collector = Collector::new(sections, tool.readonly);
    for event in events {
        match event {
            Event::Section(name, at) => {
                if name.is_empty() {
                    return Err(JobError::MissingValue {
                        at,
                        option: "--name".into(),
                    });
                }
                collector.begin_section(&name, &at)?
            }
            Event::Option(key, value, at) => collector.option(&key, value.as_deref(), &at)?,
        }
    }
    collector.end_command_line()?;
    for path in &files {
        collector.begin_file();
        let items = IniReader::new(env).read_file(path)?;
        feed_items(&mut collector, &items)?;
        collector.end_file()?;
    }
    let jobs = collector.finish(!files.is_empty())?;
    Ok(Invocation { action, tool, jobs })
}

pub(crate) fn feed_items(collector: &mut Collector, items: &[Item]) -> Result<(), JobError> {
    for item in items {
        match item {
            Item::Section { name, at } => collector.begin_section(name, at)?,
            Item::Option { key, value, at } => collector.option(key, value.as_deref(), at)?,
        }
    }
    Ok(())
}

fn parse_output_formats(text: &str) -> Result<OutputFormats, ValueError> {
    let mut formats = OutputFormats {
        normal: false,
        json: false,
        json_plus: false,
        terse: false,
    };
    for part in text.split(',') {
        match part.trim() {
            "normal" => formats.normal = true,
            "json" => formats.json = true,
            "json+" => formats.json_plus = true,
            "terse" => formats.terse = true,
            _ => {
                return Err(ValueError::new(
                    "expected normal, terse, json or json+ (comma-separated)",
                ))
            }
        }
    }
    Ok(formats)
}
