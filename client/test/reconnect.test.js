// Backoff, tokens, close codes and the diagnosis of a refused upgrade.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { ClosedError } from '../snippet-proxy-client.js'
import { setup, opened, settle } from './fakes.js'

const tokenOf = (url) => new URL(url).searchParams.get('access_token')
const facts = JSON.parse(readFileSync(new URL('../../protocol/vectors/facts.json', import.meta.url), 'utf8'))

/** Drops the open socket with `code` and returns the wait before the next attempt. */
async function dropAndMeasure(t, code = 1012) {
  t.last().drop(code, 'upstream lost')
  await settle()
  return t.clock.nextDue()
}

test('backoff is full jitter: random(0, min(maxMs, initialMs * factor^attempt))', async () => {
  const t = await opened({ backoff: { initialMs: 100, maxMs: 1000, factor: 2 } })
  // At the top of each range the waits are the caps: 100, 200, 400, 800, then maxMs.
  t.clock.rnd = 0.9999
  for (const cap of [100, 200, 400, 800, 1000, 1000]) {
    const n = t.sockets.length
    const wait = await dropAndMeasure(t)
    assert.equal(wait, Math.floor(0.9999 * cap))
    await t.clock.advance(wait - 1)
    assert.equal(t.sockets.length, n, 'no attempt before the wait is over')
    await t.clock.advance(1)
    assert.equal(t.sockets.length, n + 1, 'one attempt when it is over')
    t.last().accept()
  }
  // The bottom of the range is 0, not half the cap: clients that dropped together spread out.
  t.clock.rnd = 0
  assert.equal(await dropAndMeasure(t), 0)
  t.clock.rnd = 0.5
  await t.clock.advance(0)
  t.last().accept()
  assert.equal(await dropAndMeasure(t), 500)
})

test('the attempt count resets only after a connection stayed open for stableMs', async () => {
  const t = await opened({ backoff: { initialMs: 100, maxMs: 100000, factor: 2, stableMs: 5000 } })
  t.clock.rnd = 0.9999
  for (const cap of [100, 200, 400]) {
    assert.equal(await dropAndMeasure(t), Math.floor(0.9999 * cap))
    await t.clock.advance(cap)
    t.last().accept()
  }
  await t.clock.advance(4999) // open, but not long enough to count as stable
  assert.equal(await dropAndMeasure(t), Math.floor(0.9999 * 800))
  await t.clock.advance(800)
  t.last().accept()
  await t.clock.advance(5000)
  assert.equal(await dropAndMeasure(t), Math.floor(0.9999 * 100), 'back to initialMs')
})

test('the token provider is called before every attempt and each attempt carries its fresh token', async () => {
  let n = 0
  const t = setup({ token: async () => `tok-${++n}`, respond: () => ({ status: 426, body: {} }) })
  t.clock.rnd = 0
  await t.clock.advance(0)
  t.last().accept()
  t.last().drop(1012) // after open: backoff
  await t.clock.advance(0)
  t.last().drop(1006) // before open: diagnosed (426), then backoff
  await t.clock.advance(0)
  t.last().accept()
  t.last().drop(1008, 'token expired') // at once
  await t.clock.advance(0)
  assert.equal(n, 4)
  assert.deepEqual(t.sockets.map((s) => tokenOf(s.url)), ['tok-1', 'tok-2', 'tok-3', 'tok-4'])
  // The diagnosis asked the URL of the attempt that failed, its token included, over https.
  assert.equal(t.fetchUrls.length, 1)
  assert.equal(t.fetchUrls[0], t.sockets[1].url.replace(/^wss:/, 'https:'))
  assert.equal(tokenOf(t.fetchUrls[0]), 'tok-2')
})

test('the token goes in access_token beside the query already there; a string token works', async () => {
  const t = setup({ token: 'a b+c' }, 'ws://127.0.0.1:8787/db/t1/ws?x=1')
  await t.clock.advance(0)
  const u = new URL(t.last().url)
  assert.equal(u.searchParams.get('x'), '1')
  assert.equal(u.searchParams.get('access_token'), 'a b+c')
  assert.equal(u.pathname, '/db/t1/ws')
})

test('without a token provider the client still connects, and the refusal says why', async () => {
  const t = setup({ respond: () => ({ status: 401, body: { error: 'a bearer token is required', requestId: 'r9' } }) })
  await t.clock.advance(0)
  assert.equal(tokenOf(t.last().url), null)
  t.last().drop(1006)
  await t.clock.advance(0)
  assert.equal(t.client.state, 'failed')
  assert.equal(t.of('state').at(-1).reason, 'unauthorized: a bearer token is required (request r9)')
})

