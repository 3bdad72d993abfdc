// Idle clients: N clients of the project's client library open through the snippet and
// then do nothing but their heartbeat for `idleMs`; or, with `direct`, N plain WebSockets
// straight to the object pinging its runtime auto-response (text "ping"), the platform's
// own advice for idle clients. Prints one JSON line when the idle period is over; the
// caller reads the object's wakes and message events around it (the e2e test
// `sessions::idle_clients_cost_the_object_nothing` and `test-client bench`).
//
//   node test-client/js/idle.mjs '{"url": "...", "token": "...", "clients": 50,
//                                  "idleMs": 30000, "heartbeatMs": 5000, "direct": false}'
// It prints {"open": N} once every client is open (the caller starts its clock then),
// then {"idleFor": ms, "pongs": n, "closes": n} and exits.

import WebSocket from 'ws'
import { SnippetProxyClient } from '../../client/snippet-proxy-client.js'

const o = JSON.parse(process.argv[2] ?? '{}')
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
let pongs = 0
let closes = 0

async function library() {
  const clients = Array.from({ length: o.clients }, () => {
    const c = new SnippetProxyClient(o.url, {
      token: o.token, WebSocket, window: null, document: null,
      heartbeatMs: o.heartbeatMs, heartbeatTimeoutMs: Math.max(2000, o.heartbeatMs),
    })
    c.on('rtt', () => pongs++)
    c.on('close', () => closes++)
    return c
  })
  await Promise.all(clients.map((c) => c.ready()))
  return () => clients.forEach((c) => c.close())
}

async function direct() {
  const sockets = await Promise.all(Array.from({ length: o.clients }, () => new Promise((resolve, reject) => {
    const ws = new WebSocket(o.url, { headers: o.token ? { Authorization: `Bearer ${o.token}` } : {} })
    ws.on('open', () => resolve(ws))
    ws.on('error', reject)
    ws.on('message', (d, binary) => { if (!binary && String(d) === 'pong') pongs++ })
    ws.on('close', () => closes++)
  })))
  const timers = sockets.map((ws) => setInterval(() => ws.send('ping'), o.heartbeatMs))
  return () => { timers.forEach(clearInterval); sockets.forEach((ws) => ws.close(1000)) }
}

const stop = await (o.direct ? direct() : library())
process.stdout.write(JSON.stringify({ open: o.clients }) + '\n')
const t0 = Date.now()
await sleep(o.idleMs)
process.stdout.write(JSON.stringify({ idleFor: Date.now() - t0, pongs, closes }) + '\n')
stop()
await sleep(200)
process.exit(0)
