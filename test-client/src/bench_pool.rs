//! The benchmark's many-tenant rows: connections the backends see for 100 tenants, a
//! pool churned by 200 tenants, and what a client stream and an upstream cost in memory
//! (so how many clients one 128 MB isolate holds). Each row compares two configurations
//! started in the same run against the same backend.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

use crate::bench::{count, do_stats, row, Row, UNLIMITED};
use crate::stack::{Stack, Worker};

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Tenants in the connections row, and clients on each.
const TENANTS: usize = 100;
const CLIENTS_PER_TENANT: usize = 4;
/// The churn row: this many tenants over a pool of `CHURN_POOL` upstreams.
const CHURN_TENANTS: usize = 200;
const CHURN_POOL: usize = 50;
/// Client streams opened for the memory-per-stream row: enough that the 64 KiB steps of
/// wasm memory and V8's heap noise are small against the total.
const MEMORY_STREAMS: usize = 2_000;
/// The memory limit of one Workers isolate.
const ISOLATE_BYTES: f64 = 128.0 * 1024.0 * 1024.0;

/// Opens `n` WebSockets to `url`, each echoing one message, and keeps them open.
pub(crate) async fn open_clients(url: &str, token: Option<&str>, n: usize) -> Result<Vec<Ws>> {
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        let mut req = url.into_client_request()?;
        if let Some(t) = token {
            req.headers_mut().insert("Authorization", format!("Bearer {t}").parse()?);
        }
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.with_context(|| format!("connect {url}"))?;
        ws.send(Message::Text("hello".into())).await?;
        let reply = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
        anyhow::ensure!(matches!(reply, Ok(Some(Ok(Message::Text(_))))), "{url}: no echo ({reply:?})");
        sockets.push(ws);
    }
    Ok(sockets)
}

pub(crate) async fn close_all(sockets: Vec<Ws>) {
    for mut ws in sockets {
        let _ = ws.close(None).await;
    }
}

/// Sockets the Durable Objects of `tenants` hold, read until two readings 500 ms apart
/// agree (a hand-over briefly holds two).
pub(crate) async fn sockets_at(stack: &Stack, tenants: &[String]) -> Result<u64> {
    let read = || async {
        let mut total = 0;
        for t in tenants {
            total += count(&do_stats(stack, t).await?, "sockets");
        }
        anyhow::Ok(total)
    };
    let mut seen = read().await?;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let again = read().await?;
        if again == seen {
            break;
        }
        seen = again;
    }
    Ok(seen)
}

/// A snippet's JS heap after a forced GC plus its wasm linear memory (what counts against
/// the isolate's memory limit), and the wasm part alone.
async fn isolate_bytes(w: &Worker, admin: &str) -> Result<(u64, u64)> {
    let heap = crate::soak::heap_after_gc(w).await?;
    let s = crate::snippet_stats::fetch(&format!("{}/__stats", w.origin()), Some(admin)).await?;
    let wasm = count(&s, "wasmMemoryBytes");
    Ok((heap + wasm, wasm))
}

/// Waits (≤ 20 s) until `w` holds `n` active clients: closed clients' streams are gone.
async fn settle_clients(w: &Worker, admin: &str, n: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let s = crate::snippet_stats::fetch(&format!("{}/__stats", w.origin()), Some(admin)).await?;
        if count(&s, "activeClients") == n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("clients did not leave within 20 s")
}

/// Vars for a snippet in these rows: no rate limits, no per-caller connection limit (every
/// client is the one benchmark caller), and a pool of `pool`.
fn vars(pool: usize) -> Vec<(&'static str, String)> {
    let mut v: Vec<(&str, String)> = UNLIMITED.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    v.push(("MAX_CONNECTIONS_PER_CALLER", "0".into()));
    v.push(("MAX_UPSTREAMS", pool.to_string()));
    v
}

fn start(stack: &Stack, name: &str, vars: &[(&str, String)]) -> Result<Worker> {
    let v: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    tokio::task::block_in_place(|| stack.extra_snippet(name, &v))
}

