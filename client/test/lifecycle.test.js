// States, ready(), close(), the heartbeat, waking up on 'online'/'visibilitychange', raw mode.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { SnippetProxyClient, ClosedError, ConnectionLostError } from '../snippet-proxy-client.js'
import { setup, opened, settle, fakeWebSocket } from './fakes.js'

test('states go idle → connecting → open → reconnecting → connecting → open, each with its previous', async () => {
  const t = setup()
  assert.equal(t.client.state, 'idle')
  t.clock.rnd = 0
  await t.clock.advance(0)
  t.last().accept()
  t.last().drop(1012, 'upstream lost')
  await t.clock.advance(0)
  t.last().accept()
  assert.deepEqual(t.of('state').map(({ state, previous }) => [previous, state]), [
    ['idle', 'connecting'], ['connecting', 'open'], ['open', 'reconnecting'],
    ['reconnecting', 'connecting'], ['connecting', 'open'],
  ])
  assert.equal(t.of('state')[2].reason, 'upstream lost')
  assert.equal(t.of('open').length, 2)
  assert.deepEqual(t.of('close'), [{ type: 'close', code: 1012, reason: 'upstream lost', willRetry: true }])
})

test('ready() waits for open, resolves at once when open, and rejects once closed', async () => {
  const t = setup()
  let resolved = false
  const r = t.client.ready().then(() => { resolved = true })
  await t.clock.advance(0)
  assert.equal(resolved, false)
  t.last().accept()
  await r
  assert.equal(resolved, true)
  await t.client.ready()
  t.client.close(4001, 'bye')
  await assert.rejects(t.client.ready(), (e) => e instanceof ClosedError && e.message === 'bye')
})

test('close() is terminal: the socket gets the code, no retry, and close() again is a no-op', async () => {
  const t = await opened()
  t.client.close(1000, 'done')
  assert.deepEqual(t.last().closedWith, { code: 1000, reason: 'done' })
  assert.equal(t.client.state, 'closed')
  assert.deepEqual(t.of('close').at(-1), { type: 'close', code: 1000, reason: 'done', willRetry: false })
  t.client.close()
  await t.clock.advance(60000)
  assert.equal(t.sockets.length, 1)
  assert.equal(t.of('state').filter((e) => e.state === 'closed').length, 1)
  assert.throws(() => setup().client.close(1006), RangeError, 'codes a browser refuses are refused before anything changes')
})

test('close() before the first attempt means no socket is ever opened', async () => {
  const t = setup()
  t.client.close()
  await t.clock.advance(1000)
  assert.equal(t.sockets.length, 0)
  assert.deepEqual(t.states(), ['closed'])
})

test('heartbeat: a ping every heartbeatMs, its round trip reported as an rtt event', async () => {
  const t = await opened({ heartbeatMs: 1000, heartbeatTimeoutMs: 500 })
  await t.clock.advance(999)
  assert.equal(t.last().sent.length, 0)
  await t.clock.advance(1)
  const [ping] = t.last().calls
  assert.equal(ping.method, 'ping')
  await t.clock.advance(30)
  t.last().receive({ jsonrpc: '2.0', result: 'pong', id: ping.id })
  await settle()
  assert.deepEqual(t.of('rtt'), [{ type: 'rtt', rttMs: 30 }])
  await t.clock.advance(1000)
  assert.equal(t.last().calls.length, 2, 'the next ping, heartbeatMs after the pong')
  // Any reply proves the path alive, even an error (an expired token's -32003).
  t.last().receive({ jsonrpc: '2.0', error: { code: -32003, message: 'expired' }, id: t.last().calls[1].id })
  await settle()
  assert.equal(t.of('rtt').length, 2)
  assert.equal(t.client.state, 'open')
})

test('heartbeat: no pong within heartbeatTimeoutMs closes with 4000 locally, fails calls in flight, reconnects', async () => {
  const t = await opened({ heartbeatMs: 1000, heartbeatTimeoutMs: 500 })
  t.clock.rnd = 0
  const pending = assert.rejects(t.client.call('echo', 1), ConnectionLostError)
  await t.clock.advance(1499)
  assert.equal(t.client.state, 'open')
  await t.clock.advance(1) // heartbeatMs + heartbeatTimeoutMs after the last sign of life
  assert.deepEqual(t.sockets[0].closedWith, { code: 4000, reason: 'heartbeat timeout' })
  assert.deepEqual(t.of('close').at(-1), { type: 'close', code: 4000, reason: 'heartbeat timeout', willRetry: true })
  await pending
  assert.equal(t.sockets.length, 2, 'reconnected (the local 4000 is not a refusal)')
  assert.equal(t.fetchUrls.length, 0)
})

