//! The scenarios of the session vectors. Time starts at [`T`] ms; sockets are named by
//! small numbers (`00000000000a` is 10).

use protocol::{Close, FrameKind, Identity, Open, Request, StreamId};

use super::{who, Input, Scenario};

/// The scenarios' clock at their start (ms): 1,000,000 s, well before [`who`]'s expiry.
pub(super) const T: u64 = 1_000_000_000;
pub(super) const A: u64 = 10;
pub(super) const B: u64 = 11;
pub(super) const C: u64 = 12;

pub(super) type F = (FrameKind, u32, Vec<u8>);

pub(super) fn msg(frames: &[F]) -> Vec<u8> {
    let mut out = Vec::new();
    protocol::begin_message(&mut out);
    for (kind, stream, payload) in frames {
        // Payloads here are small: encoding cannot fail.
        let _ = protocol::encode_frame(&mut out, *kind, StreamId(*stream), payload);
    }
    out
}

pub(super) fn open_as(stream: u32, path: &str, identity: Identity) -> F {
    (FrameKind::Open, stream, Open { path: path.into(), identity, attach: None }.encode())
}

pub(super) fn open(stream: u32, path: &str, subject: &str) -> F {
    open_as(stream, path, who(subject))
}

pub(super) fn text(stream: u32, s: &str) -> F {
    (FrameKind::Text, stream, s.as_bytes().to_vec())
}

pub(super) fn close(stream: u32, code: u16, reason: &str) -> F {
    (FrameKind::Close, stream, Close { code, reason: reason.into() }.encode())
}

pub(super) fn barrier() -> F {
    (FrameKind::Ping, 0, vec![1, 0, 0, 0, 0, 0, 0, 0, 7])
}

fn request(stream: u32, identity: Identity) -> F {
    let req =
        Request { method: "POST".into(), path: "/rpc".into(), content_type: String::new(), identity, body: vec![] };
    (FrameKind::Request, stream, req.encode())
}

pub(super) fn room_of(sockets: &[u64]) -> Vec<(u64, Input)> {
    sockets.iter().map(|s| (T, Input::Accept(*s, "room"))).collect()
}

/// Socket `s` with alice and bob on `/rpc` (streams 1, 2) and carol on `/echo` (3).
fn three_on(s: u64, at: u64) -> (u64, Input) {
    (at, Input::Message(s, msg(&[open(1, "/rpc", "alice"), open(2, "/rpc", "bob"), open(3, "/echo", "carol")])))
}

pub(super) fn all() -> Vec<Scenario> {
    plain().into_iter().chain(super::session_scenarios::all()).collect()
}

