//! backend-do's services as a [`snippet_proxy_do::App`]: `/rpc` (JSON-RPC over the
//! object's database) and `/echo` on WebSocket streams, `/rpc`, `/query` and `/echo` as
//! requests. Streams, admission, batching and hibernation are the mux server's; what is
//! left here is what this backend does with a client's message.

use protocol::{Request, Response};
use snippet_proxy_do::{App, Client, Msg, Out, Refusal};

use crate::authz::{Caller, Grants};
use crate::rpc::{self, Db, DbError, SqlMode, SqlResult};

/// `/rpc`: each message is a JSON-RPC request (or batch).
pub const RPC: &str = "/rpc";
/// `/echo`: each message comes back verbatim.
pub const ECHO: &str = "/echo";

/// The backend as a mux application, over the object's database.
pub struct Backend<D: Db> {
    db: D,
}

impl<D: Db> Backend<D> {
    /// The application over `db` (whose `broadcast` reaches what the object has besides
    /// mux clients: its direct sockets).
    pub fn new(db: D) -> Backend<D> {
        Backend { db }
    }

    /// The database (tests read what it was asked).
    #[cfg(test)]
    pub(crate) fn bound_db(&mut self) -> &mut D {
        &mut self.db
    }

    /// The database, with the mux clients of `out` in reach of its `broadcast`.
    pub fn bound<'x, 'o>(&'x mut self, out: &'x mut Out<'o>) -> Bound<'x, 'o> {
        Bound { db: &mut self.db, out }
    }
}

impl<D: Db> App for Backend<D> {
    /// Stored as their position: 1 = `/rpc`, 2 = `/echo` (append only).
    const SERVICES: &'static [&'static str] = &[RPC, ECHO];

    fn on_message(&mut self, client: &Client, msg: Msg<'_>, out: &mut Out<'_>) -> Result<(), Refusal> {
        match client.service {
            ECHO if !Grants::of(&client.identity).read() => {
                Err(Refusal::new(403, "the echo service needs the read scope"))
            }
            ECHO => {
                out.send(client.id(), msg);
                Ok(())
            }
            _ => {
                let caller = Caller::new(client.identity.clone(), out.now_secs());
                if let Some(answer) = rpc::handle(msg.as_bytes(), &mut self.bound(out), &caller) {
                    out.send(client.id(), Msg::Text(&answer));
                }
                Ok(())
            }
        }
    }

    fn on_request(&mut self, req: &Request, out: &mut Out<'_>) -> Response {
        let caller = Caller::new(req.identity.clone(), out.now_secs());
        http(req, &mut self.bound(out), &caller)
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
    /// `db` with `out`'s mux clients (for a caller that is not the app: a direct socket).
    pub fn new(db: &'x mut dyn Db, out: &'x mut Out<'o>) -> Bound<'x, 'o> {
        Bound { db, out }
    }
}

impl Db for Bound<'_, '_> {
    fn sql(&mut self, q: &str, params: &[serde_json::Value], mode: SqlMode) -> Result<SqlResult, DbError> {
        self.db.sql(q, params, mode)
    }

    /// The database's figures, and the mux clients open on every socket.
    fn stats(&mut self) -> serde_json::Value {
        let mut stats = self.db.stats();
        if let Some(fields) = stats.as_object_mut() {
            fields.insert("streams".into(), (self.out.clients().count() as u64).into());
            let c = self.out.session_counters();
            for (k, v) in [
                ("sessionsResumed", c.resumed),
                ("sessionsExpired", c.expired),
                ("sessionMessagesReplayed", c.replayed),
                ("sessionDuplicates", c.duplicates),
                ("sessionRowsWritten", c.rows_written),
            ] {
                fields.insert(k.into(), v.into());
            }
        }
        stats
    }

    fn broadcast(&mut self, notification: &str) -> u64 {
        let now = self.out.now_secs();
        let direct = self.db.broadcast(notification);
        direct + self.out.broadcast(&|c| listening(c, now), Msg::Text(notification))
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
