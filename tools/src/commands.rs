//! One function per `iscsi-ctl` command: build the CDBs, run them through a logged-in
//! [`Client`] (over software TCP, or over an offload adapter model when `--transport` says
//! so: [`Client::connect_path`]), decode the answers, render them.

use std::path::Path;

use datapath::client::{Client, ClientError};
use datapath::scsi::alua::{self, AccessState};
use datapath::scsi::probe::{probe_lun, Capacity, ProbeConfig, ProbeError, ProbeFailure};
use datapath::scsi::{
    self, BlockLimits, Cdb, DeviceIdentification, LunAddress, ReportLuns, Sense, StandardInquiry,
    SupportedVpdPages, UnitSerialNumber,
};
use datapath::session::{CommandOutcome, Request};
use datapath::shard::{MultipathConfig, PathStatus};
use serde_json::{json, Value};

use crate::config::ConnectOptions;
use crate::render::{hex, hex_dump, human_bytes, table, Output};
use datapath::transport::TransportKind;
use datapath::url::{IscsiUrl, UrlError};

/// What can go wrong in a command, each naming its cause.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{command}: {status}{}", sense.as_ref().map(|s| format!(": {s}")).unwrap_or_default())]
    Check {
        command: &'static str,
        status: String,
        sense: Option<Sense>,
    },
    #[error("{command}: the target's answer cannot be decoded: {source}")]
    Decode {
        command: &'static str,
        source: scsi::ScsiError,
    },
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    /// The LUN probe found a capacity it cannot use.
    #[error(transparent)]
    Probe(ProbeError),
}

impl From<ProbeFailure<ClientError>> for CtlError {
    fn from(failure: ProbeFailure<ClientError>) -> Self {
        match failure {
            ProbeFailure::Execute { error, .. } => CtlError::Client(error),
            ProbeFailure::Scsi(ProbeError::Refused {
                command,
                status,
                sense,
            }) => CtlError::Check {
                command,
                status: scsi::status_name(status).into_owned(),
                sense,
            },
            ProbeFailure::Scsi(ProbeError::Decode { command, source }) => {
                CtlError::Decode { command, source }
            }
            ProbeFailure::Scsi(other) => CtlError::Probe(other),
        }
    }
}

/// SCSI commands that may move this many bytes at most go in one command.
const MAX_TRANSFER_BYTES: u32 = 1 << 20;
/// A UNIT ATTENTION (reset, parameters changed) is reported once; retry past it.
const UNIT_ATTENTION_RETRIES: usize = 3;

/// Turns a completed command into its data, or a check-condition error with decoded sense.
pub(crate) fn check(command: &'static str, outcome: CommandOutcome) -> Result<Vec<u8>, CtlError> {
    if outcome.status == scsi::sense::status::GOOD {
        let mut data = outcome.buffer;
        data.truncate(outcome.transferred as usize);
        return Ok(data);
    }
    let sense = outcome
        .sense
        .as_deref()
        .and_then(|bytes| Sense::decode(bytes).ok());
    Err(CtlError::Check {
        command,
        status: scsi::status_name(outcome.status).into_owned(),
        sense,
    })
}

pub(crate) fn is_unit_attention(error: &CtlError) -> bool {
    matches!(error, CtlError::Check { sense: Some(s), .. } if s.key == scsi::sense::key::UNIT_ATTENTION)
}

/// Runs one CDB on `lun`, retrying past unit attentions, and returns the data read.
fn run(
    client: &mut Client,
    command: &'static str,
    lun: u64,
    cdb: &Cdb,
    write_data: Option<Vec<u8>>,
) -> Result<Vec<u8>, CtlError> {
    let mut attempt = 0;
    loop {
        let direction = cdb.direction();
        let buffer = match (&write_data, direction) {
            (Some(data), _) => data.clone(),
            (None, scsi::DataDirection::Read(len)) => vec![0; len as usize],
            (None, _) => Vec::new(),
        };
        let outcome = client.execute(Request::new(lun, cdb.clone(), buffer, 0))?;
        match check(command, outcome) {
            Err(error) if is_unit_attention(&error) && attempt < UNIT_ATTENTION_RETRIES => {
                attempt += 1;
            }
            result => return result,
        }
    }
}

fn connect(options: &ConnectOptions, url: &IscsiUrl) -> Result<Client, CtlError> {
    Ok(Client::connect(&options.client_config(url)?)?)
}

/// Logs in to `url` over the transport `--transport` names. An adapter transport builds a
/// fresh software model of that adapter kind with one queue pair, which the client drives
/// from one shard.
/// With `--paths`, one multipath shard over software TCP instead
/// ([`Client::connect_multipath`]); [`finish`] then reports what each path carried.
fn open_client(options: &ConnectOptions, url: &IscsiUrl) -> Result<Client, CtlError> {
    let config = options.client_config(url)?;
    if let Some(paths) = &options.paths {
        let portals = paths.resolve(&config).map_err(CtlError::Usage)?;
        // Each path over the transport asked for (two adapter queue pairs per path).
        let path = offload::model_path(
            options.transport,
            datapath::shard::queue_pairs_needed(1, portals.len()),
        );
        let mut multipath = MultipathConfig::new(portals, lun_of(url));
        multipath.policy = options.path_policy;
        return Ok(Client::connect_multipath_over(&config, multipath, path)?);
    }
    let path = offload::model_path(options.transport, 1);
    Ok(Client::connect_path(&config, path)?)
}

