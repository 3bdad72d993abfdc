use super::*;

/// Deterministic xorshift so the property tests need no extra crates and replay exactly.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, max: u64) -> Vec<u8> {
        let n = self.below(max + 1) as usize;
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const KINDS: [FrameKind; 9] = [
    FrameKind::Open,
    FrameKind::Text,
    FrameKind::Binary,
    FrameKind::Close,
    FrameKind::Request,
    FrameKind::Response,
    FrameKind::Error,
    FrameKind::Ping,
    FrameKind::Pong,
];

#[test]
fn header_layout_is_fixed_big_endian() {
    let msg = single_frame_message(FrameKind::Text, StreamId(0x0102_0304), b"hi");
    assert_eq!(msg, [VERSION, 2, 0, 1, 2, 3, 4, 0, 0, 0, 2, b'h', b'i']);
}

#[test]
fn empty_and_foreign_version_are_rejected() {
    assert_eq!(decode_message(&[]).err(), Some(DecodeError::Empty));
    assert_eq!(decode_message(&[9, 1]).err(), Some(DecodeError::UnsupportedVersion(9)));
    assert_eq!(decode_message(&[VERSION]).map(|f| f.count()).ok(), Some(0));
}

#[test]
fn truncated_header_and_payload_are_errors_not_panics() {
    let msg = single_frame_message(FrameKind::Binary, StreamId(7), b"abcdef");
    for cut in 2..msg.len() {
        let frames: Vec<_> = decode_message(&msg[..cut]).map(|f| f.collect()).unwrap_or_default();
        assert!(matches!(frames.last(), Some(Err(DecodeError::Truncated { .. }))), "cut {cut}");
    }
}

#[test]
fn unknown_kind_and_flags_are_errors() {
    let mut msg = single_frame_message(FrameKind::Text, StreamId(1), b"x");
    msg[1] = 200;
    assert_eq!(decode_message(&msg).ok().and_then(|mut f| f.next()), Some(Err(DecodeError::UnknownKind(200))));
    msg[1] = 2;
    msg[2] = 1;
    assert_eq!(decode_message(&msg).ok().and_then(|mut f| f.next()), Some(Err(DecodeError::ReservedFlags(1))));
}

#[test]
fn oversized_length_field_is_rejected_before_reading() {
    let mut msg = vec![VERSION, 3, 0, 0, 0, 0, 1];
    msg.extend_from_slice(&u32::MAX.to_be_bytes());
    let first = decode_message(&msg).ok().and_then(|mut f| f.next());
    assert_eq!(first, Some(Err(DecodeError::PayloadTooLarge(u32::MAX as usize))));
}

#[test]
fn batches_round_trip_10k_cases() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..10_000 {
        let n = rng.below(6) as usize;
        let frames: Vec<(FrameKind, StreamId, Vec<u8>)> =
            (0..n).map(|_| (KINDS[rng.below(9) as usize], StreamId(rng.next() as u32), rng.bytes(64))).collect();
        let mut msg = Vec::new();
        begin_message(&mut msg);
        for (k, s, p) in &frames {
            encode_frame(&mut msg, *k, *s, p).expect("small payload");
        }
        let back: Vec<_> = decode_message(&msg)
            .expect("version")
            .map(|f| f.map(|f| (f.kind, f.stream, f.payload.to_vec())))
            .collect::<Result<_, _>>()
            .expect("valid batch");
        assert_eq!(back, frames);
    }
}

#[test]
fn payloads_round_trip() {
    let identity = Identity {
        subject: "alice@example.com".into(),
        tenant: "acme".into(),
        scopes: "read publish".into(),
        expires_at: 1_900_000_000,
    };
    let open = Open { path: "/echo".into(), identity: identity.clone(), attach: None };
    assert_eq!(Open::decode(&open.encode()), Ok(open));
    let req = Request {
        method: "POST".into(),
        path: "/rpc".into(),
        content_type: "application/json".into(),
        identity,
        body: b"{\"id\":1}".to_vec(),
    };
    assert_eq!(Request::decode(&req.encode()), Ok(req));
    let res = Response { status: 201, content_type: "text/plain; charset=utf-8".into(), body: vec![0, 255] };
    assert_eq!(Response::decode(&res.encode()), Ok(res));
    let close = Close { code: 1013, reason: "try again ✓".into() };
    assert_eq!(Close::decode(&close.encode()), Ok(close));
    assert_eq!(Close::decode(&[]), Ok(Close { code: 1005, reason: String::new() }));
    let err = ErrorFrame { code: 404, message: "unknown stream 9".into() };
    assert_eq!(ErrorFrame::decode(&err.encode()), Ok(err));
}

