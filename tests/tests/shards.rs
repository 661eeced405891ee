//! Per-core shards against tgt: each shard logs in its own session (its own ISID), writes
//! and verifies its own region of one LUN, and receives 64 KiB reads without a copy; a
//! lost connection fails only its own shard's commands. Against a scripted fake target
//! (tgt cannot be told to hold MaxCmdSN back): the command window is obeyed when the target
//! keeps MaxCmdSN low (issue 4 item 6).

use std::time::{Duration, Instant};

use datapath::adapter::PathError;
use datapath::client::ClientConfig;
use datapath::scsi::Cdb;
use datapath::session::CommandError;
use datapath::session::Request;
use datapath::shard::{ShardConfig, ShardPool};
use system_tests::fake_target::{send_pdu, serve_login, PduReader};
use system_tests::scsi_io::{until_ready, CommandPath, OnShard};
use system_tests::{pattern, TargetSpec, Tgt};

const BLOCK: u32 = 512;
const LUN_BYTES: u64 = 8 << 20;
const IO_BYTES: u32 = 64 * 1024;
const WAIT: Duration = Duration::from_secs(20);

fn start_tgt(iqn: &str) -> Tgt {
    Tgt::start(&[TargetSpec::new(iqn, &[LUN_BYTES])]).expect("tgtd starts")
}

fn client_config(tgt: &Tgt) -> ClientConfig {
    let mut config = ClientConfig::new(tgt.portal(), Some(tgt.iqn(0).to_string()));
    config.offer.max_recv_data_segment_length = 256 * 1024;
    config.command_timeout = Duration::from_secs(20);
    config
}

fn request(lun: u64, cdb: &Cdb, buffer: Vec<u8>, user_data: u64) -> Request {
    Request::new(lun, cdb.clone(), buffer, user_data)
}

/// A fresh session sees a unit attention (power on / reset) once: the LUN probe takes it.
fn clear_unit_attention(pool: &ShardPool, shard: usize, lun: u64) {
    until_ready(&mut OnShard::new(pool, shard), lun);
}

#[test]
fn every_shard_writes_and_verifies_its_own_region_without_copies() {
    region_round_trip("iqn.2026-11.test:shards-region", None);
}

/// With header and data digests (against our own target: tgt answers HeaderDigest=None):
/// each placed 64 KiB payload is followed by its data digest, which the shard receives
/// linked behind the payload and checks before the session hears of the Data-In; reads
/// come back intact and uncopied.
#[test]
fn placed_reads_with_digests_check_each_trailer() {
    use datapath::text::negotiate::DigestChoice;
    use gateway::server::{self, TargetConfig, TargetNodeConfig};
    let iqn = "iqn.2026-11.test:shards-digests";
    let node = TargetNodeConfig::new(iqn, vec![(0, "ram:8M".to_string())]);
    let mut target_config =
        TargetConfig::new(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), node);
    target_config.threads = Some(1);
    let target = server::start(target_config).expect("our target starts");
    let mut client = ClientConfig::new(target.addrs()[0], Some(iqn.to_string()));
    client.offer.max_recv_data_segment_length = 256 * 1024;
    client.offer.header_digests = vec![DigestChoice::Crc32c];
    client.offer.data_digests = vec![DigestChoice::Crc32c];
    client.command_timeout = Duration::from_secs(20);
    let config = ShardConfig {
        queue_depth: 8,
        ..ShardConfig::default()
    };
    let pool = ShardPool::start(&client, 1, &config).expect("pool starts with digests");
    clear_unit_attention(&pool, 0, 0);
    let ios = 64u32;
    let blocks = IO_BYTES / BLOCK;
    let data = |i: u32| pattern(IO_BYTES as usize, 0xd16e_0000 | u64::from(i));
    let writes = (0..ios)
        .map(|i| {
            let cdb = Cdb::write(u64::from(i * blocks), blocks, BLOCK, false).unwrap();
            Request::new(0, cdb.clone(), data(i), u64::from(i))
        })
        .collect();
    for (i, c) in OnShard::new(&pool, 0).run_all(writes) {
        let outcome = c.unwrap_or_else(|e| panic!("write {i}: {e}"));
        assert_eq!(outcome.status, 0, "write {i}");
    }
    let reads = (0..ios)
        .map(|i| {
            let cdb = Cdb::read(u64::from(i * blocks), blocks, BLOCK, false).unwrap();
            Request::new(0, cdb.clone(), vec![0; IO_BYTES as usize], u64::from(i))
        })
        .collect();
    let before = pool.stats(0).unwrap();
    for (i, c) in OnShard::new(&pool, 0).run_all(reads) {
        let outcome = c.unwrap_or_else(|e| panic!("read {i}: {e}"));
        assert_eq!(outcome.status, 0, "read {i}");
        assert!(outcome.buffer == data(i as u32), "read {i} differs");
    }
    let after = pool.stats(0).unwrap();
    assert_eq!(after.ios_failed, 0, "{after:?}");
    assert_eq!(
        after.bytes_copied, before.bytes_copied,
        "placed reads copied payload: {after:?}"
    );
}

