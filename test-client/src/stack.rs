//! Starts the real stack — backend-do and the snippet, each under `wrangler dev`
//! (workerd) on loopback — on free ports, waits until both answer, and stops what it
//! started by process group. Each Worker's custom build runs once per process
//! ([`dev_config`](dev_config::dev_config)). Used by the end-to-end tests and `test-client bench`.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

mod dev_config;
pub use dev_config::ConfigChange;
use dev_config::{build_once, dev_config, has_custom_build, object_class};

/// Log lines that mean the context rules were broken (RUNTIME.md), or that a rejection
/// the code should have expected went unhandled.
pub const FORBIDDEN_LOG_LINES: [&str; 3] = ["Cannot perform I/O on behalf of a different request", "hung", "Uncaught"];

/// The line the local runtime writes when a connection ends without an orderly close on
/// both sides (RUNTIME.md §16): a plain eight-line JavaScript Worker makes it write it too,
/// with no stack, whatever the Worker does. Tests whose clients are closed by the snippet
/// or dropped without a close handshake tolerate it, and say so.
pub const RUNTIME_CLOSE_NOISE: &str = "Uncaught Error: Network connection lost.";

/// How long a worker may take to answer once `wrangler dev` runs (~1 s here; a Worker
/// without a custom build is bundled by wrangler first).
const READY_TIMEOUT: Duration = Duration::from_secs(300);

/// Stops a worker's process group when the process that started it is gone, however it
/// ended: it waits for end of file on its stdin, whose other end only that process holds
/// (a test binary's statics are never dropped, and a killed one runs no destructor).
/// `$0` is the process group. It ignores the terminal's signals, in a group of its own.
const REAPER: &str = r#"trap '' INT HUP; read -r _ || true; kill -s TERM -- "-$0" 2>/dev/null; sleep 2; kill -s KILL -- "-$0" 2>/dev/null"#;

/// One `wrangler dev` process.
pub struct Worker {
    child: Option<Child>,
    /// A `sh` running [`REAPER`] for `child`'s process group.
    reaper: Option<Child>,
    /// Its HTTP port on 127.0.0.1.
    pub port: u16,
    /// Its DevTools inspector port on 127.0.0.1.
    pub inspector: u16,
    log: PathBuf,
    dir: PathBuf,
    args: Vec<String>,
    /// The tenant [`Worker::http`] and [`Worker::ws`] address: `default` means the
    /// unprefixed routes, any other `/db/{tenant}`.
    tenant: String,
    /// Where the log stood when `wrangler dev` last started.
    started_at: u64,
}

impl Worker {
    /// Starts `wrangler dev` for the Worker in `dir` on `port`, its inspector on
    /// `inspector` ([`free_ports`]).
    fn spawn(root: &Path, dir: &Path, ports: [u16; 2], vars: &[(String, String)], log: PathBuf) -> Result<Worker> {
        Worker::spawn_session(root, &[(dir, ConfigChange::default())], ports, vars, log)
    }

    /// Starts one `wrangler dev` session for the Workers in `workers`' folders, each with
    /// its config changed: the first serves `port`, the others only its bindings. `vars`
    /// go to every one.
    pub fn spawn_session(
        root: &Path,
        workers: &[(&Path, ConfigChange)],
        [port, inspector]: [u16; 2],
        vars: &[(String, String)],
        log: PathBuf,
    ) -> Result<Worker> {
        let Some((dir, _)) = workers.first() else { bail!("a session needs a Worker") };
        // Its own, next to its log: two runtimes starting at once on one persist folder
        // collide on its shared SQLite files (SQLITE_BUSY, and the runtime exits).
        let persist = log.with_extension("state");
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
        for (i, (dir, change)) in workers.iter().enumerate() {
            if let Some(config) = dev_config(dir, &log.with_extension(format!("{i}.wrangler.toml")), change)? {
                args.push("--config".into());
                args.push(config.display().to_string());
            }
        }
        let mut w = Worker {
            child: None,
            reaper: None,
            port,
            inspector,
            log,
            dir: dir.to_path_buf(),
            args,
            tenant: "default".into(),
            started_at: 0,
        };
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
        self.started_at = self.log_len();
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
        let reaper = Command::new("sh")
            .arg("-c")
            .arg(REAPER)
            .arg(child.id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        self.child = Some(child);
        self.reaper = Some(reaper.context("starting the reaper of wrangler dev")?);
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
        // Its group is gone: the reaper has nothing left to do (killed before its stdin
        // closes, so it never signals a group id the system may have handed out again).
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.kill();
            let _ = reaper.wait();
        }
    }

