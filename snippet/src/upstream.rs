//! The upstream WebSocket, owned by the request context that opened it. Only the owner's
//! tasks and listeners touch the socket; everyone else queues frames in the mux and wakes
//! the owner's pump (RUNTIME.md §2, §4). The mux decides who should own it; during a
//! hand-over two upstreams live side by side, each pumped by its own owner.

use std::cell::Cell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;

use mux_core::{Gen, GenState, OwnerKind, StreamId};
use wasm_bindgen::prelude::*;

use crate::executor;
use crate::js::{self, Listeners};
use crate::state::{self, Backend};

/// Called by every submit (client message, upgrade, HTTP request). Checks the watchdog
/// and any overdue drain, then makes sure an upstream exists or is being opened: if none
/// is, or the owner should change, the *current* context opens one and owns it.
/// Concurrent first requests share one attempt (the mux is `Connecting` from the first on).
/// While a failed upstream backs off, the first caller arms a retry timer in its own context.
///
/// `ctx` is the caller's ExecutionContext when it is an HTTP request: an owner task started
/// there holds `ctx.waitUntil` so the context outlives the response.
pub fn ensure(kind: OwnerKind, stream: Option<StreamId>, ctx: Option<&JsValue>) {
    enum Next {
        Connect(Gen, Backend),
        Retry(u64),
        Nothing,
    }
    let now = js::now();
    let mut alarms = Vec::new();
    let next = state::with(|s| {
        if s.mux.watchdog_expired(now) {
            let why = format!("watchdog: queued frames saw no send for {} ms", s.mux.config().watchdog_ms);
            let gen = s.mux.current_gen();
            s.mux.count_watchdog_trip();
            s.mux.count_error();
            s.mux.upstream_down(gen, &why, now);
            alarms.push(why);
        }
        alarms.extend(s.mux.check_stuck(now).into_iter().map(str::to_owned));
        if s.mux.can_connect(now) {
            return Next::Connect(s.mux.upstream_connecting(kind, stream, now), s.backend.clone());
        }
        if let Some(gen) = s.mux.begin_handover(kind, stream, now) {
            return Next::Connect(gen, s.backend.clone());
        }
        match s.mux.next_connect_at() {
            Some(at) if !s.retry_scheduled => {
                s.retry_scheduled = true;
                Next::Retry(at.saturating_sub(now))
            }
            _ => Next::Nothing,
        }
    });
    for a in alarms {
        state::with(|s| s.last_error = Some(a.clone()));
        js::log_error(&a);
    }
    match next {
        Next::Connect(gen, backend) => {
            let keep_alive = ctx.and_then(js::keep_alive);
            executor::spawn(async move {
                run_owner(gen, backend).await;
                drop(keep_alive);
            })
        }
        Next::Retry(delay) => executor::spawn(async move {
            js::sleep(delay as f64).await;
            state::with(|s| s.retry_scheduled = false);
            // Only if someone still needs the upstream: a stream is open.
            if state::with(|s| s.mux.open_streams() != (0, 0)) {
                ensure(kind, stream, None);
            }
        }),
        Next::Nothing => {}
    }
    state::flush();
}

/// Upstream `gen` is gone (closed, failed, refused). Streams that depended on it learn
/// their fate; logged and counted unless it was already retired.
fn down(gen: Gen, why: &str) {
    let mattered = state::with(|s| {
        let mattered = s.mux.gen_state(gen) != GenState::Retired;
        if mattered {
            s.mux.upstream_down(gen, why, js::now());
            s.mux.count_error();
            s.last_error = Some(why.to_owned());
        }
        mattered
    });
    if mattered {
        js::log_error(why);
    }
    state::flush();
}

fn listen(ws: &web_sys::WebSocket, gen: Gen, closed: Rc<Cell<bool>>) -> Listeners {
    let on_message = Closure::new(move |e: web_sys::MessageEvent| {
        let bytes = match js::message_data(&e, protocol::MAX_MESSAGE_BYTES) {
            Ok((_, bytes)) => bytes,
            Err(n) => return down(gen, &format!("backend sent {n} bytes, over the protocol's message limit")),
        };
        let (result, session_errors) = state::with(|s| {
            let result = s.mux.handle_upstream_message(gen, &bytes, js::now());
            let errors = s.mux.take_session_errors();
            if let Some(last) = errors.last() {
                s.last_error = Some(last.clone());
            }
            (result, errors)
        });
        for e in &session_errors {
            js::log_error(e);
        }
        state::flush();
        if let Err(err) = result {
            // A malformed message poisons the whole session: nothing after it can be
            // trusted to be framed right. The pump then closes the socket (1002).
            down(gen, &format!("malformed message from backend: {err}"));
        }
    });
    let closed_c = closed.clone();
    let on_close = Closure::new(move |e: web_sys::CloseEvent| {
        closed_c.set(true);
        down(gen, &format!("backend closed the connection ({} {})", e.code(), e.reason()));
    });
    let on_error = Closure::new(move |_e: web_sys::Event| {
        closed.set(true);
        down(gen, "upstream WebSocket error");
    });
    Listeners::attach(ws, on_message, on_close, on_error)
}

/// The owner task of upstream `gen`: connect, then send whatever the mux has for it until
/// it is retired (handed over: close 1000) or lost. Runs only in the owner's context.
async fn run_owner(gen: Gen, backend: Backend) {
    if backend.url.is_empty() {
        down(gen, "BACKEND_URL is not configured");
        return;
    }
    let ws = match js::connect_websocket(&backend.url, &backend.token).await {
        Ok(ws) => ws,
        Err(e) => {
            down(gen, &format!("cannot connect to backend: {e}"));
            return;
        }
    };
    let closed = Rc::new(Cell::new(false));
    let _listeners = listen(&ws, gen, closed.clone());
    if !state::with(|s| s.mux.upstream_up(gen, js::now())) {
        js::close(&ws, 1000, "superseded");
        return;
    }
    state::flush();
    loop {
        // Send everything queued for this upstream, one batch per WebSocket message.
        while let Some(batch) = state::with(|s| s.mux.poll_transmit(gen, js::now())) {
            if let Err(e) = js::send_binary(&ws, &batch) {
                // Includes "Cannot perform I/O on behalf of a different request": fatal
                // for this upstream (RUNTIME.md §4).
                down(gen, &format!("send failed: {}", js::describe(&e)));
                js::close(&ws, 1011, "send failed");
                return;
            }
        }
        state::flush();
        match state::with(|s| s.mux.gen_state(gen)) {
            _ if closed.get() => return,
            // Handed over, or ended by the mux (a session-level error): close it cleanly.
            GenState::Retired => {
                js::close(&ws, 1000, "retired");
                return;
            }
            GenState::Current | GenState::Draining | GenState::Connecting => {}
        }
        // Sleep until a producer (any context) or a state change wakes the pump.
        let mut registered = false;
        poll_fn(|cx| {
            if registered {
                return Poll::Ready(());
            }
            registered = true;
            let ready = state::with(|s| {
                let ready = s.mux.wants_transmit_on(gen) || s.mux.gen_state(gen) == GenState::Retired;
                if !ready {
                    s.pump_wakers.insert(gen, cx.waker().clone());
                }
                ready
            });
            if ready {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}