/// The same with zero-copy sends for the 64 KiB writes: the data must still land intact
/// (the buffers stay with the shard until the kernel's notification).
#[test]
fn zero_copy_sends_write_the_same_data() {
    region_round_trip("iqn.2026-11.test:shards-region-zc", Some(32 * 1024));
}

fn region_round_trip(iqn: &str, send_zc_min_bytes: Option<u32>) {
    let tgt = start_tgt(iqn);
    let lun = tgt.first_data_lun();
    let shards = 2;
    let config = ShardConfig {
        core: Some(0),
        queue_depth: 8,
        send_zc_min_bytes,
        ..ShardConfig::default()
    };
    let pool = ShardPool::start(&client_config(&tgt), shards, &config).expect("pool starts");
    assert_eq!(pool.len(), shards);
    let isids: Vec<_> = (0..shards).map(|s| pool.info(s).unwrap().isid).collect();
    assert_ne!(isids[0], isids[1], "each shard has its own ISID");
    // Steering is asked for by default; loopback has no RSS, and the report says so.
    for shard in 0..shards {
        let report = pool
            .info(shard)
            .unwrap()
            .steering
            .as_ref()
            .expect("a path report");
        assert_eq!(report.interface, "lo");
        assert!(!report.port_steered, "a port steered on loopback");
        assert!(report.to_string().contains("no RSS on lo"), "{report}");
        assert_eq!(report.steering_held(), None);
    }
    let region_bytes = LUN_BYTES / shards as u64;
    let ios_per_region = (region_bytes / u64::from(IO_BYTES)) as u32;
    let blocks = IO_BYTES / BLOCK;

    // All shards at once, each on its own thread, as a real caller would.
    std::thread::scope(|scope| {
        for shard in 0..shards {
            let pool = &pool;
            scope.spawn(move || {
                clear_unit_attention(pool, shard, lun);
                let first_lba = shard as u64 * region_bytes / u64::from(BLOCK);
                let lba = |i: u32| first_lba + u64::from(i * blocks);
                let data = |i: u32| pattern(IO_BYTES as usize, (shard as u64) << 32 | u64::from(i));
                let writes = (0..ios_per_region)
                    .map(|i| {
                        let cdb = Cdb::write(lba(i), blocks, BLOCK, false).unwrap();
                        Request::new(lun, cdb.clone(), data(i), u64::from(i))
                    })
                    .collect();
                for (i, result) in OnShard::new(pool, shard).run_all(writes) {
                    let outcome = result.unwrap_or_else(|e| panic!("write {i}: {e}"));
                    assert_eq!(outcome.status, 0, "write {i}");
                }
                let reads = (0..ios_per_region)
                    .map(|i| {
                        let cdb = Cdb::read(lba(i), blocks, BLOCK, false).unwrap();
                        Request::new(lun, cdb.clone(), vec![0; IO_BYTES as usize], u64::from(i))
                    })
                    .collect();
                let done = OnShard::new(pool, shard).run_all(reads);
                assert_eq!(done.len(), ios_per_region as usize);
                for (i, result) in done {
                    let outcome = result.unwrap_or_else(|e| panic!("read {i}: {e}"));
                    assert_eq!(outcome.status, 0, "read {i}");
                    assert_eq!(outcome.transferred, IO_BYTES);
                    assert!(
                        outcome.buffer == data(i as u32),
                        "shard {shard} read {i} differs"
                    );
                }
            });
        }
    });

    let stats = pool.all_stats();
    for (shard, s) in stats.iter().enumerate() {
        assert!(
            s.ios >= 2 * u64::from(ios_per_region),
            "shard {shard}: {s:?}"
        );
        assert_eq!(s.ios_failed, 0, "shard {shard}: {s:?}");
        assert_eq!(s.bytes_copied, 0, "shard {shard} copied payload: {s:?}");
        assert!(
            s.peak_queue_depth > 1,
            "shard {shard} never pipelined: {s:?}"
        );
        assert!(s.kernel_entries > 0);
    }
    let final_stats = pool.shutdown();
    assert_eq!(final_stats.len(), shards);

    // The backing file holds each shard's data in its own region.
    let backing = std::fs::read(tgt.lun_path(0, 0)).expect("backing file");
    for shard in 0..shards {
        for i in 0..ios_per_region {
            let at = shard * region_bytes as usize + (i * IO_BYTES) as usize;
            let expected = pattern(IO_BYTES as usize, (shard as u64) << 32 | u64::from(i));
            assert!(
                backing[at..at + IO_BYTES as usize] == expected[..],
                "backing file differs at shard {shard} io {i}"
            );
        }
    }
}

