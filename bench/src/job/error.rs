//! Where a setting came from, and everything that can be wrong with a job description.

use std::fmt;
use std::path::PathBuf;

/// Where an option, a section or a job was written: a job file line, a command-line
/// argument, or nowhere (a built-in default).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Origin {
    /// Not written anywhere: a default, or a spec built in code.
    #[default]
    Builtin,
    /// A line of a job file (1-based), and the column (1-based, in characters) where the
    /// offending text starts when that helps.
    File {
        path: PathBuf,
        line: u32,
        column: Option<u32>,
    },
    /// The command-line argument with this index (1-based: `argv[1]` is 1).
    CommandLine { arg_index: usize },
}

impl Origin {
    pub(crate) fn file(path: &std::path::Path, line: u32) -> Origin {
        Origin::File {
            path: path.to_path_buf(),
            line,
            column: None,
        }
    }

    /// The same place, pointing at a column of the line (1-based). No effect on other origins.
    pub(crate) fn at_column(&self, column: u32) -> Origin {
        match self {
            Origin::File { path, line, .. } => Origin::File {
                path: path.clone(),
                line: *line,
                column: Some(column),
            },
            other => other.clone(),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Builtin => write!(f, "(built-in)"),
            Origin::File {
                path,
                line,
                column: None,
            } => write!(f, "{}:{line}", path.display()),
            Origin::File {
                path,
                line,
                column: Some(column),
            } => write!(f, "{}:{line}:{column}", path.display()),
            Origin::CommandLine { arg_index } => write!(f, "command line argument {arg_index}"),
        }
    }
}

/// A hint appended to an unknown-option error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suggestion(pub Option<String>);

impl fmt::Display for Suggestion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(name) => write!(f, " (did you mean {name:?}?)"),
            None => Ok(()),
        }
    }
}

/// Why an option is refused, if there is more to say than that it is: shown after the
/// refusal as ": why".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Why(pub Option<&'static str>);

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(why) => write!(f, ": {why}"),
            None => Ok(()),
        }
    }
}

