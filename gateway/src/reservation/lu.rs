//! [`LuReservations`]: the reservation state of one logical unit as the I/O path and the
//! reservation commands meet it (see the parent module).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use datapath::scsi::reservation::{
    opcode as rop, ParamError, PrInAction, PrOutAction, PrOutParams, RegisterMoveParams,
};

use super::access::{self, class};
use super::fence::{Fence, OwnedTicket, Ticket};
use super::persist::{PersistError, Store};
use super::state::{attention, Outcome, Refusal, ReservationState};
use super::{Cached, Nexus, NexusView};
use crate::backend::SharedWord;
use crate::disk::sense::{asc, key, Check};
use crate::disk::{LogicalUnit, ScsiResult};

/// SAM-5 5.3.1.
pub const RESERVATION_CONFLICT: u8 = 0x18;
/// How long PREEMPT AND ABORT waits for the victims' commands in flight.
const ABORT_DRAIN_LIMIT: Duration = Duration::from_secs(15);
/// TransportIDs accepted in one SPEC_I_PT list.
const MAX_SPECIFIED_PORTS: usize = 32;

/// The resets that touch reservations (SAM-5 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetKind {
    LogicalUnit,
    TargetWarm,
    TargetCold,
}

impl ResetKind {
    /// Its code in a [`SharedWord`] (the peer processes' resets).
    fn code(self) -> u8 {
        match self {
            ResetKind::LogicalUnit => 1,
            ResetKind::TargetWarm => 2,
            ResetKind::TargetCold => 3,
        }
    }

    fn from_code(code: u8) -> Option<ResetKind> {
        match code {
            1 => Some(ResetKind::LogicalUnit),
            2 => Some(ResetKind::TargetWarm),
            3 => Some(ResetKind::TargetCold),
            _ => None,
        }
    }

    fn attention(self) -> (u8, u8) {
        match self {
            ResetKind::LogicalUnit => attention::BUS_DEVICE_RESET,
            ResetKind::TargetWarm => attention::POWER_ON_OR_RESET,
            ResetKind::TargetCold => attention::POWER_ON_OCCURRED,
        }
    }
}

/// The reservations of one logical unit.
#[derive(Debug)]
pub struct LuReservations {
    fence: Fence,
    state: Mutex<ReservationState>,
    /// Serializes changes that wait (PREEMPT AND ABORT's drain) or write (APTPL).
    updates: Mutex<()>,
    store: Option<Store>,
    /// Resets made through other gateway processes exporting the same file (`shared`):
    /// checked with one atomic load per command.
    peer_resets: Option<SharedWord>,
}

impl Default for LuReservations {
    fn default() -> Self {
        LuReservations::new()
    }
}

/// What [`LuReservations::admit`] decided about one command.
#[derive(Debug)]
pub enum Admission<'a> {
    /// Run it; keep this until it is done.
    Go(Admitted<'a>),
    /// Answered here: RESERVATION CONFLICT, or a unit attention.
    Done(ScsiResult),
    /// A reservation command: run it with [`LuReservations::execute`].
    Reservation,
}

/// An admitted command (see [`Admission::Go`]).
#[derive(Debug)]
pub struct Admitted<'a> {
    fence: &'a Fence,
    ticket: Option<Ticket>,
}

