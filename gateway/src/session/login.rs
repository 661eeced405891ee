//! The login responder: RFC 7143 sections 6 (stages, T and C bits), 11.12 and 11.13 (Login
//! Request and Response), 12.1.3 (CHAP, RFC 1994 MD5 with `CHAP_A=5`) and 13 (operational
//! keys, through `datapath::text::Negotiation` in the target role).
//!
//! Security stage: the initiator lists AuthMethod; we pick `CHAP` when the target requires
//! it, else `None`. With CHAP: `CHAP_A` -> we answer `CHAP_A=5`, `CHAP_I`, `CHAP_C` (our
//! challenge from the caller's random bytes) -> the initiator's `CHAP_N`/`CHAP_R` are
//! verified; if it also sent `CHAP_I`/`CHAP_C` (mutual CHAP) we answer with our
//! `CHAP_N`/`CHAP_R`. Operational stage: the initiator's keys are answered by the rules;
//! ours are proposed in our first operational response. The final response (T=1, NSG=3)
//! carries the TSIH; the first response of a normal session carries TargetPortalGroupTag.
//!
//! Authenticate, then authorise: the ACL (`allowed_initiators`) is checked only once CHAP
//! has passed (or when the target needs none), so without the secret nobody learns which
//! initiator names are allowed. An initiator outside the ACL is answered "not found"
//! (0x0203), as for a target that does not exist: SendTargets hides the target from it,
//! and a distinct 0x0202 would show it exists. Its TargetAlias, too, is sent only after
//! the ACL passed.

use std::collections::VecDeque;
use std::time::Instant;

use datapath::auth::chap::{chap_response, decode_binary, encode_binary, verify_response};
use datapath::pdu::{self, Digests, Header, Isid, LoginStage, Tag};
use datapath::text::{
    encode_pairs, is_operational_key, Negotiation, Role, SessionKind, TextAccumulator,
};

use super::{
    initiator_allowed, login_status, parse_login_text, text_pieces, ChapCredentials, SessionType,
    TargetError, TargetEvent, TargetSession, TargetState, Transmit, TransmitData,
    LOGIN_MAX_RECV_DATA_SEGMENT_LENGTH, MAX_TEXT_LEN,
};

/// Login round trips allowed before the login is refused: a normal CHAP login takes 4.
const MAX_LOGIN_ROUND_TRIPS: u32 = 32;

/// Keys of the login that are not operational and that this module handles itself.
const SESSION_KEYS: &[&str] = &[
    "InitiatorName",
    "InitiatorAlias",
    "TargetName",
    "SessionType",
    "AuthMethod",
    "CHAP_A",
    "CHAP_I",
    "CHAP_C",
    "CHAP_N",
    "CHAP_R",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Auth {
    /// AuthMethod not settled yet.
    Start,
    /// CHAP chosen; waiting for CHAP_A.
    AwaitAlgorithm,
    /// Challenge sent; waiting for CHAP_N and CHAP_R.
    AwaitResponse { id: u8, challenge: Vec<u8> },
    /// Authenticated (or no authentication required).
    Done,
}

#[derive(Debug)]
pub(super) struct LoginState {
    pub(super) deadline: Instant,
    first_seen: bool,
    isid: Isid,
    itt: Tag,
    stage: LoginStage,
    cmd_sn: u32,
    auth: Auth,
    negotiation: Option<Negotiation>,
    proposed: bool,
    text_in: TextAccumulator,
    /// Pieces of our response not sent yet (a response longer than one PDU).
    unsent: VecDeque<Vec<u8>>,
    unsent_transit: Option<LoginStage>,
    portal_group_sent: bool,
    /// Authenticated and found in the target's ACL (always true for discovery).
    authorised: bool,
    round_trips: u32,
}

impl LoginState {
    pub(super) fn new(deadline: Instant) -> LoginState {
        LoginState {
            deadline,
            first_seen: false,
            isid: [0; 6],
            itt: 0,
            stage: LoginStage::SecurityNegotiation,
            cmd_sn: 0,
            auth: Auth::Start,
            negotiation: None,
            proposed: false,
            text_in: TextAccumulator::new(MAX_TEXT_LEN),
            unsent: VecDeque::new(),
            unsent_transit: None,
            portal_group_sent: false,
            authorised: false,
            round_trips: 0,
        }
    }
}

/// A login refusal: status and a reason for the log.
struct Refusal {
    status: (u8, u8),
    reason: String,
    /// Text the response carries (a redirect's TargetAddress).
    text: Vec<u8>,
}

fn refuse(status: (u8, u8), reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        reason: reason.into(),
        text: Vec::new(),
    }
}

