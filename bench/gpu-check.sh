#!/usr/bin/env bash
# GPU check, for a session that has an NVIDIA GPU (none was reachable when this was written; see
# bench/RESULTS.md). One prepared script: installs (from the working tree, no network), checks and
# measures in a few minutes.
#
#   npm run build && bash bench/gpu-check.sh            # DEVICE=cuda:1 to pick another GPU
#   # on a machine without Node or network: here `bash bench/gpu-bundle.sh`, carry `.gpu`, there
#   bash bench/gpu-check.sh
#
# 0. Without `node`, node_modules or dist/ on the machine, unpacks .gpu/bundle.tar.xz (made by
#    bench/gpu-bundle.sh: node, the production modules, dist/) into /tmp and uses that.
# 1. Finds onnxruntime-node's CUDA provider. When `ONNXRUNTIME_NODE_INSTALL=cuda12 npm ci` could
#    not download it, takes libonnxruntime_providers_{cuda,shared}.so from a Python onnxruntime-gpu
#    of the same version (1.30.x) and the CUDA 12 / cuDNN 9 libraries from its nvidia-* wheels.
# 2. Fails if ldd finds an unresolved library of the provider.
# 3. With TF32 off (NVIDIA_TF32_OVERRIDE=0), runs `penalty` on every example generator on the CPU
#    and on the GPU with the same seed (so the same latents and directions) and compares each
#    layer: |cuda − cpu| ≤ RTOL·|cpu| + ATOL (defaults 1e-3 and 1e-6). noisy.onnx is left out: its
#    RandomNormalLike draws different noise on each provider.
# 4. Throughput on the conv example, dcgan.onnx, N = 256, k = 8 (4352 rows): median of 3 runs,
#    rows per second of the whole estimate and of the forward passes alone, GPU and CPU.
# 5. The in-graph estimator (issue 13): bench/gpu-suffix.mjs runs the suffix on the GPU against the
#    JavaScript reference on the CPU on every example generator (same tolerance, float64 and float32
#    accumulation, chunks that split samples); bench/floor.mjs on the GPU gives the bare-CUDA floor
#    over batch sizes for 4352 rows and, for k = 2, 8, 32, the suffix path's time over bare CUDA runs
#    of the same rows (target ≥ 0.9× their throughput, i.e. overBare ≤ 1.11) and the bytes fetched.
# 6. The in-graph estimator through the real path (Run + penalty, issue 13): on the GPU `--estimator
#    auto` must choose `graph` (stage 3 already compares it with the CPU's host reduction); here
#    `--estimator graph` against `--estimator host` on the same GPU, dcgan and dcgan64, N = 64,
#    k = 2, 8, 32: the penalties within the tolerance, the bytes fetched out of onnxruntime the same
#    for every k with the graph, the tuned batchRows, and the median time of 3 runs each.
# 7. Many small requests (dynamic batching, issue 13): bench/server-load.mjs on the GPU, N = 8,
#    k = 4, 8 and 32 connections, a batching and a non-batching server in turn: rows/s against the
#    bare-CUDA floor (target ≥ 0.8×), /healthz p99 (target < 50 ms), and eight concurrent requests
#    that must equal the same requests alone.
# Every stage runs under `timeout` (STAGE_TIMEOUT, default 240 s).
# Prints a Markdown section for bench/RESULTS.md; exits 1 when a comparison fails.
# DRY_RUN=1 lets the CPU stand in for the GPU, to check this script's plumbing on any machine.
# WEBGPU=1 also runs every model on the webgpu provider (built into onnxruntime-node's Linux
# binary; on an NVIDIA GPU it goes through Vulkan) and compares it the same way.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
STAGE_TIMEOUT=${STAGE_TIMEOUT:-240}
# --- 0. Node, modules and dist from the bundle when the machine has none ----------------------
if ! command -v node >/dev/null || [ ! -d node_modules/onnxruntime-node ] || [ ! -f dist/cli/main.js ]; then
  [ -f .gpu/bundle.tar.xz ] || { echo "gpu-check: ERROR: no node, node_modules or dist here, and no .gpu/bundle.tar.xz (run bench/gpu-bundle.sh where they are, and carry .gpu)" >&2; exit 1; }
  BUNDLE=/tmp/hessian-audit-bundle
  rm -rf "$BUNDLE" && mkdir -p "$BUNDLE" && tar -xJf .gpu/bundle.tar.xz -C "$BUNDLE"
  export PATH="$BUNDLE/bin:$PATH"
  [ -d node_modules ] || ln -s "$BUNDLE/node_modules" node_modules
  [ -f dist/cli/main.js ] || { rm -rf dist; ln -s "$BUNDLE/dist" dist; }
  echo "gpu-check: unpacked .gpu/bundle.tar.xz ($(tr '\n' ' ' <.gpu/bundle.txt)): $(node --version)" >&2
