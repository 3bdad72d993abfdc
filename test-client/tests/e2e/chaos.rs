//! Chaos: the project's own client library (writers, listeners, a publisher) through two
//! snippet isolates while one isolate is killed and started again, the backend restarts,
//! the backend freezes, and one client's connection dies silently (the driver,
//! `test-client/js/chaos.mjs`, cuts it). Sessions (PROTOCOL.md §14) must carry them all
//! through: every acknowledged write present exactly once, every call settled within its
//! timeout with a definite answer, every push delivered to every listener exactly once
//! and in order. The heal time (socket lost → session resumed) is reported, beside that of
//! plain WebSocket clients in the same run (no session: reconnected, first echo back) and
//! what they lost in flight.
//!
//! `./x test` runs one cycle of failures (24 s); `./x chaos [minutes]` (env
//! `CHAOS_MINUTES`) repeats the cycle for that long against the same clients.

use std::time::Duration;

use serde_json::{json, Value};
use test_client::stack::{repo_root, RUNTIME_CLOSE_NOISE};

use crate::common::*;

/// When each failure happens, from the start of each cycle (ms).
const KILL_AT: u64 = 3_000;
const KILLED_FOR: u64 = 2_000;
const BACKEND_RESTART_AT: u64 = 8_000;
const SILENT_AT: u64 = 12_000;
const FREEZE_AT: u64 = 15_000;
const FROZEN_FOR: u64 = 5_000;
const CYCLE: u64 = 24_000;

/// Cycles to run: one, or as many as fit in `CHAOS_MINUTES`.
fn cycles() -> u64 {
    let minutes: f64 = std::env::var("CHAOS_MINUTES").ok().and_then(|m| m.parse().ok()).unwrap_or(0.0);
    ((minutes * 60_000.0) as u64 / CYCLE).max(1)
}

/// Lines the runtime writes when a peer of one of its sockets is killed or frozen: the
/// point of the test (see `RUNTIME_CLOSE_NOISE`).
const CHAOS_NOISE: &[&str] = &[RUNTIME_CLOSE_NOISE];

#[test]
fn sessions_survive_a_killed_isolate_a_restarted_and_a_frozen_backend_and_a_silent_drop() {
    // Detection bounds shortened so the failures heal within the run: a frozen backend
    // is found by the snippet after BACKEND_BUSY_MS, an idle upstream checked every
    // UPSTREAM_KEEPALIVE_MS.
    let vars = [("BACKEND_BUSY_MS", "3000"), ("HEARTBEAT_MS", "1000"), ("UPSTREAM_KEEPALIVE_MS", "2000")];
    e2e().vars(&vars).own_stack("kills and restarts its workers").tolerating(CHAOS_NOISE).run_mut(async |stack| {
        let mut b = stack.extra_snippet("default", &vars).expect("second snippet");
        let opts = json!({
            "urls": [format!("ws://127.0.0.1:{}", stack.snippet.port), format!("ws://127.0.0.1:{}", b.port)],
            "token": stack.client_token, "tenant": "chaos",
            "writers": 16, "listeners": 8, "publishEveryMs": 100, "writeEveryMs": 50,
            "cycles": cycles(), "cycleMs": CYCLE, "silentAtMs": SILENT_AT, "settleMs": 30_000,
            "callTimeoutMs": 30_000, "heartbeatMs": 2_000, "heartbeatTimeoutMs": 2_000,
        });
        let script = repo_root().expect("root").join("test-client/js/chaos.mjs");
        let driver = tokio::process::Command::new("node")
            .arg(script)
            .arg(opts.to_string())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node");
        let t0 = tokio::time::Instant::now();
        for cycle in 0..cycles() {
            let at = |ms: u64| tokio::time::sleep_until(t0 + Duration::from_millis(cycle * CYCLE + ms));
            at(KILL_AT).await;
            stack.snippet.kill();
            at(KILL_AT + KILLED_FOR).await;
            stack.revive_snippet().expect("snippet A back");
            at(BACKEND_RESTART_AT).await;
            stack.restart_backend().expect("backend back");
            at(FREEZE_AT).await;
            stack.backend.freeze(true);
            at(FREEZE_AT + FROZEN_FOR).await;
            stack.backend.freeze(false);
        }
        let out = driver.wait_with_output().await.expect("driver");
        b.stop();
        assert!(out.status.success(), "the chaos driver failed (its log is above)");
        let r: Value = serde_json::from_slice(&out.stdout).expect("the driver's report is JSON");
        eprintln!("chaos report: {r}");
        let p = &r["plain"];
        report_at_exit(format!(
            "chaos: {} writes, {} pushes to 8 listeners, {} heals, heal p50 {} ms p99 {} ms; without sessions: {} heals, \
             p50 {} ms p99 {} ms, {} messages lost in flight",
            r["written"], r["published"], r["heals"], r["healP50Ms"], r["healP99Ms"],
            p["heals"], p["healP50Ms"], p["healP99Ms"], p["lostInFlight"]
        ));
        assert!(r["written"].as_u64() > Some(100) && r["published"].as_u64() > Some(50), "load ran: {r}");
        assert_eq!(r["missing"], json!([]), "acknowledged writes missing: {r}");
        assert_eq!(r["twice"], json!([]), "writes that ran twice: {r}");
        assert_eq!(r["listenerFaults"], json!([]), "a listener missed, repeated or reordered a push: {r}");
        assert_eq!(r["calls"]["unknown"], 0, "a call ended 'may or may not have run' within the window: {r}");
        assert_eq!(r["calls"]["late"], 0, "a call outlived its own timeout: {r}");
        assert_eq!(r["lostSessions"], json!([]), "a session could not be resumed within the window: {r}");
        assert!(r["heals"].as_u64() >= Some(8 * cycles()), "the killed isolate's clients and the cut one healed: {r}");
    });
}
