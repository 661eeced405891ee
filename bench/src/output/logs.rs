//! Log files as fio writes them (fio HOWTO "Log File Formats"; `write_lat_log`,
//! `write_bw_log`, `write_iops_log`, `log_avg_msec`, `log_offset`).
//!
//! Names: `<prefix>_<type>.<N>.log` with type `lat`, `clat`, `slat` (from
//! `write_lat_log`), `bw`, `iops`, and N the job's number counted from 1 over all jobs
//! (fio's `thread_number`), or `<prefix>_<type>.log` shared by the job's clones with
//! `per_job_logs=0` ([`super::log_sink`]). The prefix may hold a directory, as in fio.
//!
//! Lines: `time (ms), value, direction (0 read, 1 write, 2 trim), block size, [offset,]
//! priority` -- the offset column only with `log_offset`; priority is always 0 here.
//! Latencies are in ns, bandwidth in KiB/s, IOPS in I/Os per second.
//!
//! With `log_unix_epoch`, the time column of the latency, bandwidth and IOPS logs is the
//! Unix time in ms (the job's start read from the real-time clock, plus the time since),
//! so a log lines up with events another program stamped (the histogram log keeps times
//! since the start).
//!
//! Without `log_avg_msec`, latency logs have one line per I/O. With it, each direction's
//! values are averaged over windows of that length (rounded to nearest), one line per
//! window with I/O, block size and offset 0 -- fio's windowed logging. `log_window_value`
//! (`log_max_value`) writes the window's maximum instead, or both (the maximum in a column
//! after the value, in every line of the latency, bandwidth and IOPS logs, 0 where a line
//! is one I/O's). Bandwidth and IOPS
//! lines always come from the recorder's samples (every `bwavgtime`/`iopsavgtime`, which
//! default to `log_avg_msec` for a job with that log, else to 500 ms): fio's per-I/O bandwidth lines without `log_avg_msec` measure single
//! transfers and are not reproduced.

use std::io::Write;
use std::path::PathBuf;

use super::log_sink::{log_path, LogSink};

use crate::io::Direction;
use crate::job::LogWindowValue;
use crate::stats::{dir_index, Moments, RateSample};

/// Why a log file could not be written.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot create log file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write log file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The five log types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    Lat,
    Clat,
    Slat,
    Bw,
    Iops,
}

impl LogKind {
    /// The type part of the file name.
    pub fn name(self) -> &'static str {
        match self {
            LogKind::Lat => "lat",
            LogKind::Clat => "clat",
            LogKind::Slat => "slat",
            LogKind::Bw => "bw",
            LogKind::Iops => "iops",
        }
    }
}

/// `<prefix>_<type>.<job_number>.log`.
pub fn log_file_name(prefix: &str, kind: LogKind, job_number: u32) -> String {
    log_path(prefix, kind.name(), job_number, false)
        .display()
        .to_string()
}

/// Which logs one job writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// `write_lat_log`: lat, clat and slat logs.
    pub lat_prefix: Option<String>,
    /// `write_bw_log`.
    pub bw_prefix: Option<String>,
    /// `write_iops_log`.
    pub iops_prefix: Option<String>,
    /// `log_avg_msec` (0: no averaging).
    pub avg_msec: u64,
    /// The bandwidth and IOPS logs' own windows where they differ (`bwavgtime`,
    /// `iopsavgtime`: see `JobSpec::bw_sample_period`); `None`: `avg_msec`.
    pub bw_avg_msec: Option<u64>,
    pub iops_avg_msec: Option<u64>,
    /// `log_offset`: add the offset column.
    pub log_offset: bool,
    /// `log_issue_time`: add a last column, the I/O's issue time in ns after the job's
    /// start, in the clat and slat logs' per-I/O lines (0 in every other line, as fio
    /// writes it: its lat, bandwidth and IOPS samples and its windows carry none).
    pub log_issue_time: bool,
    /// `log_window_value`: a window's mean, maximum or both (then every line of the
    /// latency, bandwidth and IOPS logs has the maximum's column, 0 where not averaged).
    pub window_value: LogWindowValue,
    /// `log_unix_epoch`: times written as Unix ms ([`JobLogs::start_clock`]).
    pub unix_epoch: bool,
    /// The job's number, from 1.
    pub job_number: u32,
    /// `per_job_logs=0`: the job's clones share one file per log type, named without
    /// the number ([`super::log_sink`]).
    pub shared_files: bool,
    /// `stats=0`: the files are made but get no lines (fio records no sample for such
    /// a job and leaves its logs empty).
    pub silent: bool,
    /// `write_hist_log` with `log_hist_msec` and `log_hist_coarseness`.
    pub hist_prefix: Option<String>,
    pub hist_msec: u64,
    pub hist_coarseness: u32,
}

