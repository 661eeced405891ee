//! `iscsi-ctl reserve`, `release`, `reset` and `pr`: SCSI-2 reservations, task management
//! resets and persistent reservations, with sg_persist's option names where it has them.
//! Every command runs on a [`NexusSession`] whose ISID is stable per initiator name (see
//! `nexus`), because a registration belongs to an initiator port.

use std::time::Duration;

use clap::{ArgGroup, Args};
use datapath::scsi::reservation::{
    Capabilities, FullStatus, PrInAction, PrOutAction, PrOutParams, PrType, ReadKeys,
    ReadReservation, RegisterMoveParams, TransportId,
};
use datapath::scsi::{self, Cdb};
use datapath::session::{TaskManagementFunction, TaskManagementResponse};
use datapath::url::IscsiUrl;
use serde_json::{json, Value};

use crate::commands::{check, is_unit_attention, CtlError};
use crate::config::ConnectOptions;
use crate::nexus::{parse_isid, stable_isid, NexusSession};
use crate::render::{table, Output};

/// A UNIT ATTENTION (reset, reservation preempted) is reported once; retry past it.
const UNIT_ATTENTION_RETRIES: usize = 4;
/// PERSISTENT RESERVE IN allocation length by default (room for 256 registrations with
/// their TransportIDs).
const DEFAULT_ALLOCATION: u16 = 16384;

/// Which ISID (and so which I_T nexus) a command uses.
#[derive(Args, Debug, Clone)]
pub struct NexusArgs {
    /// ISID of this initiator port, 12 hex digits; default: derived from the initiator
    /// name, the same on every run.
    #[arg(long, value_parser = parse_isid)]
    pub isid: Option<[u8; 6]>,
}

#[derive(Args, Debug)]
pub struct ReserveArgs {
    pub url: String,
    /// RESERVE(10)/RELEASE(10) instead of the 6-byte commands.
    #[arg(long)]
    pub ten: bool,
    /// Keep the session (and so the reservation, which ends with the I_T nexus) this many
    /// seconds before logging out.
    #[arg(long, value_name = "SECONDS")]
    pub hold: Option<f64>,
    #[command(flatten)]
    pub nexus: NexusArgs,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("kind").required(true).args(["lun", "target_warm", "target_cold", "abort_task_set", "clear_task_set"])))]