fn plain() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "clients open, talk and leave",
            about: "Opens are admitted and told to the app; a broadcast reaches every /rpc client of the socket \
                    in the order it was made, before later replies; a client's Close ends it; the app's own \
                    close sends a Close frame and the app hears it once; a frame for a gone stream gets 404.",
            steps: [
                room_of(&[A]),
                vec![
                    three_on(A, T + 1),
                    (
                        T + 2,
                        Input::Message(
                            A,
                            msg(&[text(1, "all:hi"), (FrameKind::Binary, 3, vec![0, 255]), text(2, "yo")]),
                        ),
                    ),
                    (
                        T + 3,
                        Input::Message(
                            A,
                            msg(&[close(2, 1001, "tab closed"), text(1, "close:4000"), text(1, "still there?")]),
                        ),
                    ),
                ],
            ]
            .concat(),
        },
        Scenario {
            name: "a hand-over adopts every re-opened client",
            about: "After a barrier Ping on the old socket, the snippet re-opens the same streams (same id, path \
                    and identity) on a new socket, then closes the old one: the app hears no close and no open, \
                    broadcasts reach the clients on their new socket, and the old socket's close is answered.",
            steps: [
                room_of(&[A]),
                vec![
                    three_on(A, T + 1),
                    (T + 10, Input::Message(A, msg(&[barrier()]))),
                    (T + 11, Input::Accept(B, "room")),
                    three_on(B, T + 12),
                    (T + 13, Input::Message(B, msg(&[text(1, "all:moved")]))),
                    (T + 14, Input::Closed(A, 1000, "handed over")),
                    (T + 15, Input::Message(B, msg(&[text(2, "still me"), (FrameKind::Binary, 3, vec![7])]))),
                ],
            ]
            .concat(),
        },
        Scenario {
            name: "the old socket closes before the re-opens arrive",
            about: "A socket that closes within the hand-over window leaves its clients waiting: re-opens that \
                    arrive later adopt them; the one never re-opened closes for real when the grace window ends, \
                    with 1006 'upstream lost'.",
            steps: [
                room_of(&[A]),
                vec![
                    three_on(A, T + 1),
                    (T + 10, Input::Message(A, msg(&[barrier()]))),
                    (T + 11, Input::Accept(B, "room")),
                    (T + 12, Input::Closed(A, 1000, "handed over")),
                    (T + 13, Input::Message(B, msg(&[open(1, "/rpc", "alice"), open(2, "/rpc", "bob")]))),
                    (T + 12 + crate::HANDOVER_GRACE_MS - 1, Input::Timeout),
                    (T + 12 + crate::HANDOVER_GRACE_MS, Input::Timeout),
                    (T + 12 + crate::HANDOVER_GRACE_MS + 1, Input::Message(B, msg(&[open(3, "/echo", "carol")]))),
                ],
            ]
            .concat(),
        },
        Scenario {
            name: "a re-open after the hand-over window is a new client",
            about: "Adoption needs a barrier within the hand-over window: a matching Open later is a new client, \
                    and the old one closes with its socket.",
            steps: [
                room_of(&[A]),
                vec![
                    (T + 1, Input::Message(A, msg(&[open(1, "/rpc", "alice")]))),
                    (T + 10, Input::Message(A, msg(&[barrier()]))),
                    (T + 11, Input::Accept(B, "room")),
                    (T + 11 + crate::HANDOVER_WINDOW_MS, Input::Message(B, msg(&[open(1, "/rpc", "alice")]))),
                    (T + 12 + crate::HANDOVER_WINDOW_MS, Input::Closed(A, 1000, "handed over")),
                ],
            ]
            .concat(),
        },
        Scenario {
            name: "a socket lost without a hand-over",
            about: "Its clients close for the app with 1006 'upstream lost'; their departures reach the clients \
                    of the object's other sockets; a close code a frame cannot carry is answered with 1000; a \
                    failed socket is closed with 1011.",
            steps: [
                room_of(&[A, C]),
                vec![
                    (T + 1, Input::Message(C, msg(&[open(1, "/rpc", "dave")]))),
                    three_on(A, T + 2),
                    (T + 3, Input::Closed(A, 1006, "")),
                    (T + 4, Input::Accept(B, "room")),
                    (T + 5, Input::Message(B, msg(&[open(4, "/rpc", "erin")]))),
                    (T + 6, Input::Error(B)),
                ],
            ]
            .concat(),
        },
        Scenario {
            name: "errored streams are forgotten",
            about: "A stream answered with an Error has ended at the snippet, which sends no Close for it: the \
                    backend forgets it and the app hears it close with the code the client got. An expired \
                    caller's message gets 401; a frame for an unknown stream gets 404.",
            steps: [
                room_of(&[A]),
                vec![
                    (
                        T + 1,
                        Input::Message(A, msg(&[open(1, "/rpc", "alice"), open(2, "/echo", "bob"), text(9, "who?")])),
                    ),
                    (2_000_000_000, Input::Message(A, msg(&[text(1, "late"), text(1, "again")]))),
                ],
            ]
            .concat(),
        },
        Scenario {
            name: "a second Open of a stream in use",
            about: "The old client ends ('replaced by a new Open') and a new one begins.",
            steps: [
                room_of(&[A]),
                vec![(
                    T + 1,
                    Input::Message(A, msg(&[open(1, "/rpc", "alice"), open(1, "/rpc", "bob"), text(1, "hi")])),
                )],
            ]
            .concat(),
        },
        Scenario {
            name: "the barrier's Pong follows every earlier reply",
            about: "Pings are answered in place with the same payload on the same stream; the barrier Ping's \
                    Pong comes after the replies to the frames before it.",
            steps: [
                room_of(&[A]),
                vec![
                    (T + 1, Input::Message(A, msg(&[open(1, "/echo", "e"), open(2, "/echo", "e")]))),
                    (
                        T + 2,
                        Input::Message(
                            A,
                            msg(&[
                                text(1, "one"),
                                barrier(),
                                text(2, "two"),
                                (FrameKind::Ping, 0, vec![2, 0, 0, 0, 0, 0, 0, 0, 7]),
                                (FrameKind::Ping, 5, vec![9]),
                                (FrameKind::Pong, 0, vec![1]),
                            ]),
                        ),
                    ),
                ],
            ]
            .concat(),
        },
        Scenario {
            name: "admission refusals",
            about: "Opens and requests must name this tenant (or every tenant) and not have expired; a path must \
                    be a service; stream 0 cannot be opened; a refused caller never reaches the app.",
            steps: [
                room_of(&[A]),
                vec![(
                    T + 1,
                    Input::Message(
                        A,
                        msg(&[
                            open_as(1, "/rpc", Identity { tenant: "other".into(), ..who("eve") }),
                            open_as(2, "/rpc", Identity { expires_at: 1, ..who("old") }),
                            open_as(3, "/rpc", Identity { tenant: "*".into(), ..who("ops") }),
                            open(4, "/nope", "alice"),
                            open(0, "/rpc", "alice"),
                            (FrameKind::Open, 5, vec![1]),
                            request(6, who("alice")),
                            request(7, Identity { tenant: "other".into(), ..who("eve") }),
                            request(8, Identity { expires_at: 1, ..who("old") }),
                            (FrameKind::Request, 9, vec![0]),
                        ]),
                    ),
                )],
            ]
            .concat(),
        },
        Scenario {
            name: "malformed input",
            about: "An undecodable message gets one session Error (stream 0) and changes nothing; a bad frame \
                    ends the handling of its message after the frames before it are answered; text that is \
                    not UTF-8 is handled as binary.",
            steps: [
                room_of(&[A]),
                vec![
                    (T + 1, Input::Message(A, msg(&[open(1, "/echo", "e")]))),
                    (T + 2, Input::Message(A, vec![])),
                    (T + 3, Input::Message(A, vec![9, 1, 2])),
                    (
                        T + 4,
                        Input::Message(A, [msg(&[text(1, "before")]), vec![42, 0, 0, 0, 0, 1, 0, 0, 0, 0]].concat()),
                    ),
                    (
                        T + 5,
                        Input::Message(A, [msg(&[text(1, "cut")]), vec![2, 0, 0, 0, 0, 1, 0, 0, 0, 9, 1]].concat()),
                    ),
                    (T + 6, Input::Message(A, msg(&[(FrameKind::Text, 1, vec![0xff, 0xfe])]))),
                ],
            ]
            .concat(),
        },
        Scenario {
            name: "a socket that vanished is swept at the next accept",
            about: "A socket that died without a close event (a restart, a deploy) is noticed when the snippet \
                    connects again: its clients close for the app as lost.",
            steps: [
                room_of(&[A]),
                vec![
                    (T + 1, Input::Message(A, msg(&[open(1, "/rpc", "alice")]))),
                    (T + 2, Input::Vanish(A)),
                    (T + 3, Input::Accept(B, "room")),
                ],
            ]
            .concat(),
        },
    ]
}
