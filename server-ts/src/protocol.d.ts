// Declarations for protocol.js: the snippet-proxy upstream wire format, version 3, and the
// envelopes of resumable sessions (PROTOCOL.md §14).

/** The version this side writes. */
export declare const VERSION: 3
/** The oldest version decoders accept (a v2 message is a v3 message without sessions). */
export declare const OLDEST_VERSION: 2
export declare const HEADER_LEN: 10
export declare const MAX_MESSAGE_BYTES: number
export declare const MAX_FRAME_PAYLOAD: number
export declare const MAX_SESSION_STREAMS: number
export declare const MAX_BATCH_BYTES: number
export declare const MAX_CLOSE_REASON: number
/** The close of a client whose token expired; a client reconnects at once with a fresh token. */
export declare const TOKEN_EXPIRED: Readonly<{ code: number; reason: string }>
/** What the application hears a session's client ended with when it did not come back within RESUME_WINDOW_MS (or came back too late). */
export declare const SESSION_EXPIRED: Readonly<{ code: number; reason: string }>
/** The Close a session's previous stream gets when the session attaches to another one. */
export declare const SESSION_MOVED: Readonly<{ code: number; reason: string }>
/** How long a detached session waits for its client (ms). */
export declare const RESUME_WINDOW_MS: number
/** Most unacknowledged messages kept per session. */
export declare const MAX_REPLAY_MESSAGES: number
/** Most bytes of unacknowledged messages kept per session. */
export declare const MAX_REPLAY_BYTES: number
/** Longest Ping envelope body the snippet answers. */
export declare const MAX_PING_BYTES: number
export declare const SESSION_ID_BYTES: 16
/** Bytes of an Open's Attach. */
export declare const ATTACH_LEN: 24
/** The fixed part of a Text/Binary envelope. */
export declare const DATA_HEADER_LEN: 17
/** Whether a client's close with `code` ends its session at once (1000, 3000-4999); any other only detaches it. */
export declare function endsSession(code: number): boolean
/** Stream 0: the connection itself. */
export declare const SESSION: 0
export declare const ANY_TENANT: '*'
export declare const IDENTITY_HEADER: 'X-Snippet-Identity'

export declare const FrameKind: {
  readonly Open: 1
  readonly Text: 2
  readonly Binary: 3
  readonly Close: 4
  readonly Request: 5
  readonly Response: 6
  readonly Error: 7
  readonly Ping: 8
  readonly Pong: 9
}
export type FrameKind = (typeof FrameKind)[keyof typeof FrameKind]
export type FrameKindName = keyof typeof FrameKind

/** Whether a close frame may carry `code` and the other end accepts it: what a client may close with, and what a backend may close a client with. */
export declare function isAllowedCloseCode(code: unknown): boolean
/** The code to close a socket with for `code` (e.g. to answer a peer's close): itself, unless the runtime only reports it and `close()` refuses it. */
export declare function sendableCloseCode(code: number): number
/** The close the snippet gives a client whose stream got an Error frame with HTTP-like `code`. */
export declare function errorClose(code: number): { code: number; reason: string }

/** The variant name of a kind byte, or undefined for an unknown one. */
export declare function kindName(kind: number): FrameKindName | undefined

export type DecodeErrorKind =
  | 'Empty'
  | 'UnsupportedVersion'
  | 'UnknownKind'
  | 'ReservedFlags'
  | 'PayloadTooLarge'
  | 'Truncated'
  | 'InvalidUtf8'
  | 'TrailingBytes'
  | 'InvalidHex'

/** Why bytes did not decode; `kind` is the Rust `DecodeError` variant, `message` its Display text. */
export declare class DecodeError extends Error {
  readonly name: 'DecodeError'
  readonly kind: DecodeErrorKind
  /** UnsupportedVersion, UnknownKind, ReservedFlags, PayloadTooLarge, TrailingBytes: a number; InvalidUtf8: the field name. */
  readonly value?: number | string
  /** Truncated only. */
  readonly needed?: number
  /** Truncated only. */
  readonly available?: number
  constructor(kind: DecodeErrorKind, fields?: { value?: number | string; needed?: number; available?: number })
  /** As protocol/vectors/golden.json writes it. */
  toJSON(): { kind: DecodeErrorKind; value?: number | string; needed?: number; available?: number }
  static empty(): DecodeError
  static unsupportedVersion(v: number): DecodeError
  static unknownKind(k: number): DecodeError
  static reservedFlags(f: number): DecodeError
  static payloadTooLarge(n: number): DecodeError
  static truncated(needed: number, available: number): DecodeError
  static invalidUtf8(field: string): DecodeError
  static trailingBytes(n: number): DecodeError
  static invalidHex(): DecodeError
}

export type Bytes = Uint8Array | ArrayBuffer | ArrayBufferView

/** The caller the snippet authenticated (wire form: expiresAt is a u64, 0 = never). */
export interface WireIdentity {
  subject: string
  tenant: string
  scopes: string
  expiresAt: bigint
}

/** One decoded frame; `payload` is a view into the message. */
export interface Frame {
  kind: FrameKind
  stream: number
  payload: Uint8Array
  /** Header + payload bytes. */
  size: number
}

