//! The front door's glue: reads the token from the request, finds its keys (the shared
//! secret, `AUTH_JWKS`, or the remote set of its issuer: `jwks`), checks its signature
//! with WebCrypto (`crypto`), and asks the core (`mux_core::auth`) for every decision.

use std::cell::RefCell;
use std::collections::HashMap;

use mux_core::auth::{self, sources, AuthConfig, AuthError, Need, Source};
use mux_core::Identity;

use crate::{crypto, js, jwks};

/// Bytes of token text the cache of verified tokens may hold (~800 typical tokens). A
/// client that sends the same token with every request then pays for one signature check,
/// not one per request; the bound keeps the cache a fixed, small share of the isolate's
/// 128 MB whatever tokens arrive. When full, it is emptied (a miss only costs a check).
const VERIFIED_CACHE_BYTES: usize = 256 * 1024;

thread_local! {
    /// Tokens whose signature and claims were verified, by their whole text (never by a
    /// part of it: a cached signature must not vouch for another header or payload), with
    /// what they gave. Expiry is checked again on every use.
    static VERIFIED: RefCell<(HashMap<String, Verified>, usize)> = RefCell::new((HashMap::new(), 0));
    /// Bumped by [`forget_verified`]: a verdict reached across a key set's change (its
    /// keys read before, its check finished after) is not remembered.
    static GENERATION: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// What a verified token gave: the identity, and its issuer (`iss`), which is no part of
/// the identity the backend sees but is part of whose allowances the caller uses.
#[derive(Clone)]
struct Verified {
    identity: Identity,
    issuer: Option<String>,
    /// Whose keys vouched for it: a remote set's verdict lasts only while that set is
    /// usable (see [`verify`]).
    source: Option<Source>,
}

fn cached(token: &str) -> Option<Verified> {
    VERIFIED.with(|v| v.borrow().0.get(token).cloned())
}

/// Forgets every verified token: a remote set changed, and a key that left it must stop
/// vouching for the tokens it signed.
pub fn forget_verified() {
    VERIFIED.with(|v| *v.borrow_mut() = (HashMap::new(), 0));
    GENERATION.with(|g| g.set(g.get().wrapping_add(1)));
}

fn remember(token: String, verified: &Verified) {
    VERIFIED.with(|v| {
        let (map, bytes) = &mut *v.borrow_mut();
        if *bytes + token.len() > VERIFIED_CACHE_BYTES {
            map.clear();
            *bytes = 0;
        }
        *bytes += token.len();
        map.insert(token, verified.clone());
    })
}

/// A caller the door let in.
pub struct Admitted {
    /// Who the caller is, as the backend sees it.
    pub identity: Identity,
    /// Whose allowances it uses ([`mux_core::quota::caller_key`]): the token's issuer,
    /// tenant and subject, or an anonymous caller's address.
    pub caller: String,
}

/// Why the door refused, or could not decide (a server-side problem: 500).
pub enum Refusal {
    /// A refusal the client caused: 400/401/403.
    Auth(AuthError),
    /// The configuration is unusable (a key that does not import): 500.
    Server(String),
}

impl From<AuthError> for Refusal {
    fn from(e: AuthError) -> Self {
        Refusal::Auth(e)
    }
}

/// Whether the token's signature verifies with the keys of `source`. Each WebCrypto
/// path is awaited in one place only: an async call written twice is compiled twice into
/// the caller's state machine (measured: 4 KB of wasm for `jwk_verifies` alone).
async fn signature_verifies(cfg: &AuthConfig, source: Source, token: &auth::Unverified<'_>) -> Result<bool, Refusal> {
    let (sig, data) = (token.signature.as_slice(), token.signing_input);
    let fetched;
    let keys: &[auth::Jwk] = match source {
        Source::Secret => {
            let secret = cfg.secret.as_deref().unwrap_or_default();
            return crypto::hmac_verifies(secret, sig, data).await.map_err(Refusal::Server);
        }
        Source::Static => &cfg.keys,
        Source::Remote { set, .. } => {
            // Boxed: the fetch-or-wait loop is polled as its own future rather than inlined
            // into every request's.
            let lookup: std::pin::Pin<Box<dyn std::future::Future<Output = _>>> =
                Box::pin(jwks::keys(set, token.alg, token.kid.as_deref()));
            fetched = lookup.await?;
            &fetched
        }
    };
    let keys = sources::candidates(keys, token)?;
    crypto::jwk_verifies(&keys, token.alg, sig, data).await.map_err(Refusal::Server)
}

/// The identity `token` gives at `now_secs`: from the cache when it was verified before
/// (expiry checked again), else checked — signature, then claims — and remembered.
async fn verify(cfg: &AuthConfig, token: String, now_secs: u64) -> Result<Verified, Refusal> {
    // A token verified with a remote set is taken from the cache only while that set is
    // usable: past its stale window the keys that vouched for it are no longer trusted,
    // so the token goes the whole way again (a fetch, or the 503).
    let cached = cached(&token).filter(|v| match v.source {
        Some(Source::Remote { set, .. }) => jwks::usable(set),
        _ => true,
    });
    if let Some(v) = cached {
        if v.identity.expired(now_secs) {
            return Err(AuthError::Invalid("the token has expired").into());
        }
        return Ok(v);
    }
    let generation = GENERATION.with(std::cell::Cell::get);
    let unverified = auth::jwt::parse_with(&token, &cfg.claims)?;
    let source = cfg.source_for(&unverified)?;
    if !signature_verifies(cfg, source, &unverified).await? {
        return Err(AuthError::Invalid("the signature does not verify").into());
    }
    let identity = cfg.identity(&unverified.claims, now_secs, source)?;
    let verified = Verified { identity, issuer: unverified.claims.iss.clone(), source: Some(source) };
    if GENERATION.with(std::cell::Cell::get) == generation {
        remember(token, &verified);
    }
    Ok(verified)
}

/// Decides who the caller of `req` is and whether it may use `tenant` for a route that
/// needs `need`. `upgrade`: a WebSocket upgrade, the only kind of request that may carry
/// the token in the URL or the subprotocol (browsers can set no header there; anywhere
/// else a token in the URL would only end up in request logs). Never logs the token.
pub async fn admit(
    cfg: &AuthConfig,
    req: &web_sys::Request,
    url: &web_sys::Url,
    tenant: &str,
    need: Need,
    upgrade: bool,
) -> Result<Admitted, Refusal> {
    let headers = req.headers();
    let header = |name: &str| headers.get(name).ok().flatten();
    let query_token = auth::query_token(&url.search())?;
    let picked = auth::pick_token(
        header("Authorization").as_deref(),
        query_token.as_deref(),
        header("Sec-WebSocket-Protocol").as_deref(),
        upgrade,
    )?;
    let Verified { identity, issuer, .. } = match picked {
        None => Verified { identity: cfg.anonymous()?, issuer: None, source: None },
        Some((token, _source)) => verify(cfg, token, js::now() / 1000).await?,
    };
    cfg.authorize(&identity, tenant, need)?;
    let addr = header("CF-Connecting-IP");
    let caller = mux_core::quota::caller_key(issuer.as_deref(), &identity, addr.as_deref());
    Ok(Admitted { identity, caller })
}