#[test]
fn payload_decoders_reject_bad_utf8_and_truncation() {
    assert_eq!(Open::decode(&[0, 2, 0xff, 0xfe]), Err(DecodeError::InvalidUtf8("path")));
    assert!(matches!(Open::decode(&[0, 9, b'a']), Err(DecodeError::Truncated { .. })));
    assert!(matches!(Response::decode(&[1]), Err(DecodeError::Truncated { .. })));
    // An Open without its identity (a version-1 peer) is refused, not read as anonymous.
    assert!(matches!(Open::decode(&[0, 1, b'/']), Err(DecodeError::Truncated { .. })));
    let mut open = Open { path: "/rpc".into(), identity: Identity::default(), attach: None }.encode();
    open.push(0);
    assert_eq!(Open::decode(&open), Err(DecodeError::TrailingBytes(1)));
}

#[test]
fn identity_layout_hex_and_predicates() {
    let id = Identity { subject: "u".into(), tenant: "t".into(), scopes: "read write".into(), expires_at: 258 };
    assert_eq!(
        id.encode(),
        [
            0, 1, b'u', 0, 1, b't', 0, 10, b'r', b'e', b'a', b'd', b' ', b'w', b'r', b'i', b't', b'e', 0, 0, 0, 0, 0,
            0, 1, 2
        ]
    );
    assert_eq!(Identity::from_hex(&id.to_hex()), Ok(id.clone()));
    assert_eq!(Identity::from_hex("0g"), Err(DecodeError::InvalidHex));
    assert_eq!(Identity::from_hex("000"), Err(DecodeError::InvalidHex));
    assert_eq!(Identity::from_hex(&id.to_hex().to_uppercase()), Err(DecodeError::InvalidHex));
    assert!(id.has_scope("write") && id.has_scope("read") && !id.has_scope("rea") && !id.has_scope("admin"));
    assert!(id.allows_tenant("t") && !id.allows_tenant("T") && !id.allows_tenant("other"));
    let any = Identity { tenant: ANY_TENANT.into(), ..id.clone() };
    assert!(any.allows_tenant("other"));
    assert!(!id.expired(257) && id.expired(258) && id.expired(259));
    assert!(!Identity { expires_at: 0, ..id }.expired(u64::MAX), "0 never expires");
    assert!(Identity::default().is_anonymous());
}

#[test]
fn identities_round_trip_10k_cases() {
    let mut rng = Rng(7);
    let text = |rng: &mut Rng| -> String {
        let n = rng.below(40) as usize;
        (0..n).map(|_| char::from_u32(rng.below(0x3000) as u32 + 0x20).unwrap_or('x')).collect()
    };
    for _ in 0..10_000 {
        let id = Identity {
            subject: text(&mut rng),
            tenant: text(&mut rng),
            scopes: text(&mut rng),
            expires_at: rng.next(),
        };
        assert_eq!(Identity::decode(&id.encode()).as_ref(), Ok(&id));
        assert_eq!(Identity::from_hex(&id.to_hex()), Ok(id));
    }
}

/// Fuzz-style: random bytes must never panic any decoder, and a decoded batch must
/// re-encode to exactly the bytes it came from.
#[test]
fn random_input_never_panics_and_reencodes_exactly() {
    let mut rng = Rng(42);
    for _ in 0..100_000 {
        let mut msg = rng.bytes(48);
        if rng.below(2) == 0 {
            if let Some(b) = msg.first_mut() {
                *b = VERSION;
            }
        }
        let Ok(frames) = decode_message(&msg) else {
            continue;
        };
        let mut ok = Vec::new();
        let mut failed = false;
        for f in frames {
            match f {
                Ok(f) => {
                    let _ = Open::decode(f.payload);
                    let _ = Request::decode(f.payload);
                    let _ = Response::decode(f.payload);
                    let _ = Close::decode(f.payload);
                    let _ = ErrorFrame::decode(f.payload);
                    ok.push(f);
                }
                Err(_) => failed = true,
            }
        }
        if !failed {
            let mut again = Vec::new();
            begin_message(&mut again);
            for f in ok {
                encode_frame(&mut again, f.kind, f.stream, f.payload).expect("small payload");
            }
            assert_eq!(again, msg);
        }
    }
}

#[test]
fn truncation_keeps_whole_chars() {
    assert_eq!(truncate_utf8("abc", 10), "abc");
    assert_eq!(truncate_utf8("abc", 2), "ab");
    assert_eq!(truncate_utf8("a✓b", 2), "a", "✓ is 3 bytes: cut before it, never inside");
    assert_eq!(truncate_utf8("a✓b", 4), "a✓");
    assert_eq!(truncate_utf8("", 0), "");
}
