//! Login, CHAP, redirection and discovery exchanges.

use super::*;
use crate::auth::chap::{chap_response, decode_binary, encode_binary, ChapError};
use crate::session::redirect::{RedirectError, RedirectKind, TargetAddress};

#[test]
fn plain_login_with_auth_none() {
    let mut cfg = config();
    cfg.initiator_alias = Some("host1".into());
    cfg.initial_cmd_sn = 7;
    let mut h = Harness::new(cfg);
    h.exp_cmd_sn = 7;
    h.max_cmd_sn = 20;
    assert_eq!(
        h.s.state(),
        SessionState::Login {
            stage: LoginStage::SecurityNegotiation
        }
    );
    assert_eq!(h.s.max_recv_data_segment_length(), 8192);

    let (req, keys) = h.expect_login();
    assert_eq!(
        keys,
        pairs(&[
            ("InitiatorName", INITIATOR),
            ("InitiatorAlias", "host1"),
            ("SessionType", "Normal"),
            ("TargetName", TARGET),
            ("AuthMethod", "None"),
        ])
    );
    assert!(req.transit && !req.continue_);
    assert_eq!(
        (req.current_stage, req.next_stage),
        (
            LoginStage::SecurityNegotiation,
            LoginStage::LoginOperationalNegotiation
        )
    );
    assert_eq!(
        (req.version_max, req.version_min, req.tsih, req.cmd_sn),
        (0, 0, 0, 7)
    );
    assert_eq!(req.isid, [0x80, 0, 0, 0, 0, 1]);
    h.expect_none();

    let resp = h.login_response(&req, true, LoginStage::LoginOperationalNegotiation, 0);
    h.deliver(
        Header::LoginResponse(resp),
        &text(&[
            ("AuthMethod", "None"),
            ("TargetAlias", "disk-array"),
            ("TargetPortalGroupTag", "3"),
        ]),
    )
    .unwrap();
    let (req2, proposals) = h.expect_login();
    assert_eq!(
        req2.initiator_task_tag, req.initiator_task_tag,
        "one ITT for the whole login"
    );
    assert_eq!(req2.exp_stat_sn, 101, "ExpStatSN follows the first StatSN");
    assert_eq!(req2.cmd_sn, 7, "login requests do not consume CmdSN");
    assert_eq!(get(&proposals, "MaxRecvDataSegmentLength"), Some("8192"));
    assert!(get(&proposals, "InitiatorName").is_none());
    assert_eq!(
        h.s.state(),
        SessionState::Login {
            stage: LoginStage::LoginOperationalNegotiation
        }
    );

    let t = TargetParams {
        mrdsl: 65536,
        max_burst: 131072,
        ..TargetParams::default()
    };
    h.finish_operational(req2, &proposals, &t);
    assert_eq!(h.s.tsih(), 0x1234);
    assert_eq!(
        h.s.target_info(),
        &TargetInfo {
            alias: Some("disk-array".into()),
            portal_group_tag: Some(3)
        }
    );
    let p = h.s.params().unwrap();
    assert_eq!(p.target_max_recv_data_segment_length, 65536);
    assert_eq!(p.max_burst_length, 131072);
    assert_eq!(h.s.digests(), pdu::Digests::default());
    assert_eq!(
        h.s.poll_timeout(),
        None,
        "no pings configured, nothing outstanding"
    );
}

#[test]
fn digests_switch_on_after_the_final_login_response() {
    let mut cfg = config();
    cfg.offer.header_digests = vec![
        crate::text::DigestChoice::Crc32c,
        crate::text::DigestChoice::None,
    ];
    cfg.offer.data_digests = vec![crate::text::DigestChoice::Crc32c];
    let mut h = Harness::new(cfg);
    let (req, _) = h.expect_login();
    let resp = h.login_response(&req, true, LoginStage::LoginOperationalNegotiation, 0);
    h.deliver(
        Header::LoginResponse(resp),
        &text(&[("AuthMethod", "None")]),
    )
    .unwrap();
    let (req, proposals) = h.expect_login();
    assert_eq!(get(&proposals, "HeaderDigest"), Some("CRC32C,None"));
    assert_eq!(
        h.s.digests(),
        pdu::Digests::default(),
        "no digests during login"
    );
    h.finish_operational(req, &proposals, &TargetParams::default());
    assert_eq!(
        h.s.digests(),
        pdu::Digests {
            header: true,
            data: true
        }
    );
}

