// Everything behind the public SnippetProxyServer facade that spans more than one mux socket:
// the options, the calls into the application's handlers, the registry of mux sockets (found
// again from their attachments after a wake), and the life of each client stream (send,
// close, attachment, forget). It also holds what happens when a socket goes away: its clients
// close, or are parked for a hand-over and adopted by the snippet's new socket. The answering
// of HTTP requests is here as well. Per-socket frame handling is in session.js, and storage
// is in store.js. It is kept apart from server.js so that the public classes show only
// their API.

import {
  CLIENT_LOST, FrameKind, MAX_BATCH_BYTES, MAX_CLOSE_REASON, MAX_FRAME_PAYLOAD, MAX_SESSION_STREAMS, encodeClose,
  isAllowedCloseCode, sendableCloseCode, toBytes, toHex, truncateUtf8,
} from './protocol.js'
import { checkAdmission, isExpired, secondsOf } from './authz.js'
import { after, isThenable } from './async.js'
import { SOCKET_RE, StreamStore } from './store.js'
import { Session } from './session.js'

const encoder = new TextEncoder()
const EMPTY = new Uint8Array(0)

/** How long after a barrier Ping a socket's streams may move to another socket (do-server's HANDOVER_WINDOW_MS). */
const HANDOVER_WINDOW_MS = 30_000
/** How long the clients of a socket closed mid-hand-over wait for their re-open (do-server's HANDOVER_GRACE_MS). */
const HANDOVER_GRACE_MS = 5_000

function randomSocketId() {
  const b = new Uint8Array(6)
  crypto.getRandomValues(b)
  return toHex(b)
}

function jsonReply(status, value) {
  return { status, contentType: 'application/json', body: encoder.encode(JSON.stringify(value)) }
}

/** The identity as the application sees it: plain strings, expiresAt a number of seconds. */
function publicIdentity(id) {
  return Object.freeze({ subject: id.subject, tenant: id.tenant, scopes: id.scopes, expiresAt: Number(id.expiresAt) })
}

function bytesEqual(a, b) {
  if (a.byteLength !== b.byteLength) return false
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false
  return true
}

export class Core {
  /** `newClient(st)` makes the application's client object for a stream state (server.js's MuxClient). */
  constructor(ctx, handlers, options, newClient) {
    this.ctx = ctx
    this.handlers = handlers ?? {}
    this.newClient = newClient
    this.token = options.token
    this.tag = options.tag ?? 'mux'
    this.tenantOption = options.tenant
    this.services = options.services === undefined ? ['/rpc', '/echo'] : options.services
    this.maxStreams = Math.min(options.maxStreams ?? MAX_SESSION_STREAMS, MAX_SESSION_STREAMS)
    this.maxBatchBytes = options.maxBatchBytes ?? MAX_BATCH_BYTES
    this.graceMs = options.handoverGraceMs ?? HANDOVER_GRACE_MS
    this.now = options.now ?? (() => Date.now())
    this.newSocketId = options.socketId ?? randomSocketId
    this.setTimer = options.setTimeout ?? ((fn, ms) => setTimeout(fn, ms))
    this.store = new StreamStore(ctx?.storage?.kv ?? null, options.storagePrefix ?? 'mux/')
    this.sessions = new Map() // socket id → Session, filled lazily after a wake
    this.gone = new Set() // sockets closed since this instance woke (the runtime may still list them)
    this.info = new WeakMap() // WebSocket → {socket, tenant} | null
    this.dirty = new Set()
    this.flushQueued = false
    this.deferred = []
    this.drainQueued = false
    this.orphans = new Map() // stream id → [stream state] of a closed socket awaiting their hand-over
  }

  nowSecs() {
    return secondsOf(this.now())
  }

  // --- handlers ------------------------------------------------------------------------

  report(error, context) {
    try {
      if (this.handlers.onError) this.handlers.onError.call(this.handlers, error, context)
      else console.error('snippet-proxy-server:', context ?? '', error)
    } catch (e) {
      console.error('snippet-proxy-server: onError threw', e)
    }
  }

  /** Calls a handler; a throw or a rejection goes to onError and settles as `fallback`. */
  call(name, args, fallback) {
    const fn = this.handlers[name]
    if (typeof fn !== 'function') return fallback
    try {
      const r = fn.apply(this.handlers, args)
      return isThenable(r) ? r.then(undefined, (e) => { this.report(e, name); return fallback }) : r
    } catch (e) {
      this.report(e, name)
      return fallback
    }
  }

