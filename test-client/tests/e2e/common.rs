//! Helpers shared by the end-to-end tests, and [`e2e`]: how every test gets its stack.
//!
//! A test is `e2e()` + what it needs + `.run(async |stack| { … })`. The harness takes the
//! one-at-a-time lock, starts (or reuses) the stack, runs the body on a fresh tokio
//! runtime and then checks the logs: no line of
//! [`FORBIDDEN_LOG_LINES`](test_client::stack::FORBIDDEN_LOG_LINES) among those
//! written during the test, except the runtime's own lines the test says it provokes
//! (`.tolerating(…)`, each with a comment saying why).
//!
//! Starting a stack (two `wrangler dev`) is much of a test's time, so tests with the
//! default configuration share one stack per backend folder for the whole run. Such a test must leave the stack as it found it, and assert
//! what it did, not what the stack has seen: a counter of `/__stats` as a [`delta`] from
//! its own start, and an object or upstream it needs pristine under a tenant of its own
//! (`.tenant(…)`: no other test on the stack may use it). A test gets a stack of its own
//! when its configuration differs (`.vars(…)`, `.backend_vars(…)`, `.no_auth_secret()`), or
//! when it says why with `.own_stack(…)`: it restarts, stops or freezes a worker
//! (`.run_mut`), or what it measures (memory) would be blurred by the tests before it.
//!
//! The sockets a body still holds when it returns are dropped without a close handshake;
//! in the lines written after that, until the stack is at rest, the runtime's line for
//! such a close (RUNTIME.md §16) is allowed for every test, and nothing else forbidden.
//! A test that fails on a shared stack takes it down: the next one starts a fresh one.

use std::collections::HashMap;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Mutex, Once, PoisonError};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use test_client::load::{LoadOpts, Report};
use test_client::stack::{tail, LogMarks, Stack, StackOpts, RUNTIME_CLOSE_NOISE};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Tests share two cores; never run two tests at once even if asked to.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The stacks tests share: one per backend folder, in the default configuration.
static SHARED: Mutex<Vec<Shared>> = Mutex::new(Vec::new());

/// The one-at-a-time lock, for a test that starts its processes without [`e2e`].
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Registers [`on_exit`] once.
static STOP_AT_EXIT: Once = Once::new();

/// How long a shared stack may take to come to rest after a test.
const REST_TIMEOUT: Duration = Duration::from_secs(15);

/// How long both logs must stay unchanged before a test's window of them is closed.
const LOGS_QUIET: Duration = Duration::from_millis(500);

/// Why a test on a shared stack failed.
enum Failure {
    Panicked(Box<dyn std::any::Any + Send>),
    Logs(anyhow::Error),
}

struct Shared {
    /// [`StackOpts::backend_dir`] of the stack.
    backend_dir: Option<String>,
    /// `None` until a test needs it, and again after a test failed on it.
    stack: Option<Stack>,
    /// Tenants claimed with [`E2e::tenant`] on this stack, and by which test.
    tenants: HashMap<String, String>,
}

/// A static's destructor never runs: the shared stacks are stopped when the test binary
/// exits (libtest ends with `exit`, passed or failed), so their directories go too. A
/// binary killed outright runs no handler: then each worker's reaper stops it
/// (`test_client::stack`).
extern "C" fn on_exit() {
    for line in REPORTS.lock().unwrap_or_else(PoisonError::into_inner).iter() {
        eprintln!("e2e: {line}");
    }
    let mut shared = match SHARED.try_lock() {
        Ok(guard) => guard,
        Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        // A test still runs: leave it to the reapers.
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    for s in shared.iter_mut() {
        drop(s.stack.take());
    }
}

/// What an end-to-end test needs; see the module documentation.
#[must_use = "a test runs its body with .run(…) or .run_mut(…)"]
pub struct E2e {
    opts: StackOpts,
    own: Option<&'static str>,
    noise: &'static [&'static str],
}

/// The default: the stack shared by tests of the default configuration, logs checked.
/// With `E2E_BINDING=1` the snippets of backend-do's stacks reach it through a Durable
/// Object binding instead of its URL (`./x test` runs the tenant tests so too).
pub fn e2e() -> E2e {
    let binding = std::env::var("E2E_BINDING").as_deref() == Ok("1");
    E2e { opts: StackOpts { binding, ..StackOpts::default() }, own: None, noise: &[] }
}

