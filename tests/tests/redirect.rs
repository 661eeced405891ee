//! Login redirection against tgt (issue 14 item 1): tgt's `RedirectAddress`,
//! `RedirectPort` and `RedirectReason` make it answer a login with "target moved
//! temporarily/permanently" and a `TargetAddress`. The "virtual" portal is a tgtd on
//! 127.0.0.1 that only redirects; the real portals are tgtds on 127.0.0.2 and 127.0.0.3
//! (tgt does not redirect an initiator whose own address is the redirect address, and on
//! loopback ours is 127.0.0.1).
//!
//! - the blocking client follows a temporary and a permanent redirect and runs I/O there;
//! - a shard that loses its session reconnects through the virtual portal after a temporary
//!   redirect (landing where the virtual portal points *now*) and at the real portal after
//!   a permanent one;
//! - a portal that redirects to itself is refused with an error naming the loop.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use datapath::client::{Client, ClientConfig, ClientError};
use datapath::scsi::Cdb;
use datapath::session::redirect::RedirectError;
use datapath::session::Request;
use datapath::shard::{ReconnectPolicy, ShardConfig, ShardPool};
use system_tests::scsi_io::{until_ready, OnClient, OnShard};
use system_tests::{TargetSpec, Tgt};

const LUN_BYTES: u64 = 4 << 20;
const WAIT: Duration = Duration::from_secs(20);

fn start(ip: [u8; 4], iqn: &str) -> Tgt {
    Tgt::start_at(Ipv4Addr::from(ip), &[TargetSpec::new(iqn, &[LUN_BYTES])]).expect("tgtd starts")
}

fn config(portal: SocketAddr, iqn: &str) -> ClientConfig {
    let mut config = ClientConfig::new(portal, Some(iqn.to_string()));
    config.command_timeout = Duration::from_secs(10);
    config
}

#[test]
fn the_client_follows_temporary_and_permanent_redirects() {
    let iqn = "iqn.2026-12.test:redirect-client";
    let real = start([127, 0, 0, 2], iqn);
    let virtual_portal = start([127, 0, 0, 1], iqn);
    for reason in ["Temporary", "Permanent"] {
        virtual_portal
            .redirect(1, real.portal(), reason)
            .expect("tgtadm sets the redirect");
        let mut client = Client::connect(&config(virtual_portal.portal(), iqn))
            .unwrap_or_else(|e| panic!("{reason}: {e}\n{}", virtual_portal.log()));
        assert_eq!(client.portal(), real.portal(), "{reason}");
        let lun = real.first_data_lun();
        until_ready(&mut OnClient(&mut client), lun);
        let capacity = client
            .execute(Request::new(lun, Cdb::read_capacity_10(), vec![0; 8], 0))
            .expect("READ CAPACITY on the real portal");
        assert_eq!(capacity.status, 0, "{reason}");
        assert_eq!(real.connections(1).unwrap(), 1, "{reason}");
        client.logout().expect("logout");
    }
}

