//! The `iscsi-gateway --config FILE` format: portals, limits and any number of target
//! nodes with their LUNs, CHAP, mutual CHAP and allowed initiators, in TOML. The commented
//! example `gateway/iscsi-gateway.example.toml` shows every key.
//!
//! Parsing checks what the server would otherwise find out late or never: at least one
//! portal and one target, unique target names and LUN numbers, mutual CHAP only on top of
//! CHAP, and CHAP secrets of at least 12 bytes (RFC 7143 section 12.1.3 wants 96 bits at
//! the least). Unknown keys are errors, so a typo never silently drops a setting.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::server::{TargetConfig, TargetNodeConfig};
use crate::session::ChapCredentials;

/// Shortest CHAP secret accepted, in bytes (96 bits).
pub const MIN_CHAP_SECRET_BYTES: usize = 12;

/// Why a configuration file was refused.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Syntax(#[from] toml::de::Error),
    #[error("no portals: give at least one address in `portals`")]
    NoPortals,
    #[error("no targets: give at least one [[target]]")]
    NoTargets,
    #[error("target {iqn} is defined twice")]
    DuplicateTarget { iqn: String },
    #[error("target {iqn} has no LUNs")]
    NoLuns { iqn: String },
    #[error("target {iqn} defines LUN {lun} twice")]
    DuplicateLun { iqn: String, lun: u64 },
    #[error("{0}")]
    Limit(String),
    #[error("target {iqn}: mutual_chap needs chap (the initiator authenticates first)")]
    MutualWithoutChap { iqn: String },
    #[error("{what}: CHAP secret of {len} bytes, at least {MIN_CHAP_SECRET_BYTES} required")]
    ShortSecret { what: String, len: usize },
    #[error("queue_depth must be at least 1")]
    ZeroQueueDepth,
    #[error("control_priority: {0}")]
    ControlPriority(#[from] crate::control::priority::PriorityParseError),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    portals: Vec<SocketAddr>,
    portal_group_tag: Option<u16>,
    queue_depth: Option<u32>,
    threads: Option<usize>,
    /// Seconds a backend may take on a command ([`crate::server::ClientLimits`]).
    backend_timeout: Option<f64>,
    /// KiB of output a connection may owe before it stops reading.
    max_output_kib: Option<usize>,
    discovery_chap: Option<FileChap>,
    /// The control plane's Unix socket ([`crate::control`]).
    control_socket: Option<PathBuf>,
    /// Where the control plane keeps the configuration durably.
    state_dir: Option<PathBuf>,
    /// How the control plane's threads are scheduled (`crate::control::priority`).
    control_priority: Option<String>,
    /// The array's virtual portal (`crate::portal`).
    virtual_portal: Option<SocketAddr>,
    /// `temporary`, `permanent` or `accept`.
    redirect: Option<String>,
    /// `ADDR=WEIGHT` per real portal.
    #[serde(default)]
    portal_weights: Vec<String>,
    /// `GROUP=STATE` per ALUA target port group.
    #[serde(default)]
    alua: Vec<String>,
    /// `ADDR=IFACE` per real portal that may be taken over.
    #[serde(default)]
    portal_interfaces: Vec<String>,
    #[serde(default, rename = "target")]
    targets: Vec<FileTarget>,
}

