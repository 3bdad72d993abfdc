use super::*;
use crate::rpc::tests::FakeDb;
use protocol::{
    decode_message, encode_frame, single_frame_message, Close, ErrorFrame, FrameKind, Identity, Open, StreamId,
};
use snippet_proxy_do::Client;

fn frames(msg: &[u8]) -> Vec<(FrameKind, StreamId, Vec<u8>)> {
    decode_message(msg)
        .expect("version")
        .map(|f| f.map(|f| (f.kind, f.stream, f.payload.to_vec())))
        .collect::<Result<_, _>>()
        .expect("frames")
}

fn batch(items: &[(FrameKind, u32, Vec<u8>)]) -> Vec<u8> {
    let mut msg = Vec::new();
    protocol::begin_message(&mut msg);
    for (k, s, p) in items {
        encode_frame(&mut msg, *k, StreamId(*s), p).expect("small");
    }
    msg
}

/// Time of every call in these tests; `who` tokens expire at 2,000.
const NOW: u64 = 1_000;

fn who(scopes: &str) -> Identity {
    Identity { subject: "alice".into(), tenant: "t".into(), scopes: scopes.into(), expires_at: 2_000 }
}

fn open(path: &str) -> Vec<u8> {
    open_as(path, who("admin"))
}

fn open_as(path: &str, identity: Identity) -> Vec<u8> {
    Open { path: path.into(), identity }.encode()
}

fn session() -> Session {
    Session::new("t")
}

#[test]
fn echo_and_rpc_streams_in_one_batch_answer_in_one_batch() {
    let mut s = session();
    let mut db = FakeDb::default();
    let msg = batch(&[
        (FrameKind::Open, 1, open("/echo")),
        (FrameKind::Open, 2, open("/rpc")),
        (FrameKind::Binary, 1, vec![0, 159, 255]),
        (FrameKind::Text, 2, br#"{"jsonrpc":"2.0","method":"ping","id":1}"#.to_vec()),
        (FrameKind::Text, 1, b"same id 1".to_vec()),
    ]);
    let out = s.handle_message(&msg, &mut db, NOW);
    assert_eq!(out.opened, vec![1, 2]);
    assert_eq!(out.frames, 5);
    let got = frames(&out.replies.into_iter().next().expect("reply"));
    assert_eq!(got[0], (FrameKind::Binary, StreamId(1), vec![0, 159, 255]));
    assert_eq!(got[1].0, FrameKind::Text);
    assert_eq!(got[1].1, StreamId(2));
    assert!(String::from_utf8_lossy(&got[1].2).contains("pong"));
    assert_eq!(got[2], (FrameKind::Text, StreamId(1), b"same id 1".to_vec()));
}

#[test]
fn unknown_service_and_stream_get_stream_errors() {
    let mut s = session();
    let mut db = FakeDb::default();
    let out = s.handle_message(
        &batch(&[(FrameKind::Open, 3, open("/nope")), (FrameKind::Text, 4, b"x".to_vec())]),
        &mut db,
        NOW,
    );
    let got = frames(&out.replies.into_iter().next().expect("reply"));
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, FrameKind::Error);
    assert_eq!(ErrorFrame::decode(&got[0].2).expect("err").code, 404);
    assert_eq!(got[1].1, StreamId(4));
    assert_eq!(out.errors, 2);
}

#[test]
fn malformed_frames_get_a_session_error_and_earlier_frames_still_count() {
    let mut s = session();
    let mut db = FakeDb::default();
    let mut msg = batch(&[(FrameKind::Open, 1, open("/echo")), (FrameKind::Text, 1, b"ok".to_vec())]);
    msg.extend_from_slice(&[99, 0, 0]); // garbage after two good frames
    let out = s.handle_message(&msg, &mut db, NOW);
    let got = frames(&out.replies.into_iter().next().expect("reply"));
    assert_eq!(got[0], (FrameKind::Text, StreamId(1), b"ok".to_vec()));
    assert_eq!((got[1].0, got[1].1), (FrameKind::Error, StreamId::SESSION));
    // the session still works for the next message
    let out = s.handle_message(&single_frame_message(FrameKind::Text, StreamId(1), b"again"), &mut db, NOW);
    assert_eq!(frames(&out.replies.into_iter().next().expect("reply"))[0].2, b"again".to_vec());
    // wrong version / empty
    for bad in [&[][..], &[42, 1, 2][..]] {
        let out = s.handle_message(bad, &mut db, NOW);
        assert_eq!(frames(&out.replies.into_iter().next().expect("reply"))[0].1, StreamId::SESSION);
    }
}

