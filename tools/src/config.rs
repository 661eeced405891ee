//! Connection options shared by every command, and their translation into a
//! [`ClientConfig`] for one URL.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::{Args, ValueEnum};
use datapath::client::ClientConfig;
use datapath::credentials::{read_secret_file, short_secret_warning, EnvChap};
use datapath::session::ChapConfig;
use datapath::shard::{PathList, PathPolicy};
use datapath::text::DigestChoice;
use datapath::transport::TransportKind;

use crate::commands::CtlError;
use datapath::url::IscsiUrl;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum DigestOption {
    /// No digest.
    None,
    /// CRC32C required.
    Crc32c,
    /// Offer CRC32C first, accept None.
    Prefer,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum YesNo {
    Yes,
    No,
}

#[derive(Args, Debug, Clone)]
pub struct ConnectOptions {
    /// Our iSCSI name (default: derived from the host name).
    #[arg(long, global = true)]
    pub initiator_name: Option<String>,
    /// HeaderDigest to offer.
    #[arg(long, global = true, value_enum, default_value = "none")]
    pub header_digest: DigestOption,
    /// DataDigest to offer.
    #[arg(long, global = true, value_enum, default_value = "none")]
    pub data_digest: DigestOption,
    /// CHAP user name (overrides the URL's, which overrides $LIBISCSI_CHAP_USERNAME).
    #[arg(long, global = true)]
    pub chap_user: Option<String>,
    /// CHAP secret (overrides the URL's, which overrides $LIBISCSI_CHAP_PASSWORD). Visible
    /// to every user in `ps`: prefer --chap-secret-file or the environment.
    #[arg(long, global = true, conflicts_with = "chap_secret_file")]
    pub chap_secret: Option<String>,
    /// Read the CHAP secret from this file (one line).
    #[arg(long, global = true, value_name = "FILE")]
    pub chap_secret_file: Option<std::path::PathBuf>,
    /// Mutual CHAP: the user name the target must answer with ($LIBISCSI_CHAP_TARGET_USERNAME).
    #[arg(long, global = true)]
    pub target_user: Option<String>,
    /// Mutual CHAP: the secret the target must prove it knows ($LIBISCSI_CHAP_TARGET_PASSWORD;
    /// prefer --target-secret-file to this option, which `ps` shows).
    #[arg(long, global = true, conflicts_with = "target_secret_file")]
    pub target_secret: Option<String>,
    /// Read the mutual CHAP secret from this file (one line).
    #[arg(long, global = true, value_name = "FILE")]
    pub target_secret_file: Option<std::path::PathBuf>,
    /// ImmediateData to offer.
    #[arg(long, global = true, value_enum)]
    pub immediate_data: Option<YesNo>,
    /// InitialR2T to offer.
    #[arg(long, global = true, value_enum)]
    pub initial_r2t: Option<YesNo>,
    /// MaxBurstLength to offer, bytes.
    #[arg(long, global = true)]
    pub max_burst_length: Option<u32>,
    /// FirstBurstLength to offer, bytes.
    #[arg(long, global = true)]
    pub first_burst_length: Option<u32>,
    /// MaxRecvDataSegmentLength we declare, bytes.
    #[arg(long, global = true)]
    pub max_recv_data_segment_length: Option<u32>,
    /// TCP connect timeout, seconds.
    #[arg(long, global = true, default_value_t = 5.0)]
    pub connect_timeout: f64,
    /// Login timeout, seconds.
    #[arg(long, global = true, default_value_t = 10.0)]
    pub login_timeout: f64,
    /// Per-command timeout, seconds.
    #[arg(long, global = true, default_value_t = 30.0)]
    pub command_timeout: f64,
    /// Commands in flight for multi-command transfers.
    #[arg(long, global = true, default_value_t = 16)]
    pub queue_depth: usize,
    /// What carries the data commands (luns, inquiry, readcap, read, write): software TCP,
    /// or a software model of a dependent or independent offload adapter.
    #[arg(long, global = true, value_parser = tools::args::transport_parser(), default_value = "software")]
    pub transport: TransportKind,
    /// Multipath for the data commands (luns, inquiry, readcap, read, write, copy): `all`
    /// (every portal SendTargets lists for the target) or portals separated by commas
    /// (host[:port], [v6][:port]). Each path must reach the URL's LU (VPD 0x83); commands
    /// go over software TCP, spread by --path-policy, and one lost path fails none of them.
    /// The answer says what each path carried.
    #[arg(long, global = true, value_parser = |text: &str| text.parse::<PathList>())]
    pub paths: Option<PathList>,
    /// Which path takes the next command with --paths: round-robin, failover, queue-length
    /// or service-time.
    #[arg(long, global = true, value_parser = |text: &str| text.parse::<PathPolicy>(), default_value = "round-robin")]
    pub path_policy: PathPolicy,
}

fn digest_choices(option: DigestOption) -> Vec<DigestChoice> {
    match option {
        DigestOption::None => vec![DigestChoice::None],
        DigestOption::Crc32c => vec![DigestChoice::Crc32c],
        DigestOption::Prefer => vec![DigestChoice::Crc32c, DigestChoice::None],
    }
}

fn seconds(name: &str, value: f64) -> Result<Duration, CtlError> {
    if value.is_finite() && value > 0.0 && value < 1e6 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(CtlError::Usage(format!(
            "--{name} must be a positive number of seconds, not {value}"
        )))
    }
}

