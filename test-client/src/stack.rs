//! Starts the real stack — backend-do and the snippet, each under `wrangler dev`
//! (workerd) on loopback — on free ports, waits until both answer, and stops what it
//! started by process group. Used by the end-to-end tests and `test-client bench`.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

/// Log lines that mean the context rules were broken (RUNTIME.md), or that a rejection
/// the code should have expected went unhandled.
pub const FORBIDDEN_LOG_LINES: [&str; 3] = ["Cannot perform I/O on behalf of a different request", "hung", "Uncaught"];

/// The line the local runtime writes when a connection ends without an orderly close on
/// both sides (RUNTIME.md §16): a plain eight-line JavaScript Worker makes it write it too,
/// with no stack, whatever the Worker does. Tests whose clients are closed by the snippet
/// or dropped without a close handshake tolerate it, and say so.
pub const RUNTIME_CLOSE_NOISE: &str = "Uncaught Error: Network connection lost.";

/// How long a worker may take to build and answer (a cold wasm build is ~60 s here).
const READY_TIMEOUT: Duration = Duration::from_secs(300);

/// One `wrangler dev` process.
pub struct Worker {
    child: Option<Child>,
    /// Its HTTP port on 127.0.0.1.
    pub port: u16,
    /// Its DevTools inspector port on 127.0.0.1.
    pub inspector: u16,
    log: PathBuf,
    dir: PathBuf,
    args: Vec<String>,
    /// Where [`Worker::http`] and [`Worker::ws`] point: `/db/{tenant}` of a snippet whose
    /// tests address one tenant, empty otherwise (the unprefixed routes, tenant default).
    prefix: String,
}

impl Worker {
    fn spawn(
        root: &Path,
        dir: &Path,
        port: u16,
        vars: &[(String, String)],
        log: PathBuf,
        persist: &Path,
    ) -> Result<Worker> {
        let inspector = free_port()?;
        let mut args: Vec<String> = vec![
            "dev".into(),
            "--ip".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--inspector-port".into(),
            inspector.to_string(),
            "--persist-to".into(),
            persist.display().to_string(),
            "--show-interactive-dev-session=false".into(),
            // GET /__scheduled runs the scheduled handler (the keep-warm tests).
            "--test-scheduled".into(),
        ];
        for (k, v) in vars {
            args.push("--var".into());
            args.push(format!("{k}:{v}"));
        }
        let mut w = Worker { child: None, port, inspector, log, dir: dir.to_owned(), args, prefix: String::new() };
        w.start(root)?;
        Ok(w)
    }

    fn start(&mut self, root: &Path) -> Result<()> {
        use std::os::unix::process::CommandExt;
        let wrangler = root.join("node_modules/.bin/wrangler");
        if !wrangler.exists() {
            bail!("{} is missing: run ./x setup", wrangler.display());
        }
        let log = File::options().create(true).append(true).open(&self.log).context("worker log")?;
        let child = Command::new(wrangler)
            .args(&self.args)
            .current_dir(&self.dir)
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CI", "true")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("starting wrangler dev")?;
        self.child = Some(child);
        Ok(())
    }

    /// Stops the process group (wrangler and its workerd) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = child.id() as i32;
            // SAFETY: plain syscall on a process group we created.
            unsafe {
                libc::kill(-pgid, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // SAFETY: as above.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `workerd` processes this worker's `wrangler dev` started (found by process
    /// group).
    fn workerd_pids(&self) -> Vec<(std::path::PathBuf, i32)> {
        let Some(pgid) = self.child.as_ref().map(Child::id) else { return Vec::new() };
        let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
        let mut pids = Vec::new();
        for entry in dir.flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            // "pid (comm) state ppid pgrp …": comm may hold spaces, so split after ')'.
            let Some((head, rest)) = stat.rsplit_once(')') else { continue };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if !head.ends_with("workerd") || fields.get(2).and_then(|g| g.parse::<u32>().ok()) != Some(pgid) {
                continue;
            }
            if let Some(pid) = head.split_whitespace().next().and_then(|p| p.parse().ok()) {
                pids.push((entry.path(), pid));
            }
        }
        pids
    }

    /// Resident memory (KiB) of the `workerd` processes this worker's `wrangler dev`
    /// started, or `None` when none runs. What the runtime holds outside the isolate
    /// (e.g. queued socket writes) shows only here.
    pub fn workerd_rss_kb(&self) -> Option<u64> {
        let pids = self.workerd_pids();
        if pids.is_empty() {
            return None;
        }
        let kb = pids.iter().map(|(dir, _)| {
            let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
            let rss = status.lines().find_map(|l| l.strip_prefix("VmRSS:"));
            rss.and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()).unwrap_or(0)
        });
        Some(kb.sum())
    }

