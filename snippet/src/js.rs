//! The few JavaScript APIs the snippet needs that web-sys does not describe for workerd.

use js_sys::Promise;
use mux_core::log::{Level, Line};
use protocol::facts::CloseCode;
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use worker::worker_sys::ext::WebSocketExt;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch(url: &str, init: &web_sys::RequestInit) -> Promise;

    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(callback: &JsValue, ms: f64) -> JsValue;
    #[wasm_bindgen(catch, js_name = clearTimeout)]
    fn clear_timeout(handle: &JsValue) -> Result<(), JsValue>;

    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(msg: &str);
    #[wasm_bindgen(js_namespace = console, js_name = warn)]
    fn console_warn(msg: &str);
    #[wasm_bindgen(js_namespace = console, js_name = log)]
    fn console_log(msg: &str);

    #[wasm_bindgen(js_namespace = crypto, js_name = randomUUID)]
    pub fn random_uuid() -> String;

    /// The `{ promise, resolve, reject }` record of `Promise.withResolvers()`: the one way
    /// this crate makes a promise another context may resolve (RUNTIME.md §2 — never
    /// `new Promise(executor)`).
    pub type Resolvers;
    /// `Promise.withResolvers()`, made in the current context.
    #[wasm_bindgen(js_namespace = Promise, js_name = withResolvers)]
    pub fn with_resolvers() -> Resolvers;
    /// The promise.
    #[wasm_bindgen(method, getter)]
    pub fn promise(this: &Resolvers) -> Promise;
    /// Resolves the promise with `value`.
    #[wasm_bindgen(method)]
    pub fn resolve(this: &Resolvers, value: &JsValue);
    /// The `resolve` function itself (to hand to a timer or keep for later).
    #[wasm_bindgen(method, getter, js_name = resolve)]
    fn resolve_fn(this: &Resolvers) -> JsValue;

    /// `AbortController`: ends a fetch (and the reading of its body) from a timer.
    type AbortController;
    #[wasm_bindgen(constructor, catch)]
    fn new() -> Result<AbortController, JsValue>;
    #[wasm_bindgen(method, getter)]
    fn signal(this: &AbortController) -> JsValue;

    /// `Request.body`'s default reader (bound by hand: web-sys's stream types would add
    /// more code than the three calls used here).
    type BodyReader;
    #[wasm_bindgen(method)]
    fn read(this: &BodyReader) -> Promise;
    #[wasm_bindgen(method)]
    fn cancel(this: &BodyReader) -> Promise;
}

/// The body of a request (or a fetched response), read chunk by chunk. `Ok(None)` as
/// soon as more than `limit` bytes arrived: the stream is cancelled there, so a chunked
/// upload (no `Content-Length`) costs at most `limit` bytes of memory and is refused while
/// the client still sends.
pub async fn read_body(req: &JsValue, limit: usize) -> Result<Option<Vec<u8>>, JsValue> {
    let stream = js_sys::Reflect::get(req, &"body".into())?;
    if stream.is_null() || stream.is_undefined() {
        return Ok(Some(Vec::new()));
    }
    let get_reader: js_sys::Function = js_sys::Reflect::get(&stream, &"getReader".into())?.dyn_into()?;
    let reader: BodyReader = get_reader.call0(&stream)?.unchecked_into();
    let mut body = Vec::new();
    loop {
        let chunk = JsFuture::from(reader.read()).await?;
        if js_sys::Reflect::get(&chunk, &"done".into())?.is_truthy() {
            return Ok(Some(body));
        }
        let value: js_sys::Uint8Array = js_sys::Reflect::get(&chunk, &"value".into())?.dyn_into()?;
        let start = body.len();
        if start + value.length() as usize > limit {
            let _ = reader.cancel();
            return Ok(None);
        }
        body.resize(start + value.length() as usize, 0);
        if let Some(dst) = body.get_mut(start..) {
            value.copy_to(dst);
        }
    }
}

/// Writes one line to the workerd log, as one JSON object ([`Line`]): the one way the
/// snippet logs. Every error it handles is logged, so the end-to-end tests can hold the
/// log to "no cross-request I/O error, no hang", and the platform's log search can filter
/// by field. Errors go to `console.error`, so the platform shows them as errors too.
pub fn log(line: Line) {
    let json = line.to_json();
    match line.level() {
        Level::Error => console_error(&json),
        Level::Warn => console_warn(&json),
        Level::Info => console_log(&json),
    }
}

