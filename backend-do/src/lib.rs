//! backend-do: the Worker in front of the `Database` Durable Object. It checks the bearer
//! token and hands each request to the tenant's object (`idFromName(tenant)`).

mod object;
mod sql;

use backend_core::route::{self, RouteError};
pub use object::Database;
use worker::*;

/// The Durable Object binding name in `backend-do/wrangler.toml`.
pub const BINDING: &str = "DATABASE";

fn json_error(status: u16, message: &str) -> Result<Response> {
    Ok(Response::from_json(&serde_json::json!({ "error": message }))?.with_status(status))
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let path = req.path();
    if path == "/" {
        return Response::ok(
            "backend-do: /db/{name}/mux (snippet), /db/{name}/ws (JSON-RPC WebSocket), /db/{name}/echo, \
             POST /db/{name}/rpc, POST /db/{name}/query, GET /db/{name}/__stats (the object's view, JSON), \
             GET /db/{name}/__metrics (Prometheus) — all need Authorization: Bearer <BACKEND_TOKEN>\n",
        );
    }
    let (tenant, endpoint) = match route::parse(&path) {
        Ok(r) => r,
        Err(RouteError::NotFound) => return json_error(404, "not found; see GET /"),
        Err(RouteError::BadTenant) => return json_error(400, protocol::facts::TENANT_RULE),
    };
    // Fail closed: without a configured token nobody gets in.
    let token = env.secret("BACKEND_TOKEN").map(|s| s.to_string()).unwrap_or_default();
    if token.is_empty() {
        return json_error(500, "BACKEND_TOKEN is not configured");
    }
    let header = req.headers().get("Authorization")?;
    if !route::authorized(header.as_deref(), &token) {
        return json_error(401, "missing or wrong bearer token");
    }
    if endpoint.is_websocket() && !req.headers().get("Upgrade")?.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
        return json_error(426, "this endpoint needs a WebSocket upgrade");
    }
    if endpoint.is_view() && req.method() != Method::Get {
        return json_error(405, "use GET");
    }
    if !endpoint.is_websocket() && !endpoint.is_view() && req.method() != Method::Post {
        return json_error(405, "use POST");
    }
    // An operator can take tenants offline (a migration, an incident): every endpoint of
    // theirs answers 503 while other tenants carry on — but the operator's view, which is
    // what one looks at during an incident.
    let maintenance = env.var("MAINTENANCE_TENANTS").map(|v| v.to_string()).unwrap_or_default();
    if !endpoint.is_view() && route::listed(&maintenance, tenant) {
        return json_error(503, route::MAINTENANCE);
    }
    let stub = env.durable_object(BINDING)?.id_from_name(tenant)?.get_stub()?;
    stub.fetch_with_request(req).await
}