/// Plays the target's side of CHAP up to our CHAP_N/CHAP_R; returns that request.
fn chap_until_response(
    h: &mut Harness,
    target_challenge: &[u8],
) -> (pdu::LoginRequest, Vec<(String, String)>) {
    let (req, keys) = h.expect_login();
    assert_eq!(get(&keys, "AuthMethod"), Some("CHAP"));
    assert!(!req.transit, "no transit before CHAP is done");
    let resp = h.login_response(&req, false, LoginStage::SecurityNegotiation, 0);
    h.deliver(
        Header::LoginResponse(resp),
        &text(&[("AuthMethod", "CHAP")]),
    )
    .unwrap();

    let (req, keys) = h.expect_login();
    assert_eq!(keys, pairs(&[("CHAP_A", "5")]));
    let resp = h.login_response(&req, false, LoginStage::SecurityNegotiation, 0);
    let challenge = encode_binary(target_challenge);
    h.deliver(
        Header::LoginResponse(resp),
        &text(&[("CHAP_A", "5"), ("CHAP_I", "77"), ("CHAP_C", &challenge)]),
    )
    .unwrap();
    let (req, keys) = h.expect_login();
    assert!(req.transit, "ready to move on once our response is out");
    assert_eq!(req.next_stage, LoginStage::LoginOperationalNegotiation);
    assert_eq!(get(&keys, "CHAP_N"), Some("alice"));
    let response = decode_binary(get(&keys, "CHAP_R").unwrap()).unwrap();
    assert_eq!(
        response,
        chap_response(77, b"alice-secret-12", target_challenge).to_vec()
    );
    (req, keys)
}

fn chap_config(mutual: bool) -> SessionConfig {
    let mut cfg = config();
    cfg.chap = Some(ChapConfig {
        user: "alice".into(),
        secret: b"alice-secret-12".to_vec(),
        mutual: mutual.then(|| ("target-bob".to_string(), b"bob-secret-1234".to_vec())),
    });
    cfg.chap_challenge = (1..=16).collect();
    cfg
}

#[test]
fn chap_login() {
    let mut h = Harness::new(chap_config(false));
    let (req, keys) = chap_until_response(&mut h, &[9; 16]);
    assert!(
        get(&keys, "CHAP_C").is_none(),
        "one-way CHAP sends no challenge"
    );
    let resp = h.login_response(&req, true, LoginStage::LoginOperationalNegotiation, 0);
    h.deliver(Header::LoginResponse(resp), &[]).unwrap();
    let (req, proposals) = h.expect_login();
    h.finish_operational(req, &proposals, &TargetParams::default());
}

#[test]
fn mutual_chap_login_verifies_the_target() {
    let mut h = Harness::new(chap_config(true));
    let (req, keys) = chap_until_response(&mut h, &[9; 16]);
    let our_id: u8 = get(&keys, "CHAP_I").unwrap().parse().unwrap();
    let our_challenge = decode_binary(get(&keys, "CHAP_C").unwrap()).unwrap();
    assert_eq!(our_challenge, (1..=16).collect::<Vec<u8>>());
    let answer = encode_binary(&chap_response(our_id, b"bob-secret-1234", &our_challenge));
    let resp = h.login_response(&req, true, LoginStage::LoginOperationalNegotiation, 0);
    h.deliver(
        Header::LoginResponse(resp),
        &text(&[("CHAP_N", "target-bob"), ("CHAP_R", &answer)]),
    )
    .unwrap();
    let (req, proposals) = h.expect_login();
    h.finish_operational(req, &proposals, &TargetParams::default());
}

