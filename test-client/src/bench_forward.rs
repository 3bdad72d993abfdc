//! The snippet against a forwarding Worker — the approach a multiplexer is compared
//! against: a Worker in the backends' account that sends each HTTP request, its token
//! checked, to the tenant's object through a Durable Object binding
//! (`test-client/forwarder`). Same run, same backend, alternating rounds: HTTP p50/p99,
//! and what each costs the object in billable units.

use anyhow::Result;
use serde_json::{json, Map, Value};

use crate::bench::{do_messages_during, median_by, ms_row, row, run_load, Row};
use crate::load::{LoadOpts, Method};
use crate::stack::{Stack, Worker};

/// Rounds of each side (alternating); the median round is reported.
const ROUNDS: usize = 3;
/// HTTP requests per round of the billing measurement.
const BILLED_REQUESTS: u64 = 2_000;

pub(crate) async fn run(
    stack: &Stack,
    rows: &mut Vec<Row>,
    raw: &mut Map<String, Value>,
    round_trips: u64,
) -> Result<()> {
    let say = |s: &str| eprintln!("bench: {s}");
    say("HTTP through the snippet vs a forwarding Worker (a Durable Object binding per request)");
    let vars = vec![("AUTH_SECRET".to_owned(), stack.auth_secret.clone())];
    let fwd: Worker = tokio::task::block_in_place(|| stack.bound_worker("test-client/forwarder", "BACKEND", &vars))?;
    let token = Some(stack.client_token.clone());
    let one = |url: String| LoadOpts {
        clients: 1,
        messages: (round_trips / 2).max(50),
        method: Method::Ping,
        token: token.clone(),
        ..LoadOpts::new(url)
    };
    let (s_url, f_url) = (format!("{}/db/fwd/rpc", stack.snippet.origin()), format!("{}/db/fwd/rpc", fwd.origin()));
    // Both warm: the snippet's upstream open, the forwarder's isolate and the object awake.
    for url in [&s_url, &f_url] {
        run_load(LoadOpts { messages: 100, ..one(url.clone()) }).await?;
    }
    let (mut s_rounds, mut f_rounds) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        s_rounds.push(run_load(one(s_url.clone())).await?);
        f_rounds.push(run_load(one(f_url.clone())).await?);
    }
    let s = median_by(&s_rounds, |r| r.latency.p50_ms);
    let f = median_by(&f_rounds, |r| r.latency.p50_ms);
    rows.push(ms_row(
        "HTTP POST /rpc p50: snippet vs a forwarding Worker",
        s.latency.p50_ms,
        f.latency.p50_ms,
        "",
        None,
    ));
    rows.push(ms_row(
        "HTTP POST /rpc p99: snippet vs a forwarding Worker",
        s.latency.p99_ms,
        f.latency.p99_ms,
        "",
        None,
    ));

    say("billable units per 10,000 HTTP requests: snippet vs forwarding Worker");
    let wide = |url: String| LoadOpts {
        clients: 8,
        in_flight: 4,
        messages: BILLED_REQUESTS / 8,
        method: Method::Ping,
        token: token.clone(),
        ..LoadOpts::new(url)
    };
    let (sb, s_msgs, s_http) = do_messages_during(
        stack,
        "fwd-billed-s",
        run_load(wide(format!("{}/db/fwd-billed-s/rpc", stack.snippet.origin()))),
    )
    .await?;
    let (fb, f_msgs, f_http) =
        do_messages_during(stack, "fwd-billed-f", run_load(wide(format!("{}/db/fwd-billed-f/rpc", fwd.origin()))))
            .await?;
    // Incoming WebSocket messages bill 20:1 against requests.
    let units = |msgs: u64, http: u64, sent: u64| (msgs as f64 / 20.0 + http as f64) * 10_000.0 / sent.max(1) as f64;
    let (u_s, u_f) = (units(s_msgs, s_http, sb.sent), units(f_msgs, f_http, fb.sent));
    rows.push(row(
        "DO billable units per 10,000 HTTP requests: snippet vs a forwarding Worker",
        format!("{u_s:.1}"),
        format!("{u_f:.1}"),
        Some(u_s / u_f.max(f64::MIN_POSITIVE)),
        "",
        None,
    ));
    raw.insert(
        "forwardingWorker".into(),
        json!({
            "latency": { "snippetRounds": s_rounds, "forwarderRounds": f_rounds },
            "billing": {
                "snippet": { "requests": sb.sent, "doMessages": s_msgs, "doHttp": s_http },
                "forwarder": { "requests": fb.sent, "doMessages": f_msgs, "doHttp": f_http },
            },
        }),
    );
    Ok(())
}
