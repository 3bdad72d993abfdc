// Keys and tokens from an independent implementation (panva's `jose`, a root
// devDependency), so the snippet's verification is tested against tokens it did not mint.
//
// Reads a JSON array of jobs on stdin and writes a JSON array of results on stdout:
//   {"op": "keys", "alg": "RS256"|"PS256"|"ES256"|"EdDSA", "kid": "k1", "bits": 2048}
//     -> {"private": <JWK>, "public": <JWK with kid, alg, use>}
//   {"op": "sign", "alg": ..., "key": <private JWK>, "kid": "k1" | null, "claims": {...}}
//     -> "<compact JWS>"
// Used by test-client (`token --alg … --key FILE`, and the end-to-end tests).
import { exportJWK, generateKeyPair, importJWK, SignJWT } from 'jose'

async function run(job) {
  switch (job.op) {
    case 'keys': {
      const options = { extractable: true }
      if (job.alg === 'RS256' || job.alg === 'PS256') options.modulusLength = job.bits ?? 2048
      const { publicKey, privateKey } = await generateKeyPair(job.alg, options)
      const pub = await exportJWK(publicKey)
      const priv = await exportJWK(privateKey)
      return {
        private: { ...priv, kid: job.kid, alg: job.alg },
        public: { ...pub, kid: job.kid, alg: job.alg, use: 'sig' },
      }
    }
    case 'sign': {
      const key = await importJWK(job.key, job.alg)
      const header = { alg: job.alg, typ: 'JWT' }
      if (job.kid) header.kid = job.kid
      return await new SignJWT(job.claims).setProtectedHeader(header).sign(key)
    }
    default:
      throw new Error(`unknown op ${job.op}`)
  }
}

let input = ''
for await (const chunk of process.stdin) input += chunk
const jobs = JSON.parse(input)
const out = []
for (const job of jobs) out.push(await run(job))
process.stdout.write(JSON.stringify(out))
