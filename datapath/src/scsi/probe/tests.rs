//! The probe against scripted answers: the commands it sends, in order, and what it makes
//! of each answer.

use super::*;

/// Fixed-format sense data with `key`, `asc`, `ascq`.
fn sense(key: u8, asc: u8, ascq: u8) -> Vec<u8> {
    let mut s = vec![0u8; 18];
    s[0] = 0x70;
    s[2] = key;
    s[7] = 10;
    s[12] = asc;
    s[13] = ascq;
    s
}

fn good(data: Vec<u8>) -> ScsiAnswer {
    let len = data.len() as u32;
    ScsiAnswer::new(status::GOOD, None, data, len)
}

fn check(key: u8, asc: u8, ascq: u8) -> ScsiAnswer {
    ScsiAnswer::new(
        status::CHECK_CONDITION,
        Some(sense(key, asc, ascq)),
        Vec::new(),
        0,
    )
}

fn unit_attention() -> ScsiAnswer {
    check(key::UNIT_ATTENTION, 0x29, 0x00)
}

/// READ CAPACITY(16) data: last LBA, block length, LBPME set.
fn rc16(last_lba: u64, block: u32) -> Vec<u8> {
    let mut d = vec![0u8; 32];
    d[0..8].copy_from_slice(&last_lba.to_be_bytes());
    d[8..12].copy_from_slice(&block.to_be_bytes());
    d[14] = 0x80;
    d
}

fn rc10(last_lba: u32, block: u32) -> Vec<u8> {
    let mut d = last_lba.to_be_bytes().to_vec();
    d.extend_from_slice(&block.to_be_bytes());
    d
}

/// Block Limits page (0x3c bytes after the header) with MAXIMUM UNMAP LBA COUNT.
fn block_limits(max_unmap: u32) -> Vec<u8> {
    let mut d = vec![0u8; 64];
    d[1] = BlockLimits::PAGE_CODE;
    d[3] = 0x3c;
    d[20..24].copy_from_slice(&max_unmap.to_be_bytes());
    d
}

/// Answers from a script, recording each command's opcode (READ CAPACITY(16) shows as
/// 0x9e, its SERVICE ACTION IN(16) opcode).
struct Script {
    answers: std::collections::VecDeque<Result<ScsiAnswer, String>>,
    sent: Vec<u8>,
}

impl Script {
    fn new(answers: Vec<Result<ScsiAnswer, String>>) -> Script {
        Script {
            answers: answers.into(),
            sent: Vec::new(),
        }
    }
}

impl ScsiExecute for Script {
    type Error = String;
    fn execute_scsi(&mut self, lun: u64, cdb: &Cdb) -> Result<ScsiAnswer, String> {
        assert_eq!(lun, 3);
        self.sent.push(cdb.opcode());
        self.answers
            .pop_front()
            .unwrap_or_else(|| panic!("a command past the script: {:#04x}", cdb.opcode()))
    }
}

const TUR: u8 = 0x00;
const RC16: u8 = 0x9e;
const RC10: u8 = 0x25;
const INQUIRY: u8 = 0x12;

#[test]
fn unit_attentions_are_taken_then_capacity_16_and_block_limits() {
    let mut x = Script::new(vec![
        Ok(unit_attention()),
        Ok(unit_attention()),
        Ok(good(Vec::new())),
        Ok(unit_attention()),
        Ok(good(rc16((8 << 20) / 512 - 1, 512))),
        Ok(good(block_limits(0x1000))),
    ]);
    let facts = probe_lun(&mut x, 3, ProbeConfig::FULL).unwrap();
    assert_eq!(x.sent, [TUR, TUR, TUR, RC16, RC16, INQUIRY]);
    assert_eq!(facts.unit_attentions, 3);
    assert_eq!(facts.size().unwrap(), (8 << 20, 512));
    assert!(matches!(facts.capacity, Some(Capacity::Long(c)) if c.lbpme));
    assert_eq!(facts.unmap_supported(), Some(true));
}

#[test]
fn capacity_10_only_when_16_is_unknown_to_the_device() {
    for asc in [0x20, 0x24] {
        let mut x = Script::new(vec![
            Ok(good(Vec::new())),
            Ok(check(key::ILLEGAL_REQUEST, asc, 0)),
            Ok(good(rc10(2047, 4096))),
        ]);
        let config = ProbeConfig {
            block_limits: false,
            ..ProbeConfig::FULL
        };
        let facts = probe_lun(&mut x, 3, config).unwrap();
        assert_eq!(x.sent, [TUR, RC16, RC10]);
        assert_eq!(facts.size().unwrap(), (2048 * 4096, 4096));
        assert_eq!(facts.capacity.unwrap().command(), "READ CAPACITY(10)");
        assert_eq!(facts.block_limits, None);
    }
    // Another refusal of (16) is the answer: NOT READY is not "unknown command".
    let mut x = Script::new(vec![Ok(good(Vec::new())), Ok(check(0x2, 0x04, 0x01))]);
    let e = probe_lun(&mut x, 3, ProbeConfig::FULL).unwrap_err();
    assert!(
        matches!(&e, ProbeFailure::Scsi(ProbeError::Refused { command: "READ CAPACITY(16)", sense: Some(s), .. }) if s.key == 0x2),
        "{e}"
    );
    // (10) saying "too large for me" after (16) was refused.
    let mut x = Script::new(vec![
        Ok(good(Vec::new())),
        Ok(check(key::ILLEGAL_REQUEST, 0x20, 0)),
        Ok(good(rc10(u32::MAX, 512))),
    ]);
    let e = probe_lun(&mut x, 3, ProbeConfig::FULL).unwrap_err();
    assert!(
        matches!(e, ProbeFailure::Scsi(ProbeError::TooLargeFor10)),
        "{e}"
    );
}