impl From<TargetError> for Refusal {
    fn from(error: TargetError) -> Refusal {
        refuse(login_status::INITIATOR_ERROR, error.to_string())
    }
}

fn find<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

impl TargetSession {
    pub(super) fn handle_login_request(
        &mut self,
        now: Instant,
        req: pdu::LoginRequest,
        data: &[u8],
    ) -> Result<(), TargetError> {
        let Some(mut login) = self.login.take() else {
            return Err(self.unexpected(pdu::Opcode::LoginRequest));
        };
        match self.login_step(now, &mut login, &req, data) {
            Ok(()) => {
                if self.state == TargetState::Login {
                    self.login = Some(login);
                }
                Ok(())
            }
            Err(refusal) => {
                let (class, detail) = refusal.status;
                if class == login_status::TARGET_MOVED_TEMPORARILY.0 {
                    tracing::debug!(
                        initiator = %self.initiator_name,
                        status = format_args!("{class:#04x}{detail:02x}"),
                        reason = %refusal.reason,
                        "login redirected"
                    );
                } else {
                    tracing::warn!(
                        initiator = %self.initiator_name,
                        status = format_args!("{class:#04x}{detail:02x}"),
                        reason = %refusal.reason,
                        "login refused"
                    );
                }
                self.queue_login_response(&login, &req, None, refusal.text, refusal.status);
                self.state = TargetState::Closed;
                Err(TargetError::LoginRefused {
                    class,
                    detail,
                    reason: refusal.reason,
                })
            }
        }
    }