/// 4 KiB reads, 16 in flight: from tgt, the shard receives greedily (payloads staged and
/// copied) and every read comes back intact; from a target whose answers trickle in, it
/// raises the socket's low-water mark (`ShardConfig::recv_coalesce`) to take several per
/// wake-up, and the data is intact too.
#[test]
fn small_reads_staged_and_coalesced_come_back_intact() {
    let tgt = start_tgt("iqn.2026-11.test:shards-small");
    let lun = tgt.first_data_lun();
    let config = ShardConfig {
        queue_depth: 16,
        recv_coalesce: Duration::from_micros(40),
        ..ShardConfig::default()
    };
    let pool = ShardPool::start(&client_config(&tgt), 1, &config).expect("pool starts");
    clear_unit_attention(&pool, 0, lun);
    let region_bytes = 1u32 << 20;
    let writes = (0..region_bytes / IO_BYTES)
        .map(|i| {
            let cdb = Cdb::write(
                u64::from(i * IO_BYTES / BLOCK),
                IO_BYTES / BLOCK,
                BLOCK,
                false,
            );
            let at = (i * IO_BYTES) as usize;
            let data = pattern(region_bytes as usize, 0x5a11)[at..at + IO_BYTES as usize].to_vec();
            Request::new(lun, cdb.clone().unwrap(), data, u64::from(i))
        })
        .collect();
    for (i, c) in OnShard::new(&pool, 0).run_all(writes) {
        assert_eq!(c.unwrap_or_else(|e| panic!("write {i}: {e}")).status, 0);
    }
    let small = 4096u32;
    let expected = pattern(region_bytes as usize, 0x5a11);
    let reads = (0..region_bytes / small)
        .map(|i| {
            let cdb = Cdb::read(u64::from(i * small / BLOCK), small / BLOCK, BLOCK, false);
            Request::new(
                lun,
                cdb.clone().unwrap(),
                vec![0; small as usize],
                u64::from(i),
            )
        })
        .collect();
    let done = OnShard::new(&pool, 0).run_all(reads);
    assert_eq!(done.len(), (region_bytes / small) as usize);
    for (i, c) in done {
        let outcome = c.unwrap_or_else(|e| panic!("read {i}: {e}"));
        assert_eq!(outcome.status, 0, "read {i}");
        let at = i as usize * small as usize;
        assert!(
            outcome.buffer[..] == expected[at..at + small as usize],
            "read {i} differs"
        );
    }
    let stats = pool.stats(0).unwrap();
    assert_eq!(stats.ios_failed, 0, "{stats:?}");
    assert!(stats.bytes_copied > 0, "4 KiB reads are staged: {stats:?}");
    assert!(stats.peak_queue_depth > 1, "never pipelined: {stats:?}");
    drop(pool);

    // Coalesced: whether tgt's answers trickle depends on how loaded this machine is, so
    // the coalescing is checked against a target whose answers always trickle in, 100 us
    // apart. With 16 in flight the shard must raise the socket's receive low-water mark
    // (counted in `ShardStats::coalesced_receives`, and seen by a thread sampling
    // SO_RCVLOWAT) and take several answers per wake-up; the data still comes back intact.
    let (highest_mark, stats) = reads_from_a_trickling_target(Duration::from_millis(2));
    assert!(
        highest_mark > 1 && stats.coalesced_receives > 0,
        "receives never coalesced: SO_RCVLOWAT stayed at {highest_mark} ({stats:?})"
    );
    // And with coalescing off, the same trickle is taken as it comes.
    let (highest_mark, stats) = reads_from_a_trickling_target(Duration::ZERO);
    assert!(
        highest_mark <= 1 && stats.coalesced_receives == 0,
        "coalescing is off yet the mark rose to {highest_mark} ({stats:?})"
    );
}

