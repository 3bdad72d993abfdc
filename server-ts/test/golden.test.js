// The golden vectors of protocol/vectors/golden.json (written by the Rust protocol crate,
// schema in PROTOCOL.md §11): every valid message decodes to exactly its meaning and
// re-encodes to exactly its bytes; every invalid one fails with exactly its error, at its
// stage, after exactly its frames; identities likewise.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'

import {
  DecodeError, FrameKind, HEADER_LEN, MAX_FRAME_PAYLOAD, MAX_SESSION_STREAMS, OLDEST_VERSION, VERSION,
  decodeClose, decodeEnvelope, decodeError, decodeMessage, decodeOpen, decodeRequest, decodeResponse,
  encodeClose, encodeEnvelope, encodeError, encodeMessage, encodeOpen, encodeRequest, encodeResponse,
  fromHex, identityFromHex, identityToHex, isSessionId, kindName, parseSessionId, toHex,
} from '../src/protocol.js'

const golden = JSON.parse(readFileSync(new URL('../../protocol/vectors/golden.json', import.meta.url), 'utf8'))

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

const identityJson = (id) => ({
  subject: id.subject, tenant: id.tenant, scopes: id.scopes, expires_at: id.expiresAt.toString(),
})
const identityOf = (j) => ({ subject: j.subject, tenant: j.tenant, scopes: j.scopes, expiresAt: BigInt(j.expires_at) })

/** A frame's meaning in the schema of golden.json (throws the payload's DecodeError). */
function frameJson(f) {
  const v = { kind: kindName(f.kind), stream: f.stream, flags: 0, payload_hex: toHex(f.payload) }
  switch (f.kind) {
    case FrameKind.Open: {
      const o = decodeOpen(f.payload)
      v.open = { path: o.path, identity: identityJson(o.identity) }
      if (o.attach) v.open.attach = { session: o.attach.session, received: o.attach.received.toString() }
      break
    }
    case FrameKind.Request: {
      const r = decodeRequest(f.payload)
      v.request = {
        method: r.method, path: r.path, content_type: r.contentType,
        identity: identityJson(r.identity), body_hex: toHex(r.body),
      }
      break
    }
    case FrameKind.Response: {
      const r = decodeResponse(f.payload)
      v.response = { status: r.status, content_type: r.contentType, body_hex: toHex(r.body) }
      break
    }
    case FrameKind.Close: {
      const c = decodeClose(f.payload)
      v.close = { code: c.code, reason: c.reason }
      break
    }
    case FrameKind.Error: {
      const e = decodeError(f.payload)
      v.error = { code: e.code, message: e.message }
      break
    }
    case FrameKind.Text:
      try { v.text = strictUtf8.decode(f.payload) } catch { /* not UTF-8: no text */ }
      break
  }
  return v
}

/** Like golden.rs `decode_all`: the frames' meanings, or where and how decoding failed. */
function decodeAll(bytes) {
  const out = []
  let frames
  try {
    frames = decodeMessage(bytes)
  } catch (e) {
    return { before: out, at: { stage: 'message' }, error: e }
  }
  for (;;) {
    const i = frames.index
    let step
    try {
      step = frames.next()
    } catch (e) {
      return { before: out, at: { stage: 'frame', frame: i }, error: e }
    }
    if (step.done) return { frames: out }
    try {
      out.push(frameJson(step.value))
    } catch (e) {
      return { before: out, at: { stage: 'payload', frame: i }, error: e }
    }
  }
}

/** Encodes a frame's meaning from its decoded object (not from payload_hex). */
function encodeMeaning(f) {
  const kind = FrameKind[f.kind]
  let payload
  if (f.open) {
    const a = f.open.attach
    const attach = a && { session: a.session, received: BigInt(a.received) }
    payload = encodeOpen({ path: f.open.path, identity: identityOf(f.open.identity), attach })
  }
  else if (f.request) {
    payload = encodeRequest({
      method: f.request.method, path: f.request.path, contentType: f.request.content_type,
      identity: identityOf(f.request.identity), body: fromHex(f.request.body_hex),
    })
  } else if (f.response) {
    payload = encodeResponse({
      status: f.response.status, contentType: f.response.content_type, body: fromHex(f.response.body_hex),
    })
  } else if (f.close) {
    // An empty Close payload means 1005; it re-encodes as the empty payload it was.
    payload = f.payload_hex === '' ? new Uint8Array(0) : encodeClose(f.close)
  } else if (f.error) payload = encodeError(f.error)
  else if (f.text !== undefined) payload = new TextEncoder().encode(f.text)
  else payload = fromHex(f.payload_hex)
  return { kind, stream: f.stream, payload }
}

