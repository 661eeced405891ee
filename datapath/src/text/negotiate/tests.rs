//! Tests for the negotiation rules: both roles against each other, a table per rule for
//! answers and for proposals, malformed values, renegotiation and discovery sessions.

use super::*;
use proptest::prelude::*;

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs a whole negotiation between an initiator and a target, as a login would: the
/// initiator's proposals go first, the target answers and adds its own, and so on until
/// nothing is left to send. Returns both sides' results.
fn run(
    initiator_offer: OperationalOffer,
    target_offer: OperationalOffer,
) -> (OperationalParams, OperationalParams) {
    run_kind(initiator_offer, target_offer, SessionKind::Normal)
}

fn run_kind(
    initiator_offer: OperationalOffer,
    target_offer: OperationalOffer,
    kind: SessionKind,
) -> (OperationalParams, OperationalParams) {
    let mut initiator = Negotiation::with_session_kind(Role::Initiator, initiator_offer, kind);
    let mut target = Negotiation::with_session_kind(Role::Target, target_offer, kind);
    let mut to_target = initiator.initial_proposals();
    for _round in 0..6 {
        let mut to_initiator = target
            .handle_peer_pairs(&to_target)
            .expect("target accepts");
        to_initiator.extend(target.initial_proposals());
        to_target = initiator
            .handle_peer_pairs(&to_initiator)
            .expect("initiator accepts");
        if to_target.is_empty() && initiator.is_complete() && target.is_complete() {
            return (initiator.params(), target.params());
        }
    }
    panic!("negotiation did not finish in 6 rounds");
}

#[test]
fn initiator_proposes_every_key_once() {
    let mut n = Negotiation::new(Role::Initiator, OperationalOffer::default());
    let expected = pairs(&[
        ("HeaderDigest", "None"),
        ("DataDigest", "None"),
        ("MaxConnections", "1"),
        ("InitialR2T", "Yes"),
        ("ImmediateData", "Yes"),
        ("MaxRecvDataSegmentLength", "8192"),
        ("MaxBurstLength", "262144"),
        ("FirstBurstLength", "65536"),
        ("DefaultTime2Wait", "2"),
        ("DefaultTime2Retain", "20"),
        ("MaxOutstandingR2T", "1"),
        ("DataPDUInOrder", "Yes"),
        ("DataSequenceInOrder", "Yes"),
        ("ErrorRecoveryLevel", "0"),
    ]);
    assert_eq!(n.initial_proposals(), expected);
    assert_eq!(
        n.initial_proposals(),
        vec![],
        "a second call proposes nothing new"
    );
    // InitialR2T=Yes and the two in-order keys (OR with Yes) need no answer.
    assert_eq!(n.pending_answers(), 10);
    assert!(!n.is_complete());
}

#[test]
fn digest_lists_are_sent_in_preference_order() {
    let offer = OperationalOffer {
        header_digests: vec![DigestChoice::Crc32c, DigestChoice::None],
        data_digests: vec![],
        ..OperationalOffer::default()
    };
    let proposals = Negotiation::new(Role::Initiator, offer).initial_proposals();
    assert_eq!(
        proposals[0],
        ("HeaderDigest".to_string(), "CRC32C,None".to_string())
    );
    assert_eq!(proposals[1], ("DataDigest".to_string(), "None".to_string()));
}

#[test]
fn target_proposes_only_what_differs_from_the_default() {
    let offer = OperationalOffer {
        max_burst_length: 65536,
        immediate_data: false,
        ..OperationalOffer::default()
    };
    let mut n = Negotiation::new(Role::Target, offer);
    assert_eq!(
        n.initial_proposals(),
        pairs(&[
            ("ImmediateData", "No"),
            ("MaxRecvDataSegmentLength", "8192"),
            ("MaxBurstLength", "65536")
        ])
    );
    // ImmediateData=No (AND) needs no answer; MaxBurstLength does.
    assert_eq!(n.pending_answers(), 1);
}

#[test]
fn defaults_on_both_sides_give_the_rfc_defaults() {
    let (i, t) = run(OperationalOffer::default(), OperationalOffer::default());
    assert_eq!(i, OperationalParams::default());
    assert_eq!(t, OperationalParams::default());
}