    /// Kills the process group at once with `SIGKILL` (no shutdown of any kind: every
    /// socket of its runtime drops as when the platform evicts an isolate), and waits.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: plain syscall on a process group we created.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.wait();
        }
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.kill();
            let _ = reaper.wait();
        }
    }

    /// Whether its `wrangler dev` still runs.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many bytes the log has now: where the lines of what happens next begin.
    pub fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    /// The lines of the log that begin at a byte in `from..to` ([`Worker::log_len`]s;
    /// `None`: to the end). A line being written when a mark was taken belongs to the
    /// window it began in, so consecutive windows hold every line exactly once.
    pub fn log_lines(&self, from: u64, to: Option<u64>) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let mut bytes = Vec::new();
        // From one byte before `from`: whether `from` starts a line.
        let start = from.saturating_sub(1);
        if let Ok(mut f) = File::open(&self.log) {
            if f.seek(SeekFrom::Start(start)).is_ok() {
                let _ = f.read_to_end(&mut bytes);
            }
        }
        String::from_utf8_lossy(lines_between(&bytes, start, from, to.unwrap_or(u64::MAX))).into_owned()
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
        format!("http://127.0.0.1:{}{}", self.port, self.prefix())
    }

    /// Base WebSocket URL of the tenant routes, e.g. `ws://127.0.0.1:8787/db/room`.
    pub fn ws(&self) -> String {
        format!("ws://127.0.0.1:{}{}", self.port, self.prefix())
    }

    /// `/db/{tenant}`, or nothing for tenant `default` (the unprefixed routes).
    fn prefix(&self) -> String {
        if self.tenant == "default" {
            String::new()
        } else {
            format!("/db/{}", self.tenant)
        }
    }

    /// The tenant [`Worker::http`] and [`Worker::ws`] address.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Points [`Worker::http`] and [`Worker::ws`] at `tenant`'s routes (`default`: the
    /// unprefixed ones).
    pub fn set_tenant(&mut self, tenant: &str) {
        tenant.clone_into(&mut self.tenant);
    }

    /// The server's own URL, for routes outside any tenant (`/__stats`, `/`).
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until it answers `GET /` (after [`Worker::spawn_session`]).
    pub fn wait_ready(&mut self) -> Result<()> {
        wait_ready(self, "/")
    }

    /// [`Worker::set_tenant`], by value.
    fn address(mut self, tenant: &str) -> Worker {
        self.set_tenant(tenant);
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
    /// The snippet reaches the backend through a Durable Object namespace binding
    /// (`BACKEND_BINDING`) instead of its URL. The backend still runs in a `wrangler dev`
    /// of its own — tests restart, freeze and ask it directly — and wrangler's dev
    /// registry connects the binding to it.
    pub binding: bool,
}

/// A running backend + snippet pair.
pub struct Stack {
    root: PathBuf,
    /// Scratch directory: logs, and each worker's persisted state (the backend's Durable
    /// Objects in `backend.state`).
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
    /// Keep [`Stack::dir`] when dropped (set by [`Stack::keep_files`]).
    keep_files: bool,
    /// How snippets reach the backend.
    reach: Reach,
    /// How a Worker can bind to the backend's class (a backend with a custom build).
    bound_to: Option<Bound>,
}

/// How snippets of a stack reach its backend.
#[derive(Debug, Clone)]
enum Reach {
    /// `BACKEND_URL` on this port.
    Url(u16),
    /// `BACKEND_BINDING`.
    Binding(Bound),
}

