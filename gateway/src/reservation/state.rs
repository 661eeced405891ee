//! The reservation state of one logical unit and the rules that change it, with no I/O and
//! no clock: SCSI-2 RESERVE/RELEASE (SPC-2 5.5.1, 7.21-7.24), persistent reservations (SPC-4
//! 5.12: registration 5.12.7, reservation 5.12.9, release 5.12.11.2, clear 5.12.11.3,
//! preempt 5.12.11.4, register and move 5.12.8; SPC-5 for REPLACE LOST RESERVATION), the
//! unit attentions they owe each I_T nexus (SPC-4 5.12.11, SAM-5 5.14), and what resets
//! and nexus loss do to them (SAM-5 6.3).
//!
//! Bounds: at most [`MAX_REGISTRATIONS`] registrations (INSUFFICIENT REGISTRATION RESOURCES
//! past them), [`MAX_PENDING_ATTENTIONS`] unit attentions per nexus (the oldest kept, the
//! newest dropped: SAM-5 lets a device server report only the highest-priority ones) and
//! [`MAX_NEXUSES`] nexuses with attentions pending.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use datapath::scsi::reservation::{
    Capabilities, FullStatus, FullStatusEntry, PrInAction, PrOutAction, PrOutParams, PrType,
    ReadKeys, ReadReservation, RegisterMoveParams, ReservationHeld, TransportId,
};

use super::Nexus;
use crate::disk::sense::Check;

pub const MAX_REGISTRATIONS: usize = 256;
pub const MAX_PENDING_ATTENTIONS: usize = 16;
pub const MAX_NEXUSES: usize = 4096;

/// Unit attention conditions (SPC-4 Annex D) with sense key UNIT ATTENTION.
pub mod attention {
    pub const POWER_ON_OR_RESET: (u8, u8) = (0x29, 0x00);
    pub const POWER_ON_OCCURRED: (u8, u8) = (0x29, 0x01);
    pub const BUS_DEVICE_RESET: (u8, u8) = (0x29, 0x03);
    pub const I_T_NEXUS_LOSS: (u8, u8) = (0x29, 0x07);
    pub const RESERVATIONS_PREEMPTED: (u8, u8) = (0x2a, 0x03);
    pub const RESERVATIONS_RELEASED: (u8, u8) = (0x2a, 0x04);
    pub const REGISTRATIONS_PREEMPTED: (u8, u8) = (0x2a, 0x05);
}

const UNIT_ATTENTION: u8 = 0x06;
const ILLEGAL_REQUEST: u8 = 0x05;
/// INVALID RELEASE OF PERSISTENT RESERVATION (SPC-4 5.12.11.2).
const INVALID_RELEASE: (u8, u8) = (0x26, 0x04);
/// INSUFFICIENT REGISTRATION RESOURCES (SPC-4 5.12.7).
const INSUFFICIENT_REGISTRATION_RESOURCES: (u8, u8) = (0x55, 0x04);

/// Why a reservation command did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// RESERVATION CONFLICT status.
    Conflict,
    /// CHECK CONDITION with this sense.
    Check(Check),
}

impl Refusal {
    fn parameter(byte: u16) -> Refusal {
        Refusal::Check(Check::invalid_parameter(byte))
    }

    fn cdb(byte: u16, bit: Option<u8>) -> Refusal {
        Refusal::Check(Check::invalid_cdb_field(byte, bit))
    }
}

/// What a PERSISTENT RESERVE OUT changed, for the caller to act on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Something a nexus's access or pending attentions depend on changed.
    pub changed: bool,
    /// The nexuses whose commands PREEMPT AND ABORT aborts.
    pub aborted: Vec<Nexus>,
    /// The state is to be written (APTPL in force, or just switched off) before GOOD.
    pub persist: bool,
}

/// What one nexus may do: bits of [`super::access::Class`].
pub type AccessMask = u8;

