//! A DevTools protocol session with a Worker's isolate, through the inspector port its
//! `wrangler dev` serves: the benchmark's CPU profiles and heap figures.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::stack::Worker;

/// How long the inspector has to answer one command (a profile of a few seconds is a
/// few MB of JSON).
const CDP_TIMEOUT: Duration = Duration::from_secs(60);

/// A DevTools protocol session with one isolate.
pub struct Inspector {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    next_id: u64,
}

impl Inspector {
    /// Attaches to the isolate of `worker` (its `wrangler dev` inspector port).
    pub async fn attach(worker: &Worker) -> Result<Inspector> {
        let list: Value = reqwest::get(format!("http://127.0.0.1:{}/json", worker.inspector)).await?.json().await?;
        let url = list
            .as_array()
            .and_then(|l| l.iter().find_map(|t| t["webSocketDebuggerUrl"].as_str()))
            .context("no inspector target")?
            .to_owned();
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Inspector { ws, next_id: 1 })
    }

    /// Sends `method` without waiting for its answer; returns its id.
    pub async fn send(&mut self, method: &str, params: Value) -> Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let ask = json!({ "id": id, "method": method, "params": params });
        self.ws.send(Message::Text(ask.to_string().into())).await?;
        Ok(id)
    }

    /// Sends `method` and waits for its answer's `result` (events and earlier answers in
    /// between are skipped).
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        let id = self.send(method, params).await?;
        let deadline = tokio::time::Instant::now() + CDP_TIMEOUT;
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, self.ws.next()).await {
            let Message::Text(t) = msg? else { continue };
            let v: Value = serde_json::from_str(&t)?;
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    bail!("{method}: {e}");
                }
                return Ok(v["result"].clone());
            }
        }
        bail!("{method}: no answer from the inspector")
    }
}

/// The JS heap of a worker's isolate after a forced GC. Both commands go at once: an idle
/// isolate's runtime may not answer the collection on its own until another command
/// comes (measured: waiting for it first timed the pass-through Worker out).
pub async fn heap_after_gc(worker: &Worker) -> Result<u64> {
    let mut inspector = Inspector::attach(worker).await?;
    inspector.send("HeapProfiler.collectGarbage", json!({})).await?;
    let usage = inspector.call("Runtime.getHeapUsage", json!({})).await?;
    usage["usedSize"].as_u64().context("no usedSize")
}
