//! Smoke tests of the peer harness: the targets it starts are real, reachable, configured as
//! asked, isolated from each other, and judged by tools this project did not write
//! (libiscsi's `iscsi-ls`, `iscsi-inq`, `iscsi-readcapacity16`; Wireshark's dissector).

use std::collections::BTreeSet;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use datapath::pdu::Opcode;
use system_tests::libiscsi::{
    inquiry, iscsi_ls, iscsi_url, peripheral_device_type, readcapacity_bytes,
};
use system_tests::{
    free_port, require_tools, run_tool, tool_verdict, tshark_iscsi_key_values,
    tshark_iscsi_opcodes, tshark_iscsi_problems, Capture, ChapSpec, Istgt, Peer, TargetSpec, Tgt,
    ToolVerdict,
};

const MIB: u64 = 1024 * 1024;

fn two_targets() -> Vec<TargetSpec> {
    vec![
        // An odd size (not a whole MiB) shows sizes are exact, not rounded.
        TargetSpec::new(
            "iqn.2024-01.invalid.system-tests:alpha",
            &[MIB, 2 * MIB + 512],
        ),
        TargetSpec::new("iqn.2024-01.invalid.system-tests:beta", &[3 * MIB]),
    ]
}

fn chap_target() -> Vec<TargetSpec> {
    vec![
        TargetSpec::new("iqn.2024-01.invalid.system-tests:guarded", &[MIB]).with_chap(
            ChapSpec::new("alice", "alicesecret12").with_mutual("guard", "guardsecret34"),
        ),
    ]
}

fn url(peer: &dyn Peer, chap: Option<&ChapSpec>, target: usize, lun: usize) -> String {
    iscsi_url(
        peer.portal(),
        chap,
        Some((peer.iqn(target), peer.lun_number(lun))),
    )
}

/// Every configured LUN answers READ CAPACITY(16) with exactly its configured size; the first
/// answers INQUIRY as a direct-access device; a LUN past the last configured one does not
/// answer. (One login per check: istgt takes about a second per login.)
fn assert_luns_match_specs(peer: &dyn Peer, specs: &[TargetSpec]) {
    for (target, spec) in specs.iter().enumerate() {
        for (lun, lun_spec) in spec.luns.iter().enumerate() {
            let at = url(peer, None, target, lun);
            let size = readcapacity_bytes(&at).unwrap_or_else(|e| panic!("{e}\n{}", peer.log()));
            assert_eq!(size, lun_spec.size_bytes, "capacity of {at}");
            let file = fs::metadata(peer.lun_path(target, lun)).expect("LUN file exists");
            assert_eq!(file.len(), lun_spec.size_bytes, "backing file of {at}");
        }
    }
    let first = url(peer, None, 0, 0);
    let report = inquiry(&first).unwrap_or_else(|e| panic!("{e}\n{}", peer.log()));
    assert_eq!(
        peripheral_device_type(&report),
        Some("DIRECT_ACCESS"),
        "{first}"
    );
    let past_end = url(peer, None, 0, specs[0].luns.len());
    assert!(
        readcapacity_bytes(&past_end).is_err(),
        "{past_end} answered READ CAPACITY although no such LUN was configured"
    );
}

/// CHAP with the right secret logs in; no credentials, a wrong secret, or a wrong mutual
/// secret (the target cannot prove itself) fail.
fn assert_chap_enforced(peer: &dyn Peer, chap: &ChapSpec) {
    let one_way = ChapSpec::new(&chap.user, &chap.secret);
    let wrong_secret = ChapSpec::new(&chap.user, "wrongsecret99");
    let (target_user, target_secret) = chap.mutual.clone().expect("the spec has mutual CHAP");
    let wrong_mutual = one_way.clone().with_mutual(&target_user, "notthesecret1");
    assert_ne!(target_secret, "notthesecret1");

    inquiry(&url(peer, Some(&one_way), 0, 0))
        .unwrap_or_else(|e| panic!("one-way CHAP with the right secret: {e}\n{}", peer.log()));
    inquiry(&url(peer, Some(chap), 0, 0))
        .unwrap_or_else(|e| panic!("mutual CHAP with the right secrets: {e}\n{}", peer.log()));
    for (what, credentials) in [
        ("no credentials", None),
        ("a wrong secret", Some(&wrong_secret)),
        ("a wrong mutual secret", Some(&wrong_mutual)),
    ] {
        let error = inquiry(&url(peer, credentials, 0, 0))
            .err()
            .unwrap_or_else(|| panic!("{} let an initiator in with {what}", peer.software()));
        assert!(
            error.contains("status exit status: 10"),
            "login with {what} should fail as a login failure (exit 10): {error}"
        );
    }
}

