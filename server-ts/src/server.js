// SnippetProxyServer: the backend side of snippet-proxy's multiplexed upstream, for a
// Durable Object written in JavaScript/TypeScript. It accepts the snippet's `/mux`
// WebSockets with the Hibernation API, keeps each socket's stream table in the object's
// synchronous KV storage, answers the protocol itself (Ping/Pong, errors, limits,
// admission) and hands the application one client object per stream, as if each client
// had connected to the object directly. The behaviour is that of the Rust crate
// snippet-proxy-do (do-server/), pinned by the session vectors both replay
// (protocol/vectors/session.json); the README lists where the API's shape differs.
//
// This file is the public API: SnippetProxyServer, MuxClient, and the HTTP edge (the
// upgrade in accept() and the HTTP fallback in fetch()). Both check the bearer token
// and the tenant. The machinery behind the API is internal: core.js (object-wide state,
// client lifecycle, hand-over, wake and timer), session.js (one mux socket's frames and
// batching), resumable.js (the client library's resumable sessions) and store.js (the
// stream tables and sessions in ctx.storage.kv).

import { IDENTITY_HEADER, identityFromHex } from './protocol.js'
import { DEFAULT_TENANT, OPERATOR, TENANT_RULE, authorized, isExpired, isValidTenant } from './authz.js'
import { CORE, Core } from './core.js'
import { renderMetrics } from './metrics.js'

function jsonError(status, message) {
  return new Response(JSON.stringify({ error: message }), {
    status,
    headers: { 'Content-Type': 'application/json' },
  })
}

/** This object's tenant for a request: the `tenant` option, else `{tenant}` of `/db/{tenant}/…`; null if invalid. */
function tenantOf(core, request) {
  let t = core.tenantOption
  if (typeof t === 'function') t = t(request)
  if (t === undefined || t === null) {
    const parts = new URL(request.url).pathname.replace(/^\/+|\/+$/g, '').split('/')
    t = parts[0] === 'db' && parts.length >= 2 ? parts[1] : DEFAULT_TENANT
  }
  return isValidTenant(t) ? t : null
}

/**
 * The bearer check: null when the request carries the configured token, else the refusal (500 or 401).
 * Without a token, `bindingOnly` lets everyone in: the object's callers are Workers bound to its
 * namespace (the snippet's BACKEND_BINDING), and the binding is the credential.
 */
function authorize(core, request) {
  const unset = typeof core.token !== 'string' || core.token === ''
  if (unset && core.bindingOnly) return null
  if (unset) return jsonError(500, 'BACKEND_TOKEN is not configured')
  if (!authorized(request.headers.get('Authorization'), core.token)) return jsonError(401, 'missing or wrong bearer token')
  return null
}

/** The snippet's HTTP fallback: bearer check, tenant, caller from X-Snippet-Identity (else the operator), then onRequest. */
async function httpFallback(core, request, options) {
  const refused = authorize(core, request)
  if (refused) return refused
  const tenant = tenantOf(core, request)
  if (tenant === null) return jsonError(400, TENANT_RULE)
  let identity = OPERATOR
  const hex = request.headers.get(IDENTITY_HEADER)
  if (hex !== null) {
    try {
      identity = identityFromHex(hex.trim())
    } catch (e) {
      return jsonError(400, `bad ${IDENTITY_HEADER} header: ${e.message}`)
    }
  }
  await core.wake()
  const url = new URL(request.url)
  const path = options?.path ?? `/${url.pathname.replace(/\/+$/, '').split('/').pop()}`
  const body = new Uint8Array(await request.arrayBuffer())
  const req = { method: request.method, path, contentType: request.headers.get('Content-Type') ?? '', identity, body }
  const res = await core.answer(req, tenant)
  const headers = res.contentType ? { 'Content-Type': res.contentType } : {}
  try {
    return new Response(res.body.byteLength ? res.body : null, { status: res.status, headers })
  } catch (e) {
    core.report(e, 'onRequest')
    return jsonError(500, 'internal error')
  }
}

/**
 * One client, as the application sees it: who (`identity`), which service, and a
 * WebSocket-like `send`/`close`/`serializeAttachment`/`deserializeAttachment`. A client
 * of a resumable session (`session` set) is the same object across its reconnects.
 */
