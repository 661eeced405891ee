//! Fuzzes every SCSI decoder a target's answer reaches (SPC INQUIRY and VPD pages, REPORT
//! LUNS, READ CAPACITY, sense data in both formats, REPORT TARGET PORT GROUPS).
#![no_main]

use datapath::scsi::{
    BlockLimits, DeviceIdentification, ReadCapacity10, ReadCapacity16, ReportLuns, Sense,
    StandardInquiry, SupportedVpdPages, UnitSerialNumber,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = StandardInquiry::decode(bytes);
    let _ = SupportedVpdPages::decode(bytes);
    let _ = UnitSerialNumber::decode(bytes);
    if let Ok(ids) = DeviceIdentification::decode(bytes) {
        for d in &ids.descriptors {
            let _ = d.value.to_string();
        }
    }
    let _ = BlockLimits::decode(bytes);
    if let Ok(luns) = ReportLuns::decode(bytes) {
        assert!(luns.luns.len() <= bytes.len() / 8);
    }
    let _ = ReadCapacity10::decode(bytes);
    let _ = ReadCapacity16::decode(bytes);
    if let Ok(sense) = Sense::decode(bytes) {
        let _ = sense.to_string();
    }
    if let Ok(groups) = datapath::scsi::alua::parse_port_groups(bytes) {
        // Every descriptor is at least 8 bytes of what came.
        assert!(groups.len() <= bytes.len() / 8);
        // What parsed encodes back to data that parses the same.
        let again = datapath::scsi::alua::encode_port_groups(&groups, false, 0);
        assert_eq!(datapath::scsi::alua::parse_port_groups(&again).unwrap(), groups);
    }
});
