// The session (PROTOCOL.md §14): envelopes, the Welcome, re-sends, replays, acks, a lost session.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import {
  encodeEnvelope, decodeEnvelope, ConnectionLostError, QueueFullError, SnippetProxyError, TimeoutError,
} from '../snippet-proxy-client.js'
import { setup, opened, settle } from './fakes.js'

const golden = JSON.parse(readFileSync(new URL('../../protocol/vectors/golden.json', import.meta.url), 'utf8'))
const hex = (bytes) => Buffer.from(bytes).toString('hex')
const unhex = (s) => new Uint8Array(Buffer.from(s, 'hex'))

test('every valid envelope of golden.json decodes to its meaning and encodes back to its bytes', () => {
  assert.ok(golden.envelopes.valid.length >= 8)
  for (const { name, hex: bytes, envelope: want } of golden.envelopes.valid) {
    const got = decodeEnvelope(unhex(bytes).buffer)
    // The vectors write u64 as decimal strings and payloads as hex.
    const meaning = { type: got.type }
    if ('seq' in got) meaning.seq = String(got.seq)
    if ('ack' in got) meaning.ack = String(got.ack)
    if ('resumed' in got) meaning.resumed = got.resumed
    if ('payload' in got) meaning.payload_hex = hex(got.payload)
    assert.deepEqual(meaning, want, name)
    assert.equal(hex(encodeEnvelope(got)), bytes, `${name} re-encoded`)
  }
  // Positions past 2^53 stay exact, as bigints.
  assert.equal(decodeEnvelope(unhex('02ffffffffffffffff000000000000010200ff')).seq, 2n ** 64n - 1n)
})

test('every invalid envelope of golden.json is refused, with the error protocol::DecodeError names', () => {
  assert.ok(golden.envelopes.invalid.length >= 5)
  for (const { name, hex: bytes, error } of golden.envelopes.invalid) {
    assert.throws(() => decodeEnvelope(unhex(bytes)), (e) => {
      assert.ok(e instanceof SnippetProxyError, name)
      const { kind, value, needed, available } = e
      const got = Object.fromEntries(Object.entries({ kind, value, needed, available }).filter(([, v]) => v !== undefined))
      assert.deepEqual(got, error, name)
      return true
    }, name)
  }
})

test('the upgrade URL carries the session id (32 hex digits, the same on every attempt) and the position received', async () => {
  const t = await opened({ randomBytes: (n) => Uint8Array.from({ length: n }, (_, i) => i * 17) })
  const id = '00112233445566778899aabbccddeeff'
  assert.equal(t.client.sessionId, id)
  const first = new URL(t.last().url).searchParams
  assert.deepEqual([first.get('session'), first.get('received')], [id, '0'])
  t.last().receive({ jsonrpc: '2.0', method: 'a' })
  t.last().receive({ jsonrpc: '2.0', method: 'b' })
  t.clock.rnd = 0
  t.last().drop(1006)
  await t.clock.advance(0)
  const second = new URL(t.last().url).searchParams
  assert.deepEqual([second.get('session'), second.get('received')], [id, '2'])
  assert.notEqual(setup().client.sessionId, setup().client.sessionId, 'each client object has its own')
})

test('the first connection sends nothing until its Welcome, then the queue (seq 1, 2, …) and a first session event', async () => {
  const t = setup()
  await t.clock.advance(0)
  t.client.send('one')
  const call = t.client.call('echo', 2)
  t.last().accept({ welcome: false })
  await t.clock.advance(1000)
  assert.deepEqual(t.last().sent, [])
  assert.equal(t.client.state, 'connecting')
  t.last().welcome()
  assert.equal(t.client.state, 'open')
  assert.deepEqual(t.last().messages.map(({ seq, ack }) => [seq, ack]), [[1, 0], [2, 0]])
  assert.equal(t.last().data[0], 'one')
  assert.deepEqual(t.of('session'), [{ type: 'session', recovered: true, first: true, lost: 0 }])
  // The session event comes before 'open', so an application knows what it is opening on.
  assert.ok(t.events.findIndex((e) => e.type === 'session') < t.events.findIndex((e) => e.type === 'open'))
  t.last().receive({ jsonrpc: '2.0', result: 2, id: JSON.parse(t.last().data[1]).id })
  assert.equal(await call, 2)
})

