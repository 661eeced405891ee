//! `iscsi-ctl` as a user runs it, checked against libiscsi's `iscsi-ls` and `iscsi-inq` on the
//! same real targets, and against `tshark`'s dissector for what it puts on the wire.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use system_tests::{
    run_tool, tshark_iscsi_opcodes, tshark_iscsi_problems, workspace_binary, Capture, ChapSpec,
    Istgt, LunSpec, TargetSpec, Tgt,
};

/// The `iscsi-ctl` binary of this workspace, built once per test run.
fn iscsi_ctl() -> PathBuf {
    workspace_binary("tools", "iscsi-ctl")
}

fn ctl(args: &[&str]) -> Output {
    let path = iscsi_ctl().to_string_lossy().into_owned();
    run_tool(&path, args, Duration::from_secs(30))
}

fn ctl_json(args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = ctl(&all);
    assert!(
        out.status.success(),
        "iscsi-ctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("iscsi-ctl --json prints JSON")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn spec(iqn: &str, sizes_mib: &[u64]) -> TargetSpec {
    TargetSpec {
        iqn: iqn.to_string(),
        luns: sizes_mib
            .iter()
            .map(|m| LunSpec {
                size_bytes: m << 20,
            })
            .collect(),
        chap: None,
    }
}

/// libiscsi's name for a peripheral device type, as `iscsi-ls` and `iscsi-inq` print it.
fn libiscsi_type_name(device_type: u64) -> &'static str {
    match device_type {
        0x00 => "DIRECT_ACCESS",
        0x01 => "SEQUENTIAL_ACCESS",
        0x05 => "MMC",
        0x0c => "STORAGE_ARRAY_CONTROLLER",
        0x0d => "SES",
        _ => "OTHER",
    }
}

/// `Lun:N    Type:NAME (Size:..)` lines of `iscsi-ls -s` -> (N, NAME).
fn iscsi_ls_luns(output: &str) -> Vec<(u64, String)> {
    output
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line.strip_prefix("Lun:")?;
            let (number, rest) = rest.split_once(char::is_whitespace)?;
            let kind = rest.trim().strip_prefix("Type:")?;
            let kind = kind.split_whitespace().next()?;
            Some((number.parse().ok()?, kind.to_string()))
        })
        .collect()
}

fn compare_luns_with_iscsi_ls(portal: std::net::SocketAddr, iqn: &str) {
    let url = format!("iscsi://{portal}/{iqn}/0");
    let ours = ctl_json(&["luns", &url]);
    let mut ours: Vec<(u64, String)> = ours["luns"]
        .as_array()
        .expect("luns array")
        .iter()
        .map(|l| {
            (
                l["lun"].as_u64().expect("lun number"),
                libiscsi_type_name(l["device_type"].as_u64().expect("type")).to_string(),
            )
        })
        .collect();
    let ls = run_tool(
        "iscsi-ls",
        &["-s", &format!("iscsi://{portal}")],
        Duration::from_secs(20),
    );
    assert!(ls.status.success(), "iscsi-ls failed: {}", text(&ls));
    let ls_text = String::from_utf8_lossy(&ls.stdout).into_owned();
    // iscsi-ls prints every target; keep the block under ours.
    let block: String = ls_text
        .split("Target:")
        .find(|b| b.starts_with(iqn) || b.starts_with(&format!("{iqn} ")))
        .unwrap_or_default()
        .to_string();
    let mut theirs = iscsi_ls_luns(&block);
    ours.sort();
    theirs.sort();
    assert!(
        !theirs.is_empty(),
        "iscsi-ls listed no LUNs for {iqn}: {ls_text}"
    );
    assert_eq!(
        ours, theirs,
        "iscsi-ctl and iscsi-ls disagree on the LUNs of {iqn}"
    );
}

/// `Key:Value` lines of `iscsi-inq` (first occurrence of each key).
fn iscsi_inq_fields(output: &str) -> std::collections::HashMap<String, String> {
    let mut fields = std::collections::HashMap::new();
    for line in output.lines() {
        if let Some((k, v)) = line.split_once(':') {
            fields
                .entry(k.trim().to_string())
                .or_insert_with(|| v.trim().to_string());
        }
    }
    fields
}

