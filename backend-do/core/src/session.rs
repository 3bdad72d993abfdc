//! backend-do's services as a [`snippet_proxy_do::App`]: `/rpc` (JSON-RPC over the
//! object's database) and `/echo` on WebSocket streams, `/rpc`, `/query` and `/echo` as
//! requests. Streams, admission, batching and hibernation are the mux server's; what is
//! left here is what this backend does with a client's message.

use snippet_proxy_do::{App, Client, Msg, NoFanout, Out, Refusal};

use crate::authz::{Caller, Grants};
use crate::rpc::{self, Db, DbError, SqlMode, SqlResult};
pub use protocol::facts::MAX_BATCH_BYTES;
/// An HTTP request as the backend sees it (the same shape as a `Request` frame).
pub use protocol::Request as HttpRequest;
/// An HTTP response as the backend builds it.
pub use protocol::Response as HttpResponse;
use protocol::{Request, Response};
pub use snippet_proxy_do::{push_batches, Outcome, MAX_STREAMS};

/// `/rpc`: each message is a JSON-RPC request (or batch).
pub const RPC: &str = "/rpc";
/// `/echo`: each message comes back verbatim.
pub const ECHO: &str = "/echo";
/// The stream services, in storage order: 1 = `/rpc`, 2 = `/echo` (append only).
pub const SERVICES: &[&str] = &[RPC, ECHO];

/// The backend as a mux application, over the object's database.
pub struct Backend<'d> {
    db: &'d mut dyn Db,
}

impl<'d> Backend<'d> {
    /// The application over `db` (whose `broadcast` reaches what the object has besides
    /// mux streams: its direct sockets).
    pub fn new(db: &'d mut dyn Db) -> Backend<'d> {
        Backend { db }
    }
}

impl App for Backend<'_> {
    const SERVICES: &'static [&'static str] = SERVICES;

    fn on_message(&mut self, client: &Client, msg: Msg<'_>, out: &mut Out<'_>) -> Result<(), Refusal> {
        match client.service {
            ECHO if !Grants::of(&client.identity).read() => {
                Err(Refusal::new(403, "the echo service needs the read scope"))
            }
            ECHO => {
                out.reply(client.stream, msg);
                Ok(())
            }
            _ => {
                let caller = Caller::new(client.identity.clone(), out.now_secs());
                if let Some(answer) = rpc::handle(msg.as_bytes(), &mut Bound::new(self.db, out), &caller) {
                    out.reply(client.stream, Msg::Text(&answer));
                }
                Ok(())
            }
        }
    }

    fn on_request(&mut self, req: &Request, out: &mut Out<'_>) -> Response {
        let caller = Caller::new(req.identity.clone(), out.now_secs());
        http(req, &mut Bound::new(self.db, out), &caller)
    }
}

/// Whether a stream hears `broadcast` notifications: a JSON-RPC stream whose caller may
/// read and has not expired at `now_secs`.
pub fn listening(client: &Client, now_secs: u64) -> bool {
    client.service == RPC && Grants::of(&client.identity).read() && !client.identity.expired(now_secs)
}

/// The object's database with the mux clients in reach: `broadcast` goes to the
/// database's own listeners (direct sockets) and to every listening mux stream.
pub struct Bound<'x, 'o> {
    db: &'x mut dyn Db,
    out: &'x mut Out<'o>,
}

impl<'x, 'o> Bound<'x, 'o> {
    /// `db` with `out`'s mux clients.
    pub fn new(db: &'x mut dyn Db, out: &'x mut Out<'o>) -> Bound<'x, 'o> {
        Bound { db, out }
    }
}

impl Db for Bound<'_, '_> {
    fn sql(&mut self, q: &str, params: &[serde_json::Value], mode: SqlMode) -> Result<SqlResult, DbError> {
        self.db.sql(q, params, mode)
    }

    fn stats(&mut self) -> serde_json::Value {
        self.db.stats()
    }

    fn broadcast(&mut self, notification: &str) -> u64 {
        let now = self.out.now_secs();
        let direct = self.db.broadcast(notification);
        direct + self.out.broadcast(&|c| listening(c, now), Msg::Text(notification))
    }
}

/// One mux socket's stream table run with [`Backend`] and no other sockets: what the
/// unit tests and the snippet's simulator (`snippet/core/src/sim.rs`) talk to. The
/// object itself goes through `snippet_proxy_do::glue`, which adds storage and fan-out.
#[derive(Debug, Clone, Default)]
pub struct Session(pub snippet_proxy_do::Session);

impl Session {
    /// An empty table for `tenant`'s object.
    pub fn new(tenant: &str) -> Session {
        Session(snippet_proxy_do::Session::new(tenant))
    }

    /// Handles one message from the snippet (see [`snippet_proxy_do::Session::handle_message`]).
    pub fn handle_message(&mut self, msg: &[u8], db: &mut dyn Db, now_secs: u64) -> Outcome {
        self.0.handle_message(&mut Backend::new(db), msg, now_secs, &mut NoFanout)
    }
}

impl std::ops::Deref for Session {
    type Target = snippet_proxy_do::Session;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Session {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

const JSON: &str = "application/json";

fn json_response(status: u16, body: String) -> Response {
    Response { status, content_type: JSON.into(), body: body.into_bytes() }
}

/// Answers one admitted HTTP request for `caller`, whichever way it arrived (a `Request`
/// frame, or plain HTTP to the Durable Object): `/rpc` JSON-RPC, `/query` the
/// `{sql, params}` body, `/echo` (needs `read`).
pub fn http(req: &Request, db: &mut dyn Db, caller: &Caller) -> Response {
    let json = json_response;
    if req.method != "POST" {
        return json(405, r#"{"error":"use POST"}"#.into());
    }
    match req.path.as_str() {
        "/rpc" => match rpc::handle(&req.body, db, caller) {
            Some(answer) => json(200, answer),
            None => Response { status: 204, content_type: String::new(), body: Vec::new() },
        },
        "/query" => {
            let (status, body) = rpc::handle_query(&req.body, db, caller);
            json(status, body)
        }
        "/echo" if !caller.grants.read() => json(403, r#"{"error":"echo needs the read scope"}"#.into()),
        "/echo" => Response { status: 200, content_type: req.content_type.clone(), body: req.body.clone() },
        other => json(404, serde_json::json!({ "error": format!("no service at {other}") }).to_string()),
    }
}

#[cfg(test)]
mod tests;
