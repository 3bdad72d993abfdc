// Declarations for server.js: SnippetProxyServer and the clients it hands the application.

import type { Identity } from './authz.js'

export type { Identity }

/** The parts of a Durable Object's `ctx` (DurableObjectState) the server uses. */
export interface DurableObjectContextLike {
  acceptWebSocket(ws: WebSocket, tags?: string[]): void
  getWebSockets(tag?: string): WebSocket[]
  getTags?(ws: WebSocket): string[]
  /** Set to `ping` → `pong` by the server unless its `autoResponse` option is false. */
  setWebSocketAutoResponse?(pair?: unknown): void
  storage: {
    /** The synchronous KV API of SQLite-backed objects (`new_sqlite_classes`). */
    kv?: {
      get(key: string): unknown
      put(key: string, value: unknown): void
      delete(key: string): boolean | void
      list(options?: { prefix?: string }): Iterable<[string, unknown]>
    }
  }
}

/**
 * One client of the snippet (one stream of the upstream), as if it had connected directly.
 * A client of a resumable session (`session` set) is the same object from its first
 * connection to its end, across reconnects: `attached` is false while it is away.
 */
export declare class MuxClient {
  private constructor()
  /** Stable for the client's life: across the snippet's hand-overs and a session's reconnects. */
  readonly id: string
  /** The stream id on the upstream (a session's client gets a new one when it comes back). */
  readonly stream: number
  /** Its resumable session (32 lowercase hex digits), or null for a plain client. */
  readonly session: string | null
  /** False while a session's client is away (its connection dropped and it may come back); true otherwise. */
  readonly attached: boolean
  /** The path of its Open frame: '/rpc' (snippet route /db/{tenant}/ws) or '/echo' (/db/{tenant}/ws/echo). */
  readonly service: string
  /** Who the snippet authenticated. */
  readonly identity: Identity
  /** The mux socket the stream is on; null while a session's client is away. */
  readonly socket: string | null
  /** 1 while open (a session's client that is away too), 3 once closed. */
  readonly readyState: 1 | 3
  /** Whether the caller's token has expired by now. */
  readonly expired: boolean
  /** A Text (string) or Binary message to the client; a no-op once closed. Kept for a session's client that is away, and sent when it comes back. */
  send(data: string | ArrayBuffer | ArrayBufferView): void
  /**
   * Closes the client (1000 by default; a code `protocol.isAllowedCloseCode` refuses throws
   * RangeError). The reason is cut to `protocol.MAX_CLOSE_REASON` bytes. onClose follows.
   */
  close(code?: number, reason?: string): void
  /** Keeps a structured-cloneable value with the client, in storage (survives hibernation and hand-over). */
  serializeAttachment(value: unknown): void
  /** A copy of the stored value, or undefined. */
  deserializeAttachment<T = unknown>(): T | undefined
  toJSON(): { id: string; stream: number; service: string; identity: Identity; socket: string | null; session: string | null }
}

/** An HTTP request that came over the upstream (a Request frame) or as the snippet's HTTP fallback. */
export interface ProxiedRequest {
  /** 'POST' from the snippet. */
  readonly method: string
  /** '/rpc' or '/query' from the snippet. */
  readonly path: string
  /** '' when absent. */
  readonly contentType: string
  readonly body: Uint8Array
  readonly identity: Identity
}

/** What onRequest returns: status 200, no content type and an empty body by default; nothing at all = 204. */
export interface ProxiedResponse {
  status?: number
  contentType?: string
  body?: string | ArrayBuffer | ArrayBufferView | null
}

export interface SnippetProxyHandlers {
  /** A client opened a stream (admitted: its tenant fits and its token has not expired). Throwing refuses it (Error 500). */
  onOpen?(client: MuxClient): void | Promise<void>
  /** A Text (string) or Binary (ArrayBuffer) message from a client whose token is still valid. */
  onMessage?(client: MuxClient, data: string | ArrayBuffer): void | Promise<void>
  /**
   * The client left (its code and reason), was closed by you, lost its token (1008), or its upstream went away (1006).
   * A session's client: only when it left on purpose (1000, 3000-4999), was closed by you or refused, or did not come
   * back within the resume window (1006 'session not resumed in time'); a dropped connection alone is not a close.
   */
  onClose?(client: MuxClient, code: number, reason: string, wasClean: boolean): void | Promise<void>
  /** One HTTP request, one answer. Admission (401/403) happens before; without this handler requests get 404. */
  onRequest?(request: ProxiedRequest): ProxiedResponse | Response | null | undefined | Promise<ProxiedResponse | Response | null | undefined>
  /** A handler threw or rejected (default: console.error). */
  onError?(error: unknown, where?: string): void
}

