// States, ready(), close(), the heartbeat, waking up on 'online'/'visibilitychange', raw mode.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { SnippetProxyClient, ClosedError } from '../snippet-proxy-client.js'
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

test('heartbeat: a Ping envelope every heartbeatMs, answered by the snippet\'s Pong, its round trip an rtt event', async () => {
  const t = await opened({ heartbeatMs: 1000, heartbeatTimeoutMs: 500 })
  const ws = t.last()
  await t.clock.advance(999)
  assert.equal(ws.sent.length, 0)
  await t.clock.advance(1)
  const [ping] = ws.envelopes
  assert.equal(ping.type, 'Ping')
  assert.deepEqual([...ping.payload], [0, 0, 0, 1], 'a 4-byte counter')
  await t.clock.advance(30)
  // A Pong for another ping (a late one) proves nothing.
  ws.receiveEnvelope({ type: 'Pong', payload: new Uint8Array([0, 0, 0, 9]) })
  assert.deepEqual(t.of('rtt'), [])
  ws.pong()
  assert.deepEqual(t.of('rtt'), [{ type: 'rtt', rttMs: 30 }])
  await t.clock.advance(999)
  assert.equal(ws.sent.length, 1, 'the next ping heartbeatMs after the pong, not before')
  await t.clock.advance(1)
  assert.deepEqual([...ws.envelopes[1].payload], [0, 0, 0, 2])
  ws.pong()
  assert.equal(t.of('rtt').length, 2)
  assert.equal(t.client.state, 'open')
  assert.equal(t.server.taken, 0, 'pings are no application messages: the backend sees none')
})

test('heartbeat: no Pong within heartbeatTimeoutMs closes with 4000 locally and resumes; a call in flight survives', async () => {
  const t = await opened({ heartbeatMs: 1000, heartbeatTimeoutMs: 500 })
  t.clock.rnd = 0
  let outcome = 'pending'
  const call = t.client.call('echo', 1).then((r) => { outcome = r }, (e) => { outcome = e })
  await t.clock.advance(1499)
  assert.equal(t.client.state, 'open')
  await t.clock.advance(1) // heartbeatMs + heartbeatTimeoutMs after the last sign of life
  assert.deepEqual(t.sockets[0].closedWith, { code: 4000, reason: 'heartbeat timeout' })
  assert.deepEqual(t.of('close').at(-1), { type: 'close', code: 4000, reason: 'heartbeat timeout', willRetry: true })
  assert.equal(t.sockets.length, 2, 'reconnected (the local 4000 is not a refusal)')
  assert.equal(t.fetchUrls.length, 0)
  await settle()
  assert.equal(outcome, 'pending', 'the call is still waiting for its reply')
  t.last().accept()
  t.last().receive({ jsonrpc: '2.0', result: 'echoed', id: t.sockets[0].calls[0].id })
  await call
  assert.equal(outcome, 'echoed')
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

test('raw mode: strings go as Text envelopes and bytes as Binary; received ones come back as string and ArrayBuffer', async () => {
  const t = await opened({ raw: true }, 'wss://edge.example/ws/echo')
  const ws = t.last()
  assert.equal(ws.binaryType, 'arraybuffer')
  assert.equal(t.client.send('{"not":"rpc"}'), true)
  t.client.send(new Uint8Array([1, 2, 3]).buffer)
  assert.deepEqual(ws.envelopes.map((e) => e.type), ['Text', 'Binary'])
  assert.deepEqual(ws.data, ['{"not":"rpc"}', [1, 2, 3]])
  ws.receive('{"jsonrpc":"2.0","method":"x"}')
  ws.receiveBinary(new Uint8Array([4, 5]))
  const [text, bin] = t.of('message').map((e) => e.data)
  assert.equal(text, '{"jsonrpc":"2.0","method":"x"}', 'not parsed: raw mode is no JSON-RPC')
  assert.ok(bin instanceof ArrayBuffer)
  assert.deepEqual([...new Uint8Array(bin)], [4, 5])
  await assert.rejects(t.client.call('ping'), TypeError)
  assert.throws(() => t.client.notify('x'), TypeError)
  assert.throws(() => t.client.send(new Blob(['x'])), TypeError, 'a Blob would have to be read first')
})

test('raw mode has the heartbeat too', async () => {
  const t = await opened({ raw: true, heartbeatMs: 1000, heartbeatTimeoutMs: 500 }, 'wss://edge.example/ws/echo')
  await t.clock.advance(1000)
  assert.deepEqual(t.last().envelopes.map((e) => e.type), ['Ping'])
  await t.clock.advance(500)
  assert.deepEqual(t.sockets[0].closedWith, { code: 4000, reason: 'heartbeat timeout' })
})

test('raw mode: a queued buffer is copied, so reusing it after send() cannot change what is sent', async () => {
  const t = setup({ raw: true })
  await t.clock.advance(0)
  const bytes = new Uint8Array([1, 2, 3])
  t.client.send(bytes.subarray(1))
  bytes[1] = 99
  t.last().accept()
  assert.deepEqual(t.last().data, [[2, 3]])
})

test('an http(s) URL is turned into ws(s); by default the global WebSocket is used', async () => {
  const { FakeWebSocket, sockets } = fakeWebSocket()
  const saved = globalThis.WebSocket
  globalThis.WebSocket = FakeWebSocket
  // Real timers here: close() in `finally`, or a failed assertion would leave it retrying.
  const client = new SnippetProxyClient('https://edge.example/db/t/ws', { token: 'k', window: null, document: null })
  try {
    await settle()
    const url = new URL(sockets[0].url)
    assert.equal(`${url.origin}${url.pathname}`, 'wss://edge.example/db/t/ws')
    assert.equal(url.searchParams.get('access_token'), 'k')
    assert.match(url.searchParams.get('session'), /^[0-9a-f]{32}$/, 'a random session id by default')
  } finally {
    client.close()
    globalThis.WebSocket = saved
  }
})