/// Logs out; on a multipath client ([`open_client`] with `--paths`) first takes what each
/// path carried, for [`Output::emit_with_paths`].
fn finish(client: Client) -> Result<Vec<PathStatus>, CtlError> {
    let paths = client.path_statuses();
    client.logout()?;
    Ok(paths)
}

fn decode_error(command: &'static str) -> impl FnOnce(scsi::ScsiError) -> CtlError {
    move |source| CtlError::Decode { command, source }
}

pub fn discover(options: &ConnectOptions, portal: &str, out: &Output) -> Result<(), CtlError> {
    let url = IscsiUrl::parse_portal(portal)?;
    let targets = Client::discover(&options.client_config(&url)?)?;
    let value = json!({
        "portal": url.to_string(),
        "targets": targets.iter().map(|t| json!({
            "name": t.name,
            "portals": t.addresses.iter().map(|(a, tpgt)| json!({"address": a, "tpgt": tpgt})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    out.emit(&value, || {
        let mut text = String::new();
        for target in &targets {
            text.push_str(&format!("{}\n", target.name));
            for (address, tpgt) in &target.addresses {
                text.push_str(&format!("    portal {address}, portal group {tpgt}\n"));
            }
        }
        if targets.is_empty() {
            text.push_str("no targets\n");
        }
        text
    });
    Ok(())
}

pub fn login(options: &ConnectOptions, url: &str, out: &Output) -> Result<(), CtlError> {
    let url = IscsiUrl::parse(url)?;
    if url.target.is_none() {
        return Err(CtlError::Url(UrlError::NoTarget {
            url: url.to_string(),
        }));
    }
    if options.transport != TransportKind::Software {
        return Err(CtlError::Usage(
            "login shows the software session's negotiation; --transport applies to the \
             data commands (luns, inquiry, readcap, read, write)"
                .into(),
        ));
    }
    let client = connect(options, &url)?;
    let p = client.params().cloned().unwrap_or_default();
    let tsih = client.session().map_or(0, |session| session.tsih());
    let yes_no = |b: bool| if b { "Yes" } else { "No" };
    let digest = |b: bool| if b { "CRC32C" } else { "None" };
    let rows: Vec<(&str, String)> = vec![
        ("Target", url.target.clone().unwrap_or_default()),
        ("Portal", client.portal().to_string()),
        ("TSIH", tsih.to_string()),
        ("HeaderDigest", digest(p.header_digest).into()),
        ("DataDigest", digest(p.data_digest).into()),
        ("InitialR2T", yes_no(p.initial_r2t).into()),
        ("ImmediateData", yes_no(p.immediate_data).into()),
        (
            "MaxRecvDataSegmentLength (ours)",
            p.initiator_max_recv_data_segment_length.to_string(),
        ),
        (
            "MaxRecvDataSegmentLength (target)",
            p.target_max_recv_data_segment_length.to_string(),
        ),
        ("MaxBurstLength", p.max_burst_length.to_string()),
        ("FirstBurstLength", p.first_burst_length.to_string()),
        ("MaxOutstandingR2T", p.max_outstanding_r2t.to_string()),
        ("MaxConnections", p.max_connections.to_string()),
        ("DefaultTime2Wait", p.default_time2wait.to_string()),
        ("DefaultTime2Retain", p.default_time2retain.to_string()),
        ("DataPDUInOrder", yes_no(p.data_pdu_in_order).into()),
        (
            "DataSequenceInOrder",
            yes_no(p.data_sequence_in_order).into(),
        ),
        ("ErrorRecoveryLevel", p.error_recovery_level.to_string()),
    ];
    let value = json!({
        "target": url.target,
        "portal": client.portal().to_string(),
        "tsih": tsih,
        "HeaderDigest": digest(p.header_digest),
        "DataDigest": digest(p.data_digest),
        "InitialR2T": yes_no(p.initial_r2t),
        "ImmediateData": yes_no(p.immediate_data),
        "MaxRecvDataSegmentLength": {
            "initiator": p.initiator_max_recv_data_segment_length,
            "target": p.target_max_recv_data_segment_length,
        },
        "MaxBurstLength": p.max_burst_length,
        "FirstBurstLength": p.first_burst_length,
        "MaxOutstandingR2T": p.max_outstanding_r2t,
        "MaxConnections": p.max_connections,
        "DefaultTime2Wait": p.default_time2wait,
        "DefaultTime2Retain": p.default_time2retain,
        "DataPDUInOrder": yes_no(p.data_pdu_in_order),
        "DataSequenceInOrder": yes_no(p.data_sequence_in_order),
        "ErrorRecoveryLevel": p.error_recovery_level,
    });
    client.logout()?;
    out.emit(&value, || format!("Login succeeded\n{}", table(&rows)));
    Ok(())
}

/// REPORT LUNS with a buffer that grows once if the target has more to say.
fn report_luns(client: &mut Client, lun: u64, select: u8) -> Result<ReportLuns, CtlError> {
    let mut alloc = 4096u32;
    loop {
        let data = run(
            client,
            "REPORT LUNS",
            lun,
            &Cdb::report_luns(select, alloc),
            None,
        )?;
        let luns = ReportLuns::decode(&data).map_err(decode_error("REPORT LUNS"))?;
        if luns.truncated && (luns.full_length as u32) > alloc && alloc < 1 << 20 {
            alloc = (luns.full_length as u32).min(1 << 20);
            continue;
        }
        return Ok(luns);
    }
}

/// Block length and count, from READ CAPACITY(16), or (10) where the target does not know
/// (16): the LUN probe without its TEST UNIT READY (a missing LUN is the capacity command's
/// refusal), unit attentions taken.
fn capacity(client: &mut Client, lun: u64) -> Result<(u32, u64, Value), CtlError> {
    let config = ProbeConfig {
        ready: false,
        unit_attention_retries: UNIT_ATTENTION_RETRIES as u32,
        capacity: true,
        block_limits: false,
    };
    let facts = probe_lun(client, lun, config)?;
    match facts.capacity {
        Some(Capacity::Long(rc)) => {
            let blocks = rc.block_count().min(u64::MAX as u128) as u64;
            let value = json!({
                "block_length": rc.block_length_bytes,
                "blocks": blocks,
                "last_lba": rc.last_lba,
                "bytes": rc.capacity_bytes().min(u64::MAX as u128) as u64,
                "physical_block_length": rc.physical_block_length_bytes(),
                "lowest_aligned_lba": rc.lowest_aligned_lba,
                "protection_type": rc.protection_type(),
                "lbpme": rc.lbpme,
                "lbprz": rc.lbprz,
                "source": "READ CAPACITY(16)",
            });
            Ok((rc.block_length_bytes, blocks, value))
        }
        Some(Capacity::Short(rc)) => {
            let value = json!({
                "block_length": rc.block_length_bytes,
                "blocks": rc.block_count(),
                "last_lba": rc.last_lba,
                "bytes": rc.capacity_bytes().min(u64::MAX as u128) as u64,
                "source": "READ CAPACITY(10)",
            });
            Ok((rc.block_length_bytes, rc.block_count(), value))
        }
        None => Err(CtlError::Probe(ProbeError::NoCapacity)),
    }
}

fn lun_of(url: &IscsiUrl) -> u64 {
    url.lun.unwrap_or(0)
}

/// `iscsi-ctl luns`: REPORT LUNS with `select` sent to the URL's LUN (0 by default), each
/// LUN decoded (a subsidiary LU of a conglomerate as ENDPOINT:ID, `LunAddress`), then,
/// with `inquire`, its INQUIRY (LU_CONG shown) and capacity.
pub fn luns(
    options: &ConnectOptions,
    url: &str,
    select: u8,
    inquire: bool,
    out: &Output,
) -> Result<(), CtlError> {
    let url = IscsiUrl::parse(url)?;
    if url.target.is_none() {
        return Err(CtlError::Url(UrlError::NoTarget {
            url: url.to_string(),
        }));
    }
    let mut client = open_client(options, &url)?;
    let started = std::time::Instant::now();
    let report = report_luns(&mut client, lun_of(&url), select)?;
    let report_luns_us = started.elapsed().as_micros() as u64;
    let mut rows = Vec::new();
    for lun in &report.luns {
        let (number, mut row) = match lun.address() {
            Some(LunAddress::Subsidiary {
                endpoint,
                secondary,
            }) => {
                let address = LunAddress::Subsidiary {
                    endpoint,
                    secondary,
                };
                let shown = format!("{endpoint}:{secondary}");
                let row = json!({"lun": shown, "endpoint": endpoint, "secondary": secondary, "field": lun.to_string()});
                (address.key(), row)
            }
            Some(LunAddress::Single(n)) => (u64::from(n), json!({"lun": n})),
            None => {
                rows.push(json!({"lun": lun.to_string()}));
                continue;
            }
        };
        if !inquire {
            rows.push(row);
            continue;
        }
        let inquiry = run(&mut client, "INQUIRY", number, &Cdb::inquiry(255), None)
            .and_then(|d| StandardInquiry::decode(&d).map_err(decode_error("INQUIRY")))?;
        let role = match (inquiry.lu_cong, lun.address()) {
            (_, Some(LunAddress::Subsidiary { .. })) => "subsidiary",
            (true, _) => "endpoint",
            (false, _) => "plain",
        };
        row["role"] = json!(role);
        row["device_type"] = json!(inquiry.device_type);
        row["device_type_name"] = json!(inquiry.device_type_name());
        row["vendor"] = json!(inquiry.vendor);
        row["product"] = json!(inquiry.product);
        if inquiry.device_type == 0 && inquiry.peripheral_qualifier == 0 {
            if let Ok((block_length, blocks, _)) = capacity(&mut client, number) {
                row["block_length"] = json!(block_length);
                row["blocks"] = json!(blocks);
                row["bytes"] = json!(blocks.saturating_mul(block_length as u64));
            }
        }
        rows.push(row);
    }
    let paths = finish(client)?;
    let value = json!({
        "target": url.target,
        "select_report": select,
        "report_luns_us": report_luns_us,
        "luns": rows,
    });
    out.emit_with_paths(value, &paths, || {
        let mut text = String::new();
        for row in &rows {
            let size = row["bytes"]
                .as_u64()
                .map(|b| format!("  {} ({b} bytes)", human_bytes(b)))
                .unwrap_or_default();
            let lun = match &row["lun"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let role = match row["role"].as_str() {
                Some("plain") | None => String::new(),
                Some(role) => format!(" [{role}]"),
            };
            text.push_str(&format!(
                "LUN {:<9} {:<24} {} {}{size}{role}\n",
                lun,
                row["device_type_name"].as_str().unwrap_or("?"),
                row["vendor"].as_str().unwrap_or(""),
                row["product"].as_str().unwrap_or(""),
            ));
        }
        text
    });
    Ok(())
}

pub fn inquiry(
    options: &ConnectOptions,
    url: &str,
    vpd: Option<u8>,
    out: &Output,
) -> Result<(), CtlError> {
    let url = IscsiUrl::parse_lun_url(url)?;
    let mut client = open_client(options, &url)?;
    let lun = lun_of(&url);
    let (value, human) = match vpd {
        None => {
            let data = run(&mut client, "INQUIRY", lun, &Cdb::inquiry(255), None)?;
            let inq = StandardInquiry::decode(&data).map_err(decode_error("INQUIRY"))?;
            standard_inquiry_view(&inq)
        }
        Some(page) => {
            let data = run(
                &mut client,
                "INQUIRY",
                lun,
                &Cdb::inquiry_vpd(page, 4096),
                None,
            )?;
            vpd_view(page, &data)?
        }
    };
    let paths = finish(client)?;
    out.emit_with_paths(value, &paths, || human);
    Ok(())
}

fn standard_inquiry_view(inq: &StandardInquiry) -> (Value, String) {
    let value = json!({
        "peripheral_qualifier": inq.peripheral_qualifier,
        "device_type": inq.device_type,
        "device_type_name": inq.device_type_name(),
        "removable": inq.removable,
        "version": inq.version,
        "version_name": inq.version_name(),
        "response_data_format": inq.response_data_format,
        "hisup": inq.hisup,
        "normaca": inq.norm_aca,
        "tpgs": inq.tpgs,
        "3pc": inq.third_party_copy,
        "protect": inq.protect,
        "cmdque": inq.cmd_que,
        "vendor": inq.vendor,
        "product": inq.product,
        "revision": inq.revision,
    });
    let rows = vec![
        (
            "Peripheral qualifier",
            format!(
                "{} ({})",
                inq.peripheral_qualifier,
                inq.peripheral_qualifier_name()
            ),
        ),
        (
            "Device type",
            format!("0x{:02x} ({})", inq.device_type, inq.device_type_name()),
        ),
        ("Removable", inq.removable.to_string()),
        (
            "Version",
            format!("0x{:02x} ({})", inq.version, inq.version_name()),
        ),
        ("Response data format", inq.response_data_format.to_string()),
        ("HiSup", inq.hisup.to_string()),
        ("NormACA", inq.norm_aca.to_string()),
        ("TPGS", format!("{} ({})", inq.tpgs, inq.tpgs_name())),
        ("3PC", inq.third_party_copy.to_string()),
        ("Protect", inq.protect.to_string()),
        ("CmdQue", inq.cmd_que.to_string()),
        ("Vendor", inq.vendor.clone()),
        ("Product", inq.product.clone()),
        ("Revision", inq.revision.clone()),
    ];
    (value, table(&rows))
}

fn vpd_view(page: u8, data: &[u8]) -> Result<(Value, String), CtlError> {
    const CMD: &str = "INQUIRY VPD";
    let name = scsi::decode::vpd_page_name(page);
    Ok(match page {
        0x00 => {
            let p = SupportedVpdPages::decode(data).map_err(decode_error(CMD))?;
            let pages: Vec<Value> = p
                .pages
                .iter()
                .map(|c| json!({"page": c, "name": scsi::decode::vpd_page_name(*c)}))
                .collect();
            let text = p
                .pages
                .iter()
                .map(|c| format!("0x{c:02x}  {}\n", scsi::decode::vpd_page_name(*c)))
                .collect();
            (json!({"page": page, "name": name, "pages": pages}), text)
        }
        0x80 => {
            let p = UnitSerialNumber::decode(data).map_err(decode_error(CMD))?;
            (
                json!({"page": page, "name": name, "serial": p.serial}),
                table(&[("Unit serial number", p.serial.clone())]),
            )
        }
        0x83 => {
            let p = DeviceIdentification::decode(data).map_err(decode_error(CMD))?;
            let descriptors: Vec<Value> = p
                .descriptors
                .iter()
                .map(|d| {
                    json!({
                        "association": d.association_name(),
                        "designator_type": d.designator_type_name(),
                        "code_set": d.code_set_name(),
                        "protocol": d.protocol(),
                        "designator": hex(&d.designator),
                        "value": d.value.to_string(),
                    })
                })
                .collect();
            let text = p
                .descriptors
                .iter()
                .map(|d| {
                    format!(
                        "{:<16} {:<28} {}\n",
                        d.association_name(),
                        d.designator_type_name(),
                        d.value
                    )
                })
                .collect();
            (
                json!({"page": page, "name": name, "descriptors": descriptors}),
                text,
            )
        }
        0xb0 => {
            let p = BlockLimits::decode(data).map_err(decode_error(CMD))?;
            // (label for people, JSON key, value): one list serves both outputs.
            let fields: [(&str, &str, u64); 10] = [
                (
                    "Max compare and write length (blocks)",
                    "max_compare_and_write_length",
                    p.max_compare_and_write_length_blocks.into(),
                ),
                (
                    "Optimal transfer length granularity (blocks)",
                    "optimal_transfer_length_granularity",
                    p.optimal_transfer_length_granularity_blocks.into(),
                ),
                (
                    "Max transfer length (blocks)",
                    "max_transfer_length",
                    p.max_transfer_length_blocks.into(),
                ),
                (
                    "Optimal transfer length (blocks)",
                    "optimal_transfer_length",
                    p.optimal_transfer_length_blocks.into(),
                ),
                (
                    "Max prefetch length (blocks)",
                    "max_prefetch_length",
                    p.max_prefetch_length_blocks.into(),
                ),
                (
                    "Max unmap LBA count",
                    "max_unmap_lba_count",
                    p.max_unmap_lba_count.into(),
                ),
                (
                    "Max unmap block descriptor count",
                    "max_unmap_block_descriptor_count",
                    p.max_unmap_block_descriptor_count.into(),
                ),
                (
                    "Optimal unmap granularity (blocks)",
                    "optimal_unmap_granularity",
                    p.optimal_unmap_granularity_blocks.into(),
                ),
                (
                    "Unmap granularity alignment (blocks)",
                    "unmap_granularity_alignment",
                    p.unmap_granularity_alignment_blocks.into(),
                ),
                (
                    "Max write same length (blocks)",
                    "max_write_same_length",
                    p.max_write_same_length_blocks,
                ),
            ];
            let rows: Vec<(&str, String)> = fields
                .iter()
                .map(|(label, _, v)| (*label, v.to_string()))
                .collect();
            let mut value = json!({"page": page, "name": name});
            for (_, key, v) in fields {
                value[key] = json!(v);
            }
            (value, table(&rows))
        }
        _ => (
            json!({"page": page, "name": name, "data": hex(data)}),
            hex_dump(data, 0),
        ),
    })
}

pub fn readcap(options: &ConnectOptions, url: &str, out: &Output) -> Result<(), CtlError> {
    let url = IscsiUrl::parse_lun_url(url)?;
    let mut client = open_client(options, &url)?;
    let (block_length, blocks, value) = capacity(&mut client, lun_of(&url))?;
    let paths = finish(client)?;
    let source = value["source"].as_str().unwrap_or("").to_string();
    out.emit_with_paths(value, &paths, || {
        let bytes = blocks.saturating_mul(block_length as u64);
        table(&[
            ("Block length", format!("{block_length} bytes")),
            ("Blocks", blocks.to_string()),
            (
                "Capacity",
                format!("{} ({bytes} bytes)", human_bytes(bytes)),
            ),
            ("Source", source),
        ])
    });
    Ok(())
}

/// Splits `blocks` starting at `lba` into commands of at most [`MAX_TRANSFER_BYTES`].
fn chunks(lba: u64, blocks: u64, block_length: u32) -> Vec<(u64, u32)> {
    let per_command = (MAX_TRANSFER_BYTES / block_length).max(1) as u64;
    let mut out = Vec::new();
    let mut next = lba;
    let end = lba + blocks;
    while next < end {
        let n = per_command.min(end - next);
        out.push((next, n as u32));
        next += n;
    }
    out
}

/// Checks that `[lba, lba + blocks)` lies on the LUN before any I/O is issued.
fn check_range(lba: u64, blocks: u64, capacity_blocks: u64) -> Result<(), CtlError> {
    match lba.checked_add(blocks) {
        Some(end) if end <= capacity_blocks => Ok(()),
        _ => Err(CtlError::Usage(format!(
            "blocks {lba}..{} lie past the end of the LUN ({capacity_blocks} blocks)",
            lba.saturating_add(blocks)
        ))),
    }
}

/// Runs a batch of read or write CDBs pipelined, in order, failing on the first error.
fn run_batch(
    client: &mut Client,
    command: &'static str,
    lun: u64,
    commands: Vec<(Cdb, Vec<u8>)>,
) -> Result<Vec<Vec<u8>>, CtlError> {
    let batch = commands
        .into_iter()
        .map(|(cdb, buffer)| Request::new(lun, cdb, buffer, 0))
        .collect();
    client
        .execute_batch(batch)?
        .into_iter()
        .map(|result| check(command, result?))
        .collect()
}

/// `-` names standard input or output, as for most Unix tools.
fn is_standard_stream(path: &Path) -> bool {
    path == Path::new("-")
}

/// The bytes of `path`, or of standard input for `-`.
fn read_input(path: &Path) -> Result<Vec<u8>, CtlError> {
    if is_standard_stream(path) {
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut data).map_err(|source| {
            CtlError::File {
                path: "standard input".into(),
                source,
            }
        })?;
        return Ok(data);
    }
    std::fs::read(path).map_err(|source| CtlError::File {
        path: path.display().to_string(),
        source,
    })
}

pub fn read(
    options: &ConnectOptions,
    url: &str,
    lba: u64,
    blocks: u32,
    out_path: Option<&Path>,
    out: &Output,
) -> Result<(), CtlError> {
    let url = IscsiUrl::parse_lun_url(url)?;
    if blocks == 0 {
        return Err(CtlError::Usage("--blocks must be at least 1".into()));
    }
    if out.json && out_path.is_some_and(is_standard_stream) {
        return Err(CtlError::Usage(
            "--out - writes the data to stdout, where --json goes too: choose one".into(),
        ));
    }
    let mut client = open_client(options, &url)?;
    let lun = lun_of(&url);
    let (block_length, capacity_blocks, _) = capacity(&mut client, lun)?;
    check_range(lba, blocks as u64, capacity_blocks)?;
    let mut commands = Vec::new();
    for (start, n) in chunks(lba, blocks as u64, block_length) {
        let cdb = Cdb::read(start, n, block_length, false).map_err(decode_error("READ"))?;
        commands.push((cdb, vec![0u8; (n * block_length) as usize]));
    }
    let data: Vec<u8> = run_batch(&mut client, "READ", lun, commands)?.concat();
    let paths = finish(client)?;
    if let Some(path) = out_path {
        if is_standard_stream(path) {
            // The raw bytes are the output: nothing else goes to stdout.
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            return stdout
                .write_all(&data)
                .and_then(|()| stdout.flush())
                .map_err(|source| CtlError::File {
                    path: "standard output".into(),
                    source,
                });
        }
        std::fs::write(path, &data).map_err(|source| CtlError::File {
            path: path.display().to_string(),
            source,
        })?;
    }
    let value = json!({
        "lba": lba, "blocks": blocks, "block_length": block_length, "bytes": data.len(),
        "crc32c": format!("{:08x}", datapath::pdu::digest::crc32c(&data)),
        "out": out_path.map(|p| p.display().to_string()),
    });
    out.emit_with_paths(value, &paths, || match out_path {
        Some(path) => format!(
            "read {} bytes from LBA {lba} into {}\n",
            data.len(),
            path.display()
        ),
        None => hex_dump(&data, lba * block_length as u64),
    });
    Ok(())
}

/// How `write` makes its data durable before it reports success (SBC-3 5.x: GOOD for a
/// WRITE without FUA may mean "in the volatile cache" when WCE is set, which file LUNs of
/// most targets, ours included, start with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// One SYNCHRONIZE CACHE of the range written, after the last WRITE (the default).
    SynchronizeCache,
    /// FUA on every WRITE.
    ForceUnitAccess,
    /// Neither: fast, and lost on a power cut of the target.
    None,
}

impl Durability {
    fn name(self) -> &'static str {
        match self {
            Durability::SynchronizeCache => "synchronize-cache",
            Durability::ForceUnitAccess => "fua",
            Durability::None => "none",
        }
    }
}

/// The CDBs that write `blocks` blocks from `lba` with the durability asked for: the
/// WRITEs in order (FUA set on each for [`Durability::ForceUnitAccess`]), then for
/// [`Durability::SynchronizeCache`] one SYNCHRONIZE CACHE of exactly that range.
fn write_commands(
    lba: u64,
    blocks: u64,
    block_length: u32,
    durability: Durability,
) -> Result<(Vec<Cdb>, Option<Cdb>), CtlError> {
    let fua = durability == Durability::ForceUnitAccess;
    let writes = chunks(lba, blocks, block_length)
        .into_iter()
        .map(|(start, n)| Cdb::write(start, n, block_length, fua))
        .collect::<Result<Vec<_>, _>>()
        .map_err(decode_error("WRITE"))?;
    let sync = (durability == Durability::SynchronizeCache).then(|| {
        match (u32::try_from(lba), u16::try_from(blocks)) {
            (Ok(lba), Ok(blocks)) => Cdb::synchronize_cache_10(lba, blocks, false),
            // A range past SYNCHRONIZE CACHE(16)'s 32-bit count syncs to the end (0).
            _ => Cdb::synchronize_cache_16(lba, u32::try_from(blocks).unwrap_or(0), false),
        }
    });
    Ok((writes, sync))
}

pub fn write(
    options: &ConnectOptions,
    url: &str,
    lba: u64,
    input: &Path,
    durability: Durability,
    out: &Output,
) -> Result<(), CtlError> {
    let url = IscsiUrl::parse_lun_url(url)?;
    let data = read_input(input)?;
    let mut client = open_client(options, &url)?;
    let lun = lun_of(&url);
    let (block_length, capacity_blocks, _) = capacity(&mut client, lun)?;
    if data.is_empty() || data.len() % block_length as usize != 0 {
        return Err(CtlError::Usage(format!(
            "{}: {} bytes is not a whole, non-zero number of {block_length}-byte blocks",
            input.display(),
            data.len()
        )));
    }
    let blocks = (data.len() / block_length as usize) as u64;
    check_range(lba, blocks, capacity_blocks)?;
    let (writes, sync) = write_commands(lba, blocks, block_length, durability)?;
    let mut commands = Vec::new();
    let mut offset = 0usize;
    for cdb in writes {
        let len = cdb.direction().transfer_length() as usize;
        commands.push((cdb, data[offset..offset + len].to_vec()));
        offset += len;
    }
    run_batch(&mut client, "WRITE", lun, commands)?;
    if let Some(sync) = sync {
        run(&mut client, "SYNCHRONIZE CACHE", lun, &sync, None)?;
    }
    let paths = finish(client)?;
    let value = json!({
        "lba": lba, "blocks": blocks, "block_length": block_length, "bytes": data.len(),
        "crc32c": format!("{:08x}", datapath::pdu::digest::crc32c(&data)),
        "durability": durability.name(),
    });
    out.emit_with_paths(value, &paths, || {
        let how = match durability {
            Durability::SynchronizeCache => "synchronized",
            Durability::ForceUnitAccess => "with FUA",
            Durability::None => "not synchronized: --no-sync",
        };
        format!("wrote {} bytes at LBA {lba} ({how})\n", data.len())
    });
    Ok(())
}

/// Bytes a host copy reads before it writes them back.
const HOST_COPY_WINDOW_BYTES: u64 = 32 << 20;

/// The logical unit's NAA designator (VPD 0x83), which names it in a copy's target
/// descriptor.
fn naa_designator(client: &mut Client, lun: u64) -> Result<Vec<u8>, CtlError> {
    const CMD: &str = "INQUIRY";
    let data = run(client, CMD, lun, &Cdb::inquiry_vpd(0x83, 4096), None)?;
    let page = DeviceIdentification::decode(&data).map_err(decode_error(CMD))?;
    page.descriptors
        .iter()
        .find(|d| d.association == 0 && d.designator_type == 3)
        .map(|d| d.designator.clone())
        .ok_or_else(|| CtlError::Usage("the LUN reports no NAA designator to copy with".into()))
}

/// Copies `blocks` blocks from `source_lba` to `dest_lba` within one LUN, with EXTENDED
/// COPY (the target moves the data) or through this host (READ, then WRITE), then makes
/// the copy durable with SYNCHRONIZE CACHE; reports the time each took.
pub fn copy(
    options: &ConnectOptions,
    url: &str,
    source_lba: u64,
    dest_lba: u64,
    blocks: u64,
    through_host: bool,
    out: &Output,
) -> Result<(), CtlError> {
    let url = IscsiUrl::parse_lun_url(url)?;
    if blocks == 0 {
        return Err(CtlError::Usage("--blocks must be at least 1".into()));
    }
    let mut client = open_client(options, &url)?;
    let lun = lun_of(&url);
    let (block_length, capacity_blocks, _) = capacity(&mut client, lun)?;
    check_range(source_lba, blocks, capacity_blocks)?;
    check_range(dest_lba, blocks, capacity_blocks)?;
    let started = std::time::Instant::now();
    if through_host {
        let window = (HOST_COPY_WINDOW_BYTES / u64::from(block_length)).max(1);
        let mut done = 0;
        while done < blocks {
            let n = window.min(blocks - done);
            let reads = chunks(source_lba + done, n, block_length)
                .into_iter()
                .map(|(start, count)| {
                    Cdb::read(start, count, block_length, false)
                        .map(|cdb| (cdb, vec![0u8; (count * block_length) as usize]))
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(decode_error("READ"))?;
            let data = run_batch(&mut client, "READ", lun, reads)?;
            let writes = chunks(dest_lba + done, n, block_length)
                .into_iter()
                .zip(data)
                .map(|((start, count), data)| {
                    Cdb::write(start, count, block_length, false).map(|cdb| (cdb, data))
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(decode_error("WRITE"))?;
            run_batch(&mut client, "WRITE", lun, writes)?;
            done += n;
        }
    } else {
        let naa = naa_designator(&mut client, lun)?;
        for segments in scsi::xcopy::plan(source_lba, dest_lba, blocks) {
            let list = scsi::xcopy::parameter_list(&naa, block_length, &segments);
            let request = scsi::xcopy::request(lun, list).map_err(decode_error("EXTENDED COPY"))?;
            let outcome = client.execute(request)?;
            check("EXTENDED COPY", outcome)?;
        }
    }
    run(
        &mut client,
        "SYNCHRONIZE CACHE",
        lun,
        &Cdb::synchronize_cache_16(0, 0, false),
        None,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let paths = finish(client)?;
    let bytes = blocks * u64::from(block_length);
    let method = if through_host {
        "host"
    } else {
        "extended-copy"
    };
    let value = json!({
        "method": method, "source_lba": source_lba, "dest_lba": dest_lba, "blocks": blocks,
        "bytes": bytes, "seconds": seconds,
        "mib_per_second": bytes as f64 / (1 << 20) as f64 / seconds.max(1e-9),
    });
    out.emit_with_paths(value, &paths, || {
        format!(
            "copied {} ({method}) from LBA {source_lba} to LBA {dest_lba} in {seconds:.3} s \
             ({:.0} MiB/s)\n",
            human_bytes(bytes),
            bytes as f64 / (1 << 20) as f64 / seconds.max(1e-9)
        )
    });
    Ok(())
}

/// One path of `paths`: where it goes, whether it logs in, which LU it reaches.
struct PathReport {
    portal: std::net::SocketAddr,
    /// Where the login landed (differs from `portal` after a redirect).
    landed: Option<std::net::SocketAddr>,
    error: Option<String>,
    /// The LU's designators (type, hex), sorted.
    designators: Vec<(u8, String)>,
    /// The port's target port group and its access state (ALUA), when the LU reports them.
    alua: Option<(u16, AccessState)>,
}

/// The access state of the target port group VPD 0x83 names for this port (REPORT
/// TARGET PORT GROUPS); `None` when the LU names no group or does not answer.
fn port_group_state(
    client: &mut Client,
    lun: u64,
    page: &DeviceIdentification,
) -> Option<(u16, AccessState)> {
    let group = page.target_port_group()?;
    let data = run(
        client,
        "REPORT TARGET PORT GROUPS",
        lun,
        &Cdb::report_target_port_groups(4096),
        None,
    )
    .ok()?;
    let state = alua::state_of(&alua::parse_port_groups(&data).ok()?, group)?;
    Some((group, state))
}

/// `paths URL [--path HOST:PORT]…`: every portal SendTargets lists for the URL's target,
/// plus those given, each logged in to and asked for the LU's identity (INQUIRY VPD 0x83):
/// whether it is up and whether it reaches the same LU as the first path that answered
/// (what a multipath shard checks before a path carries I/O).
pub fn paths(
    options: &ConnectOptions,
    url: &str,
    extra: &[String],
    out: &Output,
) -> Result<(), CtlError> {
    let url = IscsiUrl::parse_lun_url(url)?;
    let config = options.client_config(&url)?;
    let lun = lun_of(&url);
    let mut portals = Client::target_portals(&config)?;
    for given in extra {
        let resolved = crate::config::resolve(&IscsiUrl::parse_portal(given)?)?;
        if !portals.contains(&resolved) {
            portals.push(resolved);
        }
    }
    let mut reports = Vec::new();
    for portal in portals {
        let mut one = config.clone();
        one.portal = portal;
        let mut report = PathReport {
            portal,
            landed: None,
            error: None,
            designators: Vec::new(),
            alua: None,
        };
        match Client::connect(&one) {
            Err(e) => report.error = Some(e.to_string()),
            Ok(mut client) => {
                report.landed = Some(client.portal());
                let answer = run(
                    &mut client,
                    "TEST UNIT READY",
                    lun,
                    &Cdb::test_unit_ready(),
                    None,
                )
                .and_then(|_| {
                    run(
                        &mut client,
                        "INQUIRY",
                        lun,
                        &Cdb::inquiry_vpd(0x83, 4096),
                        None,
                    )
                });
                match answer.and_then(|data| {
                    DeviceIdentification::decode(&data).map_err(decode_error("INQUIRY"))
                }) {
                    Ok(page) => {
                        report.designators = page
                            .logical_unit_designators()
                            .map(|d| (d.designator_type, hex(&d.designator)))
                            .collect();
                        report.designators.sort();
                        report.alua = port_group_state(&mut client, lun, &page);
                    }
                    Err(e) => report.error = Some(e.to_string()),
                }
                let _ = client.logout();
            }
        }
        reports.push(report);
    }
    let reference = reports
        .iter()
        .find(|r| r.error.is_none() && !r.designators.is_empty())
        .map(|r| r.designators.clone());
    let same = |r: &PathReport| reference.as_ref().is_some_and(|d| *d == r.designators);
    let state = |r: &PathReport| match &r.error {
        None if same(r) => "up".to_string(),
        None => "up, another LU".to_string(),
        Some(e) => format!("down: {e}"),
    };
    let value = json!({
        "target": url.target,
        "lun": lun,
        "paths": reports.iter().map(|r| json!({
            "portal": r.portal.to_string(),
            "landed": r.landed.map(|a| a.to_string()),
            "up": r.error.is_none(),
            "same_lu": r.error.is_none() && same(r),
            "error": r.error,
            "designators": r.designators.iter().map(|(t, d)| json!({"type": t, "designator": d})).collect::<Vec<_>>(),
            "alua": r.alua.map(|(group, state)| json!({"group": group, "state": state.name()})),
        })).collect::<Vec<_>>(),
    });
    out.emit(&value, || {
        let mut text = String::new();
        for r in &reports {
            let landed = match r.landed {
                Some(at) if at != r.portal => format!(" (redirected to {at})"),
                _ => String::new(),
            };
            let alua = r
                .alua
                .map(|(group, state)| format!(", ALUA {state} (group {group})"))
                .unwrap_or_default();
            text.push_str(&format!("{}{landed}  {}{alua}\n", r.portal, state(r)));
        }
        if reports.is_empty() {
            text.push_str("no portals\n");
        }
        text
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_range_exactly() {
        let c = chunks(10, 5000, 512);
        assert_eq!(c.first(), Some(&(10, 2048)));
        assert_eq!(c.iter().map(|(_, n)| *n as u64).sum::<u64>(), 5000);
        assert_eq!(c.last().map(|(l, n)| l + *n as u64), Some(5010));
    }

    #[test]
    fn write_is_made_durable_by_synchronize_cache_unless_told_otherwise() {
        let (writes, sync) = write_commands(8, 5000, 512, Durability::SynchronizeCache).unwrap();
        assert_eq!(writes.len(), 3);
        assert!(writes.iter().all(|w| w.as_bytes()[1] & 0x08 == 0));
        let sync = sync.expect("SYNCHRONIZE CACHE after the last write");
        assert_eq!(sync.opcode(), 0x35);
        assert_eq!(&sync.as_bytes()[2..6], &8u32.to_be_bytes());
        assert_eq!(&sync.as_bytes()[7..9], &5000u16.to_be_bytes());

        let (writes, sync) = write_commands(8, 5000, 512, Durability::ForceUnitAccess).unwrap();
        assert!(writes.iter().all(|w| w.as_bytes()[1] & 0x08 != 0), "FUA");
        assert!(sync.is_none());

        let (_, sync) = write_commands(8, 1, 512, Durability::None).unwrap();
        assert!(sync.is_none());
        // Past 32-bit LBAs: SYNCHRONIZE CACHE(16).
        let (_, sync) = write_commands(1 << 33, 1, 512, Durability::SynchronizeCache).unwrap();
        assert_eq!(sync.unwrap().opcode(), 0x91);
    }

    #[test]
    fn range_past_the_end_is_refused() {
        assert!(check_range(0, 10, 10).is_ok());
        assert!(check_range(1, 10, 10).is_err());
        assert!(check_range(u64::MAX, 2, 10).is_err());
    }
}
