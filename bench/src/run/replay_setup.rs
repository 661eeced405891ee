//! What a `read_iolog` job becomes before it starts (fio's `init_iolog` and `read_iolog`,
//! which replace the job's files with the log's and take its directions, sizes and
//! amount from the log): the log is read once here, so that a bad line, a file the log
//! never added or an offset beyond the LUN stops the run before any I/O.
//!
//! The replay itself is `crate::workload::replay`.

use std::path::PathBuf;

use crate::io::{Direction, RwKind};
use crate::job::spec::{BlockSize, Engine, JobSpec, SizeSpec, Target, VerifyKind};
use crate::workload::replay::{ReplayOptions, ReplaySummary};

/// A replay job, ready: the job as the log makes it, and what the replay needs.
#[derive(Debug, Clone)]
pub struct PreparedReplay {
    pub spec: JobSpec,
    pub path: PathBuf,
    pub options: ReplayOptions,
    pub summary: ReplaySummary,
}

/// Reads `spec`'s logs and makes the job each clone replays: as in fio, `read_iolog` may
/// name several logs separated by `:`, which go to the clones (`numjobs`) in turn. Empty
/// for a job without `read_iolog`.
pub fn prepare(spec: &JobSpec) -> Result<Vec<PreparedReplay>, String> {
    let Some(logs) = &spec.iolog.read else {
        return Ok(Vec::new());
    };
    let names: Vec<&str> = logs.split(':').filter(|name| !name.is_empty()).collect();
    if names.is_empty() {
        return Err("read_iolog names no file".into());
    }
    let mut prepared: Vec<PreparedReplay> = Vec::new();
    for clone in 0..spec.numjobs.max(1) as usize {
        let name = names[clone % names.len()];
        let replay = match prepared.iter().find(|p| p.path.as_os_str() == name) {
            Some(done) => done.clone(),
            None => prepare_one(spec, name)?,
        };
        prepared.push(replay);
    }
    Ok(prepared)
}

/// The job that replays the one log `log`.
fn prepare_one(spec: &JobSpec, log: &str) -> Result<PreparedReplay, String> {
    if log == "-" {
        // A log is read twice (checked before the start, then replayed): stdin cannot be.
        return Err("read_iolog=- (standard input) is not supported: give a file".into());
    }
    let path = PathBuf::from(log);
    let options = ReplayOptions {
        no_stall: spec.iolog.no_stall,
        redirect: spec.iolog.redirect.is_some(),
        scale: spec.iolog.scale,
        align_bytes: spec.iolog.align_bytes,
        time_scale_percent: spec.iolog.time_scale_percent,
        skip: spec.iolog.skip,
    };
    let summary = ReplaySummary::scan(&path, &options).map_err(|e| e.to_string())?;
    if !summary.has_io() {
        return Err(format!(
            "read_iolog {log}: no read, write or trim to replay (fio refuses such a log too)"
        ));
    }
    if spec.verify != VerifyKind::None {
        return Err("verify with read_iolog is not supported: a replay checks nothing".into());
    }
    let mut replayed = spec.clone();
    if replayed.iolog.write.take().is_some() {
        // fio: "read iolog overrides write_iolog".
        eprintln!(
            "iscsi-bench: {}: read_iolog overrides write_iolog",
            spec.name
        );
    }
    take_files(&mut replayed, &summary, log)?;
    let ios = &summary.ios;
    replayed.rw.kind = match (ios.read > 0, ios.write > 0, ios.trim > 0) {
        (true, false, false) => RwKind::Read,
        (false, true, false) => RwKind::Write,
        (false, false, true) => RwKind::Trim,
        _ => RwKind::ReadWrite,
    };
    replayed.rw.offset_modifier = None;
    // fio raises each direction's largest block size to the log's largest I/O.
    for direction in [Direction::Read, Direction::Write, Direction::Trim] {
        let len = *summary.max_len.get(direction);
        if len > 0 {
            *replayed.block_size.get_mut(direction) = BlockSize::Fixed(u64::from(len));
        }
    }
    // fio adds the log's I/O lengths up into `size` (its amount of I/O; ours is the
    // log's). The region is what the log reaches: a file laid out to it is not read past
    // its end, and a LUN (whose logical block each I/O was checked against) need hold no
    // more than that, however often the log goes over the same blocks.
    let furthest = summary.furthest_end();
    replayed.size = Some(SizeSpec::Bytes(match replayed.engine() {
        Engine::Iscsi => furthest,
        _ => furthest.div_ceil(4096) * 4096,
    }));
    replayed.offset = SizeSpec::Bytes(0);
    replayed.io_size = None;
    replayed.number_ios = None;
    replayed.loops = 1;
    Ok(PreparedReplay {
        spec: replayed,
        path,
        options,
        summary,
    })
}

/// The job's files become the log's (fio frees the job's files and adds the log's), or the
/// one `replay_redirect` names. An iSCSI job keeps its LUNs: the log's files (named on the
/// host that recorded them) go to the job's LUNs in order.
fn take_files(spec: &mut JobSpec, summary: &ReplaySummary, log: &str) -> Result<(), String> {
    let logged: Vec<String> = match &spec.iolog.redirect {
        Some(redirect) => vec![redirect.clone()],
        None => summary.files.clone(),
    };
    if spec.engine() == Engine::Iscsi {
        let luns = 1 + spec.more_filenames.len();
        if logged.len() > luns {
            return Err(format!(
                "read_iolog {log}: the log adds {} files and the job has {luns} LUN(s); name \
                 as many LUNs in filename= (one per file, in the log's order) or send every \
                 I/O to one with replay_redirect=",
                logged.len()
            ));
        }
        return Ok(());
    }
    let mut targets = logged.iter().map(|name| Target::Path(PathBuf::from(name)));
    spec.filename = targets.next();
    spec.more_filenames = targets.collect();
    Ok(())
}

/// An iSCSI job's log must fit its LUNs: per LUN, the I/O reaching furthest and the one
/// least aligned to its logical block, checked before any I/O. `lun(file)` gives a LUN's
/// size, logical block and name.
pub fn check_fits(
    prepared: &PreparedReplay,
    lun: impl Fn(usize) -> (u64, u64, String),
) -> Result<(), String> {
    let path = prepared.path.display();
    for (file, &(line, end)) in prepared.summary.furthest.iter().enumerate() {
        let (bytes, _, name) = lun(file);
        if end > bytes {
            return Err(format!(
                "read_iolog {path} line {line}: an I/O ending at byte {end} is beyond the \
                 {bytes} bytes of {name} (replay_scale= divides the log's offsets)"
            ));
        }
    }
    for (file, &(line, aligned)) in prepared.summary.least_aligned.iter().enumerate() {
        let (_, block, name) = lun(file);
        if aligned < block {
            return Err(format!(
                "read_iolog {path} line {line}: its offset or length is not a multiple of \
                 the {block}-byte logical block of {name} (replay_align= aligns offsets)"
            ));
        }
    }
    Ok(())
}
