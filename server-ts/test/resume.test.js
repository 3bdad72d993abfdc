// Resumable sessions (PROTOCOL.md §14) as the application sees them: one client across
// reconnects, sends kept for a client that is away, expiry, the bounds of what is kept,
// storage and restore, and the refusals. The session vectors (session.test.js) pin the
// bytes; these pin the API and the storage around them.

import { test } from 'node:test'
import assert from 'node:assert/strict'

import {
  MAX_REPLAY_BYTES, MAX_REPLAY_MESSAGES, RESUME_WINDOW_MS, SESSION_EXPIRED, decodeIdentity, encodeEnvelope, FrameKind,
} from '../src/protocol.js'
import { decodeSummary } from '../src/store.js'
import {
  NOW_MS, SESSION_ID, ackFrame, attach, barrier, binFrame, closeFrame, connect, data, deliver, fakeCtx, msg, open,
  settle, setup, takeFrames, textFrame, who,
} from './fakes.js'

/** A server on a simulated clock whose timers fire when `tick` passes them. */
function timed({ ctx = fakeCtx(), handlers, options } = {}) {
  const timers = []
  let clock = { ms: NOW_MS }
  const t = setup({
    ctx,
    handlers,
    options: { setTimeout: (fn, ms) => timers.push({ at: clock.ms + ms, fn }), ...options },
  })
  clock = t.clock
  t.tick = async (ms) => {
    clock.ms += ms
    for (const due of timers.filter((x) => x.at <= clock.ms)) {
      timers.splice(timers.indexOf(due), 1)
      await due.fn()
    }
    await settle()
  }
  t.timers = timers
  return t
}

const envs = (ws) => takeFrames(ws).map((f) => f.env ?? `${f.kind} ${f.stream} ${f.close ? `${f.close.code} ${f.close.reason}` : f.error ? `${f.error.code} ${f.error.message}` : f.text}`)
const sessionKeys = (ctx) => ctx.storage.kv.keys('sess/')
const recordKey = (n) => `sess/log/${String(n).padStart(20, '0')}`
/** The messages of session `id` that the stored journal records hold, by seq. */
const storedSeqs = (ctx, id = SESSION_ID) => [...ctx.storage.kv.list({ prefix: 'sess/log/' })]
  .flatMap(([, r]) => r.entries.flatMap((e) => e.to.filter(([s]) => s === id).map(([, seq]) => seq)))
  .sort((a, b) => a - b)

