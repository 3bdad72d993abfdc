//! The cost model's arithmetic against small cases computed by hand.

use clap::Parser;

use super::model::*;
use super::prices::MONTH_SECS;
use super::*;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

macro_rules! assert_close {
    ($a:expr, $b:expr) => {{
        let (a, b) = ($a, $b);
        assert!(close(a, b), "{} = {a}, expected {b}", stringify!($a));
    }};
}

/// Round figures that make the hand arithmetic short.
fn inputs() -> Inputs {
    Inputs {
        cpu_batched_us: 20.0,
        cpu_unbatched_us: 40.0,
        batch_max: 21.0,
        batch_rate: 1000.0,
        frames_per_batch: None,
        rows_per_echo: 3.0,
        idle_wakes_snippet: 0.0,
        idle_wakes_direct: 0.0,
        worker_cpu_ms_per_request: 1.0,
        object_ms_per_message: 1.0,
        object_ms_per_event: 0.0,
        heartbeat_secs: 0.0,
    }
}

fn workload() -> Workload {
    Workload {
        clients: 100.0,
        messages_per_minute: 1.0,
        idle_share: 0.0,
        tenants: 1.0,
        isolates: 1.0,
        http_per_minute: 0.0,
        fanout: 1.0,
        connects_per_day: 1.0,
        sessions: true,
    }
}

#[test]
fn a_month_is_thirty_days() {
    assert_eq!(MONTH_SECS, 2_592_000.0);
}

#[test]
fn direct_and_forwarding_by_hand() {
    // 100 clients × 1 message a minute × 43,200 minutes = 4,320,000 messages;
    // 100 clients × 1 connect a day × 30 days = 3,000 upgrades.
    let e = estimate(&workload(), &inputs());
    assert_close!(e.derived.client_messages, 4_320_000.0);
    assert_close!(e.derived.connects, 3_000.0);
    // Requests: 3,000 upgrades + 4,320,000 / 20 = 219,000.
    assert_close!(e.direct.do_requests, 219_000.0);
    assert_close!(e.direct.do_ws_messages, 4_320_000.0);
    // Events: 3,000 upgrades, 3,000 closes, 4,320,000 messages.
    assert_close!(e.direct.do_events, 4_326_000.0);
    // 4,320,000 messages × 1 ms = 4,320 s × 0.128 GB = 552.96 GB-s.
    assert_close!(e.direct.do_gb_s, 552.96);
    assert_eq!((e.direct.worker_requests, e.direct.rows_written), (0.0, 0.0));
    // The forwarding Worker adds a Worker request (and 1 ms CPU) per upgrade; the object's
    // side is the same.
    assert_close!(e.forwarding.worker_requests, 3_000.0);
    assert_close!(e.forwarding.worker_cpu_ms, 3_000.0);
    assert_eq!((e.forwarding.do_requests, e.forwarding.do_gb_s), (e.direct.do_requests, e.direct.do_gb_s));
    // $0.15 per million requests: 219,000 → $0.03285; $12.50 per million GB-s → $0.006912.
    let c = e.direct.at_list_price();
    assert_close!(c.do_requests, 0.03285);
    assert_close!(c.do_duration, 0.006912);
    assert_close!(c.total, 0.03285 + 0.006912);
}

#[test]
fn snippet_by_hand_at_two_frames_per_message() {
    let e = estimate(&workload(), &Inputs { frames_per_batch: Some(2.0), ..inputs() });
    let (d, s) = (e.derived, e.snippet);
    // One upstream holding all 100 clients; its owner leaves once a day: 30 hand-overs,
    // each re-opening the 100 streams on the successor.
    assert_close!(d.upstreams, 1.0);
    assert_close!(d.upstream_connects, 30.0);
    assert_close!(d.reopened_streams, 3_000.0);
    // A client sending once a minute acknowledges its replies on its next message.
    assert_close!(d.standalone_acks, 0.0);
    // Up: 4,320,000 messages + 3,000 opens + 3,000 closes + 3,000 re-opens.
    assert_close!(d.frames_up, 4_329_000.0);
    // Down: 4,320,000 replies + 3,000 welcomes.
    assert_close!(d.frames_down, 4_323_000.0);
    // 4,329,000 / 2 = 2,164,500 upstream messages; requests 30 + 2,164,500 / 20.
    assert_close!(s.do_ws_messages, 2_164_500.0);
    assert_close!(s.do_requests, 108_255.0);
    // Events: the messages, and each upstream's accept and close.
    assert_close!(s.do_events, 2_164_560.0);
    // CPU per frame a + β/b through (1, 40 µs) and (21, 20 µs): β = 21, a = 19; at b = 2, 29.5 µs.
    assert_close!(d.cpu_per_frame_us, 29.5);
    assert_close!(d.cpu_per_edge_frame_us, 19.0);
    // Worker requests: 3,000 upgrades + 43,200 cron runs + 30 upstream connects.
    assert_close!(s.worker_requests, 46_230.0);
    // 46,230 requests × 1 ms + 8,652,000 frames × 29.5 µs = 46,230 + 255,234 ms.
    assert_close!(s.worker_cpu_ms, 301_464.0);
    // Rows: `rows_per_echo` (3 in these inputs) per message taken, 2 per session opened
    // or re-opened (its summary written, then deleted or rewritten), 4 per upstream.
    assert_close!(s.rows_written, 4_320_000.0 * 3.0 + 6_000.0 * 2.0 + 30.0 * 4.0);
    // The application's work is the same as direct; per-event time is 0 here.
    assert_close!(s.do_gb_s, 552.96);
}