fn compare_inquiry_with_iscsi_inq(portal: std::net::SocketAddr, iqn: &str, lun: u64) {
    let url = format!("iscsi://{portal}/{iqn}/{lun}");
    let ours = ctl_json(&["inquiry", &url]);
    let inq = run_tool("iscsi-inq", &[&url], Duration::from_secs(20));
    assert!(inq.status.success(), "iscsi-inq failed: {}", text(&inq));
    let theirs = iscsi_inq_fields(&String::from_utf8_lossy(&inq.stdout));
    let field = |k: &str| {
        theirs
            .get(k)
            .cloned()
            .unwrap_or_else(|| panic!("iscsi-inq printed no {k}"))
    };
    assert_eq!(ours["vendor"].as_str(), Some(field("Vendor").as_str()));
    assert_eq!(ours["product"].as_str(), Some(field("Product").as_str()));
    assert_eq!(ours["revision"].as_str(), Some(field("Revision").as_str()));
    assert_eq!(
        libiscsi_type_name(ours["device_type"].as_u64().expect("type")),
        field("Peripheral Device Type")
    );
    let version: u64 = field("Version")
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("iscsi-inq Version");
    assert_eq!(ours["version"].as_u64(), Some(version));
    let flag = |b: &Value| if b.as_bool() == Some(true) { "1" } else { "0" };
    assert_eq!(flag(&ours["hisup"]), field("HiSup"));
    assert_eq!(flag(&ours["cmdque"]), field("CmdQue"));
    assert_eq!(flag(&ours["protect"]), field("Protect"));
    assert_eq!(
        ours["tpgs"].as_u64().map(|t| t.to_string()),
        Some(field("TPGS"))
    );
}

