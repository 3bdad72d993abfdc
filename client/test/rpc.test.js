// JSON-RPC calls, server pushes, the bounded queue and what happens to calls on a drop.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  RpcError, TimeoutError, ConnectionLostError, QueueFullError, ClosedError, SnippetProxyError,
} from '../snippet-proxy-client.js'
import { setup, opened, settle } from './fakes.js'

test('replies are matched to calls by id, whatever their order', async () => {
  const t = await opened()
  const a = t.client.call('echo', { a: 1 })
  const b = t.client.call('sql', { sql: 'select ? as x', params: [5] })
  const [ca, cb] = t.last().calls
  assert.deepEqual(ca, { jsonrpc: '2.0', method: 'echo', params: { a: 1 }, id: ca.id })
  assert.equal(cb.method, 'sql')
  assert.notEqual(ca.id, cb.id)
  t.last().receive({ jsonrpc: '2.0', result: { columns: ['x'], rows: [[5]], rowsRead: 0, rowsWritten: 0 }, id: cb.id })
  t.last().receive({ jsonrpc: '2.0', result: { a: 1 }, id: ca.id })
  assert.deepEqual(await a, { a: 1 })
  assert.deepEqual((await b).rows, [[5]])
})

test('a call without params sends no params member', async () => {
  const t = await opened()
  const p = t.client.call('ping')
  const sent = t.last().calls[0]
  assert.equal('params' in sent, false)
  t.last().receive({ jsonrpc: '2.0', result: 'pong', id: sent.id })
  assert.equal(await p, 'pong')
})

test('a JSON-RPC error reply rejects with RpcError carrying code, message and data', async () => {
  const t = await opened()
  const p = t.client.call('broadcast', { message: 'hi' })
  const { id } = t.last().calls[0]
  t.last().receive({ jsonrpc: '2.0', error: { code: -32002, message: 'broadcast needs the publish scope', data: { scope: 'publish' } }, id })
  await assert.rejects(p, (e) => {
    assert.ok(e instanceof RpcError && e instanceof SnippetProxyError && e instanceof Error)
    assert.equal(e.name, 'RpcError')
    assert.equal(e.code, -32002)
    assert.equal(e.message, 'broadcast needs the publish scope')
    assert.deepEqual(e.data, { scope: 'publish' })
    return true
  })
})

test('a call with no reply in time rejects with TimeoutError; the late reply is ignored', async () => {
  const t = await opened()
  const p = t.client.call('sql', { sql: 'select 1' }, { timeout: 100 })
  const late = assert.rejects(p, (e) => e instanceof TimeoutError && e.sent === true && /may or may not have run/.test(e.message))
  await t.clock.advance(99)
  let settled = false
  p.catch(() => {}).finally(() => { settled = true })
  await settle()
  assert.equal(settled, false, 'not before the timeout')
  await t.clock.advance(1)
  await late
  t.last().receive({ jsonrpc: '2.0', result: 1, id: t.last().calls[0].id })
  assert.equal(t.of('error').length, 0)
})

test('a call in flight when the connection drops is not failed: its reply comes after the resume', async () => {
  const t = await opened()
  t.clock.rnd = 0
  let outcome = 'pending'
  const p = t.client.call('sql', { sql: 'insert into t values (1)' }).then((r) => { outcome = r }, (e) => { outcome = e })
  const { id } = t.last().calls[0]
  t.last().drop(1012, 'upstream lost')
  await t.clock.advance(0)
  assert.equal(outcome, 'pending', 'no ConnectionLostError')
  // The backend had taken the request (it acknowledges it in the Welcome): not sent again,
  // and its reply, sent while we were away, is replayed.
  t.last().accept()
  assert.deepEqual(t.last().sent, [])
  t.last().receive({ jsonrpc: '2.0', result: { rowsWritten: 1 }, id })
  await p
  assert.deepEqual(outcome, { rowsWritten: 1 })
})

test('server pushes (notifications) are message events with method and params', async () => {
  const t = await opened()
  t.last().receive({ jsonrpc: '2.0', method: 'broadcast', params: { message: { id: 7, name: 'ann', body: 'hi' } } })
  assert.deepEqual(t.of('message'), [{ type: 'message', method: 'broadcast', params: { message: { id: 7, name: 'ann', body: 'hi' } } }])
})

