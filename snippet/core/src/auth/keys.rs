//! Public keys and key sets (RFC 7517 JWK sets), as an operator pastes them into
//! `AUTH_JWKS` or an identity provider publishes them at `AUTH_JWKS_URL`.
//!
//! **The key decides the algorithm.** Each key is bound, by its `kty` (and `crv`), to the
//! algorithms it may verify — RSA: RS256 and PS256; EC P-256: ES256; OKP Ed25519: EdDSA —
//! narrowed to one when the key names its `alg`. A token's `alg` only chooses among the
//! keys that accept it; it never turns a key into another kind (a public key used as an
//! HMAC secret, an RSA key asked for ES256).
//!
//! **What the snippet does not verify with is skipped, not fatal.** Real providers'
//! sets hold keys of other kinds (`use: enc`, RS512, P-384, X25519, short RSA keys); each
//! is skipped with its reason, which the glue logs once per load. Only what makes the
//! whole set untrustworthy refuses it: not a `{"keys": [...]}` document, too many
//! entries, or a private key (whoever published it has leaked it).

use super::json::{self, Json};
use super::jwt::{b64url_decode, Alg};

/// Most usable keys in one set: a token without `kid` is tried against every key of its
/// algorithm, so the bound caps the signature checks one request can cause. Providers
/// publish two or three (the current key and the next or previous one).
pub const MAX_JWKS_KEYS: usize = 16;

/// Most entries in one set, usable or not: bounds the work of reading a set whose keys
/// are mostly skipped (a hostile or broken set of thousands of entries).
pub const MAX_KEY_SET_ENTRIES: usize = 64;

/// Smallest RSA modulus verified, in bits: RFC 7518 §3.3 requires 2048 for RS256, and
/// shorter keys can be factored by a determined attacker.
pub const MIN_RSA_BITS: usize = 2048;

/// Largest RSA modulus verified, in bits: every provider signs with 2048 (some 4096);
/// a larger one only makes each verification slower (the cost grows with the square of
/// the size) on a path anyone can reach with a token naming that key.
pub const MAX_RSA_BITS: usize = 4096;

/// The public part of a key, in the form WebCrypto imports (base64url fields of a JWK).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Material {
    /// `kty: RSA`: modulus `n`, exponent `e`.
    Rsa {
        /// `n` (base64url).
        n: String,
        /// `e` (base64url).
        e: String,
    },
    /// `kty: EC`, `crv: P-256`: the point's coordinates.
    Ec {
        /// `x` (base64url, 32 bytes).
        x: String,
        /// `y` (base64url, 32 bytes).
        y: String,
    },
    /// `kty: OKP`, `crv: Ed25519`: the public key.
    Ed25519 {
        /// `x` (base64url, 32 bytes).
        x: String,
    },
}

impl Material {
    /// The JWK members to import (`kty`, `crv` and the key's numbers), nothing else: a
    /// JWK's own `alg`, `use` or `key_ops` could make WebCrypto refuse the import for an
    /// algorithm this key was already checked to accept.
    pub fn jwk_fields(&self) -> Vec<(&'static str, &str)> {
        match self {
            Material::Rsa { n, e } => vec![("kty", "RSA"), ("n", n), ("e", e)],
            Material::Ec { x, y } => vec![("kty", "EC"), ("crv", "P-256"), ("x", x), ("y", y)],
            Material::Ed25519 { x } => vec![("kty", "OKP"), ("crv", "Ed25519"), ("x", x)],
        }
    }

    /// A text that identifies the key (its kind and numbers): imported keys are cached
    /// under it, so a key is imported once whichever set or slot it came from, and a
    /// provider that reuses a `kid` for a new key gets the new key.
    pub fn fingerprint(&self) -> String {
        match self {
            Material::Rsa { n, e } => format!("RSA:{n}:{e}"),
            Material::Ec { x, y } => format!("EC:{x}:{y}"),
            Material::Ed25519 { x } => format!("OKP:{x}"),
        }
    }
}

/// A public key and the algorithms it verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    /// `kid`, if the set names it.
    pub kid: Option<String>,
    /// The algorithms this key verifies, decided by its kind and its own `alg`.
    pub algs: Vec<Alg>,
    /// The key itself.
    pub material: Material,
}

impl Jwk {
    /// Whether this key may verify a token signed with `alg`.
    pub fn verifies(&self, alg: Alg) -> bool {
        self.algs.contains(&alg)
    }

    /// Whether this key may have signed a token with `alg` and `kid`: of that algorithm,
    /// and with that `kid` when the token names one.
    pub fn fits(&self, alg: Alg, kid: Option<&str>) -> bool {
        self.verifies(alg) && (kid.is_none() || self.kid.as_deref() == kid)
    }
}