#[test]
fn frames_per_batch_follows_the_load_up_to_the_measured_figure() {
    // 60 clients sending once a minute, no reconnects: one frame a second up the upstream.
    let w = Workload { clients: 60.0, connects_per_day: 0.0, ..workload() };
    let e = estimate(&w, &inputs());
    assert_close!(e.derived.frames_per_sec_per_upstream, 1.0);
    // Window (21 − 1) / 1000 frames/s = 20 ms: 1 + 1 × 0.02 frames per message.
    assert_close!(e.derived.coalescing_window_ms, 20.0);
    assert_close!(e.derived.frames_per_batch, 1.02);
    // A much faster load is capped at the measured 21.
    let busy = Workload { messages_per_minute: 600_000.0, ..w };
    assert_close!(estimate(&busy, &inputs()).derived.frames_per_batch, 21.0);
    // Spread over 10 isolates, the same load batches less.
    let spread = estimate(&Workload { isolates: 10.0, ..w }, &inputs());
    assert_close!(spread.derived.frames_per_sec_per_upstream, 0.1);
    assert_close!(spread.derived.frames_per_batch, 1.002);
}

#[test]
fn cpu_per_frame_passes_through_both_measured_points() {
    let i = inputs();
    assert_close!(cpu_per_frame_us(&i, 1.0).0, 40.0);
    assert_close!(cpu_per_frame_us(&i, 21.0).0, 20.0);
    // A measurement where batching did not help gives a flat cost.
    let flat = Inputs { cpu_batched_us: 50.0, ..i };
    assert_close!(cpu_per_frame_us(&flat, 5.0).0, 40.0);
}

#[test]
fn acknowledgements_by_hand() {
    // Half a message a second, nothing sent: the first waits 2 s for company, so one
    // ack per 2 s + 2 s = 0.25 a second.
    assert_close!(standalone_ack_rate(0.5, 0.0), 0.25);
    // Fast: one per 32 messages.
    assert_close!(standalone_ack_rate(100.0, 0.0), 100.0 / 32.0);
    // The client's own messages carry acks: 0.1 a second of them leaves 0.15.
    assert_close!(standalone_ack_rate(0.5, 0.1), 0.15);
    assert_close!(standalone_ack_rate(0.0, 0.0), 0.0);
    // A broadcast to 2 clients, one idle: each receives 1 a second (1 message × fanout 2 /
    // 2 clients); the idle one acks 1/(1 + 2) a second, the active one rides its messages.
    let w = Workload { clients: 2.0, idle_share: 0.5, messages_per_minute: 60.0, fanout: 2.0, ..workload() };
    let e = estimate(&w, &inputs());
    assert_close!(e.derived.deliveries, 2.0 * MONTH_SECS);
    assert_close!(e.derived.standalone_acks, MONTH_SECS / 3.0);
}

