//! Remote key sets (`AUTH_JWKS_URL`): the glue of `mux_core::auth::remote`, which
//! decides who fetches and who waits.
//!
//! The context told to fetch does the fetch itself — its own I/O, in its own context
//! (RUNTIME.md §1) — hands the result to the core, and wakes the waiters the core names.
//! A waiter's wake is its task's waker, which only resolves a promise the waiter's task
//! made itself with `Promise.withResolvers()` (`executor`), so the waiter runs on in its
//! own context (RUNTIME.md §2); contexts share only the core's plain data. Every waiter
//! also sleeps on a timer of its own until the fetch's deadline: a waiting request needs
//! pending I/O of its own (RUNTIME.md §3), and a fetcher whose context died wakes nobody.
//! What was measured of it: RUNTIME.md §18.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};

use mux_core::auth::remote::{Fetched, KeySets, Limits, SetCounts, Step, WaiterId, MAX_KEY_SET_BYTES};
use mux_core::auth::{Alg, AuthError, Jwk};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::js;

thread_local! {
    /// The isolate's remote sets: plain data, shared by every context.
    static SETS: RefCell<KeySets> = RefCell::new(KeySets::new(&[], Limits::default()));
    /// The wakers of waiting tasks, by the core's name for them (a list: few wait at once,
    /// and a map type of its own costs ~1.7 KB of wasm).
    static WAITERS: RefCell<Vec<(WaiterId, Waker)>> = const { RefCell::new(Vec::new()) };
}

fn with_sets<R>(f: impl FnOnce(&mut KeySets) -> R) -> R {
    SETS.with(|s| f(&mut s.borrow_mut()))
}

/// Sets up the isolate's sets, once, when the vars are applied.
pub fn configure(urls: &[String], limits: Limits) {
    with_sets(|s| *s = KeySets::new(urls, limits));
}

/// Fetch counts over every set (for `/__stats`).
pub fn totals() -> SetCounts {
    with_sets(|s| s.totals())
}

/// Whether remote set `set` still has keys it may serve now (fresh or within the stale
/// window).
pub fn usable(set: usize) -> bool {
    with_sets(|s| s.usable(set, js::now()))
}

/// Logs what the core has to say and wakes the waiters it names — outside any borrow, as
/// a wake may run code that borrows again.
fn flush() {
    let (logs, wakers) = with_sets(|s| {
        let logs: Vec<String> = std::iter::from_fn(|| s.poll_log()).collect();
        let woken: Vec<WaiterId> = std::iter::from_fn(|| s.poll_wake()).collect();
        let wakers: Vec<Waker> = WAITERS.with(|w| {
            let mut w = w.borrow_mut();
            let (wake, keep): (Vec<_>, Vec<_>) = w.drain(..).partition(|(id, _)| woken.contains(id));
            *w = keep;
            wake.into_iter().map(|(_, waker)| waker).collect()
        });
        (logs, wakers)
    });
    for line in logs {
        js::log(mux_core::log::Line::error(line));
    }
    for w in wakers {
        w.wake();
    }
}

/// The keys of remote set `set` for a token of `alg` and `kid`: served from the cache,
/// fetched by this context, or waited for while another context fetches.
pub async fn keys(set: usize, alg: Alg, kid: Option<&str>) -> Result<Rc<Vec<Jwk>>, AuthError> {
    loop {
        let step = with_sets(|s| s.handle_lookup(set, alg, kid, js::now()));
        flush();
        match step {
            Step::Keys(keys) => return Ok(keys),
            Step::Refuse(e) => return Err(e),
            Step::Fetch { ticket, url, timeout_ms } => {
                let result = fetch(&url, timeout_ms).await;
                let changed = with_sets(|s| s.handle_fetched(ticket, result, js::now()));
                if changed {
                    // A key may have been withdrawn: tokens it vouched for are checked again.
                    crate::auth::forget_verified();
                }
                flush();
            }
            Step::Wait { waiter, until } => wait(waiter, until).await,
        }
    }
}

/// Forgets a waiter whose task ends (answered, or dropped with its context).
struct Waiting(WaiterId);

impl Drop for Waiting {
    fn drop(&mut self) {
        with_sets(|s| s.handle_gone(self.0));
        WAITERS.with(|w| w.borrow_mut().retain(|(id, _)| *id != self.0));
    }
}

/// Waits until the core no longer counts `waiter` as waiting (the fetcher woke it) or
/// until `until`, on a timer of this context.
async fn wait(waiter: WaiterId, until: u64) {
    let _waiting = Waiting(waiter);
    let ms = until.saturating_sub(js::now()) as f64;
    // A wake resolved by another context is not pending I/O of this one; should this
    // timer fire first, the context must still look alive until the wake lands.
    js::hold_for(ms + 2000.0);
    let mut timer = js::sleep(ms);
    poll_fn(|cx| {
        if Pin::new(&mut timer).poll(cx).is_ready() || !with_sets(|s| s.waiting(waiter)) {
            return Poll::Ready(());
        }
        WAITERS.with(|w| {
            let mut w = w.borrow_mut();
            w.retain(|(id, _)| *id != waiter);
            w.push((waiter, cx.waker().clone()));
        });
        Poll::Pending
    })
    .await
}

/// GETs a key set: redirects are not followed (a set that moved is a configuration to
/// fix, not a hop to take on an attacker's word), the body is read up to
/// [`MAX_KEY_SET_BYTES`], and everything ends at `timeout_ms`.
async fn fetch(url: &str, timeout_ms: u64) -> Result<Fetched, String> {
    let abort = js::AbortAfter::new(timeout_ms as f64)?;
    let init = web_sys::RequestInit::new();
    let _ = js_sys::Reflect::set(&init, &"redirect".into(), &"manual".into());
    let _ = js_sys::Reflect::set(&init, &"signal".into(), abort.signal());
    let headers = web_sys::Headers::new().map_err(|e| js::describe(&e))?;
    headers.set("Accept", "application/json").map_err(|e| js::describe(&e))?;
    init.set_headers(&headers);
    let timed_out = |e: JsValue| {
        let what = js::describe(&e);
        if what.to_ascii_lowercase().contains("abort") {
            format!("no answer within {} s", timeout_ms / 1000)
        } else {
            what
        }
    };
    let res = JsFuture::from(js::fetch_with(url, &init)).await.map_err(timed_out)?;
    let res: web_sys::Response = res.dyn_into().map_err(|_| "fetch returned no Response".to_owned())?;
    let header = |name: &str| res.headers().get(name).ok().flatten();
    if res.status() != 200 {
        // Unread, the body would hold the connection; it is small or abandoned either way.
        let _ = js::read_body(&res, 1024).await;
        return Err(match header("Location") {
            Some(_) => format!("HTTP {} (a redirect: give the final URL in AUTH_JWKS_URL)", res.status()),
            None => format!("HTTP {}", res.status()),
        });
    }
    let body = js::read_body(&res, MAX_KEY_SET_BYTES).await.map_err(timed_out)?;
    let body = body.ok_or(format!("more than {MAX_KEY_SET_BYTES} bytes"))?;
    Ok(Fetched { body, cache_control: header("Cache-Control"), age: header("Age") })
}
