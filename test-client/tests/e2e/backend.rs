//! backend-do on its own and behind the snippet: auth, durability, hibernation,
//! malformed frames, server push.

use std::time::Duration;

use futures_util::SinkExt;
use protocol::{decode_message, ErrorFrame, FrameKind, Identity, Open, StreamId};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

#[test]
fn every_entry_point_wants_the_bearer_token() {
    e2e().run(async |stack| {
        let ws = stack.backend.ws();
        for endpoint in ["mux", "ws", "echo"] {
            let url = format!("{ws}/db/auth/{endpoint}");
            assert_eq!(ws_connect(&url, None).await.err(), Some(401), "{url} without a token");
            assert_eq!(ws_connect(&url, Some("wrong")).await.err(), Some(401), "{url} with a wrong token");
            assert!(ws_connect(&url, Some(&stack.token)).await.is_ok(), "{url} with the token");
        }
        let http = stack.backend.http();
        let ping = json!({ "jsonrpc": "2.0", "method": "ping", "id": 1 });
        for endpoint in ["rpc", "query"] {
            let url = format!("{http}/db/auth/{endpoint}");
            let (status, body) = post(&url, None, &ping).await;
            assert_eq!(status, 401, "{url}: {body}");
            assert!(!body.to_string().contains(&stack.token), "the token is never echoed");
            assert_eq!(post(&url, Some("nope"), &ping).await.0, 401);
        }
        assert_eq!(post(&format!("{http}/db/auth/rpc"), Some(&stack.token), &ping).await.1["result"], "pong");
        // All of both logs: on a shared stack, no test may have logged it.
        assert!(!stack.logs().contains(&stack.token), "the token is never logged");
    });
}

#[test]
fn sql_rows_survive_a_restart_of_the_runtime() {
    e2e().own_stack("restarts the backend").run_mut(async |stack| {
        let query = |sql: &str, params: Value| json!({ "sql": sql, "params": params });
        // Through the snippet's shared upstream (POST /query, the {sql, params} shape)…
        let url = format!("{}/query", stack.snippet.http());
        let (s, b) = post(
            &url,
            Some(&stack.client_token),
            &query("create table if not exists notes (id integer primary key, body text)", json!([])),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        let evil = "x'); drop table notes; --";
        let (s, b) = post(
            &url,
            Some(&stack.client_token),
            &query("insert into notes (body) values (?), (?)", json!(["first", evil])),
        )
        .await;
        assert_eq!((s, b["rowsWritten"].as_u64()), (200, Some(2)), "{b}");
        let (s, b) = post(&url, Some(&stack.client_token), &query("select nope from notes", json!([]))).await;
        assert_eq!(s, 400, "SQL errors are 400 with SQLite's message: {b}");
        assert!(b["error"].as_str().unwrap_or_default().contains("nope"), "{b}");

        stack.restart_backend().expect("backend restarts");

        // …and read back directly after the restart.
        let url = format!("{}/db/default/query", stack.backend.http());
        let (s, b) = post(&url, Some(&stack.token), &query("select id, body from notes order by id", json!([]))).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["columns"], json!(["id", "body"]));
        assert_eq!(b["rows"], json!([[1, "first"], [2, "x'); drop table notes; --"]]));
    });
}

/// The object hibernates while idle even though a client keeps sending heartbeats (the
/// runtime answers `ping` itself), and after the wake both a direct socket and a stream
/// multiplexed through the snippet still get correct answers (state from attachments).
#[test]
fn a_hibernated_object_answers_and_heartbeats_do_not_wake_it() {
    e2e().tenant("hib").run(async |stack| {
        let mut direct =
            ws_connect(&format!("{}/db/hib/ws", stack.backend.ws()), Some(&stack.token)).await.expect("ws");
        let mut via_snippet =
            ws_connect(&format!("{}/ws", stack.snippet.ws()), Some(&stack.client_token)).await.expect("ws");
        assert_eq!(rpc(&mut via_snippet, "echo", json!(["before"]), 1).await["result"], json!(["before"]));
        let before = rpc(&mut direct, "stats", json!([]), 1).await["result"].clone();

        // ~20 s idle but for heartbeats every 2 s, each answered without the object.
        for _ in 0..10 {
            direct.send(Message::Text("ping".into())).await.expect("ping");
            assert_eq!(next_message(&mut direct).await, Message::Text("pong".into()));
            tokio::time::sleep(Duration::from_secs(2)).await;
        }

        let after = rpc(&mut direct, "stats", json!([]), 2).await["result"].clone();
        assert!(after["wakes"].as_u64() > before["wakes"].as_u64(), "hibernated and woke: {before} → {after}");
        assert_eq!(after["messages"], 1, "a fresh instance: this is its first message ({after})");
        assert_eq!(after["muxSockets"], 1, "{after}");
        assert_eq!(after["streams"], 1, "the snippet's stream table came back from the attachment: {after}");
        assert_eq!(rpc(&mut via_snippet, "echo", json!(["after"]), 2).await["result"], json!(["after"]));
        let sql = json!({ "sql": "select ? + 1 as n", "params": [41] });
        assert_eq!(rpc(&mut direct, "sql", sql, 3).await["result"]["rows"], json!([[42]]));
    });
}

