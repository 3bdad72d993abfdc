//! The report in words: the notes (where snippet-proxy costs more, where it saves, the
//! caveats of the workload) and the text layout.

use std::fmt::Write as _;

use super::model::{Costs, Estimate, Inputs, Usage, Workload};
use super::{prices, CostReport, Design};

/// What the figures say in words: where the snippet costs more than the forwarding
/// Worker, where it saves, and the caveats that apply to this workload.
pub(super) fn notes(w: &Workload, i: &Inputs, e: &Estimate) -> Vec<String> {
    let (f, s) = (e.forwarding.at_list_price(), e.snippet.at_list_price());
    let d = &e.derived;
    let lines = [
        ("Worker requests", f.worker_requests, s.worker_requests),
        ("Worker CPU", f.worker_cpu, s.worker_cpu),
        ("Durable Object requests", f.do_requests, s.do_requests),
        ("Durable Object duration", f.do_duration, s.do_duration),
        ("storage rows written", f.rows_written, s.rows_written),
    ];
    let mut notes = vec![
        "\"direct\" is the objects' bill alone, as Cloudflare's own Durable Objects examples count it: clients reach an object only through a Worker, whose requests the forwarding column adds. Compare snippet-proxy with that one.".to_owned(),
    ];
    let list = |more: bool| {
        lines
            .iter()
            .filter(|(_, f, s)| if more { s - f >= 0.005 } else { f - s >= 0.005 })
            .map(|(name, f, s)| format!("{name} ({} against {})", usd(*s), usd(*f)))
            .collect::<Vec<_>>()
    };
    let (more, less) = (list(true), list(false));
    if !more.is_empty() {
        notes.push(format!("snippet-proxy costs more than a forwarding Worker in: {}.", more.join("; ")));
    }
    if !less.is_empty() {
        notes.push(format!("snippet-proxy costs less in: {}.", less.join("; ")));
    }
    let diff = s.total - f.total;
    notes.push(if diff.abs() < 0.005 {
        "In total the two cost the same here.".to_owned()
    } else if diff < 0.0 {
        format!(
            "In total snippet-proxy saves {} a month ({:.0} %) against a forwarding Worker.",
            usd(-diff),
            -diff / f.total * 100.0
        )
    } else {
        let times = if f.total >= 1.0 { format!(" ({:.1}×)", s.total / f.total) } else { String::new() };
        format!("In total snippet-proxy costs {} a month more than a forwarding Worker{times}.", usd(diff))
    });
    if w.sessions && s.rows_written >= 0.5 * s.total && s.rows_written >= 0.01 {
        notes.push(format!(
            "Session storage is {:.1} % of the snippet's cost: each message a session client sends is one journal record (its replies and broadcasts inside, each payload once), written, then deleted once acknowledged ({:.2} rows per message, measured per echo). A row written costs $1.00 a million, an incoming WebSocket message $0.0075 a million. --no-sessions shows plain clients, which do not resume after a reconnect.",
            s.rows_written / s.total * 100.0,
            i.rows_per_echo
        ));
    }
    if d.frames_per_batch < 1.5 && (d.client_messages + d.http_requests) > 0.0 {
        notes.push(format!(
            "Batching hardly happens at this load: {:.2} frames per second up each of {} upstreams gives {:.2} frames per upstream message (the benchmark's {:.0} were at {:.0} frames/s). Incoming messages then cost the object what direct clients' do: only an upstream carrying hundreds of frames a second batches much.",
            d.frames_per_sec_per_upstream, d.upstreams, d.frames_per_batch, i.batch_max, i.batch_rate
        ));
    }
    if w.idle_share >= 0.5 {
        notes.push(format!(
            "{:.0} % of the clients are idle. Straight to a hibernating object with the auto-response heartbeat they cost it nothing ({} wakes per idle client-hour); {} Aggregation buys little for idle clients.",
            w.idle_share * 100.0,
            i.idle_wakes_direct,
            if w.sessions {
                format!("through the snippet, session clients cost it nothing either ({} wakes), but each heartbeat costs Worker CPU at the edge ({} heartbeats a month).", i.idle_wakes_snippet, qty(d.heartbeats))
            } else {
                format!("through the snippet, plain clients' heartbeats reach the object as messages ({} a month).", qty(d.heartbeats))
            }
        ));
    }
    if w.fanout > 1.0 {
        notes.push(format!(
            "Each client message fans out to {} deliveries. Outgoing messages are free for the object, but through the snippet every delivery is a frame relayed in Worker CPU ({:.1} µs each here, {:.1} to an upstream message){}.",
            w.fanout,
            d.cpu_per_delivery_us,
            d.delivery_frames_per_batch,
            if w.sessions { ", and each delivery to a session client is kept in storage until acknowledged" } else { "" }
        ));
    }
    let all_month = w.tenants * prices::MONTH_SECS * prices::DO_MEMORY_GB;
    if e.direct.do_gb_s >= all_month * 0.999 || e.snippet.do_gb_s >= all_month * 0.999 {
        notes.push(
            "The objects' duration is capped at every object awake all month: at this rate they never hibernate, and one object may be past what it can serve (see --object-ms-per-message).".to_owned(),
        );
    }
    if d.snippet_only_events > 0.0 {
        notes.push(format!(
            "The snippet invokes the objects {} times a month for its own traffic (upstream accepts and closes, stand-alone session acks, streams re-opened after a hand-over, plain clients' heartbeats), which direct clients would not cause; their duration is in the snippet's column.",
            qty(d.snippet_only_events)
        ));
    }
    notes
}

