//! The front door: who a caller is, decided before any stream is opened or any upstream
//! is touched. Pure decisions only — the glue reads the request, checks signatures with
//! WebCrypto against the keys chosen here, and carries out the verdict.
//!
//! Order for every request: the `Origin` allow-list (browsers), then the token (one of
//! `Authorization: Bearer`, the `access_token` query parameter, or a `bearer.<token>`
//! entry of `Sec-WebSocket-Protocol`), then its signature, then its claims, then the
//! tenant and scope the route needs.

pub mod claims;
pub mod json;
pub mod jwt;
pub mod keys;
pub mod remote;
pub mod sources;

use protocol::{Identity, ANONYMOUS, ANY_TENANT};

pub use claims::ClaimMap;
pub use jwt::{Alg, Claims, Unverified};
pub use keys::{Jwk, MAX_JWKS_KEYS};
pub use sources::{RemoteConfig, Source};

/// Shortest `AUTH_SECRET` accepted, in bytes: RFC 7518 §3.2 asks for a key at least as
/// long as the hash output (256 bits) for HS256; a shorter one is refused at start-up.
pub const MIN_SECRET_BYTES: usize = 32;

/// Default `AUTH_LEEWAY_SECS`: tolerated clock skew for `nbf` (a token from an identity
/// provider whose clock runs a little ahead). Expiry gets no leeway: past `exp` is past.
pub const DEFAULT_LEEWAY_SECS: u64 = 60;

/// A `Sec-WebSocket-Protocol` entry starting with this carries the token (browsers can
/// set no other header on a WebSocket). The entry is never chosen as the protocol.
pub const PROTOCOL_TOKEN_PREFIX: &str = "bearer.";

/// The query parameter that may carry the token on a WebSocket upgrade (RFC 6750 §2.3).
pub const QUERY_TOKEN_PARAM: &str = "access_token";

/// Scopes an anonymous caller gets when `ALLOW_ANONYMOUS=true` and `ANONYMOUS_SCOPES` is
/// unset: read-only (ping, echo, read-only SQL).
pub const DEFAULT_ANONYMOUS_SCOPES: &str = "read";

/// Why a request was refused at the door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No token, and anonymous access is off: 401.
    Missing,
    /// The token is malformed, forged, expired, not yet valid, or for another issuer or
    /// audience: 401. The text says which, briefly.
    Invalid(&'static str),
    /// A valid token without the tenant or scope the route needs: 403.
    Forbidden(String),
    /// The request itself is wrong (e.g. a token in two places): 400.
    BadRequest(&'static str),
    /// The keys to check the token with cannot be had now (the identity provider's key
    /// set is unreachable past its stale window): 503, retry after the given ms. Not 401:
    /// the token may be valid, and a client told 401 gives up on it.
    Unavailable(&'static str, u64),
}

impl AuthError {
    /// The HTTP status of the refusal.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Missing | AuthError::Invalid(_) => 401,
            AuthError::Forbidden(_) => 403,
            AuthError::BadRequest(_) => 400,
            AuthError::Unavailable(..) => 503,
        }
    }

    /// A short reason for the client (never the token, never internal detail).
    pub fn reason(&self) -> String {
        match self {
            AuthError::Missing => "a bearer token is required".into(),
            AuthError::Invalid(why) => format!("invalid token: {why}"),
            AuthError::Forbidden(why) => why.clone(),
            AuthError::BadRequest(why) | AuthError::Unavailable(why, _) => (*why).into(),
        }
    }

    /// The `WWW-Authenticate` value (RFC 6750 §3) for 401 and 403 refusals.
    pub fn www_authenticate(&self) -> Option<String> {
        let realm = "Bearer realm=\"snippet-proxy\"";
        match self {
            AuthError::Missing => Some(realm.into()),
            AuthError::Invalid(why) => Some(format!("{realm}, error=\"invalid_token\", error_description=\"{why}\"")),
            AuthError::Forbidden(_) => Some(format!("{realm}, error=\"insufficient_scope\"")),
            AuthError::BadRequest(_) | AuthError::Unavailable(..) => None,
        }
    }

    /// The `Retry-After` value in whole seconds (at least 1), for a 503.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            AuthError::Unavailable(_, ms) => Some(ms.div_ceil(1000).max(1)),
            _ => None,
        }
    }
}

/// What a route needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any granted scope (the backend authorizes each call).
    Connect,
    /// An operator: the `admin` scope for every tenant (`tenant: "*"`), as `/__stats`
    /// shows the whole isolate.
    Admin,
}

/// Where the token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer`.
    Header,
    /// `?access_token=` (RFC 6750 §2.3).
    Query,
    /// A `bearer.` entry of `Sec-WebSocket-Protocol`.
    Protocol,
}

