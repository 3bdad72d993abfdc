//! What the session vectors do not show: refusals by the app, limits, batching under
//! the cap, what is stored and how a woken object reads it back, and that no input
//! makes the core panic.

use protocol::{decode_message, encode_frame, ErrorFrame, FrameKind, Open, StreamId};

use super::*;
use crate::vectors::{who, VectorApp};
use crate::{Refusal, MAX_BATCH_BYTES, MAX_LISTED_SOCKETS, MAX_STREAMS};

const NOW: u64 = 1_000_000_000;
const A: SocketId = SocketId::from_bits_const(10);
const B: SocketId = SocketId::from_bits_const(11);

fn batch(items: &[(FrameKind, u32, Vec<u8>)]) -> Vec<u8> {
    let mut msg = Vec::new();
    protocol::begin_message(&mut msg);
    for (k, s, p) in items {
        encode_frame(&mut msg, *k, StreamId(*s), p).expect("small");
    }
    msg
}

fn open(stream: u32, path: &str, subject: &str) -> (FrameKind, u32, Vec<u8>) {
    (FrameKind::Open, stream, Open { path: path.into(), identity: who(subject), attach: None }.encode())
}

/// A frame sent: its socket, kind, stream and payload.
type Sent = (SocketId, FrameKind, u32, Vec<u8>);

/// What came out: the frames sent, the storage actions, and how many messages.
fn drain<A: App>(o: &mut Object<A>) -> (Vec<Sent>, Vec<Action>, usize) {
    let (mut frames, mut store, mut messages) = (Vec::new(), Vec::new(), 0);
    while let Some(a) = o.poll_action() {
        match a {
            Action::Send { socket, message } => {
                messages += 1;
                assert!(message.len() <= MAX_BATCH_BYTES || decode_message(&message).expect("v").count() == 1);
                for f in decode_message(&message).expect("version") {
                    let f = f.expect("frame");
                    frames.push((socket, f.kind, f.stream.0, f.payload.to_vec()));
                }
            }
            other @ (Action::Put { .. } | Action::Delete { .. }) => store.push(other),
            Action::Close { .. } => {}
        }
    }
    (frames, store, messages)
}

/// The vectors' app that refuses mallory.
#[derive(Default)]
struct Picky(VectorApp);

impl App for Picky {
    const SERVICES: &'static [&'static str] = VectorApp::SERVICES;
    fn on_open(&mut self, client: &Client, out: &mut Out<'_>) -> Result<(), Refusal> {
        if client.identity.subject == "mallory" {
            return Err(Refusal::new(403, "not in this room"));
        }
        out.send(client.id(), Msg::Text("welcome"));
        self.0.on_open(client, out)
    }
    fn on_message(&mut self, client: &Client, msg: Msg<'_>, out: &mut Out<'_>) -> Result<(), Refusal> {
        if msg == Msg::Binary(&[0]) {
            return Err(Refusal::new(415, "no zeros"));
        }
        self.0.on_message(client, msg, out)
    }
    fn on_request(&mut self, req: &Request, out: &mut Out<'_>) -> Response {
        self.0.on_request(req, out)
    }
    fn on_close(&mut self, client: &Client, code: u16, reason: &str, out: &mut Out<'_>) {
        self.0.on_close(client, code, reason, out)
    }
}

#[test]
fn the_app_refuses_opens_and_messages_with_error_frames_and_a_greeting_reaches_the_opener() {
    let mut o = Object::new(Picky::default());
    o.handle_accept(A, "room", &[A], NOW);
    o.handle_message(A, &batch(&[open(1, "/rpc", "mallory"), open(2, "/echo", "bob")]), NOW);
    o.handle_message(A, &batch(&[(FrameKind::Binary, 2, vec![0])]), NOW);
    let (frames, _, _) = drain(&mut o);
    let got: Vec<(FrameKind, u32)> = frames.iter().map(|f| (f.1, f.2)).collect();
    assert_eq!(got, [(FrameKind::Error, 1), (FrameKind::Text, 2), (FrameKind::Error, 2)]);
    assert_eq!(ErrorFrame::decode(&frames[2].3).expect("error").code, 415);
    assert_eq!(o.clients(), 0, "a refused message ends its stream");
    let events = &o.app().0.events;
    assert_eq!(events.len(), 2, "bob opened and closed, mallory never reached the app: {events:?}");
    assert_eq!(events[1]["close"]["code"], 1011);
    let c = o.view(NOW, &[A]).counters;
    assert_eq!((c.refused.app, c.opened, c.closed, c.errors), (2, 1, 1, 2), "{c:?}");
}

