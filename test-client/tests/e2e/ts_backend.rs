//! The TypeScript example Durable Object (`examples/ts-chat`, built on the `server-ts`
//! package) in place of the Rust backend, behind the same snippet: the checks the Rust
//! backend passes — many clients over one upstream, HTTP over the upstream, hibernation
//! with the stream table restored, a backend restart — and the load client's 64 clients ×
//! 500 messages, complete, in order, each at its own client.

use std::time::Duration;

use serde_json::json;
use test_client::load::{self, LoadOpts, Method};
use test_client::stack::{Stack, RUNTIME_CLOSE_NOISE};

use crate::common::*;

/// The TypeScript backend; with no other option, tests share its stack.
fn ts() -> E2e {
    e2e().backend_dir("examples/ts-chat")
}

/// On the shared stack, under a tenant of its own: its object's streams are this test's.
#[test]
fn sixty_four_clients_and_http_share_one_upstream_to_a_typescript_object() {
    const TENANT: &str = "sixty-four";
    ts().tenant(TENANT).run(async |stack| {
        let start = stack.snippet_stats().await.expect("stats");
        let raw = LoadOpts {
            clients: 64,
            messages: 500,
            in_flight: 4,
            method: Method::Raw,
            ..client_load(stack, format!("{}/ws/echo", stack.snippet.ws()))
        };
        assert_passed(&load::run(raw, false).await.expect("load"), 64 * 500);
        let rpc_echo = LoadOpts {
            clients: 32,
            messages: 100,
            in_flight: 4,
            method: Method::Echo,
            ..client_load(stack, format!("{}/ws", stack.snippet.ws()))
        };
        assert_passed(&load::run(rpc_echo, false).await.expect("load"), 32 * 100);
        let http = LoadOpts {
            clients: 8,
            messages: 50,
            in_flight: 2,
            method: Method::Ping,
            ..client_load(stack, format!("{}/rpc", stack.snippet.http()))
        };
        assert_passed(&load::run(http, false).await.expect("load"), 8 * 50);

        // Many clients, one upstream: 40 clients open at once, one mux socket at the object.
        let mut clients = Vec::new();
        for i in 0..40 {
            let mut ws =
                ws_connect(&format!("{}/ws", stack.snippet.ws()), Some(&stack.client_token)).await.expect("ws");
            assert_eq!(rpc(&mut ws, "echo", json!([i]), 1).await["result"], json!([i]));
            clients.push(ws);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let room = do_stats(stack, TENANT).await;
        assert_eq!(room["muxSockets"], 1, "one upstream for every client: {room}");
        assert_eq!(room["streams"], 40, "{room}");
        // The package's operator view says the same (server-ts `view()`, the Rust crate's JSON).
        let view = do_view(stack, TENANT).await;
        assert_eq!((view["upstreams"].as_u64(), view["sockets"][0]["streams"].as_u64()), (Some(1), Some(40)), "{view}");
        assert!(view["totals"]["messagesIn"].as_u64() >= Some(40), "{view}");
        let (status, content_type, text) =
            get(&format!("{}/db/{TENANT}/__metrics", stack.backend.http()), Some(&stack.token)).await;
        assert_eq!((status, content_type.as_str()), (200, "text/plain; version=0.0.4"), "{text}");
        assert!(text.contains(&format!("snippet_proxy_object_streams{{tenant=\"{TENANT}\"}} 40\n")), "{text}");
        let s = stack.snippet_stats().await.expect("stats");
        assert_eq!(upstream(&s, TENANT)["connected"], true, "{s}");
        assert!(delta(&start, &s, "httpProxied") >= 400, "HTTP went over the upstream: {s}");
    });
}

#[test]
fn a_hibernated_typescript_object_restores_its_stream_table() {
    ts().tenant("hib").run(async |stack| {
        let mut client =
            ws_connect(&format!("{}/ws", stack.snippet.ws()), Some(&stack.client_token)).await.expect("ws");
        assert_eq!(rpc(&mut client, "whoami", json!([]), 1).await["result"]["subject"], "e2e");
        let before = do_stats(stack, "hib").await;
        // Idle long enough for the runtime to hibernate the object (~10 s in workerd).
        tokio::time::sleep(Duration::from_secs(20)).await;
        // The stream opened before hibernation still reaches the app, with its identity.
        assert_eq!(rpc(&mut client, "whoami", json!([]), 2).await["result"]["subject"], "e2e");
        assert_eq!(rpc(&mut client, "echo", json!(["after"]), 3).await["result"], json!(["after"]));
        let after = do_stats(stack, "hib").await;
        assert!(after["wakes"].as_u64() > before["wakes"].as_u64(), "hibernated and woke: {before} → {after}");
        assert_eq!(after["streams"], 1, "the stream table came back: {after}");
    });
}

/// The subjects of the snippet clients the object itself has (its `members`, asked
/// directly with the backend token).
async fn members(stack: &Stack) -> Vec<String> {
    let body = json!({ "jsonrpc": "2.0", "method": "members", "id": 1 });
    let (status, v) = post(&format!("{}/db/default/rpc", stack.backend.http()), Some(&stack.token), &body).await;
    assert_eq!(status, 200, "{v}");
    let list = v["result"].as_array().cloned().unwrap_or_default();
    list.iter().filter_map(|m| m["subject"].as_str().map(str::to_owned)).collect()
}

/// An idle client as a presence app has it: it reconnects at once whenever it is closed
/// (while `reconnect` is set) and never sends anything after its first call. `open` says
/// whether it holds an open socket right now.
async fn idle_client(
    url: String,
    token: String,
    reconnect: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> u32 {
    use futures_util::StreamExt;
    use std::sync::atomic::Ordering;
    let mut closes = 0;
    loop {
        if let Ok(mut ws) = ws_connect(&url, Some(&token)).await {
            open.store(true, Ordering::SeqCst);
            // Read to the end: tungstenite answers the close frame, then the stream ends.
            while let Some(Ok(_)) = ws.next().await {}
            open.store(false, Ordering::SeqCst);
            closes += 1;
        }
        if !reconnect.load(Ordering::SeqCst) {
            return closes;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The backend restarts while three clients sit idle; they are closed 1012 and come
/// straight back (the snippet accepts an upgrade before its backend is reachable), then
/// send nothing. Within RECONNECT_MAX_MS + WATCHDOG_MS of the backend answering again,
/// each client is either attached to the new upstream — the object lists it — or closed
/// with 1012: never "open" at the snippet and absent at the object. Then the object's
/// storage survived the restart, and 16 new clients are served in full.
#[test]
fn a_restarted_typescript_backend_gets_its_idle_clients_back_and_its_storage_survives() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let (reconnect_max, watchdog) = (2_000, 2_000);
    ts().vars(&[("RECONNECT_MAX_MS", "2000"), ("WATCHDOG_MS", "2000")])
        .own_stack("restarts the backend")
        // The snippet closes the idle clients with 1012 (RUNTIME.md §16).
        .tolerating(&[RUNTIME_CLOSE_NOISE])
        .run_mut(async |stack| {
            let subjects = ["idle-a", "idle-b", "idle-c"];
            let reconnect = Arc::new(AtomicBool::new(true));
            let open: Vec<Arc<AtomicBool>> = subjects.iter().map(|_| Arc::new(AtomicBool::new(false))).collect();
            let url = format!("{}/ws", stack.snippet.ws());
            let tasks: Vec<_> = subjects
                .iter()
                .zip(&open)
                .map(|(sub, open)| {
                    let token = stack.mint(sub, "default", "read", 3600);
                    tokio::spawn(idle_client(url.clone(), token, reconnect.clone(), open.clone()))
                })
                .collect();
            let mut c = ws_connect(&url, Some(&stack.client_token)).await.expect("ws");
            assert_eq!(rpc(&mut c, "count", json!([]), 1).await["result"], 1);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while members(stack).await.len() < subjects.len() {
                assert!(std::time::Instant::now() < deadline, "the object never saw all three");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // The idle clients run on the runtime's workers through the restart (a
            // blocking call, on the test's thread).
            stack.restart_backend().expect("backend restarts");
            tokio::time::sleep(Duration::from_millis(reconnect_max + watchdog + 500)).await;
            // From here on a closed client stays closed, so what is open can be checked.
            reconnect.store(false, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(500)).await;
            let seen = members(stack).await;
            for (sub, open) in subjects.iter().zip(&open) {
                if open.load(Ordering::SeqCst) {
                    assert!(seen.iter().any(|s| s == sub), "{sub} is open at the snippet but the object has {seen:?}");
                }
            }
            let attached = subjects.iter().zip(&open).filter(|(_, o)| o.load(Ordering::SeqCst)).count();
            eprintln!("after the restart: {attached} of 3 idle clients attached, the rest closed 1012");
            assert!(attached > 0, "with the backend up, clients come back: the object has {seen:?}");
            let mut c = ws_connect(&url, Some(&stack.client_token)).await.expect("ws");
            assert_eq!(
                rpc(&mut c, "count", json!([]), 2).await["result"],
                2,
                "the counter persisted across the restart"
            );
            let load = LoadOpts {
                clients: 16,
                messages: 100,
                method: Method::Raw,
                ..client_load(stack, format!("{}/ws/echo", stack.snippet.ws()))
            };
            assert_passed(&load::run(load, false).await.expect("load"), 1600);
            for t in tasks {
                t.abort();
            }
        });
}
