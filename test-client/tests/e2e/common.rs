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
        no_auth_secret: false,
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
