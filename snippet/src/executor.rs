//! A pinned executor: every task is polled only from a promise reaction of the request
//! context that spawned it (RUNTIME.md §2).
//!
//! * Each task owns a wake promise made with `Promise.withResolvers()` *while its own
//!   context is current* (inside its own poll). Its `.then` reaction polls the task.
//! * A [`Waker`] from any context only calls that promise's `resolve`; workerd
//!   (`handle_cross_request_promise_resolution`) runs the reaction in the creating
//!   context. So a wake from request B never polls request A's future in B's context.
//! * A wake during the task's own poll only sets a flag; the task re-arms and schedules
//!   itself through a fresh promise, so *every* poll after the first is a reaction.
//!
//! Inside tasks, ordinary Rust wakers (`JsFuture`, our own queues) are therefore safe.
//! Never use `wasm_bindgen_futures::spawn_local` / `future_to_promise` in this crate:
//! their single global queue polls every woken task in whichever context is current.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use mux_core::idmap::{id_map, IdMap};
use wasm_bindgen::prelude::*;

use crate::js::{with_resolvers, Resolvers};

type TaskFuture = Pin<Box<dyn Future<Output = ()>>>;

/// Names a spawned task (to [`cancel`] it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskId(u32);

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting; `resolvers` holds the wake promise.
    Armed,
    /// The wake promise was resolved; its reaction will poll the task.
    Scheduled,
    /// Being polled right now.
    Polling,
    /// Woken while being polled: poll again (through a new promise) once this poll ends.
    PollingWoken,
}

struct Task {
    future: Option<TaskFuture>,
    state: State,
    resolvers: Option<Resolvers>,
    /// Made once per task: a poll hands out clones (no allocation per poll).
    waker: Waker,
}

thread_local! {
    static TASKS: RefCell<IdMap<u32, Task>> = RefCell::new(id_map());
    static NEXT_ID: Cell<u32> = const { Cell::new(1) };
    static WAKE_PROMISES: Cell<u64> = const { Cell::new(0) };
    /// The task being polled right now.
    static CURRENT: Cell<Option<u32>> = const { Cell::new(None) };
    /// One reaction function for every task: the promise resolves with the task id.
    static RUN: Closure<dyn FnMut(JsValue)> = Closure::new(|id: JsValue| {
        if let Some(id) = id.as_f64() {
            run(id as u32);
        }
    });
}

/// Wake promises created so far (for `/__stats` and the context-loss regression test).
pub fn wake_promises_created() -> u64 {
    WAKE_PROMISES.with(Cell::get)
}

/// Tasks alive right now.
pub fn live_tasks() -> usize {
    TASKS.with(|t| t.borrow().len())
}

/// Makes a fresh wake promise in the current context and attaches the reaction.
fn arm() -> Resolvers {
    let resolvers = with_resolvers();
    RUN.with(|run| {
        let _ = resolvers.promise().then(run);
    });
    WAKE_PROMISES.with(|c| c.set(c.get() + 1));
    resolvers
}

/// Spawns `future` as a task pinned to the *current* request context. Its first poll
/// happens in a microtask of this context.
pub fn spawn(future: impl Future<Output = ()> + 'static) -> TaskId {
    let id = NEXT_ID.with(|n| {
        let id = n.get();
        n.set(id.wrapping_add(1).max(1));
        id
    });
    let resolvers = arm();
    TASKS.with(|t| {
        let waker = Waker::from(Arc::new(TaskWaker(id)));
        t.borrow_mut()
            .insert(id, Task { future: Some(Box::pin(future)), state: State::Scheduled, resolvers: None, waker })
    });
    resolvers.resolve(&JsValue::from(id));
    TaskId(id)
}

/// The task being polled now (to [`cancel`] it later from another context), if any.
pub fn current() -> Option<TaskId> {
    CURRENT.with(Cell::get).map(TaskId)
}

/// Drops a task whose context is gone (it would never be polled again, and would stay in
/// the table for the life of the isolate). Dropping touches no I/O object's methods: it
/// only releases references, which any context may do.
pub fn cancel(task: TaskId) {
    let removed = TASKS.with(|t| t.borrow_mut().remove(&task.0));
    // Dropped outside the borrow: a drop may wake other tasks.
    drop(removed);
}

/// Wakes `task` so that it is polled in the *current* context, which must be the task's
/// own (a listener of its socket, or the task itself). A task already woken from another
/// context waits for that resolution to be delivered, and workerd delivers it only while
/// the task's context lives: a cross-context resolution is not pending I/O (RUNTIME.md §3).
/// A client's context may end with the close event that detaches it, so a wake still in
/// flight from another context would never arrive and the task would stay for good (the
/// soak found 4–30 such tasks at rest). A fresh promise made and resolved here is polled
/// as a microtask of this event; the late one then finds the task already polled.
pub fn wake_here(task: TaskId) {
    let id = task.0;
    let rearm = TASKS.with(|t| {
        let mut tasks = t.borrow_mut();
        let task = tasks.get_mut(&id)?;
        match task.state {
            State::Armed | State::Scheduled => {
                task.state = State::Scheduled;
                task.resolvers = None;
                Some(())
            }
            State::Polling => {
                task.state = State::PollingWoken;
                None
            }
            State::PollingWoken => None,
        }
    });
    if rearm.is_some() {
        arm().resolve(&JsValue::from(id));
    }
}

fn wake(id: u32) {
    let to_resolve = TASKS.with(|t| {
        let mut tasks = t.borrow_mut();
        let task = tasks.get_mut(&id)?;
        match task.state {
            State::Armed => {
                task.state = State::Scheduled;
                task.resolvers.take()
            }
            State::Polling => {
                task.state = State::PollingWoken;
                None
            }
            State::Scheduled | State::PollingWoken => None,
        }
    });
    if let Some(r) = to_resolve {
        r.resolve(&JsValue::from(id));
    }
}

fn run(id: u32) {
    let future = TASKS.with(|t| {
        let mut tasks = t.borrow_mut();
        let task = tasks.get_mut(&id)?;
        if task.state != State::Scheduled {
            return None;
        }
        task.state = State::Polling;
        Some((task.future.take()?, task.waker.clone()))
    });
    let Some((mut future, waker)) = future else { return };
    let outer = CURRENT.with(|c| c.replace(Some(id)));
    // One poll is one turn: it reads the clock once (`js::turn`).
    let poll = crate::js::turn(|| future.as_mut().poll(&mut Context::from_waker(&waker)));
    CURRENT.with(|c| c.set(outer));
    match poll {
        Poll::Ready(()) => {
            TASKS.with(|t| t.borrow_mut().remove(&id));
            // Dropped outside any borrow: a drop may wake other tasks.
            drop(future);
        }
        Poll::Pending => {
            let resolvers = arm();
            let reschedule = TASKS.with(|t| {
                let mut tasks = t.borrow_mut();
                let task = tasks.get_mut(&id)?;
                task.future = Some(future);
                if task.state == State::PollingWoken {
                    task.state = State::Scheduled;
                    Some(resolvers)
                } else {
                    task.state = State::Armed;
                    task.resolvers = Some(resolvers);
                    None
                }
            });
            if let Some(r) = reschedule {
                r.resolve(&JsValue::from(id));
            }
        }
    }
}

/// A waker carries only the task id; waking looks the task up in this thread's table.
struct TaskWaker(u32);

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        wake(self.0);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        wake(self.0);
    }
}

/// Returns `Pending` once after waking itself: a yield through a wake promise.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}