test('after a drop, a resumed Welcome gets exactly the unacknowledged messages again, same seq, then the queue', async () => {
  const t = await opened()
  t.clock.rnd = 0
  for (const m of ['a', 'b', 'c']) t.client.send(m)
  t.last().receive({ jsonrpc: '2.0', method: 'push' }, { ack: 0 }) // the backend's seq 1; it acks nothing yet
  t.last().drop(1006)
  t.client.send('d') // queued while away
  await t.clock.advance(0)
  // The backend had taken only 'a' before the connection died.
  t.last().accept({ ack: 1 })
  assert.deepEqual(t.last().messages, [
    { seq: 2, ack: 1, text: 'b' }, // same numbers, our position as it is now
    { seq: 3, ack: 1, text: 'c' },
    { seq: 4, ack: 1, text: 'd' }, // then the queue, numbered after them
  ])
  assert.equal(t.client.unacked, 3)
  assert.deepEqual(t.of('session').at(-1), { type: 'session', recovered: true, first: false, lost: 0 })
  t.last().receiveEnvelope({ type: 'Ack', ack: 3 })
  assert.equal(t.client.unacked, 1, 'an Ack drops what it covers')
  t.last().receive({ jsonrpc: '2.0', method: 'push' }, { ack: 4 })
  assert.equal(t.client.unacked, 0, 'so does the ack of a data envelope')
})

test('duplicates and messages after a gap are dropped silently; the next in order is taken', async () => {
  const t = await opened()
  const ws = t.last()
  const push = (n, seq) => ws.receive({ jsonrpc: '2.0', method: 'n', params: n }, { seq })
  push(1, 1)
  push(2, 2)
  push(2, 2) // a duplicate (a replay overlapping what we had)
  push(1, 1)
  push(4, 4) // after a gap: 3 is missing
  push(3, 3)
  assert.deepEqual(t.of('message').map((m) => m.params), [1, 2, 3])
  assert.deepEqual(t.of('error'), [], 'silently')
})

test('a resumed Welcome replays what was missed: delivered once, in order, however it overlaps', async () => {
  const t = await opened()
  t.clock.rnd = 0
  const ws = t.last()
  ws.receive({ jsonrpc: '2.0', method: 'n', params: 1 })
  ws.drop(1006)
  await t.clock.advance(0)
  assert.equal(new URL(t.last().url).searchParams.get('received'), '1')
  t.last().accept()
  for (const seq of [1, 2, 3]) t.last().receive({ jsonrpc: '2.0', method: 'n', params: seq }, { seq })
  assert.deepEqual(t.of('message').map((m) => m.params), [1, 2, 3])
})

test('a call whose request the backend had not taken is re-sent after the resume, and its reply arrives', async () => {
  const t = await opened()
  t.clock.rnd = 0
  let outcome = 'pending'
  const p = t.client.call('sql', { sql: 'select 1' }).then((r) => { outcome = r }, (e) => { outcome = e })
  const request = t.last().messages[0]
  t.last().drop(1012)
  await t.clock.advance(0)
  t.last().accept({ ack: 0 }) // lost on the way
  assert.deepEqual(t.last().messages, [request], 'the same envelope: same seq, same id')
  t.last().receive({ jsonrpc: '2.0', result: 1, id: JSON.parse(request.text).id })
  await p
  assert.equal(outcome, 1)
  assert.deepEqual(t.of('error'), [])
})