#[test]
fn both_roles_agree_on_every_rule() {
    let initiator = OperationalOffer {
        header_digests: vec![DigestChoice::Crc32c, DigestChoice::None],
        data_digests: vec![DigestChoice::None, DigestChoice::Crc32c],
        max_connections: 4,
        initial_r2t: false,
        immediate_data: true,
        max_recv_data_segment_length: 262_144,
        max_burst_length: 1_048_576,
        first_burst_length: 262_144,
        default_time2wait: 2,
        default_time2retain: 20,
        max_outstanding_r2t: 8,
        data_pdu_in_order: true,
        data_sequence_in_order: true,
        error_recovery_level: 2,
    };
    let target = OperationalOffer {
        header_digests: vec![DigestChoice::None, DigestChoice::Crc32c],
        data_digests: vec![DigestChoice::Crc32c, DigestChoice::None],
        max_connections: 1,
        initial_r2t: false,
        immediate_data: false,
        max_recv_data_segment_length: 65_536,
        max_burst_length: 524_288,
        first_burst_length: 131_072,
        default_time2wait: 5,
        default_time2retain: 0,
        max_outstanding_r2t: 16,
        data_pdu_in_order: true,
        data_sequence_in_order: false,
        error_recovery_level: 0,
    };
    let (i, t) = run(initiator, target);
    let expected = OperationalParams {
        // The responder takes the originator's first supported choice.
        header_digest: true,
        data_digest: false,
        max_connections: 1,
        initial_r2t: false,
        immediate_data: false,
        initiator_max_recv_data_segment_length: 262_144,
        target_max_recv_data_segment_length: 65_536,
        max_burst_length: 524_288,
        first_burst_length: 131_072,
        default_time2wait: 5,
        default_time2retain: 0,
        max_outstanding_r2t: 8,
        data_pdu_in_order: true,
        data_sequence_in_order: true,
        error_recovery_level: 0,
    };
    assert_eq!(i, expected);
    assert_eq!(t, expected);
}

#[test]
fn first_burst_never_exceeds_max_burst() {
    // Our own offer is clamped before it is sent...
    let offer = OperationalOffer {
        max_burst_length: 16_384,
        first_burst_length: 65_536,
        ..OperationalOffer::default()
    };
    let proposals = Negotiation::new(Role::Initiator, offer.clone()).initial_proposals();
    assert!(proposals.contains(&("FirstBurstLength".to_string(), "16384".to_string())));
    // ...and the result is clamped when the other side lowers MaxBurstLength.
    let mut n = Negotiation::new(Role::Initiator, OperationalOffer::default());
    n.initial_proposals();
    n.handle_peer_pairs(&pairs(&[
        ("MaxBurstLength", "4096"),
        ("FirstBurstLength", "65536"),
    ]))
    .unwrap();
    assert_eq!(n.params().max_burst_length, 4096);
    assert_eq!(n.params().first_burst_length, 4096);
    let (i, _) = run(OperationalOffer::default(), offer);
    assert_eq!((i.max_burst_length, i.first_burst_length), (16_384, 16_384));
}

/// The initiator proposes `offer`, the target answers `key=answer`.
fn answer(
    offer: OperationalOffer,
    key: &str,
    answer: &str,
) -> Result<OperationalParams, NegotiationError> {
    let mut n = Negotiation::new(Role::Initiator, offer);
    n.initial_proposals();
    let replies = n.handle_peer_pairs(&pairs(&[(key, answer)]))?;
    assert_eq!(replies, vec![], "an answer is not answered");
    Ok(n.params())
}

fn digests(list: &[DigestChoice]) -> OperationalOffer {
    OperationalOffer {
        header_digests: list.to_vec(),
        data_digests: list.to_vec(),
        ..OperationalOffer::default()
    }
}

#[test]
fn answers_to_list_proposals() {
    use DigestChoice::*;
    let both = digests(&[Crc32c, None]);
    assert!(
        answer(both.clone(), "HeaderDigest", "CRC32C")
            .unwrap()
            .header_digest
    );
    assert!(
        !answer(both.clone(), "HeaderDigest", "None")
            .unwrap()
            .header_digest
    );
    assert!(
        answer(both.clone(), "DataDigest", "CRC32C")
            .unwrap()
            .data_digest
    );
    for bad in ["CRC32C,None", "MD5", "", "crc32c"] {
        assert!(
            matches!(
                answer(both.clone(), "HeaderDigest", bad),
                Err(NegotiationError::AnswerNotAdmissible { ref key, .. }) if key == "HeaderDigest"
            ),
            "answer {bad:?}"
        );
    }
    // A value we did not offer.
    assert!(matches!(
        answer(digests(&[None]), "DataDigest", "CRC32C"),
        Err(NegotiationError::AnswerNotAdmissible { .. })
    ));
    assert!(matches!(
        answer(digests(&[Crc32c]), "DataDigest", "None"),
        Err(NegotiationError::AnswerNotAdmissible { .. })
    ));
}

