//! `--output-format=json` and `json+`: fio 3.33's document, key for key and in fio's
//! order (`show_thread_status_json`, `add_ddir_status_json`), written with serde_json in
//! fio's layout (two-space indent, `" : "`, floats with six decimals).
//!
//! One document per run, even with a status interval: per-interval results go inside it,
//! under the job's `"iscsi_bench"` key, instead of fio's stream of concatenated documents.
//!
//! Our additions, under keys fio parsers do not look at ([`EXTENSION_KEYS`]):
//! - top level `"iscsi_bench"`: version, histogram resolution, the tool's CPU per I/O;
//! - per job `"iscsi_bench"`: failures by kind (SCSI status, sense key and ASC/ASCQ),
//!   the job threads' CPU per I/O, total-latency percentiles per direction (measured from
//!   the scheduled start when paced), the intervals, and what the engine counted about
//!   itself (`"engine"`: kernel entries, bytes copied in user space, registered-buffer I/Os).
//!
//! Percentile values and json+ `"bins"` come from HdrHistogram (3 significant digits):
//! a bin's key is the highest value its bucket holds, so reading percentiles off the bins
//! gives the same numbers as `"percentile"`. fio's own bins are its coarser buckets'
//! midpoints; tools that plot or sum bins work unchanged.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use super::{GroupStats, JobReport, PercentileOptions, RunReport};
use crate::stats::{
    dir_index, DirStats, IntervalRecord, LatencyStat, LatencySummary, Moments, DEPTH_BATCH_LABELS,
    DEPTH_LEVEL_LABELS, DIRECTIONS, LATENCY_HIGHEST_NS, LATENCY_LABELS_MS, LATENCY_LABELS_NS_US,
    LATENCY_SIGNIFICANT_DIGITS,
};

/// The name of our extension key, at the top level and in each job.
pub const EXTENSION_KEY: &str = "iscsi_bench";
/// Where our extension keys sit ("/" is the document, "jobs[]" any job).
pub const EXTENSION_KEYS: [&str; 2] = ["/iscsi_bench", "/jobs[]/iscsi_bench"];

/// `json` or `json+` (adds the latency histogram bins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Json,
    JsonPlus,
}