/// The front door's configuration, from wrangler vars and secrets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthConfig {
    /// `AUTH_SECRET` (a secret): the HS256 key.
    pub secret: Option<Vec<u8>>,
    /// `AUTH_JWKS`: public keys (`{"keys": [...]}`) for RS256, PS256, ES256 and EdDSA.
    pub keys: Vec<Jwk>,
    /// The line to log once about `AUTH_JWKS` entries skipped (of kinds not verified).
    pub skipped_static: Option<String>,
    /// `AUTH_JWKS_URL` (with `AUTH_JWKS_COOLDOWN_SECS`, `AUTH_JWKS_STALE_SECS`): key sets
    /// the snippet fetches, each bound to its issuer.
    pub remote: RemoteConfig,
    /// `AUTH_TENANT_CLAIM`, `AUTH_SCOPES_CLAIM`, `AUTH_DEFAULT_TENANT`.
    pub claims: ClaimMap,
    /// `AUTH_ISSUER`: when set, `iss` must equal it for tokens checked with `AUTH_SECRET`
    /// or `AUTH_JWKS` (a remote set's tokens carry the issuer the set is bound to).
    pub issuer: Option<String>,
    /// `AUTH_AUDIENCE`: when set, `aud` must contain it.
    pub audience: Option<String>,
    /// `AUTH_LEEWAY_SECS`: clock skew tolerated for `nbf`.
    pub leeway_secs: u64,
    /// `ALLOW_ANONYMOUS=true`: callers without a token are admitted with `anonymous_scopes`.
    pub allow_anonymous: bool,
    /// `ANONYMOUS_SCOPES`: what anonymous callers get.
    pub anonymous_scopes: String,
    /// `ALLOWED_ORIGINS`: comma-separated origins (or `*`) whose pages may use the proxy,
    /// besides the snippet's own origin.
    pub allowed_origins: Vec<String>,
    /// `STATS_PUBLIC=true`: `/__stats` without an admin token.
    pub stats_public: bool,
}

fn flag(name: &str, raw: Option<String>) -> Result<bool, String> {
    match raw.as_deref().map(str::trim) {
        None | Some("") | Some("false") | Some("0") | Some("off") => Ok(false),
        Some("true") | Some("1") | Some("on") => Ok(true),
        Some(_) => Err(format!("{name} must be true or false")),
    }
}

/// What a var set to blank means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blank {
    /// The same as unset.
    Unset,
    /// A configuration error: it names a check.
    Refused,
}

impl AuthConfig {
    /// The vars (and secrets) read by [`AuthConfig::from_vars`], each with whether it may
    /// be set blank: a check that is configured but blank must not silently switch itself
    /// off, so those that name a check refuse it.
    const VARS: [(&'static str, Blank); 15] = [
        ("AUTH_SECRET", Blank::Unset),
        ("AUTH_JWKS", Blank::Refused),
        ("AUTH_JWKS_URL", Blank::Refused),
        ("AUTH_JWKS_COOLDOWN_SECS", Blank::Refused),
        ("AUTH_JWKS_STALE_SECS", Blank::Refused),
        ("AUTH_TENANT_CLAIM", Blank::Refused),
        ("AUTH_SCOPES_CLAIM", Blank::Refused),
        ("AUTH_DEFAULT_TENANT", Blank::Refused),
        ("AUTH_ISSUER", Blank::Refused),
        ("AUTH_AUDIENCE", Blank::Refused),
        ("AUTH_LEEWAY_SECS", Blank::Unset),
        ("ALLOW_ANONYMOUS", Blank::Unset),
        ("ANONYMOUS_SCOPES", Blank::Unset),
        ("ALLOWED_ORIGINS", Blank::Unset),
        ("STATS_PUBLIC", Blank::Unset),
    ];

    /// The names of the vars (and secrets) read by [`AuthConfig::from_vars`].
    pub fn vars() -> impl Iterator<Item = &'static str> {
        Self::VARS.iter().map(|(name, _)| *name)
    }

