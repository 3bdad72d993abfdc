//! `GET /__metrics`: the door of `/__stats`, a document a Prometheus scraper accepts (read
//! by a parser of the text format 0.0.4 written here, strict about what the snippet
//! promises), and figures that follow the traffic.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::json;

use crate::common::{e2e, get, post};

/// This test's own tenant: its upstream and round trips are the test's alone.
const TENANT: &str = "metrics-1";

/// Requests the test sends through the snippet between two scrapes.
const REQUESTS: u64 = 5;

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed document: its samples, and each family's `# TYPE` (every family has had its
/// `# HELP` too, or [`parse`] failed).
#[derive(Debug)]
struct Doc {
    samples: Vec<Sample>,
    types: HashMap<String, String>,
}

impl Doc {
    /// The value of the one sample `name` with `labels` (besides `isolate`).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v)))
            .collect();
        assert_eq!(found.len(), 1, "one {name} {labels:?}: {found:?}");
        found[0].value
    }

    fn isolates(&self) -> HashSet<&str> {
        self.samples.iter().filter_map(|s| s.labels.get("isolate").map(String::as_str)).collect()
    }
}

/// Parses the text format, failing on anything the snippet must not write: a sample
/// outside a family announced by `# HELP` and `# TYPE`, a counter not ending in `_total`,
/// a sample without an `isolate` label, a histogram whose buckets are not cumulative or
/// do not end with `+Inf` equal to its `_count`.
fn parse(text: &str) -> Doc {
    let mut helps = HashSet::new();
    let mut types = HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or_else(|| panic!("HELP without text: {line}"));
            assert!(!help.is_empty() && helps.insert(name.to_owned()), "{line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("TYPE without kind: {line}"));
            assert!(helps.contains(name), "TYPE before HELP: {line}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "a counter ends in _total: {line}");
            }
            assert!(types.insert(name.to_owned(), kind.to_owned()).is_none(), "TYPE twice: {line}");
            continue;
        }
        assert!(!line.starts_with('#'), "an unexpected comment: {line}");
        samples.push(sample(line));
    }
    for s in &samples {
        let family = family_of(&s.name, &types).unwrap_or_else(|| panic!("{} has no # TYPE", s.name));
        assert!(helps.contains(family), "{family} has no # HELP");
        assert!(s.labels.contains_key("isolate"), "{} has no isolate label", s.name);
    }
    let doc = Doc { samples, types };
    check_histograms(&doc);
    doc
}

/// The family a sample belongs to: its own name, or a histogram's for `_bucket`, `_sum`
/// and `_count`.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    let base = ["_bucket", "_sum", "_count"].iter().find_map(|suffix| name.strip_suffix(suffix))?;
    (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
}

/// `name{k="v",…} value`, label values unescaped.
fn sample(line: &str) -> Sample {
    let (name, rest) = line.split_once('{').unwrap_or_else(|| panic!("no labels: {line}"));
    assert!(!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'), "{line}");
    let mut labels = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        assert_eq!((chars.next(), chars.next()), (Some('='), Some('"')), "{line}");
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c @ ('\\' | '"')) => value.push(c),
                    other => panic!("bad escape {other:?}: {line}"),
                },
                Some('"') => break,
                Some(c) => value.push(c),
                None => panic!("unterminated label value: {line}"),
            }
        }
        assert!(labels.insert(key, value).is_none(), "a label twice: {line}");
        match chars.next() {
            Some(',') => continue,
            Some('}') => break,
            other => panic!("expected , or }} but found {other:?}: {line}"),
        }
    }
    let value: String = chars.collect();
    let value = value.strip_prefix(' ').unwrap_or_else(|| panic!("no space before the value: {line}"));
    let value = match value {
        "+Inf" => f64::INFINITY,
        v => v.parse().unwrap_or_else(|e| panic!("value {v:?}: {e}: {line}")),
    };
    Sample { name: name.to_owned(), labels, value }
}

