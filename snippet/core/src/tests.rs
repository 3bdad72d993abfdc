use super::*;
use protocol::{decode_message, single_frame_message};

/// A scripted backend: decodes every batch the mux sends and answers each data frame
/// with an echo, each request with a 200 carrying the request body.
fn echo_backend(msg: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    protocol::begin_message(&mut out);
    let mut frames = 0;
    for f in decode_message(msg).expect("version") {
        let f = f.expect("well-formed frame");
        frames += 1;
        match f.kind {
            FrameKind::Text | FrameKind::Binary => {
                encode_frame(&mut out, f.kind, f.stream, f.payload).expect("small");
            }
            FrameKind::Request => {
                let req = Request::decode(f.payload).expect("request");
                let res = Response { status: 200, content_type: req.content_type, body: req.body };
                encode_frame(&mut out, FrameKind::Response, f.stream, &res.encode()).expect("small");
            }
            _ => {}
        }
    }
    (out, frames)
}

/// Pumps everything queued through the echo backend. Returns the number of frames per
/// upstream message the backend saw.
fn pump(mux: &mut Mux) -> Vec<usize> {
    let mut sizes = Vec::new();
    while let Some(msg) = mux.poll_transmit(mux.current_gen(), 0) {
        let (reply, frames) = echo_backend(&msg);
        sizes.push(frames);
        mux.handle_upstream_message(mux.current_gen(), &reply, 0).expect("valid reply");
    }
    sizes
}

fn drain(mux: &mut Mux, id: StreamId) -> Vec<Delivery> {
    std::iter::from_fn(|| mux.poll_delivery(id)).collect()
}

/// A `POST /rpc` request with `body` from an anonymous caller.
fn rpc_request(body: impl Into<Vec<u8>>) -> Request {
    Request {
        method: "POST".into(),
        path: "/rpc".into(),
        content_type: String::new(),
        identity: Identity::default(),
        body: body.into(),
    }
}

fn up(cfg: Config) -> Mux {
    let mut mux = Mux::new(cfg);
    let gen = mux.upstream_connecting(OwnerKind::WebSocket, None, 0);
    assert!(mux.upstream_up(gen, 0));
    mux
}

#[test]
fn nothing_leaves_before_the_upstream_is_up_and_all_of_it_after() {
    let mut mux = Mux::new(Config::default());
    let a = mux.open_websocket("/echo", Identity::default(), "sub:t", 0).expect("open");
    mux.send(a, true, b"early", 0).expect("send");
    assert!(mux.poll_transmit(mux.current_gen(), 0).is_none());
    let gen = mux.upstream_connecting(OwnerKind::WebSocket, None, 0);
    assert!(mux.poll_transmit(mux.current_gen(), 0).is_none());
    assert!(mux.upstream_up(gen, 0));
    pump(&mut mux);
    assert_eq!(drain(&mut mux, a), vec![Delivery::Text("early".into())]);
}

