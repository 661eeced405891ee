//! The reservation rules as SPC states them, one scripted exchange per rule, and a
//! property test of the invariants over random sequences of commands from three nexuses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use datapath::scsi::reservation::{
    FullStatus, PrOutAction, PrOutParams, PrType, ReadKeys, ReadReservation, RegisterMoveParams,
};
use proptest::prelude::*;

use super::access::class;
use super::state::{attention, Refusal, ReservationState};
use super::*;
use crate::disk::ScsiResult;

fn nexus(n: u8) -> Nexus {
    Nexus::new(
        &format!("iqn.2026-12.test:host{n}"),
        [0x40, 0, 0, 0, 0, n],
        1,
    )
}

fn params(key: u64, sak: u64) -> PrOutParams {
    PrOutParams {
        key,
        service_action_key: sak,
        ..Default::default()
    }
}

fn register(s: &mut ReservationState, who: u8, key: u64) {
    s.pr_out(
        &nexus(who),
        PrOutAction::RegisterAndIgnoreExistingKey,
        0,
        0,
        &params(0, key),
    )
    .unwrap();
}

fn reserve(s: &mut ReservationState, who: u8, key: u64, t: PrType) -> Result<(), Refusal> {
    s.pr_out(
        &nexus(who),
        PrOutAction::Reserve,
        0,
        t as u8,
        &params(key, 0),
    )
    .map(|_| ())
}

#[test]
fn scsi2_reservations_belong_to_one_nexus_and_only_its_release_or_loss_ends_them() {
    let mut s = ReservationState::new(false);
    assert_eq!(s.reserve6(&nexus(1)), Ok(true));
    assert_eq!(
        s.reserve6(&nexus(1)),
        Ok(false),
        "the holder may reserve again"
    );
    assert_eq!(s.reserve6(&nexus(2)), Err(Refusal::Conflict));
    assert_eq!(s.access(&nexus(2)), 0);
    assert_eq!(s.access(&nexus(1)), class::ALL);
    // Another nexus's RELEASE is GOOD and does nothing (SPDK's bug, issue 17).
    assert_eq!(s.release6(&nexus(2)), Ok(false));
    assert_eq!(s.scsi2_holder(), Some(&nexus(1)));
    // The same initiator name with another ISID is another nexus.
    let other_isid = Nexus::new(&nexus(1).initiator_name, [0x40, 0, 0, 0, 1, 1], 1);
    assert_eq!(s.reserve6(&other_isid), Err(Refusal::Conflict));
    assert_eq!(s.release6(&nexus(1)), Ok(true));
    assert_eq!(s.reserve6(&nexus(2)), Ok(true));
    // Nexus loss releases.
    s.nexus_joined(&nexus(2));
    assert!(s.nexus_lost(&nexus(2)));
    assert_eq!(s.scsi2_holder(), None);
    // A reset releases and leaves an attention for every nexus present.
    s.nexus_joined(&nexus(1));
    s.nexus_joined(&nexus(3));
    s.reserve6(&nexus(3)).unwrap();
    s.reset(attention::BUS_DEVICE_RESET);
    assert_eq!(s.scsi2_holder(), None);
    assert!(s.attention_pending(&nexus(1)) && s.attention_pending(&nexus(3)));
    assert!(!s.attention_pending(&nexus(2)), "not logged in");
    assert_eq!(s.take_attention(&nexus(1)).unwrap().asc, (0x29, 0x03));
    assert!(!s.attention_pending(&nexus(1)));
}

#[test]
fn scsi2_and_persistent_reservations_exclude_each_other() {
    let mut s = ReservationState::new(false);
    s.reserve6(&nexus(1)).unwrap();
    // PR OUT and PR IN from another nexus conflict with a SCSI-2 reservation.
    let refused = s.pr_out(
        &nexus(2),
        PrOutAction::RegisterAndIgnoreExistingKey,
        0,
        0,
        &params(0, 7),
    );
    assert_eq!(refused, Err(Refusal::Conflict));
    s.release6(&nexus(1)).unwrap();
    register(&mut s, 2, 7);
    // With registrations, RESERVE(6) conflicts (CRH = 0).
    assert_eq!(s.reserve6(&nexus(1)), Err(Refusal::Conflict));
}