/// 4 KiB reads, 16 in flight, from [`trickling_target`] with `recv_coalesce`; checks every
/// read's data; (the highest receive low-water mark seen, the shard's counters).
fn reads_from_a_trickling_target(recv_coalesce: Duration) -> (i32, datapath::shard::ShardStats) {
    const READS: u32 = 256;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let portal = listener.local_addr().expect("local addr");
    let target = std::thread::spawn(move || trickling_target(listener, Duration::from_micros(100)));
    let mut cc = ClientConfig::new(portal, Some("iqn.2026-11.test:trickle".into()));
    cc.command_timeout = Duration::from_secs(20);
    cc.nop_interval = Duration::from_secs(60);
    let config = ShardConfig {
        queue_depth: 16,
        recv_coalesce,
        ..ShardConfig::default()
    };
    let pool = ShardPool::start(&cc, 1, &config).expect("pool starts");
    let reads = (0..READS)
        .map(|i| {
            let cdb = Cdb::read(u64::from(i) * 8, 8, BLOCK, false).unwrap();
            Request::new(0, cdb.clone(), vec![0; 4096], u64::from(i))
        })
        .collect();
    let sampler = LowWaterSampler::start(portal.port());
    let done = OnShard::new(&pool, 0).run_all(reads);
    let highest_mark = sampler.stop();
    assert_eq!(done.len(), READS as usize);
    for (i, result) in done {
        let outcome = result.unwrap_or_else(|e| panic!("read {i}: {e}"));
        assert_eq!(outcome.status, 0, "read {i}");
        assert!(
            outcome.buffer == trickled_block_data(i as u32 * 8, 4096),
            "read {i} data"
        );
    }
    let stats = pool.stats(0).expect("shard 0");
    pool.shutdown();
    let answered = target
        .join()
        .expect("target thread")
        .expect("target served");
    assert_eq!(answered, READS);
    (highest_mark, stats)
}

/// What [`trickling_target`] answers for `len` bytes from `lba`: each 512-byte block filled
/// with its LBA's low byte.
fn trickled_block_data(lba: u32, len: usize) -> Vec<u8> {
    (0..len).map(|j| (lba + (j / 512) as u32) as u8).collect()
}

/// A target whose answers to READ(10) always trickle in: one Data-In (with status) per
/// write, `pause` apart, the oldest command first, whatever arrives meanwhile read without
/// waiting. Grants a wide command window. Returns the reads it answered when the
/// initiator logs out.
fn trickling_target(listener: std::net::TcpListener, pause: Duration) -> std::io::Result<u32> {
    use datapath::pdu::{DataIn, Header, LogoutResponse};
    const WINDOW: u32 = 64;
    let (mut stream, _) = listener.accept()?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_nodelay(true)?;
    let mut reader = PduReader::new();
    let (mut stat_sn, mut exp_cmd_sn) = serve_login(&mut stream, &mut reader, 9, WINDOW)?;
    stream.set_nonblocking(true)?;
    let mut held = std::collections::VecDeque::new();
    let mut answered = 0;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match reader.next(&mut stream) {
            Ok((Header::ScsiCommand(command), _)) => {
                exp_cmd_sn = command.cmd_sn.wrapping_add(1);
                held.push_back(command);
                continue;
            }
            Ok((Header::LogoutRequest(request), _)) => {
                let response = LogoutResponse {
                    response: 0,
                    initiator_task_tag: request.initiator_task_tag,
                    stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn: exp_cmd_sn.wrapping_add(WINDOW - 1),
                    time2wait: 0,
                    time2retain: 0,
                };
                stream.set_nonblocking(false)?;
                send_pdu(&mut stream, Header::LogoutResponse(response), &[])?;
                return Ok(answered);
            }
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        let Some(command) = held.pop_front() else {
            std::thread::sleep(Duration::from_micros(50));
            continue;
        };
        let lba = u32::from_be_bytes(command.cdb[2..6].try_into().expect("READ(10)"));
        let len = command.expected_data_transfer_length as usize;
        let data_in = DataIn {
            final_pdu: true,
            acknowledge: false,
            overflow: false,
            underflow: false,
            status: Some(0),
            lun: [0; 8],
            initiator_task_tag: command.initiator_task_tag,
            target_transfer_tag: datapath::pdu::RESERVED_TAG,
            stat_sn,
            exp_cmd_sn,
            max_cmd_sn: exp_cmd_sn.wrapping_add(WINDOW - 1),
            data_sn: 0,
            buffer_offset: 0,
            residual_count: 0,
        };
        stat_sn += 1;
        stream.set_nonblocking(false)?;
        send_pdu(
            &mut stream,
            Header::DataIn(data_in),
            &trickled_block_data(lba, len),
        )?;
        stream.set_nonblocking(true)?;
        answered += 1;
        std::thread::sleep(pause);
    }
    Err(std::io::ErrorKind::TimedOut.into())
}

