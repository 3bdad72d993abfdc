// The snippet-proxy upstream wire format, version 3 (protocol/PROTOCOL.md): batches,
// frames and the payloads of the structured kinds, and the envelopes of resumable
// sessions (PROTOCOL.md §14, Rust `protocol::session`). A port of the Rust crate
// `snippet-proxy-protocol` (protocol/src) that decodes and encodes the same bytes and
// fails with the same errors, checked in the same order; test/golden.test.js runs it
// against protocol/vectors/golden.json.
//
// Integers are big-endian and unsigned. `expiresAt` is a BigInt here (it is a u64 on the
// wire and may exceed 2^53).
//
// The close codes, the Error-to-close mapping and the limits every side agrees on come
// from facts.js, generated from protocol/vectors/facts.json (protocol/src/facts.rs).

import { FACTS } from './facts.js'

/** The version byte that starts every message this side writes (3: an Open may end with a session's Attach). */
export const VERSION = 3
/** The oldest version decoders accept (2: the same frames, without sessions). */
export const OLDEST_VERSION = 2
/** Size of a frame header: kind, flags, stream id, payload length. */
export const HEADER_LEN = 10
/** Largest upstream message (the runtime closes a socket receiving more with 1009). */
export const MAX_MESSAGE_BYTES = 32 * 1024 * 1024
/** Largest payload of one frame: a message holding only it is MAX_MESSAGE_BYTES long. */
export const MAX_FRAME_PAYLOAD = MAX_MESSAGE_BYTES - 1 - HEADER_LEN
/** Most streams one socket may have open; an Open past it is refused (503). */
export const MAX_SESSION_STREAMS = 10_000
/** Reply messages are closed before they would pass this many bytes (a lone larger frame travels alone). */
export const MAX_BATCH_BYTES = FACTS.max_batch_bytes
/** Longest close reason in bytes: longer ones are cut at a character boundary (truncateUtf8). */
export const MAX_CLOSE_REASON = FACTS.max_close_reason
/** The close of a client whose token expired: `{ code, reason }`; a client reconnects at once with a fresh token. */
export const TOKEN_EXPIRED = Object.freeze({ code: FACTS.token_expired.code, reason: FACTS.token_expired.reason })
/** What the application hears a client ended with when its socket went and no hand-over took it on: `{ code, reason }`. */
export const CLIENT_LOST = Object.freeze({ code: FACTS.client_lost.code, reason: FACTS.client_lost.reason })
/** What the application hears a client ended with when the snippet opened its stream id again: `{ code, reason }`. */
export const CLIENT_REPLACED = Object.freeze({ code: FACTS.client_replaced.code, reason: FACTS.client_replaced.reason })
/** Whether a client's close with `code` ends its session at once (1000, 3000–4999); any other only detaches it. */
export function endsSession(code) {
  return FACTS.session.ends_session.some(([first, last]) => code >= first && code <= last)
}
/** What the application hears a session's client ended with when it did not come back in time: `{ code, reason }`. */
export const SESSION_EXPIRED = Object.freeze({ code: FACTS.session.expired.code, reason: FACTS.session.expired.reason })
/** The Close a session's previous stream gets when the session attaches to another one: `{ code, reason }`. */
export const SESSION_MOVED = Object.freeze({ code: FACTS.session.moved.code, reason: FACTS.session.moved.reason })
/** How long a detached session waits for its client to come back (ms). */
export const RESUME_WINDOW_MS = FACTS.session.resume_window_ms
/** Most unacknowledged messages kept per session. */
export const MAX_REPLAY_MESSAGES = FACTS.session.max_replay_messages
/** Most bytes of unacknowledged messages kept per session. */
export const MAX_REPLAY_BYTES = FACTS.session.max_replay_bytes
/** Longest Ping envelope body the snippet answers. */
export const MAX_PING_BYTES = FACTS.session.max_ping_bytes
/** Bytes of a session id (written as 32 lowercase hex digits). */
export const SESSION_ID_BYTES = 16
/** Bytes of an Attach: the session id and the client's position. */
export const ATTACH_LEN = SESSION_ID_BYTES + 8
/** Stream 0: the connection itself (session errors, pings). */
export const SESSION = 0
/** The tenant of an identity that may use every tenant. */
export const ANY_TENANT = '*'
/** The header that carries an identity (lowercase hex) on the snippet's HTTP fallback. */
export const IDENTITY_HEADER = 'X-Snippet-Identity'