test('a session\'s client is one client across reconnects: onOpen once, sends kept while it is away, replayed when it comes back', async () => {
  const { ctx, server, events } = timed()
  const a = connect(server, ctx)
  const socketA = a.deserializeAttachment().socket
  await deliver(server, a, msg(attach(5), data(5, 1, 0, 'hi')))
  assert.deepEqual(envs(a), ['Welcome resumed=false ack 0', 'Text#1 ack 1 hi'])
  const [c] = server.clients()
  assert.equal(c.session, SESSION_ID)
  assert.equal(c.attached, true)
  assert.equal(c.socket, socketA)
  assert.equal(c.id, `${socketA}:5`)
  c.serializeAttachment({ nick: 'al' })
  assert.deepEqual(sessionKeys(ctx), [`sess/${SESSION_ID}`, recordKey(0)])
  assert.deepEqual(storedSeqs(ctx), [1])
  assert.deepEqual(ctx.storage.kv.get(`sess/${SESSION_ID}`).attachment, { nick: 'al' }, 'the attachment is in the summary')
  assert.deepEqual(ctx.storage.kv.keys(`mux/${socketA}/`), [], 'a session\'s client is stored as its session')

  // Its connection drops: the app hears nothing; the client is still there, away.
  server.webSocketClose(a, 1006, '', false)
  await settle()
  assert.deepEqual(events, [['open', 5, '/rpc', 'alice'], ['message', 5, 'hi']])
  assert.equal(c.attached, false)
  assert.equal(c.socket, null)
  assert.equal(c.readyState, 1)
  assert.deepEqual(server.clients(), [c])
  assert.equal(server.stats().detached, 1)
  c.send('while away')
  assert.equal(server.broadcast(new Uint8Array([1, 2])), 1, 'a broadcast reaches it too')
  await settle()
  assert.deepEqual(storedSeqs(ctx), [1, 2, 3])
  assert.deepEqual(sessionKeys(ctx), [`sess/${SESSION_ID}`, recordKey(0), recordKey(1)], 'the send and the broadcast: one record')

  // It comes back on another socket, having received message 1: what it missed, in order, then live traffic.
  const b = connect(server, ctx)
  await deliver(server, b, msg(attach(7, 1), data(7, 2, 1, 'back')))
  assert.deepEqual(envs(b), [
    'Welcome resumed=true ack 1', 'Text#2 ack 1 while away', 'Binary#3 ack 1 1,2', 'Text#4 ack 2 back',
  ])
  assert.equal(server.clients()[0], c, 'the very same client object')
  assert.equal(c.stream, 7)
  assert.equal(c.id, `${socketA}:5`, 'its id is the one it opened with')
  assert.deepEqual(c.deserializeAttachment(), { nick: 'al' })
  // Rows: summary + record 0; summary (attachment); summary (detach); record 1; record 0
  // deleted (ack 1), record 2, summary (attach).
  assert.deepEqual(server.stats().sessions, { resumed: 1, expired: 0, replayed: 2, duplicates: 0, rowsWritten: 8 })
  assert.deepEqual(storedSeqs(ctx), [2, 3, 4], 'its ack 1 deleted message 1')
  assert.deepEqual(sessionKeys(ctx), [`sess/${SESSION_ID}`, recordKey(1), recordKey(2)])
  await deliver(server, b, msg(ackFrame(7, 4)))
  assert.deepEqual(sessionKeys(ctx), [`sess/${SESSION_ID}`])

  // It leaves on purpose: the one close.
  await deliver(server, b, msg(closeFrame(7, 1000, 'bye')))
  assert.deepEqual(events.slice(2), [['message', 7, 'back'], ['close', 7, 1000, 'bye', true]])
  assert.deepEqual(sessionKeys(ctx), [])
  assert.equal(c.readyState, 3)
})

test('which closes end a session: 1000 and 3000-4999 but 4000 end it; 4000 (the library reconnecting), 1001, 1005, 1006 and a lost socket only detach it', async () => {
  for (const [frame, ends] of [
    [closeFrame(5, 1000), true], [closeFrame(5, 4001, 'x'), true], [closeFrame(5, 3000), true], [closeFrame(5, 4999), true],
    [closeFrame(5, 4000, 'reconnecting'), false],
    [closeFrame(5, 1001), false], [[FrameKind.Close, 5, new Uint8Array(0)], false], [closeFrame(5, 1006), false],
    [closeFrame(5, 1008), false], [closeFrame(5, 1012), false],
  ]) {
    const { ctx, server, events } = timed()
    const a = connect(server, ctx)
    await deliver(server, a, msg(attach(5)))
    await deliver(server, a, msg(frame))
    assert.equal(events.some((e) => e[0] === 'close'), ends, `code ${frame[2].length ? (frame[2][0] << 8) | frame[2][1] : 'none'}`)
    assert.equal(server.clients().length, ends ? 0 : 1)
  }
})

test('a session nobody comes back to ends after the resume window (timer), or at the wake of a later instance', async () => {
  const { ctx, server, events, tick, clock } = timed()
  const a = connect(server, ctx)
  await deliver(server, a, msg(attach(5), open(6, '/rpc', who('read', { subject: 'bob' }))))
  await deliver(server, a, msg(closeFrame(5, 1001)))
  assert.equal(server.stats().detached, 1)
  await tick(RESUME_WINDOW_MS - 1)
  assert.equal(events.filter((e) => e[0] === 'close').length, 0)
  await tick(1)
  assert.deepEqual(events.filter((e) => e[0] === 'close'), [['close', 5, SESSION_EXPIRED.code, SESSION_EXPIRED.reason, false]])
  assert.deepEqual(sessionKeys(ctx), [])
  assert.equal(server.stats().sessions.expired, 1)

  // The instance is evicted while a session is away; the next one wakes after the window.
  await deliver(server, a, msg(attach(8)))
  await deliver(server, a, msg(closeFrame(8, 1001)))
  ctx.hibernate()
  const later = setup({ ctx })
  later.clock.ms = clock.ms + RESUME_WINDOW_MS + 5
  assert.deepEqual(later.server.clients().map((c) => c.stream), [6], 'the first event ends it')
  await settle()
  assert.deepEqual(later.events, [['close', 8, 1006, 'session not resumed in time', false]])
  assert.deepEqual(sessionKeys(ctx), [])
})