/// Runs the rows and appends them.
pub(crate) async fn run(stack: &Stack, rows: &mut Vec<Row>, raw: &mut Map<String, Value>) -> Result<()> {
    let say = |s: &str| eprintln!("bench: {s}");
    let ctok = stack.client_token.as_str();

    // 1. Connections at the backends: 100 tenants × 4 clients.
    say("connections at the backends, 100 tenants × 4 clients");
    let pool = start(stack, "tenants", &vars(TENANTS + 8))?;
    let through: Vec<String> = (0..TENANTS).map(|i| format!("pool-{i}")).collect();
    let direct: Vec<String> = (0..TENANTS).map(|i| format!("poold-{i}")).collect();
    let mut open = Vec::new();
    for t in &through {
        let url = format!("{}/db/{t}/ws/echo", pool.origin().replacen("http", "ws", 1));
        open.extend(open_clients(&url, Some(ctok), CLIENTS_PER_TENANT).await?);
    }
    let seen_through = sockets_at(stack, &through).await?;
    close_all(open).await;
    let mut open = Vec::new();
    for t in &direct {
        open.extend(open_clients(&format!("{}/db/{t}/echo", stack.backend.ws()), Some(&stack.token), 4).await?);
    }
    let seen_direct = sockets_at(stack, &direct).await?;
    close_all(open).await;
    drop(pool);
    rows.push(row(
        &format!("connections at the DOs, {TENANTS} tenants × {CLIENTS_PER_TENANT} clients"),
        seen_through.to_string(),
        seen_direct.to_string(),
        Some(seen_through as f64 / seen_direct.max(1) as f64),
        "one per tenant",
        Some(seen_through == TENANTS as u64),
    ));
    raw.insert("tenantConnections".into(), json!({ "snippet": seen_through, "direct": seen_direct }));

    // 2. Eviction churn: 200 tenants through a pool of 50 vs a pool that holds them all.
    say("eviction churn, 200 tenants over a pool of 50 vs a pool of 256");
    let mut churn = Vec::new();
    for (name, size) in [("churn", CHURN_POOL), ("roomy", CHURN_TENANTS + 56)] {
        let w = start(stack, name, &vars(size))?;
        churn.push((name, churned(stack, &w).await?));
    }
    let [(_, small), (_, roomy)] = &churn[..] else { anyhow::bail!("two churn runs") };
    rows.push(row(
        &format!("eviction churn, {CHURN_TENANTS} tenants: pool of {CHURN_POOL} vs one that holds all (msg/s; errors)"),
        format!("{:.0} msg/s; {} errors; {} evictions", small.rate, small.errors, small.evictions),
        format!("{:.0} msg/s; {} errors", roomy.rate, roomy.errors),
        Some(small.rate / roomy.rate.max(1e-9)),
        "0 errors under churn",
        Some(small.errors == 0 && small.evictions > 0),
    ));
    raw.insert("evictionChurn".into(), json!({ "pool50": small.json(), "pool256": roomy.json() }));

    memory(stack, rows, raw).await
}