#[test]
fn a_full_queue_hands_the_request_back() {
    let tgt = start_tgt("iqn.2026-11.test:shards-full");
    let lun = tgt.first_data_lun();
    let config = ShardConfig {
        queue_depth: 1,
        ..ShardConfig::default()
    };
    let pool = ShardPool::start(&client_config(&tgt), 1, &config).expect("pool starts");
    clear_unit_attention(&pool, 0, lun);
    let cdb = Cdb::read(0, 8, BLOCK, false).unwrap();
    // Depth 1: the shard holds one, the queue one more; the caller takes no completion,
    // so before long a submit is refused and the request comes back whole.
    let mut refused = None;
    for i in 0..100u64 {
        if let Err(back) = pool.submit(0, request(lun, &cdb, vec![0; 4096], i)) {
            refused = Some(back);
            break;
        }
    }
    let back = refused.expect("a bounded queue refuses at some point");
    assert_eq!(back.buffer.len(), 4096);
    assert!(pool.submit(7, back).is_err(), "no shard 7");
}

#[test]
fn a_lost_connection_fails_that_shard_only() {
    let tgt = start_tgt("iqn.2026-11.test:shards-loss");
    let lun = tgt.first_data_lun();
    let config = ShardConfig {
        queue_depth: 4,
        ..ShardConfig::default()
    };
    let pool = ShardPool::start(&client_config(&tgt), 2, &config).expect("pool starts");
    clear_unit_attention(&pool, 0, lun);
    clear_unit_attention(&pool, 1, lun);
    let victim = pool.info(0).unwrap().tsih;

    // Shard 0 keeps reads in flight until they start failing; meanwhile its session is
    // closed from the target side.
    let (good, lost) = std::thread::scope(|scope| {
        let driver = scope.spawn(|| keep_reading_until_failure(&pool, 0, lun));
        std::thread::sleep(Duration::from_millis(200));
        tgt.close_session(victim)
            .unwrap_or_else(|e| panic!("{e}\n{}", tgt.log()));
        driver.join().expect("driver thread")
    });
    assert!(good > 0, "shard 0 completed reads before the loss");
    assert!(lost > 0, "the loss failed shard 0's commands");

    // Later requests to shard 0 fail at once, buffer handed back.
    let cdb = Cdb::read(0, 8, BLOCK, false).unwrap();
    let failed = pool
        .execute(0, request(lun, &cdb, vec![0; 4096], u64::MAX), WAIT)
        .expect("shard 0 answers");
    let failure = failed.result.expect_err("shard 0's session is gone");
    assert!(
        matches!(
            failure.error,
            PathError::Command(CommandError::ConnectionLost(_))
        ),
        "{:?}",
        failure.error
    );
    assert_eq!(failure.buffer.len(), 4096, "the buffer comes back");

    // Shard 1 goes on.
    let ok = pool
        .execute(1, request(lun, &cdb, vec![0; 4096], 2), WAIT)
        .expect("shard 1 answers");
    assert_eq!(ok.result.expect("shard 1 unaffected").status, 0);
    assert!(pool.stats(0).unwrap().ios_failed >= lost);
    assert_eq!(pool.stats(1).unwrap().ios_failed, 0);
}

/// Reads with the shard's queue full until completions fail with `ConnectionLost`;
/// returns (reads that succeeded, reads failed by the loss).
fn keep_reading_until_failure(pool: &ShardPool, shard: usize, lun: u64) -> (u64, u64) {
    let completions = pool.completions(shard).expect("shard exists");
    let deadline = Instant::now() + WAIT;
    let (mut good, mut lost, mut in_flight, mut next) = (0u64, 0u64, 0u64, 0u64);
    loop {
        assert!(Instant::now() < deadline, "the loss was never reported");
        if lost == 0 {
            loop {
                let cdb = Cdb::read(next % 1024 * 8, 8, BLOCK, false).unwrap();
                if pool
                    .submit(shard, request(lun, &cdb, vec![0; 4096], next))
                    .is_err()
                {
                    break;
                }
                next += 1;
                in_flight += 1;
            }
        } else if in_flight == 0 {
            return (good, lost);
        }
        let Ok(c) = completions.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        in_flight -= 1;
        match c.result {
            Ok(outcome) => {
                assert_eq!(outcome.status, 0);
                good += 1;
            }
            Err(failure) => {
                assert!(
                    matches!(
                        failure.error,
                        PathError::Command(CommandError::ConnectionLost(_))
                    ),
                    "{:?}",
                    failure.error
                );
                lost += 1;
            }
        }
    }
}