#[test]
fn a_socket_holds_at_most_max_streams_and_replies_are_batched_under_the_cap() {
    let mut o = Object::new(VectorApp::default());
    o.handle_accept(A, "room", &[A], NOW);
    let opens: Vec<_> = (1..=MAX_STREAMS as u32 + 1).map(|i| open(i, "/echo", "e")).collect();
    o.handle_message(A, &batch(&opens), NOW);
    let (frames, _, _) = drain(&mut o);
    assert_eq!(o.clients(), MAX_STREAMS);
    let e = ErrorFrame::decode(&frames.last().expect("refusal").3).expect("error");
    assert_eq!((e.code, frames.len()), (503, 1));
    let v = o.view(NOW, &[A]);
    assert_eq!((v.upstreams, v.streams, v.counters.refused.limit), (1, MAX_STREAMS as u64, 1));
    assert_eq!((v.counters.messages_in, v.counters.frames_in), (1, MAX_STREAMS as u64 + 1));

    // Eight echoes of 100 KiB with a barrier after the fifth: several messages, none
    // over the cap, the Pong after the fifth echo.
    let mut items: Vec<_> = (1..=8).map(|i| (FrameKind::Binary, i, vec![i as u8; 100 * 1024])).collect();
    items.insert(5, (FrameKind::Ping, 0, vec![1, 0, 0, 0, 0, 0, 0, 0, 7]));
    o.handle_message(A, &batch(&items), NOW);
    let (frames, _, messages) = drain(&mut o);
    assert!(messages >= 3, "{messages} messages");
    let order: Vec<(FrameKind, u32)> = frames.iter().map(|f| (f.1, f.2)).collect();
    let mut expected: Vec<(FrameKind, u32)> = (1..=8).map(|i| (FrameKind::Binary, i)).collect();
    expected.insert(5, (FrameKind::Pong, 0));
    assert_eq!(order, expected);

    // A broadcast to every stream is split the same way.
    let n = o.broadcast(&|_| true, Msg::Text(&"n".repeat(1024)), NOW);
    let (frames, _, messages) = drain(&mut o);
    assert_eq!((n, frames.len()), (MAX_STREAMS as u64, MAX_STREAMS));
    assert!(messages >= (MAX_STREAMS * 1034) / MAX_BATCH_BYTES, "{messages}");
    let v = o.view(NOW, &[A]);
    assert_eq!(v.sockets.first().map(|s| s.messages_out), Some(v.counters.messages_out), "one socket");
    assert!(v.counters.frames_out > MAX_STREAMS as u64, "{v:?}");
}

#[test]
fn the_view_lists_the_sockets_with_the_most_streams_first_up_to_its_bound() {
    let mut o = Object::new(VectorApp::default());
    let ids: Vec<SocketId> = (1..=MAX_LISTED_SOCKETS as u64 + 2).map(SocketId::from_bits).collect();
    for (i, s) in ids.iter().enumerate() {
        o.handle_accept(*s, "room", &ids[..=i], NOW);
    }
    let last = ids[ids.len() - 1];
    o.handle_message(last, &batch(&[open(1, "/rpc", "a"), open(2, "/rpc", "b")]), NOW);
    o.handle_message(ids[3], &batch(&[open(1, "/rpc", "c")]), NOW);
    let v = o.view(NOW, &ids);
    assert_eq!((v.upstreams, v.streams, v.sockets.len()), (ids.len() as u64, 3, MAX_LISTED_SOCKETS));
    let first: Vec<(String, u64)> = v.sockets.iter().take(3).map(|s| (s.socket.clone(), s.streams)).collect();
    let want = [(last.to_string(), 2), (ids[3].to_string(), 1), (ids[0].to_string(), 0)];
    assert_eq!(first, want);
    let gone = o.view(NOW, &ids[1..]);
    assert_eq!(gone.upstreams, ids.len() as u64 - 1, "a socket the runtime no longer has is no upstream");
    assert_eq!(v.to_json()["totals"]["socketsAccepted"], ids.len() as u64);
}

