//! The session vectors: `protocol/vectors/session.json`, what a backend does, as
//! scenarios of inputs (a socket accepted, a message, a socket closed, time passing) and
//! exactly what must come out (each socket's messages and closes, and what the
//! application is told). Written by this crate's core with the one small application
//! below; every backend implementation replays them with the same application
//! (server-ts: `test/session.test.js`). `BLESS=1 cargo test -p snippet-proxy-do vectors`
//! rewrites the file after a deliberate change.
//!
//! The application ("the vectors' app"), services `/rpc` and `/echo`:
//! - open: recorded; no greeting;
//! - a message on `/echo`: sent back as it came;
//! - a text on `/rpc`: `all:{x}` broadcasts `{subject}: {x}` to every `/rpc` client,
//!   `close:{code}` closes the client with that code and reason `bye`, `quiet` gets no
//!   answer, anything else is sent back;
//! - a close: recorded, and `{subject} left` broadcast to every `/rpc` client;
//! - a request: `200 text/plain` `hello {subject}`.

use protocol::session::Envelope;
use protocol::{Close, ErrorFrame, FrameKind, Identity, Open, Request, Response, StreamId};
use serde_json::{json, Value};

use crate::{Action, App, Client, Msg, Object, Out, SocketId};

mod scenarios;
mod session_scenarios;

/// The vectors' application, recording what it is told.
#[derive(Default)]
pub(crate) struct VectorApp {
    pub(crate) events: Vec<Value>,
}

fn rpc_clients(c: &Client) -> bool {
    c.service == "/rpc"
}

impl App for VectorApp {
    const SERVICES: &'static [&'static str] = &["/rpc", "/echo"];

    fn on_open(&mut self, client: &Client, _: &mut Out<'_>) -> Result<(), crate::Refusal> {
        let (id, service, subject) = (client.id().to_string(), client.service, &client.identity.subject);
        self.events.push(json!({ "open": { "client": id, "service": service, "subject": subject } }));
        Ok(())
    }

    fn on_message(&mut self, client: &Client, msg: Msg<'_>, out: &mut Out<'_>) -> Result<(), crate::Refusal> {
        let text = match msg {
            Msg::Text(t) if client.service == "/rpc" => t,
            _ => {
                out.send(client.id(), msg);
                return Ok(());
            }
        };
        if let Some(said) = text.strip_prefix("all:") {
            out.broadcast(&rpc_clients, Msg::Text(&format!("{}: {said}", client.identity.subject)));
        } else if let Some(code) = text.strip_prefix("close:").and_then(|c| c.parse().ok()) {
            out.close(client.id(), code, "bye");
        } else if text != "quiet" {
            out.send(client.id(), msg);
        }
        Ok(())
    }

    fn on_request(&mut self, req: &Request, _: &mut Out<'_>) -> Response {
        let body = format!("hello {}", req.identity.subject).into_bytes();
        Response { status: 200, content_type: "text/plain".into(), body }
    }

    fn on_close(&mut self, client: &Client, code: u16, reason: &str, out: &mut Out<'_>) {
        let id = client.id().to_string();
        self.events.push(json!({ "close": { "client": id, "code": code, "reason": reason } }));
        out.broadcast(&rpc_clients, Msg::Text(&format!("{} left", client.identity.subject)));
    }
}

