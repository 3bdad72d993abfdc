#!/usr/bin/env bash
# Builds one worker crate with worker-build, offline: every tool comes from crates.io or
# npm and is handed over explicitly, because worker-build downloads any tool it is not
# given (RUNTIME.md §11). Called by wrangler's [build] command: build-worker.sh <crate-dir>
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
crate="${1:?usage: build-worker.sh <crate-dir>}"
export PATH="$HOME/.cargo/bin:$PATH"
WASM_BINDGEN_BIN="$(command -v wasm-bindgen || true)"
ESBUILD_BIN="$root/node_modules/.bin/esbuild"
WASM_OPT_BIN="$root/node_modules/.bin/wasm-opt"
for tool in "$WASM_BINDGEN_BIN" "$ESBUILD_BIN" "$WASM_OPT_BIN"; do
  if [ -z "$tool" ] || [ ! -x "$tool" ]; then
    echo "build-worker: a build tool is missing (${tool:-wasm-bindgen}); run ./x setup" >&2
    exit 1
  fi
done
export WASM_BINDGEN_BIN ESBUILD_BIN WASM_OPT_BIN
cd "$root/$crate"
exec worker-build --release
