//! Every transition of the timer's ownership, on a simulated clock.

use super::*;

const C1: Holder = Holder::Client(StreamId(1));
const C2: Holder = Holder::Client(StreamId(2));
const P1: Holder = Holder::Pump(UpstreamId(1));
const R1: Holder = Holder::Round(1);

#[test]
fn nobody_to_hold_it_means_nothing_to_do() {
    let mut k = Timekeeper::default();
    assert_eq!(k.decide(Some(5_000), false, 1_000), Duty::Nothing);
    assert_eq!(k.keeper(), None);
}

#[test]
fn no_deadline_wakes_nobody() {
    let mut k = Timekeeper::default();
    k.join(C1);
    assert_eq!(k.decide(None, false, 1_000), Duty::Nothing);
}

#[test]
fn a_client_is_preferred_over_a_round_and_a_pump() {
    let mut k = Timekeeper::default();
    k.join(P1);
    k.join(R1);
    k.join(C2);
    assert_eq!(k.decide(Some(5_000), false, 1_000), Duty::Wake(C2));
    assert_eq!(k.poll(C2, || 1_001, || Some(5_000)), Some(5_000));
    assert_eq!(k.poll(P1, || 1_001, || Some(5_000)), None, "only the keeper arms");
}

#[test]
fn an_armed_keeper_is_left_alone_until_the_deadline_moves_earlier() {
    let mut k = Timekeeper::default();
    k.join(C1);
    assert_eq!(k.decide(Some(5_000), false, 1_000), Duty::Wake(C1));
    assert_eq!(k.poll(C1, || 1_000, || Some(5_000)), Some(5_000));
    assert_eq!(k.decide(Some(5_000), false, 1_100), Duty::Nothing);
    assert_eq!(
        k.decide(Some(9_000), false, 1_200),
        Duty::Nothing,
        "a later deadline: the timer fires early, harmlessly"
    );
    assert_eq!(k.decide(Some(3_000), false, 1_300), Duty::Wake(C1), "an earlier one: re-arm");
    assert_eq!(k.poll(C1, || 1_300, || Some(3_000)), Some(3_000));
    k.fired(C1);
    assert_eq!(k.poll(C1, || 3_001, || Some(9_000)), Some(9_000));
}

#[test]
fn the_first_holder_to_poll_takes_an_empty_post() {
    let mut k = Timekeeper::default();
    k.join(P1);
    assert_eq!(k.poll(P1, || 1_000, || Some(2_000)), Some(2_000));
    assert_eq!(k.keeper(), Some(P1));
}

#[test]
fn a_keeper_that_leaves_hands_the_timer_to_the_next_best() {
    let mut k = Timekeeper::default();
    k.join(C1);
    k.join(P1);
    assert_eq!(k.decide(Some(5_000), false, 1_000), Duty::Wake(C1));
    assert_eq!(k.poll(C1, || 1_000, || Some(5_000)), Some(5_000));
    assert_eq!(k.leave(C1, 2_000), Duty::Wake(P1));
    assert_eq!(k.poll(P1, || 2_000, || Some(5_000)), Some(5_000));
    assert_eq!(k.leave(C2, 2_000), Duty::Nothing, "a holder that is not the keeper");
    assert_eq!(k.leave(P1, 2_100), Duty::Nothing, "nobody left");
    assert_eq!(k.keeper(), None);
}

#[test]
fn a_keeper_whose_timer_is_overdue_is_passed_over_until_it_shows_life() {
    let mut k = Timekeeper::default();
    k.join(C1);
    k.join(C2);
    assert_eq!(k.decide(Some(5_000), false, 1_000), Duty::Wake(C1));
    assert_eq!(k.poll(C1, || 1_000, || Some(5_000)), Some(5_000));
    // Its context died: 5 s came and went, and nothing fired.
    assert_eq!(k.decide(Some(5_000), false, 5_000 + TIMER_STALE_MS), Duty::Nothing, "late, not yet stale");
    assert_eq!(k.decide(Some(5_000), false, 5_001 + TIMER_STALE_MS), Duty::Wake(C2));
    assert_eq!(k.poll(C2, || 6_100, || Some(5_000)), Some(5_000));
    // C1 polls again (its context was only slow): it is usable, but C2 keeps the post.
    assert_eq!(k.poll(C1, || 6_200, || Some(5_000)), None);
    assert_eq!(k.leave(C2, 6_300), Duty::Wake(C1));
}