test('notify sends a notification (no id); an unmatched error and non-JSON become error events', async () => {
  const t = await opened()
  assert.equal(t.client.notify('broadcast', { message: 'x' }), true)
  assert.deepEqual(t.last().calls[0], { jsonrpc: '2.0', method: 'broadcast', params: { message: 'x' } })
  t.last().receive({ jsonrpc: '2.0', error: { code: -32700, message: 'parse error' }, id: null })
  t.last().receive('{not json')
  t.last().receiveBinary(new Uint8Array([123, 125]))
  const [e1, e2, e3] = t.of('error').map((e) => e.error)
  assert.ok(e1 instanceof RpcError && e1.code === -32700)
  assert.ok(e2 instanceof SnippetProxyError && /not JSON/.test(e2.message))
  assert.ok(e3 instanceof SnippetProxyError && /binary/.test(e3.message), 'JSON-RPC comes as text')
})

test('while disconnected, sends queue up to maxQueue; beyond it send/notify return false and call rejects', async () => {
  const t = setup({ maxQueue: 3 })
  await t.clock.advance(0) // connecting, not open
  assert.equal(t.client.send('one'), true)
  assert.equal(t.client.notify('n', { i: 2 }), true)
  const c = t.client.call('echo', 3)
  assert.equal(t.client.queued, 3)
  assert.equal(t.client.send('four'), false)
  assert.equal(t.client.notify('n', { i: 5 }), false)
  await assert.rejects(t.client.call('echo', 6), (e) => e instanceof QueueFullError && e.method === 'echo')
  assert.equal(t.client.queued, 3)
  assert.deepEqual(t.last().sent, [])

  // Queued items go first, in order, before what a listener sends on 'open'. (The listener's
  // message is a fourth item: the backend acknowledged the first three in between.)
  t.client.addEventListener('open', () => {
    t.last().receiveEnvelope({ type: 'Ack', ack: 3 })
    t.client.send('from open listener')
  }, { once: true })
  t.last().accept()
  const sent = t.last().data
  assert.deepEqual(t.last().messages.map((m) => m.seq), [1, 2, 3, 4])
  assert.equal(sent.length, 4)
  assert.equal(sent[0], 'one')
  assert.deepEqual(JSON.parse(sent[1]), { jsonrpc: '2.0', method: 'n', params: { i: 2 } })
  assert.equal(JSON.parse(sent[2]).method, 'echo')
  assert.equal(sent[3], 'from open listener')
  assert.equal(t.client.queued, 0)
  t.last().receive({ jsonrpc: '2.0', result: 3, id: JSON.parse(sent[2]).id })
  assert.equal(await c, 3)
})

test('queued items are delivered exactly once: a later reconnect sends none of them again', async () => {
  const t = setup()
  t.clock.rnd = 0
  await t.clock.advance(0)
  t.last().drop(1006) // refused before open (diagnosed 426): retried
  t.client.send('a')
  t.client.send('b')
  await t.clock.advance(0)
  assert.equal(t.sockets.length, 2)
  t.last().accept()
  assert.deepEqual(t.last().data, ['a', 'b'])
  t.last().drop(1012)
  await t.clock.advance(0)
  t.last().accept() // its Welcome acknowledges both
  assert.deepEqual(t.last().sent, [])
  assert.deepEqual(t.sockets.map((s) => s.sent.length), [0, 2, 0])
})

test('a queued call that times out is removed: never sent, and its error says it did not run', async () => {
  const t = setup()
  await t.clock.advance(0)
  const p = t.client.call('sql', { sql: 'delete from t' }, { timeout: 50 })
  const timedOut = assert.rejects(p, (e) => e instanceof TimeoutError && e.sent === false && /did not run/.test(e.message))
  await t.clock.advance(50)
  await timedOut
  assert.equal(t.client.queued, 0)
  t.last().accept()
  assert.deepEqual(t.last().sent, [])
})

test('close() while open: calls in flight reject with ConnectionLostError, and nothing is kept for a re-send', async () => {
  const t = await opened()
  const inFlight = assert.rejects(t.client.call('echo', 1), (e) =>
    e instanceof ConnectionLostError && e.message === 'echo: no reply; it may or may not have run (closed by the client)')
  assert.equal(t.client.unacked, 1)
  t.client.close()
  await inFlight
  assert.equal(t.client.unacked, 0)
  assert.deepEqual(t.last().closedWith, { code: 1000, reason: '' })
})

test('close() while disconnected discards the queue: queued calls reject with ClosedError', async () => {
  const t = await opened()
  t.last().drop(1012)
  await settle()
  const queued = assert.rejects(t.client.call('echo', 2), (e) => e instanceof ClosedError && e.message === 'closed by the client')
  t.client.send('x')
  assert.equal(t.client.queued, 2)
  t.client.close()
  await queued
  assert.equal(t.client.queued, 0)
  assert.equal(t.client.send('y'), false)
  await assert.rejects(t.client.call('echo', 3), ClosedError)
  await t.clock.advance(60000)
  assert.equal(t.sockets.length, 1, 'no reconnect after close()')
})
