//! Which claims name the tenant and the scopes. Providers put them where they like: a
//! plain `tenant` or `org_id`, a namespaced URL claim (`https://example.com/tenant`, as
//! Auth0 requires for custom claims), a nested member (`/app_metadata/tenant`); scopes
//! as a space-separated `scope`, an `scp` array or string, or an array of permissions
//! (Auth0's `permissions`).
//!
//! **No mapping widens a grant.** A configured claim is read and nothing else (not
//! `scope` as well as `permissions`); a value of the wrong shape is refused, never
//! reinterpreted; the wildcard tenant `*` is honoured only from the snippet's own `tenant`
//! claim — a mapped claim comes from a provider whose users may be able to set it
//! (Supabase's `user_metadata`, for one), so there `*` is refused; and a token without a
//! tenant is refused unless the operator named a default tenant for such tokens.

use super::json::Json;
use super::AuthError;

/// The claim that names the tenant unless `AUTH_TENANT_CLAIM` says otherwise.
pub const DEFAULT_TENANT_CLAIM: &str = "tenant";

/// Where the tenant and the scopes are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMap {
    /// `AUTH_TENANT_CLAIM`: a claim name, or a JSON pointer (RFC 6901) starting with `/`.
    pub tenant: String,
    /// `AUTH_SCOPES_CLAIM`: as above; `None` reads `scope`, else `scp`.
    pub scopes: Option<String>,
    /// `AUTH_DEFAULT_TENANT`: the tenant of a token that names none; `None` refuses it.
    pub default_tenant: Option<String>,
}

impl Default for ClaimMap {
    fn default() -> Self {
        ClaimMap { tenant: DEFAULT_TENANT_CLAIM.into(), scopes: None, default_tenant: None }
    }
}

impl ClaimMap {
    /// Reads the three vars (each trimmed; `None` when unset). A default tenant must be a
    /// tenant name — never `*`, which would give every token without a tenant all of them.
    pub fn from_vars(tenant: Option<String>, scopes: Option<String>, default: Option<String>) -> Result<Self, String> {
        for (name, v) in [("AUTH_TENANT_CLAIM", &tenant), ("AUTH_SCOPES_CLAIM", &scopes)] {
            if v.as_deref().is_some_and(|v| v.chars().any(char::is_whitespace)) {
                return Err(format!("{name} must be one claim name (or a /json/pointer)"));
            }
        }
        if let Some(d) = &default {
            if !protocol::facts::is_valid_tenant(d) {
                return Err(format!("AUTH_DEFAULT_TENANT must be one tenant name: {}", protocol::facts::TENANT_RULE));
            }
        }
        Ok(ClaimMap { tenant: tenant.unwrap_or_else(|| DEFAULT_TENANT_CLAIM.into()), scopes, default_tenant: default })
    }

    /// Whether the tenant comes from a claim other than the snippet's own `tenant`.
    pub fn tenant_is_mapped(&self) -> bool {
        self.tenant != DEFAULT_TENANT_CLAIM
    }
}

/// The claim `name`: a top-level member, or — when `name` starts with `/` — the member a
/// JSON pointer (RFC 6901: `~1` is `/`, `~0` is `~`) leads to through nested objects.
/// A namespaced claim (`https://example.com/roles`) never starts with `/`, so both kinds
/// of name can be written as they are.
pub fn lookup<'a>(claims: &'a Json, name: &str) -> Option<&'a Json> {
    let Some(pointer) = name.strip_prefix('/') else { return claims.get(name) };
    pointer.split('/').try_fold(claims, |v, token| v.get(&token.replace("~1", "/").replace("~0", "~")))
}

/// The tenant claim: `Ok(None)` when absent; a value that is not a string is refused.
pub fn read_tenant(claims: &Json, map: &ClaimMap) -> Result<Option<String>, AuthError> {
    match lookup(claims, &map.tenant) {
        None => Ok(None),
        Some(Json::Str(t)) => Ok(Some(t.clone())),
        Some(_) => Err(AuthError::Invalid("the tenant claim is not a string")),
    }
}

/// Scopes from one claim: a space-separated string, or an array of single words.
fn scope_words(v: &Json) -> Result<String, AuthError> {
    match v {
        Json::Str(s) => Ok(s.split_ascii_whitespace().collect::<Vec<_>>().join(" ")),
        Json::Arr(items) => {
            let words: Option<Vec<&str>> = items.iter().map(Json::as_str).collect();
            let words = words.ok_or(AuthError::Invalid("a scopes claim array must hold strings"))?;
            if words.iter().any(|w| w.is_empty() || w.contains(char::is_whitespace)) {
                return Err(AuthError::Invalid("scope entries must be single words"));
            }
            Ok(words.join(" "))
        }
        _ => Err(AuthError::Invalid("scopes must be a space-separated string or an array of words")),
    }
}