pub struct ResetArgs {
    pub url: String,
    /// LOGICAL UNIT RESET of the URL's LUN.
    #[arg(long)]
    pub lun: bool,
    /// TARGET WARM RESET.
    #[arg(long)]
    pub target_warm: bool,
    /// TARGET COLD RESET (the target closes every session afterwards).
    #[arg(long)]
    pub target_cold: bool,
    /// ABORT TASK SET on the URL's LUN.
    #[arg(long)]
    pub abort_task_set: bool,
    /// CLEAR TASK SET on the URL's LUN.
    #[arg(long)]
    pub clear_task_set: bool,
    #[command(flatten)]
    pub nexus: NexusArgs,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("action").required(true).args([
    "read_keys", "read_reservation", "report_capabilities", "read_full_status",
    "register", "register_ignore", "reserve", "release", "clear", "preempt",
    "preempt_abort", "register_move", "replace_lost",
])))]
pub struct PrArgs {
    pub url: String,
    /// PERSISTENT RESERVE IN: READ KEYS.
    #[arg(long, short = 'k')]
    pub read_keys: bool,
    /// PERSISTENT RESERVE IN: READ RESERVATION.
    #[arg(long, short = 'r')]
    pub read_reservation: bool,
    /// PERSISTENT RESERVE IN: REPORT CAPABILITIES.
    #[arg(long, short = 'c')]
    pub report_capabilities: bool,
    /// PERSISTENT RESERVE IN: READ FULL STATUS.
    #[arg(long, short = 's')]
    pub read_full_status: bool,
    /// PERSISTENT RESERVE OUT: REGISTER (--param-sark, and --param-rk when registered).
    #[arg(long, short = 'G')]
    pub register: bool,
    /// PERSISTENT RESERVE OUT: REGISTER AND IGNORE EXISTING KEY.
    #[arg(long, short = 'I')]
    pub register_ignore: bool,
    /// PERSISTENT RESERVE OUT: RESERVE (--param-rk, --prout-type).
    #[arg(long, short = 'R')]
    pub reserve: bool,
    /// PERSISTENT RESERVE OUT: RELEASE (--param-rk, --prout-type).
    #[arg(long, short = 'L')]
    pub release: bool,
    /// PERSISTENT RESERVE OUT: CLEAR (--param-rk).
    #[arg(long, short = 'C')]
    pub clear: bool,
    /// PERSISTENT RESERVE OUT: PREEMPT (--param-rk, --param-sark: the key to preempt).
    #[arg(long, short = 'P')]
    pub preempt: bool,
    /// PERSISTENT RESERVE OUT: PREEMPT AND ABORT.
    #[arg(long, short = 'A')]
    pub preempt_abort: bool,
    /// PERSISTENT RESERVE OUT: REGISTER AND MOVE (--transport-id of the destination).
    #[arg(long, short = 'M')]
    pub register_move: bool,
    /// PERSISTENT RESERVE OUT: REPLACE LOST RESERVATION.
    #[arg(long)]
    pub replace_lost: bool,
    /// RESERVATION KEY.
    #[arg(long, short = 'K', value_parser = parse_key, default_value = "0")]
    pub param_rk: u64,
    /// SERVICE ACTION RESERVATION KEY.
    #[arg(long, short = 'S', value_parser = parse_key, default_value = "0")]
    pub param_sark: u64,
    /// Reservation type: 1 (WE), 3 (EA), 5 (WERO), 6 (EARO), 7 (WEAR), 8 (EAAR), or the
    /// abbreviation.
    #[arg(long, short = 'T', value_parser = parse_type)]
    pub prout_type: Option<PrType>,
    /// APTPL: the registrations and reservation survive power loss.
    #[arg(long, short = 'Z')]
    pub param_aptpl: bool,
    /// ALL_TG_PT: register on every target port.
    #[arg(long, short = 'Y')]
    pub param_alltgpt: bool,
    /// SPEC_I_PT: register the --transport-id ports too.
    #[arg(long)]
    pub spec_i_pt: bool,
    /// An initiator port, `NAME,i,0xISID` (repeatable).
    #[arg(long, value_parser = parse_transport_id)]
    pub transport_id: Vec<TransportId>,
    /// REGISTER AND MOVE: the destination's relative target port.
    #[arg(long, default_value_t = 1)]
    pub relative_port: u16,
    /// REGISTER AND MOVE: unregister the source.
    #[arg(long)]
    pub param_unreg: bool,
    /// PERSISTENT RESERVE IN allocation length.
    #[arg(long, default_value_t = DEFAULT_ALLOCATION)]
    pub alloc_length: u16,
    #[command(flatten)]
    pub nexus: NexusArgs,
}

fn parse_key(text: &str) -> Result<u64, String> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    // sg_persist reads keys as hex, with or without 0x.
    u64::from_str_radix(digits, 16)
        .map_err(|_| format!("'{text}' is not a key (hex, up to 16 digits)"))
}

fn parse_type(text: &str) -> Result<PrType, String> {
    let by_name = PrType::ALL
        .into_iter()
        .find(|t| t.short_name().eq_ignore_ascii_case(text));
    by_name
        .or_else(|| text.parse::<u8>().ok().and_then(PrType::from_code))
        .ok_or_else(|| format!("'{text}' is not a reservation type (1,3,5,6,7,8 or WE, EA, WERO, EARO, WEAR, EAAR)"))
}

fn parse_transport_id(text: &str) -> Result<TransportId, String> {
    let (name, isid) = datapath::scsi::reservation::split_port_name(text)
        .ok_or_else(|| format!("'{text}' is not an initiator port (NAME,i,0xISID)"))?;
    Ok(TransportId {
        name: name.to_string(),
        isid: Some(isid),
    })
}