/// Where the current turn stands with the clock ([`turn`]).
#[derive(Clone, Copy)]
enum Turn {
    /// Not inside a turn: every read asks the runtime.
    Outside,
    /// Inside a turn that has not read the clock yet.
    Unread,
    /// Inside a turn that read this.
    At(f64),
}

thread_local! {
    static TURN: Cell<Turn> = const { Cell::new(Turn::Outside) };
}

/// Runs `f` as one turn (a listener's event, a task's poll) that reads the clock at most
/// once. workerd advances `Date.now()` only across I/O, never while code runs (Cloudflare
/// documents it as a Spectre mitigation), so every read inside one synchronous turn
/// returns the same value; and a turn lasts microseconds against the core's deadlines in
/// milliseconds, so a runtime whose clock did move would see no difference either. Each
/// read is a call out of wasm, and a relayed message read it several times (3.5 % of its
/// CPU in the profile, BENCHMARKS.md). A nested turn shares the outer one's reading.
pub fn turn<R>(f: impl FnOnce() -> R) -> R {
    let outer = TURN.with(|t| t.get());
    if matches!(outer, Turn::Outside) {
        TURN.with(|t| t.set(Turn::Unread));
    }
    let out = f();
    if matches!(outer, Turn::Outside) {
        TURN.with(|t| t.set(Turn::Outside));
    }
    out
}

/// Milliseconds since the epoch (workerd advances it only across I/O): read once per
/// [`turn`].
pub fn now_ms() -> f64 {
    TURN.with(|t| match t.get() {
        Turn::At(ms) => ms,
        Turn::Unread => {
            let ms = js_sys::Date::now();
            t.set(Turn::At(ms));
            ms
        }
        Turn::Outside => js_sys::Date::now(),
    })
}

/// [`now_ms`] as the core's clock.
pub fn now() -> u64 {
    now_ms().max(0.0) as u64
}

/// 64 random bits (seeds the reconnect jitter).
pub fn random_u64() -> u64 {
    (js_sys::Math::random() * 2f64.powi(53)) as u64 ^ ((js_sys::Math::random() * 2f64.powi(32)) as u64) << 21
}

/// Registers a timer in the current context that does nothing when it fires: pending I/O
/// of this context for `ms`. A waiting request whose own timer has fired, and whose wake
/// was resolved by another context but not yet delivered to it, would otherwise look hung
/// to workerd and be cancelled (RUNTIME.md §3).
pub fn hold_for(ms: f64) {
    let r = with_resolvers();
    set_timeout(&r.resolve_fn(), ms);
}

/// Sleeps in the current context. The timer is this context's own pending I/O, which
/// also keeps workerd from cancelling a waiting request as hung (RUNTIME.md §3).
///
/// Dropping the sleep clears its timer. Most sleeps end early — a client that leaves long
/// before its token's expiry, a request answered before its deadline, a deadline that
/// moved — and a timer left behind would keep its callback and what that holds alive
/// until it fires, up to a token's lifetime (the soak measured it: RUNTIME.md §15).
/// Hence no `JsFuture` here either: one whose promise never settles is never freed.
///
/// Every sleep's timer calls one callback shared by the isolate, bound to the sleep's
/// slot: a bound function per sleep instead of a wasm-bindgen closure (a JS function, its
/// state and its finalizer entry) per sleep — every client holds one for its token's
/// expiry, so this is per-stream memory.
pub fn sleep(ms: f64) -> Sleep {
    let slot = SLEEPS.with(|s| {
        let Sleeps { slots, next } = &mut *s.borrow_mut();
        let slot = next_free(slots, next);
        slots.insert(slot, Slot::default());
        slot
    });
    let handle = SLEEP_FIRED.with(|f| {
        let bound = f.as_ref().unchecked_ref::<js_sys::Function>().bind1(&JsValue::NULL, &JsValue::from(slot));
        set_timeout(&bound, ms)
    });
    Sleep { handle, slot }
}

/// A sleep's state, in the isolate's table.
#[derive(Default)]
struct Slot {
    fired: bool,
    waker: Option<Waker>,
}

/// Every pending sleep by slot, and the next slot to try.
#[derive(Default)]
struct Sleeps {
    slots: mux_core::idmap::IdMap<u32, Slot>,
    next: u32,
}