/// One input of a scenario.
#[derive(Debug, Clone)]
pub(crate) enum Input {
    Accept(u64, &'static str),
    Message(u64, Vec<u8>),
    Closed(u64, u16, &'static str),
    Error(u64),
    /// The socket dies without the object hearing of it (only the next accept's list of
    /// live sockets shows it).
    Vanish(u64),
    Timeout,
    /// The object is evicted and built again from storage; its sockets live on.
    Hibernate,
    /// The object restarts (a deploy): it is built again from storage, and every socket
    /// is gone without a close event.
    Restart,
}

/// A step: the time, and the input.
pub(crate) type Step = (u64, Input);

/// A scenario: its name, what it shows, and its steps.
pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    pub(crate) about: &'static str,
    pub(crate) steps: Vec<Step>,
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn socket(n: u64) -> String {
    SocketId::from_bits(n).to_string()
}

/// A frame as a reader of the file wants to see it (the replay compares the hex).
fn describe(kind: FrameKind, stream: StreamId, payload: &[u8]) -> String {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let what = match kind {
        FrameKind::Text => format!("{:?}", text(payload)),
        FrameKind::Error => ErrorFrame::decode(payload).map_or("?".into(), |e| format!("{} {:?}", e.code, e.message)),
        FrameKind::Close => Close::decode(payload).map_or("?".into(), |c| format!("{} {:?}", c.code, c.reason)),
        FrameKind::Open => Open::decode(payload).map_or("?".into(), |o| match o.attach {
            None => format!("{} {}", o.path, o.identity.subject),
            Some(a) => format!("{} {} session {} received {}", o.path, o.identity.subject, a.session, a.received),
        }),
        FrameKind::Response => {
            Response::decode(payload).map_or("?".into(), |r| format!("{} {:?}", r.status, text(&r.body)))
        }
        FrameKind::Binary => match Envelope::decode(payload) {
            Ok(Envelope::Data { text: true, seq, ack, payload }) => format!("Text#{seq} ack {ack} {:?}", text(payload)),
            Ok(Envelope::Data { text: false, seq, ack, payload }) => format!("Binary#{seq} ack {ack} {}", hex(payload)),
            Ok(Envelope::Ack { ack }) => format!("Ack {ack}"),
            Ok(Envelope::Welcome { resumed, ack }) => format!("Welcome resumed={resumed} ack {ack}"),
            Ok(Envelope::Ping(_) | Envelope::Pong(_)) | Err(_) => hex(payload),
        },
        _ => hex(payload),
    };
    format!("{kind:?} {stream} {what}")
}

fn frames_of(message: &[u8]) -> Vec<String> {
    match protocol::decode_message(message) {
        Ok(frames) => frames.map(|f| f.map_or("?".into(), |f| describe(f.kind, f.stream, f.payload))).collect(),
        Err(e) => vec![format!("undecodable: {e}")],
    }
}

fn input_json(input: &Input) -> Value {
    match input {
        Input::Accept(s, tenant) => json!({ "accept": { "socket": socket(*s), "tenant": tenant } }),
        Input::Message(s, bytes) => {
            json!({ "message": { "socket": socket(*s), "hex": hex(bytes), "frames": frames_of(bytes) } })
        }
        Input::Closed(s, code, reason) => json!({ "closed": { "socket": socket(*s), "code": code, "reason": reason } }),
        Input::Error(s) => json!({ "error": { "socket": socket(*s) } }),
        Input::Vanish(s) => json!({ "vanish": { "socket": socket(*s) } }),
        Input::Timeout => json!({ "timeout": true }),
        Input::Hibernate => json!({ "hibernate": true }),
        Input::Restart => json!({ "restart": true }),
    }
}

/// Runs a scenario on a fresh object: each step with what came out of it and the
/// operator's view after it; at the end, that view as Prometheus text.
pub(crate) fn run(scenario: &Scenario) -> Value {
    // Woken at the first step, as the glue builds the object at its first event.
    let first = scenario.steps.first().map_or(0, |(at, _)| *at);
    let mut object = Object::restore(VectorApp::default(), Vec::new(), Vec::new(), first);
    let mut live: Vec<SocketId> = Vec::new();
    let mut tenants = std::collections::BTreeMap::new();
    let mut stored = std::collections::BTreeMap::new();
    let mut steps = Vec::new();
    for (at, input) in &scenario.steps {
        let now = *at;
        match input {
            Input::Accept(s, tenant) => {
                let id = SocketId::from_bits(*s);
                live.push(id);
                tenants.insert(id, tenant.to_string());
                object.handle_accept(id, tenant, &live, now);
            }
            Input::Message(s, bytes) => object.handle_message(SocketId::from_bits(*s), bytes, now),
            Input::Closed(s, code, reason) => {
                live.retain(|l| *l != SocketId::from_bits(*s));
                object.handle_closed(SocketId::from_bits(*s), *code, reason, now);
            }
            Input::Error(s) => {
                live.retain(|l| *l != SocketId::from_bits(*s));
                object.handle_error(SocketId::from_bits(*s), now);
            }
            Input::Vanish(s) => live.retain(|l| *l != SocketId::from_bits(*s)),
            Input::Timeout => object.handle_timeout(now),
            Input::Hibernate | Input::Restart => {
                if matches!(input, Input::Restart) {
                    live.clear();
                }
                let sockets = live.iter().map(|s| (*s, tenants.get(s).cloned().unwrap_or_default()));
                let rows = stored.iter().map(|(k, v): (&String, &Vec<u8>)| (k.clone(), v.clone()));
                object =
                    Object::restore(VectorApp::default(), sockets.collect::<Vec<_>>(), rows.collect::<Vec<_>>(), now);
            }
        }
        let mut out = Vec::new();
        while let Some(action) = object.poll_action() {
            match action {
                Action::Send { socket, message } => out.push(json!({ "send": {
                    "socket": socket.to_string(), "hex": hex(&message), "frames": frames_of(&message) } })),
                Action::Close { socket, code, reason } => {
                    out.push(json!({ "close": { "socket": socket.to_string(), "code": code, "reason": reason } }))
                }
                Action::Put { key, value } => {
                    stored.insert(key, value);
                }
                Action::Delete { key } => {
                    stored.remove(&key);
                }
            }
        }
        let events = std::mem::take(&mut object.app_mut().events);
        let mut step = input_json(input);
        if let Some(obj) = step.as_object_mut() {
            obj.insert("at".into(), json!(now));
            obj.insert("out".into(), Value::Array(out));
            obj.insert("events".into(), Value::Array(events));
            obj.insert("next_timeout".into(), json!(object.poll_timeout()));
            obj.insert("view".into(), object.view(now, &live).to_json());
        }
        steps.push(step);
    }
    let last = scenario.steps.last().map_or(0, |(at, _)| *at);
    let metrics = object.view(last, &live).to_prometheus();
    json!({ "name": scenario.name, "about": scenario.about, "steps": steps, "metrics": metrics })
}

/// The whole file.
pub(crate) fn session_vectors() -> Value {
    let scenarios: Vec<Value> = scenarios::all().iter().map(run).collect();
    json!({
        "about": "What a snippet-proxy backend does, as scenarios: inputs with the time (ms) and exactly \
                  what comes out. Written by do-server (src/vectors.rs, which describes the app); \
                  replayed by every backend. Compare each socket's sends and closes in order, and the \
                  app's events in order. `next_timeout` is when the backend must next be woken (ms). \
                  `view` is what the operator's view (do-server src/view.rs) says after the step, and a \
                  scenario's `metrics` that view as Prometheus text after its last step.",
        "handover_window_ms": crate::HANDOVER_WINDOW_MS,
        "handover_grace_ms": crate::HANDOVER_GRACE_MS,
        "resume_window_ms": protocol::session::RESUME_WINDOW_MS,
        "scenarios": scenarios,
    })
}

/// An identity for the vectors: tenant `room`, expiring at 2,000,000 s (the scenarios
/// run around 1,000,000 s).
pub(crate) fn who(subject: &str) -> Identity {
    Identity { subject: subject.into(), tenant: "room".into(), scopes: "read".into(), expires_at: 2_000_000 }
}

#[test]
fn session_vectors_match_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol/vectors/session.json");
    let made = session_vectors();
    if std::env::var_os("BLESS").is_some() {
        let text = serde_json::to_string_pretty(&made).expect("JSON") + "\n";
        std::fs::write(&path, text).expect("write session.json");
    }
    let text = std::fs::read_to_string(&path).expect("protocol/vectors/session.json (BLESS=1 writes it)");
    let stored: Value = serde_json::from_str(&text).expect("session.json is JSON");
    assert_eq!(stored, made, "session.json differs from the code: BLESS=1 cargo test -p snippet-proxy-do vectors");
}
