//! Binding mode as it deploys: the snippet and backend-do in one `wrangler dev` session,
//! the snippet reaching the objects through a Durable Object namespace binding
//! (`BACKEND_BINDING`, `script_name`) — with no `BACKEND_TOKEN` on either side and no
//! port of the backend's own. (The tenant tests run in binding mode too, with the backend
//! in a session of its own so that they can restart and freeze it: `E2E_BINDING=1`.)

use serde_json::json;
use test_client::stack::{free_ports, repo_root, ConfigChange, Worker, FORBIDDEN_LOG_LINES, RUNTIME_CLOSE_NOISE};

use crate::common::*;

/// The backend's name in the session (the binding's `script_name`).
const BACKEND: &str = "snippet-proxy-backend-bound";

/// Starts the session: the snippet first (it serves the port), then backend-do.
fn session(dir: &std::path::Path, secret: &str) -> Worker {
    let root = repo_root().expect("repository");
    let backend_dir = root.join("backend-do");
    let workers = [
        (root.as_path(), ConfigChange::bind("BACKEND", "Database", BACKEND)),
        (backend_dir.as_path(), ConfigChange { name: Some(BACKEND.into()), ..ConfigChange::default() }),
    ];
    // Blank, not absent: `wrangler dev` would otherwise take a `.dev.vars` token.
    let vars = [("BACKEND_BINDING", "BACKEND"), ("BACKEND_TOKEN", ""), ("AUTH_SECRET", secret)]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let ports = free_ports().expect("ports");
    let mut w = Worker::spawn_session(&root, &workers, ports, &vars, dir.join("session.log")).expect("session");
    w.wait_ready().expect("the session answers");
    w
}

#[test]
fn a_bound_backend_serves_every_route_with_no_token_and_no_route_of_its_own() {
    let _one = one_at_a_time();
    let dir = std::env::temp_dir().join(format!("snippet-proxy-binding-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let secret: String = std::iter::repeat_with(fastrand::alphanumeric).take(48).collect();
    let mut worker = session(&dir, &secret);
    let now = test_client::stack::now_secs();
    let mint = |scope: &str| {
        test_client::token::hs256(secret.as_bytes(), &test_client::token::claims("b", "*", scope, 600, now))
    };
    let (client, admin) = (mint("read write publish"), mint("admin"));
    let origin = worker.origin();
    let ws_origin = origin.replacen("http", "ws", 1);
    runtime().block_on(async {
        // Two tenants, each its own object: WebSocket, HTTP and a broadcast between two
        // clients of one tenant.
        let mut a1 = ws_connect(&format!("{ws_origin}/db/bound-a/ws"), Some(&client)).await.expect("ws a1");
        let mut a2 = ws_connect(&format!("{ws_origin}/db/bound-a/ws"), Some(&client)).await.expect("ws a2");
        assert_eq!(rpc(&mut a1, "ping", json!([]), 1).await["result"], "pong");
        assert_eq!(rpc(&mut a2, "ping", json!([]), 1).await["result"], "pong");
        let r = rpc(&mut a1, "broadcast", json!({ "message": "over the binding" }), 2).await;
        assert_eq!(r["result"]["delivered"], 2, "{r}");
        // (The publisher's own copy may come before its reply; the listener's is checked.)
        let push = loop {
            let v: serde_json::Value = match next_message(&mut a2).await {
                tokio_tungstenite::tungstenite::Message::Text(t) => serde_json::from_str(&t).expect("json"),
                other => panic!("expected a push, got {other:?}"),
            };
            if v.get("method").is_some() {
                break v;
            }
        };
        assert_eq!(push["params"]["message"], "over the binding", "{push}");
        for t in ["bound-a", "bound-b"] {
            let q = |sql: &str, params: serde_json::Value| json!({ "sql": sql, "params": params });
            let url = format!("{origin}/db/{t}/query");
            let tok = Some(client.as_str());
            assert_eq!(post(&url, tok, &q("create table if not exists who (name text)", json!([]))).await.0, 200);
            assert_eq!(post(&url, tok, &q("insert into who values (?)", json!([t]))).await.0, 200);
            let (status, rows) = post(&url, tok, &q("select name from who", json!([]))).await;
            assert_eq!((status, &rows["rows"]), (200, &json!([[t]])), "{t} sees only its own rows: {rows}");
        }
        let stats = test_client::snippet_stats::fetch(&format!("{origin}/__stats"), Some(&admin)).await.expect("stats");
        let tenants: Vec<&str> =
            stats["upstreams"].as_array().expect("upstreams").iter().filter_map(|u| u["tenant"].as_str()).collect();
        assert_eq!(tenants.len(), 2, "one upstream per tenant: {stats}");
        assert_eq!(stats["errors"], 0, "{stats}");
        close_politely(a1).await;
        close_politely(a2).await;
    });
    worker.stop();
    let log = worker.log();
    let forbidden: Vec<&str> = log
        .lines()
        .filter(|l| FORBIDDEN_LOG_LINES.iter().any(|f| l.contains(f)) && !l.contains(RUNTIME_CLOSE_NOISE))
        .collect();
    assert!(forbidden.is_empty(), "forbidden lines: {forbidden:?}\n{}", test_client::stack::tail(&log, 60));
    let _ = std::fs::remove_dir_all(&dir);
}
