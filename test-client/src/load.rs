//! `test-client load`: N clients, each sending M messages with K in flight, verifying
//! every reply: right id, right payload, right client, none lost, none duplicated.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::time::sleep_until;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::session::{Incoming, Session};
use crate::stats::{Latencies, Summary};

/// What each message asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// JSON-RPC `echo`: the params come back as the result.
    Echo,
    /// JSON-RPC `ping`: the result is "pong".
    Ping,
    /// JSON-RPC `sql`: `select ?, ?, ?` with the client, sequence and payload bound.
    Sql,
    /// The raw echo service (`/ws/echo`, `/db/{name}/echo`): text and binary messages
    /// come back verbatim. WebSocket only.
    Raw,
}

/// Options of `test-client load`.
#[derive(Debug, Clone, Args)]
pub struct LoadOpts {
    /// Target: ws://… for WebSocket clients, http://… for HTTP POSTs (JSON-RPC bodies).
    pub url: String,
    /// Concurrent clients.
    #[arg(short, long, default_value_t = 8)]
    pub clients: usize,
    /// Messages per client (ignored with --duration).
    #[arg(short = 'n', long, default_value_t = 200)]
    pub messages: u64,
    /// Run for this many seconds instead of a fixed message count.
    #[arg(short, long)]
    pub duration: Option<f64>,
    /// Requests in flight per client.
    #[arg(short = 'k', long, default_value_t = 1)]
    pub in_flight: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Target rate in requests/s over all clients. Latency is then measured from when each
    /// request *should* have been sent, correcting for coordinated omission.
    #[arg(long)]
    pub rate: Option<f64>,
    /// What to ask.
    #[arg(short, long, value_enum, default_value_t = Method::Echo)]
    pub method: Method,
    /// Bearer token: a JWT for the snippet (`test-client token`), or the backend's
    /// BACKEND_TOKEN to talk to the backend directly.
    #[arg(long, env = "SNIPPET_PROXY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Seconds without any reply before the outstanding requests count as lost.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Speak a resumable session (PROTOCOL.md §14), as the client library does:
    /// numbered envelopes, acknowledged by the backend. WebSocket only.
    #[arg(long)]
    pub session: bool,
}

impl LoadOpts {
    /// Defaults for `url`, as the CLI would parse them.
    pub fn new(url: impl Into<String>) -> Self {
        LoadOpts {
            url: url.into(),
            clients: 8,
            messages: 200,
            duration: None,
            in_flight: 1,
            payload: 64,
            rate: None,
            method: Method::Echo,
            token: None,
            timeout: 10.0,
            session: false,
        }
    }
}

impl LoadOpts {
    /// The same options with a message count instead of a duration.
    pub fn without_duration(self) -> Self {
        LoadOpts { duration: None, ..self }
    }
}

/// What a run found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Target URL.
    pub url: String,
    /// Method used.
    pub method: Method,
    /// Clients.
    pub clients: usize,
    /// Requests sent.
    pub sent: u64,
    /// Replies that matched exactly.
    pub ok: u64,
    /// Failures by kind: `lost` (no reply and no close), `mismatch`, `misrouted`,
    /// `duplicate`, `unexpected`, `out-of-order`, `closed-{code}`, `in-flight-at-close`
    /// (requests outstanding when the server closed the socket), `http-{status}`, …
    pub errors: BTreeMap<String, u64>,
    /// Wall time of the run.
    pub elapsed_s: f64,
    /// Correct replies per second.
    pub throughput: f64,
    /// Latency of correct replies.
    pub latency: Summary,
    /// No error of any kind, and every request answered.
    pub passed: bool,
}

impl Report {
    /// Human-readable text.
    pub fn to_text(&self) -> String {
        let l = &self.latency;
        let mut s = format!(
            "target      {}\nmethod      {:?}, {} clients\nrequests    {} sent, {} ok\nthroughput  {:.0} req/s over {:.2} s\nlatency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}\n",
            self.url, self.method, self.clients, self.sent, self.ok, self.throughput, self.elapsed_s,
            l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
        );
        if self.errors.is_empty() {
            s.push_str("errors      none\n");
        } else {
            let e: Vec<String> = self.errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("errors      {}\n", e.join(" ")));
        }
        s.push_str(if self.passed { "verdict     PASS\n" } else { "verdict     FAIL\n" });
        s
    }
}

#[derive(Default)]
struct ClientResult {
    sent: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
    latencies: Latencies,
}

impl ClientResult {
    fn error(&mut self, kind: &str, n: u64) {
        if n > 0 {
            *self.errors.entry(kind.to_owned()).or_default() += n;
        }
    }
}

