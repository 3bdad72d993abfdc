// SnippetProxyServer against a fake Durable Object ctx: accept's refusals, the stream
// lifecycle, requests, ordering and the hand-over barrier, errors and limits.

import { test } from 'node:test'
import assert from 'node:assert/strict'

import { FrameKind, MAX_SESSION_STREAMS, decodeIdentity, identityToHex, toHex } from '../src/protocol.js'
import { SnippetProxyServer, isValidTenant } from '../src/index.js'
import {
  FakeSocket, NOW_MS, TOKEN, barrier, binFrame, bytes, closeFrame, connect, deliver, fakeCtx, msg, open, ping, request,
  settle, setup, takeFrames, takeMessages, textFrame, who,
} from './fakes.js'

const upgrade = (headers, url = 'https://backend.example/db/t/mux') => new Request(url, { headers })

test('accept refuses without a configured token (500), without the bearer token (401), without an upgrade (426), for a bad tenant (400)', async () => {
  const ctx = fakeCtx()
  const unconfigured = new SnippetProxyServer(ctx, {}, {})
  let res = unconfigured.accept(upgrade({ Authorization: 'Bearer ', Upgrade: 'websocket' }))
  assert.equal(res.status, 500)
  assert.deepEqual(await res.json(), { error: 'BACKEND_TOKEN is not configured' })
  assert.equal(new SnippetProxyServer(ctx, {}, { token: '' }).accept(upgrade({ Upgrade: 'websocket' })).status, 500)

  const { server } = setup({ ctx })
  for (const auth of [undefined, `bearer ${TOKEN}`, `Bearer ${TOKEN}x`, `Bearer ${TOKEN.slice(1)}`, TOKEN, 'Bearer ', `Basic ${TOKEN}`]) {
    const headers = { Upgrade: 'websocket' }
    if (auth !== undefined) headers.Authorization = auth
    res = server.accept(upgrade(headers))
    assert.equal(res.status, 401, `Authorization: ${auth}`)
    assert.deepEqual(await res.json(), { error: 'missing or wrong bearer token' })
  }
  res = server.accept(upgrade({ Authorization: `Bearer ${TOKEN}` }))
  assert.equal(res.status, 426)
  assert.equal(server.accept(upgrade({ Authorization: `Bearer ${TOKEN}`, Upgrade: 'h2c' })).status, 426)
  // ('..' never arrives: the URL parser resolves it; isValidTenant refuses it anyway.)
  for (const t of ['a%20b', '%C3%A9', 'x'.repeat(65)]) {
    assert.equal(server.accept(upgrade({ Authorization: `Bearer ${TOKEN}`, Upgrade: 'websocket' }, `https://b.example/db/${t}/mux`)).status, 400, t)
  }
  assert.ok(!isValidTenant('..') && !isValidTenant('.') && !isValidTenant('') && isValidTenant('...') && isValidTenant('a-b.c_1'))
  assert.equal(ctx.accepted.length, 0, 'nothing accepted')
  assert.equal(ctx.storage.kv.map.size, 0, 'nothing stored')
})

test('a binding-only object lets every caller in without a token, but checks one that is configured', async () => {
  const ctx = fakeCtx()
  const bound = new SnippetProxyServer(ctx, {}, { bindingOnly: true })
  assert.equal(bound.accept(upgrade({ Upgrade: 'websocket' })).status, 101)
  const res = await bound.fetch(new Request('https://backend.binding/db/t/rpc', { method: 'POST', body: '{}' }))
  assert.equal(res.status, 404, 'past the bearer check, to onRequest (none here)')
  const both = new SnippetProxyServer(ctx, {}, { bindingOnly: true, token: TOKEN })
  assert.equal(both.accept(upgrade({ Upgrade: 'websocket' })).status, 401)
  assert.equal(both.accept(upgrade({ Upgrade: 'websocket', Authorization: `Bearer ${TOKEN}` })).status, 101)
})

