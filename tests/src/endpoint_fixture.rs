//! The set-up the protocol endpoint tests share (issue 18): a real `iscsi-gateway` with a
//! control socket and two event loops, one volume pool, volumes made in it, and a target
//! with a protocol endpoint at LUN 0 beside any plain LUNs; then the helpers those tests
//! repeat: two-level LUNs, a session per host, TEST UNIT READY and its sense, attentions
//! cleared, binds and unbinds through `iscsi-ctl gateway`.
//!
//! ```no_run
//! use system_tests::endpoint_fixture::{bound_lun, settle, EndpointSpec};
//! let gateway = EndpointSpec::new("iqn.2026-12.test:t").volumes(&["v1"], "4M").start();
//! gateway.bind("iqn.2026-12.test:host", &["v1"]);
//! let mut client = gateway.session("iqn.2026-12.test:host", None);
//! settle(&mut client, bound_lun(0, 1));
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use datapath::client::{Client, ClientConfig};
use datapath::scsi::{Cdb, LunAddress};
use datapath::session::Request;
use serde_json::Value;

use crate::gateway_ctl::{ctl_json, ctl_ok};
use crate::{free_port, gateway_binary, loopback, GatewayProcess, TempDir};

/// SENSE KEY UNIT ATTENTION.
pub const UNIT_ATTENTION: u8 = 0x6;
/// SENSE KEY ILLEGAL REQUEST.
pub const ILLEGAL_REQUEST: u8 = 0x5;
/// The endpoint's LUN in every gateway this fixture starts.
pub const ENDPOINT: u16 = 0;

/// What to start: the target's name, the pool's size, the volumes, the plain LUNs beside
/// the endpoint, how many portals, and whether the gateway keeps a state directory.
#[derive(Debug, Clone)]
pub struct EndpointSpec {
    target: String,
    pool_size: String,
    volumes: Vec<(String, String)>,
    plain_luns: Vec<(u64, String)>,
    portals: usize,
    state_dir: bool,
    control_priority: Option<String>,
}

impl EndpointSpec {
    /// One portal, a 64 MiB pool, no volume, no plain LUN, no state directory.
    pub fn new(target: &str) -> EndpointSpec {
        EndpointSpec {
            target: target.into(),
            pool_size: "64M".into(),
            volumes: Vec::new(),
            plain_luns: Vec::new(),
            portals: 1,
            state_dir: false,
            control_priority: None,
        }
    }

    pub fn pool_size(mut self, size: &str) -> EndpointSpec {
        self.pool_size = size.into();
        self
    }

    /// Volumes of `size` each, made before the target.
    pub fn volumes(mut self, names: &[&str], size: &str) -> EndpointSpec {
        self.volumes.extend(
            names
                .iter()
                .map(|name| (name.to_string(), size.to_string())),
        );
        self
    }

    /// A plain LUN (`ram:1M`, ...) beside the endpoint.
    pub fn plain_lun(mut self, lun: u64, spec: &str) -> EndpointSpec {
        self.plain_luns.push((lun, spec.into()));
        self
    }

    /// `count` portals of one gateway (the same target through each).
    pub fn portals(mut self, count: usize) -> EndpointSpec {
        self.portals = count.max(1);
        self
    }

    /// `--state-dir` in the scratch directory: bindings survive a [`EndpointGateway::restart`].
    pub fn state_dir(mut self) -> EndpointSpec {
        self.state_dir = true;
        self
    }

    /// `--control-priority CLASS` (the control plane's threads beside the event loops).
    pub fn control_priority(mut self, class: &str) -> EndpointSpec {
        self.control_priority = Some(class.into());
        self
    }

    /// Creates the pool, starts the gateway, makes the volumes and the target.
    pub fn start(self) -> EndpointGateway {
        let dir = TempDir::new("gateway-endpoint").expect("scratch directory");
        let pool = dir.join("pool.img").display().to_string();
        let created = Command::new(gateway_binary())
            .args(["pool", "create", &pool, &self.pool_size])
            .output()
            .expect("iscsi-gateway pool create runs");
        assert!(created.status.success(), "pool create: {created:?}");
        let portals = (0..self.portals).map(|_| loopback(free_port())).collect();
        let mut gateway = EndpointGateway {
            socket: dir.join("control.sock"),
            dir,
            process: None,
            pool,
            portals,
            target: self.target.clone(),
            starts: 0,
            state_dir: self.state_dir,
            control_priority: self.control_priority.clone(),
        };
        gateway.launch();
        for (name, size) in &self.volumes {
            gateway.ctl(&["volume", "create", "--pool", &gateway.pool, name, size]);
        }
        gateway.ctl(&["target", "create", &self.target]);
        gateway.ctl(&[
            "lun",
            "attach",
            &self.target,
            &ENDPOINT.to_string(),
            "endpoint",
        ]);
        for (lun, spec) in &self.plain_luns {
            gateway.ctl(&["lun", "attach", &self.target, &lun.to_string(), spec]);
        }
        gateway
    }
}

/// A running gateway set up by [`EndpointSpec::start`]; stopped and its files removed on
/// drop.
pub struct EndpointGateway {
    // Declared before `dir`: the gateway stops before its directory goes.
    process: Option<GatewayProcess>,
    /// The scratch directory (pool, control socket, state, logs).
    pub dir: TempDir,
    /// The control socket (`iscsi-ctl gateway --socket`).
    pub socket: PathBuf,
    /// The pool file's path, as `--pool` takes it.
    pub pool: String,
    /// The portals, the first one being [`EndpointGateway::portal`].
    pub portals: Vec<SocketAddr>,
    /// The target's name.
    pub target: String,
    starts: usize,
    state_dir: bool,
    control_priority: Option<String>,
}

