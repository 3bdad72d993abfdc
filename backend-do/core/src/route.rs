//! URL routing and bearer-token checks for the backend Worker, with no runtime types.

/// The tenant used when a path names none (`/rpc` = `/db/default/rpc`); the names are
/// checked by the rule the snippet uses too ([`protocol::facts::is_valid_tenant`]).
pub use protocol::facts::{DEFAULT_TENANT, MAX_TENANT_LEN};

/// An entry point of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/db/{name}/mux`: the snippet's multiplexed WebSocket.
    Mux,
    /// `/db/{name}/ws`: a plain WebSocket, one JSON-RPC message per WebSocket message.
    Ws,
    /// `/db/{name}/echo`: a plain WebSocket that echoes every message.
    Echo,
    /// `POST /db/{name}/rpc`: JSON-RPC over HTTP.
    Rpc,
    /// `POST /db/{name}/query`: `{ "sql": …, "params": [...] }` over HTTP.
    Query,
    /// `GET /db/{name}/__stats`: the operator's view of the object, JSON
    /// (`snippet_proxy_do::View`).
    Stats,
    /// `GET /db/{name}/__metrics`: the same view in the Prometheus text format.
    Metrics,
}

impl Endpoint {
    /// The tag the WebSocket is accepted with (and the HTTP service path's name).
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Mux => "mux",
            Endpoint::Ws => "ws",
            Endpoint::Echo => "echo",
            Endpoint::Rpc => "rpc",
            Endpoint::Query => "query",
            Endpoint::Stats => "__stats",
            Endpoint::Metrics => "__metrics",
        }
    }

    /// Whether the endpoint is the operator's view of the object (`GET`; served even to a
    /// tenant in maintenance, when an operator most wants to look).
    pub fn is_view(self) -> bool {
        matches!(self, Endpoint::Stats | Endpoint::Metrics)
    }

    /// Whether the endpoint is a WebSocket upgrade.
    pub fn is_websocket(self) -> bool {
        matches!(self, Endpoint::Mux | Endpoint::Ws | Endpoint::Echo)
    }

    fn parse(s: &str) -> Option<Endpoint> {
        Some(match s {
            "mux" => Endpoint::Mux,
            "ws" => Endpoint::Ws,
            "echo" => Endpoint::Echo,
            "rpc" => Endpoint::Rpc,
            "query" => Endpoint::Query,
            "__stats" => Endpoint::Stats,
            "__metrics" => Endpoint::Metrics,
            _ => return None,
        })
    }
}

/// Why a path did not route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No such endpoint.
    NotFound,
    /// The tenant name is not one [`protocol::facts::is_valid_tenant`] accepts.
    BadTenant,
}

/// `/db/{name}/{endpoint}` or `/{endpoint}` (default tenant) → (tenant, endpoint).
pub fn parse(path: &str) -> Result<(&str, Endpoint), RouteError> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (tenant, endpoint) = match parts.as_slice() {
        ["db", tenant, endpoint] => (*tenant, *endpoint),
        [endpoint] => (DEFAULT_TENANT, *endpoint),
        _ => return Err(RouteError::NotFound),
    };
    let endpoint = Endpoint::parse(endpoint).ok_or(RouteError::NotFound)?;
    if !protocol::facts::is_valid_tenant(tenant) {
        return Err(RouteError::BadTenant);
    }
    Ok((tenant, endpoint))
}

/// What a tenant in maintenance is answered (503), by the Worker and by the object.
pub const MAINTENANCE: &str = "this tenant is in maintenance; retry later";

/// Whether `tenant` is on a comma-separated list (an operator var such as
/// `MAINTENANCE_TENANTS`); blanks around names are ignored.
pub fn listed(list: &str, tenant: &str) -> bool {
    list.split(',').any(|t| t.trim() == tenant)
}

/// The bearer check the mux server does too (`Bearer {token}`, compared in constant time,
/// an empty token authorising nobody).
pub use snippet_proxy_do::{authorized, constant_time_eq};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_is_listed_by_its_whole_name() {
        assert!(listed("a, b ,c", "b"));
        assert!(!listed("ab,c", "a"));
        assert!(!listed("", "a"));
    }

    #[test]
    fn routes() {
        assert_eq!(parse("/db/acme/mux"), Ok(("acme", Endpoint::Mux)));
        assert_eq!(parse("/db/a-b.c_1/query"), Ok(("a-b.c_1", Endpoint::Query)));
        assert_eq!(parse("/rpc"), Ok((DEFAULT_TENANT, Endpoint::Rpc)));
        assert_eq!(parse("/db/acme/__stats"), Ok(("acme", Endpoint::Stats)));
        assert_eq!(parse("/db/acme/__metrics"), Ok(("acme", Endpoint::Metrics)));
        assert!(Endpoint::Stats.is_view() && !Endpoint::Stats.is_websocket() && !Endpoint::Rpc.is_view());
        assert_eq!(parse("/db/acme/nope"), Err(RouteError::NotFound));
        assert_eq!(parse("/db/acme"), Err(RouteError::NotFound));
        assert_eq!(parse("/"), Err(RouteError::NotFound));
        assert_eq!(parse("/db/a%20b/ws"), Err(RouteError::BadTenant));
        assert_eq!(parse(&format!("/db/{}/ws", "x".repeat(65))), Err(RouteError::BadTenant));
    }
}
