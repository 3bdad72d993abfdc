//! Idle clients and what they cost the object: drives `test-client/js/idle.mjs` (the
//! project's client library, or plain sockets straight to the object) and reads the
//! object's wakes and message events around the idle period. Used by the e2e test
//! `sessions::idle_clients_cost_the_object_nothing` and by `test-client bench`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::bench::{count, do_stats};
use crate::stack::{repo_root, Stack};

/// Where the idle clients connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Through the snippet, with the client library (a session each).
    Snippet,
    /// Straight to the object, pinging its runtime auto-response.
    Direct,
}

/// What an idle period cost.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Idle {
    /// Clients held open.
    pub clients: u64,
    /// How long they idled (ms).
    pub idle_ms: u64,
    /// Heartbeats answered during it.
    pub heartbeats: u64,
    /// Connections that closed during it.
    pub closes: u64,
    /// Times the object was woken during it (not counting the stats call after it).
    pub wakes: u64,
    /// Message events the object handled during it, if it stayed awake throughout
    /// (a hibernating object that was never woken handled none).
    pub messages: u64,
    /// Whether the object hibernated (its stats call after the period woke it).
    pub hibernated: bool,
}

/// How far the object's clock may trail this process's when the two are compared: a wake
/// this close to the end of the period is taken for the one the stats call caused.
const CLOCK_ALLOWANCE_MS: u64 = 250;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Holds `clients` idle clients on `tenant` for `idle_ms`, each with a heartbeat every
/// `heartbeat_ms`, and measures what the object saw.
pub async fn measure(
    stack: &Stack,
    path: Path,
    tenant: &str,
    clients: u64,
    idle_ms: u64,
    heartbeat_ms: u64,
) -> Result<Idle> {
    let (url, token, direct) = match path {
        Path::Snippet => (format!("ws://127.0.0.1:{}/db/{tenant}/ws", stack.snippet.port), &stack.client_token, false),
        Path::Direct => (format!("{}/db/{tenant}/ws", stack.backend.ws()), &stack.token, true),
    };
    let opts = json!({ "url": url, "token": token, "clients": clients, "idleMs": idle_ms,
                       "heartbeatMs": heartbeat_ms, "direct": direct });
    let mut driver = tokio::process::Command::new("node")
        .arg(repo_root()?.join("test-client/js/idle.mjs"))
        .arg(opts.to_string())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("node")?;
    let mut lines = BufReader::new(driver.stdout.take().context("stdout")?).lines();
    let wait = Duration::from_millis(idle_ms) + Duration::from_secs(120);
    let mut line = async || -> Result<Value> {
        let l = tokio::time::timeout(wait, lines.next_line()).await.context("the idle driver hung")??;
        Ok(serde_json::from_str(&l.context("the idle driver ended early")?)?)
    };
    anyhow::ensure!(line().await?["open"] == clients, "not every idle client opened");
    let before = do_stats(stack, tenant).await?;
    let done = line().await?;
    let end = now_ms();
    let after = do_stats(stack, tenant).await?;
    let _ = driver.wait().await;
    // The stats call after the period wakes a hibernating object itself: its wake time is
    // then just after `end` — read with the object's clock, which workerd advances only
    // at I/O, hence the small allowance.
    let hibernated = count(&after, "lastWakeAt") + CLOCK_ALLOWANCE_MS >= end;
    let wakes = (count(&after, "wakes") - count(&before, "wakes")).saturating_sub(u64::from(hibernated));
    // Counters live in the instance: only one that lived through the period can say.
    let lived = !hibernated && wakes == 0;
    let messages = if lived { count(&after, "messages").saturating_sub(count(&before, "messages")) } else { 0 };
    let n = |k: &str| done[k].as_u64().unwrap_or(0);
    Ok(Idle {
        clients,
        idle_ms: n("idleFor"),
        heartbeats: n("pongs"),
        closes: n("closes"),
        wakes,
        messages,
        hibernated,
    })
}
