// A plain JavaScript WebSocket multiplexer of the snippet's design: the baseline of
// `test-client bench --only datapath`. None of the snippet's features (no auth, limits,
// hand-over, heartbeat or sessions); a bench control that the harness binds to 127.0.0.1.
//
// Per isolate and tenant, one upstream WebSocket to an echo Durable Object, opened lazily
// by the first client's request, which owns it. Every client WebSocket is a stream on it.
// workerd lets only the request that created a socket do I/O on it (RUNTIME.md §1), so the
// contexts share plain data only, and wake each other by resolving a promise the woken
// context made itself with Promise.withResolvers(): its reaction then runs in that context
// (§2; never new Promise(executor), which loses its context once V8 has optimised it).
//
// Batch (this file's own format, not the snippet's): frames of
// stream:u32 kind:u8 len:u32 payload, big-endian; kind 0 = text (UTF-8), 1 = binary.
// The echo object sends each batch back as it came, so every reply finds its stream.
//
// Routes: GET /ws/echo and /db/{tenant}/ws/echo (clients), GET /do/{tenant} (a tenant's
// echo object itself). Var UPSTREAM_URL, e.g. http://127.0.0.1:8790/do/{tenant}, sends the
// upstream to another instance of this Worker (as the snippet's goes to backend-do), so
// this runtime's CPU is the multiplexer's alone; unset, it goes to this Worker's object.

import { DurableObject } from "cloudflare:workers";

const TEXT = 0;
const BINARY = 1;
const HEADER = 9;
// The snippet's batch bound (protocol::facts::MAX_BATCH_BYTES).
const MAX_BATCH = 256 * 1024;
// In a stream's inbox: its upstream is gone.
const LOST = Symbol("lost");
const encoder = new TextEncoder();
const decoder = new TextDecoder();

// tenant → the upstream new clients join. Plain data, shared by every context.
const upstreams = new Map();
let nextStream = 1;

export default {
  async fetch(request, env) {
    const path = new URL(request.url).pathname;
    const object = path.match(/^\/do\/([A-Za-z0-9_.-]{1,64})$/);
    if (object) return env.ECHO.get(env.ECHO.idFromName(object[1])).fetch(request);
    const route = path.match(/^(?:\/db\/([A-Za-z0-9_.-]{1,64}))?\/ws\/echo$/);
    if (!route) return new Response("jsmux: GET /ws/echo or /db/{tenant}/ws/echo\n", { status: path === "/" ? 200 : 404 });
    if (request.headers.get("Upgrade")?.toLowerCase() !== "websocket") {
      return new Response("expected a WebSocket upgrade\n", { status: 426 });
    }
    return client(route[1] ?? "default", env);
  },
};

// Makes a fresh wake promise in the current context; `then` runs here when it resolves.
function arm(waiter, then) {
  const r = Promise.withResolvers();
  r.promise.then(then);
  waiter.wake = r;
}

// From any context: has the waiter's reaction run in its own context (once per arm).
function wake(waiter) {
  const r = waiter.wake;
  if (r) {
    waiter.wake = null;
    r.resolve();
  }
}

// A client WebSocket: a stream on its tenant's upstream, which this request opens (and
// owns) when there is none.
function client(tenant, env) {
  let up = upstreams.get(tenant);
  const stream = { id: nextStream++, inbox: [], wake: null, open: true };
  if (!up) up = open(tenant, stream.id, env);
  up.streams.set(stream.id, stream);
  const [theirs, ours] = Object.values(new WebSocketPair());
  ours.accept();
  ours.binaryType = "arraybuffer";
  arm(stream, () => deliver(stream, ours));
  ours.addEventListener("message", (e) => {
    // Queued as bytes; the owner's context sends it (this one may not touch the upstream).
    const text = typeof e.data === "string";
    up.queue.push(stream.id, text ? TEXT : BINARY, text ? encoder.encode(e.data) : new Uint8Array(e.data));
    wake(up);
  });
  const gone = () => {
    if (!stream.open) return;
    stream.open = false;
    up.streams.delete(stream.id);
    // The owner left: no new client joins this upstream (the next one opens another, in
    // its own context), and it closes once its last stream is gone. Its context lives on
    // while the upstream is open (RUNTIME.md §4, locally), so no reply is lost meanwhile.
    if (stream.id === up.owner && upstreams.get(tenant) === up) upstreams.delete(tenant);
    if (upstreams.get(tenant) !== up) wake(up);
  };
  ours.addEventListener("close", gone);
  ours.addEventListener("error", gone);
  return new Response(null, { status: 101, webSocket: theirs });
}

