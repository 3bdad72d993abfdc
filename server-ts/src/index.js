// snippet-proxy-server: let an existing Durable Object accept snippet-proxy's
// multiplexed upstream. See README.md.

export { SnippetProxyServer, MuxClient } from './server.js'
export {
  OPERATOR, authorized, checkAdmission, constantTimeEqual, grants, hasScope, isExpired, isValidTenant,
} from './authz.js'
export * as protocol from './protocol.js'
