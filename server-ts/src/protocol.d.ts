// Declarations for protocol.js: the snippet-proxy upstream wire format, version 2.

export declare const VERSION: 2
export declare const HEADER_LEN: 10
export declare const MAX_MESSAGE_BYTES: number
export declare const MAX_FRAME_PAYLOAD: number
export declare const MAX_SESSION_STREAMS: number
export declare const MAX_BATCH_BYTES: number
export declare const MAX_CLOSE_REASON: number
/** The close of a client whose token expired; a client reconnects at once with a fresh token. */
export declare const TOKEN_EXPIRED: Readonly<{ code: number; reason: string }>
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

export interface OpenPayload {
  path: string
  identity: WireIdentity
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

export declare function encodeOpen(open: OpenPayload): Uint8Array
export declare function decodeOpen(payload: Bytes): OpenPayload
export declare function encodeRequest(req: Omit<RequestPayload, 'body' | 'contentType'> & { contentType?: string; body?: Bytes | null }): Uint8Array
export declare function decodeRequest(payload: Bytes): RequestPayload
export declare function encodeResponse(res: { status: number; contentType?: string; body?: Bytes | null }): Uint8Array
export declare function decodeResponse(payload: Bytes): ResponsePayload
export declare function encodeClose(close: { code: number; reason?: string }): Uint8Array
export declare function decodeClose(payload: Bytes): ClosePayload
export declare function encodeError(error: { code: number; message?: string }): Uint8Array
export declare function decodeError(payload: Bytes): ErrorPayload