/// Captures one `iscsi-inq` session and has Wireshark judge it.
fn assert_inquiry_session_decodes_cleanly(peer: &dyn Peer) {
    let port = peer.portal().port();
    let capture = Capture::start(port);
    inquiry(&url(peer, None, 0, 0)).unwrap_or_else(|e| panic!("{e}\n{}", peer.log()));
    let pcap = capture.stop();
    let opcodes = tshark_iscsi_opcodes(&pcap, port).expect("tshark reads the capture");
    for expected in [
        Opcode::LoginRequest,
        Opcode::LoginResponse,
        Opcode::ScsiCommand,
        Opcode::ScsiResponse,
    ]
    .map(|opcode| opcode as u8)
    {
        assert!(
            opcodes.contains(&expected),
            "opcode {expected:#04x} missing from the PDUs Wireshark saw: {opcodes:02x?}"
        );
    }
    let problems = tshark_iscsi_problems(&pcap, port);
    assert!(
        problems.is_empty(),
        "{} session: {problems:#?}",
        peer.software()
    );
}

fn assert_stops_cleanly(pid: u32, dir: &Path, portal: SocketAddr) {
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "daemon {pid} still running"
    );
    assert!(!dir.exists(), "{} was not removed", dir.display());
    assert!(
        TcpStream::connect_timeout(&portal, Duration::from_millis(500)).is_err(),
        "{portal} still accepts connections"
    );
}

#[test]
fn tgt_discovery_lists_exactly_the_configured_targets_and_luns() {
    require_tools!("tgtd", "tgtadm", "iscsi-ls");
    let specs = two_targets();
    let tgt = Tgt::start(&specs).expect("tgt starts");
    let listed = iscsi_ls(&iscsi_url(tgt.portal(), None, None))
        .unwrap_or_else(|e| panic!("{e}\n{}", tgt.log()));
    let names: BTreeSet<&str> = listed.iter().map(|target| target.iqn.as_str()).collect();
    let expected: BTreeSet<&str> = specs.iter().map(|spec| spec.iqn.as_str()).collect();
    assert_eq!(names, expected);
    assert_eq!(
        listed.len(),
        specs.len(),
        "a target was listed twice: {listed:?}"
    );
    for target in &listed {
        let spec = specs
            .iter()
            .find(|spec| spec.iqn == target.iqn)
            .expect("listed");
        assert!(
            target.portal.starts_with(&tgt.portal().to_string()),
            "{target:?}"
        );
        // tgt: the controller at LUN 0, then the backing stores from LUN 1.
        let luns: Vec<(u64, &str)> = target
            .luns
            .iter()
            .map(|lun| (lun.lun, lun.device_type.as_str()))
            .collect();
        let mut expected = vec![(0, "STORAGE_ARRAY_CONTROLLER")];
        expected.extend((0..spec.luns.len()).map(|lun| (tgt.lun_number(lun), "DIRECT_ACCESS")));
        assert_eq!(luns, expected, "{}", target.iqn);
    }
}

#[test]
fn tgt_luns_start_at_one_with_their_exact_sizes() {
    require_tools!("tgtd", "tgtadm", "iscsi-inq", "iscsi-readcapacity16");
    let specs = two_targets();
    let tgt = Tgt::start(&specs).expect("tgt starts");
    assert_eq!(tgt.first_data_lun(), 1);
    let controller = iscsi_url(tgt.portal(), None, Some((tgt.iqn(0), 0)));
    let report = inquiry(&controller).expect("LUN 0 answers INQUIRY");
    assert_eq!(
        peripheral_device_type(&report),
        Some("STORAGE_ARRAY_CONTROLLER")
    );
    assert_luns_match_specs(&tgt, &specs);
}