test('constants match the Rust crate', () => {
  assert.equal(golden.version, VERSION)
  assert.equal(golden.oldest_version, OLDEST_VERSION)
  assert.equal(golden.header_len, HEADER_LEN)
  assert.equal(golden.max_frame_payload, MAX_FRAME_PAYLOAD)
  assert.equal(golden.max_session_streams, MAX_SESSION_STREAMS)
})

for (const v of golden.valid) {
  test(`valid: ${v.name}`, () => {
    const bytes = fromHex(v.hex)
    const got = decodeAll(bytes)
    assert.equal(got.error, undefined, `decodes (${got.error?.message})`)
    assert.deepEqual(got.frames, v.frames, 'decodes to exactly its meaning')
    const raw = [...decodeMessage(bytes)].map((f) => ({ kind: f.kind, stream: f.stream, payload: f.payload }))
    // Encoders write the current version; an older version's vector differs in its first byte only.
    const current = toHex(new Uint8Array([VERSION])) + v.hex.slice(2)
    assert.equal(toHex(encodeMessage(raw)), current, 're-encodes its frames to exactly its bytes')
    assert.equal(toHex(encodeMessage(v.frames.map(encodeMeaning))), current, 'its meaning encodes to exactly its bytes')
  })
}

for (const v of golden.invalid) {
  test(`invalid: ${v.name}`, () => {
    const got = decodeAll(fromHex(v.hex))
    assert.ok(got.error, 'must not decode')
    assert.ok(got.error instanceof DecodeError, `a DecodeError, not ${got.error}`)
    assert.deepEqual(got.error.toJSON(), v.error, 'exactly its error')
    assert.deepEqual(got.at, v.at, 'at exactly its stage')
    assert.deepEqual(got.before, v.frames_before, 'after exactly its frames')
  })
}

for (const v of golden.identities) {
  test(`identity: ${v.name}`, () => {
    if (v.error) {
      assert.throws(() => identityFromHex(v.hex), (e) => {
        assert.ok(e instanceof DecodeError)
        assert.deepEqual(e.toJSON(), v.error)
        return true
      })
      return
    }
    const id = identityFromHex(v.hex)
    assert.deepEqual(identityJson(id), v.identity)
    assert.equal(identityToHex(identityOf(v.identity)), v.hex)
  })
}

const envelopeJson = (e) => {
  switch (e.type) {
    case 'Text':
    case 'Binary':
      return { type: e.type, seq: e.seq.toString(), ack: e.ack.toString(), payload_hex: toHex(e.payload) }
    case 'Ack': return { type: 'Ack', ack: e.ack.toString() }
    case 'Welcome': return { type: 'Welcome', resumed: e.resumed, ack: e.ack.toString() }
    default: return { type: e.type, payload_hex: toHex(e.payload) }
  }
}
const envelopeOf = (j) => ({
  type: j.type,
  seq: j.seq === undefined ? undefined : BigInt(j.seq),
  ack: j.ack === undefined ? undefined : BigInt(j.ack),
  resumed: j.resumed,
  payload: j.payload_hex === undefined ? undefined : fromHex(j.payload_hex),
})

for (const v of golden.envelopes.valid) {
  test(`envelope: ${v.name}`, () => {
    assert.deepEqual(envelopeJson(decodeEnvelope(fromHex(v.hex))), v.envelope, 'decodes to exactly its meaning')
    assert.equal(toHex(encodeEnvelope(envelopeOf(v.envelope))), v.hex, 'its meaning encodes to exactly its bytes')
  })
}

