//! The interface as an application sees it, through a tiny chat app: clients join a
//! room, what one says goes to everyone, `/quit` closes the stream from the server side.

use super::*;
use crate::{push_batches, NoFanout, Refusal, MAX_BATCH_BYTES};
use protocol::{decode_message, encode_frame, single_frame_message, ErrorFrame, Identity};

/// A chat room and an echo service.
#[derive(Default)]
struct Chat {
    /// What the app was told, in order.
    log: Vec<String>,
}

const CHAT: &str = "/chat";

fn in_room(c: &Client) -> bool {
    c.service == CHAT
}

impl App for Chat {
    const SERVICES: &'static [&'static str] = &[CHAT, "/echo"];

    fn on_open(&mut self, client: &Client, out: &mut Out<'_>) -> Result<(), Refusal> {
        if client.identity.subject == "mallory" {
            return Err(Refusal::new(403, "not in this room"));
        }
        self.log.push(format!("open {} {} {}", client.stream, client.service, client.identity.subject));
        if client.service == CHAT {
            out.broadcast(&in_room, Msg::Text(&format!("{} joined", client.identity.subject)));
        }
        Ok(())
    }

    fn on_message(&mut self, client: &Client, msg: Msg<'_>, out: &mut Out<'_>) -> Result<(), Refusal> {
        match (client.service, msg) {
            ("/echo", msg) => out.reply(client.stream, msg),
            (_, Msg::Text("/quit")) => out.close(client.stream, 1000, "bye"),
            (_, Msg::Text(text)) => {
                let n = out.broadcast(&in_room, Msg::Text(&format!("{}: {text}", client.identity.subject)));
                self.log.push(format!("said to {n}"));
            }
            (_, Msg::Binary(_)) => return Err(Refusal::new(415, "the room takes text")),
        }
        Ok(())
    }

    fn on_request(&mut self, req: &Request, out: &mut Out<'_>) -> Response {
        let body = format!("hello {} from {} at {}", req.identity.subject, out.tenant(), out.now_secs());
        Response { status: 200, content_type: "text/plain".into(), body: body.into_bytes() }
    }

    fn on_close(&mut self, client: &Client, code: u16, reason: &str, out: &mut Out<'_>) {
        self.log.push(format!("close {} {code} {reason}", client.stream));
        out.reply(client.stream, Msg::Text("too late: the stream is gone"));
        if client.service == CHAT {
            out.broadcast(&in_room, Msg::Text(&format!("{} left", client.identity.subject)));
        }
    }
}

/// The other sockets of the object: records what was sent to them.
#[derive(Default)]
struct Others {
    sent: Vec<String>,
}

impl Fanout for Others {
    fn broadcast(&mut self, _: &dyn Fn(&Client) -> bool, msg: Msg<'_>) -> u64 {
        self.sent.push(String::from_utf8_lossy(msg.as_bytes()).into_owned());
        2
    }
}

const NOW: u64 = 1_000;

fn who(subject: &str) -> Identity {
    Identity { subject: subject.into(), tenant: "room".into(), scopes: String::new(), expires_at: 2_000 }
}

fn open(path: &str, subject: &str) -> Vec<u8> {
    Open { path: path.into(), identity: who(subject) }.encode()
}

fn batch(items: &[(FrameKind, u32, Vec<u8>)]) -> Vec<u8> {
    let mut msg = Vec::new();
    protocol::begin_message(&mut msg);
    for (k, s, p) in items {
        encode_frame(&mut msg, *k, StreamId(*s), p).expect("small");
    }
    msg
}

/// Every frame of every message, as (kind, stream, payload).
fn frames(msgs: &[Vec<u8>]) -> Vec<(FrameKind, u32, Vec<u8>)> {
    msgs.iter()
        .flat_map(|m| decode_message(m).expect("version").map(|f| f.expect("frame")))
        .map(|f| (f.kind, f.stream.0, f.payload.to_vec()))
        .collect()
}

fn text(stream: u32, s: &str) -> (FrameKind, u32, Vec<u8>) {
    (FrameKind::Text, stream, s.as_bytes().to_vec())
}

fn room() -> (Session, Chat, Others) {
    (Session::new("room"), Chat::default(), Others::default())
}