#[test]
fn a_woken_object_reads_its_sockets_back_and_closes_the_clients_of_dead_ones() {
    let mut o = Object::new(VectorApp::default());
    o.handle_accept(A, "room", &[A], NOW);
    o.handle_accept(B, "room", &[A, B], NOW);
    o.handle_message(A, &batch(&[open(1, "/rpc", "alice"), open(2, "/echo", "bob")]), NOW);
    o.handle_message(A, &batch(&[(FrameKind::Ping, 0, vec![1, 0, 0, 0, 0, 0, 0, 0, 7])]), NOW);
    o.handle_message(B, &batch(&[open(1, "/rpc", "alice"), open(3, "/rpc", "carol")]), NOW + 1);
    let alice = o.tables.find_by(B, StreamId(1)).map(Client::id).expect("alice moved to B");
    // The rows as the glue would have stored them.
    let mut rows = std::collections::BTreeMap::new();
    for a in drain(&mut o).1 {
        match a {
            Action::Put { key, value } => drop(rows.insert(key, value)),
            Action::Delete { key } => drop(rows.remove(&key)),
            _ => {}
        }
    }
    let keys: Vec<&str> = rows.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "mux/00000000000a",
            "mux/00000000000a/0000000002",
            "mux/00000000000a/barrier",
            "mux/00000000000b",
            "mux/00000000000b/0000000001",
            "mux/00000000000b/0000000001/origin",
            "mux/00000000000b/0000000003",
        ]
    );
    rows.insert("mux/00000000000b/0000000009".into(), vec![7]); // undecodable: skipped
    rows.insert("wakes".into(), vec![1]); // the app's own: untouched

    // Hibernation; B is still there, A died without a close event.
    let mut woken = Object::restore(VectorApp::default(), [(B, "room".to_owned())], rows.clone(), NOW + 2);
    assert_eq!((woken.sockets(), woken.clients()), (1, 2));
    assert_eq!(woken.tables.find_by(B, StreamId(1)).map(Client::id), Some(alice), "an adopted client keeps its id");
    let events = std::mem::take(&mut woken.app_mut().events);
    assert_eq!(events.len(), 1, "bob, on the dead socket, closes: {events:?}");
    assert_eq!(events[0]["close"]["client"], "00000000000a:2");
    let deleted: Vec<String> = std::iter::from_fn(|| woken.poll_action())
        .filter_map(|a| if let Action::Delete { key } = a { Some(key) } else { None })
        .collect();
    assert_eq!(deleted, ["mux/00000000000a", "mux/00000000000a/0000000002", "mux/00000000000a/barrier"]);
    woken.handle_message(B, &batch(&[(FrameKind::Text, 1, b"all:back".to_vec())]), NOW + 3);
    let (frames, _, _) = drain(&mut woken);
    assert_eq!(frames.iter().map(|f| f.2).collect::<Vec<_>>(), [1, 3]);
}

