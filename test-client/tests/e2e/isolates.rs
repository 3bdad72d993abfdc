//! Many isolates: three snippet runtimes (separate `wrangler dev` processes, as the
//! platform runs many isolates of one Worker) in front of the same tenants. Broadcasts
//! reach clients of every isolate, each isolate holds one upstream per tenant, and killing
//! one isolate touches only its own clients.

use std::time::Duration;

use serde_json::{json, Value};
use test_client::stack::RUNTIME_CLOSE_NOISE;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

/// A snippet's /__stats with an operator token.
async fn stats_of(origin: &str, admin: &str) -> anyhow::Result<Value> {
    test_client::snippet_stats::fetch(&format!("{origin}/__stats"), Some(admin)).await
}

const TENANTS: [&str; 2] = ["fleet-1", "fleet-2"];
const LISTENERS: usize = 4;
const PUSHES: u64 = 10;

/// The next JSON-RPC notification a listener gets (its `params.message`).
async fn push(ws: &mut Ws) -> Value {
    loop {
        match next_message(ws).await {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).expect("JSON");
                if v["method"] == "broadcast" {
                    return v["params"]["message"].clone();
                }
            }
            other => panic!("expected a push, got {other:?}"),
        }
    }
}

/// Every listener gets pushes `from..to` of `tenant`, in order.
async fn all_heard(listeners: &mut [Ws], tenant: &str, from: u64, to: u64) {
    for (i, ws) in listeners.iter_mut().enumerate() {
        for n in from..to {
            assert_eq!(push(ws).await, json!({ "tenant": tenant, "n": n }), "listener {i} of {tenant}");
        }
    }
}

