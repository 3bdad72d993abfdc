//! The multiplexer against the real backend session, on a simulated clock (`sim.rs`):
//! one tenant's streams, batching, failures, hand-over and the timers.

use super::*;
use crate::sim::{rpc, who, Sim};

fn echo_rpc(id: u32, text: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"echo","params":["{text}"]}}"#)
}

fn response_body(d: Option<&Delivery>) -> String {
    match d {
        Some(Delivery::Response(r)) => String::from_utf8_lossy(&r.body).into_owned(),
        other => panic!("expected a response, got {other:?}"),
    }
}

#[test]
fn nothing_leaves_before_the_upstream_is_up_and_all_of_it_after() {
    let mut sim = Sim::new(Config::default());
    sim.manual = true;
    let a = sim.client("t", "/echo");
    sim.send(a, "early");
    sim.run();
    assert_eq!(sim.connecting.len(), 1, "one connect for the tenant");
    assert!(sim.texts(a).is_empty());
    let (id, _) = sim.connecting[0].clone();
    sim.accept(id);
    assert_eq!(sim.texts(a), vec!["early"]);
}

#[test]
fn replies_route_by_stream_even_with_identical_payloads() {
    let mut sim = Sim::new(Config::default());
    let a = sim.client("t", "/rpc");
    let b = sim.client("t", "/rpc");
    sim.send(a, &echo_rpc(1, "a"));
    sim.send(b, &echo_rpc(1, "b"));
    sim.run();
    assert!(sim.texts(a)[0].contains("\"a\""), "{:?}", sim.texts(a));
    assert!(sim.texts(b)[0].contains("\"b\""), "{:?}", sim.texts(b));
    assert_eq!(sim.open_sockets().len(), 1, "one upstream carries both");
}

#[test]
fn order_is_kept_per_stream_across_small_batches() {
    let mut sim = Sim::new(Config { max_batch_bytes: 64, ..Config::default() });
    let a = sim.client("t", "/echo");
    let want: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    for m in &want {
        sim.send(a, m);
    }
    sim.run();
    assert_eq!(sim.texts(a), want);
}

#[test]
fn batching_packs_queued_frames_and_can_be_switched_off() {
    for (batching, want) in [(true, vec![16]), (false, vec![1; 16])] {
        let mut sim = Sim::new(Config { batching, ..Config::default() });
        sim.manual = true;
        let ids: Vec<StreamId> = (0..8).map(|_| sim.client("t", "/echo")).collect();
        for id in &ids {
            sim.send(*id, "x");
        }
        sim.run();
        let (up, _) = sim.connecting[0].clone();
        sim.accept(up);
        // 8 opens + 8 messages
        assert_eq!(sim.frames_seen, want, "batching {batching}");
        assert_eq!(sim.mux.counters().frames_sent, 16);
    }
}

#[test]
fn batches_are_round_robin_so_a_chatty_stream_cannot_starve_others() {
    let mut sim = Sim::new(Config { max_batch_bytes: 200, ..Config::default() });
    sim.manual = true;
    let chatty = sim.client("t", "/echo");
    let quiet = sim.client("t", "/echo");
    for i in 0..50 {
        sim.send(chatty, &format!("c{i}"));
    }
    sim.send(quiet, "q");
    sim.run();
    let (up, _) = sim.connecting[0].clone();
    let msg = match sim.mux.poll_transmit(up, sim.now) {
        None => {
            sim.mux.handle_connected(up, sim.now);
            sim.mux.poll_transmit(up, sim.now)
        }
        other => other,
    };
    let Some(Transmit::Message(msg)) = msg else { panic!("a batch") };
    let streams: Vec<StreamId> = protocol::decode_message(&msg).expect("v").map(|f| f.expect("f").stream).collect();
    let first_quiet_data = streams.iter().filter(|s| **s == quiet).count();
    assert_eq!(first_quiet_data, 2, "the quiet stream's open and message ride in the first batch: {streams:?}");
}