    fn login_step(
        &mut self,
        _now: Instant,
        login: &mut LoginState,
        req: &pdu::LoginRequest,
        data: &[u8],
    ) -> Result<(), Refusal> {
        login.round_trips += 1;
        if login.round_trips > MAX_LOGIN_ROUND_TRIPS {
            return Err(refuse(
                login_status::INITIATOR_ERROR,
                format!("more than {MAX_LOGIN_ROUND_TRIPS} login round trips"),
            ));
        }
        if !login.first_seen {
            login.first_seen = true;
            login.isid = req.isid;
            login.itt = req.initiator_task_tag;
            login.cmd_sn = req.cmd_sn;
            self.exp_cmd_sn = req.cmd_sn;
            self.max_cmd_sn = req.cmd_sn;
            if req.version_min > 0 {
                return Err(refuse(
                    login_status::UNSUPPORTED_VERSION,
                    format!("VersionMin {} (we speak version 0)", req.version_min),
                ));
            }
            if req.tsih != 0 {
                // Adding a connection to a session (MaxConnections=1 here) or reinstating
                // by TSIH: no such session on this connection's target.
                return Err(refuse(
                    login_status::SESSION_DOES_NOT_EXIST,
                    format!("TSIH {:#06x} names no session we can join", req.tsih),
                ));
            }
        } else if req.isid != login.isid {
            return Err(refuse(
                login_status::INITIATOR_ERROR,
                "ISID changed during login",
            ));
        }
        if req.transit && req.continue_ {
            return Err(refuse(login_status::INITIATOR_ERROR, "T and C both set"));
        }
        if (req.current_stage as u8) < (login.stage as u8)
            || req.current_stage == LoginStage::FullFeaturePhase
        {
            return Err(refuse(
                login_status::INITIATOR_ERROR,
                format!("login stage {:?} out of order", req.current_stage),
            ));
        }
        if req.transit && (req.next_stage as u8) <= (req.current_stage as u8) {
            return Err(refuse(
                login_status::INITIATOR_ERROR,
                format!("NSG {:?} does not move forward", req.next_stage),
            ));
        }
        // The rest of a long response of ours.
        if !login.unsent.is_empty() {
            if !data.is_empty() {
                return Err(refuse(
                    login_status::INITIATOR_ERROR,
                    "initiator sent text while our response was continuing",
                ));
            }
            self.send_response_piece(login, req);
            return Ok(());
        }
        let text = login
            .text_in
            .push(data, req.continue_)
            .map_err(TargetError::from)?;
        let Some(text) = text else {
            // More initiator text follows: an empty response pulls it (section 6.2).
            self.queue_login_response(login, req, None, Vec::new(), (0, 0));
            return Ok(());
        };
        let pairs = parse_login_text(&text)?;
        if req.current_stage != login.stage {
            // The initiator moved on to the operational stage without a security stage.
            login.stage = req.current_stage;
        }
        self.take_session_keys(login, &pairs)?;
        self.redirect_from_virtual_portal()?;

        let required_auth = self.required_auth();
        let mut replies: Vec<(String, String)> = Vec::new();
        if !login.portal_group_sent && self.session_type == SessionType::Normal {
            // Section 13.9: the first Login Response of a normal session.
            replies.push((
                "TargetPortalGroupTag".to_owned(),
                self.conn.portal_group_tag.to_string(),
            ));
            login.portal_group_sent = true;
        }
        let operational: Vec<(String, String)> = pairs
            .iter()
            .filter(|(k, _)| !SESSION_KEYS.contains(&k.as_str()))
            .cloned()
            .collect();

        match login.stage {
            LoginStage::SecurityNegotiation => {
                self.security_step(login, &pairs, required_auth.as_ref(), &mut replies)?;
            }
            _ => {
                if login.auth != Auth::Done {
                    if required_auth.is_some() {
                        return Err(refuse(
                            login_status::AUTHENTICATION_FAILURE,
                            "operational stage reached without the required CHAP",
                        ));
                    }
                    login.auth = Auth::Done;
                }
            }
        }
        if login.auth == Auth::Done && !login.authorised {
            self.authorise()?;
            login.authorised = true;
            if let Some(alias) = self.target().and_then(|t| t.alias.clone()) {
                replies.push(("TargetAlias".to_owned(), alias));
            }
        }
        // Operational keys are answered in either stage (common initiators send some with
        // the security keys); unknown keys are answered NotUnderstood.
        let kind = match self.session_type {
            SessionType::Normal => SessionKind::Normal,
            SessionType::Discovery => SessionKind::Discovery,
        };
        let offer = self.config.offer.clone();
        let negotiation = login
            .negotiation
            .get_or_insert_with(|| Negotiation::with_session_kind(Role::Target, offer, kind));
        if !operational.is_empty() {
            let answers = negotiation
                .handle_peer_pairs(&operational)
                .map_err(TargetError::from)?;
            replies.extend(answers);
        }
        let mut proposed_now = false;
        if login.stage == LoginStage::LoginOperationalNegotiation && !login.proposed {
            login.proposed = true;
            let proposals = negotiation.initial_proposals();
            proposed_now = proposals
                .iter()
                .any(|(k, _)| is_operational_key(k) && k != "MaxRecvDataSegmentLength");
            replies.extend(proposals);
        }

        // Whether we move on with the initiator.
        let transit =
            req.transit && login.auth == Auth::Done && !proposed_now && negotiation.is_complete();
        let next = transit.then_some(req.next_stage);
        if next == Some(LoginStage::FullFeaturePhase) {
            self.finish_login(login)?;
        }
        let mut out = Vec::new();
        encode_pairs(&replies, &mut out);
        login.unsent = text_pieces(&out, LOGIN_MAX_RECV_DATA_SEGMENT_LENGTH);
        login.unsent_transit = next;
        self.send_response_piece(login, req);
        if let Some(stage) = next {
            login.stage = stage;
        }
        Ok(())
    }

