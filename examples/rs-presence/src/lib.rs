//! rs-presence: a presence room — a Rust Durable Object behind snippet-proxy, one object
//! per tenant — and the example of "your own Rust object" on `snippet-proxy-do`.
//!
//! Three parts: the Worker (here) routes `/db/{tenant}/…` to the tenant's object after a
//! bearer check; the object ([`Presence`], `object.rs`) hands its sockets and requests
//! to a `MuxServer`; the app (`room.rs`) is the room's logic, written for clients.

mod object;
mod room;

pub use object::Presence;
use worker::*;

/// The Durable Object binding in `wrangler.toml`.
const BINDING: &str = "PRESENCE";

const HELP: &str = "snippet-proxy-example-rs: a presence room, a Rust Durable Object behind snippet-proxy.
  /db/{tenant}/mux          the snippet's multiplexed upstream (WebSocket)
  POST /db/{tenant}/rpc     JSON-RPC over HTTP (also the snippet's fallback)
  GET /db/{tenant}/__stats  the object's view for operators (JSON)
All need Authorization: Bearer <BACKEND_TOKEN>. Through the snippet: /ws (JSON-RPC:
ping, who), /ws/echo (echo), POST /rpc.
";

/// What a path asks of the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `/db/{tenant}/mux`: the snippet's upstream.
    Mux,
    /// `POST /db/{tenant}/rpc`: JSON-RPC over plain HTTP.
    Rpc,
    /// `GET /db/{tenant}/__stats`: the object's view, for the token's holder only.
    Stats,
}

/// `/db/{tenant}/mux` or `/db/{tenant}/rpc` → (tenant, endpoint); the tenant unchecked.
pub(crate) fn route(path: &str) -> Option<(&str, Endpoint)> {
    let (tenant, endpoint) = path.strip_prefix("/db/")?.split_once('/')?;
    match endpoint {
        "mux" => Some((tenant, Endpoint::Mux)),
        "rpc" => Some((tenant, Endpoint::Rpc)),
        "__stats" => Some((tenant, Endpoint::Stats)),
        _ => None,
    }
}

pub(crate) fn json_error(status: u16, message: &str) -> Result<Response> {
    Ok(Response::from_json(&serde_json::json!({ "error": message }))?.with_status(status))
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let path = req.path();
    if path == "/" {
        return Response::ok(HELP);
    }
    let Some((tenant, endpoint)) = route(&path) else {
        return json_error(404, "not found; see GET /");
    };
    // The snippet's own rule, so a name it accepts reaches an object here too.
    if !protocol::facts::is_valid_tenant(tenant) {
        return json_error(400, protocol::facts::TENANT_RULE);
    }
    // Checked before any object is involved, so nobody without the token wakes one; and
    // fail closed: without a configured token nobody gets in.
    let token = env.secret("BACKEND_TOKEN").map(|s| s.to_string()).unwrap_or_default();
    if token.is_empty() {
        return json_error(500, "BACKEND_TOKEN is not configured");
    }
    if !snippet_proxy_do::authorized(req.headers().get("Authorization")?.as_deref(), &token) {
        return json_error(401, "missing or wrong bearer token");
    }
    if endpoint == Endpoint::Rpc && req.method() != Method::Post {
        return json_error(405, "use POST");
    }
    if endpoint == Endpoint::Stats && req.method() != Method::Get {
        return json_error(405, "use GET");
    }
    let stub = env.durable_object(BINDING)?.id_from_name(tenant)?.get_stub()?;
    stub.fetch_with_request(req).await
}