for (const v of golden.envelopes.invalid) {
  test(`envelope invalid: ${v.name}`, () => {
    assert.throws(() => decodeEnvelope(fromHex(v.hex)), (e) => {
      assert.ok(e instanceof DecodeError, `a DecodeError, not ${e}`)
      assert.deepEqual(e.toJSON(), v.error)
      return true
    })
  })
}

test('session ids are 32 lowercase hex digits', () => {
  const id = '5e'.repeat(16)
  assert.ok(isSessionId(id))
  assert.equal(toHex(parseSessionId(id)), id)
  for (const bad of ['', 'AB'.repeat(16), 'ab'.repeat(15), 'ab'.repeat(17), `${'ab'.repeat(15)}zz`, 7]) {
    assert.ok(!isSessionId(bad), String(bad))
    assert.throws(() => parseSessionId(bad), DecodeError)
  }
})

test('every DecodeError variant has a vector', () => {
  const kinds = new Set([...golden.invalid, ...golden.identities].filter((v) => v.error).map((v) => v.error.kind))
  for (const k of ['Empty', 'UnsupportedVersion', 'UnknownKind', 'ReservedFlags', 'PayloadTooLarge', 'Truncated',
    'InvalidUtf8', 'TrailingBytes', 'InvalidHex']) {
    assert.ok(kinds.has(k), k)
  }
})

test('error texts are the Rust Display texts', () => {
  const text = (hex) => decodeAll(fromHex(hex)).error.message
  assert.equal(text(''), 'empty message')
  assert.equal(text('0901'), 'unsupported protocol version 9 (this side speaks 3)')
  assert.equal(text('0202010000000100000000'), 'reserved flags byte is 0x01, must be 0')
  assert.equal(text('03020000000001'), 'truncated: needed 10 bytes, had 6')
  assert.equal(text('03c8000000000100000000'), 'unknown frame kind 200')
  assert.equal(DecodeError.payloadTooLarge(33554422).message, 'payload of 33554422 bytes exceeds 33554421')
  assert.equal(DecodeError.invalidUtf8('path').message, 'field `path` is not valid UTF-8')
  assert.equal(DecodeError.trailingBytes(1).message, '1 bytes after the last field')
  assert.equal(DecodeError.invalidHex().message, 'not lowercase hex')
})

test('the worked example of PROTOCOL.md §10 and the header layout', () => {
  const alice = { subject: 'alice', tenant: 'acme', scopes: 'read write', expiresAt: 1_900_000_000n }
  const msg = encodeMessage([
    { kind: FrameKind.Open, stream: 1, payload: encodeOpen({ path: '/rpc', identity: alice }) },
    { kind: FrameKind.Text, stream: 1, payload: new TextEncoder().encode('{"jsonrpc":"2.0","method":"ping","id":1}') },
  ])
  // (§10 shows version 2; this side writes 3, the same frames.)
  assert.equal(msg.byteLength, 100)
  assert.equal(toHex(msg.subarray(0, 16)), '03010000000001000000270004' + '2f7270')
  assert.equal(
    toHex(encodeMessage([{ kind: FrameKind.Text, stream: 0x01020304, payload: new TextEncoder().encode('hi') }])),
    '0302000102030400000002' + '6869',
  )
  assert.equal(
    toHex(encodeMessage([{ kind: FrameKind.Error, stream: 4, payload: encodeError({ code: 404, message: 'unknown stream 4' }) }])),
    '03070000000004000000120194' + toHex(new TextEncoder().encode('unknown stream 4')),
  )
})

test('strings over 65535 bytes are cut at a character boundary; oversized payloads are refused', () => {
  const long = 'é'.repeat(40_000) // 80,000 bytes
  const open = decodeOpen(encodeOpen({ path: long, identity: identityOf(golden.identities[0].identity) }))
  assert.equal(open.path, 'é'.repeat(32_767))
  assert.throws(
    () => encodeMessage([{ kind: FrameKind.Binary, stream: 1, payload: new Uint8Array(MAX_FRAME_PAYLOAD + 1) }]),
    (e) => e instanceof DecodeError && e.kind === 'PayloadTooLarge',
  )
})
