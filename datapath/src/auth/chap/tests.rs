//! Tests for CHAP. The MD5 vectors were computed independently with Python's hashlib:
//! `hashlib.md5(bytes([id]) + secret + challenge).hexdigest()`.

use super::*;
use proptest::prelude::*;

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn hex(s: &str) -> Vec<u8> {
    decode_binary(&format!("0x{s}")).unwrap()
}

const TARGET_CHALLENGE: &str = "0x00112233445566778899aabbccddeeff";
const OUR_CHALLENGE: &str = "a1a2a3a4a5a6a7a8a9aaabacadaeafb0";

#[test]
fn response_matches_fixed_vectors() {
    assert_eq!(
        chap_response(1, b"secretsecret", &hex("00112233445566778899aabbccddeeff")).to_vec(),
        hex("3d3d7f13199a65926f355637d73daf5c")
    );
    assert_eq!(
        chap_response(0x2a, b"target-secret-16", &hex(OUR_CHALLENGE)).to_vec(),
        hex("e28db64c7bab4d80a0f1f5950846c765")
    );
    assert_eq!(
        chap_response(200, b"", b"x").to_vec(),
        hex("b40962fc99cb15cea43baa2f67746874")
    );
}

#[test]
fn verify_response_accepts_only_the_right_answer() {
    let challenge = hex("00112233445566778899aabbccddeeff");
    let good = hex("3d3d7f13199a65926f355637d73daf5c");
    assert!(verify_response(1, b"secretsecret", &challenge, &good));
    assert!(!verify_response(2, b"secretsecret", &challenge, &good));
    assert!(!verify_response(1, b"secretsecreT", &challenge, &good));
    assert!(!verify_response(
        1,
        b"secretsecret",
        &challenge,
        &good[..15]
    ));
    let mut flipped = good.clone();
    flipped[15] ^= 1;
    assert!(!verify_response(1, b"secretsecret", &challenge, &flipped));
}

#[test]
fn binary_values_encode_as_lowercase_hex() {
    assert_eq!(encode_binary(&[0x00, 0xab, 0xff, 0x10]), "0x00abff10");
    assert_eq!(encode_binary(&[]), "0x");
}

#[test]
fn binary_values_decode_from_hex_and_base64() {
    let bytes = hex("00112233445566778899aabbccddeeff");
    assert_eq!(
        decode_binary("0X00112233445566778899AABBCCDDEEFF").unwrap(),
        bytes
    );
    assert_eq!(decode_binary("0bABEiM0RVZneImaq7zN3u/w==").unwrap(), bytes);
    assert_eq!(
        decode_binary("0BABEiM0RVZneImaq7zN3u/w").unwrap(),
        bytes,
        "padding is optional"
    );
    assert_eq!(decode_binary("0b+/8=").unwrap(), vec![0xfb, 0xff]);
    assert_eq!(decode_binary("0bYQ==").unwrap(), b"a");
    assert_eq!(decode_binary("0bYWJj").unwrap(), b"abc");
    assert_eq!(
        decode_binary("0xabc").unwrap(),
        vec![0x0a, 0xbc],
        "odd digit count"
    );
    let round = encode_binary(&bytes);
    assert_eq!(decode_binary(&round).unwrap(), bytes);
}

#[test]
fn malformed_binary_values_are_refused() {
    for bad in [
        "", "0", "0x", "0b", "00ff", "0xgg", "0x12 34", "0b====", "0bY", "0bYQ=", "0bY!==", "ff",
        "0z12",
    ] {
        assert!(
            matches!(decode_binary(bad), Err(ChapError::InvalidBinary { .. })),
            "{bad:?} -> {:?}",
            decode_binary(bad)
        );
    }
    let long = format!("0x{}", "ab".repeat(MAX_BINARY_LEN + 1));
    assert_eq!(
        decode_binary(&long),
        Err(ChapError::BinaryTooLong {
            len: MAX_BINARY_LEN + 1,
            max: MAX_BINARY_LEN
        })
    );
    let at_limit = format!("0x{}", "ab".repeat(MAX_BINARY_LEN));
    assert_eq!(decode_binary(&at_limit).unwrap().len(), MAX_BINARY_LEN);
    let long64 = format!("0b{}", "AAAA".repeat(MAX_BINARY_LEN / 3 + 1));
    assert!(matches!(
        decode_binary(&long64),
        Err(ChapError::BinaryTooLong { .. })
    ));
}