/// One direction's averaging window.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    values: Moments,
    start_ms: u64,
}

/// An averaged line not yet written: the last one is held back so that a window the end
/// of the job closes in the same millisecond joins it instead of repeating its time.
#[derive(Debug, Clone, Copy)]
struct HeldLine {
    time_ms: u64,
    index: usize,
    values: Moments,
}

struct LogFile {
    kind: LogKind,
    path: PathBuf,
    writer: LogSink,
    windows: [Window; 3],
    /// How early a window may close (fio allows 1 ms for sampled logs, none per I/O).
    slack_ms: u64,
    held: Option<HeldLine>,
    /// Added to every time written: 0, or the job's start in Unix ms (`log_unix_epoch`).
    epoch_ms: u64,
    window_value: LogWindowValue,
    /// `log_issue_time`: the issue-time column is written.
    issue_time: bool,
}

impl LogFile {
    fn create(
        prefix: &str,
        kind: LogKind,
        job_number: u32,
        shared: bool,
        slack_ms: u64,
        window_value: LogWindowValue,
    ) -> Result<LogFile, LogError> {
        let path = log_path(prefix, kind.name(), job_number, shared);
        let writer = LogSink::open(&path, shared).map_err(|source| LogError::Create {
            path: path.clone(),
            source,
        })?;
        Ok(LogFile {
            kind,
            path,
            writer,
            windows: [Window::default(); 3],
            slack_ms,
            held: None,
            epoch_ms: 0,
            window_value,
            issue_time: false,
        })
    }

    /// One line; `max` is the window's maximum for `log_window_value=both` (fio writes 0
    /// there in a line that is not a window's).
    fn line(
        &mut self,
        time_ms: u64,
        value: u64,
        max: u64,
        index: usize,
        bs: u64,
        offset: Option<u64>,
    ) -> Result<(), LogError> {
        self.issued_line(time_ms, value, max, index, bs, offset, 0)
    }

