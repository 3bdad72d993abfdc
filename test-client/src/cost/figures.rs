//! The figures the cost model takes from the benchmark (`bench-results/bench.json`, and
//! `bench-sessions.json` when present), each with where it came from; a figure the files
//! do not hold falls back to a built-in default, which says so.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

/// One input of the model and its origin.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Figure {
    /// What it is.
    pub name: &'static str,
    /// Its value, in `unit`.
    pub value: f64,
    /// The unit.
    pub unit: &'static str,
    /// Where it came from: a file and the fields read, a command-line flag, or a built-in
    /// default and why.
    pub source: String,
}

impl Figure {
    fn new(name: &'static str, value: f64, unit: &'static str, source: impl Into<String>) -> Figure {
        Figure { name, value, unit, source: source.into() }
    }
}

/// What the benchmark measured that the model uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// Snippet CPU per relayed frame with batching on (µs).
    pub cpu_batched_us: Figure,
    /// The same with batching off, one frame per upstream message (µs).
    pub cpu_unbatched_us: Figure,
    /// Frames per upstream message at the benchmark's saturating load.
    pub batch_max: Figure,
    /// The rate of frames up one upstream at which `batch_max` was measured (frames/s).
    pub batch_rate: Figure,
    /// Storage rows a session writes per echo (one client message, one reply).
    pub rows_per_echo: Figure,
    /// Object wakes per idle client-hour through the snippet (client library).
    pub idle_wakes_snippet: Figure,
    /// Object wakes per idle client-hour, plain sockets straight to the object pinging
    /// its auto-response.
    pub idle_wakes_direct: Figure,
}

/// Built-in defaults: the figures of the committed `bench-results` when this was written
/// (bench.json of the run in BENCHMARKS.md; bench-sessions.json of 2026-12-07).
const DEFAULT_CPU_BATCHED_US: f64 = 24.7;
const DEFAULT_CPU_UNBATCHED_US: f64 = 48.2;
const DEFAULT_BATCH_MAX: f64 = 45.1;
const DEFAULT_BATCH_RATE: f64 = 22_755.0;
const DEFAULT_ROWS_PER_ECHO: f64 = 2.0;
const BUILT_IN: &str =
    "built-in default (the committed bench-results' figure when this was written; file or field missing)";

/// Reads `dir/bench.json` and `dir/bench-sessions.json` (either may be missing), naming
/// them `shown/…` in the sources.
pub fn read(dir: Option<&Path>, shown: &str) -> Measured {
    let load = |name: &str| -> Option<(String, Value)> {
        let text = std::fs::read_to_string(dir?.join(name)).ok()?;
        Some((format!("{shown}/{name}"), serde_json::from_str(&text).ok()?))
    };
    from_json(load("bench.json"), load("bench-sessions.json"))
}

/// The figures from the two documents (path, JSON), each optional.
pub fn from_json(bench: Option<(String, Value)>, sessions: Option<(String, Value)>) -> Measured {
    let raw = |doc: &Option<(String, Value)>| doc.as_ref().map(|(p, v)| (p.clone(), v["raw"].clone()));
    let bench = raw(&bench);
    // A full `./x bench` puts the session rows in bench.json; `--only sessions` in its own file.
    let sessions = raw(&sessions).filter(|(_, r)| r.get("sessionEcho").is_some()).or_else(|| bench.clone());

    let cpu = |which: &str| {
        let (path, raw) = bench.as_ref()?;
        let c = &raw["cpuPerMessage"][which];
        let (secs, relayed) = (c["cpuSecs"].as_f64()?, c["relayed"].as_f64()?);
        (relayed > 0.0).then(|| (secs * 1e6 / relayed, format!("measured: {path} (raw.cpuPerMessage.{which})")))
    };
    let (cb, cb_src) = cpu("batched").unwrap_or((DEFAULT_CPU_BATCHED_US, BUILT_IN.into()));
    let (cu, cu_src) = cpu("unbatched").unwrap_or((DEFAULT_CPU_UNBATCHED_US, BUILT_IN.into()));

    let batch = bench.as_ref().and_then(|(path, raw)| {
        let (frames, per_sec) = median_batch(raw["wide64"]["batchedRounds"].as_array()?)?;
        Some((frames, per_sec, format!("measured: {path} (raw.wide64.batchedRounds, the median round)")))
    });
    let (bmax, brate, b_src) = batch.unwrap_or((DEFAULT_BATCH_MAX, DEFAULT_BATCH_RATE, BUILT_IN.into()));

    let rows = sessions.as_ref().and_then(|(path, raw)| {
        let e = &raw["sessionEcho"];
        let (rows, echoes) = (e["sessionObject"]["sessionRowsWritten"].as_f64()?, e["session"]["ok"].as_f64()?);
        (echoes > 0.0).then(|| (rows / echoes, format!("measured: {path} (raw.sessionEcho)")))
    });
    let (rows, rows_src) = rows.unwrap_or((DEFAULT_ROWS_PER_ECHO, BUILT_IN.into()));

    let idle = |which: &str| {
        let (path, raw) = sessions.as_ref()?;
        let i = &raw["idle"][which];
        let (wakes, clients, ms) = (i["wakes"].as_f64()?, i["clients"].as_f64()?, i["idleMs"].as_f64()?);
        let client_hours = clients * ms / 3_600_000.0;
        (client_hours > 0.0).then(|| (wakes / client_hours, format!("measured: {path} (raw.idle.{which})")))
    };
    // Without a measurement: 0 for both, as designed (the snippet answers the library's
    // heartbeat; the runtime's auto-response answers a direct client's).
    let zero = "built-in default: 0 (heartbeats answered without the object: by the snippet, by the auto-response)";
    let (iws, iws_src) = idle("snippet").unwrap_or((0.0, zero.into()));
    let (iwd, iwd_src) = idle("direct").unwrap_or((0.0, zero.into()));

    Measured {
        cpu_batched_us: Figure::new("snippet CPU per relayed frame, batching on", cb, "µs", cb_src),
        cpu_unbatched_us: Figure::new("snippet CPU per relayed frame, batching off", cu, "µs", cu_src),
        batch_max: Figure::new("frames per upstream message at the benchmark's load", bmax, "frames", b_src.clone()),
        batch_rate: Figure::new("frames per second up one upstream at that load", brate, "frames/s", b_src),
        rows_per_echo: Figure::new("session storage rows written per echo", rows, "rows", rows_src),
        idle_wakes_snippet: Figure::new("object wakes per idle client-hour, snippet", iws, "wakes", iws_src),
        idle_wakes_direct: Figure::new("object wakes per idle client-hour, direct", iwd, "wakes", iwd_src),
    }
}