#[test]
fn mutual_chap_with_wrong_target_response_fails() {
    let mut h = Harness::new(chap_config(true));
    let (req, keys) = chap_until_response(&mut h, &[9; 16]);
    let our_id: u8 = get(&keys, "CHAP_I").unwrap().parse().unwrap();
    let our_challenge = decode_binary(get(&keys, "CHAP_C").unwrap()).unwrap();
    let wrong = encode_binary(&chap_response(our_id, b"not-the-secret!", &our_challenge));
    let resp = h.login_response(&req, true, LoginStage::LoginOperationalNegotiation, 0);
    let err = h.deliver(
        Header::LoginResponse(resp),
        &text(&[("CHAP_N", "target-bob"), ("CHAP_R", &wrong)]),
    );
    assert_eq!(
        err,
        Err(SessionError::Chap(ChapError::TargetResponseMismatch))
    );
    assert_eq!(h.s.state(), SessionState::Failed);
    assert_eq!(
        h.events(),
        vec![Event::ConnectionFailed(SessionError::Chap(
            ChapError::TargetResponseMismatch
        ))]
    );
    h.expect_none();
}

#[test]
fn mutual_chap_target_moving_on_without_its_response_fails() {
    let mut h = Harness::new(chap_config(true));
    let (req, _) = chap_until_response(&mut h, &[9; 16]);
    let resp = h.login_response(&req, true, LoginStage::LoginOperationalNegotiation, 0);
    let err = h.deliver(Header::LoginResponse(resp), &[]).unwrap_err();
    assert!(
        matches!(err, SessionError::Chap(ChapError::MissingKey { .. })),
        "{err:?}"
    );
}

#[test]
fn target_choosing_none_when_chap_offered_fails() {
    let mut h = Harness::new(chap_config(false));
    let (req, _) = h.expect_login();
    let resp = h.login_response(&req, false, LoginStage::SecurityNegotiation, 0);
    let err = h.deliver(
        Header::LoginResponse(resp),
        &text(&[("AuthMethod", "None")]),
    );
    assert_eq!(err, Err(SessionError::UnexpectedAuthMethod("None".into())));
}

#[test]
fn operational_stage_continues_while_the_target_answers_t0() {
    let mut h = Harness::new(config());
    let (req, _) = h.expect_login();
    let resp = h.login_response(&req, true, LoginStage::LoginOperationalNegotiation, 0);
    h.deliver(
        Header::LoginResponse(resp),
        &text(&[("AuthMethod", "None")]),
    )
    .unwrap();
    let (req, proposals) = h.expect_login();
    let answers = operational_answers(
        &proposals,
        &TargetParams {
            max_outstanding_r2t: 4,
            ..TargetParams::default()
        },
    );
    let (first, rest) = answers.split_at(answers.len() / 2);
    // First half, T=0, plus a proposal of the target's own that we must answer.
    let mut body = Vec::new();
    encode_pairs(first, &mut body);
    encode_pairs(&pairs(&[("X-com.example.Foo", "1")]), &mut body);
    let resp = h.login_response(&req, false, LoginStage::FullFeaturePhase, 0);
    h.deliver(Header::LoginResponse(resp), &body).unwrap();
    let (req, replies) = h.expect_login();
    assert!(req.transit, "we keep asking to move on");
    assert_eq!(req.current_stage, LoginStage::LoginOperationalNegotiation);
    assert_eq!(replies, pairs(&[("X-com.example.Foo", "NotUnderstood")]));
    // The rest, and T=1.
    let mut body = Vec::new();
    encode_pairs(rest, &mut body);
    let resp = h.login_response(&req, true, LoginStage::FullFeaturePhase, 9);
    h.deliver(Header::LoginResponse(resp), &body).unwrap();
    assert_eq!(h.s.state(), SessionState::FullFeature);
    assert_eq!(h.s.tsih(), 9);
}

