//! One job's report in a form that travels: what a cluster agent sends and what
//! `iscsi-bench merge` reads back from a JSON file (under the job's
//! `"iscsi_bench"."portable"` key when the run asked for `--json-histograms`).
//!
//! It holds the recorder whole ([`PortableStats`]: counters, exact moments and the
//! histograms in HdrHistogram's encoding), so reports of several hosts merge exactly, and
//! the job's interval totals (I/Os and bytes per direction), so their rates line up in
//! time across hosts.

use serde::{Deserialize, Serialize};

use super::{JobReport, PercentileOptions, RecoveryReport, UnifiedRw};
use crate::stats::{dir_index, hdr_v2::HistogramDecodeError, JobStats, PortableStats, DIRECTIONS};

/// One interval's totals: bounds in ms on the run's time axis, then (I/Os, bytes) per
/// direction (read, write, trim).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortableInterval {
    pub start_ms: u64,
    pub end_ms: u64,
    pub ios: [u64; 3],
    pub bytes: [u64; 3],
}

/// A [`JobReport`] as it travels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortableJob {
    pub name: String,
    pub groupid: u32,
    pub members: u32,
    /// The agent's process id (fio's "pid=").
    #[serde(default)]
    pub pid: u32,
    pub error: i32,
    pub error_text: String,
    pub options: Vec<(String, String)>,
    pub percentile_list: Vec<f64>,
    /// slat, clat, lat percentiles shown (1) or not (0): fio-shaped JSON has no booleans.
    pub percentiles_shown: [u8; 3],
    pub iodepth: u32,
    /// "separate", "mixed" or "both".
    pub unified: String,
    /// When the job's measurements start, ms on the run's time axis.
    pub start_ms: u64,
    pub recovery: [u64; 8],
    pub stats: PortableStats,
    pub intervals: Vec<PortableInterval>,
}

impl PortableJob {
    pub fn of(job: &JobReport) -> PortableJob {
        let r = &job.recovery;
        PortableJob {
            name: job.name.clone(),
            groupid: job.groupid,
            members: job.members,
            pid: job.pid,
            error: job.error,
            error_text: job.error_text.clone(),
            options: job.options.clone(),
            percentile_list: job.percentiles.list.clone(),
            percentiles_shown: [
                u8::from(job.percentiles.slat),
                u8::from(job.percentiles.clat),
                u8::from(job.percentiles.lat),
            ],
            iodepth: job.iodepth,
            unified: match job.unified {
                UnifiedRw::Separate => "separate",
                UnifiedRw::Mixed => "mixed",
                UnifiedRw::Both => "both",
            }
            .to_string(),
            start_ms: job.start_ms,
            recovery: [
                r.ios_timed_out,
                r.late_completions,
                r.reconnects,
                r.reconnect_gap_ns_max,
                r.commands_resent,
                r.verify_skipped.write_failed,
                r.verify_skipped.write_timed_out,
                r.verify_skipped.write_not_sent,
            ],
            stats: job.stats.to_portable(),
            intervals: job
                .intervals
                .iter()
                .map(|record| {
                    let mut interval = PortableInterval {
                        start_ms: job.start_ms + record.start_ms,
                        end_ms: job.start_ms + record.end_ms,
                        ios: [0; 3],
                        bytes: [0; 3],
                    };
                    for direction in DIRECTIONS {
                        let i = dir_index(direction);
                        if let Some(dir) = &record.dirs[i] {
                            interval.ios[i] = dir.ios;
                            interval.bytes[i] = dir.bytes;
                        }
                    }
                    interval
                })
                .collect(),
        }
    }

    /// The report back (its per-interval latency summaries are not carried: the
    /// intervals travel as totals in [`PortableJob::intervals`]).
    pub fn to_report(&self) -> Result<JobReport, HistogramDecodeError> {
        let stats = JobStats::from_portable(&self.stats)?;
        let mut job = JobReport::new(&self.name, self.groupid, stats);
        job.members = self.members.max(1);
        job.pid = self.pid;
        job.error = self.error;
        job.error_text = self.error_text.clone();
        job.options = self.options.clone();
        let [slat, clat, lat] = self.percentiles_shown;
        job.percentiles = PercentileOptions {
            list: self.percentile_list.clone(),
            slat: slat != 0,
            clat: clat != 0,
            lat: lat != 0,
        };
        job.iodepth = self.iodepth;
        job.unified = match self.unified.as_str() {
            "mixed" => UnifiedRw::Mixed,
            "both" => UnifiedRw::Both,
            _ => UnifiedRw::Separate,
        };
        job.start_ms = self.start_ms;
        let [a, b, c, d, e, f, g, h] = self.recovery;
        job.recovery = RecoveryReport {
            ios_timed_out: a,
            late_completions: b,
            reconnects: c,
            reconnect_gap_ns_max: d,
            commands_resent: e,
            verify_skipped: crate::workload::SkippedBlocks {
                write_failed: f,
                write_timed_out: g,
                write_not_sent: h,
            },
        };
        Ok(job)
    }
}
