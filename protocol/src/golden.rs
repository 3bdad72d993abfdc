//! Golden test vectors: encoded bytes and their meaning, valid and invalid, written to
//! `protocol/vectors/golden.json` from this crate's own encoder and decoder, so every
//! implementation of the protocol (the TypeScript backend package too) is tested against
//! the same bytes. A plain run fails if the file differs from what the code produces;
//! `BLESS=1 cargo test -p snippet-proxy-protocol golden` rewrites it. The schema is in
//! PROTOCOL.md §11.

use serde_json::{json, Value};

use crate::*;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn identity_json(id: &Identity) -> Value {
    json!({ "subject": id.subject, "tenant": id.tenant, "scopes": id.scopes, "expires_at": id.expires_at.to_string() })
}

fn error_json(e: &DecodeError) -> Value {
    match e {
        DecodeError::Empty => json!({ "kind": "Empty" }),
        DecodeError::UnsupportedVersion(v) => json!({ "kind": "UnsupportedVersion", "value": v }),
        DecodeError::UnknownKind(v) => json!({ "kind": "UnknownKind", "value": v }),
        DecodeError::ReservedFlags(v) => json!({ "kind": "ReservedFlags", "value": v }),
        DecodeError::PayloadTooLarge(v) => json!({ "kind": "PayloadTooLarge", "value": v }),
        DecodeError::Truncated { needed, available } => {
            json!({ "kind": "Truncated", "needed": needed, "available": available })
        }
        DecodeError::InvalidUtf8(field) => json!({ "kind": "InvalidUtf8", "value": field }),
        DecodeError::TrailingBytes(v) => json!({ "kind": "TrailingBytes", "value": v }),
        DecodeError::InvalidHex => json!({ "kind": "InvalidHex" }),
    }
}

/// A frame's meaning, decoded by this crate; `Err` when its payload does not decode.
fn frame_json(f: &Frame<'_>) -> Result<Value, DecodeError> {
    let mut v =
        json!({ "kind": format!("{:?}", f.kind), "stream": f.stream.0, "flags": 0, "payload_hex": hex(f.payload) });
    let (name, decoded) = match f.kind {
        FrameKind::Open => {
            let o = Open::decode(f.payload)?;
            let mut open = json!({ "path": o.path, "identity": identity_json(&o.identity) });
            if let (Some(a), Some(map)) = (o.attach, open.as_object_mut()) {
                let attach = json!({ "session": a.session.to_string(), "received": a.received.to_string() });
                map.insert("attach".into(), attach);
            }
            ("open", open)
        }
        FrameKind::Request => {
            let r = Request::decode(f.payload)?;
            let id = identity_json(&r.identity);
            let body = hex(&r.body);
            (
                "request",
                json!({ "method": r.method, "path": r.path, "content_type": r.content_type, "identity": id, "body_hex": body }),
            )
        }
        FrameKind::Response => {
            let r = Response::decode(f.payload)?;
            ("response", json!({ "status": r.status, "content_type": r.content_type, "body_hex": hex(&r.body) }))
        }
        FrameKind::Close => {
            let c = Close::decode(f.payload)?;
            ("close", json!({ "code": c.code, "reason": c.reason }))
        }
        FrameKind::Error => {
            let e = ErrorFrame::decode(f.payload)?;
            ("error", json!({ "code": e.code, "message": e.message }))
        }
        FrameKind::Text => match std::str::from_utf8(f.payload) {
            Ok(t) => ("text", json!(t)),
            Err(_) => return Ok(v),
        },
        FrameKind::Binary | FrameKind::Ping | FrameKind::Pong => return Ok(v),
    };
    if let Some(map) = v.as_object_mut() {
        map.insert(name.to_owned(), decoded);
    }
    Ok(v)
}

/// Where decoding `msg` fails, the frames decoded before it, and the error; or `Ok` with
/// every frame's meaning.
fn decode_all(msg: &[u8]) -> Result<Vec<Value>, (Vec<Value>, Value, DecodeError)> {
    let frames = decode_message(msg).map_err(|e| (vec![], json!({ "stage": "message" }), e))?;
    let mut out = Vec::new();
    for (i, f) in frames.enumerate() {
        let f = f.map_err(|e| (out.clone(), json!({ "stage": "frame", "frame": i }), e))?;
        let v = frame_json(&f).map_err(|e| (out.clone(), json!({ "stage": "payload", "frame": i }), e))?;
        out.push(v);
    }
    Ok(out)
}

