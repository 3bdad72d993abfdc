//! The isolate's shared state: plain data only, no I/O objects (RUNTIME.md §2).
//! Every access goes through [`with`], a short `RefCell` borrow that never spans an
//! `.await` and never calls back into Rust code that could borrow again.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use mux_core::auth::AuthConfig;
use mux_core::{Action, Config, Delivery, Here, Mux, StreamId, UpstreamId};
use wasm_bindgen::JsValue;

use crate::executor::{self, TaskId};
use crate::js;
use crate::upstream;

/// Where the backends are, from the wrangler vars.
#[derive(Debug, Clone, Default)]
pub struct Backend {
    /// The upstream URL template, with `{tenant}`, e.g. `wss://b.example/db/{tenant}/mux`.
    pub template: String,
    /// Bearer token for it.
    pub token: String,
}

/// Everything the isolate shares between request contexts.
pub struct Shared {
    /// The multiplexer core: every decision and every counter.
    pub mux: Mux,
    /// Wakers of the tasks that deliver to each stream's client.
    pub stream_wakers: HashMap<StreamId, Waker>,
    /// Wakers of the pumps, one per live upstream connection.
    pub pump_wakers: HashMap<UpstreamId, Waker>,
    /// The pumps' tasks, so an abandoned one can be dropped.
    pub pump_tasks: HashMap<UpstreamId, TaskId>,
    /// Backend location (set from the env on every request).
    pub backend: Backend,
    /// The front door's configuration (applied once, with the mux config).
    pub door: Rc<AuthConfig>,
    /// Random id of this isolate.
    pub isolate_id: String,
    /// When this isolate's state was created (ms since epoch).
    pub started_at: f64,
    /// Whether the vars were applied to the mux config.
    pub configured: bool,
    /// The pump whose context keeps the core's timer: a pump lives as long as its
    /// upstream's socket keeps its context alive, so its timer fires even at rest.
    pub timekeeper: Option<UpstreamId>,
    /// The armed timer: when it fires, and its token (a newer timer supersedes it).
    pub timer: Option<(u64, u64)>,
    /// Tokens handed out to timers.
    pub timer_tokens: u64,
    /// The task of the timer armed outside a pump, if any: dropped when superseded or
    /// when nothing is left to time, so no sleeper outlives its purpose.
    pub sleeper: Option<TaskId>,
}

thread_local! {
    static SHARED: RefCell<Shared> = RefCell::new(Shared {
        mux: Mux::new(Config::default()),
        stream_wakers: HashMap::new(),
        pump_wakers: HashMap::new(),
        pump_tasks: HashMap::new(),
        backend: Backend::default(),
        door: Rc::new(AuthConfig::default()),
        isolate_id: js::random_uuid(),
        started_at: js::now_ms(),
        configured: false,
        timekeeper: None,
        timer: None,
        timer_tokens: 0,
        sleeper: None,
    });
}

/// Runs `f` with the shared state borrowed. Keep `f` short and free of awaits and wakes.
pub fn with<R>(f: impl FnOnce(&mut Shared) -> R) -> R {
    SHARED.with(|s| f(&mut s.borrow_mut()))
}

/// The next delivery for stream `id`, `Ready(None)` once the stream is gone, or `Pending`
/// with the caller's waker parked until [`settle`] finds something for it.
pub fn poll_delivery(id: StreamId, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
    let now = js::now();
    with(|s| match s.mux.poll_delivery(id, now) {
        Some(d) => Poll::Ready(Some(d)),
        None if !s.mux.is_open(id) => Poll::Ready(None),
        None => {
            s.stream_wakers.insert(id, cx.waker().clone());
            Poll::Pending
        }
    })
}

/// A timer more than this late is presumed to have died with its context (production
/// ends a context ~30 s after its response): the next caller arms a new one.
pub const TIMER_STALE_MS: u64 = 1_000;