fn owned(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

impl E2e {
    /// Extra snippet vars: a configuration of its own, so a stack of its own.
    pub fn vars(mut self, vars: &[(&str, &str)]) -> Self {
        self.opts.snippet_vars.extend(owned(vars));
        self
    }

    /// Extra backend vars: a stack of its own.
    pub fn backend_vars(mut self, vars: &[(&str, &str)]) -> Self {
        self.opts.backend_vars.extend(owned(vars));
        self
    }

    /// A snippet without `AUTH_SECRET`: a stack of its own.
    pub fn no_auth_secret(mut self) -> Self {
        self.opts.no_auth_secret = true;
        self
    }

    /// Another backend Worker (see [`StackOpts::backend_dir`]); tests of the same folder
    /// and otherwise default configuration share its stack.
    pub fn backend_dir(mut self, dir: &str) -> Self {
        self.opts.backend_dir = Some(dir.to_owned());
        // Binding mode is run against backend-do.
        self.opts.binding = false;
        self
    }

    /// Points `stack.snippet.http()` and `.ws()` at `/db/{tenant}`. On a shared stack the
    /// tenant is this test's alone — a Durable Object and an upstream no other test has
    /// touched — and a second test claiming it fails.
    pub fn tenant(mut self, tenant: &str) -> Self {
        self.opts.tenant = Some(tenant.to_owned());
        self
    }

    /// A stack of its own, and why: it restarts, stops or freezes a worker, or what it
    /// measures would be blurred by the tests that ran before it on a shared one.
    pub fn own_stack(mut self, why: &'static str) -> Self {
        self.own = Some(why);
        self
    }

    /// Log lines containing one of `noise` are allowed: lines the runtime itself writes
    /// in a situation the test creates on purpose (say which at the call), never one the
    /// code could prevent.
    pub fn tolerating(mut self, noise: &'static [&'static str]) -> Self {
        self.noise = noise;
        self
    }

    /// Whether the test runs on a shared stack. `E2E_OWN_STACKS=1` gives every test a stack
    /// of its own: to tell whether a failure comes from what an earlier test left behind.
    fn shares(&self) -> bool {
        let o = &self.opts;
        let default = o.snippet_vars.is_empty() && o.backend_vars.is_empty() && !o.no_auth_secret;
        default && self.own.is_none() && std::env::var("E2E_OWN_STACKS").as_deref() != Ok("1")
    }

    /// Runs `body` against the stack, then checks the logs.
    pub fn run(self, body: impl AsyncFnOnce(&Stack)) {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        // Left by a test that panicked on a stack of its own (now gone).
        unpark();
        let started = Instant::now();
        let shares = self.shares();
        if shares {
            self.run_shared(body);
        } else {
            self.run_own(|rt, stack| rt.block_on(body(stack)));
        }
        let on = if shares { "a shared stack" } else { "a stack of its own" };
        eprintln!("{} took {:.1} s on {on}", test_name(), started.elapsed().as_secs_f64());
    }

    /// [`E2e::run`] for a body that changes its stack's processes (restarts, stops): it
    /// says why with [`E2e::own_stack`] and gets a stack of its own. It may block the
    /// thread (a restart waits for the worker): it runs on the test's thread, and what it
    /// spawns on the runtime's workers.
    pub fn run_mut(self, body: impl AsyncFnOnce(&mut Stack)) {
        assert!(self.own.is_some(), "a test that changes its stack says why it needs one of its own: .own_stack(…)");
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        unpark();
        let started = Instant::now();
        self.run_own(|rt, stack| rt.block_on(body(stack)));
        eprintln!("{} took {:.1} s on a stack of its own", test_name(), started.elapsed().as_secs_f64());
    }

    fn run_own(self, body: impl FnOnce(&tokio::runtime::Runtime, &mut Stack)) {
        if let Some(why) = self.own {
            eprintln!("a stack of its own: {why}");
        }
        let mut stack = Stack::start(self.opts).expect("stack starts");
        let rt = runtime();
        // A panic drops the stack while unwinding: it prints its logs and keeps its files.
        body(&rt, &mut stack);
        let end = stack.log_marks();
        unpark();
        drop(rt);
        stack.assert_clean_logs_between(LogMarks::default(), Some(end), self.noise).expect("clean logs");
        stack.assert_clean_logs_between(end, None, &[RUNTIME_CLOSE_NOISE]).expect("clean logs after the test");
    }

    fn run_shared(self, body: impl AsyncFnOnce(&Stack)) {
        let test = test_name();
        let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        let at = match shared.iter().position(|s| s.backend_dir == self.opts.backend_dir) {
            Some(at) => at,
            None => {
                let backend_dir = self.opts.backend_dir.clone();
                shared.push(Shared { backend_dir, stack: None, tenants: HashMap::new() });
                shared.len() - 1
            }
        };
        let entry = &mut shared[at];
        if entry.stack.as_mut().is_some_and(|s| !s.running()) {
            eprintln!("the shared stack's wrangler dev has exited: starting another");
            entry.stack = None;
        }
        if entry.stack.is_none() {
            at_exit();
            let opts = StackOpts { tenant: None, ..self.opts.clone() };
            entry.stack = Some(Stack::start(opts).expect("shared stack starts"));
            entry.tenants.clear();
        }
        let tenant = self.opts.tenant.clone().unwrap_or_else(|| "default".to_owned());
        if tenant != "default" {
            if let Some(other) = entry.tenants.insert(tenant.clone(), test.clone()) {
                panic!("tenant {tenant} was used by {other} on this shared stack: pick a tenant of this test's own");
            }
        }
        let Some(stack) = entry.stack.as_mut() else { unreachable!("started above") };
        stack.snippet.set_tenant(&tenant);
        let start = stack.log_marks();
        let rt = runtime();
        let outcome = catch_unwind(AssertUnwindSafe(|| rt.block_on(body(&*stack))));
        let end = stack.log_marks();
        // What the test still holds (parked sockets, those of spawned tasks) goes here.
        unpark();
        drop(rt);
        let mut failure = match outcome {
            Err(panic) => Some(Failure::Panicked(panic)),
            Ok(()) => stack.assert_clean_logs_between(start, Some(end), self.noise).err().map(Failure::Logs),
        };
        let mut at_rest = false;
        if failure.is_none() {
            at_rest = settle(stack);
            // Lines written as the test's last connections close are its own too.
            if let Err(e) = stack.assert_clean_logs_between(end, None, &[RUNTIME_CLOSE_NOISE]) {
                failure = Some(Failure::Logs(e.context("after the test, as its connections closed")));
            }
        }
        stack.snippet.set_tenant("default");
        if let Some(failure) = failure {
            // Whatever the test left behind must not fail the next one: it gets a new stack.
            eprintln!(
                "{test} failed on the shared stack in {}; its logs:\n{}",
                stack.dir.display(),
                tail(&stack.logs_between(start, None), 80)
            );
            stack.keep_files();
            entry.stack = None;
            drop(shared);
            match failure {
                Failure::Panicked(panic) => resume_unwind(panic),
                Failure::Logs(e) => panic!("clean logs: {e:#}"),
            }
        }
        if !at_rest {
            eprintln!("{test} left the shared stack busy after {REST_TIMEOUT:?}: the next test gets a new one");
            entry.stack = None;
        }
    }
}