/// A JSON value whose objects keep their keys in insertion order (fio's order).
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    UInt(u64),
    Int(i64),
    /// Written with six decimals, as fio's `%f`; non-finite values become 0.
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The value under `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::UInt(v) => serializer.serialize_u64(*v),
            Json::Int(v) => serializer.serialize_i64(*v),
            Json::Float(v) => serializer.serialize_f64(if v.is_finite() { *v } else { 0.0 }),
            Json::Str(v) => serializer.serialize_str(v),
            Json::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Object(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

impl From<serde_json::Value> for Json {
    /// serde_json's value in ours (booleans as 0/1 and null as "", as the reader does).
    fn from(value: serde_json::Value) -> Json {
        use serde_json::Value;
        match value {
            Value::Null => Json::Str(String::new()),
            Value::Bool(b) => Json::UInt(u64::from(b)),
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => Json::UInt(u),
                (None, Some(i)) => Json::Int(i),
                _ => Json::Float(n.as_f64().unwrap_or(0.0)),
            },
            Value::String(s) => Json::Str(s),
            Value::Array(items) => Json::Array(items.into_iter().map(Json::from).collect()),
            Value::Object(map) => {
                Json::Object(map.into_iter().map(|(k, v)| (k, Json::from(v))).collect())
            }
        }
    }
}

/// Reads any JSON document keeping object keys in document order (serde_json's own
/// `Value` sorts them): lets tests and tools compare our output with fio's key for key.
impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        struct JsonVisitor;

        impl<'de> Visitor<'de> for JsonVisitor {
            type Value = Json;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value (booleans read as 0/1, null as \"\")")
            }
            fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
                Ok(Json::UInt(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
                Ok(Json::Int(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
                Ok(Json::Float(v))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
                Ok(Json::UInt(u64::from(v)))
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Str(String::new()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Json, E> {
                Ok(Json::Str(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut entries = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Json>()? {
                    entries.push((key, value));
                }
                Ok(Json::Object(entries))
            }
        }

        deserializer.deserialize_any(JsonVisitor)
    }
}

/// Builds an object in order.
#[derive(Default)]
struct Obj(Vec<(String, Json)>);

impl Obj {
    fn new() -> Obj {
        Obj::default()
    }
    fn u(mut self, key: &str, value: u64) -> Obj {
        self.0.push((key.to_string(), Json::UInt(value)));
        self
    }
    fn i(mut self, key: &str, value: i64) -> Obj {
        self.0.push((key.to_string(), Json::Int(value)));
        self
    }
    fn f(mut self, key: &str, value: f64) -> Obj {
        self.0.push((key.to_string(), Json::Float(value)));
        self
    }
    fn s(mut self, key: &str, value: &str) -> Obj {
        self.0.push((key.to_string(), Json::Str(value.to_string())));
        self
    }
    fn v(mut self, key: &str, value: Json) -> Obj {
        self.0.push((key.to_string(), value));
        self
    }
    fn push(&mut self, key: &str, value: Json) {
        self.0.push((key.to_string(), value));
    }
    fn done(self) -> Json {
        Json::Object(self.0)
    }
}

/// fio's key for a percentile: `%f` of it ("99.990000").
fn percentile_key(p: f64) -> String {
    format!("{p:.6}")
}

fn options_object(options: &[(String, String)]) -> Json {
    Json::Object(
        options
            .iter()
            .map(|(k, v)| (k.clone(), Json::Str(v.clone())))
            .collect(),
    )
}

/// `{min, max, mean, stddev, N[, percentile[, bins]]}` of one latency series.
fn latency_object(stat: Option<&LatencyStat>, percentiles: Option<&[f64]>, flavor: Flavor) -> Json {
    let empty = Moments::default();
    let moments = stat.map_or(&empty, |s| s.moments());
    let mut obj = Obj::new()
        .u("min", moments.min())
        .u("max", moments.max())
        .f("mean", moments.mean())
        .f("stddev", moments.stddev())
        .u("N", moments.count());
    if let (Some(stat), Some(list)) = (stat, percentiles) {
        if stat.count() > 0 {
            let percentile = stat
                .percentiles(list)
                .into_iter()
                .map(|(p, value)| (percentile_key(p), Json::UInt(value)))
                .collect();
            obj.push("percentile", Json::Object(percentile));
            if flavor == Flavor::JsonPlus {
                let bins = stat
                    .bins()
                    .map(|(value, count)| (value.to_string(), Json::UInt(count)))
                    .collect();
                obj.push("bins", Json::Object(bins));
            }
        }
    }
    obj.done()
}

fn direction_object(
    dir: Option<&DirStats>,
    index: usize,
    group: &GroupStats,
    percentiles: &PercentileOptions,
    flavor: Flavor,
) -> Json {
    // An absent direction reports zeros (without allocating empty histograms).
    let empty = Moments::default();
    let bytes = dir.map_or(0, |d| d.bytes);
    let ios = dir.map_or(0, |d| d.ios);
    let short_ios = dir.map_or(0, |d| d.short_ios);
    let runtime_ms = dir.map_or(0, |d| d.runtime_ms);
    let bw_kib = dir.map_or(&empty, |d| &d.bw_kib);
    let iops_samples = dir.map_or(&empty, |d| &d.iops);
    let bw_bytes = bytes
        .saturating_mul(1000)
        .checked_div(runtime_ms)
        .unwrap_or(0);
    let iops = if runtime_ms > 0 {
        ios as f64 * 1000.0 / runtime_ms as f64
    } else {
        0.0
    };
    let list = percentiles.list.as_slice();
    let pick = |on: bool| on.then_some(list);
    let bw_agg = if bw_kib.count() > 0 {
        group.percent_of_aggregate(index, bw_kib.mean())
    } else {
        0.0
    };
    Obj::new()
        .u("io_bytes", bytes)
        .u("io_kbytes", bytes >> 10)
        .u("bw_bytes", bw_bytes)
        .u("bw", bw_bytes / 1024)
        .f("iops", iops)
        .u("runtime", runtime_ms)
        .u("total_ios", ios)
        .u("short_ios", short_ios)
        .u("drop_ios", 0)
        .v(
            "slat_ns",
            latency_object(dir.map(|d| &d.slat), pick(percentiles.slat), flavor),
        )
        .v(
            "clat_ns",
            latency_object(dir.map(|d| &d.clat), pick(percentiles.clat), flavor),
        )
        .v(
            "lat_ns",
            latency_object(dir.map(|d| &d.lat), pick(percentiles.lat), flavor),
        )
        .u("bw_min", bw_kib.min())
        .u("bw_max", bw_kib.max())
        .f("bw_agg", bw_agg)
        .f("bw_mean", bw_kib.mean())
        .f("bw_dev", bw_kib.stddev())
        .u("bw_samples", bw_kib.count())
        .u("iops_min", iops_samples.min())
        .u("iops_max", iops_samples.max())
        .f("iops_mean", iops_samples.mean())
        .f("iops_stddev", iops_samples.stddev())
        .u("iops_samples", iops_samples.count())
        .done()
}

fn labelled(labels: &[&str], values: &[f64]) -> Json {
    Json::Object(
        labels
            .iter()
            .zip(values.iter())
            .map(|(label, value)| (label.to_string(), Json::Float(*value)))
            .collect(),
    )
}

fn summary_object(summary: &LatencySummary) -> Json {
    let mut obj = Obj::new()
        .u("min", summary.min_ns)
        .u("max", summary.max_ns)
        .f("mean", summary.mean_ns)
        .f("stddev", summary.stddev_ns)
        .u("N", summary.count);
    if !summary.percentiles.is_empty() {
        obj.push(
            "percentile",
            Json::Object(
                summary
                    .percentiles
                    .iter()
                    .map(|(p, v)| (percentile_key(*p), Json::UInt(*v)))
                    .collect(),
            ),
        );
    }
    obj.done()
}

/// One interval as JSON: bounds in ms since the run's start, then per direction with I/O.
pub fn interval_json(record: &IntervalRecord) -> Json {
    let mut obj = Obj::new()
        .u("start_ms", record.start_ms)
        .u("end_ms", record.end_ms)
        .u("longest_gap_ns", record.longest_gap_ns);
    if !record.paths.is_empty() {
        let paths = record
            .paths
            .iter()
            .map(|p| {
                Obj::new()
                    .s("portal", &p.portal)
                    .u("total_ios", p.ios)
                    .f("iops", p.iops)
                    .done()
            })
            .collect();
        obj.push("paths", Json::Array(paths));
    }
    for direction in DIRECTIONS {
        let Some(dir) = &record.dirs[dir_index(direction)] else {
            continue;
        };
        obj.push(
            direction.fio_name(),
            Obj::new()
                .u("total_ios", dir.ios)
                .u("io_bytes", dir.bytes)
                .f("iops", dir.iops)
                .u("bw_bytes", dir.bw_bytes_per_s)
                .v("clat_ns", summary_object(&dir.clat))
                .v("lat_ns", summary_object(&dir.lat))
                .done(),
        );
    }
    obj.done()
}

fn job_extension(job: &JobReport, portable: bool) -> Json {
    let errors = job.stats.errors();
    let check_condition = errors
        .check_condition
        .iter()
        .map(|(code, count)| {
            Obj::new()
                .u("sense_key", u64::from(code.key))
                .s(
                    "sense_key_name",
                    datapath::scsi::sense::sense_key_name(code.key),
                )
                .u("asc", u64::from(code.asc))
                .u("ascq", u64::from(code.ascq))
                .s(
                    "asc_name",
                    &datapath::scsi::sense::asc_name(code.asc, code.ascq),
                )
                .u("count", *count)
                .done()
        })
        .collect();
    let status = errors
        .status
        .iter()
        .map(|(status, count)| {
            Obj::new()
                .u("status", u64::from(*status))
                .s("name", &datapath::scsi::sense::status_name(*status))
                .u("count", *count)
                .done()
        })
        .collect();
    let first = errors
        .first
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    let errors_json = Obj::new()
        .u("total", errors.total())
        .v("check_condition", Json::Array(check_condition))
        .v("status", Json::Array(status))
        .u("short", errors.short)
        .u("timeout", errors.timeout)
        .u("transport", errors.transport)
        .s("first_error", &first)
        .done();
    let mut lat_percentiles = Obj::new();
    for direction in DIRECTIONS {
        if let Some(dir) = job.stats.dir(direction) {
            if dir.lat.count() > 0 {
                let values = dir
                    .lat
                    .percentiles(&job.percentiles.list)
                    .into_iter()
                    .map(|(p, v)| (percentile_key(p), Json::UInt(v)))
                    .collect();
                lat_percentiles.push(direction.fio_name(), Json::Object(values));
            }
        }
    }
    let recovery = &job.recovery;
    let recovery_json = Obj::new()
        .u("ios_timed_out", recovery.ios_timed_out)
        .u("late_completions", recovery.late_completions)
        .u("reconnects", recovery.reconnects)
        .u("reconnect_gap_ns_max", recovery.reconnect_gap_ns_max)
        .u("commands_resent", recovery.commands_resent)
        .u("verify_skipped_blocks", recovery.verify_skipped.total())
        .u(
            "verify_skipped_write_timed_out",
            recovery.verify_skipped.write_timed_out,
        )
        .u(
            "verify_skipped_write_failed",
            recovery.verify_skipped.write_failed,
        )
        .u(
            "verify_skipped_write_not_sent",
            recovery.verify_skipped.write_not_sent,
        )
        .done();
    let paths = job
        .paths
        .iter()
        .map(|p| {
            Obj::new()
                .s("portal", &p.portal.to_string())
                .s("state", if p.up { "up" } else { "down" })
                .s("alua", p.alua.map_or("none", |state| state.name()))
                .u("group", p.group.map_or(0, u64::from))
                .u("total_ios", p.ios)
                .u("losses", p.losses)
                .done()
        })
        .collect();
    let mut obj = Obj::new();
    if portable {
        let value = serde_json::to_value(super::portable::PortableJob::of(job))
            .unwrap_or(serde_json::Value::Null);
        obj.push("portable", Json::from(value));
    }
    let mut obj = obj.v("errors", errors_json).v("recovery", recovery_json);
    if job.engine != crate::engine::EngineCounters::default() {
        let engine = &job.engine;
        let per_io = |count: u64| match engine.ios_completed {
            0 => 0.0,
            ios => count as f64 / ios as f64,
        };
        obj.push(
            "engine",
            Obj::new()
                .u("ios_completed", engine.ios_completed)
                .u("kernel_entries", engine.kernel_entries)
                .f("kernel_entries_per_io", per_io(engine.kernel_entries))
                .u("bytes_copied", engine.bytes_copied)
                .u("ios_fixed_buffers", engine.ios_fixed_buffers)
                .done(),
        );
    }
    obj.u("longest_completion_gap_ns", job.stats.longest_gap_ns())
        .u("rate_schedule_skipped_ns", job.rate_skipped_ns)
        .v("paths", Json::Array(paths))
        .u("cpu_ns", job.stats.usage().cpu_ns())
        .f("cpu_ns_per_io", job.stats.cpu_ns_per_io().unwrap_or(0.0))
        .v("lat_ns_percentile", lat_percentiles.done())
        .v(
            "intervals",
            Json::Array(job.intervals.iter().map(interval_json).collect()),
        )
        .done()
}

pub(crate) fn job_object(
    report: &RunReport,
    job: &JobReport,
    group: &GroupStats,
    flavor: Flavor,
) -> Json {
    let stats = &job.stats;
    let mut obj = Obj::new()
        .s("jobname", &job.name)
        .u("groupid", u64::from(job.groupid))
        .i("error", i64::from(job.error))
        .u("eta", 0)
        .u("elapsed", report.elapsed_s);
    if !job.options.is_empty() {
        obj.push("job options", options_object(&job.options));
    }
    if job.unified.separate() {
        for direction in DIRECTIONS {
            obj.push(
                direction.fio_name(),
                direction_object(
                    stats.dir(direction),
                    dir_index(direction),
                    group,
                    &job.percentiles,
                    flavor,
                ),
            );
        }
        // fio's "sync" entry: the job's flushes (fsync, end_fsync).
        let sync = (job.sync.count() > 0).then_some(&job.sync);
        obj.push(
            "sync",
            Obj::new()
                .u("total_ios", job.sync.count())
                .v(
                    "lat_ns",
                    latency_object(sync, sync.map(|_| job.percentiles.list.as_slice()), flavor),
                )
                .done(),
        );
    }
    if job.unified.mixed() {
        // fio's unified_rw_reporting: "mixed" after "sync" (both) or alone (mixed). Its
        // bw_agg is against the read aggregate, as fio's index 0.
        let mixed = super::mixed_dir(stats);
        obj.push(
            "mixed",
            direction_object(mixed.as_ref(), 0, group, &job.percentiles, flavor),
        );
    }
    let runtime_ms = stats.job_runtime_ms();
    let usage = stats.usage();
    let total_ios = stats.total_ios();
    let (level, submit, complete) = stats.depth().percentages(total_ios);
    let (lat_ns, lat_us, lat_ms) = stats.latency_buckets().percentages(total_ios);
    obj.0.extend(
        Obj::new()
            .u("job_runtime", runtime_ms)
            .f("usr_cpu", stats.cpu_percent(usage.user_ns))
            .f("sys_cpu", stats.cpu_percent(usage.system_ns))
            .u("ctx", usage.context_switches)
            .u("majf", usage.major_faults)
            .u("minf", usage.minor_faults)
            .v("iodepth_level", labelled(&DEPTH_LEVEL_LABELS, &level))
            .v("iodepth_submit", labelled(&DEPTH_BATCH_LABELS, &submit))
            .v("iodepth_complete", labelled(&DEPTH_BATCH_LABELS, &complete))
            .v("latency_ns", labelled(&LATENCY_LABELS_NS_US, &lat_ns))
            .v("latency_us", labelled(&LATENCY_LABELS_NS_US, &lat_us))
            .v("latency_ms", labelled(&LATENCY_LABELS_MS, &lat_ms))
            .u("latency_depth", u64::from(job.iodepth))
            .u("latency_target", job.latency_target)
            .f("latency_percentile", job.latency_percentile)
            .u("latency_window", job.latency_window_us)
            .0,
    );
    if let Some(ss) = &job.steadystate {
        obj.push("steadystate", steadystate_object(ss));
    }
    obj.push(EXTENSION_KEY, job_extension(job, report.portable));
    obj.done()
}

/// fio's `steadystate` object (stat.c, `show_thread_status_json`), keys in its order.
fn steadystate_object(ss: &super::SteadyStateReport) -> Json {
    let ints = |values: &[u64]| Json::Array(values.iter().map(|&v| Json::UInt(v)).collect());
    let mut data = Obj::new()
        .u("bw_mean", ss.bw_mean)
        .u("iops_mean", ss.iops_mean);
    if let Some(lat_mean) = ss.lat_mean {
        data = data.u("lat_mean", lat_mean).v("lat_ns", ints(&ss.lat_ns));
    }
    let data = data.v("iops", ints(&ss.iops)).v("bw", ints(&ss.bw)).done();
    Obj::new()
        .s("ss", &ss.ss)
        .u("duration", ss.duration_s)
        .u("attained", u64::from(ss.attained))
        .s("criterion", &ss.criterion)
        .f("max_deviation", ss.max_deviation)
        .f("slope", ss.slope)
        .v("data", data)
        .done()
}

/// The whole document.
pub fn document(report: &RunReport, flavor: Flavor) -> Json {
    let groups = report.groups();
    let timestamp_s = report.timestamp_ms / 1000;
    let mut obj = Obj::new()
        .s("fio version", &report.version)
        .u("timestamp", timestamp_s)
        .u("timestamp_ms", report.timestamp_ms)
        .s(
            "time",
            &super::format::ctime(i64::try_from(timestamp_s).unwrap_or(i64::MAX)),
        );
    if !report.global_options.is_empty() {
        obj.push("global options", options_object(&report.global_options));
    }
    let jobs = report
        .jobs
        .iter()
        .map(|job| {
            let group = groups
                .iter()
                .find(|g| g.groupid == job.groupid)
                .cloned()
                .unwrap_or_default();
            job_object(report, job, &group, flavor)
        })
        .collect();
    let process_cpu_ns = report.process_usage.map_or(0, |u| u.cpu_ns());
    obj = obj.v("jobs", Json::Array(jobs));
    if report.disk_util {
        // The disks of the local files (fio 3.33's keys: no sectors); none for iSCSI LUNs,
        // where the empty list stays for parsers that expect the key.
        let disks = report
            .disks
            .iter()
            .map(|disk| {
                let c = &disk.counters;
                Obj::new()
                    .s("name", &disk.name)
                    .u("read_ios", c.ios[0])
                    .u("write_ios", c.ios[1])
                    .u("read_merges", c.merges[0])
                    .u("write_merges", c.merges[1])
                    .u("read_ticks", c.ticks[0])
                    .u("write_ticks", c.ticks[1])
                    .u("in_queue", c.time_in_queue)
                    .f("util", disk.util())
                    .done()
            })
            .collect();
        obj = obj.v("disk_util", Json::Array(disks));
    }
    obj.v(
        EXTENSION_KEY,
        Obj::new()
            .s("version", env!("CARGO_PKG_VERSION"))
            .v(
                "histogram",
                Obj::new()
                    .u("significant_digits", u64::from(LATENCY_SIGNIFICANT_DIGITS))
                    .u("highest_trackable_ns", LATENCY_HIGHEST_NS)
                    .s(
                        "percentile_value",
                        "highest value equivalent to the rank's bucket",
                    )
                    .done(),
            )
            .v("latency", latency_definitions())
            .u("total_ios", report.total_ios())
            .u("process_cpu_ns", process_cpu_ns)
            .f("cpu_ns_per_io", report.cpu_ns_per_io().unwrap_or(0.0))
            .done(),
    )
    .done()
}

/// What slat, clat and lat measure here ([`crate::stats::LATENCY_DEFINITIONS`]).
fn latency_definitions() -> Json {
    let mut obj = Obj::new();
    for (name, meaning) in crate::stats::LATENCY_DEFINITIONS {
        obj = obj.s(name, meaning);
    }
    obj.done()
}

/// serde_json formatting in fio's layout: two-space indent, `"key" : value`, floats as
/// `%f` (six decimals).
struct FioFormatter {
    pretty: serde_json::ser::PrettyFormatter<'static>,
}

impl serde_json::ser::Formatter for FioFormatter {
    fn write_f64<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        value: f64,
    ) -> std::io::Result<()> {
        write!(writer, "{value:.6}")
    }
    fn write_f32<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        value: f32,
    ) -> std::io::Result<()> {
        write!(writer, "{value:.6}")
    }
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.pretty.begin_array(writer)
    }
    fn end_array<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.pretty.end_array(writer)
    }
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.pretty.begin_array_value(writer, first)
    }
    fn end_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        self.pretty.end_array_value(writer)
    }
    fn begin_object<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.pretty.begin_object(writer)
    }
    fn end_object<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.pretty.end_object(writer)
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.pretty.begin_object_key(writer, first)
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b" : ")
    }
    fn end_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        self.pretty.end_object_value(writer)
    }
}

/// Writes the document in fio's layout, with fio's trailing newline.
pub fn write<W: std::io::Write>(
    report: &RunReport,
    flavor: Flavor,
    writer: W,
) -> std::io::Result<()> {
    let mut serializer = serde_json::Serializer::with_formatter(
        writer,
        FioFormatter {
            pretty: serde_json::ser::PrettyFormatter::with_indent(b"  "),
        },
    );
    document(report, flavor)
        .serialize(&mut serializer)
        .map_err(std::io::Error::other)?;
    let mut writer = serializer.into_inner();
    writer.write_all(b"\n")
}

/// Writes any value in fio's layout, with fio's trailing newline.
pub fn write_value<W: std::io::Write>(value: &Json, writer: W) -> std::io::Result<()> {
    let mut serializer = serde_json::Serializer::with_formatter(
        writer,
        FioFormatter {
            pretty: serde_json::ser::PrettyFormatter::with_indent(b"  "),
        },
    );
    value
        .serialize(&mut serializer)
        .map_err(std::io::Error::other)?;
    let mut writer = serializer.into_inner();
    writer.write_all(b"\n")
}

/// The document as a string.
pub fn to_string(report: &RunReport, flavor: Flavor) -> String {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = write(report, flavor, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{Direction, IoError};
    use crate::stats::{JobStats, StatsConfig};

    #[test]
    fn extension_carries_intervals_errors_and_cpu() {
        let mut stats = JobStats::new(0, StatsConfig::default());
        stats.record(Direction::Read, 4096, 10, 1_000, 5_000);
        let interval = stats.take_interval(1_000_000_000);
        stats.record_error(
            Direction::Read,
            &IoError::CheckCondition {
                key: 2,
                asc: 4,
                ascq: 1,
            },
        );
        stats.finish(1_000_000_000);
        let mut job = JobReport::new("j", 0, stats);
        job.intervals.push(interval.summarize(0, &[50.0]));
        let report = RunReport::new(0, vec![job]);
        let text = to_string(&report, Flavor::Json);
        let doc: Json = serde_json::from_str(&text).unwrap();
        let Some(Json::Array(jobs)) = doc.get("jobs") else {
            panic!("no jobs")
        };
        let ext = jobs[0].get(EXTENSION_KEY).expect("job extension");
        let Some(Json::Array(intervals)) = ext.get("intervals") else {
            panic!("no intervals")
        };
        let lat = intervals[0]
            .get("read")
            .and_then(|r| r.get("lat_ns"))
            .unwrap();
        let percentile = lat.get("percentile").and_then(|p| p.get("50.000000"));
        assert_eq!(percentile, Some(&Json::UInt(5_000)));
        assert_eq!(intervals[0].get("end_ms"), Some(&Json::UInt(1_000)));
        let errors = ext.get("errors").unwrap();
        assert_eq!(errors.get("total"), Some(&Json::UInt(1)));
        let Some(Json::Array(cc)) = errors.get("check_condition") else {
            panic!("no check conditions")
        };
        assert_eq!(
            cc[0].get("sense_key_name"),
            Some(&Json::Str("NOT READY".into()))
        );
        // Total latency percentiles, beside fio's clat ones.
        let lat_pct = ext
            .get("lat_ns_percentile")
            .and_then(|l| l.get("read"))
            .unwrap();
        assert_eq!(lat_pct.get("50.000000"), Some(&Json::UInt(5_000)));
        assert!(doc
            .get(EXTENSION_KEY)
            .and_then(|e| e.get("cpu_ns_per_io"))
            .is_some());
    }
}