    /// InitiatorName, SessionType and TargetName: who logs in to what (section 13 and
    /// 11.12). Checked when first seen.
    fn take_session_keys(
        &mut self,
        login: &LoginState,
        pairs: &[(String, String)],
    ) -> Result<(), Refusal> {
        if let Some(name) = find(pairs, "InitiatorName") {
            if !self.initiator_name.is_empty() && self.initiator_name != name {
                return Err(refuse(
                    login_status::INITIATOR_ERROR,
                    "InitiatorName changed",
                ));
            }
            self.initiator_name = name.to_owned();
        }
        if self.initiator_name.is_empty() {
            return Err(refuse(login_status::MISSING_PARAMETER, "no InitiatorName"));
        }
        let first_text = self.target.is_none() && login.round_trips == 1;
        if first_text {
            self.session_type = match find(pairs, "SessionType") {
                None | Some("Normal") => SessionType::Normal,
                Some("Discovery") => SessionType::Discovery,
                Some(other) => {
                    return Err(refuse(
                        login_status::INITIATOR_ERROR,
                        format!("SessionType={}", other.chars().take(32).collect::<String>()),
                    ))
                }
            };
        }
        if self.session_type == SessionType::Normal && self.target.is_none() {
            let Some(name) = find(pairs, "TargetName") else {
                return Err(refuse(login_status::MISSING_PARAMETER, "no TargetName"));
            };
            let Some(index) = self.config.targets.iter().position(|t| t.name == name) else {
                return Err(refuse(
                    login_status::NOT_FOUND,
                    format!(
                        "no target named {}",
                        name.chars().take(224).collect::<String>()
                    ),
                ));
            };
            self.target = Some(index);
        }
        Ok(())
    }

    /// A normal login at the virtual portal goes to the real portal with the least load
    /// (section 11.13.5: status class 1 with TargetAddress, before or after security;
    /// here at the first request, so no CHAP round trip is wasted). Discovery sessions
    /// stay, and so does a login when every real portal drains.
    fn redirect_from_virtual_portal(&self) -> Result<(), Refusal> {
        if self.session_type != SessionType::Normal || !self.conn.via_virtual_portal {
            return Ok(());
        }
        let Some(plan) = self.config.redirect.as_deref() else {
            return Ok(());
        };
        let Some(addr) = plan.choose() else {
            return Ok(());
        };
        let address = super::text::target_address(&super::Portal {
            addr,
            group_tag: plan.group_tag,
        });
        let mut text = Vec::new();
        encode_pairs(&[("TargetAddress".to_owned(), address.clone())], &mut text);
        let status = if plan.permanent() {
            login_status::TARGET_MOVED_PERMANENTLY
        } else {
            login_status::TARGET_MOVED_TEMPORARILY
        };
        Err(Refusal {
            status,
            reason: format!("redirected to {address}"),
            text,
        })
    }

