//! Fuzzes the text parsers and the negotiation rules (RFC 7143 sections 6 and 13) with
//! what a peer could put in a Login or Text data segment.
#![no_main]

use datapath::text::{
    parse_pairs, parse_repeated_pairs, Negotiation, OperationalOffer, Role, TextAccumulator,
    TextLimits,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let limits = TextLimits::default();
    let _ = parse_repeated_pairs(bytes, &limits);
    // Text split over PDUs with the C bit, at every 7th byte.
    let mut accumulator = TextAccumulator::new(limits.max_text_len);
    let mut whole = None;
    let chunks: Vec<&[u8]> = bytes.chunks(7).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        match accumulator.push(chunk, i + 1 < chunks.len()) {
            Ok(Some(text)) => whole = Some(text),
            Ok(None) => {}
            Err(_) => return,
        }
    }
    if let Some(text) = whole {
        assert_eq!(text, bytes);
    }
    let Ok(pairs) = parse_pairs(bytes, &limits) else { return };
    for role in [Role::Initiator, Role::Target] {
        let mut negotiation = Negotiation::new(role, OperationalOffer::default());
        let _ = negotiation.initial_proposals();
        if negotiation.handle_peer_pairs(&pairs).is_ok() {
            let params = negotiation.params();
            assert!(params.first_burst_length <= params.max_burst_length);
        }
    }
});
