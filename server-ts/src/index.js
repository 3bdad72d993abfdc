// snippet-proxy-server: let an existing Durable Object accept snippet-proxy's
// multiplexed upstream. See README.md.

export { SnippetProxyServer, MuxClient } from './server.js'
export {
  DEFAULT_TENANT, OPERATOR, TENANT_RULE, authorized, checkAdmission, constantTimeEqual, grants, hasScope, isExpired,
  isValidTenant,
} from './authz.js'
export { METRICS_CONTENT_TYPE } from './metrics.js'
export { MAX_LISTED_SOCKETS } from './view.js'
export * as protocol from './protocol.js'
