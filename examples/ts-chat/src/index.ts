// An ordinary TypeScript Durable Object — a chat room with a counter, one object per
// tenant — that also serves snippet-proxy's multiplexed upstream. The room's logic is
// written once, for a "peer": a WebSocket that connected directly, or a MuxClient (one
// client of the snippet). Both have send, close, serializeAttachment and
// deserializeAttachment, so the code does not care which it has.
//
// Services, as the snippet's clients and `test-client load` expect them:
//   /echo  every Text/Binary message comes back unchanged, same kind (needs `read`)
//   /rpc   JSON-RPC 2.0: ping, echo, whoami, nick, members, count, broadcast, stats
// over the snippet (`/db/{tenant}/ws`, `/db/{tenant}/ws/echo`, `POST /db/{tenant}/rpc`),
// or directly with the backend token (`/db/{tenant}/ws`, `/db/{tenant}/echo`,
// `POST /db/{tenant}/rpc`), like the Rust reference backend.

import { DurableObject } from 'cloudflare:workers'
import {
  DEFAULT_TENANT,
  METRICS_CONTENT_TYPE,
  MuxClient,
  SnippetProxyServer,
  TENANT_RULE,
  authorized,
  grants,
  isValidTenant,
  protocol,
  type Identity,
  type ProxiedRequest,
  type ProxiedResponse,
} from '../../../server-ts/src/index.js'

export interface Env {
  ROOM: DurableObjectNamespace<Room>
  /** The token the snippet (and operators) present; from `--var`, `.dev.vars` or a secret. */
  BACKEND_TOKEN?: string
}

const HELP = `snippet-proxy-example-ts: a TypeScript Durable Object behind snippet-proxy.
  /db/{tenant}/mux          the snippet's multiplexed upstream (WebSocket)
  /db/{tenant}/ws           JSON-RPC over a direct WebSocket
  /db/{tenant}/echo         raw echo over a direct WebSocket
  POST /db/{tenant}/rpc     JSON-RPC over HTTP (also the snippet's fallback)
  GET /db/{tenant}/__stats  the object's view for operators (JSON); /__metrics: Prometheus text
All need Authorization: Bearer <BACKEND_TOKEN>. Without /db/{tenant}: tenant "default".
`

function json(status: number, value: unknown): Response {
  return new Response(JSON.stringify(value), { status, headers: { 'Content-Type': 'application/json' } })
}

/** `/db/{tenant}/{endpoint}` or `/{endpoint}` (tenant default), as the Rust backend routes. */
function route(pathname: string): { tenant: string; endpoint: string } | null {
  const parts = pathname.replace(/^\/+|\/+$/g, '').split('/')
  if (parts.length === 3 && parts[0] === 'db') return { tenant: parts[1], endpoint: parts[2] }
  if (parts.length === 1) return { tenant: DEFAULT_TENANT, endpoint: parts[0] }
  return null
}

const ENDPOINTS = new Set(['mux', 'ws', 'echo', 'rpc', 'query', '__stats', '__metrics'])

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const url = new URL(request.url)
    if (url.pathname === '/') return new Response(HELP)
    const r = route(url.pathname)
    if (!r || !ENDPOINTS.has(r.endpoint)) return json(404, { error: 'not found; see GET /' })
    if (!isValidTenant(r.tenant)) return json(400, { error: TENANT_RULE })
    // Checked here too, so that nobody without the token wakes an object.
    if (!env.BACKEND_TOKEN) return json(500, { error: 'BACKEND_TOKEN is not configured' })
    if (!authorized(request.headers.get('Authorization'), env.BACKEND_TOKEN)) {
      return json(401, { error: 'missing or wrong bearer token' })
    }
    const stub = env.ROOM.get(env.ROOM.idFromName(r.tenant))
    return stub.fetch(request)
  },
} satisfies ExportedHandler<Env>

/** Who a directly connected socket is, kept in its attachment (the operator: it holds the backend token). */
interface DirectAttachment {
  service: '/rpc' | '/echo'
  identity: Identity
  nick?: string
}