#[test]
fn continued_target_text_is_pulled_with_empty_requests() {
    let mut h = Harness::new(config());
    let (req, _) = h.expect_login();
    let body = text(&[("AuthMethod", "None"), ("TargetAlias", "a-long-alias")]);
    let (a, b) = body.split_at(15); // splits inside a pair
    let mut resp = h.login_response(&req, false, LoginStage::LoginOperationalNegotiation, 0);
    resp.continue_ = true;
    h.deliver(Header::LoginResponse(resp), a).unwrap();
    assert_eq!(
        h.s.target_info().alias,
        None,
        "nothing parsed before the text is whole"
    );
    let (pull, keys) = h.expect_login();
    assert!(keys.is_empty() && !pull.continue_);
    assert!(
        pull.transit,
        "the pull keeps our wish to move on, so the target may end the stage"
    );
    let resp = h.login_response(&pull, true, LoginStage::LoginOperationalNegotiation, 0);
    h.deliver(Header::LoginResponse(resp), b).unwrap();
    assert_eq!(h.s.target_info().alias.as_deref(), Some("a-long-alias"));
    let (req, proposals) = h.expect_login();
    h.finish_operational(req, &proposals, &TargetParams::default());
}

#[test]
fn target_transit_without_our_transit_is_refused() {
    let mut h = Harness::new(chap_config(false));
    let (req, _) = h.expect_login();
    assert!(!req.transit);
    let resp = h.login_response(&req, true, LoginStage::LoginOperationalNegotiation, 0);
    assert_eq!(
        h.deliver(
            Header::LoginResponse(resp),
            &text(&[("AuthMethod", "CHAP")])
        ),
        Err(SessionError::LoginProtocol(
            "target set T=1 though we did not ask to move on"
        ))
    );
}

#[test]
fn login_round_trips_are_bounded() {
    let mut h = Harness::new(config());
    let mut last = Ok(());
    for _ in 0..20 {
        let Some((Header::LoginRequest(req), _)) = h.sent() else {
            break;
        };
        let resp = h.login_response(&req, false, LoginStage::SecurityNegotiation, 0);
        last = h.deliver(Header::LoginResponse(resp), &[]);
    }
    assert_eq!(
        last,
        Err(SessionError::LoginRoundTrips {
            max: crate::session::login::MAX_LOGIN_ROUND_TRIPS
        })
    );
}

fn refused(class: u8, detail: u8) -> (Result<(), SessionError>, Vec<Event>) {
    let mut h = Harness::new(config());
    let (req, _) = h.expect_login();
    let mut resp = h.login_response(&req, false, LoginStage::SecurityNegotiation, 0);
    resp.status_class = class;
    resp.status_detail = detail;
    let result = h.deliver(Header::LoginResponse(resp), &[]);
    assert_eq!(h.s.state(), SessionState::Failed);
    (result, h.events())
}

#[test]
fn login_failures_are_named() {
    for (class, detail, reason) in [
        (2, 1, "authentication failure (0x0201)"),
        (2, 3, "target not found (0x0203)"),
        (3, 1, "service unavailable (0x0301)"),
    ] {
        let (result, events) = refused(class, detail);
        let err = SessionError::LoginRejected { class, detail };
        assert_eq!(result, Err(err.clone()));
        assert_eq!(
            events,
            vec![
                Event::LoginFailed {
                    status_class: class,
                    status_detail: detail,
                    reason: reason.into()
                },
                Event::ConnectionFailed(err.clone()),
            ]
        );
        assert!(
            err.to_string().contains(reason.split(" (").next().unwrap()),
            "{err}"
        );
    }
}

#[test]
fn redirect_closes_the_session_with_the_new_address() {
    let mut h = Harness::new(config());
    let (req, _) = h.expect_login();
    let mut resp = h.login_response(&req, false, LoginStage::SecurityNegotiation, 0);
    resp.status_class = 1;
    resp.status_detail = 2;
    h.deliver(
        Header::LoginResponse(resp),
        &text(&[("TargetAddress", "10.1.2.3:3261,2")]),
    )
    .unwrap();
    assert_eq!(h.s.state(), SessionState::Closed);
    assert_eq!(
        h.events(),
        vec![Event::Redirect {
            address: TargetAddress {
                host: "10.1.2.3".into(),
                port: 3261,
                portal_group_tag: Some(2),
            },
            kind: RedirectKind::Permanent,
        }]
    );
    assert_eq!(h.s.poll_timeout(), None);
}