#[test]
fn limits_refuse_with_typed_reasons() {
    let cfg = Config { max_message_bytes: 10, max_clients: 2, max_queued_frames_per_stream: 3, ..Config::default() };
    let mut sim = Sim::new(cfg);
    sim.manual = true;
    let a = sim.client("t", "/echo");
    let now = sim.now;
    assert_eq!(
        sim.mux.handle_client_message(a, true, vec![b'x'; 11], now),
        Err(Refused::TooLarge { size: 11, limit: 10 })
    );
    let _b = sim.client("t", "/echo");
    assert_eq!(sim.mux.open_client("t", "/echo", who(), "sub:u", None, now), Err(Refused::TooManyStreams));
    assert!(matches!(sim.mux.open_request("t", rpc("{}"), now), Ok(Route::Stream(_))), "requests are not clients");
    // The Open frame is queued already: two more fit, the fourth frame does not.
    sim.send(a, "1");
    sim.send(a, "2");
    assert_eq!(sim.mux.handle_client_message(a, true, b"3".to_vec(), now), Err(Refused::Backpressure));
    assert!(matches!(sim.mux.open_request("bad name", rpc("{}"), now), Err(Refused::BadTenant)));
}

#[test]
fn a_departed_client_gets_nothing_and_the_backend_is_told() {
    let mut sim = Sim::new(Config::default());
    sim.stalled.insert("t".into());
    let a = sim.client("t", "/echo");
    sim.send(a, "late reply");
    sim.run();
    let now = sim.now;
    sim.mux.handle_client_closed(a, 1000, "bye", now);
    sim.run();
    assert!(!sim.mux.is_open(a));
    assert_eq!(sim.mux.streams_held(), 0, "forgotten once its Close left");
    // A reply that still arrives for it is dropped and counted.
    let up = sim.open_sockets()[0];
    let mut msg = Vec::new();
    protocol::begin_message(&mut msg);
    protocol::encode_frame(&mut msg, protocol::FrameKind::Text, a, b"late reply").expect("small");
    sim.inject(up, &msg);
    assert_eq!(sim.mux.counters().dropped_deliveries, 1);
    assert!(sim.texts(a).is_empty());
}

#[test]
fn an_http_request_gets_its_response_then_the_stream_is_gone() {
    let mut sim = Sim::new(Config::default());
    let r = sim.request("t", &echo_rpc(7, "hi"));
    sim.run();
    assert!(response_body(sim.last(r)).contains("\"hi\""));
    assert!(!sim.mux.is_open(r));
    assert_eq!(sim.mux.streams_held(), 0);
    assert_eq!(sim.mux.counters().http_streams_opened, 1);
}

#[test]
fn upstream_loss_tells_every_stream_its_fate() {
    let mut sim = Sim::new(Config::default());
    sim.stalled.insert("t".into());
    let ws = sim.client("t", "/echo");
    let sent = sim.request("t", "{}");
    sim.run();
    let up = sim.open_sockets()[0];
    sim.manual = true;
    sim.drop_socket(up);
    match sim.last(ws) {
        Some(Delivery::Aborted { code: 1012, .. }) => {}
        other => panic!("client: {other:?}"),
    }
    match sim.last(sent) {
        Some(Delivery::Failed { status: 502, .. }) => {}
        other => panic!("request: {other:?}"),
    }
    // A request queued behind a failed connect never left: it goes directly instead.
    sim.advance(10_000);
    let queued = sim.request("t", "{}");
    sim.run();
    let (attempt, _) = sim.connecting[0].clone();
    sim.refuse(attempt);
    assert!(matches!(sim.last(queued), Some(Delivery::Fallback(_))), "{:?}", sim.last(queued));
    assert_eq!(sim.mux.streams_held(), 0);
}

#[test]
fn pings_are_answered_and_a_malformed_message_ends_the_upstream_with_1002() {
    let mut sim = Sim::new(Config::default());
    sim.stalled.insert("t".into());
    let ws = sim.client("t", "/echo");
    sim.run();
    let up = sim.open_sockets()[0];
    sim.inject(up, &protocol::single_frame_message(protocol::FrameKind::Ping, StreamId::SESSION, b"p"));
    assert_eq!(sim.frames_seen.last(), Some(&1), "the pong went out");
    sim.inject(up, &[protocol::VERSION, 0xff]);
    assert_eq!(sim.closed, vec![(up, 1002)], "the pump closes it as a protocol error");
    assert!(matches!(sim.last(ws), Some(Delivery::Aborted { code: 1012, .. })));
    assert!(sim.logs.iter().any(|l| l.contains("malformed")), "{:?}", sim.logs);
}

