//! Issue 11: one client must never take the gateway down. Each test starts `iscsi-gateway`
//! as users run it (a child process, one event loop so attacker and victim share it), runs
//! one attack from `system_tests::hostile` for a few seconds, and judges the process while a
//! healthy session works beside the attack:
//! - the gateway is still running;
//! - its resident memory, sampled every 50 ms, stayed within the budget
//!   (64 MiB + 1 MiB per logged-in session);
//! - the healthy session's QD1 4 KiB reads kept working, with a p99 within a generous
//!   bound (5x its unloaded p99, at least 50 ms; the benchmark `scripts/bench-hostile.sh`
//!   measures the 2x goal with release builds);
//! - for the slot attacks, a legitimate login from 127.0.0.1 succeeds within a second
//!   while the attacker's connections from another loopback address are held.
//!
//! Each test prints a `figures:` line (run with `--nocapture` to see them all) and fails
//! with every broken goal listed. The tests run one at a time: they time reads on two
//! shared cores.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use system_tests::gateway_process::{GatewayProcess, GatewaySpec, GATEWAY_IQN};
use system_tests::hostile::healthy::{login_time, HealthySession};
use system_tests::hostile::wire::ipv4_portal;
use system_tests::hostile::{self, AttackReport, MemoryWatch, Until};
use system_tests::paused_fuse::{PausedFuse, FUSE_DEVICE, FUSE_TOOLS};
use system_tests::{require_tools, running_in_ci, tool_verdict, ToolVerdict};

/// How long each attack runs ...
const ATTACK_TIME: Duration = Duration::from_secs(8);
/// ... and the slot attacks, whose thousands of connects take seconds on the gateway of
/// today (its accept queue overflows and dropped SYNs are retried).
const SLOT_ATTACK_TIME: Duration = Duration::from_secs(12);
/// How long the unloaded reads are measured first.
const UNLOADED_TIME: Duration = Duration::from_secs(1);
/// The memory budget: a base plus this much per logged-in session.
const BASE_BUDGET_KIB: u64 = 64 * 1024;
const SESSION_BUDGET_KIB: u64 = 1024;
/// Past this multiple of the budget the test has failed anyway: stop the attack.
const CEILING_FACTOR: u64 = 8;
/// Healthy p99 under attack may be this many times its unloaded p99 ...
const P99_FACTOR: u32 = 5;
/// ... or this, whichever is larger (scheduling noise on a loaded debug build).
const P99_FLOOR: Duration = Duration::from_millis(50);
/// A legitimate login during a slot attack must take at most this (the goal is 100 ms).
const LOGIN_BOUND: Duration = Duration::from_secs(1);
/// Connections of the slot attacks: more than one event loop's 1,024 slots.
const SLOT_ATTACK_CONNECTIONS: usize = 3000;
const IDLE_SOURCE: [u8; 4] = [127, 0, 0, 2];
const SLOWLORIS_SOURCE: [u8; 4] = [127, 0, 0, 3];
const FLOOD_SOURCE: [u8; 4] = [127, 0, 0, 4];

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn budget_kib(sessions: u64) -> u64 {
    BASE_BUDGET_KIB + SESSION_BUDGET_KIB * sessions
}

fn start_gateway(luns: &[&str]) -> GatewayProcess {
    // One event loop: the attacker and the healthy session share it, the hard case.
    GatewayProcess::start(&GatewaySpec::new(luns).threads(1)).expect("iscsi-gateway starts")
}

/// The healthy session, logged in before any attack, on LUN 0.
fn healthy_session(portal: SocketAddr) -> HealthySession {
    HealthySession::connect(portal, GATEWAY_IQN, 0).expect("a fair login to an unloaded gateway")
}

/// What one attack run saw; `broken_goals` lists every goal it missed.
struct Verdict {
    figures: String,
    broken_goals: Vec<String>,
}

impl Verdict {
    fn assert_held(self, attack: &str) {
        if self.broken_goals.is_empty() {
            eprintln!("figures: {attack}: {}", self.figures);
        }
        assert!(
            self.broken_goals.is_empty(),
            "{attack}: {}\nfigures: {}",
            self.broken_goals.join("; "),
            self.figures
        );
    }
}

