// Type declarations for snippet-proxy-client.js.

/** `idle` → `connecting` → `open` → `reconnecting` → `connecting` …; `closed` and `failed` are final. */
export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed' | 'failed'

/** Time and randomness, injectable so tests are deterministic. Methods are called on this object. */
export interface Clock {
  setTimeout(fn: () => void, ms: number): unknown
  clearTimeout(id: unknown): void
  /** Milliseconds; only differences are used. */
  now(): number
  /** In [0, 1). */
  random(): number
}

/** What the client needs of a WebSocket (a browser's, or e.g. the `ws` package's). */
export interface WebSocketLike {
  /** Set to 'arraybuffer': every message of a session is a binary envelope. */
  binaryType?: string
  /** The client sets these: onopen(), onmessage({data}), onclose({code, reason}). */
  onopen: unknown
  onmessage: unknown
  onclose: unknown
  send(data: any): void
  close(code?: number, reason?: string): void
}

/** What the client needs of fetch: the status, the Retry-After header, the JSON body. */
export type FetchLike = (
  url: string,
  init: { cache: 'no-store'; signal?: AbortSignal },
) => Promise<{ status: number; headers?: { get(name: string): string | null }; json(): Promise<any> }>

export interface BackoffOptions {
  /** The first retry waits up to this long. Default 250. */
  initialMs?: number
  /** No wait is longer. Default 10000. */
  maxMs?: number
  /** Each failed attempt multiplies the cap by this. Default 2. */
  factor?: number
  /** A connection that stayed open this long resets the attempt count. Default 5000. */
  stableMs?: number
}

export interface SnippetProxyClientOptions {
  /**
   * The bearer token, sent as `?access_token=` on the upgrade. A function is called before
   * every connection attempt, so it can hand out a fresh token; null or undefined connects
   * without one (the server then refuses and the client reports why). Default null.
   */
  token?: string | null | (() => string | null | undefined | Promise<string | null | undefined>)
  /** Raw mode (for `/ws/echo`): no JSON-RPC; `send()` and 'message' only. Default false. */
  raw?: boolean
  backoff?: BackoffOptions
  /**
   * Most items (sends, notifications, calls) held at once: waiting for a connection, plus
   * sent and not yet acknowledged by the backend (kept for a re-send). Default 256.
   */
  maxQueue?: number
  /**
   * A `Ping` this long after the connection opened or the last `Pong`; the snippet answers
   * it itself, so an idle client never wakes the backend. 0 = off. Default 15000.
   */
  heartbeatMs?: number
  /**
   * No `Pong` within this long, or no `Welcome` this long after the upgrade → closed locally
   * with 4000 ("heartbeat timeout", "no answer from the backend"), then reconnected. Default 10000.
   */
  heartbeatTimeoutMs?: number
  /** Default timeout of `call()`, counted from the call (queued time included); 0 = none. Default 30000. */
  callTimeoutMs?: number
  /** An attempt (token provider and upgrade together) that has not opened by then is abandoned and retried. Default 10000. */
  connectTimeoutMs?: number
  /** Default `globalThis.WebSocket`. */
  WebSocket?: new (url: string) => WebSocketLike
  /** Used to diagnose an upgrade that failed before opening. Default `globalThis.fetch`. */
  fetch?: FetchLike
  clock?: Clock
  /** `n` random bytes, for the session id. Default `crypto.getRandomValues`. */
  randomBytes?: (n: number) => Uint8Array
  /** Where 'online' is listened for; null for none. Default `globalThis.window`. */
  window?: EventTarget | null
  /** Where 'visibilitychange' is listened for; null for none. Default `globalThis.document`. */
  document?: (EventTarget & { visibilityState?: string }) | null
}

export interface StateDetail {
  state: ConnectionState
  previous: ConnectionState
  /** Why: the close reason, the diagnosed refusal ("unauthorized: … (request …)"), or ''. */
  reason: string
}
export interface CloseDetail {
  code: number
  reason: string
  /** False when the client closed or failed for good. */
  willRetry: boolean
}
/** A server push (JSON-RPC notification) in JSON-RPC mode; `data` in raw mode (text as a string, bytes as an ArrayBuffer). */
export interface MessageDetail {
  method?: string
  params?: unknown
  data?: string | ArrayBuffer
}
/**
 * The backend attached a connection to the session: after every `Welcome`, before 'open'
 * (and on an open connection when the snippet re-attached it upstream).
 */
export interface SessionDetail {
  /**
   * True: the session goes on (the first connection, or a resume): nothing was lost, the
   * backend replays what was missed and the client re-sent what the backend lacked. False:
   * the session could not be resumed (it expired, or what it needed was dropped) and began
   * again; calls that were sent failed with ConnectionLostError, and the application should
   * reload its state as on a fresh start (what it subscribed to, what it missed).
   */
  recovered: boolean
  /** The session's first Welcome. */
  first: boolean
  /** How many messages of `send()`/`notify()` were dropped unacknowledged because the session was lost (calls reject instead). */
  lost: number
}
export interface RttDetail { rttMs: number }
export interface ErrorDetail { error: Error }

export interface SnippetProxyClientEventMap {
  state: StateDetail
  open: Record<string, never>
  close: CloseDetail
  message: MessageDetail
  rtt: RttDetail
  error: ErrorDetail
  session: SessionDetail
}

