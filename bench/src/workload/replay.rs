//! fio's `read_iolog`: the I/Os of a job come from a log instead of its pattern (fio HOWTO
//! "I/O replay" and "Trace file format"; fio's iolog.c, `read_iolog` and `read_iolog_get`).
//!
//! A log is `fio version 2 iolog` or `fio version 3 iolog`, then one line per action:
//! `[<µs>] <file> add|open|close` or `[<µs>] <file> read|write|trim|sync|datasync|wait
//! <offset> <length>` (the time only in version 3; `wait` only in version 2). The parts:
//! - [`parse_header`] and [`parse_line`]: one line, no I/O, never a panic (fuzzed);
//! - [`LogReader`]: a log file read line by line (a trace may be larger than memory: it is
//!   never held whole, which is also what `read_iolog_chunked` asks for), each error naming
//!   the file and line;
//! - [`ReplaySummary::scan`]: a first pass before the job starts, so that a bad line, a
//!   file the log never added or an offset beyond a LUN stops the run before any I/O, and so
//!   that the job's files, directions and sizes can be taken from the log as fio takes them;
//! - [`Replay`]: the second pass, handing out each I/O with the time it is due.
//!
//! fio's timing, kept here: each version 3 line waits the time since the line before it
//! (every line counts, file actions and skipped kinds too), scaled by `replay_time_scale`
//! percent; the first line, and any line while the previous time is still 0, waits nothing;
//! a time going backwards waits nothing. `replay_no_stall` waits nothing at all. Where fio
//! differs from itself, a choice: a version 2 `wait` pauses its offset in µs (the manual's
//! meaning; fio's code compares it with ms since start), and a line fio logs and skips (an
//! unknown action, a malformed line) is an error here, as the project's parsers are strict.
//! An I/O naming a file the log never added crashes fio (3.42, signal 11); here it is an
//! error naming the line.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::io::Direction;

/// The first line of each version the reader knows.
const HEADER_V2: &str = "fio version 2 iolog";
const HEADER_V3: &str = "fio version 3 iolog";

/// Longest line read (fio reads 4096 bytes a line; longer is not a log line).
pub const LINE_BYTES_MAX: usize = 4096;

/// blktrace's magic (`BLK_IO_TRACE_MAGIC`), the first 32-bit word of a binary trace with
/// its low byte the version; fio accepts either byte order.
const BLKTRACE_MAGIC: u32 = 0x6561_7400;

/// A log's format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogVersion {
    V2,
    V3,
}

/// What a line does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogAction {
    Add,
    Open,
    Close,
    Read,
    Write,
    Trim,
    Sync,
    Datasync,
    /// Version 2 only: pause `offset` µs.
    Wait,
}

impl LogAction {
    fn parse(word: &str) -> Option<LogAction> {
        Some(match word {
            "add" => LogAction::Add,
            "open" => LogAction::Open,
            "close" => LogAction::Close,
            "read" => LogAction::Read,
            "write" => LogAction::Write,
            "trim" => LogAction::Trim,
            "sync" => LogAction::Sync,
            "datasync" => LogAction::Datasync,
            "wait" => LogAction::Wait,
            _ => return None,
        })
    }

    fn is_file_action(self) -> bool {
        matches!(self, LogAction::Add | LogAction::Open | LogAction::Close)
    }

    /// The direction of a data I/O.
    pub fn direction(self) -> Option<Direction> {
        match self {
            LogAction::Read => Some(Direction::Read),
            LogAction::Write => Some(Direction::Write),
            LogAction::Trim => Some(Direction::Trim),
            _ => None,
        }
    }
}

/// One parsed line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLine<'a> {
    /// Version 3's timestamp (µs since the log started).
    pub time_us: Option<u64>,
    pub file: &'a str,
    pub action: LogAction,
    /// 0 for a file action.
    pub offset: u64,
    /// 0 for a file action.
    pub len: u32,
}