/// What a reply must look like.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Text(String),
    Binary(Vec<u8>),
    Result(Value),
}

struct Outstanding {
    expect: Expect,
    since: Instant,
}

/// When each client's n-th request is due, spreading `rate` evenly over clients.
struct Pacer {
    start: Instant,
    interval: Option<Duration>,
    deadline: Option<Instant>,
    total: u64,
}

impl Pacer {
    fn due(&self, seq: u64) -> Instant {
        match self.interval {
            Some(i) => self.start + i.mul_f64(seq as f64),
            None => Instant::now(),
        }
    }
    fn more(&self, seq: u64) -> bool {
        match self.deadline {
            Some(d) => Instant::now() < d,
            None => seq < self.total,
        }
    }
}

fn filler(n: usize) -> String {
    std::iter::repeat_with(fastrand::alphanumeric).take(n).collect()
}

/// Builds request `seq` of client `client`: the message to send and what must come back.
fn request(method: Method, client: usize, seq: u64, payload: usize) -> (Message, Expect) {
    let id = format!("c{client}-{seq}");
    let rpc = |m: &str, params: Value| json!({ "jsonrpc": "2.0", "method": m, "params": params, "id": id }).to_string();
    match method {
        Method::Raw if fastrand::bool() => {
            let mut b = Vec::with_capacity(13 + payload);
            b.push(0xB1);
            b.extend_from_slice(&(client as u32).to_be_bytes());
            b.extend_from_slice(&seq.to_be_bytes());
            b.extend(std::iter::repeat_with(|| fastrand::u8(..)).take(payload));
            (Message::Binary(b.clone().into()), Expect::Binary(b))
        }
        Method::Raw => {
            let t = format!("{id}-{}", filler(payload));
            (Message::Text(t.clone().into()), Expect::Text(t))
        }
        Method::Echo => {
            let params = json!({ "c": client, "s": seq, "p": filler(payload) });
            (Message::Text(rpc("echo", params.clone()).into()), Expect::Result(params))
        }
        Method::Ping => (Message::Text(rpc("ping", json!([])).into()), Expect::Result(json!("pong"))),
        Method::Sql => {
            let p = filler(payload);
            let params = json!({ "sql": "select ? as c, ? as s, ? as p", "params": [client, seq, p] });
            let expect = json!([[client, seq, p]]);
            (Message::Text(rpc("sql", params).into()), Expect::Result(expect))
        }
    }
}

/// Who a reply says it is for: (client, seq).
fn identify(msg: &Message) -> Option<(usize, u64, Expect)> {
    match msg {
        Message::Binary(b) => {
            let client = u32::from_be_bytes(b.get(1..5)?.try_into().ok()?) as usize;
            let seq = u64::from_be_bytes(b.get(5..13)?.try_into().ok()?);
            (b.first() == Some(&0xB1)).then(|| (client, seq, Expect::Binary(b.to_vec())))
        }
        Message::Text(t) => {
            if let Ok(v) = serde_json::from_str::<Value>(t) {
                let (client, seq) = parse_id(v.get("id")?.as_str()?)?;
                let result = match v.get("result") {
                    Some(r) => r.get("rows").cloned().unwrap_or_else(|| r.clone()),
                    None => json!({ "error": v.get("error").cloned().unwrap_or(Value::Null) }),
                };
                return Some((client, seq, Expect::Result(result)));
            }
            let mut parts = t.splitn(3, '-');
            let (client, seq) = parse_id(&format!("{}-{}", parts.next()?, parts.next()?))?;
            Some((client, seq, Expect::Text(t.to_string())))
        }
        _ => None,
    }
}

fn parse_id(id: &str) -> Option<(usize, u64)> {
    let (c, s) = id.strip_prefix('c')?.split_once('-')?;
    Some((c.parse().ok()?, s.parse().ok()?))
}

