//! Many tenants: one upstream each, the pool's bounds and evictions, one tenant's failure
//! kept from the others, the heartbeat and keep-warm rounds — the real `Mux` against
//! each tenant's real backend session on a simulated clock.

use super::*;
use crate::sim::{rpc, who, Sim};

#[test]
fn each_tenant_gets_its_own_upstream_and_replies_never_cross() {
    let mut sim = Sim::new(Config::default());
    let tenants = ["a", "b", "c"];
    let mut clients = Vec::new();
    for t in tenants {
        for n in 0..4 {
            let id = sim.client(t, "/echo");
            clients.push((id, format!("{t}{n}")));
        }
    }
    for (id, text) in &clients {
        sim.send(*id, text);
    }
    sim.run();
    for (id, text) in &clients {
        assert_eq!(sim.texts(*id), vec![text.clone()]);
    }
    for t in tenants {
        assert_eq!(sim.socket_of(t).len(), 1, "one upstream for tenant {t}");
    }
    let stats = sim.mux.upstream_stats(sim.now);
    assert_eq!(stats.len(), 3);
    assert!(stats.iter().all(|u| u.connected && u.streams == 4));
}

#[test]
fn a_new_tenant_takes_the_least_recently_used_idle_slot_which_closes_cleanly() {
    let mut sim = Sim::new(Config { max_upstreams: 2, ..Config::default() });
    let r = sim.request("old", "{}");
    sim.run();
    assert!(matches!(sim.last(r), Some(Delivery::Response(_))));
    let old = sim.socket_of("old")[0];
    sim.now += 10;
    let busy = sim.client("busy", "/echo");
    sim.run();
    sim.now += 10;
    let fresh = sim.client("fresh", "/echo");
    sim.send(fresh, "hi");
    sim.run();
    assert_eq!(sim.texts(fresh), vec!["hi"]);
    assert!(sim.closed.contains(&(old, 1000)), "evicted with 1000: {:?}", sim.closed);
    assert_eq!(sim.mux.counters().pool_evictions, 1);
    assert!(sim.mux.is_open(busy), "a tenant with streams is never evicted");
}

#[test]
fn when_every_slot_is_busy_a_new_tenant_is_refused_with_a_retry_time() {
    let mut sim = Sim::new(Config { max_upstreams: 2, ..Config::default() });
    let a = sim.client("a", "/echo");
    let _b = sim.client("b", "/echo");
    sim.run();
    let now = sim.now;
    assert_eq!(
        sim.mux.open_client("c", "/echo", who(), "sub:u", None, now),
        Err(Refused::PoolFull { limit: 2, retry_after_ms: 1_000 })
    );
    assert!(matches!(sim.mux.open_request("c", rpc("{}"), now), Err(Refused::PoolFull { .. })));
    assert_eq!(sim.mux.counters().pool_refusals, 2);
    sim.mux.handle_client_closed(a, 1000, "", now);
    sim.run();
    assert!(sim.mux.open_client("c", "/echo", who(), "sub:u", None, now).is_ok(), "a's slot is idle now");
}

#[test]
fn idle_upstreams_close_after_their_ttl() {
    let mut sim = Sim::new(Config { upstream_idle_ms: 60_000, ..Config::default() });
    let a = sim.client("t", "/echo");
    sim.here = Here::Client(a);
    sim.run();
    let up = sim.socket_of("t")[0];
    sim.advance(120_000);
    assert!(sim.closed.is_empty(), "a client keeps it: {:?} {:?}", sim.closed, sim.logs);
    sim.mux.handle_client_closed(a, 1000, "", sim.now);
    sim.advance(59_999);
    assert!(sim.closed.is_empty());
    sim.advance(1);
    assert_eq!(sim.closed, vec![(up, 1000)]);
    assert_eq!(sim.mux.upstreams_open(), 0);
    assert_eq!(sim.mux.poll_timeout(), None, "nothing left to time");
}

