//! `iscsi-ctl gateway pool create|open|close|list`: volume pools over the control plane
//! (`gateway::control::pools`), and how their answers read.

use std::path::PathBuf;

use clap::Subcommand;
use gateway::control::pools::{PoolCall, PoolCreate, PoolPath};
use gateway::control::rpc::Call;
use gateway::control::volumes::Size;
use serde_json::Value;

use crate::commands::CtlError;

#[derive(Subcommand, Debug)]
pub enum PoolVerb {
    /// Create a pool of SIZE bytes (metadata included) on a new file and keep it open;
    /// the gateway opens it again after a restart.
    Create {
        path: PathBuf,
        /// Bytes, or with a unit: 100G, 2T.
        size: String,
    },
    /// Open an existing pool (recorded in the state directory, opened again at restart).
    Open { path: PathBuf },
    /// Close a pool; refused while a LUN exports one of its volumes or an endpoint binds
    /// one (the refusal names them).
    Close { path: PathBuf },
    /// The open pools with their volumes and allocation.
    List,
}

impl PoolVerb {
    pub fn call(&self) -> Result<Call, CtlError> {
        let path = |p: &PathBuf| super::gateway_ctl::pool_path(p);
        Ok(Call::Pool(match self {
            PoolVerb::Create { path: p, size } => PoolCall::Create(PoolCreate {
                path: path(p)?,
                size: Size::Text(size.clone()),
            }),
            PoolVerb::Open { path: p } => PoolCall::Open(PoolPath { path: path(p)? }),
            PoolVerb::Close { path: p } => PoolCall::Close(PoolPath { path: path(p)? }),
            PoolVerb::List => PoolCall::List,
        }))
    }
}

/// The answer to a pool method, for people.
pub fn human(call: &PoolCall, result: &Value, size: impl Fn(u64) -> String) -> String {
    let path = result["path"].as_str().unwrap_or("?");
    match call {
        PoolCall::Create(_) => format!(
            "pool {path} created: {}\n",
            size(result["size_bytes"].as_u64().unwrap_or(0))
        ),
        PoolCall::Open(_) if result["already_open"] == Value::Bool(true) => {
            format!("pool {path} was open already\n")
        }
        PoolCall::Open(_) => format!("pool {path} opened\n"),
        PoolCall::Close(_) => format!("pool {path} closed\n"),
        PoolCall::List => {
            let pools = result["pools"].as_array().cloned().unwrap_or_default();
            if pools.is_empty() {
                return "no pools open\n".into();
            }
            let mut out = format!(
                "{:<48} {:>8} {:>12} {:>12}\n",
                "POOL", "VOLUMES", "ALLOCATED", "DATA"
            );
            for p in pools {
                out.push_str(&format!(
                    "{:<48} {:>8} {:>12} {:>12}\n",
                    p["path"].as_str().unwrap_or("?"),
                    p["volumes"].as_u64().unwrap_or(0),
                    size(p["allocated_bytes"].as_u64().unwrap_or(0)),
                    size(p["data_bytes"].as_u64().unwrap_or(0)),
                ));
            }
            out
        }
    }
}
