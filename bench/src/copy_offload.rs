//! `iscsi-bench copy-offload`: copies one region of a LUN twice, once with EXTENDED COPY
//! (the target moves the data) and once through this host (READ, then WRITE, `iodepth`
//! pieces of `bs` at a time), each made durable with SYNCHRONIZE CACHE, and reports the
//! two side by side (issue 16: VAAI full copy against a host copy through the same
//! session). With `prefill=1` (the default) the source is first written with a pattern
//! that differs in every block (untimed), so neither copy moves only unwritten space;
//! with `verify=1` (the default) both destinations are read back and compared with it.
//!
//! The two copies go to different places (by default right after the source, then after
//! that), so the host copy cannot hide a wrong EXTENDED COPY.
//!
//! Options use fio's spelling (`--name=value`): `filename` (an `iscsi://` URL with a LUN),
//! `offset` (the source, bytes), `size` (bytes), `xcopy_dest` and `host_dest` (bytes), `bs`,
//! `iodepth`, `prefill`, `verify`, `initiator_name`, `output-format` (`normal` or `json`).

use std::time::Instant;

use datapath::client::{Client, ClientError};
use datapath::scsi::{self, Cdb, DeviceIdentification, ReadCapacity16, Sense};
use datapath::session::{CommandOutcome, Request};
use datapath::url::IscsiUrl;
use serde_json::{json, Value};

use crate::engine::{EngineError, LoginOptions};
use crate::job::value::parse_size;
pub use crate::job::CopyMethod;

/// Why the comparison did not run or did not finish.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{command}: status 0x{status:02x}{}", sense.as_ref().map(|s| format!(": {s}")).unwrap_or_default())]
    Check {
        command: &'static str,
        status: u8,
        sense: Option<Sense>,
    },
    #[error("{command}: {source}")]
    Decode {
        command: &'static str,
        source: scsi::ScsiError,
    },
    #[error("verify: {0}")]
    Verify(String),
}

/// What to copy.
#[derive(Debug, Clone)]
pub struct CopyOffloadOptions {
    pub url: IscsiUrl,
    /// Byte offsets and length; multiples of the LUN's block.
    pub source: u64,
    pub size: u64,
    pub xcopy_dest: Option<u64>,
    pub host_dest: Option<u64>,
    /// Bytes per READ/WRITE of the host copy.
    pub bs: u64,
    /// Host-copy commands in flight.
    pub iodepth: usize,
    pub prefill: bool,
    pub verify: bool,
    pub json: bool,
    pub login: LoginOptions,
}

/// The usage line.
pub const USAGE: &str = "iscsi-bench copy-offload --filename=iscsi://HOST[:PORT]/TARGET/LUN \
--size=SIZE [--offset=SIZE] [--xcopy_dest=SIZE] [--host_dest=SIZE] [--bs=1M] [--iodepth=8] \
[--prefill=1] [--verify=1] [--initiator_name=IQN] [--output-format=normal|json]";

impl CopyOffloadOptions {
    /// Parses the options after `copy-offload`.
    pub fn parse(args: &[String]) -> Result<CopyOffloadOptions, CopyError> {
        let usage = |why: String| CopyError::Usage(format!("{why}\nusage: {USAGE}"));
        let size_of = |key: &str, value: &str| {
            parse_size(value, 1024).map_err(|e| usage(format!("--{key}={value}: {}", e.0)))
        };
        let mut url = None;
        let mut options = CopyOffloadOptions {
            url: IscsiUrl::parse_portal("iscsi://127.0.0.1").map_err(|e| usage(e.to_string()))?,
            source: 0,
            size: 0,
            xcopy_dest: None,
            host_dest: None,
            bs: 1 << 20,
            iodepth: 8,
            prefill: true,
            verify: true,
            json: false,
            login: LoginOptions::default(),
        };
        for arg in args {
            let Some((key, value)) = arg.strip_prefix("--").and_then(|a| a.split_once('=')) else {
                return Err(usage(format!("'{arg}': options are --name=value")));
            };
            match key {
                "filename" => {
                    url = Some(
                        IscsiUrl::parse_lun_url(value)
                            .map_err(|e| usage(format!("--filename: {e}")))?,
                    )
                }
                "offset" => options.source = size_of(key, value)?,
                "size" => options.size = size_of(key, value)?,
                "xcopy_dest" => options.xcopy_dest = Some(size_of(key, value)?),
                "host_dest" => options.host_dest = Some(size_of(key, value)?),
                "bs" => options.bs = size_of(key, value)?,
                "iodepth" => {
                    options.iodepth = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=1024).contains(n))
                        .ok_or_else(|| usage(format!("--iodepth={value}: 1 to 1024")))?
                }
                "verify" | "prefill" => {
                    let on = match value {
                        "0" => false,
                        "1" => true,
                        _ => return Err(usage(format!("--{key}={value}: 0 or 1"))),
                    };
                    if key == "verify" {
                        options.verify = on;
                    } else {
                        options.prefill = on;
                    }
                }
                "initiator_name" => options.login.initiator_name = Some(value.to_string()),
                "output-format" => {
                    options.json = match value {
                        "normal" => false,
                        "json" => true,
                        _ => return Err(usage(format!("--output-format={value}: normal or json"))),
                    }
                }
                _ => return Err(usage(format!("unknown option --{key}"))),
            }
        }
        options.url = url.ok_or_else(|| usage("--filename=iscsi://... is required".into()))?;
        if options.size == 0 {
            return Err(usage("--size is required (and above 0)".into()));
        }
        if options.bs == 0 || options.bs > 16 << 20 {
            return Err(usage("--bs: 1 byte to 16 MiB".into()));
        }
        Ok(options)
    }
}

