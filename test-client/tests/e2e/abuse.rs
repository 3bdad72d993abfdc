//! No client can hurt the others (RELIABILITY.md): each test throws one kind of abuse
//! at the snippet and asserts that the limit holds AND that a bystander on the same
//! upstream keeps its p99 round trip within 2× of an unloaded run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use test_client::stack::RUNTIME_CLOSE_NOISE;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

#[test]
fn a_huge_broadcast_is_refused_and_a_wide_one_is_split_with_the_upstream_kept() {
    // On the shared stack, under a tenant of its own: every stream of it is this test's.
    e2e().tenant("huge-broadcast").run(async |stack| {
        let start = stack.snippet_stats().await.expect("stats");
        let url = format!("{}/ws", stack.snippet.ws());
        let mut listeners = Vec::new();
        for _ in 0..40 {
            listeners.push(ws_connect(&url, Some(&stack.client_token)).await.expect("listener"));
        }
        let mut publisher = ws_connect(&url, Some(&stack.client_token)).await.expect("publisher");
        let ((huge, wide), _, _) = with_bystander(stack, async {
            let huge = rpc(&mut publisher, "broadcast", json!({ "message": "h".repeat(900 * 1024) }), 1).await;
            let wide = rpc(&mut publisher, "broadcast", json!({ "message": "w".repeat(60 * 1024) }), 2).await;
            (huge, wide)
        })
        .await;
        assert_eq!(huge["error"]["code"], -32602, "0.9 MB × 40 listeners is refused: {}", &huge.to_string()[..200]);
        assert!(huge["error"]["message"].as_str().unwrap_or_default().contains("limit"), "{huge}");
        // 60 KiB to every JSON-RPC stream (40 listeners, the publisher, the bystander).
        assert!(wide["result"]["delivered"].as_u64().unwrap_or(0) >= 41, "{wide}");
        for ws in &mut listeners {
            match next_message(ws).await {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).expect("JSON");
                    assert_eq!(v["method"], "broadcast");
                    assert_eq!(v["params"]["message"].as_str().map(str::len), Some(60 * 1024));
                }
                other => panic!("expected the broadcast, got {other:?}"),
            }
        }
        let stats = stack.snippet_stats().await.expect("stats");
        let grew = |field| delta(&start, &stats, field);
        assert_eq!((grew("backendConnects"), grew("backendDisconnects")), (1, 0), "{stats}");
    });
}

#[test]
fn a_300_mb_chunked_body_is_refused_while_it_is_still_being_sent() {
    e2e()
        // Linear memory only grows: after other tests it could hold the body unseen.
        .own_stack("measures how the snippet's wasm memory grows")
        // The uploading client's connection is cut mid-body (RUNTIME.md §16).
        .tolerating(&[RUNTIME_CLOSE_NOISE])
        .run(async |stack| {
            let before = stack.snippet_stats().await.expect("stats");
            let rss_before = stack.snippet.workerd_rss_kb().unwrap_or(0);
            let sent = Arc::new(AtomicU64::new(0));
            let (status, at) = with_bystander(stack, async {
                let sock = tokio::net::TcpStream::connect(("127.0.0.1", stack.snippet.port)).await.expect("connect");
                let (mut rd, mut wr) = sock.into_split();
                let head = format!(
                    "POST /rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
                     Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
                    stack.client_token
                );
                let counter = sent.clone();
                let writer = tokio::spawn(async move {
                    wr.write_all(head.as_bytes()).await?;
                    let chunk = vec![b' '; 64 * 1024];
                    while counter.load(Ordering::Relaxed) < 300 * 1024 * 1024 {
                        wr.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await?;
                        wr.write_all(&chunk).await?;
                        wr.write_all(b"\r\n").await?;
                        counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                    wr.write_all(b"0\r\n\r\n").await
                });
                let mut buf = vec![0u8; 4096];
                let read = tokio::time::timeout(Duration::from_secs(60), rd.read(&mut buf)).await;
                let at = sent.load(Ordering::Relaxed);
                writer.abort();
                let n = read.expect("a response within 60 s").expect("read");
                let text = String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned();
                (text.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok()), at)
            })
            .await
            .0;
            let rss_after = stack.snippet.workerd_rss_kb().unwrap_or(0);
            let after = stack.snippet_stats().await.expect("stats");
            let grown = n(&after, "wasmMemoryBytes").saturating_sub(n(&before, "wasmMemoryBytes"));
            eprintln!(
                "chunked upload: answered {status:?} after {:.1} MiB sent; workerd RSS {} → {} MiB; wasm memory +{} KiB",
                at as f64 / 1048576.0,
                rss_before / 1024,
                rss_after / 1024,
                grown / 1024
            );
            assert_eq!(status, Some(413));
            assert!(at < 64 * 1024 * 1024, "refused early, not after {at} bytes");
            assert!(grown <= 4 * 1024 * 1024, "the snippet held at most about the limit: wasm memory +{grown} bytes");
        });
}

