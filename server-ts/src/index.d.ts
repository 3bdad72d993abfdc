// snippet-proxy-server: accept snippet-proxy's multiplexed upstream in an existing Durable Object.

export { SnippetProxyServer, MuxClient } from './server.js'
export type {
  DurableObjectContextLike, Identity, ObjectView, ProxiedRequest, ProxiedResponse, SnippetProxyHandlers,
  SnippetProxyOptions, SocketView,
} from './server.js'
/** The Content-Type of SnippetProxyServer.metrics(): 'text/plain; version=0.0.4'. */
export declare const METRICS_CONTENT_TYPE: string
/** Most sockets ObjectView.sockets lists (the totals count every one). */
export declare const MAX_LISTED_SOCKETS: number
export {
  DEFAULT_TENANT, OPERATOR, TENANT_RULE, authorized, checkAdmission, constantTimeEqual, grants, hasScope, isExpired,
  isValidTenant,
} from './authz.js'
export * as protocol from './protocol.js'