#[test]
fn redirect_after_chap_in_the_operational_stage_is_followed_as_temporary() {
    // Some arrays authenticate at the virtual portal and only then send the host on.
    for detail in [0x00, 0x01] {
        let mut h = Harness::new(chap_config(false));
        let (req, _) = chap_until_response(&mut h, &[9; 16]);
        let resp = h.login_response(&req, true, LoginStage::LoginOperationalNegotiation, 0);
        h.deliver(Header::LoginResponse(resp), &[]).unwrap();
        let (req, _) = h.expect_login();
        assert_eq!(req.current_stage, LoginStage::LoginOperationalNegotiation);
        let mut resp = h.login_response(&req, false, LoginStage::LoginOperationalNegotiation, 0);
        resp.status_class = 1;
        resp.status_detail = detail;
        h.deliver(
            Header::LoginResponse(resp),
            &text(&[("TargetAddress", "[2001:db8::7]:3262,5")]),
        )
        .unwrap();
        assert_eq!(h.s.state(), SessionState::Closed);
        assert_eq!(
            h.events(),
            vec![Event::Redirect {
                address: TargetAddress::parse("[2001:db8::7]:3262,5").unwrap(),
                kind: RedirectKind::Temporary,
            }],
            "status detail {detail:#04x}"
        );
    }
}

#[test]
fn redirect_to_a_malformed_address_fails_the_login() {
    let mut h = Harness::new(config());
    let (req, _) = h.expect_login();
    let mut resp = h.login_response(&req, false, LoginStage::SecurityNegotiation, 0);
    resp.status_class = 1;
    resp.status_detail = 1;
    let error = h
        .deliver(
            Header::LoginResponse(resp),
            &text(&[("TargetAddress", "[2001:db8::7:3262")]),
        )
        .unwrap_err();
    assert!(
        matches!(
            error,
            SessionError::Redirect(RedirectError::Malformed { .. })
        ),
        "{error}"
    );
}

#[test]
fn login_times_out() {
    let mut h = Harness::new(config());
    h.expect_login();
    let deadline = h.s.poll_timeout().unwrap();
    assert_eq!(deadline, h.now + Duration::from_secs(15));
    h.advance(Duration::from_secs(14));
    h.timeout();
    assert!(matches!(h.s.state(), SessionState::Login { .. }));
    h.advance(Duration::from_secs(1));
    h.timeout();
    assert_eq!(h.s.state(), SessionState::Failed);
    assert_eq!(
        h.events(),
        vec![Event::ConnectionFailed(SessionError::LoginTimeout)]
    );
}

#[test]
fn login_response_with_wrong_itt_is_fatal() {
    let mut h = Harness::new(config());
    let (req, _) = h.expect_login();
    let mut resp = h.login_response(&req, true, LoginStage::LoginOperationalNegotiation, 0);
    resp.initiator_task_tag ^= 1;
    let err = h
        .deliver(
            Header::LoginResponse(resp),
            &text(&[("AuthMethod", "None")]),
        )
        .unwrap_err();
    assert!(matches!(
        err,
        SessionError::UnknownTaskTag {
            opcode: pdu::Opcode::LoginResponse,
            ..
        }
    ));
}

fn discovery_session() -> Harness {
    let mut h = Harness::new(SessionConfig {
        nop_interval: Duration::ZERO,
        ..SessionConfig::new(INITIATOR, None)
    });
    let (req, keys) = h.expect_login();
    assert_eq!(get(&keys, "SessionType"), Some("Discovery"));
    assert!(get(&keys, "TargetName").is_none());
    let resp = h.login_response(&req, true, LoginStage::LoginOperationalNegotiation, 0);
    h.deliver(
        Header::LoginResponse(resp),
        &text(&[("AuthMethod", "None")]),
    )
    .unwrap();
    let (req, proposals) = h.expect_login();
    assert!(
        get(&proposals, "MaxBurstLength").is_none(),
        "irrelevant keys are not proposed in discovery"
    );
    h.finish_operational(req, &proposals, &TargetParams::default());
    h
}