test('accept takes the socket with the Hibernation API, a mux tag, an attachment and a stored tenant', () => {
  const { ctx, server } = setup()
  const res = server.accept(upgrade({ Authorization: `Bearer  ${TOKEN} `, Upgrade: 'WebSocket' }, 'https://b.example/db/room-1/mux'))
  assert.equal(res.status, 101)
  assert.ok(res.webSocket instanceof FakeSocket, 'the client end goes back to the caller')
  assert.equal(ctx.accepted.length, 1)
  const { ws, tags } = ctx.accepted[0]
  assert.deepEqual(tags, ['mux'])
  const a = ws.deserializeAttachment()
  assert.equal(a.endpoint, 'mux')
  assert.equal(a.tenant, 'room-1')
  assert.match(a.socket, /^[0-9a-f]{12}$/)
  assert.equal(new TextDecoder().decode(ctx.storage.kv.get(`mux/${a.socket}`)), 'room-1')
  assert.ok(server.isMuxSocket(ws))
  // `/mux` without /db/{tenant} is tenant default, as in the reference Worker.
  server.accept(upgrade({ Authorization: `Bearer ${TOKEN}`, Upgrade: 'websocket' }, 'https://b.example/mux'))
  assert.equal(ctx.accepted[1].ws.deserializeAttachment().tenant, 'default')
})

test('other sockets of the object are left alone', async () => {
  const { ctx, server, events } = setup()
  const own = new FakeSocket()
  own.serializeAttachment({ mine: true })
  ctx.acceptWebSocket(own, ['chat'])
  assert.equal(server.webSocketMessage(own, 'hello'), false)
  assert.equal(server.webSocketClose(own, 1000, '', true), false)
  assert.equal(server.webSocketError(own, new Error('x')), false)
  assert.equal(server.isMuxSocket(own), false)
  assert.equal(own.closed, null)
  assert.deepEqual(events, [])
})

test('open, messages both ways, close: the application sees clients, never frames', async () => {
  const { ctx, server, events } = setup()
  const ws = connect(server, ctx)
  const socket = ws.deserializeAttachment().socket
  const handled = server.webSocketMessage(ws, msg(open(1, '/rpc'), textFrame(1, 'hi'), open(2, '/echo'), binFrame(2, [0, 159, 255])).buffer)
  assert.equal(handled, true, 'handled synchronously')
  await settle()
  assert.deepEqual(events.slice(0, 2), [['open', 1, '/rpc', 'alice'], ['message', 1, 'hi']])
  assert.deepEqual(events[2], ['open', 2, '/echo', 'alice'])
  assert.ok(events[3][2] instanceof ArrayBuffer, 'binary data is an ArrayBuffer, as on a direct socket')
  assert.deepEqual([...new Uint8Array(events[3][2])], [0, 159, 255])
  const messages = takeMessages(ws)
  assert.equal(messages.length, 1, 'both replies in one message')
  assert.deepEqual(messages[0].map((f) => [f.kind, f.stream]), [['Text', 1], ['Binary', 2]])
  assert.equal(messages[0][0].text, 'hi')

  // The stream table is stored as the reference backend stores it.
  const kv = ctx.storage.kv
  const entry = kv.get(`mux/${socket}/0000000001`)
  assert.equal(entry[0], 1, 'rpc')
  assert.deepEqual(decodeIdentity(entry.subarray(1)), who())
  assert.equal(kv.get(`mux/${socket}/0000000002`)[0], 2, 'echo')

  const [c1] = server.clients().filter((c) => c.stream === 1)
  assert.deepEqual(c1.identity, { subject: 'alice', tenant: 't', scopes: 'read write', expiresAt: 2_000_000_000 })
  assert.equal(c1.service, '/rpc')
  assert.equal(c1.readyState, 1)
  assert.equal(c1.id, `${socket}:1`)

  await deliver(server, ws, msg(closeFrame(1, 4001, 'bye'), textFrame(1, 'late')))
  assert.deepEqual(events.slice(4), [['close', 1, 4001, 'bye', true]])
  assert.equal(kv.get(`mux/${socket}/0000000001`), undefined, 'forgotten in storage')
  const [err] = takeFrames(ws)
  assert.deepEqual([err.kind, err.stream, err.error], ['Error', 1, { code: 404, message: 'unknown stream 1' }])
  assert.equal(c1.readyState, 3)
  c1.send('into the void') // a no-op once closed
  await settle()
  assert.deepEqual(takeFrames(ws), [])
  assert.deepEqual(server.clients().map((c) => c.stream), [2])
})