fn target_challenge_pairs() -> Vec<(String, String)> {
    pairs(&[
        ("CHAP_A", "5"),
        ("CHAP_I", "1"),
        ("CHAP_C", TARGET_CHALLENGE),
    ])
}

#[test]
fn one_way_exchange() {
    let mut chap = InitiatorChap::new(
        "alice".into(),
        b"secretsecret".to_vec(),
        None,
        hex(OUR_CHALLENGE),
        0x2a,
    );
    assert_eq!(chap.first_pairs(), pairs(&[("CHAP_A", "5")]));
    assert!(!chap.is_done());
    let out = chap.handle_target_pairs(&target_challenge_pairs()).unwrap();
    assert_eq!(
        out,
        pairs(&[
            ("CHAP_N", "alice"),
            ("CHAP_R", "0x3d3d7f13199a65926f355637d73daf5c")
        ])
    );
    assert!(chap.is_done());
    assert!(!chap.is_mutual_pending());
    assert!(!chap.is_target_verified());
    // Nothing more is expected; a stray CHAP key is an error.
    assert_eq!(chap.handle_target_pairs(&[]).unwrap(), vec![]);
    assert!(matches!(
        chap.handle_target_pairs(&pairs(&[("CHAP_R", "0x00")])),
        Err(ChapError::UnexpectedKey { .. })
    ));
}

fn mutual_chap() -> InitiatorChap {
    InitiatorChap::new(
        "alice".into(),
        b"secretsecret".to_vec(),
        Some(("target-user".into(), b"target-secret-16".to_vec())),
        hex(OUR_CHALLENGE),
        0x2a,
    )
}

#[test]
fn mutual_exchange() {
    let mut chap = mutual_chap();
    let out = chap.handle_target_pairs(&target_challenge_pairs()).unwrap();
    assert_eq!(
        out,
        pairs(&[
            ("CHAP_N", "alice"),
            ("CHAP_R", "0x3d3d7f13199a65926f355637d73daf5c"),
            ("CHAP_I", "42"),
            ("CHAP_C", "0xa1a2a3a4a5a6a7a8a9aaabacadaeafb0"),
        ])
    );
    assert!(chap.is_mutual_pending());
    assert!(!chap.is_done());
    let final_pairs = pairs(&[
        ("CHAP_N", "target-user"),
        ("CHAP_R", "0xe28db64c7bab4d80a0f1f5950846c765"),
    ]);
    assert_eq!(chap.handle_target_pairs(&final_pairs).unwrap(), vec![]);
    assert!(chap.is_done());
    assert!(chap.is_target_verified());
}

#[test]
fn mutual_exchange_fails_on_a_wrong_target_response() {
    let mut chap = mutual_chap();
    chap.handle_target_pairs(&target_challenge_pairs()).unwrap();
    let wrong = pairs(&[
        ("CHAP_N", "target-user"),
        ("CHAP_R", "0xe28db64c7bab4d80a0f1f5950846c764"),
    ]);
    assert_eq!(
        chap.handle_target_pairs(&wrong),
        Err(ChapError::TargetResponseMismatch)
    );
    assert!(!chap.is_target_verified());

    let mut chap = mutual_chap();
    chap.handle_target_pairs(&target_challenge_pairs()).unwrap();
    let wrong_name = pairs(&[
        ("CHAP_N", "mallory"),
        ("CHAP_R", "0xe28db64c7bab4d80a0f1f5950846c765"),
    ]);
    assert!(matches!(
        chap.handle_target_pairs(&wrong_name),
        Err(ChapError::TargetNameMismatch { .. })
    ));

    let mut chap = mutual_chap();
    chap.handle_target_pairs(&target_challenge_pairs()).unwrap();
    assert_eq!(
        chap.handle_target_pairs(&pairs(&[("CHAP_N", "target-user")])),
        Err(ChapError::MissingKey { key: "CHAP_R" })
    );
}

