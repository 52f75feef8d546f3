/**
 * The compose file and the Kubernetes manifests parse, and reference the image, port, probe paths,
 * user and store that the image and the service really have.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DockerfileParser, type JSONInstruction } from 'dockerfile-ast';
import t from 'tap';
import { parseAllDocuments } from 'yaml';
import { openService } from './helpers/service.js';

const ROOT = new URL('..', import.meta.url).pathname;
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string };
// biome-ignore lint: manifests are free-form
type Doc = any;

function load(path: string): Doc[] {
  const docs = parseAllDocuments(readFileSync(join(ROOT, path), 'utf8'));
  for (const doc of docs) if (doc.errors.length) throw new Error(`${path}: ${doc.errors.map((e) => e.message).join('; ')}`);
  return docs.map((d) => d.toJS());
}

const manifests = readdirSync(join(ROOT, 'deploy'))
  .filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')
  .flatMap((f) => load(join('deploy', f)).map((doc) => ({ file: f, doc })));
const named = (kind: string, name: string) => {
  const all = manifests.filter((m) => m.doc.kind === kind && m.doc.metadata.name === name);
  if (all.length !== 1) throw new Error(`expected one ${kind} ${name} in deploy/, found ${all.length}`);
  return all[0].doc;
};
// The GPU workers (the image's CUDA variant) and the API in front of them (the CPU variant).
const deployment = named('Deployment', 'hessian-audit-worker');
const api = named('Deployment', 'hessian-audit-api');
const service = named('Service', 'hessian-audit');
const pdb = named('PodDisruptionBudget', 'hessian-audit-api');
const pvc = named('PersistentVolumeClaim', 'hessian-audit-models');
const redis = named('StatefulSet', 'hessian-audit-redis');
const redisService = named('Service', 'hessian-audit-redis');
const scaled = named('ScaledObject', 'hessian-audit-worker');
const pod = deployment.spec.template.spec;
const container = pod.containers[0];
const apiContainer = api.spec.template.spec.containers[0];
const flagOf = (args: string[], name: string): string | undefined => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);

// What the image declares (docker/Dockerfile's final stage).
const dockerfile = DockerfileParser.parse(readFileSync(join(ROOT, 'docker/Dockerfile'), 'utf8'));
const instructions = dockerfile.getInstructions();
const runtime = instructions.slice(instructions.findLastIndex((i) => i.getKeyword() === 'FROM'));
const image = {
  user: Number(runtime.find((i) => i.getKeyword() === 'USER')!.getArgumentsContent()!.split(':')[0]),
  volume: (runtime.find((i) => i.getKeyword() === 'VOLUME') as JSONInstruction).getJSONStrings()[0].getJSONValue(),
  expose: Number(runtime.find((i) => i.getKeyword() === 'EXPOSE')!.getArgumentsContent()),
};

t.test('every manifest parses and is a named Kubernetes object; kustomize lists them all', async (t) => {
  t.ok(manifests.length >= 4);
  for (const { file, doc } of manifests) {
    t.type(doc.apiVersion, 'string', `${file}: apiVersion`);
    t.type(doc.kind, 'string', `${file}: kind`);
    t.match(doc.metadata?.name, /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, `${file}: a valid name`);
  }
  const [kustomization] = load('deploy/kustomization.yaml');
  t.same([...kustomization.resources].sort(), [...new Set(manifests.map((m) => m.file))].sort());
});

t.test('the Deployment runs this package’s image on one NVIDIA GPU per pod', async (t) => {
  t.equal(container.image, `${pkg.name}:${pkg.version}-cuda`, 'the image the compose file builds');
  const gpus = container.resources.limits['nvidia.com/gpu'];
  t.ok(Number.isInteger(gpus) && gpus >= 1, 'nvidia.com/gpu limit');
  t.equal(container.resources.requests?.['nvidia.com/gpu'], undefined, 'extended resources are set as limits');
  t.same(deployment.spec.selector.matchLabels, pick(deployment.spec.template.metadata.labels, deployment.spec.selector.matchLabels));
});

t.test('the workers run `serve --role worker` on CUDA and the API `serve --role api`, with flags the command really has', async (t) => {
  const { buildProgram } = await import('../dist/cli/program.js');
  const serve = buildProgram({ stdout: () => {}, stderr: () => {} }).commands.find((c: { name(): string }) => c.name() === 'serve');
  const known = serve.options.map((o: { long: string }) => o.long);
  for (const [which, c, role] of [['worker', container, 'worker'], ['api', apiContainer, 'api']] as const) {
    const args: string[] = c.args;
    t.equal(args[0], 'serve', which);
    t.equal(flagOf(args, '--role'), role, `${which}: --role ${role}`);
    t.equal(Number(flagOf(args, '--port')), c.ports.find((p: Doc) => p.name === 'http').containerPort, `${which}: --port is the containerPort`);
    t.equal(flagOf(args, '--host'), '0.0.0.0', `${which}: reachable from the Service`);
    t.ok(flagOf(args, '--model-dir')!.startsWith(`${image.volume}/`), `${which}: --model-dir is on the store volume`);
    for (const a of args.filter((a) => a.startsWith('--'))) t.ok(known.includes(a), `${which}: ${a} is an option of serve`);
  }
  t.equal(flagOf(container.args, '--device'), 'cuda', 'a GPU worker never falls back to the CPU');
  t.equal(flagOf(apiContainer.args, '--device'), 'cpu', 'the API needs no GPU');
  t.equal(apiContainer.resources.limits['nvidia.com/gpu'], undefined, 'and asks for none');
  t.equal(apiContainer.image, `${pkg.name}:${pkg.version}-cpu`, "the API runs the image's CPU variant");
});

t.test('Redis: persistent, fsynced per write, never evicting, and the URL every pod is given', async (t) => {
  const { parseQueueUrl, QUEUE_NAME } = await import('../dist/server/redis-queue.js');
  const urls = [container, apiContainer].map((c) => flagOf(c.args, '--queue'));
  t.equal(urls[0], urls[1], 'the API and the workers share one queue');
  const target = parseQueueUrl(urls[0]!);
  t.equal(target.host, redisService.metadata.name, 'the host is the Redis Service');
  t.equal(target.port, redisService.spec.ports[0].port, 'on its port');
  const r = redis.spec.template.spec.containers[0];
  t.equal(redisService.spec.ports[0].targetPort, r.ports[0].name);
  t.same(pick(redis.spec.template.metadata.labels, redisService.spec.selector), redisService.spec.selector, 'the Service selects the Redis pod');
  const args: string[] = r.args;
  t.equal(flagOf(args, '--appendonly'), 'yes', 'an append-only file');
  t.equal(flagOf(args, '--appendfsync'), 'always', 'synced before a job is acknowledged');
  t.equal(flagOf(args, '--maxmemory-policy'), 'noeviction', "BullMQ's keys are never evicted");
  const data = flagOf(args, '--dir');
  const mount = r.volumeMounts.find((m: Doc) => m.mountPath === data);
  t.ok(mount, 'the AOF folder is a volume');
  t.ok(redis.spec.volumeClaimTemplates.some((v: Doc) => v.metadata.name === mount.name), 'claimed per Redis pod');
  // KEDA reads BullMQ's own lists for the service's queue, in the database of the URL.
  t.same(scaled.spec.scaleTargetRef, { apiVersion: deployment.apiVersion, kind: 'Deployment', name: deployment.metadata.name }, 'KEDA scales the workers');
  t.equal(scaled.spec.minReplicaCount, 0, 'down to zero when idle');
  t.ok(scaled.spec.maxReplicaCount >= 1);
  t.equal(deployment.spec.replicas, 0, 'no worker until a job waits');
  const lists = scaled.spec.triggers.map((trigger: Doc) => {
    t.equal(trigger.type, 'redis');
    t.equal(trigger.metadata.address, `${target.host}:${target.port}`, "KEDA's Redis is the pods' Redis");
    t.equal(Number(trigger.metadata.databaseIndex), target.db, 'in the same database');
    return trigger.metadata.listName;
  });
  t.same(lists.sort(), [`bull:${QUEUE_NAME}:active`, `bull:${QUEUE_NAME}:wait`], "BullMQ's wait list (the backlog) and its active list (no scale-down mid-job)");
  // The grace period covers the drain.
  const drain = Number(flagOf(container.args, '--drain-timeout') ?? 25);
  t.ok(pod.terminationGracePeriodSeconds > drain, `terminationGracePeriodSeconds ${pod.terminationGracePeriodSeconds} > --drain-timeout ${drain}`);
  t.equal(pod.terminationGracePeriodSeconds, 30, "Kubernetes' default, which --drain-timeout's default stays under");
});

t.test('ports and probes are the ones the service has', async (t) => {
  const contract = await openService();
  t.teardown(contract.close);
  const http = container.ports.find((p: Doc) => p.name === 'http');
  t.equal(http.containerPort, contract.port, `containerPort is the service’s default port (${contract.source})`);
  t.equal(http.containerPort, image.expose, 'and what the image EXPOSEs');
  t.equal(container.readinessProbe.httpGet.path, '/readyz');
  t.equal(container.livenessProbe.httpGet.path, '/healthz');
  for (const probe of ['readinessProbe', 'livenessProbe', 'startupProbe']) {
    const get = container[probe].httpGet;
    t.ok(contract.serves(get.path), `${probe} GET ${get.path} is a route of the service (${contract.source})`);
    t.ok(container.ports.some((p: Doc) => p.name === get.port || p.containerPort === get.port), `${probe} port ${get.port} is a container port`);
  }
});

t.test('the pod runs as the image’s non-root user and keeps the store on the claim', async (t) => {
  t.equal(pod.securityContext.runAsNonRoot, true);
  t.equal(pod.securityContext.runAsUser, image.user, 'the image’s USER');
  t.not(image.user, 0);
  const mount = container.volumeMounts.find((m: Doc) => m.mountPath === image.volume);
  t.ok(mount, `the image’s VOLUME ${image.volume} is mounted`);
  const volume = pod.volumes.find((v: Doc) => v.name === mount.name);
  t.equal(volume.persistentVolumeClaim.claimName, pvc.metadata.name, 'from the PersistentVolumeClaim in deploy/');
  t.ok(pvc.spec.accessModes.includes('ReadWriteMany'), 'shared by every replica');
  if (container.securityContext?.readOnlyRootFilesystem) {
    t.ok(container.volumeMounts.some((m: Doc) => m.mountPath === '/tmp'), 'a writable /tmp with a read-only root');
  }
});

t.test('the Service and the PodDisruptionBudget select the API pods, never the workers', async (t) => {
  const labels = api.spec.template.metadata.labels;
  t.same(pick(labels, service.spec.selector), service.spec.selector, 'Service selector');
  t.same(pick(labels, pdb.spec.selector.matchLabels), pdb.spec.selector.matchLabels, 'PDB selector');
  const workerLabels = deployment.spec.template.metadata.labels;
  t.notSame(pick(workerLabels, service.spec.selector), service.spec.selector, 'the workers take no client traffic');
  t.ok(Object.keys(service.spec.selector).length > 0);
  const target = service.spec.ports[0].targetPort;
  t.ok(apiContainer.ports.some((p: Doc) => p.name === target || p.containerPort === target), `targetPort ${target} is a container port`);
  const allowed = pdb.spec.maxUnavailable ?? api.spec.replicas - pdb.spec.minAvailable;
  t.ok(allowed >= 1, 'a drain can always evict a pod');
  t.ok(api.spec.replicas - allowed >= 1, 'and a replica stays up');
  for (const d of [api, deployment]) t.same(pick(d.spec.template.metadata.labels, d.spec.selector.matchLabels), d.spec.selector.matchLabels, `${d.metadata.name} selects its pods`);
});

t.test('compose: GPU reservation, port, store volume, the Dockerfile', async (t) => {
  const [compose] = load('docker/compose.yaml');
  const gpu = compose.services['hessian-audit'];
  t.equal(gpu.image, container.image, 'the same image as the Deployment');
  t.same(gpu.deploy.resources.reservations.devices, [{ driver: 'nvidia', count: 'all', capabilities: ['gpu'] }]);
  const contract = await openService();
  t.teardown(contract.close);
  for (const [name, svc] of Object.entries<Doc>(compose.services)) {
    t.ok(existsSync(join(ROOT, 'docker', svc.build.context, svc.build.dockerfile)), `${name}: the build finds docker/Dockerfile`);
    t.equal(Number(svc.ports[0].split(':').at(-1)), contract.port, `${name}: publishes the service port`);
    const [volume, target] = svc.volumes[0].split(':');
    t.equal(target, image.volume, `${name}: the store volume is the image’s VOLUME`);
    t.ok(volume in compose.volumes, `${name}: a named volume`);
  }
  t.equal(compose.services['hessian-audit'].build.args.VARIANT, 'cuda');
  t.equal(compose.services['hessian-audit-cpu'].build.args.VARIANT, 'cpu');
  t.equal(compose.services['hessian-audit-cpu'].image, `${pkg.name}:${pkg.version}-cpu`);
  t.equal(compose.services['hessian-audit-cpu'].deploy, undefined, 'the CPU service reserves no GPU');
});

t.test('every HESSIAN_AUDIT_* variable in the manifests and the compose file is one that serve reads', async (t) => {
  const { buildProgram } = await import('../dist/cli/program.js');
  const serve = buildProgram({ stdout: () => {}, stderr: () => {} }).commands.find((c: { name(): string }) => c.name() === 'serve');
  const read = serve.options.map((o: { envVar?: string }) => o.envVar).filter(Boolean);
  const [compose] = load('docker/compose.yaml');
  const names = [
    ...[container, apiContainer].flatMap((c) => (c.env ?? []).map((e: Doc) => e.name as string)),
    ...Object.values<Doc>(compose.services).flatMap((s) => Object.keys(s.environment ?? {})),
  ].filter((n) => n.startsWith('HESSIAN_AUDIT_'));
  t.ok(names.length >= 6);
  for (const name of names) t.ok(read.includes(name), `${name} is read by serve`);
});

t.test('without KEDA: the HPA variant scales the workers on the service backlog per replica, a gauge /metrics really exports, through the adapter', async (t) => {
  const [hpa] = load('deploy/variants/hpa-worker.yaml');
  t.equal(hpa.apiVersion, 'autoscaling/v2');
  t.same(hpa.spec.scaleTargetRef, { apiVersion: deployment.apiVersion, kind: 'Deployment', name: deployment.metadata.name });
  t.ok(hpa.spec.minReplicas >= 1, 'an HPA cannot scale to zero');
  t.ok(hpa.spec.maxReplicas > hpa.spec.minReplicas);
  const [metric] = hpa.spec.metrics;
  t.equal(metric.type, 'External', 'one service-wide figure, not a per-pod one');
  const name = metric.external.metric.name;
  t.equal(metric.external.target.type, 'AverageValue', 'divided by the replicas: backlog per worker');

  // What an API pod really exports: the real app's /metrics.
  const { buildApp } = await import('../dist/server/app.js');
  const { serverConfig } = await import('../dist/server/config.js');
  const modelDir = mkdtempSync(join(tmpdir(), 'hessian-audit-hpa-'));
  const { app } = await buildApp(serverConfig({ modelDir, devices: [{ kind: 'cpu' }], workers: 1, logLevel: false }));
  t.teardown(async () => {
    await app.close();
    rmSync(modelDir, { recursive: true, force: true });
  });
  const exported = (await app.inject({ method: 'GET', url: '/metrics' })).body;
  t.match(exported, new RegExp(`^# TYPE ${name} gauge$`, 'm'), `${name} is a gauge at /metrics`);
  t.match(exported, new RegExp(`^${name} 0$`, 'm'), 'without labels');

  // The Prometheus adapter's external rule publishes that series under that name, one figure.
  const [values] = load('deploy/prometheus-adapter/values.yaml');
  const rule = values.rules.external.find((r: Doc) => r.name.as === name);
  t.ok(rule, `an external adapter rule publishes ${name}`);
  t.match(rule.seriesQuery, new RegExp(`^${name}\\{`), 'from the series the pods export');
  t.ok(new RegExp(rule.name.matches).test(name));
  t.match(rule.metricsQuery, /^max\(/, 'every pod reports the same service-wide figure: their max, not their sum');
  const annotations = api.spec.template.metadata.annotations;
  t.equal(annotations['prometheus.io/path'], '/metrics');
  t.equal(Number(annotations['prometheus.io/port']), apiContainer.ports.find((p: Doc) => p.name === 'http').containerPort, 'scraped on the http port');
});

t.test('the docs no longer advise session affinity: any API pod answers any job', async (t) => {
  for (const doc of ['docs/deploy.md', 'docs/server.md', 'README.md']) {
    t.notMatch(readFileSync(join(ROOT, doc), 'utf8'), /sessionAffinity/, doc);
  }
});

function pick(labels: Record<string, string>, wanted: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.keys(wanted).map((k) => [k, labels[k]]));
}