/// One registration (SPC-4 5.12.7): an I_T nexus and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub nexus: Nexus,
    pub key: u64,
    /// Registered with ALL_TG_PT (one target port here, so only reported).
    pub all_tg_pt: bool,
}

/// A persistent reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub pr_type: PrType,
    /// The holder for the types with one holder; for all-registrants types every
    /// registrant holds it and this is the nexus that reserved.
    pub holder: Nexus,
}

/// The state (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReservationState {
    scsi2: Option<Nexus>,
    registrations: Vec<Registration>,
    reservation: Option<Reservation>,
    generation: u32,
    aptpl: bool,
    /// Whether APTPL can be honoured (the unit has somewhere to persist).
    persist_capable: bool,
    attentions: BTreeMap<Nexus, VecDeque<(u8, u8)>>,
    /// Nexuses logged in to the unit now (reset attentions go to them).
    present: BTreeMap<Nexus, u32>,
}

impl ReservationState {
    pub fn new(persist_capable: bool) -> ReservationState {
        ReservationState {
            persist_capable,
            ..Default::default()
        }
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    pub fn aptpl(&self) -> bool {
        self.aptpl
    }

    pub fn scsi2_holder(&self) -> Option<&Nexus> {
        self.scsi2.as_ref()
    }

    pub fn registrations(&self) -> &[Registration] {
        &self.registrations
    }

    pub fn reservation(&self) -> Option<&Reservation> {
        self.reservation.as_ref()
    }

    fn key_of(&self, nexus: &Nexus) -> Option<u64> {
        self.registrations
            .iter()
            .find(|r| &r.nexus == nexus)
            .map(|r| r.key)
    }

    fn is_holder(&self, nexus: &Nexus) -> bool {
        match &self.reservation {
            Some(r) if r.pr_type.all_registrants() => self.key_of(nexus).is_some(),
            Some(r) => &r.holder == nexus,
            None => false,
        }
    }

    /// What `nexus` may do now (bits of [`super::access::Class`]).
    pub fn access(&self, nexus: &Nexus) -> AccessMask {
        use super::access::class;
        if let Some(holder) = &self.scsi2 {
            return if holder == nexus { class::ALL } else { 0 };
        }
        let Some(reservation) = &self.reservation else {
            return class::ALL;
        };
        if self.is_holder(nexus)
            || (reservation.pr_type.registrants_have_access() && self.key_of(nexus).is_some())
        {
            return class::ALL;
        }
        if reservation.pr_type.exclusive_access() {
            class::PR_FREE
        } else {
            class::PR_FREE | class::READ
        }
    }

    pub fn attention_pending(&self, nexus: &Nexus) -> bool {
        self.attentions.get(nexus).is_some_and(|q| !q.is_empty())
    }

    /// Reports (and clears) the oldest unit attention of `nexus`.
    pub fn take_attention(&mut self, nexus: &Nexus) -> Option<Check> {
        let queue = self.attentions.get_mut(nexus)?;
        let asc = queue.pop_front();
        if queue.is_empty() {
            self.attentions.remove(nexus);
        }
        asc.map(|asc| Check::new(UNIT_ATTENTION, asc))
    }

    fn establish(&mut self, nexus: &Nexus, asc: (u8, u8)) {
        if !self.attentions.contains_key(nexus) && self.attentions.len() >= MAX_NEXUSES {
            return;
        }
        let queue = self.attentions.entry(nexus.clone()).or_default();
        if queue.len() < MAX_PENDING_ATTENTIONS && !queue.contains(&asc) {
            queue.push_back(asc);
        }
    }

    /// A nexus logged in to the unit's target.
    pub fn nexus_joined(&mut self, nexus: &Nexus) {
        *self.present.entry(nexus.clone()).or_default() += 1;
    }

    /// Whether `nexus` is present on the unit (resets announce themselves to it).
    pub fn is_present(&self, nexus: &Nexus) -> bool {
        self.present.contains_key(nexus)
    }

    /// A nexus that sends a command is present, even if the unit was added after its
    /// login or is a bound volume (then it never saw [`Self::nexus_joined`]). Returns
    /// whether it was absent (the caller then owes a [`Self::nexus_lost`] when it goes).
    pub fn join_if_absent(&mut self, nexus: &Nexus) -> bool {
        if self.present.contains_key(nexus) {
            return false;
        }
        self.present.insert(nexus.clone(), 1);
        true
    }

    /// A nexus is gone (logout, connection loss, reinstatement): its SCSI-2 reservation
    /// is released (SPC-2 5.5.1); registrations persist (SPC-4 5.12.7). Returns whether
    /// access changed.
    pub fn nexus_lost(&mut self, nexus: &Nexus) -> bool {
        if let Some(count) = self.present.get_mut(nexus) {
            *count -= 1;
            if *count == 0 {
                self.present.remove(nexus);
            }
        }
        self.attentions.remove(nexus);
        if self.scsi2.as_ref() == Some(nexus) {
            self.scsi2 = None;
            return true;
        }
        false
    }

    /// LOGICAL UNIT RESET, TARGET WARM RESET or TARGET COLD RESET (SAM-5 6.3.2, 7.7):
    /// SCSI-2 reservations are released, persistent ones kept, and every nexus present
    /// gets the reset's unit attention.
    pub fn reset(&mut self, asc: (u8, u8)) {
        self.scsi2 = None;
        self.announce(asc);
    }

    /// Establishes the unit attention `asc` for every nexus present.
    pub fn announce(&mut self, asc: (u8, u8)) {
        let present: Vec<Nexus> = self.present.keys().cloned().collect();
        for nexus in present {
            self.establish(&nexus, asc);
        }
    }

    /// RESERVE(6)/(10) for the whole unit (SPC-2 7.21): the holder may reserve again.
    pub fn reserve6(&mut self, nexus: &Nexus) -> Result<bool, Refusal> {
        if self.reservation.is_some() || !self.registrations.is_empty() {
            // SPC-4 5.12.3 (CRH = 0): with persistent reservation state, RESERVE conflicts.
            return Err(Refusal::Conflict);
        }
        match &self.scsi2 {
            Some(holder) if holder == nexus => Ok(false),
            Some(_) => Err(Refusal::Conflict),
            None => {
                self.scsi2 = Some(nexus.clone());
                Ok(true)
            }
        }
    }

    /// RELEASE(6)/(10): only the holder's RELEASE releases; anyone else's is GOOD and does
    /// nothing (SPC-2 7.23).
    pub fn release6(&mut self, nexus: &Nexus) -> Result<bool, Refusal> {
        if self.reservation.is_some() {
            return Err(Refusal::Conflict);
        }
        if self.scsi2.as_ref() == Some(nexus) {
            self.scsi2 = None;
            return Ok(true);
        }
        Ok(false)
    }

    /// PERSISTENT RESERVE IN for `nexus`.
    pub fn pr_in(&self, action: PrInAction) -> Vec<u8> {
        match action {
            PrInAction::ReadKeys => ReadKeys {
                generation: self.generation,
                keys: self.registrations.iter().map(|r| r.key).collect(),
                truncated: false,
            }
            .emit(),
            PrInAction::ReadReservation => ReadReservation {
                generation: self.generation,
                reservation: self.reservation.as_ref().map(|r| ReservationHeld {
                    key: if r.pr_type.all_registrants() {
                        0
                    } else {
                        self.key_of(&r.holder).unwrap_or(0)
                    },
                    pr_type: Some(r.pr_type),
                    type_code: r.pr_type as u8,
                }),
            }
            .emit(),
            PrInAction::ReportCapabilities => Capabilities {
                compatible_reservation_handling: false,
                specify_initiator_ports: true,
                all_target_ports: true,
                persist_through_power_loss_capable: self.persist_capable,
                type_mask_valid: true,
                // 001b: TEST UNIT READY is allowed under Exclusive Access types (the
                // commands of class PR_FREE in `access`).
                allow_commands: 1,
                persist_through_power_loss_active: self.aptpl,
                types: PrType::ALL.to_vec(),
            }
            .emit(),
            PrInAction::ReadFullStatus => FullStatus {
                generation: self.generation,
                entries: self
                    .registrations
                    .iter()
                    .map(|r| {
                        let holder = self.is_holder(&r.nexus);
                        FullStatusEntry {
                            key: r.key,
                            all_tg_pt: r.all_tg_pt,
                            holder,
                            type_code: self
                                .reservation
                                .as_ref()
                                .filter(|_| holder)
                                .map_or(0, |res| res.pr_type as u8),
                            relative_target_port: r.nexus.target_port,
                            transport_id: r.nexus.transport_id(),
                        }
                    })
                    .collect(),
                truncated: false,
            }
            .emit(),
        }
    }

    /// PERSISTENT RESERVE OUT with the basic parameter list (every service action but
    /// REGISTER AND MOVE). `type_code` is the CDB's TYPE, `scope` its SCOPE.
    pub fn pr_out(
        &mut self,
        nexus: &Nexus,
        action: PrOutAction,
        scope: u8,
        type_code: u8,
        params: &PrOutParams,
    ) -> Result<Outcome, Refusal> {
        if self.scsi2.as_ref().is_some_and(|h| h != nexus) {
            return Err(Refusal::Conflict);
        }
        // One kind of reservation at a time: while its SCSI-2 reservation stands, the
        // holder may register but not establish a persistent reservation beside it
        // (SPC-3 5.6.3 keeps the two apart; it releases with RELEASE first).
        if self.scsi2.is_some()
            && matches!(
                action,
                PrOutAction::Reserve | PrOutAction::ReplaceLostReservation
            )
        {
            return Err(Refusal::Conflict);
        }
        if params.aptpl && !self.persist_capable {
            return Err(Refusal::parameter(20));
        }
        let registered = self.key_of(nexus);
        let outcome = match action {
            PrOutAction::Register | PrOutAction::RegisterAndIgnoreExistingKey => {
                self.register(nexus, action, registered, params)?
            }
            PrOutAction::RegisterAndMove => return Err(Refusal::cdb(1, Some(4))),
            _ => {
                // Every other action needs the nexus registered with the key it sends.
                if registered != Some(params.key) {
                    return Err(Refusal::Conflict);
                }
                if params.spec_i_pt {
                    return Err(Refusal::parameter(20));
                }
                if matches!(
                    action,
                    PrOutAction::Reserve
                        | PrOutAction::Release
                        | PrOutAction::Preempt
                        | PrOutAction::PreemptAndAbort
                        | PrOutAction::ReplaceLostReservation
                ) {
                    if scope != 0 {
                        return Err(Refusal::cdb(2, Some(7)));
                    }
                    if action != PrOutAction::Preempt
                        && action != PrOutAction::PreemptAndAbort
                        && PrType::from_code(type_code).is_none()
                    {
                        return Err(Refusal::cdb(2, Some(3)));
                    }
                }
                match action {
                    PrOutAction::Reserve => self.reserve(nexus, type_code)?,
                    PrOutAction::Release => self.release(nexus, type_code)?,
                    PrOutAction::Clear => self.clear(nexus),
                    PrOutAction::Preempt | PrOutAction::PreemptAndAbort => {
                        self.preempt(nexus, type_code, params.service_action_key, action)?
                    }
                    _ => self.replace_lost(nexus, type_code)?,
                }
            }
        };
        Ok(self.with_aptpl(outcome, action, params.aptpl))
    }

    /// Every successful PR OUT that is not RESERVE, RELEASE or PREEMPT with the reservation
    /// only sets APTPL from its parameter list (SPC-4 5.12.5: the last valid APTPL wins);
    /// the state is written while APTPL is in force and once more when it goes off (to
    /// remove what was written).
    fn with_aptpl(&mut self, mut outcome: Outcome, action: PrOutAction, aptpl: bool) -> Outcome {
        let was = self.aptpl;
        if matches!(
            action,
            PrOutAction::Register
                | PrOutAction::RegisterAndIgnoreExistingKey
                | PrOutAction::RegisterAndMove
        ) {
            self.aptpl = aptpl;
        }
        if action == PrOutAction::Clear {
            self.aptpl = false;
        }
        outcome.persist =
            self.persist_capable && (self.aptpl || was) && (outcome.changed || was != self.aptpl);
        outcome
    }

    fn register(
        &mut self,
        nexus: &Nexus,
        action: PrOutAction,
        registered: Option<u64>,
        params: &PrOutParams,
    ) -> Result<Outcome, Refusal> {
        let ignore_key = action == PrOutAction::RegisterAndIgnoreExistingKey;
        match registered {
            None => {
                if !ignore_key && params.key != 0 {
                    return Err(Refusal::Conflict);
                }
                if ignore_key && params.spec_i_pt {
                    return Err(Refusal::parameter(20));
                }
                if params.service_action_key == 0 {
                    // Unregistered and asking to unregister: nothing to do (5.12.7).
                    return Ok(Outcome::default());
                }
                // SPEC_I_PT: the listed initiator ports too, all or none (6.16.3).
                let mut nexuses = vec![nexus.clone()];
                for id in &params.transport_ids {
                    let Some(isid) = id.isid else {
                        // A name without ISID names every port of that name; only ports
                        // (format 01b) are registered here.
                        return Err(Refusal::parameter(24));
                    };
                    let other = Nexus::new(&id.name, isid, nexus.target_port);
                    if self.key_of(&other).is_some() {
                        return Err(Refusal::parameter(24));
                    }
                    if !nexuses.contains(&other) {
                        nexuses.push(other);
                    }
                }
                if self.registrations.len() + nexuses.len() > MAX_REGISTRATIONS {
                    return Err(Refusal::Check(Check::new(
                        ILLEGAL_REQUEST,
                        INSUFFICIENT_REGISTRATION_RESOURCES,
                    )));
                }
                for registrant in nexuses {
                    self.registrations.push(Registration {
                        nexus: registrant,
                        key: params.service_action_key,
                        all_tg_pt: params.all_tg_pt,
                    });
                }
            }
            Some(key) => {
                if !ignore_key && params.key != key {
                    return Err(Refusal::Conflict);
                }
                if params.spec_i_pt {
                    return Err(Refusal::parameter(20));
                }
                if params.service_action_key == 0 {
                    self.unregister(nexus);
                } else if let Some(r) = self.registrations.iter_mut().find(|r| &r.nexus == nexus) {
                    r.key = params.service_action_key;
                }
            }
        }
        self.generation = self.generation.wrapping_add(1);
        Ok(Outcome {
            changed: true,
            ..Default::default()
        })
    }

    /// Removes the registration of `nexus`, and the reservation it held (5.12.11.2.3):
    /// for an all-registrants type only with the last registrant.
    fn unregister(&mut self, nexus: &Nexus) {
        let was_holder = self.is_holder(nexus);
        self.registrations.retain(|r| &r.nexus != nexus);
        let Some(reservation) = self.reservation.clone() else {
            return;
        };
        let release = if reservation.pr_type.all_registrants() {
            self.registrations.is_empty()
        } else {
            was_holder
        };
        if release {
            self.reservation = None;
            if matches!(
                reservation.pr_type,
                PrType::WriteExclusiveRegistrantsOnly | PrType::ExclusiveAccessRegistrantsOnly
            ) {
                self.notify_registrants_except(nexus, attention::RESERVATIONS_RELEASED);
            }
        } else if reservation.pr_type.all_registrants() && reservation.holder == *nexus {
            // Keep a registrant's name on it, for READ FULL STATUS and moves.
            if let Some(first) = self.registrations.first() {
                self.reservation = Some(Reservation {
                    holder: first.nexus.clone(),
                    ..reservation
                });
            }
        }
    }

    fn notify_registrants_except(&mut self, nexus: &Nexus, asc: (u8, u8)) {
        let others: Vec<Nexus> = self
            .registrations
            .iter()
            .map(|r| r.nexus.clone())
            .filter(|n| n != nexus)
            .collect();
        for other in others {
            self.establish(&other, asc);
        }
    }

    fn reserve(&mut self, nexus: &Nexus, type_code: u8) -> Result<Outcome, Refusal> {
        let Some(pr_type) = PrType::from_code(type_code) else {
            return Err(Refusal::cdb(2, Some(3)));
        };
        match &self.reservation {
            Some(r) if self.is_holder(nexus) && r.pr_type == pr_type => Ok(Outcome::default()),
            Some(_) => Err(Refusal::Conflict),
            None => {
                self.reservation = Some(Reservation {
                    pr_type,
                    holder: nexus.clone(),
                });
                Ok(Outcome {
                    changed: true,
                    ..Default::default()
                })
            }
        }
    }

    fn release(&mut self, nexus: &Nexus, type_code: u8) -> Result<Outcome, Refusal> {
        let Some(reservation) = self.reservation.clone() else {
            return Ok(Outcome::default());
        };
        if !self.is_holder(nexus) {
            return Ok(Outcome::default());
        }
        if reservation.pr_type as u8 != type_code {
            return Err(Refusal::Check(Check::new(ILLEGAL_REQUEST, INVALID_RELEASE)));
        }
        self.reservation = None;
        if reservation.pr_type.registrants_have_access() {
            self.notify_registrants_except(nexus, attention::RESERVATIONS_RELEASED);
        }
        Ok(Outcome {
            changed: true,
            ..Default::default()
        })
    }

    fn clear(&mut self, nexus: &Nexus) -> Outcome {
        self.notify_registrants_except(nexus, attention::RESERVATIONS_PREEMPTED);
        self.registrations.clear();
        self.reservation = None;
        self.generation = self.generation.wrapping_add(1);
        Outcome {
            changed: true,
            ..Default::default()
        }
    }

    /// Removes the registrations with `key` other than `nexus`'s own (5.12.11.4.3 allows a
    /// nexus to preempt its own key; it stays registered), returning the nexuses removed.
    fn remove_key(&mut self, nexus: &Nexus, key: u64) -> Vec<Nexus> {
        let removed: Vec<Nexus> = self
            .registrations
            .iter()
            .filter(|r| r.key == key && &r.nexus != nexus)
            .map(|r| r.nexus.clone())
            .collect();
        self.registrations
            .retain(|r| r.key != key || &r.nexus == nexus);
        for victim in &removed {
            self.establish(victim, attention::REGISTRATIONS_PREEMPTED);
        }
        removed
    }

    fn preempt(
        &mut self,
        nexus: &Nexus,
        type_code: u8,
        victim_key: u64,
        action: PrOutAction,
    ) -> Result<Outcome, Refusal> {
        let abort = action == PrOutAction::PreemptAndAbort;
        let matches_any = |s: &Self| s.registrations.iter().any(|r| r.key == victim_key);
        let removed = match self.reservation.clone() {
            // No reservation: remove registrations only (5.12.11.4.2).
            None => {
                if victim_key == 0 {
                    return Err(Refusal::parameter(8));
                }
                if !matches_any(self) {
                    return Err(Refusal::Conflict);
                }
                self.remove_key(nexus, victim_key)
            }
            // All registrants: a key of zero takes the reservation and removes every other
            // registration; another key removes those registrations only (5.12.11.4.4).
            Some(r) if r.pr_type.all_registrants() => {
                let Some(new_type) = PrType::from_code(type_code) else {
                    return Err(Refusal::cdb(2, Some(3)));
                };
                if victim_key == 0 {
                    let others: Vec<Nexus> = self
                        .registrations
                        .iter()
                        .filter(|x| &x.nexus != nexus)
                        .map(|x| x.nexus.clone())
                        .collect();
                    self.registrations.retain(|x| &x.nexus == nexus);
                    for victim in &others {
                        self.establish(victim, attention::REGISTRATIONS_PREEMPTED);
                    }
                    self.reservation = Some(Reservation {
                        pr_type: new_type,
                        holder: nexus.clone(),
                    });
                    others
                } else {
                    if !matches_any(self) {
                        return Err(Refusal::Conflict);
                    }
                    let removed = self.remove_key(nexus, victim_key);
                    // Every registrant holds an all-registrants reservation; the one kept
                    // as its holder must still be one (the preemptor always is).
                    if removed.contains(&r.holder) {
                        if let Some(kept) = self.reservation.as_mut() {
                            kept.holder = nexus.clone();
                        }
                    }
                    removed
                }
            }
            // One holder: preempting the holder's key takes the reservation (5.12.11.4.3).
            Some(r) => {
                let holder_key = self.key_of(&r.holder);
                if holder_key == Some(victim_key) {
                    let Some(new_type) = PrType::from_code(type_code) else {
                        return Err(Refusal::cdb(2, Some(3)));
                    };
                    let removed = self.remove_key(nexus, victim_key);
                    let changed_kind = new_type != r.pr_type;
                    self.reservation = Some(Reservation {
                        pr_type: new_type,
                        holder: nexus.clone(),
                    });
                    if changed_kind {
                        // Registrants that keep their registration learn that the
                        // reservation they saw is gone (5.12.11.4.3 c).
                        let keep: Vec<Nexus> = self
                            .registrations
                            .iter()
                            .map(|x| x.nexus.clone())
                            .filter(|n| n != nexus && !removed.contains(n))
                            .collect();
                        for other in keep {
                            self.establish(&other, attention::RESERVATIONS_RELEASED);
                        }
                    }
                    removed
                } else {
                    if victim_key == 0 {
                        return Err(Refusal::parameter(8));
                    }
                    if !matches_any(self) {
                        return Err(Refusal::Conflict);
                    }
                    self.remove_key(nexus, victim_key)
                }
            }
        };
        self.generation = self.generation.wrapping_add(1);
        Ok(Outcome {
            changed: true,
            aborted: if abort { removed } else { Vec::new() },
            persist: false,
        })
    }

    /// REPLACE LOST RESERVATION (SPC-5 5.14.11.6): this device server never loses its
    /// reservation information, so there is no lost reservation to replace unless none is
    /// held; then it reserves like RESERVE.
    fn replace_lost(&mut self, nexus: &Nexus, type_code: u8) -> Result<Outcome, Refusal> {
        if self.reservation.is_some() && !self.is_holder(nexus) {
            return Err(Refusal::Conflict);
        }
        let Some(pr_type) = PrType::from_code(type_code) else {
            return Err(Refusal::cdb(2, Some(3)));
        };
        self.reservation = Some(Reservation {
            pr_type,
            holder: nexus.clone(),
        });
        self.generation = self.generation.wrapping_add(1);
        Ok(Outcome {
            changed: true,
            ..Default::default()
        })
    }

    /// REGISTER AND MOVE (SPC-4 5.12.8): the holder registers another I_T nexus and hands
    /// it the reservation.
    pub fn register_and_move(
        &mut self,
        nexus: &Nexus,
        scope: u8,
        type_code: u8,
        params: &RegisterMoveParams,
    ) -> Result<Outcome, Refusal> {
        if self.scsi2.as_ref().is_some_and(|h| h != nexus) {
            return Err(Refusal::Conflict);
        }
        if params.aptpl && !self.persist_capable {
            return Err(Refusal::parameter(17));
        }
        if self.key_of(nexus) != Some(params.key) {
            return Err(Refusal::Conflict);
        }
        if scope != 0 {
            return Err(Refusal::cdb(2, Some(7)));
        }
        let Some(reservation) = self.reservation.clone() else {
            return Err(Refusal::Conflict);
        };
        if reservation.pr_type.all_registrants() || !self.is_holder(nexus) {
            return Err(Refusal::Conflict);
        }
        let _ = type_code; // the reservation keeps its type (5.12.8 e)
        if params.service_action_key == 0 {
            return Err(Refusal::parameter(8));
        }
        let Some(isid) = params.transport_id.isid else {
            return Err(Refusal::parameter(24));
        };
        let destination = Nexus::new(&params.transport_id.name, isid, params.relative_target_port);
        if destination.target_port != nexus.target_port {
            // One target port in this gateway: any other relative port does not exist.
            return Err(Refusal::parameter(18));
        }
        if &destination == nexus {
            return Err(Refusal::parameter(24));
        }
        match self
            .registrations
            .iter_mut()
            .find(|r| r.nexus == destination)
        {
            Some(r) => r.key = params.service_action_key,
            None => {
                if self.registrations.len() >= MAX_REGISTRATIONS {
                    return Err(Refusal::Check(Check::new(
                        ILLEGAL_REQUEST,
                        INSUFFICIENT_REGISTRATION_RESOURCES,
                    )));
                }
                self.registrations.push(Registration {
                    nexus: destination.clone(),
                    key: params.service_action_key,
                    all_tg_pt: false,
                });
            }
        }
        self.reservation = Some(Reservation {
            pr_type: reservation.pr_type,
            holder: destination,
        });
        if params.unregister {
            self.registrations.retain(|r| &r.nexus != nexus);
        }
        self.generation = self.generation.wrapping_add(1);
        let outcome = Outcome {
            changed: true,
            ..Default::default()
        };
        Ok(self.with_aptpl(outcome, PrOutAction::RegisterAndMove, params.aptpl))
    }

    /// Every nexus named in the state (for tests and invariants).
    pub fn nexuses(&self) -> BTreeSet<Nexus> {
        self.registrations
            .iter()
            .map(|r| r.nexus.clone())
            .chain(self.scsi2.clone())
            .collect()
    }

    /// The persistent part (SPC-4 5.12.5: registrations, reservation, generation), as
    /// written for APTPL.
    pub fn persistent(&self) -> Persistent {
        Persistent {
            generation: self.generation,
            registrations: self
                .registrations
                .iter()
                .map(|r| {
                    (
                        r.nexus.transport_id(),
                        r.nexus.target_port,
                        r.key,
                        r.all_tg_pt,
                    )
                })
                .collect(),
            reservation: self
                .reservation
                .as_ref()
                .map(|r| (r.holder.transport_id(), r.holder.target_port, r.pr_type)),
        }
    }

    /// Takes back what [`ReservationState::persistent`] gave (APTPL in force).
    pub fn restore(&mut self, saved: &Persistent) {
        let nexus_of =
            |id: &TransportId, port: u16| Nexus::new(&id.name, id.isid.unwrap_or_default(), port);
        self.generation = saved.generation;
        self.registrations = saved
            .registrations
            .iter()
            .take(MAX_REGISTRATIONS)
            .map(|(id, port, key, all_tg_pt)| Registration {
                nexus: nexus_of(id, *port),
                key: *key,
                all_tg_pt: *all_tg_pt,
            })
            .collect();
        self.reservation = saved
            .reservation
            .as_ref()
            .map(|(id, port, pr_type)| Reservation {
                pr_type: *pr_type,
                holder: nexus_of(id, *port),
            });
        self.aptpl = true;
    }
}

/// The state APTPL keeps across power loss.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Persistent {
    pub generation: u32,
    pub registrations: Vec<(TransportId, u16, u64, bool)>,
    pub reservation: Option<(TransportId, u16, PrType)>,
}