#[test]
fn answers_to_numerical_proposals() {
    let offer = OperationalOffer {
        max_burst_length: 262_144,
        default_time2wait: 2,
        default_time2retain: 20,
        error_recovery_level: 2,
        max_connections: 4,
        ..OperationalOffer::default()
    };
    type Check = fn(&OperationalParams) -> u32;
    let burst: Check = |p| p.max_burst_length;
    let wait: Check = |p| p.default_time2wait.into();
    let retain: Check = |p| p.default_time2retain.into();
    let erl: Check = |p| p.error_recovery_level.into();
    let conns: Check = |p| p.max_connections.into();
    // (key, answer, expected result or None for an error)
    let cases: &[(&str, &str, Check, Option<u32>)] = &[
        ("MaxBurstLength", "65536", burst, Some(65536)),
        ("MaxBurstLength", "262144", burst, Some(262_144)),
        ("MaxBurstLength", "0x10000", burst, Some(65536)),
        ("MaxBurstLength", "512", burst, Some(512)),
        ("MaxBurstLength", "524288", burst, None), // more than offered (min)
        ("MaxBurstLength", "511", burst, None),    // below the range
        ("MaxBurstLength", "16777216", burst, None),
        ("MaxBurstLength", "99999999999999999999999", burst, None),
        ("MaxBurstLength", "-1", burst, None),
        ("MaxBurstLength", "abc", burst, None),
        ("MaxBurstLength", "", burst, None),
        ("MaxBurstLength", " 512", burst, None),
        ("DefaultTime2Wait", "5", wait, Some(5)),
        ("DefaultTime2Wait", "2", wait, Some(2)),
        ("DefaultTime2Wait", "1", wait, None), // less than offered (max)
        ("DefaultTime2Wait", "3601", wait, None),
        ("DefaultTime2Retain", "0", retain, Some(0)),
        ("DefaultTime2Retain", "21", retain, None),
        ("ErrorRecoveryLevel", "1", erl, Some(1)),
        ("ErrorRecoveryLevel", "3", erl, None),
        ("MaxConnections", "1", conns, Some(1)),
        ("MaxConnections", "0", conns, None),
        ("MaxConnections", "5", conns, None),
    ];
    for &(key, value, get, expected) in cases {
        let result = answer(offer.clone(), key, value);
        match expected {
            Some(v) => assert_eq!(get(&result.unwrap()), v, "{key}={value}"),
            None => {
                let err = result.expect_err(&format!("{key}={value} must fail"));
                let named = match &err {
                    NegotiationError::InvalidValue { key: k, .. }
                    | NegotiationError::OutOfRange { key: k, .. }
                    | NegotiationError::AnswerNotAdmissible { key: k, .. } => k,
                    other => panic!("{key}={value}: unexpected {other:?}"),
                };
                assert_eq!(named, key);
            }
        }
    }
}

#[test]
fn answers_to_boolean_proposals() {
    // (key, our offer, answer, expected result or None for an error)
    let cases: &[(&str, bool, &str, Option<bool>)] = &[
        ("ImmediateData", true, "Yes", Some(true)),
        ("ImmediateData", true, "No", Some(false)),
        ("ImmediateData", false, "No", Some(false)),
        ("ImmediateData", false, "Yes", None), // AND with No cannot give Yes
        ("InitialR2T", false, "No", Some(false)),
        ("InitialR2T", false, "Yes", Some(true)),
        ("InitialR2T", true, "Yes", Some(true)),
        ("InitialR2T", true, "No", None), // OR with Yes cannot give No
        ("DataPDUInOrder", false, "Yes", Some(true)),
        ("DataSequenceInOrder", true, "No", None),
        ("ImmediateData", true, "yes", None),
        ("InitialR2T", false, "1", None),
    ];
    for &(key, ours, value, expected) in cases {
        let offer = match key {
            "ImmediateData" => OperationalOffer {
                immediate_data: ours,
                ..OperationalOffer::default()
            },
            "InitialR2T" => OperationalOffer {
                initial_r2t: ours,
                ..OperationalOffer::default()
            },
            "DataPDUInOrder" => OperationalOffer {
                data_pdu_in_order: ours,
                ..OperationalOffer::default()
            },
            _ => OperationalOffer {
                data_sequence_in_order: ours,
                ..OperationalOffer::default()
            },
        };
        let result = answer(offer, key, value);
        let get = |p: &OperationalParams| match key {
            "ImmediateData" => p.immediate_data,
            "InitialR2T" => p.initial_r2t,
            "DataPDUInOrder" => p.data_pdu_in_order,
            _ => p.data_sequence_in_order,
        };
        match expected {
            Some(v) => assert_eq!(
                get(&result.unwrap()),
                v,
                "{key}={value} after offering {ours}"
            ),
            None => assert!(
                result.is_err(),
                "{key}={value} after offering {ours} must fail"
            ),
        }
    }
}