test('the application may close a client that is away: onClose once, the session ends, a return begins anew', async () => {
  const { ctx, server, events } = timed()
  const a = connect(server, ctx)
  await deliver(server, a, msg(attach(5), data(5, 1, 0, 'hi')))
  takeFrames(a)
  await deliver(server, a, msg(closeFrame(5, 1006)))
  const [c] = server.clients()
  c.close(4001, 'gone')
  c.send('too late')
  await settle()
  assert.deepEqual(events.at(-1), ['close', 5, 4001, 'gone', true])
  assert.deepEqual(sessionKeys(ctx), [])
  assert.deepEqual(takeFrames(a), [], 'nothing is sent for it')
  await deliver(server, a, msg(attach(6, 1)))
  assert.deepEqual(envs(a), ['Welcome resumed=false ack 0'])
  assert.deepEqual(events.at(-1), ['open', 6, '/rpc', 'alice'])
})

test('kept messages are bounded by count, bytes and age; a client that needed a dropped one begins anew', async () => {
  // Count: MAX_REPLAY_MESSAGES + 1 sent while away; the first is dropped.
  let t = timed()
  let a = connect(t.server, t.ctx)
  await deliver(t.server, a, msg(attach(5)))
  await deliver(t.server, a, msg(closeFrame(5, 1001)))
  const [c] = t.server.clients()
  for (let i = 1; i <= MAX_REPLAY_MESSAGES + 1; i++) c.send(`m${i}`)
  await settle()
  const kept = storedSeqs(t.ctx)
  assert.equal(kept.length, MAX_REPLAY_MESSAGES)
  assert.equal(kept[0], 2)
  takeFrames(a)
  await deliver(t.server, a, msg(attach(6, 1)))
  const replay = envs(a)
  assert.equal(replay.length, 1 + MAX_REPLAY_MESSAGES)
  assert.equal(replay[0], 'Welcome resumed=true ack 0')
  assert.equal(replay[1], 'Text#2 ack 0 m2')
  await deliver(t.server, a, msg(closeFrame(6, 1001)))
  c.send('one more')
  await deliver(t.server, a, msg(attach(7, 0)))
  assert.deepEqual(envs(a), ['Welcome resumed=false ack 0'], 'received 0 needs message 1, which is gone')
  assert.deepEqual(t.events.slice(-2), [
    ['close', 6, 1006, 'session not resumed in time', false], ['open', 7, '/rpc', 'alice'],
  ])

  // Bytes: three messages of 200 KiB do not fit in MAX_REPLAY_BYTES.
  t = timed()
  a = connect(t.server, t.ctx)
  await deliver(t.server, a, msg(attach(5)))
  const [d] = t.server.clients()
  const big = new Uint8Array(200 * 1024)
  for (let i = 0; i < 3; i++) d.send(big)
  await settle()
  assert.ok(3 * big.byteLength > MAX_REPLAY_BYTES)
  assert.deepEqual(storedSeqs(t.ctx), [2, 3])

  // Age: a message older than the window is dropped at the next send.
  t = timed()
  a = connect(t.server, t.ctx)
  await deliver(t.server, a, msg(attach(5)))
  const [e] = t.server.clients()
  e.send('old')
  t.clock.ms += RESUME_WINDOW_MS + 1
  e.send('new')
  await settle()
  assert.deepEqual(storedSeqs(t.ctx), [2])
})

test('client messages are taken once, in order; an Ack follows a batch that advanced and carried none', async () => {
  const { ctx, server, events } = timed({ handlers: { onMessage(client, text) { events.push(['message', client.stream, text]) } } })
  const a = connect(server, ctx)
  await deliver(server, a, msg(attach(5), data(5, 1, 0, 'a'), data(5, 2, 0, 'b')))
  assert.deepEqual(envs(a), ['Welcome resumed=false ack 0', 'Ack 2'])
  await deliver(server, a, msg(data(5, 2, 0, 'b'), data(5, 4, 0, 'd')))
  assert.deepEqual(envs(a), [], 'a re-send and a message after a gap are dropped, and acknowledge nothing')
  await deliver(server, a, msg(data(5, 3, 0, 'c')))
  assert.deepEqual(envs(a), ['Ack 3'])
  assert.deepEqual(events.filter((e) => e[0] === 'message').map((e) => e[2]), ['a', 'b', 'c'])
  assert.equal(server.stats().sessions.duplicates, 2)
})