/// Frames per upstream message and frames per second of the median round by throughput
/// (the round the benchmark reports), from `{report: {sent, elapsedS, throughput}, doMessages}`.
fn median_batch(rounds: &[Value]) -> Option<(f64, f64)> {
    let mut v: Vec<(f64, f64, f64, f64)> = rounds
        .iter()
        .filter_map(|r| {
            let rep = &r["report"];
            Some((
                rep["throughput"].as_f64()?,
                rep["sent"].as_f64()?,
                rep["elapsedS"].as_f64()?,
                r["doMessages"].as_f64()?,
            ))
        })
        .filter(|&(_, sent, secs, msgs)| sent > 0.0 && secs > 0.0 && msgs > 0.0)
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (_, sent, secs, msgs) = *v.get(v.len() / 2)?;
    Some((sent / msgs, sent / secs))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn figures_come_from_the_files_and_say_so() {
        let bench = json!({ "raw": {
            "cpuPerMessage": { "batched": { "cpuSecs": 2.0, "relayed": 100_000 }, "unbatched": { "cpuSecs": 4.0, "relayed": 100_000 } },
            "wide64": { "batchedRounds": [
                { "report": { "throughput": 300.0, "sent": 3000, "elapsedS": 10.0 }, "doMessages": 1000 },
                { "report": { "throughput": 100.0, "sent": 1000, "elapsedS": 10.0 }, "doMessages": 1000 },
                { "report": { "throughput": 200.0, "sent": 2000, "elapsedS": 10.0 }, "doMessages": 100 }
            ] }
        }});
        let sessions = json!({ "raw": {
            "sessionEcho": { "session": { "ok": 100 }, "sessionObject": { "sessionRowsWritten": 250 } },
            "idle": { "snippet": { "clients": 10, "idleMs": 360_000, "wakes": 2 }, "direct": { "clients": 10, "idleMs": 360_000, "wakes": 0 } }
        }});
        let m = from_json(Some(("b.json".into(), bench)), Some(("s.json".into(), sessions)));
        assert_eq!(m.cpu_batched_us.value, 20.0); // 2 s over 100,000 frames
        assert_eq!(m.cpu_unbatched_us.value, 40.0);
        assert!(m.cpu_batched_us.source.starts_with("measured: b.json"));
        // The median round by throughput is the 200/s one: 2,000 frames in 100 messages.
        assert_eq!((m.batch_max.value, m.batch_rate.value), (20.0, 200.0));
        assert_eq!(m.rows_per_echo.value, 2.5);
        assert!(m.rows_per_echo.source.starts_with("measured: s.json"));
        // 2 wakes over 10 clients × 0.1 h = 1 client-hour.
        assert_eq!((m.idle_wakes_snippet.value, m.idle_wakes_direct.value), (2.0, 0.0));
    }

    #[test]
    fn missing_files_fall_back_to_built_in_defaults_and_say_so() {
        let m = from_json(None, None);
        assert_eq!(m.cpu_batched_us.value, DEFAULT_CPU_BATCHED_US);
        assert_eq!(m.rows_per_echo.value, DEFAULT_ROWS_PER_ECHO);
        for f in [&m.cpu_batched_us, &m.batch_max, &m.rows_per_echo, &m.idle_wakes_snippet] {
            assert!(f.source.starts_with("built-in default"), "{f:?}");
        }
        // A bench.json without the session rows leaves those to the defaults.
        let bench = json!({ "raw": { "cpuPerMessage": { "batched": { "cpuSecs": 1.0, "relayed": 1_000_000 } } } });
        let m = from_json(Some(("b.json".into(), bench)), None);
        assert_eq!(m.cpu_batched_us.value, 1.0);
        assert!(m.cpu_unbatched_us.source.starts_with("built-in"));
        assert!(m.rows_per_echo.source.starts_with("built-in"));
    }
}