test('a close without payload is 1005; a Close for an unknown stream is ignored', async () => {
  const { ctx, server, events } = setup()
  const ws = connect(server, ctx)
  await deliver(server, ws, msg(open(3), [FrameKind.Close, 3, new Uint8Array(0)], closeFrame(99)))
  assert.deepEqual(events.slice(1), [['close', 3, 1005, '', true]])
  assert.deepEqual(takeFrames(ws), [])
})

test('client.close sends a Close frame, forgets the stream and is followed by onClose', async () => {
  const { ctx, server, events } = setup({
    handlers: {
      onMessage(client, data) {
        events.push(['message', client.stream, data])
        if (data === 'kick me') client.close(4000, 'x'.repeat(200))
      },
    },
  })
  const ws = connect(server, ctx)
  await deliver(server, ws, msg(open(1), textFrame(1, 'kick me'), textFrame(1, 'again')))
  const frames = takeFrames(ws)
  assert.equal(frames[0].kind, 'Close')
  assert.equal(frames[0].close.code, 4000)
  assert.equal(frames[0].close.reason, 'x'.repeat(123), 'reason cut to what a close frame carries')
  assert.deepEqual([frames[1].kind, frames[1].error.code], ['Error', 404], 'the stream is gone for later frames')
  assert.deepEqual(events.at(-1), ['close', 1, 4000, 'x'.repeat(123), true])

  // Codes a client cannot be closed with are refused, as WebSocket.close refuses them.
  await deliver(server, ws, msg(open(2)))
  const [client] = server.clients()
  for (const code of [999, 1005, 1006, 1015, 2000, 5000]) assert.throws(() => client.close(code), RangeError, `${code}`)
  assert.equal(client.readyState, 1)
  client.close()
  await settle() // outside a message, sends leave on the next microtask
  assert.deepEqual(takeFrames(ws).at(-1).close, { code: 1000, reason: '' })
})

test('requests get exactly one Response on their stream, sync or async, and leave no state', async () => {
  const seen = []
  const { ctx, server } = setup({
    handlers: {
      onRequest(req) {
        seen.push(req)
        if (req.path === '/rpc') return { status: 200, contentType: 'application/json', body: '{"result":"pong"}' }
        if (req.path === '/slow') return new Promise((r) => setTimeout(() => r({ status: 202, body: new Uint8Array([1, 2]) }), 5))
        if (req.path === '/fetch') return new Response('made with fetch', { status: 201, headers: { 'Content-Type': 'text/plain' } })
        if (req.path === '/none') return undefined
        throw new Error('boom')
      },
    },
  })
  const ws = connect(server, ctx)
  const socket = ws.deserializeAttachment().socket
  const before = ctx.storage.kv.keys().length
  await deliver(server, ws, msg(
    request(7, '{"jsonrpc":"2.0","method":"ping","id":1}'),
    request(8, '', { path: '/slow' }),
    request(9, 'x', { path: '/fetch' }),
    request(10, '', { path: '/none' }),
    request(11, '', { path: '/throws' }),
    request(0, '', { path: '/rpc' }),
  ))
  const frames = takeFrames(ws)
  assert.deepEqual(frames.map((f) => [f.kind, f.stream]), [['Response', 7], ['Response', 8], ['Response', 9], ['Response', 10], ['Response', 11], ['Response', 0]])
  assert.deepEqual(frames.map((f) => f.response.status), [200, 202, 201, 204, 500, 200])
  assert.equal(frames[0].response.text, '{"result":"pong"}')
  assert.equal(frames[0].response.contentType, 'application/json')
  assert.deepEqual([...frames[1].response.body], [1, 2])
  assert.equal(frames[1].response.contentType, '')
  assert.equal(frames[2].response.text, 'made with fetch')
  assert.equal(frames[2].response.contentType, 'text/plain')
  assert.equal(frames[4].response.text, '{"error":"internal error"}')
  assert.equal(seen[0].method, 'POST')
  assert.equal(seen[0].contentType, 'application/json')
  assert.ok(seen[0].body instanceof Uint8Array)
  assert.equal(new TextDecoder().decode(seen[0].body), '{"jsonrpc":"2.0","method":"ping","id":1}')
  assert.deepEqual(seen[0].identity, { subject: 'alice', tenant: 't', scopes: 'read write', expiresAt: 2_000_000_000 })
  assert.equal(ctx.storage.kv.keys().length, before, 'HTTP streams leave no state')
  assert.deepEqual(server.clients(), [])
  assert.ok(socket)
})