/// What the windowed fake target saw.
#[derive(Debug, Default)]
struct WindowReport {
    commands: u32,
    /// Commands whose CmdSN lay beyond the highest MaxCmdSN granted so far (RFC 7143
    /// section 4.2.2.1: the initiator may only use a larger MaxCmdSN than it has seen).
    violations: u32,
    /// Times the target held the window shut and checked that nothing arrived.
    closed_checks: u32,
    /// Commands that arrived while the window was shut.
    sent_while_closed: u32,
}

/// A target that answers reads with a fill byte and keeps the command window narrow: it
/// grants `first_window` commands at login, answers only once the initiator has used the
/// whole window, keeps MaxCmdSN where it is while answering (so the window shuts), checks
/// that nothing arrives while it is shut, then reopens it by a different width each round
/// with an unsolicited NOP-In.
fn windowed_target(
    listener: std::net::TcpListener,
    total_commands: u32,
    first_window: u32,
) -> std::io::Result<WindowReport> {
    use datapath::pdu::{DataIn, Header, LogoutResponse, NopIn};

    let (mut stream, _) = listener.accept()?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = PduReader::new();
    let mut report = WindowReport::default();
    let (mut stat_sn, mut exp_cmd_sn) = serve_login(&mut stream, &mut reader, 9, first_window)?;
    let mut max_granted = exp_cmd_sn.wrapping_add(first_window - 1);
    let mut held = Vec::new();
    let mut widths = [3u32, 1, 5, 2].into_iter().cycle();
    while report.commands < total_commands {
        let (header, _) = reader.next(&mut stream)?;
        let Header::ScsiCommand(command) = header else {
            continue;
        };
        report.commands += 1;
        if command.cmd_sn.wrapping_sub(max_granted) as i32 > 0 {
            report.violations += 1;
        }
        exp_cmd_sn = command.cmd_sn.wrapping_add(1);
        held.push(command);
        let window_used = exp_cmd_sn.wrapping_sub(max_granted) == 1;
        if !window_used && report.commands < total_commands {
            continue;
        }
        // The window is shut from the initiator's side: nothing may arrive now.
        report.closed_checks += 1;
        stream.set_read_timeout(Some(Duration::from_millis(150)))?;
        let mut probe = [0u8; 1];
        if let Ok(n) = std::io::Read::read(&mut stream, &mut probe) {
            if n > 0 {
                report.sent_while_closed += 1;
                reader.push_received(&probe[..n]);
            }
        }
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        // Answer with MaxCmdSN unchanged: the window stays shut as ExpCmdSN passes it.
        for command in held.drain(..) {
            let len = command.expected_data_transfer_length;
            let data_in = DataIn {
                final_pdu: true,
                acknowledge: false,
                overflow: false,
                underflow: false,
                status: Some(0),
                lun: [0; 8],
                initiator_task_tag: command.initiator_task_tag,
                target_transfer_tag: datapath::pdu::RESERVED_TAG,
                stat_sn,
                exp_cmd_sn,
                max_cmd_sn: max_granted,
                data_sn: 0,
                buffer_offset: 0,
                residual_count: 0,
            };
            stat_sn += 1;
            send_pdu(
                &mut stream,
                Header::DataIn(data_in),
                &vec![0x6b; len as usize],
            )?;
        }
        // Reopen by a different width each round.
        max_granted = max_granted.wrapping_add(widths.next().unwrap_or(1));
        let nop = NopIn {
            lun: [0; 8],
            initiator_task_tag: datapath::pdu::RESERVED_TAG,
            target_transfer_tag: datapath::pdu::RESERVED_TAG,
            stat_sn,
            exp_cmd_sn,
            max_cmd_sn: max_granted,
        };
        send_pdu(&mut stream, Header::NopIn(nop), &[])?;
    }
    // The pool logs out when it shuts down.
    if let Ok((Header::LogoutRequest(request), _)) = reader.next(&mut stream) {
        let response = LogoutResponse {
            response: 0,
            initiator_task_tag: request.initiator_task_tag,
            stat_sn,
            exp_cmd_sn,
            max_cmd_sn: max_granted,
            time2wait: 0,
            time2retain: 0,
        };
        send_pdu(&mut stream, Header::LogoutResponse(response), &[])?;
    }
    Ok(report)
}