/// The version a header line names, or why it names none.
pub fn parse_header(line: &str) -> Result<LogVersion, String> {
    // fio compares the header's first bytes only; a trailing space or CR is fine there too.
    let line = line.trim_end();
    if line.starts_with(HEADER_V3) {
        Ok(LogVersion::V3)
    } else if line.starts_with(HEADER_V2) {
        Ok(LogVersion::V2)
    } else {
        Err(format!(
            "not an iolog: the first line must be {HEADER_V2:?} or {HEADER_V3:?} \
             (version 1 logs are not supported, as in fio)"
        ))
    }
}

/// One line after the header; `Ok(None)` for a blank line.
pub fn parse_line(version: LogVersion, line: &str) -> Result<Option<LogLine<'_>>, String> {
    let mut words = line.split_ascii_whitespace();
    let mut time_us = None;
    if version == LogVersion::V3 {
        let Some(word) = words.next() else {
            return Ok(None);
        };
        time_us = Some(number(word, "timestamp")?);
    }
    let Some(file) = words.next() else {
        return match time_us {
            None => Ok(None),
            Some(_) => Err("a timestamp with no file and action".into()),
        };
    };
    let Some(word) = words.next() else {
        return Err(format!("{file:?} has no action"));
    };
    let action = LogAction::parse(word).ok_or_else(|| {
        format!(
            "unknown action {word:?} (add, open, close, read, write, trim, sync, datasync, wait)"
        )
    })?;
    let (offset, len) = if action.is_file_action() {
        (0, 0)
    } else {
        let offset = words
            .next()
            .ok_or_else(|| format!("{word} needs an offset and a length"))?;
        let len = words
            .next()
            .ok_or_else(|| format!("{word} needs a length after its offset"))?;
        let len = number(len, "length")?;
        let len = u32::try_from(len).map_err(|_| format!("length {len} exceeds 4 GiB"))?;
        (number(offset, "offset")?, len)
    };
    if let Some(extra) = words.next() {
        return Err(format!(
            "unexpected {extra:?} after the {word} line's fields"
        ));
    }
    if action == LogAction::Wait && version == LogVersion::V3 {
        return Err("wait is not allowed in a version 3 log (its timestamps say when)".into());
    }
    Ok(Some(LogLine {
        time_us,
        file,
        action,
        offset,
        len,
    }))
}

fn number(word: &str, what: &str) -> Result<u64, String> {
    word.parse()
        .map_err(|_| format!("{what} {word:?} is not a whole number"))
}

/// A log that cannot be replayed, with where.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum IologError {
    #[error("read_iolog {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "read_iolog {path}: a blktrace binary trace; iscsi-bench replays fio's text iologs \
         (versions 2 and 3) only"
    )]
    Blktrace { path: PathBuf },
    #[error("read_iolog {path} line {line}: {reason}")]
    Line {
        path: PathBuf,
        line: u64,
        reason: String,
    },
}

/// The replay options of a job (fio's `replay_*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayOptions {
    pub no_stall: bool,
    /// `replay_redirect`: every line's file is this one.
    pub redirect: bool,
    /// Offsets are divided by this (0 or 1: unchanged).
    pub scale: u64,
    /// Offsets are aligned down to this power of 2 (0: unchanged).
    pub align_bytes: u64,
    pub time_scale_percent: u32,
    pub skip: crate::job::spec::ReplaySkip,
}

impl ReplayOptions {
    /// Whether a line of this kind is left out (`replay_skip`).
    fn skips(&self, action: LogAction) -> bool {
        match action {
            LogAction::Read => self.skip.read,
            LogAction::Write => self.skip.write,
            LogAction::Trim => self.skip.trim,
            LogAction::Sync => self.skip.sync,
            _ => false,
        }
    }

    /// Where an offset of the log lands (`replay_scale`, then `replay_align`).
    fn offset(&self, offset: u64) -> u64 {
        let scaled = if self.scale > 1 {
            offset / self.scale
        } else {
            offset
        };
        if self.align_bytes > 1 {
            scaled & !(self.align_bytes - 1)
        } else {
            scaled
        }
    }
}

/// A log, line by line (a file, or any reader: the fuzz target's bytes).
pub struct LogReader {
    /// The log's name in errors.
    path: PathBuf,
    input: Box<dyn BufRead + Send>,
    version: LogVersion,
    line: u64,
    text: String,
}

/// One line of a log, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// 1-based line number in the file.
    pub line: u64,
    pub time_us: Option<u64>,
    pub file: String,
    pub action: LogAction,
    pub offset: u64,
    pub len: u32,
}