test('requests are admitted like streams: 403 for another tenant, 401 once expired; 404 without onRequest', async () => {
  const { ctx, server, app } = setup()
  delete app.onRequest
  const ws = connect(server, ctx)
  await deliver(server, ws, msg(
    request(1, '', { identity: who('read', { tenant: 'other' }) }),
    request(2, '', { identity: who('read', { expiresAt: BigInt(NOW_MS / 1000) }) }),
    request(3, '', { identity: who('read', { tenant: 'other', expiresAt: 1n }) }),
    request(4, '', { identity: who('read', { tenant: '*' }) }),
  ))
  const r = takeFrames(ws).map((f) => [f.response.status, f.response.text])
  assert.deepEqual(r, [
    [403, '{"error":"identity is for tenant \\"other\\", not \\"t\\""}'],
    [401, `{"error":"the caller's token has expired"}`],
    [401, '{"error":"identity is for tenant \\"other\\", not \\"t\\""}'],
    [404, '{"error":"no service at /rpc"}'],
  ])
})

test('Open is refused on stream 0, for unknown services, other tenants, expired callers, undecodable payloads', async () => {
  const { ctx, server, events } = setup()
  const ws = connect(server, ctx)
  await deliver(server, ws, msg(
    open(0),
    open(1, '/nope'),
    open(2, '/rpc', who('read', { tenant: 'other' })),
    open(3, '/rpc', who('read', { expiresAt: BigInt(NOW_MS / 1000) })),
    [FrameKind.Open, 4, new Uint8Array([0, 1, 0x2f])],
    open(5, '/echo', who('read', { tenant: '*', expiresAt: 0n })),
  ))
  const errors = takeFrames(ws).map((f) => [f.stream, f.error.code, f.error.message])
  assert.deepEqual(errors, [
    [0, 400, 'stream 0 is the session; it cannot be opened'],
    [1, 404, 'no service at "/nope" (try /rpc or /echo)'],
    [2, 403, 'identity is for tenant "other", not "t"'],
    [3, 403, "the caller's token has expired"],
    [4, 400, 'bad open frame: truncated: needed 5 bytes, had 3'],
  ])
  assert.deepEqual(events, [['open', 5, '/echo', 'alice']])
})

