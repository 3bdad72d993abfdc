// src/facts.js is generated from protocol/vectors/facts.json, which the Rust protocol
// crate writes: nothing in it is kept by hand. `node scripts/write-facts.mjs` (from the
// repository root) rewrites it. The functions built on it are checked against the table.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'

import { FACTS } from '../src/facts.js'
import { MAX_BATCH_BYTES, MAX_CLOSE_REASON, TOKEN_EXPIRED, errorClose, isAllowedCloseCode, sendableCloseCode } from '../src/protocol.js'
import { DEFAULT_TENANT, TENANT_RULE, isValidTenant } from '../src/authz.js'

const facts = JSON.parse(readFileSync(new URL('../../protocol/vectors/facts.json', import.meta.url), 'utf8'))

test('src/facts.js is protocol/vectors/facts.json', () => {
  assert.deepEqual(FACTS, facts, 'differs from facts.json: node scripts/write-facts.mjs')
})

test('the constants are the table\'s', () => {
  assert.equal(MAX_BATCH_BYTES, facts.max_batch_bytes)
  assert.equal(MAX_CLOSE_REASON, facts.max_close_reason)
  assert.deepEqual(TOKEN_EXPIRED, facts.token_expired)
  assert.equal(DEFAULT_TENANT, facts.tenant.default)
  assert.equal(TENANT_RULE, facts.tenant.rule)
})

test('close codes: allowed as the ranges say, reported-only ones sent as the table says', () => {
  const { allowed, reported_only: reportedOnly, reported_only_sent_as: sentAs } = facts.close_codes
  for (let code = 0; code <= 0xffff; code++) {
    assert.equal(isAllowedCloseCode(code), allowed.some(([a, b]) => code >= a && code <= b), `${code}`)
    assert.equal(sendableCloseCode(code), reportedOnly.includes(code) ? sentAs : code, `${code}`)
  }
  assert.equal(isAllowedCloseCode('1000'), false, 'numbers only')
  assert.equal(isAllowedCloseCode(1000.5), false)
})

test('an Error frame\'s code maps to the close its row gives, else to the default', () => {
  for (const row of facts.error_close.rows) {
    for (const code of row.errors) assert.deepEqual(errorClose(code), { code: row.code, reason: row.reason })
  }
  assert.deepEqual(errorClose(500), facts.error_close.otherwise)
})

test('tenant names follow the table: length, characters, path steps', () => {
  const t = facts.tenant
  assert.ok(isValidTenant('a'.repeat(t.min_len)) && isValidTenant('a'.repeat(t.max_len)))
  assert.ok(!isValidTenant('a'.repeat(t.min_len - 1)) && !isValidTenant('a'.repeat(t.max_len + 1)))
  for (const c of t.chars) assert.ok(isValidTenant(`a${c}`), c)
  for (const c of ['/', ' ', '%', 'é', '\u0000', '😀']) assert.ok(!isValidTenant(`a${c}`), c)
  for (const step of t.path_steps) assert.ok(!isValidTenant(step), step)
  assert.ok(isValidTenant('...'))
  assert.ok(!isValidTenant(7))
})