#[test]
fn register_checks_the_key_and_counts_generations() {
    let mut s = ReservationState::new(false);
    let a = nexus(1);
    // Unregistered with a nonzero RESERVATION KEY: conflict.
    assert_eq!(
        s.pr_out(&a, PrOutAction::Register, 0, 0, &params(5, 6)),
        Err(Refusal::Conflict)
    );
    // Unregistered, asking to unregister: GOOD, nothing changes.
    s.pr_out(&a, PrOutAction::Register, 0, 0, &params(0, 0))
        .unwrap();
    assert_eq!(s.generation(), 0);
    s.pr_out(&a, PrOutAction::Register, 0, 0, &params(0, 6))
        .unwrap();
    assert_eq!(s.generation(), 1);
    // Registered: the key must match, then the key changes.
    assert_eq!(
        s.pr_out(&a, PrOutAction::Register, 0, 0, &params(5, 9)),
        Err(Refusal::Conflict)
    );
    s.pr_out(&a, PrOutAction::Register, 0, 0, &params(6, 9))
        .unwrap();
    let keys =
        ReadKeys::parse(&s.pr_in(datapath::scsi::reservation::PrInAction::ReadKeys)).unwrap();
    assert_eq!((keys.generation, keys.keys), (2, vec![9]));
    // REGISTER AND IGNORE EXISTING KEY ignores it.
    s.pr_out(
        &a,
        PrOutAction::RegisterAndIgnoreExistingKey,
        0,
        0,
        &params(1234, 10),
    )
    .unwrap();
    assert_eq!(s.registrations()[0].key, 10);
    // Unregister.
    s.pr_out(&a, PrOutAction::Register, 0, 0, &params(10, 0))
        .unwrap();
    assert!(s.registrations().is_empty());
    assert_eq!(s.generation(), 4);
    // APTPL without anywhere to persist: INVALID FIELD IN PARAMETER LIST.
    let mut aptpl = params(0, 3);
    aptpl.aptpl = true;
    let Err(Refusal::Check(check)) = s.pr_out(&a, PrOutAction::Register, 0, 0, &aptpl) else {
        panic!("APTPL accepted without persistence")
    };
    assert_eq!(check.asc, (0x26, 0x00));
}

/// SPC-4 table 63/SBC-4 table 13 for each type: what the holder, another registrant and a
/// nexus that is not registered may do (the same table libiscsi's ProutReserve.Access*
/// tests walk).
#[test]
fn each_reservation_type_gives_the_access_spc_lists() {
    let all = class::ALL;
    let read = class::PR_FREE | class::READ;
    let none = class::PR_FREE;
    let table = [
        (PrType::WriteExclusive, all, read, read),
        (PrType::ExclusiveAccess, all, none, none),
        (PrType::WriteExclusiveRegistrantsOnly, all, all, read),
        (PrType::ExclusiveAccessRegistrantsOnly, all, all, none),
        (PrType::WriteExclusiveAllRegistrants, all, all, read),
        (PrType::ExclusiveAccessAllRegistrants, all, all, none),
    ];
    for (pr_type, holder, registrant, stranger) in table {
        let mut s = ReservationState::new(false);
        register(&mut s, 1, 0xa);
        register(&mut s, 2, 0xb);
        reserve(&mut s, 1, 0xa, pr_type).unwrap();
        assert_eq!(s.access(&nexus(1)), holder, "{pr_type:?} holder");
        assert_eq!(s.access(&nexus(2)), registrant, "{pr_type:?} registrant");
        assert_eq!(s.access(&nexus(3)), stranger, "{pr_type:?} not registered");
        // READ RESERVATION: key zero for the all-registrants types.
        let rr = ReadReservation::parse(
            &s.pr_in(datapath::scsi::reservation::PrInAction::ReadReservation),
        )
        .unwrap();
        let held = rr.reservation.unwrap();
        assert_eq!(held.pr_type, Some(pr_type));
        assert_eq!(held.key, if pr_type.all_registrants() { 0 } else { 0xa });
        // Reserving again with the same type is GOOD, another type or nexus conflicts.
        assert_eq!(reserve(&mut s, 1, 0xa, pr_type), Ok(()));
        let other = if pr_type == PrType::WriteExclusive {
            PrType::ExclusiveAccess
        } else {
            PrType::WriteExclusive
        };
        assert_eq!(reserve(&mut s, 1, 0xa, other), Err(Refusal::Conflict));
        if !pr_type.all_registrants() {
            assert_eq!(reserve(&mut s, 2, 0xb, pr_type), Err(Refusal::Conflict));
        }
    }
}

