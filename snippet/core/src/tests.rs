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
    while let Some(msg) = mux.poll_transmit(0) {
        let (reply, frames) = echo_backend(&msg);
        sizes.push(frames);
        mux.handle_upstream_message(&reply, 0).expect("valid reply");
    }
    sizes
}

fn drain(mux: &mut Mux, id: StreamId) -> Vec<Delivery> {
    std::iter::from_fn(|| mux.poll_delivery(id)).collect()
}

fn up(cfg: Config) -> Mux {
    let mut mux = Mux::new(cfg);
    mux.upstream_connecting();
    mux.upstream_up();
    mux
}

#[test]
fn nothing_leaves_before_the_upstream_is_up_and_all_of_it_after() {
    let mut mux = Mux::new(Config::default());
    let a = mux.open_websocket("/echo").expect("open");
    mux.send(a, true, b"early").expect("send");
    assert!(mux.poll_transmit(0).is_none());
    mux.upstream_connecting();
    assert!(mux.poll_transmit(0).is_none());
    mux.upstream_up();
    pump(&mut mux);
    assert_eq!(drain(&mut mux, a), vec![Delivery::Text("early".into())]);
}

#[test]
fn replies_route_by_stream_even_with_identical_payloads() {
    let mut mux = up(Config::default());
    let a = mux.open_websocket("/rpc").expect("open");
    let b = mux.open_websocket("/rpc").expect("open");
    mux.send(a, true, br#"{"id":1}"#).expect("send");
    mux.send(b, true, br#"{"id":1}"#).expect("send");
    mux.send(b, false, &[0, 1, 2]).expect("send");
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
    let a = mux.open_websocket("/echo").expect("open");
    for i in 0..100u32 {
        mux.send(a, false, &i.to_be_bytes()).expect("send");
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
        let ids: Vec<_> = (0..8).map(|_| mux.open_websocket("/echo").expect("open")).collect();
        for id in &ids {
            mux.send(*id, true, b"x").expect("send");
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
    let chatty = mux.open_websocket("/echo").expect("open");
    let quiet = mux.open_websocket("/echo").expect("open");
    pump(&mut mux);
    for _ in 0..50 {
        mux.send(chatty, true, b"spam").expect("send");
    }
    mux.send(quiet, true, b"hi!!").expect("send");
    let first = mux.poll_transmit(0).expect("batch");
    let streams: Vec<StreamId> = decode_message(&first).expect("v").map(|f| f.expect("frame").stream).collect();
    assert!(streams.contains(&quiet), "the quiet stream rides in the first batch: {streams:?}");
}

#[test]
fn limits_refuse_with_typed_reasons() {
    let mut mux = Mux::new(Config {
        max_message_bytes: 8,
        max_streams: 2,
        max_queued_bytes_per_stream: 3 * protocol::frame_len(8),
        ..Config::default()
    });
    let a = mux.open_websocket("/echo").expect("open");
    assert_eq!(mux.send(a, false, &[0; 9]), Err(Refused::TooLarge { size: 9, limit: 8 }));
    mux.send(a, false, &[0; 8]).expect("fits");
    mux.send(a, false, &[0; 8]).expect("fits");
    assert_eq!(mux.send(a, false, &[0; 8]), Err(Refused::Backpressure));
    let _b = mux.open_websocket("/echo").expect("second");
    assert_eq!(mux.open_websocket("/echo"), Err(Refused::TooManyStreams));
    assert_eq!(mux.send(StreamId(99), true, b""), Err(Refused::UnknownStream));
}

#[test]
fn a_departed_client_gets_nothing_and_the_backend_is_told() {
    let mut mux = up(Config::default());
    let a = mux.open_websocket("/echo").expect("open");
    mux.send(a, true, b"bye").expect("send");
    mux.client_closed(a, 1000, "done");
    assert!(!mux.is_open(a));
    let msg = mux.poll_transmit(0).expect("batch");
    let kinds: Vec<FrameKind> = decode_message(&msg).expect("v").map(|f| f.expect("f").kind).collect();
    assert_eq!(kinds, vec![FrameKind::Open, FrameKind::Text, FrameKind::Close]);
    let late = single_frame_message(FrameKind::Text, a, b"late");
    mux.handle_upstream_message(&late, 0).expect("valid");
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
    let ws = mux.open_websocket("/echo").expect("open");
    let req = Request { method: "POST".into(), path: "/rpc".into(), content_type: String::new(), body: b"{}".to_vec() };
    let sent = mux.open_http(&req, 0).expect("open");
    assert!(mux.poll_transmit(5).is_some(), "the first request leaves");
    let unsent = mux.open_http(&req, 6).expect("open");
    mux.upstream_down("socket closed", 10);
    assert_eq!(mux.upstream(), Upstream::Down);
    assert!(mux.poll_transmit(10).is_none());
    match drain(&mut mux, ws).as_slice() {
        [Delivery::Close(c)] => assert_eq!(c.code, 1012),
        other => panic!("ws stream got {other:?}"),
    }
    match drain(&mut mux, sent).as_slice() {
        [Delivery::Response(r)] => {
            assert_eq!(r.status, 502);
            assert!(String::from_utf8_lossy(&r.body).contains("may or may not have run"));
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
    mux.handle_upstream_message(&ping, 0).expect("valid");
    let msg = mux.poll_transmit(0).expect("pong");
    let f = decode_message(&msg).expect("v").next().expect("one").expect("ok");
    assert_eq!((f.kind, f.payload), (FrameKind::Pong, &b"12345678"[..]));
    assert!(mux.handle_upstream_message(&[7, 7], 0).is_err());
    assert!(mux.handle_upstream_message(&[protocol::VERSION, 99], 0).is_err());
}

#[test]
fn a_backend_error_frame_reaches_the_stream_as_close_or_status() {
    let mut mux = up(Config::default());
    let ws = mux.open_websocket("/nope").expect("open");
    let err = ErrorFrame { code: 404, message: "no service \"/nope\"".into() }.encode();
    mux.handle_upstream_message(&single_frame_message(FrameKind::Error, ws, &err), 0).expect("ok");
    match drain(&mut mux, ws).as_slice() {
        [Delivery::Close(c)] => assert!(c.reason.contains("no service")),
        other => panic!("got {other:?}"),
    }
    assert_eq!(mux.counters().errors, 1);
    assert_eq!(json_string("a\"b\\\n\u{1}"), r#""a\"b\\\n\u0001""#);
}

#[test]
fn session_errors_are_kept_for_the_log() {
    let mut mux = up(Config::default());
    let err = ErrorFrame { code: 400, message: "bad message: empty message".into() }.encode();
    mux.handle_upstream_message(&single_frame_message(FrameKind::Error, StreamId::SESSION, &err), 0).expect("ok");
    assert_eq!(mux.take_session_errors(), vec!["backend session error 400: bad message: empty message".to_owned()]);
    assert!(mux.take_session_errors().is_empty());
    assert_eq!(mux.counters().errors, 1);
}

#[test]
fn reconnect_backoff_is_full_jitter_doubling_to_a_cap_and_resets_when_up() {
    let cfg = Config { reconnect_base_ms: 100, reconnect_max_ms: 1_000, ..Config::default() };
    let mut mux = Mux::new(cfg);
    assert!(mux.can_connect(0), "the first attempt needs no wait");
    let mut now = 0;
    let mut bounds = Vec::new();
    for attempt in 1..=8u32 {
        mux.upstream_connecting();
        assert!(!mux.can_connect(now), "one attempt at a time");
        mux.upstream_down("refused", now);
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
    mux.upstream_connecting();
    mux.upstream_up();
    assert_eq!(mux.next_connect_at(), None);
    assert!(!mux.should_fall_back(now));
    mux.upstream_down("lost", now);
    assert!(mux.next_connect_at().expect("backing off") - now <= 100, "backoff restarts from the base after a success");
    assert_eq!(mux.counters().connect_attempts, 9);
    assert_eq!(mux.counters().backend_connects, 1);
}

#[test]
fn jitter_spreads_delays_instead_of_repeating_one() {
    let mut delays = std::collections::BTreeSet::new();
    for seed in 1..50 {
        let mut mux = Mux::new(Config { seed, reconnect_base_ms: 1_000, ..Config::default() });
        mux.upstream_connecting();
        mux.upstream_down("refused", 0);
        delays.insert(mux.next_connect_at().expect("backing off"));
    }
    assert!(delays.len() > 40, "{delays:?}");
}

#[test]
fn requests_time_out_with_504_at_their_deadline() {
    let mut mux = up(Config { request_timeout_ms: 1_000, ..Config::default() });
    let req = Request { method: "POST".into(), path: "/rpc".into(), content_type: String::new(), body: vec![] };
    let a = mux.open_http(&req, 0).expect("open");
    let b = mux.open_http(&req, 500).expect("open");
    assert_eq!(mux.poll_timeout(), Some(1_000));
    mux.handle_timeout(999);
    assert!(mux.take_woken().is_empty());
    mux.handle_timeout(1_000);
    assert_eq!(mux.take_woken(), vec![a]);
    match drain(&mut mux, a).as_slice() {
        [Delivery::Response(r)] => assert_eq!(r.status, 504),
        other => panic!("got {other:?}"),
    }
    assert_eq!(mux.poll_timeout(), Some(1_500));
    assert!(mux.is_open(b));
    assert_eq!(mux.counters().timeouts, 1);
    // The expired request's frame never leaves; the live one does.
    let msg = mux.poll_transmit(1_000).expect("batch");
    let streams: Vec<StreamId> = decode_message(&msg).expect("v").map(|f| f.expect("f").stream).collect();
    assert_eq!(streams, vec![b]);
}

#[test]
fn round_trips_are_measured_from_transmit_to_response() {
    let mut mux = up(Config::default());
    assert_eq!(mux.rtt_percentiles(), None);
    for i in 0..100u64 {
        let req = Request { method: "POST".into(), path: "/rpc".into(), content_type: String::new(), body: vec![] };
        let id = mux.open_http(&req, i * 10).expect("open");
        let msg = mux.poll_transmit(i * 10).expect("batch");
        let (reply, _) = echo_backend(&msg);
        mux.handle_upstream_message(&reply, i * 10 + i + 1).expect("valid");
        assert!(matches!(mux.poll_delivery(id), Some(Delivery::Response(_))));
    }
    assert_eq!(mux.rtt_percentiles(), Some((51, 99)));
}

#[test]
fn client_and_queued_frame_limits() {
    let mut mux = Mux::new(Config { max_clients: 2, max_queued_frames_per_stream: 3, ..Config::default() });
    let a = mux.open_websocket("/echo").expect("1");
    let _b = mux.open_websocket("/echo").expect("2");
    assert_eq!(mux.open_websocket("/echo"), Err(Refused::TooManyStreams));
    let req = Request { method: "POST".into(), path: "/rpc".into(), content_type: String::new(), body: vec![] };
    assert!(mux.open_http(&req, 0).is_ok(), "HTTP requests are not clients");
    // The Open frame is queued already: two more fit, the fourth frame does not.
    mux.send(a, true, b"1").expect("fits");
    mux.send(a, true, b"2").expect("fits");
    assert_eq!(mux.send(a, true, b"3"), Err(Refused::Backpressure));
}

#[test]
fn fallback_url_sits_beside_the_mux_endpoint() {
    assert_eq!(http_base("ws://127.0.0.1:8788/db/default/mux"), "http://127.0.0.1:8788/db/default");
    assert_eq!(http_base("wss://b.example.com/db/t/mux/"), "https://b.example.com/db/t");
}