// In the client's context: writes what the upstream routed to this stream.
function deliver(stream, ws) {
  if (!stream.open) return;
  const inbox = stream.inbox;
  stream.inbox = [];
  try {
    for (const msg of inbox) {
      if (msg === LOST) {
        stream.open = false;
        ws.close(1011, "upstream lost");
        return;
      }
      ws.send(msg);
    }
  } catch {
    stream.open = false; // the client is closing; its close event tidies up
    return;
  }
  arm(stream, () => deliver(stream, ws));
}

// In the owner's context: the tenant's upstream, connecting.
function open(tenant, owner, env) {
  const up = { tenant, owner, streams: new Map(), queue: [], wake: null, ws: null, closed: false };
  upstreams.set(tenant, up);
  connect(up, env).catch(() => lost(up));
  return up;
}

async function connect(up, env) {
  const init = { headers: { Upgrade: "websocket" } };
  const res = env.UPSTREAM_URL
    ? await fetch(env.UPSTREAM_URL.replace("{tenant}", up.tenant), init)
    : await env.ECHO.get(env.ECHO.idFromName(up.tenant)).fetch("http://echo/", init);
  const ws = res.webSocket;
  if (!ws) throw new Error(`upstream refused: HTTP ${res.status}`);
  ws.accept();
  ws.binaryType = "arraybuffer";
  up.ws = ws;
  ws.addEventListener("message", (e) => route(up, e.data));
  ws.addEventListener("close", () => lost(up));
  ws.addEventListener("error", () => lost(up));
  flush(up); // what queued while connecting
}

// In the owner's context, woken by any client: everything queued since the last wake
// leaves as one batch (or a few, past MAX_BATCH). That is the batching: frames that
// arrive while the owner is busy wait for its next turn together.
function flush(up) {
  if (up.closed) return;
  if (up.streams.size === 0 && upstreams.get(up.tenant) !== up) {
    up.closed = true;
    up.ws.close(1000, "done");
    return;
  }
  // Flat triples (stream, kind, bytes): no object per frame.
  const q = up.queue;
  up.queue = [];
  let start = 0;
  let size = 0;
  try {
    for (let i = 0; i < q.length; i += 3) {
      const n = HEADER + q[i + 2].length;
      if (size > 0 && size + n > MAX_BATCH) {
        up.ws.send(batch(q, start, i, size));
        start = i;
        size = 0;
      }
      size += n;
    }
    if (size > 0) up.ws.send(batch(q, start, q.length, size));
  } catch {
    return lost(up); // closing under us
  }
  arm(up, () => flush(up));
}

function batch(q, from, to, size) {
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  let at = 0;
  for (let i = from; i < to; i += 3) {
    const data = q[i + 2];
    view.setUint32(at, q[i]);
    view.setUint8(at + 4, q[i + 1]);
    view.setUint32(at + 5, data.length);
    out.set(data, at + HEADER);
    at += HEADER + data.length;
  }
  return out;
}

// In the owner's context: a batch came back; each frame goes to its stream's inbox, and
// the stream's context is woken to write it (the owner may not write to its socket).
function route(up, data) {
  if (typeof data === "string") return;
  const view = new DataView(data);
  for (let at = 0; at + HEADER <= data.byteLength; ) {
    const id = view.getUint32(at);
    const kind = view.getUint8(at + 4);
    const len = view.getUint32(at + 5);
    at += HEADER;
    const stream = up.streams.get(id);
    if (stream) {
      stream.inbox.push(kind === TEXT ? decoder.decode(new Uint8Array(data, at, len)) : data.slice(at, at + len));
      wake(stream);
    }
    at += len;
  }
}

// The upstream is gone: its clients are told (each closes its own socket), and the next
// client opens a new one.
function lost(up) {
  if (up.closed) return;
  up.closed = true;
  if (upstreams.get(up.tenant) === up) upstreams.delete(up.tenant);
  for (const stream of up.streams.values()) {
    stream.inbox.push(LOST);
    wake(stream);
  }
  up.streams.clear();
}

// A tenant's echo object: accepts the upstream with the Hibernation API and sends each
// batch back as it is.
export class Echo extends DurableObject {
  fetch() {
    const [theirs, ours] = Object.values(new WebSocketPair());
    this.ctx.acceptWebSocket(ours);
    return new Response(null, { status: 101, webSocket: theirs });
  }

  webSocketMessage(ws, message) {
    ws.send(message);
  }

  webSocketClose(ws, code, reason) {
    try {
      ws.close(code, reason);
    } catch {
      // already answered by the runtime, or a code that may not be sent (1005, 1006)
    }
  }
}
