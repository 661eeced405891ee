//! The login phase, RFC 7143 section 6 (login and text negotiation), 11.12 (Login
//! Request), 11.13 (Login Response) and 12.1.3 (CHAP, through [`crate::auth::chap`]).
//!
//! The login runs in lock step, one Login Request per Login Response:
//! 1. Security stage (CSG=0): the first request carries InitiatorName, InitiatorAlias,
//!    SessionType, TargetName (normal sessions) and AuthMethod (`CHAP` or `None`).
//!    With CHAP: `CHAP_A=5`, then `CHAP_N`/`CHAP_R` (and our `CHAP_I`/`CHAP_C` for mutual
//!    CHAP, whose answer `CHAP_N`/`CHAP_R` the target sends with T=1 and we verify).
//! 2. Operational stage (CSG=1): the keys of [`Negotiation`], with T=1 and NSG=3 from the
//!    first request on; a target that answers T=0 with more keys gets our replies.
//! 3. The response with T=1 and NSG=3 ends the login: TSIH, window and StatSN are taken
//!    from it, digests and the negotiated MaxRecvDataSegmentLength take effect after it.
//!
//! A stage moves on only when both sides set T=1 (section 6.2). A target text continued
//! with C=1 is pulled with empty requests; our own text longer than 8192 bytes is sent in
//! pieces with C=1, each acknowledged by an empty response. Round trips are bounded.
//! A non-zero status class ends the login: class 1 is a redirection (section 11.13.5),
//! the others are failures reported with their names.

use std::collections::VecDeque;
use std::time::Instant;

use super::redirect::{RedirectKind, TargetAddress};
use super::{
    login_status_name, Event, Outgoing, Session, SessionError, SessionState, Transmit,
    TransmitData, LOGIN_MAX_RECV_DATA_SEGMENT_LENGTH,
};
use crate::auth::chap::{ChapError, InitiatorChap};
use crate::pdu::{self, Header, LoginStage, Opcode, Tag};
use crate::text::{
    encode_pairs, is_operational_key, parse_pairs, split_text, Negotiation, Role, SessionKind,
    TextAccumulator, TextLimits,
};

/// Most Login Request/Response round trips in one login.
pub(crate) const MAX_LOGIN_ROUND_TRIPS: u32 = 16;

/// Most bytes of one login text from the target, joined over continued PDUs.
const MAX_LOGIN_TEXT: usize = 64 * 1024;

/// Where the security stage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthStep {
    /// AuthMethod offered; the target's choice not seen yet.
    AwaitMethod,
    /// CHAP agreed and running (see `Login::chap`).
    Chap,
    /// AuthMethod=None agreed.
    NoneAgreed,
}

pub(crate) struct Login {
    itt: Tag,
    deadline: Instant,
    stage: LoginStage,
    round_trips: u32,
    offer_chap: bool,
    auth: AuthStep,
    chap: Option<InitiatorChap>,
    negotiation: Negotiation,
    received: TextAccumulator,
    /// Pieces of our text still to send (the previous piece went with C=1).
    unsent: VecDeque<Vec<u8>>,
    /// The T bit wanted on the last piece of our text.
    unsent_transit: bool,
    /// The T bit of the request last sent.
    sent_transit: bool,
    first_response_seen: bool,
}

impl Login {
    pub(crate) fn itt(&self) -> Tag {
        self.itt
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The stage we ask to move to from the current one.
    fn wanted_next_stage(&self) -> LoginStage {
        match self.stage {
            LoginStage::SecurityNegotiation => LoginStage::LoginOperationalNegotiation,
            _ => LoginStage::FullFeaturePhase,
        }
    }

    fn authenticated(&self) -> bool {
        match self.auth {
            AuthStep::AwaitMethod => !self.offer_chap,
            AuthStep::Chap => self.chap.as_ref().is_some_and(InitiatorChap::is_done),
            AuthStep::NoneAgreed => true,
        }
    }
}

impl Session {
    /// Queues the first Login Request (security stage).
    pub(super) fn start_login(&mut self, now: Instant) {
        let itt = self.allocate_tag();
        let kind = if self.config.is_discovery() {
            SessionKind::Discovery
        } else {
            SessionKind::Normal
        };
        let offer_chap = self.config.chap.is_some();
        let mut login = Login {
            itt,
            deadline: now + self.config.login_timeout,
            stage: LoginStage::SecurityNegotiation,
            round_trips: 0,
            offer_chap,
            auth: AuthStep::AwaitMethod,
            chap: None,
            negotiation: Negotiation::with_session_kind(
                Role::Initiator,
                self.config.offer.clone(),
                kind,
            ),
            received: TextAccumulator::new(MAX_LOGIN_TEXT),
            unsent: VecDeque::new(),
            unsent_transit: false,
            sent_transit: false,
            first_response_seen: false,
        };
        if let Some(chap) = &self.config.chap {
            if chap.mutual.is_some() && self.config.chap_challenge.is_empty() {
                // Mutual CHAP needs a challenge from the caller; without one the login
                // cannot be secure, so it does not start.
                self.fail(SessionError::Chap(ChapError::EmptyChallenge));
                return;
            }
        }
        let mut pairs = vec![(
            "InitiatorName".to_owned(),
            self.config.initiator_name.clone(),
        )];
        if let Some(alias) = &self.config.initiator_alias {
            pairs.push(("InitiatorAlias".to_owned(), alias.clone()));
        }
        let session_type = if self.config.is_discovery() {
            "Discovery"
        } else {
            "Normal"
        };
        pairs.push(("SessionType".to_owned(), session_type.to_owned()));
        if let Some(target) = &self.config.target_name {
            pairs.push(("TargetName".to_owned(), target.clone()));
        }
        let method = if offer_chap { "CHAP" } else { "None" };
        pairs.push(("AuthMethod".to_owned(), method.to_owned()));
        // With AuthMethod=None there is nothing more to say: ask to move on at once.
        self.send_login_text(&mut login, &pairs, !offer_chap);
        self.login = Some(login);
    }

