use super::*;

/// The base64url of a 2048-bit modulus (its top bit set): 256 bytes, 342 characters.
macro_rules! rsa_n {
    () => {
        "wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAQ"
    };
}

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const EC: &str = r#"{"kty":"EC","crv":"P-256","x":"eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHg","y":"eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXl5eXk","kid":"ec1","alg":"ES256","use":"sig"}"#;
const ED: &str = r#"{"kty":"OKP","crv":"Ed25519","x":"eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHg","kid":"ed1"}"#;
/// A 2048-bit RSA public key for RS256 only (its `alg` says so), and one for PS256.
const RSA: &str = concat!(r#"{"kty":"RSA","alg":"RS256","kid":"rs1","e":"AQAB","n":""#, rsa_n!(), r#""}"#);
const PS: &str = concat!(r#"{"kty":"RSA","alg":"PS256","kid":"ps1","e":"AQAB","n":""#, rsa_n!(), r#""}"#);

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
    let ok = cfg(&[("AUTH_JWKS", &format!(r#"{{"keys":[{EC},{ED},{RSA}]}}"#))]).expect("three keys");
    let algs: Vec<Vec<Alg>> = ok.keys.iter().map(|k| k.algs.clone()).collect();
    assert_eq!(algs, vec![vec![Alg::Es256], vec![Alg::EdDsa], vec![Alg::Rs256]]);
    assert_eq!(ok.skipped_static, None);
    for (bad, why) in [
        ("nope".to_owned(), "not JSON"),
        (r#"{"k":[]}"#.to_owned(), "keys"),
        (jwks(r#"{"kty":"RSA","n":"x","e":"AQAB"}"#), "n is not base64url"),
        (jwks(r#"{"kty":"EC","crv":"P-384","x":"a","y":"b"}"#), "no key the snippet verifies with"),
        (jwks(r#"{"kty":"EC","crv":"P-256","x":"a","y":"b","alg":"HS256"}"#), "does not fit"),
        (jwks(r#"{"kty":"EC","crv":"P-256","x":"eHg"}"#), "no y"),
        (jwks(r#"{"kty":"OKP","crv":"Ed25519","x":"a","d":"secret"}"#), "private key"),
        (jwks(r#"{"kty":"OKP","crv":"Ed25519","x":"a","use":"enc"}"#), "no key the snippet verifies with"),
        (format!(r#"{{"keys":[{}]}}"#, vec![ED; MAX_JWKS_KEYS + 1].join(",")), "at most"),
    ] {
        let e = cfg(&[("AUTH_JWKS", &bad)]).expect_err(&bad);
        assert!(e.contains("AUTH_JWKS") && e.contains(why), "{bad}: {e}");
    }
    // A provider-shaped set: an encryption key and an RS512 key beside the usable ones
    // are skipped (and said so once), not a failure of every request.
    let mixed = format!(
        r#"{{"keys":[{EC},{{"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"}},{{"kty":"RSA","alg":"RS512","n":"AQAB","e":"AQAB"}}]}}"#
    );
    let c = cfg(&[("AUTH_JWKS", &mixed)]).expect("usable keys remain");
    assert_eq!(c.keys.len(), 1);
    let line = c.skipped_static.unwrap_or_default();
    assert!(
        line.contains("key 1") && line.contains("enc") && line.contains("key 2") && line.contains("RS512"),
        "{line}"
    );
}

#[test]
fn the_key_decides_the_algorithm_so_keys_cannot_be_confused() {
    let keys = format!(r#"{{"keys":[{EC},{ED},{RSA},{PS}]}}"#);
    let both = cfg(&[("AUTH_SECRET", SECRET), ("AUTH_JWKS", &keys)]).expect("cfg");
    let pick = |alg, kid| {
        let t = unverified(alg, kid);
        let source = both.source_for(&t)?;
        assert_eq!(source, if alg == Alg::Hs256 { Source::Secret } else { Source::Static });
        if source == Source::Secret {
            return Ok(vec![]);
        }
        sources::candidates(&both.keys, &t).map(|ks| ks.iter().map(|k| k.kid.clone().unwrap_or_default()).collect())
    };
    assert_eq!(pick(Alg::Hs256, Some("ec1")), Ok(vec![]), "HS256 only ever uses the secret");
    assert_eq!(pick(Alg::Es256, None), Ok(vec!["ec1".to_owned()]));
    assert_eq!(pick(Alg::EdDsa, Some("ed1")), Ok(vec!["ed1".to_owned()]));
    assert_eq!(pick(Alg::Rs256, None), Ok(vec!["rs1".to_owned()]), "the PS256-only key is not an RS256 key");
    assert_eq!(pick(Alg::Ps256, Some("ps1")), Ok(vec!["ps1".to_owned()]));
    assert!(pick(Alg::EdDsa, Some("ec1")).is_err(), "kid of a key of another kind");
    assert!(pick(Alg::Ps256, Some("rs1")).is_err(), "an RS256 key (its alg says so) is no PS256 key");
    assert!(pick(Alg::Rs256, Some("ps1")).is_err(), "and the other way round");
    assert!(pick(Alg::Es256, Some("rs1")).is_err(), "an RSA key never verifies ES256");
    assert!(pick(Alg::Es256, Some("unknown")).is_err());
    // HS256 against a server with only public keys: the classic confusion attack (the
    // public key used as an HMAC secret) has no key to use.
    let public_only = cfg(&[("AUTH_JWKS", &format!(r#"{{"keys":[{EC}]}}"#))]).expect("cfg");
    assert!(public_only.source_for(&unverified(Alg::Hs256, None)).is_err());
    let secret_only = cfg(&[("AUTH_SECRET", SECRET)]).expect("cfg");
    assert!(secret_only.source_for(&unverified(Alg::Es256, None)).is_err());
    assert!(secret_only.source_for(&unverified(Alg::Rs256, None)).is_err());
}

#[test]
fn a_token_uses_the_set_of_its_issuer_and_no_other() {
    let c = cfg(&[
        ("AUTH_SECRET", SECRET),
        ("AUTH_JWKS", &format!(r#"{{"keys":[{EC}]}}"#)),
        ("AUTH_ISSUER", "https://own"),
        (
            "AUTH_JWKS_URL",
            "https://a/=https://a/jwks.json,https://b/=https://b/jwks.json https://c/=https://a/jwks.json",
        ),
    ])
    .expect("cfg");
    assert_eq!(c.remote.urls, vec!["https://a/jwks.json".to_owned(), "https://b/jwks.json".to_owned()]);
    let from = |iss: Option<&str>, alg| {
        let mut t = unverified(alg, Some("shared"));
        t.claims.iss = iss.map(str::to_owned);
        c.source_for(&t)
    };
    assert_eq!(from(Some("https://a/"), Alg::Rs256), Ok(Source::Remote { set: 0, issuer: 0 }));
    assert_eq!(from(Some("https://b/"), Alg::Rs256), Ok(Source::Remote { set: 1, issuer: 1 }));
    assert_eq!(from(Some("https://c/"), Alg::Rs256), Ok(Source::Remote { set: 0, issuer: 2 }), "a shared set");
    assert_eq!(from(Some("https://other/"), Alg::Es256), Ok(Source::Static));
    assert_eq!(from(None, Alg::Es256), Ok(Source::Static));
    assert_eq!(from(Some("https://a/"), Alg::Hs256), Ok(Source::Secret));
    // The issuer a remote set is bound to is the one checked; AUTH_ISSUER is for the rest.
    let claims_from = |iss: &str| Claims { iss: Some(iss.into()), ..claims(100) };
    let remote_a = Source::Remote { set: 0, issuer: 0 };
    assert!(c.identity(&claims_from("https://a/"), 1, remote_a).is_ok());
    assert_eq!(c.identity(&claims_from("https://b/"), 1, remote_a), Err(AuthError::Invalid("wrong issuer")));
    assert!(c.identity(&claims_from("https://own"), 1, Source::Static).is_ok());
    assert_eq!(c.identity(&claims_from("https://a/"), 1, Source::Static), Err(AuthError::Invalid("wrong issuer")));
    for bad in [
        "https://a/jwks.json",
        "=https://a/jwks.json",
        "https://a/=http://a.example/jwks.json",
        "https://a/=ftp://a/jwks",
        "https://a/=https://a/1 https://a/=https://a/2",
    ] {
        assert!(cfg(&[("AUTH_JWKS_URL", bad)]).expect_err(bad).contains("AUTH_JWKS_URL"), "{bad}");
    }
    assert!(cfg(&[("AUTH_JWKS_URL", "iss=http://127.0.0.1:9/jwks")]).is_ok(), "loopback for tests");
    assert!(cfg(&[("AUTH_JWKS_URL", "iss=http://127.0.0.1.evil.example/jwks")]).is_err());
    let only_remote = cfg(&[("AUTH_JWKS_URL", "i=https://x/j")]).expect("a remote set alone is a key");
    assert_eq!(only_remote.remote.limits, remote::Limits::default());
    for (name, bad) in
        [("AUTH_JWKS_COOLDOWN_SECS", "0"), ("AUTH_JWKS_COOLDOWN_SECS", "601"), ("AUTH_JWKS_STALE_SECS", "x")]
    {
        let e = cfg(&[("AUTH_JWKS_URL", "i=https://x/j"), (name, bad)]).expect_err(bad);
        assert!(e.contains(name), "{e}");
    }
}

#[test]
fn tenant_claims_are_mapped_without_widening_the_grant() {
    let c = cfg(&[("AUTH_SECRET", SECRET), ("AUTH_TENANT_CLAIM", "org_id")]).expect("cfg");
    let with_tenant = |t: Option<&str>| Claims { tenant: t.map(str::to_owned), ..claims(100) };
    assert_eq!(c.identity(&with_tenant(Some("acme")), 1, Source::Secret).map(|i| i.tenant), Ok("acme".into()));
    let star = c.identity(&with_tenant(Some("*")), 1, Source::Secret);
    assert_eq!(star.map_err(|e| e.status()), Err(403), "a mapped claim never grants every tenant");
    let none = c.identity(&with_tenant(None), 1, Source::Secret).expect_err("no tenant");
    assert_eq!(none.status(), 403);
    assert!(none.reason().contains("org_id"), "{}", none.reason());
    let defaulted = cfg(&[("AUTH_SECRET", SECRET), ("AUTH_DEFAULT_TENANT", "main")]).expect("cfg");
    assert_eq!(defaulted.identity(&with_tenant(None), 1, Source::Secret).map(|i| i.tenant), Ok("main".into()));
    assert_eq!(defaulted.identity(&with_tenant(Some("*")), 1, Source::Secret).map(|i| i.tenant), Ok("*".into()));
    assert!(cfg(&[("AUTH_SECRET", SECRET), ("AUTH_DEFAULT_TENANT", "*")]).is_err());
}

#[test]
fn claims_are_checked_against_time_issuer_and_audience() {
    let c = cfg(&[("AUTH_SECRET", SECRET)]).expect("cfg");
    let id = c.identity(&claims(100), 99, Source::Secret).expect("valid");
    assert_eq!(
        (id.subject.as_str(), id.tenant.as_str(), id.scopes.as_str(), id.expires_at),
        ("alice", "acme", "read", 100)
    );
    assert_eq!(c.identity(&claims(100), 100, Source::Secret), Err(AuthError::Invalid("the token has expired")));
    let nbf = |n| Claims { nbf: Some(n), ..claims(1_000) };
    assert!(c.identity(&nbf(500 + DEFAULT_LEEWAY_SECS), 500, Source::Secret).is_ok(), "within the leeway");
    assert_eq!(
        c.identity(&nbf(501 + DEFAULT_LEEWAY_SECS), 500, Source::Secret),
        Err(AuthError::Invalid("the token is not valid yet"))
    );
    let strict =
        cfg(&[("AUTH_SECRET", SECRET), ("AUTH_ISSUER", "https://idp"), ("AUTH_AUDIENCE", "proxy")]).expect("cfg");
    let good = Claims { iss: Some("https://idp".into()), aud: vec!["other".into(), "proxy".into()], ..claims(100) };
    assert!(strict.identity(&good, 1, Source::Secret).is_ok());
    assert_eq!(
        strict.identity(&Claims { iss: None, ..good.clone() }, 1, Source::Secret),
        Err(AuthError::Invalid("wrong issuer"))
    );
    assert_eq!(
        strict.identity(&Claims { aud: vec![], ..good }, 1, Source::Secret),
        Err(AuthError::Invalid("wrong audience"))
    );
    let no_tenant = c.identity(&Claims { tenant: None, ..claims(100) }, 1, Source::Secret);
    assert_eq!(no_tenant.map_err(|e| e.status()), Err(403), "a token names its tenant");
}

#[test]
fn routes_need_the_tenant_and_a_scope_and_stats_needs_admin() {
    let c = cfg(&[("AUTH_SECRET", SECRET)]).expect("cfg");
    let id = c.identity(&claims(100), 1, Source::Secret).expect("valid");
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