/// The first slot from `next` on that `slots` does not hold (slots wrap around).
fn next_free<V>(slots: &mux_core::idmap::IdMap<u32, V>, next: &mut u32) -> u32 {
    loop {
        let slot = *next;
        *next = next.wrapping_add(1);
        if !slots.contains_key(&slot) {
            return slot;
        }
    }
}

thread_local! {
    static SLEEPS: std::cell::RefCell<Sleeps> = std::cell::RefCell::new(Sleeps::default());
    /// What every sleep's timer calls, with its slot.
    static SLEEP_FIRED: Closure<dyn FnMut(u32)> = Closure::new(|slot: u32| {
        let waker = SLEEPS.with(|s| {
            let mut s = s.borrow_mut();
            let slot = s.slots.get_mut(&slot)?;
            slot.fired = true;
            slot.waker.take()
        });
        // Woken outside the borrow: a wake may poll code that sleeps again.
        if let Some(w) = waker {
            w.wake();
        }
    });
}

/// See [`sleep`].
pub struct Sleep {
    handle: JsValue,
    slot: u32,
}

impl Future for Sleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        SLEEPS.with(|s| {
            let mut s = s.borrow_mut();
            match s.slots.get_mut(&self.slot) {
                Some(Slot { fired: false, waker }) => {
                    *waker = Some(cx.waker().clone());
                    Poll::Pending
                }
                Some(Slot { fired: true, .. }) | None => Poll::Ready(()),
            }
        })
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        let slot = SLEEPS.with(|s| s.borrow_mut().slots.remove(&self.slot));
        if slot.is_some_and(|s| !s.fired) {
            let _ = clear_timeout(&self.handle);
        }
    }
}

/// An abort signal that fires after `ms`, for a fetch of this context. Aborting makes
/// the fetch's own promises reject — the fetch, then any read of its body — so the
/// awaiting code sees the timeout as an error where it waits; no future is dropped with
/// a promise still pending (whose later rejection workerd would log as uncaught).
/// Dropping the guard clears the timer.
pub struct AbortAfter {
    signal: JsValue,
    handle: JsValue,
}

impl AbortAfter {
    /// Starts the timer.
    pub fn new(ms: f64) -> Result<AbortAfter, String> {
        let controller = AbortController::new().map_err(|e| describe(&e))?;
        let abort = js_sys::Reflect::get(&controller, &"abort".into())
            .ok()
            .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
            .ok_or("AbortController.abort is missing")?;
        let handle = set_timeout(&abort.bind0(&controller), ms);
        Ok(AbortAfter { signal: controller.signal(), handle })
    }

    /// The `AbortSignal` to give the fetch.
    pub fn signal(&self) -> &JsValue {
        &self.signal
    }
}

impl Drop for AbortAfter {
    fn drop(&mut self) {
        let _ = clear_timeout(&self.handle);
    }
}

/// `fetch(url, init)` in the current context.
pub fn fetch_with(url: &str, init: &web_sys::RequestInit) -> Promise {
    global_fetch(url, init)
}

/// A WebSocket's message/close/error listeners, removed when dropped. The owning task
/// drops it when it ends — never a listener itself, which must not free its own closure.
pub struct Listeners {
    ws: web_sys::WebSocket,
    on_message: Closure<dyn FnMut(web_sys::MessageEvent)>,
    on_close: Closure<dyn FnMut(web_sys::CloseEvent)>,
    on_error: Closure<dyn FnMut(web_sys::Event)>,
}

impl Listeners {
    /// Registers the three listeners on `ws`.
    pub fn attach(
        ws: &web_sys::WebSocket,
        on_message: Closure<dyn FnMut(web_sys::MessageEvent)>,
        on_close: Closure<dyn FnMut(web_sys::CloseEvent)>,
        on_error: Closure<dyn FnMut(web_sys::Event)>,
    ) -> Listeners {
        let t: &web_sys::EventTarget = ws.as_ref();
        let _ = t.add_event_listener_with_callback("message", on_message.as_ref().unchecked_ref());
        let _ = t.add_event_listener_with_callback("close", on_close.as_ref().unchecked_ref());
        let _ = t.add_event_listener_with_callback("error", on_error.as_ref().unchecked_ref());
        Listeners { ws: ws.clone(), on_message, on_close, on_error }
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        let t: &web_sys::EventTarget = self.ws.as_ref();
        let _ = t.remove_event_listener_with_callback("message", self.on_message.as_ref().unchecked_ref());
        let _ = t.remove_event_listener_with_callback("close", self.on_close.as_ref().unchecked_ref());
        let _ = t.remove_event_listener_with_callback("error", self.on_error.as_ref().unchecked_ref());
    }
}

