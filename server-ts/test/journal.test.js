// What resumable sessions cost in storage, and that what they store is enough: a summary
// row per session (written when it begins, attaches or detaches) and one journal record
// per input (`sess/log/{n:020}`), as do-server keeps them (its tests
// a_broadcast_is_one_row_and_an_echo_two and
// a_detached_session_keeps_a_bounded_replay_and_knows_when_it_cannot_resume), and what a
// woken object makes of them.

import { test } from 'node:test'
import assert from 'node:assert/strict'

import { MAX_REPLAY_BYTES, MAX_REPLAY_MESSAGES, encodeIdentity } from '../src/protocol.js'
import { encodeSummary } from '../src/store.js'
import { MAX_RECORD_BYTES } from '../src/resumable.js'
import {
  NOW_MS, SESSION_ID, attach, bytes, closeFrame, connect, data, deliver, fakeCtx, msg, settle, setup, takeFrames, who,
} from './fakes.js'

const envs = (ws) => takeFrames(ws).map((f) => f.env ?? `${f.kind} ${f.stream}`)
const records = (ctx) => ctx.storage.kv.keys('sess/log/')
const recordKey = (n) => `sess/log/${String(n).padStart(20, '0')}`
const sessionId = (i) => i.toString(16).padStart(2, '0').repeat(16)
/** The same storage in a new object, as if the one that wrote it were gone. */
function copyOf(ctx) {
  const copy = fakeCtx()
  for (const [k, v] of ctx.storage.kv.map) copy.storage.kv.map.set(k, structuredClone(v))
  return copy
}

test('a broadcast to 50 session clients writes one storage row', async () => {
  const { ctx, server } = setup()
  const a = connect(server, ctx)
  const opens = []
  for (let i = 1; i <= 50; i++) opens.push(attach(i, 0, { session: sessionId(i) }))
  await deliver(server, a, msg(...opens))
  assert.equal(server.clients().length, 50)
  takeFrames(a)
  const before = ctx.storage.kv.writes
  const rowsBefore = server.stats().sessions.rowsWritten
  assert.equal(server.broadcast('to everyone'), 50)
  await settle()
  assert.equal(ctx.storage.kv.writes - before, 1, 'one record')
  assert.equal(server.stats().sessions.rowsWritten - rowsBefore, 1)
  assert.equal(takeFrames(a).length, 50)
  const [key] = records(ctx)
  const record = ctx.storage.kv.get(key)
  assert.equal(record.entries.length, 1, 'the payload once')
  assert.equal(record.entries[0].to.length, 50)
  assert.equal(record.positions.length, 50)
})

test('100 echoes in a session write 199 rows: each its record, and the one before it deleted', async () => {
  const { ctx, server } = setup()
  const a = connect(server, ctx)
  await deliver(server, a, msg(attach(5)))
  takeFrames(a)
  const before = ctx.storage.kv.writes
  for (let seq = 1; seq <= 100; seq++) await deliver(server, a, msg(data(5, seq, seq - 1, 'echo me')))
  assert.equal(ctx.storage.kv.writes - before, 199)
  assert.equal(ctx.storage.kv.puts + ctx.storage.kv.deletes, ctx.storage.kv.writes)
  assert.deepEqual(records(ctx), [recordKey(99)], 'only the last record is left: it holds the last echo and positions')
  assert.equal(takeFrames(a).filter((f) => f.env?.startsWith('Text#')).length, 100)
})