#[test]
fn the_holder_unregistering_releases_except_for_all_registrants_types() {
    for pr_type in PrType::ALL {
        let mut s = ReservationState::new(false);
        register(&mut s, 1, 0xa);
        register(&mut s, 2, 0xb);
        reserve(&mut s, 1, 0xa, pr_type).unwrap();
        s.pr_out(&nexus(1), PrOutAction::Register, 0, 0, &params(0xa, 0))
            .unwrap();
        assert_eq!(
            s.reservation().is_some(),
            pr_type.all_registrants(),
            "{pr_type:?}"
        );
        // Registrants-only types tell the other registrants it was released.
        let ro = matches!(
            pr_type,
            PrType::WriteExclusiveRegistrantsOnly | PrType::ExclusiveAccessRegistrantsOnly
        );
        assert_eq!(s.attention_pending(&nexus(2)), ro, "{pr_type:?}");
        if pr_type.all_registrants() {
            // The last registrant leaving ends it.
            s.pr_out(&nexus(2), PrOutAction::Register, 0, 0, &params(0xb, 0))
                .unwrap();
            assert!(s.reservation().is_none());
        }
    }
}

#[test]
fn release_checks_the_type_and_tells_registrants_of_shared_types() {
    let mut s = ReservationState::new(false);
    register(&mut s, 1, 0xa);
    register(&mut s, 2, 0xb);
    reserve(&mut s, 1, 0xa, PrType::WriteExclusiveRegistrantsOnly).unwrap();
    // A registrant that does not hold it: GOOD, nothing released.
    s.pr_out(&nexus(2), PrOutAction::Release, 0, 5, &params(0xb, 0))
        .unwrap();
    assert!(s.reservation().is_some());
    // The holder with the wrong type: INVALID RELEASE OF PERSISTENT RESERVATION.
    let Err(Refusal::Check(check)) =
        s.pr_out(&nexus(1), PrOutAction::Release, 0, 1, &params(0xa, 0))
    else {
        panic!("release with the wrong type accepted")
    };
    assert_eq!((check.key, check.asc), (0x05, (0x26, 0x04)));
    // The wrong key: conflict.
    assert_eq!(
        s.pr_out(&nexus(1), PrOutAction::Release, 0, 5, &params(0xb, 0)),
        Err(Refusal::Conflict)
    );
    let generation = s.generation();
    s.pr_out(&nexus(1), PrOutAction::Release, 0, 5, &params(0xa, 0))
        .unwrap();
    assert!(s.reservation().is_none());
    assert_eq!(s.generation(), generation, "RELEASE does not count");
    assert_eq!(
        s.take_attention(&nexus(2)).unwrap().asc,
        attention::RESERVATIONS_RELEASED
    );
    assert!(!s.attention_pending(&nexus(1)), "not the releaser");
}

#[test]
fn preempt_takes_the_reservation_and_removes_the_victims_registrations() {
    let mut s = ReservationState::new(false);
    register(&mut s, 1, 0xa);
    register(&mut s, 2, 0xb);
    register(&mut s, 3, 0xc);
    reserve(&mut s, 1, 0xa, PrType::ExclusiveAccess).unwrap();
    let generation = s.generation();
    // Unregistered nexuses cannot preempt; a key nobody has conflicts.
    assert_eq!(
        s.pr_out(&nexus(4), PrOutAction::Preempt, 0, 3, &params(0xd, 0xa)),
        Err(Refusal::Conflict)
    );
    let outcome = s
        .pr_out(
            &nexus(2),
            PrOutAction::PreemptAndAbort,
            0,
            1,
            &params(0xb, 0xa),
        )
        .unwrap();
    assert_eq!(outcome.aborted, vec![nexus(1)]);
    assert_eq!(s.generation(), generation + 1);
    let r = s.reservation().unwrap();
    assert_eq!(
        (r.holder.clone(), r.pr_type),
        (nexus(2), PrType::WriteExclusive)
    );
    assert_eq!(
        s.take_attention(&nexus(1)).unwrap().asc,
        attention::REGISTRATIONS_PREEMPTED
    );
    // The type changed: the registrant that stays learns the old one is gone.
    assert_eq!(
        s.take_attention(&nexus(3)).unwrap().asc,
        attention::RESERVATIONS_RELEASED
    );
    // Preempting a key that does not hold the reservation removes registrations only.
    let outcome = s
        .pr_out(&nexus(2), PrOutAction::Preempt, 0, 1, &params(0xb, 0xc))
        .unwrap();
    assert!(outcome.aborted.is_empty(), "PREEMPT aborts nothing");
    assert_eq!(s.registrations().len(), 1);
    assert_eq!(s.reservation().unwrap().holder, nexus(2));
    // No reservation and a zero key: INVALID FIELD IN PARAMETER LIST.
    let mut free = ReservationState::new(false);
    register(&mut free, 1, 0xa);
    let Err(Refusal::Check(check)) =
        free.pr_out(&nexus(1), PrOutAction::Preempt, 0, 1, &params(0xa, 0))
    else {
        panic!("zero key accepted")
    };
    assert_eq!(check.asc, (0x26, 0x00));
}

