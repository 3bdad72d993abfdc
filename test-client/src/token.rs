//! Minting JWTs (JWS compact serialization) for the snippet's token check: HS256 with the
//! shared `AUTH_SECRET`, and ES256 / EdDSA with freshly generated keys whose public halves
//! are handed out as JWKs, the form WebCrypto imports.
//!
//! Signatures are in JWS form: HS256 the 32-byte HMAC, ES256 the 64-byte raw `r || s`
//! (RFC 7518 §3.4, not DER), EdDSA the 64-byte Ed25519 signature (RFC 8037).
//! [`encode`] takes any header and signing function, so tests can also craft deliberately
//! bad tokens (`alg: none`, a header that lies about the algorithm, a wrong key).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use getrandom::rand_core::UnwrapErr;
use getrandom::SysRng;
use hmac::{Hmac, KeyInit, Mac};
use p256::ecdsa::signature::Signer as _;
use p256::elliptic_curve::Generate as _;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::Sha256;

/// Base64url without padding (RFC 7515 §2), the encoding of every JWS segment and JWK
/// coordinate.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Builds a compact JWS: `b64url(header).b64url(claims)`, then `.` and the base64url of
/// `sign(signing_input)`, where the signing input is the first two segments joined by `.`
/// as ASCII bytes. An empty signature gives a token ending in `.` (an unsecured JWT).
pub fn encode(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    // Serializing a `Value` cannot fail: its map keys are always strings.
    let header = serde_json::to_vec(header).expect("a JSON value serializes");
    let claims = serde_json::to_vec(claims).expect("a JSON value serializes");
    encode_bytes(&header, &claims, sign)
}

/// [`encode`] over the exact JSON bytes of header and claims.
fn encode_bytes(header: &[u8], claims: &[u8], sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let mut token = format!("{}.{}", b64url(header), b64url(claims));
    let signature = sign(token.as_bytes());
    token.push('.');
    token.push_str(&b64url(&signature));
    token
}

/// An HS256 token for `claims`, header `{"alg":"HS256","typ":"JWT"}`.
pub fn hs256(secret: &[u8], claims: &Value) -> String {
    encode(&json!({"alg": "HS256", "typ": "JWT"}), claims, |input| hs256_sign(secret, input))
}

/// HMAC-SHA-256 of `data` under `secret`: the 32-byte HS256 signature.
pub fn hs256_sign(secret: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length (long ones are hashed first), so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// An ECDSA P-256 signing key for ES256 tokens.
pub struct Es256Key(p256::ecdsa::SigningKey);

impl Es256Key {
    /// A new random key from the operating system's RNG.
    pub fn generate() -> Self {
        Self(p256::ecdsa::SigningKey::generate_from_rng(&mut UnwrapErr(SysRng)))
    }

    /// The ES256 signature of `data`: SHA-256, ECDSA P-256 (deterministic, RFC 6979),
    /// returned as the 64-byte raw `r || s` that JWS and WebCrypto use (not DER).
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        let signature: p256::ecdsa::Signature = self.0.sign(data);
        signature.to_bytes().to_vec()
    }

    /// The public key as a JWK:
    /// `{"kty":"EC","crv":"P-256","x":..,"y":..,"kid":kid,"alg":"ES256","use":"sig"}`.
    pub fn public_jwk(&self, kid: &str) -> Value {
        let point = self.0.verifying_key().to_sec1_point(false);
        // An uncompressed point of a valid key always has both coordinates.
        let x = point.x().expect("uncompressed point has x");
        let y = point.y().expect("uncompressed point has y");
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": b64url(x),
            "y": b64url(y),
            "kid": kid,
            "alg": "ES256",
            "use": "sig",
        })
    }

    /// An ES256 token for `claims`, header `{"alg":"ES256","typ":"JWT"}` plus `"kid"` when
    /// given.
    pub fn token(&self, kid: Option<&str>, claims: &Value) -> String {
        encode(&header("ES256", kid), claims, |input| self.sign(input))
    }
}

/// An Ed25519 signing key for EdDSA tokens (RFC 8037).
pub struct EdDsaKey(ed25519_dalek::SigningKey);

impl EdDsaKey {
    /// A new random key from the operating system's RNG.
    pub fn generate() -> Self {
        Self(ed25519_dalek::SigningKey::generate(&mut UnwrapErr(SysRng)))
    }

