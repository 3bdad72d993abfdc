//! `test-client bench --only profile`: where a multiplexer's CPU goes per relayed
//! message. Runs the data path's loads (64 clients × 20 in flight on one tenant, then 50
//! tenants × 2 clients; 64-byte raw echoes) against the snippet and against the JS
//! multiplexer (`test-client/jsmux`), each
//! while its isolate is sampled by V8's CPU profiler through the DevTools protocol its
//! `wrangler dev` serves on the inspector port (`Profiler.enable/start/stop`). Prints
//! every bucket's self time (what ran in it, not what it called), per relayed message,
//! and the top functions.
//!
//! The profiler's own sampling costs CPU, so the figures here are shares of what the
//! isolate's thread did: the unprofiled CPU per message is `bench --only datapath`'s.
//! Time the profiler attributes to `(program)` is the runtime's native work outside any
//! JavaScript or wasm frame (socket reads and writes, event dispatch, promise job
//! queueing); `(idle)` is the thread waiting, and is left out of every share.

use std::collections::HashMap;

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

use crate::bench::{row, BenchOpts, Row};
use crate::inspector::Inspector;
use crate::load::{self, LoadOpts, Method};
use crate::stack::{Stack, Worker};

/// Clients × messages in flight each: the data path's one-tenant load.
const CLIENTS: usize = 64;
const IN_FLIGHT: usize = 20;
/// Its many-tenant load: tenants busy at once, clients on each.
const TENANTS: usize = 50;
const CLIENTS_PER_TENANT: usize = 2;
/// The profiler's sampling interval (µs): fine enough for thousands of samples in a
/// few seconds, coarse enough that sampling stays a small part of the thread's time.
const SAMPLING_US: u64 = 200;
/// Functions listed by self time, per side.
const TOP: usize = 25;
/// Where a function's self time goes, by what it is.
fn bucket(name: &str, url: &str) -> &'static str {
    match name {
        "(idle)" => return "idle",
        "(program)" => return "runtime (native: sockets, events, promise jobs)",
        "(garbage collector)" => return "garbage collector",
        "(root)" => return "runtime (native: sockets, events, promise jobs)",
        _ => {}
    }
    if url.starts_with("wasm://") || name.starts_with("$") || name.contains("wasm-function") {
        return wasm_bucket(name);
    }
    if url.is_empty() {
        // A builtin: V8's or the runtime's own API, called from JS glue.
        return match name {
            "send" | "close" | "accept" => "runtime API: WebSocket send/close",
            "withResolvers" | "then" | "resolve" | "Promise" => "runtime API: promises (wake promises)",
            "now" | "random" => "runtime API: clock",
            "addEventListener" | "removeEventListener" | "dispatchEvent" => "runtime API: listeners",
            _ => "runtime API: other builtins",
        };
    }
    if name.starts_with("__wbg_") || name.starts_with("__wbindgen") || name.contains("getObject") {
        return "JS↔wasm glue (wasm-bindgen)";
    }
    "JavaScript (Worker code)"
}

/// The bucket of a wasm-bindgen import (`__wbg_<js name>_<hash>`), from its key: the JS
/// side of a crossing, with what it calls.
fn glue_bucket(excerpt: &str) -> Option<&'static str> {
    let key = excerpt.split_whitespace().next()?.strip_prefix("__wbg_")?;
    let js = key.rsplit_once('_').map_or(key, |(name, _)| name);
    Some(match js {
        "send" | "close" | "accept" => "JS glue → WebSocket send/close",
        "withResolvers" | "then" | "resolve" | "promise" | "catch" => "JS glue → promises (wake promises)",
        "now" => "JS glue → clock (Date.now)",
        "new_from_slice"
        | "new"
        | "new_with_byte_offset_and_length"
        | "prototypesetcall"
        | "set"
        | "length"
        | "byteLength"
        | "buffer" => "JS glue → copies across the boundary (Uint8Array)",
        "data" | "instanceof_ArrayBuffer" | "instanceof_Uint8Array" | "__wbindgen_is_string" | "code" | "reason" => {
            "JS glue → reading events"
        }
        "setTimeout" | "clearTimeout" => "JS glue → timers",
        _ => "JS glue → other imports",
    })
}