impl LogReader {
    /// Opens `path` and reads its header.
    pub fn open(path: &Path) -> Result<LogReader, IologError> {
        let file = File::open(path).map_err(|source| IologError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        LogReader::new(path, Box::new(BufReader::new(file)))
    }

    /// Reads the header of a log from `input`; `path` names it in errors.
    pub fn new(path: &Path, mut input: Box<dyn BufRead + Send>) -> Result<LogReader, IologError> {
        // A binary blktrace starts with its magic (fio's is_blktrace reads the same word).
        let start = input.fill_buf().map_err(|source| IologError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        if let Some(word) = start.get(..4) {
            let word: [u8; 4] = [word[0], word[1], word[2], word[3]];
            let le = u32::from_le_bytes(word) & 0xffff_ff00;
            let be = u32::from_be_bytes(word) & 0xffff_ff00;
            if le == BLKTRACE_MAGIC || be == BLKTRACE_MAGIC {
                return Err(IologError::Blktrace {
                    path: path.to_path_buf(),
                });
            }
        }
        let mut reader = LogReader {
            path: path.to_path_buf(),
            input,
            version: LogVersion::V2,
            line: 0,
            text: String::new(),
        };
        if !reader.read_line()? {
            return Err(reader.error("empty: no iolog header".into()));
        }
        reader.version = parse_header(&reader.text).map_err(|reason| reader.error(reason))?;
        Ok(reader)
    }

    pub fn version(&self) -> LogVersion {
        self.version
    }

    /// The next line that is not blank, or `None` at the end.
    pub fn next_entry(&mut self) -> Result<Option<LogEntry>, IologError> {
        loop {
            if !self.read_line()? {
                return Ok(None);
            }
            match parse_line(self.version, &self.text) {
                Ok(None) => continue,
                Ok(Some(line)) => {
                    return Ok(Some(LogEntry {
                        line: self.line,
                        time_us: line.time_us,
                        file: line.file.to_string(),
                        action: line.action,
                        offset: line.offset,
                        len: line.len,
                    }))
                }
                Err(reason) => return Err(self.error(reason)),
            }
        }
    }

    /// Reads one line into `text`; false at the end of the file.
    fn read_line(&mut self) -> Result<bool, IologError> {
        self.text.clear();
        let mut bytes = Vec::new();
        let read = (&mut self.input)
            .take(LINE_BYTES_MAX as u64 + 1)
            .read_until(b'\n', &mut bytes)
            .map_err(|e| self.error(format!("cannot read: {e}")))?;
        if read == 0 {
            return Ok(false);
        }
        self.line += 1;
        if bytes.len() > LINE_BYTES_MAX {
            return Err(self.error(format!("longer than {LINE_BYTES_MAX} bytes")));
        }
        match String::from_utf8(bytes) {
            Ok(text) => self.text = text,
            Err(_) => return Err(self.error("not text (invalid UTF-8)".into())),
        }
        Ok(true)
    }

    fn error(&self, reason: String) -> IologError {
        IologError::Line {
            path: self.path.clone(),
            line: self.line.max(1),
            reason,
        }
    }
}

/// What a log holds, from a first pass: what the job takes from it before it starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// The files the log adds, in order (with `replay_redirect`, none).
    pub files: Vec<String>,
    /// I/Os per direction that will be replayed (after `replay_skip`).
    pub ios: crate::io::PerDir<u64>,
    pub syncs: u64,
    /// Bytes of all replayed I/Os (fio adds them up into the job's `size`).
    pub bytes: u64,
    /// The largest length per direction (fio raises the job's maximum block sizes to it).
    pub max_len: crate::io::PerDir<u32>,
    /// Per file (by the job's file index), the I/O that ends furthest into it: (line, end
    /// byte).
    pub furthest: Vec<(u64, u64)>,
    /// Per file, the I/O least aligned: (line, the largest power of 2 dividing both its
    /// offset and length), for a LUN's logical block.
    pub least_aligned: Vec<(u64, u64)>,
}

impl ReplaySummary {
    /// Reads the whole log once, checking every line.
    pub fn scan(path: &Path, options: &ReplayOptions) -> Result<ReplaySummary, IologError> {
        ReplaySummary::scan_log(LogReader::open(path)?, options)
    }

