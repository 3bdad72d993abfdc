//! [`View`] in the Prometheus text exposition format, version 0.0.4, written as the
//! snippet's (`protocol::exposition`): every family has `# HELP` and `# TYPE`,
//! counters end in `_total`, times are seconds. Every sample carries `tenant="<name>"`
//! first: one object is one tenant, and a scraper that reads many objects (one request per
//! object) tells their series apart by it. A counter that goes back to 0 is the object
//! waking again (`snippet_proxy_object_woke_time_seconds` moves with it).
//!
//! server-ts renders the same text (`src/metrics.js`); the session vectors compare both.

use protocol::exposition::{seconds, Exposition, Kind};

use super::View;
use crate::object::Counters;

/// A counter read from the view's [`Counters`].
type Of = fn(&Counters) -> u64;

const COUNTERS: [(&str, &str, Of); 10] = [
    ("snippet_proxy_object_sockets_accepted_total", "Mux sockets (snippet upstreams) accepted.", |c| {
        c.sockets_accepted
    }),
    ("snippet_proxy_object_sockets_closed_total", "Mux sockets that closed, failed or were found dead.", |c| {
        c.sockets_closed
    }),
    ("snippet_proxy_object_clients_opened_total", "Clients the application opened.", |c| c.opened),
    ("snippet_proxy_object_clients_closed_total", "Clients closed for the application, for any reason.", |c| c.closed),
    ("snippet_proxy_object_requests_total", "Requests answered, over a mux socket or as plain HTTP.", |c| c.requests),
    (
        "snippet_proxy_object_handovers_total",
        "Hand-overs begun: barrier pings from an isolate replacing its socket with a newer one.",
        |c| c.handovers,
    ),
    ("snippet_proxy_object_adopted_total", "Clients moved to a new socket by a hand-over.", |c| c.adopted),
    ("snippet_proxy_object_orphaned_total", "Clients whose socket closed mid-hand-over before their re-open.", |c| {
        c.orphaned
    }),
    ("snippet_proxy_object_lost_total", "Clients closed because their socket went and no hand-over took them.", |c| {
        c.lost
    }),
    ("snippet_proxy_object_errors_total", "Error frames sent.", |c| c.errors),
];

/// Counters split by a `direction` label: in, from the snippets; out, to them.
const DIRECTED: [(&str, &str, Of, Of); 2] = [
    (
        "snippet_proxy_object_messages_total",
        "WebSocket messages (batches of frames) on the mux sockets.",
        |c| c.messages_in,
        |c| c.messages_out,
    ),
    ("snippet_proxy_object_frames_total", "Frames inside those messages.", |c| c.frames_in, |c| c.frames_out),
];

const REFUSALS: [(&str, Of); 7] = [
    ("malformed", |c| c.refused.malformed),
    ("service", |c| c.refused.service),
    ("admission", |c| c.refused.admission),
    ("limit", |c| c.refused.limit),
    ("app", |c| c.refused.app),
    ("expired", |c| c.refused.expired),
    ("request", |c| c.refused.request),
];

const SESSIONS: [(&str, &str, Of); 5] = [
    ("snippet_proxy_object_sessions_resumed_total", "Sessions a client came back to.", |c| c.sessions.resumed),
    ("snippet_proxy_object_sessions_expired_total", "Sessions nobody came back to in time.", |c| c.sessions.expired),
    ("snippet_proxy_object_session_messages_replayed_total", "Messages sent again to a client that came back.", |c| {
        c.sessions.replayed
    }),
    ("snippet_proxy_object_session_duplicates_total", "Client messages dropped as already taken.", |c| {
        c.sessions.duplicates
    }),
    ("snippet_proxy_object_session_rows_written_total", "Storage rows the sessions wrote or deleted.", |c| {
        c.sessions.rows_written
    }),
];