/** A frame to encode. */
export interface OutFrame {
  kind: number
  stream: number
  payload?: Bytes | null
}

/** A session stream's Attach: the session (32 lowercase hex digits) and the last backend message its client has. */
export interface Attach {
  session: string
  received: bigint
}

export interface OpenPayload {
  path: string
  identity: WireIdentity
  /** Only on a session's stream (version 3). */
  attach?: Attach
}
export interface RequestPayload {
  method: string
  path: string
  contentType: string
  identity: WireIdentity
  body: Uint8Array
}
export interface ResponsePayload {
  status: number
  contentType: string
  body: Uint8Array
}
export interface ClosePayload {
  code: number
  reason: string
}
export interface ErrorPayload {
  code: number
  message: string
}

/** Frames of one message; `next()` throws the DecodeError of a frame that does not decode. */
export declare class Frames implements IterableIterator<Frame> {
  /** Frames yielded so far. */
  readonly index: number
  next(): IteratorResult<Frame, undefined>
  [Symbol.iterator](): Frames
}

export declare function toBytes(data: Bytes | string): Uint8Array
export declare function frameLen(payloadLen: number): number
/** One message of these frames (throws DecodeError PayloadTooLarge for a payload over MAX_FRAME_PAYLOAD). */
export declare function encodeMessage(frames: Iterable<OutFrame>): Uint8Array
export declare function encodeFrame(kind: number, stream: number, payload?: Bytes | null): Uint8Array
/** One frame at `offset`, or null at the end; throws DecodeError. */
export declare function decodeFrame(buf: Uint8Array, offset?: number): Frame | null
/** Checks the version byte (throws Empty / UnsupportedVersion) and iterates the frames. */
export declare function decodeMessage(msg: Bytes): Frames

export declare function truncateUtf8(s: string, max: number): Uint8Array
export declare function toHex(bytes: Bytes): string
export declare function fromHex(hex: string): Uint8Array

export declare function encodeIdentity(identity: Omit<WireIdentity, 'expiresAt'> & { expiresAt: bigint | number }): Uint8Array
export declare function decodeIdentity(buf: Bytes): WireIdentity
export declare function identityToHex(identity: Omit<WireIdentity, 'expiresAt'> & { expiresAt: bigint | number }): string
export declare function identityFromHex(hex: string): WireIdentity

/** An Open's payload; `attach.session` may also be its 16 bytes, `attach.received` a number. */
export declare function encodeOpen(open: {
  path: string
  identity: Omit<WireIdentity, 'expiresAt'> & { expiresAt: bigint | number }
  attach?: { session: string | Uint8Array; received?: bigint | number } | null
}): Uint8Array
/** Exactly 24 bytes after the identity are an Attach; other trailing bytes are TrailingBytes. */
export declare function decodeOpen(payload: Bytes): OpenPayload
/** The 16 bytes of a session id written as 32 lowercase hex digits (anything else throws DecodeError InvalidHex). */
export declare function parseSessionId(s: string): Uint8Array
export declare function isSessionId(s: unknown): s is string
export declare function encodeRequest(req: Omit<RequestPayload, 'body' | 'contentType'> & { contentType?: string; body?: Bytes | null }): Uint8Array
export declare function decodeRequest(payload: Bytes): RequestPayload
export declare function encodeResponse(res: { status: number; contentType?: string; body?: Bytes | null }): Uint8Array
export declare function decodeResponse(payload: Bytes): ResponsePayload
export declare function encodeClose(close: { code: number; reason?: string }): Uint8Array
export declare function decodeClose(payload: Bytes): ClosePayload
export declare function encodeError(error: { code: number; message?: string }): Uint8Array
export declare function decodeError(payload: Bytes): ErrorPayload

export declare const EnvelopeType: {
  readonly Text: 1
  readonly Binary: 2
  readonly Ack: 3
  readonly Welcome: 4
  readonly Ping: 5
  readonly Pong: 6
}

/** One session envelope as decodeEnvelope returns it (u64s as BigInts; payloads are views into the input). */
export type Envelope =
  | { type: 'Text' | 'Binary'; seq: bigint; ack: bigint; payload: Uint8Array }
  | { type: 'Ack'; ack: bigint }
  | { type: 'Welcome'; resumed: boolean; ack: bigint }
  | { type: 'Ping' | 'Pong'; payload: Uint8Array }

/** An envelope to encode (u64s as BigInts or safe integers). */
export type OutEnvelope =
  | { type: 'Text' | 'Binary'; seq: bigint | number; ack: bigint | number; payload?: Bytes | null }
  | { type: 'Ack'; ack: bigint | number }
  | { type: 'Welcome'; resumed: boolean; ack: bigint | number }
  | { type: 'Ping' | 'Pong'; payload?: Bytes | null }

export declare function encodeEnvelope(envelope: OutEnvelope): Uint8Array
/** Throws DecodeError: Empty, UnknownKind (the type byte), Truncated, TrailingBytes (Ack, Welcome), ReservedFlags (Welcome). */
export declare function decodeEnvelope(bytes: Bytes): Envelope
