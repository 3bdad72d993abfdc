// The chaos driver: writers and listeners of the project's own client library, through
// two snippet isolates, while the test around it breaks things (a snippet killed and
// started again, the backend restarted, the backend frozen) and this driver cuts one
// client's connection silently itself. It prints one JSON report on stdout; the Rust test
// (test-client/tests/e2e/chaos.rs) asserts on it, and `./x chaos` repeats it for minutes.
//
//   node test-client/js/chaos.mjs '<json options>'
//
// Options: { urls: [ws base of snippet A, of snippet B], token, tenant, writers,
// listeners, publishEveryMs, writeEveryMs, cycles, cycleMs, silentAtMs, settleMs,
// callTimeoutMs, heartbeatMs, heartbeatTimeoutMs }: the load runs `cycles` × `cycleMs`,
// and the relayed client is cut `silentAtMs` into each cycle. Writers and listeners alternate
// between the two snippets; the publisher is on B, the silently cut client on A.

import net from 'node:net'
import WebSocket from 'ws'
import { SnippetProxyClient, RpcError } from '../../client/snippet-proxy-client.js'

const o = JSON.parse(process.argv[2] ?? '{}')
const start = Date.now()
const since = () => Date.now() - start
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const log = (...a) => process.stderr.write(`[chaos ${(since() / 1000).toFixed(1)}s] ${a.join(' ')}\n`)

// Heal times: from a client's socket ending to its session's next Welcome.
const heals = []
const lostSessions = []

/** The same run without resumption: a plain WebSocket client of the raw echo service
 * (no session) that sends a numbered message every `everyMs` and reconnects when its
 * socket ends. Its heal is from the drop to its first echo on the new socket; what it
 * had in flight when the socket ended is lost (counted). */
function plain(base, everyMs) {
  const r = { heals: [], lost: 0, echoed: 0 }
  let ws, downAt = null, inFlight = new Set(), n = 0, stopped = false
  const open = () => {
    ws = new WebSocket(`${base}/db/${o.tenant}/ws/echo`, { headers: { Authorization: `Bearer ${o.token}` } })
    ws.on('message', (d) => {
      inFlight.delete(String(d))
      r.echoed++
      if (downAt !== null) { r.heals.push(Date.now() - downAt); downAt = null }
    })
    ws.on('close', () => {
      r.lost += inFlight.size
      inFlight = new Set()
      downAt ??= Date.now()
      if (!stopped) setTimeout(open, 100)
    })
    ws.on('error', () => {})
  }
  open()
  const timer = setInterval(() => {
    if (ws.readyState !== WebSocket.OPEN) return
    const m = `plain-${n++}`
    inFlight.add(m)
    ws.send(m)
  }, everyMs)
  r.stop = () => { stopped = true; clearInterval(timer); ws.close() }
  return r
}

function client(name, base) {
  const c = new SnippetProxyClient(`${base}/db/${o.tenant}/ws`, {
    token: o.token,
    WebSocket,
    window: null,
    document: null,
    callTimeoutMs: o.callTimeoutMs,
    heartbeatMs: o.heartbeatMs,
    heartbeatTimeoutMs: o.heartbeatTimeoutMs,
    backoff: { initialMs: 100, maxMs: 2000 },
  })
  let downAt = null
  c.on('close', () => { downAt ??= Date.now() })
  c.on('session', ({ recovered, first, lost }) => {
    if (!recovered) lostSessions.push({ name, lost, at: since() })
    if (downAt !== null && !first) heals.push(Date.now() - downAt)
    downAt = null
  })
  c.on('state', ({ state, reason }) => state === 'failed' && log(name, 'failed:', reason))
  return c
}

/** A TCP relay whose open connections can be frozen: the client's socket then hangs with
 * no close and no error, as after a network drop nobody noticed. */
function relay(target) {
  const url = new URL(target)
  const live = new Set()
  let frozen = false
  const server = net.createServer((down) => {
    const up = net.connect(Number(url.port), url.hostname)
    const pair = { down, up }
    live.add(pair)
    down.on('data', (d) => frozen || up.write(d))
    up.on('data', (d) => frozen || down.write(d))
    const end = () => { live.delete(pair); down.destroy(); up.destroy() }
    down.on('error', end); up.on('error', end); down.on('close', end); up.on('close', end)
  })
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({
    base: `ws://127.0.0.1:${server.address().port}`,
    // Freezes the connections open now; new ones pass again.
    cut() {
      const stuck = [...live]
      for (const p of stuck) { p.down.removeAllListeners('data'); p.up.removeAllListeners('data'); live.delete(p) }
      frozen = false
      return stuck.length
    },
    close() { server.close(); for (const p of live) { p.down.destroy(); p.up.destroy() } },
  })))
}