/// One method's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodResult {
    pub name: &'static str,
    pub bytes: u64,
    /// Including the SYNCHRONIZE CACHE that makes the copy durable.
    pub seconds: f64,
    /// SCSI commands the host sent for it.
    pub commands: u64,
    pub dest_lba: u64,
}

impl MethodResult {
    pub fn mib_per_second(&self) -> f64 {
        self.bytes as f64 / f64::from(1 << 20) / self.seconds.max(1e-9)
    }
}

/// Both copies.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyReport {
    pub url: String,
    pub block_length: u32,
    pub source_lba: u64,
    pub blocks: u64,
    pub extended_copy: MethodResult,
    pub host: MethodResult,
    /// `None` without `verify`.
    pub verified: Option<bool>,
}

impl CopyReport {
    /// How many times faster EXTENDED COPY was.
    pub fn speedup(&self) -> f64 {
        self.host.seconds / self.extended_copy.seconds.max(1e-9)
    }

    pub fn to_json(&self) -> Value {
        let method = |m: &MethodResult| {
            json!({
                "bytes": m.bytes,
                "seconds": m.seconds,
                "mib_per_second": m.mib_per_second(),
                "commands": m.commands,
                "dest_lba": m.dest_lba,
            })
        };
        json!({ "copy_offload": {
            "url": self.url,
            "block_length": self.block_length,
            "source_lba": self.source_lba,
            "blocks": self.blocks,
            "extended_copy": method(&self.extended_copy),
            "host": method(&self.host),
            "speedup": self.speedup(),
            "verified": self.verified,
        }})
    }

    pub fn to_human(&self) -> String {
        let mut out = format!(
            "copy-offload: {} MiB from LBA {} of {} ({}-byte blocks)\n",
            (self.blocks * u64::from(self.block_length)) >> 20,
            self.source_lba,
            self.url,
            self.block_length
        );
        out.push_str(&format!(
            "  {:<20} {:>12} {:>10} {:>10} {:>12}\n",
            "method", "dest LBA", "seconds", "MiB/s", "commands"
        ));
        for m in [&self.extended_copy, &self.host] {
            out.push_str(&format!(
                "  {:<20} {:>12} {:>10.3} {:>10.1} {:>12}\n",
                m.name,
                m.dest_lba,
                m.seconds,
                m.mib_per_second(),
                m.commands
            ));
        }
        out.push_str(&format!(
            "  host copy time / EXTENDED COPY time: {:.1}x\n",
            self.speedup()
        ));
        match self.verified {
            Some(true) => out.push_str("  verify: both destinations equal the source\n"),
            Some(false) => out.push_str("  verify: MISMATCH\n"),
            None => {}
        }
        out
    }
}

fn checked(command: &'static str, outcome: CommandOutcome) -> Result<Vec<u8>, CopyError> {
    if outcome.status == 0 {
        return Ok(outcome.buffer);
    }
    Err(CopyError::Check {
        command,
        status: outcome.status,
        sense: outcome.sense.as_deref().and_then(|s| Sense::decode(s).ok()),
    })
}

fn execute(
    client: &mut Client,
    command: &'static str,
    lun: u64,
    cdb: Cdb,
    buffer: Vec<u8>,
) -> Result<Vec<u8>, CopyError> {
    checked(command, client.execute(Request::new(lun, cdb, buffer, 0))?)
}