#[test]
fn a_flooding_client_is_closed_1008_and_a_flooding_caller_gets_429() {
    e2e()
        .vars(&[("CALLER_REQUESTS_PER_SEC", "50")])
        // The snippet closes the flooder with 1008 (RUNTIME.md §16).
        .tolerating(&[RUNTIME_CLOSE_NOISE])
        .run(async |stack| {
            let flood_token = stack.mint("flood", "*", "read write", 600);
            let ((close, statuses), _, _) = with_bystander(stack, async {
                let url = format!("{}/ws/echo", stack.snippet.ws());
                let mut flooder = ws_connect(&url, Some(&flood_token)).await.expect("flooder");
                for i in 0..3_000u32 {
                    if flooder.send(Message::Text(format!("flood {i}").into())).await.is_err() {
                        break;
                    }
                }
                let close = close_frame(&mut flooder, 20).await.flatten();
                let client = reqwest::Client::new();
                let rpc_url = format!("{}/rpc", stack.snippet.http());
                let ping = json!({ "jsonrpc": "2.0", "method": "ping", "id": 1 });
                let calls = (0..200).map(|_| {
                    let req = client.post(&rpc_url).bearer_auth(&flood_token).json(&ping);
                    async move {
                        let res = req.send().await.expect("POST");
                        (res.status().as_u16(), res.headers().get("Retry-After").is_some())
                    }
                });
                let statuses: Vec<(u16, bool)> = futures_util::stream::iter(calls).buffer_unordered(8).collect().await;
                (close, statuses)
            })
            .await;
            let (code, reason) = close.expect("the flooder was closed");
            assert_eq!(code, 1008, "{reason}");
            assert!(reason.contains("rate limit"), "{reason}");
            let limited = statuses.iter().filter(|(s, _)| *s == 429).count();
            let ok = statuses.iter().filter(|(s, _)| *s == 200).count();
            eprintln!("HTTP flood of 200 requests at 50/s allowed: {ok} answered, {limited} refused 429");
            assert!(limited > 0 && ok >= 50, "{ok} ok, {limited} limited");
            assert_eq!(ok + limited, 200, "every request got an answer: {statuses:?}");
            assert!(statuses.iter().all(|(s, retry)| *s != 429 || *retry), "every 429 says when to retry");
            // Another caller is not limited by the flood.
            let body = json!({ "jsonrpc": "2.0", "method": "ping", "id": 2 });
            let (status, _) = post(&format!("{}/rpc", stack.snippet.http()), Some(&stack.client_token), &body).await;
            assert_eq!(status, 200);
            let stats = stack.snippet_stats().await.expect("stats");
            assert!(n(&stats, "rateLimited") > limited as u64, "{stats}");
        });
}

