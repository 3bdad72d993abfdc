// One mux socket's session: the per-socket state machine of the protocol. A Session decodes
// the snippet's messages. It runs their frames in order: Open (admission, limits, hand-over,
// a resumable session's Attach), Text/Binary (a resumable session's envelopes), Close,
// Request, Ping (and the hand-over barrier). It queues messages that arrive while a handler
// of this socket is still awaiting. Replies go to its outbox, and it sends them in as few
// batched messages as the bound allows. Object-wide state (handlers, storage, the other
// sockets, hand-over orphans, resumable sessions) belongs to Core (core.js). A Session
// reaches it through `this.core`.

import {
  CLIENT_REPLACED, DecodeError, FrameKind, HEADER_LEN, MAX_FRAME_PAYLOAD, MAX_SESSION_STREAMS, SESSION, SESSION_EXPIRED,
  decodeClose, decodeEnvelope, decodeMessage, decodeOpen, decodeRequest, encodeEnvelope, encodeError, encodeIdentity,
  encodeMessage, encodeResponse, endsSession, errorClose, toBytes, toHex,
} from './protocol.js'
import { checkAdmission, debugStr, isExpired } from './authz.js'
import { after, isThenable } from './async.js'

const encoder = new TextEncoder()
// Text frames reach the application as strings; one that is not UTF-8 (a client's runtime
// never sends one) arrives as an ArrayBuffer, as binary.
const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })
const EMPTY = new Uint8Array(0)
/** The code a Close frame with no payload stands for (RFC 6455: no status received). */
const NO_STATUS = 1005

/** Snippet ping purposes (PROTOCOL.md §5.3): a 9-byte payload, purpose 1 = hand-over barrier. */
const BARRIER_PURPOSE = 1

function serves(services, path) {
  if (services === null) return true
  if (typeof services === 'function') return Boolean(services(path))
  return services.includes(path)
}

function noService(services, path) {
  const list = Array.isArray(services) ? services : []
  const hint = list.length > 1 ? `${list.slice(0, -1).join(', ')} or ${list[list.length - 1]}` : list.join('')
  return `no service at ${debugStr(path)}${hint ? ` (try ${hint})` : ''}`
}

/** A Text frame's payload as a string, or (Binary, or text that is not UTF-8) an ArrayBuffer. */
function messageData(f) {
  if (f.kind === FrameKind.Text) {
    try {
      return strictUtf8.decode(f.payload)
    } catch {
      // handled as binary below
    }
  }
  return f.payload.slice().buffer
}

/** One mux socket: its stream table, its outbox and its queue of messages. */
export class Session {
  constructor(core, id, tenant) {
    this.core = core
    this.id = id
    this.tenant = tenant
    this.streams = new Map() // stream id → stream state
    this.ws = null
    this.outbox = []
    this.busy = false
    this.queue = []
    this.closed = false
    this.barrierAt = 0
    this.messagesIn = 0 // messages (batches) received since this instance knew the socket
    this.messagesOut = 0 // messages (batches) sent since then
  }

  // --- messages ------------------------------------------------------------------------

  /** One WebSocket message from the snippet: true, or a promise of true once handled. */
  receive(message) {
    let bytes
    try {
      bytes = typeof message === 'string' ? encoder.encode(message) : toBytes(message)
    } catch {
      bytes = EMPTY
    }
    if (this.busy || this.queue.length) {
      return new Promise((resolve) => this.queue.push({ bytes, resolve }))
    }
    const r = this.job(bytes)
    return isThenable(r) ? r.then(() => { this.pump(); return true }) : true
  }

  /** Runs the messages that arrived while a handler of this socket was awaiting, in order. */
  pump() {
    while (!this.busy && this.queue.length) {
      const next = this.queue.shift()
      if (this.closed) {
        next.resolve(true)
        continue
      }
      const r = this.job(next.bytes)
      if (isThenable(r)) {
        r.then(() => { next.resolve(true); this.pump() })
        return
      }
      next.resolve(true)
    }
  }

  /** Handles one message: frames in order, each frame's handlers finished before the next. */
  job(bytes) {
    this.busy = true
    this.messagesIn++
    this.core.counters.messagesIn++
    let frames
    try {
      frames = decodeMessage(bytes)
    } catch (e) {
      const head = toHex(bytes.subarray(0, 8)).replace(/(..)(?!$)/g, '$1 ')
      this.error(SESSION, 400, `bad message (${bytes.byteLength} bytes, starting ${head}): ${e.message}`)
      return this.endJob()
    }
    return this.frames(frames)
  }

  frames(frames) {
    const core = this.core
    while (!this.closed) {
      let step
      try {
        step = frames.next()
      } catch (e) {
        if (!(e instanceof DecodeError)) throw e
        this.error(SESSION, 400, `bad frame: ${e.message}`)
        break
      }
      if (step.done) break
      core.counters.framesIn++
      let r
      try {
        r = this.frame(step.value)
      } catch (e) {
        core.report(e, 'frame')
      }
      r = after(r, () => core.drainDeferred())
      if (isThenable(r)) {
        return r.then(undefined, (e) => core.report(e, 'frame')).then(() => this.frames(frames))
      }
    }
    return this.endJob()
  }

