//! fio's `write_iolog`: every I/O a job issues, one line each, in fio's iolog version 3
//! (fio HOWTO "Trace file format v3"; fio's iolog.c, `init_iolog_write`, `log_file` and
//! `log_io_u`), so that `read_iolog` here or in fio replays the job.
//!
//! ```text
//! fio version 3 iolog
//! <µs> <file> add|open|close
//! <µs> <file> read|write|trim|sync <offset> <length>
//! ```
//! Times are microseconds since the log was started (fio's `utime_since_now` of its
//! `io_log_start_time`; the manual does not give the unit, the source does). A sync line
//! carries the offset of the file's last I/O and length 0, as fio's reused I/O unit does.
//! The file is opened for appending, as fio opens it, so two runs add up in one file.
//!
//! The writer takes the time from its caller (no clock of its own), so the tests drive it
//! with fixed times.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Duration;

use super::logs::LogError;
use crate::io::Direction;

/// The first line of a version 3 log.
pub const IOLOG_V3_HEADER: &str = "fio version 3 iolog";
/// The first line of a version 2 log (read, never written: fio writes version 3).
pub const IOLOG_V2_HEADER: &str = "fio version 2 iolog";

/// The file actions of a log (fio's `file_log_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileAction {
    Add,
    Open,
    Close,
}

impl FileAction {
    pub fn name(self) -> &'static str {
        match self {
            FileAction::Add => "add",
            FileAction::Open => "open",
            FileAction::Close => "close",
        }
    }
}

/// One job's `write_iolog` file.
pub struct IologWriter {
    path: PathBuf,
    out: BufWriter<File>,
    /// The job's files as the log names them, by the job's file index.
    names: Vec<String>,
    /// The last offset written to each file, for its sync lines.
    last_offset: Vec<u64>,
    /// The first write error; later lines are dropped (one error is enough to report).
    error: Option<std::io::Error>,
}

impl std::fmt::Debug for IologWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IologWriter")
            .field("path", &self.path)
            .field("names", &self.names)
            .finish()
    }
}

impl IologWriter {
    /// Opens `path` for appending and writes the header. `names` are the job's files in
    /// the job's order (at least one).
    pub fn create(path: impl Into<PathBuf>, names: Vec<String>) -> Result<IologWriter, LogError> {
        let path = path.into();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| LogError::Create {
                path: path.clone(),
                source,
            })?;
        let mut writer = IologWriter {
            path,
            out: BufWriter::new(file),
            last_offset: vec![0; names.len()],
            names,
            error: None,
        };
        writer.line(format_args!("{IOLOG_V3_HEADER}"));
        Ok(writer)
    }

    /// The job starts: each file is added, then opened (fio logs the adds when the log is
    /// set up and the opens as it opens the files).
    pub fn start(&mut self, now: Duration) {
        for action in [FileAction::Add, FileAction::Open] {
            for file in 0..self.names.len() {
                self.file_action(now, file as u32, action);
            }
        }
    }

    /// A loop or verify phase ended with more to come: fio closes each file and opens it
    /// again there.
    pub fn reopen(&mut self, now: Duration) {
        for action in [FileAction::Close, FileAction::Open] {
            for file in 0..self.names.len() {
                self.file_action(now, file as u32, action);
            }
        }
    }

    /// The job is over: each file is closed and the log flushed.
    pub fn finish(&mut self, now: Duration) -> Result<(), LogError> {
        for file in 0..self.names.len() {
            self.file_action(now, file as u32, FileAction::Close);
        }
        if self.error.is_none() {
            if let Err(e) = self.out.flush() {
                self.error = Some(e);
            }
        }
        match self.error.take() {
            None => Ok(()),
            Some(source) => Err(LogError::Write {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// One issued I/O.
    pub fn io(&mut self, now: Duration, file: u32, direction: Direction, offset: u64, len: u32) {
        if let Some(last) = self.last_offset.get_mut(file as usize) {
            *last = offset;
        }
        let name = self.name(file);
        let us = now.as_micros();
        let out = format!("{us} {name} {} {offset} {len}", direction.fio_name());
        self.line(format_args!("{out}"));
    }

    /// One issued flush of `file`: `action` is fio's name of its kind (`sync`,
    /// `datasync`, `sync_file_range`).
    pub fn sync(&mut self, now: Duration, file: u32, action: &str) {
        let offset = self.last_offset.get(file as usize).copied().unwrap_or(0);
        let name = self.name(file);
        let out = format!("{} {name} {action} {offset} 0", now.as_micros());
        self.line(format_args!("{out}"));
    }

    fn file_action(&mut self, now: Duration, file: u32, action: FileAction) {
        let name = self.name(file);
        let out = format!("{} {name} {}", now.as_micros(), action.name());
        self.line(format_args!("{out}"));
    }

    fn name(&self, file: u32) -> String {
        self.names
            .get(file as usize)
            .or(self.names.first())
            .cloned()
            .unwrap_or_default()
    }

    fn line(&mut self, args: std::fmt::Arguments<'_>) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = writeln!(self.out, "{args}") {
            self.error = Some(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_fio_v3_lines() {
        let path =
            std::env::temp_dir().join(format!("iscsi-bench-iolog-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut writer = IologWriter::create(&path, vec!["/dev/x".into()]).unwrap();
        writer.start(Duration::from_micros(26));
        writer.io(Duration::from_micros(106), 0, Direction::Write, 4096, 4096);
        writer.sync(Duration::from_micros(110), 0, "sync");
        writer.io(Duration::from_micros(120), 0, Direction::Trim, 0, 512);
        writer.finish(Duration::from_micros(128)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "fio version 3 iolog\n26 /dev/x add\n26 /dev/x open\n106 /dev/x write 4096 4096\n\
             110 /dev/x sync 4096 0\n120 /dev/x trim 0 512\n128 /dev/x close\n"
        );
        std::fs::remove_file(&path).unwrap();
    }
}
