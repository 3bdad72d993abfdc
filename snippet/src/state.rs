//! The isolate's shared state: plain data only, no I/O objects (RUNTIME.md §2).
//! Every access goes through [`with`], a short `RefCell` borrow that never spans an
//! `.await` and never calls back into Rust code that could borrow again.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use mux_core::auth::AuthConfig;
use mux_core::backend::Reach;
use mux_core::idmap::{id_map, IdMap};
use mux_core::keeper::{Duty, Holder, Timekeeper};
use mux_core::log::Line;
use mux_core::{Action, Config, Delivery, Here, Mux, StreamId, UpstreamId};
use wasm_bindgen::JsValue;

use crate::executor::{self, TaskId};
use crate::js;
use crate::upstream;

/// Where the backends are, from the wrangler vars and bindings.
#[derive(Debug, Clone)]
pub struct Backend {
    /// How they are reached (`BACKEND_URL` or `BACKEND_BINDING`).
    pub reach: Reach,
    /// The Durable Object namespace named by `BACKEND_BINDING` (then `Via::Binding`).
    pub via: js::Via,
    /// Bearer token for them (optional through a binding).
    pub token: String,
}

impl Default for Backend {
    fn default() -> Self {
        Backend { reach: Reach::Url(String::new()), via: js::Via::Fetch, token: String::new() }
    }
}

/// Everything the isolate shares between request contexts.
pub struct Shared {
    /// The multiplexer core: every decision and every counter.
    pub mux: Mux,
    /// Wakers of the tasks that deliver to each stream's client.
    pub stream_wakers: IdMap<StreamId, Waker>,
    /// Wakers of the pumps, one per live upstream connection.
    pub pump_wakers: IdMap<UpstreamId, Waker>,
    /// The pumps' tasks, so an abandoned one can be dropped.
    pub pump_tasks: IdMap<UpstreamId, TaskId>,
    /// The client streams' delivery tasks, so a close can have one polled in its own
    /// context ([`executor::wake_here`]).
    pub client_tasks: IdMap<StreamId, TaskId>,
    /// The tasks of HTTP requests waiting on a stream, so one whose context died can be
    /// dropped ([`Action::AbandonRequest`]).
    pub request_tasks: IdMap<StreamId, TaskId>,
    /// Which living context holds the core's one timer.
    pub keeper: Timekeeper,
    /// The task wakers of the timer's possible holders (one per task, kept while it lives).
    pub holder_wakers: IdMap<Holder, Waker>,
    /// Scheduled rounds started (names each round's [`Holder::Round`]).
    pub rounds: u32,
    /// The core's error count when the last round's summary was logged (its next summary
    /// says how many came since).
    pub errors_at_last_round: u64,
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
}

impl Shared {
    /// The waker a [`Duty`] asks for.
    fn waker_for(&self, duty: Duty) -> Option<Waker> {
        match duty {
            Duty::Wake(h) => self.holder_wakers.get(&h).cloned(),
            Duty::Nothing => None,
        }
    }
}

