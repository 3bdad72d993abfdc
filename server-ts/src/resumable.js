// Resumable sessions (PROTOCOL.md §14), the object's side: each session's positions and the
// messages it sent that its client has not acknowledged, kept in ctx.storage.kv, so that a
// client that reconnects (through any snippet isolate, after the object hibernated or
// restarted) gets what it missed and nothing twice, and the application sees one client
// throughout. The port of do-server/src/sessions.rs (and sessions/journal.rs).
//
// A session's client is a stream state (`st`, core.js) with `st.resume` set to its record
// here. It is attached while `st.session` (its mux socket) is set, at `st.stream`;
// detached otherwise, and then it waits RESUME_WINDOW_MS for its client. Core and the
// socket's Session decide when to attach, detach and end; this module keeps the state,
// numbers and keeps what is sent, and says what to store. ("Session" in session.js is one
// mux socket, the protocol's stream 0; these are the client library's sessions.)
//
// What is stored, and when (rows are billed per row written, so as few as possible):
// - a summary row per session (store.js `sess/{id}`), written when the session begins,
//   attaches, detaches or its client's attachment changes, deleted when it ends;
// - one journal record per input (`sess/log/{n:020}`): the new positions (taken, sent) of
//   every session whose positions moved in the input and whose summary is not written in
//   it, and every message sent in a session, each payload once with the (session, seq)
//   pairs it went to (a broadcast's consecutive identical sends share one entry). A record
//   past MAX_RECORD_BYTES starts another within the same input.
// A record is deleted once nothing in it is needed: each of its messages acknowledged,
// dropped by the replay bounds or its session ended, and each of its positions superseded
// by a later record or a summary. So an echo costs one row written and later one deleted,
// and a broadcast one row however many sessions it reaches. Acks are never stored: a
// returning client's `received` decides what is replayed.

import {
  FrameKind, MAX_REPLAY_BYTES, MAX_REPLAY_MESSAGES, RESUME_WINDOW_MS, encodeEnvelope,
} from './protocol.js'

/** Largest record before the input's next messages start another (a stored value may hold 2 MiB). */
export const MAX_RECORD_BYTES = 1024 * 1024

/** Size estimates of a record's parts (close enough to split on). */
const ENTRY_BYTES = 32
const TARGET_BYTES = 48

/** A u64 from the wire (BigInt) as a number; Infinity past 2^53 (no position ever gets there). */
export function position(n) {
  return n > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(n)
}

function sameBytes(a, b) {
  if (a === b) return true
  if (a.byteLength !== b.byteLength) return false
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false
  return true
}

export class ResumableSessions {
  constructor(core) {
    this.core = core
    /** Session id (32 hex digits) → record. */
    this.byId = new Map()
    /** Sessions whose summary must be written at the end of the input. */
    this.changed = new Set()
    /** Sessions whose client's messages advanced in this input (an Ack may be owed). */
    this.advanced = []
    /** Sessions whose positions moved in this input (the input's record carries them). */
    this.moved = new Set()
    /** The input's journal records, being built: {n, positions, entries, size}. */
    this.building = []
    /** Journal record number → what it still holds: {messages, positions, stored}. */
    this.records = new Map()
    this.nextRecord = 0
    /** Rows of the layout before the journal, deleted once their contents are stored anew. */
    this.legacy = []
    /** What the sessions have done since this instance woke. */
    this.counters = { resumed: 0, expired: 0, replayed: 0, duplicates: 0, rowsWritten: 0 }
  }

  get store() {
    return this.core.store
  }

  get(id) {
    return this.byId.get(id)
  }

  /** Sessions nobody is attached to (their clients are still the application's). */
  detached() {
    return [...this.byId.values()].filter((rec) => !rec.st.session)
  }

  /** When a detached session ends if nobody attaches it. */
  expiresAt(rec) {
    return rec.detachedAt === null ? null : rec.detachedAt + RESUME_WINDOW_MS
  }

  /** The earliest time a detached session expires, or null. */
  nextExpiry() {
    let next = null
    for (const rec of this.byId.values()) {
      const t = this.expiresAt(rec)
      if (t !== null && (next === null || t < next)) next = t
    }
    return next
  }

  /** Sessions whose window is over at `now`, in id order (as the Rust core's map). */
  expired(now) {
    return [...this.byId.values()]
      .filter((rec) => { const t = this.expiresAt(rec); return t !== null && t <= now })
      .sort((a, b) => (a.id < b.id ? -1 : 1))
  }

