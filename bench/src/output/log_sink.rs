//! Where the lines of one log file go (fio's `per_job_logs`).
//!
//! With `per_job_logs=1` (fio's default) each job clone has its own file
//! (`<prefix>_<type>.<N>.log`), created empty and written as lines come. With
//! `per_job_logs=0` the clones of a job share `<prefix>_<type>.log`: fio keeps each
//! clone's log in memory and appends it whole when the clone ends (iolog.c `flush_log`
//! opens the file with "a"), so the clones' lines never interleave and a file left by an
//! earlier run is added to, not replaced. [`LogSink::Shared`] does the same: one
//! `write_all` on a file opened for appending, which Linux does not interleave with
//! another clone's.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// A log file's destination.
pub enum LogSink {
    /// The clone's own file, truncated at creation.
    Own(BufWriter<File>),
    /// A file the job's clones share: the lines wait here until [`LogSink::finish`].
    Shared { path: PathBuf, lines: Vec<u8> },
}

impl LogSink {
    /// Opens `path`: its own file (created empty), or, for a shared file, nothing yet.
    pub fn open(path: &Path, shared: bool) -> io::Result<LogSink> {
        if shared {
            return Ok(LogSink::Shared {
                path: path.to_path_buf(),
                lines: Vec::new(),
            });
        }
        Ok(LogSink::Own(BufWriter::new(File::create(path)?)))
    }

    /// The job's end: the lines reach the file.
    pub fn finish(&mut self) -> io::Result<()> {
        match self {
            LogSink::Own(writer) => writer.flush(),
            LogSink::Shared { path, lines } => {
                let mut file = OpenOptions::new().create(true).append(true).open(path)?;
                file.write_all(lines)?;
                lines.clear();
                Ok(())
            }
        }
    }
}

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LogSink::Own(writer) => writer.write(buf),
            LogSink::Shared { lines, .. } => {
                lines.extend_from_slice(buf);
                Ok(buf.len())
            }
        }
    }

    /// A shared file is written only by [`LogSink::finish`].
    fn flush(&mut self) -> io::Result<()> {
        match self {
            LogSink::Own(writer) => writer.flush(),
            LogSink::Shared { .. } => Ok(()),
        }
    }
}

/// The file name of one log: `<prefix>_<type>.<job_number>.log`, or without the number
/// when the job's clones share the file (`per_job_logs=0`), as fio's `gen_log_name`.
pub fn log_path(prefix: &str, type_name: &str, job_number: u32, shared: bool) -> PathBuf {
    if shared {
        PathBuf::from(format!("{prefix}_{type_name}.log"))
    } else {
        PathBuf::from(format!("{prefix}_{type_name}.{job_number}.log"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_fios() {
        assert_eq!(
            log_path("a/p", "bw", 3, false),
            PathBuf::from("a/p_bw.3.log")
        );
        assert_eq!(
            log_path("a/p", "clat_hist", 3, true),
            PathBuf::from("a/p_clat_hist.log")
        );
    }

    #[test]
    fn clones_of_a_shared_file_append_whole_and_keep_what_was_there() {
        let dir = std::env::temp_dir().join(format!("log_sink_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p_iops.log");
        std::fs::write(&path, "old\n").unwrap();
        let mut first = LogSink::open(&path, true).unwrap();
        let mut second = LogSink::open(&path, true).unwrap();
        writeln!(first, "1a").unwrap();
        writeln!(second, "2a").unwrap();
        writeln!(first, "1b").unwrap();
        first.flush().unwrap();
        // Nothing reaches the file before the clone ends.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\n");
        second.finish().unwrap();
        first.finish().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\n2a\n1a\n1b\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