test('killed mid-stream: the records survive, and a resume replays from them', async () => {
  const ctx = fakeCtx()
  const first = setup({ ctx })
  const a = connect(first.server, ctx)
  // The client takes part, acknowledging only the first reply.
  await deliver(first.server, a, msg(attach(5), data(5, 1, 0, 'one')))
  await deliver(first.server, a, msg(data(5, 2, 1, 'two'), data(5, 3, 1, 'three')))
  first.server.broadcast('news')
  await settle()
  assert.deepEqual(envs(a), ['Welcome resumed=false ack 0', 'Text#1 ack 1 one', 'Text#2 ack 2 two', 'Text#3 ack 3 three', 'Text#4 ack 3 news'])
  const stored = records(ctx)
  assert.ok(stored.length >= 2, `records: ${stored}`)

  // Hibernation: the socket is still there, the client goes on where it was.
  ctx.hibernate()
  const second = setup({ ctx })
  const [c2] = second.server.clients()
  assert.equal(c2.attached, true)
  await deliver(second.server, ctx.current(a), msg(data(5, 4, 2, 'four'), data(5, 3, 2, 'three again')))
  assert.deepEqual(envs(ctx.current(a)), ['Text#5 ack 4 four'], 'numbering goes on; the re-sent message is a duplicate')
  assert.deepEqual(second.events, [['message', 5, 'four']])

  // A restart: every socket died unheard; nothing was acknowledged past 2.
  ctx.hibernate()
  ctx.vanish(ctx.current(a))
  assert.ok(records(ctx).length >= 1)
  const third = setup({ ctx })
  const [c3] = third.server.clients()
  assert.equal(c3.attached, false)
  const b = connect(third.server, ctx)
  await deliver(third.server, b, msg(attach(3, 2), data(3, 5, 2, 'five')))
  assert.deepEqual(envs(b), [
    'Welcome resumed=true ack 4', 'Text#3 ack 4 three', 'Text#4 ack 4 news', 'Text#5 ack 4 four', 'Text#6 ack 5 five',
  ])
  assert.deepEqual(third.events, [['message', 3, 'five']])
  assert.equal(third.server.stats().sessions.replayed, 3)
  await deliver(third.server, b, msg(closeFrame(3, 1000)))
  assert.deepEqual(ctx.storage.kv.keys('sess/'), [], 'a session that ends leaves nothing behind')
})

test('a detached session keeps a bounded replay and, woken from storage, knows when it cannot resume', async () => {
  const { ctx, server } = setup()
  const a = connect(server, ctx)
  await deliver(server, a, msg(attach(5)))
  server.webSocketClose(a, 1006, '', false)
  await settle()
  const b = connect(server, ctx)
  const deletes = ctx.storage.kv.deletes
  const sent = MAX_REPLAY_MESSAGES + 5
  for (let i = 0; i < sent; i++) {
    server.broadcast(`n${i}`)
    await settle()
  }
  // One record per broadcast (the session is detached: nothing is acknowledged).
  assert.deepEqual([records(ctx).length, ctx.storage.kv.deletes - deletes], [MAX_REPLAY_MESSAGES, 5], 'the oldest are dropped, records and all')

  // Woken from storage, a client that missed everything cannot go on: message 1 is gone.
  const woken = setup({ ctx: copyOf(ctx) })
  const w = connect(woken.server, woken.ctx)
  await deliver(woken.server, w, msg(attach(7, 0)))
  assert.deepEqual(envs(w), ['Welcome resumed=false ack 0'])
  // One that has the first five needs only kept ones, read back from the records.
  const again = setup({ ctx: copyOf(ctx) })
  const x = connect(again.server, again.ctx)
  await deliver(again.server, x, msg(attach(7, 5)))
  const replay = envs(x)
  assert.equal(replay.length, 1 + MAX_REPLAY_MESSAGES, 'the Welcome and every kept message')
  assert.equal(replay[0], 'Welcome resumed=true ack 0')
  assert.equal(replay[1], 'Text#6 ack 0 n5')
  assert.equal(replay.at(-1), `Text#${sent} ack 0 n${sent - 1}`)
  // And the object that wrote them, from memory.
  await deliver(server, b, msg(attach(7, 5)))
  assert.equal(envs(b).length, 1 + MAX_REPLAY_MESSAGES)
  assert.equal(server.stats().sessions.replayed, MAX_REPLAY_MESSAGES)
})