  /**
   * A new session `id` for client `st`, attached where `st` is. `since` is the first
   * journal record that may hold anything of it: a session that ended and begins anew
   * under the same id ignores what older records say of its predecessor.
   */
  begin(st, id) {
    const since = this.building.length ? this.building[0].n : this.nextRecord
    const rec = {
      id, st, detachedAt: null, taken: 0, sent: 0, told: 0, kept: [], keptBytes: 0, ended: false, since, positionsIn: null,
    }
    st.resume = rec
    this.byId.set(id, rec)
    this.changed.add(rec)
    return rec
  }

  /** Ends a session: it and what it holds in storage are gone (its client stays the caller's to close). */
  end(rec) {
    if (rec.ended) return
    rec.ended = true
    this.byId.delete(rec.id)
    this.changed.delete(rec)
    this.moved.delete(rec)
    for (const k of rec.kept) this.forgetKept(k)
    rec.kept = []
    rec.keptBytes = 0
    if (rec.positionsIn !== null) this.release(rec.positionsIn, 0, 1)
    rec.positionsIn = null
    this.deleteRow(this.store.sessionKey(rec.id))
  }

  /**
   * Whether a client that has every message up to `received` (a BigInt) can go on:
   * nothing after it was dropped, and it claims nothing that was never sent.
   */
  resumable(rec, received) {
    const r = position(received)
    const oldest = rec.kept.length ? rec.kept[0].seq : rec.sent + 1
    return r <= rec.sent && oldest <= r + 1
  }

  /**
   * Attaches `rec` to `sock`'s `stream` for a client that has every message up to
   * `received` (checked resumable): Welcome, then what it missed. The caller moves the
   * client and tells its previous stream.
   */
  resume(rec, sock, stream, received) {
    const r = position(received)
    rec.detachedAt = null
    rec.told = rec.taken
    this.counters.resumed++
    sock.enqueue(FrameKind.Binary, stream, encodeEnvelope({ type: 'Welcome', resumed: true, ack: rec.taken }))
    for (const k of rec.kept) {
      if (k.seq <= r) continue
      this.counters.replayed++
      const type = k.text ? 'Text' : 'Binary'
      sock.enqueue(FrameKind.Binary, stream, encodeEnvelope({ type, seq: k.seq, ack: rec.taken, payload: k.payload }))
    }
    this.changed.add(rec)
  }

  /** The session lost its stream: it waits for its client. */
  detach(rec, now) {
    rec.detachedAt = now
    this.changed.add(rec)
  }

  /**
   * Sends a message in the session: numbered, kept until acknowledged (within the
   * bounds), and sent now if the session is attached.
   */
  send(rec, text, payload, now) {
    rec.sent++
    const seq = rec.sent
    const st = rec.st
    if (st.session) {
      rec.told = rec.taken
      const env = encodeEnvelope({ type: text ? 'Text' : 'Binary', seq, ack: rec.taken, payload })
      st.session.enqueue(FrameKind.Binary, st.stream, env)
      // A message too large for any frame ends the client (Error 500) and its session.
      if (rec.ended) return
    }
    this.moved.add(rec)
    if (payload.byteLength > MAX_REPLAY_BYTES) {
      // Larger than the whole replay bound: never kept nor recorded. A client that misses
      // it cannot be resumed, so nothing kept before it can be of use either.
      while (rec.kept.length) this.drop(rec)
      return
    }
    const record = this.startRecord(payload.byteLength)
    const k = { sid: rec.id, seq, text, at: now, payload, record: record.n, gone: false }
    k.payload = this.add(record, k)
    this.records.get(record.n).messages++
    rec.kept.push(k)
    rec.keptBytes += payload.byteLength
    // The bounds: what a client needs after a gap longer than these cannot be resumed.
    while (rec.kept.length > MAX_REPLAY_MESSAGES || rec.keptBytes > MAX_REPLAY_BYTES ||
      (rec.kept.length && rec.kept[0].at + RESUME_WINDOW_MS < now)) {
      this.drop(rec)
    }
  }

  /** This input's record with room for `len` more bytes (a new one when the last is full). */
  startRecord(len) {
    const last = this.building.at(-1)
    if (last && !(last.entries.length && last.size + len > MAX_RECORD_BYTES)) return last
    const record = { n: this.nextRecord++, positions: [], entries: [], size: 0 }
    this.building.push(record)
    this.records.set(record.n, { messages: 0, positions: 0, stored: false })
    return record
  }

