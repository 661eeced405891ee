//! libiscsi-style target URLs: `iscsi://[user[%secret]@]host[:port]/target-iqn/lun`.
//!
//! The host may be a bracketed IPv6 literal (`[::1]:3260`). Query arguments follow
//! libiscsi's names: `target_user`, `target_password` (mutual CHAP), `header_digest`.
//!
//! This is the form libiscsi documents for its tools and its `iscsi_parse_full_url`
//! (`iscsi://[<username>[%<password>]@]<host>[:<port>]/<target-iqn>/<lun>`), so a URL that
//! works with `iscsi-ls` or fio's libiscsi engine works with `iscsi-ctl` and `iscsi-bench`.
//! Parsing only: resolving the host is the caller's business. No I/O.

use std::fmt;

pub const DEFAULT_PORT: u16 = 3260;

/// A parsed URL. (`Debug` leaves the CHAP secrets out.)
#[derive(Clone, PartialEq, Eq)]
pub struct IscsiUrl {
    pub user: Option<String>,
    pub secret: Option<String>,
    pub host: String,
    pub port: u16,
    pub target: Option<String>,
    pub lun: Option<u64>,
    pub target_user: Option<String>,
    pub target_secret: Option<String>,
    pub header_digest: Option<String>,
}

impl fmt::Debug for IscsiUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IscsiUrl")
            .field("user", &self.user)
            .field("secret", &self.secret.as_ref().map(|_| "<hidden>"))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("target", &self.target)
            .field("lun", &self.lun)
            .field("target_user", &self.target_user)
            .field(
                "target_secret",
                &self.target_secret.as_ref().map(|_| "<hidden>"),
            )
            .field("header_digest", &self.header_digest)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    #[error("'{0}' is not an iSCSI URL: it must start with iscsi://")]
    Scheme(String),
    #[error("'{0}' has no host")]
    NoHost(String),
    #[error("'{url}': port '{port}' is not a number from 1 to 65535")]
    Port { url: String, port: String },
    #[error("'{url}': unclosed '[' in an IPv6 host")]
    Bracket { url: String },
    #[error("'{url}': LUN '{lun}' is not a number nor ENDPOINT:SECONDARY (a subsidiary LU)")]
    Lun { url: String, lun: String },
    #[error(
        "'{url}': unknown argument '{arg}' (known: target_user, target_password, header_digest)"
    )]
    Argument { url: String, arg: String },
    #[error("'{url}' names no target: expected iscsi://host[:port]/target-iqn/lun")]
    NoTarget { url: String },
    #[error("'{url}' names no LUN: expected iscsi://host[:port]/target-iqn/lun")]
    NoLun { url: String },
}

impl IscsiUrl {
    /// Parses a URL; target and LUN are optional here (a portal alone is valid).
    pub fn parse(text: &str) -> Result<IscsiUrl, UrlError> {
        let rest = text
            .strip_prefix("iscsi://")
            .ok_or_else(|| UrlError::Scheme(text.to_string()))?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, p),
            None => (rest, ""),
        };
        // The secret may contain '@'; the host never does, so split at the last one.
        let (credentials, hostport) = match authority.rsplit_once('@') {
            Some((c, h)) => (Some(c), h),
            None => (None, authority),
        };
        let (user, secret) = match credentials {
            Some(c) => match c.split_once('%') {
                Some((u, s)) => (Some(u.to_string()), Some(s.to_string())),
                None => (Some(c.to_string()), None),
            },
            None => (None, None),
        };
        let (host, port) = split_host_port(text, hostport)?;
        let mut segments = path.split('/').filter(|s| !s.is_empty());
        let target = segments.next().map(str::to_string);
        let lun = match segments.next() {
            // A number, or a subsidiary LU as ENDPOINT:SECONDARY (or a raw 0x field),
            // carried as the u64 that `Lun::from_u64` turns back into its field.
            Some(l) => Some(match l.parse::<u64>() {
                Ok(n) => n,
                Err(_) => l
                    .parse::<crate::scsi::Lun>()
                    .map(|lun| lun.number().unwrap_or(lun.raw()))
                    .map_err(|_| UrlError::Lun {
                        url: text.to_string(),
                        lun: l.to_string(),
                    })?,
            }),
            None => None,
        };
        let mut url = IscsiUrl {
            user,
            secret,
            host,
            port,
            target,
            lun,
            target_user: None,
            target_secret: None,
            header_digest: None,
        };
        for arg in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|a| !a.is_empty())
        {
            let (key, value) = arg.split_once('=').unwrap_or((arg, ""));
            let value = Some(value.to_string());
            match key {
                "target_user" => url.target_user = value,
                "target_password" => url.target_secret = value,
                "header_digest" => url.header_digest = value,
                _ => {
                    return Err(UrlError::Argument {
                        url: text.to_string(),
                        arg: key.to_string(),
                    })
                }
            }
        }
        Ok(url)
    }

    /// Parses a URL that must name a target and a LUN.
    pub fn parse_lun_url(text: &str) -> Result<IscsiUrl, UrlError> {
        let url = IscsiUrl::parse(text)?;
        if url.target.is_none() {
            return Err(UrlError::NoTarget {
                url: text.to_string(),
            });
        }
        if url.lun.is_none() {
            return Err(UrlError::NoLun {
                url: text.to_string(),
            });
        }
        Ok(url)
    }

    /// Parses `HOST[:PORT]`, with or without the `iscsi://` prefix.
    pub fn parse_portal(text: &str) -> Result<IscsiUrl, UrlError> {
        if text.starts_with("iscsi://") {
            IscsiUrl::parse(text)
        } else {
            IscsiUrl::parse(&format!("iscsi://{text}"))
        }
    }
}