/// Carries out what the core decided, after any input, in the current context `here`:
/// deadlines that passed are handled, upstreams the core wants are opened here (this
/// context owns them; `ctx`, an HTTP request's ExecutionContext, keeps it alive for them),
/// sleepers are woken (a wake only resolves the sleeper's own promise), abandoned pumps
/// are dropped, and the timer is armed for the next deadline: by the timekeeping pump
/// (see [`Shared::timekeeper`]) when there is one, else here.
pub fn settle(here: Here, ctx: Option<&JsValue>) {
    let now = js::now();
    let mut connects = Vec::new();
    let mut wakers = Vec::new();
    let mut abandoned = Vec::new();
    let mut logs = Vec::new();
    let mut stale_sleeper = None;
    let rearm = with(|s| {
        if s.mux.poll_timeout().is_some_and(|t| t <= now) {
            s.mux.handle_timeout(now);
        }
        while let Some(action) = s.mux.poll_action(here, now) {
            match action {
                Action::Connect { upstream, tenant } => {
                    let url = mux_core::tenant::backend_url(&s.backend.template, &tenant);
                    connects.push((upstream, url, s.backend.token.clone()));
                }
                Action::WakeUpstream(id) => wakers.extend(s.pump_wakers.remove(&id)),
                Action::WakeStream(id) => wakers.extend(s.stream_wakers.remove(&id)),
                Action::Abandon(id) => {
                    s.pump_wakers.remove(&id);
                    abandoned.extend(s.pump_tasks.remove(&id));
                }
                Action::Log(line) => logs.push(line),
            }
        }
        let Some(next) = s.mux.poll_timeout() else {
            stale_sleeper = s.sleeper.take();
            return None;
        };
        let armed = s.timer.is_some_and(|(at, _)| at <= next && now <= at.saturating_add(TIMER_STALE_MS));
        if armed {
            return None;
        }
        if s.timekeeper.is_some() && s.timer.is_some_and(|(at, _)| now > at.saturating_add(TIMER_STALE_MS)) {
            // Its context is gone; another pump, or a timer here, takes over.
            s.timekeeper = None;
        }
        // A pump keeps the timer when there is one: the keeper re-arms for the earlier
        // deadline, or a parked pump is made the keeper.
        let keeper = s.timekeeper.or_else(|| s.pump_wakers.keys().next().copied());
        if let Some(keeper) = keeper {
            s.timekeeper = Some(keeper);
            s.timer = Some((next, 0));
            stale_sleeper = s.sleeper.take();
            wakers.extend(s.pump_wakers.remove(&keeper));
            return None;
        }
        if here == Here::Request {
            // An HTTP request's context ends with its response, and a timer there with
            // it; it has its own timer for its own deadline. The next caller arms one.
            return None;
        }
        s.timer_tokens += 1;
        s.timer = Some((next, s.timer_tokens));
        stale_sleeper = s.sleeper.take();
        Some((next, s.timer_tokens))
    });
    for line in logs {
        js::log_error(&line);
    }
    for (id, url, token) in connects {
        let keep_alive = ctx.and_then(js::keep_alive);
        let task = executor::spawn(upstream::pump(id, url, token, here, keep_alive));
        with(|s| s.pump_tasks.insert(id, task));
    }
    for task in abandoned.into_iter().chain(stale_sleeper) {
        executor::cancel(task);
    }
    for w in wakers {
        w.wake();
    }
    if let Some((at, token)) = rearm {
        let task = executor::spawn(async move {
            js::sleep(at.saturating_sub(js::now()) as f64 + 1.0).await;
            let mine = with(|s| {
                let mine = s.timer.is_some_and(|(_, t)| t == token);
                if mine {
                    s.timer = None;
                    s.sleeper = None;
                }
                mine
            });
            if mine {
                // Whoever armed the timer may be gone (a client that left cannot own an
                // upstream); a timer's context owns what it opens as a bounded owner.
                settle(Here::Background, None);
            }
        });
        with(|s| s.sleeper = Some(task));
    }
}