impl Admitted<'_> {
    /// For a command that finishes later: the ticket, holding its unit.
    pub fn into_owned(mut self, unit: std::sync::Arc<LogicalUnit>) -> Option<OwnedTicket> {
        self.ticket
            .take()
            .map(|ticket| OwnedTicket { unit, ticket })
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.fence.leave(&ticket);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state is changed only by complete assignments; a panic elsewhere leaves it whole.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn conflict() -> ScsiResult {
    ScsiResult {
        status: RESERVATION_CONFLICT,
        sense: Vec::new(),
        data_in: Vec::new(),
    }
}

fn refused(refusal: Refusal) -> ScsiResult {
    match refusal {
        Refusal::Conflict => conflict(),
        Refusal::Check(check) => ScsiResult::check_condition(&check),
    }
}

impl LuReservations {
    /// Reservations kept in memory only: APTPL is refused.
    pub fn new() -> LuReservations {
        LuReservations {
            fence: Fence::new(),
            state: Mutex::new(ReservationState::new(false)),
            updates: Mutex::new(()),
            store: None,
            peer_resets: None,
        }
    }

    /// Reservations whose APTPL state lives at `path`, loaded from it when it exists.
    pub fn persistent(path: PathBuf) -> Result<LuReservations, PersistError> {
        let store = Store::new(path);
        let mut state = ReservationState::new(true);
        if let Some(saved) = store.load()? {
            tracing::info!(
                path = %store.path().display(),
                registrations = saved.registrations.len(),
                reserved = saved.reservation.is_some(),
                "persistent reservations restored (APTPL)"
            );
            state.restore(&saved);
        }
        Ok(LuReservations {
            fence: Fence::new(),
            state: Mutex::new(state),
            updates: Mutex::new(()),
            store: Some(store),
            peer_resets: None,
        })
    }

    /// Shares resets with the other processes that map `word` (see
    /// [`crate::backend::SharedWord`]): a reset here is announced there, and one
    /// announced there establishes its unit attention here at the next command.
    pub fn with_peer_resets(mut self, word: SharedWord) -> LuReservations {
        self.peer_resets = Some(word);
        self
    }

    /// A reset another process announced, applied here once.
    fn take_peer_reset(&self) {
        let Some(word) = &self.peer_resets else {
            return;
        };
        if let Some(kind) = word.take_change().and_then(ResetKind::from_code) {
            tracing::info!(
                ?kind,
                word = word.path(),
                "reset made through another gateway"
            );
            self.reset_here(kind);
        }
    }

    /// The admission epoch: it advances with every change a connection's cached view
    /// of this unit must notice (a lost nexus, a reset, a reservation change).
    pub fn epoch(&self) -> u64 {
        self.fence.epoch()
    }

    pub(super) fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Whether a reservation command may block (it writes the APTPL file or waits for a
    /// drain): then it belongs on a thread that may wait, not on an event loop.
    pub fn may_block(&self, cdb: &[u8]) -> bool {
        cdb.first() == Some(&rop::PERSISTENT_RESERVE_OUT)
            && (self.store.is_some()
                || cdb
                    .get(1)
                    .is_some_and(|sa| sa & 0x1f == PrOutAction::PreemptAndAbort as u8))
    }

    /// A copy of the state, for reports and tests.
    pub fn snapshot(&self) -> ReservationState {
        lock(&self.state).clone()
    }

    /// The check every command makes: one epoch load and one mask test while nothing
    /// changed since this connection last looked.
    pub fn admit(&self, view: &mut NexusView, unit_key: usize, cdb: &[u8]) -> Admission<'_> {
        let Some(&opcode) = cdb.first() else {
            return Admission::Go(Admitted {
                fence: &self.fence,
                ticket: Some(self.fence.enter()),
            });
        };
        self.take_peer_reset();
        let needed = access::class_of(opcode);
        loop {
            let ticket = self.fence.enter();
            let cached = match view.cached.get(&unit_key) {
                Some(c) if c.epoch == ticket.epoch => *c,
                _ => {
                    self.fence.leave(&ticket);
                    let mut state = lock(&self.state);
                    // A unit that came after the nexus logged in (a LUN attached or a
                    // volume bound live) learns of it at its first command, so its resets
                    // reach it too. Bound volumes learn of every nexus this way (a login
                    // does not walk them); the caller remembers the unit for the loss.
                    if state.join_if_absent(&view.nexus) {
                        view.joined_by_last_admit = true;
                    }
                    let fresh = Cached {
                        epoch: self.fence.epoch(),
                        mask: state.access(&view.nexus),
                        attention: state.attention_pending(&view.nexus),
                    };
                    drop(state);
                    view.cached.insert(unit_key, fresh);
                    continue;
                }
            };
            if cached.attention && access::reports_attention(opcode) {
                self.fence.leave(&ticket);
                let mut state = lock(&self.state);
                let check = state.take_attention(&view.nexus);
                let pending = state.attention_pending(&view.nexus);
                drop(state);
                if let Some(c) = view.cached.get_mut(&unit_key) {
                    c.attention = pending;
                }
                let Some(check) = check else { continue };
                return Admission::Done(if opcode == 0x03 {
                    // REQUEST SENSE reports the attention as its parameter data.
                    let allocation = usize::from(cdb.get(4).copied().unwrap_or(0));
                    let mut data = check.to_fixed_sense();
                    data.truncate(allocation);
                    ScsiResult::good(data)
                } else {
                    ScsiResult::check_condition(&check)
                });
            }
            if needed == class::RESERVATION {
                self.fence.leave(&ticket);
                return Admission::Reservation;
            }
            if needed & !cached.mask != 0 {
                self.fence.leave(&ticket);
                return Admission::Done(conflict());
            }
            return Admission::Go(Admitted {
                fence: &self.fence,
                ticket: Some(ticket),
            });
        }
    }

    /// A nexus logged in to the unit's target.
    pub fn nexus_joined(&self, nexus: &Nexus) {
        lock(&self.state).nexus_joined(nexus);
    }

    /// A nexus is gone: its SCSI-2 reservation with it.
    pub fn nexus_lost(&self, nexus: &Nexus) {
        let mut state = lock(&self.state);
        if state.nexus_lost(nexus) {
            tracing::info!(%nexus, "SCSI-2 reservation released: I_T nexus lost");
        }
        self.fence.advance();
    }

    /// A reset: SCSI-2 reservations released, attentions to every nexus present.
    pub fn reset(&self, kind: ResetKind) {
        self.reset_here(kind);
        if let Some(word) = &self.peer_resets {
            word.announce(kind.code());
        }
    }

    fn reset_here(&self, kind: ResetKind) {
        let mut state = lock(&self.state);
        state.reset(kind.attention());
        self.fence.advance();
    }

    /// A unit attention for every nexus present (ASYMMETRIC ACCESS STATE CHANGED when a
    /// port group's ALUA state changes), reservations untouched.
    pub fn announce(&self, asc: (u8, u8)) {
        let mut state = lock(&self.state);
        state.announce(asc);
        self.fence.advance();
    }

    /// Runs RESERVE/RELEASE(6)/(10) or PERSISTENT RESERVE IN/OUT for `nexus`.
    pub fn execute(&self, nexus: &Nexus, cdb: &[u8], data_out: &[u8]) -> ScsiResult {
        match self.run(nexus, cdb, data_out) {
            Ok(result) => result,
            Err(refusal) => refused(refusal),
        }
    }

    fn run(&self, nexus: &Nexus, cdb: &[u8], data_out: &[u8]) -> Result<ScsiResult, Refusal> {
        let opcode = cdb.first().copied().unwrap_or(0);
        let length = match opcode {
            rop::RESERVE_6 | rop::RELEASE_6 => 6,
            _ => 10,
        };
        if cdb.len() < length {
            return Err(Refusal::Check(Check::invalid_cdb_field(0, None)));
        }
        match opcode {
            rop::RESERVE_6 | rop::RELEASE_6 | rop::RESERVE_10 | rop::RELEASE_10 => {
                // Third-party and extent reservations are obsolete: every field but the
                // opcode and CONTROL must be zero.
                if let Some(at) = cdb[1..length - 1].iter().position(|&b| b != 0) {
                    return Err(Refusal::Check(Check::invalid_cdb_field(
                        at as u16 + 1,
                        None,
                    )));
                }
                let mut state = lock(&self.state);
                let changed = if matches!(opcode, rop::RESERVE_6 | rop::RESERVE_10) {
                    state.reserve6(nexus)?
                } else {
                    state.release6(nexus)?
                };
                if changed {
                    self.fence.advance();
                }
                Ok(ScsiResult::good(Vec::new()))
            }
            rop::PERSISTENT_RESERVE_IN => {
                let action = PrInAction::from_code(cdb[1] & 0x1f)
                    .ok_or(Refusal::Check(Check::invalid_cdb_field(1, Some(4))))?;
                if cdb[1] & 0xe0 != 0 {
                    return Err(Refusal::Check(Check::invalid_cdb_field(1, Some(7))));
                }
                let allocation = usize::from(u16::from_be_bytes([cdb[7], cdb[8]]));
                let state = lock(&self.state);
                if state.scsi2_holder().is_some_and(|h| h != nexus) {
                    return Err(Refusal::Conflict);
                }
                let mut data = state.pr_in(action);
                data.truncate(allocation);
                Ok(ScsiResult::good(data))
            }
            rop::PERSISTENT_RESERVE_OUT => self.pr_out(nexus, cdb, data_out),
            _ => Err(Refusal::Check(Check::invalid_opcode())),
        }
    }

    fn pr_out(&self, nexus: &Nexus, cdb: &[u8], data_out: &[u8]) -> Result<ScsiResult, Refusal> {
        let action = PrOutAction::from_code(cdb[1] & 0x1f)
            .ok_or(Refusal::Check(Check::invalid_cdb_field(1, Some(4))))?;
        if cdb[1] & 0xe0 != 0 {
            return Err(Refusal::Check(Check::invalid_cdb_field(1, Some(7))));
        }
        let scope = cdb[2] >> 4;
        let type_code = cdb[2] & 0x0f;
        let list_length = u32::from_be_bytes([cdb[5], cdb[6], cdb[7], cdb[8]]) as usize;
        let list = data_out.get(..list_length).unwrap_or(data_out);
        let length_error = || {
            Refusal::Check(Check::new(
                key::ILLEGAL_REQUEST,
                asc::PARAMETER_LIST_LENGTH_ERROR,
            ))
        };
        let param_error = |e: ParamError| match e {
            ParamError::Length(_) => length_error(),
            ParamError::Field(at) => Refusal::Check(Check::invalid_parameter(at)),
        };
        if list.len() != list_length {
            return Err(length_error());
        }
        let updates = lock(&self.updates);
        let mut state = lock(&self.state);
        let mut next = state.clone();
        let outcome: Outcome = if action == PrOutAction::RegisterAndMove {
            let params = RegisterMoveParams::parse(list).map_err(param_error)?;
            next.register_and_move(nexus, scope, type_code, &params)?
        } else {
            let params = PrOutParams::parse(list, MAX_SPECIFIED_PORTS).map_err(param_error)?;
            next.pr_out(nexus, action, scope, type_code, &params)?
        };
        if outcome.persist {
            if let Some(store) = &self.store {
                let saved = next.aptpl().then(|| next.persistent());
                if let Err(error) = store.save(saved.as_ref()) {
                    // Nothing was applied: the initiator learns the change did not happen.
                    tracing::error!(%error, "APTPL state not written; PERSISTENT RESERVE OUT refused");
                    return Err(Refusal::Check(Check::new(
                        key::MEDIUM_ERROR,
                        asc::WRITE_ERROR,
                    )));
                }
            }
        }
        *state = next;
        let old = if outcome.changed {
            Some(self.fence.advance())
        } else {
            None
        };
        drop(state);
        // Not held while draining: an event loop's inline PR OUT must not wait behind a
        // drain that waits for that loop's own file I/O.
        drop(updates);
        if let (Some(old), false) = (old, outcome.aborted.is_empty()) {
            // PREEMPT AND ABORT: the commands admitted before the change (the victims'
            // among them) end before GOOD; those that come after meet the new state.
            if !self.fence.drain(old, ABORT_DRAIN_LIMIT) {
                tracing::warn!(
                    victims = outcome.aborted.len(),
                    "PREEMPT AND ABORT: commands admitted before it still running after {ABORT_DRAIN_LIMIT:?}"
                );
            }
        }
        tracing::info!(%nexus, action = action.name(), generation = lock(&self.state).generation(), "persistent reservation changed");
        Ok(ScsiResult::good(Vec::new()))
    }
}