/// Resolves the URL's host and port to one socket address.
pub fn resolve(url: &IscsiUrl) -> Result<SocketAddr, CtlError> {
    let host = url.host.as_str();
    (host, url.port)
        .to_socket_addrs()
        .map_err(|e| CtlError::Usage(format!("cannot resolve host '{host}': {e}")))?
        .next()
        .ok_or_else(|| CtlError::Usage(format!("host '{host}' has no address")))
}

impl ConnectOptions {
    /// The client configuration for `url` (the target comes from the URL, if any).
    pub fn client_config(&self, url: &IscsiUrl) -> Result<ClientConfig, CtlError> {
        let mut config = ClientConfig::new(resolve(url)?, url.target.clone());
        if let Some(name) = &self.initiator_name {
            config.initiator_name = name.clone();
        }
        // Options first, then the URL, then libiscsi's environment variables.
        let env = EnvChap::from_env();
        let from_file = |path: &Option<std::path::PathBuf>| {
            path.as_deref()
                .map(read_secret_file)
                .transpose()
                .map_err(CtlError::Usage)
        };
        let user = (self.chap_user.clone())
            .or_else(|| url.user.clone())
            .or(env.user);
        let secret = (self.chap_secret.clone())
            .or(from_file(&self.chap_secret_file)?)
            .or_else(|| url.secret.clone())
            .or(env.secret);
        let target_user = (self.target_user.clone())
            .or_else(|| url.target_user.clone())
            .or(env.target_user);
        let target_secret = (self.target_secret.clone())
            .or(from_file(&self.target_secret_file)?)
            .or_else(|| url.target_secret.clone())
            .or(env.target_secret);
        for (what, secret) in [
            ("CHAP secret", &secret),
            ("mutual CHAP secret", &target_secret),
        ] {
            if let Some(warning) = secret
                .as_deref()
                .and_then(|s| short_secret_warning(what, s.as_bytes()))
            {
                tracing::warn!("{warning}");
            }
        }
        config.chap = match (user, secret) {
            (Some(user), Some(secret)) => Some(ChapConfig {
                user,
                secret: secret.into_bytes(),
                mutual: match (target_user, target_secret) {
                    (Some(u), Some(s)) => Some((u, s.into_bytes())),
                    (None, None) => None,
                    _ => {
                        return Err(CtlError::Usage(
                            "mutual CHAP needs both --target-user and --target-secret".into(),
                        ))
                    }
                },
            }),
            (None, None) if target_user.is_none() && target_secret.is_none() => None,
            (Some(_), None) | (None, Some(_)) => {
                return Err(CtlError::Usage(
                    "CHAP needs both a user and a secret (iscsi://user%secret@host/...)".into(),
                ))
            }
            _ => {
                return Err(CtlError::Usage(
                    "mutual CHAP needs one-way CHAP too: give a user and a secret".into(),
                ))
            }
        };
        let header_digest = match url.header_digest.as_deref() {
            None => self.header_digest,
            Some("none" | "NONE") => DigestOption::None,
            Some("crc32c" | "CRC32C") => DigestOption::Crc32c,
            Some("crc32c-none" | "CRC32C_NONE") => DigestOption::Prefer,
            Some("none-crc32c" | "NONE_CRC32C") => DigestOption::None,
            Some(other) => {
                return Err(CtlError::Usage(format!(
                    "header_digest '{other}' is not none, crc32c or crc32c-none"
                )))
            }
        };
        config.offer.header_digests = digest_choices(header_digest);
        config.offer.data_digests = digest_choices(self.data_digest);
        if let Some(v) = self.immediate_data {
            config.offer.immediate_data = v == YesNo::Yes;
        }
        if let Some(v) = self.initial_r2t {
            config.offer.initial_r2t = v == YesNo::Yes;
        }
        if let Some(v) = self.max_burst_length {
            config.offer.max_burst_length = v;
        }
        if let Some(v) = self.first_burst_length {
            config.offer.first_burst_length = v;
        }
        if let Some(v) = self.max_recv_data_segment_length {
            config.offer.max_recv_data_segment_length = v;
        }
        config.connect_timeout = seconds("connect-timeout", self.connect_timeout)?;
        config.login_timeout = seconds("login-timeout", self.login_timeout)?;
        config.command_timeout = seconds("command-timeout", self.command_timeout)?;
        if self.queue_depth == 0 || self.queue_depth > 1024 {
            return Err(CtlError::Usage(
                "--queue-depth must be from 1 to 1024".into(),
            ));
        }
        config.queue_depth = self.queue_depth;
        Ok(config)
    }
}