/// A wasm function's bucket, from its (demangled) name.
fn wasm_bucket(name: &str) -> &'static str {
    let n = name;
    if n.contains("dlmalloc") || n.contains("alloc::") && (n.contains("alloc") || n.contains("dealloc")) {
        return "wasm: allocation";
    }
    if n.contains("memcpy") || n.contains("memmove") || n.contains("memset") || n.contains("copy_from_slice") {
        return "wasm: copies (memcpy)";
    }
    if n.contains("hash") || n.contains("Hash") || n.contains("sip") {
        return "wasm: hashing";
    }
    if n.contains("protocol") {
        return "wasm: frame encoding/decoding";
    }
    if n.contains("mux_core") {
        return "wasm: core (decisions)";
    }
    if n.contains("wasm_bindgen") || n.contains("js_sys") || n.contains("web_sys") || n.contains("__wbindgen") {
        return "wasm: wasm-bindgen glue (crossings)";
    }
    if n.contains("executor") {
        return "wasm: executor (task polls)";
    }
    "wasm: snippet glue and other"
}

/// Self time per function and per bucket, from a `Profiler.stop` result (µs).
#[derive(Default)]
struct Breakdown {
    by_fn: HashMap<(String, &'static str), f64>,
    by_bucket: HashMap<&'static str, f64>,
    /// Everything but `(idle)`.
    busy_us: f64,
    samples: usize,
}

/// The source of every script an anonymous function of `profile` lives in, by script id
/// (the Debugger domain is enabled only after the profile is taken).
async fn sources(cdp: &mut Inspector, profile: &Value) -> Result<HashMap<String, String>> {
    let mut ids: Vec<String> = profile["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| &n["callFrame"])
        .filter(|f| f["functionName"].as_str() == Some("") && f["url"].as_str().is_some_and(|u| u.ends_with(".js")))
        .filter_map(|f| f["scriptId"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids.dedup();
    cdp.call("Debugger.enable", json!({})).await?;
    let mut out = HashMap::new();
    for id in ids {
        let src = cdp.call("Debugger.getScriptSource", json!({ "scriptId": id })).await?;
        out.insert(id, src["scriptSource"].as_str().unwrap_or("").to_owned());
    }
    cdp.call("Debugger.disable", json!({})).await?;
    Ok(out)
}

/// What names an anonymous function at (`line`, `column`) of `src`: the property it is
/// the value of (the glue's imports are `__wbg_…: function(…) {…}` entries of an object
/// literal), and the start of its body.
fn excerpt(src: &str, line: u64, column: u64) -> String {
    let mut lines = src.lines().skip(line as usize);
    let Some(text) = lines.next() else { return String::new() };
    let at = text.char_indices().nth(column as usize).map_or(text.len(), |(i, _)| i);
    let (before, after) = text.split_at(at);
    let key = before.rsplit_once(':').map_or("", |(k, _)| k);
    let key = key.trim_end().rsplit(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$')).next().unwrap_or("");
    let body: String = after.chars().chain(lines.next().unwrap_or("").chars()).take(70).collect();
    format!("{key} {}", body.split_whitespace().collect::<Vec<_>>().join(" "))
}

impl Breakdown {
    fn of(profile: &Value, sources: &HashMap<String, String>) -> Result<Breakdown> {
        let nodes = profile["nodes"].as_array().context("profile without nodes")?;
        let names: HashMap<u64, (String, &'static str)> = nodes
            .iter()
            .filter_map(|n| {
                let f = &n["callFrame"];
                let (name, url) = (f["functionName"].as_str().unwrap_or(""), f["url"].as_str().unwrap_or(""));
                let mut bucket = bucket(name, url);
                // The glue's imports are anonymous: named by where they start and the
                // property they are the value of.
                let name = if name.is_empty() {
                    let (line, col) = (f["lineNumber"].as_u64().unwrap_or(0), f["columnNumber"].as_u64().unwrap_or(0));
                    let src = f["scriptId"].as_str().and_then(|id| sources.get(id));
                    let at = src.map(|s| excerpt(s, line, col)).unwrap_or_default();
                    bucket = glue_bucket(&at).unwrap_or(bucket);
                    format!("(anonymous) {url}:{line}:{col} {at}")
                } else {
                    name.to_owned()
                };
                Some((n["id"].as_u64()?, (name, bucket)))
            })
            .collect();
        let samples = profile["samples"].as_array().context("profile without samples")?;
        let deltas = profile["timeDeltas"].as_array().context("profile without timeDeltas")?;
        let mut b = Breakdown { samples: samples.len(), ..Default::default() };
        // A sample's time is the gap to the next one (the last one's is unknown: skipped).
        for (s, next) in samples.iter().zip(deltas.iter().skip(1)) {
            let (Some(id), Some(us)) = (s.as_u64(), next.as_f64()) else { continue };
            let Some((name, bucket)) = names.get(&id) else { continue };
            *b.by_bucket.entry(bucket).or_default() += us;
            if *bucket != "idle" {
                b.busy_us += us;
                *b.by_fn.entry((name.clone(), bucket)).or_default() += us;
            }
        }
        Ok(b)
    }

    fn sorted<K: Clone>(m: &HashMap<K, f64>) -> Vec<(K, f64)> {
        let mut v: Vec<(K, f64)> = m.iter().map(|(k, us)| (k.clone(), *us)).collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v
    }
}

/// One side's profiled run: its breakdown and the messages it relayed (up and down).
/// The raw profile is saved as `<out>/<file>.cpuprofile` (DevTools' Performance panel
/// opens it).
async fn profiled(
    worker: &Worker,
    urls: &[String],
    token: Option<String>,
    opts: &BenchOpts,
    file: &str,
) -> Result<(Breakdown, u64)> {
    let secs = opts.seconds;
    let clients = if urls.len() == 1 { CLIENTS } else { CLIENTS_PER_TENANT };
    let load = |duration: f64| {
        let mut set = tokio::task::JoinSet::new();
        for url in urls {
            let o = LoadOpts {
                clients,
                in_flight: IN_FLIGHT,
                duration: Some(duration),
                method: Method::Raw,
                payload: 64,
                token: token.clone(),
                ..LoadOpts::new(url.clone())
            };
            set.spawn(load::run(o, false));
        }
        async move {
            let mut ok = 0;
            while let Some(r) = set.join_next().await {
                let r = r??;
                anyhow::ensure!(r.passed, "a profiled run had errors, so its profile means nothing:\n{}", r.to_text());
                ok += r.ok;
            }
            anyhow::Ok(ok)
        }
    };
    // Unmeasured first: JIT tier-up, the upstreams opened.
    load(secs.min(2.0)).await?;
    let mut cdp = Inspector::attach(worker).await?;
    cdp.call("Profiler.enable", json!({})).await?;
    cdp.call("Profiler.setSamplingInterval", json!({ "interval": SAMPLING_US })).await?;
    cdp.call("Profiler.start", json!({})).await?;
    let ok = load(secs).await;
    let stopped = cdp.call("Profiler.stop", json!({})).await?;
    cdp.call("Profiler.disable", json!({})).await?;
    let ok = ok?;
    let sources = sources(&mut cdp, &stopped["profile"]).await?;
    std::fs::create_dir_all(&opts.out)?;
    std::fs::write(opts.out.join(format!("{file}.cpuprofile")), stopped["profile"].to_string())?;
    Ok((Breakdown::of(&stopped["profile"], &sources)?, 2 * ok))
}

fn print(side: &str, b: &Breakdown, relayed: u64) {
    let per = |us: f64| us / relayed.max(1) as f64;
    println!(
        "\n== {side}: {} samples, {relayed} messages relayed; busy {:.2} µs/msg (profiled)",
        b.samples,
        per(b.busy_us)
    );
    println!("{:>8} {:>7}  bucket (self time)", "µs/msg", "share");
    for (bucket, us) in Breakdown::sorted(&b.by_bucket).into_iter().filter(|(k, _)| *k != "idle") {
        println!("{:>8.3} {:>6.1}%  {bucket}", per(us), 100.0 * us / b.busy_us.max(1e-9));
    }
    println!("{:>8} {:>7}  top functions by self time", "µs/msg", "share");
    for ((name, bucket), us) in Breakdown::sorted(&b.by_fn).into_iter().take(TOP) {
        let name: String = name.chars().take(140).collect();
        println!("{:>8.3} {:>6.1}%  {name}  [{bucket}]", per(us), 100.0 * us / b.busy_us.max(1e-9));
    }
}

fn json_of(b: &Breakdown, relayed: u64) -> Value {
    let per = |us: f64| us / relayed.max(1) as f64;
    let buckets: Map<String, Value> =
        Breakdown::sorted(&b.by_bucket).into_iter().map(|(k, us)| (k.to_owned(), json!(per(us)))).collect();
    let top: Vec<Value> = Breakdown::sorted(&b.by_fn)
        .into_iter()
        .take(TOP)
        .map(|((name, bucket), us)| json!({ "function": name, "bucket": bucket, "usPerMsg": per(us) }))
        .collect();
    json!({ "samples": b.samples, "relayed": relayed, "busyUsPerMsg": per(b.busy_us), "bucketsUsPerMsg": buckets, "top": top })
}

pub(crate) async fn run(
    stack: &Stack,
    rows: &mut Vec<Row>,
    raw: &mut Map<String, Value>,
    opts: &BenchOpts,
) -> Result<()> {
    eprintln!("bench: profile: starting the JS multiplexer (test-client/jsmux) and its echo objects");
    // (The echo objects run for as long as `_echo` lives.)
    let (_echo, jsmux) = crate::bench_datapath::js_multiplexer(stack)?;
    let urls = |port: u16, many: bool| -> Vec<String> {
        if many {
            (0..TENANTS).map(|t| format!("ws://127.0.0.1:{port}/db/profile-{t}/ws/echo")).collect()
        } else {
            vec![format!("ws://127.0.0.1:{port}/ws/echo")]
        }
    };
    let mut section = Map::new();
    for many in [false, true] {
        let what = if many {
            format!("{TENANTS} tenants × {CLIENTS_PER_TENANT} clients × {IN_FLIGHT} in flight")
        } else {
            format!("{CLIENTS} clients × {IN_FLIGHT} in flight, one tenant")
        };
        eprintln!("bench: profile: {what}, {} s each, sampled every {SAMPLING_US} µs", opts.seconds);
        let key = if many { "many" } else { "one" };
        let token = Some(stack.client_token.clone());
        let (s, s_n) =
            profiled(&stack.snippet, &urls(stack.snippet.port, many), token, opts, &format!("profile-snippet-{key}"))
                .await?;
        let (j, j_n) = profiled(&jsmux, &urls(jsmux.port, many), None, opts, &format!("profile-jsmux-{key}")).await?;
        println!("\n##### {what}");
        print("snippet", &s, s_n);
        print("JS multiplexer", &j, j_n);
        let (sb, jb) = (s.busy_us / s_n.max(1) as f64, j.busy_us / j_n.max(1) as f64);
        rows.push(row(
            &format!("isolate thread busy per relayed message while profiled (self time, idle excluded), {what}: snippet vs JS multiplexer"),
            format!("{sb:.2} µs"),
            format!("{jb:.2} µs"),
            Some(sb / jb.max(1e-9)),
            "reported",
            None,
        ));
        section.insert(key.into(), json!({ "what": what, "snippet": json_of(&s, s_n), "js": json_of(&j, j_n) }));
    }
    raw.insert("profile".into(), Value::Object(section));
    Ok(())
}
