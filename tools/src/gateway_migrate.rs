//! `iscsi-ctl gateway migrate | migration | track | changed`: live migration of a LUN
//! and its changed-block tracking, through the gateway's `migrate_*` and `changes_*`
//! methods (`gateway::control::migration`).

use clap::{Args, Subcommand};
use gateway::control::rpc::Call;
use serde_json::{json, Value};

/// `migrate TARGET LUN --to SPEC [--mode mirror|dbt] [--rate BYTES/s] [--stun-budget-ms N]`.
#[derive(Args, Debug)]
pub struct MigrateArgs {
    target: String,
    lun: u64,
    /// The destination backend, in the LUN spec syntax (`file:PATH:SIZE`,
    /// `pool:PATH,volume=NAME,size=SIZE`, `iscsi://HOST:PORT/IQN/LUN`, `ram:SIZE`).
    #[arg(long)]
    to: String,
    /// mirror (default): one copy pass, writes behind the cursor go to both sides; dbt:
    /// passes over the blocks written meanwhile until the rest fits the stun budget.
    #[arg(long, value_parser = ["mirror", "dbt"])]
    mode: Option<String>,
    /// Copy at most this many bytes per second (100M, 1G).
    #[arg(long)]
    rate: Option<String>,
    /// DBT: hold host writes at most about this long for the last copy.
    #[arg(long)]
    stun_budget_ms: Option<u64>,
}

#[derive(Subcommand, Debug)]
pub enum MigrationVerb {
    /// Migrations in progress: copied, dirty, passes, rate, ETA, state.
    Status {
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        lun: Option<u64>,
    },
    /// Switch a ready migration: reads from the destination, the source kept in step until
    /// the commit (with --commit, commit at once).
    Complete {
        target: String,
        lun: u64,
        #[arg(long)]
        commit: bool,
    },
    /// Drop the source of a switched migration: the LUN lives on the destination.
    Commit { target: String, lun: u64 },
    /// Stop a migration: the LUN stays on its source, which has every write.
    Cancel { target: String, lun: u64 },
    /// Go back to the source after the switch (before the commit); nothing is lost.
    Rollback { target: String, lun: u64 },
}

/// `track TARGET LUN [--chunk 64K]`.
#[derive(Args, Debug)]
pub struct TrackArgs {
    target: String,
    lun: u64,
    /// Bytes per chunk of the map (a power of two from 4K to 64M; 64K by default).
    #[arg(long)]
    chunk: Option<String>,
}

/// `changed TARGET LUN [--since ID]`.
#[derive(Args, Debug)]
pub struct ChangedArgs {
    target: String,
    lun: u64,
    /// The change ID an earlier `changed` or `track` gave (EPOCH-GENERATION); every
    /// change since the tracking began when left out.
    #[arg(long)]
    since: Option<String>,
}

fn call(method: &str, params: Value) -> Call {
    Call::Migration {
        method: method.into(),
        params,
    }
}

impl MigrateArgs {
    pub fn call(&self) -> Call {
        let mut params = json!({"target": self.target, "lun": self.lun, "to": self.to});
        if let Some(mode) = &self.mode {
            params["mode"] = json!(mode);
        }
        if let Some(rate) = &self.rate {
            params["rate"] = json!(rate);
        }
        if let Some(ms) = self.stun_budget_ms {
            params["stun_budget_ms"] = json!(ms);
        }
        call("migrate_start", params)
    }
}

impl MigrationVerb {
    pub fn call(&self) -> Call {
        match self {
            MigrationVerb::Status { target, lun } => {
                let mut params = json!({});
                if let Some(target) = target {
                    params["target"] = json!(target);
                }
                if let Some(lun) = lun {
                    params["lun"] = json!(lun);
                }
                call("migrate_status", params)
            }
            MigrationVerb::Complete {
                target,
                lun,
                commit,
            } => call(
                "migrate_complete",
                json!({"target": target, "lun": lun, "commit": commit}),
            ),
            MigrationVerb::Commit { target, lun } => {
                call("migrate_commit", json!({"target": target, "lun": lun}))
            }
            MigrationVerb::Cancel { target, lun } => {
                call("migrate_cancel", json!({"target": target, "lun": lun}))
            }
            MigrationVerb::Rollback { target, lun } => {
                call("migrate_rollback", json!({"target": target, "lun": lun}))
            }
        }
    }
}

impl TrackArgs {
    pub fn call(&self) -> Call {
        let mut params = json!({"target": self.target, "lun": self.lun});
        if let Some(chunk) = &self.chunk {
            params["chunk"] = json!(chunk);
        }
        call("changes_track", params)
    }
}

impl ChangedArgs {
    pub fn call(&self) -> Call {
        let mut params = json!({"target": self.target, "lun": self.lun});
        if let Some(since) = &self.since {
            params["since"] = json!(since);
        }
        call("changes_query", params)
    }
}

fn mib(value: &Value) -> String {
    format!("{:.1} MiB", value.as_f64().unwrap_or(0.0) / 1048576.0)
}

fn one_status(m: &Value) -> String {
    let mut out = format!(
        "{} LUN {} -> {} ({}): {}, copied {} of {} ({:.2}x), dirty {}, passes {}, rate {}/s",
        m["target"].as_str().unwrap_or("-"),
        m["lun"],
        m["to"].as_str().unwrap_or("-"),
        m["mode"].as_str().unwrap_or("-"),
        m["state"].as_str().unwrap_or("-"),
        mib(&m["copied_bytes"]),
        mib(&m["size_bytes"]),
        m["copied_ratio"].as_f64().unwrap_or(0.0),
        mib(&m["dirty_bytes"]),
        m["passes"],
        mib(&m["rate_bytes_per_second"]),
    );
    if let Some(eta) = m["eta_seconds"].as_f64() {
        out.push_str(&format!(", ETA {eta:.1} s"));
    }
    if let Some(error) = m["error"].as_str() {
        out.push_str(&format!(", error: {error}"));
    }
    out.push('\n');
    out
}

/// The answer for people.
pub fn human(method: &str, result: &Value) -> String {
    match method {
        "migrate_status" | "migrate_complete" => {
            let rows = result["migrations"].as_array().cloned().unwrap_or_default();
            if rows.is_empty() {
                return "no migrations\n".into();
            }
            rows.iter().map(one_status).collect()
        }
        "changes_track" => format!(
            "tracking LUN {} of {}: change ID {} ({}-byte chunks{})\n",
            result["lun"],
            result["target"].as_str().unwrap_or("-"),
            result["change_id"].as_str().unwrap_or("-"),
            result["chunk_bytes"],
            if result["durable"] == json!(true) {
                ""
            } else {
                "; in memory only: no --state-dir"
            }
        ),
        "changes_query" => {
            let mut out = format!(
                "{} bytes changed in {} extents; next change ID {}\n",
                result["changed_bytes"],
                result["extents"].as_array().map_or(0, Vec::len),
                result["next"].as_str().unwrap_or("-")
            );
            for extent in result["extents"].as_array().cloned().unwrap_or_default() {
                out.push_str(&format!("{} +{}\n", extent[0], extent[1]));
            }
            out
        }
        _ => one_status(result),
    }
}