#[test]
fn reject_irrelevant_and_not_understood_keep_the_default() {
    let offer = OperationalOffer {
        max_burst_length: 65_536,
        immediate_data: false,
        header_digests: vec![DigestChoice::Crc32c],
        ..OperationalOffer::default()
    };
    for constant in ["Reject", "Irrelevant", "NotUnderstood"] {
        let mut n = Negotiation::new(Role::Initiator, offer.clone());
        n.initial_proposals();
        let replies = n
            .handle_peer_pairs(&pairs(&[
                ("MaxBurstLength", constant),
                ("ImmediateData", constant),
                ("HeaderDigest", constant),
            ]))
            .unwrap();
        assert_eq!(replies, vec![]);
        let p = n.params();
        assert_eq!(p.max_burst_length, 262_144, "{constant}");
        assert!(
            p.immediate_data,
            "{constant}: ImmediateData back to its default"
        );
        assert!(!p.header_digest, "{constant}");
    }
}

/// The target (default offer changed by `target`) answers the initiator's proposal.
fn respond(
    target: OperationalOffer,
    key: &str,
    value: &str,
) -> (Vec<(String, String)>, OperationalParams) {
    let mut n = Negotiation::new(Role::Target, target);
    let replies = n.handle_peer_pairs(&pairs(&[(key, value)])).unwrap();
    (replies, n.params())
}

#[test]
fn responses_to_proposals_follow_each_rule() {
    use DigestChoice::*;
    let default = OperationalOffer::default;
    let cases: Vec<(OperationalOffer, &str, &str, &str)> = vec![
        // lists: the first value of the proposal that we support
        (digests(&[None]), "HeaderDigest", "CRC32C,None", "None"),
        (digests(&[Crc32c]), "HeaderDigest", "CRC32C,None", "CRC32C"),
        (
            digests(&[None, Crc32c]),
            "HeaderDigest",
            "CRC32C,None",
            "CRC32C",
        ),
        (
            digests(&[Crc32c, None]),
            "DataDigest",
            "MD5,None,CRC32C",
            "None",
        ),
        (digests(&[None]), "DataDigest", "CRC32C", "Reject"),
        (digests(&[Crc32c]), "DataDigest", "None", "Reject"),
        (digests(&[None]), "DataDigest", "MD5", "Reject"),
        (digests(&[None]), "DataDigest", ",,", "Reject"),
        // numerical min / max
        (default(), "MaxBurstLength", "1048576", "262144"),
        (default(), "MaxBurstLength", "4096", "4096"),
        (default(), "MaxBurstLength", "0x1000", "4096"),
        (default(), "MaxBurstLength", "100", "Reject"),
        (default(), "MaxBurstLength", "16777216", "Reject"),
        (default(), "MaxBurstLength", "lots", "Reject"),
        (default(), "FirstBurstLength", "1048576", "65536"),
        (default(), "MaxConnections", "8", "1"),
        (default(), "MaxConnections", "0", "Reject"),
        (default(), "MaxOutstandingR2T", "4", "1"),
        (default(), "DefaultTime2Wait", "0", "2"),
        (default(), "DefaultTime2Wait", "30", "30"),
        (default(), "DefaultTime2Wait", "3601", "Reject"),
        (default(), "DefaultTime2Retain", "3600", "20"),
        (default(), "DefaultTime2Retain", "0", "0"),
        (default(), "ErrorRecoveryLevel", "2", "0"),
        (default(), "ErrorRecoveryLevel", "3", "Reject"),
        // Boolean AND / OR
        (default(), "ImmediateData", "Yes", "Yes"),
        (default(), "ImmediateData", "No", "No"),
        (
            OperationalOffer {
                immediate_data: false,
                ..default()
            },
            "ImmediateData",
            "Yes",
            "No",
        ),
        (default(), "InitialR2T", "No", "Yes"),
        (
            OperationalOffer {
                initial_r2t: false,
                ..default()
            },
            "InitialR2T",
            "No",
            "No",
        ),
        (
            OperationalOffer {
                initial_r2t: false,
                ..default()
            },
            "InitialR2T",
            "Yes",
            "Yes",
        ),
        (
            OperationalOffer {
                data_sequence_in_order: false,
                ..default()
            },
            "DataSequenceInOrder",
            "No",
            "No",
        ),
        (default(), "DataPDUInOrder", "No", "Yes"),
        (default(), "ImmediateData", "Maybe", "Reject"),
        // keys outside the table
        (default(), "X-com.example.Feature", "1", "NotUnderstood"),
        (default(), "iSCSIProtocolLevel", "1", "NotUnderstood"),
        (default(), "TaskReporting", "FastAbort,RFC3720", "RFC3720"),
        (default(), "TaskReporting", "FastAbort", "Reject"),
        (default(), "IFMarker", "Yes", "No"),
        (default(), "OFMarkInt", "2048~8192", "Irrelevant"),
    ];
    for (offer, key, value, expected) in cases {
        let (replies, _) = respond(offer, key, value);
        assert_eq!(replies, pairs(&[(key, expected)]), "{key}={value}");
    }
}

