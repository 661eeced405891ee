//! `iscsi-ctl adapters`: the iSCSI offload adapters this program can drive.
//!
//! - The two software models (`offload::dependent`, `offload::independent`), built with one
//!   queue pair per shard as `--transport` would build them: kind, queue pairs, capabilities,
//!   and for each queue pair the shard that drives it and the core that shard pins to
//!   (the rule of [`datapath::shard::planned_cores`], given `--shards` and `--core`).
//!   A one-shot command runs no pool, so this is the plan a pool would follow.
//! - The real adapters Linux exports in `<sysfs-root>/class/iscsi_host` and
//!   `.../iscsi_iface`, classified by driver (`offload::discovery`).

use std::path::Path;

use datapath::adapter::{AdapterInfo, Capabilities, DependentAdapter, IndependentAdapter};
use datapath::shard::planned_cores;
use offload::dependent::{DependentModel, DependentModelConfig};
use offload::discovery::{discover, DiscoveredAdapter, DiscoveredIface, OffloadKind};
use offload::independent::{IndependentModel, IndependentModelConfig};
use serde_json::{json, Value};

use crate::commands::CtlError;
use crate::render::{human_bytes, Output};

/// The most shards the plan is shown for (an adapter model has at most this many queues
/// here; real pools use one per core).
pub const SHARDS_MAX: usize = 1024;

pub fn adapters(
    shards: Option<usize>,
    first_core: usize,
    sysfs_root: &Path,
    out: &Output,
) -> Result<(), CtlError> {
    let shards = shards.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    });
    if shards == 0 || shards > SHARDS_MAX {
        return Err(CtlError::Usage(format!(
            "--shards must be from 1 to {SHARDS_MAX}"
        )));
    }
    let cores = planned_cores(Some(first_core), shards);
    let dependent = DependentModel::new(DependentModelConfig {
        queue_pairs: shards,
        ..DependentModelConfig::default()
    });
    let independent = IndependentModel::new(IndependentModelConfig {
        queue_pairs: shards,
        ..IndependentModelConfig::default()
    });
    let models = [dependent.info(), independent.info()];
    let hosts_dir = sysfs_root.join("class/iscsi_host");
    let real = discover(sysfs_root).map_err(|e| CtlError::Usage(e.to_string()))?;

    let value = json!({
        "shards": shards,
        "first_core": first_core,
        "models": models.iter().map(|m| model_json(m, &cores)).collect::<Vec<_>>(),
        "sysfs_root": sysfs_root.display().to_string(),
        "real": real.iter().map(real_json).collect::<Vec<_>>(),
    });
    out.emit(&value, || {
        let mut text = format!(
            "Software adapter models ({shards} shards, shard i on queue pair i, first core {first_core}):\n"
        );
        for model in &models {
            text.push_str(&model_text(model, &cores));
        }
        if real.is_empty() {
            text.push_str(&format!(
                "\nno offload adapters found in {}\n",
                hosts_dir.display()
            ));
        } else {
            text.push_str(&format!("\niSCSI hosts in {}:\n", hosts_dir.display()));
            for adapter in &real {
                text.push_str(&real_text(adapter));
            }
            if !real.iter().any(DiscoveredAdapter::is_offload) {
                text.push_str("no known offload adapter among them\n");
            }
        }
        text
    });
    Ok(())
}

fn capabilities_json(caps: &Capabilities) -> Value {
    json!({
        "header_digest": caps.header_digest,
        "data_digest": caps.data_digest,
        "direct_data_placement": caps.direct_data_placement,
        "tcp_offload": caps.tcp_offload,
        "max_pdu_bytes": caps.max_pdu_bytes,
        "max_io_bytes": caps.max_io_bytes,
    })
}