fn decode<T>(command: &'static str, result: Result<T, scsi::ScsiError>) -> Result<T, CopyError> {
    result.map_err(|source| CopyError::Decode { command, source })
}

/// How the host copy moves data: `piece` blocks per command, `depth` commands at a time.
#[derive(Debug, Clone, Copy)]
struct HostIo {
    lun: u64,
    piece: u64,
    block_length: u32,
    depth: usize,
}

/// READs `blocks` from `lba`, one buffer per command; counts the commands.
fn read_range(
    client: &mut Client,
    io: HostIo,
    lba: u64,
    blocks: u64,
    commands: &mut u64,
) -> Result<Vec<Vec<u8>>, CopyError> {
    let HostIo {
        lun,
        piece,
        block_length,
        depth,
    } = io;
    let mut pieces = Vec::new();
    let mut done = 0;
    while done < blocks {
        let mut batch = Vec::new();
        while done < blocks && batch.len() < depth {
            let n = piece.min(blocks - done);
            let cdb = decode("READ", Cdb::read(lba + done, n as u32, block_length, false))?;
            let bytes = (n * u64::from(block_length)) as usize;
            batch.push(Request::new(lun, cdb, vec![0; bytes], 0));
            done += n;
        }
        *commands += batch.len() as u64;
        for outcome in client.execute_batch(batch)? {
            pieces.push(checked("READ", outcome?)?);
        }
    }
    Ok(pieces)
}

/// One copy: what an `rw=copy` job of a job file, or one half of the subcommand, asks for.
#[derive(Debug, Clone)]
pub struct CopyJob {
    pub name: String,
    pub url: IscsiUrl,
    pub login: LoginOptions,
    pub method: CopyMethod,
    /// Byte offsets and length; multiples of the LUN's block.
    pub source: u64,
    pub size: u64,
    /// `None`: right after the source.
    pub dest: Option<u64>,
    /// Bytes per READ/WRITE of a host copy (and of the prefill and verify).
    pub bs: u64,
    /// Commands in flight.
    pub iodepth: usize,
    /// Write a pattern that differs in every block into the source first (untimed).
    pub prefill: bool,
    /// Read the destination back and compare it with the source (untimed).
    pub verify: bool,
}

/// What one copy job did.
#[derive(Debug, Clone, PartialEq)]
pub struct JobResult {
    pub name: String,
    pub method: CopyMethod,
    pub url: String,
    pub block_length: u32,
    pub source_lba: u64,
    pub blocks: u64,
    pub figures: MethodResult,
    /// `None` without `verify`.
    pub verified: Option<bool>,
}