test('a malformed frame gets a session error after the replies before it; the rest of the message is skipped, the socket kept', async () => {
  const { ctx, server, events } = setup()
  const ws = connect(server, ctx)
  const good = msg(open(1, '/echo'), textFrame(1, 'ok'))
  const bad = new Uint8Array([...good, 2, 9, 0, 0, 0, 1, 0, 0, 0, 0, ...msg(textFrame(1, 'skipped')).subarray(1)])
  await deliver(server, ws, bad)
  const frames = takeFrames(ws)
  assert.deepEqual(frames.map((f) => [f.kind, f.stream]), [['Text', 1], ['Error', 0]])
  assert.deepEqual(frames[1].error, { code: 400, message: 'bad frame: reserved flags byte is 0x09, must be 0' })
  assert.deepEqual(events.map((e) => e[0]), ['open', 'message'])
  assert.equal(ws.closed, null, 'never closes the socket')

  await deliver(server, ws, new Uint8Array(0))
  await deliver(server, ws, new Uint8Array([1, 2, 0, 0, 0, 0, 1]))
  await deliver(server, ws, 'ping me') // a text message is decoded as bytes
  const errs = takeFrames(ws).map((f) => [f.stream, f.error.code, f.error.message])
  assert.deepEqual(errs, [
    [0, 400, 'bad message (0 bytes, starting ): empty message'],
    [0, 400, 'bad message (7 bytes, starting 01 02 00 00 00 00 01): unsupported protocol version 1 (this side speaks 3)'],
    [0, 400, 'bad message (7 bytes, starting 70 69 6e 67 20 6d 65): unsupported protocol version 112 (this side speaks 3)'],
  ])
  await deliver(server, ws, msg(textFrame(1, 'still here')))
  assert.equal(takeFrames(ws)[0].text, 'still here')
})

test('Ping is answered with a Pong of the same payload on the same stream; Pong, Response and Error are ignored', async () => {
  const { ctx, server } = setup()
  const ws = connect(server, ctx)
  await deliver(server, ws, msg(
    ping(0, new Uint8Array([2, 0, 0, 0, 0, 0, 0, 0, 42])),
    ping(5, bytes('any')),
    [FrameKind.Pong, 0, bytes('x')],
    [FrameKind.Response, 3, new Uint8Array([0, 200, 0, 0])],
    [FrameKind.Error, 0, new Uint8Array([1, 144])],
  ))
  const frames = takeFrames(ws)
  assert.deepEqual(frames.map((f) => [f.kind, f.stream, toHex(f.payload)]), [
    ['Pong', 0, '02000000000000002a'],
    ['Pong', 5, toHex(bytes('any'))],
  ])
})

test('the barrier: replies owed before a Ping go out before its Pong, also when handlers are async', async () => {
  let release
  const { ctx, server, events } = setup({
    handlers: {
      onMessage(client, data) {
        events.push(['message', client.stream, data])
        if (data === 'slow') {
          return new Promise((r) => { release = r }).then(() => client.send('slow done'))
        }
        client.send(`re: ${data}`)
      },
      onRequest() {
        return new Promise((r) => setTimeout(() => r({ status: 200, body: 'late answer' }), 10))
      },
    },
  })
  const ws = connect(server, ctx)
  // In one message: the reply to the frame before the Ping precedes the Pong.
  await deliver(server, ws, msg(open(1), textFrame(1, 'a'), barrier(), textFrame(1, 'b')))
  assert.deepEqual(takeFrames(ws).map((f) => f.kind + (f.text ? `:${f.text}` : '')), ['Text:re: a', 'Pong', 'Text:re: b'])

  // Across messages: a later message (with the Ping) waits for the earlier one's handler.
  const first = server.webSocketMessage(ws, msg(textFrame(1, 'slow'), request(9, '')).buffer)
  const second = server.webSocketMessage(ws, msg(barrier(8), textFrame(1, 'after')).buffer)
  assert.ok(first instanceof Promise && second instanceof Promise)
  await settle()
  assert.deepEqual(takeFrames(ws), [], 'nothing overtakes the pending handler')
  assert.ok(!events.some((e) => e[2] === 'after'), 'the later message has not been handled yet')
  release()
  await first
  await second
  await settle()
  const order = takeFrames(ws).map((f) => f.kind + (f.text ? `:${f.text}` : '') + (f.response ? `:${f.response.text}` : ''))
  assert.deepEqual(order, ['Text:slow done', 'Response:late answer', 'Pong', 'Text:re: after'])
})

