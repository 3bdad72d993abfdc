// Everything behind the public SnippetProxyServer facade that spans more than one mux socket:
// the options, the calls into the application's handlers, the registry of mux sockets (found
// again from their attachments after a wake), and the life of each client stream (send,
// close, attachment, forget). It also holds what happens when a socket goes away: its clients
// close, or are parked for a hand-over and adopted by the snippet's new socket, and the
// clients of resumable sessions (resumable.js), which outlive their connections. The wake
// (what is restored from storage when a new instance first hears of anything) and the
// timer (hand-over grace windows, session expiry) are here too, and the answering of HTTP
// requests. Per-socket frame handling is in session.js, and storage is in store.js. It is
// kept apart from server.js so that the public classes show only their API.

import {
  CLIENT_LOST, FrameKind, MAX_BATCH_BYTES, MAX_CLOSE_REASON, MAX_FRAME_PAYLOAD, MAX_SESSION_STREAMS, SESSION_EXPIRED,
  SESSION_MOVED, encodeClose, isAllowedCloseCode, sendableCloseCode, toBytes, toHex, truncateUtf8,
} from './protocol.js'
import { checkAdmission, isExpired, secondsOf } from './authz.js'
import { after, isThenable } from './async.js'
import { SOCKET_RE, StreamStore } from './store.js'
import { Session } from './session.js'
import { ResumableSessions } from './resumable.js'
import { newCounters, objectView } from './view.js'