type Peer = WebSocket | MuxClient

const OPERATOR: Identity = { subject: 'operator', tenant: '*', scopes: 'admin', expiresAt: 0 }

type Json = null | boolean | number | string | Json[] | { [key: string]: Json }
type RpcReply = { jsonrpc: '2.0'; id: Json; result?: Json; error?: { code: number; message: string } }

const MAX_BATCH = 100
const MAX_BROADCAST_BYTES = 64 * 1024
const code = {
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  METHOD_NOT_FOUND: -32601,
  INVALID_PARAMS: -32602,
  FORBIDDEN: -32002,
} as const

const errorReply = (id: Json, c: number, message: string): RpcReply => ({ jsonrpc: '2.0', error: { code: c, message }, id })

/** A parameter by name (object params) or by position (array params). */
function param(params: Json, name: string, index: number): Json | undefined {
  if (Array.isArray(params)) return params[index]
  if (params !== null && typeof params === 'object') return params[name]
  return undefined
}

class RpcError extends Error {
  constructor(readonly code: number, message: string) {
    super(message)
  }
}

/** One chat room: every tenant gets its own. */
export class Room extends DurableObject<Env> {
  // The snippet's upstream: these few lines are all a Durable Object needs to add.
  mux = new SnippetProxyServer(
    this.ctx,
    {
      // One fixed, greppable line per arrival and per departure, the same as the Rust
      // example's (examples/rs-presence; the e2e test counts them). client.id stays the
      // same across the snippet's hand-overs, which the app never sees.
      onOpen: (client) => {
        console.log(`presence: open ${client.id} ${client.identity.subject}`)
        this.opened(client)
      },
      onClose: (client, code, reason) => {
        console.log(`presence: close ${client.id} ${client.identity.subject} ${code} ${reason}`)
      },
      onMessage: (client, data) => this.message(client, data),
      onRequest: (req) => this.request(req),
    },
    { token: this.env.BACKEND_TOKEN },
  )

