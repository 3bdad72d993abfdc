//! The upstream's owner leaving, and the backend going away mid-load.

use std::time::{Duration, Instant};

use serde_json::json;
use test_client::load::{self, LoadOpts, Method, Report};
use test_client::stack::RUNTIME_CLOSE_NOISE;

use crate::common::*;

/// Error kinds that are a clear answer, not a silent loss: a WebSocket closed with 1012
/// ("upstream lost, reconnect", which also tells the client its in-flight requests may be
/// lost), an HTTP 502 with a JSON error, and an HTTP 504 with a JSON error for a request
/// still waiting when `REQUEST_TIMEOUT_MS` passed (a restarting `wrangler dev` holds
/// connections to its port until its runtime is up, so a fallback sent to it meanwhile
/// can outlast the timeout).
const CLEAR_ERRORS: [&str; 4] = ["closed-1012", "in-flight-at-close", "http-502", "http-504"];

fn assert_only_clear_errors(r: &Report) {
    for (kind, count) in &r.errors {
        assert!(CLEAR_ERRORS.contains(&kind.as_str()), "{count} × {kind} is not a clear error:\n{}", r.to_text());
    }
    // `closed-*` counts connections; every other kind counts requests.
    let per_request: u64 = r.errors.iter().filter(|(k, _)| !k.starts_with("closed")).map(|(_, v)| v).sum();
    assert_eq!(r.ok + per_request, r.sent, "every request got a reply or an error:\n{}", r.to_text());
}

/// The client whose context owns the upstream leaves while others keep sending. On the
/// shared stack, under a tenant of its own: the first client opens its upstream, so owns it.
#[test]
fn the_owners_client_leaves_mid_stream_and_nothing_is_lost() {
    const TENANT: &str = "owner-leaves";
    // The owner's socket is dropped without a close handshake (RUNTIME.md §16).
    e2e().tenant(TENANT).tolerating(&[RUNTIME_CLOSE_NOISE]).run(async |stack| {
        let start = stack.snippet_stats().await.expect("stats");
        let url = format!("{}/ws", stack.snippet.ws());
        let mut owner = ws_connect(&url, Some(&stack.client_token)).await.expect("ws");
        assert_eq!(rpc(&mut owner, "ping", json!([]), 1).await["result"], "pong");
        let stats = stack.snippet_stats().await.expect("stats");
        assert_eq!(upstream(&stats, TENANT)["ownerKind"], "websocket", "{stats}");

        let others = LoadOpts { clients: 8, messages: 300, in_flight: 4, ..client_load(stack, url.clone()) };
        let run = tokio::spawn(load::run(others, false));
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(owner); // mid-stream, without a close handshake
        let report = run.await.expect("task").expect("load");
        assert_passed(&report, 2400);
        // New clients still get through afterwards.
        let after = LoadOpts { clients: 4, messages: 50, ..client_load(stack, url) };
        assert_passed(&load::run(after, false).await.expect("load"), 200);
        let stats = stats_until(stack, |s| s["activeClients"] == 0).await;
        let ours = upstream(&stats, TENANT);
        assert_eq!(errors_of(TENANT, &start, &stats), 0, "{stats}");
        assert!(ours["handovers"].as_u64() >= Some(1), "a remaining client's context took over: {stats}");
        assert_eq!(ours["ownerKind"], "websocket", "{stats}");
        assert_eq!(delta(&start, &stats, "backendConnects"), 1, "no reconnect, only hand-overs: {stats}");
        assert_eq!(delta(&start, &stats, "backendReconnects"), 0, "{stats}");
    });
}

/// HTTP-owned upstreams are handed over when their (here 1 s) lifetime is up, again and
/// again under load, and a WebSocket context takes over from an HTTP one: every request
/// and message is answered, in order, on a chain of upstreams.
#[test]
fn owners_are_handed_over_under_load_without_losing_anything() {
    e2e().vars(&[("OWNER_LIFETIME_MS", "1000")]).run(async |stack| {
        let http = LoadOpts {
            clients: 8,
            in_flight: 2,
            duration: Some(5.0),
            method: Method::Ping,
            ..client_load(stack, format!("{}/rpc", stack.snippet.http()))
        };
        let report = load::run(http.clone(), false).await.expect("load");
        assert!(report.passed, "{}", report.to_text());
        let s = stack.snippet_stats().await.expect("stats");
        // Each HTTP owner lets go within its lifetime: handed to the next request while
        // requests flow, retired when none is in flight (so "none" once the load stops).
        assert!(n(&s, "handovers") + n(&s, "retirements") >= 2, "HTTP owners rotate: {s}");
        assert!(s["ownerKind"] == "http" || s["ownerKind"] == "none", "{s}");

        // WebSocket clients (raw echo checks order) alongside HTTP: a WebSocket context
        // takes over from the HTTP owner while both kinds of traffic flow.
        let ws = LoadOpts {
            clients: 8,
            in_flight: 4,
            duration: Some(4.0),
            method: Method::Raw,
            ..client_load(stack, format!("{}/ws/echo", stack.snippet.ws()))
        };
        let (a, b) = tokio::join!(load::run(ws, false), load::run(http, false));
        let (a, b) = (a.expect("ws load"), b.expect("http load"));
        assert!(a.passed, "{}", a.to_text());
        assert!(b.passed, "{}", b.to_text());
        let s = stats_until(stack, |s| s["activeClients"] == 0).await;
        // Owners rotated again and again, and at least once with requests in flight. How
        // many rotations were hand-overs depends on timing (an owner with nothing in flight
        // retires instead; a WebSocket context that opened first has nothing to take over),
        // so the count is of both.
        let (handovers, retirements) = (n(&s, "handovers"), n(&s, "retirements"));
        assert!(handovers >= 1 && handovers + retirements >= 3, "{s}");
        assert_eq!(n(&s, "errors"), 0, "{s}");
        assert_eq!(n(&s, "backendReconnects"), 0, "hand-overs, not reconnects: {s}");
        assert_eq!(n(&s, "droppedDeliveries"), 0, "{s}");
    });
}