/** How the server's core is reached from the tests (not part of the package's API). */
export const CORE = Symbol('snippet-proxy-server core')

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
    this.bindingOnly = options.bindingOnly === true
    this.tag = options.tag ?? 'mux'
    this.tenantOption = options.tenant
    this.services = options.services === undefined ? ['/rpc', '/echo'] : options.services
    this.maxStreams = Math.min(options.maxStreams ?? MAX_SESSION_STREAMS, MAX_SESSION_STREAMS)
    this.maxBatchBytes = options.maxBatchBytes ?? MAX_BATCH_BYTES
    this.graceMs = options.handoverGraceMs ?? HANDOVER_GRACE_MS
    this.now = options.now ?? (() => Date.now())
    this.newSocketId = options.socketId ?? randomSocketId
    this.setTimer = options.setTimeout ?? ((fn, ms) => setTimeout(fn, ms))
    this.store = new StreamStore(ctx?.storage?.kv ?? null, options.storagePrefix ?? 'mux/', options.sessionPrefix ?? 'sess/')
    this.resumable = new ResumableSessions(this)
    this.awake = false // whether this instance has restored what it needs from storage
    this.waking = undefined // while the wake's handlers settle: its promise
    this.timerAt = null // when the armed timer fires (ms), if one is armed
    this.sessions = new Map() // socket id → Session, filled lazily after a wake
    this.gone = new Set() // sockets closed since this instance woke (the runtime may still list them)
    this.info = new WeakMap() // WebSocket → {socket, tenant} | null
    this.dirty = new Set()
    this.flushQueued = false
    this.deferred = []
    this.drainQueued = false
    this.orphans = [] // stream states of a closed socket awaiting their hand-over (each with orphanUntil)
    this.counters = newCounters() // what this instance did since it woke (view.js); in memory only
    this.wokeAt = 0 // when this instance woke (ms)
    this.tenant = '' // the tenant the sockets were accepted for ('' before any)
    if (options.autoResponse !== false) this.setAutoResponse()
  }

  /**
   * The runtime answers a text `ping` on any of the object's sockets with `pong`, without
   * waking it: the snippet's heartbeat on a mux socket (and any direct socket's). The
   * object has one auto-response; this sets it.
   */
  setAutoResponse() {
    const ctx = this.ctx
    if (typeof ctx?.setWebSocketAutoResponse !== 'function' || typeof WebSocketRequestResponsePair !== 'function') return
    try {
      ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair('ping', 'pong'))
    } catch (e) {
      this.report(e, 'setWebSocketAutoResponse')
    }
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
    let chain
    for (const [socket, session] of this.sessions) {
      if (!live.has(socket)) chain = after(chain, () => this.drop(session, false))
    }
    const dead = [...this.store.storedSockets()].filter((socket) => !live.has(socket))
    for (const socket of dead) chain = after(chain, () => this.drop(this.load(socket, ''), false))
    return chain
  }

  /**
   * The first event of this instance (PROTOCOL.md §8): the resumable sessions are read
   * back from storage. One attached to a live socket goes back on it; one whose socket
   * is gone is detached. Tables of sockets that died without a close event are swept,
   * and sessions whose window is over end. Returns a promise if a handler did, and the
   * same promise to every caller until it settles (so messages keep their order).
   */
  wake() {
    if (this.awake) return this.waking
    this.awake = true
    const now = this.now()
    this.wokeAt = now
    const live = new Map()
    for (const ws of this.ctx.getWebSockets(this.tag)) {
      const info = this.muxInfo(ws)
      if (info && !this.gone.has(info.socket)) live.set(info.socket, { info, ws })
    }
    // The tenant of the first live socket that names one, in id order (as the Rust core).
    const named = [...live.values()].filter((l) => l.info.tenant).map((l) => l.info)
    named.sort((a, b) => (a.socket < b.socket ? -1 : 1))
    if (named.length) this.tenant = named[0].tenant
    const restored = this.resumable.restore(this.store.loadSessions(), (summary) => {
      const { origin, at } = summary
      const stream = at ? at.stream : origin.stream
      const st = this.newStream(null, stream, summary.service, summary.identity, summary.idBytes, `${origin.socket}:${origin.stream}`)
      st.attachment = summary.attachment
      return st
    })
    for (const { rec, at } of restored) {
      const where = at && live.get(at.socket)
      if (where) {
        const sock = this.session(where.info, where.ws)
        rec.st.session = sock
        sock.streams.set(at.stream, rec.st)
      } else {
        this.resumable.orphaned(rec, now)
      }
    }
    const swept = this.sweep()
    const r = after(after(swept, () => this.expireSessions(now)), () => this.finish())
    if (!isThenable(r)) return undefined
    this.waking = r.then(() => { this.waking = undefined })
    return this.waking
  }

  // --- time ----------------------------------------------------------------------------

  /** When the server next has something to do by itself (ms): a grace window or a session's window ends. */
  nextTimeout() {
    let next = this.resumable.nextExpiry()
    for (const st of this.orphans) if (next === null || st.orphanUntil < next) next = st.orphanUntil
    return next
  }

  /** Arms a timer for the next deadline, unless one fires by then already (do-server's glue does the same). */
  arm() {
    const due = this.nextTimeout()
    if (due === null || (this.timerAt !== null && this.timerAt <= due)) return
    this.timerAt = due
    this.setTimer(() => {
      if (this.timerAt === due) this.timerAt = null
      return this.handleTimeout(Math.max(this.now(), due))
    }, Math.max(0, due - this.now()))
  }

  /** Time passed: orphans of a hand-over that waited out their grace window close, and sessions nobody came back to end. */
  handleTimeout(now) {
    return after(this.wake(), () => {
      const due = []
      for (let i = 0; i < this.orphans.length;) {
        if (this.orphans[i].orphanUntil <= now) due.push(...this.orphans.splice(i, 1))
        else i++
      }
      const lost = this.closeAll(due)
      return after(after(lost, () => this.expireSessions(now)), () => this.finish())
    })
  }

  /** Ends the sessions whose window is over: their clients close for the app (SESSION_EXPIRED). */
  expireSessions(now) {
    let chain
    for (const rec of this.resumable.expired(now)) {
      chain = after(chain, () => {
        if (rec.ended) return undefined
        this.resumable.counters.expired++
        return this.end(rec.st, SESSION_EXPIRED.code, SESSION_EXPIRED.reason, false)
      })
    }
    return chain
  }

  /** The end of an input: the sessions' Acks, journal record and summaries, every socket's replies, the timer. */
  finish() {
    this.flushAll()
  }

  /** Takes on a newly upgraded mux socket for `tenant`: hibernatable, tagged, with its own table. */
  register(ws, tenant) {
    this.wake()
    this.ctx.acceptWebSocket(ws, [this.tag])
    this.sweep()
    this.counters.socketsAccepted++
    if (tenant) this.tenant = tenant
    const socket = this.newSocketId()
    this.store.saveTenant(socket, tenant)
    ws.serializeAttachment({ endpoint: 'mux', tenant, socket, identity: '' })
    this.info.set(ws, { socket, tenant, barrierAt: 0 })
    const session = new Session(this, socket, tenant)
    session.ws = ws
    this.sessions.set(socket, session)
    this.finish()
  }

  message(ws, message) {
    const info = this.muxInfo(ws)
    if (!info) return false
    if (message === 'ping') {
      // The snippet's heartbeat, when the runtime's auto-response did not answer it (the
      // object set another): answered here, so the upstream is not taken for a broken one.
      try {
        ws.send('pong')
      } catch {
        // closing
      }
      return true
    }
    return after(this.wake(), () => {
      if (this.gone.has(info.socket)) return true
      return this.session(info, ws).receive(message)
    })
  }

  scheduleFlush() {
    if (this.flushQueued) return
    this.flushQueued = true
    queueMicrotask(() => {
      this.flushQueued = false
      this.flushAll()
    })
  }

  /** Sends what every socket not busy with a message has queued, after the sessions' Acks; stores the sessions; arms the timer. */
  flushAll() {
    this.resumable.finishInput()
    for (const s of this.dirty) {
      if (s.busy) continue
      this.dirty.delete(s)
      s.flush()
    }
    this.arm()
  }

  // --- requests ------------------------------------------------------------------------

  /** The one Response to an HTTP request: admission (401/403), then onRequest. */
  answer(req, tenant) {
    const now = this.nowSecs()
    this.counters.requests++
    const why = checkAdmission(req.identity, tenant, now)
    if (why) {
      this.counters.refused.request++
      return jsonReply(isExpired(req.identity, now) ? 401 : 403, { error: why })
    }
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

  /**
   * A client's state. `session` is its mux socket (null for a session's client that is
   * detached); `id` defaults to `{socket}:{stream}`. `resume` is its session's record
   * (resumable.js), for a client of the client library.
   */
  newStream(session, stream, service, identity, idBytes, id = `${session.id}:${stream}`) {
    const st = {
      core: this,
      session,
      stream,
      service,
      identity,
      idBytes,
      publicIdentity: publicIdentity(identity),
      id,
      attachment: undefined,
      hasMeta: false,
      open: true,
      client: null,
      resume: null,
      orphanUntil: 0,
    }
    st.client = this.newClient(st)
    return st
  }

  /** A session's client came back with a (maybe renewed) identity. */
  setIdentity(st, identity, idBytes) {
    st.identity = identity
    st.idBytes = idBytes
    st.publicIdentity = publicIdentity(identity)
  }

  /** The client ends: it leaves its table and storage, and its session (if any) ends. Sends nothing. */
  forget(st) {
    if (!st.open) return
    st.open = false
    const session = st.session
    if (session && session.streams.get(st.stream) === st) {
      session.streams.delete(st.stream)
      if (!session.closed && !st.resume) this.store.unpersist(session.id, st)
    }
    if (st.resume) this.resumable.end(st.resume)
  }

  /** A client ends for the application: forgotten, then onClose. */
  end(st, code, reason, wasClean) {
    this.forget(st)
    return this.closed(st, code, reason, wasClean)
  }

  /** onClose, counted. */
  closed(st, code, reason, wasClean) {
    this.counters.closed++
    return this.call('onClose', [st.client, code, reason, wasClean])
  }

  /** A session's client leaves its stream (detached, or attached elsewhere next); it stays the app's client. */
  unplace(st) {
    const session = st.session
    if (session && session.streams.get(st.stream) === st) session.streams.delete(st.stream)
    st.session = null
  }

  /**
   * A session moved off the stream its client is on: the stream is forgotten, and told
   * so (Close session.moved) unless its socket is handing over (its streams are
   * re-opened elsewhere).
   */
  leave(st) {
    const sock = st.session
    const stream = st.stream
    if (!sock) return
    this.unplace(st)
    const handingOver = sock.barrierAt && this.now() - sock.barrierAt <= HANDOVER_WINDOW_MS
    if (!sock.closed && !handingOver) {
      sock.enqueue(FrameKind.Close, stream, encodeClose({ code: SESSION_MOVED.code, reason: SESSION_MOVED.reason }))
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
    if (st.resume) {
      // Numbered and kept; sent now if the session is attached, else when it resumes.
      this.resumable.send(st.resume, kind === FrameKind.Text, payload, this.now())
      this.scheduleFlush()
      return
    }
    st.session.enqueue(kind, st.stream, payload)
  }

  clientClose(st, code = 1000, reason = '') {
    if (!st.open) return
    if (!isAllowedCloseCode(code)) throw new RangeError(`close code ${code} is not one a client may be closed with`)
    const text = new TextDecoder().decode(truncateUtf8(String(reason ?? ''), MAX_CLOSE_REASON))
    // The snippet closes the client and sends nothing back: the stream ends here. A
    // session's client whose connection is down just ends.
    if (st.session) st.session.enqueue(FrameKind.Close, st.stream, encodeClose({ code, reason: text }))
    this.forget(st)
    this.defer(() => this.closed(st, code, text, true))
  }

  setAttachment(st, value) {
    st.attachment = value === undefined ? undefined : structuredClone(value)
    if (!st.open) return
    // A session's client's attachment is in its summary.
    if (st.resume) this.resumable.attachmentChanged(st.resume)
    else if (!st.session.closed) this.store.persist(st)
  }

  /** Every client: those on live sockets, then sessions' clients whose connection is down. */
  clients() {
    this.wake()
    const out = []
    for (const s of this.liveSessions()) for (const st of s.streams.values()) out.push(st.client)
    for (const rec of this.resumable.detached()) out.push(rec.st.client)
    return out
  }

  broadcast(data, filter) {
    this.wake()
    const text = typeof data === 'string'
    const payload = text ? encoder.encode(data) : toBytes(data).slice()
    if (payload.byteLength > MAX_FRAME_PAYLOAD) return 0
    const kind = text ? FrameKind.Text : FrameKind.Binary
    const now = this.nowSecs()
    const ms = this.now()
    const reaches = (st) => st.open && !isExpired(st.identity, now) && (!filter || filter(st.client))
    let n = 0
    for (const s of this.liveSessions()) {
      for (const st of s.streams.values()) {
        if (!reaches(st)) continue
        if (st.resume) {
          this.resumable.send(st.resume, text, payload, ms)
          n++
        } else if (s.enqueue(kind, st.stream, payload)) {
          n++
        }
      }
    }
    // Clients whose connection dropped: kept for when they come back.
    for (const rec of this.resumable.detached()) {
      if (!reaches(rec.st)) continue
      this.resumable.send(rec, text, payload, ms)
      n++
    }
    this.scheduleFlush()
    return n
  }

  /** The operator's view at `now` (view.js). */
  view() {
    this.wake()
    return objectView(this, this.now())
  }

  /** {sockets, streams, detached, sessions}: mux sockets, clients on them, sessions' clients whose connection is down, and what the sessions did. */
  stats() {
    this.wake()
    const sockets = this.liveSessions()
    return {
      sockets: sockets.length,
      streams: sockets.reduce((n, s) => n + s.streams.size, 0),
      detached: this.resumable.detached().length,
      sessions: { ...this.resumable.counters },
    }
  }

  // --- socket loss and hand-over ---------------------------------------------------------

  /**
   * Hand-over (PROTOCOL.md §5.2): after a barrier Ping on an old socket, the snippet
   * re-opens the same stream ids with the same path and identity on its new socket. Such
   * an Open takes over the existing client (its id and attachment) instead of making a
   * new one, so the application sees no close and no open.
   */
  adopt(session, id, service, idBytes) {
    // A session's client moves by its Attach only (the snippet re-opens it with one).
    const matches = (st) => st.open && !st.resume && st.stream === id && st.service === service && bytesEqual(st.idBytes, idBytes)
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
      const i = this.orphans.findIndex(matches)
      if (i < 0) return false
      // Taken out as the Rust core does (swap_remove), so the rest close in the same order.
      donor = this.orphans[i]
      const last = this.orphans.pop()
      if (last !== donor) this.orphans[i] = last
    }
    donor.session = session
    session.streams.set(id, donor)
    this.store.persist(donor)
    this.counters.adopted++
    return true
  }

  /** A mux socket closed or failed: its table is dropped and every client on it closes. */
  socketGone(ws, code, reason, failed) {
    const info = this.muxInfo(ws)
    if (!info) return false
    return after(this.wake(), () => {
      if (this.gone.has(info.socket)) return true
      const session = this.session(info, ws)
      try {
        if (failed) ws.close(1011, 'socket error')
        else ws.close(sendableCloseCode(code), reason)
      } catch {
        // already closed
      }
      return after(this.drop(session, true), () => {
        this.finish()
        return true
      })
    })
  }

  /**
   * Forgets a socket (memory and storage). Its sessions' clients only lose their
   * connection: they wait for their client to come back. Its other clients wait for
   * their re-open if a hand-over was under way on it (`closed`: it closed, rather than
   * vanished), else close.
   */
  drop(session, closed) {
    this.counters.socketsClosed++
    session.closed = true
    this.gone.add(session.id)
    this.sessions.delete(session.id)
    this.dirty.delete(session)
    session.outbox = []
    for (const q of session.queue.splice(0)) q.resolve(true)
    this.store.deleteSocket(session.id)
    const now = this.now()
    const streams = []
    for (const st of session.streams.values()) {
      if (st.resume) {
        st.session = null
        this.resumable.detach(st.resume, now)
      } else {
        streams.push(st)
      }
    }
    session.streams.clear()
    if (!streams.length) return undefined
    if (closed && session.barrierAt && now - session.barrierAt <= HANDOVER_WINDOW_MS) {
      // Closed mid-hand-over: the new socket may not have re-opened them yet.
      this.counters.orphaned += streams.length
      for (const st of streams) {
        st.orphanUntil = now + this.graceMs
        this.orphans.push(st)
      }
      this.arm()
      return undefined
    }
    return this.closeAll(streams)
  }

  /** Clients whose socket went for good: each closes for the app as lost. */
  closeAll(streams) {
    let chain
    for (const st of streams) {
      st.open = false
      this.counters.lost++
      chain = after(chain, () => this.closed(st, CLIENT_LOST.code, CLIENT_LOST.reason, false))
    }
    return chain
  }
}