fn key_text(key: u64) -> String {
    format!("0x{key:x}")
}

/// Opens the session for `url` with the ISID `nexus` names (or this host's stable one).
fn open(
    options: &ConnectOptions,
    url: &IscsiUrl,
    nexus: &NexusArgs,
) -> Result<NexusSession, CtlError> {
    let config = options.client_config(url)?;
    let isid = nexus
        .isid
        .unwrap_or_else(|| stable_isid(&config.initiator_name));
    NexusSession::connect(&config, isid)
}

/// Runs one CDB, retrying past unit attentions; the data read, or the refusal.
pub(crate) fn run(
    session: &mut NexusSession,
    command: &'static str,
    lun: u64,
    cdb: &Cdb,
    data: &[u8],
) -> Result<Vec<u8>, CtlError> {
    let mut attempt = 0;
    loop {
        let outcome = session.execute(lun, cdb, data.to_vec())?;
        match check(command, outcome) {
            Err(error) if is_unit_attention(&error) && attempt < UNIT_ATTENTION_RETRIES => {
                attempt += 1
            }
            result => return result,
        }
    }
}

pub fn reserve(
    options: &ConnectOptions,
    args: &ReserveArgs,
    release: bool,
    out: &Output,
) -> Result<(), CtlError> {
    let url = IscsiUrl::parse_lun_url(&args.url)?;
    let lun = url.lun.unwrap_or(0);
    let mut session = open(options, &url, &args.nexus)?;
    let (name, cdb) = match (release, args.ten) {
        (false, false) => ("RESERVE(6)", Cdb::reserve_6()),
        (false, true) => ("RESERVE(10)", Cdb::reserve_10()),
        (true, false) => ("RELEASE(6)", Cdb::release_6()),
        (true, true) => ("RELEASE(10)", Cdb::release_10()),
    };
    let result = run(&mut session, name, lun, &cdb, &[]);
    if result.is_ok() {
        out.emit(&json!({ "command": name, "status": "GOOD" }), || {
            format!("{name}: GOOD")
        });
        if let Some(seconds) = args.hold.filter(|s| *s > 0.0) {
            // The reservation ends with this nexus: keep it (answering pings) for the time
            // asked.
            let until = std::time::Instant::now() + Duration::from_secs_f64(seconds);
            if let Err(error) = session.service_until(until) {
                session.logout();
                return Err(error);
            }
        }
    }
    session.logout();
    result.map(|_| ())
}

pub fn reset(options: &ConnectOptions, args: &ResetArgs, out: &Output) -> Result<(), CtlError> {
    let url = IscsiUrl::parse_lun_url(&args.url)?;
    let lun = url.lun.unwrap_or(0);
    let function = if args.lun {
        TaskManagementFunction::LogicalUnitReset
    } else if args.target_warm {
        TaskManagementFunction::TargetWarmReset
    } else if args.target_cold {
        TaskManagementFunction::TargetColdReset
    } else if args.abort_task_set {
        TaskManagementFunction::AbortTaskSet
    } else {
        TaskManagementFunction::ClearTaskSet
    };
    let mut session = open(options, &url, &args.nexus)?;
    let outcome = session.task_management(function, lun);
    session.logout();
    let outcome = outcome?;
    let response = outcome.response.description();
    out.emit(
        &json!({ "function": function.name(), "lun": lun, "response": response }),
        || format!("{}: {response}", function.name()),
    );
    if outcome.response != TaskManagementResponse::FunctionComplete {
        return Err(CtlError::Usage(format!(
            "{}: the target answered \"{response}\"",
            function.name()
        )));
    }
    Ok(())
}