#[test]
fn three_isolates_share_each_tenant_and_one_dying_touches_only_its_own_clients() {
    // The killed runtime's sockets drop without a close handshake (RUNTIME.md §16).
    e2e().own_stack("kills one of its snippets").tolerating(&[RUNTIME_CLOSE_NOISE]).run_mut(async |stack| {
        let mut b = stack.extra_snippet("default", &[]).expect("snippet B");
        let mut c = stack.extra_snippet("default", &[]).expect("snippet C");
        let bases = [stack.snippet.port, b.port, c.port].map(|p| format!("ws://127.0.0.1:{p}"));
        let token = stack.client_token.clone();
        // LISTENERS listeners per isolate per tenant, and a publisher per tenant on A.
        let mut listeners: Vec<Vec<Vec<Ws>>> = Vec::new(); // [tenant][isolate][listener]
        let mut publishers = Vec::new();
        for tenant in TENANTS {
            let mut per_isolate = Vec::new();
            for base in &bases {
                let mut ws = Vec::new();
                for _ in 0..LISTENERS {
                    let mut l = ws_connect(&format!("{base}/db/{tenant}/ws"), Some(&token)).await.expect("listener");
                    assert_eq!(rpc(&mut l, "ping", json!([]), 1).await["result"], "pong");
                    ws.push(l);
                }
                per_isolate.push(ws);
            }
            listeners.push(per_isolate);
            publishers
                .push(ws_connect(&format!("{}/db/{tenant}/ws", bases[0]), Some(&token)).await.expect("publisher"));
        }
        let publish = async |p: &mut Ws, tenant: &str, n: u64| {
            let r = rpc(p, "broadcast", json!({ "message": { "tenant": tenant, "n": n } }), 100 + n).await;
            assert!(r["result"]["delivered"].as_u64() >= Some(1), "{r}");
        };
        for (t, tenant) in TENANTS.iter().enumerate() {
            for n in 0..PUSHES {
                publish(&mut publishers[t], tenant, n).await;
            }
            for isolate in listeners[t].iter_mut() {
                all_heard(isolate, tenant, 0, PUSHES).await;
            }
        }
        // Each isolate holds one upstream per tenant; each object sees one socket per isolate.
        for (name, stats) in [
            ("A", stack.snippet_stats().await.expect("A")),
            ("B", stats_of(&b.origin(), &stack.admin_token).await.expect("B")),
            ("C", stats_of(&c.origin(), &stack.admin_token).await.expect("C")),
        ] {
            for tenant in TENANTS {
                assert_eq!(upstream(&stats, tenant)["connected"], true, "isolate {name}, {tenant}: {stats}");
            }
            assert_eq!(n(&stats, "upstreamsOpen"), TENANTS.len() as u64, "isolate {name}: one upstream per tenant");
        }
        for tenant in TENANTS {
            assert_eq!(n(&do_stats(stack, tenant).await, "muxSockets"), 3, "{tenant}: one socket per isolate");
            // The object's own view: three upstreams, each carrying its isolate's listeners
            // (A's also the publisher), and what came over them.
            let view = do_view(stack, tenant).await;
            assert_eq!(n(&view, "upstreams"), 3, "{tenant}: {view}");
            let per: Vec<u64> = view["sockets"].as_array().expect("sockets").iter().map(|s| n(s, "streams")).collect();
            let l = LISTENERS as u64;
            assert_eq!(per, [l + 1, l, l], "{tenant}: streams per upstream, most first: {view}");
            assert_eq!(n(&view, "streams"), 3 * l + 1, "{tenant}: {view}");
            let totals = &view["totals"];
            assert!(n(totals, "messagesIn") >= PUSHES && n(totals, "messagesOut") >= PUSHES, "{tenant}: {view}");
            assert_eq!(
                totals["refused"].as_object().map(|r| r.values().filter_map(Value::as_u64).sum::<u64>()),
                Some(0)
            );
            // The Prometheus text says the same, each sample under the tenant's label.
            let url = format!("{}/db/{tenant}/__metrics", stack.backend.http());
            let (status, content_type, metrics) = get(&url, Some(&stack.token)).await;
            assert_eq!((status, content_type.as_str()), (200, "text/plain; version=0.0.4"), "{metrics}");
            let upstreams = format!("snippet_proxy_object_upstreams{{tenant=\"{tenant}\"}} 3\n");
            assert!(metrics.contains(&upstreams), "{metrics}");
        }
        // Never public: without the backend token the view is refused.
        let (status, _, _) = get(&format!("{}/db/{}/__stats", stack.backend.http(), TENANTS[0]), None).await;
        assert_eq!(status, 401);

        // Isolate C dies. Its clients lose their connection; A's and B's notice nothing.
        c.kill();
        for l in listeners.iter_mut().flat_map(|per| per[2].iter_mut()) {
            let ended = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    match futures_util::StreamExt::next(l).await {
                        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                        Some(Ok(_)) => {}
                    }
                }
            });
            ended.await.expect("C's client learns its connection is gone");
        }
        for (t, tenant) in TENANTS.iter().enumerate() {
            for n in PUSHES..2 * PUSHES {
                publish(&mut publishers[t], tenant, n).await;
            }
            for isolate in listeners[t][..2].iter_mut() {
                all_heard(isolate, tenant, PUSHES, 2 * PUSHES).await;
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while n(&do_stats(stack, tenant).await, "muxSockets") != 2 {
                assert!(tokio::time::Instant::now() < deadline, "{tenant}: the object let C's socket go");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let view = do_view(stack, tenant).await;
            let per: Vec<u64> = view["sockets"].as_array().expect("sockets").iter().map(|s| n(s, "streams")).collect();
            let l = LISTENERS as u64;
            assert_eq!((n(&view, "upstreams"), per), (2, vec![l + 1, l]), "{tenant}: C's upstream is gone: {view}");
            assert!(n(&view["totals"], "lost") >= l, "{tenant}: C's listeners closed as lost: {view}");
        }
        let a = stack.snippet_stats().await.expect("A");
        assert_eq!(n(&a, "backendDisconnects"), 0, "A's upstreams were untouched: {a}");
        b.stop();
    });
}