test('a record past 1 MiB starts another within the input; a message larger than the replay bound is never recorded', async () => {
  const { ctx, server } = setup()
  const a = connect(server, ctx)
  await deliver(server, a, msg(attach(1, 0, { session: sessionId(1) }), attach(2, 0, { session: sessionId(2) }), attach(3, 0, { session: sessionId(3) })))
  await deliver(server, a, msg(closeFrame(1, 1001), closeFrame(2, 1001), closeFrame(3, 1001)))
  const big = 400 * 1024
  const small = 100 * 1024
  assert.ok(2 * big <= MAX_RECORD_BYTES && 3 * big > MAX_RECORD_BYTES && small + big <= MAX_REPLAY_BYTES)
  // A broadcast's payload is stored once: one record.
  let before = ctx.storage.kv.writes
  server.broadcast(new Uint8Array(small).fill(1))
  await settle()
  assert.equal(ctx.storage.kv.writes - before, 1)
  // Three different ones do not fit in one.
  before = ctx.storage.kv.writes
  server.clients().forEach((c, i) => c.send(new Uint8Array(big).fill(10 + i)))
  await settle()
  assert.equal(ctx.storage.kv.writes - before, 2, 'two records in one input')
  const woken = setup({ ctx: copyOf(ctx) })
  const w = connect(woken.server, woken.ctx)
  await deliver(woken.server, w, msg(attach(9, 0, { session: sessionId(3) })))
  const frames = takeFrames(w).map((f) => f.env)
  assert.deepEqual(frames.map((e) => e.split(' ').slice(0, 3).join(' ')), ['Welcome resumed=true ack', 'Binary#1 ack 0', 'Binary#2 ack 0'])
  assert.ok(frames[2].endsWith(',12'), 'its own payload')

  // Larger than the replay bound: sent, but neither kept nor stored; only a client that got it can go on.
  const t = setup()
  const c = connect(t.server, t.ctx)
  await deliver(t.server, c, msg(attach(5), data(5, 1, 0, 'small')))
  const [client] = t.server.clients()
  before = t.ctx.storage.kv.writes
  client.send(new Uint8Array(MAX_REPLAY_BYTES + 1))
  await settle()
  assert.deepEqual(takeFrames(c).map((f) => f.env?.split(' ')[0]), ['Welcome', 'Text#1', 'Binary#2'])
  const stored = t.ctx.storage.kv.keys('sess/log/').flatMap((k) => t.ctx.storage.kv.get(k).entries)
  assert.ok(stored.every((e) => e.payload.byteLength <= MAX_REPLAY_BYTES), 'never recorded')
  assert.equal(stored.length, 0, 'what was kept before it is of no use any more')
  const u = setup({ ctx: copyOf(t.ctx) })
  const v = connect(u.server, u.ctx)
  await deliver(u.server, v, msg(attach(6, 1)))
  assert.deepEqual(envs(v), ['Welcome resumed=false ack 0'], 'a client that missed it begins anew')
  const y = setup({ ctx: copyOf(t.ctx) })
  const z = connect(y.server, y.ctx)
  await deliver(y.server, z, msg(attach(6, 2)))
  assert.deepEqual(envs(z), ['Welcome resumed=true ack 1'])
})

test('a session that ends and begins anew under its id ignores what older records say of the one before', async () => {
  const { ctx, server } = setup()
  const a = connect(server, ctx)
  const X = SESSION_ID
  const Y = sessionId(0x77)
  await deliver(server, a, msg(attach(5, 0, { session: X }), attach(6, 0, { session: Y })))
  await deliver(server, a, msg(data(5, 1, 0, 'a'), data(5, 2, 0, 'b'), data(5, 3, 0, 'c')))
  await deliver(server, a, msg(closeFrame(5, 1001), closeFrame(6, 1001)))
  // One record holds the broadcast for both, and X's positions (taken 3, sent 4).
  server.broadcast('for both')
  await settle()
  takeFrames(a)
  // X's client claims more than was sent: too late, X ends and begins anew (taken 0); Y
  // still needs the broadcast's record.
  await deliver(server, a, msg(attach(7, 9, { session: X })))
  assert.deepEqual(envs(a), ['Welcome resumed=false ack 0'])
  await deliver(server, a, msg(closeFrame(7, 1001)))
  // A restart: the new X has taken nothing and sent nothing.
  const woken = setup({ ctx: copyOf(ctx) })
  const w = connect(woken.server, woken.ctx)
  await deliver(woken.server, w, msg(attach(8, 0, { session: X }), data(8, 1, 0, 'hello')))
  assert.deepEqual(envs(w), ['Welcome resumed=true ack 0', 'Text#1 ack 1 hello'])
  assert.deepEqual(woken.events, [['message', 8, 'hello']])
  await deliver(woken.server, w, msg(attach(9, 0, { session: Y })))
  assert.deepEqual(envs(w), ['Welcome resumed=true ack 0', 'Text#1 ack 0 for both'])
})

