//! The lookups that replaced scans of the pool: the connection index (`conns.rs`) and
//! the pool's index of deadlines and candidates (`links.rs`). The simulator compares both
//! with a fresh scan after every step of every test (`Mux::check_conns`); these tests
//! walk the transitions where an id leaves or changes its place in a link, and assert
//! what a connection's events reach then.

use super::*;
use crate::sim::Sim;

/// Every connection ever handed out, looked up by the index and by the scan it replaced.
fn lookups(sim: &Sim) -> Vec<(UpstreamId, Option<String>, Option<String>)> {
    (1..sim.mux.next_upstream)
        .map(|n| {
            let id = UpstreamId(n);
            (id, sim.mux.link_of(id).map(|t| t.to_string()), sim.mux.link_of_by_scan(id))
        })
        .collect()
}

#[test]
fn a_handed_over_connection_is_found_while_it_drains_and_forgotten_after_its_barrier() {
    let mut sim = Sim::new(Config { owner_lifetime_ms: 1_000, ..Config::default() });
    sim.here = Here::Request;
    let a = sim.client("t", "/echo");
    sim.run();
    let first = sim.open_sockets()[0];
    assert_eq!(sim.mux.link_of(first).as_deref(), Some("t"));
    let b = sim.client("t", "/echo");
    sim.here = Here::Client(b);
    sim.manual = true;
    sim.run();
    let (successor, _) = sim.connecting[0].clone();
    assert_eq!(sim.mux.link_of(successor).as_deref(), Some("t"), "a successor is found while it connects");
    // Held back: the old connection drains until its barrier's pong comes.
    sim.send(a, "held");
    sim.accept(successor);
    assert_eq!(sim.mux.link_of(first), None, "the drained connection is gone after its barrier");
    assert_eq!(sim.mux.link_of(successor).as_deref(), Some("t"));
    assert_eq!(sim.texts(a), vec!["held"]);
    // A late event of the old connection reaches nothing.
    let before = sim.mux.counters().batches_received;
    sim.mux.handle_upstream_message(first, &[0; 8], sim.now);
    assert_eq!(sim.mux.counters().batches_received, before);
    assert!(lookups(&sim).iter().all(|(_, index, scan)| index == scan));
}

#[test]
fn an_evicted_tenant_back_in_the_pool_gets_a_new_connection_and_the_old_id_stays_gone() {
    let mut sim = Sim::new(Config { max_upstreams: 1, ..Config::default() });
    let a = sim.client("a", "/echo");
    sim.run();
    let old = sim.socket_of("a")[0];
    sim.mux.handle_client_closed(a, 1000, "", sim.now);
    sim.run();
    sim.now += 10;
    // "b" takes the only slot: "a" is evicted.
    let b = sim.client("b", "/echo");
    sim.run();
    assert_eq!(sim.mux.link_of(old), None);
    sim.mux.handle_client_closed(b, 1000, "", sim.now);
    sim.run();
    sim.now += 10;
    let again = sim.client("a", "/echo");
    sim.send(again, "back");
    sim.run();
    let new = sim.socket_of("a")[0];
    assert_ne!(new, old);
    assert_eq!((sim.mux.link_of(new).as_deref(), sim.mux.link_of(old)), (Some("a"), None));
    assert_eq!(sim.texts(again), vec!["back"]);
    assert!(sim.mux.conns.len() <= 3 * sim.mux.config().max_upstreams + 1);
}

#[test]
fn a_lost_connection_is_forgotten_and_its_link_deadline_follows_the_backoff() {
    let mut sim = Sim::new(Config::default());
    let a = sim.client("t", "/echo");
    sim.run();
    let up = sim.socket_of("t")[0];
    sim.refusing.insert("t".to_owned());
    sim.drop_socket(up);
    assert_eq!(sim.mux.link_of(up), None);
    // Reconnect attempts back off: the cached deadline must move with each, as a fresh
    // computation would; the simulator checks it at each step.
    let steps = sim.step_deadlines(5);
    assert!(!steps.is_empty(), "the backoff sets deadlines");
    assert_eq!(sim.mux.poll_timeout(), sim.mux.poll_timeout_uncached());
    let code = match sim.last(a) {
        Some(Delivery::Aborted { code, .. }) => Some(*code),
        Some(Delivery::Close(c)) => Some(c.code),
        _ => None,
    };
    assert_eq!(code, Some(1012), "the client of the lost upstream is told: {:?}", sim.last(a));
}
