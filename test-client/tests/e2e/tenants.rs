//! Many tenants through one snippet: one upstream per tenant's Durable Object, the pool's
//! bounds, one tenant's outage kept from the others, the heartbeat against a frozen
//! backend, and keep-warm through the scheduled handler.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::{json, Value};
use test_client::stack::{Stack, RUNTIME_CLOSE_NOISE};
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

/// `ws://…/db/{tenant}{route}` on the snippet.
fn ws_url(stack: &Stack, tenant: &str, route: &str) -> String {
    format!("{}/db/{tenant}{route}", stack.snippet.origin().replacen("http", "ws", 1))
}

fn http_url(stack: &Stack, tenant: &str, route: &str) -> String {
    format!("{}/db/{tenant}{route}", stack.snippet.origin())
}

/// On the shared stack: its tenants `room-*` are this test's alone, and the counters are
/// what it did.
#[test]
fn twenty_tenants_each_get_one_upstream_and_only_their_own_database() {
    e2e().run(async |stack| {
        let start = stack.snippet_stats().await.expect("stats");
        let tenants: Vec<String> = (0..20).map(|i| format!("room-{i}")).collect();
        let mut clients = Vec::new();
        for t in &tenants {
            for c in 0..2 {
                let mut ws = ws_connect(&ws_url(stack, t, "/ws"), Some(&stack.client_token)).await.expect("ws");
                let tag = format!("{t}/{c}");
                assert_eq!(rpc(&mut ws, "echo", json!([tag]), 1).await["result"], json!([tag]));
                clients.push(ws);
            }
            // Each tenant's SQL lands in its own Durable Object.
            let q = |sql: &str, params: Value| json!({ "sql": sql, "params": params });
            let url = http_url(stack, t, "/query");
            let tok = Some(stack.client_token.as_str());
            assert_eq!(post(&url, tok, &q("create table if not exists who (name text)", json!([]))).await.0, 200);
            assert_eq!(post(&url, tok, &q("insert into who values (?)", json!([t]))).await.0, 200);
            let (status, rows) = post(&url, tok, &q("select name from who", json!([]))).await;
            assert_eq!(status, 200, "{rows}");
            assert_eq!(rows["rows"], json!([[t]]), "tenant {t} sees only its own rows");
        }
        let s = stack.snippet_stats().await.expect("stats");
        assert_eq!(delta(&start, &s, "backendConnects"), 20, "one upstream per tenant: {s}");
        assert_eq!(n(&s, "activeClients"), 40, "{s}");
        // Other tests' upstreams may still be open, idle: the rooms are counted.
        let listed = s["upstreams"].as_array().expect("upstreams");
        let rooms: Vec<&Value> = listed.iter().filter(|u| tenants.iter().any(|t| u["tenant"] == t.as_str())).collect();
        assert_eq!(rooms.len(), 20, "{s}");
        assert!(rooms.iter().all(|u| u["connected"] == true && u["streams"] == 2), "{s}");
        for t in ["room-0", "room-19"] {
            let d = do_stats(stack, t).await;
            assert_eq!(d["sockets"], 1, "the object of {t} sees one socket for its two clients: {d}");
        }
        clients.into_iter().for_each(park);
    });
}

