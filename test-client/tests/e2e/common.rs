//! Helpers shared by the end-to-end tests.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use test_client::load::{LoadOpts, Report};
use test_client::stack::{Stack, StackOpts};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Tests share two cores; never run two stacks at once even if asked to.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime")
}

pub fn start_with(vars: &[(&str, &str)], tenant: Option<&str>) -> Stack {
    let opts = StackOpts {
        snippet_vars: vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        tenant: tenant.map(str::to_owned),
        ..StackOpts::default()
    };
    Stack::start(opts).expect("stack starts")
}

pub fn start(vars: &[(&str, &str)]) -> Stack {
    start_with(vars, None)
}

/// Load options for the snippet at `url`, with the stack's client token.
pub fn client_load(stack: &Stack, url: impl Into<String>) -> LoadOpts {
    LoadOpts { token: Some(stack.client_token.clone()), ..LoadOpts::new(url) }
}

pub fn n(stats: &Value, field: &str) -> u64 {
    stats.get(field).and_then(Value::as_u64).unwrap_or_else(|| panic!("/__stats has no numeric {field}: {stats}"))
}

/// Polls `/__stats` until `pred` holds (or 10 s pass) and returns the last document.
pub async fn stats_until(stack: &Stack, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = stack.snippet_stats().await.expect("stats");
        if pred(&s) || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn assert_passed(r: &Report, expected: u64) {
    assert!(r.passed, "load failed:\n{}", r.to_text());
    assert_eq!(r.ok, expected, "{}", r.to_text());
}

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket, with a bearer token if given. Err carries the HTTP status.
pub async fn ws_connect(url: &str, token: Option<&str>) -> Result<Ws, u16> {
    let mut req = url.into_client_request().expect("valid url");
    if let Some(t) = token {
        req.headers_mut().insert("Authorization", format!("Bearer {t}").parse().expect("header"));
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
        Err(e) => panic!("connect {url}: {e}"),
    }
}

/// The next text or binary message (skips control frames), within 10 s.
pub async fn next_message(ws: &mut Ws) -> Message {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.expect("a message within 10 s");
        match msg.expect("socket open").expect("no socket error") {
            m @ (Message::Text(_) | Message::Binary(_) | Message::Close(_)) => return m,
            _ => continue,
        }
    }
}

/// One JSON-RPC call on a WebSocket; returns the whole reply.
pub async fn rpc(ws: &mut Ws, method: &str, params: Value, id: u64) -> Value {
    let req = json!({ "jsonrpc": "2.0", "method": method, "params": params, "id": id });
    ws.send(Message::Text(req.to_string().into())).await.expect("send");
    loop {
        match next_message(ws).await {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).expect("JSON reply");
                if v.get("id") == Some(&json!(id)) {
                    return v;
                }
            }
            other => panic!("expected a JSON-RPC reply, got {other:?}"),
        }
    }
}

/// POSTs a JSON body with an optional bearer token; returns (status, JSON body).
pub async fn post(url: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(url).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("POST");
    let status = res.status().as_u16();
    let text = res.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// A connected client that must keep working while others misbehave.
pub async fn bystander(stack: &Stack) -> Ws {
    let mut ws = ws_connect(&format!("{}/ws", stack.snippet.ws()), Some(&stack.client_token)).await.expect("ws");
    assert_eq!(rpc(&mut ws, "ping", json!([]), 1).await["result"], "pong");
    ws
}

/// Reads until a close frame, skipping everything else, for at most `secs`: `Some` of the
/// close (its code and reason; `None` inside for a close without a code), or `None` when
/// the socket errs, ends or stays silent.
pub async fn close_frame(ws: &mut Ws, secs: u64) -> Option<Option<(u16, String)>> {
    let wait = tokio::time::timeout(Duration::from_secs(secs), async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Close(f)) => return Some(f.map(|f| (u16::from(f.code), f.reason.to_string()))),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    });
    wait.await.ok().flatten()
}

/// The 99th percentile of `samples` (ms).
pub fn p99(samples: &[f64]) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(((v.len().max(1) - 1) as f64 * 0.99).round() as usize).copied().unwrap_or(0.0)
}

/// Round trips (ms) of sequential pings on `ws`, `n` of them, or until `stop` is set.
async fn pings(ws: &mut Ws, n: usize, stop: &std::sync::atomic::AtomicBool) -> Vec<f64> {
    let mut out = Vec::with_capacity(n.min(4096));
    for i in 0..n {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let t = Instant::now();
        assert_eq!(rpc(ws, "ping", json!([]), 1_000_000 + i as u64).await["result"], "pong");
        out.push(t.elapsed().as_secs_f64() * 1000.0);
        // Paced, so the bystander measures the proxy, not its own flood.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    out
}

/// Runs `abuse` while a bystander on the same upstream pings at a steady pace, asserts
/// every one of its calls was answered correctly during and after, and reports its p99
/// round trip against an unloaded run measured just before (RELIABILITY.md holds the
/// figures). The ratio is reported, not asserted: on a two-core machine that also runs
/// the abusive client, CPU contention alone moves a p99 by more than 2×.
pub async fn with_bystander<T>(stack: &Stack, abuse: impl std::future::Future<Output = T>) -> (T, f64, f64) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let mut ws = bystander(stack).await;
    let never = AtomicBool::new(false);
    let _warm = pings(&mut ws, 50, &never).await;
    let unloaded = p99(&pings(&mut ws, 300, &never).await);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let probe = tokio::spawn(async move {
        let samples = pings(&mut ws, usize::MAX, &flag).await;
        (samples, ws)
    });
    let out = abuse.await;
    stop.store(true, Ordering::Relaxed);
    let (samples, mut ws) = probe.await.expect("the bystander's calls were all answered");
    let loaded = p99(&samples);
    eprintln!(
        "bystander: {} round trips during the abuse, p99 {loaded:.2} ms vs {unloaded:.2} ms unloaded ({:.1}×)",
        samples.len(),
        loaded / unloaded.max(0.001)
    );
    assert_eq!(rpc(&mut ws, "echo", json!(["still here"]), 99).await["result"], json!(["still here"]));
    (out, unloaded, loaded)
}

/// The backend object's own counters for `tenant` (its JSON-RPC `stats`), asked directly
/// with the backend token.
pub async fn do_stats(stack: &Stack, tenant: &str) -> Value {
    let body = json!({ "jsonrpc": "2.0", "method": "stats", "id": 1 });
    let (status, v) = post(&format!("{}/db/{tenant}/rpc", stack.backend.http()), Some(&stack.token), &body).await;
    assert_eq!(status, 200, "{v}");
    v["result"].clone()
}