#[test]
fn one_tenants_failing_backend_never_delays_or_errors_another() {
    let mut sim = Sim::new(Config { heartbeat_ms: 1_000, backend_busy_ms: 1_000, ..Config::default() });
    sim.refusing.insert("down".into());
    sim.stalled.insert("stuck".into());
    let healthy = sim.client("ok", "/echo");
    let refused = sim.client("down", "/echo");
    let stalled = sim.request("stuck", "{}");
    let mut sent = 0;
    for step in 0..50 {
        sim.send(healthy, &format!("m{step}"));
        sent += 1;
        sim.advance(100);
        assert_eq!(sim.texts(healthy).len(), sent, "answered within the same step, step {step}");
    }
    assert!(matches!(sim.last(refused), Some(Delivery::Aborted { code: 1012, .. })));
    assert!(matches!(sim.last(stalled), Some(Delivery::Failed { status: 502, .. })), "{:?}", sim.last(stalled));
    assert!(sim.last(healthy).is_none(), "the healthy client was never touched");
    let ok = sim.mux.upstream_stats(sim.now).into_iter().find(|u| u.tenant == "ok").expect("listed");
    assert_eq!(ok.errors, 0);
}

#[test]
fn a_silent_backend_is_found_by_the_heartbeat_within_its_period_and_the_busy_bound() {
    let cfg = Config { heartbeat_ms: 1_000, backend_busy_ms: 2_000, request_timeout_ms: 30_000, ..Config::default() };
    let mut sim = Sim::new(cfg);
    sim.stalled.insert("t".into());
    let r = sim.request("t", "{}");
    let ws = sim.client("t", "/echo");
    sim.run();
    let up = sim.socket_of("t")[0];
    sim.advance(1_000);
    assert_eq!(sim.frames_seen.len(), 1, "the opens and the request, in one batch");
    assert_eq!(sim.texts_seen, vec![(up, "ping".to_owned())], "the heartbeat is a text ping");
    sim.advance(1_999);
    assert!(sim.last(r).is_none());
    sim.advance(1);
    assert!(sim.closed.contains(&(up, 1011)), "{:?}", sim.closed);
    assert!(matches!(sim.last(r), Some(Delivery::Failed { status: 502, .. })));
    assert!(matches!(sim.last(ws), Some(Delivery::Aborted { code: 1012, .. })));
    assert_eq!(sim.mux.counters().heartbeat_failures, 1);
}

/// A Durable Object computing one long statement answers nothing, not even its runtime's
/// auto-response, until the statement ends (RUNTIME.md §17): silence shorter than
/// HEARTBEAT_MS + BACKEND_BUSY_MS is a busy backend, and nobody is disconnected for it.
#[test]
fn a_busy_backend_keeps_its_clients_until_its_silence_outlasts_backend_busy_ms() {
    let cfg = Config { heartbeat_ms: 1_000, request_timeout_ms: 60_000, ..Config::default() };
    let (hb, busy) = (cfg.heartbeat_ms, cfg.backend_busy_ms);
    let mut sim = Sim::new(cfg);
    sim.stalled.insert("t".into());
    // A client's context owns the upstream, as in the e2e test: no hand-over falls inside.
    let ws = sim.client("t", "/echo");
    sim.here = Here::Client(ws);
    sim.run();
    let r = sim.request("t", "{}");
    sim.run();
    let up = sim.socket_of("t")[0];
    sim.advance(hb);
    assert_eq!(sim.frames_seen.len(), 2, "the open, the request");
    assert_eq!(sim.texts_seen, vec![(up, "ping".to_owned())], "one heartbeat ping, a text message");
    sim.advance(busy - 1);
    assert!(sim.closed.is_empty(), "busy, not gone: {:?}", sim.closed);
    assert!(sim.last(r).is_none() && sim.last(ws).is_none(), "both still waiting");
    assert_eq!(sim.mux.counters().heartbeat_failures, 0);
    sim.advance(1);
    assert!(sim.closed.contains(&(up, 1011)), "{:?}", sim.closed);
    assert!(matches!(sim.last(r), Some(Delivery::Failed { status: 502, .. })));
    assert!(matches!(sim.last(ws), Some(Delivery::Aborted { code: 1012, .. })));
}