/// The backend stops and comes back while WebSocket and HTTP clients are busy: every
/// request gets its reply or a clear error, the upstream comes back within the backoff
/// bound, and /__stats adds up afterwards.
#[test]
fn backend_restart_mid_load_gives_every_request_a_reply_or_a_clear_error() {
    // Short timeouts, so that "at rest for 2 × the longest of them" is seconds.
    let timeouts = [("REQUEST_TIMEOUT_MS", "3000"), ("WATCHDOG_MS", "2000"), ("UPSTREAM_IDLE_MS", "2000")];
    e2e()
        .vars(&[&[("RECONNECT_MAX_MS", "2000")][..], &timeouts].concat())
        .own_stack("stops and restarts the backend")
        // The outage closes the WebSocket clients with 1012 (RUNTIME.md §16).
        .tolerating(&[RUNTIME_CLOSE_NOISE])
        .run_mut(async |stack| {
            let baseline = stack.snippet_stats().await.expect("stats");
            let ws = LoadOpts {
                clients: 8,
                duration: Some(4.0),
                in_flight: 2,
                ..client_load(stack, format!("{}/ws", stack.snippet.ws()))
            };
            let http = LoadOpts {
                clients: 8,
                duration: Some(4.0),
                in_flight: 2,
                method: Method::Ping,
                ..client_load(stack, format!("{}/rpc", stack.snippet.http()))
            };
            assert_passed(
                &load::run(LoadOpts { messages: 20, ..ws.clone() }.without_duration(), false).await.expect("load"),
                160,
            );
            // The load runs on the runtime's workers while this body stops and restarts
            // the backend (blocking calls, on the test's thread).
            let ws_run = tokio::spawn(load::run(ws.clone(), false));
            let http_run = tokio::spawn(load::run(http.clone(), false));
            std::thread::sleep(Duration::from_millis(1500));
            stack.stop_backend();
            std::thread::sleep(Duration::from_millis(1500));
            let restarted = {
                stack.restart_backend().expect("backend restarts");
                Instant::now()
            };
            let ws_report = ws_run.await.expect("task").expect("ws load");
            let http_report = http_run.await.expect("task").expect("http load");
            assert_only_clear_errors(&ws_report);
            assert_only_clear_errors(&http_report);
            assert!(!ws_report.errors.is_empty() || !http_report.errors.is_empty(), "the outage was noticed");

            // A new client's first message is answered within the backoff bound (2 s) + slack.
            let mut c = ws_connect(&format!("{}/ws", stack.snippet.ws()), Some(&stack.client_token)).await.expect("ws");
            let asked = Instant::now();
            assert_eq!(rpc(&mut c, "ping", json!([]), 1).await["result"], "pong");
            let waited = asked.elapsed();
            assert!(
                waited < Duration::from_millis(3500),
                "reconnected after {waited:?} (restart done {:?} ago)",
                restarted.elapsed()
            );
            drop(c);

            let ws_more = LoadOpts { messages: 50, ..ws }.without_duration();
            assert_passed(&load::run(ws_more, false).await.expect("load"), 400);
            let http_more = LoadOpts { messages: 20, ..http }.without_duration();
            assert_passed(&load::run(http_more, false).await.expect("load"), 160);

            let s = stats_until(stack, |s| s["activeClients"] == 0 && s["pendingRequests"] == 0).await;
            assert_eq!(s["backendConnected"], true, "{s}");
            assert!(n(&s, "backendReconnects") >= 1, "{s}");
            assert_eq!(n(&s, "backendConnects"), 1 + n(&s, "backendReconnects"), "{s}");
            assert!(n(&s, "connectAttempts") >= n(&s, "backendConnects"), "{s}");
            assert_eq!((n(&s, "activeClients"), n(&s, "pendingRequests")), (0, 0), "{s}");
            assert_eq!(n(&s, "messagesProxied"), n(&s, "messagesUp") + n(&s, "messagesDown"), "{s}");
            assert!(n(&s, "framesSent") >= n(&s, "batchesSent"), "{s}");
            assert!(n(&s, "errors") > 0, "the outage is counted: {s}");
            assert!(n(&s, "fallbacks") > 0, "HTTP requests went direct while the upstream was down: {s}");

            // At rest for 2 × the longest timeout, nothing outlives its purpose: no task,
            // stream, request or upstream beyond what an idle isolate holds.
            tokio::time::sleep(Duration::from_millis(6_000)).await;
            let rest = stats_until(stack, |s| s["liveTasks"] == baseline["liveTasks"] && s["upstreamsOpen"] == 0).await;
            eprintln!(
                "at rest: liveTasks {} (baseline {}), wasmMemoryBytes {}",
                rest["liveTasks"], baseline["liveTasks"], rest["wasmMemoryBytes"]
            );
            for field in ["liveTasks", "pendingRequests", "activeClients", "streamsHeld", "upstreamsOpen"] {
                assert_eq!(rest[field], baseline[field], "{field} back to its baseline: {rest}");
            }
        });
}