#[test]
fn preempt_of_an_all_registrants_reservation_with_key_zero_takes_it_alone() {
    let mut s = ReservationState::new(false);
    register(&mut s, 1, 0xa);
    register(&mut s, 2, 0xb);
    reserve(&mut s, 1, 0xa, PrType::ExclusiveAccessAllRegistrants).unwrap();
    s.pr_out(&nexus(2), PrOutAction::Preempt, 0, 3, &params(0xb, 0))
        .unwrap();
    assert_eq!(s.registrations().len(), 1);
    let r = s.reservation().unwrap();
    assert_eq!(
        (r.holder.clone(), r.pr_type),
        (nexus(2), PrType::ExclusiveAccess)
    );
    assert_eq!(s.access(&nexus(1)), class::PR_FREE);
}

#[test]
fn clear_removes_everything_and_tells_the_others() {
    let mut s = ReservationState::new(false);
    register(&mut s, 1, 0xa);
    register(&mut s, 2, 0xb);
    reserve(&mut s, 1, 0xa, PrType::WriteExclusive).unwrap();
    assert_eq!(
        s.pr_out(&nexus(3), PrOutAction::Clear, 0, 0, &params(0, 0)),
        Err(Refusal::Conflict)
    );
    s.pr_out(&nexus(2), PrOutAction::Clear, 0, 0, &params(0xb, 0))
        .unwrap();
    assert!(s.registrations().is_empty() && s.reservation().is_none());
    assert_eq!(
        s.take_attention(&nexus(1)).unwrap().asc,
        attention::RESERVATIONS_PREEMPTED
    );
    assert!(!s.attention_pending(&nexus(2)));
}

#[test]
fn register_and_move_hands_the_reservation_to_another_port() {
    let mut s = ReservationState::new(false);
    register(&mut s, 1, 0xa);
    reserve(&mut s, 1, 0xa, PrType::WriteExclusive).unwrap();
    let mv = RegisterMoveParams {
        key: 0xa,
        service_action_key: 0xe,
        unregister: true,
        aptpl: false,
        relative_target_port: 1,
        transport_id: nexus(5).transport_id(),
    };
    s.register_and_move(&nexus(1), 0, 1, &mv).unwrap();
    assert_eq!(s.reservation().unwrap().holder, nexus(5));
    assert_eq!(s.registrations().len(), 1, "the source unregistered");
    assert_eq!(s.registrations()[0].key, 0xe);
    // Moving to itself is refused; a nexus that does not hold it conflicts.
    let to_self = RegisterMoveParams {
        key: 0xe,
        transport_id: nexus(5).transport_id(),
        ..mv.clone()
    };
    assert!(matches!(
        s.register_and_move(&nexus(5), 0, 1, &to_self),
        Err(Refusal::Check(_))
    ));
    assert_eq!(
        s.register_and_move(&nexus(1), 0, 1, &mv),
        Err(Refusal::Conflict)
    );
    // READ FULL STATUS names the holder with its ISID.
    let status =
        FullStatus::parse(&s.pr_in(datapath::scsi::reservation::PrInAction::ReadFullStatus))
            .unwrap();
    assert_eq!(status.entries.len(), 1);
    assert!(status.entries[0].holder);
    assert_eq!(status.entries[0].transport_id, nexus(5).transport_id());
}