/// The runtime queues what a socket cannot write yet with no bound of its own and shows
/// a Worker nothing of it (RUNTIME.md §12). This measures where the echoes of a client
/// that never reads pile up — not in the snippet (its memory stays flat) but in
/// workerd's native memory — and that the client's byte rate is what bounds their growth.
#[test]
fn a_client_that_never_reads_costs_the_snippet_nothing_and_others_nothing() {
    e2e()
        // Linear memory only grows: after other tests it could hold the echoes unseen.
        .own_stack("measures how the snippet's wasm memory grows")
        // The non-reader's socket is dropped with megabytes unread (RUNTIME.md §16).
        .tolerating(&[RUNTIME_CLOSE_NOISE])
        .run(async |stack| {
            let url = format!("{}/ws/echo", stack.snippet.ws());
            let mut sink = ws_connect(&url, Some(&stack.client_token)).await.expect("non-reader");
            let before = stack.snippet_stats().await.expect("stats");
            let rss_before = stack.snippet.workerd_rss_kb().unwrap_or(0);
            let started = Instant::now();
            // Just under the default CLIENT_BYTES_PER_SEC (4 MiB/s): 64 KiB 50 times a second.
            let (sent, _, _) = with_bystander(stack, async {
                let chunk = vec![7u8; 64 * 1024];
                let mut sent = 0u64;
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                for _ in 0..400 {
                    tick.tick().await;
                    if sink.send(Message::Binary(chunk.clone().into())).await.is_err() {
                        break;
                    }
                    sent += chunk.len() as u64;
                }
                sent
            })
            .await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let after = stack.snippet_stats().await.expect("stats");
            let rss_after = stack.snippet.workerd_rss_kb().unwrap_or(0);
            let grown = n(&after, "wasmMemoryBytes").saturating_sub(n(&before, "wasmMemoryBytes"));
            eprintln!(
                "non-reader: sent {} MiB of echoes in {:.1} s, never read; snippet wasm memory +{} KiB; \
                 workerd RSS {} → {} MiB",
                sent / 1048576,
                started.elapsed().as_secs_f64(),
                grown / 1024,
                rss_before / 1024,
                rss_after / 1024
            );
            assert_eq!(sent, 400 * 64 * 1024, "within its rate the non-reader is not refused");
            assert!(grown <= 4 * 1024 * 1024, "the snippet buffers nothing for a non-reader: +{grown} bytes");
            let messages_down = n(&after, "messagesDown") - n(&before, "messagesDown");
            assert!(messages_down >= 400, "every echo was handed on to the runtime: {messages_down}");
            assert_eq!(n(&after, "backendConnects"), 1, "{after}");
        });
}

#[test]
fn one_caller_holding_1005_idle_streams_is_refused_cleanly_past_its_limit() {
    // The connection cap is under test, not the upgrade rate (tested below): 1,005
    // upgrades at once are far past a caller's default upgrade allowance.
    e2e()
        .vars(&[("CALLER_REQUESTS_PER_SEC", "0")])
        // The 1,000 held sockets are dropped without a close handshake (RUNTIME.md §16).
        .tolerating(&[RUNTIME_CLOSE_NOISE])
        .run(async |stack| {
            let hog = stack.mint("hog", "*", "read", 600);
            let url = format!("{}/ws", stack.snippet.ws());
            let ((held, refused), _, _) = with_bystander(stack, async {
                let opens = (0..1_005).map(|_| ws_connect(&url, Some(&hog)));
                let results: Vec<Result<Ws, u16>> = futures_util::stream::iter(opens).buffered(16).collect().await;
                let refused: Vec<u16> = results.iter().filter_map(|r| r.as_ref().err().copied()).collect();
                let held: Vec<Ws> = results.into_iter().filter_map(Result::ok).collect();
                (held, refused)
            })
            .await;
            assert_eq!(held.len(), 1_000, "MAX_CONNECTIONS_PER_CALLER");
            assert_eq!(refused, vec![429; 5], "refused before the upgrade, with 429");
            // Everyone else is still served, and the held streams are live, not half-dead.
            let mut later = ws_connect(&url, Some(&stack.client_token)).await.expect("another caller");
            assert_eq!(rpc(&mut later, "ping", json!([]), 1).await["result"], "pong");
            let mut last = held.into_iter().last().expect("one held");
            assert_eq!(rpc(&mut last, "ping", json!([]), 2).await["result"], "pong");
            let stats = stats_until(stack, |s| n(s, "activeClients") >= 1_002).await;
            assert_eq!(n(&stats, "refused"), 5, "{stats}");
            assert_eq!(n(&stats, "errors"), 0, "no stream was accepted and then failed: {stats}");
        });
}

