//! `test-client objects <backend> --tenant a --tenant b …`: the operator's view of many
//! Durable Objects at once. A backend object answers `GET /db/{tenant}/__stats` with its
//! own view (do-server `View`, server-ts `view()`), behind the backend token; there is no
//! fleet-wide endpoint, because each object knows only itself and the platform lists
//! objects by id, not by name. So the fleet is read one request per object, for the
//! tenants the operator names, and printed one line per object.

use anyhow::Result;
use clap::Args;
use serde_json::{json, Value};

use crate::snippet_stats;

/// Options of `test-client objects`.
#[derive(Debug, Clone, Args)]
pub struct ObjectsOpts {
    /// The backend Worker's base URL, e.g. http://127.0.0.1:8788.
    pub url: String,
    /// A tenant (one Durable Object) to read; repeat, or separate with commas.
    #[arg(long = "tenant", value_delimiter = ',', required = true)]
    pub tenants: Vec<String>,
    /// The backend's token (BACKEND_TOKEN): the view is for operators only.
    #[arg(long, env = "BACKEND_TOKEN", hide_env_values = true)]
    pub token: String,
}

/// One object's view: `GET {backend}/db/{tenant}/__stats` with the backend token. Asking
/// wakes a hibernating object, whose counters then start at 0 (`wokeAt`).
pub async fn view(backend: &str, tenant: &str, token: &str) -> Result<Value> {
    let url = format!("{}/db/{tenant}/__stats", backend.trim_end_matches('/'));
    snippet_stats::fetch(&url, Some(token)).await
}

fn n(v: &Value, path: &[&str]) -> u64 {
    path.iter().fold(v, |v, k| &v[*k]).as_u64().unwrap_or(0)
}

/// One line per object: tenant, upstreams, streams, streams on each upstream, messages
/// (batches) in and out, hand-overs, refusals, since when.
pub fn render(views: &[(String, Value)]) -> String {
    let mut out = format!(
        "{:<20} {:>9} {:>7} {:>8} {:>10} {:>10} {:>9} {:>7}  {}\n",
        "tenant", "upstreams", "streams", "detached", "msgs in", "msgs out", "handovers", "refused", "per upstream"
    );
    for (tenant, v) in views {
        let refused: u64 = v["totals"]["refused"].as_object().map_or(0, |r| r.values().filter_map(Value::as_u64).sum());
        let per: Vec<String> = v["sockets"]
            .as_array()
            .map(|a| {
                a.iter().map(|s| format!("{}:{}", s["socket"].as_str().unwrap_or("?"), n(s, &["streams"]))).collect()
            })
            .unwrap_or_default();
        out.push_str(&format!(
            "{tenant:<20} {:>9} {:>7} {:>8} {:>10} {:>10} {:>9} {:>7}  {}\n",
            n(v, &["upstreams"]),
            n(v, &["streams"]),
            n(v, &["detached"]),
            n(v, &["totals", "messagesIn"]),
            n(v, &["totals", "messagesOut"]),
            n(v, &["totals", "handovers"]),
            refused,
            per.join(" "),
        ));
    }
    out
}

/// Runs the command: one request per tenant, in order; a tenant that fails is reported
/// and the others are still read.
pub async fn run(opts: ObjectsOpts, as_json: bool) -> Result<bool> {
    let mut views = Vec::new();
    let mut ok = true;
    for tenant in &opts.tenants {
        match view(&opts.url, tenant, &opts.token).await {
            Ok(v) => views.push((tenant.clone(), v)),
            Err(e) => {
                ok = false;
                views.push((tenant.clone(), json!({ "error": e.to_string() })));
            }
        }
    }
    if as_json {
        let all: serde_json::Map<String, Value> = views.into_iter().collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        print!("{}", render(&views));
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_object_with_the_streams_of_each_upstream() {
        let v = json!({
            "upstreams": 2, "streams": 5, "detached": 0,
            "sockets": [{"socket": "00000000000b", "streams": 3}, {"socket": "00000000000a", "streams": 2}],
            "totals": {"messagesIn": 9, "messagesOut": 4, "handovers": 1, "refused": {"admission": 2, "limit": 1}},
        });
        let text = render(&[("acme".into(), v)]);
        let line = text.lines().nth(1).expect("a line");
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols, ["acme", "2", "5", "0", "9", "4", "1", "3", "00000000000b:3", "00000000000a:2"]);
    }
}
