use super::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const EC: &str = r#"{"kty":"EC","crv":"P-256","x":"eHg","y":"eXk","kid":"ec1","alg":"ES256","use":"sig"}"#;
const ED: &str = r#"{"kty":"OKP","crv":"Ed25519","x":"eHg","kid":"ed1"}"#;

fn cfg(vars: &[(&str, &str)]) -> Result<AuthConfig, String> {
    AuthConfig::from_vars(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()))
}

fn claims(exp: u64) -> Claims {
    Claims { sub: "alice".into(), tenant: Some("acme".into()), scope: "read".into(), exp, ..Claims::default() }
}

fn unverified(alg: Alg, kid: Option<&str>) -> Unverified<'static> {
    Unverified { alg, kid: kid.map(str::to_owned), signing_input: b"", signature: vec![], claims: claims(10) }
}

#[test]
fn fails_closed_without_a_key() {
    let e = cfg(&[]).expect_err("no key, no anonymous");
    assert!(e.contains("AUTH_SECRET") && e.contains("AUTH_JWKS") && e.contains("ALLOW_ANONYMOUS"), "{e}");
    assert!(cfg(&[("ALLOW_ANONYMOUS", "false")]).is_err());
    assert!(cfg(&[("AUTH_SECRET", "  ")]).is_err(), "a blank secret is no secret");
    let anon = cfg(&[("ALLOW_ANONYMOUS", "true")]).expect("explicit opt-in");
    assert_eq!(anon.anonymous().map(|i| i.scopes), Ok(DEFAULT_ANONYMOUS_SCOPES.to_owned()));
    let keyed = cfg(&[("AUTH_SECRET", SECRET)]).expect("secret");
    assert_eq!(keyed.anonymous(), Err(AuthError::Missing));
    assert!(cfg(&[("ALLOW_ANONYMOUS", "yes please")]).expect_err("bad flag").contains("ALLOW_ANONYMOUS"));
    for name in ["AUTH_ISSUER", "AUTH_AUDIENCE", "AUTH_JWKS"] {
        let e = cfg(&[("AUTH_SECRET", SECRET), (name, " ")]).expect_err("blank");
        assert!(e.contains(name), "{e}");
    }
}

