//! Job specs back to fio syntax: a job file, or command-line options (`--showcmd`).
//! Only settings that differ from the defaults are written, each in a form the parser
//! reads back to the same value (sizes in bytes, times in microseconds).

use std::time::Duration;

use super::spec::{
    BlockSize, DigestChoice, Distribution, FileServiceKind, JobSpec, LogName, PerDir, RateProcess,
    SizeSpec, Target, TransportKind, VerifyKind,
};
use super::value::render_iscsi_url;

fn size(spec: SizeSpec) -> String {
    match spec {
        SizeSpec::Bytes(bytes) => bytes.to_string(),
        SizeSpec::Percent(pct) => format!("{pct}%"),
    }
}

fn time(duration: Duration) -> String {
    format!("{}us", duration.as_micros())
}

fn flag(on: bool) -> String {
    if on { "1" } else { "0" }.to_string()
}

/// `a,b,c` with an empty slot where `render` gives None (keeps that direction).
fn per_dir<T>(values: &PerDir<T>, mut render: impl FnMut(&T) -> Option<String>) -> String {
    let parts: Vec<String> = values
        .each()
        .iter()
        .map(|(_, value)| render(value).unwrap_or_default())
        .collect();
    parts.join(",")
}

fn center(center: Option<f64>) -> String {
    center.map(|c| format!(":{c}")).unwrap_or_default()
}

fn log_name(log: &LogName) -> Option<String> {
    match log {
        LogName::JobName => None,
        LogName::Prefix(prefix) => Some(prefix.clone()),
    }
}

fn escape_colons(text: &str) -> String {
    text.replace(':', "\\:")
}

