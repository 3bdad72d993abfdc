//! JSON Web Tokens (RFC 7519) in JWS compact form (RFC 7515): split, decode, read the
//! header and claims, and check the claims. The signature itself is checked by the glue
//! with WebCrypto, against the keys [`super::AuthConfig::source_for`] and [`super::sources::candidates`] pick.

use super::claims::ClaimMap;
use super::json::{self, Json};
use super::AuthError;

/// Longest token accepted, in bytes. Request headers are capped at a few KB by every
/// proxy in front of us; 8 KiB bounds the decoding and parsing work a request can cause.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Latest NumericDate accepted in `exp`, `nbf` and `iat`: 9999-12-31T23:59:59Z, the last
/// second of four-digit years. A later one is no date an issuer means — `exp: 1e300`
/// would be a token that never expires — and refusing it keeps every time derived from
/// a claim in range: in milliseconds it stays below 2⁵³, exact in the glue's f64 timers
/// and a valid JavaScript `Date` (those end at 8.64e15 ms).
pub const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

/// A signature algorithm this proxy accepts. Anything else — `none` first of all — is
/// refused before any key is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// HMAC SHA-256 with the shared secret `AUTH_SECRET`.
    Hs256,
    /// ECDSA P-256 SHA-256 with an EC P-256 key of a key set.
    Es256,
    /// Ed25519 with an OKP Ed25519 key of a key set.
    EdDsa,
    /// RSASSA-PKCS1-v1_5 SHA-256 with an RSA key of a key set (most providers' default).
    Rs256,
    /// RSASSA-PSS SHA-256 (MGF1 SHA-256, salt of 32 bytes: RFC 7518 §3.5) with an RSA key.
    Ps256,
}

impl Alg {
    /// The `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
            Alg::Rs256 => "RS256",
            Alg::Ps256 => "PS256",
        }
    }
    fn parse(s: &str) -> Result<Alg, AuthError> {
        match s {
            "HS256" => Ok(Alg::Hs256),
            "ES256" => Ok(Alg::Es256),
            "EdDSA" => Ok(Alg::EdDsa),
            "RS256" => Ok(Alg::Rs256),
            "PS256" => Ok(Alg::Ps256),
            s if s.eq_ignore_ascii_case("none") => Err(AuthError::Invalid("alg none is not accepted")),
            _ => Err(AuthError::Invalid("unsupported alg (HS256, RS256, PS256, ES256 and EdDSA are accepted)")),
        }
    }
}

/// The claims this proxy reads.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Claims {
    /// `sub`: who the caller is.
    pub sub: String,
    /// The tenant claim (`tenant` unless configured): the tenant the token is for
    /// (`*` for all), if present.
    pub tenant: Option<String>,
    /// The scopes claim (`scope`, else `scp`, unless configured), space-separated.
    pub scope: String,
    /// `exp` in whole seconds.
    pub exp: u64,
    /// `nbf` in whole seconds, if present.
    pub nbf: Option<u64>,
    /// `iss`, if present.
    pub iss: Option<String>,
    /// `aud` (a string or an array), as a list.
    pub aud: Vec<String>,
}

/// A token whose signature has not been checked yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Unverified<'a> {
    /// The header's algorithm.
    pub alg: Alg,
    /// The header's key id, if any.
    pub kid: Option<String>,
    /// What the signature covers: `header.payload` as sent.
    pub signing_input: &'a [u8],
    /// The decoded signature.
    pub signature: Vec<u8>,
    /// The claims, read but not yet checked.
    pub claims: Claims,
}

/// Decodes unpadded base64url (RFC 4648 §5), strictly: no padding, no other alphabet,
/// and no stray bits in the last character, so one token has exactly one encoding.
pub fn b64url_decode(s: &[u8]) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32)
    };
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for &c in chunk {
            acc = (acc << 6) | val(c)?;
        }
        match chunk.len() {
            4 => out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]),
            3 if acc & 0b11 == 0 => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
            2 if acc & 0b1111 == 0 => out.push((acc >> 4) as u8),
            _ => return None,
        }
    }
    Some(out)
}