  /** Puts kept message `k` in `record`: with the last entry if it is the same message (a broadcast's next session), else in a new one. Returns the payload to keep. */
  add(record, k) {
    const last = record.entries.at(-1)
    record.size += TARGET_BYTES
    if (last && last.text === k.text && sameBytes(last.payload, k.payload)) {
      last.kept.push(k)
      return last.payload
    }
    record.size += ENTRY_BYTES + k.payload.byteLength
    record.entries.push({ text: k.text, at: k.at, payload: k.payload, kept: [k] })
    return k.payload
  }

  drop(rec) {
    const k = rec.kept.shift()
    rec.keptBytes -= k.payload.byteLength
    this.forgetKept(k)
  }

  /** Kept message `k` is no longer needed (acknowledged, dropped, or its session ended). */
  forgetKept(k) {
    if (k.gone) return
    k.gone = true
    this.release(k.record, 1, 0)
  }

  /** The client acknowledged every message up to `ack` (a BigInt): they are dropped. */
  acknowledge(rec, ack) {
    const a = position(ack)
    while (rec.kept.length && rec.kept[0].seq <= a) this.drop(rec)
  }

  /** Whether the client's message `seq` (a BigInt) is the next one; if so it is taken. */
  take(rec, seq) {
    if (position(seq) !== rec.taken + 1) {
      this.counters.duplicates++
      return false
    }
    rec.taken++
    this.moved.add(rec)
    this.advanced.push(rec)
    return true
  }

  /** The client's attachment changed: its summary (which holds it) is written now. */
  attachmentChanged(rec) {
    if (!rec.ended) this.save(rec)
  }

  /**
   * Record `n` no longer needs `messages` of its messages and `positions` of its
   * positions: a stored one is deleted once it needs nothing (one of this input is then
   * simply not stored).
   */
  release(n, messages, positions) {
    const h = this.records.get(n)
    if (!h) return
    h.messages -= messages
    h.positions -= positions
    if (h.messages <= 0 && h.positions <= 0 && h.stored) {
      this.records.delete(n)
      this.deleteRow(this.store.recordKey(n))
    }
  }

  putRow(key, value) {
    this.counters.rowsWritten++
    this.store.put(key, value)
  }

  deleteRow(key) {
    this.counters.rowsWritten++
    this.store.delete(key)
  }

  /**
   * The end of an input: an Ack to each attached session whose client's messages
   * advanced and that was told nothing since (a session on a socket still busy with a
   * message is left for the end of that one); the input's record(s) and every changed
   * summary stored.
   */
  finishInput() {
    const later = []
    for (const rec of this.advanced) {
      const sock = rec.st.session
      if (rec.ended || !sock) continue
      if (sock.busy) {
        later.push(rec)
        continue
      }
      if (rec.told < rec.taken) {
        rec.told = rec.taken
        sock.enqueue(FrameKind.Binary, rec.st.stream, encodeEnvelope({ type: 'Ack', ack: rec.taken }))
      }
    }
    this.advanced = later
    // Positions that moved go in the last record, unless the summary is written anyway.
    const moved = [...this.moved].filter((rec) => !rec.ended && !this.changed.has(rec))
    this.moved.clear()
    if (moved.length) this.startRecord(0)
    const building = this.building
    this.building = []
    const last = building.at(-1)
    for (const rec of moved) {
      last.positions.push([rec.id, rec.taken, rec.sent])
      this.records.get(last.n).positions++
      const before = rec.positionsIn
      rec.positionsIn = last.n
      if (before !== null) this.release(before, 0, 1)
    }
    for (const record of building) {
      const h = this.records.get(record.n)
      if (!h) continue
      if (h.messages <= 0 && h.positions <= 0) {
        // Everything in it was acknowledged or dropped within the input.
        this.records.delete(record.n)
        continue
      }
      h.stored = true
      this.putRow(this.store.recordKey(record.n), encodeRecord(record))
    }
    for (const rec of this.changed) if (!rec.ended) this.save(rec)
    this.changed.clear()
    for (const key of this.legacy.splice(0)) this.deleteRow(key)
  }

  /** Writes the session's summary now: it carries its positions, so a record holding them no longer must. */
  save(rec) {
    const st = rec.st
    const [socket, stream] = st.id.split(':')
    this.changed.delete(rec)
    this.moved.delete(rec)
    this.putRow(this.store.sessionKey(rec.id), this.store.summaryValue({
      taken: rec.taken,
      sent: rec.sent,
      origin: { socket, stream: Number(stream) },
      at: st.session ? { socket: st.session.id, stream: st.stream } : null,
      detachedAt: rec.detachedAt,
      service: st.service,
      idBytes: st.idBytes,
      since: rec.since,
      attachment: st.attachment,
    }))
    const before = rec.positionsIn
    rec.positionsIn = null
    if (before !== null) this.release(before, 0, 1)
  }

