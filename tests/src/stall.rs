//! What an `iscsi-bench` JSON job says about a stall (a lost path, a move, a failover),
//! for the benchmarks that print one table row per fault.

use serde_json::Value;

/// One fault's row: errors, the longest gap between completions, and IOPS before the
/// interval of the stall, in it and after it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StallRow {
    pub errors: u64,
    pub longest_gap_ms: f64,
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
            iops_before: mean(whole.get(..at).unwrap_or_default()),
            iops_during: whole.get(at).map_or(0.0, iops),
            iops_after: mean(whole.get(at + 1..).unwrap_or_default()),
        }
    }

    /// The markdown row after the case's name.
    pub fn markdown(&self, case: &str) -> String {
        format!(
            "| {case} | {} | {:.1} | {:.0} | {:.0} | {:.0} |",
            self.errors, self.longest_gap_ms, self.iops_before, self.iops_during, self.iops_after
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
}
