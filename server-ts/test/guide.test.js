// The guide in the main README shows examples/ts-minimal as a user writes it: this keeps
// the two the same (the example imports the package by path, a user by name).

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'

const read = (path) => readFileSync(new URL(`../../${path}`, import.meta.url), 'utf8')

test("the README's TypeScript object is examples/ts-minimal", () => {
  const readme = read('README.md')
  const blocks = [...readme.matchAll(/```(toml|ts)\n([\s\S]*?)```/g)].map((m) => m[2])
  const code = read('examples/ts-minimal/src/index.ts').replace("'../../../server-ts/src/index.js'", "'snippet-proxy-server'")
  assert.ok(blocks.includes(read('examples/ts-minimal/wrangler.toml')), 'the wrangler.toml block')
  assert.ok(blocks.includes(code), 'the src/index.ts block')
})