#[test]
fn an_upstream_only_http_uses_is_replaced_every_owner_lifetime() {
    // One request per 20 s: each upstream serves 20 s, then waits 20 s on average.
    assert_close!(http_owned_connect_rate(0.05), 0.025);
    assert_close!(http_owned_connect_rate(1.0), 1.0 / 21.0);
    assert_close!(http_owned_connect_rate(0.0), 0.0);
    // 60 HTTP requests a minute, no clients: 2,592,000 requests; direct bills each.
    let w = Workload { clients: 0.0, messages_per_minute: 0.0, http_per_minute: 60.0, ..workload() };
    let e = estimate(&w, &Inputs { frames_per_batch: Some(4.0), ..inputs() });
    assert_close!(e.direct.do_requests, 2_592_000.0);
    assert_close!(e.forwarding.worker_requests, 2_592_000.0);
    let u = MONTH_SECS / 21.0;
    assert_close!(e.derived.upstream_connects, u);
    // The snippet: each upstream connect is a request at the object, and the requests
    // travel 4 to a message, 20 messages to a request.
    assert_close!(e.snippet.do_requests, u + 2_592_000.0 / 4.0 / 20.0);
    // Its own Worker request per HTTP request, the cron's, and the backend Worker's per upstream.
    assert_close!(e.snippet.worker_requests, 2_592_000.0 + 43_200.0 + u);
}

#[test]
fn duration_is_capped_at_every_object_awake_all_month() {
    let i = Inputs { object_ms_per_message: 1e9, ..inputs() };
    let e = estimate(&Workload { tenants: 3.0, ..workload() }, &i);
    assert_close!(e.direct.do_gb_s, 3.0 * MONTH_SECS * 0.128);
    assert_close!(e.snippet.do_gb_s, 3.0 * MONTH_SECS * 0.128);
}

#[test]
fn idle_clients_cost_heartbeats_at_the_edge_and_wakes_where_measured() {
    // 10 idle clients, a heartbeat every 60 s: 43,200 each a month, 2 edge frames each.
    let w = Workload { clients: 10.0, idle_share: 1.0, connects_per_day: 0.0, ..workload() };
    let i = Inputs { heartbeat_secs: 60.0, idle_wakes_direct: 2.0, ..inputs() };
    let e = estimate(&w, &i);
    assert_close!(e.derived.heartbeats, 432_000.0);
    // 43,200 cron requests × 1 ms + 432,000 × 2 × 19 µs.
    assert_close!(e.snippet.worker_cpu_ms, 43_200.0 + 16_416.0);
    // Direct: 2 wakes per idle client-hour × 10 clients × 720 hours; the snippet: 0.
    assert_close!(e.direct.do_events, 14_400.0);
    assert_close!(e.snippet.do_events, 0.0);
}

#[test]
fn plain_clients_keep_nothing_and_send_their_heartbeats_to_the_object() {
    // 10 idle plain clients, a heartbeat every 60 s, no reconnects, 2 frames per message.
    let w = Workload { clients: 10.0, idle_share: 1.0, connects_per_day: 0.0, sessions: false, ..workload() };
    let i = Inputs { heartbeat_secs: 60.0, frames_per_batch: Some(2.0), idle_wakes_snippet: 5.0, ..inputs() };
    let e = estimate(&w, &i);
    // 432,000 heartbeats up and their answers down; 216,000 upstream messages.
    assert_close!(e.derived.frames_up, 432_000.0);
    assert_close!(e.derived.frames_down, 432_000.0);
    assert_close!(e.snippet.do_ws_messages, 216_000.0);
    // The measured idle wakes are the session clients'; plain ones wake it by messages.
    assert_close!(e.snippet.do_events, 216_000.0);
    assert_close!(e.derived.snippet_only_events, 216_000.0);
    assert_eq!((e.snippet.rows_written, e.derived.standalone_acks), (0.0, 0.0));
    // 43,200 cron requests × 1 ms + 864,000 frames × 29.5 µs.
    assert_close!(e.snippet.worker_cpu_ms, 43_200.0 + 25_488.0);
    // Plain streams still have their record: 2 rows per connect.
    let churn = estimate(&Workload { connects_per_day: 1.0, ..w }, &i);
    assert_close!(churn.snippet.rows_written, 300.0 * 2.0 + 300.0 * 2.0 + 30.0 * 4.0);
}

#[test]
fn a_broadcast_leaves_each_upstream_in_one_message() {
    // Fanout 40 over 4 isolates: 10 deliveries per upstream message, CPU 19 + 21/10 µs each.
    let w = Workload { fanout: 40.0, isolates: 4.0, ..workload() };
    let e = estimate(&w, &Inputs { frames_per_batch: Some(2.0), ..inputs() });
    assert_close!(e.derived.delivery_frames_per_batch, 10.0);
    assert_close!(e.derived.cpu_per_delivery_us, 21.1);
    // At most the measured 21; at least the upstream's own batch.
    let wide = estimate(&Workload { fanout: 400.0, ..w }, &inputs());
    assert_close!(wide.derived.delivery_frames_per_batch, 21.0);
    let thin = estimate(&Workload { fanout: 2.0, ..w }, &Inputs { frames_per_batch: Some(2.0), ..inputs() });
    assert_close!(thin.derived.delivery_frames_per_batch, 2.0);
}