/// Runs one copy job on its own session: checks, prefill, the timed copy with its
/// SYNCHRONIZE CACHE, then the verify.
pub fn run_job(job: &CopyJob) -> Result<JobResult, CopyError> {
    let config = crate::engine::iscsi::client_config(
        &job.url,
        &job.login,
        std::time::Duration::from_secs(60),
        job.iodepth,
    )?;
    let lun = job.url.lun.unwrap_or(0);
    let mut client = Client::connect(&config)?;
    // A fresh login may owe a unit attention: TEST UNIT READY takes it.
    let _ = client.execute(Request::new(lun, Cdb::test_unit_ready(), Vec::new(), 0));
    let capacity = execute(
        &mut client,
        "READ CAPACITY(16)",
        lun,
        Cdb::read_capacity_16(32),
        vec![0; 32],
    )?;
    let capacity = decode("READ CAPACITY(16)", ReadCapacity16::decode(&capacity))?;
    let block_length = capacity.block_length_bytes;
    let capacity_blocks = capacity.last_lba.saturating_add(1);
    let block = u64::from(block_length);
    let dest = job.dest.unwrap_or(job.source + job.size);
    for (what, bytes) in [
        ("offset", job.source),
        ("size", job.size),
        ("copy_dest", dest),
        ("bs", job.bs),
    ] {
        if bytes % block != 0 {
            return Err(CopyError::Usage(format!(
                "job {}: {what}={bytes} is not a multiple of the LUN's {block}-byte block",
                job.name
            )));
        }
    }
    let blocks = job.size / block;
    let (source, dest_lba) = (job.source / block, dest / block);
    for (what, lba) in [("source", source), ("copy_dest", dest_lba)] {
        if lba
            .checked_add(blocks)
            .is_none_or(|end| end > capacity_blocks)
        {
            return Err(CopyError::Usage(format!(
                "job {}: the {what} range (LBA {lba}, {blocks} blocks) goes past the LUN's {capacity_blocks} blocks",
                job.name
            )));
        }
    }
    if source < dest_lba + blocks && dest_lba < source + blocks {
        return Err(CopyError::Usage(format!(
            "job {}: the source (LBA {source}) and copy_dest (LBA {dest_lba}) ranges of {blocks} blocks overlap",
            job.name
        )));
    }
    let sync = |client: &mut Client| {
        execute(
            client,
            "SYNCHRONIZE CACHE",
            lun,
            Cdb::synchronize_cache_16(0, 0, false),
            Vec::new(),
        )
    };
    let piece = (job.bs / block).max(1);
    let host_io = HostIo {
        lun,
        piece,
        block_length,
        depth: job.iodepth,
    };
    if job.prefill {
        prefill(&mut client, host_io, source, blocks)?;
        sync(&mut client)?;
    }
    let figures = match job.method {
        CopyMethod::Xcopy => {
            let vpd = execute(
                &mut client,
                "INQUIRY",
                lun,
                Cdb::inquiry_vpd(0x83, 4096),
                vec![0; 4096],
            )?;
            let naa = decode("INQUIRY", DeviceIdentification::decode(&vpd))?
                .descriptors
                .iter()
                .find(|d| d.association == 0 && d.designator_type == 3)
                .map(|d| d.designator.clone())
                .ok_or_else(|| {
                    CopyError::Usage("the LUN reports no NAA designator to copy with".into())
                })?;
            let started = Instant::now();
            let mut commands = 1;
            for segments in scsi::xcopy::plan(source, dest_lba, blocks) {
                let list = scsi::xcopy::parameter_list(&naa, block_length, &segments);
                let request = decode("EXTENDED COPY", scsi::xcopy::request(lun, list))?;
                checked("EXTENDED COPY", client.execute(request)?)?;
                commands += 1;
            }
            sync(&mut client)?;
            MethodResult {
                name: "extended-copy",
                bytes: job.size,
                seconds: started.elapsed().as_secs_f64(),
                commands,
                dest_lba,
            }
        }
        CopyMethod::Host => {
            let started = Instant::now();
            let mut commands = 1;
            host_copy(
                &mut client,
                host_io,
                source,
                dest_lba,
                blocks,
                &mut commands,
            )?;
            sync(&mut client)?;
            MethodResult {
                name: "host (read+write)",
                bytes: job.size,
                seconds: started.elapsed().as_secs_f64(),
                commands,
                dest_lba,
            }
        }
    };
    let verified = if job.verify {
        let window = piece * job.iodepth as u64;
        let mut ignored = 0;
        let mut same = true;
        let mut done = 0;
        while done < blocks && same {
            let n = window.min(blocks - done);
            let mut read =
                |lba| read_range(&mut client, host_io, lba, n, &mut ignored).map(|p| p.concat());
            same = read(dest_lba + done)? == read(source + done)?;
            done += n;
        }
        Some(same)
    } else {
        None
    };
    let _ = client.logout();
    Ok(JobResult {
        name: job.name.clone(),
        method: job.method,
        url: job.url.to_string(),
        block_length,
        source_lba: source,
        blocks,
        figures,
        verified,
    })
}

/// Writes a pattern that differs in every block (its LBA, then bytes from it).
fn prefill(client: &mut Client, io: HostIo, source: u64, blocks: u64) -> Result<(), CopyError> {
    let block = u64::from(io.block_length);
    let mut done = 0;
    while done < blocks {
        let mut batch = Vec::new();
        while done < blocks && batch.len() < io.depth {
            let n = io.piece.min(blocks - done);
            let lba = source + done;
            let mut data = vec![0u8; (n * block) as usize];
            for (i, chunk) in data.chunks_mut(block as usize).enumerate() {
                let stamp = lba + i as u64;
                chunk[..8].copy_from_slice(&stamp.to_be_bytes());
                for (j, byte) in chunk[8..].iter_mut().enumerate() {
                    *byte = (stamp as usize).wrapping_add(j) as u8;
                }
            }
            let cdb = decode("WRITE", Cdb::write(lba, n as u32, io.block_length, false))?;
            batch.push(Request::new(io.lun, cdb, data, 0));
            done += n;
        }
        for outcome in client.execute_batch(batch)? {
            checked("WRITE", outcome?)?;
        }
    }
    Ok(())
}