test('replies are batched: everything sent during one message leaves in as few messages as the 256 KiB bound allows', async () => {
  const { ctx, server } = setup()
  const ws = connect(server, ctx)
  const opens = Array.from({ length: 8 }, (_, i) => open(i + 1, '/echo'))
  await deliver(server, ws, msg(...opens))
  takeMessages(ws)
  const echoes = Array.from({ length: 8 }, (_, i) => binFrame(i + 1, new Uint8Array(100 * 1024).fill(i + 1)))
  await deliver(server, ws, msg(...echoes))
  const sizes = ws.sent.map((m) => m.byteLength)
  const messages = takeMessages(ws)
  assert.equal(messages.length, 4, `${sizes}`)
  assert.ok(sizes.every((n) => n <= 256 * 1024), `${sizes}`)
  assert.deepEqual(messages.flat().map((f) => [f.stream, f.payload.byteLength, f.payload[0]]), Array.from({ length: 8 }, (_, i) => [i + 1, 100 * 1024, i + 1]), 'every echo once, in order')

  // Small replies to many streams share one message.
  await deliver(server, ws, msg(...Array.from({ length: 8 }, (_, i) => textFrame(i + 1, `m${i}`))))
  assert.equal(takeMessages(ws).length, 1)

  // A frame above the bound travels alone; one above what a message may carry becomes an Error.
  await deliver(server, ws, msg(textFrame(1, 'a'), binFrame(2, new Uint8Array(300 * 1024)), textFrame(3, 'c')))
  assert.deepEqual(takeMessages(ws).map((m) => m.map((f) => f.stream)), [[1], [2], [3]])
})

test('a single reply larger than a message may carry becomes Error 500 for its stream, which ends', async () => {
  const { ctx, server, events } = setup({
    handlers: {
      onMessage(client, data) {
        if (data === 'huge') client.send(new Uint8Array(32 * 1024 * 1024))
        else client.send('small')
      },
    },
  })
  const ws = connect(server, ctx)
  await deliver(server, ws, msg(open(1), open(2), textFrame(1, 'huge'), textFrame(2, 'x')))
  const frames = takeFrames(ws)
  assert.deepEqual(frames.map((f) => [f.kind, f.stream]), [['Error', 1], ['Text', 2]])
  assert.deepEqual(frames[0].error, { code: 500, message: 'the reply of 33554432 bytes is larger than a message may carry' })
  assert.deepEqual(events.at(-1), ['close', 1, 1011, 'refused by the backend', false])
  assert.deepEqual(server.clients().map((c) => c.stream), [2])
})

test('a session holds at most 10,000 streams; re-opening a held id is still allowed', async () => {
  const { ctx, server } = setup({ handlers: { onOpen() {} } })
  const ws = connect(server, ctx)
  const opens = Array.from({ length: MAX_SESSION_STREAMS + 1 }, (_, i) => open(i + 1, '/echo'))
  await deliver(server, ws, msg(...opens))
  const frames = takeFrames(ws)
  assert.equal(frames.length, 1)
  assert.deepEqual([frames[0].stream, frames[0].error.code, frames[0].error.message], [MAX_SESSION_STREAMS + 1, 503, 'too many streams on this session (limit 10000)'])
  await deliver(server, ws, msg(open(5, '/rpc')))
  assert.deepEqual(takeFrames(ws), [], 'a held id may be opened again')
  assert.equal(server.stats().streams, MAX_SESSION_STREAMS)
  // A second socket has a table of its own.
  const ws2 = connect(server, ctx)
  await deliver(server, ws2, msg(open(1)))
  assert.deepEqual(takeFrames(ws2), [])
})

test('a second Open of a held id replaces it: the old client closes, a new one opens', async () => {
  const { ctx, server, events } = setup()
  const ws = connect(server, ctx)
  await deliver(server, ws, msg(open(1, '/echo'), open(1, '/rpc', who('admin'))))
  assert.deepEqual(events, [['open', 1, '/echo', 'alice'], ['close', 1, 1000, 'replaced by a new Open', true], ['open', 1, '/rpc', 'alice']])
  assert.equal(server.clients()[0].identity.scopes, 'admin')
})