#[test]
fn prices_at_list_and_as_a_lone_bill() {
    let u = Usage {
        worker_requests: 20e6,
        worker_cpu_ms: 40e6,
        do_requests: 2e6,
        do_ws_messages: 0.0,
        do_events: 0.0,
        do_gb_s: 500_000.0,
        rows_written: 60e6,
    };
    // 20M × $0.30 + 40M × $0.02 + 2M × $0.15 + 0.5M × $12.50 + 60M × $1.00 (per million).
    let list = u.at_list_price();
    assert_close!(list.worker_requests, 6.0);
    assert_close!(list.total, 6.0 + 0.8 + 0.3 + 6.25 + 60.0);
    // Alone: $5, then 10M, 10M ms, 1M, 100k GB-s and 10M rows over the allotments.
    let alone = u.bill_alone();
    assert_close!(alone.total, 5.0 + 3.0 + 0.2 + 0.15 + 1.25 + 10.0);
}

#[test]
fn the_command_line_parses_and_refuses_nonsense() {
    let parse = |args: &[&str]| crate::Opts::try_parse_from([&["test-client", "cost"], args].concat());
    let o = parse(&[
        "--clients",
        "1000",
        "--messages-per-minute",
        "2",
        "--idle-share",
        "0.9",
        "--tenants",
        "10",
        "--isolates",
        "20",
    ])
    .expect("parses");
    let crate::Cmd::Cost(c) = o.command else { panic!("{:?}", o.command) };
    assert_eq!((c.clients, c.tenants, c.isolates, c.http_per_minute, c.fanout), (1000, 10, 20, 0.0, 1.0));
    assert_eq!((c.object_ms_per_message, c.frames_per_batch), (None, None));
    let base = ["--clients", "1", "--messages-per-minute", "1", "--tenants", "1", "--isolates", "1"];
    assert!(parse(&[&base[..], &["--idle-share", "1.5"]].concat()).is_err());
    assert!(parse(&[&base[..], &["--idle-share", "0", "--frames-per-batch", "0.5"]].concat()).is_err());
    assert!(parse(&[
        "--clients",
        "1",
        "--messages-per-minute",
        "1",
        "--idle-share",
        "0",
        "--tenants",
        "0",
        "--isolates",
        "1"
    ])
    .is_err());
    assert!(parse(&[&base[..], &["--idle-share", "0", "--http-per-minute", "-3"]].concat()).is_err());
}

#[test]
fn the_report_names_where_each_figure_came_from() {
    let opts = CostOpts {
        clients: 1000,
        messages_per_minute: 1.0,
        idle_share: 0.9,
        tenants: 50,
        isolates: 20,
        http_per_minute: 0.0,
        fanout: 20.0,
        connects_per_day: 1.0,
        object_ms_per_message: Some(2.0),
        object_ms_per_event: None,
        worker_cpu_ms_per_request: None,
        frames_per_batch: None,
        heartbeat_secs: 15.0,
        no_sessions: false,
        bench_dir: Some("/nonexistent".into()),
    };
    let r = run(&opts);
    assert_eq!(r.designs.len(), 3);
    let src = |name: &str| r.figures.iter().find(|f| f.name.contains(name)).map(|f| f.source.clone()).unwrap();
    assert!(src("batching on").starts_with("built-in default"));
    assert_eq!(src("per message (application work)"), "given: --object-ms-per-message");
    assert!(src("per event").starts_with("built-in assumption"));
    let t = text(&r);
    for needle in ["snippet-proxy", "forwarding Worker", "direct (object only)", "figures:", "prices (read 2026-12-07)"]
    {
        assert!(t.contains(needle), "{needle} missing from\n{t}");
    }
    // Mostly idle and thinly spread: the notes say batching hardly happens and idle
    // clients gain little.
    assert!(r.notes.iter().any(|n| n.starts_with("Batching hardly happens")), "{:?}", r.notes);
    assert!(r.notes.iter().any(|n| n.contains("Aggregation buys little")), "{:?}", r.notes);
    let json = serde_json::to_value(&r).expect("serializes");
    assert_eq!(json["designs"][2]["name"], "snippet-proxy");
}