#[test]
fn a_backend_error_frame_reaches_the_stream_as_close_or_status() {
    let mut sim = Sim::new(Config::default());
    sim.stalled.insert("t".into());
    let ws = sim.client("t", "/echo");
    let r = sim.request("t", "{}");
    sim.run();
    let up = sim.open_sockets()[0];
    let mut msg = Vec::new();
    protocol::begin_message(&mut msg);
    for (id, code) in [(ws, 403), (r, 503)] {
        let e = ErrorFrame { code, message: "no".into() }.encode();
        protocol::encode_frame(&mut msg, protocol::FrameKind::Error, id, &e).expect("small");
    }
    sim.inject(up, &msg);
    assert!(matches!(sim.last(ws), Some(Delivery::Aborted { code: 1008, .. })), "{:?}", sim.last(ws));
    assert!(matches!(sim.last(r), Some(Delivery::Failed { status: 503, .. })), "{:?}", sim.last(r));
    assert_eq!(sim.open_sockets(), vec![up], "the upstream carries on");
}

#[test]
fn a_session_error_ends_the_upstream_and_every_stream_on_it_hears_its_fate() {
    let mut sim = Sim::new(Config::default());
    let ws = sim.client("t", "/echo");
    sim.run();
    let up = sim.open_sockets()[0];
    let e = ErrorFrame { code: 400, message: "unsupported protocol version".into() }.encode();
    sim.inject(up, &protocol::single_frame_message(protocol::FrameKind::Error, StreamId::SESSION, &e));
    assert_eq!(sim.closed, vec![(up, 1002)]);
    assert!(matches!(sim.last(ws), Some(Delivery::Aborted { code: 1012, .. })));
}

#[test]
fn reconnect_backoff_is_full_jitter_doubling_to_a_cap_and_resets_when_up() {
    let cfg = Config { reconnect_base_ms: 100, reconnect_max_ms: 1_000, ..Config::default() };
    let mut sim = Sim::new(cfg);
    sim.manual = true;
    let mut bounds = Vec::new();
    for attempt in 1..=8u32 {
        // Each failure ends the streams that waited; a new client wants the upstream again.
        let _ws = sim.client("t", "/echo");
        sim.run();
        assert_eq!(sim.connecting.len(), 1, "one attempt at a time");
        let (id, _) = sim.connecting[0].clone();
        let before = sim.now;
        sim.refuse(id);
        let _next = sim.client("t", "/echo");
        let wait = sim.mux.poll_timeout().expect("a retry is timed") - before;
        let bound = (100u64 << (attempt - 1)).min(1_000);
        assert!(wait <= bound, "attempt {attempt}: waited {wait} > bound {bound}");
        bounds.push(bound);
        sim.advance(wait);
        sim.got.clear();
    }
    assert_eq!(bounds, vec![100, 200, 400, 800, 1000, 1000, 1000, 1000]);
    let (id, _) = sim.connecting[0].clone();
    sim.accept(id);
    let before = sim.now;
    sim.drop_socket(id);
    let _again = sim.client("t", "/echo");
    let wait = sim.mux.poll_timeout().expect("backing off") - before;
    assert!(wait <= 100, "backoff restarts from the base after a success: {wait}");
    assert_eq!(sim.mux.counters().connect_attempts, 9);
    assert_eq!(sim.mux.counters().backend_connects, 1);
}

#[test]
fn jitter_spreads_delays_instead_of_repeating_one() {
    let mut delays = std::collections::BTreeSet::new();
    for seed in 1..50 {
        let mut sim = Sim::new(Config { seed, reconnect_base_ms: 1_000, ..Config::default() });
        sim.refusing.insert("t".into());
        sim.client("t", "/echo");
        sim.run();
        sim.client("t", "/echo");
        delays.insert(sim.mux.poll_timeout().expect("backing off"));
    }
    assert!(delays.len() > 40, "{delays:?}");
}