/// Runs `attack` for `attack_time` beside a healthy session on LUN 0 and judges the
/// gateway. `sessions` is the number of logged-in sessions the budget allows for.
/// `during` runs on its own thread once the attack's connections are open (a login).
fn judge_attack(
    gateway: &mut GatewayProcess,
    sessions: u64,
    attack_time: Duration,
    attack: impl FnOnce(&Until, &dyn Fn()) -> AttackReport + Send,
    during: impl FnOnce() -> Option<Result<Duration, String>> + Send,
) -> Verdict {
    let mut healthy = healthy_session(gateway.portal());
    let unloaded = healthy.measure(&Until::after(UNLOADED_TIME));
    let until = Until::after(attack_time);
    let budget = budget_kib(sessions);
    let watch = MemoryWatch::start(
        gateway.pid(),
        budget * CEILING_FACTOR,
        until.stop_flag(),
        attack_time + Duration::from_secs(5),
    );
    let (opened_tx, opened_rx) = std::sync::mpsc::channel::<()>();
    let (report, loaded, login) = thread::scope(|scope| {
        let attacker = scope.spawn(|| {
            let opened = move || {
                let _ = opened_tx.send(());
            };
            attack(&until, &opened)
        });
        let login = scope.spawn(move || {
            // Wait for the attack's connections to be open, or for it to end.
            let _ = opened_rx.recv_timeout(attack_time);
            during()
        });
        let loaded = healthy.measure(&until);
        let report = attacker.join().expect("attacks do not panic");
        (
            report,
            loaded,
            login.join().expect("the login probe does not panic"),
        )
    });
    let seen = watch.finish();
    let mut broken_goals = Vec::new();
    if let Some(status) = gateway.exit_status() {
        broken_goals.push(format!(
            "the gateway died ({status}); log:\n{}",
            gateway.log()
        ));
    }
    if seen.max_rss_kib > budget {
        broken_goals.push(format!(
            "resident memory reached {} MiB{}, over the budget of {} MiB",
            seen.max_rss_kib / 1024,
            if seen.over_ceiling {
                " (attack stopped early)"
            } else {
                ""
            },
            budget / 1024
        ));
    }
    let p99_bound = (unloaded.p99 * P99_FACTOR).max(P99_FLOOR);
    if loaded.errors > 0 || loaded.reads == 0 {
        broken_goals.push(format!(
            "the healthy session's reads failed ({} done, {} failed: {})",
            loaded.reads,
            loaded.errors,
            loaded.first_error.as_deref().unwrap_or("none done")
        ));
    }
    if loaded.p99 > p99_bound {
        broken_goals.push(format!(
            "healthy read p99 {:?} over {:?} (unloaded p99 {:?})",
            loaded.p99, p99_bound, unloaded.p99
        ));
    }
    match &login {
        Some(Err(e)) => broken_goals.push(format!("a legitimate login failed: {e}")),
        Some(Ok(took)) if *took > LOGIN_BOUND => broken_goals.push(format!(
            "a legitimate login took {took:?}, over {LOGIN_BOUND:?}"
        )),
        _ => {}
    }
    let figures = format!(
        "attack {}; max RSS {} KiB (budget {} KiB); healthy unloaded p99 {:?}, under attack {}; legit login {}",
        report.to_json(),
        seen.max_rss_kib,
        budget,
        unloaded.p99,
        loaded,
        match &login {
            None => "not tried".to_owned(),
            Some(Ok(took)) => format!("{took:?}"),
            Some(Err(e)) => format!("failed: {e}"),
        }
    );
    Verdict {
        figures,
        broken_goals,
    }
}

fn nop_flood_case(target: Option<&str>) -> Verdict {
    let mut gateway = start_gateway(&["ram:64M"]);
    let portal = ipv4_portal(gateway.portal()).expect("IPv4 loopback portal");
    let spec = hostile::NopFlood {
        portal,
        source: FLOOD_SOURCE.into(),
        target: target.map(str::to_owned),
        ping_bytes: 256 * 1024,
    };
    // The attacker's session and the healthy one.
    judge_attack(
        &mut gateway,
        2,
        ATTACK_TIME,
        |until, _| hostile::nop_flood(&spec, until),
        || None,
    )
}