fn batch(frames: &[(FrameKind, u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    begin_message(&mut out);
    for (kind, stream, payload) in frames {
        assert!(encode_frame(&mut out, *kind, StreamId(*stream), payload).is_ok());
    }
    out
}

fn alice() -> Identity {
    Identity { subject: "alice".into(), tenant: "acme".into(), scopes: "read write".into(), expires_at: 1_900_000_000 }
}

/// The valid messages: every kind, both directions, edge values.
fn valid() -> Vec<(&'static str, Vec<u8>)> {
    use FrameKind as K;
    let open = |path: &str, identity: Identity| Open { path: path.into(), identity, attach: None }.encode();
    let request = |body: &[u8]| {
        Request {
            method: "POST".into(),
            path: "/rpc".into(),
            content_type: "application/json".into(),
            identity: alice(),
            body: body.to_vec(),
        }
        .encode()
    };
    let ping = |purpose: u8, conn: u64| [&[purpose][..], &conn.to_be_bytes()].concat();
    let attach = Some(session::Attach { session: session::SessionId::from_bytes([0x5e; 16]), received: 258 });
    let session_open = Open { path: "/rpc".into(), identity: alice(), attach }.encode();
    let v2 = [&[OLDEST_VERSION][..], &batch(&[(K::Text, 1, b"old".to_vec())])[1..]].concat();
    vec![
        ("empty_batch", batch(&[])),
        ("open_with_session", batch(&[(K::Open, 5, session_open)])),
        ("oldest_version_still_decodes", v2),
        (
            "open_and_text",
            batch(&[
                (K::Open, 1, open("/rpc", alice())),
                (K::Text, 1, br#"{"jsonrpc":"2.0","method":"ping","id":1}"#.to_vec()),
            ]),
        ),
        ("open_anonymous_never_expires", batch(&[(K::Open, 2, open("/echo", Identity::default()))])),
        ("text_multibyte_utf8", batch(&[(K::Text, 7, "héllo, 世界 🌍".as_bytes().to_vec())])),
        ("text_empty", batch(&[(K::Text, 7, vec![])])),
        ("binary", batch(&[(K::Binary, 3, vec![0, 1, 2, 0xfe, 0xff])])),
        ("close_with_reason", batch(&[(K::Close, 1, Close { code: 1000, reason: "bye".into() }.encode())])),
        ("close_empty_means_1005", batch(&[(K::Close, 1, vec![])])),
        ("request_with_body", batch(&[(K::Request, 9, request(br#"{"jsonrpc":"2.0","method":"ping","id":1}"#))])),
        ("request_empty_body", batch(&[(K::Request, 10, request(b""))])),
        (
            "response",
            batch(&[(
                K::Response,
                9,
                Response {
                    status: 200,
                    content_type: "application/json".into(),
                    body: br#"{"result":"pong"}"#.to_vec(),
                }
                .encode(),
            )]),
        ),
        (
            "response_no_content_type",
            batch(&[(K::Response, 10, Response { status: 204, content_type: String::new(), body: vec![] }.encode())]),
        ),
        (
            "error_on_stream",
            batch(&[(K::Error, 4, ErrorFrame { code: 404, message: "unknown stream".into() }.encode())]),
        ),
        ("error_on_session", batch(&[(K::Error, 0, ErrorFrame { code: 400, message: "bad frame".into() }.encode())])),
        ("ping_barrier_and_pong", batch(&[(K::Ping, 0, ping(1, 7)), (K::Pong, 0, ping(1, 7))])),
        ("ping_heartbeat", batch(&[(K::Ping, 0, ping(2, 42))])),
        ("highest_stream_id", batch(&[(K::Text, u32::MAX, b"x".to_vec())])),
        (
            "many_frames_one_batch",
            batch(&[
                (K::Text, 1, b"a".to_vec()),
                (K::Text, 2, b"b".to_vec()),
                (K::Binary, 1, vec![9]),
                (K::Close, 2, Close { code: 1001, reason: String::new() }.encode()),
            ]),
        ),
    ]
}

/// The invalid messages: one per decode error, and each header check in its order.
fn invalid() -> Vec<(&'static str, Vec<u8>)> {
    let header = |kind: u8, flags: u8, stream: u32, len: u32| {
        let mut h = vec![kind, flags];
        h.extend_from_slice(&stream.to_be_bytes());
        h.extend_from_slice(&len.to_be_bytes());
        h
    };
    let with = |frames: &[Vec<u8>]| [&[VERSION][..], &frames.concat()].concat();
    let text = [header(2, 0, 1, 1), b"x".to_vec()].concat();
    let open_payload = Open { path: "/rpc".into(), identity: alice(), attach: None }.encode();
    let open_len = open_payload.len() as u32;
    vec![
        ("empty_message", vec![]),
        ("foreign_version", vec![9, 1]),
        ("version_1", [&[1][..], &text].concat()),
        ("truncated_header", with(&[vec![2, 0, 0, 0]])),
        ("unknown_kind_0", with(&[header(0, 0, 1, 0)])),
        ("unknown_kind_10", with(&[header(10, 0, 1, 0)])),
        ("reserved_flags", with(&[header(2, 1, 1, 0)])),
        ("unknown_kind_checked_before_flags", with(&[header(200, 3, 1, 0)])),
        ("payload_too_large", with(&[header(2, 0, 1, MAX_FRAME_PAYLOAD as u32 + 1)])),
        ("truncated_payload", with(&[header(2, 0, 1, 5), b"abc".to_vec()])),
        ("second_frame_bad", with(&[text.clone(), header(2, 9, 1, 0)])),
        ("open_trailing_byte", with(&[[header(1, 0, 1, open_len + 1), open_payload.clone(), vec![0]].concat()])),
        (
            "open_truncated_identity",
            with(&[[header(1, 0, 1, open_len - 3), open_payload[..open_payload.len() - 3].to_vec()].concat()]),
        ),
        ("open_session_cut", with(&[[header(1, 0, 1, open_len + 10), open_payload.clone(), vec![0; 10]].concat()])),
        ("open_path_not_utf8", with(&[[header(1, 0, 1, 4), vec![0, 2, 0xff, 0xfe]].concat()])),
        ("close_reason_not_utf8", with(&[[header(4, 0, 1, 3), vec![3, 0xe8, 0xc3]].concat()])),
        ("close_one_byte", with(&[[header(4, 0, 1, 1), vec![3]].concat()])),
        ("response_truncated_status", with(&[[header(6, 0, 1, 1), vec![0]].concat()])),
        ("error_message_not_utf8", with(&[[header(7, 0, 1, 3), vec![1, 0xf4, 0xff]].concat()])),
    ]
}

/// Identities as the HTTP fallback carries them (lowercase hex of the encoding).
fn identities() -> Vec<Value> {
    let mut out = Vec::new();
    let ok = [
        ("alice", alice()),
        ("anonymous", Identity::default()),
        (
            "every_tenant",
            Identity { subject: "ops".into(), tenant: ANY_TENANT.into(), scopes: "admin".into(), expires_at: u64::MAX },
        ),
    ];
    for (name, id) in ok {
        let h = id.to_hex();
        assert_eq!(Identity::from_hex(&h).as_ref(), Ok(&id));
        out.push(json!({ "name": name, "hex": h, "identity": identity_json(&id) }));
    }
    for (name, h) in [("uppercase_hex", "0A"), ("odd_length", "000"), ("not_hex", "zz"), ("truncated", "0001")] {
        let e = Identity::from_hex(h).expect_err("invalid");
        out.push(json!({ "name": name, "hex": h, "error": error_json(&e) }));
    }
    out
}

/// Session envelopes (PROTOCOL.md §14), valid and invalid.
fn envelopes() -> Value {
    use session::Envelope as E;
    let valid = [
        ("text", E::Data { text: true, seq: 1, ack: 0, payload: "héllo".as_bytes() }),
        ("binary", E::Data { text: false, seq: u64::MAX, ack: 258, payload: &[0, 0xff] }),
        ("empty_text", E::Data { text: true, seq: 2, ack: 1, payload: b"" }),
        ("ack", E::Ack { ack: 300 }),
        ("welcome_resumed", E::Welcome { resumed: true, ack: 7 }),
        ("welcome_new", E::Welcome { resumed: false, ack: 0 }),
        ("ping", E::Ping(&[0, 0, 0, 1])),
        ("pong", E::Pong(&[0, 0, 0, 1])),
    ];
    let meaning = |e: &E<'_>| match *e {
        E::Data { text, seq, ack, payload } => json!({
            "type": if text { "Text" } else { "Binary" }, "seq": seq.to_string(), "ack": ack.to_string(),
            "payload_hex": hex(payload) }),
        E::Ack { ack } => json!({ "type": "Ack", "ack": ack.to_string() }),
        E::Welcome { resumed, ack } => json!({ "type": "Welcome", "resumed": resumed, "ack": ack.to_string() }),
        E::Ping(b) => json!({ "type": "Ping", "payload_hex": hex(b) }),
        E::Pong(b) => json!({ "type": "Pong", "payload_hex": hex(b) }),
    };
    let valid: Vec<Value> = valid
        .iter()
        .map(|(name, e)| {
            let bytes = e.encode();
            assert_eq!(E::decode(&bytes).as_ref(), Ok(e), "{name} round-trips");
            json!({ "name": name, "hex": hex(&bytes), "envelope": meaning(e) })
        })
        .collect();
    let invalid: Vec<Value> = [
        ("empty", vec![]),
        ("unknown_type", vec![9]),
        ("data_cut", vec![1, 0, 0, 0]),
        ("ack_trailing_byte", [&[3][..], &[0; 9]].concat()),
        ("welcome_reserved_flags", [&[4, 2][..], &[0; 8]].concat()),
    ]
    .iter()
    .map(|(name, bytes)| {
        let e = E::decode(bytes).expect_err("invalid");
        json!({ "name": name, "hex": hex(bytes), "error": error_json(&e) })
    })
    .collect();
    json!({ "valid": valid, "invalid": invalid })
}

fn golden() -> Value {
    let valid: Vec<Value> = valid()
        .into_iter()
        .map(|(name, bytes)| {
            let frames =
                decode_all(&bytes).unwrap_or_else(|(_, at, e)| panic!("{name} is valid, failed {at} with {e}"));
            // Re-encoding the decoded frames gives the same bytes.
            let again = batch(
                &decode_message(&bytes)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|f| (f.kind, f.stream.0, f.payload.to_vec()))
                    .collect::<Vec<_>>(),
            );
            // ... in the current version (the oldest one's vector differs in its first byte).
            assert_eq!(again.get(1..), bytes.get(1..), "{name} round-trips");
            json!({ "name": name, "hex": hex(&bytes), "frames": frames })
        })
        .collect();
    let invalid: Vec<Value> = invalid()
        .into_iter()
        .map(|(name, bytes)| match decode_all(&bytes) {
            Ok(_) => panic!("{name} must not decode"),
            Err((before, at, e)) => {
                json!({ "name": name, "hex": hex(&bytes), "frames_before": before, "at": at, "error": error_json(&e) })
            }
        })
        .collect();
    json!({
        "version": VERSION,
        "oldest_version": OLDEST_VERSION,
        "header_len": HEADER_LEN,
        "max_frame_payload": MAX_FRAME_PAYLOAD,
        "max_session_streams": MAX_SESSION_STREAMS,
        "valid": valid,
        "invalid": invalid,
        "identities": identities(),
        "envelopes": envelopes(),
    })
}

#[test]
fn golden_vectors_match_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors/golden.json");
    let made = golden();
    if std::env::var_os("BLESS").is_some() {
        let text = serde_json::to_string_pretty(&made).expect("json") + "\n";
        std::fs::write(&path, text).expect("write golden.json");
        return;
    }
    let text = std::fs::read_to_string(&path).expect("protocol/vectors/golden.json (BLESS=1 writes it)");
    let stored: Value = serde_json::from_str(&text).expect("golden.json is JSON");
    assert_eq!(stored, made, "golden.json differs from the code: BLESS=1 cargo test -p snippet-proxy-protocol golden");
}

#[test]
fn every_decode_error_has_an_invalid_vector() {
    let doc = golden();
    let errors = doc["invalid"].as_array().into_iter().chain(doc["identities"].as_array()).flatten();
    let kinds: std::collections::BTreeSet<&str> = errors.filter_map(|v| v["error"]["kind"].as_str()).collect();
    for k in [
        "Empty",
        "UnsupportedVersion",
        "UnknownKind",
        "ReservedFlags",
        "PayloadTooLarge",
        "Truncated",
        "InvalidUtf8",
        "TrailingBytes",
        "InvalidHex",
    ] {
        assert!(kinds.contains(k), "no invalid vector for {k}: {kinds:?}");
    }
}
