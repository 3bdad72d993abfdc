//! The session vectors' scenarios for resumable sessions (PROTOCOL.md §14): one session
//! id throughout, `5e5e…`; alice's client sends envelopes with its own numbers.

use protocol::session::{Attach, Envelope, SessionId, RESUME_WINDOW_MS};
use protocol::{FrameKind, Open};

use super::scenarios::{barrier, close, msg, open, room_of, text, A, B, C, F, T};
use super::{who, Input, Scenario};

const S: SessionId = SessionId::from_bytes([0x5e; 16]);

/// `subject` opens `stream` on `/rpc` in session [`S`], having received up to `received`.
fn attach_as(stream: u32, subject: &str, received: u64) -> F {
    let open = Open { path: "/rpc".into(), identity: who(subject), attach: Some(Attach { session: S, received }) };
    (FrameKind::Open, stream, open.encode())
}

fn attach(stream: u32, received: u64) -> F {
    attach_as(stream, "alice", received)
}

/// The client's message `seq` (text `s`), acknowledging up to `ack`.
fn data(stream: u32, seq: u64, ack: u64, s: &str) -> F {
    (FrameKind::Binary, stream, Envelope::Data { text: true, seq, ack, payload: s.as_bytes() }.encode())
}

fn ack(stream: u32, ack: u64) -> F {
    (FrameKind::Binary, stream, Envelope::Ack { ack }.encode())
}

pub(super) fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "a session resumes on another socket",
            about: "A session's client is welcomed, numbered and acknowledged; when its socket is lost it only \
                    detaches (the app hears nothing) and what the app sends meanwhile is kept; on another \
                    socket it resumes: Welcome with the last message taken, what it missed in order, then \
                    live traffic. The app saw one open and no close.",
            steps: [
                room_of(&[A, C]),
                vec![
                    (T + 1, Input::Message(C, msg(&[open(1, "/rpc", "bob")]))),
                    (T + 2, Input::Message(A, msg(&[attach(5, 0), data(5, 1, 0, "hi")]))),
                    (T + 3, Input::Closed(A, 1006, "")),
                    (T + 4, Input::Message(C, msg(&[text(1, "all:x")]))),
                    (T + 5, Input::Accept(B, "room")),
                    (T + 6, Input::Message(B, msg(&[attach(7, 1), data(7, 2, 1, "again")]))),
                    (T + 7, Input::Message(B, msg(&[ack(7, 3)]))),
                ],
            ]
            .concat(),
        },
        Scenario {
            name: "a session takes each client message once",
            about: "A message already taken (a re-send) or one after a gap is dropped; the next one is taken. A \
                    message that gets no answer is acknowledged with an Ack after the batch; one whose answer \
                    carries the ack needs none.",
            steps: [
                room_of(&[A]),
                vec![
                    (T + 1, Input::Message(A, msg(&[attach(5, 0), data(5, 1, 0, "quiet")]))),
                    (T + 2, Input::Message(A, msg(&[data(5, 1, 0, "quiet"), data(5, 3, 0, "gap")]))),
                    (T + 3, Input::Message(A, msg(&[data(5, 2, 0, "two"), data(5, 3, 0, "quiet")]))),
                ],
            ]
            .concat(),
        },
        Scenario {
            name: "a session nobody comes back to expires",
            about: "A close that is not the client's own leaving (1001 going away) detaches the session; the app \
                    hears the client close, with 1006 'session not resumed in time', when the resume window \
                    ends. A client that closes with 1000 ends its session at once.",
            steps: [
                room_of(&[A]),
                vec![
                    (T + 1, Input::Message(A, msg(&[attach(5, 0), open(6, "/rpc", "bob")]))),
                    (T + 2, Input::Message(A, msg(&[close(5, 1001, "")]))),
                    (T + 2 + RESUME_WINDOW_MS - 1, Input::Timeout),
                    (T + 2 + RESUME_WINDOW_MS, Input::Timeout),
                    (T + 3 + RESUME_WINDOW_MS, Input::Message(A, msg(&[attach(8, 0), close(8, 1000, "done")]))),
                ],
            ]
            .concat(),
        },
        Scenario {
            name: "a session resumed too late begins anew",
            about: "A client that claims messages the session never sent cannot be resumed: the old client \
                    closes for the app as expired and a new one opens under the same id, welcomed as new.",
            steps: [
                room_of(&[A]),
                vec![
                    (T + 1, Input::Message(A, msg(&[attach(5, 0), data(5, 1, 0, "hi")]))),
                    (T + 2, Input::Message(A, msg(&[close(5, 1006, "")]))),
                    (T + 3, Input::Message(A, msg(&[attach(6, 9)]))),
                ],
            ]
            .concat(),
        },
        Scenario {
            name: "a session moves off a connection that is still open",
            about: "A client that comes back through another socket while its old stream still looks open (a \
                    connection that died silently): the old stream gets a Close, 'session resumed on another \
                    connection'; a session of another caller is refused with 403; the same session opened \
                    again on the stream it is on goes on there.",
            steps: [
                room_of(&[A, B]),
                vec![
                    (T + 1, Input::Message(A, msg(&[attach(5, 0), data(5, 1, 0, "hi")]))),
                    (T + 2, Input::Message(B, msg(&[attach(9, 1)]))),
                    (T + 3, Input::Message(B, msg(&[attach_as(10, "mallory", 0)]))),
                    (T + 4, Input::Message(B, msg(&[attach(9, 1), data(9, 2, 1, "same stream")]))),
                ],
            ]
            .concat(),
        },
        Scenario {
            name: "a session across a hand-over",
            about: "The snippet re-opens a session stream on the new socket of a hand-over with what it passed \
                    on: the session resumes there, and the old, handing-over socket is not told.",
            steps: [
                room_of(&[A]),
                vec![
                    (T + 1, Input::Message(A, msg(&[attach(5, 0), data(5, 1, 0, "hi")]))),
                    (T + 2, Input::Message(A, msg(&[barrier()]))),
                    (T + 3, Input::Accept(B, "room")),
                    (T + 4, Input::Message(B, msg(&[attach(5, 1), data(5, 2, 1, "moved")]))),
                    (T + 5, Input::Closed(A, 1000, "handed over")),
                ],
            ]
            .concat(),
        },
        Scenario {
            name: "a session survives hibernation and a restart",
            about: "Its positions and kept messages are stored: after the object is evicted and woken it goes \
                    on where it was; after a restart (every socket gone) it is detached and resumes on the \
                    snippet's new socket with what it missed. The app saw one open throughout.",
            steps: [
                room_of(&[A]),
                vec![
                    (T + 1, Input::Message(A, msg(&[attach(5, 0), data(5, 1, 0, "one")]))),
                    (T + 2, Input::Hibernate),
                    (T + 3, Input::Message(A, msg(&[data(5, 1, 1, "one"), data(5, 2, 1, "two")]))),
                    (T + 4, Input::Restart),
                    (T + 5, Input::Accept(B, "room")),
                    (T + 6, Input::Message(B, msg(&[attach(5, 1), data(5, 3, 2, "three")]))),
                ],
            ]
            .concat(),
        },
    ]
}
