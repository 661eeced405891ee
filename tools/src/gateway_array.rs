//! `iscsi-ctl gateway portal set|drain|resume|rebalance|virtual|redirect` and
//! `iscsi-ctl gateway alua list|set`: the array methods of the control plane
//! (`gateway::control::array_rpc`), and how their answers read.

use std::time::{Duration, Instant};

use clap::Subcommand;
use gateway::control::array_rpc::{self, ArrayCall};
use gateway::control::rpc::Call;
use serde_json::Value;

/// Portal verbs beside list/add/remove (flattened into `portal`).
#[derive(Subcommand, Debug)]
pub enum ArrayPortalVerb {
    /// Set a real portal's weight (its share of the sessions; 0 takes none) or its drain
    /// flag.
    Set {
        address: std::net::SocketAddr,
        #[arg(long)]
        weight: Option<u32>,
        /// Take no new logins (--draining true) or take them again (false).
        #[arg(long)]
        draining: Option<bool>,
    },
    /// Move every session off a portal: Async Message event 1 (log out within the
    /// deadline, then come back through the virtual portal), then event 3 and a close
    /// for hosts still there.
    Drain {
        address: std::net::SocketAddr,
        /// Seconds the hosts get to log out (Parameter3).
        #[arg(long, value_name = "SECONDS")]
        deadline: Option<u16>,
        /// Wait until the portal is empty, printing the sessions left.
        #[arg(long)]
        wait: bool,
    },
    /// Take new logins on a drained portal again.
    Resume { address: std::net::SocketAddr },
    /// Move the sessions above each portal's fair share (by weight) to the others.
    Rebalance {
        #[arg(long, value_name = "SECONDS")]
        deadline: Option<u16>,
    },
    /// Listen on an address as the virtual portal (logins redirected to real ones).
    Virtual { address: std::net::SocketAddr },
    /// How the virtual portal answers logins: temporary, permanent or accept.
    Redirect { kind: String },
    /// Which portals SendTargets lists for a portal group (TargetAddress=ADDR,GROUP):
    /// the own group's replace its default, other groups (other gateway processes of the
    /// array) are listed beside it; no address removes the group's entry.
    SendTargets {
        group: u16,
        portals: Vec<std::net::SocketAddr>,
    },
}

/// ALUA target port groups.
#[derive(Subcommand, Debug)]
pub enum AluaVerb {
    /// The port groups and their states.
    List,
    /// Set a port group's state (hosts get ASYMMETRIC ACCESS STATE CHANGED).
    Set {
        group: u16,
        /// active/optimized, active/non-optimized, standby, unavailable, transitioning.
        state: String,
    },
}

/// Operational limits (`params_set`).
#[derive(Subcommand, Debug)]
pub enum ParamsVerb {
    /// Change what new logins are offered; every session gets Async Message event 4 and
    /// may declare MaxRecvDataSegmentLength again (the burst lengths apply to new
    /// sessions).
    Set {
        #[arg(long, value_name = "BYTES")]
        max_recv_data_segment_length: Option<u32>,
        #[arg(long, value_name = "BYTES")]
        max_burst_length: Option<u32>,
        #[arg(long, value_name = "BYTES")]
        first_burst_length: Option<u32>,
    },
}

impl ParamsVerb {
    pub fn call(&self) -> Call {
        match self {
            ParamsVerb::Set {
                max_recv_data_segment_length,
                max_burst_length,
                first_burst_length,
            } => Call::Array(ArrayCall::ParamsSet(array_rpc::ParamsSet {
                max_recv_data_segment_length: *max_recv_data_segment_length,
                max_burst_length: *max_burst_length,
                first_burst_length: *first_burst_length,
            })),
        }
    }
}

impl ArrayPortalVerb {
    pub fn call(&self) -> Call {
        Call::Array(match self {
            ArrayPortalVerb::Set {
                address,
                weight,
                draining,
            } => ArrayCall::PortalSet(array_rpc::PortalSet {
                address: *address,
                weight: *weight,
                draining: *draining,
            }),
            ArrayPortalVerb::Drain {
                address, deadline, ..
            } => ArrayCall::PortalDrain(array_rpc::PortalDrain {
                address: *address,
                deadline_s: *deadline,
            }),
            ArrayPortalVerb::Resume { address } => {
                ArrayCall::PortalResume(array_rpc::Address { address: *address })
            }
            ArrayPortalVerb::Rebalance { deadline } => ArrayCall::Rebalance(array_rpc::Rebalance {
                deadline_s: *deadline,
            }),
            ArrayPortalVerb::Virtual { address } => {
                ArrayCall::VirtualPortalAdd(array_rpc::Address { address: *address })
            }
            ArrayPortalVerb::Redirect { kind } => ArrayCall::RedirectSet(array_rpc::RedirectSet {
                redirect: kind.clone(),
            }),
            ArrayPortalVerb::SendTargets { group, portals } => {
                ArrayCall::SendTargetsSet(array_rpc::SendTargetsSet {
                    group: *group,
                    portals: portals.clone(),
                })
            }
        })
    }