    /// [`ReplaySummary::scan`] of a log already opened.
    pub fn scan_log(
        mut reader: LogReader,
        options: &ReplayOptions,
    ) -> Result<ReplaySummary, IologError> {
        let mut files = FileTable::new(options.redirect);
        let mut summary = ReplaySummary::default();
        while let Some(entry) = reader.next_entry()? {
            let file = files
                .resolve(&entry)
                .map_err(|reason| reader.error_at(entry.line, reason))?;
            if options.skips(entry.action) {
                continue;
            }
            match entry.action {
                LogAction::Sync | LogAction::Datasync => summary.syncs += 1,
                action => {
                    let Some(direction) = action.direction() else {
                        continue;
                    };
                    *summary.ios.get_mut(direction) += 1;
                    summary.bytes = summary.bytes.saturating_add(u64::from(entry.len));
                    let max = summary.max_len.get_mut(direction);
                    *max = (*max).max(entry.len);
                    let end = options
                        .offset(entry.offset)
                        .saturating_add(u64::from(entry.len));
                    let index = file as usize;
                    if summary.furthest.len() <= index {
                        summary.furthest.resize(index + 1, (0, 0));
                    }
                    if end > summary.furthest[index].1 {
                        summary.furthest[index] = (entry.line, end);
                    }
                    let placed = options.offset(entry.offset) | u64::from(entry.len);
                    let aligned = 1u64 << placed.trailing_zeros().min(63);
                    if summary.least_aligned.len() <= index {
                        summary.least_aligned.resize(index + 1, (0, 1 << 63));
                    }
                    if aligned < summary.least_aligned[index].1 {
                        summary.least_aligned[index] = (entry.line, aligned);
                    }
                }
            }
        }
        summary.files = files.names;
        Ok(summary)
    }

    /// The byte the log's I/Os reach furthest, over all files.
    pub fn furthest_end(&self) -> u64 {
        self.furthest.iter().map(|(_, end)| *end).max().unwrap_or(0)
    }

    /// Whether the log replays any I/O (fio refuses a log with none).
    pub fn has_io(&self) -> bool {
        self.ios.read + self.ios.write + self.ios.trim > 0
    }
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("line", &self.line)
            .finish()
    }
}

impl LogReader {
    fn error_at(&self, line: u64, reason: String) -> IologError {
        IologError::Line {
            path: self.path.clone(),
            line,
            reason,
        }
    }
}

/// The log's files by name, in the order added; with a redirect, one file for all.
struct FileTable {
    redirect: bool,
    names: Vec<String>,
}

impl FileTable {
    fn new(redirect: bool) -> FileTable {
        FileTable {
            redirect,
            names: Vec::new(),
        }
    }

    /// The job's file index of a line; an `add` adds its file.
    fn resolve(&mut self, entry: &LogEntry) -> Result<u32, String> {
        if self.redirect {
            return Ok(0);
        }
        let found = self.names.iter().position(|name| *name == entry.file);
        match (entry.action, found) {
            (_, Some(index)) => Ok(index as u32),
            (LogAction::Add, None) => {
                self.names.push(entry.file.clone());
                Ok((self.names.len() - 1) as u32)
            }
            (_, None) => Err(format!(
                "{:?} is a file the log has not added (fio needs an `add` line for it \
                 first; replay_redirect= sends every line to one file)",
                entry.file
            )),
        }
    }
}

/// One step of a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayStep {
    Io {
        direction: Direction,
        file: u32,
        offset: u64,
        len: u32,
        /// When it is due, since the job started.
        due: Duration,
    },
    Sync {
        file: u32,
        due: Duration,
    },
    Done,
}

/// A log being replayed (the second pass).
pub struct Replay {
    reader: LogReader,
    options: ReplayOptions,
    files: FileTable,
    /// The previous line's timestamp (fio's `io_log_last_ttime`).
    last_time_us: u64,
    /// The schedule so far, in µs since the start (fractional: scaled waits add up).
    schedule_us: f64,
    /// An error met mid-replay (the file changed since the scan): the replay ends there.
    error: Option<IologError>,
    done: bool,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("path", &self.reader.path)
            .field("line", &self.reader.line)
            .field("schedule_us", &self.schedule_us)
            .finish()
    }
}

