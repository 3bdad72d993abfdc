use super::*;
use crate::rpc::tests::FakeDb;
use protocol::{decode_message, single_frame_message, Close, ErrorFrame};

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

fn open(path: &str) -> Vec<u8> {
    Open { path: path.into() }.encode()
}

#[test]
fn echo_and_rpc_streams_in_one_batch_answer_in_one_batch() {
    let mut s = Session::default();
    let mut db = FakeDb::default();
    let msg = batch(&[
        (FrameKind::Open, 1, open("/echo")),
        (FrameKind::Open, 2, open("/rpc")),
        (FrameKind::Binary, 1, vec![0, 159, 255]),
        (FrameKind::Text, 2, br#"{"jsonrpc":"2.0","method":"ping","id":1}"#.to_vec()),
        (FrameKind::Text, 1, b"same id 1".to_vec()),
    ]);
    let out = s.handle_message(&msg, &mut db);
    assert!(out.changed);
    assert_eq!(out.frames, 5);
    let got = frames(&out.reply.expect("reply"));
    assert_eq!(got[0], (FrameKind::Binary, StreamId(1), vec![0, 159, 255]));
    assert_eq!(got[1].0, FrameKind::Text);
    assert_eq!(got[1].1, StreamId(2));
    assert!(String::from_utf8_lossy(&got[1].2).contains("pong"));
    assert_eq!(got[2], (FrameKind::Text, StreamId(1), b"same id 1".to_vec()));
}

#[test]
fn unknown_service_and_stream_get_stream_errors() {
    let mut s = Session::default();
    let mut db = FakeDb::default();
    let out =
        s.handle_message(&batch(&[(FrameKind::Open, 3, open("/nope")), (FrameKind::Text, 4, b"x".to_vec())]), &mut db);
    let got = frames(&out.reply.expect("reply"));
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, FrameKind::Error);
    assert_eq!(ErrorFrame::decode(&got[0].2).expect("err").code, 404);
    assert_eq!(got[1].1, StreamId(4));
    assert_eq!(out.errors, 2);
}

#[test]
fn malformed_frames_get_a_session_error_and_earlier_frames_still_count() {
    let mut s = Session::default();
    let mut db = FakeDb::default();
    let mut msg = batch(&[(FrameKind::Open, 1, open("/echo")), (FrameKind::Text, 1, b"ok".to_vec())]);
    msg.extend_from_slice(&[99, 0, 0]); // garbage after two good frames
    let out = s.handle_message(&msg, &mut db);
    let got = frames(&out.reply.expect("reply"));
    assert_eq!(got[0], (FrameKind::Text, StreamId(1), b"ok".to_vec()));
    assert_eq!((got[1].0, got[1].1), (FrameKind::Error, StreamId::SESSION));
    // the session still works for the next message
    let out = s.handle_message(&single_frame_message(FrameKind::Text, StreamId(1), b"again"), &mut db);
    assert_eq!(frames(&out.reply.expect("reply"))[0].2, b"again".to_vec());
    // wrong version / empty
    for bad in [&[][..], &[42, 1, 2][..]] {
        let out = s.handle_message(bad, &mut db);
        assert_eq!(frames(&out.reply.expect("reply"))[0].1, StreamId::SESSION);
    }
}

#[test]
fn close_forgets_the_stream_and_state_survives_serialisation() {
    let mut s = Session::default();
    let mut db = FakeDb::default();
    s.handle_message(&batch(&[(FrameKind::Open, 1, open("/echo")), (FrameKind::Open, 2, open("/rpc"))]), &mut db);
    let saved = serde_json::to_string(&s).expect("ser");
    assert!(saved.len() < 100, "{saved}");
    let mut restored: Session = serde_json::from_str(&saved).expect("de");
    assert_eq!(restored, s);
    let out = restored.handle_message(
        &batch(&[
            (FrameKind::Close, 1, Close { code: 1000, reason: String::new() }.encode()),
            (FrameKind::Text, 1, b"x".to_vec()),
        ]),
        &mut db,
    );
    assert!(out.changed);
    assert_eq!(frames(&out.reply.expect("reply"))[0].0, FrameKind::Error);
    assert_eq!(restored.streams.len(), 1);
}

#[test]
fn http_requests_ride_as_single_frames() {
    let mut s = Session::default();
    let mut db = FakeDb::default();
    let req = |path: &str, body: &[u8]| {
        Request {
            method: "POST".into(),
            path: path.into(),
            content_type: "application/json".into(),
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
    );
    let got = frames(&out.reply.expect("reply"));
    let res: Vec<Response> = got.iter().map(|f| Response::decode(&f.2).expect("response")).collect();
    assert_eq!(res.iter().map(|r| r.status).collect::<Vec<_>>(), vec![200, 200, 404]);
    assert!(String::from_utf8_lossy(&res[0].body).contains("pong"));
    assert!(!out.changed, "HTTP streams leave no state behind");
}

#[test]
fn random_garbage_never_panics() {
    let mut s = Session::default();
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
        let _ = s.handle_message(&msg, &mut db);
    }
}
