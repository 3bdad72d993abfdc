//! backend-do's services through the real object core (do-server's `Object`): what this
//! backend adds — JSON-RPC and echo on streams and as requests, the read scope, pushes
//! to listening streams, a read-only caller staying read-only across hibernation. The
//! core's own behaviour (admission, batching, errors, hand-overs) is do-server's to test.

use super::*;
use crate::rpc::tests::FakeDb;
use protocol::{decode_message, encode_frame, ErrorFrame, FrameKind, Identity, Open, StreamId};
use snippet_proxy_do::{Action, Object, SocketId};

/// Time of every call in these tests (ms); `who` tokens expire at 2,000 s.
const NOW: u64 = 1_000_000;

fn socket() -> SocketId {
    SocketId::from_bits(1)
}

fn who(scopes: &str) -> Identity {
    Identity { subject: "alice".into(), tenant: "t".into(), scopes: scopes.into(), expires_at: 2_000 }
}

fn open_as(path: &str, identity: Identity) -> Vec<u8> {
    Open { path: path.into(), identity, attach: None }.encode()
}

fn batch(items: &[(FrameKind, u32, Vec<u8>)]) -> Vec<u8> {
    let mut msg = Vec::new();
    protocol::begin_message(&mut msg);
    for (k, s, p) in items {
        encode_frame(&mut msg, *k, StreamId(*s), p).expect("small");
    }
    msg
}

fn object() -> Object<Backend<FakeDb>> {
    let mut o = Object::new(Backend::new(FakeDb::default()));
    o.handle_accept(socket(), "t", &[socket()], NOW);
    while o.poll_action().is_some() {}
    o
}

/// A frame as (kind, stream, payload); a stored row as (key, value).
type Frame = (FrameKind, u32, Vec<u8>);
type Row = (String, Vec<u8>);

/// Every frame sent since the last call, and the rows written.
fn sent(o: &mut Object<Backend<FakeDb>>) -> (Vec<Frame>, Vec<Row>) {
    let (mut frames, mut rows) = (Vec::new(), Vec::new());
    while let Some(a) = o.poll_action() {
        match a {
            Action::Send { message, .. } => {
                for f in decode_message(&message).expect("version") {
                    let f = f.expect("frame");
                    frames.push((f.kind, f.stream.0, f.payload.to_vec()));
                }
            }
            Action::Put { key, value } => rows.push((key, value)),
            _ => {}
        }
    }
    (frames, rows)
}

#[test]
fn echo_and_rpc_streams_in_one_batch_answer_in_order() {
    let mut o = object();
    o.handle_message(
        socket(),
        &batch(&[
            (FrameKind::Open, 1, open_as("/echo", who("read"))),
            (FrameKind::Open, 2, open_as("/rpc", who("read"))),
            (FrameKind::Binary, 1, vec![0, 159, 255]),
            (FrameKind::Text, 2, br#"{"jsonrpc":"2.0","method":"ping","id":1}"#.to_vec()),
            (FrameKind::Text, 1, b"same id 1".to_vec()),
        ]),
        NOW,
    );
    let (got, rows) = sent(&mut o);
    assert_eq!(got[0], (FrameKind::Binary, 1, vec![0, 159, 255]));
    assert_eq!((got[1].0, got[1].1), (FrameKind::Text, 2));
    assert!(String::from_utf8_lossy(&got[1].2).contains("pong"));
    assert_eq!(got[2], (FrameKind::Text, 1, b"same id 1".to_vec()));
    // Stored as they always have been: 1 = /rpc, 2 = /echo.
    let services: Vec<u8> = rows.iter().map(|(_, v)| v[0]).collect();
    assert_eq!(services, [2, 1]);
}

#[test]
fn the_echo_service_needs_read_and_a_refusal_ends_the_stream() {
    let mut o = object();
    let msg = batch(&[(FrameKind::Open, 1, open_as("/echo", who("publish"))), (FrameKind::Text, 1, b"x".to_vec())]);
    o.handle_message(socket(), &msg, NOW);
    let (got, _) = sent(&mut o);
    assert_eq!(ErrorFrame::decode(&got[0].2).expect("error").code, 403);
    assert_eq!(o.clients(), 0);
}

#[test]
fn a_broadcast_reaches_listening_rpc_streams_and_the_direct_sockets() {
    let mut o = object();
    o.handle_message(
        socket(),
        &batch(&[
            (FrameKind::Open, 1, open_as("/rpc", who("read"))),
            (FrameKind::Open, 2, open_as("/rpc", who("publish"))),
            (FrameKind::Open, 3, open_as("/echo", who("read"))),
            (
                FrameKind::Text,
                2,
                br#"{"jsonrpc":"2.0","method":"broadcast","params":{"message":"hi"},"id":5}"#.to_vec(),
            ),
        ]),
        NOW,
    );
    let (got, _) = sent(&mut o);
    let texts: Vec<(u32, String)> =
        got.iter().filter(|f| f.0 == FrameKind::Text).map(|f| (f.1, String::from_utf8_lossy(&f.2).into())).collect();
    assert_eq!(texts.len(), 2, "the push to the reader, then the caller's reply: {texts:?}");
    assert_eq!(texts[0].0, 1, "only a JSON-RPC stream that may read hears it");
    assert!(texts[0].1.contains("hi"), "{texts:?}");
    assert_eq!(texts[1].0, 2);
    assert_eq!(o.app_mut().bound_db().pushed.len(), 1, "and the object's direct sockets");
}

#[test]
fn http_requests_are_answered_on_their_stream_and_leave_nothing_behind() {
    let mut o = object();
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
    o.handle_message(
        socket(),
        &batch(&[
            (FrameKind::Request, 7, req("/rpc", br#"{"jsonrpc":"2.0","method":"ping","id":1}"#)),
            (FrameKind::Request, 8, req("/query", br#"{"sql":"select ?","params":[1]}"#)),
            (FrameKind::Request, 9, req("/nope", b"")),
        ]),
        NOW,
    );
    let (got, rows) = sent(&mut o);
    let res: Vec<Response> = got.iter().map(|f| Response::decode(&f.2).expect("response")).collect();
    assert_eq!(res.iter().map(|r| r.status).collect::<Vec<_>>(), vec![200, 200, 404]);
    assert!(String::from_utf8_lossy(&res[0].body).contains("pong"));
    assert!(rows.is_empty() && o.clients() == 0, "requests leave no state behind");
}

#[test]
fn a_read_only_caller_stays_read_only_after_hibernation() {
    let mut o = object();
    o.handle_message(socket(), &batch(&[(FrameKind::Open, 2, open_as("/rpc", who("read")))]), NOW);
    let (_, mut rows) = sent(&mut o);
    rows.push((format!("mux/{}", socket()), b"t".to_vec()));
    let mut woken = Object::restore(Backend::new(FakeDb::default()), [(socket(), "t".to_owned())], rows, NOW);
    let q = br#"{"jsonrpc":"2.0","method":"sql","params":{"sql":"insert into t values (1)"},"id":1}"#;
    woken.handle_message(socket(), &batch(&[(FrameKind::Text, 2, q.to_vec())]), NOW);
    let (got, _) = sent(&mut woken);
    let reply = String::from_utf8_lossy(&got[0].2).into_owned();
    assert!(reply.contains(&crate::rpc::code::READ_ONLY.to_string()), "{reply}");
}