#[test]
fn tgt_chap_admits_the_right_secret_only() {
    require_tools!("tgtd", "tgtadm", "iscsi-inq", "iscsi-ls");
    let specs = chap_target();
    let tgt = Tgt::start(&specs).expect("tgt starts");
    assert_chap_enforced(&tgt, specs[0].chap.as_ref().expect("spec has CHAP"));
    // Discovery is open, but listing LUNs needs a login: a wrong secret lists none.
    let wrong = ChapSpec::new("alice", "wrongsecret99");
    let listed = iscsi_ls(&iscsi_url(tgt.portal(), Some(&wrong), None)).expect("discovery");
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0].luns.is_empty(),
        "LUNs listed despite a wrong secret: {listed:?}"
    );
}

#[test]
fn tgt_inquiry_session_decodes_cleanly_in_wireshark() {
    require_tools!("tgtd", "tgtadm", "iscsi-inq", "dumpcap", "tshark");
    let tgt = Tgt::start(&two_targets()).expect("tgt starts");
    assert_inquiry_session_decodes_cleanly(&tgt);
}

/// `iscsi-ls` hangs against istgt (see `system_tests::istgt`), so its SendTargets reply is
/// read from a capture instead: the discovery exchange itself completes.
#[test]
fn istgt_discovery_lists_exactly_the_configured_targets() {
    require_tools!("istgt", "iscsi-ls", "iscsi-inq", "dumpcap", "tshark");
    let specs = two_targets();
    let istgt = Istgt::start(&specs).expect("istgt starts");
    let port = istgt.portal().port();
    let capture = Capture::start(port);
    let discovery = run_tool(
        "iscsi-ls",
        &[&iscsi_url(istgt.portal(), None, None)],
        Duration::from_secs(3),
    );
    let pcap = capture.stop();
    let keys = tshark_iscsi_key_values(&pcap, port, Opcode::TextResponse as u8).expect("tshark");
    let names: BTreeSet<&str> = keys
        .iter()
        .filter_map(|key| key.strip_prefix("TargetName="))
        .collect();
    let expected: BTreeSet<&str> = (0..specs.len()).map(|target| istgt.iqn(target)).collect();
    assert_eq!(
        names,
        expected,
        "SendTargets reply {keys:?}; iscsi-ls: {discovery:?}\n{}",
        istgt.log()
    );
    let problems = tshark_iscsi_problems(&pcap, port);
    assert!(problems.is_empty(), "{problems:#?}");
    // Full names are announced as configured (no NodeBase prefix)...
    assert_eq!(istgt.iqn(0), specs[0].iqn);
    // ...and every announced name accepts a login, while an unknown one does not.
    for target in 0..specs.len() {
        inquiry(&url(&istgt, None, target, 0)).unwrap_or_else(|e| panic!("{e}\n{}", istgt.log()));
    }
    let unknown = iscsi_url(
        istgt.portal(),
        None,
        Some(("iqn.2024-01.invalid:nobody", 0)),
    );
    assert!(
        inquiry(&unknown).is_err(),
        "istgt accepted a login to an unconfigured target"
    );
}

#[test]
fn istgt_luns_start_at_zero_with_their_exact_sizes() {
    require_tools!("istgt", "iscsi-inq", "iscsi-readcapacity16");
    let specs = two_targets();
    let istgt = Istgt::start(&specs).expect("istgt starts");
    assert_eq!(istgt.first_data_lun(), 0);
    assert_luns_match_specs(&istgt, &specs);
}

#[test]
fn istgt_chap_admits_the_right_secret_only() {
    require_tools!("istgt", "iscsi-inq");
    let specs = chap_target();
    let istgt = Istgt::start(&specs).expect("istgt starts");
    assert_chap_enforced(&istgt, specs[0].chap.as_ref().expect("spec has CHAP"));
}