    /// The 64-byte Ed25519 signature of `data`.
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        use ed25519_dalek::Signer as _;
        self.0.sign(data).to_bytes().to_vec()
    }

    /// The public key as a JWK:
    /// `{"kty":"OKP","crv":"Ed25519","x":..,"kid":kid,"alg":"EdDSA","use":"sig"}`.
    pub fn public_jwk(&self, kid: &str) -> Value {
        json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64url(self.0.verifying_key().as_bytes()),
            "kid": kid,
            "alg": "EdDSA",
            "use": "sig",
        })
    }

    /// An EdDSA token for `claims`, header `{"alg":"EdDSA","typ":"JWT"}` plus `"kid"` when
    /// given.
    pub fn token(&self, kid: Option<&str>, claims: &Value) -> String {
        encode(&header("EdDSA", kid), claims, |input| self.sign(input))
    }
}

fn header(alg: &str, kid: Option<&str>) -> Value {
    let mut header = json!({"alg": alg, "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = kid.into();
    }
    header
}

/// The claims the snippet reads: `{"sub","tenant","scope","iat":now,"exp":now+ttl}`.
/// `scope` is space-separated. A negative `ttl_secs` makes an already expired token;
/// `exp` is clamped at 0.
pub fn claims(sub: &str, tenant: &str, scope: &str, ttl_secs: i64, now_secs: u64) -> Value {
    let exp = (i128::from(now_secs) + i128::from(ttl_secs)).clamp(0, i128::from(u64::MAX));
    json!({
        "sub": sub,
        "tenant": tenant,
        "scope": scope,
        "iat": now_secs,
        "exp": u64::try_from(exp).unwrap_or(u64::MAX),
    })
}

/// A lifetime in seconds: a bare number of seconds (`90`) or a number with one unit,
/// `s`, `m`, `h` or `d` (`45s`, `30m`, `1h`, `2d`).
pub fn parse_ttl(s: &str) -> Result<u64> {
    let bad = || format!("invalid TTL {s:?}: expected seconds or a number with s, m, h or d (90, 45s, 30m, 1h, 2d)");
    let (digits, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let multiplier = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => bail!(bad()),
    };
    ensure!(!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()), bad());
    let n: u64 = digits.parse().with_context(bad)?;
    n.checked_mul(multiplier).with_context(bad)
}

/// The local `AUTH_SECRET` from `<root>/.dev.vars` (dotenv-style `NAME=value` lines, which
/// `./x setup` writes and wrangler reads).
pub fn dev_secret(root: &Path) -> Result<String> {
    let path = root.join(".dev.vars");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("no --secret or AUTH_SECRET given, and cannot read {} (run ./x setup)", path.display())
    })?;
    for line in text.lines() {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else { continue };
        if name.trim() != "AUTH_SECRET" {
            continue;
        }
        let value = value.trim();
        let value = [('"', '"'), ('\'', '\'')]
            .iter()
            .find_map(|&(open, close)| value.strip_prefix(open)?.strip_suffix(close))
            .unwrap_or(value);
        ensure!(!value.is_empty(), "AUTH_SECRET is empty in {} (run ./x setup)", path.display());
        return Ok(value.to_owned());
    }
    bail!("no AUTH_SECRET line in {} (run ./x setup)", path.display())
}

/// Mint a token for the snippet's auth check: HS256 with the shared secret, or — with
/// `--alg` and `--key` — RS256, PS256, ES256 or EdDSA signed by `jose` (Node).
#[derive(Debug, clap::Args)]
pub struct TokenOpts {
    /// Subject (`sub` claim): who the token is for.
    #[arg(long, value_name = "NAME")]
    pub sub: String,
    /// Tenant (`tenant` claim).
    #[arg(long, value_name = "T", default_value = "default")]
    pub tenant: String,
    /// Scopes (`scope` claim), space-separated, e.g. "read write".
    #[arg(long, default_value = "read")]
    pub scope: String,
    /// Lifetime: seconds, or a number with s, m, h or d (90, 45s, 30m, 1h, 2d).
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: u64,
    /// HMAC secret; defaults to AUTH_SECRET from the checkout's .dev.vars (written by
    /// ./x setup). Prefer the environment variable: arguments are visible to other users.
    #[arg(long, env = "AUTH_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Issuer (`iss` claim), added when given.
    #[arg(long)]
    pub iss: Option<String>,
    /// Audience (`aud` claim), added when given.
    #[arg(long)]
    pub aud: Option<String>,
    /// Signature algorithm: HS256 (the shared secret) or RS256, PS256, ES256, EdDSA (a
    /// private JWK in --key, signed by the `jose` npm package under Node).
    #[arg(long, default_value = "HS256", value_parser = ["HS256", "RS256", "PS256", "ES256", "EdDSA"])]
    pub alg: String,
    /// The private JWK to sign with (for --alg other than HS256). When the file does not
    /// exist, a new key is made and written there, and its public set beside it
    /// (FILE.jwks.json, for AUTH_JWKS or a key-set server).
    #[arg(long, value_name = "FILE")]
    pub key: Option<std::path::PathBuf>,
    /// Extra claim NAME=VALUE (VALUE is JSON if it parses, else a string), e.g.
    /// `--claim 'https://example.com/tenant=acme' --claim 'permissions=["read"]'`; repeatable.
    #[arg(long = "claim", value_name = "NAME=VALUE")]
    pub claims: Vec<String>,
}

