//! The abuse limits as the multiplexer applies them: connections per caller, client
//! rates, caller request rates, and the isolate-wide queue bound.

use super::*;
use crate::sim::{rpc, who, Sim};

fn open(sim: &mut Sim, caller: &str) -> Result<StreamId, Refused> {
    let now = sim.now;
    sim.mux.open_client("t", "/echo", who(), caller, None, now)
}

#[test]
fn a_caller_holds_at_most_its_connections_and_gets_them_back_when_clients_leave() {
    let mut sim = Sim::new(Config { max_connections_per_caller: 2, ..Config::default() });
    let a = open(&mut sim, "sub:alice").expect("1");
    let _b = open(&mut sim, "sub:alice").expect("2");
    assert_eq!(open(&mut sim, "sub:alice"), Err(Refused::TooManyConnections { limit: 2 }));
    assert!(open(&mut sim, "sub:bob").is_ok(), "bob is not alice");
    sim.mux.handle_client_closed(a, 1000, "", sim.now);
    assert!(open(&mut sim, "sub:alice").is_ok(), "a's slot came back");
    // A stream the proxy ends (its upstream lost) gives its slot back too.
    let _c = open(&mut sim, "sub:carol").expect("c");
    sim.run();
    let up = sim.open_sockets()[0];
    sim.manual = true;
    sim.drop_socket(up);
    assert_eq!(sim.mux.callers.connections("sub:carol"), 0);
    assert_eq!(sim.mux.counters().refused, 1);
}

#[test]
fn a_flooding_client_is_refused_past_its_burst_and_others_are_not() {
    let mut sim = Sim::new(Config { client_messages_per_sec: 10, ..Config::default() });
    let flood = open(&mut sim, "sub:a").expect("open");
    let calm = open(&mut sim, "sub:b").expect("open");
    for i in 0..10 {
        sim.mux
            .handle_client_message(flood, true, b"x".to_vec(), sim.now)
            .unwrap_or_else(|e| panic!("{i} in burst: {e}"));
        sim.run();
    }
    assert_eq!(
        sim.mux.handle_client_message(flood, true, b"x".to_vec(), sim.now),
        Err(Refused::RateLimited { what: "messages", limit: 10, retry_after_ms: 100 })
    );
    sim.send(calm, "hello");
    sim.now += 100;
    sim.send(flood, "x");
    assert_eq!(sim.mux.counters().rate_limited, 1);
}

#[test]
fn a_client_byte_rate_allows_one_largest_message_then_the_rate() {
    let mut sim = Sim::new(Config { client_bytes_per_sec: 100, max_message_bytes: 1_000, ..Config::default() });
    let a = open(&mut sim, "sub:a").expect("open");
    let now = sim.now;
    sim.mux.handle_client_message(a, false, vec![0; 1_000], now).expect("a full bucket takes one largest message");
    let refused = sim.mux.handle_client_message(a, false, vec![0; 50], now);
    assert_eq!(refused, Err(Refused::RateLimited { what: "bytes", limit: 100, retry_after_ms: 500 }));
    sim.mux.handle_client_message(a, false, vec![0; 50], now + 500).expect("refilled at 100 bytes/s");
}

#[test]
fn a_callers_http_requests_are_rate_limited_per_caller() {
    let mut sim = Sim::new(Config { caller_requests_per_sec: 3, ..Config::default() });
    let now = sim.now;
    for _ in 0..3 {
        sim.mux.admit_request("addr:192.0.2.1", now).expect("within the burst");
    }
    match sim.mux.admit_request("addr:192.0.2.1", now) {
        Err(Refused::RateLimited { what: "requests", limit: 3, retry_after_ms }) => assert_eq!(retry_after_ms, 334),
        other => panic!("expected a rate limit, got {other:?}"),
    }
    sim.mux.admit_request("addr:192.0.2.2", now).expect("another address has its own allowance");
    assert!(matches!(sim.mux.open_request("t", rpc("{}"), now), Ok(Route::Stream(_))));
}

/// Upgrades come out of the caller's request allowance, each at `UPGRADE_COST`: a caller
/// that opens and closes sockets in a loop is refused with a retry time (429), another
/// caller is not, and the allowance refills.
#[test]
fn a_caller_opening_and_closing_sockets_in_a_loop_is_rate_limited() {
    let rate = 100;
    let mut sim = Sim::new(Config { caller_requests_per_sec: rate, ..Config::default() });
    let allowed = rate / quota::UPGRADE_COST;
    for i in 0..allowed {
        let id = open(&mut sim, "sub:churn").unwrap_or_else(|e| panic!("upgrade {i} within the burst: {e}"));
        sim.mux.handle_client_closed(id, 1000, "", sim.now);
    }
    match open(&mut sim, "sub:churn") {
        Err(Refused::RateLimited { what: "requests", limit, retry_after_ms }) => {
            assert_eq!((limit, retry_after_ms), (rate, 1_000 * quota::UPGRADE_COST / rate));
        }
        other => panic!("expected a rate limit, got {other:?}"),
    }
    assert!(open(&mut sim, "sub:calm").is_ok(), "another caller has its own allowance");
    sim.now += 1_000 * quota::UPGRADE_COST / rate;
    assert!(open(&mut sim, "sub:churn").is_ok(), "refilled");
    assert_eq!(sim.mux.counters().rate_limited, 1);
}

