//! fio's normal text output (`show_thread_status_normal`, `show_group_stats`): per job
//! the header, per direction the IOPS/BW line, slat/clat/lat lines with automatic units,
//! the percentile table, bandwidth and IOPS sample lines; then the latency distribution,
//! CPU, I/O depths; then a "Run status group" block per group. Layout, widths and number
//! formatting follow fio 3.33 line for line.
//!
//! Our additions are extra lines in the same style: failures by kind ("scsi errors"), the
//! CPU time of the job's threads per I/O ("cpu per IO"), and after the groups the tool's
//! own CPU per I/O.

use std::fmt::Write as _;

use super::format::{ctime, num2str, Unit};
use super::NumberStyle;
use super::{GroupStats, JobReport, RunReport};
use crate::stats::disk_util::DiskUtil;
use crate::stats::{
    dir_index, DirStats, LatencyStat, Moments, DIRECTIONS, LATENCY_LABELS_MS, LATENCY_LABELS_NS_US,
};

/// The whole report: every job, every group, our summary line.
pub fn render(report: &RunReport) -> String {
    let groups = report.groups();
    let now = ctime(i64::try_from(report.timestamp_ms / 1000).unwrap_or(i64::MAX));
    let mut out = String::from("\n");
    for job in &report.jobs {
        let group = groups
            .iter()
            .find(|g| g.groupid == job.groupid)
            .cloned()
            .unwrap_or_default();
        out.push_str(&render_job(job, &group, &now));
    }
    for group in &groups {
        // fio's unified_rw_reporting is a job option; the group's first job decides.
        let mut members = report.jobs.iter().filter(|j| j.groupid == group.groupid);
        let unified = members
            .clone()
            .next()
            .map_or(super::UnifiedRw::Separate, |j| j.unified);
        // significant_figures and unit_base too, but the group's last job decides (fio
        // copies each job's into the group's in turn).
        let numbers = members
            .next_back()
            .map_or_else(NumberStyle::default, |j| j.numbers);
        out.push_str(&render_group_styled(group, unified, numbers));
    }
    out.push_str(&render_disks(&report.disks));
    if let (Some(per_io), Some(usage)) = (report.cpu_ns_per_io(), report.process_usage) {
        let _ = writeln!(
            out,
            "\niscsi-bench CPU: {per_io:.0} nsec per I/O (usr={:.3}s, sys={:.3}s over {} I/Os)",
            usage.user_ns as f64 / 1e9,
            usage.system_ns as f64 / 1e9,
            report.total_ios()
        );
    }
    out
}

