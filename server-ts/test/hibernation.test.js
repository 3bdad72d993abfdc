// What survives the object's hibernation (a new server on the same ctx and storage, new
// socket objects), and the snippet's hand-over of streams from one mux socket to another.

import { test } from 'node:test'
import assert from 'node:assert/strict'

import { decodeIdentity } from '../src/protocol.js'
import {
  barrier, closeFrame, connect, deliver, fakeCtx, msg, open, settle, setup, takeFrames, takeMessages, textFrame, who,
} from './fakes.js'

test('after hibernation the stream table is restored lazily: a message on an existing stream reaches onMessage with its identity', async () => {
  const ctx = fakeCtx()
  const before = setup({ ctx })
  const a = connect(before.server, ctx)
  const b = connect(before.server, ctx)
  const socketA = a.deserializeAttachment().socket
  await deliver(before.server, a, msg(open(1, '/rpc', who('read publish', { subject: 'bob' })), open(2, '/echo')))
  await deliver(before.server, b, msg(open(1, '/echo', who('admin', { subject: 'carol', tenant: '*' }))))
  const [bob] = before.server.clients().filter((c) => c.identity.subject === 'bob')
  bob.serializeAttachment({ nick: 'bobby', joined: new Date(0) })
  const bobId = bob.id
  // What is stored is what the reference backend stores (plus the attachment's own key).
  assert.deepEqual(ctx.storage.kv.keys(`mux/${socketA}`), [
    `mux/${socketA}`, `mux/${socketA}/0000000001`, `mux/${socketA}/0000000001/meta`, `mux/${socketA}/0000000002`,
  ])

  // The object hibernates: the instance is gone, the runtime hands over new socket objects.
  ctx.hibernate()
  const after = setup({ ctx })
  const a2 = ctx.current(a)
  assert.notEqual(a2, a)
  await deliver(after.server, a2, msg(textFrame(1, 'hello again')))
  assert.deepEqual(after.events, [['message', 1, 'hello again']])
  const [client] = after.server.clients().filter((c) => c.socket === socketA && c.stream === 1)
  assert.deepEqual(client.identity, { subject: 'bob', tenant: 't', scopes: 'read publish', expiresAt: 2_000_000_000 })
  assert.equal(client.service, '/rpc')
  assert.equal(client.id, bobId, 'the same client id')
  assert.deepEqual(client.deserializeAttachment(), { nick: 'bobby', joined: new Date(0) }, 'its attachment survives')
  assert.deepEqual(takeFrames(a2).map((f) => [f.stream, f.text]), [[1, 'hello again']])

  // A fresh instance lists every client of every socket without any message arriving.
  ctx.hibernate()
  const third = setup({ ctx })
  const all = third.server.clients().map((c) => [c.socket === socketA ? 'A' : 'B', c.stream, c.service, c.identity.subject])
  assert.deepEqual(all.sort(), [['A', 1, '/rpc', 'bob'], ['A', 2, '/echo', 'alice'], ['B', 1, '/echo', 'carol']])
  assert.equal(third.server.broadcast('wake up'), 3)
  await settle()
  assert.equal(takeMessages(ctx.current(a)).length, 1)
  assert.equal(takeMessages(ctx.current(b)).length, 1)

  // A close after the wake forgets the stored entry.
  await deliver(third.server, ctx.current(a), msg(closeFrame(1)))
  assert.deepEqual(ctx.storage.kv.keys(`mux/${socketA}/`), [`mux/${socketA}/0000000002`])
  assert.deepEqual(third.events.at(-1), ['close', 1, 1000, '', true])
})

test('after hibernation an expired caller is refused and an unknown stream is still unknown', async () => {
  const ctx = fakeCtx()
  const s1 = setup({ ctx })
  const ws = connect(s1.server, ctx)
  await deliver(s1.server, ws, msg(open(4, '/echo', who('read', { expiresAt: 1_000_000_001n }))))
  ctx.hibernate()
  const s2 = setup({ ctx })
  s2.clock.ms = 1_000_000_001_000
  await deliver(s2.server, ctx.current(ws), msg(textFrame(4, 'x'), textFrame(5, 'y')))
  assert.deepEqual(takeFrames(ctx.current(ws)).map((f) => [f.stream, f.error.code]), [[4, 401], [5, 404]])
})

