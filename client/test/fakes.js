// Test doubles: a clock that only moves when told, a WebSocket the test drives from the
// server's side, and a fetch with canned answers. Nothing here touches the network.

import { SnippetProxyClient, encodeEnvelope, decodeEnvelope } from '../snippet-proxy-client.js'

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

/**
 * A WebSocket class whose instances land in `sockets`; the test plays the server. The
 * sockets share `server`, the backend's side of the client's one session: it takes the
 * client's data in order (as a backend does) and numbers what it sends.
 */
export function fakeWebSocket() {
  const sockets = []
  const server = {
    seq: 0, // the last seq the backend sent
    taken: 0, // the last client seq it took, in order
    attached: false, // it has welcomed the session once
  }
  class FakeWebSocket {
    constructor(url) {
      this.url = url
      this.readyState = 0
      this.binaryType = 'blob'
      this.sent = []
      this.closedWith = null
      sockets.push(this)
    }
    send(data) {
      if (this.readyState !== 1) throw new Error(`send in readyState ${this.readyState}`)
      // A real socket copies what it is given at once: so does this one.
      const copy = typeof data === 'string' ? data : bytes(data).slice()
      this.sent.push(copy)
      const env = typeof copy === 'string' ? null : decodeEnvelope(copy)
      if (isData(env) && env.seq === server.taken + 1) server.taken++
    }
    close(code, reason) {
      this.closedWith = { code, reason }
      this.readyState = 2
    }
    // ---- the server's side ----
    /** Opens the socket and, unless `welcome: false`, sends the backend's Welcome (`welcome(options)`). */
    accept({ welcome = true, ...options } = {}) {
      this.readyState = 1
      this.onopen?.({})
      if (welcome) this.welcome(options)
    }
    /**
     * The backend's Welcome. By default it resumes the session once it has one, and
     * acknowledges all it took; `resumed: false` begins the session again at 0.
     */
    welcome({ resumed = server.attached, ack } = {}) {
      if (!resumed) server.seq = server.taken = 0
      server.attached = true
      this.receiveEnvelope({ type: 'Welcome', resumed, ack: ack ?? server.taken })
    }
    /** A Text envelope of `msg` (JSON unless a string); `seq` defaults to the next, `ack` to all taken. */
    receive(msg, { seq, ack } = {}) {
      const payload = typeof msg === 'string' ? msg : JSON.stringify(msg)
      this.receiveEnvelope({ type: 'Text', seq: seq ?? ++server.seq, ack: ack ?? server.taken, payload })
    }
    /** A Binary envelope. */
    receiveBinary(payload, { seq, ack } = {}) {
      this.receiveEnvelope({ type: 'Binary', seq: seq ?? ++server.seq, ack: ack ?? server.taken, payload })
    }
    receiveEnvelope(env) { this.receiveRaw(encodeEnvelope(env).buffer) }
    receiveRaw(data) { this.onmessage?.({ data }) }
    /** The snippet's answer to the last Ping this socket sent. */
    pong() { this.receiveEnvelope({ type: 'Pong', payload: this.envelopes.findLast((e) => e.type === 'Ping').payload }) }
    drop(code = 1006, reason = '') { this.readyState = 3; this.onclose?.({ code, reason, wasClean: code !== 1006 }) }
    /** Every envelope this socket sent, decoded. */
    get envelopes() { return this.sent.map((s) => decodeEnvelope(s)) }
    /** The data envelopes this socket sent: `{seq, ack, text}`, text a string or for Binary the bytes as an array. */
    get messages() {
      return this.envelopes.filter(isData).map(({ type, seq, ack, payload }) =>
        ({ seq, ack, text: type === 'Text' ? new TextDecoder().decode(payload) : [...payload] }))
    }
    /** What the application sent: strings, and byte arrays for binary. */
    get data() { return this.messages.map((m) => m.text) }
    /** The JSON-RPC messages this socket sent, parsed. */
    get calls() { return this.data.map((s) => JSON.parse(s)) }
  }
  return { FakeWebSocket, sockets, server }
}

const isData = (env) => env?.type === 'Text' || env?.type === 'Binary'
const bytes = (d) => d instanceof ArrayBuffer ? new Uint8Array(d) : new Uint8Array(d.buffer, d.byteOffset, d.byteLength)

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
  const { FakeWebSocket, sockets, server } = fakeWebSocket()
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
  for (const type of ['state', 'open', 'close', 'message', 'rtt', 'error', 'session']) {
    client.addEventListener(type, (e) => events.push({ type, ...e.detail }))
  }
  const of = (type) => events.filter((e) => e.type === type)
  const states = () => of('state').map((e) => e.state)
  const last = () => sockets[sockets.length - 1]
  return { client, clock, sockets, server, last, events, of, states, fetchUrls: f.urls }
}

/** A client whose first socket is open (welcomed). */
export async function opened(options, url) {
  const t = setup(options, url)
  await t.clock.advance(0)
  t.last().accept()
  await t.clock.advance(0)
  return t
}
