//! What sessions cost at rest: idle clients of the client library keep their connection
//! and their heartbeat, and the object is neither woken nor sent a message.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use test_client::stack::repo_root;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::*;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// 20 clients of the client library, idle for 30 s with a heartbeat every 5 s: the
/// snippet answers every heartbeat at the edge, and its idle upstream is checked with the
/// runtime's auto-response, so the object — free to hibernate — is never woken and gets
/// no message event. (Before sessions, each heartbeat was a JSON-RPC `ping` to the object:
/// 50 idle clients woke it 6 times in 90 s.)
#[test]
fn idle_clients_cost_the_object_nothing() {
    const TENANT: &str = "idle";
    const CLIENTS: u64 = 20;
    const IDLE_MS: u64 = 30_000;
    const HEARTBEAT_MS: u64 = 5_000;
    e2e().tenant(TENANT).run(async |stack| {
        let opts = json!({
            "url": format!("ws://127.0.0.1:{}/db/{TENANT}/ws", stack.snippet.port),
            "token": stack.client_token, "clients": CLIENTS, "idleMs": IDLE_MS, "heartbeatMs": HEARTBEAT_MS,
        });
        let mut driver = tokio::process::Command::new("node")
            .arg(repo_root().expect("root").join("test-client/js/idle.mjs"))
            .arg(opts.to_string())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node");
        let mut lines = BufReader::new(driver.stdout.take().expect("stdout")).lines();
        let mut line = async || -> Value {
            let l = tokio::time::timeout(Duration::from_secs(120), lines.next_line()).await;
            serde_json::from_str(&l.expect("in time").expect("read").expect("a line")).expect("JSON")
        };
        assert_eq!(line().await["open"], CLIENTS);
        let before = do_stats(stack, TENANT).await;
        let done = line().await;
        let idle_end = now_ms();
        let after = do_stats(stack, TENANT).await;
        let _ = driver.wait().await;
        // The stats call after the idle period wakes a hibernating object itself.
        let woken_by_us = n(&after, "lastWakeAt") >= idle_end;
        let wakes = n(&after, "wakes") - n(&before, "wakes") - u64::from(woken_by_us);
        let pongs = done["pongs"].as_u64().unwrap_or(0);
        eprintln!("idle: {CLIENTS} clients, {} ms: {pongs} heartbeats, object hibernated: {woken_by_us}, wakes during: {wakes}", done["idleFor"]);
        assert!(pongs >= CLIENTS * (IDLE_MS / HEARTBEAT_MS - 1), "the heartbeats ran: {done}");
        assert_eq!(done["closes"], 0, "no client lost its connection: {done}");
        assert_eq!(wakes, 0, "the object was woken while its clients idled: {before} → {after}");
        if !woken_by_us {
            // Awake throughout (it did not hibernate): then it must have seen no message.
            assert_eq!(n(&after, "messages"), n(&before, "messages"), "{before} → {after}");
        }
    });
}