#[test]
fn nop_flood_in_a_discovery_session_leaves_the_gateway_within_budget() {
    let _one = serial();
    nop_flood_case(None).assert_held("NOP flood (discovery session, 256 KiB pings)");
}

#[test]
fn nop_flood_in_a_logged_in_session_leaves_the_gateway_within_budget() {
    let _one = serial();
    nop_flood_case(Some(GATEWAY_IQN)).assert_held("NOP flood (normal session, 256 KiB pings)");
}

#[test]
fn slow_reader_past_max_cmd_sn_leaves_the_gateway_within_budget() {
    let _one = serial();
    let mut gateway = start_gateway(&["ram:64M"]);
    let spec = hostile::SlowReader {
        portal: ipv4_portal(gateway.portal()).expect("IPv4 loopback portal"),
        source: FLOOD_SOURCE.into(),
        target: GATEWAY_IQN.to_owned(),
        lun: 0,
        read_bytes: 1 << 20,
        block_bytes: 512,
    };
    judge_attack(
        &mut gateway,
        2,
        ATTACK_TIME,
        |until, _| hostile::slow_reader(&spec, until),
        || None,
    )
    .assert_held("slow reader (1 MiB READs past MaxCmdSN, never reading)");
}

#[test]
fn idle_connection_flood_leaves_room_for_a_legitimate_login() {
    let _one = serial();
    let mut gateway = start_gateway(&["ram:64M"]);
    let portal = gateway.portal();
    let spec = hostile::IdleFlood {
        portal: ipv4_portal(portal).expect("IPv4 loopback portal"),
        source: IDLE_SOURCE.into(),
        connections: SLOT_ATTACK_CONNECTIONS,
    };
    // The healthy session and the legitimate login; idle connections are no sessions.
    judge_attack(
        &mut gateway,
        2,
        SLOT_ATTACK_TIME,
        |until, opened| hostile::idle_flood(&spec, until, &mut |_| opened()),
        || Some(login_time(portal, GATEWAY_IQN)),
    )
    .assert_held("idle flood (3,000 connections from 127.0.0.2 that never send)");
}

#[test]
fn login_slowloris_leaves_room_for_a_legitimate_login() {
    let _one = serial();
    let mut gateway = start_gateway(&["ram:64M"]);
    let portal = gateway.portal();
    let spec = hostile::Slowloris {
        portal: ipv4_portal(portal).expect("IPv4 loopback portal"),
        source: SLOWLORIS_SOURCE.into(),
        connections: SLOT_ATTACK_CONNECTIONS,
        target: GATEWAY_IQN.to_owned(),
        byte_interval: Duration::from_secs(2),
    };
    judge_attack(
        &mut gateway,
        2,
        SLOT_ATTACK_TIME,
        |until, opened| hostile::login_slowloris(&spec, until, &mut |_| opened()),
        || Some(login_time(portal, GATEWAY_IQN)),
    )
    .assert_held("login slowloris (3,000 connections from 127.0.0.3, a byte every 2 s)");
}

/// Skips (or fails under CI) when the kernel has no FUSE device: no package brings it.
fn require_fuse_device() -> bool {
    if Path::new(FUSE_DEVICE).exists() {
        return true;
    }
    match tool_verdict(&[FUSE_DEVICE], running_in_ci()) {
        ToolVerdict::Run => true,
        ToolVerdict::Skip(notice) => {
            eprintln!("\n!!!!!!!! {notice} !!!!!!!!\n");
            false
        }
        ToolVerdict::Fail(reason) => panic!("{reason}"),
    }
}