  /** onOpen; false when it threw (the stream is then refused with Error 500). */
  openHandler(st) {
    const fn = this.handlers.onOpen
    if (typeof fn !== 'function') return true
    try {
      const r = fn.call(this.handlers, st.client)
      return isThenable(r) ? r.then(() => true, (e) => { this.report(e, 'onOpen'); return false }) : true
    } catch (e) {
      this.report(e, 'onOpen')
      return false
    }
  }

  /** Work (onClose of a close the application started) run after the current handler returns. */
  defer(fn) {
    this.deferred.push(fn)
    if (!this.drainQueued) {
      this.drainQueued = true
      queueMicrotask(() => {
        this.drainQueued = false
        this.drainDeferred()
      })
    }
  }

  drainDeferred() {
    while (this.deferred.length) {
      const fn = this.deferred.shift()
      const r = fn()
      if (isThenable(r)) return r.then(() => this.drainDeferred())
    }
    return undefined
  }

  // --- sockets -------------------------------------------------------------------------

  /** {socket, tenant} for one of our mux sockets, null for any other socket. */
  muxInfo(ws) {
    if (this.info.has(ws)) return this.info.get(ws)
    let tagged = null
    if (typeof this.ctx.getTags === 'function') {
      try {
        tagged = this.ctx.getTags(ws).includes(this.tag)
      } catch {
        tagged = null
      }
    }
    let info = null
    if (tagged !== false) {
      let a
      try {
        a = ws.deserializeAttachment()
      } catch {
        a = null
      }
      if (a && a.endpoint === 'mux' && typeof a.socket === 'string' && SOCKET_RE.test(a.socket)) {
        info = {
          socket: a.socket,
          tenant: typeof a.tenant === 'string' ? a.tenant : '',
          barrierAt: typeof a.barrierAt === 'number' ? a.barrierAt : 0,
        }
      }
    }
    this.info.set(ws, info)
    return info
  }

  session(info, ws) {
    let s = this.sessions.get(info.socket)
    if (!s) {
      // Restored from the attachment's tenant first (PROTOCOL.md §12 note 9), else KV.
      s = this.load(info.socket, info.tenant)
      s.barrierAt = info.barrierAt ?? 0
      this.sessions.set(info.socket, s)
    }
    if (ws) s.ws = ws
    return s
  }

  liveSessions() {
    const out = []
    for (const ws of this.ctx.getWebSockets(this.tag)) {
      const info = this.muxInfo(ws)
      if (info && !this.gone.has(info.socket)) out.push(this.session(info, ws))
    }
    return out
  }

  /** The stream table of a socket this instance has not seen since it woke (PROTOCOL.md §8). */
  load(socket, tenant) {
    if (!tenant) tenant = this.store.loadTenant(socket)
    const session = new Session(this, socket, tenant)
    for (const [stream, entry] of this.store.loadStreams(socket)) {
      const st = this.newStream(session, stream, entry.service, entry.identity, entry.idBytes)
      session.streams.set(stream, st)
      const meta = entry.meta
      if (meta === undefined) continue
      if (typeof meta.id === 'string') st.id = meta.id
      st.attachment = meta.attachment
      st.hasMeta = true
    }
    return session
  }

  /** Deletes the stored tables of mux sockets that no longer exist; their clients get onClose. */
  sweep() {
    const live = new Set()
    for (const ws of this.ctx.getWebSockets(this.tag)) {
      const info = this.muxInfo(ws)
      if (info) live.add(info.socket)
    }
    for (const [socket, session] of this.sessions) {
      if (!live.has(socket)) this.drop(session, false)
    }
    const dead = [...this.store.storedSockets()].filter((socket) => !live.has(socket))
    for (const socket of dead) this.drop(this.load(socket, ''), false)
  }

  /** Takes on a newly upgraded mux socket for `tenant`: hibernatable, tagged, with its own table. */
  register(ws, tenant) {
    this.ctx.acceptWebSocket(ws, [this.tag])
    this.sweep()
    const socket = this.newSocketId()
    this.store.saveTenant(socket, tenant)
    ws.serializeAttachment({ endpoint: 'mux', tenant, socket, identity: '' })
    this.info.set(ws, { socket, tenant, barrierAt: 0 })
    const session = new Session(this, socket, tenant)
    session.ws = ws
    this.sessions.set(socket, session)
  }