fn check_histograms(doc: &Doc) {
    for (family, _) in doc.types.iter().filter(|(_, kind)| *kind == "histogram") {
        let buckets: Vec<&Sample> = doc.samples.iter().filter(|s| s.name == format!("{family}_bucket")).collect();
        assert!(!buckets.is_empty(), "{family} has no buckets");
        let bounds: Vec<f64> = buckets
            .iter()
            .map(|s| match s.labels["le"].as_str() {
                "+Inf" => f64::INFINITY,
                le => le.parse().unwrap_or_else(|e| panic!("le {le}: {e}")),
            })
            .collect();
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{family}: bounds rise: {bounds:?}");
        assert_eq!(bounds.last(), Some(&f64::INFINITY), "{family} ends with +Inf");
        let counts: Vec<f64> = buckets.iter().map(|s| s.value).collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{family}: cumulative: {counts:?}");
        assert_eq!(counts.last().copied(), Some(doc.value(&format!("{family}_count"), &[])), "{family}: +Inf = _count");
        assert!(doc.value(&format!("{family}_sum"), &[]) >= 0.0);
    }
}

#[test]
fn metrics_are_an_operators_prometheus_text_that_follows_the_traffic() {
    e2e().tenant(TENANT).run(async |stack| {
        let origin = stack.snippet.origin();
        let (metrics, stats) = (format!("{origin}/__metrics"), format!("{origin}/__stats"));

        // The door of /__stats: no token 401, a client's 403, a tenant's admin 403.
        let tenant_admin = stack.mint("x", "default", "admin", 600);
        for (what, token, want) in [
            ("no token", None, 401),
            ("a client's token", Some(&stack.client_token), 403),
            ("a tenant's admin", Some(&tenant_admin), 403),
        ] {
            let (status, _, body) = get(&metrics, token.map(String::as_str)).await;
            assert_eq!(status, want, "{what}: {body}");
            assert_eq!(get(&stats, token.map(String::as_str)).await.0, want, "{what}: as /__stats");
            assert!(!body.contains("snippet_proxy_"), "{what}: no figures in a refusal");
        }

        let scrape = async || {
            let (status, content_type, body) = get(&metrics, Some(&stack.admin_token)).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(content_type, "text/plain; version=0.0.4");
            parse(&body)
        };
        let before = scrape().await;
        let isolate = stack.snippet_stats().await.expect("stats")["isolateId"].as_str().expect("isolateId").to_owned();
        assert_eq!(before.isolates(), HashSet::from([isolate.as_str()]), "every sample names the isolate of /__stats");

        let ping = json!({ "jsonrpc": "2.0", "method": "ping", "id": 1 });
        for _ in 0..REQUESTS {
            let (status, v) = post(&format!("{}/rpc", stack.snippet.http()), Some(&stack.client_token), &ping).await;
            assert_eq!((status, &v["result"]), (200, &json!("pong")), "{v}");
        }
        let after = scrape().await;
        assert_eq!(after.isolates(), HashSet::from([isolate.as_str()]), "the same isolate throughout");

        // This test's requests (and its scrapes and stats reads) were counted.
        let grew = |name: &str| after.value(name, &[]) - before.value(name, &[]);
        assert!(grew("snippet_proxy_requests_total") >= REQUESTS as f64 + 1.0, "requests and a scrape");
        assert!(grew("snippet_proxy_http_proxied_total") >= REQUESTS as f64);
        // Each of them went over this tenant's upstream: one round trip each.
        assert_eq!(grew("snippet_proxy_request_rtt_seconds_count"), REQUESTS as f64);
        assert!(grew("snippet_proxy_request_rtt_seconds_sum") >= 0.0);
        assert_eq!(after.value("snippet_proxy_upstream_connected", &[("tenant", TENANT)]), 1.0);
        assert!(after.value("snippet_proxy_upstreams_open", &[]) >= 1.0);
        assert!(after.value("snippet_proxy_wasm_memory_bytes", &[]) > 0.0);
        let requests = after.value("snippet_proxy_requests_total", &[]);
        eprintln!("{TENANT}: {requests} requests on isolate {isolate}; /__metrics parses");
    });
}
