//! The isolate's shared state: plain data only, no I/O objects (RUNTIME.md §2).
//! Every access goes through [`with`], a short `RefCell` borrow that never spans an
//! `.await` and never calls back into Rust code that could borrow again.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use mux_core::auth::AuthConfig;
use mux_core::{Config, Delivery, Gen, GenState, Mux, StreamId};

use crate::js;

/// Where the backend is, from the wrangler vars.
#[derive(Debug, Clone, Default)]
pub struct Backend {
    /// The backend's multiplexer endpoint, e.g. `ws://127.0.0.1:8788/db/default/mux`.
    pub url: String,
    /// Bearer token for it.
    pub token: String,
}

/// Everything the isolate shares between request contexts.
pub struct Shared {
    /// The multiplexer core.
    pub mux: Mux,
    /// Wakers of the tasks that deliver to each stream's client.
    pub stream_wakers: HashMap<StreamId, Waker>,
    /// Wakers of the owners' pump tasks, one per live upstream generation.
    pub pump_wakers: HashMap<Gen, Waker>,
    /// Backend location (set from the env on every request).
    pub backend: Backend,
    /// The front door's configuration (applied once, with the mux config).
    pub door: Rc<AuthConfig>,
    /// The tenant this snippet's upstream serves (from `BACKEND_URL`).
    pub tenant: String,
    /// Random id of this isolate.
    pub isolate_id: String,
    /// When this isolate's state was created (ms since epoch).
    pub started_at: f64,
    /// Every request this isolate handled.
    pub requests_handled: u64,
    /// Client WebSocket upgrades accepted.
    pub ws_upgrades: u64,
    /// HTTP requests sent straight to the backend because no upstream could carry them.
    pub fallbacks: u64,
    /// Whether the vars were applied to the mux config.
    pub configured: bool,
    /// A reconnect timer is pending in some context.
    pub retry_scheduled: bool,
    /// Last connect error, for `/__stats`.
    pub last_error: Option<String>,
}

thread_local! {
    static SHARED: RefCell<Shared> = RefCell::new(Shared {
        mux: Mux::new(Config::default()),
        stream_wakers: HashMap::new(),
        pump_wakers: HashMap::new(),
        backend: Backend::default(),
        door: Rc::new(AuthConfig::default()),
        tenant: String::new(),
        isolate_id: js::random_uuid(),
        started_at: js::now_ms(),
        requests_handled: 0,
        ws_upgrades: 0,
        fallbacks: 0,
        configured: false,
        retry_scheduled: false,
        last_error: None,
    });
}

/// Runs `f` with the shared state borrowed. Keep `f` short and free of awaits and wakes.
pub fn with<R>(f: impl FnOnce(&mut Shared) -> R) -> R {
    SHARED.with(|s| f(&mut s.borrow_mut()))
}

/// The next delivery for stream `id`, `Ready(None)` once the stream is gone, or `Pending`
/// with the caller's waker parked until [`flush`] finds something for it.
pub fn poll_delivery(id: StreamId, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
    with(|s| match s.mux.poll_delivery(id) {
        Some(d) => Poll::Ready(Some(d)),
        None if !s.mux.is_open(id) => Poll::Ready(None),
        None => {
            s.stream_wakers.insert(id, cx.waker().clone());
            Poll::Pending
        }
    })
}

/// Wakes whoever has something to do after the mux changed: the delivery task of every
/// stream that received something, and the owner's pump if frames wait to be sent.
/// Wakers are called after the borrow ends; a wake only resolves the sleeper's own promise.
pub fn flush() {
    let wakers: Vec<Waker> = with(|s| {
        let mut wakers: Vec<Waker> =
            s.mux.take_woken().into_iter().filter_map(|id| s.stream_wakers.remove(&id)).collect();
        let pumps: Vec<Gen> = s.pump_wakers.keys().copied().collect();
        for gen in pumps {
            if s.mux.wants_transmit_on(gen) || s.mux.gen_state(gen) == GenState::Retired {
                wakers.extend(s.pump_wakers.remove(&gen));
            }
        }
        wakers
    });
    for w in wakers {
        w.wake();
    }
}