#[test]
fn istgt_inquiry_session_decodes_cleanly_in_wireshark() {
    require_tools!("istgt", "iscsi-inq", "dumpcap", "tshark");
    let istgt = Istgt::start(&two_targets()).expect("istgt starts");
    assert_inquiry_session_decodes_cleanly(&istgt);
}

#[test]
fn peers_started_together_stay_apart_and_vanish_on_drop() {
    require_tools!("tgtd", "tgtadm", "istgt", "iscsi-readcapacity16");
    // The same target name on three daemons at once: each must serve only its own LUN.
    let name = "iqn.2024-01.invalid.system-tests:same";
    let first = Tgt::start(&[TargetSpec::new(name, &[MIB])]).expect("first tgt");
    let second = Tgt::start(&[TargetSpec::new(name, &[2 * MIB])]).expect("second tgt");
    let third = Istgt::start(&[TargetSpec::new(name, &[3 * MIB])]).expect("istgt");
    let peers: [&dyn Peer; 3] = [&first, &second, &third];
    let ports: BTreeSet<u16> = peers.iter().map(|peer| peer.portal().port()).collect();
    assert_eq!(ports.len(), 3, "portals collide");
    for (peer, size) in peers.iter().zip([MIB, 2 * MIB, 3 * MIB]) {
        assert_eq!(readcapacity_bytes(&url(*peer, None, 0, 0)), Ok(size));
    }
    let leftovers = [
        (first.pid(), first.dir().to_path_buf(), first.portal()),
        (third.pid(), third.dir().to_path_buf(), third.portal()),
    ];
    // Both stop promptly: tgtd through tgtadm (it ignores SIGTERM), istgt by signal.
    let started = Instant::now();
    drop(first);
    let tgt_stop = started.elapsed();
    let started = Instant::now();
    drop(third);
    let istgt_stop = started.elapsed();
    assert!(
        tgt_stop < Duration::from_millis(1500),
        "stopping tgt took {tgt_stop:?}"
    );
    assert!(
        istgt_stop < Duration::from_millis(1500),
        "stopping istgt took {istgt_stop:?}"
    );
    for (pid, dir, portal) in &leftovers {
        assert_stops_cleanly(*pid, dir, *portal);
    }
    // The survivor is untouched by its neighbours going away.
    assert_eq!(readcapacity_bytes(&url(&second, None, 0, 0)), Ok(2 * MIB));
}

#[test]
fn malformed_pdus_are_reported_and_clean_ones_counted() {
    require_tools!("tshark");
    let port = free_port();
    let dir = system_tests::TempDir::new("malformed").expect("temp dir");
    // A Text Command asking SendTargets=All (clean) and a SCSI Command whose one-word AHS
    // claims 100 bytes (malformed).
    let key = b"SendTargets=All\0";
    let mut text_command = vec![0u8; 48];
    text_command[0] = 0x44; // immediate Text Command
    text_command[1] = 0x80; // final
    text_command[7] = key.len() as u8; // DataSegmentLength
    text_command[16..20].copy_from_slice(&1u32.to_be_bytes()); // initiator task tag
    text_command[20..24].copy_from_slice(&[0xff; 4]); // target transfer tag: none
    text_command.extend_from_slice(key);
    let mut bad_command = vec![0u8; 48];
    bad_command[0] = 0x41; // immediate SCSI Command
    bad_command[1] = 0x81; // final, simple task attribute
    bad_command[4] = 1; // TotalAHSLength: one 4-byte word
    bad_command.extend_from_slice(&[0x00, 0x64, 0x01, 0x00]); // AHS length 100, type 1
    let clean = dir.join("clean.pcap");
    let broken = dir.join("broken.pcap");
    fs::write(&clean, pcap_of(port, &[&text_command])).expect("write pcap");
    fs::write(&broken, pcap_of(port, &[&text_command, &bad_command])).expect("write pcap");

    assert_eq!(tshark_iscsi_opcodes(&clean, port), Ok(vec![0x04]));
    assert_eq!(
        tshark_iscsi_key_values(&clean, port, 0x04),
        Ok(vec!["SendTargets=All".to_owned()])
    );
    assert_eq!(tshark_iscsi_problems(&clean, port), Vec::<String>::new());
    let problems = tshark_iscsi_problems(&broken, port);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("frame 2:"), "{problems:?}");
    assert!(problems[0].contains("Malformed"), "{problems:?}");
    // A file tshark cannot read is a problem, not a clean bill.
    let missing = dir.join("missing.pcap");
    assert_eq!(tshark_iscsi_problems(&missing, port).len(), 1);
    assert!(tshark_iscsi_opcodes(&missing, port).is_err());
}

