//! Deadlines that must fire when nobody comes by: a bounded owner's lifetime, the end of
//! a backoff, a keep-warm round for a refusing backend, a request whose context died.
//! Every step of the simulator also checks that handling a deadline moves the next one
//! past `now` (`Sim::timeout`).

use crate::sim::*;
use crate::*;

/// A keep-warm round for a tenant whose backend refuses: stepping deadlines one by one,
/// as a timer would, comes to rest instead of naming a past time for ever.
#[test]
fn a_keep_warm_round_for_a_refusing_backend_comes_to_rest() {
    let cfg = Config { keep_warm_tenants: vec!["w".into()], upstream_idle_ms: 10_000, ..Config::default() };
    let mut sim = Sim::new(cfg);
    sim.refusing.insert("w".into());
    let now = sim.now;
    assert_eq!(sim.mux.handle_keep_warm(now), 1);
    sim.run();
    let times = sim.step_deadlines(1_000);
    assert!(times.len() < 100, "{} steps: {:?}…", times.len(), &times[..10]);
    assert!(times.windows(2).all(|w| w[0] < w[1]), "every step moves time forward: {times:?}");
    assert_eq!(sim.mux.poll_timeout(), None, "at rest");
    assert!(sim.mux.counters().connect_attempts >= 1);
}

/// An HTTP request's context owns the upstream; nobody else comes by. When its lifetime is
/// up the upstream is retired (drained, closed 1000), so that context can end.
#[test]
fn an_http_owner_retires_its_upstream_when_its_lifetime_is_up_and_nobody_comes() {
    let mut sim = Sim::new(Config { owner_lifetime_ms: 20_000, upstream_idle_ms: 60_000, ..Config::default() });
    sim.here = Here::Request;
    let r = sim.request("t", "{\"jsonrpc\":\"2.0\",\"method\":\"ping\",\"id\":1}");
    sim.run();
    assert!(matches!(sim.last(r), Some(Delivery::Response(_))));
    let up = sim.socket_of("t");
    assert_eq!(up.len(), 1);
    // Only the owner's own (lingering) context sees events from now on.
    sim.here = Here::Lingering;
    sim.advance(19_999);
    assert!(sim.closed.is_empty(), "not before its lifetime");
    sim.advance(2);
    assert_eq!(sim.closed, vec![(up[0], 1000)], "retired");
    assert_eq!(sim.mux.counters().retirements, 1);
    assert_eq!(sim.mux.upstream_stats(sim.now)[0].owner, OwnerKind::None);
    // The next request opens a fresh one in its own context.
    sim.here = Here::Request;
    let r = sim.request("t", "{\"jsonrpc\":\"2.0\",\"method\":\"ping\",\"id\":2}");
    sim.run();
    assert!(matches!(sim.last(r), Some(Delivery::Response(_))));
    assert_eq!(sim.socket_of("t").len(), 1);
}

/// A request in flight when the lifetime ends keeps the upstream from retiring; the next
/// request's context takes it over (a hand-over, the old one draining behind its
/// barrier). If the old one never answers its barrier, the request in flight on it gets
/// a clear 502 at the watchdog.
#[test]
fn an_expired_owner_with_requests_in_flight_is_handed_to_the_next_request() {
    let mut sim = Sim::new(Config { owner_lifetime_ms: 1_000, watchdog_ms: 2_000, ..Config::default() });
    sim.here = Here::Request;
    let _ = sim.request("t", "{}");
    sim.run();
    let old = sim.socket_of("t")[0];
    sim.stalled_sockets.insert(old);
    let r = sim.request("t", "{\"jsonrpc\":\"2.0\",\"method\":\"ping\",\"id\":1}");
    sim.run();
    sim.here = Here::Lingering;
    sim.advance(1_000);
    assert!(sim.last(r).is_none(), "still waiting on the expired owner's upstream");
    assert!(sim.closed.is_empty(), "not retired while a request is in flight");
    sim.here = Here::Request;
    let r2 = sim.request("t", "{\"jsonrpc\":\"2.0\",\"method\":\"ping\",\"id\":2}");
    sim.run();
    assert!(matches!(sim.last(r2), Some(Delivery::Response(_))), "answered on the successor");
    assert_eq!(sim.mux.counters().handovers, 1);
    assert_eq!(sim.socket_of("t").len(), 2);
    sim.here = Here::Lingering;
    sim.advance(2_000);
    assert!(matches!(sim.last(r), Some(Delivery::Failed { status: 502, .. })), "{:?}", sim.last(r));
    assert!(sim.closed.contains(&(old, 1011)));
}