/// The private JWK in `path`, made (with its public set at `path.jwks.json`) if missing.
fn private_jwk(path: &Path, alg: &str) -> Result<Value> {
    if !path.exists() {
        let root = crate::stack::repo_root()?;
        let kid = format!("{}-{}", alg.to_ascii_lowercase(), fastrand::u32(..));
        let key = crate::jose::generate(&root, &[(alg, &kid)], 2048)?.remove(0);
        std::fs::write(path, serde_json::to_string_pretty(&key.private)?)
            .with_context(|| format!("writing {}", path.display()))?;
        let set = path.with_extension("jwks.json");
        std::fs::write(&set, crate::jose::key_set(&[&key]).to_string())?;
        eprintln!("made a new {alg} key in {} (public set: {})", path.display(), set.display());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a JWK", path.display()))
}

/// A minted token and the claims it carries; serializes as `{"token":..,"claims":..}`.
#[derive(Debug, Serialize)]
pub struct Minted {
    /// The compact JWS.
    pub token: String,
    /// Its claims.
    pub claims: Value,
}

/// Mints the token `opts` describe, valid from now, and returns it with its claims.
pub fn mint(opts: TokenOpts) -> Result<Minted> {
    let ttl = i64::try_from(opts.ttl).with_context(|| format!("TTL {}s is too large", opts.ttl))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).context("system clock before 1970")?.as_secs();
    let mut claims = claims(&opts.sub, &opts.tenant, &opts.scope, ttl, now);
    if let Some(iss) = opts.iss {
        claims["iss"] = iss.into();
    }
    if let Some(aud) = opts.aud {
        claims["aud"] = aud.into();
    }
    for extra in &opts.claims {
        let (name, value) = extra.split_once('=').with_context(|| format!("--claim {extra:?}: expected NAME=VALUE"))?;
        claims[name] = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    }
    if opts.alg != "HS256" {
        let path = opts.key.as_deref().context("--alg other than HS256 needs --key FILE (a private JWK)")?;
        let key = private_jwk(path, &opts.alg)?;
        let kid = key["kid"].as_str().map(str::to_owned);
        let job = crate::jose::SignJob { alg: opts.alg.clone(), key, kid, claims: claims.clone() };
        let token = crate::jose::sign(&crate::stack::repo_root()?, &[job])?.remove(0);
        return Ok(Minted { token, claims });
    }
    let secret = match opts.secret {
        Some(secret) => secret,
        None => dev_secret(&crate::stack::repo_root()?)?,
    };
    ensure!(!secret.is_empty(), "the HMAC secret is empty");
    let token = hs256(secret.as_bytes(), &claims);
    Ok(Minted { token, claims })
}

