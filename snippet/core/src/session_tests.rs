//! Session streams (PROTOCOL.md §14) and the upstream's text pings, on a simulated clock:
//! the `Open`'s `Attach`, pings answered at the edge, what a session client may send, the
//! position the snippet keeps, re-attaching when only the upstream is lost, and the
//! heartbeat and idle check that ask the backend's runtime, not its object.
//!
//! Most tests stall the backend object (it reads and never answers) and play its part
//! with injected frames, so they hold whatever a backend does with sessions.

use protocol::session::{pong_for, Envelope, MAX_PING_BYTES};
use protocol::FrameKind;

use super::*;
use crate::sim::{who, Sim};

fn sid() -> SessionId {
    SessionId::from_bytes([0x5e; 16])
}

fn data(seq: u64, payload: &[u8]) -> Vec<u8> {
    Envelope::Data { text: false, seq, ack: 0, payload }.encode()
}

/// One frame of `kind` on `stream`, as a backend sends it.
fn frame(kind: FrameKind, stream: StreamId, payload: &[u8]) -> Vec<u8> {
    protocol::single_frame_message(kind, stream, payload)
}

fn attach_of(open: &Open) -> Option<(SessionId, u64)> {
    open.attach.map(|a| (a.session, a.received))
}

#[test]
fn a_session_streams_open_carries_its_attach_and_a_plain_ones_none() {
    let mut sim = Sim::new(Config::default());
    sim.stalled.insert("t".into());
    let s = sim.session_client("t", "/echo", sid(), 7);
    let p = sim.client("t", "/echo");
    sim.run();
    assert!(sim.mux.is_session(s) && !sim.mux.is_session(p));
    let opens = sim.opens_of(s);
    assert_eq!(opens.len(), 1);
    assert_eq!(attach_of(&opens[0].1), Some((sid(), 7)), "the client's own position at first");
    assert_eq!(opens[0].1.identity, who());
    assert_eq!(attach_of(&sim.opens_of(p)[0].1), None);
    assert_eq!(sim.received[0].1[0], protocol::VERSION, "v3 batches");
}

#[test]
fn a_ping_is_answered_at_the_edge_and_never_forwarded_while_data_and_acks_go_upstream_unchanged() {
    let mut sim = Sim::new(Config::default());
    sim.stalled.insert("t".into());
    let s = sim.session_client("t", "/echo", sid(), 0);
    sim.run();
    let ping = Envelope::Ping(&[1, 2, 3]).encode();
    sim.send_binary(s, &ping);
    sim.run();
    assert_eq!(sim.binaries(s), vec![pong_for(&ping)]);
    let longest = Envelope::Ping(&[9; MAX_PING_BYTES]).encode();
    sim.send_binary(s, &longest);
    let (msg, ack) = (data(1, b"hello"), Envelope::Ack { ack: 4 }.encode());
    sim.send_binary(s, &msg);
    sim.send_binary(s, &ack);
    sim.run();
    assert_eq!(sim.binaries(s), vec![pong_for(&ping), pong_for(&longest)]);
    let up = sim.socket_of("t")[0];
    let frames = sim.frames_of(s);
    assert_eq!(frames.len(), 3, "{frames:?}");
    assert_eq!(frames[0].1, FrameKind::Open);
    assert_eq!(frames[1..], [(up, FrameKind::Binary, msg), (up, FrameKind::Binary, ack)], "no ping went upstream");
    let c = sim.mux.counters();
    assert_eq!((c.edge_pongs, c.messages_down, c.messages_up), (2, 0, 2), "pongs are not backend messages");
}

#[test]
fn a_session_client_that_sends_what_a_client_may_not_is_refused_and_nothing_goes_upstream() {
    let mut sim = Sim::new(Config::default());
    sim.stalled.insert("t".into());
    let s = sim.session_client("t", "/echo", sid(), 0);
    let p = sim.client("t", "/echo");
    sim.run();
    let now = sim.now;
    let bad: [(bool, Vec<u8>); 6] = [
        (true, data(1, b"as text")),
        (false, b"\x09junk".to_vec()),
        (false, b"\x01\x00\x00".to_vec()),
        (false, Envelope::Welcome { resumed: true, ack: 1 }.encode()),
        (false, Envelope::Pong(b"x").encode()),
        (false, Envelope::Ping(&[0; MAX_PING_BYTES + 1]).encode()),
    ];
    for (text, bytes) in &bad {
        match sim.mux.handle_client_message(s, *text, bytes.to_vec(), now) {
            Err(e @ Refused::BadEnvelope { .. }) => assert!(e.to_string().starts_with("bad session message"), "{e}"),
            other => panic!("{bytes:?}: {other:?}"),
        }
    }
    sim.run();
    assert_eq!(sim.frames_of(s).len(), 1, "only its Open went out");
    assert!(sim.binaries(s).is_empty());
    // A plain client's messages are not envelopes: anything goes.
    for (text, bytes) in &bad {
        assert_eq!(sim.mux.handle_client_message(p, *text, bytes.to_vec(), now), Ok(()));
    }
}

