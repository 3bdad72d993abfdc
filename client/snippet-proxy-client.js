// snippet-proxy-client: a reconnecting JSON-RPC (or raw) WebSocket client for
// snippet-proxy. One file, no imports, no build step: the snippet serves it at /client.js.
// Types and docs: snippet-proxy-client.d.ts, README.md.

export class SnippetProxyError extends Error {
  constructor(message, fields) { super(message); Object.assign(this, fields) }
}
export class RpcError extends SnippetProxyError {
  name = 'RpcError'
  constructor(code, message, data) { super(message, { code, data }) }
}
export class TimeoutError extends SnippetProxyError { name = 'TimeoutError' }
export class ConnectionLostError extends SnippetProxyError { name = 'ConnectionLostError' }
export class QueueFullError extends SnippetProxyError { name = 'QueueFullError' }
export class ClosedError extends SnippetProxyError { name = 'ClosedError' }

// Our own closes (heartbeat, connect timeout) are 4000 and retried; the server's 4xxx are refusals.
const LOCAL = 4000
const DONE = ['closed', 'failed']
// Answers that another attempt with the same token cannot change.
const REFUSED = { 400: 'bad request', 401: 'unauthorized', 403: 'forbidden', 404: 'not found' }
const DEFAULTS = {
  token: null, raw: false, maxQueue: 256, heartbeatMs: 15000, heartbeatTimeoutMs: 10000,
  callTimeoutMs: 30000, connectTimeoutMs: 10000,
}
// Wrapped: a browser's timer functions throw "Illegal invocation" when called as another
// object's methods, which is how clock functions are called.
const CLOCK = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (id) => clearTimeout(id),
  now: () => Date.now(),
  random: () => Math.random(),
}
const lostError = (method) => new ConnectionLostError(
  `${method}: the connection dropped before its reply; it may or may not have run`, { method })

export class SnippetProxyClient extends EventTarget {
  #o; #clock; #url; #unlisten
  #ws = null
  #state = 'idle'
  #reason = ''
  #gen = 0 // bumped by each attempt, loss and end: async work of an older one then stops
  #attempt = 0 // the backoff exponent
  #openedAt = 0
  #upgraded = false // this attempt's socket opened (then a failure is not a refused upgrade)
  #handshake = 0 // id of the first ping of a connection; its reply makes the client 'open'
  #timers = {} // retry, connect, ping
  #queue = [] // { data, call? } waiting for a connection, oldest first
  #pending = new Map() // id → call, for calls that were sent
  #nextId = 0
  #waiters = []