/// The granted scopes, space-separated: from the configured claim only, or by default
/// from `scope`, else `scp`. An absent claim grants nothing (the route then refuses 403).
pub fn read_scopes(claims: &Json, map: &ClaimMap) -> Result<String, AuthError> {
    let found = match &map.scopes {
        Some(name) => lookup(claims, name),
        None => claims.get("scope").or_else(|| claims.get("scp")),
    };
    found.map(scope_words).transpose().map(Option::unwrap_or_default)
}

#[cfg(test)]
mod tests {
    use super::super::json;
    use super::*;

    fn doc(s: &str) -> Json {
        json::parse(s.as_bytes()).expect("json")
    }

    #[test]
    fn names_pointers_and_namespaced_claims() {
        let c = doc(r#"{"org_id":"o1","https://ex.com/tenant":"t1","app_metadata":{"a/b":{"x~y":"deep"}}}"#);
        assert_eq!(lookup(&c, "org_id").and_then(Json::as_str), Some("o1"));
        assert_eq!(lookup(&c, "https://ex.com/tenant").and_then(Json::as_str), Some("t1"));
        assert_eq!(lookup(&c, "/app_metadata/a~1b/x~0y").and_then(Json::as_str), Some("deep"));
        assert_eq!(lookup(&c, "/app_metadata/missing"), None);
        assert_eq!(lookup(&c, "/org_id/deeper"), None, "a string has no members");
    }

    #[test]
    fn scopes_by_default_from_scope_then_scp_in_either_shape() {
        let map = ClaimMap::default();
        let read = |s: &str| read_scopes(&doc(s), &map);
        assert_eq!(read(r#"{"scope":"read  write"}"#), Ok("read write".into()));
        assert_eq!(read(r#"{"scp":["read","publish"]}"#), Ok("read publish".into()));
        assert_eq!(read(r#"{"scp":"read write"}"#), Ok("read write".into()), "Azure-style scp string");
        assert_eq!(read(r#"{"scope":"read","scp":["admin"]}"#), Ok("read".into()), "scope wins, never both");
        assert_eq!(read(r#"{}"#), Ok(String::new()));
        assert!(read(r#"{"scope":5}"#).is_err());
        assert!(read(r#"{"scp":["a b"]}"#).is_err());
        assert!(read(r#"{"scp":[1]}"#).is_err());
    }

    #[test]
    fn a_configured_scopes_claim_is_the_only_one_read() {
        let map = ClaimMap { scopes: Some("permissions".into()), ..ClaimMap::default() };
        let c = doc(r#"{"scope":"openid admin","permissions":["read","write"]}"#);
        assert_eq!(read_scopes(&c, &map), Ok("read write".into()));
        let none = doc(r#"{"scope":"read write admin"}"#);
        assert_eq!(read_scopes(&none, &map), Ok(String::new()), "scope is not read when permissions is the claim");
    }

    #[test]
    fn the_tenant_claim_is_a_string_or_absent() {
        let map = ClaimMap { tenant: "org_id".into(), ..ClaimMap::default() };
        assert_eq!(read_tenant(&doc(r#"{"org_id":"acme","tenant":"*"}"#), &map), Ok(Some("acme".into())));
        assert_eq!(read_tenant(&doc(r#"{"tenant":"*"}"#), &map), Ok(None), "only the configured claim");
        assert!(read_tenant(&doc(r#"{"org_id":["a"]}"#), &map).is_err());
        assert!(map.tenant_is_mapped() && !ClaimMap::default().tenant_is_mapped());
    }

    #[test]
    fn vars_are_checked() {
        let ok = ClaimMap::from_vars(Some("org_id".into()), Some("permissions".into()), Some("main".into()));
        assert_eq!(ok.map(|m| (m.tenant, m.default_tenant)), Ok(("org_id".into(), Some("main".into()))));
        assert!(ClaimMap::from_vars(None, None, Some("*".into())).is_err(), "a default of every tenant");
        assert!(ClaimMap::from_vars(None, None, Some("a b".into())).is_err());
        assert!(ClaimMap::from_vars(Some("org id".into()), None, None).is_err());
    }
}
