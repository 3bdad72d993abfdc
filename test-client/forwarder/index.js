// The forwarding Worker (see wrangler.toml). AUTH_SECRET verifies HS256 client tokens as
// the snippet's does; env.BACKEND is the binding to the backend's class.

const encoder = new TextEncoder()
const ROUTE = /^\/db\/([A-Za-z0-9._-]{1,64})\/(rpc|query)$/

function json(status, body) {
  return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } })
}

function base64url(s) {
  const b = atob(s.replace(/-/g, '+').replace(/_/g, '/'))
  return Uint8Array.from(b, (c) => c.charCodeAt(0))
}

// The HMAC key is plain data, so one per isolate serves every request.
let key
async function hmacKey(secret) {
  key ??= await crypto.subtle.importKey('raw', encoder.encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['verify'])
  return key
}

/** Whether `Authorization: Bearer <jwt>` holds an unexpired HS256 token signed with `secret`. */
async function verified(request, secret) {
  const token = (request.headers.get('Authorization') ?? '').replace(/^Bearer /, '')
  const [head, body, sig] = token.split('.')
  if (!sig) return false
  try {
    const ok = await crypto.subtle.verify('HMAC', await hmacKey(secret), base64url(sig), encoder.encode(`${head}.${body}`))
    const claims = JSON.parse(new TextDecoder().decode(base64url(body)))
    return ok && JSON.parse(new TextDecoder().decode(base64url(head))).alg === 'HS256' && claims.exp > Date.now() / 1000
  } catch {
    return false
  }
}

export default {
  async fetch(request, env) {
    const route = new URL(request.url).pathname.match(ROUTE)
    if (!route) return json(404, { error: 'POST /db/{tenant}/rpc or /query' })
    if (request.method !== 'POST') return json(405, { error: 'use POST' })
    if (!(await verified(request, env.AUTH_SECRET))) return json(401, { error: 'missing or bad token' })
    const [, tenant, endpoint] = route
    const stub = env.BACKEND.get(env.BACKEND.idFromName(tenant))
    return stub.fetch(`https://backend.binding/db/${tenant}/${endpoint}`, {
      method: 'POST',
      headers: { 'Content-Type': request.headers.get('Content-Type') ?? 'application/json' },
      body: request.body,
    })
  },
}
