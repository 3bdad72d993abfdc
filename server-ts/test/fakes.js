// Test doubles for a Durable Object: a `ctx` with the Hibernation API (acceptWebSocket,
// getWebSockets, getTags, setWebSocketAutoResponse) and a Map-backed synchronous `storage.kv`; WebSockets that
// record what is sent; WebSocketPair and a Response that allows status 101; and helpers
// to build and read upstream messages. `ctx.hibernate()` replaces every socket object by
// a new one over the same connection, as the runtime does after a wake.

import {
  FrameKind, decodeEnvelope, decodeError, decodeMessage, decodeResponse, encodeClose, encodeEnvelope, encodeMessage,
  encodeOpen, encodeRequest,
} from '../src/protocol.js'
import { SnippetProxyServer } from '../src/index.js'

/** Lets pending promise reactions run. */
export const settle = () => new Promise((resolve) => setImmediate(resolve))

export class FakeKv {
  constructor() {
    this.map = new Map()
    this.puts = 0
    this.deletes = 0
  }
  /** Rows written: each put and each delete (what storage bills). */
  get writes() {
    return this.puts + this.deletes
  }
  get(key) {
    return this.map.has(key) ? structuredClone(this.map.get(key)) : undefined
  }
  put(key, value) {
    this.puts++
    this.map.set(key, structuredClone(value))
  }
  delete(key) {
    this.deletes++
    return this.map.delete(key)
  }
  *list({ prefix = '' } = {}) {
    const keys = [...this.map.keys()].filter((k) => k.startsWith(prefix)).sort()
    for (const k of keys) yield [k, structuredClone(this.map.get(k))]
  }
  keys(prefix = '') {
    return [...this.map.keys()].filter((k) => k.startsWith(prefix)).sort()
  }
}

/** One connection's server end; `wire` is shared by every object standing for it. */
export class FakeSocket {
  constructor(wire = { sent: [], closed: null, attachment: null }) {
    this.wire = wire
  }
  get sent() { return this.wire.sent }
  get closed() { return this.wire.closed }
  send(data) {
    if (this.wire.closed) throw new Error('send on a closed socket')
    if (typeof data === 'string') this.wire.sent.push(data)
    else this.wire.sent.push(new Uint8Array(data instanceof ArrayBuffer ? data : data.buffer).slice())
  }
  close(code, reason) {
    if (this.wire.closed) throw new Error('already closed')
    this.wire.closed = { code, reason }
  }
  serializeAttachment(value) {
    this.wire.attachment = structuredClone(value)
  }
  deserializeAttachment() {
    return this.wire.attachment === null ? null : structuredClone(this.wire.attachment)
  }
}

export function fakeCtx({ kv = true } = {}) {
  const ctx = {
    accepted: [], // {ws, tags, gone}
    storage: kv ? { kv: new FakeKv() } : {},
    autoResponse: null,
    setWebSocketAutoResponse(pair) {
      ctx.autoResponse = pair ?? null
    },
    acceptWebSocket(ws, tags = []) {
      ctx.accepted.push({ ws, tags, gone: false })
    },
    getWebSockets(tag) {
      return ctx.accepted.filter((a) => !a.gone && (tag === undefined || a.tags.includes(tag))).map((a) => a.ws)
    },
    getTags(ws) {
      const a = ctx.accepted.find((x) => x.ws === ws)
      if (!a) throw new TypeError('not an accepted WebSocket')
      return a.tags
    },
    /** New socket objects over the same connections (what a wake from hibernation looks like). */
    hibernate() {
      for (const a of ctx.accepted) a.ws = new FakeSocket(a.ws.wire)
    },
    /** The socket dies without a close event reaching the object. */
    vanish(ws) {
      ctx.accepted.find((a) => a.ws === ws).gone = true
    },
    /** The current object for a connection. */
    current(ws) {
      return ctx.accepted.find((a) => a.ws.wire === ws.wire).ws
    },
  }
  return ctx
}

// The runtime's WebSocketPair, its auto-response pair, and a Response that may carry status 101 and a socket.
globalThis.WebSocketRequestResponsePair = class {
  constructor(request, response) {
    this.request = request
    this.response = response
  }
}
globalThis.WebSocketPair = class {
  constructor() {
    this[0] = new FakeSocket()
    this[1] = new FakeSocket()
  }
}
const NodeResponse = globalThis.Response
globalThis.Response = class Response extends NodeResponse {
  constructor(body, init) {
    if (init?.status === 101) {
      super(null, { status: 200 })
      Object.defineProperty(this, 'status', { value: 101 })
      this.webSocket = init.webSocket
    } else {
      super(body, init)
    }
  }
}

export const TOKEN = 'backend-secret'
export const NOW_MS = 1_000_000_000 // tokens below expire at 2,000,000,000 s

export function who(scopes = 'read write', over = {}) {
  return { subject: 'alice', tenant: 't', scopes, expiresAt: 2_000_000_000n, ...over }
}

const text = new TextEncoder()
export const bytes = (s) => text.encode(s)

/** A message of frames given as [kind, stream, payload]. */
export function msg(...frames) {
  return encodeMessage(frames.map(([kind, stream, payload]) => ({ kind, stream, payload: payload ?? new Uint8Array(0) })))
}

