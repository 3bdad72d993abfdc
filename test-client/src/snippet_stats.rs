//! `test-client stats <url>`: reads a snippet's `/__stats` and prints it readably.

use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use serde_json::Value;

/// Options of `test-client stats`.
#[derive(Debug, Clone, Args)]
pub struct StatsOpts {
    /// The snippet's base URL or its /__stats URL, e.g. http://127.0.0.1:8787.
    pub url: String,
    /// Refresh every this many seconds until Ctrl-C.
    #[arg(short, long)]
    pub watch: Option<f64>,
    /// An operator token (scope admin, tenant *), unless the snippet has STATS_PUBLIC=true.
    #[arg(long, env = "SNIPPET_PROXY_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Fetches a stats document, with a bearer token if given.
pub async fn fetch(url: &str, token: Option<&str>) -> Result<Value> {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.with_context(|| format!("GET {url}"))?;
    let status = res.status();
    let text = res.text().await?;
    anyhow::ensure!(status.is_success(), "GET {url}: HTTP {status}: {text}");
    serde_json::from_str(&text).with_context(|| format!("GET {url}: not JSON: {text}"))
}

/// One `name  value` line per field, in the document's order.
pub fn render(v: &Value) -> String {
    let Some(obj) = v.as_object() else {
        return v.to_string();
    };
    let width = obj.keys().map(String::len).max().unwrap_or(0);
    obj.iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!("{k:width$}  {v}\n")
        })
        .collect()
}

/// Runs the command.
pub async fn run(opts: StatsOpts, json: bool) -> Result<()> {
    let url = if opts.url.trim_end_matches('/').ends_with("/__stats") {
        opts.url.clone()
    } else {
        format!("{}/__stats", opts.url.trim_end_matches('/'))
    };
    loop {
        let v = fetch(&url, opts.token.as_deref()).await?;
        if json {
            println!("{v}");
        } else {
            if opts.watch.is_some() {
                print!("\x1b[2J\x1b[H{url}\n\n");
            }
            print!("{}", render(&v));
        }
        let Some(every) = opts.watch else {
            return Ok(());
        };
        tokio::time::sleep(Duration::from_secs_f64(every.max(0.1))).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_aligned_fields_in_order() {
        let v: serde_json::Value = serde_json::from_str(r#"{"isolateId":"x","errors":0}"#).expect("json");
        assert_eq!(super::render(&v), "isolateId  x\nerrors     0\n");
    }
}
