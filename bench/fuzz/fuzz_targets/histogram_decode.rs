//! Fuzzes the HdrHistogram V2 decoder (`bench::stats::hdr_v2`) that reads histograms sent
//! by agents and read from JSON files: raw bytes and base64 text. Nothing may panic or
//! allocate beyond the one histogram shape; whatever decodes must encode and decode to the
//! same counts; a portable recorder from arbitrary JSON must be refused or rebuilt.
#![no_main]

use bench::stats::{hdr_v2, JobStats, PortableStats};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(histogram) = hdr_v2::decode_v2(bytes) {
        let again = hdr_v2::decode_v2(&hdr_v2::encode_v2(&histogram)).expect("our own encoding");
        assert_eq!(again.len(), histogram.len());
        assert!(again.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value()))
            .eq(histogram.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value()))));
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = hdr_v2::decode_base64(text);
        if let Ok(portable) = serde_json::from_str::<PortableStats>(text) {
            if let Ok(stats) = JobStats::from_portable(&portable) {
                let _ = stats.total_ios();
            }
        }
    }
});
