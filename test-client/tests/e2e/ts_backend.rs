//! The TypeScript example Durable Object (`examples/ts-chat`, built on the `server-ts`
//! package) in place of the Rust backend, behind the same snippet: the checks the Rust
//! backend passes — many clients over one upstream, HTTP over the upstream, hibernation
//! with the stream table restored, a backend restart — and the load client's 64 clients ×
//! 500 messages, complete, in order, each at its own client.

use std::time::Duration;

use serde_json::json;
use test_client::load::{self, LoadOpts, Method};
use test_client::stack::{Stack, StackOpts};

use crate::common::*;

fn start_ts(tenant: Option<&str>) -> Stack {
    Stack::start(StackOpts {
        backend_dir: Some("examples/ts-chat".into()),
        tenant: tenant.map(str::to_owned),
        ..StackOpts::default()
    })
    .expect("stack with the TypeScript backend starts")
}

#[test]
fn sixty_four_clients_and_http_share_one_upstream_to_a_typescript_object() {
    let _one = one_at_a_time();
    let stack = start_ts(None);
    runtime().block_on(async {
        let raw = LoadOpts {
            clients: 64,
            messages: 500,
            in_flight: 4,
            method: Method::Raw,
            ..client_load(&stack, format!("{}/ws/echo", stack.snippet.ws()))
        };
        assert_passed(&load::run(raw, false).await.expect("load"), 64 * 500);
        let rpc_echo = LoadOpts {
            clients: 32,
            messages: 100,
            in_flight: 4,
            method: Method::Echo,
            ..client_load(&stack, format!("{}/ws", stack.snippet.ws()))
        };
        assert_passed(&load::run(rpc_echo, false).await.expect("load"), 32 * 100);
        let http = LoadOpts {
            clients: 8,
            messages: 50,
            in_flight: 2,
            method: Method::Ping,
            ..client_load(&stack, format!("{}/rpc", stack.snippet.http()))
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
        let room = do_stats(&stack, "default").await;
        assert_eq!(room["muxSockets"], 1, "one upstream for every client: {room}");
        assert_eq!(room["streams"], 40, "{room}");
        let s = stack.snippet_stats().await.expect("stats");
        assert_eq!(n(&s, "upstreamsOpen"), 1, "{s}");
        assert!(n(&s, "httpProxied") >= 400, "HTTP went over the upstream: {s}");
    });
    stack.assert_clean_logs().expect("clean logs");
}

#[test]
fn a_hibernated_typescript_object_restores_its_stream_table() {
    let _one = one_at_a_time();
    let stack = start_ts(Some("hib"));
    runtime().block_on(async {
        let mut client =
            ws_connect(&format!("{}/ws", stack.snippet.ws()), Some(&stack.client_token)).await.expect("ws");
        assert_eq!(rpc(&mut client, "whoami", json!([]), 1).await["result"]["subject"], "e2e");
        let before = do_stats(&stack, "hib").await;
        // Idle long enough for the runtime to hibernate the object (~10 s in workerd).
        tokio::time::sleep(Duration::from_secs(20)).await;
        // The stream opened before hibernation still reaches the app, with its identity.
        assert_eq!(rpc(&mut client, "whoami", json!([]), 2).await["result"]["subject"], "e2e");
        assert_eq!(rpc(&mut client, "echo", json!(["after"]), 3).await["result"], json!(["after"]));
        let after = do_stats(&stack, "hib").await;
        assert!(after["wakes"].as_u64() > before["wakes"].as_u64(), "hibernated and woke: {before} → {after}");
        assert_eq!(after["streams"], 1, "the stream table came back: {after}");
    });
    stack.assert_clean_logs().expect("clean logs");
}

#[test]
fn a_restarted_typescript_backend_is_reconnected_to() {
    let _one = one_at_a_time();
    let mut stack = start_ts(None);
    let rt = runtime();
    rt.block_on(async {
        let mut c = ws_connect(&format!("{}/ws", stack.snippet.ws()), Some(&stack.client_token)).await.expect("ws");
        assert_eq!(rpc(&mut c, "count", json!([]), 1).await["result"], 1);
    });
    stack.restart_backend().expect("backend restarts");
    rt.block_on(async {
        // The first client after the restart may find the old upstream still being torn
        // down; within the reconnect bound, a new one is answered, and the object's
        // storage survived.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let count = loop {
            let attempt = async {
                let mut c = ws_connect(&format!("{}/ws", stack.snippet.ws()), Some(&stack.client_token)).await.ok()?;
                let v = rpc(&mut c, "count", json!([]), 2).await;
                v.get("result").cloned()
            };
            if let Some(v) = tokio::time::timeout(Duration::from_secs(5), attempt).await.ok().flatten() {
                break v;
            }
            assert!(std::time::Instant::now() < deadline, "no answer after the restart");
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert_eq!(count, 2, "the counter persisted across the restart");
        let load = LoadOpts {
            clients: 16,
            messages: 100,
            method: Method::Raw,
            ..client_load(&stack, format!("{}/ws/echo", stack.snippet.ws()))
        };
        assert_passed(&load::run(load, false).await.expect("load"), 1600);
    });
}