/// Through the host: read `depth` pieces, write them, until done.
fn host_copy(
    client: &mut Client,
    io: HostIo,
    source: u64,
    dest: u64,
    blocks: u64,
    commands: &mut u64,
) -> Result<(), CopyError> {
    let block = u64::from(io.block_length);
    let window = io.piece * io.depth as u64;
    let mut done = 0;
    while done < blocks {
        let n = window.min(blocks - done);
        let data = read_range(client, io, source + done, n, commands)?;
        let mut lba = dest + done;
        let mut writes = Vec::new();
        for buffer in data {
            let count = buffer.len() as u64 / block;
            let cdb = decode(
                "WRITE",
                Cdb::write(lba, count as u32, io.block_length, false),
            )?;
            writes.push(Request::new(io.lun, cdb, buffer, 0));
            lba += count;
        }
        *commands += writes.len() as u64;
        for outcome in client.execute_batch(writes)? {
            checked("WRITE", outcome?)?;
        }
        done += n;
    }
    Ok(())
}

/// The subcommand: an EXTENDED COPY job, then a host copy job of the same source to
/// another place, through [`run_job`] (the code `rw=copy` jobs run).
pub fn run(options: &CopyOffloadOptions) -> Result<CopyReport, CopyError> {
    let xcopy_dest = options.xcopy_dest.unwrap_or(options.source + options.size);
    let host_dest = options.host_dest.unwrap_or(xcopy_dest + options.size);
    let job = |name: &str, method, dest, prefill| CopyJob {
        name: name.to_string(),
        url: options.url.clone(),
        login: options.login.clone(),
        method,
        source: options.source,
        size: options.size,
        dest: Some(dest),
        bs: options.bs,
        iodepth: options.iodepth,
        prefill,
        verify: options.verify,
    };
    let xcopy = run_job(&job(
        "xcopy",
        CopyMethod::Xcopy,
        xcopy_dest,
        options.prefill,
    ))?;
    let host = run_job(&job("host", CopyMethod::Host, host_dest, false))?;
    let report = CopyReport {
        url: options.url.to_string(),
        block_length: xcopy.block_length,
        source_lba: xcopy.source_lba,
        blocks: xcopy.blocks,
        extended_copy: xcopy.figures,
        host: host.figures,
        verified: xcopy.verified.zip(host.verified).map(|(a, b)| a && b),
    };
    if report.verified == Some(false) {
        return Err(CopyError::Verify(format!(
            "a destination differs from the source\n{}",
            report.to_human()
        )));
    }
    Ok(report)
}

/// `iscsi-bench copy-offload ...`: 0 when both copies ran (and verified), 1 when one
/// failed, 2 for bad options.
pub fn main(args: &[String]) -> std::process::ExitCode {
    let options = match CopyOffloadOptions::parse(args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("iscsi-bench copy-offload: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = run(&options).map(|report| (report.to_json(), report.to_human()));
    print_report(result, options.json, "iscsi-bench copy-offload")
}

/// Prints a copy report (its JSON and text renderings) as JSON or text, or the error
/// after `who`; the exit code (1 on an error). The `copy-offload` command and a job file
/// of `rw=copy` jobs end alike.
pub fn print_report(
    result: Result<(Value, String), CopyError>,
    json: bool,
    who: &str,
) -> std::process::ExitCode {
    match result {
        Ok((value, text)) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&value).unwrap_or_default()
                );
            } else {
                print!("{text}");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{who}: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_parse_with_fio_spelling_and_refusals_say_why() {
        let o = CopyOffloadOptions::parse(&args(&[
            "--filename=iscsi://127.0.0.1:3260/iqn.2026-12.t:x/2",
            "--size=64M",
            "--offset=1M",
            "--iodepth=4",
            "--output-format=json",
        ]))
        .unwrap();
        assert_eq!(
            (o.size, o.source, o.iodepth, o.json),
            (64 << 20, 1 << 20, 4, true)
        );
        assert_eq!(o.url.lun, Some(2));
        for (bad, says) in [
            (vec!["--size=1M"], "--filename"),
            (vec!["--filename=iscsi://h/iqn.2026-12.t:x/0"], "--size"),
            (
                vec![
                    "--filename=iscsi://h/iqn.2026-12.t:x/0",
                    "--size=1M",
                    "--bs=0",
                ],
                "--bs",
            ),
            (
                vec![
                    "--filename=iscsi://h/iqn.2026-12.t:x/0",
                    "--size=1M",
                    "--what=1",
                ],
                "unknown",
            ),
            (vec!["--size"], "--name=value"),
        ] {
            let e = CopyOffloadOptions::parse(&args(&bad))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