test('a token provider that throws is reported, and the attempt is retried with a new call', async () => {
  let n = 0
  const t = setup({
    token: async () => {
      if (++n === 1) throw new Error('identity provider down')
      return 'tok'
    },
  })
  t.clock.rnd = 0.9999
  await t.clock.advance(0)
  assert.equal(t.of('error')[0].error.message, 'identity provider down')
  assert.equal(t.sockets.length, 0, 'no socket without a token')
  assert.equal(t.client.state, 'reconnecting')
  assert.equal(t.of('state').at(-1).reason, 'token provider failed: identity provider down')
  await t.clock.advance(249)
  assert.equal(n, 2)
  assert.equal(tokenOf(t.last().url), 'tok')
})

test('close codes: 1000, 1001, 1006, 1011, 1012, 1013 after open are retried with backoff', async () => {
  for (const code of [1000, 1001, 1006, 1011, 1012, 1013]) {
    const t = await opened()
    t.clock.rnd = 0.9999
    t.last().drop(code, 'bye')
    await settle()
    assert.equal(t.client.state, 'reconnecting', `code ${code}`)
    assert.deepEqual(t.of('close').at(-1), { type: 'close', code, reason: 'bye', willRetry: true })
    assert.equal(t.fetchUrls.length, 0, 'a connection that had opened is not diagnosed')
    await t.clock.advance(249)
    assert.equal(t.sockets.length, 2, `code ${code} retried within initialMs`)
  }
})

test('close 1008 "token expired" reconnects at once; any other 1008 fails for good', async () => {
  let n = 0
  const t = await opened({ token: () => `tok-${++n}` })
  t.clock.rnd = 0.9999
  t.last().drop(1008, 'token expired')
  await t.clock.advance(0)
  assert.equal(t.sockets.length, 2, 'no wait')
  assert.equal(tokenOf(t.last().url), 'tok-2')

  const u = await opened()
  u.last().drop(1008, 'rate limit exceeded (1000 messages per second)')
  await u.clock.advance(60000)
  assert.equal(u.client.state, 'failed')
  assert.equal(u.sockets.length, 1, 'never retried')
  assert.equal(u.of('state').at(-1).reason, 'refused by the server: 1008 rate limit exceeded (1000 messages per second)')
  assert.equal(u.of('close').at(-1).willRetry, false)
  await assert.rejects(u.client.ready(), (e) => e instanceof ClosedError && /rate limit/.test(e.message))
})

test('close 4000-4999 from the server fail for good (4401, and 4000 too: only our own 4000 retries)', async () => {
  for (const code of [4401, 4000, 4999]) {
    const t = await opened()
    t.last().drop(code, 'nope')
    await t.clock.advance(60000)
    assert.equal(t.client.state, 'failed', `code ${code}`)
    assert.equal(t.sockets.length, 1)
    assert.equal(t.of('state').at(-1).reason, `refused by the server: ${code} nope`)
  }
})

test('a refused upgrade (1006 before open) is diagnosed: 401, 403 and 400 fail with the server\'s reason', async () => {
  const cases = [
    [401, 'invalid token: the token has expired', 'unauthorized'],
    [403, 'the token is not for tenant room1', 'forbidden'],
    [400, facts.tenant.rule, 'bad request'],
  ]
  for (const [status, error, label] of cases) {
    const t = setup({ token: () => 'tok', respond: () => ({ status, body: { error, requestId: 'req-1' } }) })
    await t.clock.advance(0)
    const reason = `${label}: ${error} (request req-1)`
    const ready = assert.rejects(t.client.ready(), (e) => e instanceof ClosedError && e.message === reason)
    t.last().drop(1006)
    await t.clock.advance(60000)
    assert.equal(t.client.state, 'failed')
    assert.equal(t.of('state').at(-1).reason, reason)
    assert.deepEqual(t.of('close').at(-1), { type: 'close', code: 1006, reason, willRetry: false })
    assert.equal(t.sockets.length, 1, 'no retry')
    assert.equal(t.fetchUrls[0], t.sockets[0].url.replace(/^wss:/, 'https:'))
    assert.equal(tokenOf(t.fetchUrls[0]), 'tok')
    await ready
  }
})