/** Frame kinds, by the names of the Rust `FrameKind` variants. */
export const FrameKind = Object.freeze({
  Open: 1,
  Text: 2,
  Binary: 3,
  Close: 4,
  Request: 5,
  Response: 6,
  Error: 7,
  Ping: 8,
  Pong: 9,
})

/**
 * Whether a close frame may carry `code` and the other end accepts it: what a client may
 * close with, and what a backend may close a client with.
 */
export function isAllowedCloseCode(code) {
  return Number.isInteger(code) && FACTS.close_codes.allowed.some(([first, last]) => code >= first && code <= last)
}

/** The code to close a socket with for `code` (e.g. to answer a peer's close): itself, unless the runtime only reports it and `close()` refuses it. */
export function sendableCloseCode(code) {
  const { reported_only: reportedOnly, reported_only_sent_as: sentAs } = FACTS.close_codes
  return reportedOnly.includes(code) ? sentAs : code
}

/** The close (`{ code, reason }`) the snippet gives a client whose stream got an Error frame with HTTP-like `code`. */
export function errorClose(code) {
  const { rows, otherwise } = FACTS.error_close
  const close = rows.find((row) => row.errors.includes(code)) ?? otherwise
  return { code: close.code, reason: close.reason }
}

const KIND_NAMES = ['', 'Open', 'Text', 'Binary', 'Close', 'Request', 'Response', 'Error', 'Ping', 'Pong']

/** The variant name of a kind byte (`'Open'` … `'Pong'`), or undefined for an unknown one. */
export function kindName(kind) {
  return kind >= 1 && kind <= 9 ? KIND_NAMES[kind] : undefined
}

/**
 * Why a message, frame or payload could not be decoded. `kind` is the name of the Rust
 * `DecodeError` variant; tuple variants carry `value`, `Truncated` carries `needed` and
 * `available`. `message` is the Rust `Display` text (what the backend puts in its
 * session errors).
 */
export class DecodeError extends Error {
  constructor(kind, fields = {}) {
    super(describe(kind, fields))
    this.name = 'DecodeError'
    this.kind = kind
    if ('value' in fields) this.value = fields.value
    if ('needed' in fields) {
      this.needed = fields.needed
      this.available = fields.available
    }
  }

  /** The error as protocol/vectors/golden.json writes it. */
  toJSON() {
    const out = { kind: this.kind }
    if ('value' in this) out.value = this.value
    if ('needed' in this) {
      out.needed = this.needed
      out.available = this.available
    }
    return out
  }

  static empty() { return new DecodeError('Empty') }
  static unsupportedVersion(v) { return new DecodeError('UnsupportedVersion', { value: v }) }
  static unknownKind(k) { return new DecodeError('UnknownKind', { value: k }) }
  static reservedFlags(f) { return new DecodeError('ReservedFlags', { value: f }) }
  static payloadTooLarge(n) { return new DecodeError('PayloadTooLarge', { value: n }) }
  static truncated(needed, available) { return new DecodeError('Truncated', { needed, available }) }
  static invalidUtf8(field) { return new DecodeError('InvalidUtf8', { value: field }) }
  static trailingBytes(n) { return new DecodeError('TrailingBytes', { value: n }) }
  static invalidHex() { return new DecodeError('InvalidHex') }
}