  /** Times this object was constructed (first start and every wake from hibernation). */
  private wakes: number
  /** WebSocket messages this instance has handled: 1 on the first after a wake. */
  private messages = 0

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env)
    ctx.storage.sql.exec('CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)')
    this.wakes = Number(ctx.storage.kv.get('wakes') ?? 0) + 1
    ctx.storage.kv.put('wakes', this.wakes)
    // Heartbeats of direct sockets are answered by the runtime without waking the object.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair('ping', 'pong'))
  }

  async fetch(request: Request): Promise<Response> {
    const endpoint = route(new URL(request.url).pathname)?.endpoint
    if (endpoint === 'mux') return this.mux.accept(request)
    if (endpoint === '__stats' || endpoint === '__metrics') {
      // The operator's view of this object. The Worker checked the backend token; checked
      // again here, as for the direct sockets below, because the view is never public.
      if (!authorized(request.headers.get('Authorization'), this.env.BACKEND_TOKEN)) {
        return json(401, { error: 'missing or wrong bearer token' })
      }
      if (request.method !== 'GET') return json(405, { error: 'use GET' })
      if (endpoint === '__stats') return json(200, this.mux.view())
      return new Response(this.mux.metrics(), { headers: { 'Content-Type': METRICS_CONTENT_TYPE } })
    }
    if (endpoint === 'rpc' || endpoint === 'query') {
      if (request.method !== 'POST') return json(405, { error: 'use POST' })
      return this.mux.fetch(request) // the same onRequest as Request frames (identity from X-Snippet-Identity)
    }
    // The room's own, direct WebSockets (as before the snippet existed).
    if (!authorized(request.headers.get('Authorization'), this.env.BACKEND_TOKEN)) {
      return json(401, { error: 'missing or wrong bearer token' })
    }
    if (request.headers.get('Upgrade')?.toLowerCase() !== 'websocket') {
      return json(426, { error: 'this endpoint needs a WebSocket upgrade' })
    }
    const pair = new WebSocketPair()
    const [client, server] = [pair[0], pair[1]]
    const service = endpoint === 'echo' ? '/echo' : '/rpc'
    this.ctx.acceptWebSocket(server, [service === '/echo' ? 'echo' : 'ws'])
    server.serializeAttachment({ service, identity: OPERATOR } satisfies DirectAttachment)
    return new Response(null, { status: 101, webSocket: client })
  }

  async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    this.messages++
    if (await this.mux.webSocketMessage(ws, message)) return
    this.message(ws, message)
  }

  async webSocketClose(ws: WebSocket, code: number, reason: string, wasClean: boolean): Promise<void> {
    if (await this.mux.webSocketClose(ws, code, reason, wasClean)) return
    try {
      ws.close(protocol.sendableCloseCode(code), reason)
    } catch {
      // already closed
    }
  }

  async webSocketError(ws: WebSocket, error: unknown): Promise<void> {
    await this.mux.webSocketError(ws, error)
  }

  // --- the room's logic, one peer at a time --------------------------------------------

  private who(peer: Peer): { service: string; identity: Identity } {
    if (peer instanceof MuxClient) return { service: peer.service, identity: peer.identity }
    const a = peer.deserializeAttachment() as DirectAttachment
    return { service: a.service, identity: a.identity }
  }

  private opened(client: MuxClient): void {
    // The raw echo service needs `read`, as in the reference backend.
    if (client.service === '/echo' && !grants(client.identity).read) {
      client.close(1008, 'the echo service needs the read scope')
    }
  }

  private message(peer: Peer, data: string | ArrayBuffer): void {
    const { service, identity } = this.who(peer)
    if (service === '/echo') {
      peer.send(data) // same kind back
      return
    }
    const text = typeof data === 'string' ? data : new TextDecoder().decode(data)
    const reply = this.rpc(text, identity, peer)
    if (reply !== null) peer.send(reply)
  }

  private request(req: ProxiedRequest): ProxiedResponse {
    if (req.method !== 'POST') return { status: 405, contentType: 'application/json', body: '{"error":"use POST"}' }
    if (req.path === '/rpc') {
      const reply = this.rpc(new TextDecoder().decode(req.body), req.identity, null)
      return reply === null ? { status: 204 } : { status: 200, contentType: 'application/json', body: reply }
    }
    if (req.path === '/echo') {
      if (!grants(req.identity).read) return { status: 403, contentType: 'application/json', body: '{"error":"echo needs the read scope"}' }
      return { status: 200, contentType: req.contentType, body: req.body }
    }
    return { status: 404, contentType: 'application/json', body: JSON.stringify({ error: `no service at ${req.path}` }) }
  }

  // --- JSON-RPC 2.0 ---------------------------------------------------------------------

  /** The reply text to one JSON-RPC message (single or batch), or null when nothing is owed. */
  private rpc(text: string, identity: Identity, peer: Peer | null): string | null {
    let parsed: Json
    try {
      parsed = JSON.parse(text)
    } catch (e) {
      return JSON.stringify(errorReply(null, code.PARSE_ERROR, `parse error: ${(e as Error).message}`))
    }
    if (Array.isArray(parsed)) {
      if (parsed.length === 0) return JSON.stringify(errorReply(null, code.INVALID_REQUEST, 'empty batch'))
      if (parsed.length > MAX_BATCH) {
        const why = `batch of ${parsed.length} requests exceeds the limit of ${MAX_BATCH}`
        return JSON.stringify(errorReply(null, code.INVALID_REQUEST, why))
      }
      const replies = parsed.map((item) => this.call(item, identity, peer)).filter((r) => r !== null)
      return replies.length ? JSON.stringify(replies) : null
    }
    const reply = this.call(parsed, identity, peer)
    return reply === null ? null : JSON.stringify(reply)
  }

  private call(req: Json, identity: Identity, peer: Peer | null): RpcReply | null {
    if (req === null || typeof req !== 'object' || Array.isArray(req)) {
      return errorReply(null, code.INVALID_REQUEST, 'request must be an object')
    }
    const notification = !('id' in req)
    const id = notification ? null : req.id
    if (!(id === null || typeof id === 'number' || typeof id === 'string')) {
      return errorReply(null, code.INVALID_REQUEST, 'id must be a string, number or null')
    }
    if (req.jsonrpc !== '2.0') return errorReply(id, code.INVALID_REQUEST, 'jsonrpc must be "2.0"')
    if (typeof req.method !== 'string') return errorReply(id, code.INVALID_REQUEST, 'method must be a string')
    const params = req.params ?? null
    if (!(params === null || typeof params === 'object')) {
      return errorReply(id, code.INVALID_REQUEST, 'params must be an array or object')
    }
    let reply: RpcReply
    try {
      reply = { jsonrpc: '2.0', result: this.dispatch(req.method, params, identity, peer), id }
    } catch (e) {
      if (!(e instanceof RpcError)) throw e
      reply = errorReply(id, e.code, e.message)
    }
    return notification ? null : reply
  }

  private dispatch(method: string, params: Json, identity: Identity, peer: Peer | null): Json {
    const g = grants(identity)
    const need = (ok: boolean, scope: string) => {
      if (!ok) throw new RpcError(code.FORBIDDEN, `${method} needs the ${scope} scope`)
    }
    switch (method) {
      case 'ping':
        need(g.read, 'read')
        return 'pong'
      case 'echo':
        need(g.read, 'read')
        return params
      case 'whoami':
        need(g.read, 'read')
        return { ...identity, nick: peer ? this.nick(peer) : null }
      case 'nick': {
        // Per-connection state in the peer's attachment: it survives hibernation, and the
        // snippet's hand-overs, for direct sockets and snippet clients alike.
        need(g.read, 'read')
        const name = param(params, 'name', 0)
        if (typeof name !== 'string' || name.length > 64) throw new RpcError(code.INVALID_PARAMS, 'nick needs {"name": "<at most 64 characters>"}')
        if (!peer) throw new RpcError(code.INVALID_PARAMS, 'nick needs a WebSocket')
        peer.serializeAttachment({ ...(peer.deserializeAttachment() as object | undefined), nick: name })
        return name
      }
      case 'members':
        need(g.read, 'read')
        return this.listeners().map((p) => ({ subject: this.who(p).identity.subject, nick: this.nick(p) }))
      case 'count': {
        need(g.write, 'write')
        const row = this.ctx.storage.sql
          .exec<{ n: number }>('INSERT INTO counter (id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1 RETURNING n')
          .one()
        return row.n
      }
      case 'broadcast': {
        need(g.publish, 'publish')
        const message = param(params, 'message', 0)
        if (message === undefined) throw new RpcError(code.INVALID_PARAMS, 'broadcast needs {"message": ...}')
        const note = JSON.stringify({ jsonrpc: '2.0', method: 'broadcast', params: { message } })
        if (note.length > MAX_BROADCAST_BYTES) {
          throw new RpcError(code.INVALID_PARAMS, `broadcast of ${note.length} bytes exceeds the limit of ${MAX_BROADCAST_BYTES}`)
        }
        // Snippet clients on every upstream socket (one batch per socket), then direct sockets.
        this.mux.broadcast(note, (c) => c.service === '/rpc' && grants(c.identity).read)
        for (const ws of this.ctx.getWebSockets('ws')) ws.send(note)
        return true
      }
      case 'stats':
        need(g.read, 'read')
        return {
          sockets: this.ctx.getWebSockets().length,
          muxSockets: this.mux.stats().sockets,
          streams: this.mux.stats().streams,
          wakes: this.wakes,
          messages: this.messages,
        }
      default:
        throw new RpcError(code.METHOD_NOT_FOUND, `method not found: ${method}`)
    }
  }

  /** Every JSON-RPC peer of the room: snippet clients on '/rpc' and direct '/rpc' sockets. */
  private listeners(): Peer[] {
    return [...this.mux.clients().filter((c) => c.service === '/rpc'), ...this.ctx.getWebSockets('ws')]
  }

  private nick(peer: Peer): string | null {
    const a = peer.deserializeAttachment() as { nick?: string } | undefined | null
    return a?.nick ?? null
  }
}