#[test]
fn discovery_with_a_multi_pdu_response() {
    let mut h = discovery_session();
    let mut cmd = read_request(512);
    cmd.cdb = crate::scsi::Cdb::inquiry(512);
    assert_eq!(
        h.s.submit(h.now, cmd).unwrap_err().reason,
        SubmitRejection::DiscoverySession
    );

    h.s.send_targets(h.now).unwrap();
    assert_eq!(
        h.s.send_targets(h.now),
        Err(SessionError::DiscoveryInProgress)
    );
    let (req, data) = match h.expect() {
        (Header::TextRequest(r), d) => (r, d),
        other => panic!("{other:?}"),
    };
    assert_eq!(data, b"SendTargets=All\0");
    assert!(req.final_pdu && req.immediate);
    assert_eq!(req.target_transfer_tag, pdu::RESERVED_TAG);

    let body = text(&[
        ("TargetName", "iqn.t1"),
        ("TargetAddress", "10.0.0.1:3260,1"),
        ("TargetAddress", "[fd00::1]:3260,1"),
        ("TargetName", "iqn.t2"),
        ("TargetAlias", "two"),
        ("TargetAddress", "10.0.0.2,7"),
    ]);
    let (p1, rest) = body.split_at(20); // inside "TargetAddress"
    let (p2, p3) = rest.split_at(40);
    let response = |h: &mut Harness, final_pdu: bool, continue_: bool, ttt: u32| {
        Header::TextResponse(pdu::TextResponse {
            final_pdu,
            continue_,
            lun: [0; 8],
            initiator_task_tag: req.initiator_task_tag,
            target_transfer_tag: ttt,
            stat_sn: h.next_stat(),
            exp_cmd_sn: h.exp_cmd_sn,
            max_cmd_sn: h.max_cmd_sn,
        })
    };
    for (piece, ttt) in [(p1, 0x55), (p2, 0x56)] {
        let r = response(&mut h, false, true, ttt);
        h.deliver(r, piece).unwrap();
        match h.expect() {
            (Header::TextRequest(next), d) => {
                assert!(d.is_empty());
                assert_eq!(next.target_transfer_tag, ttt);
                assert_eq!(next.initiator_task_tag, req.initiator_task_tag);
            }
            other => panic!("{other:?}"),
        }
        assert!(h.events().is_empty());
    }
    let r = response(&mut h, true, false, pdu::RESERVED_TAG);
    h.deliver(r, p3).unwrap();
    h.expect_none();
    assert_eq!(
        h.events(),
        vec![Event::TargetsDiscovered(vec![
            DiscoveredTarget {
                name: "iqn.t1".into(),
                addresses: vec![("10.0.0.1:3260".into(), 1), ("[fd00::1]:3260".into(), 1)]
            },
            DiscoveredTarget {
                name: "iqn.t2".into(),
                addresses: vec![("10.0.0.2:3260".into(), 7)]
            },
        ])]
    );
    // A second SendTargets may follow.
    h.s.send_targets(h.now).unwrap();
}

#[test]
fn discovery_response_without_ttt_to_continue_is_fatal() {
    let mut h = discovery_session();
    h.s.send_targets(h.now).unwrap();
    let (Header::TextRequest(req), _) = h.expect() else {
        panic!()
    };
    let r = Header::TextResponse(pdu::TextResponse {
        final_pdu: false,
        continue_: false,
        lun: [0; 8],
        initiator_task_tag: req.initiator_task_tag,
        target_transfer_tag: pdu::RESERVED_TAG,
        stat_sn: h.next_stat(),
        exp_cmd_sn: h.exp_cmd_sn,
        max_cmd_sn: h.max_cmd_sn,
    });
    assert!(matches!(
        h.deliver(r, &text(&[("TargetName", "x")])),
        Err(SessionError::TextProtocol(_))
    ));
}

#[test]
fn send_targets_needs_a_logged_in_discovery_session() {
    let mut h = Harness::new(config());
    assert_eq!(h.s.send_targets(h.now), Err(SessionError::NotLoggedIn));
    h.login_none(&TargetParams::default());
    assert_eq!(
        h.s.send_targets(h.now),
        Err(SessionError::NotDiscoverySession)
    );
    assert_eq!(h.s.state(), SessionState::FullFeature);
}