impl Replay {
    pub fn open(path: &Path, options: ReplayOptions) -> Result<Replay, IologError> {
        Ok(Replay::new(LogReader::open(path)?, options))
    }

    /// The replay of a log already opened.
    pub fn new(reader: LogReader, options: ReplayOptions) -> Replay {
        Replay {
            reader,
            files: FileTable::new(options.redirect),
            options,
            last_time_us: 0,
            schedule_us: 0.0,
            error: None,
            done: false,
        }
    }

    /// The next I/O or sync of the log.
    pub fn next_step(&mut self) -> ReplayStep {
        while !self.done {
            let entry = match self.reader.next_entry() {
                Ok(Some(entry)) => entry,
                Ok(None) => break,
                Err(error) => {
                    self.error = Some(error);
                    break;
                }
            };
            self.advance_clock(&entry);
            let file = match self.files.resolve(&entry) {
                Ok(file) => file,
                Err(reason) => {
                    self.error = Some(self.reader.error_at(entry.line, reason));
                    break;
                }
            };
            if self.options.skips(entry.action) {
                continue;
            }
            let due = Duration::from_micros(self.schedule_us as u64);
            match entry.action {
                LogAction::Sync | LogAction::Datasync => return ReplayStep::Sync { file, due },
                action => {
                    if let Some(direction) = action.direction() {
                        return ReplayStep::Io {
                            direction,
                            file,
                            offset: self.options.offset(entry.offset),
                            len: entry.len,
                            due,
                        };
                    }
                }
            }
        }
        self.done = true;
        ReplayStep::Done
    }

    /// The error that ended the replay early, if one did.
    pub fn error(&self) -> Option<&IologError> {
        self.error.as_ref()
    }

