//! The changed-block map's checkpoint decoder (`gateway::changes::ChangeMap::decode`):
//! any bytes are refused or decoded, never a panic; a decoded map encodes and decodes to
//! the same answers.
#![no_main]

use gateway::changes::ChangeMap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(map) = ChangeMap::decode(data) {
        let again = ChangeMap::decode(&map.encode()).expect("a map's own encoding decodes");
        assert_eq!(again.changed_since(None), map.changed_since(None));
    }
});
