//! Operational limits changed live (`params_set`): the offer new logins get, and Async
//! Message event 4 (RFC 7143 section 11.9.1) to every session so its initiator declares
//! again with a Text Request, and learns our new MaxRecvDataSegmentLength in the answer
//! (`session::renegotiate`). Keys a login alone negotiates (MaxBurstLength,
//! FirstBurstLength) take effect for new sessions only.

use std::sync::Arc;

use super::portals::AsyncRequestSpec;
use super::{ConfigSnapshot, Controller, SessionInfo};

/// Async Message event 4: the target requests parameter negotiation.
const RENEGOTIATE: u8 = 4;

/// Seconds an initiator has to send its Text Request after event 4 (Parameter3). Not
/// enforced: a session that never renegotiates keeps the limits it had.
pub const RENEGOTIATE_WITHIN_S: u16 = 30;

/// A change of the offer; `None` keeps a value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OfferChange {
    pub max_recv_data_segment_length: Option<u32>,
    pub max_burst_length: Option<u32>,
    pub first_burst_length: Option<u32>,
}

/// The offer's values after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfferLimits {
    pub max_recv_data_segment_length: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
}

impl Controller {
    /// The limits new logins are offered.
    pub fn offer_limits(&self) -> OfferLimits {
        let current = match self.shared.current.lock() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        let offer = &current.session_config.offer;
        OfferLimits {
            max_recv_data_segment_length: offer.max_recv_data_segment_length,
            max_burst_length: offer.max_burst_length,
            first_burst_length: offer.first_burst_length,
        }
    }

    /// Changes the offer (values already checked by the caller), publishes it to the
    /// event loops, and sends event 4 to every logged-in session. Returns the new limits
    /// and the sessions asked.
    pub fn set_offer(&self, change: OfferChange) -> (OfferLimits, Vec<SessionInfo>) {
        {
            let mut current = match self.shared.current.lock() {
                Ok(c) => c,
                Err(poisoned) => poisoned.into_inner(),
            };
            let mut base = current.session_config.as_ref().clone();
            let offer = &mut base.offer;
            if let Some(n) = change.max_recv_data_segment_length {
                offer.max_recv_data_segment_length = n;
            }
            if let Some(n) = change.max_burst_length {
                offer.max_burst_length = n;
            }
            if let Some(n) = change.first_burst_length {
                offer.first_burst_length = n;
            }
            // The base the next snapshot is built from; `publish_with` numbers it.
            *current = Arc::new(ConfigSnapshot {
                epoch: current.epoch,
                session_config: Arc::new(base),
                targets: Arc::clone(&current.targets),
                listeners: Arc::clone(&current.listeners),
            });
        }
        self.publish_with(None, None);
        let asked = self.send_async(
            AsyncRequestSpec {
                event: RENEGOTIATE,
                parameter2: 0,
                parameter3: RENEGOTIATE_WITHIN_S,
            },
            |_| true,
        );
        (self.offer_limits(), asked)
    }
}
