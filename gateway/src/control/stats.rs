//! `lun_stats`: per-LUN figures (commands and bytes by kind, IOPS, throughput, latency
//! percentiles inside the gateway), over `interval_ms` or since each LUN was attached.
//!
//! Plain LUNs get a row each, with or without I/O. A bound volume gets a row per place
//! it is bound (target, host, endpoint, secondary ID) once it ran a command since it was
//! opened: the event loops keep figures only for units that did (`server::lun_stats`),
//! and a table of 65,536 idle volumes would bury the ones that work. The figures are the
//! volume's, whichever host sent the commands.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::rpc::{self, ErrorCode, RpcError};
use super::{bad, Control};
use crate::disk::LogicalUnit;
use crate::server::{LunCounters, LunFigures};

/// Where a row's figures come from.
enum Source {
    Attached(u64),
    Bound(Arc<LogicalUnit>),
}

/// One row to report: its fields but the figures, where they come from, and since when.
struct Row {
    place: Value,
    source: Source,
    since: Instant,
}

pub(super) fn lun_stats(control: &Control, p: rpc::LunStatsParams) -> Result<Value, RpcError> {
    if p.interval_ms
        .is_some_and(|ms| ms == 0 || ms > rpc::MAX_STATS_INTERVAL_MS)
    {
        return Err(bad(
            ErrorCode::InvalidParams,
            format!(
                "lun_stats: interval_ms from 1 to {}",
                rpc::MAX_STATS_INTERVAL_MS
            ),
        ));
    }
    let controller = {
        let inner = control.lock();
        if let Some(target) = &p.target {
            if !inner.model.targets.contains_key(target) {
                return Err(bad(ErrorCode::NotFound, format!("no target {target}")));
            }
        }
        inner.controller.clone()
    };
    let Some(controller) = controller else {
        return Ok(json!({ "luns": [] }));
    };
    let first = controller.lun_stats();
    let (figures, interval) = match p.interval_ms {
        Some(ms) => {
            let started = Instant::now();
            std::thread::sleep(Duration::from_millis(ms));
            let second = controller.lun_stats();
            (second.since(&first), Some(started.elapsed()))
        }
        None => (first, None),
    };
    // The rows, as the model stands now: bound volumes only when they ran commands (in
    // the interval), so 65,536 idle bindings cost a lookup each, not a row.
    let rows: Vec<Row> = {
        let inner = control.lock();
        let wanted = |name: &String| p.target.as_ref().is_none_or(|t| t == name);
        let mut rows: Vec<Row> = inner
            .model
            .targets
            .iter()
            .filter(|(name, _)| wanted(name))
            .flat_map(|(name, t)| {
                t.luns.iter().map(move |(lun, e)| Row {
                    place: json!({ "target": name, "lun": lun }),
                    source: Source::Attached(e.info.unit_id),
                    since: e.attached_at,
                })
            })
            .collect();
        for ((pool, volume), bound) in inner.model.bound.iter() {
            let ran = figures
                .bound_figures(&bound.unit)
                .is_some_and(|c| c.commands() > 0);
            if !ran {
                continue;
            }
            for (target, host, endpoint, secondary) in &bound.places {
                if !wanted(target) {
                    continue;
                }
                rows.push(Row {
                    place: json!({
                        "target": target,
                        "lun": format!("{endpoint}:{secondary}"),
                        "endpoint": endpoint,
                        "secondary": secondary,
                        "host": host,
                        "pool": pool,
                        "volume": volume,
                    }),
                    source: Source::Bound(Arc::clone(&bound.unit)),
                    since: bound.opened_at,
                });
            }
        }
        rows
    };
    let empty = LunCounters::new();
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|row| {
            let seconds = interval
                .unwrap_or_else(|| row.since.elapsed())
                .as_secs_f64()
                .max(1e-6);
            let counters = counters_of(&figures, &row.source).unwrap_or(&empty);
            let mut value = row.place;
            if let (Value::Object(fields), Value::Object(more)) =
                (&mut value, figures_json(counters, seconds))
            {
                fields.extend(more);
            }
            value
        })
        .collect();
    Ok(json!({ "luns": rows }))
}

fn counters_of<'a>(figures: &'a LunFigures, source: &Source) -> Option<&'a LunCounters> {
    match source {
        Source::Attached(unit_id) => figures.attached.get(unit_id),
        Source::Bound(unit) => figures.bound_figures(unit),
    }
}

fn figures_json(c: &LunCounters, seconds: f64) -> Value {
    let h = &c.latency_us;
    let pct = |q: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(q)
        }
    };
    json!({
        "seconds": seconds,
        "reads": c.reads,
        "writes": c.writes,
        "others": c.others,
        "read_bytes": c.read_bytes,
        "write_bytes": c.write_bytes,
        "iops": c.commands() as f64 / seconds,
        "read_bytes_per_second": c.read_bytes as f64 / seconds,
        "write_bytes_per_second": c.write_bytes as f64 / seconds,
        "latency_us": {
            "mean": if h.is_empty() { 0.0 } else { h.mean() },
            "p50": pct(0.50),
            "p90": pct(0.90),
            "p99": pct(0.99),
            "p99_9": pct(0.999),
            "max": if h.is_empty() { 0 } else { h.max() },
        },
    })
}