#[test]
fn bad_target_challenges_are_refused() {
    let run = |list: &[(&str, &str)]| mutual_chap().handle_target_pairs(&pairs(list));
    let reflected = format!("0x{OUR_CHALLENGE}");
    assert_eq!(
        run(&[("CHAP_A", "5"), ("CHAP_I", "1"), ("CHAP_C", &reflected)]),
        Err(ChapError::ReflectedChallenge)
    );
    assert_eq!(
        run(&[("CHAP_A", "5"), ("CHAP_I", "1"), ("CHAP_C", "0x")]),
        Err(ChapError::EmptyChallenge)
    );
    assert!(matches!(
        run(&[
            ("CHAP_A", "7"),
            ("CHAP_I", "1"),
            ("CHAP_C", TARGET_CHALLENGE)
        ]),
        Err(ChapError::UnsupportedAlgorithm { .. })
    ));
    assert!(matches!(
        run(&[
            ("CHAP_A", "Reject"),
            ("CHAP_I", "1"),
            ("CHAP_C", TARGET_CHALLENGE)
        ]),
        Err(ChapError::UnsupportedAlgorithm { .. })
    ));
    assert_eq!(
        run(&[("CHAP_I", "1"), ("CHAP_C", TARGET_CHALLENGE)]),
        Err(ChapError::MissingKey { key: "CHAP_A" })
    );
    assert_eq!(
        run(&[("CHAP_A", "5"), ("CHAP_C", TARGET_CHALLENGE)]),
        Err(ChapError::MissingKey { key: "CHAP_I" })
    );
    assert_eq!(
        run(&[("CHAP_A", "5"), ("CHAP_I", "1")]),
        Err(ChapError::MissingKey { key: "CHAP_C" })
    );
    for id in ["256", "-1", "", "one", "0x100"] {
        assert!(
            matches!(
                run(&[
                    ("CHAP_A", "5"),
                    ("CHAP_I", id),
                    ("CHAP_C", TARGET_CHALLENGE)
                ]),
                Err(ChapError::InvalidIdentifier { .. })
            ),
            "CHAP_I={id}"
        );
    }
    assert!(matches!(
        run(&[("CHAP_A", "5"), ("CHAP_I", "1"), ("CHAP_C", "0xzz")]),
        Err(ChapError::InvalidBinary { .. })
    ));
    assert!(matches!(
        run(&[
            ("CHAP_A", "5"),
            ("CHAP_I", "1"),
            ("CHAP_C", TARGET_CHALLENGE),
            ("CHAP_N", "x")
        ]),
        Err(ChapError::UnexpectedKey { .. })
    ));
}

#[test]
fn identifier_may_be_hex_and_other_keys_are_ignored() {
    let mut chap = InitiatorChap::new(
        "alice".into(),
        b"secretsecret".to_vec(),
        None,
        hex(OUR_CHALLENGE),
        0,
    );
    let out = chap
        .handle_target_pairs(&pairs(&[
            ("CHAP_A", "5"),
            ("CHAP_I", "0x01"),
            ("CHAP_C", "0bABEiM0RVZneImaq7zN3u/w=="),
            ("TargetPortalGroupTag", "1"),
        ]))
        .unwrap();
    assert_eq!(
        out[1],
        (
            "CHAP_R".to_string(),
            "0x3d3d7f13199a65926f355637d73daf5c".to_string()
        )
    );
}

proptest! {
    #[test]
    fn hex_and_base64_round_trip(bytes in proptest::collection::vec(any::<u8>(), 1..200)) {
        prop_assert_eq!(decode_binary(&encode_binary(&bytes)).unwrap(), bytes.clone());
        // Base64 written here independently of the decoder.
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut b64 = String::from("0b");
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, &b| acc << 8 | u32::from(b)) << (8 * (3 - chunk.len()));
            for i in 0..4 {
                if i <= chunk.len() {
                    b64.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    b64.push('=');
                }
            }
        }
        prop_assert_eq!(decode_binary(&b64).unwrap(), bytes);
    }

    #[test]
    fn decode_never_panics(value in "[0-9a-zA-Z+/=xXbB ]{0,40}") {
        let _ = decode_binary(&value);
    }

    #[test]
    fn target_pairs_never_panic(
        list in proptest::collection::vec(
            (prop_oneof![Just("CHAP_A"), Just("CHAP_I"), Just("CHAP_C"), Just("CHAP_N"), Just("CHAP_R")],
             "[ -~]{0,20}"),
            0..6,
        )
    ) {
        let list: Vec<(String, String)> = list.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let mut chap = mutual_chap();
        let _ = chap.handle_target_pairs(&list);
        let _ = chap.handle_target_pairs(&list);
    }
}
