//! Job specs back to fio syntax: a job file, or command-line options (`--showcmd`).
//! Only settings that differ from the defaults are written, each in a form the parser
//! reads back to the same value (sizes in bytes, times in microseconds).

use std::time::Duration;

use super::error_policy::ErrorPolicy;
use super::options::OPTIONS;
use super::spec::{
    BlockSize, BsSplitEntry, DigestChoice, Distribution, FileService, FileServiceKind, JobSpec,
    LogName, PerDir, RwMode, SizeSpec, Target, VerifyKind,
};
use super::value::render_iscsi_url;

// Value forms the option table's rows render with.

pub(super) fn size(spec: SizeSpec) -> String {
    match spec {
        SizeSpec::Bytes(bytes) => bytes.to_string(),
        SizeSpec::Percent(pct) => format!("{pct}%"),
    }
}

pub(super) fn time(duration: Duration) -> String {
    format!("{}us", duration.as_micros())
}

pub(super) fn flag(on: bool) -> String {
    if on { "1" } else { "0" }.to_string()
}

/// `value` where it differs from the default `base`.
pub(super) fn changed<T: PartialEq + ToString>(value: T, base: T) -> Option<String> {
    (value != base).then(|| value.to_string())
}

/// A boolean where it differs from the default `base`.
pub(super) fn changed_flag(value: bool, base: bool) -> Option<String> {
    (value != base).then(|| flag(value))
}

pub(super) fn joined<T: ToString>(values: &[T], separator: &str) -> String {
    values
        .iter()
        .map(T::to_string)
        .collect::<Vec<_>>()
        .join(separator)
}

/// A byte pattern as `0x` and hex digits.
pub(super) fn hex(bytes: &[u8]) -> String {
    let digits: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("0x{digits}")
}

/// `a,b,c` with an empty slot where `render` gives None (keeps that direction).
pub(super) fn per_dir<T>(
    values: &PerDir<T>,
    mut render: impl FnMut(&T) -> Option<String>,
) -> String {
    let parts: Vec<String> = values
        .each()
        .iter()
        .map(|(_, value)| render(value).unwrap_or_default())
        .collect();
    parts.join(",")
}

/// A per-direction rate (0: no cap) where it differs from the default.
pub(super) fn rates(rates: &PerDir<Option<u64>>, base: &PerDir<Option<u64>>) -> Option<String> {
    (rates != base).then(|| per_dir(rates, |rate| Some(rate.unwrap_or(0).to_string())))
}

/// Block sizes: one option per kind (`bs`, `bsrange`, `bssplit`), each setting only its own
/// directions (`render` gives None for the others).
pub(super) fn block_sizes(
    spec: &JobSpec,
    base: &JobSpec,
    render: impl FnMut(&BlockSize) -> Option<String>,
) -> Option<String> {
    if spec.block_size == base.block_size {
        return None;
    }
    let text = per_dir(&spec.block_size, render);
    (text != ",,").then_some(text)
}

pub(super) fn bssplit(entries: &[BsSplitEntry]) -> String {
    entries
        .iter()
        .map(|entry| format!("{}/{}", entry.len_bytes, entry.percent))
        .collect::<Vec<_>>()
        .join(":")
}

pub(super) fn distribution(distribution: &Distribution) -> String {
    let center = |center: Option<f64>| center.map(|c| format!(":{c}")).unwrap_or_default();
    match *distribution {
        Distribution::Zoned {
            absolute,
            ref zones,
        } => {
            let kind = if absolute { "zoned_abs" } else { "zoned" };
            let dir = |zones: &Vec<super::spec::Zone>| {
                zones
                    .iter()
                    .map(|z| format!("{}/{}", z.access_percent, z.size))
                    .collect::<Vec<_>>()
                    .join(":")
            };
            format!("{kind}:{}", per_dir(zones, |z| Some(dir(z))))
        }
        Distribution::Sequence { ref blocks, .. } => format!(
            "sequence:{}",
            blocks
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
        Distribution::Random => "random".to_string(),
        Distribution::Zipf { theta, center: c } => format!("zipf:{theta}{}", center(c)),
        Distribution::Pareto { power, center: c } => format!("pareto:{power}{}", center(c)),
        Distribution::Normal {
            deviation_percent,
            center: c,
        } => format!("normal:{deviation_percent}{}", center(c)),
    }
}

/// A log option's value: empty (bare, "named after the job") or the prefix.
pub(super) fn log_name(log: &LogName) -> String {
    match log {
        LogName::JobName => String::new(),
        LogName::Prefix(prefix) => prefix.clone(),
    }
}

/// The job's `filename` list, `:`-separated (colons in paths escaped as fio does).
pub(super) fn filenames(spec: &JobSpec) -> Option<String> {
    let first = spec.filename.as_ref()?;
    let text: Vec<String> = std::iter::once(first)
        .chain(&spec.more_filenames)
        .map(|target| match target {
            Target::Iscsi(url) => render_iscsi_url(url),
            Target::Path(path) => path.to_string_lossy().replace(':', "\\:"),
            Target::Null => "null".to_string(),
        })
        .collect();
    Some(text.join(":"))
}

pub(super) fn file_service(service: &FileService) -> String {
    let kind = match service.kind {
        FileServiceKind::RoundRobin => "roundrobin",
        FileServiceKind::Sequential => "sequential",
        FileServiceKind::Random => "random",
    };
    format!("{kind}:{}", service.switch_after_ios)
}

pub(super) fn rw(rw: &RwMode) -> String {
    let modifier = rw
        .offset_modifier
        .map(|nr| format!(":{nr}"))
        .unwrap_or_default();
    format!("{}{modifier}", rw.kind.fio_name())
}

/// `verify`, unless it is what `verify_pattern` (rendered before it) implies.
pub(super) fn verify(spec: &JobSpec) -> Option<String> {
    let implied = if spec.verify_pattern.is_empty() {
        VerifyKind::None
    } else {
        VerifyKind::Pattern
    };
    (spec.verify != implied).then(|| {
        match spec.verify {
            VerifyKind::None => "0",
            VerifyKind::Checksum(kind) => kind.fio_name(),
            VerifyKind::Pattern => "pattern",
            VerifyKind::Meta => "meta",
        }
        .to_string()
    })
}

pub(super) fn digest(digest: DigestChoice) -> String {
    match digest {
        DigestChoice::None => "none",
        DigestChoice::Crc32c => "crc32c",
    }
    .to_string()
}

/// `ignore_error`: per direction, the `:`-separated error numbers.
pub(super) fn ignore_error(policy: &ErrorPolicy) -> String {
    let lists: Vec<String> = policy
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
    lists.join(",")
}

/// The options that make `spec` from the defaults, in the table's order. `None` values are
/// bare options.
pub fn spec_options(spec: &JobSpec) -> Vec<(&'static str, Option<String>)> {
    let base = JobSpec::new(spec.name.clone());
    OPTIONS
        .iter()
        .filter_map(|def| (def.render)(spec, &base).map(|value| (def.name, Some(value))))
        .collect()
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

/// `steadystate=` as fio writes it.
pub(super) fn steadystate(spec: &super::spec::SteadyStateSpec) -> String {
    let limit = if spec.metric == super::spec::SteadyStateMetric::Lat && !spec.percent {
        format!("{}us", (spec.limit / 1000.0).round())
    } else {
        format!("{}", spec.limit)
    };
    format!(
        "{}:{limit}{}",
        spec.name(),
        if spec.percent { "%" } else { "" }
    )
}