    /// Reads the configuration. Fails closed: with no key and no explicit
    /// `ALLOW_ANONYMOUS=true` this is an error naming the missing vars.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<AuthConfig, String> {
        let nonempty = |name: &str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        for (name, blank) in Self::VARS {
            if blank == Blank::Refused && get(name).is_some() && nonempty(name).is_none() {
                return Err(format!("{name} is set but empty; remove it or give it a value"));
            }
        }
        let secret = nonempty("AUTH_SECRET").map(String::into_bytes);
        if let Some(s) = &secret {
            if s.len() < MIN_SECRET_BYTES {
                return Err(format!("AUTH_SECRET must be at least {MIN_SECRET_BYTES} bytes"));
            }
        }
        let set = nonempty("AUTH_JWKS").map(|j| keys::parse_static(&j)).transpose()?.unwrap_or_default();
        let remote = RemoteConfig::from_vars(
            nonempty("AUTH_JWKS_URL").as_deref(),
            nonempty("AUTH_JWKS_COOLDOWN_SECS").as_deref(),
            nonempty("AUTH_JWKS_STALE_SECS").as_deref(),
        )?;
        let claims = ClaimMap::from_vars(
            nonempty("AUTH_TENANT_CLAIM"),
            nonempty("AUTH_SCOPES_CLAIM"),
            nonempty("AUTH_DEFAULT_TENANT"),
        )?;
        let allow_anonymous = flag("ALLOW_ANONYMOUS", get("ALLOW_ANONYMOUS"))?;
        if secret.is_none() && set.keys.is_empty() && remote.issuers.is_empty() && !allow_anonymous {
            return Err("authentication is not configured: set AUTH_SECRET, AUTH_JWKS or AUTH_JWKS_URL \
                        (or ALLOW_ANONYMOUS=true to admit callers without a token)"
                .into());
        }
        let leeway_secs = match nonempty("AUTH_LEEWAY_SECS") {
            None => DEFAULT_LEEWAY_SECS,
            Some(v) => v.parse().map_err(|_| "AUTH_LEEWAY_SECS must be a whole number".to_owned())?,
        };
        let allowed_origins = nonempty("ALLOWED_ORIGINS")
            .map(|v| {
                v.split(',').map(|o| o.trim().trim_end_matches('/').to_owned()).filter(|o| !o.is_empty()).collect()
            })
            .unwrap_or_default();
        Ok(AuthConfig {
            secret,
            skipped_static: set.skipped_line(),
            keys: set.keys,
            remote,
            claims,
            issuer: nonempty("AUTH_ISSUER"),
            audience: nonempty("AUTH_AUDIENCE"),
            leeway_secs,
            allow_anonymous,
            anonymous_scopes: nonempty("ANONYMOUS_SCOPES").unwrap_or_else(|| DEFAULT_ANONYMOUS_SCOPES.into()),
            allowed_origins,
            stats_public: flag("STATS_PUBLIC", get("STATS_PUBLIC"))?,
        })
    }

    /// Whether a request with this `Origin` may use the proxy: no `Origin` (not a browser),
    /// the snippet's own origin, or one in `ALLOWED_ORIGINS` (ASCII case-insensitive).
    pub fn origin_allowed(&self, origin: Option<&str>, own_origin: &str) -> bool {
        let Some(origin) = origin else { return true };
        let origin = origin.trim_end_matches('/');
        origin.eq_ignore_ascii_case(own_origin)
            || self.allowed_origins.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    }

    /// Where the keys that may have signed `token` are ([`sources::source_for`]): HS256
    /// only the shared secret, any other algorithm the set of the token's issuer or
    /// `AUTH_JWKS` — so a token can never make a public key act as an HMAC secret
    /// (algorithm confusion).
    pub fn source_for(&self, token: &Unverified<'_>) -> Result<Source, AuthError> {
        sources::source_for(token, self.secret.is_some(), &self.keys, &self.remote)
    }

    /// Checks the claims of a token whose signature verified with keys of `source`, at
    /// `now_secs`, and turns them into the identity that travels to the backend.
    pub fn identity(&self, c: &Claims, now_secs: u64, source: Source) -> Result<Identity, AuthError> {
        if now_secs >= c.exp {
            return Err(AuthError::Invalid("the token has expired"));
        }
        if c.nbf.is_some_and(|nbf| now_secs.saturating_add(self.leeway_secs) < nbf) {
            return Err(AuthError::Invalid("the token is not valid yet"));
        }
        let issuer = match source {
            Source::Remote { issuer, .. } => self.remote.issuer(issuer),
            Source::Secret | Source::Static => self.issuer.as_deref(),
        };
        if let Some(iss) = issuer {
            if c.iss.as_deref() != Some(iss) {
                return Err(AuthError::Invalid("wrong issuer"));
            }
        }
        if let Some(aud) = &self.audience {
            if !c.aud.contains(aud) {
                return Err(AuthError::Invalid("wrong audience"));
            }
        }
        let tenant = match (&c.tenant, &self.claims.default_tenant) {
            // A provider's claim (perhaps one its users can set) never grants every tenant.
            (Some(t), _) if t == ANY_TENANT && self.claims.tenant_is_mapped() => {
                return Err(AuthError::Forbidden(format!(
                    "a tenant of \"*\" is honoured only from the tenant claim, not {}",
                    self.claims.tenant
                )))
            }
            (Some(t), _) => t.clone(),
            (None, Some(default)) => default.clone(),
            (None, None) => {
                return Err(AuthError::Forbidden(format!(
                    "the token names no tenant (claim {}) and AUTH_DEFAULT_TENANT is not set",
                    self.claims.tenant
                )))
            }
        };
        Ok(Identity { subject: c.sub.clone(), tenant, scopes: c.scope.clone(), expires_at: c.exp })
    }

    /// The identity of a caller without a token, if anonymous access is on.
    pub fn anonymous(&self) -> Result<Identity, AuthError> {
        if !self.allow_anonymous {
            return Err(AuthError::Missing);
        }
        Ok(Identity {
            subject: ANONYMOUS.into(),
            tenant: ANY_TENANT.into(),
            scopes: self.anonymous_scopes.clone(),
            expires_at: 0,
        })
    }

    /// Whether `identity` may use `tenant` for a route that needs `need`.
    pub fn authorize(&self, identity: &Identity, tenant: &str, need: Need) -> Result<(), AuthError> {
        if need == Need::Admin {
            return if identity.has_scope("admin") && identity.tenant == ANY_TENANT {
                Ok(())
            } else {
                Err(AuthError::Forbidden("this route needs an operator token (scope admin, tenant *)".into()))
            };
        }
        if !identity.allows_tenant(tenant) {
            return Err(AuthError::Forbidden(format!("the token is not for tenant \"{tenant}\"")));
        }
        if identity.scopes.trim().is_empty() {
            return Err(AuthError::Forbidden("the token grants no scope".into()));
        }
        Ok(())
    }
}

