//! Where a token's keys come from: `AUTH_SECRET` (HS256), the static `AUTH_JWKS`, or the
//! remote set bound to the token's issuer (`AUTH_JWKS_URL`).
//!
//! `AUTH_JWKS_URL` is a list of `issuer=url` pairs separated by spaces, commas or new
//! lines, e.g. `https://acme.eu.auth0.com/=https://acme.eu.auth0.com/.well-known/jwks.json`.
//! The pair is split at its first `=` (issuers are URLs without one). A token whose `iss`
//! is one of these issuers is checked against that issuer's set and no other key — not
//! another issuer's set, not `AUTH_JWKS` — so two providers that both publish a key with
//! the same `kid` cannot stand in for each other. Two issuers may share one URL (Firebase
//! projects all use Google's one set; the issuer and audience tell them apart): the set
//! is then fetched and kept once.

use super::keys::Jwk;
use super::remote::{Limits, MAX_COOLDOWN_MS, MAX_STALE_MS};
use super::{AuthError, Unverified};
use crate::auth::jwt::Alg;

/// Most `issuer=url` pairs: each set costs a fetch per cooldown and its keys' memory.
pub const MAX_REMOTE_ISSUERS: usize = 8;

/// The remote sets, as configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteConfig {
    /// The distinct set URLs (set `i` of [`super::remote::KeySets`] is `urls[i]`).
    pub urls: Vec<String>,
    /// Each issuer and the index of its set in `urls`.
    pub issuers: Vec<(String, usize)>,
    /// Cooldown and stale window.
    pub limits: Limits,
}

/// Where to find the keys that may have signed a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `AUTH_SECRET`, for HS256.
    Secret,
    /// `AUTH_JWKS`.
    Static,
    /// The remote set `set`, bound to issuer number `issuer` of [`RemoteConfig::issuers`].
    Remote {
        /// Index into [`RemoteConfig::urls`].
        set: usize,
        /// Index into [`RemoteConfig::issuers`].
        issuer: usize,
    },
}

/// Whether `url` may serve a key set: `https://`, or plain `http://` to this machine's
/// loopback only (for local tests; nothing on a real network may hand us keys in clear).
fn set_url_allowed(url: &str) -> bool {
    if url.starts_with("https://") && url.len() > "https://".len() {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else { return false };
    ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .any(|host| rest.strip_prefix(host).is_some_and(|after| after.is_empty() || after.starts_with([':', '/'])))
}

fn secs_var(name: &str, raw: Option<&str>, default_ms: u64, min_ms: u64, max_ms: u64) -> Result<u64, String> {
    let Some(raw) = raw else { return Ok(default_ms) };
    let ms = raw.parse::<u64>().ok().and_then(|s| s.checked_mul(1000));
    match ms {
        Some(ms) if (min_ms..=max_ms).contains(&ms) => Ok(ms),
        _ => Err(format!("{name} must be a whole number of seconds from {} to {}", min_ms / 1000, max_ms / 1000)),
    }
}

impl RemoteConfig {
    /// Reads `AUTH_JWKS_URL`, `AUTH_JWKS_COOLDOWN_SECS` and `AUTH_JWKS_STALE_SECS` (each
    /// trimmed, `None` when unset).
    pub fn from_vars(urls: Option<&str>, cooldown: Option<&str>, stale: Option<&str>) -> Result<Self, String> {
        let cooldown_ms =
            secs_var("AUTH_JWKS_COOLDOWN_SECS", cooldown, super::remote::DEFAULT_COOLDOWN_MS, 1000, MAX_COOLDOWN_MS)?;
        let stale_ms = secs_var("AUTH_JWKS_STALE_SECS", stale, super::remote::DEFAULT_STALE_MS, 0, MAX_STALE_MS)?;
        let mut cfg = RemoteConfig { limits: Limits { cooldown_ms, stale_ms }, ..RemoteConfig::default() };
        let pairs = urls.unwrap_or_default().split(|c: char| c == ',' || c.is_whitespace()).filter(|p| !p.is_empty());
        for pair in pairs {
            let Some((issuer, url)) = pair.split_once('=') else {
                return Err("AUTH_JWKS_URL takes issuer=url pairs (the issuer each key set serves)".into());
            };
            if issuer.is_empty() {
                return Err("AUTH_JWKS_URL: an issuer=url pair has no issuer".into());
            }
            if !set_url_allowed(url) {
                return Err("AUTH_JWKS_URL: a key set URL must be https:// (http:// only to loopback)".into());
            }
            if cfg.issuers.iter().any(|(i, _)| i == issuer) {
                return Err("AUTH_JWKS_URL names one issuer twice; which set would its tokens use?".into());
            }
            let set = match cfg.urls.iter().position(|u| u == url) {
                Some(i) => i,
                None => {
                    cfg.urls.push(url.to_owned());
                    cfg.urls.len() - 1
                }
            };
            cfg.issuers.push((issuer.to_owned(), set));
        }
        if cfg.issuers.len() > MAX_REMOTE_ISSUERS {
            return Err(format!("AUTH_JWKS_URL has {} issuers; at most {MAX_REMOTE_ISSUERS}", cfg.issuers.len()));
        }
        Ok(cfg)
    }

    /// The issuer of remote source `issuer`.
    pub fn issuer(&self, issuer: usize) -> Option<&str> {
        self.issuers.get(issuer).map(|(i, _)| i.as_str())
    }
}

/// Where the keys of `token` are, given what is configured. HS256 only ever uses the
/// shared secret; any other algorithm uses the set bound to the token's `iss` if there is
/// one, else `AUTH_JWKS`. The choice reads an unverified claim, which is safe because it
/// only narrows: a token that lies about its issuer is checked against keys that did not
/// sign it, and fails.
pub fn source_for(
    token: &Unverified<'_>,
    has_secret: bool,
    static_keys: &[Jwk],
    remote: &RemoteConfig,
) -> Result<Source, AuthError> {
    if token.alg == Alg::Hs256 {
        return if has_secret {
            Ok(Source::Secret)
        } else {
            Err(AuthError::Invalid("HS256 tokens are not accepted here (no AUTH_SECRET)"))
        };
    }
    let iss = token.claims.iss.as_deref();
    if let Some(issuer) = remote.issuers.iter().position(|(i, _)| Some(i.as_str()) == iss) {
        let set = remote.issuers.get(issuer).map_or(0, |(_, s)| *s);
        return Ok(Source::Remote { set, issuer });
    }
    if static_keys.is_empty() {
        return Err(AuthError::Invalid("no key set for this token's issuer"));
    }
    Ok(Source::Static)
}

/// The keys of `keys` that may have signed `token`: those of its algorithm (the key's
/// kind and `alg` decide) and, when it names one, its `kid`. None is a refusal: a token
/// whose `alg` does not fit the key its `kid` names is refused here.
pub fn candidates<'k>(keys: &'k [Jwk], token: &Unverified<'_>) -> Result<Vec<&'k Jwk>, AuthError> {
    let found: Vec<&Jwk> = keys.iter().filter(|k| k.fits(token.alg, token.kid.as_deref())).collect();
    if found.is_empty() {
        return Err(AuthError::Invalid("no key for this token's alg and kid"));
    }
    Ok(found)
}