#[test]
fn no_input_makes_the_core_panic() {
    use proptest::prelude::*;
    let frame = (0u8..12, 0u32..6, proptest::collection::vec(any::<u8>(), 0..24));
    let msgs = proptest::collection::vec(proptest::collection::vec(frame, 0..6), 1..12);
    proptest!(ProptestConfig::with_cases(300), |(msgs in msgs, close_at in 0usize..12)| {
        let mut o = Object::new(VectorApp::default());
        o.handle_accept(A, "room", &[A], NOW);
        o.handle_accept(B, "room", &[A, B], NOW);
        for (i, frames) in msgs.iter().enumerate() {
            let mut msg = vec![protocol::VERSION];
            for (kind, stream, payload) in frames {
                msg.push(*kind);
                msg.push(0);
                msg.extend_from_slice(&stream.to_be_bytes());
                let payload = if *kind == 1 { Open { path: "/rpc".into(), identity: who("p"), attach: None }.encode() } else { payload.clone() };
                msg.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                msg.extend_from_slice(&payload);
            }
            let socket = if i % 2 == 0 { A } else { B };
            o.handle_message(socket, &msg, NOW + i as u64);
            if i == close_at {
                o.handle_closed(A, 1000, "handed over", NOW + i as u64);
            }
            while o.poll_action().is_some() {}
        }
        o.handle_timeout(NOW + HANDOVER_GRACE_MS + 100);
        prop_assert_eq!(o.poll_timeout(), None);
    });
}

mod sessions {
    use protocol::session::{Attach, Envelope, SessionId, MAX_REPLAY_MESSAGES};

    use super::*;

    const S: SessionId = SessionId::from_bytes([7; 16]);

    fn attach(stream: u32, received: u64) -> (FrameKind, u32, Vec<u8>) {
        let open = Open { path: "/rpc".into(), identity: who("alice"), attach: Some(Attach { session: S, received }) };
        (FrameKind::Open, stream, open.encode())
    }

    fn welcome_of(frames: &[Sent]) -> Option<bool> {
        frames.iter().find_map(|(_, _, _, p)| match Envelope::decode(p) {
            Ok(Envelope::Welcome { resumed, .. }) => Some(resumed),
            _ => None,
        })
    }

    /// What came out, with the storage actions applied to `kv`.
    fn run(o: &mut Object<VectorApp>, kv: &mut std::collections::BTreeMap<String, Vec<u8>>) -> (Vec<Sent>, usize) {
        let (frames, store, _) = drain(o);
        let mut deleted = 0;
        for a in store {
            match a {
                Action::Put { key, value } => {
                    kv.insert(key, value);
                }
                Action::Delete { key } => {
                    deleted += usize::from(key.starts_with("sess/"));
                    kv.remove(&key);
                }
                _ => {}
            }
        }
        (frames, deleted)
    }

    /// A detached session keeps at most MAX_REPLAY_MESSAGES: a client that missed more
    /// cannot be resumed, one that missed fewer can, and every dropped message's row is
    /// deleted, so the object's storage stays bounded.
    #[test]
    fn a_detached_session_keeps_a_bounded_replay_and_knows_when_it_cannot_resume() {
        let mut kv = std::collections::BTreeMap::new();
        let mut o = Object::new(VectorApp::default());
        o.handle_accept(A, "room", &[A], NOW);
        o.handle_message(A, &batch(&[attach(5, 0)]), NOW);
        o.handle_closed(A, 1006, "", NOW + 1);
        o.handle_accept(B, "room", &[B], NOW + 2);
        let _ = run(&mut o, &mut kv);
        let sent = MAX_REPLAY_MESSAGES as u64 + 5;
        for i in 0..sent {
            o.broadcast(&|_| true, Msg::Text(&format!("n{i}")), NOW + 3);
        }
        let (_, deleted) = run(&mut o, &mut kv);
        // One journal record per broadcast (the session is detached: nothing is acknowledged).
        let records = kv.keys().filter(|k| k.starts_with("sess/log/")).count();
        assert_eq!((records, deleted), (MAX_REPLAY_MESSAGES, 5), "the oldest are dropped, records and all");
        // Woken from storage, a client that missed everything cannot go on: message 1 is gone.
        let mut woken = Object::restore(VectorApp::default(), [(B, "room".to_string())], kv.clone(), NOW + 4);
        woken.handle_message(B, &batch(&[attach(7, 0)]), NOW + 5);
        assert_eq!(welcome_of(&drain(&mut woken).0), Some(false));
        // One that has the first five needs only kept ones.
        o.handle_message(B, &batch(&[attach(7, 5)]), NOW + 5);
        let (frames, _) = run(&mut o, &mut kv);
        assert_eq!(welcome_of(&frames), Some(true));
        assert_eq!(frames.len(), 1 + MAX_REPLAY_MESSAGES, "the Welcome and every kept message");
        assert_eq!(o.counters().sessions.replayed, MAX_REPLAY_MESSAGES as u64);
    }