#[test]
fn requests_time_out_with_504_at_their_deadline() {
    let mut sim = Sim::new(Config { request_timeout_ms: 1_000, heartbeat_ms: 0, ..Config::default() });
    sim.stalled.insert("t".into());
    let a = sim.request("t", "{}");
    sim.advance(500);
    let b = sim.request("t", "{}");
    sim.advance(499);
    assert!(sim.last(a).is_none());
    sim.advance(1);
    assert!(matches!(sim.last(a), Some(Delivery::Failed { status: 504, .. })), "{:?}", sim.last(a));
    assert!(sim.mux.is_open(b));
    sim.advance(500);
    assert!(matches!(sim.last(b), Some(Delivery::Failed { status: 504, .. })));
    assert_eq!(sim.mux.counters().timeouts, 2);
    assert_eq!(sim.mux.streams_held(), 0);
}

#[test]
fn round_trips_are_measured_from_transmit_to_response() {
    let mut sim = Sim::new(Config::default());
    assert_eq!(sim.mux.rtt_percentiles(), None);
    sim.stalled.insert("t".into());
    for i in 0..100u64 {
        let r = sim.request("t", "{}");
        sim.run();
        let up = sim.open_sockets()[0];
        sim.now += i + 1;
        let res = Response { status: 200, content_type: String::new(), body: vec![] }.encode();
        sim.inject(up, &protocol::single_frame_message(protocol::FrameKind::Response, r, &res));
    }
    assert_eq!(sim.mux.rtt_percentiles(), Some((50, 99)));
    assert_eq!(sim.mux.upstream_stats(sim.now)[0].rtt_p50_ms, Some(68), "the link keeps its last 64");
    // The histogram of `/__metrics` counts all of them (1 to 100 ms), in fixed buckets.
    let h = sim.mux.rtt_histogram();
    assert_eq!((h.count(), h.sum_ms()), (100, 5050));
    let first: Vec<(&str, u64)> = h.cumulative().into_iter().take(6).collect();
    assert_eq!(first, [("0.005", 5), ("0.01", 10), ("0.025", 25), ("0.05", 50), ("0.1", 100), ("0.25", 100)]);
    assert_eq!(h.cumulative().last(), Some(&("+Inf", 100)));
}

/// A hand-over under traffic: the successor opens in another context, the old upstream
/// drains behind its barrier, and every message arrives once, in order.
#[test]
fn handover_drains_the_old_upstream_behind_a_barrier_and_loses_nothing() {
    let mut sim = Sim::new(Config { owner_lifetime_ms: 1_000, ..Config::default() });
    sim.here = Here::Request;
    let a = sim.client("t", "/echo");
    for i in 0..10 {
        sim.send(a, &format!("before{i}"));
    }
    sim.run();
    let first = sim.open_sockets()[0];
    // A client context comes by: the HTTP owner yields to it.
    let b = sim.client("t", "/echo");
    sim.here = Here::Client(b);
    sim.manual = true;
    sim.run();
    let (successor, _) = sim.connecting[0].clone();
    // Frames queued during the hand-over: requests may go at once; client frames wait.
    for i in 0..10 {
        sim.send(a, &format!("during{i}"));
    }
    let r = sim.request("t", &echo_rpc(1, "r"));
    sim.accept(successor);
    assert_eq!(sim.mux.counters().handovers, 1);
    assert!(response_body(sim.last(r)).contains("\"r\""));
    assert!(sim.closed.contains(&(first, 1000)), "the old upstream closed cleanly: {:?}", sim.closed);
    let want: Vec<String> =
        (0..10).map(|i| format!("before{i}")).chain((0..10).map(|i| format!("during{i}"))).collect();
    assert_eq!(sim.texts(a), want);
    assert_eq!(sim.mux.upstream_stats(sim.now)[0].owner, OwnerKind::WebSocket);
    // The backend's object saw the re-opens as its clients moving, not leaving (here the
    // old socket's close reached it first: its clients waited for their re-opens).
    let object = sim.object_counters("t");
    assert_eq!((object.adopted, object.lost), (2, 0), "{object:?}");
}