/// The whole document.
pub(super) fn render(v: &View) -> String {
    let c = &v.counters;
    let mut d = Exposition::new("tenant", &v.tenant);
    let gauges: [(&str, &str, u64); 4] = [
        ("snippet_proxy_object_upstreams", "Mux sockets connected now: one per snippet isolate.", v.upstreams),
        ("snippet_proxy_object_streams", "Clients on them now.", v.streams),
        ("snippet_proxy_object_sessions_detached", "Sessions' clients away now, waiting to come back.", v.detached),
        ("snippet_proxy_object_orphans", "Clients waiting now for their re-open after a hand-over.", v.orphans),
    ];
    for (name, help, value) in gauges {
        d.single(name, Kind::Gauge, help, value);
    }
    let woke = "snippet_proxy_object_woke_time_seconds";
    d.family(woke, Kind::Gauge, "When this instance woke (seconds since the epoch); the counters start there.");
    d.sample(woke, &[], &seconds(v.woke_at));
    for (name, help, of) in COUNTERS {
        d.single(name, Kind::Counter, help, of(c));
    }
    for (name, help, inward, outward) in DIRECTED {
        d.family(name, Kind::Counter, help);
        d.sample(name, &[("direction", "in")], &inward(c).to_string());
        d.sample(name, &[("direction", "out")], &outward(c).to_string());
    }
    let refusals = "snippet_proxy_object_refusals_total";
    d.family(
        refusals,
        Kind::Counter,
        "Streams refused or ended by the object, and requests refused admission, by reason.",
    );
    for (reason, of) in REFUSALS {
        d.sample(refusals, &[("reason", reason)], &of(c).to_string());
    }
    for (name, help, of) in SESSIONS {
        d.single(name, Kind::Counter, help, of(c));
    }
    if !v.sockets.is_empty() {
        let streams = "snippet_proxy_object_socket_streams";
        d.family(streams, Kind::Gauge, "Clients on one mux socket now (the sockets with the most).");
        for s in &v.sockets {
            d.sample(streams, &[("socket", &s.socket)], &s.streams.to_string());
        }
        let messages = "snippet_proxy_object_socket_messages_total";
        d.family(messages, Kind::Counter, "Messages (batches) on one mux socket since this instance knew it.");
        for s in &v.sockets {
            d.sample(messages, &[("socket", &s.socket), ("direction", "in")], &s.messages_in.to_string());
            d.sample(messages, &[("socket", &s.socket), ("direction", "out")], &s.messages_out.to_string());
        }
    }
    d.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::SocketView;

    fn view() -> View {
        let mut counters = Counters { messages_in: 3, frames_out: 7, ..Counters::default() };
        counters.refused.admission = 2;
        View {
            tenant: "room".into(),
            woke_at: 1_700_000_000_123,
            upstreams: 1,
            streams: 2,
            detached: 0,
            orphans: 0,
            sockets: vec![SocketView {
                socket: "00000000000a".into(),
                streams: 2,
                sessions: 0,
                messages_in: 3,
                messages_out: 1,
                handing_over: false,
            }],
            counters,
        }
    }

    #[test]
    fn every_family_has_help_and_type_every_counter_ends_in_total_every_sample_names_the_tenant() {
        let doc = render(&view());
        let mut family: Option<(String, String)> = None;
        let mut seen = std::collections::BTreeSet::new();
        for line in doc.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().expect("name").to_owned();
                assert!(seen.insert(name.clone()), "{name} twice");
                family = Some((name, String::new()));
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("kind");
                let f = family.as_mut().expect("HELP first");
                assert_eq!(f.0, name);
                f.1 = kind.to_owned();
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{name}");
                }
            } else {
                let (name, _) = line.split_once('{').expect("labels");
                let (fam, kind) = family.as_ref().expect("family");
                assert!(!kind.is_empty() && name == fam, "{line}");
                assert!(line.contains("{tenant=\"room\""), "{line}");
            }
        }
        assert!(doc.contains("snippet_proxy_object_upstreams{tenant=\"room\"} 1\n"), "{doc}");
        assert!(doc.contains("snippet_proxy_object_woke_time_seconds{tenant=\"room\"} 1700000000.123\n"));
        assert!(doc.contains("snippet_proxy_object_messages_total{tenant=\"room\",direction=\"in\"} 3\n"));
        assert!(doc.contains("snippet_proxy_object_frames_total{tenant=\"room\",direction=\"out\"} 7\n"));
        assert!(doc.contains("snippet_proxy_object_refusals_total{tenant=\"room\",reason=\"admission\"} 2\n"));
        assert!(doc.contains("snippet_proxy_object_socket_streams{tenant=\"room\",socket=\"00000000000a\"} 2\n"));
        let out =
            "snippet_proxy_object_socket_messages_total{tenant=\"room\",socket=\"00000000000a\",direction=\"out\"} 1";
        assert!(doc.contains(out), "{doc}");
    }

    #[test]
    fn no_socket_no_per_socket_series_and_labels_are_escaped() {
        let v = View { sockets: Vec::new(), tenant: "a\"b".into(), ..view() };
        let doc = render(&v);
        assert!(!doc.contains("socket="), "{doc}");
        assert!(doc.contains("snippet_proxy_object_streams{tenant=\"a\\\"b\"} 2\n"), "{doc}");
    }
}