fi
DEVICE=${DEVICE:-cuda:0}
RTOL=${RTOL:-1e-3}
ATOL=${ATOL:-1e-6}
ORT="$ROOT/node_modules/onnxruntime-node/bin/napi-v6/linux/x64"
CLI="$ROOT/dist/cli/main.js"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
COPIED=()
cleanup() {
  for f in "${COPIED[@]+"${COPIED[@]}"}"; do rm -f "$f"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
say() { echo "gpu-check: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

[ -f "$CLI" ] || die "dist/ is missing: run npm run build"
ORT_VERSION=$(node -p "require('onnxruntime-node/package.json').version")
RUN_ON=$DEVICE
if [ "${DRY_RUN:-0}" = 1 ]; then
  RUN_ON=cpu
  GPU="none (DRY_RUN=1: the CPU stands in for $DEVICE)"
  say "dry run: $GPU"
else
command -v nvidia-smi >/dev/null || die "nvidia-smi not found: this machine has no NVIDIA driver"
GPU=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader -i "${DEVICE#cuda:}" 2>/dev/null || nvidia-smi -L | head -1)
say "GPU: $GPU; onnxruntime-node $ORT_VERSION"

# --- 1. the CUDA provider ----------------------------------------------------------------------
if [ ! -f "$ORT/libonnxruntime_providers_cuda.so" ] && [ -f .gpu/cuda/libonnxruntime_providers_cuda.so ]; then
  for lib in .gpu/cuda/libonnxruntime_providers_*.so; do cp "$lib" "$ORT/"; COPIED+=("$ORT/$(basename "$lib")"); done
  [ -d .gpu/cuda/lib ] && export LD_LIBRARY_PATH="$ROOT/.gpu/cuda/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  say "took the CUDA provider from .gpu/cuda"
fi
if [ ! -f "$ORT/libonnxruntime_providers_cuda.so" ]; then
  PY=${PYTHON:-python3}
  PYORT=$("$PY" -c 'import onnxruntime, os; print(onnxruntime.__version__, os.path.dirname(onnxruntime.__file__))' 2>/dev/null || true)
  [ -n "$PYORT" ] || die "no CUDA provider in $ORT, .gpu/cuda or a Python onnxruntime-gpu (onnxruntime-node $ORT_VERSION needs libonnxruntime_providers_cuda.so built for CUDA 12 and cuDNN 9)"
  read -r PYVER PYDIR <<<"$PYORT"
  [ "${PYVER%.*}" = "${ORT_VERSION%.*}" ] || die "Python onnxruntime is $PYVER, onnxruntime-node is $ORT_VERSION: the provider must match"
  for lib in libonnxruntime_providers_cuda.so libonnxruntime_providers_shared.so; do
    [ -f "$PYDIR/capi/$lib" ] || die "$PYDIR/capi/$lib not found: Python's onnxruntime $PYVER is the CPU build, not onnxruntime-gpu; bring the CUDA 12 provider in .gpu/cuda"
    cp "$PYDIR/capi/$lib" "$ORT/$lib"
    COPIED+=("$ORT/$lib")
  done
  say "took the CUDA provider from Python onnxruntime-gpu $PYVER ($PYDIR/capi)"
  SITE=$(dirname "$PYDIR")
  for dir in "$SITE"/nvidia/*/lib; do
    [ -d "$dir" ] && LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  done
  export LD_LIBRARY_PATH
fi

# --- 2. ldd ------------------------------------------------------------------------------------
UNRESOLVED=$(LD_LIBRARY_PATH="$ORT${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd "$ORT/libonnxruntime_providers_cuda.so" | grep 'not found' || true)
[ -z "$UNRESOLVED" ] || die "unresolved libraries of the CUDA provider:
$UNRESOLVED"
say "ldd: every library of the CUDA provider resolves"
fi

# --- 3. CPU vs GPU on every example generator, TF32 off ---------------------------------------
export NVIDIA_TF32_OVERRIDE=0
echo '[0,1,2,3,4,5,6,7,0,1,2,3,4,5,6,7]' >"$WORK/label.json"
echo '[0.7]' >"$WORK/truncation.json"
MODELS=()
for model in models/*.onnx; do
  [ "$(basename "$model")" = noisy.onnx ] && continue
  MODELS+=("$model")
  extra=()
  [ "$(basename "$model")" = conditional.onnx ] && extra=(--input "label=$WORK/label.json" --input "truncation=$WORK/truncation.json")
  roles=(cpu cuda); [ "${WEBGPU:-0}" = 1 ] && roles+=(webgpu)
  for role in "${roles[@]}"; do
    device=cpu; [ "$role" = cuda ] && device=$RUN_ON; [ "$role" = webgpu ] && [ "${DRY_RUN:-0}" != 1 ] && device=webgpu
    timeout "$STAGE_TIMEOUT" node "$CLI" penalty "$model" --samples 16 --seed 7 --k 4 --device "$device" "${extra[@]+"${extra[@]}"}" --json \
      >"$WORK/$(basename "$model" .onnx).$role.json" || die "penalty $model --device $device failed"
  done
done

# --- 4. throughput: dcgan, N = 256, k = 8 ------------------------------------------------------
for role in cuda cpu; do
  device=cpu; [ "$role" = cuda ] && device=$RUN_ON
  for run in 1 2 3; do
    timeout "$STAGE_TIMEOUT" node "$CLI" penalty models/dcgan.onnx --samples 256 --k 8 --seed "$run" --device "$device" --json \
      >"$WORK/throughput.$role.$run.json" || die "throughput run on $device failed"
  done
done

# --- 5. the in-graph estimator on the GPU: against the CPU reference, and against bare runs -----
timeout "$STAGE_TIMEOUT" env DEVICE="$RUN_ON" RTOL="$RTOL" ATOL="$ATOL" node bench/gpu-suffix.mjs >"$WORK/suffix.json" \
  || say "the in-graph estimator disagrees with the CPU reference (or failed); see the table"
[ -s "$WORK/suffix.json" ] || die "bench/gpu-suffix.mjs printed nothing"
FLOOR_SAMPLES=256; FLOOR_ROWS=4352; FLOOR_REPEATS=${REPEATS:-5}
[ "${DRY_RUN:-0}" = 1 ] && { FLOOR_SAMPLES=8; FLOOR_ROWS=136; FLOOR_REPEATS=1; }  # the CPU stands in: plumbing only
timeout "$STAGE_TIMEOUT" env DEVICE="$RUN_ON" REPEATS="$FLOOR_REPEATS" SAMPLES="$FLOOR_SAMPLES" node bench/floor.mjs models/dcgan.onnx "$FLOOR_ROWS" >"$WORK/floor.json" \
  || die "bench/floor.mjs on $RUN_ON failed"

# --- 6. estimator=graph through the real path, against estimator=host on the same device --------
for model in dcgan dcgan64; do
  for k in 2 8 32; do
    for estimator in graph host auto; do
      for run in 1 2 3; do
        [ "$estimator" = auto ] && [ "$run" != 1 ] && continue
        timeout "$STAGE_TIMEOUT" node "$CLI" penalty "models/$model.onnx" --samples 64 --k "$k" --seed 5 --device "$RUN_ON" --estimator "$estimator" --json \
          >"$WORK/estimator.$model.$k.$estimator.$run.json" || die "penalty $model --estimator $estimator --k $k on $RUN_ON failed"
      done
    done
  done
done
# Hessian and activeness, --estimator graph against host on the same device (bytes, times, figures within 1e-6); its table on stderr.
timeout "$STAGE_TIMEOUT" env DEVICE="$RUN_ON" node bench/hessian-graph.mjs >"$WORK/hessian-graph.md" \
  || { say "the in-graph Hessian, activeness or orthogonality disagrees with the host on $RUN_ON (or failed); see its table"; echo failed >"$WORK/hessian-graph.failed"; }

# --- 7. many small requests: a batching and a non-batching server against the bare floor --------
SMALL_SECONDS=5
[ "${DRY_RUN:-0}" = 1 ] && SMALL_SECONDS=1
timeout "$STAGE_TIMEOUT" node bench/server-load.mjs --device "$RUN_ON" --workers 1 --threads 1 --seconds "$SMALL_SECONDS" --repeats 1 >"$WORK/small.txt" \
  || die "bench/server-load.mjs on $RUN_ON failed"
tail -n 1 "$WORK/small.txt" >"$WORK/small.json"

node --input-type=module - "$WORK" "$RTOL" "$ATOL" "$GPU" "${DRY_RUN:-0}" "$ORT_VERSION" "${WEBGPU:-0}" "${MODELS[@]}" <<'JS'
import { existsSync, readFileSync } from 'node:fs';
import { basename } from 'node:path';
const [work, rtolText, atolText, gpu, dryRun, ortVersion, webgpu, ...models] = process.argv.slice(2);
const others = webgpu === '1' ? ['cuda', 'webgpu'] : ['cuda'];
const rtol = Number(rtolText), atol = Number(atolText);
const read = (name) => JSON.parse(readFileSync(`${work}/${name}.json`, 'utf8'));
const lines = [];
let failed = 0;
lines.push(`## GPU check (bench/gpu-check.sh)`, '', `${gpu}; onnxruntime-node ${ortVersion}; TF32 off (NVIDIA_TF32_OVERRIDE=0); ${new Date().toISOString()}`, '');
lines.push(`| model | layer | cpu | ${others.map((o) => `${o} | relative difference | within tolerance`).join(' | ')} |`);
lines.push(`| --- | --- | --- | ${others.map(() => '--- | --- | ---').join(' | ')} |`);
for (const model of models) {
  const name = basename(model, '.onnx');
  const cpu = read(`${name}.cpu`);
  const runs = Object.fromEntries(others.map((o) => [o, read(`${name}.${o}`)]));
  for (const [o, run] of Object.entries(runs)) {
    if (dryRun !== '1' && !run.executionProvider.startsWith(o)) { failed++; lines.push(`| ${name} | | | ${o} ran on ${run.executionProvider} | | NO |`); }
  }
  for (const layer of cpu.layers) {
    const cells = others.map((o) => {
      const other = runs[o].layers.find((l) => l.name === layer.name);
      // null: a non-finite penalty (log.onnx on negative latents); both providers must agree on it.
      const show = (x) => (x === null ? 'null' : x.toPrecision(7));
      if (layer.penalty === null || other.penalty === null) {
        const ok = layer.penalty === other.penalty;
        if (!ok) failed++;
        return `${show(other.penalty)} | | ${ok ? 'yes' : 'NO'}`;
      }
      const diff = Math.abs(other.penalty - layer.penalty);
      const ok = diff <= rtol * Math.abs(layer.penalty) + atol;
      if (!ok) failed++;
      const rel = layer.penalty === 0 ? diff : diff / Math.abs(layer.penalty);
      return `${show(other.penalty)} | ${rel.toExponential(2)} | ${ok ? 'yes' : 'NO'}`;
    });
    lines.push(`| ${name} | ${layer.name} | ${layer.penalty === null ? 'null' : layer.penalty.toPrecision(7)} | ${cells.join(' | ')} |`);
  }
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
lines.push('', `Throughput, dcgan.onnx, N = 256, k = 8 (median of 3 runs):`, '', '| device | rows | rows/s (whole estimate) | rows/s (forward passes) |', '| --- | --- | --- | --- |');
for (const dev of ['cuda', 'cpu']) {
  const runs = [1, 2, 3].map((i) => read(`throughput.${dev}.${i}`));
  const rows = runs[0].rows;
  lines.push(`| ${runs[0].executionProvider} | ${rows} | ${Math.round(median(runs.map((r) => rows / (r.timings.totalMs / 1000))))} | ${Math.round(median(runs.map((r) => rows / (r.timings.forwardMs / 1000))))} |`);
}
const suffix = read('suffix');
lines.push('', `In-graph estimator on ${suffix.device} against the JavaScript reference on the CPU (bench/gpu-suffix.mjs):`, '', '| model | layer | maxRows | accumulation | cpu | device | relative difference | within tolerance |', '| --- | --- | --- | --- | --- | --- | --- | --- |');
for (const r of suffix.report) {
  if (!r.ok) failed++;
  lines.push(`| ${r.model} | ${r.layer} | ${r.maxRows} | ${r.accumulation} | ${r.cpu.toPrecision(7)} | ${r.device === null ? 'null' : r.device.toPrecision(7)} | ${r.relative.toExponential(2)} | ${r.ok ? 'yes' : 'NO'} |`);
}
const floor = read('floor');
lines.push('', `Floor on ${floor.device}, dcgan.onnx, ${floor.floor.rows} rows: ${floor.floor.floorMs} ms at batches of ${floor.floor.bestBatchRows} rows (${floor.floor.rowsPerSecond} rows/s); by batch rows ${JSON.stringify(floor.floor.msByBatchRows)}.`, '');
lines.push('| k | batches | rows | ms bare | ms host | ms suffix64 | ms suffix32 | host / bare | suffix64 / bare | suffix32 / bare | bytes host | bytes suffix64 | bytes suffix32 |', '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
for (const p of floor.penalty) {
  lines.push(`| ${p.k} | ${p.batches} | ${p.rows} | ${p.ms.bare} | ${p.ms.host} | ${p.ms.suffix64} | ${p.ms.suffix32} | ${p.overBare.host} | ${p.overBare.suffix64} | ${p.overBare.suffix32} | ${p.bytesFetched.host} | ${p.bytesFetched.suffix64} | ${p.bytesFetched.suffix32} |`);
}
lines.push('', 'Target: the suffix path ≥ 0.9× the throughput of bare runs of the same rows (suffix / bare ≤ 1.11).');
lines.push('', 'The estimator through the real path (penalty --estimator graph | host, N = 64, same device; median of 3 runs):', '');
lines.push('| model | k | auto chose | graph penalty | host penalty | relative difference | within tolerance | bytes graph | bytes host | batchRows (from) | ms graph | ms host |', '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
for (const model of ['dcgan', 'dcgan64']) {
  const graphBytes = new Set();
  for (const k of [2, 8, 32]) {
    const runs = (e) => [1, 2, 3].map((i) => read(`estimator.${model}.${k}.${e}.${i}`));
    const graph = runs('graph'), host = runs('host');
    const auto = read(`estimator.${model}.${k}.auto.1`);
    const g = graph[0], h = host[0];
    const diff = Math.abs(g.penalty - h.penalty);
    const ok = g.estimator === 'graph' && diff <= rtol * Math.abs(h.penalty) + atol && (dryRun === '1' || auto.estimator === 'graph');
    if (!ok) failed++;
    graphBytes.add(g.fetchedBytes);
    const ms = (rs) => median(rs.map((r) => r.timings.totalMs)).toFixed(1);
    lines.push(`| ${model} | ${k} | ${auto.estimator} | ${g.penalty.toPrecision(7)} | ${h.penalty.toPrecision(7)} | ${(diff / Math.abs(h.penalty)).toExponential(2)} | ${ok ? 'yes' : 'NO'} | ${g.fetchedBytes} | ${h.fetchedBytes} | ${g.batchRows} (${g.batchRowsFrom}) | ${ms(graph)} | ${ms(host)} |`);
  }
  if (graphBytes.size !== 1) { failed++; lines.push(`| ${model} | | | | | | NO: the graph's bytes depend on k (${[...graphBytes].join(', ')}) | | | | | |`); }
}
lines.push('', `The Hessian, activeness and orthogonality, --estimator graph against host on the same device (bench/hessian-graph.mjs):`, '', readFileSync(`${work}/hessian-graph.md`, 'utf8').trim());
if (existsSync(`${work}/hessian-graph.failed`)) failed++;
const small = read('small');
lines.push('', `Many small requests (N = 8, k = 4, bench/server-load.mjs): floor ${Math.round(small.floor.rowsPerSecond)} rows/s at batches of ${small.floor.batchRows} rows.`, '');
lines.push('| connections | batching | rows/s | over the floor (target ≥ 0.8) | latency p99 ms | /healthz p99 ms (target < 50) | non-2xx or errors |', '| --- | --- | --- | --- | --- | --- | --- |');
for (const l of small.levels) lines.push(`| ${l.connections} | ${l.batching} | ${Math.round(l.rowsPerSecond)} | ${l.overFloor.toFixed(2)} | ${l.latencyP99} | ${l.healthzP99.toFixed(1)} | ${l.non2xx} |`);
if (small.identical.same !== small.identical.requests) failed++;
lines.push('', `Concurrent requests on the batching server equal to the same requests alone: ${small.identical.same} of ${small.identical.requests}.`);
lines.push('', `Tolerance: |cuda − cpu| ≤ ${rtol}·|cpu| + ${atol}. ${failed ? `${failed} comparison(s) FAILED.` : 'All comparisons within tolerance.'}`);
console.log(lines.join('\n'));
process.exit(failed ? 1 : 0);
JS
