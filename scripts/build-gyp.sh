#!/usr/bin/env bash
# Builds the addon CPU-only with node-gyp from binding.gyp, in a temporary copy of the sources so
# it never touches build/ (the cmake-js output), then loads the result and prints capabilities().
#   bash scripts/build-gyp.sh            (npm run build:gyp)
# Env: ADRANK_GYP_KEEP=1 keeps the temp dir; NODEDIR overrides the Node headers location (default:
# the running node's own install prefix, so no download is needed).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/adrank-gyp.XXXXXX")"
cleanup() { if [[ "${ADRANK_GYP_KEEP:-0}" != 1 ]]; then rm -rf "$tmp"; else echo "kept $tmp"; fi; }
trap cleanup EXIT

mkdir -p "$tmp/native/kernels"
cp "$root/binding.gyp" "$root/package.json" "$tmp/"
cp -r "$root/native/engine" "$root/native/addon" "$tmp/native/"
cp -r "$root/native/kernels/cpu" "$tmp/native/kernels/"
ln -s "$root/node_modules" "$tmp/node_modules"

nodedir="${NODEDIR:-$(node -p "require('path').resolve(process.execPath, '..', '..')")}"
args=(rebuild --release -j "${JOBS:-2}")
if [[ -f "$nodedir/include/node/node_api.h" ]]; then args+=(--nodedir="$nodedir"); fi

cd "$tmp"
npx --no-install node-gyp "${args[@]}"

node -e '
  const b = require(process.argv[1]);
  const caps = b.capabilities();
  if (typeof b.Engine !== "function" || !caps.cpu || caps.cpu.compiled !== true) throw new Error("unexpected exports");
  console.log("node-gyp build OK:", JSON.stringify(caps));
' "$tmp/build/Release/adrank.node"