  constructor(url, options = {}) {
    super()
    const backoff = { initialMs: 250, maxMs: 10000, factor: 2, stableMs: 5000, ...options.backoff }
    this.#o = { ...DEFAULTS, WebSocket: globalThis.WebSocket, fetch: globalThis.fetch, ...options, backoff }
    this.#clock = options.clock ?? CLOCK
    const u = new URL(url, globalThis.location?.href) // so a page may pass a path
    u.protocol = u.protocol.replace(/^http/, 'ws')
    this.#url = u.href
    const win = 'window' in options ? options.window : globalThis.window
    const doc = 'document' in options ? options.document : globalThis.document
    // Back online, or the tab is looked at again: waiting out the backoff would only delay.
    const wake = () => this.connect()
    const visible = () => doc.visibilityState === 'visible' && wake()
    win?.addEventListener?.('online', wake)
    doc?.addEventListener?.('visibilitychange', visible)
    this.#unlisten = () => {
      win?.removeEventListener?.('online', wake)
      doc?.removeEventListener?.('visibilitychange', visible)
    }
    // Deferred, so listeners added right after `new` see the first state change.
    queueMicrotask(() => this.connect())
  }

  get state() { return this.#state }
  get queued() { return this.#queue.length }

  on(type, fn) {
    const listener = (e) => fn(e.detail)
    this.addEventListener(type, listener)
    return () => this.removeEventListener(type, listener)
  }

  connect() {
    if (this.#state === 'idle' || this.#state === 'reconnecting') this.#connect()
  }

  ready() {
    if (this.#state === 'open') return Promise.resolve()
    if (DONE.includes(this.#state)) return Promise.reject(new ClosedError(this.#reason))
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }))
  }

  call(method, params, { timeout = this.#o.callTimeoutMs } = {}) {
    if (this.#o.raw) return Promise.reject(new TypeError('call() needs JSON-RPC mode, not raw'))
    return new Promise((resolve, reject) => {
      const call = { id: ++this.#nextId, method, sent: false }
      const text = rpc(method, params, call.id) // first: if params cannot be JSON, nothing is left behind
      // Counts from the call, not from the send: the caller waits either way.
      const timer = timeout > 0 && timeout < Infinity && this.#clock.setTimeout(() => {
        this.#queue = this.#queue.filter((q) => q.call !== call)
        this.#pending.delete(call.id)
        const { sent } = call
        call.settle(new TimeoutError(sent
          ? `${method}: no reply within ${timeout} ms; it may or may not have run`
          : `${method}: not sent within ${timeout} ms (not connected); it did not run`, { method, sent }))
      }, timeout)
      call.settle = (error, result) => {
        this.#clock.clearTimeout(timer)
        error ? reject(error) : resolve(result)
      }
      const how = this.#push(text, call)
      if (how === 'full') call.settle(new QueueFullError(`${method}: the queue is full (${this.#o.maxQueue}); not sent`, { method }))
      if (how === 'done') call.settle(new ClosedError(this.#reason))
    })
  }

  notify(method, params) {
    if (this.#o.raw) throw new TypeError('notify() needs JSON-RPC mode, not raw')
    return this.send(rpc(method, params))
  }

  send(data) {
    const how = this.#push(data)
    return how === 'sent' || how === 'queued'
  }

  close(code = 1000, reason = '') {
    // Checked first: a browser's socket would throw after our state had changed.
    if (code !== 1000 && !(code >= 3000 && code <= 4999)) throw new RangeError(`close code ${code}: use 1000 or 3000-4999`)
    if (DONE.includes(this.#state)) return
    const ws = this.#detach()
    this.#end('closed', reason || 'closed by the client')
    if (ws) {
      ws.close(code, reason)
      this.#emit('close', { code, reason, willRetry: false })
    }
  }

  // → 'sent' | 'queued' | 'full' | 'done'
  #push(data, call) {
    if (DONE.includes(this.#state)) return 'done'
    if (this.#state === 'open') return this.#transmit(data, call)
    if (this.#queue.length >= this.#o.maxQueue) return 'full'
    // A socket copies what it sends at once; copy what waits too, so a caller that reuses
    // its buffer cannot change a queued message.
    if (data instanceof ArrayBuffer) data = data.slice(0)
    else if (ArrayBuffer.isView(data)) data = new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice()
    this.#queue.push({ data, call })
    return 'queued'
  }

  #transmit(data, call) {
    this.#ws.send(data)
    if (call) { call.sent = true; this.#pending.set(call.id, call) }
    return 'sent'
  }

  async #connect() {
    this.#clear() // a pending retry, when connect() comes early
    const gen = ++this.#gen
    this.#set('connecting')
    this.#upgraded = false
    // Bounds the token provider and the upgrade together: either can hang.
    this.#timers.connect = this.#clock.setTimeout(() => this.#lost(gen, LOCAL, 'connect timeout', true), this.#o.connectTimeoutMs)
    const url = new URL(this.#url)
    try {
      // Asked before every attempt: a reconnect after "token expired" needs a new one.
      const { token } = this.#o
      const t = typeof token === 'function' ? await token() : token
      if (t != null) url.searchParams.set('access_token', t)
    } catch (error) {
      if (gen !== this.#gen) return
      this.#emit('error', { error })
      return this.#lost(gen, LOCAL, `token provider failed: ${error?.message ?? error}`, true)
    }
    if (gen !== this.#gen) return
    let ws
    try {
      ws = new this.#o.WebSocket(url.href)
    } catch (error) { // e.g. ws: from an https page: no later attempt can do better
      return this.#end('failed', String(error?.message ?? error))
    }
    this.#ws = ws
    if (this.#o.raw) ws.binaryType = 'arraybuffer' // data at once, unlike a Blob
    ws.onopen = () => this.#opened(gen)
    ws.onmessage = (e) => this.#message(e.data)
    ws.onclose = (e) => this.#lost(gen, e.code, e.reason, false, url)
    // The close event that follows an error says all we use. Kept after detaching: an
    // EventEmitter-based socket (Node's `ws`) throws an 'error' that has no listener.
    ws.onerror = () => {}
  }

  #opened(gen) {
    if (gen !== this.#gen) return
    this.#clear()
    this.#upgraded = true
    if (this.#o.raw) return this.#ready(gen)
    // The snippet accepts an upgrade before it knows the backend is reachable (it may be
    // restarting), and then closes with 1012. A first round trip proves the whole path,
    // so nothing queued is sent into a connection about to drop: it stays queued instead.
    this.#timers.connect = this.#clock.setTimeout(
      () => this.#lost(gen, LOCAL, 'no answer from the backend', true), this.#o.heartbeatTimeoutMs)
    this.#handshake = ++this.#nextId
    this.#ws.send(rpc('ping', undefined, this.#handshake))
  }

  #ready(gen) {
    this.#clear()
    this.#openedAt = this.#clock.now()
    // The queue goes first, in order, before any listener below can send something new.
    for (const { data, call } of this.#queue.splice(0)) this.#transmit(data, call)
    this.#beat(gen)
    for (const w of this.#waiters.splice(0)) w.resolve()
    this.#set('open')
    if (gen === this.#gen) this.#emit('open', {}) // unless a 'state' listener closed us
  }

  // Application-level heartbeat, through the snippet to the backend and back. A dead path,
  // which TCP may not notice for minutes, is found within heartbeatMs + heartbeatTimeoutMs.
  #beat(gen) {
    if (this.#o.raw || !(this.#o.heartbeatMs > 0)) return
    this.#timers.ping = this.#clock.setTimeout(async () => {
      const t0 = this.#clock.now()
      try {
        await this.call('ping', undefined, { timeout: this.#o.heartbeatTimeoutMs })
      } catch (e) {
        if (e instanceof TimeoutError) return this.#lost(gen, LOCAL, 'heartbeat timeout', true)
        // Any reply proves the path alive, even an error (an expired token's -32003).
        if (!(e instanceof RpcError)) return // the connection is gone already
      }
      if (gen !== this.#gen) return
      this.#emit('rtt', { rttMs: this.#clock.now() - t0 })
      this.#beat(gen)
    }, this.#o.heartbeatMs)
  }

  #message(data) {
    if (this.#o.raw) return this.#emit('message', { data })
    let msg
    try { msg = JSON.parse(data) } catch {
      return this.#emit('error', { error: new SnippetProxyError('the server sent a message that is not JSON') })
    }
    for (const m of [].concat(msg)) {
      if (this.#handshake && m?.id === this.#handshake) { // any answer proves the path
        this.#handshake = 0
        this.#ready(this.#gen)
        continue
      }
      const error = m?.error && new RpcError(m.error.code, m.error.message, m.error.data)
      if (m?.method !== undefined && m.id === undefined) {
        this.#emit('message', { method: m.method, params: m.params }) // a server push
      } else if (this.#pending.has(m?.id)) {
        const call = this.#pending.get(m.id)
        this.#pending.delete(m.id)
        call.settle(error, m.result)
      } else if (error) { // e.g. a parse error the server could not tie to a call
        this.#emit('error', { error })
      } // else a late reply to a call that timed out
    }
  }

  // The socket ended, or we end the attempt (`local`). Retry, or fail for good?
  async #lost(gen, code, reason, local, url) {
    if (gen !== this.#gen) return
    gen = ++this.#gen // a token or socket still on its way for this attempt is ignored
    this.#clear()
    const wasOpen = this.#state === 'open'
    this.#handshake = 0
    const ws = this.#detach()
    if (local) ws?.close(LOCAL, reason) // a dead path never completes the handshake: don't wait
    if (wasOpen && this.#clock.now() - this.#openedAt >= this.#o.backoff.stableMs) this.#attempt = 0
    let v // the verdict: { fail } or { delay, why? }
    if (!this.#upgraded && !local) {
      // Browsers show a refused upgrade as a bare 1006: ask the same URL over HTTP why.
      v = await this.#diagnose(url)
      if (gen !== this.#gen) return
    } else if (!local && code === 1008 && reason === 'token expired') {
      v = { delay: 0 } // at once, with a fresh token
    } else if (!local && (code === 1008 || (code >= 4000 && code <= 4999))) {
      v = { fail: `refused by the server: ${code} ${reason}`.trim() }
    } else {
      v = { delay: this.#delay() } // 1000 (a restart), 1001, 1006, 1011, 1012, 1013, ours…
    }
    const why = v.fail ?? v.why ?? (reason || `connection closed (${code})`)
    // The state changes first, so a 'close' listener that sends finds no stale 'open'.
    if (v.fail) this.#end('failed', why)
    else {
      this.#timers.retry = this.#clock.setTimeout(() => this.connect(), v.delay)
      this.#set('reconnecting', why)
    }
    if (ws) this.#emit('close', { code, reason: why, willRetry: !DONE.includes(this.#state) })
  }

  // The snippet checks the token before it looks for an upgrade, so a plain GET of the
  // same URL tells a refusal (401, 403; 400 for a bad tenant) from a passing failure.
  async #diagnose(url) {
    const { fetch } = this.#o // called unbound: window.fetch refuses any other `this`
    let res, body
    try {
      const http = new URL(url)
      http.protocol = http.protocol.replace(/^ws/, 'http')
      res = await fetch(http.href, { cache: 'no-store', signal: globalThis.AbortSignal?.timeout?.(this.#o.connectTimeoutMs) })
      body = await res.json().catch(() => null)
    } catch {
      return { delay: this.#delay() } // offline, the server is down, or no fetch at all
    }
    const s = res.status
    const text = body?.error ? `: ${body.error}${body.requestId ? ` (request ${body.requestId})` : ''}` : ''
    if (REFUSED[s]) return { fail: REFUSED[s] + text }
    // 426: the token passed, so the upgrade failed for a passing reason.
    if (s === 426) return { delay: this.#delay() }
    // Busy (429, 503): Retry-After seconds are the earliest worth trying.
    const after = 1000 * res.headers?.get?.('Retry-After') || 0
    return { delay: this.#delay(after), why: `HTTP ${s}${text}` }
  }

  // Full jitter: random in [0, min(max, initial * factor^attempt)), so clients dropped
  // together do not come back together.
  #delay(floor = 0) {
    const { initialMs, maxMs, factor } = this.#o.backoff
    const cap = Math.min(maxMs, initialMs * factor ** this.#attempt++)
    return Math.max(floor, Math.floor(this.#clock.random() * cap))
  }

  #detach() {
    const ws = this.#ws
    this.#ws = null
    if (ws) ws.onopen = ws.onmessage = ws.onclose = null
    // Sent calls may or may not have run: say so, and never send them again.
    for (const call of this.#pending.values()) call.settle(lostError(call.method))
    this.#pending.clear()
    return ws
  }

  #end(state, reason) {
    this.#gen++
    this.#clear()
    this.#unlisten()
    for (const { call } of this.#queue.splice(0)) call?.settle(new ClosedError(reason))
    this.#set(state, reason)
    for (const w of this.#waiters.splice(0)) w.reject(new ClosedError(reason))
  }

  #clear() {
    for (const id of Object.values(this.#timers)) this.#clock.clearTimeout(id)
    this.#timers = {}
  }

  #set(state, reason = '') {
    const previous = this.#state
    this.#state = state
    this.#reason = reason
    this.#emit('state', { state, previous, reason })
  }

  #emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })) }
}

function rpc(method, params, id) {
  const msg = { jsonrpc: '2.0', method }
  if (params !== undefined) msg.params = params
  if (id !== undefined) msg.id = id
  return JSON.stringify(msg)
}