#[test]
fn responses_are_recorded_and_rejections_keep_the_default() {
    let (_, p) = respond(OperationalOffer::default(), "MaxBurstLength", "4096");
    assert_eq!(p.max_burst_length, 4096);
    let (_, p) = respond(OperationalOffer::default(), "MaxBurstLength", "100");
    assert_eq!(p.max_burst_length, 262_144);
    let (_, p) = respond(
        digests(&[DigestChoice::Crc32c]),
        "HeaderDigest",
        "CRC32C,None",
    );
    assert!(p.header_digest);
    let (_, p) = respond(OperationalOffer::default(), "ImmediateData", "No");
    assert!(!p.immediate_data);
}

#[test]
fn a_key_is_negotiated_only_once() {
    let mut n = Negotiation::new(Role::Target, OperationalOffer::default());
    n.handle_peer_pairs(&pairs(&[("MaxBurstLength", "4096")]))
        .unwrap();
    assert!(matches!(
        n.handle_peer_pairs(&pairs(&[("MaxBurstLength", "8192")])),
        Err(NegotiationError::Renegotiated { ref key, .. }) if key == "MaxBurstLength"
    ));
    // An answer may come only once too.
    let mut n = Negotiation::new(Role::Initiator, OperationalOffer::default());
    n.initial_proposals();
    n.handle_peer_pairs(&pairs(&[("MaxBurstLength", "4096")]))
        .unwrap();
    assert!(matches!(
        n.handle_peer_pairs(&pairs(&[("MaxBurstLength", "4096")])),
        Err(NegotiationError::Renegotiated { .. })
    ));
    // And so may a declaration.
    let mut n = Negotiation::new(Role::Initiator, OperationalOffer::default());
    n.handle_peer_pairs(&pairs(&[("MaxRecvDataSegmentLength", "65536")]))
        .unwrap();
    assert!(matches!(
        n.handle_peer_pairs(&pairs(&[("MaxRecvDataSegmentLength", "65536")])),
        Err(NegotiationError::Renegotiated { .. })
    ));
}

#[test]
fn a_peer_proposal_is_not_proposed_again() {
    let mut n = Negotiation::new(Role::Initiator, OperationalOffer::default());
    let replies = n
        .handle_peer_pairs(&pairs(&[("MaxBurstLength", "65536")]))
        .unwrap();
    assert_eq!(replies, pairs(&[("MaxBurstLength", "65536")]));
    let proposals = n.initial_proposals();
    assert!(proposals.iter().all(|(k, _)| k != "MaxBurstLength"));
    assert_eq!(proposals.len(), 13);
    assert_eq!(n.params().max_burst_length, 65536);
}