#[test]
fn the_window_is_obeyed_when_the_target_keeps_max_cmd_sn_low() {
    const TOTAL: u32 = 60;
    const FIRST_WINDOW: u32 = 4;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let portal = listener.local_addr().expect("local addr");
    let target = std::thread::spawn(move || windowed_target(listener, TOTAL, FIRST_WINDOW));

    let mut cc = ClientConfig::new(portal, Some("iqn.2026-11.test:window".into()));
    cc.command_timeout = Duration::from_secs(20);
    cc.nop_interval = Duration::from_secs(60);
    // Deeper than any window the target grants: the session window is what limits.
    let config = ShardConfig {
        queue_depth: 16,
        ..ShardConfig::default()
    };
    let pool = ShardPool::start(&cc, 1, &config).expect("pool starts");
    let reads = (0..TOTAL)
        .map(|i| {
            let cdb = Cdb::read(u64::from(i) * 8, 8, BLOCK, false).unwrap();
            Request::new(0, cdb.clone(), vec![0; 4096], u64::from(i))
        })
        .collect();
    let done = OnShard::new(&pool, 0).run_all(reads);
    assert_eq!(done.len(), TOTAL as usize);
    for (i, result) in done {
        let outcome = result.unwrap_or_else(|e| panic!("read {i}: {e}"));
        assert_eq!(outcome.status, 0, "read {i}");
        assert!(outcome.buffer.iter().all(|&b| b == 0x6b), "read {i} data");
    }
    let stats = pool.stats(0).expect("shard 0");
    assert!(
        stats.window_closed_ns > 0,
        "commands never waited for the window: {stats:?}"
    );
    assert!(
        stats.peak_queue_depth > u64::from(FIRST_WINDOW),
        "{stats:?}"
    );
    pool.shutdown();

    let report = target
        .join()
        .expect("target thread")
        .expect("target served");
    assert_eq!(report.commands, TOTAL, "{report:?}");
    assert_eq!(report.violations, 0, "CmdSN beyond MaxCmdSN: {report:?}");
    assert_eq!(
        report.sent_while_closed, 0,
        "sent into a shut window: {report:?}"
    );
    assert!(report.closed_checks >= 10, "{report:?}");
}

/// Watches, from another thread, the receive low-water mark (`SO_RCVLOWAT`) of this
/// process's sockets connected to `port`, and keeps the highest seen: receive coalescing is
/// the shard raising that mark above 1 so the kernel wakes it once for several answers.
struct LowWaterSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<i32>,
}

impl LowWaterSampler {
    fn start(port: u16) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let sockets = sockets_connected_to(port);
        assert!(!sockets.is_empty(), "no socket connected to port {port}");
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut highest = 0;
            while !flag.load(Ordering::Relaxed) {
                for &fd in &sockets {
                    highest = highest.max(receive_low_water(fd).unwrap_or(0));
                }
            }
            highest
        });
        LowWaterSampler { stop, thread }
    }

    /// The highest mark seen.
    fn stop(self) -> i32 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("sampler runs")
    }
}

/// This process's open TCP sockets whose peer is 127.0.0.1:`port`.
fn sockets_connected_to(port: u16) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&fd| {
            // SAFETY: a zeroed sockaddr_in and its length, filled by the kernel; an fd that
            // is not a socket (or closed meanwhile) fails the call.
            let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let rc = unsafe {
                libc::getpeername(fd, (&mut addr as *mut libc::sockaddr_in).cast(), &mut len)
            };
            rc == 0
                && i32::from(addr.sin_family) == libc::AF_INET
                && u16::from_be(addr.sin_port) == port
        })
        .collect()
}

fn receive_low_water(fd: i32) -> Option<i32> {
    let mut value: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: a live i32 and its size.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&mut value as *mut i32).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(value)
}