test('data for a caller whose token has expired gets 401 and ends the stream', async () => {
  const { ctx, server, events, clock } = setup()
  const ws = connect(server, ctx)
  await deliver(server, ws, msg(open(1, '/echo', who('read', { expiresAt: 1_000_000_010n }))))
  clock.ms = 1_000_000_009_999
  await deliver(server, ws, msg(textFrame(1, 'in time')))
  assert.equal(takeFrames(ws)[0].text, 'in time')
  clock.ms = 1_000_000_010_000
  await deliver(server, ws, msg(textFrame(1, 'too late'), textFrame(1, 'and again')))
  const frames = takeFrames(ws).map((f) => [f.stream, f.error.code, f.error.message])
  assert.deepEqual(frames, [[1, 401, "the caller's token has expired"], [1, 404, 'unknown stream 1']])
  assert.deepEqual(events.at(-1), ['close', 1, 1008, 'refused by the backend: not allowed', false])
})

test('onOpen that throws refuses the stream with Error 500; handler errors go to onError', async () => {
  const { ctx, server, events } = setup({
    handlers: {
      onOpen(client) {
        if (client.stream === 1) throw new Error('no room')
      },
      onMessage() {
        throw new Error('bad handler')
      },
    },
  })
  const ws = connect(server, ctx)
  await deliver(server, ws, msg(open(1), open(2), textFrame(2, 'x'), barrier()))
  const frames = takeFrames(ws)
  assert.deepEqual(frames.map((f) => [f.kind, f.stream, f.error?.code]), [['Error', 1, 500], ['Pong', 0, undefined]])
  assert.deepEqual(events.filter((e) => e[0] === 'error').map((e) => e.slice(1)), [['onOpen', 'no room'], ['onMessage', 'bad handler']])
  assert.deepEqual(server.clients().map((c) => c.stream), [2])
})

test('broadcast reaches every open, unexpired client stream on every mux socket, one message per socket', async () => {
  const { ctx, server, clock } = setup({ handlers: { onMessage() {} } })
  const a = connect(server, ctx)
  const b = connect(server, ctx)
  await deliver(server, a, msg(open(1), open(2, '/echo'), open(3, '/rpc', who('read', { expiresAt: 1_000_000_005n }))))
  await deliver(server, b, msg(open(1), open(9)))
  clock.ms = 1_000_000_006_000
  assert.equal(server.broadcast('hello'), 4, 'the expired caller is skipped')
  await settle()
  const ma = takeMessages(a)
  const mb = takeMessages(b)
  assert.equal(ma.length, 1)
  assert.equal(mb.length, 1)
  assert.deepEqual(ma[0].map((f) => [f.stream, f.text]), [[1, 'hello'], [2, 'hello']])
  assert.deepEqual(mb[0].map((f) => [f.stream, f.text]), [[1, 'hello'], [9, 'hello']])
  assert.equal(server.broadcast(new Uint8Array([7]), (c) => c.service === '/echo'), 1)
  await settle()
  assert.deepEqual(takeFrames(a).map((f) => [f.kind, f.stream]), [['Binary', 2]])
  assert.deepEqual(takeFrames(b), [])
  assert.deepEqual(server.stats(), { sockets: 2, streams: 5, detached: 0, sessions: { resumed: 0, expired: 0, replayed: 0, duplicates: 0, rowsWritten: 0 } })
})

test('a push during a message is ordered with its replies: a broadcast precedes the reply of the call that made it', async () => {
  const { ctx, server } = setup({
    handlers: {
      onMessage(client, data) {
        server.broadcast(`note: ${data}`)
        client.send(`done: ${data}`)
      },
    },
  })
  const a = connect(server, ctx)
  const b = connect(server, ctx)
  await deliver(server, b, msg(open(4)))
  await deliver(server, a, msg(open(1), textFrame(1, 'x')))
  assert.deepEqual(takeMessages(a).map((m) => m.map((f) => f.text)), [['note: x', 'done: x']])
  assert.deepEqual(takeMessages(b).map((m) => m.map((f) => f.text)), [['note: x']])
})

