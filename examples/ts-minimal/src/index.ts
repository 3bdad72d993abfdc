import { DurableObject } from 'cloudflare:workers'
import { SnippetProxyServer, authorized, isValidTenant } from '../../../server-ts/src/index.js'

export interface Env {
  ROOM: DurableObjectNamespace<Room>
  BACKEND_TOKEN?: string // the snippet's BACKEND_TOKEN: `wrangler secret put BACKEND_TOKEN`
}

// The Worker: /db/{tenant}/mux (the snippet's upstream), /db/{tenant}/rpc and /query (its
// HTTP fallback) go to the tenant's object, and only with the backend token.
export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const [db, tenant, endpoint] = new URL(request.url).pathname.split('/').filter(Boolean)
    if (db !== 'db' || !isValidTenant(tenant ?? '') || !['mux', 'rpc', 'query'].includes(endpoint)) {
      return new Response('not found', { status: 404 })
    }
    if (!env.BACKEND_TOKEN || !authorized(request.headers.get('Authorization'), env.BACKEND_TOKEN)) {
      return new Response('unauthorized', { status: 401 })
    }
    return env.ROOM.get(env.ROOM.idFromName(tenant)).fetch(request)
  },
} satisfies ExportedHandler<Env>

export class Room extends DurableObject<Env> {
  mux = new SnippetProxyServer(this.ctx, {
    // client.service is '/rpc' for the snippet's /db/{tenant}/ws and '/echo' for /ws/echo.
    onOpen: (client) => client.send(`hello ${client.identity.subject}`),
    onMessage: (client, data) => this.mux.broadcast(data), // to every client on every socket
    onClose: (client, code, reason, wasClean) => this.mux.broadcast(`${client.identity.subject} left`),
    // Only the snippet's POST /rpc and /query arrive here (and this.mux.fetch below).
    onRequest: (req) => ({ status: 200, contentType: 'text/plain', body: `hello ${req.identity.subject}` }),
  }, { token: this.env.BACKEND_TOKEN })

  async fetch(request: Request): Promise<Response> {
    if (new URL(request.url).pathname.endsWith('/mux')) return this.mux.accept(request)
    return this.mux.fetch(request) // /rpc, /query: the same onRequest
  }

  async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer) {
    await this.mux.webSocketMessage(ws, message) // false: one of your own sockets
  }

  async webSocketClose(ws: WebSocket, code: number, reason: string, wasClean: boolean) {
    await this.mux.webSocketClose(ws, code, reason, wasClean)
  }

  async webSocketError(ws: WebSocket, error: unknown) {
    await this.mux.webSocketError(ws, error)
  }
}
