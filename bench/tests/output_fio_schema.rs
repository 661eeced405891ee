//! Our JSON output against fio 3.33's own (tests/fixtures, copied from
//! `shared/reference`): the same keys, in the same order, with the same nesting and the
//! same kind of value (object, array, string, integer, float) at every level. Only our
//! extension keys ([`EXTENSION_KEYS`]) may be extra. Object keys that are data rather than
//! schema (option names, percentiles, bins) are compared as objects only.

use bench::io::Direction;
use bench::output::json::{self, Flavor, Json, EXTENSION_KEYS};
use bench::output::{human, JobReport, PercentileOptions, RunReport};
use bench::stats::{JobStats, ResourceUsage, StatsConfig};

const MS: u64 = 1_000_000;

fn load(name: &str) -> Json {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture present");
    // Both readers must accept fio's document.
    serde_json::from_str::<serde_json::Value>(&text).expect("fio's JSON parses");
    serde_json::from_str::<Json>(&text).expect("fio's JSON parses in order")
}

/// A 3-second randrw job at depth 8 with jittery latencies, sampled every 500 ms.
fn randrw_stats(seed: u64) -> JobStats {
    let mut stats = JobStats::new(0, StatsConfig::default());
    let mut x = seed;
    let mut now = 0u64;
    for i in 0..30_000u64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let jitter = (x >> 33) % 200_000;
        let direction = if i % 10 < 7 {
            Direction::Read
        } else {
            Direction::Write
        };
        stats.record_submit(1, 8);
        stats.record(
            direction,
            4096,
            1_500 + jitter / 50,
            20_000 + jitter,
            22_000 + jitter,
        );
        stats.record_complete(1);
        now += 100_000; // 100 us per I/O: 3 s in all
        stats.tick(now);
    }
    stats.finish(now + MS);
    stats.set_usage(ResourceUsage {
        user_ns: 200 * MS,
        system_ns: 900 * MS,
        context_switches: 24_504,
        major_faults: 0,
        minor_faults: 13,
    });
    stats
}