test('a closed or failed mux socket closes all its clients and forgets its storage; the close is reciprocated', async () => {
  const { ctx, server, events } = setup()
  const ws = connect(server, ctx)
  const socket = ws.deserializeAttachment().socket
  await deliver(server, ws, msg(open(1), open(2)))
  events.length = 0
  assert.equal(server.webSocketClose(ws, 1005, '', true), true)
  assert.deepEqual(ws.closed, { code: 1000, reason: '' })
  assert.deepEqual(events, [['close', 1, 1006, 'upstream lost', false], ['close', 2, 1006, 'upstream lost', false]])
  assert.deepEqual(ctx.storage.kv.keys(`mux/${socket}`), [])
  assert.equal(server.webSocketClose(ws, 1000, '', true), true, 'a second close is harmless')

  const ws2 = connect(server, ctx)
  await deliver(server, ws2, msg(open(1)))
  assert.equal(server.webSocketError(ws2, new Error('x')), true)
  assert.deepEqual(ws2.closed, { code: 1011, reason: 'socket error' })
  assert.deepEqual(events.slice(2), [['open', 1, '/rpc', 'alice'], ['close', 1, 1006, 'upstream lost', false]])
})

test('storage of sockets that died without a close event is swept at the next accept', async () => {
  const { ctx, server, events } = setup()
  const ws = connect(server, ctx)
  const socket = ws.deserializeAttachment().socket
  await deliver(server, ws, msg(open(1), open(2)))
  ctx.hibernate()
  ctx.vanish(ctx.accepted[0].ws)
  const fresh = setup({ ctx })
  connect(fresh.server, ctx)
  assert.deepEqual(ctx.storage.kv.keys(`mux/${socket}`), [])
  assert.deepEqual(fresh.events, [['close', 1, 1006, 'upstream lost', false], ['close', 2, 1006, 'upstream lost', false]])
  assert.equal(events.length, 2, 'the old instance saw only the opens')
})

test('the HTTP fallback: POST with X-Snippet-Identity reaches onRequest; without it the caller is the operator', async () => {
  const seen = []
  const { server } = setup({
    handlers: {
      onRequest(req) {
        seen.push(req)
        return { status: 200, contentType: 'application/json', body: JSON.stringify({ path: req.path }) }
      },
    },
  })
  const post = (headers, url = 'https://b.example/db/t/rpc') => server.fetch(new Request(url, { method: 'POST', headers, body: '{"x":1}' }))
  let res = await post({ Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json', 'X-Snippet-Identity': identityToHex(who('read')) })
  assert.equal(res.status, 200)
  assert.equal(res.headers.get('Content-Type'), 'application/json')
  assert.deepEqual(await res.json(), { path: '/rpc' })
  assert.deepEqual(seen[0].identity, { subject: 'alice', tenant: 't', scopes: 'read', expiresAt: 2_000_000_000 })
  assert.equal(new TextDecoder().decode(seen[0].body), '{"x":1}')
  res = await post({ Authorization: `Bearer ${TOKEN}` }, 'https://b.example/db/t/query')
  assert.deepEqual(seen[1].identity, { subject: 'operator', tenant: '*', scopes: 'admin', expiresAt: 0 })
  assert.equal(seen[1].path, '/query')
  res = await post({ Authorization: `Bearer ${TOKEN}`, 'X-Snippet-Identity': identityToHex(who('read')).toUpperCase() })
  assert.equal(res.status, 400)
  assert.deepEqual(await res.json(), { error: 'bad X-Snippet-Identity header: not lowercase hex' })
  res = await post({ Authorization: `Bearer ${TOKEN}`, 'X-Snippet-Identity': identityToHex(who('read', { tenant: 'u' })) })
  assert.equal(res.status, 403)
  res = await post({})
  assert.equal(res.status, 401)
  assert.equal(seen.length, 2)
})