pub fn pr(options: &ConnectOptions, args: &PrArgs, out: &Output) -> Result<(), CtlError> {
    let url = IscsiUrl::parse_lun_url(&args.url)?;
    let lun = url.lun.unwrap_or(0);
    let in_action = [
        (args.read_keys, PrInAction::ReadKeys),
        (args.read_reservation, PrInAction::ReadReservation),
        (args.report_capabilities, PrInAction::ReportCapabilities),
        (args.read_full_status, PrInAction::ReadFullStatus),
    ]
    .into_iter()
    .find(|(set, _)| *set)
    .map(|(_, a)| a);
    let out_action = [
        (args.register, PrOutAction::Register),
        (
            args.register_ignore,
            PrOutAction::RegisterAndIgnoreExistingKey,
        ),
        (args.reserve, PrOutAction::Reserve),
        (args.release, PrOutAction::Release),
        (args.clear, PrOutAction::Clear),
        (args.preempt, PrOutAction::Preempt),
        (args.preempt_abort, PrOutAction::PreemptAndAbort),
        (args.register_move, PrOutAction::RegisterAndMove),
        (args.replace_lost, PrOutAction::ReplaceLostReservation),
    ]
    .into_iter()
    .find(|(set, _)| *set)
    .map(|(_, a)| a);
    let mut session = open(options, &url, &args.nexus)?;
    let result = match (in_action, out_action) {
        (Some(action), _) => pr_in(&mut session, lun, action, args.alloc_length),
        (None, Some(action)) => pr_out(&mut session, lun, action, args),
        (None, None) => Err(CtlError::Usage("no service action".into())),
    };
    session.logout();
    let (value, text) = result?;
    out.emit(&value, || text);
    Ok(())
}

fn pr_in(
    session: &mut NexusSession,
    lun: u64,
    action: PrInAction,
    allocation: u16,
) -> Result<(Value, String), CtlError> {
    let cdb = Cdb::persistent_reserve_in(action, allocation);
    let data = run(session, "PERSISTENT RESERVE IN", lun, &cdb, &[])?;
    let decode = |source| CtlError::Decode {
        command: "PERSISTENT RESERVE IN",
        source,
    };
    Ok(match action {
        PrInAction::ReadKeys => {
            let keys = ReadKeys::parse(&data).map_err(decode)?;
            let mut text = format!(
                "PR generation=0x{:x}, {} registered reservation key(s)",
                keys.generation,
                keys.keys.len()
            );
            for key in &keys.keys {
                text.push_str(&format!("\n    {}", key_text(*key)));
            }
            let value = json!({
                "generation": keys.generation,
                "keys": keys.keys.iter().map(|k| key_text(*k)).collect::<Vec<_>>(),
                "truncated": keys.truncated,
            });
            (value, text)
        }
        PrInAction::ReadReservation => {
            let r = ReadReservation::parse(&data).map_err(decode)?;
            match r.reservation {
                Some(held) => {
                    let kind = held.pr_type.map_or("unknown", PrType::name);
                    (
                        json!({
                            "generation": r.generation, "reserved": true,
                            "key": key_text(held.key), "type": held.type_code,
                            "type_name": kind, "scope": "LU",
                        }),
                        format!(
                            "PR generation=0x{:x}, reservation key={}, scope LU, type {} ({kind})",
                            r.generation,
                            key_text(held.key),
                            held.type_code
                        ),
                    )
                }
                None => (
                    json!({ "generation": r.generation, "reserved": false }),
                    format!(
                        "PR generation=0x{:x}, there is NO reservation held",
                        r.generation
                    ),
                ),
            }
        }
        PrInAction::ReportCapabilities => {
            let c = Capabilities::parse(&data).map_err(decode)?;
            let types: Vec<&str> = c.types.iter().map(|t| t.short_name()).collect();
            let value = json!({
                "crh": c.compatible_reservation_handling,
                "sip_c": c.specify_initiator_ports,
                "atp_c": c.all_target_ports,
                "ptpl_c": c.persist_through_power_loss_capable,
                "tmv": c.type_mask_valid,
                "allow_commands": c.allow_commands,
                "ptpl_a": c.persist_through_power_loss_active,
                "types": types,
            });
            let text = table(&[
                (
                    "Compatible reservation handling (CRH)",
                    c.compatible_reservation_handling.to_string(),
                ),
                (
                    "Specify initiator ports (SIP_C)",
                    c.specify_initiator_ports.to_string(),
                ),
                ("All target ports (ATP_C)", c.all_target_ports.to_string()),
                (
                    "Persist through power loss capable (PTPL_C)",
                    c.persist_through_power_loss_capable.to_string(),
                ),
                (
                    "Persist through power loss active (PTPL_A)",
                    c.persist_through_power_loss_active.to_string(),
                ),
                ("Allow commands", c.allow_commands.to_string()),
                ("Types", types.join(" ")),
            ]);
            (value, text)
        }
        PrInAction::ReadFullStatus => {
            let status = FullStatus::parse(&data).map_err(decode)?;
            let mut text = format!("PR generation=0x{:x}", status.generation);
            let mut entries = Vec::new();
            for e in &status.entries {
                text.push_str(&format!(
                    "\n    key={} {}{}relative port {} {}",
                    key_text(e.key),
                    if e.holder {
                        format!("HOLDER type {} ", e.type_code)
                    } else {
                        String::new()
                    },
                    if e.all_tg_pt { "all target ports " } else { "" },
                    e.relative_target_port,
                    e.transport_id.port_name()
                ));
                entries.push(json!({
                    "key": key_text(e.key), "holder": e.holder, "type": e.type_code,
                    "all_tg_pt": e.all_tg_pt, "relative_port": e.relative_target_port,
                    "transport_id": e.transport_id.port_name(),
                }));
            }
            (
                json!({ "generation": status.generation, "registrations": entries, "truncated": status.truncated }),
                text,
            )
        }
    })
}