test('a session belongs to its caller; a stream carries envelopes only; anything else ends it like any Error', async () => {
  const { ctx, server, events } = timed()
  const a = connect(server, ctx)
  await deliver(server, a, msg(attach(5)))
  await deliver(server, a, msg(attach(6, 0, { identity: who('read', { subject: 'mallory' }) })))
  await deliver(server, a, msg(attach(7, 0, { identity: who('read', { tenant: '*' }) })))
  assert.deepEqual(envs(a).slice(1), [
    'Error 6 403 session belongs to another caller', 'Error 7 403 session belongs to another caller',
  ])
  await deliver(server, a, msg(closeFrame(5, 1000)))
  for (const [frame, why] of [
    [textFrame(5, 'plain'), "a session's stream carries binary envelopes only"],
    [binFrame(5, [9]), 'bad session envelope: unknown frame kind 9'],
    [[FrameKind.Binary, 5, encodeEnvelope({ type: 'Welcome', resumed: false, ack: 0 })], 'a client sends data and acks only'],
    [[FrameKind.Binary, 5, encodeEnvelope({ type: 'Ping', payload: new Uint8Array(1) })], 'a client sends data and acks only'],
  ]) {
    events.length = 0
    await deliver(server, a, msg(attach(5), frame))
    assert.deepEqual(envs(a), ['Welcome resumed=false ack 0', `Error 5 400 ${why}`])
    assert.deepEqual(events, [['open', 5, '/rpc', 'alice'], ['close', 5, 1011, 'refused by the backend', false]])
    assert.deepEqual(sessionKeys(ctx), [], 'the session ended')
  }
})

test('an expired caller\'s data on a session stream is refused 401 and ends the session', async () => {
  const t = timed()
  const a = connect(t.server, t.ctx)
  await deliver(t.server, a, msg(attach(5, 0, { identity: who('read', { expiresAt: 1_000_001n }) })))
  takeFrames(a)
  t.clock.ms = 1_000_001_000
  await deliver(t.server, a, msg(data(5, 1, 0, 'late')))
  assert.deepEqual(envs(a), ["Error 5 401 the caller's token has expired"])
  assert.deepEqual(t.events.at(-1), ['close', 5, 1008, 'refused by the backend: not allowed', false])
  assert.deepEqual(sessionKeys(t.ctx), [])
})

test('a session moved off a stream that still looks open: that stream gets Close session.moved, unless its socket hands over', async () => {
  const { ctx, server, events } = timed()
  const a = connect(server, ctx)
  const b = connect(server, ctx)
  await deliver(server, a, msg(attach(5)))
  takeFrames(a)
  await deliver(server, b, msg(attach(9, 0)))
  assert.deepEqual(envs(a), ['Close 5 1000 session resumed on another connection'])
  assert.deepEqual(envs(b), ['Welcome resumed=true ack 0'])
  await deliver(server, a, msg(textFrame(5, 'stale')))
  assert.deepEqual(envs(a), ['Error 5 404 unknown stream 5'], 'the old stream is forgotten')
  assert.equal(events.filter((e) => e[0] === 'open').length, 1)
  // A hand-over: barrier on b, its socket closes first, the re-open with the Attach arrives later.
  await deliver(server, b, msg(barrier()))
  takeFrames(b)
  const c = connect(server, ctx)
  server.webSocketClose(b, 1000, 'handed over', true)
  await settle()
  assert.equal(server.stats().detached, 1, 'a session client waits for its client, not for a grace window')
  await deliver(server, c, msg(attach(9, 0)))
  assert.deepEqual(envs(c), ['Welcome resumed=true ack 0'])
  assert.deepEqual(events.map((e) => e[0]), ['open'], 'no close, no second open')
})