test('resumed: false on a reconnect: the session was lost; sent calls fail "may or may not have run", positions restart', async () => {
  const t = await opened()
  t.clock.rnd = 0
  t.last().receive({ jsonrpc: '2.0', method: 'n' }) // the backend's seq 1
  const acked = t.client.call('a') // taken by the backend, never answered
  t.last().receiveEnvelope({ type: 'Ack', ack: 1 })
  const unacked = t.client.call('b') // never taken
  t.client.send('note 1')
  t.client.send('note 2')
  const failures = [acked, unacked].map((p, i) => assert.rejects(p, (e) => {
    assert.ok(e instanceof ConnectionLostError)
    assert.equal(e.method, 'ab'[i])
    assert.equal(e.message, `${'ab'[i]}: no reply; it may or may not have run (the session could not be resumed)`)
    return true
  }))
  t.last().drop(1006)
  const queued = t.client.call('c') // not sent yet: it goes to the new session
  await t.clock.advance(0)
  t.last().accept({ resumed: false })
  await Promise.all(failures)
  assert.deepEqual(t.of('session').at(-1), { type: 'session', recovered: false, first: false, lost: 2 })
  assert.equal(t.client.state, 'open')
  // Nothing of the old session is re-sent; the queue starts the new one at seq 1, ack 0.
  assert.deepEqual(t.last().messages.map(({ seq, ack }) => [seq, ack]), [[1, 0]])
  assert.equal(t.last().calls[0].method, 'c')
  t.last().receive({ jsonrpc: '2.0', result: 'c', id: t.last().calls[0].id })
  assert.equal(await queued, 'c')
  t.clock.rnd = 0
  t.last().drop(1006)
  await t.clock.advance(0)
  assert.equal(new URL(t.last().url).searchParams.get('received'), '1', 'counted from the new session')
})

test('a Welcome on an open socket (the snippet re-attached us upstream) re-sends the unacknowledged there', async () => {
  const t = await opened()
  const ws = t.last()
  t.client.send('a')
  t.client.send('b')
  ws.welcome({ ack: 1 })
  assert.equal(t.client.state, 'open')
  assert.equal(t.sockets.length, 1)
  assert.deepEqual(ws.messages.map((m) => [m.seq, m.text]), [[1, 'a'], [2, 'b'], [2, 'b']])
  assert.deepEqual(t.of('session').at(-1), { type: 'session', recovered: true, first: false, lost: 0 })
  assert.equal(t.of('open').length, 1, 'still the same connection')
  // One that could not resume: lost, and what follows starts at 1 on the same socket.
  ws.welcome({ resumed: false })
  assert.deepEqual(t.of('session').at(-1), { type: 'session', recovered: false, first: false, lost: 1 })
  t.client.send('c')
  assert.deepEqual(ws.messages.at(-1), { seq: 1, ack: 0, text: 'c' })
})

test('acks: with nothing to send, an Ack after 32 messages, or 2000 ms after the first unacknowledged one', async () => {
  const t = await opened()
  const ws = t.last()
  const acks = () => ws.envelopes.filter((e) => e.type === 'Ack').map((e) => e.ack)
  for (let i = 0; i < 31; i++) ws.receive({ jsonrpc: '2.0', method: 'n' })
  assert.deepEqual(acks(), [])
  ws.receive({ jsonrpc: '2.0', method: 'n' })
  assert.deepEqual(acks(), [32], 'the 32nd at once')
  await t.clock.advance(5000)
  assert.deepEqual(acks(), [32], 'nothing more to acknowledge')

  ws.receive({ jsonrpc: '2.0', method: 'n' })
  await t.clock.advance(1500)
  ws.receive({ jsonrpc: '2.0', method: 'n' })
  await t.clock.advance(499)
  assert.deepEqual(acks(), [32])
  await t.clock.advance(1)
  assert.deepEqual(acks(), [32, 34], '2000 ms after the first of them, covering both')
})

