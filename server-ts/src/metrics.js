// The object's view (view.js) in the Prometheus text exposition format, version 0.0.4,
// with the snippet's conventions (snippet/core/src/metrics.rs): every family has # HELP and
// # TYPE, counters end in _total, times are seconds. Every sample carries tenant="<name>"
// first: one object is one tenant, and a scraper that reads many objects (one request per
// object) tells their series apart by it. A counter back at 0 is the object waking again
// (snippet_proxy_object_woke_time_seconds moves with it). The same text as the Rust
// crate's View::to_prometheus (do-server/src/view/metrics.rs); the session vectors compare.

/** The Content-Type of the document. */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4'

const COUNTERS = [
  ['snippet_proxy_object_sockets_accepted_total', 'Mux sockets (snippet upstreams) accepted.', (t) => t.socketsAccepted],
  ['snippet_proxy_object_sockets_closed_total', 'Mux sockets that closed, failed or were found dead.', (t) => t.socketsClosed],
  ['snippet_proxy_object_clients_opened_total', 'Clients the application opened.', (t) => t.opened],
  ['snippet_proxy_object_clients_closed_total', 'Clients closed for the application, for any reason.', (t) => t.closed],
  ['snippet_proxy_object_requests_total', 'Requests answered, over a mux socket or as plain HTTP.', (t) => t.requests],
  ['snippet_proxy_object_handovers_total', 'Hand-overs begun: barrier pings from an isolate replacing its socket with a newer one.', (t) => t.handovers],
  ['snippet_proxy_object_adopted_total', 'Clients moved to a new socket by a hand-over.', (t) => t.adopted],
  ['snippet_proxy_object_orphaned_total', 'Clients whose socket closed mid-hand-over before their re-open.', (t) => t.orphaned],
  ['snippet_proxy_object_lost_total', 'Clients closed because their socket went and no hand-over took them.', (t) => t.lost],
  ['snippet_proxy_object_errors_total', 'Error frames sent.', (t) => t.errors],
]

const DIRECTED = [
  ['snippet_proxy_object_messages_total', 'WebSocket messages (batches of frames) on the mux sockets.', (t) => t.messagesIn, (t) => t.messagesOut],
  ['snippet_proxy_object_frames_total', 'Frames inside those messages.', (t) => t.framesIn, (t) => t.framesOut],
]

const REFUSALS = ['malformed', 'service', 'admission', 'limit', 'app', 'expired', 'request']

const SESSIONS = [
  ['snippet_proxy_object_sessions_resumed_total', 'Sessions a client came back to.', (s) => s.resumed],
  ['snippet_proxy_object_sessions_expired_total', 'Sessions nobody came back to in time.', (s) => s.expired],
  ['snippet_proxy_object_session_messages_replayed_total', 'Messages sent again to a client that came back.', (s) => s.replayed],
  ['snippet_proxy_object_session_duplicates_total', 'Client messages dropped as already taken.', (s) => s.duplicates],
  ['snippet_proxy_object_session_rows_written_total', 'Storage rows the sessions wrote or deleted.', (s) => s.rowsWritten],
]

/** A label value as the format wants it: backslash, double quote and newline escaped. */
function labelValue(v) {
  return String(v).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')
}

/** Milliseconds as seconds with three decimals, exactly. */
function seconds(ms) {
  return `${Math.floor(ms / 1000)}.${String(ms % 1000).padStart(3, '0')}`
}

/** The whole document for a view (objectView's shape). */
export function renderMetrics(v) {
  const tenant = labelValue(v.tenant)
  let out = ''
  const family = (name, kind, help) => { out += `# HELP ${name} ${help}\n# TYPE ${name} ${kind}\n` }
  const sample = (name, labels, value) => {
    out += `${name}{tenant="${tenant}"`
    for (const [k, val] of labels) out += `,${k}="${labelValue(val)}"`
    out += `} ${value}\n`
  }
  const single = (name, kind, help, value) => { family(name, kind, help); sample(name, [], value) }
  single('snippet_proxy_object_upstreams', 'gauge', 'Mux sockets connected now: one per snippet isolate.', v.upstreams)
  single('snippet_proxy_object_streams', 'gauge', 'Clients on them now.', v.streams)
  single('snippet_proxy_object_sessions_detached', 'gauge', "Sessions' clients away now, waiting to come back.", v.detached)
  single('snippet_proxy_object_orphans', 'gauge', 'Clients waiting now for their re-open after a hand-over.', v.orphans)
  single('snippet_proxy_object_woke_time_seconds', 'gauge', 'When this instance woke (seconds since the epoch); the counters start there.', seconds(v.wokeAt))
  const t = v.totals
  for (const [name, help, of] of COUNTERS) single(name, 'counter', help, of(t))
  for (const [name, help, inward, outward] of DIRECTED) {
    family(name, 'counter', help)
    sample(name, [['direction', 'in']], inward(t))
    sample(name, [['direction', 'out']], outward(t))
  }
  const refusals = 'snippet_proxy_object_refusals_total'
  family(refusals, 'counter', 'Streams refused or ended by the object, and requests refused admission, by reason.')
  for (const reason of REFUSALS) sample(refusals, [['reason', reason]], t.refused[reason])
  for (const [name, help, of] of SESSIONS) single(name, 'counter', help, of(t.sessions))
  if (v.sockets.length) {
    const streams = 'snippet_proxy_object_socket_streams'
    family(streams, 'gauge', 'Clients on one mux socket now (the sockets with the most).')
    for (const s of v.sockets) sample(streams, [['socket', s.socket]], s.streams)
    const messages = 'snippet_proxy_object_socket_messages_total'
    family(messages, 'counter', 'Messages (batches) on one mux socket since this instance knew it.')
    for (const s of v.sockets) {
      sample(messages, [['socket', s.socket], ['direction', 'in']], s.messagesIn)
      sample(messages, [['socket', s.socket], ['direction', 'out']], s.messagesOut)
    }
  }
  return out
}
