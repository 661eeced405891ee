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

/// `discover_system` lists exactly the hosts the kernel shows under
/// `/sys/class/iscsi_host` (none on a machine without an iSCSI transport), each with the
/// number of its name and the driver its `scsi_host` names, read here without the module.
#[test]
fn the_system_list_is_the_kernels_iscsi_hosts() {
    let class = Path::new(SYSFS_ROOT).join("class/iscsi_host");
    let mut hosts: Vec<String> = match fs::read_dir(&class) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", class.display()),
    };
    hosts.sort_by_key(|h| (host_number(h).unwrap_or(u32::MAX), h.clone()));
    let adapters = discover_system().unwrap();
    let found: Vec<&str> = adapters.iter().map(|a| a.host.as_str()).collect();
    assert_eq!(found, hosts);
    for a in &adapters {
        assert_eq!(
            a.host_number,
            a.host.strip_prefix("host").and_then(|n| n.parse().ok())
        );
        let proc_name = fs::read_to_string(
            Path::new(SYSFS_ROOT).join(format!("class/scsi_host/{}/proc_name", a.host)),
        )
        .ok()
        .and_then(|name| normalize(&name));
        if proc_name.is_some() {
            assert_eq!(a.driver, proc_name, "{a:#?}");
            assert_eq!(a.driver_source, Some(DriverSource::ProcName));
        }
    }
}

/// Attribute files of one sysfs directory: name and value.
type Attributes<'a> = &'a [(&'a str, &'a str)];

/// A tree laid out as the kernel lays it out (class entries are symlinks into `devices/`):
/// a qla4xxx host (independent) with two firmware ifaces, beside a software `iscsi_tcp` host
/// and an iface of that other host; the offload adapter is found with its kind, its
/// attributes and only its own ifaces. With the class directories present but empty, the
/// list is empty.
#[test]
fn an_offload_adapter_in_a_kernel_layout_tree_is_found_with_its_kind_and_ifaces() {
    use std::os::unix::fs::symlink;
    let scratch = Scratch::new("kernel-layout");
    let root = &scratch.0;
    for class in ["iscsi_host", "iscsi_iface", "scsi_host"] {
        fs::create_dir_all(root.join("class").join(class)).unwrap();
    }
    assert!(
        discover(root).unwrap().is_empty(),
        "empty class directories"
    );

    let write = |dir: &Path, attributes: &[(&str, &str)]| {
        fs::create_dir_all(dir).unwrap();
        for (name, value) in attributes {
            fs::write(dir.join(name), format!("{value}\n")).unwrap();
        }
    };
    // host5: qla4xxx on a PCI function; host9: the software transport on a virtual device.
    let host5 = root.join("devices/pci0000:00/0000:00:02.0/0000:04:00.1/host5");
    let host9 = root.join("devices/platform/host9");
    let hosts: [(&Path, &str, &str, Attributes); 2] = [
        (
            &host5,
            "host5",
            "qla4xxx",
            &[
                ("hwaddress", "00:0e:1e:04:93:92"),
                (
                    "initiatorname",
                    "iqn.2000-04.com.qlogic:isp8214.000e1e049392.5",
                ),
                ("port_state", "LINK_UP"),
                ("port_speed", "10 Gbps"),
                ("ipaddress", "(null)"),
            ],
        ),
        (&host9, "host9", "iscsi_tcp", &[("netdev", "(null)")]),
    ];
    for (dev, name, driver, attributes) in hosts {
        let dev_rel = dev.strip_prefix(root).unwrap().display().to_string();
        write(&dev.join("iscsi_host").join(name), attributes);
        write(&dev.join("scsi_host").join(name), &[("proc_name", driver)]);
        symlink(
            format!("../../{dev_rel}/iscsi_host/{name}"),
            root.join("class/iscsi_host").join(name),
        )
        .unwrap();
        symlink(
            format!("../../{dev_rel}/scsi_host/{name}"),
            root.join("class/scsi_host").join(name),
        )
        .unwrap();
    }
    let ifaces: [(&Path, &str, Attributes); 3] = [
        (
            &host5,
            "ipv4-iface-5-0",
            &[
                ("enabled", "enabled"),
                ("ipaddress", "10.1.2.3"),
                ("port", "3260"),
            ],
        ),
        (&host5, "ipv6-iface-5-1", &[("enabled", "disabled")]),
        (&host9, "ipv4-iface-9-0", &[("enabled", "enabled")]),
    ];
    for (dev, name, attributes) in ifaces {
        let dev_rel = dev.strip_prefix(root).unwrap().display().to_string();
        write(&dev.join("iscsi_iface").join(name), attributes);
        symlink(
            format!("../../{dev_rel}/iscsi_iface/{name}"),
            root.join("class/iscsi_iface").join(name),
        )
        .unwrap();
    }

    let adapters = discover(root).unwrap();
    assert_eq!(adapters.len(), 2, "{adapters:#?}");
    let qla = &adapters[0];
    assert_eq!(qla.host, "host5");
    assert_eq!(qla.host_number, Some(5));
    assert_eq!(qla.driver.as_deref(), Some("qla4xxx"));
    assert_eq!(qla.driver_source, Some(DriverSource::ProcName));
    assert_eq!(qla.kind, OffloadKind::Transport(TransportKind::Independent));
    assert!(qla.is_offload());
    assert_eq!(qla.hwaddress.as_deref(), Some("00:0e:1e:04:93:92"));
    assert_eq!(qla.ipaddress, None, "(null) is unset");
    assert_eq!(qla.port_state.as_deref(), Some("LINK_UP"));
    let names: Vec<&str> = qla.ifaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        names,
        ["ipv4-iface-5-0", "ipv6-iface-5-1"],
        "only host 5's ifaces"
    );
    assert_eq!(qla.ifaces[0].enabled, Some(true));
    assert_eq!(qla.ifaces[0].ipaddress.as_deref(), Some("10.1.2.3"));
    assert_eq!(qla.ifaces[0].port, Some(3260));
    assert_eq!(qla.ifaces[1].ip_version, Some(6));
    assert_eq!(qla.ifaces[1].iface_number, Some(1));
    assert_eq!(qla.ifaces[1].enabled, Some(false));
    assert!(qla.unreadable.is_empty(), "{:?}", qla.unreadable);
    let tcp = &adapters[1];
    assert_eq!(tcp.host, "host9");
    assert_eq!(tcp.driver.as_deref(), Some("iscsi_tcp"));
    assert!(!tcp.is_offload(), "{:?}", tcp.kind);
    assert_eq!(tcp.ifaces.len(), 1);
}

