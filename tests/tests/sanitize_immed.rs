//! SANITIZE with IMMED set (SBC-4 5.30) on a volume of a thin pool, through our initiator
//! and the gateway's whole command path (the blocking pool included): the command answers
//! GOOD at once, TEST UNIT READY then reports NOT READY, SANITIZE IN PROGRESS with a
//! progress indication that grows, REQUEST SENSE the same with GOOD, reads are refused,
//! INQUIRY passes; once done the unit is ready and every block holds the pattern.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use datapath::client::{Client, ClientConfig};
use datapath::scsi::{Cdb, DataDirection};
use datapath::session::Request;
use gateway::server::{self, TargetConfig, TargetNodeConfig};
use system_tests::TempDir;

const IQN: &str = "iqn.2026-12.test:sanitize-immed";
const CHECK_CONDITION: u8 = 2;
const SANITIZE: u8 = 0x48;
const OVERWRITE_IMMED: u8 = 0x80 | 0x01;

/// (key, ASC, ASCQ, the progress indication when SKSV is set) of fixed sense data.
type Sense = (u8, u8, u8, Option<u16>);

/// Status, sense and Data-In of a command.
fn run(client: &mut Client, cdb: Cdb, buffer: Vec<u8>) -> (u8, Option<Sense>, Vec<u8>) {
    let outcome = client
        .execute(Request::new(0, cdb, buffer, 0))
        .expect("the command gets an answer");
    let sense = outcome.sense.as_ref().filter(|s| s.len() >= 18).map(|s| {
        let progress = (s[15] & 0x80 != 0).then(|| u16::from_be_bytes([s[16], s[17]]));
        (s[2] & 0x0f, s[12], s[13], progress)
    });
    (outcome.status, sense, outcome.buffer)
}

#[test]
fn sanitize_with_immed_answers_at_once_and_the_host_follows_its_progress() {
    let scratch = TempDir::new("sanitize-immed").unwrap();
    let pool_path = scratch.join("pool.img");
    let _pool = gateway::backend::Pool::create(&pool_path, 64 << 20).expect("a pool");
    // 8 MiB at 4 MiB/s: about two seconds, so the host finds it running after GOOD.
    let spec = format!(
        "pool:{},volume=v,size=8M,sanitize_rate=4M",
        pool_path.display()
    );
    let node = TargetNodeConfig::new(IQN, vec![(0, spec)]);
    let mut config = TargetConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), node);
    config.threads = Some(2);
    let target = server::start(config).expect("the target starts");
    let mut client_config = ClientConfig::new(target.addrs()[0], Some(IQN.into()));
    client_config.login_timeout = Duration::from_secs(10);
    let mut client = Client::connect(&client_config).expect("login");

    // The parameter list: one pass, a 512-byte pattern.
    let mut parameters = vec![0x01, 0, 0x02, 0x00];
    parameters.extend(std::iter::repeat_n(0x5au8, 512));
    let cdb = Cdb::from_bytes(
        &[SANITIZE, OVERWRITE_IMMED, 0, 0, 0, 0, 0, 0x02, 0x04, 0],
        DataDirection::Write(516),
    )
    .unwrap();
    let (status, sense, _) = run(&mut client, cdb, parameters);
    assert_eq!(status, 0, "SANITIZE IMMED answers GOOD: {sense:?}");

    let tur = || Cdb::test_unit_ready();
    let started = Instant::now();
    let mut progress = Vec::new();
    loop {
        let (status, sense, _) = run(&mut client, tur(), Vec::new());
        if status == 0 {
            break;
        }
        assert_eq!(status, CHECK_CONDITION);
        let (key, asc, ascq, done) = sense.expect("sense data");
        assert_eq!((key, asc, ascq), (0x2, 0x04, 0x1b), "SANITIZE IN PROGRESS");
        progress.push(done.expect("the progress indication (SKSV)"));
        let (status, _, data) = run(&mut client, Cdb::request_sense(18, false), vec![0; 18]);
        assert_eq!(status, 0, "REQUEST SENSE answers GOOD");
        assert_eq!((data[2] & 0x0f, data[12], data[13]), (0x2, 0x04, 0x1b));
        let read = Cdb::read_10(0, 1, 512, false).unwrap();
        let (status, sense, _) = run(&mut client, read, vec![0; 512]);
        assert!(
            status == CHECK_CONDITION || progress.len() > 1,
            "a read is refused while it runs: {sense:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the sanitize never ends: {progress:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !progress.is_empty(),
        "the host saw it in progress after GOOD"
    );
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    for lba in [0u32, 8191] {
        let read = Cdb::read_10(lba, 1, 512, false).unwrap();
        let (status, sense, data) = run(&mut client, read, vec![0; 512]);
        assert_eq!(status, 0, "{sense:?}");
        assert!(
            data.iter().all(|&b| b == 0x5a),
            "block {lba} holds the pattern"
        );
    }
    drop(client);
    target.shutdown();
}
