//! Admission: whether the snippet may connect (its bearer token), and whether the caller
//! it authenticated may use this object at all.
//! The snippet sends an identity with every `Open` and `Request`; the object trusts it
//! only because the socket carried its own bearer token (PROTOCOL.md §3), and admits it
//! when it names this tenant (or every tenant) and has not expired. What the caller may
//! then do is the application's business (its scopes).

use protocol::{Identity, Request, Response};

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether an `Authorization` header value carries `Bearer {token}` (the prefix exactly,
/// the token trimmed). An empty configured token authorises nobody (fail closed).
pub fn authorized(header: Option<&str>, token: &str) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    !token.is_empty() && constant_time_eq(given.trim().as_bytes(), token.as_bytes())
}

/// Why an identity may not open a stream (or make a request) on `tenant`'s object.
pub fn check_open(identity: &Identity, tenant: &str, now_secs: u64) -> Result<(), String> {
    // A session restored without its tenant (its stored key gone) knows no tenant: no
    // identity matches an unknown one, not even an empty or an every-tenant one.
    if tenant.is_empty() {
        return Err("this session's tenant is unknown; reconnect".into());
    }
    if !identity.allows_tenant(tenant) {
        return Err(format!("identity is for tenant {:?}, not {tenant:?}", identity.tenant));
    }
    if identity.expired(now_secs) {
        return Err("the caller's token has expired".into());
    }
    Ok(())
}

/// Admission of one request, whichever way it arrived (a `Request` frame, or plain HTTP
/// to the Durable Object): the refusal is a JSON response, 401 once the token has
/// expired, else 403 (another tenant).
pub fn check_request(req: &Request, tenant: &str, now_secs: u64) -> Result<(), Response> {
    check_open(&req.identity, tenant, now_secs).map_err(|why| {
        let status = if req.identity.expired(now_secs) { 401 } else { 403 };
        let body = serde_json::json!({ "error": why }).to_string().into_bytes();
        Response { status, content_type: "application/json".into(), body }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(tenant: &str, expires_at: u64) -> Identity {
        Identity { subject: "u".into(), tenant: tenant.into(), scopes: "read".into(), expires_at }
    }

    #[test]
    fn bearer_tokens() {
        assert!(authorized(Some("Bearer s3cret"), "s3cret"));
        assert!(authorized(Some("Bearer  s3cret "), "s3cret"));
        assert!(!authorized(Some("Bearer s3cre"), "s3cret"));
        assert!(!authorized(Some("Bearer s3cres"), "s3cret"));
        assert!(!authorized(Some("bearer s3cret"), "s3cret"));
        assert!(!authorized(Some("s3cret"), "s3cret"));
        assert!(!authorized(None, "s3cret"));
        assert!(!authorized(Some("Bearer "), ""));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn opening_needs_the_tenant_and_an_unexpired_identity() {
        assert!(check_open(&id("t", 100), "t", 99).is_ok());
        assert!(check_open(&id("t", 100), "other", 99).is_err());
        assert!(check_open(&id("t", 100), "t", 100).is_err());
        assert!(check_open(&id("*", 100), "other", 99).is_ok());
        assert!(check_open(&id("t", 0), "t", u64::MAX).is_ok(), "0 never expires");
        assert!(check_open(&id("", 100), "", 99).is_err(), "an unknown tenant matches no identity");
        assert!(check_open(&id("*", 100), "", 99).is_err(), "not even every-tenant");
    }

    #[test]
    fn a_refused_request_says_why_in_json() {
        let req = |identity| Request {
            method: "POST".into(),
            path: "/rpc".into(),
            content_type: String::new(),
            identity,
            body: Vec::new(),
        };
        let r = check_request(&req(id("other", 100)), "t", 99).expect_err("other tenant");
        assert_eq!((r.status, r.content_type.as_str()), (403, "application/json"));
        assert_eq!(r.body, br#"{"error":"identity is for tenant \"other\", not \"t\""}"#);
        let r = check_request(&req(id("t", 100)), "t", 100).expect_err("expired");
        assert_eq!(r.status, 401);
        assert!(check_request(&req(id("t", 100)), "t", 99).is_ok());
    }
}