impl EndpointGateway {
    fn launch(&mut self) {
        let socket = self.socket.display().to_string();
        let state = self.dir.join("state").display().to_string();
        let extra: Vec<String> = self.portals[1..].iter().map(|p| p.to_string()).collect();
        let mut args = vec!["--control-socket", &socket, "--threads", "2"];
        for portal in &extra {
            args.extend(["--portal", portal]);
        }
        if self.state_dir {
            args.extend(["--state-dir", &state]);
        }
        if let Some(class) = &self.control_priority {
            args.extend(["--control-priority", class]);
        }
        let log = self.dir.join(format!("gateway-{}.log", self.starts));
        self.starts += 1;
        let process = GatewayProcess::start_with_args(self.portals[0], &args, &log)
            .unwrap_or_else(|e| panic!("gateway starts: {e}"));
        self.process = Some(process);
    }

    /// The first portal.
    pub fn portal(&self) -> SocketAddr {
        self.portals[0]
    }

    /// The gateway process (its pid, log, memory).
    pub fn process(&self) -> &GatewayProcess {
        self.process.as_ref().expect("the gateway runs")
    }

    /// `kill -9`, then a start on the same portals, socket and state directory.
    pub fn restart(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill_hard();
        }
        self.launch();
    }

    /// `iscsi-ctl gateway ARGS` that must succeed: its stdout.
    pub fn ctl(&self, args: &[&str]) -> String {
        ctl_ok(&self.socket, args)
    }

    /// `iscsi-ctl gateway bind VOLUMES --endpoint 0 --host HOST` (one call): its JSON.
    pub fn bind(&self, host: &str, volumes: &[&str]) -> Value {
        ctl_json(&self.socket, &self.bind_args(host, volumes))
    }

    /// The arguments of [`EndpointGateway::bind`], for a caller that reads the text.
    pub fn bind_args<'a>(&'a self, host: &'a str, volumes: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["bind"];
        args.extend_from_slice(volumes);
        args.extend([
            "--target",
            &self.target,
            "--endpoint",
            "0",
            "--host",
            host,
            "--pool",
            &self.pool,
        ]);
        args
    }

    /// `iscsi-ctl gateway unbind VOLUMES --host HOST`: its stdout.
    pub fn unbind(&self, host: &str, volumes: &[&str]) -> String {
        let mut args = vec!["unbind"];
        args.extend_from_slice(volumes);
        args.extend([
            "--target",
            &self.target,
            "--host",
            host,
            "--pool",
            &self.pool,
        ]);
        self.ctl(&args)
    }

    /// A session of `host` to the target through the first portal; `isid` fixed (two
    /// values, two nexuses) or random.
    pub fn session(&self, host: &str, isid: Option<[u8; 6]>) -> Client {
        self.session_at(self.portal(), host, isid)
    }

    /// [`EndpointGateway::session`] through `portal`.
    pub fn session_at(&self, portal: SocketAddr, host: &str, isid: Option<[u8; 6]>) -> Client {
        let mut config = ClientConfig::new(portal, Some(self.target.clone()));
        config.initiator_name = host.into();
        config.isid = isid;
        config.login_timeout = Duration::from_secs(10);
        Client::connect(&config).unwrap_or_else(|e| panic!("login as {host}: {e}"))
    }
}

/// The `u64` our initiator takes for the subsidiary LU `endpoint:secondary`.
pub fn bound_lun(endpoint: u16, secondary: u32) -> u64 {
    LunAddress::Subsidiary {
        endpoint,
        secondary,
    }
    .key()
}

/// Status, (sense key, ASC, ASCQ) and Data-In of one command.
pub fn execute(
    client: &mut Client,
    lun: u64,
    cdb: Cdb,
    data: Vec<u8>,
) -> (u8, Option<(u8, u8, u8)>, Vec<u8>) {
    let outcome = client
        .execute(Request::new(lun, cdb, data, 0))
        .expect("an answer");
    let sense = outcome
        .sense
        .as_ref()
        .filter(|s| s.len() >= 14)
        .map(|s| (s[2] & 0x0f, s[12], s[13]));
    (outcome.status, sense, outcome.buffer)
}

/// TEST UNIT READY on `lun`: the status and, for CHECK CONDITION, (key, ASC, ASCQ).
pub fn test_unit_ready(client: &mut Client, lun: u64) -> (u8, Option<(u8, u8, u8)>) {
    let (status, sense, _) = execute(client, lun, Cdb::test_unit_ready(), Vec::new());
    (status, sense)
}

/// TEST UNIT READY until it reports something other than a unit attention (a change
/// establishes a few per nexus at most).
pub fn past_attentions(client: &mut Client, lun: u64) -> (u8, Option<(u8, u8, u8)>) {
    for _ in 0..4 {
        let answer = test_unit_ready(client, lun);
        if !matches!(answer.1, Some((UNIT_ATTENTION, _, _))) {
            return answer;
        }
    }
    panic!("LUN {lun:#x}: unit attentions do not end");
}

/// [`past_attentions`] that must end in GOOD.
pub fn settle(client: &mut Client, lun: u64) {
    assert_eq!(past_attentions(client, lun), (0, None), "LUN {lun:#x}");
}