    fn login_request(
        &self,
        login: &Login,
        transit: bool,
        continue_: bool,
        data: Vec<u8>,
    ) -> Transmit {
        let header = Header::LoginRequest(pdu::LoginRequest {
            transit,
            continue_,
            current_stage: login.stage,
            next_stage: login.wanted_next_stage(),
            version_max: 0,
            version_min: 0,
            isid: self.config.isid,
            tsih: self.config.tsih,
            initiator_task_tag: login.itt,
            cid: self.config.cid,
            cmd_sn: self.window.peek(),
            exp_stat_sn: 0,
        });
        let data = if data.is_empty() {
            TransmitData::None
        } else {
            TransmitData::Owned(data)
        };
        Transmit { header, data }
    }

    /// Sends `pairs`, cut into pieces of at most 8192 bytes (the target's
    /// MaxRecvDataSegmentLength during login) sent with C=1 but the last.
    fn send_login_text(&mut self, login: &mut Login, pairs: &[(String, String)], transit: bool) {
        tracing::debug!(
            stage = ?login.stage,
            transit,
            keys = %keys_for_log(pairs),
            "login request"
        );
        let mut text = Vec::new();
        encode_pairs(pairs, &mut text);
        login.unsent = split_text(&text, LOGIN_MAX_RECV_DATA_SEGMENT_LENGTH as usize)
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect();
        login.unsent_transit = transit;
        self.send_next_login_piece(login);
    }

    fn send_next_login_piece(&mut self, login: &mut Login) {
        let piece = login.unsent.pop_front().unwrap_or_default();
        let more = !login.unsent.is_empty();
        // T=1 is not allowed with C=1 (section 11.12.2).
        let transit = login.unsent_transit && !more;
        login.sent_transit = transit;
        let request = self.login_request(login, transit, more, piece);
        self.outbox.push_back(Outgoing::Pdu(request));
    }

    pub(super) fn handle_login_response(
        &mut self,
        _now: Instant,
        resp: pdu::LoginResponse,
        data: &[u8],
    ) -> Result<(), SessionError> {
        let Some(mut login) = self.login.take() else {
            return Err(self.unexpected(Opcode::LoginResponse));
        };
        if self.login_step(&mut login, resp, data)? {
            self.login = Some(login);
        }
        Ok(())
    }

