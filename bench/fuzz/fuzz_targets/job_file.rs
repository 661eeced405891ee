//! Fuzzes job-file text, which a cluster agent takes from the network (the controller
//! sends the job files it runs): the INI reader, every option's parser and the checks
//! between options, then, for each job that parses, its region on targets of a few sizes,
//! its workload's setup and its first I/Os. Nothing may panic; every I/O a workload
//! plans must lie inside the job's region. `include` is answered by a directory that does
//! not exist, and `${NAME}` by nothing, so the input alone decides.
#![no_main]

use std::path::Path;
use std::time::Duration;

use bench::run::setup::workload_config;
use bench::workload::{Next, Workload};
use libfuzzer_sys::fuzz_target;

/// Most I/Os drawn from each workload: enough to pass a first loop of a small region.
const IOS_PER_WORKLOAD: usize = 64;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let path = Path::new("/nonexistent/iscsi-bench-fuzz/job.fio");
    let Ok(jobs) = bench::job::parse_job_str(path, text, &|_| None) else {
        return;
    };
    for job in &jobs {
        for target_bytes in [4096u64, 1 << 20, 1 << 30] {
            let Ok(region) = job.check_target_size(target_bytes) else {
                continue;
            };
            assert!(region.offset_bytes + region.len_bytes <= target_bytes, "{region:?}");
            let seed = bench::workload::job_seed(job.randseed, job.randrepeat, 1, 7);
            let Ok(config) = workload_config(job, region, seed, 512) else {
                continue;
            };
            let Ok(mut workload) = Workload::new(config) else {
                continue;
            };
            let end = region.offset_bytes + region.len_bytes;
            let mut now = Duration::ZERO;
            for _ in 0..IOS_PER_WORKLOAD {
                match workload.next(now) {
                    Next::Io(io) => {
                        assert!(
                            io.offset >= region.offset_bytes
                                && io.offset + u64::from(io.len) <= end,
                            "{io:?} outside {region:?}"
                        );
                        now = now.max(io.scheduled_at);
                        workload.on_complete(now);
                    }
                    Next::Done => break,
                    _ => now += Duration::from_millis(1),
                }
            }
        }
    }
});