#[test]
fn the_isolate_wide_queue_bound_holds_for_an_empty_stream_queue_too() {
    let mut sim = Sim::new(Config { max_queued_bytes: 2_000, max_message_bytes: 1_500, ..Config::default() });
    sim.manual = true;
    let a = open(&mut sim, "sub:a").expect("a");
    let b = open(&mut sim, "sub:b").expect("b");
    let now = sim.now;
    // Nothing leaves (no upstream yet): a's message fills most of the bound.
    sim.mux.handle_client_message(a, false, vec![0; 1_500], now).expect("fits the isolate bound");
    assert_eq!(
        sim.mux.handle_client_message(b, false, vec![0; 1_500], now),
        Err(Refused::Backpressure),
        "b's queue holds only its Open, the isolate's is full"
    );
    assert!(sim.mux.queued_bytes <= 2_000);
}

#[test]
fn max_clients_counts_clients_whose_close_has_not_left_yet() {
    let mut sim = Sim::new(Config { max_clients: 2, ..Config::default() });
    sim.manual = true;
    let a = open(&mut sim, "sub:a").expect("1");
    let _b = open(&mut sim, "sub:b").expect("2");
    sim.mux.handle_client_closed(a, 1000, "", sim.now);
    // a's Close is still queued (no upstream): the backend would still count a's stream.
    assert_eq!(open(&mut sim, "sub:c"), Err(Refused::TooManyStreams));
    sim.run();
    let (up, _) = sim.connecting[0].clone();
    sim.accept(up);
    assert!(open(&mut sim, "sub:c").is_ok(), "a's Close left");
}

#[test]
fn one_tenant_carries_at_most_the_backend_sessions_stream_limit() {
    let mut sim = Sim::new(Config {
        max_clients: 20_000,
        max_streams: 30_000,
        max_connections_per_caller: 0,
        caller_requests_per_sec: 0,
        ..Config::default()
    });
    sim.manual = true;
    for _ in 0..protocol::MAX_SESSION_STREAMS {
        open(&mut sim, "sub:a").expect("within the session limit");
    }
    assert_eq!(open(&mut sim, "sub:a"), Err(Refused::TooManyStreams));
    let now = sim.now;
    assert!(sim.mux.open_client("u", "/echo", who(), "sub:a", None, now).is_ok(), "another tenant has its own session");
}

/// Small requests that ask for large replies: past its reply budget a client is sent
/// away (1008) and what it was still owed is dropped, the backend is told it left, and
/// another client of the same upstream is not touched.
#[test]
fn a_client_owed_more_than_its_reply_budget_is_sent_away() {
    let mut sim = Sim::new(Config { client_reply_bytes_per_sec: 1_000, ..Config::default() });
    let greedy = open(&mut sim, "sub:greedy").expect("open");
    let calm = open(&mut sim, "sub:calm").expect("open");
    let big = "x".repeat(900);
    sim.send(greedy, &big);
    sim.run();
    assert_eq!(sim.texts(greedy), vec![big.clone()], "one reply within the budget");
    sim.send(greedy, &big);
    sim.send(greedy, &big);
    sim.run();
    let got = sim.got.get(&greedy).cloned().unwrap_or_default();
    match got.last() {
        Some(Delivery::Refused { code: 1008, reason }) => assert!(reason.contains("1000 bytes per second"), "{reason}"),
        other => panic!("expected the client to be sent away, got {other:?}"),
    }
    assert_eq!(sim.texts(greedy).len(), 1, "nothing past the budget was delivered");
    // The glue closes the client and reports it: the backend is told with a Close.
    sim.mux.handle_client_closed(greedy, 1008, "reply rate exceeded", sim.now);
    sim.run();
    assert_eq!(sim.mux.streams_held(), 1, "the greedy stream is gone once its Close went out");
    sim.send(calm, "hello");
    sim.run();
    assert_eq!(sim.texts(calm), vec!["hello"]);
    assert_eq!(sim.mux.counters().rate_limited, 1);
    // The budget refills.
    sim.now += 1_000;
    sim.send(calm, &big);
    sim.run();
    assert_eq!(sim.texts(calm).len(), 2);
}