fn usd(v: f64) -> String {
    if v >= 0.005 || v == 0.0 {
        format!("${v:.2}")
    } else {
        "<$0.01".into()
    }
}

/// A count with a k/M/G suffix.
fn qty(v: f64) -> String {
    match v.abs() {
        x if x >= 1e9 => format!("{:.2}G", v / 1e9),
        x if x >= 1e6 => format!("{:.2}M", v / 1e6),
        x if x >= 1e4 => format!("{:.1}k", v / 1e3),
        x if x >= 100.0 || v.fract() == 0.0 => format!("{v:.0}"),
        _ => format!("{v:.2}"),
    }
}

/// The report as text.
pub fn text(r: &CostReport) -> String {
    let w = &r.workload;
    let mut s = format!(
        "{} clients ({:.0} % idle; each active one sends {}/min, fanout {}), {} tenants × {} isolates, {} HTTP requests/min; {} connects per client per day. A {:.0}-day month, Workers Paid prices read {}.\n\n",
        w.clients, w.idle_share * 100.0, w.messages_per_minute, w.fanout, w.tenants, w.isolates, w.http_per_minute,
        w.connects_per_day, r.month_days, r.prices_read_on
    );
    let _ = write!(s, "{:<30}", "per month");
    for d in &r.designs {
        let _ = write!(s, "{:>24}", d.name);
    }
    s.push('\n');
    type Line = (&'static str, fn(&Usage) -> f64, fn(&Costs) -> Option<f64>);
    let lines: [Line; 7] = [
        ("Worker requests", |u| u.worker_requests, |c| Some(c.worker_requests)),
        ("Worker CPU (ms)", |u| u.worker_cpu_ms, |c| Some(c.worker_cpu)),
        ("DO requests (billed)", |u| u.do_requests, |c| Some(c.do_requests)),
        ("  incoming WS messages", |u| u.do_ws_messages, |_| None),
        ("  object invocations", |u| u.do_events, |_| None),
        ("DO duration (GB-s)", |u| u.do_gb_s, |c| Some(c.do_duration)),
        ("storage rows written", |u| u.rows_written, |c| Some(c.rows_written)),
    ];
    for (name, used, cost) in lines {
        let _ = write!(s, "{name:<30}");
        for d in &r.designs {
            let cell = match cost(&d.list_price) {
                Some(c) => format!("{} {:>7}", qty(used(&d.usage)), usd(c)),
                None => qty(used(&d.usage)),
            };
            let _ = write!(s, "{cell:>24}");
        }
        s.push('\n');
    }
    for (name, total) in [
        ("at list price", (|d: &Design| d.list_price.total) as fn(&Design) -> f64),
        ("bill if alone ($5 min., incl.)", |d: &Design| d.bill_alone.total),
    ] {
        let _ = write!(s, "{name:<30}");
        for d in &r.designs {
            let _ = write!(s, "{:>24}", usd(total(d)));
        }
        s.push('\n');
    }
    let d = &r.derived;
    let _ = writeln!(
        s,
        "\nsnippet-proxy{}: {} upstreams ({:.2} clients each), {} upstream connects, {:.3} frames/s up each, {:.2} frames per upstream message (coalescing window {:.2} ms), {:.1} µs CPU per relayed frame ({:.1} per delivery, {:.1} to a message), {} stand-alone acks, {} heartbeats{}.",
        if w.sessions { " with sessions" } else { ", plain clients" },
        qty(d.upstreams), d.clients_per_upstream, qty(d.upstream_connects), d.frames_per_sec_per_upstream,
        d.frames_per_batch, d.coalescing_window_ms, d.cpu_per_frame_us, d.cpu_per_delivery_us,
        d.delivery_frames_per_batch, qty(d.standalone_acks), qty(d.heartbeats),
        if w.sessions { " answered at the edge" } else { " relayed to the objects" }
    );
    s.push_str("\nfigures:\n");
    for f in &r.figures {
        let _ = writeln!(s, "  {:<52} {:>9} {:<7} {}", f.name, format!("{:.2}", f.value), f.unit, f.source);
    }
    let _ = writeln!(s, "\nprices (read {}):", r.prices_read_on);
    for p in &r.prices {
        let _ = writeln!(
            s,
            "  {:<60} ${:.2} per million after {} included  {}",
            p.item,
            p.usd_per_million,
            qty(p.included),
            p.source
        );
    }
    s.push('\n');
    for n in &r.notes {
        let _ = writeln!(s, "- {n}");
    }
    s
}