test('sessions survive hibernation (the client goes back on its live socket) and a restart (detached, resumable)', async () => {
  const ctx = fakeCtx()
  const first = timed({ ctx })
  const a = connect(first.server, ctx)
  await deliver(first.server, a, msg(attach(5), data(5, 1, 0, 'one')))
  const [c] = first.server.clients()
  c.serializeAttachment({ room: 7 })
  takeFrames(a)

  ctx.hibernate()
  const second = timed({ ctx })
  const [c2] = second.server.clients()
  assert.equal(c2.id, c.id)
  assert.equal(c2.attached, true)
  assert.deepEqual(c2.deserializeAttachment(), { room: 7 })
  assert.deepEqual(c2.identity, { subject: 'alice', tenant: 't', scopes: 'read write', expiresAt: 2_000_000_000 })
  await deliver(second.server, ctx.current(a), msg(data(5, 2, 1, 'two')))
  assert.deepEqual(envs(ctx.current(a)), ['Text#2 ack 2 two'])
  assert.deepEqual(second.events, [['message', 5, 'two']])

  // A restart: every socket died unheard.
  ctx.hibernate()
  ctx.vanish(ctx.current(a))
  const third = timed({ ctx })
  const [c3] = third.server.clients()
  assert.equal(c3.attached, false)
  assert.equal(third.server.stats().detached, 1)
  assert.deepEqual(ctx.storage.kv.keys('mux/'), [], 'the dead socket\'s rows are swept')
  const b = connect(third.server, ctx)
  await deliver(third.server, b, msg(attach(3, 1, { identity: who('read write', { expiresAt: 2_100_000_000n }) })))
  assert.deepEqual(envs(b), ['Welcome resumed=true ack 2', 'Text#2 ack 2 two'])
  assert.equal(c3.identity.expiresAt, 2_100_000_000, 'the returning Open\'s identity (a renewed token)')
  assert.deepEqual(third.events, [])
  // The summary is the Rust core's layout.
  const s = decodeSummary(ctx.storage.kv.get(`sess/${SESSION_ID}`))
  assert.equal(s.taken, 2)
  assert.equal(s.sent, 2)
  assert.deepEqual(s.origin, { socket: a.deserializeAttachment().socket, stream: 5 })
  assert.deepEqual(s.at, { socket: b.deserializeAttachment().socket, stream: 3 })
  assert.equal(s.detachedAt, null)
  assert.equal(s.service, '/rpc')
  assert.equal(decodeIdentity(s.idBytes).expiresAt, 2_100_000_000n)
})

test('the runtime answers the snippet\'s text ping: the auto-response is set (unless turned off), and answered here if it was not', async () => {
  const { ctx, server, events } = setup()
  assert.deepEqual({ ...ctx.autoResponse }, { request: 'ping', response: 'pong' })
  const off = fakeCtx()
  setup({ ctx: off, options: { autoResponse: false } })
  assert.equal(off.autoResponse, null)
  const ws = connect(server, ctx)
  assert.equal(await server.webSocketMessage(ws, 'ping'), true)
  assert.deepEqual(ws.sent.splice(0), ['pong'])
  assert.deepEqual(events, [])
})

test('with async handlers: the Ack waits for the message\'s end, and messages wait for the wake\'s onClose', async () => {
  const ctx = fakeCtx()
  const log = []
  const pause = () => new Promise((resolve) => setTimeout(resolve, 5))
  const handlers = {
    async onMessage(client, text) {
      await pause()
      log.push(['message', client.stream, text])
    },
    async onClose(client, code) {
      await pause()
      log.push(['close', client.stream, code])
    },
  }
  const first = timed({ ctx, handlers })
  const a = connect(first.server, ctx)
  await deliver(first.server, a, msg(attach(5), data(5, 1, 0, 'x'), open(6)))
  assert.deepEqual(envs(a), ['Welcome resumed=false ack 0', 'Ack 1'])
  await deliver(first.server, a, msg(closeFrame(5, 1001)))

  ctx.hibernate()
  const later = timed({ ctx, handlers })
  later.clock.ms = first.clock.ms + RESUME_WINDOW_MS
  const ws = ctx.current(a)
  const one = later.server.webSocketMessage(ws, msg(textFrame(6, 'one')).buffer)
  const two = later.server.webSocketMessage(ws, msg(textFrame(6, 'two')).buffer)
  await Promise.all([one, two])
  await settle()
  assert.deepEqual(log, [['message', 5, 'x'], ['close', 5, 1006], ['message', 6, 'one'], ['message', 6, 'two']])
})