test('going online, or the tab becoming visible, retries at once instead of waiting out the backoff', async () => {
  // Counts its listeners, to show the client removes its own when it ends.
  class Target extends EventTarget {
    listeners = 0
    addEventListener(...a) { this.listeners++; super.addEventListener(...a) }
    removeEventListener(...a) { this.listeners--; super.removeEventListener(...a) }
  }
  const win = new Target()
  const doc = Object.assign(new Target(), { visibilityState: 'hidden' })
  const t = await opened({ window: win, document: doc, backoff: { initialMs: 60000 } })
  t.clock.rnd = 0.9999
  win.dispatchEvent(new Event('online'))
  await settle()
  assert.equal(t.sockets.length, 1, 'nothing to do while open')

  t.last().drop(1006)
  await settle()
  assert.equal(t.client.state, 'reconnecting')
  win.dispatchEvent(new Event('online'))
  await settle()
  assert.equal(t.sockets.length, 2, 'online: retried without waiting')

  t.last().drop(1013)
  await settle()
  doc.dispatchEvent(new Event('visibilitychange')) // still hidden
  await settle()
  assert.equal(t.sockets.length, 2)
  doc.visibilityState = 'visible'
  doc.dispatchEvent(new Event('visibilitychange'))
  await settle()
  assert.equal(t.sockets.length, 3, 'visible: retried without waiting')

  assert.deepEqual([win.listeners, doc.listeners], [1, 1])
  t.client.close()
  assert.deepEqual([win.listeners, doc.listeners], [0, 0], 'no listener outlives the client')
  win.dispatchEvent(new Event('online'))
  await settle()
  assert.equal(t.sockets.length, 3)
})

test('raw mode: data in and out as is, binary as ArrayBuffer, no JSON-RPC and no heartbeat', async () => {
  const t = await opened({ raw: true, heartbeatMs: 1000 }, 'wss://edge.example/ws/echo')
  const ws = t.last()
  assert.equal(ws.binaryType, 'arraybuffer')
  assert.equal(t.client.send('{"not":"rpc"}'), true)
  const buf = new Uint8Array([1, 2, 3]).buffer
  t.client.send(buf)
  assert.deepEqual(ws.sent, ['{"not":"rpc"}', buf])
  ws.receiveRaw('{"jsonrpc":"2.0","method":"x"}')
  ws.receiveRaw(buf)
  assert.deepEqual(t.of('message'), [
    { type: 'message', data: '{"jsonrpc":"2.0","method":"x"}' },
    { type: 'message', data: buf },
  ])
  await t.clock.advance(5000)
  assert.equal(ws.sent.length, 2, 'no pings in raw mode')
  await assert.rejects(t.client.call('ping'), TypeError)
  assert.throws(() => t.client.notify('x'), TypeError)
})

test('raw mode: a queued buffer is copied, so reusing it after send() cannot change what is sent', async () => {
  const t = setup({ raw: true })
  await t.clock.advance(0)
  const bytes = new Uint8Array([1, 2, 3])
  t.client.send(bytes.subarray(1))
  bytes[1] = 99
  t.last().accept()
  assert.deepEqual([...t.last().sent[0]], [2, 3])
})

test('an http(s) URL is turned into ws(s); by default the global WebSocket is used', async () => {
  const { FakeWebSocket, sockets } = fakeWebSocket()
  const saved = globalThis.WebSocket
  globalThis.WebSocket = FakeWebSocket
  // Real timers here: close() in `finally`, or a failed assertion would leave it retrying.
  const client = new SnippetProxyClient('https://edge.example/db/t/ws', { token: 'k', window: null, document: null })
  try {
    await settle()
    assert.equal(sockets[0].url, 'wss://edge.example/db/t/ws?access_token=k')
  } finally {
    client.close()
    globalThis.WebSocket = saved
  }
})