/// A caller that opens and closes WebSockets in a loop (each costs the object an Open, a
/// Close and a stored entry) is refused with 429 once past its upgrade allowance, while a
/// bystander of the same tenant keeps being answered.
#[test]
fn a_caller_churning_upgrades_gets_429_and_bystanders_are_served() {
    e2e()
        // The churning client drops each socket right after its close frame (RUNTIME.md §16).
        .tolerating(&[RUNTIME_CLOSE_NOISE])
        .run(async |stack| {
            let start = stack.snippet_stats().await.expect("stats");
            let churner = stack.mint("churner", "*", "read", 600);
            let url = format!("{}/ws", stack.snippet.ws());
            let ((opened, refused, other), unloaded, loaded) = with_bystander(stack, async {
                let (mut opened, mut refused, mut other) = (0u32, 0u32, 0u32);
                let until = std::time::Instant::now() + Duration::from_secs(4);
                while std::time::Instant::now() < until {
                    match ws_connect(&url, Some(&churner)).await {
                        Ok(mut ws) => {
                            opened += 1;
                            let _ = ws.close(None).await;
                        }
                        Err(429) => refused += 1,
                        Err(_) => other += 1,
                    }
                }
                (opened, refused, other)
            })
            .await;
            eprintln!("churn: {opened} upgrades accepted, {refused} refused with 429 in 4 s; bystander p99 {loaded:.2} ms vs {unloaded:.2} ms");
            assert_eq!(other, 0, "every refusal is a 429");
            assert!(refused > 0, "a caller past its allowance is refused: {opened} accepted");
            assert!(opened <= 100 + 4 * 100 + 10, "at most the burst plus the rate: {opened}");
            let stats = stack.snippet_stats().await.expect("stats");
            assert!(delta(&start, &stats, "rateLimited") >= u64::from(refused), "{stats}");
        });
}

/// Reply amplification: a 775-byte JSON-RPC batch asks for 4 MB of results. A client that
/// sends ten a second and never reads is sent away with 1008 once past its reply budget
/// (`CLIENT_REPLY_BYTES_PER_SEC`), so the runtime's queue for it stops growing, and a
/// bystander of the same upstream is served throughout.
#[test]
fn a_client_owed_more_than_its_reply_budget_is_sent_away_and_memory_stays_bounded() {
    e2e()
        // Memory freed by earlier tests would take the runtime's queue unseen.
        .own_stack("measures how workerd's memory grows")
        // The greedy client is closed with 1008 and never reads its close (RUNTIME.md §16).
        .tolerating(&[RUNTIME_CLOSE_NOISE])
        .run(async |stack| {
            let url = format!("{}/ws", stack.snippet.ws());
            let mut greedy = ws_connect(&url, Some(&stack.client_token)).await.expect("ws");
            let sql = |id: u64| {
                let q = "select hex(randomblob(250000)) as v";
                json!({ "jsonrpc": "2.0", "method": "sql", "params": { "sql": q }, "id": id })
            };
            let batch = Value::Array((1..=8).map(sql).collect()).to_string();
            let rss_before = stack.snippet.workerd_rss_kb().unwrap_or(0);
            let (sent, _, _) = with_bystander(stack, async {
                let mut sent = 0;
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                for _ in 0..40 {
                    tick.tick().await;
                    if greedy.send(Message::Text(batch.clone().into())).await.is_err() {
                        break;
                    }
                    sent += 1;
                }
                sent
            })
            .await;
            let rss_after = stack.snippet.workerd_rss_kb().unwrap_or(0);
            let close = close_frame(&mut greedy, 30).await;
            eprintln!(
                "greedy: {sent} batches of {} bytes sent (4 MB of results each), never read; workerd RSS {} → {} MiB; {close:?}",
                batch.len(),
                rss_before / 1024,
                rss_after / 1024
            );
            let (code, reason) = close.flatten().expect("a close frame with a code");
            assert_eq!(code, 1008, "{reason}");
            assert!(reason.contains("reply rate exceeded"), "{reason}");
            assert!(rss_after.saturating_sub(rss_before) < 64 * 1024, "RSS grew by {} MiB", (rss_after - rss_before) / 1024);
            let stats = stack.snippet_stats().await.expect("stats");
            assert!(n(&stats, "rateLimited") >= 1, "{stats}");
            assert_eq!(n(&stats, "backendConnects"), 1, "the upstream was never touched: {stats}");
        });
}

