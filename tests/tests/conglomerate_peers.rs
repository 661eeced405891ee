//! sg3_utils judges our conglomerate LUNs: every LUN REPORT LUNS lists for endpoints at
//! LUN 0, 255, 256 and 1023 with secondary IDs 1, 16,383 and 2^24 - 1 (the largest
//! extended flat space carries) is decoded by `sg_luns --test=HEX --lu_cong` the way our
//! own decoder (`Lun::address`) reads it.

use std::process::Command;
use std::time::Duration;

use datapath::scsi::decode::ReportLuns;
use datapath::scsi::LunAddress;
use gateway::disk::conglomerate::{report_luns, Inventory, Role};
use system_tests::process::run_command;

const ENDPOINTS: [u16; 4] = [0, 255, 256, 1023];
const SECONDARIES: [u32; 3] = [1, 16383, 0xff_ffff];

struct Endpoints;

impl Inventory for Endpoints {
    fn for_each_unit(&self, f: &mut dyn FnMut(u16, Role)) {
        for e in ENDPOINTS {
            f(e, Role::Endpoint);
        }
    }
    fn for_each_subsidiary(&self, endpoint: Option<u16>, f: &mut dyn FnMut(u16, u32)) {
        for e in ENDPOINTS
            .into_iter()
            .filter(|e| endpoint.is_none_or(|x| x == *e))
        {
            for s in SECONDARIES {
                f(e, s);
            }
        }
    }
}

/// What sg_luns prints for one LUN, reduced to (administrative, subsidiary).
fn sg_luns_decode(field: [u8; 8]) -> (Option<u64>, Option<u64>) {
    let hex: String = field.iter().map(|b| format!("{b:02x}")).collect();
    let mut command = Command::new("sg_luns");
    command.arg(format!("--test={hex}")).arg("--lu_cong");
    let output = run_command(command, Duration::from_secs(10));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "sg_luns {hex}: {text}");
    assert!(
        !text.contains("unexpected"),
        "sg_luns {hex} complains: {text}"
    );
    let number_after = |label: &str, from: &str| -> Option<u64> {
        let at = from.find(label)?;
        let rest = &from[at + label.len()..];
        let digits: String = rest
            .trim_start_matches(|c: char| !c.is_ascii_digit())
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    };
    let (admin, sub) = match text.split_once(">>Subsidiary element:") {
        Some((admin, sub)) => (admin.to_string(), Some(sub.to_string())),
        None => (text.to_string(), None),
    };
    let admin = number_after("Simple lu addressing:", &admin);
    let sub = sub.and_then(|s| {
        number_after("Simple lu addressing:", &s)
            .or_else(|| number_after("Extended flat space addressing: lun=", &s))
    });
    (admin, sub)
}

#[test]
fn sg_luns_decodes_our_report_luns_like_our_decoder() {
    system_tests::require_tools!("sg_luns");
    let mut cdb = [0u8; 12];
    cdb[0] = 0xa0;
    cdb[2] = 0x02;
    cdb[6..10].copy_from_slice(&65536u32.to_be_bytes());
    let data = report_luns(&cdb, 0, &Endpoints).expect("REPORT LUNS");
    let listed = ReportLuns::decode(&data).expect("our decoder");
    assert_eq!(listed.luns.len(), ENDPOINTS.len() * (1 + SECONDARIES.len()));
    for lun in listed.luns {
        let ours = match lun.address().expect("decodable") {
            LunAddress::Single(e) => (Some(u64::from(e)), None),
            LunAddress::Subsidiary {
                endpoint,
                secondary,
            } => (Some(u64::from(endpoint)), Some(u64::from(secondary))),
        };
        assert_eq!(sg_luns_decode(lun.to_field()), ours, "LUN {lun}");
    }
    // 0x12 at each endpoint lists it and its own subsidiaries only.
    for e in ENDPOINTS {
        cdb[2] = 0x12;
        let data = report_luns(&cdb, u64::from(e), &Endpoints).expect("0x12");
        let listed = ReportLuns::decode(&data).unwrap();
        assert_eq!(listed.luns.len(), 1 + SECONDARIES.len());
        for lun in &listed.luns {
            assert_eq!(sg_luns_decode(lun.to_field()).0, Some(u64::from(e)));
        }
    }
}