/// Requests in flight when the lifetime ends, and none after: when the last one ends
/// (here by its timeout), the upstream is retired.
#[test]
fn an_expired_owner_retires_when_its_last_request_ends() {
    let cfg = Config { owner_lifetime_ms: 1_000, request_timeout_ms: 3_000, ..Config::default() };
    let mut sim = Sim::new(cfg);
    sim.here = Here::Request;
    let _ = sim.request("t", "{}");
    sim.run();
    let up = sim.socket_of("t")[0];
    sim.stalled_sockets.insert(up);
    let r = sim.request("t", "{}");
    sim.run();
    sim.here = Here::Lingering;
    sim.advance(2_000);
    assert!(sim.closed.is_empty(), "a request is in flight");
    sim.advance(1_000);
    assert!(matches!(sim.last(r), Some(Delivery::Failed { status: 504, .. })));
    assert_eq!(sim.mux.counters().retirements, 1);
    assert_eq!(sim.mux.upstream_stats(sim.now)[0].owner, OwnerKind::None);
}

/// A scheduled round's context took the upstream over; idle clients are attached but
/// silent. At the end of its lifetime the core asks for a client's context, and that
/// context takes the upstream over: the round's context is then free to end, and the
/// clients stay attached throughout.
#[test]
fn a_background_owner_hands_over_to_an_idle_client_when_its_lifetime_is_up() {
    let mut sim = Sim::new(Config { owner_lifetime_ms: 20_000, ..Config::default() });
    sim.here = Here::Background;
    let c = sim.client("t", "/echo");
    sim.run();
    let up = sim.socket_of("t")[0];
    assert_eq!(sim.mux.upstream_stats(sim.now)[0].owner, OwnerKind::Background);
    assert!(sim.mux.owner_wanted(sim.now), "a client could own it");
    sim.here = Here::Lingering;
    sim.advance(20_000);
    assert!(sim.closed.is_empty(), "a client is there: not retired");
    // The glue runs the errand in the client's context.
    sim.here = Here::Client(c);
    sim.run();
    assert!(!sim.mux.owner_wanted(sim.now));
    assert_eq!(sim.mux.upstream_stats(sim.now)[0].owner, OwnerKind::WebSocket);
    assert!(sim.closed.contains(&(up, 1000)), "the old one drained and closed");
    sim.send(c, "still here");
    sim.run();
    assert_eq!(sim.texts(c), vec!["still here"]);
    assert!(sim.mux.is_open(c));
}

/// The backend restarted: idle clients were told 1012 and came straight back while the
/// link backs off. Nothing but a deadline can start the next attempt; when it ends, the
/// deadline is consumed and a client's context is asked for, which connects.
#[test]
fn after_a_backoff_idle_clients_get_a_connect_without_sending_anything() {
    let mut sim = Sim::new(Config { reconnect_base_ms: 1_000, reconnect_max_ms: 1_000, ..Config::default() });
    let a = sim.client("t", "/echo");
    sim.here = Here::Client(a);
    sim.run();
    let up = sim.socket_of("t")[0];
    sim.drop_socket(up);
    assert!(matches!(sim.last(a), Some(Delivery::Aborted { code: 1012, .. })));
    sim.refusing.insert("t".into());
    let b = sim.client("t", "/echo");
    sim.here = Here::Client(b);
    sim.run();
    sim.refusing.clear();
    // Nobody who may own it comes by.
    sim.here = Here::Lingering;
    sim.advance(1_001);
    assert_eq!(sim.mux.poll_timeout(), None, "the backoff's end was consumed");
    assert!(sim.mux.owner_wanted(sim.now), "a client's context is wanted");
    sim.here = Here::Client(b);
    sim.run();
    assert_eq!(sim.socket_of("t").len(), 1, "connected from the client's context");
    sim.send(b, "hello");
    sim.run();
    assert_eq!(sim.texts(b), vec!["hello"]);
}

/// A request whose context died before its reply (the client hung up) gets its 504 at
/// the deadline all the same; when nobody collects it within the watchdog's bound, the
/// stream is forgotten, its task dropped, and its link can go idle and be evicted.
#[test]
fn a_request_whose_context_died_is_forgotten_and_its_link_goes_idle() {
    let cfg = Config { request_timeout_ms: 3_000, watchdog_ms: 2_000, upstream_idle_ms: 5_000, ..Config::default() };
    let mut sim = Sim::new(cfg);
    sim.here = Here::Request;
    sim.stalled.insert("t".into());
    let r = sim.request("t", "{}");
    sim.dead.insert(r);
    sim.run();
    sim.here = Here::Lingering;
    sim.advance(3_000);
    assert_eq!(sim.mux.counters().timeouts, 1, "its 504 was delivered");
    assert!(sim.abandoned_requests.is_empty());
    sim.advance(2_000);
    assert_eq!(sim.abandoned_requests, vec![r]);
    assert_eq!(sim.mux.counters().abandoned_requests, 1);
    assert_eq!(sim.mux.streams_held(), 0);
    sim.advance(60_000);
    assert_eq!(sim.mux.upstreams_open(), 0, "the link went idle and was evicted");
}