/// What a binding to a stack's backend names: `class` of the Worker registered with
/// wrangler's dev registry as `script` (a name of this stack's own).
#[derive(Debug, Clone)]
struct Bound {
    script: String,
    class: String,
}

/// The name of the snippet's binding in binding mode.
const BINDING: &str = "BACKEND";

impl Reach {
    /// The vars that point a snippet at the backend, and the change its config needs.
    fn snippet(&self, token: &str) -> (Vec<(String, String)>, ConfigChange) {
        let token = ("BACKEND_TOKEN".to_owned(), token.to_owned());
        match self {
            Reach::Url(port) => {
                let url = format!("ws://127.0.0.1:{port}/db/{{tenant}}/mux");
                (vec![token, ("BACKEND_URL".to_owned(), url)], ConfigChange::default())
            }
            Reach::Binding(b) => {
                let vars = vec![token, ("BACKEND_BINDING".to_owned(), BINDING.to_owned())];
                (vars, ConfigChange::bind(BINDING, &b.class, &b.script))
            }
        }
    }
}

/// Where both logs ended at some moment ([`Stack::log_marks`]): what was written after it
/// is what happened since.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogMarks {
    /// Bytes in the backend's log.
    pub backend: u64,
    /// Bytes in the snippet's log.
    pub snippet: u64,
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `N` different ports that were free a moment ago, below the range the system hands out
/// for outgoing connections: a port from that range (what binding port 0 gives) can be
/// taken by any client's connection before `wrangler dev` binds it, and with load tests
/// running beside, it was ("Address already in use"). Held at once while chosen, so no
/// two are the same.
pub fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let ephemeral = range.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()).unwrap_or(32768);
    let (low, high) = if ephemeral > 12_000 { (10_000, ephemeral) } else { (0, 0) };
    let mut held = Vec::with_capacity(N);
    for _ in 0..N * 100 {
        if held.len() == N {
            break;
        }
        // Below the ephemeral range when there is room there, else whatever the system gives.
        let port = if high > low { fastrand::u16(low..high) } else { 0 };
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
        }
    }
    if held.len() < N {
        bail!("no {N} free ports found");
    }
    let mut ports = [0; N];
    for (port, l) in ports.iter_mut().zip(&held) {
        *port = l.local_addr()?.port();
    }
    Ok(ports)
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

/// What `wrangler dev` logs once its runtime serves, and when the runtime could not start:
/// then wrangler keeps running, and its proxy answers every request with an error.
const READY_LINE: &str = "Ready on http";
const START_FAILED: [&str; 2] = ["The Workers runtime failed to start", "Address already in use"];

fn wait_ready(worker: &mut Worker, path: &str) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let addr = format!("127.0.0.1:{}", worker.port);
    while Instant::now() < deadline {
        if let Some(child) = worker.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("wrangler dev exited early ({status}); log:\n{}", tail(&worker.log(), 40));
            }
        }
        let log = worker.log_lines(worker.started_at, None);
        if START_FAILED.iter().any(|f| log.contains(f)) {
            bail!("the runtime of wrangler dev failed to start; log:\n{}", tail(&log, 40));
        }
        // Any HTTP answer of a runtime that says it is ready will do (a misconfigured
        // worker answers 500).
        if log.contains(READY_LINE) && http_get_status(&addr, path).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("worker on {addr} not ready after {READY_TIMEOUT:?}; log:\n{}", tail(&worker.log(), 40))
}

/// What `wrangler dev` lists for a binding its dev registry has connected to another
/// session's Worker (before that, `[not connected]`, and requests through it fail).
const BOUND_LINE: &str = "[connected]";

/// Waits until `worker`'s binding is connected (binding mode).
fn wait_bound(worker: &mut Worker) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if worker.log_lines(worker.started_at, None).contains(BOUND_LINE) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the binding of the worker on {} never connected; log:\n{}", worker.port, tail(&worker.log(), 40))
}

