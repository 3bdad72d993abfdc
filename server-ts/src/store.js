// The stored stream tables: how each mux socket's streams are laid out in the object's
// synchronous `ctx.storage.kv`. They are stored so that they survive hibernation (PROTOCOL.md §8).
// The layout matches the Rust reference backend (backend-do/src/kv.rs, object.rs):
//   {prefix}{socket}                   the socket's tenant (UTF-8)
//   {prefix}{socket}/{stream:010}      the stream's entry: service byte + identity
//   {prefix}{socket}/{stream:010}/meta {id, attachment}, only when either is not the default
// and the resumable sessions (PROTOCOL.md §14), as do-server/src/store.rs and sessions.rs keep
// them (a summary per session, one journal record per input; resumable.js says when):
//   {sessionPrefix}{session}           its summary, written when it begins, attaches, detaches
//                                      or its client's attachment changes; deleted when it ends:
//                                      {summary, since, attachment?}, where `summary` is the Rust
//                                      layout (taken:u64 sent:u64 origin:u64 origin_stream:u32
//                                      at_socket:u64 at_stream:u32 (0, 0 = detached)
//                                      detached_at:u64 (0 = attached), then its client's entry:
//                                      service byte + identity), `since` the first journal
//                                      record that may hold anything of it, and `attachment`
//                                      its client's attachment, if any (this package only)
//   {sessionPrefix}log/{n:020}         journal record n: {positions: [[session, taken, sent]],
//                                      entries: [{text, at, payload, to: [[session, seq]]}]},
//                                      the sessions' new positions and the messages sent in
//                                      one input, each payload once
// A session's client has no entry under its socket: it is stored as its session. Rows of
// the layout before the journal ({sessionPrefix}{session}/{seq:020} per kept message and
// {sessionPrefix}{session}/meta) are read once and moved into this one.
// Nothing here knows about frames or handlers; the rest of the server reads and writes
// storage only through StreamStore.

import { decodeIdentity, toBytes, truncateUtf8 } from './protocol.js'

const encoder = new TextEncoder()

/** The services of the reference backend, and their byte in a stored stream entry. */
const SERVICE_CODES = new Map([['/rpc', 1], ['/echo', 2]])
const SERVICE_PATHS = new Map([[1, '/rpc'], [2, '/echo']])
/** Mux socket ids: 48 random bits as 12 lowercase hex digits (as object.rs makes them). */
export const SOCKET_RE = /^[0-9a-f]{12}$/

const pad10 = (n) => String(n).padStart(10, '0')
const pad20 = (n) => String(n).padStart(20, '0')
const SESSION_KEY_RE = /^([0-9a-f]{32})(?:\/(\d{20}|meta))?$/
const RECORD_KEY_RE = /^log\/(\d{20})$/
const SESSION_ID_RE = /^[0-9a-f]{32}$/
const SUMMARY_LEN = 48

/** A session's stored summary (the layout above). `s`: {taken, sent, origin: {socket, stream}, at: {socket, stream} | null, detachedAt, service, idBytes}. */
export function encodeSummary(s) {
  const entry = encodeEntry(s.service, s.idBytes)
  const out = new Uint8Array(SUMMARY_LEN + entry.byteLength)
  const v = new DataView(out.buffer)
  v.setBigUint64(0, BigInt(s.taken))
  v.setBigUint64(8, BigInt(s.sent))
  v.setBigUint64(16, BigInt(parseInt(s.origin.socket, 16)))
  v.setUint32(24, s.origin.stream)
  v.setBigUint64(28, s.at ? BigInt(parseInt(s.at.socket, 16)) : 0n)
  v.setUint32(36, s.at ? s.at.stream : 0)
  v.setBigUint64(40, BigInt(s.detachedAt ?? 0))
  out.set(entry, SUMMARY_LEN)
  return out
}

const socketHex = (n) => n.toString(16).padStart(12, '0')

/**
 * encodeSummary's fields (`detachedAt` null when 0, `at` null when its stream is 0, plus
 * `identity`), with `since` and `attachment`, of a stored summary ({summary, since,
 * attachment} or, as stored before the journal, the bytes alone); null if malformed.
 */
export function decodeSummary(value) {
  if (value && typeof value === 'object' && !ArrayBuffer.isView(value) && !(value instanceof ArrayBuffer)) {
    const s = decodeSummaryBytes(value.summary)
    if (!s) return null
    const since = Number.isSafeInteger(value.since) && value.since >= 0 ? value.since : 0
    return { ...s, since, attachment: value.attachment }
  }
  const s = decodeSummaryBytes(value)
  return s && { ...s, since: 0, attachment: undefined }
}

