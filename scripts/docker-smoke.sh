#!/usr/bin/env bash
# The Docker image's build and start steps, without Docker, on the CPU provider (CI runs this
# through test/docker-smoke.test.ts; no Docker engine runs on the development machines):
#   1. npm pack, as the image's build stage does        (needs dist/: `npm run build` first)
#   2. production install of the packed tarball in a scratch folder: lock file,
#      npm ci --omit=dev, onnxruntime's CUDA download skipped (the image's install-cpu stage)
#   3. start `hessian-audit serve --device cpu` on 127.0.0.1 and a free port (the image's CMD)
#   4. GET the probe paths (SMOKE_PROBES, default "/healthz /readyz") until they answer 200
#   5. one penalty request, POST /v1/penalty, on models/cubic.onnx with explicit directions,
#      whose per-layer penalties are known exactly: y0 = z0·z1 → 8, y1 = z0²·z1 → 32·max z0² = 288
#   6. SIGTERM, and the server must exit within SMOKE_STOP_TIMEOUT seconds
# Prints one JSON line with the result on stdout; progress goes to stderr.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROBES=${SMOKE_PROBES:-/healthz /readyz}
START_TIMEOUT=${SMOKE_START_TIMEOUT:-90}
STOP_TIMEOUT=${SMOKE_STOP_TIMEOUT:-15}
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/hessian-audit-smoke.XXXXXX")
SERVER_PID=

step() { echo "smoke: $*" >&2; }
fail() {
  echo "smoke: FAILED: $*" >&2
  if [ -f "$SCRATCH/server.log" ]; then
    echo "smoke: --- server log (last 40 lines) ---" >&2
    tail -n 40 "$SCRATCH/server.log" >&2
  fi
  exit 1
}
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then kill -KILL "$SERVER_PID" 2>/dev/null || true; fi
  if [ "${SMOKE_KEEP:-0}" = 1 ]; then step "kept $SCRATCH"; else rm -rf "$SCRATCH"; fi
}
trap cleanup EXIT

[ -f "$ROOT/dist/cli/main.js" ] || fail "dist/ is missing: run npm run build first"
[ -f "$ROOT/dist/cli/commands/serve.js" ] || fail "dist/cli/commands/serve.js is missing: this build has no serve command"

step "1/6 npm pack"
(cd "$ROOT" && npm pack --silent --ignore-scripts --pack-destination "$SCRATCH" >/dev/null)
TARBALL=$(ls "$SCRATCH"/*.tgz)

step "2/6 production install in $SCRATCH/app"
mkdir "$SCRATCH/app"
tar -xzf "$TARBALL" -C "$SCRATCH/app" --strip-components=1
cp "$ROOT/package-lock.json" "$SCRATCH/app/"
(cd "$SCRATCH/app" && ONNXRUNTIME_NODE_INSTALL=skip npm ci --omit=dev --no-audit --no-fund --prefer-offline --loglevel=error >&2) \
  || fail "npm ci --omit=dev failed"
[ ! -e "$SCRATCH/app/node_modules/typescript" ] || fail "dev dependencies were installed"
BIN=$(cd "$SCRATCH/app" && node -p "Object.values(require('./package.json').bin)[0]")
chmod 0755 "$SCRATCH/app/$BIN"   # as the image does; the shebang starts node

step "3/6 start hessian-audit serve"
PORT=$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")
mkdir "$SCRATCH/store"
(cd "$SCRATCH/app" && exec "./$BIN" serve --device cpu --host 127.0.0.1 --port "$PORT" --model-dir "$SCRATCH/store") \
  >"$SCRATCH/server.log" 2>&1 &
SERVER_PID=$!
BASE="http://127.0.0.1:$PORT"

# The HTTP steps in Node (fetch, FormData): no curl needed.
node --input-type=module - "$BASE" "$START_TIMEOUT" "$ROOT/models/cubic.onnx" "$SERVER_PID" $PROBES <<'JS' >"$SCRATCH/result.json" || fail "HTTP checks"
import { readFile } from 'node:fs/promises';
const [base, startTimeout, modelPath, pid, ...probes] = process.argv.slice(2);
const alive = () => { try { process.kill(Number(pid), 0); return true; } catch { return false; } };
const log = (text) => process.stderr.write(`smoke: ${text}\n`);
const deadline = Date.now() + Number(startTimeout) * 1000;
const probed = {};
for (const path of probes) {
  let last = 'no answer';
  for (;;) {
    try {
      const r = await fetch(base + path, { signal: AbortSignal.timeout(5000) });
      const body = await r.text();
      if (r.status === 200) { probed[path] = { status: 200, body: JSON.parse(body) }; break; }
      last = `${r.status} ${body.slice(0, 300)}`;
    } catch (err) { last = err.cause?.code ?? err.message; }
    if (!alive()) { log(`4/6 the server exited before GET ${path} answered 200`); process.exit(1); }
    if (Date.now() > deadline) { log(`4/6 GET ${path} did not answer 200 within ${startTimeout}s: ${last}`); process.exit(1); }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  log(`4/6 GET ${path} → 200 ${JSON.stringify(probed[path].body).slice(0, 200)}`);
}

const request = {
  latents: [[1, 2], [-3, 0.5]],
  directions: [[[1, 1], [1, 1]], [[1, -1], [1, -1]]],
  k: 2,
  epsilon: 0.1,
};
const form = new FormData();
form.append('model', new Blob([await readFile(modelPath)]), 'cubic.onnx');
form.append('request', JSON.stringify(request));
const r = await fetch(`${base}/v1/penalty`, { method: 'POST', body: form, signal: AbortSignal.timeout(60_000) });
const result = await r.json();
if (r.status !== 200) { log(`5/6 POST /v1/penalty → ${r.status} ${JSON.stringify(result)}`); process.exit(1); }
const expected = { y0: 8, y1: 288 };
const layers = Object.fromEntries(result.layers.map((l) => [l.name, l.penalty]));
for (const [name, value] of Object.entries(expected)) {
  if (!(Math.abs(layers[name] - value) <= 1e-4 * value)) {
    log(`5/6 layer ${name}: penalty ${layers[name]}, expected ${value} (relative tolerance 1e-4)`);
    process.exit(1);
  }
}
if (result.executionProvider !== 'cpu') { log(`5/6 ran on ${result.executionProvider}, expected cpu`); process.exit(1); }
log(`5/6 POST /v1/penalty → 200, y0 ${layers.y0}, y1 ${layers.y1} on ${result.executionProvider}`);
process.stdout.write(`${JSON.stringify({ base, probed, penalty: { layers, executionProvider: result.executionProvider, model: result.model } })}\n`);
JS

step "6/6 stop (SIGTERM)"
kill -TERM "$SERVER_PID"
for _ in $(seq 1 $((STOP_TIMEOUT * 10))); do
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$SERVER_PID" 2>/dev/null; then fail "the server did not exit within ${STOP_TIMEOUT}s of SIGTERM"; fi
set +e; wait "$SERVER_PID"; STATUS=$?; set -e
SERVER_PID=
step "server exited with status $STATUS"
node -e "const r=JSON.parse(require('fs').readFileSync(process.argv[1],'utf8'));r.exitStatus=Number(process.argv[2]);console.log(JSON.stringify(r))" \
  "$SCRATCH/result.json" "$STATUS"
