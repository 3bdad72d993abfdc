//! Where an isolate's JS heap goes: a heap snapshot taken through the DevTools protocol
//! (`HeapProfiler.takeHeapSnapshot`, which collects garbage first), its objects' own
//! sizes summed by kind and constructor. Two of them around opening many client streams
//! say what each stream holds (`bench --only memory`).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::stack::Worker;

/// How long a snapshot may take to arrive (tens of MB for thousands of streams).
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(120);

/// Objects of one kind and constructor: how many, and their own bytes.
pub type Totals = HashMap<String, (u64, u64)>;

/// The JS heap of `worker`'s isolate by `kind:constructor`.
pub async fn by_constructor(worker: &Worker) -> Result<Totals> {
    let list: Value = reqwest::get(format!("http://127.0.0.1:{}/json", worker.inspector)).await?.json().await?;
    let url = list
        .as_array()
        .and_then(|l| l.iter().find_map(|t| t["webSocketDebuggerUrl"].as_str()))
        .context("no inspector target")?
        .to_owned();
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    // Chunks are events of the domain: it must be enabled first.
    let enable = json!({ "id": 0, "method": "HeapProfiler.enable" });
    ws.send(Message::Text(enable.to_string().into())).await?;
    let ask = json!({ "id": 1, "method": "HeapProfiler.takeHeapSnapshot", "params": { "reportProgress": false } });
    ws.send(Message::Text(ask.to_string().into())).await?;
    let mut snapshot = String::new();
    let deadline = tokio::time::Instant::now() + SNAPSHOT_TIMEOUT;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, ws.next()).await {
        let Message::Text(t) = msg? else { continue };
        let v: Value = serde_json::from_str(&t)?;
        if v["method"] == "HeapProfiler.addHeapSnapshotChunk" {
            snapshot.push_str(v["params"]["chunk"].as_str().unwrap_or(""));
        } else if v["id"] == 1 {
            anyhow::ensure!(!snapshot.is_empty(), "the inspector sent no heap snapshot: {v}");
            return totals(&serde_json::from_str(&snapshot)?);
        }
    }
    bail!("no heap snapshot from the inspector")
}

/// Sums a snapshot's nodes (flat arrays described by its `meta`) by kind and name.
fn totals(snap: &Value) -> Result<Totals> {
    let meta = &snap["snapshot"]["meta"];
    let fields: Vec<&str> =
        meta["node_fields"].as_array().context("node_fields")?.iter().filter_map(Value::as_str).collect();
    let kinds: Vec<&str> =
        meta["node_types"][0].as_array().context("node_types")?.iter().filter_map(Value::as_str).collect();
    let at = |f: &str| fields.iter().position(|x| *x == f).with_context(|| format!("no node field {f}"));
    let (ty, name, size) = (at("type")?, at("name")?, at("self_size")?);
    let strings = snap["strings"].as_array().context("strings")?;
    let nodes = snap["nodes"].as_array().context("nodes")?;
    let mut out = Totals::new();
    for node in nodes.chunks(fields.len()) {
        let get = |i: usize| node.get(i).and_then(Value::as_u64).unwrap_or(0) as usize;
        let kind = kinds.get(get(ty)).copied().unwrap_or("?");
        // Strings and numbers are named by their value: one bucket each.
        let label = match kind {
            "string" | "concatenated string" | "sliced string" | "number" | "code" | "hidden" | "array" => {
                kind.to_owned()
            }
            _ => format!("{kind}:{}", strings.get(get(name)).and_then(Value::as_str).unwrap_or("?")),
        };
        let e = out.entry(label).or_default();
        e.0 += 1;
        e.1 += get(size) as u64;
    }
    Ok(out)
}

/// What `after` holds more than `before`, per `n` (objects, bytes), largest first.
pub fn per_item(before: &Totals, after: &Totals, n: usize) -> Vec<(String, f64, f64)> {
    let mut v: Vec<(String, f64, f64)> = after
        .iter()
        .map(|(k, (c, b))| {
            let (c0, b0) = before.get(k).copied().unwrap_or_default();
            (k.clone(), (*c as f64 - c0 as f64) / n as f64, (*b as f64 - b0 as f64) / n as f64)
        })
        .filter(|(_, _, bytes)| bytes.abs() >= 1.0)
        .collect();
    v.sort_by(|a, b| b.2.total_cmp(&a.2));
    v
}
