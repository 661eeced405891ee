//! fio's terse output, version 3 (`--minimal`, `--output-format=terse`; fio's stat.c
//! `show_thread_status_terse_all`): one `;`-separated line per job, field for field as
//! fio 3.33 writes it: version, fio version, name, group, error; read and write blocks
//! (KiB, KiB/s, IOPS, runtime, slat, clat, 20 percentile fields, lat, bandwidth), or the
//! `mixed` block alone under `unified_rw_reporting=mixed` (after them with `both`); CPU;
//! I/O depths; latency buckets in us (ns folded into the first) and ms; then the error
//! count under `continue_on_error` and the description. No disk-utilisation fields: the
//! iSCSI, null and file engines measure no disk, as fio writes none for its null engine.

use std::fmt::Write as _;

use super::{mixed_dir, GroupStats, JobReport, RunReport, UnifiedRw, FIO_COMPAT_VERSION};
use crate::io::Direction;
use crate::stats::disk_util::DiskUtil;
use crate::stats::{dir_index, DirStats, LatencyStat};

/// fio's FIO_IO_U_LIST_MAX_LEN: the percentile fields per direction.
const PERCENTILE_FIELDS: usize = 20;

/// The terse lines of every job of the run.
pub fn render(report: &RunReport) -> String {
    let groups = report.groups();
    let mut out = String::new();
    for job in &report.jobs {
        let group = groups
            .iter()
            .find(|g| g.groupid == job.groupid)
            .cloned()
            .unwrap_or_default();
        out.push_str(&job_line(job, &group, &report.disks));
    }
    out
}

/// fio's `calc_lat` printed as `;min;max;mean;dev` in us (integer min and max).
fn lat_fields(out: &mut String, stat: Option<&LatencyStat>) {
    match stat.filter(|s| s.count() > 0) {
        Some(stat) => {
            let m = stat.moments();
            let _ = write!(
                out,
                ";{};{};{:.6};{:.6}",
                m.min() / 1000,
                m.max() / 1000,
                m.mean() / 1000.0,
                m.stddev() / 1000.0
            );
        }
        None => out.push_str(";0;0;0.000000;0.000000"),
    }
}

fn direction_fields(
    out: &mut String,
    dir: Option<&DirStats>,
    index: usize,
    job: &JobReport,
    group: &GroupStats,
) {
    let bytes = dir.map_or(0, |d| d.bytes);
    let ios = dir.map_or(0, |d| d.ios);
    let runtime = dir.map_or(0, |d| d.runtime_ms);
    let bw = (bytes * 1000).checked_div(runtime).unwrap_or(0) / 1024;
    let iops = (ios * 1000).checked_div(runtime).unwrap_or(0);
    let _ = write!(out, ";{};{bw};{iops};{runtime}", bytes >> 10);
    lat_fields(out, dir.map(|d| &d.slat));
    lat_fields(out, dir.map(|d| &d.clat));
    // fio: lat percentiles when asked for, else clat ones, else none.
    // fio prints the list with zeros for a direction without samples.
    let list = &job.percentiles.list;
    let values = if job.percentiles.lat || job.percentiles.clat {
        let stat = dir.map(|d| if job.percentiles.lat { &d.lat } else { &d.clat });
        match stat.filter(|s| s.count() > 0) {
            Some(stat) => stat.percentiles(list),
            None => list.iter().map(|&p| (p, 0)).collect(),
        }
    } else {
        Vec::new()
    };
    for i in 0..PERCENTILE_FIELDS {
        match values.get(i) {
            Some((p, ns)) => {
                let _ = write!(out, ";{p:.6}%={}", ns / 1000);
            }
            None => out.push_str(";0%=0"),
        }
    }
    lat_fields(out, dir.map(|d| &d.lat));
    match dir.filter(|d| d.bw_kib.count() > 0) {
        Some(d) => {
            let agg_kib = group.agg_bytes_per_s.get(index).copied().unwrap_or(0) / 1024;
            let p_of_agg = if agg_kib > 0 {
                (d.bw_kib.mean() * 100.0 / agg_kib as f64).min(100.0)
            } else {
                100.0
            };
            let _ = write!(
                out,
                ";{};{};{p_of_agg:.6}%;{:.6};{:.6}",
                d.bw_kib.min(),
                d.bw_kib.max(),
                d.bw_kib.mean(),
                d.bw_kib.stddev()
            );
        }
        None => out.push_str(";0;0;0.000000%;0.000000;0.000000"),
    }
}

fn job_line(job: &JobReport, group: &GroupStats, disks: &[DiskUtil]) -> String {
    let stats = &job.stats;
    let mut out = format!(
        "3;{FIO_COMPAT_VERSION};{};{};{}",
        job.name, job.groupid, job.error
    );
    let mixed = mixed_dir(stats);
    if job.unified == UnifiedRw::Mixed {
        direction_fields(&mut out, mixed.as_ref(), 0, job, group);
    } else {
        for direction in [Direction::Read, Direction::Write] {
            direction_fields(
                &mut out,
                stats.dir(direction),
                dir_index(direction),
                job,
                group,
            );
        }
        if job.unified == UnifiedRw::Both {
            direction_fields(&mut out, mixed.as_ref(), 0, job, group);
        }
    }
    let usage = stats.usage();
    let _ = write!(
        out,
        ";{:.6}%;{:.6}%;{};{};{}",
        stats.cpu_percent(usage.user_ns),
        stats.cpu_percent(usage.system_ns),
        usage.context_switches,
        usage.major_faults,
        usage.minor_faults
    );
    let total_ios = stats.total_ios();
    let (levels, _, _) = stats.depth().percentages(total_ios);
    for level in levels {
        let _ = write!(out, ";{level:3.1}%");
    }
    let (lat_ns, mut lat_us, lat_ms) = stats.latency_buckets().percentages(total_ios);
    // fio's stat_calc_lat_nu: the nanosecond buckets count in the first microsecond one.
    lat_us[0] += lat_ns.iter().sum::<f64>();
    for percent in lat_us.iter().chain(lat_ms.iter()) {
        let _ = write!(out, ";{percent:3.2}%");
    }
    // fio's show_disk_util(terse): every disk of the run on every job's line.
    for disk in disks {
        let c = &disk.counters;
        let _ = write!(
            out,
            ";{};{};{};{};{};{};{};{};{:3.2}%",
            disk.name,
            c.ios[0],
            c.ios[1],
            c.merges[0],
            c.merges[1],
            c.ticks[0],
            c.ticks[1],
            c.time_in_queue,
            disk.util()
        );
    }
    let option = |name: &str| {
        job.options
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    if option("continue_on_error").is_some_and(|v| v != "none" && v != "0") {
        let errors = stats.errors();
        let _ = write!(out, ";{};{}", errors.total(), job.error);
    }
    if let Some(description) = option("description").filter(|d| !d.is_empty()) {
        let _ = write!(out, ";{description}");
    }
    out.push('\n');
    out
}
