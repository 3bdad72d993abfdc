//! The proxy path: many clients over one upstream, under workerd's context rules.

use serde_json::Value;
use test_client::load::{self, LoadOpts, Method};
use test_client::stack::Stack;

use crate::common::*;

/// 8 clients × 200 random text and binary messages through one upstream.
fn eight_echo_clients(stack: &Stack) -> LoadOpts {
    LoadOpts {
        clients: 8,
        messages: 200,
        method: Method::Raw,
        payload: 256,
        ..client_load(stack, format!("{}/ws/echo", stack.snippet.ws()))
    }
}

/// On the shared stack, under a tenant of its own: the counters below are what it did.
#[test]
fn concurrent_clients_each_get_exactly_their_own_replies_over_one_upstream() {
    e2e().tenant("own-replies").run(async |stack| {
        let start = stack.snippet_stats().await.expect("stats");
        let report = load::run(eight_echo_clients(stack), false).await.expect("load runs");
        assert_passed(&report, 1600);

        // JSON-RPC clients that all use the same ids get only their own replies too.
        let rpc = LoadOpts {
            clients: 8,
            messages: 100,
            in_flight: 4,
            method: Method::Echo,
            ..client_load(stack, format!("{}/ws", stack.snippet.ws()))
        };
        assert_passed(&load::run(rpc, false).await.expect("load runs"), 800);

        let stats = stats_until(stack, |s| s["activeClients"] == 0).await;
        assert_eq!(n(&stats, "activeClients"), 0, "{stats}");
        let grew = |field| delta(&start, &stats, field);
        assert_eq!(grew("backendConnects"), 1, "one upstream for everyone: {stats}");
        assert_eq!(grew("wsUpgrades"), 16, "{stats}");
        assert_eq!(errors_of("own-replies", &start, &stats), 0, "{stats}");
        assert_eq!(grew("messagesUp"), 2400, "{stats}");
        assert_eq!(grew("messagesDown"), 2400, "{stats}");
        assert_eq!(grew("messagesProxied"), 4800, "{stats}");
        assert_eq!(upstream(&stats, "own-replies")["connected"], true, "{stats}");
    });
}

/// RUNTIME.md §2: once V8 has optimised the promise path, promises made with
/// `new Promise(executor)` lose their request context. Warm the executor's real wake
/// path with 200,000 promises, then check cross-request wakes still land right.
#[test]
fn cross_request_wakes_still_land_after_200k_wake_promises() {
    e2e().vars(&[("SNIPPET_TEST_ROUTES", "1")]).run(async |stack| {
        assert_passed(&load::run(eight_echo_clients(stack), false).await.expect("load runs"), 1600);
        let warm: Value = reqwest::Client::new()
            .get(format!("{}/__test/warm?n=200000", stack.snippet.origin()))
            .bearer_auth(&stack.admin_token)
            .send()
            .await
            .expect("warm route")
            .json()
            .await
            .expect("json");
        assert!(n(&warm, "wakePromises") >= 200_000, "{warm}");
        let before = stack.snippet_stats().await.expect("stats");
        assert!(n(&before, "wakePromises") >= 200_000, "{before}");

        assert_passed(&load::run(eight_echo_clients(stack), false).await.expect("load runs"), 1600);
        // And HTTP requests, each woken from the owner's context, alongside.
        let http = LoadOpts {
            clients: 4,
            messages: 50,
            in_flight: 4,
            method: Method::Ping,
            ..client_load(stack, format!("{}/rpc", stack.snippet.http()))
        };
        assert_passed(&load::run(http, false).await.expect("load runs"), 200);

        let stats = stats_until(stack, |s| s["activeClients"] == 0).await;
        assert_eq!(n(&stats, "backendConnects"), 1, "{stats}");
        assert_eq!(n(&stats, "activeClients"), 0, "{stats}");
        assert_eq!(n(&stats, "errors"), 0, "{stats}");
    });
}

/// On the shared stack, under a tenant of its own: the counters below are what it did.
#[test]
fn websocket_clients_and_200_concurrent_http_requests_share_one_upstream() {
    e2e().tenant("ws-and-http").run(async |stack| {
        let start = stack.snippet_stats().await.expect("stats");
        let ws = LoadOpts {
            clients: 16,
            messages: 100,
            in_flight: 2,
            method: Method::Echo,
            ..client_load(stack, format!("{}/ws", stack.snippet.ws()))
        };
        // 50 clients × 4 in flight = 200 HTTP requests at once, 5 rounds.
        let http = LoadOpts {
            clients: 50,
            messages: 20,
            in_flight: 4,
            method: Method::Sql,
            ..client_load(stack, format!("{}/rpc", stack.snippet.http()))
        };
        let (a, b) = tokio::join!(load::run(ws, false), load::run(http, false));
        assert_passed(&a.expect("ws load"), 1600);
        assert_passed(&b.expect("http load"), 1000);
        let stats = stats_until(stack, |s| s["activeClients"] == 0 && s["pendingRequests"] == 0).await;
        assert_eq!(delta(&start, &stats, "backendConnects"), 1, "{stats}");
        assert_eq!(delta(&start, &stats, "httpProxied"), 1000, "{stats}");
        assert_eq!(n(&stats, "pendingRequests"), 0, "{stats}");
        assert_eq!(errors_of("ws-and-http", &start, &stats), 0, "{stats}");
    });
}
