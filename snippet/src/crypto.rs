//! Signature checks with WebCrypto (`crypto.subtle`): HS256 with `AUTH_SECRET`; RS256,
//! PS256, ES256 and EdDSA with JWKs the core chose (`mux_core::auth::keys`).
//!
//! Imported keys are cached per isolate, under the key's own numbers and the algorithm
//! (an RSA key imported for PKCS#1 v1.5 cannot verify PSS). A `CryptoKey` is plain data,
//! not an I/O object, so keys imported by one request are used by others (RUNTIME.md
//! §10; the e2e suite verifies tokens from many requests against one cached key).

use std::cell::RefCell;

use js_sys::{Array, Object, Promise, Reflect, Uint8Array};
use mux_core::auth::{Alg, Jwk};
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

/// Most imported public keys kept. Providers publish two or three keys each, and at most
/// 8 issuers and 16 static keys are configured; when a rotation has filled it, it is
/// emptied (a miss only costs an import).
const MAX_IMPORTED_KEYS: usize = 64;

thread_local! {
    /// The imported `AUTH_SECRET`.
    static SECRET: RefCell<Option<JsValue>> = const { RefCell::new(None) };
    /// Imported public keys by (fingerprint, algorithm). A list, not a map: at most
    /// [`MAX_IMPORTED_KEYS`] entries, and a map type of its own costs ~1.7 KB of wasm.
    static KEYS: RefCell<Vec<((String, Alg), JsValue)>> = const { RefCell::new(Vec::new()) };
}

fn obj(fields: &[(&str, &JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in fields {
        let _ = Reflect::set(&o, &(*k).into(), v);
    }
    o.into()
}

/// The WebCrypto algorithm objects (for `importKey`, for `verify`) of `alg`. PS256 is
/// RSA-PSS with SHA-256, MGF1 with SHA-256 and a 32-byte salt (RFC 7518 §3.5).
fn algorithm(alg: Alg) -> (JsValue, JsValue) {
    let name = |n: &str| obj(&[("name", &n.into())]);
    let hashed = |n: &str| obj(&[("name", &n.into()), ("hash", &"SHA-256".into())]);
    match alg {
        Alg::Hs256 => (hashed("HMAC"), hashed("HMAC")),
        Alg::Es256 => (obj(&[("name", &"ECDSA".into()), ("namedCurve", &"P-256".into())]), hashed("ECDSA")),
        Alg::EdDsa => (name("Ed25519"), name("Ed25519")),
        Alg::Rs256 => (hashed("RSASSA-PKCS1-v1_5"), name("RSASSA-PKCS1-v1_5")),
        Alg::Ps256 => (hashed("RSA-PSS"), obj(&[("name", &"RSA-PSS".into()), ("saltLength", &32.into())])),
    }
}

async fn import(format: &str, data: &JsValue, alg: Alg) -> Result<JsValue, String> {
    let usages = Array::of1(&"verify".into());
    let promise = import_key(format, data, &algorithm(alg).0, false, &usages).map_err(|e| js::describe(&e))?;
    JsFuture::from(promise).await.map_err(|e| js::describe(&e))
}

async fn imported_secret(secret: &[u8]) -> Result<JsValue, String> {
    if let Some(k) = SECRET.with(|s| s.borrow().clone()) {
        return Ok(k);
    }
    let k = import("raw", &Uint8Array::from(secret).into(), Alg::Hs256)
        .await
        .map_err(|e| format!("AUTH_SECRET cannot be imported: {e}"))?;
    SECRET.with(|s| *s.borrow_mut() = Some(k.clone()));
    Ok(k)
}

async fn imported_jwk(key: &Jwk, alg: Alg) -> Result<JsValue, String> {
    let id = (key.material.fingerprint(), alg);
    let found = KEYS.with(|keys| keys.borrow().iter().find(|(k, _)| *k == id).map(|(_, v)| v.clone()));
    if let Some(k) = found {
        return Ok(k);
    }
    let fields: Vec<(&str, JsValue)> = key.material.jwk_fields().into_iter().map(|(n, v)| (n, v.into())).collect();
    let refs: Vec<(&str, &JsValue)> = fields.iter().map(|(n, v)| (*n, v)).collect();
    let k = import("jwk", &obj(&refs), alg).await.map_err(|e| {
        format!("the key {} cannot be imported for {}: {e}", key.kid.as_deref().unwrap_or("without kid"), alg.name())
    })?;
    KEYS.with(|keys| {
        let mut keys = keys.borrow_mut();
        if keys.len() >= MAX_IMPORTED_KEYS {
            keys.clear();
        }
        keys.push((id, k.clone()));
    });
    Ok(k)
}

/// `crypto.subtle.verify`. A rejection means the inputs were unusable (a signature of
/// the wrong length for the key, say): a bad token, not a server fault.
async fn verifies(alg: Alg, key: &JsValue, signature: &[u8], data: &[u8]) -> Result<bool, String> {
    let (sig, data) = (Uint8Array::from(signature), Uint8Array::from(data));
    let promise = subtle_verify(&algorithm(alg).1, key, &sig, &data)
        .map_err(|e| format!("crypto.subtle.verify: {}", js::describe(&e)))?;
    Ok(JsFuture::from(promise).await.ok().and_then(|v| v.as_bool()) == Some(true))
}

/// Whether `signature` over `data` is the HS256 MAC under `secret`. `Err`: the secret
/// cannot be used (a server fault).
pub async fn hmac_verifies(secret: &[u8], signature: &[u8], data: &[u8]) -> Result<bool, String> {
    let key = imported_secret(secret).await?;
    verifies(Alg::Hs256, &key, signature, data).await
}

/// Whether `signature` over `data` verifies with any of `keys` for `alg` (each already
/// checked to accept `alg`). `Err`: a key WebCrypto will not import (a server fault).
pub async fn jwk_verifies(keys: &[&Jwk], alg: Alg, signature: &[u8], data: &[u8]) -> Result<bool, String> {
    for key in keys {
        let imported = imported_jwk(key, alg).await?;
        if verifies(alg, &imported, signature, data).await? {
            return Ok(true);
        }
    }
    Ok(false)
}