export class SnippetProxyClient extends EventTarget {
  /**
   * @param url `ws(s)://host/ws`, `…/db/{tenant}/ws`, `…/ws/echo`; `http(s)` URLs and (on a
   * page) paths are accepted and turned into ws(s). Connecting starts on the next microtask.
   */
  constructor(url: string | URL, options?: SnippetProxyClientOptions)
  readonly state: ConnectionState
  /** Items waiting for a connection. */
  readonly queued: number
  /** Messages sent and not yet acknowledged by the backend (re-sent after a reconnect if need be). */
  readonly unacked: number
  /** The session's id: 32 lowercase hex digits, chosen once for this client object. */
  readonly sessionId: string
  /** Adds a listener that receives the event's `detail`; returns a function that removes it. */
  on<K extends keyof SnippetProxyClientEventMap>(type: K, fn: (detail: SnippetProxyClientEventMap[K]) => void): () => void
  addEventListener<K extends keyof SnippetProxyClientEventMap>(
    type: K,
    listener: (event: CustomEvent<SnippetProxyClientEventMap[K]>) => void,
    options?: boolean | AddEventListenerOptions,
  ): void
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void
  removeEventListener<K extends keyof SnippetProxyClientEventMap>(
    type: K,
    listener: (event: CustomEvent<SnippetProxyClientEventMap[K]>) => void,
    options?: boolean | EventListenerOptions,
  ): void
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void
  /** Starts connecting when idle; while waiting to reconnect, retries at once. Otherwise does nothing. */
  connect(): void
  /** Resolves when open (at once if open); rejects with ClosedError once closed or failed. */
  ready(): Promise<void>
  /**
   * A JSON-RPC call. Queued while disconnected (sent once, after reconnecting). A sent call
   * survives reconnects: the session re-sends its request if the backend did not get it and
   * replays the reply. Rejects with RpcError, TimeoutError, ConnectionLostError (the session
   * could not be resumed, or the client closed or failed, with the call sent and unanswered),
   * QueueFullError or ClosedError; with TypeError in raw mode.
   */
  call<T = unknown>(method: string, params?: unknown, options?: { timeout?: number }): Promise<T>
  /** A JSON-RPC notification. False when neither sent nor queued (queue full, or closed). Throws TypeError in raw mode. */
  notify(method: string, params?: unknown): boolean
  /**
   * Sends data as it is (a string as a `Text` envelope, bytes as `Binary`). False when
   * neither sent nor queued (`maxQueue` reached, or closed). Throws TypeError for anything
   * else, a Blob included (send `await blob.arrayBuffer()`).
   */
  send(data: string | ArrayBuffer | ArrayBufferView): boolean
  /**
   * Final: no reconnect. 1000 and 3000–4999 end the session at the backend. Queued calls
   * reject with ClosedError, calls in flight with ConnectionLostError.
   */
  close(code?: number, reason?: string): void
}

export class SnippetProxyError extends Error {
  constructor(message?: string, fields?: object)
}
/** The server answered with a JSON-RPC error. */
export class RpcError extends SnippetProxyError {
  constructor(code: number, message: string, data?: unknown)
  readonly name: 'RpcError'
  code: number
  data?: unknown
}
/** No reply in time. `sent: false` means it never left, so it did not run. */
export class TimeoutError extends SnippetProxyError {
  readonly name: 'TimeoutError'
  method: string
  sent: boolean
}
/**
 * The call was sent, and no reply will come: the session could not be resumed after a
 * reconnect, or the client was closed (or failed) with the call in flight. It may or may not have run.
 */
export class ConnectionLostError extends SnippetProxyError {
  readonly name: 'ConnectionLostError'
  method: string
}
/** `maxQueue` items already waiting or unacknowledged. */
export class QueueFullError extends SnippetProxyError {
  readonly name: 'QueueFullError'
  method: string
}
/** The client was closed, or failed for good (the message says why). */
export class ClosedError extends SnippetProxyError {
  readonly name: 'ClosedError'
}

/** One session envelope (PROTOCOL.md §14.1; protocol/src/session.rs states the format). */
export type Envelope =
  | { type: 'Text' | 'Binary'; seq: number | bigint; ack: number | bigint; payload: Uint8Array }
  | { type: 'Ack'; ack: number | bigint }
  | { type: 'Welcome'; resumed: boolean; ack: number | bigint }
  | { type: 'Ping' | 'Pong'; payload: Uint8Array }
/** What `encodeEnvelope` takes: an Envelope whose payload may also be a string (UTF-8) or an ArrayBuffer. */
export type EnvelopeInput =
  | { type: 'Text' | 'Binary'; seq: number | bigint; ack: number | bigint; payload?: string | ArrayBuffer | ArrayBufferView }
  | { type: 'Ack'; ack: number | bigint }
  | { type: 'Welcome'; resumed: boolean; ack: number | bigint }
  | { type: 'Ping' | 'Pong'; payload?: string | ArrayBuffer | ArrayBufferView }
/** The bytes of an envelope. Positions: numbers (exact up to 2^53 - 1) or bigints. */
export function encodeEnvelope(envelope: EnvelopeInput): Uint8Array
/**
 * Reads one envelope; its payload is a view of `bytes`. A position is a number when it is
 * at most 2^53 - 1, else a bigint. Throws SnippetProxyError with `kind` ('Empty',
 * 'UnknownKind', 'Truncated', 'TrailingBytes', 'ReservedFlags', as protocol::DecodeError)
 * and `value`, or `needed` and `available`, for anything else.
 */
export function decodeEnvelope(bytes: ArrayBuffer | ArrayBufferView): Envelope