#[test]
fn an_answering_backend_keeps_its_upstream_through_heartbeats() {
    let mut sim = Sim::new(Config { heartbeat_ms: 1_000, ..Config::default() });
    let a = sim.client("t", "/echo");
    sim.run();
    let up = sim.socket_of("t")[0];
    sim.send(a, "first");
    sim.advance(10_000);
    sim.send(a, "still");
    sim.run();
    assert_eq!(sim.texts(a), vec!["first", "still"]);
    assert!(sim.closed.is_empty());
    assert_eq!(sim.socket_of("t"), vec![up]);
    assert_eq!(sim.mux.counters().heartbeat_failures, 0);
}

#[test]
fn keep_warm_pings_listed_tenants_and_the_hottest_upstreams() {
    let cfg = Config { keep_warm_tenants: vec!["listed".into()], keep_warm_hottest: 1, ..Config::default() };
    let mut sim = Sim::new(cfg);
    for _ in 0..3 {
        let r = sim.request("hot", "{}");
        let _ = r;
    }
    let _ = sim.request("cold", "{}");
    sim.run();
    let now = sim.now;
    assert_eq!(sim.mux.handle_keep_warm(now), 2, "listed + the hottest one");
    sim.run();
    assert_eq!(sim.socket_of("listed").len(), 1, "a listed tenant's upstream is opened");
    assert_eq!(sim.mux.counters().keep_warm_pongs, 2);
    assert_eq!(sim.mux.counters().keep_warm_pings, 2);
    // Text pings, answered by the runtime: the objects were not woken for them.
    assert_eq!(sim.texts_seen.iter().filter(|(_, t)| t == "ping").count(), 2, "{:?}", sim.texts_seen);
}

#[test]
fn after_load_and_rest_every_count_returns_to_zero() {
    let mut sim = Sim::new(Config { max_upstreams: 5, upstream_idle_ms: 10_000, ..Config::default() });
    for round in 0..20 {
        let t = format!("t{}", round % 8);
        let c = sim.client(&t, "/echo");
        sim.send(c, "x");
        let _ = sim.request(&t, "{}");
        sim.run();
        sim.mux.handle_client_closed(c, 1000, "", sim.now);
        sim.advance(10);
    }
    sim.advance(20_000);
    assert_eq!(sim.mux.streams_held(), 0);
    assert_eq!(sim.mux.open_streams(), (0, 0));
    assert_eq!(sim.mux.upstreams_open(), 0);
    assert!(sim.open_sockets().is_empty(), "every upstream closed");
    assert_eq!(sim.mux.poll_timeout(), None);
}

#[test]
fn poll_timeout_never_names_a_time_that_handle_timeout_ignores() {
    // Whatever state the pool is in, handling the named time changes something or moves
    // the next deadline later: the glue's timer can never spin.
    let mut sim =
        Sim::new(Config { heartbeat_ms: 700, watchdog_ms: 900, upstream_idle_ms: 5_000, ..Config::default() });
    sim.stalled.insert("s".into());
    sim.refusing.insert("r".into());
    let _ = sim.client("s", "/echo");
    let c = sim.client("r", "/echo");
    let _ = sim.request("s", "{}");
    let _ = c;
    let mut last = 0;
    for _ in 0..200 {
        sim.run();
        let Some(t) = sim.mux.poll_timeout() else { break };
        assert!(t >= last, "deadlines move forward");
        last = t;
        sim.now = sim.now.max(t);
        sim.timeout();
        let _ = sim.client("r", "/echo");
        sim.run();
        if sim.mux.poll_timeout() == Some(t) {
            panic!("handle_timeout({t}) left the same deadline");
        }
    }
}