/// The control plane's settings (`control_socket`, `state_dir`, `control_priority`;
/// `--control-socket`, `--state-dir`, `--control-priority` on the command line).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlSettings {
    pub control_socket: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub control_priority: crate::control::priority::ControlPriority,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTarget {
    iqn: String,
    alias: Option<String>,
    #[serde(default)]
    luns: Vec<FileLun>,
    chap: Option<FileChap>,
    mutual_chap: Option<FileChap>,
    allowed_initiators: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLun {
    lun: u64,
    /// `ram:SIZE`, `null:SIZE`, `file:PATH` or `file:PATH:SIZE`.
    backend: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileChap {
    user: String,
    secret: String,
}

impl FileChap {
    fn credentials(self, what: impl FnOnce() -> String) -> Result<ChapCredentials, ConfigError> {
        if self.secret.len() < MIN_CHAP_SECRET_BYTES {
            return Err(ConfigError::ShortSecret {
                what: what(),
                len: self.secret.len(),
            });
        }
        Ok(ChapCredentials {
            user: self.user,
            secret: self.secret.into_bytes(),
        })
    }
}

/// Parses and checks a configuration; the result starts with [`crate::server::start`].
pub fn parse_config(text: &str) -> Result<TargetConfig, ConfigError> {
    parse_gateway_config(text).map(|(config, _)| config)
}

/// Parses and checks a configuration with its control plane settings. Without a control
/// socket at least one target is required (with one, targets can come later).
pub fn parse_gateway_config(text: &str) -> Result<(TargetConfig, ControlSettings), ConfigError> {
    let file: FileConfig = toml::from_str(text)?;
    let first_portal = *file.portals.first().ok_or(ConfigError::NoPortals)?;
    let control = ControlSettings {
        control_socket: file.control_socket.clone(),
        state_dir: file.state_dir.clone(),
        control_priority: match &file.control_priority {
            Some(text) => text.parse()?,
            None => Default::default(),
        },
    };
    if file.targets.is_empty() && control.control_socket.is_none() {
        return Err(ConfigError::NoTargets);
    }
    let mut names = BTreeSet::new();
    let mut nodes = Vec::with_capacity(file.targets.len());
    for target in file.targets {
        if !names.insert(target.iqn.clone()) {
            return Err(ConfigError::DuplicateTarget { iqn: target.iqn });
        }
        nodes.push(node(target)?);
    }
    let mut config = TargetConfig::new(first_portal, TargetNodeConfig::new("", Vec::new()));
    config.targets = nodes;
    config.portals = file.portals;
    if let Some(tag) = file.portal_group_tag {
        config.portal_group_tag = tag;
    }
    if let Some(depth) = file.queue_depth {
        if depth == 0 {
            return Err(ConfigError::ZeroQueueDepth);
        }
        config.max_cmd_window = depth;
    }
    config.threads = file.threads;
    if let Some(seconds) = file.backend_timeout {
        if !(seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0) {
            return Err(ConfigError::Limit(format!(
                "backend_timeout = {seconds}: give seconds, more than 0 and at most 86400"
            )));
        }
        config.client_limits.backend_timeout = std::time::Duration::from_secs_f64(seconds);
    }
    if let Some(kib) = file.max_output_kib {
        if kib == 0 {
            return Err(ConfigError::Limit(
                "max_output_kib = 0: give at least 1".into(),
            ));
        }
        config.client_limits.max_output_bytes_per_connection = kib << 10;
    }
    config.array.virtual_portal = file.virtual_portal;
    if let Some(redirect) = &file.redirect {
        config.array.redirect = redirect.parse().map_err(ConfigError::Limit)?;
    }
    for weight in &file.portal_weights {
        let parsed = crate::portal::parse_weight(weight)
            .map_err(|e| ConfigError::Limit(format!("portal_weights: {e}")))?;
        config.array.weights.push(parsed);
    }
    for state in &file.alua {
        let parsed = crate::portal::parse_alua(state)
            .map_err(|e| ConfigError::Limit(format!("alua: {e}")))?;
        config.array.alua.push(parsed);
    }
    for link in &file.portal_interfaces {
        let parsed = crate::portal::takeover::parse_portal_link(link)
            .map_err(|e| ConfigError::Limit(format!("portal_interfaces: {e}")))?;
        config.array.links.push(parsed);
    }
    config.discovery_chap = file
        .discovery_chap
        .map(|chap| chap.credentials(|| "discovery_chap".into()))
        .transpose()?;
    Ok((config, control))
}

fn node(target: FileTarget) -> Result<TargetNodeConfig, ConfigError> {
    let iqn = target.iqn;
    if target.luns.is_empty() {
        return Err(ConfigError::NoLuns { iqn });
    }
    let mut numbers = BTreeSet::new();
    for lun in &target.luns {
        if !numbers.insert(lun.lun) {
            return Err(ConfigError::DuplicateLun { iqn, lun: lun.lun });
        }
    }
    if target.mutual_chap.is_some() && target.chap.is_none() {
        return Err(ConfigError::MutualWithoutChap { iqn });
    }
    let chap = target
        .chap
        .map(|chap| chap.credentials(|| format!("target {iqn} chap")))
        .transpose()?;
    let mutual_chap = target
        .mutual_chap
        .map(|chap| chap.credentials(|| format!("target {iqn} mutual_chap")))
        .transpose()?;
    let mut node = TargetNodeConfig::new(
        iqn,
        target
            .luns
            .into_iter()
            .map(|lun| (lun.lun, lun.backend))
            .collect(),
    );
    node.alias = target.alias;
    node.chap = chap;
    node.mutual_chap = mutual_chap;
    node.allowed_initiators = target.allowed_initiators;
    Ok(node)
}

/// Reads and parses a configuration file.
pub fn load_config(path: &Path) -> Result<TargetConfig, ConfigError> {
    load_gateway_config(path).map(|(config, _)| config)
}

/// Reads and parses a configuration file with its control plane settings.
pub fn load_gateway_config(path: &Path) -> Result<(TargetConfig, ControlSettings), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_gateway_config(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../iscsi-gateway.example.toml");

    #[test]
    fn the_documented_example_parses_into_every_setting() {
        let config = parse_config(EXAMPLE).unwrap();
        assert_eq!(
            config.portals,
            vec![
                "127.0.0.1:3260".parse::<SocketAddr>().unwrap(),
                "[::1]:3260".parse().unwrap()
            ]
        );
        assert_eq!(config.portal_group_tag, 1);
        assert_eq!(config.max_cmd_window, 128);
        assert_eq!(config.threads, Some(2));
        assert_eq!(config.discovery_chap.as_ref().unwrap().user, "discoverer");
        assert_eq!(config.targets.len(), 2);
        let fast = &config.targets[0];
        assert_eq!(fast.iqn, "iqn.2026-11.io.iscsi-uring:fast");
        assert_eq!(fast.alias.as_deref(), Some("scratch disks"));
        assert_eq!(
            fast.luns,
            vec![(0, "ram:1G".to_string()), (1, "null:100G".to_string())]
        );
        assert!(fast.chap.is_none() && fast.allowed_initiators.is_none());
        let guarded = &config.targets[1];
        assert_eq!(guarded.chap.as_ref().unwrap().user, "host");
        assert_eq!(guarded.chap.as_ref().unwrap().secret, b"host-secret-123");
        assert_eq!(guarded.mutual_chap.as_ref().unwrap().user, "guarded-target");
        assert_eq!(
            guarded.allowed_initiators.as_deref(),
            Some(
                &[
                    "iqn.2026-11.example:host1".into(),
                    "iqn.2026-11.example:host2".into()
                ][..]
            )
        );
    }

    #[test]
    fn defaults_apply_when_optional_keys_are_left_out() {
        let config = parse_config(
            r#"portals = ["127.0.0.1:0"]
               [[target]]
               iqn = "iqn.2026-11.test:a"
               luns = [{ lun = 3, backend = "ram:1M" }]"#,
        )
        .unwrap();
        assert_eq!(config.max_cmd_window, 128);
        assert_eq!(config.threads, None);
        assert!(config.discovery_chap.is_none());
        assert_eq!(config.targets[0].luns, vec![(3, "ram:1M".to_string())]);
    }

    #[test]
    fn the_array_settings_parse_or_name_what_is_wrong() {
        let base = "portals = [\"127.0.0.1:3261\", \"127.0.0.1:3262\"]\n";
        let target = "[[target]]\niqn = \"iqn.x:a\"\nluns = [{ lun = 0, backend = \"ram:1M\" }]\n";
        let config = parse_config(&format!(
            "{base}virtual_portal = \"127.0.0.1:3260\"\nredirect = \"permanent\"\n\
             portal_weights = [\"127.0.0.1:3262=3\"]\nalua = [\"2=standby\"]\n\
             portal_interfaces = [\"127.0.0.1:3261=eth1\"]\n{target}"
        ))
        .unwrap();
        assert_eq!(
            config.array.virtual_portal,
            Some("127.0.0.1:3260".parse().unwrap())
        );
        assert_eq!(
            config.array.redirect,
            crate::portal::RedirectKind::Permanent
        );
        assert_eq!(config.array.weight_of("127.0.0.1:3262".parse().unwrap()), 3);
        assert_eq!(config.array.weight_of("127.0.0.1:3261".parse().unwrap()), 1);
        assert_eq!(
            config.array.alua,
            vec![(2, datapath::scsi::alua::AccessState::Standby)]
        );
        assert_eq!(config.array.links[0].interface, "eth1");
        let error = parse_config(&format!("{base}redirect = \"sideways\"\n{target}")).unwrap_err();
        assert!(error.to_string().contains("sideways"), "{error}");
        let error = parse_config(&format!("{base}alua = [\"1=dozing\"]\n{target}")).unwrap_err();
        assert!(
            error.to_string().contains("alua") && error.to_string().contains("dozing"),
            "{error}"
        );
    }

    fn refused(text: &str) -> ConfigError {
        parse_config(text).expect_err(text)
    }

    const LUN: &str = r#"luns = [{ lun = 0, backend = "ram:1M" }]"#;

    #[test]
    fn inconsistent_files_are_refused_with_the_reason() {
        let target = |extra: &str| format!("[[target]]\niqn = \"iqn.x:a\"\n{extra}\n");
        let portal = "portals = [\"127.0.0.1:3260\"]\n";
        assert!(matches!(
            refused(&format!("portals = []\n{}", target(LUN))),
            ConfigError::NoPortals
        ));
        assert!(matches!(refused(portal), ConfigError::NoTargets));
        assert!(matches!(
            refused(&format!("{portal}{}{}", target(LUN), target(LUN))),
            ConfigError::DuplicateTarget { .. }
        ));
        assert!(matches!(
            refused(&format!("{portal}{}", target(""))),
            ConfigError::NoLuns { .. }
        ));
        assert!(matches!(
            refused(&format!(
                "{portal}{}",
                target(
                    r#"luns = [{ lun = 0, backend = "ram:1M" }, { lun = 0, backend = "null:1M" }]"#
                )
            )),
            ConfigError::DuplicateLun { lun: 0, .. }
        ));
        assert!(matches!(
            refused(&format!(
                "{portal}{}",
                target(&format!(
                    "{LUN}\nmutual_chap = {{ user = \"t\", secret = \"0123456789ab\" }}"
                ))
            )),
            ConfigError::MutualWithoutChap { .. }
        ));
        assert!(matches!(
            refused(&format!(
                "{portal}{}",
                target(&format!(
                    "{LUN}\nchap = {{ user = \"u\", secret = \"short\" }}"
                ))
            )),
            ConfigError::ShortSecret { len: 5, .. }
        ));
        assert!(matches!(
            refused(&format!("{portal}queue_depth = 0\n{}", target(LUN))),
            ConfigError::ZeroQueueDepth
        ));
        // A misspelt key is an error, not a silently ignored setting.
        assert!(matches!(
            refused(&format!(
                "{portal}{}",
                target(&format!("{LUN}\nallowed_initiator = []"))
            )),
            ConfigError::Syntax(_)
        ));
        assert!(matches!(
            refused("portals = [\"not an address\"]"),
            ConfigError::Syntax(_)
        ));
    }
}