/// A NumericDate claim (RFC 7519 §2) in whole seconds: a number, not negative, and not
/// past [`MAX_NUMERIC_DATE`] (infinity included), each refusal with its own reason.
fn seconds(v: &Json, not_a_date: &'static str, too_late: &'static str) -> Result<u64, AuthError> {
    match v.as_f64().map(f64::floor) {
        Some(n) if n > MAX_NUMERIC_DATE as f64 => Err(AuthError::Invalid(too_late)),
        Some(n) if n >= 0.0 => Ok(n as u64),
        _ => Err(AuthError::Invalid(not_a_date)),
    }
}

fn read_claims(v: &Json, map: &ClaimMap) -> Result<Claims, AuthError> {
    let Json::Obj(_) = v else {
        return Err(AuthError::Invalid("the claims are not a JSON object"));
    };
    let text = |name: &str| v.get(name).and_then(Json::as_str).map(str::to_owned);
    let sub = match v.get("sub") {
        Some(Json::Str(s)) if !s.is_empty() => s.clone(),
        _ => return Err(AuthError::Invalid("the token has no sub claim")),
    };
    let exp = match v.get("exp") {
        Some(e) => seconds(e, "exp is not a NumericDate", "exp is past the year 9999")?,
        None => return Err(AuthError::Invalid("the token has no exp claim")),
    };
    let nbf = v.get("nbf").map(|n| seconds(n, "nbf is not a NumericDate", "nbf is past the year 9999")).transpose()?;
    // Not used, but a malformed one is refused like the others: a token means one thing.
    if let Some(iat) = v.get("iat") {
        seconds(iat, "iat is not a NumericDate", "iat is past the year 9999")?;
    }
    let tenant = super::claims::read_tenant(v, map)?;
    let scope = super::claims::read_scopes(v, map)?;
    let aud = match v.get("aud") {
        None => Vec::new(),
        Some(Json::Str(a)) => vec![a.clone()],
        Some(Json::Arr(items)) => items
            .iter()
            .map(|a| a.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or(AuthError::Invalid("aud must be a string or an array of strings"))?,
        Some(_) => return Err(AuthError::Invalid("aud must be a string or an array of strings")),
    };
    Ok(Claims { sub, tenant, scope, exp, nbf, iss: text("iss"), aud })
}

/// [`parse_with`] the default claim names (`tenant`; `scope` or `scp`).
pub fn parse(token: &str) -> Result<Unverified<'_>, AuthError> {
    parse_with(token, &ClaimMap::default())
}

