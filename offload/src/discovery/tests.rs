//! Discovery against the fixture sysfs trees in `offload/tests/fixtures/sysfs/`.

use super::*;

fn fixture(tree: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sysfs")
        .join(tree)
}

fn only_adapter(tree: &str) -> DiscoveredAdapter {
    let mut adapters = discover(&fixture(tree)).unwrap();
    assert_eq!(adapters.len(), 1, "{adapters:#?}");
    adapters.remove(0)
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let path =
            std::env::temp_dir().join(format!("offload-discovery-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_missing_class_directory_is_an_empty_list() {
    let scratch = Scratch::new("empty");
    assert!(discover(&scratch.0).unwrap().is_empty());
    assert!(discover(&scratch.0.join("no/such/root"))
        .unwrap()
        .is_empty());
}

#[test]
fn this_machine_has_no_offload_adapters_or_lists_them_without_error() {
    // The normal case here: no iSCSI transport loaded, no class directory.
    let adapters = discover_system().unwrap();
    assert!(adapters.iter().all(|a| !a.host.is_empty()));
}

#[test]
fn bnx2i_is_dependent_with_its_netdev() {
    let a = only_adapter("bnx2i");
    assert_eq!(a.host, "host7");
    assert_eq!(a.host_number, Some(7));
    assert_eq!(a.driver.as_deref(), Some("bnx2i"));
    assert_eq!(a.driver_source, Some(DriverSource::ProcName));
    assert_eq!(a.kind, OffloadKind::Dependent);
    assert!(a.is_offload());
    assert_eq!(a.netdev.as_deref(), Some("eth2"));
    assert_eq!(a.hwaddress.as_deref(), Some("00:10:18:9a:4b:c2"));
    assert_eq!(a.ipaddress.as_deref(), Some("10.10.10.21"));
    assert_eq!(a.initiator_name, None);
    assert!(a.ifaces.is_empty());
    assert!(a.unreadable.is_empty());
}

#[test]
fn qedi_cxgb3i_and_cxgb4i_are_dependent() {
    for (tree, host, netdev) in [
        ("qedi", "host3", None),
        ("cxgb3i", "host4", Some("eth4")),
        ("cxgb4i", "host6", Some("enp4s0f4")),
    ] {
        let a = only_adapter(tree);
        assert_eq!(a.host, host);
        assert_eq!(a.driver.as_deref(), Some(tree));
        assert_eq!(a.kind, OffloadKind::Dependent, "{tree}");
        assert_eq!(a.netdev.as_deref(), netdev, "{tree}");
        assert!(a.hwaddress.is_some(), "{tree}");
    }
    let qedi = only_adapter("qedi");
    assert_eq!(
        qedi.initiator_name.as_deref(),
        Some("iqn.1994-05.com.redhat:8c2f3e4b5a6d")
    );
}

#[test]
fn qla4xxx_is_independent_with_its_firmware_ifaces() {
    let a = only_adapter("qla4xxx");
    assert_eq!(a.kind, OffloadKind::Independent);
    assert_eq!(a.netdev, None);
    assert_eq!(
        a.initiator_name.as_deref(),
        Some("iqn.2000-04.com.qlogic:isp8214.000e1e049392.4")
    );
    assert_eq!(a.port_state.as_deref(), Some("LINK_UP"));
    assert_eq!(a.port_speed.as_deref(), Some("10 Gbps"));
    assert_eq!(a.ifaces.len(), 2);
    let v4 = &a.ifaces[0];
    assert_eq!(v4.name, "ipv4-iface-5-0");
    assert_eq!(v4.ip_version, Some(4));
    assert_eq!(v4.iface_number, Some(0));
    assert_eq!(v4.enabled, Some(true));
    assert_eq!(v4.ipaddress.as_deref(), Some("192.168.10.50"));
    assert_eq!(v4.subnet.as_deref(), Some("255.255.255.0"));
    assert_eq!(v4.gateway.as_deref(), Some("192.168.10.1"));
    assert_eq!(v4.bootproto.as_deref(), Some("static"));
    assert_eq!(v4.vlan_id, Some(0));
    assert_eq!(v4.vlan_enabled, Some(false));
    assert_eq!(v4.mtu, Some(9000));
    assert_eq!(v4.port, Some(3260));
    assert_eq!(v4.initiator_name, a.initiator_name);
    let v6 = &a.ifaces[1];
    assert_eq!(v6.ip_version, Some(6));
    assert_eq!(v6.enabled, Some(false));
    assert_eq!(v6.subnet, None);
}

#[test]
fn be2iscsi_is_classified_with_a_note_on_what_it_is() {
    let a = only_adapter("be2iscsi");
    assert_eq!(a.kind, OffloadKind::Dependent);
    let note = a.note.expect("be2iscsi carries a note");
    assert!(note.contains("firmware owns the IP address"), "{note}");
    assert!(a.hardware.contains("OneConnect"));
    assert_eq!(a.ifaces.len(), 2);
    assert_eq!(a.ifaces[0].vlan_id, Some(100));
    assert_eq!(a.ifaces[0].vlan_enabled, Some(true));
    // The kernel prints an unset string as "(null)": not an address.
    assert_eq!(a.ifaces[1].ipaddress, None);
}

#[test]
fn software_hosts_unknown_drivers_and_the_driver_file_fallback() {
    let adapters = discover(&fixture("mixed")).unwrap();
    assert_eq!(adapters.len(), 2);
    let tcp = &adapters[0];
    assert_eq!(tcp.host, "host9");
    assert_eq!(tcp.kind, OffloadKind::Software);
    assert!(!tcp.is_offload());
    assert_eq!(tcp.netdev, None, "(null) is unset");
    assert_eq!(tcp.ipaddress.as_deref(), Some("127.0.0.1"));
    let unknown = &adapters[1];
    assert_eq!(unknown.host, "host11");
    assert_eq!(unknown.driver_source, Some(DriverSource::DriverFile));
    assert_eq!(unknown.kind, OffloadKind::Unknown("newhba9".into()));
    assert_eq!(unknown.kind.to_string(), "unknown (newhba9)");
    assert_eq!(unknown.port_state.as_deref(), Some("LINK_DOWN"));
}

#[test]
fn the_pci_driver_symlink_names_the_driver_when_nothing_else_does() {
    use std::os::unix::fs::symlink;
    let scratch = Scratch::new("symlink");
    let root = &scratch.0;
    // The layout of a real sysfs: the class entry is a symlink into devices/, `device` points
    // at the SCSI host device, whose parent PCI function has the `driver` symlink.
    let function = root.join("devices/pci0000:00/0000:00:03.4");
    let host_dev = function.join("host12");
    fs::create_dir_all(host_dev.join("iscsi_host/host12")).unwrap();
    fs::create_dir_all(root.join("bus/pci/drivers/cxgb4")).unwrap();
    fs::create_dir_all(root.join("class/iscsi_host")).unwrap();
    symlink("../../../bus/pci/drivers/cxgb4", function.join("driver")).unwrap();
    symlink("../../../host12", host_dev.join("iscsi_host/host12/device")).unwrap();
    fs::write(host_dev.join("iscsi_host/host12/netdev"), "enp4s0f4\n").unwrap();
    symlink(
        "../../devices/pci0000:00/0000:00:03.4/host12/iscsi_host/host12",
        root.join("class/iscsi_host/host12"),
    )
    .unwrap();
    let adapters = discover(root).unwrap();
    assert_eq!(adapters.len(), 1);
    let a = &adapters[0];
    assert_eq!(a.driver.as_deref(), Some("cxgb4i"));
    assert_eq!(
        a.driver_source,
        Some(DriverSource::PciDriver("cxgb4".into()))
    );
    assert_eq!(a.kind, OffloadKind::Dependent);
    assert_eq!(a.netdev.as_deref(), Some("enp4s0f4"));
}

#[test]
fn an_attribute_that_fails_to_read_is_recorded_not_fatal() {
    let scratch = Scratch::new("unreadable");
    let host = scratch.0.join("class/iscsi_host/host1");
    fs::create_dir_all(&host).unwrap();
    fs::write(host.join("driver"), "qla4xxx\n").unwrap();
    // A directory where an attribute file should be: reading it fails (EISDIR).
    fs::create_dir_all(host.join("hwaddress")).unwrap();
    let adapters = discover(&scratch.0).unwrap();
    let a = &adapters[0];
    assert_eq!(a.kind, OffloadKind::Independent);
    assert_eq!(a.hwaddress, None);
    assert_eq!(a.unreadable.len(), 1, "{:?}", a.unreadable);
    assert!(a.unreadable[0].0.ends_with("hwaddress"));
}

#[test]
fn a_host_without_any_driver_hint_is_unknown() {
    let scratch = Scratch::new("nodriver");
    fs::create_dir_all(scratch.0.join("class/iscsi_host/host0")).unwrap();
    let a = &discover(&scratch.0).unwrap()[0];
    assert_eq!(a.driver, None);
    assert_eq!(a.kind, OffloadKind::Unknown(String::new()));
}

#[test]
fn names_and_values_parse() {
    assert_eq!(parse_iface_name("ipv4-iface-5-0"), Some((4, 5, 0)));
    assert_eq!(parse_iface_name("ipv6-iface-12-3"), Some((6, 12, 3)));
    assert_eq!(parse_iface_name("ipv4-iface-5"), None);
    assert_eq!(parse_iface_name("eth0"), None);
    assert_eq!(host_number("host17"), Some(17));
    assert_eq!(host_number("hostx"), None);
    assert_eq!(normalize(" x \n").as_deref(), Some("x"));
    assert_eq!(normalize("<NULL>\n"), None);
    assert_eq!(parse_flag("Enabled"), Some(true));
    assert_eq!(parse_flag("0"), Some(false));
    assert_eq!(parse_flag("maybe"), None);
    assert_eq!(iscsi_driver_for_pci_driver("bnx2x"), "bnx2i");
    assert_eq!(iscsi_driver_for_pci_driver("qla4xxx"), "qla4xxx");
}

#[test]
fn classification_table() {
    for dependent in ["bnx2i", "qedi", "cxgb3i", "cxgb4i", "be2iscsi"] {
        assert_eq!(
            classify(dependent).kind,
            OffloadKind::Dependent,
            "{dependent}"
        );
    }
    assert_eq!(classify("qla4xxx").kind, OffloadKind::Independent);
    assert_eq!(classify("iscsi_tcp").kind, OffloadKind::Software);
    assert_eq!(
        classify("lpfc").kind,
        OffloadKind::Unknown("lpfc".to_string())
    );
}