function decodeSummaryBytes(value) {
  try {
    const b = toBytes(value)
    if (b.byteLength < SUMMARY_LEN) return null
    const v = new DataView(b.buffer, b.byteOffset, b.byteLength)
    const origin = v.getBigUint64(16)
    const atSocket = v.getBigUint64(28)
    if (origin >= 1n << 48n || atSocket >= 1n << 48n) return null
    const entry = decodeEntry(b.subarray(SUMMARY_LEN))
    if (!entry) return null
    const atStream = v.getUint32(36)
    const detachedAt = Number(v.getBigUint64(40))
    return {
      taken: Number(v.getBigUint64(0)),
      sent: Number(v.getBigUint64(8)),
      origin: { socket: socketHex(origin), stream: v.getUint32(24) },
      at: atStream === 0 ? null : { socket: socketHex(atSocket), stream: atStream },
      detachedAt: detachedAt === 0 ? null : detachedAt,
      ...entry,
    }
  } catch {
    return null
  }
}

const isPosition = (n) => Number.isSafeInteger(n) && n >= 0
const isSession = (id) => typeof id === 'string' && SESSION_ID_RE.test(id)

/** Whether a stored journal record has the shape resumable.js writes. */
export function isRecord(r) {
  if (!r || typeof r !== 'object' || !Array.isArray(r.positions) || !Array.isArray(r.entries)) return false
  const position = (p) => Array.isArray(p) && isSession(p[0]) && isPosition(p[1]) && isPosition(p[2])
  const target = (t) => Array.isArray(t) && isSession(t[0]) && isPosition(t[1]) && t[1] > 0
  const entry = (e) => e && typeof e.text === 'boolean' && isPosition(e.at) && e.payload instanceof Uint8Array &&
    Array.isArray(e.to) && e.to.every(target)
  return r.positions.every(position) && r.entries.every(entry)
}

/** Stored stream entry: service byte (1 rpc, 2 echo) + identity, as kv.rs/object.rs store it; 0 + path:str + identity for other paths. */
export function encodeEntry(service, idBytes) {
  const code = SERVICE_CODES.get(service)
  if (code) {
    const out = new Uint8Array(1 + idBytes.byteLength)
    out[0] = code
    out.set(idBytes, 1)
    return out
  }
  const path = truncateUtf8(service, 0xffff)
  const out = new Uint8Array(3 + path.byteLength + idBytes.byteLength)
  out[1] = path.byteLength >> 8
  out[2] = path.byteLength & 0xff
  out.set(path, 3)
  out.set(idBytes, 3 + path.byteLength)
  return out
}

/** {service, identity, idBytes} of a stored entry, or null if it is not one. */
export function decodeEntry(value) {
  try {
    const bytes = toBytes(value)
    let service = SERVICE_PATHS.get(bytes[0])
    let rest = bytes.subarray(1)
    if (bytes[0] === 0) {
      const len = (bytes[1] << 8) | bytes[2]
      service = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(3, 3 + len))
      rest = bytes.subarray(3 + len)
    }
    if (service === undefined) return null
    const identity = decodeIdentity(rest)
    return { service, identity, idBytes: rest.slice() }
  } catch {
    return null
  }
}

/** The stream tables in `ctx.storage.kv` under one key prefix. Without a kv, nothing is kept. */
export class StreamStore {
  constructor(kv, prefix, sessionPrefix = 'sess/') {
    this.kv = kv
    this.prefix = prefix
    this.sessionPrefix = sessionPrefix
    if (!this.kv) {
      console.warn('snippet-proxy-server: ctx.storage.kv is missing (needs a SQLite-backed Durable Object); ' +
        'stream tables will not survive hibernation')
    }
  }

  put(key, value) {
    if (this.kv) this.kv.put(key, value)
  }
  delete(key) {
    if (this.kv) this.kv.delete(key)
  }
  list(prefix) {
    if (!this.kv) return []
    return [...this.kv.list({ prefix })]
  }
  entryKey(socket, stream) {
    return `${this.prefix}${socket}/${pad10(stream)}`
  }

  /** Records a new mux socket's tenant. */
  saveTenant(socket, tenant) {
    this.put(`${this.prefix}${socket}`, encoder.encode(tenant))
  }

  /** The tenant recorded for a socket ('' if none). */
  loadTenant(socket) {
    const stored = this.kv?.get(`${this.prefix}${socket}`)
    return stored ? new TextDecoder().decode(toBytes(stored)) : ''
  }