/// A shard on the caller's own thread (`InlineShard`): 64 KiB writes then reads at depth
/// 8 against tgt, data intact and placed reads never copied; driven from
/// another thread it refuses to move I/O (its ring is the first thread's) and loses
/// nothing: back on its thread it finishes.
#[test]
fn an_inline_shard_round_trips_on_its_thread_and_refuses_another() {
    use datapath::shard::{InlineShard, ShardError};
    let tgt = start_tgt("iqn.2026-11.test:shards-inline");
    let lun = tgt.first_data_lun();
    let client = client_config(&tgt);
    let config = ShardConfig {
        queue_depth: 8,
        ..ShardConfig::default()
    };
    let mut shard = InlineShard::connect(&client, &config, 0).expect("inline shard logs in");
    let blocks = IO_BYTES / BLOCK;
    let ios = 32u32;
    let data = |i: u32| pattern(IO_BYTES as usize, 0x1e1e_0000 | u64::from(i));
    // Runs every command at depth 8 on this thread; results by user_data.
    let run = |shard: &mut InlineShard, commands: Vec<Request>| {
        let mut waiting = commands
            .into_iter()
            .collect::<std::collections::VecDeque<_>>();
        let mut done = Vec::new();
        let total = waiting.len();
        let until = Instant::now() + WAIT;
        while done.len() < total {
            assert!(Instant::now() < until, "inline shard stalled: {shard:?}");
            while let Some(request) = waiting.pop_front() {
                if let Err(request) = shard.submit(std::time::Instant::now(), request) {
                    waiting.push_front(request);
                    break;
                }
            }
            shard.poll(&mut done).expect("the shard goes on");
            if done.len() < total {
                shard.wait(Duration::from_millis(50));
            }
        }
        done.sort_by_key(|c| c.user_data);
        done
    };
    // The new nexus reports its reset once.
    let tur = Cdb::test_unit_ready();
    let first = run(&mut shard, vec![request(lun, &tur, Vec::new(), 0)]);
    assert!(first[0].result.is_ok(), "{:?}", first[0].result);
    let writes = (0..ios)
        .map(|i| {
            let cdb = Cdb::write(u64::from(i * blocks), blocks, BLOCK, false).unwrap();
            request(lun, &cdb, data(i), u64::from(i))
        })
        .collect();
    for c in run(&mut shard, writes) {
        let outcome = c
            .result
            .unwrap_or_else(|e| panic!("write {}: {e:?}", c.user_data));
        assert_eq!(outcome.status, 0, "write {}", c.user_data);
    }
    let before = shard.stats();
    let reads = (0..ios)
        .map(|i| {
            let cdb = Cdb::read(u64::from(i * blocks), blocks, BLOCK, false).unwrap();
            request(lun, &cdb, vec![0; IO_BYTES as usize], u64::from(i))
        })
        .collect();
    for c in run(&mut shard, reads) {
        let outcome = c
            .result
            .unwrap_or_else(|e| panic!("read {}: {e:?}", c.user_data));
        assert_eq!(outcome.status, 0, "read {}", c.user_data);
        assert!(
            outcome.buffer == data(c.user_data as u32),
            "read {} differs",
            c.user_data
        );
    }
    let after = shard.stats();
    assert_eq!(after.ios_failed, 0, "{after:?}");
    assert!(after.peak_queue_depth > 1, "never pipelined: {after:?}");
    assert_eq!(
        after.bytes_copied, before.bytes_copied,
        "placed reads copied: {after:?}"
    );

    // From another thread: refused by name, nothing lost.
    let cdb = Cdb::read(0, blocks, BLOCK, false).unwrap();
    shard
        .submit(
            std::time::Instant::now(),
            request(lun, &cdb, vec![0; IO_BYTES as usize], 99),
        )
        .expect("room for one");
    let mut shard = std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let mut out = Vec::new();
                match shard.poll(&mut out) {
                    Err(ShardError::WrongThread { shard: 0 }) => {}
                    other => panic!("expected WrongThread, got {other:?}"),
                }
                assert!(out.is_empty());
                shard
            })
            .join()
            .expect("the other thread")
    });
    let mut done = Vec::new();
    let until = Instant::now() + WAIT;
    while done.is_empty() {
        assert!(Instant::now() < until, "the held read never finished");
        shard.poll(&mut done).expect("the shard goes on");
        shard.wait(Duration::from_millis(50));
    }
    assert_eq!(done[0].user_data, 99);
    assert!(done[0].result.as_ref().is_ok_and(|o| o.buffer == data(0)));
    let last = shard.close();
    assert_eq!(last.ios_failed, 0, "{last:?}");
}
