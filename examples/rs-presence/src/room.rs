//! The application: a presence room. It knows who is here, answers a tiny JSON-RPC, and
//! echoes. It sees clients, never frames or sockets: snippet-proxy-do does the rest.

use serde_json::{json, Value};
use snippet_proxy_do::{App, Client, Msg, Out, Refusal, Request, Response};
use worker::console_log;

/// The room keeps no state of its own: who is here is the crate's list of open clients
/// (`Out::clients`), which comes back from storage after hibernation and keeps each client
/// across the snippet's hand-overs (a client's `ClientId` is unique in the object and
/// stays the same when its stream moves to a new socket; the app hears no `on_close` or
/// `on_open` for that), so this app needs no hand-over or hibernation code at all.
pub struct Room;

impl App for Room {
    // The paths a stream may open: the snippet maps its client routes `/ws` → `/rpc` and
    // `/ws/echo` → `/echo`. A stream's service is stored as its position here, so append
    // only.
    const SERVICES: &'static [&'static str] = &["/rpc", "/echo"];

    // The crate admitted the caller already (this tenant, or `*`, and not expired);
    // scopes would be the app's to check here. Presence asks for none.
    fn on_open(&mut self, client: &Client, _out: &mut Out<'_>) -> Result<(), Refusal> {
        // One fixed, greppable line per arrival and per departure (the e2e test counts
        // them, and the TypeScript example writes the same ones).
        console_log!("presence: open {} {}", client.id(), client.identity.subject);
        Ok(())
    }

    fn on_message(&mut self, client: &Client, msg: Msg<'_>, out: &mut Out<'_>) -> Result<(), Refusal> {
        if client.service == "/echo" {
            // The same message back, of the same kind (text or binary).
            out.send(client.id(), msg);
        } else if let Some(reply) = rpc(msg.as_bytes(), out) {
            out.send(client.id(), Msg::Text(&reply));
        }
        Ok(())
    }

    // The snippet's `POST /rpc` (a `Request` frame, or plain HTTP to the object when the
    // upstream is down): the same JSON-RPC, one reply per request.
    fn on_request(&mut self, req: &Request, out: &mut Out<'_>) -> Response {
        if req.path != "/rpc" {
            let body = json!({ "error": format!("no service at {}", req.path) }).to_string().into_bytes();
            return Response { status: 404, content_type: "application/json".into(), body };
        }
        match rpc(&req.body, out) {
            Some(reply) => Response { status: 200, content_type: "application/json".into(), body: reply.into_bytes() },
            None => Response { status: 204, content_type: String::new(), body: Vec::new() },
        }
    }

    // Called once per client, when it is gone for good: its own close (code and reason as
    // it sent them), the app's `Out::close`, or its upstream lost with no hand-over to
    // take it on (1006).
    fn on_close(&mut self, client: &Client, code: u16, reason: &str, _out: &mut Out<'_>) {
        console_log!("presence: close {} {} {} {}", client.id(), client.identity.subject, code, reason);
    }
}

/// The reply to one JSON-RPC 2.0 request, or `None` for a notification (no `id`).
/// Minimal on purpose: `ping` → `"pong"`, `who` → the subjects present, one per client;
/// no batches.
fn rpc(body: &[u8], out: &Out<'_>) -> Option<String> {
    let call: Value = match serde_json::from_slice(body) {
        Ok(call) => call,
        Err(e) => return Some(error(Value::Null, -32700, &format!("parse error: {e}"))),
    };
    let id = call.get("id").cloned();
    let method = match (call.get("jsonrpc").and_then(Value::as_str), call.get("method").and_then(Value::as_str)) {
        (Some("2.0"), Some(method)) => method,
        // Unusable, so not a notification either: answered, with id null if it had none.
        _ => return Some(error(id.unwrap_or(Value::Null), -32600, "not a JSON-RPC 2.0 request")),
    };
    let result = match method {
        "ping" => Ok(json!("pong")),
        "who" => Ok(json!(out.clients().map(|c| c.identity.subject.as_str()).collect::<Vec<_>>())),
        other => Err(format!("method not found: {other}")),
    };
    let id = id?;
    Some(match result {
        Ok(result) => json!({ "jsonrpc": "2.0", "result": result, "id": id }).to_string(),
        Err(message) => error(id, -32601, &message),
    })
}

/// A JSON-RPC 2.0 error reply.
fn error(id: Value, code: i64, message: &str) -> String {
    json!({ "jsonrpc": "2.0", "error": { "code": code, "message": message }, "id": id }).to_string()
}