export class MuxClient {
  #st
  constructor(st) {
    this.#st = st
  }
  /** Stable while the client lives, also across a hand-over to another mux socket and a session's reconnects. */
  get id() { return this.#st.id }
  /** The stream id on the snippet's upstream (a session's client gets a new one when it comes back). */
  get stream() { return this.#st.stream }
  /** Its resumable session's id (32 lowercase hex digits), or null for a plain client. */
  get session() { return this.#st.resume ? this.#st.resume.id : null }
  /** False while a session's client is away (its connection dropped; it may come back); true otherwise. */
  get attached() { return this.#st.session !== null }
  /** The Open frame's path: '/rpc' or '/echo' from the snippet. */
  get service() { return this.#st.service }
  /** The caller the snippet authenticated: {subject, tenant, scopes, expiresAt (seconds, 0 = never)}. */
  get identity() { return this.#st.publicIdentity }
  /** The mux socket the stream is on (its storage id); null while a session's client is away. */
  get socket() { return this.#st.session ? this.#st.session.id : null }
  /** 1 while open, 3 once closed (WebSocket.OPEN / WebSocket.CLOSED). */
  get readyState() { return this.#st.open ? 1 : 3 }
  /** Whether the caller's token has expired (checked again before every message anyway). */
  get expired() { return isExpired(this.#st.identity, this.#st.core.nowSecs()) }
  /** Sends a Text (string) or Binary (ArrayBuffer, view) message to this client. A no-op once closed; kept for a session's client that is away. */
  send(data) { this.#st.core.clientSend(this.#st, data) }
  /** Closes this client with an allowed code (1000 by default) and a reason cut to MAX_CLOSE_REASON bytes; onClose follows. */
  close(code, reason) { this.#st.core.clientClose(this.#st, code, reason) }
  /** Keeps a structured-cloneable value with this client, in storage: it survives hibernation. */
  serializeAttachment(value) { this.#st.core.setAttachment(this.#st, value) }
  /** A copy of what serializeAttachment stored (undefined if nothing). */
  deserializeAttachment() {
    const a = this.#st.attachment
    return a === undefined ? undefined : structuredClone(a)
  }
  toJSON() {
    return {
      id: this.id, stream: this.stream, service: this.service, identity: this.identity, socket: this.socket,
      session: this.session,
    }
  }
}

/**
 * The server side of the snippet's multiplexed upstream, inside an existing Durable
 * Object. See the package README for the few lines to add.
 */
export class SnippetProxyServer {
  #core
  /**
   * @param ctx the Durable Object's state (`this.ctx`)
   * @param handlers {onOpen, onMessage, onClose, onRequest, onError}, all optional
   * @param options {token, bindingOnly, tenant, services, tag, storagePrefix, sessionPrefix, maxStreams, maxBatchBytes, handoverGraceMs, autoResponse, now, socketId, setTimeout}
   */
  constructor(ctx, handlers = {}, options = {}) {
    this.#core = new Core(ctx, handlers, options, (st) => new MuxClient(st))
  }

  /** The core, for the package's tests. */
  get [CORE]() {
    return this.#core
  }

  /** Accepts the snippet's upgrade (`/db/{tenant}/mux`): 500 without a token configured, 401, 426, 400, else 101. */
  accept(request) {
    const core = this.#core
    const refused = authorize(core, request)
    if (refused) return refused
    if ((request.headers.get('Upgrade') ?? '').toLowerCase() !== 'websocket') {
      return jsonError(426, 'this endpoint needs a WebSocket upgrade')
    }
    const tenant = tenantOf(core, request)
    if (tenant === null) return jsonError(400, TENANT_RULE)
    const pair = new WebSocketPair()
    const client = pair[0]
    const server = pair[1]
    core.register(server, tenant)
    return new Response(null, { status: 101, webSocket: client })
  }

  /** Handles a message if `ws` is a mux socket: returns false for any other socket, else true or a promise of true. */
  webSocketMessage(ws, message) {
    return this.#core.message(ws, message)
  }

  /** Handles the close of a mux socket (false for any other socket). */
  webSocketClose(ws, code, reason, _wasClean) {
    return this.#core.socketGone(ws, code, reason, false)
  }

  /** Handles the failure of a mux socket (false for any other socket). */
  webSocketError(ws, _error) {
    return this.#core.socketGone(ws, 1006, '', true)
  }

  /** The snippet's HTTP fallback (POST /db/{tenant}/rpc with X-Snippet-Identity) answered by onRequest. */
  fetch(request, options) {
    return httpFallback(this.#core, request, options)
  }

  /** Whether `ws` is one of this server's mux sockets. */
  isMuxSocket(ws) {
    return this.#core.muxInfo(ws) !== null
  }

  /** Every client: those on every mux socket, then sessions' clients that are away (restored from storage after a wake). */
  clients() {
    return this.#core.clients()
  }

  /** Sends `data` to every open, unexpired client that `filter` accepts (one batch per mux socket; kept for sessions' clients that are away). Returns how many. */
  broadcast(data, filter) {
    return this.#core.broadcast(data, filter)
  }

  /** {sockets, streams, detached, sessions}: mux sockets, clients on them, sessions' clients that are away, what the sessions did since the wake. */
  stats() {
    return this.#core.stats()
  }

  /**
   * The operator's view of this object (the same JSON as the Rust crate's View): upstreams
   * (mux sockets) and the streams on each, and what the server did since this instance woke.
   */
  view() {
    return this.#core.view()
  }

  /** The same view in the Prometheus text format 0.0.4 (Content-Type: METRICS_CONTENT_TYPE). */
  metrics() {
    return renderMetrics(this.#core.view())
  }
}