#[test]
fn close_forgets_the_stream_and_entries_survive_persistence() {
    let mut s = session();
    let mut db = FakeDb::default();
    let out = s.handle_message(
        &batch(&[(FrameKind::Open, 1, open("/echo")), (FrameKind::Open, 2, open_as("/rpc", who("read")))]),
        &mut db,
        NOW,
    );
    // What the object persists per stream, and how it rebuilds the table after a wake.
    let mut restored = session();
    for id in out.opened {
        let saved = s.streams.get(&id).expect("entry").encode();
        assert_eq!(saved[0], if id == 1 { 2 } else { 1 }, "stored as always: 1 = rpc, 2 = echo");
        let entry = Client::decode(StreamId(id), &saved, SERVICES).expect("decodes");
        assert_eq!(entry.identity, s.streams[&id].identity);
        assert_eq!(crate::Grants::of(&entry.identity), crate::Grants::of(&s.streams[&id].identity));
        assert_eq!(entry.service, s.streams[&id].service);
        restored.streams.insert(id, entry);
    }
    assert!(
        Client::decode(StreamId(1), &[9], SERVICES).is_none() && Client::decode(StreamId(1), &[], SERVICES).is_none()
    );
    let out = restored.handle_message(
        &batch(&[
            (FrameKind::Close, 1, Close { code: 1000, reason: String::new() }.encode()),
            (FrameKind::Text, 1, b"x".to_vec()),
        ]),
        &mut db,
        NOW,
    );
    assert_eq!(out.closed, vec![1]);
    assert_eq!(frames(&out.replies.into_iter().next().expect("reply"))[0].0, FrameKind::Error);
    assert_eq!(restored.streams.len(), 1);
    // The restored read-only caller is still read-only.
    let q = br#"{"jsonrpc":"2.0","method":"sql","params":{"sql":"insert into t values (1)"},"id":1}"#;
    let out = restored.handle_message(&single_frame_message(FrameKind::Text, StreamId(2), q), &mut db, NOW);
    let reply = String::from_utf8(frames(&out.replies.into_iter().next().expect("reply"))[0].2.clone()).expect("utf8");
    assert!(reply.contains(&crate::rpc::code::READ_ONLY.to_string()), "{reply}");
}

