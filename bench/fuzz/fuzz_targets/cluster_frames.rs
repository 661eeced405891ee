//! Fuzzes the cluster protocol's frame reader and message decoder (`bench::cluster::
//! protocol`) as an agent or controller meets a hostile peer: bytes cut at a fuzzed point,
//! under the handshake's limit and the full one. Nothing may panic; a frame over the limit
//! is refused from its prefix; whatever decodes must encode and decode to itself; the
//! handshake checks must refuse without panicking.
#![no_main]

use bench::cluster::protocol::{self, FrameReader, Message, ProtocolError, PROTOCOL};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let cut = bytes.first().map_or(0, |b| usize::from(*b)).min(bytes.len());
    for limit in [protocol::HANDSHAKE_FRAME_MAX_BYTES, protocol::FRAME_MAX_BYTES] {
        let mut reader = FrameReader::new(limit);
        reader.push(&bytes[..cut]);
        let mut decoded: Vec<Message> = Vec::new();
        let drain = |reader: &mut FrameReader, decoded: &mut Vec<Message>| {
            for _ in 0..64 {
                match reader.next_message() {
                    Ok(Some(message)) => decoded.push(message),
                    Ok(None) => return,
                    Err(ProtocolError::FrameTooLarge { length, limit }) => {
                        assert!(length > limit);
                        return;
                    }
                    Err(_) => {}
                }
            }
        };
        drain(&mut reader, &mut decoded);
        reader.push(&bytes[cut..]);
        drain(&mut reader, &mut decoded);
        assert!(reader.wanted() >= 1);
        for message in decoded {
            let frame = protocol::encode(&message);
            let mut again = FrameReader::new(usize::MAX);
            again.push(&frame);
            assert_eq!(again.next_message().ok().flatten(), Some(message.clone()));
            let _ = protocol::check_controller_hello(PROTOCOL, &message, "00", b"token");
            let _ = protocol::answer_agent_hello(PROTOCOL, &message, b"token");
            let _ = protocol::read_verdict(&message);
        }
    }
    // The body decoder alone, on the whole input.
    let _ = protocol::decode_body(bytes);
});
