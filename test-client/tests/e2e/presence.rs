//! An app sees each client once, from its first open to its real close, however often the
//! snippet hands its upstream over in between — for both Durable Object packages: the
//! Rust crate (`examples/rs-presence`, on `do-server`) and the TypeScript one
//! (`examples/ts-chat`, on `server-ts`). Both log every open and close in one format:
//! `presence: open <client id> <subject>`, `presence: close <client id> <subject> <code> <reason>`.
//!
//! The upstream's owner is one client's context, and it hands over each time that client
//! leaves, so a rolling population — each client joining while others stay, and leaving
//! after a few seconds — makes hand-overs happen under clients that stay. HTTP requests in
//! between (whose owners hand over after `OWNER_LIFETIME_MS`) add hand-overs of their own.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};

use crate::common::*;

/// Clients in the rolling population, one joining every [`JOIN_EVERY`].
const CLIENTS: usize = 24;
const JOIN_EVERY: Duration = Duration::from_millis(300);
/// A client pings this often for as long as it stays (2–3 s).
const PING_EVERY: Duration = Duration::from_millis(100);
/// HTTP pings through the snippet come this often, from before the first client joins
/// until the last has left.
const HTTP_EVERY: Duration = Duration::from_millis(250);
/// Every client leaves with 1000 and this reason: a close with anything else is not the
/// client's own.
const BYE: &str = "bye";
/// How long a client stranded by a failed adoption would wait before the object closes
/// it as lost (1006): `HANDOVER_GRACE_MS` of do-server and `handoverGraceMs` of server-ts,
/// 5 s, plus a margin. A stray close could only appear within it.
const GRACE: Duration = Duration::from_millis(6_000);

/// What the backend logged for one subject.
#[derive(Debug, Default)]
struct Seen {
    /// Client ids it was opened as.
    opens: Vec<String>,
    /// (client id, code, reason) of each close.
    closes: Vec<(String, u16, String)>,
}

/// The backend log's presence lines, by subject.
fn presence(log: &str) -> BTreeMap<String, Seen> {
    let mut by_subject: BTreeMap<String, Seen> = BTreeMap::new();
    for line in log.lines() {
        let Some((_, rest)) = line.split_once("presence: ") else { continue };
        let rest = rest.trim_end();
        if let Some(open) = rest.strip_prefix("open ") {
            let (id, subject) = open.split_once(' ').unwrap_or((open, ""));
            by_subject.entry(subject.to_owned()).or_default().opens.push(id.to_owned());
        } else if let Some(close) = rest.strip_prefix("close ") {
            let mut parts = close.splitn(4, ' ');
            let (id, subject) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let code = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
            let reason = parts.next().unwrap_or("").to_owned();
            by_subject.entry(subject.to_owned()).or_default().closes.push((id.to_owned(), code, reason));
        }
    }
    by_subject
}

/// One client's stay: connects, pings every [`PING_EVERY`] for `life` (each answered with
/// `pong`, or the task panics), then leaves with a clean close. Returns its pings.
async fn stay(url: String, token: String, life: Duration) -> u64 {
    let mut ws = ws_connect(&url, Some(&token)).await.expect("the client connects");
    let until = Instant::now() + life;
    let mut pings = 0;
    while Instant::now() < until {
        pings += 1;
        let reply = rpc(&mut ws, "ping", json!([]), pings).await;
        assert_eq!(reply["result"], "pong", "{reply}");
        tokio::time::sleep(PING_EVERY).await;
    }
    ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: BYE.into() })).await.expect("close");
    // Read to the end: the snippet answers the close, then the stream ends.
    let drained = tokio::time::timeout(Duration::from_secs(10), async { while let Some(Ok(_)) = ws.next().await {} });
    drained.await.expect("the snippet answers the close");
    pings
}

/// HTTP JSON-RPC pings through the snippet until `stop`; each must be answered. Returns
/// how many.
async fn http_pings(url: String, token: String, stop: Arc<AtomicBool>) -> u64 {
    let mut pings = 0;
    while !stop.load(Ordering::SeqCst) {
        pings += 1;
        let (status, reply) =
            post(&url, Some(&token), &json!({ "jsonrpc": "2.0", "method": "ping", "id": pings })).await;
        assert_eq!((status, &reply["result"]), (200, &json!("pong")), "{reply}");
        tokio::time::sleep(HTTP_EVERY).await;
    }
    pings
}

