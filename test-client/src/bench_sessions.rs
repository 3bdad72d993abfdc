//! What resumable sessions (PROTOCOL.md §14) cost, each against the same run without
//! them: round-trip latency, storage rows and incoming (billable) messages per echo, and
//! what idle clients cost the object against clients connected straight to it.

use anyhow::Result;
use serde_json::{json, Map, Value};

use crate::bench::{count, do_stats, row, Row};
use crate::idle::{self, Path};
use crate::load::{self, LoadOpts, Method};
use crate::stack::Stack;

/// Idle clients held for the wake measurement, and for how long (ms): long enough for
/// the object to hibernate between heartbeats several times over.
const IDLE_CLIENTS: u64 = 50;
const IDLE_MS: u64 = 60_000;
/// The client library's default heartbeat.
const HEARTBEAT_MS: u64 = 15_000;

pub(crate) async fn run(
    stack: &Stack,
    rows: &mut Vec<Row>,
    raw: &mut Map<String, Value>,
    round_trips: u64,
) -> Result<()> {
    let say = |s: &str| eprintln!("bench: {s}");
    say("sessions: 1 client, echo round trip with and without a session (both through the snippet)");
    let tenant = "bench-session";
    let url = format!("ws://127.0.0.1:{}/db/{tenant}/ws/echo", stack.snippet.port);
    let one = |session: bool| LoadOpts {
        clients: 1,
        messages: round_trips,
        method: Method::Raw,
        token: Some(stack.client_token.clone()),
        session,
        ..LoadOpts::new(url.clone())
    };
    let _warm = load::run(LoadOpts { messages: 200, ..one(true) }, false).await?;
    let (plain, plain_do) = measured(stack, tenant, one(false)).await?;
    let (session, session_do) = measured(stack, tenant, one(true)).await?;
    let per = |v: u64, r: &load::Report| v as f64 / r.ok.max(1) as f64;
    rows.push(row(
        "WS echo p50 through the snippet: with a session vs without",
        format!("{:.3} ms", session.latency.p50_ms),
        format!("{:.3} ms", plain.latency.p50_ms),
        Some(session.latency.p50_ms / plain.latency.p50_ms),
        "reported",
        None,
    ));
    rows.push(row(
        "storage rows written per echo: with a session vs without",
        format!("{:.2}", per(session_do.rows, &session)),
        format!("{:.2}", per(plain_do.rows, &plain)),
        None,
        "reported",
        None,
    ));
    rows.push(row(
        "incoming (billable) WebSocket messages at the object per echo: session vs without",
        format!("{:.3}", per(session_do.messages, &session)),
        format!("{:.3}", per(plain_do.messages, &plain)),
        None,
        "reported",
        None,
    ));
    raw.insert(
        "sessionEcho".into(),
        json!({ "session": session, "plain": plain,
        "sessionObject": session_do.json(), "plainObject": plain_do.json() }),
    );

    say("sessions: 50 idle clients for 60 s, through the snippet vs straight to the object");
    let through =
        idle::measure(stack, Path::Snippet, "bench-idle-snippet", IDLE_CLIENTS, IDLE_MS, HEARTBEAT_MS).await?;
    let direct = idle::measure(stack, Path::Direct, "bench-idle-direct", IDLE_CLIENTS, IDLE_MS, HEARTBEAT_MS).await?;
    let per_client_hour = |v: u64| v as f64 * 3_600_000.0 / (IDLE_CLIENTS * IDLE_MS) as f64;
    rows.push(row(
        "object wakes per idle client-hour (client library via snippet vs plain sockets to the object)",
        format!("{:.2}", per_client_hour(through.wakes)),
        format!("{:.2}", per_client_hour(direct.wakes)),
        None,
        "snippet 0",
        Some(through.wakes == 0),
    ));
    rows.push(row(
        "object message events per idle client-hour (same)",
        format!("{:.2}", per_client_hour(through.messages)),
        format!("{:.2}", per_client_hour(direct.messages)),
        None,
        "snippet 0",
        Some(through.messages == 0),
    ));
    raw.insert("idle".into(), json!({ "snippet": through, "direct": direct }));
    Ok(())
}

/// What the object saw during one load run.
struct ObjectDelta {
    messages: u64,
    rows: u64,
}

impl ObjectDelta {
    fn json(&self) -> Value {
        json!({ "messages": self.messages, "sessionRowsWritten": self.rows })
    }
}

async fn measured(stack: &Stack, tenant: &str, opts: LoadOpts) -> Result<(load::Report, ObjectDelta)> {
    let before = do_stats(stack, tenant).await?;
    let report = load::run(opts, false).await?;
    anyhow::ensure!(report.passed, "a session benchmark run had errors:\n{}", report.to_text());
    let after = do_stats(stack, tenant).await?;
    anyhow::ensure!(count(&before, "wakes") == count(&after, "wakes"), "the object hibernated mid-run; rerun");
    let d = |k: &str| count(&after, k).saturating_sub(count(&before, k));
    Ok((report, ObjectDelta { messages: d("messages"), rows: d("sessionRowsWritten") }))
}