test('the tenant is restored from the attachment, else from storage', async () => {
  const ctx = fakeCtx()
  const s1 = setup({ ctx })
  const ws = connect(s1.server, ctx)
  const socket = ws.deserializeAttachment().socket
  ctx.storage.kv.delete(`mux/${socket}`)
  ctx.hibernate()
  const s2 = setup({ ctx })
  await deliver(s2.server, ctx.current(ws), msg(open(1, '/rpc', who('read', { tenant: 'other' })), open(2)))
  assert.deepEqual(takeFrames(ctx.current(ws)).map((f) => [f.stream, f.error.code]), [[1, 403]], 'tenant t, from the attachment')

  const ws2 = connect(s2.server, ctx)
  const att = ws2.deserializeAttachment()
  ws2.serializeAttachment({ ...att, tenant: undefined })
  ctx.hibernate()
  const s3 = setup({ ctx })
  await deliver(s3.server, ctx.current(ws2), msg(open(1, '/rpc', who('read', { tenant: 'other' }))))
  assert.equal(takeFrames(ctx.current(ws2))[0].error.code, 403, 'tenant t, from storage')
})

test('entries are stored in the reference format: service byte + identity', async () => {
  const { ctx, server } = setup({ options: { services: null } })
  const ws = connect(server, ctx)
  const socket = ws.deserializeAttachment().socket
  await deliver(server, ws, msg(open(1, '/rpc'), open(2, '/echo'), open(3, '/chat')))
  const kv = ctx.storage.kv
  const e1 = kv.get(`mux/${socket}/0000000001`)
  const e2 = kv.get(`mux/${socket}/0000000002`)
  assert.deepEqual([e1[0], e2[0]], [1, 2])
  assert.deepEqual(decodeIdentity(e1.subarray(1)), who())
  ctx.hibernate()
  const s2 = setup({ ctx, options: { services: null } })
  assert.deepEqual(s2.server.clients().map((c) => c.service), ['/rpc', '/echo', '/chat'], 'other paths round-trip too')
})

test('without ctx.storage.kv the server works from memory (and says so)', async () => {
  const warn = console.warn
  const warnings = []
  console.warn = (...a) => warnings.push(a.join(' '))
  try {
    const ctx = fakeCtx({ kv: false })
    const { server, events } = setup({ ctx })
    const ws = connect(server, ctx)
    await deliver(server, ws, msg(open(1), textFrame(1, 'x')))
    assert.deepEqual(events.map((e) => e[0]), ['open', 'message'])
    assert.equal(takeFrames(ws)[0].text, 'x')
    assert.match(warnings[0], /storage\.kv is missing/)
  } finally {
    console.warn = warn
  }
})

test('hand-over: streams re-opened on the new socket after a barrier keep their client; the app sees no close and no open', async () => {
  const { ctx, server, events } = setup()
  const oldWs = connect(server, ctx)
  await deliver(server, oldWs, msg(open(1), open(2, '/echo', who('read', { subject: 'bob' }))))
  const [c1, c2] = server.clients()
  c1.serializeAttachment({ room: 'lobby' })
  const ids = [c1.id, c2.id]
  events.length = 0
  // The snippet's successor socket is up; the old one sends only the barrier Ping.
  const newWs = connect(server, ctx)
  await deliver(server, oldWs, msg(barrier()))
  assert.deepEqual(takeFrames(oldWs).map((f) => f.kind), ['Pong'])
  // After the Pong: the same ids, paths and identities re-open on the new socket, with held frames.
  await deliver(server, newWs, msg(open(1), open(2, '/echo', who('read', { subject: 'bob' })), textFrame(1, 'held')))
  assert.equal(server.webSocketClose(oldWs, 1000, 'handed over', true), true)
  await settle()
  assert.deepEqual(events, [['message', 1, 'held']], 'no close, no open')
  const now = server.clients()
  assert.equal(now.length, 2)
  assert.equal(now[0], c1, 'the very same client object')
  assert.deepEqual(now.map((c) => c.id), ids)
  assert.equal(c1.socket, newWs.deserializeAttachment().socket)
  assert.deepEqual(c1.deserializeAttachment(), { room: 'lobby' })
  c1.send('to the new socket')
  await settle()
  assert.deepEqual(takeFrames(newWs).map((f) => f.text), ['held', 'to the new socket'])
  const oldSocket = oldWs.deserializeAttachment().socket
  assert.deepEqual(ctx.storage.kv.keys(`mux/${oldSocket}`), [])
  // The moved clients keep their id and attachment through hibernation too.
  ctx.hibernate()
  const later = setup({ ctx })
  const restored = later.server.clients()
  assert.deepEqual(restored.map((c) => c.id), ids)
  assert.deepEqual(restored[0].deserializeAttachment(), { room: 'lobby' })
})