/// Splits and decodes a compact JWS. Checks the header (a known `alg`, no `crit`, a JWT
/// `typ` if any) and reads the claims, the tenant and scopes where `map` says; checks
/// nothing about keys, time or audience.
pub fn parse_with<'t>(token: &'t str, map: &ClaimMap) -> Result<Unverified<'t>, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Invalid("the token is too long"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(AuthError::Invalid("a token has three dot-separated parts"));
    };
    let decode = |part: &str, what: &'static str| b64url_decode(part.as_bytes()).ok_or(AuthError::Invalid(what));
    let header = json::parse(&decode(h, "the header is not base64url")?)
        .map_err(|_| AuthError::Invalid("the header is not JSON"))?;
    let alg = match header.get("alg") {
        Some(Json::Str(a)) => Alg::parse(a)?,
        _ => return Err(AuthError::Invalid("the header has no alg")),
    };
    if header.get("crit").is_some() {
        return Err(AuthError::Invalid("critical header extensions are not supported"));
    }
    match header.get("typ") {
        None => {}
        Some(Json::Str(t)) if t.eq_ignore_ascii_case("JWT") || t.eq_ignore_ascii_case("at+jwt") => {}
        Some(_) => return Err(AuthError::Invalid("typ is not JWT")),
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Json::Str(k)) => Some(k.clone()),
        Some(_) => return Err(AuthError::Invalid("kid is not a string")),
    };
    let claims = json::parse(&decode(p, "the payload is not base64url")?)
        .map_err(|_| AuthError::Invalid("the payload is not JSON"))?;
    let claims = read_claims(&claims, map)?;
    let signature = decode(s, "the signature is not base64url")?;
    let signing_input = token.as_bytes().get(..h.len() + 1 + p.len()).unwrap_or_default();
    Ok(Unverified { alg, kid, signing_input, signature, claims })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        // Test-only encoder, the inverse of `b64url_decode`.
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let b = s.as_bytes();
        let mut out = String::new();
        for c in b.chunks(3) {
            let n = c.iter().fold(0u32, |a, &x| (a << 8) | x as u32) << (8 * (3 - c.len()));
            for i in 0..=c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    fn token(header: &str, claims: &str) -> String {
        format!("{}.{}.{}", b64(header), b64(claims), b64("sig"))
    }

    const CLAIMS: &str = r#"{"sub":"alice","tenant":"acme","scope":"read  write","exp":2000,"nbf":10.9,"aud":"app"}"#;

    #[test]
    fn base64url_is_strict() {
        assert_eq!(b64url_decode(b"aGk"), Some(b"hi".to_vec()));
        assert_eq!(b64url_decode(b""), Some(vec![]));
        assert_eq!(b64url_decode(b"-_8"), Some(vec![0xfb, 0xff]));
        assert_eq!(b64url_decode(b"aGk="), None, "no padding");
        assert_eq!(b64url_decode(b"aGl"), None, "stray bits in the last character");
        assert_eq!(b64url_decode(b"a+k"), None, "not the url alphabet");
        assert_eq!(b64url_decode(b"a"), None);
        for s in ["", "a", "ab", "abc", "abcd", "✓ unicode ✓"] {
            assert_eq!(b64url_decode(b64(s).as_bytes()), Some(s.as_bytes().to_vec()));
        }
    }

    #[test]
    fn reads_header_and_claims() {
        let t = token(r#"{"alg":"ES256","typ":"JWT","kid":"k1"}"#, CLAIMS);
        let u = parse(&t).expect("parses");
        assert_eq!((u.alg, u.kid.as_deref()), (Alg::Es256, Some("k1")));
        assert_eq!(u.signature, b"sig");
        assert_eq!(u.signing_input, t.rsplit_once('.').map(|(a, _)| a.as_bytes()).unwrap_or_default());
        let c = u.claims;
        assert_eq!((c.sub.as_str(), c.tenant.as_deref(), c.scope.as_str()), ("alice", Some("acme"), "read write"));
        assert_eq!((c.exp, c.nbf, c.aud), (2000, Some(10), vec!["app".to_owned()]));
        let last = token(r#"{"alg":"HS256"}"#, r#"{"sub":"s","exp":253402300799.9,"iat":1.7e9,"nbf":0}"#);
        assert_eq!(parse(&last).expect("the last second of 9999").claims.exp, MAX_NUMERIC_DATE);
        let scp = token(r#"{"alg":"HS256"}"#, r#"{"sub":"s","exp":1,"scp":["read","publish"]}"#);
        assert_eq!(parse(&scp).expect("parses").claims.scope, "read publish");
    }

    #[test]
    fn refuses_bad_headers_and_claims() {
        let cases = [
            (r#"{"alg":"none"}"#, CLAIMS, "alg none"),
            (r#"{"alg":"NONE"}"#, CLAIMS, "alg none"),
            (r#"{"alg":"RS512"}"#, CLAIMS, "unsupported alg"),
            (r#"{"alg":"HS512"}"#, CLAIMS, "unsupported alg"),
            (r#"{"typ":"JWT"}"#, CLAIMS, "no alg"),
            (r#"{"alg":"HS256","crit":["b64"]}"#, CLAIMS, "critical"),
            (r#"{"alg":"HS256","typ":"JOSE+JSON"}"#, CLAIMS, "typ"),
            (r#"{"alg":"HS256","alg":"none"}"#, CLAIMS, "header is not JSON"),
            (r#"{"alg":"HS256"}"#, r#"{"exp":5}"#, "no sub"),
            (r#"{"alg":"HS256"}"#, r#"{"sub":"a"}"#, "no exp"),
            (r#"{"alg":"HS256"}"#, r#"{"sub":"a","exp":"5"}"#, "exp is not"),
            (r#"{"alg":"HS256"}"#, r#"{"sub":"a","exp":-1}"#, "exp is not"),
            (r#"{"alg":"HS256"}"#, r#"{"sub":"a","exp":1e300}"#, "exp is past the year 9999"),
            (r#"{"alg":"HS256"}"#, r#"{"sub":"a","exp":1e999}"#, "exp is past the year 9999"),
            (r#"{"alg":"HS256"}"#, r#"{"sub":"a","exp":253402300800}"#, "exp is past the year 9999"),
            (r#"{"alg":"HS256"}"#, r#"{"sub":"a","exp":5,"nbf":1e20}"#, "nbf is past the year 9999"),
            (r#"{"alg":"HS256"}"#, r#"{"sub":"a","exp":5,"iat":1e300}"#, "iat is past the year 9999"),
            (r#"{"alg":"HS256"}"#, r#"{"sub":"a","exp":5,"iat":"now"}"#, "iat is not"),
            (r#"{"alg":"HS256"}"#, r#"{"sub":"a","exp":5,"iat":-1}"#, "iat is not"),
            (r#"{"alg":"HS256"}"#, r#"{"sub":"a","exp":5,"tenant":3}"#, "tenant claim"),
            (r#"{"alg":"HS256"}"#, r#"{"sub":"a","exp":5,"scp":["a b"]}"#, "single words"),
            (r#"{"alg":"HS256"}"#, r#"{"sub":"a","exp":5,"aud":[1]}"#, "aud"),
            (r#"{"alg":"HS256"}"#, r#"{"sub":"a","exp":5,"sub":"b"}"#, "payload is not JSON"),
            (r#"{"alg":"HS256"}"#, r#"[1]"#, "not a JSON object"),
        ];
        for (h, c, why) in cases {
            match parse(&token(h, c)) {
                Err(AuthError::Invalid(msg)) => assert!(msg.contains(why), "{h} {c}: {msg}"),
                other => panic!("{h} {c}: {other:?}"),
            }
        }
        for bad in ["", "a.b", "a.b.c.d", "!!.e30.e30", &format!("{}.{}.x=", b64(r#"{"alg":"HS256"}"#), b64(CLAIMS))] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse(&"a".repeat(MAX_TOKEN_BYTES + 1)).is_err());
    }

    /// The unauthenticated path to the number reader: a claim's number is read before
    /// any signature is checked, so no exponent may panic there.
    #[test]
    fn absurd_numbers_in_claims_are_read_without_overflow() {
        let t = token(r#"{"alg":"HS256"}"#, r#"{"sub":"a","exp":0.1e-2147483648,"nbf":-0e-2147483649}"#);
        let c = parse(&t).expect("parses").claims;
        assert_eq!((c.exp, c.nbf), (0, Some(0)));
        let t = token(r#"{"alg":"HS256"}"#, r#"{"sub":"a","exp":1e2147483648}"#);
        assert!(matches!(parse(&t), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn random_tokens_never_panic() {
        let mut x: u64 = 99;
        let good = token(r#"{"alg":"HS256"}"#, CLAIMS);
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut t: Vec<u8> = good.clone().into_bytes();
            let at = (x as usize) % t.len();
            t[at] = b"A.-_z0=!"[(x >> 32) as usize % 8];
            let _ = parse(&String::from_utf8_lossy(&t));
        }
    }
}
