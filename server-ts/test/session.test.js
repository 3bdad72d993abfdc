// The session vectors of protocol/vectors/session.json (written by the Rust object core,
// do-server/src/vectors.rs): every scenario replayed against this package with the same
// small application, comparing each socket's messages and close, what the application is
// told, in order, and when the server next needs waking. `hibernate` builds a new server
// from the same storage over the same connections; `restart` does too, after every
// connection died without a close event.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'

import { SnippetProxyServer } from '../src/index.js'
import { CORE } from '../src/core.js'
import { decodeEnvelope, decodeMessage, decodeOpen, fromHex, toHex } from '../src/protocol.js'
import { TOKEN, connect, describe, fakeCtx, settle } from './fakes.js'

const vectors = JSON.parse(readFileSync(new URL('../../protocol/vectors/session.json', import.meta.url), 'utf8'))

/** The vectors' application (do-server/src/vectors.rs describes it), recording what it is told. */
function vectorApp(events, server) {
  const rpc = (c) => c.service === '/rpc'
  return {
    onOpen(client) {
      events.push({ open: { client: client.id, service: client.service, subject: client.identity.subject } })
    },
    onMessage(client, data) {
      if (client.service !== '/rpc' || typeof data !== 'string') return client.send(data)
      const code = data.startsWith('close:') ? Number(data.slice(6)) : NaN
      if (data.startsWith('all:')) server().broadcast(`${client.identity.subject}: ${data.slice(4)}`, rpc)
      else if (Number.isInteger(code)) client.close(code, 'bye')
      else if (data !== 'quiet') client.send(data)
      return undefined
    },
    onClose(client, code, reason) {
      events.push({ close: { client: client.id, code, reason } })
      server().broadcast(`${client.identity.subject} left`, rpc)
    },
    onRequest(req) {
      return { status: 200, contentType: 'text/plain', body: `hello ${req.identity.subject}` }
    },
    onError(error) {
      throw error
    },
  }
}

/** What a socket was sent and whether it was closed, since the last call. */
function takeOut(ws) {
  const out = ws.wire.sent.splice(0).map((m) => ({ send: toHex(m) }))
  if (ws.wire.closed && !ws.wire.reported) {
    ws.wire.reported = true
    out.push({ close: ws.wire.closed })
  }
  return out
}

/** A frame as vectors.rs `describe` shows it, near enough to read a difference. */
function show(f) {
  const d = describe(f)
  let what = d.text ?? toHex(d.payload)
  if (d.kind === 'Binary') {
    try {
      const e = decodeEnvelope(d.payload)
      if (e.type === 'Text') what = `Text#${e.seq} ack ${e.ack} ${new TextDecoder().decode(e.payload)}`
      else if (e.type === 'Binary') what = `Binary#${e.seq} ack ${e.ack} ${toHex(e.payload)}`
      else if (e.type === 'Ack') what = `Ack ${e.ack}`
      else if (e.type === 'Welcome') what = `Welcome resumed=${e.resumed} ack ${e.ack}`
    } catch {
      // raw bytes
    }
  }
  if (d.kind === 'Close') what = `${d.close.code} ${d.close.reason}`
  if (d.kind === 'Error') what = `${d.error.code} ${d.error.message}`
  return `${d.kind} ${d.stream} ${what}`
}
const frames = (hex) => [...decodeMessage(fromHex(hex))].map(show)

test('the vectors cover what a session does', () => {
  const steps = vectors.scenarios.flatMap((s) => s.steps)
  assert.ok(steps.some((s) => s.hibernate) && steps.some((s) => s.restart))
  const framesOf = (hex) => {
    const out = []
    try {
      for (const f of decodeMessage(fromHex(hex))) out.push(f)
    } catch {
      // a malformed message's vector: the frames before the error
    }
    return out
  }
  const opens = steps.flatMap((s) => (s.message ? framesOf(s.message.hex) : []))
    .filter((f) => f.kind === 1).map((f) => { try { return decodeOpen(f.payload) } catch { return null } })
  assert.ok(opens.some((o) => o?.attach), 'Opens with an Attach')
  assert.equal(vectors.resume_window_ms, 120_000)
})

for (const scenario of vectors.scenarios) {
  test(`session vector: ${scenario.name}`, async () => {
    const ctx = fakeCtx()
    const clock = { ms: 0 }
    const timers = []
    const events = []
    let nextSocket = null
    let server = null
    const build = () => new SnippetProxyServer(ctx, vectorApp(events, () => server), {
      token: TOKEN,
      now: () => clock.ms,
      socketId: () => nextSocket,
      setTimeout: (fn, ms) => timers.push({ at: clock.ms + ms, fn }),
    })
    server = build()
    const sockets = new Map()
    for (const [i, step] of scenario.steps.entries()) {
      clock.ms = step.at
      for (const t of timers.filter((t) => t.at <= clock.ms)) {
        timers.splice(timers.indexOf(t), 1)
        await t.fn()
      }
      if (step.accept) {
        nextSocket = step.accept.socket
        sockets.set(step.accept.socket, connect(server, ctx, step.accept.tenant))
      } else if (step.message) {
        const bytes = fromHex(step.message.hex)
        await server.webSocketMessage(sockets.get(step.message.socket), bytes.buffer)
      } else if (step.closed) {
        await server.webSocketClose(sockets.get(step.closed.socket), step.closed.code, step.closed.reason, true)
      } else if (step.error) {
        await server.webSocketError(sockets.get(step.error.socket), new Error('socket error'))
      } else if (step.vanish) {
        ctx.vanish(sockets.get(step.vanish.socket))
      } else if (step.hibernate || step.restart) {
        // The instance is gone, its timers with it; the runtime hands the new one new
        // socket objects (or, after a restart, none: every socket died unheard).
        timers.length = 0
        ctx.hibernate()
        for (const [socket, ws] of sockets) {
          if (step.restart) ctx.vanish(ctx.current(ws))
          sockets.set(socket, ctx.current(ws))
        }
        server = build()
        // What the runtime's next event would do first: the new instance reads storage.
        await server[CORE].wake()
      }
      await settle()
      const where = `${scenario.name}, step ${i} (${Object.keys(step)[0]})`
      for (const [socket, ws] of sockets) {
        const got = takeOut(ws)
        const want = step.out.filter((o) => (o.send ?? o.close).socket === socket)
          .map((o) => (o.send ? { send: o.send.hex } : { close: { code: o.close.code, reason: o.close.reason } }))
        const show = (list) => list.map((o) => (o.send ? frames(o.send) : o))
        assert.deepEqual(show(got), show(want), `${where}: what socket ${socket} was sent`)
        assert.deepEqual(got, want, `${where}: the bytes socket ${socket} was sent`)
      }
      assert.deepEqual(events.splice(0), step.events, `${where}: what the app was told`)
      assert.equal(server[CORE].nextTimeout(), step.next_timeout, `${where}: when the server next needs waking`)
      assert.deepEqual(server.view(), step.view, `${where}: the operator's view`)
    }
    assert.equal(server.metrics(), scenario.metrics, `${scenario.name}: the view as Prometheus text`)
  })
}