/// fio's "Disk stats (read/write):" block, one line per disk (fio 3.33's fields: no
/// sectors); nothing without disks.
pub fn render_disks(disks: &[DiskUtil]) -> String {
    if disks.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nDisk stats (read/write):\n");
    for disk in disks {
        let c = &disk.counters;
        let _ = writeln!(
            out,
            "  {}: ios={}/{}, merge={}/{}, ticks={}/{}, in_queue={}, util={:3.2}%",
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
    out
}

/// The line fio prints for a job before it starts:
/// `name: (g=0): rw=randread, bs=(R) 4096B-4096B, (W) ..., ioengine=io_uring, iodepth=32`.
pub fn job_banner(
    name: &str,
    groupid: u32,
    rw: &str,
    block_sizes: [(u64, u64); 3],
    ioengine: &str,
    iodepth: u32,
    sig_figs: usize,
) -> String {
    let bs = |(min, max): (u64, u64)| {
        format!(
            "{}-{}",
            num2str(min, sig_figs, 1, true, Unit::Byte),
            num2str(max, sig_figs, 1, true, Unit::Byte)
        )
    };
    format!(
        "{name}: (g={groupid}): rw={rw}, bs=(R) {}, (W) {}, (T) {}, ioengine={ioengine}, iodepth={iodepth}\n",
        bs(block_sizes[0]),
        bs(block_sizes[1]),
        bs(block_sizes[2])
    )
}

/// fio's "Starting N threads" line.
pub fn starting_line(jobs: usize) -> String {
    format!(
        "Starting {jobs} thread{}\n",
        if jobs == 1 { "" } else { "s" }
    )
}

/// One job's block; empty when the job did no I/O (as fio).
pub fn render_job(job: &JobReport, group: &GroupStats, now: &str) -> String {
    let stats = &job.stats;
    let total_ios = stats.total_ios();
    let any_bytes = DIRECTIONS
        .iter()
        .filter_map(|&d| stats.dir(d))
        .any(|d| d.bytes > 0);
    if !any_bytes && total_ios == 0 {
        return String::new();
    }
    let mut out = String::new();
    if job.error == 0 {
        let _ = writeln!(
            out,
            "{}: (groupid={}, jobs={}): err={:2}: pid={}: {now}",
            job.name, job.groupid, job.members, job.error, job.pid
        );
    } else {
        let _ = writeln!(
            out,
            "{}: (groupid={}, jobs={}): err={:2} ({}): pid={}: {now}",
            job.name, job.groupid, job.members, job.error, job.error_text, job.pid
        );
    }
    for direction in DIRECTIONS
        .iter()
        .copied()
        .filter(|_| job.unified.separate())
    {
        if let Some(dir) = stats.dir(direction) {
            if dir.bytes > 0 {
                direction_block(
                    &mut out,
                    direction.fio_name(),
                    dir,
                    dir_index(direction),
                    group,
                    job,
                );
            }
        }
    }
    // fio's unified_rw_reporting: the summed "mixed" block after the directions.
    if job.unified.mixed() {
        if let Some(dir) = super::mixed_dir(stats).filter(|d| d.bytes > 0) {
            direction_block(&mut out, "mixed", &dir, 0, group, job);
        }
    }
    let (lat_ns, lat_us, lat_ms) = stats.latency_buckets().percentages(total_ios);
    latency_lines(&mut out, "nsec", &LATENCY_LABELS_NS_US, &lat_ns);
    latency_lines(&mut out, "usec", &LATENCY_LABELS_NS_US, &lat_us);
    latency_lines(&mut out, "msec", &LATENCY_LABELS_MS, &lat_ms);

    let usage = stats.usage();
    let _ = writeln!(
        out,
        "  cpu          : usr={:3.2}%, sys={:3.2}%, ctx={}, majf={}, minf={}",
        stats.cpu_percent(usage.user_ns),
        stats.cpu_percent(usage.system_ns),
        usage.context_switches,
        usage.major_faults,
        usage.minor_faults
    );
    let (level, submit, complete) = stats.depth().percentages(total_ios);
    let _ = writeln!(
        out,
        "  IO depths    : 1={:3.1}%, 2={:3.1}%, 4={:3.1}%, 8={:3.1}%, 16={:3.1}%, 32={:3.1}%, >=64={:3.1}%",
        level[0], level[1], level[2], level[3], level[4], level[5], level[6]
    );
    for (label, values) in [("submit  ", submit), ("complete", complete)] {
        let _ = writeln!(
            out,
            "     {label}  : 0={:3.1}%, 4={:3.1}%, 8={:3.1}%, 16={:3.1}%, 32={:3.1}%, 64={:3.1}%, >=64={:3.1}%",
            values[0], values[1], values[2], values[3], values[4], values[5], values[6]
        );
    }
    let count = |f: fn(&DirStats) -> u64| -> [u64; 3] {
        let mut out = [0; 3];
        for direction in DIRECTIONS {
            out[dir_index(direction)] = stats.dir(direction).map_or(0, f);
        }
        out
    };
    let ios = count(|d| d.ios);
    let short = count(|d| d.short_ios);
    let _ = writeln!(
        out,
        "     issued rwts: total={},{},{},0 short={},{},{},0 dropped=0,0,0,0",
        ios[0], ios[1], ios[2], short[0], short[1], short[2]
    );
    let _ = writeln!(
        out,
        "     latency   : target=0, window=0, percentile=100.00%, depth={}",
        job.iodepth
    );
    let errors = stats.errors();
    if !errors.is_empty() {
        let kinds: Vec<String> = errors
            .describe()
            .into_iter()
            .map(|(kind, count)| format!("{kind}={count}"))
            .collect();
        let _ = writeln!(
            out,
            "  scsi errors  : total={}, {}",
            errors.total(),
            kinds.join(", ")
        );
    }
    let recovery = &job.recovery;
    if !recovery.is_empty() {
        let skipped = &recovery.verify_skipped;
        let _ = writeln!(
            out,
            "  recovery     : timed out={} (late answers={}), reconnects={} (longest gap={:.3}s, \
             resent={}), verify skipped={} blocks (write timed out={}, write failed={}, \
             not sent={})",
            recovery.ios_timed_out,
            recovery.late_completions,
            recovery.reconnects,
            recovery.reconnect_gap_ns_max as f64 / 1e9,
            recovery.commands_resent,
            skipped.total(),
            skipped.write_timed_out,
            skipped.write_failed,
            skipped.write_not_sent
        );
    }
    for path in &job.paths {
        let alua = path
            .alua
            .map(|state| format!(", alua={state} (group {})", path.group.unwrap_or(0)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  path         : {} {}{alua}, ios={}, lost={}",
            path.portal,
            if path.up { "up" } else { "down" },
            path.ios,
            path.losses
        );
    }
    // A stall is a number: shown where paths or recovery are in play (always in JSON).
    let gap_ns = stats.longest_gap_ns();
    if !job.paths.is_empty() || !recovery.is_empty() {
        let _ = writeln!(
            out,
            "  longest gap  : {:.3} msec without a completion",
            gap_ns as f64 / 1e6
        );
    }
    if let Some(per_io) = stats.cpu_ns_per_io() {
        if usage.cpu_ns() > 0 {
            let _ = writeln!(
                out,
                "  cpu per IO   : {per_io:.0} nsec (job threads usr+sys)"
            );
        }
    }
    out
}

fn direction_block(
    out: &mut String,
    name: &str,
    dir: &DirStats,
    index: usize,
    group: &GroupStats,
    job: &JobReport,
) {
    let runtime_ms = dir.runtime_ms;
    if runtime_ms == 0 {
        return;
    }
    let bw = dir.bytes.saturating_mul(1000) / runtime_ms;
    let iops = dir.ios.saturating_mul(1000) / runtime_ms;
    let numbers = job.numbers;
    let figures = numbers.sig_figs;
    let _ = writeln!(
        out,
        "  {name}: IOPS={}, BW={} ({})({}/{}msec)",
        num2str(iops, figures, 1, false, Unit::None),
        num2str(bw, figures, 1, true, numbers.rate_unit()),
        num2str(bw, figures, 1, false, numbers.rate_unit()),
        num2str(dir.bytes, figures, 1, true, Unit::Byte),
        runtime_ms
    );
    for (label, stat) in [("slat", &dir.slat), ("clat", &dir.clat), (" lat", &dir.lat)] {
        if stat.count() > 0 {
            latency_line(out, label, stat.moments());
        }
    }
    let options = &job.percentiles;
    let precision = options.precision();
    for (label, stat, on) in [
        ("slat", &dir.slat, options.slat),
        ("clat", &dir.clat, options.clat),
        ("lat", &dir.lat, options.lat),
    ] {
        if on && stat.count() > 0 {
            percentile_table(out, label, stat, &options.list, precision);
        }
    }
    if dir.bw_kib.count() > 0 {
        let m = &dir.bw_kib;
        let per = group.percent_of_aggregate(index, m.mean());
        let (mut min, mut max, mut mean, mut dev) = (m.min(), m.max(), m.mean(), m.stddev());
        // In bytes under unit_base=1 too: fio's show_ddir_status means to switch this
        // line to bits, but compares unit_base (stored as N2S_BITPERSEC, 5) with 1, so
        // fio 3.42 prints KiB/s always.
        let mut unit = "KiB";
        if mean > 1024.0 * 1024.0 {
            min /= 1024;
            max /= 1024;
            mean /= 1024.0;
            dev /= 1024.0;
            unit = "MiB";
        }
        let _ = writeln!(
            out,
            "   bw ({unit:>5}/s): min={min:5}, max={max:5}, per={per:3.2}%, avg={mean:5.2}, stdev={dev:5.2}, samples={}",
            m.count()
        );
    }
    if dir.iops.count() > 0 {
        let m = &dir.iops;
        let _ = writeln!(
            out,
            "   iops        : min={:5}, max={:5}, avg={:5.2}, stdev={:5.2}, samples={}",
            m.min(),
            m.max(),
            m.mean(),
            m.stddev(),
            m.count()
        );
    }
}

/// `    clat (usec): min=..., max=..., avg=..., stdev=...` with fio's unit choice.
fn latency_line(out: &mut String, label: &str, moments: &Moments) {
    let (mut min, mut max, mut mean, mut dev) = (
        moments.min(),
        moments.max(),
        moments.mean(),
        moments.stddev(),
    );
    let unit = if min > 2_000_000 && max > 99_999_999 && dev > 1_000_000.0 {
        min /= 1_000_000;
        max /= 1_000_000;
        mean /= 1e6;
        dev /= 1e6;
        "msec"
    } else if min > 2_000 && max > 99_999 && dev > 1_000.0 {
        min /= 1_000;
        max /= 1_000;
        mean /= 1e3;
        dev /= 1e3;
        "usec"
    } else {
        "nsec"
    };
    let _ = writeln!(
        out,
        "    {label} ({unit}): min={}, max={}, avg={mean:5.2}, stdev={dev:5.2}",
        num2str(min, 6, 1, false, Unit::None),
        num2str(max, 6, 1, false, Unit::None)
    );
}

/// fio's percentile table: unit from the range of the values shown, rounded up to it.
fn percentile_table(
    out: &mut String,
    label: &str,
    stat: &LatencyStat,
    list: &[f64],
    precision: usize,
) {
    let values = stat.percentiles(list);
    let (Some(min), Some(max)) = (
        values.iter().map(|v| v.1).min(),
        values.iter().map(|v| v.1).max(),
    ) else {
        return;
    };
    let (steps, divisor, unit) = if min > 2_000_000 && max > 99_999_999 {
        (2, 1_000_000, "msec")
    } else if min > 2_000 && max > 99_999 {
        (1, 1_000, "usec")
    } else {
        (0, 1, "nsec")
    };
    let time_width = match max / divisor {
        0 => 5,
        scaled => (scaled.ilog10() as usize + 1).max(5),
    };
    let per_line = ((80 - 7) / (precision + 10 + time_width)).max(1);
    let _ = write!(out, "    {label} percentiles ({unit}):\n     |");
    for (j, (p, value)) in values.iter().enumerate() {
        if j != 0 && j % per_line == 0 {
            out.push_str("     |");
        }
        let mut value = *value;
        for _ in 0..steps {
            value = value.div_ceil(1000);
        }
        let last = j + 1 == values.len();
        let _ = write!(
            out,
            " {p:w$.prec$}th=[{value:>tw$}]{}",
            if last { '\n' } else { ',' },
            w = precision + 3,
            prec = precision,
            tw = time_width
        );
        if last {
            break;
        }
        if j % per_line == per_line - 1 {
            out.push('\n');
        }
    }
}

/// `  lat (usec)   : 50=97.24%, 100=2.05%, ...`, five buckets a line, non-empty only.
fn latency_lines(out: &mut String, unit: &str, labels: &[&str], percents: &[f64]) {
    let mut on_line = 0usize;
    let mut any = false;
    for (label, percent) in labels.iter().zip(percents.iter()) {
        if *percent <= 0.0 {
            continue;
        }
        if on_line == 0 {
            if any {
                out.push('\n');
            }
            let _ = write!(out, "  lat ({unit})   : ");
        } else {
            out.push_str(", ");
        }
        any = true;
        let _ = write!(out, "{label}={percent:3.2}%");
        on_line = (on_line + 1) % 5;
    }
    if any {
        out.push('\n');
    }
}

/// "Run status group N (all jobs):" and one line per direction that ran.
pub fn render_group(group: &GroupStats) -> String {
    render_group_unified(group, super::UnifiedRw::Separate)
}

/// [`render_group_styled`] with fio's default number style.
pub fn render_group_unified(group: &GroupStats, unified: super::UnifiedRw) -> String {
    render_group_styled(group, unified, NumberStyle::default())
}

/// The group's lines under `unified_rw_reporting` (fio's show_group_stats and
/// show_mixed_group_stats): `  MIXED:` alone for `mixed`, after the directions for `both`,
/// summed over the directions (bandwidths and bytes add; the lowest minimum, the highest
/// maximum, the shortest and longest runs).
pub fn render_group_styled(
    group: &GroupStats,
    unified: super::UnifiedRw,
    numbers: NumberStyle,
) -> String {
    let mut out = format!("\nRun status group {} (all jobs):\n", group.groupid);
    let figures = numbers.sig_figs;
    let line =
        |out: &mut String, label: &str, agg: u64, min: u64, max: u64, io: u64, runs: (u64, u64)| {
            let rate = |v: u64, pow2: bool| num2str(v, figures, 1, pow2, numbers.rate_unit());
            let bytes = |v: u64, pow2: bool| num2str(v, figures, 1, pow2, Unit::Byte);
            let _ = writeln!(
                out,
                "{label}: bw={} ({}), {}-{} ({}-{}), io={} ({}), run={}-{}msec",
                rate(agg, true),
                rate(agg, false),
                rate(min, true),
                rate(max, true),
                rate(min, false),
                rate(max, false),
                bytes(io, true),
                bytes(io, false),
                runs.0,
                runs.1
            );
        };
    let used: Vec<usize> = (0..3).filter(|&i| group.max_run_ms[i] != 0).collect();
    if unified.separate() {
        for &index in &used {
            let label = ["   READ", "  WRITE", "   TRIM"][index];
            line(
                &mut out,
                label,
                group.agg_bytes_per_s[index],
                group.min_bw_bytes_per_s[index],
                group.max_bw_bytes_per_s[index],
                group.io_bytes[index],
                (group.min_run_ms[index], group.max_run_ms[index]),
            );
        }
    }
    if unified.mixed() && !used.is_empty() {
        let sum = |values: &[u64; 3]| used.iter().map(|&i| values[i]).sum::<u64>();
        let min = used
            .iter()
            .map(|&i| group.min_bw_bytes_per_s[i])
            .min()
            .unwrap_or(0);
        let max = used
            .iter()
            .map(|&i| group.max_bw_bytes_per_s[i])
            .max()
            .unwrap_or(0);
        let min_run = used.iter().map(|&i| group.min_run_ms[i]).min().unwrap_or(0);
        let max_run = used.iter().map(|&i| group.max_run_ms[i]).max().unwrap_or(0);
        line(
            &mut out,
            "  MIXED",
            sum(&group.agg_bytes_per_s),
            min,
            max,
            sum(&group.io_bytes),
            (min_run, max_run),
        );
    }
    out
}