test('hand-over across a wake: the barrier and the re-opens are handled by different instances', async () => {
  const ctx = fakeCtx()
  const first = setup({ ctx })
  const oldWs = connect(first.server, ctx)
  const newWs = connect(first.server, ctx)
  await deliver(first.server, oldWs, msg(open(1), open(2)))
  const [c1] = first.server.clients()
  c1.serializeAttachment({ room: 'lobby' })
  const id = c1.id
  await deliver(first.server, oldWs, msg(barrier()))
  assert.equal(typeof oldWs.deserializeAttachment().barrierAt, 'number', 'the barrier is in the attachment')
  ctx.hibernate()
  const second = setup({ ctx })
  await deliver(second.server, ctx.current(newWs), msg(open(1), open(2)))
  ctx.hibernate()
  const third = setup({ ctx })
  third.server.webSocketClose(ctx.current(oldWs), 1000, 'handed over', true)
  await settle()
  assert.deepEqual([...second.events, ...third.events], [], 'no close, no open in any instance')
  const moved = third.server.clients()
  assert.equal(moved.length, 2)
  assert.equal(moved[0].id, id)
  assert.equal(moved[0].socket, newWs.deserializeAttachment().socket)
  assert.deepEqual(moved[0].deserializeAttachment(), { room: 'lobby' })
})

test('hand-over when the old socket closes first: its streams wait a grace period for the re-open, then close', async () => {
  const { ctx, server, events } = setup({ options: { handoverGraceMs: 30 } })
  const oldWs = connect(server, ctx)
  await deliver(server, oldWs, msg(open(1), open(2)))
  const [c1] = server.clients()
  events.length = 0
  const newWs = connect(server, ctx)
  await deliver(server, oldWs, msg(barrier()))
  server.webSocketClose(oldWs, 1000, 'handed over', true)
  await settle()
  assert.deepEqual(events, [], 'parked, not closed')
  await deliver(server, newWs, msg(open(1)))
  assert.equal(server.clients()[0], c1)
  await new Promise((r) => setTimeout(r, 60))
  assert.deepEqual(events, [['close', 2, 1006, 'upstream lost', false]], 'the stream nobody re-opened closes after the grace period')
})

test('no barrier, no hand-over: equal ids from another socket are other clients', async () => {
  const { ctx, server, events } = setup()
  const a = connect(server, ctx)
  const b = connect(server, ctx)
  await deliver(server, a, msg(open(1)))
  await deliver(server, b, msg(open(1)))
  assert.deepEqual(events, [['open', 1, '/rpc', 'alice'], ['open', 1, '/rpc', 'alice']])
  const [x, y] = server.clients()
  assert.notEqual(x.id, y.id)
  // A heartbeat Ping (purpose 2) is no barrier either.
  await deliver(server, a, msg([8, 0, new Uint8Array([2, 0, 0, 0, 0, 0, 0, 0, 1])]))
  const c = connect(server, ctx)
  await deliver(server, c, msg(open(1)))
  assert.equal(server.clients().length, 3)
  // Nor does a different identity take over a stream after a barrier.
  await deliver(server, a, msg(barrier()))
  const d = connect(server, ctx)
  await deliver(server, d, msg(open(1, '/rpc', who('read write', { subject: 'mallory' }))))
  assert.equal(server.clients().length, 4)
})