/// Everything that can be wrong with job files, command-line options and job specs. Each
/// variant says where (`at`) and what (the option, the value, the job).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A job file or an included file could not be read.
    #[error("{at}: cannot read {path}: {source}")]
    Read {
        at: Origin,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file or a line over the parser's limits.
    #[error("{at}: {what} is over the limit of {limit}")]
    TooLarge {
        at: Origin,
        what: &'static str,
        limit: u64,
    },
    /// A line that is neither a `[section]`, an option, an `include`, nor a comment.
    #[error("{at}: cannot parse line {text:?}: {reason}")]
    Syntax {
        at: Origin,
        text: String,
        reason: &'static str,
    },
    /// An option before the first `[section]` of a file.
    #[error("{at}: option {option:?} outside of any [section]")]
    OutsideSection { at: Origin, option: String },
    /// `${NAME}` where the environment has no NAME. fio substitutes an empty string here;
    /// iscsi-bench refuses, because an empty value silently changes the job.
    #[error("{at}: environment variable {name:?} is not set")]
    UnsetEnv { at: Origin, name: String },
    /// `include` nested deeper than the limit.
    #[error("{at}: include nested deeper than {limit} levels")]
    IncludeDepth { at: Origin, limit: usize },
    /// A file that (directly or not) includes itself.
    #[error("{at}: include cycle: {path} is already being read")]
    IncludeCycle { at: Origin, path: PathBuf },
    /// A `[section]` inside an included file (fio refuses these too).
    #[error("{at}: no new [sections] in included files (section {section:?})")]
    SectionInInclude { at: Origin, section: String },
    /// An option name nobody knows.
    #[error("{at}: unknown option {option:?}{suggestion}")]
    UnknownOption {
        at: Origin,
        option: String,
        suggestion: Suggestion,
    },
    /// A fio option that iscsi-bench knows but does not implement.
    #[error("{at}: {option:?} is a fio option that iscsi-bench does not support{why}")]
    Unsupported {
        at: Origin,
        option: String,
        why: Why,
    },
    /// An option that needs a value was given none.
    #[error("{at}: option {option:?} needs a value")]
    MissingValue { at: Origin, option: String },
    /// A value that does not parse, or is out of range.
    #[error("{at}: bad value {value:?} for {option}: {reason}")]
    BadValue {
        at: Origin,
        option: String,
        value: String,
        reason: String,
    },
    /// Two settings of one job that cannot both hold.
    #[error("{at}: job {job:?}: {first} conflicts with {second}: {reason}")]
    Conflict {
        at: Origin,
        job: String,
        first: String,
        second: String,
        reason: String,
    },
    /// A job whose settings, taken together, cannot run.
    #[error("{at}: job {job:?}: {reason}")]
    InvalidJob {
        at: Origin,
        job: String,
        reason: String,
    },
    /// A job that would do no I/O: its size is zero (or smaller than one block).
    #[error("{at}: job {job:?}: size is zero: {reason}")]
    ZeroSize {
        at: Origin,
        job: String,
        reason: String,
    },
    /// A job whose region starts at or ends beyond the end of its target.
    #[error(
        "{at}: job {job:?}: offset={offset_bytes} with size={len_bytes} runs past the end \
         of the target ({target_bytes} bytes)"
    )]
    PastEnd {
        at: Origin,
        job: String,
        offset_bytes: u64,
        len_bytes: u64,
        target_bytes: u64,
    },
    /// A size or offset of the job that the target's logical block does not divide: every
    /// I/O would fail, so the job is refused once the block size is known (READ CAPACITY
    /// for a LUN, the direct-I/O alignment for a file or device).
    #[error(
        "{at}: job {job:?}: {option}={value} is not a multiple of the {block_bytes}-byte \
         logical block of {target}"
    )]
    Misaligned {
        at: Origin,
        job: String,
        option: &'static str,
        value: u64,
        block_bytes: u32,
        target: String,
    },
    /// A command-line argument that is not an option iscsi-bench knows.
    #[error("{at}: unknown command-line option {option:?}{suggestion}")]
    UnknownToolOption {
        at: Origin,
        option: String,
        suggestion: Suggestion,
    },
    /// Neither job files nor job options were given.
    #[error("no jobs defined: give a job file or job options (see --help)")]
    NoJobs,
    /// `--section=NAME` names no job section of the job files.
    #[error("--section={section}: no job section [{section}] (the job sections are: {})", if known.is_empty() { "none".to_string() } else { known.iter().map(|k| format!("[{k}]")).collect::<Vec<_>>().join(", ") })]
    NoSuchSection { section: String, known: Vec<String> },
}

impl JobError {
    /// Where the error is, for tools that want to point at it.
    pub fn origin(&self) -> Option<&Origin> {
        match self {
            JobError::Read { at, .. }
            | JobError::TooLarge { at, .. }
            | JobError::Syntax { at, .. }
            | JobError::OutsideSection { at, .. }
            | JobError::UnsetEnv { at, .. }
            | JobError::IncludeDepth { at, .. }
            | JobError::IncludeCycle { at, .. }
            | JobError::SectionInInclude { at, .. }
            | JobError::UnknownOption { at, .. }
            | JobError::Unsupported { at, .. }
            | JobError::MissingValue { at, .. }
            | JobError::BadValue { at, .. }
            | JobError::Conflict { at, .. }
            | JobError::InvalidJob { at, .. }
            | JobError::ZeroSize { at, .. }
            | JobError::PastEnd { at, .. }
            | JobError::Misaligned { at, .. }
            | JobError::UnknownToolOption { at, .. } => Some(at),
            JobError::NoJobs | JobError::NoSuchSection { .. } => None,
        }
    }
}

/// A value parser's complaint, before the caller adds the option name and place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError(pub String);

impl ValueError {
    pub(crate) fn new(reason: impl Into<String>) -> ValueError {
        ValueError(reason.into())
    }

    pub(crate) fn into_job_error(self, at: &Origin, option: &str, value: &str) -> JobError {
        JobError::BadValue {
            at: at.clone(),
            option: option.to_string(),
            value: value.to_string(),
            reason: self.0,
        }
    }
}