function describe(kind, f) {
  switch (kind) {
    case 'Empty': return 'empty message'
    case 'UnsupportedVersion': return `unsupported protocol version ${f.value} (this side speaks ${VERSION})`
    case 'UnknownKind': return `unknown frame kind ${f.value}`
    case 'ReservedFlags': return `reserved flags byte is 0x${f.value.toString(16).padStart(2, '0')}, must be 0`
    case 'PayloadTooLarge': return `payload of ${f.value} bytes exceeds ${MAX_FRAME_PAYLOAD}`
    case 'Truncated': return `truncated: needed ${f.needed} bytes, had ${f.available}`
    case 'InvalidUtf8': return `field \`${f.value}\` is not valid UTF-8`
    case 'TrailingBytes': return `${f.value} bytes after the last field`
    case 'InvalidHex': return 'not lowercase hex'
    default: return kind
  }
}

const encoder = new TextEncoder()
// Strict (like Rust's String::from_utf8): invalid sequences fail, a BOM is kept as U+FEFF.
const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

/** A Uint8Array view of bytes given as a Uint8Array, another view, or an ArrayBuffer. */
export function toBytes(data) {
  if (data instanceof Uint8Array) return data
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
  if (data instanceof ArrayBuffer) return new Uint8Array(data)
  if (typeof data === 'string') return encoder.encode(data)
  throw new TypeError('expected a string, an ArrayBuffer or an ArrayBufferView')
}

// ---------------------------------------------------------------------------------------
// Messages and frames

/** Encoded size of a frame with a payload of `payloadLen` bytes. */
export function frameLen(payloadLen) {
  return HEADER_LEN + payloadLen
}

/**
 * One message holding `frames` ({kind, stream, payload}) in order. A payload over
 * MAX_FRAME_PAYLOAD throws DecodeError PayloadTooLarge (as the Rust encoder refuses it).
 */
export function encodeMessage(frames) {
  let size = 1
  for (const f of frames) {
    const n = f.payload ? f.payload.byteLength : 0
    if (n > MAX_FRAME_PAYLOAD) throw DecodeError.payloadTooLarge(n)
    size += HEADER_LEN + n
  }
  const out = new Uint8Array(size)
  const view = new DataView(out.buffer)
  out[0] = VERSION
  let at = 1
  for (const f of frames) {
    const payload = f.payload ? toBytes(f.payload) : EMPTY
    out[at] = f.kind
    out[at + 1] = 0
    view.setUint32(at + 2, f.stream >>> 0)
    view.setUint32(at + 6, payload.byteLength)
    out.set(payload, at + HEADER_LEN)
    at += HEADER_LEN + payload.byteLength
  }
  return out
}

/** A whole message holding exactly one frame. */
export function encodeFrame(kind, stream, payload) {
  return encodeMessage([{ kind, stream, payload }])
}

const EMPTY = new Uint8Array(0)

/**
 * Decodes one frame starting at `offset` of `buf`: null at the end of the buffer, else
 * {kind, stream, payload, size} (payload is a view into `buf`; size = header + payload).
 * Throws DecodeError, with offsets counted from the frame's start; the header is checked
 * in the order length ≥ 10, kind, flags, length bound, payload present.
 */
export function decodeFrame(buf, offset = 0) {
  const available = buf.byteLength - offset
  if (available <= 0) return null
  if (available < HEADER_LEN) throw DecodeError.truncated(HEADER_LEN, available)
  const kind = buf[offset]
  if (kind < 1 || kind > 9) throw DecodeError.unknownKind(kind)
  const flags = buf[offset + 1]
  if (flags !== 0) throw DecodeError.reservedFlags(flags)
  const view = new DataView(buf.buffer, buf.byteOffset + offset, HEADER_LEN)
  const stream = view.getUint32(2)
  const len = view.getUint32(6)
  if (len > MAX_FRAME_PAYLOAD) throw DecodeError.payloadTooLarge(len)
  const end = HEADER_LEN + len
  if (end > available) throw DecodeError.truncated(end, available)
  return { kind, stream, payload: buf.subarray(offset + HEADER_LEN, offset + end), size: end }
}

/**
 * The frames of one message. Iterating yields each frame in order; a frame that does
 * not decode throws its DecodeError from `next()` and ends the iteration. `index` is
 * the number of frames yielded so far.
 */
