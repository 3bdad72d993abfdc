//! `test-client bench --only coldstart`: the first request through a fresh snippet, split
//! into what it waits for — the upstream's connect, the Durable Object's start, the
//! request itself — against the backend reached directly. Each part is a difference of
//! round trips taken in the same run:
//!
//! * a warm request (`warm`): the snippet's upstream and the object are up;
//! * a tenant the snippet has not seen (`new_tenant`): a connect, then the object's first
//!   start, then the request;
//! * directly, a tenant whose object has not started (`direct_new`), then again
//!   (`direct_warm`): the object's start alone is the difference.
//!
//! So upstream connect ≈ (new_tenant − warm) − (direct_new − direct_warm). The wasm
//! instantiation is not among these parts: `wrangler dev` instantiates the module at the
//! runtime's first request, which is the harness's readiness probe (`stack::wait_ready`),
//! before anything here can time it; the bench's "cold start: first reply after the runtime
//! is ready" row is what comes after it.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Map, Value};

use crate::bench::{row, Row};
use crate::stack::Stack;

/// Fresh tenants measured (each a new upstream and a new object); the median is reported.
const SAMPLES: usize = 5;

/// One JSON-RPC `ping` POSTed to `url`, timed.
async fn rpc(url: &str, token: &str) -> Result<Duration> {
    let started = Instant::now();
    let body = json!({ "jsonrpc": "2.0", "method": "ping", "id": 1 });
    let res = reqwest::Client::new().post(url).bearer_auth(token).json(&body).send().await?;
    anyhow::ensure!(res.status().is_success(), "{url}: HTTP {}", res.status());
    res.bytes().await?;
    Ok(started.elapsed())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub(crate) async fn run(stack: &Stack, rows: &mut Vec<Row>, raw: &mut Map<String, Value>) -> Result<()> {
    eprintln!("bench: cold start: {SAMPLES} fresh tenants, through the snippet and directly");
    let snippet = |t: &str| format!("{}/db/{t}/rpc", stack.snippet.origin());
    let direct = |t: &str| format!("{}/db/{t}/rpc", stack.backend.origin());
    let (ctok, btok) = (stack.client_token.as_str(), stack.token.as_str());
    // The snippet's first request of all (the default tenant): wasm warm, upstream new.
    let first = ms(rpc(&snippet("coldstart-first"), ctok).await?);
    let (mut warm, mut new_tenant, mut direct_new, mut direct_warm) = (vec![], vec![], vec![], vec![]);
    for i in 0..SAMPLES {
        new_tenant.push(ms(rpc(&snippet(&format!("coldstart-s{i}")), ctok).await?));
        warm.push(ms(rpc(&snippet(&format!("coldstart-s{i}")), ctok).await?));
        direct_new.push(ms(rpc(&direct(&format!("coldstart-d{i}")), btok).await?));
        direct_warm.push(ms(rpc(&direct(&format!("coldstart-d{i}")), btok).await?));
    }
    let [w, n, dn, dw] = [warm, new_tenant, direct_new, direct_warm].map(median);
    let object_start = dn - dw;
    let connect = (n - w) - object_start;
    let f = |x: f64| format!("{x:.2} ms");
    let mut add = |name: &str, s: String, d: String| rows.push(row(name, s, d, None, "reported", None));
    add("cold start: a new tenant's first request (connect + object start + request) vs direct (object start + request)", f(n), f(dn));
    add("cold start split: upstream connect (new tenant − warm, less the object's start)", f(connect), String::new());
    add("cold start split: Durable Object start (direct: new object − warm)", f(object_start), f(object_start));
    add("cold start split: the request itself (warm)", f(w), f(dw));
    add("cold start: the snippet's very first upstream request after the runtime is ready", f(first), String::new());
    raw.insert(
        "coldStart".into(),
        json!({ "samples": SAMPLES, "firstMs": first, "warmMs": w, "newTenantMs": n, "directNewMs": dn, "directWarmMs": dw,
                "objectStartMs": object_start, "connectMs": connect }),
    );
    Ok(())
}