fn split_host_port(url: &str, hostport: &str) -> Result<(String, u16), UrlError> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| UrlError::Bracket {
            url: url.to_string(),
        })?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(UrlError::NoHost(url.to_string()));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(UrlError::Port {
                    url: url.to_string(),
                    port: p.to_string(),
                })
            }
        },
    };
    Ok((host.to_string(), port))
}

impl fmt::Display for IscsiUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "iscsi://")?;
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{}:{}", self.host, self.port)?;
        }
        if let Some(target) = &self.target {
            write!(f, "/{target}")?;
            if let Some(lun) = self.lun {
                write!(f, "/{lun}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_url_with_chap() {
        let url =
            IscsiUrl::parse("iscsi://alice%s3cr@t@10.0.0.1:3261/iqn.2001-04.com.example:disk/2")
                .unwrap();
        assert_eq!(url.user.as_deref(), Some("alice"));
        assert_eq!(url.secret.as_deref(), Some("s3cr@t"));
        assert_eq!(url.host, "10.0.0.1");
        assert_eq!(url.port, 3261);
        assert_eq!(url.target.as_deref(), Some("iqn.2001-04.com.example:disk"));
        assert_eq!(url.lun, Some(2));
    }

    #[test]
    fn a_subsidiary_lu_is_endpoint_colon_secondary() {
        let url = IscsiUrl::parse("iscsi://127.0.0.1/iqn.x:y/5:16383").unwrap();
        let lun = crate::scsi::Lun::from_u64(url.lun.unwrap());
        assert_eq!(Some(lun), crate::scsi::Lun::subsidiary(5, 16383));
        // What Display prints parses back to the same LU.
        let again = IscsiUrl::parse(&url.to_string()).unwrap();
        assert_eq!(again.lun, url.lun);
        assert!(matches!(
            IscsiUrl::parse("iscsi://127.0.0.1/iqn.x:y/5:0"),
            Err(UrlError::Lun { .. })
        ));
    }

    #[test]
    fn ipv6_default_port_and_query() {
        let url =
            IscsiUrl::parse("iscsi://[::1]/iqn.x:y/0?target_user=t&target_password=p").unwrap();
        assert_eq!(url.host, "::1");
        assert_eq!(url.port, 3260);
        assert_eq!(url.target_user.as_deref(), Some("t"));
        assert_eq!(url.target_secret.as_deref(), Some("p"));
        assert_eq!(url.to_string(), "iscsi://[::1]:3260/iqn.x:y/0");
    }

    #[test]
    fn errors_name_the_fault() {
        assert!(matches!(
            IscsiUrl::parse("http://x"),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            IscsiUrl::parse("iscsi://h:99999/t/0"),
            Err(UrlError::Port { .. })
        ));
        assert!(matches!(
            IscsiUrl::parse("iscsi://h/t/x"),
            Err(UrlError::Lun { .. })
        ));
        assert!(matches!(
            IscsiUrl::parse("iscsi://[::1/t/0"),
            Err(UrlError::Bracket { .. })
        ));
        assert!(matches!(
            IscsiUrl::parse("iscsi:///t/0"),
            Err(UrlError::NoHost(_))
        ));
        assert!(matches!(
            IscsiUrl::parse_lun_url("iscsi://h/t"),
            Err(UrlError::NoLun { .. })
        ));
        assert!(matches!(
            IscsiUrl::parse_lun_url("iscsi://h"),
            Err(UrlError::NoTarget { .. })
        ));
        assert!(matches!(
            IscsiUrl::parse("iscsi://h/t/0?bogus=1"),
            Err(UrlError::Argument { .. })
        ));
    }

    #[test]
    fn debug_hides_the_secrets() {
        let url = IscsiUrl::parse("iscsi://u%topsecret@h/t/0?target_password=alsosecret").unwrap();
        let printed = format!("{url:?}");
        assert!(!printed.contains("topsecret") && !printed.contains("alsosecret"));
        assert!(printed.contains("<hidden>"));
    }

    proptest::proptest! {
        #[test]
        fn display_parses_back_to_the_same_portal_target_and_lun(
            host in "[a-z][a-z0-9.-]{0,20}",
            port in 1u16..,
            target in "iqn\\.[0-9]{4}-[0-9]{2}\\.[a-z.]{1,12}:[a-z0-9._-]{1,12}",
            lun in proptest::option::of(0u64..16384),
            user in proptest::option::of("[a-z]{1,8}"),
        ) {
            let original = IscsiUrl {
                user,
                secret: None,
                host,
                port,
                target: Some(target),
                lun,
                target_user: None,
                target_secret: None,
                header_digest: None,
            };
            let parsed = IscsiUrl::parse(&original.to_string()).unwrap();
            proptest::prop_assert_eq!(parsed, original);
        }

        #[test]
        fn any_text_parses_or_fails_without_panicking(text in "iscsi://\\PC{0,60}") {
            let _ = IscsiUrl::parse(&text);
        }
    }

    #[test]
    fn portal_without_scheme() {
        let url = IscsiUrl::parse_portal("127.0.0.1:3262").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("127.0.0.1", 3262));
    }
}