/// An entry of a set that is not used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Its index in `keys`.
    pub index: usize,
    /// Its `kid`, if any.
    pub kid: Option<String>,
    /// Why, in a few words.
    pub reason: String,
    /// A key of a kind the snippet verifies with, but broken (a missing or malformed
    /// number, an `alg` that contradicts its kind). A set an operator pasted is refused for
    /// it (a typo should not pass unnoticed); a provider's set only skips it.
    pub malformed: bool,
}

/// A key set as read: the keys used, and the entries skipped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeySet {
    /// Usable keys, in the set's order.
    pub keys: Vec<Jwk>,
    /// Entries not used.
    pub skipped: Vec<Skipped>,
}

impl KeySet {
    /// One line describing the skipped entries (for the log at load), or `None`.
    pub fn skipped_line(&self) -> Option<String> {
        if self.skipped.is_empty() {
            return None;
        }
        let each: Vec<String> = self
            .skipped
            .iter()
            .map(|s| match &s.kid {
                Some(kid) => format!("key {} (kid \"{}\"): {}", s.index, printable(kid), s.reason),
                None => format!("key {}: {}", s.index, s.reason),
            })
            .collect();
        Some(format!("skipped {}", each.join("; ")))
    }

    /// The `kid`s of the usable keys, for the log (`-` for a key without one).
    pub fn kids(&self) -> String {
        let kids: Vec<String> = self.keys.iter().map(|k| printable(k.kid.as_deref().unwrap_or("-"))).collect();
        kids.join(", ")
    }
}

/// `s` for a log line: control characters (a line break in a `kid` could forge a line)
/// become `?`, and it is cut at 64 characters. Written out rather than with `{:?}`, whose
/// escaping code would cost the snippet's wasm about 2.5 KB.
pub fn printable(s: &str) -> String {
    s.chars().take(64).map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// Bits of a big-endian unsigned number (leading zero bytes ignored).
pub fn bit_length(be: &[u8]) -> usize {
    let digits = be.iter().position(|&b| b != 0).and_then(|i| be.get(i..)).unwrap_or_default();
    match digits.first() {
        Some(&top) => digits.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    }
}

/// Members whose presence makes a JWK a private (or secret) key (RFC 7518 §6.2.2, §6.3.2,
/// §6.4.1): `d` of EC, OKP and RSA keys, RSA's CRT members, and `k` of a symmetric key.
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];

/// Why one entry cannot be used: `Ok(key)`, or `Err((reason, malformed))`.
fn read_key(k: &Json) -> Result<Jwk, (String, bool)> {
    let text = |name: &str| -> Result<Option<&str>, (String, bool)> {
        match k.get(name) {
            None => Ok(None),
            Some(Json::Str(s)) => Ok(Some(s.as_str())),
            Some(_) => Err((format!("{name} is not a string"), true)),
        }
    };
    let unsupported = |why: String| Err((why, false));
    let malformed = |why: String| Err((why, true));
    if let Some(u) = text("use")? {
        if u != "sig" {
            return unsupported(format!("use is \"{}\", not \"sig\"", printable(u)));
        }
    }
    if let Some(ops) = k.get("key_ops") {
        let verify = ops.as_array().is_some_and(|ops| ops.iter().any(|o| o.as_str() == Some("verify")));
        if !verify {
            return unsupported("key_ops does not include \"verify\"".into());
        }
    }
    let alg = text("alg")?;
    let b64 = |name: &str| -> Result<(String, Vec<u8>), (String, bool)> {
        let s = text(name)?.ok_or((format!("no {name}"), true))?;
        let bytes = b64url_decode(s.as_bytes()).ok_or((format!("{name} is not base64url"), true))?;
        Ok((s.to_owned(), bytes))
    };
    let kty = text("kty")?.unwrap_or_default();
    let crv = text("crv")?.unwrap_or_default();
    let (material, algs) = match kty {
        "RSA" => {
            let algs = match alg {
                None => vec![Alg::Rs256, Alg::Ps256],
                Some("RS256") => vec![Alg::Rs256],
                Some("PS256") => vec![Alg::Ps256],
                Some(other) if other.starts_with("RS") || other.starts_with("PS") => {
                    return unsupported(format!("alg {} (RS256 and PS256 are verified)", printable(other)))
                }
                Some(other) => return malformed(format!("alg {} does not fit an RSA key", printable(other))),
            };
            let (n, n_bytes) = b64("n")?;
            let (e, e_bytes) = b64("e")?;
            let bits = bit_length(&n_bytes);
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                return unsupported(format!("RSA key of {bits} bits ({MIN_RSA_BITS}-{MAX_RSA_BITS} are verified)"));
            }
            // An even or tiny exponent is no RSA public key (65537 is what everyone uses).
            if bit_length(&e_bytes) < 2 || e_bytes.last().is_some_and(|b| b & 1 == 0) || e_bytes.len() > 8 {
                return malformed("e is not a usable RSA exponent".into());
            }
            (Material::Rsa { n, e }, algs)
        }
        "EC" if crv == "P-256" => {
            if alg.is_some_and(|a| a != "ES256") {
                return malformed(format!(
                    "alg {} does not fit an EC P-256 key (ES256)",
                    printable(alg.unwrap_or_default())
                ));
            }
            let ((x, xb), (y, yb)) = (b64("x")?, b64("y")?);
            if xb.len() != 32 || yb.len() != 32 {
                return malformed("x and y of a P-256 key are 32 bytes each".into());
            }
            (Material::Ec { x, y }, vec![Alg::Es256])
        }
        "OKP" if crv == "Ed25519" => {
            // "Ed25519" is the fully specified name of RFC 9864; "EdDSA" the classic one.
            if alg.is_some_and(|a| a != "EdDSA" && a != "Ed25519") {
                return malformed(format!(
                    "alg {} does not fit an Ed25519 key (EdDSA)",
                    printable(alg.unwrap_or_default())
                ));
            }
            let (x, xb) = b64("x")?;
            if xb.len() != 32 {
                return malformed("x of an Ed25519 key is 32 bytes".into());
            }
            (Material::Ed25519 { x }, vec![Alg::EdDsa])
        }
        "EC" | "OKP" => {
            return unsupported(format!("{kty} curve \"{}\" (P-256 and Ed25519 are verified)", printable(crv)))
        }
        "" => return malformed("no kty".into()),
        other => return unsupported(format!("kty {} (RSA, EC P-256 and OKP Ed25519 are verified)", printable(other))),
    };
    let kid = text("kid")?.map(str::to_owned);
    Ok(Jwk { kid, algs, material })
}