async fn ws_client(opts: Arc<LoadOpts>, client: usize, pacer: Arc<Pacer>, done: Arc<AtomicU64>) -> ClientResult {
    let mut r = ClientResult::default();
    let mut session = opts.session.then(Session::new);
    let url = session.as_ref().map_or_else(|| opts.url.clone(), |s| s.url(&opts.url));
    let mut req = match url.as_str().into_client_request() {
        Ok(req) => req,
        Err(_) => {
            r.error("connect", 1);
            return r;
        }
    };
    if let Some(token) = &opts.token {
        if let Ok(v) = format!("Bearer {token}").parse() {
            req.headers_mut().insert("Authorization", v);
        }
    }
    let ws = match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => ws,
        Err(_) => {
            r.error("connect", 1);
            return r;
        }
    };
    let (mut sink, mut stream) = ws.split();
    // A session sends nothing before the backend's Welcome: it proves the path.
    while let Some(s) = session.as_mut().filter(|s| !s.welcomed) {
        match stream.next().await {
            Some(Ok(m)) if !matches!(s.unwrap(&m), Incoming::Invalid) => {}
            _ => {
                r.error("connect", 1);
                return r;
            }
        }
    }
    let mut pending: HashMap<u64, Outstanding> = HashMap::new();
    let mut answered = std::collections::HashSet::new();
    let mut next_seq = 0u64;
    let idle = Duration::from_secs_f64(opts.timeout);
    let ordered = opts.method == Method::Raw;
    loop {
        let can_send = pending.len() < opts.in_flight.max(1) && pacer.more(next_seq);
        if !can_send && pending.is_empty() {
            break;
        }
        let due = tokio::time::Instant::from_std(pacer.due(next_seq));
        tokio::select! {
            biased;
            msg = stream.next() => {
                let msg = match msg {
                    Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => m,
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.as_ref().map(|f| u16::from(f.code)).unwrap_or(1005);
                        if let Some(f) = frame.as_ref().filter(|f| !f.reason.is_empty()) {
                            eprintln!("client {client}: server closed with {code}: {}", f.reason);
                        }
                        r.error(&format!("closed-{code}"), 1);
                        // Told, not silently dropped: the close says their fate is unknown.
                        r.error("in-flight-at-close", pending.len() as u64);
                        pending.clear();
                        break;
                    }
                    None => { r.error("closed", 1); break; }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) => { r.error("closed", 1); break; }
                };
                let msg = match session.as_mut().map(|s| s.unwrap(&msg)) {
                    None => msg,
                    Some(Incoming::Message(m)) => m,
                    Some(Incoming::Duplicate) => { r.error("duplicate", 1); continue; }
                    Some(Incoming::Control) => continue,
                    Some(Incoming::Invalid) => { r.error("unexpected", 1); continue; }
                };
                match identify(&msg) {
                    None => r.error("unexpected", 1),
                    Some((c, _, _)) if c != client => r.error("misrouted", 1),
                    Some((_, seq, got)) => match pending.remove(&seq) {
                        None if answered.contains(&seq) => r.error("duplicate", 1),
                        None => r.error("unexpected", 1),
                        Some(o) => {
                            if ordered && pending.keys().any(|&s| s < seq) {
                                r.error("out-of-order", 1);
                            }
                            answered.insert(seq);
                            if got == o.expect {
                                r.ok += 1;
                                r.latencies.record(o.since.elapsed());
                            } else {
                                r.error("mismatch", 1);
                            }
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                }
            }
            _ = sleep_until(due), if can_send => {
                let (msg, expect) = request(opts.method, client, next_seq, opts.payload);
                let msg = match session.as_mut() { Some(s) => s.wrap(msg), None => msg };
                // With a target rate, latency counts from when the request was due.
                let since = if pacer.interval.is_some() { pacer.due(next_seq) } else { Instant::now() };
                if sink.send(msg).await.is_err() { r.error("send", 1); break; }
                pending.insert(next_seq, Outstanding { expect, since });
                r.sent += 1;
                next_seq += 1;
            }
            _ = tokio::time::sleep(idle), if !pending.is_empty() => break,
        }
    }
    r.error("lost", pending.len() as u64);
    let _ = sink.send(Message::Close(None)).await;
    // Let the close handshake finish (bounded), so the server sees an orderly close.
    let _ =
        tokio::time::timeout(Duration::from_secs(2), async { while let Some(Ok(_)) = stream.next().await {} }).await;
    r
}

async fn http_client(
    opts: Arc<LoadOpts>,
    http: reqwest::Client,
    client: usize,
    slot: usize,
    pacer: Arc<Pacer>,
    done: Arc<AtomicU64>,
) -> ClientResult {
    let mut r = ClientResult::default();
    let k = opts.in_flight.max(1) as u64;
    let mut seq = slot as u64;
    while pacer.more(seq) {
        let due = pacer.due(seq);
        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        let (msg, expect) = request(opts.method, client, seq, opts.payload);
        let since = if pacer.interval.is_some() { due } else { Instant::now() };
        let mut post = http.post(&opts.url).header("Content-Type", "application/json").body(msg.into_data());
        if let Some(t) = &opts.token {
            post = post.bearer_auth(t);
        }
        r.sent += 1;
        let res = tokio::time::timeout(Duration::from_secs_f64(opts.timeout), post.send()).await;
        let res = match res {
            Err(_) => {
                r.error("lost", 1);
                break;
            }
            Ok(Err(_)) => {
                r.error("send", 1);
                seq += k;
                continue;
            }
            Ok(Ok(res)) => res,
        };
        let status = res.status().as_u16();
        let body = res.text().await.unwrap_or_default();
        if status != 200 {
            r.error(&format!("http-{status}"), 1);
        } else {
            match identify(&Message::Text(body.into())) {
                Some((c, _, _)) if c != client => r.error("misrouted", 1),
                Some((_, s, _)) if s != seq => r.error("mismatch", 1),
                Some((_, _, got)) if got == expect => {
                    r.ok += 1;
                    r.latencies.record(since.elapsed());
                }
                Some(_) => r.error("mismatch", 1),
                None => r.error("unexpected", 1),
            }
        }
        done.fetch_add(1, Ordering::Relaxed);
        seq += k;
    }
    r
}