#[test]
fn spec_i_pt_registers_the_listed_ports_all_or_none() {
    let mut s = ReservationState::new(false);
    let mut p = params(0, 0x77);
    p.spec_i_pt = true;
    p.transport_ids = vec![nexus(2).transport_id(), nexus(3).transport_id()];
    s.pr_out(&nexus(1), PrOutAction::Register, 0, 0, &p)
        .unwrap();
    assert_eq!(s.registrations().len(), 3);
    // A port already registered: nothing of the list is registered.
    let mut again = params(0, 0x78);
    again.spec_i_pt = true;
    again.transport_ids = vec![nexus(4).transport_id(), nexus(2).transport_id()];
    assert!(s
        .pr_out(&nexus(5), PrOutAction::Register, 0, 0, &again)
        .is_err());
    assert_eq!(s.registrations().len(), 3);
}

// --- LuReservations: the per-command check, persistence, the abort fence ---

fn run(lu: &LuReservations, who: &Nexus, cdb: &[u8], data: &[u8]) -> ScsiResult {
    lu.execute(who, cdb, data)
}

fn pr_out_cdb(action: PrOutAction, pr_type: u8, len: u32) -> Vec<u8> {
    let mut cdb = vec![0x5f, action as u8, pr_type, 0, 0, 0, 0, 0, 0, 0];
    cdb[5..9].copy_from_slice(&len.to_be_bytes());
    cdb
}

fn pr_register(lu: &LuReservations, who: &Nexus, key: u64, aptpl: bool) -> ScsiResult {
    let mut p = params(0, key);
    p.aptpl = aptpl;
    run(
        lu,
        who,
        &pr_out_cdb(PrOutAction::RegisterAndIgnoreExistingKey, 0, 24),
        &p.emit(),
    )
}

fn admit_status(lu: &LuReservations, view: &mut NexusView, cdb: &[u8]) -> Option<u8> {
    match lu.admit(view, 0, cdb) {
        Admission::Go(_) => None,
        Admission::Done(result) => Some(result.status),
        Admission::Reservation => Some(0xff),
    }
}

