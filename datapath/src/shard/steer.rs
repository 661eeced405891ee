//! How a software shard connects: steered to its NIC receive queue when the interface has
//! RSS (DESIGN.md, "shards pin to NIC queues"), plainly otherwise. Shard `i` asks for
//! receive queue `i` and expects its packets on its own core; the [`PathReport`] says what
//! was found (loopback and veth have no RSS: the report says so and the shard carries on).

use crate::session::connect::ClientConfig;
use crate::steering::{self, PathReport, SteeringRequest};
use crate::transport::{RingConfig, TcpConnection, TransportError};

/// Connects shard `index` (pinned to `core`, if any) to the portal of `client`.
pub(super) fn connect(
    index: usize,
    core: Option<usize>,
    client: &ClientConfig,
    ring: &RingConfig,
    steer: bool,
) -> Result<(TcpConnection, Option<PathReport>), TransportError> {
    if !steer {
        return plain(client, ring).map(|conn| (conn, None));
    }
    let mut request = SteeringRequest::new(client.portal, index as u32);
    request.expected_cpu = core;
    match steering::plan(&request) {
        Ok(plan) => {
            let (conn, report) = steering::connect_steered(&plan, client.connect_timeout, ring)?;
            tracing::debug!(shard = index, report = %report, "shard connection");
            Ok((conn, Some(report)))
        }
        Err(e) => {
            // Steering is an optimisation: a NIC we cannot read is reported, not fatal.
            tracing::info!(shard = index, error = %e, "no NIC steering for this shard");
            plain(client, ring).map(|conn| (conn, None))
        }
    }
}

fn plain(client: &ClientConfig, ring: &RingConfig) -> Result<TcpConnection, TransportError> {
    TcpConnection::connect_with_config(client.portal, client.connect_timeout, ring)
}

/// Reads `SO_INCOMING_CPU` once the target has answered (the login response).
pub(super) fn observe(report: &mut Option<PathReport>, conn: &TcpConnection) {
    if let Some(report) = report {
        report.observe(conn);
    }
}
