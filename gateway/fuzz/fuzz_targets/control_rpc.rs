//! Fuzzes the control plane's request parser (`gateway::control::rpc`) with what a local
//! client could send on the socket: any bytes as one request line. It must answer every
//! input with a typed call or a JSON-RPC error, never panic, and a parsed call must encode
//! back into a request that parses to the same call.
#![no_main]

use gateway::control::rpc::{encode_request, encode_response, parse_request, Id};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_request(data) {
        Ok(request) => {
            let line = encode_request(1, &request.call);
            let again = parse_request(&line[..line.len() - 1]).expect("our own encoding parses");
            assert_eq!(again.call, request.call);
        }
        Err(refusal) => {
            let _ = encode_response(&refusal.id, &Err(refusal.error));
            let _ = encode_response(&Id::Null, &Ok(serde_json::Value::Null));
        }
    }
});
