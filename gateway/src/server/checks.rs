//! What [`super::start_with`] checks before it opens a LUN or binds a port, so a gateway
//! that cannot serve as configured says why and never starts half-way: iSCSI names (RFC
//! 7143 section 4.2.7), LUN numbers that REPORT LUNS can encode, CHAP secrets of at least
//! 96 bits (RFC 7143 section 12.1.3).

use datapath::names::check_iscsi_name;

use crate::config::MIN_CHAP_SECRET_BYTES;
use crate::session::ChapCredentials;

use super::{ServerError, TargetConfig};

/// LUN numbers end here: REPORT LUNS gives them in SAM's flat space addressing (14 bits),
/// peripheral device addressing below 256; a larger number would come out garbled.
pub const LUN_NUMBER_LIMIT: u64 = 1 << 14;

pub(super) fn check_config(config: &TargetConfig) -> Result<(), ServerError> {
    check_secret("discovery CHAP", config.discovery_chap.as_ref())?;
    for node in &config.targets {
        check_iscsi_name(&node.iqn).map_err(|source| ServerError::Name {
            what: "target name".into(),
            source,
        })?;
        for initiator in node.allowed_initiators.iter().flatten() {
            check_iscsi_name(initiator).map_err(|source| ServerError::Name {
                what: format!("allowed initiator of {}", node.iqn),
                source,
            })?;
        }
        for (lun, _) in &node.luns {
            if *lun >= LUN_NUMBER_LIMIT {
                return Err(ServerError::LunNumber {
                    target: node.iqn.clone(),
                    lun: *lun,
                });
            }
        }
        check_secret(&format!("CHAP of {}", node.iqn), node.chap.as_ref())?;
        check_secret(
            &format!("mutual CHAP of {}", node.iqn),
            node.mutual_chap.as_ref(),
        )?;
    }
    Ok(())
}

fn check_secret(what: &str, credentials: Option<&ChapCredentials>) -> Result<(), ServerError> {
    match credentials {
        Some(c) if c.secret.len() < MIN_CHAP_SECRET_BYTES => Err(ServerError::ShortSecret {
            what: what.to_string(),
            len: c.secret.len(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::TargetNodeConfig;
    use super::*;

    fn config(node: TargetNodeConfig) -> TargetConfig {
        TargetConfig::new("127.0.0.1:0".parse().unwrap(), node)
    }

    fn refused(node: TargetNodeConfig) -> String {
        check_config(&config(node)).unwrap_err().to_string()
    }

    #[test]
    fn names_lun_numbers_and_secrets_are_checked() {
        let good = || TargetNodeConfig::new("iqn.2026-11.test:a", vec![(16383, "ram:1M".into())]);
        assert!(check_config(&config(good())).is_ok());
        let bad_name = TargetNodeConfig {
            iqn: "notaniqn".into(),
            ..good()
        };
        assert!(refused(bad_name).contains("target name: \"notaniqn\" is not an iSCSI name"));
        let mut bad_acl = good();
        bad_acl.allowed_initiators = Some(vec!["iqn.2026-11.test:Host".into()]);
        assert!(refused(bad_acl).contains("upper case"));
        let big_lun = TargetNodeConfig::new("iqn.2026-11.test:a", vec![(99999, "ram:1M".into())]);
        assert!(refused(big_lun)
            .contains("LUN 99999 of iqn.2026-11.test:a: LUN numbers go up to 16383"));
        let mut short = good();
        short.chap = Some(ChapCredentials {
            user: "u".into(),
            secret: b"short".to_vec(),
        });
        assert!(refused(short).contains("CHAP of iqn.2026-11.test:a: secret of 5 bytes"));
    }
}