  message(ws, message) {
    const info = this.muxInfo(ws)
    if (!info) return false
    if (this.gone.has(info.socket)) return true
    return this.session(info, ws).receive(message)
  }

  scheduleFlush() {
    if (this.flushQueued) return
    this.flushQueued = true
    queueMicrotask(() => {
      this.flushQueued = false
      this.flushAll()
    })
  }

  flushAll() {
    for (const s of this.dirty) {
      if (s.busy) continue
      this.dirty.delete(s)
      s.flush()
    }
  }

  // --- requests ------------------------------------------------------------------------

  /** The one Response to an HTTP request: admission (401/403), then onRequest. */
  answer(req, tenant) {
    const now = this.nowSecs()
    const why = checkAdmission(req.identity, tenant, now)
    if (why) return jsonReply(isExpired(req.identity, now) ? 401 : 403, { error: why })
    if (typeof this.handlers.onRequest !== 'function') return jsonReply(404, { error: `no service at ${req.path}` })
    const request = Object.freeze({
      method: req.method,
      path: req.path,
      contentType: req.contentType,
      body: req.body.slice(),
      identity: publicIdentity(req.identity),
    })
    const failed = jsonReply(500, { error: 'internal error' })
    const r = this.call('onRequest', [request], failed)
    return after(after(r, (res) => this.normalize(res)), (res) => res ?? failed)
  }

  /** {status, contentType, body} (or a fetch Response) → the Response payload's fields. */
  normalize(res) {
    try {
      if (typeof Response !== 'undefined' && res instanceof Response) {
        return res.arrayBuffer().then(
          (body) => ({ status: res.status, contentType: res.headers.get('Content-Type') ?? '', body: new Uint8Array(body) }),
          (e) => { this.report(e, 'onRequest'); return null },
        )
      }
      if (res === undefined || res === null) return { status: 204, contentType: '', body: EMPTY }
      const status = res.status ?? 200
      if (!Number.isInteger(status) || status < 0 || status > 0xffff) throw new RangeError(`status ${status}`)
      const body = res.body === undefined || res.body === null ? EMPTY : toBytes(res.body)
      return { status, contentType: res.contentType ?? '', body }
    } catch (e) {
      this.report(e, 'onRequest')
      return null
    }
  }

  // --- streams -------------------------------------------------------------------------

  newStream(session, stream, service, identity, idBytes) {
    const st = {
      core: this,
      session,
      stream,
      service,
      identity,
      idBytes,
      publicIdentity: publicIdentity(identity),
      id: `${session.id}:${stream}`,
      attachment: undefined,
      hasMeta: false,
      open: true,
      client: null,
    }
    st.client = this.newClient(st)
    return st
  }

  /** Removes a stream from its table and storage; sends nothing. */
  forget(st) {
    if (!st.open) return
    st.open = false
    const session = st.session
    if (session.streams.get(st.stream) === st) {
      session.streams.delete(st.stream)
      if (!session.closed) this.store.unpersist(session.id, st)
    }
  }

  clientSend(st, data) {
    if (!st.open) return
    let kind
    let payload
    if (typeof data === 'string') {
      kind = FrameKind.Text
      payload = encoder.encode(data)
    } else {
      kind = FrameKind.Binary
      payload = toBytes(data).slice()
    }
    st.session.enqueue(kind, st.stream, payload)
  }

  clientClose(st, code = 1000, reason = '') {
    if (!st.open) return
    if (!isAllowedCloseCode(code)) throw new RangeError(`close code ${code} is not one a client may be closed with`)
    const text = new TextDecoder().decode(truncateUtf8(String(reason ?? ''), MAX_CLOSE_REASON))
    // The snippet closes the client and sends nothing back: the stream ends here.
    st.session.enqueue(FrameKind.Close, st.stream, encodeClose({ code, reason: text }))
    this.forget(st)
    this.defer(() => this.call('onClose', [st.client, code, text, true]))
  }

  setAttachment(st, value) {
    st.attachment = value === undefined ? undefined : structuredClone(value)
    if (st.open && !st.session.closed) this.store.persist(st)
  }

  clients() {
    const out = []
    for (const s of this.liveSessions()) for (const st of s.streams.values()) out.push(st.client)
    return out
  }