#[test]
fn max_recv_data_segment_length_is_declared_per_direction() {
    let offer = OperationalOffer {
        max_recv_data_segment_length: 262_144,
        ..OperationalOffer::default()
    };
    // The target hears the initiator's declaration first and declares its own in reply.
    let mut target = Negotiation::new(Role::Target, offer.clone());
    let replies = target
        .handle_peer_pairs(&pairs(&[("MaxRecvDataSegmentLength", "65536")]))
        .unwrap();
    assert_eq!(replies, pairs(&[("MaxRecvDataSegmentLength", "262144")]));
    assert_eq!(
        target.params().initiator_max_recv_data_segment_length,
        65536
    );
    assert_eq!(target.params().target_max_recv_data_segment_length, 262_144);
    assert!(target
        .initial_proposals()
        .iter()
        .all(|(k, _)| k != "MaxRecvDataSegmentLength"));

    // The initiator declared already: the target's declaration is only recorded.
    let mut initiator = Negotiation::new(Role::Initiator, offer);
    initiator.initial_proposals();
    let replies = initiator
        .handle_peer_pairs(&pairs(&[("MaxRecvDataSegmentLength", "16384")]))
        .unwrap();
    assert_eq!(replies, vec![]);
    assert_eq!(
        initiator.params().target_max_recv_data_segment_length,
        16384
    );
    assert_eq!(
        initiator.params().initiator_max_recv_data_segment_length,
        262_144
    );

    // An undeclared side keeps the default of 8192.
    let n = Negotiation::new(Role::Initiator, OperationalOffer::default());
    assert_eq!(n.params().target_max_recv_data_segment_length, 8192);

    for bad in ["511", "16777216", "big", "Reject"] {
        let mut n = Negotiation::new(Role::Initiator, OperationalOffer::default());
        n.initial_proposals();
        let result = n.handle_peer_pairs(&pairs(&[("MaxRecvDataSegmentLength", bad)]));
        assert!(result.is_err(), "MaxRecvDataSegmentLength={bad}");
    }
}

#[test]
fn completion_waits_for_required_answers_only() {
    let offer = OperationalOffer {
        immediate_data: false,
        ..OperationalOffer::default()
    };
    let mut n = Negotiation::new(Role::Initiator, offer);
    n.initial_proposals();
    // Without ImmediateData (AND with No) and the three OR-with-Yes keys.
    let answers = pairs(&[
        ("HeaderDigest", "None"),
        ("DataDigest", "None"),
        ("MaxConnections", "1"),
        ("MaxBurstLength", "262144"),
        ("FirstBurstLength", "65536"),
        ("DefaultTime2Wait", "2"),
        ("DefaultTime2Retain", "20"),
        ("MaxOutstandingR2T", "1"),
    ]);
    n.handle_peer_pairs(&answers).unwrap();
    assert_eq!(n.pending_answers(), 1);
    assert!(!n.is_complete());
    n.handle_peer_pairs(&pairs(&[("ErrorRecoveryLevel", "0")]))
        .unwrap();
    assert!(n.is_complete());
    assert!(!n.params().immediate_data);
    // A late optional answer is still checked.
    assert!(n
        .handle_peer_pairs(&pairs(&[("ImmediateData", "Yes")]))
        .is_err());
}

#[test]
fn answers_to_keys_never_proposed_are_ignored() {
    let mut n = Negotiation::new(Role::Initiator, OperationalOffer::default());
    let replies = n
        .handle_peer_pairs(&pairs(&[
            ("MaxBurstLength", "Reject"),
            ("X-vendor.thing", "NotUnderstood"),
        ]))
        .unwrap();
    assert_eq!(replies, vec![]);
    assert_eq!(n.params(), OperationalParams::default());
}

#[test]
fn discovery_sessions_negotiate_only_relevant_keys() {
    let mut n = Negotiation::with_session_kind(
        Role::Initiator,
        OperationalOffer::default(),
        SessionKind::Discovery,
    );
    let keys: Vec<String> = n.initial_proposals().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "HeaderDigest",
            "DataDigest",
            "MaxRecvDataSegmentLength",
            "DefaultTime2Wait",
            "DefaultTime2Retain",
            "ErrorRecoveryLevel"
        ]
    );
    let replies = n
        .handle_peer_pairs(&pairs(&[
            ("MaxBurstLength", "65536"),
            ("ImmediateData", "No"),
        ]))
        .unwrap();
    assert_eq!(
        replies,
        pairs(&[
            ("MaxBurstLength", "Irrelevant"),
            ("ImmediateData", "Irrelevant")
        ])
    );
    assert_eq!(n.params().max_burst_length, 262_144);

    let offer = OperationalOffer {
        max_recv_data_segment_length: 32768,
        ..OperationalOffer::default()
    };
    let (i, t) = run_kind(offer.clone(), offer, SessionKind::Discovery);
    assert_eq!(i, t);
    assert_eq!(i.initiator_max_recv_data_segment_length, 32768);
}