test('woken, a session replays only what runs without a gap up to its last message', async () => {
  const { ctx, server } = setup()
  const a = connect(server, ctx)
  const S1 = SESSION_ID
  const S2 = sessionId(0x22)
  await deliver(server, a, msg(attach(5, 0, { session: S1 }), attach(6, 0, { session: S2 })))
  await deliver(server, a, msg(closeFrame(5, 1001), closeFrame(6, 1001)))
  server.broadcast('one') // S1#1 and S2#1, in a record S2 keeps
  await settle()
  const c1 = server.clients().find((c) => c.session === S1)
  c1.send('two')
  await settle()
  for (let i = 3; i <= MAX_REPLAY_MESSAGES + 3; i++) c1.send(`m${i}`)
  await settle()
  // S1 dropped 1, 2 and 3; the record holding its message 1 is still there for S2.
  const woken = setup({ ctx: copyOf(ctx) })
  const w = connect(woken.server, woken.ctx)
  await deliver(woken.server, w, msg(attach(8, 1, { session: S1 })))
  assert.deepEqual(envs(w), ['Welcome resumed=false ack 0'], 'it would miss 2 and 3')
  const again = setup({ ctx: copyOf(ctx) })
  const x = connect(again.server, again.ctx)
  await deliver(again.server, x, msg(attach(8, 3, { session: S1 })))
  const replay = envs(x)
  assert.equal(replay.length, 1 + MAX_REPLAY_MESSAGES)
  assert.equal(replay[1], 'Text#4 ack 0 m4')
  await deliver(again.server, x, msg(attach(9, 0, { session: S2 })))
  assert.deepEqual(envs(x), ['Welcome resumed=true ack 0', 'Text#1 ack 0 one'])
})

test('sessions stored before the journal (a row per kept message, meta) are moved into it at the wake', async () => {
  const ctx = fakeCtx()
  const kv = ctx.storage.kv
  const kept = (seq, text, s) => {
    const payload = bytes(s)
    const out = new Uint8Array(9 + payload.byteLength)
    out[0] = text ? 1 : 0
    new DataView(out.buffer).setBigUint64(1, BigInt(NOW_MS))
    out.set(payload, 9)
    kv.map.set(`sess/${SESSION_ID}/${String(seq).padStart(20, '0')}`, out)
  }
  kv.map.set(`sess/${SESSION_ID}`, encodeSummary({
    taken: 1, sent: 3, origin: { socket: '0000000000aa', stream: 5 }, at: null, detachedAt: NOW_MS,
    service: '/rpc', idBytes: encodeIdentity(who()),
  }))
  kept(2, true, 'two')
  kept(3, true, 'three')
  kv.map.set(`sess/${SESSION_ID}/meta`, { attachment: { room: 1 } })
  const { server } = setup({ ctx })
  const [c] = server.clients()
  await settle()
  assert.deepEqual(c.deserializeAttachment(), { room: 1 })
  assert.deepEqual(kv.keys('sess/'), [`sess/${SESSION_ID}`, recordKey(0)])
  assert.deepEqual(kv.get(`sess/${SESSION_ID}`).attachment, { room: 1 })
  const w = setup({ ctx: copyOf(ctx) })
  const b = connect(w.server, w.ctx)
  await deliver(w.server, b, msg(attach(7, 1)))
  assert.deepEqual(envs(b), ['Welcome resumed=true ack 1', 'Text#2 ack 1 two', 'Text#3 ack 1 three'])
  assert.deepEqual(w.server.clients()[0].deserializeAttachment(), { room: 1 })
})
