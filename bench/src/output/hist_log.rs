//! fio's completion-latency histogram log (`write_hist_log`, `log_hist_msec`,
//! `log_hist_coarseness`; fio's stat.c `add_clat_sample` and iolog.c
//! `flush_hist_samples`): `<prefix>_clat_hist.<job>.log`, a line per direction each time a
//! completion closes a window of `log_hist_msec`: `time, direction, block size, bins...`,
//! the bins being fio's 1856 latency buckets (29 groups of 64, ns; `plat_val_to_idx`)
//! counted over that window, summed `2^coarseness` at a time. A window still open at the
//! end is not written, as in fio; `log_hist_msec=0` (fio's default) writes nothing.

use std::io::Write;
use std::path::PathBuf;

use super::log_sink::{log_path, LogSink};
use super::logs::LogError;

/// fio's FIO_IO_U_PLAT_BITS and FIO_IO_U_PLAT_NR.
const PLAT_BITS: u32 = 6;
const PLAT_VAL: u64 = 1 << PLAT_BITS;
pub const PLAT_NR: usize = 29 * (1 << PLAT_BITS);

/// fio's `plat_val_to_idx`: the bucket of a latency in ns.
pub fn plat_index(value_ns: u64) -> usize {
    let msb = if value_ns == 0 {
        0
    } else {
        63 - value_ns.leading_zeros()
    };
    if msb <= PLAT_BITS {
        return value_ns as usize;
    }
    let error_bits = msb - PLAT_BITS;
    let base = u64::from(error_bits + 1) << PLAT_BITS;
    let offset = (PLAT_VAL - 1) & (value_ns >> error_bits);
    ((base + offset) as usize).min(PLAT_NR - 1)
}

#[derive(Debug)]
struct Window {
    start_ms: Option<u64>,
    bins: Vec<u64>,
}

/// One job's histogram log.
pub struct HistLog {
    path: PathBuf,
    out: LogSink,
    msec: u64,
    coarseness: u32,
    windows: [Window; 3],
}

impl std::fmt::Debug for HistLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistLog").field("path", &self.path).finish()
    }
}

impl HistLog {
    pub fn create(
        prefix: &str,
        job_number: u32,
        shared: bool,
        msec: u64,
        coarseness: u32,
    ) -> Result<HistLog, LogError> {
        let path = log_path(prefix, "clat_hist", job_number, shared);
        let out = LogSink::open(&path, shared).map_err(|source| LogError::Create {
            path: path.clone(),
            source,
        })?;
        let window = || Window {
            start_ms: None,
            bins: vec![0; PLAT_NR],
        };
        Ok(HistLog {
            path,
            out,
            msec,
            coarseness: coarseness.min(6),
            windows: [window(), window(), window()],
        })
    }

    pub fn path(&self) -> &PathBuf {
        &self.path
    }

    /// One completion of direction `index` (fio's ddir number), `clat_ns` long, `time_ms`
    /// after the job's start.
    pub fn record(
        &mut self,
        time_ms: u64,
        index: usize,
        block_size: u64,
        clat_ns: u64,
    ) -> Result<(), LogError> {
        if self.msec == 0 {
            return Ok(());
        }
        let Some(window) = self.windows.get_mut(index) else {
            return Ok(());
        };
        window.bins[plat_index(clat_ns)] += 1;
        let start = *window.start_ms.get_or_insert(time_ms);
        let this_window = time_ms.saturating_sub(start);
        if this_window < self.msec {
            return Ok(());
        }
        let stride = 1usize << self.coarseness;
        let sums: Vec<String> = window
            .bins
            .chunks(stride)
            .map(|chunk| chunk.iter().sum::<u64>().to_string())
            .collect();
        let line = format!("{time_ms}, {index}, {block_size}, {}\n", sums.join(", "));
        window.bins.iter_mut().for_each(|b| *b = 0);
        // fio: the next window starts where this one should have ended.
        window.start_ms = Some(time_ms - (this_window - self.msec));
        self.out
            .write_all(line.as_bytes())
            .map_err(|source| LogError::Write {
                path: self.path.clone(),
                source,
            })
    }

    pub fn flush(&mut self) -> Result<(), LogError> {
        self.out.finish().map_err(|source| LogError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_fios() {
        // Exact below 128 ns, then 64 buckets per power of two.
        assert_eq!(plat_index(0), 0);
        assert_eq!(plat_index(100), 100);
        assert_eq!(plat_index(128), 128);
        assert_eq!(plat_index(129), 128);
        assert_eq!(plat_index(130), 129);
        assert_eq!(plat_index(256), 192);
        assert_eq!(plat_index(u64::MAX), PLAT_NR - 1);
    }
}