#[test]
fn the_backends_messages_pass_unchanged_as_binary_and_the_highest_data_seq_is_kept() {
    let mut sim = Sim::new(Config::default());
    sim.stalled.insert("t".into());
    let s = sim.session_client("t", "/echo", sid(), 2);
    sim.here = Here::Client(s);
    sim.run();
    let up = sim.socket_of("t")[0];
    let welcome = Envelope::Welcome { resumed: true, ack: 0 }.encode();
    let sent = [
        (FrameKind::Binary, welcome),
        (FrameKind::Binary, data(3, b"three")),
        (FrameKind::Text, Envelope::Data { text: true, seq: 5, ack: 0, payload: b"five" }.encode()),
        (FrameKind::Binary, data(4, b"a duplicate, out of order")),
        (FrameKind::Binary, Envelope::Ack { ack: 99 }.encode()),
    ];
    for (kind, bytes) in &sent {
        sim.inject(up, &frame(*kind, s, bytes));
    }
    let want: Vec<Vec<u8>> = sent.iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(sim.binaries(s), want, "a Text frame reaches a session client as binary too");
    assert!(sim.texts(s).is_empty());
    // The position shows in the next Open: lose the upstream and let it re-attach.
    sim.drop_socket(up);
    sim.advance(Config::default().reconnect_max_ms);
    let opens = sim.opens_of(s);
    assert_eq!(opens.len(), 2, "{opens:?}");
    assert_eq!(attach_of(&opens[1].1), Some((sid(), 5)), "the highest seq passed on; Acks and Welcomes are no data");
}

/// PROTOCOL.md §14.3: the backend restarts; the session client keeps its WebSocket and
/// its queued messages, and is re-opened on the next upstream; a plain client gets 1012.
#[test]
fn when_only_the_upstream_is_lost_a_session_client_is_reattached_and_a_plain_one_closed_1012() {
    let mut sim = Sim::new(Config::default());
    sim.stalled.insert("t".into());
    let s = sim.session_client("t", "/echo", sid(), 0);
    let p = sim.client("t", "/echo");
    sim.here = Here::Client(s);
    sim.run();
    let first = sim.socket_of("t")[0];
    let gone = data(1, b"sent on the lost upstream");
    sim.send_binary(s, &gone);
    sim.run();
    sim.inject(first, &frame(FrameKind::Binary, s, &data(4, b"four")));
    sim.manual = true;
    sim.drop_socket(first);
    assert!(matches!(sim.last(p), Some(Delivery::Aborted { code: 1012, .. })), "{:?}", sim.last(p));
    assert!(sim.last(s).is_none() && sim.mux.is_open(s), "the session client keeps its WebSocket");
    assert_eq!(sim.mux.sessions_waiting(), 1);
    let queued = data(2, b"queued while the upstream was down");
    sim.send_binary(s, &queued);
    let ping = Envelope::Ping(b"hb").encode();
    sim.send_binary(s, &ping);
    sim.run();
    assert_eq!(sim.binaries(s).last(), Some(&pong_for(&ping)), "the edge answers while the upstream is down");
    // The link reconnects (after its backoff) in the waiting client's own context.
    sim.advance(Config::default().reconnect_max_ms);
    assert_eq!(sim.connecting.len(), 1, "a reconnect while the session waits");
    let (second, _) = sim.connecting[0].clone();
    sim.accept(second);
    let frames = sim.frames_of(s);
    let on_second: Vec<_> = frames.iter().filter(|(on, ..)| *on == second).collect();
    assert_eq!(on_second.len(), 2, "{frames:?}");
    assert_eq!(on_second[0].1, FrameKind::Open);
    let open = Open::decode(&on_second[0].2).expect("open");
    assert_eq!(attach_of(&open), Some((sid(), 4)), "re-opened at what it was passed");
    assert_eq!((on_second[1].1, &on_second[1].2), (FrameKind::Binary, &queued), "then what it queued; not what left");
    let c = sim.mux.counters();
    assert_eq!(c.sessions_reattached, 1);
    assert_eq!(sim.mux.sessions_waiting(), 0);
    assert!(sim.last(s).is_none());
    // It carries on over the new upstream.
    sim.inject(second, &frame(FrameKind::Binary, s, &data(5, b"five")));
    assert_eq!(sim.binaries(s).last(), Some(&data(5, b"five")));
}