/// The next message on `ws`, and when it came (since `t0`).
async fn arrival(ws: &mut Ws, t0: std::time::Instant) -> (Message, Duration) {
    let m = next_message(ws).await;
    (m, t0.elapsed())
}

/// A Durable Object busy with one statement answers nothing until it ends, not even the
/// runtime's auto-response, on its own sockets or (locally) on another object's
/// (RUNTIME.md §17). That is why the snippet tells a busy backend from a dead one by time
/// (`BACKEND_BUSY_MS`), not by an auto-response. Should this fail, the runtime answers
/// while busy, and an auto-response heartbeat could tell the two apart.
#[test]
fn a_busy_object_answers_not_even_its_auto_response_until_its_statement_ends() {
    e2e().run(async |stack| {
        let url = |tenant: &str, path: &str| format!("{}/db/{tenant}/{path}", stack.backend.ws());
        let mut slow = ws_connect(&url("busy", "ws"), Some(&stack.token)).await.expect("ws");
        let mut same = ws_connect(&url("busy", "mux"), Some(&stack.token)).await.expect("mux");
        let mut other = ws_connect(&url("not-busy", "ws"), Some(&stack.token)).await.expect("ws");
        for ws in [&mut same, &mut other] {
            ws.send(Message::Text("ping".into())).await.expect("ping");
            assert_eq!(next_message(ws).await, Message::Text("pong".into()), "answered while idle");
        }
        let sql = "with recursive c(x) as (select 1 union all select x + 1 from c where x < 30000000) \
                   select count(*) from c";
        let call = json!({ "jsonrpc": "2.0", "method": "sql", "params": { "sql": sql }, "id": 1 });
        let started = std::time::Instant::now();
        slow.send(Message::Text(call.to_string().into())).await.expect("send");
        tokio::time::sleep(Duration::from_millis(300)).await;
        for ws in [&mut same, &mut other] {
            ws.send(Message::Text("ping".into())).await.expect("ping");
        }
        let ((reply, done), (pong, same_at), (pong2, other_at)) =
            tokio::join!(arrival(&mut slow, started), arrival(&mut same, started), arrival(&mut other, started));
        eprintln!(
            "statement answered at {done:?}; auto-responses at {same_at:?} (same object), {other_at:?} (another)"
        );
        assert!(matches!(reply, Message::Text(ref t) if t.contains("30000000")), "{reply:?}");
        assert!(done > Duration::from_secs(2), "the statement must take long enough to tell: {done:?}");
        assert_eq!((pong, pong2), (Message::Text("pong".into()), Message::Text("pong".into())));
        let ended = done.saturating_sub(Duration::from_millis(500));
        assert!(same_at > ended && other_at > ended, "no auto-response while the statement ran");
    });
}

