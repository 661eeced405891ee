//! Fuzzes `decode_pdu` (RFC 7143 section 11) under every digest setting. Whatever decodes
//! must re-encode to a PDU that decodes to the same header and data.
#![no_main]

use datapath::pdu::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let limits = Limits::default();
    // Every digest setting: none, header only, data only, both.
    for setting in 0u8..4 {
        let digests = Digests {
            header: setting & 1 != 0,
            data: setting & 2 != 0,
        };
        let Ok(Some(decoded)) = decode_pdu(bytes, digests, &limits) else {
            continue;
        };
        assert!(decoded.consumed <= bytes.len());
        assert!(decoded.data.end <= decoded.consumed);
        let data = &bytes[decoded.data.clone()];

        // The typed data helpers must not panic either.
        match decoded.header.opcode() {
            Opcode::ScsiResponse => {
                let _ = split_scsi_response_data(data);
            }
            Opcode::Reject => {
                let _ = rejected_header(data);
            }
            _ => {}
        }

        let mut again = Vec::new();
        encode_pdu(&decoded.header, data, digests, &mut again).expect("a decoded PDU re-encodes");
        let redecoded = decode_pdu(&again, digests, &limits)
            .expect("a re-encoded PDU decodes")
            .expect("a re-encoded PDU is whole");
        assert_eq!(redecoded.header, decoded.header);
        assert_eq!(&again[redecoded.data], data);
        assert_eq!(redecoded.consumed, again.len());
    }
});