#[test]
fn key_table_matches_section_13() {
    assert_eq!(key_rule("HeaderDigest"), Some(KeyRule::List));
    assert_eq!(key_rule("DataDigest"), Some(KeyRule::List));
    assert_eq!(
        key_rule("MaxConnections"),
        Some(KeyRule::NumericalMin { min: 1, max: 65535 })
    );
    assert_eq!(key_rule("InitialR2T"), Some(KeyRule::BooleanOr));
    assert_eq!(key_rule("ImmediateData"), Some(KeyRule::BooleanAnd));
    assert_eq!(
        key_rule("MaxRecvDataSegmentLength"),
        Some(KeyRule::Declarative)
    );
    assert_eq!(
        key_rule("MaxBurstLength"),
        Some(KeyRule::NumericalMin {
            min: 512,
            max: 16_777_215
        })
    );
    assert_eq!(
        key_rule("FirstBurstLength"),
        Some(KeyRule::NumericalMin {
            min: 512,
            max: 16_777_215
        })
    );
    assert_eq!(
        key_rule("DefaultTime2Wait"),
        Some(KeyRule::NumericalMax { min: 0, max: 3600 })
    );
    assert_eq!(
        key_rule("DefaultTime2Retain"),
        Some(KeyRule::NumericalMin { min: 0, max: 3600 })
    );
    assert_eq!(
        key_rule("MaxOutstandingR2T"),
        Some(KeyRule::NumericalMin { min: 1, max: 65535 })
    );
    assert_eq!(key_rule("DataPDUInOrder"), Some(KeyRule::BooleanOr));
    assert_eq!(key_rule("DataSequenceInOrder"), Some(KeyRule::BooleanOr));
    assert_eq!(
        key_rule("ErrorRecoveryLevel"),
        Some(KeyRule::NumericalMin { min: 0, max: 2 })
    );
    assert_eq!(key_rule("AuthMethod"), None);
    assert_eq!(
        key_rule("maxburstlength"),
        None,
        "key names are case-sensitive"
    );
}

#[test]
fn operational_keys_are_told_from_session_and_security_keys() {
    for key in [
        "HeaderDigest",
        "MaxBurstLength",
        "TaskReporting",
        "X-com.example.k",
        "IFMarker",
    ] {
        assert!(is_operational_key(key), "{key}");
    }
    for key in [
        "AuthMethod",
        "CHAP_A",
        "CHAP_R",
        "SRP_U",
        "KRB_AP_REQ",
        "SPKM_REQ",
        "InitiatorName",
        "TargetName",
        "SessionType",
        "TargetAlias",
        "InitiatorAlias",
        "TargetAddress",
        "TargetPortalGroupTag",
        "SendTargets",
    ] {
        assert!(!is_operational_key(key), "{key}");
    }
}

fn digest_list_strategy() -> impl Strategy<Value = Vec<DigestChoice>> {
    prop_oneof![
        Just(vec![DigestChoice::None]),
        Just(vec![DigestChoice::Crc32c]),
        Just(vec![DigestChoice::None, DigestChoice::Crc32c]),
        Just(vec![DigestChoice::Crc32c, DigestChoice::None]),
    ]
}

prop_compose! {
    fn offer_strategy()(
        header_digests in digest_list_strategy(),
        data_digests in digest_list_strategy(),
        max_connections in 1u16..=65535,
        flags in any::<[bool; 4]>(),
        max_recv_data_segment_length in 512u32..=16_777_215,
        max_burst_length in 512u32..=16_777_215,
        first_burst_length in 512u32..=16_777_215,
        default_time2wait in 0u16..=3600,
        default_time2retain in 0u16..=3600,
        max_outstanding_r2t in 1u16..=65535,
        error_recovery_level in 0u8..=2,
    ) -> OperationalOffer {
        OperationalOffer {
            header_digests, data_digests, max_connections,
            initial_r2t: flags[0], immediate_data: flags[1],
            max_recv_data_segment_length, max_burst_length, first_burst_length,
            default_time2wait, default_time2retain, max_outstanding_r2t,
            data_pdu_in_order: flags[2], data_sequence_in_order: flags[3],
            error_recovery_level,
        }
    }
}

