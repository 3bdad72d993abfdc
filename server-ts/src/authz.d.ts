// Declarations for authz.js: the checks of the Rust backend's authz.rs and route.rs.

/** An identity as the application sees it (expiresAt in seconds since the epoch, 0 = never). */
export interface Identity {
  readonly subject: string
  readonly tenant: string
  readonly scopes: string
  readonly expiresAt: number
}

type AnyIdentity = { subject: string; tenant: string; scopes: string; expiresAt: number | bigint }

/** The caller of an HTTP request that carried the backend token but no identity header. */
export declare const OPERATOR: Readonly<{ subject: 'operator'; tenant: '*'; scopes: 'admin'; expiresAt: bigint }>

/** The tenant of paths without `/db/{tenant}`. */
export declare const DEFAULT_TENANT: string
/** The tenant-name rule, as a refusal of a bad name states it. */
export declare const TENANT_RULE: string
/** Whether `name` is a tenant name (TENANT_RULE): the rule the snippet and the Rust backend use. */
export declare function isValidTenant(name: unknown): boolean
/** Exact, case-sensitive match in the space-separated scopes. */
export declare function hasScope(identity: AnyIdentity, scope: string): boolean
/** The reference backend's scopes: write ⊇ read, admin ⊇ all; publish alone does not grant read. */
export declare function grants(identity: AnyIdentity): { read: boolean; write: boolean; publish: boolean; admin: boolean }
/** `expiresAt != 0 && nowSecs >= expiresAt`. */
export declare function isExpired(identity: AnyIdentity, nowSecs: number | bigint): boolean
/** Why the identity may not use `tenant`'s object (tenant first, then expiry), or null. */
export declare function checkAdmission(identity: AnyIdentity, tenant: string, nowSecs: number | bigint): string | null
export declare function constantTimeEqual(a: string, b: string): boolean
/** Whether an Authorization header value is exactly `Bearer ` + the token (trimmed); an empty token authorises nobody. */
export declare function authorized(header: string | null | undefined, token: string | null | undefined): boolean
export declare function secondsOf(ms: number): bigint
export declare function debugStr(s: string): string
