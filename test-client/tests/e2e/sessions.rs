//! What sessions cost at rest: idle clients of the client library keep their connection
//! and their heartbeat, and the object is neither woken nor sent a message.

use test_client::idle::{self, Path};

use crate::common::*;

/// 20 clients of the client library, idle for 40 s with a heartbeat every 5 s: the
/// snippet answers every heartbeat at the edge, and its idle upstream is checked with the
/// runtime's auto-response, so the object — free to hibernate — is never woken and gets
/// no message event. (Before sessions, each heartbeat was a JSON-RPC `ping` to the object:
/// 50 idle clients woke it 6 times in 90 s.)
#[test]
fn idle_clients_cost_the_object_nothing() {
    const CLIENTS: u64 = 20;
    // Longer than the snippet's idle check (`UPSTREAM_KEEPALIVE_MS`, 30 s), so its ping falls
    // inside the period, not at its end.
    const IDLE_MS: u64 = 40_000;
    const HEARTBEAT_MS: u64 = 5_000;
    e2e().tenant("idle").run(async |stack| {
        let start = stack.snippet_stats().await.expect("stats");
        let r = idle::measure(stack, Path::Snippet, "idle", CLIENTS, IDLE_MS, HEARTBEAT_MS).await.expect("idle");
        let end = stack.snippet_stats().await.expect("stats");
        eprintln!("idle: {r:?}; the snippet's upstream to it: {}", upstream(&end, "idle"));
        eprintln!(
            "snippet between: handovers +{}, backendConnects +{}, errors +{}",
            delta(&start, &end, "handovers"),
            delta(&start, &end, "backendConnects"),
            delta(&start, &end, "errors")
        );
        assert!(r.heartbeats >= CLIENTS * (IDLE_MS / HEARTBEAT_MS - 1), "the heartbeats ran: {r:?}");
        assert_eq!(r.closes, 0, "no client lost its connection: {r:?}");
        assert_eq!(r.wakes, 0, "the object was woken while its clients idled: {r:?}");
        assert_eq!(r.messages, 0, "the object handled messages while its clients idled: {r:?}");
    });
}