#[test]
fn iscsi_ctl_agrees_with_libiscsi_on_tgt() {
    let iqn = "iqn.2026-11.test.tgt:agree";
    let tgt = Tgt::start(&[spec(iqn, &[16, 8])]).expect("tgtd starts");
    compare_luns_with_iscsi_ls(tgt.portal(), iqn);
    let first = tgt.first_data_lun();
    compare_inquiry_with_iscsi_inq(tgt.portal(), iqn, first);
    compare_inquiry_with_iscsi_inq(tgt.portal(), iqn, first + 1);
    let cap = ctl_json(&[
        "readcap",
        &format!("iscsi://{}/{iqn}/{first}", tgt.portal()),
    ]);
    assert_eq!(cap["bytes"].as_u64(), Some(16 << 20));

    let discovered = ctl_json(&["discover", &tgt.portal().to_string()]);
    let names: Vec<&str> = discovered["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, vec![iqn]);
}

/// `iscsi-ls` hangs against istgt (istgt advances ExpCmdSN on libiscsi's immediate Text
/// request and libiscsi then never sends its Logout), so LUNs are checked against the
/// configuration here and INQUIRY against `iscsi-inq`.
#[test]
fn iscsi_ctl_agrees_with_libiscsi_on_istgt() {
    let istgt = Istgt::start(&[spec("agree", &[16, 8])]).expect("istgt starts");
    let iqn = istgt.iqn(0).to_string();
    let first = istgt.first_data_lun();
    let ours = ctl_json(&["luns", &format!("iscsi://{}/{iqn}/{first}", istgt.portal())]);
    let listed: Vec<(u64, u64)> = ours["luns"]
        .as_array()
        .expect("luns")
        .iter()
        .map(|l| {
            (
                l["lun"].as_u64().unwrap_or(999),
                l["bytes"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(listed, vec![(first, 16 << 20), (first + 1, 8 << 20)]);
    compare_inquiry_with_iscsi_inq(istgt.portal(), &iqn, first);
    compare_inquiry_with_iscsi_inq(istgt.portal(), &iqn, first + 1);
}

#[test]
fn iscsi_ctl_write_then_read_round_trips_through_files() {
    let iqn = "iqn.2026-11.test.tgt:files";
    let tgt = Tgt::start(&[spec(iqn, &[8])]).expect("tgtd starts");
    let url = format!("iscsi://{}/{iqn}/{}", tgt.portal(), tgt.first_data_lun());
    let dir = std::env::temp_dir().join(format!("iscsi-ctl-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let input = dir.join("in.bin");
    let output = dir.join("out.bin");
    let data: Vec<u8> = (0..(3 << 20) + 512)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&input, &data).expect("write input");
    let w = ctl(&[
        "write",
        &url,
        "--lba",
        "7",
        "--in",
        &input.to_string_lossy(),
    ]);
    assert!(w.status.success(), "write: {}", text(&w));
    let blocks = (data.len() / 512).to_string();
    let r = ctl(&[
        "read",
        &url,
        "--lba",
        "7",
        "--blocks",
        &blocks,
        "--out",
        &output.to_string_lossy(),
    ]);
    assert!(r.status.success(), "read: {}", text(&r));
    assert!(
        std::fs::read(&output).expect("read output") == data,
        "read back differs"
    );
    // A range past the end is refused before any I/O, naming the LUN's size.
    let past = ctl(&["read", &url, "--lba", "16383", "--blocks", "2"]);
    assert!(!past.status.success());
    assert!(text(&past).contains("past the end"), "{}", text(&past));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn iscsi_ctl_failures_name_their_cause() {
    let iqn = "iqn.2026-11.test.tgt:causes";
    let mut chap = spec(iqn, &[8]);
    chap.chap = Some(ChapSpec {
        user: "carol".into(),
        secret: "carol-secret-123".into(),
        mutual: None,
    });
    let tgt = Tgt::start(&[chap]).expect("tgtd starts");
    let portal = tgt.portal();

    let unknown = ctl(&[
        "login",
        &format!("iscsi://carol%carol-secret-123@{portal}/iqn.2026-11.test:nope/0"),
    ]);
    assert!(!unknown.status.success());
    assert!(
        text(&unknown).contains("0x0203"),
        "unknown target: {}",
        text(&unknown)
    );
    assert!(
        text(&unknown).contains("not found"),
        "unknown target: {}",
        text(&unknown)
    );

    let bad_secret = ctl(&[
        "login",
        &format!("iscsi://carol%wrong-secret-000@{portal}/{iqn}/0"),
    ]);
    assert!(!bad_secret.status.success());
    assert!(
        text(&bad_secret).contains("0x0201"),
        "bad secret: {}",
        text(&bad_secret)
    );
    assert!(
        text(&bad_secret).contains("authentication"),
        "bad secret: {}",
        text(&bad_secret)
    );

    let good = ctl(&[
        "login",
        &format!("iscsi://carol%carol-secret-123@{portal}/{iqn}/0"),
    ]);
    assert!(good.status.success(), "good secret: {}", text(&good));

    let lun_url = format!(
        "iscsi://carol%carol-secret-123@{portal}/{iqn}/{}",
        tgt.first_data_lun()
    );
    let bad_page = ctl(&["inquiry", &lun_url, "--vpd", "0x99"]);
    assert!(!bad_page.status.success());
    assert!(
        text(&bad_page).contains("ILLEGAL REQUEST: INVALID FIELD IN CDB (0x24/0x00)"),
        "check condition: {}",
        text(&bad_page)
    );
    let missing_lun = format!("iscsi://carol%carol-secret-123@{portal}/{iqn}/9");
    let no_lun = ctl(&["readcap", &missing_lun]);
    assert!(
        text(&no_lun).contains("READ CAPACITY(16)") && text(&no_lun).contains("(0x25/0x00)"),
        "missing LUN: {}",
        text(&no_lun)
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_port = closed.local_addr().expect("addr").port();
    drop(closed);
    let refused = ctl(&["discover", &format!("127.0.0.1:{closed_port}")]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).to_lowercase().contains("refused"),
        "refused: {}",
        text(&refused)
    );

    let bad_url = ctl(&["inquiry", "iscsi://127.0.0.1/only-a-target"]);
    assert!(!bad_url.status.success());
    assert!(
        text(&bad_url).contains("names no LUN"),
        "{}",
        text(&bad_url)
    );
}

#[test]
fn tshark_finds_no_malformed_pdu_in_our_session() {
    let iqn = "iqn.2026-11.test.tgt:wire";
    let tgt = Tgt::start(&[spec(iqn, &[8])]).expect("tgtd starts");
    tgt.allow_digests_and_unsolicited_data(1)
        .expect("tgt parameters");
    let portal = tgt.portal();
    let url = format!("iscsi://{portal}/{iqn}/{}", tgt.first_data_lun());
    let dir = std::env::temp_dir().join(format!("iscsi-ctl-wire-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let input = dir.join("in.bin");
    std::fs::write(&input, vec![0x5au8; 300 * 1024]).expect("input");

    let capture = Capture::start(portal.port());
    let runs: Vec<Vec<String>> = vec![
        vec!["discover".into(), portal.to_string()],
        vec!["luns".into(), url.clone()],
        vec![
            "--initial-r2t".into(),
            "no".into(),
            "--max-burst-length".into(),
            "65536".into(),
            "write".into(),
            url.clone(),
            "--lba".into(),
            "0".into(),
            "--in".into(),
            input.to_string_lossy().into(),
        ],
        vec![
            "read".into(),
            url.clone(),
            "--lba".into(),
            "0".into(),
            "--blocks".into(),
            "600".into(),
            "--out".into(),
            dir.join("out.bin").to_string_lossy().into(),
        ],
    ];
    for args in &runs {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = ctl(&args);
        assert!(out.status.success(), "iscsi-ctl {args:?}: {}", text(&out));
    }
    let pcap = capture.stop();
    let opcodes =
        tshark_iscsi_opcodes(pcap.path(), portal.port()).expect("tshark reads the capture");
    // Login, text, SCSI command, Data-Out, logout at least, and their answers.
    for opcode in [0x03, 0x04, 0x01, 0x05, 0x06, 0x23, 0x24, 0x21, 0x25, 0x26] {
        assert!(
            opcodes.contains(&opcode),
            "tshark saw no PDU with opcode {opcode:#04x}"
        );
    }
    let problems = tshark_iscsi_problems(pcap.path(), portal.port());
    assert!(
        problems.is_empty(),
        "tshark found problems in our session: {problems:#?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