/// Memory: per client stream (snippet vs a pass-through Worker holding the same clients),
/// then per upstream, and so how many streams one isolate holds (`bench --only memory`).
pub(crate) async fn memory(stack: &Stack, rows: &mut Vec<Row>, raw: &mut Map<String, Value>) -> Result<()> {
    let ctok = stack.client_token.as_str();
    let admin = stack.admin_token.as_str();
    eprintln!("bench: memory per client stream and per upstream");
    let mem = start(stack, "memory", &vars(TENANTS + 8))?;
    let mem_ws = mem.origin().replacen("http", "ws", 1);
    // One upstream up first, so that neither figure includes the first one's set-up.
    let first = open_clients(&format!("{mem_ws}/db/mem/ws/echo"), Some(ctok), 1).await?;
    // Upstreams first, on a heap that has held nothing else: 100 tenants with one client
    // each; their upstreams stay open (idle) after the clients leave.
    let (u_before, _) = isolate_bytes(&mem, admin).await?;
    let mut tenants = Vec::new();
    for i in 0..TENANTS {
        tenants.extend(open_clients(&format!("{mem_ws}/db/memup-{i}/ws/echo"), Some(ctok), 1).await?);
    }
    let (u_after, _) = isolate_bytes(&mem, admin).await?;
    close_all(tenants).await;
    settle_clients(&mem, admin, 1).await?;
    // Then streams: many clients on one tenant.
    let (before, wasm_before) = isolate_bytes(&mem, admin).await?;
    let streams = open_clients(&format!("{mem_ws}/db/mem/ws/echo"), Some(ctok), MEMORY_STREAMS).await?;
    let (after, wasm_after) = isolate_bytes(&mem, admin).await?;
    let per_stream = after.saturating_sub(before) as f64 / MEMORY_STREAMS as f64;
    // Each tenant above added an upstream and a client's stream.
    let per_upstream = (u_after.saturating_sub(u_before) as f64 / TENANTS as f64 - per_stream).max(0.0);
    close_all(streams).await;
    close_all(first).await;
    drop(mem);

    let control_vars =
        vec![("BACKEND_HTTP".to_owned(), stack.backend.http()), ("BACKEND_TOKEN".to_owned(), stack.token.clone())];
    let control = tokio::task::block_in_place(|| stack.extra_worker("test-client/passthrough", &control_vars))?;
    let control_ws = control.origin().replacen("http", "ws", 1);
    let warm = open_clients(&format!("{control_ws}/db/memctl/echo"), None, 1).await?;
    let c_before = crate::soak::heap_after_gc(&control).await?;
    let held = open_clients(&format!("{control_ws}/db/memctl/echo"), None, MEMORY_STREAMS).await?;
    let c_after = crate::soak::heap_after_gc(&control).await?;
    let per_client_control = c_after.saturating_sub(c_before) as f64 / MEMORY_STREAMS as f64;
    close_all(held).await;
    close_all(warm).await;
    drop(control);

    // What one isolate holds: 128 MiB less what it had at rest with one upstream, less a
    // full pool of 50 upstreams, over the cost of one stream.
    let fits = ((ISOLATE_BYTES - before as f64 - 50.0 * per_upstream) / per_stream.max(1.0)).max(0.0);
    let kib = |b: f64| format!("{:.1} KiB", b / 1024.0);
    rows.push(row(
        "memory per client stream (JS heap after GC + wasm): snippet vs a pass-through Worker",
        kib(per_stream),
        kib(per_client_control),
        Some(per_stream / per_client_control.max(1.0)),
        "",
        None,
    ));
    rows.push(row(
        "memory per upstream (JS heap after GC + wasm, one client's stream subtracted)",
        kib(per_upstream),
        String::new(),
        None,
        "",
        None,
    ));
    rows.push(row(
        "client streams one 128 MiB isolate holds (at rest + 50 upstreams, then streams)",
        format!("{fits:.0}"),
        format!("{:.0}", (ISOLATE_BYTES - c_before as f64) / per_client_control.max(1.0)),
        None,
        "≥ 20,000",
        Some(fits >= 20_000.0),
    ));
    raw.insert(
        "memory".into(),
        json!({
            "streams": MEMORY_STREAMS, "beforeBytes": before, "afterBytes": after,
            "wasmBefore": wasm_before, "wasmAfter": wasm_after,
            "perStreamBytes": per_stream, "perUpstreamBytes": per_upstream,
            "upstreamsBeforeBytes": u_before, "upstreamsAfterBytes": u_after,
            "controlBeforeBytes": c_before, "controlAfterBytes": c_after, "controlPerClientBytes": per_client_control,
        }),
    );
    Ok(())
}

/// What a churn run measured.
struct Churned {
    ok: u64,
    secs: f64,
    rate: f64,
    errors: u64,
    kinds: Value,
    evictions: u64,
}

impl Churned {
    fn json(&self) -> Value {
        json!({ "ok": self.ok, "seconds": self.secs, "rate": self.rate, "errors": self.errors, "kinds": self.kinds, "evictions": self.evictions })
    }
}

/// Two passes over `CHURN_TENANTS` tenants in waves of half the small pool, every reply
/// checked by the load client.
async fn churned(stack: &Stack, w: &Worker) -> Result<Churned> {
    let http = w.origin();
    let ws = http.replacen("http", "ws", 1);
    let tenants: Vec<String> = (0..CHURN_TENANTS).map(|i| format!("churn-{i}")).collect();
    let started = Instant::now();
    let (mut ok, mut errors, mut kinds) = (0, 0, std::collections::BTreeMap::<String, u64>::new());
    for _pass in 0..2 {
        for wave in tenants.chunks(CHURN_POOL / 2) {
            for r in crate::soak::wave(&ws, &http, wave, Some(stack.client_token.clone())).await {
                ok += r.ok;
                // A failed client may have sent nothing, so the kinds count too.
                errors += (r.sent - r.ok).max(r.errors.values().sum());
                for (k, n) in r.errors {
                    *kinds.entry(k).or_default() += n;
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let stats = crate::snippet_stats::fetch(&format!("{http}/__stats"), Some(&stack.admin_token)).await?;
    Ok(Churned {
        ok,
        secs,
        rate: ok as f64 / secs,
        errors,
        kinds: json!(kinds),
        evictions: count(&stats, "poolEvictions"),
    })
}