fn rolling_population_is_seen_once_per_client_across_handovers(backend_dir: &str) {
    let started = Instant::now();
    let subjects: Vec<String> = (0..CLIENTS).map(|i| format!("presence-{i:02}")).collect();
    // Short owner lifetimes (a stack of its own): HTTP owners hand over too.
    e2e().backend_dir(backend_dir).vars(&[("OWNER_LIFETIME_MS", "1000")]).run(async |stack| {
        // HTTP first, so the upstream starts with an HTTP owner, which hands over to a
        // client's context once one is there.
        let stop = Arc::new(AtomicBool::new(false));
        let http_token = stack.mint("presence-http", "*", "read write", 3600);
        let http = tokio::spawn(http_pings(format!("{}/rpc", stack.snippet.http()), http_token, stop.clone()));
        tokio::time::sleep(Duration::from_millis(500)).await;

        let url = format!("{}/ws", stack.snippet.ws());
        let mut clients = Vec::new();
        for (i, sub) in subjects.iter().enumerate() {
            let token = stack.mint(sub, "*", "read write", 3600);
            // 2.0 to 3.0 s, varied but the same on every run.
            let life = Duration::from_millis(2_000 + (i as u64 * 7 % 5) * 250);
            clients.push(tokio::spawn(stay(url.clone(), token, life)));
            tokio::time::sleep(JOIN_EVERY).await;
        }
        let mut ws_pings = 0;
        for c in clients {
            ws_pings += c.await.expect("every ping of every client was answered");
        }
        let left = Instant::now();
        stop.store(true, Ordering::SeqCst);
        let http_pings = http.await.expect("every HTTP ping was answered");

        // Every client's close reached the app: wait for the lines, not a fixed time.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let seen = presence(&stack.backend.log());
            let closed = subjects.iter().filter(|s| seen.get(*s).is_some_and(|x| !x.closes.is_empty())).count();
            if closed == CLIENTS {
                break;
            }
            assert!(Instant::now() < deadline, "{closed} of {CLIENTS} closes logged: {seen:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A client a hand-over failed to adopt would close as lost only after the grace
        // window: wait it out before asserting that no such close came.
        tokio::time::sleep(GRACE.saturating_sub(left.elapsed())).await;

        let seen = presence(&stack.backend.log());
        for sub in &subjects {
            let s = seen.get(sub).unwrap_or_else(|| panic!("{sub} never reached the app: {seen:?}"));
            assert_eq!(s.opens.len(), 1, "{sub} is opened exactly once: {s:?}");
            assert_eq!(s.closes.len(), 1, "{sub} is closed exactly once: {s:?}");
            let (id, code, reason) = s.closes.first().cloned().unwrap_or_default();
            assert_eq!((code, reason.as_str()), (1000, BYE), "{sub}'s one close is its own: {s:?}");
            assert_eq!(s.opens.first(), Some(&id), "{sub} keeps its client id to the end: {s:?}");
        }
        let strangers: Vec<&String> = seen.keys().filter(|k| !subjects.contains(k)).collect();
        assert!(strangers.is_empty(), "no other client opened or closed: {strangers:?} in {seen:?}");

        let s = stats_until(stack, |s| s["activeClients"] == 0).await;
        let handovers = n(&s, "handovers");
        eprintln!(
            "{backend_dir}: {CLIENTS} clients, {handovers} hand-overs ({} retirements), {ws_pings} WebSocket pings \
             and {http_pings} HTTP pings answered; {:.1} s with the stack's start",
            n(&s, "retirements"),
            started.elapsed().as_secs_f64()
        );
        assert!(handovers >= 3, "hand-overs happened while clients stayed: {s}");
        assert_eq!(n(&s, "errors"), 0, "{s}");
        assert_eq!(n(&s, "backendReconnects"), 0, "hand-overs, not reconnects: {s}");
        // The object saw the same from its side: the barriers of those hand-overs, the
        // clients it moved, none lost, nothing refused (its view counts since it woke).
        let view = do_view(stack, "default").await;
        let totals = &view["totals"];
        assert!(n(totals, "handovers") >= 1 && n(totals, "adopted") >= 1, "{backend_dir}: {view}");
        assert_eq!((n(totals, "lost"), n(totals, "errors")), (0, 0), "{backend_dir}: {view}");
        assert_eq!(totals["refused"].as_object().map(|r| r.values().filter_map(Value::as_u64).sum::<u64>()), Some(0));
    });
}

#[test]
fn a_rust_object_sees_each_client_once_across_handovers() {
    rolling_population_is_seen_once_per_client_across_handovers("examples/rs-presence");
}

#[test]
fn a_typescript_object_sees_each_client_once_across_handovers() {
    rolling_population_is_seen_once_per_client_across_handovers("examples/ts-chat");
}