    fn data(stream: u32, seq: u64, ack: u64, text: &str) -> (FrameKind, u32, Vec<u8>) {
        (FrameKind::Binary, stream, Envelope::Data { text: true, seq, ack, payload: text.as_bytes() }.encode())
    }

    /// What sessions cost in storage: a broadcast to many sessions is one row, and an echo
    /// in a session is one row written and, once acknowledged, one deleted.
    #[test]
    fn a_broadcast_is_one_row_and_an_echo_two() {
        let mut kv = std::collections::BTreeMap::new();
        let mut o = Object::new(VectorApp::default());
        o.handle_accept(A, "room", &[A], NOW);
        let attach_n = |stream: u32, n: u8| {
            let id = SessionId::from_bytes([n; 16]);
            let open =
                Open { path: "/rpc".into(), identity: who("alice"), attach: Some(Attach { session: id, received: 0 }) };
            (FrameKind::Open, stream, open.encode())
        };
        let opens: Vec<_> = (1..=50).map(|i| attach_n(i, i as u8)).collect();
        o.handle_message(A, &batch(&opens), NOW);
        let _ = run(&mut o, &mut kv);
        o.broadcast(&|_| true, Msg::Text("to everyone"), NOW + 1);
        let (_, store, _) = drain(&mut o);
        let rows: Vec<_> = store
            .iter()
            .map(|a| match a {
                Action::Put { key, .. } | Action::Delete { key } => key.clone(),
                _ => String::new(),
            })
            .collect();
        assert_eq!(rows.len(), 1, "one record for a broadcast to 50 sessions: {rows:?}");
        // An echo session: each round trip writes its record and deletes the last one.
        let mut o = Object::new(VectorApp::default());
        o.handle_accept(A, "room", &[A], NOW);
        o.handle_message(A, &batch(&[attach(5, 0)]), NOW);
        let _ = run(&mut o, &mut kv);
        let mut rows = 0;
        for seq in 1..=100u64 {
            o.handle_message(A, &batch(&[data(5, seq, seq - 1, "echo me")]), NOW + seq);
            let (_, store, _) = drain(&mut o);
            rows += store.iter().filter(|a| matches!(a, Action::Put { .. } | Action::Delete { .. })).count();
        }
        assert_eq!(rows, 199, "a record per echo, and the one before it deleted: {rows}");
    }

    fn attach_as(stream: u32, subject: &str, session: SessionId, received: u64) -> (FrameKind, u32, Vec<u8>) {
        let open = Open { path: "/rpc".into(), identity: who(subject), attach: Some(Attach { session, received }) };
        (FrameKind::Open, stream, open.encode())
    }

    fn close(stream: u32, code: u16, reason: &str) -> (FrameKind, u32, Vec<u8>) {
        (FrameKind::Close, stream, protocol::Close { code, reason: reason.into() }.encode())
    }

    fn ack(stream: u32, ack: u64) -> (FrameKind, u32, Vec<u8>) {
        (FrameKind::Binary, stream, Envelope::Ack { ack }.encode())
    }

    /// Data frames sent on `stream` (not Welcome or Ack): their seqs.
    fn replayed(frames: &[Sent], stream: u32) -> Vec<u64> {
        frames.iter().filter(|f| f.2 == stream).filter_map(|(_, _, _, p)| Envelope::data_seq(p)).collect()
    }