/// Runs a load test and returns its report. `progress` shows a bar (callers pass
/// `false` when stdout is not a terminal).
pub async fn run(opts: LoadOpts, progress: bool) -> Result<Report> {
    let websocket = opts.url.starts_with("ws://") || opts.url.starts_with("wss://");
    let http = opts.url.starts_with("http://") || opts.url.starts_with("https://");
    if !(websocket || http) {
        bail!("url must start with ws://, wss://, http:// or https://");
    }
    if !websocket && opts.method == Method::Raw {
        bail!("--method raw needs a WebSocket url");
    }
    if opts.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let opts = Arc::new(opts);
    let per_client_rate = opts.rate.map(|r| r / opts.clients as f64).filter(|r| *r > 0.0);
    let start = Instant::now();
    let pacer = Arc::new(Pacer {
        start,
        interval: per_client_rate.map(|r| Duration::from_secs_f64(1.0 / r)),
        deadline: opts.duration.map(|d| start + Duration::from_secs_f64(d)),
        total: opts.messages,
    });
    let done = Arc::new(AtomicU64::new(0));
    let bar = progress.then(|| {
        let total = if opts.duration.is_some() { 0 } else { opts.messages * opts.clients as u64 };
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} replies ({per_sec})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut tasks = tokio::task::JoinSet::new();
    let http = reqwest::Client::builder().pool_max_idle_per_host(1024).build().context("HTTP client")?;
    for client in 0..opts.clients {
        if websocket {
            tasks.spawn(ws_client(opts.clone(), client, pacer.clone(), done.clone()));
        } else {
            for slot in 0..opts.in_flight.max(1) {
                tasks.spawn(http_client(opts.clone(), http.clone(), client, slot, pacer.clone(), done.clone()));
            }
        }
    }
    let ticker = bar.clone().map(|bar| {
        let done = done.clone();
        tokio::spawn(async move {
            loop {
                bar.set_position(done.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    let mut total = ClientResult::default();
    while let Some(res) = tasks.join_next().await {
        let r = res.context("client task panicked")?;
        total.sent += r.sent;
        total.ok += r.ok;
        for (k, v) in r.errors {
            total.error(&k, v);
        }
        total.latencies.merge(&r.latencies);
    }
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let expected = if opts.duration.is_some() { total.sent } else { opts.messages * opts.clients as u64 };
    Ok(Report {
        url: opts.url.clone(),
        method: opts.method,
        clients: opts.clients,
        sent: total.sent,
        ok: total.ok,
        passed: total.errors.is_empty() && total.ok == expected && total.sent == expected,
        errors: total.errors,
        elapsed_s: elapsed,
        throughput: total.ok as f64 / elapsed.max(1e-9),
        latency: total.latencies.summary(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_identifies_as_itself() {
        for method in [Method::Echo, Method::Ping, Method::Sql, Method::Raw] {
            for seq in 0..50 {
                let (msg, expect) = request(method, 7, seq, 16);
                if method != Method::Raw {
                    continue; // JSON-RPC requests are identified by the server's reply
                }
                assert_eq!(identify(&msg), Some((7, seq, expect)));
            }
        }
    }

    #[test]
    fn rpc_replies_are_identified_and_compared() {
        let (_, expect) = request(Method::Echo, 3, 9, 4);
        let Expect::Result(params) = &expect else { panic!("rpc") };
        let reply = json!({ "jsonrpc": "2.0", "result": params, "id": "c3-9" }).to_string();
        assert_eq!(identify(&Message::Text(reply.into())), Some((3, 9, expect)));
        let err = json!({ "jsonrpc": "2.0", "error": {"code": -1}, "id": "c3-9" }).to_string();
        let (_, _, got) = identify(&Message::Text(err.into())).expect("identified");
        assert_ne!(got, Expect::Result(json!("pong")));
        assert_eq!(parse_id("c12-34"), Some((12, 34)));
        assert_eq!(parse_id("x12-34"), None);
    }
}