fn model_json(model: &AdapterInfo, cores: &[Option<usize>]) -> Value {
    json!({
        "name": model.name,
        "kind": model.kind.name(),
        "queue_pairs": model.capabilities.queue_pairs,
        "capabilities": capabilities_json(&model.capabilities),
        "queues": cores.iter().enumerate().map(|(i, core)| json!({
            "queue_pair": i,
            "shard": i,
            "core": core,
        })).collect::<Vec<_>>(),
    })
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn model_text(model: &AdapterInfo, cores: &[Option<usize>]) -> String {
    let caps = &model.capabilities;
    let mut text = format!(
        "  {:<20} {:<11} {} queue pairs; digests: header {}, data {}; direct data placement {}; TCP offload {}; max PDU {}; max I/O {}\n",
        model.name,
        model.kind.name(),
        caps.queue_pairs,
        yes_no(caps.header_digest),
        yes_no(caps.data_digest),
        yes_no(caps.direct_data_placement),
        yes_no(caps.tcp_offload),
        human_bytes(u64::from(caps.max_pdu_bytes)),
        human_bytes(u64::from(caps.max_io_bytes)),
    );
    for (i, core) in cores.iter().enumerate() {
        let core = core.map_or_else(|| "unpinned".to_string(), |c| format!("core {c}"));
        text.push_str(&format!("      queue pair {i} -> shard {i}, {core}\n"));
    }
    text
}

fn kind_word(kind: &OffloadKind) -> &'static str {
    match kind {
        OffloadKind::Transport(kind) => kind.name(),
        OffloadKind::Unknown(_) => "unknown",
    }
}

fn iface_json(iface: &DiscoveredIface) -> Value {
    json!({
        "name": iface.name,
        "ip_version": iface.ip_version,
        "iface_number": iface.iface_number,
        "enabled": iface.enabled,
        "ipaddress": iface.ipaddress,
        "subnet": iface.subnet,
        "gateway": iface.gateway,
        "bootproto": iface.bootproto,
        "vlan_id": iface.vlan_id,
        "vlan_enabled": iface.vlan_enabled,
        "mtu": iface.mtu,
        "port": iface.port,
        "initiator_name": iface.initiator_name,
    })
}

fn real_json(adapter: &DiscoveredAdapter) -> Value {
    json!({
        "host": adapter.host,
        "host_number": adapter.host_number,
        "driver": adapter.driver,
        "kind": kind_word(&adapter.kind),
        "offload": adapter.is_offload(),
        "hardware": adapter.hardware,
        "note": adapter.note,
        "netdev": adapter.netdev,
        "hwaddress": adapter.hwaddress,
        "ipaddress": adapter.ipaddress,
        "initiator_name": adapter.initiator_name,
        "port_state": adapter.port_state,
        "port_speed": adapter.port_speed,
        "ifaces": adapter.ifaces.iter().map(iface_json).collect::<Vec<_>>(),
        "unreadable": adapter.unreadable.iter().map(|(a, e)| json!({"attribute": a, "error": e})).collect::<Vec<_>>(),
    })
}

fn real_text(adapter: &DiscoveredAdapter) -> String {
    let field = |name: &str, value: &Option<String>| {
        value
            .as_ref()
            .map(|v| format!(", {name} {v}"))
            .unwrap_or_default()
    };
    let mut text = format!(
        "  {:<8} {:<10} {:<11} {}{}{}{}{}\n",
        adapter.host,
        adapter.driver.as_deref().unwrap_or("?"),
        adapter.kind.to_string(),
        adapter.hardware,
        field("netdev", &adapter.netdev),
        field("hwaddress", &adapter.hwaddress),
        field("ipaddress", &adapter.ipaddress),
        field("port state", &adapter.port_state),
    );
    if let Some(note) = adapter.note {
        text.push_str(&format!("      note: {note}\n"));
    }
    for iface in &adapter.ifaces {
        text.push_str(&format!(
            "      iface {}: {}{}{}\n",
            iface.name,
            match iface.enabled {
                Some(true) => "enabled",
                Some(false) => "disabled",
                None => "state unknown",
            },
            field("ipaddress", &iface.ipaddress),
            iface
                .vlan_id
                .map(|v| format!(", vlan {v}"))
                .unwrap_or_default(),
        ));
    }
    text
}
