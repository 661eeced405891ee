//! What an `iscsi-bench` JSON job says about a stall (a lost path, a move, a failover),
//! for the benchmarks that print one table row per fault.

use serde_json::Value;

/// One fault's row: errors, the longest gap between completions, and IOPS before the
/// interval of the stall, in it and after it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StallRow {
    pub errors: u64,
    pub longest_gap_ms: f64,
    /// False when the run never ended by itself (it was killed): the gap lasted at least
    /// until then.
    pub ended: bool,
    pub iops_before: f64,
    pub iops_during: f64,
    pub iops_after: f64,
}

impl StallRow {
    /// From a job's `"iscsi_bench"` extension (with `--interval-results`). The stall is in
    /// the interval with the longest gap; the last interval, cut short by the end of the
    /// run, is left out.
    pub fn of(ext: &Value) -> StallRow {
        let intervals: &[Value] = ext["intervals"].as_array().map_or(&[], Vec::as_slice);
        let iops = |i: &Value| {
            i["read"]["iops"].as_f64().unwrap_or(0.0) + i["write"]["iops"].as_f64().unwrap_or(0.0)
        };
        let whole = &intervals[..intervals.len().saturating_sub(1)];
        let at = (0..whole.len())
            .max_by_key(|&k| whole[k]["longest_gap_ns"].as_u64().unwrap_or(0))
            .unwrap_or(0);
        let mean = |part: &[Value]| {
            if part.is_empty() {
                0.0
            } else {
                part.iter().map(iops).sum::<f64>() / part.len() as f64
            }
        };
        StallRow {
            errors: ext["errors"]["total"].as_u64().unwrap_or(u64::MAX),
            longest_gap_ms: ext["longest_completion_gap_ns"].as_u64().unwrap_or(0) as f64 / 1e6,
            ended: true,
            iops_before: mean(whole.get(..at).unwrap_or_default()),
            iops_during: whole.get(at).map_or(0.0, iops),
            iops_after: mean(whole.get(at + 1..).unwrap_or_default()),
        }
    }

    /// From fio's status dumps (`--status-interval` with `--output-format=json`: one
    /// document per dump, cumulative counts) of a run that was lost at `lost_at` (since
    /// the run started) and, when `killed_at` is given, never ended by itself and was
    /// killed then. Progress is only known at the dumps: the gap is the longest stretch of
    /// dumps without a completion (and, for a killed run, from the last completion seen to
    /// the kill).
    pub fn of_fio_status(stdout: &str, killed_at: Option<std::time::Duration>) -> StallRow {
        let mut dumps = Vec::new();
        let mut rest = stdout;
        while let Some(start) = rest.find('{') {
            let mut docs = serde_json::Deserializer::from_str(&rest[start..]).into_iter::<Value>();
            match docs.next() {
                Some(Ok(doc)) => {
                    let job = &doc["jobs"][0];
                    let ios = job["read"]["total_ios"].as_u64().unwrap_or(0)
                        + job["write"]["total_ios"].as_u64().unwrap_or(0);
                    let at_ms = job["job_runtime"].as_u64().unwrap_or(0) as f64;
                    let errors = job["total_err"].as_u64().unwrap_or(0)
                        + u64::from(job["error"].as_u64().unwrap_or(0) != 0);
                    dumps.push((at_ms, ios, errors));
                    rest = &rest[start + docs.byte_offset()..];
                }
                // A dump cut off by the kill, or text that is not a dump.
                _ => break,
            }
        }
        let rates: Vec<f64> = dumps
            .windows(2)
            .map(|w| (w[1].1 - w[0].1) as f64 * 1000.0 / (w[1].0 - w[0].0).max(1.0))
            .collect();
        let mut longest_gap_ms = 0f64;
        let mut last_progress_ms = dumps.first().map_or(0.0, |d| d.0);
        for w in dumps.windows(2) {
            if w[1].1 > w[0].1 {
                last_progress_ms = w[1].0;
            }
            longest_gap_ms = longest_gap_ms.max(w[1].0 - last_progress_ms);
        }
        if let Some(killed) = killed_at {
            longest_gap_ms = longest_gap_ms.max(killed.as_secs_f64() * 1000.0 - last_progress_ms);
        }
        let mean = |part: &[f64]| {
            if part.is_empty() {
                0.0
            } else {
                part.iter().sum::<f64>() / part.len() as f64
            }
        };
        if killed_at.is_some() {
            // fio stops dumping while its I/O is stuck: what came after the last progress
            // is nothing.
            let progressing = dumps
                .iter()
                .skip(1)
                .filter(|d| d.0 <= last_progress_ms)
                .count();
            return StallRow {
                errors: dumps.last().map_or(0, |d| d.2),
                longest_gap_ms,
                ended: false,
                iops_before: mean(&rates[..progressing.min(rates.len())]),
                iops_during: 0.0,
                iops_after: 0.0,
            };
        }
        let at = (0..rates.len())
            .min_by(|&a, &b| rates[a].total_cmp(&rates[b]))
            .unwrap_or(0);
        StallRow {
            errors: dumps.last().map_or(0, |d| d.2),
            longest_gap_ms,
            ended: true,
            iops_before: mean(rates.get(..at).unwrap_or_default()),
            iops_during: rates.get(at).copied().unwrap_or(0.0),
            iops_after: mean(rates.get(at + 1..).unwrap_or_default()),
        }
    }