/// The events a socket's listeners hear, in the order of [`BoundListeners`]' kinds.
pub const SOCKET_EVENTS: [&str; 3] = ["message", "close", "error"];

/// A WebSocket's message/close/error listeners as bound functions of one `handler` shared
/// by every socket of its kind, called as `handler(kind, id, event)` with `kind` the
/// event's index in [`SOCKET_EVENTS`]. Per socket that is three small bound functions
/// where [`Listeners`] holds three wasm-bindgen closures (each a JS function, its state
/// object and its finalizer entry): client sockets are the isolate's many, so this is
/// per-stream memory. Removed when dropped.
pub struct BoundListeners {
    ws: web_sys::WebSocket,
    fns: [js_sys::Function; 3],
}

impl BoundListeners {
    /// Registers `handler` bound to `id` for each of [`SOCKET_EVENTS`] on `ws`.
    pub fn attach(ws: &web_sys::WebSocket, handler: &js_sys::Function, id: u32) -> BoundListeners {
        let fns = [0u32, 1, 2]
            .map(|kind| handler.bind2(&JsValue::NULL, &JsValue::from(kind), &JsValue::from(id)).unchecked_into());
        let t: &web_sys::EventTarget = ws.as_ref();
        for (event, f) in SOCKET_EVENTS.iter().zip(&fns) {
            let _ = t.add_event_listener_with_callback(event, f);
        }
        BoundListeners { ws: ws.clone(), fns }
    }
}

impl Drop for BoundListeners {
    fn drop(&mut self) {
        let t: &web_sys::EventTarget = self.ws.as_ref();
        for (event, f) in SOCKET_EVENTS.iter().zip(&self.fns) {
            let _ = t.remove_event_listener_with_callback(event, f);
        }
    }
}

/// Keeps an HTTP request's context alive (`ctx.waitUntil`) until dropped: the upstream's
/// owner task holds one, since it outlives the response it was started by (RUNTIME.md §4).
pub struct KeepAlive(JsValue);

impl Drop for KeepAlive {
    fn drop(&mut self) {
        if let Some(resolve) = self.0.dyn_ref::<js_sys::Function>() {
            let _ = resolve.call0(&JsValue::UNDEFINED);
        }
    }
}

/// `ctx.waitUntil(p)` with a promise made here (in this context) that resolves when the
/// returned guard is dropped. `None` if `ctx` has no `waitUntil`.
pub fn keep_alive(ctx: &JsValue) -> Option<KeepAlive> {
    let wait_until = js_sys::Reflect::get(ctx, &"waitUntil".into()).ok()?.dyn_into::<js_sys::Function>().ok()?;
    let r = with_resolvers();
    wait_until.call1(ctx, &r.promise()).ok()?;
    Some(KeepAlive(r.resolve_fn()))
}

/// Text of a JS error value.
pub fn describe(err: &JsValue) -> String {
    if let Some(e) = err.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    err.as_string().unwrap_or_else(|| format!("{err:?}"))
}

thread_local! {
    /// A rejection handler that does nothing (see [`connect_websocket`]); one per isolate.
    static IGNORE_REJECTION: Closure<dyn FnMut(JsValue)> = Closure::new(|_: JsValue| {});
}

/// How a request reaches the backends: the global `fetch` (`BACKEND_URL`) or a Durable
/// Object namespace binding (`BACKEND_BINDING`), kept from `env`.
#[derive(Debug, Clone)]
pub enum Via {
    /// The global `fetch`.
    Fetch,
    /// The `fetch` of the tenant's object in this namespace (`idFromName(tenant)`).
    Binding(JsValue),
}

impl Via {
    /// `env[name]` if it is a Durable Object namespace (it has `idFromName`).
    pub fn binding(env: &JsValue, name: &str) -> Result<Via, String> {
        let ns = js_sys::Reflect::get(env, &name.into()).unwrap_or(JsValue::UNDEFINED);
        let id_from_name = js_sys::Reflect::get(&ns, &"idFromName".into()).unwrap_or(JsValue::UNDEFINED);
        if !id_from_name.is_function() {
            return Err(format!(
                "BACKEND_BINDING names {name}, but this Worker has no Durable Object namespace binding \
                 of that name ([[durable_objects.bindings]] with script_name; README, Deploy)"
            ));
        }
        Ok(Via::Binding(ns))
    }