/// Mints the HS256 token `opts` describe and returns it.
pub fn run(opts: TokenOpts) -> Result<String> {
    mint(opts).map(|m| m.token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unb64(s: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s).expect("base64url")
    }

    /// Splits a compact JWS into (signing input, decoded header, decoded claims, signature).
    fn split(token: &str) -> (&str, Value, Value, Vec<u8>) {
        let (input, sig) = token.rsplit_once('.').expect("three segments");
        let (h, c) = input.split_once('.').expect("three segments");
        let h = serde_json::from_slice(&unb64(h)).expect("header JSON");
        let c = serde_json::from_slice(&unb64(c)).expect("claims JSON");
        (input, h, c, unb64(sig))
    }

    #[test]
    fn hs256_matches_rfc7515_appendix_a1() {
        let key = unb64("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow");
        let header = b"{\"typ\":\"JWT\",\r\n \"alg\":\"HS256\"}";
        let payload = b"{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":true}";
        let token = encode_bytes(header, payload, |input| hs256_sign(&key, input));
        assert_eq!(
            token,
            "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9\
             .eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ\
             .dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
        );

        // hs256() signs exactly its first two segments, with the documented header.
        let claims = json!({"sub": "alice", "exp": 1});
        let token = hs256(&key, &claims);
        let (input, h, c, sig) = split(&token);
        assert_eq!(h.to_string(), r#"{"alg":"HS256","typ":"JWT"}"#);
        assert_eq!(c, claims);
        assert_eq!(sig, hs256_sign(&key, input.as_bytes()));
        assert_ne!(sig, hs256_sign(b"other key", input.as_bytes()));
    }

    #[test]
    fn encode_makes_unsecured_and_lying_tokens() {
        let token = encode(&json!({"alg": "none"}), &json!({"sub": "x"}), |_| Vec::new());
        assert_eq!(token, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.");
        let mut seen = Vec::new();
        let token = encode(&json!({"alg": "ES256"}), &json!({}), |input| {
            seen = input.to_vec();
            b"\xfb\xff".to_vec()
        });
        assert_eq!(String::from_utf8(seen).unwrap(), "eyJhbGciOiJFUzI1NiJ9.e30");
        assert_eq!(token, "eyJhbGciOiJFUzI1NiJ9.e30.-_8");
    }

    #[test]
    fn es256_signs_raw_r_s_that_verify_under_the_jwk() {
        use p256::ecdsa::signature::Verifier as _;
        use p256::ecdsa::{Signature, VerifyingKey};

        let key = Es256Key::generate();
        let jwk = key.public_jwk("k1");
        assert_eq!(
            (&jwk["kty"], &jwk["crv"], &jwk["alg"], &jwk["use"], &jwk["kid"]),
            (&json!("EC"), &json!("P-256"), &json!("ES256"), &json!("sig"), &json!("k1"))
        );
        let x = unb64(jwk["x"].as_str().unwrap());
        let y = unb64(jwk["y"].as_str().unwrap());
        assert_eq!((x.len(), y.len()), (32, 32));
        // Verify with a key rebuilt from the JWK alone, the way the snippet imports it.
        let verifier = VerifyingKey::from_sec1_bytes(&[&[4u8][..], &x, &y].concat()).expect("JWK is a P-256 point");

        let claims = claims("alice", "t1", "read", 60, 1_000);
        let token = key.token(Some("k1"), &claims);
        let (input, h, c, sig) = split(&token);
        assert_eq!(h, json!({"alg": "ES256", "typ": "JWT", "kid": "k1"}));
        assert_eq!(c, claims);
        assert_eq!(sig.len(), 64, "raw r||s, not DER");
        let signature = Signature::from_slice(&sig).expect("64-byte r||s");
        verifier.verify(input.as_bytes(), &signature).expect("valid signature");

        let mut flipped = sig.clone();
        flipped[17] ^= 0x01;
        let bad = Signature::from_slice(&flipped).expect("still in range");
        assert!(verifier.verify(input.as_bytes(), &bad).is_err());
        assert!(verifier.verify(b"other input", &signature).is_err());
        assert!(Es256Key::generate().token(None, &claims) != token);
        assert_eq!(split(&key.token(None, &claims)).1, json!({"alg": "ES256", "typ": "JWT"}));
    }

    #[test]
    fn eddsa_signs_ed25519_that_verifies_under_the_jwk() {
        use ed25519_dalek::{Signature, VerifyingKey};

        let key = EdDsaKey::generate();
        let jwk = key.public_jwk("ed");
        assert_eq!(jwk.as_object().unwrap().keys().collect::<Vec<_>>(), ["kty", "crv", "x", "kid", "alg", "use"]);
        assert_eq!((&jwk["kty"], &jwk["crv"], &jwk["alg"]), (&json!("OKP"), &json!("Ed25519"), &json!("EdDSA")));
        let x: [u8; 32] = unb64(jwk["x"].as_str().unwrap()).try_into().expect("32-byte x");
        let verifier = VerifyingKey::from_bytes(&x).expect("JWK is an Ed25519 point");

        let claims = claims("bob", "default", "read write", 3600, 2_000);
        let token = key.token(Some("ed"), &claims);
        let (input, h, c, sig) = split(&token);
        assert_eq!(h, json!({"alg": "EdDSA", "typ": "JWT", "kid": "ed"}));
        assert_eq!(c, claims);
        let sig: [u8; 64] = sig.try_into().expect("64-byte signature");
        verifier.verify_strict(input.as_bytes(), &Signature::from_bytes(&sig)).expect("valid signature");

        let mut flipped = sig;
        flipped[5] ^= 0x80;
        assert!(verifier.verify_strict(input.as_bytes(), &Signature::from_bytes(&flipped)).is_err());
        assert!(verifier.verify_strict(b"other input", &Signature::from_bytes(&sig)).is_err());
    }

    #[test]
    fn parse_ttl_accepts_units_and_rejects_the_rest() {
        for (s, secs) in [("90", 90), ("0", 0), ("45s", 45), ("30m", 1800), ("1h", 3600), ("2d", 172_800)] {
            assert_eq!(parse_ttl(s).unwrap(), secs, "{s}");
        }
        for s in [
            "",
            "h",
            "1x",
            "-5",
            "+5",
            "1.5h",
            " 1h",
            "1h ",
            "1 h",
            "1H",
            "1hh",
            "h1",
            "99999999999999999999",
            "213503982334602d",
        ] {
            let err = parse_ttl(s).expect_err(s).to_string();
            assert!(err.contains(&format!("{s:?}")), "{err}");
        }
    }

    #[test]
    fn claims_expire_ttl_after_iat_and_negative_ttl_is_past() {
        let now = 1_700_000_000;
        let c = claims("alice", "acme", "read write", 3600, now);
        assert_eq!(c, json!({"sub": "alice", "tenant": "acme", "scope": "read write", "iat": now, "exp": now + 3600}));
        let expired = claims("alice", "acme", "read", -60, now);
        assert_eq!(expired["exp"], json!(now - 60));
        assert!(expired["exp"].as_u64().unwrap() < expired["iat"].as_u64().unwrap());
        assert_eq!(claims("a", "t", "s", -10, 5)["exp"], json!(0));
    }

    #[test]
    fn dev_secret_reads_the_line_and_explains_what_is_missing() {
        let dir = std::env::temp_dir().join(format!("test-client-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = dev_secret(&dir.join("nowhere")).unwrap_err().to_string();
        assert!(err.contains("run ./x setup"), "{err}");

        let vars = dir.join(".dev.vars");
        std::fs::write(&vars, "BACKEND_TOKEN=abc\n").unwrap();
        let err = dev_secret(&dir).unwrap_err().to_string();
        assert!(err.contains("no AUTH_SECRET") && err.contains("run ./x setup"), "{err}");

        std::fs::write(&vars, "# local\nBACKEND_TOKEN=abc\nAUTH_SECRET_OLD=no\nAUTH_SECRET=s3cr=t\n").unwrap();
        assert_eq!(dev_secret(&dir).unwrap(), "s3cr=t");
        std::fs::write(&vars, "AUTH_SECRET=\"quoted\"\r\n").unwrap();
        assert_eq!(dev_secret(&dir).unwrap(), "quoted");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mint_uses_the_given_secret_and_optional_claims() {
        let opts = |iss: Option<&str>| TokenOpts {
            sub: "carol".into(),
            tenant: "default".into(),
            scope: "read".into(),
            ttl: 90,
            secret: Some("k".into()),
            iss: iss.map(Into::into),
            aud: Some("snippet".into()),
            alg: "HS256".into(),
            key: None,
            claims: vec!["permissions=[\"read\"]".into(), "org=acme".into()],
        };
        let m = mint(opts(Some("ops"))).unwrap();
        let (input, _, c, sig) = split(&m.token);
        assert_eq!(c, m.claims);
        assert_eq!(sig, hs256_sign(b"k", input.as_bytes()));
        assert_eq!((&c["iss"], &c["aud"]), (&json!("ops"), &json!("snippet")));
        assert_eq!((&c["permissions"], &c["org"]), (&json!(["read"]), &json!("acme")), "--claim: JSON, else text");
        assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 90);
        assert!(mint(opts(None)).unwrap().claims.get("iss").is_none());
        let mut empty = opts(None);
        empty.secret = Some(String::new());
        assert!(mint(empty).is_err());
    }
}
