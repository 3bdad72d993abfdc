// The demo room's script, served at /demo.js: a file of its own, so the page's CSP allows
// scripts from its own origin only, with no 'unsafe-inline' and no hash to keep in step.
import { SnippetProxyClient } from '/client.js'

// Everything comes from the fragment, which the browser never sends to a server:
// #token=<jwt>&stats=<operator jwt>&tenant=<name>
const hash = new URLSearchParams(location.hash.slice(1))
const token = hash.get('token')
const statsToken = hash.get('stats')
const tenant = hash.get('tenant') || 'default'
addEventListener('hashchange', () => location.reload())

const $ = (id) => document.getElementById(id)
const el = (tag, text, { dataset, ...props } = {}) => {
  const e = Object.assign(document.createElement(tag), props)
  Object.assign(e.dataset, dataset)
  if (text != null) e.textContent = String(text) // never innerHTML: every string here may come from someone else
  return e
}
$('room').textContent = `· ${tenant}`
const NO_TOKEN = 'no token: open the URL ./x dev prints (it ends in #token=…)'
function banner(text) {
  $('banner').textContent = text || ''
  $('banner').hidden = !text
}
if (!token) banner(NO_TOKEN)

const name = $('name')
try { name.value = localStorage.getItem('demo-name') || '' } catch {}
name.value ||= `guest-${Math.floor(Math.random() * 9000 + 1000)}`
name.addEventListener('change', () => { try { localStorage.setItem('demo-name', name.value) } catch {} })

// The range of a JavaScript Date: ±8.64e15 ms around 1970. Past it `new Date(at)` is an
// invalid date, whose toISOString() throws.
const MAX_DATE_MS = 8.64e15
// A message's time, if it has one a Date can hold: none for a stored `at` of 1e20.
function time(at) {
  if (!Number.isFinite(at) || Math.abs(at) > MAX_DATE_MS) return []
  const date = new Date(at)
  return [el('time', date.toLocaleTimeString(), { dateTime: date.toISOString() })]
}

// Messages, kept in id order and shown once each: the history reload after a reconnect
// and the broadcast echo of our own message both arrive again.
const shown = new Map()
function show(message) {
  // Pushes come from any page with a publish token, stored rows from any with a write
  // token: take only well-formed messages, and show one whose time is impossible without it.
  const { id, name, body, at } = message ?? {}
  if (!Number.isSafeInteger(id) || typeof name !== 'string' || typeof body !== 'string') return
  if (shown.has(id)) return
  const li = el('li', null, { dataset: { id, body } })
  li.append(...time(at), el('span', name, { className: 'who' }), el('span', body))
  const list = $('messages')
  const atBottom = innerHeight + scrollY >= document.documentElement.scrollHeight - 40
  const after = [...shown.keys()].filter((k) => k > id).sort((a, b) => a - b)[0]
  list.insertBefore(li, after === undefined ? null : shown.get(after))
  shown.set(id, li)
  if (atBottom) li.scrollIntoView({ block: 'end' })
}
// A sql result is { columns, rows }: read rows by column name, not by position.
const records = ({ columns, rows }) => rows.map((r) => Object.fromEntries(columns.map((c, i) => [c, r[i]])))

const client = new SnippetProxyClient(`/db/${encodeURIComponent(tenant)}/ws`, {
  token: () => token, // asked before every attempt; a page that refreshes tokens would fetch one here
  heartbeatMs: 5000, // livelier RTT figures than the default 15 s
})

client.on('state', ({ state, reason }) => {
  $('state').textContent = state
  $('state').dataset.state = state
  $('why').textContent = state === 'open' ? '' : reason
  $('send').disabled = state === 'failed' || state === 'closed'
  if (state === 'open') banner('')
  if (state === 'failed') banner(`refused: ${reason}` + (token ? '' : ` — ${NO_TOKEN}`))
})
client.on('rtt', ({ rttMs }) => { $('rtt').textContent = `${rttMs} ms` })
client.on('error', ({ error }) => console.warn('snippet-proxy:', error))
client.on('message', ({ method, params }) => {
  if (method === 'broadcast' && params?.message && typeof params.message === 'object') show(params.message)
})

// When the session begins, and again if it could not be resumed (the backend was away
// longer than its resume window): otherwise the session itself replays what was said
// while we were away, and a reload would only repeat it.
client.on('session', ({ first, recovered }) => (first || !recovered) && loadHistory())
async function loadHistory() {
  try {
    await client.call('sql', { sql: 'create table if not exists demo_messages(id integer primary key autoincrement, name text not null, body text not null, at integer not null)' })
    const history = await client.call('sql', { sql: 'select id, name, body, at from demo_messages order by id desc limit 50' })
    // Row by row: one that cannot be shown must not hide the others.
    for (const message of records(history).reverse()) {
      try {
        show(message)
      } catch (e) {
        console.warn('demo: a stored message was not shown:', e)
      }
    }
  } catch (e) {
    banner(`could not load the history: ${e.message}`)
  }
}