test('a diagnosis of 426 (token accepted) or a failed fetch means transient: retry', async () => {
  for (const respond of [() => ({ status: 426, body: { error: 'expected a WebSocket upgrade' } }), () => { throw new TypeError('Failed to fetch') }]) {
    const t = setup({ respond })
    t.clock.rnd = 0.9999
    await t.clock.advance(0)
    t.last().drop(1006)
    await settle()
    assert.equal(t.client.state, 'reconnecting')
    assert.equal(t.of('close').at(-1).willRetry, true)
    assert.equal(t.clock.nextDue(), 249)
    await t.clock.advance(249)
    assert.equal(t.sockets.length, 2)
  }
})

test('503 and 429 are retried no sooner than Retry-After', async () => {
  for (const status of [503, 429]) {
    const t = setup({ respond: () => ({ status, headers: { 'Retry-After': '3' }, body: { error: 'busy', requestId: 'q' } }) })
    t.clock.rnd = 0 // the backoff alone would retry at once
    await t.clock.advance(0)
    t.last().drop(1006)
    await settle()
    assert.equal(t.client.state, 'reconnecting')
    assert.equal(t.of('state').at(-1).reason, `HTTP ${status}: busy (request q)`)
    await t.clock.advance(2999)
    assert.equal(t.sockets.length, 1)
    await t.clock.advance(1)
    assert.equal(t.sockets.length, 2)
  }
})

test('an upgrade that never opens is abandoned after connectTimeoutMs and retried', async () => {
  const t = setup({ connectTimeoutMs: 2000 })
  t.clock.rnd = 0
  await t.clock.advance(1999)
  assert.equal(t.client.state, 'connecting')
  await t.clock.advance(1)
  assert.deepEqual(t.sockets[0].closedWith, { code: 4000, reason: 'connect timeout' })
  assert.equal(t.fetchUrls.length, 0)
  await t.clock.advance(0)
  assert.equal(t.sockets.length, 2)
  // An EventEmitter-based socket (Node's `ws`) emits 'error' for a close while connecting:
  // a listener must stay, or that error would be thrown.
  assert.doesNotThrow(() => t.sockets[0].onerror(new Error('closed before the connection was established')))
  t.sockets[0].drop(4000, 'connect timeout') // the old socket's late close event changes nothing
  await settle()
  assert.equal(t.client.state, 'connecting')
})

test('a connection is open only after the backend\'s Welcome; a drop before it keeps the queue and retries', async () => {
  const t = setup()
  t.clock.rnd = 0
  await t.clock.advance(0)
  assert.equal(t.client.send('{"jsonrpc":"2.0","method":"note"}'), true, 'queued while connecting')
  // The snippet accepts the upgrade, then finds its backend down and closes with 1012.
  t.last().accept({ welcome: false })
  await settle()
  assert.equal(t.client.state, 'connecting', 'not open before the Welcome')
  assert.deepEqual(t.last().sent, [], 'nothing at all goes out before the Welcome')
  t.last().drop(1012, 'upstream lost; reconnect')
  await settle()
  assert.equal(t.client.state, 'reconnecting')
  assert.equal(t.fetchUrls.length, 0, 'an upgrade that succeeded is not diagnosed as refused')
  assert.equal(t.client.queued, 1, 'the queued message is still queued, not lost')
  // The next attempt is welcomed: the queue leaves, exactly once.
  await t.clock.advance(t.clock.nextDue())
  t.last().accept()
  await settle()
  assert.equal(t.client.state, 'open')
  assert.deepEqual(t.last().calls.map((c) => c.method), ['note'])
  assert.equal(t.client.queued, 0)
})

test('a Welcome that does not come within heartbeatTimeoutMs ends the attempt and retries', async () => {
  const t = setup({ heartbeatTimeoutMs: 3000 })
  await t.clock.advance(0)
  t.last().accept({ welcome: false })
  await t.clock.advance(2999)
  assert.equal(t.client.state, 'connecting')
  await t.clock.advance(1)
  assert.equal(t.client.state, 'reconnecting')
  assert.deepEqual(t.sockets[0].closedWith, { code: 4000, reason: 'no answer from the backend' })
})

test('a server close 1000 "session resumed on another connection" reconnects with backoff, and resumes', async () => {
  const { code, reason } = facts.session.moved
  const t = await opened()
  t.clock.rnd = 0.9999
  t.client.send('a')
  t.last().drop(code, reason)
  await settle()
  assert.equal(t.client.state, 'reconnecting')
  assert.equal(t.clock.nextDue(), 249, 'the backoff of any 1000')
  await t.clock.advance(249)
  t.last().accept()
  assert.equal(t.client.state, 'open')
  assert.deepEqual(t.of('session').at(-1), { type: 'session', recovered: true, first: false, lost: 0 })
})
