/**
 * The Docker image, checked statically (no Docker engine runs on the development machines):
 * sources, the stages, the CUDA opt-in and ldd check, the user, the entrypoint, the probes.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { DockerfileParser, type Instruction, type JSONInstruction } from 'dockerfile-ast';
import t from 'tap';
import { openService } from './helpers/service.js';

const ROOT = new URL('..', import.meta.url).pathname;
const text = readFileSync(join(ROOT, 'docker/Dockerfile'), 'utf8');
const dockerfile = DockerfileParser.parse(text);
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  name: string;
  bin: Record<string, string>;
  allowScripts: Record<string, boolean>;
};

/** Instructions grouped by stage name (`FROM … AS name`), in order. */
const stages = new Map<string, { from: string; instructions: Instruction[] }>();
let current: { from: string; instructions: Instruction[] } | undefined;
for (const instruction of dockerfile.getInstructions()) {
  if (instruction.getKeyword() === 'FROM') {
    const args = instruction.getArguments().map((a) => a.getValue());
    const as = args.findIndex((a) => a.toUpperCase() === 'AS');
    current = { from: args[0], instructions: [] };
    stages.set(as >= 0 ? args[as + 1] : `#${stages.size}`, current);
  } else current?.instructions.push(instruction);
}
const stage = (name: string) => {
  const found = stages.get(name);
  if (!found) throw new Error(`docker/Dockerfile has no stage '${name}'`);
  return found.instructions;
};
const of = (instructions: Instruction[], keyword: string) => instructions.filter((i) => i.getKeyword() === keyword);
const json = (i: Instruction) => (i as JSONInstruction).getJSONStrings().map((s) => s.getJSONValue());
const runs = (name: string) => of(stage(name), 'RUN').map((i) => i.getArgumentsContent() ?? '').join('\n');
const envOf = (name: string) => Object.fromEntries(of(stage(name), 'ENV').flatMap((i) => (i as unknown as { getProperties(): { getName(): string; getValue(): string }[] }).getProperties().map((p) => [p.getName(), p.getValue()])));
const initialArg = (name: string) => {
  const arg = dockerfile.getInitialARGs().find((a) => a.getProperty()?.getName() === name);
  return arg?.getProperty()?.getValue() ?? undefined;
};
const BIN = Object.keys(pkg.bin)[0];

t.test('the stages the build needs exist, and the final one picks the variant', async (t) => {
  for (const name of ['nodejs', 'build', 'install-cpu', 'install-cuda', 'base-cuda', 'base-cpu', 'runtime']) t.ok(stages.has(name), name);
  const names = [...stages.keys()];
  t.equal(names.at(-1), 'runtime', 'the last stage is the default target');
  t.equal(stages.get('runtime')!.from, 'base-${VARIANT}');
  t.equal(initialArg('VARIANT'), 'cuda', 'GPU by default');
  t.equal(stages.get('base-cpu')!.from, 'nodejs', 'the CPU variant needs no CUDA image');
  t.equal(stages.get('nodejs')!.from, '${NODE_IMAGE}');
  t.match(initialArg('NODE_IMAGE'), /^node:24-/, 'Node 24 LTS, within package.json’s engines');
});

t.test('every COPY source exists in the build context or an earlier stage', async (t) => {
  const ignored = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  const seen: string[] = [];
  let copies = 0;
  for (const [name, { instructions }] of stages) {
    for (const copy of of(instructions, 'COPY')) {
      copies++;
      const from = (copy as unknown as { getFromFlag(): { getValue(): string } | null }).getFromFlag()?.getValue();
      const args = copy.getArguments().map((a) => a.getValue()).filter((a) => !a.startsWith('--'));
      const sources = args.slice(0, -1);
      t.ok(sources.length > 0, `${name}: COPY has a source and a destination`);
      if (from) {
        t.ok(seen.includes(from), `${name}: COPY --from=${from} names an earlier stage`);
        continue;
      }
      for (const source of sources) {
        t.ok(existsSync(join(ROOT, source)), `${name}: COPY source ${source} exists`);
        t.notOk(ignored.includes(source.split('/')[0]), `${name}: COPY source ${source} is not excluded by .dockerignore`);
      }
    }
    seen.push(name);
  }
  t.ok(copies >= 8, 'the COPY lines were found');
});