fn options(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn kind(value: &Json) -> &'static str {
    match value {
        Json::UInt(_) | Json::Int(_) => "integer",
        Json::Float(_) => "float",
        Json::Str(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

/// Keys whose objects hold data, not schema.
const DATA_MAPS: [&str; 4] = ["job options", "global options", "percentile", "bins"];

fn compare(ours: &Json, theirs: &Json, path: &str, problems: &mut Vec<String>) {
    if kind(ours) != kind(theirs) {
        problems.push(format!(
            "{path}: ours is {}, fio's is {}",
            kind(ours),
            kind(theirs)
        ));
        return;
    }
    match (ours, theirs) {
        (Json::Object(mine), Json::Object(fios)) => {
            let last = path.rsplit('/').next().unwrap_or("");
            if DATA_MAPS.contains(&last) {
                return;
            }
            let base = if path == "/" { "" } else { path };
            let mine_keys: Vec<&str> = mine
                .iter()
                .map(|(k, _)| k.as_str())
                .filter(|k| !EXTENSION_KEYS.contains(&format!("{base}/{k}").as_str()))
                .collect();
            let fio_keys: Vec<&str> = fios.iter().map(|(k, _)| k.as_str()).collect();
            for key in &fio_keys {
                if !mine_keys.contains(key) {
                    problems.push(format!("{base}/{key}: missing in ours"));
                }
            }
            for key in &mine_keys {
                if !fio_keys.contains(key) {
                    problems.push(format!("{base}/{key}: extra in ours"));
                }
            }
            let common_mine: Vec<&&str> =
                mine_keys.iter().filter(|k| fio_keys.contains(k)).collect();
            let common_fio: Vec<&&str> =
                fio_keys.iter().filter(|k| mine_keys.contains(k)).collect();
            if common_mine != common_fio {
                problems.push(format!(
                    "{path}: key order {common_mine:?} != fio's {common_fio:?}"
                ));
            }
            for (key, value) in fios {
                if let Some(mine) = ours.get(key) {
                    compare(mine, value, &format!("{base}/{key}"), problems);
                }
            }
        }
        (Json::Array(mine), Json::Array(fios)) => {
            if let (Some(a), Some(b)) = (mine.first(), fios.first()) {
                compare(a, b, &format!("{path}[]"), problems);
            }
        }
        _ => {}
    }
}

fn our_report(flavor_options: bool) -> RunReport {
    let mut job = JobReport::new("sample", 0, randrw_stats(1));
    job.iodepth = 8;
    job.percentiles = PercentileOptions {
        list: vec![50.0, 90.0, 99.0, 99.9, 99.99],
        ..PercentileOptions::default()
    };
    job.options = options(&[("name", "sample"), ("rw", "randrw"), ("rwmixread", "70")]);
    let mut report = RunReport::new(1_795_285_142_766, vec![job]);
    report.elapsed_s = 4;
    if flavor_options {
        report.global_options = options(&[("ioengine", "iscsi"), ("group_reporting", "1")]);
    }
    report.process_usage = Some(ResourceUsage {
        user_ns: 300 * MS,
        system_ns: 1_000 * MS,
        ..ResourceUsage::default()
    });
    report
}

fn check(flavor: Flavor, fixture: &str, with_global: bool) -> Json {
    let theirs = load(fixture);
    let report = our_report(with_global);
    let text = json::to_string(&report, flavor);
    serde_json::from_str::<serde_json::Value>(&text).expect("our JSON parses");
    let ours: Json = serde_json::from_str(&text).expect("our JSON parses in order");
    let mut problems = Vec::new();
    compare(&ours, &theirs, "/", &mut problems);
    assert!(
        problems.is_empty(),
        "differences from {fixture}:\n{}",
        problems.join("\n")
    );
    ours
}

#[test]
fn json_has_fio_keys_order_and_nesting() {
    let ours = check(Flavor::Json, "fio-3.33-json-sample.json", false);
    let read = ours.get("jobs").and_then(|j| match j {
        Json::Array(jobs) => jobs.first(),
        _ => None,
    });
    let clat = read
        .and_then(|job| job.get("read"))
        .and_then(|r| r.get("clat_ns"))
        .expect("read clat");
    let Some(Json::Object(percentiles)) = clat.get("percentile") else {
        panic!("clat percentiles missing");
    };
    let keys: Vec<&str> = percentiles.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "50.000000",
            "90.000000",
            "99.000000",
            "99.900000",
            "99.990000"
        ]
    );
    assert!(clat.get("bins").is_none(), "bins only in json+");
}

#[test]
fn json_plus_has_fio_keys_order_and_nesting() {
    let ours = check(Flavor::JsonPlus, "fio-3.33-jsonplus-sample.json", true);
    let Some(Json::Array(jobs)) = ours.get("jobs") else {
        panic!("jobs missing")
    };
    let clat = jobs[0].get("write").and_then(|w| w.get("clat_ns")).unwrap();
    let Some(Json::Object(bins)) = clat.get("bins") else {
        panic!("json+ bins missing");
    };
    let total: u64 = bins
        .iter()
        .map(|(_, v)| match v {
            Json::UInt(n) => *n,
            _ => 0,
        })
        .sum();
    let Some(Json::UInt(n)) = clat.get("N") else {
        panic!("N missing")
    };
    assert_eq!(total, *n, "bins hold every I/O");
}

#[test]
fn json_layout_is_fios() {
    let text = json::to_string(&our_report(false), Flavor::Json);
    assert!(text.starts_with("{\n  \"fio version\" : \"fio-3.33"));
    assert!(text.contains("\n      \"jobname\" : \"sample\",\n"));
    assert!(text.contains("\"bw_agg\" : 100.000000,"), "floats as %f");
    assert!(text.ends_with("}\n"));
}

#[test]
fn human_output_has_fio_lines() {
    let report = our_report(false);
    let text = human::render(&report);
    let must = [
        "sample: (groupid=0, jobs=1): err= 0: pid=",
        "  read: IOPS=",
        "    slat (",
        "    clat (usec): min=",
        "     lat (usec): min=",
        "    clat percentiles (usec):\n     | 50.00th=[",
        "   bw (  KiB/s): min=",
        "   iops        : min=",
        "  lat (usec)   : ",
        "  cpu          : usr=",
        "  IO depths    : 1=0.0%, 2=0.0%, 4=0.0%, 8=100.0%, 16=0.0%, 32=0.0%, >=64=0.0%\n",
        "     submit    : 0=0.0%, 4=100.0%, 8=0.0%",
        "     issued rwts: total=21000,9000,0,0 short=0,0,0,0 dropped=0,0,0,0\n",
        "     latency   : target=0, window=0, percentile=100.00%, depth=8\n",
        "\nRun status group 0 (all jobs):\n   READ: bw=",
        "  WRITE: bw=",
        "iscsi-bench CPU: ",
    ];
    for line in must {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}

/// The comparison itself finds a missing key, an extra key, a wrong kind and a wrong order.
#[test]
fn comparison_catches_differences() {
    let theirs = load("fio-3.33-json-sample.json");
    let text = json::to_string(&our_report(false), Flavor::Json);
    let ours: Json = serde_json::from_str(&text).unwrap();
    fn edit_job(doc: &Json, edit: impl Fn(&mut Vec<(String, Json)>)) -> Json {
        let mut doc = doc.clone();
        if let Json::Object(top) = &mut doc {
            for (key, value) in top.iter_mut() {
                if key == "jobs" {
                    if let Json::Array(jobs) = value {
                        if let Json::Object(job) = &mut jobs[0] {
                            edit(job);
                        }
                    }
                }
            }
        }
        doc
    }
    let cases = [
        edit_job(&ours, |job| job.retain(|(k, _)| k != "ctx")),
        edit_job(&ours, |job| job.push(("surprise".into(), Json::UInt(1)))),
        edit_job(&ours, |job| {
            for (k, v) in job.iter_mut() {
                if k == "usr_cpu" {
                    *v = Json::UInt(7);
                }
            }
        }),
        edit_job(&ours, |job| job.swap(0, 1)),
    ];
    for (i, case) in cases.iter().enumerate() {
        let mut problems = Vec::new();
        compare(case, &theirs, "/", &mut problems);
        assert_eq!(problems.len(), 1, "case {i}: {problems:?}");
    }
}
