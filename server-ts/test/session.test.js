// The session vectors of protocol/vectors/session.json (written by the Rust object core,
// do-server/src/vectors.rs): every scenario replayed against this package with the same
// small application, comparing each socket's messages and close, and what the
// application is told, in order.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'

import { SnippetProxyServer } from '../src/index.js'
import { fromHex, toHex } from '../src/protocol.js'
import { TOKEN, connect, describe, fakeCtx, settle } from './fakes.js'
import { decodeMessage } from '../src/protocol.js'

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
      else client.send(data)
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

const frames = (hex) => [...decodeMessage(fromHex(hex))].map(describe).map((f) => `${f.kind} ${f.stream} ${f.text ?? toHex(f.payload)}`)

for (const scenario of vectors.scenarios) {
  test(`session vector: ${scenario.name}`, async () => {
    const ctx = fakeCtx()
    const clock = { ms: 0 }
    const timers = []
    const events = []
    let nextSocket = null
    let server = null
    server = new SnippetProxyServer(ctx, vectorApp(events, () => server), {
      token: TOKEN,
      now: () => clock.ms,
      socketId: () => nextSocket,
      setTimeout: (fn, ms) => timers.push({ at: clock.ms + ms, fn }),
    })
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
    }
  })
}