#[test]
fn replies_route_by_stream_even_with_identical_payloads() {
    let mut mux = up(Config::default());
    let a = mux.open_websocket("/rpc", Identity::default(), "sub:t", 0).expect("open");
    let b = mux.open_websocket("/rpc", Identity::default(), "sub:t", 0).expect("open");
    mux.send(a, true, br#"{"id":1}"#, 0).expect("send");
    mux.send(b, true, br#"{"id":1}"#, 0).expect("send");
    mux.send(b, false, &[0, 1, 2], 0).expect("send");
    pump(&mut mux);
    let mut woken = mux.take_woken();
    woken.sort();
    assert_eq!(woken, vec![a, b]);
    assert_eq!(drain(&mut mux, a), vec![Delivery::Text(r#"{"id":1}"#.into())]);
    assert_eq!(drain(&mut mux, b), vec![Delivery::Text(r#"{"id":1}"#.into()), Delivery::Binary(vec![0, 1, 2])]);
}

#[test]
fn order_is_kept_per_stream() {
    let mut mux = up(Config { max_batch_bytes: 64, ..Config::default() });
    let a = mux.open_websocket("/echo", Identity::default(), "sub:t", 0).expect("open");
    for i in 0..100u32 {
        mux.send(a, false, &i.to_be_bytes(), 0).expect("send");
    }
    pump(&mut mux);
    let got: Vec<Delivery> = drain(&mut mux, a);
    let want: Vec<Delivery> = (0..100u32).map(|i| Delivery::Binary(i.to_be_bytes().to_vec())).collect();
    assert_eq!(got, want);
}

#[test]
fn batching_packs_queued_frames_and_can_be_switched_off() {
    let mut on = up(Config::default());
    let mut off = up(Config { batching: false, ..Config::default() });
    for mux in [&mut on, &mut off] {
        let ids: Vec<_> =
            (0..8).map(|_| mux.open_websocket("/echo", Identity::default(), "sub:t", 0).expect("open")).collect();
        for id in &ids {
            mux.send(*id, true, b"x", 0).expect("send");
        }
    }
    // 8 opens + 8 messages
    assert_eq!(pump(&mut on), vec![16]);
    assert_eq!(pump(&mut off), vec![1; 16]);
    assert_eq!(on.counters().batches_sent, 1);
    assert_eq!(off.counters().batches_sent, 16);
    assert_eq!(on.counters().frames_sent, 16);
}

#[test]
fn batches_are_round_robin_so_a_chatty_stream_cannot_starve_others() {
    // Room for about 3 small frames per batch.
    let mut mux = up(Config { max_batch_bytes: 1 + 3 * protocol::frame_len(4), ..Config::default() });
    let chatty = mux.open_websocket("/echo", Identity::default(), "sub:t", 0).expect("open");
    let quiet = mux.open_websocket("/echo", Identity::default(), "sub:t", 0).expect("open");
    pump(&mut mux);
    for _ in 0..50 {
        mux.send(chatty, true, b"spam", 0).expect("send");
    }
    mux.send(quiet, true, b"hi!!", 0).expect("send");
    let first = mux.poll_transmit(mux.current_gen(), 0).expect("batch");
    let streams: Vec<StreamId> = decode_message(&first).expect("v").map(|f| f.expect("frame").stream).collect();
    assert!(streams.contains(&quiet), "the quiet stream rides in the first batch: {streams:?}");
}

#[test]
fn limits_refuse_with_typed_reasons() {
    let mut mux = Mux::new(Config {
        max_message_bytes: 8,
        max_streams: 2,
        // Room for the Open frame (path "/echo" + an empty identity) and two messages.
        max_queued_bytes_per_stream: protocol::frame_len(2 + 5 + 14) + 2 * protocol::frame_len(8),
        ..Config::default()
    });
    let a = mux.open_websocket("/echo", Identity::default(), "sub:t", 0).expect("open");
    assert_eq!(mux.send(a, false, &[0; 9], 0), Err(Refused::TooLarge { size: 9, limit: 8 }));
    mux.send(a, false, &[0; 8], 0).expect("fits");
    mux.send(a, false, &[0; 8], 0).expect("fits");
    assert_eq!(mux.send(a, false, &[0; 8], 0), Err(Refused::Backpressure));
    let _b = mux.open_websocket("/echo", Identity::default(), "sub:t", 0).expect("second");
    assert_eq!(mux.open_websocket("/echo", Identity::default(), "sub:t", 0), Err(Refused::TooManyStreams));
    assert_eq!(mux.send(StreamId(99), true, b"", 0), Err(Refused::UnknownStream));
}

#[test]
fn a_departed_client_gets_nothing_and_the_backend_is_told() {
    let mut mux = up(Config::default());
    let a = mux.open_websocket("/echo", Identity::default(), "sub:t", 0).expect("open");
    mux.send(a, true, b"bye", 0).expect("send");
    mux.client_closed(a, 1000, "done");
    assert!(!mux.is_open(a));
    let msg = mux.poll_transmit(mux.current_gen(), 0).expect("batch");
    let kinds: Vec<FrameKind> = decode_message(&msg).expect("v").map(|f| f.expect("f").kind).collect();
    assert_eq!(kinds, vec![FrameKind::Open, FrameKind::Text, FrameKind::Close]);
    let late = single_frame_message(FrameKind::Text, a, b"late");
    mux.handle_upstream_message(mux.current_gen(), &late, 0).expect("valid");
    assert_eq!(mux.poll_delivery(a), None);
    assert_eq!(mux.counters().dropped_deliveries, 1);
    assert_eq!(mux.open_streams(), (0, 0));
}

#[test]
fn http_request_gets_its_response_then_the_stream_is_gone() {
    let mut mux = up(Config::default());
    let req = Request {
        method: "POST".into(),
        path: "/rpc".into(),
        content_type: "application/json".into(),
        identity: Identity::default(),
        body: b"{}".to_vec(),
    };
    let id = mux.open_http(&req, 0).expect("open");
    assert_eq!(mux.open_streams(), (0, 1));
    pump(&mut mux);
    let res = drain(&mut mux, id);
    assert_eq!(
        res,
        vec![Delivery::Response(Response {
            status: 200,
            content_type: "application/json".into(),
            body: b"{}".to_vec()
        })]
    );
    assert_eq!(mux.open_streams(), (0, 0));
}

#[test]
fn upstream_loss_tells_every_stream_its_fate() {
    let mut mux = up(Config::default());
    let ws = mux.open_websocket("/echo", Identity::default(), "sub:t", 0).expect("open");
    let req = rpc_request(b"{}".to_vec());
    let sent = mux.open_http(&req, 0).expect("open");
    assert!(mux.poll_transmit(mux.current_gen(), 5).is_some(), "the first request leaves");
    let unsent = mux.open_http(&req, 6).expect("open");
    mux.upstream_down(mux.current_gen(), "socket closed", 10);
    assert_eq!(mux.upstream(), Upstream::Down);
    assert!(mux.poll_transmit(mux.current_gen(), 10).is_none());
    match drain(&mut mux, ws).as_slice() {
        [Delivery::Aborted { code, .. }] => assert_eq!(*code, 1012),
        other => panic!("ws stream got {other:?}"),
    }
    match drain(&mut mux, sent).as_slice() {
        [Delivery::Failed { status: 502, reason, detail }] => {
            assert!(reason.contains("may or may not have run"));
            assert_eq!(detail, "socket closed", "the detail is for the log, not the client");
        }
        other => panic!("sent request got {other:?}"),
    }
    // Never left the isolate: safe to send directly instead.
    assert_eq!(drain(&mut mux, unsent), vec![Delivery::Fallback(req)]);
    assert_eq!(mux.counters().backend_disconnects, 1);
    assert_eq!(mux.open_streams(), (0, 0));
}

#[test]
fn pings_are_answered_and_malformed_messages_are_session_errors() {
    let mut mux = up(Config::default());
    let ping = single_frame_message(FrameKind::Ping, StreamId::SESSION, b"12345678");
    mux.handle_upstream_message(mux.current_gen(), &ping, 0).expect("valid");
    let msg = mux.poll_transmit(mux.current_gen(), 0).expect("pong");
    let f = decode_message(&msg).expect("v").next().expect("one").expect("ok");
    assert_eq!((f.kind, f.payload), (FrameKind::Pong, &b"12345678"[..]));
    assert!(mux.handle_upstream_message(mux.current_gen(), &[7, 7], 0).is_err());
    assert!(mux.handle_upstream_message(mux.current_gen(), &[protocol::VERSION, 99], 0).is_err());
}

#[test]
fn a_backend_error_frame_reaches_the_stream_as_close_or_status() {
    let mut mux = up(Config::default());
    let ws = mux.open_websocket("/nope", Identity::default(), "sub:t", 0).expect("open");
    let err = ErrorFrame { code: 404, message: "no service \"/nope\"".into() }.encode();
    mux.handle_upstream_message(mux.current_gen(), &single_frame_message(FrameKind::Error, ws, &err), 0).expect("ok");
    match drain(&mut mux, ws).as_slice() {
        [Delivery::Aborted { code: 1011, reason: "refused by the backend", detail }] => {
            assert!(detail.contains("no service"), "the backend's message is for the log: {detail}")
        }
        other => panic!("got {other:?}"),
    }
    assert_eq!(mux.counters().errors, 1);
    // An authorization refusal closes with 1008 (policy), a busy backend with 1013.
    for (code, close) in [(403, 1008), (401, 1008), (503, 1013)] {
        let ws = mux.open_websocket("/rpc", Identity::default(), "sub:t", 0).expect("open");
        let err = ErrorFrame { code, message: "m".into() }.encode();
        mux.handle_upstream_message(mux.current_gen(), &single_frame_message(FrameKind::Error, ws, &err), 0)
            .expect("ok");
        assert!(matches!(drain(&mut mux, ws).as_slice(), [Delivery::Aborted { code: c, .. }] if *c == close), "{code}");
    }
    assert_eq!(json_string("a\"b\\\n\u{1}"), r#""a\"b\\\n\u0001""#);
}

#[test]
fn a_session_error_ends_the_upstream_and_every_stream_on_it_hears_its_fate() {
    let mut mux = up(Config::default());
    let ws = mux.open_websocket("/echo", Identity::default(), "sub:t", 0).expect("open");
    let sent = mux.open_http(&rpc_request(b"{}".to_vec()), 0).expect("open");
    assert!(mux.poll_transmit(mux.current_gen(), 0).is_some());
    // What a backend of another protocol version answers: one session-level error.
    let err = ErrorFrame { code: 400, message: "unsupported protocol version 1 (this side speaks 2)".into() }.encode();
    mux.handle_upstream_message(mux.current_gen(), &single_frame_message(FrameKind::Error, StreamId::SESSION, &err), 0)
        .expect("ok");
    let logged = mux.take_session_errors();
    assert_eq!(
        logged,
        vec!["backend session error 400: unsupported protocol version 1 (this side speaks 2)".to_owned()]
    );
    assert!(mux.take_session_errors().is_empty());
    assert_eq!(mux.counters().errors, 1);
    assert_eq!(mux.upstream(), Upstream::Down, "not left up, with streams waiting on it");
    assert_eq!(mux.gen_state(mux.current_gen()), GenState::Retired);
    match drain(&mut mux, ws).as_slice() {
        [Delivery::Aborted { code: 1012, detail, .. }] => assert!(detail.contains("protocol version")),
        other => panic!("ws stream got {other:?}"),
    }
    assert!(matches!(drain(&mut mux, sent).as_slice(), [Delivery::Failed { status: 502, .. }]));
    assert!(mux.next_connect_at().is_some(), "a fresh upstream is tried after the backoff");
}

#[test]
fn client_close_codes_are_reciprocated_or_answered_with_1002() {
    for valid in [1000, 1001, 1002, 1003, 1007, 1008, 1011, 1014, 3000, 4000, 4999] {
        assert_eq!(client_close(valid), (valid, valid), "{valid}");
    }
    assert_eq!(client_close(1005), (1000, 1000), "no code sent");
    assert_eq!(client_close(1006), (1001, 1001), "connection dropped");
    for invalid in [0, 1, 999, 1004, 1015, 1016, 2000, 2999, 5000, u16::MAX] {
        assert_eq!(client_close(invalid), (1002, 1002), "{invalid}");
    }
}

#[test]
fn reconnect_backoff_is_full_jitter_doubling_to_a_cap_and_resets_when_up() {
    let cfg = Config { reconnect_base_ms: 100, reconnect_max_ms: 1_000, ..Config::default() };
    let mut mux = Mux::new(cfg);
    assert!(mux.can_connect(0), "the first attempt needs no wait");
    let mut now = 0;
    let mut bounds = Vec::new();
    for attempt in 1..=8u32 {
        mux.upstream_connecting(OwnerKind::Http, None, now);
        assert!(!mux.can_connect(now), "one attempt at a time");
        mux.upstream_down(mux.current_gen(), "refused", now);
        let wait = mux.next_connect_at().expect("backing off") - now;
        let bound = (100u64 << (attempt - 1)).min(1_000);
        assert!(wait <= bound, "attempt {attempt}: waited {wait} > bound {bound}");
        bounds.push(bound);
        assert!(mux.should_fall_back(now) || wait == 0);
        assert_eq!(mux.poll_timeout(), Some(now + wait));
        now += wait;
        assert!(mux.can_connect(now));
    }
    assert_eq!(bounds, vec![100, 200, 400, 800, 1000, 1000, 1000, 1000]);
    let gen = mux.upstream_connecting(OwnerKind::Http, None, now);
    assert!(mux.upstream_up(gen, now));
    assert_eq!(mux.next_connect_at(), None);
    assert!(!mux.should_fall_back(now));
    mux.upstream_down(mux.current_gen(), "lost", now);
    assert!(mux.next_connect_at().expect("backing off") - now <= 100, "backoff restarts from the base after a success");
    assert_eq!(mux.counters().connect_attempts, 9);
    assert_eq!(mux.counters().backend_connects, 1);
}

#[test]
fn jitter_spreads_delays_instead_of_repeating_one() {
    let mut delays = std::collections::BTreeSet::new();
    for seed in 1..50 {
        let mut mux = Mux::new(Config { seed, reconnect_base_ms: 1_000, ..Config::default() });
        mux.upstream_connecting(OwnerKind::Http, None, 0);
        mux.upstream_down(mux.current_gen(), "refused", 0);
        delays.insert(mux.next_connect_at().expect("backing off"));
    }
    assert!(delays.len() > 40, "{delays:?}");
}

#[test]
fn requests_time_out_with_504_at_their_deadline() {
    let mut mux = up(Config { request_timeout_ms: 1_000, ..Config::default() });
    let req = rpc_request(vec![]);
    let a = mux.open_http(&req, 0).expect("open");
    let b = mux.open_http(&req, 500).expect("open");
    assert_eq!(mux.poll_timeout(), Some(1_000));
    mux.handle_timeout(999);
    assert!(mux.take_woken().is_empty());
    mux.handle_timeout(1_000);
    assert_eq!(mux.take_woken(), vec![a]);
    match drain(&mut mux, a).as_slice() {
        [Delivery::Failed { status: 504, .. }] => {}
        other => panic!("got {other:?}"),
    }
    assert_eq!(mux.poll_timeout(), Some(1_500));
    assert!(mux.is_open(b));
    assert_eq!(mux.counters().timeouts, 1);
    // The expired request's frame never leaves; the live one does.
    let msg = mux.poll_transmit(mux.current_gen(), 1_000).expect("batch");
    let streams: Vec<StreamId> = decode_message(&msg).expect("v").map(|f| f.expect("f").stream).collect();
    assert_eq!(streams, vec![b]);
}

#[test]
fn round_trips_are_measured_from_transmit_to_response() {
    let mut mux = up(Config::default());
    assert_eq!(mux.rtt_percentiles(), None);
    for i in 0..100u64 {
        let req = rpc_request(vec![]);
        let id = mux.open_http(&req, i * 10).expect("open");
        let msg = mux.poll_transmit(mux.current_gen(), i * 10).expect("batch");
        let (reply, _) = echo_backend(&msg);
        mux.handle_upstream_message(mux.current_gen(), &reply, i * 10 + i + 1).expect("valid");
        assert!(matches!(mux.poll_delivery(id), Some(Delivery::Response(_))));
    }
    assert_eq!(mux.rtt_percentiles(), Some((51, 99)));
}

#[test]
fn client_and_queued_frame_limits() {
    let mut mux = Mux::new(Config { max_clients: 2, max_queued_frames_per_stream: 3, ..Config::default() });
    let a = mux.open_websocket("/echo", Identity::default(), "sub:t", 0).expect("1");
    let _b = mux.open_websocket("/echo", Identity::default(), "sub:t", 0).expect("2");
    assert_eq!(mux.open_websocket("/echo", Identity::default(), "sub:t", 0), Err(Refused::TooManyStreams));
    let req = rpc_request(vec![]);
    assert!(mux.open_http(&req, 0).is_ok(), "HTTP requests are not clients");
    // The Open frame is queued already: two more fit, the fourth frame does not.
    mux.send(a, true, b"1", 0).expect("fits");
    mux.send(a, true, b"2", 0).expect("fits");
    assert_eq!(mux.send(a, true, b"3", 0), Err(Refused::Backpressure));
}

#[test]
fn fallback_url_sits_beside_the_mux_endpoint() {
    assert_eq!(http_base("ws://127.0.0.1:8788/db/default/mux"), "http://127.0.0.1:8788/db/default");
    assert_eq!(http_base("wss://b.example.com/db/t/mux/"), "https://b.example.com/db/t");
}

/// Like `echo_backend`, and answers pings: one socket of an in-order backend.
fn in_order_backend(msg: &[u8]) -> Vec<u8> {
    let (mut reply, _) = echo_backend(msg);
    for f in decode_message(msg).expect("version") {
        let f = f.expect("frame");
        if f.kind == FrameKind::Ping {
            encode_frame(&mut reply, FrameKind::Pong, f.stream, f.payload).expect("small");
        }
    }
    reply
}

fn texts(ds: &[Delivery]) -> Vec<String> {
    ds.iter()
        .map(|d| match d {
            Delivery::Text(t) => t.clone(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn handover_drains_the_old_upstream_behind_a_barrier_and_loses_nothing() {
    let cfg = Config { owner_lifetime_ms: 1_000, ..Config::default() };
    let mut mux = Mux::new(cfg);
    let g1 = mux.upstream_connecting(OwnerKind::Http, None, 0);
    assert!(mux.upstream_up(g1, 0));
    let a = mux.open_websocket("/echo", Identity::default(), "sub:t", 0).expect("open");
    for i in 0..5 {
        mux.send(a, true, format!("m{i}").as_bytes(), 0).expect("send");
    }
    // Sent on the old upstream; its replies are still in flight.
    let in_flight_1 = mux.poll_transmit(g1, 10).expect("batch");

    assert!(!mux.wants_handover(OwnerKind::Http, 999), "an HTTP owner keeps it for its lifetime");
    assert!(mux.wants_handover(OwnerKind::Http, 1_000));
    let g2 = mux.begin_handover(OwnerKind::WebSocket, Some(a), 1_000).expect("hand-over starts");
    assert_eq!(mux.begin_handover(OwnerKind::Http, None, 1_000), None, "one at a time");
    mux.send(a, true, b"m5", 0).expect("send");
    let in_flight_2 = mux.poll_transmit(g1, 1_001).expect("still the current upstream until the successor is up");
    assert_eq!(mux.gen_state(g2), GenState::Connecting);

    assert!(mux.upstream_up(g2, 1_002));
    assert_eq!((mux.gen_state(g1), mux.gen_state(g2)), (GenState::Draining, GenState::Current));
    assert_eq!(mux.owner(), OwnerKind::WebSocket);
    mux.send(a, true, b"m6", 0).expect("send");
    let req = rpc_request(b"r".to_vec());
    let r = mux.open_http(&req, 1_003).expect("open");

    // The old upstream carries only its barrier; the new one HTTP at once, WebSocket held.
    let barrier = mux.poll_transmit(g1, 1_004).expect("barrier");
    let kinds: Vec<FrameKind> = decode_message(&barrier).expect("v").map(|f| f.expect("f").kind).collect();
    assert_eq!(kinds, vec![FrameKind::Ping]);
    assert_eq!(mux.poll_transmit(g1, 1_004), None);
    let http = mux.poll_transmit(g2, 1_004).expect("http flows");
    let streams: Vec<StreamId> = decode_message(&http).expect("v").map(|f| f.expect("f").stream).collect();
    assert_eq!(streams, vec![r]);
    assert_eq!(mux.poll_transmit(g2, 1_004), None, "m6 waits for the barrier");
    mux.handle_upstream_message(g2, &in_order_backend(&http), 1_005).expect("ok");
    assert!(matches!(mux.poll_delivery(r), Some(Delivery::Response(_))));

    // The old socket answers in order: its replies, then the barrier's pong.
    for msg in [&in_flight_1, &in_flight_2, &barrier] {
        mux.handle_upstream_message(g1, &in_order_backend(msg), 1_006).expect("ok");
    }
    assert_eq!(mux.gen_state(g1), GenState::Retired, "its owner closes it now");
    let reopened = mux.poll_transmit(g2, 1_007).expect("stream moves over");
    let frames: Vec<(FrameKind, Vec<u8>)> =
        decode_message(&reopened).expect("v").map(|f| f.map(|f| (f.kind, f.payload.to_vec())).expect("f")).collect();
    assert_eq!(
        frames[0],
        (FrameKind::Open, Open { path: "/echo".into(), identity: Identity::default() }.encode()),
        "re-opened before its data"
    );
    assert_eq!(frames[1], (FrameKind::Text, b"m6".to_vec()));
    mux.handle_upstream_message(g2, &in_order_backend(&reopened), 1_008).expect("ok");

    let want: Vec<String> = (0..7).map(|i| format!("m{i}")).collect();
    assert_eq!(texts(&drain(&mut mux, a)), want, "every message answered, in order");
    assert_eq!(mux.counters().handovers, 1);
    assert_eq!(mux.counters().backend_connects, 1, "a hand-over is not a (re)connect");
    assert_eq!(mux.counters().dropped_deliveries, 0);
}

#[test]
fn an_old_upstream_lost_before_its_barrier_fails_only_what_it_carried() {
    let mut mux = Mux::new(Config::default());
    let owner_stream = mux.open_websocket("/echo", Identity::default(), "sub:t", 0).expect("open");
    let g1 = mux.upstream_connecting(OwnerKind::WebSocket, Some(owner_stream), 0);
    assert!(mux.upstream_up(g1, 0));
    let a = mux.open_websocket("/echo", Identity::default(), "sub:t", 0).expect("open");
    let req = rpc_request(vec![]);
    let sent_on_old = mux.open_http(&req, 0).expect("open");
    mux.poll_transmit(g1, 1).expect("batch");
    assert!(!mux.wants_handover(OwnerKind::Http, 2), "a connected WebSocket owner keeps it");
    mux.upstream_down(g1 + 100, "stale generations are ignored", 2);
    assert_eq!(mux.upstream(), Upstream::Up);

    mux.client_closed(owner_stream, 1001, "gone");
    assert!(mux.wants_handover(OwnerKind::Http, 3), "an orphaned owner is replaced by anyone");
    let g2 = mux.begin_handover(OwnerKind::Http, None, 3).expect("starts");
    assert!(mux.upstream_up(g2, 4));
    mux.upstream_down(g1, "old socket closed", 5);
    match drain(&mut mux, a).as_slice() {
        [Delivery::Aborted { code, .. }] => assert_eq!(*code, 1012),
        other => panic!("ws stream on the old upstream got {other:?}"),
    }
    match drain(&mut mux, sent_on_old).as_slice() {
        [Delivery::Failed { status: 502, .. }] => {}
        other => panic!("request sent on the old upstream got {other:?}"),
    }
    // The new upstream carries on.
    assert_eq!(mux.gen_state(g2), GenState::Current);
    let b = mux.open_websocket("/echo", Identity::default(), "sub:t", 0).expect("open");
    mux.send(b, true, b"still here", 0).expect("send");
    let msg = mux.poll_transmit(g2, 6).expect("batch");
    mux.handle_upstream_message(g2, &in_order_backend(&msg), 7).expect("ok");
    assert_eq!(texts(&drain(&mut mux, b)), vec!["still here".to_owned()]);
}

#[test]
fn a_failed_successor_leaves_the_current_upstream_alone() {
    let mut mux = Mux::new(Config::default());
    let g1 = mux.upstream_connecting(OwnerKind::Http, None, 0);
    assert!(mux.upstream_up(g1, 0));
    assert!(!mux.wants_handover(OwnerKind::Http, 1), "within its lifetime");
    assert!(mux.wants_handover(OwnerKind::WebSocket, 1), "WebSocket contexts are preferred owners");
    let g = mux.begin_handover(OwnerKind::WebSocket, None, 1).expect("starts");
    mux.upstream_down(g, "connect refused", 2);
    assert_eq!(mux.upstream(), Upstream::Up);
    assert_eq!(mux.gen_state(g1), GenState::Current);
    assert_eq!(mux.owner(), OwnerKind::Http);
    assert!(mux.begin_handover(OwnerKind::WebSocket, None, 3).is_some(), "may try again");
}

#[test]
fn the_watchdog_trips_when_queued_frames_see_no_transmit() {
    let mut mux = up(Config { watchdog_ms: 5_000, ..Config::default() });
    let req = rpc_request(vec![]);
    mux.open_http(&req, 100).expect("open");
    assert!(!mux.watchdog_expired(100), "the first submit after queueing starts the clock");
    assert!(!mux.watchdog_expired(5_099));
    assert!(mux.watchdog_expired(5_100));
    mux.poll_transmit(mux.current_gen(), 5_100).expect("batch");
    assert!(!mux.watchdog_expired(60_000), "nothing waits: nothing to watch");
}

#[test]
fn a_drain_whose_barrier_never_returns_ends_at_its_deadline() {
    let mut mux = Mux::new(Config { watchdog_ms: 1_000, ..Config::default() });
    let g1 = mux.upstream_connecting(OwnerKind::Http, None, 0);
    assert!(mux.upstream_up(g1, 0));
    let a = mux.open_websocket("/echo", Identity::default(), "sub:t", 0).expect("open");
    mux.poll_transmit(g1, 0).expect("open frame left on the old upstream");
    let g2 = mux.begin_handover(OwnerKind::WebSocket, None, 10).expect("starts");
    assert!(mux.upstream_up(g2, 10));
    mux.send(a, true, b"held", 0).expect("send");
    assert_eq!(mux.poll_timeout(), Some(1_010));
    assert!(mux.check_stuck(1_009).is_empty());
    assert_eq!(mux.check_stuck(1_010).len(), 1, "the old owner never sent its barrier");
    match drain(&mut mux, a).as_slice() {
        [Delivery::Aborted { code, .. }] => assert_eq!(*code, 1012, "told, not left waiting"),
        other => panic!("got {other:?}"),
    }
    assert_eq!(mux.gen_state(g1), GenState::Retired);
    assert_eq!(mux.gen_state(g2), GenState::Current);
    assert_eq!(mux.counters().watchdog_trips, 1);
}

#[test]
fn connects_whose_context_died_are_abandoned_after_the_watchdog_bound() {
    let mut mux = Mux::new(Config { watchdog_ms: 1_000, ..Config::default() });
    let g1 = mux.upstream_connecting(OwnerKind::Http, None, 0);
    let req = rpc_request(vec![]);
    let waiting = mux.open_http(&req, 0).expect("open");
    assert!(mux.check_stuck(999).is_empty());
    assert_eq!(mux.check_stuck(1_000), vec!["connect attempt did not finish in time"]);
    assert_eq!(mux.upstream(), Upstream::Down);
    assert!(matches!(drain(&mut mux, waiting).as_slice(), [Delivery::Fallback(_)]), "it never left: goes direct");
    assert!(!mux.upstream_up(g1, 1_001), "a late success is stale");

    let g2 = mux.upstream_connecting(OwnerKind::Http, None, 5_000);
    assert!(mux.upstream_up(g2, 5_000));
    let g3 = mux.begin_handover(OwnerKind::WebSocket, None, 5_001).expect("starts");
    assert!(mux.begin_handover(OwnerKind::WebSocket, None, 5_500).is_none(), "one at a time");
    assert_eq!(mux.check_stuck(6_001), vec!["hand-over: the successor upstream did not open in time"]);
    assert_eq!(mux.gen_state(g2), GenState::Current, "the current upstream carries on");
    assert!(!mux.upstream_up(g3, 6_002), "a late successor is stale");
    assert!(mux.begin_handover(OwnerKind::WebSocket, None, 6_003).is_some(), "another context may try");
    assert_eq!(mux.counters().watchdog_trips, 2);
}

#[test]
fn an_idle_isolate_does_not_trip_the_watchdog_on_its_next_message() {
    let mut mux = up(Config { watchdog_ms: 5_000, ..Config::default() });
    let a = mux.open_websocket("/echo", Identity::default(), "sub:t", 0).expect("open");
    assert!(!mux.watchdog_expired(0));
    mux.poll_transmit(mux.current_gen(), 0).expect("open frame");
    assert!(!mux.watchdog_expired(1));
    // 20 s of silence, then a message: its wait starts now, not at the last clock reading.
    mux.send(a, true, b"after a nap", 0).expect("send");
    assert!(!mux.watchdog_expired(20_000));
    assert!(!mux.watchdog_expired(24_999));
    assert!(mux.watchdog_expired(25_000));
}