    /// For `drain --wait`: the portal to watch and for how long at most (the deadline,
    /// the close after it, and a margin).
    pub fn wait_for_empty(&self) -> Option<(std::net::SocketAddr, Duration)> {
        match self {
            ArrayPortalVerb::Drain {
                address,
                deadline,
                wait: true,
            } => {
                let deadline_s =
                    u64::from(deadline.unwrap_or(array_rpc::DEFAULT_LOGOUT_DEADLINE_S));
                Some((*address, Duration::from_secs(deadline_s + 5)))
            }
            _ => None,
        }
    }
}

impl AluaVerb {
    pub fn call(&self) -> Call {
        Call::Array(match self {
            AluaVerb::List => ArrayCall::AluaList,
            AluaVerb::Set { group, state } => ArrayCall::AluaSet(array_rpc::AluaSet {
                group: *group,
                state: state.clone(),
            }),
        })
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `portal_list` for people: one line per portal.
pub fn human_portals(result: &Value) -> String {
    let mut out = format!(
        "{:<24} {:<8} {:>6} {:>9} {:>7} {}\n",
        "PORTAL", "ROLE", "GROUP", "SESSIONS", "WEIGHT", "STATE"
    );
    for p in result["portals"].as_array().cloned().unwrap_or_default() {
        out.push_str(&format!(
            "{:<24} {:<8} {:>6} {:>9} {:>7} {}\n",
            text(&p["address"]),
            text(&p["role"]),
            text(&p["group_tag"]),
            text(&p["sessions"]),
            text(&p["weight"]),
            if p["draining"] == Value::Bool(true) {
                "draining"
            } else {
                "open"
            },
        ));
    }
    if let Some(redirect) = result["redirect"].as_str() {
        out.push_str(&format!("virtual portal logins: {redirect}\n"));
    }
    for (group, portals) in result["send_targets"]
        .as_object()
        .cloned()
        .unwrap_or_default()
    {
        out.push_str(&format!("SendTargets lists for group {group}: {portals}\n"));
    }
    out
}

/// The answer to an array method, for people.
pub fn human(call: &ArrayCall, result: &Value) -> String {
    match call {
        ArrayCall::PortalSet(_) | ArrayCall::PortalResume(_) | ArrayCall::SendTargetsSet(_) => {
            human_portals(result)
        }
        ArrayCall::PortalDrain(p) => format!(
            "{}: {} sessions asked to log out within {} s\n",
            p.address,
            text(&result["asked"]),
            text(&result["deadline_s"])
        ),
        ArrayCall::Rebalance(_) => format!(
            "{} sessions asked to move within {} s\n",
            text(&result["asked"]),
            text(&result["deadline_s"])
        ),
        ArrayCall::VirtualPortalAdd(_) => {
            format!("virtual portal listening on {}\n", text(&result["address"]))
        }
        ArrayCall::RedirectSet(_) => {
            format!("virtual portal logins: {}\n", text(&result["redirect"]))
        }
        ArrayCall::ParamsSet(_) => format!(
            "offered to new logins: MaxRecvDataSegmentLength={} MaxBurstLength={} FirstBurstLength={}\n{} sessions asked to renegotiate (async event 4)\n",
            text(&result["max_recv_data_segment_length"]),
            text(&result["max_burst_length"]),
            text(&result["first_burst_length"]),
            text(&result["asked"]),
        ),
        ArrayCall::AluaList | ArrayCall::AluaSet(_) => {
            let mut out = format!("{:>6} {:<22} {}\n", "GROUP", "STATE", "PORTS");
            for g in result["groups"].as_array().cloned().unwrap_or_default() {
                out.push_str(&format!(
                    "{:>6} {:<22} {}{}\n",
                    text(&g["group"]),
                    text(&g["state"]),
                    text(&g["ports"]),
                    if g["own"] == Value::Bool(true) {
                        " (this gateway)"
                    } else {
                        ""
                    }
                ));
            }
            out
        }
    }
}

/// Polls `portal_list` until `portal` has no session or `limit` passes; prints the
/// sessions left whenever the number changes. Returns the sessions left at the end.
pub fn wait_until_empty(
    mut list: impl FnMut() -> Result<Value, crate::commands::CtlError>,
    portal: std::net::SocketAddr,
    limit: Duration,
    quiet: bool,
) -> Result<u64, crate::commands::CtlError> {
    let started = Instant::now();
    let mut last = None;
    loop {
        let result = list()?;
        let left = result["portals"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["address"].as_str() == Some(&portal.to_string()))
            .and_then(|p| p["sessions"].as_u64())
            .unwrap_or(0);
        if last != Some(left) && !quiet {
            println!(
                "{portal}: {left} sessions left after {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        last = Some(left);
        if left == 0 || started.elapsed() >= limit {
            return Ok(left);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