#[test]
fn oversized_results_and_batch_replies_are_errors_not_silence() {
    e2e().run(async |stack| {
        let url = format!("{}/ws", stack.snippet.ws());
        let mut ws = ws_connect(&url, Some(&stack.client_token)).await.expect("ws");
        let sql = |id: u64, q: &str| json!({ "jsonrpc": "2.0", "method": "sql", "params": { "sql": q }, "id": id });
        let ((single, batch, http), _, _) = with_bystander(stack, async {
            // 600,000 characters: over the 512 KiB result limit.
            let single = rpc(&mut ws, "sql", json!({ "sql": "select hex(zeroblob(300000)) as v" }), 1).await;
            // Ten results of ~500 KB: each fits alone, together they pass the 4 MiB reply limit.
            let calls: Vec<Value> = (10..20).map(|i| sql(i, "select hex(zeroblob(250000)) as v")).collect();
            ws.send(Message::Text(Value::Array(calls.clone()).to_string().into())).await.expect("send");
            let batch = match next_message(&mut ws).await {
                Message::Text(t) => serde_json::from_str::<Value>(&t).expect("JSON"),
                other => panic!("expected the batch reply, got {other:?}"),
            };
            let http =
                post(&format!("{}/rpc", stack.snippet.http()), Some(&stack.client_token), &Value::Array(calls)).await;
            (single, batch, http)
        })
        .await;
        assert_eq!(single["error"]["code"], -32001, "{}", &single.to_string()[..200.min(single.to_string().len())]);
        for (name, reply) in [("WebSocket", &batch), ("HTTP", &http.1)] {
            let replies = reply.as_array().unwrap_or_else(|| panic!("{name}: a batch reply"));
            let too_large = replies.iter().filter(|r| r["error"]["code"] == -32005).count();
            let answered = replies.iter().filter(|r| r["result"]["rows"].is_array()).count();
            eprintln!("{name} batch of 10 × 500 KB: {answered} answered, {too_large} REPLY_TOO_LARGE");
            assert_eq!(answered + too_large, 10, "{name}: every call answered one way or the other");
            assert!(too_large >= 1 && answered >= 1, "{name}: {answered} answered, {too_large} too large");
        }
        assert_eq!(http.0, 200);
        // Blobs travel as base64.
        let blob = rpc(&mut ws, "sql", json!({ "sql": "select zeroblob(3) as b" }), 2).await;
        assert_eq!(blob["result"]["rows"], json!([[{ "$blob": "AAAA" }]]), "{blob}");
    });
}