#[test]
fn an_old_upstream_lost_before_its_barrier_fails_only_what_it_carried() {
    let mut sim = Sim::new(Config::default());
    sim.here = Here::Request;
    let a = sim.client("t", "/echo");
    sim.run();
    let first = sim.open_sockets()[0];
    sim.stalled_sockets.insert(first);
    let b = sim.client("t", "/echo");
    sim.here = Here::Client(b);
    sim.run();
    assert_eq!(sim.open_sockets().len(), 2, "the old one drains (its barrier unanswered), the new one is current");
    sim.send(a, "a1");
    sim.send(b, "b1");
    sim.run();
    assert!(sim.texts(b).is_empty(), "client frames wait for the barrier");
    sim.drop_socket(first);
    assert!(matches!(sim.last(a), Some(Delivery::Aborted { code: 1012, .. })), "a's stream was on the old one");
    assert_eq!(sim.texts(b), vec!["b1"], "b's Open was still queued: it goes on the new one");
}

#[test]
fn a_failed_successor_leaves_the_current_upstream_alone() {
    let mut sim = Sim::new(Config::default());
    sim.here = Here::Request;
    let a = sim.client("t", "/echo");
    sim.run();
    let b = sim.client("t", "/echo");
    sim.here = Here::Client(b);
    sim.manual = true;
    sim.run();
    let (successor, _) = sim.connecting[0].clone();
    sim.refuse(successor);
    sim.send(a, "still here");
    sim.run();
    assert_eq!(sim.texts(a), vec!["still here"]);
    assert!(sim.mux.is_open(b));
}

#[test]
fn the_watchdog_trips_when_queued_frames_see_no_transmit() {
    let mut sim = Sim::new(Config { watchdog_ms: 1_000, ..Config::default() });
    let a = sim.client("t", "/echo");
    sim.run();
    let up = sim.open_sockets()[0];
    // The pump's context is gone: nothing polls this socket any more.
    sim.mux.handle_client_message(a, true, b"stuck".to_vec(), sim.now).expect("send");
    sim.now += 999;
    sim.timeout();
    assert_eq!(sim.mux.counters().watchdog_trips, 0);
    sim.now += 1;
    sim.timeout();
    assert_eq!(sim.mux.counters().watchdog_trips, 1);
    sim.manual = true;
    sim.run();
    assert_eq!(sim.abandoned, vec![up]);
    assert!(matches!(sim.last(a), Some(Delivery::Aborted { code: 1012, .. })));
}

#[test]
fn a_drain_whose_barrier_never_returns_ends_at_its_deadline() {
    let mut sim = Sim::new(Config { watchdog_ms: 1_000, ..Config::default() });
    sim.here = Here::Request;
    let a = sim.client("t", "/echo");
    sim.run();
    let first = sim.open_sockets()[0];
    sim.stalled_sockets.insert(first);
    let b = sim.client("t", "/echo");
    sim.here = Here::Client(b);
    sim.run();
    sim.send(a, "held");
    sim.advance(1_000);
    assert!(sim.closed.contains(&(first, 1011)), "{:?}", sim.closed);
    assert!(matches!(sim.last(a), Some(Delivery::Aborted { code: 1012, .. })), "a was on the old upstream");
    assert!(sim.mux.is_open(b));
}

#[test]
fn connects_whose_context_died_are_abandoned_after_the_watchdog_bound() {
    let mut sim = Sim::new(Config { watchdog_ms: 1_000, ..Config::default() });
    sim.manual = true;
    let a = sim.client("t", "/echo");
    sim.run();
    let (attempt, _) = sim.connecting[0].clone();
    sim.advance(1_000);
    assert_eq!(sim.abandoned, vec![attempt]);
    assert_eq!(sim.mux.counters().watchdog_trips, 1);
    assert!(matches!(sim.last(a), Some(Delivery::Aborted { code: 1012, .. })));
    assert!(!sim.mux.handle_connected(attempt, sim.now), "a late success is refused");
}

#[test]
fn an_idle_upstream_does_not_trip_the_watchdog_on_its_next_message() {
    let mut sim = Sim::new(Config { watchdog_ms: 1_000, ..Config::default() });
    let a = sim.client("t", "/echo");
    sim.run();
    sim.advance(60_000);
    sim.send(a, "after a long quiet");
    sim.run();
    assert_eq!(sim.mux.counters().watchdog_trips, 0);
    assert_eq!(sim.texts(a), vec!["after a long quiet"]);
}