proptest! {
    #[test]
    fn any_two_valid_offers_agree(i in offer_strategy(), t in offer_strategy()) {
        let (pi, pt) = run(i.clone(), t.clone());
        prop_assert_eq!(&pi, &pt);
        prop_assert_eq!(pi.max_burst_length, i.max_burst_length.min(t.max_burst_length));
        prop_assert!(pi.first_burst_length <= pi.max_burst_length);
        prop_assert_eq!(pi.default_time2wait, i.default_time2wait.max(t.default_time2wait));
        prop_assert_eq!(pi.default_time2retain, i.default_time2retain.min(t.default_time2retain));
        prop_assert_eq!(pi.error_recovery_level, i.error_recovery_level.min(t.error_recovery_level));
        prop_assert_eq!(pi.max_connections, i.max_connections.min(t.max_connections));
        prop_assert_eq!(pi.initial_r2t, i.initial_r2t || t.initial_r2t);
        prop_assert_eq!(pi.immediate_data, i.immediate_data && t.immediate_data);
        prop_assert_eq!(pi.initiator_max_recv_data_segment_length, i.max_recv_data_segment_length);
        prop_assert_eq!(pi.target_max_recv_data_segment_length, t.max_recv_data_segment_length);
        // The digest is the initiator's first choice that the target accepts, or the
        // default None when the target rejects the whole list.
        let expected = i.header_digests.iter().find(|c| t.header_digests.contains(c));
        prop_assert_eq!(pi.header_digest, expected == Some(&DigestChoice::Crc32c));
    }

    #[test]
    fn peer_pairs_never_panic(
        list in proptest::collection::vec(
            (prop_oneof![
                Just("MaxBurstLength".to_string()), Just("HeaderDigest".to_string()),
                Just("ImmediateData".to_string()), Just("MaxRecvDataSegmentLength".to_string()),
                Just("DefaultTime2Wait".to_string()), Just("X-y".to_string()),
            ], "[ -~]{0,12}"),
            0..8,
        ),
        propose_first in any::<bool>(),
    ) {
        let mut n = Negotiation::new(Role::Initiator, OperationalOffer::default());
        if propose_first {
            n.initial_proposals();
        }
        let _ = n.handle_peer_pairs(&list);
        let p = n.params();
        prop_assert!(p.first_burst_length <= p.max_burst_length);
    }
}

#[test]
fn target_originated_keys_are_answered_by_the_initiator() {
    // A target that speaks first (for example in a later login PDU) with its own wishes.
    let target_offer = OperationalOffer {
        max_burst_length: 65_536,
        default_time2wait: 10,
        initial_r2t: false,
        data_digests: vec![DigestChoice::Crc32c, DigestChoice::None],
        ..OperationalOffer::default()
    };
    let initiator_offer = OperationalOffer {
        data_digests: vec![DigestChoice::None, DigestChoice::Crc32c],
        initial_r2t: false,
        ..OperationalOffer::default()
    };
    let mut target = Negotiation::new(Role::Target, target_offer);
    let mut initiator = Negotiation::new(Role::Initiator, initiator_offer);
    let proposals = target.initial_proposals();
    assert_eq!(
        proposals,
        pairs(&[
            ("DataDigest", "CRC32C,None"),
            ("InitialR2T", "No"),
            ("MaxRecvDataSegmentLength", "8192"),
            ("MaxBurstLength", "65536"),
            ("DefaultTime2Wait", "10"),
        ])
    );
    assert_eq!(target.pending_answers(), 4);
    let replies = initiator.handle_peer_pairs(&proposals).unwrap();
    assert_eq!(
        replies,
        pairs(&[
            // The target's preference wins: it originated the list.
            ("DataDigest", "CRC32C"),
            ("InitialR2T", "No"),
            ("MaxRecvDataSegmentLength", "8192"),
            ("MaxBurstLength", "65536"),
            ("DefaultTime2Wait", "10"),
        ])
    );
    assert_eq!(target.handle_peer_pairs(&replies).unwrap(), vec![]);
    assert!(target.is_complete());
    // The initiator then proposes only what is left, and the target answers.
    let rest = initiator.initial_proposals();
    assert_eq!(rest.len(), 9);
    assert!(rest
        .iter()
        .all(|(k, _)| !["DataDigest", "InitialR2T", "MaxBurstLength"].contains(&k.as_str())));
    let answers = target.handle_peer_pairs(&rest).unwrap();
    assert_eq!(initiator.handle_peer_pairs(&answers).unwrap(), vec![]);
    assert!(initiator.is_complete());
    let p = initiator.params();
    assert_eq!(p, target.params());
    assert!(p.data_digest && !p.initial_r2t);
    assert_eq!(
        (
            p.max_burst_length,
            p.first_burst_length,
            p.default_time2wait
        ),
        (65_536, 65_536, 10)
    );
}
