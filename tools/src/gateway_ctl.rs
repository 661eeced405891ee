//! `iscsi-ctl gateway`: the client of `iscsi-gateway`'s control plane (JSON-RPC 2.0 on its
//! Unix socket, `gateway::control::rpc`). One verb, one request; the answer printed for
//! people, or as the JSON result with `--json`. A refused request exits 1 with the
//! gateway's message and its JSON-RPC error code.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use gateway::control::rpc::{self, Call, Chap};
use serde_json::Value;

use crate::commands::CtlError;
use crate::gateway_array::{self, AluaVerb, ArrayPortalVerb, ParamsVerb};
use crate::render::Output;

/// Where `iscsi-ctl gateway` looks for the socket when neither `--socket` nor
/// `$ISCSI_GATEWAY_SOCKET` says.
pub const DEFAULT_SOCKET: &str = "/run/iscsi-gateway/control.sock";

/// A change waits for the gateway's durable commit and for every event loop; a backend
/// that opens a large file can take a while.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Args, Debug)]
pub struct GatewayArgs {
    /// The gateway's control socket (`iscsi-gateway --control-socket`); default
    /// $ISCSI_GATEWAY_SOCKET, else /run/iscsi-gateway/control.sock.
    #[arg(long)]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand, Debug)]
enum Verb {
    /// Target nodes: create, delete, list, ACL, CHAP.
    #[command(subcommand)]
    Target(TargetVerb),
    /// LUNs: attach a backend to a target at a LUN number, detach.
    #[command(subcommand)]
    Lun(LunVerb),
    /// Logged-in sessions: list, drop.
    #[command(subcommand)]
    Session(SessionVerb),
    /// The portals the gateway listens on, the virtual portal, weights, drain and
    /// rebalance.
    #[command(subcommand)]
    Portal(PortalVerb),
    /// ALUA target port groups and their states.
    #[command(subcommand)]
    Alua(AluaVerb),
    /// Operational limits offered to new logins; sessions get Async Message event 4.
    #[command(subcommand)]
    Params(ParamsVerb),
    /// Volumes of a pool (`iscsi-gateway pool create` makes the pool): create, grow,
    /// clone, delete, list with allocation, check. Attach one with
    /// `lun attach TARGET N pool:PATH,volume=NAME`.
    #[command(subcommand)]
    Volume(VolumeVerb),
    /// Volume pools: create (a new file), open, close (refused while in use), list.
    #[command(subcommand)]
    Pool(crate::gateway_pool::PoolVerb),
    /// Bind pool volumes for a host through a protocol endpoint (a LUN attached with
    /// the backend `endpoint`); prints each volume's secondary ID and the LUN the host
    /// uses (ENDPOINT:SECONDARY). Several volumes are one durable commit.
    Bind {
        /// Volume names (one batch).
        #[arg(required = true)]
        volumes: Vec<String>,
        #[arg(long)]
        target: String,
        /// The endpoint's LUN.
        #[arg(long)]
        endpoint: u64,
        /// The host's initiator name.
        #[arg(long)]
        host: String,
        #[arg(long)]
        pool: PathBuf,
    },
    /// Unbind pool volumes for a host (after the commands in flight on them finish).
    Unbind {
        #[arg(required = true)]
        volumes: Vec<String>,
        #[arg(long)]
        target: String,
        #[arg(long)]
        host: String,
        #[arg(long)]
        pool: PathBuf,
        /// Only the bindings through this endpoint.
        #[arg(long)]
        endpoint: Option<u64>,
    },
    /// List the bindings (of a target and/or a host).
    Bindings {
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        host: Option<String>,
    },
    /// Move a LUN to another backend while hosts use it (mirror or DBT mode); follow it
    /// with `migration status`, end it with `migration complete|commit|cancel|rollback`.
    Migrate(crate::gateway_migrate::MigrateArgs),
    /// A migration in progress: status, complete, commit, cancel, rollback.
    #[command(subcommand)]
    Migration(crate::gateway_migrate::MigrationVerb),
    /// Track a LUN's changed blocks from now on (for incremental backup); its change ID.
    Track(crate::gateway_migrate::TrackArgs),
    /// The areas of a tracked LUN changed since a change ID, and the next change ID.
    Changed(crate::gateway_migrate::ChangedArgs),
    /// Any method by name with JSON parameters (volume_* go to the volume pool).
    Call {
        method: String,
        /// A JSON object; `{}` when left out.
        params: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum TargetVerb {
    /// Create a target node (no LUNs yet).
    Create {
        name: String,
        #[arg(long)]
        alias: Option<String>,
        /// Initiator allowed to log in (repeatable; all when not given).
        #[arg(long = "allow")]
        allow: Vec<String>,
        /// A LUN created with the target, in the same durable commit: NUMBER=SPEC
        /// (`--lun 0=ram:1G`; repeatable).
        #[arg(long = "lun", value_parser = parse_new_lun)]
        luns: Vec<rpc::NewLun>,
        #[command(flatten)]
        chap: ChapArgs,
    },
    /// Delete a target: its LUNs are detached and its sessions closed.
    Delete { name: String },
    /// List the targets with their LUNs, identities, ACL and CHAP users.
    List,
    /// Set which initiators may log in (sessions of others are closed).
    Acl {
        name: String,
        /// Initiator allowed (repeatable).
        #[arg(long = "allow", required_unless_present = "all")]
        allow: Vec<String>,
        /// Allow every initiator.
        #[arg(long, conflicts_with = "allow")]
        all: bool,
    },
    /// Set or clear the CHAP new logins must pass (sessions logged in stay).
    Chap {
        name: String,
        #[command(flatten)]
        chap: ChapArgs,
        /// Turn CHAP off.
        #[arg(long, conflicts_with_all = ["user", "mutual_user"])]
        off: bool,
    },
}

#[derive(Args, Debug)]
struct ChapArgs {
    /// CHAP user the initiator must log in as.
    #[arg(long)]
    user: Option<String>,
    /// Its secret (visible in `ps`: prefer --secret-file).
    #[arg(long, requires = "user", conflicts_with = "secret_file")]
    secret: Option<String>,
    /// Read the secret from this file (one line).
    #[arg(long, value_name = "FILE", requires = "user")]
    secret_file: Option<PathBuf>,
    /// The target's user for mutual CHAP.
    #[arg(long, requires = "user")]
    mutual_user: Option<String>,
    #[arg(long, requires = "mutual_user", conflicts_with = "mutual_secret_file")]
    mutual_secret: Option<String>,
    #[arg(long, value_name = "FILE", requires = "mutual_user")]
    mutual_secret_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum LunVerb {
    /// Attach a backend (`ram:1G`, `null:100G`, `file:PATH[:SIZE][,serial=..,naa=..]`).
    Attach {
        target: String,
        lun: u64,
        backend: String,
    },
    /// Detach a LUN (hosts get REPORTED LUNS DATA HAS CHANGED).
    Detach { target: String, lun: u64 },
    /// Per-LUN statistics: IOPS, bytes, latency percentiles inside the gateway.
    Stats {
        /// Only this target's LUNs.
        #[arg(long)]
        target: Option<String>,
        /// Measure over this many milliseconds (default: since each LUN was attached).
        #[arg(long)]
        interval_ms: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
enum SessionVerb {
    /// List the logged-in sessions.
    List {
        #[arg(long)]
        target: Option<String>,
    },
    /// Close the sessions matching every filter given (at least one).
    Drop {
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        initiator: Option<String>,
        /// 12 hex digits.
        #[arg(long)]
        isid: Option<String>,
        /// The portal the sessions came in on.
        #[arg(long)]
        portal: Option<std::net::SocketAddr>,
    },
}

#[derive(Subcommand, Debug)]
enum PortalVerb {
    /// List the portals.
    List,
    /// Listen on one more address (IP:PORT, [IPv6]:PORT; port 0 picks one).
    Add { address: std::net::SocketAddr },
    /// Stop listening on an address (sessions that came through it go on).
    Remove { address: std::net::SocketAddr },
    #[command(flatten)]
    Array(ArrayPortalVerb),
}

#[derive(Subcommand, Debug)]
enum VolumeVerb {
    /// Create a thin volume (no space used until written); with --attach, also attach it
    /// to a target as a LUN, in the same call and the same durable commit.
    Create {
        /// The pool's file or device.
        #[arg(long)]
        pool: PathBuf,
        name: String,
        /// Bytes, or with a unit: 10G, 1T.
        size: String,
        /// Attach the new volume to this target (one call: both or neither survive a
        /// crash).
        #[arg(long, value_name = "TARGET")]
        attach: Option<String>,
        /// The LUN number for --attach; the lowest free one when not given.
        #[arg(long, requires = "attach")]
        lun: Option<u64>,
    },
    /// Grow a volume (LUNs exporting it report CAPACITY DATA HAS CHANGED).
    Grow {
        #[arg(long)]
        pool: PathBuf,
        name: String,
        /// The new size (at least the present one).
        size: String,
    },
    /// A thin clone of a volume: the two share chunks until written.
    Clone {
        #[arg(long)]
        pool: PathBuf,
        source: String,
        name: String,
    },
    /// Delete a volume (refused while it is attached as a LUN).
    Delete {
        #[arg(long)]
        pool: PathBuf,
        name: String,
    },
    /// List volumes with their allocation (every open pool when --pool is not given).
    List {
        #[arg(long)]
        pool: Option<PathBuf>,
    },
    /// Check a pool's map and reference counts; exits 1 when it finds a problem.
    Check {
        #[arg(long)]
        pool: Option<PathBuf>,
    },
}

/// The pool's path as the gateway must see it (the gateway runs in another directory).
pub(crate) fn pool_path(path: &Path) -> Result<String, CtlError> {
    std::path::absolute(path)
        .map(|p| p.display().to_string())
        .map_err(|source| CtlError::File {
            path: path.display().to_string(),
            source,
        })
}

impl VolumeVerb {
    fn call(&self) -> Result<Call, CtlError> {
        use serde_json::json;
        let (method, params) = match self {
            VolumeVerb::Create {
                pool,
                name,
                size,
                attach,
                lun,
            } => {
                let mut params = json!({"pool": pool_path(pool)?, "name": name, "size": size});
                if let Some(target) = attach {
                    params["attach"] = match lun {
                        Some(lun) => json!({"target": target, "lun": lun}),
                        None => json!({"target": target}),
                    };
                }
                ("volume_create", params)
            }
            VolumeVerb::Grow { pool, name, size } => (
                "volume_grow",
                json!({"pool": pool_path(pool)?, "name": name, "size": size}),
            ),
            VolumeVerb::Clone { pool, source, name } => (
                "volume_clone",
                json!({"pool": pool_path(pool)?, "source": source, "name": name}),
            ),
            VolumeVerb::Delete { pool, name } => (
                "volume_delete",
                json!({"pool": pool_path(pool)?, "name": name}),
            ),
            VolumeVerb::List { pool } => match pool {
                Some(pool) => ("volume_list", json!({"pool": pool_path(pool)?})),
                None => ("volume_list", json!({})),
            },
            VolumeVerb::Check { pool } => match pool {
                Some(pool) => ("volume_check", json!({"pool": pool_path(pool)?})),
                None => ("volume_check", json!({})),
            },
        };
        Ok(Call::Volume {
            method: method.into(),
            params,
        })
    }
}

/// The answer to a volume method, for people.
fn human_volume(method: &str, result: &Value) -> String {
    let sized = |verb: &str| {
        format!(
            "volume {} {verb}: {} (pool {})\n",
            text(&result["name"]),
            size(result["size_bytes"].as_u64().unwrap_or(0)),
            text(&result["pool"])
        )
    };
    match method {
        "volume_create" if result.get("lun").is_some() => format!(
            "{}LUN {} of {} attached: NAA {}, serial {}\n",
            sized("created"),
            text(&result["lun"]),
            text(&result["target"]),
            text(&result["naa"]),
            text(&result["serial"])
        ),
        "volume_create" => sized("created"),
        "volume_grow" => sized("grown"),
        "volume_clone" => format!(
            "volume {} cloned from {}: {} (pool {})\n",
            text(&result["name"]),
            text(&result["source"]),
            size(result["size_bytes"].as_u64().unwrap_or(0)),
            text(&result["pool"])
        ),
        "volume_delete" => format!(
            "volume {} deleted (pool {})\n",
            text(&result["name"]),
            text(&result["pool"])
        ),
        "volume_list" => {
            let volumes = result["volumes"].as_array().cloned().unwrap_or_default();
            if volumes.is_empty() {
                return "no volumes\n".into();
            }
            let mut out = format!(
                "{:<24} {:>10} {:>10} {:>8}  {}\n",
                "VOLUME", "SIZE", "ALLOCATED", "CHUNKS", "POOL"
            );
            for v in volumes {
                out.push_str(&format!(
                    "{:<24} {:>10} {:>10} {:>8}  {}\n",
                    text(&v["name"]),
                    size(v["size_bytes"].as_u64().unwrap_or(0)),
                    size(v["allocated_bytes"].as_u64().unwrap_or(0)),
                    text(&v["chunks"]),
                    text(&v["pool"]),
                ));
            }
            out
        }
        "volume_check" => {
            let pools = result["pools"].as_array().cloned().unwrap_or_default();
            if pools.is_empty() {
                return "no pools open\n".into();
            }
            let mut out = String::new();
            for p in pools {
                out.push_str(&format!(
                    "pool {}: {}, {} volumes, {} map entries, {} of {} chunks used, {} metadata\n",
                    text(&p["pool"]),
                    if p["ok"] == Value::Bool(true) {
                        "ok"
                    } else {
                        "PROBLEMS"
                    },
                    text(&p["volumes"]),
                    text(&p["mapped_entries"]),
                    text(&p["used_chunks"]),
                    text(&p["total_chunks"]),
                    size(p["metadata_bytes"].as_u64().unwrap_or(0)),
                ));
                for problem in p["problems"].as_array().cloned().unwrap_or_default() {
                    out.push_str(&format!("  {}\n", text(&problem)));
                }
            }
            out
        }
        _ => serde_json::to_string_pretty(result).unwrap_or_default(),
    }
}

/// `NUMBER=SPEC` of `target create --lun`.
fn parse_new_lun(text: &str) -> Result<rpc::NewLun, String> {
    let (number, backend) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}': give NUMBER=SPEC, e.g. 0=ram:1G"))?;
    let lun = number
        .parse()
        .map_err(|_| format!("'{number}' is not a LUN number"))?;
    Ok(rpc::NewLun {
        lun,
        backend: backend.to_string(),
    })
}

fn secret(
    what: &str,
    given: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Option<String>, CtlError> {
    match (given, file) {
        (Some(secret), _) => Ok(Some(secret.clone())),
        (None, Some(path)) => datapath::credentials::read_secret_file(path)
            .map(Some)
            .map_err(CtlError::Usage),
        (None, None) => Err(CtlError::Usage(format!(
            "{what}: give --{what}secret-file FILE (or --{what}secret)"
        ))),
    }
}

impl ChapArgs {
    fn to_chap(&self) -> Result<(Option<Chap>, Option<Chap>), CtlError> {
        let chap = match &self.user {
            Some(user) => Some(Chap {
                user: user.clone(),
                secret: secret("", &self.secret, &self.secret_file)?.unwrap_or_default(),
            }),
            None => None,
        };
        let mutual = match &self.mutual_user {
            Some(user) => Some(Chap {
                user: user.clone(),
                secret: secret("mutual-", &self.mutual_secret, &self.mutual_secret_file)?
                    .unwrap_or_default(),
            }),
            None => None,
        };
        Ok((chap, mutual))
    }
}

impl Verb {
    fn call(&self) -> Result<Call, CtlError> {
        Ok(match self {
            Verb::Target(TargetVerb::Create {
                name,
                alias,
                allow,
                luns,
                chap,
            }) => {
                let (chap, mutual_chap) = chap.to_chap()?;
                Call::TargetCreate(rpc::TargetCreate {
                    name: name.clone(),
                    alias: alias.clone(),
                    allowed_initiators: (!allow.is_empty()).then(|| allow.clone()),
                    chap,
                    mutual_chap,
                    luns: luns.clone(),
                })
            }
            Verb::Target(TargetVerb::Delete { name }) => {
                Call::TargetDelete(rpc::TargetName { name: name.clone() })
            }
            Verb::Target(TargetVerb::List) => Call::TargetList,
            Verb::Target(TargetVerb::Acl { name, allow, all }) => {
                Call::TargetSetAcl(rpc::TargetSetAcl {
                    name: name.clone(),
                    allowed_initiators: (!all).then(|| allow.clone()),
                })
            }
            Verb::Target(TargetVerb::Chap { name, chap, off }) => {
                let (chap, mutual_chap) = if *off { (None, None) } else { chap.to_chap()? };
                if chap.is_none() && !off {
                    return Err(CtlError::Usage(
                        "target chap: give --user (with --secret-file) or --off".into(),
                    ));
                }
                Call::TargetSetChap(rpc::TargetSetChap {
                    name: name.clone(),
                    chap,
                    mutual_chap,
                })
            }
            Verb::Lun(LunVerb::Attach {
                target,
                lun,
                backend,
            }) => Call::LunAttach(rpc::LunAttach {
                target: target.clone(),
                lun: *lun,
                backend: backend.clone(),
            }),
            Verb::Lun(LunVerb::Detach { target, lun }) => Call::LunDetach(rpc::LunRef {
                target: target.clone(),
                lun: *lun,
            }),
            Verb::Lun(LunVerb::Stats {
                target,
                interval_ms,
            }) => Call::LunStats(rpc::LunStatsParams {
                target: target.clone(),
                interval_ms: *interval_ms,
            }),
            Verb::Session(SessionVerb::List { target }) => Call::SessionList(rpc::TargetFilter {
                target: target.clone(),
            }),
            Verb::Session(SessionVerb::Drop {
                target,
                initiator,
                isid,
                portal,
            }) => Call::SessionDrop(rpc::SessionFilter {
                target: target.clone(),
                initiator: initiator.clone(),
                isid: isid.clone(),
                portal: *portal,
            }),
            Verb::Portal(PortalVerb::List) => Call::PortalList,
            Verb::Portal(PortalVerb::Add { address }) => {
                Call::PortalAdd(rpc::PortalAddress { address: *address })
            }
            Verb::Portal(PortalVerb::Remove { address }) => {
                Call::PortalRemove(rpc::PortalAddress { address: *address })
            }
            Verb::Portal(PortalVerb::Array(verb)) => verb.call(),
            Verb::Alua(verb) => verb.call(),
            Verb::Params(verb) => verb.call(),
            Verb::Volume(verb) => verb.call()?,
            Verb::Pool(verb) => verb.call()?,
            Verb::Bind {
                volumes,
                target,
                endpoint,
                host,
                pool,
            } => Call::Bind(rpc::Bind {
                target: target.clone(),
                endpoint: *endpoint,
                host: host.clone(),
                pool: pool_path(pool)?,
                volumes: volumes.clone(),
                secondaries: None,
            }),
            Verb::Unbind {
                volumes,
                target,
                host,
                pool,
                endpoint,
            } => Call::Unbind(rpc::Unbind {
                target: target.clone(),
                host: host.clone(),
                pool: pool_path(pool)?,
                volumes: volumes.clone(),
                endpoint: *endpoint,
            }),
            Verb::Bindings { target, host } => Call::BindingList(rpc::BindingFilter {
                target: target.clone(),
                host: host.clone(),
            }),
            Verb::Migrate(args) => args.call(),
            Verb::Migration(verb) => verb.call(),
            Verb::Track(args) => args.call(),
            Verb::Changed(args) => args.call(),
            Verb::Call { method, params } => {
                let params: Value = match params {
                    Some(text) => serde_json::from_str(text)
                        .map_err(|e| CtlError::Usage(format!("parameters are not JSON: {e}")))?,
                    None => Value::Object(Default::default()),
                };
                // Checked here as the gateway would, so a typo is caught before sending.
                rpc::parse_call(method, params).map_err(|e| CtlError::Usage(e.to_string()))?
            }
        })
    }
}

/// Sends one request to the gateway at `socket` and returns its result.
pub fn request(socket: &Path, call: &Call) -> Result<Value, CtlError> {
    let io = |source: std::io::Error| CtlError::File {
        path: socket.display().to_string(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(io)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
    stream
        .write_all(&rpc::encode_request(1, call))
        .map_err(io)?;
    let mut line = Vec::new();
    BufReader::new(stream)
        .take(rpc::MAX_RESPONSE_BYTES as u64)
        .read_until(b'\n', &mut line)
        .map_err(io)?;
    if line.is_empty() {
        return Err(CtlError::Usage(format!(
            "{}: the gateway closed the connection without an answer",
            socket.display()
        )));
    }
    rpc::decode_response(&line)
        .map_err(|(code, message)| CtlError::Usage(format!("{message} (JSON-RPC error {code})")))
}

/// Runs `iscsi-ctl gateway ...`.
pub fn run(args: &GatewayArgs, out: &Output) -> Result<(), CtlError> {
    let call = args.verb.call()?;
    let socket = match &args.socket {
        Some(path) => path.clone(),
        None => std::env::var_os("ISCSI_GATEWAY_SOCKET")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
    };
    let result = request(&socket, &call)?;
    out.emit(&result, || human(&call, &result));
    if let Verb::Portal(PortalVerb::Array(verb)) = &args.verb {
        if let Some((portal, limit)) = verb.wait_for_empty() {
            let left = gateway_array::wait_until_empty(
                || request(&socket, &Call::PortalList),
                portal,
                limit,
                out.json,
            )?;
            if left > 0 {
                return Err(CtlError::Usage(format!(
                    "{portal}: {left} sessions still there after {} s",
                    limit.as_secs()
                )));
            }
        }
    }
    let problems = result["pools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["ok"] == Value::Bool(false))
        .count();
    if matches!(&call, Call::Volume { method, .. } if method == "volume_check") && problems > 0 {
        return Err(CtlError::Usage(format!(
            "volume check: {problems} pools have problems"
        )));
    }
    Ok(())
}

fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The answer for people.
fn human(call: &Call, result: &Value) -> String {
    match call {
        Call::TargetCreate(p) => {
            let mut out = format!("target {} created\n", p.name);
            for lun in result["luns"].as_array().cloned().unwrap_or_default() {
                out.push_str(&format!(
                    "LUN {} attached: {}, NAA {}, serial {}\n",
                    text(&lun["lun"]),
                    size(lun["size_bytes"].as_u64().unwrap_or(0)),
                    text(&lun["naa"]),
                    text(&lun["serial"])
                ));
            }
            out
        }
        Call::TargetDelete(p) => format!(
            "target {} deleted ({} LUNs detached)\n",
            p.name,
            text(&result["luns_detached"])
        ),
        Call::TargetSetAcl(p) => match &p.allowed_initiators {
            Some(names) => format!("target {}: only {} may log in\n", p.name, names.join(", ")),
            None => format!("target {}: every initiator may log in\n", p.name),
        },
        Call::TargetSetChap(p) => match &p.chap {
            Some(chap) => format!("target {}: CHAP user {}\n", p.name, chap.user),
            None => format!("target {}: CHAP off\n", p.name),
        },
        Call::LunAttach(p) => format!(
            "LUN {} of {} attached: {}, NAA {}, serial {}\n",
            p.lun,
            p.target,
            size(result["size_bytes"].as_u64().unwrap_or(0)),
            text(&result["naa"]),
            text(&result["serial"])
        ),
        Call::LunDetach(p) => format!("LUN {} of {} detached\n", p.lun, p.target),
        Call::TargetList => {
            let mut out = String::new();
            let targets = result["targets"].as_array().cloned().unwrap_or_default();
            if targets.is_empty() {
                out.push_str("no targets\n");
            }
            for t in targets {
                let acl = match t["allowed_initiators"].as_array() {
                    Some(names) => names.iter().map(text).collect::<Vec<_>>().join(","),
                    None => "all".into(),
                };
                out.push_str(&format!(
                    "{}{}  acl: {}  chap: {}\n",
                    text(&t["name"]),
                    t["alias"]
                        .as_str()
                        .map(|a| format!(" ({a})"))
                        .unwrap_or_default(),
                    acl,
                    text(&t["chap_user"]),
                ));
                for lun in t["luns"].as_array().cloned().unwrap_or_default() {
                    out.push_str(&format!(
                        "  LUN {:<5} {:>10}  naa {}  serial {}  {}\n",
                        text(&lun["lun"]),
                        size(lun["size_bytes"].as_u64().unwrap_or(0)),
                        text(&lun["naa"]),
                        text(&lun["serial"]),
                        text(&lun["backend"]),
                    ));
                }
            }
            out
        }
        Call::SessionList(_) => {
            let sessions = result["sessions"].as_array().cloned().unwrap_or_default();
            if sessions.is_empty() {
                return "no sessions\n".into();
            }
            let mut out = format!(
                "{:<40} {:<12} {:<6} {:<22} {}\n",
                "INITIATOR", "ISID", "TSIH", "PEER", "TARGET"
            );
            for s in sessions {
                out.push_str(&format!(
                    "{:<40} {:<12} {:<6} {:<22} {}\n",
                    text(&s["initiator"]),
                    text(&s["isid"]),
                    text(&s["tsih"]),
                    text(&s["peer"]),
                    text(&s["target"]),
                ));
            }
            out
        }
        Call::LunStats(_) => {
            let luns = result["luns"].as_array().cloned().unwrap_or_default();
            if luns.is_empty() {
                return "no LUNs\n".into();
            }
            let mut out = format!(
                "{:<40} {:>9} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8}\n",
                "TARGET", "LUN", "IOPS", "READ/s", "WRITE/s", "p50 us", "p99 us", "p99.9", "max us"
            );
            for l in luns {
                let rate = |key: &str| size(l[key].as_f64().unwrap_or(0.0) as u64);
                out.push_str(&format!(
                    "{:<40} {:>9} {:>10.0} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8}\n",
                    text(&l["target"]),
                    text(&l["lun"]),
                    l["iops"].as_f64().unwrap_or(0.0),
                    rate("read_bytes_per_second"),
                    rate("write_bytes_per_second"),
                    text(&l["latency_us"]["p50"]),
                    text(&l["latency_us"]["p99"]),
                    text(&l["latency_us"]["p99_9"]),
                    text(&l["latency_us"]["max"]),
                ));
            }
            out
        }
        Call::PortalAdd(_) => format!("listening on {}\n", text(&result["address"])),
        Call::PortalRemove(_) => format!("no longer listening on {}\n", text(&result["address"])),
        Call::SessionDrop(_) => format!("{} sessions dropped\n", text(&result["dropped"])),
        Call::PortalList => gateway_array::human_portals(result),
        Call::Array(call) => gateway_array::human(call, result),
        Call::Volume { method, .. } => human_volume(method, result),
        Call::Pool(call) => crate::gateway_pool::human(call, result, size),
        Call::Bind(p) => result["bindings"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| {
                format!(
                    "{} bound for {} on {}: secondary ID {}, LUN {}, NAA {}\n",
                    text(&b["volume"]),
                    p.host,
                    p.target,
                    text(&b["secondary"]),
                    text(&b["lun"]),
                    text(&b["naa"])
                )
            })
            .collect(),
        Call::Unbind(p) => result["unbound"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| {
                format!(
                    "{} unbound for {} (was LUN {}:{})\n",
                    text(&b["volume"]),
                    p.host,
                    text(&b["endpoint"]),
                    text(&b["secondary"])
                )
            })
            .collect(),
        Call::BindingList(_) => {
            let mut out = String::from("TARGET HOST LUN VOLUME POOL\n");
            for b in result["bindings"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "{} {} {} {} {}\n",
                    text(&b["target"]),
                    text(&b["host"]),
                    text(&b["lun"]),
                    text(&b["volume"]),
                    text(&b["pool"])
                ));
            }
            out
        }
        Call::Migration { method, .. } => crate::gateway_migrate::human(method, result),
    }
}
