//! The front door's glue: reads the token from the request, checks its signature with
//! WebCrypto (`crypto.subtle`), and asks the core (`mux_core::auth`) for every decision.
//!
//! Imported keys are cached per isolate. A `CryptoKey` is plain data, not an I/O object,
//! so keys imported by one request are used by others (measured: the e2e suite verifies
//! thousands of tokens across requests against one cached key).

use std::cell::RefCell;
use std::collections::HashMap;

use js_sys::{Array, Object, Promise, Reflect, Uint8Array};
use mux_core::auth::{self, Alg, AuthConfig, AuthError, KeyRef, Need};
use mux_core::Identity;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::js;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = ["crypto", "subtle"], js_name = importKey, catch)]
    fn import_key(
        format: &str,
        data: &JsValue,
        alg: &JsValue,
        extractable: bool,
        usages: &Array,
    ) -> Result<Promise, JsValue>;
    #[wasm_bindgen(js_namespace = ["crypto", "subtle"], js_name = verify, catch)]
    fn subtle_verify(
        alg: &JsValue,
        key: &JsValue,
        signature: &Uint8Array,
        data: &Uint8Array,
    ) -> Result<Promise, JsValue>;
}

/// Bytes of token text the cache of verified tokens may hold (~800 typical tokens). A
/// client that sends the same token with every request then pays for one signature check,
/// not one per request; the bound keeps the cache a fixed, small share of the isolate's
/// 128 MB whatever tokens arrive. When full, it is emptied (a miss only costs a check).
const VERIFIED_CACHE_BYTES: usize = 256 * 1024;

thread_local! {
    /// Imported keys: index 0 is `AUTH_SECRET`, index i + 1 is `AUTH_JWKS` entry i.
    static KEYS: RefCell<Vec<Option<JsValue>>> = const { RefCell::new(Vec::new()) };
    /// Tokens whose signature and claims were verified, by their whole text (never by a
    /// part of it: a cached signature must not vouch for another header or payload), with
    /// what they gave. Expiry is checked again on every use.
    static VERIFIED: RefCell<(HashMap<String, Verified>, usize)> = RefCell::new((HashMap::new(), 0));
}

/// What a verified token gave: the identity, and its issuer (`iss`), which is no part of
/// the identity the backend sees but is part of whose allowances the caller uses.
#[derive(Clone)]
struct Verified {
    identity: Identity,
    issuer: Option<String>,
}

fn cached(token: &str) -> Option<Verified> {
    VERIFIED.with(|v| v.borrow().0.get(token).cloned())
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

fn obj(fields: &[(&str, &JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in fields {
        let _ = Reflect::set(&o, &(*k).into(), v);
    }
    o.into()
}

/// The WebCrypto algorithm object for importing and verifying with a key of `alg`.
fn algorithm(alg: Alg) -> (JsValue, JsValue) {
    match alg {
        Alg::Hs256 => {
            let a = obj(&[("name", &"HMAC".into()), ("hash", &"SHA-256".into())]);
            (a.clone(), a)
        }
        Alg::Es256 => (
            obj(&[("name", &"ECDSA".into()), ("namedCurve", &"P-256".into())]),
            obj(&[("name", &"ECDSA".into()), ("hash", &"SHA-256".into())]),
        ),
        Alg::EdDsa => {
            let a = obj(&[("name", &"Ed25519".into())]);
            (a.clone(), a)
        }
    }
}

async fn imported(cfg: &AuthConfig, key: KeyRef) -> Result<JsValue, String> {
    let slot = match key {
        KeyRef::Secret => 0,
        KeyRef::Jwk(i) => i + 1,
    };
    if let Some(k) = KEYS.with(|keys| keys.borrow().get(slot).cloned().flatten()) {
        return Ok(k);
    }
    let usages = Array::of1(&"verify".into());
    let promise = match key {
        KeyRef::Secret => {
            let secret = cfg.secret.as_deref().unwrap_or_default();
            import_key("raw", &Uint8Array::from(secret).into(), &algorithm(Alg::Hs256).0, false, &usages)
        }
        KeyRef::Jwk(i) => {
            let Some(k) = cfg.keys.get(i) else { return Err(format!("AUTH_JWKS has no key {i}")) };
            let mut fields: Vec<(&str, JsValue)> =
                vec![("kty", k.kty.as_str().into()), ("crv", k.crv.as_str().into()), ("x", k.x.as_str().into())];
            if let Some(y) = &k.y {
                fields.push(("y", y.as_str().into()));
            }
            let refs: Vec<(&str, &JsValue)> = fields.iter().map(|(n, v)| (*n, v)).collect();
            import_key("jwk", &obj(&refs), &algorithm(k.alg).0, false, &usages)
        }
    };
    let what = match key {
        KeyRef::Secret => "AUTH_SECRET".to_owned(),
        KeyRef::Jwk(i) => format!("AUTH_JWKS key {i}"),
    };
    let promise = promise.map_err(|e| format!("{what} cannot be imported: {}", js::describe(&e)))?;
    let k = JsFuture::from(promise).await.map_err(|e| format!("{what} cannot be imported: {}", js::describe(&e)))?;
    KEYS.with(|keys| {
        let mut keys = keys.borrow_mut();
        if keys.len() <= slot {
            keys.resize(slot + 1, None);
        }
        if let Some(s) = keys.get_mut(slot) {
            *s = Some(k.clone());
        }
    });
    Ok(k)
}

async fn signature_verifies(cfg: &AuthConfig, token: &auth::Unverified<'_>) -> Result<bool, Refusal> {
    let sig = Uint8Array::from(token.signature.as_slice());
    let data = Uint8Array::from(token.signing_input);
    for key in cfg.keys_for(token)? {
        let k = imported(cfg, key).await.map_err(Refusal::Server)?;
        let promise = subtle_verify(&algorithm(token.alg).1, &k, &sig, &data)
            .map_err(|e| Refusal::Server(format!("crypto.subtle.verify: {}", js::describe(&e))))?;
        // A rejection here means the inputs were unusable (e.g. a wrong-length
        // signature for the curve): that is a bad token, not a server fault.
        if JsFuture::from(promise).await.ok().and_then(|v| v.as_bool()) == Some(true) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The identity `token` gives at `now_secs`: from the cache when it was verified before
/// (expiry checked again), else checked — signature, then claims — and remembered.
async fn verify(cfg: &AuthConfig, token: String, now_secs: u64) -> Result<Verified, Refusal> {
    if let Some(v) = cached(&token) {
        if v.identity.expired(now_secs) {
            return Err(AuthError::Invalid("the token has expired").into());
        }
        return Ok(v);
    }
    let unverified = auth::jwt::parse(&token)?;
    if !signature_verifies(cfg, &unverified).await? {
        return Err(AuthError::Invalid("the signature does not verify").into());
    }
    let identity = cfg.identity(&unverified.claims, now_secs)?;
    let verified = Verified { identity, issuer: unverified.claims.iss.clone() };
    remember(token, &verified);
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
    let Verified { identity, issuer } = match picked {
        None => Verified { identity: cfg.anonymous()?, issuer: None },
        Some((token, _source)) => verify(cfg, token, js::now() / 1000).await?,
    };
    cfg.authorize(&identity, tenant, need)?;
    let addr = header("CF-Connecting-IP");
    let caller = mux_core::quota::caller_key(issuer.as_deref(), &identity, addr.as_deref());
    Ok(Admitted { identity, caller })
}
