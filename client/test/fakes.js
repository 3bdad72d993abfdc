// Test doubles: a clock that only moves when told, a WebSocket the test drives from the
// server's side, and a fetch with canned answers. Nothing here touches the network.

import { SnippetProxyClient } from '../snippet-proxy-client.js'

/** Lets every pending promise reaction run (setImmediate comes after the microtasks). */
export const settle = () => new Promise((resolve) => setImmediate(resolve))

export function fakeClock() {
  let now = 0
  let nextId = 1
  const timers = new Map()
  return {
    rnd: 0.5,
    now: () => now,
    random() { return this.rnd },
    setTimeout(fn, ms) {
      const id = nextId++
      timers.set(id, { at: now + Math.max(0, ms || 0), fn })
      return id
    },
    clearTimeout(id) { timers.delete(id) },
    /** How long until the earliest pending timer fires (null when none). */
    nextDue() {
      const ats = [...timers.values()].map((t) => t.at)
      return ats.length ? Math.min(...ats) - now : null
    },
    /** Moves time forward by `ms`, firing due timers in order, settling after each. */
    async advance(ms) {
      const end = now + ms
      await settle()
      for (;;) {
        let due = null
        for (const [id, t] of timers) if (t.at <= end && (!due || t.at < due[1].at)) due = [id, t]
        if (!due) break
        timers.delete(due[0])
        now = due[1].at
        due[1].fn()
        await settle()
      }
      now = end
    },
  }
}

/** A WebSocket class whose instances land in `sockets`; the test plays the server. */
export function fakeWebSocket() {
  const sockets = []
  class FakeWebSocket {
    constructor(url) {
      this.url = url
      this.readyState = 0
      this.sent = []
      this.closedWith = null
      sockets.push(this)
    }
    send(data) {
      if (this.readyState !== 1) throw new Error(`send in readyState ${this.readyState}`)
      this.sent.push(data)
    }
    close(code, reason) {
      this.closedWith = { code, reason }
      this.readyState = 2
    }
    // ---- the server's side ----
    /**
     * Opens the socket. A JSON-RPC client's first message is its handshake ping; unless
     * `handshake: false`, it is answered and left out of `sent`, which then holds only the
     * traffic that follows.
     */
    accept({ handshake = true } = {}) {
      this.readyState = 1
      this.onopen?.({})
      const first = this.sent.length === 1 && typeof this.sent[0] === 'string' && JSON.parse(this.sent[0])
      if (handshake && first?.method === 'ping') {
        this.sent = []
        this.receive({ jsonrpc: '2.0', result: 'pong', id: first.id })
      }
    }
    receive(msg) { this.onmessage?.({ data: typeof msg === 'string' ? msg : JSON.stringify(msg) }) }
    receiveRaw(data) { this.onmessage?.({ data }) }
    drop(code = 1006, reason = '') { this.readyState = 3; this.onclose?.({ code, reason, wasClean: code !== 1006 }) }
    /** The JSON-RPC messages this socket sent, parsed. */
    get calls() { return this.sent.map((s) => JSON.parse(s)) }
  }
  return { FakeWebSocket, sockets }
}

/** A fetch that answers from `respond(url)` ({status, body, headers}) and records URLs. */
export function fakeFetch(respond) {
  const urls = []
  const fetch = async (url) => {
    urls.push(url)
    const r = await respond(url)
    const headers = new Map(Object.entries(r.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]))
    return {
      status: r.status,
      headers: { get: (k) => headers.get(k.toLowerCase()) ?? null },
      json: async () => r.body,
    }
  }
  return { fetch, urls }
}

/**
 * A client on fakes, with every event recorded. Heartbeats are off unless asked for, so
 * tests that are not about them see only their own traffic.
 */
export function setup({ respond, ...options } = {}, url = 'wss://edge.example/db/room1/ws') {
  const clock = fakeClock()
  const { FakeWebSocket, sockets } = fakeWebSocket()
  // By default the diagnosis says what the snippet says once the token passed: 426.
  const f = fakeFetch(respond ?? (() => ({ status: 426, body: { error: 'expected a WebSocket upgrade' } })))
  const client = new SnippetProxyClient(url, {
    WebSocket: FakeWebSocket,
    fetch: f.fetch,
    clock,
    window: null,
    document: null,
    heartbeatMs: 0,
    ...options,
  })
  const events = []
  for (const type of ['state', 'open', 'close', 'message', 'rtt', 'error']) {
    client.addEventListener(type, (e) => events.push({ type, ...e.detail }))
  }
  const of = (type) => events.filter((e) => e.type === type)
  const states = () => of('state').map((e) => e.state)
  const last = () => sockets[sockets.length - 1]
  return { client, clock, sockets, last, events, of, states, fetchUrls: f.urls }
}

/** A client whose first socket is open. */
export async function opened(options, url) {
  const t = setup(options, url)
  await t.clock.advance(0)
  t.last().accept()
  await t.clock.advance(0)
  return t
}