  endJob() {
    this.busy = false
    this.core.flushAll()
  }

  frame(f) {
    switch (f.kind) {
      case FrameKind.Open: return this.open(f.stream, f.payload)
      case FrameKind.Text:
      case FrameKind.Binary: return this.data(f)
      case FrameKind.Close: return this.closeFrame(f.stream, f.payload)
      case FrameKind.Request: return this.request(f.stream, f.payload)
      case FrameKind.Ping:
        if (f.stream === SESSION && f.payload.byteLength === 9 && f.payload[0] === BARRIER_PURPOSE) {
          this.core.counters.handovers++
          this.markBarrier()
        }
        this.enqueue(FrameKind.Pong, f.stream, f.payload)
        return undefined
      default: // Pong, Response, Error: nothing to do
        return undefined
    }
  }

  /** Remembers a hand-over barrier, in the socket's attachment too (the re-opens may meet another instance). */
  markBarrier() {
    this.barrierAt = this.core.now()
    const ws = this.ws
    if (!ws) return
    try {
      ws.serializeAttachment({ ...ws.deserializeAttachment(), barrierAt: this.barrierAt })
      const info = this.core.info.get(ws)
      if (info) info.barrierAt = this.barrierAt
    } catch (e) {
      this.core.report(e, 'barrier')
    }
  }

  // --- frames --------------------------------------------------------------------------

  open(id, payload) {
    const core = this.core
    let open
    try {
      open = decodeOpen(payload)
    } catch (e) {
      return this.refuseOpen(id, 'malformed', 400, `bad open frame: ${e.message}`)
    }
    if (id === SESSION) return this.refuseOpen(id, 'malformed', 400, 'stream 0 is the session; it cannot be opened')
    if (!serves(core.services, open.path)) return this.refuseOpen(id, 'service', 404, noService(core.services, open.path))
    const why = checkAdmission(open.identity, this.tenant, core.nowSecs())
    if (why) return this.refuseOpen(id, 'admission', 403, why)
    const existing = this.streams.get(id)
    if (!existing && this.streams.size >= core.maxStreams) {
      return this.refuseOpen(id, 'limit', 503, `too many streams on this session (limit ${MAX_SESSION_STREAMS})`)
    }
    const idBytes = encodeIdentity(open.identity)
    let replaced
    // The same session attached again on this very stream goes on here (attach resumes it).
    const again = open.attach && existing?.resume && core.resumable.get(open.attach.session)?.st === existing
    if (existing && !again) {
      // A second Open of a live id replaces its service and identity, as the reference
      // backend does; the application sees the old client close (its session, if any,
      // ends) and a new one open.
      replaced = core.end(existing, CLIENT_REPLACED.code, CLIENT_REPLACED.reason, true)
    } else if (!open.attach) {
      const moved = core.adopt(this, id, open.path, idBytes)
      if (moved) return undefined
    }
    return after(replaced, () => {
      if (this.closed) return undefined
      if (open.attach) return this.attach(id, open, idBytes)
      const st = core.newStream(this, id, open.path, open.identity, idBytes)
      this.streams.set(id, st)
      core.store.persist(st)
      return after(core.openHandler(st), (ok) => this.opened(st, ok))
    })
  }

  /**
   * An Open with an Attach (PROTOCOL.md §14.2): the session goes on here (Welcome, then
   * what the client missed), begins anew (Welcome, onOpen), or is refused.
   */
  attach(id, open, idBytes) {
    const core = this.core
    const sessions = core.resumable
    const { session, received } = open.attach
    const rec = sessions.get(session)
    let ended
    if (rec) {
      const old = rec.st
      if (old.identity.subject !== open.identity.subject || old.identity.tenant !== open.identity.tenant) {
        return this.refuseOpen(id, 'admission', 403, 'session belongs to another caller')
      }
      if (sessions.resumable(rec, received)) {
        sessions.resume(rec, this, id, received)
        // Off the stream it was on, if any: that one is told (unless handing over).
        if (old.session && !(old.session === this && old.stream === id)) core.leave(old)
        core.unplace(old)
        old.session = this
        old.stream = id
        core.setIdentity(old, open.identity, idBytes)
        this.streams.set(id, old)
        return undefined
      }
      // Too late: what it missed is gone. It ends, and begins anew under its id.
      core.leave(old)
      sessions.counters.expired++
      ended = core.end(old, SESSION_EXPIRED.code, SESSION_EXPIRED.reason, false)
    }
    return after(ended, () => {
      if (this.closed) return undefined
      const st = core.newStream(this, id, open.path, open.identity, idBytes)
      sessions.begin(st, session)
      this.enqueue(FrameKind.Binary, id, encodeEnvelope({ type: 'Welcome', resumed: false, ack: 0 }))
      this.streams.set(id, st)
      return after(core.openHandler(st), (ok) => this.opened(st, ok))
    })
  }