    /// CPU time (user + system, in seconds) the `workerd` processes of this worker have
    /// used so far, from `/proc/<pid>/stat`. A difference over a run is the runtime's
    /// whole cost of that run: the isolate, its sockets and wrangler's dev proxy.
    pub fn workerd_cpu_secs(&self) -> f64 {
        // SAFETY: sysconf has no memory effects.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let ticks: u64 = self
            .workerd_pids()
            .iter()
            .map(|(dir, _)| {
                let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
                let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
                // After ')': state(0) … utime(11) stime(12), counted in clock ticks.
                let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
                f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
            })
            .sum();
        ticks as f64 / hz
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the runtime: its sockets stay open but
    /// nothing answers — a stalled backend, as the heartbeat must find it.
    pub fn freeze(&self, frozen: bool) {
        let sig = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        for (_, pid) in self.workerd_pids() {
            // SAFETY: kill(2) with a pid we just read from /proc; no memory is involved.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// Base URL of the tenant routes, e.g. `http://127.0.0.1:8787` or
    /// `http://127.0.0.1:8787/db/room` (then `/rpc` is that tenant's).
    pub fn http(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.port, self.prefix)
    }

    /// Base WebSocket URL of the tenant routes, e.g. `ws://127.0.0.1:8787/db/room`.
    pub fn ws(&self) -> String {
        format!("ws://127.0.0.1:{}{}", self.port, self.prefix)
    }

    /// The server's own URL, for routes outside any tenant (`/__stats`, `/`).
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Points [`Worker::http`] and [`Worker::ws`] at `tenant`'s routes.
    fn address(mut self, tenant: &str) -> Worker {
        if tenant != "default" {
            self.prefix = format!("/db/{tenant}");
        }
        self
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Options for [`Stack::start`].
#[derive(Debug, Clone, Default)]
pub struct StackOpts {
    /// Extra `--var`s for the snippet (limits, test routes, …).
    pub snippet_vars: Vec<(String, String)>,
    /// Tenant that the snippet worker's [`Worker::http`] and [`Worker::ws`] address
    /// (default: the unprefixed routes, tenant `default`).
    pub tenant: Option<String>,
    /// Extra `--var`s for the backend.
    pub backend_vars: Vec<(String, String)>,
    /// Start the snippet without `AUTH_SECRET` (to see it fail closed, or with
    /// `ALLOW_ANONYMOUS` in `snippet_vars`).
    pub no_auth_secret: bool,
    /// The backend Worker's folder, relative to the repository (default `backend-do`; the
    /// TypeScript example is `examples/ts-chat`). It must serve `/db/{tenant}/mux`.
    pub backend_dir: Option<String>,
}

/// A running backend + snippet pair.
pub struct Stack {
    root: PathBuf,
    /// Scratch directory: logs and the Durable Object's persisted state.
    pub dir: PathBuf,
    /// The backend-do worker.
    pub backend: Worker,
    /// The snippet worker.
    pub snippet: Worker,
    /// The backend's bearer token (the snippet's `BACKEND_TOKEN`).
    pub token: String,
    /// The snippet's `AUTH_SECRET` (HS256), to mint client tokens with.
    pub auth_secret: String,
    /// A client JWT for every tenant with `read write publish`, valid for an hour.
    pub client_token: String,
    /// An operator JWT (`admin`, tenant `*`), for `/__stats`.
    pub admin_token: String,
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The repository root: `SNIPPET_PROXY_ROOT`, or the nearest ancestor of the current
/// directory (or of this crate) holding `wrangler.toml` and `backend-do/`.
pub fn repo_root() -> Result<PathBuf> {
    if let Ok(root) = std::env::var("SNIPPET_PROXY_ROOT") {
        return Ok(PathBuf::from(root));
    }
    let starts = [std::env::current_dir()?, PathBuf::from(env!("CARGO_MANIFEST_DIR"))];
    for start in starts {
        for dir in start.ancestors() {
            if dir.join("wrangler.toml").exists() && dir.join("backend-do").is_dir() {
                return Ok(dir.to_owned());
            }
        }
    }
    bail!("cannot find the snippet-proxy checkout; set SNIPPET_PROXY_ROOT")
}

fn wait_ready(worker: &mut Worker, path: &str) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let addr = format!("127.0.0.1:{}", worker.port);
    while Instant::now() < deadline {
        if let Some(child) = worker.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("wrangler dev exited early ({status}); log:\n{}", tail(&worker.log(), 40));
            }
        }
        // Any HTTP answer means the runtime is up (a misconfigured worker answers 500).
        if http_get_status(&addr, path).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!("worker on {addr} not ready after {READY_TIMEOUT:?}; log:\n{}", tail(&worker.log(), 40))
}

/// A minimal blocking GET (readiness probes run before any runtime exists).
fn http_get_status(addr: &str, path: &str) -> Result<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let head = String::from_utf8_lossy(&buf);
    let status = head.split_whitespace().nth(1).context("no status")?;
    Ok(status.parse()?)
}

/// The vars that point a snippet at the local backend (its URL template).
fn snippet_vars(token: &str, backend_port: u16) -> Vec<(String, String)> {
    vec![
        ("BACKEND_TOKEN".to_owned(), token.to_owned()),
        ("BACKEND_URL".to_owned(), format!("ws://127.0.0.1:{backend_port}/db/{{tenant}}/mux")),
    ]
}

/// The last `n` lines of a log.
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Stack {
    /// Starts backend-do and the snippet pointed at it, with a fresh random token.
    pub fn start(opts: StackOpts) -> Result<Stack> {
        let root = repo_root()?;
        let dir = std::env::temp_dir().join(format!("snippet-proxy-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir)?;
        let token: String = std::iter::repeat_with(fastrand::alphanumeric).take(32).collect();
        let auth_secret: String = std::iter::repeat_with(fastrand::alphanumeric).take(48).collect();
        let backend_port = free_port()?;
        let snippet_port = free_port()?;
        let tenant = opts.tenant.clone().unwrap_or_else(|| "default".into());
        let mut backend_vars = vec![("BACKEND_TOKEN".to_owned(), token.clone())];
        backend_vars.extend(opts.backend_vars);
        let mut snippet_vars = snippet_vars(&token, backend_port);
        // Blank, not absent: `wrangler dev` would otherwise take .dev.vars' AUTH_SECRET.
        let secret = if opts.no_auth_secret { String::new() } else { auth_secret.clone() };
        snippet_vars.push(("AUTH_SECRET".to_owned(), secret));
        snippet_vars.extend(opts.snippet_vars);
        let persist = dir.join("state");
        let mut backend = Worker::spawn(
            &root,
            &root.join(opts.backend_dir.as_deref().unwrap_or("backend-do")),
            backend_port,
            &backend_vars,
            dir.join("backend.log"),
            &persist,
        )?;
        let mut snippet = Worker::spawn(&root, &root, snippet_port, &snippet_vars, dir.join("snippet.log"), &persist)?
            .address(&tenant);
        wait_ready(&mut backend, "/")?;
        wait_ready(&mut snippet, "/")?;
        let mint = |scope: &str| {
            crate::token::hs256(auth_secret.as_bytes(), &crate::token::claims("e2e", "*", scope, 3600, now_secs()))
        };
        let (client_token, admin_token) = (mint("read write publish"), mint("admin"));
        Ok(Stack { root, dir, backend, snippet, token, auth_secret, client_token, admin_token })
    }

    /// Mints an HS256 token for this stack's snippet.
    pub fn mint(&self, sub: &str, tenant: &str, scope: &str, ttl_secs: i64) -> String {
        crate::token::hs256(
            self.auth_secret.as_bytes(),
            &crate::token::claims(sub, tenant, scope, ttl_secs, now_secs()),
        )
    }

    /// Starts another snippet against the same backend, on `tenant`, with extra vars
    /// (the benchmark compares configurations side by side).
    pub fn extra_snippet(&self, tenant: &str, vars: &[(&str, &str)]) -> Result<Worker> {
        let port = free_port()?;
        let mut all = snippet_vars(&self.token, self.backend.port);
        all.push(("AUTH_SECRET".to_owned(), self.auth_secret.clone()));
        all.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let log = self.dir.join(format!("snippet-{tenant}.log"));
        let mut w = Worker::spawn(&self.root, &self.root, port, &all, log, &self.dir.join("state"))?.address(tenant);
        wait_ready(&mut w, "/")?;
        Ok(w)
    }

    /// Starts the Worker in `dir` (relative to the repository) with `vars`: a control
    /// worker such as the soak's pass-through.
    pub fn extra_worker(&self, dir: &str, vars: &[(String, String)]) -> Result<Worker> {
        let port = free_port()?;
        let log = self.dir.join(format!("{}.log", dir.replace('/', "-")));
        let mut w = Worker::spawn(&self.root, &self.root.join(dir), port, vars, log, &self.dir.join("state"))?;
        wait_ready(&mut w, "/")?;
        Ok(w)
    }

    /// Stops the backend (the snippet keeps running).
    pub fn stop_backend(&mut self) {
        self.backend.stop();
    }

    /// Starts the backend again on the same port with the same persisted state.
    pub fn restart_backend(&mut self) -> Result<()> {
        self.backend.stop();
        self.backend.start(&self.root)?;
        wait_ready(&mut self.backend, "/")
    }

    /// Both logs, labelled.
    pub fn logs(&self) -> String {
        format!("--- backend log ---\n{}\n--- snippet log ---\n{}", self.backend.log(), self.snippet.log())
    }

    /// Fails with the log tails if either log has a line from [`FORBIDDEN_LOG_LINES`].
    pub fn assert_clean_logs(&self) -> Result<()> {
        self.assert_clean_logs_tolerating(&[])
    }

    /// [`Stack::assert_clean_logs`], except for lines that contain one of `noise` — each a
    /// line the runtime itself writes in a situation the test creates on purpose (see
    /// [`RUNTIME_CLOSE_NOISE`]), never one the code could prevent.
    pub fn assert_clean_logs_tolerating(&self, noise: &[&str]) -> Result<()> {
        for (name, log) in [("backend", self.backend.log()), ("snippet", self.snippet.log())] {
            for bad in FORBIDDEN_LOG_LINES {
                let found = log.lines().find(|l| l.contains(bad) && !noise.iter().any(|n| l.contains(n)));
                if let Some(line) = found {
                    bail!("{name} log has {bad:?}: {line}\n{}", tail(&log, 60));
                }
            }
        }
        Ok(())
    }

    /// The snippet's `/__stats` (with the operator token).
    pub async fn snippet_stats(&self) -> Result<serde_json::Value> {
        crate::snippet_stats::fetch(&format!("{}/__stats", self.snippet.origin()), Some(&self.admin_token)).await
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.snippet.stop();
        self.backend.stop();
        if std::thread::panicking() {
            eprintln!("{}", tail(&self.logs(), 80));
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
