// The per-object view an operator asks for (SnippetProxyServer.view()): the snippet
// upstreams (mux sockets, one per snippet isolate, two for a moment during that isolate's
// hand-over) connected now, the streams on each, and what the server has done since this
// instance woke (Core's `counters`). The same JSON as the Rust crate's View::to_json
// (do-server/src/view.rs), pinned by the session vectors (protocol/vectors/session.json).
// It reads what the server holds anyway: nothing is counted per message beyond an integer
// and nothing is stored, so every counter starts at 0 when the instance does (`wokeAt`).

/** How long after a barrier Ping a socket counts as handing over (do-server's HANDOVER_WINDOW_MS). */
export const HANDOVER_WINDOW_MS = 30_000

/**
 * Most sockets the view lists one by one (those with the most streams first): it bounds
 * the answer and the series a scraper keeps for an object with a socket from every isolate
 * of a large fleet (do-server's MAX_LISTED_SOCKETS). The totals count every socket.
 */
export const MAX_LISTED_SOCKETS = 64

/** A fresh set of counters (Rust: `Counters`), all 0: what a new instance has done. */
export function newCounters() {
  return {
    socketsAccepted: 0,
    socketsClosed: 0,
    messagesIn: 0,
    framesIn: 0,
    messagesOut: 0,
    framesOut: 0,
    opened: 0,
    closed: 0,
    requests: 0,
    handovers: 0,
    adopted: 0,
    orphaned: 0,
    lost: 0,
    errors: 0,
    refused: { malformed: 0, service: 0, admission: 0, limit: 0, app: 0, expired: 0, request: 0 },
  }
}

/** The view of `core` at `now` (ms). */
export function objectView(core, now) {
  const live = core.liveSessions()
  const sockets = live.map((s) => {
    let sessions = 0
    for (const st of s.streams.values()) if (st.resume) sessions++
    return {
      socket: s.id,
      streams: s.streams.size,
      sessions,
      messagesIn: s.messagesIn,
      messagesOut: s.messagesOut,
      handingOver: Boolean(s.barrierAt) && now - s.barrierAt <= HANDOVER_WINDOW_MS,
    }
  })
  // Ids are fixed-width lowercase hex: their order as text is their order as numbers.
  sockets.sort((a, b) => b.streams - a.streams || (a.socket < b.socket ? -1 : a.socket > b.socket ? 1 : 0))
  const c = core.counters
  return {
    tenant: core.tenant,
    wokeAt: core.wokeAt,
    upstreams: live.length,
    streams: sockets.reduce((n, s) => n + s.streams, 0),
    detached: core.resumable.detached().length,
    orphans: core.orphans.length,
    sockets: sockets.slice(0, MAX_LISTED_SOCKETS),
    totals: { ...c, refused: { ...c.refused }, sessions: { ...core.resumable.counters } },
  }
}
