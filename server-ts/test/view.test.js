// The operator's view (view.js, metrics.js) where the session vectors do not reach: the
// application's refusals, the stream limit, and the bound on the sockets listed. The
// vectors (session.test.js) pin every other figure, and the text, to the Rust crate's.

import { test } from 'node:test'
import assert from 'node:assert/strict'

import { MAX_LISTED_SOCKETS, METRICS_CONTENT_TYPE } from '../src/index.js'
import { connect, deliver, msg, open, setup, textFrame } from './fakes.js'

test("the view counts the application's refusals and the stream limit", async () => {
  const { ctx, server } = setup({
    handlers: { onOpen(client) { if (client.stream === 1) throw new Error('no room') } },
    options: { maxStreams: 2 },
  })
  const ws = connect(server, ctx)
  await deliver(server, ws, msg(open(1), open(2), open(3), open(4), textFrame(2, 'x')))
  const v = server.view()
  assert.equal(v.tenant, 't')
  assert.deepEqual([v.upstreams, v.streams], [1, 2])
  assert.deepEqual(v.totals.refused, { malformed: 0, service: 0, admission: 0, limit: 1, app: 1, expired: 0, request: 0 })
  assert.deepEqual([v.totals.opened, v.totals.messagesIn, v.totals.framesIn, v.totals.errors], [2, 1, 5, 2])
  assert.deepEqual(v.sockets.map((s) => [s.streams, s.messagesIn, s.messagesOut, s.handingOver]), [[2, 1, 1, false]])
  assert.match(server.metrics(), /^snippet_proxy_object_refusals_total\{tenant="t",reason="limit"\} 1$/m)
  assert.equal(METRICS_CONTENT_TYPE, 'text/plain; version=0.0.4')
})

test('the view lists the sockets with the most streams first, at most MAX_LISTED_SOCKETS', async () => {
  const { ctx, server } = setup()
  const sockets = []
  for (let i = 0; i < MAX_LISTED_SOCKETS + 2; i++) sockets.push(connect(server, ctx))
  await deliver(server, sockets.at(-1), msg(open(1), open(2)))
  await deliver(server, sockets[3], msg(open(1)))
  const v = server.view()
  assert.deepEqual([v.upstreams, v.streams, v.sockets.length], [MAX_LISTED_SOCKETS + 2, 3, MAX_LISTED_SOCKETS])
  assert.deepEqual(v.sockets.slice(0, 2).map((s) => s.streams), [2, 1])
  const rest = v.sockets.slice(2).map((s) => s.socket)
  assert.deepEqual(rest, [...rest].sort(), 'then by id')
  assert.equal(v.totals.socketsAccepted, MAX_LISTED_SOCKETS + 2)
})
