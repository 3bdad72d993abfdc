// Resumable sessions (PROTOCOL.md §14), the object's side: each session's positions and the
// messages it sent that its client has not acknowledged, kept in ctx.storage.kv, so that a
// client that reconnects (through any snippet isolate, after the object hibernated or
// restarted) gets what it missed and nothing twice, and the application sees one client
// throughout. The port of do-server/src/sessions.rs.
//
// A session's client is a stream state (`st`, core.js) with `st.resume` set to its record
// here. It is attached while `st.session` (its mux socket) is set, at `st.stream`;
// detached otherwise, and then it waits RESUME_WINDOW_MS for its client. Core and the
// socket's Session decide when to attach, detach and end; this module keeps the state,
// numbers and keeps what is sent, and stores it. ("Session" in session.js is one mux
// socket, the protocol's stream 0; these are the client library's sessions.)

import {
  FrameKind, MAX_REPLAY_BYTES, MAX_REPLAY_MESSAGES, RESUME_WINDOW_MS, encodeEnvelope,
} from './protocol.js'

/** A u64 from the wire (BigInt) as a number; Infinity past 2^53 (no position ever gets there). */
export function position(n) {
  return n > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(n)
}

export class ResumableSessions {
  constructor(core) {
    this.core = core
    /** Session id (32 hex digits) → record. */
    this.byId = new Map()
    /** Sessions whose stored summary must be written at the end of the input. */
    this.changed = new Set()
    /** Sessions whose client's messages advanced in this input (an Ack may be owed). */
    this.advanced = []
    /** What the sessions have done since this instance woke. */
    this.counters = { resumed: 0, expired: 0, replayed: 0, duplicates: 0 }
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

  /** A new session `id` for client `st`, attached where `st` is. */
  begin(st, id) {
    const rec = { id, st, detachedAt: null, taken: 0, sent: 0, told: 0, kept: [], keptBytes: 0, ended: false }
    st.resume = rec
    this.byId.set(id, rec)
    this.changed.add(rec)
    return rec
  }

  /** Ends a session: it and its rows are gone (its client stays the caller's to close). */
  end(rec) {
    if (rec.ended) return
    rec.ended = true
    this.byId.delete(rec.id)
    this.changed.delete(rec)
    this.store.deleteSession(rec.id)
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
    const k = { seq, text, at: now, payload }
    this.store.saveKept(rec.id, k)
    rec.kept.push(k)
    rec.keptBytes += payload.byteLength
    // The bounds: what a client needs after a gap longer than these cannot be resumed.
    while (rec.kept.length > MAX_REPLAY_MESSAGES || rec.keptBytes > MAX_REPLAY_BYTES ||
      (rec.kept.length && rec.kept[0].at + RESUME_WINDOW_MS < now)) {
      this.drop(rec)
    }
    this.changed.add(rec)
  }

  drop(rec) {
    const k = rec.kept.shift()
    rec.keptBytes -= k.payload.byteLength
    this.store.deleteKept(rec.id, k.seq)
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
    this.changed.add(rec)
    this.advanced.push(rec)
    return true
  }

  /**
   * The end of an input: an Ack to each attached session whose client's messages
   * advanced and that was told nothing since (a session on a socket still busy with a
   * message is left for the end of that one), and every changed summary stored.
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
    for (const rec of this.changed) if (!rec.ended) this.save(rec)
    this.changed.clear()
  }

  save(rec) {
    const st = rec.st
    const [socket, stream] = st.id.split(':')
    this.store.saveSummary(rec.id, {
      taken: rec.taken,
      sent: rec.sent,
      origin: { socket, stream: Number(stream) },
      at: st.session ? { socket: st.session.id, stream: st.stream } : null,
      detachedAt: rec.detachedAt,
      service: st.service,
      idBytes: st.idBytes,
    })
  }

  /**
   * Rebuilds the sessions from storage. `newClient(summary, id)` makes the client's
   * stream state. Returns the records with where they were attached ({socket, stream}
   * or null), for the caller to place.
   */
  restore(stored, newClient) {
    const out = []
    for (const [id, { summary, kept, meta }] of stored) {
      const st = newClient(summary, meta)
      const rec = this.begin(st, id)
      this.changed.delete(rec)
      rec.taken = summary.taken
      rec.sent = summary.sent
      rec.detachedAt = summary.detachedAt
      rec.kept = kept
      rec.keptBytes = kept.reduce((n, k) => n + k.payload.byteLength, 0)
      out.push({ rec, at: summary.at })
    }
    return out
  }

  /** A restored session whose socket is gone: detached since `now` if it was not. */
  orphaned(rec, now) {
    if (rec.detachedAt === null) {
      rec.detachedAt = now
      this.changed.add(rec)
    }
  }
}
