//! Fuzzes fio iologs (`read_iolog`), which come from other hosts and other tools: the
//! header, every line's parser, the file table and the replay's clock, under options
//! drawn from the first byte. Nothing may panic, and the replay must agree with the
//! first pass that checked the log: the same I/Os per direction, none reaching past the
//! furthest end it found, each on a file the log added, due times that never go back.
#![no_main]

use std::io::Cursor;
use std::path::Path;

use bench::io::Direction;
use bench::job::spec::ReplaySkip;
use bench::workload::replay::{LogReader, Replay, ReplayOptions, ReplayStep, ReplaySummary};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Some((&knobs, log)) = bytes.split_first() else {
        return;
    };
    let options = ReplayOptions {
        no_stall: knobs & 1 != 0,
        redirect: knobs & 2 != 0,
        scale: u64::from(knobs >> 6),
        align_bytes: if knobs & 4 != 0 { 4096 } else { 0 },
        time_scale_percent: if knobs & 8 != 0 { 37 } else { 100 },
        skip: ReplaySkip {
            read: knobs & 16 != 0,
            write: knobs & 32 != 0,
            trim: false,
            sync: knobs & 16 != 0,
        },
    };
    let path = Path::new("fuzz.iolog");
    let open = || LogReader::new(path, Box::new(Cursor::new(log.to_vec())));
    let Ok(reader) = open() else {
        return;
    };
    let Ok(summary) = ReplaySummary::scan_log(reader, &options) else {
        return;
    };
    let mut replay = Replay::new(open().expect("opened once already"), options.clone());
    let mut ios = [0u64; 3];
    let mut last_due = std::time::Duration::ZERO;
    let files = summary.files.len().max(1) as u32;
    let furthest = |file: u32| summary.furthest.get(file as usize).map_or(0, |(_, end)| *end);
    loop {
        match replay.next_step() {
            ReplayStep::Io {
                direction,
                file,
                offset,
                len,
                due,
            } => {
                let index = match direction {
                    Direction::Read => 0,
                    Direction::Write => 1,
                    Direction::Trim => 2,
                };
                ios[index] += 1;
                assert!(file < files, "file {file} of {files}");
                assert!(offset.saturating_add(u64::from(len)) <= furthest(file));
                assert!(due >= last_due, "{due:?} before {last_due:?}");
                last_due = due;
            }
            ReplayStep::Sync { file, due } => {
                assert!(file < files);
                assert!(due >= last_due);
                last_due = due;
            }
            ReplayStep::Done => break,
        }
    }
    assert!(replay.error().is_none(), "{:?}", replay.error());
    assert_eq!(ios, [summary.ios.read, summary.ios.write, summary.ios.trim]);
});