#[test]
fn unit_attentions_past_the_retries_are_a_refusal() {
    let config = ProbeConfig {
        unit_attention_retries: 2,
        ..ProbeConfig::READY
    };
    let mut x = Script::new(vec![
        Ok(unit_attention()),
        Ok(unit_attention()),
        Ok(unit_attention()),
    ]);
    let e = probe_lun(&mut x, 3, config).unwrap_err();
    assert_eq!(x.sent, [TUR, TUR, TUR]);
    assert!(
        matches!(&e, ProbeFailure::Scsi(ProbeError::Refused { command: "TEST UNIT READY", status: 2, sense: Some(s) }) if s.is_unit_attention()),
        "{e}"
    );
    assert!(e.to_string().contains("UNIT ATTENTION"), "{e}");
    // Any other status stops at once.
    let mut x = Script::new(vec![Ok(ScsiAnswer::new(status::BUSY, None, Vec::new(), 0))]);
    let e = probe_lun(&mut x, 3, config).unwrap_err();
    assert_eq!(x.sent, [TUR]);
    assert!(e.to_string().contains("BUSY"), "{e}");
}

#[test]
fn ready_only_sends_test_unit_ready_alone() {
    let mut x = Script::new(vec![Ok(unit_attention()), Ok(good(Vec::new()))]);
    let facts = probe_lun(&mut x, 3, ProbeConfig::READY).unwrap();
    assert_eq!(x.sent, [TUR, TUR]);
    assert_eq!(facts.unit_attentions, 1);
    assert_eq!(facts.capacity, None);
    assert!(matches!(facts.size(), Err(ProbeError::NoCapacity)));
}

#[test]
fn a_device_without_block_limits_is_probed_all_the_same() {
    let mut x = Script::new(vec![
        Ok(good(Vec::new())),
        Ok(good(rc16(99, 512))),
        Ok(check(key::ILLEGAL_REQUEST, 0x24, 0)),
    ]);
    let facts = probe_lun(&mut x, 3, ProbeConfig::FULL).unwrap();
    assert_eq!(facts.block_limits, None);
    assert_eq!(facts.unmap_supported(), None);
    assert_eq!(facts.size().unwrap(), (100 * 512, 512));
}

#[test]
fn bad_capacities_and_undecodable_data_are_errors() {
    let mut x = Script::new(vec![Ok(good(Vec::new())), Ok(good(rc16(99, 0)))]);
    let config = ProbeConfig {
        block_limits: false,
        ..ProbeConfig::FULL
    };
    let facts = probe_lun(&mut x, 3, config).unwrap();
    assert!(matches!(
        facts.size(),
        Err(ProbeError::UnusableCapacity { block: 0, .. })
    ));
    let mut x = Script::new(vec![Ok(good(Vec::new())), Ok(good(vec![0; 4]))]);
    let e = probe_lun(&mut x, 3, config).unwrap_err();
    assert!(
        matches!(
            e,
            ProbeFailure::Scsi(ProbeError::Decode {
                command: "READ CAPACITY(16)",
                ..
            })
        ),
        "{e}"
    );
}

#[test]
fn a_command_that_cannot_run_names_it() {
    let mut x = Script::new(vec![Ok(good(Vec::new())), Err("connection lost".into())]);
    let e = probe_lun(&mut x, 3, ProbeConfig::FULL).unwrap_err();
    assert_eq!(e.to_string(), "READ CAPACITY(16): connection lost");
}

#[test]
fn without_the_ready_step_the_capacity_comes_first_past_unit_attentions() {
    let config = ProbeConfig {
        ready: false,
        block_limits: false,
        ..ProbeConfig::FULL
    };
    let mut x = Script::new(vec![Ok(unit_attention()), Ok(good(rc16(7, 512)))]);
    let facts = probe_lun(&mut x, 3, config).unwrap();
    assert_eq!(x.sent, [RC16, RC16]);
    assert_eq!(facts.size().unwrap(), (8 * 512, 512));
    // A missing LUN is the capacity command's refusal.
    let mut x = Script::new(vec![Ok(check(key::ILLEGAL_REQUEST, 0x25, 0))]);
    let e = probe_lun(&mut x, 3, config).unwrap_err();
    assert!(e.to_string().starts_with("READ CAPACITY(16): "), "{e}");
    assert!(e.to_string().contains("(0x25/0x00)"), "{e}");
}