#[test]
fn a_session_client_waits_reattach_ms_for_a_new_upstream_then_is_closed_1012() {
    let cfg = Config { reattach_ms: 10_000, ..Config::default() };
    let mut sim = Sim::new(cfg);
    let s = sim.session_client("t", "/echo", sid(), 0);
    sim.here = Here::Client(s);
    sim.run();
    let up = sim.socket_of("t")[0];
    sim.refusing.insert("t".into());
    let attempts = sim.mux.counters().connect_attempts;
    // No context that may own an upstream comes by: the link asks for a client's.
    sim.here = Here::Lingering;
    sim.drop_socket(up);
    sim.advance(Config::default().reconnect_max_ms);
    assert_eq!(sim.mux.counters().connect_attempts, attempts, "a lingering context connects nothing");
    assert!(sim.mux.owner_wanted(sim.now), "the waiting session client's context is wanted to connect");
    sim.here = Here::Client(s);
    sim.advance(10_000 - Config::default().reconnect_max_ms - 1);
    assert!(sim.last(s).is_none(), "still waiting: {:?}", sim.last(s));
    assert!(sim.mux.counters().connect_attempts >= attempts + 2, "the link keeps trying, backing off");
    sim.advance(1);
    match sim.last(s) {
        Some(Delivery::Aborted { code: 1012, detail, .. }) => assert!(detail.contains("REATTACH_MS"), "{detail}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.mux.counters().reattach_timeouts, 1);
    assert_eq!(sim.mux.streams_held(), 0);
    assert_eq!(sim.mux.sessions_waiting(), 0);
}

#[test]
fn a_departed_session_clients_close_reaches_the_backend_on_the_next_upstream() {
    let mut sim = Sim::new(Config::default());
    sim.stalled.insert("t".into());
    let s = sim.session_client("t", "/echo", sid(), 0);
    sim.run();
    let first = sim.socket_of("t")[0];
    sim.manual = true;
    sim.drop_socket(first);
    let now = sim.now;
    sim.mux.handle_client_closed(s, 1000, "bye", now);
    sim.advance(Config::default().reconnect_max_ms);
    let (second, _) = sim.connecting[0].clone();
    sim.accept(second);
    let kinds: Vec<_> = sim.frames_of(s).into_iter().filter(|(on, ..)| *on == second).map(|(_, k, p)| (k, p)).collect();
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    assert_eq!(kinds[0].0, FrameKind::Open);
    assert_eq!(
        kinds[1],
        (FrameKind::Close, Close { code: 1000, reason: "bye".into() }.encode()),
        "it ends the session"
    );
    assert_eq!(sim.mux.streams_held(), 0);
}

#[test]
fn with_reattach_ms_zero_a_session_client_is_closed_at_once_like_a_plain_one() {
    let mut sim = Sim::new(Config { reattach_ms: 0, ..Config::default() });
    let s = sim.session_client("t", "/echo", sid(), 0);
    sim.run();
    let up = sim.socket_of("t")[0];
    sim.manual = true;
    sim.drop_socket(up);
    assert!(matches!(sim.last(s), Some(Delivery::Aborted { code: 1012, .. })), "{:?}", sim.last(s));
}

/// A hand-over's re-open carries the session's current position too.
#[test]
fn a_handover_reopens_a_session_stream_at_its_current_position() {
    let mut sim = Sim::new(Config { owner_lifetime_ms: 1_000, ..Config::default() });
    sim.here = Here::Request;
    let s = sim.session_client("t", "/echo", sid(), 1);
    sim.run();
    let first = sim.socket_of("t")[0];
    sim.inject(first, &frame(FrameKind::Binary, s, &data(9, b"nine")));
    let b = sim.client("t", "/echo");
    sim.here = Here::Client(b);
    sim.run();
    assert_eq!(sim.mux.counters().handovers, 1);
    let opens = sim.opens_of(s);
    assert_eq!(opens.len(), 2, "{opens:?}");
    assert_eq!((opens[0].0, attach_of(&opens[0].1)), (first, Some((sid(), 1))));
    assert_ne!(opens[1].0, first);
    assert_eq!(attach_of(&opens[1].1), Some((sid(), 9)));
    assert!(sim.mux.is_open(s));
}

#[test]
fn heartbeat_and_idle_check_are_text_pings_answered_by_the_runtime_not_the_object() {
    let cfg = Config { heartbeat_ms: 1_000, ..Config::default() };
    let (hb, ka, busy) = (cfg.heartbeat_ms, cfg.upstream_keepalive_ms, cfg.backend_busy_ms);
    let mut sim = Sim::new(cfg);
    let a = sim.client("t", "/echo");
    sim.here = Here::Client(a);
    sim.run();
    let up = sim.socket_of("t")[0];
    let batches = sim.received.len();
    // The heartbeat: the Open was sent and nothing came back (a backend answers no Open).
    sim.advance(hb);
    assert_eq!(sim.texts_seen, vec![(up, "ping".to_owned())]);
    // Idle: nothing arrives for UPSTREAM_KEEPALIVE_MS after its pong, and a text ping goes out.
    sim.advance(ka - 1);
    assert_eq!(sim.texts_seen.len(), 1);
    sim.advance(1);
    assert_eq!(sim.texts_seen, vec![(up, "ping".to_owned()); 2]);
    // Its pong counts as an answer: four more rounds, and nothing is dropped.
    sim.advance(4 * ka + busy);
    assert_eq!(sim.texts_seen.len(), 2 + (4 * ka + busy) as usize / ka as usize, "{:?}", sim.texts_seen);
    assert_eq!(sim.received.len(), batches, "no binary message went to the object");
    assert!(sim.closed.is_empty(), "{:?}", sim.closed);
    assert_eq!(sim.mux.counters().heartbeat_failures, 0);
    assert_eq!(sim.mux.counters().upstream_pings, sim.texts_seen.len() as u64);
    // The heartbeat proper (something sent, nothing back): a text ping too.
    sim.stalled.insert("t".into());
    sim.send(a, "unanswered");
    sim.run();
    let before = sim.texts_seen.len();
    sim.advance(1_000);
    assert_eq!(sim.texts_seen.len(), before + 1, "the heartbeat's ping");
    // A pong from the runtime, however late within BACKEND_BUSY_MS, is an answer.
    sim.advance(busy - 1);
    let now = sim.now;
    sim.mux.handle_upstream_text(up, b"pong", now);
    sim.advance(1);
    assert!(sim.closed.is_empty(), "{:?}", sim.closed);
    let pings: Vec<_> =
        sim.frames_of(StreamId::SESSION).into_iter().filter(|(_, k, _)| *k == FrameKind::Ping).collect();
    assert!(pings.is_empty(), "no binary Ping went out: {pings:?}");
}

/// The backend vanishes without a close (a dead socket, a frozen process): the idle check
/// finds it within UPSTREAM_KEEPALIVE_MS + BACKEND_BUSY_MS, and the session client is
/// re-attached on the next upstream.
#[test]
fn a_silent_upstream_is_lost_after_its_idle_check_goes_unanswered_and_its_session_client_reattaches() {
    let cfg = Config::default();
    let (ka, busy) = (cfg.upstream_keepalive_ms, cfg.backend_busy_ms);
    let mut sim = Sim::new(cfg);
    let s = sim.session_client("t", "/echo", sid(), 0);
    let p = sim.client("t", "/echo");
    sim.here = Here::Client(s);
    sim.run();
    let first = sim.socket_of("t")[0];
    // The backend answered (its Welcome, say), then went silent.
    sim.inject(first, &frame(FrameKind::Binary, s, &Envelope::Welcome { resumed: false, ack: 0 }.encode()));
    sim.stalled_sockets.insert(first);
    sim.advance(ka - 1);
    assert!(sim.texts_seen.is_empty());
    sim.advance(1);
    assert_eq!(sim.texts_seen, vec![(first, "ping".to_owned())]);
    sim.advance(busy - 1);
    assert!(sim.closed.is_empty());
    sim.advance(1);
    assert!(sim.closed.contains(&(first, 1011)), "{:?}", sim.closed);
    assert!(sim.logs.iter().any(|l| l.contains("UPSTREAM_KEEPALIVE_MS")), "{:?}", sim.logs);
    assert_eq!(sim.mux.counters().heartbeat_failures, 1);
    assert!(matches!(sim.last(p), Some(Delivery::Aborted { code: 1012, .. })));
    sim.advance(Config::default().reconnect_max_ms);
    assert!(sim.last(s).is_none() && sim.mux.is_open(s));
    let opens = sim.opens_of(s);
    assert_eq!(opens.len(), 2, "re-opened on the next upstream: {opens:?}");
    assert_ne!(opens[1].0, first);
    assert_eq!(sim.mux.counters().sessions_reattached, 1);
}

#[test]
fn a_text_message_from_the_backend_other_than_pong_is_still_read_as_a_batch() {
    let mut sim = Sim::new(Config::default());
    sim.stalled.insert("t".into());
    let a = sim.client("t", "/echo");
    sim.run();
    let up = sim.socket_of("t")[0];
    let now = sim.now;
    sim.mux.handle_upstream_text(up, b"pong!", now);
    sim.run();
    assert_eq!(sim.closed, vec![(up, 1002)]);
    assert!(matches!(sim.last(a), Some(Delivery::Aborted { code: 1012, .. })));
}
