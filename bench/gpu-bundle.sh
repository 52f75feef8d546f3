#!/usr/bin/env bash
# Packs what bench/gpu-check.sh needs on a machine with no network and no Node: this machine's
# node binary, the production node_modules (onnxruntime-node's linux/x64 binary only) plus
# autocannon (the load of stage 7) and dist/,
# into .gpu/bundle.tar.xz (ignored by git). Carry `.gpu` to the GPU machine; gpu-check.sh unpacks
# it when `node` or node_modules is missing there. About 45 MB; the device tool carries 64 MiB.
#
#   npm ci && npm run build && bash bench/gpu-bundle.sh
#
# What it cannot carry: onnxruntime-node's CUDA provider (libonnxruntime_providers_cuda.so, from
# `ONNXRUNTIME_NODE_INSTALL=cuda12 npm ci`) with CUDA 12 and cuDNN 9 is several hundred MB. Put
# the provider in .gpu/cuda/ yourself if it fits; gpu-check.sh looks there too.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
[ -d dist ] || { echo "gpu-bundle: run npm run build first" >&2; exit 1; }
[ "$(uname -m)" = x86_64 ] || { echo "gpu-bundle: the GPU machine is x86-64; bundle from an x86-64 machine" >&2; exit 1; }
mkdir -p .gpu
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/gpu-bundle.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/bin"
cp "$(command -v node)" "$STAGE/bin/node"
# The production modules, and autocannon's tree for stage 7's load (bench/server-load.mjs).
# (npm ls lists no dependency tree under one package: the closure is walked here.)
closure() {
  node -e '
    const { existsSync, readFileSync } = require("node:fs");
    const { dirname, join } = require("node:path");
    const seen = new Set();
    const find = (name, from) => { for (let d = from; ; d = dirname(d)) { const p = join(d, "node_modules", name); if (existsSync(join(p, "package.json"))) return p; if (d === dirname(d)) return null; } };
    const walk = (dir) => { if (seen.has(dir)) return; seen.add(dir); const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")); for (const name of Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies })) { const d = find(name, dir); if (d) walk(d); } };
    walk(find(process.argv[1], process.cwd()));
    console.log([...seen].join("\n"));' "$1"
}
{ npm ls --omit=dev --parseable --all 2>/dev/null; closure autocannon; } | sed "s|^$ROOT/||" | grep '^node_modules/' | sort -u >"$STAGE/modules.txt"
tar -cf "$STAGE/payload.tar" -C "$STAGE" bin/node
# Each module's files, without the other platforms' onnxruntime binaries.
while read -r dir; do
  tar -rf "$STAGE/payload.tar" -C "$ROOT" --exclude='node_modules/onnxruntime-node/bin/napi-v6/darwin' \
    --exclude='node_modules/onnxruntime-node/bin/napi-v6/win32' --exclude='node_modules/onnxruntime-node/bin/napi-v6/linux/arm64' \
    --exclude="$dir/node_modules" "$dir"
done <"$STAGE/modules.txt"
tar -rf "$STAGE/payload.tar" -C "$ROOT" dist
xz -6 -T0 -c "$STAGE/payload.tar" >.gpu/bundle.tar.xz
node -p "require('./package.json').version + ' ' + process.version" >.gpu/bundle.txt
git rev-parse --short HEAD >>.gpu/bundle.txt
echo "gpu-bundle: .gpu/bundle.tar.xz, $(du -h .gpu/bundle.tar.xz | cut -f1) (carry: [\".gpu\"])" >&2
