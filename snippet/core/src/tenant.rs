//! Tenants in the snippet's routes and in the backend URL template.
//!
//! Routes: `/db/{tenant}/ws`, `/db/{tenant}/ws/echo`, `/db/{tenant}/rpc`,
//! `/db/{tenant}/query`, and the same without the prefix for tenant
//! [`DEFAULT_TENANT`]. `BACKEND_URL` holds `{tenant}` where the name goes. The names
//! themselves follow [`protocol::facts::is_valid_tenant`].

use protocol::facts::{is_valid_tenant, DEFAULT_TENANT};

/// Where `BACKEND_URL` puts the tenant's name.
pub const PLACEHOLDER: &str = "{tenant}";

/// A tenant-scoped route of the snippet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `…/ws`: a JSON-RPC WebSocket.
    Ws,
    /// `…/ws/echo`: a raw echo WebSocket.
    WsEcho,
    /// `…/rpc`: one JSON-RPC call (or batch) over HTTP.
    Rpc,
    /// `…/query`: one SQL statement over HTTP.
    Query,
}

impl Endpoint {
    fn parse(s: &str) -> Option<Endpoint> {
        match s {
            "ws" => Some(Endpoint::Ws),
            "ws/echo" => Some(Endpoint::WsEcho),
            "rpc" => Some(Endpoint::Rpc),
            "query" => Some(Endpoint::Query),
            _ => None,
        }
    }

    /// The backend service (the path in `Open` or `Request`).
    pub fn service(self) -> &'static str {
        match self {
            Endpoint::Ws | Endpoint::Rpc => "/rpc",
            Endpoint::WsEcho => "/echo",
            Endpoint::Query => "/query",
        }
    }
}

/// How a path routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routed<'a> {
    /// A tenant's endpoint.
    Tenant(&'a str, Endpoint),
    /// `/db/{name}/…` with a name that is not a tenant name (400).
    BadTenant,
    /// Not a tenant route.
    Other,
}

/// Routes a path: `/db/{tenant}/{endpoint}` or `/{endpoint}` (tenant `default`).
pub fn route(path: &str) -> Routed<'_> {
    if let Some(rest) = path.strip_prefix("/db/") {
        let Some((tenant, endpoint)) = rest.split_once('/') else { return Routed::Other };
        let Some(endpoint) = Endpoint::parse(endpoint) else { return Routed::Other };
        return if is_valid_tenant(tenant) { Routed::Tenant(tenant, endpoint) } else { Routed::BadTenant };
    }
    match path.strip_prefix('/').and_then(Endpoint::parse) {
        Some(e) => Routed::Tenant(DEFAULT_TENANT, e),
        None => Routed::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_with_and_without_a_tenant() {
        assert_eq!(route("/ws"), Routed::Tenant("default", Endpoint::Ws));
        assert_eq!(route("/db/room-7/ws/echo"), Routed::Tenant("room-7", Endpoint::WsEcho));
        assert_eq!(route("/db/a.b/query"), Routed::Tenant("a.b", Endpoint::Query));
        assert_eq!(route("/db/bad name/rpc"), Routed::BadTenant);
        assert_eq!(route(&format!("/db/{}/rpc", "x".repeat(65))), Routed::BadTenant);
        assert_eq!(route("/db/t/nope"), Routed::Other);
        assert_eq!(route("/db/t"), Routed::Other);
        assert_eq!(route("/__stats"), Routed::Other);
    }
}
