//! test-client: load generation, correctness checks, `/__stats` reading and the
//! benchmark for snippet-proxy. `Opts` and [`run`] are public so tests drive the real CLI
//! in-process; [`stack`] is the end-to-end harness that starts the real workerd.
#![deny(missing_docs)]

pub mod bench;
mod bench_coldstart;
mod bench_datapath;
mod bench_forward;
mod bench_idp;
mod bench_pool;
mod bench_profile;
mod bench_sessions;
pub mod cost;
pub mod idle;
pub mod inspector;
pub mod jose;
pub mod keyserver;
pub mod load;
pub mod objects;
mod session;
pub mod snippet_stats;
pub mod soak;
pub mod stack;
pub mod stats;
pub mod token;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// snippet-proxy's test client.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Opts {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Generate load and verify every reply; exits non-zero on any loss or mismatch.
    Load(load::LoadOpts),
    /// Read a snippet's /__stats.
    Stats(snippet_stats::StatsOpts),
    /// Read the operator's view of backend objects, one request per tenant
    /// (GET /db/{tenant}/__stats with the backend token).
    Objects(objects::ObjectsOpts),
    /// Start the stack and measure the snippet against direct access (see BENCHMARKS.md).
    Bench(bench::BenchOpts),
    /// Churn clients across many tenants through a small pool, checking every reply,
    /// counts at rest and memory against a pass-through Worker (see BENCHMARKS.md).
    Soak(soak::SoakOpts),
    /// What a workload costs per month on Cloudflare's published prices: clients straight
    /// to the Durable Object, a forwarding Worker, and snippet-proxy (see COST.md).
    Cost(cost::CostOpts),
    /// Mint a JWT for the snippet (HS256, or RS256/PS256/ES256/EdDSA with --alg and --key);
    /// prints the token alone on the last line of stdout.
    Token(token::TokenOpts),
}

/// Runs the CLI.
pub async fn run(opts: Opts) -> Result<ExitCode> {
    match opts.command {
        Cmd::Load(load) => {
            let progress = !opts.json && std::io::stdout().is_terminal();
            let report = load::run(load, progress).await?;
            if opts.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            Ok(if report.passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Cmd::Bench(b) => {
            let report = bench::run(b).await?;
            if opts.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", bench::text(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Soak(o) => {
            let report = soak::run(o).await?;
            if opts.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", soak::text(&report));
            }
            let clean = report.wrong.is_empty();
            Ok(if clean { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Cmd::Cost(c) => {
            let report = cost::run(&c);
            if opts.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", cost::text(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Stats(s) => {
            snippet_stats::run(s, opts.json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Objects(o) => {
            let ok = objects::run(o, opts.json).await?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Cmd::Token(t) => {
            let minted = token::mint(t)?;
            if opts.json {
                println!("{}", serde_json::to_string_pretty(&minted)?);
            } else {
                eprintln!("JWT, claims {}", minted.claims);
                println!("{}", minted.token);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn the_cli_definition_is_valid_and_parses_the_documented_examples() {
        Opts::command().debug_assert();
        let o = Opts::try_parse_from([
            "test-client",
            "load",
            "ws://127.0.0.1:8787/ws/echo",
            "-c",
            "8",
            "-n",
            "200",
            "-m",
            "raw",
        ])
        .expect("parses");
        match o.command {
            Cmd::Load(l) => {
                assert_eq!((l.clients, l.messages, l.method), (8, 200, load::Method::Raw));
                assert_eq!(l.in_flight, 1);
            }
            other => panic!("{other:?}"),
        }
        let o = Opts::try_parse_from(["test-client", "--json", "stats", "http://127.0.0.1:8787", "--watch", "1"])
            .expect("parses");
        assert!(o.json);
        assert!(matches!(o.command, Cmd::Stats(s) if s.watch == Some(1.0)));
        assert!(Opts::try_parse_from(["test-client", "load", "ws://x", "-m", "nope"]).is_err());
        let o = Opts::try_parse_from([
            "test-client",
            "token",
            "--sub",
            "alice",
            "--scope",
            "read write",
            "--ttl",
            "30m",
            "--aud",
            "snippet",
        ])
        .expect("parses");
        match o.command {
            Cmd::Token(t) => {
                assert_eq!(
                    (t.sub.as_str(), t.tenant.as_str(), t.scope.as_str(), t.ttl),
                    ("alice", "default", "read write", 1800)
                );
                assert_eq!((t.iss, t.aud.as_deref()), (None, Some("snippet")));
            }
            other => panic!("{other:?}"),
        }
        let o = Opts::try_parse_from([
            "test-client",
            "token",
            "--sub",
            "a",
            "--alg",
            "RS256",
            "--key",
            "k.json",
            "--claim",
            "org_id=acme",
        ])
        .expect("parses");
        assert!(matches!(o.command, Cmd::Token(t) if t.alg == "RS256" && t.claims == ["org_id=acme"]));
        assert!(Opts::try_parse_from(["test-client", "token", "--sub", "a", "--alg", "RS512"]).is_err());
        assert!(Opts::try_parse_from(["test-client", "token", "--sub", "a", "--ttl", "1y"]).is_err());
        assert!(Opts::try_parse_from(["test-client", "token"]).is_err(), "--sub is required");
    }
}
