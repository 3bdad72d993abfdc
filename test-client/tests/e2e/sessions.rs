//! What sessions cost at rest: idle clients of the client library keep their connection
//! and their heartbeat, and the object is neither woken nor sent a message.

use test_client::idle::{self, Path};

use crate::common::*;

/// 20 clients of the client library, idle for 30 s with a heartbeat every 5 s: the
/// snippet answers every heartbeat at the edge, and its idle upstream is checked with the
/// runtime's auto-response, so the object — free to hibernate — is never woken and gets
/// no message event. (Before sessions, each heartbeat was a JSON-RPC `ping` to the object:
/// 50 idle clients woke it 6 times in 90 s.)
#[test]
fn idle_clients_cost_the_object_nothing() {
    const CLIENTS: u64 = 20;
    const IDLE_MS: u64 = 30_000;
    const HEARTBEAT_MS: u64 = 5_000;
    e2e().tenant("idle").run(async |stack| {
        let r = idle::measure(stack, Path::Snippet, "idle", CLIENTS, IDLE_MS, HEARTBEAT_MS).await.expect("idle");
        eprintln!("idle: {r:?}");
        assert!(r.heartbeats >= CLIENTS * (IDLE_MS / HEARTBEAT_MS - 1), "the heartbeats ran: {r:?}");
        assert_eq!(r.closes, 0, "no client lost its connection: {r:?}");
        assert_eq!(r.wakes, 0, "the object was woken while its clients idled: {r:?}");
        assert_eq!(r.messages, 0, "the object handled messages while its clients idled: {r:?}");
    });
}