#[test]
fn http_requests_ride_as_single_frames() {
    let mut s = session();
    let mut db = FakeDb::default();
    let req = |path: &str, body: &[u8]| {
        Request {
            method: "POST".into(),
            path: path.into(),
            content_type: "application/json".into(),
            identity: who("read"),
            body: body.to_vec(),
        }
        .encode()
    };
    let out = s.handle_message(
        &batch(&[
            (FrameKind::Request, 7, req("/rpc", br#"{"jsonrpc":"2.0","method":"ping","id":1}"#)),
            (FrameKind::Request, 8, req("/query", br#"{"sql":"select ?","params":[1]}"#)),
            (FrameKind::Request, 9, req("/nope", b"")),
        ]),
        &mut db,
        NOW,
    );
    let got = frames(&out.replies.into_iter().next().expect("reply"));
    let res: Vec<Response> = got.iter().map(|f| Response::decode(&f.2).expect("response")).collect();
    assert_eq!(res.iter().map(|r| r.status).collect::<Vec<_>>(), vec![200, 200, 404]);
    assert!(String::from_utf8_lossy(&res[0].body).contains("pong"));
    assert!(out.opened.is_empty() && out.closed.is_empty(), "HTTP streams leave no state behind");
}

#[test]
fn random_garbage_never_panics() {
    let mut s = session();
    let mut db = FakeDb::default();
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
        let _ = s.handle_message(&msg, &mut db, NOW);
    }
}

#[test]
fn streams_are_opened_only_for_this_tenant_and_an_unexpired_caller() {
    let mut s = session();
    let mut db = FakeDb::default();
    let other = Identity { tenant: "other".into(), ..who("admin") };
    let expired = Identity { expires_at: NOW, ..who("admin") };
    let any = Identity { tenant: protocol::ANY_TENANT.into(), ..who("read") };
    let out = s.handle_message(
        &batch(&[
            (FrameKind::Open, 1, open_as("/rpc", other)),
            (FrameKind::Open, 2, open_as("/rpc", expired)),
            (FrameKind::Open, 3, open_as("/rpc", any)),
        ]),
        &mut db,
        NOW,
    );
    let got = frames(&out.replies.into_iter().next().expect("reply"));
    assert_eq!(got.len(), 2, "{got:?}");
    for (f, id) in got.iter().zip([1, 2]) {
        assert_eq!((f.0, f.1), (FrameKind::Error, StreamId(id)));
        assert_eq!(ErrorFrame::decode(&f.2).expect("error").code, 403);
    }
    assert_eq!(out.opened, vec![3]);
}

#[test]
fn a_stream_whose_token_expires_is_refused_from_then_on() {
    let mut s = session();
    let mut db = FakeDb::default();
    s.handle_message(&single_frame_message(FrameKind::Open, StreamId(1), &open_as("/echo", who("read"))), &mut db, NOW);
    let ping = single_frame_message(FrameKind::Text, StreamId(1), b"hi");
    assert_eq!(
        frames(&s.handle_message(&ping, &mut db, 1_999).replies.into_iter().next().expect("reply"))[0].0,
        FrameKind::Text
    );
    let late = frames(&s.handle_message(&ping, &mut db, 2_000).replies.into_iter().next().expect("reply"));
    assert_eq!(late[0].0, FrameKind::Error);
    assert_eq!(ErrorFrame::decode(&late[0].2).expect("error").code, 401);
}

#[test]
fn the_echo_service_needs_read() {
    let mut s = session();
    let mut db = FakeDb::default();
    let msg = batch(&[(FrameKind::Open, 1, open_as("/echo", who("publish"))), (FrameKind::Text, 1, b"x".to_vec())]);
    let got = frames(&s.handle_message(&msg, &mut db, NOW).replies.into_iter().next().expect("reply"));
    assert_eq!(ErrorFrame::decode(&got[0].2).expect("error").code, 403);
}

#[test]
fn replies_are_split_into_messages_within_the_batch_bound() {
    let mut s = session();
    let mut db = FakeDb::default();
    let opens: Vec<(FrameKind, u32, Vec<u8>)> = (1..=8).map(|i| (FrameKind::Open, i, open("/echo"))).collect();
    s.handle_message(&batch(&opens), &mut db, NOW);
    // Eight echoes of 100 KiB: three fit under 256 KiB per message.
    let echoes: Vec<(FrameKind, u32, Vec<u8>)> =
        (1..=8).map(|i| (FrameKind::Binary, i, vec![i as u8; 100 * 1024])).collect();
    let out = s.handle_message(&batch(&echoes), &mut db, NOW);
    assert!(out.replies.len() >= 3, "{} messages", out.replies.len());
    let mut seen = Vec::new();
    for msg in &out.replies {
        assert!(msg.len() <= MAX_BATCH_BYTES, "{} bytes", msg.len());
        seen.extend(frames(msg).into_iter().map(|(_, id, payload)| (id.0, payload.len())));
    }
    let expected: Vec<(u32, usize)> = (1..=8).map(|i| (i, 100 * 1024)).collect();
    assert_eq!(seen, expected, "every echo once, in order");
}

#[test]
fn a_push_to_many_streams_is_split_and_one_oversized_frame_travels_alone() {
    let streams: Vec<u32> = (1..=40).collect();
    let note = "n".repeat(60 * 1024);
    let msgs = push_batches(&streams, Msg::Text(&note));
    assert!(msgs.iter().all(|m| m.len() <= MAX_BATCH_BYTES));
    let ids: Vec<u32> = msgs.iter().flat_map(|m| frames(m)).map(|(_, id, _)| id.0).collect();
    assert_eq!(ids, streams, "each listener once, in order");
    let big = "b".repeat(MAX_BATCH_BYTES);
    let msgs = push_batches(&[1, 2], Msg::Text(&big));
    assert_eq!(msgs.len(), 2, "a frame above the bound gets its own message");
}