fn test_name() -> String {
    std::thread::current().name().unwrap_or("?").to_owned()
}

/// Has the shared stacks stopped, and [`report_at_exit`]'s lines printed, when the test
/// binary exits.
fn at_exit() {
    // SAFETY: registers a plain `extern "C" fn` with libc, once.
    STOP_AT_EXIT.call_once(|| unsafe {
        libc::atexit(on_exit);
    });
}

/// Lines for the end of the run ([`report_at_exit`]).
static REPORTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Prints `line` now (libtest shows it for a failed test, or with `--nocapture`) and again
/// when the test binary exits, outside any test's captured output: something a test
/// noticed that is not its own failure.
pub fn report_at_exit(line: String) {
    eprintln!("{line}");
    at_exit();
    REPORTS.lock().unwrap_or_else(PoisonError::into_inner).push(line);
}

/// Waits until the snippet is at rest — no client, request or stream left — (at most
/// [`REST_TIMEOUT`]; `false` if it never is), then until both logs have been quiet for
/// [`LOGS_QUIET`], so that the lines the runtime writes for a test's last closes fall in
/// that test's window, not the next one's.
fn settle(stack: &Stack) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let at_rest = rt.block_on(async {
        let deadline = Instant::now() + REST_TIMEOUT;
        loop {
            if let Ok(s) = stack.snippet_stats().await {
                if ["activeClients", "pendingRequests", "streamsHeld"].iter().all(|f| s[f] == 0) {
                    return true;
                }
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut last, mut since) = (stack.log_marks(), Instant::now());
    while since.elapsed() < LOGS_QUIET && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = stack.log_marks();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    at_rest
}

/// A multi-threaded runtime: the one a test body runs on, or one that serves something of
/// a test's own beside the stack (the key-set server of `idp.rs`).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime")
}

/// How much `errors` of `/__stats` grew from `start` to `now` through a test whose
/// upstream is `tenant`'s: the isolate's errors, less those counted meanwhile on other
/// tenants' upstreams. On a shared stack those are upstreams earlier tests left idle: an
/// error of theirs is not this test's, and is reported at the end of the run instead.
pub fn errors_of(tenant: &str, start: &Value, now: &Value) -> u64 {
    let per_tenant = |s: &Value| -> HashMap<String, u64> {
        let list = s["upstreams"].as_array().cloned().unwrap_or_default();
        list.iter().filter_map(|u| Some((u["tenant"].as_str()?.to_owned(), u["errors"].as_u64()?))).collect()
    };
    let (before, after) = (per_tenant(start), per_tenant(now));
    let others: Vec<(&String, u64)> = after
        .iter()
        .filter(|(t, _)| *t != tenant)
        .map(|(t, e)| (t, e.saturating_sub(before.get(t).copied().unwrap_or(0))))
        .filter(|(_, grew)| *grew > 0)
        .collect();
    let theirs: u64 = others.iter().map(|(_, e)| e).sum();
    if theirs > 0 {
        report_at_exit(format!(
            "while {} ran, upstreams of other tenants counted {theirs} errors ({others:?}); the last error: {}",
            test_name(),
            now["lastError"]
        ));
    }
    delta(start, now, "errors").checked_sub(theirs).unwrap_or_else(|| panic!("errors counted twice? {start} → {now}"))
}

/// How much counter `field` of `/__stats` grew from `start` to `now`: what a test did, on
/// a stack that other tests used before it. Both must come from the same isolate (a panic
/// replaces it, and its counters start again).
pub fn delta(start: &Value, now: &Value, field: &str) -> u64 {
    assert_eq!(start["isolateId"], now["isolateId"], "the snippet's isolate was replaced during the test");
    n(now, field).checked_sub(n(start, field)).unwrap_or_else(|| panic!("{field} went down: {start} → {now}"))
}

/// Load options for the snippet at `url`, with the stack's client token.
pub fn client_load(stack: &Stack, url: impl Into<String>) -> LoadOpts {
    LoadOpts { token: Some(stack.client_token.clone()), ..LoadOpts::new(url) }
}

/// The upstream of `tenant` in `/__stats`.
pub fn upstream<'a>(s: &'a Value, tenant: &str) -> &'a Value {
    let list = s["upstreams"].as_array().expect("upstreams");
    list.iter().find(|u| u["tenant"] == tenant).unwrap_or_else(|| panic!("no upstream for {tenant}: {s}"))
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

