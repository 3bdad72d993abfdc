//! Keys and tokens from an independent implementation: `test-client/jose/jose.mjs`, which
//! runs panva's `jose` (a root devDependency) under Node. The snippet's verification is
//! then tested against tokens it did not mint and keys it did not make, in the JWK shape
//! identity providers publish.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::{json, Value};

/// The algorithms `jose.mjs` makes keys and tokens for.
pub const ALGS: [&str; 4] = ["RS256", "PS256", "ES256", "EdDSA"];

/// A key pair made by `jose`.
#[derive(Debug, Clone)]
pub struct JoseKey {
    /// The algorithm it signs with.
    pub alg: String,
    /// Its `kid`.
    pub kid: String,
    /// The private JWK (with `kid` and `alg`).
    pub private: Value,
    /// The public JWK, as a provider publishes it (with `kid`, `alg`, `use: sig`).
    pub public: Value,
}

/// Runs `jose.mjs` with `jobs`; one result per job.
fn run(root: &Path, jobs: &Value) -> Result<Vec<Value>> {
    let script = root.join("test-client/jose/jose.mjs");
    let mut child = Command::new("node")
        .arg(&script)
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running node (needed for jose tokens)")?;
    child.stdin.take().context("stdin")?.write_all(jobs.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).context("jose.mjs output")?;
    let expected = jobs.as_array().map_or(0, Vec::len);
    ensure!(results.len() == expected, "jose.mjs answered {} of {expected} jobs", results.len());
    Ok(results)
}

/// New key pairs, one per `(alg, kid)`; RSA keys have `bits` bits.
pub fn generate(root: &Path, specs: &[(&str, &str)], bits: u32) -> Result<Vec<JoseKey>> {
    let jobs: Vec<Value> =
        specs.iter().map(|(alg, kid)| json!({"op": "keys", "alg": alg, "kid": kid, "bits": bits})).collect();
    let results = run(root, &Value::Array(jobs))?;
    Ok(specs
        .iter()
        .zip(results)
        .map(|((alg, kid), r)| JoseKey {
            alg: (*alg).to_owned(),
            kid: (*kid).to_owned(),
            private: r["private"].clone(),
            public: r["public"].clone(),
        })
        .collect())
}

/// One token to sign: with `key` (a private JWK) as `alg`, header `kid` if given.
#[derive(Debug, Clone)]
pub struct SignJob {
    /// The algorithm written in the header and used to sign.
    pub alg: String,
    /// The private JWK.
    pub key: Value,
    /// The header's `kid`, if any.
    pub kid: Option<String>,
    /// The claims.
    pub claims: Value,
}

impl SignJob {
    /// A job signing `claims` with `key` as its own algorithm and `kid`.
    pub fn new(key: &JoseKey, claims: &Value) -> SignJob {
        SignJob { alg: key.alg.clone(), key: key.private.clone(), kid: Some(key.kid.clone()), claims: claims.clone() }
    }
}

/// Signs every job in one run of Node.
pub fn sign(root: &Path, jobs: &[SignJob]) -> Result<Vec<String>> {
    let jobs: Vec<Value> = jobs
        .iter()
        .map(|j| json!({"op": "sign", "alg": j.alg, "key": j.key, "kid": j.kid, "claims": j.claims}))
        .collect();
    run(root, &Value::Array(jobs))?
        .into_iter()
        .map(|t| t.as_str().map(str::to_owned).context("jose.mjs gave no token"))
        .collect()
}

/// `{"keys": [...]}` of the public halves.
pub fn key_set(keys: &[&JoseKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.public.clone()).collect::<Vec<_>>() })
}