export const open = (stream, path = '/rpc', identity = who()) => [FrameKind.Open, stream, encodeOpen({ path, identity })]
export const textFrame = (stream, s) => [FrameKind.Text, stream, bytes(s)]
export const binFrame = (stream, b) => [FrameKind.Binary, stream, b instanceof Uint8Array ? b : new Uint8Array(b)]
export const closeFrame = (stream, code = 1000, reason = '') => [FrameKind.Close, stream, encodeClose({ code, reason })]
export const ping = (stream, payload) => [FrameKind.Ping, stream, payload]
/** An Open carrying session `session` (32 hex digits; default 5e…) whose client has received up to `received`. */
export const attach = (stream, received = 0, { session = SESSION_ID, path = '/rpc', identity = who() } = {}) =>
  [FrameKind.Open, stream, encodeOpen({ path, identity, attach: { session, received: BigInt(received) } })]
export const SESSION_ID = '5e'.repeat(16)
/** A session's data envelope from the client: message `seq`, acknowledging `ack`. */
export const data = (stream, seq, ack, s) =>
  [FrameKind.Binary, stream, encodeEnvelope({ type: typeof s === 'string' ? 'Text' : 'Binary', seq, ack, payload: typeof s === 'string' ? bytes(s) : s })]
export const ackFrame = (stream, ack) => [FrameKind.Binary, stream, encodeEnvelope({ type: 'Ack', ack })]
export const barrier = (conn = 7) => [FrameKind.Ping, 0, new Uint8Array([1, 0, 0, 0, 0, 0, 0, 0, conn])]
export function request(stream, body, { path = '/rpc', method = 'POST', identity = who(), contentType = 'application/json' } = {}) {
  return [FrameKind.Request, stream, encodeRequest({ method, path, contentType, identity, body: bytes(body) })]
}

const utf8 = new TextDecoder()

/** A decoded frame, with its payload decoded for the kinds a backend sends. */
export function describe(f) {
  const out = { kind: Object.keys(FrameKind).find((k) => FrameKind[k] === f.kind), stream: f.stream, payload: f.payload }
  if (f.kind === FrameKind.Text) out.text = utf8.decode(f.payload)
  if (f.kind === FrameKind.Error) out.error = decodeError(f.payload)
  if (f.kind === FrameKind.Response) {
    const r = decodeResponse(f.payload)
    out.response = { ...r, text: utf8.decode(r.body) }
  }
  if (f.kind === FrameKind.Binary) {
    try {
      // As the session vectors show it: `Welcome resumed=false ack 0`, `Text#1 ack 0 hi`, `Ack 3`.
      const e = decodeEnvelope(f.payload)
      if (e.type === 'Text') out.env = `Text#${e.seq} ack ${e.ack} ${utf8.decode(e.payload)}`
      else if (e.type === 'Binary') out.env = `Binary#${e.seq} ack ${e.ack} ${[...e.payload].join(',')}`
      else if (e.type === 'Ack') out.env = `Ack ${e.ack}`
      else if (e.type === 'Welcome') out.env = `Welcome resumed=${e.resumed} ack ${e.ack}`
      else out.env = e.type
    } catch {
      // not an envelope
    }
  }
  if (f.kind === FrameKind.Close) out.close = { code: (f.payload[0] << 8) | f.payload[1], reason: utf8.decode(f.payload.subarray(2)) }
  return out
}

/** The messages sent on `ws` since the last call, each as its list of frames. */
export function takeMessages(ws) {
  const sent = ws.wire.sent.splice(0)
  return sent.map((m) => [...decodeMessage(m)].map(describe))
}

/** The frames sent on `ws` since the last call, flattened. */
export function takeFrames(ws) {
  return takeMessages(ws).flat()
}

/** A server plus a recording application, on a fake ctx. */
export function setup({ ctx = fakeCtx(), handlers = {}, options = {} } = {}) {
  const events = []
  const clock = { ms: NOW_MS }
  const app = {
    onOpen(client) {
      events.push(['open', client.stream, client.service, client.identity.subject])
    },
    onMessage(client, data) {
      events.push(['message', client.stream, data])
      client.send(data) // echo, same kind
    },
    onClose(client, code, reason, wasClean) {
      events.push(['close', client.stream, code, reason, wasClean])
    },
    onError(error, where) {
      events.push(['error', where, String(error?.message ?? error)])
    },
    ...handlers,
  }
  const server = new SnippetProxyServer(ctx, app, { token: TOKEN, now: () => clock.ms, handoverGraceMs: 20, ...options })
  return { ctx, server, events, clock, app }
}

/** Accepts a mux socket for tenant `tenant` and returns its server end. */
export function connect(server, ctx, tenant = 't') {
  const res = server.accept(new Request(`https://backend.example/db/${tenant}/mux`, {
    headers: { Authorization: `Bearer ${TOKEN}`, Upgrade: 'websocket' },
  }))
  if (res.status !== 101) throw new Error(`accept answered ${res.status}`)
  return ctx.accepted[ctx.accepted.length - 1].ws
}

/** Delivers a message to the server as the runtime would, and waits for its handling. */
export async function deliver(server, ws, message) {
  const r = server.webSocketMessage(ws, message.buffer ? message.buffer.slice(message.byteOffset, message.byteOffset + message.byteLength) : message)
  await r
  await settle()
  return r
}