/// Rows the long statement counts: ~5 s of one core here, more than 2 × HEARTBEAT_MS
/// (2 s in the test below) and well under REQUEST_TIMEOUT_MS and HEARTBEAT_MS +
/// BACKEND_BUSY_MS (30 s, 31 s). The test asserts the statement did outlast 2 × HEARTBEAT_MS.
const LONG_COUNT: u64 = 30_000_000;

/// `f`'s output and how long it took.
async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let t = Instant::now();
    let out = f.await;
    (out, t.elapsed())
}

/// The next text message on `ws` within `secs` (a long statement's reply takes seconds).
async fn text_within(ws: &mut Ws, secs: u64) -> Value {
    let next = tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return serde_json::from_str::<Value>(&t).expect("JSON"),
                Some(Ok(Message::Close(f))) => panic!("closed while waiting: {f:?}"),
                Some(Ok(_)) => continue,
                other => panic!("socket ended: {other:?}"),
            }
        }
    });
    next.await.expect("a reply in time")
}

/// One `read` statement keeps the tenant's Durable Object busy for longer than
/// 2 × HEARTBEAT_MS. The object answers nothing meanwhile, not even its runtime's
/// auto-response (RUNTIME.md §17), so the tenant's other calls wait for it; but a busy
/// object is not a dead one: nobody is closed 1012 and no request gets 502 (before
/// BACKEND_BUSY_MS, the heartbeat dropped the upstream at 2 × HEARTBEAT_MS, and both
/// happened).
#[test]
fn a_long_read_statement_delays_its_tenant_and_disconnects_no_one() {
    e2e().vars(&[("HEARTBEAT_MS", "1000")]).run(async |stack| {
        let url = format!("{}/ws", stack.snippet.ws());
        let mut slow = ws_connect(&url, Some(&stack.mint("slow", "default", "read", 600))).await.expect("ws");
        let (mut a, mut b) = (bystander(stack).await, bystander(stack).await);
        let sql = format!(
            "with recursive c(x) as (select 1 union all select x + 1 from c where x < {LONG_COUNT}) \
             select count(*) from c"
        );
        let call = json!({ "jsonrpc": "2.0", "method": "sql", "params": { "sql": sql }, "id": 1 });
        let started = Instant::now();
        slow.send(Message::Text(call.to_string().into())).await.expect("send");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ping = json!({ "jsonrpc": "2.0", "method": "ping", "id": 2 });
        let rpc_url = format!("{}/rpc", stack.snippet.http());
        let ((ra, da), (rb, db), ((status, body), dh)) = tokio::join!(
            timed(rpc(&mut a, "echo", json!(["a"]), 2)),
            timed(rpc(&mut b, "echo", json!(["b"]), 2)),
            timed(post(&rpc_url, Some(&stack.client_token), &ping)),
        );
        let reply = text_within(&mut slow, 60).await;
        let took = started.elapsed();
        eprintln!(
            "long statement: {took:?}; bystanders answered after {da:?} and {db:?}, an HTTP request after {dh:?} \
             ({status})"
        );
        assert_eq!(reply["result"]["rows"], json!([[LONG_COUNT]]), "{reply}");
        assert!(took > Duration::from_millis(2_500), "the statement must outlast 2 × HEARTBEAT_MS: {took:?}");
        assert_eq!((ra["result"].clone(), rb["result"].clone()), (json!(["a"]), json!(["b"])));
        assert_eq!((status, &body["result"]), (200, &json!("pong")), "{body}");
        assert!(da > Duration::from_secs(1), "delayed behind the statement, not answered by someone else: {da:?}");
        let stats = stack.snippet_stats().await.expect("stats");
        let counts = ["heartbeatFailures", "backendDisconnects", "backendConnects"].map(|f| n(&stats, f));
        assert_eq!(counts, [0, 0, 1], "{stats}");
        for ws in [&mut a, &mut b, &mut slow] {
            assert_eq!(rpc(ws, "ping", json!([]), 3).await["result"], "pong", "still connected");
        }
    });
}