  broadcast(data, filter) {
    const text = typeof data === 'string'
    const payload = text ? encoder.encode(data) : toBytes(data).slice()
    if (payload.byteLength > MAX_FRAME_PAYLOAD) return 0
    const kind = text ? FrameKind.Text : FrameKind.Binary
    const now = this.nowSecs()
    let n = 0
    for (const s of this.liveSessions()) {
      for (const st of s.streams.values()) {
        if (isExpired(st.identity, now)) continue
        if (filter && !filter(st.client)) continue
        if (s.enqueue(kind, st.stream, payload)) n++
      }
    }
    return n
  }

  // --- socket loss and hand-over ---------------------------------------------------------

  /**
   * Hand-over (PROTOCOL.md §5.2): after a barrier Ping on an old socket, the snippet
   * re-opens the same stream ids with the same path and identity on its new socket. Such
   * an Open takes over the existing client (its id and attachment) instead of making a
   * new one, so the application sees no close and no open.
   */
  adopt(session, id, service, idBytes) {
    const matches = (st) => st.open && st.service === service && bytesEqual(st.idBytes, idBytes)
    let donor = null
    const now = this.now()
    for (const ws of this.ctx.getWebSockets(this.tag)) {
      const info = this.muxInfo(ws)
      if (!info || info.socket === session.id || this.gone.has(info.socket)) continue
      const loaded = this.sessions.get(info.socket)
      const barrierAt = loaded ? loaded.barrierAt : info.barrierAt
      if (!barrierAt || now - barrierAt > HANDOVER_WINDOW_MS) continue
      const s = loaded ?? this.session(info, ws)
      const st = s.streams.get(id)
      if (st && matches(st)) {
        donor = st
        s.streams.delete(id)
        this.store.unpersist(s.id, st)
        break
      }
    }
    if (!donor) {
      const parked = this.orphans.get(id)
      const i = parked ? parked.findIndex(matches) : -1
      if (i < 0) return false
      donor = parked.splice(i, 1)[0]
      if (!parked.length) this.orphans.delete(id)
    }
    donor.session = session
    session.streams.set(id, donor)
    this.store.persist(donor)
    return true
  }

  /** A mux socket closed or failed: its table is dropped and every client on it closes. */
  socketGone(ws, code, reason, failed) {
    const info = this.muxInfo(ws)
    if (!info) return false
    if (this.gone.has(info.socket)) return true
    const session = this.session(info, ws)
    try {
      if (failed) ws.close(1011, 'socket error')
      else ws.close(sendableCloseCode(code), reason)
    } catch {
      // already closed
    }
    const r = this.drop(session, true)
    return isThenable(r) ? r.then(() => true) : true
  }

  /**
   * Forgets a socket (memory and storage). Its clients wait for their re-open if a
   * hand-over was under way on it (`closed`: it closed, rather than vanished), else close.
   */
  drop(session, closed) {
    session.closed = true
    this.gone.add(session.id)
    this.sessions.delete(session.id)
    this.dirty.delete(session)
    session.outbox = []
    for (const q of session.queue.splice(0)) q.resolve(true)
    this.store.deleteSocket(session.id)
    const streams = [...session.streams.values()]
    session.streams.clear()
    if (!streams.length) return undefined
    if (closed && session.barrierAt && this.now() - session.barrierAt <= HANDOVER_WINDOW_MS) {
      // Closed mid-hand-over: the new socket may not have re-opened them yet.
      for (const st of streams) {
        const list = this.orphans.get(st.stream) ?? []
        list.push(st)
        this.orphans.set(st.stream, list)
      }
      this.setTimer(() => this.expireOrphans(streams), this.graceMs)
      return undefined
    }
    return this.closeAll(streams)
  }

  expireOrphans(streams) {
    const left = []
    for (const st of streams) {
      const list = this.orphans.get(st.stream)
      const i = list ? list.indexOf(st) : -1
      if (i < 0) continue // adopted by the new socket
      list.splice(i, 1)
      if (!list.length) this.orphans.delete(st.stream)
      left.push(st)
    }
    return this.closeAll(left)
  }

  /** Clients whose socket went for good: each closes for the app as lost. */
  closeAll(streams) {
    let chain
    for (const st of streams) {
      st.open = false
      chain = after(chain, () => this.call('onClose', [st.client, CLIENT_LOST.code, CLIENT_LOST.reason, false]))
    }
    return chain
  }
}