/// `GET url` with an optional bearer token: status, content type, body.
pub async fn get(url: &str, token: Option<&str>) -> (u16, String, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("GET");
    let status = res.status().as_u16();
    let content_type = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    (status, content_type, res.text().await.expect("body"))
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
    park(ws);
    (out, unloaded, loaded)
}

/// Sockets a test is done with, kept open until its body has returned: the runtime may
/// write its close line for any WebSocket that ends, orderly or not (RUNTIME.md §16), and
/// only after the body does the harness allow that line in every test.
static PARKED: Mutex<Vec<Ws>> = Mutex::new(Vec::new());

/// Keeps `ws` open until the test's body has returned ([`PARKED`]).
pub fn park(ws: Ws) {
    PARKED.lock().unwrap_or_else(PoisonError::into_inner).push(ws);
}

/// Ends the parked sockets (the test's body has returned).
fn unpark() {
    drop(std::mem::take(&mut *PARKED.lock().unwrap_or_else(PoisonError::into_inner)));
}

/// Closes `ws` as a well-behaved client does: a Close (1000), then reading until the
/// server's Close ends the socket (at most 5 s). (The runtime may still write its close
/// line, RUNTIME.md §16; [`park`] a socket the test itself does not need to close.)
pub async fn close_politely(mut ws: Ws) {
    use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
    let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
    let _ = ws.send(Message::Close(Some(frame))).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while let Some(Ok(_)) = ws.next().await {} }).await;
}

/// The operator's view of `tenant`'s object (`GET /db/{tenant}/__stats` with the backend
/// token; `test-client objects` reads it for many tenants): upstreams, streams on each,
/// messages, hand-overs, refusals.
pub async fn do_view(stack: &Stack, tenant: &str) -> Value {
    test_client::objects::view(&stack.backend.http(), tenant, &stack.token).await.expect("the object's view")
}

/// The backend object's own counters for `tenant` (its JSON-RPC `stats`), asked directly
/// with the backend token.
pub async fn do_stats(stack: &Stack, tenant: &str) -> Value {
    test_client::bench::do_stats(stack, tenant).await.expect("the object's stats")
}

/// The snippet's structured log lines (one JSON object per line) in `log` that `keep`
/// accepts. (`wrangler dev` prints an error's line between a coloured `✘ [ERROR]` and a
/// colour reset.)
pub fn json_log_lines(log: &str, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.get(l.find('{')?..=l.rfind('}')?)?).ok())
        .filter(|v| v.get("level").is_some() && keep(v))
        .collect()
}

/// [`json_log_lines`] of the snippet's log once it has `n` of them (the runtime's output
/// reaches the log a moment after the response), or what it has after 5 s.
pub async fn logged(stack: &Stack, n: usize, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines = json_log_lines(&stack.snippet.log(), &keep);
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