#[test]
fn short_secrets_and_bad_key_sets_are_refused_by_name() {
    assert!(cfg(&[("AUTH_SECRET", "short")]).expect_err("short").contains("32 bytes"));
    let jwks = |k: &str| format!(r#"{{"keys":[{k}]}}"#);
    let ok = cfg(&[("AUTH_JWKS", &format!(r#"{{"keys":[{EC},{ED}]}}"#))]).expect("two keys");
    assert_eq!(ok.keys.iter().map(|k| k.alg).collect::<Vec<_>>(), vec![Alg::Es256, Alg::EdDsa]);
    assert_eq!(ok.keys[0].y.as_deref(), Some("eXk"));
    for (bad, why) in [
        ("nope".to_owned(), "not JSON"),
        (r#"{"k":[]}"#.to_owned(), "keys"),
        (jwks(r#"{"kty":"RSA","n":"x","e":"AQAB"}"#), "only EC P-256"),
        (jwks(r#"{"kty":"EC","crv":"P-384","x":"a","y":"b"}"#), "only EC P-256"),
        (jwks(r#"{"kty":"EC","crv":"P-256","x":"a","y":"b","alg":"HS256"}"#), "does not match"),
        (jwks(r#"{"kty":"EC","crv":"P-256","x":"a"}"#), "no y"),
        (jwks(r#"{"kty":"OKP","crv":"Ed25519","x":"a","d":"secret"}"#), "private key"),
        (jwks(r#"{"kty":"OKP","crv":"Ed25519","x":"a","use":"enc"}"#), "use must be sig"),
        (format!(r#"{{"keys":[{}]}}"#, vec![ED; MAX_JWKS_KEYS + 1].join(",")), "at most"),
    ] {
        let e = cfg(&[("AUTH_JWKS", &bad)]).expect_err(&bad);
        assert!(e.contains("AUTH_JWKS") && e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn the_algorithm_picks_the_key_kind_so_keys_cannot_be_confused() {
    let both = cfg(&[("AUTH_SECRET", SECRET), ("AUTH_JWKS", &format!(r#"{{"keys":[{EC},{ED}]}}"#))]).expect("cfg");
    assert_eq!(both.keys_for(&unverified(Alg::Hs256, Some("ec1"))), Ok(vec![KeyRef::Secret]));
    assert_eq!(both.keys_for(&unverified(Alg::Es256, None)), Ok(vec![KeyRef::Jwk(0)]));
    assert_eq!(both.keys_for(&unverified(Alg::EdDsa, Some("ed1"))), Ok(vec![KeyRef::Jwk(1)]));
    assert!(both.keys_for(&unverified(Alg::EdDsa, Some("ec1"))).is_err(), "kid of a key of another type");
    assert!(both.keys_for(&unverified(Alg::Es256, Some("unknown"))).is_err());
    // HS256 against a server with only public keys: the classic confusion attack (the
    // public key used as an HMAC secret) has no key to use.
    let public_only = cfg(&[("AUTH_JWKS", &format!(r#"{{"keys":[{EC}]}}"#))]).expect("cfg");
    assert!(public_only.keys_for(&unverified(Alg::Hs256, None)).is_err());
    let secret_only = cfg(&[("AUTH_SECRET", SECRET)]).expect("cfg");
    assert!(secret_only.keys_for(&unverified(Alg::Es256, None)).is_err());
}

#[test]
fn claims_are_checked_against_time_issuer_and_audience() {
    let c = cfg(&[("AUTH_SECRET", SECRET)]).expect("cfg");
    let id = c.identity(&claims(100), 99).expect("valid");
    assert_eq!(
        (id.subject.as_str(), id.tenant.as_str(), id.scopes.as_str(), id.expires_at),
        ("alice", "acme", "read", 100)
    );
    assert_eq!(c.identity(&claims(100), 100), Err(AuthError::Invalid("the token has expired")));
    let nbf = |n| Claims { nbf: Some(n), ..claims(1_000) };
    assert!(c.identity(&nbf(500 + DEFAULT_LEEWAY_SECS), 500).is_ok(), "within the leeway");
    assert_eq!(c.identity(&nbf(501 + DEFAULT_LEEWAY_SECS), 500), Err(AuthError::Invalid("the token is not valid yet")));
    let strict =
        cfg(&[("AUTH_SECRET", SECRET), ("AUTH_ISSUER", "https://idp"), ("AUTH_AUDIENCE", "proxy")]).expect("cfg");
    let good = Claims { iss: Some("https://idp".into()), aud: vec!["other".into(), "proxy".into()], ..claims(100) };
    assert!(strict.identity(&good, 1).is_ok());
    assert_eq!(strict.identity(&Claims { iss: None, ..good.clone() }, 1), Err(AuthError::Invalid("wrong issuer")));
    assert_eq!(strict.identity(&Claims { aud: vec![], ..good }, 1), Err(AuthError::Invalid("wrong audience")));
    let no_tenant = c.identity(&Claims { tenant: None, ..claims(100) }, 1).expect("valid");
    assert!(c.authorize(&no_tenant, "default", Need::Connect).is_err(), "a token names its tenant");
}

#[test]
fn routes_need_the_tenant_and_a_scope_and_stats_needs_admin() {
    let c = cfg(&[("AUTH_SECRET", SECRET)]).expect("cfg");
    let id = c.identity(&claims(100), 1).expect("valid");
    assert_eq!(c.authorize(&id, "acme", Need::Connect), Ok(()));
    assert_eq!(c.authorize(&id, "other", Need::Connect).map_err(|e| e.status()), Err(403));
    assert_eq!(c.authorize(&id, "acme", Need::Admin).map_err(|e| e.status()), Err(403));
    let admin = Identity { scopes: "admin".into(), ..id.clone() };
    assert_eq!(c.authorize(&admin, "acme", Need::Admin).map_err(|e| e.status()), Err(403), "a tenant's admin");
    let operator = Identity { scopes: "read admin".into(), tenant: "*".into(), ..id.clone() };
    assert_eq!(c.authorize(&operator, "anything", Need::Admin), Ok(()));
    let none = Identity { scopes: " ".into(), ..id };
    assert_eq!(c.authorize(&none, "acme", Need::Connect).map_err(|e| e.status()), Err(403));
    let anon = cfg(&[("ALLOW_ANONYMOUS", "true")]).expect("cfg").anonymous().expect("anonymous");
    assert!(anon.is_anonymous() && anon.allows_tenant("any"));
}

#[test]
fn origins() {
    let c = cfg(&[("AUTH_SECRET", SECRET), ("ALLOWED_ORIGINS", "https://app.example.com/, http://localhost:5173")])
        .expect("cfg");
    let own = "https://proxy.example.com";
    assert!(c.origin_allowed(None, own), "not a browser");
    assert!(c.origin_allowed(Some("https://proxy.example.com"), own), "same origin");
    assert!(c.origin_allowed(Some("https://APP.example.com"), own));
    assert!(c.origin_allowed(Some("http://localhost:5173"), own));
    assert!(!c.origin_allowed(Some("https://evil.example"), own));
    assert!(!c.origin_allowed(Some("null"), own));
    assert!(!c.origin_allowed(Some("https://app.example.com.evil.example"), own));
    let any = cfg(&[("AUTH_SECRET", SECRET), ("ALLOWED_ORIGINS", "*")]).expect("cfg");
    assert!(any.origin_allowed(Some("https://evil.example"), own));
}

#[test]
fn the_token_comes_from_exactly_one_place() {
    assert_eq!(pick_token(None, None, None, true), Ok(None));
    assert_eq!(pick_token(Some("Bearer abc"), None, None, true), Ok(Some(("abc".into(), TokenSource::Header))));
    assert_eq!(pick_token(Some("bearer  abc "), None, None, true), Ok(Some(("abc".into(), TokenSource::Header))));
    assert_eq!(pick_token(None, Some("q"), None, true), Ok(Some(("q".into(), TokenSource::Query))));
    assert_eq!(
        pick_token(None, None, Some("snippet-proxy, bearer.p"), true),
        Ok(Some(("p".into(), TokenSource::Protocol)))
    );
    assert_eq!(pick_token(None, None, Some("snippet-proxy"), true), Ok(None));
    assert_eq!(pick_token(Some("Basic xyz"), None, None, true).map_err(|e| e.status()), Err(401));
    assert_eq!(pick_token(Some("Bearer"), None, None, true).map_err(|e| e.status()), Err(401));
    assert_eq!(pick_token(Some("Bearer a"), Some("b"), None, true).map_err(|e| e.status()), Err(400));
    assert_eq!(pick_token(None, Some("a"), Some("bearer.b"), true).map_err(|e| e.status()), Err(400));
    assert_eq!(pick_token(None, None, Some("bearer.a, bearer.b"), true).map_err(|e| e.status()), Err(400));
    // Off an upgrade: the header only; a URL token is refused, a protocol entry ignored.
    assert_eq!(
        pick_token(Some("Bearer h"), None, Some("bearer.p"), false),
        Ok(Some(("h".into(), TokenSource::Header)))
    );
    assert_eq!(pick_token(None, None, Some("bearer.p"), false), Ok(None));
    assert_eq!(pick_token(None, Some("q"), None, false).map_err(|e| e.status()), Err(400));
    assert_eq!(select_protocol("bearer.abc, snippet-proxy, x"), Some("snippet-proxy"));
    assert_eq!(select_protocol("bearer.abc"), None);
}

#[test]
fn the_query_token_is_taken_only_when_given_once() {
    let one = |q: &str| query_token(q).map(|t| t.unwrap_or_else(|| "<none>".into()));
    for (query, want) in [
        ("", "<none>"),
        ("?", "<none>"),
        ("?a=1&b", "<none>"),
        ("?access_tokens=a&xaccess_token=b&access_token_=c", "<none>"),
        ("?access_token=a.b-c_d", "a.b-c_d"),
        ("access_token=a.b", "a.b"),
        ("?x=1&&access_token=t&y", "t"),
        ("?access_token", ""),
        ("?access_token=a%2Eb+c%20d", "a.b c d"),
        ("?access%5ftoken=t", "t"),
        ("?access_token=%zz%4", "%zz%4"),
        ("?access_token=%ff", "\u{fffd}"),
        ("?access_token=a=b", "a=b"),
    ] {
        assert_eq!(one(query).as_deref(), Ok(want), "{query}");
    }
    for twice in [
        "?access_token=a&access_token=b",
        "?access_token=a&access_token=a",
        "?access_token=a&&access_token",
        "?access_token=a&access%5Ftoken=b",
        "?access_token=a&acces%73_token=b",
        "?x=1&access_token=a&y=2&access_token=b",
    ] {
        let e = query_token(twice).expect_err(twice);
        assert_eq!(e.status(), 400, "{twice}");
        assert!(e.reason().contains("send the token once"), "{twice}: {}", e.reason());
    }
}

#[test]
fn refusals_say_what_rfc_6750_says() {
    assert_eq!(AuthError::Missing.www_authenticate().as_deref(), Some("Bearer realm=\"snippet-proxy\""));
    let invalid = AuthError::Invalid("the token has expired");
    assert_eq!(invalid.status(), 401);
    assert!(invalid.www_authenticate().unwrap_or_default().contains("error=\"invalid_token\""));
    assert!(AuthError::Forbidden("x".into()).www_authenticate().unwrap_or_default().contains("insufficient_scope"));
    assert_eq!(AuthError::BadRequest("x").www_authenticate(), None);
}