  /** Writes a stream's entry, and its meta key when its id or attachment needs one (updates `st.hasMeta`). */
  persist(st) {
    const key = this.entryKey(st.session.id, st.stream)
    this.put(key, encodeEntry(st.service, st.idBytes))
    if (st.id !== `${st.session.id}:${st.stream}` || st.attachment !== undefined) {
      this.put(`${key}/meta`, { id: st.id, attachment: st.attachment })
      st.hasMeta = true
    } else if (st.hasMeta) {
      this.delete(`${key}/meta`)
      st.hasMeta = false
    }
  }

  /** Deletes a stream's entry (and meta) from the table of `socket`. */
  unpersist(socket, st) {
    const key = this.entryKey(socket, st.stream)
    this.delete(key)
    if (st.hasMeta) this.delete(`${key}/meta`)
  }

  /**
   * A socket's stored streams, in key order: stream id → {service, identity, idBytes, meta}.
   * `meta` is the stored {id, attachment} object, or undefined. Undecodable entries are skipped.
   */
  loadStreams(socket) {
    const base = `${this.prefix}${socket}/`
    const entries = new Map()
    const metas = new Map()
    for (const [key, value] of this.list(base)) {
      const m = /^(\d{10})(\/meta)?$/.exec(key.slice(base.length))
      if (!m) continue
      const stream = Number(m[1])
      if (stream > 0xffffffff) continue
      if (m[2]) {
        metas.set(stream, value)
        continue
      }
      const entry = decodeEntry(value)
      if (entry) entries.set(stream, entry)
    }
    for (const [stream, meta] of metas) {
      const entry = entries.get(stream)
      if (!entry || !meta || typeof meta !== 'object') continue
      entry.meta = meta
    }
    return entries
  }

  /** The ids of every socket that has keys in storage. */
  storedSockets() {
    const out = new Set()
    for (const [key] of this.list(this.prefix)) {
      const socket = key.slice(this.prefix.length).split('/')[0]
      if (SOCKET_RE.test(socket)) out.add(socket)
    }
    return out
  }

  /** Deletes a socket's whole table and its tenant. */
  deleteSocket(socket) {
    const base = `${this.prefix}${socket}/`
    for (const [key] of this.list(base)) this.delete(key)
    this.delete(`${this.prefix}${socket}`)
  }

  // --- resumable sessions ---------------------------------------------------------------

  sessionKey(id) {
    return `${this.sessionPrefix}${id}`
  }
  recordKey(n) {
    return `${this.sessionPrefix}log/${pad20(n)}`
  }

  /** A session's summary as stored: `s` is encodeSummary's fields plus `since` and `attachment`. */
  summaryValue(s) {
    const value = { summary: encodeSummary(s), since: s.since }
    if (s.attachment !== undefined) value.attachment = s.attachment
    return value
  }

  /**
   * Every stored session: {summaries: id → decodeSummary's fields, records: [[n, record]]
   * in order, legacy: id → {kept: [{seq, text, at, payload}], meta, keys}} (rows of the
   * layout before the journal). Undecodable summaries are skipped; undecodable records,
   * and old rows of a session without a summary, are deleted.
   */
  loadSessions() {
    const summaries = new Map()
    const records = []
    const legacy = new Map()
    const rows = this.list(this.sessionPrefix)
    for (const [key, value] of rows) {
      const rest = key.slice(this.sessionPrefix.length)
      const r = RECORD_KEY_RE.exec(rest)
      if (r) {
        const n = Number(r[1])
        if (Number.isSafeInteger(n) && isRecord(value)) records.push([n, value])
        else this.delete(key)
        continue
      }
      const m = SESSION_KEY_RE.exec(rest)
      if (!m || m[2] !== undefined) continue
      const summary = decodeSummary(value)
      if (summary) summaries.set(m[1], summary)
    }
    for (const [key, value] of rows) {
      const m = SESSION_KEY_RE.exec(key.slice(this.sessionPrefix.length))
      if (!m || m[2] === undefined) continue
      if (!summaries.has(m[1])) {
        this.delete(key)
        continue
      }
      if (!legacy.has(m[1])) legacy.set(m[1], { kept: [], meta: undefined, keys: [] })
      const old = legacy.get(m[1])
      old.keys.push(key)
      if (m[2] === 'meta') {
        if (value && typeof value === 'object') old.meta = value
        continue
      }
      let b
      try {
        b = toBytes(value)
      } catch {
        continue
      }
      if (b.byteLength < 9) continue
      const at = Number(new DataView(b.buffer, b.byteOffset, b.byteLength).getBigUint64(1))
      old.kept.push({ seq: Number(m[2]), text: b[0] === 1, at, payload: b.slice(9) })
    }
    records.sort((a, b) => a[0] - b[0])
    return { summaries, records, legacy }
  }
}