#[test]
fn admission_follows_changes_reports_attentions_once_and_conflicts() {
    let lu = LuReservations::new();
    let (a, b) = (nexus(1), nexus(2));
    lu.nexus_joined(&a);
    lu.nexus_joined(&b);
    let mut view_b = NexusView::new(b.clone());
    let write10 = [0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    let read10 = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    assert_eq!(admit_status(&lu, &mut view_b, &write10), None);
    // A reserves (SCSI-2): B's cached view is refreshed by the epoch change.
    assert_eq!(run(&lu, &a, &[0x16, 0, 0, 0, 0, 0], &[]).status, 0);
    assert_eq!(admit_status(&lu, &mut view_b, &write10), Some(0x18));
    assert_eq!(admit_status(&lu, &mut view_b, &read10), Some(0x18));
    assert_eq!(
        admit_status(&lu, &mut view_b, &[0x12, 0, 0, 0, 36, 0]),
        None,
        "INQUIRY"
    );
    assert_eq!(
        admit_status(&lu, &mut view_b, &[0x16, 0, 0, 0, 0, 0]),
        Some(0xff)
    );
    // A LU reset: released, and B's next command reports the attention once.
    lu.reset(ResetKind::LogicalUnit);
    let Admission::Done(ua) = lu.admit(&mut view_b, 0, &read10) else {
        panic!("no unit attention")
    };
    assert_eq!(
        (ua.status, ua.sense[2], ua.sense[12], ua.sense[13]),
        (2, 6, 0x29, 0x03)
    );
    assert_eq!(admit_status(&lu, &mut view_b, &read10), None);
    // REQUEST SENSE returns an attention as its data.
    lu.reset(ResetKind::TargetWarm);
    let Admission::Done(sense) = lu.admit(&mut view_b, 0, &[0x03, 0, 0, 0, 18, 0]) else {
        panic!("REQUEST SENSE did not report the attention")
    };
    assert_eq!(
        (sense.status, sense.data_in[2], sense.data_in[12]),
        (0, 6, 0x29)
    );
    // A CDB of a reservation command with a bad field is refused with sense.
    let bad = run(&lu, &b, &[0x5e, 9, 0, 0, 0, 0, 0, 0, 8, 0], &[]);
    assert_eq!((bad.status, bad.sense[12]), (2, 0x24));
    // A PR OUT whose list is not the length the CDB says: PARAMETER LIST LENGTH ERROR.
    let short = run(&lu, &b, &pr_out_cdb(PrOutAction::Register, 0, 24), &[0; 20]);
    assert_eq!((short.status, short.sense[12]), (2, 0x1a));
}

#[test]
fn aptpl_state_is_written_before_good_and_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("gateway-aptpl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("lun0.img.pr");
    let _ = std::fs::remove_file(&path);
    let (a, b) = (nexus(1), nexus(2));
    {
        let lu = LuReservations::persistent(path.clone()).unwrap();
        assert_eq!(pr_register(&lu, &a, 0xa, true).status, 0);
        assert!(path.exists(), "written before GOOD");
        assert_eq!(pr_register(&lu, &b, 0xb, true).status, 0);
        let reserve = pr_out_cdb(PrOutAction::Reserve, 3, 24);
        assert_eq!(run(&lu, &a, &reserve, &params(0xa, 0).emit()).status, 0);
    }
    // "Restart": a new unit over the same file.
    let lu = LuReservations::persistent(path.clone()).unwrap();
    let state = lu.snapshot();
    assert_eq!(state.registrations().len(), 2);
    let r = state.reservation().unwrap();
    assert_eq!(
        (r.holder.clone(), r.pr_type),
        (a.clone(), PrType::ExclusiveAccess)
    );
    assert!(state.aptpl());
    // A file cut short is refused, not half-read.
    let text = std::fs::read_to_string(&path).unwrap();
    let cut = dir.join("cut.pr");
    std::fs::write(&cut, &text[..text.len() - 4]).unwrap();
    assert!(LuReservations::persistent(cut).is_err());
    // APTPL off: the file goes.
    assert_eq!(pr_register(&lu, &b, 0xc, false).status, 0);
    assert!(!path.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn preempt_and_abort_returns_only_after_the_victims_commands_admitted_before_it() {
    let lu = Arc::new(LuReservations::new());
    let (a, b) = (nexus(1), nexus(2));
    assert_eq!(pr_register(&lu, &a, 0xa, false).status, 0);
    assert_eq!(pr_register(&lu, &b, 0xb, false).status, 0);
    let reserve = pr_out_cdb(PrOutAction::Reserve, 1, 24);
    assert_eq!(run(&lu, &a, &reserve, &params(0xa, 0).emit()).status, 0);
    let admitted = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let victim = {
        let (lu, admitted, finished, a) = (
            Arc::clone(&lu),
            Arc::clone(&admitted),
            Arc::clone(&finished),
            a.clone(),
        );
        std::thread::spawn(move || {
            let mut view = NexusView::new(a);
            let Admission::Go(ticket) = lu.admit(&mut view, 0, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0])
            else {
                panic!("the holder's write was refused")
            };
            admitted.store(true, Ordering::SeqCst);
            // A slow write of the victim, in flight while the preemption comes.
            std::thread::sleep(Duration::from_millis(200));
            finished.store(true, Ordering::SeqCst);
            drop(ticket);
        })
    };
    while !admitted.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    let preempt = pr_out_cdb(PrOutAction::PreemptAndAbort, 1, 24);
    assert_eq!(run(&lu, &b, &preempt, &params(0xb, 0xa).emit()).status, 0);
    assert!(
        finished.load(Ordering::SeqCst),
        "GOOD came before the victim's write ended"
    );
    victim.join().unwrap();
    // After GOOD the victim writes no more.
    let mut view = NexusView::new(a);
    let Admission::Done(after) = lu.admit(&mut view, 0, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0]) else {
        panic!("the preempted nexus may still write")
    };
    assert_eq!(
        after.status, 2,
        "first the REGISTRATIONS PREEMPTED attention"
    );
    let Admission::Done(after) = lu.admit(&mut view, 0, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0]) else {
        panic!("the preempted nexus may still write")
    };
    assert_eq!(after.status, 0x18);
}

// --- invariants over random sequences ---

