//! Real-browser tests: headless Chromium (Debian's package) driven by playwright-core
//! runs `client/browser-test/demo.mjs` against this stack — the demo page and the client
//! library served by the snippet, two pages talking, the backend restarted and the
//! snippet killed mid-session (sessions carry the pages through both), refusals a page
//! can see. The script asks for each restart on its stdout; this harness owns the
//! processes, so it does the restart and answers on the script's stdin.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use crate::common::*;

#[test]
fn two_browser_pages_through_the_snippet_survive_a_backend_restart_and_a_killed_snippet() {
    e2e()
        .own_stack("restarts the backend and kills the snippet mid-session")
        // Sockets of a killed or restarted runtime drop without a close handshake (RUNTIME.md §16).
        .tolerating(&[test_client::stack::RUNTIME_CLOSE_NOISE])
        .run_mut(async |stack| {
            let root = test_client::stack::repo_root().expect("repo root");
            let artifacts = root.join("target/browser-artifacts");
            let mut child = Command::new("node")
                .arg("client/browser-test/demo.mjs")
                .current_dir(&root)
                .env("SNIPPET_ORIGIN", stack.snippet.origin())
                .env("CLIENT_TOKEN", &stack.client_token)
                .env("ADMIN_TOKEN", &stack.admin_token)
                .env("ARTIFACTS", &artifacts)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("node runs the browser test");
            let mut stdin = child.stdin.take().expect("stdin");
            let stdout = BufReader::new(child.stdout.take().expect("stdout"));
            let mut out = String::new();
            let mut restarts = 0;
            // Blocking reads: this body has the test's thread to itself.
            for line in stdout.lines() {
                let line = line.expect("browser test output");
                let restarted = match line.trim() {
                    "RESTART_BACKEND" => stack.restart_backend(),
                    "RESTART_SNIPPET" => {
                        stack.snippet.kill();
                        stack.revive_snippet()
                    }
                    _ => {
                        println!("{line}");
                        out.push_str(&line);
                        out.push('\n');
                        continue;
                    }
                };
                restarted.expect("restarted");
                restarts += 1;
                writeln!(stdin, "RESTARTED").expect("answer the browser test");
            }
            let status = child.wait().expect("node exits");
            assert!(
                status.success(),
                "the browser test failed ({status}):\n{out}\n{}",
                test_client::stack::tail(&stack.logs(), 60)
            );
            assert_eq!(restarts, 2, "the backend was restarted and the snippet killed mid-session");
            // node's test runner closes with `# pass N` / `# fail N` (TAP) or `ℹ pass N` (spec).
            let count = |what: &str| {
                out.lines()
                    .find_map(|l| l.trim_start_matches(['#', 'ℹ', ' ']).strip_prefix(what)?.trim().parse::<u32>().ok())
            };
            assert_eq!(count("fail "), Some(0), "node's test runner reported failures:\n{out}");
            assert!(count("pass ").is_some_and(|n| n >= 3), "every browser test ran:\n{out}");
            assert!(artifacts.join("demo.png").is_file(), "the demo screenshot is saved");
            assert!(artifacts.join("stats.png").is_file(), "the stats panel's screenshot (its charts) is saved");
        });
}