#[test]
fn malformed_mux_frames_get_a_session_error_and_spare_other_streams() {
    e2e().run(async |stack| {
        // A client of the snippet keeps working throughout.
        let mut bystander =
            ws_connect(&format!("{}/ws", stack.snippet.ws()), Some(&stack.client_token)).await.expect("ws");
        assert_eq!(rpc(&mut bystander, "ping", json!([]), 1).await["result"], "pong");

        let mut mux =
            ws_connect(&format!("{}/db/default/mux", stack.backend.ws()), Some(&stack.token)).await.expect("mux");
        let session_error = |msg: Message| -> ErrorFrame {
            let Message::Binary(b) = msg else { panic!("expected a binary batch, got {msg:?}") };
            let f = decode_message(&b).expect("version").next().expect("a frame").expect("valid frame");
            assert_eq!((f.kind, f.stream), (FrameKind::Error, StreamId::SESSION));
            ErrorFrame::decode(f.payload).expect("error payload")
        };
        for garbage in [vec![], vec![42, 1, 2, 3], vec![protocol::VERSION, 99, 0, 0], b"not a batch".to_vec()] {
            mux.send(Message::Binary(garbage.into())).await.expect("send");
            let e = session_error(next_message(&mut mux).await);
            assert_eq!(e.code, 400, "{}", e.message);
        }
        mux.send(Message::Text("text is not a batch either".into())).await.expect("send");
        assert_eq!(session_error(next_message(&mut mux).await).code, 400);

        // The same session still works.
        let mut batch = Vec::new();
        protocol::begin_message(&mut batch);
        let identity = Identity { subject: "t".into(), tenant: "default".into(), scopes: "read".into(), expires_at: 0 };
        protocol::encode_frame(
            &mut batch,
            FrameKind::Open,
            StreamId(9),
            &Open { path: "/echo".into(), identity, attach: None }.encode(),
        )
        .expect("frame");
        protocol::encode_frame(&mut batch, FrameKind::Binary, StreamId(9), &[1, 2, 3]).expect("frame");
        mux.send(Message::Binary(batch.into())).await.expect("send");
        let Message::Binary(b) = next_message(&mut mux).await else { panic!("binary") };
        let f = decode_message(&b).expect("v").next().expect("frame").expect("ok");
        assert_eq!((f.kind, f.stream, f.payload), (FrameKind::Binary, StreamId(9), &[1u8, 2, 3][..]));

        assert_eq!(rpc(&mut bystander, "ping", json!([]), 2).await["result"], "pong");
    });
}

/// On the shared stack, under a tenant of its own: every stream of it is this test's.
#[test]
fn the_backend_pushes_to_streams_unprompted() {
    const TENANT: &str = "pushes";
    e2e().tenant(TENANT).run(async |stack| {
        let mut a = ws_connect(&format!("{}/ws", stack.snippet.ws()), Some(&stack.client_token)).await.expect("ws");
        let mut b = ws_connect(&format!("{}/ws", stack.snippet.ws()), Some(&stack.client_token)).await.expect("ws");
        let mut direct =
            ws_connect(&format!("{}/db/{TENANT}/ws", stack.backend.ws()), Some(&stack.token)).await.expect("ws");
        assert_eq!(rpc(&mut b, "ping", json!([]), 1).await["result"], "pong"); // b's stream is open
        assert_eq!(rpc(&mut direct, "ping", json!([]), 1).await["result"], "pong");
        let reply = rpc(&mut a, "broadcast", json!({ "message": "hello" }), 7).await;
        assert_eq!(reply["result"]["delivered"], 3, "a, b and the direct socket: {reply}");
        // An admin's stats over a multiplexed stream (reads the same stream tables).
        let admin = stack.mint("ops", TENANT, "admin", 600);
        let mut c = ws_connect(&format!("{}/ws", stack.snippet.ws()), Some(&admin)).await.expect("ws");
        let stats = rpc(&mut c, "stats", json!([]), 8).await;
        assert!(stats["result"]["streams"].as_u64().is_some_and(|n| n >= 3), "{stats}");
        // A caller without read gets no broadcasts.
        let publisher = stack.mint("pub", TENANT, "publish", 600);
        let mut p = ws_connect(&format!("{}/ws", stack.snippet.ws()), Some(&publisher)).await.expect("ws");
        let reply = rpc(&mut p, "broadcast", json!({ "message": "second" }), 9).await;
        assert_eq!(reply["result"]["delivered"], 4, "a, b, c and direct; not the publisher: {reply}");
        let note = json!({ "jsonrpc": "2.0", "method": "broadcast", "params": { "message": "hello" } });
        for ws in [&mut b, &mut direct] {
            let Message::Text(t) = next_message(ws).await else { panic!("text") };
            assert_eq!(serde_json::from_str::<Value>(&t).expect("json"), note);
        }
    });
}
