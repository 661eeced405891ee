//! libiscsi's command-line tools as the reference initiator: URLs and output parsers.
//!
//! Facts about libiscsi 1.19 (Debian 12), found by running it:
//! - URL: `iscsi://[user%secret@]host:port[/target-iqn/lun][?target_user=U&target_password=P]`;
//!   the query part asks for mutual CHAP.
//! - Every tool exits 10 when login fails (wrong or missing CHAP: status "Authentication
//!   failure(513)"; unknown target: "Target not found(515)"), 0 on success.
//! - `iscsi-ls -s` prints `Target:IQN Portal:ADDR,TPGT`, then per LUN
//!   `Lun:N    Type:KIND (Size:XM)`. The size is computed from the last LBA, not the block
//!   count, so a 64 MiB LUN shows as `63M`: use [`readcapacity_bytes`] for exact sizes.
//! - `iscsi-ls` hangs against istgt (see [`crate::istgt`]); always run it bounded.

use std::net::SocketAddr;
use std::time::Duration;

use crate::process::{describe_output, run_tool};
use crate::ChapSpec;

/// Bound for one libiscsi tool run against a loopback peer.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(20);

/// A libiscsi URL: the portal, CHAP credentials if any (mutual ones as query arguments), and
/// a target and LUN if any (without them: a discovery URL for `iscsi-ls`).
pub fn iscsi_url(
    portal: SocketAddr,
    chap: Option<&ChapSpec>,
    target: Option<(&str, u64)>,
) -> String {
    let mut url = String::from("iscsi://");
    if let Some(chap) = chap {
        url.push_str(&format!("{}%{}@", chap.user, chap.secret));
    }
    url.push_str(&portal.to_string());
    match target {
        Some((iqn, lun)) => url.push_str(&format!("/{iqn}/{lun}")),
        None => url.push('/'),
    }
    if let Some((user, secret)) = chap.and_then(|chap| chap.mutual.as_ref()) {
        url.push_str(&format!("?target_user={user}&target_password={secret}"));
    }
    url
}

/// One target as `iscsi-ls -s` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsTarget {
    /// The target name.
    pub iqn: String,
    /// The portal text after `Portal:` (`ADDR:PORT,TPGT`).
    pub portal: String,
    /// Its LUNs (empty when login failed or `-s` was not given).
    pub luns: Vec<LsLun>,
}

/// One LUN line of `iscsi-ls -s`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsLun {
    /// The LUN number.
    pub lun: u64,
    /// The peripheral device type name (`DIRECT_ACCESS`, `STORAGE_ARRAY_CONTROLLER`, …).
    pub device_type: String,
    /// The size text (`63M`) for direct-access LUNs.
    pub size: Option<String>,
}

/// Parses `iscsi-ls -s` output. Lines that are neither targets nor LUNs are ignored.
pub fn parse_iscsi_ls(stdout: &str) -> Vec<LsTarget> {
    let mut targets: Vec<LsTarget> = Vec::new();
    for line in stdout.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Target:") {
            let (iqn, portal) = match rest.split_once(" Portal:") {
                Some((iqn, portal)) => (iqn.trim(), portal.trim()),
                None => (rest.trim(), ""),
            };
            targets.push(LsTarget {
                iqn: iqn.to_owned(),
                portal: portal.to_owned(),
                luns: Vec::new(),
            });
        } else if let Some(rest) = line.strip_prefix("Lun:") {
            let Some(target) = targets.last_mut() else {
                continue;
            };
            let mut words = rest.split_whitespace();
            let Some(Ok(lun)) = words.next().map(str::parse::<u64>) else {
                continue;
            };
            let remainder: Vec<&str> = words.collect();
            let remainder = remainder.join(" ");
            let device_type = remainder
                .strip_prefix("Type:")
                .and_then(|text| text.split_whitespace().next())
                .unwrap_or_default()
                .to_owned();
            let size = remainder
                .split_once("(Size:")
                .and_then(|(_, text)| text.split_once(')'))
                .map(|(size, _)| size.to_owned());
            target.luns.push(LsLun {
                lun,
                device_type,
                size,
            });
        }
    }
    targets
}

