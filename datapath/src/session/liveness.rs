//! How a connection that goes silent (a cut link: no reset, no FIN) is noticed, whichever
//! path carries the session: NOP-Out pings (RFC 7143 section 11.18) after the target was
//! silent `ping_interval`, answered within `ping_timeout`, and the socket's
//! `TCP_USER_TIMEOUT` (RFC 5482) bounding how long sent data may stay unacknowledged.
//!
//! One definition for every path (issue 14, path loss): the software path applies it to
//! its session and io_uring socket; a dependent adapter's host session pings with it and
//! the adapter sets the timeout on its socket (`adapter::NetworkConfig`); an independent
//! adapter's own session and socket take both (`adapter::IndependentConfig`). The values
//! come from the user (`ClientConfig::nop_*`, `ShardConfig::tcp_user_timeout`,
//! `MultipathConfig::ping_*`); the two sets of defaults are the constants below.

use std::time::Duration;

/// The liveness settings of one path (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// Silence from the target before a NOP-Out ping (zero: no pings).
    pub ping_interval: Duration,
    /// How long a ping may go unanswered before the connection counts as lost.
    pub ping_timeout: Duration,
    /// `TCP_USER_TIMEOUT` on the path's socket; `None`: the kernel's (about 15 minutes of
    /// retransmissions).
    pub tcp_user_timeout: Option<Duration>,
}

impl Liveness {
    /// One path with nowhere else to go: pings after 10 s of silence, 10 s to answer,
    /// the kernel's TCP timeout (a slow target is better waited for than dropped).
    pub const SINGLE_PATH: Liveness = Liveness {
        ping_interval: Duration::from_secs(10),
        ping_timeout: Duration::from_secs(10),
        tcp_user_timeout: None,
    };

    /// A path among several (multipath): sub-second, so I/O moves to another path within
    /// the 1 s goal, where open-iscsi takes 5 to 15 s.
    pub const MULTIPATH: Liveness =
        Liveness::pinging(Duration::from_millis(250), Duration::from_millis(500), None);

    /// Pings every `interval` of silence answered within `timeout`; `TCP_USER_TIMEOUT`
    /// is `tcp_user_timeout`, or else their sum (data unacknowledged that long is the
    /// same silence a ping would find).
    pub const fn pinging(
        interval: Duration,
        timeout: Duration,
        tcp_user_timeout: Option<Duration>,
    ) -> Liveness {
        let sum = interval.saturating_add(timeout);
        Liveness {
            ping_interval: interval,
            ping_timeout: timeout,
            tcp_user_timeout: match tcp_user_timeout {
                Some(t) => Some(t),
                None => Some(sum),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinging_bounds_tcp_by_the_pings_unless_told_otherwise() {
        let ms = Duration::from_millis;
        let l = Liveness::pinging(ms(250), ms(500), None);
        assert_eq!(l.tcp_user_timeout, Some(ms(750)));
        let l = Liveness::pinging(ms(250), ms(500), Some(ms(3000)));
        assert_eq!(l.tcp_user_timeout, Some(ms(3000)));
        assert_eq!(Liveness::MULTIPATH.tcp_user_timeout, Some(ms(750)));
        assert_eq!(Liveness::SINGLE_PATH.tcp_user_timeout, None);
    }
}