/// The one token a request carries, and where it was. Two places at once is refused
/// (RFC 6750 §2: a client uses one method), so no proxy in between can make the two
/// disagree. Only a WebSocket `upgrade` may carry it in the URL or the subprotocol
/// (browsers can set no header there); on HTTP routes a URL token is refused, as a URL
/// ends up in request logs, and the subprotocol header means nothing.
pub fn pick_token(
    authorization: Option<&str>,
    query_token: Option<&str>,
    protocols: Option<&str>,
    upgrade: bool,
) -> Result<Option<(String, TokenSource)>, AuthError> {
    if !upgrade && query_token.is_some() {
        return Err(AuthError::BadRequest("on HTTP routes send the token in the Authorization header"));
    }
    let protocols = protocols.filter(|_| upgrade);
    let mut found: Vec<(String, TokenSource)> = Vec::new();
    if let Some(h) = authorization {
        let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
        if !scheme.eq_ignore_ascii_case("bearer") || rest.trim().is_empty() {
            return Err(AuthError::Invalid("the Authorization header must be `Bearer <token>`"));
        }
        found.push((rest.trim().to_owned(), TokenSource::Header));
    }
    if let Some(q) = query_token {
        found.push((q.to_owned(), TokenSource::Query));
    }
    let in_protocols: Vec<&str> = protocols
        .into_iter()
        .flat_map(|p| p.split(','))
        .filter_map(|p| p.trim().strip_prefix(PROTOCOL_TOKEN_PREFIX))
        .collect();
    match in_protocols.as_slice() {
        [] => {}
        [t] => found.push(((*t).to_owned(), TokenSource::Protocol)),
        _ => return Err(AuthError::BadRequest("more than one bearer. entry in Sec-WebSocket-Protocol")),
    }
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(AuthError::BadRequest("send the token in one place only (header, access_token or protocol)")),
    }
}

/// The token in a URL's query (`url.search`, with or without its `?`), read as
/// `URLSearchParams` reads it: names are decoded too, so `access%5Ftoken` is the same
/// parameter. Given twice it is refused, even with equal values, rather than taking the
/// first: which one counts is exactly what two parsers on the way can disagree about.
pub fn query_token(query: &str) -> Result<Option<String>, AuthError> {
    let query = query.strip_prefix('?').unwrap_or(query);
    let mut found = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if form_decode(name) != QUERY_TOKEN_PARAM {
            continue;
        }
        if found.is_some() {
            return Err(AuthError::BadRequest("send the token once (access_token is in the query more than once)"));
        }
        found = Some(form_decode(value));
    }
    Ok(found)
}

/// `application/x-www-form-urlencoded` decoding as the URL standard does it: `+` is a
/// space, `%XX` a byte, a `%` without two hex digits stays as it is, and bytes that are
/// not UTF-8 become U+FFFD.
pub(crate) fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |i: usize| bytes.get(i).and_then(|&c| char::from(c).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        match (c, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b'+', ..) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `Sec-WebSocket-Protocol` to answer with: the first offered entry that is not a
/// token. A browser that offers protocols fails the connection unless one is chosen.
pub fn select_protocol(protocols: &str) -> Option<&str> {
    protocols.split(',').map(str::trim).find(|p| !p.is_empty() && !p.starts_with(PROTOCOL_TOKEN_PREFIX))
}

#[cfg(test)]
mod tests;