    /// [`line`](Self::line) with the issue time `log_issue_time` writes.
    #[allow(clippy::too_many_arguments)]
    fn issued_line(
        &mut self,
        time_ms: u64,
        value: u64,
        max: u64,
        index: usize,
        bs: u64,
        offset: Option<u64>,
        issue_ns: u64,
    ) -> Result<(), LogError> {
        let time_ms = time_ms + self.epoch_ms;
        let max = match self.window_value {
            LogWindowValue::Both => format!(", {max}"),
            LogWindowValue::Mean | LogWindowValue::Max => String::new(),
        };
        let issued = if self.issue_time {
            format!(", {issue_ns}")
        } else {
            String::new()
        };
        let result = match offset {
            Some(offset) => writeln!(
                self.writer,
                "{time_ms}, {value}{max}, {index}, {bs}, {offset}, 0{issued}"
            ),
            None => writeln!(
                self.writer,
                "{time_ms}, {value}{max}, {index}, {bs}, 0{issued}"
            ),
        };
        result.map_err(|source| LogError::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// Adds a value to a window and writes the window's mean when it is over.
    fn averaged(
        &mut self,
        time_ms: u64,
        value: u64,
        index: usize,
        avg_msec: u64,
        log_offset: bool,
    ) -> Result<(), LogError> {
        let window = &mut self.windows[index];
        window.values.add(value);
        let spent = time_ms.saturating_sub(window.start_ms);
        if spent + self.slack_ms < avg_msec {
            return Ok(());
        }
        let values = std::mem::take(&mut window.values);
        window.start_ms = time_ms - time_ms % avg_msec.max(1);
        self.hold(
            HeldLine {
                time_ms,
                index,
                values,
            },
            log_offset,
        )
    }

    /// Writes the line held so far and holds `line` instead.
    fn hold(&mut self, line: HeldLine, log_offset: bool) -> Result<(), LogError> {
        self.write_held(log_offset)?;
        self.held = Some(line);
        Ok(())
    }

    fn write_held(&mut self, log_offset: bool) -> Result<(), LogError> {
        let Some(line) = self.held.take() else {
            return Ok(());
        };
        // fio rounds the window's mean to nearest.
        let mean = (line.values.mean() + 0.5) as u64;
        let max = line.values.max();
        let value = match self.window_value {
            LogWindowValue::Max => max,
            LogWindowValue::Mean | LogWindowValue::Both => mean,
        };
        self.line(
            line.time_ms,
            value,
            max,
            line.index,
            0,
            log_offset.then_some(0),
        )
    }

    /// The end of the job: the open windows become lines (fio's `finalize_logs`). A window
    /// that closes in the millisecond of the line before it for the same direction (I/Os
    /// completed together with the one that closed that window) joins that line: one line
    /// per window, no time written twice.
    fn flush_windows(&mut self, time_ms: u64, log_offset: bool) -> Result<(), LogError> {
        for index in 0..3 {
            let values = std::mem::take(&mut self.windows[index].values);
            if values.count() == 0 {
                continue;
            }
            match self.held.as_mut() {
                Some(held) if held.index == index && held.time_ms >= time_ms => {
                    held.values.merge(&values);
                }
                _ => self.hold(
                    HeldLine {
                        time_ms,
                        index,
                        values,
                    },
                    log_offset,
                )?,
            }
        }
        self.write_held(log_offset)?;
        self.writer.finish().map_err(|source| LogError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

/// The open logs of one job.
pub struct JobLogs {
    options: LogOptions,
    files: Vec<LogFile>,
    hist: Option<super::hist_log::HistLog>,
}

impl std::fmt::Debug for JobLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobLogs")
            .field("options", &self.options)
            .field(
                "files",
                &self.files.iter().map(|l| &l.path).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl JobLogs {
    /// Creates (truncates) the files `options` asks for.
    pub fn create(options: LogOptions) -> Result<JobLogs, LogError> {
        let mut files = Vec::new();
        let n = options.job_number;
        let shared = options.shared_files;
        let window = options.window_value;
        if let Some(prefix) = &options.lat_prefix {
            for kind in [LogKind::Lat, LogKind::Clat, LogKind::Slat] {
                files.push(LogFile::create(prefix, kind, n, shared, 0, window)?);
            }
        }
        if let Some(prefix) = &options.bw_prefix {
            files.push(LogFile::create(prefix, LogKind::Bw, n, shared, 1, window)?);
        }
        if let Some(prefix) = &options.iops_prefix {
            files.push(LogFile::create(
                prefix,
                LogKind::Iops,
                n,
                shared,
                1,
                window,
            )?);
        }
        let hist = match &options.hist_prefix {
            Some(prefix) => Some(super::hist_log::HistLog::create(
                prefix,
                n,
                shared,
                options.hist_msec,
                options.hist_coarseness,
            )?),
            None => None,
        };
        for file in &mut files {
            file.issue_time = options.log_issue_time;
        }
        Ok(JobLogs {
            options,
            files,
            hist,
        })
    }

    /// The job's clock starts at `start` (real time): with `log_unix_epoch`, every time
    /// written from now on is Unix ms. Call it when the clock the times count from starts.
    pub fn start_clock(&mut self, start: std::time::SystemTime) {
        if !self.options.unix_epoch {
            return;
        }
        let epoch_ms = start
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        for file in &mut self.files {
            file.epoch_ms = epoch_ms;
        }
    }

    /// The paths of the open files.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.files
            .iter()
            .map(|f| f.path.clone())
            .chain(self.hist.iter().map(|h| h.path().clone()))
            .collect()
    }

    /// Whether any latency log is open (callers can skip `record_io` otherwise).
    pub fn wants_io(&self) -> bool {
        self.options.lat_prefix.is_some() || self.hist.is_some()
    }

    /// One completed I/O, `time_ms` after the job's start.
    #[allow(clippy::too_many_arguments)]
    pub fn record_io(
        &mut self,
        time_ms: u64,
        direction: Direction,
        block_size: u64,
        offset: u64,
        slat_ns: u64,
        clat_ns: u64,
        lat_ns: u64,
    ) -> Result<(), LogError> {
        let times = [slat_ns, clat_ns, lat_ns];
        self.record_issued_io(time_ms, direction, block_size, offset, 0, times)
    }

    /// [`record_io`](Self::record_io) of an I/O issued `issue_ns` after the job's start
    /// (`log_issue_time`); `times` are its slat, clat and lat in ns.
    pub fn record_issued_io(
        &mut self,
        time_ms: u64,
        direction: Direction,
        block_size: u64,
        offset: u64,
        issue_ns: u64,
        times: [u64; 3],
    ) -> Result<(), LogError> {
        let [slat_ns, clat_ns, lat_ns] = times;
        if self.options.silent {
            return Ok(());
        }
        let index = dir_index(direction);
        if let Some(hist) = self.hist.as_mut() {
            hist.record(time_ms, index, block_size, clat_ns)?;
        }
        let avg = self.options.avg_msec;
        let log_offset = self.options.log_offset;
        for file in &mut self.files {
            let value = match file.kind {
                LogKind::Lat => lat_ns,
                LogKind::Clat => clat_ns,
                LogKind::Slat => slat_ns,
                LogKind::Bw | LogKind::Iops => continue,
            };
            // fio's lat samples carry no issue time (0 in the column); clat's and slat's do.
            let issued = match file.kind {
                LogKind::Clat | LogKind::Slat => issue_ns,
                _ => 0,
            };
            if avg == 0 {
                file.issued_line(
                    time_ms,
                    value,
                    0,
                    index,
                    block_size,
                    log_offset.then_some(offset),
                    issued,
                )?;
            } else {
                file.averaged(time_ms, value, index, avg, log_offset)?;
            }
        }
        Ok(())
    }

    /// One bandwidth/IOPS sample from [`JobStats::tick`](crate::stats::JobStats::tick);
    /// `block_sizes` per direction is shown when not averaging (0 for mixed sizes).
    pub fn record_rates(
        &mut self,
        sample: &RateSample,
        block_sizes: [u64; 3],
    ) -> Result<(), LogError> {
        if self.options.silent {
            return Ok(());
        }
        let log_offset = self.options.log_offset;
        for file in &mut self.files {
            let (values, avg) = match file.kind {
                LogKind::Bw => (sample.bw_kib, self.options.bw_avg_msec),
                LogKind::Iops => (sample.iops, self.options.iops_avg_msec),
                _ => continue,
            };
            let avg = avg.unwrap_or(self.options.avg_msec);
            for (index, value) in values.iter().enumerate() {
                let Some(value) = *value else { continue };
                if avg == 0 {
                    let bs = block_sizes.get(index).copied().unwrap_or(0);
                    file.line(sample.time_ms, value, 0, index, bs, log_offset.then_some(0))?;
                } else {
                    file.averaged(sample.time_ms, value, index, avg, log_offset)?;
                }
            }
        }
        Ok(())
    }

    /// Writes the open windows (fio's `finalize_logs`) and flushes the files.
    pub fn finish(&mut self, time_ms: u64) -> Result<(), LogError> {
        let log_offset = self.options.log_offset;
        for file in &mut self.files {
            file.flush_windows(time_ms, log_offset)?;
        }
        if let Some(hist) = self.hist.as_mut() {
            hist.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_prefix(name: &str) -> (PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("bench-logs-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let prefix = dir.join("job").to_string_lossy().into_owned();
        (dir, prefix)
    }

    fn read(prefix: &str, kind: LogKind) -> Vec<String> {
        std::fs::read_to_string(log_file_name(prefix, kind, 3))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn names_follow_fio() {
        assert_eq!(
            log_file_name("logs/lat", LogKind::Clat, 1),
            "logs/lat_clat.1.log"
        );
        assert_eq!(log_file_name("foo", LogKind::Bw, 12), "foo_bw.12.log");
    }

    #[test]
    fn per_io_lines_and_offsets() {
        let (dir, prefix) = temp_prefix("per-io");
        let mut logs = JobLogs::create(LogOptions {
            lat_prefix: Some(prefix.clone()),
            job_number: 3,
            ..LogOptions::default()
        })
        .unwrap();
        assert!(logs.wants_io());
        logs.record_io(0, Direction::Write, 4096, 8192, 10, 200, 230)
            .unwrap();
        logs.record_io(2, Direction::Read, 512, 0, 11, 300, 330)
            .unwrap();
        logs.finish(3).unwrap();
        assert_eq!(
            read(&prefix, LogKind::Lat),
            ["0, 230, 1, 4096, 0", "2, 330, 0, 512, 0"]
        );
        assert_eq!(read(&prefix, LogKind::Clat)[0], "0, 200, 1, 4096, 0");
        assert_eq!(read(&prefix, LogKind::Slat)[1], "2, 11, 0, 512, 0");

        let mut with_offset = JobLogs::create(LogOptions {
            lat_prefix: Some(prefix.clone()),
            job_number: 3,
            log_offset: true,
            ..LogOptions::default()
        })
        .unwrap();
        with_offset
            .record_io(5, Direction::Trim, 4096, 8192, 1, 2, 3)
            .unwrap();
        with_offset.finish(6).unwrap();
        assert_eq!(read(&prefix, LogKind::Lat), ["5, 3, 2, 4096, 8192, 0"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unix_epoch_shifts_every_time_written_and_nothing_else() {
        let (dir, prefix) = temp_prefix("epoch");
        let mut logs = JobLogs::create(LogOptions {
            lat_prefix: Some(prefix.clone()),
            iops_prefix: Some(prefix.clone()),
            unix_epoch: true,
            job_number: 3,
            ..LogOptions::default()
        })
        .unwrap();
        let start = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_765_000_000_123);
        logs.start_clock(start);
        logs.record_io(7, Direction::Write, 4096, 0, 1, 200, 201)
            .unwrap();
        logs.record_rates(
            &RateSample {
                time_ms: 500,
                bw_kib: [None, Some(8), None],
                iops: [None, Some(2), None],
            },
            [4096; 3],
        )
        .unwrap();
        logs.finish(600).unwrap();
        assert_eq!(
            read(&prefix, LogKind::Clat),
            ["1765000000130, 200, 1, 4096, 0"]
        );
        assert_eq!(
            read(&prefix, LogKind::Iops),
            ["1765000000623, 2, 1, 4096, 0"]
        );

        // Without the option the clock's start changes nothing.
        let mut relative = JobLogs::create(LogOptions {
            lat_prefix: Some(prefix.clone()),
            job_number: 3,
            ..LogOptions::default()
        })
        .unwrap();
        relative.start_clock(start);
        relative
            .record_io(7, Direction::Write, 4096, 0, 1, 200, 201)
            .unwrap();
        relative.finish(8).unwrap();
        assert_eq!(read(&prefix, LogKind::Clat), ["7, 200, 1, 4096, 0"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn windows_write_their_maximum_or_both_as_asked() {
        // The values of windows_average_per_direction: reads 100, 201, 300 (mean 200),
        // one write of 900.
        for (window_value, lat, per_io) in [
            (
                LogWindowValue::Max,
                ["510, 300, 0, 0, 0", "700, 900, 1, 0, 0"],
                "5, 7, 0, 4096, 0",
            ),
            (
                LogWindowValue::Both,
                ["510, 200, 300, 0, 0, 0", "700, 900, 900, 1, 0, 0"],
                "5, 7, 0, 0, 4096, 0",
            ),
        ] {
            let (dir, prefix) = temp_prefix(window_value.fio_name());
            let options = LogOptions {
                lat_prefix: Some(prefix.clone()),
                avg_msec: 500,
                job_number: 3,
                window_value,
                ..LogOptions::default()
            };
            let mut logs = JobLogs::create(options.clone()).unwrap();
            for (time_ms, direction, lat_ns) in [
                (100, Direction::Read, 100),
                (200, Direction::Write, 900),
                (300, Direction::Read, 201),
                (510, Direction::Read, 300),
            ] {
                logs.record_io(time_ms, direction, 4096, 0, 1, lat_ns, lat_ns)
                    .unwrap();
            }
            logs.finish(700).unwrap();
            assert_eq!(read(&prefix, LogKind::Lat), lat, "{window_value:?}");
            // Without windows a line is one I/O's; `both` adds fio's 0 column.
            let mut logs = JobLogs::create(LogOptions {
                avg_msec: 0,
                ..options
            })
            .unwrap();
            logs.record_io(5, Direction::Read, 4096, 0, 1, 7, 7)
                .unwrap();
            logs.finish(6).unwrap();
            assert_eq!(read(&prefix, LogKind::Lat), [per_io], "{window_value:?}");
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn windows_average_per_direction() {
        let (dir, prefix) = temp_prefix("avg");
        let mut logs = JobLogs::create(LogOptions {
            lat_prefix: Some(prefix.clone()),
            bw_prefix: Some(prefix.clone()),
            iops_prefix: Some(prefix.clone()),
            avg_msec: 500,
            job_number: 3,
            ..LogOptions::default()
        })
        .unwrap();
        logs.record_io(100, Direction::Read, 4096, 0, 1, 100, 100)
            .unwrap();
        logs.record_io(200, Direction::Write, 4096, 0, 1, 900, 900)
            .unwrap();
        logs.record_io(300, Direction::Read, 4096, 0, 1, 201, 201)
            .unwrap();
        // Crosses the window: this value joins the read window, which closes.
        logs.record_io(510, Direction::Read, 4096, 0, 1, 300, 300)
            .unwrap();
        logs.record_rates(
            &RateSample {
                time_ms: 499,
                bw_kib: [Some(1000), None, None],
                iops: [Some(250), None, None],
            },
            [4096; 3],
        )
        .unwrap();
        logs.finish(700).unwrap();
        // Mean of 100, 201, 300 rounded; the write window closes at the end.
        assert_eq!(
            read(&prefix, LogKind::Lat),
            ["510, 200, 0, 0, 0", "700, 900, 1, 0, 0"]
        );
        assert_eq!(read(&prefix, LogKind::Bw), ["499, 1000, 0, 0, 0"]);
        assert_eq!(read(&prefix, LogKind::Iops), ["499, 250, 0, 0, 0"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_end_of_the_job_writes_no_time_twice() {
        let (dir, prefix) = temp_prefix("end");
        let mut logs = JobLogs::create(LogOptions {
            lat_prefix: Some(prefix.clone()),
            avg_msec: 1000,
            job_number: 3,
            ..LogOptions::default()
        })
        .unwrap();
        logs.record_io(400, Direction::Read, 4096, 0, 1, 100, 100)
            .unwrap();
        // This completion closes the first window; the two reaped with it, at the same
        // millisecond, open the next, and the job ends then too.
        logs.record_io(1000, Direction::Read, 4096, 0, 1, 200, 200)
            .unwrap();
        logs.record_io(1000, Direction::Read, 4096, 0, 1, 300, 300)
            .unwrap();
        logs.record_io(1000, Direction::Read, 4096, 0, 1, 400, 400)
            .unwrap();
        logs.finish(1000).unwrap();
        assert_eq!(read(&prefix, LogKind::Clat), ["1000, 250, 0, 0, 0"]);

        // A window the end closes later is a line of its own.
        let mut logs = JobLogs::create(LogOptions {
            lat_prefix: Some(prefix.clone()),
            avg_msec: 1000,
            job_number: 3,
            ..LogOptions::default()
        })
        .unwrap();
        logs.record_io(1000, Direction::Read, 4096, 0, 1, 200, 200)
            .unwrap();
        logs.record_io(1500, Direction::Read, 4096, 0, 1, 400, 400)
            .unwrap();
        logs.finish(1600).unwrap();
        assert_eq!(
            read(&prefix, LogKind::Clat),
            ["1000, 200, 0, 0, 0", "1600, 400, 0, 0, 0"]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unwritable_path_names_the_file() {
        let err = JobLogs::create(LogOptions {
            bw_prefix: Some("/nonexistent-dir-for-bench/x".into()),
            job_number: 1,
            ..LogOptions::default()
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("/nonexistent-dir-for-bench/x_bw.1.log"),
            "{err}"
        );
    }
}