  /**
   * Rebuilds the sessions from storage (store.js loadSessions): the summaries, then the
   * records in order. `newClient(summary)` makes the client's stream state. Returns the
   * records with where they were attached ({socket, stream} or null), for the caller to
   * place.
   */
  restore({ summaries, records, legacy }, newClient) {
    const out = []
    for (const [id, summary] of summaries) {
      const st = newClient(summary)
      const rec = this.begin(st, id)
      this.changed.delete(rec)
      rec.taken = summary.taken
      rec.sent = summary.sent
      rec.detachedAt = summary.detachedAt
      rec.since = summary.since
      this.nextRecord = Math.max(this.nextRecord, summary.since)
      out.push({ rec, at: summary.at })
    }
    for (const [n, record] of records) this.restoreRecord(n, record)
    for (const rec of this.byId.values()) {
      rec.kept.sort((a, b) => a.seq - b.seq)
      // What a client can be resumed with runs without a gap up to the last message sent:
      // a message a record still holds for another session, older than one this session
      // dropped, is of no use to it.
      let i = rec.kept.length
      while (i > 0 && rec.kept[i - 1].seq === (i === rec.kept.length ? rec.sent : rec.kept[i].seq - 1)) i--
      for (const k of rec.kept.splice(0, i)) this.forgetKept(k)
      rec.keptBytes = rec.kept.reduce((n, k) => n + k.payload.byteLength, 0)
    }
    this.migrate(legacy)
    return out
  }

  restoreRecord(n, record) {
    this.nextRecord = Math.max(this.nextRecord, n + 1)
    const h = { messages: 0, positions: 0, stored: true }
    this.records.set(n, h)
    for (const [id, taken, sent] of record.positions) {
      const rec = this.byId.get(id)
      if (!rec || n < rec.since) continue
      rec.taken = Math.max(rec.taken, taken)
      rec.sent = Math.max(rec.sent, sent)
      h.positions++
      const before = rec.positionsIn
      rec.positionsIn = n
      if (before !== null) this.release(before, 0, 1)
    }
    for (const e of record.entries) {
      for (const [id, seq] of e.to) {
        const rec = this.byId.get(id)
        if (!rec || n < rec.since) continue
        rec.sent = Math.max(rec.sent, seq)
        rec.kept.push({ sid: id, seq, text: e.text, at: e.at, payload: e.payload, record: n, gone: false })
        h.messages++
      }
    }
    if (h.messages <= 0 && h.positions <= 0) {
      this.records.delete(n)
      this.deleteRow(this.store.recordKey(n))
    }
  }

  /**
   * Sessions stored by the package before the journal (a row per kept message, and the
   * attachment in `sess/{id}/meta`): their messages go in this input's record, their
   * attachment in their summary, and the old rows are deleted once those are stored.
   */
  migrate(legacy) {
    for (const [id, old] of legacy) {
      this.legacy.push(...old.keys)
      const rec = this.byId.get(id)
      if (!rec) continue
      if (old.meta) rec.st.attachment = old.meta.attachment
      for (const { seq, text, at, payload } of old.kept.sort((a, b) => a.seq - b.seq)) {
        if (rec.kept.some((k) => k.seq === seq)) continue
        const record = this.startRecord(payload.byteLength)
        const k = { sid: id, seq, text, at, payload, record: record.n, gone: false }
        k.payload = this.add(record, k)
        this.records.get(record.n).messages++
        rec.kept.push(k)
        rec.keptBytes += payload.byteLength
      }
      rec.kept.sort((a, b) => a.seq - b.seq)
      this.changed.add(rec)
    }
  }

  /** A restored session whose socket is gone: detached since `now` if it was not. */
  orphaned(rec, now) {
    if (rec.detachedAt === null) {
      rec.detachedAt = now
      this.changed.add(rec)
    }
  }
}

/**
 * A record as stored: {positions: [[session, taken, sent]], entries: [{text, at, payload,
 * to: [[session, seq]]}]}, without what was acknowledged or dropped within the input.
 */
function encodeRecord(record) {
  const entries = []
  for (const e of record.entries) {
    const to = e.kept.filter((k) => !k.gone).map((k) => [k.sid, k.seq])
    if (to.length) entries.push({ text: e.text, at: e.at, payload: e.payload, to })
  }
  return { positions: record.positions, entries }
}