#[test]
fn a_keeper_woken_that_never_polls_is_passed_over() {
    let mut k = Timekeeper::default();
    k.join(C1);
    k.join(P1);
    assert_eq!(k.decide(Some(5_000), false, 1_000), Duty::Wake(C1));
    assert_eq!(k.decide(Some(5_000), false, 1_500), Duty::Wake(C1), "woken again, harmlessly");
    assert_eq!(k.decide(Some(5_000), false, 1_001 + TIMER_STALE_MS), Duty::Wake(P1));
}

#[test]
fn an_errand_goes_to_a_client_now() {
    let mut k = Timekeeper::default();
    k.join(P1);
    assert_eq!(k.decide(Some(9_000), false, 1_000), Duty::Wake(P1));
    assert_eq!(k.poll(P1, || 1_000, || Some(9_000)), Some(9_000));
    k.join(C2);
    // A client is wanted to take an upstream over: the pump cannot, the client can.
    assert_eq!(k.decide(Some(9_000), true, 1_100), Duty::Wake(C2));
    assert_eq!(k.poll(C2, || 1_100, || Some(9_000)), Some(1_100), "at once");
    k.fired(C2);
    assert_eq!(k.poll(C2, || 1_102, || Some(9_000)), Some(9_000), "errand done: back to the deadline");
    assert_eq!(k.decide(Some(9_000), false, 1_103), Duty::Nothing);
}

#[test]
fn an_errand_with_no_client_is_dropped() {
    let mut k = Timekeeper::default();
    k.join(P1);
    assert_eq!(k.decide(Some(9_000), true, 1_000), Duty::Wake(P1));
    assert_eq!(k.poll(P1, || 1_000, || Some(9_000)), Some(9_000), "the pump times the deadline, not the errand");
    assert_eq!(k.decide(None, true, 1_100), Duty::Nothing);
}

#[test]
fn a_round_keeps_the_timer_when_no_client_is_there() {
    let mut k = Timekeeper::default();
    k.join(R1);
    k.join(P1);
    assert_eq!(k.decide(Some(4_000), false, 1_000), Duty::Wake(R1));
    assert_eq!(k.poll(R1, || 1_000, || Some(4_000)), Some(4_000));
    assert_eq!(k.leave(R1, 2_000), Duty::Wake(P1), "the round returned; its pump takes over");
}

#[test]
fn an_errand_keeps_its_time_however_often_the_keeper_is_polled() {
    let mut k = Timekeeper::default();
    k.join(C1);
    assert_eq!(k.decide(Some(9_000), true, 1_000), Duty::Wake(C1));
    assert_eq!(k.poll(C1, || 1_000, || Some(9_000)), Some(1_000));
    assert_eq!(k.poll(C1, || 1_001, || Some(9_000)), Some(1_000), "not put off by a message");
    k.fired(C1);
    assert_eq!(k.poll(C1, || 1_002, || Some(9_000)), Some(9_000));
}

#[test]
fn a_keeper_that_keeps_an_earlier_timer_is_not_woken_for_deadlines_after_it() {
    let mut k = Timekeeper::default();
    k.join(C1);
    assert_eq!(k.decide(Some(6_000), false, 1_000), Duty::Wake(C1));
    assert_eq!(k.poll(C1, || 1_000, || Some(6_000)), Some(6_000));
    // Replies move the deadline later (the idle check's clock restarts): the timer at
    // 6,000 stays and is what the keeper is armed for.
    assert_eq!(k.poll(C1, || 1_100, || Some(31_100)), Some(31_100));
    k.keep_armed(C1, 6_000);
    assert_eq!(k.armed(), Some(6_000));
    // A send moves it earlier again, still after the kept timer: nobody is woken.
    assert_eq!(k.decide(Some(6_200), false, 1_200), Duty::Nothing);
    // Earlier than the kept timer: the keeper must re-arm.
    assert_eq!(k.decide(Some(5_000), false, 1_300), Duty::Wake(C1));
}

#[test]
fn only_the_keeper_records_a_kept_timer() {
    let mut k = Timekeeper::default();
    k.join(C1);
    k.join(C2);
    assert_eq!(k.decide(Some(6_000), false, 1_000), Duty::Wake(C1));
    k.keep_armed(C2, 2_000);
    assert_eq!(k.armed(), None, "C2 is not the keeper; C1 has not polled yet");
    assert_eq!(k.poll(C1, || 1_000, || Some(6_000)), Some(6_000));
    k.keep_armed(C2, 2_000);
    assert_eq!(k.armed(), Some(6_000));
}
