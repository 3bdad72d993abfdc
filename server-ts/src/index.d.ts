// snippet-proxy-server: accept snippet-proxy's multiplexed upstream in an existing Durable Object.

export { SnippetProxyServer, MuxClient } from './server.js'
export type {
  DurableObjectContextLike, Identity, ProxiedRequest, ProxiedResponse, SnippetProxyHandlers, SnippetProxyOptions,
} from './server.js'
export {
  DEFAULT_TENANT, OPERATOR, TENANT_RULE, authorized, checkAdmission, constantTimeEqual, grants, hasScope, isExpired,
  isValidTenant,
} from './authz.js'
export * as protocol from './protocol.js'