    /// The ACL check, after authentication (see the module docs): an initiator the
    /// target is hidden from is told the target does not exist.
    fn authorise(&self) -> Result<(), Refusal> {
        match self.target() {
            Some(target) if !initiator_allowed(target, &self.initiator_name) => Err(refuse(
                login_status::NOT_FOUND,
                format!(
                    "initiator {} not in the ACL of {} (answered as not found)",
                    self.initiator_name, target.name
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The credentials the initiator must prove, and ours for mutual CHAP.
    fn required_auth(&self) -> Option<(ChapCredentials, Option<ChapCredentials>)> {
        match self.session_type {
            SessionType::Discovery => self.config.discovery_chap.clone().map(|c| (c, None)),
            SessionType::Normal => {
                let target = self.target()?;
                target.chap.clone().map(|c| (c, target.mutual_chap.clone()))
            }
        }
    }

    fn security_step(
        &mut self,
        login: &mut LoginState,
        pairs: &[(String, String)],
        required: Option<&(ChapCredentials, Option<ChapCredentials>)>,
        replies: &mut Vec<(String, String)>,
    ) -> Result<(), Refusal> {
        match login.auth.clone() {
            Auth::Start => {
                let offered: Vec<&str> = find(pairs, "AuthMethod")
                    .map(|v| v.split(',').take(16).collect())
                    .unwrap_or_default();
                match required {
                    Some(_) => {
                        if offered.contains(&"CHAP") {
                            replies.push(("AuthMethod".to_owned(), "CHAP".to_owned()));
                            login.auth = Auth::AwaitAlgorithm;
                        } else {
                            return Err(refuse(
                                login_status::AUTHENTICATION_FAILURE,
                                "CHAP required but not offered",
                            ));
                        }
                    }
                    None => {
                        if offered.is_empty() || offered.contains(&"None") {
                            if !offered.is_empty() {
                                replies.push(("AuthMethod".to_owned(), "None".to_owned()));
                            }
                            login.auth = Auth::Done;
                        } else {
                            replies.push(("AuthMethod".to_owned(), "Reject".to_owned()));
                            return Err(refuse(
                                login_status::AUTHENTICATION_FAILURE,
                                "no authentication method we support (None) offered",
                            ));
                        }
                    }
                }
            }
            Auth::AwaitAlgorithm => {
                let Some(list) = find(pairs, "CHAP_A") else {
                    return Err(refuse(login_status::AUTHENTICATION_FAILURE, "no CHAP_A"));
                };
                if !list.split(',').take(16).any(|a| a == "5") {
                    return Err(refuse(
                        login_status::AUTHENTICATION_FAILURE,
                        "CHAP_A without 5 (MD5)",
                    ));
                }
                let challenge = self.conn.chap_challenge.clone();
                if challenge.len() < 16 {
                    return Err(refuse((0x03, 0x00), "no random bytes for a CHAP challenge"));
                }
                let id = challenge
                    .iter()
                    .fold(0x5au8, |acc, b| acc.rotate_left(1) ^ b);
                replies.push(("CHAP_A".to_owned(), "5".to_owned()));
                replies.push(("CHAP_I".to_owned(), id.to_string()));
                replies.push(("CHAP_C".to_owned(), encode_binary(&challenge)));
                login.auth = Auth::AwaitResponse { id, challenge };
            }
            Auth::AwaitResponse { id, challenge } => {
                let Some((creds, mutual)) = required else {
                    return Err(refuse(
                        login_status::AUTHENTICATION_FAILURE,
                        "CHAP state lost",
                    ));
                };
                let (Some(name), Some(response)) = (find(pairs, "CHAP_N"), find(pairs, "CHAP_R"))
                else {
                    return Err(refuse(
                        login_status::AUTHENTICATION_FAILURE,
                        "CHAP_N or CHAP_R missing",
                    ));
                };
                let response = decode_binary(response).map_err(TargetError::from)?;
                if name != creds.user || !verify_response(id, &creds.secret, &challenge, &response)
                {
                    return Err(refuse(
                        login_status::AUTHENTICATION_FAILURE,
                        format!(
                            "CHAP response of {} does not verify",
                            name.chars().take(64).collect::<String>()
                        ),
                    ));
                }
                match (find(pairs, "CHAP_I"), find(pairs, "CHAP_C")) {
                    (Some(their_id), Some(their_challenge)) => {
                        let Some(ours) = mutual else {
                            return Err(refuse(
                                login_status::AUTHENTICATION_FAILURE,
                                "initiator asks for mutual CHAP; none configured",
                            ));
                        };
                        let their_id: u8 = their_id.parse().map_err(|_| {
                            refuse(login_status::AUTHENTICATION_FAILURE, "bad CHAP_I")
                        })?;
                        let their_challenge =
                            decode_binary(their_challenge).map_err(TargetError::from)?;
                        if their_challenge.is_empty() || their_challenge == challenge {
                            // Section 12.1.3: a reflected challenge would make us answer
                            // our own question.
                            return Err(refuse(
                                login_status::AUTHENTICATION_FAILURE,
                                "mutual CHAP challenge empty or reflected",
                            ));
                        }
                        let answer = chap_response(their_id, &ours.secret, &their_challenge);
                        replies.push(("CHAP_N".to_owned(), ours.user.clone()));
                        replies.push(("CHAP_R".to_owned(), encode_binary(&answer)));
                    }
                    (None, None) => {}
                    _ => {
                        return Err(refuse(
                            login_status::AUTHENTICATION_FAILURE,
                            "CHAP_I without CHAP_C or the reverse",
                        ))
                    }
                }
                tracing::info!(initiator = %self.initiator_name, user = %creds.user, "CHAP authenticated");
                login.auth = Auth::Done;
            }
            Auth::Done => {}
        }
        Ok(())
    }

    /// Settles the session before the final Login Response is queued.
    fn finish_login(&mut self, login: &mut LoginState) -> Result<(), Refusal> {
        let params = login
            .negotiation
            .as_ref()
            .map(Negotiation::params)
            .unwrap_or_default();
        if params.error_recovery_level != 0 {
            return Err(refuse(
                login_status::INITIATOR_ERROR,
                "ErrorRecoveryLevel above 0",
            ));
        }
        self.params = params;
        self.isid = login.isid;
        self.events.push_back(TargetEvent::LoggedIn {
            initiator_name: self.initiator_name.clone(),
            isid: login.isid,
            target_name: self.target().map(|t| t.name.clone()),
            tsih: self.conn.tsih,
        });
        tracing::info!(
            initiator = %self.initiator_name,
            target = self.target().map_or("(discovery)", |t| t.name.as_str()),
            tsih = self.conn.tsih,
            "login complete"
        );
        Ok(())
    }

    fn send_response_piece(&mut self, login: &mut LoginState, req: &pdu::LoginRequest) {
        let piece = login.unsent.pop_front().unwrap_or_default();
        let more = !login.unsent.is_empty();
        let next = if more { None } else { login.unsent_transit };
        self.queue_login_response(login, req, next, piece, (0, 0));
        if next == Some(LoginStage::FullFeaturePhase) {
            // Full feature phase: the window opens and digests start after this response.
            self.state = TargetState::FullFeature;
            self.digests = Digests {
                header: self.params.header_digest,
                data: self.params.data_digest,
            };
            self.update_window();
        }
    }

    fn queue_login_response(
        &mut self,
        login: &LoginState,
        req: &pdu::LoginRequest,
        next: Option<LoginStage>,
        data: Vec<u8>,
        status: (u8, u8),
    ) {
        let stat_sn = self.take_stat_sn();
        let final_response = next == Some(LoginStage::FullFeaturePhase) && status.0 == 0;
        let max_cmd_sn = if final_response {
            login
                .cmd_sn
                .wrapping_add(self.config.cmd_window.max(1))
                .wrapping_sub(1)
        } else {
            login.cmd_sn
        };
        let header = Header::LoginResponse(pdu::LoginResponse {
            transit: next.is_some(),
            continue_: !login.unsent.is_empty() && status.0 == 0,
            current_stage: req.current_stage,
            next_stage: next.unwrap_or(req.current_stage),
            version_max: 0,
            version_active: 0,
            isid: req.isid,
            tsih: if final_response { self.conn.tsih } else { 0 },
            initiator_task_tag: req.initiator_task_tag,
            stat_sn,
            exp_cmd_sn: login.cmd_sn,
            max_cmd_sn,
            status_class: status.0,
            status_detail: status.1,
        });
        let data = if data.is_empty() {
            TransmitData::None
        } else {
            TransmitData::Owned(data)
        };
        // Login PDUs never carry digests (section 13.1: digests start after login).
        self.enqueue(super::Outgoing::Pdu(Transmit {
            header,
            data,
            digests: Digests::default(),
        }));
    }
}