    /// Alice's session S and bob's T on socket A, each with one broadcast "x" in the same
    /// record, then whatever `then` does; the object is then rebuilt from storage.
    fn woken_after(
        then: impl FnOnce(&mut Object<VectorApp>, &mut std::collections::BTreeMap<String, Vec<u8>>),
    ) -> Object<VectorApp> {
        let (s, t) = (SessionId::from_bytes([1; 16]), SessionId::from_bytes([2; 16]));
        let mut kv = std::collections::BTreeMap::new();
        let mut o = Object::new(VectorApp::default());
        o.handle_accept(A, "room", &[A], NOW);
        o.handle_message(A, &batch(&[attach_as(5, "alice", s, 0), attach_as(6, "bob", t, 0)]), NOW);
        o.broadcast(&|_| true, Msg::Text("x"), NOW + 1);
        let _ = run(&mut o, &mut kv);
        then(&mut o, &mut kv);
        let _ = run(&mut o, &mut kv);
        Object::restore(VectorApp::default(), [(A, "room".to_string())], kv, NOW + 100)
    }

    /// A session that came back too late begins anew under its id; a record of its
    /// earlier life that bob still holds is not the new one's after a wake.
    #[test]
    fn a_session_begun_anew_does_not_inherit_its_earlier_lifes_records() {
        let s = SessionId::from_bytes([1; 16]);
        let mut o = woken_after(|o, _| {
            o.handle_message(A, &batch(&[close(5, 1006, "")]), NOW + 2);
            o.handle_message(A, &batch(&[attach_as(7, "alice", s, 9)]), NOW + 3);
        });
        o.handle_message(A, &batch(&[attach_as(8, "alice", s, 0)]), NOW + 101);
        let (frames, _, _) = drain(&mut o);
        assert_eq!(welcome_of(&frames), Some(true), "the new session goes on");
        assert_eq!(replayed(&frames, 8), Vec::<u64>::new(), "and gets nothing of the old one's");
    }

    /// A message still in a record bob holds must not make alice's session look
    /// resumable from before a message of hers that is gone; from after it, it is.
    #[test]
    fn a_woken_session_is_never_resumed_across_a_gap() {
        let s = SessionId::from_bytes([1; 16]);
        let gap = |o: &mut Object<VectorApp>, kv: &mut std::collections::BTreeMap<String, Vec<u8>>| {
            o.broadcast(&|c| c.identity.subject == "alice", Msg::Text("two"), NOW + 2);
            let _ = run(o, kv);
            o.handle_message(A, &batch(&[ack(5, 2)]), NOW + 3);
            let _ = run(o, kv);
            o.broadcast(&|c| c.identity.subject == "alice", Msg::Text("three"), NOW + 4);
        };
        let mut o = woken_after(gap);
        o.handle_message(A, &batch(&[attach_as(9, "alice", s, 0)]), NOW + 101);
        let (frames, _, _) = drain(&mut o);
        assert_eq!(welcome_of(&frames), Some(false), "1 is in bob's record but 2 is gone: not resumable from 0");
        let mut o = woken_after(gap);
        o.handle_message(A, &batch(&[attach_as(9, "alice", s, 2)]), NOW + 101);
        let (frames, _, _) = drain(&mut o);
        assert_eq!((welcome_of(&frames), replayed(&frames, 9)), (Some(true), vec![3]), "from 2 it goes on");
    }

    /// A message too large to keep: nothing older is kept either, so no replay skips it.
    #[test]
    fn a_replay_never_skips_a_message_too_large_to_keep() {
        let s = SessionId::from_bytes([1; 16]);
        let big = "b".repeat(protocol::session::MAX_REPLAY_BYTES + 1);
        let mut kv = std::collections::BTreeMap::new();
        let mut o = Object::new(VectorApp::default());
        o.handle_accept(A, "room", &[A], NOW);
        o.handle_message(A, &batch(&[attach_as(5, "alice", s, 0)]), NOW);
        for m in ["one", big.as_str(), "three"] {
            o.broadcast(&|_| true, Msg::Text(m), NOW + 1);
        }
        o.handle_message(A, &batch(&[close(5, 1006, "")]), NOW + 2);
        let _ = run(&mut o, &mut kv);
        o.handle_message(A, &batch(&[attach_as(6, "alice", s, 1)]), NOW + 3);
        let (frames, _, _) = drain(&mut o);
        assert_eq!(welcome_of(&frames), Some(false), "it missed the large one: not resumable");
    }
}
