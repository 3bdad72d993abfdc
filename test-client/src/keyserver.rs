//! A key-set server on loopback for the end-to-end tests: it plays an identity provider's
//! JWKS endpoint that rotates keys, fails, stalls and serves garbage on command, and
//! counts every request it gets (the snippet's fetches).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Result;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The set at the requested path, 200, with `Cache-Control: max-age` if set.
    Serve,
    /// This status and a short text body.
    Status(u16),
    /// Reads the request and never answers (the connection stays open).
    Stall,
    /// 200 with a body that is no key set.
    Garbage,
}

#[derive(Debug)]
struct State {
    sets: HashMap<String, Value>,
    mode: Mode,
    max_age: Option<u64>,
    fetches: HashMap<String, u64>,
}

/// The running server; it stops when dropped.
pub struct KeyServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

async fn answer(mut socket: TcpStream, state: Arc<Mutex<State>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (mode, set, max_age) = {
        let mut s = lock(&state);
        *s.fetches.entry(path.clone()).or_default() += 1;
        (s.mode.clone(), s.sets.get(&path).cloned(), s.max_age)
    };
    let (status, body, cache) = match (mode, set) {
        (Mode::Stall, _) => {
            tokio::time::sleep(Duration::from_secs(120)).await;
            return;
        }
        (Mode::Status(code), _) => (code, format!("status {code}"), None),
        (Mode::Garbage, _) => (200, "<html>we moved</html>".to_owned(), None),
        (Mode::Serve, Some(set)) => (200, set.to_string(), max_age),
        (Mode::Serve, None) => (404, "no such set".to_owned(), None),
    };
    let cache = cache.map(|s| format!("Cache-Control: public, max-age={s}\r\n")).unwrap_or_default();
    let response = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{cache}Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = socket.write_all(response.as_bytes()).await;
    let _ = socket.shutdown().await;
}

impl KeyServer {
    /// Starts serving on a free loopback port, in the current tokio runtime.
    pub async fn start() -> Result<KeyServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(Mutex::new(State {
            sets: HashMap::new(),
            mode: Mode::Serve,
            max_age: None,
            fetches: HashMap::new(),
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(answer(socket, shared.clone()));
            }
        });
        Ok(KeyServer { port, state, task })
    }

    /// The URL of the set at `path` (e.g. `/a/jwks.json`).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Serves `set` at `path` from now on (a rotation, when it replaces another).
    pub fn set(&self, path: &str, set: Value) {
        lock(&self.state).sets.insert(path.to_owned(), set);
    }

    /// Answers every request this way from now on.
    pub fn mode(&self, mode: Mode) {
        lock(&self.state).mode = mode;
    }

    /// The `max-age` sent with sets (none by default).
    pub fn max_age(&self, secs: Option<u64>) {
        lock(&self.state).max_age = secs;
    }

    /// Requests received for `path` so far.
    pub fn fetches(&self, path: &str) -> u64 {
        lock(&self.state).fetches.get(path).copied().unwrap_or(0)
    }
}

impl Drop for KeyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
