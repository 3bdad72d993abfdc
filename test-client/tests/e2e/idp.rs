//! Identity providers' tokens (SECURITY.md, "Identity providers"): keys and tokens made by
//! an independent implementation (`jose`, under Node), key sets served by a local
//! key-set server (`test_client::keyserver`) that rotates, fails, stalls and serves
//! garbage, and counts what the snippet fetches. Each test keeps a bystander connected
//! throughout and checks it is still answered at the end.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use test_client::jose::{self, JoseKey, SignJob};
use test_client::keyserver::{KeyServer, Mode};
use test_client::stack::{now_secs, repo_root, Stack};
use test_client::token;

use crate::common::*;

const ISS_A: &str = "https://a.idp.test/";
const ISS_B: &str = "https://b.idp.test/";
/// An Auth0-style namespaced tenant claim, and Auth0's permissions array for scopes.
const TENANT_CLAIM: &str = "https://snippet-proxy.test/tenant";
const AUDIENCE: &str = "https://api.snippet-proxy.test";

/// Claims as a provider issues them (tenant and scopes where the stack is told to look).
fn provider_claims(iss: Option<&str>, sub: &str, tenant: Option<&str>, permissions: &[&str]) -> Value {
    let now = now_secs();
    let mut c = json!({ "sub": sub, "aud": [AUDIENCE, "https://a.idp.test/userinfo"], "iat": now, "exp": now + 600,
        "scope": "openid profile", "permissions": permissions });
    if let Some(iss) = iss {
        c["iss"] = iss.into();
    }
    if let Some(t) = tenant {
        c[TENANT_CLAIM] = t.into();
    }
    c
}