  data(f) {
    const core = this.core
    const st = this.streams.get(f.stream)
    if (!st) return this.error(f.stream, 404, `unknown stream ${f.stream}`)
    // The snippet ends a stream on any Error (closing its client): so does this side.
    if (isExpired(st.identity, core.nowSecs())) {
      core.counters.refused.expired++
      return this.refuse(st, 401, "the caller's token has expired")
    }
    if (!st.resume) return core.call('onMessage', [st.client, messageData(f)])
    // A session's stream: one envelope per frame.
    if (f.kind !== FrameKind.Binary) return this.refuse(st, 400, "a session's stream carries binary envelopes only")
    let env
    try {
      env = decodeEnvelope(f.payload)
    } catch (e) {
      return this.refuse(st, 400, `bad session envelope: ${e.message}`)
    }
    const rec = st.resume
    switch (env.type) {
      case 'Text':
      case 'Binary': {
        core.resumable.acknowledge(rec, env.ack)
        if (!core.resumable.take(rec, env.seq)) return undefined // seen already, or after a gap
        const kind = env.type === 'Text' ? FrameKind.Text : FrameKind.Binary
        return core.call('onMessage', [st.client, messageData({ kind, payload: env.payload })])
      }
      case 'Ack':
        core.resumable.acknowledge(rec, env.ack)
        return undefined
      default:
        return this.refuse(st, 400, 'a client sends data and acks only')
    }
  }

  /** An Open refused before it became a client: Error `code`, counted under `reason` (view.js). */
  refuseOpen(stream, reason, code, message) {
    this.core.counters.refused[reason]++
    return this.error(stream, code, message)
  }

  /** After onOpen: counted as opened, or (it threw) refused with Error 500. */
  opened(st, ok) {
    if (ok === false && st.open) {
      this.core.counters.refused.app++
      this.error(st.stream, 500, 'the application failed to open the stream')
      this.core.forget(st)
      return
    }
    this.core.counters.opened++
  }

  /** Error `code` on the client's stream: it ends (with its session), as the snippet ends it. */
  refuse(st, code, message) {
    this.error(st.stream, code, message)
    const close = errorClose(code)
    return this.core.end(st, close.code, close.reason, false)
  }

  closeFrame(id, payload) {
    const st = this.streams.get(id)
    if (!st) return undefined
    let close
    try {
      close = decodeClose(payload)
    } catch {
      close = { code: NO_STATUS, reason: '' }
    }
    // A session outlives a connection that dropped; only a client that left on purpose ends it.
    if (st.resume && !endsSession(close.code)) {
      this.core.unplace(st)
      this.core.resumable.detach(st.resume, this.core.now())
      return undefined
    }
    return this.core.end(st, close.code, close.reason, true)
  }

  request(id, payload) {
    let req
    try {
      req = decodeRequest(payload)
    } catch (e) {
      return this.error(id, 400, `bad request frame: ${e.message}`)
    }
    return after(this.core.answer(req, this.tenant), (res) => {
      this.enqueue(FrameKind.Response, id, encodeResponse(res))
    })
  }

  // --- sending -------------------------------------------------------------------------

  error(stream, code, message) {
    this.core.counters.errors++
    this.enqueue(FrameKind.Error, stream, encodeError({ code, message }))
  }

  /** Queues a frame for the socket's next batch. A payload too large for any message becomes Error 500 on its stream. */
  enqueue(kind, stream, payload) {
    const core = this.core
    if (this.closed) return false
    if (payload.byteLength > MAX_FRAME_PAYLOAD) {
      this.error(stream, 500, `the reply of ${payload.byteLength} bytes is larger than a message may carry`)
      const st = this.streams.get(stream)
      if (st) {
        core.forget(st)
        const { code, reason } = errorClose(500)
        core.defer(() => core.closed(st, code, reason, false))
      }
      return false
    }
    this.outbox.push({ kind, stream, payload })
    core.dirty.add(this)
    if (!this.busy) core.scheduleFlush()
    return true
  }

  /** Sends the queued frames in as few messages as the batch bound allows, in order. */
  flush() {
    const frames = this.outbox
    this.outbox = []
    if (this.closed || !frames.length) return
    const ws = this.ws
    if (!ws) return
    let batch = []
    let size = 1
    const send = () => {
      this.messagesOut++
      this.core.counters.messagesOut++
      this.core.counters.framesOut += batch.length
      try {
        ws.send(encodeMessage(batch).buffer)
      } catch (e) {
        this.core.report(e, 'send')
      }
    }
    for (const f of frames) {
      const n = HEADER_LEN + f.payload.byteLength
      if (batch.length && size + n > this.core.maxBatchBytes) {
        send()
        batch = []
        size = 1
      }
      batch.push(f)
      size += n
    }
    if (batch.length) send()
  }
}