fn pr_out(
    session: &mut NexusSession,
    lun: u64,
    action: PrOutAction,
    args: &PrArgs,
) -> Result<(Value, String), CtlError> {
    let needs_type = matches!(
        action,
        PrOutAction::Reserve
            | PrOutAction::Release
            | PrOutAction::Preempt
            | PrOutAction::PreemptAndAbort
            | PrOutAction::ReplaceLostReservation
    );
    if needs_type && args.prout_type.is_none() {
        return Err(CtlError::Usage(format!(
            "--{} needs --prout-type",
            action.name()
        )));
    }
    let parameters = if action == PrOutAction::RegisterAndMove {
        let [destination] = args.transport_id.as_slice() else {
            return Err(CtlError::Usage(
                "--register-move needs exactly one --transport-id".into(),
            ));
        };
        RegisterMoveParams {
            key: args.param_rk,
            service_action_key: args.param_sark,
            unregister: args.param_unreg,
            aptpl: args.param_aptpl,
            relative_target_port: args.relative_port,
            transport_id: destination.clone(),
        }
        .emit()
    } else {
        if !args.spec_i_pt && !args.transport_id.is_empty() {
            return Err(CtlError::Usage("--transport-id needs --spec-i-pt".into()));
        }
        PrOutParams {
            key: args.param_rk,
            service_action_key: args.param_sark,
            spec_i_pt: args.spec_i_pt,
            all_tg_pt: args.param_alltgpt,
            aptpl: args.param_aptpl,
            transport_ids: args.transport_id.clone(),
        }
        .emit()
    };
    let cdb = Cdb::persistent_reserve_out(action, args.prout_type, parameters.len() as u32);
    run(session, "PERSISTENT RESERVE OUT", lun, &cdb, &parameters)?;
    Ok((
        json!({ "service_action": action.name(), "status": "GOOD" }),
        format!("PERSISTENT RESERVE OUT {}: GOOD", action.name()),
    ))
}

/// Whether a failure is a RESERVATION CONFLICT (exit status 24, as sg_persist's).
pub fn is_conflict(error: &CtlError) -> bool {
    matches!(error, CtlError::Check { status, .. } if status == &scsi::status_name(scsi::sense::status::RESERVATION_CONFLICT))
}