/// Runs `iscsi-ls -s URL` and parses the listing. A failed login to one target is not an
/// error here (that target is listed without LUNs); a failed discovery is.
pub fn iscsi_ls(url: &str) -> Result<Vec<LsTarget>, String> {
    let output = run_tool("iscsi-ls", &["-s", url], TOOL_TIMEOUT);
    let targets = parse_iscsi_ls(&String::from_utf8_lossy(&output.stdout));
    if targets.is_empty() && !output.status.success() {
        return Err(format!("iscsi-ls -s {url}: {}", describe_output(&output)));
    }
    Ok(targets)
}

/// Runs `iscsi-inq URL` (standard INQUIRY) and returns its report.
pub fn inquiry(url: &str) -> Result<String, String> {
    let output = run_tool("iscsi-inq", &[url], TOOL_TIMEOUT);
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!("iscsi-inq {url}: {}", describe_output(&output)))
    }
}

/// The `Peripheral Device Type:` value of an `iscsi-inq` report.
pub fn peripheral_device_type(inquiry_report: &str) -> Option<&str> {
    inquiry_report
        .lines()
        .find_map(|line| line.trim().strip_prefix("Peripheral Device Type:"))
        .map(str::trim)
}

/// Runs `iscsi-readcapacity16 URL` and returns the capacity in bytes (`Total size:`).
pub fn readcapacity_bytes(url: &str) -> Result<u64, String> {
    let output = run_tool("iscsi-readcapacity16", &[url], TOOL_TIMEOUT);
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "iscsi-readcapacity16 {url}: {}",
            describe_output(&output)
        ));
    }
    stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("Total size:"))
        .and_then(|size| size.trim().parse().ok())
        .ok_or_else(|| format!("iscsi-readcapacity16 {url}: no 'Total size:' in {stdout:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_credentials_target_and_mutual_query() {
        let portal: SocketAddr = "127.0.0.1:3260".parse().unwrap();
        assert_eq!(iscsi_url(portal, None, None), "iscsi://127.0.0.1:3260/");
        assert_eq!(
            iscsi_url(portal, None, Some(("iqn.x:y", 1))),
            "iscsi://127.0.0.1:3260/iqn.x:y/1"
        );
        let chap = ChapSpec::new("u", "s").with_mutual("tu", "ts");
        assert_eq!(
            iscsi_url(portal, Some(&chap), Some(("iqn.x:y", 0))),
            "iscsi://u%s@127.0.0.1:3260/iqn.x:y/0?target_user=tu&target_password=ts"
        );
    }

    #[test]
    fn iscsi_ls_listing_is_parsed_into_targets_and_luns() {
        let stdout = "Target:iqn.2024-01.test:t1 Portal:127.0.0.1:39261,1\n\
                      Lun:0    Type:STORAGE_ARRAY_CONTROLLER\n\
                      Lun:1    Type:DIRECT_ACCESS (Size:63M)\n\
                      Target:iqn.2024-01.test:t2 Portal:127.0.0.1:39261,1\n";
        let targets = parse_iscsi_ls(stdout);
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[0].iqn, "iqn.2024-01.test:t1");
        assert_eq!(targets[0].portal, "127.0.0.1:39261,1");
        assert_eq!(
            targets[0].luns,
            vec![
                LsLun {
                    lun: 0,
                    device_type: "STORAGE_ARRAY_CONTROLLER".into(),
                    size: None
                },
                LsLun {
                    lun: 1,
                    device_type: "DIRECT_ACCESS".into(),
                    size: Some("63M".into())
                },
            ]
        );
        assert!(targets[1].luns.is_empty());
        assert!(parse_iscsi_ls("Lun:1 Type:DIRECT_ACCESS\ngarbage").is_empty());
    }

    #[test]
    fn device_type_is_read_from_an_inquiry_report() {
        let report = "Peripheral Qualifier:CONNECTED\nPeripheral Device Type:DIRECT_ACCESS\n";
        assert_eq!(peripheral_device_type(report), Some("DIRECT_ACCESS"));
        assert_eq!(peripheral_device_type("nothing"), None);
    }
}