    /// One Login Response. `Ok(true)` when the login goes on.
    fn login_step(
        &mut self,
        login: &mut Login,
        resp: pdu::LoginResponse,
        data: &[u8],
    ) -> Result<bool, SessionError> {
        login.round_trips += 1;
        if login.round_trips > MAX_LOGIN_ROUND_TRIPS {
            return Err(SessionError::LoginRoundTrips {
                max: MAX_LOGIN_ROUND_TRIPS,
            });
        }
        if resp.initiator_task_tag != login.itt {
            return Err(SessionError::UnknownTaskTag {
                opcode: Opcode::LoginResponse,
                tag: resp.initiator_task_tag,
            });
        }
        if resp.status_class != 0 {
            return self.login_refused(&resp, data).map(|()| false);
        }
        if resp.version_active != 0 {
            return Err(SessionError::UnsupportedVersion {
                active: resp.version_active,
            });
        }
        // The first response gives the initial StatSN (section 11.13.3).
        if login.first_response_seen {
            self.stat.acknowledge(resp.stat_sn);
        } else {
            self.stat.reset(resp.stat_sn);
            login.first_response_seen = true;
        }
        if resp.current_stage != login.stage {
            return Err(SessionError::LoginProtocol(
                "response is for a different stage (CSG)",
            ));
        }
        if resp.transit && resp.continue_ {
            return Err(SessionError::LoginProtocol("T and C bits both set"));
        }
        if resp.transit && !login.sent_transit {
            return Err(SessionError::LoginProtocol(
                "target set T=1 though we did not ask to move on",
            ));
        }
        let Some(text) = login.received.push(data, resp.continue_)? else {
            // More text follows: pull it with an empty request. The request keeps the T
            // bit we sent before, so the target may end the stage with its last piece.
            let request = self.login_request(login, login.sent_transit, false, Vec::new());
            self.outbox.push_back(Outgoing::Pdu(request));
            return Ok(true);
        };
        if !login.unsent.is_empty() {
            // The target acknowledged a piece of our continued text; it must say nothing yet.
            if !parse_pairs(&text, &TextLimits::default())?.is_empty() || resp.transit {
                return Err(SessionError::LoginProtocol(
                    "target answered before our continued text was complete",
                ));
            }
            self.send_next_login_piece(login);
            return Ok(true);
        }
        let limits = TextLimits {
            max_text_len: MAX_LOGIN_TEXT,
            ..TextLimits::default()
        };
        let mut pairs = parse_pairs(&text, &limits)?;
        tracing::debug!(
            stage = ?resp.current_stage,
            transit = resp.transit,
            next_stage = ?resp.next_stage,
            keys = %keys_for_log(&pairs),
            "login response"
        );
        self.take_target_declarations(&mut pairs)?;

        let (mut replies, transit) = match login.stage {
            LoginStage::SecurityNegotiation => self.security_step(login, &pairs)?,
            LoginStage::LoginOperationalNegotiation => {
                let operational: Vec<(String, String)> = pairs
                    .into_iter()
                    .filter(|(k, _)| is_operational_key(k))
                    .collect();
                (login.negotiation.handle_peer_pairs(&operational)?, true)
            }
            LoginStage::FullFeaturePhase => {
                return Err(SessionError::LoginProtocol(
                    "login continued past full feature phase",
                ))
            }
        };

        if !resp.transit {
            self.send_login_text(login, &replies, transit);
            return Ok(true);
        }
        // Both sides asked to move on.
        let next = resp.next_stage;
        if login.stage == LoginStage::SecurityNegotiation && !login.authenticated() {
            return Err(SessionError::AuthenticationIncomplete);
        }
        if (next as u8) <= (login.stage as u8) || (next as u8) > (login.wanted_next_stage() as u8) {
            return Err(SessionError::LoginProtocol(
                "target chose a next stage (NSG) we did not ask for",
            ));
        }
        match next {
            LoginStage::LoginOperationalNegotiation => {
                login.stage = next;
                self.state = SessionState::Login { stage: next };
                replies.extend(login.negotiation.initial_proposals());
                self.send_login_text(login, &replies, true);
                Ok(true)
            }
            LoginStage::FullFeaturePhase => {
                if !replies.is_empty() || !login.negotiation.is_complete() {
                    // The target moved on with keys unsettled; both sides apply the same
                    // result functions (section 6.2), and unanswered keys keep their
                    // defaults, so the login stands.
                    tracing::warn!(
                        unanswered = login.negotiation.pending_answers(),
                        replies = replies.len(),
                        "target ended operational negotiation with keys unsettled"
                    );
                }
                self.finish_login(login, &resp)?;
                Ok(false)
            }
            LoginStage::SecurityNegotiation => Err(SessionError::LoginProtocol(
                "target chose to go back to security",
            )),
        }
    }