#[test]
fn reconnects_start_at_the_virtual_portal_only_after_a_temporary_redirect() {
    let iqn = "iqn.2026-12.test:redirect-reconnect";
    let first = start([127, 0, 0, 2], iqn);
    let second = start([127, 0, 0, 3], iqn);
    let virtual_portal = start([127, 0, 0, 1], iqn);
    let lun = first.first_data_lun();
    for (reason, lands_on_second) in [("Temporary", true), ("Permanent", false)] {
        virtual_portal.redirect(1, first.portal(), reason).unwrap();
        let shard_config = ShardConfig {
            queue_depth: 4,
            reconnect: ReconnectPolicy::new(10, Duration::from_secs(15)),
            ..ShardConfig::default()
        };
        let pool = ShardPool::start(&config(virtual_portal.portal(), iqn), 1, &shard_config)
            .unwrap_or_else(|e| panic!("{reason}: {e}"));
        until_ready(&mut OnShard::new(&pool, 0), lun);
        assert_eq!(
            first.connections(1).unwrap(),
            1,
            "{reason}: logged in at the first"
        );

        // The array now places hosts on the second portal; the first drops our session.
        virtual_portal.redirect(1, second.portal(), reason).unwrap();
        first
            .close_session(pool.info(0).unwrap().tsih)
            .unwrap_or_else(|e| panic!("{e}\n{}", first.log()));
        let deadline = Instant::now() + WAIT;
        let read = Cdb::read(0, 8, 512, false).unwrap();
        loop {
            let done = pool
                .execute(0, Request::new(lun, read.clone(), vec![0; 4096], 1), WAIT)
                .expect("the shard answers");
            if done.result.as_ref().is_ok_and(|o| o.status == 0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{reason}: no read after the loss"
            );
        }
        assert!(
            pool.stats(0).unwrap().reconnects >= 1,
            "{reason}: reconnected"
        );
        let (on_first, on_second) = (
            first.connections(1).unwrap(),
            second.connections(1).unwrap(),
        );
        if lands_on_second {
            assert_eq!(
                (on_first, on_second),
                (0, 1),
                "{reason}: via the virtual portal"
            );
        } else {
            assert_eq!((on_first, on_second), (1, 0), "{reason}: straight back");
        }
        pool.shutdown();
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_redirect_loop_is_refused_and_named() {
    let iqn = "iqn.2026-12.test:redirect-loop";
    let looping = start([127, 0, 0, 2], iqn);
    looping
        .redirect(1, looping.portal(), "Temporary")
        .expect("tgtadm sets the redirect");
    let error = match Client::connect(&config(looping.portal(), iqn)) {
        Ok(_) => panic!("a login that redirects to itself succeeded"),
        Err(error) => error,
    };
    let portal = looping.portal();
    assert!(
        matches!(
            &error,
            ClientError::Redirect {
                source: RedirectError::Loop { .. },
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains(&format!("{portal} → {portal}")),
        "{error}"
    );
}

/// A scripted virtual portal: accepts the security stage of one login (AuthMethod=None),
/// then answers the operational stage with "target moved temporarily" to `address` (after
/// security negotiation, where tgt redirects at the first request). Returns the number of
/// logins it saw.
fn redirecting_after_security(listener: std::net::TcpListener, address: String) -> usize {
    use datapath::pdu::{Header, LoginStage};
    use system_tests::fake_target::{accept_login, send_pdu, text_segment, PduReader};
    let (mut stream, _) = listener.accept().expect("the initiator connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = PduReader::new();
    let mut stat_sn = 1;
    loop {
        let Ok((Header::LoginRequest(request), _)) = reader.next(&mut stream) else {
            return 0;
        };
        let mut response = accept_login(&request, 0, stat_sn, request.cmd_sn);
        stat_sn += 1;
        if request.current_stage == LoginStage::SecurityNegotiation {
            let data = text_segment(&[("AuthMethod", "None")]);
            send_pdu(&mut stream, Header::LoginResponse(response), &data).unwrap();
            continue;
        }
        response.status_class = 1;
        response.status_detail = 1;
        response.transit = false;
        let data = text_segment(&[("TargetAddress", &address)]);
        send_pdu(&mut stream, Header::LoginResponse(response), &data).unwrap();
        return 1;
    }
}

#[test]
fn a_redirect_after_security_negotiation_to_a_host_name_is_followed() {
    let iqn = "iqn.2026-12.test:redirect-scripted";
    let real = start([127, 0, 0, 1], iqn);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let virtual_portal = listener.local_addr().unwrap();
    // A host name with a port and a portal group tag.
    let address = format!("localhost:{},1", real.portal().port());
    let fake = std::thread::spawn(move || redirecting_after_security(listener, address));
    let mut client = Client::connect(&config(virtual_portal, iqn))
        .unwrap_or_else(|e| panic!("{e}\n{}", real.log()));
    assert_eq!(fake.join().unwrap(), 1, "the scripted portal redirected");
    assert_eq!(client.portal(), real.portal());
    until_ready(&mut OnClient(&mut client), real.first_data_lun());
    assert_eq!(real.connections(1).unwrap(), 1);
    client.logout().unwrap();
}

#[test]
fn a_redirect_and_the_login_it_leads_to_dissect_cleanly() {
    system_tests::require_tools!("dumpcap", "tshark");
    use system_tests::{tshark_iscsi_key_values, tshark_iscsi_problems, Capture};
    let iqn = "iqn.2026-12.test:redirect-wire";
    let real = start([127, 0, 0, 2], iqn);
    let virtual_portal = start([127, 0, 0, 1], iqn);
    virtual_portal
        .redirect(1, real.portal(), "Temporary")
        .unwrap();
    let port = virtual_portal.portal().port();
    let capture = Capture::start(port);
    let client = Client::connect(&config(virtual_portal.portal(), iqn)).expect("redirected login");
    client.logout().unwrap();
    let pcap = capture.stop();
    assert_eq!(tshark_iscsi_problems(&pcap, port), Vec::<String>::new());
    let keys = tshark_iscsi_key_values(&pcap, port, 0x23).expect("tshark");
    let wanted = format!(
        "TargetAddress={}:{}",
        real.portal().ip(),
        real.portal().port()
    );
    assert!(
        keys.iter().any(|k| k.starts_with(&wanted)),
        "no {wanted} in the Login Response: {keys:?}"
    );
}