export interface SnippetProxyOptions {
  /** The backend token the snippet presents (BACKEND_TOKEN). Unset or empty: every upgrade gets 500. */
  token: string | undefined
  /**
   * true: without a token, accept and fetch let every caller in. Only for an object no public route
   * forwards to unchecked: its callers are Workers bound to its namespace (the snippet's BACKEND_BINDING).
   */
  bindingOnly?: boolean
  /** This object's tenant: a name, a function of the request, or (default) `{tenant}` of `/db/{tenant}/…` (`default` otherwise). */
  tenant?: string | ((request: Request) => string)
  /** Open paths served (default ['/rpc', '/echo'], as the snippet's routes); null = any; or a predicate. Others get Error 404. */
  services?: string[] | null | ((path: string) => boolean)
  /** The WebSocket tag marking mux sockets (default 'mux'). */
  tag?: string
  /** Prefix of the server's keys in ctx.storage.kv (default 'mux/', as the Rust backend). */
  storagePrefix?: string
  /** Prefix of the resumable sessions' keys in ctx.storage.kv (default 'sess/', as the Rust backend). */
  sessionPrefix?: string
  /** Set the object's auto-response `ping` → `pong` (default true): the snippet's heartbeat, answered without waking the object. */
  autoResponse?: boolean
  /** Streams per mux socket (default and most: 10,000). */
  maxStreams?: number
  /** Bound of one reply message (default 262,144 bytes). */
  maxBatchBytes?: number
  /** How long a closed socket's streams wait to be re-opened by a hand-over (default 5,000 ms). */
  handoverGraceMs?: number
  /** The clock, in ms since the epoch (default Date.now). */
  now?: () => number
  /** Makes a new mux socket's id, 12 lowercase hex digits (default random; tests pass their own). */
  socketId?: () => string
  /** Schedules the server's next deadline: a hand-over's grace window, a session's expiry (default setTimeout; tests pass a simulated clock's). */
  setTimeout?: (fn: () => unknown, ms: number) => unknown
}

/** One mux socket (one snippet isolate's upstream) in the operator's view. */
export interface SocketView {
  /** Its id (12 hex digits; a new one for every connection, hand-overs included). */
  socket: string
  /** Clients open on it now. */
  streams: number
  /** Of those, clients of resumable sessions. */
  sessions: number
  /** Messages (batches) received on it since this instance knew it. */
  messagesIn: number
  /** Messages (batches) sent on it since then. */
  messagesOut: number
  /** A barrier arrived within the hand-over window: its isolate is moving its streams to a newer socket. */
  handingOver: boolean
}

/** The operator's view of one object (the Rust crate's View::to_json). Counters count since `wokeAt`, in memory only. */
export interface ObjectView {
  tenant: string
  /** When this instance woke (ms since the epoch): every counter starts there. */
  wokeAt: number
  /** Mux sockets connected now: one per snippet isolate (two during its hand-over). */
  upstreams: number
  /** Clients on them now. */
  streams: number
  /** Sessions' clients away now, waiting to come back. */
  detached: number
  /** Clients of a socket closed mid-hand-over, waiting for their re-open. */
  orphans: number
  /** At most MAX_LISTED_SOCKETS sockets, most streams first, then by id. */
  sockets: SocketView[]
  totals: {
    socketsAccepted: number
    socketsClosed: number
    /** WebSocket messages (batches) received on mux sockets; framesIn: frames in them. */
    messagesIn: number
    framesIn: number
    /** WebSocket messages (batches) sent; framesOut: frames in them. */
    messagesOut: number
    framesOut: number
    opened: number
    closed: number
    requests: number
    /** Barrier pings received: an isolate replacing its socket with a newer one. */
    handovers: number
    adopted: number
    orphaned: number
    lost: number
    /** Error frames sent. */
    errors: number
    refused: { malformed: number; service: number; admission: number; limit: number; app: number; expired: number; request: number }
    sessions: { resumed: number; expired: number; replayed: number; duplicates: number; rowsWritten: number }
  }
}

export declare class SnippetProxyServer {
  constructor(ctx: DurableObjectContextLike, handlers?: SnippetProxyHandlers, options?: SnippetProxyOptions)
  /** Answers the snippet's upgrade: 500 (no token configured), 401, 426, 400 (tenant), else 101 with the socket. */
  accept(request: Request): Response
  /** false for a socket that is not a mux socket; else true, or a promise of true once handled. */
  webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): boolean | Promise<boolean>
  /** false for a socket that is not a mux socket; closes its clients (onClose 1006; sessions' clients are only detached) and reciprocates. */
  webSocketClose(ws: WebSocket, code: number, reason: string, wasClean: boolean): boolean | Promise<boolean>
  webSocketError(ws: WebSocket, error: unknown): boolean | Promise<boolean>
  /** The snippet's HTTP fallback: POST /db/{tenant}/rpc|query with the bearer token and X-Snippet-Identity, answered by onRequest. */
  fetch(request: Request, options?: { path?: string }): Promise<Response>
  isMuxSocket(ws: WebSocket): boolean
  /** Every open client, on every mux socket, then sessions' clients that are away (restored from storage after a wake). */
  clients(): MuxClient[]
  /** Sends to every open, unexpired client that `filter` accepts; one batch per mux socket; kept for sessions' clients that are away. Returns how many. */
  broadcast(data: string | ArrayBuffer | ArrayBufferView, filter?: (client: MuxClient) => boolean): number
  /** Mux sockets, clients on them, sessions' clients that are away, and what the sessions did since this instance woke (`rowsWritten`: storage rows they wrote or deleted). */
  stats(): {
    sockets: number
    streams: number
    detached: number
    sessions: { resumed: number; expired: number; replayed: number; duplicates: number; rowsWritten: number }
  }
  /** The operator's view: upstreams (mux sockets) with their streams, and what the server did since this instance woke. */
  view(): ObjectView
  /** The same view in the Prometheus text format 0.0.4. */
  metrics(): string
}