    /// Security-stage keys: AuthMethod and CHAP. Returns our replies and whether we ask to
    /// move on.
    fn security_step(
        &mut self,
        login: &mut Login,
        pairs: &[(String, String)],
    ) -> Result<(Vec<(String, String)>, bool), SessionError> {
        let auth_method = pairs
            .iter()
            .find(|(k, _)| k == "AuthMethod")
            .map(|(_, v)| v.as_str());
        match login.auth {
            AuthStep::AwaitMethod => match auth_method {
                Some("CHAP") if login.offer_chap => {
                    let Some(config) = &self.config.chap else {
                        return Err(SessionError::UnexpectedAuthMethod("CHAP".into()));
                    };
                    let challenge = self.config.chap_challenge.clone();
                    let identifier = challenge.iter().fold(0u8, |acc, b| acc ^ b);
                    let chap = InitiatorChap::new(
                        config.user.clone(),
                        config.secret.clone(),
                        config.mutual.clone(),
                        challenge,
                        identifier,
                    );
                    let replies = chap.first_pairs();
                    login.chap = Some(chap);
                    login.auth = AuthStep::Chap;
                    Ok((replies, false))
                }
                Some("None") if !login.offer_chap => {
                    login.auth = AuthStep::NoneAgreed;
                    Ok((Vec::new(), true))
                }
                Some(other) => Err(SessionError::UnexpectedAuthMethod(
                    other.chars().take(64).collect(),
                )),
                // Not answered yet: keep asking as before.
                None => Ok((Vec::new(), !login.offer_chap)),
            },
            AuthStep::Chap => {
                let Some(chap) = login.chap.as_mut() else {
                    return Err(SessionError::AuthenticationIncomplete);
                };
                let replies = chap.handle_target_pairs(pairs)?;
                // Once our response is out, we are ready to move on; for mutual CHAP the
                // target's response comes with its T=1 and is verified above.
                Ok((replies, chap.is_done() || chap.is_mutual_pending()))
            }
            AuthStep::NoneAgreed => Ok((Vec::new(), true)),
        }
    }

    /// Keys the target declares about itself; taken out of the list.
    fn take_target_declarations(
        &mut self,
        pairs: &mut Vec<(String, String)>,
    ) -> Result<(), SessionError> {
        let mut bad_tag = false;
        pairs.retain(|(key, value)| match key.as_str() {
            "TargetAlias" => {
                self.target_info.alias = Some(value.clone());
                false
            }
            "TargetPortalGroupTag" => {
                match value.parse::<u16>() {
                    Ok(tag) => self.target_info.portal_group_tag = Some(tag),
                    Err(_) => bad_tag = true,
                }
                false
            }
            "TargetAddress" => false,
            _ => true,
        });
        if bad_tag {
            return Err(SessionError::LoginProtocol(
                "TargetPortalGroupTag is not a 16-bit number",
            ));
        }
        Ok(())
    }

    /// A non-zero status class: a redirection closes the session, anything else fails it.
    fn login_refused(
        &mut self,
        resp: &pdu::LoginResponse,
        data: &[u8],
    ) -> Result<(), SessionError> {
        let (class, detail) = (resp.status_class, resp.status_detail);
        tracing::info!(
            status = format_args!("{class:#04x}{detail:02x}"),
            meaning = login_status_name(class, detail),
            "login response: not accepted"
        );
        if class == 1 {
            let pairs = parse_pairs(data, &TextLimits::default())?;
            let Some((_, value)) = pairs.iter().find(|(k, _)| k == "TargetAddress") else {
                return Err(SessionError::LoginProtocol(
                    "redirection without a TargetAddress",
                ));
            };
            let address = TargetAddress::parse(value)?;
            self.state = SessionState::Closed;
            self.events.push_back(Event::Redirect {
                address,
                kind: RedirectKind::from_detail(detail),
            });
            return Ok(());
        }
        self.events.push_back(Event::LoginFailed {
            status_class: class,
            status_detail: detail,
            reason: format!(
                "{} ({class:#04x}{detail:02x})",
                login_status_name(class, detail)
            ),
        });
        Err(SessionError::LoginRejected { class, detail })
    }

    /// The response with T=1 and NSG=3: full feature phase begins.
    fn finish_login(
        &mut self,
        login: &Login,
        resp: &pdu::LoginResponse,
    ) -> Result<(), SessionError> {
        if resp.tsih == 0 {
            return Err(SessionError::LoginProtocol(
                "final Login Response has TSIH 0",
            ));
        }
        if self.config.tsih != 0 && resp.tsih != self.config.tsih {
            return Err(SessionError::LoginProtocol(
                "final Login Response changed the TSIH",
            ));
        }
        let params = login.negotiation.params();
        self.tsih = resp.tsih;
        self.window
            .reset_from_login(resp.exp_cmd_sn, resp.max_cmd_sn);
        self.digests = pdu::Digests {
            header: params.header_digest,
            data: params.data_digest,
        };
        tracing::info!(tsih = resp.tsih, negotiated = ?params, "login complete");
        self.params = Some(params);
        self.state = SessionState::FullFeature;
        self.events.push_back(Event::LoginComplete);
        Ok(())
    }
}

/// Login keys as `Key=value` for a log line; CHAP challenges and responses are shown by
/// length only (not secret, but long and of no use to a reader).
fn keys_for_log(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(key, value)| match key.as_str() {
            "CHAP_C" | "CHAP_R" => format!("{key}=<{} chars>", value.len()),
            _ => format!("{key}={value}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}