    /// Starts `fetch(url, init)` for `tenant`. Through a binding the stub is made here, so
    /// its I/O belongs to the calling context (RUNTIME.md §1).
    fn fetch(&self, tenant: &str, url: &str, init: &web_sys::RequestInit) -> Result<Promise, String> {
        let Via::Binding(ns) = self else { return Ok(global_fetch(url, init)) };
        let call = |target: &JsValue, method: &str, args: &[&JsValue]| -> Result<JsValue, String> {
            let f: js_sys::Function = js_sys::Reflect::get(target, &method.into())
                .ok()
                .and_then(|f| f.dyn_into().ok())
                .ok_or_else(|| format!("the binding has no {method}"))?;
            let args: js_sys::Array = args.iter().copied().collect();
            f.apply(target, &args).map_err(|e| describe(&e))
        };
        let id = call(ns, "idFromName", &[&tenant.into()])?;
        let stub = call(ns, "get", &[&id])?;
        call(&stub, "fetch", &[&url.into(), init.as_ref()])?.dyn_into().map_err(|_| "fetch returned no promise".into())
    }
}

/// Where an upstream connects: `url` (its path is what a bound object routes on) for
/// `tenant`, reached `via` the global fetch or a binding.
#[derive(Debug, Clone)]
pub struct Target {
    /// How the request travels.
    pub via: Via,
    /// The tenant (names the object through a binding).
    pub tenant: String,
    /// The multiplexer endpoint.
    pub url: String,
}

/// Opens a WebSocket to `target` with a bearer token (none if empty), accepts it and
/// makes binary messages arrive as ArrayBuffer (RUNTIME.md §6).
pub async fn connect_websocket(target: &Target, token: &str) -> Result<web_sys::WebSocket, String> {
    let url = mux_core::http_url(&target.url);
    let headers = web_sys::Headers::new().map_err(|e| describe(&e))?;
    headers.set("Upgrade", "websocket").map_err(|e| describe(&e))?;
    if !token.is_empty() {
        headers.set("Authorization", &format!("Bearer {token}")).map_err(|e| describe(&e))?;
    }
    let init = web_sys::RequestInit::new();
    init.set_headers(&headers);
    let fetched = target.via.fetch(&target.tenant, &url, &init)?;
    // A pump abandoned mid-connect (its watchdog passed) drops the future that awaits this
    // promise; when the promise rejects later, workerd logs it as an uncaught error. A
    // handler marks it handled; the await below still sees the rejection.
    IGNORE_REJECTION.with(|ignore| {
        let _ = fetched.catch(ignore);
    });
    let response = JsFuture::from(fetched).await.map_err(|e| describe(&e))?;
    let response: web_sys::Response = response.dyn_into().map_err(|_| "fetch returned no Response".to_owned())?;
    let ws = js_sys::Reflect::get(&response, &"webSocket".into()).unwrap_or(JsValue::NULL);
    if response.status() != 101 || ws.is_null() || ws.is_undefined() {
        let body = match response.text() {
            Ok(p) => JsFuture::from(p).await.ok().and_then(|t| t.as_string()).unwrap_or_default(),
            Err(_) => String::new(),
        };
        return Err(format!("backend refused the upgrade: HTTP {} {}", response.status(), body.trim()));
    }
    let ws: web_sys::WebSocket = ws.unchecked_into();
    ws.accept().map_err(|e| describe(&e))?;
    ws.set_binary_type(web_sys::BinaryType::Arraybuffer);
    Ok(ws)
}