async function main() {
  const [a, b] = o.urls
  const cutRelay = await relay(a)
  const admin = client('setup', b)
  await admin.ready()
  await admin.call('sql', { sql: 'create table if not exists chaos (id text, writer integer)' })

  const listeners = Array.from({ length: o.listeners }, (_, i) => {
    // The last listener goes through the relay that will be cut.
    const base = i === o.listeners - 1 ? cutRelay.base : (i % 2 ? b : a)
    const c = client(`listener-${i}`, base)
    const got = []
    c.on('message', ({ method, params }) => method === 'broadcast' && got.push(params.message.seq))
    return { c, got }
  })
  const publisher = client('publisher', b)
  const writers = Array.from({ length: o.writers }, (_, i) => ({ c: client(`writer-${i}`, i % 2 ? b : a), i }))
  // Without sessions, on the isolate that is killed: what the same failures cost them.
  const plains = Array.from({ length: o.plainClients ?? 4 }, () => plain(a, 50))
  await Promise.all([...listeners.map((l) => l.c.ready()), publisher.ready(), ...writers.map((w) => w.c.ready())])
  log('all clients open')

  const calls = { ok: 0, refused: 0, unknown: 0, late: 0, slowestMs: 0 }
  const written = []
  const outcome = async (p, timeout) => {
    const t0 = Date.now()
    try {
      const r = await p
      calls.ok++
      return r
    } catch (e) {
      if (e instanceof RpcError) calls.refused++
      else { calls.unknown++; log('unknown outcome:', e.name, e.message) }
      return undefined
    } finally {
      const took = Date.now() - t0
      calls.slowestMs = Math.max(calls.slowestMs, took)
      if (took > timeout + 1000) calls.late++ // a call that hung past its own timeout
    }
  }

  let running = true
  let published = 0
  const publishing = (async () => {
    for (let seq = 1; running; seq++) {
      const r = await outcome(publisher.call('broadcast', { message: { seq } }), o.callTimeoutMs)
      if (r !== undefined) published = seq
      else break // an unknown outcome would leave a hole the listeners cannot judge
      await sleep(o.publishEveryMs)
    }
  })()
  const writing = writers.map(async ({ c, i }) => {
    for (let n = 0; running; n++) {
      const id = `w${i}-${n}`
      const r = await outcome(c.call('sql', { sql: 'insert into chaos (id, writer) values (?, ?)', params: [id, i] }), o.callTimeoutMs)
      if (r !== undefined) written.push(id)
      await sleep(o.writeEveryMs)
    }
  })
  for (let cycle = 0; cycle < o.cycles; cycle++) {
    await sleep(o.silentAtMs)
    log('cutting the relayed client silently:', cutRelay.cut(), 'connection(s)')
    await sleep(o.cycleMs - o.silentAtMs)
  }
  running = false
  await Promise.all([publishing, ...writing])
  log('load stopped; published', published, 'wrote', written.length)

  // Every listener must come to hold exactly 1..published, in order.
  const deadline = Date.now() + o.settleMs
  while (Date.now() < deadline && listeners.some((l) => l.got.length < published)) await sleep(100)
  const listenerFaults = []
  listeners.forEach(({ got }, i) => {
    const want = Array.from({ length: published }, (_, k) => k + 1)
    const extra = got.slice(published)
    if (got.length < published || got.slice(0, published).some((s, k) => s !== want[k]) || extra.some((s) => s <= published)) {
      listenerFaults.push({ listener: i, got: got.length, firstWrong: got.findIndex((s, k) => s !== k + 1) })
    }
  })

  const rows = await admin.call('sql', { sql: 'select id, count(*) as n from chaos group by id' })
  const counts = new Map(rows.rows.map(([id, n]) => [id, n]))
  const missing = written.filter((id) => !counts.has(id))
  const twice = [...counts].filter(([, n]) => n > 1).map(([id]) => id)

  for (const c of [admin, publisher, ...listeners.map((l) => l.c), ...writers.map((w) => w.c)]) c.close()
  for (const p of plains) p.stop()
  const plainHeals = plains.flatMap((p) => p.heals).sort((x, y) => x - y)
  cutRelay.close()
  heals.sort((x, y) => x - y)
  const at = (v, q) => v.length ? v[Math.min(v.length - 1, Math.floor(q * (v.length - 1)))] : null
  const pct = (q) => at(heals, q)
  process.stdout.write(JSON.stringify({
    published, written: written.length, missing, twice, listenerFaults, calls, lostSessions,
    heals: heals.length, healP50Ms: pct(0.5), healP99Ms: pct(0.99),
    plain: { clients: plains.length, echoed: plains.reduce((t, p) => t + p.echoed, 0), lostInFlight: plains.reduce((t, p) => t + p.lost, 0),
      heals: plainHeals.length, healP50Ms: at(plainHeals, 0.5), healP99Ms: at(plainHeals, 0.99) },
  }) + '\n')
}

main().then(() => process.exit(0), (e) => { log('driver failed:', e?.stack ?? e); process.exit(1) })