#[test]
fn clients_open_talk_and_leave_without_the_app_seeing_a_frame() {
    let (mut s, mut app, mut others) = room();
    let out = s.handle_message(
        &mut app,
        &batch(&[
            (FrameKind::Open, 1, open(CHAT, "alice")),
            (FrameKind::Open, 2, open(CHAT, "bob")),
            (FrameKind::Open, 3, open("/echo", "carol")),
            (FrameKind::Text, 1, b"hi all".to_vec()),
            (FrameKind::Binary, 3, vec![0, 255]),
        ]),
        NOW,
        &mut others,
    );
    assert_eq!(out.opened, vec![1, 2, 3]);
    assert_eq!(app.log, ["open 1 /chat alice", "open 2 /chat bob", "open 3 /echo carol", "said to 4"]);
    // Pushes to this socket's own streams leave first (each broadcast as it happened:
    // alice's join reached nobody here yet, bob's reached alice), then the replies.
    let got = frames(&out.replies);
    assert_eq!(
        got,
        [
            text(1, "bob joined"),
            text(1, "alice: hi all"),
            text(2, "alice: hi all"),
            (FrameKind::Binary, 3, vec![0, 255]),
        ]
    );
    assert_eq!(others.sent, ["alice joined", "bob joined", "alice: hi all"], "the other sockets hear everything");

    // Leaving: the client closes stream 2; the app closes stream 1 on `/quit`.
    let out = s.handle_message(
        &mut app,
        &batch(&[
            (FrameKind::Close, 2, Close { code: 1001, reason: "tab closed".into() }.encode()),
            (FrameKind::Text, 1, b"/quit".to_vec()),
            (FrameKind::Text, 1, b"still there?".to_vec()),
        ]),
        NOW,
        &mut others,
    );
    assert_eq!(out.closed, vec![2, 1]);
    assert_eq!(out.touched(), vec![1, 2]);
    let got = frames(&out.replies);
    assert_eq!(got[0], text(1, "bob left"));
    assert_eq!((got[1].0, got[1].1), (FrameKind::Close, 1));
    assert_eq!(Close::decode(&got[1].2).expect("close"), Close { code: 1000, reason: "bye".into() });
    assert_eq!((got[2].0, got[2].1), (FrameKind::Error, 1), "nothing reaches a closed stream");
    assert!(app.log.contains(&"close 2 1001 tab closed".to_string()));
    assert_eq!(s.streams.keys().copied().collect::<Vec<_>>(), vec![3]);
}