/// POSTs `body` to `url` (`via` the fetch or binding for `tenant`) with the backend's bearer token and the caller's identity (in
/// `protocol::IDENTITY_HEADER`), and returns the backend's status, content type and body
/// in a new response (a fetched response's headers are immutable).
pub async fn post(
    (via, tenant): (&Via, &str),
    url: &str,
    token: &str,
    identity: &mux_core::Identity,
    content_type: &str,
    body: &[u8],
) -> Result<web_sys::Response, String> {
    let headers = web_sys::Headers::new().map_err(|e| describe(&e))?;
    if !token.is_empty() {
        headers.set("Authorization", &format!("Bearer {token}")).map_err(|e| describe(&e))?;
    }
    headers.set(protocol::IDENTITY_HEADER, &identity.to_hex()).map_err(|e| describe(&e))?;
    if !content_type.is_empty() {
        headers.set("Content-Type", content_type).map_err(|e| describe(&e))?;
    }
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_headers(&headers);
    init.set_body(&js_sys::Uint8Array::from(body));
    let res = JsFuture::from(via.fetch(tenant, url, &init)?).await.map_err(|e| describe(&e))?;
    let res: web_sys::Response = res.dyn_into().map_err(|_| "fetch returned no Response".to_owned())?;
    let content_type = res.headers().get("Content-Type").ok().flatten().unwrap_or_default();
    let body = JsFuture::from(res.array_buffer().map_err(|e| describe(&e))?).await.map_err(|e| describe(&e))?;
    response(res.status(), &content_type, &js_sys::Uint8Array::new(&body).to_vec()).map_err(|e| describe(&e))
}

/// A `WebSocketPair`: (client end for the response, server end we keep).
pub fn websocket_pair() -> Result<(web_sys::WebSocket, web_sys::WebSocket), String> {
    let mut pair = worker::worker_sys::WebSocketPair::new().map_err(|e| describe(&e))?;
    let client = pair.client().map_err(|e| describe(&e))?;
    let server = pair.server().map_err(|e| describe(&e))?;
    // Half-open: since compatibility date 2026-04-07 the runtime answers a client's Close
    // frame by itself, echoing whatever code the client sent (measured: 0, 999, 1004 came
    // straight back); a proxy that must answer an invalid code with 1002, and close both
    // sides in step, accepts with `allowHalfOpen` and sends the reply itself.
    let accept = js_sys::Reflect::get(&server, &"accept".into())
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        .ok_or("WebSocket.accept is missing")?;
    let options = js_sys::Object::new();
    js_sys::Reflect::set(&options, &"allowHalfOpen".into(), &JsValue::TRUE).map_err(|e| describe(&e))?;
    accept.call1(&server, &options).map_err(|e| describe(&e))?;
    server.set_binary_type(web_sys::BinaryType::Arraybuffer);
    Ok((client, server))
}

/// `new Response(null, { status: 101, webSocket })`, answering `protocol` as the
/// `Sec-WebSocket-Protocol` when the client offered one.
pub fn upgrade_response(client: &web_sys::WebSocket, protocol: Option<&str>) -> Result<web_sys::Response, JsValue> {
    let init = web_sys::ResponseInit::new();
    init.set_status(101);
    if let Some(p) = protocol {
        let headers = web_sys::Headers::new()?;
        headers.set("Sec-WebSocket-Protocol", p)?;
        init.set_headers(&headers);
    }
    js_sys::Reflect::set(&init, &"webSocket".into(), client)?;
    web_sys::Response::new_with_opt_str_and_init(None, &init)
}

/// A response with a body and content type: the one place the snippet's own responses
/// are made, so each carries the headers every one must (`mux_core::site`).
pub fn response(status: u16, content_type: &str, body: &[u8]) -> Result<web_sys::Response, JsValue> {
    let headers = web_sys::Headers::new()?;
    for (name, value) in mux_core::site::response_headers(content_type) {
        headers.set(name, value)?;
    }
    let init = web_sys::ResponseInit::new();
    init.set_status(status);
    init.set_headers(&headers);
    // A JS-owned copy, never a view into WASM memory (see `send_binary`).
    let body = js_sys::Uint8Array::from(body);
    web_sys::Response::new_with_opt_buffer_source_and_init(Some(&body), &init)
}

/// A short random id for a request whose failure is logged, so a client's report and
/// the operator's log can be matched.
pub fn request_id() -> String {
    random_uuid().chars().filter(|c| *c != '-').take(16).collect()
}

/// A JSON error response: `{"error": "<reason>", "requestId": "<id>"}` with `status` and
/// an `X-Request-Id` header. `reason` is short and never holds internal detail.
pub fn json_error(status: u16, reason: &str) -> Result<web_sys::Response, JsValue> {
    json_error_with_id(status, reason, &request_id())
}

fn json_error_with_id(status: u16, reason: &str, id: &str) -> Result<web_sys::Response, JsValue> {
    let res = json(status, &mux_core::error_body(reason, id))?;
    res.headers().set("X-Request-Id", id)?;
    Ok(res)
}