$('form').addEventListener('submit', async (event) => {
  event.preventDefault()
  const text = $('text')
  const body = text.value.trim()
  const who = name.value.trim() || 'anon'
  if (!body) return
  text.value = ''
  let message
  try {
    // Calls made while reconnecting wait in the client's queue and go out once connected.
    const at = Date.now()
    const inserted = await client.call('sql', { sql: 'insert into demo_messages(name, body, at) values (?, ?, ?) returning id', params: [who, body, at] })
    message = { id: records(inserted)[0].id, name: who, body, at }
  } catch (e) {
    // Listed as failed, never silently dropped. A ConnectionLostError (the session could
    // not be resumed) means the insert may have happened all the same: then the history
    // load that follows shows it too.
    const li = el('li', null, { className: 'failed', dataset: { body }, title: e.message })
    li.append(el('span', who, { className: 'who' }), el('span', body), el('span', ` — not sent: ${e.message}`, { className: 'muted' }))
    $('messages').append(li)
    banner(`not sent: ${e.message}`)
    return
  }
  show(message)
  try {
    await client.call('broadcast', { message })
    banner('')
  } catch (e) {
    banner(`saved, but not pushed to the others (they see it on their next reload): ${e.message}`)
  }
})

// Operator view: this isolate's counters, every 2 s, while the tab is visible.
async function pollStats() {
  if (!document.hidden) {
    try {
      const res = await fetch('/__stats', { headers: { Authorization: `Bearer ${statsToken}` }, cache: 'no-store' })
      const s = await res.json()
      renderStats(res.ok ? s : null, res.ok ? '' : `stats: HTTP ${res.status} ${s?.error ?? ''}`)
    } catch (e) {
      renderStats(null, `stats: ${e.message}`)
    }
  }
  setTimeout(pollStats, 2000)
}
// The last minutes of this isolate, one sample per poll, for the charts.
const HISTORY_SAMPLES = 150 // 5 minutes at one poll every 2 s
const history = []
function remember(s) {
  const now = Date.now()
  const last = history.at(-1)
  const secs = last ? (now - last.at) / 1000 : 0
  // Messages proxied is a counter: the rate is its change over the poll's interval.
  const rate = last && secs > 0 ? Math.max(0, (s.messagesProxied - last.messages) / secs) : 0
  history.push({ at: now, messages: s.messagesProxied, rate, batch: Number(s.framesPerBatch) || 0,
    rtt: s.upstreamRttP50Ms ?? 0, upstreams: s.upstreamsOpen })
  if (history.length > HISTORY_SAMPLES) history.shift()
}

const SVG = 'http://www.w3.org/2000/svg'
const svg = (name, attrs) => {
  const node = document.createElementNS(SVG, name)
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v)
  return node
}
// One small line chart of `key` over the history: plain SVG, scaled to its own maximum.
function chart(title, key, unit) {
  const [w, h] = [160, 40]
  const values = history.map((p) => p[key])
  const max = Math.max(1e-9, ...values)
  // Across the whole width, however many samples there are yet (at most 5 minutes).
  const step = w / Math.max(1, values.length - 1)
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(h - 2 - (v / max) * (h - 4)).toFixed(1)}`).join(' ')
  const box = svg('svg', { viewBox: `0 0 ${w} ${h}`, width: w, height: h, role: 'img', 'aria-label': title })
  box.append(svg('polyline', { points, fill: 'none', stroke: 'currentColor', 'stroke-width': 1.5 }))
  const latest = values.at(-1) ?? 0
  const figure = el('figure', null, { className: 'chart', dataset: { chart: key, points: values.length } })
  figure.append(box, el('figcaption', `${title}: ${Number.isInteger(latest) ? latest : latest.toFixed(1)} ${unit}`))
  return figure
}

function renderStats(s, problem) {
  $('stats').hidden = false
  const box = $('stats-body')
  box.replaceChildren()
  if (!s) return box.append(el('p', problem))
  remember(s)
  const charts = el('div', null, { className: 'charts' })
  charts.append(chart('throughput', 'rate', 'msg/s'), chart('frames per batch', 'batch', ''),
    chart('upstream RTT p50', 'rtt', 'ms'), chart('upstreams', 'upstreams', ''))
  const dl = el('dl')
  for (const [label, value] of [
    ['upstreams open', s.upstreamsOpen],
    ['active clients', s.activeClients],
    ['messages proxied', s.messagesProxied],
    ['frames per batch', s.framesPerBatch],
  ]) dl.append(el('dt', label), el('dd', value, { dataset: { stat: label.replaceAll(' ', '-') } }))
  const table = el('table')
  table.append(el('tr'))
  table.rows[0].append(el('th', 'tenant'), el('th', 'connected'), el('th', 'streams'))
  for (const u of s.upstreams ?? []) {
    const tr = el('tr')
    tr.append(el('td', u.tenant), el('td', u.connected ? 'yes' : 'no'), el('td', u.streams))
    table.append(tr)
  }
  box.append(charts, dl, table)
}
if (statsToken) pollStats()