/// The options that make `spec` from the defaults, in a stable order. `None` values are
/// bare options.
pub fn spec_options(spec: &JobSpec) -> Vec<(&'static str, Option<String>)> {
    let default = JobSpec::new(spec.name.clone());
    let mut out: Vec<(&'static str, Option<String>)> = Vec::new();
    let mut push = |name: &'static str, value: String| out.push((name, Some(value)));

    // kb_base first: it changes how later sizes read (they are written in bytes anyway).
    if spec.kb_base != default.kb_base {
        push("kb_base", spec.kb_base.to_string());
    }
    if let Some(description) = &spec.description {
        push("description", description.clone());
    }
    if let Some(engine) = spec.ioengine {
        push("ioengine", engine.name().to_string());
    }
    if let Some(target) = &spec.filename {
        let text: Vec<String> = std::iter::once(target)
            .chain(&spec.more_filenames)
            .map(|target| match target {
                Target::Iscsi(url) => render_iscsi_url(url),
                Target::Path(path) => escape_colons(&path.to_string_lossy()),
                Target::Null => "null".to_string(),
            })
            .collect();
        push("filename", text.join(":"));
    }
    if spec.file_service != default.file_service {
        let kind = match spec.file_service.kind {
            FileServiceKind::RoundRobin => "roundrobin",
            FileServiceKind::Sequential => "sequential",
            FileServiceKind::Random => "random",
        };
        push(
            "file_service_type",
            format!("{kind}:{}", spec.file_service.switch_after_ios),
        );
    }
    for (name, value, default_value) in [
        ("direct", spec.direct, default.direct),
        ("fixedbufs", spec.fixedbufs, default.fixedbufs),
        ("registerfiles", spec.registerfiles, default.registerfiles),
        ("sqthread_poll", spec.sqthread_poll, default.sqthread_poll),
        ("randrepeat", spec.randrepeat, default.randrepeat),
        ("norandommap", spec.norandommap, default.norandommap),
        ("time_based", spec.time_based, default.time_based),
        ("verify_fatal", spec.verify_fatal, default.verify_fatal),
        ("do_verify", spec.do_verify, default.do_verify),
        (
            "group_reporting",
            spec.group_reporting,
            default.group_reporting,
        ),
        ("stonewall", spec.stonewall, default.stonewall),
        ("new_group", spec.new_group, default.new_group),
        (
            "clat_percentiles",
            spec.clat_percentiles,
            default.clat_percentiles,
        ),
        (
            "lat_percentiles",
            spec.lat_percentiles,
            default.lat_percentiles,
        ),
        (
            "slat_percentiles",
            spec.slat_percentiles,
            default.slat_percentiles,
        ),
    ] {
        if value != default_value {
            push(name, flag(value));
        }
    }
    if let Some(size_spec) = spec.size {
        push("size", size(size_spec));
    }
    if spec.offset != default.offset {
        push("offset", size(spec.offset));
    }
    if let Some(increment) = spec.offset_increment {
        push("offset_increment", size(increment));
    }
    if let Some(io_size) = spec.io_size {
        push("io_size", size(io_size));
    }
    if let Some(count) = spec.number_ios {
        push("number_ios", count.to_string());
    }
    if spec.loops != default.loops {
        push("loops", spec.loops.to_string());
    }
    if spec.rw != default.rw {
        let modifier = spec
            .rw
            .offset_modifier
            .map(|nr| format!(":{nr}"))
            .unwrap_or_default();
        push("rw", format!("{}{modifier}", spec.rw.kind.fio_name()));
    }
    if spec.rwmixread != default.rwmixread {
        push("rwmixread", spec.rwmixread.to_string());
    }
    // Block sizes: one option per kind, each setting only its own directions.
    let fixed = per_dir(&spec.block_size, |bs| match bs {
        BlockSize::Fixed(len) => Some(len.to_string()),
        _ => None,
    });
    let range = per_dir(&spec.block_size, |bs| match bs {
        BlockSize::Range(range) => Some(format!("{}-{}", range.min, range.max)),
        _ => None,
    });
    let split = per_dir(&spec.block_size, |bs| match bs {
        BlockSize::Split(entries) => Some(
            entries
                .iter()
                .map(|entry| format!("{}/{}", entry.len_bytes, entry.percent))
                .collect::<Vec<_>>()
                .join(":"),
        ),
        _ => None,
    });
    if spec.block_size != default.block_size {
        for (name, text) in [("bs", fixed), ("bsrange", range), ("bssplit", split)] {
            if text != ",," {
                push(name, text);
            }
        }
    }
    if spec.block_align != default.block_align {
        push(
            "blockalign",
            per_dir(&spec.block_align, |align| {
                Some(align.unwrap_or(0).to_string())
            }),
        );
    }
    if spec.random_distribution != default.random_distribution {
        push(
            "random_distribution",
            match spec.random_distribution {
                Distribution::Random => "random".to_string(),
                Distribution::Zipf { theta, center: c } => format!("zipf:{theta}{}", center(c)),
                Distribution::Pareto { power, center: c } => format!("pareto:{power}{}", center(c)),
                Distribution::Normal {
                    deviation_percent,
                    center: c,
                } => format!("normal:{deviation_percent}{}", center(c)),
            },
        );
    }
    if let Some(seed) = spec.randseed {
        push("randseed", seed.to_string());
    }
    for (name, value, default_value) in [
        ("iodepth", spec.iodepth, default.iodepth),
        (
            "iodepth_batch_submit",
            spec.iodepth_batch_submit,
            default.iodepth_batch_submit,
        ),
        (
            "iodepth_batch_complete_min",
            spec.iodepth_batch_complete_min,
            default.iodepth_batch_complete_min,
        ),
        ("numjobs", spec.numjobs, default.numjobs),
        (
            "thinktime_blocks",
            spec.thinktime_blocks,
            default.thinktime_blocks,
        ),
    ] {
        if value != default_value {
            push(name, value.to_string());
        }
    }
    if let Some(max) = spec.iodepth_batch_complete_max {
        push("iodepth_batch_complete_max", max.to_string());
    }
    if let Some(runtime) = spec.runtime {
        push("runtime", time(runtime));
    }
    if spec.ramp_time != default.ramp_time {
        push("ramp_time", time(spec.ramp_time));
    }
    if spec.startdelay != default.startdelay {
        push(
            "startdelay",
            format!(
                "{}-{}",
                time(spec.startdelay.min),
                time(spec.startdelay.max)
            ),
        );
    }
    if spec.rate != default.rate {
        push(
            "rate",
            per_dir(&spec.rate, |r| Some(r.unwrap_or(0).to_string())),
        );
    }
    if spec.rate_iops != default.rate_iops {
        push(
            "rate_iops",
            per_dir(&spec.rate_iops, |r| Some(r.unwrap_or(0).to_string())),
        );
    }
    if spec.rate_min != default.rate_min {
        push(
            "rate_min",
            per_dir(&spec.rate_min, |r| Some(r.unwrap_or(0).to_string())),
        );
    }
    if spec.rate_iops_min != default.rate_iops_min {
        push(
            "rate_iops_min",
            per_dir(&spec.rate_iops_min, |r| Some(r.unwrap_or(0).to_string())),
        );
    }
    if spec.rate_cycle != default.rate_cycle {
        push("rate_cycle", format!("{}ms", spec.rate_cycle.as_millis()));
    }
    if spec.rate_process != default.rate_process {
        push(
            "rate_process",
            match spec.rate_process {
                RateProcess::Linear => "linear",
                RateProcess::Poisson => "poisson",
            }
            .to_string(),
        );
    }
    if spec.thinktime != default.thinktime {
        push("thinktime", time(spec.thinktime));
    }
    // verify_pattern before verify: a pattern alone turns on verify=pattern.
    if !spec.verify_pattern.is_empty() {
        let hex: String = spec
            .verify_pattern
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        push("verify_pattern", format!("0x{hex}"));
    }
    let implied_verify = if spec.verify_pattern.is_empty() {
        VerifyKind::None
    } else {
        VerifyKind::Pattern
    };
    if spec.verify != implied_verify {
        push(
            "verify",
            match spec.verify {
                VerifyKind::None => "0",
                VerifyKind::Crc32c => "crc32c",
                VerifyKind::Md5 => "md5",
                VerifyKind::Sha256 => "sha256",
                VerifyKind::Pattern => "pattern",
            }
            .to_string(),
        );
    }
    if let Some(backlog) = spec.verify_backlog {
        push("verify_backlog", backlog.to_string());
    }
    let buffers = &spec.buffers;
    let default_buffers = &default.buffers;
    for (name, value, default_value) in [
        (
            "zero_buffers",
            buffers.zero_buffers,
            default_buffers.zero_buffers,
        ),
        (
            "refill_buffers",
            buffers.refill_buffers,
            default_buffers.refill_buffers,
        ),
        (
            "scramble_buffers",
            buffers.scramble_buffers,
            default_buffers.scramble_buffers,
        ),
    ] {
        if value != default_value {
            push(name, u8::from(value).to_string());
        }
    }
    if !buffers.pattern.is_empty() {
        let hex: String = buffers.pattern.iter().map(|b| format!("{b:02x}")).collect();
        push("buffer_pattern", format!("0x{hex}"));
    }
    for (name, value, default_value) in [
        (
            "buffer_compress_percentage",
            buffers.compress_percentage,
            default_buffers.compress_percentage,
        ),
        (
            "buffer_compress_chunk",
            buffers.compress_chunk_bytes,
            default_buffers.compress_chunk_bytes,
        ),
        (
            "dedupe_percentage",
            buffers.dedupe_percentage,
            default_buffers.dedupe_percentage,
        ),
    ] {
        if value != default_value {
            push(name, value.to_string());
        }
    }
    if spec.percentile_list != default.percentile_list {
        push(
            "percentile_list",
            spec.percentile_list
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(":"),
        );
    }
    for (name, log) in [
        ("write_lat_log", &spec.write_lat_log),
        ("write_bw_log", &spec.write_bw_log),
        ("write_iops_log", &spec.write_iops_log),
    ] {
        if let Some(log) = log {
            out_push_optional(&mut push, name, log_name(log));
        }
    }
    if spec.log_avg_msec != default.log_avg_msec {
        push("log_avg_msec", spec.log_avg_msec.to_string());
    }
    if let Some(cpus) = &spec.cpus_allowed {
        push(
            "cpus_allowed",
            cpus.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    if let Some(timeout) = spec.io_timeout {
        push("io_timeout", time(timeout));
    }
    if spec.error_policy.continue_on != default.error_policy.continue_on {
        push(
            "continue_on_error",
            spec.error_policy.continue_on_error_name().to_string(),
        );
    }
    if spec.error_policy.ignore != default.error_policy.ignore {
        let lists: Vec<String> = spec
            .error_policy
            .ignore
            .iter()
            .map(|list| {
                list.iter()
                    .flatten()
                    .map(i32::to_string)
                    .collect::<Vec<_>>()
                    .join(":")
            })
            .collect();
        push("ignore_error", lists.join(","));
    }
    if let Some(max) = spec.iscsi.reconnect_max {
        push("reconnect_max", max.to_string());
    }
    if let Some(timeout) = spec.iscsi.replacement_timeout {
        push("replacement_timeout", time(timeout));
    }
    let iscsi = &spec.iscsi;
    let digest = |d: DigestChoice| match d {
        DigestChoice::None => "none".to_string(),
        DigestChoice::Crc32c => "crc32c".to_string(),
    };
    if iscsi.header_digest != DigestChoice::None {
        push("header_digest", digest(iscsi.header_digest));
    }
    if iscsi.data_digest != DigestChoice::None {
        push("data_digest", digest(iscsi.data_digest));
    }
    if let Some(on) = iscsi.immediate_data {
        push("immediate_data", flag(on));
    }
    if let Some(on) = iscsi.initial_r2t {
        push("initial_r2t", flag(on));
    }
    if let Some(len) = iscsi.max_burst_length_bytes {
        push("max_burst_length", len.to_string());
    }
    if let Some(len) = iscsi.first_burst_length_bytes {
        push("first_burst_length", len.to_string());
    }
    if let Some(len) = iscsi.max_recv_data_segment_length_bytes {
        push("max_recv_data_segment_length", len.to_string());
    }
    if let Some(chap) = &iscsi.chap {
        push("chap_username", chap.username.clone());
        push("chap_secret", chap.secret.clone());
    }
    if let Some(chap) = &iscsi.mutual_chap {
        push("mutual_chap_username", chap.username.clone());
        push("mutual_chap_secret", chap.secret.clone());
    }
    if let Some(name) = &iscsi.initiator_name {
        push("initiator_name", name.clone());
    }
    if iscsi.transport != TransportKind::Software {
        push(
            "transport",
            match iscsi.transport {
                TransportKind::Software => "software",
                TransportKind::Dependent => "dependent",
                TransportKind::Independent => "independent",
            }
            .to_string(),
        );
    }
    if let Some(shards) = iscsi.shards {
        push("shards", shards.to_string());
    }
    out
}

fn out_push_optional(
    push: &mut impl FnMut(&'static str, String),
    name: &'static str,
    value: Option<String>,
) {
    // A bare log option means "named after the job"; an empty value reads the same.
    push(name, value.unwrap_or_default());
}

/// A job file with one section per job. Jobs that start a new reporting group without
/// `stonewall`/`new_group` (a file boundary in the source) get `new_group`.
pub fn render_job_file(jobs: &[JobSpec]) -> String {
    let mut out = String::new();
    let mut previous_group = None;
    for job in jobs {
        out.push_str(&format!("[{}]\n", job.name));
        for (name, value) in spec_options(job) {
            match value {
                Some(value) if !value.is_empty() => out.push_str(&format!("{name}={value}\n")),
                _ => out.push_str(&format!("{name}\n")),
            }
        }
        if previous_group.is_some_and(|group| group != job.group_id)
            && !job.stonewall
            && !job.new_group
        {
            out.push_str("new_group\n");
        }
        previous_group = Some(job.group_id);
        out.push('\n');
    }
    out
}

fn shell_quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=.,:/%+@".contains(c))
    {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// The jobs as one command line (`--showcmd`), each job self-contained after its `--name`.
pub fn render_command_line(jobs: &[JobSpec]) -> String {
    let mut parts = vec!["iscsi-bench".to_string()];
    let mut previous_group = None;
    for job in jobs {
        parts.push(shell_quote(&format!("--name={}", job.name)));
        for (name, value) in spec_options(job) {
            match value {
                Some(value) if !value.is_empty() => {
                    parts.push(shell_quote(&format!("--{name}={value}")))
                }
                _ => parts.push(format!("--{name}")),
            }
        }
        if previous_group.is_some_and(|group| group != job.group_id)
            && !job.stonewall
            && !job.new_group
        {
            parts.push("--new_group".into());
        }
        previous_group = Some(job.group_id);
    }
    parts.join(" ")
}