/// A minimal blocking GET (readiness probes run before any runtime exists): the status of
/// the response's first line. The dev server keeps the connection open for seconds after
/// the response despite `Connection: close` (waiting for the end cost each probe ~5 s), so
/// once the status line is in it reads only what follows at once (closing before the
/// response is all read makes the runtime log a broken pipe).
fn http_get_status(addr: &str, path: &str) -> Result<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    while matches!(s.read(&mut chunk), Ok(1..)) {}
    let head = String::from_utf8_lossy(&buf);
    let status = head.split_whitespace().nth(1).context("no status")?;
    Ok(status.parse()?)
}

/// Of `bytes`, a log's contents from offset `start` (`from - 1`, or 0), the lines that
/// begin at an offset in `from..to`.
fn lines_between(bytes: &[u8], start: u64, from: u64, to: u64) -> &[u8] {
    let mut rest = bytes;
    let mut at = start;
    if from > 0 {
        // The byte before `from`, and the rest of a line begun before it, are not ours.
        let skip = if rest.first() == Some(&b'\n') {
            1
        } else {
            rest.iter().position(|b| *b == b'\n').map_or(rest.len(), |i| i + 1)
        };
        at += skip as u64;
        rest = &rest[skip..];
    }
    let mut len = 0;
    for line in rest.split_inclusive(|b| *b == b'\n') {
        if at >= to {
            break;
        }
        len += line.len();
        at += line.len() as u64;
    }
    &rest[..len]
}

