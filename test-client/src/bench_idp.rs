//! The benchmark's identity-provider section: what verifying a token costs per algorithm
//! (a token's first check, and a cached one), and the first request's extra latency when
//! an isolate must fetch its issuer's key set. Keys and tokens come from `jose`; the key
//! set from a local key-set server on loopback.

use std::time::Instant;

use anyhow::Result;
use serde_json::{json, Value};

use crate::bench::{http_p50, row, Row, UNLIMITED};
use crate::jose::{self, SignJob};
use crate::keyserver::KeyServer;
use crate::stack::{now_secs, repo_root, Stack, Worker};

const ISSUER: &str = "https://bench.idp.test/";

/// One sequential request with `token`, in ms.
async fn one(url: &str, token: &str) -> Result<f64> {
    let started = Instant::now();
    let res = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .json(&json!({ "jsonrpc": "2.0", "method": "ping", "id": 1 }))
        .send()
        .await?;
    anyhow::ensure!(res.status().is_success(), "POST {url}: HTTP {}", res.status());
    let _ = res.bytes().await?;
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

/// Runs the section on a snippet of its own (anonymous callers allowed, so the same
/// isolate answers with and without a token), `n` tokens per algorithm.
pub(crate) async fn run(
    stack: &Stack,
    rows: &mut Vec<Row>,
    raw: &mut serde_json::Map<String, Value>,
    n: usize,
) -> Result<()> {
    let root = repo_root()?;
    let specs = [("RS256", "rs"), ("PS256", "ps"), ("ES256", "es"), ("EdDSA", "ed")];
    let keys = tokio::task::block_in_place(|| jose::generate(&root, &specs, 2048))?;
    let server = KeyServer::start().await?;
    server.set("/jwks.json", jose::key_set(&keys.iter().collect::<Vec<_>>()));
    let urls = format!("{ISSUER}={}", server.url("/jwks.json"));
    let vars = [UNLIMITED, &[("ALLOW_ANONYMOUS", "true"), ("AUTH_JWKS_URL", urls.as_str())]].concat();
    let worker: Worker = tokio::task::block_in_place(|| stack.extra_snippet("idp", &vars))?;
    let rpc = format!("{}/rpc", worker.http());
    let now = now_secs();
    let claims = |alg: &str, i: usize| {
        let mut c = crate::token::claims(&format!("bench-{alg}-{i}-{}", fastrand::u32(..)), "*", "read", 3600, now);
        c["iss"] = ISSUER.into();
        c
    };
    let jobs: Vec<SignJob> = keys
        .iter()
        .flat_map(|k| (0..n + 2).map(move |i| (k, i)))
        .map(|(k, i)| SignJob::new(k, &claims(&k.alg, i)))
        .collect();
    let signed = tokio::task::block_in_place(|| jose::sign(&root, &jobs))?;
    let tokens: Vec<&[String]> = signed.chunks(n + 2).collect();

    // Warm the isolate and its upstream first (anonymously), so that the first token
    // below costs what its key set costs and nothing else. Then the isolate's first RS256
    // token: the set is fetched, the key imported, the token verified; its second new
    // token: only verified.
    let _warm = http_p50(&rpc, (0..n).map(|_| None)).await?;
    let rs = tokens.first().copied().unwrap_or_default();
    let (first, second) = match rs {
        [a, b, ..] => (one(&rpc, a).await?, one(&rpc, b).await?),
        _ => anyhow::bail!("no RS256 tokens"),
    };
    rows.push(row(
        "first request of an isolate for an issuer (key set fetched, key imported, RS256 verified) vs its next new token",
        format!("{first:.2} ms"),
        format!("{second:.2} ms"),
        Some(first / second.max(1e-9)),
        "",
        None,
    ));
    let before = http_p50(&rpc, (0..n).map(|_| None)).await?;
    let mut fresh_and_reused = Vec::new();
    for toks in &tokens {
        let fresh = http_p50(&rpc, toks.iter().skip(2).map(|t| Some(t.as_str()))).await?;
        let reused = http_p50(&rpc, (0..n).map(|_| toks.get(2).map(String::as_str))).await?;
        fresh_and_reused.push((fresh, reused));
    }
    let hs: Vec<String> =
        (0..n).map(|i| stack.mint(&format!("bench-hs-{i}-{}", fastrand::u32(..)), "*", "read", 3600)).collect();
    let hs_fresh = http_p50(&rpc, hs.iter().map(|t| Some(t.as_str()))).await?;
    // Anonymous before and after the tokens: their mean is the baseline, so a drift of the
    // machine over the section does not favour the algorithms measured last.
    let after = http_p50(&rpc, (0..n).map(|_| None)).await?;
    let anonymous = (before + after) / 2.0;
    let mut per_alg = serde_json::Map::new();
    for ((alg, _), (fresh, reused)) in specs.iter().zip(fresh_and_reused) {
        rows.push(row(
            &format!("HTTP /rpc p50, sequential: a new {alg} token each request (verified) vs anonymous"),
            format!("{fresh:.3} ms"),
            format!("{anonymous:.3} ms"),
            Some(fresh / anonymous.max(1e-9)),
            "",
            None,
        ));
        rows.push(row(
            &format!("HTTP /rpc p50, sequential: one {alg} token reused (cached) vs anonymous"),
            format!("{reused:.3} ms"),
            format!("{anonymous:.3} ms"),
            Some(reused / anonymous.max(1e-9)),
            "",
            None,
        ));
        per_alg.insert((*alg).into(), json!({ "freshP50Ms": fresh, "reusedP50Ms": reused }));
    }
    per_alg.insert("HS256".into(), json!({ "freshP50Ms": hs_fresh }));
    rows.push(row(
        "HTTP /rpc p50, sequential: a new HS256 token each request (verified) vs anonymous",
        format!("{hs_fresh:.3} ms"),
        format!("{anonymous:.3} ms"),
        Some(hs_fresh / anonymous.max(1e-9)),
        "",
        None,
    ));
    raw.insert(
        "identityProviders".into(),
        json!({
            "firstRequestMs": first, "nextNewTokenMs": second, "anonymousP50Ms": [before, after],
            "perAlgorithm": per_alg, "keySetFetches": server.fetches("/jwks.json"), "tokensPerAlgorithm": n,
        }),
    );
    drop(worker);
    Ok(())
}