    /// The markdown row after the case's name.
    pub fn markdown(&self, case: &str) -> String {
        let gap = if self.ended {
            format!("{:.1}", self.longest_gap_ms)
        } else {
            format!("≥ {:.0} (never resumed; killed)", self.longest_gap_ms)
        };
        format!(
            "| {case} | {} | {gap} | {:.0} | {:.0} | {:.0} |",
            self.errors, self.iops_before, self.iops_during, self.iops_after
        )
    }
}

/// The table's header, matching [`StallRow::markdown`].
pub const STALL_HEADER: &str = "| loss | errors | longest gap (ms) | IOPS before | IOPS in the loss interval | IOPS after |\n|---|---|---|---|---|---|";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stall_is_the_interval_with_the_longest_gap() {
        let interval =
            |gap: u64, r: f64| serde_json::json!({"longest_gap_ns": gap, "read": {"iops": r}});
        let ext = serde_json::json!({
            "errors": {"total": 0},
            "longest_completion_gap_ns": 26_000_000u64,
            "intervals": [
                interval(1_000, 100.0), interval(2_000, 300.0), interval(26_000_000, 50.0),
                interval(1_000, 200.0), interval(9_000_000_000, 1.0),
            ],
        });
        let row = StallRow::of(&ext);
        assert_eq!(row.errors, 0);
        assert_eq!(row.longest_gap_ms, 26.0);
        assert_eq!(
            (row.iops_before, row.iops_during, row.iops_after),
            (200.0, 50.0, 200.0)
        );
    }

    #[test]
    fn fio_status_dumps_give_the_rates_and_a_killed_runs_gap() {
        let dump = |ms: u64, ios: u64| {
            format!(
                "{{\"jobs\": [{{\"job_runtime\": {ms}, \"read\": {{\"total_ios\": {ios}}}, \
                 \"write\": {{\"total_ios\": 0}}, \"total_err\": 0, \"error\": 0}}]}}\n"
            )
        };
        // A note line first, as fio prints; progress stops after 500 ms; the last dump is
        // cut off by the kill.
        let stdout = format!(
            "note: queue depth capped\n{}{}{}{}{}{{\"jobs\": [",
            dump(0, 0),
            dump(250, 1000),
            dump(500, 2000),
            dump(750, 2000),
            dump(1000, 2000)
        );
        let row = StallRow::of_fio_status(&stdout, Some(std::time::Duration::from_secs(3)));
        assert!(!row.ended);
        assert_eq!(row.longest_gap_ms, 2500.0);
        assert_eq!(
            (row.iops_before, row.iops_during, row.iops_after),
            (4000.0, 0.0, 0.0)
        );
        assert!(row.markdown("x").contains("≥ 2500"));
        let ended = StallRow::of_fio_status(&stdout, None);
        assert_eq!(ended.longest_gap_ms, 500.0);
    }
}