#[derive(Debug, Clone)]
enum Op {
    Reserve6(u8),
    Release6(u8),
    Out(u8, u8, u8, u64, u64),
    Lost(u8),
    Reset,
    TakeAttention(u8),
}

fn op() -> impl Strategy<Value = Op> {
    let who = 1u8..4;
    let key = prop_oneof![Just(0u64), 1u64..4];
    prop_oneof![
        who.clone().prop_map(Op::Reserve6),
        who.clone().prop_map(Op::Release6),
        (who.clone(), 0u8..9, 0u8..9, key.clone(), key)
            .prop_map(|(w, a, t, k, s)| Op::Out(w, a, t, k, s)),
        who.clone().prop_map(Op::Lost),
        Just(Op::Reset),
        who.prop_map(Op::TakeAttention),
    ]
}

proptest! {
    #[test]
    fn invariants_hold_after_any_sequence(ops in proptest::collection::vec(op(), 1..60)) {
        let mut s = ReservationState::new(false);
        for n in 1..4 {
            s.nexus_joined(&nexus(n));
        }
        let mut last_generation = 0u32;
        for op in ops {
            let before = s.clone();
            let result = match &op {
                Op::Reserve6(w) => s.reserve6(&nexus(*w)).map(|_| ()),
                Op::Release6(w) => s.release6(&nexus(*w)).map(|_| ()),
                Op::Out(w, a, t, k, sak) => {
                    let action = PrOutAction::from_code(*a).unwrap();
                    if action == PrOutAction::RegisterAndMove {
                        Ok(())
                    } else {
                        s.pr_out(&nexus(*w), action, 0, *t, &params(*k, *sak)).map(|_| ())
                    }
                }
                Op::Lost(w) => { s.nexus_lost(&nexus(*w)); s.nexus_joined(&nexus(*w)); Ok(()) }
                Op::Reset => { s.reset(attention::BUS_DEVICE_RESET); Ok(()) }
                Op::TakeAttention(w) => { s.take_attention(&nexus(*w)); Ok(()) }
            };
            // A refused command changes nothing at all.
            if result.is_err() {
                prop_assert_eq!(&s, &before, "{:?} refused but changed the state", op);
            }
            // One kind of reservation at a time.
            prop_assert!(s.scsi2_holder().is_none() || s.reservation().is_none());
            // One registration per nexus, within the bound.
            let nexuses: std::collections::BTreeSet<_> =
                s.registrations().iter().map(|r| r.nexus.clone()).collect();
            prop_assert_eq!(nexuses.len(), s.registrations().len());
            // A persistent reservation is held by a registrant.
            if let Some(r) = s.reservation() {
                prop_assert!(s.registrations().iter().any(|x| x.nexus == r.holder),
                    "holder {:?} not registered after {:?}", r.holder, op);
                for reg in s.registrations() {
                    if r.pr_type.registrants_have_access() {
                        prop_assert_eq!(s.access(&reg.nexus), class::ALL);
                    }
                }
                prop_assert_eq!(s.access(&r.holder), class::ALL);
            } else if s.scsi2_holder().is_none() {
                for n in 1..5 {
                    prop_assert_eq!(s.access(&nexus(n)), class::ALL);
                }
            }
            // PRgeneration only grows, by one per change.
            let g = s.generation();
            prop_assert!(g == last_generation || g == last_generation.wrapping_add(1));
            last_generation = g;
            // READ KEYS tells the registrations.
            let keys = ReadKeys::parse(&s.pr_in(datapath::scsi::reservation::PrInAction::ReadKeys)).unwrap();
            prop_assert_eq!(keys.keys.len(), s.registrations().len());
        }
    }
}

#[test]
fn a_view_cached_for_one_unit_does_not_apply_to_a_new_unit_under_the_same_lun() {
    let old = LuReservations::new();
    let (a, b) = (nexus(1), nexus(2));
    assert_eq!(run(&old, &a, &[0x16, 0, 0, 0, 0, 0], &[]).status, 0);
    let mut view = NexusView::new(b);
    let read10 = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    assert_eq!(admit_status(&old, &mut view, &read10), Some(0x18));
    // The LUN now maps to another unit (a control-plane change): its state, not the old.
    let new = LuReservations::new();
    assert_eq!(admit_status(&new, &mut view, &read10), None);
}