/// POST a ping with a bearer token: (status, `Retry-After`, body).
async fn ping(stack: &Stack, token: &str) -> (u16, Option<String>, Value) {
    let res = reqwest::Client::new()
        .post(format!("{}/rpc", stack.snippet.http()))
        .bearer_auth(token)
        .json(&json!({ "jsonrpc": "2.0", "method": "ping", "id": 1 }))
        .send()
        .await
        .expect("POST");
    let status = res.status().as_u16();
    let retry = res.headers().get("Retry-After").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let text = res.text().await.expect("body");
    (status, retry, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn status(stack: &Stack, token: &str) -> u16 {
    ping(stack, token).await.0
}

/// The bystander is still answered, and nobody caused a second upstream.
async fn still_fine(stack: &Stack, ws: &mut Ws) {
    assert_eq!(rpc(ws, "echo", json!(["still here"]), 99).await["result"], json!(["still here"]));
    let stats = stack.snippet_stats().await.expect("stats");
    assert_eq!(n(&stats, "backendConnects"), 1, "{stats}");
}

/// `token` with its header's `kid` replaced (the signature no longer matters: the key
/// lookup comes first).
fn with_kid(token: &str, alg: &str, kid: &str) -> String {
    let rest = token.split_once('.').map(|(_, r)| r).unwrap_or_default();
    let header = json!({ "alg": alg, "typ": "JWT", "kid": kid }).to_string();
    format!("{}.{rest}", token::b64url(header.as_bytes()))
}

#[test]
fn provider_tokens_of_every_algorithm_verify_and_issuers_sharing_a_kid_cannot_cross() {
    let root = repo_root().expect("root");
    let a = jose::generate(&root, &[("RS256", "rs1"), ("PS256", "ps1"), ("ES256", "es1"), ("EdDSA", "ed1")], 2048)
        .expect("jose keys");
    // Issuer B publishes a key under the same kid as A's RS256 key.
    let b = jose::generate(&root, &[("RS256", "rs1")], 2048).expect("jose keys").remove(0);
    // `test-client token --alg EdDSA --key FILE` makes its key on first use: the static set.
    let dir = std::env::temp_dir().join(format!("idp-e2e-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).expect("dir");
    let cli = |alg: &str, claims: &[String]| token::TokenOpts {
        sub: "cli".into(),
        tenant: "default".into(),
        scope: "read".into(),
        ttl: 600,
        secret: None,
        iss: None,
        aud: Some(AUDIENCE.into()),
        alg: alg.into(),
        key: Some(dir.join("cli-key.json")),
        claims: claims.to_vec(),
    };
    let cli_claims = [format!("{TENANT_CLAIM}=default"), "permissions=[\"read\"]".to_owned()];
    let cli_token = token::mint(cli("EdDSA", &cli_claims)).expect("test-client token --alg EdDSA").token;
    let cli_set: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cli-key.jwks.json")).expect("public set"))
            .expect("json");
    // Beside it, keys the snippet does not verify with: they are skipped, and said so once.
    let short = json!({ "kty": "RSA", "kid": "short", "e": "AQAB", "n": token::b64url(&[0xc5; 128]) });
    let enc = json!({ "kty": "RSA", "kid": "enc1", "use": "enc", "e": "AQAB", "n": a[0].public["n"] });
    let static_set = json!({ "keys": [cli_set["keys"][0], short, enc] }).to_string();

    // The key-set server runs on a runtime of its own, beside the test body's.
    let rt = runtime();
    let server = rt.block_on(KeyServer::start()).expect("key server");
    server.set("/a/jwks.json", jose::key_set(&a.iter().collect::<Vec<_>>()));
    server.set("/b/jwks.json", jose::key_set(&[&b]));
    let urls = format!("{ISS_A}={} {ISS_B}={}", server.url("/a/jwks.json"), server.url("/b/jwks.json"));
    let vars = [
        ("AUTH_JWKS_URL", urls.as_str()),
        ("AUTH_JWKS", static_set.as_str()),
        ("AUTH_TENANT_CLAIM", TENANT_CLAIM),
        ("AUTH_SCOPES_CLAIM", "permissions"),
        ("AUTH_AUDIENCE", AUDIENCE),
        // The stack's own operator token names its tenant in `tenant`, not the mapped claim.
        ("STATS_PUBLIC", "true"),
    ];
    e2e().vars(&vars).run(async |stack| {
        let secret = stack.auth_secret.as_bytes();
        let by_token =
            token::hs256(secret, &provider_claims(None, "bystander", Some("default"), &["read", "write", "publish"]));
        let mut by = ws_connect(&format!("{}/ws", stack.snippet.ws()), Some(&by_token)).await.expect("bystander");
        assert_eq!(rpc(&mut by, "ping", json!([]), 1).await["result"], "pong");

        let claims = |key: &JoseKey| provider_claims(Some(ISS_A), &key.kid, Some("default"), &["read"]);
        let jobs: Vec<SignJob> = a.iter().map(|k| SignJob::new(k, &claims(k))).collect();
        let tokens = jose::sign(&root, &jobs).expect("jose tokens");

        // A cold isolate, 16 requests at once for issuer A's set: one fetch.
        let started = Instant::now();
        let first: Vec<_> = (0..16)
            .map(|i| {
                let t = tokens[i % tokens.len()].clone();
                let url = format!("{}/rpc", stack.snippet.http());
                tokio::spawn(async move {
                    post(&url, Some(&t), &json!({"jsonrpc": "2.0", "method": "ping", "id": 1})).await
                })
            })
            .collect();
        for (i, f) in first.into_iter().enumerate() {
            let (s, body) = f.await.expect("task");
            assert_eq!(s, 200, "{}: {body}", a[i % a.len()].alg);
        }
        eprintln!(
            "16 concurrent first requests: {:?}, set A fetched {} time(s)",
            started.elapsed(),
            server.fetches("/a/jwks.json")
        );
        assert_eq!(server.fetches("/a/jwks.json"), 1, "concurrent requests share one fetch");

        // Every algorithm, over HTTP and on an upgrade (token in the query, as browsers do).
        for (key, t) in a.iter().zip(&tokens) {
            assert_eq!(status(stack, t).await, 200, "{}", key.alg);
            let mut ws = ws_connect(&format!("{}/ws?access_token={t}", stack.snippet.ws()), None).await.expect("ws");
            assert_eq!(rpc(&mut ws, "whoami", json!([]), 2).await["result"]["subject"], json!(key.kid), "{}", key.alg);
            // An orderly close on both sides (a dropped socket makes the runtime log noise).
            let _ = ws.close(None).await;
            assert!(close_frame(&mut ws, 5).await.is_some(), "{}: the close is answered", key.alg);
        }

        // Two issuers, one kid: each token is checked against its own issuer's set only.
        let b_as_a = SignJob::new(&b, &claims(&b));
        let b_own = SignJob::new(&b, &provider_claims(Some(ISS_B), "b-user", Some("default"), &["read"]));
        let a_as_b = SignJob::new(&a[0], &provider_claims(Some(ISS_B), "a-user", Some("default"), &["read"]));
        // The key decides the algorithm: A's RS256 key (its JWK says RS256) asked for PS256,
        // and an ES256 token naming an RSA key's kid.
        let mut rsa_as_pss = SignJob::new(&a[0], &claims(&a[0]));
        rsa_as_pss.alg = "PS256".into();
        if let Some(k) = rsa_as_pss.key.as_object_mut() {
            k.remove("alg");
        }
        let mut es_as_rs = SignJob::new(&a[2], &claims(&a[2]));
        es_as_rs.kid = Some("rs1".into());
        let crossing = jose::sign(&root, &[b_as_a, b_own, a_as_b, rsa_as_pss, es_as_rs]).expect("jose tokens");
        let [b_as_a, b_own, a_as_b, rsa_as_pss, es_as_rs] = <[String; 5]>::try_from(crossing).expect("five");
        assert_eq!(status(stack, &b_as_a).await, 401, "B's key cannot sign for A");
        assert_eq!(status(stack, &a_as_b).await, 401, "A's key cannot sign for B");
        assert_eq!(status(stack, &b_own).await, 200, "B's own token");
        assert_eq!(status(stack, &rsa_as_pss).await, 401, "an RS256 key does not verify PS256");
        assert_eq!(status(stack, &es_as_rs).await, 401, "an RSA key's kid does not make ES256 verify");
        assert_eq!((server.fetches("/a/jwks.json"), server.fetches("/b/jwks.json")), (1, 1));

        // Claims as the provider issues them: the mapped tenant and permissions only.
        let mapped = [
            ("a namespaced tenant of every tenant", provider_claims(Some(ISS_A), "x", Some("*"), &["read"]), 403),
            ("no tenant claim", provider_claims(Some(ISS_A), "x", None, &["read"]), 403),
            ("another tenant", provider_claims(Some(ISS_A), "x", Some("other"), &["read"]), 403),
            ("no permissions (scope is not read)", provider_claims(Some(ISS_A), "x", Some("default"), &[]), 403),
            (
                "the snippet's own tenant claim is not read",
                {
                    let mut c = provider_claims(Some(ISS_A), "x", None, &["read"]);
                    c["tenant"] = "*".into();
                    c
                },
                403,
            ),
        ];
        let jobs: Vec<SignJob> = mapped.iter().map(|(_, c, _)| SignJob::new(&a[0], c)).collect();
        for ((what, _, want), t) in mapped.iter().zip(jose::sign(&root, &jobs).expect("tokens")) {
            let (got, _, body) = ping(stack, &t).await;
            assert_eq!(got, *want, "{what}: {body}");
        }

        // The static set's one usable key (made by `test-client token`) verifies a token
        // without an issuer.
        assert_eq!(status(stack, &cli_token).await, 200, "test-client token --alg EdDSA");
        still_fine(stack, &mut by).await;
        let stats = stack.snippet_stats().await.expect("stats");
        assert_eq!((n(&stats, "jwksFetches"), n(&stats, "jwksFetchFailures")), (2, 0), "{stats}");
        let log = stack.snippet.log();
        let skipped: Vec<&str> = log.lines().filter(|l| l.contains("AUTH_JWKS: skipped")).collect();
        assert_eq!(skipped.len(), 1, "one line at load: {skipped:?}");
        assert!(skipped[0].contains("1024 bits") && skipped[0].contains("enc"), "{}", skipped[0]);
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_remote_set_rotates_survives_floods_and_outages_then_refuses_with_503() {
    let root = repo_root().expect("root");
    let keys = jose::generate(&root, &[("RS256", "k1"), ("RS256", "k2")], 2048).expect("jose keys");
    let (k1, k2) = (&keys[0], &keys[1]);
    let rt = runtime();
    let server = rt.block_on(KeyServer::start()).expect("key server");
    let path = "/jwks.json";
    server.set(path, jose::key_set(&[k1]));
    server.max_age(Some(1));
    let urls = format!("{ISS_A}={}", server.url(path));
    // A 2 s cooldown (the floor of freshness too) and a 4 s stale window, to see each in seconds.
    let vars = [("AUTH_JWKS_URL", urls.as_str()), ("AUTH_JWKS_COOLDOWN_SECS", "2"), ("AUTH_JWKS_STALE_SECS", "4")];
    let cooldown = Duration::from_millis(2_100);
    e2e().vars(&vars).run(async |stack| {
        let mut by = bystander(stack).await;
        let claims = |sub: &str| token::claims(sub, "default", "read", 600, now_secs());
        let with_iss = |sub: &str| {
            let mut c = claims(sub);
            c["iss"] = ISS_A.into();
            c
        };
        let t = jose::sign(&root, &[SignJob::new(k1, &with_iss("one")), SignJob::new(k2, &with_iss("two"))])
            .expect("tokens");
        let (t1, t2) = (&t[0], &t[1]);
        assert_eq!(status(stack, t1).await, 200);
        assert_eq!(server.fetches(path), 1);

        // Rotation: the provider replaces k1 by k2; no restart.
        server.set(path, jose::key_set(&[k2]));
        tokio::time::sleep(cooldown).await;
        assert_eq!(status(stack, t2).await, 200, "the new key is picked up");
        assert_eq!(status(stack, t1).await, 401, "the withdrawn key no longer vouches, cached or not");
        assert_eq!(server.fetches(path), 2);

        // A flood of made-up kids: at most one fetch per cooldown.
        let before = server.fetches(path);
        let flood_for = Duration::from_secs(5);
        let started = Instant::now();
        let workers: Vec<_> = (0..8)
            .map(|w| {
                let (url, t2) = (format!("{}/rpc", stack.snippet.http()), t2.clone());
                tokio::spawn(async move {
                    let (mut sent, mut refused) = (0u64, 0u64);
                    while started.elapsed() < flood_for {
                        let fake = with_kid(&t2, "RS256", &format!("made-up-{w}-{sent}"));
                        let (s, _) = post(&url, Some(&fake), &json!({"jsonrpc": "2.0", "method": "ping", "id": 1})).await;
                        sent += 1;
                        refused += u64::from(s == 401);
                    }
                    (sent, refused)
                })
            })
            .collect();
        let (mut sent, mut refused) = (0, 0);
        for w in workers {
            let (s, r) = w.await.expect("worker");
            sent += s;
            refused += r;
        }
        let flood_fetches = server.fetches(path) - before;
        eprintln!("unknown-kid flood: {sent} requests in {:?}, {refused} refused 401, {flood_fetches} fetches", started.elapsed());
        assert_eq!(refused, sent, "every made-up kid is refused");
        assert!(flood_fetches <= 3, "5 s at a 2 s cooldown: {flood_fetches} fetches");
        assert_eq!(status(stack, t2).await, 200, "the real key works throughout");

        // The provider fails: the last good keys serve for the stale window, then 503.
        server.mode(Mode::Status(500));
        let before = server.fetches(path);
        let outage = Instant::now();
        let (first_503, retry) = loop {
            let (s, retry, body) = ping(stack, t2).await;
            match s {
                200 => {}
                503 => break (outage.elapsed(), retry),
                other => panic!("during the outage: {other} {body}"),
            }
            assert!(outage.elapsed() < Duration::from_secs(10), "still served after 10 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let outage_fetches = server.fetches(path) - before;
        eprintln!("outage: served from the last good keys for {first_503:?}, then 503 (Retry-After {retry:?}); {outage_fetches} fetches");
        assert!(first_503 >= Duration::from_millis(3_500), "the stale window is 4 s: {first_503:?}");
        assert!(first_503 <= Duration::from_millis(7_500), "freshness (≤ 2 s) + stale (4 s): {first_503:?}");
        assert!(retry.is_some(), "503 says when to retry");
        assert!(outage_fetches as f64 <= first_503.as_secs_f64() / 2.0 + 1.0, "{outage_fetches} fetches");

        // Garbage is a failure too.
        server.mode(Mode::Garbage);
        tokio::time::sleep(cooldown).await;
        assert_eq!(status(stack, t2).await, 503, "garbage keeps the refusal");

        // A stalled provider: the fetcher gives up at 5 s, and those who waited on it hear at once.
        server.mode(Mode::Stall);
        tokio::time::sleep(cooldown).await;
        let before = server.fetches(path);
        let stalled = Instant::now();
        let waiting: Vec<_> = (0..6)
            .map(|_| {
                let (url, t2) = (format!("{}/rpc", stack.snippet.http()), t2.clone());
                tokio::spawn(async move {
                    let t = Instant::now();
                    let (s, _) = post(&url, Some(&t2), &json!({"jsonrpc": "2.0", "method": "ping", "id": 1})).await;
                    (s, t.elapsed())
                })
            })
            .collect();
        for w in waiting {
            let (s, took) = w.await.expect("task");
            assert_eq!(s, 503);
            assert!(took >= Duration::from_millis(4_500) && took < Duration::from_millis(7_000), "{took:?}");
        }
        eprintln!("stalled provider: 6 concurrent requests answered 503 after {:?}, {} fetch(es)", stalled.elapsed(), server.fetches(path) - before);
        assert_eq!(server.fetches(path) - before, 1, "one fetch for all six");

        // The provider is back: service resumes at the next attempt.
        server.mode(Mode::Serve);
        tokio::time::sleep(cooldown).await;
        assert_eq!(status(stack, t2).await, 200, "back");
        still_fine(stack, &mut by).await;
    });
}