#[test]
fn refusals_and_protocol_errors_become_error_frames_on_their_stream() {
    let (mut s, mut app, mut others) = room();
    let wrong_tenant = Open { path: CHAT.into(), identity: Identity { tenant: "other".into(), ..who("eve") } };
    let expired = Open { path: CHAT.into(), identity: Identity { expires_at: NOW, ..who("old") } };
    let out = s.handle_message(
        &mut app,
        &batch(&[
            (FrameKind::Open, 1, open(CHAT, "mallory")),
            (FrameKind::Open, 2, open("/nope", "alice")),
            (FrameKind::Open, 3, wrong_tenant.encode()),
            (FrameKind::Open, 4, expired.encode()),
            (FrameKind::Open, 0, open(CHAT, "alice")),
            (FrameKind::Open, 5, vec![1]),
            (FrameKind::Open, 6, open(CHAT, "alice")),
            (FrameKind::Binary, 6, vec![1, 2]),
            (FrameKind::Text, 7, b"who?".to_vec()),
        ]),
        NOW,
        &mut others,
    );
    let errors: Vec<(u32, u16, String)> = frames(&out.replies)
        .into_iter()
        .filter(|f| f.0 == FrameKind::Error)
        .map(|f| {
            let e = ErrorFrame::decode(&f.2).expect("error");
            (f.1, e.code, e.message)
        })
        .collect();
    let codes: Vec<(u32, u16)> = errors.iter().map(|e| (e.0, e.1)).collect();
    assert_eq!(codes, [(1, 403), (2, 404), (3, 403), (4, 403), (0, 400), (5, 400), (6, 415), (7, 404)]);
    assert_eq!(errors[1].2, r#"no service at "/nope" (try /chat or /echo)"#);
    assert_eq!(out.errors, 8);
    assert_eq!(out.opened, vec![6], "refused streams leave no entry");
    // An error ends its stream at the snippet, which sends no Close for it: the session
    // forgets it at once, and the app hears it closed, with the code the client got.
    assert_eq!(out.closed, vec![6], "a stream answered with an error is forgotten");
    assert_eq!(app.log.last().map(String::as_str), Some("close 6 1011 refused by the backend"));
    assert_eq!(s.streams.len(), 0);

    // A stream whose token expires is refused from then on, before the app sees its message.
    let fresh = s.handle_message(&mut app, &batch(&[(FrameKind::Open, 8, open("/echo", "alice"))]), NOW, &mut others);
    assert_eq!(fresh.opened, vec![8]);
    let said = app.log.len();
    let late =
        s.handle_message(&mut app, &single_frame_message(FrameKind::Text, StreamId(8), b"x"), 2_000, &mut others);
    let e = ErrorFrame::decode(&frames(&late.replies)[0].2).expect("error");
    assert_eq!(e.code, 401);
    assert_eq!(late.closed, vec![8]);
    assert_eq!(app.log[said..], ["close 8 1008 refused by the backend: not allowed".to_owned()], "only its close");

    // An undecodable message gets one session error; the session carries on.
    let bad = s.handle_message(&mut app, &[9, 1], NOW, &mut others);
    assert_eq!(frames(&bad.replies)[0].1, 0);
}

#[test]
fn requests_are_admitted_then_answered_on_their_stream() {
    let (mut s, mut app, mut others) = room();
    let req = |identity| {
        Request { method: "POST".into(), path: "/hello".into(), content_type: String::new(), identity, body: vec![] }
            .encode()
    };
    let out = s.handle_message(
        &mut app,
        &batch(&[
            (FrameKind::Request, 7, req(who("alice"))),
            (FrameKind::Request, 8, req(Identity { tenant: "other".into(), ..who("eve") })),
            (FrameKind::Request, 9, req(Identity { expires_at: 1, ..who("old") })),
            (FrameKind::Request, 10, vec![0]),
        ]),
        NOW,
        &mut others,
    );
    let got = frames(&out.replies);
    let responses: Vec<Response> = got.iter().take(3).map(|f| Response::decode(&f.2).expect("response")).collect();
    assert_eq!(responses.iter().map(|r| r.status).collect::<Vec<_>>(), [200, 403, 401]);
    assert_eq!(responses[0].body, b"hello alice from room at 1000");
    assert_eq!(responses[1].content_type, "application/json");
    assert_eq!((got[3].0, got[3].1), (FrameKind::Error, 10));
    assert!(s.streams.is_empty() && out.touched().is_empty(), "requests leave no state");
}

#[test]
fn replies_are_batched_under_the_cap_and_the_barrier_pong_follows_every_earlier_reply() {
    let (mut s, mut app, mut others) = room();
    let opens: Vec<(FrameKind, u32, Vec<u8>)> = (1..=8).map(|i| (FrameKind::Open, i, open("/echo", "e"))).collect();
    s.handle_message(&mut app, &batch(&opens), NOW, &mut others);
    // Eight echoes of 100 KiB with a barrier Ping after the fifth: the replies need
    // several messages, and the Pong comes after the fifth echo and before the sixth.
    let mut items: Vec<(FrameKind, u32, Vec<u8>)> =
        (1..=8).map(|i| (FrameKind::Binary, i, vec![i as u8; 100 * 1024])).collect();
    items.insert(5, (FrameKind::Ping, 0, vec![1, 0, 0, 0, 0, 0, 0, 0, 7]));
    let out = s.handle_message(&mut app, &batch(&items), NOW, &mut others);
    assert!(out.replies.len() >= 3, "{} messages", out.replies.len());
    assert!(out.replies.iter().all(|m| m.len() <= MAX_BATCH_BYTES));
    let order: Vec<(FrameKind, u32)> = frames(&out.replies).into_iter().map(|f| (f.0, f.1)).collect();
    let mut expected: Vec<(FrameKind, u32)> = (1..=8).map(|i| (FrameKind::Binary, i)).collect();
    expected.insert(5, (FrameKind::Pong, 0));
    assert_eq!(order, expected);

    // A broadcast to many streams is split the same way; one frame above the cap goes alone.
    let many: Vec<u32> = (1..=40).collect();
    let msgs = push_batches(&many, Msg::Text(&"n".repeat(60 * 1024)));
    assert!(msgs.iter().all(|m| m.len() <= MAX_BATCH_BYTES));
    assert_eq!(frames(&msgs).iter().map(|f| f.1).collect::<Vec<_>>(), many);
    assert_eq!(push_batches(&[1, 2], Msg::Binary(&vec![0; MAX_BATCH_BYTES])).len(), 2);
}

#[test]
fn a_table_restored_from_storage_carries_on_after_hibernation() {
    let (mut s, mut app, mut others) = room();
    let out = s.handle_message(
        &mut app,
        &batch(&[(FrameKind::Open, 7, open(CHAT, "alice")), (FrameKind::Open, 12, open("/echo", "bob"))]),
        NOW,
        &mut NoFanout,
    );
    // What the glue stores for each touched stream, under the keys backend-do has
    // always used; then the object hibernates and a new instance reads them back.
    let stored: Vec<(String, Vec<u8>)> = out
        .touched()
        .into_iter()
        .filter_map(|id| s.streams.get(&id).map(|c| (stream_key("0123456789ab", id), c.encode())))
        .collect();
    assert_eq!(stored[0].0, "mux/0123456789ab/0000000007");
    assert_eq!(stored[1].1[0], 2, "the second service is stored as 2");
    assert_eq!(stream_prefix("0123456789ab"), "mux/0123456789ab/");
    assert_eq!(socket_key("0123456789ab"), "mux/0123456789ab");
    let mut junk = stored.clone();
    junk.push(("mux/0123456789ab/0000000009".into(), vec![3]));
    junk.push(("mux/0123456789ab/x".into(), stored[0].1.clone()));
    let mut restored = Session::restore("room", Chat::SERVICES, junk);
    assert_eq!(restored.streams, s.streams, "undecodable entries are skipped");

    let out = restored.handle_message(
        &mut app,
        &batch(&[(FrameKind::Text, 7, b"back".to_vec()), (FrameKind::Text, 12, b"echo".to_vec())]),
        NOW,
        &mut others,
    );
    assert_eq!(frames(&out.replies), [text(7, "alice: back"), text(12, "echo")]);
}

#[test]
fn when_the_socket_goes_every_stream_closes_and_only_other_sockets_hear_of_it() {
    let (mut s, mut app, mut others) = room();
    s.handle_message(
        &mut app,
        &batch(&[(FrameKind::Open, 1, open(CHAT, "alice")), (FrameKind::Open, 2, open("/echo", "bob"))]),
        NOW,
        &mut NoFanout,
    );
    s.end(&mut app, 1006, "gone", NOW, &mut others);
    assert!(s.streams.is_empty());
    assert!(app.log.ends_with(&["close 1 1006 gone".to_string(), "close 2 1006 gone".to_string()]));
    assert_eq!(others.sent, ["alice left"]);
    assert_eq!(reciprocal_close_code(1006), 1000);
    assert_eq!(reciprocal_close_code(4001), 4001);
    assert_eq!(reciprocal_close_code(70_000), 1000);
}

#[test]
fn text_that_is_not_utf8_arrives_as_binary_and_nothing_panics() {
    let (mut s, mut app, mut others) = room();
    s.handle_message(
        &mut app,
        &single_frame_message(FrameKind::Open, StreamId(1), &open("/echo", "e")),
        NOW,
        &mut others,
    );
    let out =
        s.handle_message(&mut app, &single_frame_message(FrameKind::Text, StreamId(1), &[0xff]), NOW, &mut others);
    assert_eq!(frames(&out.replies)[0].0, FrameKind::Binary);
    let mut x: u64 = 7;
    for _ in 0..20_000 {
        let len = (x % 40) as usize;
        let msg: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x.is_multiple_of(5) {
                    protocol::VERSION
                } else {
                    x as u8
                }
            })
            .collect();
        let _ = s.handle_message(&mut app, &msg, NOW, &mut others);
    }
}