export class Frames {
  constructor(buf, offset) {
    this.buf = buf
    this.offset = offset
    this.index = 0
    this.failed = false
  }
  next() {
    if (this.failed) return { done: true, value: undefined }
    let frame
    try {
      frame = decodeFrame(this.buf, this.offset)
    } catch (e) {
      this.failed = true
      throw e
    }
    if (frame === null) return { done: true, value: undefined }
    this.offset += frame.size
    this.index += 1
    return { done: false, value: frame }
  }
  [Symbol.iterator]() { return this }
}

/**
 * Checks a message's version byte (OLDEST_VERSION to VERSION; throws DecodeError Empty /
 * UnsupportedVersion at once) and returns an iterator over its frames.
 */
export function decodeMessage(msg) {
  const buf = toBytes(msg)
  if (buf.byteLength === 0) throw DecodeError.empty()
  if (buf[0] < OLDEST_VERSION || buf[0] > VERSION) throw DecodeError.unsupportedVersion(buf[0])
  return new Frames(buf, 1)
}

// ---------------------------------------------------------------------------------------
// Payloads

const U16_MAX = 0xffff

/** The UTF-8 bytes of `s`, cut to at most `max` bytes at a character boundary. */
export function truncateUtf8(s, max) {
  const bytes = encoder.encode(s)
  if (bytes.byteLength <= max) return bytes
  let end = max
  while (end > 0 && (bytes[end] & 0xc0) === 0x80) end--
  return bytes.subarray(0, end)
}

class Writer {
  constructor() {
    this.parts = []
    this.size = 0
  }
  bytes(b) {
    this.parts.push(b)
    this.size += b.byteLength
  }
  u16(n) {
    const b = new Uint8Array(2)
    new DataView(b.buffer).setUint16(0, n)
    this.bytes(b)
  }
  u64(n) {
    const b = new Uint8Array(8)
    new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, BigInt(n)))
    this.bytes(b)
  }
  str(s) {
    // Longer strings are cut at a char boundary, as the Rust encoder does.
    const b = truncateUtf8(s ?? '', U16_MAX)
    this.u16(b.byteLength)
    this.bytes(b)
  }
  identity(id) {
    this.str(id.subject)
    this.str(id.tenant)
    this.str(id.scopes)
    this.u64(id.expiresAt ?? 0n)
  }
  finish() {
    const out = new Uint8Array(this.size)
    let at = 0
    for (const p of this.parts) {
      out.set(p, at)
      at += p.byteLength
    }
    return out
  }
}

class Reader {
  constructor(buf) {
    this.buf = toBytes(buf)
    this.pos = 0
  }
  take(n) {
    const end = this.pos + n
    if (end > this.buf.byteLength) throw DecodeError.truncated(end, this.buf.byteLength)
    const out = this.buf.subarray(this.pos, end)
    this.pos = end
    return out
  }
  u16() {
    const b = this.take(2)
    return (b[0] << 8) | b[1]
  }
  u64() {
    const b = this.take(8)
    return new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0)
  }
  str(field) {
    const len = this.u16()
    return utf8(this.take(len), field)
  }
  rest() {
    const out = this.buf.subarray(this.pos)
    this.pos = this.buf.byteLength
    return out
  }
  restStr(field) {
    return utf8(this.rest(), field)
  }
  identity() {
    return {
      subject: this.str('subject'),
      tenant: this.str('tenant'),
      scopes: this.str('scopes'),
      expiresAt: this.u64(),
    }
  }
  left() {
    return this.buf.byteLength - this.pos
  }
  finish() {
    if (this.pos !== this.buf.byteLength) throw DecodeError.trailingBytes(this.buf.byteLength - this.pos)
  }
}

function utf8(bytes, field) {
  try {
    return strictUtf8.decode(bytes)
  } catch {
    throw DecodeError.invalidUtf8(field)
  }
}

/** `subject:str tenant:str scopes:str expires_at:u64` (14 + the strings' bytes). */
export function encodeIdentity(identity) {
  const w = new Writer()
  w.identity(identity)
  return w.finish()
}