thread_local! {
    static SHARED: RefCell<Shared> = RefCell::new(Shared {
        mux: Mux::new(Config::default()),
        stream_wakers: id_map(),
        pump_wakers: id_map(),
        pump_tasks: id_map(),
        client_tasks: id_map(),
        request_tasks: id_map(),
        keeper: Timekeeper::default(),
        holder_wakers: id_map(),
        rounds: 0,
        errors_at_last_round: 0,
        backend: Backend::default(),
        door: Rc::new(AuthConfig::default()),
        isolate_id: js::random_uuid(),
        started_at: js::now_ms(),
        configured: false,
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

/// Carries out what the core decided, after any input, in the current context `here`:
/// deadlines that passed are handled, upstreams the core wants are opened here (this
/// context owns them; `ctx`, an HTTP request's ExecutionContext, keeps it alive for them),
/// waiting tasks are woken (a wake only resolves the task's own promise), abandoned tasks
/// are dropped, and the [`Timekeeper`] makes sure a living context times the next
/// deadline — and, when an upstream wants a client's context as its owner and this
/// context is not one that may be, that a client's context settles soon
/// ([`Mux::owner_wanted`]).
pub fn settle(here: Here, ctx: Option<&JsValue>) {
    let now = js::now();
    let mut connects = Vec::new();
    let mut wakers = Vec::new();
    let mut abandoned = Vec::new();
    let mut logs = Vec::new();
    with(|s| {
        if s.mux.poll_timeout().is_some_and(|t| t <= now) {
            s.mux.handle_timeout(now);
        }
        while let Some(action) = s.mux.poll_action(here, now) {
            match action {
                Action::Connect { upstream, tenant } => {
                    let url = s.backend.reach.mux_url(&tenant);
                    let target = js::Target { via: s.backend.via.clone(), tenant, url };
                    connects.push((upstream, target, s.backend.token.clone()));
                }
                Action::WakeUpstream(id) => wakers.extend(s.pump_wakers.remove(&id)),
                Action::WakeStream(id) => wakers.extend(s.stream_wakers.remove(&id)),
                Action::Abandon(id) => {
                    s.pump_wakers.remove(&id);
                    abandoned.extend(s.pump_tasks.remove(&id));
                    // Its task is dropped below; `decide` names the next keeper.
                    s.holder_wakers.remove(&Holder::Pump(id));
                    let _ = s.keeper.leave(Holder::Pump(id), now);
                }
                Action::AbandonRequest(id) => {
                    s.stream_wakers.remove(&id);
                    abandoned.extend(s.request_tasks.remove(&id));
                }
                Action::Log { tenant, msg } => logs.push(Line::error(msg).str("tenant", &tenant)),
            }
        }
        // A client's context is the preferred owner: any other context that settles asks
        // for one when an upstream wants an owner (O(1) while no client is attached).
        let wanted = !matches!(here, Here::Client(_)) || !s.mux.can_own(here);
        let wanted = wanted && s.mux.owner_wanted(now);
        let duty = s.keeper.decide(s.mux.poll_timeout(), wanted, now);
        wakers.extend(s.waker_for(duty));
    });
    for line in logs {
        js::log(line);
    }
    for (id, target, token) in connects {
        let keep_alive = ctx.and_then(js::keep_alive);
        let task = executor::spawn(upstream::pump(id, target, token, here, keep_alive));
        with(|s| s.pump_tasks.insert(id, task));
    }
    for task in abandoned {
        executor::cancel(task);
    }
    for w in wakers {
        w.wake();
    }
}

/// Runs `work` as timer holder `me`, a task of the context `here`: whenever the
/// [`Timekeeper`] names it keeper, it also sleeps until the core's next deadline, in this
/// context, and settles when that comes. `ctx` is the context's ExecutionContext where it
/// may own what it opens (a scheduled round: its upstreams hold `waitUntil`). It leaves
/// the post when `work` ends or the task is dropped.
pub async fn holding<T>(me: Holder, here: Here, ctx: Option<JsValue>, work: impl Future<Output = T>) -> T {
    let _membership = Membership::join(me);
    let mut work = pin!(work);
    let mut timer: Option<(u64, js::Sleep)> = None;
    let mut registered = false;
    poll_fn(|cx| loop {
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        let at = with(|s| {
            if !registered {
                s.holder_wakers.insert(me, cx.waker().clone());
                registered = true;
            }
            let Shared { keeper, mux, .. } = s;
            keeper.poll(me, js::now, || mux.poll_timeout())
        });
        let Some(at) = at else {
            timer = None;
            return Poll::Pending;
        };
        match &timer {
            // A timer already set that fires no later than asked stays (`keep_armed`).
            Some((t, _)) if *t <= at => {
                let t = *t;
                with(|s| s.keeper.keep_armed(me, t));
            }
            _ => timer = Some((at, js::sleep(at.saturating_sub(js::now()) as f64 + 1.0))),
        }
        let fired = timer.as_mut().is_some_and(|(_, t)| Pin::new(t).poll(cx).is_ready());
        if !fired {
            return Poll::Pending;
        }
        timer = None;
        with(|s| s.keeper.fired(me));
        settle(here, ctx.as_ref());
    })
    .await
}

/// A holder's place among the [`Timekeeper`]'s candidates, for as long as its task lives.
struct Membership(Holder);

impl Membership {
    fn join(me: Holder) -> Membership {
        with(|s| s.keeper.join(me));
        Membership(me)
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        // Dropped when the task ends or is cancelled, never inside a `with` borrow.
        let next = with(|s| {
            s.holder_wakers.remove(&self.0);
            let duty = s.keeper.leave(self.0, js::now());
            s.waker_for(duty)
        });
        if let Some(w) = next {
            w.wake();
        }
    }
}