t.test('the package files the runtime needs are in what npm packs', async (t) => {
  // The image installs the packed tarball: anything the service reads at runtime must be packed.
  const r = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  const files = (JSON.parse(r.stdout) as { files: { path: string }[] }[])[0].files.map((f) => f.path);
  t.ok(files.includes(pkg.bin[BIN].replace(/^\.\//, '')), `the command ${pkg.bin[BIN]} is packed`);
  t.ok(files.includes('src/onnx/schema/onnx.proto'), 'the ONNX schema is packed');
  t.ok(files.some((f) => f.startsWith('models/') && f.endsWith('.onnx')), 'the example models are packed');
});

t.test('the CUDA provider is opted in with the value the pinned onnxruntime-node knows', async (t) => {
  const require = createRequire(import.meta.url);
  const metadata = require('onnxruntime-node/script/install-metadata.js') as { requirements: Record<string, string[]> };
  const env = envOf('install-cuda');
  t.ok(metadata.requirements['linux/x64'].includes(env.ONNXRUNTIME_NODE_INSTALL), `ONNXRUNTIME_NODE_INSTALL=${env.ONNXRUNTIME_NODE_INSTALL} is a linux/x64 manifest of onnxruntime-node`);
  t.equal(env.ONNXRUNTIME_NODE_INSTALL, 'cuda12');
  t.equal(env.npm_config_onnxruntime_node_install, undefined, 'no npm config of that name: npm 11 warns about unknown ones');
  // The repository opts out through allowScripts alone (no .npmrc, whose unknown key npm 11 warns about); the image undoes it.
  t.notOk(existsSync(join(ROOT, '.npmrc')), 'no .npmrc');
  t.equal(pkg.allowScripts['onnxruntime-node'], false);
  t.match(runs('install-cuda'), /npm pkg set allowScripts\.onnxruntime-node=true --json/);
  t.match(runs('install-cuda'), /npm ci --omit=dev/);
  t.match(runs('install-cuda'), /if \[ ! -f [^\]]*libonnxruntime_providers_cuda\.so \]; then[^]*exit 1/, 'fails when the provider did not arrive');
  t.equal(envOf('install-cpu').ONNXRUNTIME_NODE_INSTALL, 'skip', 'the CPU variant downloads nothing');
});

t.test('the CUDA base image matches the provider: CUDA 12 with cuDNN, checked by ldd', async (t) => {
  t.equal(stages.get('base-cuda')!.from, '${CUDA_IMAGE}');
  t.match(initialArg('CUDA_IMAGE'), /^nvidia\/cuda:12\.\d+\.\d+-cudnn-runtime-/, 'CUDA 12.x runtime with cuDNN');
  const check = runs('base-cuda');
  t.match(check, /ldd [^|]*libonnxruntime_providers_cuda\.so/);
  t.match(check, /grep 'not found'/);
  t.match(check, /if \[ -n "\$unresolved" \]; then[^]*exit 1/, 'an unresolved library fails the build');
  t.match(check, /set -eu/);
});

t.test('every RUN is valid shell', async (t) => {
  for (const [name, { instructions }] of stages) {
    for (const run of of(instructions, 'RUN')) {
      const r = spawnSync('sh', ['-n', '-c', run.getArgumentsContent() ?? ''], { encoding: 'utf8' });
      t.equal(r.status, 0, `${name} line ${run.getRange().start.line + 1}: ${r.stderr}`);
    }
  }
});

t.test('it runs as a user that is not root', async (t) => {
  const users = of(stage('runtime'), 'USER').map((u) => u.getArgumentsContent() ?? '');
  t.equal(users.length, 1);
  const [uid, gid] = users[0].split(':');
  t.not(uid, '0');
  t.not(uid, 'root');
  t.match(uid, /^\d+$/, 'numeric, so Kubernetes runAsNonRoot can verify it');
  t.match(runs('runtime'), new RegExp(`useradd [^\\n]*--uid ${uid}\\b`), 'the user exists');
  t.match(runs('runtime'), new RegExp(`groupadd [^\\n]*--gid ${gid}\\b`), 'the group exists');
});

t.test('the entrypoint is the package’s command, started as `serve`', async (t) => {
  t.match(runs('runtime'), new RegExp(`ln -s /app/${pkg.bin[BIN].replace(/^\.\//, '')} /usr/local/bin/${BIN}`), 'the command is on PATH');
  t.match(runs('runtime'), new RegExp(`chmod 0755 /app/${pkg.bin[BIN].replace(/^\.\//, '')}`));
  t.ok(readFileSync(join(ROOT, 'src/cli/main.ts'), 'utf8').startsWith('#!/usr/bin/env node'), 'main has a shebang');
  for (const [name, device] of [['base-cuda', 'auto'], ['base-cpu', 'cpu']]) {
    const entrypoints = of(stage(name), 'ENTRYPOINT');
    t.same(entrypoints.map(json), [[BIN]], `${name}: ENTRYPOINT ["${BIN}"]`);
    const cmd = json(of(stage(name), 'CMD')[0]);
    t.equal(cmd[0], 'serve', `${name}: serve`);
    t.equal(cmd[cmd.indexOf('--device') + 1], device, `${name}: --device ${device}`);
  }
  const { buildProgram } = await import('../dist/cli/program.js');
  const serve = buildProgram({ stdout: () => {}, stderr: () => {} }).commands.find((c: { name(): string }) => c.name() === 'serve');
  t.ok(serve, 'the CLI has a serve command');
  const known = serve.options.map((o: { long: string }) => o.long);
  for (const name of ['base-cuda', 'base-cpu']) {
    for (const a of json(of(stage(name), 'CMD')[0]).filter((a) => a.startsWith('--'))) t.ok(known.includes(a), `${name}: ${a} is an option of serve`);
  }
  t.same(of(stage('runtime'), 'ENTRYPOINT'), [], 'the final stage keeps the base stage’s ENTRYPOINT and CMD');
  t.same(of(stage('runtime'), 'CMD'), []);
});

t.test('every HESSIAN_AUDIT_* variable the image sets is one that serve reads', async (t) => {
  const { buildProgram } = await import('../dist/cli/program.js');
  const serve = buildProgram({ stdout: () => {}, stderr: () => {} }).commands.find((c: { name(): string }) => c.name() === 'serve');
  const read = serve.options.map((o: { envVar?: string }) => o.envVar).filter(Boolean);
  const set = Object.keys(envOf('runtime')).filter((k) => k.startsWith('HESSIAN_AUDIT_'));
  t.ok(set.length >= 4);
  for (const name of set) t.ok(read.includes(name), `${name} is read by serve`);
});

t.test('port, health check and model store agree with the service', async (t) => {
  const service = await openService();
  t.teardown(service.close);
  const cmd = json(of(stage('base-cuda'), 'CMD')[0]);
  const port = Number(cmd[cmd.indexOf('--port') + 1]);
  t.equal(port, service.port, `--port is the service's default port (${service.source})`);
  t.same(of(stage('runtime'), 'EXPOSE').map((e) => e.getArgumentsContent()), [String(port)], 'EXPOSE');
  const health = of(stage('runtime'), 'HEALTHCHECK');
  t.equal(health.length, 1);
  const url = /http:\/\/127\.0\.0\.1:(\d+)(\/[a-z]+)/.exec(health[0].getArgumentsContent() ?? '');
  t.ok(url, 'the health check fetches a URL');
  t.equal(Number(url![1]), port, 'on the service port');
  t.equal(url![2], '/healthz');
  t.ok(service.serves(url![2]), `GET ${url![2]} is a route of the service (${service.source})`);
  const volumes = of(stage('runtime'), 'VOLUME').flatMap(json);
  const modelDir = cmd[cmd.indexOf('--model-dir') + 1];
  t.ok(volumes.some((v) => modelDir.startsWith(`${v}/`) || modelDir === v), `the model store ${modelDir} is on a VOLUME`);
  t.equal(envOf('runtime').HESSIAN_AUDIT_MODEL_DIR, modelDir, 'the store stays on the volume when the command is overridden');
  t.equal(envOf('runtime').HESSIAN_AUDIT_CUDA_TF32, 'off', 'TF32 off for cuBLAS and cuDNN');
  t.equal(envOf('runtime').NVIDIA_TF32_OVERRIDE, undefined, 'left to the setting, so that HESSIAN_AUDIT_CUDA_TF32=on can work');
});