/** Decodes encodeIdentity's output; trailing bytes are an error. */
export function decodeIdentity(buf) {
  const r = new Reader(buf)
  const id = r.identity()
  r.finish()
  return id
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'))

/** Lowercase hex of bytes. */
export function toHex(bytes) {
  let s = ''
  for (const b of toBytes(bytes)) s += HEX[b]
  return s
}

/** Bytes of lowercase hex of even length; anything else throws DecodeError InvalidHex. */
export function fromHex(s) {
  if (s.length % 2 !== 0) throw DecodeError.invalidHex()
  const out = new Uint8Array(s.length / 2)
  for (let i = 0; i < out.length; i++) {
    out[i] = (nibble(s.charCodeAt(2 * i)) << 4) | nibble(s.charCodeAt(2 * i + 1))
  }
  return out
}

function nibble(c) {
  if (c >= 0x30 && c <= 0x39) return c - 0x30
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10
  throw DecodeError.invalidHex()
}

/** The identity as the HTTP fallback carries it (lowercase hex of its encoding). */
export function identityToHex(identity) {
  return toHex(encodeIdentity(identity))
}

/** Parses identityToHex's output (InvalidHex, or the identity's decode errors). */
export function identityFromHex(s) {
  return decodeIdentity(fromHex(s))
}

/**
 * Open: `path:str identity [attach]`. `attach` ({session: 16 bytes or 32 hex digits,
 * received}) only on a session's stream (version 3).
 */
export function encodeOpen({ path, identity, attach }) {
  const w = new Writer()
  w.str(path)
  w.identity(identity)
  if (attach) {
    w.bytes(typeof attach.session === 'string' ? parseSessionId(attach.session) : toBytes(attach.session))
    w.u64(attach.received ?? 0n)
  }
  return w.finish()
}

/**
 * `{path, identity}`, plus `attach` `{session (32 hex digits), received (BigInt)}` when
 * exactly an Attach follows the identity; other trailing bytes are TrailingBytes.
 */
export function decodeOpen(payload) {
  const r = new Reader(payload)
  const open = { path: r.str('path'), identity: r.identity() }
  if (r.left() === ATTACH_LEN) open.attach = { session: toHex(r.take(SESSION_ID_BYTES)), received: r.u64() }
  r.finish()
  return open
}

const SESSION_ID_RE = /^[0-9a-f]{32}$/

/** The 16 bytes of a session id written as 32 lowercase hex digits; anything else throws DecodeError InvalidHex. */
export function parseSessionId(s) {
  if (typeof s !== 'string' || !SESSION_ID_RE.test(s)) throw DecodeError.invalidHex()
  return fromHex(s)
}

/** Whether `s` is a session id as written: 32 lowercase hex digits. */
export function isSessionId(s) {
  return typeof s === 'string' && SESSION_ID_RE.test(s)
}

/** Request: `method:str path:str content_type:str identity body:rest`. */
export function encodeRequest({ method, path, contentType, identity, body }) {
  const w = new Writer()
  w.str(method)
  w.str(path)
  w.str(contentType ?? '')
  w.identity(identity)
  if (body) w.bytes(toBytes(body))
  return w.finish()
}

export function decodeRequest(payload) {
  const r = new Reader(payload)
  return {
    method: r.str('method'),
    path: r.str('path'),
    contentType: r.str('content_type'),
    identity: r.identity(),
    body: r.rest(),
  }
}

/** Response: `status:u16 content_type:str body:rest`. */
export function encodeResponse({ status, contentType, body }) {
  const w = new Writer()
  w.u16(status)
  w.str(contentType ?? '')
  if (body) w.bytes(toBytes(body))
  return w.finish()
}

export function decodeResponse(payload) {
  const r = new Reader(payload)
  return { status: r.u16(), contentType: r.str('content_type'), body: r.rest() }
}

/** Close: `code:u16 reason:rest`; an empty payload means code 1005, reason "". */
export function encodeClose({ code, reason }) {
  const w = new Writer()
  w.u16(code)
  w.bytes(encoder.encode(reason ?? ''))
  return w.finish()
}

export function decodeClose(payload) {
  const r = new Reader(payload)
  if (r.buf.byteLength === 0) return { code: 1005, reason: '' }
  return { code: r.u16(), reason: r.restStr('reason') }
}

/** Error: `code:u16 message:rest` (HTTP-like codes; on stream 0 session-level). */
export function encodeError({ code, message }) {
  const w = new Writer()
  w.u16(code)
  w.bytes(encoder.encode(message ?? ''))
  return w.finish()
}

export function decodeError(payload) {
  const r = new Reader(payload)
  return { code: r.u16(), message: r.restStr('message') }
}

// ---------------------------------------------------------------------------------------
// Session envelopes (PROTOCOL.md §14): each message of a session stream, both ways.
//   1 Text    seq:u64 ack:u64 payload      2 Binary  seq:u64 ack:u64 payload
//   3 Ack     ack:u64                      4 Welcome flags:u8 (bit 0 resumed) ack:u64
//   5 Ping    opaque                       6 Pong    the Ping's bytes

/** Envelope types, by the names of the Rust `Envelope` variants (Text and Binary are `Data`). */
export const EnvelopeType = Object.freeze({ Text: 1, Binary: 2, Ack: 3, Welcome: 4, Ping: 5, Pong: 6 })
/** The fixed part of a Text/Binary envelope: type, seq, ack. */
export const DATA_HEADER_LEN = 17

/**
 * One envelope's bytes. `env` is `{type: 'Text'|'Binary', seq, ack, payload}`,
 * `{type: 'Ack', ack}`, `{type: 'Welcome', resumed, ack}` or `{type: 'Ping'|'Pong',
 * payload}`; numbers are u64 (BigInt or a safe integer).
 */
export function encodeEnvelope(env) {
  const w = new Writer()
  const type = EnvelopeType[env.type]
  if (type === undefined) throw new TypeError(`no envelope type ${env.type}`)
  w.bytes(new Uint8Array([type]))
  switch (env.type) {
    case 'Text':
    case 'Binary':
      w.u64(env.seq)
      w.u64(env.ack)
      break
    case 'Ack':
      w.u64(env.ack)
      return w.finish()
    case 'Welcome':
      w.bytes(new Uint8Array([env.resumed ? 1 : 0]))
      w.u64(env.ack)
      return w.finish()
    default:
      break
  }
  if (env.payload) w.bytes(toBytes(env.payload))
  return w.finish()
}

/**
 * Decodes one envelope (the Rust `Envelope::decode`): `{type, seq, ack, payload}` with
 * `seq`/`ack` BigInts and `payload` a view into `buf`. Throws DecodeError: Empty,
 * UnknownKind (the type byte), Truncated (offsets after the type byte), TrailingBytes
 * (after an Ack or a Welcome), ReservedFlags (a Welcome's flags other than bit 0).
 */
export function decodeEnvelope(buf) {
  const bytes = toBytes(buf)
  if (bytes.byteLength === 0) throw DecodeError.empty()
  const r = new Reader(bytes.subarray(1))
  switch (bytes[0]) {
    case EnvelopeType.Text:
    case EnvelopeType.Binary: {
      const seq = r.u64()
      const ack = r.u64()
      return { type: bytes[0] === EnvelopeType.Text ? 'Text' : 'Binary', seq, ack, payload: r.rest() }
    }
    case EnvelopeType.Ack: {
      const env = { type: 'Ack', ack: r.u64() }
      r.finish()
      return env
    }
    case EnvelopeType.Welcome: {
      const [flags] = r.take(1)
      if (flags & ~1) throw DecodeError.reservedFlags(flags)
      const env = { type: 'Welcome', resumed: flags === 1, ack: r.u64() }
      r.finish()
      return env
    }
    case EnvelopeType.Ping: return { type: 'Ping', payload: r.rest() }
    case EnvelopeType.Pong: return { type: 'Pong', payload: r.rest() }
    default: throw DecodeError.unknownKind(bytes[0])
  }
}