#[test]
fn malformed_tenant_names_are_refused_with_400_before_any_upstream_work() {
    e2e().run(async |stack| {
        let start = stack.snippet_stats().await.expect("stats");
        let long = "x".repeat(65);
        for url in [ws_url(stack, "bad%20name", "/ws"), ws_url(stack, &long, "/ws/echo")] {
            assert_eq!(ws_connect(&url, Some(&stack.client_token)).await.err(), Some(400), "{url}");
        }
        let (status, body) = post(&http_url(stack, "a;b", "/rpc"), None, &json!({})).await;
        assert_eq!(status, 400, "refused before the door asks for a token: {body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("tenant names")), "{body}");
        let s = stack.snippet_stats().await.expect("stats");
        assert_eq!(delta(&start, &s, "connectAttempts"), 0, "{s}");
    });
}

#[test]
fn a_full_pool_refuses_a_new_tenant_with_503_until_a_slot_is_idle() {
    e2e().vars(&[("MAX_UPSTREAMS", "2")]).run(async |stack| {
        let tok = Some(stack.client_token.as_str());
        let mut a = ws_connect(&ws_url(stack, "a", "/ws"), tok).await.expect("a");
        let mut b = ws_connect(&ws_url(stack, "b", "/ws"), tok).await.expect("b");
        assert_eq!(rpc(&mut a, "ping", json!([]), 1).await["result"], "pong");
        assert_eq!(rpc(&mut b, "ping", json!([]), 1).await["result"], "pong");
        assert_eq!(ws_connect(&ws_url(stack, "c", "/ws"), tok).await.err(), Some(503), "refused before the upgrade");
        let res = reqwest::Client::new()
            .post(http_url(stack, "c", "/rpc"))
            .bearer_auth(&stack.client_token)
            .json(&json!({ "jsonrpc": "2.0", "method": "ping", "id": 1 }))
            .send()
            .await
            .expect("POST");
        assert_eq!(res.status().as_u16(), 503);
        assert!(res.headers().get("Retry-After").is_some(), "with a retry time");
        // The busy tenants are untouched; when a's client leaves, its slot is idle and c takes it.
        assert_eq!(rpc(&mut b, "ping", json!([]), 2).await["result"], "pong");
        close_politely(a).await;
        stats_until(stack, |s| s["activeClients"] == 1).await;
        let mut c = ws_connect(&ws_url(stack, "c", "/ws"), tok).await.expect("c gets a's slot");
        assert_eq!(rpc(&mut c, "ping", json!([]), 1).await["result"], "pong");
        assert_eq!(rpc(&mut b, "ping", json!([]), 3).await["result"], "pong");
        let s = stack.snippet_stats().await.expect("stats");
        assert_eq!(n(&s, "upstreamsOpen"), 2, "{s}");
        assert_eq!(n(&s, "poolEvictions"), 1, "{s}");
        assert_eq!(n(&s, "poolRefusals"), 2, "{s}");
        assert_eq!(n(&s, "errors"), 0, "{s}");
    });
}

/// A tenant whose backend refuses it (an operator's maintenance list) fails clearly, again
/// and again, while a client of another tenant on the same isolate is answered throughout.
#[test]
fn a_tenant_in_maintenance_never_errors_another_tenant() {
    e2e()
        .backend_vars(&[("MAINTENANCE_TENANTS", "down")])
        .vars(&[("RECONNECT_MAX_MS", "500")])
        // The snippet closes the clients of the tenant in maintenance with 1012 (RUNTIME.md §16).
        .tolerating(&[RUNTIME_CLOSE_NOISE])
        .run(async |stack| {
            let tok = stack.client_token.clone();
            let abuse = async {
                let mut outcomes = Vec::new();
                for i in 0..20 {
                    if i % 2 == 0 {
                        let mut ws = ws_connect(&ws_url(stack, "down", "/ws"), Some(&tok)).await.expect("upgrade");
                        let _ = ws.send(Message::Text(r#"{"jsonrpc":"2.0","method":"ping","id":1}"#.into())).await;
                        outcomes.push(format!("ws close {:?}", close_frame(&mut ws, 10).await.flatten().map(|c| c.0)));
                    } else {
                        let body = json!({ "jsonrpc": "2.0", "method": "ping", "id": 1 });
                        outcomes.push(format!(
                            "http {}",
                            post(&http_url(stack, "down", "/rpc"), Some(&tok), &body).await.0
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                outcomes
            };
            let (outcomes, unloaded, loaded) = with_bystander(stack, abuse).await;
            eprintln!("tenant down: {outcomes:?}; bystander p99 {loaded:.2} ms vs {unloaded:.2} ms");
            for o in &outcomes {
                assert!(
                    ["ws close Some(1012)", "http 502", "http 503"].contains(&o.as_str()),
                    "every call to the tenant in maintenance fails clearly: {outcomes:?}"
                );
            }
            let s = stack.snippet_stats().await.expect("stats");
            let up = |t: &str| s["upstreams"].as_array().and_then(|l| l.iter().find(|u| u["tenant"] == t)).cloned();
            let default = up("default").expect("listed");
            assert_eq!(default["errors"], 0, "{s}");
            assert_eq!(default["connected"], true, "{s}");
            assert!(up("down").is_some_and(|d| d["errors"].as_u64() > Some(0)), "{s}");
        });
}

/// A backend that stops answering (its process frozen, sockets open) is found by the
/// heartbeat within HEARTBEAT_MS + BACKEND_BUSY_MS: a request waiting on it gets a clear
/// 502 long before its own timeout, and the proxy reconnects once the backend answers again.
#[test]
fn a_frozen_backend_is_found_by_the_heartbeat_within_its_bound() {
    let vars = [
        ("HEARTBEAT_MS", "1000"),
        ("BACKEND_BUSY_MS", "1000"),
        ("REQUEST_TIMEOUT_MS", "20000"),
        ("RECONNECT_MAX_MS", "500"),
    ];
    e2e().vars(&vars).own_stack("freezes the backend").run(async |stack| {
        let mut ws = bystander(stack).await;
        stack.backend.freeze(true);
        let asked = Instant::now();
        let body = json!({ "jsonrpc": "2.0", "method": "ping", "id": 1 });
        let res = tokio::time::timeout(
            Duration::from_secs(10),
            post(&format!("{}/rpc", stack.snippet.http()), Some(&stack.client_token), &body),
        )
        .await;
        let waited = asked.elapsed();
        stack.backend.freeze(false);
        let (status, reply) = res.expect("answered within 10 s, not REQUEST_TIMEOUT_MS");
        eprintln!("frozen backend: {status} after {waited:?}: {reply}");
        assert_eq!(status, 502, "{reply}");
        assert!(waited < Duration::from_millis(4_000), "within HEARTBEAT_MS + BACKEND_BUSY_MS (+ slack): {waited:?}");
        assert_eq!(close_frame(&mut ws, 5).await.flatten().map(|c| c.0), Some(1012), "the client hears it too");
        let s = stats_until(stack, |s| s["heartbeatFailures"].as_u64() >= Some(1)).await;
        assert_eq!(n(&s, "heartbeatFailures"), 1, "{s}");
        // The backend answers again: a new client is served.
        let mut again = bystander(stack).await;
        assert_eq!(rpc(&mut again, "echo", json!(["back"]), 2).await["result"], json!(["back"]));
    });
}

/// Runs one scheduled round through the local runtime's trigger route and returns how
/// long the request took: the route answers once the handler and everything it keeps
/// alive with `waitUntil` (the upstreams it opened) are done.
async fn cron_round(stack: &Stack) -> Duration {
    let started = Instant::now();
    let url = format!("{}/cdn-cgi/handler/scheduled?cron=*+*+*+*+*", stack.snippet.origin());
    let res = tokio::time::timeout(Duration::from_secs(60), reqwest::get(url)).await;
    let res = res.expect("the scheduled round returns within 60 s").expect("GET");
    assert_eq!(res.status().as_u16(), 200, "{}", res.text().await.unwrap_or_default());
    started.elapsed()
}

/// Keep-warm and bounded owners, on one stack. A scheduled round pings the listed tenants
/// (opening their upstreams) and this isolate's hottest one. An HTTP request's or a
/// scheduled round's context owns an upstream for at most OWNER_LIFETIME_MS, even when
/// nobody else comes by: an upstream nothing uses is retired (and the round returns),
/// whether or not an idle client of another tenant is on the isolate. (A client's context
/// taking over an upstream its clients use is tested in the simulator and under load in
/// `resilience.rs`.)
#[test]
fn keep_warm_rounds_and_bounded_owners_let_go_within_their_lifetime_when_nobody_comes_by() {
    let lifetime = Duration::from_millis(3_000);
    let vars = [("OWNER_LIFETIME_MS", "3000"), ("KEEP_WARM_TENANTS", "warm-1,warm-2"), ("UPSTREAM_IDLE_MS", "60000")];
    e2e().vars(&vars).run(async |stack| {
        // One HTTP request, then quiet: retired, nothing left at the object.
        let ping = json!({ "jsonrpc": "2.0", "method": "ping", "id": 1 });
        let (status, v) = post(&http_url(stack, "http-1", "/rpc"), Some(&stack.client_token), &ping).await;
        assert_eq!(status, 200, "{v}");
        let s = stack.snippet_stats().await.expect("stats");
        assert_eq!(upstream(&s, "http-1")["ownerKind"], "http", "{s}");
        tokio::time::sleep(lifetime + Duration::from_millis(1_500)).await;
        let s = stack.snippet_stats().await.expect("stats");
        assert_eq!(upstream(&s, "http-1")["connected"], false, "retired with nobody coming by: {s}");
        assert!(n(&s, "retirements") >= 1, "{s}");
        assert_eq!(do_stats(stack, "http-1").await["sockets"], 0, "the object has no upstream left");

        // A round through `wrangler dev --test-scheduled`'s route (it answers as soon as the
        // handler returns): the listed tenants and the hottest one are pinged and answer,
        // and each listed tenant's object holds the snippet's upstream.
        let res = reqwest::get(format!("{}/__scheduled?cron=*+*+*+*+*", stack.snippet.origin())).await.expect("GET");
        assert_eq!(res.status().as_u16(), 200, "{}", res.text().await.unwrap_or_default());
        let s = stats_until(stack, |s| s["keepWarmPongs"].as_u64() >= Some(3)).await;
        assert_eq!((n(&s, "keepWarmPings"), n(&s, "keepWarmPongs")), (3, 3), "warm-1, warm-2 and http-1: {s}");
        for t in ["warm-1", "warm-2"] {
            assert_eq!(do_stats(stack, t).await["sockets"], 1, "{t}'s object has the snippet's upstream");
        }
        // Nobody comes by: the round's upstreams retire within its lifetime.
        tokio::time::sleep(lifetime + Duration::from_millis(1_500)).await;
        let s = stack.snippet_stats().await.expect("stats");
        for t in ["warm-1", "warm-2", "http-1"] {
            assert_eq!(upstream(&s, t)["connected"], false, "{t}: {s}");
        }

        // A round through the runtime's own route, which answers only when everything the
        // round keeps alive is done: with no client on the isolate it returns once its
        // upstreams retire.
        let took = cron_round(stack).await;
        eprintln!("scheduled round with no client: {took:?}");
        // Each round left its summary in the log as one JSON line, for the log search.
        let isolate = stack.snippet_stats().await.expect("stats")["isolateId"].as_str().map(str::to_owned);
        let rounds = logged(stack, 2, |l| l["msg"] == "cron round").await;
        assert_eq!(rounds.len(), 2, "one summary per round: {rounds:?}");
        for (i, r) in rounds.iter().enumerate() {
            assert_eq!((r["level"].as_str(), r["isolate"].as_str()), (Some("info"), isolate.as_deref()), "{r}");
            assert_eq!(r["round"], i as u64 + 1, "{r}");
            assert!(r["upstreams"].is_u64() && r["errors"].is_u64() && r["wasmMemoryBytes"].as_u64() > Some(0), "{r}");
        }
        assert_eq!(rounds[0]["pinged"], 3, "warm-1, warm-2 and http-1: {}", rounds[0]);
        assert!(took < lifetime + Duration::from_secs(3), "the round returned in {took:?}");

        // With an idle client of another tenant on the isolate the same holds: nothing uses
        // the round's upstreams, so no client takes them over; they retire, the round
        // returns, and the idle client is never touched.
        let mut idle = ws_connect(&ws_url(stack, "a", "/ws"), Some(&stack.client_token)).await.expect("ws");
        assert_eq!(rpc(&mut idle, "ping", json!([]), 1).await["result"], "pong");
        let took = cron_round(stack).await;
        eprintln!("scheduled round with an idle client elsewhere: {took:?}");
        assert!(took < lifetime + Duration::from_secs(3), "the round returned in {took:?}");
        let s = stack.snippet_stats().await.expect("stats");
        for t in ["warm-1", "warm-2"] {
            assert_eq!(upstream(&s, t)["connected"], false, "{t}: {s}");
        }
        assert_eq!(upstream(&s, "a")["ownerKind"], "websocket", "{s}");
        assert_eq!(rpc(&mut idle, "ping", json!([]), 2).await["result"], "pong", "the idle client was never touched");
        assert_eq!(n(&s, "errors"), 0, "{s}");
    });
}
