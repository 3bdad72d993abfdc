// Who may do what: the checks of backend-do/core/src/authz.rs and route.rs. The snippet
// authenticates each caller and sends its identity in every Open and Request frame; the
// backend trusts it only because the socket carried the backend's bearer token.

import { ANY_TENANT } from './protocol.js'
import { FACTS } from './facts.js'

/** The identity of a caller that presented the backend token itself (HTTP without an identity header). */
export const OPERATOR = Object.freeze({ subject: 'operator', tenant: ANY_TENANT, scopes: 'admin', expiresAt: 0n })

/** The tenant of paths without `/db/{tenant}`. */
export const DEFAULT_TENANT = FACTS.tenant.default
/** The tenant-name rule, as a refusal of a bad name states it. */
export const TENANT_RULE = FACTS.tenant.rule

const TENANT_CHARS = new Set(FACTS.tenant.chars)

/** Whether `name` is a tenant name by the rule the snippet and the Rust backend use (TENANT_RULE). */
export function isValidTenant(name) {
  const { min_len: min, max_len: max, path_steps: pathSteps } = FACTS.tenant
  return typeof name === 'string' && name.length >= min && name.length <= max && !pathSteps.includes(name) &&
    [...name].every((c) => TENANT_CHARS.has(c))
}

/** Whether `scope` is among the identity's space-separated scopes (exact, case-sensitive). */
export function hasScope(identity, scope) {
  return splitScopes(identity.scopes).includes(scope)
}

// Rust's split_ascii_whitespace: space, \t, \n, \f, \r.
function splitScopes(scopes) {
  return (scopes ?? '').split(/[ \t\n\f\r]+/).filter(Boolean)
}

/**
 * The reference backend's scopes as booleans: `write` implies `read`; `admin` implies
 * all; `publish` does not imply `read`; unknown scopes are ignored.
 */
export function grants(identity) {
  const g = { read: false, write: false, publish: false, admin: false }
  for (const s of splitScopes(identity.scopes)) {
    if (s === 'read') g.read = true
    else if (s === 'write') g.read = g.write = true
    else if (s === 'publish') g.publish = true
    else if (s === 'admin') g.read = g.write = g.publish = g.admin = true
  }
  return g
}

/** Seconds since the epoch as a BigInt (`floor(ms / 1000)`). */
export function secondsOf(ms) {
  return BigInt(Math.max(0, Math.floor(ms / 1000)))
}

/** Expired means `expiresAt != 0 && now >= expiresAt` (expiresAt in seconds; BigInt or number). */
export function isExpired(identity, nowSecs) {
  const exp = BigInt(identity.expiresAt ?? 0)
  return exp !== 0n && BigInt(nowSecs) >= exp
}

/**
 * Why `identity` may not use `tenant`'s object at `nowSecs`, or null when it may
 * (authz.rs `check_open`: the tenant first, then the expiry).
 */
export function checkAdmission(identity, tenant, nowSecs) {
  if (identity.tenant !== ANY_TENANT && identity.tenant !== tenant) {
    return `identity is for tenant ${debugStr(identity.tenant)}, not ${debugStr(tenant)}`
  }
  if (isExpired(identity, nowSecs)) return "the caller's token has expired"
  return null
}

/** A string quoted the way Rust's `{:?}` quotes it (for the same error texts). */
export function debugStr(s) {
  let out = '"'
  for (const ch of s) {
    const c = ch.codePointAt(0)
    if (ch === '"') out += '\\"'
    else if (ch === '\\') out += '\\\\'
    else if (ch === '\n') out += '\\n'
    else if (ch === '\r') out += '\\r'
    else if (ch === '\t') out += '\\t'
    else if (c === 0) out += '\\0'
    else if (c < 0x20 || c === 0x7f) out += `\\u{${c.toString(16)}}`
    else out += ch
  }
  return out + '"'
}

const encoder = new TextEncoder()

/** Compares two strings' UTF-8 bytes in time that depends only on their lengths. */
export function constantTimeEqual(a, b) {
  const x = encoder.encode(a)
  const y = encoder.encode(b)
  if (x.byteLength !== y.byteLength) return false
  let diff = 0
  for (let i = 0; i < x.byteLength; i++) diff |= x[i] ^ y[i]
  return diff === 0
}

/**
 * Whether an `Authorization` header value carries `Bearer {token}`: the prefix is exact
 * and case-sensitive, the rest is trimmed. An empty configured token authorises nobody.
 */
export function authorized(header, token) {
  if (typeof header !== 'string' || !header.startsWith('Bearer ')) return false
  return typeof token === 'string' && token !== '' && constantTimeEqual(header.slice(7).trim(), token)
}
