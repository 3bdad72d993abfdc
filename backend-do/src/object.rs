//! The `Database` Durable Object: one per tenant. A WebSocket server on the Hibernation
//! API, answering JSON-RPC from its SQLite storage.
//!
//! Hibernation rules (DESIGN.md §2.9): `new()` runs again after every wake, so nothing
//! that must survive lives in fields; each socket's state (its endpoint and, for the
//! snippet's multiplexed socket, the stream table) is in its attachment.

use std::cell::Cell;

use backend_core::route::{self, Endpoint};
use backend_core::rpc::{self, stats_object, DbError};
use backend_core::{session, Db, Service, Session, SqlResult};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use worker::*;

use crate::sql;

const META_TABLE: &str = "CREATE TABLE IF NOT EXISTS proxy_meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL)";

/// What a socket is, kept in its attachment so it survives hibernation.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Attachment {
    /// `mux`, `ws` or `echo`.
    endpoint: String,
    /// The snippet's stream table (mux sockets only).
    #[serde(default)]
    session: Session,
}

/// One tenant's database.
#[durable_object]
pub struct Database {
    state: State,
    /// Since this instance was constructed (reset by hibernation; `wakes` counts those).
    messages: Cell<u64>,
    http_requests: Cell<u64>,
    sockets_accepted: Cell<u64>,
    wakes: u64,
}

/// The object's storage plus what `stats` reports.
struct ObjectDb<'a> {
    obj: &'a Database,
}

impl Db for ObjectDb<'_> {
    fn sql(&mut self, q: &str, params: &[Value]) -> std::result::Result<SqlResult, DbError> {
        sql::run(&self.obj.state.storage().sql(), q, params)
    }

    fn broadcast(&mut self, notification: &str) -> u64 {
        let mut delivered = 0;
        for ws in self.obj.state.get_websockets_with_tag("ws") {
            if ws.send_with_str(notification).is_ok() {
                delivered += 1;
            }
        }
        for ws in self.obj.state.get_websockets_with_tag("mux") {
            let Ok(Some(a)) = ws.deserialize_attachment::<Attachment>() else { continue };
            let rpc: Vec<u32> =
                a.session.streams.iter().filter(|(_, s)| **s == Service::Rpc).map(|(id, _)| *id).collect();
            if let Some(batch) = session::push_batch(&rpc, notification) {
                if ws.send_with_bytes(batch).is_ok() {
                    delivered += rpc.len() as u64;
                }
            }
        }
        delivered
    }

    fn stats(&mut self) -> Value {
        let sockets = self.obj.state.get_websockets();
        let streams: usize = self
            .obj
            .state
            .get_websockets_with_tag("mux")
            .iter()
            .filter_map(|ws| ws.deserialize_attachment::<Attachment>().ok().flatten())
            .map(|a| a.session.streams.len())
            .sum();
        let count = |tag: &str| self.obj.state.get_websockets_with_tag(tag).len() as u64;
        stats_object(&[
            ("sockets", sockets.len() as u64),
            ("muxSockets", count("mux")),
            ("wsSockets", count("ws")),
            ("echoSockets", count("echo")),
            ("streams", streams as u64),
            ("messages", self.obj.messages.get()),
            ("httpRequests", self.obj.http_requests.get()),
            ("socketsAccepted", self.obj.sockets_accepted.get()),
            ("wakes", self.obj.wakes),
        ])
    }
}

impl Database {
    fn db(&self) -> ObjectDb<'_> {
        ObjectDb { obj: self }
    }
}

impl DurableObject for Database {
    fn new(state: State, _env: Env) -> Self {
        // Heartbeats are answered by the runtime without waking the object.
        if let Ok(pair) = WebSocketRequestResponsePair::new("ping", "pong") {
            state.set_websocket_auto_response(&pair);
        }
        let storage = state.storage().sql();
        let wakes = storage
            .exec(META_TABLE, None)
            .and_then(|_| {
                storage.exec(
                    "INSERT INTO proxy_meta (k, v) VALUES ('wakes', 1) \
                     ON CONFLICT(k) DO UPDATE SET v = v + 1 RETURNING v",
                    None,
                )
            })
            .ok()
            .and_then(|c| c.raw().next())
            .and_then(|row| row.ok())
            .and_then(|row| match row.first() {
                Some(SqlStorageValue::Integer(v)) => Some(*v as u64),
                _ => None,
            })
            .unwrap_or(0);
        Database { state, messages: Cell::new(0), http_requests: Cell::new(0), sockets_accepted: Cell::new(0), wakes }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let path = req.path();
        let Ok((_tenant, endpoint)) = route::parse(&path) else {
            return Response::error("not found", 404);
        };
        if endpoint.is_websocket() {
            let pair = WebSocketPair::new()?;
            self.state.accept_websocket_with_tags(&pair.server, &[endpoint.name()]);
            let attachment = Attachment { endpoint: endpoint.name().to_owned(), session: Session::default() };
            pair.server.serialize_attachment(&attachment)?;
            self.sockets_accepted.set(self.sockets_accepted.get() + 1);
            return Response::from_websocket(pair.client);
        }
        self.http_requests.set(self.http_requests.get() + 1);
        let content_type = req.headers().get("Content-Type")?.unwrap_or_default();
        let body = req.bytes().await?;
        let service = if endpoint == Endpoint::Query { "/query" } else { "/rpc" };
        let request =
            backend_core::session::HttpRequest { method: "POST".into(), path: service.into(), content_type, body };
        let res = session::http(&request, &mut self.db());
        let headers = Headers::new();
        if !res.content_type.is_empty() {
            headers.set("Content-Type", &res.content_type)?;
        }
        Ok(Response::from_bytes(res.body)?.with_status(res.status).with_headers(headers))
    }

    async fn websocket_message(&self, ws: WebSocket, message: WebSocketIncomingMessage) -> Result<()> {
        self.messages.set(self.messages.get() + 1);
        let mut attachment: Attachment = ws.deserialize_attachment()?.unwrap_or_default();
        match attachment.endpoint.as_str() {
            "echo" => match message {
                WebSocketIncomingMessage::String(s) => ws.send_with_str(s),
                WebSocketIncomingMessage::Binary(b) => ws.send_with_bytes(b),
            },
            "mux" => {
                let bytes = match message {
                    WebSocketIncomingMessage::Binary(b) => b,
                    // Text is not a batch: the decoder answers it with a session error.
                    WebSocketIncomingMessage::String(s) => s.into_bytes(),
                };
                let outcome = attachment.session.handle_message(&bytes, &mut self.db());
                if outcome.changed {
                    ws.serialize_attachment(&attachment)?;
                }
                match outcome.reply {
                    Some(reply) => ws.send_with_bytes(reply),
                    None => Ok(()),
                }
            }
            _ => {
                let bytes = match message {
                    WebSocketIncomingMessage::Binary(b) => b,
                    WebSocketIncomingMessage::String(s) => s.into_bytes(),
                };
                match rpc::handle(&bytes, &mut self.db()) {
                    Some(reply) => ws.send_with_str(reply),
                    None => Ok(()),
                }
            }
        }
    }

    async fn websocket_close(&self, ws: WebSocket, code: usize, reason: String, _was_clean: bool) -> Result<()> {
        // Reciprocate with a code that may be sent (1005/1006/1015 are reserved).
        let code = match code {
            1005 | 1006 | 1015 => 1000,
            c => u16::try_from(c).unwrap_or(1000),
        };
        let _ = ws.close(Some(code), Some(reason));
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, _error: Error) -> Result<()> {
        let _ = ws.close(Some(1011), Some("socket error"));
        Ok(())
    }
}
