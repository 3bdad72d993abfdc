//! The abuse limits as the multiplexer applies them: connections per caller, client
//! rates, caller request rates, and the isolate-wide queue bound.

use super::*;

fn up(cfg: Config) -> Mux {
    let mut mux = Mux::new(cfg);
    let gen = mux.upstream_connecting(OwnerKind::WebSocket, None, 0);
    assert!(mux.upstream_up(gen, 0));
    mux
}

fn request() -> Request {
    Request {
        method: "POST".into(),
        path: "/rpc".into(),
        content_type: String::new(),
        identity: Identity::default(),
        body: b"{}".to_vec(),
    }
}

#[test]
fn a_caller_holds_at_most_its_connections_and_gets_them_back_when_clients_leave() {
    let mut mux = up(Config { max_connections_per_caller: 2, ..Config::default() });
    let a = mux.open_websocket("/echo", Identity::default(), "sub:alice", 0).expect("1");
    let _b = mux.open_websocket("/echo", Identity::default(), "sub:alice", 0).expect("2");
    assert_eq!(
        mux.open_websocket("/echo", Identity::default(), "sub:alice", 0),
        Err(Refused::TooManyConnections { limit: 2 })
    );
    assert!(mux.open_websocket("/echo", Identity::default(), "sub:bob", 0).is_ok(), "bob is not alice");
    mux.client_closed(a, 1000, "");
    assert!(mux.open_websocket("/echo", Identity::default(), "sub:alice", 0).is_ok(), "a's slot came back");
    // A stream the proxy ends (a Close delivered) gives its slot back too.
    let c = mux.open_websocket("/echo", Identity::default(), "sub:carol", 0).expect("c");
    while mux.poll_transmit(mux.current_gen(), 0).is_some() {}
    let mut close = Vec::new();
    protocol::begin_message(&mut close);
    encode_frame(&mut close, FrameKind::Close, c, &Close { code: 1000, reason: String::new() }.encode())
        .expect("small");
    mux.handle_upstream_message(mux.current_gen(), &close, 0).expect("valid");
    assert!(matches!(mux.poll_delivery(c), Some(Delivery::Close(_))));
    assert_eq!(mux.callers.connections("sub:carol"), 0);
    assert_eq!(mux.counters().refused, 1);
}

#[test]
fn a_flooding_client_is_refused_past_its_burst_and_others_are_not() {
    let mut mux = up(Config { client_messages_per_sec: 10, ..Config::default() });
    let flood = mux.open_websocket("/echo", Identity::default(), "sub:a", 0).expect("open");
    let calm = mux.open_websocket("/echo", Identity::default(), "sub:b", 0).expect("open");
    for i in 0..10 {
        mux.send(flood, true, b"x", 0).unwrap_or_else(|e| panic!("message {i} is within the burst: {e}"));
        while mux.poll_transmit(mux.current_gen(), 0).is_some() {}
    }
    assert_eq!(
        mux.send(flood, true, b"x", 0),
        Err(Refused::RateLimited { what: "messages", limit: 10, retry_after_ms: 100 })
    );
    mux.send(calm, true, b"hello", 0).expect("the other client has its own allowance");
    mux.send(flood, true, b"x", 100).expect("the rate refills: one per 100 ms");
    assert_eq!(mux.counters().rate_limited, 1);
}

#[test]
fn a_client_byte_rate_allows_one_largest_message_then_the_rate() {
    let mut mux = up(Config { client_bytes_per_sec: 100, max_message_bytes: 1_000, ..Config::default() });
    let a = mux.open_websocket("/echo", Identity::default(), "sub:a", 0).expect("open");
    mux.send(a, false, &[0; 1_000], 0).expect("a full bucket takes one largest message");
    let refused = mux.send(a, false, &[0; 50], 0);
    assert_eq!(refused, Err(Refused::RateLimited { what: "bytes", limit: 100, retry_after_ms: 500 }));
    mux.send(a, false, &[0; 50], 500).expect("refilled at 100 bytes/s");
}

#[test]
fn a_callers_http_requests_are_rate_limited_per_caller() {
    let mut mux = up(Config { caller_requests_per_sec: 3, ..Config::default() });
    for _ in 0..3 {
        mux.take_request("addr:192.0.2.1", 0).expect("within the burst");
    }
    match mux.take_request("addr:192.0.2.1", 0) {
        Err(Refused::RateLimited { what: "requests", limit: 3, retry_after_ms }) => assert_eq!(retry_after_ms, 334),
        other => panic!("expected a rate limit, got {other:?}"),
    }
    mux.take_request("addr:192.0.2.2", 0).expect("another address has its own allowance");
    mux.open_http(&request(), 0).expect("the request itself");
}

#[test]
fn the_isolate_wide_queue_bound_holds_for_an_empty_stream_queue_too() {
    let mut mux = up(Config { max_queued_bytes: 2_000, max_message_bytes: 1_500, ..Config::default() });
    let a = mux.open_websocket("/echo", Identity::default(), "sub:a", 0).expect("a");
    let b = mux.open_websocket("/echo", Identity::default(), "sub:b", 0).expect("b");
    while mux.poll_transmit(mux.current_gen(), 0).is_some() {}
    // Nothing leaves now (the upstream is held up): a's message fills most of the bound.
    mux.send(a, false, &[0; 1_500], 0).expect("fits the isolate bound");
    assert_eq!(
        mux.send(b, false, &[0; 1_500], 0),
        Err(Refused::Backpressure),
        "b's queue is empty, the isolate's is not"
    );
    assert!(mux.queued_bytes <= 2_000);
}

#[test]
fn max_clients_counts_clients_whose_close_has_not_left_yet() {
    let mut mux = Mux::new(Config { max_clients: 2, ..Config::default() });
    let a = mux.open_websocket("/echo", Identity::default(), "sub:a", 0).expect("1");
    let _b = mux.open_websocket("/echo", Identity::default(), "sub:b", 0).expect("2");
    mux.client_closed(a, 1000, "");
    // a's Close is still queued (no upstream): the backend would still count a's stream.
    assert_eq!(mux.open_websocket("/echo", Identity::default(), "sub:c", 0), Err(Refused::TooManyStreams));
    let gen = mux.upstream_connecting(OwnerKind::WebSocket, None, 0);
    assert!(mux.upstream_up(gen, 0));
    while mux.poll_transmit(gen, 0).is_some() {}
    assert!(mux.open_websocket("/echo", Identity::default(), "sub:c", 0).is_ok(), "a's Close left");
}

#[test]
fn max_clients_above_the_backends_stream_limit_is_a_config_error() {
    let too_many = (protocol::MAX_SESSION_STREAMS + 1).to_string();
    let e = Config::from_vars(|n| (n == "MAX_CLIENTS").then(|| too_many.clone())).expect_err("refused");
    assert!(e.contains("MAX_CLIENTS"), "{e}");
}
