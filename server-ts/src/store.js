// The stored stream tables: how each mux socket's streams are laid out in the object's
// synchronous `ctx.storage.kv`. They are stored so that they survive hibernation (PROTOCOL.md §8).
// The layout matches the Rust reference backend (backend-do/src/kv.rs, object.rs):
//   {prefix}{socket}                   the socket's tenant (UTF-8)
//   {prefix}{socket}/{stream:010}      the stream's entry: service byte + identity
//   {prefix}{socket}/{stream:010}/meta {id, attachment}, only when either is not the default
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
  constructor(kv, prefix) {
    this.kv = kv
    this.prefix = prefix
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
}