/// Reads a JWK set. `Err` only when the whole set is unusable (see the module's notes);
/// a set with no usable key is `Ok` with empty `keys` — the caller decides what that
/// means (for `AUTH_JWKS` a configuration error, for a fetched set a failed fetch).
pub fn parse_key_set(raw: &[u8]) -> Result<KeySet, String> {
    let doc = json::parse(raw).map_err(|e| format!("not JSON: {e}"))?;
    let entries = doc.get("keys").and_then(Json::as_array).ok_or("not a key set: expected {\"keys\": [...]}")?;
    if entries.len() > MAX_KEY_SET_ENTRIES {
        return Err(format!("{} keys; at most {MAX_KEY_SET_ENTRIES} are read", entries.len()));
    }
    let mut set = KeySet::default();
    for (index, k) in entries.iter().enumerate() {
        let kid = k.get("kid").and_then(Json::as_str).map(str::to_owned);
        if !matches!(k, Json::Obj(_)) {
            set.skipped.push(Skipped { index, kid, reason: "not a JSON object".into(), malformed: true });
            continue;
        }
        if let Some(m) = PRIVATE_MEMBERS.iter().find(|m| k.get(m).is_some()) {
            return Err(format!("key {index} is a private key (it has \"{m}\"); publish only the public part"));
        }
        match read_key(k) {
            Ok(key) => set.keys.push(key),
            Err((reason, malformed)) => set.skipped.push(Skipped { index, kid, reason, malformed }),
        }
    }
    if set.keys.len() > MAX_JWKS_KEYS {
        return Err(format!("{} usable keys; at most {MAX_JWKS_KEYS}", set.keys.len()));
    }
    Ok(set)
}

/// Reads `AUTH_JWKS`: like [`parse_key_set`], but a malformed key is an error (an
/// operator's typo, reported by name rather than silently dropped), and so is a set
/// with no key the snippet verifies with. Keys of other kinds are skipped (the caller
/// logs [`KeySet::skipped_line`] once).
pub fn parse_static(raw: &str) -> Result<KeySet, String> {
    let set = parse_key_set(raw.as_bytes()).map_err(|e| format!("AUTH_JWKS: {e}"))?;
    if let Some(bad) = set.skipped.iter().find(|s| s.malformed) {
        return Err(format!("AUTH_JWKS key {}: {}", bad.index, bad.reason));
    }
    if set.keys.is_empty() {
        let why = set.skipped_line().unwrap_or_else(|| "it is empty".into());
        return Err(format!("AUTH_JWKS has no key the snippet verifies with ({why})"));
    }
    Ok(set)
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