#[test]
fn a_stuck_backing_store_does_not_stall_other_luns_on_its_event_loop() {
    require_tools!(FUSE_TOOLS[0], FUSE_TOOLS[1]);
    if !require_fuse_device() {
        return;
    }
    let _one = serial();
    // Declared before the gateway so it is dropped after it: the gateway is stopped first,
    // then the daemon continued and the mount removed.
    let mut fuse = PausedFuse::mount(64 << 20).expect("bindfs mounts a scratch directory");
    let stuck_lun = format!("file:{}", fuse.file().display());
    // Commands the hung store holds are answered by the gateway after this long.
    let backend_timeout = Duration::from_secs(2);
    let spec = GatewaySpec::new(&["ram:64M", &stuck_lun])
        .threads(1)
        .arg("--backend-timeout")
        .arg(&backend_timeout.as_secs().to_string());
    let mut gateway = GatewayProcess::start(&spec).expect("iscsi-gateway starts");
    let portal = gateway.portal();
    let mut healthy = healthy_session(portal);
    let unloaded = healthy.measure(&Until::after(UNLOADED_TIME));

    // The session logged in before the store hangs goes on reading through the hang.
    let healthy_until = Until::after(Duration::from_secs(6));
    let (loaded, stuck_report, login) = thread::scope(|scope| {
        // The client is bound to its thread (its io_uring): the sabotage runs beside it.
        let sabotage = scope.spawn(|| {
            thread::sleep(Duration::from_millis(500));
            fuse.pause();
            let stuck = thread::spawn(move || {
                hostile::stuck_write(
                    &hostile::StuckWrite {
                        portal: ipv4_portal(portal).expect("IPv4 loopback portal"),
                        target: GATEWAY_IQN.to_owned(),
                        lun: 1,
                        write_bytes: 4096,
                        block_bytes: 512,
                    },
                    &Until::after(Duration::from_secs(8)),
                )
            });
            thread::sleep(Duration::from_secs(1));
            let login = login_time(portal, GATEWAY_IQN);
            let stuck_report = stuck.join().expect("the stuck write does not panic");
            (stuck_report, login)
        });
        let loaded = healthy.measure(&healthy_until);
        let (stuck_report, login) = sabotage.join().expect("the sabotage does not panic");
        (loaded, stuck_report, login)
    });
    fuse.resume();

    let mut broken_goals = Vec::new();
    if let Some(status) = gateway.exit_status() {
        broken_goals.push(format!("the gateway died ({status})"));
    }
    let p99_bound = (unloaded.p99 * P99_FACTOR).max(P99_FLOOR);
    if loaded.errors > 0 || loaded.reads == 0 {
        broken_goals.push(format!(
            "LUN 0 reads stopped while LUN 1 hung ({} done, {} failed: {})",
            loaded.reads,
            loaded.errors,
            loaded.first_error.as_deref().unwrap_or("none done")
        ));
    } else if loaded.p99 > p99_bound {
        broken_goals.push(format!(
            "LUN 0 read p99 {:?} over {p99_bound:?} while LUN 1 hung",
            loaded.p99
        ));
    }
    // The stuck WRITE itself is answered by the gateway's deadline, not left hanging.
    let write_answer = stuck_report.first_error.as_deref().unwrap_or("none");
    if !write_answer.contains("ABORTED COMMAND: COMMAND TIMEOUT DURING PROCESSING") {
        broken_goals.push(format!(
            "the WRITE to the hung LUN was answered \"{write_answer}\", not ABORTED COMMAND, \
             COMMAND TIMEOUT DURING PROCESSING"
        ));
    } else if stuck_report.elapsed > backend_timeout + Duration::from_secs(3) {
        broken_goals.push(format!(
            "the WRITE to the hung LUN took {:?} to be answered (deadline {backend_timeout:?})",
            stuck_report.elapsed
        ));
    }
    match &login {
        Err(e) => broken_goals.push(format!("a login while LUN 1 hung failed: {e}")),
        Ok(took) if *took > LOGIN_BOUND => {
            broken_goals.push(format!("a login while LUN 1 hung took {took:?}"))
        }
        Ok(_) => {}
    }
    Verdict {
        figures: format!(
            "LUN 0 unloaded p99 {:?}; while LUN 1 hung: {}; login {:?}; the stuck WRITE: {}",
            unloaded.p99,
            loaded,
            login,
            stuck_report.to_json()
        ),
        broken_goals,
    }
    .assert_held("stuck backend (a file LUN on a stopped FUSE daemon, one event loop)");
    drop(gateway);
    drop(fuse);
}