#[test]
fn bnx2i_is_dependent_with_its_netdev() {
    let a = only_adapter("bnx2i");
    assert_eq!(a.host, "host7");
    assert_eq!(a.host_number, Some(7));
    assert_eq!(a.driver.as_deref(), Some("bnx2i"));
    assert_eq!(a.driver_source, Some(DriverSource::ProcName));
    assert_eq!(a.kind, OffloadKind::Transport(TransportKind::Dependent));
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
        assert_eq!(
            a.kind,
            OffloadKind::Transport(TransportKind::Dependent),
            "{tree}"
        );
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
    assert_eq!(a.kind, OffloadKind::Transport(TransportKind::Independent));
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
    assert_eq!(a.kind, OffloadKind::Transport(TransportKind::Dependent));
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
    assert_eq!(tcp.kind, OffloadKind::Transport(TransportKind::Software));
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
    assert_eq!(a.kind, OffloadKind::Transport(TransportKind::Dependent));
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
    assert_eq!(a.kind, OffloadKind::Transport(TransportKind::Independent));
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
            OffloadKind::Transport(TransportKind::Dependent),
            "{dependent}"
        );
    }
    assert_eq!(
        classify("qla4xxx").kind,
        OffloadKind::Transport(TransportKind::Independent)
    );
    assert_eq!(
        classify("iscsi_tcp").kind,
        OffloadKind::Transport(TransportKind::Software)
    );
    assert_eq!(
        classify("lpfc").kind,
        OffloadKind::Unknown("lpfc".to_string())
    );
}