#[test]
fn run_tool_kills_what_overruns_and_reports_what_is_missing() {
    let started = Instant::now();
    let output = run_tool("sleep", &["30"], Duration::from_millis(200));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!output.status.success());
    let output = run_tool(
        "sh",
        &["-c", "echo out; echo err >&2; exit 3"],
        Duration::from_secs(5),
    );
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(output.stdout, b"out\n");
    assert_eq!(output.stderr, b"err\n");
    let output = run_tool("no-such-tool-system-tests", &[], Duration::from_secs(1));
    assert_eq!(output.status.code(), Some(127));
}

#[test]
fn missing_tools_skip_locally_and_fail_under_ci() {
    assert_eq!(tool_verdict(&[], true), ToolVerdict::Run);
    assert_eq!(tool_verdict(&[], false), ToolVerdict::Run);
    assert!(
        matches!(tool_verdict(&["tgtd"], false), ToolVerdict::Skip(notice) if notice.contains("tgtd"))
    );
    assert!(
        matches!(tool_verdict(&["tgtd"], true), ToolVerdict::Fail(reason) if reason.contains("tgtd"))
    );
    assert!(system_tests::tool_available("sh"));
    assert!(!system_tests::tool_available("no-such-tool-system-tests"));
    // free_port hands out a port that is free right now.
    let port = free_port();
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
}

/// A classic pcap (Ethernet link type, as Linux `lo` has) with one TCP segment per payload,
/// from 127.0.0.1:40000 to 127.0.0.1:`port`, sequence numbers running on.
fn pcap_of(port: u16, payloads: &[&[u8]]) -> Vec<u8> {
    let mut file = Vec::new();
    file.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    file.extend_from_slice(&2u16.to_le_bytes());
    file.extend_from_slice(&4u16.to_le_bytes());
    file.extend_from_slice(&[0; 8]); // time zone, accuracy
    file.extend_from_slice(&65535u32.to_le_bytes()); // snap length
    file.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    let mut sequence: u32 = 1;
    for (index, payload) in payloads.iter().enumerate() {
        let mut tcp = Vec::new();
        tcp.extend_from_slice(&40000u16.to_be_bytes());
        tcp.extend_from_slice(&port.to_be_bytes());
        tcp.extend_from_slice(&sequence.to_be_bytes());
        tcp.extend_from_slice(&1u32.to_be_bytes()); // ack
        tcp.extend_from_slice(&[5 << 4, 0x18]); // header length 20, PSH|ACK
        tcp.extend_from_slice(&65535u16.to_be_bytes()); // window
        tcp.extend_from_slice(&[0; 4]); // checksum (not checked), urgent pointer
        tcp.extend_from_slice(payload);
        sequence += payload.len() as u32;
        let total_length = (20 + tcp.len()) as u16;
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&total_length.to_be_bytes());
        ip.extend_from_slice(&[0, 1, 0, 0, 64, 6, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
        let checksum = ipv4_checksum(&ip);
        ip[10..12].copy_from_slice(&checksum.to_be_bytes());
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&tcp);
        file.extend_from_slice(&(index as u32 + 1).to_le_bytes()); // seconds
        file.extend_from_slice(&0u32.to_le_bytes());
        file.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        file.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        file.extend_from_slice(&frame);
    }
    file
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