/// A living request collects its reply just before the collection deadline: nothing is
/// abandoned.
#[test]
fn a_request_that_collects_its_504_is_not_abandoned() {
    let cfg = Config { request_timeout_ms: 3_000, watchdog_ms: 2_000, ..Config::default() };
    let mut sim = Sim::new(cfg);
    sim.here = Here::Request;
    sim.stalled.insert("t".into());
    let r = sim.request("t", "{}");
    sim.run();
    sim.advance(3_000);
    assert!(matches!(sim.last(r), Some(Delivery::Failed { status: 504, .. })));
    sim.advance(10_000);
    assert!(sim.abandoned_requests.is_empty());
}

/// A client starts a successor and leaves before it opens: the connect was its context's
/// I/O and dies with it, so the successor is dropped at once (no watchdog trip, no error)
/// and another client's context starts the hand-over again.
#[test]
fn a_successor_whose_client_left_while_it_connected_is_dropped_and_started_again() {
    let mut sim = Sim::new(Config::default());
    sim.here = Here::Request;
    let _ = sim.request("t", "{}");
    sim.run();
    let a = sim.client("t", "/echo");
    let b = sim.client("t", "/echo");
    sim.here = Here::Client(a);
    sim.manual = true;
    sim.run();
    let (successor, _) = sim.connecting[0].clone();
    sim.mux.handle_client_closed(a, 1000, "", sim.now);
    sim.here = Here::Lingering;
    sim.run();
    assert!(sim.abandoned.contains(&successor), "dropped with its client's context");
    assert!(sim.connecting.is_empty());
    assert!(sim.mux.owner_wanted(sim.now), "the bounded owner still wants a client's context");
    sim.here = Here::Client(b);
    sim.run();
    let (next, _) = sim.connecting[0].clone();
    assert_ne!(next, successor);
    sim.accept(next);
    sim.advance(Config::default().watchdog_ms * 2);
    assert!(!sim.mux.owner_wanted(sim.now));
    let c = sim.mux.counters();
    assert_eq!((c.handovers, c.watchdog_trips, c.errors), (1, 0, 0), "{c:?}");
    assert_eq!(sim.mux.upstream_stats(sim.now)[0].owner, OwnerKind::WebSocket);
}

/// The lifetime ends just as a heartbeat falls due (a reply restarted the heartbeat's
/// clock, since the request still counted when it came): the upstream is retired all the
/// same, and the ping waits for the next connection.
#[test]
fn an_expired_owner_retires_even_when_a_heartbeat_falls_due_with_it() {
    let cfg = Config { owner_lifetime_ms: 5_000, heartbeat_ms: 2_000, ..Config::default() };
    let mut sim = Sim::new(cfg);
    sim.here = Here::Request;
    let _ = sim.request("t", "{}");
    sim.run();
    sim.here = Here::Lingering;
    sim.advance(3_000);
    sim.here = Here::Request;
    let _ = sim.request("t", "{}");
    sim.run();
    sim.here = Here::Lingering;
    sim.advance(2_000);
    assert_eq!(sim.mux.counters().retirements, 1, "{:?}", sim.mux.counters());
    assert_eq!(sim.mux.upstream_stats(sim.now)[0].owner, OwnerKind::None);
}

/// A client of the upstream's tenant was attached when the lifetime ended, and left
/// before its context took over: the upstream is retired once the client's Close is out.
/// (An upstream that only clients of other tenants could take over, with nothing of its
/// own, retires at once: the keep-warm e2e test.)
#[test]
fn an_expired_owner_retires_when_the_last_client_that_could_take_over_leaves() {
    let mut sim = Sim::new(Config { owner_lifetime_ms: 1_000, ..Config::default() });
    sim.here = Here::Request;
    let _ = sim.request("t", "{}");
    sim.run();
    sim.here = Here::Lingering;
    let c = sim.client("t", "/echo");
    sim.advance(1_000);
    assert_eq!(sim.mux.counters().retirements, 0, "a client could still take it over");
    sim.mux.handle_client_closed(c, 1000, "", sim.now);
    sim.run();
    assert_eq!(sim.mux.counters().retirements, 1);
}