    /// fio's `delay_since_ttime` (version 3) and `wait` (version 2).
    fn advance_clock(&mut self, entry: &LogEntry) {
        if self.options.no_stall {
            return;
        }
        if entry.action == LogAction::Wait {
            self.schedule_us += entry.offset as f64;
            return;
        }
        let Some(time) = entry.time_us else {
            return;
        };
        if self.last_time_us != 0 && time >= self.last_time_us {
            let waited = (time - self.last_time_us) as f64;
            self.schedule_us += waited * 100.0 / f64::from(self.options.time_scale_percent.max(1));
        }
        self.last_time_us = time;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn options() -> ReplayOptions {
        ReplayOptions {
            no_stall: false,
            redirect: false,
            scale: 1,
            align_bytes: 0,
            time_scale_percent: 100,
            skip: Default::default(),
        }
    }

    fn write_log(name: &str, text: &[u8]) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "iscsi-bench-replay-{}-{name}.log",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn parses_both_versions() {
        assert_eq!(parse_header("fio version 3 iolog\n"), Ok(LogVersion::V3));
        assert_eq!(parse_header("fio version 2 iolog"), Ok(LogVersion::V2));
        assert!(parse_header("fio version 1 iolog").is_err());
        let line = parse_line(LogVersion::V3, "106 /dev/x write 4096 8192\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            line,
            LogLine {
                time_us: Some(106),
                file: "/dev/x",
                action: LogAction::Write,
                offset: 4096,
                len: 8192
            }
        );
        let line = parse_line(LogVersion::V2, "/dev/x add").unwrap().unwrap();
        assert_eq!(line.action, LogAction::Add);
        assert_eq!(parse_line(LogVersion::V2, "  \n"), Ok(None));
        for bad in [
            "x /dev/x read 0 1",
            "1 /dev/x read 0",
            "1 /dev/x frobnicate 0 1",
            "1 /dev/x read 0 99999999999",
            "1 /dev/x read 0 1 2",
            "1 /dev/x wait 10 0",
            "1 /dev/x",
        ] {
            assert!(parse_line(LogVersion::V3, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_line_names_file_and_line() {
        let path = write_log("bad", b"fio version 3 iolog\n0 f add\n5 f read zero 4096\n");
        let error = ReplaySummary::scan(&path, &options()).unwrap_err();
        let text = error.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("line 3"), "{text}");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn unadded_file_is_refused_unless_redirected() {
        let path = write_log("unadded", b"fio version 2 iolog\na add\nb write 0 4096\n");
        let error = ReplaySummary::scan(&path, &options()).unwrap_err();
        assert!(error.to_string().contains("line 3"), "{error}");
        let redirected = ReplayOptions {
            redirect: true,
            ..options()
        };
        let summary = ReplaySummary::scan(&path, &redirected).unwrap();
        assert_eq!(summary.ios.write, 1);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn blktrace_is_refused_by_name() {
        let mut bytes = 0x6561_7407u32.to_le_bytes().to_vec();
        bytes.extend([0u8; 60]);
        let path = write_log("blk", &bytes);
        let error = LogReader::open(&path).unwrap_err();
        assert!(matches!(error, IologError::Blktrace { .. }), "{error}");
        assert!(error.to_string().contains("blktrace"), "{error}");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn timing_scale_skip_and_align_follow_fio() {
        let path = write_log(
            "timing",
            b"fio version 3 iolog\n10 f add\n20 f open\n1000 f write 4097 4096\n\
              3000 f read 8191 512\n4000 f trim 0 4096\n5000 f sync 0 0\n6000 f close\n",
        );
        let replay_options = ReplayOptions {
            time_scale_percent: 200,
            align_bytes: 4096,
            skip: crate::job::spec::ReplaySkip {
                trim: true,
                ..Default::default()
            },
            ..options()
        };
        // At 200%: the open waits 10 µs after the add (the first line waits nothing),
        // the write 980 more, each halved.
        let mut replay = Replay::open(&path, replay_options.clone()).unwrap();
        let us = |n: u64| Duration::from_micros(n);
        assert_eq!(
            replay.next_step(),
            ReplayStep::Io {
                direction: Direction::Write,
                file: 0,
                offset: 4096,
                len: 4096,
                due: us(495)
            }
        );
        assert_eq!(
            replay.next_step(),
            ReplayStep::Io {
                direction: Direction::Read,
                file: 0,
                offset: 4096,
                len: 512,
                due: us(1495)
            }
        );
        // The skipped trim's wait still passes (fio keeps its time as the last one).
        assert_eq!(
            replay.next_step(),
            ReplayStep::Sync {
                file: 0,
                due: us(2495)
            }
        );
        assert_eq!(replay.next_step(), ReplayStep::Done);
        assert!(replay.error().is_none());
        let summary = ReplaySummary::scan(&path, &replay_options).unwrap();
        assert_eq!(summary.files, ["f"]);
        assert_eq!(
            (summary.ios.read, summary.ios.write, summary.ios.trim),
            (1, 1, 0)
        );
        assert_eq!(summary.bytes, 4608);
        assert_eq!(summary.furthest, [(4, 8192)]);
        assert_eq!(summary.least_aligned, [(5, 512)]);
        std::fs::remove_file(path).unwrap();
    }

    proptest! {
        /// Any text: the line parser answers without a panic, and a line it accepts is
        /// one of the two shapes.
        #[test]
        fn parse_line_never_panics(text in ".{0,80}", v3 in any::<bool>()) {
            let version = if v3 { LogVersion::V3 } else { LogVersion::V2 };
            if let Ok(Some(line)) = parse_line(version, &text) {
                prop_assert_eq!(line.time_us.is_some(), v3);
                prop_assert!(!line.file.is_empty());
            }
        }

        /// A line written from its fields reads back as those fields.
        #[test]
        fn io_lines_round_trip(time in any::<u64>(), file in "[a-z/._0-9]{1,20}",
                               action in 0usize..4, offset in any::<u64>(), len in any::<u32>()) {
            let word = ["read", "write", "trim", "sync"][action];
            let text = format!("{time} {file} {word} {offset} {len}\n");
            let line = parse_line(LogVersion::V3, &text).unwrap().unwrap();
            prop_assert_eq!(line.time_us, Some(time));
            prop_assert_eq!(line.file, file.as_str());
            prop_assert_eq!(line.offset, offset);
            prop_assert_eq!(line.len, len);
        }
    }
}