/// 503 with `Retry-After: 1`: the isolate is full for now (clients, streams or queues).
pub fn retry_later(reason: &str) -> Result<web_sys::Response, JsValue> {
    let res = json_error(503, reason)?;
    res.headers().set("Retry-After", "1")?;
    Ok(res)
}

/// A failure inside the proxy: the client gets `reason` and a request id; the log gets
/// the id, the tenant (when known, else "") and `detail`.
pub fn fail(status: u16, reason: &str, detail: &str, tenant: &str) -> Result<web_sys::Response, JsValue> {
    let id = request_id();
    let line = Line::error(format!("{status} {reason}: {detail}"));
    log(line.str("requestId", &id).str("tenant", tenant).num("status", u64::from(status)));
    json_error_with_id(status, reason, &id)
}

/// A configuration error: every request answers 500 naming the var (`why`), and the log
/// has the same under the request's id.
pub fn bad_configuration(why: &str) -> Result<web_sys::Response, JsValue> {
    let id = request_id();
    let reason = format!("bad configuration: {why}");
    log(Line::error(reason.as_str()).str("requestId", &id).num("status", 500));
    json_error_with_id(500, &reason, &id)
}

/// A refusal at the door: 400, 401 (with `WWW-Authenticate`), 403, or 503 with
/// `Retry-After` (the identity provider's keys cannot be had now). Nothing is logged:
/// refusals are the door working, and the log must never hold a token.
pub fn refuse(e: &mux_core::auth::AuthError) -> Result<web_sys::Response, JsValue> {
    let res = json_error(e.status(), &e.reason())?;
    if let Some(challenge) = e.www_authenticate() {
        res.headers().set("WWW-Authenticate", &challenge)?;
    }
    if let Some(secs) = e.retry_after_secs() {
        res.headers().set("Retry-After", &secs.to_string())?;
    }
    Ok(res)
}

/// A JSON response.
pub fn json(status: u16, body: &str) -> Result<web_sys::Response, JsValue> {
    response(status, "application/json", body.as_bytes())
}

/// Message data as (is_text, bytes), or `Err(size)` when it is known to exceed `limit`
/// bytes before it is copied into WASM: a binary message's length is exact; a string of
/// more than `limit` UTF-16 units is more than `limit` UTF-8 bytes (each unit is one to
/// three bytes), so only strings near the limit are copied before the exact check.
pub fn message_data(e: &web_sys::MessageEvent, limit: usize) -> Result<(bool, Vec<u8>), usize> {
    let data = e.data();
    if let Some(s) = data.dyn_ref::<js_sys::JsString>() {
        let units = s.length() as usize;
        if units > limit {
            return Err(units);
        }
        return Ok((true, String::from(s).into_bytes()));
    }
    let bytes = if let Some(buf) = data.dyn_ref::<js_sys::ArrayBuffer>() {
        js_sys::Uint8Array::new(buf)
    } else if let Some(arr) = data.dyn_ref::<js_sys::Uint8Array>() {
        arr.clone()
    } else {
        return Ok((false, Vec::new()));
    };
    match bytes.length() as usize {
        n if n > limit => Err(n),
        _ => Ok((false, bytes.to_vec())),
    }
}

/// 429 with `Retry-After` (whole seconds, at least 1): a caller over one of its limits.
pub fn too_many(reason: &str, retry_after_ms: u64) -> Result<web_sys::Response, JsValue> {
    let res = json_error(429, reason)?;
    res.headers().set("Retry-After", &retry_after_ms.div_ceil(1000).max(1).to_string())?;
    Ok(res)
}

/// Sends binary data as a JS-owned copy. `send_with_u8_array` would pass a view into
/// WASM memory, which workerd may read after the Rust buffer is freed and reused
/// (measured: the backend then saw garbage, "unsupported protocol version 20").
pub fn send_binary(ws: &web_sys::WebSocket, bytes: &[u8]) -> Result<(), JsValue> {
    ws.send_with_array_buffer_view(&js_sys::Uint8Array::from(bytes))
}

/// Closes a socket with a code (a reported-only one as 1000: [`CloseCode::sendable`]) and
/// reason; falls back to a bare close if the runtime refuses them. Errors (already closed)
/// are ignored: closing is best effort.
pub fn close(ws: &web_sys::WebSocket, code: u16, reason: &str) {
    let code = CloseCode::new(code).sendable().get();
    if ws.close_with_code_and_reason(code, reason).is_err() {
        let _ = ws.close();
    }
}