/// The last `n` lines of a log.
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Stack {
    /// Starts backend-do and the snippet pointed at it, with a fresh random token.
    pub fn start(opts: StackOpts) -> Result<Stack> {
        let mut attempt = 1;
        loop {
            match Stack::start_once(&opts) {
                // Another process took a port between its choice and `wrangler dev`
                // binding it: choose again.
                Err(e) if attempt < 3 && format!("{e:#}").contains(START_FAILED[1]) => {
                    eprintln!("a port was taken before wrangler dev bound it: starting again");
                    attempt += 1;
                }
                started => return started,
            }
        }
    }

    fn start_once(opts: &StackOpts) -> Result<Stack> {
        let started = Instant::now();
        let root = repo_root()?;
        let dir = std::env::temp_dir().join(format!("snippet-proxy-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir)?;
        let token: String = std::iter::repeat_with(fastrand::alphanumeric).take(32).collect();
        let auth_secret: String = std::iter::repeat_with(fastrand::alphanumeric).take(48).collect();
        let [backend_port, backend_inspector, snippet_port, snippet_inspector] = free_ports()?;
        let tenant = opts.tenant.clone().unwrap_or_else(|| "default".into());
        let mut backend_vars = vec![("BACKEND_TOKEN".to_owned(), token.clone())];
        backend_vars.extend(opts.backend_vars.iter().cloned());
        let backend_dir = root.join(opts.backend_dir.as_deref().unwrap_or("backend-do"));
        // A backend with a custom build registers under a name of this stack's own, so a
        // Worker bound to it never reaches another stack's.
        let (bound_to, backend_change) = if has_custom_build(&backend_dir) {
            let script = format!("snippet-proxy-backend-{:016x}", fastrand::u64(..));
            let change = ConfigChange { name: Some(script.clone()), ..ConfigChange::default() };
            (Some(Bound { script, class: object_class(&backend_dir)? }), change)
        } else {
            (None, ConfigChange::default())
        };
        let reach = match (&bound_to, opts.binding) {
            (Some(b), true) => Reach::Binding(b.clone()),
            (None, true) => bail!("binding mode needs a backend with a custom build ({})", backend_dir.display()),
            (_, false) => Reach::Url(backend_port),
        };
        let (mut snippet_vars, snippet_change) = reach.snippet(&token);
        // Blank, not absent: `wrangler dev` would otherwise take .dev.vars' AUTH_SECRET.
        let secret = if opts.no_auth_secret { String::new() } else { auth_secret.clone() };
        snippet_vars.push(("AUTH_SECRET".to_owned(), secret));
        snippet_vars.extend(opts.snippet_vars.iter().cloned());
        // Both at once, the first time (each Worker is built once per process).
        build_once(&[&backend_dir, &root])?;
        let ports = [backend_port, backend_inspector];
        let backend = [(backend_dir.as_path(), backend_change)];
        let mut backend = Worker::spawn_session(&root, &backend, ports, &backend_vars, dir.join("backend.log"))?;
        let ports = [snippet_port, snippet_inspector];
        let snippet = [(root.as_path(), snippet_change)];
        let log = dir.join("snippet.log");
        let mut snippet = Worker::spawn_session(&root, &snippet, ports, &snippet_vars, log)?.address(&tenant);
        wait_ready(&mut backend, "/")?;
        wait_ready(&mut snippet, "/")?;
        if let Reach::Binding(_) = reach {
            wait_bound(&mut snippet)?;
        }
        let mint = |scope: &str| {
            crate::token::hs256(auth_secret.as_bytes(), &crate::token::claims("e2e", "*", scope, 3600, now_secs()))
        };
        let (client_token, admin_token) = (mint("read write publish"), mint("admin"));
        eprintln!("stack up in {:.1} s ({})", started.elapsed().as_secs_f64(), dir.display());
        Ok(Stack {
            root,
            dir,
            backend,
            snippet,
            token,
            auth_secret,
            client_token,
            admin_token,
            keep_files: false,
            reach,
            bound_to,
        })
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
        let ports = free_ports()?;
        let (mut all, change) = self.reach.snippet(&self.token);
        all.push(("AUTH_SECRET".to_owned(), self.auth_secret.clone()));
        all.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        // Each its own log and persist folder, even for the same tenant: two runtimes on
        // one folder collide (see `Worker::spawn`).
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = self.dir.join(format!("snippet-{tenant}-{n}.log"));
        let mut w = Worker::spawn_session(&self.root, &[(&self.root, change)], ports, &all, log)?.address(tenant);
        wait_ready(&mut w, "/")?;
        if let Reach::Binding(_) = self.reach {
            wait_bound(&mut w)?;
        }
        Ok(w)
    }

    /// Starts the Worker in `dir` (relative to the repository) with `vars`: a control
    /// worker such as the soak's pass-through.
    pub fn extra_worker(&self, dir: &str, vars: &[(String, String)]) -> Result<Worker> {
        self.extra_worker_as(dir, &dir.replace('/', "-"), vars)
    }

    /// Starts the Worker in `dir` (relative to the repository) with a Durable Object
    /// binding `binding` to the backend's class, and `vars`: a baseline that reaches the
    /// objects as a Worker of the same account would (the forwarding Worker).
    pub fn bound_worker(&self, dir: &str, binding: &str, vars: &[(String, String)]) -> Result<Worker> {
        let b = self.bound_to.as_ref().context("the backend has no name of its own to bind to")?;
        let log = self.dir.join(format!("{}.log", dir.replace('/', "-")));
        let change = ConfigChange::bind(binding, &b.class, &b.script);
        let mut w = Worker::spawn_session(&self.root, &[(&self.root.join(dir), change)], free_ports()?, vars, log)?;
        wait_ready(&mut w, "/")?;
        wait_bound(&mut w)?;
        Ok(w)
    }

    /// [`Stack::extra_worker`] under `name` (its log and persisted state): for a second
    /// instance of the same Worker.
    pub fn extra_worker_as(&self, dir: &str, name: &str, vars: &[(String, String)]) -> Result<Worker> {
        let ports = free_ports()?;
        let log = self.dir.join(format!("{name}.log"));
        let mut w = Worker::spawn(&self.root, &self.root.join(dir), ports, vars, log)?;
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

    /// Starts the snippet again after [`Worker::kill`] or [`Worker::stop`], on its port,
    /// and waits until it answers.
    pub fn revive_snippet(&mut self) -> Result<()> {
        self.snippet.start(&self.root)?;
        wait_ready(&mut self.snippet, "/")
    }

    /// Both logs, labelled.
    pub fn logs(&self) -> String {
        self.logs_between(LogMarks::default(), None)
    }

    /// Where both logs end now.
    pub fn log_marks(&self) -> LogMarks {
        LogMarks { backend: self.backend.log_len(), snippet: self.snippet.log_len() }
    }

    /// The lines of both logs between two marks ([`Worker::log_lines`]), labelled.
    pub fn logs_between(&self, from: LogMarks, to: Option<LogMarks>) -> String {
        let [(_, backend), (_, snippet)] = self.log_windows(from, to);
        format!("--- backend log ---\n{backend}\n--- snippet log ---\n{snippet}")
    }

    fn log_windows(&self, from: LogMarks, to: Option<LogMarks>) -> [(&'static str, String); 2] {
        [
            ("backend", self.backend.log_lines(from.backend, to.map(|t| t.backend))),
            ("snippet", self.snippet.log_lines(from.snippet, to.map(|t| t.snippet))),
        ]
    }

    /// Fails with the log tails if either log has a line from [`FORBIDDEN_LOG_LINES`].
    pub fn assert_clean_logs(&self) -> Result<()> {
        self.assert_clean_logs_tolerating(&[])
    }

    /// [`Stack::assert_clean_logs`], except for lines that contain one of `noise` — each a
    /// line the runtime itself writes in a situation the test creates on purpose (see
    /// [`RUNTIME_CLOSE_NOISE`]), never one the code could prevent.
    pub fn assert_clean_logs_tolerating(&self, noise: &[&str]) -> Result<()> {
        self.assert_clean_logs_between(LogMarks::default(), None, noise)
    }

    /// [`Stack::assert_clean_logs_tolerating`] for the lines between two marks (`None`:
    /// to the end): on a stack several tests share, those of one test.
    pub fn assert_clean_logs_between(&self, from: LogMarks, to: Option<LogMarks>, noise: &[&str]) -> Result<()> {
        for (name, log) in self.log_windows(from, to) {
            for bad in FORBIDDEN_LOG_LINES {
                let found = log.lines().find(|l| l.contains(bad) && !noise.iter().any(|n| l.contains(n)));
                if let Some(line) = found {
                    bail!("{name} log has {bad:?}: {line}\n{}", tail(&log, 60));
                }
            }
        }
        Ok(())
    }

    /// Whether both `wrangler dev` processes still run.
    pub fn running(&mut self) -> bool {
        self.backend.running() && self.snippet.running()
    }

    /// Keeps [`Stack::dir`] (logs, state) when the stack is dropped, for a failure to be
    /// looked into. A stack dropped while its thread panics keeps it anyway.
    pub fn keep_files(&mut self) {
        self.keep_files = true;
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
        } else if !self.keep_files {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::lines_between;

    /// Windows cut at marks taken anywhere — mid-line included — hold every line once.
    #[test]
    fn consecutive_log_windows_hold_every_line_exactly_once() {
        let log = b"one\ntwo\nthree\nfour";
        let window = |from: u64, to: u64| {
            let start = from.saturating_sub(1);
            String::from_utf8_lossy(lines_between(&log[start as usize..], start, from, to)).into_owned()
        };
        assert_eq!(window(0, u64::MAX), "one\ntwo\nthree\nfour");
        // A mark at a line's start: that line is the next window's.
        assert_eq!(window(0, 4), "one\n");
        assert_eq!(window(4, u64::MAX), "two\nthree\nfour");
        // A mark inside "three": it began before, so it is the first window's.
        assert_eq!(window(0, 10), "one\ntwo\nthree\n");
        assert_eq!(window(10, u64::MAX), "four");
        assert_eq!(window(4, 10), "two\nthree\n");
        // A window that sees only the rest of a line begun before it is empty.
        assert_eq!(window(10, 14), "");
        assert_eq!(window(18, u64::MAX), "");
    }
}