test('acks ride on data for free: sending resets the pending ack, and no separate Ack follows', async () => {
  const t = await opened()
  const ws = t.last()
  ws.receive({ jsonrpc: '2.0', method: 'n' })
  ws.receive({ jsonrpc: '2.0', method: 'n' })
  await t.clock.advance(1000)
  t.client.send('reply')
  assert.deepEqual(ws.messages.at(-1), { seq: 1, ack: 2, text: 'reply' })
  await t.clock.advance(10000)
  assert.deepEqual(ws.envelopes.map((e) => e.type), ['Text'], 'no Ack: the data carried it')
  // A listener that answers a push at once carries the ack too, even at the 32nd.
  t.client.addEventListener('message', () => t.client.send('seen'))
  for (let i = 0; i < 30; i++) ws.receive({ jsonrpc: '2.0', method: 'n' })
  assert.equal(ws.envelopes.filter((e) => e.type === 'Ack').length, 0)
  assert.equal(ws.messages.at(-1).ack, 32)
})

test('an acknowledgement still due is sent after a reconnect', async () => {
  const t = await opened()
  t.clock.rnd = 0
  t.last().receive({ jsonrpc: '2.0', method: 'n' })
  t.last().drop(1006)
  await t.clock.advance(0)
  t.last().accept()
  await t.clock.advance(2000)
  assert.deepEqual(t.last().envelopes, [{ type: 'Ack', ack: 1 }])
})

test('maxQueue counts what was sent and not yet acknowledged, as much as what is queued', async () => {
  const t = await opened({ maxQueue: 3 })
  assert.equal(t.client.send('a'), true)
  assert.equal(t.client.notify('b'), true)
  t.client.call('c', undefined, { timeout: 0 }) // never answered here
  assert.equal(t.client.unacked, 3)
  assert.equal(t.client.send('d'), false, 'full, though the socket is open')
  await assert.rejects(t.client.call('e'), QueueFullError)
  t.last().receiveEnvelope({ type: 'Ack', ack: 2 })
  assert.equal(t.client.send('d'), true)
  assert.deepEqual(t.last().data.slice(3), ['d'])
  // Queued and unacknowledged together: one left unacked, two more fit in the queue.
  t.clock.rnd = 0
  t.last().drop(1006)
  await settle()
  assert.equal(t.client.unacked, 2)
  assert.equal(t.client.send('f'), true)
  assert.equal(t.client.send('g'), false)
  assert.equal(t.client.queued, 1)
})

test('anything but an envelope is an error event and is ignored, as is data before the Welcome', async () => {
  const t = setup()
  await t.clock.advance(0)
  t.last().accept({ welcome: false })
  t.last().receive({ jsonrpc: '2.0', method: 'early' })
  assert.match(t.of('error')[0].error.message, /Text before its Welcome/)
  t.last().welcome()
  t.last().receiveRaw('{"jsonrpc":"2.0","method":"text frame"}')
  t.last().receiveRaw(new Uint8Array([9, 1, 2]).buffer)
  t.last().receiveRaw(new Uint8Array([3, 0, 0]).buffer)
  const [, text, unknown, cut] = t.of('error').map((e) => e.error)
  assert.match(text.message, /text message/)
  assert.equal(unknown.kind, 'UnknownKind')
  assert.equal(cut.kind, 'Truncated')
  assert.deepEqual(t.of('message'), [])
  assert.equal(t.client.state, 'open', 'ignored: the connection goes on')
  t.last().receive({ jsonrpc: '2.0', method: 'first' })
  assert.deepEqual(t.of('message').map((m) => m.method), ['first'], 'the early one was not taken: seq 1 is still next')
})

test('a sent call still times out by itself, and says it may or may not have run', async () => {
  const t = await opened()
  t.clock.rnd = 0
  const p = t.client.call('slow', undefined, { timeout: 1000 })
  const timedOut = assert.rejects(p, (e) => e instanceof TimeoutError && e.sent && /may or may not have run/.test(e.message))
  t.last().drop(1006)
  await t.clock.advance(0)
  t.last().accept({ welcome: false })
  await t.clock.advance(1000)
  await timedOut
})
